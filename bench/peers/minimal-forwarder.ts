// The floor of what any Node.js proxy costs: node:http in, an undici Pool of keep-alive
// connections out, bodies streamed both ways, hop-by-hop headers dropped, nothing else.
//   PORT=8081 UPSTREAM=http://127.0.0.1:8080 node bench/peers/minimal-forwarder.ts
import { createServer, type ServerResponse } from 'node:http';
import { Pool, type Dispatcher } from 'undici';

const port = Number(process.env.PORT ?? 8081);
const pool = new Pool(process.env.UPSTREAM ?? 'http://127.0.0.1:8080', { connections: 64, keepAliveTimeout: 60_000 });

// RFC 9110 §7.6.1: these belong to one connection, never to the message.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

type Headers = Record<string, string | string[] | undefined>;

function endToEnd(headers: Headers): Headers {
  const connection = headers.connection;
  // Headers named in Connection are hop-by-hop too; the usual values name none.
  const listed = typeof connection !== 'string' || connection === 'keep-alive' || connection === 'close' ? null : connection.toLowerCase().split(/\s*,\s*/);
  const out: Headers = {};
  for (const name in headers) {
    if (!HOP_BY_HOP.has(name) && (listed === null || !listed.includes(name))) out[name] = headers[name];
  }
  return out;
}

// Module-level callbacks, the request's response travelling as `opaque`: no closure per request.
function onResponse({ statusCode, headers, opaque }: Dispatcher.StreamFactoryData<ServerResponse>): ServerResponse {
  return opaque.writeHead(statusCode, endToEnd(headers));
}

function onDone(err: Error | null, { opaque: res }: { opaque: ServerResponse }): void {
  if (err === null) return;
  if (res.headersSent || res.destroyed) res.destroy();
  else res.writeHead(502, { 'content-length': '0' }).end();
}

createServer((req, res) => {
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
  pool.stream(
    { path: req.url ?? '/', method: req.method as Dispatcher.HttpMethod, headers: endToEnd(req.headers), body: hasBody ? req : null, opaque: res },
    onResponse,
    onDone,
  );
}).listen(port, '127.0.0.1');
