/**
 * Where a JWT provider's keys come from: inline (parsed at compile time) or a `jwksUri`
 * fetched over HTTP(S) and cached, as Envoy's remote_jwks with Istio's 5 minute
 * cache_duration. One `RemoteJwks` per URI lives in the filter's persistent state, so config
 * reloads keep the keys. Beyond Envoy: expired keys keep serving while a background refresh
 * runs (and after it fails), and a token naming an unknown `kid` (a key rotation) triggers one
 * immediate refresh, rate-limited so a flood of made-up kids cannot hammer the JWKS server.
 */
import { LRUCache } from 'lru-cache';
import type { Stat } from '../filter-stats.ts';
import { type Clock, monotonicClock } from '../timers.ts';
import { JwksKeySet, parseJwks } from './jwt-authn-jwks.ts';

/** A provider's keys, however they are obtained. */
export interface JwksSource {
  /** The keys now; null while none were ever fetched. Starts a background refresh when they are stale. */
  current(): JwksKeySet | null;
  /** The first fetch, shared by every caller; null when it failed. */
  load(): Promise<JwksKeySet | null>;
  /** A refresh for a token whose kid the keys lack; null when none may start now (then the kid is unknown). */
  refreshForUnknownKid(): Promise<JwksKeySet | null> | null;
}

/** Keys written in the RequestAuthentication (`jwks`). */
export class InlineJwks implements JwksSource {
  readonly #keys: JwksKeySet;
  readonly #loaded: Promise<JwksKeySet>;

  constructor(keys: JwksKeySet) {
    this.#keys = keys;
    this.#loaded = Promise.resolve(keys);
  }
  current(): JwksKeySet {
    return this.#keys;
  }
  load(): Promise<JwksKeySet | null> {
    return this.#loaded;
  }
  refreshForUnknownKid(): null {
    return null;
  }
}

export interface RemoteJwksOptions {
  /** How long fetched keys are fresh (Envoy's remote_jwks cache_duration; Istio sets 5 min). */
  readonly cacheDurationMs: number;
  /** Least time between refreshes not due to expiry: unknown-kid refreshes, and retries after a failed fetch. */
  readonly minRefreshIntervalMs: number;
  /** Fetch timeout (the rule's `timeout`, Istio's default 5 s). */
  readonly timeoutMs: number;
  /** Where fetch failures are reported. */
  readonly warn: (message: string) => void;
  /** The monotonic clock of expiry and refresh intervals (default `performance.now`); tests pass their own. */
  readonly clock?: Clock;
}

/** The keys at a `jwksUri`. */
export class RemoteJwks implements JwksSource {
  readonly uri: string;
  /** Holds the one key set under the URI: lru-cache gives shared fetches, TTL and stale-while-revalidate. */
  readonly #cache: LRUCache<string, JwksKeySet>;
  readonly #minRefreshIntervalMs: number;
  #timeoutMs: number;
  readonly #warn: (message: string) => void;
  readonly #clock: Clock;
  #lastFailure = -Infinity;
  #lastKidRefresh = -Infinity;
  #kidRefresh: Promise<JwksKeySet | null> | null = null;
  #fetches = 0;
  #failures = 0;
  /** Fetches in flight (lru-cache shares one among callers). */
  #pending = 0;
  /**
   * The `jwks_fetch_success` / `jwks_fetch_failed` counters of every connection manager whose
   * filter uses these keys: Envoy fetches once per filter config, so each counts the fetch.
   */
  readonly #successStats = new Set<Stat>();
  readonly #failedStats = new Set<Stat>();

  constructor(uri: string, options: RemoteJwksOptions) {
    this.uri = uri;
    this.#minRefreshIntervalMs = options.minRefreshIntervalMs;
    this.#timeoutMs = options.timeoutMs;
    this.#warn = options.warn;
    const clock = options.clock ?? monotonicClock;
    this.#clock = clock;
    this.#cache = new LRUCache<string, JwksKeySet>({
      max: 1,
      ttl: options.cacheDurationMs,
      // The cache's TTL on the same clock; a clock of the test's own is read every time
      // (lru-cache otherwise keeps one reading for a millisecond of real time).
      ...(clock === monotonicClock ? {} : { perf: { now: clock }, ttlResolution: 0 }),
      allowStale: true,
      noDeleteOnStaleGet: true,
      allowStaleOnFetchRejection: true,
      noDeleteOnFetchRejection: true,
      fetchMethod: () => this.#fetch(),
    });
  }

  /** Counts this URI's fetches in a filter's stats too (at compile time; a stat is kept once). */
  countIn(success: Stat, failed: Stat): void {
    this.#successStats.add(success);
    this.#failedStats.add(failed);
  }

  /** A reload may change the rule's timeout; the cached keys stay. */
  set timeoutMs(ms: number) {
    this.#timeoutMs = ms;
  }

  /** Fetches started so far (tests and stats). */
  get fetches(): number {
    return this.#fetches;
  }

  /** Fetches that failed so far. */
  get failures(): number {
    return this.#failures;
  }

  current(): JwksKeySet | null {
    const keys = this.#cache.get(this.uri);
    if (keys === undefined) return null;
    if (this.#pending === 0 && this.#cache.getRemainingTTL(this.uri) <= 0 && this.#mayRetry()) {
      // Serve the stale keys now; lru-cache runs one background fetch and keeps them if it fails.
      this.#cache.fetch(this.uri).catch(() => {});
    }
    return keys;
  }

  load(): Promise<JwksKeySet | null> {
    const keys = this.#cache.get(this.uri);
    if (keys !== undefined) return Promise.resolve(keys);
    // Right after a failed first fetch, fail fast instead of refetching for every request.
    if (this.#pending === 0 && !this.#mayRetry()) return Promise.resolve(null);
    return this.#cache.fetch(this.uri).then(
      (k) => k ?? null,
      () => null,
    );
  }

  refreshForUnknownKid(): Promise<JwksKeySet | null> | null {
    if (this.#kidRefresh !== null) return this.#kidRefresh;
    const now = this.#clock();
    if (now - this.#lastKidRefresh < this.#minRefreshIntervalMs || !this.#mayRetry()) return null;
    this.#lastKidRefresh = now;
    const p = this.#cache
      .fetch(this.uri, { forceRefresh: true, allowStale: false })
      .then(
        (k) => k ?? null,
        () => null,
      )
      .finally(() => {
        this.#kidRefresh = null;
      });
    this.#kidRefresh = p;
    return p;
  }

  #mayRetry(): boolean {
    return this.#clock() - this.#lastFailure >= this.#minRefreshIntervalMs;
  }

  async #fetch(): Promise<JwksKeySet> {
    this.#fetches++;
    this.#pending++;
    try {
      const res = await fetch(this.uri, { signal: AbortSignal.timeout(this.#timeoutMs), headers: { accept: 'application/json' } });
      const text = await res.text();
      // Envoy's JwksFetcher takes a 200 only.
      if (res.status !== 200) throw new Error(`HTTP status ${res.status}`);
      const keys = parseJwks(text);
      if (typeof keys === 'string') throw new Error(keys);
      for (const s of this.#successStats) s.value++;
      return keys;
    } catch (err) {
      this.#failures++;
      for (const s of this.#failedStats) s.value++;
      this.#lastFailure = this.#clock();
      const e = err as Error;
      this.#warn(`JWKS fetch from ${this.uri} failed: ${e.name === 'TimeoutError' ? `timed out after ${this.#timeoutMs} ms` : (e.cause as Error | undefined)?.message ?? e.message}`);
      throw err;
    } finally {
      this.#pending--;
    }
  }
}
