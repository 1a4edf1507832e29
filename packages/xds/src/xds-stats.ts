/**
 * The xDS client's stats under Envoy's names, kept in plain maps the proxy's `/stats` reads:
 *
 * - `control_plane.connected_state` (gauge, 1 while the ADS stream is up);
 * - per subscription, `cluster_manager.cds.*` and `listener_manager.lds.*`;
 * - per resource, `cluster.<name>.*` (EDS), `sds.<name>.*` (SDS) and
 *   `http.<stat_prefix>.rds.<name>.*` (RDS, once the consumer has said which connection
 *   manager's `stat_prefix` a route configuration belongs to: {@link XdsStats.rdsStatPrefixes}).
 *
 * Each family has Envoy's `update_attempt`, `update_success`, `update_rejected`,
 * `update_failure` (the stream failed), the gauges `version` (a hash of the last accepted
 * version, as Envoy's; a 53-bit one here, not Envoy's xxHash64 value) and `update_time`
 * (milliseconds since the epoch), and the text readout `version_text`.
 */
import { TypeUrl } from './type-urls.ts';

export class XdsStats {
  readonly counters = new Map<string, number>();
  readonly gauges = new Map<string, number>();
  readonly textReadouts = new Map<string, string>();
  /** Route configuration name → `stat_prefix` of the connection manager using it (RDS stats need it). */
  readonly rdsStatPrefixes = new Map<string, string>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
    this.gauges.set('control_plane.connected_state', 0);
  }

  setConnected(connected: boolean): void {
    this.gauges.set('control_plane.connected_state', connected ? 1 : 0);
  }

  /** A subscription of this type was started (Envoy counts an attempt then). */
  onStart(typeUrl: string, names: Iterable<string>): void {
    for (const scope of this.#scopes(typeUrl, names)) this.#inc(scope + 'update_attempt');
  }

  onAccepted(typeUrl: string, version: string, names: Iterable<string>): void {
    const hash = versionHash(version);
    const now = this.#now();
    for (const scope of this.#scopes(typeUrl, names)) {
      this.#inc(scope + 'update_attempt');
      this.#inc(scope + 'update_success');
      this.gauges.set(scope + 'version', hash);
      this.gauges.set(scope + 'update_time', now);
      this.textReadouts.set(scope + 'version_text', version);
    }
  }

  onRejected(typeUrl: string, names: Iterable<string>): void {
    for (const scope of this.#scopes(typeUrl, names)) {
      this.#inc(scope + 'update_attempt');
      this.#inc(scope + 'update_rejected');
    }
  }

  /** The stream failed while this subscription was active. */
  onFailure(typeUrl: string, names: Iterable<string>): void {
    for (const scope of this.#scopes(typeUrl, names)) {
      this.#inc(scope + 'update_attempt');
      this.#inc(scope + 'update_failure');
    }
  }

  /** A counter's value, 0 when never incremented. */
  counter(name: string): number {
    return this.counters.get(name) ?? 0;
  }

  #inc(name: string): void {
    this.counters.set(name, (this.counters.get(name) ?? 0) + 1);
  }

  #scopes(typeUrl: string, names: Iterable<string>): string[] {
    switch (typeUrl) {
      case TypeUrl.Cluster:
        return ['cluster_manager.cds.'];
      case TypeUrl.Listener:
        return ['listener_manager.lds.'];
      case TypeUrl.ClusterLoadAssignment:
        return [...names].map((n) => `cluster.${n}.`);
      case TypeUrl.Secret:
        return [...names].map((n) => `sds.${n}.`);
      case TypeUrl.RouteConfiguration: {
        const out: string[] = [];
        for (const n of names) {
          const prefix = this.rdsStatPrefixes.get(n);
          if (prefix !== undefined) out.push(`http.${prefix}.rds.${n}.`);
        }
        return out;
      }
      default:
        return [];
    }
  }
}

/** A 53-bit hash of a version string (cyrb53), exact in a JavaScript number. */
export function versionHash(version: string): number {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < version.length; i++) {
    const c = version.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}
