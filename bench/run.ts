// `pnpm bench`: Remora side by side with direct, nginx, HAProxy, @fastify/http-proxy and the
// minimal forwarder, against one nginx upstream, in alternating rounds; medians to stdout,
// RESULTS.md and bench/.run/last.json. Method and configs: bench/README.md.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Child } from './lib/children.ts';
import { fixedRate, saturate, type LatencyResult, type SaturateResult } from './lib/load.ts';
import { coreBusy, coreTicks, RssSampler, treeCpuSeconds, treeRssBytes, treeSize, waitForQuiet } from './lib/proc.ts';
import { DEFAULT_PEERS, LARGE_TABLE, PEER_NAMES, PEERS, selectPeers, type PeerContext, type PeerName, type PeerSpec, type Startup } from './lib/peers.ts';
import { commandLine, fmt, machineInfo, machineSection, MiB, remoraBuild, table, writeResultsMain, type MachineInfo } from './lib/report.ts';
import { describeFailure } from './lib/errors.ts';
import { numberOption, PATHS, PINNING_OPTIONS, pinningFrom, prepare, type Pinning } from './lib/setup.ts';
import { median, ratio, spread } from './lib/stats.ts';

const HELP = `Usage: pnpm bench [options]     (or: node bench/run.ts [options])

Runs autocannon through each peer against one nginx upstream (1 KiB body), in alternating rounds.

  --only a,b              peers to run, from: ${PEER_NAMES.join(', ')}
                          (default: ${DEFAULT_PEERS.join(', ')}; direct is always added: it is the
                          baseline of "added latency"). remora-10k-first / remora-10k-last: Remora with
                          ${LARGE_TABLE.virtualServices * LARGE_TABLE.routesEach} routes, asked for its first / last route; compared with remora
  --rounds N              rounds, each running every peer once (default 3; env BENCH_ROUNDS)
  --duration S            seconds of each measured run (default 10; env BENCH_DURATION)
  --warmup S              seconds of load before measuring (default 3; env BENCH_WARMUP)
  --connections N         connections of the saturated run (default 50)
  --rate N                requests/s of the latency run (default 1000)
  --latency-connections N connections of the latency run (default 1, see README)
  --workers N             autocannon worker threads (default 0: in this process)
  --concurrency N         Remora's worker threads (its --concurrency; default 1: one event loop,
                          the figures per core). Pinned, all of them share the proxy core (what
                          workers cost); for N cores, --no-pin on a machine with more than N
  --proxy-cpu N           core of the proxy under test (default 1)
  --load-cpu N            core of autocannon and the upstream (default 0)
  --no-pin                do not pin anything (figures are then not per proxy core)
  --quiet-wait S          before each peer, wait up to S s for the cores to be under 15% busy
                          (other work on a shared machine skews figures; default 30, 0: no wait)
  --retries N             measure a peer again, up to N times, when other work (the hypervisor's
                          steal time included) took more than 10% of either core during its saturated
                          run, or the hypervisor took more than 0.5% of a core during its latency run;
                          the least disturbed is kept (default 1)
  --no-write              leave RESULTS.md alone (still writes bench/.run/last.json)
  -h, --help              this text

Quick look:  pnpm bench --only remora,minimal --rounds 1 --duration 3 --warmup 1 --no-write
Route table: pnpm bench --only remora,remora-10k-first,remora-10k-last`;

interface Options {
  readonly peers: readonly PeerName[];
  readonly rounds: number;
  readonly durationS: number;
  readonly warmupS: number;
  readonly connections: number;
  readonly rate: number;
  readonly latencyConnections: number;
  readonly workers: number;
  /** Remora's `--concurrency`. */
  readonly remoraConcurrency: number;
  readonly pinning: Pinning;
  readonly quietWaitS: number;
  readonly retries: number;
  readonly write: boolean;
}

