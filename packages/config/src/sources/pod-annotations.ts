/**
 * A pod's annotations as a proxy is given them: Kubernetes' downward API file (one
 * `key="value"` line each, the value quoted as Go's strconv.Quote writes it), or Istio's
 * agent's `ISTIO_METAJSON_ANNOTATIONS` (a JSON object of name to value).
 */
import type { ConfigIssue } from '../errors.ts';

export interface PodAnnotationsResult {
  readonly annotations: ReadonlyMap<string, string>;
  readonly issues: readonly ConfigIssue[];
}

const LINE = /^([^=\s]+)=(".*")\s*$/;

/** Reads a downward API annotations file's text; a line that is not `key="value"` is an error naming it. */
export function parseAnnotationsFile(text: string, file: string): PodAnnotationsResult {
  const annotations = new Map<string, string>();
  const issues: ConfigIssue[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '') return;
    const m = LINE.exec(line);
    let value: unknown = null;
    if (m !== null) {
      try {
        value = JSON.parse(m[2]!);
      } catch {
        value = null;
      }
    }
    if (m === null || typeof value !== 'string') {
      issues.push({ severity: 'error', file, line: i + 1, kind: 'Annotations', resource: 'pod', path: '', message: `expected key="value" (the downward API's format), found ${JSON.stringify(line.slice(0, 80))}` });
      return;
    }
    annotations.set(m[1]!, value);
  });
  return { annotations, issues };
}

/** Reads `ISTIO_METAJSON_ANNOTATIONS`: a JSON object of strings. */
export function parseAnnotationsJson(text: string, source: string): PodAnnotationsResult {
  const issue = (message: string): PodAnnotationsResult => ({
    annotations: new Map(),
    issues: [{ severity: 'error', file: source, line: 0, kind: 'Annotations', resource: 'pod', path: '', message }],
  });
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    return issue(`not valid JSON: ${(err as Error).message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return issue('must be a JSON object of annotation names to values');
  const annotations = new Map<string, string>();
  for (const [k, v] of Object.entries(parsed)) {
    if (typeof v !== 'string') return issue(`annotation ${JSON.stringify(k)} must be a string, found ${typeof v}`);
    annotations.set(k, v);
  }
  return { annotations, issues: [] };
}
