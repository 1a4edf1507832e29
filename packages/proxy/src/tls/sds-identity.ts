/**
 * The workload identity from Istio's agent over SDS, as Envoy gets it: the agent serves
 * `envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets` (state of the world; it
 * answers `DeltaSecrets` with UNIMPLEMENTED and serves no ADS there) on its Unix socket
 * `./var/run/secrets/workload-spiffe-uds/socket`, the bootstrap's static cluster `sds-grpc`.
 * The client subscribes to the secrets istiod's listeners and clusters name — `default`
 * (certificate chain and key) and `ROOTCA` (the mesh roots) — and hands each push to a
 * pushed {@link IdentityStore}: accepted, it is served to the next handshake and ACKed; a
 * secret that does not read (bad PEM, key not matching the certificate, no SPIFFE ID,
 * expired) is NACKed with the reason while the identity held keeps serving. When the agent
 * is away the identity is kept and the stream reconnects with Envoy's backoff.
 *
 * Loaded only when SDS is used: the xDS client and Envoy's descriptors cost about 0.3 s.
 */
import type { DataSource } from '@remora/config/envoy/gen/envoy/config/core/v3/base_pb.js';
import type { NodeJson } from '@remora/config/envoy/gen/envoy/config/core/v3/base_pb.js';
import type { Secret } from '@remora/config/envoy/gen/envoy/extensions/transport_sockets/tls/v3/secret_pb.js';
import type { CertificateValidationContext, TlsCertificate } from '@remora/config/envoy/gen/envoy/extensions/transport_sockets/tls/v3/common_pb.js';
import { AdsClient, TypeUrl, XdsStats, type BackoffOptions, type XdsResource, type XdsVerdict } from '@remora/xds';
import type { Logger } from '../logger.ts';
import type { IdentityStore, PushedIdentity } from './identity-store.ts';

/** istiod's SDS names: the workload certificate and key, and the mesh roots. */
export const WORKLOAD_SECRET = 'default';
export const ROOT_SECRET = 'ROOTCA';

export interface SdsIdentityOptions {
  /** gRPC target: `unix:./var/run/secrets/workload-spiffe-uds/socket`, `127.0.0.1:15012`. */
  readonly target: string;
  /** The node sent on the stream (Envoy sends the bootstrap's). */
  readonly node: NodeJson;
  /** Reconnect backoff (Envoy's jittered 500 ms to 30 s unless given). */
  readonly backoff?: BackoffOptions;
}

const CERT_NAMES = {
  certChain: `Secret ${WORKLOAD_SECRET}: tlsCertificate.certificateChain`,
  key: `Secret ${WORKLOAD_SECRET}: tlsCertificate.privateKey`,
  rootCert: `Secret ${ROOT_SECRET}: validationContext.trustedCa`,
} as const;

export class SdsIdentity {
  readonly client: AdsClient;
  readonly stats = new XdsStats();
  readonly #store: IdentityStore;
  readonly #log: Logger;
  readonly #where: string;
  #waiters = new Set<() => void>();
  #unsubscribe: (() => void) | null = null;

  /** `store` must be a pushed store (`IdentityStore.pushed`). */
  constructor(store: IdentityStore, opts: SdsIdentityOptions, log: Logger) {
    this.#store = store;
    this.#log = log;
    this.#where = `SDS ${opts.target}`;
    this.client = new AdsClient({
      target: opts.target,
      apiType: 'GRPC',
      service: 'secret',
      node: opts.node,
      // Istio's sdsConfig: `set_node_on_first_message_only: true`.
      setNodeOnFirstMessageOnly: true,
      wildcard: [],
      onResources: (typeUrl, resources) => this.#onSecrets(typeUrl, resources),
      logger: { debug: (m) => log.debug(`sds: ${m}`), info: (m) => log.info(`sds: ${m}`), warn: (m) => log.warn(`sds: ${m}`) },
      stats: this.stats,
      ...(opts.backoff ? { backoff: opts.backoff } : {}),
    });
    this.client.subscribe(TypeUrl.Secret, [WORKLOAD_SECRET, ROOT_SECRET]);
  }

  start(): void {
    this.#unsubscribe ??= this.#store.onChange(() => this.#wake());
    this.client.start();
  }

  /**
   * Resolves true once the store serves an identity; false when `timeoutMs` passes first
   * (0: no limit) or the client is closed.
   */
  ready(timeoutMs: number): Promise<boolean> {
    if (this.#store.current !== null) return Promise.resolve(true);
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | null = null;
      const done = (): void => {
        if (timer !== null) clearTimeout(timer);
        this.#waiters.delete(done);
        resolve(this.#store.current !== null);
      };
      this.#waiters.add(done);
      if (timeoutMs > 0) timer = setTimeout(done, timeoutMs);
    });
  }

