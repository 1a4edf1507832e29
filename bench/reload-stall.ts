// Reload under load with a large mesh (1,000 VirtualServices × 10 routes by default): how long
// the longest request waits while a reload compiles, how long until the new config answers,
// and the proxy's RSS across reloads. Run by hand; not part of `pnpm bench`.
//
//   node bench/reload-stall.ts [--reloads 20] [--vs 1000] [--routes 10] [--connections 4] [--settle S]
//
// --settle S: after the reloads, wait S seconds with no change and print RSS again (the
// config loader thread stops after 30 s idle and gives its memory back).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { parseArgs } from 'node:util';
import { largeMesh } from '../test/helpers/large-mesh.ts';
import { freePorts, sleep, waitFor } from '../test/helpers/net.ts';
import { CLI, MeshDir } from '../test/helpers/remora.ts';

const { values } = parseArgs({
  options: {
    reloads: { type: 'string', default: '20' },
    vs: { type: 'string', default: '1000' },
    routes: { type: 'string', default: '10' },
    connections: { type: 'string', default: '4' },
    settle: { type: 'string', default: '0' },
  },
});
const reloads = Number(values.reloads);
const vsCount = Number(values.vs);
const routesEach = Number(values.routes);
const connections = Number(values.connections);

const [port, admin, health] = (await freePorts(3)) as [number, number, number];
const meshOpts = { port, virtualServices: vsCount, routesEach };
const mesh = new MeshDir(largeMesh(meshOpts, 0));
const child = spawn(
  process.execPath,
  [CLI, 'gateway', '-c', mesh.dir, '--admin-port', String(admin), '--health-port', String(health), '--prometheus-port', '0', '--bind', '127.0.0.1', '--access-log-format', 'off', '--log-level', 'warning'],
  { stdio: ['ignore', 'ignore', 'inherit'] },
);
const rssMb = (): number => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
};

const agent = new Agent({ keepAlive: true, maxSockets: connections });
const get = (): Promise<string> =>
  new Promise((resolve, reject) => {
    const req = request({ port, host: '127.0.0.1', path: '/r3', headers: { host: 'vs-0.example' }, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(body));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('request timeout')));
    req.on('error', reject);
    req.end();
  });

try {
  const started = Date.now();
  await waitFor('the proxy to serve', async () => (await get()).startsWith('gen 0 '), 60_000);
  console.log(`${vsCount} VirtualServices × ${routesEach} routes; first config served after ${Date.now() - started} ms; RSS ${rssMb()} MB`);

  // Steady requests on `connections` keep-alive connections; each latency is recorded with the time it ended.
  let stop = false;
  let errors = 0;
  let lastBody = '';
  const samples: { end: number; ms: number }[] = [];
  const loopDeadline = Date.now() + 30_000 + reloads * 15_000;
  const worker = async (): Promise<void> => {
    while (!stop && Date.now() < loopDeadline) {
      const t0 = performance.now();
      try {
        lastBody = await get();
      } catch {
        errors++;
      }
      samples.push({ end: performance.now(), ms: performance.now() - t0 });
      await sleep(2);
    }
  };
  const workers = Array.from({ length: connections }, worker);
  await sleep(2_000);
  const quietMax = Math.max(...samples.map((s) => s.ms));
  const rows: string[] = [];
  const rss: number[] = [rssMb()];
  for (let gen = 1; gen <= reloads; gen++) {
    const files = largeMesh(meshOpts, gen);
    const t0 = performance.now();
    mesh.write('routes-000.yaml', files['routes-000.yaml']!);
    await waitFor(`generation ${gen}`, () => lastBody.startsWith(`gen ${gen} `), 15_000);
    const live = performance.now() - t0;
    await sleep(1_000);
    const during = samples.filter((s) => s.end >= t0);
    const max = Math.max(...during.map((s) => s.ms));
    rss.push(rssMb());
    rows.push(`reload ${String(gen).padStart(2)}: live after ${live.toFixed(0).padStart(5)} ms, longest request ${max.toFixed(1).padStart(7)} ms, RSS ${rss[rss.length - 1]} MB`);
    samples.length = 0;
  }
  stop = true;
  await Promise.all(workers);
  console.log(rows.join('\n'));
  console.log(`longest request with no reload: ${quietMax.toFixed(1)} ms; failed requests: ${errors}`);
  console.log(`RSS before the first reload ${rss[0]} MB, after reload 1 ${rss[1]} MB, 10 ${rss[10] ?? '-'} MB, ${reloads} ${rss[reloads]} MB`);
  const settle = Number(values.settle);
  if (settle > 0) {
    await sleep(settle * 1_000);
    console.log(`RSS after ${settle} s without a change: ${rssMb()} MB`);
  }
} finally {
  agent.destroy();
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  mesh.cleanup();
}
