// Prometheus text exposition as the tests read it: one sample per line, its labels unescaped
// no further than the tests need.
import { request } from './http.ts';
import type { InProcessRemora } from './remora.ts';

export interface PromSample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

/** Every sample of a Prometheus text body. */
export function parsePrometheus(text: string): PromSample[] {
  const out: PromSample[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** One scrape of a proxy's /stats/prometheus (its admin port). */
export async function scrape(remora: InProcessRemora): Promise<PromSample[]> {
  return parsePrometheus((await request(remora.ports.admin, '/stats/prometheus')).body);
}

/** The samples named `name` whose labels include `want`. */
export function find(samples: readonly PromSample[], name: string, want: Record<string, string>): PromSample[] {
  return samples.filter((s) => s.name === name && Object.entries(want).every(([k, v]) => s.labels[k] === v));
}
