import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { stringify as toYaml } from 'yaml';
import { bootstrapSummary } from './bootstrap.ts';
import { clusterResources, clusterSummary, type ClusterFilter } from './clusters.ts';
import { ConfigDump, ConfigDumpError, withoutType, type SectionKind } from './config-dump.ts';
import { endpointResources, endpointSummary, hostResources, hostSummary, isClustersJson, type EndpointFilter } from './endpoints.ts';
import { listenerResources, listenerSummary, type ListenerFilter } from './listeners.ts';
import { routeResources, routeSummary, type RouteFilter } from './routes.ts';
import { secretSummary } from './secrets.ts';

/**
 * `remora proxy-config …`: istioctl's `proxy-config` tables, read from an Envoy admin
 * `/config_dump` — a live one (`--admin`, Remora's or Envoy's) or one saved to a file (`-f`).
 * Column layout, order, filters and wording are istioctl's, so the output can be compared
 * with what istioctl prints for an Envoy sidecar.
 */

interface ProxyConfigIo {
  readonly out: (s: string) => void;
  readonly err: (s: string) => void;
}

type Sub = 'clusters' | 'listeners' | 'routes' | 'endpoints' | 'secrets' | 'bootstrap' | 'all';

/** istioctl's names and aliases for each subcommand. */
const SUBCOMMANDS: Readonly<Record<string, Sub>> = {
  cluster: 'clusters', clusters: 'clusters', c: 'clusters',
  listener: 'listeners', listeners: 'listeners', l: 'listeners',
  route: 'routes', routes: 'routes', r: 'routes',
  endpoint: 'endpoints', endpoints: 'endpoints', ep: 'endpoints', eds: 'endpoints',
  secret: 'secrets', secrets: 'secrets', s: 'secrets',
  bootstrap: 'bootstrap', b: 'bootstrap',
  all: 'all', a: 'all',
};

export const DEFAULT_ADMIN = '127.0.0.1:15000';

/** What each subcommand asks the admin API for: istioctl's masks, EDS where endpoints are shown. */
const DUMP_QUERY: Readonly<Record<Sub, string>> = {
  clusters: '?mask=dynamic_active_clusters,dynamic_warming_clusters,static_clusters',
  listeners: '?mask=dynamic_listeners,static_listeners',
  routes: '?mask=dynamic_route_configs,static_route_configs',
  endpoints: '?include_eds=true',
  secrets: '?mask=dynamic_active_secrets,dynamic_warming_secrets',
  bootstrap: '?mask=bootstrap',
  all: '?include_eds=true',
};

interface Flag {
  readonly type: 'string' | 'boolean';
  readonly short?: string;
  readonly arg?: string;
  readonly help: string;
  readonly for: readonly Sub[];
}

const ALL_SUBS: readonly Sub[] = ['clusters', 'listeners', 'routes', 'endpoints', 'secrets', 'bootstrap', 'all'];

const FLAGS: Readonly<Record<string, Flag>> = {
  file: { type: 'string', short: 'f', arg: 'FILE', help: 'read an Envoy config dump saved as JSON ("-" reads stdin) instead of --admin', for: ALL_SUBS },
  admin: { type: 'string', arg: 'HOST:PORT', help: `fetch /config_dump from this admin API (default ${DEFAULT_ADMIN})`, for: ALL_SUBS },
  output: { type: 'string', short: 'o', arg: 'short|json|yaml', help: 'a table (short), or the selected resources as JSON or YAML (default short; bootstrap: json)', for: ALL_SUBS },
  fqdn: { type: 'string', arg: 'FQDN', help: 'clusters whose name contains this service FQDN', for: ['clusters', 'all'] },
  direction: { type: 'string', arg: 'DIR', help: 'clusters whose name contains this direction (inbound, outbound)', for: ['clusters', 'all'] },
  subset: { type: 'string', arg: 'SUBSET', help: 'clusters whose name contains this subset', for: ['clusters', 'all'] },
  port: { type: 'string', arg: 'PORT', help: 'clusters with |PORT| in their name; listeners and endpoints on this port', for: ['clusters', 'listeners', 'endpoints', 'all'] },
  address: { type: 'string', arg: 'ADDR', help: 'listeners on this address; endpoints at this address (ip:port in a config dump)', for: ['listeners', 'endpoints', 'all'] },
  type: { type: 'string', arg: 'HTTP|TCP|HTTP+TCP', help: 'listeners of this type', for: ['listeners', 'all'] },
  name: { type: 'string', arg: 'NAME', help: 'the route configuration with this name', for: ['routes', 'all'] },
  cluster: { type: 'string', arg: 'CLUSTER', help: 'endpoints of this cluster', for: ['endpoints'] },
  status: { type: 'string', arg: 'STATUS', help: 'endpoints with this health status (healthy, unhealthy, …)', for: ['endpoints'] },
  verbose: { type: 'boolean', help: 'one row per filter chain or route (default; --verbose=false for one row per listener or route table)', for: ['listeners', 'routes', 'all'] },
  'with-headers': { type: 'boolean', help: 'a heading line before each part', for: ['all'] },
  help: { type: 'boolean', short: 'h', help: 'show this help', for: ALL_SUBS },
};

