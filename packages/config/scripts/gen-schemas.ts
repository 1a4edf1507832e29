/**
 * Generates `schema/<group>/<Kind>.json`, the strict JSON Schemas Remora validates Istio
 * resources with. Run with Node 24 (`pnpm --filter @remora/config gen:schemas`); the output is
 * committed, so the runtime never needs the dev dependency.
 *
 * Source: the Istio 1.18 CRD schemas inside @kubernetes-models/istio@2.3.0. Each module there
 * registers its schema through `@kubernetes-models/validate`'s `register(id, schema)`; we run
 * the module with a stub `require` that captures that call (no schema is copied by hand).
 *
 * Post-processing:
 * - keywords ajv does not need are dropped (`double`/`binary` formats, anything unknown);
 * - constraints Istio hid inside oneOf branches move onto the field they constrain;
 * - every object that lists properties becomes closed (`additionalProperties: false`), so an
 *   unknown field is an error with its path. Objects Istio leaves open stay open: `status`,
 *   EnvoyFilter `patch.value` (free-form Envoy config), and maps (`labels`, `headers`, …) whose
 *   values are typed by `additionalProperties`;
 * - an overlay adds the fields Istio introduced after 1.18 that Remora users write;
 * - `metadata` is Kubernetes ObjectMeta, closed, with `name` required.
 *
 * Output is deterministic: same input, same bytes. `--check` compares instead of writing.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runInNewContext } from 'node:vm';
import { SUPPORTED_KINDS } from '../src/schema/kinds.ts';

type Schema = { [keyword: string]: unknown };

const SOURCE_PACKAGE = '@kubernetes-models/istio';
const SOURCE_VERSION = '2.3.0';
const OUT_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'schema');

/** Which module of the source package holds each kind (the newest version it has). */
const SOURCE_MODULE: Readonly<Record<string, string>> = {
  VirtualService: 'networking.istio.io/v1beta1/VirtualService',
  DestinationRule: 'networking.istio.io/v1beta1/DestinationRule',
  Gateway: 'networking.istio.io/v1beta1/Gateway',
  ServiceEntry: 'networking.istio.io/v1beta1/ServiceEntry',
  WorkloadEntry: 'networking.istio.io/v1beta1/WorkloadEntry',
  Sidecar: 'networking.istio.io/v1beta1/Sidecar',
  ProxyConfig: 'networking.istio.io/v1beta1/ProxyConfig',
  EnvoyFilter: 'networking.istio.io/v1alpha3/EnvoyFilter',
  PeerAuthentication: 'security.istio.io/v1beta1/PeerAuthentication',
  RequestAuthentication: 'security.istio.io/v1beta1/RequestAuthentication',
  AuthorizationPolicy: 'security.istio.io/v1beta1/AuthorizationPolicy',
  Telemetry: 'telemetry.istio.io/v1alpha1/Telemetry',
};

// ---------------------------------------------------------------------------------------------
// Extraction

/** Runs one CommonJS module of the source package and returns the schema it registers. */
function extractSchema(modulePath: string): Schema {
  const require = createRequire(import.meta.url);
  const file = require.resolve(`${SOURCE_PACKAGE}/${modulePath}`);
  const source = readFileSync(file, 'utf8');
  const registered = new Map<string, Schema>();
  const stubs: Record<string, unknown> = {
    '@kubernetes-models/validate': {
      register: (id: string, schema: Schema) => registered.set(id, schema),
    },
    '@kubernetes-models/base': {
      Model: class {},
      createTypeMetaGuard: () => () => false,
      // The real setSchema registers lazily; run the registration at once.
      setSchema: (_model: unknown, _id: string, register: () => void) => register(),
    },
  };
  const stubRequire = (id: string): unknown => {
    if (Object.hasOwn(stubs, id)) return stubs[id];
    // ObjectMeta's addSchema: not needed, metadata gets Remora's own schema below.
    if (id.startsWith('@kubernetes-models/apimachinery/')) return { addSchema: () => {} };
    throw new Error(`${modulePath}: unexpected require(${JSON.stringify(id)})`);
  };
  const module = { exports: {} };
  runInNewContext(`(function (exports, require, module) {\n${source}\n})`, {}, { filename: file })(
    module.exports,
    stubRequire,
    module,
  );
  if (registered.size !== 1) throw new Error(`${modulePath}: expected one registered schema, got ${registered.size}`);
  return structuredClone([...registered.values()][0] as Schema);
}

