// The dev CA issues certificates shaped like istiod's (SPIFFE URI SAN, key usages, 24 h), that
// chain to its root by node's and by OpenSSL's reading; the certificate helpers read SANs,
// serials and validity and judge chains the way a TLS stack does.
import { execFileSync, spawnSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer, type TLSSocket } from 'node:tls';
import t, { type Test } from 'tap';
import {
  certificateInfo,
  DevCa,
  DevCaError,
  keyMatchesCertificate,
  parseCertificates,
  parseSpiffeId,
  parseSubjectAltNames,
  peerIdentityFromSpiffe,
  spiffeIdOf,
  splitPemCertificates,
  verifyCertificateChain,
  writeWorkloadFiles,
} from '@remora/proxy';

const HOUR = 3_600_000;

function tmp(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'remora-ca-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** `openssl verify`: exit status and output. */
function opensslVerify(rootFile: string, certFile: string, untrusted?: string): { ok: boolean; out: string } {
  const args = ['verify', '-CAfile', rootFile, ...(untrusted ? ['-untrusted', untrusted] : []), certFile];
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  return { ok: r.status === 0, out: `${r.stdout}${r.stderr}` };
}

function opensslText(pem: string): string {
  return execFileSync('openssl', ['x509', '-noout', '-text'], { input: pem, encoding: 'utf8' });
}

t.test('a root: self-signed EC P-256 CA for the trust domain, with the validity asked for', async (t) => {
  const before = Date.now();
  const ca = await DevCa.create({ trustDomain: 'example.org', days: 10 });
  const root = new X509Certificate(ca.rootCertPem);
  t.equal(root.ca, true, 'basicConstraints CA:TRUE');
  t.equal(root.checkIssued(root), true, 'self-issued');
  t.equal(root.verify(root.publicKey), true, 'self-signed');
  t.match(root.subject, /^O=example\.org$/m);
  t.equal(root.subjectAltName, 'URI:spiffe://example.org');
  t.equal(ca.trustDomain, 'example.org');
  const days = (new Date(root.validTo).getTime() - before) / 86_400_000;
  t.ok(days > 9.99 && days < 10.01, `valid 10 days (got ${days})`);
  t.equal(createPrivateKey(ca.keyPem).asymmetricKeyDetails?.namedCurve, 'prime256v1');
  t.equal(ca.certPem, ca.rootCertPem, 'a root signs with its own certificate');
  t.equal(ca.chainPem, '');
  const text = opensslText(ca.rootCertPem);
  t.match(text, /Key Usage: critical\s+Digital Signature, Certificate Sign, CRL Sign/);
  await t.rejects(DevCa.create({ trustDomain: 'Bad Domain!' }), DevCaError);
});

t.test('a workload certificate is shaped like istiod\'s', async (t) => {
  const ca = await DevCa.create();
  const before = Date.now();
  const issued = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart', dnsNames: ['cart.shop.svc'] });
  const cert = new X509Certificate(issued.certPem);
  t.equal(issued.spiffeId, 'spiffe://cluster.local/ns/shop/sa/cart');
  t.equal(cert.subjectAltName, 'URI:spiffe://cluster.local/ns/shop/sa/cart, DNS:cart.shop.svc');
  t.equal(cert.subject, undefined, 'empty subject, as Istio (node reads it as undefined)');
  t.equal(certificateInfo(cert).subject, '');
  t.equal(cert.ca, false);
  t.same(cert.keyUsage, ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2'], 'extKeyUsage serverAuth + clientAuth');
  const text = opensslText(issued.certPem);
  t.match(text, /X509v3 Key Usage: critical\s+Digital Signature, Key Encipherment/);
  t.match(text, /X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/cluster\.local\/ns\/shop\/sa\/cart, DNS:cart\.shop\.svc/);
  t.match(text, /X509v3 Basic Constraints: critical\s+CA:FALSE/);
  t.equal(issued.serial, cert.serialNumber.toUpperCase());
  t.match(issued.serial, /^[0-9A-F]{32}$/, '128-bit serial');
  const ttl = issued.notAfter.getTime() - before;
  t.ok(ttl > 24 * HOUR - 2_000 && ttl <= 24 * HOUR + 2_000, `24 h lifetime (got ${ttl / HOUR} h)`);
  t.ok(issued.notBefore.getTime() < before, 'valid from a little before now, for clock skew');
  t.equal(issued.certChainPem, issued.certPem, 'root-signed: the chain is the leaf alone');
  t.equal(issued.rootCertPem, ca.rootCertPem);
  t.equal(keyMatchesCertificate(issued.keyPem, cert), true);
  t.equal(verifyCertificateChain([cert], [new X509Certificate(ca.rootCertPem)]), null);

  const other = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart', ttlMs: 2 * HOUR });
  t.not(other.serial, issued.serial, 'a fresh random serial each time');
  t.equal(keyMatchesCertificate(issued.keyPem, new X509Certificate(other.certPem)), false, 'a fresh key each time');
  const ttl2 = other.notAfter.getTime() - Date.now();
  t.ok(ttl2 > 2 * HOUR - 5_000 && ttl2 <= 2 * HOUR, 'ttlMs sets the lifetime');

  await t.rejects(ca.issueWorkload({ namespace: 'a/b', serviceAccount: 'x' }), /not a valid namespace/);
  await t.rejects(ca.issueWorkload({ namespace: 'a', serviceAccount: 'x', ttlMs: 0 }), /lifetime must be positive/);
});

t.test('OpenSSL verifies the issued certificates against the root, and a foreign root does not', async (t) => {
  const dir = tmp(t);
  const ca = await DevCa.create();
  const issued = await ca.issueWorkload({ namespace: 'ns1', serviceAccount: 'sa1' });
  await writeWorkloadFiles(join(dir, 'w'), issued);
  const good = opensslVerify(join(dir, 'w/root-cert.pem'), join(dir, 'w/cert-chain.pem'));
  t.equal(good.ok, true, good.out);
  const foreign = await DevCa.create();
  writeFileSync(join(dir, 'foreign.pem'), foreign.rootCertPem);
  const bad = opensslVerify(join(dir, 'foreign.pem'), join(dir, 'w/cert-chain.pem'));
  t.equal(bad.ok, false);
  t.match(bad.out, /unable to get local issuer certificate/);
});

t.test('save and load: the files, their modes, the trust domain read back, --force', async (t) => {
  const dir = tmp(t);
  const ca = await DevCa.create({ trustDomain: 'mesh.test' });
  await ca.save(dir);
  t.equal(readFileSync(join(dir, 'root-cert.pem'), 'utf8'), ca.rootCertPem);
  t.equal(readFileSync(join(dir, 'root-key.pem'), 'utf8'), ca.keyPem);
  t.equal(statSync(join(dir, 'root-key.pem')).mode & 0o777, 0o600, 'key is 0600');
  t.equal(statSync(join(dir, 'root-cert.pem')).mode & 0o777, 0o644);

  const loaded = await DevCa.load(dir);
  t.equal(loaded.trustDomain, 'mesh.test');
  const issued = await loaded.issueWorkload({ namespace: 'a', serviceAccount: 'b' });
  t.equal(issued.spiffeId, 'spiffe://mesh.test/ns/a/sa/b');
  t.equal(verifyCertificateChain(parseCertificates(issued.certChainPem), parseCertificates(ca.rootCertPem)), null, 'the loaded CA signs for the same root');

  const again = await DevCa.create({ trustDomain: 'mesh.test' });
  await t.rejects(again.save(dir), /root-cert\.pem already exists; pass --force/);
  t.equal(readFileSync(join(dir, 'root-cert.pem'), 'utf8'), ca.rootCertPem, 'the old root is kept');
  await again.save(dir, true);
  t.equal(readFileSync(join(dir, 'root-cert.pem'), 'utf8'), again.rootCertPem, '--force replaces it');

  await t.rejects(DevCa.load(join(dir, 'missing')), /CA directory .*missing does not exist/);
  const empty = tmp(t);
  await t.rejects(DevCa.load(empty), /root-cert\.pem is missing/);
});

t.test('an intermediate CA: issued chains carry it, OpenSSL verifies them through it', async (t) => {
  const dir = tmp(t);
  const root = await DevCa.create();
  const inter = await root.createIntermediate();
  const interCert = new X509Certificate(inter.certPem);
  t.equal(interCert.ca, true);
  t.equal(interCert.checkIssued(new X509Certificate(root.rootCertPem)), true);
  const issued = await inter.issueWorkload({ namespace: 'x', serviceAccount: 'y' });
  const chain = splitPemCertificates(issued.certChainPem);
  t.equal(chain.length, 2, 'leaf + intermediate');
  t.equal(new X509Certificate(chain[1]!).fingerprint256, interCert.fingerprint256);
  t.equal(issued.rootCertPem, root.rootCertPem);
  await writeWorkloadFiles(dir, issued);
  const v = opensslVerify(join(dir, 'root-cert.pem'), join(dir, 'cert-chain.pem'), join(dir, 'cert-chain.pem'));
  t.equal(v.ok, true, v.out);
  const roots = parseCertificates(root.rootCertPem);
  t.equal(verifyCertificateChain(parseCertificates(issued.certChainPem), roots), null);
  t.match(verifyCertificateChain(parseCertificates(issued.certPem), roots), /does not chain to the root certificates/, 'not without the intermediate');
});

t.test("Istio's plugged-in CA layout (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem) loads", async (t) => {
  const dir = tmp(t);
  const root = await DevCa.create({ trustDomain: 'plug.in' });
  const inter = await root.createIntermediate();
  writeFileSync(join(dir, 'ca-cert.pem'), inter.certPem);
  writeFileSync(join(dir, 'ca-key.pem'), inter.keyPem);
  writeFileSync(join(dir, 'cert-chain.pem'), inter.certPem + root.rootCertPem);
  writeFileSync(join(dir, 'root-cert.pem'), root.rootCertPem);
  const ca = await DevCa.load(dir);
  t.equal(ca.trustDomain, 'plug.in');
  const issued = await ca.issueWorkload({ namespace: 'a', serviceAccount: 'b' });
  t.equal(splitPemCertificates(issued.certChainPem).length, 2, 'leaf + intermediate, the root left out');
  t.equal(verifyCertificateChain(parseCertificates(issued.certChainPem), parseCertificates(root.rootCertPem)), null);
});

t.test('an RSA root made by OpenSSL signs too (its O is the trust domain)', async (t) => {
  const dir = tmp(t);
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'root-key.pem'), '-out', join(dir, 'root-cert.pem'),
    '-days', '2', '-subj', '/O=rsa.example', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ], { stdio: 'ignore' });
  const ca = await DevCa.load(dir);
  t.equal(ca.trustDomain, 'rsa.example');
  const issued = await ca.issueWorkload({ namespace: 'n', serviceAccount: 's' });
  t.equal(issued.spiffeId, 'spiffe://rsa.example/ns/n/sa/s');
  writeFileSync(join(dir, 'leaf.pem'), issued.certPem);
  const v = opensslVerify(join(dir, 'root-cert.pem'), join(dir, 'leaf.pem'));
  t.equal(v.ok, true, v.out);
  t.match(opensslText(issued.certPem), /Signature Algorithm: sha256WithRSAEncryption/);
});

