// Shared set-up for the Envoy message tests: where istiod's goldens are, an independent
// protobuf implementation to check the wire format against (buf's `convert`, written in Go
// like istiod), and a JSON comparison that says where two documents differ.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { create, toBinary, type DescFile, type JsonValue } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema, type Any } from '@bufbuild/protobuf/wkt';
import { envoyRegistry } from '@remora/config/envoy';
import { REPO_ROOT } from './translate.ts';

/**
 * `shared/corpus/istio-goldens`, found beside the repository or beside one of its parent
 * directories (a worktree sits one level further down than the clone); null when absent.
 */
export const GOLDENS_DIR: string | null = (() => {
  for (let dir = dirname(REPO_ROOT); ; dir = dirname(dir)) {
    const candidate = join(dir, 'shared', 'corpus', 'istio-goldens');
    if (existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) return null;
  }
})();

export const GOLDENS_MISSING = 'shared/corpus/istio-goldens not found beside the repository or its parent directories';

/** A golden file parsed as JSON. */
export function readGolden(file: string): JsonValue {
  if (GOLDENS_DIR === null) throw new Error(GOLDENS_MISSING);
  return JSON.parse(readFileSync(join(GOLDENS_DIR, file), 'utf8')) as JsonValue;
}

/**
 * Runs `buf convert` (the Go protobuf runtime) over every file in the registry: `input`
 * read as `typeName` in the `from` format, written in the `to` format.
 */
export function bufConvert(typeName: string, input: Uint8Array, from: 'binpb' | 'json', to: 'binpb' | 'json'): Buffer {
  const require = createRequire(import.meta.url);
  const buf = join(dirname(require.resolve('@bufbuild/buf/package.json')), 'bin', 'buf');
  const dir = mkdtempSync(join(tmpdir(), 'remora-buf-convert-'));
  try {
    writeFileSync(join(dir, 'set.binpb'), toBinary(FileDescriptorSetSchema, create(FileDescriptorSetSchema, { file: registryFiles() })));
    writeFileSync(join(dir, `in.${from}`), input);
    return execFileSync(process.execPath, [buf, 'convert', 'set.binpb', '--type', typeName, '--from', `in.${from}`, '--to', `-#format=${to}`], {
      cwd: dir,
      env: { ...process.env, BUF_CACHE_DIR: join(dir, '.cache'), HOME: dir },
      timeout: 60_000,
      maxBuffer: 64 << 20,
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Every file the registry's types come from, with their imports, dependencies first. */
function registryFiles(): DescFile['proto'][] {
  const files = new Map<string, DescFile['proto']>();
  const add = (file: DescFile): void => {
    if (files.has(file.name)) return;
    for (const dep of file.dependencies) add(dep);
    files.set(file.name, file.proto);
  };
  for (const type of envoyRegistry) add(type.file);
  return [...files.values()];
}

/**
 * The paths of `inner` that `outer` lacks or holds another value at: `[]` means every field of
 * `inner` is in `outer`. A 64-bit integer written as a string (`"2147483647"`, proto3 JSON's
 * form) equals the same number written bare.
 */
export function notContainedIn(inner: JsonValue | undefined, outer: JsonValue | undefined, path = ''): string[] {
  if (inner === outer) return [];
  if (typeof inner === 'number' && typeof outer === 'string') return String(inner) === outer ? [] : [path];
  if (typeof inner === 'string' && typeof outer === 'number') return inner === String(outer) ? [] : [path];
  if (Array.isArray(inner)) {
    if (!Array.isArray(outer) || outer.length !== inner.length) return [path];
    return inner.flatMap((item, i) => notContainedIn(item, outer[i], `${path}[${i}]`));
  }
  if (typeof inner === 'object' && inner !== null) {
    if (typeof outer !== 'object' || outer === null || Array.isArray(outer)) return [path];
    return Object.entries(inner).flatMap(([k, v]) => notContainedIn(v, outer[k], path === '' ? k : `${path}.${k}`));
  }
  return [path];
}

/** Fails the test (by throwing) when a value the test goes on to read is missing. */
export function assertPresent<T>(value: T, what: string): asserts value is NonNullable<T> {
  if (value === undefined || value === null) throw new Error(`missing: ${what}`);
}

/** The `typed_config` of a filter, socket or extension (a `config_type` oneof); throws when it has none. */
export function typedConfigOf(holder: { readonly configType: { readonly case: string | undefined; readonly value?: unknown } } | undefined, what: string): Any {
  const config = holder?.configType;
  if (config?.case !== 'typedConfig') throw new Error(`missing: typed_config of ${what}`);
  return config.value as Any;
}
