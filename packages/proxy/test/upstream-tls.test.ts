// TLS origination from upstream pools, with real handshakes against node:https / node:http2
// servers and certificates made by the dev CA: SIMPLE verifies the server (CA file, SANs, else
// the host name), MUTUAL presents a client certificate, ISTIO_MUTUAL presents the workload
// identity and checks the server's SPIFFE ID and the mesh roots, auto mTLS follows the
// endpoint's tlsMode label, a rotated identity is used by new connections, sessions resume,
// and HTTP/2 is negotiated by ALPN. Failures carry Envoy's TLS_error reason.
//
// Reference: Envoy UpstreamTlsContext (sni, match_typed_subject_alt_names; failure reason
// "TLS_error:|…CERTIFICATE_VERIFY_FAILED…"); Istio pilot/pkg/networking/core/cluster_tls.go
// (ISTIO_MUTUAL SNI = `outbound_.<port>_.<subset>_.<host>`, auto mTLS transport socket match on
// `tlsMode: istio`).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createSecureServer as createH2Server, type Http2ServerRequest } from 'node:http2';
import { createServer as createHttpsServer, type Server } from 'node:https';
import { createServer as createHttpServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import t, { type Test } from 'tap';
import type { Cluster, Endpoint, ProxyNode, UpstreamTls } from '@remora/config';
import { DevCa, IdentityStore, Loggers, spiffeIdOf, writeWorkloadFiles, type IssuedCertificate, type RequestStats } from '../src/index.ts';
import { ClusterManager } from '../src/upstream/cluster-manager.ts';
import type { UpstreamPool } from '../src/upstream/upstream-host.ts';
import type { Dispatcher } from 'undici';
import { clusterModel, POOL } from './helpers/upstream-fixtures.ts';

const NODE: ProxyNode = {
  kind: 'sidecar',
  namespace: 'default',
  serviceAccount: 'client',
  labels: {},
  workloadName: 'client',
  clusterDomain: 'cluster.local',
  rootNamespace: 'istio-system',
  trustDomain: 'cluster.local',
  locality: '',
};
const HOST = 'api.example.com';
const loggers = new Loggers('error', () => {});

interface Seen {
  readonly servername: string | false;
  readonly peer: PeerCertificate | null;
  readonly reused: boolean;
  readonly httpVersion: string;
  /** The client's port: the same value means the same connection. */
  readonly clientPort: number;
}

/** A TLS server on 127.0.0.1 that records what each request's connection looked like. */
async function tlsBackend(
  t: Test,
  opts: { cert: string; key: string; ca?: string; requestCert?: boolean; close?: boolean; h2?: boolean },
): Promise<{ port: number; seen: Seen[] }> {
  const seen: Seen[] = [];
  const record = (req: IncomingMessage | Http2ServerRequest): void => {
    const s = req.socket as TLSSocket;
    const peer = s.getPeerCertificate();
    seen.push({
      servername: (s as TLSSocket & { servername: string | false }).servername,
      peer: peer && Object.keys(peer).length > 0 ? peer : null,
      reused: s.isSessionReused(),
      httpVersion: req.httpVersion,
      clientPort: s.remotePort ?? 0,
    });
  };
  const tlsOpts = { cert: opts.cert, key: opts.key, ...(opts.ca ? { ca: opts.ca } : {}), requestCert: opts.requestCert ?? false, rejectUnauthorized: opts.requestCert ?? false };
  let server: Server | ReturnType<typeof createH2Server>;
  if (opts.h2) {
    const h2 = createH2Server({ ...tlsOpts, allowHTTP1: true } as Parameters<typeof createH2Server>[0]);
    h2.on('request', (req: Http2ServerRequest, res) => {
      record(req);
      res.end('ok');
    });
    server = h2 as unknown as Server;
  } else {
    server = createHttpsServer(tlsOpts, (req, res) => {
      record(req);
      if (opts.close) res.setHeader('connection', 'close');
      res.end('ok');
    });
  }
  await new Promise<void>((r) => (server as Server).listen(0, '127.0.0.1', r));
  t.teardown(() => {
    (server as Server).close();
    (server as { closeAllConnections?: () => void }).closeAllConnections?.();
  });
  return { port: ((server as Server).address() as AddressInfo).port, seen };
}

function endpoint(port: number, labels: Record<string, string> = {}): Endpoint {
  return { address: '127.0.0.1', port, labels, weight: 1, locality: '', workloadName: 'api', namespace: 'default', serviceAccount: 'api' };
}

function tls(over: Partial<UpstreamTls> & { mode: UpstreamTls['mode'] }): UpstreamTls {
  return { clientCertificate: null, privateKey: null, caCertificates: null, subjectAltNames: [], sni: null, insecureSkipVerify: false, ...over };
}

function model(ep: Endpoint, t: UpstreamTls | null, over: Partial<Cluster> = {}): Cluster {
  return clusterModel({
    name: `outbound|443||${HOST}`,
    service: { host: HOST, name: 'api', namespace: 'default', port: 443 },
    endpoints: [ep],
    connectionPool: { ...POOL, connectTimeoutMs: 2_000 },
    tls: t,
    ...over,
  });
}

function manager(t: Test, identity: IdentityStore | null = null): ClusterManager {
  const cm = new ClusterManager({ log: loggers.get('upstream'), node: NODE, identity, statsFor: () => null as unknown as RequestStats });
  t.teardown(() => cm.close());
  return cm;
}

type Outcome = { readonly status: number; readonly body: string } | { readonly error: string };

/** One request through the cluster's pool, as the request path sends it; errors mapped as the request path maps them. */
async function call(cm: ClusterManager, m: Cluster): Promise<Outcome> {
  if (cm.clusters.get(m.name)?.model !== m) cm.commit(await cm.prepare([m]));
  const ch = cm.clusters.get(m.name)!.hosts[0]!;
  try {
    return await request(ch.host.pool, { path: '/', method: 'GET', headers: ['host', 'whatever.local'], servername: ch.host.servername });
  } catch (err) {
    const e = err as Error & { code?: string };
    return { error: ch.host.tls?.explain(e)?.code ?? e.code ?? e.message };
  }
}

/** A request through a pool's dispatch API, as the request path makes it: the whole response, or the error. */
function request(pool: UpstreamPool, opts: { path: string; method: string; headers: string[]; servername: string | null }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    let status = 0;
    const chunks: Buffer[] = [];
    pool.dispatch(opts as unknown as Dispatcher.DispatchOptions, {
      onRequestStart: () => undefined,
      onResponseStart: (_c, s) => (status = s),
      onResponseData: (_c, chunk) => void chunks.push(chunk),
      onResponseEnd: () => resolve({ status, body: Buffer.concat(chunks).toString() }),
      onResponseError: (_c, err) => reject(err),
    });
  });
}

