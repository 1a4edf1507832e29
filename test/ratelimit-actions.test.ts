// Envoy's rate limit actions beyond the headers and the client address, end to end: a gateway
// (`remora gateway` on 127.31.8.1:8080) with the global ratelimit filter asks, over gRPC, the
// service of `remora ratelimit-service` (run in the test's process, on the test's clock), which
// counts in a real redis-server. The virtual host's rate_limits use
// source_cluster (the gateway's service cluster, istio-agent's `<app>.<namespace>`),
// masked_remote_address and query_parameter_value_match (with expect_match false too); the
// `plans` route reads its own metadata (metadata action, source ROUTE_ENTRY).
import { spawn, type ChildProcess } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import t from 'tap';
import { startBackend } from './helpers/backends.ts';
import { doc, serviceEntry } from './helpers/mesh.ts';
import { collectLines, freePort, waitFor } from './helpers/net.ts';
import { startTestRls } from './helpers/ratelimit-service.ts';
import { MeshDir, spawnRemora } from './helpers/remora.ts';

const RATELIMIT_CONFIG = `domain: actions
descriptors:
  - key: source_cluster
    value: istio-ingressgateway.istio-system
    descriptors:
      - key: PATH
        value: /source
        rate_limit: { unit: minute, requests_per_unit: 1 }
  - key: case
    value: masked
    descriptors:
      - key: masked_remote_address
        value: 127.0.0.0/8
        rate_limit: { unit: minute, requests_per_unit: 1 }
  - key: query_match
    value: free-tier
    rate_limit: { unit: minute, requests_per_unit: 1 }
  - key: case
    value: anon
    descriptors:
      - key: no_token
        value: anonymous
        rate_limit: { unit: minute, requests_per_unit: 2 }
  - key: plan
    value: gold
    rate_limit: { unit: minute, requests_per_unit: 1 }
`;

const FILTER_RATELIMIT = `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: { name: filter-ratelimit, namespace: istio-system }
spec:
  workloadSelector: { labels: { istio: ingressgateway } }
  configPatches:
    - applyTo: HTTP_FILTER
      match:
        context: GATEWAY
        listener: { filterChain: { filter: { name: envoy.filters.network.http_connection_manager, subFilter: { name: envoy.filters.http.router } } } }
      patch:
        operation: INSERT_BEFORE
        value:
          name: envoy.filters.http.ratelimit
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
            domain: actions
            failure_mode_deny: true
            timeout: 5s
            rate_limit_service:
              grpc_service:
                envoy_grpc: { cluster_name: outbound|8081||ratelimit.default.svc.cluster.local, authority: ratelimit.default.svc.cluster.local }
              transport_api_version: V3
    - applyTo: VIRTUAL_HOST
      match:
        context: GATEWAY
        routeConfiguration: { vhost: { name: "*:8080" } }
      patch:
        operation: MERGE
        value:
          rate_limits:
            - actions:
              - source_cluster: {}
              - request_headers: { header_name: ":path", descriptor_key: PATH }
            - actions:
              - header_value_match:
                  descriptor_key: case
                  descriptor_value: masked
                  headers: [{ name: ":path", string_match: { prefix: /masked } }]
              - masked_remote_address: { v4_prefix_mask_len: 8 }
            - actions:
              - query_parameter_value_match:
                  descriptor_value: free-tier
                  query_parameters: [{ name: tier, string_match: { exact: free } }]
            - actions:
              - header_value_match:
                  descriptor_key: case
                  descriptor_value: anon
                  headers: [{ name: ":path", string_match: { prefix: /anon } }]
              - query_parameter_value_match:
                  descriptor_key: no_token
                  descriptor_value: anonymous
                  expect_match: false
                  query_parameters: [{ name: token, present_match: true }]
    - applyTo: HTTP_ROUTE
      match:
        context: GATEWAY
        routeConfiguration: { vhost: { name: "*:8080", route: { name: plans } } }
      patch:
        operation: MERGE
        value:
          metadata: { filter_metadata: { acme.plans: { plan: { name: gold } } } }
          route:
            rate_limits:
              - actions:
                - metadata:
                    descriptor_key: plan
                    metadata_key: { key: acme.plans, path: [{ key: plan }, { key: name }] }
                    source: ROUTE_ENTRY
`;

const GATEWAY = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: gw, namespace: istio-system }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: 8080, name: http, protocol: HTTP }
    hosts: ["*"]
