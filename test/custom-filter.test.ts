// A filter from a package on disk, loaded with --filter and placed by an EnvoyFilter
// (HTTP_FILTER INSERT_BEFORE the router, its config in a TypedStruct): it reads the request
// body as it streams upstream (its digest comes back in a response header and in the access
// log through %DYNAMIC_METADATA%), edits response heads, replaces a response from the
// response phase, transforms a body chunk by chunk, buffers one with a limit (500 beyond),
// and counts under http.<stat_prefix>.body_digest.* on /stats. An EnvoyFilter naming a
// filter nobody registered is refused, naming the EnvoyFilter and the field.
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { startBackend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway, routeAll, serviceEntry } from './helpers/mesh.ts';
import { freePort, waitFor } from './helpers/net.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';

const FILTER_PACKAGE = join(import.meta.dirname, 'fixtures', 'body-digest-filter');

function placeFilter(name: string, value: string): string {
  return `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: { name: body-digest, namespace: istio-system }
spec:
  workloadSelector:
    labels: { istio: ingressgateway }
  configPatches:
    - applyTo: HTTP_FILTER
      match:
        context: GATEWAY
        listener:
          filterChain:
            filter:
              name: envoy.filters.network.http_connection_manager
              subFilter: { name: envoy.filters.http.router }
      patch:
        operation: INSERT_BEFORE
        value:
          name: ${name}
          typed_config:
            "@type": type.googleapis.com/xds.type.v3.TypedStruct
            type_url: type.googleapis.com/remora.${name}
            value: ${value}
`;
}

async function setup(t: Test, envoyFilter: string) {
  const backend = await startBackend('app', (req, res, body) => {
    const url = req.url ?? '/';
    if (url.startsWith('/secret')) {
      res.writeHead(200, { 'x-secret': '1', 'content-type': 'text/plain' });
      res.end('do not show');
      return;
    }
    if (url.endsWith('/big')) {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('x'.repeat(1000));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain', 'x-backend': 'app' });
    // Several chunks, so the filter sees a stream.
    res.write('hello ');
    setTimeout(() => res.end(`you sent ${body.length} bytes`), 5);
  });
  const port = await freePort();
  const mesh = new MeshDir({ 'mesh.yaml': doc(gateway('gw', port), serviceEntry('app', 'app', [{ port: backend.port }]), routeAll('gw', 'app'), envoyFilter) });
  const conf = new MeshDir();
  const meshFile = conf.write('meshconfig.yaml', "accessLogFile: /dev/stdout\naccessLogFormat: '%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_CODE_DETAILS% digest=%DYNAMIC_METADATA(test.body_digest:digest)% all=%DYNAMIC_METADATA(test.body_digest)%'\n");
  t.teardown(async () => {
    await backend.close();
    mesh.cleanup();
    conf.cleanup();
  });
  return { port, backend, meshDir: mesh.dir, meshFile };
}

t.test('a --filter package placed by an EnvoyFilter: body, response phase, metadata, stats', async (t) => {
  const { port, backend, meshDir, meshFile } = await setup(t, placeFilter('test.body_digest', '{ header: x-digest, buffer_limit: 64 }'));
  const remora = await startRemora('gateway', [meshDir], ['--mesh-config', meshFile, '--filter', FILTER_PACKAGE]);
  t.teardown(() => remora.stop());
  t.ok(remora.log.some((l) => l.includes('HTTP filters loaded: test.body_digest')), 'the start log names the filter');

  const body = Buffer.alloc(200_000, 'a');
  const digest = createHash('sha256').update(body).digest('hex');
  const r = await request(port, '/upload', { method: 'POST', body, headers: { host: 'shop.example.com' } });
  t.equal(r.status, 200);
  t.equal(r.body, 'hello you sent 200000 bytes', 'the body reached upstream whole');
  t.equal(backend.seen[0]!.body.length, body.length);
  t.equal(r.headers['x-digest'], digest, 'the digest of the streamed request body, set in the response phase');
  t.equal(r.headers['x-backend'], undefined, 'a response header removed by the filter');

  const shout = await request(port, '/shout', { headers: { host: 'shop.example.com' } });
  t.equal(shout.body, 'HELLO YOU SENT 0 BYTES', 'the response body transformed chunk by chunk');
  t.equal(shout.headers['x-digest'], 'none');

  const secret = await request(port, '/secret', { headers: { host: 'shop.example.com' } });
  t.equal(secret.status, 502, 'a local reply from the response phase replaces the upstream response');
  t.equal(secret.body, 'refused by body_digest\n');

  const buffered = await request(port, '/buffered', { headers: { host: 'shop.example.com' } });
  t.equal(buffered.status, 200);
  t.equal(buffered.body, '[hello you sent 0 bytes]', 'the held head goes out with the buffered, rewritten body');
  t.equal(buffered.headers['content-length'], String('[hello you sent 0 bytes]'.length), 'content-length from the body as sent');

  const big = await request(port, '/buffered/big', { headers: { host: 'shop.example.com' } });
  t.equal(big.status, 500, 'a body over the buffer limit: 500, as Envoy');
  t.equal(big.body, 'Internal Server Error');

  await waitFor('access log lines', () => remora.accessLog.length >= 5);
  const upload = remora.accessLog.find((l) => l.startsWith('/upload '));
  t.equal(upload, `/upload 200 via_upstream digest=${digest} all={"digest":"${digest}"}`, 'the access log prints the metadata the filter recorded');
  t.ok(remora.accessLog.some((l) => l === '/secret 502 body_digest_refused digest=- all=-'), 'the response-phase reply is logged with its details');
  t.ok(remora.accessLog.some((l) => l.startsWith('/buffered/big 500 response_payload_too_large ')), 'the buffer overflow is logged');

  const stats = (await request(remora.ports.admin, '/stats')).body;
  const value = (name: string): number | undefined => {
    const m = new RegExp(`^(\\S*\\.body_digest\\.${name}): (\\d+)$`, 'm').exec(stats);
    return m === null ? undefined : Number(m[2]);
  };
  t.match(stats, /^http\.[^\s]+\.body_digest\.requests: \d+$/m, 'counters under http.<stat_prefix>.body_digest.');
  t.equal(value('requests'), 5);
  t.equal(value('body_bytes'), body.length);
});

t.test('an EnvoyFilter inserting a filter nobody registered: refused, naming the EnvoyFilter and the field', async (t) => {
  const { meshDir, meshFile } = await setup(t, placeFilter('test.nope', '{}'));
  const err = await startRemora('gateway', [meshDir], ['--mesh-config', meshFile, '--filter', FILTER_PACKAGE]).then(
    (r) => (void r.stop(), null),
    (e: Error) => e,
  );
  t.ok(err !== null, 'the proxy does not start');
  t.match(err!.message, /EnvoyFilter istio-system\/body-digest/);
  t.match(err!.message, /configPatches\[0\]\.patch\.value\.name/);
  t.match(err!.message, /Remora has no HTTP filter test\.nope/);
});

t.test('a bad config for the filter names the filter and the field', async (t) => {
  const { meshDir, meshFile } = await setup(t, placeFilter('test.body_digest', '{ buffer_limit: -1 }'));
  const err = await startRemora('gateway', [meshDir], ['--mesh-config', meshFile, '--filter', FILTER_PACKAGE]).then(
    (r) => (void r.stop(), null),
    (e: Error) => e,
  );
  t.ok(err !== null, 'the proxy does not start');
  t.match(err!.message, /filter test\.body_digest: buffer_limit: must be a positive integer, got -1/);
});
