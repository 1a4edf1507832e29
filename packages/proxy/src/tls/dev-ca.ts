import { createPrivateKey, randomBytes, X509Certificate, type webcrypto } from 'node:crypto';
import { chmod, mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type * as X509 from '@peculiar/x509';
import { certificateInfo, splitPemCertificates, WORKLOAD_FILES } from './certificates.ts';

/**
 * A small certificate authority for tests, demos and machines without istiod: a root (or an
 * intermediate under it) that issues SPIFFE workload certificates shaped like Istio's (URI SAN
 * `spiffe://<td>/ns/<ns>/sa/<sa>`, critical, empty subject; digitalSignature + keyEncipherment;
 * serverAuth + clientAuth; 24 h by default) and plain server certificates. Signing uses
 * @peculiar/x509 over WebCrypto, because node:crypto cannot sign certificates.
 */

/** Kubernetes TLS secret key names, as Istio's gateways read them. */
export const SERVER_FILES = { cert: 'tls.crt', key: 'tls.key', ca: 'ca.crt' } as const;
/** The CA directory's files. */
export const CA_FILES = { rootCert: 'root-cert.pem', rootKey: 'root-key.pem' } as const;

export const DEFAULT_TRUST_DOMAIN = 'cluster.local';
export const DEFAULT_WORKLOAD_TTL_MS = 24 * 3_600_000;
export const DEFAULT_SERVER_TTL_MS = 365 * 24 * 3_600_000;
export const DEFAULT_ROOT_DAYS = 3650;
/** Certificates start a little in the past so a peer whose clock is slightly behind accepts them. */
const CLOCK_SKEW_MS = 60_000;

/** A problem the CA reports to its user (missing directory, existing root, bad input). */
export class DevCaError extends Error {
  override readonly name = 'DevCaError';
}

type X509Module = typeof X509;
let x509Module: Promise<X509Module> | null = null;

/**
 * @peculiar/x509 needs a Reflect metadata polyfill (its DI container checks for one when it
 * loads), so it is loaded on first use: the proxy's data plane never pays for either.
 */
function loadX509(): Promise<X509Module> {
  x509Module ??= (async () => {
    await import('reflect-metadata');
    const mod = await import('@peculiar/x509');
    // The ESM wrapper of a CJS module exposes the exports both as names and as `default`.
    return ((mod as unknown as { default?: X509Module }).default ?? mod) as X509Module;
  })();
  return x509Module;
}

/** What the CA signs with: an algorithm for WebCrypto, derived from the key's type. */
interface SigningKey {
  readonly key: webcrypto.CryptoKey;
  readonly algorithm: webcrypto.EcdsaParams | webcrypto.RsaHashedImportParams;
}

const EC_CURVES: Readonly<Record<string, { curve: string; hash: string }>> = {
  prime256v1: { curve: 'P-256', hash: 'SHA-256' },
  secp384r1: { curve: 'P-384', hash: 'SHA-384' },
  secp521r1: { curve: 'P-521', hash: 'SHA-512' },
};

async function importSigningKey(pem: string): Promise<SigningKey> {
  let ko;
  try {
    ko = createPrivateKey(pem);
  } catch (err) {
    throw new DevCaError(`the CA private key does not parse: ${(err as Error).message}`);
  }
  const der = ko.export({ type: 'pkcs8', format: 'der' });
  if (ko.asymmetricKeyType === 'ec') {
    const c = EC_CURVES[ko.asymmetricKeyDetails?.namedCurve ?? ''];
    if (!c) throw new DevCaError(`unsupported EC curve ${ko.asymmetricKeyDetails?.namedCurve ?? '?'} (P-256, P-384 and P-521 are)`);
    const key = await crypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: c.curve }, false, ['sign']);
    return { key, algorithm: { name: 'ECDSA', hash: c.hash } };
  }
  if (ko.asymmetricKeyType === 'rsa') {
    // Istio's sample and plugged-in CAs are RSA.
    const algorithm = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
    const key = await crypto.subtle.importKey('pkcs8', der, algorithm, false, ['sign']);
    return { key, algorithm };
  }
  throw new DevCaError(`unsupported CA key type ${ko.asymmetricKeyType ?? '?'} (EC and RSA are)`);
}

