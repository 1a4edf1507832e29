/**
 * Turns ajv's raw errors into one readable problem per real mistake: unknown fields named with
 * their path, types and enums spelled out, and Istio's "at most one of" oneOf constructs as a
 * single sentence instead of a cascade of branch failures.
 */
import type { ErrorObject } from 'ajv';

/** A schema problem: `parts` is the field path inside the document. */
export interface SchemaProblem {
  readonly parts: readonly (string | number)[];
  readonly message: string;
}

const COMPOSITE = new Set(['oneOf', 'anyOf', 'not']);

export function describeErrors(errors: readonly ErrorObject[], document: unknown): SchemaProblem[] {
  // Branch errors of a failed oneOf/anyOf/not only explain why a branch did not match; the
  // composite error itself stands for them.
  const composites = errors.filter((e) => COMPOSITE.has(e.keyword)).map((e) => e.schemaPath + '/');
  const out: SchemaProblem[] = [];
  const seen = new Set<string>();
  for (const e of errors) {
    if (composites.some((prefix) => e.schemaPath.startsWith(prefix))) continue;
    const problem = describe(e, document);
    const key = JSON.stringify(problem.parts) + '\0' + problem.message;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(problem);
  }
  return out;
}

function describe(e: ErrorObject, document: unknown): SchemaProblem {
  const parts = pointerParts(e.instancePath, document);
  const params = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'additionalProperties': {
      const name = String(params.additionalProperty);
      const known = Object.keys(((e.parentSchema ?? {}) as { properties?: object }).properties ?? {});
      const guess = closest(name, known);
      return {
        parts: [...parts, name],
        message: `unknown field ${JSON.stringify(name)}` + (guess === null ? '' : `; did you mean ${JSON.stringify(guess)}?`),
      };
    }
    case 'required':
      return { parts: [...parts, String(params.missingProperty)], message: 'is required' };
    case 'type':
      return { parts, message: `must be ${String(params.type).replace(',', ' or ')}, got ${describeValue(e.data)}` };
    case 'enum': {
      const allowed = ((params.allowedValues ?? []) as unknown[]).filter((v) => v !== null).map(String);
      return { parts, message: `must be one of ${allowed.join(', ')}; got ${describeValue(e.data)}` };
    }
    case 'format':
      return { parts, message: `must be ${FORMAT_TEXT[String(params.format)] ?? `in format ${String(params.format)}`}, got ${describeValue(e.data)}` };
    case 'minimum':
    case 'maximum':
      return { parts, message: `must be ${String(params.comparison)} ${String(params.limit)}, got ${describeValue(e.data)}` };
    case 'oneOf':
      return { parts, message: describeOneOf(e) };
    default:
      return { parts, message: e.message ?? `fails ${e.keyword}` };
  }
}

const FORMAT_TEXT: Readonly<Record<string, string>> = {
  int32: 'a 32-bit integer',
  uint32: 'an unsigned 32-bit integer',
  int64: 'a 64-bit integer',
};

/**
 * Istio writes "at most one of a, b, c" as
 * `oneOf: [{not: {anyOf: [{required: [a]}, …]}}, {required: [a]}, {required: [b]}, …]`;
 * it fails exactly when two or more of the fields are set.
 */
function describeOneOf(e: ErrorObject): string {
  const branches = Array.isArray(e.schema) ? (e.schema as { required?: unknown }[]) : [];
  const names: string[] = [];
  for (const b of branches.slice(1)) {
    const req = b.required;
    if (Array.isArray(req) && req.length === 1 && typeof req[0] === 'string') names.push(req[0]);
  }
  if (names.length === 0 || names.length !== branches.length - 1) return 'must match exactly one of the allowed forms';
  const data = e.data;
  const found =
    typeof data === 'object' && data !== null ? names.filter((n) => Object.hasOwn(data, n)) : [];
  return `only one of ${names.join(', ')} may be set` + (found.length > 1 ? ` (found ${found.join(', ')})` : '');
}

export function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  switch (typeof v) {
    case 'string':
      return `string ${JSON.stringify(v.length > 60 ? v.slice(0, 57) + '...' : v)}`;
    case 'number':
    case 'boolean':
      return `${typeof v} ${String(v)}`;
    case 'object':
      return 'object';
    default:
      return typeof v;
  }
}

/** JSON pointer → path parts; array indexes become numbers (as `Resource.lineOf` expects). */
function pointerParts(pointer: string, document: unknown): (string | number)[] {
  if (pointer === '') return [];
  const parts: (string | number)[] = [];
  let node: unknown = document;
  for (const raw of pointer.slice(1).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(node)) {
      const index = Number(key);
      parts.push(index);
      node = node[index];
    } else {
      parts.push(key);
      node = typeof node === 'object' && node !== null ? (node as Record<string, unknown>)[key] : undefined;
    }
  }
  return parts;
}

/** The known field closest to a misspelt one (edit distance ≤ 2), for "did you mean". */
function closest(name: string, known: readonly string[]): string | null {
  let best: string | null = null;
  let bestDistance = 3;
  const lower = name.toLowerCase();
  for (const k of known) {
    const d = editDistance(lower, k.toLowerCase());
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2) return 3;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost);
    }
    prev = cur;
  }
  return prev[b.length] ?? 3;
}
