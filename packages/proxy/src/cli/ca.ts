import { resolve, join } from 'node:path';
import { parseArgs } from 'node:util';
import { parseDuration } from '@remora/config';
import {
  CA_FILES,
  DEFAULT_ROOT_DAYS,
  DEFAULT_TRUST_DOMAIN,
  DevCa,
  DevCaError,
  SERVER_FILES,
  writeServerFiles,
  writeWorkloadFiles,
} from '../tls/dev-ca.ts';
import { WORKLOAD_FILES } from '../tls/certificates.ts';

/**
 * `remora ca …`: a small dev CA so a file-based mesh can run with mTLS without istiod. `init`
 * makes a root, `issue` a SPIFFE workload certificate in Istio's file layout, `issue-server` a
 * plain server certificate in Kubernetes TLS secret names (for Gateway SIMPLE/MUTUAL).
 */

interface CaIo {
  readonly out: (s: string) => void;
  readonly err: (s: string) => void;
}

type Sub = 'init' | 'issue' | 'issue-server';

/** Where `issue` writes by default: the first directory the sidecar looks in. */
const DEFAULT_WORKLOAD_OUT = './var/run/secrets/workload-spiffe-credentials';

interface Flag {
  readonly type: 'string' | 'boolean';
  readonly multiple?: boolean;
  readonly arg?: string;
  readonly help: string;
}

const FLAGS: Readonly<Record<Sub, Readonly<Record<string, Flag>>>> = {
  init: {
    dir: { type: 'string', arg: 'DIR', help: `directory for ${CA_FILES.rootCert} and ${CA_FILES.rootKey} (created if missing)` },
    'trust-domain': { type: 'string', arg: 'DOMAIN', help: `SPIFFE trust domain of the mesh (default ${DEFAULT_TRUST_DOMAIN})` },
    days: { type: 'string', arg: 'N', help: `validity of the root in days (default ${DEFAULT_ROOT_DAYS})` },
    force: { type: 'boolean', help: 'replace an existing root (certificates it issued stop verifying)' },
  },
  issue: {
    dir: { type: 'string', arg: 'DIR', help: 'the CA directory (from remora ca init)' },
    namespace: { type: 'string', arg: 'NS', help: "the workload's namespace" },
    'service-account': { type: 'string', arg: 'SA', help: "the workload's service account" },
    out: { type: 'string', arg: 'OUTDIR', help: `where to write ${WORKLOAD_FILES.certChain}, ${WORKLOAD_FILES.key}, ${WORKLOAD_FILES.rootCert} (default ${DEFAULT_WORKLOAD_OUT})` },
    ttl: { type: 'string', arg: 'DURATION', help: 'lifetime, like 24h, 90m or 7d (default 24h, as Istio)' },
    dns: { type: 'string', multiple: true, arg: 'NAME,…', help: 'extra DNS SANs (repeatable or comma-separated)' },
  },
  'issue-server': {
    dir: { type: 'string', arg: 'DIR', help: 'the CA directory (from remora ca init)' },
    out: { type: 'string', arg: 'OUTDIR', help: `where to write ${SERVER_FILES.cert}, ${SERVER_FILES.key}, ${SERVER_FILES.ca}` },
    dns: { type: 'string', multiple: true, arg: 'NAME,…', help: 'DNS names (repeatable or comma-separated; the first is also the CN)' },
    ip: { type: 'string', multiple: true, arg: 'ADDR,…', help: 'IP addresses (repeatable or comma-separated)' },
    ttl: { type: 'string', arg: 'DURATION', help: 'lifetime, like 720h or 365d (default 365d)' },
    'client-auth': { type: 'boolean', help: 'also allow the certificate as a TLS client certificate' },
  },
};

const ABOUT: Readonly<Record<Sub, { usage: string; what: string }>> = {
  init: {
    usage: 'remora ca init --dir DIR [--trust-domain cluster.local] [--days 3650] [--force]',
    what: 'Creates a root CA (EC P-256) for the trust domain.',
  },
  issue: {
    usage: 'remora ca issue --dir DIR --namespace NS --service-account SA [--out OUTDIR] [--ttl 24h] [--dns NAME…]',
    what: 'Issues a workload certificate with the SPIFFE ID spiffe://<trust-domain>/ns/<ns>/sa/<sa>,\nin Istio\'s file layout (what /etc/certs and ./var/run/secrets/workload-spiffe-credentials hold).',
  },
  'issue-server': {
    usage: 'remora ca issue-server --dir DIR --out OUTDIR --dns HOST,… [--ip ADDR,…] [--ttl 365d]',
    what: 'Issues a plain server certificate (tls.crt, tls.key, ca.crt: Kubernetes TLS secret names),\nfor Gateway servers with tls.mode SIMPLE or MUTUAL.',
  },
};

export function caHelpText(sub: Sub | null): string {
  if (sub === null) {
    return `usage: remora ca <init|issue|issue-server> [options]

A small certificate authority for tests, demos and machines without istiod.

  init           create a root CA in a directory
  issue          issue a SPIFFE workload certificate (cert-chain.pem, key.pem, root-cert.pem)
  issue-server   issue a plain server certificate (tls.crt, tls.key, ca.crt)

remora ca <subcommand> --help shows its options.
`;
  }
  const lines = Object.entries({ ...FLAGS[sub], help: { type: 'boolean', help: 'show this help' } as Flag }).map(([name, f]) => {
    const flag = `--${name}${f.arg ? ` ${f.arg}` : ''}`;
    return `  ${flag.padEnd(30)} ${f.help}`;
  });
  return `usage: ${ABOUT[sub].usage}\n\n${ABOUT[sub].what}\n\noptions:\n${lines.join('\n')}\n`;
}

