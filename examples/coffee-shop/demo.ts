/**
 * Starts and stops the coffee-shop mesh: five backend processes, the order pod's Remora
 * sidecar and a Remora ingress gateway, all on 127.0.0.1. Used by `start.ts` (the demo
 * people run) and by end-to-end tests, which also reuse `runChecks`.
 *
 * Both proxies get a workload identity (a SPIFFE certificate) from a CA that `remora ca`
 * creates for each run in a temporary directory: the gateway speaks mTLS to the order
 * sidecar, whose inbound accepts nothing else (mesh/security.yaml).
 *
 *   const shop = await startCoffeeShop({ portBase: 'auto' });
 *   const results = await runChecks(shop);
 *   await shop.stop();
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { Agent, request, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import type { TLSSocket } from 'node:tls';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export const EXAMPLE_DIR = import.meta.dirname;
export const REPO_ROOT = resolve(EXAMPLE_DIR, '..', '..');
/** The YAML the demo serves; edit it while the demo runs and the proxies reload it. */
export const MESH_DIR = join(EXAMPLE_DIR, 'mesh');
export const DEFAULT_REMORA_CLI = join(REPO_ROOT, 'packages', 'proxy', 'dist', 'cli.js');
/** The example filter package the gateway loads with `--filter`. */
const CANARY_FILTER = join(REPO_ROOT, 'examples', 'custom-filter');
const BACKEND_SCRIPT = join(EXAMPLE_DIR, 'backend.ts');

export interface CoffeeShopPorts {
  /** Ingress gateway data port: the Gateway resource's server port. */
  readonly gateway: number;
  readonly gatewayAdmin: number;
  readonly gatewayHealth: number;
  /** The order sidecar's outbound listener, which the order app uses as its HTTP proxy. */
  readonly sidecarOutbound: number;
  /** The order sidecar's inbound listener: the order ServiceEntry endpoint points here. */
  readonly sidecarInbound: number;
  readonly sidecarAdmin: number;
  readonly sidecarHealth: number;
  /** Backends (the "pods"). */
  readonly order: number;
  readonly paymentV1: number;
  readonly paymentV2: number;
  readonly inventoryA: number;
  readonly inventoryB: number;
}

/**
 * The demo's usual ports: Istio's for the proxies, 8080 for the edge, 1808x for the apps.
 * The separate Prometheus port (Istio's 15090) is turned off: the admin port serves the same
 * /stats/prometheus, and 15090 is the port any other Remora on the machine takes by default.
 */
export const DEFAULT_PORTS: CoffeeShopPorts = {
  gateway: 8080,
  gatewayAdmin: 15000,
  gatewayHealth: 15021,
  sidecarOutbound: 15001,
  sidecarInbound: 15006,
  sidecarAdmin: 15100,
  sidecarHealth: 15121,
  order: 18081,
  paymentV1: 18082,
  paymentV2: 18083,
  inventoryA: 18084,
  inventoryB: 18085,
};

/** How many consecutive ports a `portBase` layout uses. */
export const PORT_SPAN = 20;

/** Every port laid out from `base`: proxies at base+0…6, backends at base+11…15. */
export function portsFromBase(base: number): CoffeeShopPorts {
  if (!Number.isInteger(base) || base < 1024 || base + PORT_SPAN > 65535) throw new Error(`port base ${base}: expected an integer from 1024 to ${65535 - PORT_SPAN}`);
  return {
    gateway: base,
    gatewayAdmin: base + 1,
    gatewayHealth: base + 2,
    sidecarOutbound: base + 3,
    sidecarInbound: base + 4,
    sidecarAdmin: base + 5,
    sidecarHealth: base + 6,
    order: base + 11,
    paymentV1: base + 12,
    paymentV2: base + 13,
    inventoryA: base + 14,
    inventoryB: base + 15,
  };
}

export type LogStream = 'stdout' | 'stderr';

export interface CoffeeShopOptions {
  /** A number lays every port out from it (see `portsFromBase`); `auto` finds a free range. */
  readonly portBase?: number | 'auto';
  /** Individual ports, over the defaults or the `portBase` layout. */
  readonly ports?: Partial<CoffeeShopPorts>;
  /** Where the mesh YAML comes from; `examples/coffee-shop/mesh`. */
  readonly meshDir?: string;
  /**
   * Serve a private copy of the YAML (in a temporary directory, removed by `stop()`) rather
   * than the files themselves. Forced when ports differ from the defaults, since the copy
   * carries the ports. Tests that edit the YAML want it.
   */
  readonly copyMesh?: boolean;
  /** Remora's CLI; `$REMORA_CLI` or `packages/proxy/dist/cli.js`. */
  readonly remoraCli?: string;
  /** Output of the children, line by line: the proxies' access logs and every stderr. Default: printed with a `[tag]` prefix. */
  readonly onLog?: (tag: string, line: string, stream: LogStream) => void;
  /** How long to wait for everything to answer; 30 s. */
  readonly readyTimeoutMs?: number;
  /** Passed to both proxies as `--drain-time`; `1s` (a demo need not wait Istio's 5 s on Ctrl-C). */
  readonly drainTime?: string;
  /** How long `stop()` waits for a child after SIGTERM before SIGKILL; 10 s. */
  readonly stopTimeoutMs?: number;
}

