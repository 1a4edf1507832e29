// 100 MB bodies stream through the proxy both ways with bounded memory: the proxy's RSS
// grows by less than 50 MB, so nothing is buffered whole (the retry buffer stops at 1 MiB).
// A 20 MB warm-up in each direction runs first: V8 sizes its young generation on the first
// heavy allocation (a one-time step of tens of MB that later transfers do not repeat), and
// that step says nothing about whether a body is held.
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import t from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort } from './helpers/net.ts';
import { MeshDir, spawnRemora, type SpawnedRemora } from './helpers/remora.ts';

const SIZE = 100 * 1024 * 1024;
const CHUNK = Buffer.alloc(64 * 1024, 'a');

let sink: Backend;
let source: Backend;
let remora: SpawnedRemora;
let mesh: MeshDir;
let port: number;

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

t.before(async () => {
  // Counts the bytes it receives without keeping them.
  sink = await startBackend('sink');
  sink.server.removeAllListeners('request');
  sink.server.on('request', (req, res) => {
    let n = 0;
    req.on('data', (c: Buffer) => (n += c.length));
    req.on('end', () => res.end(String(n)));
  });
  // Sends SIZE bytes, honouring backpressure.
  source = await startBackend('source');
  source.server.removeAllListeners('request');
  source.server.on('request', (_req, res) => {
    res.writeHead(200, { 'content-length': String(SIZE) });
    let sent = 0;
    const pump = (): void => {
      while (sent < SIZE) {
        sent += CHUNK.length;
        if (!res.write(CHUNK)) return void res.once('drain', pump);
      }
      res.end();
    };
    pump();
  });
  port = await freePort();
  mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      serviceEntry('sink', 'sink', [{ port: sink.port }]),
      serviceEntry('source', 'source', [{ port: source.port }]),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: routes }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{ uri: { prefix: /up } }]
    route: [{ destination: { host: sink } }]
  - route: [{ destination: { host: source } }]
`,
    ),
  });
  remora = await spawnRemora('gateway', [mesh.dir], ['--access-log-format', 'off']);
});

t.teardown(async () => {
  await remora.stop();
  await sink.close();
  await source.close();
  mesh.cleanup();
});

/** Runs `work` while sampling the proxy's RSS every 50 ms; returns the peak growth in MiB. */
async function peakGrowth(work: () => Promise<void>): Promise<number> {
  const pid = remora.child.pid!;
  const before = rssMiB(pid);
  let peak = before;
  const timer = setInterval(() => (peak = Math.max(peak, rssMiB(pid))), 50);
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  return Math.max(peak, rssMiB(pid)) - before;
}

function upload(size: number): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let answer = '';
    const req = httpRequest({ host: '127.0.0.1', port, path: '/up', method: 'POST', headers: { host: 'x', 'content-length': String(size) } }, (res) => {
      res.on('data', (c: Buffer) => (answer += c.toString()));
      res.on('end', () => resolve(answer));
    });
    req.on('error', reject);
    let sent = 0;
    const pump = (): void => {
      while (sent < size) {
        sent += CHUNK.length;
        if (!req.write(CHUNK)) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
  });
}

t.test('warm-up', async (t) => {
  t.equal(await upload(20 * 1024 * 1024), String(20 * 1024 * 1024));
  const r = await new Promise<number>((resolve, reject) => {
    let n = 0;
    httpRequest({ host: '127.0.0.1', port, path: '/down', headers: { host: 'x' } }, (res) => {
      res.on('data', (c: Buffer) => (n += c.length));
      res.on('end', () => resolve(n));
    })
      .on('error', reject)
      .end();
  });
  t.equal(r, SIZE);
});

t.test('a 100 MB upload streams through', async (t) => {
  let answer = '';
  const growth = await peakGrowth(async () => {
    answer = await upload(SIZE);
  });
  t.equal(answer, String(SIZE), 'the upstream received every byte');
  t.ok(growth < 50, `proxy RSS grew ${growth.toFixed(1)} MiB (< 50)`);
});

t.test('a 100 MB download streams through', async (t) => {
  let received = 0;
  const growth = await peakGrowth(
    () =>
      new Promise<void>((resolve, reject) => {
        const req = httpRequest({ host: '127.0.0.1', port, path: '/down', headers: { host: 'x' } }, (res) => {
          res.on('data', (c: Buffer) => (received += c.length));
          res.on('end', resolve);
        });
        req.on('error', reject);
        req.end();
      }),
  );
  t.equal(received, SIZE, 'the client received every byte');
  t.ok(growth < 50, `proxy RSS grew ${growth.toFixed(1)} MiB (< 50)`);
});
