// EnvoyFilter patches beyond inserting a local rate limit, over real HTTP through a real
// gateway and sidecar: REMOVE of rbac lets a denied request through; REPLACE and MERGE of a
// local rate limit change its bucket; MERGE of a fault filter changes its abort; where
// INSERT_FIRST and INSERT_BEFORE put a filter relative to jwt_authn and rbac is seen in which
// filter answers; priority decides the order of two patches; the connection manager MERGE
// changes the `server` header; a bad typed_config is refused naming the file, the
// EnvoyFilter, the patch and the field, and the last good config keeps serving.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { startBackend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway, routeAll, serviceEntry } from './helpers/mesh.ts';
import { freePort, waitFor } from './helpers/net.ts';
import { CORPUS, MeshDir, startRemora } from './helpers/remora.ts';

const HOST = { host: 'shop.example.com' };
const ISTIO_JWKS = readFileSync(join(CORPUS, 'jwt/jwks.json'), 'utf8').trim();

const DENY_ADMIN = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  action: DENY
  rules:
  - to: [{ operation: { paths: ["/admin*"] } }]
`;

const JWT = `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: jwt, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: ${JSON.stringify(ISTIO_JWKS)}
`;

/** An EnvoyFilter on the gateway's HTTP connection manager with one HTTP_FILTER patch. */
function httpFilterPatch(o: { name?: string; priority?: number; operation: string; subFilter?: string; value?: string }): string {
  return `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: { name: ${o.name ?? 'patch'}, namespace: istio-system }
spec:
  workloadSelector: { labels: { istio: ingressgateway } }
${o.priority === undefined ? '' : `  priority: ${o.priority}\n`}  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: GATEWAY
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
${o.subFilter === undefined ? '' : `            subFilter: { name: ${o.subFilter} }\n`}    patch:
      operation: ${o.operation}
${o.value === undefined ? '' : `      value:\n${o.value.replace(/^/gm, '        ')}\n`}`;
}

const limit = (tokens: number) => `name: envoy.filters.http.local_ratelimit
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
  stat_prefix: http_local_rate_limiter
  token_bucket: { max_tokens: ${tokens}, tokens_per_fill: ${tokens}, fill_interval: 3600s }
  filter_enabled: { runtime_key: e, default_value: { numerator: 100 } }
  filter_enforced: { runtime_key: f, default_value: { numerator: 100 } }`;

const fault = (status: number, extra = '') => `name: envoy.filters.http.fault
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
  abort: { http_status: ${status}, percentage: { numerator: 100 } }${extra}`;

async function gatewayWith(t: Test, ...extra: string[]) {
  const backend = await startBackend('web');
  const port = await freePort();
  const mesh = new MeshDir({
    'mesh.yaml': doc(gateway('gw', port), serviceEntry('web', 'web', [{ port: backend.port }]), routeAll('gw'), DENY_ADMIN),
    'patches.yaml': doc(...extra),
  });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(async () => {
    await remora.stop();
    await backend.close();
    mesh.cleanup();
  });
  const status = async (path: string, headers: Record<string, string> = {}): Promise<number> => (await request(port, path, { headers: { ...HOST, ...headers } })).status;
  const version = (): string => remora.proxy.runtime.snapshot!.config.version;
  return { status, backend, remora, mesh, port, version };
}

t.test('REMOVE rbac: a request the DENY policy refused goes through once the patch loads', async (t) => {
  const { status, mesh, version } = await gatewayWith(t);
  t.equal(await status('/admin'), 403, 'denied by the AuthorizationPolicy');
  const before = version();
  mesh.write('patches.yaml', httpFilterPatch({ operation: 'REMOVE', subFilter: 'envoy.filters.http.rbac' }));
  await waitFor('the patch applies', () => version() !== before, 15_000);
  t.equal(await status('/admin'), 200, 'no rbac filter: the request reaches the backend');
});

t.test('REPLACE of the local rate limit: the replacement bucket applies', async (t) => {
  const { status } = await gatewayWith(
    t,
    httpFilterPatch({ name: 'insert', operation: 'INSERT_BEFORE', value: limit(1) }),
    httpFilterPatch({ name: 'replace', operation: 'REPLACE', subFilter: 'envoy.filters.http.local_ratelimit', value: limit(3) }),
  );
  for (let i = 1; i <= 3; i++) t.equal(await status(`/shop/${i}`), 200, `request ${i}: the replacement has 3 tokens`);
  t.equal(await status('/shop/4'), 429);
});

t.test("MERGE into the local rate limit's token bucket: max_tokens replaced, the rest kept", async (t) => {
  const merge = httpFilterPatch({
    name: 'merge',
    operation: 'MERGE',
    subFilter: 'envoy.filters.http.local_ratelimit',
    value: `typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
  token_bucket: { max_tokens: 2 }`,
  });
  const { status } = await gatewayWith(t, httpFilterPatch({ name: 'insert', operation: 'INSERT_BEFORE', value: limit(100) }), merge);
  t.equal(await status('/shop/1'), 200);
  t.equal(await status('/shop/2'), 200);
  t.equal(await status('/shop/3'), 429, 'the merged bucket holds 2 tokens');
});

t.test("MERGE into a fault filter: the abort's status is replaced", async (t) => {
  const merge = httpFilterPatch({
    name: 'merge',
    operation: 'MERGE',
    subFilter: 'envoy.filters.http.fault',
    value: `typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
  abort: { http_status: 418 }`,
  });
  const unmerged = await gatewayWith(t, httpFilterPatch({ name: 'insert', operation: 'INSERT_FIRST', value: fault(503) }));
  t.equal(await unmerged.status('/shop'), 503, 'the inserted fault aborts');
  const merged = await gatewayWith(t, httpFilterPatch({ name: 'insert', operation: 'INSERT_FIRST', value: fault(503) }), merge);
  t.equal(await merged.status('/shop'), 418, 'the merged abort');
  t.equal(merged.backend.seen.length, 0);
});

t.test('INSERT_FIRST runs before jwt_authn; INSERT_BEFORE rbac between jwt_authn and rbac; INSERT_AFTER rbac after rbac', async (t) => {
  const bad = { authorization: 'Bearer not.a.jwt' };
  const first = await gatewayWith(t, JWT, httpFilterPatch({ operation: 'INSERT_FIRST', value: fault(503) }));
  t.equal(await first.status('/shop', bad), 503, 'INSERT_FIRST: the fault answers before jwt_authn sees the bad token');
  const before = await gatewayWith(t, JWT, httpFilterPatch({ operation: 'INSERT_BEFORE', subFilter: 'envoy.filters.http.rbac', value: fault(503) }));
  t.equal(await before.status('/shop', bad), 401, 'INSERT_BEFORE rbac: jwt_authn refuses the bad token first');
  t.equal(await before.status('/admin'), 503, '... and the fault answers before rbac denies');
  const after = await gatewayWith(t, JWT, httpFilterPatch({ operation: 'INSERT_AFTER', subFilter: 'envoy.filters.http.rbac', value: fault(503) }));
  t.equal(await after.status('/admin'), 403, 'INSERT_AFTER rbac: rbac denies first');
  t.equal(await after.status('/shop'), 503);
});

t.test('priority: the patch applied last is first in the chain, so it answers', async (t) => {
  const a = (priority: number) => httpFilterPatch({ name: 'a', priority, operation: 'INSERT_FIRST', value: fault(501) });
  const b = (priority: number) => httpFilterPatch({ name: 'b', priority, operation: 'INSERT_FIRST', value: fault(502) });
  const same = await gatewayWith(t, a(0), b(0));
  t.equal(await same.status('/shop'), 502, 'same priority: file order stands in for age; b applies last and runs first');
  const ordered = await gatewayWith(t, a(10), b(0));
  t.equal(await ordered.status('/shop'), 501, 'a has the higher priority number: it applies last and runs first');
});

t.test('NETWORK_FILTER MERGE into the connection manager: server_header_transformation PASS_THROUGH at the gateway, server_name at a sidecar', async (t) => {
  const app = await startBackend('named', (_req, res) => {
    res.writeHead(200, { server: 'gunicorn/20.1' });
    res.end('named');
  });
  t.teardown(() => app.close());
  const hcm = (context: string, fields: string, selector: string) => `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: { name: server-header, namespace: istio-system }
