// --access-log-format json writes Istio's JSON access log; off writes none.
import t, { type Test } from 'tap';
import { startBackend } from './helpers/backends.ts';
import { get } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort, sleep } from './helpers/net.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';

async function setup(t: Test, format: string) {
  const b = await startBackend('app');
  const port = await freePort();
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      serviceEntry('app', 'app', [{ port: b.port }]),
      'apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: app }\nspec:\n  hosts: ["*"]\n  gateways: [gw]\n  http:\n  - name: all\n    route: [{ destination: { host: app } }]\n',
    ),
  });
  const remora = await startRemora('gateway', [mesh.dir], ['--access-log-format', format]);
  t.teardown(async () => {
    await remora.stop();
    await b.close();
    mesh.cleanup();
  });
  return { port, remora };
}

t.test('json', async (t) => {
  const { port, remora } = await setup(t, 'json');
  await get(port, '/p?q=1', 'app.example', { 'x-request-id': 'json-1', 'user-agent': 'tester' });
  await sleep(20);
  t.equal(remora.accessLog.length, 1);
  const e = JSON.parse(remora.accessLog[0]!) as Record<string, unknown>;
  t.match(e, {
    method: 'GET',
    path: '/p?q=1',
    protocol: 'HTTP/1.1',
    response_code: 200,
    response_flags: '-',
    response_code_details: 'via_upstream',
    request_id: 'json-1',
    user_agent: 'tester',
    authority: 'app.example',
    upstream_cluster: 'outbound|80||app.default.svc.cluster.local',
    route_name: 'all',
    x_forwarded_for: '127.0.0.1',
  });
  t.match(e.start_time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  t.match(e.upstream_host, /^127\.0\.0\.1:\d+$/);
});

t.test('off', async (t) => {
  const { port, remora } = await setup(t, 'off');
  t.equal((await get(port, '/', 'app.example')).status, 200);
  await sleep(20);
  t.same(remora.accessLog, []);
});
