// The workload identity comes from Istio's credential files and follows them when they are
// rewritten: new handshakes present the new certificate while open connections carry on; a set
// that is half-written is waited for, a bad set (wrong key, expired, another root) is rejected
// with its reason and the previous identity keeps serving.
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer, type Server, type TLSSocket } from 'node:tls';
import t, { type Test } from 'tap';
import {
  DEFAULT_IDENTITY_DIRS,
  DevCa,
  IdentityStore,
  Logger,
  spiffeIdOf,
  writeWorkloadFiles,
  type IdentityStoreOptions,
  type IssuedCertificate,
  type WorkloadIdentity,
} from '@remora/proxy';

const HOUR = 3_600_000;
/** Quick timings so the tests are short; the retry window (20 × 50 ms) outlasts the gaps between writes below. */
const FAST: IdentityStoreOptions = { debounceMs: 30, retryMs: 50, retries: 20 };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

function tmp(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'remora-identity-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function logger(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: new Logger('secret', 'debug', (l) => lines.push(l.trimEnd())), lines };
}

async function open(t: Test, paths: Parameters<typeof IdentityStore.open>[0], log: Logger, opts: IdentityStoreOptions = FAST): Promise<IdentityStore> {
  const store = await IdentityStore.open(paths, log, opts);
  t.teardown(() => store.close());
  return store;
}

const ca = await DevCa.create();

t.test('loads a directory in Istio\'s layout', async (t) => {
  const dir = tmp(t);
  const issued = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart' });
  await writeWorkloadFiles(dir, issued);
  const { log, lines } = logger();
  const store = await open(t, { dir }, log);
  const id = store.current!;
  t.same(
    { ...id, notBefore: id.notBefore.getTime(), notAfter: id.notAfter.getTime() },
    {
      spiffeId: 'spiffe://cluster.local/ns/shop/sa/cart',
      principal: 'cluster.local/ns/shop/sa/cart',
      trustDomain: 'cluster.local',
      namespace: 'shop',
      serviceAccount: 'cart',
      certChainPem: issued.certChainPem,
      keyPem: issued.keyPem,
      rootsPem: ca.rootCertPem,
      serial: issued.serial,
      notBefore: issued.notBefore.getTime(),
      notAfter: issued.notAfter.getTime(),
    },
  );
  t.ok(store.secureContext, 'a secure context is built');
  t.match(lines.join('\n'), `[info][secret] workload identity spiffe://cluster.local/ns/shop/sa/cart (serial ${issued.serial}, valid until ${issued.notAfter.toISOString()}) from ${dir}`);
});

t.test('loads explicit paths, each in its own directory, with any names', async (t) => {
  const base = tmp(t);
  const issued = await ca.issueWorkload({ namespace: 'a', serviceAccount: 'b' });
  for (const d of ['c', 'k', 'r']) mkdirSync(join(base, d));
  const paths = { certChain: join(base, 'c/chain.crt'), key: join(base, 'k/private.key'), rootCert: join(base, 'r/roots.crt') };
  writeFileSync(paths.certChain, issued.certChainPem);
  writeFileSync(paths.key, issued.keyPem);
  writeFileSync(paths.rootCert, issued.rootCertPem);
  const { log } = logger();
  const store = await open(t, paths, log);
  t.equal(store.current?.spiffeId, 'spiffe://cluster.local/ns/a/sa/b');
  t.equal(store.current?.serial, issued.serial);

  // The key's directory is watched too.
  const next = await ca.issueWorkload({ namespace: 'a', serviceAccount: 'b' });
  writeFileSync(paths.certChain, next.certChainPem);
  writeFileSync(paths.key, next.keyPem);
  await waitFor('the rotated serial', () => store.current?.serial === next.serial);
  t.pass('rotated');
});

t.test('no identity files anywhere: current is null, and that is no error', async (t) => {
  const base = tmp(t);
  mkdirSync(join(base, 'empty'));
  const { log, lines } = logger();
  const store = await open(t, null, log, { ...FAST, defaultDirs: [join(base, 'absent'), join(base, 'empty')] });
  t.equal(store.current, null);
  t.equal(store.secureContext, null);
  t.equal(lines.filter((l) => l.includes('[error]')).length, 0);
  t.match(lines.join('\n'), /\[info\]\[secret\] no workload identity files \(looked in .*absent, .*empty\)/);

  // Files that appear later in a watched default directory are picked up.
  const changes: Array<WorkloadIdentity | null> = [];
  store.onChange((id) => changes.push(id));
  const issued = await ca.issueWorkload({ namespace: 'late', serviceAccount: 'x' });
  await writeWorkloadFiles(join(base, 'empty'), issued);
  await waitFor('the late identity', () => store.current !== null);
  t.equal(store.current?.serial, issued.serial);
  t.equal(changes.length, 1);
});

