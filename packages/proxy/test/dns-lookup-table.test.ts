// The DNS proxy's compiled name table (Istio's agent LookupTable, pkg/dns/client/dns.go) and
// its resolv.conf reading (miekg/dns ClientConfigFromFile).
import t from 'tap';
import { decode } from 'dns-packet';
import { DnsLookupTable, NAME_TABLE_TTL_SECONDS } from '../src/dns/dns-lookup-table.ts';
import { parseResolvConf } from '../src/dns/resolv-conf.ts';

const SCOPE = { namespace: 'default', clusterDomain: 'cluster.local', search: ['default.svc.cluster.local', 'svc.cluster.local', 'cluster.local'] };
const A = 1;
const AAAA = 28;
const MX = 15;

/** The records of a lookup, decoded: `name TYPE data ttl`. */
function answers(table: DnsLookupTable, name: string, qtype: number): string[] | null {
  const r = table.lookup(name, qtype);
  if (r === null) return null;
  const msg = Buffer.concat([Buffer.from([0, 0, 0x84, 0, 0, 0, 0, r.records.length, 0, 0, 0, 0]), ...r.records]);
  return decode(msg).answers!.map((a) => `${a.name} ${a.type} ${String((a as { data: unknown }).data)} ${(a as { ttl: number }).ttl}`);
}

t.test('a Kubernetes-style host answers as the FQDN, name.ns.svc, name.ns and, in the proxy’s namespace, name', async (t) => {
  const table = DnsLookupTable.build(
    [
      { host: 'reviews.default.svc.cluster.local', addresses: ['10.96.0.10'], shortName: 'reviews', namespace: 'default' },
      { host: 'ratings.other.svc.cluster.local', addresses: ['10.96.0.11'], shortName: 'ratings', namespace: 'other' },
    ],
    SCOPE,
  );
  for (const name of ['reviews.default.svc.cluster.local', 'reviews.default.svc', 'reviews.default', 'reviews']) {
    t.same(answers(table, name, A), [`${name} A 10.96.0.10 ${NAME_TABLE_TTL_SECONDS}`], name);
  }
  t.same(answers(table, 'ratings.other', A), ['ratings.other A 10.96.0.11 30'], 'name.ns from another namespace');
  t.equal(answers(table, 'ratings', A), null, 'a bare name only for the proxy’s own namespace');
  t.equal(answers(table, 'reviews.default.svc.cluster', A), null, 'no other partial forms (Istio generates just one more domain)');
  t.equal(answers(table, 'reviews', MX), null, 'types other than A and AAAA go upstream');
});

t.test('a search-path expansion answers with a CNAME to the name, then its addresses', async (t) => {
  const table = DnsLookupTable.build(
    [
      { host: 'reviews.default.svc.cluster.local', addresses: ['10.96.0.10'], shortName: 'reviews', namespace: 'default' },
      { host: 'api.example.com', addresses: ['240.0.0.1', '240.0.0.2'], shortName: '', namespace: '' },
    ],
    SCOPE,
  );
  t.same(answers(table, 'api.example.com.default.svc.cluster.local', A), [
    'api.example.com.default.svc.cluster.local CNAME api.example.com 30',
    'api.example.com A 240.0.0.1 30',
    'api.example.com A 240.0.0.2 30',
  ]);
  t.equal(table.lookup('api.example.com.default.svc.cluster.local', A)!.fixed, 1, 'the CNAME stays first when addresses are shuffled');
  t.same(answers(table, 'reviews.default.default.svc.cluster.local', A), [
    'reviews.default.default.svc.cluster.local CNAME reviews.default 30',
    'reviews.default A 10.96.0.10 30',
  ]);
  t.same(answers(table, 'reviews.default.svc.cluster.local', A), ['reviews.default.svc.cluster.local A 10.96.0.10 30'], 'a name already under the first search domain: no expansion');
  t.same(answers(table, 'api.example.com.default.svc.cluster.local', AAAA), [], 'no AAAA: no CNAME either, NOERROR without answers');
  t.equal(answers(table, 'api.example.com.svc.cluster.local', A), null, 'only the first search domain is expanded');
});

t.test('AAAA and A of a single-family host: the other family is an empty answer, not a miss', async (t) => {
  const table = DnsLookupTable.build(
    [
      { host: 'v4.example.com', addresses: ['10.0.0.4'], shortName: '', namespace: '' },
      { host: 'v6.example.com', addresses: ['fd00::6'], shortName: '', namespace: '' },
      { host: 'dual.example.com', addresses: ['10.0.0.5', 'fd00::5'], shortName: '', namespace: '' },
      { host: 'none.example.com', addresses: ['not-an-ip'], shortName: '', namespace: '' },
    ],
    { ...SCOPE, search: [] },
  );
  t.same(answers(table, 'v4.example.com', AAAA), []);
  t.same(answers(table, 'v6.example.com', A), []);
  t.same(answers(table, 'v6.example.com', AAAA), ['v6.example.com AAAA fd00::6 30']);
  t.same(answers(table, 'dual.example.com', AAAA), ['dual.example.com AAAA fd00::5 30']);
  t.equal(answers(table, 'none.example.com', A), null, 'a host without a usable address is not in the table');
  t.same(table.names(), ['dual.example.com', 'v4.example.com', 'v6.example.com'], 'no search domains: no expansions');
});

t.test('a service in another cluster domain than the proxy gets no short names', async (t) => {
  const table = DnsLookupTable.build([{ host: 'reviews.default.svc.remote.example', addresses: ['10.96.0.12'], shortName: 'reviews', namespace: 'default' }], { ...SCOPE, search: [] });
  t.same(table.names(), ['reviews.default.svc.remote.example']);
});

t.test('resolv.conf: nameservers in order on port 53, the last search (or domain) line', async (t) => {
  const conf = parseResolvConf(
    [
      '# generated',
      'nameserver 10.96.0.10',
      'nameserver fe80::1%eth0 ; link-local',
      'nameserver not-an-address',
      'search old.example',
      'search Default.svc.cluster.local. svc.cluster.local cluster.local',
      'options ndots:5 timeout:2',
      'nameserver 127.0.0.53',
    ].join('\n'),
  );
  t.same(conf.nameservers, [
    { address: '10.96.0.10', port: 53 },
    { address: 'fe80::1', port: 53 },
    { address: '127.0.0.53', port: 53 },
  ]);
  t.same(conf.search, ['default.svc.cluster.local', 'svc.cluster.local', 'cluster.local']);
  t.same(parseResolvConf('search a.example b.example\ndomain corp.example\n').search, ['corp.example'], 'domain replaces search');
  t.same(parseResolvConf(''), { nameservers: [], search: [] });
});
