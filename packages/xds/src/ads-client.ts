/**
 * `AdsClient`: Remora under an xDS control plane, as Envoy speaks to istiod through the Istio
 * agent. One aggregated gRPC stream (state of the world or incremental) carries every
 * resource type; the client subscribes, decodes, hands each update to the consumer and ACKs
 * or NACKs as the consumer decides. What was accepted is held through any outage; the stream
 * reconnects with Envoy's jittered backoff and resubscribes with what it holds. Stream
 * problems are logged and counted, never thrown at the caller.
 *
 * Ordering and warming (clusters before endpoints, listeners before routes) are the
 * consumer's: it calls {@link AdsClient.subscribe} from `onResources` for the endpoints of the
 * clusters it just received or the routes its listeners name, and those requests go out
 * right after the ACK, as Envoy's paused-then-resumed requests do.
 */
import { readFileSync } from 'node:fs';
import { clone, fromJson, type JsonObject } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { NodeSchema, type Node, type NodeJson } from '@remora/config/envoy/gen/envoy/config/core/v3/base_pb.js';
import { envoyRegistry } from '@remora/config/envoy';
import { Subscription, type AdsProtocol, type DiscoveryService, type Incoming } from './ads-protocol.ts';
import { DeltaProtocol } from './ads-protocol-delta.ts';
import { SotwProtocol } from './ads-protocol-sotw.ts';
import { makeGrpcClient, PLAINTEXT, type AdsTransport } from './ads-transport.ts';
import { JitteredBackoff, type BackoffOptions } from './backoff.ts';
import { adsRank, shortTypeName, TypeUrl } from './type-urls.ts';
import { decodeResource, type XdsResource } from './xds-resource.ts';
import { XdsStats } from './xds-stats.ts';

/** The consumer's answer to an update: applied, or rejected with a message naming resource(s), field and reason. */
export type XdsVerdict = { readonly ok: true } | { readonly ok: false; readonly message: string };

export const ACCEPT: XdsVerdict = { ok: true };

/**
 * Called once per response, in order, never twice at once. `resources` are the ones added or
 * changed (for a state-of-the-world Listener or Cluster response, the whole set);
 * `removed` the names gone. Rejecting leaves everything held as it was.
 */
export type OnResources = (
  typeUrl: string,
  resources: readonly XdsResource[],
  removed: readonly string[],
  version: string,
) => XdsVerdict | Promise<XdsVerdict>;

/** Where the client logs; Remora's `Logger` fits. */
export interface XdsLogger {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
}

export interface AdsClientOptions {
  /** gRPC target: `unix:/etc/istio/proxy/XDS`, `127.0.0.1:15010`. */
  readonly target: string;
  readonly transport?: AdsTransport;
  /** Envoy's `ads_config.api_type`: `GRPC` (state of the world) or `DELTA_GRPC` (incremental). */
  readonly apiType: 'GRPC' | 'DELTA_GRPC';
  /**
   * The service the stream is opened on: ADS (default), or SDS's own
   * `SecretDiscoveryService` — Envoy's `api_config_source` for secrets, as Istio's agent
   * serves them on its SDS socket. Same messages, same flow.
   */
  readonly service?: DiscoveryService;
  /** This proxy's identity; `user_agent_name` and `user_agent_version` are set by the client. */
  readonly node: Node | NodeJson;
  readonly onResources: OnResources;
  /** Types asked for whole from the start. Envoy with LDS and CDS over ADS: Listener and Cluster. */
  readonly wildcard?: readonly string[];
  /** Envoy's `set_node_on_first_message_only` (state of the world; incremental always sends it once). */
  readonly setNodeOnFirstMessageOnly?: boolean;
  readonly backoff?: BackoffOptions;
  readonly logger?: XdsLogger;
  readonly stats?: XdsStats;
  /** grpc-js channel options; the receive limit is off by default (`grpc.max_receive_message_length: -1`), as in Envoy. */
  readonly channelOptions?: grpc.ChannelOptions;
}

export const USER_AGENT_NAME = 'remora';
export const USER_AGENT_VERSION: string = packageVersion();

const SILENT: XdsLogger = { debug() {}, info() {}, warn() {} };

interface Stream {
  readonly generation: number;
  readonly client: grpc.Client;
  readonly call: grpc.ClientDuplexStream<unknown, unknown>;
  nodeSent: boolean;
  received: boolean;
}

