// Outlier detection (Istio outlierDetection → Envoy outlier_detection) on an injected clock:
// which streaks eject a host, what resets them, how many hosts may be out at once, how long
// an ejection lasts and how that length decays, and what survives a host list change.
//
// Reference: Envoy arch overview "Outlier detection" (consecutive 5xx, consecutive gateway
// failure, split_external_local_origin_errors: "if not split, locally originated errors are
// treated as 5xx (503)"; ejection time = base_ejection_time × number of ejections, capped by
// max_ejection_time 300 s; the multiplier is decremented for every interval the host stays
// healthy); source/common/upstream/outlier_detection_impl.cc (ejectHost, onIntervalTimer).
import t from 'tap';
import type { OutlierDetection } from '@remora/config';
import { OutlierDetector } from '@remora/proxy';
import { OUTLIER } from './helpers/upstream-fixtures.ts';

/** The fixtures' policy with Istio's default streak of five 5xx. */
const BASE: OutlierDetection = { ...OUTLIER, consecutive5xxErrors: 5 };

/** A detector over `hosts` with a hand-driven clock and a count of change notifications. */
function detector(over: Partial<OutlierDetection>, hosts = ['a', 'b', 'c', 'd']) {
  const clock = { now: 1_000_000 };
  const changes = { n: 0 };
  const d = new OutlierDetector({ ...BASE, ...over }, () => changes.n++, () => clock.now);
  d.setHosts(hosts);
  return { d, clock, changes };
}

const statuses = (d: OutlierDetector, key: string, codes: number[]): void => codes.forEach((c) => d.reportStatus(key, c));

t.test('consecutive 5xx: the Nth 5xx in a row ejects the host at once', async (t) => {
  const { d, clock, changes } = detector({ consecutive5xxErrors: 3 });
  statuses(d, 'a', [500, 503]);
  t.equal(d.isEjected('a'), false, 'two in a row: still in');
  t.equal(changes.n, 0);
  d.reportStatus('a', 501);
  t.equal(d.isEjected('a'), true, 'third 5xx of any kind: out');
  t.equal(changes.n, 1, 'the cluster is told once');
  t.equal(d.state('a')!.ejectedUntil, clock.now + 30_000, 'for baseEjectionTime');
  t.same([d.state('a')!.ejectionsTotal, d.ejectionsTotal, d.ejectedCount], [1, 1, 1]);
  t.same([d.isEjected('b'), d.isEjected('c')], [false, false], 'other hosts untouched');
  // More errors while ejected change nothing (no longer ejection, no second notification).
  statuses(d, 'a', [500, 500, 500, 500]);
  t.equal(d.state('a')!.ejectedUntil, clock.now + 30_000);
  t.equal(changes.n, 1);
  t.equal(d.ejectionsTotal, 1);
});

t.test('a success resets the streaks; 4xx are successes', async (t) => {
  const { d } = detector({ consecutive5xxErrors: 3, consecutiveGatewayErrors: 3 });
  statuses(d, 'a', [500, 502, 200, 500, 503, 404, 502, 504, 301, 500, 500]);
  t.equal(d.isEjected('a'), false, 'never three in a row');
  t.same([d.state('a')!.consecutive5xx, d.state('a')!.consecutiveGateway], [2, 0]);
  d.reportStatus('a', 500);
  t.equal(d.isEjected('a'), true);
});

t.test('consecutive gateway errors count only 502, 503, 504; another 5xx breaks the gateway streak', async (t) => {
  const { d } = detector({ consecutive5xxErrors: 0, consecutiveGatewayErrors: 3 });
  statuses(d, 'a', Array.from({ length: 20 }, () => 500));
  t.equal(d.isEjected('a'), false, '500s are not gateway errors, and 5xx ejection is off (0)');
  statuses(d, 'a', [502, 503, 500, 504, 502]);
  t.equal(d.isEjected('a'), false, 'the 500 broke the streak: 2 then 2');
  d.reportStatus('a', 503);
  t.equal(d.isEjected('a'), true, '504, 502, 503 in a row');
  // Gateway detection is independent of the 5xx threshold when both are set.
  const both = detector({ consecutive5xxErrors: 10, consecutiveGatewayErrors: 2 }).d;
  statuses(both, 'b', [503, 504]);
  t.equal(both.isEjected('b'), true, 'the gateway threshold is reached first');
});

