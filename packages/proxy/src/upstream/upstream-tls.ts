import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { checkServerIdentity, connect as tlsConnect, createSecureContext, type ConnectionOptions, type PeerCertificate, type SecureContext, type TLSSocket } from 'node:tls';
import { buildConnector } from 'undici';
import type { Cluster, Endpoint, UpstreamTls } from '@remora/config';
import { parseSubjectAltNames, spiffeIdsOf } from '../tls/certificates.ts';
import { fileStamp } from '../tls/file-stamp.ts';
import type { IdentityStore, WorkloadIdentity } from '../tls/identity-store.ts';
import { isConnectErrorCode } from './connect-errors.ts';

/**
 * TLS origination to upstream hosts (Envoy's UpstreamTlsContext, as Istio builds it from a
 * DestinationRule's `tls`; certificate files are re-read when they change, as Istio's file SDS does). One `UpstreamTlsSettings` per distinct setting, compiled when a
 * cluster is prepared and shared by every pool that uses it; it is part of the pool key, so
 * a changed setting builds new pools while old connections drain.
 *
 * - SIMPLE / MUTUAL: verify the server against `caCertificates` (system roots without), then
 *   its SANs: any SAN equal to one of `subjectAltNames`, else the host name check against the
 *   SNI. SNI is `sni`, else the service host. MUTUAL presents the client certificate.
 * - ISTIO_MUTUAL: the workload identity's certificate and roots; the server must chain to the
 *   mesh roots and carry a SPIFFE ID listed in `subjectAltNames` (by default the service's
 *   accounts, for auto mTLS too), else — a service with no account named — any SPIFFE ID of
 *   this proxy's trust domain. SNI `outbound_.<port>_.<subset>_.<host>` as Istio sets it. A rotated
 *   identity is used by the next new connection (a new connector: resumed sessions of the old
 *   certificate must not carry the old peer identity over).
 *
 * Handshake and verification failures surface as errors whose `code` is Envoy's
 * `%UPSTREAM_TRANSPORT_FAILURE_REASON%` (`TLS_error:|…:TLS_error_end`); they are connect failures.
 */

/** Endpoint label by which Istio marks workloads that have a sidecar (auto mTLS targets). */
export const TLS_MODE_LABEL = 'security.istio.io/tlsMode';

/** Sessions kept per connector for TLS resumption (undici's default is 100). */
const MAX_CACHED_SESSIONS = 100;

/** What a pool needs to connect over TLS. */
export interface ConnectorBase {
  readonly connectTimeoutMs: number;
  /** HTTP/2 by ALPN (`h2`), never h2c over TLS. */
  readonly http2: boolean;
  /** TCP keepalive idle time; 0 or absent: undici's default. */
  readonly keepaliveTimeMs?: number;
  /** Told of each verified connection (the server certificate's SPIFFE ID reaches Istio's `destination_principal`). */
  readonly onSecure?: (socket: TLSSocket) => void;
}

/** A connect error that carries Envoy's transport failure reason as its code. */
export class UpstreamTlsError extends Error {
  override readonly name = 'UpstreamTlsError';
  readonly code: string;
  constructor(reason: string, detail: string, cause?: unknown) {
    super(`${reason}: ${detail}`, cause === undefined ? undefined : { cause });
    this.code = `TLS_error:|${reason}:${detail}:TLS_error_end`;
  }
}

