// TLS session resumption on server ports that verify client certificates. Every pool (Remora's
// own upstream pools, undici, Envoy) resumes sessions on its new connections; OpenSSL refuses a
// resumption on a context that asks for client certificates unless it has a session id
// context, and answers with an internal-error alert — so only a pool's first connection ever
// worked, and a gateway under concurrency failed most requests to a STRICT sidecar.
//
// Checked here with real clients (node:tls, openssl s_client, undici through a gateway):
// resumption works on a STRICT sidecar port (TLS 1.2 and 1.3) and on a gateway MUTUAL server;
// a resumed connection keeps its verified SPIFFE identity (AuthorizationPolicy principals,
// x-forwarded-client-cert); a session does not carry over to another trust — a gateway server
// with other roots, or the sidecar's identity after a CA rotation; and a gateway under
// concurrency reaches a STRICT sidecar with no errors while resuming sessions (Envoy's
// `listener.<address>.ssl.session_reused` counter on /stats).
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, type SecureVersion } from 'node:tls';
import t, { type Test } from 'tap';
import { Pool } from 'undici';
import { DevCa, writeWorkloadFiles, type IssuedCertificate } from '@remora/proxy';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, routeAll, serviceEntry } from './helpers/mesh.ts';
import { freePort, waitFor } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

interface Reply {
  /** 0 when the connection failed before a response. */
  readonly status: number;
  readonly error: string;
  readonly reused: boolean;
  /** The last session (ticket) the server sent on this connection; null if none. */
  readonly session: Buffer | null;
  readonly serverSerial: string;
}

interface ClientOptions {
  readonly cert: IssuedCertificate;
  readonly ca: string;
  readonly servername?: string;
  readonly host?: string;
  readonly path?: string;
  readonly session?: Buffer | null;
  readonly version?: SecureVersion;
}

/** One HTTP/1.1 request over a fresh TLS connection with a client certificate, optionally resuming `session`. */
function tlsGet(port: number, o: ClientOptions): Promise<Reply> {
  return new Promise((resolve) => {
    let session: Buffer | null = null;
    let data = '';
    let reused = false;
    let serverSerial = '';
    let error = '';
    const s = tlsConnect({
      host: '127.0.0.1',
      port,
      cert: o.cert.certChainPem,
      key: o.cert.keyPem,
      ca: o.ca,
      ...(o.servername !== undefined ? { servername: o.servername } : {}),
      ...(o.session ? { session: o.session } : {}),
      ...(o.version ? { minVersion: o.version, maxVersion: o.version } : {}),
      // SPIFFE certificates carry no host name.
      checkServerIdentity: () => undefined,
    });
    s.setTimeout(5_000, () => s.destroy(new Error('timed out')));
    s.on('session', (b: Buffer) => (session = b));
    s.once('secureConnect', () => {
      reused = s.isSessionReused();
      serverSerial = s.getPeerCertificate().serialNumber ?? '';
      s.write(`GET ${o.path ?? '/'} HTTP/1.1\r\nhost: ${o.host ?? 'productpage'}\r\nconnection: close\r\n\r\n`);
    });
    s.on('data', (d: Buffer) => (data += d.toString('latin1')));
    s.on('error', (e: Error) => (error = e.message));
    s.on('close', () => {
      const m = /^HTTP\/1\.1 (\d{3})/.exec(data);
      resolve({ status: m ? Number(m[1]) : 0, error, reused, session, serverSerial });
    });
  });
}

