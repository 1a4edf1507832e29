// docker/iptables.sh with real iptables and a real Remora sidecar, in a network namespace
// the test creates: a "pod" joined to the root namespace by a veth pair. Inside the pod: the
// app (node:http on 0.0.0.0:8080), Remora as UID 1337, and the capture rules. Outside: an
// upstream service, registered by a ServiceEntry with a VIP. The test checks what a user of
// Istio's capture relies on: inbound traffic goes through the sidecar, the app's outgoing
// calls go through it, the sidecar's own connections are not captured again, excluded ports
// are reached directly, and `--clean` gives the pod back its plain network.
import { createServer, request as httpRequest, type Server } from 'node:http';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { sleep, WaitAborted, waitFor } from './helpers/net.ts';
import { netnsPrerequisites, PodNetns, run, type PodProcess } from './helpers/netns.ts';
import { CLI, MeshDir, REPO, runCli } from './helpers/remora.ts';

const SCRIPT = join(REPO, 'docker/iptables.sh');
const APP_PORT = 8080;
const VIP = '10.96.0.10';
const SERVICE_PORT = 9080;
const SERVICE_HOST = 'reviews.default.svc.cluster.local';
const PROXY = { uid: 1337, gid: 1337 };
/** The "app container" user: any UID but the proxy's. */
const APP_USER = { uid: 1000, gid: 1000 };

// --- dry run: no privileges needed ---------------------------------------------------------

t.test('iptables.sh --dry-run prints the rules of Istio’s istio-iptables', async (t) => {
  const r = await run('sh', [SCRIPT, '--dry-run'], { timeoutMs: 10_000 });
  t.equal(r.code, 0, r.stderr);
  t.same(r.stdout.trim().split('\n'), [
    'iptables -t nat -N ISTIO_INBOUND',
    'iptables -t nat -N ISTIO_REDIRECT',
    'iptables -t nat -N ISTIO_IN_REDIRECT',
    'iptables -t nat -N ISTIO_OUTPUT',
    'iptables -t nat -A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN',
    'iptables -t nat -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001',
    'iptables -t nat -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006',
    'iptables -t nat -A PREROUTING -p tcp -j ISTIO_INBOUND',
    'iptables -t nat -A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN',
    'iptables -t nat -A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN',
    'iptables -t nat -A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN',
    'iptables -t nat -A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT',
    'iptables -t nat -A OUTPUT -j ISTIO_OUTPUT',
    'iptables -t nat -A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN',
    'iptables -t nat -A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT',
    'iptables -t nat -A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN',
    'iptables -t nat -A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN',
    'iptables -t nat -A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT',
    'iptables -t nat -A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN',
    'iptables -t nat -A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN',
    'iptables -t nat -A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN',
    'iptables -t nat -A ISTIO_OUTPUT -j ISTIO_REDIRECT',
  ]);

  const some = await run('sh', [SCRIPT, '-n', '-b', '8080,9090', '-i', '10.96.0.0/12', '-x', '10.96.0.1', '-o', '3306', '-q', '5432', '-p', '16001', '-z', '16006'], { timeoutMs: 10_000 });
  t.equal(some.code, 0, some.stderr);
  const lines = some.stdout.trim().split('\n');
  t.ok(lines.includes('iptables -t nat -A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT'), '-b: listed inbound ports captured');
  t.notOk(lines.some((l) => l.endsWith('--dport 15021 -j RETURN')), '-d applies only to -b *');
  t.notOk(lines.includes('iptables -t nat -A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT'), 'no catch-all inbound rule');
  t.ok(lines.includes('iptables -t nat -A ISTIO_OUTPUT -p tcp --dport 3306 -j RETURN'), '-o (TCP)');
  t.ok(lines.includes('iptables -t nat -A ISTIO_OUTPUT -p udp --dport 3306 -j RETURN'), '-o (UDP)');
  t.ok(lines.includes('iptables -t nat -A ISTIO_OUTPUT -p tcp --dport 5432 -j ISTIO_REDIRECT'), '-q');
  t.ok(lines.includes('iptables -t nat -A ISTIO_OUTPUT -d 10.96.0.1/32 -j RETURN'), '-x: a bare address is a /32');
  t.ok(lines.at(-1) === 'iptables -t nat -A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT', '-i: only the range is captured');
  t.ok(lines.includes('iptables -t nat -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 16001'), '-p');
  t.ok(lines.includes('iptables -t nat -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006'), '-z');
  t.ok(lines.indexOf('iptables -t nat -A ISTIO_OUTPUT -d 10.96.0.1/32 -j RETURN') < lines.indexOf('iptables -t nat -A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT'), 'exclusions come before inclusions');

  for (const [args, message] of [
    [['-p', '0'], "-p (outbound capture port): '0' is not a port"],
    [['-i', '10.0.0/8'], "'10.0.0/8' is not an IPv4 address or CIDR"],
    [['-x', '*'], "'*' is not allowed"],
    [['-u', 'istio'], "'istio' is not a numeric id"],
    [['-b'], 'option -b needs a value'],
    [['--frobnicate'], "unknown option '--frobnicate'"],
    [['-m', 'NAT'], "-m (inbound interception mode): 'NAT' is not REDIRECT or TPROXY"],
    [['-e', '70000'], "-e (inbound tunnel port): '70000' is not a port"],
    [['-c', 'eth0;rm'], "'eth0;rm' is not an interface name"],
    [['--redirect-dns=maybe'], "'maybe' is not true or false"],
    [['--log_output_level'], 'option --log_output_level needs a value'],
  ] as const) {
    const bad = await run('sh', [SCRIPT, '-n', ...args], { timeoutMs: 10_000 });
    t.equal(bad.code, 1, `${args.join(' ')} fails`);
    t.match(bad.stderr, message, `${args.join(' ')}: says why`);
  }
});

