// @fastify/http-proxy as a keep-alive reverse proxy: logger off, its default undici transport
// (through @fastify/reply-from) with a pool of 64 keep-alive connections, as the minimal
// forwarder has.
//   PORT=8081 UPSTREAM=http://127.0.0.1:8080 node bench/peers/fastify-proxy.ts
import proxy from '@fastify/http-proxy';
import Fastify from 'fastify';

const port = Number(process.env.PORT ?? 8081);
const upstream = process.env.UPSTREAM ?? 'http://127.0.0.1:8080';

const app = Fastify({ logger: false });
await app.register(proxy, {
  upstream,
  undici: { connections: 64, pipelining: 1, keepAliveTimeout: 60_000 },
});
await app.listen({ port, host: '127.0.0.1' });
