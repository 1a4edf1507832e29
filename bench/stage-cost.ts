// What each stage of Remora's request path costs, in CPU microseconds per request, from one run.
//
// Every variant is the bench gateway (bench/remora/) with one thing added or taken away. A
// variant and the one it is compared with run at once, both saturated, on the proxy core
// against the same nginx upstream: the scheduler splits the core between them, so both see the
// same machine at the same instants (on a shared 2-core VM, runs taken one after the other,
// even seconds apart, drift by tens of percent; two copies of `base` measured this way agree
// within ~3% per round). Only the pair being measured is running. CPU time is each proxy's own
// (from /proc, user + system) over the requests it answered; req/s is the ratio of the two
// throughputs within the run. A stage's cost is its variant's CPU per request minus the
// variant it was added to:
//
//   base              the default chain: routing, upstream, metrics, access log (stdout → /dev/null)
//   direct            the route answers itself (a 1,024-byte directResponse): listener, HTTP
//                     codec, routing, local reply and telemetry, no upstream  → upstream = base − direct
//   no-access-log     base without the access log                          → access log = base − this
//   tracing-1%        base with OpenTelemetry tracing at Istio's default 1% sampling, spans to a
//                     real OTLP/HTTP receiver in this process            → tracing = this − base
//   rbac              base + an AuthorizationPolicy (ALLOW, three rules, the last one matching)
//   jwt               base + RequestAuthentication and a policy requiring a principal; every
//                     request carries an RS256 token (signed here with node:crypto)
//   local-ratelimit   base + istio.io's gateway local rate limit EnvoyFilter (a bucket never empty)
//   fault             base + a VirtualService fault (abort 0.001%): the filter runs, ~nothing is aborted
//   undici            base with HTTP/1.1 upstreams through undici instead of the lean pool
//   workers-2         base with `--concurrency 2`: two worker threads (SO_REUSEPORT), both on the
//                     proxy core, with what workers share (breakers and rate limits in shared
//                     memory, access log lines and outcomes posted to the main thread) → what
//                     serving from workers costs per request; on N cores, throughput ≈ N ×
//                     one core's ÷ (1 + this ÷ base)
//
// Not part of `pnpm bench`; run it with nothing else on the machine:
//
//   node bench/stage-cost.ts [--rounds 5] [--duration 2] [--warmup 2] [--only base,tracing-1%]
//
// `--baseline DIR` measures a change instead: this checkout's build against the build of another
// checkout (a `git worktree` of the commit before, built), both with the default chain, paired
// the same way. Its table row is `build`: CPU µs per request this build adds (negative: saves).
import { createServer, type Server } from 'node:http';
import { generateKeyPairSync, sign } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { gatewayLocalRateLimit } from '../test/helpers/mesh.ts';
import { spawnChild, type Child } from './lib/children.ts';
import { describeFailure, UsageError } from './lib/errors.ts';
import { saturate } from './lib/load.ts';
import { freePorts, waitUntilForwarding, type RequestTarget } from './lib/net.ts';
import { render, upstreamBody } from './lib/peers.ts';
import { treeCpuSeconds } from './lib/proc.ts';
import { numberOption, PATHS, PINNING_OPTIONS, pinningFrom, prepare, type Pinning } from './lib/setup.ts';
import { median } from './lib/stats.ts';

const HELP = `node bench/stage-cost.ts [options]

  --only a,b          variants (default all): base, direct, no-access-log, tracing-1%, no-metrics, no-telemetry, rbac, jwt, local-ratelimit, fault, undici, workers-2
  --rounds N          rounds, every variant (and what it is compared with) once per round (default 5)
  --duration S        seconds of each measured run (default 2)
  --warmup S          seconds of load before measuring, not counted (default 2)
  --connections N     connections (default 50)
  --baseline DIR      this build against DIR's build (a built checkout, e.g. a git worktree of main), default chain on both
  --proxy-cpu N / --load-cpu N / --no-pin   cores (default 1 / 0)`;

interface Variant {
  readonly name: string;
  /** What the variant adds or removes, for the table. */
  readonly what: string;
  /** The variant it is compared with: its cost is (this − that), or (that − this) when `removes`. */
  readonly against: string | null;
  readonly removes: boolean;
  /** The stage its difference measures, for the table. */
  readonly stage: string;
}

