// The resilience side of DestinationRule translation: when locality load balancing is on and
// what it carries, slow start windows, circuit-breaker (connectionPool) fields, and the
// outlierDetection defaults, each against Istio's own rules.
//
// Reference: istio.io DestinationRule (LocalityLoadBalancerSetting, LoadBalancerSettings.
// warmupDurationSecs / warmup, ConnectionPoolSettings, OutlierDetection); Istio pilot/pkg/
// networking/core/cluster_traffic_policy.go (applyOutlierDetection: fields passed on only when
// set, MaxEjectionPercent and ConsecutiveLocalOriginFailures only when > 0, panic threshold =
// minHealthPercent; applyRoundRobinLoadBalancer / applyLeastRequestLoadBalancer: the only ones
// given a SlowStartConfig, `warmup` before the deprecated `warmupDurationSecs`;
// applyLocalityLoadBalancer: failover only with outlier detection) and
// pilot/pkg/networking/core/loadbalancer/loadbalancer.go (GetLocalityLbSetting: `enabled: false`).
import t from 'tap';
import type { Cluster } from '@remora/config';
import { cluster, translate } from './helpers/translate.ts';

const SE = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.0.1, locality: us-east/zone1/a, labels: {version: v1}}
  - {address: 10.0.0.2, locality: us-west/zone2/b, labels: {version: v2}, weight: 3}
---
`;
const HOST = 'shop.default.svc.cluster.local';
const SERVICE = `outbound|80||${HOST}`;
const V1 = `outbound|80|v1|${HOST}`;

const dr = (body: string): string =>
  `apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: shop, namespace: default}\nspec:\n  host: shop\n${body}\n`;
const policy = (trafficPolicy: string): string => dr(`  trafficPolicy:\n${trafficPolicy}`);

function clusterOf(yaml: string, name = SERVICE): Cluster {
  const { config, brief } = translate(SE + yaml);
  const errors = brief.filter((b) => b.startsWith('error'));
  if (errors.length > 0) throw new Error(errors.join('\n'));
  return cluster(config, name);
}

const OD = '    outlierDetection: {consecutive5xxErrors: 3}\n';

t.test('endpoints carry their locality and weight into the cluster', async (t) => {
  const c = clusterOf('');
  t.same(
    c.endpoints.map((e) => [e.address, e.locality, e.weight]),
    [
      ['10.0.0.1', 'us-east/zone1/a', 1],
      ['10.0.0.2', 'us-west/zone2/b', 3],
    ],
  );
});

t.test('locality load balancing is on only where outlier detection is, unless enabled: false', async (t) => {
  t.equal(clusterOf('').localityLb, null, 'no DestinationRule');
  t.equal(clusterOf(policy('    loadBalancer: {simple: ROUND_ROBIN}')).localityLb, null, 'a rule without outlierDetection');
  t.same(clusterOf(policy(OD)).localityLb, { distribute: [], failover: [], failoverPriority: [] }, 'outlierDetection alone: on, with the default (proximity) failover');
  t.equal(clusterOf(policy(OD + '    loadBalancer:\n      localityLbSetting: {enabled: false}')).localityLb, null, 'enabled: false turns it off');
  t.equal(
    clusterOf(policy(OD + '    loadBalancer:\n      localityLbSetting: {enabled: false, failover: [{from: us-east, to: us-west}]}')).localityLb,
    null,
    'enabled: false wins over settings',
  );
  t.same(
    clusterOf(policy(OD + '    loadBalancer:\n      localityLbSetting: {enabled: true}')).localityLb,
    { distribute: [], failover: [], failoverPriority: [] },
  );
  // Subsets merge field by field: a subset's own outlierDetection turns it on for that subset only,
  // with the service-level localityLbSetting it inherits.
  const subsetOnly = dr(`  trafficPolicy:
    loadBalancer:
      localityLbSetting: {failover: [{from: us-east, to: us-west}]}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
