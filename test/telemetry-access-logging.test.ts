// Istio's Telemetry `accessLogging` end to end, as istio.io's "Configure access logging with
// Telemetry API" task writes it: a MeshConfig extension provider (envoyFileAccessLog, a file and
// a text format) and the built-in `envoy` provider, chosen mesh-wide in the root namespace,
// overridden per workload while the proxy runs; a CEL filter that logs only errors; a
// workload's `disabled: true`; `match.mode` choosing the sidecar's inbound (SERVER) side.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { startBackend } from './helpers/backends.ts';
import { get, request } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort, sleep, waitFor } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

const readLines = (file: string): string[] => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((l) => l !== '') : []);

const MESH = (logFile: string) => `extensionProviders:
- name: errors-only
  envoyFileAccessLog:
    path: ${logFile}
    logFormat:
      text: "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% user=%REQ(X-USER)%"
`;

const ROOT = `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: errors-only}]
    filter:
      expression: response.code >= 400
`;

async function reloaded(remora: InProcessRemora, write: () => void): Promise<void> {
  const before = remora.proxy.runtime.snapshot!.config.version;
  write();
  await waitFor('the new Telemetry applies', () => remora.proxy.runtime.snapshot!.config.version !== before, 15_000);
}

t.test('gateway: a filter logs only errors; a workload Telemetry disables, then picks envoy with a header filter', async (t) => {
  const b = await startBackend('app', (req, res) => {
    res.statusCode = req.url!.startsWith('/fail') ? 503 : 200;
    res.end('x');
  });
  const port = await freePort();
  const files = new MeshDir({
    'routes.yaml': doc(
      gateway('gw', port),
      serviceEntry('app', 'app', [{ port: b.port }]),
      'apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: app }\nspec:\n  hosts: ["app.example"]\n  gateways: [gw]\n  http:\n  - route: [{ destination: { host: app } }]\n',
    ),
    'root.yaml': ROOT,
  });
  const logFile = join(files.dir, 'errors.log');
  const meshFile = files.write('mesh.cfg', MESH(logFile));
  const gw = await startRemora('gateway', [files.dir], ['--mesh-config', meshFile, '--labels', 'istio=ingressgateway']);
  t.teardown(async () => {
    await gw.stop();
    await b.close();
    files.cleanup();
  });

  t.equal((await get(port, '/ok', 'app.example')).status, 200);
  t.equal((await get(port, '/fail', 'app.example', { 'x-user': 'bob' })).status, 503);
  await waitFor('the error line', () => readLines(logFile).length > 0);
  await sleep(50);
  t.same(readLines(logFile), ['GET /fail 503 user=bob'], 'only the request the CEL filter passes is logged');
  t.same(gw.accessLog, [], 'nothing on stdout: the Telemetry API replaces the proxy\'s default log');

  // The workload's Telemetry, written while running: access logging off for it.
  await reloaded(gw, () =>
    files.write('workload.yaml', 'apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: gw-off, namespace: istio-system}\nspec:\n  selector: {matchLabels: {istio: ingressgateway}}\n  accessLogging:\n  - disabled: true\n'),
  );
  t.equal((await get(port, '/fail', 'app.example')).status, 503);
  await sleep(100);
  t.equal(readLines(logFile).length, 1, 'disabled: the error is not logged');
  t.same(gw.accessLog, []);

  // Then the built-in envoy provider (stdout, Istio's format) with a header filter.
  await reloaded(gw, () =>
    files.write(
      'workload.yaml',
      'apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: gw-off, namespace: istio-system}\nspec:\n  selector: {matchLabels: {istio: ingressgateway}}\n  accessLogging:\n  - providers: [{name: envoy}]\n    filter: {expression: "request.headers[\'x-user\'] == \'bob\' && request.method == \'GET\'"}\n',
    ),
  );
  await get(port, '/a', 'app.example', { 'x-user': 'alice' });
  await get(port, '/b', 'app.example', { 'x-user': 'bob' });
  await get(port, '/c', 'app.example');
  await waitFor('the stdout line', () => gw.accessLog.length > 0);
  await sleep(50);
  t.equal(gw.accessLog.length, 1, 'one request passes the filter; a missing header is no match');
  t.match(gw.accessLog[0], /^\[\S+\] "GET \/b HTTP\/1\.1" 200 /, 'in Istio\'s text format');
  t.equal(readLines(logFile).length, 1, 'the workload named its own provider: errors-only is no longer in scope');
});

t.test('sidecar: match.mode SERVER disables the inbound log; CLIENT leaves it', async (t) => {
  const app = await startBackend('app');
  const files = new MeshDir({
    'root.yaml': 'apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: mesh-default, namespace: istio-system}\nspec:\n  accessLogging:\n  - providers: [{name: envoy}]\n',
    'ns.yaml': 'apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: client-off, namespace: default}\nspec:\n  accessLogging:\n  - match: {mode: CLIENT}\n    disabled: true\n',
  });
  const sc = await startRemora('sidecar', [files.dir], ['--app-port', String(app.port), '--labels', 'app=reviews', '--namespace', 'default']);
  t.teardown(async () => {
    await sc.stop();
    await app.close();
    files.cleanup();
  });
  t.equal((await request(sc.ports.inbound, '/in', { headers: { host: 'reviews' } })).status, 200);
  await waitFor('the inbound line', () => sc.accessLog.length > 0);
  t.match(sc.accessLog[0], /"GET \/in HTTP\/1\.1" 200 .* inbound\|/, 'CLIENT disabled: the inbound (SERVER) side still logs');

  await reloaded(sc, () => files.write('ns.yaml', 'apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: client-off, namespace: default}\nspec:\n  accessLogging:\n  - match: {mode: SERVER}\n    disabled: true\n'));
  const n = sc.accessLog.length;
  t.equal((await request(sc.ports.inbound, '/in2', { headers: { host: 'reviews' } })).status, 200);
  await sleep(100);
  t.equal(sc.accessLog.length, n, 'SERVER disabled: the inbound request is not logged');
});

t.test('an invalid filter expression names the Telemetry field; the last good config keeps serving', async (t) => {
  const b = await startBackend('app');
  const port = await freePort();
  const files = new MeshDir({
    'routes.yaml': doc(gateway('gw', port), serviceEntry('app', 'app', [{ port: b.port }]), 'apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: app }\nspec:\n  hosts: ["*"]\n  gateways: [gw]\n  http:\n  - route: [{ destination: { host: app } }]\n'),
  });
  const gw = await startRemora('gateway', [files.dir], ['--labels', 'istio=ingressgateway']);
  t.teardown(async () => {
    await gw.stop();
    await b.close();
    files.cleanup();
  });
  const version = gw.proxy.runtime.snapshot!.config.version;
  files.write('bad.yaml', 'apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: bad, namespace: istio-system}\nspec:\n  accessLogging:\n  - providers: [{name: envoy}]\n    filter: {expression: "response.code >= "}\n');
  await waitFor('the error is reported', () => gw.log.some((l) => l.includes('accessLogging[0].filter.expression')), 15_000);
  t.match(gw.log.find((l) => l.includes('accessLogging[0].filter.expression')), /Telemetry.*bad.*invalid CEL expression/);
  t.equal(gw.proxy.runtime.snapshot!.config.version, version, 'the running config stays');
  t.equal((await get(port, '/', 'x')).status, 200);
});
