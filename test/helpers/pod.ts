/**
 * A captured pod for tests of the sidecar's data plane: a network namespace (helpers/netns.ts)
 * with docker/iptables.sh's capture rules, Remora's runtime inside it as UID 1337 (the
 * proxy's UID the rules exclude) reading the conntrack table through a descriptor opened by
 * root, configured with a ProxyConfig given as it is (no translator), and helpers to build
 * such configs. Processes in the pod run as the app's UID unless told otherwise.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Cluster, Endpoint, Listener, ProxyConfig, ProxyNode, RouteConfiguration, TcpRoute } from '@remora/config';
import { WaitAborted, waitFor } from './net.ts';
import { netnsPrerequisites, POD_ENV, PodNetns, type PodProcess } from './netns.ts';
import { PROXY_MAIN, REPO } from './remora.ts';

export const IPTABLES_SH = join(REPO, 'docker/iptables.sh');
export const PROXY_USER = { uid: 1337, gid: 1337 };
/** The "app container" user: any UID but the proxy's. */
export const APP_USER = { uid: 1000, gid: 1000 };

/** Why a captured pod cannot be made here (the skip reason), or the namespace to use. */
export async function preparePod(): Promise<{ skip: string | false; pod: PodNetns | null }> {
  const missing = await netnsPrerequisites(['iptables']);
  if (missing) return { skip: missing, pod: null };
  let pod: PodNetns;
  try {
    pod = await PodNetns.create();
  } catch (err) {
    return { skip: `cannot create a network namespace: ${(err as Error).message}`, pod: null };
  }
  const nat = await pod.exec(['iptables', '-t', 'nat', '-S'], { timeoutMs: 10_000 });
  if (nat.code !== 0) {
    await pod.destroy();
    return { skip: `the nat table is not usable in a network namespace: ${nat.stderr.trim()}`, pod: null };
  }
  const ct = await pod.exec(['sh', '-c', 'test -r /proc/net/nf_conntrack'], { timeoutMs: 5_000 });
  if (ct.code !== 0) {
    await pod.destroy();
    return { skip: 'no /proc/net/nf_conntrack (conntrack not loaded or CONFIG_NF_CONNTRACK_PROCFS off)', pod: null };
  }
  return { skip: false, pod };
}

// --- ProxyConfig builders --------------------------------------------------------------------

/** The pod's sidecar, as the runtime in the pod is told it is. */
export const POD_NODE: ProxyNode = {
  kind: 'sidecar',
  namespace: 'default',
  serviceAccount: 'default',
  labels: { app: 'productpage' },
  workloadName: 'productpage',
  clusterDomain: 'cluster.local',
  rootNamespace: 'istio-system',
  trustDomain: 'cluster.local',
  locality: '',
};

const POOL: Cluster['connectionPool'] = {
  maxConnections: 0,
  connectTimeoutMs: 5_000,
  maxPendingRequests: 0,
  maxRequests: 0,
  maxRequestsPerConnection: 0,
  maxRetries: 0,
  idleTimeoutMs: 3_600_000,
  maxConnectionDurationMs: 0,
  keepaliveTimeMs: 0,
  maxConcurrentStreams: 0,
};

export function endpoint(address: string, port: number): Endpoint {
  return { address, port, labels: {}, weight: 1, locality: '', workloadName: '', namespace: '', serviceAccount: '' };
}

/** A cluster with Istio's defaults; `extra` overrides (discovery, upstreamBindAddress, ...). */
export function cluster(name: string, endpoints: readonly Endpoint[], extra: Partial<Cluster> = {}): Cluster {
  return {
    name,
    service: null,
    subset: '',
    discovery: 'static',
    endpoints,
    dnsRefreshMs: 60_000,
    protocol: 'http1',
    lb: { kind: 'round-robin' },
    connectionPool: POOL,
    outlierDetection: null,
    tls: null,
    serviceAccounts: [],
    localityLb: null,
    warmupMs: 0,
    ...extra,
  };
}

/** istiod's PassthroughCluster, InboundPassthroughCluster (bound to 127.0.0.6) and BlackHoleCluster. */
export const PASSTHROUGH = cluster('PassthroughCluster', [], { discovery: 'original-dst', protocol: 'tcp' });
export const INBOUND_PASSTHROUGH = cluster('InboundPassthroughCluster', [], { discovery: 'original-dst', protocol: 'tcp', upstreamBindAddress: '127.0.0.6' });
export const BLACKHOLE = cluster('BlackHoleCluster', [], { protocol: 'tcp' });

