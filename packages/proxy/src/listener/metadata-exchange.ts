import type { Socket } from 'node:net';
import type { Stat } from '@remora/filters';
import type { EnvoyStats } from '../telemetry/envoy-stats.ts';
import { encodeStruct, PEER_METADATA, PEER_METADATA_ID, workloadToStruct, localWorkload, type PeerMetadataCache, type PeerWorkload } from '../telemetry/peer-metadata.ts';
import type { ProxyNode } from '@remora/config';

/**
 * Istio's TCP metadata exchange (istio/proxy's `istio.metadata_exchange` network filter, and
 * its upstream twin on clusters). Once TLS between two Istio proxies negotiated ALPN
 * `istio-peer-exchange`, each side writes, before any byte of the app's:
 *
 *     magic 0x3D230467 (u32, big-endian) | length (u32, big-endian) | google.protobuf.Any
 *
 * the Any (`type.googleapis.com/google.protobuf.Struct`) holding a Struct with this proxy's
 * workload under `x-envoy-peer-metadata` and its node id under `x-envoy-peer-metadata-id`, and
 * reads the other's; those bytes go neither to the app nor upstream. A peer whose first bytes
 * are not the magic did not run the exchange: its bytes pass on as they came, and the peer
 * stays unknown (`initial_header_not_found`). An Any that does not parse leaves its bytes in
 * place too, as the filter does (`header_not_found`).
 *
 * Where Envoy's filter waits for the header as long as the connection lasts, the wait here
 * is bounded (`timeoutMs`): a peer that negotiated the ALPN and sends nothing (a server-first
 * protocol behind a client that writes only when its app does) is then served without its
 * metadata, and so is one that half-closes before the header is complete.
 *
 * Counters as the filter names them, `metadata_exchange.<name>` in `/stats`. Envoy counts
 * `initial_header_not_found` on every read too short for the header as well; here it counts
 * once per connection whose header never came.
 */

export const METADATA_EXCHANGE_MAGIC = 0x3d230467;
const HEADER_BYTES = 8;
const STRUCT_TYPE_URL = 'type.googleapis.com/google.protobuf.Struct';
/** The bounded wait for the peer's header. A proxy sends it right after the handshake. */
export const METADATA_EXCHANGE_TIMEOUT_MS = 2_000;
/** A header announcing more than this is not taken as one (Envoy's per-connection buffer is 1 MiB; metadata is < 1 KiB). */
const MAX_PAYLOAD_BYTES = 64 * 1024;

/** The filter's counters. */
export interface MetadataExchangeStats {
  readonly alpnProtocolFound: Stat;
  readonly alpnProtocolNotFound: Stat;
  readonly initialHeaderNotFound: Stat;
  readonly headerNotFound: Stat;
  readonly metadataAdded: Stat;
}

function lengthDelimited(field: number, bytes: Buffer): Buffer {
  const len: number[] = [];
  let v = bytes.length;
  while (v > 0x7f) {
    len.push((v & 0x7f) | 0x80);
    v >>>= 7;
  }
  len.push(v);
  return Buffer.concat([Buffer.from([(field << 3) | 2, ...len]), bytes]);
}

/** This proxy's preamble: the header and the Any, built once. */
export function metadataExchangePreamble(node: ProxyNode, nodeId: string): Buffer {
  const struct = encodeStruct({ [PEER_METADATA]: workloadToStruct(localWorkload(node)), ...(nodeId !== '' ? { [PEER_METADATA_ID]: nodeId } : {}) });
  const any = Buffer.concat([lengthDelimited(1, Buffer.from(STRUCT_TYPE_URL)), lengthDelimited(2, struct)]);
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt32BE(METADATA_EXCHANGE_MAGIC, 0);
  header.writeUInt32BE(any.length, 4);
  return Buffer.concat([header, any]);
}

/**
 * The Struct bytes inside an Any of type Struct; null when the bytes are no such Any. The
 * value's bytes are returned as a view (the caller's cache keys on them).
 */
