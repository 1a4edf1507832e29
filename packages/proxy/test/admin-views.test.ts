// Pure parts of the admin API: /server_info's command_line_options under Envoy's field names,
// and the memory figures mapped from Node's process.memoryUsage().
import t from 'tap';
import { commandLineOptions } from '../src/admin/admin-views.ts';
import { memoryFigures, versionNumber } from '../src/admin/admin-stats.ts';

t.test('command_line_options: Envoy defaults, flags under Envoy names, the arguments as given', async (t) => {
  const argv = ['-c', '/etc/istio/proxy/envoy-rev.json', '--log-level=warning', '--drain-time-s', '45', '--parent-shutdown-time-s', '60', '--concurrency', '2', '--admin-port', '15000'];
  const o = commandLineOptions(argv, 1);
  t.equal(o['config_path'], '/etc/istio/proxy/envoy-rev.json');
  t.equal(o['log_level'], 'warning');
  t.equal(o['drain_time'], '45s', 'a Duration, as proto3 JSON prints it');
  t.equal(o['parent_shutdown_time'], '60s');
  t.equal(o['concurrency'], 1, 'what runs: one event loop');
  t.equal(o['mode'], 'Serve');
  t.equal(o['disable_hot_restart'], true);
  t.same(o['args'], argv);
  t.equal(commandLineOptions([], 1)['log_level'], 'info', "Envoy's default");
});

t.test('memory figures: allocated within heap_size within reach of the resident set', async (t) => {
  const m = memoryFigures();
  t.ok(m.allocated > 0);
  t.ok(m.heapSize >= m.allocated, 'heap_size holds allocated');
  t.equal(m.pageheapFree, m.heapSize - m.allocated, 'free is reserved minus used');
  t.ok(m.totalPhysicalBytes > 0);
  t.equal(m.pageheapUnmapped, 0);
  t.equal(m.totalThreadCache, 0);
});

t.test('server.version: major·10⁶ + minor·10³ + patch', async (t) => {
  t.equal(versionNumber('1.24.3'), 1_024_003);
  t.equal(versionNumber('0.1.0'), 1_000);
});