t.test('not split: a local failure (connect failure, reset, timeout) counts as a 503', async (t) => {
  const { d } = detector({ consecutive5xxErrors: 3, splitExternalLocalOriginErrors: false });
  d.reportLocalFailure('a');
  d.reportStatus('a', 500);
  t.equal(d.isEjected('a'), false);
  d.reportLocalFailure('a');
  t.equal(d.isEjected('a'), true, 'local, 500, local: three 5xx in a row');
  // It also counts towards gateway errors, as a 503 would.
  const gw = detector({ consecutive5xxErrors: 0, consecutiveGatewayErrors: 2 }).d;
  gw.reportLocalFailure('b');
  gw.reportLocalFailure('b');
  t.equal(gw.isEjected('b'), true);
  // A response resets the streak; the local-origin counter is not used when not split.
  const r = detector({ consecutive5xxErrors: 3, consecutiveLocalOriginFailures: 1 }).d;
  r.reportLocalFailure('c');
  r.reportLocalFailure('c');
  r.reportStatus('c', 200);
  r.reportLocalFailure('c');
  t.equal(r.isEjected('c'), false, 'consecutiveLocalOriginFailures: 1 has no effect unless split');
  t.equal(r.state('c')!.consecutive5xx, 1);
});

t.test('split: local failures have their own streak; responses feed only the 5xx streaks', async (t) => {
  const { d } = detector({ consecutive5xxErrors: 3, consecutiveLocalOriginFailures: 2, splitExternalLocalOriginErrors: true });
  d.reportLocalFailure('a');
  statuses(d, 'a', [500, 500]);
  t.equal(d.isEjected('a'), false, 'one local failure, two 5xx: neither threshold');
  t.same([d.state('a')!.consecutiveLocal, d.state('a')!.consecutive5xx], [1, 2]);
  d.reportLocalFailure('a');
  t.equal(d.isEjected('a'), true, 'second local failure in a row');

  // A successful connection resets the local streak (UpstreamCluster reports it with each response).
  const s = detector({ consecutive5xxErrors: 3, consecutiveLocalOriginFailures: 2, splitExternalLocalOriginErrors: true }).d;
  s.reportLocalFailure('b');
  s.reportLocalSuccess('b');
  s.reportLocalFailure('b');
  t.equal(s.isEjected('b'), false);
  t.equal(s.state('b')!.consecutiveLocal, 1);
  // Local failures never count as 5xx when split.
  const only5xx = detector({ consecutive5xxErrors: 2, consecutiveLocalOriginFailures: 100, splitExternalLocalOriginErrors: true }).d;
  for (let i = 0; i < 10; i++) only5xx.reportLocalFailure('c');
  t.equal(only5xx.isEjected('c'), false);
  t.equal(only5xx.state('c')!.consecutive5xx, 0);
  // Not split, reportLocalSuccess is a no-op: the streak is the 5xx one.
  const ns = detector({ consecutive5xxErrors: 2 }).d;
  ns.reportLocalFailure('d');
  ns.reportLocalSuccess('d');
  ns.reportLocalFailure('d');
  t.equal(ns.isEjected('d'), true);
});

t.test("maxEjectionPercent: an ejection is refused once the ejected share is at or above the maximum", async (t) => {
  const ejectAll = (pct: number, hosts: string[]): string[] => {
    const { d } = detector({ consecutive5xxErrors: 1, maxEjectionPercent: pct }, hosts);
    for (const h of hosts) d.reportStatus(h, 500);
    return hosts.filter((h) => d.isEjected(h));
  };
  const three = ['a', 'b', 'c'];
  t.same(ejectAll(34, three), ['a', 'b'], '34%: 0% and 33% are below it, 67% is not');
  t.same(ejectAll(30, three), ['a'], '30%: 33% already reaches it after one');
  t.same(ejectAll(10, three), ['a'], "Istio's default 10%: one host of a small cluster can still go");
  t.same(ejectAll(100, three), three, '100%: all may go');
  t.same(ejectAll(50, ['a', 'b', 'c', 'd']), ['a', 'b'], '4 hosts, 50%: two');
  t.same(ejectAll(0, three), [], '0%: never');

  // Once an ejected host returns, there is room again.
  const { d, clock } = detector({ consecutive5xxErrors: 1, maxEjectionPercent: 30 }, three);
  d.reportStatus('a', 500);
  d.reportStatus('b', 500);
  t.same([d.isEjected('a'), d.isEjected('b')], [true, false]);
  clock.now += 30_000;
  d.sweep();
  t.equal(d.isEjected('a'), false, 'a is back');
  d.reportStatus('b', 500);
  t.equal(d.isEjected('b'), true, 'b can go now');
});

