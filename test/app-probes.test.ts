// `remora sidecar` with Istio's rewritten app probes: ISTIO_KUBE_APP_PROBERS in the environment
// opens the status port (--status-port), whose /app-health/… paths probe the app.
import t from 'tap';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { freePort, freePorts } from './helpers/net.ts';
import { request } from './helpers/http.ts';
import { MeshDir, runCli, spawnRemora } from './helpers/remora.ts';

/** Runs `fn` with the variable set in this process's environment, which the CLI inherits. */
async function withEnv<T>(name: string, value: string, fn: () => Promise<T>): Promise<T> {
  const before = process.env[name];
  process.env[name] = value;
  try {
    return await fn();
  } finally {
    if (before === undefined) delete process.env[name];
    else process.env[name] = before;
  }
}

t.test('ISTIO_KUBE_APP_PROBERS: the sidecar serves the app’s probes on the status port', async (t) => {
  const app = createServer((req, res) => res.writeHead(req.url === '/healthz' ? 200 : 503).end(req.url));
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  t.teardown(() => app.close());
  const appPort = (app.address() as AddressInfo).port;
  const mesh = new MeshDir({ 'empty.yaml': '' });
  t.teardown(() => mesh.cleanup());
  const statusPort = await freePort();
  const probers = JSON.stringify({
    '/app-health/web/livez': { httpGet: { path: '/healthz', port: appPort }, timeoutSeconds: 1 },
    '/app-health/web/readyz': { httpGet: { path: '/warming', port: appPort }, timeoutSeconds: 1 },
  });
  const remora = await withEnv('ISTIO_KUBE_APP_PROBERS', probers, () => spawnRemora('sidecar', [mesh.dir], ['--status-port', String(statusPort), '--app-port', String(appPort)]));
  t.teardown(() => remora.stop());
  t.equal((await request(statusPort, '/app-health/web/livez')).status, 200, 'the app’s liveness, through the status port');
  t.equal((await request(statusPort, '/app-health/web/readyz')).status, 503, 'the app’s failing readiness, as the app answered it');
});

t.test('a malformed ISTIO_KUBE_APP_PROBERS stops the sidecar with the reason', async (t) => {
  const mesh = new MeshDir({ 'empty.yaml': '' });
  t.teardown(() => mesh.cleanup());
  const [admin, health, status] = await freePorts(3);
  const r = await withEnv('ISTIO_KUBE_APP_PROBERS', '{"/app-health/web/livez": {"httpGet": {"port": "http"}}}', () =>
    runCli(['sidecar', '-c', mesh.dir, '--admin-port', String(admin!), '--health-port', String(health!), '--prometheus-port', '0', '--status-port', String(status!)]),
  );
  t.equal(r.code, 1);
  t.match(r.stderr, 'remora sidecar: ISTIO_KUBE_APP_PROBERS "/app-health/web/livez": httpGet.port must be a port number, got "http"');
});
