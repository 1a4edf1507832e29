/** Where the proxy accepts connections and which route table serves them. */

/**
 * Traffic direction, as Envoy's: it sets the metrics reporter (`source` for outbound and
 * gateways, `destination` for inbound) and which policies apply (server-side policy runs on
 * inbound listeners and gateways).
 */
export type TrafficDirection = 'outbound' | 'inbound' | 'gateway';

/**
 * An HTTP filter in a listener's chain (Envoy's HttpFilter): its name, its typed_config as
 * proto3 JSON without `@type` (the name says the type), checked at compile time.
 */
export interface HttpFilterConfig {
  readonly name: string;
  readonly config: unknown;
  /** Envoy's `is_optional`: a filter the proxy does not know is skipped (with a warning) instead of refused. */
  readonly isOptional?: boolean;
}

/** One TCP route (a TLS-passthrough server's by SNI, or a TCP server's): weighted clusters. */
export interface TcpRoute {
  /** SNI names (`*` and `*.suffix` wildcards); empty: any (always empty for plain TCP). */
  readonly sniHosts: readonly string[];
  readonly clusters: readonly { readonly cluster: string; readonly weight: number }[];
  /** `<namespace>/<name>` of the VirtualService. */
  readonly origin: string;
}

/** A Gateway server that speaks TLS, selected by SNI among the servers on its port. */
export interface TlsServer {
  /** SNI names this server answers: `*`, `*.suffix` or exact (from the server's `hosts`). */
  readonly hosts: readonly string[];
  readonly mode: 'SIMPLE' | 'MUTUAL' | 'OPTIONAL_MUTUAL' | 'ISTIO_MUTUAL' | 'PASSTHROUGH';
  /** PEM files; null for PASSTHROUGH and ISTIO_MUTUAL (the workload identity is used). */
  readonly certFile: string | null;
  readonly keyFile: string | null;
  /** The Gateway's `credentialName` the files came from (`kubernetes://<name>` in SDS terms); absent: files named directly. */
  readonly credentialName?: string;
  /** Roots to verify client certificates (MUTUAL). */
  readonly caFile: string | null;
  /** Client certificate SANs accepted (MUTUAL); empty: any that chains to the CA. */
  readonly subjectAltNames: readonly string[];
  readonly minVersion: 'TLSv1.2' | 'TLSv1.3' | null;
  readonly maxVersion: 'TLSv1.2' | 'TLSv1.3' | null;
  /** OpenSSL cipher names; empty: the defaults. */
  readonly cipherSuites: readonly string[];
  /** PASSTHROUGH: where the TLS bytes go. */
  readonly tcpRoutes: readonly TcpRoute[];
  /** `namespace/name#index` of the Gateway server, for messages. */
  readonly origin: string;
  /**
   * The route table for requests on this server's connections (istiod's per-server RDS
   * `https.<port>.<port name>.<gateway>.<namespace>`): a client that made its handshake with
   * one server's name cannot reach another server's hosts (and skip its client-certificate
   * check) by sending their Host. Absent: the listener's `routeConfig`.
   */
  readonly routeConfig?: string;
}

/**
 * How a listener's connections are secured. `gateway`: TLS servers picked by SNI (terminated
 * ones route HTTP with the listener's route table). `mesh`: Istio mTLS with the workload
 * identity on a sidecar's inbound side (PeerAuthentication): STRICT demands it, PERMISSIVE
 * also accepts plaintext on the same port.
 */
export type ListenerTls =
  | { readonly kind: 'gateway'; readonly servers: readonly TlsServer[] }
  | { readonly kind: 'mesh'; readonly mode: 'STRICT' | 'PERMISSIVE' };

/** Envoy's `server_header_transformation`: what becomes of the `server` response header. */
export type ServerHeaderTransformation = 'OVERWRITE' | 'APPEND_IF_ABSENT' | 'PASS_THROUGH';

/**
 * The settings of Envoy's HTTP connection manager that decide which requests are served at
 * all and what every response (proxied or local) says about the proxy; Envoy's field names.
 */
export interface HttpConnectionManagerOptions {
  /** `server_name`: the `server` header's value (Envoy's default `envoy`). */
  readonly serverName: string;
  /** OVERWRITE (Envoy's default): always `serverName`; APPEND_IF_ABSENT: unless the upstream sent one; PASS_THROUGH: never added. */
  readonly serverHeaderTransformation: ServerHeaderTransformation;
  readonly httpProtocolOptions: {
    /** `accept_http_10`: serve HTTP/1.0 and HTTP/0.9 requests; false answers them 426 Upgrade Required. */
    readonly acceptHttp10: boolean;
  };
  /**
   * `upgrade_configs` has `CONNECT` enabled: CONNECT requests are served on routes that match
   * them (`connect_matcher`) unless the route disables it. Absent: only a route's own CONNECT
   * upgrade config lets one through (others are refused 403). WebSocket is always enabled.
   */
  readonly upgradeConnect?: boolean;
}

