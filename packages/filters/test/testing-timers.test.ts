// The time and chance fakes of @remora/filters/testing: ManualTimers fires only when the test
// moves its clock, in order of due time (then of arming), including timers armed while
// firing; a cleared timer never fires. randomSequence repeats its values and refuses ones
// outside [0, 1).
import t from 'tap';
import { ManualTimers, randomSequence } from '@remora/filters/testing';

t.test('timers fire when the clock reaches them, in order, with `now` at their time', async (t) => {
  const timers = new ManualTimers();
  const fired: string[] = [];
  const log = (name: string): void => void fired.push(`${name}@${timers.now}`);
  timers.setTimeout(log, 30, 'b');
  timers.setTimeout(log, 10, 'a');
  timers.setTimeout(log, 30, 'c');
  t.same(timers.dueIn(), [10, 30, 30]);
  timers.advance(9);
  t.same(fired, [], 'nothing before its time');
  timers.advance(1);
  t.same(fired, ['a@10']);
  timers.advance(100);
  t.same(fired, ['a@10', 'b@30', 'c@30'], 'equal times in the order armed');
  t.equal(timers.now, 110, 'the clock ends where it was moved to');
  t.equal(timers.pending, 0);
});

t.test('a timer armed while another fires runs in the same advance when due by then', async (t) => {
  const timers = new ManualTimers();
  const fired: number[] = [];
  timers.setTimeout(() => {
    fired.push(timers.now);
    timers.setTimeout(() => fired.push(timers.now), 5, null);
    timers.setTimeout(() => fired.push(timers.now), 50, null);
  }, 10, null);
  timers.advance(20);
  t.same(fired, [10, 15], 'the re-armed one at 15; the one due at 60 waits');
  t.same(timers.dueIn(), [40]);
});

t.test('a cleared timer never fires', async (t) => {
  const timers = new ManualTimers();
  let fired = 0;
  const h = timers.setTimeout(() => fired++, 10, null);
  timers.clearTimeout(h);
  timers.advance(1_000);
  t.equal(fired, 0);
  t.equal(timers.pending, 0);
});

t.test('randomSequence repeats its values; values outside [0, 1) are refused', async (t) => {
  const r = randomSequence([0.1, 0.9]);
  t.same([r(), r(), r()], [0.1, 0.9, 0.1]);
  t.throws(() => randomSequence([1]), /\[0, 1\)/);
  t.throws(() => randomSequence([]), /\[0, 1\)/);
});
