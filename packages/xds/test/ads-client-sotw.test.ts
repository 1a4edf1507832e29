// AdsClient over state-of-the-world ADS (StreamAggregatedResources) against a real grpc-js
// control plane: the node on the first request, Envoy's ADS order, ACK/NACK version and
// nonce, error_detail, LDS/CDS removal semantics against RDS's, subscriptions made from
// onResources, Unix sockets, TLS, and reconnecting after the server dies.
import t, { type Test } from 'tap';
import { join } from 'node:path';
import { AdsClient, TypeUrl, type AdsClientOptions, type XdsResource, type XdsVerdict } from '@remora/xds';
import { AdsServer, cluster, listener, loadAssignment, makeCertificates, read, routeConfig, sotwResponse, tempDir, type SotwStream } from './ads-server.ts';

interface Update {
  readonly typeUrl: string;
  readonly names: string[];
  readonly removed: readonly string[];
  readonly version: string;
}

/** A consumer that records what it was given and answers with `verdict`. */
function consumer(verdict: (typeUrl: string, resources: readonly XdsResource[]) => XdsVerdict = () => ({ ok: true })) {
  const updates: Update[] = [];
  return {
    updates,
    onResources: (typeUrl: string, resources: readonly XdsResource[], removed: readonly string[], version: string) => {
      updates.push({ typeUrl, names: resources.map((r) => r.name), removed, version });
      return verdict(typeUrl, resources);
    },
  };
}

const NODE = { id: 'sidecar~10.0.0.1~app-1.default~default.svc.cluster.local', cluster: 'app.default', metadata: { NAMESPACE: 'default', ISTIO_VERSION: '1.24.0' }, locality: { region: 'eu', zone: 'eu-1' } };

function client(server: AdsServer, c: ReturnType<typeof consumer>, extra: Partial<AdsClientOptions> = {}): AdsClient {
  const ads = new AdsClient({ target: server.target, apiType: 'GRPC', node: NODE, onResources: c.onResources, backoff: { baseMs: 20, maxMs: 100 }, ...extra });
  t.teardown(() => ads.close());
  return ads;
}

async function started(t: Test, address = '127.0.0.1:0'): Promise<AdsServer> {
  const server = new AdsServer(address);
  await server.start();
  t.teardown(() => server.kill());
  return server;
}

t.test('the first request carries the node with Remora as user agent; CDS goes before LDS, both wildcard', async (t) => {
  const server = await started(t);
  const ads = client(server, consumer());
  ads.start();
  const stream = await server.stream(server.sotw, 1);
  const first = await stream.request(1);
  const second = await stream.request(2);
  t.equal(first.typeUrl, TypeUrl.Cluster);
  t.same(first.resourceNames, [], 'wildcard: no names');
  t.equal(first.versionInfo, '');
  t.equal(first.responseNonce, '');
  t.equal(first.node?.id, NODE.id);
  t.equal(first.node?.cluster, NODE.cluster);
  t.same(first.node?.metadata, NODE.metadata);
  t.equal(first.node?.locality?.zone, 'eu-1');
  t.equal(first.node?.userAgentName, 'remora');
  t.equal(first.node?.userAgentVersionType.case, 'userAgentVersion');
  t.match(first.node?.userAgentVersionType.value, /^\d+\.\d+\.\d+/);
  t.equal(second.typeUrl, TypeUrl.Listener);
  t.equal(second.node?.id, NODE.id, 'without set_node_on_first_message_only every request carries the node');
});

t.test('set_node_on_first_message_only: only the stream\'s first request carries the node', async (t) => {
  const server = await started(t);
  const ads = client(server, consumer(), { setNodeOnFirstMessageOnly: true });
  ads.start();
  const stream = await server.stream(server.sotw, 1);
  t.ok((await stream.request(1)).node);
  t.equal((await stream.request(2)).node, undefined);
});

