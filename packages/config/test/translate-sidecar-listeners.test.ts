// A sidecar's capture listeners as istiod builds them: virtualOutbound and virtualInbound on
// the original destination, a listener per service port not bound to its port (HTTP, sniffed,
// TCP by VIP, TLS by SNI), per inbound port a chain of virtualInbound with its mTLS mode, and
// the passthrough clusters by the outbound traffic policy.
//
// Reference: pilot/pkg/networking/core/listener.go (buildSidecarOutboundListeners,
// buildSidecarOutboundListener's conflict handling, buildListenerFromEntry), tls.go
// (buildSidecarOutboundTLSFilterChainOpts, buildSidecarOutboundTCPFilterChainOpts),
// listener_inbound.go (getFilterChainsByServicePort), httproute.go (buildCatchAllVirtualHost,
// getVirtualHostsForSniffedServicePort), cluster_builder.go (buildBlackHoleCluster,
// buildDefaultPassthroughCluster, buildInboundPassthroughCluster), pkg/config/mesh/mesh.go.
import t from 'tap';
import { translateIstio, type Listener, type ProxyConfig, type TcpRoute } from '@remora/config';
import { parseMeshConfig, type MeshConfig } from '../src/schema/mesh-config.ts';
import { briefIssue, cluster, forward, INGRESS, load, nodeWith, PORTS, routeTable, SIDECAR, targets, vhostNames } from './helpers/translate.ts';

const se = (name: string, spec: string, ns = 'default'): string =>
  `apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n${spec}\n---\n`;
const vs = (name: string, spec: string): string => `apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ${name}}\nspec:\n${spec}\n---\n`;

/** A bookinfo-like mesh: HTTP, sniffed (with and without a VIP), TCP (with and without a VIP), an external TLS host. */
const MESH =
  se('reviews', '  hosts: [reviews]\n  addresses: [10.96.0.10]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 9080, name: http, protocol: HTTP}]\n  endpoints: [{address: 10.0.0.20, labels: {app: reviews}}]') +
  se('web', '  hosts: [web]\n  addresses: [10.96.0.11]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 8000, name: web}]\n  endpoints: [{address: 10.0.0.21, labels: {app: web}}]') +
  se('legacy', '  hosts: [legacy.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports: [{number: 8001, name: legacy}]') +
  se('redis', '  hosts: [redis]\n  addresses: [10.96.0.12]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 6379, name: redis, protocol: REDIS}]\n  endpoints: [{address: 10.0.0.22, labels: {app: redis}}]') +
  se('db', '  hosts: [db.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports: [{number: 5432, name: tcp-pg, protocol: TCP}]') +
  se('api', '  hosts: [api.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports: [{number: 443, name: https, protocol: HTTPS}]') +
  se('pay', '  hosts: [pay.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports: [{number: 443, name: tls, protocol: TLS}]');

const route = (c: string, sni: string[] = [], origin = ''): TcpRoute => ({ sniHosts: sni, clusters: [{ cluster: c, weight: 100 }], origin });
const PASSTHROUGH = route('PassthroughCluster');
const BLACKHOLE = route('BlackHoleCluster');
const INBOUND_PASSTHROUGH = route('InboundPassthroughCluster');

function translate(yaml: string, opts: { mesh?: string; node?: typeof SIDECAR; appPort?: number | null } = {}): { config: ProxyConfig; brief: string[] } {
  let mesh: MeshConfig | undefined;
  if (opts.mesh !== undefined) {
    const parsed = parseMeshConfig(opts.mesh, 'mesh.yaml');
    if (parsed.mesh === null) throw new Error(parsed.issues.map(briefIssue).join('\n'));
    mesh = parsed.mesh;
  }
  const { config, issues } = translateIstio(load(yaml).resources, opts.node ?? SIDECAR, { ...PORTS, appPort: opts.appPort ?? null }, { dnsRefreshMs: 60_000, ...(mesh ? { mesh } : {}) });
  return { config, brief: issues.map(briefIssue) };
}

function listener(config: ProxyConfig, name: string): Listener {
  const l = config.listeners.find((x) => x.name === name);
  if (!l) throw new Error(`no listener ${name}; have ${config.listeners.map((x) => x.name).join(', ')}`);
  return l;
}

