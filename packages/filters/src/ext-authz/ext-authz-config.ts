/**
 * `envoy.filters.http.ext_authz` compiled once per snapshot from Envoy's ExtAuthz message
 * (proto3 JSON): which service to ask (an HTTP service or Envoy's gRPC Authorization service,
 * through a cluster of the snapshot), which request headers it sees, which of its response
 * headers go upstream or to the client, what an error means, and the dynamic metadata that
 * enables the check (istiod's CUSTOM policies: only requests their shadow RBAC rules matched).
 * What Remora cannot honour is a compile error naming the field.
 */
import { durationJsonMs, httpStatusCode, timerMs } from '@remora/config';
import type { ExtAuthzJson } from '@remora/config/envoy/gen/envoy/extensions/filters/http/ext_authz/v3/ext_authz_pb.js';
import type { ListStringMatcherJson } from '@remora/config/envoy/gen/envoy/type/matcher/v3/string_pb.js';
import type { MetadataMatcherJson } from '@remora/config/envoy/gen/envoy/type/matcher/v3/metadata_pb.js';
import { StringMatch } from '../rbac/rbac-string.ts';

/** Envoy's default gRPC ext_authz timeout when `grpc_service.timeout` is unset. */
export const DEFAULT_GRPC_TIMEOUT_MS = 200;

/** A ListStringMatcher: any pattern. */
export class HeaderPatterns {
  readonly #patterns: readonly StringMatch[];
  constructor(json: ListStringMatcherJson | undefined, at: string) {
    this.#patterns = (json?.patterns ?? []).map((p, i) => new StringMatch(p, `${at}.patterns[${i}]`));
  }
  get empty(): boolean {
    return this.#patterns.length === 0;
  }
  matches(lowerName: string): boolean {
    const ps = this.#patterns;
    for (let i = 0; i < ps.length; i++) if (ps[i]!.matches(lowerName)) return true;
    return false;
  }
}

/** `filter_enabled_metadata`: one key of one filter's dynamic metadata, matched as a string. */
export class MetadataCondition {
  readonly filter: string;
  readonly key: string;
  readonly #match: StringMatch;
  readonly #invert: boolean;

  constructor(json: MetadataMatcherJson, at: string) {
    if (typeof json.filter !== 'string' || json.filter === '') throw new Error(`${at}.filter: required`);
    const path = json.path ?? [];
    if (path.length !== 1 || typeof path[0]?.key !== 'string') throw new Error(`${at}.path: exactly one key segment is supported`);
    if (json.value?.stringMatch === undefined) throw new Error(`${at}.value: only stringMatch is supported`);
    this.filter = json.filter;
    this.key = path[0].key;
    this.#match = new StringMatch(json.value.stringMatch, `${at}.value.stringMatch`);
    this.#invert = json.invert === true;
  }

  /** Whether a request whose metadata value is `v` (null: absent) is checked. */
  enables(v: string | null): boolean {
    return (v !== null && this.#match.matches(v)) !== this.#invert;
  }
}

export interface HttpServiceConfig {
  readonly cluster: string;
  readonly pathPrefix: string;
  readonly timeoutMs: number;
  /** `authorization_request.headers_to_add`: flat name, value list. */
  readonly headersToAdd: readonly string[];
  readonly allowedUpstreamHeaders: HeaderPatterns;
  readonly allowedUpstreamHeadersToAppend: HeaderPatterns;
  /** Empty: every header of the denial goes to the client (Envoy's default). */
  readonly allowedClientHeaders: HeaderPatterns;
  readonly allowedClientHeadersOnSuccess: HeaderPatterns;
}

export interface GrpcServiceConfig {
  readonly cluster: string;
  /** The `:authority` of the call; '' for the cluster's name. */
  readonly authority: string;
  readonly timeoutMs: number;
}

/**
 * `with_request_body`: how much of the body the check carries, whether a longer body is
 * checked on its first `maxBytes` (else 413), and whether gRPC sends it as `raw_body` bytes.
 */
export interface RequestBodySettings {
  readonly maxBytes: number;
  readonly allowPartial: boolean;
  readonly packAsBytes: boolean;
}

/** The compiled ExtAuthz message. */
export class ExtAuthzSettings {
  readonly http: HttpServiceConfig | null;
  readonly grpc: GrpcServiceConfig | null;
  /** Request headers the service sees; empty: Envoy's defaults (gRPC: all; HTTP: Host, Method, Path, Content-Length, Authorization). */
  readonly allowedHeaders: HeaderPatterns;
  readonly disallowedHeaders: HeaderPatterns;
  readonly failureModeAllow: boolean;
  readonly failureModeAllowHeaderAdd: boolean;
  readonly statusOnError: number;
  readonly enabledBy: MetadataCondition | null;
  readonly clearRouteCache: boolean;
  /** `with_request_body`: the check carries the body, read up to `maxBytes`; null: headers only. */
  readonly withBody: RequestBodySettings | null;

