// Chaos: an upstream process is killed (SIGKILL) and restarted under a bounded load loop.
// With retries on connect failures and resets, clients see no failure; without retries the
// failures they see carry Envoy's flags (UF for refused connections, UC for cut ones).
import { spawn, type ChildProcess } from 'node:child_process';
import { Agent } from 'node:http';
import t from 'tap';
import { request } from './helpers/http.ts';
import { doc, gateway } from './helpers/mesh.ts';
import { freePorts, sleep, waitFor } from './helpers/net.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';

const SERVER = `
const http = require('node:http');
const [port, name] = process.argv.slice(1);
http.createServer((req, res) => {
  // A little work, so requests are in flight when the process dies.
  setTimeout(() => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end(name); }, 5);
}).listen(Number(port), '127.0.0.1', () => process.stdout.write('ready\\n'));
`;

function startUpstream(port: number, name: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['-e', SERVER, String(port), name], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.stdout!.once('data', () => resolve(child));
    child.once('exit', (code) => reject(new Error(`upstream ${name} exited early (${code})`)));
  });
}

async function killed(child: ChildProcess): Promise<void> {
  const gone = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGKILL');
  await gone;
}

interface LoopResult {
  readonly ok: number;
  readonly failed: { status: number; id: string }[];
}

/** Bounded: `workers` loops until `stop()` or 15 s; returns what every request got. */
function loadLoop(port: number, path: string, workers: number) {
  const agent = new Agent({ keepAlive: true, maxSockets: workers });
  let stop = false;
  let ok = 0;
  const failed: { status: number; id: string }[] = [];
  let seq = 0;
  const deadline = Date.now() + 15_000;
  const loops = Array.from({ length: workers }, async () => {
    while (!stop && Date.now() < deadline) {
      const id = `chaos-${path}-${seq++}`;
      try {
        const r = await request(port, path, { agent, headers: { host: 'x', 'x-request-id': id } });
        if (r.status === 200) ok++;
        else failed.push({ status: r.status, id });
      } catch {
        failed.push({ status: 0, id });
      }
    }
  });
  return {
    get ok() {
      return ok;
    },
    async finish(): Promise<LoopResult> {
      stop = true;
      await Promise.all(loops);
      agent.destroy();
      return { ok, failed };
    },
  };
}

t.test('kill and restart an upstream under load', async (t) => {
  const [portA, portB, gw] = await freePorts(3);
  let a = await startUpstream(portA!, 'a');
  const b = await startUpstream(portB!, 'b');
  const mesh = new MeshDir({
    'm.yaml': doc(
      gateway('gw', gw!),
      `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: app }
spec:
  hosts: [app]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 80, name: http, protocol: HTTP }]
  endpoints:
  - { address: 127.0.0.1, ports: { http: ${portA} } }
  - { address: 127.0.0.1, ports: { http: ${portB} } }
`,
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: app }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{ uri: { prefix: /with-retries } }]
    route: [{ destination: { host: app } }]
    retries: { attempts: 3, retryOn: "connect-failure,reset,refused-stream" }
  - match: [{ uri: { prefix: /without-retries } }]
    route: [{ destination: { host: app } }]
    retries: { attempts: 0 }
`,
    ),
  });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(async () => {
    await remora.stop();
    a.kill('SIGKILL');
    b.kill('SIGKILL');
    mesh.cleanup();
  });

  // With retries: kill a, restart it, twice; no client request may fail.
  const withRetries = loadLoop(gw!, '/with-retries', 8);
  for (let round = 0; round < 2; round++) {
    await sleep(400);
    await killed(a);
    await sleep(300);
    a = await startUpstream(portA!, 'a');
  }
  await sleep(400);
  const r1 = await withRetries.finish();
  t.ok(r1.ok > 200, `the loop kept going (${r1.ok} requests)`);
  t.same(r1.failed, [], 'no client request failed');

  // Without retries: the same chaos shows up, with the right flags.
  const bare = loadLoop(gw!, '/without-retries', 8);
  await sleep(300);
  await killed(a);
  await sleep(400);
  const r2 = await bare.finish();
  a = await startUpstream(portA!, 'a');
  t.ok(r2.failed.length > 0, `some requests failed without retries (${r2.failed.length})`);
  t.same([...new Set(r2.failed.map((f) => f.status))], [503], 'every failure is a 503 from the proxy');
  await sleep(50);
  const flags = new Set(
    r2.failed.map((f) => {
      const line = remora.accessLog.find((l) => l.includes(`"${f.id}"`)) ?? '';
      return /" 503 (\S+) /.exec(line)?.[1] ?? 'missing';
    }),
  );
  t.ok([...flags].every((f) => f === 'UF' || f === 'UC'), `flags are UF (refused) or UC (cut): ${[...flags].join(', ')}`);
  await waitFor('a to serve again', async () => (await request(gw!, '/without-retries', { headers: { host: 'x' } })).status === 200, 5000);
});
