/**
 * Small records in one `SharedArrayBuffer`, found by a string key, for state that every
 * worker thread of one proxy must see alike (Envoy's per-cluster circuit-breaker counts,
 * local rate-limit token buckets). A record is claimed the first time any thread asks for its
 * key and then found by every other thread under the same key; it is never moved, so a thread
 * keeps its index and touches only numbers on the hot path.
 *
 * Layout of a record, in 32-bit words: 0 state (0 free, 1 being claimed, 2 ready), 1–2 the
 * key's two 32-bit hashes, 3 a lock word for updates that touch several fields, 4 the number
 * of holders, 5–7 integers for the owner; words 8–15 are four doubles for the owner
 * (`f64[index * 2 + 4 .. + 7]`). Keys are told apart by 64 bits of hash: two keys that collide
 * in all 64 would share a record, as unlikely as it is harmless for counters.
 */

/** 32-bit words per record. */
export const CELL_WORDS = 16;
/** The first owner integer word (5, 6, 7 are free for the owner). */
export const CELL_INT = 5;
/** The first owner double, in Float64 units from the record's start (4 .. 7). */
export const CELL_F64 = 4;
const STATE = 0;
const H1 = 1;
const H2 = 2;
const LOCK = 3;
const REFS = 4;
const FREE = 0;
const CLAIMING = 1;
const READY = 2;

/** What a worker is given to find the same records: the memory (structured-clone shares it). */
export interface SharedCellsInit {
  readonly buffer: SharedArrayBuffer;
}

export class SharedCells {
  readonly buffer: SharedArrayBuffer;
  readonly i32: Int32Array;
  readonly f64: Float64Array;
  readonly capacity: number;

  constructor(init: SharedCellsInit) {
    this.buffer = init.buffer;
    this.i32 = new Int32Array(init.buffer);
    this.f64 = new Float64Array(init.buffer);
    this.capacity = Math.floor(this.i32.length / CELL_WORDS);
  }

  /** New shared memory for `capacity` records. */
  static create(capacity = 8192): SharedCells {
    return new SharedCells({ buffer: new SharedArrayBuffer(capacity * CELL_WORDS * 4) });
  }

  get init(): SharedCellsInit {
    return { buffer: this.buffer };
  }

  /**
   * The record of `key`, counted as held once more; `fresh` is called (before any other
   * thread sees the record as held) when nobody held it, so the owner can set its starting
   * values. Returns the record's first word index, or -1 when the memory is full.
   */
  acquire(key: string, fresh: (base: number) => void): number {
    const a = hash(key, 0x811c9dc5);
    const b = hash(key, 0x01000193) | 1;
    const i32 = this.i32;
    const n = this.capacity;
    let slot = (a >>> 0) % n;
    for (let probe = 0; probe < n; probe++, slot = slot + 1 === n ? 0 : slot + 1) {
      const base = slot * CELL_WORDS;
      let state = Atomics.load(i32, base + STATE);
      if (state === FREE) {
        if (Atomics.compareExchange(i32, base + STATE, FREE, CLAIMING) === FREE) {
          Atomics.store(i32, base + H1, a);
          Atomics.store(i32, base + H2, b);
          Atomics.store(i32, base + STATE, READY);
          Atomics.notify(i32, base + STATE);
        }
        state = Atomics.load(i32, base + STATE);
      }
      // Another thread is writing this record's key: wait for it (a few instructions).
      while (state === CLAIMING) {
        Atomics.wait(i32, base + STATE, CLAIMING, 1);
        state = Atomics.load(i32, base + STATE);
      }
      if (Atomics.load(i32, base + H1) !== a || Atomics.load(i32, base + H2) !== b) continue;
      this.lock(base);
      if (i32[base + REFS]! === 0) fresh(base);
      i32[base + REFS]!++;
      this.unlock(base);
      return base;
    }
    return -1;
  }

  /** One holder fewer; the record starts afresh for the next `acquire` once none is left. */
  release(base: number): void {
    this.lock(base);
    if (this.i32[base + REFS]! > 0) this.i32[base + REFS]!--;
    this.unlock(base);
  }

  /** Holders of the record now (tests, stats). */
  holders(base: number): number {
    return Atomics.load(this.i32, base + REFS);
  }

  /**
   * Takes the record's lock: updates of several fields inside are seen whole by other threads.
   * A futex mutex (0 free, 1 held, 2 held with waiters): uncontended, one compare-exchange to
   * take it and one subtraction to give it back, no wake-up call.
   */
  lock(base: number): void {
    const i32 = this.i32;
    const at = base + LOCK;
    let c = Atomics.compareExchange(i32, at, 0, 1);
    if (c === 0) return;
    do {
      if (c === 2 || Atomics.compareExchange(i32, at, 1, 2) !== 0) Atomics.wait(i32, at, 2);
    } while ((c = Atomics.compareExchange(i32, at, 0, 2)) !== 0);
  }

  unlock(base: number): void {
    const at = base + LOCK;
    if (Atomics.sub(this.i32, at, 1) !== 1) {
      Atomics.store(this.i32, at, 0);
      Atomics.notify(this.i32, at, 1);
    }
  }
}

/** FNV-1a over the key's UTF-16 code units, from `seed`. */
function hash(key: string, seed: number): number {
  let h = seed | 0;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // Mix the two seeds apart a little more (the second hash starts from the prime).
  h ^= h >>> 15;
  return Math.imul(h, 0x2c1b3c6d) | 0;
}
