// A captured sidecar's config built by hand with the model's capture fields, as istiod's
// listeners and clusters mean them: virtualOutbound and virtualInbound (useOriginalDst, a
// catch-all), per-port outbound listeners not bound to their port (HTTP, HTTP with the
// passthrough beside it, TCP on a service address, TLS by SNI, a port detected), inbound
// ports folded into virtualInbound (HTTP PERMISSIVE, TCP STRICT with Istio's TCP metadata
// exchange, detected), an outbound TCP cluster with the exchange, the passthrough
// and blackhole clusters, and the DNS name table.
import type { Cluster, Listener, ProxyConfig, TcpRoute } from '@remora/config';
import { OUTBOUND_HCM, ISTIO_ENVOY_HCM, SIDECAR } from './translate.ts';

const POOL = {
  maxConnections: 0,
  connectTimeoutMs: 10_000,
  maxPendingRequests: 0,
  maxRequests: 0,
  maxRequestsPerConnection: 0,
  maxRetries: 0,
  idleTimeoutMs: 3_600_000,
  maxConnectionDurationMs: 0,
  keepaliveTimeMs: 0,
  maxConcurrentStreams: 0,
};

function cluster(name: string, over: Partial<Cluster> = {}): Cluster {
  return {
    name,
    service: null,
    subset: '',
    discovery: 'static',
    endpoints: [],
    dnsRefreshMs: 5_000,
    protocol: 'http1',
    lb: { kind: 'round-robin' },
    connectionPool: POOL,
    outlierDetection: null,
    tls: null,
    serviceAccounts: [],
    localityLb: null,
    warmupMs: 0,
    ...over,
  };
}

const ROUTER = [{ name: 'envoy.filters.http.router', config: {} }];
const route = (cluster: string, sniHosts: string[] = [], origin = ''): TcpRoute => ({ sniHosts, clusters: [{ cluster, weight: 100 }], origin });
const PASSTHROUGH = route('PassthroughCluster');

// `undefined` in `over` removes a default (the listeners go through JSON below).
const outbound = (name: string, over: object): object => ({
  name,
  address: '0.0.0.0',
  port: 0,
  direction: 'outbound',
  routeConfig: '',
  httpFilters: ROUTER,
  tls: null,
  connectionManager: OUTBOUND_HCM,
  bindToPort: false,
  ...over,
});

const inbound = (port: number, over: object): object => ({
  name: `inbound_0.0.0.0_${port}`,
  address: '0.0.0.0',
  port,
  direction: 'inbound',
  routeConfig: `inbound|${port}||`,
  httpFilters: ROUTER,
  tls: null,
  connectionManager: ISTIO_ENVOY_HCM,
  destinationPort: port,
  bindToPort: false,
  ...over,
});

/** `registryOnly`: outboundTrafficPolicy REGISTRY_ONLY (the catch-all goes to BlackHoleCluster). */
export function captureMesh(registryOnly = false): ProxyConfig {
  const tcpOnly = { httpFilters: [], connectionManager: undefined } as const;
  const strip = (l: object): Listener => JSON.parse(JSON.stringify(l)) as Listener;
  const listeners: Listener[] = ([
    outbound('virtualOutbound', { port: 15001, ...tcpOnly, routeConfig: 'virtualOutbound', tcpProxy: [], useOriginalDst: true, catchAll: [registryOnly ? route('BlackHoleCluster') : PASSTHROUGH], bindToPort: undefined }),
    outbound('0.0.0.0_9080', { port: 9080, routeConfig: '9080' }),
    outbound('0.0.0.0_8080', { port: 8080, routeConfig: '8080', detectProtocol: { tcp: [PASSTHROUGH], timeoutMs: 0 } }),
    outbound('10.96.0.5_6379', { address: '10.96.0.5', port: 6379, ...tcpOnly, routeConfig: 'tcp.6379', tcpProxy: [route('outbound|6379||redis.default.svc.cluster.local', [], 'default/redis')] }),
    outbound('0.0.0.0_443', { port: 443, ...tcpOnly, routeConfig: 'tcp.443', tcpProxy: [route('outbound|443||api.example.com', ['api.example.com']), PASSTHROUGH] }),
    outbound('10.96.0.7_3306', { address: '10.96.0.7', port: 3306, routeConfig: 'mysql.default.svc.cluster.local:3306', detectProtocol: { tcp: [route('outbound|3306||mysql.default.svc.cluster.local')], timeoutMs: 5_000 } }),
    {
      name: 'virtualInbound',
      address: '0.0.0.0',
      port: 15006,
      direction: 'inbound',
      routeConfig: 'virtualInbound',
      httpFilters: [],
      tls: null,
      tcpProxy: [],
      useOriginalDst: true,
      catchAll: [route('InboundPassthroughCluster')],
      metadataExchange: true,
    } satisfies Listener,
    inbound(9080, { tls: { kind: 'mesh', mode: 'PERMISSIVE' } }),
    inbound(5432, { ...tcpOnly, routeConfig: 'tcp.5432', tls: { kind: 'mesh', mode: 'STRICT' }, tcpProxy: [route('inbound|5432||')], metadataExchange: true }),
    inbound(8000, { tls: { kind: 'mesh', mode: 'PERMISSIVE' }, detectProtocol: { tcp: [route('inbound|8000||')], timeoutMs: 0 } }),
  ] as object[]).map(strip);
  const clusters: Cluster[] = [
    cluster('PassthroughCluster', { discovery: 'original-dst', dnsRefreshMs: 5_000 }),
    cluster('InboundPassthroughCluster', { discovery: 'original-dst', upstreamBindAddress: '127.0.0.6' }),
    cluster('BlackHoleCluster'),
    cluster('outbound|6379||redis.default.svc.cluster.local', {
      service: { host: 'redis.default.svc.cluster.local', name: 'redis', namespace: 'default', port: 6379 },
      protocol: 'tcp',
      endpoints: [{ address: '10.0.3.1', port: 6379, labels: { 'security.istio.io/tlsMode': 'istio' }, weight: 1, locality: '', workloadName: 'redis', namespace: 'default', serviceAccount: '' }],
      metadataExchange: true,
    }),
    cluster('inbound|5432||', { protocol: 'tcp', endpoints: [{ address: '127.0.0.1', port: 5432, labels: {}, weight: 1, locality: '', workloadName: '', namespace: '', serviceAccount: '' }] }),
  ];
  return {
    version: 'capture',
    node: SIDECAR,
    listeners,
    routeConfigs: [],
    clusters,
    nameTable: [
      { host: 'reviews.default.svc.cluster.local', addresses: ['10.96.0.9'], shortName: 'reviews', namespace: 'default' },
      { host: 'api.example.com', addresses: ['240.240.0.1', '240.240.0.2'], shortName: '', namespace: '' },
    ],
  };
}