/**
 * Where a listener's spans go (Envoy's `tracing.provider`): an OpenTelemetry collector
 * (`envoy.tracers.opentelemetry`, OTLP over gRPC or HTTP protobuf) or a Zipkin collector
 * (`envoy.tracers.zipkin`, v2 JSON). `cluster` is the Cluster that reaches it; `authority`
 * the Host (HTTP) or `:authority` (gRPC) the export carries.
 */
export type TracingProvider =
  | {
      readonly kind: 'opentelemetry';
      readonly cluster: string;
      readonly authority: string;
      /** `grpc`: OTLP/gRPC (istiod's default); `http`: OTLP/HTTP protobuf to `path`. */
      readonly transport: 'grpc' | 'http';
      /** HTTP: the request path (`/v1/traces`); '' for gRPC. */
      readonly path: string;
      /** The spans' `service.name` resource attribute (istiod: the node's cluster, `<app>.<namespace>`). */
      readonly serviceName: string;
      /** Export timeout; null: the exporter's default (10 s). */
      readonly timeoutMs: number | null;
      /** Headers (HTTP) or initial metadata (gRPC) added to each export. */
      readonly headers: Readonly<Record<string, string>>;
    }
  | {
      readonly kind: 'zipkin';
      readonly cluster: string;
      readonly authority: string;
      /** The collector's path (`/api/v2/spans`). */
      readonly path: string;
      /** Envoy's `trace_id_128bit`: new traces get 128-bit ids (Istio's default), else 64-bit. */
      readonly traceId128Bit: boolean;
      /** Envoy's `shared_span_context`: a server span reuses its client's span id (Istio: false). */
      readonly sharedSpanContext: boolean;
    };

/**
 * A tag set on every span of a listener (Envoy's `CustomTag`): a literal, a request header,
 * an environment variable of the proxy, or a value a filter put in the request's dynamic
 * metadata (istiod's RBAC dry-run tags). A header or metadata key that is absent gives
 * `defaultValue`, and no tag when that is ''.
 */
export type TracingCustomTag =
  | { readonly tag: string; readonly kind: 'literal'; readonly value: string }
  | { readonly tag: string; readonly kind: 'requestHeader'; readonly name: string; readonly defaultValue: string }
  | { readonly tag: string; readonly kind: 'environment'; readonly name: string; readonly defaultValue: string }
  | { readonly tag: string; readonly kind: 'metadata'; readonly filter: string; readonly key: string; readonly defaultValue: string };

/**
 * Envoy's HTTP connection manager `tracing`: a span per request, exported to `provider`.
 * A request is traced when its parent (an incoming `traceparent` or B3 context) says it is
 * sampled; with no sampled flag, when it carries `x-envoy-force-trace`, or
 * `x-client-trace-id` (with `clientSamplingPercent`), or falls in `randomSamplingPercent`;
 * `overallSamplingPercent` caps all of these. Untraced requests still pass a context on (with
 * the sampled flag off) so the next hops agree.
 */
export interface HttpTracing {
  readonly provider: TracingProvider;
  /** Envoy's `random_sampling`, 0–100 (Envoy's default 100; Istio's mesh default 1). */
  readonly randomSamplingPercent: number;
  /** Envoy's `client_sampling`: requests with `x-client-trace-id`, 0–100 (default 100). */
  readonly clientSamplingPercent: number;
  /** Envoy's `overall_sampling`, 0–100 (default 100). */
  readonly overallSamplingPercent: number;
  readonly customTags: readonly TracingCustomTag[];
  /**
   * Envoy's `spawn_upstream_span`: the request's span is a SERVER span and each upstream
   * request gets a CLIENT child span (istiod sets it on gateways). False: one span, CLIENT on
   * outbound listeners, SERVER on inbound ones and gateways.
   */
  readonly spawnUpstreamSpan: boolean;
  /** Envoy's `max_path_tag_length`: `http.url` is cut to this many characters (default 256). */
  readonly maxPathTagLength: number;
}

/**
 * One of Envoy's `access_log` entries of a connection manager or tcp_proxy, as
 * `envoy.access_loggers.file` (or `stdout`/`stderr`) writes it: a line per finished request
 * (or TCP connection).
 */
