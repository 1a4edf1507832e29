import type { Route } from '@remora/config';
import type { CompiledRoute, RouteRequest } from './compiled-route.ts';

/**
 * Below this many routes a virtual host is matched by a plain scan: the index's bookkeeping
 * costs more than trying a handful of routes.
 */
export const ROUTE_INDEX_MIN_ROUTES = 16;

/** A node of a radix tree of path prefixes; `routes` holds the indexes of routes whose prefix ends here, ascending. */
class PrefixNode {
  /** The text of the edge into this node (empty for the root). */
  label: string;
  children: Map<number, PrefixNode> | null = null;
  building: number[] | null = null;
  routes: Int32Array | null = null;
  constructor(label: string) {
    this.label = label;
  }
}

class PrefixTree {
  readonly root = new PrefixNode('');
  size = 0;

  insert(key: string, route: number): void {
    this.size++;
    let node = this.root;
    let pos = 0;
    for (;;) {
      if (pos === key.length) {
        (node.building ??= []).push(route);
        return;
      }
      const c = key.charCodeAt(pos);
      const children = (node.children ??= new Map());
      const child = children.get(c);
      if (child === undefined) {
        const leaf = new PrefixNode(key.slice(pos));
        leaf.building = [route];
        children.set(c, leaf);
        return;
      }
      const label = child.label;
      let l = 1;
      while (l < label.length && pos + l < key.length && label.charCodeAt(l) === key.charCodeAt(pos + l)) l++;
      if (l < label.length) {
        // Split the edge where the key leaves it.
        const mid = new PrefixNode(label.slice(0, l));
        child.label = label.slice(l);
        mid.children = new Map([[child.label.charCodeAt(0), child]]);
        children.set(c, mid);
        node = mid;
      } else node = child;
      pos += l;
    }
  }

  /** Freezes the route lists; returns the most nodes with routes on one root-to-leaf path. */
  finish(node: PrefixNode = this.root): number {
    if (node.building !== null) {
      node.routes = Int32Array.from(node.building);
      node.building = null;
    }
    let deepest = 0;
    if (node.children !== null) for (const child of node.children.values()) deepest = Math.max(deepest, this.finish(child));
    return deepest + (node.routes !== null ? 1 : 0);
  }
}

/**
 * The routes of one virtual host indexed by their path matcher, so that finding the first
 * matching route costs the routes that could match the path rather than every route before
 * it. Exact paths are looked up in a map, prefixes walked in a radix tree (both once as
 * written and once lower-cased for `ignoreCase`); suffix, contains, regex and match-anything
 * paths are candidates for every request. The candidate lists are merged by route position
 * and each candidate gets the route's full match (headers, query, claims), so the route
 * chosen is the one the linear scan chooses: Envoy's first match.
 */
export class RouteIndex {
  readonly #routes: readonly CompiledRoute[];
  readonly #exact = new Map<string, Int32Array>();
  readonly #exactFolded = new Map<string, Int32Array>();
  readonly #prefix = new PrefixTree();
  readonly #prefixFolded = new PrefixTree();
  /** Routes whose path condition the index cannot decide; they get the full match. */
  readonly #always: Int32Array;
  /** Scratch for the merge, sized for the most lists one request can gather; matching is synchronous. */
  readonly #lists: (Int32Array | null)[];
  readonly #cursors: Int32Array;

  constructor(models: readonly Route[], routes: readonly CompiledRoute[]) {
    this.#routes = routes;
    const exact = new Map<string, number[]>();
    const exactFolded = new Map<string, number[]>();
    const always: number[] = [];
    for (let i = 0; i < models.length; i++) {
      const p = models[i]!.match.path;
      const m = p.match;
      if (m.kind === 'exact') {
        const key = p.ignoreCase ? m.value.toLowerCase() : m.value;
        const into = p.ignoreCase ? exactFolded : exact;
        let list = into.get(key);
        if (list === undefined) into.set(key, (list = []));
        list.push(i);
      } else if (m.kind === 'prefix') {
        if (p.ignoreCase) this.#prefixFolded.insert(m.value.toLowerCase(), i);
        else this.#prefix.insert(m.value, i);
      } else always.push(i);
    }
    for (const [k, v] of exact) this.#exact.set(k, Int32Array.from(v));
    for (const [k, v] of exactFolded) this.#exactFolded.set(k, Int32Array.from(v));
    this.#always = Int32Array.from(always);
    const most = 3 + this.#prefix.finish() + this.#prefixFolded.finish();
    this.#lists = new Array<Int32Array | null>(most).fill(null);
    this.#cursors = new Int32Array(most);
  }

  /** The first route, in configuration order, that matches the request; null when none does. */
  match(r: RouteRequest): CompiledRoute | null {
    const lists = this.#lists;
    let n = 0;
    if (this.#always.length > 0) lists[n++] = this.#always;
    if (this.#exact.size > 0) {
      const l = this.#exact.get(r.pathOnly);
      if (l !== undefined) lists[n++] = l;
    }
    if (this.#exactFolded.size > 0) {
      const l = this.#exactFolded.get(r.pathOnly.toLowerCase());
      if (l !== undefined) lists[n++] = l;
    }
    // Envoy's prefix matches the whole :path, query included; exact matches it without.
    if (this.#prefix.size > 0) n = gather(this.#prefix.root, r.path, lists, n);
    if (this.#prefixFolded.size > 0) n = gather(this.#prefixFolded.root, r.path.toLowerCase(), lists, n);
    if (n === 0) return null;
    const routes = this.#routes;
    if (n === 1) {
      const l = lists[0]!;
      lists[0] = null;
      for (let i = 0; i < l.length; i++) if (routes[l[i]!]!.matcher.matches(r)) return routes[l[i]!]!;
      return null;
    }
    const cursors = this.#cursors;
    for (let j = 0; j < n; j++) cursors[j] = 0;
    let found: CompiledRoute | null = null;
    for (;;) {
      let pick = -1;
      let next = 0x7fffffff;
      for (let j = 0; j < n; j++) {
        const l = lists[j]!;
        const c = cursors[j]!;
        if (c < l.length && l[c]! < next) {
          next = l[c]!;
          pick = j;
        }
      }
      if (pick < 0) break;
      cursors[pick]!++;
      if (routes[next]!.matcher.matches(r)) {
        found = routes[next]!;
        break;
      }
    }
    for (let j = 0; j < n; j++) lists[j] = null;
    return found;
  }
}

/** Appends the route lists of every prefix of `path` held in the tree, shortest first. */
function gather(root: PrefixNode, path: string, lists: (Int32Array | null)[], n: number): number {
  let node = root;
  let pos = 0;
  for (;;) {
    if (node.routes !== null) lists[n++] = node.routes;
    if (pos >= path.length || node.children === null) return n;
    const child = node.children.get(path.charCodeAt(pos));
    if (child === undefined || !path.startsWith(child.label, pos)) return n;
    pos += child.label.length;
    node = child;
  }
}
