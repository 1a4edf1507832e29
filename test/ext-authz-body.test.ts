// istio.io's ext-authz task with includeRequestBodyInCheck: the authorizer gets the request
// body (HTTP: as the check's body; gRPC: CheckRequest http.body, or raw_body with packAsBytes)
// with x-envoy-auth-partial-body, the app then gets the same bytes; a body over
// maxRequestBytes is refused with 413 unless allowPartialMessage, which checks its first
// maxRequestBytes and still streams the whole body upstream.
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import t, { type Test } from 'tap';
import { CheckRequestSchema, CheckResponseSchema, type CheckRequest, type CheckResponse } from '@remora/config/envoy/gen/envoy/service/auth/v3/external_auth_pb.js';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway, routeAll, serviceEntry } from './helpers/mesh.ts';
import { freePort } from './helpers/net.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';

const POLICY = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ext-authz, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  action: CUSTOM
  provider: { name: PROVIDER }
  rules:
  - to:
    - operation: { paths: ["/post"] }
`;

/** Allows a body that contains "allow", as a body-inspecting authorizer would. */
async function startHttpAuthorizer(): Promise<Backend> {
  return startBackend('ext-authz', (_req, res, body) => {
    res.writeHead(body.includes('allow') ? 200 : 403, { 'content-type': 'text/plain' });
    res.end(body.includes('allow') ? '' : 'denied: the body does not say allow');
  });
}

async function httpGateway(t: Test, body: string) {
  const app = await startBackend('httpbin');
  const authz = await startHttpAuthorizer();
  const gwPort = await freePort();
  const mesh = new MeshDir({
    'routes.yaml': doc(
      gateway('gw', gwPort),
      serviceEntry('httpbin', 'httpbin', [{ port: app.port }]),
      serviceEntry('ext-authz', 'ext-authz.foo.svc.cluster.local', [{ port: authz.port }], { namespace: 'foo', port: 8000 }),
      routeAll('gw', 'httpbin'),
    ),
    'authz.yaml': POLICY.replace('PROVIDER', 'sample-ext-authz-http'),
  });
  const meshFile = mesh.write('mesh.yaml', `extensionProviders:
- name: sample-ext-authz-http
  envoyExtAuthzHttp:
    service: ext-authz.foo.svc.cluster.local
    port: 8000
    timeout: 2s
    includeRequestHeadersInCheck: ["x-ext-authz"]
    includeRequestBodyInCheck:
