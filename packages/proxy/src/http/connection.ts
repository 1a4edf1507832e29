import type { Socket } from 'node:net';
import type { PeerIdentity } from '@remora/filters';
import type { Logger } from '../logger.ts';
import type { AccessLog } from '../telemetry/access-log.ts';
import type { Exchange } from './exchange.ts';
import type { IdentityStore } from '../tls/identity-store.ts';

/** What exchanges need from the process around them. */
export interface ListenerContext {
  readonly accessLog: AccessLog;
  readonly log: Logger;
  /** True once draining started: responses carry `Connection: close`. */
  readonly draining: boolean;
  /** The verified identity of a connection's peer (from mTLS); null when none. */
  readonly peerIdentity: ((socket: Socket) => PeerIdentity | null) | null;
  /** The workload identity: mesh mTLS listeners serve with it; null when there is none. */
  readonly identity: IdentityStore | null;
  /** True while the overload manager sheds new requests (503 OM). */
  readonly overloaded: boolean;
  /** Counts a request shed by the overload manager. */
  noteShed(): void;
  /** Downstream timeouts: complete request headers within `headersMs`; whole request within `requestMs` (0: none). */
  readonly timeouts: { readonly headersMs: number; readonly requestMs: number };
}

function formatAddress(ip: string | undefined, port: number | undefined): string {
  if (ip === undefined) return '-';
  return ip.includes(':') ? `[${ip}]:${port ?? 0}` : `${ip}:${port ?? 0}`;
}

/**
 * Per downstream connection: addresses formatted once, and the exchanges in flight on it, so
 * that one `close` listener per connection (not per request) can cancel their upstream work.
 */
export class Connection {
  readonly socket: Socket;
  readonly localAddress: string;
  readonly remoteAddress: string;
  readonly remoteIp: string;
  /** The address and port the connection was accepted on. */
  readonly localIp: string;
  readonly localPort: number;
  /** The peer's verified workload identity; null for plaintext. */
  readonly peer: PeerIdentity | null;
  #current: Exchange | null = null;
  /** Pipelined requests beyond the first; rare, so made only when needed. */
  #others: Set<Exchange> | null = null;

  constructor(socket: Socket, peer: PeerIdentity | null = null) {
    this.socket = socket;
    this.localAddress = formatAddress(socket.localAddress, socket.localPort);
    this.remoteAddress = formatAddress(socket.remoteAddress, socket.remotePort);
    this.remoteIp = socket.remoteAddress ?? '';
    this.localIp = socket.localAddress ?? '';
    this.localPort = socket.localPort ?? 0;
    this.peer = peer;
  }

  get idle(): boolean {
    return this.#current === null && (this.#others === null || this.#others.size === 0);
  }

  add(ex: Exchange): void {
    if (this.#current === null) this.#current = ex;
    else (this.#others ??= new Set()).add(ex);
  }

  onExchangeDone(ex: Exchange): void {
    if (this.#current === ex) this.#current = null;
    else this.#others?.delete(ex);
  }

  onClose(): void {
    const current = this.#current;
    if (current !== null) current.onDownstreamClose();
    if (this.#others !== null) for (const ex of [...this.#others]) ex.onDownstreamClose();
  }
}