/** The compiled TLS settings of one (cluster, endpoint kind): a pool key part and a connector factory. */
export class UpstreamTlsSettings {
  readonly key: string;
  readonly mode: 'SIMPLE' | 'MUTUAL' | 'ISTIO_MUTUAL';
  /** The SNI sent, and the name a server certificate is checked against when no SANs are listed. */
  readonly servername: string;
  /** Set for auto mTLS (ISTIO_MUTUAL chosen by endpoint label, not by a DestinationRule). */
  readonly auto: boolean;
  readonly #spec: UpstreamTls;
  readonly #identity: IdentityStore | null;
  readonly #trustDomain: string;
  /** The options last built, and the identity they were built for (null for file-based settings). */
  #cached: { readonly for: WorkloadIdentity | null; readonly options: TlsOptions; readonly stamp: string } | null = null;
  /**
   * TLS alerts of open connections by local port. A TLS 1.3 server refuses our certificate
   * after our side of the handshake is done; undici then reports only "other side closed",
   * so the alert is kept here for `explain` until the connection is gone.
   */
  readonly #alerts = new Map<number, UpstreamTlsError>();

  constructor(spec: UpstreamTls & { mode: 'SIMPLE' | 'MUTUAL' | 'ISTIO_MUTUAL' }, servername: string, identity: IdentityStore | null, trustDomain: string, auto: boolean) {
    this.mode = spec.mode;
    this.#spec = spec;
    this.servername = servername;
    this.#identity = identity;
    this.#trustDomain = trustDomain;
    this.auto = auto;
    this.key = JSON.stringify([spec.mode, servername, spec.subjectAltNames, spec.insecureSkipVerify, spec.caCertificates, spec.clientCertificate, spec.privateKey]);
  }

  /** A connector for one pool: undici's (session cache, connect timeout, keep-alive) with these settings. */
  connector(base: ConnectorBase): buildConnector.connector {
    // Rebuilt when the TLS options change (a rotated identity): a new session cache, so no
    // session of the old certificate is resumed.
    let builtFrom: TlsOptions | null = null;
    let inner: buildConnector.connector | null = null;
    const timeout = base.connectTimeoutMs;
    const servername = this.servername;
    return (opts, callback) => {
      const o = this.#options();
      if (o instanceof Error) {
        callback(o, null);
        return;
      }
      if (o !== builtFrom || inner === null) {
        builtFrom = o;
        inner = buildConnector({
          timeout,
          allowH2: base.http2,
          maxCachedSessions: MAX_CACHED_SESSIONS,
          minVersion: 'TLSv1.2',
          ...(base.keepaliveTimeMs ? { keepAlive: true, keepAliveInitialDelay: base.keepaliveTimeMs } : {}),
          ...o,
        });
      }
      inner({ ...opts, servername }, (err, socket) => {
        if (err) {
          callback(asTlsError(err), null);
          return;
        }
        this.#watchAlerts(socket!);
        base.onSecure?.(socket as TLSSocket);
        callback(null, socket!);
      });
    };
  }

  /**
   * A raw TLS connection (HTTP/1.1 by ALPN) for upgraded requests, which leave the pools; it
   * emits 'secureConnect' once verified. An Error when the settings cannot be used.
   */
  connectRaw(host: string, port: number): TLSSocket | Error {
    const o = this.#options();
    if (o instanceof Error) return o;
    // allowHalfOpen is passed on to the TLSSocket by tls.connect, though not in its types: a tunnel half-closes.
    const s = tlsConnect({ ...o, host, port, servername: this.servername, ALPNProtocols: ['http/1.1'], minVersion: 'TLSv1.2', allowHalfOpen: true } as ConnectionOptions);
    s.setNoDelay(true);
    this.#watchAlerts(s);
    return s;
  }

  /**
   * A TLS connection for TCP proxying, offering `alpn` (none: no ALPN); it emits
   * 'secureConnect' once verified. An Error when the settings cannot be used.
   */
  connectTcp(host: string, port: number, alpn: readonly string[], localAddress: string | undefined): TLSSocket | Error {
    const o = this.#options();
    if (o instanceof Error) return o;
    const s = tlsConnect({
      ...o,
      host,
      port,
      servername: this.servername,
      ...(alpn.length > 0 ? { ALPNProtocols: [...alpn] } : {}),
      minVersion: 'TLSv1.2',
      allowHalfOpen: true,
      ...(localAddress !== undefined ? { localAddress } : {}),
    } as ConnectionOptions);
    this.#watchAlerts(s);
    return s;
  }

