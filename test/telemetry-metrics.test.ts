// Istio's Telemetry `metrics` end to end, as istio.io's "Customizing Istio Metrics with
// Telemetry API" task writes it, on a sidecar's two sides (outbound: CLIENT, reporter source;
// inbound: SERVER, reporter destination), each Telemetry written while the proxy runs and the
// result read from /stats/prometheus: a metric disabled for CLIENT only, a tag removed (its
// series merge), `request_host` upserted from `request.host`, a custom tag from a header,
// namespace vs workload precedence, and a bad CEL value refused with the last config serving.
import t from 'tap';
import { startBackend } from './helpers/backends.ts';
import { get } from './helpers/http.ts';
import { doc, serviceEntry } from './helpers/mesh.ts';
import { waitFor } from './helpers/net.ts';
import { MeshDir, startRemora, type InProcessRemora } from './helpers/remora.ts';

async function reloaded(remora: InProcessRemora, write: () => void): Promise<void> {
  const before = remora.proxy.runtime.snapshot!.config.version;
  write();
  await waitFor('the new Telemetry applies', () => remora.proxy.runtime.snapshot!.config.version !== before, 15_000);
}

const telemetry = (name: string, spec: string, opts: { namespace?: string; selector?: string } = {}): string =>
  `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ${name}, namespace: ${opts.namespace ?? 'default'}}
spec:
${opts.selector === undefined ? '' : `  selector: {matchLabels: {${opts.selector}}}\n`}  metrics:
  - providers: [{name: prometheus}]
${spec}`;

/** The lines of one family (`istio_requests_total{`) on the scrape. */
async function series(remora: InProcessRemora, family: string): Promise<string[]> {
  const r = await get(remora.ports.admin, '/stats/prometheus', 'admin');
  return r.body.split('\n').filter((l) => l.startsWith(`${family}{`));
}

