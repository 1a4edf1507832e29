// Downstream TLS end to end, with certificates made by `remora ca` in the test and real
// handshakes: a sidecar's inbound port under PeerAuthentication STRICT and PERMISSIVE (the
// verified SPIFFE identity reaching AuthorizationPolicy and x-forwarded-client-cert),
// workload certificate rotation, and a gateway's TLS servers — certificates picked by SNI,
// MUTUAL, PASSTHROUGH to a backend that terminates, httpsRedirect, ALPN h2.
import { X509Certificate } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request as httpsRequest, type Agent, createServer as createHttpsServer } from 'node:https';
import { connect as http2Connect } from 'node:http2';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, type PeerCertificate } from 'node:tls';
import t, { type Test } from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, serviceEntry } from './helpers/mesh.ts';
import { waitFor } from './helpers/net.ts';
import { opensslAsync } from './helpers/openssl.ts';
import { MeshDir, runCli, startRemora, type InProcessRemora } from './helpers/remora.ts';

interface Files {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca: Buffer;
}

/** A CA directory and workload identities issued from it. */
class Pki {
  readonly base: string;
  constructor(t: Test) {
    this.base = mkdtempSync(join(tmpdir(), 'remora-tls-'));
    t.teardown(() => rmSync(this.base, { recursive: true, force: true }));
  }
  async init(name: string): Promise<string> {
    const dir = join(this.base, name);
    const r = await runCli(['ca', 'init', '--dir', dir]);
    if (r.code !== 0) throw new Error(r.stderr);
    return dir;
  }
  async workload(ca: string, ns: string, sa: string, out: string = join(this.base, `${ns}-${sa}`)): Promise<string> {
    const r = await runCli(['ca', 'issue', '--dir', ca, '--namespace', ns, '--service-account', sa, '--out', out]);
    if (r.code !== 0) throw new Error(r.stderr);
    return out;
  }
  async server(ca: string, name: string, dns: string[]): Promise<string> {
    const out = join(this.base, name);
    const r = await runCli(['ca', 'issue-server', '--dir', ca, '--out', out, ...dns.flatMap((d) => ['--dns', d])]);
    if (r.code !== 0) throw new Error(r.stderr);
    return out;
  }
}

const workloadFiles = (dir: string): Files => ({
  cert: readFileSync(join(dir, 'cert-chain.pem')),
  key: readFileSync(join(dir, 'key.pem')),
  ca: readFileSync(join(dir, 'root-cert.pem')),
});

interface TlsReply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
  readonly serverCert: PeerCertificate;
  readonly reused: boolean;
}

/** One HTTPS request to 127.0.0.1:`port`; mesh peers skip host-name checks (SPIFFE has none). */
function httpsGet(
  port: number,
  path: string,
  opts: { host?: string; servername?: string; ca: Buffer; cert?: Buffer; key?: Buffer; agent?: Agent; meshPeer?: boolean },
): Promise<TlsReply> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        headers: { host: opts.host ?? 'localhost' },
        ca: opts.ca,
        ...(opts.cert ? { cert: opts.cert, key: opts.key } : {}),
        ...(opts.servername !== undefined ? { servername: opts.servername } : {}),
        ...(opts.meshPeer ? { checkServerIdentity: () => undefined } : {}),
        agent: opts.agent ?? false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        const serverCert = (res.socket as import('node:tls').TLSSocket).getPeerCertificate();
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString(), serverCert, reused: req.reusedSocket });
        });
      },
    );
    req.setTimeout(5_000, () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

/** Resolves to the error of a request expected to fail; rejects when it succeeds. */
async function refused(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('the request was expected to fail, but it was answered');
}

/** Sends `bytes` and waits: how long until the proxy closed the connection, and what it said. */
function stall(port: number, bytes: Buffer): Promise<{ ms: number; got: string }> {
  return new Promise((resolve) => {
    const started = Date.now();
    let got = '';
    const s = netConnect({ host: '127.0.0.1', port }, () => s.write(bytes));
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    s.on('error', () => {});
    s.on('close', () => resolve({ ms: Date.now() - started, got }));
  });
}

/** A VirtualService on `gateway` sending `host` to the web backend's ServiceEntry. */
const routeToWeb = (namespace: string, gateway: string, host: string): string => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: web, namespace: ${namespace} }
spec:
  hosts: ["${host}"]
  gateways: [${gateway}]
  http:
  - route: [{ destination: { host: web.example.internal, port: { number: 80 } } }]
