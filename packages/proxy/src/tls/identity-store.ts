import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { createSecureContext, type PeerCertificate, type SecureContext } from 'node:tls';
import { FileWatcher } from '@remora/config';
import type { Logger } from '../logger.ts';
import { certificateInfo, parseCertificates, parseSpiffeId, spiffeIdsOf, verifyCertificateChain, WORKLOAD_FILES } from './certificates.ts';
import { sessionIdContext } from './session-id-context.ts';

/**
 * The workload's identity — certificate chain, private key and root bundle — read from files
 * the way Istio's agent leaves them, and re-read when they change. A set of files is served
 * only once it is consistent (key matches certificate, chain reaches a root, in date); a bad
 * or half-written set is retried briefly, then logged and ignored while the previous identity
 * keeps serving. Listeners and upstream pools build on `secureContext` and `onChange`.
 */

/** Where the identity files are: three explicit files, or a directory with Istio's file names. */
export type IdentityPaths =
  | { readonly certChain: string; readonly key: string; readonly rootCert: string }
  | { readonly dir: string };

/** Istio's locations, first match wins: the agent's SDS file output, then the legacy mount. */
export const DEFAULT_IDENTITY_DIRS: readonly string[] = ['./var/run/secrets/workload-spiffe-credentials', '/etc/certs'];

/** The identity a proxy presents and the roots it trusts; immutable, replaced whole on rotation. */
export interface WorkloadIdentity {
  /** `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`. */
  readonly spiffeId: string;
  /** The SPIFFE ID without `spiffe://`, as AuthorizationPolicy `principals` name it. */
  readonly principal: string;
  readonly trustDomain: string;
  /** '' when the SPIFFE ID's path is not `/ns/<ns>/sa/<sa>`. */
  readonly namespace: string;
  readonly serviceAccount: string;
  /** The leaf and its intermediates, PEM. */
  readonly certChainPem: string;
  readonly keyPem: string;
  readonly rootsPem: string;
  /** The leaf's serial, upper-case hex (node's form). */
  readonly serial: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

export interface IdentityStoreOptions {
  /** File events are coalesced for this long before the files are read (default 100 ms). */
  readonly debounceMs?: number;
  /** An inconsistent set is read again after this long (default 250 ms)… */
  readonly retryMs?: number;
  /** …this many times before it is rejected (default 8: two seconds for a writer to finish). */
  readonly retries?: number;
  /** Directories tried when no paths are given (default DEFAULT_IDENTITY_DIRS). */
  readonly defaultDirs?: readonly string[];
  /** The clock used for validity checks. */
  readonly now?: () => number;
}

type ReadResult =
  | { readonly kind: 'absent' }
  | { readonly kind: 'bad'; readonly reason: string; readonly where: string }
  | { readonly kind: 'ok'; readonly identity: WorkloadIdentity; readonly context: SecureContext; readonly where: string };

const MAX_TIMER_MS = 2 ** 31 - 1;

export class IdentityStore {
  readonly #paths: IdentityPaths | null;
  readonly #log: Logger;
  readonly #debounceMs: number;
  readonly #retryMs: number;
  readonly #retries: number;
  readonly #defaultDirs: readonly string[];
  readonly #now: () => number;
  readonly #listeners = new Set<(id: WorkloadIdentity | null) => void>();
  #watcher: FileWatcher | null = null;
  #current: WorkloadIdentity | null = null;
  #context: SecureContext | null = null;
  #retryTimer: NodeJS.Timeout | null = null;
  #wakeRetry: (() => void) | null = null;
  #expiryTimer: NodeJS.Timeout | null = null;
  #loading: Promise<void> | null = null;
  /** A file event arrived while a load was running: load again when it ends. */
  #again = false;
  #absentLogged = false;
  #closed = false;

