// xDS messages in protobuf binary, as istiod sends and reads them: a DiscoveryResponse (and
// its delta form) carrying resources in `Any`, and a DiscoveryRequest with the proxy's node.
// Each is checked against Go's protobuf runtime (`buf convert`, the runtime istiod is built
// on): bytes Remora writes decode there to the same message, and bytes written there decode
// here to the same message.
import t, { type Test } from 'tap';
import { create, equals, type DescMessage, type JsonObject, type MessageShape } from '@bufbuild/protobuf';
import {
  envoyFromBinary,
  envoyFromJson,
  envoyPack,
  envoyRegistry,
  envoyToBinary,
  envoyToJson,
  envoyUnpack,
  typeUrlOf,
} from '@remora/config/envoy';
import { ClustersConfigDumpSchema, EndpointsConfigDumpSchema } from '@remora/config/envoy/gen/envoy/admin/v3/config_dump_shared_pb.js';
import { ConfigDumpSchema } from '@remora/config/envoy/gen/envoy/admin/v3/config_dump_pb.js';
import { BootstrapSchema } from '@remora/config/envoy/gen/envoy/config/bootstrap/v3/bootstrap_pb.js';
import { ClusterSchema, type Cluster } from '@remora/config/envoy/gen/envoy/config/cluster/v3/cluster_pb.js';
import { ClusterLoadAssignmentSchema, type ClusterLoadAssignment } from '@remora/config/envoy/gen/envoy/config/endpoint/v3/endpoint_pb.js';
import {
  DeltaDiscoveryResponseSchema,
  DiscoveryRequestSchema,
  DiscoveryResponseSchema,
  ResourceSchema,
} from '@remora/config/envoy/gen/envoy/service/discovery/v3/discovery_pb.js';
import { bufConvert, GOLDENS_DIR, GOLDENS_MISSING, readGolden } from './helpers/envoy.ts';

const skip = GOLDENS_DIR === null ? GOLDENS_MISSING : false;

/** Every cluster in the full config dump (static and dynamic), as istiod or the agent made them. */
function dumpedClusters(): Cluster[] {
  const dump = envoyFromJson(ConfigDumpSchema, readGolden('proxy-config/config_dump.json'));
  const section = dump.configs.find((c) => c.typeUrl === typeUrlOf(ClustersConfigDumpSchema));
  if (section === undefined) throw new Error('no clusters section in config_dump.json');
  const clusters = envoyUnpack(section, ClustersConfigDumpSchema);
  return [...clusters.staticClusters, ...clusters.dynamicActiveClusters].flatMap((c) => (c.cluster === undefined ? [] : [envoyUnpack(c.cluster, ClusterSchema)]));
}

function dumpedLoadAssignments(): ClusterLoadAssignment[] {
  const dump = envoyFromJson(ConfigDumpSchema, readGolden('proxy-config/endpoint/configdump.json'));
  const section = dump.configs[0];
  if (section === undefined) throw new Error('empty endpoints dump');
  return envoyUnpack(section, EndpointsConfigDumpSchema).dynamicEndpointConfigs.flatMap((e) =>
    e.endpointConfig === undefined ? [] : [envoyUnpack(e.endpointConfig, ClusterLoadAssignmentSchema)],
  );
}

function same<Desc extends DescMessage>(schema: Desc, a: MessageShape<Desc>, b: MessageShape<Desc>): boolean {
  return equals(schema, a, b, { registry: envoyRegistry, unpackAny: true });
}

/** Remora's bytes through Go and back: Go's JSON of them, and the message Go's bytes decode to. */
function checkAgainstGo<Desc extends DescMessage>(t: Test, schema: Desc, message: MessageShape<Desc>): void {
  const bytes = envoyToBinary(schema, message);
  const goJson = JSON.parse(bufConvert(schema.typeName, bytes, 'binpb', 'json').toString('utf8')) as JsonObject;
  t.same(goJson, envoyToJson(schema, message), 'Go reads Remora\'s bytes as the same message');
  const goBytes = bufConvert(schema.typeName, Buffer.from(JSON.stringify(envoyToJson(schema, message))), 'json', 'binpb');
  t.ok(same(schema, envoyFromBinary(schema, goBytes), message), 'Remora reads Go\'s bytes as the same message');
}

