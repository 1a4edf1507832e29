import type { ProxyNode } from '@remora/config';

/**
 * Istio's peer metadata exchange (istio/proxy's `io.istio.http.peer_metadata` filter with
 * `istio_headers`, and the TCP `istio.metadata_exchange` filter). A proxy sends who it is in
 * `x-envoy-peer-metadata` (base64 of a `google.protobuf.Struct` in protobuf binary: `NAME`,
 * `NAMESPACE`, `WORKLOAD_NAME`, `CLUSTER_ID`, `OWNER`, `LABELS` with the canonical service
 * and revision, `app` and `version`) and its node id in `x-envoy-peer-metadata-id`:
 *
 * - outbound (sidecar outbound and gateways): both headers on every request upstream,
 *   replacing any the client sent; the response's are read and removed before the client;
 * - inbound: the request's are read and removed before the app; the response gets this
 *   proxy's own, each only when the request carried it.
 *
 * What a peer says of itself labels metrics and nothing else: identities used for policy
 * come from certificates only, and a principal in metrics is always the certificate's.
 *
 * TCP over mesh mTLS exchanges the same Struct in a preamble under ALPN `istio-peer-exchange`
 * (listener/metadata-exchange.ts); principals still come from the certificates.
 */

export const PEER_METADATA = 'x-envoy-peer-metadata';
export const PEER_METADATA_ID = 'x-envoy-peer-metadata-id';
/** ALPN of Istio's TCP metadata exchange over mesh mTLS. */
export const PEER_EXCHANGE_ALPN = 'istio-peer-exchange';

/** Istio's default cluster id when none is configured. */
export const DEFAULT_CLUSTER_ID = 'Kubernetes';

/** What a peer says of itself (istio/proxy's WorkloadMetadataObject); '' where it said nothing. */
export interface PeerWorkload {
  readonly name: string;
  readonly namespace: string;
  readonly workloadName: string;
  readonly cluster: string;
  readonly canonicalService: string;
  readonly canonicalRevision: string;
  readonly app: string;
  readonly version: string;
}

// ---- google.protobuf.Struct, protobuf binary -------------------------------------------------

/** A Struct value as far as peer metadata uses it: strings and nested structs (other kinds read as null). */
export type StructValue = string | number | boolean | null | StructFields | StructValue[];
export interface StructFields {
  [key: string]: StructValue;
}

function varint(out: number[], v: number): void {
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v >>>= 7;
  }
  out.push(v);
}

function lengthDelimited(out: number[], field: number, bytes: ArrayLike<number>): void {
  out.push((field << 3) | 2);
  varint(out, bytes.length);
  for (let i = 0; i < bytes.length; i++) out.push(bytes[i]!);
}

function encodeValue(v: StructValue): number[] {
  const out: number[] = [];
  if (v === null) out.push(1 << 3, 0);
  else if (typeof v === 'number') {
    out.push((2 << 3) | 1);
    const b = Buffer.alloc(8);
    b.writeDoubleLE(v);
    out.push(...b);
  } else if (typeof v === 'string') lengthDelimited(out, 3, Buffer.from(v, 'utf8'));
  else if (typeof v === 'boolean') out.push(4 << 3, v ? 1 : 0);
  else if (Array.isArray(v)) {
    const list: number[] = [];
    for (const item of v) lengthDelimited(list, 1, encodeValue(item));
    lengthDelimited(out, 6, list);
  } else lengthDelimited(out, 5, encodeStruct(v));
  return out;
}

/** A Struct in protobuf binary, map entries sorted by key (protobuf's deterministic serialization, as Istio writes it). */
export function encodeStruct(fields: StructFields): Buffer {
  const out: number[] = [];
  for (const key of Object.keys(fields).sort()) {
    const entry: number[] = [];
    lengthDelimited(entry, 1, Buffer.from(key, 'utf8'));
    lengthDelimited(entry, 2, encodeValue(fields[key]!));
    lengthDelimited(out, 1, entry);
  }
  return Buffer.from(out);
}