`;

const pa = (mode: string): string => `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: istio-system }
spec:
  mtls: { mode: ${mode} }
`;

interface Sidecar {
  readonly remora: InProcessRemora;
  readonly app: Backend;
  readonly identityDir: string;
}

async function sidecar(t: Test, pki: Pki, ca: string, yaml: string, extraArgs: string[] = []): Promise<Sidecar> {
  const app = await startBackend('productpage');
  const identityDir = await pki.workload(ca, 'default', 'productpage', join(pki.base, `pp-${Math.random().toString(36).slice(2)}`));
  const mesh = new MeshDir({ 'mesh.yaml': yaml });
  const remora = await startRemora('sidecar', [mesh.dir], [
    '--app-port', String(app.port), '--labels', 'app=productpage', '--namespace', 'default', '--service-account', 'productpage', '--certs-dir', identityDir, ...extraArgs,
  ]);
  t.teardown(async () => {
    await remora.stop();
    await app.close();
    mesh.cleanup();
  });
  return { remora, app, identityDir };
}

t.test('STRICT: plaintext and foreign certificates are refused; mesh peers pass with their identity', async (t) => {
  const pki = new Pki(t);
  const ca = await pki.init('ca');
  const other = await pki.init('other-ca');
  const frontend = workloadFiles(await pki.workload(ca, 'web', 'frontend'));
  const cart = workloadFiles(await pki.workload(ca, 'shop', 'cart'));
  const intruder = workloadFiles(await pki.workload(other, 'web', 'frontend'));
  const { remora, app } = await sidecar(
    t,
    pki,
    ca,
    doc(
      pa('STRICT'),
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: frontend-only, namespace: default }
spec:
  selector: { matchLabels: { app: productpage } }
  rules:
  - from: [{ source: { principals: ["cluster.local/ns/web/sa/frontend"] } }]
`,
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-admin-from-web, namespace: default }
spec:
  selector: { matchLabels: { app: productpage } }
  action: DENY
  rules:
  - from: [{ source: { namespaces: ["web"] } }]
    to: [{ operation: { paths: ["/admin"] } }]
