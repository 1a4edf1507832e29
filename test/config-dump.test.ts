// /config_dump as Envoy serves it, from a live gateway and a live sidecar: it reads as an
// envoy.admin.v3.ConfigDump with the generated schemas, names things as istiod does, answers
// Envoy's query parameters (and their errors) as Envoy does, and never prints a private key.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { envoyFromJson } from '@remora/config/envoy';
import { ConfigDumpSchema } from '@remora/config/envoy/gen/envoy/admin/v3/config_dump_pb.js';
import { DevCa, writeServerFiles, writeWorkloadFiles, type IssuedCertificate } from '@remora/proxy';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc } from './helpers/mesh.ts';
import { freePort } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

type Json = Record<string, unknown>;
const ADMIN = 'type.googleapis.com/envoy.admin.v3.';

const SERVICES = (port: number): string => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: reviews, namespace: default }
spec:
  hosts: [reviews]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  endpoints:
  - { address: 127.0.0.1, ports: { http: ${port} }, labels: { app: reviews, version: v1 } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ratings, namespace: default }
spec:
  hosts: [ratings]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  endpoints:
  - { address: 127.0.0.1, ports: { http: ${port} }, labels: { app: ratings, version: v1 } }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews, namespace: default }
spec:
  host: reviews
  subsets: [{ name: v1, labels: { version: v1 } }]
`;

let work: string;
let backend: Backend;
let gwMesh: MeshDir;
let scMesh: MeshDir;
let gw: InProcessRemora;
let sc: InProcessRemora;
let httpPort: number;
let httpsPort: number;
let serverCert: IssuedCertificate;
let workload: IssuedCertificate;

t.before(async () => {
  work = mkdtempSync(join(tmpdir(), 'remora-config-dump-'));
  backend = await startBackend('reviews-v1');
  const ca = await DevCa.create();
  serverCert = await ca.issueServer({ dnsNames: ['shop.example.com'] });
  await writeServerFiles(join(work, 'credentials', 'shop-cert'), serverCert);
  workload = await ca.issueWorkload({ namespace: 'default', serviceAccount: 'productpage' });
  await writeWorkloadFiles(join(work, 'certs'), workload);
  httpPort = await freePort();
  httpsPort = await freePort();
  gwMesh = new MeshDir({
    'mesh.yaml': doc(
      SERVICES(backend.port),
      `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: shop, namespace: istio-system }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: ${httpPort}, name: http, protocol: HTTP }
    hosts: ["*"]
  - port: { number: ${httpsPort}, name: https, protocol: HTTPS }
    hosts: [shop.example.com]
    tls: { mode: SIMPLE, credentialName: shop-cert }
`,
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews, namespace: default }
spec:
  hosts: ["*"]
  gateways: [istio-system/shop]
  http:
  - match: [{ uri: { prefix: /ratings } }]
    route: [{ destination: { host: ratings } }]
  - route: [{ destination: { host: reviews, subset: v1 } }]
    retries: { attempts: 2, retryOn: 5xx }
`,
    ),
  });
  gw = await startRemora('gateway', [gwMesh.dir], ['--credentials-dir', join(work, 'credentials')]);
  scMesh = new MeshDir({
    'mesh.yaml': doc(SERVICES(backend.port), 'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: default, namespace: istio-system }\nspec: { mtls: { mode: STRICT } }\n'),
  });
  sc = await startRemora('sidecar', [scMesh.dir], [
    '--app-port', String(backend.port), '--labels', 'app=productpage,version=v1', '--namespace', 'default', '--service-account', 'productpage', '--certs-dir', join(work, 'certs'),
  ]);
});

t.teardown(async () => {
  await gw?.stop();
  await sc?.stop();
  await backend?.close();
  gwMesh?.cleanup();
  scMesh?.cleanup();
  rmSync(work, { recursive: true, force: true });
});

async function dump(remora: InProcessRemora, query = ''): Promise<{ status: number; body: string; type: string | undefined; configs: Json[] }> {
  const r = await request(remora.ports.admin, `/config_dump${query}`);
  const configs = r.status === 200 ? r.json<{ configs: Json[] }>().configs : [];
  return { status: r.status, body: r.body, type: r.headers['content-type'] as string | undefined, configs };
}

