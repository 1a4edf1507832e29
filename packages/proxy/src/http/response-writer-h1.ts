import type { H1Response } from './h1-server.ts';
import { hasTrailers, type ResponseWriter } from './response-writer.ts';

/** HTTP/1.x: through the codec's response (http/h1-server.ts); draining responses close the connection. */
export const H1_WRITER: ResponseWriter = {
  http2: false,
  requestHasBody(_t, declared) {
    return declared;
  },
  head(t, headers) {
    (t.res as H1Response).writeHead(t.stream.responseCode, headers);
  },
  data(t, chunk) {
    return (t.res as H1Response).write(chunk);
  },
  end(t, trailers) {
    (t.res as H1Response).end(hasTrailers(trailers) ? trailers : null);
  },
  whole(t, headers, body, trailers) {
    (t.res as H1Response).whole(t.stream.responseCode, headers, body, hasTrailers(trailers) ? trailers : null);
  },
  localHead(out, draining, grpc) {
    if (grpc) out.push('content-length', '0');
    if (draining) out.push('connection', 'close');
  },
  responseHead(out, draining) {
    if (draining) out.push('connection', 'close');
  },
  reset(t) {
    (t.res as H1Response).destroy();
  },
  onDrain(t, fn) {
    (t.res as H1Response).onDrain(fn);
  },
};
