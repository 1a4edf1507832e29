// TLS origination through a real Remora sidecar (outbound listener): DestinationRule
// `trafficPolicy.tls` SIMPLE (server verified against a CA file and a SAN list), MUTUAL (the
// backend sees our client certificate), credentialName (files under --credentials-dir),
// ISTIO_MUTUAL (the workload certificate from --certs-dir; the backend sees our SPIFFE ID),
// auto mTLS for endpoints labelled `security.istio.io/tlsMode: istio` (off with DISABLE), and
// identity rotation (new upstream connections present the new certificate). A failed
// verification is 503 UF with Envoy's TLS_error reason in the access log, retried as a connect
// failure.
//
// Reference: istio.io DestinationRule ClientTLSSettings; Istio "Understanding TLS
// configuration" (auto mTLS sends mTLS to workloads with sidecars, plaintext otherwise);
// Envoy access log %UPSTREAM_TRANSPORT_FAILURE_REASON%.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import t from 'tap';
import WebSocket, { WebSocketServer } from 'ws';
import { DevCa, spiffeIdOf, writeWorkloadFiles, type IssuedCertificate } from '@remora/proxy';
import { get } from './helpers/http.ts';
import { doc } from './helpers/mesh.ts';
import { waitFor } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

interface Seen {
  readonly sni: string;
  readonly spiffe: string | null;
  readonly cn: string | null;
  readonly serial: string | null;
}

const servers: (Server | HttpServer)[] = [];
const wsClosers: (() => void)[] = [];

/** An https backend on 127.0.0.1 answering with what it saw of the connection, as JSON. */
async function httpsBackend(opts: { cert: string; key: string; ca?: string; requireCert?: boolean; close?: boolean }): Promise<number> {
  const server = createHttpsServer(
    { cert: opts.cert, key: opts.key, ...(opts.ca ? { ca: opts.ca } : {}), requestCert: opts.requireCert ?? false, rejectUnauthorized: opts.requireCert ?? false },
    (req, res) => {
      const s = req.socket as TLSSocket & { servername?: string | false | null };
      const peer = s.getPeerCertificate() as PeerCertificate | Record<string, never>;
      const has = peer && 'subject' in peer;
      const seen: Seen = {
        sni: typeof s.servername === 'string' ? s.servername : '',
        spiffe: has ? spiffeIdOf(peer as PeerCertificate) : null,
        cn: has ? (((peer as PeerCertificate).subject?.CN as string | undefined) ?? null) : null,
        serial: has ? (peer as PeerCertificate).serialNumber.toUpperCase() : null,
      };
      res.writeHead(200, { 'content-type': 'application/json', ...(opts.close ? { connection: 'close' } : {}) });
      res.end(JSON.stringify(seen));
    },
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  servers.push(server);
  return (server.address() as AddressInfo).port;
}

async function httpBackend(): Promise<number> {
  const server = createHttpServer((_req, res) => res.end('plaintext'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  servers.push(server);
  return (server.address() as AddressInfo).port;
}

const se = (host: string, port: number, labels = '{}', number = 443): string => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ${host.replace(/\./g, '-')}, namespace: default }
spec:
  hosts: ["${host}"]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{ number: ${number}, name: http, protocol: HTTP }]
  endpoints: [{ address: 127.0.0.1, ports: { http: ${port} }, labels: ${labels} }]
`;
const dr = (host: string, tls: string): string => `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: ${host.replace(/\./g, '-')}, namespace: default }
spec:
  host: "${host}"
  trafficPolicy:
    tls: ${tls}