const ABOUT: Readonly<Record<Sub, string>> = {
  clusters: 'Clusters: service FQDN, port, subset and direction (from Istio\'s cluster names), discovery type and\nthe DestinationRule behind each.',
  listeners: 'Listeners: address and port, and for each filter chain its match (SNI, transport, ALPN,\ndestination) and destination (route table or cluster).',
  routes: 'Route configurations: for each route its virtual host, domains, match and the VirtualService\nbehind it.',
  endpoints:
    'Endpoints from the dump\'s EDS section (/config_dump?include_eds=true): address, health status,\nlocality and cluster. With -f, Envoy\'s /clusters?format=json is read too and printed as istioctl\'s\n`endpoints` table (health and outlier check per host).',
  secrets: 'SDS secrets: each certificate\'s type, state, validity now, serial number and dates.',
  bootstrap: 'The bootstrap: as JSON by default; -o short prints the Istio and Envoy versions.',
  all: 'Everything, one part after another: versions, clusters, listeners, routes, secrets, endpoints.\nResource names carry their kind (cluster/, listener/, …); -o json|yaml prints the whole dump.',
};

export function proxyConfigHelpText(sub: Sub | null): string {
  if (sub === null) {
    return `usage: remora proxy-config <clusters|listeners|routes|endpoints|secrets|bootstrap|all> [-f FILE | --admin HOST:PORT] [-o short|json|yaml] [filters]

Prints istioctl's proxy-config tables from an Envoy admin /config_dump: a running proxy's
(--admin, default ${DEFAULT_ADMIN}; Remora's or Envoy's, the format is the same) or a saved one (-f).

  clusters (c)      clusters, with --fqdn, --port, --subset, --direction
  listeners (l)     listeners, with --address, --port, --type
  routes (r)        route configurations, with --name
  endpoints (ep)    endpoints, with --address, --port, --cluster, --status
  secrets (s)       SDS secrets and their certificates
  bootstrap (b)     the bootstrap, or the Istio and Envoy versions with -o short
  all (a)           all of the above

remora proxy-config <subcommand> --help shows its options.
`;
  }
  const lines = Object.entries(FLAGS)
    .filter(([, f]) => f.for.includes(sub))
    .map(([name, f]) => {
      const flag = `${f.short ? `-${f.short}, ` : '    '}--${name}${f.arg ? ` ${f.arg}` : ''}`;
      return `  ${flag.padEnd(34)} ${f.help}`;
    });
  return `usage: remora proxy-config ${sub} [-f FILE | --admin HOST:PORT] [-o short|json|yaml] [options]\n\n${ABOUT[sub]}\n\noptions:\n${lines.join('\n')}\n`;
}

class ProxyConfigUsageError extends Error {
  override readonly name = 'ProxyConfigUsageError';
}

/** The dump's text and where it came from (a file name or the admin URL), for messages. */
interface DumpSource {
  readonly text: string;
  readonly name: string;
}

