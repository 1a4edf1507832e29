// Merging the live view's windows of several worker threads: per-second slots of the same
// second add up, an older second in the same slot gives way to the newer one, totals add,
// and the kept access log lines of all come out in the order they were recorded.
import t from 'tap';
import { EdgeWindow, LiveWindow, LOG_RING, WINDOW_SLOTS, type LiveWindowState } from '../src/admin/ui-window.ts';

t.test('the same second adds up: requests, errors, latency, totals', async (t) => {
  const a = new EdgeWindow();
  const b = new EdgeWindow();
  a.record(100, 200, 0, 1);
  a.record(100, 200, 0, 1);
  b.record(100, 503, 0, 1);
  b.record(101, 200, 0, 1);
  const m = new EdgeWindow();
  m.merge(a.state('l', 'r'));
  m.merge(b.state('l', 'r'));
  const s = m.summary(101, 2);
  t.equal(s.requests, 4, 'both windows\' requests in the two seconds');
  t.equal(s.errorRate, 0.25, 'one 503 of four');
  t.equal(s.total, 4);
  t.equal(m.summary(100, 1).requests, 3, 'second 100: two from one window, one from the other');
  t.equal(m.lastSecond, 101, 'the newest second of both');
  t.equal(s.p50Ms, a.summary(100, 1).p50Ms, 'latency buckets carried over');
});

t.test('a slot holding an older second gives way to the newer, whichever is merged first', async (t) => {
  const old = new EdgeWindow();
  const recent = new EdgeWindow();
  old.record(5, 200, 0, 1);
  old.record(5, 200, 0, 1);
  recent.record(5 + WINDOW_SLOTS, 500, 0, 1);
  for (const order of [[old, recent], [recent, old]]) {
    const m = new EdgeWindow();
    for (const w of order) m.merge(w.state('l', 'r'));
    const s = m.summary(5 + WINDOW_SLOTS, 1);
    t.equal(s.requests, 1, 'only the newer second\'s request');
    t.equal(s.errorRate, 1);
    t.equal(s.total, 3, 'totals still add up');
  }
});

t.test('LiveWindow.merged: edges by name, and the newest lines of all in time order', async (t) => {
  const edge = (from: string, to: string, second: number): ReturnType<EdgeWindow['state']> => {
    const e = new EdgeWindow();
    e.record(second, 200, 0, 1);
    return e.state(from, to);
  };
  const state = (lines: [number, string][], second: number): LiveWindowState => ({
    listenerToRoutes: [edge('l', 'r', second)],
    routesToClusters: [edge('r', 'c', second)],
    clustersToEndpoints: [edge('c', 'e', second)],
    log: lines.map(([, l]) => l),
    logAt: lines.map(([at]) => at),
  });
  const w = LiveWindow.merged([state([[1, 'a1'], [3, 'a3']], 10), state([[2, 'b2'], [4, 'b4']], 10)], () => 10_500);
  t.equal(w.edgeCount, 3, 'one edge per pair of names');
  t.equal(w.listenerToRoutes.get('l')?.get('r')?.summary(10, 1).requests, 2);
  t.equal(w.clustersToEndpoints.get('c')?.get('e')?.total, 2);
  t.same(w.logLines(), ['a1', 'b2', 'a3', 'b4'], 'interleaved by when each was recorded');

  const many = (offset: number): [number, string][] => Array.from({ length: LOG_RING }, (_, i) => [i * 2 + offset, `${offset}:${i}`]);
  const full = LiveWindow.merged([state(many(0), 10), state(many(1), 10)]);
  const lines = full.logLines();
  t.equal(lines.length, LOG_RING, 'at most LOG_RING lines');
  t.equal(lines.at(-1), `1:${LOG_RING - 1}`, 'the newest kept');
  t.equal(lines[0], `0:${LOG_RING / 2}`, 'the oldest dropped');
});
