// A real ADS control plane for the tests: a grpc-js Server implementing
// envoy.service.discovery.v3.AggregatedDiscoveryService (both methods) with protobuf-es
// (de)serialisers, recording every request per stream and sending what a test pushes.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create, fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { envoyPack } from '@remora/config/envoy';
import { ClusterSchema } from '@remora/config/envoy/gen/envoy/config/cluster/v3/cluster_pb.js';
import { ClusterLoadAssignmentSchema } from '@remora/config/envoy/gen/envoy/config/endpoint/v3/endpoint_pb.js';
import { ListenerSchema } from '@remora/config/envoy/gen/envoy/config/listener/v3/listener_pb.js';
import { RouteConfigurationSchema } from '@remora/config/envoy/gen/envoy/config/route/v3/route_pb.js';
import {
  DeltaDiscoveryRequestSchema,
  DeltaDiscoveryResponseSchema,
  DiscoveryRequestSchema,
  DiscoveryResponseSchema,
  type DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
  type DiscoveryRequest,
  type DiscoveryResponse,
} from '@remora/config/envoy/gen/envoy/service/discovery/v3/discovery_pb.js';
import type { Any } from '@bufbuild/protobuf/wkt';

const SERVICE = '/envoy.service.discovery.v3.AggregatedDiscoveryService/';

function method<Req extends DescMessage, Res extends DescMessage>(name: string, req: Req, res: Res): grpc.MethodDefinition<MessageShape<Req>, MessageShape<Res>> {
  return {
    path: SERVICE + name,
    requestStream: true,
    responseStream: true,
    requestSerialize: (m) => Buffer.from(toBinary(req, m)),
    requestDeserialize: (b) => fromBinary(req, b),
    responseSerialize: (m) => Buffer.from(toBinary(res, m)),
    responseDeserialize: (b) => fromBinary(res, b),
  };
}

const ADS_DEFINITION = {
  StreamAggregatedResources: method('StreamAggregatedResources', DiscoveryRequestSchema, DiscoveryResponseSchema),
  DeltaAggregatedResources: method('DeltaAggregatedResources', DeltaDiscoveryRequestSchema, DeltaDiscoveryResponseSchema),
} satisfies grpc.ServiceDefinition;

/** One client stream as the server sees it: the requests in order, and a way to answer. */
export class ServerStream<Req, Res> {
  readonly requests: Req[] = [];
  readonly #call: grpc.ServerDuplexStream<Req, Res>;
  #waiters: { n: number; resolve: () => void }[] = [];

  constructor(call: grpc.ServerDuplexStream<Req, Res>) {
    this.#call = call;
    call.on('data', (r: Req) => {
      this.requests.push(r);
      this.#waiters = this.#waiters.filter((w) => (this.requests.length >= w.n ? (w.resolve(), false) : true));
    });
    call.on('error', () => {});
  }

  send(response: Res): void {
    this.#call.write(response);
  }

