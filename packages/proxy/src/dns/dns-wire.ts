/**
 * The few header-level pieces of the DNS wire format (RFC 1035 §4.1) the proxy works on
 * directly, so that replies carry the client's question bytes exactly as sent and forwarded
 * answers are relayed untouched. Parsing of whole messages is dns-packet's.
 */

export const HEADER_BYTES = 12;
/** RFC 1035's UDP limit, and RFC 6891's floor for an advertised EDNS size. */
export const MIN_UDP_SIZE = 512;
/** A message over TCP is framed by a 16-bit length. */
export const MAX_TCP_SIZE = 65_535;

export const FLAG_QR = 0x8000;
export const FLAG_AA = 0x0400;
export const FLAG_TC = 0x0200;
export const FLAG_RD = 0x0100;
export const FLAG_CD = 0x0010;

export const OPCODE_QUERY = 0;
export const OPCODE_NOTIFY = 4;

export const RCODE_NOERROR = 0;
export const RCODE_FORMERR = 1;
export const RCODE_SERVFAIL = 2;
export const RCODE_NOTIMP = 4;

export const TYPE_A = 1;
export const TYPE_AAAA = 28;

export function opcodeOf(msg: Buffer): number {
  return (msg.readUInt16BE(2) >> 11) & 0xf;
}

/**
 * What miekg/dns's server (Istio's DNS proxy) does with a message before parsing it, from
 * the header alone: `ignore` (a response: answering it would make DNS ping-pong), `notimp`
 * (an opcode other than QUERY or NOTIFY), `formerr` (not exactly one question, or more
 * records than a query carries), else `accept`.
 */
export function screenHeader(msg: Buffer): 'accept' | 'ignore' | 'notimp' | 'formerr' {
  const flags = msg.readUInt16BE(2);
  if ((flags & FLAG_QR) !== 0) return 'ignore';
  const opcode = (flags >> 11) & 0xf;
  if (opcode !== OPCODE_QUERY && opcode !== OPCODE_NOTIFY) return 'notimp';
  if (msg.readUInt16BE(4) !== 1) return 'formerr';
  if (msg.readUInt16BE(6) > 1 || msg.readUInt16BE(8) > 1 || msg.readUInt16BE(10) > 2) return 'formerr';
  return 'accept';
}

/**
 * The reply header miekg's SetReply makes for `query`: same id and opcode, QR set, and for a
 * QUERY its RD and CD bits; `extra` adds flags (AA, TC), `rcode` the response code.
 */
export function writeReplyHeader(out: Buffer, query: Buffer, rcode: number, extra: number, qdcount: number, ancount: number): void {
  const flags = query.readUInt16BE(2);
  const opcode = (flags >> 11) & 0xf;
  let reply = FLAG_QR | (opcode << 11) | extra | (rcode & 0xf);
  if (opcode === OPCODE_QUERY) reply |= flags & (FLAG_RD | FLAG_CD);
  out.writeUInt16BE(query.readUInt16BE(0), 0);
  out.writeUInt16BE(reply, 2);
  out.writeUInt16BE(qdcount, 4);
  out.writeUInt16BE(ancount, 6);
  out.writeUInt16BE(0, 8);
  out.writeUInt16BE(0, 10);
}

/** A reply with no sections at all (FORMERR, NOTIMP: the question may be what is wrong). */
export function headerOnlyReply(query: Buffer, rcode: number): Buffer {
  const out = Buffer.allocUnsafe(HEADER_BYTES);
  writeReplyHeader(out, query, rcode, 0, 0, 0);
  return out;
}

/**
 * Where the first question of a parsed message ends (its name, type and class). Only called
 * on a message dns-packet has decoded, so the name is well formed.
 */
export function questionEnd(msg: Buffer): number {
  let at = HEADER_BYTES;
  for (;;) {
    const len = msg[at]!;
    if (len === 0) return at + 1 + 4;
    // A compression pointer ends the name (two bytes).
    if ((len & 0xc0) === 0xc0) return at + 2 + 4;
    at += len + 1;
  }
}

/** A reply carrying the client's question as sent and `answers`, already encoded records. */
export function answerReply(query: Buffer, qEnd: number, rcode: number, extra: number, answers: readonly Buffer[], count: number): Buffer {
  let size = qEnd;
  for (let i = 0; i < count; i++) size += answers[i]!.length;
  const out = Buffer.allocUnsafe(size);
  writeReplyHeader(out, query, rcode, extra, 1, count);
  query.copy(out, HEADER_BYTES, HEADER_BYTES, qEnd);
  let at = qEnd;
  for (let i = 0; i < count; i++) at += answers[i]!.copy(out, at);
  return out;
}

/**
 * A forwarded answer too large for the client: the upstream's header (id, flags, rcode)
 * with TC set and only the question, which tells the client to ask again over TCP.
 */
export function truncatedRelay(upstreamReply: Buffer, query: Buffer, qEnd: number): Buffer {
  const out = Buffer.allocUnsafe(qEnd);
  out.writeUInt16BE(upstreamReply.readUInt16BE(0), 0);
  out.writeUInt16BE(upstreamReply.readUInt16BE(2) | FLAG_TC, 2);
  out.writeUInt16BE(1, 4);
  out.writeUInt32BE(0, 6);
  out.writeUInt16BE(0, 10);
  query.copy(out, HEADER_BYTES, HEADER_BYTES, qEnd);
  return out;
}
