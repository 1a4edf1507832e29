/**
 * The live view's numbers: every request the access log sees is counted on the edges it
 * crossed — listener → route configuration → cluster → endpoint — in a ring of one-second
 * slots, with a latency histogram and response flag counts per slot. Edges are made once,
 * the first time a pair is seen; counting a request allocates nothing (nested maps keyed by
 * strings the request already holds, typed arrays filled in place). The last access log lines
 * are kept in a small ring while someone is watching (`/ui/data` polled in the last minute).
 * With worker threads each keeps its own window; the admin thread merges their states
 * (`state()`, `LiveWindow.merged`) when the page asks.
 */
import { formatText, type AccessLogRecord } from '../telemetry/access-log.ts';
import { ActiveStream } from '../http/active-stream.ts';
import { ResponseFlag, type ResponseFlagName } from '../telemetry/response-flags.ts';

/** Seconds of history kept per edge. */
export const WINDOW_SLOTS = 60;
/** Latency histogram bucket upper bounds in ms: 0.25 ms × 1.3^i, up to about a minute. */
const BOUNDS: Float64Array = (() => {
  const b: number[] = [];
  for (let v = 0.25; v < 120_000; v *= 1.3) b.push(v);
  return Float64Array.from(b);
})();
const NB = BOUNDS.length + 1;
const FLAG_NAMES = Object.keys(ResponseFlag) as ResponseFlagName[];
const NF = FLAG_NAMES.length;
/**
 * At most this many edges are kept (about 17 KiB each): past it, edges idle for the whole
 * window are dropped, and a new edge is not counted while every kept one is busy (a
 * passthrough cluster reaching many destinations must not grow the proxy).
 */
export const MAX_EDGES = 512;
/** Access log lines kept for the page. */
export const LOG_RING = 200;
/** The ring is filled only this long after the page last asked for data. */
const WATCH_MS = 60_000;

/** One edge's ring of per-second counts. */
export class EdgeWindow {
  readonly #second = new Float64Array(WINDOW_SLOTS).fill(-1);
  readonly #requests = new Float64Array(WINDOW_SLOTS);
  readonly #errors = new Float64Array(WINDOW_SLOTS);
  readonly #latency = new Uint32Array(WINDOW_SLOTS * NB);
  readonly #flags = new Uint32Array(WINDOW_SLOTS * NF);
  total = 0;
  /** The second of the last request counted. */
  lastSecond = -1;

