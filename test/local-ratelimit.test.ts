// Local rate limiting end to end, through a real Remora: Istio's documented EnvoyFilter
// (local_ratelimit inserted before the router, a TypedStruct LocalRateLimit), its per-route
// form, and Remora's LocalRateLimit resource. Refusals are Envoy's: 429 `local_rate_limited`,
// `x-envoy-ratelimited: true`, response flag RL in the access log. One bucket per listener,
// shared by every client, refilled over time, and kept across hot reloads that leave it alone.
import { Agent } from 'node:http';
import t, { type Test } from 'tap';
import type { FilterRegistry } from '@remora/filters';
import { builtinFilters } from '../packages/proxy/src/runtime/builtin-filters.ts';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request, type Reply } from './helpers/http.ts';
import { doc, gateway, gatewayLocalRateLimit, routeAll, serviceEntry } from './helpers/mesh.ts';
import { freePort, waitFor } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

/** Istio's "Enabling Rate Limits using Envoy" local rate limit, for the ingress gateway. */
function gatewayLimit(maxTokens: number, tokensPerFill: number, fillInterval: string): string {
  return gatewayLocalRateLimit({ maxTokens, tokensPerFill, fillInterval, responseHeader: true });
}

function nativeLimit(spec: string): string {
  return `apiVersion: ratelimit.remora.dev/v1alpha1
kind: LocalRateLimit
metadata: { name: edge, namespace: istio-system }
spec:
${spec}
`;
}

/** A gateway on a fresh port in front of one echo backend, with `limit` as an extra file. */
async function edge(t: Test, limit: string, filters?: FilterRegistry): Promise<{ remora: InProcessRemora; backend: Backend; mesh: MeshDir; port: number }> {
  const backend = await startBackend('web');
  const port = await freePort();
  const mesh = new MeshDir({
    'routes.yaml': doc(gateway('gw', port), serviceEntry('web', 'web', [{ port: backend.port }]), routeAll('gw')),
    'limit.yaml': limit,
  });
  const remora = await startRemora('gateway', [mesh.dir], [], filters ? { filters } : {});
  t.teardown(async () => {
    await remora.stop();
    await backend.close();
    mesh.cleanup();
  });
  return { remora, backend, mesh, port };
}

function isRefusal(t: Test, r: Reply, what: string): void {
  t.equal(r.status, 429, `${what}: 429`);
  t.equal(r.body, 'local_rate_limited', `${what}: Envoy's body`);
  t.equal(r.headers['x-envoy-ratelimited'], 'true', `${what}: x-envoy-ratelimited`);
}

t.test('EnvoyFilter at the gateway: 100 tokens per 60 s, the 101st is refused with RL; the bucket survives an unrelated reload', async (t) => {
  const { remora, backend, mesh, port } = await edge(t, gatewayLimit(100, 100, '60s'));
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const send = (path: string) => request(port, path, { headers: { host: 'shop.example.com' }, agent });
  for (let i = 1; i <= 100; i++) {
    const r = await send(`/item/${i}`);
    if (r.status !== 200) t.fail(`request ${i} got ${r.status}`);
  }
  t.equal(backend.seen.length, 100, 'the first 100 reached the backend');
  const before = remora.accessLog.length;
  const refused = await send('/item/101');
  isRefusal(t, refused, 'request 101');
  t.equal(refused.headers['x-local-rate-limit'], 'true', 'response_headers_to_add');
  t.equal(backend.seen.length, 100, 'the backend did not see it');
  await waitFor('access log line of request 101', () => remora.accessLog.slice(before).some((l) => l.includes('"GET /item/101 HTTP/1.1" 429 RL local_rate_limited ')));
  t.pass('access log: 429 RL local_rate_limited');

  // An unrelated change (a new ServiceEntry) reloads the config; the bucket stays empty.
  const version = remora.proxy.runtime.snapshot!.config.version;
  mesh.write('other.yaml', serviceEntry('other', 'other', [{ port: backend.port }]));
  await waitFor('the unrelated change applies', () => remora.proxy.runtime.snapshot!.config.version !== version, 15_000);
  isRefusal(t, await send('/after-reload'), 'after an unrelated reload');

  // Changing the bucket itself starts a fresh, full bucket.
  const version2 = remora.proxy.runtime.snapshot!.config.version;
  mesh.write('limit.yaml', gatewayLimit(101, 100, '60s'));
  await waitFor('the new limit applies', () => remora.proxy.runtime.snapshot!.config.version !== version2, 15_000);
  t.equal((await send('/after-change')).status, 200, 'a changed bucket starts full');
});

