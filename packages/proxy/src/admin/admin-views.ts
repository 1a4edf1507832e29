import type { Runtime } from '../runtime/runtime.ts';
import type { UpstreamCluster } from '../upstream/upstream-cluster.ts';
import type { ClusterHost } from '../upstream/upstream-host.ts';

/** The per-host counters `/clusters` shows, in Envoy's order. */
export const HOST_COUNTERS = ['cx_active', 'cx_connect_fail', 'cx_total', 'rq_active', 'rq_error', 'rq_success', 'rq_total'] as const;

/** Host key → its HOST_COUNTERS values. */
export type HostCounts = ReadonlyMap<string, readonly number[]>;

/** This thread's counters of every host of a live cluster. */
export function hostCounts(rt: Runtime): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const c of rt.clusterManager.clusters.values()) {
    for (const { host: u } of c.hosts) {
      if (!out.has(u.key)) out.set(u.key, [u.pool.stats.connected, u.connectFailures, u.cxTotal, u.active, u.rqError, u.rqSuccess, u.requestsTotal]);
    }
  }
  return out;
}

/**
 * The circuit-breaker counts of a cluster `/clusters` and `/explain` show, in this order
 * (Envoy's names). Each thread counts its own share (requests it has in flight or waiting,
 * overflows it refused); the proxy's figure is the sum, as Envoy's one admin view is.
 */
export const BREAKER_COUNTERS = ['rq_active', 'rq_pending_active', 'rq_pending_overflow', 'rq_retry_active', 'rq_retry_overflow'] as const;

/** Cluster name → its BREAKER_COUNTERS values. */
export type BreakerCounts = ReadonlyMap<string, readonly number[]>;

/** This thread's circuit-breaker counts of every live cluster. */
export function breakerCounts(rt: Runtime): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const c of rt.clusterManager.clusters.values()) {
    const b = c.breaker;
    out.set(c.name, [b.active, b.pending, b.overflows, b.retriesActive, b.retryOverflows]);
  }
  return out;
}

/** What one thread counts for the admin views: per host and per cluster breaker. */
export interface ThreadCounts {
  readonly hosts: HostCounts;
  readonly breakers: BreakerCounts;
}

export function threadCounts(rt: Runtime): ThreadCounts {
  return { hosts: hostCounts(rt), breakers: breakerCounts(rt) };
}

/** Several threads' counts (the main thread's and each worker's), added up per host and per cluster. */
export function sumThreadCounts(lists: readonly ThreadCounts[]): ThreadCounts {
  return { hosts: sumCounts(lists.map((l) => l.hosts)), breakers: sumCounts(lists.map((l) => l.breakers)) };
}

/** Rows of counters by key, added up per key. */
function sumCounts(lists: readonly ReadonlyMap<string, readonly number[]>[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const list of lists) {
    for (const [key, values] of list) {
      const have = out.get(key);
      if (have === undefined) out.set(key, [...values]);
      else for (let i = 0; i < have.length; i++) have[i]! += values[i] ?? 0;
    }
  }
  return out;
}

const NO_COUNTS: readonly number[] = HOST_COUNTERS.map(() => 0);
const NO_BREAKER: readonly number[] = BREAKER_COUNTERS.map(() => 0);

function outlierJson(c: UpstreamCluster, h: ClusterHost): unknown {
  const o = c.outlier?.state(h.host.key);
  if (o === undefined) return null;
  return {
    ejected: o.ejected,
    ejected_until: o.ejected ? new Date(o.ejectedUntil).toISOString() : null,
    ejections_total: o.ejectionsTotal,
    consecutive_5xx: o.consecutive5xx,
    consecutive_gateway_failure: o.consecutiveGateway,
    consecutive_local_origin_failure: o.consecutiveLocal,
  };
}

/**
 * `/clusters` as JSON: each cluster with its endpoints, labels, load and health; the host and
 * breaker counters from `counts` (this thread's unless given: with workers, theirs added up),
 * the health from this thread's outlier decisions.
 */
export function clustersJson(rt: Runtime, counts: ThreadCounts = threadCounts(rt)): unknown {
  const out: unknown[] = [];
  for (const c of rt.clusterManager.clusters.values()) {
    const breaker = counts.breakers.get(c.name) ?? NO_BREAKER;
    out.push({
      name: c.name,
      service: c.model.service,
      subset: c.model.subset,
      discovery: c.model.discovery,
      lb_policy: c.model.lb.kind,
      protocol: c.model.protocol,
      no_healthy_upstream: c.noHealthyUpstream,
      panic: c.panic,
      circuit_breakers: Object.fromEntries(BREAKER_COUNTERS.map((name, i) => [name, breaker[i] ?? 0])),
      outlier_detection:
        c.outlier === null ? null : { ejections_active: c.outlier.ejectedCount, ejections_enforced_total: c.outlier.ejectionsTotal },
      endpoints: c.hosts.map((h) => ({
        address: h.host.hostPort,
        labels: h.endpoint.labels,
        weight: h.endpoint.weight,
        locality: h.endpoint.locality,
        ...Object.fromEntries(HOST_COUNTERS.map((name, i) => [name, (counts.hosts.get(h.host.key) ?? NO_COUNTS)[i] ?? 0])),
        health: c.isEjected(h) ? 'failed_outlier_check' : 'healthy',
        outlier: outlierJson(c, h),
      })),
    });
  }
  return { clusters: out };
}

