/**
 * Istio's app probes, as pilot-agent serves them on its status port (15020).
 *
 * Under capture, the kubelet's probes of the app would go through the sidecar's inbound side
 * (and fail under STRICT mTLS: the kubelet has no mesh certificate). Istio's injector
 * therefore rewrites each `httpGet`/`tcpSocket`/`grpc` probe of a container into an
 * `httpGet` of `:15020/app-health/<container>/livez|readyz|startupz`, and hands the original
 * probes to the agent as JSON in `ISTIO_KUBE_APP_PROBERS`:
 *
 *   {"/app-health/web/readyz": {"httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP"}, "timeoutSeconds": 1}}
 *
 * The agent runs the original probe against the app and answers with its outcome. Its rules,
 * kept here: the probe connects from 127.0.0.6, which istio-iptables never captures, to the
 * pod's IP (INSTANCE_IP; 127.0.0.1 without it); `httpGet` forwards the kubelet's headers
 * (Host with the status port replaced by the app's), follows redirects to the same host (up
 * to 10), answers 200 for a final redirect and otherwise the app's status and up to 10 KiB of
 * its body; a failed connection or a timeout is 500; `tcpSocket` is 200 when a connection
 * opens; `grpc` is 200 when grpc.health.v1 answers SERVING; an unknown probe path is 400.
 * HTTPS probes skip certificate verification, as the kubelet's do.
 */
import { request as httpRequest, createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect as h2connect } from 'node:http2';
import { connect as tcpConnect, isIPv6 } from 'node:net';
import { listenOrExplain, send } from './admin-server.ts';

/** The environment variable Istio's injector fills with the rewritten probes. */
export const APP_PROBERS_ENV = 'ISTIO_KUBE_APP_PROBERS';
/** pilot-agent's status port. */
export const STATUS_PORT = 15020;
/** istio-iptables lets connections from this source through uncaptured (Envoy's inbound passthrough). */
const PROBE_SOURCE_IPV4 = '127.0.0.6';
/** Istio's `maxRespBodyLength`. */
const MAX_BODY = 10 * 1024;
const MAX_REDIRECTS = 10;
/** Kubernetes' default `timeoutSeconds`. */
const DEFAULT_TIMEOUT_S = 1;
const PATH_PATTERN = /^\/(app-health|app-lifecycle)\/[^/]+\/(livez|readyz|startupz|prestopz|poststartz)$/;

/** One probe, checked: what the kubelet would have run against the app. */
export type AppProber =
  | { readonly kind: 'http'; readonly port: number; readonly path: string; readonly https: boolean; readonly timeoutMs: number }
  | { readonly kind: 'tcp'; readonly port: number; readonly timeoutMs: number }
  | { readonly kind: 'grpc'; readonly port: number; readonly service: string; readonly timeoutMs: number };

/** `ISTIO_KUBE_APP_PROBERS` is not what Istio's injector writes: the message names the probe path and field. */
export class AppProbersError extends Error {
  override readonly name = 'AppProbersError';
}

