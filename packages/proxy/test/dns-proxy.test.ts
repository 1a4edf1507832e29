// The DNS proxy on real UDP and TCP sockets: table names answered in every form a pod's
// resolver asks for, everything else forwarded to a real resolver (a test server on
// 127.0.0.2/127.0.0.3), SERVFAIL when no resolver answers, the client's TCP retry after a
// truncated answer, malformed queries, and the table swapped per config. Clients: Node's
// c-ares resolver (a real stub resolver, with its own TCP fallback) and raw packets.
import { createSocket } from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import { connect } from 'node:net';
import t from 'tap';
import { decode, encode, type Answer, type DecodedPacket, type RecordType } from 'dns-packet';
import type { NameTableEntry } from '@remora/config';
import { Loggers } from '../src/logger.ts';
import { DnsProxy, type DnsProxyOptions } from '../src/dns/dns-proxy.ts';
import { manyA, TestDnsServer } from './helpers/dns-server.ts';

const SEARCH = ['default.svc.cluster.local', 'svc.cluster.local', 'cluster.local'];
const TABLE: NameTableEntry[] = [
  { host: 'reviews.default.svc.cluster.local', addresses: ['10.96.0.10'], shortName: 'reviews', namespace: 'default' },
  { host: 'ratings.other.svc.cluster.local', addresses: ['10.96.0.11', 'fd00::11'], shortName: 'ratings', namespace: 'other' },
  { host: 'api.example.com', addresses: ['240.0.0.1'], shortName: '', namespace: '' },
];

/** What the tests need of tap's test object (tap's own type is not exported by name). */
type T = { teardown(fn: () => unknown): void };

const log: string[] = [];
const loggers = new Loggers('debug', (line) => log.push(line));

async function startProxy(t: T, over: Partial<DnsProxyOptions> & { upstreams?: TestDnsServer[] } = {}): Promise<DnsProxy> {
  const { upstreams = [], ...rest } = over;
  const proxy = await DnsProxy.listen({
    address: '127.0.0.1',
    port: 0,
    resolvConf: { nameservers: upstreams.map((u) => ({ address: u.address, port: u.port })), search: SEARCH },
    namespace: 'default',
    clusterDomain: 'cluster.local',
    logger: loggers.get('dns'),
    upstreamTimeoutMs: 300,
    ...rest,
  });
  t.teardown(() => proxy.close());
  return proxy;
}

async function upstream(t: T, address: string, records: Record<string, Answer[]> = {}): Promise<TestDnsServer> {
  const s = await TestDnsServer.start(address, { records });
  t.teardown(() => s.close());
  return s;
}

function resolverFor(proxy: DnsProxy): Resolver {
  const r = new Resolver({ timeout: 2_000, tries: 1 });
  r.setServers([`127.0.0.1:${proxy.address.port}`]);
  return r;
}

let nextId = 1;
function query(name: string, type: RecordType = 'A', extra: Partial<Parameters<typeof encode>[0]> = {}): Buffer {
  return encode({ id: nextId++ & 0xffff, type: 'query', flags: 1 << 8, questions: [{ name, type, class: 'IN' }], ...extra });
}

/** One datagram to the proxy; the reply, or null when none comes within `waitMs`. */
function udpExchange(port: number, msg: Buffer, waitMs = 2_000): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    const timer = setTimeout(() => {
      s.close();
      resolve(null);
    }, waitMs);
    s.on('message', (reply) => {
      clearTimeout(timer);
      s.close();
      resolve(reply);
    });
    s.send(msg, port, '127.0.0.1');
  });
}

/** One framed message over a fresh TCP connection; the reply, or null when the connection ends without one. */
function tcpExchange(port: number, msg: Buffer): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const len = Buffer.alloc(2);
    len.writeUInt16BE(msg.length);
    s.on('connect', () => s.write(Buffer.concat([len, msg])));
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        s.destroy();
        resolve(buf.subarray(2, 2 + buf.readUInt16BE(0)));
      }
    });
    s.on('error', () => resolve(null));
    s.on('close', () => resolve(null));
  });
}

async function ask(proxy: DnsProxy, name: string, type: RecordType = 'A'): Promise<Reply> {
  const reply = await udpExchange(proxy.address.port, query(name, type));
  if (reply === null) throw new Error(`no reply for ${name} ${type}`);
  return decodeReply(reply);
}

/** A decoded reply; dns-packet decodes the response code, its types leave it out. */
type Reply = DecodedPacket & { readonly id: number; readonly rcode: string };
const decodeReply = (msg: Buffer): Reply => decode(msg) as Reply;

const data = (p: DecodedPacket): string[] => (p.answers ?? []).map((a) => `${a.type} ${String((a as { data: unknown }).data)}`);