t.test('ejection time: base × multiplier, capped at 300 s; the multiplier decays by one per healthy interval', async (t) => {
  const { d, clock, changes } = detector({ consecutive5xxErrors: 1, baseEjectionTimeMs: 10_000 });
  const eject = (): number => {
    d.reportStatus('a', 500);
    t.equal(d.isEjected('a'), true);
    return d.state('a')!.ejectedUntil - clock.now;
  };
  /** Advances to the end of the current ejection and sweeps: the host comes back. */
  const comeBack = (): void => {
    clock.now = d.state('a')!.ejectedUntil - 1;
    d.sweep();
    t.equal(d.isEjected('a'), true, 'still out 1 ms before its time');
    clock.now++;
    d.sweep();
    t.equal(d.isEjected('a'), false, 'back at its time');
  };
  /** Healthy sweeps (one per interval) while the host is in. */
  const healthyIntervals = (n: number): void => {
    for (let i = 0; i < n; i++) {
      clock.now += 10_000;
      d.sweep();
    }
  };
  t.equal(eject(), 10_000, 'first ejection: base');
  comeBack();
  t.equal(eject(), 20_000, 'ejected again right away: 2 × base');
  comeBack();
  t.equal(eject(), 30_000, '3 × base');
  comeBack();
  healthyIntervals(1);
  t.equal(d.state('a')!.multiplier, 2, 'one healthy interval: multiplier 3 → 2');
  t.equal(eject(), 30_000, 'so the next ejection is 3 × base again, not 4 ×');
  comeBack();
  healthyIntervals(3);
  t.equal(d.state('a')!.multiplier, 0, 'three healthy intervals: decayed to 0');
  healthyIntervals(2);
  t.equal(d.state('a')!.multiplier, 0, 'never below 0');
  t.equal(eject(), 10_000, 'a fresh start: base');
  t.equal(changes.n, 9, 'each of the 5 ejections and 4 returns notified the cluster once');

  // The cap: 100 s base → 100, 200, 300, 300, … (Envoy's max_ejection_time default, 300 s).
  const long = detector({ consecutive5xxErrors: 1, baseEjectionTimeMs: 100_000 });
  const times: number[] = [];
  for (let i = 0; i < 6; i++) {
    long.d.reportStatus('a', 500);
    const s = long.d.state('a')!;
    times.push(s.ejectedUntil - long.clock.now);
    long.clock.now = s.ejectedUntil;
    long.d.sweep();
  }
  t.same(times, [100_000, 200_000, 300_000, 300_000, 300_000, 300_000]);
  // Envoy stops raising the multiplier once base × multiplier passes the cap (ejectHost: only
  // while backoff × base < max + base), so recovery is not held back: 4 intervals bring it to 0.
  t.equal(long.d.state('a')!.multiplier, 4);
  for (let i = 0; i < 4; i++) {
    long.clock.now += 10_000;
    long.d.sweep();
  }
  t.equal(long.d.state('a')!.multiplier, 0);

  // A base above 300 s is not cut below itself.
  const huge = detector({ consecutive5xxErrors: 1, baseEjectionTimeMs: 400_000 });
  huge.d.reportStatus('a', 500);
  t.equal(huge.d.state('a')!.ejectedUntil - huge.clock.now, 400_000);
});