export interface AccessLogConfig {
  /** The file; `/dev/stdout` and `/dev/stderr` are the process's own streams. */
  readonly path: string;
  /**
   * Envoy's `log_format`: a format string (`text`, its newline included), or a JSON object
   * whose string values are format strings (`json`, a line of JSON each; nested objects
   * too). Absent: Envoy's default text format.
   */
  readonly format?: { readonly text: string } | { readonly json: Readonly<Record<string, unknown>> };
  /**
   * Envoy's `filter` with the CEL extension filter (`envoy.access_loggers.extension_filters.cel`,
   * Istio's Telemetry `accessLogging[].filter.expression`): a request is logged only when this
   * expression over its attributes is true (an evaluation error: not logged). Absent: every one.
   */
  readonly filter?: string;
}

/**
 * One entry of Istio's stats filter config (`istio.stats`, stats.PluginConfig `metrics[]`,
 * as istiod writes a Telemetry resource's `metrics[].overrides`): what changes for one of the
 * istio_* metrics, or for all of them.
 */
export interface IstioMetricConfig {
  /** The metric without `istio_` (`requests_total`, `tcp_sent_bytes_total`); '': every one. */
  readonly name: string;
  /** Tags added or replaced: tag name → CEL expression over the request's attributes. */
  readonly dimensions: Readonly<Record<string, string>>;
  /** Tags left out (their series merge). */
  readonly tagsToRemove: readonly string[];
  /** The metric is not reported at all. */
  readonly drop: boolean;
}

/** Istio's stats filter config on a listener (stats.PluginConfig): how the istio_* metrics are reported there. */
export interface IstioStatsConfig {
  /** Applied in order, later entries over earlier ones. */
  readonly metrics: readonly IstioMetricConfig[];
  /** `disable_host_header_fallback`: an unknown destination service is not named after the Host header (istiod: inbound and gateways). */
  readonly disableHostHeaderFallback: boolean;
  /** `tcp_reporting_duration` in milliseconds; null: the default (15 s). */
  readonly tcpReportingDurationMs: number | null;
}

/** The istio_* metric names a stats config can name (istiod's metricToPrometheusMetric values). */
export const ISTIO_METRIC_NAMES: readonly string[] = [
  'requests_total',
  'request_duration_milliseconds',
  'request_bytes',
  'response_bytes',
  'tcp_connections_opened_total',
  'tcp_connections_closed_total',
  'tcp_sent_bytes_total',
  'tcp_received_bytes_total',
  'request_messages_total',
  'response_messages_total',
];

/** Envoy's `pipe` address: a unix domain socket. */
export interface Pipe {
  /** The socket's path; `@name` is a name in Linux's abstract namespace (no file). */
  readonly path: string;
  /** The socket file's permission bits (`0o660`); 0: as the process's umask leaves them. */
  readonly mode: number;
}

