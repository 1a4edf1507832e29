import { connect, type Socket } from 'node:net';
import type { TcpRoute } from '@remora/config';
import type { PeerIdentity } from '@remora/filters';
import { formatAddress, originalDestinations } from '../http/connection.ts';
import type { IstioMetrics } from '../telemetry/istio-metrics.ts';
import type { OriginalDestination } from './original-dst.ts';
import { ResponseFlag } from '../http/response-flags.ts';
import type { AccessLogRecord, RequestLogger } from '../telemetry/access-log.ts';
import type { RequestStats } from '../telemetry/istio-metrics.ts';
import { formatResponseFlags } from '../http/response-flags.ts';
import type { HashSource } from '../upstream/load-balancer.ts';
import { classifyUpstreamError } from '../upstream/connect-errors.ts';
import { DELAYED_CLOSE_MS, SocketSplice, type SpliceOwner } from '../upstream/socket-splice.ts';
import type { ClusterHost } from '../upstream/upstream-host.ts';
import type { UpstreamCluster } from '../upstream/upstream-cluster.ts';
import { pickTcpRoute } from './tcp-route.ts';

/** Passthrough connections have no request to hash on. */
const NO_HASH: HashSource = {
  requestHeader: () => null,
  cookie: () => null,
  queryParam: () => null,
  sourceIp: '',
  setResponseCookie: () => {},
};

/** What a tunnel needs besides its connection and routes. */
export interface TcpTunnelContext {
  readonly clusters: ReadonlyMap<string, UpstreamCluster>;
  /** Istio's TCP metrics of connections that reach no cluster. */
  readonly unroutedStats: RequestStats;
  readonly log: RequestLogger;
  /** Istio's metrics, for the label sets of mTLS peers (inbound). */
  readonly metrics: IstioMetrics;
  /** True on an inbound listener: a verified mesh peer labels the metrics (`source_principal`). */
  readonly inbound: boolean;
}

/**
 * One proxied TCP connection (Envoy's tcp_proxy): a Gateway TCP server's, a TLS-passthrough
 * one's, where the ClientHello already read and every byte after it go untouched to a host of
 * the cluster the SNI routes to, and back, or a sidecar's (a TCP service port, a capture
 * listener's passthrough, an inbound port after mesh mTLS). An ORIGINAL_DST cluster's host is
 * the connection's original destination. When both sides are done it leaves an access log
 * line in the TCP form Istio prints (`"- - -" 0`), with `UH` when no host was there (a
 * BlackHoleCluster, no original destination) and `UF` when the connection to it failed.
 */
export class TcpTunnel implements AccessLogRecord, SpliceOwner {
  readonly startTime = Date.now();
  readonly #startHr = performance.now();
  readonly method = '-';
  readonly originalPath = '-';
  readonly protocol = '-';
  readonly responseCode = 0;
  responseFlags = 0;
  readonly responseCodeDetails = '-';
  upstreamTransportFailureReason = '';
  bytesReceived = 0;
  bytesSent = 0;
  durationMs = 0;
  readonly upstreamServiceTimeMs = -1;
  readonly xForwardedFor = null;
  readonly userAgent = null;
  readonly requestId = null;
  readonly authority = null;
  upstreamHost: string | null = null;
  readonly upstreamCluster: string | null;
  readonly downstreamLocalAddress: string;
  readonly downstreamRemoteAddress: string;
  readonly requestedServerName: string | null;
  readonly routeName = null;
  /** The downstream's verified mesh identity (mTLS terminated here); null otherwise. */
  readonly peer: PeerIdentity | null;
  readonly #downstream: Socket;
  readonly #log: RequestLogger;
  readonly #onClose: (t: TcpTunnel) => void;
  #splice: SocketSplice | null = null;
  #done = false;
  /** Istio's TCP metrics: the host's label set, else the cluster's or the listener's. */
  #stats: RequestStats;

