import { createServer, type Server } from 'node:http';
import type { Runtime } from '../runtime/runtime.ts';
import { listenOrExplain, send } from './admin-server.ts';

/**
 * Istio's agent ports: health on 15021 (`/healthz/ready`, what Kubernetes probes) and the
 * Prometheus scrape port 15090 (`/stats/prometheus`). Both answer only what they are for.
 */
export class HealthServer {
  readonly server: Server;
  healthFailed = false;

  constructor(runtime: Runtime) {
    this.server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (path !== '/healthz/ready') return send(res, 404, 'text/plain', 'not found\n');
      const ok = runtime.ready && !this.healthFailed;
      send(res, ok ? 200 : 503, 'text/plain', ok ? '' : runtime.draining ? 'draining\n' : 'not ready\n');
    });
  }

  listen(host: string, port: number): Promise<void> {
    return listenOrExplain(this.server, host, port, 'health');
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
  }
}

export class PrometheusServer {
  readonly server: Server;

  constructor(runtime: Runtime) {
    this.server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (path !== '/stats/prometheus' && path !== '/metrics') return send(res, 404, 'text/plain', 'not found\n');
      runtime.metrics.render().then(
        (text) => send(res, 200, runtime.metrics.registry.contentType, text),
        (err: unknown) => send(res, 500, 'text/plain', `${(err as Error).message}\n`),
      );
    });
  }

  listen(host: string, port: number): Promise<void> {
    return listenOrExplain(this.server, host, port, 'prometheus');
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
  }
}
