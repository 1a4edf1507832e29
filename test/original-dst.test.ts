// The original destination of connections redirected by docker/iptables.sh, read back from
// the kernel's conntrack table, in a "pod" network namespace the test creates (see
// test/helpers/netns.ts). A listener process in the pod stands for the sidecar: it accepts
// on 15001 (outbound) and 15006 (inbound) and prints, for every connection, what
// ConntrackTable.lookup() answered.
import { connect, type Socket } from 'node:net';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { expandIPv6, tproxyOriginalDestination } from '@remora/proxy';
import { waitFor } from './helpers/net.ts';
import { netnsPrerequisites, PodNetns, run, type PodProcess } from './helpers/netns.ts';
import { FROM_SOURCE, REPO } from './helpers/remora.ts';

const SCRIPT = join(REPO, 'docker/iptables.sh');
const MODULE = join(REPO, FROM_SOURCE ? 'packages/proxy/src/listener/original-dst.ts' : 'packages/proxy/dist/listener/original-dst.js');
const NATIVE_MODULE = join(REPO, FROM_SOURCE ? 'packages/proxy/src/listener/original-dst-native.ts' : 'packages/proxy/dist/listener/original-dst-native.js');
/** Whether getsockopt(SO_ORIGINAL_DST)'s addon is built here (scripts/build-native.sh). */
const NATIVE_BUILT = existsSync(join(REPO, 'packages/proxy/native/original-dst.node'));
const VIP = '10.96.0.10';
const VIP6 = 'fd00:96::10';
const POD_IP6 = 'fd00:213::2';
const APP_USER = { uid: 1000, gid: 1000 };

// --- no privileges needed -------------------------------------------------------------------

t.test('IPv6 addresses in the table’s own form (%pI6: eight groups of four hex digits)', async (t) => {
  t.equal(expandIPv6('::1'), '0000:0000:0000:0000:0000:0000:0000:0001');
  t.equal(expandIPv6('fd00:96::10'), 'fd00:0096:0000:0000:0000:0000:0000:0010');
  t.equal(expandIPv6('FE80::1%eth0'), 'fe80:0000:0000:0000:0000:0000:0000:0001', 'zone dropped, lower case');
  t.equal(expandIPv6('::ffff:1.2.3.4'), '0000:0000:0000:0000:0000:ffff:0102:0304');
  t.equal(expandIPv6('1:2:3:4:5:6:7:8'), '0001:0002:0003:0004:0005:0006:0007:0008');
  t.equal(expandIPv6('1::2::3'), null);
  t.equal(expandIPv6('10.0.0.1'), null);
});

t.test('TPROXY: the original destination is the accepted socket’s local address', async (t) => {
  t.same(tproxyOriginalDestination({ localAddress: '::ffff:10.96.0.10', localPort: 9080 }), { address: '10.96.0.10', port: 9080, family: 'IPv4' });
  t.same(tproxyOriginalDestination({ localAddress: 'fd00::a', localPort: 80 }), { address: 'fd00::a', port: 80, family: 'IPv6' });
  t.equal(tproxyOriginalDestination({ localAddress: '10.0.0.2', localPort: 15006 }, 15006), null, 'a connection made to the listener port itself');
  t.equal(tproxyOriginalDestination({}), null, 'no address (socket already closed)');
});

// --- in a pod -------------------------------------------------------------------------------

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

/** The stand-in sidecar: listens on 15001 and 15006 and reports each lookup as a JSON line. */
const LISTENER_JS = `
import { createServer } from 'node:net';
import { ConntrackTable } from ${JSON.stringify(MODULE)};
import { loadNativeOriginalDst } from ${JSON.stringify(NATIVE_MODULE)};
const native = loadNativeOriginalDst();
const fdArg = process.argv.indexOf('--fd');
let table;
try {
  table = await ConntrackTable.open(fdArg > 0 ? { fd: Number(process.argv[fdArg + 1]) } : {});
} catch (err) {
  console.log(JSON.stringify({ openError: err.message, code: err.code }));
  process.exit(0);
}
const onConnection = (s) => {
  s.on('error', () => {});
  const seen = { local: s.localAddress, localPort: s.localPort, remote: s.remoteAddress, remotePort: s.remotePort, native: native === null ? 'not built' : native(s) };
  table.lookup(s).then(
    (orig) => console.log(JSON.stringify({ ...seen, orig })),
    (err) => console.log(JSON.stringify({ ...seen, error: err.message })),
  ).finally(() => s.destroy());
};
let listening = 0;
for (const port of [15001, 15006]) createServer(onConnection).listen(port, '::', () => { if (++listening === 2) console.log(JSON.stringify({ listening: true })); });
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
`;