function tmp(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'remora-upstream-tls-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A CA, a server certificate for HOST (and 127.0.0.1), and the CA file on disk. */
async function serverPki(t: Test): Promise<{ ca: DevCa; server: IssuedCertificate; caFile: string; dir: string }> {
  const ca = await DevCa.create();
  const server = await ca.issueServer({ dnsNames: [HOST], ipAddresses: ['127.0.0.1'] });
  const dir = tmp(t);
  const caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, ca.rootCertPem);
  return { ca, server, caFile, dir };
}

t.test('SIMPLE: verifies the server against caCertificates and the service host; SNI is the service host', async (t) => {
  const { server, caFile } = await serverPki(t);
  const b = await tlsBackend(t, { cert: server.certChainPem, key: server.keyPem });
  const cm = manager(t);
  t.same(await call(cm, model(endpoint(b.port), tls({ mode: 'SIMPLE', caCertificates: caFile }))), { status: 200, body: 'ok' });
  t.equal(b.seen[0]!.servername, HOST, 'SNI is the service host, not the Host header');
  t.equal(b.seen[0]!.peer, null, 'SIMPLE presents no client certificate');
});

t.test('SIMPLE: the name checked is the sni when set; a mismatch is CERTIFICATE_VERIFY_FAILED', async (t) => {
  const { server, caFile } = await serverPki(t);
  const b = await tlsBackend(t, { cert: server.certChainPem, key: server.keyPem });
  const cm = manager(t);
  const r = await call(cm, model(endpoint(b.port), tls({ mode: 'SIMPLE', caCertificates: caFile, sni: 'other.example.com' })));
  t.match(r, { error: /^TLS_error:\|CERTIFICATE_VERIFY_FAILED:.*other\.example\.com.*:TLS_error_end$/ });
  t.equal(b.seen.length, 0, 'no request reached the server');
});

