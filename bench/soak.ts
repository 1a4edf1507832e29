// `node bench/soak.ts`: a minute of moderate, fixed-rate load through one proxy (Remora by
// default) with its RSS sampled every second; prints start/end RSS and a fitted slope, and
// replaces the "Soak" section of RESULTS.md. A leak shows as a slope that does not flatten.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { fixedRate, type LatencyResult } from './lib/load.ts';
import { PEER_NAMES, PEERS, selectPeers, type PeerContext, type PeerName, type PeerSpec } from './lib/peers.ts';
import { treeRssBytes, waitForQuiet } from './lib/proc.ts';
import { commandLine, fmt, machineInfo, MiB, remoraBuild, table, writeResultsSoak } from './lib/report.ts';
import { describeFailure, UsageError } from './lib/errors.ts';
import { numberOption, PATHS, PINNING_OPTIONS, pinningFrom, prepare, type Pinning } from './lib/setup.ts';
import { linearFit } from './lib/stats.ts';

const HELP = `Usage: node bench/soak.ts [options]

Fixed-rate load through each chosen proxy in turn, RSS sampled every second.

  --only a,b          proxies to soak, from: ${PEER_NAMES.filter((p) => p !== 'direct').join(', ')} (default: remora)
  --duration S        seconds of load (default 60; env SOAK_DURATION)
  --warmup S          seconds of the same load before sampling (default 5; env SOAK_WARMUP)
  --rate N            requests/s in all (default 2000; env SOAK_RATE)
  --connections N     connections (default 10)
  --proxy-cpu N       core of the proxy (default 1)
  --load-cpu N        core of autocannon and the upstream (default 0)
  --no-pin            do not pin anything
  --quiet-wait S      before each proxy, wait up to S s for the cores to be under 15% busy (default 30)
  --no-write          leave RESULTS.md alone (still writes bench/.run/soak.json)
  -h, --help          this text`;

interface Options {
  readonly peers: readonly PeerName[];
  readonly durationS: number;
  readonly warmupS: number;
  readonly rate: number;
  readonly connections: number;
  readonly pinning: Pinning;
  readonly quietWaitS: number;
  readonly write: boolean;
}

function parseOptions(argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      only: { type: 'string' },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      rate: { type: 'string' },
      connections: { type: 'string' },
      ...PINNING_OPTIONS,
      'quiet-wait': { type: 'string' },
      'no-write': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return null;
  const peers = selectPeers(values.only ?? 'remora', PEER_NAMES).filter((p) => p !== 'direct');
  if (peers.length === 0) throw new UsageError('--only names no proxy to soak');
  return {
    peers,
    durationS: numberOption('duration', values.duration, 'SOAK_DURATION', 60, 2),
    warmupS: numberOption('warmup', values.warmup, 'SOAK_WARMUP', 5, 0),
    rate: Math.round(numberOption('rate', values.rate, 'SOAK_RATE', 2000, 1)),
    connections: Math.round(numberOption('connections', values.connections, 'SOAK_CONNECTIONS', 10, 1)),
    pinning: pinningFrom(values),
    quietWaitS: numberOption('quiet-wait', values['quiet-wait'], 'BENCH_QUIET_WAIT', 30, 0),
    write: !values['no-write'],
  };
}

interface SoakResult {
  readonly peer: PeerName;
  readonly skipped: string | null;
  readonly load: LatencyResult | null;
  /** [seconds since the start of the measured load, RSS bytes] every second. */
  readonly samples: readonly (readonly [number, number])[];
  /** Fitted slope over all samples and over the second half, MiB per minute. */
  readonly slope: number;
  readonly slopeSecondHalf: number;
}

async function soak(spec: PeerSpec, ctx: PeerContext, o: Options): Promise<SoakResult> {
  const none = { load: null, samples: [], slope: Number.NaN, slopeSecondHalf: Number.NaN };
  const { proxyCpu, loadCpu } = o.pinning;
  if (o.quietWaitS > 0) await waitForQuiet(proxyCpu === null || loadCpu === null ? [] : [proxyCpu, loadCpu], 0.15, o.quietWaitS);
  const start = await spec.start(ctx);
  if (!start.ok) {
    if (spec.optional) return { peer: spec.name, skipped: start.reason, ...none };
    throw new Error(`${spec.label} did not start: ${start.reason}`);
  }
  const { port, child, target } = start.peer;
  const pid = (child as NonNullable<typeof child>).pid;
  try {
    if (o.warmupS > 0) await fixedRate({ port, connections: o.connections, rate: o.rate, durationS: o.warmupS, ...(target ? { target } : {}) });
    const samples: [number, number][] = [];
    const t0 = process.hrtime.bigint();
    const sample = (): void => {
      samples.push([Number(process.hrtime.bigint() - t0) / 1e9, treeRssBytes(pid)]);
    };
    sample();
    const timer = setInterval(sample, 1000);
    let load: LatencyResult;
    try {
      load = await fixedRate({ port, connections: o.connections, rate: o.rate, durationS: o.durationS, ...(target ? { target } : {}) });
    } finally {
      clearInterval(timer);
    }
    sample();
    if (child !== null && !child.isRunning()) throw new Error(`${spec.label} exited during the run:\n${child.stderrTail()}`);
    const fit = (from: number): number => {
      const part = samples.filter(([t]) => t >= from);
      return linearFit(part.map(([t]) => t / 60), part.map(([, rss]) => rss / MiB)).slope;
    };
    return { peer: spec.name, skipped: null, load, samples, slope: fit(0), slopeSecondHalf: fit(o.durationS / 2) };
  } finally {
    await child?.stop();
  }
}