const VARIANTS: readonly Variant[] = [
  { name: 'base', what: 'the default chain: route, upstream, metrics, access log', against: null, removes: false, stage: '' },
  { name: 'direct', what: 'no upstream: the route answers (directResponse, 1,024 bytes)', against: 'base', removes: true, stage: 'upstream (pool, undici, response relay)' },
  { name: 'no-access-log', what: 'access log off', against: 'base', removes: true, stage: 'access log' },
  { name: 'tracing-1%', what: 'OpenTelemetry tracing, 1% sampled, OTLP/HTTP', against: 'base', removes: false, stage: 'tracing at 1%' },
  { name: 'no-metrics', what: 'istio_* metrics off (Telemetry: ALL_METRICS disabled)', against: 'base', removes: true, stage: 'istio_* metrics' },
  { name: 'no-telemetry', what: 'istio_* metrics off, no tracing; compared with tracing-1% (metrics on, tracing at 1%)', against: 'tracing-1%', removes: true, stage: 'istio_* metrics + tracing at 1% (Istio\'s default telemetry)' },
  { name: 'rbac', what: 'AuthorizationPolicy ALLOW, 3 rules', against: 'base', removes: false, stage: 'rbac filter' },
  { name: 'jwt', what: 'RequestAuthentication (RS256) + policy requiring a principal', against: 'base', removes: false, stage: 'jwt_authn + rbac' },
  { name: 'local-ratelimit', what: 'local rate limit (istio.io EnvoyFilter)', against: 'base', removes: false, stage: 'local_ratelimit filter' },
  { name: 'fault', what: 'fault filter (abort 0.001%)', against: 'base', removes: false, stage: 'fault filter' },
  { name: 'undici', what: 'HTTP/1.1 upstreams through undici (REMORA_UPSTREAM_H1=undici) instead of the lean pool', against: 'base', removes: false, stage: 'undici over the lean HTTP/1.1 pool' },
  { name: 'workers-2', what: '--concurrency 2: two worker threads, both on the proxy core', against: 'base', removes: false, stage: 'serving from worker threads (shared state, logs and outcomes to the main thread)' },
];

/** `--baseline`: the other checkout's build, and this one compared with it. */
const BUILD_VARIANTS: readonly Variant[] = [
  { name: 'baseline', what: "the default chain, the baseline checkout's build", against: null, removes: false, stage: '' },
  { name: 'build', what: "the default chain, this checkout's build", against: 'baseline', removes: false, stage: 'this build over the baseline' },
];

interface Options {
  readonly variants: readonly Variant[];
  readonly rounds: number;
  readonly durationS: number;
  readonly warmupS: number;
  readonly connections: number;
  readonly pinning: Pinning;
  /** `--baseline`: the checkout whose build `build` is compared with; null otherwise. */
  readonly baseline: string | null;
}

function parseOptions(argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      only: { type: 'string' },
      rounds: { type: 'string' },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      connections: { type: 'string' },
      baseline: { type: 'string' },
      ...PINNING_OPTIONS,
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return null;
  let variants = VARIANTS;
  if (values.baseline !== undefined) {
    if (values.only !== undefined) throw new UsageError('--baseline compares builds with the default chain; it takes no --only');
    if (!existsSync(baselineCli(values.baseline))) throw new UsageError(`${values.baseline} has no build (${baselineCli(values.baseline)} is missing; run \`pnpm run build\` there)`);
    variants = BUILD_VARIANTS;
  } else if (values.only !== undefined) {
    const asked = values.only.split(',').map((s) => s.trim()).filter((s) => s !== '');
    const unknown = asked.filter((a) => !VARIANTS.some((v) => v.name === a));
    if (unknown.length > 0) throw new UsageError(`unknown variant ${unknown.join(', ')} (known: ${VARIANTS.map((v) => v.name).join(', ')})`);
    // A stage needs the variant it is compared with.
    const names = new Set(asked);
    for (const a of asked) {
      const against = VARIANTS.find((v) => v.name === a)?.against;
      if (against) names.add(against);
    }
    variants = VARIANTS.filter((v) => names.has(v.name));
  }
  return {
    variants,
    rounds: Math.round(numberOption('rounds', values.rounds, 'BENCH_ROUNDS', 5, 1)),
    durationS: numberOption('duration', values.duration, 'BENCH_DURATION', 2, 1),
    warmupS: numberOption('warmup', values.warmup, 'BENCH_WARMUP', 2, 0),
    connections: Math.round(numberOption('connections', values.connections, 'BENCH_CONNECTIONS', 50, 1)),
    pinning: pinningFrom(values),
    baseline: values.baseline ?? null,
  };
}

function baselineCli(dir: string): string {
  return join(dir, 'packages/proxy/dist/cli.js');
}

