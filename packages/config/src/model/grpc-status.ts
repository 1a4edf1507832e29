/**
 * gRPC status codes (`grpc/status.h`, `doc/statuscodes.md`): the one table every part of
 * Remora reads — Istio's `abort.grpcStatus` names, the fault filter, retry-on conditions and
 * the proxy's gRPC local replies.
 */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

export type GrpcStatusName = keyof typeof GrpcStatus;

/** The code of a status name (`UNAVAILABLE`, any case); undefined when it names none. */
export function grpcStatusCode(name: string): number | undefined {
  const upper = name.toUpperCase();
  return Object.hasOwn(GrpcStatus, upper) ? GrpcStatus[upper as GrpcStatusName] : undefined;
}