`,
    ),
    ['--request-headers-timeout', '400ms'],
  );
  const port = remora.ports.inbound;

  const stalled = await stall(port, Buffer.from([0x16, 0x03, 0x01, 0x00]));
  t.ok(stalled.ms >= 350 && stalled.ms < 3_000 && stalled.got === '', `a stalled hello is closed without an answer after ~400 ms (${stalled.ms} ms)`);
  const plain = await refused(request(port, '/productpage', { headers: { host: 'productpage' } }));
  t.match(plain, /socket hang up|ECONNRESET/, 'a plaintext client is cut off');
  const stranger = await refused(httpsGet(port, '/productpage', { ...intruder, ca: frontend.ca, meshPeer: true }));
  t.match(stranger, /certificate|alert|socket hang up|ECONNRESET/, 'a certificate from another root is refused');
  const noCert = await refused(httpsGet(port, '/productpage', { ca: frontend.ca, meshPeer: true }));
  t.match(noCert, /certificate|alert|socket hang up|ECONNRESET/, 'a TLS client without a certificate is refused');
  t.equal(app.seen.length, 0, 'none of them reached the app');

  const ok = await httpsGet(port, '/productpage', { ...frontend, meshPeer: true });
  t.equal(ok.status, 200);
  t.match(ok.serverCert.subjectaltname, 'URI:spiffe://cluster.local/ns/default/sa/productpage', 'the sidecar presents its workload certificate');
  const xfcc = String(app.seen.at(-1)!.headers['x-forwarded-client-cert']);
  t.match(xfcc, /^By=spiffe:\/\/cluster\.local\/ns\/default\/sa\/productpage;Hash=[0-9a-f]{64};Subject="[^"]*";URI=spiffe:\/\/cluster\.local\/ns\/web\/sa\/frontend$/, 'XFCC names the verified peer');
  t.equal(app.seen.at(-1)!.headers['x-forwarded-proto'], 'https');

  // The identity reaches AuthorizationPolicy: ALLOW by principal, DENY by namespace.
  const denied = await httpsGet(port, '/productpage', { ...cart, meshPeer: true });
  t.equal(denied.status, 403, 'another mesh identity is not allowed');
  t.equal(denied.body, 'RBAC: access denied');
  const admin = await httpsGet(port, '/admin', { ...frontend, meshPeer: true });
  t.equal(admin.status, 403, 'DENY by the peer namespace');
  await waitFor('access log', () => remora.accessLog.some((l) => l.includes('rbac_access_denied_matched_policy[ns[default]-policy[no-admin-from-web]-rule[0]]')));
  t.equal(app.seen.length, 1, 'only the allowed request reached the app');
});

t.test('PERMISSIVE: plaintext and mTLS clients both pass on one port', async (t) => {
  const pki = new Pki(t);
  const ca = await pki.init('ca');
  const frontend = workloadFiles(await pki.workload(ca, 'web', 'frontend'));
  const { remora, app } = await sidecar(t, pki, ca, pa('PERMISSIVE'), ['--request-headers-timeout', '400ms']);
  const port = remora.ports.inbound;
  // Bytes that stall before they make a hello: at the deadline (Envoy's listener filter
  // timeout; here the shorter request-headers timeout) a PERMISSIVE port serves them as
  // plaintext, as Istio's inbound listener continues on that timeout: not HTTP, so 400.
  const stalled = await stall(port, Buffer.from([0x16, 0x03, 0x01, 0x00]));
  t.ok(stalled.ms >= 350 && stalled.ms < 3_000, `handed on after ~400 ms (${stalled.ms} ms)`);
  t.match(stalled.got, /^HTTP\/1\.1 400 Bad Request/);
  const plain = await request(port, '/a', { headers: { host: 'productpage', 'x-forwarded-client-cert': 'By=spoofed' } });
  t.equal(plain.status, 200);
  t.equal(app.seen.at(-1)!.headers['x-forwarded-proto'], 'http');
  const mtls = await httpsGet(port, '/b', { ...frontend, meshPeer: true });
  t.equal(mtls.status, 200);
  t.same(app.seen.map((s) => s.url), ['/a', '/b']);
  // Istio's metrics tell the two apart.
  const metrics = (await request(remora.ports.admin, '/stats/prometheus')).body;
  const series = metrics.split('\n').filter((l) => l.startsWith('istio_requests_total{'));
  t.ok(
    series.some((l) => l.includes('connection_security_policy="mutual_tls"') && l.includes('source_principal="spiffe://cluster.local/ns/web/sa/frontend"') && l.includes('source_workload_namespace="web"') && / 1$/.test(l)),
    'the mTLS request: mutual_tls, with the peer principal',
  );
  t.ok(series.some((l) => l.includes('connection_security_policy="none"') && l.includes('source_principal="unknown"') && / 1$/.test(l)), 'the plaintext one: none');
  t.match(String(app.seen[1]!.headers['x-forwarded-client-cert']), /URI=spiffe:\/\/cluster\.local\/ns\/web\/sa\/frontend$/);
  // HTTP/2 over mTLS, chosen by ALPN.
  const session = http2Connect(`https://127.0.0.1:${port}`, { ...frontend, checkServerIdentity: () => undefined });
  t.teardown(() => session.close());
  const h2 = await new Promise<{ status: number; alpn: string | false | null }>((resolve, reject) => {
    const s = session.request({ ':path': '/h2', ':authority': 'productpage' });
    s.on('response', (h) => {
      s.resume();
      s.on('end', () => resolve({ status: Number(h[':status']), alpn: (session.socket as import('node:tls').TLSSocket).alpnProtocol }));
    });
    s.on('error', reject);
    s.end();
  });
  t.same(h2, { status: 200, alpn: 'h2' });
  t.equal(app.seen.at(-1)!.url, '/h2');
});