/** A fresh EC P-256 key pair, and its private half as PKCS#8 PEM. */
async function newKeyPair(): Promise<{ keys: webcrypto.CryptoKeyPair; pem: string }> {
  const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const der = Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey));
  const b64 = der.toString('base64').replace(/.{1,64}/g, '$&\n');
  return { keys, pem: `-----BEGIN PRIVATE KEY-----\n${b64}-----END PRIVATE KEY-----\n` };
}

/** A random positive 128-bit serial, its first byte non-zero so its hex form is stable. */
function randomSerial(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b.toString('hex');
}

/** The trust domain a CA certificate stands for: its `spiffe://<td>` URI SAN, else its O (Istio's self-signed root sets O to the trust domain). */
export function trustDomainOfCa(cert: X509Certificate): string | null {
  const id = certificateInfo(cert).spiffeIds[0];
  if (id !== undefined) {
    const td = id.slice('spiffe://'.length).split('/')[0];
    if (td) return td;
  }
  for (const line of (cert.subject ?? '').split('\n')) if (line.startsWith('O=')) return line.slice(2);
  return null;
}

/** A certificate the CA issued, with everything needed to write it out. */
export interface IssuedCertificate {
  /** The leaf alone. */
  readonly certPem: string;
  /** The leaf followed by the CA's intermediates (none for a root-signed leaf): Istio's cert-chain.pem. */
  readonly certChainPem: string;
  /** PKCS#8 PEM. */
  readonly keyPem: string;
  /** The root certificate: Istio's root-cert.pem. */
  readonly rootCertPem: string;
  /** Upper-case hex, as node's X509Certificate prints it. */
  readonly serial: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** The SPIFFE ID of a workload certificate; null for a server certificate. */
  readonly spiffeId: string | null;
}

export interface CreateCaOptions {
  readonly trustDomain?: string;
  /** Validity of the root in days (default 3650). */
  readonly days?: number;
  readonly commonName?: string;
}

export interface IssueWorkloadOptions {
  readonly namespace: string;
  readonly serviceAccount: string;
  /** Lifetime from now (default 24 h, Istio's). */
  readonly ttlMs?: number;
  /** Overrides the start of validity (tests: a certificate that has already expired, or is not valid yet). */
  readonly notBefore?: Date;
  /** Overrides the end of validity. */
  readonly notAfter?: Date;
  /** Extra DNS SANs. */
  readonly dnsNames?: readonly string[];
  /** Extra IP SANs. */
  readonly ipAddresses?: readonly string[];
}

export interface IssueServerOptions {
  readonly dnsNames: readonly string[];
  readonly ipAddresses?: readonly string[];
  /** Lifetime from now (default 365 days). */
  readonly ttlMs?: number;
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  /** Also usable as a TLS client certificate (default false: a plain server certificate). */
  readonly clientAuth?: boolean;
}

/** A signing CA: a root, or an intermediate that chains to one. */
export class DevCa {
  readonly trustDomain: string;
  /** The certificate this CA signs with (the root itself, or an intermediate). */
  readonly certPem: string;
  /** This CA's private key (PKCS#8 or SEC1/PKCS#1 PEM). */
  readonly keyPem: string;
  /** The intermediates from this CA's certificate up to (not including) the root; '' for a root. */
  readonly chainPem: string;
  readonly rootCertPem: string;
  readonly #signer: SigningKey;
  readonly #cert: X509Certificate;

  private constructor(trustDomain: string, certPem: string, keyPem: string, chainPem: string, rootCertPem: string, signer: SigningKey) {
    this.trustDomain = trustDomain;
    this.certPem = certPem;
    this.keyPem = keyPem;
    this.chainPem = chainPem;
    this.rootCertPem = rootCertPem;
    this.#signer = signer;
    this.#cert = new X509Certificate(certPem);
  }

  get serial(): string {
    return this.#cert.serialNumber.toUpperCase();
  }

