// DNS ServiceEntries resolve through the system resolver (getaddrinfo, so /etc/hosts counts),
// are re-resolved periodically, and keep their last good addresses when a name stops
// resolving. The proxy runs in a private mount namespace whose /etc/hosts is a file the test
// rewrites, so the machine's own /etc/hosts is never touched.
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { get, request } from './helpers/http.ts';
import { doc, gateway } from './helpers/mesh.ts';
import { collectLines, freePort, freePorts, sleep, waitFor } from './helpers/net.ts';
import { CLI, MeshDir } from './helpers/remora.ts';

const canIsolate = process.getuid?.() === 0 && existsSync('/usr/bin/unshare');

/** A backend on a given loopback address (127.0.0.1 and 127.0.0.2 are both on `lo`). */
async function backendOn(address: string, port: number, name: string): Promise<Backend> {
  const b = await startBackend(name);
  // startBackend binds 127.0.0.1:0; rebind where this test needs it.
  await new Promise<void>((r) => b.server.close(() => r()));
  await new Promise<void>((r) => b.server.listen(port, address, r));
  return { ...b, port };
}

t.test('DNS resolution, periodic re-resolution and last-good addresses', { skip: canIsolate ? false : 'needs root and unshare(1) for a private /etc/hosts' }, async (t) => {
  const svcPort = await freePort();
  const a = await backendOn('127.0.0.1', svcPort, 'first-address');
  const b = await backendOn('127.0.0.2', svcPort, 'second-address');
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  const gwPort = await freePort();
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', gwPort),
      `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: api }
spec:
  hosts: [api.dns-test.internal]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{ number: ${svcPort}, name: http, protocol: HTTP }]
`,
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: api }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route: [{ destination: { host: api.dns-test.internal } }]
    retries: { attempts: 0 }
`,
    ),
  });
  t.teardown(() => mesh.cleanup());
  const hosts = join(mesh.dir, 'hosts');
  // Rewritten in place (same inode), so the bind mount keeps showing the new contents.
  const setHosts = (line: string) => writeFileSync(hosts, `127.0.0.1 localhost\n${line}\n`);
  setHosts('127.0.0.1 api.dns-test.internal');

  const [admin, health] = await freePorts(2);
  // Two workers: the main thread resolves, as Envoy's does, and both follow each change at once
  // (workers resolving on their own timers would disagree on the address for a while, and one
  // could keep an old last-good address after the name stopped resolving).
  const args = [CLI, 'gateway', '-c', join(mesh.dir, 'mesh.yaml'), '--admin-port', String(admin), '--health-port', String(health), '--prometheus-port', '0', '--bind', '127.0.0.1', '--dns-refresh-rate', '1s', '--concurrency', '2'];
  const child = spawn(
    'unshare',
    ['--mount', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" /etc/hosts && exec "$@"', hosts, process.execPath, ...args],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const stderr: string[] = [];
  child.stderr.on('data', collectLines(stderr));
  child.stdout.resume();
  const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  t.teardown(async () => {
    if (child.exitCode === null) child.kill('SIGTERM');
    await exited;
  });
  await waitFor('remora ready', async () => (await request(admin!, '/ready')).status === 200, 15_000, { output: stderr });

  const who = async (): Promise<string> => {
    const r = await get(gwPort, '/', 'api.example');
    return r.status === 200 ? r.json<{ name: string }>().name : `status ${r.status}`;
  };
  t.equal(await who(), 'first-address', 'the name resolved at start (before the config went live)');

  setHosts('127.0.0.2 api.dns-test.internal');
  await waitFor('traffic to follow the new address', async () => (await who()) === 'second-address', 5_000);
  t.pass('re-resolved within the refresh period');
  const clusters = (await request(admin!, '/clusters')).body;
  t.match(clusters, `outbound|${svcPort}||api.dns-test.internal::127.0.0.2:${svcPort}::health_flags::healthy`);
  t.notMatch(clusters, `127.0.0.1:${svcPort}`, 'the old address is gone from the cluster');

  setHosts('# api.dns-test.internal no longer resolves');
  await waitFor('the lookup failure to be logged', () => stderr.some((l) => /DNS lookup of api\.dns-test\.internal failed: .*keeping 1 known address/.test(l)), 5_000, { output: stderr });
  await sleep(200);
  for (let i = 0; i < 5; i++) t.equal(await who(), 'second-address', 'last good address keeps serving');
});