`;

const VIRTUAL_SERVICE = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: app, namespace: istio-system }
spec:
  gateways: [gw]
  hosts: ["*"]
  http:
  - name: plans
    match: [{ uri: { prefix: /plans } }]
    route: [{ destination: { host: app.default.svc.cluster.local, port: { number: 9080 } } }]
  - route: [{ destination: { host: app.default.svc.cluster.local, port: { number: 9080 } } }]
`;

function ratelimitServiceEntry(port: number): string {
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ratelimit, namespace: default }
spec:
  hosts: ["ratelimit.default.svc.cluster.local"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 8081, name: grpc, protocol: GRPC }]
  endpoints: [{ address: 127.0.0.1, ports: { grpc: ${port} } }]
`;
}

interface Proc {
  readonly out: string[];
  stop(): Promise<void>;
}

function run(cmd: string, args: string[]): Proc {
  const child: ChildProcess = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const out: string[] = [];
  child.stdout!.on('data', collectLines(out));
  child.stderr!.on('data', collectLines(out));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    out,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

const GW = '127.31.8.1';

function get(path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: GW, port: 8080, path, headers: { host: 'app.example.com' }, agent: false, timeout: 10_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

t.test('rate limit actions with a real rate limit service', async (t) => {
  const app = await startBackend('app');
  const [redisPort, rlsPort] = [await freePort(), await freePort()];
  const mesh = new MeshDir({
    'ratelimit-config.yaml': RATELIMIT_CONFIG,
    'mesh.yaml': doc(GATEWAY, VIRTUAL_SERVICE, serviceEntry('app', 'app', [{ port: app.port }], { port: 9080 }), ratelimitServiceEntry(rlsPort)),
    'filters.yaml': FILTER_RATELIMIT,
  });
  const procs: { stop(): Promise<unknown> }[] = [];
  t.teardown(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await app.close();
    mesh.cleanup();
  });
  const redis = run('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
  procs.push(redis);
  await waitFor('redis-server', () => redis.out.some((l) => /Ready to accept connections/.test(l)), 10_000, { output: redis.out, outputName: 'output' });
  // In the test's process, on the test's clock: every scenario falls in one per-minute window.
  const rls = await startTestRls(rlsPort, redisPort, `${mesh.dir}/ratelimit-config.yaml`);
  procs.push(rls);
  const gw = await spawnRemora('gateway', [`${mesh.dir}/mesh.yaml`, `${mesh.dir}/filters.yaml`], ['--bind', GW]);
  procs.push(gw);
  t.teardown(() => { if (t.passing() === false) t.comment([...gw.stdout, ...gw.stderr, ...rls.out].join('\n')); });
  t.notOk(gw.stderr.some((l) => /not supported/.test(l)), `no action refused (${gw.stderr.join('\n')})`);

  t.test('source_cluster: the gateway\'s service cluster, istio-ingressgateway.istio-system', async (t) => {
    t.equal(await get('/source'), 200);
    t.equal(await get('/source'), 429, 'the second is over the limit of (source_cluster, PATH)');
    t.equal(await get('/other'), 200, 'another path has no limit');
  });

  t.test('masked_remote_address: the client 127.0.0.1 counts as 127.0.0.0/8', async (t) => {
    t.equal(await get('/masked/a'), 200);
    t.equal(await get('/masked/b'), 429, 'another path, the same masked address');
  });

  t.test('query_parameter_value_match', async (t) => {
    t.equal(await get('/q?tier=free'), 200);
    t.equal(await get('/q?tier=free&x=1'), 429, 'tier=free again');
    t.equal(await get('/q?tier=paid'), 200, 'another value does not match: no descriptor');
    t.equal(await get('/q?tier=paid'), 200);
  });

  t.test('query_parameter_value_match with expect_match false', async (t) => {
    t.equal(await get('/anon?token=a'), 200);
    t.equal(await get('/anon?token=b'), 200);
    t.equal(await get('/anon?token=c'), 200, 'with a token: no descriptor, never limited');
    t.equal(await get('/anon'), 200);
    t.equal(await get('/anon'), 200);
    t.equal(await get('/anon'), 429, 'without one: the third anonymous request is over 2 a minute');
  });

  t.test('metadata from the route entry, by path', async (t) => {
    t.equal(await get('/plans/a'), 200);
    t.equal(await get('/plans/b'), 429, 'plan=gold from the route metadata, limited to 1');
  });
});
