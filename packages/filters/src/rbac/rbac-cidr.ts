/**
 * IP addresses and CIDR ranges for RBAC's `destination_ip`, `direct_remote_ip`, `remote_ip` and
 * `source_ip`, as Envoy's `CidrRange` matches them: a single address is a /32 (IPv4) or /128
 * (IPv6) range; an address of one family never falls in a range of the other.
 * Ranges are parsed once; a request's address is parsed into a scratch buffer, without
 * allocating.
 */

/** Family of a parsed address: 4, 6, or 0 when the text is not an address. */
export type IpFamily = 0 | 4 | 6;

/** One range: its family, network bits (masked) as four big-endian 32-bit words, prefix length. */
export class CidrRange {
  readonly family: 4 | 6;
  readonly words: Uint32Array;
  readonly prefixLength: number;

  constructor(family: 4 | 6, words: Uint32Array, prefixLength: number) {
    this.family = family;
    this.prefixLength = prefixLength;
    // Envoy masks the host bits of the range ("10.1.2.3/16" is 10.1.0.0/16).
    const w = new Uint32Array(4);
    const count = family === 4 ? 1 : 4;
    for (let i = 0; i < count; i++) w[i] = (words[i]! & wordMask(prefixLength, i)) >>> 0;
    this.words = w;
  }

  /** Whether the address in `words` (as `parseIp` left it) is in this range. */
  contains(family: IpFamily, words: Uint32Array): boolean {
    if (family !== this.family) return false;
    const count = family === 4 ? 1 : 4;
    for (let i = 0; i < count; i++) {
      const mask = wordMask(this.prefixLength, i);
      if (mask === 0) return true;
      if (((words[i]! & mask) >>> 0) !== this.words[i]) return false;
    }
    return true;
  }
}

/** The mask of word `i` (bits 32*i .. 32*i+31) for a prefix length. */
function wordMask(prefixLength: number, i: number): number {
  const bits = prefixLength - 32 * i;
  if (bits >= 32) return 0xffffffff;
  if (bits <= 0) return 0;
  return (0xffffffff << (32 - bits)) >>> 0;
}

/**
 * Parses `10.1.2.3`, `10.0.0.0/8`, `2001:db8::1` or `2001:db8::/32` (Istio's `AddrStrToCidrRange`);
 * throws on anything else, as istiod's validation rejects it ("bad IP address", "bad CIDR range").
 */
export function parseCidr(text: string): CidrRange {
  const slash = text.indexOf('/');
  const addr = slash < 0 ? text : text.slice(0, slash);
  const words = new Uint32Array(4);
  const family = parseIpInto(addr, words, false);
  if (family === 0 || addr.includes('%')) {
    throw new Error(slash < 0 ? `bad IP address (${text})` : `bad CIDR range (${text})`);
  }
  const max = family === 4 ? 32 : 128;
  if (slash < 0) return new CidrRange(family, words, max);
  const lenText = text.slice(slash + 1);
  if (!/^(0|[1-9][0-9]{0,2})$/.test(lenText) || Number(lenText) > max) throw new Error(`bad CIDR range (${text})`);
  return new CidrRange(family, words, Number(lenText));
}

/** Scratch for request addresses: parsing is synchronous, so one buffer serves every request. */
const scratch = new Uint32Array(4);
const groups = new Uint16Array(8);

/**
 * Parses a request's address into the shared scratch buffer and returns its family (0: not an
 * address). An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a dual-stack socket reports)
 * counts as IPv4, as Envoy sees it. Call `matchesAny` right after: the next parse overwrites it.
 */
export function parseRequestIp(text: string): IpFamily {
  return parseIpInto(text, scratch, true);
}

/** Whether the address last parsed by `parseRequestIp` is in any of the ranges. */
export function scratchInAny(family: IpFamily, ranges: readonly CidrRange[]): boolean {
  if (family === 0) return false;
  for (let i = 0; i < ranges.length; i++) if (ranges[i]!.contains(family, scratch)) return true;
  return false;
}

/**
 * The address last parsed by `parseRequestIp`, its host bits past `prefixLength` cleared, as
 * Envoy's `CidrRange::asString` prints it (`10.1.0.0/16`, `2001:db8::/64`): the rate limit
 * action `masked_remote_address`. Builds one string; the scratch buffer is left as it was.
 */