function section(configs: Json[], kind: string): Json {
  const s = configs.find((c) => c['@type'] === `${ADMIN}${kind}`);
  if (s === undefined) throw new Error(`no ${kind} in ${configs.map((c) => c['@type']).join(', ')}`);
  return s;
}

t.test("a gateway's /config_dump is an envoy.admin.v3.ConfigDump, sections in Envoy's order, names as istiod's", async (t) => {
  const d = await dump(gw);
  t.equal(d.status, 200);
  t.equal(d.type, 'application/json');
  t.doesNotThrow(() => envoyFromJson(ConfigDumpSchema, JSON.parse(d.body)), 'parses with the generated schemas; an unknown field would fail');
  t.same(
    d.configs.map((c) => c['@type']),
    ['BootstrapConfigDump', 'ClustersConfigDump', 'ListenersConfigDump', 'ScopedRoutesConfigDump', 'RoutesConfigDump', 'SecretsConfigDump'].map((k) => ADMIN + k),
    'no EndpointsConfigDump without ?include_eds',
  );
  const snap = gw.proxy.runtime.snapshot!;
  const version = snap.config.version;
  const liveAt = new Date(gw.proxy.runtime.snapshotLiveAt).toISOString();
  const listeners = section(d.configs, 'ListenersConfigDump') as { version_info: string; dynamic_listeners: { name: string; active_state: Json }[] };
  t.equal(listeners.version_info, version);
  t.same(listeners.dynamic_listeners.map((l) => l.name).sort(), [`127.0.0.1_${httpPort}`, `127.0.0.1_${httpsPort}`].sort());
  for (const l of listeners.dynamic_listeners) t.match(l.active_state, { version_info: version, last_updated: liveAt, listener: { '@type': 'type.googleapis.com/envoy.config.listener.v3.Listener', name: l.name } });
  const clusters = section(d.configs, 'ClustersConfigDump') as { version_info: string; dynamic_active_clusters: { version_info: string; last_updated: string; cluster: { name: string; type: string } }[] };
  t.equal(clusters.version_info, version);
  t.same(clusters.dynamic_active_clusters.map((c) => c.cluster.name).sort(), [
    'outbound|9080|v1|reviews.default.svc.cluster.local',
    'outbound|9080||ratings.default.svc.cluster.local',
    'outbound|9080||reviews.default.svc.cluster.local',
  ]);
  t.ok(clusters.dynamic_active_clusters.every((c) => c.cluster.type === 'EDS' && c.last_updated === liveAt && c.version_info === version));
  const routes = section(d.configs, 'RoutesConfigDump') as { dynamic_route_configs: { route_config: { name: string; virtual_hosts: { routes: Json[] }[] } }[] };
  t.same(routes.dynamic_route_configs.map((r) => r.route_config.name), snap.config.routeConfigs.map((rc) => rc.name));
  t.ok(routes.dynamic_route_configs.some((r) => r.route_config.name === `http.${httpPort}`), "the plaintext port's routes under istiod's name");
  const http = routes.dynamic_route_configs.find((r) => r.route_config.name === `http.${httpPort}`)!;
  t.match(http.route_config.virtual_hosts[0]!.routes, [
    { match: { prefix: '/ratings' }, route: { cluster: 'outbound|9080||ratings.default.svc.cluster.local' } },
    { match: { prefix: '/' }, route: { cluster: 'outbound|9080|v1|reviews.default.svc.cluster.local', retry_policy: { retry_on: '5xx', num_retries: 2 } } },
  ]);
  const bootstrap = section(d.configs, 'BootstrapConfigDump') as { bootstrap: { node: { id: string; cluster: string }; admin: Json } };
  t.match(bootstrap.bootstrap.node.id, /^router~[^~]+~istio-ingressgateway\.istio-system~istio-system\.svc\.cluster\.local$/);
  t.match(bootstrap.bootstrap.admin, { address: { socket_address: { address: '127.0.0.1', port_value: gw.ports.admin } } });
});