`;

let remora: InProcessRemora;
let mesh: MeshDir;
let work: string;
let ca: DevCa;
let identityDir: string;
let firstIdentity: IssuedCertificate;
let clientCert: IssuedCertificate;

t.before(async () => {
  work = mkdtempSync(join(tmpdir(), 'remora-upstream-tls-'));
  ca = await DevCa.create();
  const other = await DevCa.create({ trustDomain: 'other.local' });
  const caFile = join(work, 'ca.pem');
  writeFileSync(caFile, ca.rootCertPem);
  // A plain server certificate for the SIMPLE / MUTUAL services.
  const server = await ca.issueServer({ dnsNames: ['simple.example.com', 'mutual.example.com', 'cred.example.com'] });
  clientCert = await ca.issueServer({ dnsNames: ['client.example.com'], clientAuth: true });
  writeFileSync(join(work, 'client.pem'), clientCert.certChainPem);
  writeFileSync(join(work, 'client-key.pem'), clientCert.keyPem);
  // credentialName api-client: a Kubernetes TLS secret's files.
  const creds = join(work, 'credentials');
  mkdirSync(join(creds, 'api-client'), { recursive: true });
  writeFileSync(join(creds, 'api-client', 'tls.crt'), clientCert.certChainPem);
  writeFileSync(join(creds, 'api-client', 'tls.key'), clientCert.keyPem);
  writeFileSync(join(creds, 'api-client', 'ca.crt'), ca.rootCertPem);
  // This sidecar's workload identity.
  identityDir = join(work, 'identity');
  firstIdentity = await ca.issueWorkload({ namespace: 'default', serviceAccount: 'client' });
  await writeWorkloadFiles(identityDir, firstIdentity);

  const simplePort = await httpsBackend({ cert: server.certChainPem, key: server.keyPem });
  const mutualPort = await httpsBackend({ cert: server.certChainPem, key: server.keyPem, ca: ca.rootCertPem, requireCert: true });
  const meshServer = await ca.issueWorkload({ namespace: 'default', serviceAccount: 'api' });
  const meshPort = await httpsBackend({ cert: meshServer.certChainPem, key: meshServer.keyPem, ca: ca.rootCertPem, requireCert: true });
  const rotatePort = await httpsBackend({ cert: meshServer.certChainPem, key: meshServer.keyPem, ca: ca.rootCertPem, requireCert: true, close: true });
  const foreign = await other.issueWorkload({ namespace: 'default', serviceAccount: 'api' });
  const foreignPort = await httpsBackend({ cert: foreign.certChainPem, key: foreign.keyPem, ca: ca.rootCertPem + other.rootCertPem, requireCert: true });
  const plainPort = await httpBackend();
  // A WebSocket backend behind mTLS: its first message is the client's SPIFFE ID, then it echoes.
  const wsServer = createHttpsServer({ cert: meshServer.certChainPem, key: meshServer.keyPem, ca: ca.rootCertPem, requestCert: true, rejectUnauthorized: true });
  const wss = new WebSocketServer({ server: wsServer });
  wss.on('connection', (ws, req) => {
    ws.send(spiffeIdOf((req.socket as TLSSocket).getPeerCertificate()) ?? 'none');
    ws.on('message', (m) => ws.send(String(m)));
  });
  await new Promise<void>((r) => wsServer.listen(0, '127.0.0.1', r));
  servers.push(wsServer);
  wsClosers.push(() => wss.close());
  const wsPort = (wsServer.address() as AddressInfo).port;

  const istio = '{ "security.istio.io/tlsMode": istio }';
  mesh = new MeshDir({
    'mesh.yaml': doc(
      se('simple.example.com', simplePort),
      dr('simple.example.com', `{ mode: SIMPLE, caCertificates: ${caFile} }`),
      se('wrongsan.example.com', simplePort),
      dr('wrongsan.example.com', `{ mode: SIMPLE, caCertificates: ${caFile}, sni: simple.example.com, subjectAltNames: [nope.example.com] }`),
      se('mutual.example.com', mutualPort),
      dr('mutual.example.com', `{ mode: MUTUAL, caCertificates: ${caFile}, clientCertificate: ${join(work, 'client.pem')}, privateKey: ${join(work, 'client-key.pem')} }`),
      se('cred.example.com', mutualPort),
      dr('cred.example.com', '{ mode: MUTUAL, credentialName: api-client }'),
      se('mesh-api.default.svc.cluster.local', meshPort, '{}', 8080),
      dr('mesh-api.default.svc.cluster.local', '{ mode: ISTIO_MUTUAL }'),
      se('auto-api.default.svc.cluster.local', meshPort, istio, 8080),
      se('auto-off.default.svc.cluster.local', plainPort, istio, 8080),
      dr('auto-off.default.svc.cluster.local', '{ mode: DISABLE }'),
      se('no-sidecar.default.svc.cluster.local', plainPort, '{}', 8080),
      se('foreign.default.svc.cluster.local', foreignPort, istio, 8080),
      se('rotate.default.svc.cluster.local', rotatePort, istio, 8080),
      se('ws-api.default.svc.cluster.local', wsPort, istio, 8080),
    ),
  });
  remora = await startRemora('sidecar', [mesh.dir], ['--certs-dir', identityDir, '--credentials-dir', creds, '--log-level', 'warning']);
});

t.teardown(async () => {
  await remora?.stop();
  for (const c of wsClosers) c();
  for (const s of servers) {
    s.close();
    (s as { closeAllConnections?: () => void }).closeAllConnections?.();
  }
  mesh?.cleanup();
  rmSync(work, { recursive: true, force: true });
});

const outbound = (host: string) => get(remora.ports.outbound, '/', host);
const logFor = (host: string): string | undefined => [...remora.accessLog].reverse().find((l) => l.includes(`"${host}"`));

t.test('SIMPLE: verified against caCertificates; SNI is the service host', async (t) => {
  const r = await outbound('simple.example.com:443');
  t.equal(r.status, 200, r.body);
  t.same(r.json<Seen>(), { sni: 'simple.example.com', spiffe: null, cn: null, serial: null });
});

t.test('SIMPLE: a server whose SANs match none listed → 503 UF with the TLS error in the access log', async (t) => {
  const r = await outbound('wrongsan.example.com:443');
  t.equal(r.status, 503);
  t.match(r.body, /upstream connect error/);
  await waitFor('the access log line', () => logFor('wrongsan.example.com:443') !== undefined);
  const line = logFor('wrongsan.example.com:443')!;
  // Retried as a connect failure (Istio's default retryOn), then out of retries.
  t.match(line, /" 503 UF,URX /);
  t.match(line, /"TLS_error:\|CERTIFICATE_VERIFY_FAILED:server certificate SANs \[simple\.example\.com, mutual\.example\.com, cred\.example\.com\] match none of \[nope\.example\.com\]:TLS_error_end"/);
});

t.test('MUTUAL: the backend sees the client certificate', async (t) => {
  const r = await outbound('mutual.example.com:443');
  t.equal(r.status, 200, r.body);
  t.match(r.json<Seen>(), { sni: 'mutual.example.com', cn: 'client.example.com', serial: clientCert.serial });
});

t.test(
  'credentialName: the client certificate and CA come from --credentials-dir/NAME',
  async (t) => {
    const r = await outbound('cred.example.com:443');
    t.equal(r.status, 200, logFor('cred.example.com:443') ?? r.body);
    if (r.status === 200) t.match(r.json<Seen>(), { sni: 'cred.example.com', cn: 'client.example.com', serial: clientCert.serial });
  },
);

t.test('ISTIO_MUTUAL: the workload certificate is presented; Istio SNI', async (t) => {
  const r = await outbound('mesh-api:8080');
  t.equal(r.status, 200, r.body);
  t.same(r.json<Seen>(), {
    sni: 'outbound_.8080_._.mesh-api.default.svc.cluster.local',
    spiffe: 'spiffe://cluster.local/ns/default/sa/client',
    cn: null,
    serial: firstIdentity.serial,
  });
});

t.test('auto mTLS: endpoints labelled tlsMode=istio get ISTIO_MUTUAL; DISABLE or no label stay plaintext', async (t) => {
  const auto = await outbound('auto-api:8080');
  t.equal(auto.status, 200, auto.body);
  t.match(auto.json<Seen>(), { spiffe: 'spiffe://cluster.local/ns/default/sa/client', sni: 'outbound_.8080_._.auto-api.default.svc.cluster.local' });
  const off = await outbound('auto-off:8080');
  t.same([off.status, off.body], [200, 'plaintext'], 'DestinationRule DISABLE turns auto mTLS off');
  const plain = await outbound('no-sidecar:8080');
  t.same([plain.status, plain.body], [200, 'plaintext']);
});

t.test('auto mTLS: a server of another mesh (roots we do not trust) is refused: 503 UF, CERTIFICATE_VERIFY_FAILED', async (t) => {
  const r = await outbound('foreign:8080');
  t.equal(r.status, 503);
  await waitFor('the access log line', () => logFor('foreign:8080') !== undefined);
  t.match(logFor('foreign:8080')!, /" 503 UF,URX upstream_reset_before_response_started\{connection_failure\} - "TLS_error:\|CERTIFICATE_VERIFY_FAILED:SELF_SIGNED_CERT_IN_CHAIN [^"]*:TLS_error_end"/);
});

t.test('rotation: after the identity files change, new upstream connections present the new certificate', async (t) => {
  const before = await outbound('rotate:8080');
  t.equal(before.json<Seen>().serial, firstIdentity.serial);
  const next = await ca.issueWorkload({ namespace: 'default', serviceAccount: 'client' });
  await writeWorkloadFiles(identityDir, next);
  // The rotate backend closes every connection, so each request is a new handshake.
  let seen = '';
  await waitFor(
    'a handshake with the new certificate',
    async () => {
      const r = await outbound('rotate:8080');
      seen = r.json<Seen>().serial ?? '';
      return seen === next.serial;
    },
    10_000,
  );
  t.equal(seen, next.serial);
  t.not(next.serial, firstIdentity.serial);
  t.equal((await outbound('rotate:8080')).json<Seen>().spiffe, 'spiffe://cluster.local/ns/default/sa/client');
});

t.test('WebSocket upgrades to an auto mTLS endpoint go over mTLS too', async (t) => {
  const ws = new WebSocket(`ws://127.0.0.1:${remora.ports.outbound}/`, { headers: { host: 'ws-api:8080' } });
  const messages: string[] = [];
  ws.on('message', (m) => messages.push(String(m)));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  t.teardown(() => ws.close());
  await waitFor('the first message', () => messages.length >= 1);
  t.equal(messages[0], 'spiffe://cluster.local/ns/default/sa/client', 'the backend saw our SPIFFE ID');
  ws.send('ping');
  await waitFor('the echo', () => messages.length >= 2);
  t.equal(messages[1], 'ping');
});

