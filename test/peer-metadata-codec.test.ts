// The x-envoy-peer-metadata value is protobuf binary of google.protobuf.Struct: Remora's own
// encoder and decoder checked against protobuf-es (a full protobuf implementation) both ways,
// the workload fields istio/proxy reads, and gRPC message counting across chunk boundaries.
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { StructSchema, type Struct } from '@bufbuild/protobuf/wkt';
import { fromJson } from '@bufbuild/protobuf';
import t from 'tap';
import { decodeStruct, encodeStruct, GrpcMessageCounter, localPeerMetadata, PeerMetadataCache, workloadFromStruct } from '@remora/proxy';

const sample = {
  NAME: 'reviews-v2-5d9c8f-abcde',
  NAMESPACE: 'shop',
  WORKLOAD_NAME: 'reviews-v2',
  CLUSTER_ID: 'east',
  OWNER: 'kubernetes://apis/apps/v1/namespaces/shop/deployments/reviews-v2',
  LABELS: { app: 'reviews', version: 'v2', 'service.istio.io/canonical-name': 'reviews', 'service.istio.io/canonical-revision': 'v2' },
  APP_CONTAINERS: 'reviews',
  PLATFORM_METADATA: {},
};

t.test('encodeStruct writes what protobuf-es reads, and decodeStruct reads what it writes', async (t) => {
  const ours = encodeStruct(sample);
  const read = fromBinary(StructSchema, ours);
  t.same(read.fields.NAMESPACE?.kind, { case: 'stringValue', value: 'shop' });
  const labels = read.fields.LABELS?.kind;
  t.equal(labels?.case, 'structValue');
  const theirs = toBinary(StructSchema, fromJson(StructSchema, { ...sample, extra: [1, true, null, 'x'] }) as Struct);
  const back = decodeStruct(Buffer.from(theirs));
  t.same(back, { ...sample, extra: [1, true, null, 'x'] });
});

t.test('the workload istio/proxy reads from a peer Struct', async (t) => {
  t.same(workloadFromStruct(sample), {
    name: 'reviews-v2-5d9c8f-abcde',
    namespace: 'shop',
    workloadName: 'reviews-v2',
    cluster: 'east',
    canonicalService: 'reviews',
    canonicalRevision: 'v2',
    app: 'reviews',
    version: 'v2',
  });
  // app.kubernetes.io/name and -/version come before app and version.
  t.match(workloadFromStruct({ LABELS: { app: 'a', 'app.kubernetes.io/name': 'b', version: '1', 'app.kubernetes.io/version': '2' } }), { app: 'b', version: '2' });
});

t.test("this proxy's header values: base64 of the Struct, the node id", async (t) => {
  const md = localPeerMetadata({
    kind: 'sidecar', namespace: 'web', serviceAccount: 'frontend', labels: { app: 'frontend', version: 'v1' }, workloadName: 'frontend-v1',
    clusterDomain: 'cluster.local', rootNamespace: 'istio-system', trustDomain: 'cluster.local', locality: '', podName: 'frontend-v1-abc', clusterId: 'west',
  });
  t.equal(md.id, 'sidecar~127.0.0.1~frontend-v1-abc.web~web.svc.cluster.local');
  const s = fromBinary(StructSchema, Buffer.from(md.value, 'base64'));
  t.same(Object.keys(s.fields).sort(), ['CLUSTER_ID', 'LABELS', 'NAME', 'NAMESPACE', 'OWNER', 'WORKLOAD_NAME']);
  t.same(workloadFromStruct(decodeStruct(Buffer.from(md.value, 'base64'))), {
    name: 'frontend-v1-abc', namespace: 'web', workloadName: 'frontend-v1', cluster: 'west', canonicalService: 'frontend', canonicalRevision: 'v1', app: 'frontend', version: 'v1',
  });
});

t.test('a value that does not decode leaves the peer unknown; a known value is one lookup, the same object', async (t) => {
  const cache = new PeerMetadataCache(8);
  t.equal(cache.lookup('!!!not protobuf'), null);
  t.equal(cache.lookup(Buffer.from([0x0a, 0xff]).toString('base64')), null, 'a truncated field');
  const v = encodeStruct(sample).toString('base64');
  t.equal(cache.lookup(v), cache.lookup(v));
  for (let i = 0; i < 20; i++) cache.lookup(encodeStruct({ NAME: `p${i}` }).toString('base64'));
  t.equal(cache.lookup(encodeStruct({ NAME: 'p19' }).toString('base64'))?.name, 'p19', 'bounded, the newest kept');
});

t.test('gRPC messages counted across any chunking', async (t) => {
  const frame = (n: number) => Buffer.concat([Buffer.from([0, 0, 0, 0, n]), Buffer.alloc(n, 7)]);
  const stream = Buffer.concat([frame(3), frame(0), frame(300 % 256), frame(1)]);
  for (const size of [1, 2, 5, 7, stream.length]) {
    const c = new GrpcMessageCounter();
    for (let i = 0; i < stream.length; i += size) c.feed(stream.subarray(i, i + size));
    t.equal(c.count, 4, `chunks of ${size}`);
  }
});
