// A Gateway's `credentialName` certificate rotated on disk is served to new handshakes however
// the files are replaced — in place, renamed over, through Kubernetes' `..data` symlink swap,
// deleted and written again, in a directory removed and made anew, or copied in with the old
// files' timestamps kept (a restore, `cp -p`, `rsync -a`) — every time, not once.
import { mkdirSync, mkdtempSync, renameSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import t from 'tap';
import { DevCa, type IssuedCertificate } from '@remora/proxy';
import { freePort, sleep } from './helpers/net.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';

const ROUNDS = 20;
const FILES = ['tls.crt', 'tls.key', 'ca.crt'] as const;
const texts = (c: IssuedCertificate): [string, string][] => [
  ['tls.crt', c.certChainPem],
  ['tls.key', c.keyPem],
  ['ca.crt', c.rootCertPem],
];

type Replace = (dir: string, next: IssuedCertificate, round: number) => void;
const KINDS: Record<string, Replace> = {
  'in-place': (dir, next) => {
    for (const [f, text] of texts(next)) writeFileSync(join(dir, f), text);
  },
  rename: (dir, next) => {
    for (const [f, text] of texts(next)) {
      writeFileSync(join(dir, `.${f}.tmp`), text);
      renameSync(join(dir, `.${f}.tmp`), join(dir, f));
    }
  },
  'delete-recreate': (dir, next) => {
    for (const f of FILES) rmSync(join(dir, f));
    for (const [f, text] of texts(next)) writeFileSync(join(dir, f), text);
  },
  'symlink-swap': (dir, next, round) => {
    const gen = `..gen_${round}`;
    mkdirSync(join(dir, gen));
    for (const [f, text] of texts(next)) writeFileSync(join(dir, gen, f), text);
    symlinkSync(gen, join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
    rmSync(join(dir, `..gen_${round - 1}`), { recursive: true, force: true });
  },
  'new-directory': (dir, next) => {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    for (const [f, text] of texts(next)) writeFileSync(join(dir, f), text);
  },
  'kept-times': (dir, next) => {
    for (const [f, text] of texts(next)) {
      const old = statSync(join(dir, f));
      writeFileSync(join(dir, `.${f}.tmp`), text);
      utimesSync(join(dir, `.${f}.tmp`), old.atime, old.mtime);
      renameSync(join(dir, `.${f}.tmp`), join(dir, f));
    }
  },
};

async function servedSerial(port: number, servername: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1', servername, rejectUnauthorized: false }, () => {
      resolve(s.getPeerCertificate().serialNumber);
      s.destroy();
    });
    s.once('error', () => resolve(''));
  });
}

t.test(`each kind of replacement, ${ROUNDS} times: new handshakes present the new certificate`, async (t) => {
  const ca = await DevCa.create();
  const creds = mkdtempSync(join(tmpdir(), 'remora-creds-'));
  t.teardown(() => rmSync(creds, { recursive: true, force: true }));
  const kinds = Object.keys(KINDS);
  const issue = (kind: string) => ca.issueServer({ dnsNames: [`${kind}.example.com`] });
  const current = new Map<string, IssuedCertificate>();
  for (const kind of kinds) {
    const first = await issue(kind);
    current.set(kind, first);
    const dir = join(creds, kind);
    if (kind === 'symlink-swap') {
      mkdirSync(join(dir, '..gen_0'), { recursive: true });
      for (const [f, text] of texts(first)) writeFileSync(join(dir, '..gen_0', f), text);
      symlinkSync('..gen_0', join(dir, '..data'));
      for (const f of FILES) symlinkSync(join('..data', f), join(dir, f));
    } else {
      mkdirSync(dir);
      KINDS['in-place']!(dir, first, 0);
    }
  }
  const port = await freePort();
  const servers = kinds
    .map((k) => `  - port: { number: ${port}, name: https-${k}, protocol: HTTPS }\n    hosts: ["${k}.example.com"]\n    tls: { mode: SIMPLE, credentialName: ${k} }`)
    .join('\n');
  const mesh = new MeshDir({
    'gateway.yaml': `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: gw }
spec:
  selector: { istio: ingressgateway }
  servers:
${servers}
`,
  });
  t.teardown(() => mesh.cleanup());
  const remora = await startRemora('gateway', [mesh.dir], ['--credentials-dir', creds]);
  t.teardown(() => remora.stop());
  for (const kind of kinds) t.equal(await servedSerial(port, `${kind}.example.com`), current.get(kind)!.serial, `${kind}: the first certificate`);

  const rotated = new Map(kinds.map((k) => [k, 0]));
  // Bounded: ROUNDS rounds, each waiting at most 5 s for every kind.
  for (let round = 1; round <= ROUNDS; round++) {
    for (const kind of kinds) {
      const next = await issue(kind);
      current.set(kind, next);
      KINDS[kind]!(join(creds, kind), next, round);
    }
    const deadline = Date.now() + 5_000;
    let pending = kinds.filter((k) => rotated.get(k) === round - 1);
    while (pending.length > 0 && Date.now() < deadline) {
      const served = await Promise.all(pending.map((k) => servedSerial(port, `${k}.example.com`)));
      pending = pending.filter((k, i) => {
        if (served[i] !== current.get(k)!.serial) return true;
        rotated.set(k, round);
        return false;
      });
      if (pending.length > 0) await sleep(50);
    }
  }
  for (const kind of kinds) t.equal(rotated.get(kind), ROUNDS, `${kind}: all ${ROUNDS} rotations served`);
  const reloaded = remora.log.filter((l) => l.includes('certificate reloaded')).length;
  t.ok(reloaded >= kinds.length * ROUNDS, `each rotation is logged (${reloaded})`);
});
