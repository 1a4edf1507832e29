// Istio's peer metadata exchange between two sidecars over mesh mTLS, and the istio_* metrics
// both reporters then fill: the client sidecar sends `x-envoy-peer-metadata` / `-id` (base64
// of a google.protobuf.Struct with NAME, NAMESPACE, WORKLOAD_NAME, CLUSTER_ID, OWNER, LABELS)
// upstream; the server sidecar reads and removes them before its app and answers with its
// own, which the client reads and removes before its app. Principals come from the
// certificates (destination_principal on the client from the server's SAN), gRPC streams
// count their messages, and a fault abort on a route still names its destination service.
//
// Reference: istio/proxy's peer_metadata filter (istio_headers discovery and propagation,
// the request's headers answered only when they came) and its stats filter (labels per
// reporter, namespace from the SAN first); istiod puts the outbound form on sidecar
// outbound and gateway listeners, the inbound form on sidecar inbound listeners.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import t from 'tap';
import { DevCa, writeWorkloadFiles } from '@remora/proxy';
import { startBackend, type Backend } from './helpers/backends.ts';
import { get, request } from './helpers/http.ts';
import { doc } from './helpers/mesh.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';
import { find, scrape } from './helpers/prometheus.ts';

const json = {
  serialize: (v: unknown) => Buffer.from(JSON.stringify(v)),
  deserialize: (b: Buffer) => JSON.parse(b.toString()) as Record<string, unknown>,
};
const method = (path: string, requestStream: boolean, responseStream: boolean) => ({
  path,
  requestStream,
  responseStream,
  requestSerialize: json.serialize,
  requestDeserialize: json.deserialize,
  responseSerialize: json.serialize,
  responseDeserialize: json.deserialize,
});
const service = { chat: method('/demo.Greeter/Chat', true, true) };
const Client = grpc.makeGenericClientConstructor(service, 'Greeter');

const FRONTEND = 'spiffe://cluster.local/ns/web/sa/frontend';
const REVIEWS = 'spiffe://cluster.local/ns/shop/sa/reviews';

let reviewsApp: Backend;
let frontendApp: Backend;
let grpcServer: grpc.Server;
let client: InProcessRemora;
let reviews: InProcessRemora;
let greeter: InProcessRemora;
const cleanups: (() => Promise<void> | void)[] = [];

const STRICT = 'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: default, namespace: shop }\nspec: { mtls: { mode: STRICT } }\n';

