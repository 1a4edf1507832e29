// A bidirectional-streaming gRPC method of an Envoy discovery service, with protobuf-es
// messages (de)serialised: what the tests' control plane and SDS agent serve.
import * as grpc from '@grpc/grpc-js';
import { fromBinary, toBinary, type DescMessage } from '@bufbuild/protobuf';

/** `service`: the full service name (`envoy.service.discovery.v3.AggregatedDiscoveryService`). */
export function streamingMethod<I extends DescMessage, O extends DescMessage>(service: string, name: string, input: I, output: O): grpc.MethodDefinition<unknown, unknown> {
  return {
    path: `/${service}/${name}`,
    requestStream: true,
    responseStream: true,
    requestSerialize: (m: unknown) => Buffer.from(toBinary(input, m as never)),
    requestDeserialize: (b: Buffer) => fromBinary(input, b),
    responseSerialize: (m: unknown) => Buffer.from(toBinary(output, m as never)),
    responseDeserialize: (b: Buffer) => fromBinary(output, b),
  };
}
