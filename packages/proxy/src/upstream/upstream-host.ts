import { Pool, type Dispatcher } from 'undici';
import type { Endpoint, UpstreamProtocol } from '@remora/config';
import type { RequestStats } from '../telemetry/istio-metrics.ts';
import type { UpstreamTlsSettings } from './upstream-tls.ts';
import { spiffeIdOf } from '../tls/identity-store.ts';
import { socketPath } from '../unix-socket.ts';
import { H1Pool } from './h1-pool.ts';

/**
 * `REMORA_UPSTREAM_H1=undici` (read once, at start) sends HTTP/1.1 through undici's Pool
 * as HTTP/2 is, instead of the lean HTTP/1.1 pool: for A/B measurement and as an escape hatch.
 */
const H1_WITH_UNDICI = process.env['REMORA_UPSTREAM_H1'] === 'undici';

/** What the proxy asks of a host's connection pool: undici's Pool, or the HTTP/1.1 pool that speaks its API. */
export interface UpstreamPool {
  dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean;
  close(): Promise<void>;
  destroy(): Promise<void>;
  on(event: 'connect', listener: () => void): unknown;
  readonly stats: { readonly connected: number };
}

/** Settings that change how connections to an address are made; part of the pool key. */
export interface PoolSettings {
  readonly protocol: UpstreamProtocol;
  readonly maxConnections: number;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly maxRequestsPerConnection: number;
  /** HTTP/2 streams per connection; 0 = undici's default (100). */
  readonly maxConcurrentStreams: number;
  /** Connections this old are retired (no new requests; closed when their requests finish); 0 = never. */
  readonly maxConnectionDurationMs: number;
  /** TCP keepalive idle time before probes; 0 = undici's default (60 s). */
  readonly keepaliveTimeMs: number;
  /** TLS origination; null or absent: plaintext. */
  readonly tls?: UpstreamTlsSettings | null;
  /** The local address connections are made from (Envoy's `upstream_bind_config`); null or absent: the kernel picks. */
  readonly localAddress?: string | null;
}

/**
 * One upstream address and its keep-alive connection pool. Hosts are shared by every
 * cluster that reaches the same address with the same pool settings (a service and its
 * subsets), and survive config swaps, so connections and counters carry over.
 */
export class UpstreamHost {
  readonly key: string;
  readonly address: string;
  readonly port: number;
  /** `address:port`, as access logs print `%UPSTREAM_HOST%`. */
  readonly hostPort: string;
  readonly pool: UpstreamPool;
  /** The SNI of a TLS pool, passed with each request so undici keeps its connections; null for plaintext. */
  readonly servername: string | null;
  readonly tls: UpstreamTlsSettings | null;
  /** Requests in flight; LEAST_REQUEST reads it. */
  active = 0;
  /** When this address first joined a cluster: slow start measures a host's age from it. */
  readonly createdAt = Date.now();
  requestsTotal = 0;
  /** Tries answered with a status below 500 (Envoy's host `rq_success`). */
  rqSuccess = 0;
  /** Tries answered 5xx, timed out or reset (Envoy's host `rq_error`). */
  rqError = 0;
  connectFailures = 0;
  /** Connections opened to this address (Envoy's `upstream_cx_total`). */
  cxTotal = 0;
  /**
   * The SPIFFE ID the server's certificate carried on the last TLS connection made (an
   * address is one workload, so its connections present one identity); null: plaintext or none.
   */
  peerPrincipal: string | null = null;
  /** Mesh mTLS (ISTIO_MUTUAL, by DestinationRule or auto): this proxy's identity is the client's (`source_principal`). */
  readonly meshMtls: boolean;
  /** Clusters of the live config that use this host; 0 means it is waiting to be closed. */
  refs = 0;
  /** When refs dropped to 0 (ms since epoch), for the close grace period. */
  unusedSince = 0;

  /** A unix domain socket endpoint's path (Envoy's `pipe`); null: `address:port` over TCP. */
  readonly pipe: string | null;

