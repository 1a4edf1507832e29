import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import { parseDuration, type ListenerPorts, type ProxyNode } from '@remora/config';
import { isLogLevel, LOG_LEVELS, type LogLevel } from '../logger.ts';
import type { AccessLogFormat } from '../telemetry/access-log.ts';
import type { NodeJson } from '@remora/config/envoy/gen/envoy/config/core/v3/base_pb.js';
import type { IdentityPaths } from '../tls/identity-store.ts';
import { CAPTURE_MODES, type CaptureMode } from './capture.ts';

export type Command = 'gateway' | 'sidecar' | 'validate';

interface OptionSpec {
  readonly type: 'string' | 'boolean';
  readonly short?: string;
  readonly multiple?: boolean;
  readonly arg?: string;
  readonly help: string;
  /** Commands that take this option. */
  readonly for: readonly Command[];
}

const PROXIES: readonly Command[] = ['gateway', 'sidecar'];
const ALL: readonly Command[] = ['gateway', 'sidecar', 'validate'];

/** Every flag, with its help line; `--help` output is generated from this table. */
export const OPTIONS: Readonly<Record<string, OptionSpec>> = {
  config: { type: 'string', short: 'c', multiple: true, arg: 'PATH', help: 'file or directory of Istio YAML/JSON (repeatable; directories are read recursively and watched)', for: ALL },
  filter: { type: 'string', multiple: true, arg: 'MODULE', help: 'load HTTP filters from a module (repeatable): an npm package name or a path, resolved from the working directory; its default export or `filters` export (a factory or a list) is registered by name for listeners, the bootstrap and EnvoyFilter patches to use', for: ALL },
  'mesh-config': { type: 'string', arg: 'FILE', help: 'Istio MeshConfig: the `mesh` key of the istio ConfigMap (or that ConfigMap) as YAML; read and watched with the config (extensionProviders for CUSTOM authorization, rootNamespace, trustDomain)', for: ALL },
  'xds-address': { type: 'string', arg: 'ADDR', help: 'take the config from an xDS control plane over ADS instead of files: unix:PATH or HOST:PORT (istiod: 15010)', for: PROXIES },
  'xds-delta': { type: 'boolean', help: 'use incremental (delta) ADS, as Istio\'s agent does, instead of state of the world', for: PROXIES },
  'admin-port': { type: 'string', arg: 'PORT', help: 'admin API on 127.0.0.1 (default 15000)', for: PROXIES },
  'health-port': { type: 'string', arg: 'PORT', help: 'health endpoint /healthz/ready (default 15021)', for: PROXIES },
  'status-port': { type: 'string', arg: 'PORT', help: 'Istio\'s app probes /app-health/CONTAINER/livez|readyz|startupz, served when ISTIO_KUBE_APP_PROBERS is set; 0 turns it off (default 15020)', for: PROXIES },
  'prometheus-port': { type: 'string', arg: 'PORT', help: 'Prometheus scrape endpoint /stats/prometheus; 0 turns it off (default 15090)', for: PROXIES },
  'outbound-port': { type: 'string', arg: 'PORT', help: 'outbound capture listener (default 15001)', for: ['sidecar'] },
  'inbound-port': { type: 'string', arg: 'PORT', help: 'inbound capture listener (default 15006)', for: ['sidecar'] },
  'app-port': { type: 'string', arg: 'PORT', help: 'local application port the inbound listener forwards to (no inbound listener without it)', for: ['sidecar'] },
  'interception-mode': { type: 'string', arg: 'REDIRECT|TPROXY|NONE', help: 'how the pod\'s traffic reaches the capture listeners (Istio\'s interceptionMode): REDIRECT reads each connection\'s original destination from conntrack, TPROXY from its local address; NONE: no capture (default REDIRECT)', for: ['sidecar'] },
  'conntrack-fd': { type: 'string', arg: 'N', help: 'REDIRECT: an open descriptor of /proc/net/nf_conntrack inherited from a root launcher (the file is root-only); default: open the path', for: ['sidecar'] },
  'app-address': { type: 'string', arg: 'ADDR', help: 'local application address (default 127.0.0.1)', for: ['sidecar'] },
  bind: { type: 'string', arg: 'ADDR', help: 'address data-plane listeners bind (default 0.0.0.0)', for: PROXIES },
  namespace: { type: 'string', arg: 'NS', help: 'this workload\'s namespace (env POD_NAMESPACE; default "default", gateways "istio-system")', for: ALL },
  'service-account': { type: 'string', arg: 'SA', help: 'this workload\'s service account (env SERVICE_ACCOUNT; default "default")', for: PROXIES },
  labels: { type: 'string', arg: 'K=V,…', help: 'this workload\'s labels (env ISTIO_METAJSON_LABELS as JSON; gateways default istio=ingressgateway,app=istio-ingressgateway)', for: ALL },
  'workload-name': { type: 'string', arg: 'NAME', help: 'workload name for metrics (env ISTIO_META_WORKLOAD_NAME; default the app label)', for: PROXIES },
  'cluster-id': { type: 'string', arg: 'ID', help: 'the cluster this workload runs in, for metrics and peer metadata (env ISTIO_META_CLUSTER_ID; default Kubernetes)', for: PROXIES },
  'cluster-domain': { type: 'string', arg: 'DOMAIN', help: 'Kubernetes cluster domain short hosts expand into (default cluster.local)', for: ALL },
  'root-namespace': { type: 'string', arg: 'NS', help: 'namespace whose policies apply mesh-wide (default istio-system)', for: ALL },
  locality: { type: 'string', arg: 'REGION/ZONE/SUBZONE', help: 'where this proxy runs, for locality load balancing (default: unknown)', for: PROXIES },
  'trust-domain': { type: 'string', arg: 'DOMAIN', help: 'SPIFFE trust domain (default cluster.local)', for: PROXIES },
  'cert-chain': { type: 'string', arg: 'FILE', help: 'workload certificate chain, PEM (with --key and --root-cert; default: the files in --certs-dir)', for: PROXIES },
  key: { type: 'string', arg: 'FILE', help: 'workload private key, PEM', for: PROXIES },
  'root-cert': { type: 'string', arg: 'FILE', help: 'root certificates the mesh trusts, PEM', for: PROXIES },
  'sds-address': { type: 'string', arg: 'ADDR', help: 'take the workload certificate and roots over SDS, as Envoy does from Istio\'s agent: unix:PATH (the agent: unix:./var/run/secrets/workload-spiffe-uds/socket) or HOST:PORT; replaces the certificate files', for: PROXIES },
  'certs-dir': { type: 'string', arg: 'DIR', help: 'directory with cert-chain.pem, key.pem, root-cert.pem (default ./var/run/secrets/workload-spiffe-credentials, then /etc/certs); watched for rotation', for: PROXIES },
  'credentials-dir': { type: 'string', arg: 'DIR', help: 'where credentialName secrets are: DIR/NAME/tls.crt, tls.key, ca.crt (default /etc/remora/credentials)', for: PROXIES },
  'access-log-format': { type: 'string', arg: 'text|json|off', help: 'access log on stdout in Istio\'s format; given, it wins over the listeners\' access logs (MeshConfig accessLogFile, accessLogEncoding, accessLogFormat). Default: those where configured, else text', for: PROXIES },
  'log-format': { type: 'string', arg: 'text|json|off', help: 'alias of --access-log-format', for: PROXIES },
  'log-level': { type: 'string', arg: 'LEVEL', help: `Remora's own log level on stderr: ${LOG_LEVELS.join(', ')} (default info)`, for: PROXIES },
  'num-trusted-proxies': { type: 'string', arg: 'N', help: 'X-Forwarded-For hops in front of a gateway to trust when finding the client address (Istio numTrustedProxies; default 0)', for: PROXIES },
  'overload-max-connections': { type: 'string', arg: 'N', help: 'shed new requests (503 OM) while more downstream connections are open (default: no limit)', for: PROXIES },
  'overload-max-heap': { type: 'string', arg: 'MB', help: 'shed new requests (503 OM) while the V8 heap in use is larger (default: no limit)', for: PROXIES },
  'request-headers-timeout': { type: 'string', arg: 'DURATION', help: 'a client must send complete request headers within this (slow-loris guard; default 60s)', for: PROXIES },
  'request-timeout': { type: 'string', arg: 'DURATION', help: 'a client must send the whole request within this; 0 = no limit (default)', for: PROXIES },
  'drain-time': { type: 'string', arg: 'DURATION', help: 'on SIGTERM, how long in-flight requests may take to finish; given, it wins over the ProxyConfig\'s terminationDrainDuration (MeshConfig defaultConfig, ProxyConfig resource, annotation; Istio\'s default 5s)', for: PROXIES },
  annotations: { type: 'string', arg: 'FILE', help: 'the pod\'s annotations, as the downward API writes them (key="value" lines; watched); its proxy.istio.io/config is merged over the proxy settings last (else env ISTIO_METAJSON_ANNOTATIONS, Istio\'s agent\'s JSON)', for: PROXIES },
  'accept-http10': { type: 'boolean', help: 'serve HTTP/1.0 and HTTP/0.9 requests instead of answering 426 Upgrade Required (env ISTIO_META_HTTP10=1, as Istio\'s proxy metadata)', for: PROXIES },
  'dns-capture': { type: 'boolean', help: 'run the DNS proxy a captured pod\'s DNS is sent to (iptables --redirect-dns): mesh names answered from the name table, the rest forwarded to --resolv-conf\'s resolvers (env ISTIO_META_DNS_CAPTURE=true)', for: PROXIES },
  'dns-address': { type: 'string', arg: 'ADDR:PORT', help: 'where the DNS proxy listens, UDP and TCP (default 127.0.0.1:15053)', for: PROXIES },
  'resolv-conf': { type: 'string', arg: 'FILE', help: 'the resolvers the DNS proxy forwards to and the search path it answers for (default /etc/resolv.conf)', for: PROXIES },
  'dns-refresh-rate': { type: 'string', arg: 'DURATION', help: 'how often DNS ServiceEntries are re-resolved (default 60s)', for: PROXIES },
  concurrency: { type: 'string', arg: 'N', help: 'worker threads serving the listeners, as Envoy\'s --concurrency (SO_REUSEPORT spreads connections; circuit breakers, rate limits and outlier ejections are shared); 0: one per core; 1: one event loop, no workers. Default: the ProxyConfig\'s concurrency for a sidecar (MeshConfig defaultConfig: 2), one per core for a gateway', for: PROXIES },
  help: { type: 'boolean', short: 'h', help: 'show this help', for: ALL },
};