/** A route table sending every request to `clusterName`. */
export function routeTo(name: string, clusterName: string): RouteConfiguration {
  return {
    name,
    ignorePortInHostMatching: true,
    virtualHosts: [
      {
        name: `${name}-any`,
        domains: ['*'],
        requireTls: false,
        routes: [
          {
            name: 'default',
            match: { path: { match: { kind: 'any' }, ignoreCase: false }, headers: [], queryParams: [] },
            action: { kind: 'forward', clusters: [{ cluster: clusterName, weight: 100, requestHeaders: null, responseHeaders: null }], timeoutMs: 0, retry: null, rewrite: null, authorityRewrite: null, mirrors: [] },
            requestHeaders: null,
            responseHeaders: null,
            filterConfigs: {},
            origin: 'test/route',
          },
        ],
      },
    ],
  };
}

export function tcpTo(clusterName: string, sniHosts: readonly string[] = []): TcpRoute {
  return { sniHosts, clusters: [{ cluster: clusterName, weight: 1 }], origin: 'test/tcp' };
}

/** A listener; `extra` sets the capture fields. */
export function listener(name: string, address: string, port: number, direction: Listener['direction'], routeConfig: string, extra: Partial<Listener> = {}): Listener {
  return { name, address, port, direction, routeConfig, httpFilters: [], tls: null, ...extra };
}

// --- the proxy in the pod --------------------------------------------------------------------

/**
 * The runtime in the pod: reads a ProxyConfig (JSON) and serves it, access log as JSON lines
 * on stdout. Commands on stdin, one per line: `apply FILE` (a new config), `stats` (prints
 * `{"stats": …}`: listeners' downstream_cx_total, clusters' upstream_cx_total and
 * upstream_cx_none_healthy). Exits when stdin ends.
 */
const RUNNER_JS = (dist: string): string => `
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Runtime, AccessLog, IstioMetrics, Loggers, captureLookup } from ${JSON.stringify(dist)};
const [configPath, mode, fd] = process.argv.slice(2);
const loggers = new Loggers('info', (line) => process.stderr.write(line.endsWith('\\n') ? line : line + '\\n'));
const node = ${JSON.stringify(POD_NODE)};
const originalDestination = captureLookup(mode, fd === undefined ? null : Number(fd), loggers.get('main'));
const rt = new Runtime({ node, loggers, accessLog: new AccessLog('json', (c) => process.stdout.write(c)), metrics: new IstioMetrics(),
  ...(originalDestination ? { originalDestination } : {}) });
const load = (path) => rt.apply(JSON.parse(readFileSync(path, 'utf8')));
await load(configPath);
console.log(JSON.stringify({ ready: true }));
const lines = createInterface({ input: process.stdin });
lines.on('line', async (line) => {
  const [cmd, arg] = line.trim().split(' ');
  if (cmd === 'apply') {
    try { await load(arg); console.log(JSON.stringify({ applied: arg })); } catch (err) { console.log(JSON.stringify({ applyError: err.message })); }
  } else if (cmd === 'stats') {
    const listeners = {};
    for (const [name, l] of rt.listeners) listeners[name] = l.cxTotal;
    const clusters = {};
    for (const [name, c] of rt.clusterManager.clusters) {
      let cx = c.originalDst?.retiredCxTotal ?? 0;
      for (const h of c.hosts) cx += h.host.cxTotal;
      clusters[name] = { upstream_cx_total: cx, upstream_cx_none_healthy: c.noHealthyUpstream };
    }
    console.log(JSON.stringify({ stats: { listeners, clusters } }));
  }
});
lines.on('close', async () => { await rt.close(); process.exit(0); });
`;

export interface AccessLine {
  readonly path: string;
  readonly response_code: number;
  readonly response_flags: string;
  readonly authority: string | null;
  readonly upstream_host: string | null;
  readonly upstream_cluster: string | null;
  readonly downstream_local_address: string;
  readonly downstream_remote_address: string;
  readonly requested_server_name: string | null;
}

export interface PodStats {
  readonly listeners: Record<string, number>;
  readonly clusters: Record<string, { upstream_cx_total: number; upstream_cx_none_healthy: number }>;
}

/** A pod with capture rules and Remora's runtime in it. */
export class CapturePod {
  readonly pod: PodNetns;
  readonly dir: string;
  readonly proxy: PodProcess;
  #configs = 0;

  private constructor(pod: PodNetns, dir: string, proxy: PodProcess) {
    this.pod = pod;
    this.dir = dir;
    this.proxy = proxy;
  }

