// A reload of a large mesh (1,000 VirtualServices × 10 routes) does not hold up requests:
// reading, validating and translating run on a worker thread and the snapshot is compiled in
// slices, so requests keep flowing while the new config is prepared. The 50 ms goal itself is
// measured by bench/reload-stall.ts on a quiet machine; this bound only has to prove the
// slicing under a loaded CI (a blocking reload stalled for more than a second).
import { Agent } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import t from 'tap';
import { request } from './helpers/http.ts';
import { largeMesh } from './helpers/large-mesh.ts';
import { freePort, sleep, waitFor } from './helpers/net.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';

const STALL_BOUND_MS = 500;

t.test('a 10,000-route reload becomes live while requests keep being answered', async (t) => {
  const port = await freePort();
  const mesh = new MeshDir(largeMesh({ port }, 0));
  t.teardown(() => mesh.cleanup());
  const remora = await startRemora('gateway', [mesh.dir], ['--access-log-format', 'off']);
  t.teardown(() => remora.stop());
  const agent = new Agent({ keepAlive: true, maxSockets: 2 });
  t.teardown(() => agent.destroy());
  const get = async (): Promise<string> => (await request(port, '/r3', { agent, headers: { host: 'vs-0.example' } })).body;
  t.equal(await get(), 'gen 0 vs 0 route 3');
  // Istio's ORed match blocks become separate routes: 1,000 VirtualServices × 10 routes × 2 matches.
  const timings = /\[info\]\[config\] config [0-9a-f]+ timings \(20000 routes\): read \d+ ms, validate \d+ ms, translate \d+ ms on the loader thread; handover \d+ ms; compile and apply \d+ ms$/;
  t.equal(remora.log.filter((l) => timings.test(l)).length, 1, 'the start logs where the time to a live config went');

  let stop = false;
  let last = '';
  let longest = 0;
  let failed = 0;
  // Bounded: 2 workers, until `stop` or 60 s.
  const deadline = Date.now() + 60_000;
  const worker = async (): Promise<void> => {
    while (!stop && Date.now() < deadline) {
      const t0 = performance.now();
      try {
        last = await get();
      } catch {
        failed++;
      }
      longest = Math.max(longest, performance.now() - t0);
      await sleep(5);
    }
  };
  const workers = [worker(), worker()];
  await sleep(500);
  longest = 0;
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const t0 = performance.now();
  mesh.write('routes-000.yaml', largeMesh({ port }, 1)['routes-000.yaml']!);
  await waitFor('the new generation', () => last.startsWith('gen 1 '), 20_000);
  const live = performance.now() - t0;
  await sleep(300);
  delay.disable();
  stop = true;
  await Promise.all(workers);

  const maxDelay = delay.max / 1e6;
  t.equal(failed, 0, 'no request failed');
  t.ok(longest < STALL_BOUND_MS, `the longest request took ${longest.toFixed(0)} ms (bound ${STALL_BOUND_MS})`);
  t.ok(maxDelay < STALL_BOUND_MS, `the event loop was held at most ${maxDelay.toFixed(0)} ms (bound ${STALL_BOUND_MS})`);
  t.comment(`live after ${live.toFixed(0)} ms`);
  t.ok(remora.log.some((l) => /\[info\]\[config\] config [0-9a-f]+ applied \(1 listeners/.test(l)), 'the reload is logged');
  t.equal(remora.log.filter((l) => timings.test(l)).length, 2, 'so is its timing');
  t.equal(await get(), 'gen 1 vs 0 route 3');
});
