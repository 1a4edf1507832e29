// AuthorizationPolicy CUSTOM end to end, from istio.io's ext-authz task: the MeshConfig
// (--mesh-config) declares the authorizer as an extension provider, a CUSTOM policy on the
// ingress gateway sends the requests for /headers to it, and a real authorizer written here
// decides — over HTTP (allow when `x-ext-authz: allow`, else 403 with a body) and over gRPC
// (envoy.service.auth.v3.Authorization/Check on a grpc-js server). Requests the policy does not
// match are never checked; an authorizer that is down or slow fails closed (statusOnError) or
// open (failOpen).
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import t from 'tap';
import { CheckRequestSchema, CheckResponseSchema, type CheckRequest, type CheckResponse } from '@remora/config/envoy/gen/envoy/service/auth/v3/external_auth_pb.js';
import { startBackend, type Backend } from './helpers/backends.ts';
import { get } from './helpers/http.ts';
import { doc, gateway, routeAll, serviceEntry } from './helpers/mesh.ts';
import { freePort, waitFor } from './helpers/net.ts';
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
    - operation: { paths: ["/headers"] }
`;

/** istio.io's sample ext-authz HTTP server: allow on `x-ext-authz: allow`, else 403 with a body; `slow` answers after 2 s. */
async function startHttpAuthorizer(): Promise<Backend> {
  return startBackend('ext-authz', (req, res) => {
    const v = req.headers['x-ext-authz'];
    const answer = (): void => {
      if (v === 'allow') {
        res.writeHead(200, { 'x-ext-authz-check-result': 'allowed', 'x-ext-authz-additional-header-override': 'from-authz' });
        res.end();
      } else {
        res.writeHead(403, { 'x-ext-authz-check-result': 'denied', 'content-type': 'text/plain' });
        res.end(`denied by ext_authz for not found header \`x-ext-authz: allow\` in the request`);
      }
    };
    if (v === 'slow') setTimeout(answer, 2_000);
    else answer();
  });
}

function meshConfig(providers: string): string {
  return `# the \`mesh\` key of the istio ConfigMap
extensionProviders:
${providers}`;
}

function httpProvider(port: number, extra = ''): string {
  return `- name: sample-ext-authz-http
  envoyExtAuthzHttp:
    service: ext-authz.foo.svc.cluster.local
    port: ${port}
    includeRequestHeadersInCheck: ["x-ext-authz"]
    headersToUpstreamOnAllow: ["x-ext-authz-check-result"]
    headersToDownstreamOnDeny: ["x-ext-authz-check-result"]
${extra}`;
}

t.test('HTTP authorizer: istio.io ext-authz task on the ingress gateway', async (t) => {
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
  const meshFile = mesh.write('mesh.yaml', meshConfig(httpProvider(8000, '    timeout: 0.5s\n')));
  const remora = await startRemora('gateway', [mesh.dir + '/routes.yaml', mesh.dir + '/authz.yaml'], ['--mesh-config', meshFile]);
  t.teardown(async () => {
    await remora.stop();
    await app.close();
    await authz.close();
    mesh.cleanup();
  });

  t.test('a request the CUSTOM rules do not match is not checked', async (t) => {
    const before = authz.seen.length;
    const r = await get(gwPort, '/ip', 'httpbin', { 'x-ext-authz': 'deny' });
    t.equal(r.status, 200);
    t.equal(authz.seen.length, before, 'the authorizer saw nothing');
  });

  t.test('allowed: the upstream gets the authorizer\'s allowed headers, not the others', async (t) => {
    const before = app.seen.length;
    const r = await get(gwPort, '/headers?x=1', 'httpbin', { 'x-ext-authz': 'allow', 'x-not-for-authz': 'secret' });
    t.equal(r.status, 200);
    const check = authz.seen.at(-1)!;
    t.equal(check.method, 'GET', 'the check keeps the method');
    t.equal(check.url, '/headers?x=1', 'and the path');
    t.equal(check.headers['x-ext-authz'], 'allow', 'the included header is sent');
    t.equal(check.headers['x-not-for-authz'], undefined, 'others are not');
    const seen = app.seen.slice(before).at(-1)!;
    t.equal(seen.headers['x-ext-authz-check-result'], 'allowed', 'headersToUpstreamOnAllow reach the app');
    t.equal(seen.headers['x-ext-authz-additional-header-override'], undefined, 'headers not listed do not');
  });

  t.test('denied: the client gets the authorizer\'s status, body and allowed headers', async (t) => {
    const before = app.seen.length;
    const r = await get(gwPort, '/headers', 'httpbin', { 'x-ext-authz': 'deny' });
    t.equal(r.status, 403);
    t.match(r.body, /denied by ext_authz for not found header `x-ext-authz: allow`/);
    t.equal(r.headers['x-ext-authz-check-result'], 'denied');
    t.equal(app.seen.length, before, 'the app saw nothing');
    await waitFor('access log UAEX ext_authz_denied', () => remora.accessLog.some((l) => / 403 UAEX ext_authz_denied /.test(l)));
  });

  t.test('slow authorizer: bounded by the provider timeout, then statusOnError', async (t) => {
    const start = performance.now();
    const r = await get(gwPort, '/headers', 'httpbin', { 'x-ext-authz': 'slow' });
    const ms = performance.now() - start;
    t.equal(r.status, 403);
    t.ok(ms < 1_500, `answered in ${Math.round(ms)} ms, well before the authorizer's 2 s`);
  });

  t.test('authorizer down: 403 (statusOnError), then allowed once the MeshConfig says failOpen', async (t) => {
    await authz.close();
    const r = await get(gwPort, '/headers', 'httpbin', { 'x-ext-authz': 'allow' });
    t.equal(r.status, 403, 'fails closed');
    await waitFor('access log UAEX ext_authz_error', () => remora.accessLog.some((l) => / 403 UAEX ext_authz_error /.test(l)));
    mesh.write('mesh.yaml', meshConfig(httpProvider(8000, '    timeout: 0.5s\n    failOpen: true\n    statusOnError: "503"\n')));
    await waitFor('failOpen takes effect', async () => (await get(gwPort, '/headers', 'httpbin', {})).status === 200);
    t.pass('the watched MeshConfig changed the filter: the request goes through');
  });
});

