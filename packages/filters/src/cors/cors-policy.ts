/**
 * A route's `envoy.extensions.filters.http.cors.v3.CorsPolicy` (its typed_per_filter_config
 * under `envoy.filters.http.cors`), compiled once per snapshot: origin matchers built (RE2),
 * header values kept as Envoy sends them, the enabled fraction as a number.
 */
import { fractionalPercent } from '@remora/config';
import type { CorsPolicyJson } from '@remora/config/envoy/gen/envoy/extensions/filters/http/cors/v3/cors_pb.js';
import type { RuntimeFractionalPercentJson } from '@remora/config/envoy/gen/envoy/config/core/v3/base_pb.js';
import { StringMatch } from '../rbac/rbac-string.ts';

export const H_ALLOW_ORIGIN = 'access-control-allow-origin';
export const H_ALLOW_CREDENTIALS = 'access-control-allow-credentials';
export const H_ALLOW_METHODS = 'access-control-allow-methods';
export const H_ALLOW_HEADERS = 'access-control-allow-headers';
export const H_EXPOSE_HEADERS = 'access-control-expose-headers';
export const H_MAX_AGE = 'access-control-max-age';
export const H_ALLOW_PRIVATE_NETWORK = 'access-control-allow-private-network';

export class CorsPolicy {
  /** Some matcher accepts the literal `*`: Envoy then allows every origin. */
  readonly #allowAny: boolean;
  /** Exact (case-sensitive) origins in a set, the common case; the other matchers in order. */
  readonly #exact: ReadonlySet<string>;
  readonly #others: readonly StringMatch[];
  /** As configured; '' when unset (Envoy sends no header for an empty value). */
  readonly allowMethods: string;
  readonly allowHeaders: string;
  readonly exposeHeaders: string;
  readonly maxAge: string;
  readonly allowCredentials: boolean;
  readonly allowPrivateNetworkAccess: boolean;
  /** Envoy's default when unset: true (a preflight from another origin goes upstream). */
  readonly forwardNotMatchingPreflights: boolean;
  /** `filter_enabled` as a percentage (100 when unset, as Envoy). */
  readonly enabledPercent: number;
  /** Envoy: a configured value of exactly "*" echoes what the preflight asked for. */
  readonly echoMethod: boolean;
  readonly echoHeaders: boolean;

  /** Throws (at compile time only) naming the field: a bad matcher, an origin regex RE2 refuses. */
  constructor(json: CorsPolicyJson) {
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error('config must be a CorsPolicy object');
    const exact = new Set<string>();
    const others: StringMatch[] = [];
    let allowAny = false;
    const origins = json.allowOriginStringMatch ?? [];
    if (!Array.isArray(origins)) throw new Error('allowOriginStringMatch must be a list of string matchers');
    origins.forEach((m, i) => {
      const matcher = new StringMatch(m, `allowOriginStringMatch[${i}]`);
      // Envoy's isOriginAllowed tries every matcher against "*" before the origin itself.
      if (matcher.matches('*')) allowAny = true;
      if (typeof m.exact === 'string' && m.ignoreCase !== true) exact.add(m.exact);
      else others.push(matcher);
    });
    this.#allowAny = allowAny;
    this.#exact = exact;
    this.#others = others;
    this.allowMethods = str(json.allowMethods, 'allowMethods');
    this.allowHeaders = str(json.allowHeaders, 'allowHeaders');
    this.exposeHeaders = str(json.exposeHeaders, 'exposeHeaders');
    this.maxAge = str(json.maxAge, 'maxAge');
    this.allowCredentials = bool(json.allowCredentials, 'allowCredentials', false);
    this.allowPrivateNetworkAccess = bool(json.allowPrivateNetworkAccess, 'allowPrivateNetworkAccess', false);
    this.forwardNotMatchingPreflights = bool(json.forwardNotMatchingPreflights, 'forwardNotMatchingPreflights', true);
    this.enabledPercent = runtimePercent(json.filterEnabled, 'filterEnabled');
    if (json.shadowEnabled !== undefined) runtimePercent(json.shadowEnabled, 'shadowEnabled');
    this.echoMethod = this.allowMethods === '*';
    this.echoHeaders = this.allowHeaders === '*';
  }

  /** Whether `origin` is allowed (Envoy: any matcher matches `*` or the origin). */
  isOriginAllowed(origin: string): boolean {
    if (this.#allowAny || this.#exact.has(origin)) return true;
    const others = this.#others;
    for (let i = 0; i < others.length; i++) if (others[i]!.matches(origin)) return true;
    return false;
  }
}

function str(v: unknown, field: string): string {
  if (v === undefined || v === null) return '';
  if (typeof v !== 'string') throw new Error(`${field} must be a string, got ${JSON.stringify(v)}`);
  return v;
}

function bool(v: unknown, field: string, unset: boolean): boolean {
  if (v === undefined || v === null) return unset;
  if (typeof v !== 'boolean') throw new Error(`${field} must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

/** A RuntimeFractionalPercent's default value; Remora has no runtime, so `runtime_key` is not read. */
function runtimePercent(v: RuntimeFractionalPercentJson | undefined, field: string): number {
  if (v === undefined || v === null) return 100;
  if (typeof v !== 'object') throw new Error(`${field} must be a RuntimeFractionalPercent, got ${JSON.stringify(v)}`);
  // Envoy's validation requires default_value.
  if (v.defaultValue === undefined || v.defaultValue === null) throw new Error(`${field}.defaultValue is required`);
  return fractionalPercent(v.defaultValue, `${field}.defaultValue`);
}
