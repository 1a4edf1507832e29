/**
 * `remora envoy -c BOOTSTRAP [Envoy's flags]`: Remora where Envoy would run. Istio's agent
 * writes an Envoy bootstrap and execs `envoy` with Envoy's flags; pointing it at Remora (the
 * `envoy` shim in bin/, or `remora envoy`) needs no change on either side. The bootstrap
 * says who the proxy is (its node), where the admin API listens, which resources are static,
 * and where the ADS server is; everything else arrives over ADS.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import type { EnvoyResources } from '@remora/config/envoy';
import type { ClusterJson } from '@remora/config/envoy/gen/envoy/config/cluster/v3/cluster_pb.js';
import type { BootstrapJson } from '@remora/config/envoy/gen/envoy/config/bootstrap/v3/bootstrap_pb.js';
import type { Loggers } from '../logger.ts';
import type { ConfigSource, SourcedConfig } from './config-source.ts';
import { EnvoyUsageError, parseEnvoyArgs, proxyNodeFromEnvoy, type EnvoyOptions } from './envoy-options.ts';
import type { ProxyOptions } from './options.ts';
import { ProxyProcess, StartError } from './proxy-process.ts';

/** Istio's bootstrap cluster for its agent's SDS socket, which istiod's `sdsConfig`s name. */
const SDS_CLUSTER = 'sds-grpc';

interface Io {
  readonly out: (s: string) => void;
  readonly err: (s: string) => void;
  readonly exit: (code: number) => void;
}

export const ENVOY_HELP = `usage: remora envoy -c BOOTSTRAP [Envoy's options]

Runs Remora as Envoy would run: the bootstrap (JSON or YAML, as Istio's agent writes
etc/istio/proxy/envoy-rev.json) gives the node, the admin address, static resources and the
ADS server; listeners, routes, clusters and endpoints arrive over ADS.

Envoy's options, as Envoy reads them:
  -c, --config-path PATH              the bootstrap
      --config-yaml YAML              a bootstrap merged over the file's
      --mode serve|validate|init_only validate: check the bootstrap and exit
  -l, --log-level LEVEL               trace, debug, info, warning|warn, error, critical, off
      --component-log-level C:L,...   per component
      --drain-time-s N                how long in-flight requests may take on shutdown
      --drain-strategy gradual|immediate
      --concurrency N                 worker threads serving the listeners (default: one per core; 1: one event loop)
      --allow-unknown-static-fields   warn about unknown bootstrap fields instead of refusing
      --service-cluster, --service-node, --service-zone   override the bootstrap's node
Envoy's other options (hot restart, base id, file flush, ...) are accepted and have no effect.
`;

