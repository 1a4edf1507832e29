// Hot reload follows a config file however it is replaced: written in place, renamed over (how
// editors save), swapped through Kubernetes' `..data` symlink (a mounted ConfigMap), deleted
// and written again, or added as a new file in a new directory — every time, not just once.
import { mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { request } from './helpers/http.ts';
import { gateway } from './helpers/mesh.ts';
import { freePort, waitFor } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

const ROUNDS = 20;

const answer = (name: string, host: string, body: string): string => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: ${name} }
spec:
  hosts: ["${host}"]
  gateways: [gw]
  http:
  - directResponse: { status: 200, body: { string: "${body}" } }
`;

async function served(port: number, host: string): Promise<string> {
  const r = await request(port, '/', { headers: { host } });
  return r.status === 200 ? r.body : `status ${r.status}`;
}

async function started(t: Test, paths: string[]): Promise<InProcessRemora> {
  const remora = await startRemora('gateway', paths);
  t.teardown(() => remora.stop());
  return remora;
}

const applied = (remora: InProcessRemora): number => remora.log.filter((l) => /\[info\]\[config\] config [0-9a-f]+ applied/.test(l)).length;

/** Runs `replace` ROUNDS times; each time the proxy must serve what was written, and log the reload. */
async function everyTime(t: Test, remora: InProcessRemora, port: number, kind: string, replace: (round: number) => { host: string; body: string }): Promise<void> {
  const before = applied(remora);
  let seen = 0;
  for (let round = 1; round <= ROUNDS; round++) {
    const want = replace(round);
    try {
      await waitFor(`${kind} #${round}`, async () => (await served(port, want.host)) === want.body, 5_000);
      seen++;
    } catch {
      break;
    }
  }
  t.equal(seen, ROUNDS, `${kind}: all ${ROUNDS} replacements applied`);
  t.ok(applied(remora) - before >= seen, `${kind}: each applied reload is logged`);
}

t.test('a directory of files: in place, rename, delete and recreate, new file in a new directory', async (t) => {
  const port = await freePort();
  const mesh = new MeshDir({ 'gateway.yaml': gateway('gw', port), 'routes.yaml': answer('app', 'app.example', 'start') });
  t.teardown(() => mesh.cleanup());
  const remora = await started(t, [mesh.dir]);
  t.equal(await served(port, 'app.example'), 'start');
  const routes = join(mesh.dir, 'routes.yaml');

  await everyTime(t, remora, port, 'in place', (n) => {
    writeFileSync(routes, answer('app', 'app.example', `in place ${n}`));
    return { host: 'app.example', body: `in place ${n}` };
  });
  await everyTime(t, remora, port, 'rename', (n) => {
    writeFileSync(`${routes}.tmp`, answer('app', 'app.example', `rename ${n}`));
    renameSync(`${routes}.tmp`, routes);
    return { host: 'app.example', body: `rename ${n}` };
  });
  await everyTime(t, remora, port, 'delete and recreate', (n) => {
    rmSync(routes);
    writeFileSync(routes, answer('app', 'app.example', `recreated ${n}`));
    return { host: 'app.example', body: `recreated ${n}` };
  });
  await everyTime(t, remora, port, 'new file', (n) => {
    rmSync(join(mesh.dir, `more-${n - 1}`), { recursive: true, force: true });
    mkdirSync(join(mesh.dir, `more-${n}`));
    writeFileSync(join(mesh.dir, `more-${n}`, 'extra.yaml'), answer(`extra-${n}`, `extra-${n}.example`, `new file ${n}`));
    return { host: `extra-${n}.example`, body: `new file ${n}` };
  });
  // After all that, an in-place write is still seen.
  writeFileSync(routes, answer('app', 'app.example', 'still watched'));
  await waitFor('a last in-place write', async () => (await served(port, 'app.example')) === 'still watched', 5_000);
});

/** A Kubernetes ConfigMap volume: files are symlinks into `..data`, which is swapped in one rename. */
class ConfigMapVolume {
  readonly dir: string;
  #generation = 0;
  constructor(dir: string, files: Record<string, string>) {
    this.dir = dir;
    this.publish(files);
    for (const name of Object.keys(files)) symlinkSync(join('..data', name), join(dir, name));
  }
  publish(files: Record<string, string>): void {
    const old = this.#generation === 0 ? null : join(this.dir, `..gen_${this.#generation}`);
    const next = `..gen_${++this.#generation}`;
    mkdirSync(join(this.dir, next));
    for (const [name, text] of Object.entries(files)) writeFileSync(join(this.dir, next, name), text);
    symlinkSync(next, join(this.dir, '..data_tmp'));
    renameSync(join(this.dir, '..data_tmp'), join(this.dir, '..data'));
    if (old !== null) rmSync(old, { recursive: true, force: true });
  }
}

t.test('a Kubernetes ConfigMap volume (`..data` swapped), given as a directory and as a file', async (t) => {
  const port = await freePort();
  const mesh = new MeshDir();
  t.teardown(() => mesh.cleanup());
  const volume = new ConfigMapVolume(mesh.dir, { 'gateway.yaml': gateway('gw', port), 'routes.yaml': answer('app', 'app.example', 'start') });
  const remora = await started(t, [mesh.dir]);
  t.equal(await served(port, 'app.example'), 'start');
  await everyTime(t, remora, port, 'symlink swap (directory)', (n) => {
    volume.publish({ 'gateway.yaml': gateway('gw', port), 'routes.yaml': answer('app', 'app.example', `swap ${n}`) });
    return { host: 'app.example', body: `swap ${n}` };
  });

  const port2 = await freePort();
  const mesh2 = new MeshDir();
  t.teardown(() => mesh2.cleanup());
  const one = (body: string) => `${gateway('gw', port2)}---\n${answer('app', 'app.example', body)}`;
  const volume2 = new ConfigMapVolume(mesh2.dir, { 'mesh.yaml': one('start') });
  const remora2 = await started(t, [join(mesh2.dir, 'mesh.yaml')]);
  t.equal(await served(port2, 'app.example'), 'start');
  await everyTime(t, remora2, port2, 'symlink swap (file)', (n) => {
    volume2.publish({ 'mesh.yaml': one(`file swap ${n}`) });
    return { host: 'app.example', body: `file swap ${n}` };
  });
});

t.test('a file named on its own: rename over it, then write in place, alternately', async (t) => {
  const port = await freePort();
  const mesh = new MeshDir({ 'mesh.yaml': `${gateway('gw', port)}---\n${answer('app', 'app.example', 'start')}` });
  t.teardown(() => mesh.cleanup());
  const file = join(mesh.dir, 'mesh.yaml');
  const remora = await started(t, [file]);
  await everyTime(t, remora, port, 'rename and in place (file)', (n) => {
    const text = `${gateway('gw', port)}---\n${answer('app', 'app.example', `file ${n}`)}`;
    if (n % 2 === 1) {
      writeFileSync(`${file}.swp`, text);
      renameSync(`${file}.swp`, file);
    } else writeFileSync(file, text);
    return { host: 'app.example', body: `file ${n}` };
  });
});