  /** The TLS failure behind a request error on a connection of these settings; null if it was none. */
  explain(err: Error): UpstreamTlsError | null {
    const direct = tlsFailure(err);
    if (direct !== null) return direct;
    const socket = (err as { code?: string; socket?: { localPort?: number } }).socket;
    if ((err as { code?: string }).code === 'UND_ERR_SOCKET' && socket?.localPort !== undefined) return this.#alerts.get(socket.localPort) ?? null;
    return null;
  }

  #watchAlerts(socket: Socket): void {
    const alerts = this.#alerts;
    let port = socket.localPort ?? 0;
    socket.once('secureConnect', () => (port = socket.localPort ?? 0));
    socket.on('error', (e: Error) => {
      const f = tlsFailure(e);
      if (f !== null && port !== 0 && !alerts.has(port)) alerts.set(port, f);
    });
    // Removed after undici has failed the request on close (the same tick).
    socket.once('close', () => setImmediate(() => alerts.delete(port)));
  }

  /** The tls.connect options of the moment: per identity for ISTIO_MUTUAL, from the files once they read. */
  #options(): TlsOptions | Error {
    if (this.mode === 'ISTIO_MUTUAL') {
      const id = this.#identity?.current ?? null;
      const cached = this.#cached;
      if (cached !== null && cached.for === id) return cached.options;
      const ctx = id === null ? null : this.#identity!.secureContext;
      if (id === null || ctx === null) return new UpstreamTlsError('NO_WORKLOAD_IDENTITY', 'ISTIO_MUTUAL needs the workload certificate, and this proxy has none');
      const allowed = this.#spec.subjectAltNames;
      const trustDomain = id.trustDomain || this.#trustDomain;
      const options: TlsOptions = {
        secureContext: ctx,
        rejectUnauthorized: true,
        checkServerIdentity: (_host: string, cert: PeerCertificate) => checkSpiffe(cert, allowed, trustDomain),
      };
      this.#cached = { for: id, options, stamp: '' };
      return options;
    }
    // Files are served as Istio serves them (over SDS, watched): a changed file is read again
    // for the next new connection. A stat per new connection, never per request.
    const stamp = this.#stamp();
    if (this.#cached !== null && this.#cached.stamp === stamp) return this.#cached.options;
    // Not cached on failure: the files may appear later, and the next connection reads again.
    const files = this.#files();
    if (files instanceof Error) return files;
    const spec = this.#spec;
    const skip = spec.insecureSkipVerify;
    const sans = spec.subjectAltNames;
    let secureContext: SecureContext;
    try {
      secureContext = createSecureContext({ ...files, minVersion: 'TLSv1.2' });
    } catch (err) {
      return new UpstreamTlsError('BAD_CREDENTIALS', `the TLS settings of this cluster are unusable: ${(err as Error).message}`);
    }
    const options: TlsOptions = {
      secureContext,
      rejectUnauthorized: !skip,
      checkServerIdentity: skip
        ? () => undefined
        : sans.length > 0
          ? (_host: string, cert: PeerCertificate) => checkSans(cert, sans)
          : (host: string, cert: PeerCertificate) => checkHostname(host, cert),
    };
    this.#cached = { for: null, options, stamp };
    return options;
  }

  /** Stamps of the configured files, to notice a rewrite (however the file was replaced). */
  #stamp(): string {
    const spec = this.#spec;
    let out = '';
    for (const f of [spec.insecureSkipVerify ? null : spec.caCertificates, spec.mode === 'MUTUAL' ? spec.clientCertificate : null, spec.mode === 'MUTUAL' ? spec.privateKey : null]) {
      if (f === null) continue;
      out += `${fileStamp(f) ?? '-'}|`;
    }
    return out;
  }

  /** The PEM texts of the configured files; an Error naming the file that cannot be read. */
  #files(): { ca?: string; cert?: string; key?: string } | Error {
    const spec = this.#spec;
    const out: { ca?: string; cert?: string; key?: string } = {};
    const read = (path: string): string | Error => {
      try {
        return readFileSync(path, 'utf8');
      } catch (err) {
        return new UpstreamTlsError('CREDENTIALS_UNAVAILABLE', `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    };
    if (spec.caCertificates !== null && !spec.insecureSkipVerify) {
      const ca = read(spec.caCertificates);
      if (ca instanceof Error) return ca;
      out.ca = ca;
    }
    if (spec.mode === 'MUTUAL') {
      if (spec.clientCertificate === null || spec.privateKey === null) {
        return new UpstreamTlsError('CREDENTIALS_UNAVAILABLE', 'MUTUAL needs clientCertificate and privateKey (or credentialName)');
      }
      const cert = read(spec.clientCertificate);
      if (cert instanceof Error) return cert;
      const key = read(spec.privateKey);
      if (key instanceof Error) return key;
      out.cert = cert;
      out.key = key;
    }
    return out;
  }
}

/** What differs between settings in the options of tls.connect. */
interface TlsOptions {
  readonly secureContext: SecureContext;
  readonly rejectUnauthorized: boolean;
  readonly checkServerIdentity: (host: string, cert: PeerCertificate) => Error | undefined;
}

/** Envoy's SAN matcher: any SAN (DNS, URI, IP, email) exactly equal to one of `allowed`. */
function checkSans(cert: PeerCertificate, allowed: readonly string[]): Error | undefined {
  const sans = parseSubjectAltNames(cert.subjectaltname);
  for (const s of sans) if (allowed.includes(s.value)) return undefined;
  return verifyFailed(`server certificate SANs [${sans.map((s) => s.value).join(', ')}] match none of [${allowed.join(', ')}]`);
}

function checkHostname(host: string, cert: PeerCertificate): Error | undefined {
  const err = checkServerIdentity(host, cert);
  return err === undefined ? undefined : verifyFailed(err.message);
}

/** ISTIO_MUTUAL: the server's SPIFFE ID is one listed, or (none listed) any ID of the trust domain. */
function checkSpiffe(cert: PeerCertificate, allowed: readonly string[], trustDomain: string): Error | undefined {
  const ids = spiffeIdsOf(cert);
  if (allowed.length > 0) {
    for (const id of ids) if (allowed.includes(id)) return undefined;
    return verifyFailed(`server SPIFFE ID [${ids.join(', ')}] is none of [${allowed.join(', ')}]`);
  }
  const prefix = `spiffe://${trustDomain}/`;
  for (const id of ids) if (id.startsWith(prefix)) return undefined;
  return verifyFailed(ids.length === 0 ? 'server certificate has no SPIFFE ID' : `server SPIFFE ID [${ids.join(', ')}] is not in trust domain ${trustDomain}`);
}

function verifyFailed(detail: string): Error {
  const e = new Error(detail) as Error & { code: string };
  e.code = 'CERTIFICATE_VERIFY_FAILED';
  return e;
}

/** Node's certificate-chain error codes (X509_V_ERR_* names), all of which BoringSSL reports as CERTIFICATE_VERIFY_FAILED. */
const CHAIN_ERRORS = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'INVALID_CA',
  'INVALID_PURPOSE',
  'PATH_LENGTH_EXCEEDED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'HOSTNAME_MISMATCH',
]);

