/**
 * The parts of a TLS ClientHello a listener routes on, read from the first bytes of a
 * connection without terminating it (Envoy's tls_inspector): the server name (SNI) and the
 * ALPN protocols offered.
 */
export interface ClientHello {
  /** Lower-case SNI; null when the client sent none. */
  readonly serverName: string | null;
  readonly alpn: readonly string[];
}

/** The first byte of every TLS record that carries a handshake message. */
export const TLS_HANDSHAKE = 0x16;
/** Envoy's tls_inspector gives up past this many bytes (max_client_hello_size 64 KiB). */
export const MAX_CLIENT_HELLO = 64 * 1024;

/**
 * `null` while more bytes are needed; `'not-tls'` when the bytes are not a ClientHello;
 * else what the hello says. The hello may span several TLS records.
 */
export function parseClientHello(buf: Buffer): ClientHello | 'not-tls' | null {
  if (buf.length === 0) return null;
  if (buf[0] !== TLS_HANDSHAKE) return 'not-tls';
  // Gather the handshake bytes from consecutive handshake records.
  const parts: Buffer[] = [];
  let off = 0;
  let have = 0;
  let need = -1;
  while (need < 0 || have < need) {
    if (buf.length < off + 5) return null;
    if (buf[off] !== TLS_HANDSHAKE || buf[off + 1] !== 3) return 'not-tls';
    const len = buf.readUInt16BE(off + 3);
    if (buf.length < off + 5 + len) return null;
    parts.push(buf.subarray(off + 5, off + 5 + len));
    have += len;
    off += 5 + len;
    if (need < 0) {
      const first = parts[0]!;
      if (first.length < 4) return 'not-tls';
      if (first[0] !== 1) return 'not-tls'; // not a ClientHello
      need = 4 + ((first[1]! << 16) | (first[2]! << 8) | first[3]!);
      if (need > MAX_CLIENT_HELLO) return 'not-tls';
    }
  }
  const hs = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  return readHello(hs.subarray(4, need)) ?? 'not-tls';
}

function readHello(b: Buffer): ClientHello | null {
  let p = 2 + 32; // client_version, random
  if (b.length < p + 1) return null;
  p += 1 + b[p]!; // session_id
  if (b.length < p + 2) return null;
  p += 2 + b.readUInt16BE(p); // cipher_suites
  if (b.length < p + 1) return null;
  p += 1 + b[p]!; // compression_methods
  if (b.length < p + 2) return { serverName: null, alpn: [] }; // no extensions
  const end = p + 2 + b.readUInt16BE(p);
  p += 2;
  if (end > b.length) return null;
  let serverName: string | null = null;
  let alpn: string[] = [];
  while (p + 4 <= end) {
    const type = b.readUInt16BE(p);
    const len = b.readUInt16BE(p + 2);
    const body = b.subarray(p + 4, p + 4 + len);
    p += 4 + len;
    if (p > end) return null;
    if (type === 0 && body.length >= 5) {
      // server_name_list: one host_name entry (type 0) is all clients send.
      let q = 2;
      while (q + 3 <= body.length) {
        const nameType = body[q]!;
        const nameLen = body.readUInt16BE(q + 1);
        if (nameType === 0 && q + 3 + nameLen <= body.length) {
          serverName = body.toString('latin1', q + 3, q + 3 + nameLen).toLowerCase();
          break;
        }
        q += 3 + nameLen;
      }
    } else if (type === 16 && body.length >= 2) {
      alpn = [];
      let q = 2;
      while (q < body.length) {
        const l = body[q]!;
        alpn.push(body.toString('latin1', q + 1, q + 1 + l));
        q += 1 + l;
      }
    }
  }
  return { serverName, alpn };
}

/** Does a server-name pattern (`*`, `*.suffix` or exact, lower case) cover `sni`? No SNI: only `*`. */
export function serverNameMatches(pattern: string, sni: string | null): boolean {
  if (pattern === '*') return true;
  if (sni === null) return false;
  if (pattern.startsWith('*')) return sni.length > pattern.length - 1 && sni.endsWith(pattern.slice(1));
  return pattern === sni;
}

/**
 * The server whose hosts best match `sni`, as Envoy picks a filter chain by server name:
 * an exact name, then the longest `*.suffix` wildcard, then a server for any name (`*`).
 * Without SNI only a `*` server matches.
 */
export function pickByServerName<T extends { readonly hosts: readonly string[] }>(servers: readonly T[], sni: string | null): T | null {
  let best: T | null = null;
  // Exact beats any wildcard, a longer suffix beats a shorter one, `*` comes last.
  let bestRank = -1;
  for (const s of servers) {
    for (const h of s.hosts) {
      if (!serverNameMatches(h, sni)) continue;
      const rank = h === '*' ? 0 : h.startsWith('*') ? h.length : Number.MAX_SAFE_INTEGER;
      if (rank > bestRank) {
        best = s;
        bestRank = rank;
      }
    }
  }
  return best;
}
