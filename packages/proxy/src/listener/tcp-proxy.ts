import { connect, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { TcpRoute } from '@remora/config';
import type { PeerIdentity } from '@remora/filters';
import { formatAddress, originalDestinations } from '../http/connection.ts';
import type { IstioMetrics, IstioStatsOverrides } from '../telemetry/istio-metrics.ts';
import type { OriginalDestination } from './original-dst.ts';
import { ResponseFlag } from '../telemetry/response-flags.ts';
import type { AccessLogRecord, RequestLogger } from '../telemetry/access-log-record.ts';
import type { RequestStats } from '../telemetry/istio-metrics.ts';
import { formatResponseFlags } from '../telemetry/response-flags.ts';
import type { HashSource } from '../upstream/load-balancer.ts';
import { classifyUpstreamError } from '../upstream/connect-errors.ts';
import { DELAYED_CLOSE_MS, SocketSplice, type SpliceOwner } from '../upstream/socket-splice.ts';
import type { ClusterHost } from '../upstream/upstream-host.ts';
import type { UpstreamCluster } from '../upstream/upstream-cluster.ts';
import { pickTcpRoute } from './tcp-route.ts';
import type { MetadataExchange } from './metadata-exchange.ts';
import { PEER_EXCHANGE_ALPN, type PeerWorkload } from '../telemetry/peer-metadata.ts';
import { asTlsError } from '../upstream/upstream-tls.ts';
import { spiffeIdOf } from '../tls/identity-store.ts';
import { socketPath } from '../unix-socket.ts';

/** What Istio's client offers over mTLS for TCP: the metadata exchange first where the cluster runs it (istiod's ALPNInMeshWithMxc). */
const MTLS_TCP_ALPN: readonly string[] = [PEER_EXCHANGE_ALPN, 'istio'];
const MTLS_TCP_ALPN_NO_EXCHANGE: readonly string[] = ['istio'];
const NO_ALPN: readonly string[] = [];

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
  /** Istio's TCP metadata exchange, for upstream connections of clusters that run it. */
  readonly metadataExchange: MetadataExchange;
  /** The listener's Istio stats config; null: the default reporting. */
  readonly istioStats: IstioStatsOverrides | null;
}

