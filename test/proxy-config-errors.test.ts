// `remora proxy-config` on bad input: clear errors naming the source and the field, usage
// errors with the help, an unreachable or failing admin API. (The goldens: proxy-config.test.ts.)
import { join } from 'node:path';
import t from 'tap';
import { freePort } from './helpers/net.ts';
import { dumpServer, EDS_DUMP, FULL_DUMP } from './helpers/proxy-config.ts';
import { MeshDir, runCli } from './helpers/remora.ts';

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