t.test('ACK repeats version and nonce; NACK keeps the previous version, the nonce and an INVALID_ARGUMENT error_detail', async (t) => {
  const server = await started(t);
  const c = consumer((typeUrl, resources) =>
    resources.some((r) => r.name === 'bad') ? { ok: false, message: 'Cluster bad: connectTimeout: must be positive' } : { ok: true },
  );
  const ads = client(server, c);
  ads.start();
  const stream = await server.stream(server.sotw, 1);
  await stream.request(2);
  stream.send(sotwResponse({ typeUrl: TypeUrl.Cluster, versionInfo: 'v1', nonce: 'n1', resources: [cluster('a'), cluster('b')] }));
  const ack = await stream.request(3);
  t.equal(ack.typeUrl, TypeUrl.Cluster);
  t.equal(ack.versionInfo, 'v1');
  t.equal(ack.responseNonce, 'n1');
  t.equal(ack.errorDetail, undefined);
  t.same([...ads.resources(TypeUrl.Cluster).keys()], ['a', 'b']);

  stream.send(sotwResponse({ typeUrl: TypeUrl.Cluster, versionInfo: 'v2', nonce: 'n2', resources: [cluster('a'), cluster('bad')] }));
  const nack = await stream.request(4);
  t.equal(nack.versionInfo, 'v1', 'the version still applied');
  t.equal(nack.responseNonce, 'n2');
  t.equal(nack.errorDetail?.code, 3);
  t.equal(nack.errorDetail?.message, 'Cluster bad: connectTimeout: must be positive');
  t.same([...ads.resources(TypeUrl.Cluster).keys()], ['a', 'b'], 'a rejected update changes nothing held');
  t.equal(ads.version(TypeUrl.Cluster), 'v1');
  t.equal(ads.stats.counter('cluster_manager.cds.update_success'), 1);
  t.equal(ads.stats.counter('cluster_manager.cds.update_rejected'), 1);
  t.equal(ads.stats.textReadouts.get('cluster_manager.cds.version_text'), 'v1');
  t.equal(ads.stats.gauges.get('control_plane.connected_state'), 1);
});

t.test('a resource that does not decode is NACKed without reaching the consumer', async (t) => {
  const server = await started(t);
  const c = consumer();
  const ads = client(server, c);
  ads.start();
  const stream = await server.stream(server.sotw, 1);
  await stream.request(2);
  const broken = { ...cluster('x'), value: new Uint8Array([0xff, 0xff, 0xff]) };
  stream.send(sotwResponse({ typeUrl: TypeUrl.Cluster, versionInfo: 'v1', nonce: 'n1', resources: [broken] }));
  const nack = await stream.request(3);
  t.equal(nack.errorDetail?.code, 3);
  t.match(nack.errorDetail?.message, /^Cluster resources\[0\]: cannot decode: /, 'a bare Any is named by its position');
  stream.send(sotwResponse({ typeUrl: TypeUrl.Cluster, versionInfo: 'v2', nonce: 'n2', resources: [listener('l', 80)] }));
  t.match((await stream.request(4)).errorDetail?.message, /^Cluster l \(resources\[0\]\): type URL "type.googleapis.com\/envoy.config.listener.v3.Listener" in a response of/, 'one of another type by its own name and position');
  stream.send(sotwResponse({ typeUrl: TypeUrl.Cluster, versionInfo: 'v3', nonce: 'n3', resources: [cluster('d'), cluster('d')] }));
  t.equal((await stream.request(5)).errorDetail?.message, 'Cluster d: duplicate name in one response');
  t.same(c.updates, [], 'the consumer saw none of them');
  t.equal(ads.stats.counter('cluster_manager.cds.update_rejected'), 3);
});