class CaUsageError extends Error {
  override readonly name = 'CaUsageError';
}

/** `remora ca …`; resolves with the exit status (0 done, 1 the CA refused, 2 usage). */
export async function runCa(argv: readonly string[], io: CaIo): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    io.out(caHelpText(null));
    return sub === undefined ? 2 : 0;
  }
  if (!(sub in FLAGS)) {
    io.err(`remora ca: unknown subcommand "${sub}"\n\n${caHelpText(null)}`);
    return 2;
  }
  const s = sub as Sub;
  try {
    const spec: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = { help: { type: 'boolean', short: 'h' } };
    for (const [name, f] of Object.entries(FLAGS[s])) spec[name] = { type: f.type, ...(f.multiple ? { multiple: true } : {}) };
    let parsed;
    try {
      parsed = parseArgs({ args: [...rest], options: spec, allowPositionals: false, strict: true });
    } catch (err) {
      throw new CaUsageError((err as Error).message);
    }
    const v = parsed.values as Record<string, string | string[] | boolean | undefined>;
    if (v.help) {
      io.out(caHelpText(s));
      return 0;
    }
    const str = (name: string): string | undefined => (typeof v[name] === 'string' ? (v[name] as string) : undefined);
    const required = (name: string): string => {
      const x = str(name);
      if (x === undefined || x === '') throw new CaUsageError(`--${name} is required`);
      return x;
    };
    const list = (name: string): string[] =>
      ((v[name] as string[] | undefined) ?? []).flatMap((x) => x.split(',')).map((x) => x.trim()).filter((x) => x !== '');
    const dir = resolve(required('dir'));

    if (s === 'init') {
      const daysRaw = str('days');
      if (daysRaw !== undefined && !/^[1-9]\d*$/.test(daysRaw)) throw new CaUsageError(`--days must be a positive whole number, got "${daysRaw}"`);
      const ca = await DevCa.create({ trustDomain: str('trust-domain') ?? DEFAULT_TRUST_DOMAIN, days: daysRaw === undefined ? DEFAULT_ROOT_DAYS : Number(daysRaw) });
      await ca.save(dir, v.force === true);
      io.out(
        `created a root CA for trust domain ${ca.trustDomain} (serial ${ca.serial}, valid until ${ca.notAfter.toISOString()})\n` +
          `  ${join(dir, CA_FILES.rootCert)}\n  ${join(dir, CA_FILES.rootKey)}\n`,
      );
      return 0;
    }

    if (s === 'issue') {
      const namespace = required('namespace');
      const serviceAccount = required('service-account');
      const ttlMs = ttl(str('ttl'));
      const out = resolve(str('out') ?? DEFAULT_WORKLOAD_OUT);
      const ca = await DevCa.load(dir);
      const issued = await ca.issueWorkload({ namespace, serviceAccount, dnsNames: list('dns'), ...(ttlMs !== null ? { ttlMs } : {}) });
      await writeWorkloadFiles(out, issued);
      io.out(
        `issued ${issued.spiffeId} (serial ${issued.serial}, valid until ${issued.notAfter.toISOString()})\n` +
          Object.values(WORKLOAD_FILES).map((f) => `  ${join(out, f)}\n`).join(''),
      );
      return 0;
    }

    const out = resolve(required('out'));
    const dnsNames = list('dns');
    const ipAddresses = list('ip');
    if (dnsNames.length === 0 && ipAddresses.length === 0) throw new CaUsageError('--dns (or --ip) is required');
    const ttlMs = ttl(str('ttl'));
    const ca = await DevCa.load(dir);
    const issued = await ca.issueServer({ dnsNames, ipAddresses, clientAuth: v['client-auth'] === true, ...(ttlMs !== null ? { ttlMs } : {}) });
    await writeServerFiles(out, issued);
    io.out(
      `issued a server certificate for ${[...dnsNames, ...ipAddresses].join(', ')} (serial ${issued.serial}, valid until ${issued.notAfter.toISOString()})\n` +
        Object.values(SERVER_FILES).map((f) => `  ${join(out, f)}\n`).join(''),
    );
    return 0;
  } catch (err) {
    if (err instanceof CaUsageError) {
      io.err(`remora ca ${s}: ${err.message}\n\n${caHelpText(s)}`);
      return 2;
    }
    if (err instanceof DevCaError) {
      io.err(`remora ca ${s}: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

/** A lifetime: Go duration syntax (`24h`, `90m`, `1h30m`) or whole days (`7d`); null when not given. */
function ttl(raw: string | undefined): number | null {
  if (raw === undefined) return null;
  const days = /^(\d+)d$/.exec(raw);
  const ms = days ? Number(days[1]) * 86_400_000 : parseDuration(raw);
  if (ms === null || !(ms > 0)) throw new CaUsageError(`--ttl must be a positive duration like 24h, 90m or 7d, got "${raw}"`);
  return ms;
}
