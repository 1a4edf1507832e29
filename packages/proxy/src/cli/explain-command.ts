/**
 * `remora explain [METHOD] URL [-H 'name: value']…`: asks a running proxy's admin API
 * (`POST /explain`) what its live config would do with the request, without sending it, and
 * prints the listener, virtual host, route (and why earlier routes did not match), filter
 * verdicts, clusters, endpoints, retries and timeout.
 */
import { parseArgs } from 'node:util';

interface Io {
  readonly out: (s: string) => void;
  readonly err: (s: string) => void;
}

const DEFAULT_ADMIN = '127.0.0.1:15000';
const TIMEOUT_MS = 10_000;

export const EXPLAIN_HELP = `usage: remora explain [--admin HOST:PORT] [METHOD] URL [-H 'name: value']… [options]

Says what a running proxy's live config would do with a request, without sending it: which
listener, virtual host and route take it (and why each earlier route of the host does not),
each filter's verdict (the AuthorizationPolicy rule that allows or denies it, the JWT provider
and why a token fails, rate-limit tokens left, fault odds), the weighted clusters, their
endpoints (healthy or ejected, locality), the retry policy and the timeout. The admin API's
POST /explain does the same with JSON.

  remora explain GET http://reviews:9080/x -H 'end-user: jason'
  remora explain --principal cluster.local/ns/default/sa/sleep --port 9080 POST http://productpage:9080/api

options:
      --admin HOST:PORT      the proxy's admin API (default ${DEFAULT_ADMIN})
  -H, --header 'N: V'        a request header (repeatable)
      --listener NAME        explain on this listener (default: picked by direction and port)
      --port N               the destination port to pick the listener by (an inbound app port)
      --direction D          inbound, outbound or gateway (default: inbound with --principal,
                             else outbound; a gateway's listeners on a gateway)
      --source-ip IP         the peer's address (source.ip; default 127.0.0.1)
      --principal P          the peer's mTLS identity, cluster.local/ns/NS/sa/SA (inbound)
  -o, --output FORMAT        text (default) or json
  -h, --help                 show this help
`;

export async function runExplain(argv: readonly string[], io: Io): Promise<number> {
  let v;
  try {
    v = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: {
        admin: { type: 'string' },
        header: { type: 'string', short: 'H', multiple: true },
        listener: { type: 'string' },
        port: { type: 'string' },
        direction: { type: 'string' },
        'source-ip': { type: 'string' },
        principal: { type: 'string' },
        output: { type: 'string', short: 'o' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    io.err(`remora explain: ${(err as Error).message}\n\n${EXPLAIN_HELP}`);
    return 2;
  }
  const o = v.values;
  if (o.help === true) {
    io.out(EXPLAIN_HELP);
    return 0;
  }
  const usage = (msg: string): number => {
    io.err(`remora explain: ${msg}\n\n${EXPLAIN_HELP}`);
    return 2;
  };
  const pos = v.positionals;
  if (pos.length === 0 || pos.length > 2) return usage('give the request as [METHOD] URL');
  const [method, url] = pos.length === 2 ? [pos[0]!, pos[1]!] : ['GET', pos[0]!];
  if (!/^https?:\/\//i.test(url)) return usage(`URL must be absolute (http://host[:port]/path): ${url}`);
  const output = o.output ?? 'text';
  if (output !== 'text' && output !== 'json') return usage(`-o must be text or json, not ${output}`);
  const headers: Record<string, string> = {};
  for (const h of o.header ?? []) {
    const colon = h.indexOf(':', 1);
    if (colon < 0) return usage(`-H wants 'name: value', got ${JSON.stringify(h)}`);
    const name = h.slice(0, colon).trim().toLowerCase();
    const value = h.slice(colon + 1).trim();
    headers[name] = name in headers ? `${headers[name]},${value}` : value;
  }
  let port: number | undefined;
  if (o.port !== undefined) {
    port = Number(o.port);
    if (!Number.isInteger(port) || port < 1 || port > 65535) return usage(`--port must be a port number, not ${o.port}`);
  }
  const body = {
    method,
    url,
    headers,
    ...(o.listener !== undefined ? { listener: o.listener } : {}),
    ...(port !== undefined ? { port } : {}),
    ...(o.direction !== undefined ? { direction: o.direction } : {}),
    ...(o['source-ip'] !== undefined ? { sourceIp: o['source-ip'] } : {}),
    ...(o.principal !== undefined ? { principal: o.principal } : {}),
  };
  const admin = o.admin ?? DEFAULT_ADMIN;
  const target = `http://${admin}/explain${output === 'text' ? '?format=text' : ''}`;
  let res: Response;
  try {
    res = await fetch(target, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(TIMEOUT_MS) });
  } catch (err) {
    io.err(`remora explain: cannot reach the admin API at ${admin}: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}\n`);
    return 1;
  }
  const text = await res.text();
  if (!res.ok) {
    io.err(`remora explain: ${admin} answered ${res.status}: ${text}`);
    return 1;
  }
  io.out(text.endsWith('\n') ? text : `${text}\n`);
  return 0;
}