  /**
   * Wires the pod unless `wired` (`routes` on-link, e.g. the services' VIP range), applies iptables.sh with
   * `iptablesArgs` (default: capture everything, proxy UID/GID 1337, REDIRECT) and starts the
   * runtime as 1337 with `config`, the conntrack table inherited as descriptor 3.
   */
  static async start(pod: PodNetns, config: ProxyConfig, opts: { routes?: readonly string[]; wired?: boolean; iptablesArgs?: readonly string[]; mode?: 'REDIRECT' | 'TPROXY' | 'NONE' } = {}): Promise<CapturePod> {
    if (opts.wired !== true) await pod.wire(opts.routes ?? []);
    const rules = await pod.exec(['sh', IPTABLES_SH, ...(opts.iptablesArgs ?? ['-p', '15001', '-z', '15006', '-u', '1337', '-g', '1337', '-m', 'REDIRECT', '-i', '*', '-b', '*'])], { timeoutMs: 20_000 });
    if (rules.code !== 0) throw new Error(`iptables.sh: ${rules.stderr.trim()}`);
    const dir = mkdtempSync(join(tmpdir(), 'remora-capture-'));
    chmodSync(dir, 0o755);
    const runner = join(dir, 'runner.mjs');
    writeFileSync(runner, RUNNER_JS(PROXY_MAIN), { mode: 0o644 });
    const configPath = join(dir, 'config-0.json');
    writeFileSync(configPath, JSON.stringify(config), { mode: 0o644 });
    const mode = opts.mode ?? 'REDIRECT';
    // Root opens the table (root-only) as descriptor 3, then becomes 1337, as a pod's entrypoint would.
    const proxy = pod.spawn(
      ['sh', '-c', 'exec 3</proc/net/nf_conntrack && exec setpriv --reuid=1337 --regid=1337 --clear-groups -- "$@"', 'sh', process.execPath, runner, configPath, mode, ...(mode === 'REDIRECT' ? ['3'] : [])],
      // The conntrack table, as a proxy without the getsockopt addon reads it: this runtime
      // test keeps that path covered end to end (test/pod-e2e.test.ts runs the addon's).
      { cwd: REPO, env: { ...POD_ENV, REMORA_ORIGINAL_DST: 'conntrack' } },
    );
    const cp = new CapturePod(pod, dir, proxy);
    await waitFor('the runtime up in the pod', () => {
      if (proxy.child.exitCode !== null) throw new WaitAborted(`the runtime exited (${proxy.child.exitCode})`);
      return proxy.stdout.some((l) => l.includes('"ready"'));
    }, 15_000, { output: proxy.stderr });
    return cp;
  }

  /** Applies another config; resolves once it is live. */
  async apply(config: ProxyConfig): Promise<void> {
    const path = join(this.dir, `config-${++this.#configs}.json`);
    writeFileSync(path, JSON.stringify(config), { mode: 0o644 });
    this.proxy.child.stdin!.write(`apply ${path}\n`);
    await waitFor(`config ${path} applied`, () => {
      const err = this.proxy.stdout.find((l) => l.includes('"applyError"'));
      if (err !== undefined) throw new Error(err);
      return this.proxy.stdout.some((l) => l.includes(`"applied":${JSON.stringify(path)}`));
    }, 10_000);
  }

  /** The access log so far. */
  accessLog(): AccessLine[] {
    return this.proxy.stdout.filter((l) => l.startsWith('{"start_time"')).map((l) => JSON.parse(l) as AccessLine);
  }

  /** Waits for a log line `pick` selects. */
  async logged(what: string, pick: (l: AccessLine) => boolean): Promise<AccessLine> {
    await waitFor(`access log line: ${what}`, () => this.accessLog().some(pick), 5_000, { output: this.proxy.stdout, outputName: 'stdout', tailLines: 4 });
    return this.accessLog().find(pick)!;
  }

  async stats(): Promise<PodStats> {
    const before = this.proxy.stdout.length;
    this.proxy.child.stdin!.write('stats\n');
    await waitFor('stats', () => this.proxy.stdout.slice(before).some((l) => l.startsWith('{"stats"')), 5_000);
    return (JSON.parse(this.proxy.stdout.slice(before).find((l) => l.startsWith('{"stats"'))!) as { stats: PodStats }).stats;
  }

  /** A file in the pod's directory, readable by every UID (scripts for the app's processes). */
  write(name: string, text: string): string {
    const p = join(this.dir, name);
    writeFileSync(p, text, { mode: 0o644 });
    return p;
  }

  async stop(): Promise<void> {
    await this.proxy.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