function soakMarkdown(results: readonly SoakResult[], o: Options, command: string, date: string, remora: string | null): string {
  const m = machineInfo();
  const rows = results.map((r) => {
    const label = PEERS.get(r.peer)?.label ?? r.peer;
    if (r.skipped !== null || r.load === null) return [label, `skipped: ${r.skipped ?? 'not run'}`, '', '', '', '', '', '', '', ''];
    const rss = r.samples.map(([, b]) => b);
    return [
      label,
      fmt(r.load.requests, 0),
      fmt(r.load.errors + r.load.non2xx, 0),
      fmt(r.load.p50, 3),
      fmt(r.load.p99, 3),
      fmt((rss[0] ?? Number.NaN) / MiB, 1),
      fmt((rss[rss.length - 1] ?? Number.NaN) / MiB, 1),
      fmt(Math.max(...rss) / MiB, 1),
      fmt(r.slope, 2),
      fmt(r.slopeSecondHalf, 2),
    ];
  });
  return [
    '## Soak',
    '',
    `Written by \`node bench/soak.ts\` on ${date}: \`${command}\`. ${m.cpuModel}, ${m.cores} cores, Node.js ${m.node}.`,
    `${o.rate} req/s over ${o.connections} connections for ${o.durationS} s after ${o.warmupS} s of warm-up; ` +
      'RSS of the proxy\'s process tree sampled every second; slope is a least-squares fit, MiB per minute.' +
      (remora === null ? '' : ` Remora: ${remora}.`),
    '',
    table(['peer', 'requests', 'errors', 'p50 ms', 'p99 ms', 'RSS start MiB', 'RSS end MiB', 'RSS max MiB', 'slope MiB/min', 'slope 2nd half'], rows),
  ].join('\n');
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  if (o === null) {
    process.stdout.write(`${HELP}\n`);
    return;
  }
  const date = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const command = commandLine(fileURLToPath(import.meta.url), PATHS.repoRoot);
  const remora = o.peers.includes('remora') ? remoraBuild(PATHS.repoRoot) : null;
  const budgetS = o.peers.length * (o.quietWaitS + o.warmupS + o.durationS + 40) + 60;
  const watchdog = setTimeout(() => {
    process.stderr.write(`soak: still running after ${budgetS} s, giving up\n`);
    process.exit(1);
  }, budgetS * 1000);
  watchdog.unref();

  const { upstream } = await prepare(o.peers, o.pinning);
  const ctx: PeerContext = { paths: PATHS, upstreamPort: upstream.port, proxyCpu: o.pinning.proxyCpu, readyTimeoutMs: 10_000, remoraConcurrency: 1 };
  const results: SoakResult[] = [];
  for (const peer of o.peers) {
    const spec = PEERS.get(peer) as PeerSpec;
    process.stderr.write(`soak: ${spec.label}, ${o.rate} req/s for ${o.durationS} s\n`);
    const r = await soak(spec, ctx, o);
    results.push(r);
    if (r.skipped !== null) {
      process.stderr.write(`  ${spec.label}: skipped — ${r.skipped}\n`);
      continue;
    }
    const first = r.samples[0]?.[1] ?? Number.NaN;
    const last = r.samples[r.samples.length - 1]?.[1] ?? Number.NaN;
    process.stdout.write(
      `${spec.label}: RSS start ${fmt(first / MiB, 1)} MiB, end ${fmt(last / MiB, 1)} MiB; ` +
        `slope ${fmt(r.slope, 2)} MiB/min (second half ${fmt(r.slopeSecondHalf, 2)}); ` +
        `${fmt(r.load?.requests ?? 0, 0)} requests at ${fmt(r.load?.rps ?? 0, 0)} req/s, p99 ${fmt(r.load?.p99 ?? Number.NaN, 3)} ms\n`,
    );
  }
  await upstream.child?.stop();
  clearTimeout(watchdog);

  writeFileSync(join(PATHS.runDir, 'soak.json'), `${JSON.stringify({ date, command, options: o, results }, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`);
  if (results.every((r) => r.skipped !== null)) {
    process.stderr.write('soak: nothing was soaked (every peer skipped); RESULTS.md left alone\n');
    process.exitCode = 1;
    return;
  }
  if (o.write) {
    writeResultsSoak(join(PATHS.benchDir, 'RESULTS.md'), soakMarkdown(results, o, command, date, remora));
    process.stderr.write('soak: wrote the Soak section of bench/RESULTS.md and bench/.run/soak.json\n');
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`soak: ${describeFailure(err)}`);
  // Exit now, even with a load run in flight; the exit handler kills every child group.
  process.exit(1);
});
