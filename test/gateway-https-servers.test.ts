// Several HTTPS servers on one gateway port each route through their own table, as istiod
// gives each its RDS (`https.<port>.<port name>.<gateway>.<namespace>`). A client that made
// its TLS handshake with one server's name cannot reach another server's hosts by sending
// their Host header — which would otherwise let it past a MUTUAL server's client-certificate
// check through a SIMPLE server's handshake.
import t from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { DevCa } from '@remora/proxy';
import { startBackend } from './helpers/backends.ts';
import { get } from './helpers/http.ts';
import { doc, serviceEntry } from './helpers/mesh.ts';
import { freePort } from './helpers/net.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';

interface Reply {
  readonly status: number;
  readonly body: string;
  readonly error: string;
}

/** One HTTP/1.1 request over TLS with this SNI and Host, with or without a client certificate. */
function httpsGet(port: number, servername: string, host: string, ca: string, client: { certChainPem: string; keyPem: string } | null): Promise<Reply> {
  return new Promise((resolve) => {
    let data = '';
    let error = '';
    const s = tlsConnect({
      host: '127.0.0.1',
      port,
      servername,
      ca,
      ...(client === null ? {} : { cert: client.certChainPem, key: client.keyPem }),
    });
    s.setTimeout(5_000, () => s.destroy(new Error('timed out')));
    s.once('secureConnect', () => s.write(`GET / HTTP/1.1\r\nhost: ${host}\r\nconnection: close\r\n\r\n`));
    s.on('data', (d: Buffer) => (data += d.toString('latin1')));
    s.on('error', (e) => (error = e.message));
    s.on('close', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? 0);
      resolve({ status, body: data.slice(data.indexOf('\r\n\r\n') + 4), error });
    });
  });
}

t.test('each HTTPS server of a port routes only its own hosts', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'remora-https-servers-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ca = await DevCa.create();
  const clientCa = await DevCa.create();
  const creds = join(dir, 'credentials');
  for (const [name, host] of [['admin-cert', 'admin.example.com'], ['www-cert', 'www.example.com']] as const) {
    const cert = await ca.issueServer({ dnsNames: [host] });
    mkdirSync(join(creds, name), { recursive: true });
    writeFileSync(join(creds, name, 'tls.crt'), cert.certChainPem);
    writeFileSync(join(creds, name, 'tls.key'), cert.keyPem);
    writeFileSync(join(creds, name, 'ca.crt'), clientCa.rootCertPem);
  }
  const admin = await startBackend('admin');
  const www = await startBackend('www');
  t.teardown(() => Promise.all([admin.close(), www.close()]));
  const port = await freePort();
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: gw, namespace: default }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: ${port}, name: https-admin, protocol: HTTPS }
    hosts: ["admin.example.com"]
    tls: { mode: MUTUAL, credentialName: admin-cert }
  - port: { number: ${port}, name: https-www, protocol: HTTPS }
    hosts: ["www.example.com"]
    tls: { mode: SIMPLE, credentialName: www-cert }
`,
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: admin, namespace: default }
spec:
  hosts: ["admin.example.com"]
  gateways: [gw]
  http:
  - route: [{ destination: { host: admin.internal } }]
`,
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: www, namespace: default }
spec:
  hosts: ["www.example.com"]
  gateways: [gw]
  http:
  - route: [{ destination: { host: www.internal } }]
`,
      serviceEntry('admin', 'admin.internal', [{ port: admin.port }]),
      serviceEntry('www', 'www.internal', [{ port: www.port }]),
    ),
  });
  t.teardown(() => mesh.cleanup());
  const gw = await startRemora('gateway', [mesh.dir], ['--credentials-dir', creds, '--log-level', 'warning']);
  t.teardown(() => gw.stop());
  const client = await clientCa.issueServer({ dnsNames: ['client.example.com'], clientAuth: true });

  const wwwReply = await httpsGet(port, 'www.example.com', 'www.example.com', ca.rootCertPem, null);
  t.equal(wwwReply.status, 200, `www through its own server ${wwwReply.error}`);
  t.match(wwwReply.body, /"name":"www"/);

  const adminReply = await httpsGet(port, 'admin.example.com', 'admin.example.com', ca.rootCertPem, client);
  t.equal(adminReply.status, 200, `admin with a client certificate ${adminReply.error}`);
  t.match(adminReply.body, /"name":"admin"/);

  const noCert = await httpsGet(port, 'admin.example.com', 'admin.example.com', ca.rootCertPem, null);
  t.equal(noCert.status, 0, 'the MUTUAL server refuses a handshake without a client certificate');

  // The handshake with www's server (no client certificate), then admin's Host: not routed.
  const crossed = await httpsGet(port, 'www.example.com', 'admin.example.com', ca.rootCertPem, null);
  t.equal(crossed.status, 404, 'admin is not reachable through the SIMPLE server');
  t.equal(admin.seen.length, 1, 'admin saw only the request with a client certificate');

  // istiod's names for the two tables.
  const dump = JSON.parse((await get(gw.ports.admin, '/config_dump?resource=dynamic_route_configs', 'localhost')).body) as { configs: { route_config: { name: string; virtual_hosts?: { domains: string[] }[] } }[] };
  const tables = Object.fromEntries(dump.configs.map((c) => [c.route_config.name, (c.route_config.virtual_hosts ?? []).flatMap((v) => v.domains)]));
  t.same(tables, { [`https.${port}.https-admin.gw.default`]: ['admin.example.com'], [`https.${port}.https-www.gw.default`]: ['www.example.com'] }, 'one table per server, with its hosts only');
});