t.test("Istio's default directories, in order: the first with all three files wins", async (t) => {
  t.same(DEFAULT_IDENTITY_DIRS, ['./var/run/secrets/workload-spiffe-credentials', '/etc/certs']);
  const base = tmp(t);
  const first = join(base, 'var/run/secrets/workload-spiffe-credentials');
  const second = join(base, 'etc-certs');
  const a = await ca.issueWorkload({ namespace: 'one', serviceAccount: 'a' });
  const b = await ca.issueWorkload({ namespace: 'two', serviceAccount: 'b' });
  await writeWorkloadFiles(second, b);
  // The first directory holds only two of the three files: it is skipped.
  mkdirSync(first, { recursive: true });
  writeFileSync(join(first, 'cert-chain.pem'), a.certChainPem);
  writeFileSync(join(first, 'key.pem'), a.keyPem);
  const { log } = logger();
  const opts = { ...FAST, defaultDirs: ['./var/run/secrets/workload-spiffe-credentials', second] };
  const cwd = process.cwd();
  process.chdir(base); // the first default is relative to the working directory, as in Istio
  t.teardown(() => process.chdir(cwd));
  const s1 = await open(t, null, log, opts);
  t.equal(s1.current?.namespace, 'two');
  writeFileSync(join(first, 'root-cert.pem'), a.rootCertPem);
  const s2 = await open(t, null, log, opts);
  t.equal(s2.current?.namespace, 'one', 'complete now, so it comes first');
  // The real defaults resolve against the working directory too.
  const s3 = await open(t, null, log, { ...FAST });
  t.equal(s3.current?.serial, a.serial);
});

interface Tls {
  readonly server: Server;
  readonly port: number;
  /** SPIFFE IDs of the clients the server accepted. */
  readonly clients: string[];
}

/** A TLS echo server whose certificate comes from the store on every handshake (SNICallback), requiring mesh client certificates. */
async function echoServer(t: Test, store: IdentityStore): Promise<Tls> {
  const clients: string[] = [];
  const server = createServer(
    {
      SNICallback: (_name, cb) => cb(null, store.secureContext ?? undefined),
      requestCert: true,
      rejectUnauthorized: true,
    },
    (s) => {
      clients.push(spiffeIdOf(s.getPeerCertificate()) ?? '(none)');
      s.on('data', (d) => s.write(d));
      s.on('error', () => {});
    },
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return { server, port: (server.address() as { port: number }).port, clients };
}

/** A mesh client: its own workload certificate, the mesh root, SNI so the server's SNICallback runs. */
async function dial(port: number, client: IssuedCertificate): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = connect({
      port,
      host: '127.0.0.1',
      servername: 'cart.shop.svc.cluster.local',
      cert: client.certChainPem,
      key: client.keyPem,
      ca: client.rootCertPem,
      checkServerIdentity: () => undefined, // SPIFFE identity, not host names
    });
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
  });
}

async function echo(s: TLSSocket, msg: string): Promise<string> {
  return new Promise((resolve, reject) => {
    s.once('data', (d: Buffer) => resolve(d.toString()));
    s.once('error', reject);
    s.write(msg);
  });
}

