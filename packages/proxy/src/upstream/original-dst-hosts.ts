import type { Endpoint } from '@remora/config';
import type { OriginalDestination } from '../listener/original-dst.ts';
import type { RequestStats } from '../telemetry/istio-metrics.ts';
import { UpstreamHost, type ClusterHost, type PoolSettings } from './upstream-host.ts';

/** Envoy's original_dst cluster `cleanup_interval` default: hosts idle this long are removed. */
export const ORIGINAL_DST_CLEANUP_MS = 5_000;
/** At most this many destinations keep a pool; past it the least recently used idle one goes. */
export const ORIGINAL_DST_MAX_HOSTS = 1_024;

interface Entry {
  readonly host: ClusterHost;
  usedAt: number;
}

/**
 * The hosts of an ORIGINAL_DST cluster (Istio's PassthroughCluster, InboundPassthroughCluster):
 * one per original destination seen, made when a connection or request first goes there,
 * each with its own keep-alive pool. As Envoy's original_dst cluster, hosts nobody used for
 * the cleanup interval are removed (their pools closed once idle), and the set is bounded.
 */
export class OriginalDstHosts {
  readonly #settings: PoolSettings;
  readonly #statsFor: (endpoint: Endpoint) => RequestStats;
  readonly #entries = new Map<string, Entry>();
  readonly #cleanupMs: number;
  readonly #max: number;
  #timer: NodeJS.Timeout | null = null;
  #closed = false;
  /** `upstream_cx_total` of hosts already removed, so the cluster's counter never goes back. */
  retiredCxTotal = 0;

  constructor(settings: PoolSettings, statsFor: (endpoint: Endpoint) => RequestStats, opts: { cleanupMs?: number; maxHosts?: number } = {}) {
    this.#settings = settings;
    this.#statsFor = statsFor;
    this.#cleanupMs = opts.cleanupMs ?? ORIGINAL_DST_CLEANUP_MS;
    this.#max = opts.maxHosts ?? ORIGINAL_DST_MAX_HOSTS;
  }

  /** The local address upstream connections are made from; null: the kernel picks. */
  get localAddress(): string | null {
    return this.#settings.localAddress ?? null;
  }

  /** The hosts there are now (for `/clusters` and the cluster stats). */
  get hosts(): ClusterHost[] {
    const out: ClusterHost[] = [];
    for (const e of this.#entries.values()) out.push(e.host);
    return out;
  }

  /** The host for a destination (made on first use); null without one: nowhere to go (503 UH). */
  hostFor(dest: OriginalDestination | null | undefined): ClusterHost | null {
    if (dest == null || this.#closed) return null;
    const key = dest.family === 'IPv6' ? `[${dest.address}]:${dest.port}` : `${dest.address}:${dest.port}`;
    let e = this.#entries.get(key);
    if (e === undefined) {
      if (this.#entries.size >= this.#max) this.#evictOne();
      const hostKey = UpstreamHost.keyOf(dest.address, dest.port, this.#settings);
      const endpoint: Endpoint = {
        address: dest.address,
        port: dest.port,
        labels: {},
        weight: 1,
        locality: '',
        workloadName: '',
        namespace: '',
        serviceAccount: '',
      };
      const host = new UpstreamHost(hostKey, dest.address, dest.port, this.#settings);
      host.refs = 1;
      e = { host: { host, endpoint, stats: this.#statsFor(endpoint) }, usedAt: 0 };
      this.#entries.set(key, e);
    }
    e.usedAt = Date.now();
    return e.host;
  }

  /** Starts removing idle hosts (the cluster went live). */
  start(): void {
    if (this.#timer !== null || this.#closed) return;
    this.#timer = setInterval(() => this.#cleanup(), this.#cleanupMs);
    this.#timer.unref();
  }

  /** Stops the cleanup; hosts close after `graceMs` (requests of an older snapshot may still use them). */
  stop(graceMs: number): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    setTimeout(() => {
      if (this.#timer !== null) return; // live again (the same cluster kept by a later config)
      for (const key of [...this.#entries.keys()]) this.#remove(key, false);
    }, graceMs).unref();
  }

  /** Closes every pool now, failing what is in flight (shutdown). */
  async destroy(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    const hosts = [...this.#entries.values()].map((e) => e.host.host);
    this.#entries.clear();
    await Promise.allSettled(hosts.map((h) => h.destroy()));
  }

  #cleanup(): void {
    const now = Date.now();
    for (const [key, e] of this.#entries) {
      if (e.host.host.active === 0 && now - e.usedAt >= this.#cleanupMs) this.#remove(key, false);
    }
  }

  /** Makes room: the least recently used host with nothing in flight, else the least recently used. */
  #evictOne(): void {
    let oldest: string | null = null;
    let oldestAt = Infinity;
    let idle: string | null = null;
    let idleAt = Infinity;
    for (const [key, e] of this.#entries) {
      if (e.usedAt < oldestAt) {
        oldest = key;
        oldestAt = e.usedAt;
      }
      if (e.host.host.active === 0 && e.usedAt < idleAt) {
        idle = key;
        idleAt = e.usedAt;
      }
    }
    const key = idle ?? oldest;
    if (key !== null) this.#remove(key, false);
  }

  #remove(key: string, now: boolean): void {
    const e = this.#entries.get(key);
    if (e === undefined) return;
    this.#entries.delete(key);
    const h = e.host.host;
    h.refs = 0;
    this.retiredCxTotal += h.cxTotal;
    // A graceful close: requests still on the pool finish first.
    void (now ? h.destroy() : h.close()).catch(() => undefined);
  }
}