/**
 * One proxied TCP connection (Envoy's tcp_proxy): a Gateway TCP server's, a TLS-passthrough
 * one's, where the ClientHello already read and every byte after it go untouched to a host of
 * the cluster the SNI routes to, and back, or a sidecar's (a TCP service port, a capture
 * listener's passthrough, an inbound port after mesh mTLS). An ORIGINAL_DST cluster's host is
 * the connection's original destination. When both sides are done it leaves an access log
 * line in the TCP form Istio prints (`"- - -" 0`), with `UH` when no host was there (a
 * BlackHoleCluster, no original destination) and `UF` when the connection to it failed.
 *
 * A host with TLS settings (a DestinationRule's, or Istio mTLS for a `tlsMode: istio`
 * endpoint) gets a TLS connection. Over Istio mTLS to a cluster with Istio's metadata
 * exchange, ALPN offers `istio-peer-exchange`; when the server picks it the preambles are
 * exchanged (metadata-exchange.ts) before the server's bytes reach the client, and the
 * connection counts in `istio_tcp_*` under the server's workload and certificate. Inbound,
 * `peerWorkload` is what the client sent in its preamble.
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
  /** Counted in istio_tcp_connections_opened_total (once the peer is known, over mTLS with the exchange). */
  #opened = false;
  #connected = false;
  /** The downstream's bytes each way before the tunnel took it that are not the app's (an exchanged preamble). */
  readonly #readBase: number;
  readonly #writtenBase: number;
  readonly #ctx: TcpTunnelContext;
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
    peerWorkload: PeerWorkload | null = null,
    exchanged = false,
  ) {
    this.#ctx = ctx;
    // Istio counts the app's bytes: the preambles, drained by the exchange filter before its stats, are not.
    this.#readBase = exchanged ? downstream.bytesRead - head.length : 0;
    this.#writtenBase = exchanged ? downstream.bytesWritten : 0;
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
    if (peer !== null && ctx.inbound) {
      stats = peerWorkload === null ? stats.overMtls(peer.principal, ctx.metrics) : stats.refine(ctx.metrics, peerWorkload, `spiffe://${peer.principal}`, ctx.metrics.localPrincipal(), 0);
    }
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
    const tls = host.host.tls;
    const mesh = tls !== null && tls.mode === 'ISTIO_MUTUAL';
    const exchange = mesh && cluster.model.metadataExchange === true;
    let up: Socket;
    if (tls !== null) {
      const s = tls.connectTcp(host.host.address, host.host.port, exchange ? MTLS_TCP_ALPN : mesh ? MTLS_TCP_ALPN_NO_EXCHANGE : NO_ALPN, bind);
      if (s instanceof Error) {
        cluster.stats.cxConnectFail++;
        this.responseFlags |= ResponseFlag.UF;
        this.upstreamTransportFailureReason = (s as { code?: string }).code ?? s.message;
        this.#finish();
        return;
      }
      up = s;
    } else {
      const pipe = host.host.pipe;
      up = pipe !== null
        ? connect({ path: socketPath(pipe), allowHalfOpen: true })
        : connect({ host: host.host.address, port: host.host.port, allowHalfOpen: true, ...(bind !== undefined ? { localAddress: bind } : {}) });
    }
    const onConnected = (): void => {
      this.#connected = true;
      host.host.cxTotal++;
      up.setNoDelay(true);
    };
    // Registered before the splice's: the connect failure is known when the splice ends.
    up.on('error', (err: Error) => {
      if (this.#connected) return;
      cluster.stats.cxConnectFail++;
      cluster.reportLocalFailure(host);
      this.responseFlags |= ResponseFlag.UF;
      this.upstreamTransportFailureReason = classifyUpstreamError(tls !== null ? asTlsError(err) : err, false, null).reason;
    });
    // Envoy's tcp_proxy idle_timeout (Istio: connectionPool.tcp.idleTimeout, 1 h by default).
    const splice = new SocketSplice(down, up, { idleTimeoutMs: cluster.model.connectionPool.idleTimeoutMs, delayedCloseMs: DELAYED_CLOSE_MS }, this);
    this.#splice = splice;
    if (tls === null) {
      up.once('connect', () => {
        onConnected();
        this.#open();
      });
    } else {
      up.once('secureConnect', () => {
        onConnected();
        const t = up as TLSSocket;
        // The server's certificate names it in the metrics; what it says of itself, when it
        // exchanged metadata, its workload.
        const peerId = mesh ? spiffeIdOf(t.getPeerCertificate()) : null;
        const refine = (workload: PeerWorkload | null): void => {
          if (peerId !== null) this.#stats = this.#stats.refine(this.#ctx.metrics, workload, peerId, this.#ctx.metrics.localPrincipal(), 0);
        };
        if (!exchange) {
          refine(null);
          this.#open();
          return;
        }
        const mx = this.#ctx.metadataExchange;
        if (t.alpnProtocol !== PEER_EXCHANGE_ALPN) {
          mx.notNegotiated();
          refine(null);
          this.#open();
          this.#startSplice(splice, head, null);
          return;
        }
        // Ours goes before any of the client's bytes; the server's reach the client once its preamble is read.
        mx.stats.alpnProtocolFound.value++;
        up.write(mx.preamble);
        mx.stats.metadataAdded.value++;
        mx.read(up, (workload, rest) => {
          refine(workload);
          this.#open();
          this.#startSplice(splice, head, rest);
        });
      });
    }
    if (exchange) {
      // Nothing moves until the exchange is done (or found not negotiated): the client's bytes
      // must follow this proxy's preamble. Until then a side that goes away ends the tunnel.
      const early = (): void => {
        if (!splice.started) this.#finish();
      };
      down.once('close', early);
      down.on('error', early);
      up.once('close', early);
      return;
    }
    this.#startSplice(splice, head, null);
  }

  /** Bytes already read from the client (a ClientHello) go first; then the sockets are spliced. */
  #startSplice(splice: SocketSplice, head: Buffer, first: Buffer | null): void {
    if (this.#done) return;
    if (head.length > 0) splice.upstream.write(head);
    splice.start(first);
  }

  onSpliceClosed(): void {
    this.#finish();
  }

  /** Counts the connection as opened, under the labels it ends with. */
  #open(): void {
    if (this.#opened) return;
    this.#opened = true;
    this.#tag();
    this.#stats.tcpOpened();
  }

  #tagged = false;

  /** Under a stats config, the labels with its tag values as the connection opens (or ends unopened); it closes under the same. */
  #tag(): void {
    if (this.#tagged || this.#ctx.istioStats === null) return;
    this.#tagged = true;
    this.#stats = this.#stats.tagged(this.#ctx.metrics, this.#ctx.istioStats, this);
  }

  /** Closes both sides (idempotent) and logs the connection once. */
  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    const down = this.#downstream;
    down.destroy();
    this.#splice?.upstream.destroy();
    // Closed while the exchange was still waiting: it opened all the same.
    if (this.#connected) this.#open();
    this.bytesReceived = down.bytesRead - this.#readBase;
    this.bytesSent = down.bytesWritten - this.#writtenBase;
    this.durationMs = performance.now() - this.#startHr;
    this.#tag();
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
