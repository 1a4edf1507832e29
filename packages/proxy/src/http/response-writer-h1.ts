import type { ServerResponse } from 'node:http';
import { hasTrailers, type ResponseWriter } from './response-writer.ts';

/** HTTP/1.x: the head goes out at once; draining responses close the connection. */
export const H1_WRITER: ResponseWriter = {
  http2: false,
  requestHasBody(_t, declared) {
    return declared;
  },
  head(t, headers) {
    (t.res as ServerResponse).writeHead(t.responseCode, headers);
  },
  data(t, chunk) {
    return (t.res as ServerResponse).write(chunk);
  },
  end(t, trailers) {
    const res = t.res as ServerResponse;
    if (hasTrailers(trailers)) res.addTrailers(trailers as Record<string, string>);
    res.end();
  },
  whole(t, headers, body, trailers) {
    const res = t.res as ServerResponse;
    res.writeHead(t.responseCode, headers);
    if (hasTrailers(trailers)) res.addTrailers(trailers as Record<string, string>);
    res.end(body);
  },
  localHead(out, draining, grpc) {
    if (grpc) out.push('content-length', '0');
    if (draining) out.push('connection', 'close');
  },
  responseHead(out, draining) {
    if (draining) out.push('connection', 'close');
  },
  reset(t) {
    (t.res as ServerResponse).destroy();
  },
};
