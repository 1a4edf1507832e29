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
 *
 * Or pushed (`IdentityStore.pushed`): the certificate and the roots arrive as Envoy's SDS
 * secrets `default` and `ROOTCA` from Istio's agent (see sds-identity.ts) and are handed to
 * `update`, which checks them the same way and answers with the reason a bad one is refused.
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

/** Parts of an identity pushed to a store: the certificate chain with its key, the roots, or both. */
export interface PushedIdentity {
  readonly certChainPem?: string;
  readonly keyPem?: string;
  readonly rootsPem?: string;
}

/** How the parts of a pushed identity are named in the reasons `update` gives (default: Istio's file names). */
export interface PushedNames {
  readonly certChain: string;
  readonly key: string;
  readonly rootCert: string;
}

/** What a pushed store holds of each part, as accepted (PEM and parsed). */
interface PushedParts {
  readonly certChainPem: string | null;
  readonly keyPem: string | null;
  readonly pair: KeyPair | null;
  readonly rootsPem: string | null;
  readonly roots: readonly X509Certificate[] | null;
}

type ReadResult =
  | { readonly kind: 'absent' }
  | { readonly kind: 'bad'; readonly reason: string; readonly where: string }
  | { readonly kind: 'ok'; readonly identity: WorkloadIdentity; readonly context: SecureContext; readonly where: string };

const MAX_TIMER_MS = 2 ** 31 - 1;

export class IdentityStore {
  readonly #paths: IdentityPaths | null;
  /** Pushed: no files; the identity comes through `update`. */
  readonly #pushed: boolean;
  /** Pushed parts accepted so far (the certificate and the roots may come one at a time). */
  #pushedParts: PushedParts = { certChainPem: null, keyPem: null, pair: null, rootsPem: null, roots: null };
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