export class AdsClient {
  readonly stats: XdsStats;
  readonly node: Node;
  readonly #target: string;
  readonly #transport: AdsTransport;
  readonly #protocol: AdsProtocol<unknown, unknown>;
  readonly #onResources: OnResources;
  readonly #backoff: JitteredBackoff;
  readonly #log: XdsLogger;
  readonly #channelOptions: grpc.ChannelOptions;
  readonly #subs = new Map<string, Subscription>();
  #stream: Stream | null = null;
  #generation = 0;
  #timer: NodeJS.Timeout | null = null;
  #started = false;
  #closed = false;
  /** Everything that reads or sends runs here, one step at a time, in arrival order. */
  #queue: Promise<void> = Promise.resolve();
  #flushQueued = false;
  #processing = false;

  constructor(options: AdsClientOptions) {
    this.#target = options.target;
    this.#transport = options.transport ?? PLAINTEXT;
    this.#protocol = (options.apiType === 'DELTA_GRPC'
      ? new DeltaProtocol(options.service)
      : new SotwProtocol(options.setNodeOnFirstMessageOnly === true, options.service)) as AdsProtocol<unknown, unknown>;
    this.#onResources = options.onResources;
    this.#backoff = new JitteredBackoff(options.backoff);
    this.#log = options.logger ?? SILENT;
    this.stats = options.stats ?? new XdsStats();
    // Envoy's gRPC client takes a response of any size; grpc-js refuses one over 4 MB by
    // default, which for a large mesh (a CDS response of thousands of clusters) would end the
    // stream, reconnect and be refused again, for ever.
    this.#channelOptions = { 'grpc.max_receive_message_length': -1, ...options.channelOptions };
    this.node = withUserAgent(options.node);
    for (const typeUrl of options.wildcard ?? [TypeUrl.Cluster, TypeUrl.Listener]) this.#sub(typeUrl).wildcard = true;
  }

  get apiType(): 'GRPC' | 'DELTA_GRPC' {
    return this.#protocol.apiType;
  }

  /** Whether the stream to the server is up. */
  get isConnected(): boolean {
    return this.stats.gauges.get('control_plane.connected_state') === 1;
  }

  /** Opens the stream; requests go out for every type wanted so far. */
  start(): void {
    if (this.#started || this.#closed) return;
    this.#started = true;
    this.#connect();
  }

  /** Ends the stream and stops reconnecting; what is held stays readable. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#dropStream();
  }

  /** Adds names to a type's subscription (RDS, EDS, SDS by name). */
  subscribe(typeUrl: string, names: Iterable<string>): void {
    const sub = this.#sub(typeUrl);
    let changed = false;
    for (const name of names) {
      if (sub.names.has(name)) continue;
      sub.names.add(name);
      if (!sub.toUnsubscribe.delete(name)) sub.toSubscribe.add(name);
      changed = true;
    }
    if (changed) this.#changed(sub);
  }

  /** Drops names from a type's subscription; what was held under them is let go. */
  unsubscribe(typeUrl: string, names: Iterable<string>): void {
    const sub = this.#subs.get(typeUrl);
    if (sub === undefined) return;
    let changed = false;
    for (const name of names) {
      if (!sub.names.delete(name)) continue;
      if (!sub.wildcard) sub.held.delete(name);
      if (!sub.toSubscribe.delete(name)) sub.toUnsubscribe.add(name);
      changed = true;
    }
    if (changed) this.#changed(sub);
  }

  /** Makes a type's named subscription exactly `names`. */
  setSubscription(typeUrl: string, names: Iterable<string>): void {
    const want = new Set(names);
    const sub = this.#sub(typeUrl);
    this.unsubscribe(typeUrl, [...sub.names].filter((n) => !want.has(n)));
    this.subscribe(typeUrl, want);
  }

  /** What is held of a type, by name. */
  resources(typeUrl: string): ReadonlyMap<string, XdsResource> {
    return this.#subs.get(typeUrl)?.held ?? new Map();
  }

  /** The last accepted version of a type (`version_info`, or delta's `system_version_info`). */
  version(typeUrl: string): string {
    return this.#subs.get(typeUrl)?.version ?? '';
  }

  /** Resolves once every queued read and send has run (tests and orderly shutdown use it). */
  async idle(): Promise<void> {
    let seen: Promise<void>;
    do {
      seen = this.#queue;
      await seen;
    } while (seen !== this.#queue);
  }

  #sub(typeUrl: string): Subscription {
    let sub = this.#subs.get(typeUrl);
    if (sub === undefined) {
      sub = new Subscription(typeUrl);
      this.#subs.set(typeUrl, sub);
    }
    return sub;
  }

  #changed(sub: Subscription): void {
    sub.dirty = true;
    // Changes made while a response is being handled (the consumer subscribing to what it
    // just learnt) go out after that response's ACK; others coalesce within the tick.
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    if (this.#processing) return;
    queueMicrotask(() => this.#enqueue(() => this.#flush()));
  }

  #enqueue(step: () => void | Promise<void>): void {
    this.#queue = this.#queue.then(step).catch((e: unknown) => this.#log.warn(`xDS: ${reasonOf(e)}`));
  }

  // ---- the stream ------------------------------------------------------------------------

  #connect(): void {
    this.#timer = null;
    if (this.#closed) return;
    const generation = ++this.#generation;
    let client: grpc.Client;
    try {
      client = makeGrpcClient(this.#target, this.#transport, this.#channelOptions);
    } catch (e) {
      this.#log.warn(`xDS: cannot connect to ${this.#target}: ${reasonOf(e)}`);
      this.#onStreamFailure();
      return;
    }
    const protocol = this.#protocol;
    const call = client.makeBidiStreamRequest(
      protocol.path,
      (m: unknown) => protocol.serialize(m),
      (b: Buffer) => protocol.deserialize(b),
      new grpc.Metadata(),
      {},
    );
    const stream: Stream = { generation, client, call, nodeSent: false, received: false };
    this.#stream = stream;
    call.on('data', (response: unknown) => {
      if (this.#stream !== stream) return;
      if (!stream.received) {
        stream.received = true;
        // A message on a fresh stream: the next outage starts from the base backoff again.
        this.#backoff.reset();
        this.stats.setConnected(true);
      }
      this.#enqueue(() => this.#onResponse(stream, response));
    });
    // grpc-js reports a failed call as 'error' and then 'status'; the status does the work.
    call.on('error', () => {});
    call.on('status', (status: grpc.StatusObject) => {
      if (this.#stream !== stream) return;
      this.#log.warn(`xDS: ${protocol.path.slice(protocol.path.lastIndexOf('/') + 1)} stream to ${this.#target} closed: ${status.code}, ${status.details}`);
      this.#dropStream();
      this.#onStreamFailure();
    });
    this.#watchChannel(stream);
    for (const sub of this.#subs.values()) sub.resetStream();
    this.#enqueue(() => this.#flush());
  }

  /** `control_plane.connected_state` follows the channel: 1 once it is READY for this stream. */
  #watchChannel(stream: Stream): void {
    const channel = stream.client.getChannel();
    const step = (): void => {
      if (this.#stream !== stream) return;
      const state = channel.getConnectivityState(true);
      if (state === grpc.connectivityState.READY) {
        this.stats.setConnected(true);
        return;
      }
      try {
        channel.watchConnectivityState(state, Infinity, (err) => {
          if (err === undefined) step();
        });
      } catch {
        // The channel was shut down with the stream.
      }
    };
    step();
  }

  #dropStream(): void {
    const stream = this.#stream;
    if (stream === null) return;
    this.#stream = null;
    this.stats.setConnected(false);
    stream.call.cancel();
    stream.client.close();
  }

  #onStreamFailure(): void {
    for (const sub of this.#subs.values()) if (sub.started && sub.isWanted) this.stats.onFailure(sub.typeUrl, sub.names);
    if (this.#closed) return;
    const wait = this.#backoff.next();
    this.#log.debug(`xDS: reconnecting to ${this.#target} in ${wait} ms`);
    this.#timer = setTimeout(() => this.#connect(), wait);
    this.#timer.unref();
  }

  /** Writes a request on `stream`, with the node on the stream's first (or, if so configured, every) request. */
  #send(stream: Stream, request: unknown): void {
    if (this.#stream !== stream) return;
    if (!stream.nodeSent || this.#protocol.nodeOnEveryRequest) {
      (request as { node?: Node }).node = this.node;
      stream.nodeSent = true;
    }
    stream.call.write(request);
  }

  /** Sends what is due, in Envoy's ADS order: first requests for new types, then subscription changes. */
  #flush(): void {
    this.#flushQueued = false;
    const stream = this.#stream;
    if (stream === null) return;
    const subs = [...this.#subs.values()].sort((a, b) => adsRank(a.typeUrl) - adsRank(b.typeUrl));
    for (const sub of subs) {
      if (!sub.sent) {
        if (!sub.isWanted) continue;
        if (!sub.started) {
          sub.started = true;
          this.stats.onStart(sub.typeUrl, sub.names);
        }
        sub.sent = true;
        this.#send(stream, this.#protocol.initial(sub));
        continue;
      }
      const request = this.#protocol.update(sub);
      if (request !== null) this.#send(stream, request);
    }
  }

  // ---- one response ----------------------------------------------------------------------

  async #onResponse(stream: Stream, response: unknown): Promise<void> {
    // A response from a stream since closed is not acted on: the next stream gets it again.
    if (this.#stream !== stream) return;
    const incoming = this.#protocol.read(response);
    const sub = this.#subs.get(incoming.typeUrl);
    if (sub === undefined || !sub.isWanted || !sub.sent) {
      this.#log.warn(`xDS: ignoring a response of type "${incoming.typeUrl}", not subscribed`);
      return;
    }
    sub.nonce = incoming.nonce;
    this.#processing = true;
    try {
      const verdict = await this.#decide(sub, incoming);
      if (verdict.ok) {
        this.#send(stream, this.#protocol.ack(sub, incoming));
      } else {
        this.#log.warn(`xDS: rejecting ${incoming.typeUrl} version ${JSON.stringify(incoming.version)}: ${verdict.message}`);
        this.#send(stream, this.#protocol.nack(sub, incoming, verdict.message));
      }
    } finally {
      this.#processing = false;
    }
    if (this.#flushQueued) this.#flush();
  }

  /** Decodes, asks the consumer, and on acceptance applies the update to what is held. */
  async #decide(sub: Subscription, incoming: Incoming): Promise<XdsVerdict> {
    const resources: XdsResource[] = [];
    const problems: string[] = [];
    const seen = new Set<string>();
    for (const [index, entry] of incoming.entries.entries()) {
      const decoded = decodeResource(sub.typeUrl, entry.any, entry.name, entry.version, index);
      if (!decoded.ok) {
        problems.push(decoded.message);
        continue;
      }
      const { resource } = decoded;
      if (seen.has(resource.name)) {
        problems.push(`${shortTypeName(sub.typeUrl)} ${resource.name}: duplicate name in one response`);
        continue;
      }
      seen.add(resource.name);
      // A named subscription takes only what it asked for, as Envoy does.
      if (!sub.wildcard && !sub.names.has(resource.name)) {
        this.#log.debug(`xDS: ignoring ${shortTypeName(sub.typeUrl)} ${resource.name}, not subscribed`);
        continue;
      }
      resources.push(resource);
    }
    const names = resources.map((r) => r.name);
    if (problems.length > 0) {
      this.stats.onRejected(sub.typeUrl, names);
      return { ok: false, message: problems.join('; ') };
    }
    const removed = this.#protocol.isFullState(sub)
      ? [...sub.held.keys()].filter((n) => !seen.has(n))
      : incoming.removed;
    let verdict: XdsVerdict;
    try {
      verdict = await this.#onResources(sub.typeUrl, resources, removed, incoming.version);
    } catch (e) {
      verdict = { ok: false, message: reasonOf(e) };
    }
    if (!verdict.ok) {
      this.stats.onRejected(sub.typeUrl, names);
      return verdict;
    }
    for (const name of removed) sub.held.delete(name);
    for (const r of resources) sub.held.set(r.name, r);
    sub.version = incoming.version;
    this.stats.onAccepted(sub.typeUrl, incoming.version, names);
    return verdict;
  }
}

function withUserAgent(node: Node | NodeJson): Node {
  const base: Node = '$typeName' in node ? clone(NodeSchema, node as Node) : fromJson(NodeSchema, node as JsonObject, { registry: envoyRegistry });
  base.userAgentName = USER_AGENT_NAME;
  base.userAgentVersionType = { case: 'userAgentVersion', value: USER_AGENT_VERSION };
  return base;
}

function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

function reasonOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
