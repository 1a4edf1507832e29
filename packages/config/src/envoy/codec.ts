/**
 * Envoy messages in and out: JSON with Envoy's field names and `@type` Any handling, binary
 * for xDS, and Any packing. Every function resolves `Any` through {@link envoyRegistry};
 * every failure is an {@link EnvoyCodecError} naming the message type and, for JSON input,
 * the field path.
 *
 * JSON follows proto3's mapping, as Envoy does: input takes `snake_case` and `lowerCamelCase`
 * field names alike; output is `lowerCamelCase` unless `useProtoFieldName` asks for Envoy's
 * `/config_dump` spelling (`snake_case`). Fields left at their default are not written.
 */
import {
  fromBinary,
  fromJson,
  toBinary,
  toJson,
  type DescField,
  type DescMessage,
  type JsonObject,
  type JsonValue,
  type JsonWriteOptions,
  type Message,
  type MessageShape,
} from '@bufbuild/protobuf';
import { anyPack, type Any } from '@bufbuild/protobuf/wkt';
import { EnvoyCodecError } from '../errors.ts';
import { envoyMessageType, envoyRegistry } from './registry.ts';

export interface EnvoyJsonReadOptions {
  /**
   * Skip fields (and enum names) the schema does not have instead of failing. Envoy rejects
   * them in static config by default and tolerates them in xDS; the caller picks.
   */
  readonly ignoreUnknownFields?: boolean;
}

export type EnvoyJsonWriteOptions = Partial<Pick<JsonWriteOptions, 'useProtoFieldName' | 'alwaysEmitImplicit' | 'enumAsInteger'>>;

/** Reads an Envoy message from parsed JSON (or YAML); `Any` fields resolve through the registry. */
export function envoyFromJson<Desc extends DescMessage>(schema: Desc, json: JsonValue, options: EnvoyJsonReadOptions = {}): MessageShape<Desc> {
  const ignoreUnknownFields = options.ignoreUnknownFields === true;
  try {
    return fromJson(schema, json, { registry: envoyRegistry, ignoreUnknownFields });
  } catch (e) {
    const found = locateJsonError(schema, json, '', ignoreUnknownFields);
    throw new EnvoyCodecError(schema.typeName, found?.path ?? '', found?.reason ?? reasonOf(e), { cause: e });
  }
}

/** Writes an Envoy message as JSON; `useProtoFieldName: true` gives `/config_dump`'s `snake_case` names. */
export function envoyToJson<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>, options: EnvoyJsonWriteOptions = {}): JsonValue {
  try {
    return toJson(schema, message, { ...options, registry: envoyRegistry });
  } catch (e) {
    throw new EnvoyCodecError(schema.typeName, '', reasonOf(e), { cause: e });
  }
}

/** Reads an Envoy message from protobuf binary (xDS). Unknown fields are kept, as Envoy keeps them. */
export function envoyFromBinary<Desc extends DescMessage>(schema: Desc, bytes: Uint8Array): MessageShape<Desc> {
  try {
    return fromBinary(schema, bytes);
  } catch (e) {
    throw new EnvoyCodecError(schema.typeName, '', reasonOf(e), { cause: e });
  }
}

/** Writes an Envoy message as protobuf binary. */
export function envoyToBinary<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): Uint8Array<ArrayBuffer> {
  return toBinary(schema, message);
}

/** Packs a message into an `Any` with Envoy's `type.googleapis.com/` type URL. */
export function envoyPack<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): Any {
  return anyPack(schema, message);
}

/**
 * Unpacks an `Any`. Without a schema, its type comes from the registry; with one, the `Any`
 * must hold that type. Either way a type Remora does not know, or another type than the one
 * asked for, is an error naming the type URL.
 */
export function envoyUnpack(any: Any): Message;
export function envoyUnpack<Desc extends DescMessage>(any: Any, schema: Desc): MessageShape<Desc>;
export function envoyUnpack(any: Any, schema?: DescMessage): Message {
  const found = envoyMessageType(any.typeUrl);
  const expected = schema ?? found;
  if (expected === undefined) throw new EnvoyCodecError('google.protobuf.Any', '', unknownTypeReason(any.typeUrl));
  if (found?.typeName !== expected.typeName) {
    throw new EnvoyCodecError('google.protobuf.Any', '', `holds "${any.typeUrl}", expected ${expected.typeName}`);
  }
  try {
    return fromBinary(expected, any.value);
  } catch (e) {
    throw new EnvoyCodecError(expected.typeName, '', reasonOf(e), { cause: e });
  }
}