/** Parses and checks `ISTIO_KUBE_APP_PROBERS` (pilot-agent refuses to start on the same mistakes). */
export function parseAppProbers(json: string): ReadonlyMap<string, AppProber> {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (err) {
    throw new AppProbersError(`${APP_PROBERS_ENV}: not JSON (${(err as Error).message})`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new AppProbersError(`${APP_PROBERS_ENV}: must be a JSON object of probe path → probe`);
  const out = new Map<string, AppProber>();
  for (const [path, value] of Object.entries(raw)) {
    const where = `${APP_PROBERS_ENV} "${path}"`;
    if (!PATH_PATTERN.test(path)) throw new AppProbersError(`${where}: the path must match ${PATH_PATTERN.source}`);
    if (value === null || typeof value !== 'object') throw new AppProbersError(`${where}: must be an object with httpGet, tcpSocket or grpc`);
    const p = value as Record<string, unknown>;
    const kinds = (['httpGet', 'tcpSocket', 'grpc'] as const).filter((k) => p[k] !== undefined && p[k] !== null);
    if (kinds.length !== 1) throw new AppProbersError(`${where}: exactly one of httpGet, tcpSocket or grpc is needed, got ${kinds.length === 0 ? 'none' : kinds.join(', ')}`);
    const kind = kinds[0]!;
    const timeoutS = p.timeoutSeconds ?? DEFAULT_TIMEOUT_S;
    if (typeof timeoutS !== 'number' || !Number.isInteger(timeoutS) || timeoutS < 0) throw new AppProbersError(`${where}: timeoutSeconds must be a whole number of seconds`);
    const timeoutMs = (timeoutS === 0 ? DEFAULT_TIMEOUT_S : timeoutS) * 1000;
    const action = p[kind] as Record<string, unknown>;
    const port = action.port;
    // Named ports are resolved by the injector; a string here is a port it could not resolve.
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) throw new AppProbersError(`${where}: ${kind}.port must be a port number, got ${JSON.stringify(port)}`);
    if (kind === 'httpGet') {
      const scheme = action.scheme ?? 'HTTP';
      if (scheme !== 'HTTP' && scheme !== 'HTTPS') throw new AppProbersError(`${where}: httpGet.scheme must be HTTP or HTTPS, got ${JSON.stringify(scheme)}`);
      const rawPath = typeof action.path === 'string' ? action.path : '';
      out.set(path, { kind: 'http', port, path: rawPath.startsWith('/') ? rawPath : `/${rawPath}`, https: scheme === 'HTTPS', timeoutMs });
    } else if (kind === 'tcpSocket') {
      out.set(path, { kind: 'tcp', port, timeoutMs });
    } else {
      const service = action.service ?? '';
      if (typeof service !== 'string') throw new AppProbersError(`${where}: grpc.service must be a string`);
      out.set(path, { kind: 'grpc', port, service, timeoutMs });
    }
  }
  return out;
}

export interface AppProbeServerOptions {
  /** Where the app is probed: the pod's IP (Istio's default), or 127.0.0.1. */
  readonly destination: string;
  /** The port this server listens on, replaced by the app's in a forwarded Host header. */
  readonly statusPort: number;
}

/** The status port's `/app-health/…` (and `/app-lifecycle/…`) endpoints. */
export class AppProbeServer {
  readonly server: Server;
  readonly #probers: ReadonlyMap<string, AppProber>;
  readonly #opts: AppProbeServerOptions;
  readonly #localAddress: string | undefined;

  constructor(probers: ReadonlyMap<string, AppProber>, opts: AppProbeServerOptions) {
    this.#probers = probers;
    this.#opts = opts;
    this.#localAddress = isIPv6(opts.destination) ? undefined : PROBE_SOURCE_IPV4;
    this.server = createServer((req, res) => this.#handle(req, res));
  }

  listen(host: string, port: number): Promise<void> {
    return listenOrExplain(this.server, host, port, 'app probes');
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (!path.startsWith('/app-health/') && !path.startsWith('/app-lifecycle/')) return send(res, 404, 'text/plain', 'not found\n');
    const prober = this.#probers.get(path);
    if (prober === undefined) return send(res, 400, 'text/plain', `app prober config does not exists for ${path}`);
    if (prober.kind === 'http') void this.#probeHttp(prober, req, res);
    else if (prober.kind === 'tcp') this.#probeTcp(prober, res);
    else this.#probeGrpc(prober, req, res);
  }

  async #probeHttp(p: Extract<AppProber, { kind: 'http' }>, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(req.headers as IncomingHttpHeaders)) {
      if (value === undefined || name === 'connection' || name === 'keep-alive' || name === 'transfer-encoding' || name === 'content-length') continue;
      headers[name] = value;
    }
    const host = req.headers.host;
    if (host !== undefined) {
      const m = /^(.*):(\d+)$/.exec(host);
      if (m && Number(m[2]) === this.#opts.statusPort) headers.host = `${m[1]}:${p.port}`;
    }
    const deadline = Date.now() + p.timeoutMs;
    let target = new URL(`${p.https ? 'https' : 'http'}://${hostPort(this.#opts.destination, p.port)}${p.path}`);
    try {
      for (let hop = 0; ; hop++) {
        const r = await get(target, headers, this.#localAddress, deadline - Date.now());
        if (r.status >= 300 && r.status < 400) {
          const location = r.location === undefined ? null : new URL(r.location, target);
          // The kubelet: a redirect elsewhere is a success; to the same host it is followed.
          if (location === null || location.hostname !== target.hostname) return send(res, 200, 'text/plain', '');
          if (hop + 1 >= MAX_REDIRECTS) return send(res, 500, 'text/plain', `stopped after ${MAX_REDIRECTS} redirects\n`);
          target = location;
          continue;
        }
        res.writeHead(r.status, { 'content-length': r.body.length });
        res.end(r.body);
        return;
      }
    } catch (err) {
      send(res, 500, 'text/plain', `probe of ${target.href} failed: ${(err as Error).message}\n`);
    }
  }

  #probeTcp(p: Extract<AppProber, { kind: 'tcp' }>, res: ServerResponse): void {
    const socket = tcpConnect({ host: this.#opts.destination, port: p.port, ...(this.#localAddress ? { localAddress: this.#localAddress } : {}) });
    socket.setTimeout(p.timeoutMs);
    socket.once('connect', () => {
      socket.destroy();
      send(res, 200, 'text/plain', '');
    });
    socket.once('timeout', () => socket.destroy(new Error('timed out')));
    socket.once('error', (err) => send(res, 500, 'text/plain', `probe of port ${p.port} failed: ${err.message}\n`));
  }

  /** grpc.health.v1.Health/Check over h2c; SERVING (1) is healthy. */
  #probeGrpc(p: Extract<AppProber, { kind: 'grpc' }>, req: IncomingMessage, res: ServerResponse): void {
    let answered = false;
    const answer = (status: number, body: string): void => {
      if (answered) return;
      answered = true;
      session.destroy();
      send(res, status, 'text/plain', body);
    };
    const { destination } = this.#opts;
    const localAddress = this.#localAddress;
    const session = h2connect(`http://${hostPort(destination, p.port)}`, {
      createConnection: () => tcpConnect({ host: destination, port: p.port, ...(localAddress ? { localAddress } : {}) }),
    });
    session.setTimeout(p.timeoutMs, () => answer(500, 'grpc probe timed out\n'));
    session.on('error', (err) => answer(500, `grpc probe failed: ${err.message}\n`));
    const service = Buffer.from(p.service);
    // HealthCheckRequest { string service = 1; } in one length-prefixed gRPC message.
    const message = service.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a]), varint(service.length), service]);
    const frame = Buffer.alloc(5 + message.length);
    frame.writeUInt32BE(message.length, 1);
    message.copy(frame, 5);
    const ua = req.headers['user-agent'];
    const stream = session.request({
      ':method': 'POST',
      ':path': '/grpc.health.v1.Health/Check',
      'content-type': 'application/grpc',
      te: 'trailers',
      ...(ua !== undefined ? { 'user-agent': ua } : {}),
    });
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', (err) => answer(500, `grpc probe failed: ${err.message}\n`));
    stream.on('end', () => {
      const body = Buffer.concat(chunks);
      // HealthCheckResponse { ServingStatus status = 1; }: SERVING is 1, the field's bytes 08 01.
      const serving = body.length >= 7 && body[5] === 0x08 && body[6] === 0x01;
      answer(serving ? 200 : 500, serving ? '' : 'grpc probe: the service is not SERVING\n');
    });
    stream.end(frame);
  }
}

