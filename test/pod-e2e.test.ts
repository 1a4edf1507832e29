// A sidecar in a captured pod, end to end, as a user of Istio runs one: Istio resources in
// files, `remora sidecar` as UID 1337 with the conntrack table opened by root (what the image's
// entrypoint does), docker/iptables.sh with DNS capture, and unmodified clients in the pod
// (curl, redis-cli, openssl s_client, nc) calling real servers outside it (redis-server, a TLS
// server, a server that speaks first). The sidecar routes each connection by its original
// destination through istiod's listener model (virtualOutbound hands over to `0.0.0.0_9080`,
// `10.96.0.11_6379`, `0.0.0.0_443` by SNI; PassthroughCluster / BlackHoleCluster for the rest;
// virtualInbound by destination port).
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createTcpServer, connect, type Server as TcpServer } from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { chmodSync, existsSync, readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { TestDnsServer } from '../packages/proxy/test/helpers/dns-server.ts';
import { freePorts, sleep, waitFor } from './helpers/net.ts';
import { netnsPrerequisites, PodNetns, run, type PodProcess, type RunResult } from './helpers/netns.ts';
import { opensslAsync } from './helpers/openssl.ts';
import { CLI, MeshDir, REPO } from './helpers/remora.ts';

const SCRIPT = join(REPO, 'docker/iptables.sh');
const APP_USER = { uid: 1000, gid: 1000 };
const REVIEWS_VIP = '10.96.0.10';
const REDIS_VIP = '10.96.0.11';
const GREETER_VIP = '10.96.0.12';
/** Somewhere on the internet, as far as the pod knows: routed out of the pod, captured. */
const EXTERNAL_IP = '203.0.113.7';
const APP_PORTS = [8080, 8081] as const;
/** An app port no service declares: InboundPassthroughCluster. */
const UNDECLARED_PORT = 8082;

async function preparePod(): Promise<{ skip: string | false; pod: PodNetns | null }> {
  const missing = await netnsPrerequisites(['iptables']);
  if (missing) return { skip: missing, pod: null };
  for (const tool of ['curl', 'redis-server', 'redis-cli', 'openssl', 'nc', 'unshare', 'setpriv']) {
    if ((await run('sh', ['-c', `command -v ${tool}`], { timeoutMs: 5_000 })).code !== 0) return { skip: `${tool} is not installed`, pod: null };
  }
  let pod: PodNetns;
  try {
    pod = await PodNetns.create();
  } catch (err) {
    return { skip: `cannot create a network namespace: ${(err as Error).message}`, pod: null };
  }
  const ct = await pod.exec(['sh', '-c', 'test -r /proc/net/nf_conntrack'], { timeoutMs: 5_000 });
  if (ct.code !== 0) {
    await pod.destroy();
    return { skip: 'no /proc/net/nf_conntrack (conntrack not loaded or CONFIG_NF_CONNTRACK_PROCFS off)', pod: null };
  }
  return { skip: false, pod };
}

const { skip, pod: maybePod } = await preparePod();

/** One line of Remora's JSON access log (the fields read here). */
interface AccessLine {
  readonly path: string | null;
  readonly response_code: number;
  readonly response_flags: string;
  readonly upstream_cluster: string | null;
  readonly upstream_host: string | null;
  readonly downstream_local_address: string;
  readonly requested_server_name: string | null;
  readonly bytes_sent: number;
}

// The app: one HTTP server per port, answering with the port and its peer's address.
const APP_JS = `
const { createServer } = require('node:http');
for (const port of ${JSON.stringify([...APP_PORTS, UNDECLARED_PORT])}) {
  createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ app: port, url: req.url, remote: req.socket.remoteAddress, requestId: req.headers['x-request-id'] ?? null }));
  }).listen(port, '0.0.0.0', () => console.log('app listening on ' + port));
}
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
`;

t.test('a captured pod: outbound by original destination (HTTP, TCP, TLS by SNI, passthrough), DNS capture, inbound by port', { skip }, async (t) => {
  const pod = maybePod!;
  const mesh = new MeshDir();
  const servers: Array<HttpServer | TcpServer | TlsServer> = [];
  const children: ChildProcess[] = [];
  let dns: TestDnsServer | null = null;
  let app: PodProcess | null = null;
  let sidecar: PodProcess | null = null;
  t.teardown(async () => {
    await sidecar?.stop();
    await app?.stop();
    await pod.destroy();
    for (const c of children) c.kill('SIGKILL');
    for (const s of servers) {
      if ('closeAllConnections' in s) s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
    await dns?.close();
    mesh.cleanup();
  });
  await pod.wire(['10.96.0.0/16', `${EXTERNAL_IP}/32`]);
  const host = pod.hostIp;

  // --- the world outside the pod -------------------------------------------------------------
  const listen = async <S extends HttpServer | TcpServer | TlsServer>(s: S): Promise<number> => {
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, host, r));
    return (s.address() as AddressInfo).port;
  };
  const reviewsSeen: string[] = [];
  const reviewsPort = await listen(
    createHttpServer((req, res) => {
      reviewsSeen.push(req.url ?? '');
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(`reviews saw ${req.url} for ${req.headers.host}`);
    }),
  );
  // Not in the registry: reached only through PassthroughCluster.
  const outsiderPort = await listen(
    createHttpServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(`outsider saw ${req.url}`);
    }),
  );
  // A server-first protocol: it greets before the client says anything (SMTP-like).
  const greeterPort = await listen(
    createTcpServer((s) => {
      s.on('error', () => {});
      s.write('220 greeter ready\r\n');
      s.on('data', (d: Buffer) => {
        if (d.toString().startsWith('QUIT')) s.end('221 bye\r\n');
      });
    }),
  );
  // An external TLS API, and the SNI it saw per connection.
  const keyFile = join(mesh.dir, 'api.key');
  const certFile = join(mesh.dir, 'api.crt');
  const gen = await opensslAsync(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-out', certFile, '-subj', '/CN=api.external.test', '-days', '1', '-addext', 'subjectAltName=DNS:api.external.test']);
  t.equal(gen.code, 0, gen.out);
  const tlsSni: string[] = [];
  const tlsPort = await listen(
    createTlsServer({ key: readFileSync(keyFile), cert: readFileSync(certFile) }, (s) => {
      tlsSni.push((s as unknown as { servername: string | false }).servername || '');
      s.on('error', () => {});
      s.end('hello over tls\n');
    }),
  );
  const [redisPort] = await freePorts(1);
  const redis = spawn('redis-server', ['--port', String(redisPort), '--bind', host, '--save', '', '--appendonly', 'no', '--protected-mode', 'no'], { stdio: 'ignore' });
  children.push(redis);
  await waitFor('redis-server up', () => new Promise<boolean>((resolve) => {
    const c = connect(redisPort!, host);
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  }), 10_000);
  // The pod's resolver (kube-dns in a cluster): knows only an external name.
  dns = await TestDnsServer.start(host, { records: { 'outsider.example/A': [{ name: 'outsider.example', type: 'A', class: 'IN', ttl: 60, data: host }] } }, 53);

  // --- the mesh, as Istio resources ------------------------------------------------------------
  const serviceEntry = (name: string, vip: string, port: number, protocol: string, target: number): string => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ${name}, namespace: default }