class Reader {
  pos: number;
  readonly end: number;
  readonly buf: Buffer;
  constructor(buf: Buffer, start: number, end: number) {
    this.buf = buf;
    this.pos = start;
    this.end = end;
  }
  varint(): number {
    let v = 0;
    let shift = 0;
    for (;;) {
      if (this.pos >= this.end) throw new Error('truncated varint');
      const b = this.buf[this.pos++]!;
      if (shift < 28) v |= (b & 0x7f) << shift;
      else v += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return v;
      shift += 7;
      if (shift > 63) throw new Error('varint too long');
    }
  }
  /** The bounds of a length-delimited field's bytes. */
  bytes(): [number, number] {
    const len = this.varint();
    const start = this.pos;
    if (start + len > this.end) throw new Error('truncated field');
    this.pos += len;
    return [start, start + len];
  }
  skip(wireType: number): void {
    switch (wireType) {
      case 0:
        this.varint();
        return;
      case 1:
        this.pos += 8;
        break;
      case 2:
        this.bytes();
        return;
      case 5:
        this.pos += 4;
        break;
      default:
        throw new Error(`unsupported wire type ${wireType}`);
    }
    if (this.pos > this.end) throw new Error('truncated field');
  }
}

function decodeValue(buf: Buffer, start: number, end: number): StructValue {
  const r = new Reader(buf, start, end);
  let v: StructValue = null;
  while (r.pos < r.end) {
    const tag = r.varint();
    const field = tag >>> 3;
    const wt = tag & 7;
    if (field === 2 && wt === 1) {
      if (r.pos + 8 > r.end) throw new Error('truncated double');
      v = buf.readDoubleLE(r.pos);
      r.pos += 8;
    } else if (field === 3 && wt === 2) {
      const [s, e] = r.bytes();
      v = buf.toString('utf8', s, e);
    } else if (field === 4 && wt === 0) v = r.varint() !== 0;
    else if (field === 5 && wt === 2) {
      const [s, e] = r.bytes();
      v = decodeStructRange(buf, s, e);
    } else if (field === 6 && wt === 2) {
      const [s, e] = r.bytes();
      const list: StructValue[] = [];
      const lr = new Reader(buf, s, e);
      while (lr.pos < lr.end) {
        const t = lr.varint();
        if (t >>> 3 === 1 && (t & 7) === 2) {
          const [is, ie] = lr.bytes();
          list.push(decodeValue(buf, is, ie));
        } else lr.skip(t & 7);
      }
      v = list;
    } else if (field === 1 && wt === 0) {
      r.varint();
      v = null;
    } else r.skip(wt);
  }
  return v;
}

function decodeStructRange(buf: Buffer, start: number, end: number): StructFields {
  const out: StructFields = {};
  const r = new Reader(buf, start, end);
  while (r.pos < r.end) {
    const tag = r.varint();
    if (tag >>> 3 !== 1 || (tag & 7) !== 2) {
      r.skip(tag & 7);
      continue;
    }
    const [es, ee] = r.bytes();
    const er = new Reader(buf, es, ee);
    let key = '';
    let value: StructValue = null;
    while (er.pos < er.end) {
      const t = er.varint();
      if (t >>> 3 === 1 && (t & 7) === 2) {
        const [s, e] = er.bytes();
        key = buf.toString('utf8', s, e);
      } else if (t >>> 3 === 2 && (t & 7) === 2) {
        const [s, e] = er.bytes();
        value = decodeValue(buf, s, e);
      } else er.skip(t & 7);
    }
    out[key] = value;
  }
  return out;
}

/** A Struct from protobuf binary; throws on malformed input. */
export function decodeStruct(buf: Buffer): StructFields {
  return decodeStructRange(buf, 0, buf.length);
}

// ---- the workload, both ways --------------------------------------------------------------

const str = (v: StructValue | undefined): string => (typeof v === 'string' ? v : '');

/**
 * istio/proxy's `convertStructToWorkloadMetadata`: the fields it reads, `app.kubernetes.io/name`
 * and `-/version` before `app` and `version`.
 */
export function workloadFromStruct(s: StructFields): PeerWorkload {
  const labels = s.LABELS !== null && typeof s.LABELS === 'object' && !Array.isArray(s.LABELS) ? s.LABELS : {};
  return {
    name: str(s.NAME),
    namespace: str(s.NAMESPACE),
    workloadName: str(s.WORKLOAD_NAME),
    cluster: str(s.CLUSTER_ID),
    canonicalService: str(labels['service.istio.io/canonical-name']),
    canonicalRevision: str(labels['service.istio.io/canonical-revision']),
    app: str(labels['app.kubernetes.io/name']) || str(labels.app),
    version: str(labels['app.kubernetes.io/version']) || str(labels.version),
  };
}

/** The canonical service Istio's injector labels a pod with when the pod does not say. */
export function canonicalServiceOf(labels: Readonly<Record<string, string>>, workloadName: string): string {
  return labels['service.istio.io/canonical-name'] ?? labels['app.kubernetes.io/name'] ?? labels.app ?? workloadName;
}

export function canonicalRevisionOf(labels: Readonly<Record<string, string>>): string {
  return labels['service.istio.io/canonical-revision'] ?? labels['app.kubernetes.io/version'] ?? labels.version ?? 'latest';
}

