/**
 * EnvoyFilter CLUSTER patches, by istiod's cluster_patch.go: REMOVE and MERGE on the clusters
 * a patch's `match.cluster` selects (by name, or by the `<direction>|<port>|<subset>|<host>`
 * the name carries; an inbound cluster's service is the one its metadata names), a transport
 * socket merged into the one of the same name, and ADD in each context the proxy builds
 * clusters in.
 */
import type { TranslateContext } from './context.ts';
import { contextMatches, obj, type Obj, type PatchContext } from './envoyfilter.ts';
import type { Patch } from './envoyfilter.ts';
import { assignFrom, mergeMessages, mergeTypedConfig, schemaOf, VALUE_TYPES } from './envoyfilter-patch-value.ts';

interface ClusterMatch {
  portNumber?: number;
  service?: string;
  subset?: string;
  name?: string;
}


function clusterContext(ctx: TranslateContext, c: Obj): PatchContext {
  if (ctx.node.kind === 'gateway') return 'GATEWAY';
  return String(c.name ?? '').startsWith('inbound') ? 'SIDECAR_INBOUND' : 'SIDECAR_OUTBOUND';
}

export function patchClusters(ctx: TranslateContext, patches: readonly Patch[], clusters: Obj[], contexts: readonly PatchContext[]): Obj[] {
  const mine = patches.filter((cp) => cp.applyTo === 'CLUSTER');
  if (mine.length === 0) return clusters;
  const out: Obj[] = [];
  for (const c of clusters) {
    const context = clusterContext(ctx, c);
    let removed = false;
    for (const cp of mine) {
      if (!contextMatches(cp.p.match.context, context) || !clusterMatch(c, cp)) continue;
      if (cp.operation === 'REMOVE') {
        removed = true;
        break;
      }
      if (cp.operation === 'MERGE' && !mergeTransportSocket(c, cp.value!)) assignFrom(c, mergeMessages(schemaOf(VALUE_TYPES.CLUSTER!), c, cp.value!));
    }
    if (!removed) out.push(c);
  }
  for (const context of contexts) {
    for (const cp of mine) {
      if (cp.operation !== 'ADD') continue;
      // istiod: an ADD for ANY adds on a sidecar's outbound side and at gateways only.
      if ((cp.p.match.context ?? 'ANY') === 'ANY' && context === 'SIDECAR_INBOUND') continue;
      if (contextMatches(cp.p.match.context, context)) out.push(structuredClone(cp.value!));
    }
  }
  return out;
}

function clusterMatch(c: Obj, cp: Patch): boolean {
  const m = cp.p.match.cluster as ClusterMatch | undefined;
  if (m === undefined) return true;
  const name = String(c.name ?? '');
  if (m.name !== undefined && m.name !== '') return m.name === name;
  const [direction = '', port = '', subset = '', host = ''] = name.split('|');
  let hosts = [host];
  if (direction === 'inbound') {
    const services = obj(obj(obj(c.metadata)?.filterMetadata)?.istio)?.services;
    const named = Array.isArray(services) ? services.map((s) => String(obj(s)?.host ?? '')) : [];
    if (named.length > 0) hosts = named;
  }
  if (m.subset !== undefined && m.subset !== '' && m.subset !== subset) return false;
  if (m.service !== undefined && m.service !== '' && !hosts.includes(m.service)) return false;
  return m.portNumber === undefined || m.portNumber === 0 || m.portNumber === (Number(port) || 0);
}

/**
 * istiod's mergeTransportSocketCluster: a patch with a transport socket merges it into the
 * cluster's socket of the same name (one of its transport_socket_matches, or its own), and
 * nothing else of the patch applies; no socket of that name in the matches: nothing at all;
 * none of that name otherwise: the patch's replaces the cluster's.
 */
function mergeTransportSocket(c: Obj, value: Obj): boolean {
  const patchTs = obj(value.transportSocket);
  if (patchTs === null) return false;
  let ts: Obj | null = null;
  const matches = (c.transportSocketMatches as Obj[] | undefined) ?? [];
  if (matches.length > 0) {
    ts = matches.map((m) => obj(m.transportSocket)).find((t) => t !== null && t !== undefined && t.name === patchTs.name) ?? null;
    if (ts === null) return true;
  } else {
    const own = obj(c.transportSocket);
    if (own !== null && own.name === patchTs.name) ts = own;
  }
  if (ts === null) {
    c.transportSocket = structuredClone(patchTs);
    return true;
  }
  const base = obj(ts.typedConfig);
  const patch = obj(patchTs.typedConfig);
  if (base !== null && patch !== null) {
    const merged = mergeTypedConfig(base, patch);
    if (merged !== null) ts.typedConfig = merged;
  }
  return true;
}