  close(): void {
    this.client.close();
    this.#unsubscribe?.();
    this.#unsubscribe = null;
    this.#wake();
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }

  #onSecrets(typeUrl: string, resources: readonly XdsResource[]): XdsVerdict {
    if (typeUrl !== TypeUrl.Secret) return { ok: false, message: `${typeUrl}: not a secret; this stream takes ${TypeUrl.Secret} only` };
    const pushed: { certChainPem?: string; keyPem?: string; rootsPem?: string } = {};
    const problems: string[] = [];
    for (const r of resources) {
      const secret = r.message as Secret;
      const read = r.name === WORKLOAD_SECRET ? readCertificate(secret) : r.name === ROOT_SECRET ? readRoots(secret) : null;
      if (read === null) continue; // not asked for: the client drops those before this
      if (typeof read === 'string') problems.push(`Secret ${r.name}: ${read}`);
      else {
        for (const w of read.warnings) this.#log.warn(`sds: Secret ${r.name}: ${w}`);
        Object.assign(pushed, read.parts);
      }
    }
    if (problems.length > 0) {
      const message = problems.join('; ');
      const keep = this.#store.current ? `keeping serial ${this.#store.current.serial}` : 'no workload identity yet';
      this.#log.error(`rejected the workload identity from ${this.#where}: ${message}; ${keep}`);
      return { ok: false, message };
    }
    if (Object.keys(pushed).length === 0) return { ok: true };
    const refused = this.#store.update(pushed as PushedIdentity, this.#where, CERT_NAMES);
    return refused === null ? { ok: true } : { ok: false, message: refused };
  }
}

type Read = { readonly parts: PushedIdentity; readonly warnings: readonly string[] } | string;

/** `default`: a `tlsCertificate` with the chain and the key inline, as the agent sends it. */
function readCertificate(secret: Secret): Read {
  if (secret.type.case !== 'tlsCertificate') return `must be a tlsCertificate, not ${secret.type.case ?? 'empty'}`;
  const c: TlsCertificate = secret.type.value;
  if (c.privateKeyProvider !== undefined) return 'tlsCertificate.privateKeyProvider: private key providers (CryptoMB, QAT) are not supported; the key must be inline';
  const chain = inline(c.certificateChain, 'tlsCertificate.certificateChain');
  if ('problem' in chain) return chain.problem;
  const key = inline(c.privateKey, 'tlsCertificate.privateKey');
  if ('problem' in key) return key.problem;
  const warnings: string[] = [];
  if (c.password !== undefined) warnings.push('tlsCertificate.password: not supported; the key must be unencrypted');
  if (c.ocspStaple !== undefined) warnings.push('tlsCertificate.ocspStaple: ignored');
  if (c.watchedDirectory !== undefined) warnings.push('tlsCertificate.watchedDirectory: ignored (the data is inline)');
  return { parts: { certChainPem: chain.text, keyPem: key.text }, warnings };
}

/** `ROOTCA`: a `validationContext` with the trusted CAs inline. */
function readRoots(secret: Secret): Read {
  if (secret.type.case !== 'validationContext') return `must be a validationContext, not ${secret.type.case ?? 'empty'}`;
  const v: CertificateValidationContext = secret.type.value;
  const roots = inline(v.trustedCa, 'validationContext.trustedCa');
  if ('problem' in roots) return roots.problem;
  const warnings: string[] = [];
  // Istio adds the plugged-in CA's CRL (a file) when it has one: mTLS still verifies against the roots.
  if (v.crl !== undefined) warnings.push('validationContext.crl: certificate revocation lists are not enforced');
  return { parts: { rootsPem: roots.text }, warnings };
}

/** A DataSource's text when it is inline (bytes or string), as Istio's agent sends it; else why it cannot be used. */
function inline(source: DataSource | undefined, field: string): { readonly text: string } | { readonly problem: string } {
  const s = source?.specifier;
  if (s === undefined || s.case === undefined) return { problem: `${field}: missing` };
  if (s.case === 'inlineBytes') return { text: Buffer.from(s.value.buffer, s.value.byteOffset, s.value.byteLength).toString('utf8') };
  if (s.case === 'inlineString') return { text: s.value };
  return { problem: `${field}.${s.case}: not supported over SDS; the data must be inline (inlineBytes or inlineString)` };
}
