// MeshConfig fields a sidecar applies, each with the istio.io task that uses it, against a
// real sidecar started with `--mesh-config`.
import { request as httpRequest } from 'node:http';
import type { Socket } from 'node:net';
import t from 'tap';
import { join } from 'node:path';
import { startBackend } from './helpers/backends.ts';
import { get, type Reply } from './helpers/http.ts';
import { serviceEntry } from './helpers/mesh.ts';
import { waitFor } from './helpers/net.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';

/** The peer identities the test's clients present, by the loopback address they connect from. */
const PEERS: Record<string, { principal: string; namespace: string }> = {
  '127.0.0.3': { principal: 'new-td/ns/default/sa/sleep', namespace: 'default' },
  '127.0.0.4': { principal: 'new-td/ns/sleep-allow/sa/sleep', namespace: 'sleep-allow' },
  '127.0.0.5': { principal: 'other-td/ns/default/sa/sleep', namespace: 'default' },
};
const peerOf = (socket: Socket) => PEERS[socket.remoteAddress ?? ''] ?? null;

function from(localAddress: string, port: number, path: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, localAddress, agent: false, headers: { host: 'httpbin.default:8000' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: <T>() => JSON.parse(body) as T });
      });
    });
    req.setTimeout(10_000, () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

t.test('trustDomainAliases: istio.io "Trust Domain Migration", a policy naming old-td admits new-td peers', async (t) => {
  const httpbin = await startBackend('httpbin');
  const mesh = new MeshDir({
    // The task's policy: only default/sleep, named in the old trust domain.
    'policy.yaml': `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: service-httpbin.default.svc.cluster.local
  namespace: default
spec:
  rules:
  - from:
    - source:
        principals:
        - old-td/ns/default/sa/sleep
    to:
    - operation:
        methods:
        - GET
  selector:
    matchLabels:
      app: httpbin
`,
  });
  // The task's meshConfig, as the istio ConfigMap's `mesh` key holds it.
  const meshConfig = new MeshDir({});
  const meshFile = meshConfig.write('mesh.yaml', 'trustDomain: new-td\ntrustDomainAliases:\n  - old-td\n');
  t.teardown(async () => {
    await httpbin.close();
    mesh.cleanup();
    meshConfig.cleanup();
  });
  const remora = await startRemora('sidecar', [mesh.dir], ['--app-port', String(httpbin.port), '--labels', 'app=httpbin', '--namespace', 'default', '--mesh-config', meshFile], { peerIdentity: peerOf });
  t.teardown(() => remora.stop());
  const inbound = remora.ports.inbound;
  t.equal((await from('127.0.0.3', inbound, '/ip')).status, 200, 'new-td/ns/default/sa/sleep: allowed through the alias');
  t.equal((await from('127.0.0.4', inbound, '/ip')).status, 403, 'sleep-allow/sleep: not named, denied');
  t.equal((await from('127.0.0.5', inbound, '/ip')).status, 403, 'a trust domain that is neither the mesh\'s nor an alias: denied');
});

t.test('defaultHttpRetryPolicy: a sidecar retries a failing service as the mesh says, and not when it says attempts 0', async (t) => {
  // Answers 503 to the first three tries of each path: Istio's default (2 retries) would give up.
  const seen = new Map<string, number>();
  const reviews = await startBackend('reviews', (req, res) => {
    const n = (seen.get(req.url ?? '') ?? 0) + 1;
    seen.set(req.url ?? '', n);
    res.writeHead(n <= 3 ? 503 : 200).end(`attempt ${n}`);
  });
  const mesh = new MeshDir({ 'reviews.yaml': serviceEntry('reviews', 'reviews', [{ port: reviews.port }], { port: 9080 }) });
  const meshConfig = new MeshDir({ 'mesh.yaml': 'defaultHttpRetryPolicy:\n  attempts: 3\n  retryOn: 5xx\n' });
  t.teardown(async () => {
    await reviews.close();
    mesh.cleanup();
    meshConfig.cleanup();
  });
  const remora = await startRemora('sidecar', [mesh.dir], ['--namespace', 'default', '--mesh-config', join(meshConfig.dir, 'mesh.yaml')]);
  t.teardown(() => remora.stop());
  const out = remora.ports.outbound;

  const r = await get(out, '/a/flaky', 'reviews:9080');
  t.equal(r.status, 200, 'attempts 3 on 5xx: the fourth try (third retry) succeeds');
  t.equal(r.body, 'attempt 4');
  t.equal(seen.get('/a/flaky'), 4, 'the service saw four tries');

  meshConfig.write('mesh.yaml', 'defaultHttpRetryPolicy:\n  attempts: 0\n');
  await waitFor('attempts 0 applies', async () => {
    const path = `/probe/${Math.random()}`;
    return (await get(out, path, 'reviews:9080')).status === 503 && seen.get(path) === 1;
  }, 15_000);
  const once = await get(out, '/b/flaky', 'reviews:9080');
  t.equal(once.status, 503, 'attempts 0: the 503 reaches the client');
  t.equal(seen.get('/b/flaky'), 1, 'the service saw one try');
});
