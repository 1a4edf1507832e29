// `remora validate` prints every problem (file:line, resource, field, message) and exits
// non-zero; a valid mesh exits 0. Also the CLI's help and usage errors.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { formatIssue, type ListenerPorts, type ProxyNode } from '@remora/config';
import { loadMesh } from '@remora/config/envoy';
import { CORPUS, MeshDir, runCli } from './helpers/remora.ts';

t.test('a set of broken resources: each problem is named', async (t) => {
  const mesh = new MeshDir({
    'a-vs.yaml': `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: { exact: /a, prefix: /b }
    route:
    - destination: { host: reviews }
      weigth: 10
  - timeout: fast
    route:
    - destination: { host: reviews, port: { number: 70000 } }
`,
    'b-dr.yaml': `apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: { name: reviews, namespace: shop }
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: { simple: FASTEST }
  subsets:
  - { name: v1, labels: { version: v1 } }
  - { name: v1, labels: { version: v2 } }
`,
    'c-se.yaml': `apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: { name: ext }
spec:
  hosts: [api.example.com]
  resolution: STATIC
  ports: [{ number: 80, name: http, protocol: HTTP }]
  endpoints:
  - address: api.example.com
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: gw }
spec:
  servers:
  - port: { number: 0, name: http, protocol: HTTP }
    hosts: ["*"]
`,
    'd-syntax.yaml': 'kind: [unterminated\n',
    'e-deploy.yaml': 'apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: web }\nspec: {}\n',
    'f-version.yaml': 'apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: { name: x }\nspec: { hosts: [x] }\n',
  });
  t.teardown(() => mesh.cleanup());
  const { code, stdout } = await runCli(['validate', '-c', mesh.dir]);
  t.equal(code, 1, 'exit status 1');
  const f = (name: string) => join(mesh.dir, name);
  const expected = [
    `${f('a-vs.yaml')}:9: VirtualService default/reviews: spec.http[0].match[0].uri: only one of exact, prefix, regex may be set (found exact, prefix)`,
    `${f('a-vs.yaml')}:12: VirtualService default/reviews: spec.http[0].route[0].weigth: unknown field "weigth"`,
    `${f('a-vs.yaml')}:13: VirtualService default/reviews: spec.http[1].timeout:`,
    `${f('a-vs.yaml')}:15: VirtualService default/reviews: spec.http[1].route[0].destination.port.number:`,
    `${f('b-dr.yaml')}:7: DestinationRule shop/reviews: spec.trafficPolicy.loadBalancer.simple: must be one of`,
    `${f('b-dr.yaml')}:10: DestinationRule shop/reviews: spec.subsets[1].name:`,
    `${f('c-se.yaml')}:9: ServiceEntry default/ext: spec.endpoints[0].address:`,
    `${f('c-se.yaml')}:16: Gateway default/gw: spec.servers[0].port.number:`,
    `${f('d-syntax.yaml')}:2: YAML syntax:`,
    `${f('e-deploy.yaml')}:1: warning: Deployment default/web: ignored`,
    `${f('f-version.yaml')}:1: VirtualService default/x:`,
  ];
  const lines = stdout.trimEnd().split('\n');
  for (const want of expected) t.ok(lines.some((l) => l.startsWith(want)), `reports: ${want.slice(mesh.dir.length + 1)}`);
  t.match(lines[lines.length - 1], /^\d+ resources? valid; \d+ errors, 1 warning$/);
  const errorCount = Number(/; (\d+) errors/.exec(lines[lines.length - 1]!)![1]);
  t.ok(errorCount >= expected.length - 1, `counts every error (${errorCount})`);
});

const NODE: ProxyNode = {
  kind: 'sidecar',
  namespace: 'default',
  serviceAccount: 'default',
  labels: {},
  workloadName: 'test',
  clusterDomain: 'cluster.local',
  rootNamespace: 'istio-system',
  trustDomain: 'cluster.local',
  locality: '',
};
const PORTS: ListenerPorts = { bindAddress: '127.0.0.1', outboundPort: 15001, inboundPort: 15006, appPort: null, appAddress: '127.0.0.1' };

const BOOKINFO = join(CORPUS, 'istio-samples/bookinfo/networking');
t.test('Istio\'s bookinfo samples validate clean', { skip: existsSync(BOOKINFO) ? false : `corpus not found at ${BOOKINFO}` }, async (t) => {
  const dir = BOOKINFO;
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
  // In process (schemas compile once); the CLI path is the same loadMesh, exercised above.
  for (const file of files) {
    for (const kind of ['sidecar', 'gateway'] as const) {
      const node = { ...NODE, kind, labels: kind === 'gateway' ? { istio: 'ingressgateway' } : {} };
      const r = loadMesh([join(dir, file)], node, PORTS);
      const errors = r.issues.filter((i) => i.severity === 'error').map(formatIssue);
      t.same(errors, [], `${file} as a ${kind}`);
    }
  }
  const whole = await runCli(['validate', '-c', join(dir, 'virtual-service-reviews-90-10.yaml'), '-c', join(dir, 'destination-rule-all.yaml')]);
  t.equal(whole.code, 0, 'the CLI agrees on a pair of them');
});

t.test('help on every command, usage errors exit 2', async (t) => {
  for (const cmd of ['gateway', 'sidecar', 'validate']) {
    const r = await runCli([cmd, '--help']);
    t.equal(r.code, 0);
    t.match(r.stdout, new RegExp(`^usage: remora ${cmd} -c PATH`));
    t.match(r.stdout, /--config PATH/);
  }
  t.match((await runCli(['sidecar', '--help'])).stdout, /--app-port PORT/);
  t.notMatch((await runCli(['gateway', '--help'])).stdout, /--app-port/, 'gateway help lists only gateway options');
  const top = await runCli(['--help']);
  t.equal(top.code, 0);
  t.match(top.stdout, /gateway .*\n.*sidecar .*\n.*validate/);
  const bad = await runCli(['gateway', '-c', 'x', '--admin-port', 'abc']);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--admin-port must be a port number \(1-65535\), got "abc"/);
  const unknown = await runCli(['gateway', '--frobnicate']);
  t.equal(unknown.code, 2);
  t.match(unknown.stderr, /Unknown option '--frobnicate'/);
  const none = await runCli(['validate']);
  t.equal(none.code, 2);
  t.match(none.stderr, /no configuration given/);
  const missing = await runCli(['validate', '-c', '/nonexistent/mesh']);
  t.equal(missing.code, 1);
  t.match(missing.stdout, /\/nonexistent\/mesh: no such file or directory/);
});