// ---------------------------------------------------------------------------------------------
// Clean-up

const KEPT_KEYWORDS = new Set([
  'type', 'properties', 'items', 'additionalProperties', 'required', 'enum', 'format', 'nullable',
  'oneOf', 'anyOf', 'allOf', 'not', 'minimum', 'maximum',
]);
/** Integer formats the runtime registers with ajv (range-checked); other formats are dropped. */
const KEPT_FORMATS = new Set(['int32', 'uint32', 'int64']);

function clean(schema: Schema): Schema {
  const out: Schema = {};
  for (const [key, value] of Object.entries(schema)) {
    if (!KEPT_KEYWORDS.has(key)) continue; // x-kubernetes-* and other annotations
    if (key === 'format' && !KEPT_FORMATS.has(value as string)) continue;
    if (key === 'properties') {
      const props: Schema = {};
      for (const [name, sub] of Object.entries(value as Schema)) props[name] = clean(sub as Schema);
      out[key] = props;
    } else if (key === 'oneOf' || key === 'anyOf' || key === 'allOf') {
      out[key] = (value as Schema[]).map(clean);
    } else if ((key === 'items' || key === 'not' || key === 'additionalProperties') && typeof value === 'object') {
      out[key] = clean(value as Schema);
    } else {
      out[key] = structuredClone(value);
    }
  }
  return out;
}

/**
 * Closes every object that lists properties, walking only structural positions (properties,
 * items, map values); composition branches (oneOf/anyOf/allOf/not) only carry `required`
 * constraints and must stay as they are. An empty `properties: {}` without
 * `additionalProperties` is Istio's preserve-unknown-fields object: it stays open.
 */
function strictify(schema: Schema): void {
  const props = schema.properties as Schema | undefined;
  if (props !== undefined && Object.keys(props).length === 0) {
    delete schema.properties;
  } else if (props !== undefined && schema.additionalProperties === undefined) {
    schema.additionalProperties = false;
  }
  if (props !== undefined) for (const sub of Object.values(props)) strictify(sub as Schema);
  if (typeof schema.items === 'object') strictify(schema.items as Schema);
  if (typeof schema.additionalProperties === 'object') strictify(schema.additionalProperties as Schema);
  sortProperties(schema);
}

/**
 * Istio's "at most one of" oneOf sometimes carries a field's own constraints inside the branch
 * (`loadBalancer: oneOf [… {properties: {consistentHash: {allOf: […]}}, required: [consistentHash]}]`).
 * There they are lost: an invalid consistentHash just makes the `not` branch match. Move such
 * constraints onto the field itself and keep only `required` in the branches, so a
 * consistentHash with two hash keys is an error with its own path.
 */
function hoistBranchConstraints(schema: Schema): void {
  const props = schema.properties as Schema | undefined;
  const oneOf = schema.oneOf as Schema[] | undefined;
  if (props !== undefined && Array.isArray(oneOf)) {
    const notAnyOf = ((oneOf[0]?.not as Schema | undefined)?.anyOf ?? []) as Schema[];
    for (const branch of [...oneOf.slice(1), ...notAnyOf]) {
      const branchProps = branch.properties as Schema | undefined;
      if (branchProps === undefined) continue;
      for (const [name, constraint] of Object.entries(branchProps)) {
        const field = props[name] as Schema | undefined;
        if (field === undefined) throw new Error(`oneOf branch constrains unknown field ${name}`);
        for (const [keyword, value] of Object.entries(constraint as Schema)) {
          // Only the composition constraints matter; the branch's field lists are fragments.
          if (keyword !== 'allOf' && keyword !== 'oneOf' && keyword !== 'anyOf') continue;
          const existing = field[keyword];
          if (existing !== undefined && JSON.stringify(existing) !== JSON.stringify(value)) {
            throw new Error(`oneOf branch constraint ${keyword} on ${name} conflicts with the field's own`);
          }
          field[keyword] = structuredClone(value);
        }
      }
      delete branch.properties;
    }
  }
  if (props !== undefined) for (const sub of Object.values(props)) hoistBranchConstraints(sub as Schema);
  if (typeof schema.items === 'object') hoistBranchConstraints(schema.items as Schema);
  if (typeof schema.additionalProperties === 'object') hoistBranchConstraints(schema.additionalProperties as Schema);
}

