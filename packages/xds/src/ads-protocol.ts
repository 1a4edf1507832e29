/**
 * The two ADS protocol variants behind one contract: what the client sends (first request of
 * a type on a stream, a subscription change, ACK, NACK) and how a response reads. The
 * client (`ads-client.ts`) owns the flow; a variant only shapes messages.
 */
import type { Any } from '@bufbuild/protobuf/wkt';
import type { XdsResource } from './xds-resource.ts';

/** What Remora holds and wants of one resource type. */
export class Subscription {
  readonly typeUrl: string;
  /** Asked for every resource of the type (LDS, CDS). */
  wildcard = false;
  /** Names asked for (besides the wildcard). */
  readonly names = new Set<string>();
  /** What was accepted, by name: kept through any outage. */
  readonly held = new Map<string, XdsResource>();
  /** Last accepted `version_info` (state of the world) or `system_version_info` (delta). */
  version = '';
  /** Last nonce received on the current stream. */
  nonce = '';
  /** The first request of this type went out on the current stream. */
  sent = false;
  /** State of the world: the names changed since the last request. */
  dirty = false;
  /** Delta: names to add and drop in the next request on the current stream. */
  readonly toSubscribe = new Set<string>();
  readonly toUnsubscribe = new Set<string>();
  /** Counted once, when first asked for (Envoy's `update_attempt` at subscription start). */
  started = false;

  constructor(typeUrl: string) {
    this.typeUrl = typeUrl;
  }

  /** Whether anything of this type is wanted, so that a request is due. */
  get isWanted(): boolean {
    return this.wildcard || this.names.size > 0;
  }

  /** Resets what belongs to one stream. */
  resetStream(): void {
    this.nonce = '';
    this.sent = false;
    this.dirty = false;
    this.toSubscribe.clear();
    this.toUnsubscribe.clear();
  }
}

/** A response in the variant-neutral form the client works on. */
export interface Incoming {
  readonly typeUrl: string;
  readonly nonce: string;
  readonly version: string;
  /** `name` is known for delta's `Resource` wrappers, null for a bare `Any`. */
  readonly entries: readonly { readonly any: Any; readonly name: string | null; readonly version: string }[];
  /** Delta's `removed_resources`; empty for state of the world (the client works removal out). */
  readonly removed: readonly string[];
}

export interface AdsProtocol<Req, Res> {
  readonly apiType: 'GRPC' | 'DELTA_GRPC';
  /** The gRPC method path. */
  readonly path: string;
  serialize(request: Req): Buffer;
  deserialize(bytes: Buffer): Res;
  /** The first request of a type on a stream. The client sets `node` on requests that carry it. */
  initial(sub: Subscription): Req;
  /** The request a subscription change needs, or null when nothing is due. */
  update(sub: Subscription): Req | null;
  read(response: Res): Incoming;
  ack(sub: Subscription, incoming: Incoming): Req;
  nack(sub: Subscription, incoming: Incoming, message: string): Req;
  /** Whether a response of this type is the complete set, so absent resources are removed. */
  isFullState(sub: Subscription): boolean;
  /** Whether every request carries the node, or only a stream's first. */
  readonly nodeOnEveryRequest: boolean;
}

/** google.rpc.Code INVALID_ARGUMENT, the code Envoy puts in a NACK's `error_detail`. */
export const INVALID_ARGUMENT = 3;

export const ADS_SERVICE = 'envoy.service.discovery.v3.AggregatedDiscoveryService';
export const SDS_SERVICE = 'envoy.service.secret.v3.SecretDiscoveryService';

/**
 * The gRPC service a stream is opened on. Both carry the same DiscoveryRequest and
 * DiscoveryResponse messages: `aggregated` is ADS (every type on one stream);
 * `secret` is SDS's own service (`StreamSecrets` / `DeltaSecrets`), which is what Istio's
 * agent serves on its SDS socket (it does not serve ADS there).
 */
export type DiscoveryService = 'aggregated' | 'secret';

/** The method path of a service for a protocol variant. */
export function methodPath(service: DiscoveryService, apiType: 'GRPC' | 'DELTA_GRPC'): string {
  if (service === 'secret') return `/${SDS_SERVICE}/${apiType === 'GRPC' ? 'StreamSecrets' : 'DeltaSecrets'}`;
  return `/${ADS_SERVICE}/${apiType === 'GRPC' ? 'StreamAggregatedResources' : 'DeltaAggregatedResources'}`;
}