/** A client in the pod: connects, prints its own port, waits for the peer to close. */
const CLIENT_JS = `
const s = require('node:net').connect(Number(process.argv[3]), process.argv[2]);
s.on('connect', () => console.log(JSON.stringify({ localPort: s.localPort })));
s.on('error', (e) => console.log(JSON.stringify({ error: e.code || e.message })));
s.on('close', () => process.exit(0));
s.resume();
setTimeout(() => process.exit(1), 5000);
`;

interface Report {
  readonly local: string;
  readonly localPort: number;
  readonly remote: string;
  readonly remotePort: number;
  readonly orig?: { address: string; port: number; family: string } | null;
  readonly error?: string;
  /** What getsockopt(SO_ORIGINAL_DST) said for the same socket ('not built' without the addon). */
  readonly native?: { address: string; port: number; family: string } | null | 'not built';
}

t.test('the original destination of redirected connections, from conntrack', { skip }, async (t) => {
  const pod = maybePod!;
  const dir = mkdtempSync(join(tmpdir(), 'remora-origdst-'));
  chmodSync(dir, 0o755);
  const listenerJs = join(dir, 'listener.mjs');
  const clientJs = join(dir, 'client.cjs');
  writeFileSync(listenerJs, LISTENER_JS, { mode: 0o644 });
  writeFileSync(clientJs, CLIENT_JS, { mode: 0o644 });
  const started: PodProcess[] = [];
  t.teardown(async () => {
    for (const p of started) await p.stop();
    await pod.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  await pod.wire(['10.96.0.0/16']);
  const capture = await pod.exec(['sh', SCRIPT, '-p', '15001', '-z', '15006', '-u', '1337', '-g', '1337', '-m', 'REDIRECT', '-i', '*', '-b', '*'], { timeoutMs: 20_000 });
  t.equal(capture.code, 0, `iptables.sh applies (${capture.stderr.trim().split('\n')[0]})`);

  /** Starts the listener in the pod and waits until it listens (or says it cannot open the table). */
  const startListener = async (command: string[], opts: { user?: { uid: number; gid: number } } = {}): Promise<PodProcess> => {
    const p = pod.spawn(command, { ...opts, cwd: REPO });
    started.push(p);
    await waitFor('listener up', () => p.stdout.some((l) => l.includes('"listening"') || l.includes('"openError"')), 10_000, { output: p.stderr });
    return p;
  };
  const reports = (p: PodProcess): Report[] => p.stdout.filter((l) => l.includes('"remotePort"')).map((l) => JSON.parse(l) as Report);
  const reportFor = async (p: PodProcess, remotePort: number): Promise<Report> => {
    await waitFor(`a report for peer port ${remotePort}`, () => reports(p).some((r) => r.remotePort === remotePort), 5_000, { output: p.stdout, outputName: 'stdout' });
    return reports(p).find((r) => r.remotePort === remotePort)!;
  };
  /** The app (UID 1000) connects from inside the pod; resolves with its local port. */
  const podConnect = async (host: string, port: number): Promise<number> => {
    const out = await pod.execOk([process.execPath, clientJs, host, String(port)], { user: APP_USER, timeoutMs: 10_000 });
    const line = JSON.parse(out.trim().split('\n')[0]!) as { localPort?: number; error?: string };
    if (line.localPort === undefined) throw new Error(`connect ${host}:${port}: ${line.error}`);
    return line.localPort;
  };

  const listener = await startListener([process.execPath, listenerJs]);

  t.test('outbound: the app’s connection to a service VIP, redirected to 15001', async (t) => {
    const port = await podConnect(VIP, 9080);
    const r = await reportFor(listener, port);
    t.equal(r.localPort, 15001, 'accepted on the outbound capture port');
    t.same(r.orig, { address: VIP, port: 9080, family: 'IPv4' }, `original destination ${VIP}:9080`);
    if (NATIVE_BUILT) t.same(r.native, r.orig, 'getsockopt(SO_ORIGINAL_DST) says the same');
  });

  t.test('inbound: a connection to the pod’s port 8080, redirected to 15006', async (t) => {
    const s = await new Promise<Socket>((resolve, reject) => {
      const c = connect(8080, pod.podIp, () => resolve(c));
      c.on('error', reject);
    });
    const r = await reportFor(listener, s.localPort!);
    s.destroy();
    t.equal(r.localPort, 15006, 'accepted on the inbound capture port');
    t.same(r.orig, { address: pod.podIp, port: 8080, family: 'IPv4' }, `original destination ${pod.podIp}:8080`);
    if (NATIVE_BUILT) t.same(r.native, r.orig, 'getsockopt(SO_ORIGINAL_DST) says the same');
  });

  t.test('not redirected: a direct connection to the listener is null', async (t) => {
    const port = await podConnect('127.0.0.1', 15001);
    const r = await reportFor(listener, port);
    t.equal(r.error, undefined);
    t.equal(r.orig, null, 'no NAT in its conntrack entry');
    if (NATIVE_BUILT) t.equal(r.native, null, 'getsockopt(SO_ORIGINAL_DST): not redirected either');
  });

  t.test('a burst of connections shares reads of the table and every one gets its own answer', async (t) => {
    const clients = await Promise.all(Array.from({ length: 20 }, () => podConnect(VIP, 9080)));
    for (const port of clients) t.same((await reportFor(listener, port)).orig, { address: VIP, port: 9080, family: 'IPv4' });
  });

  const v6 = await run('ip6tables', ['--version']);
  t.test('IPv6: an ip6tables REDIRECT to 15001', { skip: v6.code === 0 ? false : 'ip6tables is not installed' }, async (t) => {
    await pod.execOk(['ip', 'addr', 'add', `${POD_IP6}/64`, 'dev', pod.podIf, 'nodad'], { timeoutMs: 5_000 });
    await pod.execOk(['ip', 'route', 'add', 'fd00:96::/64', 'dev', pod.podIf], { timeoutMs: 5_000 });
    await pod.execOk(['ip6tables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', VIP6, '-j', 'REDIRECT', '--to-ports', '15001'], { timeoutMs: 5_000 });
    const port = await podConnect(VIP6, 9080);
    const r = await reportFor(listener, port);
    t.equal(r.local, '::1', 'REDIRECT of a local IPv6 connection goes to ::1');
    t.same(r.orig, { address: VIP6, port: 9080, family: 'IPv6' }, `original destination [${VIP6}]:9080`);
    if (NATIVE_BUILT) t.same(r.native, r.orig, 'getsockopt(IP6T_SO_ORIGINAL_DST) says the same');
  });

  t.test('as UID 1337: the table is root-only; a descriptor opened as root and inherited works', async (t) => {
    await listener.stop();
    const denied = await startListener([process.execPath, listenerJs], { user: { uid: 1337, gid: 1337 } });
    const line = JSON.parse(denied.stdout.find((l) => l.includes('openError'))!) as { openError: string; code: string };
    t.equal(line.code, 'CONNTRACK_UNAVAILABLE');
    t.match(line.openError, /\/proc\/net\/nf_conntrack: permission denied: .*pass the descriptor/, 'says why and what to do');
    await denied.stop();

    // Root opens the table as fd 3, then drops to 1337 and runs the listener, as a pod's
    // entrypoint would.
    const inherited = await startListener([
      'sh', '-c', 'exec 3</proc/net/nf_conntrack && exec setpriv --reuid=1337 --regid=1337 --clear-groups -- "$@"', 'sh',
      process.execPath, listenerJs, '--fd', '3',
    ]);
    t.notOk(inherited.stdout.some((l) => l.includes('openError')), `opened (${inherited.stdout.join(' ')})`);
    const port = await podConnect(VIP, 9080);
    t.same((await reportFor(inherited, port)).orig, { address: VIP, port: 9080, family: 'IPv4' });
  });

  t.test('iptables.sh with Istio’s flags, for real: the chains in iptables-save, validation, TPROXY, --clean', async (t) => {
    const save = async (table: string): Promise<string[]> =>
      (await pod.execOk(['iptables-save', '-t', table], { timeoutMs: 10_000 })).split('\n').filter((l) => /^[-:]/.test(l)).map((l) => l.replace(/ \[\d+:\d+\]$/, ''));
    const nat = await save('nat');
    for (const chain of ['ISTIO_INBOUND', 'ISTIO_IN_REDIRECT', 'ISTIO_OUTPUT', 'ISTIO_REDIRECT']) t.ok(nat.includes(`:${chain} - [0:0]`) || nat.some((l) => l.startsWith(`:${chain} `)), `nat chain ${chain}`);
    // The rules of ISTIO_OUTPUT, in order, as the dry run (= istio-iptables) has them.
    const flags = ['-p', '15001', '-z', '15006', '-u', '1337', '-g', '1337', '-m', 'REDIRECT', '-i', '*', '-b', '*'];
    const dry = await run('sh', [SCRIPT, '--dry-run', ...flags], { timeoutMs: 10_000 });
    const planned = dry.stdout.split('\n').filter((l) => l.startsWith('iptables -t nat -A ISTIO_OUTPUT ')).map((l) => l.slice('iptables -t nat '.length));
    // iptables-save prints the matches in its own order and adds `-m tcp`: compare each
    // rule's words as a multiset.
    const words = (rule: string): string => rule.replace(/ -m (tcp|udp)(?= )/g, '').split(' ').sort().join(' ');
    t.same(nat.filter((l) => l.startsWith('-A ISTIO_OUTPUT ')).map(words), planned.map(words), 'ISTIO_OUTPUT in iptables-save is the dry run’s, in order');
    t.ok(nat.includes('-A OUTPUT -j ISTIO_OUTPUT'), 'OUTPUT jumps to ISTIO_OUTPUT');
    t.ok(nat.includes('-A PREROUTING -p tcp -j ISTIO_INBOUND'), 'PREROUTING jumps to ISTIO_INBOUND');

    const validated = await pod.exec(['sh', SCRIPT, ...flags, '--run-validation', '--log_output_level=default:info'], { timeoutMs: 20_000 });
    t.equal(validated.code, 0, validated.stderr.split('\n').slice(-3).join(' '));
    t.match(validated.stderr, /validation passed/);

    const tproxy = await pod.exec(['sh', SCRIPT, '-m', 'TPROXY', '-b', '8080', '--log_output_level=none'], { timeoutMs: 20_000 });
    t.equal(tproxy.code, 0, tproxy.stderr);
    const mangle = await save('mangle');
    t.ok(mangle.includes('-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --on-port 15006 --on-ip 0.0.0.0 --tproxy-mark 0x539/0xffffffff'), `mangle ISTIO_TPROXY (${mangle.join('; ')})`);
    t.ok(mangle.includes('-A PREROUTING -p tcp -j ISTIO_INBOUND'), 'mangle PREROUTING jumps to ISTIO_INBOUND');
    t.notOk((await save('nat')).includes('-A PREROUTING -p tcp -j ISTIO_INBOUND'), 'no NAT of inbound in TPROXY mode');
    t.match(await pod.execOk(['ip', 'rule'], { timeoutMs: 5_000 }), /fwmark 0x539 lookup 133/, 'policy route for the mark');

    const clean = await pod.exec(['sh', SCRIPT, '--clean', '-m', 'TPROXY', '-b', '8080'], { timeoutMs: 20_000 });
    t.equal(clean.code, 0, clean.stderr);
    for (const table of ['nat', 'mangle', 'raw']) t.same((await save(table)).filter((l) => l.includes('ISTIO') || l.includes('0x539') || l.includes('0x53a')), [], `${table}: nothing left`);
    t.notMatch(await pod.execOk(['ip', 'rule'], { timeoutMs: 5_000 }), /lookup 133/, 'policy route removed');
  });
});
