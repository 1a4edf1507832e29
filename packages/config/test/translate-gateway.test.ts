// Gateway mode of the Istio translator: which Gateways a proxy serves, one listener and
// route table per server port, virtual hosts from VirtualService host ∩ server host with
// the server's namespace restriction, VirtualServices merged per host, and how a
// VirtualService names its gateways.
//
// Reference: istio.io Gateway and VirtualService API pages; pilot/pkg/networking/core/
// gateway.go (buildGatewayHTTPRouteConfig), route/route.go (CombineVHostRoutes,
// GetDestinationCluster), pilot/pkg/model/gateway.go (sanitizeServerHostNamespace),
// pkg/config/host (NamesForNamespace, Intersection), model/virtualservice.go
// (resolveGatewayName).
import t from 'tap';
import { BOOKINFO_SERVICES, bk, INGRESS, ISTIO_ENVOY_HCM, nodeWith, routeTable, targets, translate, vhost, type Translated, CHAIN_TAIL } from './helpers/translate.ts';

function gateway(name: string, ns: string, servers: string, selector = '{istio: ingressgateway}', meta = ''): string {
  return `apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: ${name}, namespace: ${ns}${meta}}\nspec:\n  selector: ${selector}\n  servers:\n${servers}\n---\n`;
}
const http = (port: number, hosts: string, extra = ''): string =>
  `  - port: {number: ${port}, name: http-${port}, protocol: HTTP}\n    hosts: ${hosts}\n${extra}`;
function vs(name: string, ns: string, hosts: string, gateways: string, httpRoutes: string, meta = ''): string {
  return `apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ${name}, namespace: ${ns}${meta}}\nspec:\n  hosts: ${hosts}\n  gateways: ${gateways}\n  http:\n${httpRoutes}\n---\n`;
}
const toSvc = (host: string, extra = ''): string => `  - ${extra}route:\n    - destination: {host: ${host}}`;
const domains = (out: Translated, table: string): string[] => routeTable(out.config, table).virtualHosts.map((v) => v.domains.join(','));

t.test('a gateway proxy serves the Gateways whose selector matches its labels', async (t) => {
  const out = translate(
    BOOKINFO_SERVICES +
      gateway('public', 'istio-system', http(8080, '["*"]')) +
      gateway('internal', 'istio-system', http(9000, '["*"]'), '{istio: internal-gateway}') +
      gateway('public-tls-port', 'istio-system', http(80, '["*"]'), '{app: istio-ingressgateway}'),
    INGRESS,
  );
  t.same(out.issues, []);
  t.same(out.config.listeners, [
    { name: '0.0.0.0_80', address: '0.0.0.0', port: 80, connectionManager: ISTIO_ENVOY_HCM, direction: 'gateway', routeConfig: 'http.80', httpFilters: CHAIN_TAIL, tls: null },
    { name: '0.0.0.0_8080', address: '0.0.0.0', port: 8080, connectionManager: ISTIO_ENVOY_HCM, direction: 'gateway', routeConfig: 'http.8080', httpFilters: CHAIN_TAIL, tls: null },
  ]);
  t.same(
    out.config.routeConfigs.map((r) => [r.name, r.ignorePortInHostMatching, r.virtualHosts.length]),
    [
      ['http.80', true, 0],
      ['http.8080', true, 0],
    ],
    'no VirtualService yet: empty route tables (404 NR, as Istio’s blackhole virtual host)',
  );
  // Every outbound cluster is built for gateways too.
  t.ok(out.config.clusters.some((c) => c.name === bk('reviews')));
  t.notOk(out.config.listeners.some((l) => l.name === 'virtualOutbound'), 'no sidecar listeners');
});

