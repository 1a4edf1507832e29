import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';

/**
 * Reading certificates with node:crypto's `X509Certificate`: PEM bundles, SPIFFE URI SANs,
 * serials, validity, and a chain check done the way a TLS stack does it (issuer name, signature,
 * CA flag, validity window), so a workload certificate set can be judged before it is served.
 */

/** Istio's file names for a workload's credentials (`/etc/certs`, `./var/run/secrets/workload-spiffe-credentials`). */
export const WORKLOAD_FILES = { certChain: 'cert-chain.pem', key: 'key.pem', rootCert: 'root-cert.pem' } as const;

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** The PEM blocks of a bundle, in order (text outside the blocks is ignored). */
export function splitPemCertificates(pem: string): string[] {
  return pem.match(PEM_CERT) ?? [];
}

/** Every certificate of a PEM bundle, in order; throws on a block that does not parse. */
export function parseCertificates(pem: string): X509Certificate[] {
  return splitPemCertificates(pem).map((block) => new X509Certificate(block));
}

/**
 * The entries of a subjectAltName string as node prints it (`DNS:a, URI:spiffe://…,
 * IP Address:10.0.0.1`). Node quotes a value that holds a comma or a quote as a JSON string
 * (`URI:"spiffe://a,b"`), so a plain split on ", " is not enough.
 */
export function parseSubjectAltNames(san: string | undefined): Array<{ readonly type: string; readonly value: string }> {
  const out: Array<{ type: string; value: string }> = [];
  if (!san) return out;
  let i = 0;
  while (i < san.length) {
    while (san[i] === ' ' || san[i] === ',') i++;
    if (i >= san.length) break;
    const colon = san.indexOf(':', i);
    if (colon < 0) break;
    const type = san.slice(i, colon);
    i = colon + 1;
    let value: string;
    if (san[i] === '"') {
      // A JSON string: find its closing quote, skipping escaped characters.
      let j = i + 1;
      while (j < san.length && san[j] !== '"') j += san[j] === '\\' ? 2 : 1;
      try {
        value = JSON.parse(san.slice(i, j + 1)) as string;
      } catch {
        value = san.slice(i + 1, j);
      }
      i = j + 1;
    } else {
      const comma = san.indexOf(', ', i);
      const end = comma < 0 ? san.length : comma;
      value = san.slice(i, end);
      i = end;
    }
    out.push({ type, value });
  }
  return out;
}

/** The URI SANs that are SPIFFE IDs (`spiffe://…`), in certificate order. */
export function spiffeIdsOf(cert: PeerCertificate | X509Certificate | null | undefined): string[] {
  // getPeerCertificate() is {} without a peer certificate, and null once the socket is gone.
  if (cert == null) return [];
  const san = cert instanceof X509Certificate ? cert.subjectAltName : (cert as Partial<PeerCertificate>).subjectaltname;
  return parseSubjectAltNames(san)
    .filter((e) => e.type === 'URI' && e.value.startsWith('spiffe://'))
    .map((e) => e.value);
}

