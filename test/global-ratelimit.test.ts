// Global rate limit end to end, from istio.io's "Enabling Rate Limits using Envoy" task: the
// task's EnvoyFilters (the ratelimit HTTP filter before the router, the virtual host's
// `:path` descriptor, the `api` route's header_value_match) and its ratelimit ConfigMap,
// verbatim. Two gateways (`remora gateway`, each its own process, on 127.31.7.1:8080 and
// 127.31.7.2:8080 so the task's `*:8080` virtual host is theirs) ask the rate limit service of
// `remora ratelimit-service` over gRPC, which counts in a real redis-server started here: both
// gateways draw on one limit. The service runs in the test's process with the test's clock, so
// the per-minute windows start and end where the test says. Redis or the service down:
// failure_mode_deny decides, within the timeout.
import { spawn, type ChildProcess } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { create, fromBinary, toBinary, type MessageInitShape } from '@bufbuild/protobuf';
import { RateLimitRequestSchema, RateLimitResponseSchema, RateLimitResponse_Code, type RateLimitRequest, type RateLimitResponse } from '@remora/config/envoy/gen/envoy/service/ratelimit/v3/rls_pb.js';
import t from 'tap';
import { startBackend } from './helpers/backends.ts';
import { doc, serviceEntry } from './helpers/mesh.ts';
import { collectLines, freePort, waitFor } from './helpers/net.ts';
import { request, type Reply } from './helpers/http.ts';
import { startTestRls, RlsClock } from './helpers/ratelimit-service.ts';
import { CLI, MeshDir, spawnRemora, type SpawnedRemora } from './helpers/remora.ts';

// ---- istio.io's task, verbatim ----

const RATELIMIT_CONFIG = `domain: ratelimit
descriptors:
  - key: PATH
    value: "/productpage"
    rate_limit:
      unit: minute
      requests_per_unit: 1
  - key: PATH
    value: "api"
    rate_limit:
      unit: minute
      requests_per_unit: 2
  - key: PATH
    rate_limit:
      unit: minute
      requests_per_unit: 100
`;

const FILTER_RATELIMIT = `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: filter-ratelimit
  namespace: istio-system
spec:
  workloadSelector:
    # select by label in the same namespace
    labels:
      istio: ingressgateway
  configPatches:
    # The Envoy config you want to modify
    - applyTo: HTTP_FILTER
      match:
        context: GATEWAY
        listener:
          filterChain:
            filter:
              name: "envoy.filters.network.http_connection_manager"
              subFilter:
                name: "envoy.filters.http.router"
      patch:
        operation: INSERT_BEFORE
        # Adds the Envoy Rate Limit Filter in HTTP filter chain.
        value:
          name: envoy.filters.http.ratelimit
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
            # domain can be anything! Match it to the ratelimter service config
            domain: ratelimit
            failure_mode_deny: true
            timeout: 10s
            rate_limit_service:
              grpc_service:
                envoy_grpc:
                  cluster_name: outbound|8081||ratelimit.default.svc.cluster.local
                  authority: ratelimit.default.svc.cluster.local
              transport_api_version: V3
`;

const FILTER_RATELIMIT_SVC = `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: filter-ratelimit-svc
  namespace: istio-system
spec:
  workloadSelector:
    labels:
      istio: ingressgateway
  configPatches:
    - applyTo: VIRTUAL_HOST
      match:
        context: GATEWAY
        routeConfiguration:
          vhost:
            name: ""
            route:
              action: ANY
      patch:
        operation: MERGE
        # Applies the rate limit rules.
        value:
          rate_limits:
            - actions: # any actions in here
              - request_headers:
                  header_name: ":path"
                  descriptor_key: "PATH"
`;

const VIRTUAL_SERVICE = `apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: bookinfo
spec:
  gateways:
  - bookinfo-gateway
  hosts:
  - '*'
  http:
  - match:
    - uri:
        exact: /productpage
    - uri:
        prefix: /static
    - uri:
        exact: /login
    - uri:
        exact: /logout
    route:
    - destination:
        host: productpage
        port:
          number: 9080
  - match:
    - uri:
        prefix: /api/v1/products
    route:
    - destination:
        host: productpage
        port:
          number: 9080
    name: api
`;

const FILTER_RATELIMIT_SVC_API = `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: filter-ratelimit-svc-api
  namespace: istio-system
spec:
  workloadSelector:
    labels:
      istio: ingressgateway
  configPatches:
    - applyTo: HTTP_ROUTE
      match:
        context: GATEWAY
        routeConfiguration:
          vhost:
            name: "*:8080"
            route:
              name: "api"
      patch:
        operation: MERGE
        value:
          route:
            rate_limits:
            - actions:
              - header_value_match:
                  descriptor_key: "PATH"
                  descriptor_value: "api"
                  headers:
                    - name: ":path"
                      safe_regex_match:
                        google_re2: {}
                        regex: "/api/v1/products/[1-9]{1,2}"
`;