t.test('a DiscoveryResponse of Clusters in Any survives binary both ways', { skip }, async (t) => {
  const clusters = dumpedClusters();
  t.equal(clusters.length, 3);
  const response = create(DiscoveryResponseSchema, {
    versionInfo: '2023-12-26T05:57:09Z/7',
    typeUrl: typeUrlOf(ClusterSchema),
    nonce: 'c0ffee',
    resources: clusters.map((c) => envoyPack(ClusterSchema, c)),
  });
  const decoded = envoyFromBinary(DiscoveryResponseSchema, envoyToBinary(DiscoveryResponseSchema, response));
  t.ok(same(DiscoveryResponseSchema, decoded, response), 'binary round trip');
  t.equal(decoded.typeUrl, 'type.googleapis.com/envoy.config.cluster.v3.Cluster');
  t.same(
    decoded.resources.map((r) => envoyUnpack(r, ClusterSchema).name),
    clusters.map((c) => c.name),
  );
  t.ok(decoded.resources.every((r, i) => same(ClusterSchema, envoyUnpack(r, ClusterSchema), clusters[i] as Cluster)), 'each Cluster unpacks whole');
  checkAgainstGo(t, DiscoveryResponseSchema, response);
});

t.test('a DeltaDiscoveryResponse of ClusterLoadAssignments survives binary both ways', { skip }, async (t) => {
  const assignments = dumpedLoadAssignments().slice(0, 5);
  const response = create(DeltaDiscoveryResponseSchema, {
    systemVersionInfo: '7',
    typeUrl: typeUrlOf(ClusterLoadAssignmentSchema),
    nonce: 'n1',
    removedResources: ['outbound|9080||gone.default.svc.cluster.local'],
    resources: assignments.map((a) =>
      create(ResourceSchema, { name: a.clusterName, version: '7', resource: envoyPack(ClusterLoadAssignmentSchema, a) }),
    ),
  });
  const decoded = envoyFromBinary(DeltaDiscoveryResponseSchema, envoyToBinary(DeltaDiscoveryResponseSchema, response));
  t.ok(same(DeltaDiscoveryResponseSchema, decoded, response), 'binary round trip');
  t.same(decoded.resources.map((r) => r.name), assignments.map((a) => a.clusterName));
  t.same(decoded.removedResources, ['outbound|9080||gone.default.svc.cluster.local']);
  checkAgainstGo(t, DeltaDiscoveryResponseSchema, response);
});

t.test('a DiscoveryRequest with the proxy\'s node and a NACK reaches Go intact', { skip }, async (t) => {
  const bootstrap = envoyFromJson(BootstrapSchema, readGolden('bootstrap/all_golden.json'));
  const request = envoyFromJson(DiscoveryRequestSchema, {
    version_info: '6',
    response_nonce: 'c0ffee',
    type_url: typeUrlOf(ClusterSchema),
    resource_names: ['outbound|9080||reviews.default.svc.cluster.local'],
    error_detail: { code: 3, message: 'cluster outbound|9080||reviews: unknown field' },
  });
  request.node = bootstrap.node;
  const decoded = envoyFromBinary(DiscoveryRequestSchema, envoyToBinary(DiscoveryRequestSchema, request));
  t.equal(decoded.node?.id, 'sidecar~1.2.3.4~foo~bar');
  t.equal(decoded.errorDetail?.code, 3);
  t.ok(same(DiscoveryRequestSchema, decoded, request));
  checkAgainstGo(t, DiscoveryRequestSchema, request);
});
