// `remora proxy-config`'s filters and output formats as istioctl applies them, and the endpoints
// table from Envoy's /clusters. (istioctl's goldens: proxy-config.test.ts; bad input:
// proxy-config-errors.test.ts.)
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import t from 'tap';
import { parse as parseYaml } from 'yaml';
import { EDS_DUMP, FULL_DUMP, GOLDENS, pc, read, ROUTES_DUMP, rows } from './helpers/proxy-config.ts';
import { CLI, MeshDir } from './helpers/remora.ts';

t.test('filters and output formats, as istioctl applies them', async (t) => {
  t.test('clusters: --fqdn, --direction, --subset, --port (substrings of the cluster name), -o json|yaml', async (t) => {
    const httpbin = [['httpbin.default.svc.cluster.local', '8000', 'http', 'inbound-vip', 'EDS']];
    t.same(rows(await pc(t, 'clusters', '-f', FULL_DUMP, '--fqdn', 'httpbin')), httpbin);
    t.same(rows(await pc(t, 'clusters', '-f', FULL_DUMP, '--direction', 'inbound')), httpbin);
    t.same(rows(await pc(t, 'clusters', '-f', FULL_DUMP, '--subset', 'nope')), [], 'a filter that matches nothing leaves the header');
    t.same(
      rows(await pc(t, 'clusters', '-f', FULL_DUMP)).map((r) => r[0]),
      ['agent', 'httpbin.default.svc.cluster.local', 'prometheus_stats'],
      'sorted by service FQDN',
    );
    const json = JSON.parse(await pc(t, 'clusters', '-f', FULL_DUMP, '--port', '8000', '-o', 'json')) as Array<Record<string, unknown>>;
    t.same(json.map((c) => c.name), ['inbound-vip|8000|http|httpbin.default.svc.cluster.local']);
    t.notOk('@type' in json[0]!, 'the cluster itself, not its Any wrapper');
    t.same(parseYaml(await pc(t, 'clusters', '-f', FULL_DUMP, '--port', '8000', '-o', 'yaml')), json, 'YAML holds the same resources');
  });

  t.test('listeners: --port, --type, --address, --verbose=false', async (t) => {
    t.equal(await pc(t, 'listeners', '-f', FULL_DUMP, '--port', '15021', '--verbose=false'), 'ADDRESSES PORT  TYPE\n0.0.0.0   15021 HTTP\n');
    t.equal(await pc(t, 'listeners', '-f', FULL_DUMP, '--type', 'http+tcp', '--verbose=false'), 'ADDRESSES PORT TYPE\n          0    HTTP+TCP\n');
    t.equal(
      await pc(t, 'listeners', '-f', FULL_DUMP, '--type', 'HTTP'),
      'ADDRESSES PORT  MATCH DESTINATION\n0.0.0.0   15021 ALL   Inline Route: /healthz/ready*\n',
      'verbose by default: one row per filter chain',
    );
    const json = JSON.parse(await pc(t, 'listeners', '-f', FULL_DUMP, '--address', '0.0.0.0', '-o', 'json')) as Array<{ address: { socket_address: { port_value: number } } }>;
    t.same(json.map((l) => l.address.socket_address.port_value), [15021]);
  });

  t.test('routes: --name, --verbose=false, -o json', async (t) => {
    t.equal(await pc(t, 'routes', '-f', ROUTES_DUMP, '--verbose=false'), 'NAME          VIRTUAL HOSTS\nhttp.8080     1\n              1\n              1\n');
    t.equal(
      await pc(t, 'routes', '-f', ROUTES_DUMP, '--name', 'http.8080'),
      'NAME          VHOST NAME                 DOMAINS                 MATCH     VIRTUAL SERVICE\n' +
        'http.8080     httpbin.example.com:80     httpbin.example.com     /get*     httpbin.default\n',
    );
    const json = JSON.parse(await pc(t, 'routes', '-f', ROUTES_DUMP, '--name', 'http.8080', '-o', 'json')) as Array<Record<string, unknown>>;
    t.same(json.map((r) => r.name), ['http.8080']);
    t.notOk('@type' in json[0]!);
  });

  t.test('endpoints: --port, --cluster, --address, --status, -o json', async (t) => {
    const golden = rows(read(join(GOLDENS, 'endpoint/output.txt')));
    t.same(rows(await pc(t, 'endpoints', '-f', EDS_DUMP, '--port', '9080')), golden.filter((r) => r[0]!.endsWith(':9080')), 'the golden rows on port 9080');
    t.same(rows(await pc(t, 'endpoints', '-f', EDS_DUMP, '--cluster', 'OUTBOUND|53||kube-dns.kube-system.svc.cluster.local')), [
      ['10.244.0.8:53', 'HEALTHY', 'outbound|53||kube-dns.kube-system.svc.cluster.local'],
      ['10.244.0.3:53', 'HEALTHY', 'outbound|53||kube-dns.kube-system.svc.cluster.local'],
    ], 'cluster names compare case-insensitively');
    t.same(rows(await pc(t, 'endpoints', '-f', EDS_DUMP, '--address', '10.244.0.8:53')), [['10.244.0.8:53', 'HEALTHY', 'outbound|53||kube-dns.kube-system.svc.cluster.local']]);
    t.same(rows(await pc(t, 'endpoints', '-f', EDS_DUMP, '--status', 'unhealthy')), []);
    const json = JSON.parse(await pc(t, 'endpoints', '-f', EDS_DUMP, '--port', '9402', '-o', 'json')) as Array<{ cluster_name: string; endpoints: Array<{ lb_endpoints: unknown[] }> }>;
    t.same(json.map((c) => c.cluster_name), ['outbound|9402||cert-manager-istio-csr-metrics.cert-manager.svc.cluster.local', 'outbound|9402||cert-manager.cert-manager.svc.cluster.local']);
    t.same(json.map((c) => c.endpoints.flatMap((l) => l.lb_endpoints).length), [1, 1]);
  });

  t.test("secrets, bootstrap and all: the summary's parts, the dump as JSON", async (t) => {
    const summary = read(join(GOLDENS, 'config_dump_summary.txt'));
    const secrets = await pc(t, 'secrets', '-f', FULL_DUMP);
    t.same(rows(secrets), rows(summary.split('\n\n')[4]!).map((r) => [r[0]!.replace(/^secret\//, ''), ...r.slice(1)]), 'the same certificates as the summary');
    t.match(secrets, /^RESOURCE NAME {5}TYPE/);
    t.equal(await pc(t, 'bootstrap', '-f', FULL_DUMP, '-o', 'short'), summary.split('\n\n')[0]! + '\n');
    const bootstrap = JSON.parse(await pc(t, 'bootstrap', '-f', FULL_DUMP)) as { bootstrap: { node: { metadata: Record<string, string> } } };
    t.equal(bootstrap.bootstrap.node.metadata.ISTIO_VERSION, '1.21.0-1226', 'bootstrap prints JSON by default');
    t.notOk('@type' in bootstrap);
    t.equal(await pc(t, 'all', '-f', FULL_DUMP, '-o', 'json'), `${read(FULL_DUMP)}\n`, 'all -o json is the dump itself');
    const headed = await pc(t, 'all', '-f', FULL_DUMP, '--with-headers');
    t.ok(headed.startsWith('------ BOOTSTRAP INFO ------\n\nIstio Version:'));
    for (const h of ['CLUSTER', 'LISTENER', 'ROUTE', 'SECRET', 'ENDPOINTS']) t.match(headed, `\n\n------ ${h} INFO ------\n\n`);
  });

  t.test('-f - reads the dump from stdin', async (t) => {
    const r = spawnSync(process.execPath, [CLI, 'proxy-config', 'routes', '-f', '-'], { input: read(ROUTES_DUMP), encoding: 'utf8', timeout: 20_000 });
    t.equal(r.status, 0, r.stderr);
    t.equal(r.stdout, read(join(GOLDENS, 'routes/output.txt')));
  });
});

t.test("endpoints -f reads Envoy's /clusters?format=json too, as istioctl's endpoints table", async (t) => {
  // The shape of envoy.admin.v3.Clusters, as Envoy's admin API serves it.
  const clusters = {
    cluster_statuses: [
      {
        name: 'outbound|9080||reviews.default.svc.cluster.local',
        added_via_api: true,
        host_statuses: [
          { address: { socket_address: { address: '10.0.0.2', port_value: 9080 } }, health_status: { eds_health_status: 'HEALTHY' }, weight: 1 },
          { address: { socket_address: { address: '10.0.0.1', port_value: 9080 } }, health_status: { eds_health_status: 'HEALTHY', failed_outlier_check: true }, weight: 1 },
        ],
      },
      { name: 'agent', host_statuses: [{ address: { socket_address: { address: '127.0.0.1', port_value: 15020 } }, health_status: { eds_health_status: 'HEALTHY' } }] },
      { name: 'sds-grpc', host_statuses: [{ address: { pipe: { path: './var/run/secrets/workload-spiffe-uds/socket' } }, health_status: { eds_health_status: 'UNHEALTHY' } }] },
    ],
  };
  const mesh = new MeshDir({ 'clusters.json': JSON.stringify(clusters) });
  t.teardown(() => mesh.cleanup());
  const file = join(mesh.dir, 'clusters.json');
  const table = await pc(t, 'endpoints', '-f', file);
  t.equal(table.split('\n')[0], 'ENDPOINT                                                STATUS        OUTLIER CHECK     CLUSTER');
  t.same(rows(table), [
    ['10.0.0.1:9080', 'HEALTHY', 'FAILED', 'outbound|9080||reviews.default.svc.cluster.local'],
    ['10.0.0.2:9080', 'HEALTHY', 'OK', 'outbound|9080||reviews.default.svc.cluster.local'],
    ['127.0.0.1:15020', 'HEALTHY', 'OK', 'agent'],
    ['unix://./var/run/secrets/workload-spiffe-uds/socket', 'UNHEALTHY', 'OK', 'sds-grpc'],
  ], 'sorted by address, port, cluster');
  t.same(rows(await pc(t, 'endpoints', '-f', file, '--address', '10.0.0.2')).map((r) => r[0]), ['10.0.0.2:9080'], 'the address without the port');
  const json = JSON.parse(await pc(t, 'endpoints', '-f', file, '--status', 'unhealthy', '-o', 'json')) as Array<{ name: string }>;
  t.same(json.map((c) => c.name), ['sds-grpc']);
});
