import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { hasTrailers, type ResponseTarget, type ResponseWriter, type Trailers } from './response-writer.ts';

/**
 * HTTP/2: the head is held until the first body byte, so a response that ends without a body
 * (gRPC's trailers-only form) goes out as one HEADERS frame that ends the stream.
 */
export const H2_WRITER: ResponseWriter = {
  http2: true,
  requestHasBody(t, declared) {
    // HTTP/2 has no Content-Length requirement: a stream not ended with its headers carries a body.
    return declared || !(t.stream.req as Http2ServerRequest).stream.endAfterHeaders;
  },
  head(t, headers) {
    t.pendingHead = headers;
  },
  data(t, chunk) {
    const head = t.pendingHead;
    if (head !== null) {
      t.pendingHead = null;
      (t.res as Http2ServerResponse).writeHead(t.stream.responseCode, head);
    }
    return (t.res as Http2ServerResponse).write(chunk);
  },
  end(t, trailers) {
    const head = t.pendingHead;
    if (head !== null) {
      // No body: trailers (if any) join the headers in the one frame that ends the stream.
      t.pendingHead = null;
      respondEndStream(t, head, trailers);
      return;
    }
    const res = t.res as Http2ServerResponse;
    if (hasTrailers(trailers)) res.addTrailers(trailers as Record<string, string>);
    res.end();
  },
  whole(t, headers, body, trailers) {
    t.pendingHead = null;
    if (body === null || body.length === 0) {
      respondEndStream(t, headers, trailers);
      return;
    }
    const res = t.res as Http2ServerResponse;
    res.writeHead(t.stream.responseCode, headers);
    if (hasTrailers(trailers)) res.addTrailers(trailers as Record<string, string>);
    res.end(body);
  },
  localHead() {},
  responseHead() {},
  reset(t) {
    (t.res as Http2ServerResponse).stream.close(2 /* INTERNAL_ERROR */);
  },
  onDrain(t, fn) {
    (t.res as Http2ServerResponse).once('drain', fn);
  },
};

/** One HEADERS frame with END_STREAM: the form gRPC needs for trailers-only replies. */
function respondEndStream(t: ResponseTarget, flat: readonly string[], trailers: Trailers | null): void {
  const headers: Record<string, string | string[] | number> = { ':status': t.stream.responseCode };
  for (let i = 0; i < flat.length; i += 2) addHeader(headers, flat[i]!, flat[i + 1]!);
  if (trailers !== null) {
    for (const name in trailers) {
      const v = trailers[name];
      if (typeof v === 'string') addHeader(headers, name, v);
      else if (v !== undefined) for (const item of v) addHeader(headers, name, item);
    }
  }
  const stream = (t.res as Http2ServerResponse).stream;
  if (!stream.destroyed && !stream.headersSent) stream.respond(headers, { endStream: true });
}

function addHeader(headers: Record<string, string | string[] | number>, name: string, value: string): void {
  const prev = headers[name];
  if (prev === undefined) headers[name] = value;
  else headers[name] = Array.isArray(prev) ? [...prev, value] : [String(prev), value];
}