  private constructor(paths: IdentityPaths | null, log: Logger, opts: IdentityStoreOptions) {
    // Resolved once: a relative path (Istio's first default is one) means the working directory at start.
    this.#paths = paths === null ? null : 'dir' in paths ? { dir: resolve(paths.dir) } : { certChain: resolve(paths.certChain), key: resolve(paths.key), rootCert: resolve(paths.rootCert) };
    this.#log = log;
    this.#debounceMs = opts.debounceMs ?? 100;
    this.#retryMs = opts.retryMs ?? 250;
    this.#retries = opts.retries ?? 8;
    this.#defaultDirs = (opts.defaultDirs ?? DEFAULT_IDENTITY_DIRS).map((d) => resolve(d));
    this.#now = opts.now ?? Date.now;
  }

  /**
   * Reads the identity (waiting a bounded time for a half-written set to settle) and starts
   * watching. `paths` null: Istio's default directories. No files at all is not an error:
   * `current` stays null (plaintext only) until files appear in a watched directory.
   */
  static async open(paths: IdentityPaths | null, log: Logger, opts: IdentityStoreOptions = {}): Promise<IdentityStore> {
    const store = new IdentityStore(paths, log, opts);
    await store.#watch();
    store.#trigger();
    await store.#loading;
    return store;
  }

  get current(): WorkloadIdentity | null {
    return this.#current;
  }

  /** A tls.SecureContext with this identity's cert+key and the roots as CA (for both server and client sides); rebuilt on rotation. */
  get secureContext(): SecureContext | null {
    return this.#context;
  }

