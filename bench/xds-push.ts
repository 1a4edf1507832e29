// A large xDS push to a gateway under steady load: how long from the push until Remora ACKs
// it, how long until the first request is served by the new config, and how many requests
// failed meanwhile (must be 0). Run by hand; not part of `pnpm bench`.
//
//   node bench/xds-push.ts [--services 1000] [--duration 10] [--rate 500] [--connections 10] [--delta]
//
// The gateway starts under a control plane with one service (`svc-0.example`). After a
// third of `--duration`, the control plane pushes `--services` services at once — for each a
// ServiceEntry (an EDS cluster and its endpoints), a VirtualService for its host: what istiod
// would push for that Istio YAML, translated by Remora's own translator. autocannon keeps
// `--rate` requests/s on `svc-0.example` throughout; a probe asks for the last new host
// until it answers.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { parseArgs } from 'node:util';
import { startBackend } from '../test/helpers/backends.ts';
import { CLUSTER, ControlPlane, ENDPOINTS, LISTENER, ROUTES } from '../test/helpers/control-plane.ts';
import { doc, gateway, serviceEntry } from '../test/helpers/mesh.ts';
import { freePorts, sleep, waitFor } from '../test/helpers/net.ts';
import { CLI } from '../test/helpers/remora.ts';
import { envoyFor } from '../test/helpers/xds-mesh.ts';
import { fixedRate } from './lib/load.ts';

const { values } = parseArgs({
  options: {
    services: { type: 'string', default: '1000' },
    duration: { type: 'string', default: '10' },
    rate: { type: 'string', default: '500' },
    connections: { type: 'string', default: '10' },
    delta: { type: 'boolean', default: false },
  },
});
const services = Number(values.services);
const durationS = Number(values.duration);
const rate = Number(values.rate);
const connections = Number(values.connections);
if (!(services >= 1) || !(durationS >= 3) || !(rate >= 1) || !(connections >= 1)) {
  console.error('usage: node bench/xds-push.ts [--services N>=1] [--duration S>=3] [--rate R] [--connections C] [--delta]');
  process.exit(2);
}

/** The gateway's Istio YAML with services 0..count-1, each its own host, cluster and endpoints. */
function meshYaml(port: number, upstream: number, count: number): string {
  const parts = [gateway('gw', port)];
  for (let i = 0; i < count; i++) {
    parts.push(
      serviceEntry(`svc-${i}`, `svc-${i}.example`, [{ port: upstream }]),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: svc-${i} }
spec:
  hosts: ["svc-${i}.example"]
  gateways: [gw]
  http:
  - route: [{ destination: { host: svc-${i}.example } }]
`,
    );
  }
  return doc(...parts);
}

const status = (port: number, host: string): Promise<number> =>
  new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/', headers: { host }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.setTimeout(5_000, () => req.destroy());
    req.on('error', () => resolve(0));
    req.end();
  });

const upstream = await startBackend('upstream');
const [port, admin, health] = (await freePorts(3)) as [number, number, number];
const cp = new ControlPlane();
await cp.start();
cp.set(envoyFor(meshYaml(port, upstream.port, 1)));
const t0 = performance.now();
const big = envoyFor(meshYaml(port, upstream.port, services));
const translateMs = performance.now() - t0;

const child = spawn(
  process.execPath,
  [CLI, 'gateway', '--xds-address', cp.target, ...(values.delta ? ['--xds-delta'] : []), '--admin-port', String(admin), '--health-port', String(health), '--prometheus-port', '0', '--bind', '127.0.0.1', '--access-log-format', 'off', '--log-level', 'warning'],
  { stdio: ['ignore', 'ignore', 'inherit'] },
);
const rssMb = (): number => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
};

try {
  await waitFor('the gateway to serve svc-0', async () => (await status(port, 'svc-0.example')) === 200, 30_000);
  const last = `svc-${services - 1}.example`;
  if (services > 1 && (await status(port, last)) !== 404) throw new Error(`${last} answers before the push`);
  const rssBefore = rssMb();
  console.log(`${services} services (${big.clusters.length} clusters, ${big.routeConfigs.reduce((n, rc) => n + (rc.virtualHosts?.length ?? 0), 0)} virtual hosts); istiod's side (translation) ${translateMs.toFixed(0)} ms; ${values.delta ? 'delta' : 'state of the world'} ADS`);

  const load = fixedRate({ port, connections, rate, durationS, target: { path: '/', headers: { host: 'svc-0.example' } } });
  await sleep((durationS * 1_000) / 3);

  const pushStart = performance.now();
  const version = cp.set(big);
  const pushed = performance.now();
  // Incremental ADS sends only what changed: the gateway's one listener does not.
  const types = values.delta ? [CLUSTER, ENDPOINTS, ROUTES] : [CLUSTER, ENDPOINTS, ROUTES, LISTENER];
  const acked = Promise.all(types.map(async (type) => {
    const v = await cp.verdict(type, version, 60_000);
    if (!v.ack) throw new Error(`${type} NACKed: ${v.error}`);
    return performance.now() - pushed;
  }));
  let firstServedMs = NaN;
  while (performance.now() - pushed < 60_000) {
    if ((await status(port, last)) === 200) {
      firstServedMs = performance.now() - pushed;
      break;
    }
    await sleep(5);
  }
  const ackMs = await acked;
  const result = await load;

  console.log(`control plane: snapshot packed and written in ${(pushed - pushStart).toFixed(0)} ms`);
  console.log(`push → ACK: CDS ${ackMs[0]!.toFixed(0)} ms, EDS ${ackMs[1]!.toFixed(0)} ms, RDS ${ackMs[2]!.toFixed(0)} ms, LDS ${ackMs[3] === undefined ? 'unchanged, not sent' : `${ackMs[3].toFixed(0)} ms`}`);
  console.log(`push → first request served by the new config (${last}): ${firstServedMs.toFixed(0)} ms`);
  console.log(`steady load on svc-0.example: ${result.requests} requests at ${result.rps.toFixed(0)} req/s, p99 ${result.p99.toFixed(1)} ms, max ${result.max.toFixed(1)} ms`);
  const failed = result.errors + result.non2xx;
  console.log(`failed requests: ${failed} (errors ${result.errors}, non-2xx ${result.non2xx})`);
  console.log(`Remora RSS: ${rssBefore} MB before the push, ${rssMb()} MB after`);
  if (failed > 0) process.exitCode = 1;
} finally {
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  cp.kill();
  await upstream.close();
}
