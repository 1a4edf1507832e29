// `waitFor` reports why it failed: the error its check last threw (in the message and as
// `cause`) and the tail of the output of the process under test at the time of failure —
// including for a proxy started by `spawnRemora` that exits before it is ready.
import { spawn } from 'node:child_process';
import t from 'tap';
import { collectLines, WaitAborted, waitFor } from './helpers/net.ts';
import { MISSPELT_VIRTUAL_SERVICE } from './helpers/mesh.ts';
import { MeshDir, spawnRemora } from './helpers/remora.ts';

/** The error `p` rejects with (fails the test when it resolves). */
async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

t.test('a timeout names the error the check last threw, and keeps it as the cause', async (t) => {
  let n = 0;
  const err = await rejection(
    waitFor('the thing', () => {
      n++;
      throw new Error(`connect ECONNREFUSED (try ${n})`);
    }, 100),
  );
  t.match(err.message, /^timed out after 100 ms \(\d+ checks\) waiting for the thing/);
  t.match(err.message, new RegExp(`the last check threw: Error: connect ECONNREFUSED \\(try ${n}\\)`), 'the last error, not the first');
  t.type(err.cause, Error);
  t.equal((err.cause as Error).message, `connect ECONNREFUSED (try ${n})`, 'the cause is the error thrown');
});

t.test('a check that threw and then returned false: the error is still reported, said so', async (t) => {
  let n = 0;
  const err = await rejection(
    waitFor('the other thing', () => {
      if (++n === 1) throw new Error('first try failed');
      return false;
    }, 100),
  );
  t.match(err.message, /check 1 of \d+ threw \(later ones returned false\): Error: first try failed/);
  t.equal((err.cause as Error).message, 'first try failed');
});

t.test('a check that only returned false: no cause, no "threw" line', async (t) => {
  const err = await rejection(waitFor('never', () => false, 50));
  t.match(err.message, /^timed out after 50 ms/);
  t.notMatch(err.message, /threw/);
  t.equal(err.cause, undefined);
});

t.test('the tail of a child process stderr, as it is at the time of failure', async (t) => {
  // A child that writes 100 lines to stderr, then waits for stdin to close.
  const child = spawn(
    process.execPath,
    ['-e', "for (let i = 1; i <= 100; i++) process.stderr.write(`line ${i}\\n`); process.stdin.resume(); process.stdin.on('end', () => process.exit(0))"],
    { stdio: ['pipe', 'ignore', 'pipe'] },
  );
  t.teardown(() => void child.kill('SIGKILL'));
  const stderr: string[] = [];
  child.stderr.on('data', collectLines(stderr));
  // Taken before the child has written anything: the report must read the live array.
  const err = await rejection(
    waitFor(
      'the child to say "ready"',
      () => {
        if (stderr.length === 100) throw new Error('the child said 100 lines, none of them "ready"');
        return stderr.includes('ready');
      },
      2_000,
      { output: stderr },
    ),
  );
  t.match(err.message, /the last check threw: Error: the child said 100 lines/);
  t.match(err.message, /--- stderr \(last 40 of 100 lines\) ---\nline 61\n/, 'the last 40 lines, from line 61');
  t.match(err.message, /line 100\n--- end of stderr ---$/);
  t.notMatch(err.message, /line 60\n/, 'nothing before the tail');
  child.stdin.end();
});

t.test('WaitAborted ends the wait at once, with the same report', async (t) => {
  const started = Date.now();
  const err = await rejection(
    waitFor('a process that exited', () => {
      throw new WaitAborted('it exited (1)');
    }, 10_000, { output: ['fatal: bad flag'], outputName: 'its stderr' }),
  );
  t.ok(Date.now() - started < 2_000, 'did not wait out the timeout');
  t.match(err.message, /^gave up after 1 checks waiting for a process that exited\nthe last check threw: WaitAborted: it exited \(1\)/);
  t.match(err.message, /--- its stderr \(1 lines\) ---\nfatal: bad flag\n--- end of its stderr ---/);
});

t.test('spawnRemora: a proxy that exits before it is ready fails fast, with its stderr', async (t) => {
  const mesh = new MeshDir({
    'bad.yaml': MISSPELT_VIRTUAL_SERVICE,
  });
  t.teardown(() => mesh.cleanup());
  const started = Date.now();
  const err = await rejection(spawnRemora('gateway', [mesh.dir]));
  t.ok(Date.now() - started < 10_000, 'not the 15 s readiness timeout');
  t.match(err.message, /^gave up after \d+ checks waiting for remora gateway ready on admin port \d+\nthe last check threw: WaitAborted: remora exited early \(1\)/);
  t.match(err.message, /--- stderr \(\d+ lines\) ---\n(.*\n)*.*bad\.yaml:7: .*unknown field "weigth"/, "the proxy's own complaint is in the report");
  t.match(err.message, /invalid configuration; nothing started\n--- end of stderr ---$/);
});