/** An RS256 key, its JWKS and one long-lived token, made here (no JWT library in the load path). */
function jwtMaterial(): { jwks: string; token: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid: 'bench', alg: 'RS256', use: 'sig' };
  const b64 = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const input = `${b64({ alg: 'RS256', typ: 'JWT', kid: 'bench' })}.${b64({ iss: 'bench@remora.dev', sub: 'load', iat: now, exp: now + 86_400 })}`;
  const signature = sign('RSA-SHA256', Buffer.from(input), privateKey).toString('base64url');
  return { jwks: JSON.stringify({ keys: [jwk] }), token: `${input}.${signature}` };
}

/** A receiver for the tracing variant's OTLP/HTTP exports; counts what it got. */
async function otlpSink(): Promise<{ server: Server; port: number; posts: () => number }> {
  let posts = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      posts++;
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port, posts: () => posts };
}

/** Istio's way to turn every istio_* metric off, mesh-wide. */
const METRICS_OFF = `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: { name: mesh-default, namespace: istio-system }
spec:
  metrics:
  - providers: [{ name: prometheus }]
    overrides:
    - match: { metric: ALL_METRICS, mode: CLIENT_AND_SERVER }
      disabled: true
`;

const POLICY_RULES = `  rules:
  - from: [{ source: { notRemoteIpBlocks: ["0.0.0.0/0"] } }]
  - to: [{ operation: { methods: ["DELETE"], paths: ["/admin/*"] } }]
  - to: [{ operation: { methods: ["GET", "HEAD"], paths: ["/*"] } }]
`;

/** The variant's extra files and flags on top of the bench gateway. */
interface VariantSetup {
  /** Resources added to the config directory. */
  readonly files: Record<string, string>;
  /** Flags added to the command line. */
  readonly args: string[];
  /** The VirtualService's route replaced by this (YAML under the http route), or null. */
  readonly vs: string | null;
  /** A MeshConfig for `--mesh-config`, or null. */
  readonly mesh: string | null;
  /** Environment added to Remora's. */
  readonly env?: Record<string, string>;
  /** `--concurrency` (default 1: the main event loop serves, no workers). */
  readonly concurrency?: number;
}

function variantFiles(v: string, ctx: { otlpPort: number; jwks: string }): VariantSetup {
  switch (v) {
    case 'base':
    case 'baseline':
    case 'build':
      return { files: {}, args: [], vs: null, mesh: null };
    case 'undici':
      return { files: {}, args: [], vs: null, mesh: null, env: { REMORA_UPSTREAM_H1: 'undici' } };
    case 'workers-2':
      return { files: {}, args: [], vs: null, mesh: null, concurrency: 2 };
    case 'no-metrics':
      return { files: { 'telemetry.yaml': METRICS_OFF }, args: [], vs: null, mesh: null };
    case 'no-telemetry':
      return { files: { 'telemetry.yaml': METRICS_OFF }, args: [], vs: null, mesh: null };
    case 'no-access-log':
      return { files: {}, args: ['--access-log-format', 'off'], vs: null, mesh: null };
    case 'direct':
      return {
        files: {},
        args: [],
        vs: `      directResponse:\n        status: 200\n        body:\n          string: "${upstreamBody()}"\n`,
        mesh: null,
      };
    case 'fault':
      return {
        files: {},
        args: [],
        vs: `      fault:\n        abort:\n          percentage: { value: 0.001 }\n          httpStatus: 503\n      route:\n        - destination: { host: upstream.bench.svc.cluster.local, port: { number: 80 } }\n`,
        mesh: null,
      };
    case 'tracing-1%':
      return {
        mesh: `enableTracing: true
defaultProviders: { tracing: [otel] }
extensionProviders:
- name: otel
  opentelemetry:
    service: otel-collector.bench.svc.cluster.local
    port: 4318
    http: { path: /v1/traces, timeout: 2s }
`,
        files: {
          'collector.yaml': `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: otel-collector, namespace: default }
spec:
  hosts: [otel-collector.bench.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 4318, name: http-otlp, protocol: HTTP }]
  endpoints: [{ address: 127.0.0.1, ports: { http-otlp: ${ctx.otlpPort} } }]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: { name: mesh-default, namespace: istio-system }
spec:
  tracing:
  - providers: [{ name: otel }]
    randomSamplingPercentage: 1
`,
        },
        args: [],
        vs: null,
      };
    case 'rbac':
      return {
        files: {
          'policy.yaml': `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: bench-allow, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  action: ALLOW
${POLICY_RULES}`,
        },
        args: [],
        vs: null,
        mesh: null,
      };
    case 'jwt':
      return {
        files: {
          'jwt.yaml': `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: bench-jwt, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  jwtRules:
  - issuer: bench@remora.dev
    jwks: '${ctx.jwks}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: bench-require-jwt, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  action: ALLOW
  rules:
  - from: [{ source: { requestPrincipals: ["bench@remora.dev/*"] } }]
`,
        },
        args: [],
        vs: null,
        mesh: null,
      };
    case 'local-ratelimit':
      return { files: { 'ratelimit.yaml': gatewayLocalRateLimit({ maxTokens: 100_000_000, tokensPerFill: 100_000_000, fillInterval: '1s' }) }, args: [], vs: null, mesh: null };
    default:
      throw new Error(`no files for variant ${v}`);
  }
}