/** `remora proxy-config …`; resolves with the exit status (0 printed, 1 the dump could not be read or printed, 2 usage). */
export async function runProxyConfig(argv: readonly string[], io: ProxyConfigIo): Promise<number> {
  const [word, ...rest] = argv;
  if (word === undefined || word === '--help' || word === '-h' || word === 'help') {
    io.out(proxyConfigHelpText(null));
    return word === undefined ? 2 : 0;
  }
  const sub = SUBCOMMANDS[word];
  if (sub === undefined) {
    io.err(`remora proxy-config: unknown subcommand "${word}"\n\n${proxyConfigHelpText(null)}`);
    return 2;
  }
  let opts: Options | 'help';
  try {
    opts = parseProxyConfigArgs(sub, rest);
  } catch (err) {
    if (err instanceof ProxyConfigUsageError) {
      io.err(`remora proxy-config ${sub}: ${err.message}\n\n${proxyConfigHelpText(sub)}`);
      return 2;
    }
    throw err;
  }
  if (opts === 'help') {
    io.out(proxyConfigHelpText(sub));
    return 0;
  }
  try {
    const source = opts.file !== null ? readSource(opts.file) : await fetchDump(opts.admin, DUMP_QUERY[sub]);
    try {
      print(sub, opts, source, io);
    } catch (err) {
      // Name the source in errors about its content (a field path alone does not say which dump).
      if (err instanceof ConfigDumpError && !err.message.startsWith(source.name)) throw new ConfigDumpError(`${source.name}: ${err.message}`);
      throw err;
    }
    return 0;
  } catch (err) {
    if (err instanceof ConfigDumpError) {
      io.err(`remora proxy-config ${sub}: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

interface Options {
  readonly file: string | null;
  readonly admin: string;
  readonly output: 'short' | 'json' | 'yaml';
  readonly clusters: ClusterFilter;
  readonly listeners: ListenerFilter;
  readonly routes: RouteFilter;
  readonly endpoints: EndpointFilter;
  readonly withHeaders: boolean;
}

function parseProxyConfigArgs(sub: Sub, argv: readonly string[]): Options | 'help' {
  const spec: Record<string, { type: 'string' | 'boolean'; short?: string }> = {};
  for (const [name, f] of Object.entries(FLAGS)) if (f.for.includes(sub)) spec[name] = { type: f.type, ...(f.short ? { short: f.short } : {}) };
  // istioctl users write Go's boolean flag form `--verbose=false`.
  const args = argv.map((a) => (a === '--verbose=false' ? '--no-verbose' : a === '--verbose=true' ? '--verbose' : a));
  let parsed;
  try {
    parsed = parseArgs({ args, options: spec, allowPositionals: true, allowNegative: true, strict: true });
  } catch (err) {
    throw new ProxyConfigUsageError((err as Error).message);
  }
  const v = parsed.values as Record<string, string | boolean | undefined>;
  if (v.help === true) return 'help';
  if (parsed.positionals.length > 0) {
    throw new ProxyConfigUsageError(`unexpected argument "${parsed.positionals[0]}": the dump comes from --admin HOST:PORT or -f FILE (there are no pods to name)`);
  }
  const s = (name: string): string => (typeof v[name] === 'string' ? (v[name] as string) : '');
  const file = typeof v.file === 'string' ? v.file : null;
  if (file !== null && v.admin !== undefined) throw new ProxyConfigUsageError('-f and --admin are two sources: pass one');
  if (file === '') throw new ProxyConfigUsageError('-f needs a file name (or "-" for stdin)');
  const output = s('output') || (sub === 'bootstrap' ? 'json' : 'short');
  if (output !== 'short' && output !== 'json' && output !== 'yaml') throw new ProxyConfigUsageError(`-o must be short, json or yaml, got "${output}"`);
  const portRaw = s('port');
  if (portRaw !== '' && (!/^\d+$/.test(portRaw) || Number(portRaw) > 65535)) throw new ProxyConfigUsageError(`--port must be a port number (0-65535), got "${portRaw}"`);
  const port = portRaw === '' ? 0 : Number(portRaw);
  const verbose = v.verbose !== false;
  return {
    file,
    admin: adminAddress(typeof v.admin === 'string' ? v.admin : DEFAULT_ADMIN),
    output,
    clusters: { fqdn: s('fqdn'), port, subset: s('subset'), direction: s('direction') },
    listeners: { address: s('address'), port, type: s('type'), verbose },
    routes: { name: s('name'), verbose },
    endpoints: { address: s('address'), port, cluster: s('cluster'), status: s('status') },
    withHeaders: v['with-headers'] === true,
  };
}

/** `HOST:PORT`, `[v6]:PORT`, or a bare port on 127.0.0.1. */
function adminAddress(raw: string): string {
  const m = /^(?:(\[[0-9a-fA-F:.]+\]|[^\s:[\]/]+):)?(\d+)$/.exec(raw);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !(port >= 1 && port <= 65535)) throw new ProxyConfigUsageError(`--admin must be HOST:PORT (like ${DEFAULT_ADMIN}), got "${raw}"`);
  return `${m[1] ?? '127.0.0.1'}:${port}`;
}

function readSource(file: string): DumpSource {
  const name = file === '-' ? 'stdin' : file;
  try {
    return { text: readFileSync(file === '-' ? 0 : file, 'utf8'), name };
  } catch (err) {
    throw new ConfigDumpError(`cannot read ${name}: ${(err as Error).message}`);
  }
}

const FETCH_TIMEOUT_MS = 10_000;

async function fetchDump(admin: string, query: string): Promise<DumpSource> {
  const url = `http://${admin}/config_dump${query}`;
  let res: Response;
  let text: string;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
    text = await res.text();
  } catch (err) {
    const cause = (err as { cause?: unknown }).cause;
    const why = cause instanceof Error ? cause.message : (err as Error).message;
    throw new ConfigDumpError(`cannot reach the admin API at ${admin} (GET ${url}): ${why}`);
  }
  if (res.status !== 200) {
    const first = text.split('\n', 1)[0]!.trim().slice(0, 200);
    throw new ConfigDumpError(`${url}: the admin API answered ${res.status}${first === '' ? '' : `: ${first}`}`);
  }
  return { text, name: url };
}

function print(sub: Sub, opts: Options, source: DumpSource, io: ProxyConfigIo): void {
  if (sub === 'endpoints' && opts.file !== null && isClustersJsonText(source.text)) {
    const json = JSON.parse(source.text) as Parameters<typeof hostSummary>[0];
    io.out(opts.output === 'short' ? hostSummary(json, opts.endpoints) : render(hostResources(json, opts.endpoints), opts.output));
    return;
  }
  const dump = ConfigDump.parse(source.text, source.name);
  const structured = opts.output !== 'short';
  switch (sub) {
    case 'clusters':
      return io.out(structured ? render(clusterResources(dump, opts.clusters), opts.output) : clusterSummary(dump, opts.clusters, false));
    case 'listeners':
      return io.out(structured ? render(listenerResources(dump, opts.listeners), opts.output) : listenerSummary(dump, opts.listeners, false));
    case 'routes':
      return io.out(structured ? render(routeResources(dump, opts.routes), opts.output) : routeSummary(dump, opts.routes, false));
    case 'endpoints':
      return io.out(structured ? render(endpointResources(dump, opts.endpoints), opts.output) : endpointSummary(dump, opts.endpoints, false));
    case 'secrets':
      return io.out(structured ? renderSection(dump, 'secrets', opts.output) : secretSummary(dump, false));
    case 'bootstrap':
      return io.out(structured ? renderSection(dump, 'bootstrap', opts.output) : bootstrapSummary(dump));
    case 'all':
      if (opts.output === 'json') return io.out(`${source.text}\n`);
      if (opts.output === 'yaml') return io.out(render(dump.json, 'yaml'));
      return printAll(dump, opts, io);
  }
}

function isClustersJsonText(text: string): boolean {
  try {
    return isClustersJson(JSON.parse(text));
  } catch {
    return false;
  }
}

/** Every part in istioctl's order; a part that fails ends the output there, after what was printed. */
function printAll(dump: ConfigDump, opts: Options, io: ProxyConfigIo): void {
  const parts: ReadonlyArray<readonly [string, () => string]> = [
    ['BOOTSTRAP INFO', () => bootstrapSummary(dump)],
    ['CLUSTER INFO', () => clusterSummary(dump, opts.clusters, true)],
    ['LISTENER INFO', () => listenerSummary(dump, opts.listeners, true)],
    ['ROUTE INFO', () => routeSummary(dump, opts.routes, true)],
    ['SECRET INFO', () => secretSummary(dump, true)],
    ['ENDPOINTS INFO', () => endpointSummary(dump, opts.endpoints, true)],
  ];
  parts.forEach(([heading, part], i) => {
    if (i > 0) io.out('\n');
    if (opts.withHeaders) io.out(`------ ${heading} ------\n\n`);
    io.out(part());
  });
}

/** A dump section as a message (its `@type` dropped), as istioctl prints secrets and the bootstrap. */
function renderSection(dump: ConfigDump, kind: SectionKind, output: 'json' | 'yaml'): string {
  const section = dump.requireSection(kind);
  return render(withoutType(section.json), output);
}

/** JSON with four-space indents, or YAML with sorted keys (as istioctl converts JSON), plus istioctl's closing newline. */
function render(value: unknown, output: 'json' | 'yaml'): string {
  if (output === 'json') return `${JSON.stringify(value, null, 4)}\n`;
  return `${toYaml(value, { sortMapEntries: true, indentSeq: false, lineWidth: 0 })}\n`;
}