t.test('rotation: new handshakes present the new certificate; open connections keep working', async (t) => {
  const pki = new Pki(t);
  const ca = await pki.init('ca');
  const frontend = workloadFiles(await pki.workload(ca, 'web', 'frontend'));
  const { remora, identityDir } = await sidecar(t, pki, ca, pa('STRICT'));
  const port = remora.ports.inbound;
  // An HTTP/2 connection opened before the rotation, kept open across it.
  const session = http2Connect(`https://127.0.0.1:${port}`, { ...frontend, checkServerIdentity: () => undefined });
  t.teardown(() => session.close());
  const h2get = (path: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const s = session.request({ ':path': path, ':authority': 'productpage' });
      s.on('response', (h) => {
        s.resume();
        s.on('end', () => resolve(Number(h[':status'])));
      });
      s.on('error', reject);
      s.end();
    });
  t.equal(await h2get('/1'), 200);
  const first = await httpsGet(port, '/1b', { ...frontend, meshPeer: true });
  t.equal((session.socket as import('node:tls').TLSSocket).getPeerCertificate().serialNumber, first.serverCert.serialNumber);
  const oldSerial = first.serverCert.serialNumber;

  // Istio's agent rewrites the files in place; the CA issues a fresh certificate and key.
  const fresh = await pki.workload(ca, 'default', 'productpage', join(pki.base, 'fresh'));
  for (const f of ['key.pem', 'cert-chain.pem', 'root-cert.pem']) cpSync(join(fresh, f), join(identityDir, f));
  const newSerial = new X509Certificate(readFileSync(join(fresh, 'cert-chain.pem'))).serialNumber;
  t.not(newSerial, oldSerial);
  await waitFor('the new certificate in a new handshake', async () => (await httpsGet(port, '/probe', { ...frontend, meshPeer: true })).serverCert.serialNumber === newSerial);

  t.equal(await h2get('/2'), 200, 'the connection opened before the rotation still serves');
  t.equal((session.socket as import('node:tls').TLSSocket).getPeerCertificate().serialNumber, oldSerial, 'with the old certificate');
});