/** This proxy as its peers learn it: the workload object Istio derives from the node metadata. */
export function localWorkload(node: ProxyNode): PeerWorkload {
  return {
    name: node.podName ?? '',
    namespace: node.namespace,
    workloadName: node.workloadName,
    cluster: node.clusterId ?? DEFAULT_CLUSTER_ID,
    canonicalService: canonicalServiceOf(node.labels, node.workloadName),
    canonicalRevision: canonicalRevisionOf(node.labels),
    app: node.labels['app.kubernetes.io/name'] ?? node.labels.app ?? '',
    version: node.labels['app.kubernetes.io/version'] ?? node.labels.version ?? '',
  };
}

/** istio/proxy's `convertWorkloadMetadataToStruct`: empty fields left out, `OWNER` as a pod's Kubernetes owner link. */
export function workloadToStruct(w: PeerWorkload): StructFields {
  const out: StructFields = {};
  if (w.name) out.NAME = w.name;
  if (w.namespace) out.NAMESPACE = w.namespace;
  if (w.workloadName) out.WORKLOAD_NAME = w.workloadName;
  if (w.cluster) out.CLUSTER_ID = w.cluster;
  const labels: StructFields = {};
  if (w.canonicalService) labels['service.istio.io/canonical-name'] = w.canonicalService;
  if (w.canonicalRevision) labels['service.istio.io/canonical-revision'] = w.canonicalRevision;
  if (w.app) labels.app = w.app;
  if (w.version) labels.version = w.version;
  out.LABELS = labels;
  if (w.workloadName && w.namespace) out.OWNER = `kubernetes://apis/apps/v1/namespaces/${w.namespace}/deployments/${w.workloadName}`;
  return out;
}

/** Envoy's node id as Istio's agent writes it, for a proxy whose bootstrap gave none. */
export function nodeIdOf(node: ProxyNode): string {
  if (node.id) return node.id;
  const pod = node.podName || node.workloadName || 'unknown';
  return `${node.kind === 'gateway' ? 'router' : 'sidecar'}~127.0.0.1~${pod}.${node.namespace}~${node.namespace}.svc.${node.clusterDomain}`;
}

/** This proxy's two header values, computed once. */
export interface LocalPeerMetadata {
  readonly id: string;
  /** Base64 of the Struct: the `x-envoy-peer-metadata` value. */
  readonly value: string;
  /** The Struct bytes (the TCP exchange sends them in an Any). */
  readonly struct: Buffer;
}

export function localPeerMetadata(node: ProxyNode): LocalPeerMetadata {
  const struct = encodeStruct(workloadToStruct(localWorkload(node)));
  return { id: nodeIdOf(node), value: struct.toString('base64'), struct };
}

/** Peers decoded from their header values, so the same value costs one map lookup; bounded as istio/proxy's cache. */
export class PeerMetadataCache {
  readonly #byValue = new Map<string, PeerWorkload | null>();
  readonly #max: number;

  constructor(max = 1000) {
    this.#max = max;
  }

  /** The peer a header value describes; null when it does not decode (then the peer stays unknown). */
  lookup(value: string): PeerWorkload | null {
    return this.#intern(value, () => workloadFromStruct(decodeStruct(Buffer.from(value, 'base64'))));
  }

  /**
   * The peer of a TCP metadata exchange: the Struct bytes of its Any, the workload under
   * `x-envoy-peer-metadata`; null when they do not decode or hold none. Keyed apart from
   * header values (a different key space: raw bytes, not base64).
   */
  lookupExchanged(struct: Buffer): PeerWorkload | null {
    return this.#intern(`\0${struct.toString('latin1')}`, () => {
      const inner = decodeStruct(struct)[PEER_METADATA];
      return inner !== null && inner !== undefined && typeof inner === 'object' && !Array.isArray(inner) ? workloadFromStruct(inner) : null;
    });
  }

  #intern(key: string, decode: () => PeerWorkload | null): PeerWorkload | null {
    const hit = this.#byValue.get(key);
    if (hit !== undefined) return hit;
    let peer: PeerWorkload | null;
    try {
      peer = decode();
    } catch {
      peer = null;
    }
    if (this.#byValue.size >= this.#max) {
      // Drop the oldest quarter, as istio/proxy's cache does.
      let n = this.#max >> 2;
      for (const k of this.#byValue.keys()) {
        if (n-- <= 0) break;
        this.#byValue.delete(k);
      }
    }
    this.#byValue.set(key, peer);
    return peer;
  }
}
