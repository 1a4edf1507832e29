// What finding a request's route costs on a virtual host with 10,000 routes: the first route
// against the last, through the host's path index and by the plain first-match scan that the
// index replaces (the "before"). A micro-measure in one process, no sockets; run by hand, not
// part of `pnpm bench`.
//
//   node bench/route-match-cost.ts [--routes 10000] [--iterations 200000]
//
// Routes are prefixes `/svc-<i>/` (what an Istio host with many HTTP routes looks like), plus
// a header-conditioned route and a catch-all at the end.
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import type { Route } from '../packages/config/src/index.ts';
import { plainRouteContext, type RouteRequest } from '../packages/proxy/src/router/compiled-route.ts';
import { RouteTable } from '../packages/proxy/src/router/route-table.ts';

const { values } = parseArgs({ options: { routes: { type: 'string', default: '10000' }, iterations: { type: 'string', default: '200000' } } });
const count = Number(values.routes);
const iterations = Number(values.iterations);

const route = (name: string, path: Route['match']['path'], headers: Route['match']['headers'] = []): Route => ({
  name,
  origin: '',
  match: { path, headers, queryParams: [] },
  action: { kind: 'direct-response', status: 200, body: null },
  requestHeaders: null,
  responseHeaders: null,
  filterConfigs: {},
});
const routes: Route[] = [];
for (let i = 0; i < count; i++) routes.push(route(`svc-${i}`, { match: { kind: 'prefix', value: `/svc-${i}/` }, ignoreCase: false }));
routes.push(route('v2', { match: { kind: 'prefix', value: '/svc-0/' }, ignoreCase: false }, [{ name: 'x-v', match: { kind: 'exact', value: '2' }, invert: false }]));
routes.push(route('catch-all', { match: { kind: 'any' }, ignoreCase: false }));
const started = performance.now();
const table = new RouteTable({ name: 't', virtualHosts: [{ name: 'h', domains: ['*'], routes, requireTls: false }], ignorePortInHostMatching: false }, plainRouteContext(new Map()));
const compileMs = performance.now() - started;
const vhost = table.find('h')!;

const request = (path: string): RouteRequest => ({
  method: 'GET',
  path,
  pathOnly: path,
  authority: 'h',
  scheme: 'http',
  requestHeader: () => null,
  queryParam: () => null,
  auth: null,
});

function measure(label: string, path: string, find: (r: RouteRequest) => { name: string } | null, expect: string): void {
  const r = request(path);
  if (find(r)?.name !== expect) throw new Error(`${label}: expected ${expect}, got ${find(r)?.name ?? 'no route'}`);
  const n = Math.max(1, Math.floor(path === '/svc-0/a' ? iterations : label.startsWith('scan') ? iterations / 200 : iterations));
  for (let i = 0; i < Math.min(n, 1000); i++) find(r);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) find(r);
  const ns = Number(process.hrtime.bigint() - t0) / n;
  console.log(`${label.padEnd(26)} ${ns.toFixed(0).padStart(9)} ns/op  (${n} ops)`);
}

console.log(`${count} routes on one host; compiled in ${compileMs.toFixed(0)} ms`);
const last = `svc-${count - 1}`;
measure('scan (before), first', '/svc-0/a', (r) => vhost.scan(r), 'svc-0');
measure('scan (before), last', `/svc-${count - 1}/a`, (r) => vhost.scan(r), last);
measure('scan (before), catch-all', '/none', (r) => vhost.scan(r), 'catch-all');
measure('index, first', '/svc-0/a', (r) => vhost.match(r), 'svc-0');
measure('index, last', `/svc-${count - 1}/a`, (r) => vhost.match(r), last);
measure('index, catch-all', '/none', (r) => vhost.match(r), 'catch-all');
