/** Limits past which the proxy sheds new requests instead of falling over (0 = no limit). */
export interface OverloadLimits {
  /** Active downstream connections across all listeners. */
  readonly maxConnections: number;
  /** V8 heap in use, bytes. */
  readonly maxHeapBytes: number;
}

export const NO_OVERLOAD_LIMITS: OverloadLimits = { maxConnections: 0, maxHeapBytes: 0 };

/**
 * Envoy's overload manager, simplified: while the connection count or the heap is over its
 * limit, new requests get 503 with flag OM ("envoy overloaded"); requests already running
 * finish. The heap is sampled on a timer, never on the request path.
 */
export class OverloadManager {
  readonly limits: OverloadLimits;
  readonly #connections: () => number;
  #heapOver = false;
  #timer: NodeJS.Timeout | null = null;
  /** Requests shed, for /stats. */
  shed = 0;

  constructor(limits: OverloadLimits, connections: () => number, heapUsed: () => number = () => process.memoryUsage().heapUsed) {
    this.limits = limits;
    this.#connections = connections;
    if (limits.maxHeapBytes > 0) {
      const sample = (): void => {
        this.#heapOver = heapUsed() > limits.maxHeapBytes;
      };
      sample();
      this.#timer = setInterval(sample, 250);
      this.#timer.unref();
    }
  }

  /** Checked once per request: a couple of comparisons when limits are set, one when not. */
  get overloaded(): boolean {
    if (this.#heapOver) return true;
    const max = this.limits.maxConnections;
    return max > 0 && this.#connections() > max;
  }

  close(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
  }
}
