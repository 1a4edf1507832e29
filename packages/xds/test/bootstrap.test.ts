// readBootstrap on istiod's own bootstrap goldens (the agent's Envoy bootstrap): the node,
// the ADS server behind the `xds-grpc` cluster's pipe, admin and static clusters; unknown
// fields rejected as Envoy rejects them, or warned about with --allow-unknown-static-fields.
import t from 'tap';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { JsonObject } from '@bufbuild/protobuf';
import { BootstrapError, readBootstrap, TypeUrl } from '@remora/xds';
import { tempDir } from './ads-server.ts';

/** `shared/corpus/istio-goldens/bootstrap` beside the repository or one of its parents (a worktree sits a level lower). */
const GOLDENS: string | null = (() => {
  for (let dir = dirname(join(import.meta.dirname, '../../..')); ; dir = dirname(dir)) {
    const candidate = join(dir, 'shared', 'corpus', 'istio-goldens', 'bootstrap');
    if (existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) return null;
  }
})();
const skip = GOLDENS === null ? 'shared/corpus/istio-goldens not found beside the repository or its parent directories' : false;
const golden = (name: string): JsonObject => JSON.parse(readFileSync(join(GOLDENS!, `${name}_golden.json`), 'utf8')) as JsonObject;

const BASE_CLUSTERS = ['prometheus_stats', 'agent', 'sds-grpc', 'xds-grpc'];
const EXPECTED: Record<string, { adminPort: number; clusters: string[] }> = {
  default: { adminPort: 15000, clusters: BASE_CLUSTERS },
  auth: { adminPort: 15000, clusters: BASE_CLUSTERS },
  authsds: { adminPort: 15000, clusters: BASE_CLUSTERS },
  all: { adminPort: 15005, clusters: [...BASE_CLUSTERS, 'zipkin', 'envoy_metrics_service', 'envoy_accesslog_service'] },
};

for (const [name, expected] of Object.entries(EXPECTED)) {
  t.test(`Istio's ${name} bootstrap golden`, { skip }, async (t) => {
    const info = readBootstrap(join(GOLDENS!, `${name}_golden.json`));
    t.same(info.issues, []);
    t.equal(info.node.id, 'sidecar~1.2.3.4~foo~bar');
    t.equal(info.node.cluster, 'istio-proxy');
    t.equal(info.node.metadata?.['ISTIO_VERSION'], 'binary-1.0');
    t.same(info.ads, {
      target: 'unix:/tmp/XDS',
      apiType: 'DELTA_GRPC',
      transport: { kind: 'plaintext' },
      cluster: 'xds-grpc',
      setNodeOnFirstMessageOnly: true,
      wildcard: [TypeUrl.Cluster, TypeUrl.Listener],
    });
    t.same(info.admin, { host: '127.0.0.1', port: expected.adminPort });
    t.same(info.staticClusters.map((c) => c.name), expected.clusters);
  });
}

t.test('an unknown field is rejected, naming it; allowed, it is a warning and the rest reads', { skip }, async (t) => {
  const json = golden('default');
  const clusters = (json['static_resources'] as JsonObject)['clusters'] as JsonObject[];
  clusters[3]!['future_field'] = true;
  (json['node'] as JsonObject)['shiny'] = 1;
  t.throws(() => readBootstrap(json), { name: 'BootstrapError', message: /node\.shiny: unknown field "shiny"/ });
  const info = readBootstrap(json, { allowUnknownStaticFields: true });
  t.same(
    info.issues.map((i) => [i.severity, i.path]),
    [
      ['warning', 'node.shiny'],
      ['warning', 'static_resources.clusters[3].future_field'],
    ],
  );
  t.equal(info.ads?.target, 'unix:/tmp/XDS');
  t.equal((clusters[3] as JsonObject)['future_field'], true, 'the caller\'s JSON is left as it was');
});

t.test('a value of the wrong type is rejected even with unknown fields allowed', { skip }, async (t) => {
  const json = golden('default');
  (json['admin'] as JsonObject)['profile_path'] = 42;
  const err = t.throws(() => readBootstrap(json, { allowUnknownStaticFields: true })) as BootstrapError;
  t.equal(err.issues.at(-1)?.path, 'admin.profile_path');
});

t.test('a file that is not JSON, or missing, is a BootstrapError naming it', async (t) => {
  const dir = tempDir('remora-bootstrap-');
  t.teardown(dir.remove);
  const path = join(dir.path, 'envoy-rev.json');
  writeFileSync(path, '{ not json');
  t.throws(() => readBootstrap(path), { name: 'BootstrapError', message: new RegExp(`^bootstrap ${path}: `) });
  t.throws(() => readBootstrap(join(dir.path, 'absent.json')), { name: 'BootstrapError', message: /ENOENT/ });
});

t.test('an ADS cluster on TCP with an UpstreamTlsContext from files, state of the world', { skip }, async (t) => {
  const json = golden('default');
  const ads = (json['dynamic_resources'] as JsonObject)['ads_config'] as JsonObject;
  ads['api_type'] = 'GRPC';
  delete ads['set_node_on_first_message_only'];
  const clusters = (json['static_resources'] as JsonObject)['clusters'] as JsonObject[];
  const xds = clusters[3]!;
  xds['load_assignment'] = {
    cluster_name: 'xds-grpc',
    endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 'istiod.istio-system.svc', port_value: 15012 } } } }] }],
  };
  xds['transport_socket'] = {
    name: 'envoy.transport_sockets.tls',
    typed_config: {
      '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
      sni: 'istiod.istio-system.svc',
      common_tls_context: {
        tls_certificates: [{ certificate_chain: { filename: '/etc/certs/cert-chain.pem' }, private_key: { filename: '/etc/certs/key.pem' } }],
        validation_context: { trusted_ca: { filename: '/etc/certs/root-cert.pem' } },
      },
    },
  };
  const info = readBootstrap(json);
  t.same(info.issues, []);
  t.same(info.ads, {
    target: 'istiod.istio-system.svc:15012',
    apiType: 'GRPC',
    transport: {
      kind: 'tls',
      ca: { filename: '/etc/certs/root-cert.pem' },
      cert: { filename: '/etc/certs/cert-chain.pem' },
      key: { filename: '/etc/certs/key.pem' },
      serverName: 'istiod.istio-system.svc',
    },
    cluster: 'xds-grpc',
    setNodeOnFirstMessageOnly: false,
    wildcard: [TypeUrl.Cluster, TypeUrl.Listener],
  });
});

t.test('what Remora cannot use is an issue naming the field', { skip }, async (t) => {
  const json = golden('default');
  const dynamic = json['dynamic_resources'] as JsonObject;
  ((dynamic['ads_config'] as JsonObject)['grpc_services'] as JsonObject[])[0] = { envoy_grpc: { cluster_name: 'nowhere' } };
  dynamic['lds_config'] = { path_config_source: { path: '/etc/lds.yaml' } };
  const info = readBootstrap(json);
  t.equal(info.ads, null);
  t.same(
    info.issues.map((i) => [i.severity, i.path, i.message]),
    [
      ['error', 'dynamic_resources.lds_config', 'only "ads" is supported, not "pathConfigSource"'],
      ['error', 'dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name', 'no static cluster "nowhere"'],
    ],
  );
  const noAds = golden('default');
  delete (noAds['dynamic_resources'] as JsonObject)['ads_config'];
  t.same(readBootstrap(noAds).issues.map((i) => i.path), ['dynamic_resources']);
});