t.test('table names answer in every form a pod’s resolver asks for, authoritative, TTL 30 s', async (t) => {
  const up = await upstream(t, '127.0.0.2');
  const proxy = await startProxy(t, { upstreams: [up] });
  proxy.updateNameTable(TABLE);
  const resolver = resolverFor(proxy);
  for (const name of ['reviews', 'reviews.default', 'reviews.default.svc', 'reviews.default.svc.cluster.local']) {
    t.same(await resolver.resolve4(name, { ttl: true }), [{ address: '10.96.0.10', ttl: 30 }], `${name} (c-ares)`);
  }
  // What glibc asks for `reviews.default` with ndots:5: the first search domain appended.
  const expanded = await ask(proxy, 'reviews.default.default.svc.cluster.local');
  t.equal(expanded.rcode, 'NOERROR');
  t.ok(expanded.flag_aa, 'authoritative');
  t.same(data(expanded), ['CNAME reviews.default', 'A 10.96.0.10'], 'a CNAME to the name, chained with its address');
  t.same(await resolver.resolve4('api.example.com.default.svc.cluster.local'), ['240.0.0.1'], 'c-ares follows the chained CNAME');
  t.same(await resolver.resolve4('ratings.other'), ['10.96.0.11']);
  t.same(await resolver.resolve6('ratings.other.svc'), ['fd00::11']);
  const mixedCase = await ask(proxy, 'Reviews.Default');
  t.same(data(mixedCase), ['A 10.96.0.10'], 'names are matched without regard to case');
  t.equal(mixedCase.questions![0]!.name, 'Reviews.Default', 'the question is echoed as asked');
  t.same(up.seen, [], 'none of these reached the upstream resolver');
});

t.test('AAAA of an IPv4-only table name: NOERROR with no answer (NODATA), never NXDOMAIN', async (t) => {
  const up = await upstream(t, '127.0.0.2');
  const proxy = await startProxy(t, { upstreams: [up] });
  proxy.updateNameTable(TABLE);
  const r = await ask(proxy, 'reviews', 'AAAA');
  t.equal(r.rcode, 'NOERROR');
  t.ok(r.flag_aa);
  t.same(r.answers, []);
  await t.rejects(resolverFor(proxy).resolve6('reviews'), { code: 'ENODATA' }, 'c-ares: no data, not "not found"');
  t.same(up.seen, [], 'not forwarded');
});

t.test('other names and other types are forwarded to the resolvers of resolv.conf and relayed as they answer', async (t) => {
  const up = await upstream(t, '127.0.0.2', {
    'www.example.org/A': [{ name: 'www.example.org', type: 'A', class: 'IN', ttl: 300, data: '192.0.2.7' }],
    'reviews/MX': [{ name: 'reviews', type: 'MX', class: 'IN', ttl: 60, data: { preference: 10, exchange: 'mail.example.org' } }],
  });
  const proxy = await startProxy(t, { upstreams: [up] });
  proxy.updateNameTable(TABLE);
  const resolver = resolverFor(proxy);
  t.same(await resolver.resolve4('www.example.org', { ttl: true }), [{ address: '192.0.2.7', ttl: 300 }], 'the upstream’s answer and TTL');
  t.same(up.queriesFor('www.example.org'), [{ name: 'www.example.org', type: 'A', transport: 'udp' }]);
  const nx = await ask(proxy, 'nothing.example.org');
  t.equal(nx.rcode, 'NXDOMAIN', 'NXDOMAIN from upstream passes through');
  t.notOk(nx.flag_aa);
  t.match(await resolver.resolveMx('reviews'), [{ priority: 10, exchange: 'mail.example.org' }], 'a table name’s MX goes upstream');
  t.same(await resolver.resolve4('ratings').catch((e: NodeJS.ErrnoException) => e.code), 'ENOTFOUND', 'another namespace’s bare name goes upstream');
  t.equal(proxy.stats.upstreamRequests, 4);
});

