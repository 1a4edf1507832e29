// A cluster at run time picking hosts: ejected hosts are skipped, panic (Istio
// minHealthPercent) spreads over every host, retries avoid hosts already tried, locality
// priorities follow ejections, and slow start (warmupDurationSecs) ramps a new host's share.
//
// Reference: Envoy arch overview "Outlier detection" (ejected hosts leave the load balancing
// set), "Panic threshold" (below it, balance over all hosts), retry plugin
// envoy.retry_host_predicates.previous_hosts (Istio sets it on every route), "Slow start mode"
// (weight × max(10%, time factor)); istio.io DestinationRule OutlierDetection.minHealthPercent.
import t from 'tap';
import type { Cluster, ProxyNode } from '@remora/config';
import type { RequestStats } from '../src/telemetry/istio-metrics.ts';
import { UpstreamCluster } from '../src/upstream/upstream-cluster.ts';
import type { ClusterHost } from '../src/upstream/upstream-host.ts';
import { clusterModel as model, NODE, OUTLIER, TestHosts } from './helpers/upstream-fixtures.ts';

const made = new TestHosts();

/** Real hosts (an undici pool each, never dialled here) on TEST-NET addresses. */
/** Real hosts (an undici pool each, never dialled here) on TEST-NET addresses. */
function hosts(n: number, opts: { locality?: (i: number) => string; weight?: (i: number) => number } = {}): ClusterHost[] {
  return Array.from({ length: n }, (_, i) => made.host(`192.0.2.${i + 1}`, 80, { weight: opts.weight?.(i) ?? 1, locality: opts.locality?.(i) ?? '' }));
}

function cluster(m: Cluster, hs: ClusterHost[], node: ProxyNode = NODE): UpstreamCluster {
  const c = new UpstreamCluster(m, JSON.stringify(m), null as unknown as RequestStats, node);
  c.setHosts(hs, hs.map((h) => h.endpoint));
  return c;
}

const REQ = { requestHeader: () => null, cookie: () => null, queryParam: () => null, sourceIp: '127.0.0.1', setResponseCookie: () => {} };