/** `/clusters` in Envoy's text form (`cluster::host::stat::value`), plus a labels line per host; `counts` as for clustersJson. */
export function clustersText(rt: Runtime, counts: ThreadCounts = threadCounts(rt)): string {
  let out = '';
  for (const c of rt.clusterManager.clusters.values()) {
    out += `${c.name}::observability_name::${c.name}\n`;
    out += `${c.name}::default_priority::max_connections::${c.model.connectionPool.maxConnections || 4294967295}\n`;
    out += `${c.name}::default_priority::max_pending_requests::${c.model.connectionPool.maxPendingRequests || 4294967295}\n`;
    out += `${c.name}::default_priority::max_requests::${c.model.connectionPool.maxRequests || 4294967295}\n`;
    for (const h of c.hosts) {
      const p = `${c.name}::${h.host.hostPort}`;
      const [region = '', zone = '', subzone = ''] = h.endpoint.locality.split('/');
      const values = counts.hosts.get(h.host.key) ?? NO_COUNTS;
      for (let i = 0; i < HOST_COUNTERS.length; i++) out += `${p}::${HOST_COUNTERS[i]}::${values[i] ?? 0}\n`;
      out += `${p}::health_flags::${c.isEjected(h) ? '/failed_outlier_check' : 'healthy'}\n`;
      const o = c.outlier?.state(h.host.key);
      if (o !== undefined) out += `${p}::outlier::ejections_total::${o.ejectionsTotal}\n${p}::outlier::consecutive_5xx::${o.consecutive5xx}\n`;
      out += `${p}::weight::${h.endpoint.weight}\n`;
      out += `${p}::region::${region}\n${p}::zone::${zone}\n${p}::sub_zone::${subzone}\n`;
      out += `${p}::labels::${Object.entries(h.endpoint.labels).map(([k, v]) => `${k}=${v}`).join(',')}\n`;
    }
  }
  return out;
}

/** Envoy's `/listeners` text: `name::address:port`, one listener a line. */
export function listenersText(rt: Runtime): string {
  let out = '';
  for (const l of rt.listeners.values()) out += `${l.name}::${l.address.includes(':') ? `[${l.address}]` : l.address}:${l.boundPort}\n`;
  return out;
}

/** `/listeners?format=json`: Envoy's admin.v3.Listeners (`listener_statuses`, each with its `local_address`). */
export function listenersJson(rt: Runtime): unknown {
  const statuses: unknown[] = [];
  for (const l of rt.listeners.values()) {
    statuses.push({ name: l.name, local_address: { socket_address: { address: l.address, port_value: l.boundPort } } });
  }
  return { listener_statuses: statuses };
}

/** Envoy's CommandLineOptions field for each flag Remora takes under Envoy's name. */
const ENVOY_FLAGS: Readonly<Record<string, string>> = {
  '-c': 'config_path',
  '--config-path': 'config_path',
  '--config-yaml': 'config_yaml',
  '-l': 'log_level',
  '--log-level': 'log_level',
  '--component-log-level': 'component_log_level',
  '--log-format': 'log_format',
  '--log-path': 'log_path',
  '--service-cluster': 'service_cluster',
  '--service-node': 'service_node',
  '--service-zone': 'service_zone',
  '--drain-time-s': 'drain_time',
  '--parent-shutdown-time-s': 'parent_shutdown_time',
  '--drain-strategy': 'drain_strategy',
  '--local-address-ip-version': 'local_address_ip_version',
  '--base-id': 'base_id',
  '--restart-epoch': 'restart_epoch',
  '--file-flush-interval-msec': 'file_flush_interval',
};

/**
 * `/server_info`'s `command_line_options` as Envoy's CommandLineOptions JSON: its defaults,
 * the flags given under Envoy's names, and the process's own argument list as given.
 */
export function commandLineOptions(argv: readonly string[], concurrency: number): Record<string, unknown> {
  const out: Record<string, unknown> = {
    base_id: '0',
    concurrency,
    config_path: '',
    config_yaml: '',
    log_level: 'info',
    component_log_level: '',
    log_format: '[%Y-%m-%d %T.%e][%t][%l][%n] %v',
    log_path: '',
    service_cluster: '',
    service_node: '',
    service_zone: '',
    drain_time: '600s',
    drain_strategy: 'Gradual',
    parent_shutdown_time: '900s',
    mode: 'Serve',
    disable_hot_restart: true,
    restart_epoch: 0,
    local_address_ip_version: 'v4',
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.indexOf('=');
    const flag = eq > 0 && arg.startsWith('--') ? arg.slice(0, eq) : arg;
    const field = ENVOY_FLAGS[flag];
    if (field === undefined) continue;
    const value = eq > 0 && arg.startsWith('--') ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined) break;
    if (field === 'drain_time' || field === 'parent_shutdown_time') out[field] = `${value}s`;
    else if (field === 'file_flush_interval') out[field] = `${Number(value) / 1000}s`;
    else if (field === 'restart_epoch') out[field] = Number(value);
    else out[field] = value;
  }
  out['args'] = [...argv];
  return out;
}
