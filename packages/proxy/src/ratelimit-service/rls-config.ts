/**
 * The rate limit service's configuration in the `envoyproxy/ratelimit` YAML format: one file
 * per domain, each a tree of descriptors (`key`, optional `value`, a `rate_limit` of `unit`
 * and `requests_per_unit` or `unlimited`, an optional `name`, `shadow_mode`, nested
 * `descriptors`). Looked up as that service does: each entry of a request's descriptor goes
 * one level down, by `key_value` first, then a `value*` prefix, then `key` alone (any value,
 * each counted apart); the limit is the one of the node the last entry reaches.
 */
import { parse } from 'yaml';

/** Seconds in a window, by the unit's name (envoyproxy/ratelimit's UnitToDivider). */
export const UNIT_SECONDS: Readonly<Record<string, number>> = {
  second: 1,
  minute: 60,
  hour: 3600,
  day: 86_400,
  month: 2_592_000,
  year: 31_536_000,
};

/** The RLS proto's Unit numbers, by name. */
export const UNIT_NUMBER: Readonly<Record<string, number>> = { second: 1, minute: 2, hour: 3, day: 4, month: 5, year: 6 };

/** A limit of one descriptor node. */
export interface RateLimitRule {
  readonly unit: string;
  readonly requestsPerUnit: number;
  readonly unlimited: boolean;
  readonly name: string;
  readonly shadowMode: boolean;
  /** The configured path, `key_value.key…`, for messages. */
  readonly path: string;
}

class DescriptorNode {
  readonly byKeyValue = new Map<string, DescriptorNode>();
  readonly byKey = new Map<string, DescriptorNode>();
  /** `key` → [value prefix, node] for values written `prefix*`. */
  readonly wildcards = new Map<string, [string, DescriptorNode][]>();
  limit: RateLimitRule | null = null;
}

/** One domain's descriptors. */
export class DomainConfig {
  readonly domain: string;
  readonly #root: DescriptorNode;

  constructor(domain: string, root: DescriptorNode) {
    this.domain = domain;
    this.#root = root;
  }

  /** The limit for a descriptor (key, value pairs); null when none applies. */
  limitFor(entries: readonly { readonly key: string; readonly value: string }[]): RateLimitRule | null {
    let level: DescriptorNode | null = this.#root;
    let limit: RateLimitRule | null = null;
    for (let i = 0; i < entries.length && level !== null; i++) {
      const { key, value } = entries[i]!;
      let next: DescriptorNode | undefined = level.byKeyValue.get(`${key}_${value}`);
      if (next === undefined) next = level.wildcards.get(key)?.find(([prefix]) => value.startsWith(prefix))?.[1];
      if (next === undefined) next = level.byKey.get(key);
      if (next === undefined) return null;
      limit = i === entries.length - 1 ? next.limit : null;
      level = next;
    }
    return limit;
  }
}

type Obj = Record<string, unknown>;

/** Reads one config file's text; throws naming the file and the field. */
export function parseDomainConfig(text: string, file: string): DomainConfig {
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (err) {
    throw new Error(`${file}: not YAML: ${(err as Error).message}`);
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new Error(`${file}: must be a mapping with domain and descriptors`);
  const d = doc as Obj;
  if (typeof d.domain !== 'string' || d.domain === '') throw new Error(`${file}: domain: required`);
  const root = new DescriptorNode();
  readLevel(root, d.descriptors ?? [], `${file}: descriptors`, '');
  return new DomainConfig(d.domain, root);
}

function readLevel(parent: DescriptorNode, list: unknown, at: string, path: string): void {
  if (!Array.isArray(list)) throw new Error(`${at}: must be a list`);
  list.forEach((item, i) => {
    const here = `${at}[${i}]`;
    if (item === null || typeof item !== 'object' || Array.isArray(item)) throw new Error(`${here}: must be a mapping`);
    const o = item as Obj;
    for (const k of Object.keys(o)) {
      if (!['key', 'value', 'rate_limit', 'descriptors', 'shadow_mode', 'detailed_metric'].includes(k)) throw new Error(`${here}.${k}: not supported`);
    }
    if (typeof o.key !== 'string' || o.key === '') throw new Error(`${here}.key: required`);
    const value = o.value === undefined || o.value === null ? '' : String(o.value);
    const node = new DescriptorNode();
    const name = value === '' ? o.key : `${o.key}_${value}`;
    const nodePath = path === '' ? name : `${path}.${name}`;
    let target: Map<string, DescriptorNode>;
    let id: string;
    if (value === '') [target, id] = [parent.byKey, o.key];
    else if (value.endsWith('*')) {
      const ws = parent.wildcards.get(o.key) ?? [];
      if (ws.some(([p]) => p === value.slice(0, -1))) throw new Error(`${here}: duplicate descriptor ${nodePath}`);
      ws.push([value.slice(0, -1), node]);
      parent.wildcards.set(o.key, ws);
      [target, id] = [new Map(), name];
    } else [target, id] = [parent.byKeyValue, name];
    if (target.has(id)) throw new Error(`${here}: duplicate descriptor ${nodePath}`);
    target.set(id, node);
    const shadow = o.shadow_mode === true;
    if (o.shadow_mode !== undefined && typeof o.shadow_mode !== 'boolean') throw new Error(`${here}.shadow_mode: must be true or false`);
    if (o.rate_limit !== undefined && o.rate_limit !== null) node.limit = readLimit(o.rate_limit, `${here}.rate_limit`, nodePath, shadow);
    if (o.descriptors !== undefined && o.descriptors !== null) readLevel(node, o.descriptors, `${here}.descriptors`, nodePath);
  });
}

function readLimit(v: unknown, at: string, path: string, shadowMode: boolean): RateLimitRule {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${at}: must be a mapping`);
  const o = v as Obj;
  for (const k of Object.keys(o)) if (!['unit', 'requests_per_unit', 'unlimited', 'name'].includes(k)) throw new Error(`${at}.${k}: not supported`);
  const name = o.name === undefined ? '' : String(o.name);
  if (o.unlimited === true) return { unit: 'second', requestsPerUnit: 0, unlimited: true, name, shadowMode, path };
  const unit = typeof o.unit === 'string' ? o.unit.toLowerCase() : '';
  if (UNIT_SECONDS[unit] === undefined) throw new Error(`${at}.unit: must be one of ${Object.keys(UNIT_SECONDS).join(', ')}, got ${JSON.stringify(o.unit)}`);
  const n = o.requests_per_unit;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) throw new Error(`${at}.requests_per_unit: must be a non-negative integer, got ${JSON.stringify(n)}`);
  return { unit, requestsPerUnit: n, unlimited: false, name, shadowMode, path };
}
