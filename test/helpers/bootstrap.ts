// Envoy bootstraps for `remora envoy` tests: a static one (a listener routing every request to
// one backend, with an optional TLS transport socket and more clusters), and a way to run the
// command as Istio's agent runs Envoy, its stderr collected.
import { spawn, type ChildProcess } from 'node:child_process';
import { collectLines } from './net.ts';
import { CLI, oneLoopUnlessAsked } from './remora.ts';

export interface StaticBootstrap {
  /** The node id, `router~IP~POD.NS~NS.svc.cluster.local` or `sidecar~…`. */
  readonly nodeId: string;
  readonly adminPort: number;
  readonly listenPort: number;
  readonly backendPort: number;
  /** YAML of the filter chain's `transport_socket` (indented under the chain), if any. */
  readonly transportSocket?: string;
  /** YAML of more static clusters (list items at the clusters' indentation). */
  readonly extraClusters?: string;
}

/** A bootstrap whose static listener sends every request to the static cluster `backend`. */
export function staticBootstrap(o: StaticBootstrap): string {
  return `node: { id: "${o.nodeId}", cluster: "test" }
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: ${o.adminPort} } }
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: ${o.listenPort} } }
    filter_chains:
    - ${o.transportSocket !== undefined ? `transport_socket:\n${o.transportSocket}\n      ` : ''}filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            name: local_route
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: backend }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${o.backendPort} } } }
${o.extraClusters ?? ''}`;
}

export interface EnvoyProcess {
  readonly child: ChildProcess;
  /** Remora's stderr lines so far. */
  readonly err: string[];
  readonly exited: Promise<number | null>;
}

/** `remora envoy ARGS…` as its own process (cwd: `cwd`). */
export function spawnEnvoy(args: readonly string[], cwd?: string): EnvoyProcess {
  const child = spawn(process.execPath, [CLI, 'envoy', ...oneLoopUnlessAsked(args), ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...(cwd !== undefined ? { cwd } : {}) });
  const err: string[] = [];
  child.stderr!.on('data', collectLines(err));
  const exited = new Promise<number | null>((r) => child.on('exit', r));
  return { child, err, exited };
}
