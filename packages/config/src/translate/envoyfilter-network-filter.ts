/**
 * EnvoyFilter `applyTo: NETWORK_FILTER` MERGE into the HTTP connection manager, the common
 * real-world patch (e.g. `server_header_transformation: PASS_THROUGH` on the ingress
 * gateway). The patch's HttpConnectionManager is read with Envoy's descriptors and merged by
 * proto rules into the fields Remora models (`server_name`, `server_header_transformation`,
 * `http_protocol_options.accept_http_10`); any other field it sets is reported as not
 * supported, never dropped silently.
 */
import type { HttpConnectionManagerJson } from '../envoy/gen/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager_pb.ts';
import type { HttpConnectionManagerOptions } from '../model/listener.ts';
import type { Resource } from '../resources/resource.ts';
import type { TranslateContext } from './context.ts';
import {
  canonicalFilterName,
  decode,
  envoyFilterPatches,
  field,
  HTTP_CONNECTION_MANAGER,
  listenerMatches,
  messageTypeOf,
  obj,
  type EnvoyFilterPatch,
  type Obj,
  type Path,
  type PatchListener,
} from './envoyfilter.ts';

const HCM_TYPE = 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const TYPED_STRUCTS: ReadonlySet<string> = new Set(['udpa.type.v1.TypedStruct', 'xds.type.v3.TypedStruct']);

/** The HttpConnectionManager fields Remora models; within http_protocol_options, only accept_http_10. */
const MODELLED: ReadonlySet<string> = new Set(['serverName', 'serverHeaderTransformation', 'httpProtocolOptions']);

/** What one patch sets, read once per translation; null: it does not touch the connection manager, or is invalid (reported). */
type HcmPatch = { readonly hcm: HttpConnectionManagerJson } | null;

const read = new WeakMap<EnvoyFilterPatch, HcmPatch>();

function typeName(url: unknown): string {
  const s = String(url ?? '');
  return s.slice(s.lastIndexOf('/') + 1);
}

/** The name a patch wrote a field with (snake_case or lowerCamelCase), for messages. */
function written(raw: Obj | null, camel: string): string {
  if (raw === null || camel in raw) return camel;
  // protobuf's JSON name: each `_` dropped and the next character upper-cased (`http_10` → `http10`).
  return Object.keys(raw).find((k) => k.replace(/_(.)/g, (_, c: string) => c.toUpperCase()) === camel) ?? camel;
}

function readPatch(ctx: TranslateContext, p: EnvoyFilterPatch): HcmPatch {
  if (read.has(p)) return read.get(p)!;
  const out = readPatchOnce(ctx, p);
  read.set(p, out);
  return out;
}

function readPatchOnce(ctx: TranslateContext, p: EnvoyFilterPatch): HcmPatch {
  const at: Path = [...p.at, 'patch', 'value'];
  const value = obj(p.value);
  const tc = value === null ? { value: undefined, name: 'typed_config' } : field(value, 'typed_config');
  const t = obj(tc.value);
  if (t === null) return null;
  let type = typeName(t['@type']);
  let fields: Obj;
  let fieldsAt: Path = [...at, tc.name];
  if (TYPED_STRUCTS.has(type)) {
    type = typeName(field(t, 'type_url').value);
    fields = obj(t.value) ?? {};
    fieldsAt = [...fieldsAt, 'value'];
  } else {
    const { '@type': _, ...rest } = t;
    fields = rest;
  }
  // istiod merges only into a filter whose config has the patch's type: another network filter's patch.
  if (type !== HCM_TYPE) return null;
  const schema = messageTypeOf(ctx, p.r, HCM_TYPE, fieldsAt);
  const hcm = schema === null ? null : decode<HttpConnectionManagerJson>(ctx, p.r, schema, fields, fieldsAt);
  if (hcm === null) return null;
  for (const key of Object.keys(hcm)) {
    if (!MODELLED.has(key)) ctx.warn(p.r, [...fieldsAt, written(fields, key)], `${written(fields, key)} is not supported by Remora and is ignored`);
  }
  const hpo = hcm.httpProtocolOptions;
  if (hpo !== undefined) {
    const rawHpo = obj(fields[written(fields, 'httpProtocolOptions')]);
    for (const key of Object.keys(hpo)) {
      if (key !== 'acceptHttp10') ctx.warn(p.r, [...fieldsAt, written(fields, 'httpProtocolOptions'), written(rawHpo, key)], `${written(rawHpo, key)} is not supported by Remora and is ignored`);
    }
  }
  return { hcm };
}

/** Does a NETWORK_FILTER patch name the connection manager (or no filter, which istiod matches to every one)? */
function namesConnectionManager(p: EnvoyFilterPatch): boolean {
  const name = p.match.listener?.filterChain?.filter?.name;
  return name === undefined || name === '' || canonicalFilterName(name) === HTTP_CONNECTION_MANAGER;
}

/**
 * A listener's connection manager settings with the EnvoyFilter NETWORK_FILTER MERGE patches
 * that match it applied in istiod's order. Proto merge: a field the patch leaves at its
 * default (e.g. `OVERWRITE`, `accept_http_10: false`) changes nothing.
 */
export function patchedConnectionManager(ctx: TranslateContext, listener: PatchListener, base: HttpConnectionManagerOptions): HttpConnectionManagerOptions {
  let out = base;
  for (const p of envoyFilterPatches(ctx)) {
    if (p.applyTo !== 'NETWORK_FILTER' || p.operation !== 'MERGE' || !namesConnectionManager(p) || !listenerMatches(ctx, p, listener)) continue;
    const patch = readPatch(ctx, p);
    if (patch === null) continue;
    const { serverName, serverHeaderTransformation, httpProtocolOptions } = patch.hcm;
    out = {
      serverName: serverName !== undefined && serverName !== '' ? serverName : out.serverName,
      serverHeaderTransformation: serverHeaderTransformation ?? out.serverHeaderTransformation,
      httpProtocolOptions: { acceptHttp10: httpProtocolOptions?.acceptHttp10 === true ? true : out.httpProtocolOptions.acceptHttp10 },
    };
  }
  return out;
}

/**
 * NETWORK_FILTER patches Remora does not apply: operations other than MERGE, and MERGEs into
 * another network filter than the connection manager. Reported once per translation.
 */
export function checkNetworkFilterPatches(ctx: TranslateContext): void {
  for (const p of envoyFilterPatches(ctx)) {
    if (p.applyTo !== 'NETWORK_FILTER') continue;
    const r: Resource = p.r;
    if (p.operation !== 'MERGE') {
      ctx.warn(r, [...p.at, 'patch', 'operation'], `${p.operation} of a network filter is not applied by Remora yet (only MERGE into ${HTTP_CONNECTION_MANAGER} is); this patch is ignored`);
    } else if (!namesConnectionManager(p)) {
      ctx.warn(r, [...p.at, 'match', 'listener', 'filterChain', 'filter', 'name'], `MERGE into ${String(p.match.listener?.filterChain?.filter?.name)} is not applied by Remora (only into ${HTTP_CONNECTION_MANAGER}); this patch is ignored`);
    }
  }
}