t.test('per service port: a listener not bound to its port, named and shaped as istiod builds it', async (t) => {
  const { config, brief } = translate(MESH);
  t.same(brief, []);
  t.same(
    config.listeners.filter((l) => l.direction === 'outbound').map((l) => l.name),
    ['virtualOutbound', '0.0.0.0_9080', '10.96.0.11_8000', '0.0.0.0_8001', '10.96.0.12_6379', '0.0.0.0_5432', '0.0.0.0_443'],
  );
  for (const l of config.listeners.filter((x) => x.name !== 'virtualOutbound' && x.direction === 'outbound')) {
    t.equal(l.bindToPort, false, `${l.name} opens no socket: virtualOutbound hands it its connections`);
    t.equal(l.useOriginalDst, undefined);
  }

  const vo = listener(config, 'virtualOutbound');
  t.equal(vo.useOriginalDst, true);
  t.same(vo.catchAll, [PASSTHROUGH], 'ALLOW_ANY (Istio default): unknown destinations pass through');
  t.equal(vo.tcpProxy, undefined, 'its own chain, for connections made to it directly, stays HTTP');

  // HTTP: the port's shared route table; istiod's HTTP inspector and PassthroughFilterChain let other bytes through.
  const http = listener(config, '0.0.0.0_9080');
  t.equal(http.routeConfig, '9080');
  t.equal(http.port, 9080);
  t.equal(http.address, '0.0.0.0');
  t.same(http.detectProtocol, { tcp: [PASSTHROUGH], timeoutMs: 5000 });
  t.same(http.httpFilters.map((f) => f.name), vo.httpFilters.map((f) => f.name), 'the same outbound filters as virtualOutbound');

  // Unknown protocol with a VIP: its own listener and route table `<host>:<port>`, HTTP or the service's TCP.
  const web = listener(config, '10.96.0.11_8000');
  t.equal(web.routeConfig, 'web.default.svc.cluster.local:8000');
  t.same(web.detectProtocol, { tcp: [route('outbound|8000||web.default.svc.cluster.local')], timeoutMs: 5000 });
  const sniffed = routeTable(config, 'web.default.svc.cluster.local:8000');
  t.same(sniffed.virtualHosts.map((v) => [v.name, v.domains]), [['web.default.svc.cluster.local:8000', ['*']]], 'its virtual host alone, for any name');
  t.notOk(config.listeners.find((l) => l.name === 'virtualOutbound')!.routeConfigsByPort!['web.default.svc.cluster.local:8000']);

  // Unknown protocol without an address: on the wildcard with the port's table.
  const legacy = listener(config, '0.0.0.0_8001');
  t.equal(legacy.routeConfig, '8001');
  t.same(legacy.detectProtocol?.tcp, [route('outbound|8001||legacy.example.com')]);

  // TCP family: by VIP, else on the wildcard; one route, no HTTP.
  const redis = listener(config, '10.96.0.12_6379');
  t.same(redis.tcpProxy, [route('outbound|6379||redis.default.svc.cluster.local')]);
  t.equal(redis.connectionManager, undefined);
  t.equal(redis.detectProtocol, undefined);
  t.same(listener(config, '0.0.0.0_5432').tcpProxy, [route('outbound|5432||db.example.com')]);

  // HTTPS and TLS without addresses share 0.0.0.0_443, told apart by SNI; the rest passes through.
  t.same(listener(config, '0.0.0.0_443').tcpProxy, [
    route('outbound|443||api.example.com', ['api.example.com']),
    route('outbound|443||pay.example.com', ['pay.example.com']),
    PASSTHROUGH,
  ]);
});

t.test('VirtualService tcp and tls routes for the mesh decide the TCP listeners', async (t) => {
  const { config, brief } = translate(
    MESH +
      se('redis2', '  hosts: [redis-v2]\n  addresses: [10.96.0.13]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 6379, name: redis, protocol: REDIS}]\n  endpoints: [{address: 10.0.0.23}]') +
      vs('redis', '  hosts: [redis]\n  tcp:\n  - match: [{port: 7000}]\n    route: [{destination: {host: redis-v2}}]\n  - route:\n    - {destination: {host: redis}, weight: 90}\n    - {destination: {host: redis-v2}, weight: 10}') +
      vs('pay', '  hosts: [pay.example.com]\n  tls:\n  - match: [{sniHosts: [pay.example.com], sourceLabels: {app: other}}]\n    route: [{destination: {host: api.example.com}}]\n  - match: [{sniHosts: [pay.example.com]}]\n    route: [{destination: {host: pay.example.com, port: {number: 443}}}]'),
  );
  t.same(brief, []);
  t.same(listener(config, '10.96.0.12_6379').tcpProxy, [
    {
      sniHosts: [],
      clusters: [
        { cluster: 'outbound|6379||redis.default.svc.cluster.local', weight: 90 },
        { cluster: 'outbound|6379||redis-v2.default.svc.cluster.local', weight: 10 },
      ],
      origin: 'default/redis',
    },
  ], 'the port-7000 match is for another port; the next route matches every connection');
  t.same(listener(config, '0.0.0.0_443').tcpProxy, [
    route('outbound|443||api.example.com', ['api.example.com']),
    route('outbound|443||pay.example.com', ['pay.example.com'], 'default/pay'),
    PASSTHROUGH,
  ], "sourceLabels that are not this workload's: that match is not built");
});

