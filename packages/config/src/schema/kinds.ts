/**
 * The Istio kinds Remora reads, with the API versions it accepts for each. One schema per kind
 * (`schema/<group>/<Kind>.json`) serves every version: Istio's versions of a kind share one proto.
 */
export interface SupportedKind {
  readonly group: string;
  /** Newest first; messages list them in this order. */
  readonly versions: readonly string[];
}

const NETWORKING = 'networking.istio.io';
const SECURITY = 'security.istio.io';
const NETWORKING_VERSIONS = ['v1', 'v1beta1', 'v1alpha3'] as const;
const SECURITY_VERSIONS = ['v1', 'v1beta1'] as const;

export const SUPPORTED_KINDS: Readonly<Record<string, SupportedKind>> = Object.freeze({
  VirtualService: { group: NETWORKING, versions: NETWORKING_VERSIONS },
  DestinationRule: { group: NETWORKING, versions: NETWORKING_VERSIONS },
  Gateway: { group: NETWORKING, versions: NETWORKING_VERSIONS },
  ServiceEntry: { group: NETWORKING, versions: NETWORKING_VERSIONS },
  WorkloadEntry: { group: NETWORKING, versions: NETWORKING_VERSIONS },
  Sidecar: { group: NETWORKING, versions: NETWORKING_VERSIONS },
  // Istio's ProxyConfig exists only as v1beta1.
  ProxyConfig: { group: NETWORKING, versions: ['v1beta1'] },
  // Istio never promoted EnvoyFilter past v1alpha3.
  EnvoyFilter: { group: NETWORKING, versions: ['v1alpha3'] },
  PeerAuthentication: { group: SECURITY, versions: SECURITY_VERSIONS },
  RequestAuthentication: { group: SECURITY, versions: SECURITY_VERSIONS },
  AuthorizationPolicy: { group: SECURITY, versions: SECURITY_VERSIONS },
  Telemetry: { group: 'telemetry.istio.io', versions: ['v1', 'v1alpha1'] },
});

/**
 * Remora's own kinds. Their schemas (`schema/<group>/<Kind>.json`) are written by hand, not
 * generated from Istio's CRDs, so they live apart from {@link SUPPORTED_KINDS}.
 */
export const REMORA_KINDS: Readonly<Record<string, SupportedKind>> = Object.freeze({
  LocalRateLimit: { group: 'ratelimit.remora.dev', versions: ['v1alpha1'] },
});

/** The supported kind `resource` is (Istio's or Remora's own), by group and kind; undefined when neither. */
export function supportedKindOf(resource: { readonly group: string; readonly kind: string }): SupportedKind | undefined {
  const k = Object.hasOwn(SUPPORTED_KINDS, resource.kind)
    ? SUPPORTED_KINDS[resource.kind]
    : Object.hasOwn(REMORA_KINDS, resource.kind)
      ? REMORA_KINDS[resource.kind]
      : undefined;
  return k !== undefined && k.group === resource.group ? k : undefined;
}

/** True when `resource` is one of {@link SUPPORTED_KINDS} or {@link REMORA_KINDS} by group and kind (whatever its version). */
export function isSupportedKind(resource: { readonly group: string; readonly kind: string }): boolean {
  return supportedKindOf(resource) !== undefined;
}