t.test('rotation: new handshakes get the new serial, an open connection keeps working, onChange fires once', async (t) => {
  const dir = tmp(t);
  const first = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart' });
  await writeWorkloadFiles(dir, first);
  const { log, lines } = logger();
  const store = await open(t, { dir }, log);
  const changes: string[] = [];
  store.onChange((id) => changes.push(id!.serial));
  const tls = await echoServer(t, store);
  const client = await ca.issueWorkload({ namespace: 'web', serviceAccount: 'frontend' });

  const old = await dial(tls.port, client);
  t.teardown(() => old.destroy());
  t.equal(old.getPeerCertificate().serialNumber, first.serial);
  t.equal(await echo(old, 'before'), 'before');

  // Rotate the way a careless writer would: one file after another, with gaps, in place.
  const second = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart' });
  writeFileSync(join(dir, 'cert-chain.pem'), second.certChainPem);
  await sleep(200); // the new certificate with the old key: not consistent, so not served
  t.equal(store.current?.serial, first.serial, 'a half-written set is not loaded');
  writeFileSync(join(dir, 'key.pem'), second.keyPem);
  await waitFor('the new serial', () => store.current?.serial === second.serial);
  t.same(changes, [second.serial], 'listeners hear of the new identity once');
  t.equal(lines.filter((l) => l.includes('[error]')).length, 0, 'a half-written set is not an error');
  t.match(lines.join('\n'), `workload certificate rotated: spiffe://cluster.local/ns/shop/sa/cart, serial ${first.serial} → ${second.serial}`);

  const fresh = await dial(tls.port, client);
  t.teardown(() => fresh.destroy());
  t.equal(fresh.getPeerCertificate().serialNumber, second.serial, 'a new handshake presents the new certificate');
  t.equal(await echo(fresh, 'new'), 'new');
  t.equal(await echo(old, 'still here'), 'still here', 'the connection made before the rotation still works');
  t.equal(old.getPeerCertificate().serialNumber, first.serial);
  t.same(tls.clients, ['spiffe://cluster.local/ns/web/sa/frontend', 'spiffe://cluster.local/ns/web/sa/frontend'], 'the store\'s roots verify mesh clients');
});

