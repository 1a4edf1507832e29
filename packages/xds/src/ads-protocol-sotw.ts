/**
 * State of the world (`StreamAggregatedResources`): every request of a type names all the
 * resources wanted (none for a wildcard), carries the last accepted `version_info` and the
 * last nonce; an ACK repeats the response's version, a NACK the previous one with
 * `error_detail`. A Listener or Cluster response is the full set; others carry only what
 * changed among the names asked for.
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import {
  DiscoveryRequestSchema,
  DiscoveryResponseSchema,
  type DiscoveryRequest,
  type DiscoveryResponse,
} from '@remora/config/envoy/gen/envoy/service/discovery/v3/discovery_pb.js';
import { StatusSchema } from '@remora/config/envoy/gen/google/rpc/status_pb.js';
import { INVALID_ARGUMENT, methodPath, type DiscoveryService, type AdsProtocol, type Incoming, type Subscription } from './ads-protocol.ts';
import { isFullStateType } from './type-urls.ts';

export class SotwProtocol implements AdsProtocol<DiscoveryRequest, DiscoveryResponse> {
  readonly apiType = 'GRPC';
  readonly path: string;
  readonly nodeOnEveryRequest: boolean;

  /** `setNodeOnFirstMessageOnly`: Envoy's `ads_config.set_node_on_first_message_only` (default false). */
  constructor(setNodeOnFirstMessageOnly: boolean, service: DiscoveryService = 'aggregated') {
    this.nodeOnEveryRequest = !setNodeOnFirstMessageOnly;
    this.path = methodPath(service, 'GRPC');
  }

  serialize(request: DiscoveryRequest): Buffer {
    const bytes = toBinary(DiscoveryRequestSchema, request);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  deserialize(bytes: Buffer): DiscoveryResponse {
    return fromBinary(DiscoveryResponseSchema, bytes);
  }

  initial(sub: Subscription): DiscoveryRequest {
    return this.#request(sub, sub.version, '');
  }

  update(sub: Subscription): DiscoveryRequest | null {
    if (!sub.dirty) return null;
    return this.#request(sub, sub.version, sub.nonce);
  }

  read(response: DiscoveryResponse): Incoming {
    return {
      typeUrl: response.typeUrl,
      nonce: response.nonce,
      version: response.versionInfo,
      entries: response.resources.map((any) => ({ any, name: null, version: response.versionInfo })),
      removed: [],
    };
  }

  ack(sub: Subscription, incoming: Incoming): DiscoveryRequest {
    return this.#request(sub, incoming.version, incoming.nonce);
  }

  nack(sub: Subscription, incoming: Incoming, message: string): DiscoveryRequest {
    const request = this.#request(sub, sub.version, incoming.nonce);
    request.errorDetail = create(StatusSchema, { code: INVALID_ARGUMENT, message });
    return request;
  }

  isFullState(sub: Subscription): boolean {
    return isFullStateType(sub.typeUrl) && sub.wildcard;
  }

  #request(sub: Subscription, versionInfo: string, responseNonce: string): DiscoveryRequest {
    sub.dirty = false;
    return create(DiscoveryRequestSchema, {
      versionInfo,
      resourceNames: resourceNames(sub),
      typeUrl: sub.typeUrl,
      responseNonce,
    });
  }
}

/** A wildcard asks with no names (the legacy form servers expect), or `*` plus the names when it also names some. */
function resourceNames(sub: Subscription): string[] {
  const names = [...sub.names].sort();
  if (!sub.wildcard) return names;
  return names.length === 0 ? [] : ['*', ...names];
}