t.test('a CUSTOM policy naming no known provider denies what its rules match', async (t) => {
  const app = await startBackend('httpbin');
  const gwPort = await freePort();
  const mesh = new MeshDir({
    'routes.yaml': doc(gateway('gw', gwPort), serviceEntry('httpbin', 'httpbin', [{ port: app.port }]), routeAll('gw', 'httpbin')),
    'authz.yaml': POLICY.replace('PROVIDER', 'nobody'),
  });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(async () => {
    await remora.stop();
    await app.close();
    mesh.cleanup();
  });
  t.equal((await get(gwPort, '/headers', 'httpbin', { 'x-ext-authz': 'allow' })).status, 403, 'matched: denied');
  t.equal((await get(gwPort, '/ip', 'httpbin')).status, 200, 'not matched: served');
  t.ok(remora.log.some((l) => /available providers are \[\] but found "nobody"/.test(l)), 'a warning says why');
});

t.test('gRPC authorizer: envoy.service.auth.v3.Authorization/Check', async (t) => {
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
        const v = call.request.attributes?.request?.http?.headers['x-ext-authz'];
        if (v === 'allow') {
          cb(null, create(CheckResponseSchema, {
            status: { code: 0 },
            httpResponse: { case: 'okResponse', value: { headers: [{ header: { key: 'x-ext-authz-check-result', value: 'allowed' } }] } },
          }));
        } else {
          cb(null, create(CheckResponseSchema, {
            status: { code: 7 },
            httpResponse: { case: 'deniedResponse', value: { status: { code: 401 }, body: 'denied by gRPC ext_authz', headers: [{ header: { key: 'x-ext-authz-check-result', value: 'denied' } }] } },
          }));
        }
      },
    },
  );
  const grpcPort = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );
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
  const meshFile = mesh.write('mesh.yaml', meshConfig(`- name: sample-ext-authz-grpc
  envoyExtAuthzGrpc:
    service: ext-authz.foo.svc.cluster.local
    port: 9000
    timeout: 2s
`));
  const remora = await startRemora('gateway', [mesh.dir + '/routes.yaml', mesh.dir + '/authz.yaml'], ['--mesh-config', meshFile]);
  t.teardown(async () => {
    await remora.stop();
    await app.close();
    server.forceShutdown();
    mesh.cleanup();
  });

  const before = app.seen.length;
  const ok = await get(gwPort, '/headers', 'httpbin', { 'x-ext-authz': 'allow' });
  t.equal(ok.status, 200, 'allowed');
  t.equal(app.seen.slice(before).at(-1)?.headers['x-ext-authz-check-result'], 'allowed', 'OkHttpResponse headers reach the app');
  const http = checks.at(-1)?.attributes?.request?.http;
  t.equal(http?.method, 'GET');
  t.equal(http?.path, '/headers');
  t.equal(http?.host, 'httpbin');
  t.equal(http?.protocol, 'HTTP/1.1');
  t.equal(http?.headers[':authority'], 'httpbin', 'pseudo-headers are in the map');
  t.equal(checks.at(-1)?.attributes?.source?.address?.address.case, 'socketAddress', 'the source address is sent');

  const denied = await get(gwPort, '/headers', 'httpbin', { 'x-ext-authz': 'deny' });
  t.equal(denied.status, 401, 'DeniedHttpResponse status');
  t.equal(denied.body, 'denied by gRPC ext_authz', 'and body');
  t.equal(denied.headers['x-ext-authz-check-result'], 'denied', 'and headers');

  const n = checks.length;
  t.equal((await get(gwPort, '/ip', 'httpbin', { 'x-ext-authz': 'deny' })).status, 200, 'unmatched: not checked');
  t.equal(checks.length, n);

  server.forceShutdown();
  t.equal((await get(gwPort, '/headers', 'httpbin', { 'x-ext-authz': 'allow' })).status, 403, 'authorizer down: 403');
});
