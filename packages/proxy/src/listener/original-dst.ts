/**
 * The original destination of a connection the pod's iptables rules sent to the proxy: what
 * Envoy's `envoy.filters.listener.original_dst` reads with getsockopt(SO_ORIGINAL_DST).
 *
 * Node has no getsockopt, so the two capture modes of istio-iptables are handled apart:
 *
 * - REDIRECT (the default): the kernel's NAT rewrote the destination, and the only place the
 *   old one is kept is the connection's conntrack entry. `ConntrackTable` reads it from
 *   `/proc/net/nf_conntrack` of the network namespace the file was opened in (the pod's).
 *   An entry has two tuples, the original direction then the reply direction:
 *
 *     ipv4 2 tcp 6 431999 ESTABLISHED src=POD dst=VIP sport=P dport=9080 src=127.0.0.1 dst=POD sport=15001 dport=P [ASSURED] mark=0 zone=0 use=2
 *
 *   The accepted socket's own 4-tuple is the reply tuple (reply src = our local address and
 *   port, reply dst = the peer), which conntrack keeps unique, so it finds exactly one entry;
 *   that entry's original `dst`/`dport` is the answer. An entry whose original destination is
 *   the reply source was not NATed (someone connected to the proxy's port directly): null,
 *   as when there is no entry at all.
 *
 * - TPROXY: nothing is rewritten; the accepted socket's local address IS the original
 *   destination. The listening socket needs IP_TRANSPARENT, which Node cannot set (no
 *   setsockopt): the socket has to be created by a privileged process (a launcher, systemd
 *   with `Transparent=yes`) and handed to Node as a file descriptor, `server.listen({ fd })`.
 *   `tproxyOriginalDestination` reads the local address.
 *
 * Cost (bench/original-dst-cost.ts): the kernel formats the table's text as it is read,
 * linear in the namespace's entries (plus a walk of the host-wide hash buckets, ~2 ms at
 * 262,144 buckets whatever the namespace holds); reading stops at the entries wanted, so a
 * lookup formats half the table on average. Lookups that arrive while a read is under way
 * share the next read, so a burst of accepts costs one or two reads, not one each. A lookup
 * runs once per accepted connection, off the event loop (libuv's pool), never per request.
 *
 * Permissions: `/proc/net/nf_conntrack` is mode 0440, owner root. A proxy running as an
 * unprivileged UID (1337 in a pod) cannot open it; it can read it through a descriptor opened
 * by root before the UID change and inherited (`ConntrackTable.open({ fd })`): the kernel
 * checks permissions only at open. The file exists only when the kernel has
 * CONFIG_NF_CONNTRACK_PROCFS and conntrack is loaded.
 */
import { close, open, read, constants as fsConstants } from 'node:fs';
import { SocketAddress } from 'node:net';

export interface OriginalDestination {
  readonly address: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
}

/** The addresses of an accepted connection (a net.Socket, a TLSSocket, a PrefaceSocket). */
export interface ConnectionAddresses {
  readonly localAddress?: string | undefined;
  readonly localPort?: number | undefined;
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
}

export const CONNTRACK_PATH = '/proc/net/nf_conntrack';

/** The conntrack table cannot be read: the message says why and what to do. */
export class ConntrackUnavailableError extends Error {
  readonly code = 'CONNTRACK_UNAVAILABLE';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ConntrackUnavailableError';
  }
}

interface Pending {
  /** ` src=LOCAL dst=PEER sport=LPORT dport=PPORT ` in the table's own address format. */
  readonly needle: string;
  readonly family: 'IPv4' | 'IPv6';
  readonly resolve: (d: OriginalDestination | null) => void;
  readonly reject: (e: Error) => void;
}

/** The buffer for the table's text: grows to the table's size and stays. */
const INITIAL_BUFFER = 64 * 1024;
/** One read() of the table: about 400 entries (a TCP entry is ~160 bytes). */
const CHUNK = 64 * 1024;

