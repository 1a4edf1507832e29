import { X509Certificate } from 'node:crypto';
import { readSecrets, type ConfigDump, type DynamicSecret } from './config-dump.ts';
import { tabWrite } from './tab-writer.ts';

/** One row of istioctl's secrets table. */
interface SecretItem {
  readonly name: string;
  readonly state: string;
  readonly type: string;
  readonly valid: boolean;
  readonly serialNumber: string;
  readonly notAfter: string;
  readonly notBefore: string;
  readonly trustDomain: string;
}

/** RFC 3339 in UTC without fractions, as Go's `time.RFC3339` prints a certificate's dates. */
function rfc3339(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

const SPIFFE_URI = /(?:^|, )URI:spiffe:\/\/([^/,]+)/g;
const FIRST_PEM_BLOCK = /-----BEGIN ([^-]+)-----[\s\S]*?-----END \1-----/;

/**
 * The first PEM block of a bundle, described as a certificate. Istio's trust domain comes from a
 * SPIFFE validator when there is one, otherwise from the certificate's (last) spiffe:// URI.
 * A bundle that does not parse gives a row with only its name, state and `false`, as istioctl.
 */
function describeCertificate(name: string, state: string, pem: string, trustDomain: string, now: Date): SecretItem {
  const unreadable: SecretItem = { name, state, type: '', valid: false, serialNumber: '', notAfter: '', notBefore: '', trustDomain: '' };
  const block = FIRST_PEM_BLOCK.exec(pem);
  if (block === null || block[1] !== 'CERTIFICATE') return unreadable;
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(block[0]);
  } catch {
    return unreadable;
  }
  let td = trustDomain;
  if (td === '') for (const m of (cert.subjectAltName ?? '').matchAll(SPIFFE_URI)) td = m[1]!;
  return {
    name,
    state,
    type: cert.ca ? 'CA' : 'Cert Chain',
    valid: now > cert.validFromDate && now < cert.validToDate,
    serialNumber: BigInt(`0x${cert.serialNumber}`).toString(16).padStart(32, '0'),
    notAfter: rfc3339(cert.validToDate),
    notBefore: rfc3339(cert.validFromDate),
    trustDomain: td,
  };
}

/** A secret's rows: its certificate chain, else its trusted CA, else one per SPIFFE trust bundle. */
function secretItems(s: DynamicSecret, state: string, now: Date): SecretItem[] {
  if (s.certificateChain !== '') return [describeCertificate(s.name, state, s.certificateChain, '', now)];
  if (s.trustedCa !== '') return [describeCertificate(s.name, state, s.trustedCa, '', now)];
  if (s.spiffeBundles !== null) return s.spiffeBundles.map(([td, pem]) => describeCertificate(s.name, state, pem, td, now));
  return [describeCertificate(s.name, state, '', '', now)];
}

/** `istioctl proxy-config secret`: warming then active secrets, with validity as of `now`. */
export function secretSummary(dump: ConfigDump, withNames: boolean, now: Date = new Date()): string {
  const secrets = readSecrets(dump.requireSection('secrets'));
  if (secrets.active.length === 0 && secrets.warming.length === 0) return 'No active or warming secrets found.\n';
  const items = [...secrets.warming.flatMap((s) => secretItems(s, 'WARMING', now)), ...secrets.active.flatMap((s) => secretItems(s, 'ACTIVE', now))];
  if (items.length === 0) return 'No secret items to show.\n';
  // A TRUST DOMAIN column only when every row has one (trust domain federation).
  const withTrustDomain = items.every((s) => s.trustDomain !== '');
  let text = `RESOURCE NAME\tTYPE\tSTATUS\tVALID CERT\tSERIAL NUMBER\tNOT AFTER\tNOT BEFORE${withTrustDomain ? '\tTRUST DOMAIN' : ''}\n`;
  for (const s of items) {
    const cells = [withNames ? `secret/${s.name}` : s.name, s.type, s.state, String(s.valid), s.serialNumber, s.notAfter, s.notBefore];
    if (withTrustDomain) cells.push(s.trustDomain);
    text += `${cells.join('\t')}\n`;
  }
  return tabWrite(text, { minWidth: 0, padding: 5 });
}
