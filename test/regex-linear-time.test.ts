// Regexes from config run in time linear in the input, as Envoy's RE2 does: a pattern that makes
// a backtracking engine explode (`(a+)+`) cannot hold the event loop. Each kind of regex a
// VirtualService can carry — uri, header, query parameter, CORS origin, uriRegexRewrite — gets a
// 10 KiB input built to be its worst case and must answer at once. A backtracking engine needs
// about 2^n steps for `(a+)+` against n `a`s and a mismatch: seconds at 30 characters, never at
// 10 KiB; a linear one answers a 10 KiB input in well under a millisecond of CPU. The bound only
// has to tell the two apart, so it leaves room for a busy machine running many tests at once
// (speed itself is measured in bench/, not here). The proxy runs as its own process so that a
// stalled event loop shows up as a timeout here instead of freezing the test.
import t from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request, type Reply } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort } from './helpers/net.ts';
import { MeshDir, spawnRemora, type SpawnedRemora } from './helpers/remora.ts';

let mesh: MeshDir;
let remora: SpawnedRemora;
let port: number;
let app: Backend;

/** 10 KiB of `a` with a trailing `!`: no match, and the worst case for a backtracking `(a+)+`. */
const EVIL = 'a'.repeat(10 * 1024 - 1) + '!';
/** Far above a linear engine's time on a loaded machine, far below a backtracking one's. */
const LIMIT_MS = 250;

t.before(async () => {
  app = await startBackend('app', (req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ url: req.url }));
  });
  port = await freePort();
  mesh = new MeshDir({
    'mesh.yaml': doc(
      gateway('gw', port),
      serviceEntry('app', 'app', [{ port: app.port }]),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: evil }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - name: uri
    match: [{ uri: { regex: "/(a+)+" } }]
    route: [{ destination: { host: app } }]
  - name: header
    match: [{ uri: { prefix: /h }, headers: { x-evil: { regex: "(a+)+" } } }]
    route: [{ destination: { host: app } }]
  - name: query
    match: [{ uri: { prefix: /q }, queryParams: { v: { regex: "(a+)+" } } }]
    route: [{ destination: { host: app } }]
  - name: cors
    match: [{ uri: { prefix: /c } }]
    corsPolicy:
      allowOrigins: [{ regex: "(a+)+" }]
      allowMethods: [GET]
    route: [{ destination: { host: app } }]
  - name: rewrite
    match: [{ uri: { prefix: /r/ } }]
    rewrite:
      uriRegexRewrite: { match: "(a+)+b", rewrite: "/x" }
    route: [{ destination: { host: app } }]
`,
    ),
  });
  remora = await spawnRemora('gateway', [mesh.dir]);
});

t.teardown(async () => {
  // A proxy whose event loop is stuck does not answer SIGTERM.
  await remora?.stop('SIGKILL');
  await app?.close();
  mesh?.cleanup();
});

/**
 * The fastest of five tries, in ms (the proxy's worst case shows on every try; the minimum
 * keeps scheduling noise on a shared machine out), and the last reply.
 */
async function timed(path: string, headers: Record<string, string> = {}): Promise<{ ms: number; reply: Reply }> {
  let best = Infinity;
  let reply: Reply | null = null;
  for (let i = 0; i < 5; i++) {
    const start = process.hrtime.bigint();
    reply = await request(port, path, { headers: { host: 'evil.example.com', ...headers }, timeoutMs: 2_000 });
    best = Math.min(best, Number(process.hrtime.bigint() - start) / 1e6);
  }
  return { ms: best, reply: reply! };
}

t.test('uri regex /(a+)+ against a 10 KiB path answers at once (linear time)', async (t) => {
  t.equal((await request(port, '/aaa', { headers: { host: 'x' } })).status, 200, 'the regex still matches what it should');
  const { ms, reply } = await timed(`/${EVIL}`);
  t.equal(reply.status, 404, 'no route matches');
  t.ok(ms < LIMIT_MS, `answered in ${ms.toFixed(2)} ms`);
});

t.test('header regex (a+)+ against a 10 KiB value answers at once (linear time)', async (t) => {
  t.equal((await request(port, '/h', { headers: { host: 'x', 'x-evil': 'aaaa' } })).status, 200);
  const { ms, reply } = await timed('/h', { 'x-evil': EVIL });
  t.equal(reply.status, 404);
  t.ok(ms < LIMIT_MS, `answered in ${ms.toFixed(2)} ms`);
});

t.test('query parameter regex (a+)+ against a 10 KiB value answers at once (linear time)', async (t) => {
  t.equal((await request(port, '/q?v=aaaa', { headers: { host: 'x' } })).status, 200);
  const { ms, reply } = await timed(`/q?v=${EVIL}`);
  t.equal(reply.status, 404);
  t.ok(ms < LIMIT_MS, `answered in ${ms.toFixed(2)} ms`);
});

t.test('CORS origin regex (a+)+ against a 10 KiB Origin answers at once (linear time)', async (t) => {
  const ok = await request(port, '/c', { headers: { host: 'x', origin: 'aaaa' } });
  t.equal(ok.headers['access-control-allow-origin'], 'aaaa', 'a matching origin is allowed');
  const { ms, reply } = await timed('/c', { origin: EVIL });
  t.equal(reply.status, 200);
  t.equal(reply.headers['access-control-allow-origin'], undefined, 'the origin is not allowed');
  t.ok(ms < LIMIT_MS, `answered in ${ms.toFixed(2)} ms`);
});

t.test('uriRegexRewrite (a+)+b against a 10 KiB path answers at once (linear time)', async (t) => {
  const ok = await request(port, '/r/aab', { headers: { host: 'x' } });
  t.equal(ok.json<{ url: string }>().url, '/r//x', 'the rewrite still replaces what matches');
  const { ms, reply } = await timed(`/r/${EVIL}`);
  t.equal(reply.json<{ url: string }>().url, `/r/${EVIL}`, 'nothing to rewrite');
  t.ok(ms < LIMIT_MS, `answered in ${ms.toFixed(2)} ms`);
});
