// The per-host route index chooses exactly the route the linear first-match scan chooses.
import t from 'tap';
import type { Route, RouteConfiguration, VirtualHost } from '@remora/config';
import { plainRouteContext, RouteTable } from '@remora/proxy';

/** A seeded generator, so that a failing case can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const SEGMENTS = ['', 'a', 'A', 'ab', 'api', 'API', 'v1', 'V1', 'b', 'x.y'];
const route = (name: string, path: Route['match']['path'], headers: Route['match']['headers'] = []): Route => ({
  name,
  origin: '',
  match: { path, headers, queryParams: [] },
  action: { kind: 'direct-response', status: 200, body: null },
  requestHeaders: null,
  responseHeaders: null,
  filterConfigs: {},
});
const request = (path: string, headers: Record<string, string> = {}) => {
  const q = path.indexOf('?');
  return {
    method: 'GET',
    path,
    pathOnly: q < 0 ? path : path.slice(0, q),
    authority: 'h',
    scheme: 'http',
    requestHeader: (n: string) => headers[n] ?? null,
    queryParam: () => null,
    auth: null,
  };
};
const host = (routes: Route[]): VirtualHost => ({ name: 'h', domains: ['*'], routes, requireTls: false });
const table = (routes: Route[]) =>
  new RouteTable({ name: 't', virtualHosts: [host(routes)], ignorePortInHostMatching: false } satisfies RouteConfiguration, plainRouteContext(new Map()));

t.test('random route sets: the index picks the route the linear scan picks', async (t) => {
  const rand = rng(20261206);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const randomPath = (): string => {
    const n = Math.floor(rand() * 4);
    let p = '';
    for (let i = 0; i < n; i++) p += '/' + pick(SEGMENTS);
    if (rand() < 0.3) p += pick(['/', '']);
    return p;
  };
  let indexed = 0;
  let mismatches = 0;
  let matched = 0;
  for (let set = 0; set < 300; set++) {
    const count = 1 + Math.floor(rand() * 60);
    const routes: Route[] = [];
    for (let i = 0; i < count; i++) {
      const ignoreCase = rand() < 0.3;
      const k = rand();
      const p = randomPath();
      const match: Route['match']['path']['match'] =
        k < 0.35 ? { kind: 'prefix', value: p } : k < 0.7 ? { kind: 'exact', value: p === '' ? '/' : p } : k < 0.8 ? { kind: 'regex', value: '/a.*' } : k < 0.85 ? { kind: 'suffix', value: pick(SEGMENTS) } : k < 0.9 ? { kind: 'contains', value: pick(SEGMENTS) } : { kind: 'any' };
      const headers: Route['match']['headers'] = rand() < 0.3 ? [{ name: 'x-v', match: { kind: 'exact', value: pick(['1', '2']) }, invert: rand() < 0.2 }] : [];
      routes.push(route(`r${i}`, { match, ignoreCase }, headers));
    }
    const vhost = table(routes).find('h')!;
    if (count >= 16) indexed++;
    for (let q = 0; q < 40; q++) {
      let path = randomPath() || '/';
      if (rand() < 0.2) path += '?' + pick(['a=1', 'x=API']);
      const headers: Record<string, string> = rand() < 0.5 ? { 'x-v': pick(['1', '2']) } : {};
      const r = request(path, headers);
      const want = vhost.scan(r)?.name ?? null;
      const got = vhost.match(r)?.name ?? null;
      if (want !== null) matched++;
      if (want !== got) {
        mismatches++;
        if (mismatches <= 5) t.fail(`set ${set} ${path} ${JSON.stringify(headers)}: scan ${want}, index ${got}`, { routes: routes.map((x) => [x.name, x.match]) });
      }
    }
  }
  t.equal(mismatches, 0, 'same route for every request');
  t.ok(indexed > 100, `most sets are large enough to be indexed (${indexed})`);
  t.ok(matched > 3000, `most requests match some route (${matched})`);
});

t.test('10,000 routes on one host: the last route is chosen for its path, and first match still wins', async (t) => {
  const routes: Route[] = [];
  for (let i = 0; i < 10_000; i++) routes.push(route(`svc-${i}`, { match: { kind: 'prefix', value: `/svc-${i}/` }, ignoreCase: false }));
  routes.push(route('exact-late', { match: { kind: 'exact', value: '/svc-3/x' }, ignoreCase: false }));
  routes.push(route('folded', { match: { kind: 'exact', value: '/Only/Here' }, ignoreCase: true }));
  routes.push(route('v2', { match: { kind: 'prefix', value: '/svc-9999/' }, ignoreCase: false }, [{ name: 'x-v', match: { kind: 'exact', value: '2' }, invert: false }]));
  routes.push(route('catch-all', { match: { kind: 'any' }, ignoreCase: false }));
  const vhost = table(routes).find('h')!;
  const name = (path: string, headers: Record<string, string> = {}) => vhost.match(request(path, headers))?.name ?? null;
  t.equal(name('/svc-9999/items?id=1'), 'svc-9999');
  t.equal(name('/svc-0/'), 'svc-0');
  t.equal(name('/svc-3/x'), 'svc-3', 'an earlier prefix route wins over a later exact one');
  t.equal(name('/only/here'), 'folded', 'ignoreCase exact');
  t.equal(name('/svc-99999/'), 'catch-all', 'a longer number is not the prefix /svc-9999/');
  t.equal(name('/svc-9999/', { 'x-v': '2' }), 'svc-9999', 'the header route comes later');
  t.equal(name('/elsewhere'), 'catch-all');
});

t.test('ignoreCase prefixes and exact paths, query strings and regexes, as Envoy', async (t) => {
  const routes: Route[] = [
    route('exact-query', { match: { kind: 'exact', value: '/e' }, ignoreCase: false }),
    route('prefix-folded', { match: { kind: 'prefix', value: '/API/' }, ignoreCase: true }),
    route('prefix-query', { match: { kind: 'prefix', value: '/p?x' }, ignoreCase: false }),
    route('regex', { match: { kind: 'regex', value: '/r[0-9]+' }, ignoreCase: false }),
  ];
  for (let i = 0; i < 20; i++) routes.push(route(`filler-${i}`, { match: { kind: 'exact', value: `/f${i}` }, ignoreCase: false }));
  const vhost = table(routes).find('h')!;
  const name = (path: string) => vhost.match(request(path))?.name ?? null;
  t.equal(name('/e?q=1'), 'exact-query', 'exact matches the path without its query');
  t.equal(name('/api/users'), 'prefix-folded');
  t.equal(name('/Api/users'), 'prefix-folded');
  t.equal(name('/p?x=1'), 'prefix-query', 'prefix matches the whole :path, query included');
  t.equal(name('/r42?z'), 'regex', 'regex matches the path without its query');
  t.equal(name('/r4x'), null);
  t.equal(name('/f19'), 'filler-19');
});
