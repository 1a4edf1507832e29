// `remora proxy-config`, run as users run it: istioctl's own goldens (real Envoy config dumps
// and what `istioctl proxy-config` prints for them) byte for byte, a dump fetched from a live
// admin port, the filters and output formats, and bad input.
import { spawnSync } from 'node:child_process';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { parse as parseYaml } from 'yaml';
import { freePort } from './helpers/net.ts';
import { CLI, CORPUS, MeshDir, runCli } from './helpers/remora.ts';

const GOLDENS = join(CORPUS, 'istio-goldens/proxy-config');
const FULL_DUMP = join(GOLDENS, 'config_dump.json');
const ROUTES_DUMP = join(GOLDENS, 'routes/configdump.json');
const EDS_DUMP = join(GOLDENS, 'endpoint/configdump.json');
const read = (p: string): string => readFileSync(p, 'utf8');

/** A plain HTTP server on 127.0.0.1 answering every GET with `body`; records what was asked. */
async function dumpServer(t: Test, body: string, status = 200): Promise<{ addr: string; urls: string[] }> {
  const urls: string[] = [];
  const server: Server = createServer((req: IncomingMessage, res) => {
    urls.push(req.url ?? '');
    res.writeHead(status, { 'content-type': 'application/json' }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return { addr: `127.0.0.1:${(server.address() as { port: number }).port}`, urls };
}

// istioctl's tests: proxyconfig_test.go runs `proxy-config all -f config_dump.json`;
// route_test.go prints the route summary verbose (istioctl's default for `routes`);
// endpoint_test.go prints the EDS summary with no filter (`proxy-config eds`).
// The summary's VALID CERT column is checked against today's date, as istioctl does: the
// golden's ROOTCA reads true until it expires on 2033-05-02.
t.test("istioctl's goldens, byte for byte", async (t) => {
  const cases: Array<{ args: string[]; golden: string }> = [
    { args: ['all', '-f', FULL_DUMP], golden: join(GOLDENS, 'config_dump_summary.txt') },
    { args: ['routes', '-f', ROUTES_DUMP], golden: join(GOLDENS, 'routes/output.txt') },
    { args: ['endpoints', '-f', EDS_DUMP], golden: join(GOLDENS, 'endpoint/output.txt') },
  ];
  for (const c of cases) {
    const r = await runCli(['proxy-config', ...c.args]);
    t.equal(r.stderr, '', `${c.args[0]}: nothing on stderr`);
    t.equal(r.code, 0, `${c.args[0]}: exit 0`);
    t.equal(r.stdout, read(c.golden), `${c.args[0]} prints ${c.golden}`);
  }
});

/** A dump's field names as protobuf's JSON printers write them (lowerCamelCase); map keys with dots stay. */
function camelCaseFields(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(camelCaseFields);
  if (v === null || typeof v !== 'object') return v;
  return Object.fromEntries(
    Object.entries(v).map(([k, x]) => [/^[a-z0-9]+(_[a-z0-9]+)+$/.test(k) ? k.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase()) : k, camelCaseFields(x)]),
  );
}

t.test('a dump with JSON field names (portValue, lbEndpoints, as istioctl and go-control-plane print) reads the same', async (t) => {
  const mesh = new MeshDir();
  t.teardown(() => mesh.cleanup());
  const cases: Array<{ sub: string; dump: string; golden: string }> = [
    { sub: 'all', dump: FULL_DUMP, golden: join(GOLDENS, 'config_dump_summary.txt') },
    { sub: 'routes', dump: ROUTES_DUMP, golden: join(GOLDENS, 'routes/output.txt') },
    { sub: 'endpoints', dump: EDS_DUMP, golden: join(GOLDENS, 'endpoint/output.txt') },
  ];
  for (const c of cases) {
    const file = mesh.write(`${c.sub}.json`, JSON.stringify(camelCaseFields(JSON.parse(read(c.dump)))));
    t.equal(await pc(t, c.sub, '-f', file), read(c.golden), c.sub);
  }
  const json = JSON.parse(await pc(t, 'endpoints', '-f', join(mesh.dir, 'endpoints.json'), '--port', '9402', '-o', 'json')) as Array<{ endpoints: Array<Record<string, unknown[]>> }>;
  t.same(json.map((c) => c.endpoints.map((l) => [Object.keys(l).filter((k) => /lb_?endpoints/i.test(k)), l.lbEndpoints!.length])), [[[['lbEndpoints'], 1]], [[['lbEndpoints'], 1]]], 'filtered under the name the dump uses');
});

t.test('--admin fetches /config_dump from a live admin port and prints the same tables', async (t) => {
  const full = await dumpServer(t, read(FULL_DUMP));
  const all = await runCli(['proxy-config', 'all', '--admin', full.addr]);
  t.equal(all.code, 0, all.stderr);
  t.equal(all.stdout, read(join(GOLDENS, 'config_dump_summary.txt')));
  t.same(full.urls, ['/config_dump?include_eds=true'], 'all asks for EDS too, as istioctl does');

  const clusters = await runCli(['proxy-config', 'clusters', '--admin', full.addr]);
  t.equal(clusters.code, 0, clusters.stderr);
  t.equal(full.urls[1], '/config_dump?mask=dynamic_active_clusters,dynamic_warming_clusters,static_clusters');
  const fromFile = await runCli(['proxy-config', 'clusters', '-f', FULL_DUMP]);
  t.equal(clusters.stdout, fromFile.stdout, 'the same table as from the file');

  const routes = await dumpServer(t, read(ROUTES_DUMP));
  const r = await runCli(['proxy-config', 'routes', '--admin', routes.addr]);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, read(join(GOLDENS, 'routes/output.txt')));
  t.same(routes.urls, ['/config_dump?mask=dynamic_route_configs,static_route_configs']);

  const eds = await dumpServer(t, read(EDS_DUMP));
  const e = await runCli(['proxy-config', 'endpoints', '--admin', eds.addr]);
  t.equal(e.code, 0, e.stderr);
  t.equal(e.stdout, read(join(GOLDENS, 'endpoint/output.txt')));
  t.same(eds.urls, ['/config_dump?include_eds=true']);
});

/** A table's rows as cells (cells are separated by two or more spaces; empty cells vanish). */
const rows = (table: string): string[][] =>
  table
    .trimEnd()
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s{2,}/));