t.before(async () => {
  const work = mkdtempSync(join(tmpdir(), 'remora-peer-metadata-'));
  cleanups.push(() => rmSync(work, { recursive: true, force: true }));
  const ca = await DevCa.create();
  await writeWorkloadFiles(join(work, 'frontend'), await ca.issueWorkload({ namespace: 'web', serviceAccount: 'frontend' }));
  await writeWorkloadFiles(join(work, 'reviews'), await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'reviews' }));
  await writeWorkloadFiles(join(work, 'greeter'), await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'greeter' }));

  // The app behind the server sidecar tries to claim another identity in its response: the
  // sidecar's own metadata replaces it.
  reviewsApp = await startBackend('reviews', (req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'x-envoy-peer-metadata': 'c3Bvb2Zpbmc=', 'x-envoy-peer-metadata-id': 'spoofed' });
    res.end(JSON.stringify({ headers: req.headers }));
  });
  cleanups.push(() => reviewsApp.close());
  frontendApp = await startBackend('frontend');
  cleanups.push(() => frontendApp.close());

  grpcServer = new grpc.Server();
  grpcServer.addService(service, {
    chat: (call: grpc.ServerDuplexStream<Record<string, unknown>, unknown>) => {
      // Two answers per message, and one more at the end: 2n + 1 response messages.
      call.on('data', (m: Record<string, unknown>) => {
        call.write({ reply: `re: ${String(m.text)}` });
        call.write({ reply: 'and again' });
      });
      call.on('end', () => {
        call.write({ reply: 'bye' });
        call.end();
      });
    },
  });
  const grpcPort = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  cleanups.push(() => new Promise<void>((r) => grpcServer.tryShutdown(() => r())));

  const serverMesh = new MeshDir({ 'pa.yaml': STRICT });
  cleanups.push(() => serverMesh.cleanup());
  reviews = await startRemora('sidecar', [serverMesh.dir], [
    '--app-port', String(reviewsApp.port), '--namespace', 'shop', '--service-account', 'reviews', '--labels', 'app=reviews,version=v2',
    '--workload-name', 'reviews-v2', '--cluster-id', 'east', '--certs-dir', join(work, 'reviews'), '--log-level', 'warning',
  ]);
  cleanups.push(() => reviews.stop());
  // The greeter's own service declares its port gRPC (the inbound cluster speaks HTTP/2 to the app).
  const greeterMesh = new MeshDir({
    'pa.yaml': STRICT,
    'svc.yaml': `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: greeter, namespace: shop }
spec:
  hosts: [greeter.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector: { labels: { app: greeter } }
  ports: [{ number: 50051, targetPort: ${grpcPort}, name: grpc, protocol: GRPC }]
`,
  });
  cleanups.push(() => greeterMesh.cleanup());
  greeter = await startRemora('sidecar', [greeterMesh.dir], [
    '--app-port', String(grpcPort), '--namespace', 'shop', '--service-account', 'greeter', '--labels', 'app=greeter,version=v1',
    '--workload-name', 'greeter-v1', '--certs-dir', join(work, 'greeter'), '--log-level', 'warning',
  ]);
  cleanups.push(() => greeter.stop());

  // The endpoints carry only the mesh label: who the server is (workload, version, cluster)
  // reaches the client by the exchange alone.
  const clientMesh = new MeshDir({
    'mesh.yaml': doc(
      `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: reviews, namespace: shop }
spec:
  hosts: [reviews.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  endpoints:
  - { address: 127.0.0.1, ports: { http: ${reviews.ports.inbound} }, labels: { security.istio.io/tlsMode: istio }, serviceAccount: reviews }
`,
      `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: greeter, namespace: shop }
spec:
  hosts: [greeter.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 50051, name: grpc, protocol: GRPC }]
  endpoints:
  - { address: 127.0.0.1, ports: { grpc: ${greeter.ports.inbound} }, labels: { security.istio.io/tlsMode: istio }, serviceAccount: greeter }
`,
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews, namespace: shop }
spec:
  hosts: [reviews.shop.svc.cluster.local]
  http:
  - match: [{ uri: { prefix: /abort } }]
    fault: { abort: { httpStatus: 503, percentage: { value: 100 } } }
    route: [{ destination: { host: reviews.shop.svc.cluster.local } }]
  - route: [{ destination: { host: reviews.shop.svc.cluster.local } }]
`,
    ),
  });
  cleanups.push(() => clientMesh.cleanup());
  client = await startRemora('sidecar', [clientMesh.dir], [
    '--app-port', String(frontendApp.port), '--namespace', 'web', '--service-account', 'frontend', '--labels', 'app=frontend,version=v1',
    '--workload-name', 'frontend-v1', '--certs-dir', join(work, 'frontend'), '--log-level', 'warning',
  ]);
  cleanups.push(() => client.stop());
});

t.teardown(async () => {
  for (const c of cleanups.reverse()) await c();
});


t.test('HTTP over mTLS: headers exchanged, never reaching either app; both reporters labelled from the peer', async (t) => {
  const r = await get(client.ports.outbound, '/reviews/1', 'reviews.shop.svc.cluster.local:9080');
  t.equal(r.status, 200, r.body);
  // The server app saw none of the exchange.
  const seen = r.json<{ headers: Record<string, string> }>().headers;
  t.notOk('x-envoy-peer-metadata' in seen, 'no x-envoy-peer-metadata at the server app');
  t.notOk('x-envoy-peer-metadata-id' in seen, 'no x-envoy-peer-metadata-id at the server app');
  // The client app (here the test) gets neither: the client sidecar read and removed the server's.
  t.equal(r.headers['x-envoy-peer-metadata'], undefined, 'the response reaches the client app without the metadata');
  t.equal(r.headers['x-envoy-peer-metadata-id'], undefined);

  const client1 = await scrape(client);
  const src = find(client1, 'istio_requests_total', { reporter: 'source', destination_service: 'reviews.shop.svc.cluster.local', response_code: '200' });
  t.equal(src.length, 1, JSON.stringify(client1.filter((s) => s.name === 'istio_requests_total')));
  t.match(src[0]!.labels, {
    source_workload: 'frontend-v1',
    source_workload_namespace: 'web',
    source_app: 'frontend',
    source_version: 'v1',
    source_canonical_service: 'frontend',
    source_principal: FRONTEND,
    source_cluster: 'Kubernetes',
    destination_workload: 'reviews-v2',
    destination_workload_namespace: 'shop',
    destination_app: 'reviews',
    destination_version: 'v2',
    destination_canonical_service: 'reviews',
    destination_canonical_revision: 'v2',
    destination_principal: REVIEWS,
    destination_cluster: 'east',
    destination_service_name: 'reviews',
    destination_service_namespace: 'shop',
    request_protocol: 'http',
    connection_security_policy: 'unknown',
  });
  t.equal(src[0]!.value, 1);

  const server1 = await scrape(reviews);
  const dst = find(server1, 'istio_requests_total', { reporter: 'destination', response_code: '200' });
  t.equal(dst.length, 1, JSON.stringify(server1.filter((s) => s.name === 'istio_requests_total')));
  t.match(dst[0]!.labels, {
    source_workload: 'frontend-v1',
    source_workload_namespace: 'web',
    source_app: 'frontend',
    source_version: 'v1',
    source_canonical_service: 'frontend',
    source_canonical_revision: 'v1',
    source_principal: FRONTEND,
    source_cluster: 'Kubernetes',
    destination_workload: 'reviews-v2',
    destination_workload_namespace: 'shop',
    destination_app: 'reviews',
    destination_version: 'v2',
    destination_principal: REVIEWS,
    destination_cluster: 'east',
    destination_service: 'reviews',
    destination_service_namespace: 'shop',
    connection_security_policy: 'mutual_tls',
  });
  // Istio's histograms: Envoy's default buckets, cumulative.
  const buckets = find(server1, 'istio_request_duration_milliseconds_bucket', { reporter: 'destination', response_code: '200' }).map((s) => s.labels.le);
  t.same(buckets, ['0.5', '1', '5', '10', '25', '50', '100', '250', '500', '1000', '2500', '5000', '10000', '30000', '60000', '300000', '600000', '1800000', '3600000', '+Inf']);
  t.equal(find(server1, 'istio_response_bytes_count', { reporter: 'destination', response_code: '200' })[0]?.value, 1);
});

t.test('a request without the headers is answered without them: the inbound side only answers what came', async (t) => {
  // Straight to the server sidecar over mTLS is not possible without a certificate here; a
  // plaintext request is refused by STRICT. So the check is the client sidecar's own inbound:
  // a plaintext request from outside the mesh gets no metadata back.
  const r = await get(client.ports.inbound, '/', 'frontend');
  t.equal(r.status, 200);
  t.equal(r.headers['x-envoy-peer-metadata'], undefined);
  t.equal(r.headers['x-envoy-peer-metadata-id'], undefined);
  // And a request carrying them gets this proxy's own, which decode to its workload.
  const asked = await get(client.ports.inbound, '/', 'frontend', { 'x-envoy-peer-metadata': 'Cg0KBE5BTUUSBRoDZm9v', 'x-envoy-peer-metadata-id': 'sidecar~10.0.0.1~foo.other~other.svc.cluster.local' });
  t.equal(asked.status, 200);
  t.match(String(asked.headers['x-envoy-peer-metadata-id']), /^sidecar~127\.0\.0\.1~frontend-v1\.web~web\.svc\.cluster\.local$/);
  const decoded = Buffer.from(String(asked.headers['x-envoy-peer-metadata']), 'base64').toString('latin1');
  for (const part of ['WORKLOAD_NAME', 'frontend-v1', 'NAMESPACE', 'web', 'CLUSTER_ID', 'Kubernetes', 'service.istio.io/canonical-name', 'OWNER']) t.ok(decoded.includes(part), `carries ${part}`);
  t.notOk('x-envoy-peer-metadata' in frontendApp.seen.at(-1)!.headers, 'and the app did not see the request\'s');
  // The peer it described labels the destination reporter (a plaintext peer: no principal).
  const series = find(await scrape(client), 'istio_requests_total', { reporter: 'destination', source_workload: 'unknown', connection_security_policy: 'none' });
  t.ok(series.length >= 1);
});

t.test('a fault abort on a routed request names the destination service', async (t) => {
  const r = await get(client.ports.outbound, '/abort/1', 'reviews.shop.svc.cluster.local:9080');
  t.equal(r.status, 503);
  const s = find(await scrape(client), 'istio_requests_total', { reporter: 'source', response_code: '503', response_flags: 'FI' });
  t.equal(s.length, 1);
  t.equal(s[0]!.labels.destination_service, 'reviews.shop.svc.cluster.local');
  t.equal(s[0]!.labels.destination_service_name, 'reviews');
});

t.test('gRPC bidi streaming: request_protocol grpc and messages counted each way, on both sidecars', async (t) => {
  const c = new Client(`127.0.0.1:${client.ports.outbound}`, grpc.credentials.createInsecure(), {
    'grpc.default_authority': 'greeter.shop.svc.cluster.local:50051',
  }) as InstanceType<typeof Client> & { chat: () => grpc.ClientDuplexStream<unknown, Record<string, unknown>> };
  t.teardown(() => c.close());
  const call = c.chat();
  const replies: Record<string, unknown>[] = [];
  const done = new Promise<void>((resolve, reject) => {
    call.on('data', (m: Record<string, unknown>) => replies.push(m));
    call.on('end', resolve);
    call.on('error', reject);
  });
  for (const text of ['a', 'b', 'c']) call.write({ text });
  call.end();
  await done;
  t.equal(replies.length, 7, 'two replies per message and a goodbye');

  const want = { request_protocol: 'grpc', grpc_response_status: '0', destination_workload: 'greeter-v1' };
  const clientSide = await scrape(client);
  t.equal(find(clientSide, 'istio_request_messages_total', { reporter: 'source', ...want })[0]?.value, 3, 'client reporter: 3 request messages');
  t.equal(find(clientSide, 'istio_response_messages_total', { reporter: 'source', ...want })[0]?.value, 7, 'client reporter: 7 response messages');
  t.equal(find(clientSide, 'istio_requests_total', { reporter: 'source', ...want })[0]?.labels.destination_principal, 'spiffe://cluster.local/ns/shop/sa/greeter');
  const serverSide = await scrape(greeter);
  t.equal(find(serverSide, 'istio_request_messages_total', { reporter: 'destination', ...want, source_workload: 'frontend-v1' })[0]?.value, 3, 'server reporter: 3');
  t.equal(find(serverSide, 'istio_response_messages_total', { reporter: 'destination', ...want, source_workload: 'frontend-v1' })[0]?.value, 7, 'server reporter: 7');
  // Plain HTTP requests have no message counts.
  t.equal(find(clientSide, 'istio_request_messages_total', { request_protocol: 'http' }).length, 0);
});

t.test('/reset_counters resets istio_* counters too (histograms stay)', async (t) => {
  const before = find(await scrape(client), 'istio_requests_total', { reporter: 'source', response_code: '200', destination_workload: 'reviews-v2' });
  t.ok(before[0]!.value >= 1);
  t.equal((await request(client.ports.admin, '/reset_counters', { method: 'POST' })).status, 200);
  const after = await scrape(client);
  t.equal(find(after, 'istio_requests_total', { reporter: 'source', response_code: '200', destination_workload: 'reviews-v2' })[0]!.value, 0);
  t.equal(find(after, 'istio_request_messages_total', { request_protocol: 'grpc', reporter: 'source' })[0]!.value, 0);
  t.ok(find(after, 'istio_request_duration_milliseconds_count', { reporter: 'source', response_code: '200', destination_workload: 'reviews-v2' })[0]!.value >= 1, 'the histogram kept');
});
