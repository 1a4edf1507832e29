import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { Readable } from 'node:stream';
import { H1Request, type H1Response } from './h1-server.ts';

export type DownstreamRequest = H1Request | Http2ServerRequest;
export type DownstreamResponse = H1Response | Http2ServerResponse;
export type Trailers = Record<string, string | string[] | undefined>;

/** What a writer reads of the request's stream (its `ActiveStream`). */
export interface ResponseStream {
  readonly req: DownstreamRequest;
  /** The status to write. */
  readonly responseCode: number;
}

/** The response side of one request, as a writer sees it. */
export interface ResponseTarget {
  readonly stream: ResponseStream;
  readonly res: DownstreamResponse;
  /** A head held back until the first body byte (HTTP/2); null when none is held. */
  pendingHead: string[] | null;
}

/**
 * How a response goes out on one protocol. One instance per protocol (stateless; what a
 * response holds lives on its `ResponseTarget`), so the request logic has no protocol branches.
 */
export interface ResponseWriter {
  /** For the connection manager's per-protocol counters. */
  readonly http2: boolean;
  /** Whether the request carries a body, given what its headers declared. */
  requestHasBody(t: ResponseTarget, declared: boolean): boolean;
  /** The head of a proxied response (may throw when Node refuses a header); the body follows with `data`. */
  head(t: ResponseTarget, headers: string[]): void;
  /** A body chunk; false: wait for `'drain'` on the response. */
  data(t: ResponseTarget, chunk: Buffer): boolean;
  /** The end of a proxied response, with upstream's trailers. */
  end(t: ResponseTarget, trailers: Trailers): void;
  /** A whole response at once (local and direct replies, a response filters held); may throw as `head`. */
  whole(t: ResponseTarget, headers: string[], body: Buffer | null, trailers: Trailers | null): void;
  /** Protocol headers of a local reply's head: `Connection: close` while draining (HTTP/1), a gRPC reply's `content-length: 0` (HTTP/1). */
  localHead(out: string[], draining: boolean, grpc: boolean): void;
  /** Protocol headers of a proxied or direct response: `Connection: close` while draining (HTTP/1). */
  responseHead(out: string[], draining: boolean): void;
  /** Cuts the client off mid-response: the connection (HTTP/1) or the stream (HTTP/2). */
  reset(t: ResponseTarget): void;
  /** Calls `fn` once after `data` returned false and the client can take more. */
  onDrain(t: ResponseTarget, fn: () => void): void;
}

/** The request body as a stream: HTTP/1's is made on demand, an HTTP/2 request is its own. */
export function requestBodyOf(req: DownstreamRequest): Readable {
  return req instanceof H1Request ? req.bodyStream() : req;
}

/** Whether a trailer map has any entry. */
export function hasTrailers(trailers: Trailers | null): trailers is Trailers {
  if (trailers !== null) for (const _ in trailers) return true;
  return false;
}
