// Auto mTLS and ISTIO_MUTUAL check who the server is, not only that the mesh roots vouch for
// it: the server certificate must carry one of the service's accounts — its endpoints' (or
// WorkloadEntries') `serviceAccount` as spiffe://<trust-domain>/ns/<ns>/sa/<sa>, and the
// ServiceEntry's `subjectAltNames` — unless a DestinationRule lists `subjectAltNames` itself.
// A gateway reaching a sidecar that presents another identity gets 503 UF, with the TLS error
// in the access log.
//
// Reference: istiod's cluster builder (auto mTLS and ISTIO_MUTUAL use the service accounts of
// the service as the SAN matchers unless the DestinationRule's tls lists subjectAltNames).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { DevCa, writeWorkloadFiles } from '@remora/proxy';
import { startBackend } from './helpers/backends.ts';
import { get } from './helpers/http.ts';
import { doc } from './helpers/mesh.ts';
import { freePort, waitFor } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

const CART = 'spiffe://cluster.local/ns/shop/sa/cart';

let gw: InProcessRemora;
let gwPort: number;
const cleanups: (() => Promise<void> | void)[] = [];

/** A ServiceEntry in namespace shop whose one endpoint is the cart sidecar, auto mTLS by label. */
const entry = (name: string, sidecarPort: number, extra: { serviceAccount?: string; subjectAltNames?: string[] } = {}): string => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ${name}, namespace: shop }
spec:
  hosts: ["${name}"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 80, name: http, protocol: HTTP }]
${extra.subjectAltNames ? `  subjectAltNames: [${extra.subjectAltNames.map((s) => `"${s}"`).join(', ')}]\n` : ''}  endpoints:
  - address: 127.0.0.1
    ports: { http: ${sidecarPort} }
    labels: { app: ${name}, security.istio.io/tlsMode: istio }
${extra.serviceAccount ? `    serviceAccount: ${extra.serviceAccount}\n` : ''}`;

/** A VirtualService on the gateway: Host `<name>.example.com` goes to service `<name>`. */
const route = (name: string): string => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: ${name}, namespace: shop }
spec:
  hosts: ["${name}.example.com"]
  gateways: [istio-system/gw]
  http:
  - route: [{ destination: { host: ${name}, port: { number: 80 } } }]
`;

const dr = (name: string, tls: string): string => `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: ${name}, namespace: shop }
spec:
  host: ${name}
  trafficPolicy: { tls: ${tls} }
`;

t.before(async () => {
  const work = mkdtempSync(join(tmpdir(), 'remora-server-identity-'));
  cleanups.push(() => rmSync(work, { recursive: true, force: true }));
  const ca = await DevCa.create();
  // The only workload: a sidecar whose certificate says shop/cart.
  await writeWorkloadFiles(join(work, 'cart'), await ca.issueWorkload({ namespace: 'shop', serviceAccount: 'cart' }));
  await writeWorkloadFiles(join(work, 'gw'), await ca.issueWorkload({ namespace: 'istio-system', serviceAccount: 'istio-ingressgateway-service-account' }));
  const app = await startBackend('cart');
  cleanups.push(() => app.close());
  const cartMesh = new MeshDir({ 'pa.yaml': 'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: default, namespace: shop }\nspec: { mtls: { mode: STRICT } }\n' });
  cleanups.push(() => cartMesh.cleanup());
  const cart = await startRemora('sidecar', [cartMesh.dir], ['--app-port', String(app.port), '--namespace', 'shop', '--service-account', 'cart', '--labels', 'app=cart', '--certs-dir', join(work, 'cart'), '--log-level', 'warning']);
  cleanups.push(() => cart.stop());
  const port = cart.ports.inbound;

  gwPort = await freePort();
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: gw, namespace: istio-system }
spec:
  selector: { istio: ingressgateway }
  servers: [{ port: { number: ${gwPort}, name: http, protocol: HTTP }, hosts: ["*/*"] }]
`,
      // The service account written on the endpoint is cart's own: the handshake is accepted.
      entry('cart', port, { serviceAccount: 'cart' }),
      route('cart'),
      // The endpoint says payments, the server is cart: refused.
      entry('payments', port, { serviceAccount: 'payments' }),
      route('payments'),
      // ISTIO_MUTUAL from a DestinationRule without subjectAltNames: the service accounts too.
      entry('billing', port, { serviceAccount: 'billing' }),
      dr('billing', '{ mode: ISTIO_MUTUAL }'),
      route('billing'),
      // A DestinationRule's subjectAltNames replace the service accounts.
      entry('ledger', port, { serviceAccount: 'ledger' }),
      dr('ledger', `{ mode: ISTIO_MUTUAL, subjectAltNames: ["${CART}"] }`),
      route('ledger'),
      // The ServiceEntry's own subjectAltNames count as service accounts.
      entry('shipping', port, { serviceAccount: 'shipping', subjectAltNames: [CART] }),
      route('shipping'),
      // No account named anywhere: any identity the mesh roots vouch for (Istio sets no SAN matcher).
      entry('legacy', port),
      route('legacy'),
    ),
  });
  cleanups.push(() => mesh.cleanup());
  gw = await startRemora('gateway', [mesh.dir], ['--labels', 'istio=ingressgateway', '--certs-dir', join(work, 'gw'), '--log-level', 'warning']);
  cleanups.push(() => gw.stop());
});

t.teardown(async () => {
  for (const c of cleanups.reverse()) await c();
});

const call = (name: string) => get(gwPort, '/', `${name}.example.com`);
const logFor = (name: string): string | undefined => [...gw.accessLog].reverse().find((l) => l.includes(`"${name}.example.com"`));

t.test('auto mTLS: a server with the endpoint serviceAccount is accepted', async (t) => {
  const r = await call('cart');
  t.equal(r.status, 200, r.body);
});

t.test('auto mTLS: a server presenting another identity than the endpoint serviceAccount → 503 UF with the TLS error', async (t) => {
  const r = await call('payments');
  t.equal(r.status, 503, r.body);
  t.match(r.body, /upstream connect error/);
  await waitFor('the access log line', () => logFor('payments') !== undefined);
  const line = logFor('payments')!;
  t.match(line, /" 503 UF,URX /);
  t.match(line, new RegExp(`"TLS_error:\\|CERTIFICATE_VERIFY_FAILED:server SPIFFE ID \\[${CART}\\] is none of \\[spiffe://cluster\\.local/ns/shop/sa/payments\\]:TLS_error_end"`));
});

t.test('ISTIO_MUTUAL without subjectAltNames checks the service accounts as well', async (t) => {
  const r = await call('billing');
  t.equal(r.status, 503, r.body);
  await waitFor('the access log line', () => logFor('billing') !== undefined);
  t.match(logFor('billing')!, /" 503 UF,URX .*CERTIFICATE_VERIFY_FAILED:server SPIFFE ID/);
});

t.test("a DestinationRule's subjectAltNames replace the service accounts", async (t) => {
  t.equal((await call('ledger')).status, 200);
});

t.test("the ServiceEntry's subjectAltNames are accepted alongside its endpoints' accounts", async (t) => {
  t.equal((await call('shipping')).status, 200);
});

t.test('no service account named: any identity of the mesh roots is accepted', async (t) => {
  t.equal((await call('legacy')).status, 200);
});
