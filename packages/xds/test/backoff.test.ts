// Envoy's jittered exponential backoff for xDS streams: full jitter under a ceiling that
// doubles from 500 ms to 30 s, and starts over after a reset.
import t from 'tap';
import { JitteredBackoff } from '@remora/xds';

t.test('the ceiling doubles from the base up to the maximum; each wait is drawn below it', async (t) => {
  const top = new JitteredBackoff({ random: () => 0.999999 });
  t.same(Array.from({ length: 9 }, () => top.next()), [499, 999, 1999, 3999, 7999, 15999, 29999, 29999, 29999]);
  const bottom = new JitteredBackoff({ random: () => 0 });
  t.equal(bottom.next(), 0);
});

t.test('reset starts from the base again', async (t) => {
  const b = new JitteredBackoff({ baseMs: 100, maxMs: 1000, random: () => 0.5 });
  t.same([b.next(), b.next(), b.next()], [50, 100, 200]);
  b.reset();
  t.equal(b.next(), 50);
});

t.test('a bad range is refused', async (t) => {
  t.throws(() => new JitteredBackoff({ baseMs: 0 }), /0 < baseMs <= maxMs/);
  t.throws(() => new JitteredBackoff({ baseMs: 100, maxMs: 50 }), /0 < baseMs <= maxMs/);
});
