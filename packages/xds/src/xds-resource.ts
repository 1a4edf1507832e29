/**
 * One resource as an ADS server delivered it: decoded from its `Any`, with its name and
 * version. Decoding problems are found here, before the consumer sees anything, and become
 * the NACK's message (`Cluster outbound|80||a.b: cannot decode: …`).
 */
import type { Message } from '@bufbuild/protobuf';
import { fromBinary } from '@bufbuild/protobuf';
import type { Any } from '@bufbuild/protobuf/wkt';
import { envoyUnpack } from '@remora/config/envoy';
import { ResourceSchema } from '@remora/config/envoy/gen/envoy/service/discovery/v3/discovery_pb.js';
import { shortTypeName, TypeUrl } from './type-urls.ts';

export interface XdsResource {
  readonly name: string;
  /** Delta: the resource's own version. State of the world: the response's `version_info`. */
  readonly version: string;
  /** The decoded message (`Cluster`, `Listener`, …), typed by the response's type URL. */
  readonly message: Message;
  /** The `Any` as received, for `/config_dump`. */
  readonly any: Any;
}

export type Decoded = { readonly ok: true; readonly resource: XdsResource } | { readonly ok: false; readonly message: string };

const WRAPPED_RESOURCE = 'type.googleapis.com/envoy.service.discovery.v3.Resource';

/**
 * Decodes one resource of a response of `typeUrl`. `name` and `version` come from a delta
 * `Resource` wrapper; a state-of-the-world response may also wrap its resources in one
 * (Envoy accepts both), else the name is read from the message and the version is the
 * response's.
 */
export function decodeResource(typeUrl: string, any: Any, name: string | null, version: string, index?: number): Decoded {
  const type = shortTypeName(typeUrl);
  if (any.typeUrl === WRAPPED_RESOURCE && name === null) {
    let wrapper;
    try {
      wrapper = fromBinary(ResourceSchema, any.value);
    } catch (e) {
      return { ok: false, message: `${type}: cannot decode an envoy.service.discovery.v3.Resource: ${reasonOf(e)}` };
    }
    if (wrapper.resource === undefined) return { ok: false, message: `${type} ${wrapper.name}: resource: missing` };
    return decodeResource(typeUrl, wrapper.resource, wrapper.name, wrapper.version === '' ? version : wrapper.version, index);
  }
  // A bare Any of a state-of-the-world response has no name outside it: its position names it.
  const at = index === undefined ? '' : ` (resources[${index}])`;
  const label = name === null || name === '' ? `${type}${at.replace(/[()]/g, '')}` : `${type} ${name}`;
  if (any.typeUrl !== typeUrl) {
    // Name it by what it says it is, when that reads.
    const foreign = name === null || name === '' ? foreignName(any) : '';
    const named = foreign === '' ? label : `${type} ${foreign}${at}`;
    return { ok: false, message: `${named}: type URL "${any.typeUrl}" in a response of "${typeUrl}"` };
  }
  let message: Message;
  try {
    message = envoyUnpack(any);
  } catch (e) {
    return { ok: false, message: `${label}: cannot decode: ${reasonOf(e)}` };
  }
  const own = nameOf(typeUrl, message);
  if (own === '') return { ok: false, message: `${label}: ${typeUrl === TypeUrl.ClusterLoadAssignment ? 'clusterName' : 'name'}: must not be empty` };
  if (name !== null && name !== '' && name !== own) {
    return { ok: false, message: `${type} ${name}: the resource inside is named "${own}"` };
  }
  return { ok: true, resource: { name: own, version, message, any } };
}

/** The `name` (or `cluster_name`) of a message of any known type; '' when it has none or does not decode. */
function foreignName(any: Any): string {
  try {
    const m = envoyUnpack(any) as unknown as { readonly name?: unknown; readonly clusterName?: unknown };
    const n = typeof m.name === 'string' ? m.name : m.clusterName;
    return typeof n === 'string' ? n : '';
  } catch {
    return '';
  }
}

/** The name a resource is known by: `cluster_name` for a ClusterLoadAssignment, `name` for the rest. */
export function nameOf(typeUrl: string, message: Message): string {
  const fields = message as unknown as { readonly name?: unknown; readonly clusterName?: unknown };
  const value = typeUrl === TypeUrl.ClusterLoadAssignment ? fields.clusterName : fields.name;
  return typeof value === 'string' ? value : '';
}

function reasonOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
