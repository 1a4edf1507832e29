/**
 * Envoy's `/config_dump`: the live snapshot as an `envoy.admin.v3.ConfigDump`, printed as
 * Envoy prints it (proto field names, sections in Envoy's order, each an `Any`), with
 * Envoy's query parameters `?resource=`, `?mask=`, `?name_regex=` and `?include_eds`
 * (source/server/admin/config_dump_handler.cc). The Envoy descriptors load on the first
 * request (about 0.3 s), never at start-up: nothing else in the proxy needs them.
 */
import { readFile } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import { Regex, type ProxyConfig, type ProxyNode } from '@remora/config';
import type { EnvoyResources, SecretRef } from '@remora/config/envoy';
import type { WorkloadIdentity } from '../tls/identity-store.ts';

type EnvoyModule = typeof import('@remora/config/envoy');
type Schema = Parameters<EnvoyModule['envoyFromJson']>[0];
type Json = Record<string, unknown>;

/** What a dump is made of: the live config, when it went live, and the process around it. */
export interface ConfigDumpInput {
  readonly config: ProxyConfig | null;
  readonly node: ProxyNode;
  /** When the snapshot went live (ms since the epoch). */
  readonly liveAt: number;
  readonly startedAt: number;
  readonly identity: WorkloadIdentity | null;
  readonly adminAddress: string;
  readonly adminPort: number;
  /** Whether an endpoint (`address:port`) of a cluster is out of rotation now (outlier ejection); absent: healthy. */
  readonly isEjected: (cluster: string, hostPort: string) => boolean;
}

export interface AdminReply {
  readonly status: number;
  readonly type: string;
  readonly body: string;
}

const ADMIN = 'type.googleapis.com/envoy.admin.v3.';

let envoyModule: Promise<EnvoyModule> | null = null;

/** Loads `@remora/config/envoy` once, on first use. */
function envoy(): Promise<EnvoyModule> {
  envoyModule ??= import('@remora/config/envoy');
  return envoyModule;
}

/**
 * The Envoy node this proxy presents (the bootstrap's: id, cluster, metadata, locality), with
 * Envoy's admin field names, as `/server_info` prints it.
 */
export async function envoyNodeJson(node: ProxyNode, adminAddress: string, adminPort: number): Promise<Record<string, unknown>> {
  const m = await envoy();
  const n = m.bootstrapJson(node, { ip: nodeIp(), adminAddress, adminPort }).node ?? {};
  const { userAgentName, locality, ...rest } = n as Record<string, unknown> & { userAgentName?: string; locality?: { region?: string; zone?: string; subZone?: string } };
  return {
    ...rest,
    ...(locality === undefined ? {} : { locality: { region: locality.region ?? '', zone: locality.zone ?? '', sub_zone: locality.subZone ?? '' } }),
    ...(userAgentName === undefined ? {} : { user_agent_name: userAgentName }),
  };
}

function text(status: number, body: string): AdminReply {
  return { status, type: 'text/plain', body };
}

/** Answers `GET /config_dump?<params>` as Envoy does, errors included. */
export async function configDump(params: URLSearchParams, input: ConfigDumpInput): Promise<AdminReply> {
  const resource = params.get('resource');
  const mask = params.get('mask');
  const includeEds = params.has('include_eds');
  const nameRegex = params.get('name_regex');
  let matches: (name: string) => boolean = () => true;
  if (nameRegex !== null && nameRegex !== '') {
    try {
      const re = new Regex(nameRegex);
      matches = (name) => re.matchesAll(name);
    } catch (err) {
      return text(400, `INVALID_ARGUMENT: Error while parsing name_regex from ${nameRegex}: ${(err as Error).message}`);
    }
  }
  const m = await envoy();
  const sections = dumpSections(m, input, matches, includeEds);
  const configs: Json[] = [];
  // Only the sections asked for are built: a dump of a large config takes a while, and this
  // runs on the thread that serves traffic.
  if (resource !== null) {
    let found = false;
    for (const s of sections) {
      const field = s.schema.fields.find((f) => f.name === resource);
      if (field === undefined) continue;
      if (field.fieldKind !== 'list' || field.listKind !== 'message') {
        return text(400, `${resource} is not a repeated field. Use ?mask=${resource} to get only this field`);
      }
      const elementSchema = field.message;
      const json = await s.build();
      for (const element of (json[resource] as Json[] | undefined) ?? []) {
        if (mask !== null && !trimResource(m, maskPaths(mask), element, elementSchema)) {
          return text(400, `FieldMask ${maskDebugString(mask)} could not be successfully used.`);
        }
        configs.push({ '@type': `type.googleapis.com/${elementSchema.typeName}`, ...element });
      }
      found = true;
      break;
    }
    if (!found) return text(404, `${resource} not found in config dump`);
  } else {
    for (const s of sections) {
      if (mask !== null && !maskPaths(mask).every((p) => isValidPath(s.schema, p))) continue;
      const json = await s.build();
      if (mask !== null) trim(json, maskTree(maskPaths(mask)));
      configs.push({ '@type': `${ADMIN}${s.schema.name}`, ...json });
    }
    if (configs.length === 0 && mask !== null) return text(400, `FieldMask ${mask} could not be successfully applied to any configs.`);
  }
  return { status: 200, type: 'application/json', body: JSON.stringify({ configs }, null, 2) + '\n' };
}