// Bookinfo's gateway (samples/bookinfo/networking/bookinfo-gateway.yaml).
const BOOKINFO_GATEWAY = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 8080
      name: http
      protocol: HTTP
    hosts:
    - "*"
`;

/** The ratelimit Service of the task's samples/ratelimit/rate-limit-service.yaml, its endpoints here. */
function ratelimitServiceEntry(ports: readonly number[]): string {
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ratelimit, namespace: default }
spec:
  hosts: ["ratelimit.default.svc.cluster.local"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - { number: 8081, name: grpc, protocol: GRPC }
  endpoints:
${ports.map((p) => `  - { address: 127.0.0.1, ports: { grpc: ${p} } }`).join('\n')}
`;
}

// ---- processes ----

interface Proc {
  readonly child: ChildProcess;
  readonly out: string[];
  stop(): Promise<void>;
}

function run(cmd: string, args: string[]): Proc {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const out: string[] = [];
  child.stdout!.on('data', collectLines(out));
  child.stderr!.on('data', collectLines(out));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    child,
    out,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

async function startRedis(port: number): Promise<Proc> {
  const p = run('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
  await waitFor(`redis-server on ${port}`, () => p.out.some((l) => /Ready to accept connections/.test(l)), 10_000, { output: p.out, outputName: 'output' });
  return p;
}


/** One ShouldRateLimit call, as the proxy's filter makes it. */
function shouldRateLimit(port: number, req: MessageInitShape<typeof RateLimitRequestSchema>): Promise<RateLimitResponse> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return new Promise<RateLimitResponse>((resolve, reject) => {
    client.makeUnaryRequest(
      '/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit',
      (m: RateLimitRequest) => Buffer.from(toBinary(RateLimitRequestSchema, m)),
      (b: Buffer) => fromBinary(RateLimitResponseSchema, b),
      create(RateLimitRequestSchema, req),
      { deadline: Date.now() + 5000 },
      (err, res) => (err ? reject(err) : resolve(res!)),
    );
  }).finally(() => client.close());
}

async function startGateway(address: string, files: string[]): Promise<SpawnedRemora> {
  return spawnRemora('gateway', files, ['--bind', address]);
}

/** A GET to a gateway on its own loopback address. */
function getAt(address: string, path: string, timeoutMs = 15_000): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: address, port: 8080, path, headers: { host: 'bookinfo.com' }, agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: <T>() => JSON.parse(body) as T });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${address}:8080${path} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

async function stat(admin: number, name: string): Promise<number> {
  const r = await request(admin, '/stats');
  const line = r.body.split('\n').find((l) => l.startsWith(`${name}: `));
  return line === undefined ? -1 : Number(line.slice(name.length + 2));
}

const GW1 = '127.31.7.1';
const GW2 = '127.31.7.2';

