import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';
import { createServer, isIP, type Server, type Socket } from 'node:net';
import type { NameTableEntry } from '@remora/config';
import { decode } from 'dns-packet';
import type { Logger } from '../logger.ts';
import { DEFAULT_UPSTREAM_TIMEOUT_MS, DnsForwarder } from './dns-forwarder.ts';
import { DnsLookupTable } from './dns-lookup-table.ts';
import {
  answerReply,
  FLAG_AA,
  FLAG_TC,
  HEADER_BYTES,
  headerOnlyReply,
  MAX_TCP_SIZE,
  MIN_UDP_SIZE,
  questionEnd,
  RCODE_FORMERR,
  RCODE_NOERROR,
  RCODE_NOTIMP,
  RCODE_SERVFAIL,
  screenHeader,
  truncatedRelay,
} from './dns-wire.ts';
import type { ResolvConf } from './resolv-conf.ts';

/** Istio's agent's DNS proxy address (constants.DefaultDNSProxyAddr). */
export const DEFAULT_DNS_ADDRESS = '127.0.0.1';
export const DEFAULT_DNS_PORT = 15053;

export interface DnsProxyOptions {
  readonly address: string;
  /** 0: any free port (UDP's, then TCP on the same number). */
  readonly port: number;
  readonly resolvConf: ResolvConf;
  /** The proxy's namespace: short names (`reviews`) answer for services in it. */
  readonly namespace: string;
  readonly clusterDomain: string;
  readonly logger: Logger;
  /** Per upstream resolver tried (default Istio's 5 s). */
  readonly upstreamTimeoutMs?: number;
  /** Queries forwarded at once; past it a query gets SERVFAIL at once (default 1024). */
  readonly maxUpstreamInFlight?: number;
  /** TCP connections from clients at once (default 256). */
  readonly maxConnections?: number;
  /** An idle client TCP connection is closed after this (default 8 s, miekg's server's). */
  readonly tcpIdleTimeoutMs?: number;
  /** Answer order for names with several addresses (default Math.random). */
  readonly random?: () => number;
}

/** Counters of what the DNS proxy did, Istio's agent's dns_* metrics by another name. */
export interface DnsProxyStats {
  /** Queries received (well-formed or not). */
  requests: number;
  /** Answered from the name table. */
  local: number;
  /** Sent to the upstream resolvers. */
  upstreamRequests: number;
  /** Forwarded queries no resolver answered (the client got SERVFAIL). */
  upstreamFailures: number;
  /** Malformed queries (FORMERR, NOTIMP or dropped). */
  malformed: number;
}

type Transport = 'udp' | 'tcp';

/** Bytes of answers a TCP client may leave unread before it is disconnected. */
const MAX_TCP_BACKLOG = 4 * MAX_TCP_SIZE;

/**
 * The DNS proxy of a captured pod, as Istio's agent runs it on 127.0.0.1:15053 (UDP and TCP)
 * when DNS capture is on: iptables sends the app's DNS queries here. Names of the mesh's
 * name table are answered at once (A and AAAA, TTL 30 s, authoritative; a table name without
 * an address of the asked type is NOERROR with no answer, never NXDOMAIN); everything else
 * is forwarded to the pod's resolvers from resolv.conf. A malformed query is answered
 * FORMERR (or NOTIMP, or dropped, as miekg/dns's server does), never an exception.
 */
export class DnsProxy {
  readonly stats: DnsProxyStats = { requests: 0, local: 0, upstreamRequests: 0, upstreamFailures: 0, malformed: 0 };
  readonly #opts: DnsProxyOptions;
  readonly #log: Logger;
  readonly #forwarder: DnsForwarder;
  readonly #random: () => number;
  readonly #udp: UdpSocket;
  readonly #tcp: Server;
  readonly #connections = new Set<Socket>();
  /** null until the first table: queries then get SERVFAIL, as the agent answers before its first NDS push. */
  #table: DnsLookupTable | null = null;
  #closed = false;

