// The HTTP connection manager settings istiod gives each listener: the server header's name
// by listener class, and HTTP/1.0 acceptance from the node's HTTP10 metadata.
import t from 'tap';
import { BOOKINFO_SERVICES, INGRESS, nodeWith, PORTS, SIDECAR, translate } from './helpers/translate.ts';

const GATEWAY = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: gw, namespace: istio-system }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: 8080, name: http, protocol: HTTP }
    hosts: ["*"]
  - port: { number: 31400, name: tcp, protocol: TCP }
    hosts: ["*"]
`;

const settings = (yaml: string, node = SIDECAR) =>
  translate(yaml, node, { ...PORTS, appPort: 9080 }).config.listeners.map((l) => [
    l.name,
    l.connectionManager?.serverName ?? null,
    l.connectionManager?.serverHeaderTransformation ?? null,
    l.connectionManager?.httpProtocolOptions.acceptHttp10 ?? null,
  ]);

t.test('server name by listener class, always overwritten; HTTP/1.0 refused by default', async (t) => {
  t.same(settings(BOOKINFO_SERVICES), [
    ['virtualOutbound', 'envoy', 'OVERWRITE', false],
    ['0.0.0.0_9080', 'envoy', 'OVERWRITE', false],
    ['virtualInbound', 'istio-envoy', 'OVERWRITE', false],
    ['inbound_0.0.0.0_9080', 'istio-envoy', 'OVERWRITE', false],
  ]);
  t.same(
    settings(GATEWAY, INGRESS),
    [
      ['0.0.0.0_8080', 'istio-envoy', 'OVERWRITE', false],
      ['0.0.0.0_31400', null, null, null],
    ],
    'a TCP server has no HTTP connection manager',
  );
});

t.test('the node\'s HTTP10 metadata turns accept_http_10 on for every HTTP listener', async (t) => {
  t.same(
    settings(BOOKINFO_SERVICES, nodeWith(SIDECAR, { http10: true })).map((s) => s[3]),
    [true, true, true, true],
  );
  t.same(
    settings(GATEWAY, nodeWith(INGRESS, { http10: true })).map((s) => s[3]),
    [true, null],
  );
});
