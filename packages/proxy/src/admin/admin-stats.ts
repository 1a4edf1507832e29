import type { Regex } from '@remora/config';
import type { Runtime } from '../runtime/runtime.ts';
import { untaggedPrometheus } from '../telemetry/envoy-stats.ts';

/** Remora's version, as `/server_info` and `server.version` report it. */
export const REMORA_VERSION = '0.1.0';

/** One stat as `/stats` shows it. */
export interface StatEntry {
  readonly name: string;
  readonly value: number;
  readonly gauge: boolean;
}

/** What the server stats need beyond the runtime. */
export interface ServerFacts {
  /** When the process started serving (ms since the epoch). */
  readonly startedAt: number;
  /** The worker count Envoy reports as `server.concurrency`. */
  readonly concurrency: number;
}

/** Envoy's ServerInfo.State: LIVE 0, DRAINING 1, PRE_INITIALIZING 2, INITIALIZING 3. */
export function serverState(rt: Runtime): { readonly name: string; readonly code: number } {
  if (rt.draining) return { name: 'DRAINING', code: 1 };
  if (rt.ready) return { name: 'LIVE', code: 0 };
  return { name: 'PRE_INITIALIZING', code: 2 };
}

/**
 * Envoy's memory figures (tcmalloc's) from Node's `process.memoryUsage()`:
 * - `allocated`: bytes in use by the program, the V8 heap's live objects (`heapUsed`) plus
 *   memory held outside it for JavaScript objects, Buffers among them (`external`);
 * - `heap_size`: bytes reserved for those, V8's heap (`heapTotal`) plus `external`;
 * - `pageheap_free`: reserved but unused, `heapTotal − heapUsed`;
 * - `pageheap_unmapped`, `total_thread_cache`: no counterpart in V8, 0;
 * - `total_physical_bytes`: the resident set (`rss`), everything the process holds in RAM.
 */
export function memoryFigures(): {
  allocated: number;
  heapSize: number;
  pageheapUnmapped: number;
  pageheapFree: number;
  totalThreadCache: number;
  totalPhysicalBytes: number;
} {
  const m = process.memoryUsage();
  return {
    allocated: m.heapUsed + m.external,
    heapSize: m.heapTotal + m.external,
    pageheapUnmapped: 0,
    pageheapFree: Math.max(0, m.heapTotal - m.heapUsed),
    totalThreadCache: 0,
    totalPhysicalBytes: m.rss,
  };
}

/** `server.version`: Envoy's is a number from its source revision; Remora's is its version as major·10⁶ + minor·10³ + patch. */
export function versionNumber(version: string = REMORA_VERSION): number {
  const [major = 0, minor = 0, patch = 0] = version.split('.').map((p) => Number.parseInt(p, 10) || 0);
  return major * 1_000_000 + minor * 1_000 + patch;
}

/** Days until the workload certificate expires (Envoy's `server.days_until_first_cert_expiring`); null without one. */
function daysUntilIdentityExpires(rt: Runtime): number | null {
  const id = rt.identity?.current ?? null;
  if (id === null) return null;
  return Math.max(0, Math.floor((id.notAfter.getTime() - Date.now()) / 86_400_000));
}

/** The `server.*` gauges. */
export function serverStats(rt: Runtime, facts: ServerFacts): StatEntry[] {
  const mem = memoryFigures();
  let connections = 0;
  for (const l of rt.listeners.values()) connections += l.activeConnections;
  const out: StatEntry[] = [
    { name: 'server.live', value: rt.ready ? 1 : 0, gauge: true },
    { name: 'server.state', value: serverState(rt).code, gauge: true },
    { name: 'server.uptime', value: Math.floor((Date.now() - facts.startedAt) / 1000), gauge: true },
    { name: 'server.memory_allocated', value: mem.allocated, gauge: true },
    { name: 'server.memory_heap_size', value: mem.heapSize, gauge: true },
    { name: 'server.memory_physical_size', value: mem.totalPhysicalBytes, gauge: true },
    { name: 'server.concurrency', value: facts.concurrency, gauge: true },
    { name: 'server.version', value: versionNumber(), gauge: true },
    { name: 'server.hot_restart_epoch', value: 0, gauge: true },
    { name: 'server.total_connections', value: connections, gauge: true },
  ];
  const days = daysUntilIdentityExpires(rt);
  if (days !== null) out.push({ name: 'server.days_until_first_cert_expiring', value: days, gauge: true });
  return out;
}