/** The IPv4 rules of one of Istio's goldens (test/fixtures/istio-iptables), per table. */
function goldenRules(name: string): Record<string, string[]> {
  const text = readFileSync(join(REPO, 'test/fixtures/istio-iptables', `${name}.golden`), 'utf8');
  const tables: Record<string, string[]> = {};
  let table = '';
  for (const line of text.split('\n')) {
    if (line.startsWith('* ')) {
      table = line.slice(2);
      if (tables[table]) break; // the IPv6 part starts: the same tables again
      tables[table] = [];
    } else if (line === 'COMMIT') table = '';
    else if (table && line) tables[table]!.push(line);
  }
  return tables;
}

/** The dry run's rules per table (`iptables -t TABLE …` lines), and its `ip` commands. */
function dryRunRules(stdout: string): { tables: Record<string, string[]>; ip: string[] } {
  const tables: Record<string, string[]> = {};
  const ip: string[] = [];
  for (const line of stdout.trim().split('\n')) {
    const m = /^iptables -t (\w+) (.*)$/.exec(line);
    if (m) (tables[m[1]!] ??= []).push(m[2]!);
    else if (line.startsWith('ip ')) ip.push(line);
  }
  return { tables, ip };
}

t.test('iptables.sh with istio-iptables’ flags builds Istio’s own rules, in its order (Istio’s goldens)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'remora-resolv-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const resolv = join(dir, 'resolv.conf');
  writeFileSync(resolv, 'search default.svc.cluster.local\nnameserver 127.0.0.53\noptions ndots:5\n');
  // The settings of each golden (istio's run_test.go), as istio-iptables flags.
  const cases: Array<[string, string[]]> = [
    ['tproxy', ['-m', 'TPROXY', '-b', '*', '-d', '', '-x', '1.1.0.0/16', '-i', '9.9.0.0/16', '--redirect-dns', '-c', 'not-istio-nic']],
    ['dns-uid-gid', ['-b', '', '-d', '', '-i', '', '--redirect-dns=true', '--proxy-gid', '1,2', '--proxy-uid=3,4']],
    ['kube-virt-interfaces', ['-b', '', '-d', '', '-k', 'eth1,eth2', '-i', '*']],
    ['drop-invalid', ['-b', '', '-d', '', '-i', '', '--drop-invalid']],
  ];
  for (const [name, args] of cases) {
    const r = await run('sh', [SCRIPT, '--dry-run', '--log_output_level=default:info', ...args], { timeoutMs: 10_000, env: { ...process.env, RESOLV_CONF: resolv } });
    t.equal(r.code, 0, `${name}: ${r.stderr}`);
    const { tables, ip } = dryRunRules(r.stdout);
    t.same(tables, goldenRules(name), `${name}: the same rules as istio-iptables, table by table`);
    if (name === 'tproxy') {
      t.same(ip, ['ip -f inet rule add fwmark 1337 lookup 133', 'ip -f inet route add local 0.0.0.0/0 dev lo table 133'], 'TPROXY: the policy route for the mark');
    }
  }

  // --redirect-dns without a nameserver and without --capture-all-dns: Istio's warning, no DNS rules.
  writeFileSync(resolv, 'search local\n');
  const none = await run('sh', [SCRIPT, '-n', '--redirect-dns'], { timeoutMs: 10_000, env: { ...process.env, RESOLV_CONF: resolv } });
  t.equal(none.code, 0);
  t.match(none.stderr, /no DNS servers provided .*DNS capture disabled/);
  t.notOk(none.stdout.includes('ISTIO_OUTPUT_DNS'));
  const all = await run('sh', [SCRIPT, '-n', '--redirect-dns', '--capture-all-dns'], { timeoutMs: 10_000, env: { ...process.env, RESOLV_CONF: resolv } });
  t.ok(all.stdout.includes('iptables -t nat -A ISTIO_OUTPUT_DNS -p udp --dport 53 -j REDIRECT --to-port 15053'), '--capture-all-dns: all UDP DNS to 15053');
  t.ok(all.stdout.includes('iptables -t nat -A ISTIO_OUTPUT_DNS -p tcp --dport 53 -j REDIRECT --to-ports 15053'), '--capture-all-dns: all TCP DNS to 15053');
});

