// What the outbound capture's original-destination lookup costs per connection: short-lived
// connections (one HTTP request each, `Connection: close`) to a service VIP, redirected by an
// iptables REDIRECT to the capture listener (15001), which hands each one to `0.0.0.0_9080`
// by its original destination read from conntrack; then the same listener with capture off
// (Istio's interception mode NONE), serving the same route with its own chain. Connections
// per second, bounded in time and count. Needs root (a network namespace and an iptables
// rule, removed at the end) and a build (`pnpm run build`). Run by hand; not part of
// `pnpm bench`.
//
//   node bench/capture-cost.ts [--seconds 5] [--max 20000] [--concurrency 16]
//   REMORA_ORIGINAL_DST=conntrack node bench/capture-cost.ts   (the conntrack table, not getsockopt)
import { execFileSync, spawnSync } from 'node:child_process';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Cluster, Listener, ProxyConfig, ProxyNode } from '../packages/config/dist/index.js';
import { AccessLog, captureLookup, IstioMetrics, Loggers, Runtime } from '../packages/proxy/dist/index.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    max: { type: 'string', default: '20000' },
    concurrency: { type: 'string', default: '16' },
    inside: { type: 'boolean', default: false },
  },
});

const NODE: ProxyNode = { kind: 'sidecar', namespace: 'default', serviceAccount: 'default', labels: {}, workloadName: 'bench', clusterDomain: 'cluster.local', rootNamespace: 'istio-system', trustDomain: 'cluster.local', locality: '' };
const VIP = '10.96.0.10';
const CLUSTER = 'outbound|9080||reviews.default.svc.cluster.local';

function config(upstreamPort: number): ProxyConfig {
  const base = { httpFilters: [], tls: null, direction: 'outbound' as const, routeConfig: 'r9080' };
  const listeners: Listener[] = [
    // Under NONE the capture listener serves every connection with its own chain: the same route.
    { ...base, name: 'virtualOutbound', address: '0.0.0.0', port: 15001, useOriginalDst: true },
    { ...base, name: '0.0.0.0_9080', address: '0.0.0.0', port: 9080, bindToPort: false },
  ];
  const cluster: Cluster = {
    name: CLUSTER, service: null, subset: '', discovery: 'static', dnsRefreshMs: 60_000, protocol: 'http1', lb: { kind: 'round-robin' },
    endpoints: [{ address: '127.0.0.1', port: upstreamPort, labels: {}, weight: 1, locality: '', workloadName: '', namespace: '', serviceAccount: '' }],
    connectionPool: { maxConnections: 0, connectTimeoutMs: 5_000, maxPendingRequests: 0, maxRequests: 0, maxRequestsPerConnection: 0, maxRetries: 0, idleTimeoutMs: 3_600_000, maxConnectionDurationMs: 0, keepaliveTimeMs: 0, maxConcurrentStreams: 0 },
    outlierDetection: null, tls: null, serviceAccounts: [], localityLb: null, warmupMs: 0,
  };
  return {
    version: 'bench', node: NODE, listeners, clusters: [cluster],
    routeConfigs: [{ name: 'r9080', ignorePortInHostMatching: true, virtualHosts: [{ name: 'any', domains: ['*'], requireTls: false, routes: [{
      name: 'default', match: { path: { match: { kind: 'any' }, ignoreCase: false }, headers: [], queryParams: [] },
      action: { kind: 'forward', clusters: [{ cluster: CLUSTER, weight: 100, requestHeaders: null, responseHeaders: null }], timeoutMs: 0, retry: null, rewrite: null, authorityRewrite: null, mirrors: [] },
      requestHeaders: null, responseHeaders: null, filterConfigs: {}, origin: 'bench' }] }] }],
  };
}

/** One request on a fresh connection; resolves with the status (0 on error). */
function once(host: string, port: number): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ host, port, path: '/', agent: false, headers: { connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', () => resolve(0));
    req.end();
  });
}

async function load(host: string, port: number, seconds: number, max: number, concurrency: number): Promise<{ done: number; failed: number; perSecond: number }> {
  let started = 0;
  let done = 0;
  let failed = 0;
  const deadline = performance.now() + seconds * 1000;
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    while (started < max && performance.now() < deadline) {
      started++;
      const status = await once(host, port);
      if (status === 200) done++;
      else failed++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { done, failed, perSecond: done / ((performance.now() - t0) / 1000) };
}

async function inside(): Promise<void> {
  const seconds = Number(values.seconds);
  const max = Number(values.max);
  const concurrency = Number(values.concurrency);
  execFileSync('ip', ['link', 'set', 'lo', 'up']);
  // A source address for connections to the VIPs (without one the kernel picks 0.0.0.0).
  execFileSync('ip', ['route', 'add', '10.96.0.0/16', 'dev', 'lo', 'src', '127.0.0.1']);
  execFileSync('iptables', ['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', VIP, '--dport', '9080', '-j', 'REDIRECT', '--to-ports', '15001']);
  const upstream: Server = createServer((_req, res) => res.end('ok'));
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const upstreamPort = (upstream.address() as AddressInfo).port;
  const loggers = new Loggers('error');
  for (const mode of ['REDIRECT', 'NONE'] as const) {
    const originalDestination = captureLookup(mode, null, loggers.get('main'));
    const rt = new Runtime({ node: NODE, loggers, accessLog: new AccessLog('off'), metrics: new IstioMetrics(), ...(originalDestination ? { originalDestination } : {}) });
    await rt.apply(config(upstreamPort));
    // REDIRECT: to the VIP, captured; NONE: straight to the listener, the same route.
    const [host, port] = mode === 'REDIRECT' ? [VIP, 9080] : ['127.0.0.1', 15001];
    await load(host, port, Math.min(1, seconds), 500, concurrency); // warm-up
    const r = await load(host, port, seconds, max, concurrency);
    const handed = rt.listeners.get('0.0.0.0_9080')!.cxTotal;
    console.log(`${mode.padEnd(8)} ${r.perSecond.toFixed(0).padStart(7)} connections/s  (${r.done} ok, ${r.failed} failed, ${seconds}s max ${max}, concurrency ${concurrency}; handed to 0.0.0.0_9080: ${handed})`);
    await rt.close();
  }
  upstream.close();
}

if (!values.inside) {
  if (process.getuid?.() !== 0) {
    console.error('capture-cost: needs root (network namespace, iptables)');
    process.exit(1);
  }
  const ns = `remora-capcost-${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, fileURLToPath(import.meta.url), ...process.argv.slice(2), '--inside'], { stdio: 'inherit' });
    process.exitCode = r.status ?? 1;
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
} else {
  await inside();
}