function sortProperties(schema: Schema): void {
  const props = schema.properties as Schema | undefined;
  if (props === undefined) return;
  schema.properties = Object.fromEntries(Object.entries(props).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

// ---------------------------------------------------------------------------------------------
// Overlay: fields Istio added after 1.18 (the source's version) that Remora users write.
// Field names and types follow @kubernetes-models/istio@3.0.1 (Istio 1.29) declarations.

interface OverlayField {
  readonly kind: string;
  /** Istio release that added the field. */
  readonly since: string;
  /** Parent objects inside `spec`: dotted properties, `[]` steps into array items. */
  readonly at: readonly string[];
  readonly field: string;
  /** The field's schema, or a builder that copies an existing sub-schema of the spec. */
  readonly schema: Schema | ((spec: Schema) => Schema);
}

interface OverlayEnum {
  readonly kind: string;
  readonly since: string;
  readonly at: readonly string[];
  readonly field: string;
  readonly addEnum: readonly string[];
}

const str = (): Schema => ({ type: 'string', nullable: true });
const bool = (): Schema => ({ type: 'boolean', nullable: true });
const int32 = (): Schema => ({ type: 'integer', format: 'int32', nullable: true });
const uint32 = (): Schema => ({ type: 'integer', format: 'uint32', nullable: true });
const num = (): Schema => ({ type: 'number', nullable: true });
const strList = (): Schema => ({ type: 'array', items: { type: 'string' }, nullable: true });
const obj = (properties: Schema, required?: readonly string[]): Schema =>
  required === undefined
    ? { type: 'object', properties, nullable: true }
    : { type: 'object', properties, required: [...required], nullable: true };

/** Gateway API style policy attachment (`type.v1beta1.PolicyTargetReference`). */
const targetRef = (): Schema =>
  obj({ group: str(), kind: { type: 'string' }, name: { type: 'string' }, namespace: str() }, ['kind', 'name']);

// DestinationRule: TrafficPolicy sits at the top and in each subset; its port-level settings
// repeat connectionPool, loadBalancer, outlierDetection and tls.
const DR_POLICIES = ['trafficPolicy', 'subsets[].trafficPolicy'];
const DR_PORT_POLICIES = DR_POLICIES.flatMap((p) => [p, `${p}.portLevelSettings[]`]);
const drAt = (suffix: string): string[] => DR_PORT_POLICIES.map((p) => `${p}.${suffix}`);

const OVERLAY: readonly (OverlayField | OverlayEnum)[] = [
  // --- VirtualService
  // Istio 1.19: several mirror destinations per route, each with its own percentage.
  {
    kind: 'VirtualService', since: '1.19', at: ['http[]'], field: 'mirrors',
    schema: (spec) => ({
      type: 'array',
      nullable: true,
      items: {
        type: 'object',
        properties: { destination: resolve(spec, 'http[].mirror', 'copy'), percentage: resolve(spec, 'http[].mirrorPercentage', 'copy') },
        required: ['destination'],
      },
    }),
  },
  // Istio 1.19: regex path rewrite (Envoy regex_rewrite).
  {
    kind: 'VirtualService', since: '1.19', at: ['http[].rewrite'], field: 'uriRegexRewrite',
    schema: obj({ match: str(), rewrite: str() }),
  },
  // Istio 1.22: what to do with CORS preflights that match no allowed origin.
  {
    kind: 'VirtualService', since: '1.22', at: ['http[].corsPolicy'], field: 'unmatchedPreflights',
    schema: { type: 'string', enum: ['UNSPECIFIED', 'FORWARD', 'IGNORE'], nullable: true },
  },
  // Present since Istio 1.18 or earlier; listed so the diff summary shows it was checked.
  { kind: 'VirtualService', since: '1.18', at: ['http[].retries'], field: 'retryRemoteLocalities', schema: bool() },
  // Istio 1.23: skip hosts already tried (Envoy previous_hosts retry predicate).
  { kind: 'VirtualService', since: '1.23', at: ['http[].retries'], field: 'retryIgnorePreviousHosts', schema: bool() },
  // Istio 1.24: base interval of the exponential retry back-off.
  { kind: 'VirtualService', since: '1.24', at: ['http[].retries'], field: 'backoff', schema: str() },

  // --- DestinationRule
  // Present since Istio 1.18 or earlier (tunnel, ring hash / maglev); listed so the diff
  // summary shows they were checked.
  {
    kind: 'DestinationRule', since: '1.18', at: DR_POLICIES, field: 'tunnel',
    schema: obj({ protocol: str(), targetHost: { type: 'string' }, targetPort: uint32() }, ['targetHost', 'targetPort']),
  },
  { kind: 'DestinationRule', since: '1.18', at: drAt('loadBalancer.consistentHash'), field: 'ringHash', schema: obj({ minimumRingSize: uint32() }) },
  { kind: 'DestinationRule', since: '1.18', at: drAt('loadBalancer.consistentHash'), field: 'maglev', schema: obj({ tableSize: uint32() }) },
  // Istio 1.20: a CRL for upstream TLS.
  { kind: 'DestinationRule', since: '1.20', at: drAt('tls'), field: 'caCrl', schema: str() },
  // Istio 1.21: send PROXY protocol to the upstream.
  {
    kind: 'DestinationRule', since: '1.21', at: DR_POLICIES, field: 'proxyProtocol',
    schema: obj({ version: { type: 'string', enum: ['V1', 'V2'], nullable: true } }),
  },
  // Istio 1.21: HTTP/2 max concurrent streams on upstream connections.
  { kind: 'DestinationRule', since: '1.21', at: drAt('connectionPool.http'), field: 'maxConcurrentStreams', schema: int32() },
  // Istio 1.24: idle timeout for TCP upstream connections.
  { kind: 'DestinationRule', since: '1.24', at: drAt('connectionPool.tcp'), field: 'idleTimeout', schema: str() },
  // Istio 1.25: extra attributes of the consistent-hash cookie (SameSite, …).
  {
    kind: 'DestinationRule', since: '1.25', at: drAt('loadBalancer.consistentHash.httpCookie'), field: 'attributes',
    schema: { type: 'array', nullable: true, items: { type: 'object', properties: { name: { type: 'string' }, value: str() }, required: ['name'] } },
  },
  // Istio 1.27: slow-start warm-up with aggression and minimum weight (supersedes warmupDurationSecs).
  {
    kind: 'DestinationRule', since: '1.27', at: drAt('loadBalancer'), field: 'warmup',
    schema: obj({ aggression: num(), duration: { type: 'string' }, minimumPercent: num() }, ['duration']),
  },
  // Istio 1.27: retry budget (Envoy retry_budget) instead of a fixed maxRetries.
  {
    kind: 'DestinationRule', since: '1.27', at: DR_POLICIES, field: 'retryBudget',
    schema: obj({ minRetryConcurrency: uint32(), percent: num() }),
  },

  // --- Gateway
  // Istio 1.19: client certificate optional (Envoy require_client_certificate: false).
  { kind: 'Gateway', since: '1.19', at: ['servers[].tls'], field: 'mode', addEnum: ['OPTIONAL_MUTUAL'] },
  // Istio 1.20: CRL for client certificates.
  { kind: 'Gateway', since: '1.20', at: ['servers[].tls'], field: 'caCrl', schema: str() },
  // Istio 1.27: several certificates per server (RSA and ECDSA side by side).
  { kind: 'Gateway', since: '1.27', at: ['servers[].tls'], field: 'credentialNames', schema: strList() },
  {
    kind: 'Gateway', since: '1.27', at: ['servers[].tls'], field: 'tlsCertificates',
    schema: { type: 'array', nullable: true, items: { type: 'object', properties: { caCertificates: str(), privateKey: str(), serverCertificate: str() } } },
  },
  // Istio 1.28: client CA bundle from its own credential.
  { kind: 'Gateway', since: '1.28', at: ['servers[].tls'], field: 'caCertCredentialName', schema: str() },

  // --- Sidecar
  { kind: 'Sidecar', since: '1.19', at: ['ingress[].tls'], field: 'mode', addEnum: ['OPTIONAL_MUTUAL'] },
  // Istio 1.20: connection pool for inbound traffic, sidecar-wide and per ingress listener.
  { kind: 'Sidecar', since: '1.20', at: [''], field: 'inboundConnectionPool', schema: sidecarConnectionPool },
  { kind: 'Sidecar', since: '1.20', at: ['ingress[]'], field: 'connectionPool', schema: sidecarConnectionPool },

  // --- EnvoyFilter
  // Istio 1.22: attach to a Gateway API Gateway or Service instead of selecting workloads.
  { kind: 'EnvoyFilter', since: '1.22', at: [''], field: 'targetRefs', schema: { type: 'array', nullable: true, items: targetRef() } },

  // --- RequestAuthentication
  // Istio 1.20: targetRef (Gateway API policy attachment); Istio 1.22: targetRefs.
  { kind: 'RequestAuthentication', since: '1.20', at: [''], field: 'targetRef', schema: targetRef() },
  { kind: 'RequestAuthentication', since: '1.22', at: [''], field: 'targetRefs', schema: { type: 'array', nullable: true, items: targetRef() } },
  // Istio 1.20: JWKS fetch timeout.
  { kind: 'RequestAuthentication', since: '1.20', at: ['jwtRules[]'], field: 'timeout', schema: str() },
  // Istio 1.22: JWT from cookies.
  { kind: 'RequestAuthentication', since: '1.22', at: ['jwtRules[]'], field: 'fromCookies', schema: strList() },
  // Istio 1.26: claims whose string value is a space-separated list (besides `scope`).
  { kind: 'RequestAuthentication', since: '1.26', at: ['jwtRules[]'], field: 'spaceDelimitedClaims', schema: strList() },

  // --- AuthorizationPolicy (PeerAuthentication has no targetRef, even in 1.29)
  { kind: 'AuthorizationPolicy', since: '1.20', at: [''], field: 'targetRef', schema: targetRef() },
  { kind: 'AuthorizationPolicy', since: '1.22', at: [''], field: 'targetRefs', schema: { type: 'array', nullable: true, items: targetRef() } },

  // --- Telemetry
  { kind: 'Telemetry', since: '1.20', at: [''], field: 'targetRef', schema: targetRef() },
  { kind: 'Telemetry', since: '1.22', at: [''], field: 'targetRefs', schema: { type: 'array', nullable: true, items: targetRef() } },
  // Istio 1.26: whether istiod adds its istio.* service tags to spans.
  { kind: 'Telemetry', since: '1.26', at: ['tracing[]'], field: 'enableIstioTags', schema: bool() },
  // Istio 1.25: `ns/sa` service accounts without trust domains.
  { kind: 'AuthorizationPolicy', since: '1.25', at: ['rules[].from[].source'], field: 'serviceAccounts', schema: strList() },
  { kind: 'AuthorizationPolicy', since: '1.25', at: ['rules[].from[].source'], field: 'notServiceAccounts', schema: strList() },
];

/** DestinationRule's connection pool (with its overlay) as Sidecar's inbound pool; read from the DR schema. */
function sidecarConnectionPool(): Schema {
  const dr = buildSpec('DestinationRule');
  return structuredClone(resolve(dr, 'trafficPolicy.connectionPool', 'copy'));
}

/** Walks `spec` along a dotted overlay path. */
function resolve(spec: Schema, path: string, purpose: string): Schema {
  let node = spec;
  if (path === '') return node;
  for (const step of path.split('.')) {
    const isArray = step.endsWith('[]');
    const name = isArray ? step.slice(0, -2) : step;
    const props = node.properties as Schema | undefined;
    const next = props?.[name] as Schema | undefined;
    if (next === undefined) throw new Error(`overlay (${purpose}): no field ${JSON.stringify(name)} on the way to ${path}`);
    node = next;
    if (isArray) {
      if (typeof node.items !== 'object') throw new Error(`overlay (${purpose}): ${name} is not an array in ${path}`);
      node = node.items as Schema;
    }
  }
  return node;
}

interface DiffLine {
  readonly kind: string;
  readonly text: string;
}

function applyOverlay(kind: string, spec: Schema, diff: DiffLine[]): void {
  for (const entry of OVERLAY) {
    if (entry.kind !== kind) continue;
    for (const at of entry.at) {
      const parent = resolve(spec, at, `${kind}.${entry.field}`);
      const where = `spec${at === '' ? '' : '.' + at}.${entry.field}`;
      const props = (parent.properties ??= {}) as Schema;
      if ('addEnum' in entry) {
        const field = props[entry.field] as Schema | undefined;
        const values = field?.enum as string[] | undefined;
        if (values === undefined) throw new Error(`overlay: ${kind} ${where} has no enum`);
        const missing = entry.addEnum.filter((v) => !values.includes(v));
        if (missing.length === 0) diff.push({ kind, text: `  = ${where}: ${entry.addEnum.join(', ')} already in Istio 1.18` });
        else {
          values.push(...missing);
          diff.push({ kind, text: `  + ${where}: enum value ${missing.join(', ')} (Istio ${entry.since})` });
        }
        continue;
      }
      if (props[entry.field] !== undefined) {
        diff.push({ kind, text: `  = ${where}: already in Istio 1.18` });
        continue;
      }
      props[entry.field] = clean(typeof entry.schema === 'function' ? entry.schema(spec) : structuredClone(entry.schema));
      diff.push({ kind, text: `  + ${where} (Istio ${entry.since})` });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Assembly

const stringMap = (): Schema => ({ type: 'object', additionalProperties: { type: 'string' }, nullable: true });

/** Kubernetes ObjectMeta as users and `kubectl get -o yaml` write it; closed. */
const OBJECT_META: Schema = {
  type: 'object',
  properties: {
    annotations: stringMap(),
    creationTimestamp: { type: 'string', nullable: true },
    deletionGracePeriodSeconds: { type: 'integer', nullable: true },
    deletionTimestamp: { type: 'string', nullable: true },
    finalizers: { type: 'array', items: { type: 'string' }, nullable: true },
    generateName: { type: 'string', nullable: true },
    generation: { type: 'integer', nullable: true },
    labels: stringMap(),
    managedFields: { type: 'array', items: { type: 'object' }, nullable: true },
    name: { type: 'string' },
    namespace: { type: 'string', nullable: true },
    ownerReferences: { type: 'array', items: { type: 'object' }, nullable: true },
    resourceVersion: { type: 'string', nullable: true },
    selfLink: { type: 'string', nullable: true },
    uid: { type: 'string', nullable: true },
  },
  required: ['name'],
  additionalProperties: false,
};

const specCache = new Map<string, Schema>();
const diffByKind = new Map<string, DiffLine[]>();

/** The cleaned, overlaid (not yet closed) spec schema of one kind. */
function buildSpec(kind: string): Schema {
  const cached = specCache.get(kind);
  if (cached !== undefined) return cached;
  const modulePath = SOURCE_MODULE[kind];
  if (modulePath === undefined) throw new Error(`no source module for ${kind}`);
  const raw = extractSchema(modulePath);
  const rawSpec = (raw.properties as Schema).spec as Schema;
  const spec = clean(rawSpec);
  hoistBranchConstraints(spec);
  const diff: DiffLine[] = [];
  applyOverlay(kind, spec, diff);
  specCache.set(kind, spec);
  diffByKind.set(kind, diff);
  return spec;
}

function buildDocumentSchema(kind: string, group: string, versions: readonly string[]): Schema {
  const spec = structuredClone(buildSpec(kind));
  strictify(spec);
  return {
    $comment:
      `Generated by scripts/gen-schemas.ts from ${SOURCE_PACKAGE}@${SOURCE_VERSION} (Istio 1.18 CRDs) ` +
      `plus fields of later Istio releases. Do not edit. ${group} ${kind}, versions: ${versions.join(', ')}.`,
    type: 'object',
    properties: {
      apiVersion: { type: 'string' },
      kind: { type: 'string' },
      metadata: structuredClone(OBJECT_META),
      spec,
      // Written by controllers, never read by Remora.
      status: { type: 'object', nullable: true },
    },
    required: ['apiVersion', 'kind', 'metadata'],
    additionalProperties: false,
  };
}

/** `--check`: write nothing, exit 1 when a committed schema differs from what would be generated. */
function main(check: boolean): void {
  const written: string[] = [];
  const stale: string[] = [];
  for (const [kind, { group, versions }] of Object.entries(SUPPORTED_KINDS)) {
    const text = JSON.stringify(buildDocumentSchema(kind, group, versions), null, 2) + '\n';
    const dir = join(OUT_DIR, group);
    const file = join(dir, `${kind}.json`);
    if (check) {
      if (!existsSync(file) || readFileSync(file, 'utf8') !== text) stale.push(`${group}/${kind}.json`);
      continue;
    }
    mkdirSync(dir, { recursive: true });
    writeFileSync(file, text);
    written.push(`${group}/${kind}.json`);
  }
  if (check) {
    if (stale.length > 0) {
      console.error(`Out of date (run gen:schemas): ${stale.join(', ')}`);
      process.exitCode = 1;
    } else {
      console.log('Schemas are up to date.');
    }
    return;
  }
  console.log(`Overlay over Istio 1.18 (+ added, = already present):`);
  for (const kind of Object.keys(SUPPORTED_KINDS)) {
    const lines = diffByKind.get(kind) ?? [];
    console.log(`${kind}: ${lines.length === 0 ? 'nothing added' : ''}`);
    for (const line of lines) console.log(line.text);
  }
  console.log(`Wrote ${written.length} schemas to ${OUT_DIR}:\n  ${written.join('\n  ')}`);
}

main(process.argv.includes('--check'));
