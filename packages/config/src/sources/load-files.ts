import { readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { loadAll } from 'js-yaml';
import { isMap, isScalar, LineCounter, parseAllDocuments, type Document } from 'yaml';
import type { ConfigIssue } from '../errors.ts';
import type { ObjectMeta, Resource } from '../resources/resource.ts';

/** Extensions read from directories; a file named explicitly is read whatever its name. */
const RESOURCE_EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

/** Whether a file found in a `-c` directory is read: YAML or JSON by its extension. */
export function isResourceFileName(name: string): boolean {
  return RESOURCE_EXTENSIONS.has(extname(name).toLowerCase());
}

export interface LoadResult {
  readonly resources: readonly Resource[];
  /** Syntax and structure problems; files with errors contribute no resources. */
  readonly issues: readonly ConfigIssue[];
  /** Every file read, for watchers. */
  readonly files: readonly string[];
}

/**
 * Expands `-c` arguments: files as given, directories recursively (YAML and JSON files,
 * sorted, dot-files skipped). A missing path is an issue, not an exception.
 */
export function listResourceFiles(paths: readonly string[]): { files: string[]; issues: ConfigIssue[] } {
  const files: string[] = [];
  const issues: ConfigIssue[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir).sort()) {
      if (name.startsWith('.')) continue;
      const full = join(dir, name);
      const st = statSync(full, { throwIfNoEntry: false });
      if (st === undefined) continue;
      if (st.isDirectory()) walk(full);
      else if (st.isFile() && isResourceFileName(name)) files.push(full);
    }
  };
  for (const path of paths) {
    const st = statSync(path, { throwIfNoEntry: false });
    if (st === undefined) issues.push(fileIssue(path, 0, 'no such file or directory'));
    else if (st.isDirectory()) walk(path);
    else files.push(path);
  }
  return { files: [...new Set(files)], issues };
}

/** Reads and parses every resource under `paths`. Never throws for bad input. */
export function loadFiles(paths: readonly string[]): LoadResult {
  const { files, issues } = listResourceFiles(paths);
  const resources: Resource[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      issues.push(fileIssue(file, 0, `cannot read: ${(err as Error).message}`));
      continue;
    }
    const parsed = parseResources(text, file, resources.length);
    issues.push(...parsed.issues);
    if (parsed.issues.some((i) => i.severity === 'error')) continue;
    resources.push(...parsed.resources);
  }
  return { resources, issues, files };
}

/**
 * Parses one file of multi-document YAML (JSON is YAML too). `kind: List` documents are
 * flattened. Documents that are not Kubernetes-style objects are reported with their line.
 *
 * A file that parses cleanly takes the fast path: js-yaml reads it about fifteen times
 * faster than `yaml`'s document model (2 MB of routes: 70 ms against 1 s), and line numbers,
 * needed only for messages, are worked out with `yaml` the first time one is asked for. A
 * file with anything to report (syntax, duplicate keys, aliases, a document that is no
 * resource) is read by `parseResourcesExact`, so every message is the same either way.
 */
export function parseResources(
  text: string,
  file: string,
  firstOrder = 0,
): { resources: Resource[]; issues: ConfigIssue[] } {
  let values: unknown[];
  try {
    // Core schema as `yaml`'s default (YAML 1.2: no timestamps, no merge keys); aliases and duplicate keys go the exact way.
    values = loadAll(text, { maxAliases: 0 });
  } catch {
    return parseResourcesExact(text, file, firstOrder);
  }
  const resources: Resource[] = [];
  const issues: ConfigIssue[] = [];
  let exact: Resource[] | null = null;
  const lineOfNth = (n: number) => (path: readonly (string | number)[]): number => {
    exact ??= parseResourcesExact(text, file, firstOrder).resources;
    return exact[n]?.lineOf(path) ?? 1;
  };
  const take = (value: unknown): boolean => {
    const r = toResource(value, file, lineOfNth(resources.length), firstOrder + resources.length, issues);
    if (r === null) return false;
    resources.push(r);
    return true;
  };
  for (const value of values) {
    if (value === null || value === undefined) continue;
    if (!isPlainObject(value)) return parseResourcesExact(text, file, firstOrder);
    if (value.kind === 'List' && Array.isArray(value.items)) {
      for (const item of value.items) if (!take(item)) return parseResourcesExact(text, file, firstOrder);
    } else if (!take(value)) return parseResourcesExact(text, file, firstOrder);
  }
  return { resources, issues };
}