/**
 * `/proc/net/nf_conntrack`, opened once and re-read (from offset 0: the kernel regenerates
 * the text) for the lookups waiting at the time.
 */
export class ConntrackTable {
  readonly #fd: number;
  readonly #ownsFd: boolean;
  readonly #path: string;
  #buffer: Buffer = Buffer.allocUnsafe(INITIAL_BUFFER);
  /** Lookups waiting for a read that starts after they were asked (see #drain). */
  #pending: Pending[] = [];
  #reading = false;
  #closed = false;
  /** Reads of the whole table so far, and lookups answered: their ratio shows the sharing. */
  reads = 0;
  lookups = 0;
  /** Size in bytes of the table's text at the last read. */
  lastReadBytes = 0;

  private constructor(fd: number, ownsFd: boolean, path: string) {
    this.#fd = fd;
    this.#ownsFd = ownsFd;
    this.#path = path;
  }

  /**
   * Opens the table: `path` (default /proc/net/nf_conntrack of this process's network
   * namespace), or an already open descriptor `fd` (inherited from a privileged parent; not
   * closed by `close()`). Rejects with ConntrackUnavailableError saying why it cannot.
   */
  static async open(opts: { path?: string; fd?: number } = {}): Promise<ConntrackTable> {
    const path = opts.path ?? CONNTRACK_PATH;
    if (opts.fd !== undefined) {
      const table = new ConntrackTable(opts.fd, false, `fd ${opts.fd}`);
      await table.#read(0, CHUNK); // fails now, with the reason, if the descriptor is unreadable
      return table;
    }
    const fd = await new Promise<number>((resolve, reject) =>
      open(path, fsConstants.O_RDONLY, (err, fd) => (err ? reject(unavailable(path, err)) : resolve(fd))),
    );
    return new ConntrackTable(fd, true, path);
  }

  /**
   * The original destination of the connection whose accepted socket has these addresses,
   * or null when conntrack has no NAT entry for it (not redirected, or not tracked). Resolved
   * by a read of the table that starts after the call; concurrent calls share it.
   */
  lookup(socket: ConnectionAddresses): Promise<OriginalDestination | null> {
    if (this.#closed) return Promise.reject(new ConntrackUnavailableError(`conntrack table ${this.#path}: closed`));
    const key = replyNeedle(socket);
    if (key === null) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      this.#pending.push({ needle: key.needle, family: key.family, resolve, reject });
      if (!this.#reading) void this.#drain();
    });
  }

  /** Closes the descriptor (if opened here); lookups still waiting get an error. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#reading) this.#finish();
  }

  #finish(): void {
    const err = new ConntrackUnavailableError(`conntrack table ${this.#path}: closed`);
    for (const p of this.#pending.splice(0)) p.reject(err);
    if (this.#ownsFd) close(this.#fd, () => {});
  }

  async #drain(): Promise<void> {
    this.#reading = true;
    while (this.#pending.length > 0 && !this.#closed) {
      // The lookups asked so far form this read's batch; those asked while it runs wait for
      // the next one. An entry is in the table before accept() returns (the SYN created it),
      // but a read already under way may have passed its hash bucket, so a lookup is only
      // answered by a read that started after it was asked.
      const batch = this.#pending;
      this.#pending = [];
      try {
        await this.#scan(batch);
      } catch (err) {
        for (const p of batch) p.reject(err as Error);
      }
    }
    this.#reading = false;
    if (this.#closed) this.#finish();
  }

  /**
   * Reads the table from the start in chunks, searching the complete lines of each chunk for
   * the batch's entries, and stops as soon as all are found: the kernel formats the table as
   * it is read, so on average half of it is never formatted. Those not found are null.
   */
  async #scan(batch: Pending[]): Promise<void> {
    let open = batch.length;
    const answers: Array<OriginalDestination | null | undefined> = new Array(batch.length).fill(undefined);
    let length = 0;
    let scanned = 0; // lines before this offset were searched already
    for (;;) {
      if (length === this.#buffer.length) {
        const bigger = Buffer.allocUnsafe(this.#buffer.length * 2);
        this.#buffer.copy(bigger, 0, 0, length);
        this.#buffer = bigger;
      }
      const n = await this.#read(length, Math.min(CHUNK, this.#buffer.length - length));
      if (n === 0) break;
      length += n;
      const complete = this.#buffer.lastIndexOf(0x0a, length - 1) + 1;
      if (complete <= scanned) continue;
      const text = this.#buffer.subarray(0, complete);
      for (let i = 0; i < batch.length; i++) {
        if (answers[i] !== undefined) continue;
        const found = findOriginal(text, scanned, batch[i]!.needle, batch[i]!.family);
        if (found !== undefined) {
          answers[i] = found;
          open--;
        }
      }
      scanned = complete;
      if (open === 0) break;
    }
    this.reads++;
    this.lastReadBytes = length;
    for (let i = 0; i < batch.length; i++) {
      this.lookups++;
      batch[i]!.resolve(answers[i] ?? null);
    }
  }