t.test('REGISTRY_ONLY from the MeshConfig or a Sidecar: BlackHoleCluster and block_all instead of PassthroughCluster and allow_any', async (t) => {
  const allow = translate(MESH);
  t.same(vhostNames(allow.config, '9080').at(-1), 'allow_any');
  const allowAny = routeTable(allow.config, '9080').virtualHosts.at(-1)!;
  t.same(allowAny.domains, ['*']);
  t.same(targets(allowAny.routes[0]!), [['PassthroughCluster', 100]]);
  t.equal(forward(allowAny.routes[0]!).retry, null);

  const meshOnly = translate(MESH, { mesh: 'outboundTrafficPolicy: {mode: REGISTRY_ONLY}\nprotocolDetectionTimeout: 250ms\n' });
  t.same(meshOnly.brief, []);
  t.same(listener(meshOnly.config, 'virtualOutbound').catchAll, [BLACKHOLE]);
  t.same(listener(meshOnly.config, '0.0.0.0_9080').detectProtocol, { tcp: [BLACKHOLE], timeoutMs: 250 }, 'the MeshConfig timeout is followed');
  t.same(listener(meshOnly.config, '0.0.0.0_443').tcpProxy!.at(-1), BLACKHOLE);
  t.same(vhostNames(meshOnly.config, '9080').at(-1), 'block_all');
  t.notOk(vhostNames(meshOnly.config).includes('allow_any'));

  // A Sidecar's own policy overrides the MeshConfig's, either way.
  const sidecar = (mode: string): string =>
    `apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default}\nspec:\n  outboundTrafficPolicy: {mode: ${mode}}\n---\n`;
  t.same(listener(translate(MESH + sidecar('REGISTRY_ONLY')).config, 'virtualOutbound').catchAll, [BLACKHOLE]);
  t.same(listener(translate(MESH + sidecar('ALLOW_ANY'), { mesh: 'outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n' }).config, 'virtualOutbound').catchAll, [PASSTHROUGH]);

  // The catch-all clusters are there either way, under istiod's names.
  for (const c of [allow.config, meshOnly.config]) {
    t.same(
      ['BlackHoleCluster', 'PassthroughCluster', 'InboundPassthroughCluster'].map((n) => {
        const x = cluster(c, n);
        return [x.discovery, x.endpoints.length, x.upstreamBindAddress ?? null, x.service];
      }),
      [
        ['static', 0, null, null],
        ['original-dst', 0, null, null],
        ['original-dst', 0, '127.0.0.6', null],
      ],
    );
  }
});

t.test('MeshConfig: outboundTrafficPolicy and protocolDetectionTimeout are read, bad values named', async (t) => {
  t.same(parseMeshConfig('{}', 'm.yaml').mesh, { rootNamespace: null, trustDomain: null, extensionProviders: [] });
  t.same(parseMeshConfig('outboundTrafficPolicy: {mode: ALLOW_ANY}\nprotocolDetectionTimeout: 0s\n', 'm.yaml').mesh, {
    rootNamespace: null,
    trustDomain: null,
    extensionProviders: [],
    outboundTrafficPolicy: 'ALLOW_ANY',
    protocolDetectionTimeoutMs: 0,
  });
  const bad = parseMeshConfig('outboundTrafficPolicy: {mode: SOMETIMES}\nprotocolDetectionTimeout: soon\n', 'm.yaml');
  t.equal(bad.mesh, null);
  t.same(bad.issues.map((i) => [i.severity, i.path]), [
    ['error', 'outboundTrafficPolicy.mode'],
    ['error', 'protocolDetectionTimeout'],
  ]);
  // An explicit 0s is Envoy's "no timeout", as in Istio.
  const zero = translate(MESH, { mesh: 'protocolDetectionTimeout: 0s\n' });
  t.equal(listener(zero.config, '0.0.0.0_9080').detectProtocol?.timeoutMs, 0);
});

