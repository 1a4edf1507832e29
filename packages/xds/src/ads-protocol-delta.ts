/**
 * Incremental xDS (`DeltaAggregatedResources`): a type's first request on a stream lists
 * the names wanted (none for a wildcard) and `initial_resource_versions` of what is held, so
 * the server sends only what changed while the stream was down; later requests carry
 * `resource_names_subscribe`/`_unsubscribe` differences. Responses carry per-resource
 * versions and `removed_resources`; an ACK is the nonce alone, a NACK adds `error_detail`.
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import {
  DeltaDiscoveryRequestSchema,
  DeltaDiscoveryResponseSchema,
  type DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
} from '@remora/config/envoy/gen/envoy/service/discovery/v3/discovery_pb.js';
import { StatusSchema } from '@remora/config/envoy/gen/google/rpc/status_pb.js';
import { INVALID_ARGUMENT, methodPath, type DiscoveryService, type AdsProtocol, type Incoming, type Subscription } from './ads-protocol.ts';

export class DeltaProtocol implements AdsProtocol<DeltaDiscoveryRequest, DeltaDiscoveryResponse> {
  readonly apiType = 'DELTA_GRPC';
  readonly path: string;
  /** The node goes on a stream's first request only, as the incremental protocol says. */
  readonly nodeOnEveryRequest = false;

  constructor(service: DiscoveryService = 'aggregated') {
    this.path = methodPath(service, 'DELTA_GRPC');
  }

  serialize(request: DeltaDiscoveryRequest): Buffer {
    const bytes = toBinary(DeltaDiscoveryRequestSchema, request);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  deserialize(bytes: Buffer): DeltaDiscoveryResponse {
    return fromBinary(DeltaDiscoveryResponseSchema, bytes);
  }

  initial(sub: Subscription): DeltaDiscoveryRequest {
    const names = [...sub.names].sort();
    const initialResourceVersions: Record<string, string> = {};
    for (const [name, resource] of sub.held) initialResourceVersions[name] = resource.version;
    sub.toSubscribe.clear();
    sub.toUnsubscribe.clear();
    return create(DeltaDiscoveryRequestSchema, {
      typeUrl: sub.typeUrl,
      resourceNamesSubscribe: sub.wildcard && names.length > 0 ? ['*', ...names] : names,
      initialResourceVersions,
    });
  }

  update(sub: Subscription): DeltaDiscoveryRequest | null {
    if (sub.toSubscribe.size === 0 && sub.toUnsubscribe.size === 0) return null;
    const request = create(DeltaDiscoveryRequestSchema, {
      typeUrl: sub.typeUrl,
      resourceNamesSubscribe: [...sub.toSubscribe].sort(),
      resourceNamesUnsubscribe: [...sub.toUnsubscribe].sort(),
    });
    sub.toSubscribe.clear();
    sub.toUnsubscribe.clear();
    return request;
  }

  read(response: DeltaDiscoveryResponse): Incoming {
    const entries = [];
    for (const r of response.resources) {
      // A Resource without a body only refreshes a TTL: nothing to apply.
      if (r.resource !== undefined) entries.push({ any: r.resource, name: r.name, version: r.version });
    }
    const removed = new Set(response.removedResources);
    for (const r of response.removedResourceNames) removed.add(r.name);
    return { typeUrl: response.typeUrl, nonce: response.nonce, version: response.systemVersionInfo, entries, removed: [...removed] };
  }

  ack(sub: Subscription, incoming: Incoming): DeltaDiscoveryRequest {
    return create(DeltaDiscoveryRequestSchema, {
      typeUrl: sub.typeUrl,
      responseNonce: incoming.nonce,
    });
  }

  nack(sub: Subscription, incoming: Incoming, message: string): DeltaDiscoveryRequest {
    const request = this.ack(sub, incoming);
    request.errorDetail = create(StatusSchema, { code: INVALID_ARGUMENT, message });
    return request;
  }

  isFullState(): boolean {
    return false;
  }
}
