/**
 * Generates `src/envoy/gen/`, the TypeScript for the Envoy v3 messages Remora reads and
 * writes (xDS resources, filter configs, bootstrap, `/config_dump`). Run with Node 24
 * (`pnpm --filter @remora/config gen:envoy`); the output is committed, so neither CI nor
 * users need the dev dependencies below.
 *
 * Sources, all from the npm registry and pinned in package.json:
 * - the `.proto` files of Envoy, xDS/udpa, googleapis and protoc-gen-validate that ship in
 *   @grpc/grpc-js-xds (`deps/`);
 * - the compiler, from @bufbuild/buf; the plugin, @bufbuild/protoc-gen-es.
 *
 * Only the files listed in ROOTS and what they import are generated (buf's
 * `--include-imports`); the well-known types come from `@bufbuild/protobuf/wkt`. The
 * validate.proto shipped beside the Envoy protos predates its `ignore_empty` rule, which
 * some of those protos use, so the compiler reads a patched copy in a temporary directory
 * (node_modules stays untouched).
 *
 * Output is deterministic: same input, same bytes. `--check` compares instead of writing and
 * exits 1 when the committed files differ.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const PACKAGE_DIR = join(dirname(fileURLToPath(import.meta.url)), '..');
const OUT_DIR = join(PACKAGE_DIR, 'src', 'envoy', 'gen');

/** The exact versions the committed output was made with; another version is an error. */
const PINNED: Readonly<Record<string, string>> = {
  '@grpc/grpc-js-xds': '1.14.1',
  '@bufbuild/buf': '1.75.0',
  '@bufbuild/protoc-gen-es': '2.17.0',
};

/** protoc-gen-es options: TypeScript that Node runs as is and tsc accepts under `erasableSyntaxOnly`. */
const PLUGIN_OPTIONS = ['target=ts', 'import_extension=ts', 'erasable_syntax=true', 'json_types=true'];

/** The proto roots inside the package's `deps/`, in the order the compiler searches them. */
const PROTO_ROOTS = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'];

/**
 * The files Remora needs. Everything they import is generated as well. Besides the resources
 * and filters Remora implements, this lists every type istiod puts inside an `Any` in
 * shared/corpus/istio-goldens (bootstraps, config dumps, the AuthorizationPolicy builder's
 * RBAC and ext_authz filters), so those parse whole.
 */
const ROOTS: readonly string[] = [
  // xDS resources and the ADS stream
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/route/v3/route.proto',
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  'envoy/extensions/transport_sockets/tls/v3/cert.proto',
  'envoy/service/discovery/v3/ads.proto',
  'envoy/service/discovery/v3/discovery.proto',
  // ext_authz's gRPC service
  'envoy/service/auth/v3/external_auth.proto',
  // the global rate limit service (RLS) the ratelimit filter calls
  'envoy/service/ratelimit/v3/rls.proto',
  // bootstrap and /config_dump
  'envoy/config/bootstrap/v3/bootstrap.proto',
  'envoy/admin/v3/config_dump.proto',
  // network filters
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto',
  'envoy/extensions/filters/network/rbac/v3/rbac.proto',
  'envoy/extensions/filters/network/set_filter_state/v3/set_filter_state.proto',
  'envoy/extensions/filters/network/wasm/v3/wasm.proto',
  // HTTP filters
  'envoy/extensions/filters/http/rbac/v3/rbac.proto',
  'envoy/extensions/filters/http/jwt_authn/v3/config.proto',
  'envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto',
  'envoy/extensions/filters/http/fault/v3/fault.proto',
  'envoy/extensions/filters/http/cors/v3/cors.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/filters/http/header_to_metadata/v3/header_to_metadata.proto',
  'envoy/extensions/filters/http/grpc_stats/v3/config.proto',
  'envoy/extensions/filters/http/compressor/v3/compressor.proto',
  'envoy/extensions/filters/http/wasm/v3/wasm.proto',
  'envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto',
  'envoy/extensions/filters/http/ratelimit/v3/rate_limit.proto',
  // listener filters
  'envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto',
  'envoy/extensions/filters/listener/http_inspector/v3/http_inspector.proto',
  'envoy/extensions/filters/listener/original_dst/v3/original_dst.proto',
  // transport sockets, upstream options, matchers and other extensions istiod configures
  'envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto',
  'envoy/extensions/transport_sockets/internal_upstream/v3/internal_upstream.proto',
  'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
  'envoy/extensions/matching/common_inputs/network/v3/network_inputs.proto',
  'envoy/extensions/path/match/uri_template/v3/uri_template_match.proto',
  'envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto',
  'envoy/extensions/retry/priority/previous_priorities/v3/previous_priorities_config.proto',
  'envoy/extensions/request_id/uuid/v3/uuid.proto',
  'envoy/extensions/access_loggers/file/v3/file.proto',
  'envoy/extensions/access_loggers/stream/v3/stream.proto',
  'envoy/extensions/access_loggers/filters/cel/v3/cel.proto',
  'envoy/extensions/compression/gzip/compressor/v3/gzip.proto',
  'envoy/extensions/compression/brotli/compressor/v3/brotli.proto',
  'envoy/extensions/compression/zstd/compressor/v3/zstd.proto',
  'envoy/extensions/resource_monitors/downstream_connections/v3/downstream_connections.proto',
  'envoy/config/trace/v3/zipkin.proto',
  'envoy/config/trace/v3/opentelemetry.proto',
  'envoy/config/metrics/v3/metrics_service.proto',
  'udpa/type/v1/typed_struct.proto',
  'xds/type/v3/typed_struct.proto',
  'xds/type/matcher/v3/ip.proto',
];