t.test('concurrent clients share one bucket (LocalRateLimit resource, x-ratelimit headers)', async (t) => {
  const { backend, port } = await edge(t, nativeLimit('  tokenBucket: { maxTokens: 40, tokensPerFill: 40, fillInterval: 60s }\n  responseHeaders: true'));
  const clients = 8;
  const perClient = 10;
  const results = await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      try {
        const out: Reply[] = [];
        for (let i = 0; i < perClient; i++) out.push(await request(port, `/c${c}/${i}`, { headers: { host: 'shop.example.com' }, agent }));
        return out;
      } finally {
        agent.destroy();
      }
    }),
  );
  const all = results.flat();
  const ok = all.filter((r) => r.status === 200);
  const limited = all.filter((r) => r.status === 429);
  t.equal(ok.length, 40, 'exactly the 40 tokens passed, across all clients');
  t.equal(limited.length, clients * perClient - 40, 'the rest were refused');
  t.equal(backend.seen.length, 40);
  t.ok(results.filter((rs) => rs.some((r) => r.status === 200)).length > 1, 'more than one client got through: the bucket is shared, not per connection');
  t.equal(ok[0]!.headers['x-ratelimit-limit'], '40', 'x-ratelimit-limit');
  const remaining = ok.map((r) => Number(r.headers['x-ratelimit-remaining'])).sort((a, b) => a - b);
  t.same(remaining, Array.from({ length: 40 }, (_, i) => i), 'x-ratelimit-remaining counts down 39..0');
  t.equal(limited[0]!.headers['x-ratelimit-remaining'], '0');
  t.ok(Number(limited[0]!.headers['x-ratelimit-reset']) >= 1 && Number(limited[0]!.headers['x-ratelimit-reset']) <= 60, 'x-ratelimit-reset in seconds');
  isRefusal(t, limited[0]!, 'a refused client');
});

t.test('refill: 2 tokens every 300 ms, on the clock the test moves', async (t) => {
  let now = 1_000;
  const { port } = await edge(t, nativeLimit('  tokenBucket: { maxTokens: 2, tokensPerFill: 2, fillInterval: 300ms }\n  responseHeaders: true'), builtinFilters(null, () => now));
  const send = async (): Promise<number> => (await request(port, '/r', { headers: { host: 'shop.example.com' } })).status;
  t.same([await send(), await send()], [200, 200], 'the 2 tokens of the full bucket');
  const r = await request(port, '/r', { headers: { host: 'shop.example.com' } });
  isRefusal(t, r, 'the emptied bucket');
  t.equal(r.headers['x-ratelimit-reset'], '1', 'the next fill, in whole seconds (300 ms rounds up)');
  now += 299;
  t.equal(await send(), 429, 'no token before the fill interval has passed');
  now += 1;
  t.same([await send(), await send(), await send()], [200, 200, 429], 'at 300 ms: tokens_per_fill 2 came back');
  now += 3_000;
  t.same([await send(), await send(), await send()], [200, 200, 429], 'ten intervals later: still capped at max_tokens 2');
});

t.test('sidecar inbound: the per-route form (listener filter without a bucket, the route brings its own)', async (t) => {
  const app = await startBackend('productpage');
  const mesh = new MeshDir({
    'limit.yaml': doc(
      `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: { name: filter-local-ratelimit-svc, namespace: default }
spec:
  workloadSelector:
    labels: { app: productpage }
  configPatches:
    - applyTo: HTTP_FILTER
      match:
        context: SIDECAR_INBOUND
        listener:
          filterChain:
            filter:
              name: "envoy.filters.network.http_connection_manager"
      patch:
        operation: INSERT_BEFORE
        value:
          name: envoy.filters.http.local_ratelimit
          typed_config:
            "@type": type.googleapis.com/udpa.type.v1.TypedStruct
            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            value:
              stat_prefix: http_local_rate_limiter
    - applyTo: HTTP_ROUTE
      match:
        context: SIDECAR_INBOUND
        routeConfiguration:
          vhost:
            name: "inbound|http|${app.port}"
            route:
              action: ANY
      patch:
        operation: MERGE
        value:
          typed_per_filter_config:
            envoy.filters.http.local_ratelimit:
              "@type": type.googleapis.com/udpa.type.v1.TypedStruct
              type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              value:
                stat_prefix: http_local_rate_limiter
                token_bucket:
                  max_tokens: 3
                  tokens_per_fill: 3
                  fill_interval: 60s
                filter_enabled:
                  runtime_key: local_rate_limit_enabled
                  default_value:
                    numerator: 100
                    denominator: HUNDRED
                filter_enforced:
                  runtime_key: local_rate_limit_enforced
                  default_value:
                    numerator: 100
                    denominator: HUNDRED
                response_headers_to_add:
                  - append: false
                    header:
                      key: x-local-rate-limit
                      value: 'true'
`,
    ),
  });
  const remora = await startRemora('sidecar', [mesh.dir], ['--app-port', String(app.port), '--labels', 'app=productpage', '--namespace', 'default']);
  t.teardown(async () => {
    await remora.stop();
    await app.close();
    mesh.cleanup();
  });
  const send = () => request(remora.ports.inbound, '/productpage', { headers: { host: 'productpage:9080' } });
  for (let i = 1; i <= 3; i++) t.equal((await send()).status, 200, `request ${i}`);
  const r = await send();
  isRefusal(t, r, 'request 4');
  t.equal(r.headers['x-local-rate-limit'], 'true');
  t.equal(app.seen.length, 3);
});

