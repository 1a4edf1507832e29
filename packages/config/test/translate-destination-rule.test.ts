// DestinationRules in the Istio translator: which rule applies to a service for a given
// proxy, how service-, port- and subset-level policies merge, and how each policy field
// lands in the cluster model.
//
// Reference: istio.io DestinationRule API page; pilot/pkg/model/push_context.go
// (destinationRule lookup: proxy namespace, service namespace, root namespace),
// pilot/pkg/model/destination_rule.go (merging), pilot/pkg/networking/core/
// cluster_traffic_policy.go (MergeSubsetTrafficPolicy, applyConnectionPool,
// applyOutlierDetection, applyLoadBalancer).
import t from 'tap';
import type { Cluster } from '@remora/config';
import { cluster, clusterNames, nodeWith, SIDECAR, translate } from './helpers/translate.ts';

/** `reviews` in namespace `bookinfo` with two HTTP ports and v1/v2 endpoints. */
const REVIEWS = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  - {number: 9090, name: http-admin, protocol: HTTP}
  endpoints:
  - {address: 10.0.1.1, labels: {app: reviews, version: v1}}
  - {address: 10.0.1.2, labels: {app: reviews, version: v2}}
---
`;
const H = 'reviews.bookinfo.svc.cluster.local';

let seq = 0;
/** A DestinationRule; `extraMeta` may add a creationTimestamp, which orders rules by age. */
function dr(ns: string, host: string, body: string, name = `dr-${++seq}`, extraMeta = ''): string {
  return `apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ${name}, namespace: ${ns}${extraMeta}}\nspec:\n  host: ${host}\n${body}\n---\n`;
}
const lb = (simple: string): string => `  trafficPolicy:\n    loadBalancer: {simple: ${simple}}`;
const lbOf = (c: Cluster): string => (c.lb.kind === 'ring-hash' ? `ring-hash(${c.lb.key.kind})` : c.lb.kind);

t.test('rule lookup: the proxy namespace first, then the service namespace, then the root namespace', async (t) => {
  // Istio docs (DestinationRule): "the rule ... in the client namespace ... followed by the
  // service namespace ... followed by the root config namespace".
  const inProxyNs = dr('default', H, lb('RANDOM'));
  const inServiceNs = dr('bookinfo', 'reviews', lb('ROUND_ROBIN'));
  const inRoot = dr('istio-system', '"*.svc.cluster.local"', lb('LEAST_REQUEST') + '\n    connectionPool: {tcp: {maxConnections: 7}}');
  const pick = (yaml: string, ns = 'default'): [string, number] => {
    const c = cluster(translate(REVIEWS + yaml, nodeWith(SIDECAR, { namespace: ns })).config, `outbound|9080||${H}`);
    return [lbOf(c), c.connectionPool.maxConnections];
  };
  t.same(pick(inProxyNs + inServiceNs + inRoot), ['random', 0], 'proxy namespace wins');
  t.same(pick(inServiceNs + inRoot), ['round-robin', 0], 'then the service namespace');
  t.same(pick(inRoot), ['least-request', 7], 'then the root namespace');
  t.same(pick(''), ['least-request', 0], 'no rule: defaults');
  // A proxy in another namespace does not see the `default` rule, only the service's.
  t.same(pick(inProxyNs + inServiceNs + inRoot, 'team-a'), ['round-robin', 0]);
  // Rules are never merged across namespaces: the first namespace with a match decides.
  t.same(pick(dr('default', H, '  subsets: [{name: v1, labels: {version: v1}}]') + inRoot), ['least-request', 0]);
});

t.test('rule lookup: within a namespace the most specific host wins, then the oldest rule', async (t) => {
  const lbFor = (yaml: string): string => lbOf(cluster(translate(REVIEWS + yaml).config, `outbound|9080||${H}`));
  t.equal(lbFor(dr('bookinfo', '"*.svc.cluster.local"', lb('RANDOM')) + dr('bookinfo', H, lb('ROUND_ROBIN'))), 'round-robin', 'exact beats wildcard');
  t.equal(
    lbFor(dr('bookinfo', '"*.bookinfo.svc.cluster.local"', lb('ROUND_ROBIN')) + dr('bookinfo', '"*.svc.cluster.local"', lb('RANDOM'))),
    'round-robin',
    'longer wildcard beats shorter',
  );
  t.equal(lbFor(dr('bookinfo', '"*"', lb('RANDOM'))), 'random', '"*" covers everything');
  // Same host twice: Istio keeps the first (oldest) rule's top-level trafficPolicy.
  t.equal(
    lbFor(
      dr('bookinfo', 'reviews', lb('RANDOM'), 'newer', ', creationTimestamp: "2024-02-01T00:00:00Z"') +
        dr('bookinfo', 'reviews', lb('ROUND_ROBIN'), 'older', ', creationTimestamp: "2024-01-01T00:00:00Z"'),
    ),
    'round-robin',
  );
});

t.test(
  'rules for the same host in one namespace merge their subsets',
  {
    todo:
      'Istio merges DestinationRules with the same host in one namespace (pilot/pkg/model/destination_rule.go ' +
      'mergeDestinationRule; istio.io ops/best-practices/traffic-management "split destination rules"): subsets with new ' +
      'names are appended, the first rule keeps its trafficPolicy (or takes the second one if it has none). ' +
      'Remora uses the oldest rule only, so subsets defined in a second rule get no cluster.',
  },
  async (t) => {
    const { config } = translate(
      REVIEWS +
        dr('bookinfo', 'reviews', '  subsets: [{name: v1, labels: {version: v1}}]', 'reviews-v1') +
        dr('bookinfo', 'reviews', lb('RANDOM') + '\n  subsets: [{name: v2, labels: {version: v2}}, {name: v1, labels: {version: v2}}]', 'reviews-v2'),
    );
    t.same(clusterNames(config).filter((n) => n.startsWith('outbound|9080|')), [
      `outbound|9080||${H}`,
      `outbound|9080|v1|${H}`,
      `outbound|9080|v2|${H}`,
    ]);
    t.same(cluster(config, `outbound|9080|v1|${H}`).endpoints.map((e) => e.address), ['10.0.1.1'], 'the first v1 wins');
    t.equal(lbOf(cluster(config, `outbound|9080||${H}`)), 'random', 'the first rule had no trafficPolicy');
  },
);

t.test('exportTo hides a rule from other namespaces; lookup then falls through', async (t) => {
  const yaml =
    REVIEWS +
    dr('bookinfo', 'reviews', lb('ROUND_ROBIN') + '\n  exportTo: ["."]') +
    dr('istio-system', '"*.local"', lb('RANDOM'));
  const lbFor = (ns: string): string => lbOf(cluster(translate(yaml, nodeWith(SIDECAR, { namespace: ns })).config, `outbound|9080||${H}`));
  t.equal(lbFor('bookinfo'), 'round-robin');
  t.equal(lbFor('default'), 'random');
});

t.test('workloadSelector: a rule applies only to the selected workloads of its own namespace', async (t) => {
  const yaml = REVIEWS + dr('default', H, lb('ROUND_ROBIN') + '\n  workloadSelector: {matchLabels: {app: productpage}}');
  const lbFor = (ns: string, labels: Record<string, string>): string =>
    lbOf(cluster(translate(yaml, nodeWith(SIDECAR, { namespace: ns, labels })).config, `outbound|9080||${H}`));
  t.equal(lbFor('default', { app: 'productpage', version: 'v1' }), 'round-robin');
  t.equal(lbFor('default', { app: 'ratings' }), 'least-request');
  t.equal(lbFor('other', { app: 'productpage' }), 'least-request');
});

t.test('policy merge: service → port-level (replaces, no inheritance) → subset fields → subset port-level', async (t) => {
  // DestinationRule docs, TrafficPolicy.portLevelSettings: "port level settings will override
  // the destination-level settings. Traffic settings specified at the destination-level will
  // not be inherited when overridden by port-level settings, i.e. default values will be
  // applied to fields omitted in port-level traffic policies." Subset policies override the
  // service-level ones field by field (cluster_traffic_policy.go MergeSubsetTrafficPolicy).
  const { config, issues } = translate(
    REVIEWS +
      dr(
        'bookinfo',
        'reviews',
        `  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool: {tcp: {maxConnections: 100}}
    outlierDetection: {consecutive5xxErrors: 7}
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer: {simple: RANDOM}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool: {http: {http2MaxRequests: 10}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {simple: ROUND_ROBIN}
      portLevelSettings:
      - port: {number: 9080}
        outlierDetection: {consecutiveGatewayErrors: 3}`,
      ),
  );
  t.same(issues, []);
  const view = (name: string): [string, number, number, number | null, number | null] => {
    const c = cluster(config, `${name}${H}`);
    return [
      lbOf(c),
      c.connectionPool.maxConnections,
      c.connectionPool.maxRequests,
      c.outlierDetection?.consecutive5xxErrors ?? null,
      c.outlierDetection?.consecutiveGatewayErrors ?? null,
    ];
  };
  t.same(view('outbound|9080||'), ['round-robin', 100, 0, 7, 0], 'service level');
  t.same(view('outbound|9090||'), ['random', 0, 0, null, null], 'port level replaces all four policies; omitted ones are defaults');
  t.same(view('outbound|9080|v1|'), ['round-robin', 0, 10, 7, 0], 'subset connectionPool replaces the service one as a whole');
  t.same(view('outbound|9090|v1|'), ['random', 0, 10, null, null], 'service port level, then the subset fields');
  t.same(view('outbound|9080|v2|'), ['least-request', 0, 0, 5, 3], 'subset port level replaces everything, the subset loadBalancer too');
  t.same(view('outbound|9090|v2|'), ['round-robin', 0, 0, null, null], 'subset loadBalancer over the service port level');
});

t.test('loadBalancer.simple: LEAST_REQUEST by default; ROUND_ROBIN, RANDOM; LEAST_CONN is LEAST_REQUEST', async (t) => {
  // Istio's default load balancer is LEAST_REQUEST (DestinationRule docs, LoadBalancerSettings.SimpleLB).
  const kinds: [string, string][] = [
    ['UNSPECIFIED', 'least-request'],
    ['LEAST_REQUEST', 'least-request'],
    ['LEAST_CONN', 'least-request'],
    ['ROUND_ROBIN', 'round-robin'],
    ['RANDOM', 'random'],
  ];
  for (const [simple, kind] of kinds) {
    const { config, issues } = translate(REVIEWS + dr('bookinfo', 'reviews', lb(simple)));
    t.equal(cluster(config, `outbound|9080||${H}`).lb.kind, kind, simple);
    t.same(issues, [], `${simple}: no issue`);
  }
  const pass = translate(REVIEWS + dr('bookinfo', 'reviews', lb('PASSTHROUGH'), 'passthrough'));
  t.equal(cluster(pass.config, `outbound|9080||${H}`).lb.kind, 'least-request');
  t.same(pass.brief, [
    'warning DestinationRule bookinfo/passthrough spec.trafficPolicy.loadBalancer.simple: PASSTHROUGH is not supported; using LEAST_REQUEST',
  ]);
});

t.test('loadBalancer.consistentHash: header, cookie (path, ttl), source IP, query parameter; ring size', async (t) => {
  const hash = (body: string): Cluster['lb'] =>
    cluster(translate(REVIEWS + dr('bookinfo', 'reviews', `  trafficPolicy:\n    loadBalancer:\n      consistentHash: ${body}`)).config, `outbound|9080||${H}`).lb;
  t.same(hash('{httpHeaderName: X-User}'), { kind: 'ring-hash', key: { kind: 'header', name: 'x-user' }, minimumRingSize: 1024 });
  t.same(hash('{httpCookie: {name: user, ttl: 0s}}'), { kind: 'ring-hash', key: { kind: 'cookie', name: 'user', path: '', ttlSeconds: 0 }, minimumRingSize: 1024 });
  t.same(hash('{httpCookie: {name: session, path: /app, ttl: 1h}}'), {
    kind: 'ring-hash',
    key: { kind: 'cookie', name: 'session', path: '/app', ttlSeconds: 3600 },
    minimumRingSize: 1024,
  });
  t.same(hash('{useSourceIp: true, ringHash: {minimumRingSize: 4096}}'), { kind: 'ring-hash', key: { kind: 'source-ip' }, minimumRingSize: 4096 });
  t.same(hash('{httpQueryParameterName: user, minimumRingSize: 2048}'), {
    kind: 'ring-hash',
    key: { kind: 'query-param', name: 'user' },
    minimumRingSize: 2048,
  });
});

t.test('connectionPool: every field lands in the cluster; unset fields keep Istio defaults', async (t) => {
  const pool = (body: string): Cluster['connectionPool'] =>
    cluster(translate(REVIEWS + dr('bookinfo', 'reviews', `  trafficPolicy:\n    connectionPool:\n${body}`)).config, `outbound|9080||${H}`)
      .connectionPool;
  t.same(
    pool(`      tcp: {maxConnections: 100, connectTimeout: 30ms, maxConnectionDuration: 1h, idleTimeout: 5m, tcpKeepalive: {time: 300s, interval: 75s, probes: 9}}
      http: {http1MaxPendingRequests: 1, http2MaxRequests: 1000, maxRequestsPerConnection: 10, maxRetries: 3, idleTimeout: 30s, maxConcurrentStreams: 50}`),
    {
      maxConnections: 100,
      connectTimeoutMs: 30,
      maxPendingRequests: 1,
      maxRequests: 1000,
      maxRequestsPerConnection: 10,
      maxRetries: 3,
      idleTimeoutMs: 30_000,
      maxConnectionDurationMs: 3_600_000,
      keepaliveTimeMs: 300_000,
      maxConcurrentStreams: 50,
    },
  );
  // The circuit-breaking example of istio.io (tasks/traffic-management/circuit-breaking).
  t.same(pool('      tcp: {maxConnections: 1}\n      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}'), {
    maxConnections: 1,
    connectTimeoutMs: 10_000,
    maxPendingRequests: 1,
    maxRequests: 0,
    maxRequestsPerConnection: 1,
    maxRetries: 0,
    idleTimeoutMs: 3_600_000,
    maxConnectionDurationMs: 0,
    keepaliveTimeMs: 0,
    maxConcurrentStreams: 0,
  });
});

t.test('outlierDetection: Istio/Envoy defaults for omitted fields', async (t) => {
  // DestinationRule docs, OutlierDetection: consecutive5xxErrors 5, interval 10s,
  // baseEjectionTime 30s, maxEjectionPercent 10, minHealthPercent 0 (Istio disables the
  // panic threshold); gateway errors off unless set.
  const od = (body: string): Cluster['outlierDetection'] =>
    cluster(translate(REVIEWS + dr('bookinfo', 'reviews', `  trafficPolicy:\n    outlierDetection: ${body}`)).config, `outbound|9080||${H}`)
      .outlierDetection;
  t.same(od('{consecutive5xxErrors: 1}'), {
    consecutive5xxErrors: 1,
    consecutiveGatewayErrors: 0,
    consecutiveLocalOriginFailures: 5,
    splitExternalLocalOriginErrors: false,
    intervalMs: 10_000,
    baseEjectionTimeMs: 30_000,
    maxEjectionPercent: 10,
    minHealthPercent: 0,
  });
  // The circuit-breaking task's rule.
  t.same(od('{consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 3m, maxEjectionPercent: 100}'), {
    consecutive5xxErrors: 1,
    consecutiveGatewayErrors: 0,
    consecutiveLocalOriginFailures: 5,
    splitExternalLocalOriginErrors: false,
    intervalMs: 1000,
    baseEjectionTimeMs: 180_000,
    maxEjectionPercent: 100,
    minHealthPercent: 0,
  });
  t.same(od('{consecutiveGatewayErrors: 2, splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 3, minHealthPercent: 50}'), {
    consecutive5xxErrors: 5,
    consecutiveGatewayErrors: 2,
    consecutiveLocalOriginFailures: 3,
    splitExternalLocalOriginErrors: true,
    intervalMs: 10_000,
    baseEjectionTimeMs: 30_000,
    maxEjectionPercent: 10,
    minHealthPercent: 50,
  });
});

t.test('tls: DISABLE is kept (it also turns auto mTLS off); SIMPLE, MUTUAL and ISTIO_MUTUAL carry their settings', async (t) => {
  const tls = (body: string): Cluster['tls'] =>
    cluster(translate(REVIEWS + dr('bookinfo', 'reviews', `  trafficPolicy:\n    tls: ${body}`)).config, `outbound|9080||${H}`).tls;
  t.equal(tls('{mode: DISABLE}')?.mode, 'DISABLE');
  t.same(tls('{mode: SIMPLE, sni: reviews.example.com, caCertificates: /etc/certs/ca.pem}'), {
    mode: 'SIMPLE',
    clientCertificate: null,
    privateKey: null,
    caCertificates: '/etc/certs/ca.pem',
    subjectAltNames: [],
    sni: 'reviews.example.com',
    insecureSkipVerify: false,
  });
  t.same(
    tls('{mode: MUTUAL, clientCertificate: /etc/certs/cert.pem, privateKey: /etc/certs/key.pem, caCertificates: /etc/certs/ca.pem, subjectAltNames: [spiffe://cluster.local/ns/bookinfo/sa/reviews]}'),
    {
      mode: 'MUTUAL',
      clientCertificate: '/etc/certs/cert.pem',
      privateKey: '/etc/certs/key.pem',
      caCertificates: '/etc/certs/ca.pem',
      subjectAltNames: ['spiffe://cluster.local/ns/bookinfo/sa/reviews'],
      sni: null,
      insecureSkipVerify: false,
    },
  );
  t.equal(tls('{mode: ISTIO_MUTUAL}')?.mode, 'ISTIO_MUTUAL');
});

t.test('h2UpgradePolicy UPGRADE speaks HTTP/2 to HTTP ports; DEFAULT and DO_NOT_UPGRADE keep HTTP/1.1', async (t) => {
  const upgrade = translate(REVIEWS + dr('bookinfo', 'reviews', `  trafficPolicy:\n    connectionPool:\n      http: {h2UpgradePolicy: UPGRADE}\n  subsets:\n  - name: v1\n    labels: {version: v1}\n    trafficPolicy:\n      connectionPool:\n        http: {h2UpgradePolicy: DO_NOT_UPGRADE}`));
  t.equal(cluster(upgrade.config, `outbound|9080||${H}`).protocol, 'http2');
  t.equal(cluster(upgrade.config, `outbound|9080|v1|${H}`).protocol, 'http1', 'the subset overrides it');
  const plain = translate(REVIEWS + dr('bookinfo', 'reviews', `  trafficPolicy:\n    connectionPool:\n      http: {h2UpgradePolicy: DEFAULT}`));
  t.equal(cluster(plain.config, `outbound|9080||${H}`).protocol, 'http1');
});