/** The rule validate.proto lacks; upstream protoc-gen-validate numbers it 26 in StringRules. */
const VALIDATE_PATCH = {
  file: 'protoc-gen-validate/validate/validate.proto',
  /** StringRules' last field; the file has CRLF line ends, which the insert keeps. */
  anchor: /^( *optional bool strict = 25 \[default = true\];)(\r?\n)/m,
  insert: '  optional bool ignore_empty = 26;',
};

// ---------------------------------------------------------------------------------------------

/** Thrown for any failure; the temporary directories are removed on the way out. */
class GenerationError extends Error {}

function fail(message: string): never {
  throw new GenerationError(message);
}

/** The directory of an installed package, checked against its pinned version. */
function pinnedPackageDir(name: string): string {
  const require = createRequire(join(PACKAGE_DIR, 'package.json'));
  const manifestPath = require.resolve(`${name}/package.json`);
  const version = (JSON.parse(readFileSync(manifestPath, 'utf8')) as { version: string }).version;
  if (version !== PINNED[name]) fail(`${name} is ${version}, the generated code is pinned to ${PINNED[name]} (update PINNED and package.json together)`);
  return dirname(manifestPath);
}

/** Copies the proto roots into `work`, patching validate.proto. */
function stageProtos(depsDir: string, work: string): void {
  for (const root of PROTO_ROOTS) cpSync(join(depsDir, root), join(work, root), { recursive: true });
  const validatePath = join(work, VALIDATE_PATCH.file);
  const text = readFileSync(validatePath, 'utf8');
  if (/\bignore_empty\b/.test(text.slice(text.indexOf('message StringRules'), text.indexOf('enum KnownRegex')))) return;
  if (!VALIDATE_PATCH.anchor.test(text)) fail(`${VALIDATE_PATCH.file}: cannot find where StringRules ends; check the patch against the new version`);
  writeFileSync(validatePath, text.replace(VALIDATE_PATCH.anchor, (_, line: string, eol: string) => `${line}${eol}${VALIDATE_PATCH.insert}${eol}`));
}

