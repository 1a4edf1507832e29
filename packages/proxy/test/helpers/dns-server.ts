/**
 * A small authoritative DNS server for tests, on UDP and TCP of one address and port: the
 * upstream resolver a DNS proxy forwards to. It answers from a record map, can stay silent
 * (a dead resolver) or answer UDP with TC set (a large answer), and records every query it
 * got with the transport it came over.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server } from 'node:net';
import { decode, encode, type Answer, type DecodedPacket } from 'dns-packet';

export interface SeenQuery {
  readonly name: string;
  readonly type: string;
  readonly transport: 'udp' | 'tcp';
}

export interface TestDnsServerOptions {
  /** `name/TYPE` (lower case name) → records. A name not here is NXDOMAIN. */
  readonly records: Record<string, Answer[]>;
  /** Answer nothing at all (a resolver that is down, or a dropped packet). */
  silent?: boolean;
  /** Over UDP, answer with TC set and no records, so the client asks again over TCP. */
  truncateUdp?: boolean;
}

export class TestDnsServer {
  readonly seen: SeenQuery[] = [];
  readonly options: TestDnsServerOptions;
  readonly address: string;
  port = 0;
  readonly #udp: UdpSocket;
  readonly #tcp: Server;

  private constructor(address: string, options: TestDnsServerOptions) {
    this.address = address;
    this.options = options;
    this.#udp = createSocket('udp4');
    this.#tcp = createServer((socket) => {
      let buf = Buffer.alloc(0);
      socket.on('error', () => socket.destroy());
      socket.on('data', (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
          buf = buf.subarray(2 + msg.length);
          const reply = this.#reply(msg, 'tcp');
          if (reply === null) continue;
          const len = Buffer.alloc(2);
          len.writeUInt16BE(reply.length);
          socket.write(Buffer.concat([len, reply]));
        }
      });
    });
    this.#udp.on('message', (msg, rinfo) => {
      const reply = this.#reply(msg, 'udp');
      if (reply !== null) this.#udp.send(reply, rinfo.port, rinfo.address);
    });
  }

  /** Listens on `address`, on `port` (default any free port, the same number for UDP and TCP). */
  static async start(address: string, options: TestDnsServerOptions, port = 0): Promise<TestDnsServer> {
    for (let attempt = 0; ; attempt++) {
      const s = new TestDnsServer(address, options);
      await new Promise<void>((r) => s.#udp.bind(port, address, r));
      s.port = s.#udp.address().port;
      try {
        await new Promise<void>((resolve, reject) => {
          s.#tcp.once('error', reject);
          s.#tcp.listen(s.port, address, resolve);
        });
        return s;
      } catch (err) {
        s.#udp.close();
        if (attempt > 5) throw err;
      }
    }
  }

  queriesFor(name: string): SeenQuery[] {
    return this.seen.filter((q) => q.name === name);
  }

  async close(): Promise<void> {
    await new Promise<void>((r) => this.#udp.close(() => r()));
    await new Promise<void>((r) => this.#tcp.close(() => r()));
  }

  #reply(msg: Buffer, transport: 'udp' | 'tcp'): Buffer | null {
    let query: DecodedPacket;
    try {
      query = decode(msg);
    } catch {
      return null;
    }
    const q = query.questions?.[0];
    if (q === undefined) return null;
    this.seen.push({ name: q.name.toLowerCase(), type: q.type, transport });
    if (this.options.silent) return null;
    const base = { id: query.id, type: 'response' as const, questions: [q] };
    if (transport === 'udp' && this.options.truncateUdp) return encode({ ...base, flags: (1 << 9) | (1 << 8) | (1 << 7) });
    const answers = this.options.records[`${q.name.toLowerCase()}/${q.type}`];
    const known = Object.keys(this.options.records).some((k) => k.startsWith(`${q.name.toLowerCase()}/`));
    // NXDOMAIN (rcode 3) for a name it does not know; NOERROR without answers for a known name and other type.
    return encode({ ...base, flags: (1 << 8) | (1 << 7) | (known ? 0 : 3), answers: answers ?? [] });
  }
}

/** `count` A records for `name` (10.9.<i / 256>.<i % 256>), a large answer when count is large. */
export function manyA(name: string, count: number): Answer[] {
  const out: Answer[] = [];
  for (let i = 0; i < count; i++) out.push({ name, type: 'A', class: 'IN', ttl: 60, data: `10.9.${Math.floor(i / 256)}.${i % 256}` });
  return out;
}