t.test('SIMPLE: an untrusted server certificate fails verification (system roots without caCertificates)', async (t) => {
  const { server } = await serverPki(t);
  const b = await tlsBackend(t, { cert: server.certChainPem, key: server.keyPem });
  const cm = manager(t);
  t.match(await call(cm, model(endpoint(b.port), tls({ mode: 'SIMPLE' }))), { error: /^TLS_error:\|CERTIFICATE_VERIFY_FAILED:.*(UNABLE_TO|SELF_SIGNED)/ });
  // insecureSkipVerify: the same server is accepted.
  t.same(await call(cm, model(endpoint(b.port), tls({ mode: 'SIMPLE', insecureSkipVerify: true }))), { status: 200, body: 'ok' });
});

t.test('SIMPLE: subjectAltNames — any SAN equal to a listed one passes, none fails', async (t) => {
  const { server, caFile } = await serverPki(t);
  const b = await tlsBackend(t, { cert: server.certChainPem, key: server.keyPem });
  const cm = manager(t);
  t.same(await call(cm, model(endpoint(b.port), tls({ mode: 'SIMPLE', caCertificates: caFile, subjectAltNames: ['nope.example.com', HOST] }))), { status: 200, body: 'ok' });
  const bad = await call(cm, model(endpoint(b.port), tls({ mode: 'SIMPLE', caCertificates: caFile, subjectAltNames: ['nope.example.com'] })));
  t.match(bad, { error: /^TLS_error:\|CERTIFICATE_VERIFY_FAILED:.*match none of \[nope\.example\.com\]/ });
});

t.test('SIMPLE: an unreadable caCertificates file is a connect error naming the file', async (t) => {
  const { server, dir } = await serverPki(t);
  const b = await tlsBackend(t, { cert: server.certChainPem, key: server.keyPem });
  const cm = manager(t);
  const missing = join(dir, 'missing.pem');
  t.match(await call(cm, model(endpoint(b.port), tls({ mode: 'SIMPLE', caCertificates: missing }))), { error: new RegExp(`^TLS_error:\\|CREDENTIALS_UNAVAILABLE:cannot read ${missing}: ENOENT`) });
});

t.test('MUTUAL: presents the client certificate to a server that requires one', async (t) => {
  const { ca, server, caFile, dir } = await serverPki(t);
  const client = await ca.issueServer({ dnsNames: ['client.example.com'], clientAuth: true });
  writeFileSync(join(dir, 'client.pem'), client.certChainPem);
  writeFileSync(join(dir, 'client-key.pem'), client.keyPem);
  const b = await tlsBackend(t, { cert: server.certChainPem, key: server.keyPem, ca: ca.rootCertPem, requestCert: true });
  const cm = manager(t);
  const m = model(endpoint(b.port), tls({ mode: 'MUTUAL', caCertificates: caFile, clientCertificate: join(dir, 'client.pem'), privateKey: join(dir, 'client-key.pem') }));
  t.same(await call(cm, m), { status: 200, body: 'ok' });
  t.equal(b.seen[0]!.peer?.subject.CN, 'client.example.com');
  t.equal(b.seen[0]!.peer?.serialNumber.toUpperCase(), client.serial);
  // SIMPLE to the same server: it refuses the connection without a client certificate (a
  // TLS 1.3 alert that arrives after our side of the handshake).
  const r = await call(cm, model(endpoint(b.port), tls({ mode: 'SIMPLE', caCertificates: caFile })));
  t.match(r, { error: /^TLS_error:\|TLSV13_ALERT_CERTIFICATE_REQUIRED:/ });
});

