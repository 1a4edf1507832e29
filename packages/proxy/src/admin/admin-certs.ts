import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Runtime } from '../runtime/runtime.ts';

/** Envoy's admin.v3.CertificateDetails, in its proto3 JSON form (uint64 as a string). */
interface CertificateDetails {
  path: string;
  serial_number: string;
  subject_alt_names: ({ dns: string } | { uri: string } | { ip_address: string })[];
  days_until_expiration: string;
  valid_from: string;
  expiration_time: string;
}

interface Certificate {
  ca_cert: CertificateDetails[];
  cert_chain: CertificateDetails[];
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

function parsePem(pem: string): X509Certificate[] {
  const out: X509Certificate[] = [];
  for (const block of pem.match(PEM_CERT) ?? []) {
    try {
      out.push(new X509Certificate(block));
    } catch {
      // A block that does not parse is left out, as Envoy shows only what it loaded.
    }
  }
  return out;
}

/** `DNS:a, URI:spiffe://…, IP Address:1.2.3.4` as Envoy's SubjectAlternateName list. */
function subjectAltNames(cert: X509Certificate): CertificateDetails['subject_alt_names'] {
  const out: CertificateDetails['subject_alt_names'] = [];
  for (const part of (cert.subjectAltName ?? '').split(/,\s*/)) {
    const colon = part.indexOf(':');
    if (colon < 0) continue;
    const kind = part.slice(0, colon);
    const value = part.slice(colon + 1);
    if (kind === 'DNS') out.push({ dns: value });
    else if (kind === 'URI') out.push({ uri: value });
    else if (kind === 'IP Address') out.push({ ip_address: value });
  }
  return out;
}

function details(cert: X509Certificate, path: string, now: number): CertificateDetails {
  const validTo = new Date(cert.validTo);
  return {
    path,
    serial_number: cert.serialNumber.toLowerCase(),
    subject_alt_names: subjectAltNames(cert),
    days_until_expiration: String(Math.max(0, Math.floor((validTo.getTime() - now) / 86_400_000))),
    valid_from: new Date(cert.validFrom).toISOString(),
    expiration_time: validTo.toISOString(),
  };
}

function fromFile(path: string, now: number, leafOnly: boolean): CertificateDetails[] {
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  const certs = parsePem(pem);
  return (leafOnly ? certs.slice(0, 1) : certs).map((c) => details(c, path, now));
}

/**
 * Envoy's `/certs`: the certificates Remora serves and trusts. The workload identity first
 * (its leaf and its roots; `<inline>` as Envoy shows secrets that came over SDS or were read
 * for it), then each Gateway server's certificate and CA files, once per file pair.
 */
export function certsJson(rt: Runtime): { certificates: Certificate[] } {
  const now = Date.now();
  const out: Certificate[] = [];
  const id = rt.identity?.current ?? null;
  if (id !== null) {
    out.push({
      ca_cert: parsePem(id.rootsPem).map((c) => details(c, '<inline>', now)),
      cert_chain: parsePem(id.certChainPem).slice(0, 1).map((c) => details(c, '<inline>', now)),
    });
  }
  const seen = new Set<string>();
  for (const l of rt.snapshot?.config.listeners ?? []) {
    const tls = l.tls;
    if (tls === null || tls.kind !== 'gateway') continue;
    for (const server of tls.servers) {
      if (server.certFile === null && server.caFile === null) continue;
      const key = `${server.certFile ?? ''}\u0000${server.caFile ?? ''}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.push({
        ca_cert: server.caFile === null ? [] : fromFile(server.caFile, now, false),
        cert_chain: server.certFile === null ? [] : fromFile(server.certFile, now, true),
      });
    }
  }
  return { certificates: out };
}