t.test('gateway: certificates by SNI, MUTUAL, PASSTHROUGH, httpsRedirect, ALPN h2', async (t) => {
  const pki = new Pki(t);
  const ca = await pki.init('ca');
  const creds = join(pki.base, 'credentials');
  const aDir = await pki.server(ca, 'credentials/a-cert', ['a.example.com']);
  await pki.server(ca, 'credentials/b-cert', ['b.example.com']);
  await pki.server(ca, 'credentials/m-cert', ['m.example.com']);
  await pki.server(ca, 'credentials/o-cert', ['o.example.com']);
  const otherCa = await pki.init('other-ca');
  const stranger = workloadFiles(await pki.workload(otherCa, 'partners', 'acme'));
  // A client certificate (clientAuth usage): a workload certificate of the same CA serves.
  const clientFiles = workloadFiles(await pki.workload(ca, 'partners', 'acme'));
  const caPem = readFileSync(join(aDir, 'ca.crt'));
  const client = { cert: clientFiles.cert, key: clientFiles.key };

  const web = await startBackend('web');
  // The passthrough backend terminates TLS itself, with a certificate only it has.
  const secretDir = await pki.server(ca, 'secret-backend', ['secret.example.com']);
  const secret = createHttpsServer({ cert: readFileSync(join(secretDir, 'tls.crt')), key: readFileSync(join(secretDir, 'tls.key')) }, (req, res) => {
    res.end(`secret backend saw ${req.headers.host}`);
  });
  await new Promise<void>((r) => secret.listen(0, '127.0.0.1', r));
  const secretPort = (secret.address() as import('node:net').AddressInfo).port;
  const [httpPort, tlsPort, passPort, deadPort] = await (await import('./helpers/net.ts')).freePorts(4);
  const gw = (servers: string) => `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: gw, namespace: default }
spec:
  selector: { istio: ingressgateway }
  servers:
${servers}`;
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      serviceEntry('web', 'web.example.internal', [{ address: '127.0.0.1', port: web.port }], { port: 80 }),
      serviceEntry('secret', 'secret.example.internal', [{ address: '127.0.0.1', port: secretPort }], { port: 443, portName: 'tls' }).replace('protocol: HTTP', 'protocol: TLS'),
      // Nothing listens behind this one.
      serviceEntry('dead', 'dead.example.internal', [{ address: '127.0.0.1', port: deadPort! }], { port: 443, portName: 'tls' }).replace('protocol: HTTP', 'protocol: TLS'),
      gw(`  - port: { number: ${httpPort}, name: http, protocol: HTTP }
    hosts: ["*"]
    tls: { httpsRedirect: true }
  - port: { number: ${tlsPort}, name: https-a, protocol: HTTPS }
    hosts: ["a.example.com"]
    tls: { mode: SIMPLE, credentialName: a-cert }
  - port: { number: ${tlsPort}, name: https-b, protocol: HTTPS }
    hosts: ["b.example.com"]
    tls: { mode: SIMPLE, credentialName: b-cert }
  - port: { number: ${tlsPort}, name: https-m, protocol: HTTPS }
    hosts: ["m.example.com"]
    tls: { mode: MUTUAL, credentialName: m-cert, subjectAltNames: ["spiffe://cluster.local/ns/partners/sa/acme"] }
  - port: { number: ${tlsPort}, name: https-o, protocol: HTTPS }
    hosts: ["o.example.com"]
    tls: { mode: OPTIONAL_MUTUAL, credentialName: o-cert }
  - port: { number: ${passPort}, name: tls-pass, protocol: TLS }
    hosts: ["secret.example.com", "dead.example.com"]
    tls: { mode: PASSTHROUGH }
`),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: web, namespace: default }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route: [{ destination: { host: web.example.internal, port: { number: 80 } } }]
`,
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: secret, namespace: default }
spec:
  hosts: ["secret.example.com", "dead.example.com"]
  gateways: [gw]
  tls:
  - match: [{ sniHosts: ["secret.example.com"] }]
    route: [{ destination: { host: secret.example.internal, port: { number: 443 } } }]
  - match: [{ sniHosts: ["dead.example.com"] }]
    route: [{ destination: { host: dead.example.internal, port: { number: 443 } } }]
`,
    ),
  });
  const remora = await startRemora('gateway', [mesh.dir], ['--labels', 'istio=ingressgateway', '--credentials-dir', creds]);
  t.teardown(async () => {
    await remora.stop();
    await web.close();
    secret.closeAllConnections();
    secret.close();
    mesh.cleanup();
  });

  // Two hosts, two certificates, one port: the SNI picks.
  for (const host of ['a.example.com', 'b.example.com']) {
    const r = await httpsGet(tlsPort!, '/hello', { host, servername: host, ca: caPem });
    t.equal(r.status, 200, host);
    t.equal(r.serverCert.subject.CN, host);
    t.equal(web.seen.at(-1)!.headers['x-forwarded-proto'], 'https');
    const { out: sc } = await opensslAsync(['s_client', '-connect', `127.0.0.1:${tlsPort}`, '-servername', host, '-CAfile', join(aDir, 'ca.crt'), '-verify_return_error']);
    t.match(sc, new RegExp(`subject=CN ?= ?${host.replace(/\./g, '\\.')}`), `openssl s_client -servername ${host}`);
    t.match(sc, /Verify return code: 0 \(ok\)/);
  }
  t.match(await refused(httpsGet(tlsPort!, '/', { host: 'c.example.com', servername: 'c.example.com', ca: caPem })), /socket hang up|ECONNRESET|disconnected/, 'no server for the name: closed');

  // Bytes that are no ClientHello (garbage behind a handshake record header, HTTP, a
  // truncated hello then a close) are dropped; the listener keeps serving.
  for (const junk of [Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0x40, 0x01]), Buffer.alloc(63, 0xff)]), Buffer.from('GET / HTTP/1.1\r\nhost: a\r\n\r\n'), Buffer.from([0x16, 0x03, 0x01, 0x02])]) {
    const closed = await new Promise<string>((resolve) => {
      const s = netConnect({ host: '127.0.0.1', port: tlsPort! }, () => s.end(junk));
      let got = '';
      s.on('data', (d: Buffer) => (got += d.toString('latin1')));
      s.on('error', () => {});
      s.on('close', () => resolve(got));
    });
    t.equal(closed, '', `closed without an answer: ${junk.subarray(0, 6).toString('hex')}`);
  }
  t.equal((await httpsGet(tlsPort!, '/after-junk', { host: 'a.example.com', servername: 'a.example.com', ca: caPem })).status, 200, 'still serving');

  // MUTUAL: a client certificate is required and verified.
  t.match(await refused(httpsGet(tlsPort!, '/', { host: 'm.example.com', servername: 'm.example.com', ca: caPem })), /certificate|alert|socket hang up|ECONNRESET/);
  const m = await httpsGet(tlsPort!, '/mutual', { host: 'm.example.com', servername: 'm.example.com', ca: caPem, ...client });
  t.equal(m.status, 200);
  t.match(String(web.seen.at(-1)!.headers['x-forwarded-client-cert']), /URI=spiffe:\/\/cluster\.local\/ns\/partners\/sa\/acme$/, 'the gateway sets XFCC for the verified client');
  const wrongSan = workloadFiles(await pki.workload(ca, 'partners', 'other'));
  t.match(await refused(httpsGet(tlsPort!, '/', { host: 'm.example.com', servername: 'm.example.com', ca: caPem, cert: wrongSan.cert, key: wrongSan.key })), /socket hang up|ECONNRESET|disconnected/, 'a SAN not in subjectAltNames: refused');

  // OPTIONAL_MUTUAL: no certificate is fine; a certificate that does not verify is not.
  t.equal((await httpsGet(tlsPort!, '/optional', { host: 'o.example.com', servername: 'o.example.com', ca: caPem })).status, 200, 'no client certificate');
  t.equal(web.seen.at(-1)!.headers['x-forwarded-client-cert'], undefined);
  t.equal((await httpsGet(tlsPort!, '/optional', { host: 'o.example.com', servername: 'o.example.com', ca: caPem, ...client })).status, 200, 'a good one');
  t.match(await refused(httpsGet(tlsPort!, '/', { host: 'o.example.com', servername: 'o.example.com', ca: caPem, cert: stranger.cert, key: stranger.key })), /certificate|alert|socket hang up|ECONNRESET|disconnected/, 'another root: refused');

  // ALPN h2 on the TLS listener.
  const session = http2Connect(`https://127.0.0.1:${tlsPort}`, { ca: caPem, servername: 'a.example.com' });
  t.teardown(() => session.close());
  const h2status = await new Promise<number>((resolve, reject) => {
    const s = session.request({ ':path': '/h2', ':authority': 'a.example.com' });
    s.on('response', (h) => {
      s.resume();
      s.on('end', () => resolve(Number(h[':status'])));
    });
    s.on('error', reject);
    s.end();
  });
  t.equal(h2status, 200);
  t.equal(web.seen.at(-1)!.url, '/h2');

  // PASSTHROUGH: the client talks TLS with the backend itself, through the gateway.
  const pass = await httpsGet(passPort!, '/through', { host: 'secret.example.com', servername: 'secret.example.com', ca: caPem });
  t.equal(pass.status, 200);
  t.equal(pass.body, 'secret backend saw secret.example.com');
  t.equal(pass.serverCert.subject.CN, 'secret.example.com', 'the backend\'s own certificate: the gateway did not terminate');
  const raw = await new Promise<string>((resolve) => {
    const s = tlsConnect({ host: '127.0.0.1', port: passPort!, servername: 'other.example.com', ca: caPem });
    s.on('error', (err) => resolve(err.message));
    s.on('secureConnect', () => resolve('connected'));
  });
  t.not(raw, 'connected', 'an SNI no route names is not forwarded');
  // Envoy's TCP access log lines, in Istio's format: bytes both ways, the host, the SNI.
  const secretHost = `127.0.0.1:${secretPort}`;
  await waitFor('passthrough access log', () => remora.accessLog.some((l) => l.includes('"- - -" 0 ')));
  const tcpLines = remora.accessLog.filter((l) => l.includes('"- - -" 0 '));
  t.ok(
    tcpLines.some((l) => new RegExp(`"- - -" 0 - - - "-" [1-9]\\d* [1-9]\\d* \\d+ - "-" "-" "-" "-" "${secretHost}" outbound\\|443\\|\\|secret\\.example\\.internal - 127\\.0\\.0\\.1:${passPort} 127\\.0\\.0\\.1:\\d+ secret\\.example\\.com -$`).test(l)),
    `the passthrough connection is logged: ${tcpLines.join(' | ')}`,
  );
  // A route whose host refuses the connection: closed, logged with UF and the reason.
  const dead = await new Promise<string>((resolve) => {
    const s = tlsConnect({ host: '127.0.0.1', port: passPort!, servername: 'dead.example.com', ca: caPem });
    s.on('error', (err) => resolve(err.message));
    s.on('secureConnect', () => resolve('connected'));
  });
  t.not(dead, 'connected');
  await waitFor('UF line', () => remora.accessLog.some((l) => l.includes('dead.example.com')));
  t.match(remora.accessLog.find((l) => l.includes('dead.example.com')), new RegExp(`"- - -" 0 UF - - "ECONNREFUSED" .* "127\\.0\\.0\\.1:${deadPort}" outbound\\|443\\|\\|dead\\.example\\.internal `));

  // httpsRedirect: plaintext requests get a 301 to https.
  const redirect = await request(httpPort!, '/path?q=1', { headers: { host: 'a.example.com' } });
  t.equal(redirect.status, 301);
  t.equal(redirect.headers.location, 'https://a.example.com/path?q=1');
});

