// envoy.filters.http.cors end to end: what Envoy's CORS filter does beyond the route-actions
// basics, over real HTTP with real Origin and preflight requests, and the CorsPolicy the proxy
// runs as /config_dump shows it (read back with the generated Envoy types).
import t from 'tap';
import { envoyFromJson, envoyToJson } from '@remora/config/envoy';
import { CorsPolicySchema } from '@remora/config/envoy/gen/envoy/extensions/filters/http/cors/v3/cors_pb.js';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

let mesh: MeshDir;
let remora: InProcessRemora;
let port: number;
let app: Backend;

const SHOP = 'https://shop.example.com';
const HOST = 'api.example.com';

const policy = `    corsPolicy:
      allowOrigins: [{ exact: "${SHOP}" }]
      allowMethods: [GET, PUT]
      exposeHeaders: [x-total]
      allowCredentials: true
      maxAge: 10m`;

t.before(async () => {
  app = await startBackend('app', (_req, res) => {
    // An upstream with its own (too open) CORS answer and its own Vary.
    res.writeHead(200, { 'access-control-allow-origin': '*', 'access-control-expose-headers': 'x-upstream', vary: 'accept-encoding' });
    res.end('ok');
  });
  const closed = await freePort();
  port = await freePort();
  mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      serviceEntry('app', 'app', [{ port: app.port }]),
      serviceEntry('gone', 'gone', [{ port: closed }]),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: cors }
spec:
  hosts: [${HOST}]
  gateways: [gw]
  http:
  - name: down
    match: [{ uri: { prefix: /down } }]
${policy}
    route: [{ destination: { host: gone } }]
  - name: teapot
    match: [{ uri: { prefix: /teapot } }]
${policy}
    directResponse: { status: 418, body: { string: "short and stout" } }
  - name: api
${policy}
    route: [{ destination: { host: app } }]
`,
    ),
  });
  remora = await startRemora('gateway', [mesh.dir]);
});

t.teardown(async () => {
  await remora?.stop();
  await app?.close();
  mesh?.cleanup();
});

t.test("the CORS headers replace the upstream's; Vary is left as the upstream sent it (Envoy writes none)", async (t) => {
  const r = await request(port, '/items', { headers: { host: HOST, origin: SHOP } });
  t.equal(r.status, 200);
  t.equal(r.headers['access-control-allow-origin'], SHOP, "the upstream's * is replaced by the allowed origin");
  t.equal(r.headers['access-control-expose-headers'], 'x-total');
  t.equal(r.headers['access-control-allow-credentials'], 'true');
  t.equal(r.headers.vary, 'accept-encoding');
  const plain = await request(port, '/items', { headers: { host: HOST } });
  t.equal(plain.headers['access-control-allow-origin'], '*', 'without Origin the response is untouched');
  t.equal(plain.headers['access-control-expose-headers'], 'x-upstream');
  const foreign = await request(port, '/items', { headers: { host: HOST, origin: 'https://evil.example' } });
  t.equal(foreign.headers['access-control-allow-origin'], '*', 'a foreign origin: untouched too');
});

t.test("the router's local reply and a direct response carry the CORS headers (the filter runs before the router)", async (t) => {
  const down = await request(port, '/down', { headers: { host: HOST, origin: SHOP } });
  t.equal(down.status, 503);
  t.equal(down.headers['access-control-allow-origin'], SHOP);
  t.equal(down.headers['access-control-allow-credentials'], 'true');
  const teapot = await request(port, '/teapot', { headers: { host: HOST, origin: SHOP } });
  t.equal(teapot.status, 418);
  t.equal(teapot.body, 'short and stout');
  t.equal(teapot.headers['access-control-allow-origin'], SHOP);
  const pre = await request(port, '/teapot', { method: 'OPTIONS', headers: { host: HOST, origin: SHOP, 'access-control-request-method': 'PUT' } });
  t.equal(pre.status, 200, 'a preflight on a direct-response route is answered by the CORS filter');
  t.equal(pre.headers['access-control-allow-methods'], 'GET,PUT');
  t.equal(pre.headers['access-control-max-age'], '600');
  t.ok(remora.accessLog.some((l) => l.includes('cors_response')), 'the access log names the preflight answer: cors_response');
});

t.test('/config_dump shows the CorsPolicy the filter runs, and it reads back as the same CorsPolicy', async (t) => {
  const r = await request(remora.ports.admin, '/config_dump?resource=dynamic_route_configs');
  t.equal(r.status, 200);
  const dump = r.json<{ configs: { route_config?: { virtual_hosts: { routes: { name: string; typed_per_filter_config?: Record<string, Record<string, unknown>> }[] }[] } }[] }>();
  const routes = dump.configs.flatMap((c) => c.route_config?.virtual_hosts.flatMap((v) => v.routes) ?? []);
  const names = ['down', 'teapot', 'api'];
  t.same(routes.filter((x) => names.includes(x.name)).map((x) => x.name).sort(), [...names].sort());
  for (const route of routes.filter((x) => names.includes(x.name))) {
    const { '@type': type, ...cors } = route.typed_per_filter_config!['envoy.filters.http.cors']!;
    t.equal(type, 'type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy', `${route.name}: Envoy's per-route CorsPolicy`);
    t.same(
      envoyToJson(CorsPolicySchema, envoyFromJson(CorsPolicySchema, cors as never)),
      {
        allowOriginStringMatch: [{ exact: SHOP }],
        allowMethods: 'GET,PUT',
        exposeHeaders: 'x-total',
        maxAge: '600',
        allowCredentials: true,
        filterEnabled: { defaultValue: { numerator: 100 } },
        forwardNotMatchingPreflights: true,
      },
      `${route.name}: istiod's translation, round trip exact`,
    );
  }
});
