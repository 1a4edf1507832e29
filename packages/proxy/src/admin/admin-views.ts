import type { Regex } from '@remora/config';
import type { Runtime } from '../runtime/runtime.ts';
import type { UpstreamCluster } from '../upstream/upstream-cluster.ts';
import type { ClusterHost } from '../upstream/upstream-host.ts';

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

/** `/clusters` as JSON: each cluster with its endpoints, labels, load and health. */
export function clustersJson(rt: Runtime): unknown {
  const out: unknown[] = [];
  for (const c of rt.clusterManager.clusters.values()) {
    out.push({
      name: c.name,
      service: c.model.service,
      subset: c.model.subset,
      discovery: c.model.discovery,
      lb_policy: c.model.lb.kind,
      protocol: c.model.protocol,
      no_healthy_upstream: c.noHealthyUpstream,
      panic: c.panic,
      circuit_breakers: {
        rq_active: c.breaker.active,
        rq_pending_active: c.breaker.pending,
        rq_pending_overflow: c.breaker.overflows,
        rq_retry_active: c.breaker.retriesActive,
        rq_retry_overflow: c.breaker.retryOverflows,
      },
      outlier_detection:
        c.outlier === null ? null : { ejections_active: c.outlier.ejectedCount, ejections_enforced_total: c.outlier.ejectionsTotal },
      endpoints: c.hosts.map((h) => ({
        address: h.host.hostPort,
        labels: h.endpoint.labels,
        weight: h.endpoint.weight,
        locality: h.endpoint.locality,
        rq_active: h.host.active,
        rq_total: h.host.requestsTotal,
        cx_connect_fail: h.host.connectFailures,
        cx_active: h.host.pool.stats.connected,
        health: c.isEjected(h) ? 'failed_outlier_check' : 'healthy',
        outlier: outlierJson(c, h),
      })),
    });
  }
  return { clusters: out };
}

/** `/clusters` in Envoy's text form (`cluster::host::stat::value`), plus a labels line per host. */
export function clustersText(rt: Runtime): string {
  let out = '';
  for (const c of rt.clusterManager.clusters.values()) {
    out += `${c.name}::observability_name::${c.name}\n`;
    out += `${c.name}::default_priority::max_connections::${c.model.connectionPool.maxConnections || 4294967295}\n`;
    out += `${c.name}::default_priority::max_pending_requests::${c.model.connectionPool.maxPendingRequests || 4294967295}\n`;
    out += `${c.name}::default_priority::max_requests::${c.model.connectionPool.maxRequests || 4294967295}\n`;
    for (const h of c.hosts) {
      const p = `${c.name}::${h.host.hostPort}`;
      const [region = '', zone = '', subzone = ''] = h.endpoint.locality.split('/');
      out += `${p}::cx_active::${h.host.pool.stats.connected}\n`;
      out += `${p}::cx_connect_fail::${h.host.connectFailures}\n`;
      out += `${p}::rq_active::${h.host.active}\n`;
      out += `${p}::rq_total::${h.host.requestsTotal}\n`;
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

/** `/stats`: Envoy-named counters and gauges as `name: value`, sorted. */
export function statsText(rt: Runtime, filter: Regex | null, extra: Iterable<readonly [string, number, ...unknown[]]> = []): string {
  const lines: [string, number][] = [];
  for (const [k, v] of extra) lines.push([k, v]);
  for (const c of rt.clusterManager.clusters.values()) {
    let total = 0;
    let active = 0;
    let fail = 0;
    let cx = 0;
    for (const h of c.hosts) {
      total += h.host.requestsTotal;
      active += h.host.active;
      fail += h.host.connectFailures;
      cx += h.host.pool.stats.connected;
    }
    const p = `cluster.${c.name}`;
    lines.push([`${p}.membership_total`, c.hosts.length], [`${p}.membership_healthy`, c.hosts.length]);
    lines.push([`${p}.upstream_rq_total`, total], [`${p}.upstream_rq_active`, active]);
    lines.push([`${p}.upstream_cx_connect_fail`, fail], [`${p}.upstream_cx_active`, cx]);
    lines.push([`${p}.upstream_cx_none_healthy`, c.noHealthyUpstream]);
    lines.push([`${p}.upstream_rq_pending_active`, c.breaker.pending], [`${p}.upstream_rq_pending_overflow`, c.breaker.overflows]);
    lines.push([`${p}.upstream_rq_retry_overflow`, c.breaker.retryOverflows]);
    if (c.outlier !== null) {
      lines.push([`${p}.outlier_detection.ejections_active`, c.outlier.ejectedCount]);
      lines.push([`${p}.outlier_detection.ejections_enforced_total`, c.outlier.ejectionsTotal]);
    }
  }
  for (const l of rt.listeners.values()) {
    const p = `listener.${l.address}_${l.boundPort}`;
    lines.push([`${p}.downstream_cx_active`, l.activeConnections]);
    if (l.snapshot.listener.tls !== null) {
      const s = l.tlsStats;
      lines.push([`${p}.ssl.handshake`, s.handshake], [`${p}.ssl.session_reused`, s.sessionReused], [`${p}.ssl.connection_error`, s.connectionError]);
      lines.push([`${p}.ssl.no_certificate`, s.noCertificate], [`${p}.ssl.fail_verify_no_cert`, s.failVerifyNoCert]);
      lines.push([`${p}.ssl.fail_verify_error`, s.failVerifyError], [`${p}.ssl.fail_verify_san`, s.failVerifySan]);
    }
  }
  for (const s of rt.envoyStats.values()) lines.push([s.name, s.value]);
  lines.push(['server.live', rt.ready ? 1 : 0], ['server.draining', rt.draining ? 1 : 0]);
  lines.push(['overload.shed_requests', rt.overload.shed], ['overload.active', rt.overloaded ? 1 : 0]);
  lines.sort((a, b) => (a[0] < b[0] ? -1 : 1));
  let out = '';
  for (const [k, v] of lines) if (filter === null || filter.matchesPart(k)) out += `${k}: ${v}\n`;
  return out;
}