function parseOptions(argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      only: { type: 'string' },
      rounds: { type: 'string' },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      connections: { type: 'string' },
      rate: { type: 'string' },
      'latency-connections': { type: 'string' },
      workers: { type: 'string' },
      concurrency: { type: 'string' },
      ...PINNING_OPTIONS,
      'quiet-wait': { type: 'string' },
      retries: { type: 'string' },
      'no-write': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return null;
  const selected = selectPeers(values.only, DEFAULT_PEERS);
  const peers = PEER_NAMES.filter((p) => p === 'direct' || selected.includes(p));
  return {
    peers,
    rounds: Math.round(numberOption('rounds', values.rounds, 'BENCH_ROUNDS', 3, 1)),
    durationS: numberOption('duration', values.duration, 'BENCH_DURATION', 10, 1),
    warmupS: numberOption('warmup', values.warmup, 'BENCH_WARMUP', 3, 0),
    connections: Math.round(numberOption('connections', values.connections, 'BENCH_CONNECTIONS', 50, 1)),
    rate: Math.round(numberOption('rate', values.rate, 'BENCH_RATE', 1000, 1)),
    latencyConnections: Math.round(numberOption('latency-connections', values['latency-connections'], 'BENCH_LATENCY_CONNECTIONS', 1, 1)),
    workers: Math.round(numberOption('workers', values.workers, 'BENCH_WORKERS', 0, 0)),
    remoraConcurrency: Math.round(numberOption('concurrency', values.concurrency, 'BENCH_CONCURRENCY', 1, 0)),
    pinning: pinningFrom(values),
    quietWaitS: numberOption('quiet-wait', values['quiet-wait'], 'BENCH_QUIET_WAIT', 30, 0),
    retries: Math.round(numberOption('retries', values.retries, 'BENCH_RETRIES', 1, 0)),
    write: !values['no-write'],
  };
}

/** Everything measured for one peer in one round. */
interface PeerRound {
  readonly peer: PeerName;
  readonly round: number;
  readonly skipped: string | null;
  /** How busy the busiest core was just before the peer started (see --quiet-wait). */
  readonly busyBefore: number;
  /** 1, or more when an earlier attempt was disturbed by other work (see --retries). */
  readonly attempt: number;
  readonly saturated: SaturateResult | null;
  readonly latency: LatencyResult | null;
  /** CPU seconds of the proxy's process tree during the saturated run. */
  readonly cpuSeconds: number | null;
  readonly cpuSecondsPer1k: number | null;
  /** The proxy tree's CPU time over the saturated run's wall time: 1.0 is one full core. */
  readonly ownCoreUse: number | null;
  /** How busy each pinned core was during the saturated run (anything running on it). */
  readonly proxyCoreBusy: number | null;
  readonly loadCoreBusy: number | null;
  /** CPU time over wall time of autocannon (this process) and of the upstream nginx, in the saturated run. */
  readonly generatorUse: number;
  readonly upstreamUse: number;
  /** Task time on each core not charged to the processes we know of there: someone else's work. */
  readonly foreignProxyCore: number | null;
  readonly foreignLoadCore: number | null;
  /**
   * The larger share of time the hypervisor took from a pinned core (its steal time) during the
   * latency run and during the saturated run: while it does, every task there stands still.
   */
  readonly latencySteal: number | null;
  readonly saturatedSteal: number | null;
  readonly rssIdleBytes: number | null;
  readonly rssLoadBytes: number | null;
  readonly processes: number | null;
  /** Start-up figures of the peers that report them (the large route table). */
  readonly startup: Startup | null;
}

/** A core busier than this before a peer starts is someone else's work (see --quiet-wait). */
const QUIET = 0.15;

/** A measurement during which other work took more than this share of a core is done again (see --retries). */
const DISTURBED = 0.1;

/**
 * Steal time of a pinned core during the latency run past which that run is done again: its p99
 * is the slowest 1% of requests, and a core the hypervisor stops for more than about that long
 * decides it (10 ms ticks: 5 of them in a 10 s run).
 */
const LATENCY_STEAL = 0.005;

/** The larger share of a core that other work (the hypervisor's too) took during the saturated run. */
function disturbance(r: PeerRound): number {
  return Math.max(r.foreignProxyCore ?? 0, r.foreignLoadCore ?? 0, r.saturatedSteal ?? 0);
}

/** How far a measurement is past the limits that have it done again: above 1 it is disturbed. */
function overLimits(r: PeerRound): number {
  return Math.max(disturbance(r) / DISTURBED, (r.latencySteal ?? 0) / LATENCY_STEAL);
}

