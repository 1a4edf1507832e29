// `remora proxy-config` against live Remoras: a running proxy's admin API serves Envoy's dump
// and every table prints; istiod's names and columns on a live bookinfo sidecar and gateway.
// (Split from proxy-config.test.ts: the two files each stay well inside the per-file timeout.)
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { DevCa, writeServerFiles } from '@remora/proxy';
import { startBackend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort } from './helpers/net.ts';
import { CORPUS, MeshDir, runCli, startRemora } from './helpers/remora.ts';

const read = (p: string): string => readFileSync(p, 'utf8');

t.test("a running Remora's admin API serves Envoy's dump: every table prints", async (t) => {
  const backend = await freePort();
  const httpsPort = await freePort();
  const work = mkdtempSync(join(tmpdir(), 'remora-pc-live-'));
  const ca = await DevCa.create();
  const cert = await ca.issueServer({ dnsNames: ['shop.example.com'] });
  await writeServerFiles(join(work, 'shop-cert'), cert);
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', await freePort()),
      serviceEntry('ratings', 'ratings', [{ port: backend, labels: { version: 'v1' } }], { namespace: 'shop', port: 9080 }),
      `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: ratings, namespace: shop }
spec:
  host: ratings
  subsets: [{ name: v1, labels: { version: v1 } }]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: tls, namespace: default }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: ${httpsPort}, name: https, protocol: HTTPS }
    hosts: [shop.example.com]
    tls: { mode: SIMPLE, credentialName: shop-cert }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: ratings, namespace: shop }
spec:
  hosts: ["*"]
  gateways: [default/gw, default/tls]
  http:
  - match: [{ uri: { prefix: /ratings } }]
    route: [{ destination: { host: ratings, subset: v1 } }]
`,
    ),
  });
  const remora = await startRemora('gateway', [mesh.dir], ['--credentials-dir', work]);
  t.teardown(async () => {
    await remora.stop();
    mesh.cleanup();
    rmSync(work, { recursive: true, force: true });
  });
  const admin = ['--admin', `127.0.0.1:${remora.ports.admin}`];
  const run = async (sub: string, ...extra: string[]): Promise<string> => {
    const r = await runCli(['proxy-config', sub, ...admin, ...extra]);
    t.equal(r.code, 0, `${sub}: ${r.stderr}`);
    t.equal(r.stderr, '', `${sub}: nothing on stderr`);
    return r.stdout;
  };
  const clusters = await run('clusters');
  t.match(clusters, /^SERVICE FQDN\s+PORT\s+SUBSET\s+DIRECTION\s+TYPE\s+DESTINATION RULE\n/);
  t.match(clusters, /^ratings\.shop\.svc\.cluster\.local\s+9080\s+v1\s+outbound\s+EDS\s+ratings\.shop$/m, 'the DestinationRule that shaped the cluster');
  t.match(clusters, /^ratings\.shop\.svc\.cluster\.local\s+9080\s+-\s+outbound\s+EDS\s+ratings\.shop$/m);
  const listeners = await run('listeners');
  t.match(listeners, /^ADDRESSES\s+PORT\s+MATCH\s+DESTINATION\n/);
  t.match(listeners, new RegExp(`^127\\.0\\.0\\.1\\s+${httpsPort}\\s+SNI: shop\\.example\\.com\\s+Route: https\\.${httpsPort}\\.https\\.tls\\.default$`, 'm'));
  const routes = await run('routes');
  t.match(routes, /^NAME\s+VHOST NAME\s+DOMAINS\s+MATCH\s+VIRTUAL SERVICE\n/);
  t.match(routes, new RegExp(`^https\\.${httpsPort}\\.https\\.tls\\.default\\s+shop\\.example\\.com:${httpsPort}\\s+shop\\.example\\.com\\s+/ratings\\*\\s+ratings\\.shop$`, 'm'), 'a row per route, its VirtualService named');
  const endpoints = await run('endpoints');
  t.match(endpoints, /^NAME\s+STATUS\s+LOCALITY\s+CLUSTER\n/);
  t.match(endpoints, new RegExp(`^127\\.0\\.0\\.1:${backend}\\s+HEALTHY\\s+outbound\\|9080\\|v1\\|ratings\\.shop\\.svc\\.cluster\\.local$`, 'm'));
  const secrets = await run('secrets');
  t.match(secrets, /^RESOURCE NAME\s+TYPE\s+STATUS\s+VALID CERT\s+SERIAL NUMBER\s+NOT AFTER\s+NOT BEFORE\n/);
  t.match(secrets, new RegExp(`^kubernetes://shop-cert\\s+Cert Chain\\s+ACTIVE\\s+true\\s+${BigInt(`0x${cert.serial}`).toString(16).padStart(32, '0')}\\s`, 'm'), "istioctl's %032x serial");
  const json = JSON.parse(await run('secrets', '-o', 'json')) as unknown;
  t.notMatch(JSON.stringify(json), /PRIVATE KEY/, 'no private key in what proxy-config prints');
  const all = await run('all');
  for (const line of [/^cluster\/outbound\|9080\|v1\|ratings\.shop\.svc\.cluster\.local\s/m, new RegExp(`^listener/127\\.0\\.0\\.1_${httpsPort}\\s`, 'm'), new RegExp(`^route/https\\.${httpsPort}\\.https\\.tls\\.default\\s`, 'm'), /^secret\/kubernetes:\/\/shop-cert\s/m]) {
    t.match(all, line, `all: ${line.source}`);
  }
  const bootstrap = JSON.parse(await run('bootstrap', '-o', 'json')) as { bootstrap: { node: { id: string } } };
  t.match(bootstrap.bootstrap.node.id, /^router~.+~istio-ingressgateway\.istio-system~istio-system\.svc\.cluster\.local$/);
});

