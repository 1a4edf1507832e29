/** What one finished request tells the access log; an HTTP request's `ActiveStream` and a `TcpTunnel` implement it directly. */
export interface AccessLogRecord {
  readonly startTime: number;
  readonly method: string;
  /** The path as the client sent it (Envoy's `X-ENVOY-ORIGINAL-PATH?:PATH`). */
  readonly originalPath: string;
  readonly protocol: string;
  readonly responseCode: number;
  readonly responseFlags: number;
  readonly responseCodeDetails: string;
  readonly upstreamTransportFailureReason: string;
  readonly bytesReceived: number;
  readonly bytesSent: number;
  readonly durationMs: number;
  /** Milliseconds from upstream request start to response headers; -1 when no upstream answered. */
  readonly upstreamServiceTimeMs: number;
  readonly xForwardedFor: string | null;
  readonly userAgent: string | null;
  readonly requestId: string | null;
  readonly authority: string | null;
  readonly upstreamHost: string | null;
  readonly upstreamCluster: string | null;
  readonly downstreamLocalAddress: string;
  readonly downstreamRemoteAddress: string;
  readonly requestedServerName: string | null;
  readonly routeName: string | null;
  /** `:path` as the request went upstream (after rewrites); absent: `originalPath`, or none (TCP). */
  readonly path?: string;
  /** A request header by lower-case name (`%REQ(...)%`); absent: the record has no headers (TCP). */
  requestHeader?(name: string): string | null;
  /** A response header by lower-case name (`%RESP(...)%`); absent: none are kept. */
  responseHeader?(name: string): string | null;
  /** The downstream connection is TLS with a client certificate (CEL `connection.mtls`); absent: false. */
  readonly downstreamMtls?: boolean;
  /** Envoy's dynamic metadata that filters recorded (`%DYNAMIC_METADATA(ns:key)%`); null when unset. */
  dynamicMetadata?(namespace: string, key: string): string | null;
  /** Every key of one namespace, null when it has none (`%DYNAMIC_METADATA(ns)%`). */
  dynamicMetadataOf?(namespace: string): Record<string, string> | null;
}

/** Where a finished request is logged: the proxy's own log, or a listener's configured ones. */
export interface RequestLogger {
  log(r: AccessLogRecord): void;
}
