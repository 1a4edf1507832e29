// MeshConfig's access log (accessLogFile, accessLogEncoding, accessLogFormat) as istiod
// writes it into Envoy's file loggers, honoured by the runtime: to a file or stdout, in a
// custom text or JSON format, for HTTP and TCP; --access-log-format wins when given; a bad
// format is refused.
import { existsSync, readFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { startBackend } from './helpers/backends.ts';
import { get } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort, freePorts, sleep, waitFor } from './helpers/net.ts';
import { MeshDir, spawnRemora, startRemora } from './helpers/remora.ts';

async function setup(t: Test, meshConfig: string) {
  const b = await startBackend('app');
  const port = await freePort();
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      serviceEntry('app', 'app', [{ port: b.port }]),
      'apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: app }\nspec:\n  hosts: ["app.example"]\n  gateways: [gw]\n  http:\n  - name: all\n    match: [{ uri: { prefix: /p } }]\n    rewrite: { uri: /rewritten }\n    route: [{ destination: { host: app } }]\n  - name: rest\n    route: [{ destination: { host: app } }]\n',
    ),
  });
  const conf = new MeshDir();
  const logFile = join(conf.dir, 'access.log');
  const meshFile = conf.write('meshconfig.yaml', meshConfig.replaceAll('LOGFILE', logFile));
  t.teardown(async () => {
    await b.close();
    mesh.cleanup();
    conf.cleanup();
  });
  return { port, meshDir: mesh.dir, meshFile, logFile };
}

const readLines = (file: string): string[] => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((l) => l !== '') : []);

t.test('JSON encoding with a custom format, to a file, through the CLI', async (t) => {
  const format = JSON.stringify({
    code: '%RESPONSE_CODE%',
    rid: '%REQ(X-REQUEST-ID)%',
    path: '%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%',
    upstream_path: '%REQ(:PATH)%',
    cluster: '%UPSTREAM_CLUSTER%',
    client: '%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%',
    ua: 'ua=%REQ(USER-AGENT):4%',
    custom: '%REQ(X-CUSTOM)%',
    missing: '%REQ(X-NOPE)%',
    flags: '%RESPONSE_FLAGS%',
    bytes: { sent: '%BYTES_SENT%', received: '%BYTES_RECEIVED%' },
  });
  const { port, meshDir, meshFile, logFile } = await setup(t, `accessLogFile: LOGFILE\naccessLogEncoding: JSON\naccessLogFormat: '${format}'\n`);
  const remora = await spawnRemora('gateway', [meshDir], ['--mesh-config', meshFile]);
  t.teardown(() => remora.stop());
  t.equal((await get(port, '/p?q=1', 'app.example', { 'x-request-id': 'rid-1', 'user-agent': 'tester', 'x-custom': 'c1' })).status, 200);
  t.equal((await get(port, '/p', 'other.example', { 'x-request-id': 'rid-2' })).status, 404);
  await waitFor('two lines in the access log file', async () => readLines(logFile).length >= 2, 5000);
  const [ok, nr] = readLines(logFile).map((l) => JSON.parse(l) as Record<string, unknown>);
  t.same(Object.keys(ok!), ['code', 'rid', 'path', 'upstream_path', 'cluster', 'client', 'ua', 'custom', 'missing', 'flags', 'bytes'], 'keys in the format\'s order');
  t.match(ok, { code: 200, rid: 'rid-1', path: '/p?q=1', upstream_path: '/rewritten?q=1', cluster: 'outbound|80||app.default.svc.cluster.local', client: '127.0.0.1', ua: 'ua=test', custom: 'c1', flags: '-' });
  t.equal(ok!.missing, null, 'a missing value alone is null');
  t.type((ok!.bytes as Record<string, unknown>).sent, 'number', 'numbers stay numbers, in nested objects too');
  t.match(nr, { code: 404, rid: 'rid-2', flags: 'NR', cluster: null });
  t.notOk(remora.stdout.some((l) => l.includes('rid-1')), 'nothing on stdout: the listeners log to the file');
});

t.test('TEXT with a custom format on /dev/stdout: the newline is added, :N cuts', async (t) => {
  const { port, meshDir, meshFile } = await setup(t, `accessLogFile: /dev/stdout\naccessLogFormat: '%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% [%REQ(X-CUSTOM):3%] %ROUTE_NAME% %UPSTREAM_LOCAL_ADDRESS% %START_TIME(%Y)%'\n`);
  const remora = await startRemora('gateway', [meshDir], ['--mesh-config', meshFile]);
  t.teardown(() => remora.stop());
  await get(port, '/a', 'app.example', { 'x-custom': 'abcdef' });
  await get(port, '/b', 'app.example');
  await sleep(30);
  const year = new Date().getUTCFullYear();
  t.same(remora.accessLog, [`GET /a 200 - [abc] rest - ${year}`, `GET /b 200 - [-] rest - ${year}`]);
});