export interface ProxyOptions {
  readonly command: Command;
  readonly configPaths: readonly string[];
  /** `--filter`: modules whose HTTP filters are registered at start. */
  readonly filterModules: readonly string[];
  readonly node: ProxyNode;
  /** Envoy's node id (`remora envoy`: the bootstrap's), the spans' `node_id` tag; absent: made from `node`. */
  readonly nodeId?: string;
  readonly ports: ListenerPorts;
  readonly adminPort: number;
  readonly healthPort: number;
  readonly prometheusPort: number;
  /** Istio's status port: the app probes of `ISTIO_KUBE_APP_PROBERS`. */
  readonly statusPort: number;
  /** `--access-log-format`; null: not given (listeners' access logs apply, else text on stdout). */
  readonly accessLogFormat: AccessLogFormat | null;
  readonly logLevel: LogLevel;
  /** `--drain-time`; null: not given (the ProxyConfig's terminationDrainDuration applies). */
  readonly drainTimeMs: number | null;
  readonly dnsRefreshMs: number;
  /** `--concurrency`: worker threads (0: one per core, 1: none, the main loop serves); null: not given (ProxyConfig's for a sidecar, one per core for a gateway). */
  readonly concurrency?: number | null;
  readonly numTrustedProxies: number;
  readonly overloadMaxConnections: number;
  readonly overloadMaxHeapMb: number;
  readonly requestHeadersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  /** Where the workload identity files are; null: Istio's default directories. */
  readonly identityPaths: IdentityPaths | null;
  /** Istio's MeshConfig file (`--mesh-config`); absent: Istio's defaults. */
  readonly meshConfigFile?: string;
  /** The pod's annotations file (`--annotations`, downward API format); absent: none. */
  readonly annotationsFile?: string;
  /** The pod's annotations as Istio's agent passes them (env ISTIO_METAJSON_ANNOTATIONS); absent: none. */
  readonly annotationsJson?: string;
  /** The DNS proxy (`--dns-capture`); absent: none. */
  readonly dns?: { readonly address: string; readonly port: number; readonly resolvConf: string };
  /** Where `credentialName`s resolve; null: the translator's default. */
  readonly credentialsDir: string | null;
  /** How capture listeners find original destinations (sidecar; default REDIRECT); absent: NONE. */
  readonly interceptionMode?: CaptureMode;
  /** REDIRECT: an inherited descriptor of the conntrack table; absent: open the path. */
  readonly conntrackFd?: number;
  /** Config from an ADS server instead of files; absent: files. */
  readonly xds?: { readonly address: string; readonly delta: boolean };
  /** The workload identity over SDS instead of files; absent: files (`identityPaths`). */
  readonly sds?: {
    /** gRPC target: `unix:PATH` or `HOST:PORT`. */
    readonly address: string;
    /** The node sent on the stream; default: built from `node` as Istio's agent builds it. */
    readonly node?: NodeJson;
    /** How long the proxy waits for the first identity before it starts without (default Envoy's 15 s; 0: no limit). */
    readonly initialFetchTimeoutMs?: number;
    /** Reconnect backoff (default Envoy's). */
    readonly backoff?: { readonly baseMs: number; readonly maxMs: number };
  };
}