spec:
  hosts: [${name}.default.svc.cluster.local]
  addresses: [${vip}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - { number: ${port}, name: ${protocol.toLowerCase()}, protocol: ${protocol} }
  endpoints:
  - { address: ${host}, ports: { ${protocol.toLowerCase()}: ${target} } }
---
`;
  mesh.write(
    'mesh.yaml',
    serviceEntry('reviews', REVIEWS_VIP, 9080, 'HTTP', reviewsPort) +
      serviceEntry('redis', REDIS_VIP, 6379, 'REDIS', redisPort!) +
      serviceEntry('greeter', GREETER_VIP, 2525, 'TCP', greeterPort) +
      `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: external-api, namespace: default }
spec:
  hosts: [api.external.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - { number: 443, name: tls, protocol: TLS }
  endpoints:
  - { address: ${host}, ports: { tls: ${tlsPort} } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: productpage, namespace: default }
spec:
  hosts: [productpage.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector: { labels: { app: productpage } }
  ports:
  - { number: 9080, name: http, protocol: HTTP, targetPort: ${APP_PORTS[0]} }
  - { number: 9081, name: http-admin, protocol: HTTP, targetPort: ${APP_PORTS[1]} }
`,
  );
  const resolvConf = mesh.write('resolv.conf', `nameserver ${host}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n`);
  const appJs = mesh.write('app.cjs', APP_JS);
  chmodSync(mesh.dir, 0o755);
  for (const f of ['mesh.yaml', 'resolv.conf', 'app.cjs', 'api.crt']) chmodSync(join(mesh.dir, f), 0o644);

  // --- the pod: init container's rules, the app, the sidecar -----------------------------------
  const rules = await pod.exec(['sh', SCRIPT, '--redirect-dns'], { timeoutMs: 20_000, env: { ...process.env, RESOLV_CONF: resolvConf } });
  t.equal(rules.code, 0, `iptables.sh --redirect-dns applies (${rules.stderr.trim().split('\n')[0]})`);
  app = pod.spawn([process.execPath, appJs], { user: APP_USER });
  const appProc = app;
  await waitFor('the app listens', () => appProc.stdout.filter((l) => l.includes('app listening')).length === 3, 10_000, { output: appProc.stderr });
  sidecar = pod.spawn(
    [
      'sh', '-c', 'exec 3</proc/net/nf_conntrack && exec setpriv --reuid=1337 --regid=1337 --clear-groups -- "$@"', 'sh',
      process.execPath, CLI, 'sidecar', '-c', mesh.dir, '--conntrack-fd', '3', '--dns-capture', '--resolv-conf', resolvConf,
      '--labels', 'app=productpage,version=v1', '--bind', '0.0.0.0', '--access-log-format', 'json', '--drain-time', '1s',
    ],
    { cwd: REPO },
  );
  const proxy = sidecar;
  await waitFor(
    `Remora ready (stderr: ${proxy.stderr.join('\n')})`,
    async () => {
      if (proxy.child.exitCode !== null) throw new Error(`remora exited: ${proxy.stderr.join('\n')}`);
      const r = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', `http://${pod.podIp}:15021/healthz/ready`], { timeoutMs: 5_000 });
      return r.stdout === '200';
    },
    30_000,
  );

  const accessLog = (): AccessLine[] => proxy.stdout.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as AccessLine);
  /** The access log lines that appeared while `f` ran (and a moment after, for the flush). */
  const logOf = async <T>(f: () => Promise<T>): Promise<{ result: T; lines: AccessLine[] }> => {
    const before = accessLog().length;
    const result = await f();
    await sleep(400);
    return { result, lines: accessLog().slice(before) };
  };
  /** A command in the pod as the app's user, with the pod's resolv.conf (its DNS is captured). */
  const inPod = (argv: readonly string[], input?: string): Promise<RunResult> =>
    pod.exec(
      ['unshare', '--mount', 'sh', '-c', 'mount --bind "$0" /etc/resolv.conf && exec setpriv --reuid=1000 --regid=1000 --clear-groups -- "$@"', resolvConf, ...(input === undefined ? argv : ['sh', '-c', `printf '${input}' | "$@"`, 'sh', ...argv])],
      { timeoutMs: 20_000 },
    );

  await t.test('outbound HTTP: curl http://reviews:9080 resolves through the DNS proxy and is routed by the 9080 listener', async (t) => {
    const { result, lines } = await logOf(() => inPod(['curl', '-sS', '--max-time', '10', 'http://reviews:9080/r?id=1']));
    t.equal(result.code, 0, result.stderr);
    t.equal(result.stdout, 'reviews saw /r?id=1 for reviews:9080');
    t.equal(lines.length, 1, 'one access log line: the sidecar’s own upstream connection was not captured again');
    t.equal(lines[0]?.upstream_cluster, 'outbound|9080||reviews.default.svc.cluster.local');
    t.equal(lines[0]?.downstream_local_address, `${REVIEWS_VIP}:9080`, 'the original destination: the VIP the name resolved to');
    t.same(reviewsSeen.filter((u) => u === '/r?id=1'), ['/r?id=1'], 'the upstream saw it once');
  });

  await t.test('opaque TCP: redis-cli to the Redis VIP reaches redis-server through outbound|6379', async (t) => {
    const { result, lines } = await logOf(() => inPod(['redis-cli', '-h', 'redis.default.svc.cluster.local', '-p', '6379', 'PING']));
    t.equal(result.code, 0, result.stderr);
    t.equal(result.stdout.trim(), 'PONG');
    t.equal(lines.at(-1)?.upstream_cluster, 'outbound|6379||redis.default.svc.cluster.local');
  });

  await t.test('server-first TCP: nc hears the greeter’s banner through outbound|2525', async (t) => {
    const { result, lines } = await logOf(() => inPod(['nc', '-q', '2', '-w', '5', GREETER_VIP, '2525'], 'QUIT\\r\\n'));
    t.match(result.stdout, /^220 greeter ready\r?\n221 bye/, `banner and reply (${result.stderr})`);
    t.equal(lines.at(-1)?.upstream_cluster, 'outbound|2525||greeter.default.svc.cluster.local');
    t.equal(lines.at(-1)?.bytes_sent, '220 greeter ready\r\n221 bye\r\n'.length, 'the bytes the server sent after the client’s half-close were counted and delivered');
  });

  await t.test('TLS by SNI: openssl s_client to api.external.test:443 is passed through, untouched, to its endpoint', async (t) => {
    const { result, lines } = await logOf(() =>
      inPod(['openssl', 's_client', '-connect', `${EXTERNAL_IP}:443`, '-servername', 'api.external.test', '-verify_return_error', '-CAfile', certFile, '-ign_eof'], ''),
    );
    t.match(result.stdout, /hello over tls/, `the server’s bytes came back (${result.stderr.split('\n').slice(-3).join(' ')})`);
    t.match(result.stdout, /Verify return code: 0 \(ok\)/, 'the client verified the server’s own certificate: TLS was not terminated');
    t.equal(tlsSni.at(-1), 'api.external.test');
    t.equal(lines.at(-1)?.upstream_cluster, 'outbound|443||api.external.test');
    t.equal(lines.at(-1)?.requested_server_name, 'api.external.test');
  });

  await t.test('ALLOW_ANY: an unregistered destination goes through PassthroughCluster', async (t) => {
    const { result, lines } = await logOf(() => inPod(['curl', '-sS', '--max-time', '10', `http://outsider.example:${outsiderPort}/o`]));
    t.equal(result.code, 0, result.stderr);
    t.equal(result.stdout, 'outsider saw /o', 'the external name resolved through the forwarder, and the request went where the app sent it');
    t.equal(lines.at(-1)?.upstream_cluster, 'PassthroughCluster');
    t.equal(lines.at(-1)?.downstream_local_address, `${host}:${outsiderPort}`);
    // TLS to an unregistered address: passed through as well.
    const tls = await inPod(['openssl', 's_client', '-connect', `${host}:${tlsPort}`, '-servername', 'other.example', '-ign_eof'], '');
    t.match(tls.stdout, /hello over tls/, 'unregistered TLS passes through');
  });

  await t.test('inbound: two app ports by destination port, an undeclared one through InboundPassthroughCluster from 127.0.0.6', async (t) => {
    for (const port of APP_PORTS) {
      const { result, lines } = await logOf(() => run('curl', ['-sS', '--max-time', '10', `http://${pod.podIp}:${port}/in`], { timeoutMs: 15_000 }));
      t.equal(result.code, 0, result.stderr);
      const seen = JSON.parse(result.stdout) as { app: number; remote: string; requestId: string | null };
      t.equal(seen.app, port, `the app on ${port} answered`);
      t.ok(seen.requestId, 'through the sidecar’s HTTP inbound (x-request-id added)');
      t.equal(lines.at(-1)?.upstream_cluster, `inbound|${port}||`);
      t.equal(lines.at(-1)?.downstream_local_address, `${pod.podIp}:${port}`);
    }
    const { result, lines } = await logOf(() => run('curl', ['-sS', '--max-time', '10', `http://${pod.podIp}:${UNDECLARED_PORT}/in`], { timeoutMs: 15_000 }));
    t.equal(result.code, 0, result.stderr);
    const seen = JSON.parse(result.stdout) as { app: number; remote: string; requestId: string | null };
    t.equal(seen.app, UNDECLARED_PORT);
    t.equal(seen.remote, '127.0.0.6', 'InboundPassthroughCluster connects from 127.0.0.6');
    t.equal(seen.requestId, null, 'passed through as TCP');
    t.equal(lines.at(-1)?.upstream_cluster, 'InboundPassthroughCluster');
  });

  await t.test('REGISTRY_ONLY: the same unregistered destination is refused, registered services still work', async (t) => {
    mesh.write('sidecar.yaml', `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: default, namespace: default }
spec:
  outboundTrafficPolicy: { mode: REGISTRY_ONLY }
`);
    chmodSync(join(mesh.dir, 'sidecar.yaml'), 0o644);
    await waitFor('the Sidecar resource applied', async () => {
      const r = await inPod(['curl', '-sS', '--max-time', '5', `http://${host}:${outsiderPort}/blocked`]);
      return r.code !== 0;
    }, 20_000);
    const { result, lines } = await logOf(() => inPod(['curl', '-sS', '--max-time', '5', `http://${host}:${outsiderPort}/blocked-2`]));
    t.not(result.code, 0, 'curl fails: the connection is closed');
    t.equal(lines.at(-1)?.upstream_cluster, 'BlackHoleCluster');
    const ok = await inPod(['curl', '-sS', '--max-time', '10', 'http://reviews:9080/still']);
    t.equal(ok.stdout, 'reviews saw /still for reviews:9080');
  });

  // getsockopt(SO_ORIGINAL_DST) where the addon is built (scripts/build-native.sh), else the
  // conntrack table through the descriptor (opened on the first redirected connection).
  const lookup = existsSync(join(REPO, 'packages/proxy/native/original-dst.node')) ? 'by getsockopt(SO_ORIGINAL_DST)' : 'from conntrack (descriptor 3)';
  t.match(proxy.stderr.join('\n'), `interception mode REDIRECT: original destinations ${lookup}`, `original destinations ${lookup}`);
});