t.test('virtual hosts: VirtualService host ∩ server host, the more specific of the two', async (t) => {
  const out = translate(
    BOOKINFO_SERVICES +
      gateway('gw', 'istio-system', http(80, '["*.example.com", "uk.bookinfo.com"]')) +
      vs('a', 'default', '[reviews.example.com, "*.bookinfo.com"]', '[istio-system/gw]', toSvc('reviews')) +
      vs('b', 'default', '["*.example.com"]', '[istio-system/gw]', toSvc('ratings')) +
      vs('c', 'default', '[other.org]', '[istio-system/gw]', toSvc('details')),
    INGRESS,
  );
  t.same(out.issues, []);
  const rc = routeTable(out.config, 'http.80');
  t.same(
    rc.virtualHosts.map((v) => [v.name, v.domains, v.routes.map((r) => targets(r)[0]![0])]),
    [
      ['reviews.example.com:80', ['reviews.example.com'], [bk('reviews')]],
      ['uk.bookinfo.com:80', ['uk.bookinfo.com'], [bk('reviews')]],
      ['*.example.com:80', ['*.example.com'], [bk('ratings')]],
    ],
  );
});

t.test('server hosts: ns/host, ./host (the Gateway namespace) and */host restrict the VirtualService namespace', async (t) => {
  // Gateway docs, Server.hosts: "namespace/dnsName ... `.` the Gateway's namespace, `*` any".
  const yaml =
    BOOKINFO_SERVICES +
    gateway('gw', 'edge', http(80, '["default/a.example.com", "./b.example.com", "*/c.example.com", "d.example.com"]')) +
    ['a', 'b', 'c', 'd']
      .flatMap((h) => [
        vs(`${h}-default`, 'default', `[${h}.example.com]`, '[edge/gw]', toSvc('reviews.default.svc.cluster.local')),
        vs(`${h}-edge`, 'edge', `[${h}.example.com]`, '[gw]', toSvc('ratings.default.svc.cluster.local')),
      ])
      .join('');
  const out = translate(yaml, INGRESS);
  t.same(
    vhostOrigins(out),
    [
      ['a.example.com', ['default/a-default']],
      ['b.example.com', ['edge/b-edge']],
      ['c.example.com', ['default/c-default', 'edge/c-edge']],
      ['d.example.com', ['default/d-default', 'edge/d-edge']],
    ],
  );
});

function vhostOrigins(out: Translated, table = 'http.80'): [string, string[]][] {
  // The VirtualService of each route: its origin without the `#<http index>` part.
  return routeTable(out.config, table).virtualHosts.map((v) => [v.domains[0]!, v.routes.map((r) => r.origin.slice(0, r.origin.indexOf('#')))]);
}

t.test('VirtualServices for one host on a gateway merge, oldest first, catch-all routes last', async (t) => {
  // Istio merges VirtualServices bound to a gateway (analysis IST0109: "Istio supports merging
  // of virtual services that are attached to the ingress gateways") with
  // route.go CombineVHostRoutes: order kept, catch-all routes moved to the end.
  const newer = vs(
    'newer',
    'default',
    '[bookinfo.example.com]',
    '[istio-system/gw]',
    `  - match: [{uri: {prefix: /ratings}}]\n    route: [{destination: {host: ratings}}]\n  - route: [{destination: {host: details}}]`,
    ', creationTimestamp: "2024-03-02T00:00:00Z"',
  );
  const older = vs(
    'older',
    'default',
    '[bookinfo.example.com]',
    '[istio-system/gw]',
    `  - match: [{uri: {prefix: /reviews}}]\n    route: [{destination: {host: reviews}}]\n  - match: [{uri: {prefix: /}}]\n    route: [{destination: {host: productpage}}]\n  - match: [{uri: {prefix: /never}}]\n    route: [{destination: {host: ratings}}]`,
    ', creationTimestamp: "2024-03-01T00:00:00Z"',
  );
  const out = translate(BOOKINFO_SERVICES + gateway('gw', 'istio-system', http(80, '["*"]')) + newer + older, INGRESS);
  t.same(out.issues, []);
  const routes = vhost(out.config, 'bookinfo.example.com:80', 'http.80').routes;
  t.same(
    routes.map((r) => [r.origin, targets(r)[0]![0]]),
    [
      ['default/older#0', bk('reviews')],
      ['default/newer#0', bk('ratings')],
      ['default/older#1', bk('productpage')],
      ['default/newer#1', bk('details')],
    ],
    'routes after a catch-all are dropped; catch-alls of every VirtualService come last',
  );
});

