// DNS capture (ISTIO_META_DNS_CAPTURE): `remora sidecar --dns-capture` runs the DNS proxy
// with each applied config's name table. In-process first (flags, the start log line, the
// table swapped on a new config, bind errors), then in a network namespace with the real
// iptables rules of docker/iptables.sh --redirect-dns: an unmodified client in the pod
// (glibc's `getent hosts`, through the pod's resolv.conf and search path) resolves a mesh
// name through the captured DNS and an external name through the forwarder to the pod's
// resolver outside the pod.
import { mkdtempSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { Resolver } from 'node:dns/promises';
import { createSocket } from 'node:dgram';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { NameTableEntry, ProxyConfig } from '@remora/config';
import { parseOptions, ProxyProcess, StartError, UsageError, type ProxyOptions } from '@remora/proxy';
import { TestDnsServer } from '../packages/proxy/test/helpers/dns-server.ts';
import { freePorts, waitFor } from './helpers/net.ts';
import { netnsPrerequisites, PodNetns, POD_ENV, run, type PodProcess } from './helpers/netns.ts';
import { PROXY_MAIN, REPO } from './helpers/remora.ts';

const SCRIPT = join(REPO, 'docker/iptables.sh');
const REVIEWS: NameTableEntry = { host: 'reviews.default.svc.cluster.local', addresses: ['10.96.0.10'], shortName: 'reviews', namespace: 'default' };

/** A config with only a name table: what the DNS proxy reads of an applied config. */
function configWith(version: string, node: ProxyOptions['node'], nameTable: readonly NameTableEntry[]): ProxyConfig {
  return { version, node, listeners: [], routeConfigs: [], clusters: [], nameTable };
}

/** A config source the test feeds by hand: the first config, then `push` for each update. */
class HandSource {
  lastError: string | null = null;
  #apply: ((u: { config: ProxyConfig; timings: null }) => Promise<string | null>) | null = null;
  readonly firstConfig: ProxyConfig;
  constructor(firstConfig: ProxyConfig) {
    this.firstConfig = firstConfig;
  }
  async first(): Promise<{ config: ProxyConfig; timings: null }> {
    return { config: this.firstConfig, timings: null };
  }
  watch(apply: (u: { config: ProxyConfig; timings: null }) => Promise<string | null>): void {
    this.#apply = apply;
  }
  push(config: ProxyConfig): Promise<string | null> {
    return this.#apply!({ config, timings: null });
  }
  close(): void {}
}

t.test('--dns-capture and ISTIO_META_DNS_CAPTURE: options and their errors', async (t) => {
  const base = ['-c', '/dev/null'];
  const on = parseOptions('sidecar', [...base, '--dns-capture'], {}) as ProxyOptions;
  t.same(on.dns, { address: '127.0.0.1', port: 15053, resolvConf: '/etc/resolv.conf' }, 'Istio’s address by default');
  t.equal((parseOptions('sidecar', base, {}) as ProxyOptions).dns, undefined, 'off by default');
  t.same((parseOptions('sidecar', base, { ISTIO_META_DNS_CAPTURE: 'true' }) as ProxyOptions).dns?.port, 15053, 'Istio’s env turns it on');
  t.equal((parseOptions('sidecar', base, { ISTIO_META_DNS_CAPTURE: 'false' }) as ProxyOptions).dns, undefined);
  t.same((parseOptions('sidecar', [...base, '--dns-capture', '--dns-address', '[::1]:5353', '--resolv-conf', '/tmp/r'], {}) as ProxyOptions).dns, { address: '::1', port: 5353, resolvConf: '/tmp/r' });
  t.throws(() => parseOptions('sidecar', [...base, '--dns-capture', '--dns-address', 'localhost:53'], {}), new UsageError('--dns-address must be IP:PORT or [IPv6]:PORT, got "localhost:53"'));
  t.throws(() => parseOptions('sidecar', [...base, '--dns-capture', '--dns-address', '127.0.0.1:0'], {}), new UsageError('--dns-address must be IP:PORT or [IPv6]:PORT, got "127.0.0.1:0"'));
  t.throws(() => parseOptions('sidecar', [...base, '--dns-address', '127.0.0.1:5353'], {}), new UsageError('--dns-address and --resolv-conf configure the DNS proxy: add --dns-capture'));
});

t.test('the sidecar’s DNS proxy answers from each applied config’s name table', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'remora-dns-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const resolvConf = join(dir, 'resolv.conf');
  writeFileSync(resolvConf, 'search default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n');
  const [admin, health, outbound, inbound, dnsPort] = await freePorts(5);
  const args = ['-c', dir, '--admin-port', String(admin), '--health-port', String(health), '--prometheus-port', '0', '--outbound-port', String(outbound), '--inbound-port', String(inbound), '--bind', '127.0.0.1'];
  const opts = parseOptions('sidecar', [...args, '--dns-capture', '--dns-address', `127.0.0.1:${dnsPort}`, '--resolv-conf', resolvConf], {}) as ProxyOptions;
  const log: string[] = [];
  const source = new HandSource(configWith('v1', opts.node, [REVIEWS]));
  const proxy = await ProxyProcess.create(opts, () => undefined, { accessLog: () => undefined, log: (l) => log.push(l.trimEnd()) }, () => source);
  await proxy.start();
  t.teardown(() => proxy.stop(0, 0));
  t.ok(
    log.some((l) => l.includes(`[info][dns] DNS proxy on 127.0.0.1:${dnsPort} (udp, tcp): 1 mesh hosts answered locally; forwarding to no resolver`)),
    `the start is logged (${log.filter((l) => l.includes('[dns]')).join(' | ')})`,
  );
  const resolver = new Resolver({ timeout: 2_000, tries: 1 });
  resolver.setServers([`127.0.0.1:${dnsPort}`]);
  t.same(await resolver.resolve4('reviews'), ['10.96.0.10']);
  t.same(await resolver.resolve4('reviews.default.default.svc.cluster.local'), ['10.96.0.10'], 'the search path from --resolv-conf');
  t.equal(await source.push(configWith('v2', opts.node, [{ ...REVIEWS, addresses: ['10.96.0.20'] }])), null, 'a new config applies');
  t.same(await resolver.resolve4('reviews'), ['10.96.0.20'], 'with its name table');
  await t.rejects(resolver.resolve4('www.example.org'), { code: 'ESERVFAIL' }, 'no resolver in the file: SERVFAIL');

  // A second proxy on the same DNS address cannot start, and says why.
  const [admin2, health2, outbound2, inbound2] = await freePorts(4);
  const args2 = ['-c', dir, '--admin-port', String(admin2), '--health-port', String(health2), '--prometheus-port', '0', '--outbound-port', String(outbound2), '--inbound-port', String(inbound2), '--bind', '127.0.0.1'];
  const opts2 = parseOptions('sidecar', [...args2, '--dns-capture', '--dns-address', `127.0.0.1:${dnsPort}`, '--resolv-conf', resolvConf], {}) as ProxyOptions;
  const second = await ProxyProcess.create(opts2, () => undefined, { accessLog: () => undefined, log: () => undefined }, () => new HandSource(configWith('v1', opts2.node, [])));
  await t.rejects(second.start(), new StartError(`DNS proxy cannot listen on udp 127.0.0.1:${dnsPort}: bind EADDRINUSE 127.0.0.1:${dnsPort}`));
  const missing = parseOptions('sidecar', [...args2, '--dns-capture', '--dns-address', '127.0.0.1:1', '--resolv-conf', join(dir, 'nope')], {}) as ProxyOptions;
  const third = await ProxyProcess.create(missing, () => undefined, { accessLog: () => undefined, log: () => undefined }, () => new HandSource(configWith('v1', missing.node, [])));
  await t.rejects(third.start(), { name: 'StartError', message: new RegExp(`^cannot read the resolver configuration ${join(dir, 'nope')}: ENOENT`) });

  await proxy.stop(0, 0);
  // The port is free again once the proxy has stopped.
  const probe = createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    probe.once('error', reject);
    probe.bind(dnsPort, '127.0.0.1', resolve);
  });
  probe.close();
});

