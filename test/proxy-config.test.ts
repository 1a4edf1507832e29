// `remora proxy-config`, run as users run it: istioctl's own goldens (real Envoy config dumps
// and what `istioctl proxy-config` prints for them) byte for byte, and a dump fetched from a
// live admin port. Filters, output formats and bad input: proxy-config-cli.test.ts (split so
// that each file stays well inside the per-file timeout on a busy machine).
import { join } from 'node:path';
import t from 'tap';
import { dumpServer, EDS_DUMP, FULL_DUMP, GOLDENS, pc, read, ROUTES_DUMP } from './helpers/proxy-config.ts';
import { MeshDir, runCli } from './helpers/remora.ts';

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