function generate(out: string): void {
  const depsDir = join(pinnedPackageDir('@grpc/grpc-js-xds'), 'deps');
  const buf = join(pinnedPackageDir('@bufbuild/buf'), 'bin', 'buf');
  const plugin = join(pinnedPackageDir('@bufbuild/protoc-gen-es'), 'bin', 'protoc-gen-es');
  const work = mkdtempSync(join(tmpdir(), 'remora-gen-envoy-'));
  try {
    stageProtos(depsDir, work);
    // In a buf workspace, --path is relative to the workspace: it names the module's folder.
    const targets = ROOTS.map((file) => {
      const root = PROTO_ROOTS.find((r) => existsSync(join(work, r, file)));
      if (root === undefined) fail(`${file} is not in @grpc/grpc-js-xds/deps`);
      return `${root}/${file}`;
    });
    writeFileSync(join(work, 'buf.yaml'), `version: v2\nmodules:\n${PROTO_ROOTS.map((r) => `  - path: ${r}\n`).join('')}`);
    const template = {
      version: 'v2',
      plugins: [{ local: [process.execPath, plugin], out, opt: PLUGIN_OPTIONS, include_imports: true }],
    };
    const args = ['generate', work, '--template', JSON.stringify(template), ...targets.flatMap((f) => ['--path', f])];
    const run = spawnSync(process.execPath, [buf, ...args], {
      cwd: work,
      encoding: 'utf8',
      // buf's cache and config stay in the temporary directory.
      env: { ...process.env, BUF_CACHE_DIR: join(work, '.cache'), HOME: work },
    });
    if (run.error !== undefined) fail(`cannot run buf: ${run.error.message}`);
    if (run.status !== 0) fail(`buf generate failed (exit ${run.status}):\n${run.stderr}`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Writes `files.ts` beside the generated code: every generated file descriptor, so the type
 * registry holds every message without a second hand-kept list.
 */
function writeFileIndex(out: string): void {
  const imports: string[] = [];
  const names: string[] = [];
  for (const file of listFiles(out)) {
    const match = /^export const (file_\w+): GenFile\b/m.exec(readFileSync(join(out, file), 'utf8'));
    if (match === null) fail(`${file}: no file descriptor export`);
    const name = match[1] as string;
    imports.push(`import { ${name} } from './${file.split(sep).join('/')}';`);
    names.push(name);
  }
  const text = [
    '// @generated by packages/config/scripts/gen-envoy.ts; do not edit.',
    '// Every file generated beside this one, for the type registry.',
    '',
    "import type { GenFile } from '@bufbuild/protobuf/codegenv2';",
    ...imports,
    '',
    'export const GENERATED_FILES: readonly GenFile[] = [',
    ...names.map((n) => `  ${n},`),
    '];',
    '',
  ].join('\n');
  writeFileSync(join(out, 'files.ts'), text);
}

/** Every file under `dir`, as paths relative to it, sorted. */
function listFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const files: string[] = [];
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) files.push(relative(dir, join(entry.parentPath, entry.name)));
  }
  return files.sort();
}

function differences(a: string, b: string): string[] {
  const filesA = listFiles(a);
  const filesB = listFiles(b);
  const out: string[] = [];
  for (const f of filesA) if (!filesB.includes(f)) out.push(`only in the committed output: ${f}`);
  for (const f of filesB) {
    if (!filesA.includes(f)) out.push(`not committed: ${f}`);
    else if (readFileSync(join(a, f), 'utf8') !== readFileSync(join(b, f), 'utf8')) out.push(`differs: ${f}`);
  }
  return out;
}

const check = process.argv.includes('--check');
const staging = mkdtempSync(join(tmpdir(), 'remora-gen-envoy-out-'));
try {
  generate(staging);
  writeFileIndex(staging);
  const files = listFiles(staging);
  if (check) {
    const diff = differences(OUT_DIR, staging);
    if (diff.length > 0) fail(`src/envoy/gen is out of date (run gen:envoy):\n  ${diff.slice(0, 20).join('\n  ')}`);
    console.log(`gen-envoy: src/envoy/gen is up to date (${files.length} files)`);
  } else {
    rmSync(OUT_DIR, { recursive: true, force: true });
    cpSync(staging, OUT_DIR, { recursive: true });
    console.log(`gen-envoy: wrote ${files.length} files to ${relative(process.cwd(), OUT_DIR) || '.'}`);
  }
} catch (e) {
  if (!(e instanceof GenerationError)) throw e;
  console.error(`gen-envoy: ${e.message}`);
  process.exitCode = 1;
} finally {
  rmSync(staging, { recursive: true, force: true });
}