t.test('LDS is the whole set (absent = removed); RDS responses are partial (absent = kept)', async (t) => {
  const server = await started(t);
  const c = consumer();
  const ads = client(server, c);
  ads.start();
  const stream = await server.stream(server.sotw, 1);
  await stream.request(2);
  stream.send(sotwResponse({ typeUrl: TypeUrl.Listener, versionInfo: 'l1', nonce: 'a', resources: [listener('0.0.0.0_80', 80), listener('0.0.0.0_9080', 9080)] }));
  await stream.request(3);
  stream.send(sotwResponse({ typeUrl: TypeUrl.Listener, versionInfo: 'l2', nonce: 'b', resources: [listener('0.0.0.0_80', 80)] }));
  await stream.request(4);
  t.same(c.updates[1], { typeUrl: TypeUrl.Listener, names: ['0.0.0.0_80'], removed: ['0.0.0.0_9080'], version: 'l2' });
  t.same([...ads.resources(TypeUrl.Listener).keys()], ['0.0.0.0_80']);
  t.equal(ads.stats.counter('listener_manager.lds.update_success'), 2);

  ads.subscribe(TypeUrl.RouteConfiguration, ['80', '9080']);
  const rdsRequest = await stream.request(5);
  t.equal(rdsRequest.typeUrl, TypeUrl.RouteConfiguration);
  t.same(rdsRequest.resourceNames, ['80', '9080']);
  stream.send(sotwResponse({ typeUrl: TypeUrl.RouteConfiguration, versionInfo: 'r1', nonce: 'c', resources: [routeConfig('80'), routeConfig('9080')] }));
  await stream.request(6);
  stream.send(sotwResponse({ typeUrl: TypeUrl.RouteConfiguration, versionInfo: 'r2', nonce: 'd', resources: [routeConfig('80'), routeConfig('not-asked')] }));
  const ack = await stream.request(7);
  t.equal(ack.versionInfo, 'r2');
  t.same(c.updates[3], { typeUrl: TypeUrl.RouteConfiguration, names: ['80'], removed: [], version: 'r2' }, 'names not asked for are left out');
  t.same([...ads.resources(TypeUrl.RouteConfiguration).keys()].sort(), ['80', '9080'], 'RDS keeps what a response leaves out');

  ads.unsubscribe(TypeUrl.RouteConfiguration, ['9080']);
  const narrowed = await stream.request(8);
  t.same(narrowed.resourceNames, ['80']);
  t.equal(narrowed.versionInfo, 'r2');
  t.equal(narrowed.responseNonce, 'd');
  t.same([...ads.resources(TypeUrl.RouteConfiguration).keys()], ['80']);
});

t.test('endpoints the consumer subscribes to while taking clusters are asked for right after the CDS ACK', async (t) => {
  const server = await started(t);
  let ads: AdsClient | null = null;
  const c = consumer((typeUrl, resources) => {
    if (typeUrl === TypeUrl.Cluster) ads!.setSubscription(TypeUrl.ClusterLoadAssignment, resources.map((r) => r.name));
    return { ok: true };
  });
  ads = client(server, c);
  ads.start();
  const stream = await server.stream(server.sotw, 1);
  await stream.request(2);
  stream.send(sotwResponse({ typeUrl: TypeUrl.Cluster, versionInfo: 'c1', nonce: 'x', resources: [cluster('outbound|80||a'), cluster('outbound|80||b')] }));
  const ack = await stream.request(3);
  const eds = await stream.request(4);
  t.equal(ack.typeUrl, TypeUrl.Cluster);
  t.equal(ack.responseNonce, 'x');
  t.equal(eds.typeUrl, TypeUrl.ClusterLoadAssignment);
  t.same(eds.resourceNames, ['outbound|80||a', 'outbound|80||b']);
  stream.send(sotwResponse({ typeUrl: TypeUrl.ClusterLoadAssignment, versionInfo: 'e1', nonce: 'y', resources: [loadAssignment('outbound|80||a', 8080)] }));
  await stream.request(5);
  t.equal(ads.stats.counter('cluster.outbound|80||a.update_success'), 1, 'EDS stats per cluster');
});

t.test('an async consumer is asked one response at a time, in order', async (t) => {
  const server = await started(t);
  const order: string[] = [];
  let inFlight = 0;
  const ads = client(server, consumer(), {
    onResources: async (_typeUrl, _resources, _removed, version) => {
      inFlight++;
      t.equal(inFlight, 1, 'never two at once');
      order.push(version);
      await new Promise((r) => setTimeout(r, 20));
      inFlight--;
      return { ok: true };
    },
  });
  ads.start();
  const stream = await server.stream(server.sotw, 1);
  await stream.request(2);
  for (const v of ['1', '2', '3']) stream.send(sotwResponse({ typeUrl: TypeUrl.Cluster, versionInfo: v, nonce: v, resources: [cluster(`c${v}`)] }));
  await stream.request(5);
  t.same(order, ['1', '2', '3']);
  t.same(stream.requests.slice(2).map((r) => r.responseNonce), ['1', '2', '3']);
});

t.test('over a Unix socket', async (t) => {
  const dir = tempDir('remora-xds-');
  t.teardown(dir.remove);
  const server = await started(t, `unix:${join(dir.path, 'XDS')}`);
  const c = consumer();
  const ads = client(server, c);
  ads.start();
  const stream = await server.stream(server.sotw, 1);
  await stream.request(2);
  stream.send(sotwResponse({ typeUrl: TypeUrl.Cluster, versionInfo: 'u1', nonce: 'u', resources: [cluster('a')] }));
  t.equal((await stream.request(3)).versionInfo, 'u1');
  t.same(c.updates.map((u) => u.names), [['a']]);
});