/** Runs the command; resolves with an exit status for the modes that end by themselves, null when serving. */
export async function runEnvoy(argv: readonly string[], io: Io): Promise<number | null> {
  let opts: EnvoyOptions | 'help' | 'version';
  try {
    opts = parseEnvoyArgs(argv);
  } catch (err) {
    if (err instanceof EnvoyUsageError) {
      io.err(`${err.message}\n\n${ENVOY_HELP}`);
      return 1;
    }
    throw err;
  }
  if (opts === 'help') {
    io.out(ENVOY_HELP);
    return 0;
  }
  // Loaded now: the xDS client and Envoy's descriptors are needed from here on.
  const [{ readBootstrap, BootstrapError, staticClusterTarget }, envoy] = await Promise.all([import('@remora/xds'), import('@remora/config/envoy')]);
  if (opts === 'version') {
    const { USER_AGENT_VERSION } = await import('@remora/xds');
    io.out(`remora version: ${USER_AGENT_VERSION}/Remora/RELEASE\n`);
    return 0;
  }

  let json: Record<string, unknown>;
  try {
    json = bootstrapDocument(opts);
  } catch (err) {
    io.err(`error initializing configuration '${opts.configPath ?? '--config-yaml'}': ${(err as Error).message}\n`);
    return 1;
  }
  let info: ReturnType<typeof readBootstrap>;
  try {
    info = readBootstrap(json as never, { allowUnknownStaticFields: opts.allowUnknownStaticFields });
  } catch (err) {
    if (err instanceof BootstrapError) {
      io.err(`error initializing configuration '${opts.configPath ?? '--config-yaml'}': ${err.message}\n`);
      return 1;
    }
    throw err;
  }
  for (const issue of info.issues) io.err(`[${issue.severity === 'error' ? 'error' : 'warning'}] bootstrap ${issue.path === '' ? '' : `${issue.path}: `}${issue.message}\n`);
  if (info.issues.some((i) => i.severity === 'error')) return 1;
  const bootstrap = envoy.envoyToJson(envoy.envoyMessageType('type.googleapis.com/envoy.config.bootstrap.v3.Bootstrap')!, info.bootstrap as never) as BootstrapJson;
  const nodeJson = { ...(bootstrap.node ?? {}) };
  if (opts.serviceNode !== null) nodeJson.id = opts.serviceNode;
  if (opts.serviceCluster !== null) nodeJson.cluster = opts.serviceCluster;
  if (opts.serviceZone !== null) nodeJson.locality = { ...(nodeJson.locality ?? {}), zone: opts.serviceZone };
  const proxyNode = proxyNodeFromEnvoy(nodeJson as never);

  const statics = staticResources(bootstrap, info.ads?.cluster ?? null);
  // The static resources must read before anything serves: Envoy refuses a bootstrap whose do not.
  // Without ADS this is the whole config: kept, with its JSON for /config_dump.
  const checked = envoy.proxyConfigFromEnvoy(statics.resources, proxyNode, 'static', info.ads === null);
  const staticErrors = checked.issues.filter((i) => i.severity === 'error');
  for (const i of checked.issues) io.err(`[${i.severity}] static_resources: ${i.type} ${i.resource}: ${i.path === '' ? '' : `${i.path}: `}${i.message}\n`);
  if (staticErrors.length > 0) return 1;
  if (opts.mode === 'validate') {
    io.out(`configuration '${opts.configPath ?? '--config-yaml'}' OK\n`);
    return 0;
  }

  const adminPort = info.admin !== null && 'port' in info.admin ? info.admin.port : 15000;
  // istiod's listeners and clusters take the workload certificate and the roots from SDS
  // secrets served by the bootstrap's `sds-grpc` cluster (Istio's agent's socket): with one,
  // the identity comes from there, as Envoy's does; without, from Istio's files.
  const sdsTarget = staticClusterTarget(info.staticClusters, SDS_CLUSTER);
  // Istio's agent puts the pod's interception mode in the node metadata (REDIRECT by default).
  const interceptionMeta = (nodeJson.metadata as Record<string, unknown> | undefined)?.['INTERCEPTION_MODE'];
  const interception = typeof interceptionMeta === 'string' ? interceptionMeta.toUpperCase() : 'REDIRECT';
  const proxyOptions: ProxyOptions = {
    interceptionMode: proxyNode.kind === 'sidecar' && (interception === 'TPROXY' || interception === 'NONE') ? interception : proxyNode.kind === 'sidecar' ? 'REDIRECT' : 'NONE',
    command: proxyNode.kind,
    // Envoy's default: one worker per core (Istio's agent passes the ProxyConfig's).
    concurrency: opts.concurrency ?? 0,
    configPaths: [],
    filterModules: [],
    node: proxyNode,
    ...(typeof nodeJson.id === 'string' && nodeJson.id !== '' ? { nodeId: nodeJson.id } : {}),
    ports: { bindAddress: '0.0.0.0', outboundPort: 15001, inboundPort: 15006, appPort: null, appAddress: '127.0.0.1' },
    adminPort,
    // Istio's bootstrap serves health (15021) and Prometheus (15090) through static listeners.
    healthPort: 0,
    prometheusPort: 0,
    // Istio's agent, which execs this, serves the status port and its app probes itself.
    statusPort: 0,
    // The listeners' access_log (istiod's, from MeshConfig accessLogFile) is written; a listener without one logs Istio's text.
    accessLogFormat: null,
    logLevel: opts.logLevel,
    drainTimeMs: opts.drainTimeMs,
    dnsRefreshMs: 60_000,
    numTrustedProxies: 0,
    overloadMaxConnections: 0,
    overloadMaxHeapMb: 0,
    requestHeadersTimeoutMs: 60_000,
    requestTimeoutMs: 0,
    identityPaths: null,
    credentialsDir: null,
    ...(sdsTarget !== null ? { sds: { address: sdsTarget, node: nodeJson } } : {}),
  };
  const ads = info.ads;
  const source = async (loggers: Loggers): Promise<ConfigSource> => {
    for (const name of statics.skipped) loggers.get('config').debug(`static cluster ${name} reaches the control plane only (a Unix socket): not a route target`);
    if (ads === null) return new StaticConfigSource(checked.config);
    const { XdsConfigSource } = await import('./xds-source.ts');
    return new XdsConfigSource(
      {
        target: ads.target,
        apiType: ads.apiType,
        transport: ads.transport,
        setNodeOnFirstMessageOnly: ads.setNodeOnFirstMessageOnly,
        node: nodeJson,
        proxyNode,
        staticResources: statics.resources,
      },
      loggers,
    );
  };
  const proxy = await ProxyProcess.create(proxyOptions, io.exit, {}, source);
  try {
    await proxy.start();
  } catch (err) {
    if (err instanceof StartError) {
      io.err(`remora envoy: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
  if (opts.mode === 'init_only') {
    await proxy.stop(0, 0);
    return 0;
  }
  const onSignal = (): void => void proxy.stop(0);
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  return null;
}

/** The bootstrap file (JSON or YAML), with `--config-yaml` merged over it as Envoy merges it. */
function bootstrapDocument(opts: EnvoyOptions): Record<string, unknown> {
  let doc: Record<string, unknown> = {};
  if (opts.configPath !== null) {
    if (/\.pb(_text)?$/.test(opts.configPath)) throw new Error('binary and text-proto bootstraps are not supported: use JSON or YAML');
    doc = asObject(parseYaml(readFileSync(opts.configPath, 'utf8')), opts.configPath);
  }
  if (opts.configYaml !== null) doc = mergeProto(doc, asObject(parseYaml(opts.configYaml), '--config-yaml'));
  return doc;
}

function asObject(v: unknown, where: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${where}: not a bootstrap object`);
  return v as Record<string, unknown>;
}

/** Protobuf's MergeFrom on JSON: scalars replace, messages merge, repeated fields append. */
function mergeProto(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    if (Array.isArray(b) && Array.isArray(v)) out[k] = [...b, ...v];
    else if (b !== null && typeof b === 'object' && !Array.isArray(b) && v !== null && typeof v === 'object' && !Array.isArray(v)) {
      out[k] = mergeProto(b as Record<string, unknown>, v as Record<string, unknown>);
    } else out[k] = v;
  }
  return out;
}

/**
 * The bootstrap's static listeners and clusters as the model's resources. Clusters that only
 * the control-plane clients use (the ADS cluster, clusters of Unix-socket endpoints such as
 * Istio's `sds-grpc`) are left out: the runtime cannot route requests to a socket file.
 */
function staticResources(bootstrap: BootstrapJson, adsCluster: string | null): { resources: EnvoyResources; skipped: string[] } {
  const sr = bootstrap.staticResources ?? {};
  const skipped: string[] = [];
  const clusters: ClusterJson[] = [];
  for (const c of sr.clusters ?? []) {
    const pipes = (c.loadAssignment?.endpoints ?? []).flatMap((g) => g.lbEndpoints ?? []).some((e) => e.endpoint?.address?.pipe !== undefined);
    if (c.name === adsCluster || pipes) skipped.push(c.name ?? '');
    else clusters.push(c);
  }
  return {
    resources: {
      listeners: sr.listeners ?? [],
      routeConfigs: [],
      clusters,
      endpoints: [],
      secrets: [],
    },
    skipped,
  };
}

/** A bootstrap without ADS: its static resources are the whole config, for good. */
class StaticConfigSource implements ConfigSource {
  readonly #config: SourcedConfig['config'];
  constructor(config: SourcedConfig['config']) {
    this.#config = config;
  }
  get lastError(): string | null {
    return null;
  }
  first(): Promise<SourcedConfig | null> {
    return Promise.resolve({ config: this.#config, timings: null });
  }
  watch(): void {}
  close(): void {}
}
