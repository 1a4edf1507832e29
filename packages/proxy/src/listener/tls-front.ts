import { readFileSync } from 'node:fs';
import { PEER_EXCHANGE_ALPN } from '../telemetry/peer-metadata.ts';
import type { Socket } from 'node:net';
import { createSecureContext, TLSSocket, type SecureContext } from 'node:tls';
import type { ListenerTls, TlsServer } from '@remora/config';
import type { Logger } from '../logger.ts';
import type { IdentityStore } from '../tls/identity-store.ts';
import { parseSubjectAltNames } from '../tls/certificates.ts';
import { sessionIdContext } from '../tls/session-id-context.ts';
import { fileStamp } from '../tls/file-stamp.ts';
import { MAX_CLIENT_HELLO, parseClientHello, pickByServerName, type ClientHello } from './client-hello.ts';
import type { TlsStats } from './tls-stats.ts';

/** What the listener does with a connection once the TLS front has looked at it. */
export interface TlsFrontHandlers {
  /** Plaintext on a PERMISSIVE port: `head` holds the bytes already read. */
  plain(socket: Socket, head: Buffer): void;
  /** A terminated TLS connection, handshake done; `h2` when ALPN chose HTTP/2; `server`: the Gateway server it picked (null: mesh mTLS). */
  secure(tls: TLSSocket, h2: boolean, server: TlsServer | null): void;
  /** PASSTHROUGH: the TLS bytes go on untouched; `head` holds the ClientHello already read. */
  passthrough(socket: Socket, head: Buffer, server: TlsServer, sni: string | null): void;
}

/** Envoy's listener_filters_timeout: the ClientHello (and here the whole handshake) within 15 s. */
export const HANDSHAKE_TIMEOUT_MS = 15_000;

/** Gateway certificates re-read when their files change, checked at most this often. */
const RECHECK_MS = 1_000;

interface LoadedContext {
  readonly key: string;
  context: SecureContext | null;
  /** The files' stamps when read (`fileStamp`), or 'missing'. */
  stamps: string;
  checkedAt: number;
}

/**
 * The TLS side of a listener (Envoy's tls_inspector plus the TLS transport socket): reads
 * the ClientHello, picks the Gateway server by SNI (or, on a sidecar's inbound port, decides
 * between mTLS and plaintext by the first byte), and terminates TLS with that server's
 * certificate, verifying client certificates where the mode asks for them.
 */
export class TlsFront {
  readonly #identity: IdentityStore | null;
  readonly #log: Logger;
  readonly #contexts = new Map<string, LoadedContext>();
  readonly #handshakeTimeoutMs: number;
  readonly #stats: TlsStats;
  #warnedNoIdentity = false;

  /**
   * `handshakeTimeoutMs`: a client must send its ClientHello and finish the handshake within
   * this (Envoy's listener_filters_timeout is 15 s), or the connection is closed.
   */
  constructor(identity: IdentityStore | null, log: Logger, stats: TlsStats, handshakeTimeoutMs: number = HANDSHAKE_TIMEOUT_MS) {
    this.#identity = identity;
    this.#log = log;
    this.#stats = stats;
    this.#handshakeTimeoutMs = handshakeTimeoutMs;
  }

