// Istio's TCP metadata exchange between two sidecars over mesh mTLS (istio/proxy's
// `istio.metadata_exchange` network filter and its cluster twin): the client sidecar offers
// ALPN `istio-peer-exchange`, the server sidecar's TCP port picks it, and each writes the
// preamble (magic 0x3D230467, a length, an Any holding the Struct of its workload) before any
// byte of the app's and reads the other's. Neither app ever sees a preamble byte; both
// reporters of istio_tcp_* name the peer's workload, app, version, canonical service and
// cluster, principals from the certificates. A TLS client without the ALPN is served as before.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { DevCa, writeWorkloadFiles } from '@remora/proxy';
import { request } from './helpers/http.ts';
import { waitFor } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';
import { find, scrape } from './helpers/prometheus.ts';

const FRONTEND = 'spiffe://cluster.local/ns/web/sa/frontend';
const ECHO = 'spiffe://cluster.local/ns/shop/sa/echo';
const BANNER = 'HELLO from echo\n';
const ECHO_VIP = '10.96.0.70';
const STRICT = 'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: default, namespace: shop }\nspec: { mtls: { mode: STRICT } }\n';

/** Every byte the app received, per connection, in order. */
const received: Buffer[][] = [];
let app: Server;
let server: InProcessRemora;
let client: InProcessRemora;
let work: string;
const cleanups: (() => Promise<void> | void)[] = [];

t.before(async () => {
  work = mkdtempSync(join(tmpdir(), 'remora-tcp-peer-'));
  cleanups.push(() => rmSync(work, { recursive: true, force: true }));
  const ca = await DevCa.create();
  await writeWorkloadFiles(join(work, 'frontend'), await ca.issueWorkload({ namespace: 'web', serviceAccount: 'frontend' }));
  await writeWorkloadFiles(join(work, 'echo'), await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'echo' }));

  // A server-first app: a banner on accept, then every byte echoed back.
  app = createServer((s) => {
    const mine: Buffer[] = [];
    received.push(mine);
    s.write(BANNER);
    s.on('data', (d: Buffer) => {
      mine.push(d);
      s.write(d);
    });
    s.on('end', () => s.end());
    s.on('error', () => s.destroy());
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => app.close(() => r())));
  const appPort = (app.address() as AddressInfo).port;

  const serverMesh = new MeshDir({
    'pa.yaml': STRICT,
    'svc.yaml': `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: echo, namespace: shop }
spec:
  hosts: [echo.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector: { labels: { app: echo } }
  ports: [{ number: 7000, targetPort: ${appPort}, name: tcp, protocol: TCP }]
`,
  });
  cleanups.push(() => serverMesh.cleanup());
  server = await startRemora('sidecar', [serverMesh.dir], [
    '--app-port', String(appPort), '--namespace', 'shop', '--service-account', 'echo', '--labels', 'app=echo,version=v3',
    '--workload-name', 'echo-v3', '--cluster-id', 'east', '--certs-dir', join(work, 'echo'), '--log-level', 'warning',
  ]);
  cleanups.push(() => server.stop());

  // The endpoint carries only the mesh label: who the server is reaches the client by the exchange alone.
  const clientMesh = new MeshDir({
    'mesh.yaml': `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: echo, namespace: shop }
spec:
  hosts: [echo.shop.svc.cluster.local]
  addresses: [${ECHO_VIP}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 7000, name: tcp, protocol: TCP }]
  endpoints:
  - { address: 127.0.0.1, ports: { tcp: ${server.ports.inbound} }, labels: { security.istio.io/tlsMode: istio }, serviceAccount: echo }
`,
  });
  cleanups.push(() => clientMesh.cleanup());
  // The client app's connections reach the outbound capture as if redirected from the service's address (iptables' part).
  client = await startRemora('sidecar', [clientMesh.dir], [
    '--namespace', 'web', '--service-account', 'frontend', '--labels', 'app=frontend,version=v1',
    '--workload-name', 'frontend-v1', '--certs-dir', join(work, 'frontend'), '--log-level', 'warning',
  ], { originalDestination: async () => ({ address: ECHO_VIP, port: 7000, family: 'IPv4' }) });
  cleanups.push(() => client.stop());
});

t.teardown(async () => {
  for (const c of cleanups.reverse()) await c();
});


/** `/stats` counters by name. */
async function stats(remora: InProcessRemora): Promise<Map<string, number>> {
  const text = (await request(remora.ports.admin, '/stats')).body;
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([^:]+): (\d+)$/.exec(line);
    if (m !== null) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

/** Sends `payload` in pieces on `s`, half-closes, and collects what comes back until the far side closes. */
function converse(s: Socket, payload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.on('error', reject);
    s.on('close', () => resolve(Buffer.concat(got)));
    // A few writes, the last one after the banner came (the app spoke first).
    s.once('data', () => {
      s.write(payload.subarray(0, 3));
      s.write(payload.subarray(3));
      s.end();
    });
  });
}