export function structOfAny(any: Buffer): Buffer | null {
  let pos = 0;
  let typeUrl: string | null = null;
  let value: Buffer = Buffer.alloc(0);
  const varint = (): number => {
    let v = 0;
    let shift = 0;
    for (;;) {
      if (pos >= any.length || shift > 28) throw new Error('bad varint');
      const b = any[pos++]!;
      v |= (b & 0x7f) << shift;
      if ((b & 0x80) === 0) return v >>> 0;
      shift += 7;
    }
  };
  try {
    while (pos < any.length) {
      const tag = varint();
      const wt = tag & 7;
      if (wt !== 2) {
        if (wt === 0) varint();
        else if (wt === 1) pos += 8;
        else if (wt === 5) pos += 4;
        else return null;
        if (pos > any.length) return null;
        continue;
      }
      const len = varint();
      if (pos + len > any.length) return null;
      const bytes = any.subarray(pos, pos + len);
      pos += len;
      if (tag >>> 3 === 1) typeUrl = bytes.toString('utf8');
      else if (tag >>> 3 === 2) value = bytes;
    }
  } catch {
    return null;
  }
  // UnpackTo: the type must be Struct's (any host part before the last '/').
  if (typeUrl === null || typeUrl.slice(typeUrl.lastIndexOf('/') + 1) !== 'google.protobuf.Struct') return null;
  return value;
}

/** What the exchange learnt: the peer's workload (null: it sent none) and the bytes read after its preamble. */
export type ExchangeDone = (peer: PeerWorkload | null, rest: Buffer) => void;

/** The exchange as this proxy runs it on either side: its preamble, its counters, the peers it decoded. */
export class MetadataExchange {
  readonly preamble: Buffer;
  readonly stats: MetadataExchangeStats;
  readonly #cache: PeerMetadataCache;
  readonly #timeoutMs: number;

  constructor(node: ProxyNode, nodeId: string, stats: EnvoyStats, cache: PeerMetadataCache, timeoutMs = METADATA_EXCHANGE_TIMEOUT_MS) {
    this.preamble = metadataExchangePreamble(node, nodeId);
    const scope = stats.scope(null);
    this.stats = {
      alpnProtocolFound: scope.root('metadata_exchange.alpn_protocol_found'),
      alpnProtocolNotFound: scope.root('metadata_exchange.alpn_protocol_not_found'),
      initialHeaderNotFound: scope.root('metadata_exchange.initial_header_not_found'),
      headerNotFound: scope.root('metadata_exchange.header_not_found'),
      metadataAdded: scope.root('metadata_exchange.metadata_added'),
    };
    this.#cache = cache;
    this.#timeoutMs = timeoutMs;
  }

  /** A connection where the filter runs but ALPN did not pick `istio-peer-exchange` (plaintext, other TLS): no exchange. */
  notNegotiated(): void {
    this.stats.alpnProtocolNotFound.value++;
  }

  /**
   * Runs the exchange on a connection that negotiated `istio-peer-exchange`: writes this
   * proxy's preamble, then reads the peer's. `done` gets the peer and the bytes read past its
   * preamble, with the socket paused and these listeners gone; it is not called when the
   * socket closes first.
   */
  run(socket: Socket, done: ExchangeDone): void {
    this.stats.alpnProtocolFound.value++;
    socket.write(this.preamble);
    this.stats.metadataAdded.value++;
    this.read(socket, done);
  }

  /** The reading half of `run`. */
  read(socket: Socket, done: ExchangeDone): void {
    const stats = this.stats;
    let seen: Buffer = Buffer.alloc(0);
    let payload = -1;
    let settled = false;
    const finish = (peer: PeerWorkload | null, rest: Buffer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onClose);
      socket.pause();
      if (!socket.destroyed) done(peer, rest);
    };
    const giveUp = (): void => {
      // No complete header: as far as it came, the bytes are the app's.
      if (payload < 0) stats.initialHeaderNotFound.value++;
      else stats.headerNotFound.value++;
      finish(null, seen);
    };
    const onData = (chunk: Buffer): void => {
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      if (payload < 0) {
        if (seen.length < HEADER_BYTES) return;
        if (seen.readUInt32BE(0) !== METADATA_EXCHANGE_MAGIC) {
          stats.initialHeaderNotFound.value++;
          finish(null, seen);
          return;
        }
        payload = seen.readUInt32BE(4);
        // The header is consumed once read, as the filter drains it.
        seen = seen.subarray(HEADER_BYTES);
        if (payload > MAX_PAYLOAD_BYTES) {
          stats.headerNotFound.value++;
          finish(null, seen);
          return;
        }
      }
      if (seen.length < payload) return;
      const any = seen.subarray(0, payload);
      const struct = structOfAny(any);
      if (struct === null) {
        // Left in place, as the filter leaves an Any it cannot parse.
        stats.headerNotFound.value++;
        finish(null, seen);
        return;
      }
      finish(this.#cache.lookupExchanged(struct), seen.subarray(payload));
    };
    const onEnd = (): void => giveUp();
    const onClose = (): void => {
      settled = true;
      clearTimeout(timer);
    };
    const timer = setTimeout(giveUp, this.#timeoutMs);
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', onClose);
    socket.resume();
  }
}
