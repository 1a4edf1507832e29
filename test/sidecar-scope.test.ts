// Istio's Sidecar resource through a real sidecar: egress hosts decide which services the
// outbound listener routes to; outboundTrafficPolicy REGISTRY_ONLY answers every other host
// with Istio's block_all 502; removing the Sidecar (hot reload) widens the view again and
// unknown hosts go to PassthroughCluster (ALLOW_ANY).
import t from 'tap';
import { startBackend } from './helpers/backends.ts';
import { get } from './helpers/http.ts';
import { doc, serviceEntry } from './helpers/mesh.ts';
import { waitFor } from './helpers/net.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';

t.test('egress hosts and REGISTRY_ONLY on the outbound listener', async (t) => {
  const reviews = await startBackend('reviews');
  const billing = await startBackend('billing');
  const sidecar = `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: default, namespace: istio-system }
spec:
  egress:
  - hosts: ["./*", "istio-system/*"]
  outboundTrafficPolicy: { mode: REGISTRY_ONLY }
`;
  const mesh = new MeshDir({
    'services.yaml': doc(
      serviceEntry('reviews', 'reviews', [{ port: reviews.port }]),
      serviceEntry('billing', 'billing', [{ port: billing.port }], { namespace: 'finance' }),
    ),
    'sidecar.yaml': sidecar,
  });
  const remora = await startRemora('sidecar', [mesh.dir], ['--namespace', 'default']);
  t.teardown(async () => {
    await remora.stop();
    await reviews.close();
    await billing.close();
    mesh.cleanup();
  });
  const out = remora.ports.outbound;

  t.equal((await get(out, '/', 'reviews')).status, 200, 'a service of the own namespace');
  const blocked = await get(out, '/', 'billing.finance.svc.cluster.local');
  t.equal(blocked.status, 502, 'another namespace: outside the egress hosts, blocked');
  t.equal(billing.seen.length, 0);
  t.equal((await get(out, '/', 'example.org')).status, 502, 'a host the registry does not know: blocked');
  await waitFor('block_all in the access log', () => remora.accessLog.some((l) => l.includes('"example.org"') && l.includes(' block_all')));

  // Without the Sidecar: every namespace, and unknown hosts take Istio's default ALLOW_ANY:
  // istiod's allow_any virtual host sends them to PassthroughCluster, the original destination,
  // which a request made to the outbound port directly (not redirected) does not have: 503.
  mesh.write('sidecar.yaml', '');
  await waitFor('the wider view', async () => (await get(out, '/', 'billing.finance.svc.cluster.local')).status === 200);
  t.equal((await get(out, '/', 'example.org')).status, 503);
});
