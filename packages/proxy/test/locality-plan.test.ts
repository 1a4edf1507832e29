// Locality load balancing (Istio localityLbSetting): endpoints sorted into priorities by how
// close they are to this proxy (or by failoverPriority labels), traffic spread over
// priorities by Envoy's overprovisioning rule, or over localities by `distribute` weights.
// `choose` takes the random number, so every share here is exact.
//
// Reference: istio.io "Locality failover" / "Locality weighted distribution" tasks and
// DestinationRule LocalityLoadBalancerSetting; Istio pilot/pkg/networking/core/loadbalancer/
// loadbalancer.go (applyLocalityFailover: same region/zone/subzone 0, region/zone 1, region 2,
// failover region 3, others 4; applyFailoverPriorityPerLocality); Envoy arch overview
// "Priority levels" (health = min(100, 1.4 × healthy%), spill to the next priority, loads
// normalised when the total health is under 100) and "Locality weighted load balancing"
// (effective weight = weight × min(100%, 1.4 × availability)).
import t from 'tap';
import type { Endpoint, LocalityLbSetting, ProxyNode } from '@remora/config';
import { LocalityPlan, type ClusterHost } from '@remora/proxy';

const NODE: ProxyNode = {
  kind: 'sidecar',
  namespace: 'default',
  serviceAccount: 'default',
  labels: {},
  workloadName: 'client',
  clusterDomain: 'cluster.local',
  rootNamespace: 'istio-system',
  trustDomain: 'cluster.local',
  locality: 'us-east/zone1/sub1',
};
const node = (locality: string, labels: Record<string, string> = {}): ProxyNode => ({ ...NODE, locality, labels });

const SETTING: LocalityLbSetting = { distribute: [], failover: [], failoverPriority: [] };
const setting = (over: Partial<LocalityLbSetting>): LocalityLbSetting => ({ ...SETTING, ...over });

/** A host named `name` in `locality`; the plan reads only the endpoint's locality and labels. */
function host(name: string, locality: string, labels: Record<string, string> = {}): ClusterHost {
  const endpoint: Endpoint = { address: name, port: 80, labels, weight: 1, locality, workloadName: '', namespace: 'default', serviceAccount: 'default' };
  return { host: { key: name, hostPort: name }, endpoint, stats: null } as unknown as ClusterHost;
}

const names = (hs: readonly ClusterHost[] | null): string => (hs === null ? 'none' : hs.map((h) => h.host.key).join(','));

