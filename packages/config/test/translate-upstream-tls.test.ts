// DestinationRule `trafficPolicy.tls` in the cluster model: every mode, file paths as given,
// `credentialName` resolved to a Kubernetes-TLS-secret-shaped directory, an explicit DISABLE
// kept apart from "unset" (it also turns auto mTLS off), and level merging (subset and port
// settings replace the service-level tls block).
//
// Reference: istio.io DestinationRule ClientTLSSettings (mode DISABLE is the default of a tls
// block; credentialName "the secret ... must contain tls.key and tls.crt ... and ca.crt";
// ISTIO_MUTUAL "the certificate fields ... are ignored"); pilot/pkg/networking/core/cluster_tls.go.
import t from 'tap';
import type { Cluster } from '@remora/config';
import { translateIstio } from '@remora/config';
import { cluster, load, PORTS, SIDECAR, translate } from './helpers/translate.ts';

const SE = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {number: 443, name: http-api, protocol: HTTP}
  - {number: 8443, name: http-alt, protocol: HTTP}
  endpoints:
  - {address: 127.0.0.1, labels: {version: v1}}
---
`;
const H = 'api.example.com';
const C443 = `outbound|443||${H}`;

function dr(body: string, name = 'api'): string {
  return `apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ${name}, namespace: default}\nspec:\n  host: ${H}\n${body}\n---\n`;
}
const tlsOf = (yaml: string, name = C443): Cluster['tls'] => cluster(translate(SE + yaml).config, name).tls;

t.test('no DestinationRule, or one without tls: tls is unset (null), so auto mTLS may apply', async (t) => {
  t.equal(tlsOf(''), null);
  t.equal(tlsOf(dr('  trafficPolicy: {loadBalancer: {simple: RANDOM}}')), null);
});

t.test('DISABLE is kept as an explicit choice; a tls block without mode is DISABLE', async (t) => {
  t.equal(tlsOf(dr('  trafficPolicy: {tls: {mode: DISABLE}}'))?.mode, 'DISABLE');
  t.equal(tlsOf(dr('  trafficPolicy: {tls: {sni: x.example.com}}'))?.mode, 'DISABLE', 'the proto default of mode');
});

t.test('SIMPLE: CA file, SANs, SNI and insecureSkipVerify as written', async (t) => {
  t.same(tlsOf(dr('  trafficPolicy:\n    tls: {mode: SIMPLE, caCertificates: /certs/ca.pem, subjectAltNames: [api.example.com, spiffe://x/y], sni: front.example.com}')), {
    mode: 'SIMPLE',
    clientCertificate: null,
    privateKey: null,
    caCertificates: '/certs/ca.pem',
    subjectAltNames: ['api.example.com', 'spiffe://x/y'],
    sni: 'front.example.com',
    insecureSkipVerify: false,
  });
  const bare = tlsOf(dr('  trafficPolicy: {tls: {mode: SIMPLE}}'))!;
  t.equal(bare.caCertificates, null, 'no CA file: system roots');
  t.equal(bare.sni, null, 'no SNI: the runtime sends the service host');
  t.equal(tlsOf(dr('  trafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true}}'))!.insecureSkipVerify, true);
  // SIMPLE never presents a client certificate, even when one is written.
  const stray = tlsOf(dr('  trafficPolicy: {tls: {mode: SIMPLE, clientCertificate: /c.pem, privateKey: /k.pem}}'))!;
  t.same([stray.clientCertificate, stray.privateKey], [null, null]);
});

t.test('MUTUAL: client certificate and key files', async (t) => {
  const m = tlsOf(dr('  trafficPolicy:\n    tls: {mode: MUTUAL, clientCertificate: /c/cert.pem, privateKey: /c/key.pem, caCertificates: /c/ca.pem}'))!;
  t.same([m.mode, m.clientCertificate, m.privateKey, m.caCertificates], ['MUTUAL', '/c/cert.pem', '/c/key.pem', '/c/ca.pem']);
});

t.test('credentialName: tls.crt / tls.key / ca.crt of the secret directory under the default credentials dir', async (t) => {
  const simple = tlsOf(dr('  trafficPolicy: {tls: {mode: SIMPLE, credentialName: api-ca}}'))!;
  t.same([simple.clientCertificate, simple.privateKey, simple.caCertificates], [null, null, '/etc/remora/credentials/api-ca/ca.crt']);
  const mutual = tlsOf(dr('  trafficPolicy: {tls: {mode: MUTUAL, credentialName: api-client}}'))!;
  t.same(
    [mutual.clientCertificate, mutual.privateKey, mutual.caCertificates],
    ['/etc/remora/credentials/api-client/tls.crt', '/etc/remora/credentials/api-client/tls.key', '/etc/remora/credentials/api-client/ca.crt'],
  );
  const skip = tlsOf(dr('  trafficPolicy: {tls: {mode: MUTUAL, credentialName: api-client, insecureSkipVerify: true}}'))!;
  t.equal(skip.caCertificates, null, 'insecureSkipVerify: no CA');
  t.equal(skip.clientCertificate, '/etc/remora/credentials/api-client/tls.crt');
});

t.test(
  'credentialName resolves under TranslateOptions.credentialsDir',
  async (t) => {
  const { resources } = load(SE + dr('  trafficPolicy: {tls: {mode: MUTUAL, credentialName: api-client}}'));
  const { config } = translateIstio(resources, SIDECAR, PORTS, { dnsRefreshMs: 60_000, credentialsDir: '/run/creds' });
  const tls = config.clusters.find((c) => c.name === C443)!.tls!;
  t.same([tls.clientCertificate, tls.privateKey, tls.caCertificates], ['/run/creds/api-client/tls.crt', '/run/creds/api-client/tls.key', '/run/creds/api-client/ca.crt']);
  },
);

t.test('credentialName must be a name, not a path', async (t) => {
  const r = translate(SE + dr('  trafficPolicy: {tls: {mode: SIMPLE, credentialName: ../../etc}}'));
  t.match(r.brief.join('\n'), /error DestinationRule default\/api spec\.trafficPolicy\.tls\.credentialName: credentialName "\.\.\/\.\.\/etc" must be a secret name/);
  t.equal(cluster(r.config, C443).tls!.caCertificates, null, 'nothing outside the credentials dir is read');
});

t.test('ISTIO_MUTUAL: certificate fields are ignored, SANs and SNI kept', async (t) => {
  const m = tlsOf(dr('  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL, subjectAltNames: ["spiffe://cluster.local/ns/default/sa/api"], sni: mesh.example}'))!;
  t.same(m, {
    mode: 'ISTIO_MUTUAL',
    clientCertificate: null,
    privateKey: null,
    caCertificates: null,
    subjectAltNames: ['spiffe://cluster.local/ns/default/sa/api'],
    sni: 'mesh.example',
    insecureSkipVerify: false,
  });
});

t.test('levels: subset tls replaces the service tls; port-level tls applies to its port only', async (t) => {
  const yaml =
    SE +
    dr(
      [
        '  trafficPolicy:',
        '    tls: {mode: SIMPLE}',
        '    portLevelSettings:',
        '    - port: {number: 8443}',
        '      tls: {mode: DISABLE}',
        '  subsets:',
        '  - name: v1',
        '    labels: {version: v1}',
        '    trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}',
      ].join('\n'),
    );
  const { config } = translate(yaml);
  t.equal(cluster(config, C443).tls?.mode, 'SIMPLE');
  t.equal(cluster(config, `outbound|8443||${H}`).tls?.mode, 'DISABLE');
  t.equal(cluster(config, `outbound|443|v1|${H}`).tls?.mode, 'ISTIO_MUTUAL');
});

t.test('service accounts: the entry subjectAltNames, and the endpoints or WorkloadEntries that name one', async (t) => {
  const yaml = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: shop}
spec:
  hosts: [payments.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  subjectAltNames: ["spiffe://cluster.local/ns/legacy/sa/payments-v0"]
  endpoints:
  - {address: 10.0.0.1, serviceAccount: payments}
  - {address: 10.0.0.2, serviceAccount: payments}
  - {address: 10.0.0.3}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ledger, namespace: shop}
spec:
  hosts: [ledger.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: ledger}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ledger-vm, namespace: shop}
spec: {address: 10.0.1.1, labels: {app: ledger}, serviceAccount: ledger-vm}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ledger-vm2, namespace: shop}
spec: {address: 10.0.1.2, labels: {app: ledger}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: anonymous, namespace: shop}
spec:
  hosts: [anonymous.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.2.1}]
`;
  const { config } = translate(yaml);
  t.same(cluster(config, 'outbound|80||payments.shop.svc.cluster.local').serviceAccounts, [
    'spiffe://cluster.local/ns/legacy/sa/payments-v0',
    'spiffe://cluster.local/ns/shop/sa/payments',
  ]);
  t.same(cluster(config, 'outbound|80||ledger.shop.svc.cluster.local').serviceAccounts, ['spiffe://cluster.local/ns/shop/sa/ledger-vm'], 'from the selected WorkloadEntries');
  t.same(cluster(config, 'outbound|80||anonymous.shop.svc.cluster.local').serviceAccounts, [], 'an endpoint without serviceAccount names none');
});

t.test('ISTIO_MUTUAL without subjectAltNames checks the service accounts; listed ones replace them', async (t) => {
  const se = SE.replace('{address: 127.0.0.1, labels: {version: v1}}', '{address: 127.0.0.1, labels: {version: v1}, serviceAccount: api}');
  t.same(cluster(translate(se).config, C443).serviceAccounts, ['spiffe://cluster.local/ns/default/sa/api']);
  t.same(tlsOf(dr('  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}'))?.subjectAltNames, [], 'no account named: no list');
  t.same(cluster(translate(se + dr('  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}')).config, C443).tls?.subjectAltNames, ['spiffe://cluster.local/ns/default/sa/api']);
  t.same(cluster(translate(se + dr('  trafficPolicy: {tls: {mode: ISTIO_MUTUAL, subjectAltNames: ["spiffe://cluster.local/ns/default/sa/other"]}}')).config, C443).tls?.subjectAltNames, [
    'spiffe://cluster.local/ns/default/sa/other',
  ]);
  t.same(cluster(translate(se + dr('  trafficPolicy: {tls: {mode: SIMPLE}}')).config, C443).tls?.subjectAltNames, [], 'SIMPLE keeps its own list');
});