/** SPIFFE trust domain of the demo's CA (Istio's default). */
export const TRUST_DOMAIN = 'cluster.local';
/** The workload identities the demo issues: namespace and service account of each. */
export const IDENTITIES = {
  /** The order sidecar. */
  order: { namespace: 'coffee', serviceAccount: 'order' },
  /** The ingress gateway, with the service account Istio's gateway chart gives it. */
  gateway: { namespace: 'istio-system', serviceAccount: 'istio-ingressgateway-service-account' },
  /** Not given to any proxy: a valid mesh identity that order's AuthorizationPolicy does not allow, for curl and the checks. */
  payment: { namespace: 'coffee', serviceAccount: 'payment' },
} as const;
export type IdentityName = keyof typeof IDENTITIES;

/** `spiffe://cluster.local/ns/<ns>/sa/<sa>` of one of the demo's identities. */
export function spiffeId(name: IdentityName): string {
  const id = IDENTITIES[name];
  return `spiffe://${TRUST_DOMAIN}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

export interface CoffeeShopCerts {
  /** The temporary directory holding the rest. */
  readonly dir: string;
  /** The CA (`remora ca init`): root-cert.pem, root-key.pem. */
  readonly ca: string;
  /** One directory per identity (`remora ca issue`): cert-chain.pem, key.pem, root-cert.pem. */
  readonly identities: Readonly<Record<IdentityName, string>>;
}

export interface ChildExit {
  readonly tag: string;
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface CoffeeShop {
  readonly ports: CoffeeShopPorts;
  /** The directory both proxies were given with `-c`. */
  readonly meshDir: string;
  /** True when `meshDir` is a private copy. */
  readonly meshIsCopy: boolean;
  /** The demo's CA and workload certificates, in a temporary directory removed by `stop()`. */
  readonly certs: CoffeeShopCerts;
  /** `http://127.0.0.1:<gateway>` */
  readonly gatewayUrl: string;
  /** The exact command lines used for the proxies, for banners and bug reports. */
  readonly commands: Readonly<Record<string, readonly string[]>>;
  /** Settles when a child exits on its own (not through `stop()`). */
  readonly unexpectedExit: Promise<ChildExit>;
  /** SIGTERM to every child, wait (SIGKILL after the timeout), remove the private YAML copy and the certificates. Idempotent. */
  stop(): Promise<void>;
}

interface Child {
  readonly tag: string;
  readonly proc: ChildProcess;
  readonly exited: Promise<ChildExit>;
  readonly stderrTail: string[];
}

function defaultLog(tag: string, line: string, stream: LogStream): void {
  const out = stream === 'stdout' ? process.stdout : process.stderr;
  const color = out.isTTY ? (TAG_COLORS[tag] ?? 90) : 0;
  const prefix = color ? `\x1b[${color}m[${tag}]\x1b[0m` : `[${tag}]`;
  out.write(`${prefix} ${line}\n`);
}
const TAG_COLORS: Record<string, number> = { gateway: 36, 'order-sidecar': 35 };

/**
 * Starts the whole mesh and resolves once every process answers. On failure everything
 * started is stopped. With `portBase: 'auto'`, a range taken by someone else between the
 * probe and the listen is given up for another (three tries).
 */
export async function startCoffeeShop(opts: CoffeeShopOptions = {}): Promise<CoffeeShop> {
  if (opts.portBase !== 'auto') return startOnce(opts, opts.portBase);
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(opts, await findFreePortBase());
    } catch (err) {
      if (attempt >= 3 || !/EADDRINUSE|already in use/i.test((err as Error).message)) throw err;
    }
  }
}