/**
 * A failure during or right after the TLS handshake → an `UpstreamTlsError`; null when it is
 * not a TLS failure. Exported for the request path, which sees errors of TLS 1.3 alerts that
 * arrive after the client finished its side of the handshake (a server refusing our certificate).
 */
export function tlsFailure(err: Error): UpstreamTlsError | null {
  if (err instanceof UpstreamTlsError) return err;
  const code = (err as { code?: string }).code ?? '';
  if (code === 'CERTIFICATE_VERIFY_FAILED' || CHAIN_ERRORS.has(code)) return new UpstreamTlsError('CERTIFICATE_VERIFY_FAILED', `${code === 'CERTIFICATE_VERIFY_FAILED' ? '' : `${code} `}${err.message}`, err);
  if (code.startsWith('ERR_SSL_')) {
    // ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE → SSLV3_ALERT_HANDSHAKE_FAILURE, as OpenSSL names the reason.
    const e = err as Error & { library?: string; reason?: string };
    const detail = e.reason ? `${e.library ?? 'SSL routines'}:${e.reason}` : err.message.replace(/\s+/g, ' ').trim();
    return new UpstreamTlsError(code.slice('ERR_SSL_'.length), detail, err);
  }
  return null;
}

/** Plain connect errors stay as they are (refused, unreachable, timeout); TLS ones get Envoy's reason. */
export function asTlsError(err: Error): Error {
  const code = (err as { code?: string }).code ?? '';
  if (isConnectErrorCode(code)) return err;
  // A reset or close in the middle of the handshake is a TLS failure too (Envoy: connection termination during handshake).
  return tlsFailure(err) ?? new UpstreamTlsError('HANDSHAKE_FAILED', `${code || err.name}: ${err.message}`, err);
}