export function scratchMaskedText(family: 4 | 6, prefixLength: number): string {
  if (family === 4) {
    const v = (scratch[0]! & wordMask(prefixLength, 0)) >>> 0;
    return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}/${prefixLength}`;
  }
  for (let i = 0; i < 4; i++) {
    const w = (scratch[i]! & wordMask(prefixLength, i)) >>> 0;
    masked[2 * i] = w >>> 16;
    masked[2 * i + 1] = w & 0xffff;
  }
  // inet_ntop's form: the longest run of two or more zero groups (the first of equals) is `::`.
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (masked[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && masked[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  let text = '';
  for (let i = 0; i < 8; i++) {
    if (i === bestAt) {
      text += '::';
      i += bestLen - 1;
      continue;
    }
    if (text !== '' && !text.endsWith(':')) text += ':';
    text += masked[i]!.toString(16);
  }
  return `${text}/${prefixLength}`;
}

const masked = new Uint16Array(8);

function parseIpInto(text: string, out: Uint32Array, unmapV4: boolean): IpFamily {
  let end = text.indexOf('%'); // IPv6 zone (fe80::1%eth0): not part of the address
  if (end < 0) end = text.length;
  if (text.indexOf(':') < 0) {
    const v4 = parseV4(text, 0, end);
    if (v4 < 0) return 0;
    out[0] = v4;
    out[1] = out[2] = out[3] = 0;
    return 4;
  }
  if (!parseV6(text, end)) return 0;
  if (unmapV4 && groups[0] === 0 && groups[1] === 0 && groups[2] === 0 && groups[3] === 0 && groups[4] === 0 && groups[5] === 0xffff) {
    out[0] = ((groups[6]! << 16) | groups[7]!) >>> 0;
    out[1] = out[2] = out[3] = 0;
    return 4;
  }
  for (let i = 0; i < 4; i++) out[i] = ((groups[2 * i]! << 16) | groups[2 * i + 1]!) >>> 0;
  return 6;
}

/** Dotted quad in text[start, end) → 32-bit value, or -1. No leading zeros (Go's netip is as strict). */
function parseV4(text: string, start: number, end: number): number {
  let value = 0;
  let octets = 0;
  let i = start;
  while (octets < 4) {
    let n = 0;
    let digits = 0;
    const first = i;
    while (i < end) {
      const c = text.charCodeAt(i);
      if (c < 48 || c > 57) break;
      n = n * 10 + (c - 48);
      digits++;
      i++;
    }
    if (digits === 0 || digits > 3 || n > 255 || (digits > 1 && text.charCodeAt(first) === 48)) return -1;
    value = value * 256 + n;
    octets++;
    if (octets < 4) {
      if (i >= end || text.charCodeAt(i) !== 46) return -1;
      i++;
    }
  }
  return i === end ? value : -1;
}

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

/** IPv6 text in text[0, end) → `groups`; false when malformed. */
function parseV6(text: string, end: number): boolean {
  let count = 0;
  let gap = -1; // group index where `::` stands
  let i = 0;
  if (end >= 2 && text.charCodeAt(0) === 58 && text.charCodeAt(1) === 58) {
    gap = 0;
    i = 2;
    if (i === end) {
      groups.fill(0);
      return true;
    }
  } else if (end > 0 && text.charCodeAt(0) === 58) {
    return false;
  }
  while (i < end) {
    if (count === 8) return false;
    // An embedded IPv4 tail (::ffff:1.2.3.4) counts as the last two groups.
    let j = i;
    let hasDot = false;
    while (j < end && text.charCodeAt(j) !== 58) {
      if (text.charCodeAt(j) === 46) hasDot = true;
      j++;
    }
    if (hasDot) {
      if (j !== end || count > 6) return false;
      const v4 = parseV4(text, i, end);
      if (v4 < 0) return false;
      groups[count++] = Math.floor(v4 / 65536);
      groups[count++] = v4 & 0xffff;
      i = end;
      break;
    }
    if (j - i < 1 || j - i > 4) return false;
    let g = 0;
    for (let k = i; k < j; k++) {
      const d = hexDigit(text.charCodeAt(k));
      if (d < 0) return false;
      g = g * 16 + d;
    }
    groups[count++] = g;
    i = j;
    if (i < end) {
      // A separator: `:` then another group, or `::` (once).
      i++;
      if (i < end && text.charCodeAt(i) === 58) {
        if (gap >= 0) return false;
        gap = count;
        i++;
      } else if (i === end) {
        return false; // trailing single colon
      }
    }
  }
  if (gap < 0) return count === 8;
  if (count > 7) return false;
  // Shift the groups after `::` to the end and zero the gap.
  const tail = count - gap;
  for (let k = 0; k < tail; k++) groups[7 - k] = groups[count - 1 - k]!;
  for (let k = gap; k < 8 - tail; k++) groups[k] = 0;
  return true;
}