// --- in a pod network namespace, with real iptables ------------------------------------------

async function preparePod(): Promise<{ skip: string | false; pod: PodNetns | null }> {
  const missing = await netnsPrerequisites(['iptables']);
  if (missing) return { skip: missing, pod: null };
  for (const tool of ['getent', 'unshare']) {
    if ((await run('sh', ['-c', `command -v ${tool}`], { timeoutMs: 5_000 })).code !== 0) return { skip: `${tool} is not installed`, pod: null };
  }
  try {
    return { skip: false, pod: await PodNetns.create() };
  } catch (err) {
    return { skip: `cannot create a network namespace: ${(err as Error).message}`, pod: null };
  }
}

const { skip, pod: maybePod } = await preparePod();

// The sidecar in the pod: Remora's own CLI options and process, with a config source that
// hands it a config with a name table, as an applied mesh config carries one.
const SIDECAR_JS = `
import { parseOptions, ProxyProcess } from ${JSON.stringify(PROXY_MAIN)};
const [nameTableJson, ...args] = process.argv.slice(2);
const opts = parseOptions('sidecar', args, process.env);
const config = { version: 'dns-1', node: opts.node, listeners: [], routeConfigs: [], clusters: [], nameTable: JSON.parse(nameTableJson) };
const source = { lastError: null, first: async () => ({ config, timings: null }), watch: () => {}, close: () => {} };
const proxy = await ProxyProcess.create(opts, (code) => process.exit(code), {}, () => source);
await proxy.start();
process.on('SIGTERM', () => void proxy.stop(0, 0));
`;

