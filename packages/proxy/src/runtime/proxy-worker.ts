/**
 * One worker thread of a proxy run with `--concurrency` above 1: its own Runtime serving
 * every listener on sockets opened with SO_REUSEPORT, with the config the main thread
 * translated (each worker compiles its own snapshot), the identity the main thread holds,
 * and circuit breakers, rate-limit buckets and outlier ejections shared with the others.
 * Its log and access log lines go to the main thread, which writes them whole.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { SharedCells } from '@remora/filters/internal';
import { collectStats, StatsView } from '../admin/admin-stats.ts';
import { threadCounts } from '../admin/admin-views.ts';
import { LiveWindow } from '../admin/ui-window.ts';
import { captureLookup } from '../cli/capture.ts';
import { isLogLevel, Loggers } from '../logger.ts';
import { AccessLog, AccessLogFiles, writeLinesSync } from '../telemetry/access-log.ts';
import { IstioMetrics } from '../telemetry/istio-metrics.ts';
import { IdentityStore } from '../tls/identity-store.ts';
import { OutlierFollower } from '../upstream/outlier-detector.ts';
import { builtinFilters } from './builtin-filters.ts';
import { registerFilterModules } from '../cli/filter-modules.ts';
import { Runtime } from './runtime.ts';
import type { FromWorker, ToWorker, WorkerInit } from './worker-protocol.ts';

const port = parentPort!;
const init = workerData as WorkerInit;
const post = (m: FromWorker): void => port.postMessage(m);

const loggers = new Loggers(init.logLevel, (line) => post({ t: 'log', line }));
const cells = new SharedCells(init.cells);
const identity = IdentityStore.pushed(loggers.get('secret'));
const followers = new Map<string, OutlierFollower>();

// Outcomes for the main thread's outlier detection, sent once per turn of the loop.
let outcomes: (string | number)[] = [];
let outcomesScheduled = false;
const sendOutcomes = (): void => {
  outcomesScheduled = false;
  const items = outcomes;
  outcomes = [];
  post({ t: 'outcomes', items });
};

const toMain = (chunk: string): void => post({ t: 'access', chunk });
// Written to stdout from here, in whole-line pieces no pipe interleaves: no copy to the main
// thread and no wake-up of it per batch. What stdout cannot take now goes the main thread's way.
const accessOut = init.accessLogToStdout
  ? (chunk: string): void => {
      const rest = writeLinesSync(1, chunk);
      if (rest !== null) toMain(rest);
    }
  : toMain;
const originalDestination = captureLookup(init.interceptionMode, init.conntrackFd, loggers.get('main'));
// The --filter modules the main thread loaded (it checked them: a failure here is a bug or a changed file, and ends the worker).
const filters = builtinFilters(cells);
await registerFilterModules(filters, init.filterModules, init.cwd);
const runtime = new Runtime({
  ...(originalDestination !== undefined ? { originalDestination } : {}),
  identity,
  node: init.node,
  ...(init.nodeId !== undefined ? { nodeId: init.nodeId } : {}),
  loggers,
  accessLog: new AccessLog(init.accessLogFormat ?? 'text', accessOut),
  ...(init.accessLogFormat === null ? { accessLogFiles: new AccessLogFiles(accessOut) } : {}),
  metrics: new IstioMetrics(),
  trustedHops: init.trustedHops,
  overload: init.overload,
  timeouts: init.timeouts,
  filters,
  listen: 'shared',
  // A unix domain socket cannot be shared by SO_REUSEPORT: the first worker serves it.
  listenPipes: init.index === 0,
  sharing: {
    cells,
    dns: 'follow',
    outlier: (model, onChange) => {
      const f = new OutlierFollower(model.name, model.outlierDetection!, onChange, (cluster, key, status) => {
        outcomes.push(cluster, key, status);
        if (!outcomesScheduled) {
          outcomesScheduled = true;
          setImmediate(sendOutcomes);
        }
      });
      followers.set(model.name, f);
      return f;
    },
  },
});

// The live view's counts of what this worker serves, merged with the others' when `/ui/data` asks.
const liveWindow = new LiveWindow();
runtime.accessLog.tap = liveWindow;

const facts = { startedAt: Date.now(), concurrency: 0 };

/** This worker's stats: the runtime's, without the process-wide `server.*`, and its listeners' `worker_<n>` share as Envoy names it. */
function workerStats() {
  const out = collectStats(runtime, facts, []).filter((s) => !s.name.startsWith('server.') && s.name !== 'overload.active');
  for (const l of runtime.listeners.values()) {
    if (!l.bound) continue;
    out.push({ name: `listener.${l.address}_${l.boundPort}.worker_${init.index}.downstream_cx_total`, value: l.cxTotal, gauge: false });
    out.push({ name: `listener.${l.address}_${l.boundPort}.worker_${init.index}.downstream_cx_active`, value: l.activeConnections, gauge: true });
  }
  return out;
}

async function handle(m: ToWorker): Promise<void> {
  switch (m.t) {
    case 'apply':
      try {
        await runtime.apply(m.config);
        // A follower of a cluster no longer live is not asked again.
        for (const name of followers.keys()) if (!runtime.clusterManager.clusters.has(name)) followers.delete(name);
        post({ t: 'reply', id: m.id, error: null });
      } catch (err) {
        post({ t: 'reply', id: m.id, error: (err as Error).message });
      }
      return;
    case 'identity': {
      if (m.parts === null) return;
      const problem = identity.update(m.parts, 'the proxy');
      if (problem !== null) loggers.get('secret').error(`worker ${init.index}: ${problem}`);
      return;
    }
    case 'dns':
      runtime.clusterManager.followDns(m.cluster, m.modelKey, m.endpoints);
      return;
    case 'ejected': {
      const c = runtime.clusterManager.clusters.get(m.cluster);
      const o = c?.outlier;
      if (o instanceof OutlierFollower) o.setEjected(m.keys);
      return;
    }
    case 'stats':
      post({ t: 'reply', id: m.id, error: null, value: workerStats() });
      return;
    case 'counts':
      post({ t: 'reply', id: m.id, error: null, value: threadCounts(runtime) });
      return;
    case 'liveWindow':
      liveWindow.watched();
      post({ t: 'reply', id: m.id, error: null, value: liveWindow.state() });
      return;
    case 'prometheus':
      post({ t: 'reply', id: m.id, error: null, value: await runtime.metrics.render() });
      return;
    case 'stopAccepting':
      for (const l of runtime.listeners.values()) l.stopAccepting();
      return;
    case 'resetCounters':
      new StatsView().resetCounters(runtime, []);
      return;
    case 'logLevel':
      if (!isLogLevel(m.level)) return;
      if (m.component === null) loggers.setAll(m.level);
      else {
        const l = loggers.byName(m.component);
        if (l !== undefined) l.level = m.level;
      }
      return;
    case 'drain':
      await runtime.drain(m.ms);
      post({ t: 'reply', id: m.id, error: null });
      return;
    case 'close':
      await runtime.close();
      identity.close();
      post({ t: 'reply', id: m.id, error: null });
      port.close();
      return;
  }
}

port.on('message', (m: ToWorker) => {
  handle(m).catch((err: unknown) => loggers.get('main').error(`worker ${init.index}: ${(err as Error).stack ?? String(err)}`));
});

process.on('uncaughtException', (err) => {
  // As on the main thread: a bug must not take every connection of this worker down with it.
  loggers.get('main').log('critical', `worker ${init.index}: uncaught exception: ${err.stack ?? String(err)}`);
});