t.test('secrets: the credential by its SDS name with its certificate, the private key never', async (t) => {
  const d = await dump(gw);
  const secrets = section(d.configs, 'SecretsConfigDump') as { dynamic_active_secrets: { name: string; secret: { tls_certificate: { certificate_chain: { inline_bytes: string }; private_key: { inline_bytes: string } } } }[] };
  t.same(secrets.dynamic_active_secrets.map((s) => s.name), ['kubernetes://shop-cert']);
  const cert = secrets.dynamic_active_secrets[0]!.secret.tls_certificate;
  t.equal(Buffer.from(cert.certificate_chain.inline_bytes, 'base64').toString(), serverCert.certChainPem);
  t.equal(Buffer.from(cert.private_key.inline_bytes, 'base64').toString(), '[redacted]');
  const keyBody = serverCert.keyPem.split('\n')[1]!;
  t.notOk(d.body.includes(keyBody) || d.body.includes(Buffer.from(serverCert.keyPem).toString('base64').slice(0, 40)), 'the key is nowhere in the dump');
  t.notMatch(d.body, /PRIVATE KEY/);

  const s = await dump(sc);
  const scSecrets = section(s.configs, 'SecretsConfigDump') as { dynamic_active_secrets: { name: string; secret: Json }[] };
  t.same(scSecrets.dynamic_active_secrets.map((x) => x.name), ['default', 'ROOTCA'], "istiod's SDS names for the workload certificate and the roots");
  t.match(scSecrets.dynamic_active_secrets[1]!.secret, { validation_context: { trusted_ca: { inline_bytes: Buffer.from(workload.rootCertPem).toString('base64') } } });
  t.notOk(s.body.includes(workload.keyPem.split('\n')[1]!), 'the workload key is nowhere in the dump');
});

t.test("a sidecar's dump: virtualOutbound, 0.0.0.0_<port>, virtualInbound with the STRICT mTLS chain, the inbound cluster", async (t) => {
  const d = await dump(sc);
  t.doesNotThrow(() => envoyFromJson(ConfigDumpSchema, JSON.parse(d.body)));
  const listeners = section(d.configs, 'ListenersConfigDump') as { dynamic_listeners: { name: string; active_state: { listener: Json } }[] };
  t.same(listeners.dynamic_listeners.map((l) => l.name), ['virtualOutbound', '0.0.0.0_9080', 'virtualInbound'], "istiod's listeners: the capture, a listener per outbound HTTP port, the inbound side");
  const inbound = listeners.dynamic_listeners.find((l) => l.name === 'virtualInbound')!.active_state.listener as { filter_chains: Json[] };
  // STRICT: one mTLS chain for connections made to the inbound port directly (the --app-port's),
  // one for the app's port as iptables redirects it, and the catch-all to InboundPassthroughCluster.
  t.match(inbound.filter_chains, [
    { filter_chain_match: { destination_port: sc.ports.inbound, transport_protocol: 'tls' }, transport_socket: { name: 'envoy.transport_sockets.tls' } },
    { name: `0.0.0.0_${backend.port}`, filter_chain_match: { destination_port: backend.port, transport_protocol: 'tls' }, transport_socket: { name: 'envoy.transport_sockets.tls' } },
    { name: 'virtualInbound', filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { cluster: 'InboundPassthroughCluster' } }] },
  ]);
  t.equal(inbound.filter_chains.length, 3, 'STRICT: no plaintext chain');
  t.notOk(inbound.filter_chains.some((c) => (c.filter_chain_match as Json | undefined)?.transport_protocol === 'raw_buffer'), 'STRICT: no plaintext HTTP chain');
  const clusters = section(d.configs, 'ClustersConfigDump') as { dynamic_active_clusters: { cluster: { name: string; type: string } }[] };
  t.match(clusters.dynamic_active_clusters.find((c) => c.cluster.name === `inbound|${backend.port}||`), { cluster: { type: 'STATIC' } });
});

t.test('?include_eds adds the EndpointsConfigDump: EDS clusters dynamic, with their endpoints', async (t) => {
  const d = await dump(gw, '?include_eds');
  t.doesNotThrow(() => envoyFromJson(ConfigDumpSchema, JSON.parse(d.body)));
  t.equal(d.configs[2]!['@type'], `${ADMIN}EndpointsConfigDump`, 'after the clusters, as Envoy');
  const eds = section(d.configs, 'EndpointsConfigDump') as { dynamic_endpoint_configs: { endpoint_config: { cluster_name: string; endpoints: Json[] } }[] };
  const v1 = eds.dynamic_endpoint_configs.find((e) => e.endpoint_config.cluster_name === 'outbound|9080|v1|reviews.default.svc.cluster.local');
  t.match(v1?.endpoint_config.endpoints, [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: backend.port } } } }] }]);
});