t.test('sidecar to sidecar: auto mTLS from the outbound side, STRICT PeerAuthentication on the inbound side', async (t) => {
  // Sidecar B beside an app that reports the client certificate header it got.
  const app = createHttpServer((req, res) => res.end(String(req.headers['x-forwarded-client-cert'] ?? '')));
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  t.teardown(() => app.close());
  const appPort = (app.address() as AddressInfo).port;
  const bIdentity = join(work, 'identity-b');
  await writeWorkloadFiles(bIdentity, await ca.issueWorkload({ namespace: 'default', serviceAccount: 'reviews' }));
  const bMesh = new MeshDir({
    'pa.yaml': 'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: default, namespace: default }\nspec: { mtls: { mode: STRICT } }\n',
  });
  t.teardown(() => bMesh.cleanup());
  const b = await startRemora('sidecar', [bMesh.dir], ['--app-port', String(appPort), '--certs-dir', bIdentity, '--log-level', 'warning']);
  t.teardown(() => b.stop());
  // Plaintext to B's inbound port is refused under STRICT, so a 200 below means mTLS.
  const direct = await get(b.ports.inbound, '/', 'reviews:9080').catch((e: Error) => e);
  t.ok(direct instanceof Error || direct.status !== 200, 'STRICT refuses plaintext');
  mesh.write('reviews.yaml', se('reviews.default.svc.cluster.local', b.ports.inbound, '{ "security.istio.io/tlsMode": istio }', 9080));
  // Until the route loads, reviews is no service: istiod's allow_any answers (503, no original destination).
  await waitFor('the reviews route', async () => {
    await outbound('reviews:9080');
    return logFor('reviews:9080')?.includes('outbound|9080||reviews.default.svc.cluster.local') === true;
  }, 10_000);
  const r = await outbound('reviews:9080');
  t.equal(r.status, 200, r.body);
  t.match(r.body, /URI=spiffe:\/\/cluster\.local\/ns\/default\/sa\/client/, 'B saw sidecar A\'s SPIFFE ID');
});