  constructor(
    downstream: Socket,
    head: Buffer,
    routes: readonly TcpRoute[],
    sni: string | null,
    ctx: TcpTunnelContext,
    onClose: (t: TcpTunnel) => void,
    peer: PeerIdentity | null = null,
  ) {
    this.#log = ctx.log;
    this.#onClose = onClose;
    this.#downstream = downstream;
    // Half-close travels through, as with Envoy's tcp_proxy: a client that shuts down its
    // sending side (nc at the end of its input, a QUIT then EOF) still gets what the server
    // says after that, until the server closes too.
    downstream.allowHalfOpen = true;
    this.peer = peer;
    const original: OriginalDestination | null = originalDestinations.get(downstream) ?? null;
    // Envoy reports a redirected connection's original destination as its local address.
    this.downstreamLocalAddress = original !== null ? formatAddress(original.address, original.port) : formatAddress(downstream.localAddress, downstream.localPort);
    this.downstreamRemoteAddress = formatAddress(downstream.remoteAddress, downstream.remotePort);
    this.requestedServerName = sni;
    const cluster = pickTcpRoute(routes, sni, ctx.clusters);
    this.upstreamCluster = cluster?.name ?? null;
    const host = cluster === null ? null : cluster.originalDst !== null ? cluster.originalDst.hostFor(original) : cluster.pick(NO_HASH);
    let stats = host !== null ? host.stats : (cluster?.noHostStats ?? ctx.unroutedStats);
    if (peer !== null && ctx.inbound) stats = stats.overMtls(peer.principal, ctx.metrics);
    this.#stats = stats;
    if (cluster === null || host === null) {
      if (cluster !== null) cluster.noHealthyUpstream++;
      // No route for the name, or no healthy host: Envoy closes the connection, flag UH.
      this.responseFlags = ResponseFlag.UH;
      this.#finish();
      return;
    }
    this.#connect(cluster, host, head);
  }

  #connect(cluster: UpstreamCluster, host: ClusterHost, head: Buffer): void {
    const down = this.#downstream;
    this.upstreamHost = host.host.hostPort;
    const bind = cluster.model.upstreamBindAddress;
    const up = connect({ host: host.host.address, port: host.host.port, allowHalfOpen: true, ...(bind !== undefined ? { localAddress: bind } : {}) });
    let connected = false;
    up.once('connect', () => {
      connected = true;
      host.host.cxTotal++;
      up.setNoDelay(true);
      this.#stats.tcpOpened();
    });
    // Registered before the splice's: the connect failure is known when the splice ends.
    up.on('error', (err: Error) => {
      if (connected) return;
      cluster.stats.cxConnectFail++;
      cluster.reportLocalFailure(host);
      this.responseFlags |= ResponseFlag.UF;
      this.upstreamTransportFailureReason = classifyUpstreamError(err, false, null).reason;
    });
    // Bytes already read (a ClientHello) go first; the rest is queued until the connection is made.
    if (head.length > 0) up.write(head);
    // Envoy's tcp_proxy idle_timeout (Istio: connectionPool.tcp.idleTimeout, 1 h by default).
    this.#splice = new SocketSplice(down, up, { idleTimeoutMs: cluster.model.connectionPool.idleTimeoutMs, delayedCloseMs: DELAYED_CLOSE_MS }, this);
    this.#splice.start();
  }

  onSpliceClosed(): void {
    this.#finish();
  }

  /** Closes both sides (idempotent) and logs the connection once. */
  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    const down = this.#downstream;
    down.destroy();
    this.#splice?.upstream.destroy();
    this.bytesReceived = down.bytesRead;
    this.bytesSent = down.bytesWritten;
    this.durationMs = performance.now() - this.#startHr;
    this.#stats.tcpClosed(formatResponseFlags(this.responseFlags), this.bytesSent, this.bytesReceived);
    this.#log.log(this);
    this.#onClose(this);
  }

  /** Cuts the connection now (shutdown); it is logged once both sides have closed. */
  close(): void {
    if (this.#splice === null) this.#finish();
    else this.#splice.close();
  }
}