  private constructor(opts: DnsProxyOptions, udp: UdpSocket, tcp: Server) {
    this.#opts = opts;
    this.#log = opts.logger;
    this.#random = opts.random ?? Math.random;
    this.#forwarder = new DnsForwarder(opts.resolvConf.nameservers, opts.upstreamTimeoutMs ?? DEFAULT_UPSTREAM_TIMEOUT_MS, opts.maxUpstreamInFlight ?? 1024);
    this.#udp = udp;
    this.#tcp = tcp;
    udp.on('message', (msg, rinfo) => void this.#onUdp(msg, rinfo));
    // A send that fails (the client went away) is no reason to stop serving.
    udp.on('error', (err) => this.#log.debug(`udp: ${err.message}`));
    tcp.on('connection', (socket) => this.#onConnection(socket));
  }

  /**
   * Binds UDP and TCP on the address and port; rejects with a message naming what could not be
   * bound (and binds nothing) when either fails.
   */
  static async listen(opts: DnsProxyOptions): Promise<DnsProxy> {
    const family = isIP(opts.address);
    if (family === 0) throw new Error(`DNS proxy address must be an IP address, got "${opts.address}"`);
    // Port 0 (tests): TCP takes the port UDP got; another process may hold it over TCP, so try a few.
    for (let attempt = 0; ; attempt++) {
      const udp = createSocket({ type: family === 6 ? 'udp6' : 'udp4' });
      try {
        await new Promise<void>((resolve, reject) => {
          udp.once('error', reject);
          udp.bind(opts.port, opts.address, () => {
            udp.off('error', reject);
            resolve();
          });
        });
      } catch (err) {
        udp.close();
        throw new Error(`DNS proxy cannot listen on udp ${hostPort(opts.address, opts.port)}: ${(err as Error).message}`);
      }
      const port = udp.address().port;
      const tcp = createServer({ noDelay: true });
      tcp.maxConnections = opts.maxConnections ?? 256;
      try {
        await new Promise<void>((resolve, reject) => {
          tcp.once('error', reject);
          tcp.listen({ port, host: opts.address, exclusive: true }, () => {
            tcp.off('error', reject);
            resolve();
          });
        });
      } catch (err) {
        udp.close();
        if (opts.port === 0 && (err as NodeJS.ErrnoException).code === 'EADDRINUSE' && attempt < 5) continue;
        throw new Error(`DNS proxy cannot listen on tcp ${hostPort(opts.address, port)}: ${(err as Error).message}`);
      }
      return new DnsProxy(opts, udp, tcp);
    }
  }

  /** The bound address and port (the same for UDP and TCP). */
  get address(): { readonly address: string; readonly port: number } {
    const a = this.#udp.address();
    return { address: a.address, port: a.port };
  }

  get upstreams(): string[] {
    return this.#forwarder.servers.map((s) => hostPort(s.address, s.port));
  }

  get table(): DnsLookupTable | null {
    return this.#table;
  }

  /**
   * Swaps in the name table of a newly applied config (absent: an empty table, everything is
   * forwarded). Compiled here, once per config; queries in flight keep the table they started with.
   */
  updateNameTable(entries: readonly NameTableEntry[] | undefined): void {
    const table =
      entries === undefined || entries.length === 0
        ? DnsLookupTable.EMPTY
        : DnsLookupTable.build(entries, { namespace: this.#opts.namespace, clusterDomain: this.#opts.clusterDomain, search: this.#opts.resolvConf.search });
    this.#table = table;
    this.#log.debug(`name table: ${entries?.length ?? 0} hosts, ${table.size} names`);
  }

  /** Stops listening, closes client connections and ends forwarded queries. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#forwarder.close();
    for (const c of this.#connections) c.destroy();
    await Promise.all([new Promise<void>((r) => this.#udp.close(() => r())), new Promise<void>((r) => this.#tcp.close(() => r()))]);
  }

  /**
   * The reply to one query message, or null to send nothing. Never throws: every failure is
   * a DNS response code.
   */
  async answer(query: Buffer, transport: Transport): Promise<Buffer | null> {
    this.stats.requests++;
    if (query.length < HEADER_BYTES) {
      // No header to answer with: dropped, as miekg's server drops it.
      this.stats.malformed++;
      return null;
    }
    const screen = screenHeader(query);
    if (screen !== 'accept') {
      this.stats.malformed++;
      if (screen === 'ignore') return null;
      return headerOnlyReply(query, screen === 'notimp' ? RCODE_NOTIMP : RCODE_FORMERR);
    }
    let name: string;
    let qtype: number;
    let qEnd: number;
    let udpSize = MIN_UDP_SIZE;
    try {
      const packet = decode(query);
      const q = packet.questions?.[0];
      if (q === undefined) throw new Error('no question');
      name = q.name.toLowerCase();
      qEnd = questionEnd(query);
      qtype = query.readUInt16BE(qEnd - 4);
      for (const rr of packet.additionals ?? []) {
        if (rr.type === 'OPT' && rr.udpPayloadSize > udpSize) udpSize = rr.udpPayloadSize;
      }
    } catch {
      this.stats.malformed++;
      return headerOnlyReply(query, RCODE_FORMERR);
    }
    const maxSize = transport === 'tcp' ? MAX_TCP_SIZE : udpSize;
    const table = this.#table;
    if (table === null) return answerReply(query, qEnd, RCODE_SERVFAIL, 0, [], 0);

    const found = table.lookup(name, qtype);
    if (found !== null) {
      this.stats.local++;
      return this.#localReply(query, qEnd, found.records, found.fixed, maxSize);
    }

    this.stats.upstreamRequests++;
    const reply = await this.#forwarder.exchange(query, transport === 'tcp', (server, why) =>
      this.#log.debug(`upstream ${hostPort(server.address, server.port)} failed for ${name} (${transport}): ${why}`),
    );
    if (reply === null) {
      this.stats.upstreamFailures++;
      return answerReply(query, qEnd, RCODE_SERVFAIL, 0, [], 0);
    }
    return reply.length <= maxSize ? reply : truncatedRelay(reply, query, qEnd);
  }

  /** The table's answer, addresses in random order (DNS load balancing for headless services), cut to what fits. */
  #localReply(query: Buffer, qEnd: number, records: readonly Buffer[], fixed: number, maxSize: number): Buffer {
    let ordered = records;
    if (records.length - fixed > 1) {
      const copy = records.slice();
      for (let i = copy.length - 1; i > fixed; i--) {
        const j = fixed + Math.floor(this.#random() * (i - fixed + 1));
        const tmp = copy[i]!;
        copy[i] = copy[j]!;
        copy[j] = tmp;
      }
      ordered = copy;
    }
    let size = qEnd;
    let count = 0;
    while (count < ordered.length && size + ordered[count]!.length <= maxSize) size += ordered[count++]!.length;
    return answerReply(query, qEnd, RCODE_NOERROR, count < ordered.length ? FLAG_AA | FLAG_TC : FLAG_AA, ordered, count);
  }

  async #onUdp(msg: Buffer, rinfo: RemoteInfo): Promise<void> {
    const reply = await this.answer(msg, 'udp');
    if (reply === null || this.#closed) return;
    this.#udp.send(reply, rinfo.port, rinfo.address, (err) => {
      if (err) this.#log.debug(`udp reply to ${hostPort(rinfo.address, rinfo.port)}: ${err.message}`);
    });
  }

  /** A client over TCP: length-framed queries, possibly several pipelined, answered as each completes. */
  #onConnection(socket: Socket): void {
    if (this.#closed) {
      socket.destroy();
      return;
    }
    this.#connections.add(socket);
    socket.setTimeout(this.#opts.tcpIdleTimeoutMs ?? 8_000, () => socket.destroy());
    socket.on('close', () => this.#connections.delete(socket));
    socket.on('error', () => socket.destroy());
    let buffered: Buffer = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2) {
        const len = buffered.readUInt16BE(0);
        if (buffered.length < 2 + len) break;
        const msg = Buffer.from(buffered.subarray(2, 2 + len));
        buffered = buffered.subarray(2 + len);
        void this.answer(msg, 'tcp').then((reply) => {
          if (reply === null) {
            // Nothing to say to a message that is not a query: the connection is useless.
            socket.destroy();
            return;
          }
          if (socket.destroyed) return;
          // A client that pipelines queries but does not read the answers is cut off, not buffered for.
          if (socket.writableLength > MAX_TCP_BACKLOG) {
            socket.destroy();
            return;
          }
          const frame = Buffer.allocUnsafe(2 + reply.length);
          frame.writeUInt16BE(reply.length, 0);
          reply.copy(frame, 2);
          socket.write(frame);
        });
      }
    });
  }
}

function hostPort(address: string, port: number): string {
  return isIP(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}