async function startOnce(opts: CoffeeShopOptions, base: number | undefined): Promise<CoffeeShop> {
  const ports: CoffeeShopPorts = { ...(base === undefined ? DEFAULT_PORTS : portsFromBase(base)), ...opts.ports };
  const remoraCli = opts.remoraCli ?? process.env.REMORA_CLI ?? DEFAULT_REMORA_CLI;
  const onLog = opts.onLog ?? defaultLog;
  const readyTimeoutMs = opts.readyTimeoutMs ?? 30_000;
  const stopTimeoutMs = opts.stopTimeoutMs ?? 10_000;
  const drainTime = opts.drainTime ?? '1s';

  if (!existsSync(remoraCli)) {
    throw new Error(`Remora's CLI is not built (${remoraCli} is missing): run \`sh scripts/dev.sh setup\` or \`pnpm run build\` first`);
  }
  const busy = await busyPorts(Object.values(ports));
  if (busy.length > 0) {
    throw new Error(`port${busy.length > 1 ? 's' : ''} ${busy.join(', ')} already in use on 127.0.0.1 (another demo running?); try --port-base 20000 or --port-base auto`);
  }

  const sourceMesh = opts.meshDir ?? MESH_DIR;
  const portsAreDefault = (Object.keys(DEFAULT_PORTS) as (keyof CoffeeShopPorts)[]).every((k) => ports[k] === DEFAULT_PORTS[k]);
  const meshIsCopy = opts.copyMesh === true || !portsAreDefault;
  let tempDir: string | null = null;
  let meshDir = sourceMesh;
  if (meshIsCopy) {
    tempDir = mkdtempSync(join(tmpdir(), 'remora-coffee-shop-'));
    meshDir = join(tempDir, 'mesh');
    renderMesh(sourceMesh, meshDir, ports);
  }
  // Certificates are made anew for each run (a CA key is not something to keep in the repository).
  const certsDir = mkdtempSync(join(tmpdir(), 'remora-coffee-shop-certs-'));
  const certs: CoffeeShopCerts = {
    dir: certsDir,
    ca: join(certsDir, 'ca'),
    identities: { order: join(certsDir, 'order'), gateway: join(certsDir, 'gateway'), payment: join(certsDir, 'payment') },
  };

  const children: Child[] = [];
  let stopping = false;
  let resolveUnexpected: (e: ChildExit) => void = () => {};
  const unexpectedExit = new Promise<ChildExit>((r) => (resolveUnexpected = r));

  const launch = (tag: string, args: string[], logStdout: boolean): Child => {
    const proc = spawn(process.execPath, args, {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      // Own process group: Ctrl-C in the terminal reaches only the demo, which then stops
      // the children in order instead of racing them.
      detached: true,
      env: { ...process.env, NODE_NO_WARNINGS: '1' },
    });
    const stderrTail: string[] = [];
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      if (logStdout) onLog(tag, line, 'stdout');
    });
    createInterface({ input: proc.stderr! }).on('line', (line) => {
      stderrTail.push(line);
      if (stderrTail.length > 30) stderrTail.shift();
      onLog(tag, line, 'stderr');
    });
    const exited = new Promise<ChildExit>((res) => {
      proc.once('exit', (code, signal) => res({ tag, code, signal }));
      proc.once('error', (err) => {
        stderrTail.push(err.message);
        res({ tag, code: null, signal: null });
      });
    });
    void exited.then((e) => {
      if (!stopping) resolveUnexpected(e);
    });
    const child = { tag, proc, exited, stderrTail };
    children.push(child);
    return child;
  };

  // Should the demo itself die (uncaught error, process.exit), take the children along.
  const killAll = (): void => {
    for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null && c.proc.pid) tryKill(-c.proc.pid, 'SIGKILL');
  };
  process.once('exit', killAll);

  let stopped: Promise<void> | null = null;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      stopping = true;
      // Proxies first (they drain), then the apps behind them.
      const proxies = children.filter((c) => c.tag === 'gateway' || c.tag === 'order-sidecar');
      const apps = children.filter((c) => !proxies.includes(c));
      for (const group of [proxies, apps]) await Promise.all(group.map((c) => stopChild(c, stopTimeoutMs)));
      process.off('exit', killAll);
      if (tempDir !== null) rmSync(tempDir, { recursive: true, force: true });
      rmSync(certsDir, { recursive: true, force: true });
    })();
    return stopped;
  };

  const backend = (service: string, version: string, port: number, pod: string, extra: string[] = []): Child =>
    launch(pod, [BACKEND_SCRIPT, '--service', service, '--version', version, '--port', String(port), '--pod', pod, ...extra], false);

  const commands: Record<string, string[]> = {
    'order-sidecar': [
      remoraCli,
      'sidecar',
      '-c', meshDir,
      '--app-port', String(ports.order),
      '--outbound-port', String(ports.sidecarOutbound),
      '--inbound-port', String(ports.sidecarInbound),
      '--admin-port', String(ports.sidecarAdmin),
      '--health-port', String(ports.sidecarHealth),
      '--prometheus-port', '0',
      '--bind', '127.0.0.1',
      '--namespace', 'coffee',
      '--service-account', 'order',
      '--labels', 'app=order,version=v1',
      '--workload-name', 'order-v1',
      '--certs-dir', certs.identities.order,
      '--drain-time', drainTime,
    ],
    gateway: [
      remoraCli,
      'gateway',
      '-c', meshDir,
      '--admin-port', String(ports.gatewayAdmin),
      '--health-port', String(ports.gatewayHealth),
      '--prometheus-port', '0',
      '--bind', '127.0.0.1',
      '--namespace', IDENTITIES.gateway.namespace,
      '--service-account', IDENTITIES.gateway.serviceAccount,
      '--labels', 'istio=ingressgateway,app=istio-ingressgateway',
      // A filter from its own package (examples/custom-filter), placed by mesh/canary-filter.yaml.
      '--filter', CANARY_FILTER,
      '--certs-dir', certs.identities.gateway,
      '--drain-time', drainTime,
    ],
  };

  try {
    await issueCertificates(remoraCli, certs);
    const backends = [
      backend('order', 'v1', ports.order, 'order-v1', ['--outbound', `127.0.0.1:${ports.sidecarOutbound}`]),
      backend('payment', 'v1', ports.paymentV1, 'payment-v1'),
      backend('payment', 'v2', ports.paymentV2, 'payment-v2'),
      backend('inventory', 'v1', ports.inventoryA, 'inventory-v1-a'),
      backend('inventory', 'v1', ports.inventoryB, 'inventory-v1-b'),
    ];
    const backendPorts = [ports.order, ports.paymentV1, ports.paymentV2, ports.inventoryA, ports.inventoryB];
    const deadline = Date.now() + readyTimeoutMs;
    await Promise.all(backends.map((c, i) => waitUntil(c, `http://127.0.0.1:${backendPorts[i]}/healthz`, deadline)));

    const sidecar = launch('order-sidecar', commands['order-sidecar']!, true);
    const gateway = launch('gateway', commands.gateway!, true);
    await Promise.all([
      waitUntil(sidecar, `http://127.0.0.1:${ports.sidecarHealth}/healthz/ready`, deadline),
      waitUntil(gateway, `http://127.0.0.1:${ports.gatewayHealth}/healthz/ready`, deadline),
    ]);
    // Ready should mean listening; make sure the data ports accept connections too.
    await Promise.all([
      waitForTcp(sidecar, ports.sidecarOutbound, deadline),
      waitForTcp(sidecar, ports.sidecarInbound, deadline),
      waitForTcp(gateway, ports.gateway, deadline),
    ]);
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    ports,
    meshDir,
    meshIsCopy,
    certs,
    gatewayUrl: `http://127.0.0.1:${ports.gateway}`,
    commands,
    unexpectedExit,
    stop,
  };
}