t.test('per-route buckets: unnamed routes (istiod leaves them nameless) keep one bucket each, across an unrelated reload', async (t) => {
  const gw = await freePort();
  const backend = await startBackend('web');
  const routes = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: shop, namespace: default }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{ uri: { prefix: /a } }]
    route: [{ destination: { host: web } }]
  - match: [{ uri: { prefix: /b } }, { uri: { prefix: /c } }]
    route: [{ destination: { host: web } }]
`;
  const mesh = new MeshDir({
    'routes.yaml': doc(gateway('gw', gw), serviceEntry('web', 'web', [{ port: backend.port }]), routes),
    'limit.yaml': `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: { name: per-route, namespace: istio-system }
spec:
  workloadSelector: { labels: { istio: ingressgateway } }
  configPatches:
    - applyTo: HTTP_FILTER
      match: { context: GATEWAY }
      patch:
        operation: INSERT_BEFORE
        value:
          name: envoy.filters.http.local_ratelimit
          typed_config:
            "@type": type.googleapis.com/udpa.type.v1.TypedStruct
            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            value: { stat_prefix: http_local_rate_limiter }
    - applyTo: HTTP_ROUTE
      match:
        context: GATEWAY
        routeConfiguration: { portNumber: ${gw} }
      patch:
        operation: MERGE
        value:
          typed_per_filter_config:
            envoy.filters.http.local_ratelimit:
              "@type": type.googleapis.com/udpa.type.v1.TypedStruct
              type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              value:
                stat_prefix: http_local_rate_limiter
                token_bucket: { max_tokens: 2, tokens_per_fill: 2, fill_interval: 60s }
                filter_enabled: { default_value: { numerator: 100, denominator: HUNDRED } }
                filter_enforced: { default_value: { numerator: 100, denominator: HUNDRED } }
`,
  });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(async () => {
    await remora.stop();
    await backend.close();
    mesh.cleanup();
  });
  const rc = remora.proxy.runtime.snapshot!.config.routeConfigs.find((r) => r.name === `http.${gw}`);
  t.same(
    rc?.virtualHosts.flatMap((v) => v.routes.map((r) => [r.name, r.origin])),
    [
      ['', 'default/shop#0'],
      ['', 'default/shop#1.0'],
      ['', 'default/shop#1.1'],
    ],
    'three routes, all unnamed',
  );
  const send = (path: string) => request(gw, path, { headers: { host: 'shop.example.com' } });
  t.equal((await send('/a')).status, 200);
  t.equal((await send('/a')).status, 200);
  isRefusal(t, await send('/a'), 'the third request to /a');
  for (const path of ['/b', '/b', '/c', '/c']) t.equal((await send(path)).status, 200, `${path}: a bucket of its own, not /a's`);
  isRefusal(t, await send('/b'), 'the third request to /b');

  // An unrelated change reloads the config: every route keeps its (empty) bucket.
  const version = remora.proxy.runtime.snapshot!.config.version;
  mesh.write('other.yaml', serviceEntry('other', 'other', [{ port: backend.port }]));
  await waitFor('the unrelated change applies', () => remora.proxy.runtime.snapshot!.config.version !== version, 15_000);
  for (const path of ['/a', '/b', '/c']) isRefusal(t, await send(path), `${path} after an unrelated reload`);
});