t.test('HTTPS servers get TLS listeners, TCP servers TCP listeners; httpsRedirect marks the hosts; shared ports are reported', async (t) => {
  const out = translate(
    BOOKINFO_SERVICES +
      gateway(
        'gw',
        'istio-system',
        http(80, '["*"]', '    tls: {httpsRedirect: true}\n') +
          '  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ["*"]\n    tls: {mode: SIMPLE, credentialName: bookinfo-cert}\n' +
          '  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: ["*"]\n',
      ) +
      gateway('gw2', 'default', http(80, '["bookinfo.example.com"]')) +
      vs('bookinfo', 'default', '["bookinfo.example.com"]', '[istio-system/gw, gw2]', toSvc('productpage')),
    INGRESS,
  );
  t.same(out.config.listeners.map((l) => [l.name, l.tls?.kind ?? null, l.tcpProxy?.length ?? null]), [
    ['0.0.0.0_80', null, null],
    ['0.0.0.0_443', 'gateway', null],
    ['0.0.0.0_31400', null, 0],
  ]);
  t.same(out.brief, [
    'warning Gateway istio-system/gw spec.servers[0].port: port 80 is shared by gateways istio-system/gw, default/gw2',
    'warning Gateway istio-system/gw spec.servers[2]: no VirtualService has a tcp route for port 31400; connections to it are closed',
  ]);
  // Istio: httpsRedirect on a server makes its virtual hosts answer 301 to https (require_tls ALL).
  t.equal(vhost(out.config, 'bookinfo.example.com:80', 'http.80').requireTls, true);
  t.equal(vhost(out.config, 'bookinfo.example.com:443', 'https.443.https.gw.istio-system').requireTls, false);
  t.same(out.config.listeners.map((l) => l.routeConfig), ['http.80', 'https.443.https.gw.istio-system', 'tcp.31400'], "istiod's RDS names: http.<port>, https.<port>.<port name>.<gateway>.<namespace>");
  const tls = out.config.listeners[1]!.tls;
  t.same(tls?.kind === 'gateway' ? tls.servers.map((s) => [s.hosts, s.mode, s.certFile, s.keyFile, s.caFile]) : null, [
    [['*'], 'SIMPLE', '/etc/remora/credentials/bookinfo-cert/tls.crt', '/etc/remora/credentials/bookinfo-cert/tls.key', null],
  ]);
});