  private constructor(paths: IdentityPaths | null, log: Logger, opts: IdentityStoreOptions, pushed = false) {
    this.#pushed = pushed;
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

  /**
   * A store whose identity is pushed to it (`update`) instead of read from files: empty
   * (plaintext only) until both the certificate and the roots have arrived.
   */
  static pushed(log: Logger, opts: IdentityStoreOptions = {}): IdentityStore {
    return new IdentityStore(null, log, opts, true);
  }

  /**
   * Takes pushed parts — the certificate chain with its key, the roots, or both at once — and
   * serves the identity they make with what was pushed before. The parts are checked as the
   * files are (parse, key matches certificate, in date, a SPIFFE ID); a part that fails is
   * refused whole, logged with the reason, and returned as it, while the identity held keeps
   * serving. A certificate that does not chain to the roots is served with a warning, as
   * Envoy serves SDS secrets it is given: the roots may be rotated a push before or after it.
   */
  update(pushed: PushedIdentity, where: string, names: PushedNames = WORKLOAD_FILES): string | null {
    if (!this.#pushed) throw new Error('update: this identity store reads files');
    if (this.#closed) return 'the identity store is closed';
    const refuse = (reason: string): string => {
      const keep = this.#current ? `keeping serial ${this.#current.serial}` : 'no workload identity yet';
      this.#log.error(`rejected the workload identity from ${where}: ${reason}; ${keep}`);
      return reason;
    };
    const now = new Date(this.#now());
    const hasChain = pushed.certChainPem !== undefined;
    if (hasChain !== (pushed.keyPem !== undefined)) return refuse(`${hasChain ? names.key : names.certChain} is missing: the certificate chain and its key come together`);
    let pair: KeyPair | null = null;
    if (hasChain) {
      const checked = checkKeyPair(pushed.certChainPem!, pushed.keyPem!, now, names);
      if (typeof checked === 'string') return refuse(checked);
      pair = checked;
    }
    let roots: X509Certificate[] | null = null;
    if (pushed.rootsPem !== undefined) {
      const checked = checkRoots(pushed.rootsPem, names);
      if (typeof checked === 'string') return refuse(checked);
      roots = checked;
    }
    const before = this.#pushedParts;
    const parts: PushedParts = pair !== null
      ? { ...before, certChainPem: pushed.certChainPem!, keyPem: pushed.keyPem!, pair }
      : before;
    const next: PushedParts = roots !== null ? { ...parts, rootsPem: pushed.rootsPem!, roots } : parts;
    if (next.pair === null || next.roots === null) {
      this.#pushedParts = next;
      this.#log.debug(`workload identity: ${next.roots === null ? 'certificate' : 'roots'} from ${where}; waiting for the ${next.roots === null ? 'roots' : 'certificate'}`);
      return null;
    }
    const chainPem = next.certChainPem!;
    const keyPem = next.keyPem!;
    const rootsPem = next.rootsPem!;
    const cur = this.#current;
    if (cur && cur.certChainPem === chainPem && cur.keyPem === keyPem && cur.rootsPem === rootsPem) {
      this.#pushedParts = next;
      return null;
    }
    let context: SecureContext;
    try {
      context = meshContext(chainPem, keyPem, rootsPem);
    } catch (err) {
      return refuse(`TLS rejects it: ${(err as Error).message}`);
    }
    const chainProblem = verifyCertificateChain(next.pair.chain, next.roots, now);
    if (chainProblem !== null) {
      this.#log.warn(`the workload certificate from ${where} does not verify against the roots held (${chainProblem}); serving it: peers that trust only these roots will refuse it`);
    }
    this.#pushedParts = next;
    this.#apply(identityOf(next.pair, chainPem, keyPem, rootsPem), context, where);
    return null;
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

  /** Re-reads the files now (as a file event would); resolves when the load is done. Nothing to do for a pushed identity. */
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
    if (this.#closed || this.#pushed) return;
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
      context = meshContext(chainText, keyText, rootsText);
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
        const missing = this.#pushed ? 'no new one arrived' : 'no new one was written';
        this.#log.error(`the workload certificate (serial ${identity.serial}) expired at ${identity.notAfter.toISOString()} and ${missing}; peers will refuse it`);
      }
    }, ms);
    this.#expiryTimer.unref();
  }
}

/** What the parts of an identity are called in messages: Istio's file names, or the SDS secrets' fields. */
interface PartNames {
  readonly certChain: string;
  readonly key: string;
  readonly rootCert: string;
}

/** A leaf, its chain and its key, checked: the identity's own fields. */
interface KeyPair {
  readonly chain: readonly X509Certificate[];
  readonly spiffeId: string;
  readonly serial: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/** Checks a certificate chain and its private key: they parse, match, the leaf is in date and has a SPIFFE ID. */
function checkKeyPair(chainText: string, keyText: string, now: Date, names: PartNames): KeyPair | string {
  let chain: X509Certificate[];
  try {
    chain = parseCertificates(chainText);
  } catch (err) {
    return `${names.certChain} does not parse: ${(err as Error).message}`;
  }
  if (chain.length === 0) return `${names.certChain} holds no certificate`;
  const leaf = chain[0]!;
  let key;
  try {
    key = createPrivateKey(keyText);
  } catch (err) {
    return `${names.key} does not parse: ${(err as Error).message}`;
  }
  if (!leaf.checkPrivateKey(key)) return `the private key does not match the certificate (serial ${leaf.serialNumber})`;
  const info = certificateInfo(leaf);
  if (now < info.notBefore) return `certificate (serial ${leaf.serialNumber}) is not valid before ${info.notBefore.toISOString()}`;
  if (now > info.notAfter) return `certificate (serial ${leaf.serialNumber}) expired at ${info.notAfter.toISOString()}`;
  const spiffeId = spiffeIdOf(leaf);
  if (spiffeId === null) return `the certificate (serial ${leaf.serialNumber}) has no spiffe:// URI SAN`;
  return { chain, spiffeId, serial: info.serial, notBefore: info.notBefore, notAfter: info.notAfter };
}

/** Checks a root bundle: it parses and holds at least one certificate. */
function checkRoots(rootsText: string, names: PartNames): X509Certificate[] | string {
  let roots: X509Certificate[];
  try {
    roots = parseCertificates(rootsText);
  } catch (err) {
    return `${names.rootCert} does not parse: ${(err as Error).message}`;
  }
  if (roots.length === 0) return `${names.rootCert} holds no certificate`;
  return roots;
}

function identityOf(pair: KeyPair, chainText: string, keyText: string, rootsText: string): WorkloadIdentity {
  const parts = parseSpiffeId(pair.spiffeId)!;
  return {
    spiffeId: pair.spiffeId,
    principal: pair.spiffeId.slice('spiffe://'.length),
    trustDomain: parts.trustDomain,
    namespace: parts.namespace,
    serviceAccount: parts.serviceAccount,
    certChainPem: chainText,
    keyPem: keyText,
    rootsPem: rootsText,
    serial: pair.serial,
    notBefore: pair.notBefore,
    notAfter: pair.notAfter,
  };
}

/** Checks a set of files; returns the identity, or the reason it cannot be served. */
function validate(chainText: string, keyText: string, rootsText: string, now: Date): WorkloadIdentity | string {
  // The chain first, then the roots, then the key: the order the reasons have always come in.
  try {
    if (parseCertificates(chainText).length === 0) return `${WORKLOAD_FILES.certChain} holds no certificate`;
  } catch (err) {
    return `${WORKLOAD_FILES.certChain} does not parse: ${(err as Error).message}`;
  }
  const roots = checkRoots(rootsText, WORKLOAD_FILES);
  if (typeof roots === 'string') return roots;
  const pair = checkKeyPair(chainText, keyText, now, WORKLOAD_FILES);
  if (typeof pair === 'string') return pair;
  const chainProblem = verifyCertificateChain(pair.chain, roots, now);
  if (chainProblem !== null) return chainProblem;
  return identityOf(pair, chainText, keyText, rootsText);
}

/** A secure context for the mesh identity: cert and key, the roots as CA, for server and client sides. */
function meshContext(chainText: string, keyText: string, rootsText: string): SecureContext {
  // Served to mesh peers, whose certificates are always required and verified against the
  // roots: the session id context lets their pools resume sessions (see sessionIdContext).
  return createSecureContext({ cert: chainText, key: keyText, ca: rootsText, minVersion: 'TLSv1.2', sessionIdContext: sessionIdContext('ISTIO_MUTUAL', rootsText) });
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
