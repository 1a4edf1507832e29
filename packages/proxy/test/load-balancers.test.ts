// The load balancers' picking rules, with randomness injected where it matters.
import t from 'tap';
import { LeastRequestLoadBalancer, RandomLoadBalancer, RingHashLoadBalancer, RoundRobinLoadBalancer } from '@remora/proxy';

interface FakeHost {
  host: { hostPort: string; active: number };
  endpoint: { weight: number };
  stats: null;
}
const hosts = (...weights: number[]): FakeHost[] =>
  weights.map((w, i) => ({ host: { hostPort: `10.0.0.${i + 1}:80`, active: 0 }, endpoint: { weight: w }, stats: null }));

// The balancers read only these fields; the cast keeps the test free of pools and sockets.
type Hosts = Parameters<RoundRobinLoadBalancer['pick']>[0];
const as = (h: FakeHost[]): Hosts => h as unknown as Hosts;

function source(headers: Record<string, string> = {}, ip = '192.0.2.1') {
  const cookies: string[] = [];
  return {
    requestHeader: (n: string) => headers[n] ?? null,
    cookie: (n: string) => headers[`cookie:${n}`] ?? null,
    queryParam: (n: string) => headers[`query:${n}`] ?? null,
    sourceIp: ip,
    setResponseCookie: (name: string, value: string) => void cookies.push(`${name}=${value}`),
    cookies,
  };
}

const tally = (picks: (FakeHost | null)[]): Record<string, number> => {
  const out: Record<string, number> = {};
  for (const p of picks) out[p!.host.hostPort] = (out[p!.host.hostPort] ?? 0) + 1;
  return out;
};

t.test('round robin walks equal-weight hosts in order', async (t) => {
  const lb = new RoundRobinLoadBalancer();
  const h = hosts(1, 1, 1);
  const seq = Array.from({ length: 6 }, () => (lb.pick(as(h), source()) as unknown as FakeHost).host.hostPort);
  t.same(seq, ['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80', '10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80']);
  t.equal(lb.pick(as([]), source()), null, 'no hosts, no pick');
});

t.test('weighted round robin honours weights and interleaves (smooth WRR)', async (t) => {
  const lb = new RoundRobinLoadBalancer();
  const h = hosts(5, 1, 1);
  const picks = Array.from({ length: 7 }, () => lb.pick(as(h), source()) as unknown as FakeHost);
  t.same(tally(picks), { '10.0.0.1:80': 5, '10.0.0.2:80': 1, '10.0.0.3:80': 1 });
  // nginx's smooth weighted round robin for {a:5, b:1, c:1}: a a b a c a a.
  t.same(
    picks.map((p) => p.host.hostPort.slice(7, 8)),
    ['1', '1', '2', '1', '3', '1', '1'],
    'the light hosts are spread between the heavy host\'s turns',
  );
});

t.test('least request: of two random picks, the one with fewer active requests wins', async (t) => {
  const h = hosts(1, 1, 1);
  h[0]!.host.active = 5;
  h[1]!.host.active = 1;
  // random() returns 0 then 0: i = 0, j = 0 → shifted to 1 (distinct) → host 2 has fewer active.
  const seq = [0, 0];
  const lb = new LeastRequestLoadBalancer(() => seq.shift() ?? 0);
  t.equal((lb.pick(as(h), source()) as unknown as FakeHost).host.hostPort, '10.0.0.2:80');
  // Over many picks the busiest host is chosen only when both choices are it, which cannot happen.
  const lb2 = new LeastRequestLoadBalancer();
  const picks = Array.from({ length: 300 }, () => lb2.pick(as(h), source()) as unknown as FakeHost);
  t.equal(tally(picks)['10.0.0.1:80'] ?? 0, 0, 'the busiest of three is never picked');
});

t.test('random honours weights', async (t) => {
  let i = 0;
  const values = [0.0, 0.5, 0.74, 0.76, 0.99];
  const lb = new RandomLoadBalancer(() => values[i++ % values.length]!);
  const h = hosts(3, 1);
  const picks = values.map(() => (lb.pick(as(h), source()) as unknown as FakeHost).host.hostPort);
  t.same(picks, ['10.0.0.1:80', '10.0.0.1:80', '10.0.0.1:80', '10.0.0.2:80', '10.0.0.2:80']);
});

t.test('ring hash: same key same host, keys spread, few keys move when a host goes', async (t) => {
  // Envoy scales each host's share of the ring with the host count, so when a host leaves the
  // others gain points and some of their keys move too; far fewer than hashing modulo n would.
  const lb = new RingHashLoadBalancer({ kind: 'header', name: 'x-user' }, 1024);
  const four = hosts(1, 1, 1, 1);
  const keys = Array.from({ length: 400 }, (_, i) => `user-${i}`);
  const before = new Map(keys.map((k) => [k, (lb.pick(as(four), source({ 'x-user': k })) as unknown as FakeHost).host.hostPort]));
  for (const k of keys.slice(0, 20)) t.equal((lb.pick(as(four), source({ 'x-user': k })) as unknown as FakeHost).host.hostPort, before.get(k), `${k} is stable`);
  const share = tally([...before.values()].map((hp) => ({ host: { hostPort: hp } }) as FakeHost));
  for (const [hp, n] of Object.entries(share)) t.ok(n > 40 && n < 180, `${hp} owns a fair share (${n}/400)`);
  const three = four.slice(0, 3);
  let moved = 0;
  for (const k of keys) {
    const now = (lb.pick(as(three), source({ 'x-user': k })) as unknown as FakeHost).host.hostPort;
    const was = before.get(k)!;
    if (was !== '10.0.0.4:80' && now !== was) moved++;
  }
  const survivors = keys.length - [...before.values()].filter((hp) => hp === '10.0.0.4:80').length;
  t.ok(moved / survivors < 0.2, `most keys of the remaining hosts stay put (${moved} of ${survivors} moved; modulo hashing would move ~3/4)`);
});

t.test('ring hash keys: source IP, query parameter; no key means a random pick', async (t) => {
  const h = hosts(1, 1, 1);
  const byIp = new RingHashLoadBalancer({ kind: 'source-ip' }, 256);
  const a = byIp.pick(as(h), source({}, '198.51.100.7'));
  for (let i = 0; i < 10; i++) t.equal(byIp.pick(as(h), source({}, '198.51.100.7')), a);
  const byQuery = new RingHashLoadBalancer({ kind: 'query-param', name: 'u' }, 256);
  const q = byQuery.pick(as(h), source({ 'query:u': 'zed' }));
  for (let i = 0; i < 10; i++) t.equal(byQuery.pick(as(h), source({ 'query:u': 'zed' })), q);
  const byHeader = new RingHashLoadBalancer({ kind: 'header', name: 'x-user' }, 256);
  const seen = new Set(Array.from({ length: 200 }, () => byHeader.pick(as(h), source())));
  t.equal(seen.size, 3, 'without the header every host gets picked');
});

t.test('ring hash on a cookie with a TTL sets the cookie when absent', async (t) => {
  const lb = new RingHashLoadBalancer({ kind: 'cookie', name: 'sticky', path: '/', ttlSeconds: 30 }, 256);
  const src = source();
  lb.pick(as(hosts(1, 1)), src);
  t.match(src.cookies, [/^sticky=[0-9a-f]{16}$/]);
  const noTtl = new RingHashLoadBalancer({ kind: 'cookie', name: 'sticky', path: '/', ttlSeconds: 0 }, 256);
  const src2 = source();
  noTtl.pick(as(hosts(1, 1)), src2);
  t.same(src2.cookies, [], 'no TTL: no cookie is generated (Envoy)');
});
