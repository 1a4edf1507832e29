// `remora ca`, run as users run it: a root, SPIFFE workload certificates in Istio's file layout
// and server certificates in Kubernetes TLS secret names — checked by OpenSSL and used in real
// TLS handshakes. Also its help and its errors.
import { execFileSync, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer, type TLSSocket } from 'node:tls';
import t, { type Test } from 'tap';
import { spiffeIdOf } from '@remora/proxy';
import { opensslAsync } from './helpers/openssl.ts';
import { CLI, runCli } from './helpers/remora.ts';

const HOUR = 3_600_000;

function tmp(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'remora-ca-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function openssl(args: string[], input?: string): { code: number | null; out: string } {
  const r = spawnSync('openssl', args, { encoding: 'utf8', ...(input !== undefined ? { input } : {}) });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

const read = (p: string): string => readFileSync(p, 'utf8');

/** One TLS connection: what each side saw. */
interface Handshake {
  readonly error: string | null;
  readonly serverId: string | null;
  readonly authorized: boolean;
  readonly reply: string;
}

async function mtlsServer(t: Test, opts: { cert: string; key: string; ca: string }): Promise<{ port: number; clients: Array<string | null>; refused: () => number }> {
  const clients: Array<string | null> = [];
  let refused = 0;
  const server = createServer({ ...opts, requestCert: true, rejectUnauthorized: true }, (s) => {
    clients.push(spiffeIdOf(s.getPeerCertificate()));
    s.end(`hello ${spiffeIdOf(s.getPeerCertificate())}`);
  });
  server.on('tlsClientError', () => refused++);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  return { port: (server.address() as { port: number }).port, clients, refused: () => refused };
}

function handshake(port: number, opts: { cert?: string; key?: string; ca: string; servername?: string; checkSpiffeOnly?: boolean }): Promise<Handshake> {
  return new Promise((resolve) => {
    const s: TLSSocket = connect({
      port,
      host: '127.0.0.1',
      ca: opts.ca,
      ...(opts.cert !== undefined && opts.key !== undefined ? { cert: opts.cert, key: opts.key } : {}),
      ...(opts.servername !== undefined ? { servername: opts.servername } : {}),
      ...(opts.checkSpiffeOnly ? { checkServerIdentity: () => undefined } : {}),
    });
    let error: string | null = null;
    let serverId: string | null = null;
    let authorized = false;
    let reply = '';
    s.on('secureConnect', () => {
      serverId = spiffeIdOf(s.getPeerCertificate());
      authorized = s.authorized;
    });
    s.on('data', (d: Buffer) => (reply += d.toString()));
    s.on('error', (err) => (error = err.message));
    s.on('close', () => resolve({ error, serverId, authorized, reply }));
  });
}

t.test('init, issue, issue-server: files, modes, OpenSSL checks', async (t) => {
  const base = tmp(t);
  const caDir = join(base, 'ca');
  const init = await runCli(['ca', 'init', '--dir', caDir, '--trust-domain', 'example.org', '--days', '30']);
  t.equal(init.code, 0, init.stderr);
  t.match(init.stdout, /^created a root CA for trust domain example\.org \(serial [0-9A-F]+, valid until /);
  t.same(readdirSync(caDir).sort(), ['root-cert.pem', 'root-key.pem']);
  t.equal(statSync(join(caDir, 'root-key.pem')).mode & 0o777, 0o600, 'the key is 0600');
  const rootText = openssl(['x509', '-noout', '-text', '-in', join(caDir, 'root-cert.pem')]).out;
  t.match(rootText, /Subject: O = example\.org, CN = Remora dev root CA/);
  t.match(rootText, /Basic Constraints: critical\s+CA:TRUE/);
  t.match(rootText, /ASN1 OID: prime256v1/);
  const rootDays = (new Date(new X509Certificate(read(join(caDir, 'root-cert.pem'))).validTo).getTime() - Date.now()) / 86_400_000;
  t.ok(rootDays > 29.9 && rootDays <= 30, `--days 30 (got ${rootDays})`);

  // issue: Istio's layout, the SPIFFE SAN, Istio's key usages, 24 h.
  const wDir = join(base, 'cart');
  const issue = await runCli(['ca', 'issue', '--dir', caDir, '--namespace', 'shop', '--service-account', 'cart', '--out', wDir, '--dns', 'cart.shop.svc,cart', '--dns', 'cart.shop']);
  t.equal(issue.code, 0, issue.stderr);
  t.match(issue.stdout, /^issued spiffe:\/\/example\.org\/ns\/shop\/sa\/cart \(serial [0-9A-F]{32}, valid until /);
  t.same(readdirSync(wDir).sort(), ['cert-chain.pem', 'key.pem', 'root-cert.pem']);
  t.equal(statSync(join(wDir, 'key.pem')).mode & 0o777, 0o600);
  t.equal(read(join(wDir, 'root-cert.pem')), read(join(caDir, 'root-cert.pem')));
  const verify = openssl(['verify', '-CAfile', join(caDir, 'root-cert.pem'), join(wDir, 'cert-chain.pem')]);
  t.equal(verify.code, 0, verify.out);
  t.match(verify.out, /cert-chain\.pem: OK/);
  const text = openssl(['x509', '-noout', '-text', '-in', join(wDir, 'cert-chain.pem')]).out;
  t.match(text, /X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/example\.org\/ns\/shop\/sa\/cart, DNS:cart\.shop\.svc, DNS:cart, DNS:cart\.shop\n/);
  t.match(text, /X509v3 Key Usage: critical\s+Digital Signature, Key Encipherment/);
  t.match(text, /X509v3 Extended Key Usage: \s+TLS Web Server Authentication, TLS Web Client Authentication/);
  const keyCheck = openssl(['pkey', '-in', join(wDir, 'key.pem'), '-pubout']);
  t.equal(keyCheck.out, openssl(['x509', '-noout', '-pubkey', '-in', join(wDir, 'cert-chain.pem')]).out, 'key.pem is the certificate\'s key');
  const leaf = new X509Certificate(read(join(wDir, 'cert-chain.pem')));
  const ttl = new Date(leaf.validTo).getTime() - Date.now();
  t.ok(ttl > 24 * HOUR - 60_000 && ttl <= 24 * HOUR, `24 h by default (got ${ttl / HOUR} h)`);

  const short = await runCli(['ca', 'issue', '--dir', caDir, '--namespace', 'shop', '--service-account', 'cart', '--out', join(base, 'short'), '--ttl', '90m']);
  t.equal(short.code, 0, short.stderr);
  const shortLeaf = new X509Certificate(read(join(base, 'short/cert-chain.pem')));
  const shortTtl = new Date(shortLeaf.validTo).getTime() - Date.now();
  t.ok(shortTtl > 89 * 60_000 && shortTtl <= 90 * 60_000, `--ttl 90m (got ${shortTtl / 60_000} min)`);
  t.not(shortLeaf.serialNumber, leaf.serialNumber, 'serials are random');

  // issue-server: Kubernetes TLS secret names.
  const sDir = join(base, 'gw');
  const server = await runCli(['ca', 'issue-server', '--dir', caDir, '--out', sDir, '--dns', 'a.example.com,b.example.com', '--ip', '127.0.0.1']);
  t.equal(server.code, 0, server.stderr);
  t.match(server.stdout, /^issued a server certificate for a\.example\.com, b\.example\.com, 127\.0\.0\.1 \(serial /);
  t.same(readdirSync(sDir).sort(), ['ca.crt', 'tls.crt', 'tls.key']);
  t.equal(statSync(join(sDir, 'tls.key')).mode & 0o777, 0o600);
  const sVerify = openssl(['verify', '-CAfile', join(sDir, 'ca.crt'), join(sDir, 'tls.crt')]);
  t.equal(sVerify.code, 0, sVerify.out);
  const sText = openssl(['x509', '-noout', '-text', '-in', join(sDir, 'tls.crt')]).out;
  t.match(sText, /Subject: CN = a\.example\.com/);
  t.match(sText, /X509v3 Subject Alternative Name: \s+DNS:a\.example\.com, DNS:b\.example\.com, IP Address:127\.0\.0\.1/);
  t.match(sText, /X509v3 Extended Key Usage: \s+TLS Web Server Authentication\n/);
});

t.test('the issued certificates work in real handshakes', async (t) => {
  const base = tmp(t);
  const caDir = join(base, 'ca');
  t.equal((await runCli(['ca', 'init', '--dir', caDir])).code, 0);
  for (const [ns, sa] of [['shop', 'cart'], ['web', 'frontend']] as const) {
    const r = await runCli(['ca', 'issue', '--dir', caDir, '--namespace', ns, '--service-account', sa, '--out', join(base, sa)]);
    t.equal(r.code, 0, r.stderr);
  }
  const files = (sa: string) => ({ cert: read(join(base, sa, 'cert-chain.pem')), key: read(join(base, sa, 'key.pem')), ca: read(join(base, sa, 'root-cert.pem')) });

  // mTLS: the server reads the client's SPIFFE ID, the client the server's.
  const srv = await mtlsServer(t, files('cart'));
  const ok = await handshake(srv.port, { ...files('frontend'), checkSpiffeOnly: true });
  t.same(ok, { error: null, serverId: 'spiffe://cluster.local/ns/shop/sa/cart', authorized: true, reply: 'hello spiffe://cluster.local/ns/web/sa/frontend' });
  t.same(srv.clients, ['spiffe://cluster.local/ns/web/sa/frontend']);

  // A client without a certificate, and one from another CA, are refused.
  const none = await handshake(srv.port, { ca: files('cart').ca, checkSpiffeOnly: true });
  t.equal(none.reply, '');
  const otherCa = join(base, 'other-ca');
  t.equal((await runCli(['ca', 'init', '--dir', otherCa])).code, 0);
  t.equal((await runCli(['ca', 'issue', '--dir', otherCa, '--namespace', 'web', '--service-account', 'frontend', '--out', join(base, 'intruder')])).code, 0);
  const intruder = await handshake(srv.port, { ...files('intruder'), ca: files('cart').ca, checkSpiffeOnly: true });
  t.equal(intruder.reply, '');
  t.equal(srv.refused(), 2, 'both refused by the server');
  t.same(srv.clients, ['spiffe://cluster.local/ns/web/sa/frontend'], 'neither reached the handler');

  // A server certificate: host-name verification passes for its names, fails for others.
  const sDir = join(base, 'gw');
  t.equal((await runCli(['ca', 'issue-server', '--dir', caDir, '--out', sDir, '--dns', 'a.example.com', '--dns', 'b.example.com'])).code, 0);
  const server = createServer({ cert: read(join(sDir, 'tls.crt')), key: read(join(sDir, 'tls.key')) }, (s) => s.end('gw'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const gwPort = (server.address() as { port: number }).port;
  const ca = read(join(sDir, 'ca.crt'));
  t.same(await handshake(gwPort, { ca, servername: 'b.example.com' }), { error: null, serverId: null, authorized: true, reply: 'gw' });
  const wrong = await handshake(gwPort, { ca, servername: 'c.example.com' });
  t.match(wrong.error, /Hostname\/IP does not match certificate's altnames: Host: c\.example\.com/);
  t.equal(wrong.reply, '');

  // openssl s_client agrees.
  const sc = await opensslAsync(['s_client', '-connect', `127.0.0.1:${gwPort}`, '-servername', 'a.example.com', '-CAfile', join(sDir, 'ca.crt'), '-verify_hostname', 'a.example.com', '-verify_return_error']);
  t.match(sc.out, /Verify return code: 0 \(ok\)/);
});

t.test('init refuses to replace a root unless --force', async (t) => {
  const caDir = join(tmp(t), 'ca');
  t.equal((await runCli(['ca', 'init', '--dir', caDir])).code, 0);
  const before = read(join(caDir, 'root-cert.pem'));
  const again = await runCli(['ca', 'init', '--dir', caDir]);
  t.equal(again.code, 1);
  t.match(again.stderr, `remora ca init: ${join(caDir, 'root-cert.pem')} already exists; pass --force to replace the CA`);
  t.equal(read(join(caDir, 'root-cert.pem')), before, 'untouched');
  const forced = await runCli(['ca', 'init', '--dir', caDir, '--force']);
  t.equal(forced.code, 0, forced.stderr);
  t.not(read(join(caDir, 'root-cert.pem')), before, 'replaced');
});

t.test('issue writes to the default identity directory when --out is not given', async (t) => {
  const base = tmp(t);
  const caDir = join(base, 'ca');
  t.equal((await runCli(['ca', 'init', '--dir', caDir])).code, 0);
  const r = spawnSync(process.execPath, [CLI, 'ca', 'issue', '--dir', caDir, '--namespace', 'a', '--service-account', 'b'], { cwd: base, encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  t.ok(existsSync(join(base, 'var/run/secrets/workload-spiffe-credentials/cert-chain.pem')));
  t.match(execFileSync('openssl', ['x509', '-noout', '-ext', 'subjectAltName', '-in', join(base, 'var/run/secrets/workload-spiffe-credentials/cert-chain.pem')], { encoding: 'utf8' }), 'URI:spiffe://cluster.local/ns/a/sa/b');
});

t.test('help and errors', async (t) => {
  const top = await runCli(['--help']);
  t.match(top.stdout, /\n {2}ca {9}a small dev CA/);
  const ca = await runCli(['ca', '--help']);
  t.equal(ca.code, 0);
  t.match(ca.stdout, /usage: remora ca <init\|issue\|issue-server>/);
  for (const sub of ['init', 'issue', 'issue-server']) {
    const h = await runCli(['ca', sub, '--help']);
    t.equal(h.code, 0, `${sub} --help`);
    t.match(h.stdout, `usage: remora ca ${sub} --dir DIR`);
  }
  const none = await runCli(['ca']);
  t.equal(none.code, 2);
  const unknown = await runCli(['ca', 'sign']);
  t.equal(unknown.code, 2);
  t.match(unknown.stderr, 'remora ca: unknown subcommand "sign"');

  const base = tmp(t);
  const missing = await runCli(['ca', 'issue', '--dir', join(base, 'nope'), '--namespace', 'a', '--service-account', 'b', '--out', join(base, 'o')]);
  t.equal(missing.code, 1);
  t.equal(missing.stderr, `remora ca issue: CA directory ${join(base, 'nope')} does not exist (create one with: remora ca init --dir ${join(base, 'nope')})\n`);
  t.notOk(existsSync(join(base, 'o')), 'nothing written');

  const caDir = join(base, 'ca');
  t.equal((await runCli(['ca', 'init', '--dir', caDir])).code, 0);
  const badTtl = await runCli(['ca', 'issue', '--dir', caDir, '--namespace', 'a', '--service-account', 'b', '--ttl', 'soon']);
  t.equal(badTtl.code, 2);
  t.match(badTtl.stderr, /^remora ca issue: --ttl must be a positive duration like 24h, 90m or 7d, got "soon"\n\nusage: remora ca issue/);
  const noNs = await runCli(['ca', 'issue', '--dir', caDir, '--service-account', 'b']);
  t.equal(noNs.code, 2);
  t.match(noNs.stderr, 'remora ca issue: --namespace is required');
  const noDir = await runCli(['ca', 'init']);
  t.equal(noDir.code, 2);
  t.match(noDir.stderr, 'remora ca init: --dir is required');
  const badDays = await runCli(['ca', 'init', '--dir', join(base, 'x'), '--days', '-3']);
  t.equal(badDays.code, 2);
  const unknownFlag = await runCli(['ca', 'issue', '--dir', caDir, '--bogus']);
  t.equal(unknownFlag.code, 2);
  t.match(unknownFlag.stderr, /Unknown option '--bogus'/);
  const noNames = await runCli(['ca', 'issue-server', '--dir', caDir, '--out', join(base, 's')]);
  t.equal(noNames.code, 2);
  t.match(noNames.stderr, 'remora ca issue-server: --dns (or --ip) is required');
  const badIp = await runCli(['ca', 'issue-server', '--dir', caDir, '--out', join(base, 's'), '--ip', '1.2.3']);
  t.equal(badIp.code, 1);
  t.match(badIp.stderr, 'remora ca issue-server: "1.2.3" is not an IP address');
  const badNs = await runCli(['ca', 'issue', '--dir', caDir, '--namespace', 'a b', '--service-account', 'x', '--out', join(base, 'w')]);
  t.equal(badNs.code, 1);
  t.match(badNs.stderr, '"a b" is not a valid namespace');
});