  /** `peerExchange`: a TCP port running Istio's metadata exchange, whose mTLS picks ALPN `istio-peer-exchange` when offered. */
  accept(socket: Socket, tls: ListenerTls, handlers: TlsFrontHandlers, peerExchange = false): void {
    let seen: Buffer | null = null;
    let read = false;
    // Cleared once the connection is handed on (plaintext, passthrough, or handshake done).
    // On a PERMISSIVE port a client that has not sent a hello by then is served as plaintext
    // (Istio's inbound listener continues on the listener-filter timeout); elsewhere it is closed.
    const deadline = setTimeout(() => {
      if (tls.kind === 'mesh' && tls.mode === 'PERMISSIVE' && !socket.destroyed && !read) {
        read = true;
        socket.off('data', onData);
        socket.off('error', onEarlyError);
        socket.pause();
        settled.plain(socket, seen ?? Buffer.alloc(0));
        return;
      }
      socket.destroy();
    }, this.#handshakeTimeoutMs);
    socket.once('close', () => clearTimeout(deadline));
    const settled = {
      plain: (s: Socket, head: Buffer) => {
        clearTimeout(deadline);
        handlers.plain(s, head);
      },
      secure: (t: TLSSocket, h2: boolean, server: TlsServer | null) => {
        clearTimeout(deadline);
        handlers.secure(t, h2, server);
      },
      passthrough: (s: Socket, head: Buffer, server: TlsServer, sni: string | null) => {
        clearTimeout(deadline);
        handlers.passthrough(s, head, server, sni);
      },
    };
    const onData = (chunk: Buffer): void => {
      seen = seen === null ? chunk : Buffer.concat([seen, chunk]);
      const hello = parseClientHello(seen);
      if (hello === null && seen.length < MAX_CLIENT_HELLO) return; // more bytes needed
      read = true;
      socket.off('data', onData);
      socket.off('error', onEarlyError);
      socket.pause();
      this.#dispatch(socket, seen, hello === null ? 'not-tls' : hello, tls, settled, peerExchange);
    };
    const onEarlyError = (): void => {
      socket.destroy();
    };
    socket.on('data', onData);
    socket.on('error', onEarlyError);
  }

  #dispatch(socket: Socket, head: Buffer, hello: ClientHello | 'not-tls', tls: ListenerTls, handlers: TlsFrontHandlers, peerExchange: boolean): void {
    if (tls.kind === 'mesh') {
      if (hello === 'not-tls') {
        // STRICT refuses plaintext: no filter chain matches.
        if (tls.mode === 'STRICT') refuse(socket);
        else handlers.plain(socket, head);
        return;
      }
      const context = this.#meshContext();
      if (context === null) {
        socket.destroy();
        return;
      }
      this.#terminate(socket, head, hello, context, { requestCert: true, rejectUnauthorized: true }, null, handlers, peerExchange);
      return;
    }
    if (hello === 'not-tls') {
      refuse(socket);
      return;
    }
    const server = pickByServerName(tls.servers, hello.serverName);
    if (server === null) {
      // No server for this name: no filter chain matches.
      refuse(socket);
      return;
    }
    if (server.mode === 'PASSTHROUGH') {
      handlers.passthrough(socket, head, server, hello.serverName);
      return;
    }
    const context = server.mode === 'ISTIO_MUTUAL' ? this.#meshContext() : this.#serverContext(server);
    if (context === null) {
      socket.destroy();
      return;
    }
    const verify =
      server.mode === 'SIMPLE'
        ? { requestCert: false, rejectUnauthorized: false }
        : server.mode === 'OPTIONAL_MUTUAL'
          ? { requestCert: true, rejectUnauthorized: false }
          : { requestCert: true, rejectUnauthorized: true };
    this.#terminate(socket, head, hello, context, verify, server, handlers);
  }

