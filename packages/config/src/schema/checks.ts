/**
 * The semantic checks of Istio's validation webhook (istio/istio `pkg/config/validation`) that
 * JSON Schema cannot express: durations, regexes, ports, weights, percentages, header names,
 * hosts, subset names, addresses. Messages follow Istio's where they are clear. Run only on a
 * resource whose schema passed, so every field has its schema type (or is null/absent).
 */
import { Report, type Path, obj, workloadSelector, type CheckFinding } from './checks-common.ts';
import { isDNS1123Label } from './names.ts';
import { checkDestinationRule } from './checks-destination-rule.ts';
import { checkGateway } from './checks-gateway.ts';
import { checkServiceEntry, checkWorkloadEntry } from './checks-service-entry.ts';
import { checkVirtualService } from './checks-virtual-service.ts';
import { checkSidecar } from './checks-sidecar.ts';
import { checkPeerAuthentication, checkRequestAuthentication, checkAuthorizationPolicy } from './checks-security.ts';
import { checkLocalRateLimit } from './checks-local-ratelimit.ts';

/** Semantic problems of one resource's `spec` (the schema has passed). */
export function checkResource(kind: string, spec: unknown, metadata: { readonly name: string }): CheckFinding[] {
  const r = new Report();
  const s = obj(spec) ?? {};
  const at: Path = ['spec'];
  switch (kind) {
    case 'VirtualService':
      checkVirtualService(r, at, s);
      break;
    case 'DestinationRule':
      checkDestinationRule(r, at, s);
      break;
    case 'Gateway':
      if (!isDNS1123Label(metadata.name)) r.error(['metadata', 'name'], `invalid gateway name: "${metadata.name}"`);
      checkGateway(r, at, s);
      break;
    case 'ServiceEntry':
      checkServiceEntry(r, at, s);
      break;
    case 'WorkloadEntry':
      checkWorkloadEntry(r, at, s, null, true);
      break;
    case 'Sidecar':
      checkSidecar(r, at, s);
      break;
    case 'ProxyConfig':
      // istiod's ValidateProxyConfig.
      workloadSelector(r, [...at, 'selector'], s.selector, 'matchLabels');
      if (typeof s.concurrency === 'number' && s.concurrency < 0) r.error([...at, 'concurrency'], 'concurrency must be greater than or equal to 0');
      break;
    case 'Telemetry':
      // istiod's ValidateTelemetry: the selector, and sampling as a percentage.
      workloadSelector(r, [...at, 'selector'], s.selector, 'matchLabels');
      if (Array.isArray(s.tracing)) {
        s.tracing.forEach((tr: unknown, i: number) => {
          const pct = (tr as { randomSamplingPercentage?: unknown } | null)?.randomSamplingPercentage;
          if (typeof pct === 'number' && !(pct >= 0 && pct <= 100)) r.error([...at, 'tracing', i, 'randomSamplingPercentage'], 'randomSamplingPercentage must be in range [0.0, 100.0]');
        });
      }
      break;
    case 'PeerAuthentication':
      checkPeerAuthentication(r, at, s);
      break;
    case 'RequestAuthentication':
      checkRequestAuthentication(r, at, s);
      break;
    case 'AuthorizationPolicy':
      checkAuthorizationPolicy(r, at, s);
      break;
    case 'LocalRateLimit':
      checkLocalRateLimit(r, at, s);
      break;
    default:
      // EnvoyFilter patches are free-form Envoy config; the schema is all Remora checks.
      break;
  }
  return r.findings;
}