  /** The ring as it is (the arrays themselves: post or merge them at once). */
  state(from: string, to: string): EdgeState {
    return { from, to, total: this.total, lastSecond: this.lastSecond, second: this.#second, requests: this.#requests, errors: this.#errors, latency: this.#latency, flags: this.#flags };
  }

  /** Adds another window's ring slot by slot: the same second adds up, else the newer second wins. */
  merge(o: EdgeState): void {
    for (let s = 0; s < WINDOW_SLOTS; s++) {
      const sec = o.second[s]!;
      if (sec < 0 || sec < this.#second[s]!) continue;
      if (sec > this.#second[s]!) {
        this.#second[s] = sec;
        this.#requests[s] = o.requests[s]!;
        this.#errors[s] = o.errors[s]!;
        this.#latency.set(o.latency.subarray(s * NB, s * NB + NB), s * NB);
        this.#flags.set(o.flags.subarray(s * NF, s * NF + NF), s * NF);
        continue;
      }
      this.#requests[s]! += o.requests[s]!;
      this.#errors[s]! += o.errors[s]!;
      for (let b = s * NB; b < s * NB + NB; b++) this.#latency[b]! += o.latency[b]!;
      for (let f = s * NF; f < s * NF + NF; f++) this.#flags[f]! += o.flags[f]!;
    }
    this.total += o.total;
    if (o.lastSecond > this.lastSecond) this.lastSecond = o.lastSecond;
  }

  record(second: number, status: number, flags: number, ms: number): void {
    this.count(second, status, flags, latencyBucket(ms));
  }

  /** `record` with the latency's bucket already found (one request counts on up to three edges). */
  count(second: number, status: number, flags: number, bucket: number): void {
    this.lastSecond = second;
    const s = second % WINDOW_SLOTS;
    if (this.#second[s] !== second) {
      this.#second[s] = second;
      this.#requests[s] = 0;
      this.#errors[s] = 0;
      this.#latency.fill(0, s * NB, s * NB + NB);
      this.#flags.fill(0, s * NF, s * NF + NF);
    }
    this.total++;
    this.#requests[s]!++;
    if (status >= 500 || status === 0) this.#errors[s]!++;
    this.#latency[s * NB + bucket]!++;
    if (flags !== 0) for (let f = 0; f < NF; f++) if (flags & (1 << f)) this.#flags[s * NF + f]!++;
  }

  /** Rates and percentiles over the last `seconds` whole seconds before `nowSecond` (and the current one). */
  summary(nowSecond: number, seconds: number): EdgeSummary {
    let requests = 0;
    let errors = 0;
    const hist = new Float64Array(NB);
    const flags = new Float64Array(NF);
    for (let i = 0; i < seconds && i < WINDOW_SLOTS; i++) {
      const sec = nowSecond - i;
      const s = ((sec % WINDOW_SLOTS) + WINDOW_SLOTS) % WINDOW_SLOTS;
      if (this.#second[s] !== sec) continue;
      requests += this.#requests[s]!;
      errors += this.#errors[s]!;
      for (let b = 0; b < NB; b++) hist[b]! += this.#latency[s * NB + b]!;
      for (let f = 0; f < NF; f++) flags[f]! += this.#flags[s * NF + f]!;
    }
    const flagCounts: Record<string, number> = {};
    for (let f = 0; f < NF; f++) if (flags[f]! > 0) flagCounts[FLAG_NAMES[f]!] = flags[f]!;
    return {
      requests,
      rps: Math.round((requests / seconds) * 100) / 100,
      errorRate: requests === 0 ? 0 : Math.round((errors / requests) * 10000) / 10000,
      p50Ms: percentile(hist, requests, 0.5),
      p99Ms: percentile(hist, requests, 0.99),
      flags: flagCounts,
      total: this.total,
    };
  }
}

export interface EdgeSummary {
  /** Requests in the window. */
  readonly requests: number;
  readonly rps: number;
  /** 5xx (and resets) over requests, 0–1. */
  readonly errorRate: number;
  /** Bucket upper bounds (ms): within 30% of the true value; null without requests. */
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
  readonly flags: Readonly<Record<string, number>>;
  /** Requests since the proxy started. */
  readonly total: number;
}

/** The latency histogram bucket of `ms`: the first bound not below it, or the last (overflow) bucket. */
function latencyBucket(ms: number): number {
  let b = 0;
  while (b < BOUNDS.length && ms > BOUNDS[b]!) b++;
  return b;
}

function percentile(hist: Float64Array, n: number, q: number): number | null {
  if (n === 0) return null;
  const want = Math.ceil(n * q);
  let seen = 0;
  for (let b = 0; b < NB; b++) {
    seen += hist[b]!;
    if (seen >= want) return b < BOUNDS.length ? Math.round(BOUNDS[b]! * 100) / 100 : Infinity;
  }
  return null;
}

/** One edge's ring as plain data (structured clone carries it between threads). */
export interface EdgeState {
  readonly from: string;
  readonly to: string;
  readonly total: number;
  readonly lastSecond: number;
  readonly second: Float64Array;
  readonly requests: Float64Array;
  readonly errors: Float64Array;
  readonly latency: Uint32Array;
  readonly flags: Uint32Array;
}

/** A whole window as plain data: its edges and its kept access log lines with their times (ms), oldest first. */
export interface LiveWindowState {
  readonly listenerToRoutes: readonly EdgeState[];
  readonly routesToClusters: readonly EdgeState[];
  readonly clustersToEndpoints: readonly EdgeState[];
  readonly log: readonly string[];
  readonly logAt: readonly number[];
}

/** Edges by `from` then `to` name. */
type EdgeMap = Map<string, Map<string, EdgeWindow>>;

/** The node a request without a route goes to (404 NR), beside the route configurations. */
export const NO_ROUTE = '(no route)';

export class LiveWindow {
  readonly listenerToRoutes: EdgeMap = new Map();
  readonly routesToClusters: EdgeMap = new Map();
  readonly clustersToEndpoints: EdgeMap = new Map();
  readonly #ring: string[] = new Array<string>(LOG_RING).fill('');
  /** When each kept line was recorded (ms), to merge several windows' lines in order. */
  readonly #ringAt = new Float64Array(LOG_RING);
  #ringNext = 0;
  #ringSize = 0;
  #watchedUntil = 0;
  #edges = 0;
  /** The second of the last sweep for idle edges: at most one a second. */
  #sweptAt = -1;
  readonly #clock: () => number;

  constructor(clock: () => number = Date.now) {
    this.#clock = clock;
  }

  /** The access log's tap: counts the request on its edges. */
  record(r: AccessLogRecord): void {
    const now = this.#clock();
    if (now < this.#watchedUntil) {
      this.#ring[this.#ringNext] = formatText(r);
      this.#ringAt[this.#ringNext] = now;
      this.#ringNext = (this.#ringNext + 1) % LOG_RING;
      if (this.#ringSize < LOG_RING) this.#ringSize++;
    }
    if (!(r instanceof ActiveStream)) return;
    const second = Math.floor(now / 1000);
    const status = r.responseCode;
    const flags = r.responseFlags;
    const bucket = latencyBucket(r.durationMs);
    const listener = r.snapshot.listener.name;
    const route = r.route;
    const rc = route === null ? NO_ROUTE : route.routeConfig;
    this.#edgeOf(this.listenerToRoutes, listener, rc, second)?.count(second, status, flags, bucket);
    const cluster = r.cluster;
    if (cluster === null) {
      // Answered before a cluster was reached (a fault abort, a filter's reply): charged to
      // the route's cluster when it has only one, as Istio's metrics charge it.
      const t = route?.target;
      if (t !== undefined && t.kind === 'forward' && t.targets.length === 1) this.#edgeOf(this.routesToClusters, rc, t.targets[0]!.name, second)?.count(second, status, flags, bucket);
      return;
    }
    this.#edgeOf(this.routesToClusters, rc, cluster.name, second)?.count(second, status, flags, bucket);
    const host = r.clusterHost;
    if (host !== null) this.#edgeOf(this.clustersToEndpoints, cluster.name, host.host.hostPort, second)?.count(second, status, flags, bucket);
  }

  /** The edge, made on first sight; null when MAX_EDGES are kept and none is idle. */
  #edgeOf(map: EdgeMap, from: string, to: string, second: number): EdgeWindow | null {
    let inner = map.get(from);
    const e = inner?.get(to);
    if (e !== undefined) return e;
    if (this.#edges >= MAX_EDGES) {
      if (this.#sweptAt === second) return null;
      this.#sweptAt = second;
      if (this.#dropIdle(second) === 0) return null;
    }
    if (inner === undefined) map.set(from, (inner = new Map()));
    const made = new EdgeWindow();
    inner.set(to, made);
    this.#edges++;
    return made;
  }

  /** Drops the edges without a request in the whole window; returns how many. */
  #dropIdle(second: number): number {
    let dropped = 0;
    for (const map of [this.listenerToRoutes, this.routesToClusters, this.clustersToEndpoints]) {
      for (const [from, inner] of map) {
        for (const [to, e] of inner) {
          if (second - e.lastSecond < WINDOW_SLOTS) continue;
          inner.delete(to);
          dropped++;
        }
        if (inner.size === 0) map.delete(from);
      }
    }
    this.#edges -= dropped;
    return dropped;
  }

  /** Edges kept now. */
  get edgeCount(): number {
    return this.#edges;
  }

  /** The page asked for data: keep access log lines for a while. */
  watched(): void {
    this.#watchedUntil = this.#clock() + WATCH_MS;
  }

  /** The kept access log lines, oldest first. */
  logLines(): string[] {
    const out: string[] = [];
    const start = (this.#ringNext - this.#ringSize + LOG_RING) % LOG_RING;
    for (let i = 0; i < this.#ringSize; i++) out.push(this.#ring[(start + i) % LOG_RING]!.trimEnd());
    return out;
  }

  /** This window as plain data, for the admin thread to merge (`merged`); built only when the page asks. */
  state(): LiveWindowState {
    const edges = (map: EdgeMap): EdgeState[] => {
      const out: EdgeState[] = [];
      for (const [from, inner] of map) for (const [to, e] of inner) out.push(e.state(from, to));
      return out;
    };
    const logAt: number[] = [];
    const start = (this.#ringNext - this.#ringSize + LOG_RING) % LOG_RING;
    for (let i = 0; i < this.#ringSize; i++) logAt.push(this.#ringAt[(start + i) % LOG_RING]!);
    return {
      listenerToRoutes: edges(this.listenerToRoutes),
      routesToClusters: edges(this.routesToClusters),
      clustersToEndpoints: edges(this.clustersToEndpoints),
      log: this.logLines(),
      logAt,
    };
  }

  /**
   * One window of several (each worker's): edges merged slot by slot (the same second adds
   * up, else the newer second wins), totals added, and the newest LOG_RING lines of all in
   * the order they were recorded.
   */
  static merged(states: readonly LiveWindowState[], clock: () => number = Date.now): LiveWindow {
    const w = new LiveWindow(clock);
    const into = (map: EdgeMap, list: readonly EdgeState[]): void => {
      for (const e of list) {
        let inner = map.get(e.from);
        if (inner === undefined) map.set(e.from, (inner = new Map()));
        let mine = inner.get(e.to);
        if (mine === undefined) {
          inner.set(e.to, (mine = new EdgeWindow()));
          w.#edges++;
        }
        mine.merge(e);
      }
    };
    const lines: { at: number; line: string }[] = [];
    for (const s of states) {
      into(w.listenerToRoutes, s.listenerToRoutes);
      into(w.routesToClusters, s.routesToClusters);
      into(w.clustersToEndpoints, s.clustersToEndpoints);
      for (let i = 0; i < s.log.length; i++) lines.push({ at: s.logAt[i]!, line: s.log[i]! });
    }
    // Stable: lines of the same millisecond keep each window's order.
    lines.sort((a, b) => a.at - b.at);
    for (const { at, line } of lines.slice(-LOG_RING)) {
      w.#ring[w.#ringNext] = line;
      w.#ringAt[w.#ringNext] = at;
      w.#ringNext = (w.#ringNext + 1) % LOG_RING;
      if (w.#ringSize < LOG_RING) w.#ringSize++;
    }
    return w;
  }

  nowSecond(): number {
    return Math.floor(this.#clock() / 1000);
  }
}