${OD.replace('    ', '      ')}`);
  t.equal(clusterOf(subsetOnly).localityLb, null, 'the service cluster has no outlier detection');
  t.same(clusterOf(subsetOnly, V1).localityLb, { distribute: [], failover: [{ from: 'us-east', to: 'us-west' }], failoverPriority: [] });
});

t.test('distribute, failover and failoverPriority are carried as written', async (t) => {
  const lbs = (setting: string): Cluster['localityLb'] => clusterOf(policy(OD + `    loadBalancer:\n      localityLbSetting:\n${setting}`)).localityLb;
  t.same(
    lbs(`        distribute:
        - from: us-west/zone1/*
          to: {"us-west/zone1/*": 80, "us-west/zone2/*": 20}
        - from: us-east/*
          to: {"us-east/*": 100}`),
    {
      distribute: [
        { from: 'us-west/zone1/*', to: { 'us-west/zone1/*': 80, 'us-west/zone2/*': 20 } },
        { from: 'us-east/*', to: { 'us-east/*': 100 } },
      ],
      failover: [],
      failoverPriority: [],
    },
  );
  t.same(lbs('        failover: [{from: us-east, to: eu-west}, {from: eu-west, to: us-east}]'), {
    distribute: [],
    failover: [
      { from: 'us-east', to: 'eu-west' },
      { from: 'eu-west', to: 'us-east' },
    ],
    failoverPriority: [],
  });
  t.same(lbs('        failoverPriority: [topology.istio.io/network, topology.kubernetes.io/region, version]'), {
    distribute: [],
    failover: [],
    failoverPriority: ['topology.istio.io/network', 'topology.kubernetes.io/region', 'version'],
  });
  t.same(lbs('        failover: [{from: us-east, to: eu-west}]\n        failoverPriority: [version]'), {
    distribute: [],
    failover: [{ from: 'us-east', to: 'eu-west' }],
    failoverPriority: ['version'],
  });
});

t.test('slow start: warmupDurationSecs and warmup.duration, for ROUND_ROBIN and LEAST_REQUEST only', async (t) => {
  const warm = (lb: string, name = SERVICE): number => clusterOf(policy(`    loadBalancer: ${lb}`), name).warmupMs;
  t.equal(clusterOf('').warmupMs, 0, 'no rule: off');
  t.equal(warm('{simple: ROUND_ROBIN}'), 0, 'not set: off');
  t.equal(warm('{simple: ROUND_ROBIN, warmupDurationSecs: 3s}'), 3_000);
  t.equal(warm('{simple: LEAST_REQUEST, warmupDurationSecs: 1m}'), 60_000);
  t.equal(warm('{warmupDurationSecs: 90s}'), 90_000, 'the default balancer is LEAST_REQUEST: it ramps too');
  t.equal(warm('{simple: ROUND_ROBIN, warmup: {duration: 10s}}'), 10_000);
  t.equal(warm('{simple: ROUND_ROBIN, warmup: {duration: 10s, minimumPercent: 20, aggression: 2}}'), 10_000);
  t.equal(warm('{simple: ROUND_ROBIN, warmupDurationSecs: 3s, warmup: {duration: 10s}}'), 10_000, '`warmup` takes precedence');
  t.equal(warm('{simple: RANDOM, warmupDurationSecs: 3s}'), 0, 'RANDOM has no slow start');
  t.equal(warm('{consistentHash: {httpHeaderName: x-user}, warmupDurationSecs: 3s}'), 0, 'a consistent hash has no slow start');
  // A subset's loadBalancer replaces the service's whole, warmup included.
  const subset = dr(`  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 5s}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {simple: ROUND_ROBIN}
  - name: v2
    labels: {version: v2}`);
  t.equal(clusterOf(subset).warmupMs, 5_000);
  t.equal(clusterOf(subset, V1).warmupMs, 0, 'v1 has its own loadBalancer without warmup');
  t.equal(clusterOf(subset, `outbound|80|v2|${HOST}`).warmupMs, 5_000, 'v2 inherits it');
});

t.test('connectionPool: every circuit-breaker field lands in the cluster', async (t) => {
  const pool = (cp: string): Cluster['connectionPool'] => clusterOf(policy(`    connectionPool:\n${cp}`)).connectionPool;
  const p = pool(`      tcp: {maxConnections: 7, connectTimeout: 250ms, idleTimeout: 2m}
      http: {http1MaxPendingRequests: 3, http2MaxRequests: 40, maxRetries: 2, maxRequestsPerConnection: 5}`);
  t.same(
    [p.maxConnections, p.maxPendingRequests, p.maxRequests, p.maxRetries, p.maxRequestsPerConnection, p.connectTimeoutMs, p.idleTimeoutMs],
    [7, 3, 40, 2, 5, 250, 120_000],
    'the tcp idleTimeout applies when http sets none',
  );
  const h = pool(`      tcp: {idleTimeout: 2m}
      http: {idleTimeout: 15s}`);
  t.equal(h.idleTimeoutMs, 15_000, 'http.idleTimeout wins over tcp.idleTimeout');
  // Unset limits are unlimited (Istio sets Envoy's thresholds to 2^32-1); timeouts keep Istio's defaults.
  const d = pool('      tcp: {maxConnections: 1}');
  t.same(
    [d.maxConnections, d.maxPendingRequests, d.maxRequests, d.maxRetries, d.maxRequestsPerConnection, d.connectTimeoutMs, d.idleTimeoutMs],
    [1, 0, 0, 0, 0, 10_000, 3_600_000],
    'connectTimeout 10s, idleTimeout 1h',
  );
  // A subset's connectionPool replaces the service's whole (no field-level merge inside it).
  const subset = clusterOf(
    dr(`  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 9}, http: {http1MaxPendingRequests: 4}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool: {http: {http2MaxRequests: 11}}`),
    V1,
  ).connectionPool;
  t.same([subset.maxConnections, subset.maxPendingRequests, subset.maxRequests], [0, 0, 11]);
});

t.test("outlierDetection: Istio's defaults for every omitted field", async (t) => {
  // istio.io OutlierDetection: consecutive5xxErrors 5; consecutiveGatewayErrors off unless set;
  // consecutiveLocalOriginFailures 5 (used only when split); interval 10s; baseEjectionTime
  // 30s; maxEjectionPercent 10; minHealthPercent 0 (Istio disables Envoy's 50% panic threshold).
  const od = (body: string): Cluster['outlierDetection'] => clusterOf(policy(`    outlierDetection: ${body}`)).outlierDetection;
  const DEFAULTS = {
    consecutive5xxErrors: 5,
    consecutiveGatewayErrors: 0,
    consecutiveLocalOriginFailures: 5,
    splitExternalLocalOriginErrors: false,
    intervalMs: 10_000,
    baseEjectionTimeMs: 30_000,
    maxEjectionPercent: 10,
    minHealthPercent: 0,
  };
  t.same(od('{}'), DEFAULTS, 'an empty outlierDetection turns it on with every default');
  t.equal(clusterOf('').outlierDetection, null, 'no rule: no outlier detection');
  t.same(od('{consecutive5xxErrors: 0, consecutiveGatewayErrors: 2}'), { ...DEFAULTS, consecutive5xxErrors: 0, consecutiveGatewayErrors: 2 }, '0 turns 5xx ejection off');
  t.same(od('{consecutiveErrors: 4}'), { ...DEFAULTS, consecutiveGatewayErrors: 4 }, 'the deprecated consecutiveErrors is consecutiveGatewayErrors');
  t.same(
    od('{splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 2, interval: 1s, baseEjectionTime: 3m, maxEjectionPercent: 100, minHealthPercent: 40}'),
    {
      ...DEFAULTS,
      splitExternalLocalOriginErrors: true,
      consecutiveLocalOriginFailures: 2,
      intervalMs: 1_000,
      baseEjectionTimeMs: 180_000,
      maxEjectionPercent: 100,
      minHealthPercent: 40,
    },
  );
  // Istio passes maxEjectionPercent and consecutiveLocalOriginFailures on only when > 0: a 0
  // leaves Envoy's default rather than turning ejection off.
  t.same(od('{maxEjectionPercent: 0, splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 0}'), {
    ...DEFAULTS,
    splitExternalLocalOriginErrors: true,
  });
});