t.test('a bad limit is a config error naming the resource and field; the last good config keeps serving', async (t) => {
  const { remora, mesh, port } = await edge(t, gatewayLimit(5, 5, '60s'));
  const version = remora.proxy.runtime.snapshot!.config.version;
  mesh.write('limit.yaml', gatewayLimit(-5, 5, '60s'));
  // The file, the EnvoyFilter, the patch and the field path from Envoy's descriptors (the log wraps long lines).
  const logged = /limit\.yaml:\d+:\s+EnvoyFilter\s+istio-system\/filter-local-ratelimit-gw:\s+spec\.configPatches\[0\]\.patch\.value\.typed_config\.value\.token_bucket\.max_tokens:\s+cannot\s+decode\s+field\s+envoy\.type\.v3\.TokenBucket\.max_tokens\s+from\s+JSON:\s+expected\s+number\s+\(uint32\):\s+-5\s+out\s+of\s+range/;
  await waitFor('the error is logged', () => remora.log.some((l) => logged.test(l)), 15_000);
  t.equal(remora.proxy.runtime.snapshot!.config.version, version, 'the last good config stays');
  t.equal((await request(port, '/', { headers: { host: 'shop.example.com' } })).status, 200);
});

t.test('descriptors: a header picks its own bucket through the route rate_limits', async (t) => {
  const gw = await freePort();
  const backend = await startBackend('web');
  const mesh = new MeshDir({
    'routes.yaml': doc(gateway('gw', gw), serviceEntry('web', 'web', [{ port: backend.port }]), routeAll('gw')),
    'limit.yaml': `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: { name: per-client, namespace: istio-system }
spec:
  workloadSelector: { labels: { istio: ingressgateway } }
  configPatches:
    - applyTo: HTTP_FILTER
      match: { context: GATEWAY }
      patch:
        operation: INSERT_BEFORE
        value:
          name: envoy.filters.http.local_ratelimit
          typed_config:
            "@type": type.googleapis.com/udpa.type.v1.TypedStruct
            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            value:
              stat_prefix: http_local_rate_limiter
              token_bucket: { max_tokens: 50, tokens_per_fill: 50, fill_interval: 60s }
              filter_enabled: { default_value: { numerator: 100, denominator: HUNDRED } }
              filter_enforced: { default_value: { numerator: 100, denominator: HUNDRED } }
              descriptors:
                - entries: [{ key: client, value: batch }]
                  token_bucket: { max_tokens: 2, tokens_per_fill: 2, fill_interval: 60s }
    - applyTo: HTTP_ROUTE
      match:
        context: GATEWAY
        routeConfiguration: { portNumber: ${gw} }
      patch:
        operation: MERGE
        value:
          route:
            rate_limits:
              - actions: [{ request_headers: { header_name: x-client, descriptor_key: client } }]
`,
  });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(async () => {
    await remora.stop();
    await backend.close();
    mesh.cleanup();
  });
  t.same(remora.log.filter((l) => /warn/.test(l) && /per-client/.test(l)), [], 'no warnings about the filter');
  const send = (client: string) => request(gw, '/', { headers: { host: 'shop.example.com', 'x-client': client } });
  t.equal((await send('batch')).status, 200);
  t.equal((await send('batch')).status, 200);
  isRefusal(t, await send('batch'), 'the third batch request (its descriptor allows 2)');
  for (let i = 0; i < 5; i++) t.equal((await send('web')).status, 200, `other clients use the default bucket (${i + 1})`);
});

t.test('an EnvoyFilter inserting a filter Remora lacks is refused, naming it; the last good config keeps serving; is_optional skips it', async (t) => {
  const { remora, mesh, port } = await edge(t, gatewayLimit(5, 5, '60s'));
  const version = remora.proxy.runtime.snapshot!.config.version;
  const lua = (optional: boolean) => `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: { name: lua, namespace: istio-system }
spec:
  configPatches:
    - applyTo: HTTP_FILTER
      match: { context: GATEWAY }
      patch:
        operation: INSERT_FIRST
        value:
          name: envoy.filters.http.lua
          ${optional ? 'is_optional: true' : ''}
`;
  mesh.write('lua.yaml', lua(false));
  const refused = /lua\.yaml:\d+:\s+EnvoyFilter\s+istio-system\/lua:\s+spec\.configPatches\[0\]\.patch\.value\.name:\s+Remora\s+has\s+no\s+HTTP\s+filter\s+envoy\.filters\.http\.lua/;
  await waitFor('the error is logged', () => remora.log.some((l) => refused.test(l)), 15_000);
  t.equal(remora.proxy.runtime.snapshot!.config.version, version, 'the last good config stays');
  t.equal((await request(port, '/', { headers: { host: 'shop.example.com' } })).status, 200);
  mesh.write('lua.yaml', lua(true));
  await waitFor('the optional filter is accepted', () => remora.proxy.runtime.snapshot!.config.version !== version, 15_000);
  t.ok(remora.log.some((l) => /is optional, so it is skipped/.test(l)), 'a warning says it is skipped');
  t.equal((await request(port, '/', { headers: { host: 'shop.example.com' } })).status, 200);
});