t.test("istio.io's global rate limit task: two gateways, one RLS, one Redis, one limit", async (t) => {
  const app = await startBackend('productpage');
  const [redisPort, rlsPort] = [await freePort(), await freePort()];
  const redis = await startRedis(redisPort);
  const mesh = new MeshDir({
    'ratelimit-config.yaml': RATELIMIT_CONFIG,
    'mesh.yaml': doc(BOOKINFO_GATEWAY, VIRTUAL_SERVICE, serviceEntry('productpage', 'productpage', [{ port: app.port }], { port: 9080 }), ratelimitServiceEntry([rlsPort])),
    'filters.yaml': doc(FILTER_RATELIMIT, FILTER_RATELIMIT_SVC, FILTER_RATELIMIT_SVC_API),
  });
  const procs: { stop(): Promise<unknown> }[] = [redis];
  t.teardown(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await app.close();
    mesh.cleanup();
  });
  const rls = await startTestRls(rlsPort, redisPort, `${mesh.dir}/ratelimit-config.yaml`);
  procs.push(rls);
  const files = [`${mesh.dir}/mesh.yaml`, `${mesh.dir}/filters.yaml`];
  const gw1 = await startGateway(GW1, files);
  procs.push(gw1);
  const gw2 = await startGateway(GW2, files);
  procs.push(gw2);

  t.test('/productpage: 1 a minute across both gateways', async (t) => {
    const first = await getAt(GW1, '/productpage');
    t.equal(first.status, 200, 'the first request goes through');
    const second = await getAt(GW2, '/productpage');
    t.equal(second.status, 429, 'the second, through the other gateway, is over the shared limit');
    t.equal(second.headers['x-envoy-ratelimited'], 'true');
    t.equal(second.headers['x-ratelimit-limit'], undefined, 'no x-ratelimit-* headers unless enabled');
    await waitFor('access log 429 RL request_rate_limited', () => gw2.stdout.some((l) => / 429 RL request_rate_limited /.test(l)));
    t.equal(await stat(gw2.ports.admin, 'cluster.outbound|9080||productpage.default.svc.cluster.local.ratelimit.over_limit'), 1, "Envoy's over_limit counter, under the route's cluster");
    t.equal(await stat(gw1.ports.admin, 'cluster.outbound|9080||productpage.default.svc.cluster.local.ratelimit.ok'), 1);
  });

  t.test('/api/v1/products/*: the route-level header_value_match descriptor, 2 a minute', async (t) => {
    t.equal((await getAt(GW1, '/api/v1/products/1')).status, 200);
    t.equal((await getAt(GW2, '/api/v1/products/2')).status, 200);
    t.equal((await getAt(GW1, '/api/v1/products/3')).status, 429, 'the third, whichever gateway, is refused');
    // No product number: the header_value_match yields nothing, and the route's own rate_limits
    // replace the virtual host's, so no descriptor is sent at all.
    for (let i = 0; i < 3; i++) t.equal((await getAt(GW2, '/api/v1/products')).status, 200);
  });

  t.test('other paths: their own 100 a minute', async (t) => {
    for (let i = 0; i < 3; i++) t.equal((await getAt(i % 2 === 0 ? GW1 : GW2, '/static/x.css')).status, 200);
  });

  t.test("the next minute: a new window, each limit's count starts again", async (t) => {
    rls.clock.advance(60);
    t.equal((await getAt(GW2, '/productpage')).status, 200, 'the first request of the new minute goes through');
    t.equal((await getAt(GW1, '/productpage')).status, 429, 'the second is over the limit again');
    t.equal((await getAt(GW1, '/api/v1/products/4')).status, 200);
  });

  t.test('`remora ratelimit-service`, the CLI, serves the same config', async (t) => {
    const port = await freePort();
    const cli = run(process.execPath, [CLI, 'ratelimit-service', '-c', `${mesh.dir}/ratelimit-config.yaml`, '--port', String(port), '--bind', '127.0.0.1', '--redis', `127.0.0.1:${redisPort}`, '--cache-key-prefix', 'cli_']);
    procs.push(cli);
    await waitFor('ratelimit-service (CLI) listening', () => cli.out.some((l) => l.includes(`listening on 127.0.0.1:${port} (gRPC), domains ratelimit`)), 10_000, { output: cli.out, outputName: 'output' });
    // One call: its own key prefix makes it the first of its window, whichever minute it is.
    const res = await shouldRateLimit(port, { domain: 'ratelimit', descriptors: [{ entries: [{ key: 'PATH', value: '/productpage' }] }] });
    t.equal(res.overallCode, RateLimitResponse_Code.OK);
    t.equal(res.statuses[0]?.currentLimit?.requestsPerUnit, 1, 'the limit of the config file');
    t.equal(res.statuses[0]?.limitRemaining, 0);
    await cli.stop();
    t.equal(cli.child.exitCode, 0, 'SIGTERM: a clean exit');
  });

  t.test('Redis down: failure_mode_deny answers 500 RLSE, promptly', async (t) => {
    await redis.stop();
    const start = performance.now();
    const r = await getAt(GW1, '/login');
    t.equal(r.status, 500);
    t.ok(performance.now() - start < 3000, 'the service fails the call at once');
    await waitFor('access log 500 RLSE rate_limiter_error', () => gw1.stdout.some((l) => / 500 RLSE rate_limiter_error /.test(l)));
    t.ok((await stat(gw1.ports.admin, 'cluster.outbound|9080||productpage.default.svc.cluster.local.ratelimit.error')) >= 1, 'counted as error');
  });

  t.test('the rate limit service down: 500 RLSE too, never a hang', async (t) => {
    await rls.stop();
    const start = performance.now();
    t.equal((await getAt(GW2, '/logout')).status, 500);
    t.ok(performance.now() - start < 3000, 'a refused connection fails fast');
  });
});

// The same filter with response headers, failure_mode_deny off and a short timeout; two
// service instances behind the one ServiceEntry share a Redis.
const FILTER_WITH_HEADERS = FILTER_RATELIMIT.replace('failure_mode_deny: true', 'failure_mode_deny: false\n            enable_x_ratelimit_headers: DRAFT_VERSION_03')
  .replace('timeout: 10s', 'timeout: 0.3s')
  .replace('domain: ratelimit\n', 'domain: gateway-api\n');

const HEADERS_CONFIG = `domain: gateway-api
descriptors:
  - key: PATH
    value: "/productpage"
    rate_limit:
      unit: minute
      requests_per_unit: 4
  - key: PATH
    value: "/login"
    shadow_mode: true
    rate_limit:
      unit: minute
      requests_per_unit: 1
`;