  /** pread of the table's text at `offset` into #buffer at the same offset. */
  #read(offset: number, size: number): Promise<number> {
    return new Promise<number>((resolve, reject) =>
      read(this.#fd, this.#buffer, offset, size, offset, (err, n) => (err ? reject(unavailable(this.#path, err)) : resolve(n))),
    );
  }
}

function unavailable(path: string, err: NodeJS.ErrnoException): ConntrackUnavailableError {
  const why =
    err.code === 'ENOENT'
      ? 'not found: the kernel needs conntrack loaded (nf_conntrack) and CONFIG_NF_CONNTRACK_PROCFS'
      : err.code === 'EACCES' || err.code === 'EPERM'
        ? 'permission denied: it is readable by root only; open it as root and pass the descriptor (ConntrackTable.open({ fd })), or grant CAP_DAC_READ_SEARCH'
        : err.message;
  return new ConntrackUnavailableError(`conntrack table ${path}: ${why}`, { cause: err });
}

/**
 * The TPROXY answer: the accepted socket's local address (IPv4-mapped IPv6 as IPv4). Null
 * when the socket has no address, or when its local port is `listenerPort` (a connection
 * made to the listener itself, not diverted to it).
 */
export function tproxyOriginalDestination(socket: ConnectionAddresses, listenerPort?: number): OriginalDestination | null {
  const address = socket.localAddress;
  const port = socket.localPort;
  if (address === undefined || port === undefined) return null;
  if (listenerPort !== undefined && port === listenerPort) return null;
  const v4 = unmapIPv4(address);
  if (v4 !== null) return { address: v4, port, family: 'IPv4' };
  return { address: stripZone(address), port, family: 'IPv6' };
}

export type InterceptionMode = 'REDIRECT' | 'TPROXY';

/**
 * The original destination of an accepted socket in the given capture mode: REDIRECT asks
 * `table` (conntrack), TPROXY reads the socket's local address. Null when it was not
 * redirected.
 */
export function originalDestination(
  socket: ConnectionAddresses,
  opts: { mode: 'TPROXY'; listenerPort?: number } | { mode?: 'REDIRECT'; table: ConntrackTable },
): Promise<OriginalDestination | null> {
  if (opts.mode === 'TPROXY') return Promise.resolve(tproxyOriginalDestination(socket, opts.listenerPort));
  return opts.table.lookup(socket);
}

// ---------------------------------------------------------------------------------------------
// The table's text

/** The reply tuple of the connection, as the table prints it; null without addresses. */
function replyNeedle(s: ConnectionAddresses): { needle: string; family: 'IPv4' | 'IPv6' } | null {
  if (s.localAddress === undefined || s.remoteAddress === undefined || s.localPort === undefined || s.remotePort === undefined) return null;
  const local4 = unmapIPv4(s.localAddress);
  const remote4 = unmapIPv4(s.remoteAddress);
  if (local4 !== null && remote4 !== null) {
    return { needle: ` src=${local4} dst=${remote4} sport=${s.localPort} dport=${s.remotePort} `, family: 'IPv4' };
  }
  const local6 = expandIPv6(s.localAddress);
  const remote6 = expandIPv6(s.remoteAddress);
  if (local6 === null || remote6 === null) return null;
  return { needle: ` src=${local6} dst=${remote6} sport=${s.localPort} dport=${s.remotePort} `, family: 'IPv6' };
}

