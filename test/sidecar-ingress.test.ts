// A Sidecar's `ingress` listeners against a real sidecar: istio.io's "Sidecar TLS
// termination" task (the sidecar terminates HTTPS on port 9080 with the task's certificate
// files and forwards plaintext to `defaultEndpoint`), and an ingress listener with
// `captureMode: NONE` bound to its own address and port; an egress listener the app talks to
// directly (the Sidecar reference's no-iptables example, on an HTTP port), seeing its own hosts.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { startBackend } from './helpers/backends.ts';
import { get, request, type Reply } from './helpers/http.ts';
import { freePort } from './helpers/net.ts';
import { opensslAsync } from './helpers/openssl.ts';
import { doc, serviceEntry } from './helpers/mesh.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';

const HOST = 'httpbin.test.svc.cluster.local';

/** The task's certificates: an example.com root and a server certificate for httpbin's name. */
async function taskCertificates(dir: string): Promise<void> {
  const run = async (args: string[]) => {
    const r = await opensslAsync(args);
    if (r.code !== 0) throw new Error(`openssl ${args[0]}: ${r.out}`);
  };
  const f = (n: string) => join(dir, n);
  await run(['req', '-x509', '-sha256', '-nodes', '-days', '2', '-newkey', 'rsa:2048', '-subj', '/O=example Inc./CN=example.com', '-keyout', f('example.com.key'), '-out', f('example.com.crt')]);
  await run(['req', '-out', f('httpbin.csr'), '-newkey', 'rsa:2048', '-nodes', '-keyout', f('tls.key'), '-subj', `/CN=${HOST}/O=httpbin organization`, '-addext', `subjectAltName=DNS:${HOST}`]);
  await run(['x509', '-req', '-sha256', '-days', '2', '-CA', f('example.com.crt'), '-CAkey', f('example.com.key'), '-set_serial', '0', '-in', f('httpbin.csr'), '-out', f('tls.crt'), '-copy_extensions', 'copy']);
}

function httpsGet(port: number, path: string, ca: Buffer): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port, path, servername: HOST, ca, agent: false, headers: { host: `${HOST}:8443` }, timeout: 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: <T>() => JSON.parse(body) as T });
      });
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

t.test('Sidecar TLS termination: ingress port 9080 terminates HTTPS with the task\'s files, forwards to defaultEndpoint', async (t) => {
  const certs = mkdtempSync(join(tmpdir(), 'remora-ingress-tls-'));
  await taskCertificates(certs);
  const httpbin = await startBackend('httpbin');
  // The task's resources; the certificate paths are where the test wrote the task's secret,
  // and defaultEndpoint's port is the test's httpbin (the task's is 80).
  const mesh = new MeshDir({
    'peer-auth.yaml': `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: peer-auth
  namespace: test
spec:
  selector:
    matchLabels:
      app: httpbin
  mtls:
    mode: STRICT
  portLevelMtls:
    9080:
      mode: DISABLE
`,
    'sidecar.yaml': `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: ingress-sidecar
  namespace: test
spec:
  workloadSelector:
    labels:
      app: httpbin
      version: v1
  ingress:
  - port:
      number: 9080
      protocol: HTTPS
      name: external
    defaultEndpoint: 0.0.0.0:${httpbin.port}
    tls:
      mode: SIMPLE
      privateKey: "${join(certs, 'tls.key')}"
      serverCertificate: "${join(certs, 'tls.crt')}"
`,
  });
  t.teardown(async () => {
    await httpbin.close();
    mesh.cleanup();
    rmSync(certs, { recursive: true, force: true });
  });
  // Connections made to the inbound port directly count as addressed to --app-port: 9080 here.
  const remora = await startRemora('sidecar', [mesh.dir], ['--app-port', '9080', '--labels', 'app=httpbin,version=v1', '--namespace', 'test']);
  t.teardown(() => remora.stop());
  const port = remora.ports.inbound;
  const ca = readFileSync(join(certs, 'example.com.crt'));

  const r = await httpsGet(port, '/status/200', ca);
  t.equal(r.status, 200, 'curl --cacert example.com.crt https://httpbin.test.svc.cluster.local:8443/status/200: 200');
  t.equal(r.json<{ name: string; url: string }>().url, '/status/200', 'httpbin got the request, decrypted, at defaultEndpoint');
  t.equal(httpbin.seen.at(-1)?.headers['x-forwarded-proto'], 'https', 'the app hears the request came over https');
  await t.rejects(get(port, '/status/200', `${HOST}:8443`), 'plaintext on the TLS port is refused');

  const config = (await request(remora.ports.admin, '/config_dump')).body;
  t.ok(config.includes('inbound_0.0.0.0_9080'), 'the inbound listener is named after the ingress port');
  t.ok(config.includes('inbound|9080||'), 'its cluster is inbound|9080||');
});

