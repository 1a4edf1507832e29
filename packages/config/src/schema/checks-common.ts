/**
 * What every semantic check shares: the report findings go to, typed accessors over a
 * schema-checked spec, and field rules used by several kinds (durations, ports, labels, ...).
 */
import { parseDuration } from './duration.ts';
import { checkLabels, checkPort, isDNS1123Label } from './names.ts';
import { checkRegex } from './regex.ts';

export type Path = readonly (string | number)[];
export type Obj = Readonly<Record<string, unknown>>;

/** One semantic problem, located by its field path in the document. */
export interface CheckFinding {
  readonly severity: 'error' | 'warning';
  readonly path: Path;
  readonly message: string;
}

export class Report {
  readonly findings: CheckFinding[] = [];
  error(path: Path, message: string | null): void {
    if (message !== null) this.findings.push({ severity: 'error', path, message });
  }
  warn(path: Path, message: string | null): void {
    if (message !== null) this.findings.push({ severity: 'warning', path, message });
  }
}

// Accessors: the schema guarantees types; absent and null read as proto defaults.

export function obj(v: unknown): Obj | null {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : null;
}
export function list(v: unknown): readonly unknown[] {
  return Array.isArray(v) ? v : [];
}
export function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}
export function num(v: unknown): number {
  return typeof v === 'number' ? v : 0;
}
export function isSet(v: unknown): boolean {
  return v !== undefined && v !== null;
}
export function strings(v: unknown): readonly string[] {
  return list(v).filter((x): x is string => typeof x === 'string');
}
export const entries = (v: unknown): [string, unknown][] => Object.entries(obj(v) ?? {});

// Field rules shared by several kinds.

/**
 * A duration field: must parse; `positive` (Istio's `ValidateDuration`) also requires ≥ 1ms
 * and millisecond precision.
 */
export function duration(r: Report, path: Path, value: unknown, positive: boolean): number | null {
  if (typeof value !== 'string') return null;
  const ms = parseDuration(value);
  if (ms === null) {
    r.error(path, `invalid duration ${JSON.stringify(value)}: use a number and a unit (ms, s, m, h), like "1.5s"`);
    return null;
  }
  if (positive && ms < 1) r.error(path, `duration must be at least 1ms, got ${JSON.stringify(value)}`);
  else if (positive && !Number.isInteger(ms)) r.error(path, `only durations to ms precision are supported, got ${JSON.stringify(value)}`);
  return ms;
}

export function percent(r: Report, path: Path, value: unknown): void {
  if (typeof value === 'number' && (value < 0 || value > 100)) r.error(path, `percentage ${value} is not in range 0..100`);
}

/** `networking.Percent`: 0, or 0.0001 to 100. */
export function fractionalPercent(r: Report, path: Path, percentage: unknown): void {
  const p = obj(percentage);
  if (p === null) return;
  const v = num(p.value);
  if (v < 0 || v > 100 || (v > 0 && v < 0.0001)) r.error([...path, 'value'], `percentage ${v} is neither 0.0, nor in range [0.0001, 100.0]`);
}

export function port(r: Report, path: Path, value: unknown): void {
  r.error(path, checkPort(num(value)));
}

export function labels(r: Report, path: Path, value: unknown): void {
  const m = obj(value);
  if (m !== null) for (const msg of checkLabels(m)) r.error(path, msg);
}

export function regex(r: Report, path: Path, value: unknown): void {
  if (typeof value === 'string') r.error(path, checkRegex(value));
}

export function subsetName(name: string): string | null {
  if (name === '') return 'subset name cannot be empty';
  return isDNS1123Label(name) ? null : `subset name is invalid: ${name}`;
}

export function portName(name: string): string | null {
  return isDNS1123Label(name) ? null : `invalid port name: ${JSON.stringify(name)}`;
}

export function workloadSelector(r: Report, path: Path, selector: unknown, labelsField: string): void {
  const sel = obj(selector);
  if (sel === null) return;
  const m = entries(sel[labelsField]);
  for (const [k, v] of m) {
    if (k === '') r.error([...path, labelsField], `empty key is not supported in selector: "=${str(v)}"`);
    if (k.includes('*') || str(v).includes('*')) r.error([...path, labelsField, k], `wildcard is not supported in selector: "${k}=${str(v)}"`);
  }
  if (m.length === 0) r.warn(path, 'workload selector specified without labels');
}