const labelsOf = (line: string): Record<string, string> => Object.fromEntries([...line.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
const valueOf = (line: string): number => Number(line.slice(line.lastIndexOf(' ') + 1));

t.test('sidecar: Telemetry metrics overrides change what /stats/prometheus reports', async (t) => {
  const app = await startBackend('app', (req, res) => {
    res.statusCode = req.url!.startsWith('/fail') ? 503 : 200;
    res.end('x');
  });
  const reviews = await startBackend('reviews');
  const files = new MeshDir({
    'mesh.yaml': doc(serviceEntry('reviews', 'reviews', [{ port: reviews.port, labels: { app: 'reviews' } }], { port: 9080 })),
  });
  const sc = await startRemora('sidecar', [files.dir], ['--app-port', String(app.port), '--labels', 'app=productpage,version=v1', '--namespace', 'default']);
  t.teardown(async () => {
    await sc.stop();
    await app.close();
    await reviews.close();
    files.cleanup();
  });
  const outbound = async (headers: Record<string, string> = {}) => t.equal((await get(sc.ports.outbound, '/r', 'reviews:9080', headers)).status, 200);
  const inbound = async (headers: Record<string, string> = {}, path = '/p', status = 200) => t.equal((await get(sc.ports.inbound, path, 'productpage', headers)).status, status);
  const bySide = async (family: string, reporter: 'source' | 'destination') => (await series(sc, family)).filter((l) => labelsOf(l).reporter === reporter);

  await t.test('REQUEST_COUNT disabled for CLIENT only', async (t) => {
    await reloaded(sc, () => files.write('ns.yaml', telemetry('ns', '    overrides:\n    - match: {metric: REQUEST_COUNT, mode: CLIENT}\n      disabled: true\n')));
    await outbound();
    await inbound();
    t.same(await bySide('istio_requests_total', 'source'), [], 'the outbound side reports no request count');
    t.equal((await bySide('istio_requests_total', 'destination')).length, 1, 'the inbound side still does');
    t.ok((await bySide('istio_request_duration_milliseconds_count', 'source')).length > 0, 'other metrics of the CLIENT side stay');
  });

  await t.test('a tag removed: the label disappears and the series merge', async (t) => {
    await reloaded(sc, () => files.write('ns.yaml', telemetry('ns', '    overrides:\n    - match: {metric: REQUEST_COUNT}\n      tagOverrides:\n        response_code: {operation: REMOVE}\n')));
    await inbound();
    await inbound({}, '/fail', 503);
    // Series counted before the override keep their labels, as in Envoy.
    const lines = (await bySide('istio_requests_total', 'destination')).filter((l) => !('response_code' in labelsOf(l)));
    t.equal(lines.length, 1, 'one series without response_code');
    t.equal(valueOf(lines[0]!), 2, 'a 200 and a 503 merged into one count');
    const durations = await bySide('istio_request_duration_milliseconds_count', 'destination');
    t.ok(durations.every((l) => 'response_code' in labelsOf(l)), 'other metrics keep the tag');
  });

  await t.test('request_host upserted from request.host; a custom tag from a header', async (t) => {
    await reloaded(sc, () =>
      files.write(
        'ns.yaml',
        telemetry('ns', "    overrides:\n    - match: {metric: REQUEST_COUNT}\n      tagOverrides:\n        request_host: {value: request.host}\n        user: {value: \"request.headers['x-user']\"}\n        destination_app: {value: \"'overridden'\"}\n"),
      ),
    );
    await outbound({ 'x-user': 'alice' });
    await outbound({ 'x-user': 'bob' });
    await outbound({ 'x-user': 'bob' });
    await outbound();
    const lines = (await bySide('istio_requests_total', 'source')).map((l) => ({ labels: labelsOf(l), value: valueOf(l) }));
    const of = (user: string) => lines.find((l) => l.labels.user === user);
    t.equal(of('alice')?.value, 1);
    t.equal(of('bob')?.value, 2, "one series per value of request.headers['x-user']");
    t.equal(of('unknown')?.value, 1, 'a missing header: unknown');
    t.equal(of('bob')?.labels.request_host, 'reviews:9080', 'request_host from request.host');
    t.equal(of('bob')?.labels.destination_app, 'overridden', 'an existing tag upserted');
    const keys = Object.keys(of('bob')!.labels);
    t.ok(keys.indexOf('destination_app') < keys.indexOf('response_code'), 'an upserted existing tag keeps its place');
    t.same(keys.slice(-2), ['request_host', 'user'], 'new tags follow, by name');
  });

  await t.test('namespace vs workload precedence', async (t) => {
    await reloaded(sc, () => files.write('ns.yaml', telemetry('ns', '    overrides:\n    - match: {metric: REQUEST_COUNT, mode: SERVER}\n      disabled: true\n')));
    await reloaded(sc, () =>
      files.write('workload.yaml', telemetry('productpage', '    overrides:\n    - match: {metric: REQUEST_COUNT, mode: SERVER}\n      disabled: false\n      tagOverrides:\n        from_workload: {value: "\'yes\'"}\n', { selector: 'app: productpage' })),
    );
    await inbound();
    const lines = await bySide('istio_requests_total', 'destination');
    t.ok(lines.some((l) => labelsOf(l).from_workload === 'yes'), "the workload's Telemetry re-enables the metric the namespace's disabled, with its tag");
  });

  await t.test('a bad CEL value names the resource and field; the last good config keeps serving', async (t) => {
    const version = sc.proxy.runtime.snapshot!.config.version;
    files.write('bad.yaml', telemetry('bad', '    overrides:\n    - match: {metric: REQUEST_COUNT}\n      tagOverrides:\n        broken: {value: "request.host =="}\n', { selector: 'app: productpage' }));
    const field = 'metrics[0].overrides[0].tagOverrides.broken.value';
    await waitFor('the error is reported', () => sc.log.some((l) => l.includes(field)), 15_000);
    t.match(sc.log.find((l) => l.includes(field)), /Telemetry.*bad.*invalid CEL expression/);
    t.equal(sc.proxy.runtime.snapshot!.config.version, version, 'the running config stays');
    await inbound();
    t.ok((await bySide('istio_requests_total', 'destination')).some((l) => labelsOf(l).from_workload === 'yes'), 'still reporting under the last good config');
  });
});
