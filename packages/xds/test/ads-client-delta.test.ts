// AdsClient over incremental ADS (DeltaAggregatedResources) against a real grpc-js control
// plane: the node once per stream, per-resource versions, nonce ACK/NACK, removed_resources,
// subscribe/unsubscribe differences, and initial_resource_versions after a reconnect.
import t, { type Test } from 'tap';
import { join } from 'node:path';
import { AdsClient, TypeUrl, type AdsClientOptions, type XdsResource, type XdsVerdict } from '@remora/xds';
import { AdsServer, cluster, deltaResponse, listener, loadAssignment, tempDir, type DeltaStream } from './ads-server.ts';

interface Update {
  readonly typeUrl: string;
  readonly resources: [string, string][];
  readonly removed: readonly string[];
  readonly version: string;
}

function consumer(verdict: (resources: readonly XdsResource[]) => XdsVerdict = () => ({ ok: true })) {
  const updates: Update[] = [];
  return {
    updates,
    onResources: (typeUrl: string, resources: readonly XdsResource[], removed: readonly string[], version: string) => {
      updates.push({ typeUrl, resources: resources.map((r) => [r.name, r.version]), removed, version });
      return verdict(resources);
    },
  };
}

const NODE = { id: 'sidecar~10.0.0.1~app-1.default~default.svc.cluster.local', cluster: 'app.default' };

async function setUp(t: Test, c: ReturnType<typeof consumer>, address = '127.0.0.1:0', extra: Partial<AdsClientOptions> = {}) {
  const server = new AdsServer(address);
  await server.start();
  t.teardown(() => server.kill());
  const ads = new AdsClient({ target: server.target, apiType: 'DELTA_GRPC', node: NODE, onResources: c.onResources, backoff: { baseMs: 20, maxMs: 100 }, ...extra });
  t.teardown(() => ads.close());
  return { server, ads };
}

const resource = (name: string, version: string, any: ReturnType<typeof cluster>) => ({ name, version, resource: any });

t.test('first requests: the node once, CDS then LDS as wildcards, no versions held yet', async (t) => {
  const { server, ads } = await setUp(t, consumer());
  ads.start();
  const stream = await server.stream(server.delta, 1);
  const [cds, lds] = [await stream.request(1), await stream.request(2)];
  t.equal(cds.typeUrl, TypeUrl.Cluster);
  t.same(cds.resourceNamesSubscribe, []);
  t.same(cds.initialResourceVersions, {});
  t.equal(cds.node?.id, NODE.id);
  t.equal(cds.node?.userAgentName, 'remora');
  t.equal(lds.typeUrl, TypeUrl.Listener);
  t.equal(lds.node, undefined, 'the node goes on the first request only');
});

t.test('ACK is the nonce; NACK adds error_detail; removed_resources removes; per-resource versions are kept', async (t) => {
  const c = consumer((resources) => (resources.some((r) => r.name === 'bad') ? { ok: false, message: 'Cluster bad: lbPolicy: MAGLEV is not supported' } : { ok: true }));
  const { server, ads } = await setUp(t, c);
  ads.start();
  const stream = await server.stream(server.delta, 1);
  await stream.request(2);
  stream.send(deltaResponse({ typeUrl: TypeUrl.Cluster, systemVersionInfo: 's1', nonce: 'n1', resources: [resource('a', 'va1', cluster('a')), resource('b', 'vb1', cluster('b'))] }));
  const ack = await stream.request(3);
  t.equal(ack.typeUrl, TypeUrl.Cluster);
  t.equal(ack.responseNonce, 'n1');
  t.equal(ack.errorDetail, undefined);
  t.same(c.updates[0], { typeUrl: TypeUrl.Cluster, resources: [['a', 'va1'], ['b', 'vb1']], removed: [], version: 's1' });

  stream.send(deltaResponse({ typeUrl: TypeUrl.Cluster, systemVersionInfo: 's2', nonce: 'n2', resources: [resource('bad', 'v1', cluster('bad'))], removedResources: ['a'] }));
  const nack = await stream.request(4);
  t.equal(nack.responseNonce, 'n2');
  t.equal(nack.errorDetail?.code, 3);
  t.equal(nack.errorDetail?.message, 'Cluster bad: lbPolicy: MAGLEV is not supported');
  t.same([...ads.resources(TypeUrl.Cluster).keys()], ['a', 'b'], 'the rejected removal did not happen either');

  stream.send(deltaResponse({ typeUrl: TypeUrl.Cluster, systemVersionInfo: 's3', nonce: 'n3', resources: [resource('b', 'vb2', cluster('b', 2))], removedResources: ['a'] }));
  await stream.request(5);
  t.same(c.updates[2], { typeUrl: TypeUrl.Cluster, resources: [['b', 'vb2']], removed: ['a'], version: 's3' });
  t.same([...ads.resources(TypeUrl.Cluster).entries()].map(([n, r]) => [n, r.version]), [['b', 'vb2']]);
  t.equal(ads.version(TypeUrl.Cluster), 's3');

  stream.send(deltaResponse({ typeUrl: TypeUrl.Cluster, systemVersionInfo: 's4', nonce: 'n4', resources: [resource('c', 'v', listener('c', 80))] }));
  t.match((await stream.request(6)).errorDetail?.message, /^Cluster c: type URL ".*Listener" in a response of/, 'a resource of the wrong type is NACKed');
  stream.send(deltaResponse({ typeUrl: TypeUrl.Cluster, systemVersionInfo: 's5', nonce: 'n5', resources: [resource('d', 'v', cluster('not-d'))] }));
  t.equal((await stream.request(7)).errorDetail?.message, 'Cluster d: the resource inside is named "not-d"');
  t.equal(ads.stats.counter('cluster_manager.cds.update_success'), 2);
  t.equal(ads.stats.counter('cluster_manager.cds.update_rejected'), 3);
});