/** `parseResources` with `yaml`'s full document model: exact positions for every message. */
export function parseResourcesExact(
  text: string,
  file: string,
  firstOrder = 0,
): { resources: Resource[]; issues: ConfigIssue[] } {
  const lineCounter = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const resources: Resource[] = [];
  const issues: ConfigIssue[] = [];
  const lineAt = (offset: number): number => lineCounter.linePos(offset).line;

  for (const doc of Array.isArray(docs) ? docs : [docs]) {
    if (doc.errors.length > 0) {
      for (const e of doc.errors) {
        issues.push(fileIssue(file, lineAt(e.pos[0]), `YAML syntax: ${firstLine(e.message)}`));
      }
      continue;
    }
    if (doc.contents === null) continue; // an empty document between `---` separators
    const value: unknown = doc.toJS({ maxAliasCount: 100 });
    if (value === null || value === undefined) continue;
    const docLine = doc.contents.range ? lineAt(doc.contents.range[0]) : 1;
    if (!isPlainObject(value)) {
      issues.push(fileIssue(file, docLine, 'a resource must be a mapping with apiVersion, kind, metadata and spec'));
      continue;
    }
    if (value.kind === 'List' && Array.isArray(value.items)) {
      value.items.forEach((item: unknown, i: number) => {
        const r = toResource(item, file, documentLines(doc, lineAt, ['items', i]), firstOrder + resources.length, issues);
        if (r !== null) resources.push(r);
      });
      continue;
    }
    const r = toResource(value, file, documentLines(doc, lineAt, []), firstOrder + resources.length, issues);
    if (r !== null) resources.push(r);
  }
  return { resources, issues };
}

/** The line of a field (path of keys and indexes under `prefix`) in a parsed document. */
function documentLines(doc: Document.Parsed, lineAt: (offset: number) => number, prefix: readonly (string | number)[]) {
  return (path: readonly (string | number)[]): number => {
    // Walk towards the deepest node that exists, so a missing field reports its parent's line.
    // A mapping key reports the line of the key itself (a nested value starts a line later).
    for (let depth = path.length; depth >= 0; depth--) {
      const full = [...prefix, ...path.slice(0, depth)];
      const last = full[full.length - 1];
      if (typeof last === 'string') {
        const parent = doc.getIn(full.slice(0, -1), true);
        if (isMap(parent)) {
          const pair = parent.items.find((p) => isScalar(p.key) && p.key.value === last);
          const range = pair && isScalar(pair.key) ? pair.key.range : undefined;
          if (range) return lineAt(range[0]);
        }
      }
      const node = doc.getIn(full, true) as { range?: [number, number, number] } | undefined;
      if (node && typeof node === 'object' && node.range) return lineAt(node.range[0]);
    }
    return 1;
  };
}

function toResource(
  value: unknown,
  file: string,
  lineOf: (path: readonly (string | number)[]) => number,
  order: number,
  issues: ConfigIssue[],
): Resource | null {
  if (!isPlainObject(value)) {
    issues.push(fileIssue(file, lineOf([]), 'a resource must be a mapping with apiVersion, kind, metadata and spec'));
    return null;
  }
  const { apiVersion, kind } = value;
  if (typeof apiVersion !== 'string' || apiVersion === '' || typeof kind !== 'string' || kind === '') {
    issues.push(fileIssue(file, lineOf([]), 'a resource needs string fields apiVersion and kind'));
    return null;
  }
  const slash = apiVersion.lastIndexOf('/');
  const group = slash < 0 ? '' : apiVersion.slice(0, slash);
  const version = slash < 0 ? apiVersion : apiVersion.slice(slash + 1);
  const meta = isPlainObject(value.metadata) ? value.metadata : {};
  const name = typeof meta.name === 'string' ? meta.name : '';
  const namespace = typeof meta.namespace === 'string' && meta.namespace !== '' ? meta.namespace : 'default';
  const metadata: ObjectMeta = {
    name,
    namespace,
    labels: stringMap(meta.labels),
    annotations: stringMap(meta.annotations),
    creationTimestamp: typeof meta.creationTimestamp === 'string' ? meta.creationTimestamp : '',
  };
  if (name === '') {
    issues.push({
      severity: 'error',
      file,
      line: lineOf(['metadata']),
      kind,
      resource: `${namespace}/`,
      path: 'metadata.name',
      message: 'is required',
    });
    return null;
  }
  // The line is worked out when a message needs it (on the fast path that means parsing again).
  let line = 0;
  const origin = {
    file,
    get line(): number {
      return (line ||= lineOf([]));
    },
  };
  return { apiVersion, group, version, kind, metadata, spec: value.spec, document: value, origin, order, lineOf };
}

function fileIssue(file: string, line: number, message: string): ConfigIssue {
  return { severity: 'error', file, line, kind: '', resource: '', path: '', message };
}

function firstLine(s: string): string {
  const i = s.indexOf('\n');
  return i < 0 ? s : s.slice(0, i);
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function stringMap(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (isPlainObject(v)) for (const [k, val] of Object.entries(v)) if (typeof val === 'string') out[k] = val;
  return out;
}