t.test('no resolver answers: SERVFAIL after the bounded timeout, each resolver tried once', async (t) => {
  const dead1 = await TestDnsServer.start('127.0.0.2', { records: {}, silent: true });
  const dead2 = await TestDnsServer.start('127.0.0.3', { records: {}, silent: true });
  t.teardown(async () => {
    await dead1.close();
    await dead2.close();
  });
  const proxy = await startProxy(t, { upstreams: [dead1, dead2], upstreamTimeoutMs: 250 });
  proxy.updateNameTable(TABLE);
  const started = performance.now();
  const r = await ask(proxy, 'www.example.org');
  const took = performance.now() - started;
  t.equal(r.rcode, 'SERVFAIL');
  t.same(r.questions, [{ name: 'www.example.org', type: 'A', class: 'IN' }], 'the question is in the reply');
  t.ok(took >= 450 && took < 1_900, `two resolvers × 250 ms (${Math.round(took)} ms)`);
  t.equal(dead1.queriesFor('www.example.org').length + dead2.queriesFor('www.example.org').length, 2, 'one query to each');
  t.equal(proxy.stats.upstreamFailures, 1);
  t.equal((await ask(proxy, 'reviews')).rcode, 'NOERROR', 'table names still answer');

  // One resolver down, the other up: the answer comes from the live one whichever goes first.
  dead2.options.silent = false;
  dead2.options.records['live.example.org/A'] = [{ name: 'live.example.org', type: 'A', class: 'IN', ttl: 5, data: '192.0.2.9' }];
  for (let i = 0; i < 2; i++) t.same(data(await ask(proxy, 'live.example.org')), ['A 192.0.2.9'], `query ${i + 1}: answered`);
});

t.test('no resolver in resolv.conf: SERVFAIL at once', async (t) => {
  const proxy = await startProxy(t);
  proxy.updateNameTable(TABLE);
  t.equal((await ask(proxy, 'www.example.org')).rcode, 'SERVFAIL');
  t.equal((await ask(proxy, 'reviews')).rcode, 'NOERROR');
});

t.test('before the first name table every query gets SERVFAIL (as Istio’s agent before its first push)', async (t) => {
  const up = await upstream(t, '127.0.0.2');
  const proxy = await startProxy(t, { upstreams: [up] });
  t.equal((await ask(proxy, 'reviews')).rcode, 'SERVFAIL');
  t.same(up.seen, []);
});

t.test('a truncated UDP answer is relayed with TC; the client asks again over TCP, which is forwarded over TCP', async (t) => {
  const up = await TestDnsServer.start('127.0.0.2', { records: { 'big.example.org/A': manyA('big.example.org', 100) }, truncateUdp: true });
  t.teardown(() => up.close());
  const proxy = await startProxy(t, { upstreams: [up] });
  proxy.updateNameTable(TABLE);
  const udp = await ask(proxy, 'big.example.org');
  t.ok(udp.flag_tc, 'UDP: TC as the upstream said');
  const addresses = await resolverFor(proxy).resolve4('big.example.org');
  t.equal(addresses.length, 100, 'c-ares retried over TCP and got every address');
  t.same(
    up.queriesFor('big.example.org').map((q) => q.transport),
    ['udp', 'udp', 'tcp'],
    'the TCP retry reached the upstream over TCP',
  );
});

t.test('a table answer larger than the client’s UDP size is cut with TC; EDNS raises the size; TCP has it all', async (t) => {
  const ips = Array.from({ length: 60 }, (_, i) => `10.1.0.${i + 1}`);
  const proxy = await startProxy(t);
  proxy.updateNameTable([{ host: 'db.default.svc.cluster.local', addresses: ips, shortName: 'db', namespace: 'default' }]);
  const plain = decodeReply((await udpExchange(proxy.address.port, query('db')))!);
  t.ok(plain.flag_tc, 'TC over plain UDP (512 bytes)');
  t.ok(plain.answers!.length > 0 && plain.answers!.length < 60, `some answers fit (${plain.answers!.length})`);
  const edns = await udpExchange(proxy.address.port, query('db', 'A', { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 4096, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }] }));
  t.ok(edns!.length > 512);
  t.notOk(decodeReply(edns!).flag_tc, 'fits in the advertised EDNS size');
  t.equal(decodeReply(edns!).answers!.length, 60);
  const tcp = decodeReply((await tcpExchange(proxy.address.port, query('db')))!);
  t.equal(tcp.answers!.length, 60);
  t.same((await resolverFor(proxy).resolve4('db')).sort(), [...ips].sort(), 'c-ares falls back to TCP by itself');

  // Addresses come in random order (DNS load balancing for headless services).
  const firsts = new Set<string>();
  for (let i = 0; i < 8; i++) firsts.add(String((decodeReply((await tcpExchange(proxy.address.port, query('db')))!).answers![0] as { data: string }).data));
  t.ok(firsts.size > 1, `the first address varies (${[...firsts].join(', ')})`);
});