/** A SPIFFE ID split into Istio's parts; namespace and service account are '' when the path is not `/ns/<ns>/sa/<sa>`. */
export interface SpiffeIdParts {
  readonly trustDomain: string;
  readonly path: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

/** Parses `spiffe://<trust-domain>/<path>`; null when it is not a SPIFFE ID. */
export function parseSpiffeId(id: string): SpiffeIdParts | null {
  if (!id.startsWith('spiffe://')) return null;
  const rest = id.slice('spiffe://'.length);
  const slash = rest.indexOf('/');
  const trustDomain = slash < 0 ? rest : rest.slice(0, slash);
  if (trustDomain === '') return null;
  const path = slash < 0 ? '' : rest.slice(slash);
  const parts = path.split('/');
  // ['', 'ns', NS, 'sa', SA]
  const k8s = parts.length === 5 && parts[1] === 'ns' && parts[3] === 'sa' && parts[2] !== '' && parts[4] !== '';
  return { trustDomain, path, namespace: k8s ? parts[2]! : '', serviceAccount: k8s ? parts[4]! : '' };
}

/** The fields of a certificate that Remora logs, shows and checks. */
export interface CertificateInfo {
  readonly subject: string;
  readonly issuer: string;
  /** Upper-case hex, as node prints it. */
  readonly serial: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly isCa: boolean;
  readonly spiffeIds: readonly string[];
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
  readonly fingerprint256: string;
}

export function certificateInfo(cert: X509Certificate | string): CertificateInfo {
  const x = typeof cert === 'string' ? new X509Certificate(cert) : cert;
  const sans = parseSubjectAltNames(x.subjectAltName);
  return {
    // node leaves subject undefined when it is empty (Istio's workload certificates).
    subject: x.subject ?? '',
    issuer: x.issuer ?? '',
    serial: x.serialNumber.toUpperCase(),
    notBefore: new Date(x.validFrom),
    notAfter: new Date(x.validTo),
    isCa: x.ca,
    spiffeIds: sans.filter((e) => e.type === 'URI' && e.value.startsWith('spiffe://')).map((e) => e.value),
    dnsNames: sans.filter((e) => e.type === 'DNS').map((e) => e.value),
    ipAddresses: sans.filter((e) => e.type === 'IP Address').map((e) => e.value),
    fingerprint256: x.fingerprint256,
  };
}

/** Whether a private key (PEM or KeyObject) is the one whose public half the certificate carries. */
export function keyMatchesCertificate(key: string | KeyObject, cert: X509Certificate): boolean {
  try {
    return cert.checkPrivateKey(typeof key === 'string' ? createPrivateKey(key) : key);
  } catch {
    return false;
  }
}

/** At most this many certificates between a leaf and its root (Envoy's and OpenSSL's default depth is larger; meshes use 1-3). */
const MAX_CHAIN_DEPTH = 10;

/**
 * Checks that `chain[0]` (the leaf) chains to one of `roots`, through the rest of `chain`
 * (intermediates, in any order) — issuer name, signature and CA flag at each step, and every
 * certificate on the path valid at `now`. Returns null when it does, else the reason.
 */
export function verifyCertificateChain(chain: readonly X509Certificate[], roots: readonly X509Certificate[], now: Date = new Date()): string | null {
  const leaf = chain[0];
  if (leaf === undefined) return 'no certificate';
  if (roots.length === 0) return 'no root certificate';
  const intermediates = chain.slice(1);
  const validAt = (c: X509Certificate, what: string): string | null => {
    const from = new Date(c.validFrom);
    const to = new Date(c.validTo);
    if (now < from) return `${what} (serial ${c.serialNumber}) is not valid before ${from.toISOString()}`;
    if (now > to) return `${what} (serial ${c.serialNumber}) expired at ${to.toISOString()}`;
    return null;
  };
  const issues = (issuer: X509Certificate, c: X509Certificate): boolean => {
    try {
      return c.checkIssued(issuer) && c.verify(issuer.publicKey);
    } catch {
      return false;
    }
  };
  let current = leaf;
  let what = 'certificate';
  for (let depth = 0; depth <= MAX_CHAIN_DEPTH; depth++) {
    const bad = validAt(current, what);
    if (bad) return bad;
    // A root that is the current certificate itself (a self-signed leaf listed as a root) counts.
    if (roots.some((r) => r.raw.equals(current.raw))) return null;
    const root = roots.find((r) => r.ca && issues(r, current));
    if (root) return validAt(root, 'root certificate');
    const next = intermediates.find((c) => c !== current && c.ca && issues(c, current));
    if (!next) {
      return `${what} (serial ${current.serialNumber}, issuer "${(current.issuer ?? '').replace(/\n/g, ', ')}") does not chain to the root certificates`;
    }
    current = next;
    what = 'intermediate certificate';
  }
  return `certificate chain is longer than ${MAX_CHAIN_DEPTH}`;
}
