// A sidecar's outbound side routes through istiod's per-port tables: picking the table by the
// authority's port, then the virtual host in it, must answer exactly as one table holding
// every port's virtual hosts did.
import t from 'tap';
import { parseResources, translateIstio, type ProxyConfig, type RouteConfiguration, type VirtualHost } from '@remora/config';
import { plainRouteContext, RouteTable, RouteTableByPort } from '@remora/proxy';

const MESH = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.default.svc.cluster.local]
  addresses: [10.0.0.7]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: http-alt, protocol: HTTP}
  - {number: 80, name: http, protocol: HTTP}
  endpoints: [{address: 10.0.9.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9000, name: grpc, protocol: GRPC}
  - {number: 9001, name: http, protocol: HTTP}
  endpoints: [{address: 10.0.9.2}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: other}
spec:
  hosts: [reviews.other.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.9.3}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: alias, namespace: default}
spec:
  hosts: [bookinfo.example.com, "*.corp.example.com"]
  http: [{route: [{destination: {host: web.default.svc.cluster.local, port: {number: 80}}}]}]
`;

const NODE = {
  kind: 'sidecar',
  namespace: 'default',
  serviceAccount: 'sleep',
  labels: { app: 'sleep' },
  workloadName: 'sleep',
  clusterDomain: 'cluster.local',
  rootNamespace: 'istio-system',
  trustDomain: 'cluster.local',
  locality: '',
} as const;
const PORTS = { bindAddress: '0.0.0.0', outboundPort: 15001, inboundPort: 15006, appPort: null, appAddress: '127.0.0.1' };

function translated(): ProxyConfig {
  const { resources, issues } = parseResources(MESH, 'mesh.yaml');
  if (issues.length > 0) throw new Error(issues.map((i) => i.message).join('; '));
  return translateIstio(resources, NODE, PORTS).config;
}

t.test('the table is picked by port; every authority lands where one merged table put it', async (t) => {
  const config = translated();
  const ctx = plainRouteContext(new Map());
  const listener = config.listeners.find((l) => l.name === 'virtualOutbound')!;
  const byPortNames = listener.routeConfigsByPort ?? {};
  t.same(Object.keys(byPortNames).sort(), ['80', '8080', '9000', '9001', '9080'], "istiod's per-port tables");
  const tables = new Map(config.routeConfigs.map((rc) => [rc.name, new RouteTable(rc, ctx)]));
  const byPort = new RouteTableByPort(
    Object.entries(byPortNames).map(([port, name]) => ({ port: Number(port), config: config.routeConfigs.find((r) => r.name === name)!, table: tables.get(name)! })),
    tables.get(listener.routeConfig)!,
  );
  // What the single outbound table was: every port's virtual hosts once, services in registry order, then the others.
  const seen = new Set<string>();
  const services: VirtualHost[] = [];
  const others: VirtualHost[] = [];
  for (const rc of config.routeConfigs) {
    for (const v of rc.virtualHosts) {
      if (seen.has(v.name)) continue;
      seen.add(v.name);
      (v.name.includes('.svc.cluster.local:') ? services : others).push(v);
    }
  }
  const merged = new RouteTable({ name: 'merged', virtualHosts: [...services, ...others], ignorePortInHostMatching: false } satisfies RouteConfiguration, ctx);

  const expectations: [string, string | null][] = [
    ['web', 'web.default.svc.cluster.local:80'],
    ['web:80', 'web.default.svc.cluster.local:80'],
    ['web:8080', 'web.default.svc.cluster.local:8080'],
    ['web.default.svc.cluster.local:8080', 'web.default.svc.cluster.local:8080'],
    ['10.0.0.7', 'web.default.svc.cluster.local:80'],
    ['10.0.0.7:8080', 'web.default.svc.cluster.local:8080'],
    ['api', 'api.default.svc.cluster.local:9000'],
    ['api:9001', 'api.default.svc.cluster.local:9001'],
    ['api.default:9000', 'api.default.svc.cluster.local:9000'],
    ['reviews.other', 'reviews.other.svc.cluster.local:9080'],
    ['reviews.other:9080', 'reviews.other.svc.cluster.local:9080'],
    ['bookinfo.example.com', 'bookinfo.example.com'],
    ['bookinfo.example.com:9001', 'bookinfo.example.com'],
    ['bookinfo.example.com:12345', 'bookinfo.example.com'],
    ['a.corp.example.com:8080', '*.corp.example.com'],
    ['a.corp.example.com', '*.corp.example.com'],
    // No service answers: istiod's allow_any (outboundTrafficPolicy ALLOW_ANY, Istio's default).
    ['web:12345', 'allow_any'],
    ['api:9080', 'allow_any'],
    ['api:', 'allow_any'],
    ['api:x', 'allow_any'],
    ['nothing.example.org', 'allow_any'],
    ['[::1]:9080', 'allow_any'],
  ];
  for (const [authority, want] of expectations) {
    t.equal(byPort.find(authority)?.name ?? null, want, authority);
    t.equal(byPort.find(authority)?.name ?? null, merged.find(authority)?.name ?? null, `${authority}: as the merged table`);
  }
});

t.test('without a table for a port, the fallback table answers', async (t) => {
  const ctx = plainRouteContext(new Map());
  const vh = (name: string, domains: string[]): VirtualHost => ({ name, domains, routes: [], requireTls: false });
  const rc = (name: string, ...v: VirtualHost[]): RouteConfiguration => ({ name, virtualHosts: v, ignorePortInHostMatching: false });
  const a = rc('80', vh('a:80', ['a', 'a:80']), vh('any', ['*']));
  const b = rc('9080', vh('b:9080', ['b', 'b:9080']), vh('any', ['*']));
  const ta = new RouteTable(a, ctx);
  const tb = new RouteTable(b, ctx);
  const byPort = new RouteTableByPort([{ port: 80, config: a, table: ta }, { port: 9080, config: b, table: tb }], ta);
  t.equal(byPort.find('b')?.name, 'b:9080', 'a bare name goes to the table that answers it');
  t.equal(byPort.find('b:80')?.name, 'any', 'the port picks the table: b has no virtual host on 80');
  t.equal(byPort.find('a:9080')?.name, 'any');
  t.equal(byPort.find('zzz:7')?.name, 'any', 'unlisted port: the fallback');
  t.equal(new RouteTableByPort([], null).find('a'), null, 'no table at all: no virtual host (404 NR)');
});