/** `openssl s_client` sending one request; resolves with its output ("New," or "Reused," says which). */
function sClient(args: readonly string[]): Promise<string> {
  return new Promise((resolve) => {
    const child = spawn('openssl', ['s_client', '-ign_eof', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.stdin.end('GET / HTTP/1.1\r\nhost: productpage\r\nconnection: close\r\n\r\n');
    const timer = setTimeout(() => child.kill(), 10_000);
    child.on('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
}

/** A counter of the admin /stats page. */
async function stat(remora: InProcessRemora, name: string): Promise<number> {
  const body = (await request(remora.ports.admin, '/stats')).body;
  const line = body.split('\n').find((l) => l.startsWith(`${name}: `));
  if (line === undefined) throw new Error(`no ${name} in /stats:\n${body}`);
  return Number(line.slice(name.length + 2));
}

const xfccUri = (app: Backend): string | undefined => /;URI=([^;,]+)$/.exec(String(app.seen.at(-1)?.headers['x-forwarded-client-cert'] ?? ''))?.[1];

/** A sidecar in namespace default (service account productpage): STRICT, and only `allowed` principals pass. */
async function strictSidecar(t: Test, dir: string, identity: IssuedCertificate, allowed: string): Promise<{ remora: InProcessRemora; app: Backend }> {
  await writeWorkloadFiles(dir, identity);
  const app = await startBackend('productpage');
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: default, namespace: istio-system }\nspec: { mtls: { mode: STRICT } }\n',
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allowed-only, namespace: default }
spec:
  selector: { matchLabels: { app: productpage } }
  rules:
  - from: [{ source: { principals: ["${allowed}"] } }]
`,
    ),
  });
  const remora = await startRemora('sidecar', [mesh.dir], [
    '--app-port', String(app.port), '--labels', 'app=productpage', '--namespace', 'default', '--service-account', 'productpage', '--certs-dir', dir, '--log-level', 'warning',
  ]);
  t.teardown(async () => {
    await remora.stop();
    await app.close();
    mesh.cleanup();
  });
  return { remora, app };
}

function workDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'remora-resumption-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test('STRICT sidecar: sessions resume (TLS 1.2 and 1.3) and keep the verified identity', async (t) => {
  const work = workDir(t);
  const ca = await DevCa.create();
  const frontend = await ca.issueWorkload({ namespace: 'web', serviceAccount: 'frontend' });
  const cart = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart' });
  const { remora, app } = await strictSidecar(t, join(work, 'sidecar'), await ca.issueWorkload({ namespace: 'default', serviceAccount: 'productpage' }), 'cluster.local/ns/web/sa/frontend');
  const port = remora.ports.inbound;
  const prefix = `listener.127.0.0.1_${port}.ssl`;

  for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
    const first = await tlsGet(port, { cert: frontend, ca: ca.rootCertPem, version });
    t.same([first.status, first.reused], [200, false], `${version}: a full handshake (${first.error})`);
    t.ok(first.session, `${version}: the server issued a session`);
    const resumed = await tlsGet(port, { cert: frontend, ca: ca.rootCertPem, version, session: first.session });
    t.same([resumed.status, resumed.error], [200, ''], `${version}: the resumed connection is served`);
    t.ok(resumed.reused, `${version}: the session was resumed`);
    t.equal(xfccUri(app), 'spiffe://cluster.local/ns/web/sa/frontend', `${version}: x-forwarded-client-cert names the peer of the resumed session`);

    // A refused identity stays refused when it resumes: the principal comes from the session's certificate.
    const cartFirst = await tlsGet(port, { cert: cart, ca: ca.rootCertPem, version });
    t.equal(cartFirst.status, 403);
    const cartResumed = await tlsGet(port, { cert: cart, ca: ca.rootCertPem, version, session: cartFirst.session });
    t.same([cartResumed.status, cartResumed.reused], [403, true], `${version}: another principal, resumed, is still denied`);
  }
  t.equal(await stat(remora, `${prefix}.session_reused`), 4, 'ssl.session_reused counts the resumed handshakes');
  t.equal(await stat(remora, `${prefix}.handshake`), 8);
  t.equal(await stat(remora, `${prefix}.connection_error`), 0);

  // openssl s_client -sess_out, then -sess_in: the second connection resumes.
  const files = join(work, 'frontend');
  mkdirSync(files);
  writeFileSync(join(files, 'cert.pem'), frontend.certChainPem);
  writeFileSync(join(files, 'key.pem'), frontend.keyPem);
  writeFileSync(join(files, 'ca.pem'), ca.rootCertPem);
  for (const version of ['-tls1_2', '-tls1_3']) {
    const sess = join(work, `session${version}`);
    const base = ['-connect', `127.0.0.1:${port}`, version, '-cert', join(files, 'cert.pem'), '-key', join(files, 'key.pem'), '-CAfile', join(files, 'ca.pem')];
    const out1 = await sClient([...base, '-sess_out', sess]);
    t.match(out1, /^New, TLSv1\.[23]/m, `openssl ${version}: first connection`);
    t.match(out1, /HTTP\/1\.1 200/);
    const out2 = await sClient([...base, '-sess_in', sess]);
    t.match(out2, /^Reused, TLSv1\.[23]/m, `openssl ${version}: -sess_in resumes`);
    t.match(out2, /HTTP\/1\.1 200/);
    t.notMatch(out2, /alert/);
  }
});

t.test('a session does not resume under another trust: a CA rotation forces a full, verified handshake', async (t) => {
  const work = workDir(t);
  const oldCa = await DevCa.create();
  const newCa = await DevCa.create();
  const dir = join(work, 'sidecar');
  const { remora } = await strictSidecar(t, dir, await oldCa.issueWorkload({ namespace: 'default', serviceAccount: 'productpage' }), 'cluster.local/ns/web/sa/frontend');
  const port = remora.ports.inbound;
  const oldFrontend = await oldCa.issueWorkload({ namespace: 'web', serviceAccount: 'frontend' });
  const newFrontend = await newCa.issueWorkload({ namespace: 'web', serviceAccount: 'frontend' });

  const before = await tlsGet(port, { cert: oldFrontend, ca: oldCa.rootCertPem, version: 'TLSv1.3' });
  t.equal(before.status, 200);
  const check = await tlsGet(port, { cert: oldFrontend, ca: oldCa.rootCertPem, version: 'TLSv1.3', session: before.session });
  t.ok(check.reused, 'the session resumes while the trust is unchanged');

  // The mesh moves to a new root: the sidecar's certificate and roots are both replaced.
  const next = await newCa.issueWorkload({ namespace: 'default', serviceAccount: 'productpage' });
  await writeWorkloadFiles(dir, next);
  await waitFor('the new certificate in a new handshake', async () => (await tlsGet(port, { cert: newFrontend, ca: newCa.rootCertPem })).serverSerial === next.serial);

  const stale = await tlsGet(port, { cert: oldFrontend, ca: newCa.rootCertPem + oldCa.rootCertPem, version: 'TLSv1.3', session: before.session });
  t.equal(stale.reused, false, 'the old session is not resumed');
  t.not(stale.status, 200, 'a certificate of the old root is refused after the rotation');
  const fresh = await tlsGet(port, { cert: newFrontend, ca: newCa.rootCertPem, version: 'TLSv1.3', session: before.session });
  t.same([fresh.status, fresh.reused], [200, false], 'a peer of the new root gets a full handshake');
});

t.test('gateway MUTUAL servers: a session resumes on its own server only', async (t) => {
  const work = workDir(t);
  const caA = await DevCa.create();
  const caB = await DevCa.create();
  const creds = join(work, 'credentials');
  for (const [name, ca, host] of [['a-cert', caA, 'a.example.com'], ['b-cert', caB, 'b.example.com']] as const) {
    const server = await ca.issueServer({ dnsNames: [host] });
    mkdirSync(join(creds, name), { recursive: true });
    writeFileSync(join(creds, name, 'tls.crt'), server.certChainPem);
    writeFileSync(join(creds, name, 'tls.key'), server.keyPem);
    writeFileSync(join(creds, name, 'ca.crt'), ca.rootCertPem);
  }
  const web = await startBackend('web');
  t.teardown(() => web.close());
  const port = await freePort();
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: gw, namespace: default }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: ${port}, name: https-a, protocol: HTTPS }
    hosts: ["a.example.com"]
    tls: { mode: MUTUAL, credentialName: a-cert }
  - port: { number: ${port}, name: https-b, protocol: HTTPS }
    hosts: ["b.example.com"]
    tls: { mode: MUTUAL, credentialName: b-cert }
`,
      routeAll('gw', 'web.example.internal'),
      serviceEntry('web', 'web.example.internal', [{ port: web.port }]),
    ),
  });
  t.teardown(() => mesh.cleanup());
  const gw = await startRemora('gateway', [mesh.dir], ['--labels', 'istio=ingressgateway', '--credentials-dir', creds, '--log-level', 'warning']);
  t.teardown(() => gw.stop());
  const client = await caA.issueServer({ dnsNames: ['client.example.com'], clientAuth: true });
  const roots = caA.rootCertPem + caB.rootCertPem;

  const first = await tlsGet(port, { cert: client, ca: roots, servername: 'a.example.com', host: 'a.example.com', version: 'TLSv1.3' });
  t.equal(first.status, 200, first.error);
  const again = await tlsGet(port, { cert: client, ca: roots, servername: 'a.example.com', host: 'a.example.com', version: 'TLSv1.3', session: first.session });
  t.same([again.status, again.reused], [200, true], 'resumed on the server that issued it');
  const other = await tlsGet(port, { cert: client, ca: roots, servername: 'b.example.com', host: 'b.example.com', version: 'TLSv1.3', session: first.session });
  t.equal(other.reused, false, 'not resumed on a server that trusts other roots');
  t.not(other.status, 200, 'whose roots refuse the client certificate');
  t.equal(web.seen.length, 2);
});