t.test('TLS servers: SNI hosts, MUTUAL client CA, versions and ciphers, passthrough routes by SNI', async (t) => {
  const out = translate(
    BOOKINFO_SERVICES +
      gateway(
        'gw',
        'istio-system',
        '  - port: {number: 8443, name: https-a, protocol: HTTPS}\n    hosts: ["a.example.com"]\n    tls: {mode: MUTUAL, credentialName: a-cert, minProtocolVersion: TLSV1_3, subjectAltNames: [client.example.com]}\n' +
          '  - port: {number: 8443, name: https-b, protocol: HTTPS}\n    hosts: ["*.b.example.com"]\n    tls: {mode: SIMPLE, serverCertificate: /certs/b.pem, privateKey: /certs/b.key, maxProtocolVersion: TLSV1_2, cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256]}\n' +
          '  - port: {number: 9443, name: tls, protocol: TLS}\n    hosts: ["reviews.example.com"]\n    tls: {mode: PASSTHROUGH}\n',
      ) +
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: passthrough, namespace: default}
spec:
  hosts: [reviews.example.com]
  gateways: [istio-system/gw]
  tls:
  - match:
    - port: 9443
      sniHosts: [reviews.example.com]
    route:
    - destination: {host: reviews, port: {number: 9080}}
---
`,
    INGRESS,
  );
  t.same(out.brief, []);
  const servers = (name: string) => {
    const l = out.config.listeners.find((x) => x.name === name)!;
    return l.tls?.kind === 'gateway' ? l.tls.servers : [];
  };
  const [a, b] = servers('0.0.0.0_8443');
  t.equal(out.config.listeners.find((l) => l.name === '0.0.0.0_8443')!.routeConfig, 'https.8443.https-a.gw.istio-system', 'named after the first HTTPS server of the port');
  t.same([a!.hosts, a!.mode, a!.caFile, a!.subjectAltNames, a!.minVersion, a!.maxVersion], [
    ['a.example.com'],
    'MUTUAL',
    '/etc/remora/credentials/a-cert/ca.crt',
    ['client.example.com'],
    'TLSv1.3',
    null,
  ]);
  t.same([b!.hosts, b!.certFile, b!.keyFile, b!.maxVersion, b!.cipherSuites], [['*.b.example.com'], '/certs/b.pem', '/certs/b.key', 'TLSv1.2', ['ECDHE-RSA-AES128-GCM-SHA256']]);
  const [p] = servers('0.0.0.0_9443');
  t.equal(p!.mode, 'PASSTHROUGH');
  t.same(p!.tcpRoutes, [{ sniHosts: ['reviews.example.com'], clusters: [{ cluster: bk('reviews'), weight: 100 }], origin: 'default/passthrough' }]);
});

t.test('HTTP2, GRPC and GRPC-WEB servers are HTTP; bind sets the listener address and the route config name', async (t) => {
  const out = translate(
    gateway(
      'gw',
      'istio-system',
      '  - port: {number: 8081, name: h2, protocol: HTTP2}\n    hosts: ["*"]\n' +
        '  - port: {number: 8082, name: grpc, protocol: GRPC}\n    hosts: ["*"]\n' +
        '  - port: {number: 8083, name: grpc-web, protocol: GRPC-WEB}\n    hosts: ["*"]\n    bind: 127.0.0.1\n',
    ),
    INGRESS,
  );
  t.same(out.issues, []);
  t.same(
    out.config.listeners.map((l) => [l.name, l.address, l.routeConfig]),
    [
      ['0.0.0.0_8081', '0.0.0.0', 'http.8081'],
      ['0.0.0.0_8082', '0.0.0.0', 'http.8082'],
      ['127.0.0.1_8083', '127.0.0.1', 'http.8083.127.0.0.1'],
    ],
  );
});

t.test('VirtualService gateways: short names in the VirtualService namespace, ns/name, FQDN, mesh', async (t) => {
  // VirtualService docs, gateways: "Gateways in other namespaces may be referred to by
  // <gateway namespace>/<gateway name>; specifying a gateway with no namespace qualifier is
  // the same as specifying the VirtualService's namespace." model/virtualservice.go
  // resolveGatewayName also reads the legacy `name.namespace.svc.cluster.local`. (It reads
  // `./name` too, but Istio's validation rejects that form, as Remora's does.)
  const refs: [string, string, boolean][] = [
    ['bookinfo-gateway', 'default', true],
    ['bookinfo-gateway', 'team-a', false],
    ['default/bookinfo-gateway', 'team-a', true],
    ['bookinfo-gateway.default.svc.cluster.local', 'team-a', true],
    ['mesh', 'default', false],
  ];
  for (const [ref, ns, bound] of refs) {
    const out = translate(
      BOOKINFO_SERVICES + gateway('bookinfo-gateway', 'default', http(8080, '["*"]')) + vs('v', ns, '[bookinfo.example.com]', `["${ref}"]`, toSvc('productpage.default.svc.cluster.local')),
      INGRESS,
    );
    t.equal(routeTable(out.config, 'http.8080').virtualHosts.length, bound ? 1 : 0, `${ref} from ${ns}`);
  }
});

t.test('match-level gateways bind a VirtualService to a gateway for their blocks only', async (t) => {
  const out = translate(
    BOOKINFO_SERVICES +
      gateway('gw', 'istio-system', http(80, '["*"]')) +
      vs(
        'reviews',
        'default',
        '[reviews]',
        '[mesh]',
        `  - match:\n    - uri: {prefix: /edge}\n      gateways: [istio-system/gw]\n    - uri: {prefix: /mesh-only}\n    route: [{destination: {host: reviews, subset: v1}}]`,
      ),
    INGRESS,
  );
  t.same(vhostOrigins(out), [['reviews.default.svc.cluster.local', ['default/reviews']]]);
  t.same(vhost(out.config, 'reviews.default.svc.cluster.local:80', 'http.80').routes.map((r) => r.origin), ['default/reviews#0.0']);
});

t.test('a destination without a port keeps the server port when the service has it', async (t) => {
  // route.go GetDestinationCluster: the destination port, else the only port of the
  // service, else the listener port (the server port on a gateway).
  const out = translate(
    `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 8080, name: http-alt, protocol: HTTP}]
  endpoints: [{address: 10.0.9.1}]