t.test('sweep() brings back every host whose time is up, in one notification', async (t) => {
  const { d, clock, changes } = detector({ consecutive5xxErrors: 1, baseEjectionTimeMs: 30_000 });
  d.reportStatus('a', 500);
  clock.now += 5_000;
  d.reportStatus('b', 500);
  clock.now += 5_000;
  d.reportStatus('c', 500);
  t.equal(d.ejectedCount, 3);
  t.equal(changes.n, 3);
  clock.now += 20_000; // a: 30 s out, b: 25 s, c: 20 s
  d.sweep();
  t.same(['a', 'b', 'c', 'd'].map((h) => d.isEjected(h)), [false, true, true, false], 'only a is due');
  t.equal(changes.n, 4);
  clock.now += 10_000;
  d.sweep();
  t.same(['a', 'b', 'c'].map((h) => d.isEjected(h)), [false, false, false], 'b and c together');
  t.equal(changes.n, 5, 'one notification for both');
  d.sweep();
  t.equal(changes.n, 5, 'a sweep that changes nothing does not notify');
  // A returning host starts with clean streaks.
  d.reportStatus('b', 500);
  t.equal(d.isEjected('b'), true, 'with consecutive5xxErrors 1 the first 5xx ejects again');
});

t.test('a returning host needs a whole new streak', async (t) => {
  const { d, clock } = detector({ consecutive5xxErrors: 3, baseEjectionTimeMs: 1_000 });
  statuses(d, 'a', [500, 500, 500]);
  t.equal(d.isEjected('a'), true);
  clock.now += 1_000;
  d.sweep();
  statuses(d, 'a', [500, 500]);
  t.equal(d.isEjected('a'), false, 'the streak restarted at the ejection');
  d.reportStatus('a', 500);
  t.equal(d.isEjected('a'), true);
});

t.test('host list changes keep the state of hosts still there and drop the rest', async (t) => {
  const { d, clock } = detector({ consecutive5xxErrors: 3, maxEjectionPercent: 50 }, ['a', 'b', 'c', 'd']);
  statuses(d, 'a', [500, 500, 500]);
  statuses(d, 'b', [500, 500]);
  statuses(d, 'c', [500]);
  const until = d.state('a')!.ejectedUntil;
  d.setHosts(['a', 'b', 'e', 'f']);
  t.equal(d.isEjected('a'), true, 'a is still ejected');
  t.equal(d.state('a')!.ejectedUntil, until, 'for the same time');
  t.equal(d.state('b')!.consecutive5xx, 2, "b's streak carries on");
  t.equal(d.state('c'), undefined, 'c is gone, with its state');
  t.equal(d.state('e')!.consecutive5xx, 0, 'e starts fresh');
  d.reportStatus('b', 500);
  t.equal(d.isEjected('b'), true, "b's third 5xx ejects it: 1 of 4 ejected was below 50%");
  // Reports about hosts the cluster no longer has are ignored.
  statuses(d, 'c', [500, 500, 500]);
  t.equal(d.state('c'), undefined);
  t.equal(d.isEjected('c'), false);
  // The ejected share follows the new host count: 2 of 2 would be 100%.
  d.setHosts(['a', 'b']);
  t.equal(d.ejectedCount, 2);
  // A host that left and comes back starts fresh.
  d.setHosts(['a', 'b', 'c']);
  t.same([d.state('c')!.consecutive5xx, d.isEjected('c')], [0, false]);
  clock.now += 30_000;
  d.sweep();
  t.equal(d.ejectedCount, 0);
});

t.test('start/stop run the sweep on the configured interval (a real timer)', async (t) => {
  let calls = 0;
  let now = 0;
  const d = new OutlierDetector({ ...BASE, consecutive5xxErrors: 1, intervalMs: 20, baseEjectionTimeMs: 10 }, () => calls++, () => now);
  d.setHosts(['a', 'b']);
  d.start();
  d.start(); // idempotent
  d.reportStatus('a', 500);
  t.equal(calls, 1);
  now = 10;
  const deadline = Date.now() + 2_000;
  while (d.isEjected('a') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  d.stop();
  t.equal(d.isEjected('a'), false, 'the interval sweep brought a back');
  t.equal(calls, 2);
});
