/**
 * Envoy's command line (source/server/options_impl.cc), so that Istio's agent — or anyone's
 * script — can exec `remora envoy` where it execs `envoy`. Every flag Envoy takes is
 * accepted; the ones that tune something Remora does not have (hot restart, the base id,
 * mutex tracing, CPU sets) are read and have no effect, as on an Envoy built without them.
 * An unknown flag is refused with Envoy's own words.
 */
import type { ProxyNode } from '@remora/config';
import { isLogLevel, type LogLevel } from '../logger.ts';

export interface EnvoyOptions {
  /** `-c/--config-path`: the bootstrap file (JSON or YAML; `.pb`/`.pb_text` are refused). */
  readonly configPath: string | null;
  /** `--config-yaml`: a bootstrap merged over the file's (Istio's agent passes overrides this way). */
  readonly configYaml: string | null;
  /** `--mode`: `serve` (default), `validate` (check the bootstrap and exit), `init_only`. */
  readonly mode: 'serve' | 'validate' | 'init_only';
  readonly logLevel: LogLevel;
  /** `--component-log-level upstream:debug,connection:trace`. */
  readonly componentLogLevels: Readonly<Record<string, LogLevel>>;
  /** `--drain-time-s` (default 600 in Envoy; Istio passes its drainDuration, 45 s by default). */
  readonly drainTimeMs: number;
  readonly drainStrategy: 'gradual' | 'immediate';
  /** `--concurrency`: worker count; 0 or absent: Envoy's default (one per core). */
  readonly concurrency: number | null;
  readonly localAddressIpVersion: 'v4' | 'v6';
  readonly fileFlushIntervalMs: number;
  readonly allowUnknownStaticFields: boolean;
  readonly rejectUnknownDynamicFields: boolean;
  readonly ignoreUnknownDynamicFields: boolean;
  /** `--service-cluster`, `--service-node`, `--service-zone`: override the bootstrap node's. */
  readonly serviceCluster: string | null;
  readonly serviceNode: string | null;
  readonly serviceZone: string | null;
  /** `--admin-address-path`: where the admin's bound address is written. */
  readonly adminAddressPath: string | null;
  /** `--log-path`: Envoy's own log to this file instead of stderr. */
  readonly logPath: string | null;
}

export class EnvoyUsageError extends Error {
  override readonly name = 'EnvoyUsageError';
}

type Kind = 'string' | 'int' | 'bool';
/** Envoy's flags; the short ones map to their long names. */
const FLAGS: Readonly<Record<string, Kind>> = {
  'config-path': 'string',
  'config-yaml': 'string',
  mode: 'string',
  'log-level': 'string',
  'component-log-level': 'string',
  'log-format': 'string',
  'log-format-escaped': 'bool',
  'log-path': 'string',
  'enable-fine-grain-logging': 'bool',
  'drain-time-s': 'int',
  'drain-strategy': 'string',
  'parent-shutdown-time-s': 'int',
  concurrency: 'int',
  'local-address-ip-version': 'string',
  'file-flush-interval-msec': 'int',
  'file-flush-min-size-kb': 'int',
  'allow-unknown-static-fields': 'bool',
  'reject-unknown-dynamic-fields': 'bool',
  'ignore-unknown-dynamic-fields': 'bool',
  'service-cluster': 'string',
  'service-node': 'string',
  'service-zone': 'string',
  'admin-address-path': 'string',
  'base-id': 'int',
  'use-dynamic-base-id': 'bool',
  'base-id-path': 'string',
  'restart-epoch': 'int',
  'hot-restart-version': 'bool',
  'disable-hot-restart': 'bool',
  'enable-mutex-tracing': 'bool',
  'cpuset-threads': 'bool',
  'disable-extensions': 'string',
  'socket-path': 'string',
  'socket-mode': 'string',
  'stats-tag': 'string',
  'enable-core-dump': 'bool',
  'skip-hot-restart-on-no-parent': 'bool',
  'skip-hot-restart-parent-stats': 'bool',
};
const SHORT: Readonly<Record<string, string>> = { c: 'config-path', l: 'log-level' };

