/**
 * The route's header mutations: Envoy's `request_headers_to_add` / `request_headers_to_remove`
 * and `response_headers_to_add` / `response_headers_to_remove` of a route, its virtual host,
 * its route configuration and a weighted cluster (Istio's VirtualService `headers`, of the
 * route and of each destination).
 *
 * In Envoy these are not an HTTP filter of the chain: the router applies them
 * (`finalizeRequestHeaders` once it has picked the weighted cluster, after every filter before
 * it ran; `finalizeResponseHeaders` on the response head before the filters' encode phase
 * sees it). istiod's listeners therefore carry no filter for them, and neither does Remora's
 * config dump: this is a stage the router runs, compiled once per route and per weighted
 * cluster, with no per-request allocation (edits go into the flat header list in place).
 *
 * The levels of one route (route, virtual host, route configuration) are folded into one
 * mutation when the config is read, in Envoy's order: the route's edits first, then the
 * host's, then the table's, so the outer level wins, or the other way round with
 * `most_specific_header_mutations_wins`. What is left for the request path is the order
 * between the route and its weighted cluster, which the two functions below fix.
 */
import type { HeaderMutation } from '@remora/config';

/** One level's edits compiled for a flat `[name, value, …]` header list: remove, then set, then add. */
export class HeaderMutationEdits {
  readonly set: readonly (readonly [string, string])[];
  readonly add: readonly (readonly [string, string])[];
  /** Names removed (lower-case): the `remove` list plus every `set` name (a set replaces). */
  readonly #drop: ReadonlySet<string>;

  constructor(m: HeaderMutation) {
    this.set = m.set;
    this.add = m.add;
    this.#drop = new Set([...m.remove, ...m.set.map(([k]) => k)]);
  }

  /** Applies the edits to a flat header list in place. */
  apply(headers: string[]): void {
    if (this.#drop.size > 0) {
      let w = 0;
      for (let r = 0; r < headers.length; r += 2) {
        const name = headers[r]!;
        if (this.#drop.has(name.toLowerCase())) continue;
        headers[w++] = name;
        headers[w++] = headers[r + 1]!;
      }
      headers.length = w;
    }
    const set = this.set;
    for (let i = 0; i < set.length; i++) headers.push(set[i]![0], set[i]![1]);
    const add = this.add;
    for (let i = 0; i < add.length; i++) headers.push(add[i]![0], add[i]![1]);
  }
}

/** The header mutations of one route (its levels folded) or of one weighted cluster, compiled. */
export class RouteHeaderMutation {
  /** Edits of the request upstream gets; null when none. */
  readonly request: HeaderMutationEdits | null;
  /** Edits of the response the client gets; null when none. */
  readonly response: HeaderMutationEdits | null;

  constructor(request: HeaderMutation | null, response: HeaderMutation | null) {
    this.request = request === null ? null : new HeaderMutationEdits(request);
    this.response = response === null ? null : new HeaderMutationEdits(response);
  }

  /** The stage of a route or cluster without edits: shared, does nothing. */
  static readonly NONE = new RouteHeaderMutation(null, null);

  /** The compiled stage, or NONE when both are null. */
  static of(request: HeaderMutation | null, response: HeaderMutation | null): RouteHeaderMutation {
    return request === null && response === null ? RouteHeaderMutation.NONE : new RouteHeaderMutation(request, response);
  }
}

/**
 * The request's edits, on the headers upstream gets, once the router picked the weighted
 * cluster (after the path and authority rewrites): the weighted cluster's first, then the
 * route's, so the route's `set` wins (Envoy's `WeightedClusterEntry::finalizeRequestHeaders`;
 * its docs: a weighted cluster's headers "are applied before headers from the enclosing
 * Route"). A single destination's edits are not a cluster's: istiod appends them to the
 * route's own, where they come after (and win), and the translator does the same.
 */
export function finalizeRequestHeaders(headers: string[], route: RouteHeaderMutation, cluster: RouteHeaderMutation): void {
  if (cluster.request !== null) cluster.request.apply(headers);
  if (route.request !== null) route.request.apply(headers);
}

/**
 * The response's edits, on the head the client gets from upstream or from the router's direct
 * response or redirect (not on other local replies): the weighted cluster's first, then the
 * route's, as Envoy's `WeightedClusterEntry::finalizeResponseHeaders`. `cluster` is NONE when no
 * cluster was picked.
 */
export function finalizeResponseHeaders(headers: string[], cluster: RouteHeaderMutation, route: RouteHeaderMutation): void {
  if (cluster.response !== null) cluster.response.apply(headers);
  if (route.response !== null) route.response.apply(headers);
}