/** Envoy's `/stats` names of everything Remora counts. */
export function collectStats(rt: Runtime, facts: ServerFacts, extra: Iterable<readonly [string, number, ...unknown[]]>): StatEntry[] {
  const out: StatEntry[] = [];
  const counter = (name: string, value: number): void => void out.push({ name, value, gauge: false });
  const gauge = (name: string, value: number): void => void out.push({ name, value, gauge: true });
  for (const [name, value, kind] of extra) out.push({ name, value, gauge: kind === 'gauge' });
  for (const c of rt.clusterManager.clusters.values()) {
    let active = 0;
    let cxActive = 0;
    // An ORIGINAL_DST cluster's removed hosts still count in its upstream_cx_total.
    let cxTotal = c.originalDst?.retiredCxTotal ?? 0;
    let ejected = 0;
    for (const h of c.hosts) {
      active += h.host.active;
      cxActive += h.host.pool.stats.connected;
      cxTotal += h.host.cxTotal;
      if (c.isEjected(h)) ejected++;
    }
    const p = `cluster.${c.name}.`;
    const s = c.stats;
    gauge(`${p}membership_total`, c.hosts.length);
    gauge(`${p}membership_healthy`, c.hosts.length - ejected);
    counter(`${p}upstream_rq_total`, s.rqTotal);
    gauge(`${p}upstream_rq_active`, active);
    for (let i = 1; i <= 5; i++) counter(`${p}upstream_rq_${i}xx`, s.rqByClass[i]!);
    const byCode = s.rqByCode;
    if (byCode !== null) for (let code = 100; code < 600; code++) if (byCode[code]! > 0) counter(`${p}upstream_rq_${code}`, byCode[code]!);
    counter(`${p}upstream_rq_retry`, s.rqRetry);
    counter(`${p}upstream_rq_retry_success`, s.rqRetrySuccess);
    counter(`${p}upstream_rq_retry_limit_exceeded`, s.rqRetryLimitExceeded);
    counter(`${p}upstream_rq_retry_overflow`, c.breaker.retryOverflows);
    counter(`${p}upstream_rq_timeout`, s.rqTimeout);
    counter(`${p}upstream_rq_per_try_timeout`, s.rqPerTryTimeout);
    gauge(`${p}upstream_rq_pending_active`, c.breaker.pending);
    counter(`${p}upstream_rq_pending_overflow`, c.breaker.overflows);
    counter(`${p}upstream_cx_total`, cxTotal);
    gauge(`${p}upstream_cx_active`, cxActive);
    counter(`${p}upstream_cx_connect_fail`, s.cxConnectFail);
    counter(`${p}upstream_cx_none_healthy`, c.noHealthyUpstream);
    gauge(`${p}circuit_breakers.default.cx_open`, c.breaker.cxOpen);
    gauge(`${p}circuit_breakers.default.rq_pending_open`, c.breaker.rqPendingOpen);
    gauge(`${p}circuit_breakers.default.rq_open`, c.breaker.rqOpen);
    gauge(`${p}circuit_breakers.default.rq_retry_open`, c.breaker.rqRetryOpen);
    const o = c.outlier;
    if (o !== null) {
      gauge(`${p}outlier_detection.ejections_active`, o.ejectedCount);
      counter(`${p}outlier_detection.ejections_enforced_total`, o.ejectionsTotal);
      counter(`${p}outlier_detection.ejections_total`, o.ejectionsTotal);
      counter(`${p}outlier_detection.ejections_enforced_consecutive_5xx`, o.ejectionsConsecutive5xx);
      counter(`${p}outlier_detection.ejections_enforced_consecutive_gateway_failure`, o.ejectionsGatewayFailure);
      counter(`${p}outlier_detection.ejections_enforced_consecutive_local_origin_failure`, o.ejectionsLocalOriginFailure);
      counter(`${p}outlier_detection.ejections_overflow`, o.ejectionsOverflow);
    }
  }
  for (const l of rt.listeners.values()) {
    const p = `listener.${l.address}_${l.boundPort}.`;
    counter(`${p}downstream_cx_total`, l.cxTotal);
    gauge(`${p}downstream_cx_active`, l.activeConnections);
    if (l.snapshot.listener.tls !== null) {
      const s = l.tlsStats;
      counter(`${p}ssl.handshake`, s.handshake);
      counter(`${p}ssl.session_reused`, s.sessionReused);
      counter(`${p}ssl.connection_error`, s.connectionError);
      counter(`${p}ssl.no_certificate`, s.noCertificate);
      counter(`${p}ssl.fail_verify_no_cert`, s.failVerifyNoCert);
      counter(`${p}ssl.fail_verify_error`, s.failVerifyError);
      counter(`${p}ssl.fail_verify_san`, s.failVerifySan);
    }
  }
  for (const s of rt.envoyStats.values()) out.push({ name: s.name, value: s.value, gauge: s.gauge });
  out.push(...serverStats(rt, facts));
  gauge('server.draining', rt.draining ? 1 : 0);
  counter('overload.shed_requests', rt.overload.shed);
  gauge('overload.active', rt.overloaded ? 1 : 0);
  out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return out;
}