/** Envoy's log levels; `warn` is Envoy's alias of `warning`. */
function logLevel(flag: string, raw: string): LogLevel {
  const level = raw === 'warn' ? 'warning' : raw;
  if (!isLogLevel(level)) throw new EnvoyUsageError(`error: invalid log level specified '${raw}' for ${flag}`);
  return level;
}

/** Parses Envoy's argv (after `remora envoy`); `--help` and `--version` come back as such. */
export function parseEnvoyArgs(argv: readonly string[]): EnvoyOptions | 'help' | 'version' {
  const values = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') return 'help';
    if (arg === '--version') return 'version';
    let name: string;
    let inline: string | undefined;
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      inline = eq < 0 ? undefined : arg.slice(eq + 1);
    } else if (arg.startsWith('-') && arg.length === 2 && SHORT[arg[1]!] !== undefined) {
      name = SHORT[arg[1]!]!;
    } else {
      throw new EnvoyUsageError(`PARSE ERROR: Argument: ${arg}\n             Couldn't find match for argument`);
    }
    const kind = FLAGS[name];
    if (kind === undefined) throw new EnvoyUsageError(`PARSE ERROR: Argument: ${arg}\n             Couldn't find match for argument`);
    if (kind === 'bool') {
      values.set(name, inline ?? 'true');
      continue;
    }
    const value = inline ?? argv[++i];
    if (value === undefined) throw new EnvoyUsageError(`PARSE ERROR: Argument: ${arg}\n             Missing a value for this argument!`);
    if (kind === 'int' && !/^-?\d+$/.test(value)) throw new EnvoyUsageError(`PARSE ERROR: Argument: ${arg}\n             Couldn't read argument value from string '${value}'`);
    values.set(name, value);
  }
  const str = (n: string): string | null => values.get(n) ?? null;
  const int = (n: string): number | null => (values.has(n) ? Number(values.get(n)) : null);
  const bool = (n: string): boolean => values.get(n) === 'true';

  const mode = str('mode') ?? 'serve';
  if (mode !== 'serve' && mode !== 'validate' && mode !== 'init_only') throw new EnvoyUsageError(`error: unknown mode '${mode}'`);
  const drainStrategy = str('drain-strategy') ?? 'gradual';
  if (drainStrategy !== 'gradual' && drainStrategy !== 'immediate') throw new EnvoyUsageError(`error: unknown drain-strategy '${drainStrategy}'`);
  const ipVersion = str('local-address-ip-version') ?? 'v4';
  if (ipVersion !== 'v4' && ipVersion !== 'v6') throw new EnvoyUsageError(`error: unknown IP address version '${ipVersion}'`);
  const componentLogLevels: Record<string, LogLevel> = {};
  for (const pair of (str('component-log-level') ?? '').split(',')) {
    if (pair === '') continue;
    const colon = pair.indexOf(':');
    if (colon <= 0) throw new EnvoyUsageError(`error: component log level not correctly specified '${pair}'`);
    componentLogLevels[pair.slice(0, colon)] = logLevel('--component-log-level', pair.slice(colon + 1));
  }
  const configPath = str('config-path');
  const configYaml = str('config-yaml');
  if (configPath === null && configYaml === null && mode !== 'validate') {
    throw new EnvoyUsageError('At least one of --config-path or --config-yaml or Options::configProto() should be non-empty');
  }
  const concurrency = int('concurrency');
  return {
    configPath,
    configYaml,
    mode,
    logLevel: logLevel('--log-level', str('log-level') ?? 'info'),
    componentLogLevels,
    drainTimeMs: (int('drain-time-s') ?? 600) * 1000,
    drainStrategy,
    concurrency: concurrency === null || concurrency <= 0 ? null : concurrency,
    localAddressIpVersion: ipVersion,
    fileFlushIntervalMs: int('file-flush-interval-msec') ?? 10_000,
    allowUnknownStaticFields: bool('allow-unknown-static-fields'),
    rejectUnknownDynamicFields: bool('reject-unknown-dynamic-fields'),
    ignoreUnknownDynamicFields: bool('ignore-unknown-dynamic-fields'),
    serviceCluster: str('service-cluster'),
    serviceNode: str('service-node'),
    serviceZone: str('service-zone'),
    adminAddressPath: str('admin-address-path'),
    logPath: str('log-path'),
  };
}

