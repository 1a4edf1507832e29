// What the kernel says about a process tree (CPU time, resident memory) and about each core.
// Everything is read from /proc: no sampling agent of ours runs on the proxy's core.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

const CLK_TCK = Number(getconf('CLK_TCK', '100'));
const PAGE_SIZE = Number(getconf('PAGESIZE', '4096'));

function getconf(name: string, fallback: string): string {
  try {
    return execFileSync('getconf', [name], { encoding: 'utf8' }).trim() || fallback;
  } catch {
    return fallback;
  }
}

interface ProcStat {
  readonly pid: number;
  readonly ppid: number;
  /** utime + stime + cutime + cstime, in clock ticks: reaped children's time moves into the parent's c* fields, so the sum over a tree survives a child exiting between two reads. */
  readonly cpuTicks: number;
  readonly rssPages: number;
}

function readStat(pid: number): ProcStat | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state): field n is f[n - 3].
  const num = (n: number): number => Number(f[n - 3]);
  return { pid, ppid: num(4), cpuTicks: num(14) + num(15) + num(16) + num(17), rssPages: num(24) };
}

/** The stats of `root` and all its descendants (this kernel has no /proc/<pid>/task/<tid>/children, so /proc is scanned). */
function treeStats(root: number): ProcStat[] {
  const byParent = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    const stat = readStat(pid);
    if (stat === null) continue;
    const siblings = byParent.get(stat.ppid);
    if (siblings) siblings.push(pid);
    else byParent.set(stat.ppid, [pid]);
  }
  const out: ProcStat[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.pop() as number;
    const stat = readStat(pid);
    if (stat === null) continue;
    out.push(stat);
    queue.push(...(byParent.get(pid) ?? []));
  }
  return out;
}

/** CPU seconds (user + system) used so far by `root` and every process under it. */
export function treeCpuSeconds(root: number): number {
  let ticks = 0;
  for (const s of treeStats(root)) ticks += s.cpuTicks;
  return ticks / CLK_TCK;
}

/** Resident memory of `root` and every process under it, in bytes (shared pages count once per process, as `ps` would). */
export function treeRssBytes(root: number): number {
  let pages = 0;
  for (const s of treeStats(root)) pages += s.rssPages;
  return pages * PAGE_SIZE;
}

/** How many processes the tree holds (Remora may fork workers). */
export function treeSize(root: number): number {
  return treeStats(root).length;
}

/** Clock ticks of each core, from /proc/stat. */
export interface CoreTicks {
  /** Everything but idle and iowait. */
  readonly busy: number;
  /** user + nice + system: time in tasks, which the kernel also charges to processes (irq, softirq and steal are not). */
  readonly tasks: number;
  /** Time the hypervisor ran something else while this (virtual) core had work: every task on it stood still. */
  readonly steal: number;
  readonly total: number;
}

export function coreTicks(): Map<number, CoreTicks> {
  const out = new Map<number, CoreTicks>();
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d+) (.*)$/.exec(line);
    if (m === null) continue;
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user.
    const v = (m[2] as string).trim().split(/\s+/).map(Number);
    const at = (i: number): number => v[i] ?? 0;
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    out.set(Number(m[1]), { busy: total - at(3) - at(4), tasks: at(0) + at(1) + at(2), steal: at(7), total });
  }
  return out;
}

/** Fraction of time a core was busy between two `coreTicks()` reads (`tasks`: in tasks only; `steal`: taken by the hypervisor). */
export function coreBusy(before: Map<number, CoreTicks>, after: Map<number, CoreTicks>, cpu: number, what: 'busy' | 'tasks' | 'steal' = 'busy'): number {
  const a = before.get(cpu);
  const b = after.get(cpu);
  if (a === undefined || b === undefined || b.total === a.total) return 0;
  return (b[what] - a[what]) / (b.total - a.total);
}

/**
 * Waits until each of `cpus` (all cores when empty) is under `threshold` busy over one second,
 * for at most `maxSeconds`: other people's builds on a shared machine would land in the figures.
 * Returns how busy the busiest core was in the last second looked at.
 */
export async function waitForQuiet(cpus: readonly number[], threshold: number, maxSeconds: number): Promise<number> {
  const deadline = Date.now() + maxSeconds * 1000;
  let busiest = 1;
  do {
    const before = coreTicks();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const after = coreTicks();
    const list = cpus.length > 0 ? cpus : [...after.keys()];
    busiest = Math.max(...list.map((c) => coreBusy(before, after, c)));
    if (busiest < threshold) return busiest;
  } while (Date.now() < deadline);
  return busiest;
}

/** Samples a tree's RSS every `intervalMs` and keeps the maximum; for the duration of a load run. */
export class RssSampler {
  readonly #root: number;
  readonly #timer: NodeJS.Timeout;
  #max = 0;

  constructor(root: number, intervalMs: number) {
    this.#root = root;
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), intervalMs);
  }

  #sample(): void {
    const rss = treeRssBytes(this.#root);
    if (rss > this.#max) this.#max = rss;
  }

  /** Stops sampling (after a last sample) and returns the maximum seen. */
  stop(): number {
    clearInterval(this.#timer);
    this.#sample();
    return this.#max;
  }
}