t.test('the secure context works on the client side too (server reads the store\'s SPIFFE ID)', async (t) => {
  const dir = tmp(t);
  await writeWorkloadFiles(dir, await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart' }));
  const { log } = logger();
  const store = await open(t, { dir }, log);
  const serverCert = await ca.issueWorkload({ namespace: 'db', serviceAccount: 'postgres' });
  const seen: Array<string | null> = [];
  const server = createServer({ cert: serverCert.certChainPem, key: serverCert.keyPem, ca: ca.rootCertPem, requestCert: true, rejectUnauthorized: true }, (s) => {
    seen.push(spiffeIdOf(s.getPeerCertificate()));
    s.end('ok');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const port = (server.address() as { port: number }).port;
  const reply = await new Promise<{ data: string; serverId: string | null; authorized: boolean }>((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1', secureContext: store.secureContext!, checkServerIdentity: () => undefined });
    let data = '';
    let serverId: string | null = null;
    let authorized = false;
    s.on('secureConnect', () => {
      serverId = spiffeIdOf(s.getPeerCertificate());
      authorized = s.authorized;
    });
    s.on('data', (d: Buffer) => (data += d.toString()));
    s.on('end', () => resolve({ data, serverId, authorized }));
    s.on('error', reject);
  });
  t.same(reply, { data: 'ok', serverId: 'spiffe://cluster.local/ns/db/sa/postgres', authorized: true }, 'the store\'s roots verify the server');
  t.same(seen, ['spiffe://cluster.local/ns/shop/sa/cart']);
});

t.test('a key that does not match is rejected with the reason; the old identity stays', async (t) => {
  const dir = tmp(t);
  const first = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart' });
  await writeWorkloadFiles(dir, first);
  const { log, lines } = logger();
  const store = await open(t, { dir }, log, { debounceMs: 30, retryMs: 30, retries: 3 });
  const changes: unknown[] = [];
  store.onChange((id) => changes.push(id));
  const context = store.secureContext;
  const other = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart' });
  const stray = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart' });
  writeFileSync(join(dir, 'cert-chain.pem'), other.certChainPem);
  writeFileSync(join(dir, 'key.pem'), stray.keyPem);
  const expected = `[error][secret] rejected the workload identity files in ${dir}: the private key does not match the certificate (serial ${other.serial}); keeping serial ${first.serial}`;
  await waitFor('the rejection', () => lines.some((l) => l.endsWith(expected)));
  t.equal(store.current?.serial, first.serial);
  t.equal(store.secureContext, context, 'the same secure context keeps serving');
  t.same(changes, []);
});

t.test('an expired certificate is rejected, at start and on rotation', async (t) => {
  const now = Date.now();
  const expired = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart', notBefore: new Date(now - 2 * HOUR), notAfter: new Date(now - HOUR) });

  const startDir = tmp(t);
  await writeWorkloadFiles(startDir, expired);
  const start = logger();
  const opts = { debounceMs: 30, retryMs: 20, retries: 2 };
  const s1 = await open(t, { dir: startDir }, start.log, opts);
  t.equal(s1.current, null);
  t.match(start.lines.join('\n'), new RegExp(`\\[error\\]\\[secret\\] rejected the workload identity files in .*: certificate \\(serial ${expired.serial}\\) expired at ${expired.notAfter.toISOString().replace(/\./g, '\\.')}; no workload identity`));

  const dir = tmp(t);
  const good = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart' });
  await writeWorkloadFiles(dir, good);
  const { log, lines } = logger();
  const s2 = await open(t, { dir }, log, opts);
  await writeWorkloadFiles(dir, expired);
  await waitFor('the rejection', () => lines.some((l) => l.includes('[error]') && l.includes('expired at')));
  t.match(lines.join('\n'), `; keeping serial ${good.serial}`);
  t.equal(s2.current?.serial, good.serial);
});

t.test('a certificate from another root, and a chain through an intermediate', async (t) => {
  const dir = tmp(t);
  const good = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart' });
  await writeWorkloadFiles(dir, good);
  const { log, lines } = logger();
  const store = await open(t, { dir }, log, { debounceMs: 30, retryMs: 20, retries: 2 });
  const foreign = await (await DevCa.create()).issueWorkload({ namespace: 'shop', serviceAccount: 'cart' });
  writeFileSync(join(dir, 'cert-chain.pem'), foreign.certChainPem);
  writeFileSync(join(dir, 'key.pem'), foreign.keyPem);
  await waitFor('the rejection', () => lines.some((l) => l.includes('[error]')));
  t.match(lines.find((l) => l.includes('[error]')), `certificate (serial ${foreign.serial}, issuer "O=cluster.local, CN=Remora dev root CA") does not chain to the root certificates; keeping serial ${good.serial}`);
  t.equal(store.current?.serial, good.serial);

  const inter = await ca.createIntermediate();
  const chained = await inter.issueWorkload({ namespace: 'shop', serviceAccount: 'cart' });
  await writeWorkloadFiles(dir, chained);
  await waitFor('the chained identity', () => store.current?.serial === chained.serial);
  t.equal(store.current?.certChainPem, chained.certChainPem, 'leaf + intermediate');
});

t.test('Kubernetes secret volumes: a `..data` symlink swapped atomically is seen', async (t) => {
  const dir = tmp(t);
  const publish = async (name: string, issued: IssuedCertificate): Promise<void> => {
    await writeWorkloadFiles(join(dir, name), issued);
    symlinkSync(name, join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
  };
  const first = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart' });
  await publish('..2024_01', first);
  for (const f of ['cert-chain.pem', 'key.pem', 'root-cert.pem']) symlinkSync(join('..data', f), join(dir, f));
  const { log } = logger();
  const store = await open(t, { dir }, log);
  t.equal(store.current?.serial, first.serial);
  const second = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart' });
  await publish('..2024_02', second);
  await waitFor('the new serial', () => store.current?.serial === second.serial);
  t.equal(readFileSync(join(dir, 'cert-chain.pem'), 'utf8'), second.certChainPem);
});

t.test('unsubscribe and close: no more notices, no more reloads', async (t) => {
  const dir = tmp(t);
  await writeWorkloadFiles(dir, await ca.issueWorkload({ namespace: 'a', serviceAccount: 'b' }));
  const { log } = logger();
  const store = await open(t, { dir }, log);
  const a: string[] = [];
  const b: string[] = [];
  const unsubscribe = store.onChange((id) => a.push(id!.serial));
  store.onChange((id) => b.push(id!.serial));
  unsubscribe();
  const next = await ca.issueWorkload({ namespace: 'a', serviceAccount: 'b' });
  await writeWorkloadFiles(dir, next);
  await waitFor('the rotation', () => store.current?.serial === next.serial);
  t.same(a, []);
  t.same(b, [next.serial]);

  store.close();
  const after = await ca.issueWorkload({ namespace: 'a', serviceAccount: 'b' });
  await writeWorkloadFiles(dir, after);
  await sleep(300);
  t.equal(store.current?.serial, next.serial, 'a closed store does not reload');
  t.same(b, [next.serial]);
});