spec:
  workloadSelector: { labels: { ${selector} } }
  configPatches:
  - applyTo: NETWORK_FILTER
    match:
      context: ${context}
      listener:
        filterChain:
          filter: { name: envoy.filters.network.http_connection_manager }
    patch:
      operation: MERGE
      value:
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          ${fields}
`;
  const port = await freePort();
  const gwMesh = new MeshDir({ 'mesh.yaml': doc(gateway('gw', port), serviceEntry('web', 'web', [{ port: app.port }]), routeAll('gw')) });
  const gw = await startRemora('gateway', [gwMesh.dir]);
  t.teardown(async () => {
    await gw.stop();
    gwMesh.cleanup();
  });
  t.equal((await request(port, '/', { headers: HOST })).headers['server'], 'istio-envoy', "before: istiod's OVERWRITE");
  const before = gw.proxy.runtime.snapshot!.config.version;
  gwMesh.write('hcm.yaml', hcm('GATEWAY', 'server_header_transformation: PASS_THROUGH', 'istio: ingressgateway'));
  await waitFor('the patch applies', () => gw.proxy.runtime.snapshot!.config.version !== before, 15_000);
  t.equal((await request(port, '/', { headers: HOST })).headers['server'], 'gunicorn/20.1', "PASS_THROUGH: the app's own");

  const scMesh = new MeshDir({ 'hcm.yaml': hcm('SIDECAR_INBOUND', 'server_name: productpage-edge', 'app: productpage') });
  const sidecar = await startRemora('sidecar', [scMesh.dir], ['--app-port', String(app.port), '--labels', 'app=productpage', '--namespace', 'default']);
  t.teardown(async () => {
    await sidecar.stop();
    scMesh.cleanup();
  });
  t.equal((await request(sidecar.ports.inbound, '/', { headers: { host: 'productpage:9080' } })).headers['server'], 'productpage-edge', 'the merged server_name, still overwritten');
});

t.test('a bad typed_config is refused naming the file, the EnvoyFilter, the patch and the field; the last good config keeps serving', async (t) => {
  const { status, mesh, remora, version } = await gatewayWith(t, httpFilterPatch({ operation: 'REMOVE', subFilter: 'envoy.filters.http.rbac' }));
  t.equal(await status('/admin'), 200);
  const good = version();
  mesh.write('patches.yaml', httpFilterPatch({ name: 'bad', operation: 'INSERT_FIRST', value: fault(503).replace('numerator: 100', 'numerator: 100, denominator: SOMETIMES') }));
  // The log wraps long lines.
  const logged = /patches\.yaml:\d+:\s+EnvoyFilter\s+istio-system\/bad:\s+spec\.configPatches\[0\]\.patch\.value\.typed_config\.abort\.percentage\.denominator:\s+\S/;
  await waitFor('the error is logged', () => remora.log.some((l) => logged.test(l)), 15_000);
  t.equal(version(), good, 'the last good config stays');
  t.equal(await status('/admin'), 200, 'and serves: rbac is still removed, no fault');
});