/** Stats Envoy sets when it creates them, so `?usedonly` always shows them. */
const ALWAYS_USED = /^(server\.|cluster\.[^]*\.membership_(total|healthy)$)/;

/** How `/stats` was asked for: Envoy's query parameters. */
export interface StatsQuery {
  readonly filter: Regex | null;
  readonly usedOnly: boolean;
  /** `Counters`, `Gauges`, `Histograms`, `TextReadouts` or `All`. */
  readonly type: 'All' | 'Counters' | 'Gauges' | 'Histograms' | 'TextReadouts';
}

export const STAT_TYPES = new Set(['All', 'Counters', 'Gauges', 'Histograms', 'TextReadouts']);

/**
 * The `/stats` view: Envoy's `?usedonly` shows stats that were ever written. A stat is used
 * once it has been seen non-zero by a read of `/stats` or a reset, or is one Envoy sets at
 * creation (server, membership); the hot path writes nothing extra for it.
 */
export class StatsView {
  readonly #used = new Set<string>();

  select(all: readonly StatEntry[], q: StatsQuery): StatEntry[] {
    const out: StatEntry[] = [];
    if (q.type === 'Histograms' || q.type === 'TextReadouts') return out;
    for (const s of all) {
      if (s.value !== 0) this.#used.add(s.name);
      if (q.type === 'Counters' && s.gauge) continue;
      if (q.type === 'Gauges' && !s.gauge) continue;
      if (q.usedOnly && s.value === 0 && !this.#used.has(s.name) && !ALWAYS_USED.test(s.name)) continue;
      if (q.filter !== null && !q.filter.matchesPart(s.name)) continue;
      out.push(s);
    }
    return out;
  }

  /** Envoy's `POST /reset_counters`: every counter to zero (gauges stay), still shown as used. */
  resetCounters(rt: Runtime, all: readonly StatEntry[]): void {
    for (const s of all) if (s.value !== 0 && !s.gauge) this.#used.add(s.name);
    for (const c of rt.clusterManager.clusters.values()) {
      c.stats.reset();
      c.noHealthyUpstream = 0;
      c.breaker.overflows = 0;
      c.breaker.retryOverflows = 0;
      const o = c.outlier;
      if (o !== null) {
        o.ejectionsTotal = 0;
        o.ejectionsConsecutive5xx = 0;
        o.ejectionsGatewayFailure = 0;
        o.ejectionsLocalOriginFailure = 0;
        o.ejectionsOverflow = 0;
        for (const h of c.hosts) {
          const st = o.state(h.host.key);
          if (st !== undefined) st.ejectionsTotal = 0;
        }
      }
    }
    for (const h of rt.clusterManager.hosts.values()) {
      h.requestsTotal = 0;
      h.rqSuccess = 0;
      h.rqError = 0;
      h.connectFailures = 0;
      h.cxTotal = 0;
    }
    for (const l of rt.listeners.values()) {
      l.cxTotal = 0;
      const t = l.tlsStats;
      t.handshake = 0;
      t.sessionReused = 0;
      t.connectionError = 0;
      t.noCertificate = 0;
      t.failVerifyNoCert = 0;
      t.failVerifyError = 0;
      t.failVerifySan = 0;
    }
    for (const s of rt.envoyStats.values()) if (!s.gauge) s.value = 0;
    rt.overload.shed = 0;
    // Istio's counters live in the same stats store in Envoy: reset too (histograms are kept).
    rt.metrics.resetCounters();
  }
}

/** `/stats` as text: `name: value`, one a line. */
export function statsText(entries: readonly StatEntry[]): string {
  let out = '';
  for (const s of entries) out += `${s.name}: ${s.value}\n`;
  return out;
}

/** `/stats?format=json`: Envoy's `{"stats":[{"name","value"}…]}` (Remora keeps no histograms). */
export function statsJson(entries: readonly StatEntry[]): string {
  return JSON.stringify({ stats: entries.map((s) => ({ name: s.name, value: s.value })) }, null, 1) + '\n';
}

/** The `server.*` gauges in Prometheus text, as Envoy exports them (`envoy_server_live{} 1`). */
export function serverPrometheus(rt: Runtime, facts: ServerFacts): string {
  return untaggedPrometheus(serverStats(rt, facts).map((s) => [s.name, s.value, 'gauge'] as const));
}
