/**
 * The coffee shop's demo workloads: one tiny node:http server per pod, parameterised by
 * service, version and port. Every answer says who served it, in the body and in an
 * `x-served-by` header, so routing decisions are visible from a plain curl. A pod behind a
 * sidecar also shows the `x-forwarded-client-cert` header it received (`xfcc`): the caller's
 * mesh identity, as the sidecar verified it during the mTLS handshake.
 *
 * `order` is the only caller: its `/order` handler asks `payment` and `inventory` for their
 * part, through its sidecar's outbound listener used as an HTTP proxy (an absolute-form
 * request to 127.0.0.1:<outbound port>), the way an app without iptables capture reaches
 * the mesh. Headers that Istio apps are expected to propagate (request id, trace context,
 * and the demo's `x-canary`) are passed on, so `x-canary: true` reaches payment's routing.
 *
 *   node examples/coffee-shop/backend.ts --service payment --version v2 --port 18083
 *   node examples/coffee-shop/backend.ts --service order --version v1 --port 18081 --outbound 127.0.0.1:15001
 */
import { createServer, request, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { parseArgs } from 'node:util';

export interface BackendOptions {
  readonly service: string;
  readonly version: string;
  readonly port: number;
  /** Listening address; 127.0.0.1 unless told. */
  readonly host?: string;
  /** A name for this instance (several pods of one version), shown as `pod`; `<service>-<version>` unless told. */
  readonly pod?: string;
  /** `host:port` of the sidecar's outbound listener; only `order` calls out. */
  readonly outbound?: string;
  /** Kubernetes-style namespace of the services called; `coffee`. */
  readonly namespace?: string;
}

/** Headers an Istio app propagates from its inbound request to the requests it makes. */
const PROPAGATED = [
  'x-request-id',
  'traceparent',
  'tracestate',
  'x-b3-traceid',
  'x-b3-spanid',
  'x-b3-parentspanid',
  'x-b3-sampled',
  'x-b3-flags',
  'b3',
  'x-canary',
];

interface CallResult {
  readonly status: number;
  readonly body: unknown;
}

/** Starts one backend; resolves once it listens. */
export async function startBackend(opts: BackendOptions): Promise<Server> {
  const host = opts.host ?? '127.0.0.1';
  const pod = opts.pod ?? `${opts.service}-${opts.version}`;
  const namespace = opts.namespace ?? 'coffee';
  const servedBy = `${opts.service}-${opts.version}`;

  const describe = (req: IncomingMessage): Record<string, unknown> => {
    const out: Record<string, unknown> = {
      service: opts.service,
      version: opts.version,
      pod,
      path: req.url ?? '/',
      host: req.headers.host ?? '',
    };
    const rid = req.headers['x-request-id'];
    if (typeof rid === 'string') out.requestId = rid;
    // Set by this pod's sidecar after an mTLS handshake: who called (the peer's SPIFFE ID in
    // `URI=`), as the sidecar verified it. Absent for plaintext callers.
    const xfcc = req.headers['x-forwarded-client-cert'];
    if (typeof xfcc === 'string') out.xfcc = xfcc;
    return out;
  };

  const send = (res: ServerResponse, status: number, body: unknown): void => {
    const text = JSON.stringify(body) + '\n';
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
      'x-served-by': servedBy,
    });
    res.end(text);
  };

  const callThroughMesh = (service: string, path: string, inbound: IncomingHttpHeaders): Promise<CallResult> => {
    const outbound = opts.outbound ?? '127.0.0.1:15001';
    const colon = outbound.lastIndexOf(':');
    const authority = `${service}.${namespace}.svc.cluster.local`;
    const headers: Record<string, string> = { host: authority, accept: 'application/json' };
    for (const h of PROPAGATED) {
      const v = inbound[h];
      if (typeof v === 'string') headers[h] = v;
    }
    return new Promise((resolve) => {
      const req = request(
        {
          host: outbound.slice(0, colon),
          port: Number(outbound.slice(colon + 1)),
          method: 'GET',
          // Absolute form: the sidecar acts as this app's HTTP proxy.
          path: `http://${authority}${path}`,
          headers,
          timeout: 5000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let body: unknown = text;
            try {
              body = JSON.parse(text);
            } catch {
              // a local reply from the proxy (`no healthy upstream`, …): keep the text
            }
            resolve({ status: res.statusCode ?? 0, body });
          });
          res.on('error', (err) => resolve({ status: 0, body: { error: err.message } }));
        },
      );
      req.on('timeout', () => req.destroy(new Error(`timeout calling ${authority} through ${outbound}`)));
      req.on('error', (err) => resolve({ status: 0, body: { error: err.message } }));
      req.end();
    });
  };

  const server = createServer((req, res) => {
    // Bodies are not used; drain them so keep-alive connections stay usable.
    req.resume();
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (path === '/healthz') {
      send(res, 200, { status: 'ok', ...describe(req) });
      return;
    }
    if (opts.service === 'order' && path.startsWith('/order')) {
      void Promise.all([callThroughMesh('payment', '/pay', req.headers), callThroughMesh('inventory', '/stock', req.headers)]).then(
        ([payment, inventory]) => {
          const ok = payment.status === 200 && inventory.status === 200;
          const out = describe(req);
          out.payment = payment.status === 200 ? payment.body : { status: payment.status, error: payment.body };
          out.inventory = inventory.status === 200 ? inventory.body : { status: inventory.status, error: inventory.body };
          send(res, ok ? 200 : 502, out);
        },
      );
      return;
    }
    send(res, 200, describe(req));
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

function main(): void {
  const { values } = parseArgs({
    options: {
      service: { type: 'string' },
      version: { type: 'string', default: 'v1' },
      port: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      pod: { type: 'string' },
      outbound: { type: 'string' },
      namespace: { type: 'string', default: 'coffee' },
    },
  });
  if (values.service === undefined || values.port === undefined) {
    console.error('usage: backend.ts --service NAME [--version v1] --port N [--host 127.0.0.1] [--pod NAME] [--outbound HOST:PORT]');
    process.exit(2);
  }
  const opts: BackendOptions = {
    service: values.service,
    version: values.version,
    port: Number(values.port),
    host: values.host,
    namespace: values.namespace,
    ...(values.pod !== undefined ? { pod: values.pod } : {}),
    ...(values.outbound !== undefined ? { outbound: values.outbound } : {}),
  };
  startBackend(opts).then(
    (server) => {
      const stop = (): void => {
        server.close(() => process.exit(0));
        server.closeAllConnections();
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    },
    (err: unknown) => {
      console.error(`backend ${opts.service}-${opts.version}: cannot listen on ${opts.host}:${opts.port}: ${(err as Error).message}`);
      process.exit(1);
    },
  );
}

if (import.meta.main) main();