t.test('Sidecar ingress with captureMode NONE: a listener bound to bind:port, forwarding to 127.0.0.1:PORT', async (t) => {
  const app = await startBackend('ratings');
  const port = await freePort();
  const mesh = new MeshDir({
    'sidecar.yaml': `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: no-capture
  namespace: bookinfo
spec:
  workloadSelector:
    labels:
      app: ratings
  ingress:
  - port:
      number: ${port}
      protocol: HTTP
      name: somename
    bind: 127.0.0.1
    captureMode: NONE
    defaultEndpoint: 127.0.0.1:${app.port}
  egress:
  - hosts:
    - "./*"
`,
  });
  t.teardown(async () => {
    await app.close();
    mesh.cleanup();
  });
  const remora = await startRemora('sidecar', [mesh.dir], ['--labels', 'app=ratings', '--namespace', 'bookinfo']);
  t.teardown(() => remora.stop());
  const r = await get(port, '/ratings/0', 'ratings.bookinfo:9080');
  t.equal(r.status, 200, 'the bound listener answers');
  t.equal(r.json<{ name: string }>().name, 'ratings', 'the request reached defaultEndpoint');
  t.notOk(remora.log.some((l) => /ingress listeners are not applied/.test(l)), 'no warning that ingress is ignored');
});

t.test('Sidecar egress listener with a port, bind 127.0.0.1 and captureMode NONE: the app talks to it directly, its hosts only', async (t) => {
  const ratings = await startBackend('ratings');
  const reviews = await startBackend('reviews');
  const port = await freePort();
  const mesh = new MeshDir({
    'services.yaml': doc(
      serviceEntry('ratings', 'ratings.bookinfo.svc.cluster.local', [{ port: ratings.port }], { namespace: 'bookinfo', port }),
      serviceEntry('reviews', 'reviews.bookinfo.svc.cluster.local', [{ port: reviews.port }], { namespace: 'bookinfo', port }),
    ),
    'sidecar.yaml': `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: no-ip-tables
  namespace: bookinfo
spec:
  workloadSelector:
    labels:
      app: productpage
  egress:
  - port:
      number: ${port}
      protocol: HTTP
      name: egresshttp
    captureMode: NONE
    bind: 127.0.0.1
    hosts:
    - "./ratings.bookinfo.svc.cluster.local"
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
`,
  });
  t.teardown(async () => {
    await ratings.close();
    await reviews.close();
    mesh.cleanup();
  });
  const remora = await startRemora('sidecar', [mesh.dir], ['--labels', 'app=productpage', '--namespace', 'bookinfo']);
  t.teardown(() => remora.stop());
  const r = await get(port, '/ratings/0', `ratings:${port}`);
  t.equal(r.status, 200, 'ratings through the bound egress listener');
  t.equal(r.json<{ name: string }>().name, 'ratings');
  const other = await get(port, '/reviews/0', `reviews:${port}`);
  t.equal(other.status, 502, 'reviews is not among the listener\'s hosts: REGISTRY_ONLY\'s block_all');
  t.equal(reviews.seen.length, 0, 'reviews never saw a request');
});