  constructor(key: string, address: string, port: number, settings: PoolSettings, pipe: string | null = null) {
    this.key = key;
    this.address = address;
    this.port = port;
    this.pipe = pipe;
    // Envoy prints a pipe host as its path.
    this.hostPort = pipe !== null ? pipe : address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
    const tls = settings.tls ?? null;
    this.tls = tls;
    this.meshMtls = tls !== null && tls.mode === 'ISTIO_MUTUAL';
    this.servername = tls?.servername ?? null;
    const keepAliveTimeout = Math.min(settings.idleTimeoutMs || 4_000, 4_000);
    const tlsConnect =
      tls !== null
        ? tls.connector({
            connectTimeoutMs: settings.connectTimeoutMs,
            http2: settings.protocol === 'http2',
            keepaliveTimeMs: settings.keepaliveTimeMs,
            onSecure: (socket) => {
              this.peerPrincipal = spiffeIdOf(socket.getPeerCertificate());
            },
          })
        : null;
    const origin = `${tls !== null ? 'https' : 'http'}://${pipe !== null ? 'localhost' : this.hostPort}`;
    // A pipe endpoint: the connector dials the socket instead of the origin's host and port.
    const viaPipe = pipe !== null ? { socketPath: socketPath(pipe) } : {};
    this.pool =
      settings.protocol !== 'http2' && !H1_WITH_UNDICI
        ? new H1Pool(origin, {
            ...viaPipe,
            connections: settings.maxConnections > 0 ? settings.maxConnections : null,
            connectTimeout: settings.connectTimeoutMs,
            keepAliveTimeout,
            ...(settings.localAddress ? { localAddress: settings.localAddress } : {}),
            ...(settings.maxRequestsPerConnection > 0 ? { maxRequestsPerClient: settings.maxRequestsPerConnection } : {}),
            ...(settings.maxConnectionDurationMs > 0 ? { clientTtl: settings.maxConnectionDurationMs } : {}),
            ...(tlsConnect !== null ? { connect: tlsConnect } : settings.keepaliveTimeMs > 0 ? { keepAliveInitialDelay: settings.keepaliveTimeMs } : {}),
          })
        : new Pool(origin, {
            ...viaPipe,
            connections: settings.maxConnections > 0 ? settings.maxConnections : null,
            pipelining: 1,
            connectTimeout: settings.connectTimeoutMs,
            // Route and per-try timeouts are the proxy's, never undici's own.
            headersTimeout: 0,
            bodyTimeout: 0,
            keepAliveTimeout,
            ...(settings.localAddress ? { localAddress: settings.localAddress } : {}),
            ...(settings.maxRequestsPerConnection > 0 ? { maxRequestsPerClient: settings.maxRequestsPerConnection } : {}),
            // Envoy's max_connection_duration: undici retires a client past its age at the next dispatch.
            ...(settings.maxConnectionDurationMs > 0 ? { clientTtl: settings.maxConnectionDurationMs } : {}),
            // HTTP/2 to the upstream is cleartext with prior knowledge (h2c), as Envoy speaks it to
            // ports declared http2/grpc; over TLS it is negotiated by ALPN.
            ...(settings.protocol === 'http2'
              ? { allowH2: true, ...(tls === null ? { useH2c: true } : {}), maxConcurrentStreams: settings.maxConcurrentStreams || 100 }
              : { allowH2: false }),
            // TLS: keep-alive pools as for plaintext, plus session resumption in the connector.
            ...(tlsConnect !== null
              ? { connect: tlsConnect }
              : settings.keepaliveTimeMs > 0
                ? { connect: { keepAlive: true, keepAliveInitialDelay: settings.keepaliveTimeMs } }
                : {}),
          });
    this.pool.on('connect', () => {
      this.cxTotal++;
    });
  }

  static keyOf(address: string, port: number, s: PoolSettings): string {
    return `${s.protocol}|${address}|${port}|${s.maxConnections}|${s.connectTimeoutMs}|${s.idleTimeoutMs}|${s.maxRequestsPerConnection}|${s.maxConcurrentStreams}|${s.maxConnectionDurationMs}|${s.keepaliveTimeMs}|${s.tls?.key ?? ''}|${s.localAddress ?? ''}`;
  }

  /** Closes once in-flight requests finish. */
  close(): Promise<void> {
    return this.pool.close();
  }

  /** Closes now, failing whatever is still in flight (shutdown). */
  destroy(): Promise<void> {
    return this.pool.destroy();
  }
}

/** A host as one cluster sees it: the shared connection pool plus this cluster's view (labels, weight). */
export interface ClusterHost {
  readonly host: UpstreamHost;
  readonly endpoint: Endpoint;
  /** Istio request metrics for requests this cluster sends to this host. */
  readonly stats: RequestStats;
}