  #terminate(
    socket: Socket,
    head: Buffer,
    hello: ClientHello,
    secureContext: SecureContext,
    verify: { requestCert: boolean; rejectUnauthorized: boolean },
    server: TlsServer | null,
    handlers: TlsFrontHandlers,
    peerExchange = false,
  ): void {
    // ALPN: HTTP/2 when offered, else HTTP/1.1; chosen from the hello so that a client
    // offering only other names (Istio's `istio-*`) is still served, without ALPN. A TCP port
    // with Istio's metadata exchange prefers `istio-peer-exchange` (istiod's ALPNDownstreamWithMxc).
    const alpn =
      peerExchange && hello.alpn.includes(PEER_EXCHANGE_ALPN) ? PEER_EXCHANGE_ALPN : hello.alpn.includes('h2') ? 'h2' : hello.alpn.includes('http/1.1') ? 'http/1.1' : null;
    const options = {
      isServer: true,
      secureContext,
      requestCert: verify.requestCert,
      rejectUnauthorized: verify.rejectUnauthorized,
      ...(alpn !== null ? { ALPNProtocols: [alpn] } : {}),
    };
    // TLS runs on the socket's native handle; the bytes read to route the connection are
    // handed to it first through TLSWrap's `receive`, the way Node's own HTTP/2 code feeds a
    // native session bytes its stream already holds (bytes put back with `unshift` would
    // never reach a native handle).
    const tls = new TLSSocket(socket, options);
    const handle = (tls as unknown as { _handle: { receive?: (b: Buffer) => void } | null })._handle;
    if (typeof handle?.receive !== 'function') {
      this.#log.error('this Node.js runtime cannot hand read bytes to a TLS socket (TLSWrap.receive); TLS connection refused');
      tls.destroy();
      return;
    }
    handle.receive(head);
    const stats = this.#stats;
    let settled = false;
    tls.on('error', () => {
      if (!settled) stats.connectionError++;
      settled = true;
      tls.destroy();
    });
    tls.once('secure', () => {
      settled = true;
      // What tls.Server does for its sockets; HTTP/2 sessions wait for it.
      (tls as unknown as { secureConnecting: boolean }).secureConnecting = false;
      // A TLSSocket made outside a tls.Server verifies nothing by itself: OpenSSL's verdict on
      // the client's chain (against the context's CA) is read here. A resumed session carries
      // the verdict and the client certificate of the handshake that made it, and resumes only
      // into a context of the same trust (the session id context), so the same check holds.
      const hasCert = hasPeerCertificate(tls);
      if (verify.requestCert) {
        const error = (tls as unknown as { _handle: { verifyError(): Error | null } | null })._handle?.verifyError() ?? null;
        if (error === null && hasCert) tls.authorized = true;
        else if (verify.rejectUnauthorized) {
          if (hasCert) stats.failVerifyError++;
          else stats.failVerifyNoCert++;
          tls.destroy();
          return;
        }
      }
      if (server !== null && !this.#clientAcceptable(tls, server)) {
        if (server.mode === 'MUTUAL') stats.failVerifySan++;
        else stats.failVerifyError++;
        tls.destroy();
        return;
      }
      stats.handshake++;
      if (!hasCert) stats.noCertificate++;
      if (tls.isSessionReused()) stats.sessionReused++;
      handlers.secure(tls, tls.alpnProtocol === 'h2', server);
    });
    socket.resume();
  }

  /** MUTUAL's `subjectAltNames`, and OPTIONAL_MUTUAL's "a certificate sent must verify". */
  #clientAcceptable(tls: TLSSocket, server: TlsServer): boolean {
    if (server.mode === 'OPTIONAL_MUTUAL') return !hasPeerCertificate(tls) || tls.authorized;
    if (server.mode !== 'MUTUAL' || server.subjectAltNames.length === 0) return true;
    // Envoy's SAN matcher: any SAN (DNS, URI, IP, email) equal to one listed.
    return parseSubjectAltNames(tls.getPeerCertificate()?.subjectaltname).some((san) => server.subjectAltNames.includes(san.value));
  }

  #meshContext(): SecureContext | null {
    const context = this.#identity?.secureContext ?? null;
    if (context === null && !this.#warnedNoIdentity) {
      this.#warnedNoIdentity = true;
      this.#log.warn('a TLS connection arrived but this proxy has no workload identity (no certificate files); refusing TLS connections');
    }
    return context;
  }

  /** A Gateway server's certificate, from its files; re-read when they change. */
  #serverContext(server: TlsServer): SecureContext | null {
    const files = [server.certFile, server.keyFile, server.caFile].filter((f): f is string => f !== null);
    // The mode is part of the key: the session id context depends on it.
    const key = `${server.origin} ${server.mode} ${files.join(' ')} ${server.minVersion} ${server.maxVersion} ${server.cipherSuites.join(':')}`;
    let entry = this.#contexts.get(key);
    const now = Date.now();
    if (entry !== undefined && now - entry.checkedAt < RECHECK_MS) return entry.context;
    let stamps: string;
    try {
      stamps = files.map((f) => fileStamp(f) ?? missing(f)).join(' ');
    } catch (err) {
      if (entry?.stamps !== 'missing') this.#log.error(`Gateway server ${server.origin}: cannot read its certificate: ${(err as Error).message}`);
      entry ??= { key, context: null, stamps: 'missing', checkedAt: now };
      entry.stamps = 'missing';
      entry.context = null;
      entry.checkedAt = now;
      this.#contexts.set(key, entry);
      return null;
    }
    if (entry !== undefined && entry.stamps === stamps) {
      entry.checkedAt = now;
      return entry.context;
    }
    let context: SecureContext | null = null;
    try {
      const ca = server.caFile !== null ? readFileSync(server.caFile, 'utf8') : null;
      context = createSecureContext({
        cert: readFileSync(server.certFile!),
        key: readFileSync(server.keyFile!),
        ...(ca !== null ? { ca } : {}),
        // Clients (browsers, pools) resume sessions; with client certificates asked for, that
        // needs a session id context, one per trust so no session crosses to another.
        sessionIdContext: sessionIdContext(server.mode, ca ?? ''),
        minVersion: server.minVersion ?? 'TLSv1.2',
        ...(server.maxVersion !== null ? { maxVersion: server.maxVersion } : {}),
        ...(server.cipherSuites.length > 0 ? { ciphers: server.cipherSuites.join(':') } : {}),
      });
      if (entry !== undefined) this.#log.info(`Gateway server ${server.origin}: certificate reloaded`);
    } catch (err) {
      this.#log.error(`Gateway server ${server.origin}: its certificate files are not usable: ${(err as Error).message}`);
    }
    entry = { key, context, stamps, checkedAt: now };
    this.#contexts.set(key, entry);
    return context;
  }
}

/**
 * A connection no filter chain matches. Envoy closes it with bytes it never consumed still
 * unread (its listener filters only peek), so the kernel answers with a TCP RST: clients see
 * "connection reset by peer" (curl exit 56), not an empty reply (curl exit 52, a FIN).
 */
function refuse(socket: Socket): void {
  socket.resetAndDestroy();
}

function missing(path: string): never {
  throw new Error(`ENOENT: no such file or directory, stat '${path}'`);
}

function hasPeerCertificate(tls: TLSSocket): boolean {
  const cert = tls.getPeerCertificate();
  return cert !== null && cert !== undefined && Object.keys(cert).length > 0;
}