  /** Waits until the stream has received `n` requests in all; returns the n-th. */
  async request(n: number, timeoutMs = 5000): Promise<Req> {
    if (this.requests.length < n) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for request ${n}, have ${this.requests.length}`)), timeoutMs);
        this.#waiters.push({ n, resolve: () => (clearTimeout(timer), resolve()) });
      });
    }
    return this.requests[n - 1]!;
  }
}

export type SotwStream = ServerStream<DiscoveryRequest, DiscoveryResponse>;
export type DeltaStream = ServerStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

export interface ServerTls {
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly requireClientCert: boolean;
}

/** The control plane: listens on `address` (`127.0.0.1:0`, `unix:/tmp/…/ads.sock`), can be killed and started again on the same address. */
export class AdsServer {
  readonly sotw: SotwStream[] = [];
  readonly delta: DeltaStream[] = [];
  #server: grpc.Server | null = null;
  #address: string;
  readonly #tls: ServerTls | null;
  #streamWaiters: (() => void)[] = [];
  port = 0;

  constructor(address: string, tls: ServerTls | null = null) {
    this.#address = address;
    this.#tls = tls;
  }

  get target(): string {
    return this.#address.startsWith('unix:') ? this.#address : `127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const server = new grpc.Server();
    server.addService(ADS_DEFINITION, {
      StreamAggregatedResources: (call: grpc.ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>) => this.#opened(this.sotw, new ServerStream(call)),
      DeltaAggregatedResources: (call: grpc.ServerDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>) => this.#opened(this.delta, new ServerStream(call)),
    });
    const credentials =
      this.#tls === null
        ? grpc.ServerCredentials.createInsecure()
        : grpc.ServerCredentials.createSsl(this.#tls.ca, [{ cert_chain: this.#tls.cert, private_key: this.#tls.key }], this.#tls.requireClientCert);
    const address = this.#address.startsWith('unix:') ? this.#address : `127.0.0.1:${this.port}`;
    this.port = await new Promise<number>((resolve, reject) => server.bindAsync(address, credentials, (err, port) => (err ? reject(err) : resolve(port))));
    this.#server = server;
  }

  /** Drops every connection at once, as a control plane that crashed. */
  kill(): void {
    this.#server?.forceShutdown();
    this.#server = null;
  }

  /** Waits for the n-th stream (of either kind) to open. */
  async stream<S>(list: S[], n: number, timeoutMs = 5000): Promise<S> {
    if (list.length < n) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for stream ${n}, have ${list.length}`)), timeoutMs);
        const check = (): void => {
          if (list.length >= n) {
            clearTimeout(timer);
            resolve();
          } else this.#streamWaiters.push(check);
        };
        check();
      });
    }
    return list[n - 1]!;
  }

  #opened<S>(list: S[], stream: S): void {
    list.push(stream);
    const waiters = this.#streamWaiters;
    this.#streamWaiters = [];
    for (const w of waiters) w();
  }
}

export const sotwResponse = (init: MessageInitShape<typeof DiscoveryResponseSchema>): DiscoveryResponse => create(DiscoveryResponseSchema, init);
export const deltaResponse = (init: MessageInitShape<typeof DeltaDiscoveryResponseSchema>): DeltaDiscoveryResponse => create(DeltaDiscoveryResponseSchema, init);

/** Real Envoy resources, packed as an ADS server packs them. */
export function cluster(name: string, connectTimeoutSeconds = 1): Any {
  return envoyPack(ClusterSchema, create(ClusterSchema, { name, connectTimeout: { seconds: BigInt(connectTimeoutSeconds) }, clusterDiscoveryType: { case: 'type', value: 3 } }));
}
export function listener(name: string, port: number): Any {
  return envoyPack(ListenerSchema, create(ListenerSchema, { name, address: { address: { case: 'socketAddress', value: { address: '0.0.0.0', portSpecifier: { case: 'portValue', value: port } } } } }));
}
export function routeConfig(name: string): Any {
  return envoyPack(RouteConfigurationSchema, create(RouteConfigurationSchema, { name, virtualHosts: [{ name: `${name}-vh`, domains: ['*'] }] }));
}
export function loadAssignment(clusterName: string, port: number): Any {
  return envoyPack(
    ClusterLoadAssignmentSchema,
    create(ClusterLoadAssignmentSchema, {
      clusterName,
      endpoints: [{ lbEndpoints: [{ hostIdentifier: { case: 'endpoint', value: { address: { address: { case: 'socketAddress', value: { address: '127.0.0.1', portSpecifier: { case: 'portValue', value: port } } } } } } }] }],
    }),
  );
}

export function tempDir(prefix: string): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** A CA, a server certificate for `xds.test` and a client certificate, made with openssl in `dir`. */
export function makeCertificates(dir: string): { ca: string; serverCert: string; serverKey: string; clientCert: string; clientKey: string } {
  const f = (n: string) => join(dir, n);
  const ssl = (args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  ssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '1', '-subj', '/CN=xds test ca']);
  for (const [who, ext] of [['server', 'subjectAltName=DNS:xds.test'], ['client', 'subjectAltName=URI:spiffe://cluster.local/ns/default/sa/remora']] as const) {
    writeFileSync(f(`${who}.ext`), ext + '\n');
    ssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f(`${who}.key`), '-out', f(`${who}.csr`), '-subj', `/CN=${who}`]);
    ssl(['x509', '-req', '-in', f(`${who}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f(`${who}.pem`), '-days', '1', '-extfile', f(`${who}.ext`)]);
  }
  return { ca: f('ca.pem'), serverCert: f('server.pem'), serverKey: f('server.key'), clientCert: f('client.pem'), clientKey: f('client.key') };
}

export const read = (path: string): Buffer => readFileSync(path);
