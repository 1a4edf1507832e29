/**
 * A small xDS control plane for tests, as go-control-plane's snapshot cache serves Envoy:
 * ADS over gRPC (TCP or a Unix socket), state of the world and incremental (delta, what
 * Istio's agent asks for), one versioned snapshot of
 * listeners, route configurations, clusters and load assignments; every stream gets the
 * snapshot's resources of each type it asks for (Listener and Cluster whole, the others by
 * name), again whenever a new snapshot is set. ACKs and NACKs are recorded as they come.
 */
import { createHash } from 'node:crypto';
import { streamingMethod } from './grpc-method.ts';
import * as grpc from '@grpc/grpc-js';
import { create, type DescMessage, type JsonValue } from '@bufbuild/protobuf';
import { anyPack, type Any } from '@bufbuild/protobuf/wkt';
import { envoyFromJson, envoyMessageType, type EnvoyResources } from '@remora/config/envoy';
import {
  DeltaDiscoveryRequestSchema,
  DeltaDiscoveryResponseSchema,
  DiscoveryRequestSchema,
  DiscoveryResponseSchema,
  ResourceSchema,
  type DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
  type DiscoveryRequest,
  type DiscoveryResponse,
} from '@remora/config/envoy/gen/envoy/service/discovery/v3/discovery_pb.js';

export const LISTENER = 'type.googleapis.com/envoy.config.listener.v3.Listener';
export const ROUTES = 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration';
export const CLUSTER = 'type.googleapis.com/envoy.config.cluster.v3.Cluster';
export const ENDPOINTS = 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment';
const WILDCARD = new Set([LISTENER, CLUSTER]);

const method = (name: string, input: DescMessage, output: DescMessage): grpc.MethodDefinition<unknown, unknown> => streamingMethod('envoy.service.discovery.v3.AggregatedDiscoveryService', name, input, output);

/** What a proxy said about a response: accepted, or rejected with Envoy's error_detail. */
export interface Verdict {
  readonly typeUrl: string;
  readonly version: string;
  readonly nonce: string;
  readonly ack: boolean;
  readonly error: string;
}

interface StreamState {
  readonly call: grpc.ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>;
  /** Per type: the names asked for (empty for wildcard), and the nonce last sent. */
  readonly types: Map<string, { names: string[]; nonce: string; version: string }>;
}

export class ControlPlane {
  readonly verdicts: Verdict[] = [];
  readonly requests: DiscoveryRequest[] = [];
  readonly deltaRequests: DeltaDiscoveryRequest[] = [];
  #deltas = new Set<DeltaState>();
  #server: grpc.Server | null = null;
  #streams = new Set<StreamState>();
  #snapshot = new Map<string, Map<string, Any>>();
  #version = 0;
  #nonce = 0;
  #waiters: (() => void)[] = [];
  port = 0;
  readonly address: string;

  /** `address`: `127.0.0.1:0` or `unix:/path/to/socket`. */
  constructor(address = '127.0.0.1:0') {
    this.address = address;
  }

  get target(): string {
    return this.address.startsWith('unix:') ? this.address : `127.0.0.1:${this.port}`;
  }