t.test('over mutual TLS, verifying the server as the configured name', async (t) => {
  const dir = tempDir('remora-xds-tls-');
  t.teardown(dir.remove);
  const pki = makeCertificates(dir.path);
  const server = new AdsServer('127.0.0.1:0', { ca: read(pki.ca), cert: read(pki.serverCert), key: read(pki.serverKey), requireClientCert: true });
  await server.start();
  t.teardown(() => server.kill());
  const ads = client(server, consumer(), {
    transport: { kind: 'tls', ca: { filename: pki.ca }, cert: { filename: pki.clientCert }, key: { filename: pki.clientKey }, serverName: 'xds.test' },
  });
  ads.start();
  const stream = await server.stream(server.sotw, 1);
  t.equal((await stream.request(1)).node?.id, NODE.id);

  // Without the client certificate the server refuses; the client keeps trying and never throws.
  const refused = client(server, consumer(), { transport: { kind: 'tls', ca: { filename: pki.ca }, serverName: 'xds.test' } });
  refused.start();
  await new Promise((r) => setTimeout(r, 300));
  t.equal(server.sotw.length, 1, 'no stream without a client certificate');
  t.equal(refused.isConnected, false);
  t.ok(refused.stats.counter('cluster_manager.cds.update_failure') >= 1);
});

t.test('the server dies: resources keep serving, the client reconnects with backoff and resubscribes with what it holds', async (t) => {
  const server = await started(t);
  const logs: string[] = [];
  const c = consumer();
  const ads = client(server, c, { logger: { debug: () => {}, info: () => {}, warn: (m) => logs.push(m) } });
  ads.subscribe(TypeUrl.RouteConfiguration, ['80']);
  ads.start();
  let stream: SotwStream = await server.stream(server.sotw, 1);
  await stream.request(3);
  t.same(stream.requests.map((r) => r.typeUrl), [TypeUrl.Cluster, TypeUrl.Listener, TypeUrl.RouteConfiguration], 'ADS order: CDS, LDS, RDS');
  stream.send(sotwResponse({ typeUrl: TypeUrl.Cluster, versionInfo: 'c1', nonce: '1', resources: [cluster('a')] }));
  stream.send(sotwResponse({ typeUrl: TypeUrl.Listener, versionInfo: 'l1', nonce: '2', resources: [listener('0.0.0.0_80', 80)] }));
  stream.send(sotwResponse({ typeUrl: TypeUrl.RouteConfiguration, versionInfo: 'r1', nonce: '3', resources: [routeConfig('80')] }));
  await stream.request(6);

  server.kill();
  await new Promise((r) => setTimeout(r, 400));
  t.equal(ads.isConnected, false);
  t.equal(ads.stats.gauges.get('control_plane.connected_state'), 0);
  t.same([...ads.resources(TypeUrl.Cluster).keys()], ['a'], 'held through the outage');
  t.same([...ads.resources(TypeUrl.Listener).keys()], ['0.0.0.0_80']);
  t.ok(ads.stats.counter('cluster_manager.cds.update_failure') >= 2, 'failed attempts are counted');
  t.match(logs.join('\n'), /StreamAggregatedResources stream to 127\.0\.0\.1:\d+ closed: 14/);

  await server.start();
  stream = await server.stream(server.sotw, 2, 3000);
  const again = [await stream.request(1), await stream.request(2), await stream.request(3)];
  t.same(again.map((r) => [r.typeUrl, r.versionInfo, r.resourceNames, r.responseNonce]), [
    [TypeUrl.Cluster, 'c1', [], ''],
    [TypeUrl.Listener, 'l1', [], ''],
    [TypeUrl.RouteConfiguration, 'r1', ['80'], ''],
  ]);
  t.ok(again[0]!.node, 'the new stream starts with the node');
  stream.send(sotwResponse({ typeUrl: TypeUrl.Cluster, versionInfo: 'c2', nonce: '4', resources: [cluster('a'), cluster('b')] }));
  t.equal((await stream.request(4)).versionInfo, 'c2');
  t.equal(ads.isConnected, true);
  t.same([...ads.resources(TypeUrl.Cluster).keys()], ['a', 'b']);
});