/**
 * The original destination in the entry of `text` (complete lines) whose reply tuple is
 * `needle`, searching from `from`: null when that entry was not NATed, undefined when there
 * is none. The needle may also match an original tuple (a connection the proxy opened from
 * that port), which is skipped.
 */
function findOriginal(text: Buffer, from: number, needle: string, family: 'IPv4' | 'IPv6'): OriginalDestination | null | undefined {
  for (;;) {
    const at = text.indexOf(needle, from, 'latin1');
    if (at < 0) return undefined;
    from = at + 1;
    const lineStart = text.lastIndexOf(0x0a, at) + 1;
    let lineEnd = text.indexOf(0x0a, at);
    if (lineEnd < 0) lineEnd = text.length;
    const line = text.toString('latin1', lineStart, lineEnd);
    const m = ENTRY.exec(line);
    // The match must be the second tuple of a TCP entry (the first one is the original).
    if (m === null || m[0].length !== at - lineStart + needle.length - 1) continue;
    const [, , , origDst, , origDport, replySrc, , replySport] = m as unknown as string[];
    if (origDst === replySrc && origDport === replySport) return null; // not NATed
    const port = Number(origDport);
    if (family === 'IPv4') return { address: origDst!, port, family };
    return { address: new SocketAddress({ address: origDst!, family: 'ipv6' }).address, port, family };
  }
}

/**
 * An entry up to the end of its reply tuple: `ipv4 2 tcp 6 <timeout> [state] src= dst= sport=
 * dport= [UNREPLIED] [packets= bytes=] src= dst= sport= dport=`.
 */
const ENTRY =
  /^(ipv4|ipv6) +\d+ tcp +6 \d+ (?:[A-Z_]+ )?src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+) (?:\S+ )*?src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)/;

/** `a.b.c.d` for an IPv4 address or an IPv4-mapped IPv6 one (`::ffff:a.b.c.d`), else null. */
function unmapIPv4(address: string): string | null {
  if (!address.includes(':')) return address;
  const lower = address.toLowerCase();
  if (lower.startsWith('::ffff:') && lower.includes('.')) return lower.slice(7);
  return null;
}

function stripZone(address: string): string {
  const pct = address.indexOf('%');
  return pct < 0 ? address : address.slice(0, pct);
}

/** The kernel's %pI6 form: eight groups of four lowercase hex digits. Null if not IPv6. */
export function expandIPv6(address: string): string | null {
  let a = stripZone(address).toLowerCase();
  // A trailing dotted quad (::ffff:1.2.3.4 that is not unmapped, or ::1.2.3.4): two groups.
  const dot = a.lastIndexOf(':');
  const tail = a.slice(dot + 1);
  if (tail.includes('.')) {
    const q = tail.split('.').map(Number);
    if (q.length !== 4 || q.some((n) => !Number.isInteger(n) || n < 0 || n > 255)) return null;
    a = `${a.slice(0, dot + 1)}${((q[0]! << 8) | q[1]!).toString(16)}:${((q[2]! << 8) | q[3]!).toString(16)}`;
  }
  const halves = a.split('::');
  if (halves.length > 2) return null;
  const head = halves[0] === '' ? [] : halves[0]!.split(':');
  const rest = halves.length === 2 ? (halves[1] === '' ? [] : halves[1]!.split(':')) : [];
  const missing = 8 - head.length - rest.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...rest];
  if (groups.some((g) => !/^[0-9a-f]{1,4}$/.test(g))) return null;
  return groups.map((g) => g.padStart(4, '0')).join(':');
}