async function startVariant(v: Variant, o: Options, upstreamPort: number, extra: { otlpPort: number; jwks: string; token: string }): Promise<{ child: Child; port: number; target: RequestTarget }> {
  const cli = v.name === 'baseline' && o.baseline !== null ? baselineCli(o.baseline) : join(PATHS.repoRoot, 'packages/proxy/dist/cli.js');
  if (!existsSync(cli)) throw new UsageError('Remora is not built (packages/proxy/dist/cli.js is missing; run `pnpm run build`)');
  const [port, admin, health] = (await freePorts(3)) as [number, number, number];
  const dir = join(PATHS.runDir, `stage-${v.name.replace('%', 'pct')}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const vars = { LISTEN_PORT: port, UPSTREAM_PORT: upstreamPort };
  const setup = variantFiles(v.name, extra);
  for (const file of ['gateway.yaml', 'service-entry.yaml', 'virtual-service.yaml']) {
    let text = render(readFileSync(join(PATHS.benchDir, 'remora', file), 'utf8'), vars);
    if (file === 'virtual-service.yaml' && setup.vs !== null) text = text.replace(/      route:\n(.|\n)*$/, setup.vs);
    writeFileSync(join(dir, file), text);
  }
  for (const [name, text] of Object.entries(setup.files)) writeFileSync(join(dir, name), text);
  const args = [...setup.args];
  if (setup.mesh !== null) {
    // The MeshConfig is a flag, not a resource of the config directory.
    const mesh = `${dir}.mesh.yaml`;
    writeFileSync(mesh, setup.mesh);
    args.push('--mesh-config', mesh);
  }
  const child = spawnChild(`remora ${v.name}`, process.execPath, [cli, 'gateway', '-c', dir, '--admin-port', String(admin), '--health-port', String(health), '--prometheus-port', '0', '--concurrency', String(setup.concurrency ?? 1), ...args], {
    cpu: o.pinning.proxyCpu,
    stdoutFile: null,
    stderrFile: join(PATHS.runDir, `stage-${v.name.replace('%', 'pct')}.stderr.log`),
    ...(setup.env !== undefined ? { env: { ...process.env, ...setup.env } } : {}),
  });
  const target: RequestTarget = v.name === 'jwt' ? { path: '/', headers: { authorization: `Bearer ${extra.token}` } } : { path: '/', headers: {} };
  const problem = await waitUntilForwarding(port, child, 15_000, target);
  if (problem !== null) {
    await child.stop();
    throw new Error(`Remora (${v.name}) did not come up: ${problem}\n${child.stderrTail()}`);
  }
  return { child, port, target };
}

interface Sample {
  readonly rps: number;
  readonly cpuUsPerRequest: number;
  readonly non2xx: number;
}

interface Running {
  readonly v: Variant;
  readonly child: Child;
  readonly port: number;
  readonly target: RequestTarget;
}

/** One saturated run of two variants at once, on the same core: each one's req/s and CPU per answered request. */
async function measureTogether(a: Running, b: Running, o: Options): Promise<[Sample, Sample]> {
  const before = [treeCpuSeconds(a.child.pid), treeCpuSeconds(b.child.pid)];
  const results = await Promise.all([a, b].map((r) => saturate({ port: r.port, connections: o.connections, durationS: o.durationS, workers: 0, target: r.target })));
  return [a, b].map((r, i) => {
    const cpu = treeCpuSeconds(r.child.pid) - before[i]!;
    const res = results[i]!;
    if (!r.child.isRunning()) throw new Error(`Remora (${r.v.name}) exited during the run:\n${r.child.stderrTail()}`);
    if (res.requests === 0) throw new Error(`Remora (${r.v.name}) answered no request with 2xx (${res.non2xx} non-2xx, ${res.errors} errors)`);
    return { rps: res.rps, cpuUsPerRequest: (cpu * 1e6) / res.requests, non2xx: res.non2xx };
  }) as [Sample, Sample];
}

function meanSample(x: Sample, y: Sample): Sample {
  return { rps: (x.rps + y.rps) / 2, cpuUsPerRequest: (x.cpuUsPerRequest + y.cpuUsPerRequest) / 2, non2xx: x.non2xx + y.non2xx };
}

const fmt = (n: number, digits: number): string => (Number.isFinite(n) ? n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : '—');

/**
 * For each variant: it and the variant it is compared with are started fresh (nothing else of
 * Remora running), warmed together, then measured together for every round, each round two
 * runs with the sides' load started in both orders. Figures are medians over rounds.
 */
async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  if (o === null) {
    process.stdout.write(`${HELP}\n`);
    return;
  }
  const compared = o.variants.filter((v) => v.against !== null);
  const budgetS = compared.length * (60 + o.warmupS + o.rounds * (2 * o.durationS + 8)) + 60;
  const watchdog = setTimeout(() => {
    process.stderr.write(`stage-cost: still running after ${budgetS} s, giving up\n`);
    process.exit(1);
  }, budgetS * 1000);
  watchdog.unref();
  const { upstream } = await prepare(['remora'], o.pinning);
  const sink = await otlpSink();
  const { jwks, token } = jwtMaterial();
  const extra = { otlpPort: sink.port, jwks, token };
  const running = new Set<Running>();
  const start = async (v: Variant): Promise<Running> => {
    const r: Running = { v, ...(await startVariant(v, o, upstream.port, extra)) };
    running.add(r);
    return r;
  };
  const stop = async (r: Running): Promise<void> => {
    running.delete(r);
    await r.child.stop();
  };
  try {
    /** Per variant: [its sample, the paired sample of what it is compared with] per round. */
    const pairs = new Map<string, [Sample, Sample][]>(compared.map((v) => [v.name, []]));
    for (const v of compared) {
      const a = await start(o.variants.find((x) => x.name === v.against)!);
      const b = await start(v);
      if (o.warmupS > 0) await measureTogether(a, b, { ...o, durationS: o.warmupS });
      for (let round = 1; round <= o.rounds; round++) {
        const [other1, own1] = await measureTogether(a, b, o);
        const [own2, other2] = await measureTogether(b, a, o);
        const own = meanSample(own1, own2);
        const other = meanSample(other1, other2);
        pairs.get(v.name)!.push([own, other]);
        process.stderr.write(
          `  round ${round} ${v.name}: ${fmt(own.cpuUsPerRequest, 1)} µs vs ${v.against} ${fmt(other.cpuUsPerRequest, 1)} µs CPU/request; ${fmt(own.rps, 0)} vs ${fmt(other.rps, 0)} req/s${own.non2xx > 0 ? `, ${own.non2xx} non-2xx` : ''}\n`,
        );
      }
      await stop(b);
      await stop(a);
    }
    const lines = [
      `| variant | what | stage | stage µs/request | req/s vs compared (same round) | variant CPU µs/request | compared CPU µs/request |`,
      `|---|---|---|---:|---:|---:|---:|`,
    ];
    const out: Record<string, unknown> = {};
    for (const v of compared) {
      const ps = pairs.get(v.name)!;
      const diff = median(ps.map(([own, other]) => (v.removes ? other.cpuUsPerRequest - own.cpuUsPerRequest : own.cpuUsPerRequest - other.cpuUsPerRequest)));
      const ratio = median(ps.map(([own, other]) => own.rps / other.rps));
      const ownCpu = median(ps.map(([own]) => own.cpuUsPerRequest));
      const otherCpu = median(ps.map(([, other]) => other.cpuUsPerRequest));
      lines.push(`| ${v.name} | ${v.what} | ${v.stage} | ${fmt(diff, 1)} | ${fmt(ratio, 3)}× | ${fmt(ownCpu, 1)} | ${fmt(otherCpu, 1)} |`);
      out[v.name] = { stageUs: diff, rpsRatio: ratio, pairs: ps };
    }
    process.stdout.write(`${lines.join('\n')}\n`);
    if (compared.some((v) => v.name === 'tracing-1%')) process.stdout.write(`OTLP exports received during the run: ${sink.posts()}\n`);
    writeFileSync(join(PATHS.runDir, 'stage-cost.json'), `${JSON.stringify({ date: new Date().toISOString(), options: { ...o, variants: o.variants.map((v) => v.name) }, results: out }, null, 2)}\n`);
  } finally {
    for (const r of running) await r.child.stop();
    await upstream.child?.stop();
    sink.server.close();
    clearTimeout(watchdog);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`stage-cost: ${describeFailure(err)}`);
  process.exit(1);
});