t.test("a live bookinfo sidecar: istiod's names for clusters, routes and listeners, and the DESTINATION RULE column", async (t) => {
  const reviews = await startBackend('reviews');
  const app = await startBackend('productpage');
  const bookinfo = join(CORPUS, 'istio-samples/bookinfo/networking');
  const se = (name: string, port: number, ...versions: string[]): string =>
    `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ${name}, namespace: default }
spec:
  hosts: [${name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  endpoints:
${versions.map((v) => `  - { address: 127.0.0.1, ports: { http: ${port} }, labels: { app: ${name}, version: ${v} } }\n`).join('')}`;
  const mesh = new MeshDir({
    'services.yaml': doc(se('reviews', reviews.port, 'v1', 'v2'), se('ratings', reviews.port, 'v1'), se('productpage', app.port, 'v1')),
    // istio's own samples: the DestinationRules of every bookinfo service, reviews split 80/20.
    'destination-rule-all.yaml': read(join(bookinfo, 'destination-rule-all.yaml')),
    'virtual-service-reviews-80-20.yaml': read(join(bookinfo, 'virtual-service-reviews-80-20.yaml')),
  });
  const remora = await startRemora('sidecar', [mesh.dir], ['--app-port', String(app.port), '--labels', 'app=productpage,version=v1', '--namespace', 'default', '--service-account', 'bookinfo-productpage']);
  t.teardown(async () => {
    await remora.stop();
    await reviews.close();
    await app.close();
    mesh.cleanup();
  });
  // The per-port tables route as before: by name with and without the port.
  for (const host of ['reviews:9080', 'reviews', 'reviews.default.svc.cluster.local:9080']) {
    const r = await request(remora.ports.outbound, '/', { headers: { host } });
    t.equal(r.status, 200, `${host} routes through table 9080`);
    t.equal(r.headers['x-backend'], 'reviews');
  }
  const admin = ['--admin', `127.0.0.1:${remora.ports.admin}`];
  const run = async (sub: string, ...extra: string[]): Promise<string> => {
    const r = await runCli(['proxy-config', sub, ...admin, ...extra]);
    t.equal(r.code, 0, `${sub}: ${r.stderr}`);
    return r.stdout;
  };
  const clusters = await run('clusters');
  t.match(clusters, /^reviews\.default\.svc\.cluster\.local\s+9080\s+v1\s+outbound\s+EDS\s+reviews\.default$/m, 'the DestinationRule that shaped the subset cluster');
  t.match(clusters, /^reviews\.default\.svc\.cluster\.local\s+9080\s+-\s+outbound\s+EDS\s+reviews\.default$/m);
  t.match(clusters, /^ratings\.default\.svc\.cluster\.local\s+9080\s+v2-mysql-vm\s+outbound\s+EDS\s+ratings\.default$/m);
  t.match(clusters, new RegExp(`^\\s*${app.port}\\s+-\\s+inbound\\s+STATIC\\s*$`, 'm'), 'the inbound cluster, with no DestinationRule');
  const names = JSON.parse(await run('clusters', '-o', 'json')) as { name: string; metadata?: { filter_metadata?: { istio?: Record<string, unknown> } } }[];
  const v1 = names.find((c) => c.name === 'outbound|9080|v1|reviews.default.svc.cluster.local');
  t.same(v1?.metadata?.filter_metadata?.istio?.config, '/apis/networking.istio.io/v1/namespaces/default/destination-rule/reviews');
  t.ok(names.some((c) => c.name === `inbound|${app.port}||`), `inbound|${app.port}||`);

  const routes = await run('routes');
  t.match(routes, /^9080\s+reviews\.default\.svc\.cluster\.local:9080\s+reviews\.default, reviews\s+\/\*\s+reviews\.default$/m, "route config 9080, vhost <host>:<port>, the VirtualService");
  t.match(routes, new RegExp(`^inbound\\|${app.port}\\|\\|\\s+inbound\\|http\\|${app.port}\\s+\\*\\s+/\\*\\s*$`, 'm'), 'inbound|<port>|| with vhost inbound|http|<port>');
  t.notMatch(routes, /^outbound\s/m, 'no single outbound table');
  const listeners = await run('listeners');
  // istiod's HTTP port: the HTTP chain behind http_inspector, and its PassthroughFilterChain for other bytes (ALLOW_ANY).
  t.match(listeners, /^0\.0\.0\.0\s+9080\s+Trans: raw_buffer; App: HTTP\s+Route: 9080$/m, "istiod's 0.0.0.0_9080 listener routing through RDS 9080");
  t.match(listeners, /^0\.0\.0\.0\s+9080\s+ALL\s+PassthroughCluster$/m, 'and passing other bytes to port 9080 through');
  const all = await run('all');
  for (const line of [/^listener\/0\.0\.0\.0_9080\s/m, /^route\/9080\s/m, /^cluster\/outbound\|9080\|v2\|reviews\.default\.svc\.cluster\.local\s/m]) t.match(all, line, `all: ${line.source}`);
});

