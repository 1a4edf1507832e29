// Envoy's Cluster and ClusterLoadAssignment read into the runtime's cluster model: back from
// what the exporter writes (losslessly, for every translated mesh), from what istiod sends,
// with Envoy's defaults for unset fields, and with an error or warning for each field Remora
// cannot honour.
import type { JsonValue } from '@bufbuild/protobuf';
import t from 'tap';
import type { Cluster } from '@remora/config';
import { envoyFromJson, envoyResourcesFromModel, envoyToJson } from '@remora/config/envoy';
import { ClusterSchema, type ClusterJson } from '@remora/config/envoy/gen/envoy/config/cluster/v3/cluster_pb.js';
import { ClusterLoadAssignmentSchema, type ClusterLoadAssignmentJson } from '@remora/config/envoy/gen/envoy/config/endpoint/v3/endpoint_pb.js';
import { ImportContext, formatImportIssue } from '../src/envoy/import-context.ts';
import { clusterFromEnvoy } from '../src/envoy/to-model-clusters.ts';
import { allMeshes } from './helpers/meshes.ts';
import { SIDECAR, translate } from './helpers/translate.ts';

/** Every cluster policy a DestinationRule can set, on services of each resolution and protocol. */
const POLICIES = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: grpc, protocol: GRPC}, {number: 5432, name: tcp, protocol: TCP}]
  endpoints:
  - {address: 10.0.0.1, locality: us-east/zone1/a, labels: {version: v1, security.istio.io/tlsMode: istio}, serviceAccount: shop}
  - {address: 10.0.0.2, locality: us-west/zone2, labels: {version: v2}, weight: 3}
  - {address: 10.0.0.3, locality: eu, labels: {version: v3, app: shop}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: default}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: https, protocol: HTTPS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: default}
spec:
  hosts: [legacy.example.com]
  location: MESH_EXTERNAL
  resolution: DNS_ROUND_ROBIN
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: shop, namespace: default}
spec:
  host: shop
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      warmupDurationSecs: 30s
      localityLbSetting:
        failover: [{from: us-east, to: eu}]
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 250ms, maxConnectionDuration: 1h, tcpKeepalive: {time: 30s}, idleTimeout: 90s}
      http: {http1MaxPendingRequests: 10, http2MaxRequests: 20, maxRequestsPerConnection: 5, maxRetries: 2, maxConcurrentStreams: 50}
    outlierDetection: {consecutive5xxErrors: 0, consecutiveGatewayErrors: 2, splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 4, interval: 2s, baseEjectionTime: 1m, maxEjectionPercent: 40, minHealthPercent: 25}
    portLevelSettings:
    - port: {number: 81}
      loadBalancer: {consistentHash: {httpCookie: {name: session, path: /, ttl: 60s}, minimumRingSize: 2048}}
      connectionPool: {http: {h2UpgradePolicy: UPGRADE, maxConcurrentStreams: 64}}
      tls: {mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://cluster.local/ns/default/sa/other], sni: shop.internal}
    - port: {number: 5432}
      tls: {mode: DISABLE}
      connectionPool: {tcp: {idleTimeout: 20s, maxConnectionDuration: 30m}, http: {maxRequestsPerConnection: 3, maxConcurrentStreams: 9}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {simple: LEAST_REQUEST, warmupDurationSecs: 10s, localityLbSetting: {distribute: [{from: us-east/*, to: {"us-east/*": 80, "us-west/*": 20}}]}}
      outlierDetection: {consecutive5xxErrors: 7}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {consistentHash: {useSourceIp: true}, localityLbSetting: {failoverPriority: [topology.kubernetes.io/region, version]}}
      outlierDetection: {consecutive5xxErrors: 1}
  - name: v3
    labels: {version: v3}
    trafficPolicy:
      loadBalancer: {consistentHash: {httpQueryParameterName: user}}
      tls: {mode: MUTUAL, clientCertificate: /certs/client.crt, privateKey: /certs/client.key, caCertificates: /certs/ca.crt, subjectAltNames: [shop.example.com]}
  - name: h
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {consistentHash: {httpHeaderName: x-user}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext, namespace: default}
spec:
  host: api.example.com
  trafficPolicy:
    tls: {mode: SIMPLE, sni: api.example.com, caCertificates: /certs/ext-ca.crt, subjectAltNames: [api.example.com]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: legacy, namespace: default}
spec:
  host: legacy.example.com
  trafficPolicy:
    tls: {mode: SIMPLE, insecureSkipVerify: true}
`;

function canonicalCluster(json: unknown): ClusterJson {
  return envoyToJson(ClusterSchema, envoyFromJson(ClusterSchema, json as JsonValue)) as ClusterJson;
}

function canonicalCla(json: unknown): ClusterLoadAssignmentJson {
  return envoyToJson(ClusterLoadAssignmentSchema, envoyFromJson(ClusterLoadAssignmentSchema, json as JsonValue)) as ClusterLoadAssignmentJson;
}

t.test('round trip: every cluster of every translated mesh reads back as it was exported', async (t) => {
  const policies = translate(POLICIES, SIDECAR);
  t.same(policies.brief.filter((b) => b.startsWith('error')), [], 'the policy mesh translates');
  const meshes = [{ name: 'policies', config: policies.config }, ...allMeshes()];
  t.ok(meshes.length > 40, `${meshes.length} meshes`);
  let clusters = 0;
  for (const { name, config } of meshes) {
    const res = envoyResourcesFromModel(config);
    const ctx = new ImportContext(res.secrets);
    config.clusters.forEach((model: Cluster, i) => {
      const cla = res.endpoints[i]!;
      const got = clusterFromEnvoy(canonicalCluster(res.clusters[i]), cla.eds ? canonicalCla(cla.assignment) : undefined, ctx, model.lb.kind === 'ring-hash' ? model.lb.key : undefined);
      t.strictSame(got, model, `${name}: ${model.name}`);
      clusters++;
    });
    t.same(ctx.issues.map(formatImportIssue), [], `${name}: no issues`);
  }
  t.comment(`${clusters} clusters`);
});
