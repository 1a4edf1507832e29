// Envoy's filter statistics end to end, through a real gateway: RBAC (enforced and Istio's
// dry-run shadow rules), jwt_authn, fault, CORS and local rate limit counters move as real
// requests are allowed, refused, faulted or limited, under Envoy's names on /stats
// (`http.<stat_prefix>.rbac.allowed`, `<stat_prefix>.http_local_rate_limit.rate_limited`) and
// on /stats/prometheus as Envoy prints them under Istio's bootstrap (the connection manager's
// prefix as the `http_conn_manager_prefix` label). Counters carry on across a hot reload.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { startBackend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway, gatewayLocalRateLimit, serviceEntry } from './helpers/mesh.ts';
import { freePort, waitFor } from './helpers/net.ts';
import { CORPUS, MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

const DEMO_JWT = readFileSync(join(CORPUS, 'jwt/demo.jwt'), 'utf8').trim();
const ISTIO_JWKS = readFileSync(join(CORPUS, 'jwt/jwks.json'), 'utf8').trim();
const SHOP = 'https://shop.example';

/** `/stats` as a map of name to value. */
async function stats(remora: InProcessRemora): Promise<Map<string, number>> {
  const r = await request(remora.ports.admin, '/stats');
  const out = new Map<string, number>();
  for (const line of r.body.split('\n')) {
    const i = line.lastIndexOf(': ');
    if (i > 0) out.set(line.slice(0, i), Number(line.slice(i + 2)));
  }
  return out;
}

async function configVersion(remora: InProcessRemora): Promise<string> {
  return (await request(remora.ports.admin, '/remora/config')).json<{ version: string }>().version;
}

const routes = (port: number) =>
  doc(
    gateway('gw', port),
    `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: web }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{ uri: { prefix: /fault } }]
    fault: { abort: { httpStatus: 503, percentage: { value: 100 } } }
    route: [{ destination: { host: web } }]
  - route: [{ destination: { host: web } }]
    corsPolicy:
      allowOrigins: [{ exact: "${SHOP}" }]
      allowMethods: [GET]
`,
  );

const policies = doc(
  `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-forbidden, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  action: DENY
  rules:
  - to: [{ operation: { paths: ["/forbidden"] } }]
`,
  `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-trial
  namespace: istio-system
  annotations: { istio.io/dry-run: "true" }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  action: DENY
  rules:
  - to: [{ operation: { paths: ["/trial"] } }]
`,
  `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: jwt-example, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: ${JSON.stringify(ISTIO_JWKS)}
`,
);

t.test('gateway: rbac, dry-run rbac, jwt_authn, fault and cors counters', async (t) => {
  const backend = await startBackend('web');
  const port = await freePort();
  const mesh = new MeshDir({
    'routes.yaml': doc(routes(port), serviceEntry('web', 'web', [{ port: backend.port }])),
    'policies.yaml': policies,
  });
  t.teardown(async () => {
    await backend.close();
    mesh.cleanup();
  });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(() => remora.stop());
  const send = (path: string, headers: Record<string, string> = {}) => request(port, path, { headers: { host: 'shop.example.com', ...headers } });

  // The connection manager's stat_prefix, as istiod names a gateway's: outbound_<address>_<port>.
  const first = await stats(remora);
  const allowedName = [...first.keys()].find((k) => k.startsWith('http.') && k.endsWith('.rbac.allowed'));
  t.ok(allowedName, 'the RBAC filter has its counters from the start');
  const prefix = allowedName!.slice('http.'.length, -'.rbac.allowed'.length);
  t.match(prefix, new RegExp(`^outbound_[0-9.]+_${port}$`), "istiod's stat_prefix for a gateway listener");
  const h = (name: string) => `http.${prefix}.${name}`;
  t.equal(first.get(h('rbac.allowed')), 0);
  t.equal(first.get(h('jwt_authn.allowed')), 0);

  // 1: no token, an allowed origin.
  t.equal((await send('/', { origin: SHOP })).status, 200);
  // 2: a valid token, an origin the policy does not allow.
  t.equal((await send('/', { authorization: `Bearer ${DEMO_JWT}`, origin: 'https://evil.example' })).status, 200);
  // 3: a token that does not verify: jwt_authn refuses it before authorization.
  t.equal((await send('/', { authorization: 'Bearer not.a.jwt' })).status, 401);
  // 4: refused by the enforced DENY policy.
  t.equal((await send('/forbidden')).status, 403);
  // 5: the dry-run DENY matches: counted as shadow_denied, not refused.
  t.equal((await send('/trial')).status, 200);
  // 6: the route's fault aborts it.
  const faulted = await send('/fault');
  t.equal(faulted.status, 503);
  t.equal(faulted.body, 'fault filter abort');

  const s = await stats(remora);
  const expect: Record<string, number> = {
    'jwt_authn.allowed': 5,
    'jwt_authn.denied': 1,
    'jwt_authn.cors_preflight_bypassed': 0,
    'rbac.allowed': 4,
    'rbac.denied': 1,
    // istiod's shadow_rules_stat_prefix for a dry-run DENY; Envoy puts it after `rbac.`.
    'rbac.istio_dry_run_deny_shadow_allowed': 4,
    'rbac.istio_dry_run_deny_shadow_denied': 1,
    'fault.aborts_injected': 1,
    'fault.delays_injected': 0,
    'fault.active_faults': 0,
    'cors.origin_valid': 1,
    'cors.origin_invalid': 1,
  };
  for (const [name, value] of Object.entries(expect)) t.equal(s.get(h(name)), value, h(name));

  const prom = (await request(remora.ports.admin, '/stats/prometheus')).body;
  const label = `{http_conn_manager_prefix="${prefix}"}`;
  t.match(prom, '# TYPE envoy_http_rbac_allowed counter\n', 'Prometheus TYPE line');
  t.match(prom, `\nenvoy_http_rbac_allowed${label} 4\n`);
  t.match(prom, `\nenvoy_http_rbac_denied${label} 1\n`);
  t.match(prom, `\nenvoy_http_rbac_istio_dry_run_deny_shadow_denied${label} 1\n`);
  t.match(prom, `\nenvoy_http_jwt_authn_allowed${label} 5\n`);
  t.match(prom, `\nenvoy_http_jwt_authn_denied${label} 1\n`);
  t.match(prom, `\nenvoy_http_fault_aborts_injected${label} 1\n`);
  t.match(prom, '# TYPE envoy_http_fault_active_faults gauge\n', 'active_faults is a gauge');
  t.match(prom, `\nenvoy_http_cors_origin_valid${label} 1\n`);
  t.match(prom, `\nenvoy_http_cors_origin_invalid${label} 1\n`);
  t.match(prom, /istio_requests_total\{/, "Istio's metrics are still there");

  // A reload that recompiles every filter: the counters carry on, as Envoy's do.
  const before = await configVersion(remora);
  mesh.write('policies.yaml', policies.replace('"/forbidden"', '"/forbidden", "/also-forbidden"'));
  await waitFor('the reload is live', async () => (await configVersion(remora)) !== before, 15_000);
  t.equal((await send('/also-forbidden')).status, 403, 'the new config serves');
  t.equal((await send('/')).status, 200);
  const after = await stats(remora);
  t.equal(after.get(h('rbac.denied')), 2, 'denied carried over and counted on');
  t.equal(after.get(h('rbac.allowed')), 5, 'allowed carried over and counted on');
  t.equal(after.get(h('jwt_authn.allowed')), 7, 'jwt_authn carried over and counted on');
  t.equal(after.get(h('fault.aborts_injected')), 1);
});

t.test('gateway: local rate limit counters under its stat_prefix', async (t) => {
  const backend = await startBackend('web');
  const port = await freePort();
  const limit = gatewayLocalRateLimit({ maxTokens: 2 });
  const mesh = new MeshDir({
    'routes.yaml': doc(
      gateway('gw', port),
      serviceEntry('web', 'web', [{ port: backend.port }]),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: web }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route: [{ destination: { host: web } }]
`,
    ),
    'limit.yaml': limit,
  });
  t.teardown(async () => {
    await backend.close();
    mesh.cleanup();
  });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(() => remora.stop());
  const statuses: number[] = [];
  for (let i = 0; i < 3; i++) statuses.push((await request(port, '/', { headers: { host: 'shop.example.com' } })).status);
  t.same(statuses, [200, 200, 429], 'two tokens, the third request is limited');

  const s = await stats(remora);
  const ns = 'http_local_rate_limiter.http_local_rate_limit';
  t.equal(s.get(`${ns}.enabled`), 3);
  t.equal(s.get(`${ns}.ok`), 2);
  t.equal(s.get(`${ns}.rate_limited`), 1);
  t.equal(s.get(`${ns}.enforced`), 1);
  const prom = (await request(remora.ports.admin, '/stats/prometheus')).body;
  t.match(prom, '# TYPE envoy_http_local_rate_limiter_http_local_rate_limit_rate_limited counter\n');
  t.match(prom, '\nenvoy_http_local_rate_limiter_http_local_rate_limit_rate_limited{} 1\n');
  t.match(prom, '\nenvoy_http_local_rate_limiter_http_local_rate_limit_ok{} 2\n');
});
