import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { isIP, Socket as TcpSocket } from 'node:net';
import { FLAG_QR, HEADER_BYTES } from './dns-wire.ts';
import type { Nameserver } from './resolv-conf.ts';

/** Istio's agent's upstream timeout (DefaultUpstreamTimeout): per resolver tried. */
export const DEFAULT_UPSTREAM_TIMEOUT_MS = 5_000;

/** Something in flight to an upstream resolver that `close()` must be able to end. */
interface Pending {
  abort(): void;
}

/**
 * Sends queries the name table does not answer to the pod's resolvers, as Istio's agent does
 * (queryUpstream): the resolvers one after another, starting at a rotating one, each with a
 * bounded timeout, over the transport the client used (a UDP answer with TC set is relayed,
 * and the client asks again over TCP, which is forwarded over TCP). The first resolver that
 * answers wins, whatever its response code; null when none does. Each exchange has its own
 * socket (a fresh source port, as the agent's client dials per query), and the number in
 * flight is capped, so memory does not grow with the query rate.
 */
export class DnsForwarder {
  readonly #servers: readonly Nameserver[];
  readonly #timeoutMs: number;
  readonly #maxInFlight: number;
  readonly #pending = new Set<Pending>();
  #next = 0;
  #closed = false;

  constructor(servers: readonly Nameserver[], timeoutMs: number, maxInFlight: number) {
    this.#servers = servers;
    this.#timeoutMs = timeoutMs;
    this.#maxInFlight = maxInFlight;
  }

  get servers(): readonly Nameserver[] {
    return this.#servers;
  }

  /** Exchanges in flight right now. */
  get inFlight(): number {
    return this.#pending.size;
  }

  /**
   * The upstream's reply to `query` (raw bytes, relayed untouched), or null: no resolver
   * answered in time, none is configured, too many queries are in flight, or the forwarder
   * is closed. `onFailure` hears why each resolver failed.
   */
  async exchange(query: Buffer, tcp: boolean, onFailure: (server: Nameserver, why: string) => void): Promise<Buffer | null> {
    const n = this.#servers.length;
    if (n === 0 || this.#closed) return null;
    if (this.#pending.size >= this.#maxInFlight) {
      onFailure(this.#servers[0]!, `${this.#pending.size} queries already in flight upstream`);
      return null;
    }
    const start = this.#next;
    this.#next = (this.#next + 1) % n;
    for (let i = 0; i < n && !this.#closed; i++) {
      const server = this.#servers[(start + i) % n]!;
      const reply = await (tcp ? this.#tcp(query, server) : this.#udp(query, server));
      if (typeof reply !== 'string') return reply;
      onFailure(server, reply);
    }
    return null;
  }

  /** Ends every exchange in flight (each resolves as a failure). */
  close(): void {
    this.#closed = true;
    for (const p of [...this.#pending]) p.abort();
  }

  /** One UDP exchange: the reply, or why there is none. */
  #udp(query: Buffer, server: Nameserver): Promise<Buffer | string> {
    return new Promise((resolve) => {
      const socket: UdpSocket = createSocket(isIP(server.address) === 6 ? 'udp6' : 'udp4');
      const id = query.readUInt16BE(0);
      const pending: Pending = { abort: () => done('closed') };
      const timer = setTimeout(() => done(`no answer within ${this.#timeoutMs} ms`), this.#timeoutMs);
      const done = (result: Buffer | string): void => {
        if (!this.#pending.delete(pending)) return;
        clearTimeout(timer);
        socket.close();
        resolve(result);
      };
      this.#pending.add(pending);
      socket.on('error', (err) => done(err.message));
      socket.on('message', (msg) => {
        // Only the reply to this query (id and QR bit): anything else on the port is ignored.
        if (msg.length >= HEADER_BYTES && msg.readUInt16BE(0) === id && (msg.readUInt16BE(2) & FLAG_QR) !== 0) done(msg);
      });
      socket.connect(server.port, server.address, () => socket.send(query));
    });
  }

  /** One TCP exchange (RFC 1035 §4.2.2 framing): the reply, or why there is none. */
  #tcp(query: Buffer, server: Nameserver): Promise<Buffer | string> {
    return new Promise((resolve) => {
      const socket = new TcpSocket();
      const pending: Pending = { abort: () => done('closed') };
      const timer = setTimeout(() => done(`no answer within ${this.#timeoutMs} ms`), this.#timeoutMs);
      let buffered: Buffer = Buffer.alloc(0);
      const done = (result: Buffer | string): void => {
        if (!this.#pending.delete(pending)) return;
        clearTimeout(timer);
        socket.destroy();
        resolve(result);
      };
      this.#pending.add(pending);
      socket.on('error', (err) => done(err.message));
      socket.on('close', () => done('connection closed before an answer'));
      socket.on('data', (chunk: Buffer) => {
        buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
        if (buffered.length < 2) return;
        const len = buffered.readUInt16BE(0);
        if (buffered.length < 2 + len) return;
        const msg = buffered.subarray(2, 2 + len);
        done(msg.length >= HEADER_BYTES && msg.readUInt16BE(0) === query.readUInt16BE(0) ? msg : 'a reply to another query');
      });
      socket.connect(server.port, server.address, () => {
        const frame = Buffer.allocUnsafe(2 + query.length);
        frame.writeUInt16BE(query.length, 0);
        query.copy(frame, 2);
        socket.write(frame);
      });
    });
  }
}