t.test('malformed queries: FORMERR, NOTIMP or dropped as miekg/dns’s server does, and the proxy keeps serving', async (t) => {
  const proxy = await startProxy(t);
  proxy.updateNameTable(TABLE);
  const port = proxy.address.port;
  t.equal(await udpExchange(port, Buffer.from([1, 2, 3]), 300), null, 'shorter than a header: dropped');
  const garbage = Buffer.from([0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x3f, 0x61]);
  const formerr = decodeReply((await udpExchange(port, garbage))!);
  t.equal(formerr.id, 0x1234);
  t.equal(formerr.rcode, 'FORMERR', 'a question that does not parse');
  t.same(formerr.questions, [], 'no sections in the reply');
  const two = encode({ id: 7, type: 'query', questions: [{ name: 'a', type: 'A' }, { name: 'b', type: 'A' }] });
  t.equal(decodeReply((await udpExchange(port, two))!).rcode, 'FORMERR', 'two questions');
  const none = encode({ id: 8, type: 'query', questions: [] });
  t.equal(decodeReply((await udpExchange(port, none))!).rcode, 'FORMERR', 'no question');
  const status = Buffer.from(query('reviews'));
  status.writeUInt16BE((2 << 11) | 0x100, 2); // opcode STATUS
  t.equal(decodeReply((await udpExchange(port, status))!).rcode, 'NOTIMP', 'an opcode other than QUERY/NOTIFY');
  const response = encode({ id: 9, type: 'response', questions: [{ name: 'reviews', type: 'A' }] });
  t.equal(await udpExchange(port, response, 300), null, 'a response: no reply (no DNS ping-pong)');
  const pointerLoop = Buffer.from([0, 10, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1]);
  t.equal(decodeReply((await udpExchange(port, pointerLoop))!).rcode, 'FORMERR', 'a compression pointer loop');
  t.equal(decodeReply((await tcpExchange(port, garbage))!).rcode, 'FORMERR', 'over TCP too');
  t.same(data(await ask(proxy, 'reviews')), ['A 10.96.0.10'], 'still answering');
  t.equal(proxy.stats.malformed, 8);
});

t.test('the table is swapped per config; an absent table forwards everything', async (t) => {
  const up = await upstream(t, '127.0.0.2', { 'reviews/A': [{ name: 'reviews', type: 'A', class: 'IN', ttl: 60, data: '192.0.2.50' }] });
  const proxy = await startProxy(t, { upstreams: [up] });
  proxy.updateNameTable(TABLE);
  t.same(data(await ask(proxy, 'reviews')), ['A 10.96.0.10']);
  proxy.updateNameTable([{ host: 'reviews.default.svc.cluster.local', addresses: ['10.96.0.99'], shortName: 'reviews', namespace: 'default' }]);
  t.same(data(await ask(proxy, 'reviews')), ['A 10.96.0.99'], 'the new address');
  t.same(data(await ask(proxy, 'api.example.com')), [], 'a host gone from the table is forwarded (upstream: NXDOMAIN)');
  proxy.updateNameTable(undefined);
  t.same(data(await ask(proxy, 'reviews')), ['A 192.0.2.50'], 'no table: the upstream answers');
});

t.test('memory is bounded: forwarded queries in flight are capped, past the cap SERVFAIL at once', async (t) => {
  const dead = await TestDnsServer.start('127.0.0.2', { records: {}, silent: true });
  t.teardown(() => dead.close());
  const proxy = await startProxy(t, { upstreams: [dead], upstreamTimeoutMs: 1_000, maxUpstreamInFlight: 2 });
  proxy.updateNameTable(TABLE);
  const slow = [ask(proxy, 'a.example.org'), ask(proxy, 'b.example.org')];
  const started = performance.now();
  const third = await ask(proxy, 'c.example.org');
  t.equal(third.rcode, 'SERVFAIL');
  t.ok(performance.now() - started < 900, 'answered before the others time out');
  t.same(dead.queriesFor('c.example.org'), [], 'not sent upstream');
  t.same((await Promise.all(slow)).map((r) => r.rcode), ['SERVFAIL', 'SERVFAIL']);
  t.equal(proxy.stats.upstreamRequests, 3);
});

t.test('binding: a taken port is a clear error naming the transport and address', async (t) => {
  const proxy = await startProxy(t);
  await t.rejects(
    DnsProxy.listen({ address: '127.0.0.1', port: proxy.address.port, resolvConf: { nameservers: [], search: [] }, namespace: 'default', clusterDomain: 'cluster.local', logger: loggers.get('dns') }),
    { message: `DNS proxy cannot listen on udp 127.0.0.1:${proxy.address.port}: bind EADDRINUSE 127.0.0.1:${proxy.address.port}` },
  );
  await t.rejects(
    DnsProxy.listen({ address: 'localhost', port: 0, resolvConf: { nameservers: [], search: [] }, namespace: 'default', clusterDomain: 'cluster.local', logger: loggers.get('dns') }),
    { message: 'DNS proxy address must be an IP address, got "localhost"' },
  );
});
