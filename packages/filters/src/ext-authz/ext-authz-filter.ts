/**
 * `envoy.filters.http.ext_authz` per request, as Envoy's: when the request is enabled (by
 * `filter_enabled_metadata`, else always) the chain stops while the authorization service is
 * asked — an HTTP request with the same method and path (after `path_prefix`) and the allowed
 * headers, or a gRPC `Authorization/Check` with a CheckRequest. With `with_request_body`
 * the body is read first (up to `max_request_bytes`; a longer one gets 413 unless
 * `allow_partial_message`) and sent in the check (the HTTP body; gRPC `body`, or `raw_body`
 * with `pack_as_bytes`), then upstream as it was. Allowed (HTTP 200, or gRPC
 * status OK): the service's allowed headers go upstream and the chain goes on. Denied: the
 * client gets the service's status, body and allowed headers (response flag UAEX, details
 * `ext_authz_denied`). No answer (no cluster, connection failure, timeout, a gRPC error):
 * `failure_mode_allow` lets the request through, else `status_on_error` (default 403,
 * details `ext_authz_error`).
 */
import { FilterStatus, type FilterCallbacks, type FilterRequest, type FilterUpstream, type FilterUpstreamFailure, type FilterUpstreamResponse, type HttpFilter, type HttpFilterConfig } from '../filter.ts';
import type { Stat } from '../filter-stats.ts';
import type { ExtAuthzSettings } from './ext-authz-config.ts';
import { CHECK_PATH, checkCodec, type CheckCodec, type CheckDecision } from './ext-authz-grpc.ts';

/** Envoy's ext_authz counters, `http.<stat_prefix>.ext_authz.*`. */
export interface ExtAuthzStats {
  readonly ok: Stat;
  readonly denied: Stat;
  readonly error: Stat;
  readonly failureModeAllowed: Stat;
  readonly disabled: Stat;
}

/** Headers of the request never sent to an HTTP authorizer (connection-level, or describing a body that is not sent). */
const NOT_FORWARDED = new Set(['host', 'connection', 'keep-alive', 'proxy-connection', 'te', 'transfer-encoding', 'upgrade', 'content-length', 'expect']);
/** Envoy's default for an HTTP service without `allowed_headers`: Host, Method, Path, Content-Length and Authorization. */
const HTTP_DEFAULT_HEADERS = new Set(['authorization']);
/** Headers of a denial that the local reply writes itself. */
const NOT_TO_CLIENT = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'date', 'server', 'content-type']);

/** Envoy's header telling the authorization service whether the body it got was cut at `max_request_bytes`. */
const PARTIAL_BODY = 'x-envoy-auth-partial-body';

export const EXT_AUTHZ_DENIED = 'ext_authz_denied';
export const EXT_AUTHZ_ERROR = 'ext_authz_error';

/** The compiled filter of one listener in one snapshot; each request gets its own instance. */
export class ExtAuthzFilterConfig implements HttpFilterConfig {
  readonly name: string;
  readonly settings: ExtAuthzSettings;
  readonly upstream: FilterUpstream | null;
  readonly stats: ExtAuthzStats;
  /** gRPC: the CheckRequest codec once loaded. */
  codec: CheckCodec | null = null;
  readonly codecReady: Promise<CheckCodec> | null;

  constructor(name: string, settings: ExtAuthzSettings, upstream: FilterUpstream | null, stats: ExtAuthzStats) {
    this.name = name;
    this.settings = settings;
    this.upstream = upstream;
    this.stats = stats;
    this.codecReady = settings.grpc === null ? null : checkCodec();
    this.codecReady?.then((c) => (this.codec = c), () => undefined);
  }

  create(): ExtAuthzFilter {
    return new ExtAuthzFilter(this);
  }
}

export class ExtAuthzFilter implements HttpFilter {
  readonly #config: ExtAuthzFilterConfig;
  #cancel: (() => void) | null = null;
  #req: FilterRequest | null = null;
  #callbacks: FilterCallbacks | null = null;
  /** `with_request_body`: the body read for the check (null: none is sent), and whether it is cut at the limit. */
  #body: Buffer | null = null;
  #partial = false;

  constructor(config: ExtAuthzFilterConfig) {
    this.#config = config;
  }