  get notAfter(): Date {
    return new Date(this.#cert.validTo);
  }

  /** A new self-signed root (EC P-256), subject `O=<trust domain>, CN=…` and URI SAN `spiffe://<trust domain>`. */
  static async create(opts: CreateCaOptions = {}): Promise<DevCa> {
    const x509 = await loadX509();
    const trustDomain = opts.trustDomain ?? DEFAULT_TRUST_DOMAIN;
    checkTrustDomain(trustDomain);
    const days = opts.days ?? DEFAULT_ROOT_DAYS;
    if (!(days > 0)) throw new DevCaError(`the root's validity must be a positive number of days, got ${days}`);
    const { keys, pem } = await newKeyPair();
    const now = Date.now();
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerial(),
      name: [{ O: [trustDomain] }, { CN: [opts.commonName ?? 'Remora dev root CA'] }],
      notBefore: new Date(now - CLOCK_SKEW_MS),
      notAfter: new Date(now + days * 86_400_000),
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as webcrypto.EcdsaParams,
      keys,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${trustDomain}` }]),
      ],
    });
    const certPem = cert.toString('pem') + '\n';
    return new DevCa(trustDomain, certPem, pem, '', certPem, { key: keys.privateKey, algorithm: { name: 'ECDSA', hash: 'SHA-256' } });
  }

  /**
   * Reads a CA directory: `root-cert.pem` + `root-key.pem` (what `remora ca init` writes), or
   * Istio's plugged-in CA layout (`ca-cert.pem`, `ca-key.pem`, `cert-chain.pem`, `root-cert.pem`).
   */
  static async load(dir: string): Promise<DevCa> {
    const st = await stat(dir).catch(() => null);
    if (!st?.isDirectory()) throw new DevCaError(`CA directory ${dir} does not exist (create one with: remora ca init --dir ${dir})`);
    const read = (name: string): Promise<string | null> => readFile(join(dir, name), 'utf8').catch(() => null);
    const [rootCert, rootKey, caCert, caKey, caChain] = await Promise.all([
      read(CA_FILES.rootCert),
      read(CA_FILES.rootKey),
      read('ca-cert.pem'),
      read('ca-key.pem'),
      read('cert-chain.pem'),
    ]);
    if (rootCert === null) throw new DevCaError(`${join(dir, CA_FILES.rootCert)} is missing (create a CA with: remora ca init --dir ${dir})`);
    let certPem: string;
    let keyPem: string;
    let chainPem: string;
    if (caCert !== null && caKey !== null) {
      certPem = caCert;
      keyPem = caKey;
      // Istio's cert-chain.pem holds the intermediate and everything above it but the root, or also the root.
      const rootBlocks = new Set(splitPemCertificates(rootCert).map(normalizePem));
      const chain = caChain !== null ? splitPemCertificates(caChain).filter((b) => !rootBlocks.has(normalizePem(b))) : [];
      chainPem = (chain.length > 0 ? chain : splitPemCertificates(caCert)).map((b) => `${b}\n`).join('');
    } else if (rootKey !== null) {
      certPem = rootCert;
      keyPem = rootKey;
      chainPem = '';
    } else {
      throw new DevCaError(`${join(dir, CA_FILES.rootKey)} is missing: the directory holds a root certificate but no key to sign with`);
    }
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(certPem);
    } catch (err) {
      throw new DevCaError(`the CA certificate in ${dir} does not parse: ${(err as Error).message}`);
    }
    if (!cert.ca) throw new DevCaError(`the certificate in ${dir} is not a CA certificate (basicConstraints CA:TRUE)`);
    const signer = await importSigningKey(keyPem);
    if (!cert.checkPrivateKey(createPrivateKey(keyPem))) throw new DevCaError(`the CA key in ${dir} does not match its certificate`);
    const trustDomain = trustDomainOfCa(cert) ?? trustDomainOfCa(new X509Certificate(rootCert)) ?? DEFAULT_TRUST_DOMAIN;
    return new DevCa(trustDomain, certPem, keyPem, chainPem, rootCert, signer);
  }

  /** Writes `root-cert.pem` and `root-key.pem` (0600); refuses to replace an existing root unless `force`. */
  async save(dir: string, force = false): Promise<void> {
    if (this.chainPem !== '') throw new DevCaError('only a root CA is saved this way');
    await mkdir(dir, { recursive: true });
    if (!force) {
      for (const name of [CA_FILES.rootCert, CA_FILES.rootKey]) {
        if (await stat(join(dir, name)).catch(() => null)) {
          throw new DevCaError(`${join(dir, name)} already exists; pass --force to replace the CA (certificates it issued will no longer verify)`);
        }
      }
    }
    await writeFileAtomic(join(dir, CA_FILES.rootKey), this.keyPem, 0o600);
    await writeFileAtomic(join(dir, CA_FILES.rootCert), this.rootCertPem, 0o644);
  }

  /** An intermediate CA under this one (certificates it issues carry it in their chain). */
  async createIntermediate(opts: { readonly days?: number; readonly commonName?: string } = {}): Promise<DevCa> {
    const x509 = await loadX509();
    const { keys, pem } = await newKeyPair();
    const now = Date.now();
    const days = opts.days ?? 365;
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: [{ O: [this.trustDomain] }, { CN: [opts.commonName ?? 'Remora dev intermediate CA'] }],
      issuer: new x509.X509Certificate(this.certPem).subjectName,
      notBefore: new Date(now - CLOCK_SKEW_MS),
      notAfter: new Date(now + days * 86_400_000),
      signingAlgorithm: this.#signer.algorithm,
      publicKey: keys.publicKey,
      signingKey: this.#signer.key,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(this.#issuerPublicKey(x509)),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${this.trustDomain}` }]),
      ],
    });
    const certPem = cert.toString('pem') + '\n';
    return new DevCa(this.trustDomain, certPem, pem, certPem + this.chainPem, this.rootCertPem, {
      key: keys.privateKey,
      algorithm: { name: 'ECDSA', hash: 'SHA-256' },
    });
  }

  /** A workload certificate as istiod issues them: `spiffe://<td>/ns/<ns>/sa/<sa>`. */
  async issueWorkload(opts: IssueWorkloadOptions): Promise<IssuedCertificate> {
    checkName('namespace', opts.namespace);
    checkName('service account', opts.serviceAccount);
    const spiffeId = `spiffe://${this.trustDomain}/ns/${opts.namespace}/sa/${opts.serviceAccount}`;
    const x509 = await loadX509();
    const names: X509.JsonGeneralName[] = [{ type: 'url', value: spiffeId }, ...generalNames(opts.dnsNames ?? [], opts.ipAddresses ?? [])];
    return this.#issue(x509, {
      // Istio's workload certificates have an empty subject, so the SAN is critical (RFC 5280 4.2.1.6).
      subject: [],
      names,
      sanCritical: true,
      usages: [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
      ttlMs: opts.ttlMs ?? DEFAULT_WORKLOAD_TTL_MS,
      notBefore: opts.notBefore,
      notAfter: opts.notAfter,
      spiffeId,
    });
  }

  /** A plain server certificate for the given DNS names and IPs (subject CN = the first name). */
  async issueServer(opts: IssueServerOptions): Promise<IssuedCertificate> {
    const dns = opts.dnsNames;
    const ips = opts.ipAddresses ?? [];
    if (dns.length === 0 && ips.length === 0) throw new DevCaError('a server certificate needs at least one DNS name or IP address');
    const x509 = await loadX509();
    return this.#issue(x509, {
      subject: [{ CN: [dns[0] ?? ips[0]!] }],
      names: generalNames(dns, ips),
      sanCritical: false,
      usages: opts.clientAuth ? [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth] : [x509.ExtendedKeyUsage.serverAuth],
      ttlMs: opts.ttlMs ?? DEFAULT_SERVER_TTL_MS,
      notBefore: opts.notBefore,
      notAfter: opts.notAfter,
      spiffeId: null,
    });
  }

  #issuerPublicKey(x509: X509Module): X509.PublicKey {
    return new x509.X509Certificate(this.certPem).publicKey;
  }

  async #issue(
    x509: X509Module,
    p: {
      subject: X509.JsonName;
      names: X509.JsonGeneralName[];
      sanCritical: boolean;
      usages: string[];
      ttlMs: number;
      notBefore: Date | undefined;
      notAfter: Date | undefined;
      spiffeId: string | null;
    },
  ): Promise<IssuedCertificate> {
    if (!(p.ttlMs > 0)) throw new DevCaError(`the certificate lifetime must be positive, got ${p.ttlMs} ms`);
    const { keys, pem } = await newKeyPair();
    const now = Date.now();
    const notBefore = p.notBefore ?? new Date(now - CLOCK_SKEW_MS);
    const notAfter = p.notAfter ?? new Date((p.notBefore?.getTime() ?? now) + p.ttlMs);
    if (notAfter <= notBefore) throw new DevCaError('the certificate would end before it starts');
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: p.subject,
      issuer: new x509.X509Certificate(this.certPem).subjectName,
      notBefore,
      notAfter,
      signingAlgorithm: this.#signer.algorithm,
      publicKey: keys.publicKey,
      signingKey: this.#signer.key,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension(p.usages),
        await x509.AuthorityKeyIdentifierExtension.create(this.#issuerPublicKey(x509)),
        new x509.SubjectAlternativeNameExtension(p.names, p.sanCritical),
      ],
    });
    const certPem = cert.toString('pem') + '\n';
    const info = certificateInfo(certPem);
    return {
      certPem,
      certChainPem: certPem + this.chainPem,
      keyPem: pem,
      rootCertPem: this.rootCertPem,
      serial: info.serial,
      notBefore: info.notBefore,
      notAfter: info.notAfter,
      spiffeId: p.spiffeId,
    };
  }
}

