// A connection for which no filter chain matches is reset (TCP RST), as Envoy resets it:
// plaintext on a STRICT sidecar port (istio.io's mTLS tasks expect curl exit 56, "Connection
// reset by peer"), plaintext on a gateway's TLS port, and a TLS hello whose SNI names no
// server. A clean close (FIN) would look like an empty HTTP reply instead (curl exit 52).
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { DevCa, writeWorkloadFiles } from '@remora/proxy';
import { startBackend } from './helpers/backends.ts';
import { doc, routeAll, serviceEntry } from './helpers/mesh.ts';
import { freePort } from './helpers/net.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';

/** Runs curl (bounded by --max-time) and resolves with its exit code and error text. */
function curl(args: readonly string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn('curl', ['-sS', '--max-time', '5', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

const strictPa = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: istio-system }
spec:
  mtls: { mode: STRICT }
`;

t.test('STRICT: a plaintext request is reset, not answered with an empty reply (curl exit 56)', async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'remora-strict-reset-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const ca = await DevCa.create();
  await writeWorkloadFiles(work, await ca.issueWorkload({ namespace: 'default', serviceAccount: 'productpage' }));
  const app = await startBackend('productpage');
  t.teardown(() => app.close());
  const mesh = new MeshDir({ 'pa.yaml': strictPa });
  t.teardown(() => mesh.cleanup());
  const remora = await startRemora('sidecar', [mesh.dir], ['--app-port', String(app.port), '--certs-dir', work, '--log-level', 'warning']);
  t.teardown(() => remora.stop());

  const r = await curl([`http://127.0.0.1:${remora.ports.inbound}/productpage`]);
  t.equal(r.code, 56, `curl exit code (${r.stderr.trim()})`);
  t.match(r.stderr, /reset by peer/i);
  t.equal(app.seen.length, 0, 'nothing reached the app');
});

t.test('gateway TLS port: plaintext and a hello for an unknown name are reset', async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'remora-gw-reset-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const ca = await DevCa.create();
  const server = await ca.issueServer({ dnsNames: ['a.example.com'] });
  mkdirSync(join(work, 'a-cert'));
  writeFileSync(join(work, 'a-cert', 'tls.crt'), server.certChainPem);
  writeFileSync(join(work, 'a-cert', 'tls.key'), server.keyPem);
  writeFileSync(join(work, 'ca.pem'), ca.rootCertPem);
  const web = await startBackend('web');
  t.teardown(() => web.close());
  const tlsPort = await freePort();
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: gw, namespace: default }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: ${tlsPort}, name: https, protocol: HTTPS }
    hosts: ["a.example.com"]
    tls: { mode: SIMPLE, credentialName: a-cert }
`,
      routeAll('gw', 'web.example.internal'),
      serviceEntry('web', 'web.example.internal', [{ port: web.port }]),
    ),
  });
  t.teardown(() => mesh.cleanup());
  const remora = await startRemora('gateway', [mesh.dir], ['--labels', 'istio=ingressgateway', '--credentials-dir', work, '--log-level', 'warning']);
  t.teardown(() => remora.stop());

  const ok = await curl(['-o', '/dev/null', '--cacert', join(work, 'ca.pem'), '--resolve', `a.example.com:${tlsPort}:127.0.0.1`, `https://a.example.com:${tlsPort}/`]);
  t.equal(ok.code, 0, `the named server answers (${ok.stderr.trim()})`);
  const plain = await curl([`http://127.0.0.1:${tlsPort}/`]);
  t.equal(plain.code, 56, `plaintext on a TLS port (${plain.stderr.trim()})`);
  t.match(plain.stderr, /reset by peer/i);
  const unknown = await curl(['--cacert', join(work, 'ca.pem'), '--resolve', `z.example.com:${tlsPort}:127.0.0.1`, `https://z.example.com:${tlsPort}/`]);
  t.equal(unknown.code, 35, `no server for the name: the TLS connect fails (${unknown.stderr.trim()})`);
  t.match(unknown.stderr, /reset by peer/i);
  t.equal(web.seen.length, 1, 'only the named server reached the backend');
});
