/**
 * The type registry of every Envoy message Remora knows: the generated files under `gen/`
 * and the well-known types Envoy puts in `Any` (wrappers, Struct, Duration, …). It resolves
 * an `Any`'s `@type` (`type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC`) in
 * JSON and in binary.
 */
import { createRegistry, type DescMessage, type Registry } from '@bufbuild/protobuf';
import {
  file_google_protobuf_any,
  file_google_protobuf_duration,
  file_google_protobuf_empty,
  file_google_protobuf_field_mask,
  file_google_protobuf_struct,
  file_google_protobuf_timestamp,
  file_google_protobuf_wrappers,
} from '@bufbuild/protobuf/wkt';
import { GENERATED_FILES } from './gen/files.ts';

/** The prefix Envoy and istiod write before a type name in `Any.type_url`. */
export const TYPE_URL_PREFIX = 'type.googleapis.com/';

export const envoyRegistry: Registry = createRegistry(
  file_google_protobuf_any,
  file_google_protobuf_duration,
  file_google_protobuf_empty,
  file_google_protobuf_field_mask,
  file_google_protobuf_struct,
  file_google_protobuf_timestamp,
  file_google_protobuf_wrappers,
  ...GENERATED_FILES,
);

/** `type.googleapis.com/<full name>`, the type URL of a message type in an `Any`. */
export function typeUrlOf(schema: DescMessage): string {
  return TYPE_URL_PREFIX + schema.typeName;
}

/** The message type an `Any.type_url` names (the part after the last `/`), or undefined when the registry lacks it. */
export function envoyMessageType(typeUrl: string): DescMessage | undefined {
  return envoyRegistry.getMessage(typeUrl.slice(typeUrl.lastIndexOf('/') + 1));
}