// ---------------------------------------------------------------------------------------------
// Finding where JSON input went wrong. Runs only after a decode failed, so it may decode
// subtrees again to narrow the failure down to the innermost field.

interface Located {
  readonly path: string;
  readonly reason: string;
}

/** Messages whose JSON is not an object of fields (`"5s"`, `true`, free-form Struct): checked whole, never descended into. */
const CUSTOM_JSON = new Set([
  'google.protobuf.Duration',
  'google.protobuf.Timestamp',
  'google.protobuf.FieldMask',
  'google.protobuf.Struct',
  'google.protobuf.Value',
  'google.protobuf.ListValue',
  'google.protobuf.DoubleValue',
  'google.protobuf.FloatValue',
  'google.protobuf.Int64Value',
  'google.protobuf.UInt64Value',
  'google.protobuf.Int32Value',
  'google.protobuf.UInt32Value',
  'google.protobuf.BoolValue',
  'google.protobuf.StringValue',
  'google.protobuf.BytesValue',
]);

function locateJsonError(desc: DescMessage, json: JsonValue, path: string, ignoreUnknownFields: boolean): Located | undefined {
  if (desc.typeName === 'google.protobuf.Any') return locateInAny(json, path, ignoreUnknownFields);
  const failure = decodeFailure(desc, json, ignoreUnknownFields);
  if (failure === undefined) return undefined;
  if (CUSTOM_JSON.has(desc.typeName) || !isObject(json)) return { path, reason: failure };
  for (const [key, value] of Object.entries(json)) {
    const at = path === '' ? key : `${path}.${key}`;
    const field = fieldNamed(desc, key);
    if (field === undefined) {
      if (ignoreUnknownFields) continue;
      return { path: at, reason: `unknown field "${key}" in ${desc.typeName}` };
    }
    if (value === null) continue;
    const found = locateInField(desc, field, key, value, at, ignoreUnknownFields);
    if (found !== undefined) return found;
  }
  return { path, reason: failure };
}

function locateInField(desc: DescMessage, field: DescField, key: string, value: JsonValue, at: string, ignore: boolean): Located | undefined {
  if (field.fieldKind === 'message') return locateJsonError(field.message, value, at, ignore);
  if (field.fieldKind === 'list' && field.listKind === 'message' && Array.isArray(value)) {
    for (const [i, item] of value.entries()) {
      const found = locateJsonError(field.message, item, `${at}[${i}]`, ignore);
      if (found !== undefined) return found;
    }
    return undefined;
  }
  if (field.fieldKind === 'map' && field.mapKind === 'message' && isObject(value)) {
    for (const [k, item] of Object.entries(value)) {
      const found = locateJsonError(field.message, item, `${at}[${JSON.stringify(k)}]`, ignore);
      if (found !== undefined) return found;
    }
    return undefined;
  }
  // A scalar, an enum, or a list or map of them: decode the field alone.
  const failure = decodeFailure(desc, { [key]: value }, ignore);
  return failure === undefined ? undefined : { path: at, reason: failure };
}

function locateInAny(json: JsonValue, path: string, ignore: boolean): Located | undefined {
  if (!isObject(json)) return { path, reason: `an Any must be an object with "@type", got ${JSON.stringify(json)}` };
  if (Object.keys(json).length === 0) return undefined;
  const typeUrl = json['@type'];
  if (typeof typeUrl !== 'string' || typeUrl === '') return { path, reason: 'an Any needs "@type"' };
  const desc = envoyMessageType(typeUrl);
  if (desc === undefined) return { path, reason: unknownTypeReason(typeUrl) };
  if (CUSTOM_JSON.has(desc.typeName)) return locateJsonError(desc, json['value'] ?? null, path === '' ? 'value' : `${path}.value`, ignore);
  const fields: JsonObject = {};
  for (const [k, v] of Object.entries(json)) if (k !== '@type') fields[k] = v;
  return locateJsonError(desc, fields, path, ignore);
}

function decodeFailure(desc: DescMessage, json: JsonValue, ignoreUnknownFields: boolean): string | undefined {
  try {
    fromJson(desc, json, { registry: envoyRegistry, ignoreUnknownFields });
    return undefined;
  } catch (e) {
    return reasonOf(e);
  }
}

function fieldNamed(desc: DescMessage, key: string): DescField | undefined {
  for (const field of desc.fields) if (field.name === key || field.jsonName === key) return field;
  return undefined;
}

function isObject(json: JsonValue): json is JsonObject {
  return typeof json === 'object' && json !== null && !Array.isArray(json);
}

function unknownTypeReason(typeUrl: string): string {
  return `unknown type "${typeUrl}": Remora has no schema for it`;
}

function reasonOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