  get version(): string {
    return String(this.#version);
  }

  async start(): Promise<void> {
    const server = new grpc.Server();
    server.addService(
      {
        StreamAggregatedResources: method('StreamAggregatedResources', DiscoveryRequestSchema, DiscoveryResponseSchema),
        DeltaAggregatedResources: method('DeltaAggregatedResources', DeltaDiscoveryRequestSchema, DeltaDiscoveryResponseSchema),
      },
      {
        StreamAggregatedResources: (call: grpc.ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>) => this.#open(call),
        DeltaAggregatedResources: (call: grpc.ServerDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>) => this.#openDelta(call),
      },
    );
    const bind = this.address.startsWith('unix:') ? this.address : `127.0.0.1:${this.port}`;
    this.port = await new Promise<number>((resolve, reject) => server.bindAsync(bind, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))));
    this.#server = server;
  }

  /** Drops every stream at once, as a control plane that crashed; `start` brings it back on the same address. */
  kill(): void {
    this.#server?.forceShutdown();
    this.#server = null;
    this.#streams.clear();
    this.#deltas.clear();
  }

  /** Sets the resources every proxy should have (Envoy JSON, as the exporter writes it) and pushes them. */
  set(resources: Pick<EnvoyResources, 'listeners' | 'routeConfigs' | 'clusters'> & { readonly endpoints?: EnvoyResources['endpoints'] }): string {
    const pack = (typeUrl: string, items: readonly { name?: string; clusterName?: string }[]): Map<string, Any> => {
      const schema = envoyMessageType(typeUrl)!;
      return new Map(items.map((r) => [(r.name ?? r.clusterName)!, anyPack(schema, envoyFromJson(schema, r as JsonValue) as never)]));
    };
    this.#snapshot = new Map([
      [LISTENER, pack(LISTENER, resources.listeners)],
      [ROUTES, pack(ROUTES, resources.routeConfigs)],
      [CLUSTER, pack(CLUSTER, resources.clusters)],
      [ENDPOINTS, pack(ENDPOINTS, (resources.endpoints ?? []).filter((e) => e.eds).map((e) => e.assignment))],
    ]);
    this.#version++;
    for (const s of this.#streams) for (const typeUrl of s.types.keys()) this.#send(s, typeUrl);
    for (const d of this.#deltas) for (const typeUrl of d.types.keys()) this.#sendDelta(d, typeUrl);
    return this.version;
  }

  /** Replaces one resource of the snapshot with raw Envoy JSON (even one a proxy should refuse) and pushes. */
  put(typeUrl: string, json: Record<string, unknown>): string {
    const schema = envoyMessageType(typeUrl)!;
    const name = (json.name ?? json.clusterName) as string;
    const map = this.#snapshot.get(typeUrl) ?? new Map<string, Any>();
    map.set(name, anyPack(schema, envoyFromJson(schema, json as JsonValue) as never));
    this.#snapshot.set(typeUrl, map);
    return this.#pushType(typeUrl);
  }

  /** Puts an `Any` as it is under `name` (even one of another type, or of a resource with no name) and pushes. */
  putAny(typeUrl: string, name: string, any: Any): string {
    const map = this.#snapshot.get(typeUrl) ?? new Map<string, Any>();
    map.set(name, any);
    this.#snapshot.set(typeUrl, map);
    return this.#pushType(typeUrl);
  }

  /** Drops one resource of the snapshot and pushes. */
  remove(typeUrl: string, name: string): string {
    this.#snapshot.get(typeUrl)?.delete(name);
    return this.#pushType(typeUrl);
  }

  #pushType(typeUrl: string): string {
    this.#version++;
    for (const s of this.#streams) if (s.types.has(typeUrl)) this.#send(s, typeUrl);
    for (const d of this.#deltas) if (d.types.has(typeUrl)) this.#sendDelta(d, typeUrl);
    return this.version;
  }

  /** Waits for a verdict on `typeUrl` at `version` (ACK or NACK). */
  async verdict(typeUrl: string, version: string, timeoutMs = 10_000): Promise<Verdict> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = this.verdicts.find((x) => x.typeUrl === typeUrl && (x.ack ? x.version === version : x.nonce !== '' && this.#nonceVersion.get(x.nonce) === version));
      if (v !== undefined) return v;
      if (Date.now() > deadline) throw new Error(`no verdict on ${typeUrl} version ${version}; verdicts: ${JSON.stringify(this.verdicts)}`);
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 50).unref();
      });
    }
  }

  readonly #nonceVersion = new Map<string, string>();

  #open(call: grpc.ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>): void {
    const state: StreamState = { call, types: new Map() };
    this.#streams.add(state);
    call.on('error', () => this.#streams.delete(state));
    call.on('end', () => this.#streams.delete(state));
    call.on('data', (req: DiscoveryRequest) => {
      this.requests.push(req);
      const t = state.types.get(req.typeUrl);
      if (req.responseNonce !== '') {
        const nack = req.errorDetail !== undefined;
        this.verdicts.push({ typeUrl: req.typeUrl, version: req.versionInfo, nonce: req.responseNonce, ack: !nack, error: req.errorDetail?.message ?? '' });
        const waiters = this.#waiters;
        this.#waiters = [];
        for (const w of waiters) w();
      }
      const names = [...req.resourceNames].sort();
      const changed = t === undefined || names.join('\n') !== t.names.join('\n');
      state.types.set(req.typeUrl, { names, nonce: t?.nonce ?? '', version: t?.version ?? '' });
      // A new subscription, or new names: send what the snapshot has. ACKs and NACKs of the current nonce ask for nothing.
      if (changed || req.responseNonce === '') this.#send(state, req.typeUrl);
    });
  }

  #send(state: StreamState, typeUrl: string): void {
    const t = state.types.get(typeUrl);
    if (t === undefined) return;
    const all = this.#snapshot.get(typeUrl) ?? new Map<string, Any>();
    const resources = WILDCARD.has(typeUrl) ? [...all.values()] : t.names.filter((n) => all.has(n)).map((n) => all.get(n)!);
    if (!WILDCARD.has(typeUrl) && resources.length === 0 && t.names.length > 0) return;
    const nonce = String(++this.#nonce);
    this.#nonceVersion.set(nonce, this.version);
    t.nonce = nonce;
    t.version = this.version;
    state.call.write(create(DiscoveryResponseSchema, { versionInfo: this.version, typeUrl, resources, nonce }));
  }

  #openDelta(call: grpc.ServerDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>): void {
    const state: DeltaState = { call, types: new Map() };
    this.#deltas.add(state);
    call.on('error', () => this.#deltas.delete(state));
    call.on('end', () => this.#deltas.delete(state));
    call.on('data', (req: DeltaDiscoveryRequest) => {
      this.deltaRequests.push(req);
      if (req.responseNonce !== '') {
        const nack = req.errorDetail !== undefined;
        this.verdicts.push({ typeUrl: req.typeUrl, version: this.#nonceVersion.get(req.responseNonce) ?? '', nonce: req.responseNonce, ack: !nack, error: req.errorDetail?.message ?? '' });
        const waiters = this.#waiters;
        this.#waiters = [];
        for (const w of waiters) w();
      }
      let t = state.types.get(req.typeUrl);
      const fresh = t === undefined;
      if (t === undefined) {
        t = { names: new Set(), wildcard: false, sent: new Map(Object.entries(req.initialResourceVersions)) };
        state.types.set(req.typeUrl, t);
      }
      for (const n of req.resourceNamesSubscribe) {
        if (n === '*') t.wildcard = true;
        else t.names.add(n);
      }
      for (const n of req.resourceNamesUnsubscribe) {
        if (n === '*') t.wildcard = false;
        else t.names.delete(n);
      }
      // Legacy wildcard: a first request for Listener or Cluster with no names.
      if (fresh && WILDCARD.has(req.typeUrl) && req.resourceNamesSubscribe.length === 0) t.wildcard = true;
      if (fresh || req.resourceNamesSubscribe.length > 0 || req.resourceNamesUnsubscribe.length > 0) this.#sendDelta(state, req.typeUrl);
    });
  }

  /** What changed for this stream since it was last told: resources added or changed, names removed. */
  #sendDelta(state: DeltaState, typeUrl: string): void {
    const t = state.types.get(typeUrl);
    if (t === undefined) return;
    const all = this.#snapshot.get(typeUrl) ?? new Map<string, Any>();
    const wanted = t.wildcard ? [...all.keys()] : [...t.names].filter((n) => all.has(n));
    const resources = [];
    for (const name of wanted) {
      const any = all.get(name)!;
      const v = createHash('sha256').update(any.value).digest('hex').slice(0, 12);
      if (t.sent.get(name) === v) continue;
      t.sent.set(name, v);
      resources.push(create(ResourceSchema, { name, version: v, resource: any }));
    }
    const removed = [...t.sent.keys()].filter((n) => !wanted.includes(n));
    for (const n of removed) t.sent.delete(n);
    if (resources.length === 0 && removed.length === 0) return;
    const nonce = String(++this.#nonce);
    this.#nonceVersion.set(nonce, this.version);
    state.call.write(create(DeltaDiscoveryResponseSchema, { systemVersionInfo: this.version, typeUrl, resources, removedResources: removed, nonce }));
  }
}

interface DeltaState {
  readonly call: grpc.ServerDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;
  /** Per type: the names subscribed, whether all are, and what each was last sent as. */
  readonly types: Map<string, { names: Set<string>; wildcard: boolean; sent: Map<string, string> }>;
}