const GW3 = '127.31.7.3';
const GW4 = '127.31.7.4';

t.test('x-ratelimit-* headers, two service instances, failure_mode_deny false', async (t) => {
  const app = await startBackend('productpage');
  const [redisPort, rls1Port, rls2Port] = [await freePort(), await freePort(), await freePort()];
  const redis = await startRedis(redisPort);
  const mesh = new MeshDir({
    'ratelimit-config.yaml': HEADERS_CONFIG,
    'mesh.yaml': doc(BOOKINFO_GATEWAY, VIRTUAL_SERVICE, serviceEntry('productpage', 'productpage', [{ port: app.port }], { port: 9080 }), ratelimitServiceEntry([rls1Port, rls2Port])),
    'filters.yaml': doc(FILTER_WITH_HEADERS, FILTER_RATELIMIT_SVC),
  });
  const hangs: Socket[] = [];
  let silent: Server | null = null;
  const procs: { stop(): Promise<unknown> }[] = [redis];
  t.teardown(async () => {
    for (const s of hangs) s.destroy();
    silent?.close();
    await Promise.all(procs.map((p) => p.stop()));
    await app.close();
    mesh.cleanup();
  });
  const clock = new RlsClock();
  const rls: { stop(): Promise<void> }[] = [];
  for (const port of [rls1Port, rls2Port]) {
    rls.push(await startTestRls(port, redisPort, `${mesh.dir}/ratelimit-config.yaml`, clock));
    procs.push(rls.at(-1)!);
  }
  const files = [`${mesh.dir}/mesh.yaml`, `${mesh.dir}/filters.yaml`];
  const gw3 = await startGateway(GW3, files);
  procs.push(gw3);
  const gw4 = await startGateway(GW4, files);
  procs.push(gw4);

  t.test('4 a minute: 2 + 2 pass with the remaining count, the 5th gets 429 and the headers', async (t) => {
    const remaining: unknown[] = [];
    for (const gw of [GW3, GW4, GW3, GW4]) {
      const r = await getAt(gw, '/productpage');
      t.equal(r.status, 200);
      t.equal(r.headers['x-ratelimit-limit'], '4, 4;w=60', "Envoy's DRAFT_VERSION_03 quota policy");
      remaining.push(r.headers['x-ratelimit-remaining']);
    }
    t.same(remaining, ['3', '2', '1', '0'], 'one count across both gateways and both service instances');
    const fifth = await getAt(GW3, '/productpage');
    t.equal(fifth.status, 429);
    t.equal(fifth.headers['x-envoy-ratelimited'], 'true');
    t.equal(fifth.headers['x-ratelimit-limit'], '4, 4;w=60');
    t.equal(fifth.headers['x-ratelimit-remaining'], '0');
    const reset = Number(fifth.headers['x-ratelimit-reset']);
    t.ok(reset > 0 && reset <= 60, `x-ratelimit-reset is the time left in the minute (${reset})`);
  });

  t.test('shadow_mode: over the limit, still allowed', async (t) => {
    for (let i = 0; i < 3; i++) t.equal((await getAt(i % 2 === 0 ? GW3 : GW4, '/login')).status, 200);
  });

  t.test('a path without a configured limit is neither counted nor given headers', async (t) => {
    const r = await getAt(GW4, '/static/a.js');
    t.equal(r.status, 200);
    t.equal(r.headers['x-ratelimit-limit'], undefined);
  });

  t.test('Redis down: requests pass (failure_mode_allowed)', async (t) => {
    await redis.stop();
    for (const gw of [GW3, GW4]) t.equal((await getAt(gw, '/productpage')).status, 200);
    t.ok((await stat(gw3.ports.admin, 'cluster.outbound|9080||productpage.default.svc.cluster.local.ratelimit.failure_mode_allowed')) >= 1);
  });

  t.test('a service that accepts and never answers: bounded by the 0.3 s timeout, then allowed', async (t) => {
    await Promise.all(rls.map((p) => p.stop()));
    silent = createServer((s) => void hangs.push(s));
    await new Promise<void>((r) => silent!.listen(rls1Port, '127.0.0.1', r));
    const silent2 = createServer((s) => void hangs.push(s));
    await new Promise<void>((r) => silent2.listen(rls2Port, '127.0.0.1', r));
    t.teardown(() => void silent2.close());
    const start = performance.now();
    const r = await getAt(GW3, '/productpage');
    const took = performance.now() - start;
    t.equal(r.status, 200);
    t.ok(took >= 250 && took < 3000, `waited for the timeout, not longer (${Math.round(took)} ms)`);
  });
});