  /** Called after each rotation with the new identity. Returns an unsubscribe. */
  onChange(listener: (id: WorkloadIdentity | null) => void): () => void {
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  /** Re-reads the files now (as a file event would); resolves when the load is done. */
  async reload(): Promise<void> {
    this.#trigger();
    await this.#loading;
  }

  close(): void {
    this.#closed = true;
    for (const t of [this.#retryTimer, this.#expiryTimer]) if (t) clearTimeout(t);
    this.#wakeRetry?.();
    this.#watcher?.close();
    this.#watcher = null;
    this.#listeners.clear();
  }

  /**
   * Watches the files (or the directory holding them) however they are replaced: in place, by
   * rename, by Kubernetes' `..data` symlink swap, or with their directory deleted and made
   * again; a directory that does not exist yet is watched for from its parent.
   */
  async #watch(): Promise<void> {
    const p = this.#paths;
    const targets = p === null ? this.#defaultDirs : 'dir' in p ? [p.dir] : [p.certChain, p.key, p.rootCert];
    if (p !== null && 'dir' in p && !(await stat(p.dir).then((s) => s.isDirectory(), () => false))) {
      this.#log.warn(`identity directory ${p.dir} does not exist yet; watching for it`);
    }
    const names = new Set<string>(Object.values(WORKLOAD_FILES));
    this.#watcher = new FileWatcher(targets, () => this.#trigger(), { debounceMs: this.#debounceMs, isWatchedFile: (n) => names.has(n) });
    await this.#watcher.ready;
  }

  #trigger(): void {
    if (this.#closed) return;
    if (this.#loading) {
      this.#again = true;
      this.#wakeRetry?.(); // a waiting retry reads the new files at once
      return;
    }
    this.#loading = (async () => {
      try {
        do {
          this.#again = false;
          await this.#loadWithRetries();
        } while (this.#again && !this.#closed);
      } catch (err) {
        this.#log.error(`loading the workload identity failed: ${(err as Error).stack ?? String(err)}`);
      } finally {
        this.#loading = null;
      }
    })();
  }

  async #loadWithRetries(): Promise<void> {
    for (let attempt = 0; !this.#closed; attempt++) {
      const r = await this.#read();
      if (this.#closed) return;
      if (r.kind === 'ok') {
        this.#apply(r.identity, r.context, r.where);
        return;
      }
      if (r.kind === 'absent') {
        if (!this.#absentLogged) {
          this.#absentLogged = true;
          if (this.#current) this.#log.warn(`the workload identity files are gone; keeping serial ${this.#current.serial}`);
          else this.#log.info(`no workload identity files (${this.#describePaths()}); TLS with the mesh identity is off until they appear`);
        }
        return;
      }
      // Possibly a writer between two files: read again shortly, then give up with the reason.
      if (attempt >= this.#retries) {
        const keep = this.#current ? `keeping serial ${this.#current.serial}` : 'no workload identity';
        this.#log.error(`rejected the workload identity files in ${r.where}: ${r.reason}; ${keep}`);
        return;
      }
      this.#log.debug(`workload identity files in ${r.where} not usable yet (${r.reason}); reading again in ${this.#retryMs}ms`);
      await new Promise<void>((wake) => {
        this.#wakeRetry = wake;
        this.#retryTimer = setTimeout(wake, this.#retryMs);
      });
      this.#wakeRetry = null;
      this.#retryTimer = null;
      if (this.#again) return; // a newer event: the outer loop reads afresh
    }
  }

  #describePaths(): string {
    const p = this.#paths;
    if (p === null) return `looked in ${this.#defaultDirs.join(', ')}`;
    if ('dir' in p) return `looked in ${p.dir}`;
    return `looked for ${p.certChain}, ${p.key}, ${p.rootCert}`;
  }

  /** The three files to read, or null when none of the default directories has them all. */
  async #files(): Promise<{ certChain: string; key: string; rootCert: string; where: string } | null> {
    const inDir = (dir: string) => ({
      certChain: join(dir, WORKLOAD_FILES.certChain),
      key: join(dir, WORKLOAD_FILES.key),
      rootCert: join(dir, WORKLOAD_FILES.rootCert),
      where: dir,
    });
    const p = this.#paths;
    if (p === null) {
      for (const dir of this.#defaultDirs) {
        const f = inDir(dir);
        const present = await Promise.all([f.certChain, f.key, f.rootCert].map((x) => stat(x).then((s) => s.isFile(), () => false)));
        if (present.every(Boolean)) return f;
      }
      return null;
    }
    if ('dir' in p) return inDir(p.dir);
    return { ...p, where: dirname(p.certChain) };
  }

  async #read(): Promise<ReadResult> {
    const files = await this.#files();
    if (files === null) return { kind: 'absent' };
    const { where } = files;
    const texts = await Promise.all(
      [files.certChain, files.key, files.rootCert].map((f) =>
        readFile(f, 'utf8').then(
          (text) => ({ f, text, missing: false }),
          (err: NodeJS.ErrnoException) => ({ f, text: '', missing: err.code === 'ENOENT' || err.code === 'ENOTDIR', err }),
        ),
      ),
    );
    if (texts.every((t) => t.missing)) return { kind: 'absent' };
    this.#absentLogged = false;
    const failed = texts.find((t) => 'err' in t);
    if (failed && 'err' in failed) return { kind: 'bad', reason: `cannot read ${failed.f}: ${failed.err.message}`, where };
    const [chainText, keyText, rootsText] = texts.map((t) => t.text) as [string, string, string];
    const cur = this.#current;
    if (cur && cur.certChainPem === chainText && cur.keyPem === keyText && cur.rootsPem === rootsText) {
      return { kind: 'ok', identity: cur, context: this.#context!, where };
    }
    const checked = validate(chainText, keyText, rootsText, new Date(this.#now()));
    if (typeof checked === 'string') return { kind: 'bad', reason: checked, where };
    let context: SecureContext;
    try {
      // Served to mesh peers, whose certificates are always required and verified against the
      // roots: the session id context lets their pools resume sessions (see sessionIdContext).
      context = createSecureContext({ cert: chainText, key: keyText, ca: rootsText, minVersion: 'TLSv1.2', sessionIdContext: sessionIdContext('ISTIO_MUTUAL', rootsText) });
    } catch (err) {
      return { kind: 'bad', reason: `TLS rejects the files: ${(err as Error).message}`, where };
    }
    return { kind: 'ok', identity: checked, context, where };
  }

  #apply(identity: WorkloadIdentity, context: SecureContext, where: string): void {
    const previous = this.#current;
    if (previous === identity) return;
    this.#current = identity;
    this.#context = context;
    if (previous === null) {
      this.#log.info(`workload identity ${identity.spiffeId} (serial ${identity.serial}, valid until ${identity.notAfter.toISOString()}) from ${where}`);
    } else {
      const what = previous.serial === identity.serial ? `roots or chain updated (serial ${identity.serial})` : `serial ${previous.serial} → ${identity.serial}`;
      this.#log.info(`workload certificate rotated: ${identity.spiffeId}, ${what}, valid until ${identity.notAfter.toISOString()}`);
    }
    this.#armExpiryWarning(identity);
    for (const l of [...this.#listeners]) {
      try {
        l(identity);
      } catch (err) {
        this.#log.error(`an identity change listener failed: ${(err as Error).stack ?? String(err)}`);
      }
    }
  }

  /** Says so in the log when the served certificate runs out without a replacement. */
  #armExpiryWarning(identity: WorkloadIdentity): void {
    if (this.#expiryTimer) clearTimeout(this.#expiryTimer);
    this.#expiryTimer = null;
    const ms = identity.notAfter.getTime() - this.#now();
    if (ms <= 0 || ms > MAX_TIMER_MS) return;
    this.#expiryTimer = setTimeout(() => {
      this.#expiryTimer = null;
      if (this.#current === identity) {
        this.#log.error(`the workload certificate (serial ${identity.serial}) expired at ${identity.notAfter.toISOString()} and no new one was written; peers will refuse it`);
      }
    }, ms);
    this.#expiryTimer.unref();
  }
}

/** Checks a set of files; returns the identity, or the reason it cannot be served. */
function validate(chainText: string, keyText: string, rootsText: string, now: Date): WorkloadIdentity | string {
  let chain: X509Certificate[];
  let roots: X509Certificate[];
  try {
    chain = parseCertificates(chainText);
  } catch (err) {
    return `${WORKLOAD_FILES.certChain} does not parse: ${(err as Error).message}`;
  }
  if (chain.length === 0) return `${WORKLOAD_FILES.certChain} holds no certificate`;
  try {
    roots = parseCertificates(rootsText);
  } catch (err) {
    return `${WORKLOAD_FILES.rootCert} does not parse: ${(err as Error).message}`;
  }
  if (roots.length === 0) return `${WORKLOAD_FILES.rootCert} holds no certificate`;
  const leaf = chain[0]!;
  let key;
  try {
    key = createPrivateKey(keyText);
  } catch (err) {
    return `${WORKLOAD_FILES.key} does not parse: ${(err as Error).message}`;
  }
  if (!leaf.checkPrivateKey(key)) return `the private key does not match the certificate (serial ${leaf.serialNumber})`;
  const chainProblem = verifyCertificateChain(chain, roots, now);
  if (chainProblem !== null) return chainProblem;
  const spiffeId = spiffeIdOf(leaf);
  if (spiffeId === null) return `the certificate (serial ${leaf.serialNumber}) has no spiffe:// URI SAN`;
  const parts = parseSpiffeId(spiffeId)!;
  const info = certificateInfo(leaf);
  return {
    spiffeId,
    principal: spiffeId.slice('spiffe://'.length),
    trustDomain: parts.trustDomain,
    namespace: parts.namespace,
    serviceAccount: parts.serviceAccount,
    certChainPem: chainText,
    keyPem: keyText,
    rootsPem: rootsText,
    serial: info.serial,
    notBefore: info.notBefore,
    notAfter: info.notAfter,
  };
}

/** The certificate's SPIFFE ID (its `spiffe://…` URI SAN); null if none. Takes a TLS peer certificate or an X509Certificate. */
export function spiffeIdOf(cert: PeerCertificate | X509Certificate | null | undefined): string | null {
  return spiffeIdsOf(cert)[0] ?? null;
}

/**
 * A verified peer's identity as AuthorizationPolicy sees it: `spiffe://cluster.local/ns/x/sa/y`
 * → principal `cluster.local/ns/x/sa/y`, namespace `x`. A SPIFFE ID of another shape keeps its
 * principal with namespace ''; anything else is null.
 */
export function peerIdentityFromSpiffe(id: string): { principal: string; namespace: string } | null {
  const parts = parseSpiffeId(id);
  if (parts === null) return null;
  return { principal: id.slice('spiffe://'.length), namespace: parts.namespace };
}