t.test("route names are istiod's, and the VIRTUAL SERVICE column names each route's VirtualService, on a live gateway", async (t) => {
  const port = await freePort();
  const backend = await startBackend('web');
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      serviceEntry('web', 'web', [{ port: backend.port }], { namespace: 'shop' }),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: web, namespace: shop }
spec:
  hosts: [web.example.com]
  gateways: [default/gw]
  http:
  - name: api
    match: [{ name: v1, uri: { prefix: /v1 } }, { uri: { prefix: /v2 } }]
    route: [{ destination: { host: web } }]
  - match: [{ name: health, uri: { exact: /healthz } }]
    route: [{ destination: { host: web } }]
  - route: [{ destination: { host: web } }]
`,
    ),
  });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(async () => {
    await remora.stop();
    await backend.close();
    mesh.cleanup();
  });
  t.equal((await request(port, '/v1/x', { headers: { host: 'web.example.com' } })).status, 200, 'the routes serve');
  const run = async (...args: string[]): Promise<string> => {
    const r = await runCli(['proxy-config', 'routes', '--admin', `127.0.0.1:${remora.ports.admin}`, ...args]);
    t.equal(r.code, 0, r.stderr);
    return r.stdout;
  };
  // istioctl prints `<name>.<namespace>` of the route's istio.config metadata, as for istiod's routes.
  const table = await run();
  for (const m of ['/v1*', '/v2*', '/healthz', '/*']) {
    t.match(table, new RegExp(`^http\\.${port}\\s+web\\.example\\.com:${port}\\s+web\\.example\\.com\\s+${m.replace(/[*/]/g, '\\$&')}\\s+web\\.shop$`, 'm'), `${m}: VIRTUAL SERVICE web.shop`);
  }
  type RouteJson = { name?: string; match: Record<string, string>; metadata?: { filter_metadata?: { istio?: { config?: string } } } };
  const configs = JSON.parse(await run('-o', 'json')) as { name: string; virtual_hosts: { routes: RouteJson[] }[] }[];
  const routes = configs.find((c) => c.name === `http.${port}`)?.virtual_hosts.flatMap((v) => v.routes) ?? [];
  t.same(
    routes.map((r) => [r.name ?? null, r.match]),
    [
      ['api.v1', { prefix: '/v1' }],
      ['api', { prefix: '/v2' }],
      ['.health', { path: '/healthz' }],
      [null, { prefix: '/' }],
    ],
    "istiod's names: <route>.<match>, <route>, .<match> for an unnamed route, none for an unnamed route and match",
  );
  t.same(
    [...new Set(routes.map((r) => r.metadata?.filter_metadata?.istio?.config))],
    ['/apis/networking.istio.io/v1/namespaces/shop/virtual-service/web'],
    'every route carries istiod\'s istio.config metadata',
  );
  // /config_dump itself: the same names (proto3 JSON leaves the empty name out).
  const dump = (await (await fetch(`http://127.0.0.1:${remora.ports.admin}/config_dump?resource=dynamic_route_configs`)).json()) as {
    configs: { route_config: { name: string; virtual_hosts: { routes: { name?: string }[] }[] } }[];
  };
  const rc = dump.configs.find((c) => c.route_config.name === `http.${port}`)?.route_config;
  t.same(rc?.virtual_hosts.flatMap((v) => v.routes.map((r) => r.name ?? null)), ['api.v1', 'api', '.health', null]);
});