t.test('gateway ISTIO_MUTUAL server: the gateway presents its workload identity and accepts mesh clients only', async (t) => {
  const pki = new Pki(t);
  const ca = await pki.init('ca');
  const other = await pki.init('other-ca');
  const gwIdentity = await pki.workload(ca, 'istio-system', 'istio-eastwestgateway');
  const peer = workloadFiles(await pki.workload(ca, 'remote', 'client'));
  const stranger = workloadFiles(await pki.workload(other, 'remote', 'client'));
  const web = await startBackend('web');
  const port = (await (await import('./helpers/net.ts')).freePorts(1))[0]!;
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      serviceEntry('web', 'web.example.internal', [{ address: '127.0.0.1', port: web.port }], { port: 80 }),
      `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: eastwest, namespace: istio-system }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: ${port}, name: https-mesh, protocol: HTTPS }
    hosts: ["*"]
    tls: { mode: ISTIO_MUTUAL }
`,
      routeToWeb('istio-system', 'eastwest', '*'),
    ),
  });
  const remora = await startRemora('gateway', [mesh.dir], ['--certs-dir', gwIdentity]);
  t.teardown(async () => {
    await remora.stop();
    await web.close();
    mesh.cleanup();
  });
  const ok = await httpsGet(port, '/mesh', { ...peer, meshPeer: true });
  t.equal(ok.status, 200);
  t.match(ok.serverCert.subjectaltname, 'URI:spiffe://cluster.local/ns/istio-system/sa/istio-eastwestgateway');
  t.match(String(web.seen.at(-1)!.headers['x-forwarded-client-cert']), /URI=spiffe:\/\/cluster\.local\/ns\/remote\/sa\/client$/, 'the gateway sets XFCC for the verified peer');
  t.match(await refused(httpsGet(port, '/x', { ...stranger, ca: peer.ca, meshPeer: true })), /certificate|alert|socket hang up|ECONNRESET/, 'another root: refused');
  t.match(await refused(httpsGet(port, '/x', { ca: peer.ca, meshPeer: true })), /certificate|alert|socket hang up|ECONNRESET/, 'no certificate: refused');
  t.equal(web.seen.length, 1);
});