/** A usage error: printed with the command's help, exit status 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export function helpText(command: Command | null): string {
  if (command === null) {
    return `remora — an L7 sidecar proxy for Istio meshes

usage: remora <command> [options]

commands:
  gateway    run as an ingress gateway: listeners from Gateway resources
  sidecar    run beside an app: outbound listener (15001) and inbound listener (15006)
  validate   check resources and print every problem; exit 0 when valid
  envoy      run as Envoy would: Envoy's command line and bootstrap (Istio's agent can exec it)
  ca         a small dev CA: create a root, issue SPIFFE workload and server certificates
  ratelimit-service
             a global rate limit service (Envoy's RLS gRPC protocol) counting in Redis
  proxy-config
             istioctl's proxy-config tables (clusters, listeners, routes, endpoints, secrets)
             from a proxy's admin /config_dump or a saved one (alias: pc)
  explain    what a running proxy would do with a request (listener, route, filters,
             clusters, endpoints), asked of its admin API without sending the request

remora <command> --help shows the command's options.
`;
  }
  const lines = Object.entries(OPTIONS)
    .filter(([, o]) => o.for.includes(command))
    .map(([name, o]) => {
      const flag = `${o.short ? `-${o.short}, ` : '    '}--${name}${o.arg ? ` ${o.arg}` : ''}`;
      return `  ${flag.padEnd(36)} ${o.help}`;
    });
  const what: Record<Command, string> = {
    gateway: 'Runs an ingress gateway. Each Gateway whose selector matches this proxy\'s labels opens its\nserver ports; VirtualServices bound to it through `gateways:` route the traffic.',
    sidecar: 'Runs a sidecar. The outbound listener routes by Host/:authority (or absolute-form proxy\nrequests) to the mesh\'s services; the inbound listener forwards to the local app.',
    validate: 'Reads resources, validates them against Istio\'s schemas and semantics, translates them,\nand prints every problem as file:line: Kind namespace/name: field: message.',
  };
  return `usage: remora ${command} -c PATH… [options]\n\n${what[command]}\n\noptions:\n${lines.join('\n')}\n`;
}

/** Parses argv (after the command word) and the environment into options; throws UsageError. */
export function parseOptions(command: Command, argv: readonly string[], env: NodeJS.ProcessEnv): ProxyOptions | 'help' {
  const spec: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {};
  for (const [name, o] of Object.entries(OPTIONS)) {
    if (!o.for.includes(command)) continue;
    spec[name] = { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}) };
  }
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options: spec, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const v = parsed.values as Record<string, string | string[] | boolean | undefined>;
  if (v.help) return 'help';
  const str = (name: string): string | undefined => (typeof v[name] === 'string' ? (v[name] as string) : undefined);
  const configPaths = [...((v.config as string[] | undefined) ?? []), ...parsed.positionals];
  const xdsAddress = typeof v['xds-address'] === 'string' ? (v['xds-address'] as string) : undefined;
  if (xdsAddress !== undefined && configPaths.length > 0) throw new UsageError('--xds-address and -c are two sources of the same config: pass one');
  if (xdsAddress !== undefined && !/^(unix:.+|[^:]+:\d+|\[[0-9a-fA-F:]+\]:\d+)$/.test(xdsAddress)) throw new UsageError(`--xds-address must be unix:PATH or HOST:PORT, got "${xdsAddress}"`);
  const sdsAddress = typeof v['sds-address'] === 'string' ? (v['sds-address'] as string) : undefined;
  if (sdsAddress !== undefined && !/^(unix:.+|[^:]+:\d+|\[[0-9a-fA-F:]+\]:\d+)$/.test(sdsAddress)) throw new UsageError(`--sds-address must be unix:PATH or HOST:PORT, got "${sdsAddress}"`);
  if (sdsAddress !== undefined && ['cert-chain', 'key', 'root-cert', 'certs-dir'].some((f) => v[f] !== undefined)) {
    throw new UsageError('--sds-address and the certificate files (--cert-chain, --key, --root-cert, --certs-dir) are two sources of the same identity: pass one');
  }
  const meshConfig = typeof v['mesh-config'] === 'string' ? (v['mesh-config'] as string) : undefined;
  if (meshConfig !== undefined && xdsAddress !== undefined) throw new UsageError('--mesh-config applies to -c files; with --xds-address the control plane has applied its MeshConfig already');
  if (configPaths.length === 0 && xdsAddress === undefined) throw new UsageError('no configuration given: pass -c PATH (a file or a directory) or --xds-address');

  const port = (name: string, fallback: number, allowZero = false): number => {
    const raw = str(name);
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!/^\d+$/.test(raw) || n > 65535 || (n === 0 && !allowZero)) throw new UsageError(`--${name} must be a port number (1-65535), got "${raw}"`);
    return n;
  };
  const duration = (name: string, fallback: number): number => {
    const raw = str(name);
    if (raw === undefined) return fallback;
    const ms = parseDuration(/^\d+$/.test(raw) ? `${raw}s` : raw);
    if (ms === null) throw new UsageError(`--${name} must be a duration like 5s or 500ms, got "${raw}"`);
    return ms;
  };

  const count = (name: string, fallback: number): number => {
    const raw = str(name);
    if (raw === undefined) return fallback;
    if (!/^\d+$/.test(raw)) throw new UsageError(`--${name} must be a whole number, got "${raw}"`);
    return Number(raw);
  };
  const gateway = command === 'gateway';
  const labels = parseLabels(str('labels'), env.ISTIO_METAJSON_LABELS, gateway);
  const namespace = str('namespace') ?? env.POD_NAMESPACE ?? (gateway ? 'istio-system' : 'default');
  const workloadName = str('workload-name') ?? env.ISTIO_META_WORKLOAD_NAME ?? (gateway ? 'istio-ingressgateway' : (labels.app ?? ''));
  const accessLogFormat = str('access-log-format') ?? str('log-format') ?? null;
  if (accessLogFormat !== null && accessLogFormat !== 'text' && accessLogFormat !== 'json' && accessLogFormat !== 'off') {
    throw new UsageError(`--access-log-format must be text, json or off, got "${accessLogFormat}"`);
  }
  const logLevel = str('log-level') ?? 'info';
  if (!isLogLevel(logLevel)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`);
  const appPortRaw = str('app-port');
  const interception = (str('interception-mode') ?? (command === 'sidecar' ? 'REDIRECT' : 'NONE')).toUpperCase();
  if (!(CAPTURE_MODES as readonly string[]).includes(interception)) throw new UsageError(`--interception-mode must be REDIRECT, TPROXY or NONE, got "${str('interception-mode')}"`);
  const conntrackFdRaw = str('conntrack-fd');
  if (conntrackFdRaw !== undefined && !/^\d+$/.test(conntrackFdRaw)) throw new UsageError(`--conntrack-fd must be a file descriptor number, got "${conntrackFdRaw}"`);
  if (conntrackFdRaw !== undefined && interception !== 'REDIRECT') throw new UsageError(`--conntrack-fd is for --interception-mode REDIRECT (got ${interception})`);

  return {
    command,
    configPaths,
    filterModules: (v.filter as string[] | undefined) ?? [],
    node: {
      kind: gateway ? 'gateway' : 'sidecar',
      namespace,
      serviceAccount: str('service-account') ?? env.SERVICE_ACCOUNT ?? 'default',
      labels,
      workloadName,
      clusterDomain: str('cluster-domain') ?? 'cluster.local',
      rootNamespace: str('root-namespace') ?? 'istio-system',
      trustDomain: str('trust-domain') ?? 'cluster.local',
      locality: str('locality') ?? '',
      // Istio enables it for a proxy whose HTTP10 metadata is exactly "1".
      http10: v['accept-http10'] === true || env.ISTIO_META_HTTP10 === '1',
      ...optionalNodeFields(str('cluster-id') ?? env.ISTIO_META_CLUSTER_ID, env.ISTIO_META_MESH_ID, env.POD_NAME),
    },
    ports: {
      bindAddress: str('bind') ?? '0.0.0.0',
      outboundPort: port('outbound-port', 15001),
      inboundPort: port('inbound-port', 15006),
      appPort: appPortRaw === undefined ? null : port('app-port', 0),
      appAddress: str('app-address') ?? '127.0.0.1',
    },
    adminPort: port('admin-port', 15000),
    healthPort: port('health-port', 15021),
    prometheusPort: port('prometheus-port', 15090, true),
    statusPort: port('status-port', 15020, true),
    accessLogFormat,
    logLevel,
    drainTimeMs: str('drain-time') === undefined ? null : duration('drain-time', 0),
    numTrustedProxies: count('num-trusted-proxies', 0),
    overloadMaxConnections: count('overload-max-connections', 0),
    overloadMaxHeapMb: count('overload-max-heap', 0),
    requestHeadersTimeoutMs: duration('request-headers-timeout', 60_000),
    requestTimeoutMs: str('request-timeout') === '0' ? 0 : duration('request-timeout', 0),
    dnsRefreshMs: duration('dns-refresh-rate', 60_000),
    concurrency: str('concurrency') === undefined ? null : count('concurrency', 0),
    identityPaths: identityPaths(str('cert-chain'), str('key'), str('root-cert'), str('certs-dir')),
    credentialsDir: str('credentials-dir') ?? null,
    interceptionMode: interception as CaptureMode,
    ...(conntrackFdRaw !== undefined ? { conntrackFd: Number(conntrackFdRaw) } : {}),
    ...(meshConfig !== undefined ? { meshConfigFile: meshConfig } : {}),
    ...(str('annotations') !== undefined ? { annotationsFile: str('annotations')! } : {}),
    ...(env.ISTIO_METAJSON_ANNOTATIONS ? { annotationsJson: env.ISTIO_METAJSON_ANNOTATIONS } : {}),
    ...(xdsAddress !== undefined ? { xds: { address: xdsAddress, delta: v['xds-delta'] === true } } : {}),
    ...(sdsAddress !== undefined ? { sds: { address: sdsAddress } } : {}),
    ...dnsOptions(v['dns-capture'] === true || /^(1|t|T|TRUE|true|True)$/.test(env.ISTIO_META_DNS_CAPTURE ?? ''), str('dns-address'), str('resolv-conf')),
  };
}

/** Istio's agent's `CLUSTER_ID`, `MESH_ID` and `NAME` node metadata, where given. */
function optionalNodeFields(clusterId: string | undefined, meshId: string | undefined, podName: string | undefined): { clusterId?: string; meshId?: string; podName?: string } {
  return {
    ...(clusterId ? { clusterId } : {}),
    ...(meshId ? { meshId } : {}),
    ...(podName ? { podName } : {}),
  };
}

/** `--dns-capture` (or Istio's ISTIO_META_DNS_CAPTURE, a Go boolean: true, 1, t, ...) with its address and resolv.conf. */
function dnsOptions(capture: boolean, address: string | undefined, resolvConf: string | undefined): Pick<ProxyOptions, 'dns'> {
  if (!capture) {
    if (address !== undefined || resolvConf !== undefined) throw new UsageError('--dns-address and --resolv-conf configure the DNS proxy: add --dns-capture');
    return {};
  }
  const raw = address ?? '127.0.0.1:15053';
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|(\d{1,3}(?:\.\d{1,3}){3})):(\d{1,5})$/.exec(raw);
  const port = Number(m?.[3]);
  if (m === null || !isIP(m[1] ?? m[2] ?? '') || port < 1 || port > 65535) {
    throw new UsageError(`--dns-address must be IP:PORT or [IPv6]:PORT, got "${raw}"`);
  }
  return { dns: { address: m[1] ?? m[2]!, port, resolvConf: resolvConf ?? '/etc/resolv.conf' } };
}

function identityPaths(certChain: string | undefined, key: string | undefined, rootCert: string | undefined, dir: string | undefined): IdentityPaths | null {
  const files = [certChain, key, rootCert].filter((f) => f !== undefined).length;
  if (files > 0 && dir !== undefined) throw new UsageError('--certs-dir cannot be combined with --cert-chain, --key or --root-cert');
  if (files > 0 && files < 3) throw new UsageError('--cert-chain, --key and --root-cert go together: pass all three (or --certs-dir)');
  if (certChain !== undefined && key !== undefined && rootCert !== undefined) return { certChain, key, rootCert };
  return dir !== undefined ? { dir } : null;
}

function parseLabels(flag: string | undefined, envJson: string | undefined, gateway: boolean): Record<string, string> {
  if (flag !== undefined) {
    const out: Record<string, string> = {};
    for (const pair of flag.split(',')) {
      if (pair.trim() === '') continue;
      const eq = pair.indexOf('=');
      if (eq <= 0) throw new UsageError(`--labels takes key=value pairs separated by commas, got "${pair}"`);
      out[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
    }
    return out;
  }
  if (envJson !== undefined && envJson !== '') {
    try {
      const parsed: unknown = JSON.parse(envJson);
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) {
        return Object.fromEntries(Object.entries(parsed).filter(([, val]) => typeof val === 'string')) as Record<string, string>;
      }
    } catch {
      // fall through to the error below
    }
    throw new UsageError('ISTIO_METAJSON_LABELS must be a JSON object of strings');
  }
  return gateway ? { istio: 'ingressgateway', app: 'istio-ingressgateway' } : {};
}
