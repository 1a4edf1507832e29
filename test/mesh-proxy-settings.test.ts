// The proxy settings of MeshConfig defaultConfig and the pod's proxy.istio.io/config
// annotation, through the real CLI: terminationDrainDuration bounds the drain on SIGTERM,
// the annotation is merged last, and --drain-time wins when given.
import t, { type Test } from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort, sleep } from './helpers/net.ts';
import { MeshDir, spawnRemora } from './helpers/remora.ts';

let slow: Backend;
t.before(async () => {
  slow = await startBackend('slow', (req, res) => {
    const ms = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('ms') ?? '0');
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(`slept ${ms}`);
    }, ms);
  });
});
t.teardown(() => slow.close());

async function setup(t: Test, mesh: string, annotations: string | null): Promise<{ port: number; args: string[]; dir: MeshDir }> {
  const port = await freePort();
  const dir = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      serviceEntry('slow', 'slow', [{ port: slow.port }]),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: slow }
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{ route: [{ destination: { host: slow } }] }]
`,
    ),
  });
  const conf = new MeshDir({ 'meshconfig.yaml': mesh });
  t.teardown(() => {
    dir.cleanup();
    conf.cleanup();
  });
  const args = ['--mesh-config', `${conf.dir}/meshconfig.yaml`];
  if (annotations !== null) args.push('--annotations', conf.write('annotations', annotations));
  return { port, args, dir };
}

/** SIGTERM with a request of `ms` in flight: how long the exit took, and what the request got. */
async function sigtermDuring(port: number, remora: Awaited<ReturnType<typeof spawnRemora>>, ms: number): Promise<{ tookMs: number; outcome: number | 'reset'; code: number | null }> {
  const inFlight = request(port, `/?ms=${ms}`, { headers: { host: 'x' } }).then((r) => r.status, () => 'reset' as const);
  await sleep(200);
  const t0 = Date.now();
  remora.child.kill('SIGTERM');
  const { code } = await remora.exited;
  return { tookMs: Date.now() - t0, outcome: await inFlight, code };
}

t.test('MeshConfig defaultConfig.terminationDrainDuration bounds the drain on SIGTERM', async (t) => {
  const { port, args, dir } = await setup(t, 'defaultConfig:\n  terminationDrainDuration: 700ms\n', null);
  const remora = await spawnRemora('gateway', [dir.dir], args);
  const r = await sigtermDuring(port, remora, 6000);
  t.equal(r.code, 0);
  t.equal(r.outcome, 'reset', 'the request longer than the drain was cut off');
  t.ok(r.tookMs >= 600 && r.tookMs < 3000, `exited after the 700 ms drain (${r.tookMs} ms), not Istio's 5 s default`);
  t.match(remora.stderr.join('\n'), /terminationDrainDuration 700 ms/, 'the drain in use is logged');
});

t.test('the proxy.istio.io/config annotation is merged last, over MeshConfig', async (t) => {
  const annotation = `proxy.istio.io/config="terminationDrainDuration: 4s\\nholdApplicationUntilProxyStarts: true\\n"\napp="slow"\n`;
  const { port, args, dir } = await setup(t, 'defaultConfig:\n  terminationDrainDuration: 300ms\n  concurrency: 4\n', annotation);
  const remora = await spawnRemora('gateway', [dir.dir], args);
  const r = await sigtermDuring(port, remora, 1200);
  t.equal(r.outcome, 200, 'the annotation\'s 4 s drain let the 1.2 s request finish (MeshConfig said 300 ms)');
  t.ok(r.tookMs < 3500, `exited once the request was done (${r.tookMs} ms)`);
  const log = remora.stderr.join('\n');
  t.match(log, /terminationDrainDuration 4000 ms \(from .*proxy\.istio\.io\/config/, 'the annotation is named as the source');
  t.notMatch(log, /concurrency.*not applied/, 'concurrency is applied (the worker count at start), not warned about');
  t.match(log, /holdApplicationUntilProxyStarts is applied when the pod is built/, 'holdApplicationUntilProxyStarts is not pretended');
});

t.test('--drain-time wins over the annotation and MeshConfig', async (t) => {
  const { port, args, dir } = await setup(t, 'defaultConfig:\n  terminationDrainDuration: 10s\n', 'proxy.istio.io/config="{\\"terminationDrainDuration\\": \\"10s\\"}"\n');
  const remora = await spawnRemora('gateway', [dir.dir], [...args, '--drain-time', '400ms']);
  const r = await sigtermDuring(port, remora, 6000);
  t.equal(r.outcome, 'reset');
  t.ok(r.tookMs < 3000, `exited after --drain-time's 400 ms (${r.tookMs} ms)`);
});

t.test('a bad annotation names the file and field, and the proxy does not start', async (t) => {
  const { args, dir } = await setup(t, '', 'proxy.istio.io/config="terminationDrainDuration: soon"\n');
  const remora = await spawnRemora('gateway', [dir.dir], args, false);
  const { code } = await remora.exited;
  t.not(code, 0);
  t.match(remora.stderr.join('\n'), /annotations.*ProxyConfig.*proxy\.istio\.io\/config.*terminationDrainDuration.*must be a duration/);
});

t.test('ISTIO_METAJSON_ANNOTATIONS carries the annotation too', async (t) => {
  const { parseOptions } = await import('@remora/proxy');
  const o = parseOptions('sidecar', ['-c', '/dev/null'], { ISTIO_METAJSON_ANNOTATIONS: '{"proxy.istio.io/config":"terminationDrainDuration: 2s"}' });
  t.not(o, 'help');
  if (o !== 'help') {
    t.equal(o.annotationsJson, '{"proxy.istio.io/config":"terminationDrainDuration: 2s"}');
    t.equal(o.drainTimeMs, null, 'no --drain-time: the settings decide');
  }
});