function generalNames(dns: readonly string[], ips: readonly string[]): X509.JsonGeneralName[] {
  const out: X509.JsonGeneralName[] = [];
  for (const d of dns) {
    if (!/^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(d)) {
      throw new DevCaError(`"${d}" is not a DNS name`);
    }
    out.push({ type: 'dns', value: d });
  }
  for (const ip of ips) {
    if (isIP(ip) === 0) throw new DevCaError(`"${ip}" is not an IP address`);
    out.push({ type: 'ip', value: ip });
  }
  return out;
}

function checkTrustDomain(td: string): void {
  // SPIFFE: lower-case letters, digits, dots, dashes and underscores.
  if (!/^[a-z0-9._-]+$/.test(td)) throw new DevCaError(`"${td}" is not a valid trust domain (lower-case letters, digits, ".", "-", "_")`);
}

function checkName(what: string, v: string): void {
  if (!/^[A-Za-z0-9._-]+$/.test(v)) throw new DevCaError(`"${v}" is not a valid ${what}`);
}

function normalizePem(block: string): string {
  return block.replace(/\s+/g, '');
}

/** Writes through a temporary file and a rename, so a reader never sees half a file. */
export async function writeFileAtomic(path: string, text: string, mode: number): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  await writeFile(tmp, text, { mode });
  await chmod(tmp, mode); // the umask may have narrowed the mode given to writeFile
  await rename(tmp, path);
}

/** Writes Istio's workload credential files: cert-chain.pem, key.pem (0600), root-cert.pem. */
export async function writeWorkloadFiles(dir: string, issued: IssuedCertificate): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFileAtomic(join(dir, WORKLOAD_FILES.key), issued.keyPem, 0o600);
  await writeFileAtomic(join(dir, WORKLOAD_FILES.certChain), issued.certChainPem, 0o644);
  await writeFileAtomic(join(dir, WORKLOAD_FILES.rootCert), issued.rootCertPem, 0o644);
}

/** Writes a Kubernetes-TLS-secret-shaped set: tls.crt (leaf + intermediates), tls.key (0600), ca.crt. */
export async function writeServerFiles(dir: string, issued: IssuedCertificate): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFileAtomic(join(dir, SERVER_FILES.key), issued.keyPem, 0o600);
  await writeFileAtomic(join(dir, SERVER_FILES.cert), issued.certChainPem, 0o644);
  await writeFileAtomic(join(dir, SERVER_FILES.ca), issued.rootCertPem, 0o644);
}