t.test('the Kubernetes example’s sidecar config (docker/k8s/mesh) is valid', async (t) => {
  const r = await runCli(['validate', '-c', join(REPO, 'docker/k8s/mesh')]);
  t.equal(r.code, 0, r.stdout + r.stderr);
  t.match(r.stdout, /0 errors, 0 warnings/);
});

// --- the real thing -------------------------------------------------------------------------

/** Why this cannot run here (becomes the skip reason), or the pod namespace to run in. */
async function preparePod(): Promise<{ skip: string | false; pod: PodNetns | null }> {
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
  return { skip: false, pod };
}

const { skip, pod: maybePod } = await preparePod();

interface Echo {
  readonly name: string;
  readonly url: string;
  readonly headers: Record<string, string | undefined>;
  readonly remote: string;
  readonly local?: string;
}

/** One line of Remora's JSON access log (the fields the test reads). */
interface AccessLine {
  readonly path: string;
  readonly response_code: number;
  readonly response_flags: string;
  readonly authority: string | null;
  readonly upstream_host: string | null;
  readonly upstream_cluster: string | null;
  readonly downstream_local_address: string;
  readonly downstream_remote_address: string;
}

interface Reply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

/** An HTTP/1.1 request from the root namespace to `host:port` on a fresh connection. */
function httpGet(host: string, port: number, path: string, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host, port, path, headers, agent: false, timeout: 5_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`request to ${host}:${port}${path} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

// The app: answers with what it saw (the peer address tells whether Remora was in between).
// It exits when its stdin closes, so it never outlives the test.
const APP_JS = `
const { createServer } = require('node:http');
const server = createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ name: 'pod-app', url: req.url, headers: req.headers, remote: req.socket.remoteAddress,
    local: req.socket.localAddress + ':' + req.socket.localPort }));
});
server.listen(${APP_PORT}, '0.0.0.0', () => console.log('app listening on ' + ${APP_PORT}));
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
`;

// A client inside the pod, as the app's code would call another service: plain node:http,
// no proxy settings. Prints {status, headers, body} or {error}.
const CLIENT_JS = `
const [url, host] = process.argv.slice(2);
const u = new URL(url);
const req = require('node:http').request({ host: u.hostname, port: u.port, path: u.pathname + u.search,
  headers: host ? { host } : {}, agent: false, timeout: 5000 }, (res) => {
  let body = '';
  res.setEncoding('utf8');
  res.on('data', (c) => (body += c));
  res.on('end', () => console.log(JSON.stringify({ status: res.statusCode, headers: res.headers, body })));
});
req.on('timeout', () => req.destroy(new Error('timeout')));
req.on('error', (e) => console.log(JSON.stringify({ error: e.code || e.message })));
req.end();
`;

t.test('iptables.sh captures a pod’s traffic into a real Remora sidecar', { skip }, async (t) => {
  const pod = maybePod!;
  let mesh: MeshDir | null = null;
  let upstream: Server | null = null;
  let app: PodProcess | null = null;
  let remora: PodProcess | null = null;
  t.teardown(async () => {
    // Sidecar and app first (SIGTERM, then SIGKILL), then the namespace and its veth.
    await remora?.stop();
    await app?.stop();
    await pod.destroy();
    if (upstream) {
      upstream.closeAllConnections();
      await new Promise<void>((r) => upstream!.close(() => r()));
    }
    mesh?.cleanup();
  });

  await pod.wire([`${VIP.split('.').slice(0, 2).join('.')}.0.0/16`]);

  // The upstream service, outside the pod, on the root side of the veth.
  const seen: Echo[] = [];
  upstream = createServer((req, res) => {
    const echo: Echo = { name: 'reviews', url: req.url ?? '', headers: req.headers as Record<string, string>, remote: req.socket.remoteAddress ?? '' };
    seen.push(echo);
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(echo));
    });
  });
  await new Promise<void>((r) => upstream!.listen(0, pod.hostIp, r));
  const upstreamPort = (upstream.address() as AddressInfo).port;

  // The mesh: the upstream as a service with a VIP, the way a Kubernetes Service looks to Istio.
  mesh = new MeshDir({
    'reviews.yaml': `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: reviews, namespace: default }