/** `remora ca init`, then `remora ca issue` for each identity, as a user would run them. */
async function issueCertificates(remoraCli: string, certs: CoffeeShopCerts): Promise<void> {
  const ca = async (args: string[]): Promise<void> => {
    try {
      await execFileAsync(process.execPath, [remoraCli, 'ca', ...args], { cwd: REPO_ROOT, env: { ...process.env, NODE_NO_WARNINGS: '1' }, timeout: 30_000 });
    } catch (err) {
      const e = err as Error & { stderr?: string };
      throw new Error(`remora ca ${args.join(' ')} failed: ${(e.stderr ?? '').trim() || e.message}`);
    }
  };
  await ca(['init', '--dir', certs.ca, '--trust-domain', TRUST_DOMAIN]);
  await Promise.all(
    (Object.keys(IDENTITIES) as IdentityName[]).map((name) =>
      ca(['issue', '--dir', certs.ca, '--namespace', IDENTITIES[name].namespace, '--service-account', IDENTITIES[name].serviceAccount, '--out', certs.identities[name]]),
    ),
  );
}

function tryKill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

async function stopChild(c: Child, timeoutMs: number): Promise<void> {
  const pid = c.proc.pid;
  if (pid === undefined || c.proc.exitCode !== null || c.proc.signalCode !== null) return;
  tryKill(pid, 'SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    c.exited.then(() => false),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(true), timeoutMs))),
  ]);
  clearTimeout(timer);
  if (timedOut) {
    // The whole group: anything the child started (workers) goes too.
    tryKill(-pid, 'SIGKILL');
    await c.exited;
  }
}

/** Copies the mesh YAML, moving every default port to the one in use. */
export function renderMesh(from: string, to: string, ports: CoffeeShopPorts): void {
  cpSync(from, to, { recursive: true });
  const map = new Map<string, number>([
    [String(DEFAULT_PORTS.gateway), ports.gateway],
    [String(DEFAULT_PORTS.sidecarInbound), ports.sidecarInbound],
    [String(DEFAULT_PORTS.order), ports.order],
    [String(DEFAULT_PORTS.paymentV1), ports.paymentV1],
    [String(DEFAULT_PORTS.paymentV2), ports.paymentV2],
    [String(DEFAULT_PORTS.inventoryA), ports.inventoryA],
    [String(DEFAULT_PORTS.inventoryB), ports.inventoryB],
  ]);
  const pattern = new RegExp(`\\b(${[...map.keys()].join('|')})\\b`, 'g');
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const full = join(dir, name);
      if (statSync(full).isDirectory()) walk(full);
      else if (/\.(ya?ml|json)$/i.test(name)) {
        const text = readFileSync(full, 'utf8');
        writeFileSync(full, text.replace(pattern, (p) => String(map.get(p) ?? p)));
      }
    }
  };
  walk(to);
}