t.test('MUTUAL: a rewritten client certificate file is used by the next new connection', async (t) => {
  const { ca, server, caFile, dir } = await serverPki(t);
  const first = await ca.issueServer({ dnsNames: ['first.example.com'], clientAuth: true });
  const second = await ca.issueServer({ dnsNames: ['second.example.com'], clientAuth: true });
  const write = (c: IssuedCertificate): void => {
    writeFileSync(join(dir, 'client.pem'), c.certChainPem);
    writeFileSync(join(dir, 'client-key.pem'), c.keyPem);
  };
  write(first);
  const b = await tlsBackend(t, { cert: server.certChainPem, key: server.keyPem, ca: ca.rootCertPem, requestCert: true, close: true });
  const cm = manager(t);
  const m = model(endpoint(b.port), tls({ mode: 'MUTUAL', caCertificates: caFile, clientCertificate: join(dir, 'client.pem'), privateKey: join(dir, 'client-key.pem') }));
  t.same(await call(cm, m), { status: 200, body: 'ok' });
  write(second);
  t.same(await call(cm, m), { status: 200, body: 'ok' });
  t.same(
    b.seen.map((s) => s.peer?.subject.CN),
    ['first.example.com', 'second.example.com'],
  );
});

/** The workload identity files of `sa`, and a store reading them. */
async function meshIdentity(t: Test, ca: DevCa, sa = 'client'): Promise<{ store: IdentityStore; dir: string; issued: IssuedCertificate }> {
  const dir = tmp(t);
  const issued = await ca.issueWorkload({ namespace: 'default', serviceAccount: sa });
  await writeWorkloadFiles(dir, issued);
  const store = await IdentityStore.open({ dir }, loggers.get('secret'), { debounceMs: 20, retryMs: 20 });
  t.teardown(() => store.close());
  return { store, dir, issued };
}

async function meshServer(t: Test, ca: DevCa, sa = 'api', close = false): Promise<{ port: number; seen: Seen[]; issued: IssuedCertificate }> {
  const issued = await ca.issueWorkload({ namespace: 'default', serviceAccount: sa });
  const b = await tlsBackend(t, { cert: issued.certChainPem, key: issued.keyPem, ca: ca.rootCertPem, requestCert: true, close });
  return { ...b, issued };
}

t.test('ISTIO_MUTUAL: the workload certificate, Istio SNI, and the server SPIFFE ID checked against the trust domain', async (t) => {
  const ca = await DevCa.create();
  const { store, issued } = await meshIdentity(t, ca);
  const b = await meshServer(t, ca);
  const cm = manager(t, store);
  const m = model(endpoint(b.port), tls({ mode: 'ISTIO_MUTUAL' }), { subset: 'v1', name: `outbound|443|v1|${HOST}` });
  t.same(await call(cm, m), { status: 200, body: 'ok' });
  t.equal(spiffeIdOf(b.seen[0]!.peer), 'spiffe://cluster.local/ns/default/sa/client', 'the server saw our SPIFFE ID');
  t.equal(b.seen[0]!.peer?.serialNumber.toUpperCase(), issued.serial);
  t.equal(b.seen[0]!.servername, `outbound_.443_.v1_.${HOST}`);
});

t.test('ISTIO_MUTUAL: subjectAltNames name the SPIFFE IDs accepted', async (t) => {
  const ca = await DevCa.create();
  const { store } = await meshIdentity(t, ca);
  const b = await meshServer(t, ca, 'api');
  const cm = manager(t, store);
  t.same(await call(cm, model(endpoint(b.port), tls({ mode: 'ISTIO_MUTUAL', subjectAltNames: ['spiffe://cluster.local/ns/default/sa/api'] }))), { status: 200, body: 'ok' });
  const r = await call(cm, model(endpoint(b.port), tls({ mode: 'ISTIO_MUTUAL', subjectAltNames: ['spiffe://cluster.local/ns/default/sa/other'] })));
  t.match(r, { error: /^TLS_error:\|CERTIFICATE_VERIFY_FAILED:server SPIFFE ID \[spiffe:\/\/cluster\.local\/ns\/default\/sa\/api\] is none of/ });
});

