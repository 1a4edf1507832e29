import type { OutlierDetection } from '@remora/config';

/** Envoy's cap on one ejection (max_ejection_time default). */
const MAX_EJECTION_MS = 300_000;

/** Outlier state of one host in one cluster; survives host list changes (keyed by address). */
export class HostOutlierState {
  consecutive5xx = 0;
  consecutiveGateway = 0;
  consecutiveLocal = 0;
  ejected = false;
  ejectedUntil = 0;
  /** Ejections that still weigh on the next ejection's length (Envoy's multiplier). */
  multiplier = 0;
  /** For /clusters and /stats. */
  ejectionsTotal = 0;
}

/**
 * Envoy's outlier detection (Istio `outlierDetection`), passive health from real traffic:
 * consecutive 5xx, consecutive gateway errors (502/503/504) and, when split, consecutive
 * locally-originated failures (connect failure, reset, timeout) eject a host at once, unless
 * that would eject more than `maxEjectionPercent` of the cluster. An ejected host comes back
 * after `baseEjectionTime × ejections` (capped at 300 s), checked every `interval`; each
 * interval a host stays in, its multiplier shrinks by one.
 */
export class OutlierDetector {
  readonly config: OutlierDetection;
  readonly #states = new Map<string, HostOutlierState>();
  readonly #onChange: () => void;
  readonly #now: () => number;
  #timer: NodeJS.Timeout | null = null;
  /** Hosts the cluster has now, to compute the ejected share. */
  #hostCount = 0;
  ejectionsTotal = 0;
  /** Envoy's `outlier_detection.ejections_enforced_<reason>`, and ejections refused at the maximum share (`ejections_overflow`). */
  ejectionsConsecutive5xx = 0;
  ejectionsGatewayFailure = 0;
  ejectionsLocalOriginFailure = 0;
  ejectionsOverflow = 0;

  constructor(config: OutlierDetection, onChange: () => void, now: () => number = Date.now) {
    this.config = config;
    this.#onChange = onChange;
    this.#now = now;
  }