---
` +
      gateway('gw', 'istio-system', http(80, '["*"]') + http(8080, '["*"]')) +
      vs('web', 'default', '["web.example.com"]', '[istio-system/gw]', toSvc('web')),
    INGRESS,
  );
  t.same(out.issues, []);
  t.same(targets(vhost(out.config, 'web.example.com:80', 'http.80').routes[0]!), [['outbound|80||web.default.svc.cluster.local', 100]]);
  t.same(targets(vhost(out.config, 'web.example.com:8080', 'http.8080').routes[0]!), [['outbound|8080||web.default.svc.cluster.local', 100]]);
});

t.test('gateway proxies see VirtualServices by exportTo from the gateway namespace', async (t) => {
  const yaml =
    BOOKINFO_SERVICES +
    gateway('gw', 'istio-system', http(80, '["*"]')) +
    vs('private', 'default', '["a.example.com"]', '[istio-system/gw]', toSvc('reviews')).replace('spec:\n', 'spec:\n  exportTo: ["."]\n') +
    vs('shared', 'default', '["b.example.com"]', '[istio-system/gw]', toSvc('reviews')).replace('spec:\n', 'spec:\n  exportTo: [istio-system]\n');
  t.same(domains(translate(yaml, INGRESS), 'http.80'), ['b.example.com']);
  t.same(domains(translate(yaml, nodeWith(INGRESS, { namespace: 'default' })), 'http.80'), ['a.example.com']);
});

t.test('TCP servers: the tcp routes of bound VirtualServices for the port, weights as written; ports speak one protocol', async (t) => {
  // Istio's TCP traffic shifting task: tcp-echo v1/v2 at 80/20 behind the gateway's port 31400.
  const out = translate(
    BOOKINFO_SERVICES +
      gateway('tcp-echo-gateway', 'default', '  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: ["*"]\n  - port: {number: 31400, name: http, protocol: HTTP}\n    hosts: ["*"]\n') +
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: ["*"]
  gateways: [tcp-echo-gateway]
  tcp:
  - match: [{port: 9999}]
    route: [{destination: {host: details}}]
  - match: [{port: 31400}]
    route:
    - {destination: {host: reviews, subset: v1, port: {number: 9080}}, weight: 80}
    - {destination: {host: reviews, subset: v2, port: {number: 9080}}, weight: 20}
---
`,
    INGRESS,
  );
  t.same(out.brief, ['warning Gateway default/tcp-echo-gateway spec.servers[1].port: port 31400 already serves TCP; this server is skipped']);
  const l = out.config.listeners.find((x) => x.port === 31400)!;
  t.same(l.tcpProxy, [
    {
      sniHosts: [],
      clusters: [
        { cluster: bk('reviews', 'v1'), weight: 80 },
        { cluster: bk('reviews', 'v2'), weight: 20 },
      ],
      origin: 'default/tcp-echo',
    },
  ]);
  t.same(l.httpFilters, [], 'no HTTP filters on a TCP listener');
});
