// Where an EnvoyFilter HTTP_FILTER patch puts the local rate limit, by istiod's rules
// (envoyfilter/listener_patch.go): INSERT_BEFORE without a subFilter and INSERT_FIRST put it
// at the beginning of the chain, before authorization, so requests authorization refuses
// still spend tokens; INSERT_AFTER rbac, INSERT_BEFORE router, ADD and INSERT_AFTER without
// a subFilter put it after authorization, so refused requests cost nothing. Real HTTP through
// a real gateway, with an AuthorizationPolicy that DENYs /admin.
import t, { type Test } from 'tap';
import { startBackend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway, gatewayLocalRateLimit, routeAll, serviceEntry } from './helpers/mesh.ts';
import { freePort } from './helpers/net.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';

const TOKENS = 3;

function rateLimit(operation: string, subFilter: string | null): string {
  return gatewayLocalRateLimit({ maxTokens: TOKENS, fillInterval: '3600s', operation, subFilter });
}

const DENY_ADMIN = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  action: DENY
  rules:
  - to: [{ operation: { paths: ["/admin*"] } }]
`;

async function gatewayWith(t: Test, limit: string) {
  const backend = await startBackend('web');
  const port = await freePort();
  const mesh = new MeshDir({ 'mesh.yaml': doc(gateway('gw', port), serviceEntry('web', 'web', [{ port: backend.port }]), routeAll('gw'), DENY_ADMIN, limit) });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(async () => {
    await remora.stop();
    await backend.close();
    mesh.cleanup();
  });
  const status = async (path: string): Promise<number> => (await request(port, path, { headers: { host: 'shop.example.com' } })).status;
  return { status, backend, remora };
}

const before: [string, string | null][] = [
  ['INSERT_BEFORE', null],
  ['INSERT_FIRST', null],
  ['INSERT_BEFORE', 'envoy.filters.http.rbac'],
];
for (const [operation, subFilter] of before) {
  t.test(`${operation}${subFilter === null ? ' without subFilter' : ` ${subFilter}`}: the limit runs before authorization; denied requests spend tokens`, async (t) => {
    const { status, backend } = await gatewayWith(t, rateLimit(operation, subFilter));
    for (let i = 1; i <= TOKENS; i++) t.equal(await status(`/admin/${i}`), 403, `denied request ${i}: 403 from authz, after taking a token`);
    t.equal(await status('/admin/again'), 429, 'the bucket is empty: the limit answers before authorization');
    t.equal(await status('/shop'), 429, 'an allowed request finds no token left');
    t.equal(backend.seen.length, 0);
  });
}

const after: [string, string | null][] = [
  ['INSERT_AFTER', 'envoy.filters.http.rbac'],
  ['INSERT_BEFORE', 'envoy.filters.http.router'],
  ['INSERT_AFTER', null],
  ['ADD', null],
];
for (const [operation, subFilter] of after) {
  t.test(`${operation}${subFilter === null ? ' without subFilter' : ` ${subFilter}`}: the limit runs after authorization; denied requests cost nothing`, async (t) => {
    const { status, backend, remora } = await gatewayWith(t, rateLimit(operation, subFilter));
    for (let i = 1; i <= TOKENS + 2; i++) t.equal(await status(`/admin/${i}`), 403, `denied request ${i}: 403`);
    for (let i = 1; i <= TOKENS; i++) t.equal(await status(`/shop/${i}`), 200, `allowed request ${i}: the bucket was untouched`);
    t.equal(await status('/shop/over'), 429, 'then the limit applies');
    t.equal(backend.seen.length, TOKENS);
    t.notOk(remora.log.some((l) => /not inserted|refuses HTTP filters/.test(l)), 'no placement warning');
  });
}

t.test('a subFilter that is not in the chain: the filter is not inserted (as istiod), with a warning naming the patch', async (t) => {
  const { status, remora } = await gatewayWith(t, rateLimit('INSERT_AFTER', 'envoy.filters.http.ext_authz'));
  for (let i = 1; i <= TOKENS + 2; i++) t.equal(await status(`/shop/${i}`), 200, `request ${i}: no limit`);
  t.ok(
    remora.log.some((l) => l.includes('EnvoyFilter istio-system/filter-local-ratelimit-gw') && l.includes('envoy.filters.http.ext_authz is not in the GATEWAY listener')),
    'the warning names the resource and the subFilter',
  );
});
