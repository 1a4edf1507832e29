// The DNS name table a sidecar's DNS proxy answers from, as istiod builds it for NDS
// (pkg/dns/server/name_table.go, BuildNameTable): which hosts, with which addresses, and the
// short name and namespace of Kubernetes-style hosts.
import t from 'tap';
import { TranslateContext } from '../src/translate/context.ts';
import { nameTable } from '../src/translate/name-table.ts';
import { ServiceRegistry } from '../src/translate/registry.ts';
import type { NameTableEntry, ProxyNode } from '@remora/config';
import { INGRESS, load, nodeWith, PORTS, SIDECAR } from './helpers/translate.ts';

const se = (name: string, spec: string, ns = 'default'): string =>
  `apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n${spec}\n---\n`;

function table(yaml: string, node: ProxyNode = SIDECAR): NameTableEntry[] {
  const ctx = new TranslateContext(load(yaml).resources, node, PORTS);
  return nameTable(ctx, new ServiceRegistry(ctx));
}

t.test('a service with VIPs answers with them; a Kubernetes-style host carries its short name and namespace', async (t) => {
  const entries = table(
    se('reviews', '  hosts: [reviews]\n  addresses: [10.96.0.10, "fd00::10"]\n  resolution: STATIC\n  ports: [{number: 9080, name: http, protocol: HTTP}]\n  endpoints: [{address: 10.0.1.1}]', 'bookinfo') +
      se('api', '  hosts: [api.example.com]\n  addresses: [240.0.0.1]\n  resolution: DNS\n  ports: [{number: 443, name: tls, protocol: TLS}]'),
  );
  t.same(entries, [
    { host: 'reviews.bookinfo.svc.cluster.local', addresses: ['10.96.0.10', 'fd00::10'], shortName: 'reviews', namespace: 'bookinfo' },
    { host: 'api.example.com', addresses: ['240.0.0.1'], shortName: '', namespace: '' },
  ]);
});

t.test('CIDR addresses are no answer (istiod keeps only what parses as an IP)', async (t) => {
  const entries = table(
    se('range', '  hosts: [db.internal]\n  addresses: [10.10.0.0/16]\n  resolution: NONE\n  ports: [{number: 5432, name: tcp, protocol: TCP}]') +
      se('mixed', '  hosts: [mixed.internal]\n  addresses: [10.20.0.0/16, 10.20.0.5]\n  resolution: NONE\n  ports: [{number: 5432, name: tcp, protocol: TCP}]'),
  );
  t.same(entries, [{ host: 'mixed.internal', addresses: ['10.20.0.5'], shortName: '', namespace: '' }]);
});

t.test('without a VIP: resolution NONE (headless) answers with its endpoints’ IPs, each once', async (t) => {
  // Istio allows a NONE entry no inline endpoints: they come from WorkloadEntries it selects.
  const we = (name: string, address: string): string =>
    `apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: ${name}, namespace: default}\nspec: {address: "${address}", labels: {app: db}}\n---\n`;
  const entries = table(
    se('db', '  hosts: [db]\n  resolution: NONE\n  location: MESH_INTERNAL\n  workloadSelector: {labels: {app: db}}\n  ports: [{number: 3306, name: tcp, protocol: TCP}, {number: 3307, name: tcp-admin, protocol: TCP}]') +
      we('db-1', '10.1.0.1') +
      we('db-2', '10.1.0.2') +
      we('db-1-again', '10.1.0.1') +
      we('db-3', 'fd00::2'),
  );
  t.same(entries, [{ host: 'db.default.svc.cluster.local', addresses: ['10.1.0.1', '10.1.0.2', 'fd00::2'], shortName: 'db', namespace: 'default' }]);
});

t.test('without a VIP: STATIC and DNS services, and NONE without endpoints or ports, have no entry (the pod’s resolvers answer)', async (t) => {
  const entries = table(
    se('static', '  hosts: [static.internal]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 10.2.0.1}]') +
      se('dns', '  hosts: [httpbin.org]\n  resolution: DNS\n  ports: [{number: 80, name: http, protocol: HTTP}]') +
      se('passthrough', '  hosts: [any.example.com]\n  resolution: NONE\n  ports: [{number: 80, name: http, protocol: HTTP}]') +
      se('noports', '  hosts: [noports.internal]\n  resolution: NONE\n  workloadSelector: {labels: {app: db}}') +
      `apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: db-1, namespace: default}\nspec: {address: 10.3.0.1, labels: {app: db}}\n`,
  );
  t.same(entries, []);
});

t.test('wildcard hosts are left out', async (t) => {
  const entries = table(se('wild', '  hosts: ["*.example.com", www.example.org]\n  addresses: [240.0.0.9]\n  resolution: NONE\n  ports: [{number: 443, name: tls, protocol: TLS}]'));
  t.same(
    entries.map((e) => e.host),
    ['www.example.org'],
  );
});

t.test('only what the proxy sees: exportTo and a Sidecar’s egress hosts narrow the table', async (t) => {
  const yaml =
    se('mine', '  hosts: [mine]\n  addresses: [10.96.1.1]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]') +
    se('hidden', '  hosts: [hidden]\n  exportTo: ["."]\n  addresses: [10.96.1.2]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]', 'other') +
    se('theirs', '  hosts: [theirs]\n  addresses: [10.96.1.3]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]', 'other');
  t.same(
    table(yaml).map((e) => e.host),
    ['mine.default.svc.cluster.local', 'theirs.other.svc.cluster.local'],
    'exportTo "." keeps a service in its own namespace',
  );
  const sidecar = `apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: default}\nspec:\n  egress: [{hosts: ["./*"]}]\n---\n`;
  t.same(
    table(yaml + sidecar).map((e) => e.host),
    ['mine.default.svc.cluster.local'],
    'a Sidecar egress of ./* hides the other namespace',
  );
  t.same(
    table(yaml + sidecar, nodeWith(INGRESS, { namespace: 'default' })).map((e) => e.host),
    ['mine.default.svc.cluster.local', 'theirs.other.svc.cluster.local'],
    'Sidecar resources do not apply to gateways',
  );
});

t.test('the cluster domain decides what is Kubernetes-style', async (t) => {
  const yaml = se('a', '  hosts: [a.ns1.svc.corp.example, b.ns1.svc.cluster.local]\n  addresses: [10.96.2.1]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]');
  t.same(table(yaml, nodeWith(SIDECAR, { clusterDomain: 'corp.example' })), [
    { host: 'a.ns1.svc.corp.example', addresses: ['10.96.2.1'], shortName: 'a', namespace: 'ns1' },
    { host: 'b.ns1.svc.cluster.local', addresses: ['10.96.2.1'], shortName: '', namespace: '' },
  ]);
});