t.test('ISTIO_MUTUAL: a server of another mesh is refused — by the roots, and by the trust domain when the roots are shared', async (t) => {
  const ca = await DevCa.create();
  const other = await DevCa.create({ trustDomain: 'other.local' });
  const foreign = await other.issueWorkload({ namespace: 'default', serviceAccount: 'api' });
  // The server trusts both roots, so only our side's checks can fail.
  const b = await tlsBackend(t, { cert: foreign.certChainPem, key: foreign.keyPem, ca: ca.rootCertPem + other.rootCertPem, requestCert: true });
  const { store } = await meshIdentity(t, ca);
  const cm = manager(t, store);
  t.match(await call(cm, model(endpoint(b.port), tls({ mode: 'ISTIO_MUTUAL' }))), { error: /^TLS_error:\|CERTIFICATE_VERIFY_FAILED:SELF_SIGNED_CERT_IN_CHAIN/ });
  // A trust bundle with both roots: the chain verifies, the SPIFFE trust domain does not.
  const dir = tmp(t);
  const issued = await ca.issueWorkload({ namespace: 'default', serviceAccount: 'client' });
  await writeWorkloadFiles(dir, { ...issued, rootCertPem: ca.rootCertPem + other.rootCertPem });
  const federated = await IdentityStore.open({ dir }, loggers.get('secret'));
  t.teardown(() => federated.close());
  const cm2 = manager(t, federated);
  t.match(await call(cm2, model(endpoint(b.port), tls({ mode: 'ISTIO_MUTUAL' }))), {
    error: 'TLS_error:|CERTIFICATE_VERIFY_FAILED:server SPIFFE ID [spiffe://other.local/ns/default/sa/api] is not in trust domain cluster.local:TLS_error_end',
  });
  // Listed explicitly, the foreign ID is accepted.
  t.same(await call(cm2, model(endpoint(b.port), tls({ mode: 'ISTIO_MUTUAL', subjectAltNames: ['spiffe://other.local/ns/default/sa/api'] }))), { status: 200, body: 'ok' });
  t.equal(b.seen.length, 1);
});

t.test('ISTIO_MUTUAL without a workload identity fails the connection with a reason', async (t) => {
  // Nothing listens on the port: the failure comes before any connection is tried.
  const cm = manager(t, null);
  const r = await call(cm, model(endpoint(1), tls({ mode: 'ISTIO_MUTUAL' })));
  t.match(r, { error: /^TLS_error:\|NO_WORKLOAD_IDENTITY:/ });
});

t.test('auto mTLS: ISTIO_MUTUAL for endpoints labelled tlsMode=istio when tls is unset; DISABLE and unlabelled stay plaintext', async (t) => {
  const ca = await DevCa.create();
  const { store } = await meshIdentity(t, ca);
  const mesh = await meshServer(t, ca);
  const plainSeen: string[] = [];
  const plain = createHttpServer((req, res) => {
    plainSeen.push(req.url ?? '');
    res.end('plain');
  });
  await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
  t.teardown(() => plain.close());
  const plainPort = (plain.address() as AddressInfo).port;
  const cm = manager(t, store);
  const labelled = endpoint(mesh.port, { 'security.istio.io/tlsMode': 'istio' });
  t.same(await call(cm, model(labelled, null)), { status: 200, body: 'ok' }, 'labelled endpoint: mTLS');
  t.equal(spiffeIdOf(mesh.seen[0]!.peer), 'spiffe://cluster.local/ns/default/sa/client');
  t.equal(mesh.seen[0]!.servername, `outbound_.443_._.${HOST}`);
  t.same(await call(cm, model(endpoint(plainPort), null)), { status: 200, body: 'plain' }, 'unlabelled endpoint: plaintext');
  t.same(await call(cm, model(endpoint(plainPort, { 'security.istio.io/tlsMode': 'istio' }), tls({ mode: 'DISABLE' }))), { status: 200, body: 'plain' }, 'DISABLE: plaintext despite the label');
  // No identity: labelled endpoints are spoken to in plaintext (nothing to present).
  const noId = manager(t, null);
  t.same(await call(noId, model(endpoint(plainPort, { 'security.istio.io/tlsMode': 'istio' }), null)), { status: 200, body: 'plain' });
  t.equal(plainSeen.length, 3);
});