t.test('a server certificate: CN and SANs from --dns/--ip, serverAuth only unless asked', async (t) => {
  const ca = await DevCa.create();
  const issued = await ca.issueServer({ dnsNames: ['a.example.com', '*.b.example.com'], ipAddresses: ['127.0.0.1', '::1'] });
  const cert = new X509Certificate(issued.certPem);
  t.equal(cert.subject, 'CN=a.example.com');
  t.equal(cert.subjectAltName, 'DNS:a.example.com, DNS:*.b.example.com, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
  t.same(cert.keyUsage, ['1.3.6.1.5.5.7.3.1']);
  t.equal(issued.spiffeId, null);
  t.equal(cert.checkHost('a.example.com'), 'a.example.com');
  t.equal(cert.checkHost('x.b.example.com'), '*.b.example.com');
  t.equal(cert.checkIP('127.0.0.1'), '127.0.0.1');
  const ttl = issued.notAfter.getTime() - Date.now();
  t.ok(ttl > 364 * 24 * HOUR && ttl <= 365 * 24 * HOUR, 'a year by default');
  const both = await ca.issueServer({ dnsNames: ['c.example.com'], clientAuth: true });
  t.same(new X509Certificate(both.certPem).keyUsage, ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
  await t.rejects(ca.issueServer({ dnsNames: [] }), /at least one DNS name or IP address/);
  await t.rejects(ca.issueServer({ dnsNames: ['bad name'] }), /"bad name" is not a DNS name/);
  await t.rejects(ca.issueServer({ dnsNames: ['x.com'], ipAddresses: ['300.1.1.1'] }), /"300\.1\.1\.1" is not an IP address/);
});

t.test('a real mTLS handshake: each side reads the other\'s SPIFFE ID; a foreign client is refused', async (t) => {
  const ca = await DevCa.create();
  const server = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'server' });
  const client = await ca.issueWorkload({ namespace: 'web', serviceAccount: 'frontend' });
  const seen: Array<string | null> = [];
  const srv = createServer({ cert: server.certChainPem, key: server.keyPem, ca: ca.rootCertPem, requestCert: true, rejectUnauthorized: true }, (s) => {
    seen.push(spiffeIdOf(s.getPeerCertificate()));
    s.end('hello');
  });
  const refusals: string[] = [];
  srv.on('tlsClientError', (err: NodeJS.ErrnoException) => refusals.push(`${err.code}: ${err.message}`));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => srv.close());
  const port = (srv.address() as { port: number }).port;
  // Resolves when the connection closes, with what was received and the error if any (under
  // TLS 1.3 the client learns that the server refused its certificate only after its handshake ends).
  const dial = (cert: string, key: string): Promise<{ socket: TLSSocket; serverId: string | null; data: string; error: Error | null }> =>
    new Promise((resolve) => {
      const s = connect({ port, host: '127.0.0.1', cert, key, ca: ca.rootCertPem, checkServerIdentity: () => undefined });
      let data = '';
      let error: Error | null = null;
      let serverId: string | null = null;
      s.on('secureConnect', () => (serverId = spiffeIdOf(s.getPeerCertificate())));
      s.on('data', (c: Buffer) => (data += c.toString()));
      s.on('error', (err) => (error = err));
      s.on('close', () => resolve({ socket: s, serverId, data, error }));
    });
  const ok = await dial(client.certChainPem, client.keyPem);
  t.equal(ok.error, null);
  t.same(refusals, [], 'a mesh client is not refused');
  t.equal(ok.data, 'hello');
  t.equal(ok.socket.authorized, true);
  t.equal(ok.serverId, 'spiffe://cluster.local/ns/shop/sa/server');
  t.same(seen, ['spiffe://cluster.local/ns/web/sa/frontend']);

  const foreign = await (await DevCa.create()).issueWorkload({ namespace: 'web', serviceAccount: 'frontend' });
  const refused = await dial(foreign.certChainPem, foreign.keyPem);
  t.equal(refused.data, '');
  // node's server checks the client certificate after the TLS 1.3 handshake and drops the connection.
  t.equal(refusals.length, 1, 'the server refused one handshake');
  t.same(seen, ['spiffe://cluster.local/ns/web/sa/frontend'], 'the foreign client never reached the handler');
});