t.test('named subscriptions send differences: resource_names_subscribe and _unsubscribe', async (t) => {
  const dir = tempDir('remora-xds-delta-');
  t.teardown(dir.remove);
  const c = consumer();
  const { server, ads } = await setUp(t, c, `unix:${join(dir.path, 'XDS')}`);
  ads.start();
  const stream = await server.stream(server.delta, 1);
  await stream.request(2);
  ads.subscribe(TypeUrl.ClusterLoadAssignment, ['outbound|80||a', 'outbound|80||b']);
  const first = await stream.request(3);
  t.equal(first.typeUrl, TypeUrl.ClusterLoadAssignment);
  t.same(first.resourceNamesSubscribe, ['outbound|80||a', 'outbound|80||b']);
  stream.send(deltaResponse({ typeUrl: TypeUrl.ClusterLoadAssignment, nonce: 'e1', resources: [resource('outbound|80||a', '1', loadAssignment('outbound|80||a', 8080))] }));
  await stream.request(4);
  ads.setSubscription(TypeUrl.ClusterLoadAssignment, ['outbound|80||b', 'outbound|80||c']);
  const diff = await stream.request(5);
  t.same(diff.resourceNamesSubscribe, ['outbound|80||c']);
  t.same(diff.resourceNamesUnsubscribe, ['outbound|80||a']);
  t.equal(diff.responseNonce, '');
  t.same([...ads.resources(TypeUrl.ClusterLoadAssignment).keys()], [], 'what was unsubscribed is let go');
  t.equal(ads.stats.counter('cluster.outbound|80||a.update_success'), 1);
});

t.test('after the server dies and returns, the client resubscribes with initial_resource_versions of what it held', async (t) => {
  const c = consumer();
  const { server, ads } = await setUp(t, c);
  ads.subscribe(TypeUrl.ClusterLoadAssignment, ['outbound|80||a']);
  ads.start();
  let stream: DeltaStream = await server.stream(server.delta, 1);
  await stream.request(3);
  t.same(stream.requests.map((r) => r.typeUrl), [TypeUrl.Cluster, TypeUrl.ClusterLoadAssignment, TypeUrl.Listener], 'ADS order: CDS, EDS, LDS');
  stream.send(deltaResponse({ typeUrl: TypeUrl.Cluster, nonce: '1', resources: [resource('outbound|80||a', 'c7', cluster('outbound|80||a'))] }));
  stream.send(deltaResponse({ typeUrl: TypeUrl.ClusterLoadAssignment, nonce: '2', resources: [resource('outbound|80||a', 'e3', loadAssignment('outbound|80||a', 8080))] }));
  await stream.request(5);

  server.kill();
  await new Promise((r) => setTimeout(r, 300));
  t.equal(ads.isConnected, false);
  t.same([...ads.resources(TypeUrl.ClusterLoadAssignment).keys()], ['outbound|80||a'], 'held through the outage');
  ads.subscribe(TypeUrl.ClusterLoadAssignment, ['outbound|80||b']);

  await server.start();
  stream = await server.stream(server.delta, 2, 3000);
  const [cds, eds, lds] = [await stream.request(1), await stream.request(2), await stream.request(3)];
  t.equal(cds.typeUrl, TypeUrl.Cluster);
  t.same(cds.initialResourceVersions, { 'outbound|80||a': 'c7' });
  t.same(cds.resourceNamesSubscribe, []);
  t.ok(cds.node);
  t.equal(eds.typeUrl, TypeUrl.ClusterLoadAssignment);
  t.same(eds.resourceNamesSubscribe, ['outbound|80||a', 'outbound|80||b'], 'the whole subscription, including what changed while down');
  t.same(eds.initialResourceVersions, { 'outbound|80||a': 'e3' });
  t.equal(lds.typeUrl, TypeUrl.Listener);
  t.same(lds.initialResourceVersions, {});
  stream.send(deltaResponse({ typeUrl: TypeUrl.ClusterLoadAssignment, nonce: '3', resources: [resource('outbound|80||b', 'e1', loadAssignment('outbound|80||b', 9090))] }));
  t.equal((await stream.request(4)).responseNonce, '3');
  t.same([...ads.resources(TypeUrl.ClusterLoadAssignment).keys()].sort(), ['outbound|80||a', 'outbound|80||b']);
  t.equal(ads.isConnected, true);
});
