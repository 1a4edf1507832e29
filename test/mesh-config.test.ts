// MeshConfig fields a sidecar applies, each with the istio.io task that uses it, against a
// real sidecar started with `--mesh-config`.
import { request as httpRequest } from 'node:http';
import type { Socket } from 'node:net';
import t from 'tap';
import { startBackend } from './helpers/backends.ts';
import type { Reply } from './helpers/http.ts';
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
