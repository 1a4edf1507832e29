// istio.io's "Egress Gateways" task (HTTP traffic to edition.cnn.com): the sidecar sends
// edition.cnn.com to the egress gateway's `cnn` subset, the egress gateway sends it on to
// edition.cnn.com. One VirtualService holds both legs, each match block bound to one side by
// `gateways`. Without Kubernetes the egress gateway's Service is a ServiceEntry in istio-system.
import t from 'tap';
import type { ProxyNode } from '@remora/config';
import { cluster, INGRESS, nodeWith, SIDECAR, targets, translate, vhost } from './helpers/translate.ts';

const EGRESS: ProxyNode = nodeWith(INGRESS, {
  serviceAccount: 'istio-egressgateway-service-account',
  labels: { istio: 'egressgateway', app: 'istio-egressgateway' },
  workloadName: 'istio-egressgateway',
});
const SLEEP: ProxyNode = nodeWith(SIDECAR, { serviceAccount: 'sleep', labels: { app: 'sleep' }, workloadName: 'sleep' });
const EGRESS_HOST = 'istio-egressgateway.istio-system.svc.cluster.local';

/** The task's resources, in `default` as the task applies them; `subset` is what the mesh leg routes to. */
function task(subset = 'cnn'): string {
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cnn}
spec:
  hosts: [edition.cnn.com]
  ports:
  - {number: 80, name: http-port, protocol: HTTP}
  - {number: 443, name: https, protocol: HTTPS}
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: istio-egressgateway, namespace: istio-system}
spec:
  hosts: [${EGRESS_HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 80, name: http2, protocol: HTTP}
  endpoints:
  - {address: 10.0.0.9, labels: {istio: egressgateway}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-egressgateway}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [edition.cnn.com]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: egressgateway-for-cnn}
spec:
  host: ${EGRESS_HOST}
  subsets:
  - name: cnn
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: direct-cnn-through-egress-gateway}
spec:
  hosts: [edition.cnn.com]
  gateways: [istio-egressgateway, mesh]
  http:
  - match:
    - gateways: [mesh]
      port: 80
    route:
    - destination: {host: ${EGRESS_HOST}, subset: ${subset}, port: {number: 80}}
      weight: 100
  - match:
    - gateways: [istio-egressgateway]
      port: 80
    route:
    - destination: {host: edition.cnn.com, port: {number: 80}}
      weight: 100
`;
}

t.test('the egress gateway translates its own leg only: no warning about the mesh leg\'s subset', async (t) => {
  const out = translate(task(), EGRESS);
  t.same(out.brief, []);
  const routes = vhost(out.config, 'edition.cnn.com:80', 'http.80').routes;
  t.same(routes.map(targets), [[['outbound|80||edition.cnn.com', 100]]], 'edition.cnn.com goes out to edition.cnn.com');
});

t.test('the sidecar routes edition.cnn.com to the egress gateway\'s cnn subset, which its DestinationRule defines', async (t) => {
  const out = translate(task(), SLEEP);
  t.same(out.brief, []);
  const routes = vhost(out.config, 'edition.cnn.com:80').routes;
  t.same(routes.map(targets), [[[`outbound|80|cnn|${EGRESS_HOST}`, 100]]]);
  t.equal(cluster(out.config, `outbound|80|cnn|${EGRESS_HOST}`).endpoints.length, 1, 'the subset cluster exists, with the gateway endpoint');
});

t.test('a subset the DestinationRule does not define is still warned about, by the proxy that routes to it', async (t) => {
  const warning = `warning VirtualService default/direct-cnn-through-egress-gateway spec.http[0].route[0].destination.subset: subset cnn2 of ${EGRESS_HOST} is not defined by any DestinationRule; requests routed here get 503 NC`;
  t.same(translate(task('cnn2'), SLEEP).brief, [warning]);
  t.same(translate(task('cnn2'), EGRESS).brief, [], 'the egress gateway never routes there');
});