spec:
  hosts: [reviews]
  addresses: [${VIP}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - { number: ${SERVICE_PORT}, name: http, protocol: HTTP }
  endpoints:
  - { address: ${pod.hostIp}, ports: { http: ${upstreamPort} }, labels: { app: reviews } }
`,
  });
  const appJs = mesh.write('app.cjs', APP_JS);
  // Remora runs as 1337 and must read its config (mkdtemp makes the directory 0700).
  chmodSync(mesh.dir, 0o755);
  chmodSync(join(mesh.dir, 'reviews.yaml'), 0o644);
  chmodSync(appJs, 0o644);
  const clientJs = join(mesh.dir, 'client.cjs');
  writeFileSync(clientJs, CLIENT_JS, { mode: 0o644 });

  // As in a pod: the init container's rules first, then the app and the sidecar.
  const first = await pod.exec(['sh', SCRIPT], { timeoutMs: 20_000 });
  t.equal(first.code, 0, `iptables.sh applies (${first.stderr.trim().split('\n')[0]})`);
  const saveAfterFirst = await natRules(pod);

  app = pod.spawn([process.execPath, appJs], { user: APP_USER });
  // As the image's entrypoint starts it: the conntrack table opened as root and inherited, then
  // UID 1337 (the original destination comes from getsockopt where the addon is built, else
  // from that table).
  remora = pod.spawn(
    ['sh', '-c', `exec 3</proc/net/nf_conntrack && exec setpriv --reuid=${PROXY.uid} --regid=${PROXY.gid} --clear-groups -- "$@"`, 'sh',
      process.execPath, CLI, 'sidecar', '-c', mesh.dir, '--app-port', String(APP_PORT), '--bind', '0.0.0.0', '--conntrack-fd', '3',
      '--access-log-format', 'json', '--drain-time', '1s', '--labels', 'app=productpage,version=v1'],
    { cwd: REPO },
  );
  const appProc = app;
  const sidecar = remora;
  await waitFor('app listening in the pod', () => appProc.stdout.some((l) => l.includes('app listening')), 10_000, { output: appProc.stderr });
  // Readiness as the kubelet sees it: 15021 from outside the pod (an excluded port).
  await waitFor(
    `Remora ready on ${pod.podIp}:15021`,
    async () => {
      if (sidecar.child.exitCode !== null) throw new WaitAborted(`remora exited (${sidecar.child.exitCode})`);
      return (await httpGet(pod.podIp, 15021, '/healthz/ready')).status === 200;
    },
    20_000,
    { output: sidecar.stderr },
  );

  const accessLog = (): AccessLine[] =>
    sidecar.stdout.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as AccessLine);
  const linesFor = (path: string): AccessLine[] => accessLog().filter((l) => l.path === path);
  /** Waits for the access log line of `path`, then a little longer so a second one would show. */
  const logged = async (path: string): Promise<AccessLine[]> => {
    await waitFor(`access log line for ${path}`, () => linesFor(path).length > 0, 5_000, { output: sidecar.stdout, outputName: 'stdout', tailLines: 5 });
    await sleep(300);
    return linesFor(path);
  };
  /** Nothing logged for `path` after giving the log time to flush. */
  const notLogged = async (path: string): Promise<boolean> => {
    await sleep(500);
    return linesFor(path).length === 0;
  };
  /** A call from inside the pod by the app's user (not the proxy's). */
  const podCall = async (url: string, host?: string): Promise<{ status?: number; headers?: Record<string, string>; body?: string; error?: string }> => {
    const out = await pod.execOk([process.execPath, clientJs, url, ...(host ? [host] : [])], { user: APP_USER, timeoutMs: 15_000 });
    return JSON.parse(out.trim()) as { status?: number; body?: string; error?: string };
  };

  t.test('(a) inbound: a request to the pod’s app port goes through Remora’s inbound listener', async (t) => {
    const before = await counter(pod, 'ISTIO_INBOUND', (r) => r.target === 'ISTIO_IN_REDIRECT');
    const r = await httpGet(pod.podIp, APP_PORT, '/hello?id=in-1', { 'x-from': 'root-namespace' });
    t.equal(r.status, 200);
    const echo = JSON.parse(r.body) as Echo;
    t.equal(echo.name, 'pod-app', 'the app answered');
    t.equal(echo.url, '/hello?id=in-1');
    t.equal(echo.headers['x-from'], 'root-namespace');
    t.equal(echo.remote, '127.0.0.1', 'the app’s peer is Remora (which forwards to 127.0.0.1:8080), not the caller');
    t.ok(echo.headers['x-request-id'], 'Remora added x-request-id');
    const lines = await logged('/hello?id=in-1');
    t.equal(lines.length, 1, 'one access log line');
    t.equal(lines[0]!.upstream_cluster, `inbound|${APP_PORT}||`, 'on the inbound side');
    t.equal(lines[0]!.downstream_local_address, `${pod.podIp}:${APP_PORT}`, 'its original destination, as Envoy reports a redirected connection’s local address');
    t.match(lines[0]!.downstream_remote_address, new RegExp(`^${pod.hostIp.replaceAll('.', '\\.')}:`), 'from the caller');
    const after = await counter(pod, 'ISTIO_INBOUND', (r) => r.target === 'ISTIO_IN_REDIRECT');
    t.ok(after > before, `ISTIO_INBOUND → ISTIO_IN_REDIRECT counter went up (${before} → ${after})`);
  });

  t.test('(b, c) outbound: the app’s call to a service VIP is routed by Remora, and Remora’s own connection is not captured again', async (t) => {
    const redirectBefore = await counter(pod, 'ISTIO_OUTPUT', (r) => r.target === 'ISTIO_REDIRECT' && r.rest === '');
    const proxyBefore = await counter(pod, 'ISTIO_OUTPUT', (r) => r.target === 'RETURN' && r.rest === 'owner UID match 1337');

    const r = await podCall(`http://${VIP}:${SERVICE_PORT}/x?id=out-1`, `${SERVICE_HOST}:${SERVICE_PORT}`);
    t.equal(r.error, undefined, 'the call succeeded');
    t.equal(r.status, 200);
    const echo = JSON.parse(r.body!) as Echo;
    t.equal(echo.name, 'reviews', 'the upstream answered');
    t.equal(echo.url, '/x?id=out-1');
    t.equal(echo.remote, pod.podIp, 'the upstream’s peer is the pod');
    t.ok(echo.headers['x-request-id'], 'through Remora: x-request-id added');
    t.ok(r.headers?.['x-envoy-upstream-service-time'] !== undefined, 'through Remora: x-envoy-upstream-service-time on the response');

    const lines = await logged('/x?id=out-1');
    t.equal(lines.length, 1, 'exactly one access log line: the proxy’s upstream connection did not come back to 15001');
    t.equal(lines[0]!.upstream_cluster, `outbound|${SERVICE_PORT}||${SERVICE_HOST}`);
    t.equal(lines[0]!.downstream_local_address, `${VIP}:${SERVICE_PORT}`, 'its original destination: the VIP the app dialled');
    t.equal(lines[0]!.upstream_host, `${pod.hostIp}:${upstreamPort}`);
    t.equal(seen.filter((e) => e.url === '/x?id=out-1').length, 1, 'the upstream saw the request once');

    const redirectAfter = await counter(pod, 'ISTIO_OUTPUT', (r) => r.target === 'ISTIO_REDIRECT' && r.rest === '');
    const proxyAfter = await counter(pod, 'ISTIO_OUTPUT', (r) => r.target === 'RETURN' && r.rest === 'owner UID match 1337');
    t.ok(redirectAfter > redirectBefore, `ISTIO_OUTPUT → ISTIO_REDIRECT counter went up (${redirectBefore} → ${redirectAfter})`);
    t.ok(proxyAfter > proxyBefore, `the proxy’s connection left through the UID 1337 RETURN rule (${proxyBefore} → ${proxyAfter})`);

    // The VIP as the Host (what a client sends when it calls the address itself).
    const byVip = await podCall(`http://${VIP}:${SERVICE_PORT}/vip?id=out-2`);
    t.equal(byVip.status, 200, `Host ${VIP}:${SERVICE_PORT} routes (${byVip.error ?? byVip.body})`);
    t.equal((JSON.parse(byVip.body!) as Echo).name, 'reviews');
    t.equal((await logged('/vip?id=out-2'))[0]?.upstream_cluster, `outbound|${SERVICE_PORT}||${SERVICE_HOST}`);

    // Any destination is captured, and the original destination decides, not the Host: a port
    // no service declares goes through PassthroughCluster (ALLOW_ANY) as bytes, to where the
    // app sent it.
    const before = accessLog().length;
    const direct = await podCall(`http://${pod.hostIp}:${upstreamPort}/any?id=out-3`, `${SERVICE_HOST}:${SERVICE_PORT}`);
    t.equal(direct.status, 200, `${direct.error ?? ''}`);
    t.notOk((JSON.parse(direct.body!) as Echo).headers['x-request-id'], 'passed through as TCP: no HTTP processing');
    await waitFor('the passthrough connection’s access log line', () => accessLog().slice(before).some((l) => l.upstream_cluster === 'PassthroughCluster'), 5_000);
    const passthrough = accessLog().slice(before).find((l) => l.upstream_cluster === 'PassthroughCluster')!;
    t.equal(passthrough.downstream_local_address, `${pod.hostIp}:${upstreamPort}`, 'to its original destination');
  });

  t.test('the app calling itself on its own pod IP is not captured (as in Istio)', async (t) => {
    const r = await podCall(`http://${pod.podIp}:${APP_PORT}/self?id=self-1`);
    t.equal(r.status, 200, r.error ?? '');
    const echo = JSON.parse(r.body!) as Echo;
    t.equal(echo.name, 'pod-app');
    t.equal(echo.remote, pod.podIp, 'the app sees itself, not Remora');
    t.ok(await notLogged('/self?id=self-1'), 'no access log line');
  });

  t.test('(d) excluded ports are reached directly', async (t) => {
    const before = await counter(pod, 'ISTIO_INBOUND', (r) => r.target === 'RETURN' && r.rest.includes('dpt:15021'));
    const health = await httpGet(pod.podIp, 15021, '/healthz/ready');
    t.equal(health.status, 200);
    t.equal(health.body, '', 'Remora’s health endpoint answered (the app would have answered JSON)');
    const after = await counter(pod, 'ISTIO_INBOUND', (r) => r.target === 'RETURN' && r.rest.includes('dpt:15021'));
    t.ok(after > before, `the 15021 RETURN rule counted it (${before} → ${after})`);
    const prom = await httpGet(pod.podIp, 15090, '/stats/prometheus');
    t.equal(prom.status, 200);
    t.match(prom.body, /istio_requests_total\{[^}]*reporter="destination"/, 'Prometheus scrape on 15090 shows the inbound request');
    t.ok(await notLogged('/healthz/ready'), 'nothing on the data path');
  });

  t.test('(f) running iptables.sh again leaves one copy of each rule', async (t) => {
    const again = await pod.exec(['sh', SCRIPT], { timeoutMs: 20_000 });
    t.equal(again.code, 0, again.stderr.trim().split('\n')[0] ?? '');
    const save = await natRules(pod);
    t.same(save, saveAfterFirst, 'the same rules as after the first run');
    const dupes = save.filter((l, i) => save.indexOf(l) !== i);
    t.same(dupes, [], 'no rule twice');
    t.equal(save.filter((l) => l.startsWith('-A PREROUTING') && l.endsWith('-j ISTIO_INBOUND')).length, 1, 'one PREROUTING jump');
    t.equal(save.filter((l) => l.startsWith('-A OUTPUT') && l.endsWith('-j ISTIO_OUTPUT')).length, 1, 'one OUTPUT jump');
    const r = await httpGet(pod.podIp, APP_PORT, '/again?id=in-2');
    t.equal((JSON.parse(r.body) as Echo).remote, '127.0.0.1', 'still captured');
    t.equal((await logged('/again?id=in-2')).length, 1);
  });

  t.test('(e) iptables.sh --clean removes the chains; traffic then bypasses Remora', async (t) => {
    const clean = await pod.exec(['sh', SCRIPT, '--clean'], { timeoutMs: 20_000 });
    t.equal(clean.code, 0, clean.stderr);
    const rules = await natRules(pod);
    t.same(rules.filter((l) => l.includes('ISTIO')), [], `no ISTIO_* chain or jump left (${rules.join('; ')})`);
    const twice = await pod.exec(['sh', SCRIPT, '--clean'], { timeoutMs: 20_000 });
    t.equal(twice.code, 0, 'cleaning again is fine');

    const r = await httpGet(pod.podIp, APP_PORT, '/direct?id=clean-1');
    const echo = JSON.parse(r.body) as Echo;
    t.equal(echo.name, 'pod-app');
    t.equal(echo.remote, pod.hostIp, 'the app’s peer is the caller itself');
    t.equal(echo.local, `${pod.podIp}:${APP_PORT}`);
    t.equal(echo.headers['x-request-id'], undefined, 'nothing added by a proxy');
    t.ok(await notLogged('/direct?id=clean-1'), 'no inbound access log line');

    const out = await podCall(`http://${pod.hostIp}:${upstreamPort}/direct?id=clean-2`, `${SERVICE_HOST}:${SERVICE_PORT}`);
    t.equal(out.status, 200, out.error ?? '');
    const up = JSON.parse(out.body!) as Echo;
    t.equal(up.headers['x-request-id'], undefined, 'the upstream got the app’s request as sent');
    t.ok(await notLogged('/direct?id=clean-2'), 'no outbound access log line');
  });

  t.test('Remora stops cleanly', async (t) => {
    await sidecar.stop(5_000);
    const exit = await sidecar.exited;
    t.equal(exit.code, 0, 'exit 0 on SIGTERM');
    t.notMatch(sidecar.stderr.join('\n'), /\]\[(error|critical)\]/, 'no error in Remora’s log');
  });
});