const name = (h: ClusterHost | null): string => (h === null ? 'none' : h.host.address);
function tally(c: UpstreamCluster, n: number, avoid: ClusterHost[] | null = null): Record<string, number> {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const k = name(c.pick(REQ, avoid));
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

/** Makes a host look `ageMs` old, as if it had joined the cluster then. */
const age = (h: ClusterHost, ageMs: number): void => void ((h.host as unknown as { createdAt: number }).createdAt = Date.now() - ageMs);

t.teardown(() => made.destroyAll());

t.test('picks skip ejected hosts, and the host comes back after its ejection', async (t) => {
  const hs = hosts(3);
  const c = cluster(model({ outlierDetection: { ...OUTLIER, baseEjectionTimeMs: 30 } }), hs);
  t.same(tally(c, 30), { '192.0.2.1': 10, '192.0.2.2': 10, '192.0.2.3': 10 }, 'round robin over all three');
  c.reportStatus(hs[0]!, 503);
  t.equal(c.isEjected(hs[0]!), true);
  t.same(c.available.map(name), ['192.0.2.2', '192.0.2.3']);
  t.same(tally(c, 30), { '192.0.2.2': 15, '192.0.2.3': 15 }, 'the ejected host gets nothing');
  t.equal(c.panic, false);
  c.reportLocalFailure(hs[1]!);
  t.same(tally(c, 10), { '192.0.2.3': 10 }, 'a connect failure ejects too (counted as a 503)');
  await new Promise((r) => setTimeout(r, 40));
  c.outlier!.sweep();
  t.same(c.available.map(name), ['192.0.2.1', '192.0.2.2', '192.0.2.3'], 'back after baseEjectionTime');
  t.same(tally(c, 30), { '192.0.2.1': 10, '192.0.2.2': 10, '192.0.2.3': 10 });
  // Without outlier detection nothing is ever ejected.
  const plain = cluster(model(), hosts(2));
  plain.reportStatus(plain.hosts[0]!, 503);
  t.equal(plain.outlier, null);
  t.equal(plain.available.length, 2);
});

t.test('panic: under minHealthPercent healthy, traffic goes to every host, ejected or not', async (t) => {
  const hs = hosts(4);
  const c = cluster(model({ outlierDetection: { ...OUTLIER, minHealthPercent: 50 } }), hs);
  c.reportStatus(hs[0]!, 500);
  t.same([c.panic, c.available.length], [false, 3], '75% healthy');
  c.reportStatus(hs[1]!, 500);
  t.same([c.panic, c.available.length], [false, 2], '50% healthy is not below 50%');
  t.same(tally(c, 20), { '192.0.2.3': 10, '192.0.2.4': 10 });
  c.reportStatus(hs[2]!, 500);
  t.equal(c.outlier!.ejectedCount, 3);
  t.equal(c.panic, true, '25% healthy: panic');
  t.same(tally(c, 40), { '192.0.2.1': 10, '192.0.2.2': 10, '192.0.2.3': 10, '192.0.2.4': 10 }, 'all four, ejected ones included');

  // Istio's default minHealthPercent 0 turns panic off: every host ejected → no host.
  const off = hosts(2);
  const c0 = cluster(model({ outlierDetection: OUTLIER }), off);
  c0.reportStatus(off[0]!, 500);
  c0.reportStatus(off[1]!, 500);
  t.same([c0.panic, c0.pick(REQ)], [false, null], 'no healthy upstream (503 UH)');
});

t.test('retries avoid the hosts already tried when others are available, and fall back when not', async (t) => {
  const hs = hosts(3);
  const c = cluster(model(), hs);
  t.same(tally(c, 12, [hs[0]!, hs[1]!]), { '192.0.2.3': 12 }, 'two tried: always the third');
  const oneTried = tally(c, 30, [hs[2]!]);
  t.same(Object.keys(oneTried).sort(), ['192.0.2.1', '192.0.2.2'], 'one tried: the other two, never it');
  const all = tally(c, 30, hs);
  t.equal(Object.values(all).reduce((a, b) => a + b, 0), 30, 'all tried: a host is still picked (the balancer decides)');
  t.same(Object.keys(all).sort(), ['192.0.2.1', '192.0.2.2', '192.0.2.3']);

  const one = hosts(1);
  const single = cluster(model(), one);
  t.same(tally(single, 5, one), { '192.0.2.1': 5 }, 'a single host is retried on itself');

  // Ejected hosts are not "untried alternatives".
  const od = hosts(3);
  const withOd = cluster(model({ outlierDetection: OUTLIER }), od);
  withOd.reportStatus(od[0]!, 500);
  t.same(tally(withOd, 10, [od[1]!]), { '192.0.2.3': 10 });
  const fallback = tally(withOd, 10, [od[1]!, od[2]!]);
  t.equal(fallback['192.0.2.1'], undefined, 'both healthy hosts tried: the fallback is still never the ejected one');
});

t.test('retries stay in the locality the plan chose; retryRemoteLocalities sends them to another', async (t) => {
  // Two hosts in our zone (P0), one in another region (P1); all healthy: P0 takes everything.
  const hs = hosts(3, { locality: (i) => (i < 2 ? 'us-east/z1/s1' : 'eu-west/z1/s1') });
  const c = cluster(model({ localityLb: { distribute: [], failover: [], failoverPriority: [] } }), hs, { ...NODE, locality: 'us-east/z1/s1' });
  const pickMany = (n: number, avoid: ClusterHost[], remote: boolean): Record<string, number> => {
    const out: Record<string, number> = {};
    for (let i = 0; i < n; i++) {
      const k = name(c.pick(REQ, avoid, remote));
      out[k] = (out[k] ?? 0) + 1;
    }
    return out;
  };
  t.same(pickMany(20, [hs[0]!], false), { '192.0.2.2': 20 }, 'one local host tried: the other local one, never the remote region');
  const bothLocal = pickMany(20, [hs[0]!, hs[1]!], false);
  t.equal(bothLocal['192.0.2.3'], undefined, 'both local hosts tried: still local (Envoy keeps the priority), a tried host again');
  t.same(pickMany(20, [hs[0]!], true), { '192.0.2.3': 20 }, 'retryRemoteLocalities: the retry goes to the locality not tried yet');
  t.same(pickMany(20, [hs[0]!, hs[2]!], true), { '192.0.2.2': 20 }, 'every locality tried: an untried host anywhere');
  t.same(Object.keys(pickMany(40, [], true)).sort(), ['192.0.2.1', '192.0.2.2'], 'a first try is not affected');
});

t.test('locality priorities follow outlier ejections inside the cluster', async (t) => {
  // Two hosts in our zone (P0), one in another region (P1): P0 at 1 of 2 healthy keeps 70%.
  const hs = hosts(3, { locality: (i) => (i < 2 ? 'us-east/z1/s1' : 'eu-west/z1/s1') });
  const c = cluster(
    model({ outlierDetection: OUTLIER, localityLb: { distribute: [], failover: [], failoverPriority: [] } }),
    hs,
    { ...NODE, locality: 'us-east/z1/s1' },
  );
  const before = tally(c, 400);
  t.same(Object.keys(before).sort(), ['192.0.2.1', '192.0.2.2'], 'all healthy: only the local zone');
  c.reportStatus(hs[0]!, 500);
  const n = 4000;
  const after = tally(c, n);
  t.equal(after['192.0.2.1'], undefined, 'the ejected host gets nothing');
  const remote = (after['192.0.2.3'] ?? 0) / n;
  t.ok(remote > 0.26 && remote < 0.34, `about 30% spills to the other region (got ${(remote * 100).toFixed(1)}%)`);
  c.reportStatus(hs[1]!, 500);
  t.same(tally(c, 50), { '192.0.2.3': 50 }, 'the local zone empty: all to the other region');
});

t.test('slow start: a warming host gets weight × max(10%, age / window); after the window, equal shares', async (t) => {
  const WINDOW = 100_000;
  const n = 40_000;
  const hs = hosts(3);
  const c = cluster(model({ warmupMs: WINDOW }), hs);
  age(hs[0]!, 2 * WINDOW);
  age(hs[1]!, 2 * WINDOW);

  /** The warming host's picks relative to one warm host's: its effective weight factor. */
  const factorAt = (ageMs: number): number => {
    age(hs[2]!, ageMs);
    const counts = tally(c, n);
    return (counts['192.0.2.3'] ?? 0) / (((counts['192.0.2.1'] ?? 0) + (counts['192.0.2.2'] ?? 0)) / 2);
  };
  const f10 = factorAt(0.1 * WINDOW);
  t.ok(Math.abs(f10 - 0.1) < 0.02, `at 10% of the window: ~10% of its weight (got ${f10.toFixed(3)})`);
  const f50 = factorAt(0.5 * WINDOW);
  t.ok(Math.abs(f50 - 0.5) < 0.04, `at 50%: ~50% (got ${f50.toFixed(3)})`);
  const f0 = factorAt(0);
  t.ok(Math.abs(f0 - 0.1) < 0.02, `brand new: the 10% floor, never 0 (got ${f0.toFixed(3)})`);

  age(hs[2]!, WINDOW + 1);
  t.same(tally(c, 300), { '192.0.2.1': 100, '192.0.2.2': 100, '192.0.2.3': 100 }, 'past the window: plain round robin, equal shares');

  // Hosts equally new share equally (slow start only shapes differences in age).
  const fresh = hosts(2);
  const both = cluster(model({ warmupMs: WINDOW }), fresh);
  age(fresh[0]!, 0.3 * WINDOW);
  age(fresh[1]!, 0.3 * WINDOW);
  const counts = tally(both, n);
  const share = (counts['192.0.2.1'] ?? 0) / n;
  t.ok(Math.abs(share - 0.5) < 0.02, `two hosts of the same age: 50/50 (got ${(share * 100).toFixed(1)}%)`);

  // The endpoint weight is scaled, not replaced: weight 2 at half the window weighs like 1.
  const weighted = hosts(2, { weight: (i) => (i === 0 ? 1 : 2) });
  const wc = cluster(model({ warmupMs: WINDOW }), weighted);
  age(weighted[0]!, 2 * WINDOW);
  age(weighted[1]!, 0.5 * WINDOW);
  const wcounts = tally(wc, n);
  const heavy = (wcounts['192.0.2.2'] ?? 0) / n;
  t.ok(Math.abs(heavy - 0.5) < 0.02, `weight 2 × 50% = weight 1: 50/50 (got ${(heavy * 100).toFixed(1)}%)`);

  // warmupMs 0: slow start off, even for a brand new host.
  const off = hosts(2);
  const oc = cluster(model(), off);
  age(off[1]!, 0);
  t.same(tally(oc, 20), { '192.0.2.1': 10, '192.0.2.2': 10 });
});