t.test('gateway → STRICT sidecar under concurrency: no errors, upstream sessions resumed', async (t) => {
  const work = workDir(t);
  const ca = await DevCa.create();
  const gatewayId = 'cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account';
  const { remora: sidecar, app } = await strictSidecar(t, join(work, 'sidecar'), await ca.issueWorkload({ namespace: 'default', serviceAccount: 'productpage' }), gatewayId);
  const gwDir = join(work, 'gateway');
  await writeWorkloadFiles(gwDir, await ca.issueWorkload({ namespace: 'istio-system', serviceAccount: 'istio-ingressgateway-service-account' }));
  const gwPort = await freePort();
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: gw, namespace: default }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: ${gwPort}, name: http, protocol: HTTP }
    hosts: ["*"]
`,
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: productpage, namespace: default }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route: [{ destination: { host: productpage, port: { number: 9080 } } }]
`,
      // The sidecar's workload: auto mTLS by its label, as Istio marks pods with a sidecar.
      `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: productpage, namespace: default }
spec:
  hosts: ["productpage"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  endpoints:
  - address: 127.0.0.1
    ports: { http: ${sidecar.ports.inbound} }
    labels: { app: productpage, security.istio.io/tlsMode: istio }
    serviceAccount: productpage
`,
    ),
  });
  t.teardown(() => mesh.cleanup());
  const gw = await startRemora('gateway', [mesh.dir], ['--labels', 'istio=ingressgateway', '--certs-dir', gwDir, '--log-level', 'warning']);
  t.teardown(() => gw.stop());

  // One request first: the gateway's pool then holds a session for the sidecar.
  const warm = await request(gwPort, '/warm', { headers: { host: 'shop.example.com' } });
  t.equal(warm.status, 200, warm.body);

  const total = 600;
  const concurrency = 50;
  const pool = new Pool(`http://127.0.0.1:${gwPort}`, { connections: concurrency });
  t.teardown(() => pool.close());
  const statuses = new Map<number | string, number>();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < total) {
      next++;
      let key: number | string;
      try {
        const r = await pool.request({ path: '/load', method: 'GET', headers: { host: 'shop.example.com' }, headersTimeout: 10_000, bodyTimeout: 10_000 });
        await r.body.dump();
        key = r.statusCode;
      } catch (err) {
        key = (err as Error).message;
      }
      statuses.set(key, (statuses.get(key) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  t.same(Object.fromEntries(statuses), { 200: total }, `every request answered 200 (errors in the gateway log: ${gw.accessLog.filter((l) => !l.includes('" 200 ')).slice(0, 3).join(' | ')})`);
  const prefix = `listener.127.0.0.1_${sidecar.ports.inbound}.ssl`;
  const handshakes = await stat(sidecar, `${prefix}.handshake`);
  const reused = await stat(sidecar, `${prefix}.session_reused`);
  t.ok(handshakes > 1, `the gateway opened several upstream connections (${handshakes})`);
  t.ok(reused >= 1, `and resumed sessions on them (${reused} of ${handshakes})`);
  t.equal(await stat(sidecar, `${prefix}.connection_error`), 0, 'no failed handshake on the sidecar');
  t.equal(app.seen.length, total + 1, 'every request reached the app');
  t.ok(
    app.seen.every((s) => String(s.headers['x-forwarded-client-cert']).endsWith(`;URI=spiffe://${gatewayId}`)),
    'each with the gateway identity, resumed sessions included',
  );
});