/** Ports among `ports` that something already listens on (or that cannot be bound). */
export async function busyPorts(ports: readonly number[]): Promise<number[]> {
  const busy: number[] = [];
  await Promise.all(
    ports.map(
      (port) =>
        new Promise<void>((res) => {
          const srv = createServer();
          srv.once('error', () => {
            busy.push(port);
            res();
          });
          srv.listen({ port, host: '127.0.0.1', exclusive: true }, () => srv.close(() => res()));
        }),
    ),
  );
  return busy.sort((a, b) => a - b);
}

/**
 * A `portBase` whose whole span is free right now, from 10000 up and outside the kernel's
 * ephemeral port range (where every outgoing connection, the proxies' own included, takes
 * its local port, so a probe saying "free" would prove little).
 */
export async function findFreePortBase(): Promise<number> {
  let [lo, hi] = [32768, 60999];
  try {
    const m = /(\d+)\s+(\d+)/.exec(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8'));
    if (m) [lo, hi] = [Number(m[1]), Number(m[2])];
  } catch {
    // not Linux: assume the usual range
  }
  const candidates: number[] = [];
  for (let base = 10000; base + PORT_SPAN <= 65535; base += PORT_SPAN) {
    if (base + PORT_SPAN <= lo || base > hi) candidates.push(base);
  }
  for (let attempt = 0; attempt < 50 && candidates.length > 0; attempt++) {
    const base = candidates.splice(Math.floor(Math.random() * candidates.length), 1)[0]!;
    const all = Array.from({ length: PORT_SPAN }, (_, i) => base + i);
    if ((await busyPorts(all)).length === 0) return base;
  }
  throw new Error('no free range of ports found for the coffee shop');
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function describeExit(c: Child, e: ChildExit): string {
  const how = e.signal !== null ? `signal ${e.signal}` : `exit code ${e.code}`;
  const tail = c.stderrTail.length > 0 ? `:\n  ${c.stderrTail.slice(-15).join('\n  ')}` : '';
  return `${c.tag} stopped while starting (${how})${tail}`;
}

/** Polls `url` until it answers 200; fails early if the child exits, or at the deadline. */
async function waitUntil(c: Child, url: string, deadline: number): Promise<void> {
  let exit: ChildExit | null = null;
  void c.exited.then((e) => (exit = e));
  let last = 'no answer';
  for (;;) {
    if (exit !== null) throw new Error(describeExit(c, exit));
    try {
      const r = await httpGet(url, {}, 1000);
      if (r.status === 200) return;
      last = `HTTP ${r.status} ${r.text.slice(0, 200).trim()}`;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`${c.tag} not ready: ${url} → ${last}`);
    await sleep(100);
  }
}

async function waitForTcp(c: Child, port: number, deadline: number): Promise<void> {
  let exit: ChildExit | null = null;
  void c.exited.then((e) => (exit = e));
  for (;;) {
    if (exit !== null) throw new Error(describeExit(c, exit));
    const ok = await new Promise<boolean>((res) => {
      const s = connect({ port, host: '127.0.0.1' }, () => {
        s.destroy();
        res(true);
      });
      s.once('error', () => res(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${c.tag} ready, but nothing listens on 127.0.0.1:${port}`);
    await sleep(100);
  }
}

// ---------------------------------------------------------------------------------------
// HTTP client and the checks `start.ts --check` and end-to-end tests run.

export interface HttpAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly text: string;
  /** The body as JSON, or undefined when it is not JSON. */
  readonly json: unknown;
}

const keepAlive = new Agent({ keepAlive: true, maxSockets: 4 });

export function httpGet(url: string, headers: Record<string, string> = {}, timeoutMs = 5000): Promise<HttpAnswer> {
  return new Promise((res, rej) => {
    const req = request(url, { method: 'GET', headers, agent: keepAlive, timeout: timeoutMs }, (r) => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.on('error', rej);
      r.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        res({ status: r.statusCode ?? 0, headers: r.headers, text, json });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms: GET ${url}`)));
    req.on('error', rej);
    req.end();
  });
}

/**
 * One request on a fresh connection, in plaintext or (with `tls`) over mTLS, for talking to a
 * sidecar's inbound port directly. `peer` is the URI SAN of the certificate the server presented.
 */
export function directGet(
  port: number,
  path: string,
  headers: Record<string, string>,
  tls?: { cert: Buffer; key: Buffer; ca: Buffer },
  timeoutMs = 5000,
): Promise<HttpAnswer & { peer?: string }> {
  return new Promise((res, rej) => {
    const options = { host: '127.0.0.1', port, path, method: 'GET', headers, agent: false as const, timeout: timeoutMs };
    const onResponse = (r: IncomingMessage): void => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.on('error', rej);
      r.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const sock = r.socket as Partial<TLSSocket>;
        const san = sock.getPeerCertificate?.().subjectaltname ?? '';
        const peer = /URI:(spiffe:\/\/[^,\s]+)/.exec(san)?.[1];
        res({ status: r.statusCode ?? 0, headers: r.headers, text, json: undefined, ...(peer !== undefined ? { peer } : {}) });
      });
    };
    const req =
      tls === undefined
        ? request(options, onResponse)
        : // A mesh peer's server certificate names a SPIFFE ID, not a host name: trust the
          // root, and compare the ID (`peer`) instead of the name.
          httpsRequest({ ...options, ...tls, checkServerIdentity: () => undefined }, onResponse);
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms: GET 127.0.0.1:${port}${path}`)));
    req.on('error', rej);
    req.end();
  });
}

export interface CheckResult {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

export interface CheckOptions {
  /** Requests for the 90/10 split; 200. */
  readonly splitRequests?: number;
  /** Also edit the YAML (only when the shop serves a private copy) and watch the gateway reload; true. */
  readonly hotReload?: boolean;
  /** Called as each check finishes. */
  readonly onResult?: (r: CheckResult) => void;
}

interface Served {
  service?: unknown;
  version?: unknown;
  pod?: unknown;
  host?: unknown;
  xfcc?: unknown;
  payment?: Served;
  inventory?: Served;
}

class CheckFailed extends Error {}
function expect(cond: boolean, message: string): asserts cond {
  if (!cond) throw new CheckFailed(message);
}
function brief(a: HttpAnswer): string {
  const t = a.text.trim().replace(/\s+/g, ' ');
  return `HTTP ${a.status} ${t.length > 300 ? t.slice(0, 300) + '…' : t}`;
}
function served(a: HttpAnswer, service: string): Served {
  expect(a.status === 200, `expected 200 from ${service}, got ${brief(a)}`);
  const body = a.json as Served | undefined;
  expect(typeof body === 'object' && body !== null, `expected a JSON answer, got ${brief(a)}`);
  expect(body.service === service, `expected service ${service}, got ${brief(a)}`);
  return body;
}

/** Drives the mesh the way the banner's curls do and checks every answer. */
export async function runChecks(shop: CoffeeShop, opts: CheckOptions = {}): Promise<CheckResult[]> {
  const gw = shop.gatewayUrl;
  const admin = `http://127.0.0.1:${shop.ports.gatewayAdmin}`;
  const sidecarAdmin = `http://127.0.0.1:${shop.ports.sidecarAdmin}`;
  const results: CheckResult[] = [];
  const check = async (name: string, fn: () => Promise<string>): Promise<void> => {
    let r: CheckResult;
    try {
      r = { name, ok: true, detail: await fn() };
    } catch (err) {
      r = { name, ok: false, detail: err instanceof CheckFailed ? err.message : `error: ${(err as Error).message}` };
    }
    results.push(r);
    opts.onResult?.(r);
  };
  const tally = async (n: number, path: string, headers: Record<string, string>, key: (b: Served) => unknown): Promise<Map<string, number>> => {
    const counts = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const a = await httpGet(gw + path, headers);
      const b = served(a, path === '/inventory' ? 'inventory' : 'payment');
      const k = String(key(b));
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    return counts;
  };
  const show = (m: Map<string, number>): string => [...m].map(([k, v]) => `${k}: ${v}`).join(', ');

  await check('GET /order → order v1, which calls payment and inventory through its sidecar', async () => {
    const a = await httpGet(`${gw}/order`);
    const b = served(a, 'order');
    expect(b.version === 'v1', `expected order v1, got ${brief(a)}`);
    expect(a.headers['x-served-by'] === 'order-v1', `expected x-served-by: order-v1, got ${String(a.headers['x-served-by'])}`);
    expect(b.payment?.service === 'payment', `order's call to payment failed: ${JSON.stringify(b.payment)}`);
    expect(b.inventory?.service === 'inventory', `order's call to inventory failed: ${JSON.stringify(b.inventory)}`);
    expect(b.payment.host === 'payment.coffee.svc.cluster.local', `payment saw Host ${String(b.payment.host)}`);
    return `order v1 → payment ${String(b.payment.version)}, inventory ${String(b.inventory.pod)}`;
  });

  await check("GET /order → the gateway calls order over mTLS: order's sidecar passes on the gateway's SPIFFE ID (x-forwarded-client-cert)", async () => {
    const a = await httpGet(`${gw}/order`);
    const b = served(a, 'order');
    const xfcc = typeof b.xfcc === 'string' ? b.xfcc : '';
    const uri = `URI=${spiffeId('gateway')}`;
    const at = xfcc.indexOf(uri);
    expect(at >= 0 && /^(?:$|[;,])/.test(xfcc.slice(at + uri.length)), `expected ${uri} in the x-forwarded-client-cert order received, got ${JSON.stringify(b.xfcc)}`);
    expect(xfcc.startsWith(`By=${spiffeId('order')};`), `expected By=${spiffeId('order')} (the sidecar's own identity) in ${JSON.stringify(b.xfcc)}`);
    return `x-forwarded-client-cert: ${xfcc}`;
  });

  await check(`plaintext GET straight to the order sidecar's inbound port ${shop.ports.sidecarInbound} → closed without an answer (PeerAuthentication STRICT)`, async () => {
    let answer: HttpAnswer | undefined;
    try {
      answer = await directGet(shop.ports.sidecarInbound, '/order', { host: 'order.coffee.svc.cluster.local' });
    } catch (err) {
      const message = (err as Error).message;
      expect(/socket hang up|ECONNRESET|EPIPE/.test(message), `expected the connection to be closed, got: ${message}`);
      return `closed without an answer (${message})`;
    }
    throw new CheckFailed(`a plaintext client was answered: ${brief(answer)}`);
  });

  await check("mTLS GET to the order sidecar with payment's identity → 403 (AuthorizationPolicy allows only the gateway)", async () => {
    const files = (name: IdentityName): { cert: Buffer; key: Buffer; ca: Buffer } => {
      const dir = shop.certs.identities[name];
      return { cert: readFileSync(join(dir, 'cert-chain.pem')), key: readFileSync(join(dir, 'key.pem')), ca: readFileSync(join(dir, 'root-cert.pem')) };
    };
    const a = await directGet(shop.ports.sidecarInbound, '/order', { host: 'order.coffee.svc.cluster.local' }, files('payment'));
    expect(a.peer === spiffeId('order'), `expected the sidecar to present ${spiffeId('order')}, it presented ${String(a.peer)}`);
    expect(a.status === 403 && a.text.trim() === 'RBAC: access denied', `expected 403 RBAC: access denied, got ${brief(a)}`);
    expect(a.headers['x-served-by'] === undefined, `the order app answered: ${brief(a)}`);
    return `the sidecar presented ${a.peer}; ${spiffeId('payment')} got HTTP 403 ${a.text.trim()}`;
  });

  await check('GET /payment with x-canary: true → payment v2 every time', async () => {
    const counts = await tally(10, '/payment', { 'x-canary': 'true' }, (b) => b.version);
    expect(counts.get('v2') === 10, `expected 10 × v2, got ${show(counts)}`);
    return show(counts);
  });

  await check('GET /payment, a new client → the example.canary filter (a --filter package) assigns a group and sets its cookie; cookie canary=canary → v2', async () => {
    const first = await httpGet(`${gw}/payment`);
    const cookie = String(first.headers['set-cookie'] ?? '');
    expect(/^canary=stable;/.test(cookie), `expected a canary=stable cookie for a new client, got ${JSON.stringify(first.headers['set-cookie'])}`);
    expect(first.headers['x-canary-group'] === 'stable', `expected x-canary-group: stable, got ${String(first.headers['x-canary-group'])}`);
    const counts = await tally(5, '/payment', { cookie: 'canary=canary' }, (b) => b.version);
    expect(counts.get('v2') === 5, `expected 5 × v2 with the canary cookie, got ${show(counts)}`);
    return `set-cookie: ${cookie.split(';')[0]}; with canary=canary: ${show(counts)}`;
  });

  const n = opts.splitRequests ?? 200;
  await check(`GET /payment × ${n} → split about 90/10 between v1 and v2`, async () => {
    const counts = await tally(n, '/payment', {}, (b) => b.version);
    const v1 = counts.get('v1') ?? 0;
    const v2 = counts.get('v2') ?? 0;
    expect(v1 + v2 === n, `answers from other versions: ${show(counts)}`);
    // Binomial(n, 0.1): outside these bounds by chance less than once in a million runs.
    expect(v2 >= 1 && v2 <= Math.ceil(n * 0.25), `expected about ${n * 0.1} × v2, got ${show(counts)}`);
    return show(counts);
  });

  await check('GET /inventory × 10 → round robin over both inventory pods', async () => {
    const counts = await tally(10, '/inventory', {}, (b) => b.pod);
    const a = counts.get('inventory-v1-a') ?? 0;
    const b = counts.get('inventory-v1-b') ?? 0;
    expect(a > 0 && b > 0 && a + b === 10, `expected both pods, got ${show(counts)}`);
    return show(counts);
  });

  await check('GET /order with x-canary: true → the order sidecar sends payment to v2', async () => {
    const versions: string[] = [];
    for (let i = 0; i < 5; i++) {
      const a = await httpGet(`${gw}/order`, { 'x-canary': 'true' });
      const b = served(a, 'order');
      expect(b.payment?.service === 'payment', `order's call to payment failed: ${JSON.stringify(b.payment)}`);
      versions.push(String(b.payment.version));
    }
    expect(versions.every((v) => v === 'v2'), `payment versions seen by order: ${versions.join(', ')}`);
    return `payment ${versions.join(', ')}`;
  });

  await check('GET /nothing-here → 404 from the gateway (no route)', async () => {
    const a = await httpGet(`${gw}/nothing-here`);
    expect(a.status === 404, `expected 404, got ${brief(a)}`);
    expect(a.headers['x-served-by'] === undefined, `a backend answered: ${brief(a)}`);
    return 'HTTP 404';
  });

  await check('gateway admin: /ready, /clusters, /config_dump', async () => {
    const ready = await httpGet(`${admin}/ready`);
    expect(ready.status === 200, `/ready: ${brief(ready)}`);
    const clusters = await httpGet(`${admin}/clusters`);
    expect(clusters.status === 200, `/clusters: ${brief(clusters)}`);
    for (const want of ['payment.coffee.svc.cluster.local', `127.0.0.1:${shop.ports.paymentV2}`, `127.0.0.1:${shop.ports.inventoryB}`]) {
      expect(clusters.text.includes(want), `/clusters does not mention ${want}`);
    }
    const dump = await httpGet(`${admin}/config_dump`);
    expect(dump.status === 200 && dump.json !== undefined, `/config_dump: ${brief(dump)}`);
    return `/ready ${ready.text.trim()}; /clusters lists payment and inventory endpoints`;
  });

  await check('metrics: istio_requests_total at the gateway and the order sidecar', async () => {
    const lines = async (url: string): Promise<string[]> => {
      const a = await httpGet(url);
      expect(a.status === 200, `${url}: ${brief(a)}`);
      return a.text.split('\n').filter((l) => l.startsWith('istio_requests_total{'));
    };
    const gwLines = await lines(`${admin}/stats/prometheus`);
    expect(gwLines.some((l) => l.includes('destination_service="payment.coffee.svc.cluster.local"')), `gateway: no istio_requests_total for payment (${gwLines.length} series)`);
    const scLines = await lines(`${sidecarAdmin}/stats/prometheus`);
    const outbound = scLines.some((l) => l.includes('reporter="source"') && l.includes('destination_service="payment.coffee.svc.cluster.local"'));
    const inbound = scLines.some((l) => l.includes('reporter="destination"'));
    expect(outbound, `order sidecar: no reporter="source" series for payment (${scLines.length} series)`);
    expect(inbound, `order sidecar: no reporter="destination" series for inbound requests (${scLines.length} series)`);
    return `${gwLines.length} series at the gateway, ${scLines.length} at the sidecar`;
  });

  await check('metrics: the order sidecar counts inbound requests as mutual_tls from the gateway, none in plaintext', async () => {
    const a = await httpGet(`${sidecarAdmin}/stats/prometheus`);
    expect(a.status === 200, `${sidecarAdmin}/stats/prometheus: ${brief(a)}`);
    const inbound = a.text.split('\n').filter((l) => l.startsWith('istio_requests_total{') && l.includes('reporter="destination"'));
    const mtls = inbound.filter((l) => l.includes('connection_security_policy="mutual_tls"') && l.includes(`source_principal="${spiffeId('gateway')}"`));
    expect(mtls.length > 0, `no reporter="destination" series with connection_security_policy="mutual_tls" and source_principal="${spiffeId('gateway')}":\n${inbound.join('\n')}`);
    const plain = inbound.filter((l) => !l.includes('connection_security_policy="mutual_tls"'));
    expect(plain.length === 0, `inbound series other than mutual_tls:\n${plain.join('\n')}`);
    return `${mtls.length} mutual_tls series from the gateway, ${inbound.length} inbound in all`;
  });

  if ((opts.hotReload ?? true) && shop.meshIsCopy) {
    await check('hot reload: payment split edited to 0/100 in gateway.yaml → every /payment goes to v2', async () => {
      const file = join(shop.meshDir, 'gateway.yaml');
      const before = readFileSync(file, 'utf8');
      const after = before.replace(/weight: 90\b/, 'weight: 0').replace(/weight: 10\b/, 'weight: 100');
      expect(after !== before, 'could not find the 90/10 weights in gateway.yaml');
      writeFileSync(file, after);
      const deadline = Date.now() + 15_000;
      let streak = 0;
      let last = '';
      while (streak < 20) {
        expect(Date.now() < deadline, `no reload within 15 s (last answer: ${last})`);
        const a = await httpGet(`${gw}/payment`);
        last = brief(a);
        const b = a.json as Served | undefined;
        streak = a.status === 200 && b?.version === 'v2' ? streak + 1 : 0;
        if (streak === 0) await sleep(50);
      }
      return '20 × v2 in a row after the edit';
    });
  }
  return results;
}