t.test("two services disagreeing on a port: istiod's conflict rules, first wins, reported", async (t) => {
  const { config, brief } = translate(
    se('a', '  hosts: [a.example.com]\n  resolution: DNS\n  ports: [{number: 3306, name: mysql, protocol: MYSQL}]') +
      se('b', '  hosts: [b.example.com]\n  resolution: DNS\n  ports: [{number: 3306, name: http, protocol: HTTP}]') +
      se('c', '  hosts: [c.example.com]\n  resolution: DNS\n  ports: [{number: 7000, name: tcp, protocol: TCP}]') +
      se('d', '  hosts: [d.example.com]\n  resolution: DNS\n  ports: [{number: 7000, name: tcp, protocol: TCP}]') +
      se('e', '  hosts: [e.example.com]\n  resolution: DNS\n  ports: [{number: 7001, name: tcp, protocol: TCP}]') +
      se('f', '  hosts: [f.example.com]\n  resolution: DNS\n  ports: [{number: 7001, name: http, protocol: HTTP}]'),
  );
  // MySQL is server-first: HTTP (with its inspector) may not share its port.
  t.same(listener(config, '0.0.0.0_3306').tcpProxy, [route('outbound|3306||a.example.com')]);
  // Two TCP services without addresses on one port: one route matches every connection; the first keeps it.
  t.same(listener(config, '0.0.0.0_7000').tcpProxy, [route('outbound|7000||c.example.com')]);
  // TCP then HTTP on one port: sniffed, HTTP to the port's table, the rest to the TCP service.
  const mixed = listener(config, '0.0.0.0_7001');
  t.equal(mixed.routeConfig, '7001');
  t.same(mixed.detectProtocol?.tcp, [route('outbound|7001||e.example.com')]);
  t.same(brief, [
    'warning ServiceEntry default/b spec.ports[0]: port 3306 of b.example.com (HTTP) conflicts with a.example.com (MYSQL) on listener 0.0.0.0_3306; the first is kept',
    'warning ServiceEntry default/d spec.ports[0]: listener 0.0.0.0_7000 already routes every connection for c.example.com; the route of d.example.com port 7000 is dropped (the first wins, as in istiod)',
  ]);
});

const PRODUCTPAGE =
  se('productpage', '  hosts: [productpage]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  workloadSelector: {labels: {app: productpage}}\n  ports:\n  - {number: 9080, name: http, protocol: HTTP}\n  - {number: 80, name: metrics, protocol: HTTP, targetPort: 9090}\n  - {number: 5000, name: tcp-admin, protocol: TCP}\n  - {number: 6000, name: stream}');
const pa = (name: string, spec: string): string => `apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: ${name}}\nspec:\n${spec}\n---\n`;