  start(): void {
    if (this.#timer !== null) return;
    this.#timer = setInterval(() => this.sweep(), Math.max(10, this.config.intervalMs));
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** The cluster's hosts changed: keep state for hosts still there, drop the rest. */
  setHosts(keys: readonly string[]): void {
    this.#hostCount = keys.length;
    const keep = new Set(keys);
    for (const k of this.#states.keys()) if (!keep.has(k)) this.#states.delete(k);
    for (const k of keys) if (!this.#states.has(k)) this.#states.set(k, new HostOutlierState());
  }

  state(key: string): HostOutlierState | undefined {
    return this.#states.get(key);
  }

  isEjected(key: string): boolean {
    return this.#states.get(key)?.ejected === true;
  }

  /** The hosts ejected now, by key (what the main thread tells the workers). */
  ejectedKeys(): string[] {
    const out: string[] = [];
    for (const [k, s] of this.#states) if (s.ejected) out.push(k);
    return out;
  }

  get ejectedCount(): number {
    let n = 0;
    for (const s of this.#states.values()) if (s.ejected) n++;
    return n;
  }

  /** An upstream answered `status`. */
  reportStatus(key: string, status: number): void {
    const s = this.#states.get(key);
    if (s === undefined) return;
    if (status >= 500) {
      s.consecutive5xx++;
      if (status === 502 || status === 503 || status === 504) s.consecutiveGateway++;
      else s.consecutiveGateway = 0;
      this.#check(s);
    } else {
      s.consecutive5xx = 0;
      s.consecutiveGateway = 0;
      if (!this.config.splitExternalLocalOriginErrors) s.consecutiveLocal = 0;
    }
  }

  /** A try failed before any response: connect failure, reset, timeout (locally originated). */
  reportLocalFailure(key: string): void {
    const s = this.#states.get(key);
    if (s === undefined) return;
    if (this.config.splitExternalLocalOriginErrors) {
      s.consecutiveLocal++;
    } else {
      // Not split: Envoy counts a local failure as a 503 from the host.
      s.consecutive5xx++;
      s.consecutiveGateway++;
    }
    this.#check(s);
  }

  /** A connection to the host was made (split mode resets the local-origin streak on success). */
  reportLocalSuccess(key: string): void {
    const s = this.#states.get(key);
    if (s !== undefined && this.config.splitExternalLocalOriginErrors) s.consecutiveLocal = 0;
  }

  #check(s: HostOutlierState): void {
    if (s.ejected) return;
    const c = this.config;
    // Envoy checks consecutive 5xx first, then gateway failures, then local-origin failures.
    const reason =
      c.consecutive5xxErrors > 0 && s.consecutive5xx >= c.consecutive5xxErrors
        ? 1
        : c.consecutiveGatewayErrors > 0 && s.consecutiveGateway >= c.consecutiveGatewayErrors
          ? 2
          : c.splitExternalLocalOriginErrors && c.consecutiveLocalOriginFailures > 0 && s.consecutiveLocal >= c.consecutiveLocalOriginFailures
            ? 3
            : 0;
    if (reason === 0) return;
    // Envoy refuses an ejection once the ejected share has reached the maximum.
    const total = this.#hostCount;
    if (total > 0 && (this.ejectedCount * 100) / total >= c.maxEjectionPercent) {
      this.ejectionsOverflow++;
      return;
    }
    if (reason === 1) this.ejectionsConsecutive5xx++;
    else if (reason === 2) this.ejectionsGatewayFailure++;
    else this.ejectionsLocalOriginFailure++;
    s.ejected = true;
    const cap = Math.max(MAX_EJECTION_MS, c.baseEjectionTimeMs);
    // Envoy stops growing the multiplier once base × multiplier passes the cap, so a host
    // ejected many times is not held back for many more intervals once it recovers.
    if (s.multiplier * c.baseEjectionTimeMs < cap + c.baseEjectionTimeMs) s.multiplier++;
    s.ejectionsTotal++;
    this.ejectionsTotal++;
    s.ejectedUntil = this.#now() + Math.min(c.baseEjectionTimeMs * s.multiplier, cap);
    s.consecutive5xx = 0;
    s.consecutiveGateway = 0;
    s.consecutiveLocal = 0;
    this.#onChange();
  }

  /** The interval check: ejected hosts whose time is up return; others' multipliers decay. */
  sweep(): void {
    const now = this.#now();
    let changed = false;
    for (const s of this.#states.values()) {
      if (s.ejected) {
        if (now >= s.ejectedUntil) {
          s.ejected = false;
          changed = true;
        }
      } else if (s.multiplier > 0) {
        s.multiplier--;
      }
    }
    if (changed) this.#onChange();
  }
}

/** Where a worker's outcomes go: the main thread's detector of the same cluster. `status` 0: a locally-originated failure. */
export type OutcomeSink = (cluster: string, hostKey: string, status: number) => void;

/**
 * A worker thread's outlier detection: Envoy decides ejections once for all workers (on its
 * main thread, from what every worker reports); so does Remora. The worker passes every
 * outcome on to the main thread and ejects the hosts the main thread says are ejected
 * (`setEjected`); it counts no ejections of its own.
 */
export class OutlierFollower extends OutlierDetector {
  readonly #cluster: string;
  readonly #sink: OutcomeSink;
  readonly #notify: () => void;
  #ejected: ReadonlySet<string> = new Set();

  constructor(cluster: string, config: OutlierDetection, onChange: () => void, sink: OutcomeSink) {
    super(config, onChange);
    this.#cluster = cluster;
    this.#sink = sink;
    this.#notify = onChange;
  }

  override start(): void {}

  override stop(): void {}

  override sweep(): void {}

  override isEjected(key: string): boolean {
    return this.#ejected.has(key);
  }

  override ejectedKeys(): string[] {
    return [...this.#ejected];
  }

  override get ejectedCount(): number {
    return this.#ejected.size;
  }

  override reportStatus(key: string, status: number): void {
    this.#sink(this.#cluster, key, status);
  }

  override reportLocalFailure(key: string): void {
    this.#sink(this.#cluster, key, 0);
  }

  /** Sent with every status: the main thread's `reportStatus` replays it. */
  override reportLocalSuccess(): void {}

  /** The main thread's verdict: exactly these hosts are ejected now. */
  setEjected(keys: readonly string[]): void {
    const next = new Set(keys);
    if (next.size === this.#ejected.size && keys.every((k) => this.#ejected.has(k))) return;
    this.#ejected = next;
    this.#notify();
  }
}