/** The probers from the environment (`ISTIO_KUBE_APP_PROBERS`), or null when it is unset or empty. */
export function appProbersFromEnv(env: NodeJS.ProcessEnv): ReadonlyMap<string, AppProber> | null {
  const json = env[APP_PROBERS_ENV];
  if (json === undefined || json.trim() === '') return null;
  return parseAppProbers(json);
}

/** Istio probes the pod's IP (INSTANCE_IP), as the kubelet does; without one, loopback. */
export function appProbeDestination(env: NodeJS.ProcessEnv): string {
  const ip = env.INSTANCE_IP;
  return ip !== undefined && ip !== '' ? ip : '127.0.0.1';
}

function hostPort(host: string, port: number): string {
  return isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

function varint(n: number): Buffer {
  const bytes: number[] = [];
  while (n > 0x7f) {
    bytes.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  bytes.push(n);
  return Buffer.from(bytes);
}

interface ProbeResponse {
  readonly status: number;
  readonly location: string | undefined;
  readonly body: Buffer;
}

/** One GET without keep-alive (as the kubelet's probes), the body cut at 10 KiB. */
function get(url: URL, headers: Record<string, string | string[]>, localAddress: string | undefined, timeoutMs: number): Promise<ProbeResponse> {
  return new Promise((resolve, reject) => {
    if (timeoutMs <= 0) return reject(new Error('timed out'));
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, {
      method: 'GET',
      headers,
      agent: false,
      ...(localAddress ? { localAddress } : {}),
      ...(url.protocol === 'https:' ? { rejectUnauthorized: false } : {}),
    });
    const timer = setTimeout(() => req.destroy(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
    req.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        if (size < MAX_BODY) chunks.push(c.subarray(0, MAX_BODY - size));
        size += c.length;
      });
      res.once('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 500, location: res.headers.location, body: Buffer.concat(chunks) });
      });
      res.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    req.end();
  });
}