t.test('in a captured pod, an unmodified client resolves mesh names through the DNS proxy and other names through the pod’s resolver', { skip }, async (t) => {
  const pod = maybePod!;
  const dir = mkdtempSync(join(tmpdir(), 'remora-dns-pod-'));
  let sidecar: PodProcess | null = null;
  let upstream: TestDnsServer | null = null;
  t.teardown(async () => {
    await sidecar?.stop();
    await pod.destroy();
    await upstream?.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await pod.wire();
  // The pod's resolver (kube-dns, in a cluster): outside the pod, on the root side of the veth.
  upstream = await TestDnsServer.start(pod.hostIp, { records: { 'www.external.test/A': [{ name: 'www.external.test', type: 'A', class: 'IN', ttl: 60, data: '192.0.2.80' }] } }, 53);
  const resolvConf = join(dir, 'resolv.conf');
  writeFileSync(resolvConf, `nameserver ${pod.hostIp}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n`);
  const sidecarJs = join(dir, 'sidecar.mjs');
  writeFileSync(sidecarJs, SIDECAR_JS);
  for (const f of [resolvConf, sidecarJs]) chmodSync(f, 0o644);
  chmodSync(dir, 0o755);

  const rules = await pod.exec(['sh', SCRIPT, '--redirect-dns'], { timeoutMs: 20_000, env: { ...POD_ENV, RESOLV_CONF: resolvConf } });
  t.equal(rules.code, 0, `iptables.sh --redirect-dns applies (${rules.stderr.trim()})`);
  const nat = await pod.execOk(['iptables', '-t', 'nat', '-S', 'ISTIO_OUTPUT_DNS'], { timeoutMs: 10_000 });
  t.match(nat, `-A ISTIO_OUTPUT_DNS -d ${pod.hostIp}/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053`, 'the pod’s nameserver is captured');

  sidecar = pod.spawn(
    [process.execPath, sidecarJs, JSON.stringify([REVIEWS]), '-c', dir, '--dns-capture', '--resolv-conf', resolvConf, '--prometheus-port', '0'],
    { user: { uid: 1337, gid: 1337 }, cwd: REPO },
  );
  const proc = sidecar;
  await waitFor(
    `the DNS proxy started (stderr: ${proc.stderr.join('\n')})`,
    () => {
      if (proc.child.exitCode !== null) throw new Error(`sidecar exited: ${proc.stderr.join('\n')}`);
      return proc.stderr.some((l) => l.includes('[dns] DNS proxy on 127.0.0.1:15053'));
    },
    20_000,
  );
  t.match(proc.stderr.join('\n'), `forwarding to ${pod.hostIp}:53 from ${resolvConf}, search default.svc.cluster.local svc.cluster.local cluster.local`);

  /** `getent hosts NAME` as the app (UID 1000) with the pod's resolv.conf bind-mounted over /etc/resolv.conf. */
  const getent = (name: string): Promise<{ code: number | null; stdout: string; stderr: string }> =>
    pod.exec(['unshare', '--mount', 'sh', '-c', 'mount --bind "$0" /etc/resolv.conf && exec setpriv --reuid=1000 --regid=1000 --clear-groups -- getent hosts "$1"', resolvConf, name], { timeoutMs: 20_000 });

  const forms = ['reviews', 'reviews.default', 'reviews.default.svc', 'reviews.default.svc.cluster.local'];
  for (const name of forms) {
    const r = await getent(name);
    t.equal(r.code, 0, `getent hosts ${name} (${r.stderr.trim()})`);
    t.match(r.stdout, /^10\.96\.0\.10\s/, `${name} → the VIP`);
  }
  // glibc walks the search path (ndots:5), AAAA too: names that are no table name, such as
  // reviews.svc.cluster.local, go to the pod's resolver (NXDOMAIN), as through Istio's agent.
  // The table's names and their first search-domain expansions never do.
  const answeredLocally = new Set([...forms, ...forms.slice(0, 3).map((f) => `${f}.default.svc.cluster.local`)]);
  t.same(upstream.seen.filter((q) => answeredLocally.has(q.name)), [], 'no table name reached the pod’s resolver');

  const ext = await getent('www.external.test');
  t.equal(ext.code, 0, `getent hosts www.external.test (${ext.stderr.trim()})`);
  t.match(ext.stdout, /^192\.0\.2\.80\s/, 'an external name through the forwarder');
  t.ok(upstream.queriesFor('www.external.test').length > 0, 'the pod’s resolver answered it');
  const counters = await pod.execOk(['iptables', '-t', 'nat', '-L', 'ISTIO_OUTPUT_DNS', '-v', '-n', '-x'], { timeoutMs: 10_000 });
  const udpRule = counters.split('\n').find((l) => l.includes('udp dpt:53') && l.includes('redir ports 15053'));
  t.ok(udpRule !== undefined && Number(udpRule.trim().split(/\s+/)[0]) > 0, `the app’s queries went through the REDIRECT rule (${udpRule?.trim()})`);
});