t.test('?resource= prints each entry of that field as its own Any; unknown and non-repeated fields are errors', async (t) => {
  const d = await dump(gw, '?resource=dynamic_listeners');
  t.equal(d.status, 200);
  t.same(d.configs.map((c) => [c['@type'], c.name]), gw.proxy.runtime.snapshot!.config.listeners.map((l) => [`${ADMIN}ListenersConfigDump.DynamicListener`, l.name]));
  t.ok(d.configs.every((c) => (c.active_state as Json).listener !== undefined), 'whole entries');
  t.doesNotThrow(() => envoyFromJson(ConfigDumpSchema, JSON.parse(d.body)));
  const masked = await dump(gw, '?resource=dynamic_active_clusters&mask=cluster.name');
  t.equal(masked.status, 200, masked.body);
  t.same(
    masked.configs.map((c) => c.cluster),
    gw.proxy.runtime.snapshot!.config.clusters.map((c) => ({ '@type': 'type.googleapis.com/envoy.config.cluster.v3.Cluster', name: c.name })),
    'the mask reaches into the Any: only the names are left',
  );
  t.ok(masked.configs.every((c) => Object.keys(c).join() === '@type,cluster'), 'version_info and last_updated trimmed');
  const missing = await dump(gw, '?resource=nothing_here');
  t.equal(missing.status, 404);
  t.equal(missing.body, 'nothing_here not found in config dump');
  const single = await dump(gw, '?resource=version_info');
  t.equal(single.status, 400);
  t.equal(single.body, 'version_info is not a repeated field. Use ?mask=version_info to get only this field');
  const badMask = await dump(gw, '?resource=dynamic_listeners&mask=nope');
  t.equal(badMask.status, 400);
  t.equal(badMask.body, 'FieldMask paths: "nope"\n could not be successfully used.');
});

t.test('?mask= trims every section it applies to and drops the others', async (t) => {
  const d = await dump(gw, '?mask=dynamic_active_clusters,static_clusters');
  t.equal(d.status, 200);
  t.same(d.configs.map((c) => Object.keys(c).sort()), [['@type', 'dynamic_active_clusters']], 'only the clusters section, only that field');
  t.equal((d.configs[0]!.dynamic_active_clusters as unknown[]).length, 3);
  const nested = await dump(gw, '?mask=bootstrap.node');
  t.same(nested.configs.map((c) => c['@type']), [`${ADMIN}BootstrapConfigDump`]);
  t.same(Object.keys((nested.configs[0]!.bootstrap as Json)), ['node'], 'a path through a singular message keeps only that field');
  const bad = await dump(gw, '?mask=nope');
  t.equal(bad.status, 400);
  t.equal(bad.body, 'FieldMask nope could not be successfully applied to any configs.');
});

t.test('?name_regex= keeps the resources whose whole name matches (RE2); a bad pattern is a 400', async (t) => {
  const d = await dump(gw, `?name_regex=${encodeURIComponent('.*reviews.*')}&include_eds`);
  t.equal(d.status, 200);
  const clusters = section(d.configs, 'ClustersConfigDump') as { dynamic_active_clusters: { cluster: { name: string } }[] };
  t.same(clusters.dynamic_active_clusters.map((c) => c.cluster.name).sort(), ['outbound|9080|v1|reviews.default.svc.cluster.local', 'outbound|9080||reviews.default.svc.cluster.local']);
  t.same((section(d.configs, 'ListenersConfigDump') as { dynamic_listeners?: unknown[] }).dynamic_listeners ?? [], [], 'no listener name matches');
  const eds = section(d.configs, 'EndpointsConfigDump') as { dynamic_endpoint_configs: { endpoint_config: { cluster_name: string } }[] };
  t.ok(eds.dynamic_endpoint_configs.every((e) => e.endpoint_config.cluster_name.includes('reviews')));
  const partial = await dump(gw, '?name_regex=reviews');
  t.same((section(partial.configs, 'ClustersConfigDump') as { dynamic_active_clusters?: unknown[] }).dynamic_active_clusters ?? [], [], 'a partial match is no match, as RE2 full match');
  const bad = await dump(gw, '?name_regex=(');
  t.equal(bad.status, 400);
  t.match(bad.body, /^INVALID_ARGUMENT: Error while parsing name_regex from \(: /);
});