t.test('inbound: a chain of virtualInbound per port of the services selecting the workload, with its mTLS mode', async (t) => {
  const { config, brief } = translate(
    PRODUCTPAGE + pa('pp', '  selector: {matchLabels: {app: productpage}}\n  mtls: {mode: STRICT}\n  portLevelMtls:\n    9090: {mode: DISABLE}\n    5000: {mode: PERMISSIVE}'),
    { appPort: 8080 },
  );
  t.same(brief, []);
  const inbound = config.listeners.filter((l) => l.direction === 'inbound');
  t.same(inbound.map((l) => [l.name, l.address, l.port, l.destinationPort, l.bindToPort ?? true, l.tls]), [
    ['virtualInbound', '0.0.0.0', 15006, 8080, true, { kind: 'mesh', mode: 'STRICT' }],
    ['inbound_0.0.0.0_5000', '0.0.0.0', 15006, 5000, false, { kind: 'mesh', mode: 'PERMISSIVE' }],
    ['inbound_0.0.0.0_6000', '0.0.0.0', 15006, 6000, false, { kind: 'mesh', mode: 'STRICT' }],
    ['inbound_0.0.0.0_8080', '0.0.0.0', 15006, 8080, false, { kind: 'mesh', mode: 'STRICT' }],
    ['inbound_0.0.0.0_9080', '0.0.0.0', 15006, 9080, false, { kind: 'mesh', mode: 'STRICT' }],
    ['inbound_0.0.0.0_9090', '0.0.0.0', 15006, 9090, false, null],
  ]);
  const vi = listener(config, 'virtualInbound');
  t.equal(vi.useOriginalDst, true);
  t.same(vi.catchAll, [INBOUND_PASSTHROUGH], 'a port no service declares reaches the app as it came');
  t.equal(vi.routeConfig, 'inbound|8080||', 'its own chain is the --app-port chain');
  // HTTP ports: the inbound filters and the route table named after the cluster.
  t.equal(listener(config, 'inbound_0.0.0.0_9080').routeConfig, 'inbound|9080||');
  t.same(targets(routeTable(config, 'inbound|9090||').virtualHosts[0]!.routes[0]!), [['inbound|9090||', 100]]);
  // TCP: raw bytes to the app.
  const tcp = listener(config, 'inbound_0.0.0.0_5000');
  t.same(tcp.tcpProxy, [route('inbound|5000||')]);
  t.equal(tcp.connectionManager, undefined);
  // Unknown protocol: HTTP, or the app's TCP after detection.
  t.same(listener(config, 'inbound_0.0.0.0_6000').detectProtocol, { tcp: [route('inbound|6000||')], timeoutMs: 5000 });
  // The clusters: the app on each port (targetPort for the metrics port), the service for metrics.
  t.same(
    config.clusters.filter((c) => c.name.startsWith('inbound|')).map((c) => [c.name, c.endpoints.map((e) => `${e.address}:${e.port}`), c.protocol, c.service?.port ?? null]),
    [
      ['inbound|5000||', ['127.0.0.1:5000'], 'tcp', 5000],
      ['inbound|6000||', ['127.0.0.1:6000'], 'http1', 6000],
      ['inbound|8080||', ['127.0.0.1:8080'], 'http1', 9080],
      ['inbound|9080||', ['127.0.0.1:9080'], 'http1', 9080],
      ['inbound|9090||', ['127.0.0.1:9090'], 'http1', 80],
    ],
  );
});

t.test('Sidecar ingress: its listeners replace the services\' inbound ports, each to its defaultEndpoint (a unix socket too), with its TLS and bind', async (t) => {
  const sidecar = `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: ingress, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
  - port: {number: 8443, protocol: HTTPS, name: external}
    defaultEndpoint: 0.0.0.0:80
    tls: {mode: SIMPLE, serverCertificate: /etc/certs/tls.crt, privateKey: /etc/certs/tls.key}
  - port: {number: 7070, protocol: TCP, name: tcp-raw}
  - port: {number: 3000, protocol: HTTP, name: http-direct}
    bind: 127.0.0.1
    captureMode: NONE
    defaultEndpoint: 127.0.0.1:3001
  - port: {number: 4000, protocol: HTTP, name: http-uds}
    defaultEndpoint: unix:///var/run/app.sock
  - port: {number: 4443, protocol: TLS, name: tls-term}
    tls: {mode: SIMPLE, serverCertificate: /etc/certs/tls.crt, privateKey: /etc/certs/tls.key}
---
`;
  const { config, brief } = translate(PRODUCTPAGE + sidecar + pa('pp', '  selector: {matchLabels: {app: productpage}}\n  mtls: {mode: STRICT}'));
  t.same(brief, [
    'warning Sidecar default/ingress spec.ingress[5].tls: terminating TLS in front of TLS is not supported (only HTTP behind it); port 4443 gets no inbound listener',
  ]);
  const inbound = config.listeners.filter((l) => l.direction === 'inbound');
  t.same(inbound.map((l) => [l.name, l.address, l.port, l.destinationPort, l.bindToPort ?? true, l.tls?.kind ?? null]), [
    ['virtualInbound', '0.0.0.0', 15006, undefined, true, null],
    ['127.0.0.1_3000', '127.0.0.1', 3000, undefined, true, 'mesh'],
    ['inbound_0.0.0.0_4000', '0.0.0.0', 15006, 4000, false, 'mesh'],
    ['inbound_0.0.0.0_7070', '0.0.0.0', 15006, 7070, false, 'mesh'],
    ['inbound_0.0.0.0_8443', '0.0.0.0', 15006, 8443, false, 'gateway'],
    ['inbound_0.0.0.0_9080', '0.0.0.0', 15006, 9080, false, 'mesh'],
  ], 'the services\' ports 80, 5000 and 6000 are gone; 9080 stays, as the Sidecar names it');
  const tls = listener(config, 'inbound_0.0.0.0_8443').tls;
  t.match(tls, { kind: 'gateway', servers: [{ mode: 'SIMPLE', certFile: '/etc/certs/tls.crt', keyFile: '/etc/certs/tls.key', hosts: ['*'] }] }, 'HTTPS terminated with the listener\'s files, HTTP behind it');
  t.equal(listener(config, 'inbound_0.0.0.0_8443').routeConfig, 'inbound|8443||');
  t.same(listener(config, 'inbound_0.0.0.0_7070').tcpProxy, [route('inbound|7070||')]);
  t.same(
    config.clusters.filter((c) => c.name.startsWith('inbound|')).map((c) => [c.name, c.endpoints.map((e) => `${e.address}:${e.port}`), c.service?.port ?? null]),
    [
      ['inbound|3000||', ['127.0.0.1:3001'], 9080],
      ['inbound|4000||', ['unix:///var/run/app.sock:0'], 9080],
      ['inbound|7070||', ['127.0.0.1:7070'], 9080],
      ['inbound|8443||', ['127.0.0.1:80'], 9080],
      ['inbound|9080||', ['127.0.0.1:8080'], 9080],
    ],
    '127.0.0.1:PORT and 0.0.0.0:PORT (the app address) as defaultEndpoint; none: the app address at the port',
  );
  t.equal(config.clusters.find((c) => c.name === 'inbound|4000||')?.endpoints[0]?.pipe, '/var/run/app.sock', 'unix://PATH: the endpoint is that unix domain socket');
});