t.test('helpers: SAN parsing, SPIFFE IDs, peer identity', async (t) => {
  t.same(parseSubjectAltNames('URI:spiffe://td/ns/a/sa/b, DNS:x.y, IP Address:10.0.0.1'), [
    { type: 'URI', value: 'spiffe://td/ns/a/sa/b' },
    { type: 'DNS', value: 'x.y' },
    { type: 'IP Address', value: '10.0.0.1' },
  ]);
  t.same(parseSubjectAltNames('DNS:"a, b", URI:spiffe://td/x'), [
    { type: 'DNS', value: 'a, b' },
    { type: 'URI', value: 'spiffe://td/x' },
  ], 'node quotes values with commas');
  t.same(parseSubjectAltNames(undefined), []);
  t.same(parseSpiffeId('spiffe://cluster.local/ns/shop/sa/cart'), { trustDomain: 'cluster.local', path: '/ns/shop/sa/cart', namespace: 'shop', serviceAccount: 'cart' });
  t.same(parseSpiffeId('spiffe://example.org/web'), { trustDomain: 'example.org', path: '/web', namespace: '', serviceAccount: '' });
  t.equal(parseSpiffeId('https://example.org/ns/a/sa/b'), null);
  t.equal(parseSpiffeId('spiffe:///ns/a/sa/b'), null);
  t.same(peerIdentityFromSpiffe('spiffe://cluster.local/ns/x/sa/y'), { principal: 'cluster.local/ns/x/sa/y', namespace: 'x' });
  t.same(peerIdentityFromSpiffe('spiffe://example.org/web'), { principal: 'example.org/web', namespace: '' });
  t.equal(peerIdentityFromSpiffe('cluster.local/ns/x/sa/y'), null);
  // A TLS peer certificate as node gives it (getPeerCertificate() is {} without one).
  t.equal(spiffeIdOf({ subjectaltname: 'DNS:a, URI:spiffe://td/ns/a/sa/b' } as never), 'spiffe://td/ns/a/sa/b');
  t.equal(spiffeIdOf({} as never), null);
  t.equal(spiffeIdOf(null), null, 'getPeerCertificate() of a closed socket');
  t.equal(spiffeIdOf({ subjectaltname: 'URI:https://x' } as never), null);
});

