/**
 * CEL expressions over Envoy's request attributes (`response.code >= 400`,
 * `request.headers['x-user']`), as Istio writes them into Envoy's CEL access-log filter and the
 * stats plugin's tag values. Parsed once when a config is read (a syntax error is an error
 * there, naming the field) and evaluated per request by the proxy; evaluation is
 * @marcbachmann/cel-js's.
 */
import { parse } from '@marcbachmann/cel-js';

/** A parsed expression: evaluates against an activation of attributes, throws on an evaluation error (a missing key, a type mismatch). */
export type CelProgram = (activation: Record<string, unknown>) => unknown;

/** Parses `expression`; throws an Error saying what is wrong with it. */
export function compileCel(expression: string): CelProgram {
  if (expression.trim() === '') throw new Error('a CEL expression must not be empty');
  try {
    return parse(expression) as CelProgram;
  } catch (err) {
    // The library's message carries a caret diagram over several lines; the first says it.
    const first = String((err as Error).message).split('\n')[0]!.trim();
    throw new Error(`invalid CEL expression ${JSON.stringify(expression)}: ${first}`);
  }
}

/**
 * The header names an expression can read from a headers map: its string literals and the
 * field names after `headers.`, lower-cased. The proxy puts only these in the map it hands
 * the expression, so evaluating costs no copy of every header.
 */
export function celHeaderNames(expression: string): string[] {
  const names = new Set<string>();
  for (const m of expression.matchAll(/'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"/g)) names.add((m[1] ?? m[2] ?? '').toLowerCase());
  for (const m of expression.matchAll(/headers\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)/g)) names.add(m[1]!.toLowerCase());
  names.delete('');
  return [...names];
}
