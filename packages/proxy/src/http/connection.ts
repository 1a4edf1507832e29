import { createHash } from 'node:crypto';
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { TrafficDirection } from '@remora/config';
import { peerIdentityFromSpiffe, spiffeIdOf } from '../tls/identity-store.ts';
import type { PeerIdentity } from '@remora/filters';
import type { Logger } from '../logger.ts';
import type { AccessLog } from '../telemetry/access-log.ts';
import type { IdentityStore } from '../tls/identity-store.ts';
import type { IstioMetrics } from '../telemetry/istio-metrics.ts';
import type { LocalPeerMetadata, PeerMetadataCache } from '../telemetry/peer-metadata.ts';
import type { MetadataExchange } from '../listener/metadata-exchange.ts';
import type { OriginalDestination } from '../listener/original-dst.ts';

/**
 * The original destination of each accepted socket a capture listener found one for (and of
 * the TLS socket made on it): what the connection, its requests and its tunnel report as the
 * downstream local address, and where ORIGINAL_DST clusters send it.
 */
export const originalDestinations = new WeakMap<object, OriginalDestination>();

/** A request in flight on a connection: cancelled when the client goes away. */
export interface DownstreamStream {
  onDownstreamClose(): void;
}

/** A listener that takes over a socket accepted elsewhere (Envoy's hand-off by original destination). */
export interface SocketAcceptor {
  accept(socket: Socket): void;
}

/** What exchanges need from the process around them. */
export interface ListenerContext {
  readonly accessLog: AccessLog;
  readonly log: Logger;
  /** Istio's request metrics (for label sets made on demand, e.g. per mTLS peer). */
  readonly metrics: IstioMetrics;
  /** This proxy's `x-envoy-peer-metadata` and `-id` values (Istio's metadata exchange). */
  readonly peerMetadata: LocalPeerMetadata;
  /** Peers decoded from the metadata headers they sent. */
  readonly peerCache: PeerMetadataCache;
  /** Istio's TCP metadata exchange (`istio-peer-exchange`): this proxy's preamble and the filter's counters. */
  readonly metadataExchange: MetadataExchange;
  /** Where connection-level events (TLS) are logged. */
  readonly connectionLog: Logger;
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
  /**
   * The original destination of a connection a capture listener (`useOriginalDst`, on
   * `listenerPort`) accepted; null when it was not redirected. Null (no function): capture is
   * off, every connection is served as made to the listener.
   */
  readonly originalDestination: ((socket: Socket, listenerPort: number) => Promise<OriginalDestination | null>) | null;
  /**
   * The listener of `direction` that serves connections for `dest` (Envoy's hand-off by
   * original destination): exactly that address and port, else the wildcard address on that
   * port; null when none does.
   */
  handOff(direction: TrafficDirection, dest: OriginalDestination): SocketAcceptor | null;
}

/** `ip:port` as Envoy's access log prints addresses (`[v6]:port`); `-` when unknown. */
export function formatAddress(ip: string | undefined, port: number | undefined): string {
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
  /** The peer's SPIFFE ID (`spiffe://` and the principal), for metrics; null for plaintext. */
  readonly peerSpiffeId: string | null;
  /** TLS terminated here: requests are `https`. */
  readonly secure: boolean;
  /** The SNI the client asked for; null without TLS or SNI. */
  readonly sni: string | null;
  /**
   * The `x-forwarded-client-cert` element describing this connection's verified client
   * certificate (`By`, `Hash`, `Subject`, `URI`), as Envoy writes it; null without one.
   */
  readonly xfcc: string | null;
  /** The Gateway TLS server (its `origin`) that terminated this connection; null otherwise. */
  readonly tlsServer: string | null;
  /** Where the client was going when the pod's iptables sent it to the proxy; null when it came directly. */
  readonly originalDst: OriginalDestination | null;
  #current: DownstreamStream | null = null;
  /** Pipelined requests beyond the first; rare, so made only when needed. */
  #others: Set<DownstreamStream> | null = null;

  constructor(socket: Socket, peer: PeerIdentity | null = null, direction: TrafficDirection | null = null, tlsServer: string | null = null) {
    this.socket = socket;
    this.tlsServer = tlsServer;
    this.secure = socket instanceof TLSSocket;
    this.sni = this.secure ? ((socket as TLSSocket).servername || null) : null;
    this.xfcc = this.secure && direction !== 'outbound' ? clientCertElement(socket as TLSSocket) : null;
    // Envoy reports a redirected connection's original destination as its local address.
    const od = originalDestinations.get(socket) ?? null;
    this.originalDst = od;
    this.localAddress = od !== null ? formatAddress(od.address, od.port) : formatAddress(socket.localAddress, socket.localPort);
    this.remoteAddress = formatAddress(socket.remoteAddress, socket.remotePort);
    this.remoteIp = socket.remoteAddress ?? '';
    this.localIp = od !== null ? od.address : (socket.localAddress ?? '');
    this.localPort = od !== null ? od.port : (socket.localPort ?? 0);
    this.peer = peer;
    this.peerSpiffeId = peer === null ? null : `spiffe://${peer.principal}`;
  }

  /** The mesh identity of a TLS peer whose certificate verified; null otherwise. */
  static tlsPeer(socket: Socket): PeerIdentity | null {
    if (!(socket instanceof TLSSocket) || !socket.authorized) return null;
    const id = spiffeIdOf(socket.getPeerCertificate());
    return id === null ? null : peerIdentityFromSpiffe(id);
  }

  get idle(): boolean {
    return this.#current === null && (this.#others === null || this.#others.size === 0);
  }

  add(ex: DownstreamStream): void {
    if (this.#current === null) this.#current = ex;
    else (this.#others ??= new Set()).add(ex);
  }

  onExchangeDone(ex: DownstreamStream): void {
    if (this.#current === ex) this.#current = null;
    else this.#others?.delete(ex);
  }

  onClose(): void {
    const current = this.#current;
    if (current !== null) current.onDownstreamClose();
    if (this.#others !== null) for (const ex of [...this.#others]) ex.onDownstreamClose();
  }
}

/** Envoy's XFCC element for a verified client certificate; null when the peer sent none. */
function clientCertElement(socket: TLSSocket): string | null {
  if (!socket.authorized) return null;
  const peer = socket.getPeerCertificate();
  if (peer === null || peer.raw === undefined) return null;
  const own = socket.getCertificate();
  const by = own !== null && 'subjectaltname' in own ? spiffeIdOf(own as never) : null;
  const uri = spiffeIdOf(peer);
  const hash = createHash('sha256').update(peer.raw).digest('hex');
  const subject = peer.subject ? Object.entries(peer.subject).map(([k, v]) => `${k}=${String(v)}`).join(',') : '';
  return `${by !== null ? `By=${by};` : ''}Hash=${hash};Subject="${subject}"${uri !== null ? `;URI=${uri}` : ''}`;
}