interface Section {
  readonly schema: Schema;
  /** The section as Envoy prints it: proto field names, without `@type`. */
  readonly build: () => Promise<Json>;
}

/**
 * The sections in Envoy's order: bootstrap, clusters, endpoints (with `include_eds`),
 * listeners, scoped routes, routes, secrets. Each is read with its generated schema and
 * written back with proto field names, so the dump cannot hold a field Envoy's message lacks.
 */
function dumpSections(m: EnvoyModule, input: ConfigDumpInput, matches: (name: string) => boolean, includeEds: boolean): Section[] {
  const schema = (name: string): Schema => {
    const s = m.envoyMessageType(`${ADMIN}${name}`);
    if (s === undefined) throw new Error(`no schema for envoy.admin.v3.${name}`);
    return s;
  };
  const section = (name: string, make: () => Json | Promise<Json>): Section => {
    const s = schema(name);
    return { schema: s, build: async () => m.envoyToJson(s, m.envoyFromJson(s, (await make()) as never), { useProtoFieldName: true }) as Json };
  };
  const typed = (type: string, body: object): Json => ({ '@type': `type.googleapis.com/${type}`, ...body });
  const version = input.config?.version ?? '';
  const lastUpdated = new Date(input.liveAt).toISOString();
  const stamped = version === '' ? {} : { versionInfo: version, lastUpdated };
  let exported: EnvoyResources | null = null;
  const resources = (): EnvoyResources | null => {
    if (input.config === null) return null;
    exported ??= input.config.envoyJson !== undefined ? (JSON.parse(input.config.envoyJson) as EnvoyResources) : m.envoyResourcesFromModel(input.config);
    return exported;
  };
  const startedAt = new Date(input.startedAt).toISOString();
  // From a control plane, each resource carries the version it came with and when; from files,
  // all share the config's. A resource a control plane did not send is the bootstrap's (static).
  const versions = (): NonNullable<EnvoyResources['versions']> | null => resources()?.versions ?? null;
  const typeVersion = (type: string): { versionInfo?: string } => {
    const v = versions();
    if (v === null) return version === '' ? {} : { versionInfo: version };
    const t = v[type];
    return t === undefined ? {} : { versionInfo: t.version };
  };
  const isStatic = (type: string, name: string | undefined): boolean => {
    const v = versions();
    return v !== null && v[type]?.resources[name ?? ''] === undefined;
  };
  const arrival =
    (type: string) =>
    (name: string | undefined): { versionInfo?: string; lastUpdated?: string } => {
      const v = versions();
      if (v === null) return stamped;
      const r = v[type]?.resources[name ?? ''];
      return r === undefined ? {} : { versionInfo: r.version, lastUpdated: r.lastUpdated };
    };

  const out: Section[] = [
    section('BootstrapConfigDump', () => ({
      bootstrap: m.bootstrapJson(input.node, { ip: nodeIp(), adminAddress: input.adminAddress, adminPort: input.adminPort }),
      lastUpdated: new Date(input.startedAt).toISOString(),
    })),
    section('ClustersConfigDump', () => {
      const wanted = (resources()?.clusters ?? []).filter((c) => matches(c.name ?? ''));
      const of = arrival('Cluster');
      return {
        ...typeVersion('Cluster'),
        staticClusters: wanted.filter((c) => isStatic('Cluster', c.name)).map((c) => ({ cluster: typed('envoy.config.cluster.v3.Cluster', c), lastUpdated: startedAt })),
        dynamicActiveClusters: wanted.filter((c) => !isStatic('Cluster', c.name)).map((c) => ({ ...of(c.name), cluster: typed('envoy.config.cluster.v3.Cluster', c) })),
      };
    }),
  ];
  if (includeEds && input.config !== null) {
    // As Envoy, each endpoint with its health now: the runtime's, not the config's.
    const cla = (e: EnvoyResources['endpoints'][number]): Json =>
      typed('envoy.config.endpoint.v3.ClusterLoadAssignment', {
        ...e.assignment,
        endpoints: (e.assignment.endpoints ?? []).map((group) => ({
          ...group,
          lbEndpoints: (group.lbEndpoints ?? []).map((lb) => {
            const a = lb.endpoint?.address?.socketAddress;
            const ejected = a !== undefined && input.isEjected(e.assignment.clusterName ?? '', `${a.address ?? ''}:${a.portValue ?? 0}`);
            return { ...lb, healthStatus: ejected ? 'UNHEALTHY' : 'HEALTHY' };
          }),
        })),
      });
    out.push(
      section('EndpointsConfigDump', () => {
        const wanted = (resources()?.endpoints ?? []).filter((e) => matches(e.assignment.clusterName ?? ''));
        return {
          staticEndpointConfigs: wanted.filter((e) => !e.eds).map((e) => ({ endpointConfig: cla(e) })),
          dynamicEndpointConfigs: wanted.filter((e) => e.eds).map((e) => ({ ...arrival('ClusterLoadAssignment')(e.assignment.clusterName), endpointConfig: cla(e) })),
        };
      }),
    );
  }
  out.push(
    section('ListenersConfigDump', () => {
      const wanted = (resources()?.listeners ?? []).filter((l) => matches(l.name ?? ''));
      const of = arrival('Listener');
      return {
        ...typeVersion('Listener'),
        staticListeners: wanted.filter((l) => isStatic('Listener', l.name)).map((l) => ({ listener: typed('envoy.config.listener.v3.Listener', l), lastUpdated: startedAt })),
        dynamicListeners: wanted
          .filter((l) => !isStatic('Listener', l.name))
          .map((l) => ({ name: l.name, activeState: { ...of(l.name), listener: typed('envoy.config.listener.v3.Listener', l) } })),
      };
    }),
    section('ScopedRoutesConfigDump', () => ({})),
    section('RoutesConfigDump', () => ({
      dynamicRouteConfigs: (resources()?.routeConfigs ?? [])
        .filter((r) => matches(r.name ?? ''))
        .map((r) => ({ ...arrival('RouteConfiguration')(r.name), routeConfig: typed('envoy.config.route.v3.RouteConfiguration', r) })),
    })),
    section('SecretsConfigDump', async () => {
      const active: Json[] = [];
      const warming: Json[] = [];
      for (const ref of (resources()?.secrets ?? []).filter((s) => matches(s.name))) {
        const content = await secretContent(ref, input.identity);
        const entry = { name: ref.name, ...stamped };
        if (content === null) warming.push({ ...entry, secret: typed('envoy.extensions.transport_sockets.tls.v3.Secret', { name: ref.name }) });
        else active.push({ ...entry, secret: typed('envoy.extensions.transport_sockets.tls.v3.Secret', m.secretJson(ref.name, content)) });
      }
      return { dynamicActiveSecrets: active, dynamicWarmingSecrets: warming };
    }),
  );
  return out;
}

