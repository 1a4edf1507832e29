import type { StatEntry } from './admin-stats.ts';

/**
 * Stats that describe a cluster or the process as a whole, the same whichever worker reads
 * them (membership, circuit-breaker state, outlier ejections decided on the main thread):
 * across workers they are not added up, the largest is taken.
 */
const WHOLE = /^server\.|\.membership_(total|healthy)$|\.circuit_breakers\.|\.outlier_detection\.|^overload\.active$/;

/** One `/stats` of the main thread's stats and every worker's: counters and gauges added up by name, except the ones above. */
export function mergeStats(main: readonly StatEntry[], workers: readonly (readonly StatEntry[])[]): StatEntry[] {
  const byName = new Map<string, { name: string; value: number; gauge: boolean }>();
  for (const list of [main, ...workers]) {
    for (const s of list) {
      const have = byName.get(s.name);
      if (have === undefined) byName.set(s.name, { name: s.name, value: s.value, gauge: s.gauge });
      else if (WHOLE.test(s.name)) have.value = Math.max(have.value, s.value);
      else have.value += s.value;
    }
  }
  const out = [...byName.values()];
  out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return out;
}

/** Prometheus families of the same whole-cluster facts, by name. */
const WHOLE_FAMILY = /^envoy_cluster_(outlier_detection_|membership_|circuit_breakers_)|^envoy_server_/;

interface Family {
  readonly comments: string[];
  readonly series: Map<string, number>;
  readonly whole: boolean;
}

/**
 * One Prometheus exposition of several (the main thread's and each worker's): families in
 * the order first seen, each with its HELP and TYPE once; a series (name and labels) seen
 * in several is added up, histogram buckets, sums and counts included, except the
 * whole-cluster families, whose largest value is kept.
 */
export function mergePrometheus(texts: readonly string[]): string {
  const families = new Map<string, Family>();
  for (const text of texts) {
    let current: Family | null = null;
    let currentName = '';
    for (const line of text.split('\n')) {
      if (line === '') continue;
      if (line.startsWith('#')) {
        const m = /^# (HELP|TYPE) (\S+)/.exec(line);
        if (m === null) continue;
        currentName = m[2]!;
        current = family(families, currentName);
        if (!current.comments.some((c) => c.startsWith(`# ${m[1]} `))) current.comments.push(line);
        continue;
      }
      const space = line.lastIndexOf(' ');
      if (space <= 0) continue;
      const key = line.slice(0, space);
      const value = Number(line.slice(space + 1));
      const name = key.replace(/\{.*$/, '');
      // A series outside its family's block (untyped text): a family of its own name.
      const f = current !== null && name.startsWith(currentName) ? current : family(families, name);
      const have = f.series.get(key);
      f.series.set(key, have === undefined ? value : f.whole ? Math.max(have, value) : have + value);
    }
  }
  let out = '';
  for (const f of families.values()) {
    if (f.series.size === 0 && f.comments.length === 0) continue;
    for (const c of f.comments) out += `${c}\n`;
    for (const [key, value] of f.series) out += `${key} ${formatValue(value)}\n`;
  }
  return out;
}

function family(families: Map<string, Family>, name: string): Family {
  let f = families.get(name);
  if (f === undefined) families.set(name, (f = { comments: [], series: new Map(), whole: WHOLE_FAMILY.test(name) }));
  return f;
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}
