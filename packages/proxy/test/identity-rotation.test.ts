// A workload certificate rotated on disk is served to the next handshake however the files
// are replaced — in place, renamed over, through Kubernetes' `..data` symlink swap, deleted
// and written again, or in a directory that is removed and made anew — every time, not once.
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer } from 'node:tls';
import t, { type Test } from 'tap';
import { DevCa, IdentityStore, Logger, type IssuedCertificate } from '@remora/proxy';

const ROUNDS = 20;
const FILES = ['cert-chain.pem', 'key.pem', 'root-cert.pem'] as const;
const ca = await DevCa.create();

const texts = (c: IssuedCertificate): Record<(typeof FILES)[number], string> => ({ 'cert-chain.pem': c.certChainPem, 'key.pem': c.keyPem, 'root-cert.pem': c.rootCertPem });

/** The serial a new handshake with a server built on the store's secure context presents. */
async function servedSerial(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1', servername: 'cart.shop', rejectUnauthorized: false }, () => {
      resolve(s.getPeerCertificate().serialNumber);
      s.destroy();
    });
    s.once('error', reject);
  });
}

async function setUp(t: Test, dir: string): Promise<{ store: IdentityStore; port: number; lines: string[] }> {
  const lines: string[] = [];
  const store = await IdentityStore.open({ dir }, new Logger('secret', 'debug', (l) => lines.push(l.trimEnd())), { debounceMs: 30, retryMs: 50, retries: 20 });
  t.teardown(() => store.close());
  const server = createServer({ SNICallback: (_n, cb) => cb(null, store.secureContext ?? undefined) }, (s) => s.end());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return { store, port: (server.address() as { port: number }).port, lines };
}

async function waitSerial(port: number, serial: string, timeoutMs = 5_000): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if ((await servedSerial(port).catch(() => '')) === serial) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

const KINDS: Record<string, (dir: string, next: IssuedCertificate, round: number) => void> = {
  'in place': (dir, next) => {
    for (const [f, text] of Object.entries(texts(next))) writeFileSync(join(dir, f), text);
  },
  rename: (dir, next) => {
    for (const [f, text] of Object.entries(texts(next))) {
      writeFileSync(join(dir, `.${f}.tmp`), text);
      renameSync(join(dir, `.${f}.tmp`), join(dir, f));
    }
  },
  'delete and recreate': (dir, next) => {
    for (const f of FILES) rmSync(join(dir, f));
    for (const [f, text] of Object.entries(texts(next))) writeFileSync(join(dir, f), text);
  },
  'symlink swap': (dir, next, round) => {
    // Kubernetes secret volume: cert-chain.pem -> ..data/cert-chain.pem, ..data -> ..gen_N.
    const gen = `..gen_${round}`;
    mkdirSync(join(dir, gen));
    for (const [f, text] of Object.entries(texts(next))) writeFileSync(join(dir, gen, f), text);
    symlinkSync(gen, join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
    rmSync(join(dir, `..gen_${round - 1}`), { recursive: true, force: true });
  },
  'new directory': (dir, next) => {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    for (const [f, text] of Object.entries(texts(next))) writeFileSync(join(dir, f), text);
  },
};

for (const [kind, replace] of Object.entries(KINDS)) {
  t.test(`${kind}, ${ROUNDS} times: each new handshake presents the new certificate`, async (t) => {
    const base = mkdtempSync(join(tmpdir(), 'remora-rotation-'));
    t.teardown(() => rmSync(base, { recursive: true, force: true }));
    const dir = join(base, 'certs');
    const first = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart' });
    if (kind === 'symlink swap') {
      mkdirSync(join(dir, '..gen_0'), { recursive: true });
      for (const [f, text] of Object.entries(texts(first))) writeFileSync(join(dir, '..gen_0', f), text);
      symlinkSync('..gen_0', join(dir, '..data'));
      for (const f of FILES) symlinkSync(join('..data', f), join(dir, f));
    } else if (kind !== 'new directory') {
      mkdirSync(dir);
      KINDS['in place']!(dir, first, 0);
    }
    // 'new directory' starts with no directory at all: the identity appears in round 1.
    const { store, port, lines } = await setUp(t, dir);
    if (kind !== 'new directory') t.equal(await servedSerial(port), first.serial, 'the first certificate is served');
    let rotated = 0;
    for (let round = 1; round <= ROUNDS; round++) {
      const next = await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart' });
      replace(dir, next, round);
      if (!(await waitSerial(port, next.serial))) break;
      rotated++;
    }
    t.equal(rotated, ROUNDS, `all ${ROUNDS} rotations served (current serial ${store.current?.serial ?? 'none'})`);
    const logged = lines.filter((l) => /workload certificate rotated|\] workload identity spiffe:/.test(l)).length;
    t.ok(logged >= rotated, `each rotation is logged (${logged})`);
    t.same(lines.filter((l) => l.includes('[error]')), [], 'no errors');
  });
}