/** Runs `remora proxy-config ARGS` and expects it to succeed. */
async function pc(t: Test, ...args: string[]): Promise<string> {
  const r = await runCli(['proxy-config', ...args]);
  t.equal(r.code, 0, `proxy-config ${args.join(' ')}: exit 0 (${r.stderr.trim()})`);
  return r.stdout;
}

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

t.test('bad input: a clear error naming the source and the field, and a non-zero exit', async (t) => {
  const mesh = new MeshDir({
    'not-json.json': '<html>admin</html>\n',
    'list.json': '[1, 2]',
    'other.json': '{"listeners": []}',
    'remora-own.json': '{"version": "3", "live_since": null, "last_error": null, "config": {"listeners": []}}',
    'bad-section.json': JSON.stringify({ configs: [{ '@type': 'type.googleapis.com/envoy.admin.v3.ClustersConfigDump', static_clusters: 'agent' }] }),
    'bad-field.json': JSON.stringify({
      configs: [{ '@type': 'type.googleapis.com/envoy.admin.v3.ListenersConfigDump', static_listeners: [{ listener: { name: 'x', address: { socket_address: { address: '0.0.0.0', port_value: 'eighty' } } } }] }],
    }),
    'no-type.json': '{"configs": [{"static_clusters": []}]}',
  });
  t.teardown(() => mesh.cleanup());
  const f = (name: string): string => join(mesh.dir, name);
  const cases: Array<{ args: string[]; stderr: RegExp }> = [
    { args: ['clusters', '-f', f('not-json.json')], stderr: /^remora proxy-config clusters: .*not-json\.json: not JSON: / },
    { args: ['clusters', '-f', f('list.json')], stderr: /list\.json: not an Envoy config dump: expected a JSON object with a "configs" list \(envoy\.admin\.v3\.ConfigDump\), got a list/ },
    { args: ['all', '-f', f('other.json')], stderr: /other\.json: not an Envoy config dump: no "configs" list .*top-level fields: listeners/ },
    { args: ['clusters', '-f', f('remora-own.json')], stderr: /remora-own\.json: not an Envoy config dump: this is Remora's own model \(admin \/remora\/config\), not Envoy's envoy\.admin\.v3\.ConfigDump; save the proxy's \/config_dump instead/ },
    { args: ['clusters', '-f', f('bad-section.json')], stderr: /bad-section\.json: configs\[0\]\.static_clusters: expected a list, got string "agent"/ },
    { args: ['listeners', '-f', f('bad-field.json')], stderr: /bad-field\.json: configs\[0\]\.static_listeners\[0\]\.listener\.address\.socket_address\.port_value: expected a number, got string "eighty"/ },
    { args: ['clusters', '-f', f('no-type.json')], stderr: /no-type\.json: configs\[0\]\.@type: expected the section's type URL/ },
    { args: ['routes', '-f', EDS_DUMP], stderr: /configdump\.json: config dump has no configuration type type\.googleapis\.com\/envoy\.admin\.v3\.RoutesConfigDump/ },
    { args: ['clusters', '-f', f('missing.json')], stderr: /cannot read .*missing\.json: ENOENT/ },
  ];
  for (const c of cases) {
    const r = await runCli(['proxy-config', ...c.args]);
    t.equal(r.code, 1, `${c.args.join(' ')}: exit 1`);
    t.match(r.stderr, c.stderr, c.args.join(' '));
    t.equal(r.stdout, '', 'nothing on stdout');
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
});

t.test('usage errors exit 2 with the help; --help exits 0', async (t) => {
  const usage: Array<{ args: string[]; stderr: RegExp }> = [
    { args: ['proxy-config', 'clusterz'], stderr: /unknown subcommand "clusterz"/ },
    { args: ['proxy-config', 'clusters', '-f', FULL_DUMP, '--admin', '127.0.0.1:15000'], stderr: /-f and --admin are two sources/ },
    { args: ['proxy-config', 'clusters', '-f', FULL_DUMP, '-o', 'xml'], stderr: /-o must be short, json or yaml, got "xml"/ },
    { args: ['proxy-config', 'clusters', '-f', FULL_DUMP, '--port', 'http'], stderr: /--port must be a port number/ },
    { args: ['proxy-config', 'clusters', 'productpage-v1-123'], stderr: /unexpected argument "productpage-v1-123"/ },
    { args: ['proxy-config', 'clusters', '--admin', 'localhost:99999'], stderr: /--admin must be HOST:PORT/ },
    { args: ['proxy-config', 'secrets', '-f', FULL_DUMP, '--fqdn', 'x'], stderr: /Unknown option '--fqdn'/ },
  ];
  for (const u of usage) {
    const r = await runCli(u.args);
    t.equal(r.code, 2, `${u.args.join(' ')}: exit 2`);
    t.match(r.stderr, u.stderr);
    t.match(r.stderr, /usage: remora proxy-config/);
  }
  const help = await runCli(['proxy-config', 'clusters', '--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /--fqdn FQDN/);
  t.match(help.stdout, /--admin HOST:PORT/);
  const top = await runCli(['--help']);
  t.match(top.stdout, /proxy-config/);
});

t.test('--admin: an unreachable admin API or an error answer is named', async (t) => {
  const closed = await freePort();
  const down = await runCli(['proxy-config', 'clusters', '--admin', `127.0.0.1:${closed}`]);
  t.equal(down.code, 1);
  t.match(down.stderr, `remora proxy-config clusters: cannot reach the admin API at 127.0.0.1:${closed} (GET http://127.0.0.1:${closed}/config_dump?mask=`);
  t.match(down.stderr, /ECONNREFUSED/);

  const notFound = await dumpServer(t, 'unknown admin path /config_dump\n', 404);
  const nf = await runCli(['proxy-config', 'listeners', '--admin', notFound.addr]);
  t.equal(nf.code, 1);
  t.match(nf.stderr, `http://${notFound.addr}/config_dump?mask=dynamic_listeners,static_listeners: the admin API answered 404: unknown admin path /config_dump`);
});
