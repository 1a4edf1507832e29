// `@remora/filters` is the contract a filter package builds on: the built module exports
// exactly the documented names (a built-in filter, a constant or the shared-memory plumbing
// leaking into it fails here), the proxy's internals are at `@remora/filters/internal`, and the
// example filter package (examples/custom-filter) imports only the public API and the fakes and
// typechecks against the built declarations.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import t from 'tap';

const PACKAGE = resolve(import.meta.dirname, '..');
const REPO = resolve(PACKAGE, '../..');
const EXAMPLE = join(REPO, 'examples/custom-filter');

/** The values a filter package may use at run time. */
const PUBLIC_VALUES = [
  'FilterConfigError',
  'FilterName',
  'FilterStatus',
  'REQUEST_PAYLOAD_TOO_LARGE',
  'RESPONSE_PAYLOAD_TOO_LARGE',
  'ResponseBodyBuffer',
  'Stat',
  'TYPED_STRUCT',
  'configTypeUrl',
  'defineFilter',
  'readRequestBody',
  'typedConfig',
];

/** The types it may name (beyond the values' own). */
const PUBLIC_TYPES = [
  'DefinedFilterFactory',
  'FilterCallbacks',
  'FilterCompileContext',
  'FilterDefinition',
  'FilterLog',
  'FilterRegistry',
  'FilterRequest',
  'FilterResponse',
  'FilterResponseFlag',
  'FilterSetup',
  'FilterStats',
  'FilterStatsScope',
  'FilterUpstream',
  'FilterUpstreamFailure',
  'FilterUpstreamRequest',
  'FilterUpstreamResponse',
  'HttpFilter',
  'HttpFilterConfig',
  'HttpFilterFactory',
  'PeerIdentity',
  'RequestAuth',
  'RouteFilterInput',
];

/** Every name the declaration file exports: `export { a, type B } from '…'` and `export type { C } from '…'` only. */
function declaredNames(dts: string): string[] {
  const names: string[] = [];
  for (const m of dts.matchAll(/^export (type )?\{([^}]*)\} from '[^']+';$/gm)) {
    for (const part of m[2]!.split(',')) {
      const name = part.trim().replace(/^type\s+/, '');
      if (name !== '') names.push(name);
    }
  }
  return names.sort();
}

t.test('the package exports exactly the public values at run time', async (t) => {
  const mod = (await import('@remora/filters')) as Record<string, unknown>;
  t.same(Object.keys(mod).sort(), [...PUBLIC_VALUES].sort());
});

t.test('the declarations export exactly the public values and types, each named (no export *)', async (t) => {
  const dts = readFileSync(join(PACKAGE, 'dist/index.d.ts'), 'utf8');
  t.notMatch(dts, /export \*/, 'no wholesale re-export');
  const statements = dts.split('\n').filter((l) => l.startsWith('export '));
  t.same(statements.filter((l) => !/^export (type )?\{/.test(l)), [], 'only named re-exports');
  t.same(declaredNames(dts), [...PUBLIC_VALUES, ...PUBLIC_TYPES].sort());
});

t.test('every public declaration has a doc comment where it is declared', async (t) => {
  const src = ['filter.ts', 'define-filter.ts', 'filter-stats.ts', 'registry.ts'].map((f) => readFileSync(join(PACKAGE, 'src', f), 'utf8')).join('\n');
  for (const name of [...PUBLIC_VALUES, ...PUBLIC_TYPES]) {
    const decl = new RegExp(`\\*/\\n(export (?:declare )?(?:const|function|class|interface|type) ${name}\\b)`);
    t.match(src, decl, `${name} is documented`);
  }
});

t.test("the proxy's internals are at @remora/filters/internal, and none of them is public", async (t) => {
  const internal = (await import('@remora/filters/internal')) as Record<string, unknown>;
  for (const name of ['FilterRegistry', 'SharedCells', 'CELL_INT', 'TokenBucket', 'CompiledFault', 'rbacFactory', 'corsFactory', 'routerFactory', 'RBAC_DENIED_BODY', 'SharedFilterConfig', 'DETACHED_STATS']) {
    t.not(internal[name], undefined, name);
  }
  const registry = new (internal.FilterRegistry as new () => { register(f: unknown): unknown; has(n: string): boolean })();
  registry.register(internal.routerFactory);
  t.ok(registry.has('envoy.filters.http.router'));
  const pub = new Set(Object.keys(await import('@remora/filters')));
  t.same(Object.keys(internal).filter((n) => pub.has(n)), [], 'internal adds to the public API, it does not repeat it');
});

t.test('the testing fakes stay public', async (t) => {
  const testing = (await import('@remora/filters/testing')) as Record<string, unknown>;
  for (const name of ['FakeRequest', 'FakeResponse', 'RecordingCallbacks', 'storeContext', 'namedStats', 'streamBody']) t.type(testing[name], 'function', name);
});

/** Module specifiers a file imports (static `from '…'` and `import('…')`). */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/\bfrom '([^']+)'|\bimport\('([^']+)'\)/g)].map((m) => (m[1] ?? m[2])!);
}

t.test('the example filter package imports only the public API and the fakes', async (t) => {
  const files = ['src', 'test'].flatMap((d) => readdirSync(join(EXAMPLE, d)).filter((f) => f.endsWith('.ts')).map((f) => join(EXAMPLE, d, f)));
  t.ok(files.length >= 2);
  const remora = files.flatMap(importsOf).filter((s) => s.startsWith('@remora/'));
  t.ok(remora.includes('@remora/filters'));
  t.same(remora.filter((s) => s !== '@remora/filters' && s !== '@remora/filters/testing'), [], 'nothing but @remora/filters and @remora/filters/testing');
});

t.test('the example filter package typechecks against the built public declarations', async (t) => {
  const tsc = join(createRequire(join(REPO, 'package.json')).resolve('typescript/package.json'), '../bin/tsc');
  let output = '';
  let code = 0;
  try {
    // A plain node: tap's child_process hooks put its loaders in NODE_OPTIONS, which `env -u` drops.
    execFileSync('env', ['-u', 'NODE_OPTIONS', process.execPath, tsc, '-p', join(EXAMPLE, 'tsconfig.json')], { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { status?: number; stdout?: string; stderr?: string };
    code = e.status ?? 1;
    output = `${e.stdout ?? ''}${e.stderr ?? ''}`;
  }
  t.equal(code, 0, output);
  const { default: factory } = (await import(join(EXAMPLE, 'src/index.ts'))) as { default: { name: string; compile: unknown } };
  t.equal(factory.name, 'example.canary');
  t.type(factory.compile, 'function');
});