/** The larger steal share of the pinned cores that matter to the peer (the load core alone for direct). */
function steal(before: ReturnType<typeof coreTicks>, after: ReturnType<typeof coreTicks>, cores: readonly number[]): number | null {
  return cores.length === 0 ? null : Math.max(...cores.map((c) => coreBusy(before, after, c, 'steal')));
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function skippedRound(peer: PeerName, round: number, reason: string): PeerRound {
  return {
    peer,
    round,
    skipped: reason,
    busyBefore: Number.NaN,
    attempt: 1,
    saturated: null,
    latency: null,
    cpuSeconds: null,
    cpuSecondsPer1k: null,
    ownCoreUse: null,
    proxyCoreBusy: null,
    loadCoreBusy: null,
    generatorUse: Number.NaN,
    upstreamUse: Number.NaN,
    foreignProxyCore: null,
    foreignLoadCore: null,
    latencySteal: null,
    saturatedSteal: null,
    rssIdleBytes: null,
    rssLoadBytes: null,
    processes: null,
    startup: null,
  };
}

/** Start, warm up, measure idle RSS, latency at a fixed rate, then a saturated run; stop. */
async function measure(spec: PeerSpec, round: number, ctx: PeerContext, o: Options, upstreamPid: number): Promise<PeerRound> {
  const { proxyCpu, loadCpu } = o.pinning;
  const pinned = proxyCpu === null || loadCpu === null ? [] : [proxyCpu, loadCpu];
  const busyBefore = o.quietWaitS > 0 ? await waitForQuiet(pinned, QUIET, o.quietWaitS) : Number.NaN;
  if (busyBefore >= QUIET) process.stderr.write(`  (cores still ${pct(busyBefore)} busy with other work after ${o.quietWaitS} s; measuring anyway)\n`);
  const start = await spec.start(ctx);
  if (!start.ok) {
    if (spec.optional) return skippedRound(spec.name, round, start.reason);
    throw new Error(`${spec.label} did not start: ${start.reason}`);
  }
  const { port, child } = start.peer;
  const target = start.peer.target === undefined ? {} : { target: start.peer.target };
  const pid = child?.pid ?? null;
  try {
    if (o.warmupS > 0) await saturate({ port, connections: o.connections, durationS: o.warmupS, workers: o.workers, ...target });
    await sleep(1000);
    const rssIdleBytes = pid === null ? null : treeRssBytes(pid);

    const stealCores = pid === null ? pinned.slice(1) : pinned;
    const latencyBefore = coreTicks();
    const latency = await fixedRate({ port, connections: o.latencyConnections, rate: o.rate, durationS: o.durationS, ...target });
    const latencySteal = steal(latencyBefore, coreTicks(), stealCores);

    const cpuBefore = pid === null ? 0 : treeCpuSeconds(pid);
    const upstreamBefore = treeCpuSeconds(upstreamPid);
    const generatorBefore = process.cpuUsage();
    const coresBefore = coreTicks();
    const wallBefore = process.hrtime.bigint();
    const sampler = pid === null ? null : new RssSampler(pid, 200);
    const saturated = await saturate({ port, connections: o.connections, durationS: o.durationS, workers: o.workers, ...target });
    const rssLoadBytes = sampler?.stop() ?? null;
    const wallSeconds = Number(process.hrtime.bigint() - wallBefore) / 1e9;
    const coresAfter = coreTicks();
    const generator = process.cpuUsage(generatorBefore);
    const upstreamSeconds = treeCpuSeconds(upstreamPid) - upstreamBefore;
    const cpuSeconds = pid === null ? null : treeCpuSeconds(pid) - cpuBefore;
    const processes = pid === null ? null : treeSize(pid);

    if (child !== null && !child.isRunning()) {
      throw new Error(`${spec.label} exited during the run${child.stderrTail() ? `:\n${child.stderrTail()}` : ''}`);
    }
    const generatorUse = (generator.user + generator.system) / 1e6 / wallSeconds;
    const upstreamUse = upstreamSeconds / wallSeconds;
    const ownCoreUse = cpuSeconds === null ? null : cpuSeconds / wallSeconds;
    return {
      peer: spec.name,
      round,
      skipped: null,
      busyBefore,
      attempt: 1,
      saturated,
      latency,
      cpuSeconds,
      cpuSecondsPer1k: cpuSeconds === null || saturated.requests === 0 ? null : (cpuSeconds / saturated.requests) * 1000,
      ownCoreUse,
      proxyCoreBusy: proxyCpu === null ? null : coreBusy(coresBefore, coresAfter, proxyCpu),
      loadCoreBusy: loadCpu === null ? null : coreBusy(coresBefore, coresAfter, loadCpu),
      generatorUse,
      upstreamUse,
      // direct has no proxy: whatever ran on the proxy core then is irrelevant.
      foreignProxyCore: proxyCpu === null || pid === null ? null : Math.max(0, coreBusy(coresBefore, coresAfter, proxyCpu, 'tasks') - (ownCoreUse ?? 0)),
      foreignLoadCore: loadCpu === null ? null : Math.max(0, coreBusy(coresBefore, coresAfter, loadCpu, 'tasks') - generatorUse - upstreamUse),
      latencySteal,
      saturatedSteal: steal(coresBefore, coresAfter, stealCores),
      rssIdleBytes,
      rssLoadBytes,
      processes,
      startup: start.peer.startup ?? null,
    };
  } finally {
    if (child !== null) await child.stop();
  }
}

/** Medians over the rounds of one peer. */
interface PeerSummary {
  readonly peer: PeerName;
  readonly label: string;
  readonly skipped: string | null;
  readonly rps: number;
  readonly rpsSpread: number;
  readonly p50: number;
  readonly p99: number;
  readonly p50Added: number;
  readonly p99Added: number;
  readonly cpuSecondsPer1k: number;
  readonly rssIdleBytes: number;
  readonly rssLoadBytes: number;
  readonly ownCoreUse: number;
  readonly proxyCoreBusy: number;
  readonly loadCoreBusy: number;
  readonly generatorUse: number;
  readonly upstreamUse: number;
  readonly foreignProxyCore: number;
  readonly foreignLoadCore: number;
  readonly latencySteal: number;
  readonly latencyRps: number;
  readonly errors: number;
  readonly processes: number;
  /** Medians of per-round ratios to the minimal forwarder and to nginx. */
  readonly vsMinimal: Ratios;
  readonly vsNginx: Ratios;
  /** The large route table's peers over plain Remora (one route) in the same round. */
  readonly vsRemora: Ratios;
  /** remora-10k-last over remora-10k-first, round by round (NaN ratios for every other peer). */
  readonly vsFirst: Ratios;
  /** Medians of the start-up figures, when the peer reports them (NaN otherwise). */
  readonly readyMs: number;
  readonly translateMs: number;
  readonly compileMs: number;
  readonly loadMs: number;
  readonly routes: number;
}

interface Ratios {
  readonly rps: number;
  readonly p50Added: number;
  readonly p99Added: number;
  readonly cpuSecondsPer1k: number;
  readonly rssIdleBytes: number;
  readonly rssLoadBytes: number;
}

const NO_RATIOS: Ratios = { rps: Number.NaN, p50Added: Number.NaN, p99Added: Number.NaN, cpuSecondsPer1k: Number.NaN, rssIdleBytes: Number.NaN, rssLoadBytes: Number.NaN };

/**
 * `peer` over `ref`, metric by metric, as the median of the ratios within each round: the two ran
 * minutes apart at most, so a slow spell of the machine cancels out instead of landing on one side.
 */
function roundRatios(peer: PeerName, ref: PeerName, rounds: readonly PeerRound[]): Ratios {
  const at = (p: PeerName, round: number): PeerRound | undefined => rounds.find((r) => r.peer === p && r.round === round && r.skipped === null);
  const pairs: [PeerRound, PeerRound, PeerRound | undefined][] = [];
  for (const r of rounds) {
    if (r.peer !== peer || r.skipped !== null) continue;
    const other = at(ref, r.round);
    if (other !== undefined) pairs.push([r, other, at('direct', r.round)]);
  }
  if (pairs.length === 0) return NO_RATIOS;
  const of = (f: (r: PeerRound, direct: PeerRound | undefined) => number | null | undefined): number =>
    median(pairs.map(([a, b, d]) => ratio(f(a, d) ?? Number.NaN, f(b, d) ?? Number.NaN)));
  const added = (q: 'p50' | 'p99') => (r: PeerRound, d: PeerRound | undefined): number =>
    r.latency === null || d?.latency == null ? Number.NaN : r.latency[q] - d.latency[q];
  return {
    rps: of((r) => r.saturated?.rps),
    p50Added: of(added('p50')),
    p99Added: of(added('p99')),
    cpuSecondsPer1k: of((r) => r.cpuSecondsPer1k),
    rssIdleBytes: of((r) => r.rssIdleBytes),
    rssLoadBytes: of((r) => r.rssLoadBytes),
  };
}

function summarize(peers: readonly PeerName[], rounds: readonly PeerRound[]): PeerSummary[] {
  const base: PeerSummary[] = peers.map((peer) => {
    const mine = rounds.filter((r) => r.peer === peer);
    const ran = mine.filter((r) => r.skipped === null);
    const pick = (f: (r: PeerRound) => number | null | undefined): number => median(ran.map((r) => f(r) ?? null));
    return {
      peer,
      label: PEERS.get(peer)?.label ?? peer,
      skipped: ran.length === 0 ? (mine[0]?.skipped ?? 'not run') : null,
      rps: pick((r) => r.saturated?.rps),
      rpsSpread: spread(ran.map((r) => r.saturated?.rps ?? null)),
      p50: pick((r) => r.latency?.p50),
      p99: pick((r) => r.latency?.p99),
      p50Added: Number.NaN,
      p99Added: Number.NaN,
      cpuSecondsPer1k: pick((r) => r.cpuSecondsPer1k),
      rssIdleBytes: pick((r) => r.rssIdleBytes),
      rssLoadBytes: pick((r) => r.rssLoadBytes),
      ownCoreUse: pick((r) => r.ownCoreUse),
      proxyCoreBusy: pick((r) => r.proxyCoreBusy),
      loadCoreBusy: pick((r) => r.loadCoreBusy),
      generatorUse: pick((r) => r.generatorUse),
      upstreamUse: pick((r) => r.upstreamUse),
      foreignProxyCore: pick((r) => r.foreignProxyCore),
      foreignLoadCore: pick((r) => r.foreignLoadCore),
      latencySteal: pick((r) => r.latencySteal),
      latencyRps: pick((r) => r.latency?.rps),
      errors: ran.reduce((n, r) => n + (r.saturated?.errors ?? 0) + (r.saturated?.non2xx ?? 0) + (r.latency?.errors ?? 0) + (r.latency?.non2xx ?? 0), 0),
      processes: pick((r) => r.processes),
      vsMinimal: ran.length === 0 ? NO_RATIOS : roundRatios(peer, 'minimal', rounds),
      vsNginx: ran.length === 0 ? NO_RATIOS : roundRatios(peer, 'nginx', rounds),
      vsRemora: ran.length === 0 || !isLargeTable(peer) ? NO_RATIOS : roundRatios(peer, 'remora', rounds),
      vsFirst: ran.length === 0 || peer !== 'remora-10k-last' ? NO_RATIOS : roundRatios(peer, 'remora-10k-first', rounds),
      readyMs: pick((r) => r.startup?.readyMs),
      translateMs: pick((r) => r.startup?.config?.translateMs),
      compileMs: pick((r) => r.startup?.config?.compileMs),
      loadMs: pick((r) => (r.startup?.config == null ? null : r.startup.config.readMs + r.startup.config.validateMs + r.startup.config.handoverMs)),
      routes: pick((r) => r.startup?.config?.routes),
    };
  });
  const direct = base.find((s) => s.peer === 'direct');
  return base.map((s) => ({
    ...s,
    p50Added: s.peer === 'direct' || direct === undefined ? Number.NaN : s.p50 - direct.p50,
    p99Added: s.peer === 'direct' || direct === undefined ? Number.NaN : s.p99 - direct.p99,
  }));
}

const isLargeTable = (p: PeerName): boolean => p === 'remora-10k-first' || p === 'remora-10k-last';

const pct = (x: number): string => (Number.isFinite(x) ? `${Math.round(x * 100)}%` : '—');
const pct1 = (x: number): string => (Number.isFinite(x) ? `${(x * 100).toFixed(1)}%` : '—');
const times = (x: number): string => (Number.isFinite(x) ? `${fmt(x, x >= 10 ? 1 : 2)}×` : '—');

function resultTables(summary: readonly PeerSummary[], o: Options): string {
  const ran = summary.filter((s) => s.skipped === null);
  const abs = table(
    ['peer', 'req/s', '±', 'p50 ms', 'p99 ms', 'p50 added', 'p99 added', 'CPU s/1k req', 'RSS idle MiB', 'RSS load MiB', 'own core', 'load core'],
    ran.map((s) => [
      s.label,
      fmt(s.rps, 0),
      Number.isFinite(s.rpsSpread) ? `${fmt((s.rpsSpread / 2) * 100, 1)}%` : '—',
      fmt(s.p50, 3),
      fmt(s.p99, 3),
      fmt(s.p50Added, 3),
      fmt(s.p99Added, 3),
      fmt(s.cpuSecondsPer1k, 4),
      fmt(s.rssIdleBytes / MiB, 1),
      fmt(s.rssLoadBytes / MiB, 1),
      pct(s.ownCoreUse),
      pct(s.loadCoreBusy),
    ]),
  );
  const both = (f: (r: Ratios) => number, s: PeerSummary): string => `${times(f(s.vsMinimal))} / ${times(f(s.vsNginx))}`;
  const rel = table(
    ['peer', 'req/s', 'p50 added', 'p99 added', 'CPU/1k req', 'RSS idle', 'RSS load'],
    ran
      .filter((s) => s.peer !== 'direct')
      .map((s) => [
        s.label,
        both((x) => x.rps, s),
        both((x) => x.p50Added, s),
        both((x) => x.p99Added, s),
        both((x) => x.cpuSecondsPer1k, s),
        both((x) => x.rssIdleBytes, s),
        both((x) => x.rssLoadBytes, s),
      ]),
  );
  const skipped = summary.filter((s) => s.skipped !== null).map((s) => `- **${s.label}: skipped** — ${s.skipped}`);
  return [
    `Saturated: ${o.connections} connections, ${o.durationS} s after ${o.warmupS} s of warm-up. ` +
      `Latency: ${o.rate} req/s over ${o.latencyConnections} connection(s), ${o.durationS} s; "added" is over direct. ` +
      'CPU: user+system seconds of the proxy\'s process tree per 1,000 responses in the saturated run. ' +
      'RSS: process tree, idle after warm-up, and the maximum sampled every 200 ms during the saturated run. ' +
      '"own core": the proxy tree\'s CPU time over wall time in the saturated run (100% = its whole core); ' +
      '"load core": how busy the core of autocannon and the upstream was. "±": half the range of req/s over the rounds, over the median.',
    '',
    abs,
    '',
    'Ratios, each cell **×minimal forwarder / ×nginx**, the median over rounds of the ratio within each round ' +
      '(req/s: higher is better; the rest: lower is better; latency ratios are of added latency):',
    '',
    rel,
    ...largeTableSection(summary, o),
    ...(skipped.length > 0 ? ['', ...skipped] : []),
  ].join('\n');
}

/**
 * The large route table beside plain Remora: per-request cost must not grow with the number of
 * routes (first route vs last, both vs the one-route table), and the time until it serves.
 */
function largeTableSection(summary: readonly PeerSummary[], o: Options): string[] {
  const large = summary.filter((s) => isLargeTable(s.peer) && s.skipped === null);
  if (large.length === 0) return [];
  const first = summary.find((s) => s.peer === 'remora-10k-first' && s.skipped === null);
  const last = summary.find((s) => s.peer === 'remora-10k-last' && s.skipped === null);
  const ms = (x: number): string => (Number.isFinite(x) ? fmt(x, 0) : '—');
  const rows = large.map((s) => [
    s.label,
    times(s.vsRemora.rps),
    times(s.vsRemora.p50Added),
    times(s.vsRemora.p99Added),
    times(s.vsRemora.cpuSecondsPer1k),
    times(s.vsRemora.rssIdleBytes),
    ms(s.routes),
    ms(s.translateMs),
    ms(s.compileMs),
    ms(s.loadMs),
    ms(s.readyMs),
  ]);
  if (first !== undefined && last !== undefined) {
    rows.push([
      'last ÷ first route',
      times(last.vsFirst.rps),
      times(last.vsFirst.p50Added),
      times(last.vsFirst.p99Added),
      times(last.vsFirst.cpuSecondsPer1k),
      times(last.vsFirst.rssIdleBytes),
      '',
      '',
      '',
      '',
      '',
    ]);
  }
  return [
    '',
    `Large route table: ${LARGE_TABLE.virtualServices} VirtualServices × ${LARGE_TABLE.routesEach} routes on the bench gateway, each Istio route two Envoy routes, ` +
      'all forwarding to the same upstream; "first" asks for the first route of the first host, "last" for the last route of the last host. ' +
      `Ratios are over plain Remora (one route) in the same round, medians over ${o.rounds} round(s) (req/s: higher is better; the rest: lower is better; latency ratios are of added latency). ` +
      'Start-up, medians in ms: translate and compile (and apply) as Remora logs them; "read, validate, handover": the rest of the loader\'s time; "ready": from spawn to the first correct answer.',
    '',
    table(['peer', 'req/s', 'p50 added', 'p99 added', 'CPU/1k req', 'RSS idle', 'Envoy routes', 'translate ms', 'compile ms', 'read, validate, handover ms', 'ready ms'], rows),
  ];
}


/** Findings the numbers themselves show: who was bound by the load generator, noise, errors. */
function notes(summary: readonly PeerSummary[], o: Options): string[] {
  const out: string[] = [];
  const ran = summary.filter((s) => s.skipped === null);
  const direct = ran.find((s) => s.peer === 'direct');
  if (direct && Number.isFinite(direct.loadCoreBusy)) {
    out.push(
      `direct: autocannon and the upstream share the load core (${pct(direct.loadCoreBusy)} busy), so its req/s is that core's ceiling, ` +
        'the most any peer can be offered here, not a proxy figure.',
    );
  }
  const bound = ran.filter((s) => s.peer !== 'direct' && s.ownCoreUse < 0.9 && s.loadCoreBusy >= 0.9);
  if (bound.length > 0) {
    const who = (s: PeerSummary): string =>
      `${s.label} (own core ${pct(s.ownCoreUse)}; load core ${pct(s.loadCoreBusy)} busy: autocannon ${pct(s.generatorUse)}, upstream ${pct(s.upstreamUse)})`;
    out.push(
      `Load-generator bound: ${bound.map(who).join('; ')}. ` +
        'A single autocannon process could not offer these peers enough load to fill their core: their req/s is a floor, ' +
        'and their CPU s/1k req (which does not depend on the offered rate) is the figure to compare.',
    );
  }
  const saturatedPeers = ran.filter((s) => s.peer !== 'direct' && s.ownCoreUse >= 0.9);
  if (saturatedPeers.length > 0) out.push(`Proxy-bound (own core ≥ 90%): ${saturatedPeers.map((s) => s.label).join(', ')}.`);
  const noisy = ran.filter((s) => s.foreignProxyCore > 0.05 || s.foreignLoadCore > 0.05);
  if (noisy.length > 0) {
    out.push(
      `Other people's work shared the cores (median share of the proxy core / load core during the saturated run): ` +
        `${noisy.map((s) => `${s.label} ${pct(s.foreignProxyCore)} / ${pct(s.foreignLoadCore)}`).join(', ')}; those figures are noisier.`,
    );
  }
  const stolen = ran.filter((s) => s.latencySteal > LATENCY_STEAL);
  if (stolen.length > 0) {
    out.push(
      `The hypervisor stopped a pinned core during the latency run (median steal time): ${stolen.map((s) => `${s.label} ${pct1(s.latencySteal)}`).join(', ')}; ` +
        'their p99 carries those pauses.',
    );
  }
  const slow = ran.filter((s) => s.latencyRps < o.rate * 0.95);
  if (slow.length > 0) out.push(`Latency run below its ${o.rate} req/s target: ${slow.map((s) => `${s.label} (${fmt(s.latencyRps, 0)})`).join(', ')}.`);
  const erred = ran.filter((s) => s.errors > 0);
  if (erred.length > 0) out.push(`Errors or non-2xx answers: ${erred.map((s) => `${s.label} (${s.errors})`).join(', ')}.`);
  const wide = ran.filter((s) => s.rpsSpread > 0.1);
  if (wide.length > 0) out.push(`req/s varied by more than ±5% over the rounds for: ${wide.map((s) => s.label).join(', ')}.`);
  return out;
}

function resultsMarkdown(machine: MachineInfo, command: string, date: string, remora: string | null, o: Options, summary: readonly PeerSummary[]): string {
  const pin =
    o.pinning.proxyCpu === null
      ? 'none (--no-pin): figures are not per proxy core'
      : `proxy under test on core ${o.pinning.proxyCpu}; autocannon (the harness process) and the upstream nginx on core ${o.pinning.loadCpu}`;
  const found = notes(summary, o);
  return [
    '# Benchmark results',
    '',
    'Written by `pnpm bench` (bench/run.ts): everything above the soak section is rewritten on each run.',
    'Method, peers and their configs: [README.md](README.md). Raw per-round figures of the last run: `bench/.run/last.json`.',
    '',
    '## Machine',
    '',
    machineSection(machine),
    '',
    '## Run',
    '',
    `- Date: ${date}`,
    `- Command: \`${command}\``,
    `- Rounds: ${o.rounds}, every peer once per round, the order reversed every other round; medians below.`,
    `- Pinning: ${pin}.`,
    '- Upstream: nginx, one worker, `GET /` → 200 with a fixed 1,024-byte body, keep-alive.',
    ...(remora === null ? [] : [`- Remora: ${remora}.`]),
    '',
    `## Results (medians of ${o.rounds} round${o.rounds === 1 ? '' : 's'})`,
    '',
    resultTables(summary, o),
    '',
    '### What the numbers say',
    '',
    ...(found.length > 0 ? found.map((n) => `- ${n}`) : ['- Nothing unusual.']),
  ].join('\n');
}

function progressLine(r: PeerRound, label: string): string {
  if (r.skipped !== null) return `  ${label}: skipped — ${r.skipped}`;
  const s = r.saturated;
  const l = r.latency;
  return (
    `  ${label}: ${fmt(s?.rps ?? Number.NaN, 0)} req/s` +
    ` · p50 ${fmt(l?.p50 ?? Number.NaN, 3)} ms p99 ${fmt(l?.p99 ?? Number.NaN, 3)} ms @ ${fmt(l?.rps ?? Number.NaN, 0)} req/s` +
    (r.cpuSecondsPer1k === null ? '' : ` · ${fmt(r.cpuSecondsPer1k, 4)} CPU s/1k`) +
    (r.rssIdleBytes === null ? '' : ` · RSS ${fmt(r.rssIdleBytes / MiB, 1)}→${fmt((r.rssLoadBytes ?? 0) / MiB, 1)} MiB`) +
    (r.ownCoreUse === null ? '' : ` · own core ${pct(r.ownCoreUse)}`) +
    (r.loadCoreBusy === null ? '' : ` · load core ${pct(r.loadCoreBusy)}`) +
    (r.foreignProxyCore === null ? '' : ` · others ${pct(r.foreignProxyCore)}/${pct(r.foreignLoadCore ?? Number.NaN)}`) +
    ((r.latencySteal ?? 0) + (r.saturatedSteal ?? 0) > 0 ? ` · steal ${pct1(r.latencySteal ?? 0)}/${pct1(r.saturatedSteal ?? 0)}` : '') +
    (r.startup == null ? '' : ` · ready in ${fmt(r.startup.readyMs, 0)} ms`) +
    (r.startup?.config == null ? '' : ` (${r.startup.config.routes} routes: translate ${r.startup.config.translateMs} ms, compile ${r.startup.config.compileMs} ms)`) +
    ((s?.errors ?? 0) + (s?.non2xx ?? 0) > 0 ? ` · ${s?.errors} errors, ${s?.non2xx} non-2xx` : '')
  );
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  if (o === null) {
    process.stdout.write(`${HELP}\n`);
    return;
  }
  const machine = machineInfo();
  const date = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const command = commandLine(fileURLToPath(import.meta.url), PATHS.repoRoot);
  // Read before the run: another build may replace dist/ while we measure.
  const remora = o.peers.some((p) => p === 'remora' || isLargeTable(p)) ? remoraBuild(PATHS.repoRoot) : null;

  // Every run is bounded by its duration; this bounds the whole bench even if a peer hangs.
  const perPeerS = (o.quietWaitS + o.warmupS + 1 + 2 * o.durationS + 15) * (1 + o.retries);
  const budgetS = o.rounds * o.peers.length * perPeerS * 2 + 120;
  const watchdog = setTimeout(() => {
    process.stderr.write(`bench: still running after ${budgetS} s, giving up\n`);
    process.exit(1);
  }, budgetS * 1000);
  watchdog.unref();

  const { upstream } = await prepare(o.peers, o.pinning);
  const upstreamPid = (upstream.child as Child).pid;
  const ctx: PeerContext = { paths: PATHS, upstreamPort: upstream.port, proxyCpu: o.pinning.proxyCpu, readyTimeoutMs: 10_000, remoraConcurrency: o.remoraConcurrency };
  process.stderr.write(
    `bench: ${o.peers.join(', ')}; ${o.rounds} round(s) × (${o.warmupS} s warm-up + ${o.durationS} s latency + ${o.durationS} s saturated); ` +
      `upstream nginx on 127.0.0.1:${upstream.port}` +
      (o.pinning.proxyCpu === null ? ', unpinned\n' : `; proxy on core ${o.pinning.proxyCpu}, load and upstream on core ${o.pinning.loadCpu}\n`),
  );

  const rounds: PeerRound[] = [];
  const skippedFor = new Map<PeerName, string>();
  for (let round = 1; round <= o.rounds; round++) {
    process.stderr.write(`round ${round}/${o.rounds}\n`);
    // Serpentine order (A B C, C B A, …) so that drift over the run hits every peer alike.
    const order = round % 2 === 1 ? o.peers : [...o.peers].reverse();
    for (const peer of order) {
      const spec = PEERS.get(peer) as PeerSpec;
      const known = skippedFor.get(peer);
      let result = known === undefined ? await measure(spec, round, ctx, o, upstreamPid) : skippedRound(peer, round, known);
      // Each attempt's line as it comes; when the last one is not the one kept, the kept one again.
      let latest = result;
      for (let attempt = 2; attempt <= o.retries + 1 && overLimits(result) > 1; attempt++) {
        const why =
          disturbance(latest) > DISTURBED
            ? `other work took ${pct(disturbance(latest))} of a core`
            : `the hypervisor took ${pct1(latest.latencySteal ?? 0)} of a core during the latency run`;
        process.stderr.write(`${progressLine(latest, spec.label)}\n  (${why}: measuring ${spec.label} again)\n`);
        latest = { ...(await measure(spec, round, ctx, o, upstreamPid)), attempt };
        if (overLimits(latest) < overLimits(result)) result = latest;
      }
      if (result.skipped !== null && known === undefined) skippedFor.set(peer, result.skipped);
      rounds.push(result);
      if (known === undefined) {
        if (latest !== result) process.stderr.write(`${progressLine(latest, spec.label)}\n  (kept attempt ${result.attempt}, the less disturbed)\n`);
        process.stderr.write(`${progressLine(result, spec.label)}\n`);
      }
    }
  }
  await upstream.child?.stop();

  const summary = summarize(o.peers, rounds);
  const markdown = resultsMarkdown(machine, command, date, remora, o, summary);
  process.stdout.write(`\n${markdown.slice(markdown.indexOf('## Results'))}\n`);
  writeFileSync(
    join(PATHS.runDir, 'last.json'),
    `${JSON.stringify({ date, command, remora, options: o, machine, upstreamPort: upstream.port, rounds, summary }, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`,
  );
  if (o.write) {
    writeResultsMain(join(PATHS.benchDir, 'RESULTS.md'), markdown);
    process.stderr.write('bench: wrote bench/RESULTS.md and bench/.run/last.json\n');
  } else {
    process.stderr.write('bench: wrote bench/.run/last.json (RESULTS.md left alone: --no-write)\n');
  }
  clearTimeout(watchdog);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${describeFailure(err)}`);
  // Exit now, even with a load run in flight; the exit handler kills every child group.
  process.exit(1);
});