t.test('JSON without a format: Istio\'s JSON, in istiod\'s key order', async (t) => {
  const { port, meshDir, meshFile } = await setup(t, 'accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n');
  const remora = await startRemora('gateway', [meshDir], ['--mesh-config', meshFile]);
  t.teardown(() => remora.stop());
  await get(port, '/p', 'app.example', { 'x-request-id': 'j-1' });
  await sleep(30);
  t.equal(remora.accessLog.length, 1);
  const e = JSON.parse(remora.accessLog[0]!) as Record<string, unknown>;
  t.equal(Object.keys(e)[0], 'start_time');
  t.equal(Object.keys(e)[1], 'route_name');
  t.match(e, { method: 'GET', path: '/p', response_code: 200, request_id: 'j-1', authority: 'app.example', upstream_cluster: 'outbound|80||app.default.svc.cluster.local', route_name: 'all', connection_termination_details: null });
});

t.test('--access-log-format, given, wins over MeshConfig', async (t) => {
  const { port, meshDir, meshFile, logFile } = await setup(t, 'accessLogFile: LOGFILE\naccessLogEncoding: JSON\n');
  const remora = await startRemora('gateway', [meshDir], ['--mesh-config', meshFile, '--access-log-format', 'text']);
  t.teardown(() => remora.stop());
  await get(port, '/p', 'app.example');
  await sleep(30);
  t.equal(remora.accessLog.length, 1);
  t.match(remora.accessLog[0], /^\[\d{4}-.*\] "GET \/p HTTP\/1\.1" 200 /, 'Istio\'s text on stdout');
  t.same(readLines(logFile), [], 'the MeshConfig file is not written');
});

t.test('an unknown operator in accessLogFormat names the field; the proxy does not start', async (t) => {
  const { meshDir, meshFile } = await setup(t, "accessLogFile: /dev/stdout\naccessLogFormat: '%RESPONSE_CODE% %NOT_AN_OPERATOR%'\n");
  await t.rejects(startRemora('gateway', [meshDir], ['--mesh-config', meshFile]), /accessLogFormat.*%NOT_AN_OPERATOR% is not supported/);
});

t.test('tcp_proxy: a gateway TCP server logs its connections in the MeshConfig format', async (t) => {
  const echo = createServer((s) => s.on('data', (d) => s.end(d)));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  const [gwPort] = (await freePorts(1)) as [number];
  const mesh = new MeshDir({
    'tcp.yaml': `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: echo, namespace: default }
spec:
  hosts: [echo]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9000, name: tcp, protocol: TCP }]
  endpoints: [{ address: 127.0.0.1, ports: { tcp: ${(echo.address() as AddressInfo).port} } }]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: gw, namespace: default }
spec:
  selector: { istio: ingressgateway }
  servers: [{ port: { number: ${gwPort}, name: tcp, protocol: TCP }, hosts: ["*"] }]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: echo, namespace: default }
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp: [{ route: [{ destination: { host: echo, port: { number: 9000 } } }] }]
`,
  });
  const conf = new MeshDir({ 'meshconfig.yaml': `accessLogFile: /dev/stdout\naccessLogEncoding: JSON\naccessLogFormat: '{"cluster":"%UPSTREAM_CLUSTER%","sent":"%BYTES_SENT%","received":"%BYTES_RECEIVED%","protocol":"%PROTOCOL%","method":"%REQ(:METHOD)%"}'\n` });
  t.teardown(() => {
    echo.close();
    mesh.cleanup();
    conf.cleanup();
  });
  const remora = await startRemora('gateway', [mesh.dir], ['--mesh-config', join(conf.dir, 'meshconfig.yaml')]);
  t.teardown(() => remora.stop());
  const got = await new Promise<string>((resolve) => {
    const s = connect({ host: '127.0.0.1', port: gwPort }, () => s.write('hello'));
    let out = '';
    s.on('data', (d) => (out += d.toString()));
    s.on('close', () => resolve(out));
    s.on('error', () => resolve(out));
  });
  t.equal(got, 'hello');
  await waitFor('the TCP access log line', () => remora.accessLog.length > 0, 5000);
  t.same(JSON.parse(remora.accessLog[0]!), { cluster: 'outbound|9000||echo.default.svc.cluster.local', sent: 5, received: 5, protocol: null, method: null });
});