/**
 * Which TLS an endpoint of `cluster` gets: the DestinationRule's, else auto mTLS (ISTIO_MUTUAL
 * for endpoints labelled `security.istio.io/tlsMode: istio` when this proxy has an identity),
 * else none. Compiled settings are cached by key in `cache` so that hosts share them.
 */
export function tlsForEndpoint(
  cluster: Cluster,
  endpoint: Endpoint,
  identity: IdentityStore | null,
  trustDomain: string,
  cache: Map<string, UpstreamTlsSettings>,
): UpstreamTlsSettings | null {
  const spec = cluster.tls;
  if (spec !== null) {
    if (spec.mode === 'DISABLE') return null;
    return settingsFor(cluster, { ...spec, mode: spec.mode }, identity, trustDomain, false, cache);
  }
  if (identity === null || identity.current === null || endpoint.labels[TLS_MODE_LABEL] !== 'istio') return null;
  // Istio's auto mTLS expects the server to be one of the service's accounts, not any identity of the mesh.
  return settingsFor(cluster, cluster.serviceAccounts.length === 0 ? AUTO_MTLS : { ...AUTO_MTLS, subjectAltNames: cluster.serviceAccounts }, identity, trustDomain, true, cache);
}

const AUTO_MTLS: UpstreamTls & { mode: 'ISTIO_MUTUAL' } = {
  mode: 'ISTIO_MUTUAL',
  clientCertificate: null,
  privateKey: null,
  caCertificates: null,
  subjectAltNames: [],
  sni: null,
  insecureSkipVerify: false,
};

function settingsFor(
  cluster: Cluster,
  spec: UpstreamTls & { mode: 'SIMPLE' | 'MUTUAL' | 'ISTIO_MUTUAL' },
  identity: IdentityStore | null,
  trustDomain: string,
  auto: boolean,
  cache: Map<string, UpstreamTlsSettings>,
): UpstreamTlsSettings {
  const svc = cluster.service;
  let servername = spec.sni ?? '';
  if (servername === '') {
    if (spec.mode === 'ISTIO_MUTUAL') {
      // Istio: the SNI of in-mesh mTLS names the cluster, `outbound_.<port>_.<subset>_.<host>`.
      servername = svc !== null ? `outbound_.${svc.port}_.${cluster.subset}_.${svc.host}` : cluster.name;
    } else {
      servername = svc?.host ?? cluster.endpoints[0]?.address ?? '';
    }
  }
  const probe = new UpstreamTlsSettings(spec, servername, identity, trustDomain, auto);
  const key = `${probe.key}|${auto}`;
  const hit = cache.get(key);
  if (hit !== undefined) return hit;
  cache.set(key, probe);
  return probe;
}