/** How 1000 evenly spread random numbers land: group of hosts → count. */
function shares(plan: LocalityPlan, n = 1000): Record<string, number> {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const k = names(plan.choose((i + 0.5) / n));
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

const healthyExcept =
  (...down: ClusterHost[]) =>
  (h: ClusterHost): boolean =>
    !down.includes(h);
const allHealthy = (): boolean => true;

t.test('priorities by proximity: subzone 0, zone 1, region 2, failover region 3, others 4', async (t) => {
  const p0 = host('p0', 'us-east/zone1/sub1');
  const p1 = host('p1', 'us-east/zone1/sub2');
  const p2 = host('p2', 'us-east/zone2/sub1');
  const p3 = host('p3', 'us-west/zone1/sub1');
  const p4 = host('p4', 'eu-west/zone1/sub1');
  const hosts = [p4, p3, p2, p1, p0]; // order of the list does not matter
  const s = setting({ failover: [{ from: 'us-east', to: 'us-west' }] });
  const serving = (...down: ClusterHost[]): Record<string, number> => shares(new LocalityPlan(hosts, healthyExcept(...down), NODE, s));
  t.same(serving(), { p0: 1000 }, 'all healthy: the closest priority takes everything');
  t.same(serving(p0), { p1: 1000 }, 'same zone next');
  t.same(serving(p0, p1), { p2: 1000 }, 'then same region');
  t.same(serving(p0, p1, p2), { p3: 1000 }, 'then the failover region');
  t.same(serving(p0, p1, p2, p3), { p4: 1000 }, 'then anything else');
  const none = new LocalityPlan(hosts, () => false, NODE, s);
  t.equal(none.empty, true);
  t.equal(none.choose(0.5), null, 'no healthy host anywhere');

  // Without a failover rule for our region, every other region is one priority.
  const noFailover = new LocalityPlan(hosts, healthyExcept(p0, p1, p2), NODE, SETTING);
  t.same(shares(noFailover), { 'p4,p3': 1000 });
  // A failover rule for another region does not apply to us.
  const otherRule = new LocalityPlan(hosts, healthyExcept(p0, p1, p2), NODE, setting({ failover: [{ from: 'eu-west', to: 'us-west' }] }));
  t.same(shares(otherRule), { 'p4,p3': 1000 });
});

t.test("Envoy's spill with overprovisioning 1.4: P0 with 1 of 2 healthy keeps 70%, P1 takes 30%", async (t) => {
  const a1 = host('a1', 'us-east/zone1/sub1');
  const a2 = host('a2', 'us-east/zone1/sub1');
  const b1 = host('b1', 'us-east/zone2/x');
  const b2 = host('b2', 'us-east/zone2/y');
  const hosts = [a1, a2, b1, b2];
  const plan = new LocalityPlan(hosts, healthyExcept(a2), NODE, SETTING);
  t.same(shares(plan), { a1: 700, 'b1,b2': 300 });
  t.equal(names(plan.choose(0.699)), 'a1');
  t.equal(names(plan.choose(0.7)), 'b1,b2', 'the boundary is exactly at 70%');
  t.same(shares(new LocalityPlan(hosts, allHealthy, NODE, SETTING)), { 'a1,a2': 1000 }, 'all healthy: 100% P0');
  t.same(shares(new LocalityPlan(hosts, healthyExcept(a1, a2), NODE, SETTING)), { 'b1,b2': 1000 }, 'P0 empty: 100% P1');

  // At 72% healthy a priority still counts as whole (floor(1.4 × 72) = 100); at 71% it spills.
  const many = (n: number, loc: string, prefix: string): ClusterHost[] => Array.from({ length: n }, (_, i) => host(`${prefix}${i}`, loc));
  const p0 = many(25, 'us-east/zone1/sub1', 'x');
  const p1 = [host('y', 'us-east/zone9/a')];
  const at = (healthyInP0: number): Record<string, number> => {
    const down = p0.slice(healthyInP0);
    const counts = shares(new LocalityPlan([...p0, ...p1], healthyExcept(...down), NODE, SETTING));
    return { p0: 1000 - (counts['y'] ?? 0), p1: counts['y'] ?? 0 };
  };
  t.same(at(18), { p0: 1000, p1: 0 }, '18/25 = 72% → health 100');
  t.same(at(17), { p0: 950, p1: 50 }, '17/25 = 68% → health floor(95.2) = 95');
});

t.test('when all priorities together are under 100% healthy, their loads are scaled up to fill 100%', async (t) => {
  const a = [host('a1', 'us-east/zone1/sub1'), host('a2', 'us-east/zone1/sub1'), host('a3', 'us-east/zone1/sub1'), host('a4', 'us-east/zone1/sub1')];
  const b = [host('b1', 'us-west/z/s'), host('b2', 'us-west/z/s'), host('b3', 'us-west/z/s'), host('b4', 'us-west/z/s')];
  // 1 of 4 healthy in each: health 35 + 35 = 70 → 50% each.
  const plan = new LocalityPlan([...a, ...b], healthyExcept(a[1]!, a[2]!, a[3]!, b[1]!, b[2]!, b[3]!), NODE, SETTING);
  t.same(shares(plan), { a1: 500, b1: 500 });
  // With a third priority at 0 health: it gets nothing, the two others still share 50/50.
  const c = [host('c1', 'us-east/zone2/x')];
  const three = new LocalityPlan([...a, ...b, ...c], healthyExcept(a[1]!, a[2]!, a[3]!, b[1]!, b[2]!, b[3]!, c[0]!), NODE, SETTING);
  t.same(shares(three), { a1: 500, b1: 500 });
  // 1 of 4 (35) and 2 of 4 (70): 105 ≥ 100, no scaling: 35% and the remaining 65%.
  const uneven = new LocalityPlan([...a, ...b], healthyExcept(a[1]!, a[2]!, a[3]!, b[2]!, b[3]!), NODE, SETTING);
  t.same(shares(uneven), { a1: 350, 'b1,b2': 650 });
});

t.test('failoverPriority: priority by how many leading labels match the proxy', async (t) => {
  const me = node('', { 'topology.istio.io/network': 'n1', version: 'v1' });
  const labels = ['topology.istio.io/network', 'version'];
  const both = host('both', '', { 'topology.istio.io/network': 'n1', version: 'v1' });
  const netOnly = host('netOnly', '', { 'topology.istio.io/network': 'n1', version: 'v2' });
  const versionOnly = host('versionOnly', '', { 'topology.istio.io/network': 'n2', version: 'v1' });
  const neither = host('neither', '', { 'topology.istio.io/network': 'n2', version: 'v2' });
  const hosts = [neither, versionOnly, netOnly, both];
  const s = setting({ failoverPriority: labels });
  const serving = (...down: ClusterHost[]): Record<string, number> => shares(new LocalityPlan(hosts, healthyExcept(...down), me, s));
  t.same(serving(), { both: 1000 }, 'both labels match: priority 0');
  t.same(serving(both), { netOnly: 1000 }, 'the first label matches: priority 1');
  t.same(serving(both, netOnly), { 'neither,versionOnly': 1000 }, 'the first label differs: the last priority, whatever follows');
});

t.test('failoverPriority: topology labels come from the locality of the proxy and of each endpoint', async (t) => {
  const s = setting({ failoverPriority: ['topology.kubernetes.io/region', 'topology.kubernetes.io/zone', 'topology.istio.io/subzone'] });
  const same = host('same', 'us-east/zone1/sub1');
  const zone = host('zone', 'us-east/zone1/sub9');
  const region = host('region', 'us-east/zone2/sub1');
  const far = host('far', 'us-west/zone1/sub1');
  const hosts = [far, region, zone, same];
  const serving = (...down: ClusterHost[]): string => Object.keys(shares(new LocalityPlan(hosts, healthyExcept(...down), NODE, s))).join('|');
  t.equal(serving(), 'same');
  t.equal(serving(same), 'zone');
  t.equal(serving(same, zone), 'region');
  t.equal(serving(same, zone, region), 'far');
  // An explicit label on the endpoint wins over the one derived from its locality.
  const relabelled = host('relabelled', 'us-west/zone1/sub1', { 'topology.kubernetes.io/region': 'us-east' });
  const plan = new LocalityPlan([relabelled, far], allHealthy, NODE, setting({ failoverPriority: ['topology.kubernetes.io/region'] }));
  t.same(shares(plan), { relabelled: 1000 });
});

t.test('distribute: traffic split over destination localities by weight, wildcards included', async (t) => {
  const me = node('us-west/zone1/sub1');
  const w1 = host('w1', 'us-west/zone1/a');
  const w2 = host('w2', 'us-west/zone1/b');
  const w3 = host('w3', 'us-west/zone2/a');
  const e1 = host('e1', 'us-east/zone1/a');
  const s = setting({ distribute: [{ from: 'us-west/zone1/*', to: { 'us-west/zone1/*': 80, 'us-west/zone2/*': 20 } }] });
  const plan = new LocalityPlan([w1, w2, w3, e1], allHealthy, me, s);
  t.same(shares(plan), { 'w1,w2': 800, w3: 200 }, 'us-east is in no destination: it gets nothing');
  t.equal(names(plan.choose(0.7999)), 'w1,w2');
  t.equal(names(plan.choose(0.8)), 'w3');
  // A destination locality with no healthy host drops out; the rest takes it all.
  t.same(shares(new LocalityPlan([w1, w2, w3, e1], healthyExcept(w3), me, s)), { 'w1,w2': 1000 });
  // `from` is matched against this proxy: another client locality gets the usual priorities.
  const eastClient = new LocalityPlan([w1, w2, w3, e1], allHealthy, node('us-east/zone1/a'), s);
  t.same(shares(eastClient), { e1: 1000 });
  // A bare region pattern matches every zone of it.
  const byRegion = new LocalityPlan(
    [w1, w3, e1],
    allHealthy,
    me,
    setting({ distribute: [{ from: 'us-west/*', to: { 'us-west/*': 50, 'us-east/*': 50 } }] }),
  );
  t.same(shares(byRegion), { 'w1,w3': 500, e1: 500 });
});

t.test('distribute: a partly healthy locality keeps weight × min(1, 1.4 × healthy share)', async (t) => {
  // Envoy's table (locality weighted load balancing): X weight 1, Y weight 2, Y all healthy.
  const me = node('r/c/c');
  const x = Array.from({ length: 4 }, (_, i) => host(`x${i}`, 'r/x/s'));
  const y = [host('y0', 'r/y/s')];
  const s = setting({ distribute: [{ from: 'r/c/*', to: { 'r/x/*': 1, 'r/y/*': 2 } }] });
  const xShare = (healthyX: number): number => {
    const down = x.slice(healthyX);
    const counts = shares(new LocalityPlan([...x, ...y], healthyExcept(...down), me, s), 10_000);
    return Math.round((10_000 - (counts['y0'] ?? 0)) / 100);
  };
  t.equal(xShare(4), 33, '100% healthy: 33%');
  t.equal(xShare(2), 26, '50% healthy: 70 / 270 = 26%');
  t.equal(xShare(1), 15, '25% healthy: 35 / 235 = 15%');
  t.equal(xShare(0), 0, '0% healthy: 0%');
});

t.test('unknown client locality: one priority of every healthy host', async (t) => {
  const hosts = [host('a', 'us-east/zone1/sub1'), host('b', 'us-west/zone1/sub1'), host('c', '')];
  t.same(shares(new LocalityPlan(hosts, allHealthy, node(''), SETTING)), { 'a,b,c': 1000 });
  t.same(shares(new LocalityPlan(hosts, healthyExcept(hosts[0]!), node(''), SETTING)), { 'b,c': 1000 });
  // `distribute` needs a client locality to match `from`; without one it does not apply.
  const d = setting({ distribute: [{ from: '*', to: { 'us-east/*': 100 } }] });
  t.same(shares(new LocalityPlan(hosts, allHealthy, node(''), d)), { 'a,b,c': 1000 });
  // Endpoints with no locality, seen from a located proxy, are "another region".
  const located = new LocalityPlan([host('x', ''), host('y', 'us-east/zone1/sub1')], healthyExcept(), NODE, SETTING);
  t.same(shares(located), { y: 1000 });
});
