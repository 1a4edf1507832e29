// The ClientHello reader behind SNI routing and PASSTHROUGH: real hellos from node:tls (with
// SNI and ALPN), hellos split across TLS records and across reads, and bytes that are not a
// hello at all; then the server pick by name in Envoy's order.
import { randomBytes } from 'node:crypto';
import { createServer, type AddressInfo } from 'node:net';
import { connect } from 'node:tls';
import t from 'tap';
import { parseClientHello, pickByServerName } from '@remora/proxy';

/** The first bytes a real TLS client sends, caught by a plain TCP server. */
async function realHello(opts: { servername?: string; ALPNProtocols?: string[] }): Promise<Buffer> {
  let got: (b: Buffer) => void = () => {};
  const seen = new Promise<Buffer>((r) => (got = r));
  const server = createServer((s) => {
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (parseClientHello(buf) !== null) {
        got(buf);
        s.destroy();
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const c = connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, rejectUnauthorized: false, ...opts });
  c.on('error', () => {});
  const hello = await seen;
  c.destroy();
  server.close();
  return hello;
}

/** The same handshake message re-framed into TLS records of at most `size` bytes. */
function fragment(hello: Buffer, size: number): Buffer {
  const body = hello.subarray(5, 5 + hello.readUInt16BE(3));
  const out: Buffer[] = [];
  for (let i = 0; i < body.length; i += size) {
    const part = body.subarray(i, i + size);
    const header = Buffer.from([0x16, 0x03, 0x01, 0, 0]);
    header.writeUInt16BE(part.length, 3);
    out.push(header, part);
  }
  return Buffer.concat(out);
}

t.test('a real hello: SNI lower-cased and the ALPN list', async (t) => {
  const hello = await realHello({ servername: 'Shop.Example.COM', ALPNProtocols: ['h2', 'http/1.1'] });
  t.same(parseClientHello(hello), { serverName: 'shop.example.com', alpn: ['h2', 'http/1.1'] });
  const bare = await realHello({});
  t.same(parseClientHello(bare), { serverName: null, alpn: [] }, 'no SNI (an IP address), no ALPN');
});

t.test('more bytes needed: every proper prefix; a hello split over records still parses', async (t) => {
  const hello = await realHello({ servername: 'a.example.com', ALPNProtocols: ['http/1.1'] });
  let early = 0;
  for (let n = 1; n < hello.length; n++) if (parseClientHello(hello.subarray(0, n)) === null) early++;
  t.equal(early, hello.length - 1, 'null for every prefix');
  const split = fragment(hello, 100);
  t.ok(split.length > hello.length, 'several records');
  t.same(parseClientHello(split), { serverName: 'a.example.com', alpn: ['http/1.1'] });
});

t.test('not a hello: HTTP, other record types, garbage', async (t) => {
  t.equal(parseClientHello(Buffer.from('GET / HTTP/1.1\r\n')), 'not-tls');
  t.equal(parseClientHello(Buffer.from('PRI * HTTP/2.0\r\n')), 'not-tls');
  t.equal(parseClientHello(Buffer.from([0x17, 0x03, 0x03, 0x00, 0x01, 0x00])), 'not-tls', 'application data record');
  t.equal(parseClientHello(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00])), 'not-tls', 'a ServerHello');
  // Random bodies behind a handshake record header: an answer every time, never an exception.
  const answers = new Set<string>();
  for (let i = 0; i < 2000; i++) {
    const body = randomBytes(1 + (i % 300));
    body[0] = 1; // ClientHello type, so the parser goes deep
    const rec = Buffer.concat([Buffer.from([0x16, 0x03, 0x01, body.length >> 8, body.length & 0xff]), body]);
    const r = parseClientHello(rec);
    answers.add(r === null ? 'null' : r === 'not-tls' ? 'not-tls' : 'hello');
  }
  t.ok([...answers].every((a) => a === 'null' || a === 'not-tls' || a === 'hello'));
  t.ok(answers.has('not-tls') || answers.has('null'), `answers seen: ${[...answers].join(', ')}`);
});

t.test('server by name: exact, then the longest *.suffix, then *; no SNI only matches *', async (t) => {
  const exact = { hosts: ['api.example.com'], id: 'exact' };
  const wide = { hosts: ['*.example.com'], id: 'wide' };
  const narrow = { hosts: ['*.api.example.com'], id: 'narrow' };
  const any = { hosts: ['*'], id: 'any' };
  const all = [any, wide, narrow, exact];
  t.equal(pickByServerName(all, 'api.example.com')?.id, 'exact');
  t.equal(pickByServerName(all, 'v1.api.example.com')?.id, 'narrow');
  t.equal(pickByServerName(all, 'www.example.com')?.id, 'wide');
  t.equal(pickByServerName(all, 'example.com')?.id, 'any', '*.example.com does not cover example.com');
  t.equal(pickByServerName(all, null)?.id, 'any');
  t.equal(pickByServerName([exact, wide], null), null);
  t.equal(pickByServerName([exact, wide], 'other.org'), null);
});