/**
 * A secret's public half, read when the dump is asked for: the certificate chain or the
 * roots. Private keys are never read here, so a dump cannot leak one. Null: not loaded (yet).
 */
async function secretContent(ref: SecretRef, identity: WorkloadIdentity | null): Promise<{ certChainPem?: string; rootsPem?: string } | null> {
  switch (ref.kind) {
    case 'workload':
      return identity === null ? null : { certChainPem: identity.certChainPem };
    case 'roots':
      return identity === null ? null : { rootsPem: identity.rootsPem };
    case 'certificate':
      return readFile(ref.certFile, 'utf8').then((certChainPem) => ({ certChainPem }), () => null);
    case 'validation':
      if (ref.caFile === '') return null;
      return readFile(ref.caFile, 'utf8').then((rootsPem) => ({ rootsPem }), () => null);
  }
}

/** The address Istio's agent puts in the node id: `INSTANCE_IP`, else the first external IPv4. */
function nodeIp(): string {
  if (process.env.INSTANCE_IP) return process.env.INSTANCE_IP;
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

// ---- field masks, as protobuf's FieldMaskUtil applies them to the printed JSON ----

function maskPaths(mask: string): string[] {
  return mask.split(',').filter((p) => p !== '');
}

/** protobuf's `FieldMask::DebugString()`, which Envoy puts in its message. */
function maskDebugString(mask: string): string {
  return maskPaths(mask)
    .map((p) => `paths: "${p}"\n`)
    .join('');
}

/**
 * `FieldMaskUtil::GetFieldDescriptors`: every segment names a field, and every segment but
 * the last a singular message field (a mask cannot index through a repeated field).
 */
function isValidPath(schema: Schema, path: string): boolean {
  let at: Schema | undefined = schema;
  const segments = path.split('.');
  for (let i = 0; i < segments.length; i++) {
    if (at === undefined) return false;
    const field: Schema['fields'][number] | undefined = at.fields.find((f) => f.name === segments[i]);
    if (field === undefined) return false;
    if (i < segments.length - 1) {
      if (field.fieldKind !== 'message') return false;
      at = field.message;
    }
  }
  return true;
}

interface MaskTree {
  readonly children: Map<string, MaskTree>;
}

function maskTree(paths: readonly string[]): MaskTree {
  const root: MaskTree = { children: new Map() };
  for (const path of paths) {
    let node = root;
    for (const segment of path.split('.')) {
      let next = node.children.get(segment);
      if (next === undefined) {
        next = { children: new Map() };
        node.children.set(segment, next);
      }
      node = next;
    }
  }
  // A path that is a prefix of another keeps its whole field, as in protobuf's tree.
  const prune = (n: MaskTree, paths: readonly string[][]): void => {
    for (const p of paths) {
      let node = n;
      for (const s of p) node = node.children.get(s)!;
      node.children.clear();
    }
  };
  prune(root, paths.filter((p) => paths.some((q) => q !== p && q.startsWith(`${p}.`))).map((p) => p.split('.')));
  return root;
}

/** `FieldMaskUtil::TrimMessage` on the printed form: keeps the masked fields, drops the rest. */
function trim(json: Json, tree: MaskTree): void {
  for (const key of Object.keys(json)) {
    if (key === '@type') continue;
    const child = tree.children.get(key);
    if (child === undefined) delete json[key];
    else if (child.children.size > 0) {
      const v = json[key];
      if (v !== null && typeof v === 'object' && !Array.isArray(v)) trim(v as Json, child);
    }
  }
}

function checkAndTrim(paths: readonly string[], json: Json, schema: Schema): boolean {
  if (!paths.every((p) => isValidPath(schema, p))) return false;
  trim(json, maskTree(paths));
  return true;
}

/**
 * Envoy's `trimResourceMessage`: a mask over one `?resource=` entry reaches into its single
 * `Any` field (`cluster.name,last_updated` keeps the cluster's name and the entry's time).
 */
function trimResource(m: EnvoyModule, paths: readonly string[], json: Json, schema: Schema): boolean {
  const outer: string[] = [];
  const inner: string[] = [];
  let anyField: string | null = null;
  for (const path of paths) {
    const [first = '', ...rest] = path.split('.');
    const field = schema.fields.find((f) => f.name === first);
    if (field !== undefined && field.fieldKind === 'message' && field.message.typeName === 'google.protobuf.Any') {
      anyField ??= first;
      outer.push(first);
      // `cluster` alone asks for the whole entry.
      if (rest.length > 0) inner.push(rest.join('.'));
    } else {
      outer.push(path);
    }
  }
  if (anyField !== null && inner.length > 0) {
    const value = json[anyField] as Json | undefined;
    if (value !== undefined) {
      const innerSchema = m.envoyMessageType(String(value['@type'] ?? ''));
      if (innerSchema === undefined || !checkAndTrim(inner, value, innerSchema)) return false;
    }
  }
  return checkAndTrim(outer, json, schema);
}