  constructor(c: ExtAuthzJson) {
    if (c.transportApiVersion !== undefined && c.transportApiVersion !== 'V3' && (c.transportApiVersion as unknown) !== 2) {
      throw new Error(`transportApiVersion: only V3 is supported, got ${String(c.transportApiVersion)}`);
    }
    if (c.httpService !== undefined && c.grpcService !== undefined) throw new Error('one of httpService or grpcService, not both');
    if (c.httpService === undefined && c.grpcService === undefined) throw new Error('httpService or grpcService is required');
    for (const f of ['filterEnabled', 'denyAtDisable', 'metadataContextNamespaces', 'typedMetadataContextNamespaces', 'routeMetadataContextNamespaces', 'enableDynamicMetadataIngestion'] as const) {
      if (c[f] !== undefined) throw new Error(`${f}: not supported`);
    }
    this.withBody = null;
    if (c.withRequestBody !== undefined) {
      const b = c.withRequestBody;
      const max = b.maxRequestBytes ?? 0;
      if (!Number.isInteger(max) || max <= 0) throw new Error(`withRequestBody.maxRequestBytes: must be greater than 0, got ${JSON.stringify(b.maxRequestBytes ?? null)}`);
      this.withBody = { maxBytes: max, allowPartial: b.allowPartialMessage === true, packAsBytes: b.packAsBytes === true };
    }
    this.allowedHeaders = new HeaderPatterns(c.allowedHeaders, 'allowedHeaders');
    this.disallowedHeaders = new HeaderPatterns(c.disallowedHeaders, 'disallowedHeaders');
    this.failureModeAllow = c.failureModeAllow === true;
    this.failureModeAllowHeaderAdd = c.failureModeAllowHeaderAdd === true;
    let status = 403;
    if (c.statusOnError?.code !== undefined) {
      const s = httpStatusCode(c.statusOnError.code);
      if (s === null) throw new Error(`statusOnError.code: not an HTTP status: ${JSON.stringify(c.statusOnError.code)}`);
      status = s;
    }
    this.statusOnError = status;
    this.enabledBy = c.filterEnabledMetadata === undefined ? null : new MetadataCondition(c.filterEnabledMetadata, 'filterEnabledMetadata');
    this.clearRouteCache = c.clearRouteCache === true;

    this.http = null;
    this.grpc = null;
    if (c.httpService !== undefined) {
      const h = c.httpService;
      const uri = h.serverUri;
      if (uri === undefined || typeof uri.cluster !== 'string' || uri.cluster === '') throw new Error('httpService.serverUri.cluster: required');
      if (uri.timeout === undefined) throw new Error('httpService.serverUri.timeout: required');
      const prefix = h.pathPrefix ?? '';
      if (prefix !== '' && !prefix.startsWith('/')) throw new Error(`httpService.pathPrefix: must begin with /, got ${JSON.stringify(prefix)}`);
      const req = h.authorizationRequest;
      // The deprecated authorization_request.allowed_headers adds to the top-level list.
      if (req?.allowedHeaders !== undefined && c.allowedHeaders === undefined) this.allowedHeaders = new HeaderPatterns(req.allowedHeaders, 'httpService.authorizationRequest.allowedHeaders');
      const add: string[] = [];
      (req?.headersToAdd ?? []).forEach((hv, i) => {
        if (typeof hv.key !== 'string' || hv.key === '') throw new Error(`httpService.authorizationRequest.headersToAdd[${i}].key: required`);
        add.push(hv.key.toLowerCase(), hv.value ?? '');
      });
      const res = h.authorizationResponse;
      this.http = {
        cluster: uri.cluster,
        pathPrefix: prefix,
        timeoutMs: timerMs(durationJsonMs(uri.timeout, 'httpService.serverUri.timeout')),
        headersToAdd: add,
        allowedUpstreamHeaders: new HeaderPatterns(res?.allowedUpstreamHeaders, 'httpService.authorizationResponse.allowedUpstreamHeaders'),
        allowedUpstreamHeadersToAppend: new HeaderPatterns(res?.allowedUpstreamHeadersToAppend, 'httpService.authorizationResponse.allowedUpstreamHeadersToAppend'),
        allowedClientHeaders: new HeaderPatterns(res?.allowedClientHeaders, 'httpService.authorizationResponse.allowedClientHeaders'),
        allowedClientHeadersOnSuccess: new HeaderPatterns(res?.allowedClientHeadersOnSuccess, 'httpService.authorizationResponse.allowedClientHeadersOnSuccess'),
      };
    } else {
      const g = c.grpcService!;
      if (g.googleGrpc !== undefined) throw new Error('grpcService.googleGrpc: not supported; use envoyGrpc (a cluster)');
      const cluster = g.envoyGrpc?.clusterName;
      if (typeof cluster !== 'string' || cluster === '') throw new Error('grpcService.envoyGrpc.clusterName: required');
      this.grpc = {
        cluster,
        authority: g.envoyGrpc?.authority ?? '',
        timeoutMs: g.timeout === undefined ? DEFAULT_GRPC_TIMEOUT_MS : timerMs(durationJsonMs(g.timeout, 'grpcService.timeout')),
      };
    }
  }
}