  onRequest(req: FilterRequest, callbacks: FilterCallbacks): FilterStatus {
    const c = this.#config;
    const s = c.settings;
    const cond = s.enabledBy;
    if (cond !== null && !cond.enables(req.dynamicMetadata(cond.filter, cond.key))) {
      c.stats.disabled.value++;
      return FilterStatus.Continue;
    }
    this.#req = req;
    this.#callbacks = callbacks;
    if (c.upstream === null) {
      this.#onError('no_cluster', 'no cluster can be reached from this filter');
      return FilterStatus.StopIteration;
    }
    const body = s.withBody;
    if (body === null || callbacks.bufferRequestBody === undefined) {
      this.#send(req, callbacks);
      return FilterStatus.StopIteration;
    }
    callbacks.bufferRequestBody(body.maxBytes, (bytes, complete) => {
      if (callbacks.aborted) return;
      // Envoy's decoder buffer limit without allow_partial_message: the HCM's 413.
      if (!complete && !body.allowPartial) {
        callbacks.sendLocalReply(413, 'Payload Too Large', null, 'request_payload_too_large');
        return;
      }
      this.#body = bytes;
      this.#partial = !complete;
      this.#send(req, callbacks);
    });
    return FilterStatus.StopIteration;
  }

  #send(req: FilterRequest, callbacks: FilterCallbacks): void {
    const c = this.#config;
    const s = c.settings;
    if (s.http !== null) this.#sendHttp(req, c.upstream!);
    else if (c.codec !== null) this.#sendGrpc(req, c.upstream!, c.codec);
    else {
      c.codecReady!.then(
        (codec) => {
          if (!callbacks.aborted) this.#sendGrpc(req, c.upstream!, codec);
        },
        (err: Error) => this.#onError('connect_failure', `gRPC codec: ${err.message}`),
      );
    }
  }

  onDestroy(): void {
    this.#cancel?.();
    this.#cancel = null;
  }

  #sendHttp(req: FilterRequest, upstream: FilterUpstream): void {
    const s = this.#config.settings;
    const http = s.http!;
    const headers: string[] = ['host', req.authority];
    const list = req.requestHeaderList();
    for (let i = 0; i < list.length; i += 2) {
      const lower = list[i]!.toLowerCase();
      if (NOT_FORWARDED.has(lower) || !this.#allowed(lower, HTTP_DEFAULT_HEADERS)) continue;
      headers.push(lower, list[i + 1]!);
    }
    for (let i = 0; i < http.headersToAdd.length; i += 2) headers.push(http.headersToAdd[i]!, http.headersToAdd[i + 1]!);
    if (this.#body !== null) headers.push(PARTIAL_BODY, this.#partial ? 'true' : 'false');
    this.#cancel = upstream.send(http.cluster, { method: req.method, path: http.pathPrefix + req.path, headers, body: this.#body, timeoutMs: http.timeoutMs }, (failure, res, detail) => {
      this.#cancel = null;
      if (failure !== null || res === null) return this.#onError(failure ?? 'connect_failure', detail);
      this.#onHttpResponse(res);
    });
  }

  #allowed(lower: string, defaults: ReadonlySet<string> | null): boolean {
    const s = this.#config.settings;
    if (s.disallowedHeaders.matches(lower)) return false;
    if (s.allowedHeaders.empty) return defaults === null || defaults.has(lower);
    return s.allowedHeaders.matches(lower);
  }

  #onHttpResponse(res: FilterUpstreamResponse): void {
    const req = this.#req!;
    const cb = this.#callbacks!;
    if (cb.aborted) return;
    const http = this.#config.settings.http!;
    const h = res.headers;
    if (res.status === 200) {
      this.#config.stats.ok.value++;
      for (let i = 0; i < h.length; i += 2) {
        const name = h[i]!;
        const value = h[i + 1]!;
        if (http.allowedUpstreamHeaders.matches(name)) req.setRequestHeader(name, value);
        else if (http.allowedUpstreamHeadersToAppend.matches(name)) {
          const had = req.requestHeader(name);
          req.setRequestHeader(name, had === null ? value : `${had},${value}`);
        }
        if (http.allowedClientHeadersOnSuccess.matches(name)) cb.addResponseHeader(name, value);
      }
      this.#allow();
      return;
    }
    this.#config.stats.denied.value++;
    const all = http.allowedClientHeaders.empty;
    for (let i = 0; i < h.length; i += 2) {
      const name = h[i]!;
      if (all ? !NOT_TO_CLIENT.has(name) : http.allowedClientHeaders.matches(name)) cb.addResponseHeader(name, h[i + 1]!);
    }
    cb.sendLocalReply(res.status, res.body.length === 0 ? null : res.body.toString('utf8'), 'UAEX', EXT_AUTHZ_DENIED);
  }

  #sendGrpc(req: FilterRequest, upstream: FilterUpstream, codec: CheckCodec): void {
    const grpc = this.#config.settings.grpc!;
    const map: Record<string, string> = { ':authority': req.authority, ':method': req.method, ':path': req.path, ':scheme': req.scheme };
    const list = req.requestHeaderList();
    for (let i = 0; i < list.length; i += 2) {
      const lower = list[i]!.toLowerCase();
      if (!this.#allowed(lower, null)) continue;
      const had = map[lower];
      map[lower] = had === undefined ? list[i + 1]! : `${had},${list[i + 1]!}`;
    }
    if (this.#body !== null) map[PARTIAL_BODY] = this.#partial ? 'true' : 'false';
    let body: Buffer;
    try {
      body = codec.encode(req, map, this.#body === null ? null : { bytes: this.#body, packAsBytes: this.#config.settings.withBody!.packAsBytes });
    } catch (err) {
      this.#onError('connect_failure', `CheckRequest: ${(err as Error).message}`);
      return;
    }
    const headers = ['host', grpc.authority === '' ? grpc.cluster : grpc.authority, 'content-type', 'application/grpc', 'te', 'trailers', 'grpc-timeout', `${Math.max(1, Math.ceil(grpc.timeoutMs))}m`];
    this.#cancel = upstream.send(grpc.cluster, { method: 'POST', path: CHECK_PATH, headers, body, timeoutMs: grpc.timeoutMs }, (failure, res, detail) => {
      this.#cancel = null;
      if (failure !== null || res === null) return this.#onError(failure ?? 'connect_failure', detail);
      const status = grpcStatus(res);
      if (res.status !== 200 || status !== '0') return this.#onError('connect_failure', `gRPC status ${status ?? 'missing'} (HTTP ${res.status})`);
      let decision: CheckDecision;
      try {
        decision = codec.decode(res.body);
      } catch (err) {
        return this.#onError('connect_failure', `CheckResponse: ${(err as Error).message}`);
      }
      this.#onDecision(decision);
    });
  }

  #onDecision(d: CheckDecision): void {
    const req = this.#req!;
    const cb = this.#callbacks!;
    if (cb.aborted) return;
    if (d.allowed) {
      this.#config.stats.ok.value++;
      for (let i = 0; i < d.headers.length; i += 2) req.setRequestHeader(d.headers[i]!, d.headers[i + 1]!);
      for (let i = 0; i < d.appendHeaders.length; i += 2) {
        const had = req.requestHeader(d.appendHeaders[i]!);
        req.setRequestHeader(d.appendHeaders[i]!, had === null ? d.appendHeaders[i + 1]! : `${had},${d.appendHeaders[i + 1]!}`);
      }
      for (const name of d.removeHeaders) req.removeRequestHeader(name);
      for (let i = 0; i < d.responseHeaders.length; i += 2) cb.addResponseHeader(d.responseHeaders[i]!, d.responseHeaders[i + 1]!);
      this.#allow();
      return;
    }
    this.#config.stats.denied.value++;
    for (let i = 0; i < d.headers.length; i += 2) cb.addResponseHeader(d.headers[i]!, d.headers[i + 1]!);
    cb.sendLocalReply(d.status, d.body === '' ? null : d.body, 'UAEX', EXT_AUTHZ_DENIED);
  }

  #allow(): void {
    if (this.#config.settings.clearRouteCache) this.#callbacks!.clearRouteCache();
    this.#callbacks!.continueRequest();
  }

  #onError(_failure: FilterUpstreamFailure, _detail: string): void {
    const cb = this.#callbacks!;
    if (cb.aborted) return;
    const c = this.#config;
    c.stats.error.value++;
    if (c.settings.failureModeAllow) {
      c.stats.failureModeAllowed.value++;
      if (c.settings.failureModeAllowHeaderAdd) this.#req!.setRequestHeader('x-envoy-auth-failure-mode-allowed', 'true');
      cb.continueRequest();
      return;
    }
    cb.sendLocalReply(c.settings.statusOnError, null, 'UAEX', EXT_AUTHZ_ERROR);
  }
}

/** grpc-status from the trailers, or from the headers of a trailers-only response. */
function grpcStatus(res: FilterUpstreamResponse): string | null {
  for (const list of [res.trailers, res.headers]) {
    for (let i = 0; i < list.length; i += 2) if (list[i] === 'grpc-status') return list[i + 1]!;
  }
  return null;
}