/** The nat table's rules (iptables-save without counters or comments). */
async function natRules(pod: PodNetns): Promise<string[]> {
  const out = await pod.execOk(['iptables-save', '-t', 'nat'], { timeoutMs: 10_000 });
  return out.split('\n').filter((l) => l.startsWith('-') || (l.startsWith(':') && l.includes('ISTIO'))).map((l) => l.replace(/ \[\d+:\d+\]$/, ''));
}

interface RuleCount {
  readonly pkts: number;
  readonly target: string;
  /** What `iptables -L -v -n` prints after the addresses (e.g. `tcp dpt:15021`, `owner UID match 1337`). */
  readonly rest: string;
}

/** Packet counters of a chain's rules (`iptables -t nat -L CHAIN -v -n -x`), summed over those `pick` selects. */
async function counter(pod: PodNetns, chain: string, pick: (r: RuleCount) => boolean): Promise<number> {
  const out = await pod.execOk(['iptables', '-t', 'nat', '-L', chain, '-v', '-n', '-x'], { timeoutMs: 10_000 });
  let sum = 0;
  for (const line of out.split('\n').slice(2)) {
    // pkts bytes target prot opt in out source destination [rest]
    const f = line.trim().split(/\s+/);
    if (f.length < 9) continue;
    const r: RuleCount = { pkts: Number(f[0]), target: f[2]!, rest: f.slice(9).join(' ') };
    if (pick(r)) sum += r.pkts;
  }
  return sum;
}