${body}`);
  t.teardown(async () => {
    await app.close();
    await authz.close();
    mesh.cleanup();
  });
  const remora = await startRemora('gateway', [`${mesh.dir}/routes.yaml`, `${mesh.dir}/authz.yaml`], ['--mesh-config', meshFile]);
  t.teardown(() => remora.stop());
  const post = (payload: string | Buffer) => request(gwPort, '/post', { method: 'POST', headers: { host: 'httpbin', 'content-type': 'text/plain' }, body: payload });
  return { app, authz, post };
}

t.test('HTTP: the body within maxRequestBytes is checked and reaches the app unchanged; over it, 413', async (t) => {
  const { app, authz, post } = await httpGateway(t, '      maxRequestBytes: 64\n      allowPartialMessage: false\n');
  const ok = await post('please allow me');
  t.equal(ok.status, 200, 'the authorizer allowed it by its body');
  const check = authz.seen.at(-1)!;
  t.equal(check.body, 'please allow me', 'the check carries the body');
  t.equal(check.headers['x-envoy-auth-partial-body'], 'false', 'whole');
  t.equal(check.headers['content-length'], '15');
  t.equal(app.seen.at(-1)!.body, 'please allow me', 'the app gets the same bytes');

  const denied = await post('deny this one');
  t.equal(denied.status, 403, 'a body without "allow" is denied');
  t.equal(denied.body, 'denied: the body does not say allow');

  const checks = authz.seen.length;
  const apps = app.seen.length;
  const big = await post(`allow ${'x'.repeat(100)}`);
  t.equal(big.status, 413, 'over maxRequestBytes without allowPartialMessage: 413');
  t.equal(big.body, 'Payload Too Large');
  t.equal(authz.seen.length, checks, 'the authorizer was not asked');
  t.equal(app.seen.length, apps, 'nor the app');
});

t.test('HTTP: allowPartialMessage checks the first maxRequestBytes, and the whole body streams upstream', async (t) => {
  const { app, authz, post } = await httpGateway(t, '      maxRequestBytes: 16\n      allowPartialMessage: true\n');
  const payload = `allow ${'0123456789'.repeat(300_000)}`; // 3 MB: beyond the retry buffer too
  const r = await post(payload);
  t.equal(r.status, 200);
  const check = authz.seen.at(-1)!;
  t.equal(check.body, payload.slice(0, 16), 'the check gets the first maxRequestBytes');
  t.equal(check.headers['x-envoy-auth-partial-body'], 'true', 'and is told it is partial');
  t.equal(app.seen.at(-1)!.body.length, payload.length, 'the app gets every byte');
  t.ok(app.seen.at(-1)!.body === payload, 'in order');
});

t.test('gRPC: CheckRequest http.body, and raw_body with packAsBytes', async (t) => {
  const app = await startBackend('httpbin');
  const checks: CheckRequest[] = [];
  const server = new grpc.Server();
  server.addService(
    {
      Check: {
        path: '/envoy.service.auth.v3.Authorization/Check',
        requestStream: false,
        responseStream: false,
        requestSerialize: (m: CheckRequest) => Buffer.from(toBinary(CheckRequestSchema, m)),
        requestDeserialize: (b: Buffer) => fromBinary(CheckRequestSchema, b),
        responseSerialize: (m: CheckResponse) => Buffer.from(toBinary(CheckResponseSchema, m)),
        responseDeserialize: (b: Buffer) => fromBinary(CheckResponseSchema, b),
      },
    },
    {
      Check: (call: grpc.ServerUnaryCall<CheckRequest, CheckResponse>, cb: grpc.sendUnaryData<CheckResponse>) => {
        checks.push(call.request);
        const http = call.request.attributes?.request?.http;
        const body = http?.body !== '' ? http?.body : Buffer.from(http?.rawBody ?? new Uint8Array()).toString();
        cb(null, create(CheckResponseSchema, body?.includes('allow') ? { status: { code: 0 }, httpResponse: { case: 'okResponse', value: {} } } : { status: { code: 7 }, httpResponse: { case: 'deniedResponse', value: { status: { code: 403 } } } }));
      },
    },
  );
  const grpcPort = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))));
  t.teardown(async () => {
    server.forceShutdown();
    await app.close();
  });

  for (const packAsBytes of [false, true]) {
    const gwPort = await freePort();
    const mesh = new MeshDir({
      'routes.yaml': doc(
        gateway('gw', gwPort),
        serviceEntry('httpbin', 'httpbin', [{ port: app.port }]),
        `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ext-authz-grpc, namespace: foo }
spec:
  hosts: ["ext-authz.foo.svc.cluster.local"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - { number: 9000, name: grpc, protocol: GRPC }
  endpoints:
  - { address: 127.0.0.1, ports: { grpc: ${grpcPort} } }
`,
        routeAll('gw', 'httpbin'),
      ),
      'authz.yaml': POLICY.replace('PROVIDER', 'sample-ext-authz-grpc'),
    });
    const meshFile = mesh.write('mesh.yaml', `extensionProviders:
- name: sample-ext-authz-grpc
  envoyExtAuthzGrpc:
    service: ext-authz.foo.svc.cluster.local
    port: 9000
    timeout: 2s
    includeRequestBodyInCheck: { maxRequestBytes: 1024, allowPartialMessage: true, packAsBytes: ${packAsBytes} }
`);
    t.teardown(() => mesh.cleanup());
    const remora = await startRemora('gateway', [`${mesh.dir}/routes.yaml`, `${mesh.dir}/authz.yaml`], ['--mesh-config', meshFile]);
    t.teardown(() => remora.stop());
    const post = (payload: string) => request(gwPort, '/post', { method: 'POST', headers: { host: 'httpbin' }, body: payload });
    const ok = await post('allow: grpc body');
    t.equal(ok.status, 200, `packAsBytes ${packAsBytes}: allowed by the body`);
    const http = checks.at(-1)?.attributes?.request?.http;
    if (packAsBytes) {
      t.equal(Buffer.from(http?.rawBody ?? new Uint8Array()).toString(), 'allow: grpc body', 'raw_body holds the bytes');
      t.equal(http?.body, '', 'body is empty');
    } else {
      t.equal(http?.body, 'allow: grpc body', 'body holds the text');
      t.equal(http?.rawBody.length, 0, 'raw_body is empty');
    }
    t.equal(http?.headers['x-envoy-auth-partial-body'], 'false');
    t.equal(app.seen.at(-1)!.body, 'allow: grpc body', 'the app gets the body');
    t.equal((await post('nope')).status, 403, 'denied by the body');
  }
});