t.test('auto mTLS starts when the first workload identity appears', async (t) => {
  const ca = await DevCa.create();
  const dir = tmp(t);
  const store = await IdentityStore.open({ dir }, loggers.get('secret'), { debounceMs: 20, retryMs: 20 });
  t.teardown(() => store.close());
  t.equal(store.current, null);
  const mesh = await meshServer(t, ca);
  const cm = manager(t, store);
  const m = model(endpoint(mesh.port, { 'security.istio.io/tlsMode': 'istio' }), null);
  // Without an identity the labelled endpoint is spoken to in plaintext, which the TLS server refuses.
  t.notMatch(await call(cm, m), { status: 200 });
  await writeWorkloadFiles(dir, await ca.issueWorkload({ namespace: 'default', serviceAccount: 'client' }));
  await store.reload();
  t.same(await call(cm, m), { status: 200, body: 'ok' });
  t.equal(spiffeIdOf(mesh.seen[0]!.peer), 'spiffe://cluster.local/ns/default/sa/client');
});

t.test('rotation: new connections present the new certificate', async (t) => {
  const ca = await DevCa.create();
  const { store, dir, issued } = await meshIdentity(t, ca);
  // The server closes every connection, so each request makes a new one.
  const b = await meshServer(t, ca, 'api', true);
  const cm = manager(t, store);
  const m = model(endpoint(b.port), tls({ mode: 'ISTIO_MUTUAL' }));
  t.same(await call(cm, m), { status: 200, body: 'ok' });
  const next = await ca.issueWorkload({ namespace: 'default', serviceAccount: 'client' });
  await writeWorkloadFiles(dir, next);
  await store.reload();
  t.equal(store.current?.serial, next.serial);
  t.same(await call(cm, m), { status: 200, body: 'ok' });
  t.same(
    b.seen.map((s) => s.peer?.serialNumber.toUpperCase()),
    [issued.serial, next.serial],
  );
  t.equal(b.seen[1]!.reused, false, 'no session of the old certificate is resumed');
});

t.test('keep-alive and session resumption: one connection is reused; a new one resumes the TLS session', async (t) => {
  const { server, caFile } = await serverPki(t);
  const keep = await tlsBackend(t, { cert: server.certChainPem, key: server.keyPem });
  const cm = manager(t);
  const m = model(endpoint(keep.port), tls({ mode: 'SIMPLE', caCertificates: caFile }));
  await call(cm, m);
  // undici frees a client a moment after the body is read; without the pause a second client would be opened.
  await new Promise((r) => setTimeout(r, 20));
  await call(cm, m);
  t.equal(keep.seen.length, 2);
  t.equal(keep.seen[0]!.clientPort, keep.seen[1]!.clientPort, 'both requests on one kept-alive connection');
  t.equal(keep.seen[0]!.reused, false);
  const close = await tlsBackend(t, { cert: server.certChainPem, key: server.keyPem, close: true });
  const cm2 = manager(t);
  const m2 = model(endpoint(close.port), tls({ mode: 'SIMPLE', caCertificates: caFile }));
  for (let i = 0; i < 3; i++) t.same(await call(cm2, m2), { status: 200, body: 'ok' });
  t.equal(new Set(close.seen.map((s) => s.clientPort)).size, 3, 'three connections');
  t.same(close.seen.map((s) => s.reused), [false, true, true], 'later connections resume the session');
});

t.test('HTTP/2 over TLS is negotiated by ALPN for http2 clusters; http1 clusters stay on HTTP/1.1', async (t) => {
  const { server, caFile } = await serverPki(t);
  const b = await tlsBackend(t, { cert: server.certChainPem, key: server.keyPem, h2: true });
  const cm = manager(t);
  const spec = tls({ mode: 'SIMPLE', caCertificates: caFile });
  t.same(await call(cm, model(endpoint(b.port), spec, { protocol: 'http2' })), { status: 200, body: 'ok' });
  t.same(await call(cm, model(endpoint(b.port), spec, { name: `outbound|443|h1|${HOST}`, subset: 'h1' })), { status: 200, body: 'ok' });
  t.same(b.seen.map((s) => s.httpVersion), ['2.0', '1.1']);
});
