// The admin live view in a real browser (the system's chromium, driven by playwright-core):
// the page loads from the admin port with nothing fetched elsewhere, draws the graph a
// scenario's requests made (listener → route table → the two reviews subsets → their hosts),
// marks the edges that carried traffic and the one with errors, filters the access log, and
// a screenshot of it is taken.
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { get } from './helpers/http.ts';
import { doc, serviceEntry, versionSubsets } from './helpers/mesh.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';

const CHROMIUM = process.env['CHROMIUM'] ?? '/usr/bin/chromium';
const V1 = 'outbound|9080|v1|reviews.default.svc.cluster.local';
const V2 = 'outbound|9080|v2|reviews.default.svc.cluster.local';

t.test('the live view draws the edges the requests made', { skip: existsSync(CHROMIUM) ? false : `no chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)` }, async (t) => {
  const { chromium } = await import('playwright-core');
  const v1 = await startBackend('reviews-v1');
  const v2 = await startBackend('reviews-v2', (_req, res) => {
    res.writeHead(500);
    res.end('v2 is broken');
  });
  const backends: Backend[] = [v1, v2];
  const mesh = new MeshDir({
    'mesh.yaml': doc(
      serviceEntry('reviews', 'reviews', [
        { port: v1.port, labels: { app: 'reviews', version: 'v1' } },
        { port: v2.port, labels: { app: 'reviews', version: 'v2' } },
      ], { port: 9080 }),
      versionSubsets('reviews', ['v1', 'v2']),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http:
  - match: [{ headers: { end-user: { exact: jason } } }]
    route: [{ destination: { host: reviews, subset: v2 } }]
  - route: [{ destination: { host: reviews, subset: v1 } }]
`,
    ),
  });
  const remora = await startRemora('sidecar', [mesh.dir], ['--labels', 'app=productpage', '--namespace', 'default']);
  const dir = mkdtempSync(join(tmpdir(), 'remora-ui-'));
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  t.teardown(async () => {
    await browser.close();
    await remora.stop();
    await Promise.all(backends.map((b) => b.close()));
    mesh.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  const page = await browser.newPage({ viewport: { width: 1400, height: 700 } });
  const elsewhere: string[] = [];
  page.on('request', (r) => {
    if (!r.url().startsWith(`http://127.0.0.1:${remora.ports.admin}/`)) elsewhere.push(r.url());
  });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`http://127.0.0.1:${remora.ports.admin}/ui`);
  await page.waitForSelector('svg#graph[data-ready="true"]');

  // The scenario: 4 requests to v1, 2 (jason's) to the broken v2.
  for (let i = 0; i < 4; i++) t.equal((await get(remora.ports.outbound, '/books', 'reviews:9080')).status, 200);
  for (let i = 0; i < 2; i++) t.equal((await get(remora.ports.outbound, '/books', 'reviews:9080', { 'end-user': 'jason' })).status, 500);

  // The page polls every 2 s: wait until it shows the v1 edge's four requests.
  const v1Edge = `path.edge[data-from="routes:9080"][data-to="cluster:${V1}"]`;
  const v2Edge = `path.edge[data-from="routes:9080"][data-to="cluster:${V2}"]`;
  await page.waitForSelector(`${v1Edge}[data-requests="4"]`, { timeout: 15_000 });
  t.match(await page.getAttribute(v1Edge, 'class'), /\bactive\b/, 'the v1 edge is drawn as carrying traffic');
  t.notMatch(await page.getAttribute(v1Edge, 'class'), /\berrors\b/);
  t.equal(await page.getAttribute(v2Edge, 'data-requests'), '2');
  t.match(await page.getAttribute(v2Edge, 'class'), /\berrors\b/, 'the v2 edge is drawn with errors');
  t.equal(await page.getAttribute(v2Edge, 'data-error-rate'), '1');
  for (const id of ['routes:9080', `cluster:${V1}`, `cluster:${V2}`, `endpoint:${V1}|127.0.0.1:${v1.port}`, `endpoint:${V2}|127.0.0.1:${v2.port}`]) {
    t.equal(await page.locator(`g.node[data-id="${id}"]`).count(), 1, `node ${id}`);
  }
  t.ok((await page.locator('g.node.listener').count()) >= 1, 'listener nodes');
  const hostEdge = page.locator(`path.edge[data-from="cluster:${V1}"][data-to="endpoint:${V1}|127.0.0.1:${v1.port}"]`);
  t.equal(await hostEdge.getAttribute('data-requests'), '4', 'cluster → endpoint edge');
  const labels = await page.locator('text.elabel').allTextContents();
  t.ok(labels.some((l) => /\/s 100\.0% err [\d.]+\/[\d.]+ms/.test(l)), 'the v2 edge label shows rate, error rate and p50/p99');
  t.notSame(await page.textContent('#version'), '-', 'the config version is shown');

  // The access log, filtered by the box.
  await page.locator('#log', { hasText: '"GET /books HTTP/1.1" 500' }).waitFor();
  await page.fill('#filter', ' 500 ');
  const filtered = (await page.textContent('#log')) ?? '';
  t.equal(filtered.trim().split('\n').length, 2, 'the filter keeps the two 500 lines');
  t.notMatch(filtered, /" 200 /);

  const shot = join(dir, 'ui.png');
  await page.screenshot({ path: shot, fullPage: true });
  const png = readFileSync(shot);
  t.ok(png.length > 1000, 'a screenshot was written');
  // REMORA_UI_SCREENSHOT=path keeps a copy to look at.
  const keep = process.env['REMORA_UI_SCREENSHOT'];
  if (keep) copyFileSync(shot, keep);
  t.same([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'it is a PNG');
  t.same(elsewhere, [], 'the page fetched nothing but the admin port');
  t.same(errors, [], 'no script errors');
});