t.test('TCP over mTLS between two sidecars: preambles exchanged and consumed, both apps see exactly their bytes', async (t) => {
  const payload = Buffer.concat([Buffer.from('PING'), Buffer.from([0x3d, 0x23, 0x04, 0x67, 0, 0, 0, 4]), Buffer.from(' the magic itself, as app bytes\n')]);
  const before = received.length;
  const s = connect({ host: '127.0.0.1', port: client.ports.outbound });
  const back = await converse(s, payload);
  t.equal(back.toString('latin1'), BANNER + payload.toString('latin1'), 'the client app gets the banner and its echo, nothing else');
  t.equal(received.length, before + 1, 'one connection reached the app');
  t.same(Buffer.concat(received[before]!), payload, 'the server app got exactly the client app\'s bytes: no preamble');

  await waitFor('the client sidecar closed the connection', async () => find(await scrape(client), 'istio_tcp_connections_closed_total', { reporter: 'source' }).length > 0);
  const c = await scrape(client);
  const src = find(c, 'istio_tcp_connections_opened_total', { reporter: 'source', destination_service: 'echo.shop.svc.cluster.local' });
  t.equal(src.length, 1, JSON.stringify(c.filter((x) => x.name.startsWith('istio_tcp_'))));
  t.match(src[0]?.labels, {
    source_workload: 'frontend-v1',
    source_principal: FRONTEND,
    destination_workload: 'echo-v3',
    destination_workload_namespace: 'shop',
    destination_app: 'echo',
    destination_version: 'v3',
    destination_canonical_service: 'echo',
    destination_canonical_revision: 'v3',
    destination_cluster: 'east',
    destination_principal: ECHO,
    request_protocol: 'tcp',
  }, "the client's source reporter names the server by what it sent and by its certificate");
  t.equal(src[0]?.value, 1);
  const sent = find(c, 'istio_tcp_received_bytes_total', { reporter: 'source', destination_workload: 'echo-v3' });
  t.equal(sent[0]?.value, payload.length, 'bytes from the client app, without any preamble');
  const got = find(c, 'istio_tcp_sent_bytes_total', { reporter: 'source', destination_workload: 'echo-v3' });
  t.equal(got[0]?.value, BANNER.length + payload.length, 'bytes to the client app, without any preamble');

  await waitFor('the server sidecar closed the connection', async () => find(await scrape(server), 'istio_tcp_connections_closed_total', { reporter: 'destination' }).length > 0);
  const sv = await scrape(server);
  const dst = find(sv, 'istio_tcp_connections_opened_total', { reporter: 'destination', source_workload: 'frontend-v1' });
  t.equal(dst.length, 1, JSON.stringify(sv.filter((x) => x.name.startsWith('istio_tcp_'))));
  t.match(dst[0]?.labels, {
    source_workload: 'frontend-v1',
    source_workload_namespace: 'web',
    source_app: 'frontend',
    source_version: 'v1',
    source_canonical_service: 'frontend',
    source_canonical_revision: 'v1',
    source_cluster: 'Kubernetes',
    source_principal: FRONTEND,
    destination_workload: 'echo-v3',
    destination_principal: ECHO,
    connection_security_policy: 'mutual_tls',
  }, "the server's destination reporter names the client by what it sent, principals from certificates");
  t.equal(find(sv, 'istio_tcp_received_bytes_total', { reporter: 'destination', source_workload: 'frontend-v1' })[0]?.value, payload.length, 'the preamble is not counted as the app\'s bytes');
  t.equal(find(sv, 'istio_tcp_sent_bytes_total', { reporter: 'destination', source_workload: 'frontend-v1' })[0]?.value, BANNER.length + payload.length);

  const cs = await stats(client);
  const ss = await stats(server);
  for (const [who, m] of [['client', cs], ['server', ss]] as const) {
    t.ok((m.get('metadata_exchange.alpn_protocol_found') ?? 0) >= 1, `${who}: metadata_exchange.alpn_protocol_found`);
    t.ok((m.get('metadata_exchange.metadata_added') ?? 0) >= 1, `${who}: metadata_exchange.metadata_added`);
    t.equal(m.get('metadata_exchange.initial_header_not_found') ?? 0, 0, `${who}: the peer's header came`);
    t.equal(m.get('metadata_exchange.header_not_found') ?? 0, 0, `${who}: and parsed`);
  }
});

t.test('a TLS client with the mesh certificate but without the ALPN: served as before, no preamble, peer known by certificate only', async (t) => {
  const before = received.length;
  const notFound = (await stats(server)).get('metadata_exchange.alpn_protocol_not_found') ?? 0;
  const dir = join(work, 'frontend');
  for (const alpn of [undefined, ['istio']]) {
    const s = tlsConnect({
      host: '127.0.0.1',
      port: server.ports.inbound,
      cert: readFileSync(join(dir, 'cert-chain.pem')),
      key: readFileSync(join(dir, 'key.pem')),
      ca: readFileSync(join(dir, 'root-cert.pem')),
      checkServerIdentity: () => undefined,
      ...(alpn !== undefined ? { ALPNProtocols: alpn } : {}),
    });
    await new Promise<void>((resolve, reject) => {
      s.once('secureConnect', resolve);
      s.once('error', reject);
    });
    t.equal(s.alpnProtocol, false, `offered ${JSON.stringify(alpn)}: no ALPN picked`);
    const back = await converse(s, Buffer.from('plain mTLS\n'));
    t.equal(back.toString(), `${BANNER}plain mTLS\n`, 'the banner and the echo, no preamble');
  }
  t.equal(received.length, before + 2);
  t.same(received.slice(before).map((r) => Buffer.concat(r).toString()), ['plain mTLS\n', 'plain mTLS\n'], 'the app got exactly the client\'s bytes');
  await waitFor('alpn_protocol_not_found counted', async () => ((await stats(server)).get('metadata_exchange.alpn_protocol_not_found') ?? 0) >= notFound + 2);
  await waitFor('the plain mTLS connections closed', async () => find(await scrape(server), 'istio_tcp_connections_closed_total', { reporter: 'destination', source_workload: 'unknown', source_principal: FRONTEND }).length > 0);
  const sv = await scrape(server);
  const dst = find(sv, 'istio_tcp_connections_opened_total', { reporter: 'destination', source_workload: 'unknown', source_principal: FRONTEND });
  t.equal(dst[0]?.value, 2, 'counted under the certificate\'s principal and namespace, workload unknown');
  t.equal(dst[0]?.labels.source_workload_namespace, 'web');
});