export interface Listener {
  /** Envoy-style name: `virtualOutbound`, `virtualInbound`, `0.0.0.0_8080`. */
  readonly name: string;
  /** An IP; `unix://<path>` for a listener on a `pipe`. */
  readonly address: string;
  /** 0 for a listener on a `pipe`. */
  readonly port: number;
  /**
   * The listener listens on this unix domain socket instead of `address:port` (a Sidecar
   * egress listener with `bind: unix://<path>`). `address` is then `unix://<path>` and `port`
   * 0, as istiod names such a listener (`unix:///var/run/app.sock_0`). Absent: a TCP socket.
   */
  readonly pipe?: Pipe;
  readonly direction: TrafficDirection;
  /** Name of the RouteConfiguration that routes this listener's requests. */
  readonly routeConfig: string;
  /**
   * A sidecar's outbound capture: the RouteConfiguration for each destination port (istiod's
   * per-port RDS tables, `9080`), by port. A request's destination port is its authority's
   * port; an authority without one goes to the table with a virtual host answering that bare
   * name. `routeConfig` serves the rest. Absent: `routeConfig` serves every request.
   */
  readonly routeConfigsByPort?: Readonly<Record<string, string>>;
  /** Filters run before the router, in order. */
  readonly httpFilters: readonly HttpFilterConfig[];
  /** Null: plaintext HTTP. */
  readonly tls: ListenerTls | null;
  /** HTTP listeners: the connection manager's settings; absent: Envoy's defaults. */
  readonly connectionManager?: HttpConnectionManagerOptions;
  /** HTTP listeners: the connection manager's `tracing`; absent: no spans, trace headers pass through untouched. */
  readonly tracing?: HttpTracing;
  /**
   * The connection manager's (or tcp_proxy's) `access_log`: where this listener's requests are
   * logged, and how. Absent: the proxy's own access log (`--access-log-format`, text on stdout).
   * Empty: nothing is logged (a Telemetry resource disabled the access log here). A proxy given
   * `--access-log-format` uses that for every listener.
   */
  readonly accessLog?: readonly AccessLogConfig[];
  /**
   * A TCP listener (a Gateway TCP or TLS-passthrough server, a sidecar's TCP service port
   * `10.96.0.5_6379`, its TLS port by SNI, an inbound TCP port): the listener proxies raw TCP
   * (Envoy's tcp_proxy) to the first of these routes whose SNI names match, with no HTTP (on
   * an inbound listener with mesh `tls`, after terminating Istio mTLS); absent for HTTP
   * listeners.
   */
  readonly tcpProxy?: readonly TcpRoute[];
  /**
   * The port requests on this listener were addressed to, when the listener receives traffic
   * redirected to it (a sidecar's inbound side: the app's port, as Envoy sees it as the
   * original destination); absent: the port the connection was accepted on.
   */
  readonly destinationPort?: number;
  /**
   * Envoy's `bypass_overload_manager`: this listener's requests are never shed (Istio's
   * bootstrap sets it on the health and Prometheus listeners); absent: false.
   */
  readonly bypassOverloadManager?: boolean;
  /**
   * Envoy's `bind_to_port`. False: the listener opens no socket and only serves connections a
   * capture listener (`useOriginalDst`) hands it (istiod's `0.0.0.0_9080`, `10.96.0.5_6379`
   * and the per-port chains of `virtualInbound`). Absent: true.
   */
  readonly bindToPort?: boolean;
  /**
   * Envoy's `use_original_dst` (with the `original_dst` listener filter): the listener a pod's
   * iptables rules redirect to (`virtualOutbound` on 15001, `virtualInbound` on 15006). Each
   * accepted connection's original destination is looked up (conntrack under REDIRECT, the
   * local address under TPROXY) and the connection is handed to the listener of the same
   * direction for that destination: the one on exactly that address and port, else the one
   * on `0.0.0.0` and that port (a listener's port here is its `destinationPort` when it has
   * one). A redirected connection no listener takes is served by `catchAll`; a connection
   * made to this listener directly (not redirected) by the listener's own chain.
   */
  readonly useOriginalDst?: boolean;
  /**
   * A capture listener's catch-all chain (istiod's `PassthroughFilterChain` /
   * `virtualOutbound-catchall-tcp`, `virtualInbound`'s passthrough chains): redirected
   * connections whose destination no listener serves are proxied as TCP to these routes:
   * PassthroughCluster (outboundTrafficPolicy ALLOW_ANY; ORIGINAL_DST, so the bytes go where
   * the app sent them), BlackHoleCluster (REGISTRY_ONLY: closed) or InboundPassthroughCluster
   * (an app port no service declares). Absent: such connections are closed.
   */
  readonly catchAll?: readonly TcpRoute[];
  /**
   * Istio's protocol detection for a port declared without a protocol (Envoy's
   * `http_inspector` and `tls_inspector` in front of an HTTP chain and a TCP chain): a
   * connection whose first bytes are an HTTP/1 request line or the HTTP/2 preface goes to the
   * connection manager; a TLS ClientHello or other bytes go to `tcp` as raw TCP (SNI picks
   * among the routes); a connection that sends nothing for `timeoutMs` (a server-first
   * protocol: MySQL, SMTP, Redis' banner-less clients still speak first) is treated as TCP.
   * Absent: every connection is HTTP (or `tcpProxy`).
   */
  readonly detectProtocol?: { readonly tcp: readonly TcpRoute[]; readonly timeoutMs: number };
  /**
   * Istio's TCP metadata exchange (istiod's `istio.metadata_exchange`, first in every chain of
   * a sidecar's inbound port): a TCP connection over Istio mTLS whose client offers ALPN
   * `istio-peer-exchange` gets it; both sides then send who they are before any byte of the
   * app's, and the client's workload labels `istio_tcp_*`. Absent: no exchange.
   */
  readonly metadataExchange?: boolean;
  /**
   * Istio's stats filter (`istio.stats`, from a Telemetry resource's `metrics`): metrics this
   * listener does not report, tags removed or added. Absent: every istio_* metric with its
   * standard tags.
   */
  readonly istioStats?: IstioStatsConfig;
}

/**
 * The HTTP connection manager's `stat_prefix` as istiod names it (`inbound_0.0.0.0_9080`,
 * `outbound_0.0.0.0_8080`): `/config_dump` prints it and the filters' stats live under
 * `http.<stat_prefix>.`. istiod appends `;` for its tag extraction; Remora's stat names
 * leave it out and tag the prefix itself.
 */
export function httpStatPrefix(l: Pick<Listener, 'direction' | 'address' | 'port' | 'destinationPort'>): string {
  return `${l.direction === 'inbound' ? 'inbound' : 'outbound'}_${l.address}_${l.destinationPort ?? l.port}`;
}
