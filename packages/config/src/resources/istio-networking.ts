/**
 * The fields of Istio's networking.istio.io resources that Remora reads, with Istio's
 * names. Documents are schema-checked before translation, so these describe valid input;
 * every field is optional, as in the protobuf API.
 */

export interface IstioStringMatch {
  exact?: string;
  prefix?: string;
  regex?: string;
}

export interface IstioPortSelector {
  number?: number;
}

export interface IstioDestination {
  host?: string;
  subset?: string;
  port?: IstioPortSelector;
}

export interface IstioHeaderOperations {
  set?: Record<string, string>;
  add?: Record<string, string>;
  remove?: string[];
}

export interface IstioHeaders {
  request?: IstioHeaderOperations;
  response?: IstioHeaderOperations;
}

export interface IstioHTTPRouteDestination {
  destination?: IstioDestination;
  weight?: number;
  headers?: IstioHeaders;
}

export interface IstioHTTPMatchRequest {
  name?: string;
  uri?: IstioStringMatch;
  scheme?: IstioStringMatch;
  method?: IstioStringMatch;
  authority?: IstioStringMatch;
  headers?: Record<string, IstioStringMatch>;
  withoutHeaders?: Record<string, IstioStringMatch>;
  queryParams?: Record<string, IstioStringMatch>;
  port?: number;
  sourceLabels?: Record<string, string>;
  gateways?: string[];
  ignoreUriCase?: boolean;
  sourceNamespace?: string;
  statPrefix?: string;
}

export interface IstioHTTPRetry {
  attempts?: number;
  perTryTimeout?: string;
  retryOn?: string;
  retryRemoteLocalities?: boolean;
}

export interface IstioHTTPRewrite {
  uri?: string;
  authority?: string;
  uriRegexRewrite?: { match?: string; rewrite?: string };
}

export interface IstioHTTPRedirect {
  uri?: string;
  authority?: string;
  port?: number;
  derivePort?: 'FROM_PROTOCOL_DEFAULT' | 'FROM_REQUEST_PORT';
  scheme?: string;
  redirectCode?: number;
}

export interface IstioHTTPDirectResponse {
  status?: number;
  body?: { string?: string; bytes?: string };
}

export interface IstioPercent {
  value?: number;
}

export interface IstioCorsPolicy {
  allowOrigins?: IstioStringMatch[];
  allowOrigin?: string[];
  allowMethods?: string[];
  allowHeaders?: string[];
  exposeHeaders?: string[];
  maxAge?: string;
  allowCredentials?: boolean;
  unmatchedPreflights?: string;
}

export interface IstioHTTPRoute {
  name?: string;
  match?: IstioHTTPMatchRequest[];
  route?: IstioHTTPRouteDestination[];
  redirect?: IstioHTTPRedirect;
  directResponse?: IstioHTTPDirectResponse;
  delegate?: { name?: string; namespace?: string };
  rewrite?: IstioHTTPRewrite;
  timeout?: string;
  retries?: IstioHTTPRetry;
  fault?: unknown;
  mirror?: IstioDestination;
  mirrors?: { destination?: IstioDestination; percentage?: IstioPercent }[];
  mirrorPercentage?: IstioPercent;
  corsPolicy?: IstioCorsPolicy;
  headers?: IstioHeaders;
}

export interface IstioVirtualService {
  hosts?: string[];
  gateways?: string[];
  http?: IstioHTTPRoute[];
  tcp?: unknown[];
  tls?: unknown[];
  exportTo?: string[];
}

export interface IstioLoadBalancerSettings {
  simple?: 'UNSPECIFIED' | 'LEAST_CONN' | 'RANDOM' | 'PASSTHROUGH' | 'ROUND_ROBIN' | 'LEAST_REQUEST';
  consistentHash?: {
    httpHeaderName?: string;
    httpCookie?: { name?: string; path?: string; ttl?: string };
    useSourceIp?: boolean;
    httpQueryParameterName?: string;
    ringHash?: { minimumRingSize?: number };
    maglev?: { tableSize?: number };
    minimumRingSize?: number;
  };
  localityLbSetting?: unknown;
  warmupDurationSecs?: string;
}

export interface IstioConnectionPoolSettings {
  tcp?: {
    maxConnections?: number;
    connectTimeout?: string;
    tcpKeepalive?: unknown;
    maxConnectionDuration?: string;
    idleTimeout?: string;
  };
  http?: {
    http1MaxPendingRequests?: number;
    http2MaxRequests?: number;
    maxRequestsPerConnection?: number;
    maxRetries?: number;
    idleTimeout?: string;
    h2UpgradePolicy?: 'DEFAULT' | 'DO_NOT_UPGRADE' | 'UPGRADE';
    useClientProtocol?: boolean;
    maxConcurrentStreams?: number;
  };
}

export interface IstioOutlierDetection {
  consecutiveErrors?: number;
  consecutive5xxErrors?: number;
  consecutiveGatewayErrors?: number;
  consecutiveLocalOriginFailures?: number;
  splitExternalLocalOriginErrors?: boolean;
  interval?: string;
  baseEjectionTime?: string;
  maxEjectionPercent?: number;
  minHealthPercent?: number;
}

export interface IstioClientTLSSettings {
  mode?: 'DISABLE' | 'SIMPLE' | 'MUTUAL' | 'ISTIO_MUTUAL';
  clientCertificate?: string;
  privateKey?: string;
  caCertificates?: string;
  credentialName?: string;
  subjectAltNames?: string[];
  sni?: string;
  insecureSkipVerify?: boolean;
}

export interface IstioTrafficPolicy {
  loadBalancer?: IstioLoadBalancerSettings;
  connectionPool?: IstioConnectionPoolSettings;
  outlierDetection?: IstioOutlierDetection;
  tls?: IstioClientTLSSettings;
  portLevelSettings?: (Omit<IstioTrafficPolicy, 'portLevelSettings'> & { port?: IstioPortSelector })[];
}

export interface IstioSubset {
  name?: string;
  labels?: Record<string, string>;
  trafficPolicy?: IstioTrafficPolicy;
}

export interface IstioDestinationRule {
  host?: string;
  trafficPolicy?: IstioTrafficPolicy;
  subsets?: IstioSubset[];
  exportTo?: string[];
  workloadSelector?: { matchLabels?: Record<string, string> };
}

export interface IstioServicePort {
  number?: number;
  protocol?: string;
  name?: string;
  targetPort?: number;
}

export interface IstioWorkloadEntry {
  address?: string;
  ports?: Record<string, number>;
  labels?: Record<string, string>;
  network?: string;
  locality?: string;
  weight?: number;
  serviceAccount?: string;
}

export interface IstioServiceEntry {
  hosts?: string[];
  addresses?: string[];
  ports?: IstioServicePort[];
  location?: 'MESH_EXTERNAL' | 'MESH_INTERNAL';
  resolution?: 'NONE' | 'STATIC' | 'DNS' | 'DNS_ROUND_ROBIN';
  endpoints?: IstioWorkloadEntry[];
  workloadSelector?: { labels?: Record<string, string> };
  exportTo?: string[];
  subjectAltNames?: string[];
}

export interface IstioServer {
  port?: { number?: number; protocol?: string; name?: string; targetPort?: number };
  bind?: string;
  hosts?: string[];
  tls?: { httpsRedirect?: boolean; mode?: string; [k: string]: unknown };
  name?: string;
}

export interface IstioGateway {
  servers?: IstioServer[];
  selector?: Record<string, string>;
}