/** The parts of Envoy's `Node` that say who a proxy is. */
export interface EnvoyNode {
  readonly id?: string;
  readonly cluster?: string;
  readonly metadata?: Readonly<Record<string, unknown>>;
  readonly locality?: { readonly region?: string; readonly zone?: string; readonly subZone?: string };
}

/**
 * Who the proxy is, from the node Istio's agent writes into the bootstrap: the id
 * `<type>~<ip>~<pod>.<ns>~<ns>.svc.<domain>` (type `sidecar` or `router`) and the metadata
 * `NAMESPACE`, `SERVICE_ACCOUNT`, `WORKLOAD_NAME`, `LABELS`, `MESH_ID`, `HTTP10`. What the
 * node leaves out takes the defaults the file-driven proxy uses.
 */
export function proxyNodeFromEnvoy(node: EnvoyNode): ProxyNode {
  const md = node.metadata ?? {};
  const s = (k: string): string | undefined => (typeof md[k] === 'string' && md[k] !== '' ? (md[k] as string) : undefined);
  const [type = 'sidecar', , podDotNs = '', dnsDomain = ''] = (node.id ?? '').split('~');
  const nsFromId = dnsDomain.includes('.svc.') ? dnsDomain.slice(0, dnsDomain.indexOf('.svc.')) : podDotNs.includes('.') ? podDotNs.slice(podDotNs.indexOf('.') + 1) : undefined;
  const domainFromId = dnsDomain.includes('.svc.') ? dnsDomain.slice(dnsDomain.indexOf('.svc.') + 5) : undefined;
  const labels: Record<string, string> = {};
  const rawLabels = md.LABELS;
  if (rawLabels !== null && typeof rawLabels === 'object' && !Array.isArray(rawLabels)) {
    for (const [k, v] of Object.entries(rawLabels)) if (typeof v === 'string') labels[k] = v;
  }
  const namespace = s('NAMESPACE') ?? nsFromId ?? 'default';
  const podName = podDotNs.includes('.') ? podDotNs.slice(0, podDotNs.indexOf('.')) : podDotNs;
  const l = node.locality ?? {};
  const locality = l.region || l.zone || l.subZone ? `${l.region ?? ''}/${l.zone ?? ''}/${l.subZone ?? ''}` : '';
  return {
    kind: type === 'router' ? 'gateway' : 'sidecar',
    namespace,
    serviceAccount: s('SERVICE_ACCOUNT') ?? 'default',
    labels,
    workloadName: s('WORKLOAD_NAME') ?? labels.app ?? podName,
    clusterDomain: domainFromId ?? 'cluster.local',
    rootNamespace: 'istio-system',
    trustDomain: s('TRUST_DOMAIN') ?? 'cluster.local',
    locality,
    http10: s('HTTP10') === '1',
    ...(node.id ? { id: node.id } : {}),
    ...(s('NAME') ?? podName ? { podName: s('NAME') ?? podName } : {}),
    ...(s('CLUSTER_ID') ? { clusterId: s('CLUSTER_ID')! } : {}),
    ...(s('MESH_ID') ? { meshId: s('MESH_ID')! } : {}),
    ...(node.cluster ? { serviceCluster: node.cluster } : {}),
  };
}