t.test('inbound TCP ports and AuthorizationPolicy: a policy that cannot be enforced there closes the port, reported', async (t) => {
  const ap = (name: string, spec: string): string => `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ${name}}\nspec:\n${spec}\n---\n`;
  const tcpRoutes = (yaml: string): { tcp: unknown; sniffed: unknown; brief: string[] } => {
    const { config, brief } = translate(PRODUCTPAGE + yaml);
    return { tcp: listener(config, 'inbound_0.0.0.0_5000').tcpProxy, sniffed: listener(config, 'inbound_0.0.0.0_6000').detectProtocol?.tcp, brief };
  };
  // No policy, or an AUDIT one: the app.
  t.same(tcpRoutes('').tcp, [route('inbound|5000||')]);
  t.same(tcpRoutes(ap('audit', '  action: AUDIT\n  rules: [{}]')).tcp, [route('inbound|5000||')]);
  // A DENY policy for another port only cannot match here (istiod's network RBAC would not match either).
  t.same(tcpRoutes(ap('deny-web', '  action: DENY\n  rules: [{to: [{operation: {ports: ["9080"], paths: [/admin]}}]}]')).tcp, [route('inbound|5000||')]);
  // ALLOW (istiod: only its L4 rules allow on TCP), or DENY that may match: closed, never silently open.
  const allow = tcpRoutes(ap('allow-get', '  rules: [{to: [{operation: {methods: [GET]}}]}]'));
  t.same(allow.tcp, [route('BlackHoleCluster', [], 'default/allow-get')]);
  t.same(allow.sniffed, [route('BlackHoleCluster', [], 'default/allow-get')], 'a sniffed port\'s TCP side too');
  t.match(allow.brief, ['warning AuthorizationPolicy default/allow-get spec: AuthorizationPolicy is not enforced on TCP traffic yet; TCP connections to port 5000 are refused rather than let through unchecked']);
  t.same(tcpRoutes(ap('deny-sa', '  action: DENY\n  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/bad]}}]}]')).tcp, [route('BlackHoleCluster', [], 'default/deny-sa')]);
});

t.test('no service selecting the workload and no app port: no inbound listener; gateways are unchanged', async (t) => {
  const { config } = translate(MESH);
  t.same(config.listeners.filter((l) => l.direction === 'inbound'), []);
  const gw = translate(MESH, { node: INGRESS });
  t.same(gw.config.listeners, []);
  t.notOk(gw.config.clusters.some((c) => c.name === 'PassthroughCluster'), 'no original-destination clusters on a gateway');
  // A service selecting the workload brings virtualInbound even without an app port; its own chain is the catch-all.
  const own = translate(PRODUCTPAGE, { node: nodeWith(SIDECAR, { labels: { app: 'productpage' } }) });
  const vi = listener(own.config, 'virtualInbound');
  t.same(vi.tcpProxy, [INBOUND_PASSTHROUGH]);
  t.same(vi.catchAll, [INBOUND_PASSTHROUGH]);
});