t.test('chain checks: expired, not yet valid, another root, and certificateInfo', async (t) => {
  const ca = await DevCa.create({ trustDomain: 'td.test' });
  const roots = parseCertificates(ca.rootCertPem);
  const now = Date.now();
  const expired = await ca.issueWorkload({ namespace: 'a', serviceAccount: 'b', notBefore: new Date(now - 2 * HOUR), notAfter: new Date(now - HOUR) });
  t.match(verifyCertificateChain(parseCertificates(expired.certPem), roots), new RegExp(`certificate \\(serial ${expired.serial}\\) expired at `));
  const future = await ca.issueWorkload({ namespace: 'a', serviceAccount: 'b', notBefore: new Date(now + HOUR) });
  t.match(verifyCertificateChain(parseCertificates(future.certPem), roots), /is not valid before/);
  const good = await ca.issueWorkload({ namespace: 'a', serviceAccount: 'b' });
  t.equal(verifyCertificateChain(parseCertificates(good.certPem), roots, new Date(now)), null);
  t.match(verifyCertificateChain(parseCertificates(good.certPem), roots, new Date(now + 25 * HOUR)), /expired at/, 'the clock is a parameter');
  const other = await DevCa.create();
  t.match(verifyCertificateChain(parseCertificates(good.certPem), parseCertificates(other.rootCertPem)), /does not chain to the root certificates/);
  t.equal(verifyCertificateChain([], roots), 'no certificate');
  t.equal(verifyCertificateChain(parseCertificates(good.certPem), []), 'no root certificate');

  const info = certificateInfo(good.certPem);
  t.equal(info.serial, good.serial);
  t.same(info.spiffeIds, ['spiffe://td.test/ns/a/sa/b']);
  t.same(info.dnsNames, []);
  t.equal(info.isCa, false);
  t.equal(info.notAfter.getTime(), good.notAfter.getTime());
});