t.test('gateway credentials: a missing secret is reported at apply; once its files appear (and when they change) handshakes use them, no restart', async (t) => {
  const pki = new Pki(t);
  const ca = await pki.init('ca');
  const creds = join(pki.base, 'credentials');
  const web = await startBackend('web');
  const port = (await (await import('./helpers/net.ts')).freePorts(1))[0]!;
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      serviceEntry('web', 'web.example.internal', [{ address: '127.0.0.1', port: web.port }], { port: 80 }),
      `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: gw, namespace: default }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: ${port}, name: https, protocol: HTTPS }
    hosts: ["late.example.com"]
    tls: { mode: SIMPLE, credentialName: late-cert }
`,
      routeToWeb('default', 'gw', 'late.example.com'),
    ),
  });
  const remora = await startRemora('gateway', [mesh.dir], ['--credentials-dir', creds]);
  t.teardown(async () => {
    await remora.stop();
    await web.close();
    mesh.cleanup();
  });
  t.ok(
    remora.log.some((l) => l.includes('Gateway server default/gw#0 (late.example.com): missing') && l.includes(join(creds, 'late-cert', 'tls.crt'))),
    'the missing secret is named when the config is applied',
  );
  const get = (ca: Buffer) => httpsGet(port, '/late', { host: 'late.example.com', servername: 'late.example.com', ca });
  const caPem = readFileSync(join(ca, 'root-cert.pem'));
  t.match(await refused(get(caPem)), /socket hang up|ECONNRESET|disconnected/, 'no certificate yet: the handshake fails');

  await pki.server(ca, 'credentials/late-cert', ['late.example.com']);
  await waitFor('the new secret in use', async () => {
    try {
      return (await get(caPem)).status === 200;
    } catch {
      return false;
    }
  });
  const first = (await get(caPem)).serverCert.serialNumber;

  // Rotated in place: new handshakes get the new certificate.
  const next = await pki.server(ca, 'rotated', ['late.example.com']);
  for (const f of ['tls.crt', 'tls.key']) cpSync(join(next, f), join(creds, 'late-cert', f));
  const rotated = new X509Certificate(readFileSync(join(next, 'tls.crt'))).serialNumber;
  t.not(rotated, first);
  await waitFor('the rotated certificate', async () => (await get(caPem)).serverCert.serialNumber === rotated);
  t.pass('rotated without a restart');
});
