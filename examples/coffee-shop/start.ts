/**
 * The coffee-shop demo: `sh scripts/dev.sh demo` runs this file.
 *
 *   node examples/coffee-shop/start.ts                   start the mesh, print curls, run until Ctrl-C
 *   node examples/coffee-shop/start.ts --check           start, drive it, print OK/FAIL per check, stop; exit 0/1
 *   node examples/coffee-shop/start.ts --port-base 20000 every port moved (see demo.ts), to run beside another demo
 *   node examples/coffee-shop/start.ts --port-base auto  … on a free range
 *
 * Environment: COFFEE_SHOP_PORT_BASE (like --port-base), COFFEE_SHOP_CHECK=1 (like --check),
 * REMORA_CLI (another build of Remora's CLI).
 */
import { parseArgs } from 'node:util';
import { relative } from 'node:path';
import { runChecks, startCoffeeShop, type CheckResult, type CoffeeShop, type CoffeeShopOptions, type LogStream } from './demo.ts';

const USAGE = `usage: node examples/coffee-shop/start.ts [--check] [--verbose] [--port-base N|auto]

  --check           start the mesh, run the demo's requests and assert every answer, stop; exit 0 when all pass
  --verbose         with --check: print the proxies' logs as they come (otherwise only when a check fails)
  --port-base N     lay every port out from N (gateway N, its admin N+1, …) instead of 8080/15000/…; "auto" picks a free range
  --no-hot-reload   with --check: skip the check that edits the YAML (a private copy) and waits for the reload

env: COFFEE_SHOP_PORT_BASE, COFFEE_SHOP_CHECK=1, REMORA_CLI`;

function parse(): { check: boolean; verbose: boolean; hotReload: boolean; portBase: number | 'auto' | undefined } {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        check: { type: 'boolean', default: false },
        verbose: { type: 'boolean', short: 'v', default: false },
        'port-base': { type: 'string' },
        'no-hot-reload': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (err) {
    console.error(`${(err as Error).message}\n\n${USAGE}`);
    process.exit(2);
  }
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const rawBase = values['port-base'] ?? process.env.COFFEE_SHOP_PORT_BASE;
  let portBase: number | 'auto' | undefined;
  if (rawBase !== undefined && rawBase !== '') {
    portBase = rawBase === 'auto' ? 'auto' : Number(rawBase);
    if (portBase !== 'auto' && !Number.isInteger(portBase)) {
      console.error(`--port-base: expected a number or "auto", got ${rawBase}`);
      process.exit(2);
    }
  }
  const envCheck = process.env.COFFEE_SHOP_CHECK;
  return {
    check: values.check || (envCheck !== undefined && envCheck !== '' && envCheck !== '0' && envCheck !== 'false'),
    verbose: values.verbose,
    hotReload: !values['no-hot-reload'],
    portBase,
  };
}

/** The mesh as text, aligned whatever the ports' widths. */
function diagram(p: CoffeeShop['ports']): string {
  const head = `   curl ─► gateway :${p.gateway} ─`;
  const pad = ' '.repeat(head.length);
  const order = `${head}┬─ /order ─mTLS─► order-sidecar inbound :${p.sidecarInbound} (STRICT) ─► order v1 :${p.order}`;
  const app = order.lastIndexOf('order v1') + 2; // the column of the app's line down to its sidecar
  const outbound = `${pad}│                 order-sidecar outbound :${p.sidecarOutbound} `;
  return [
    order,
    `${pad}│${' '.repeat(app - pad.length - 1)}│ its HTTP proxy`,
    `${outbound}◄${'─'.repeat(Math.max(1, app - outbound.length - 1))}┘`,
    `${pad}│                     ├─► payment   (x-canary → v2, else 90/10)`,
    `${pad}│                     └─► inventory (round robin)`,
    `${pad}├─ /payment ───► payment v1 :${p.paymentV1} (90%) │ payment v2 :${p.paymentV2} (10%, or x-canary: true)`,
    `${pad}└─ /inventory ─► inventory v1 :${p.inventoryA} │ :${p.inventoryB} (round robin)`,
  ].join('\n');
}

function banner(shop: CoffeeShop): string {
  const p = shop.ports;
  const gw = `localhost:${p.gateway}`;
  const rel = relative(process.cwd(), shop.meshDir);
  const yaml = rel === '' ? '.' : rel.startsWith('..') ? shop.meshDir : rel;
  const inbound = `localhost:${p.sidecarInbound}`;
  const payment = shop.certs.identities.payment;
  const editable = shop.meshIsCopy ? `${yaml}/gateway.yaml (a copy with this run's ports; removed on exit)` : `${yaml}/gateway.yaml`;
  return `
☕  The coffee shop is open — a Remora mesh on 127.0.0.1

${diagram(p)}

Try:
  curl -s ${gw}/order                                 # order v1 calls payment + inventory through its sidecar
  curl -s -H 'x-canary: true' ${gw}/payment           # header match → payment v2
  curl -s -H 'x-canary: true' ${gw}/order             # order propagates x-canary; its sidecar picks v2
  curl -s ${gw}/inventory                             # run it twice: the two inventory pods take turns
  for i in $(seq 50); do curl -s ${gw}/payment | grep -o '"version":"v[0-9]"'; done | sort | uniq -c   # the 90/10 split

Zero trust (mesh/security.yaml; workload certificates from \`remora ca\` in ${shop.certs.dir}, removed on exit):
  curl -s ${gw}/order | grep -o '"xfcc":"[^,]*'   # order saw the gateway's SPIFFE ID: the gateway spoke mTLS to its sidecar
  curl -sv ${inbound}/order                      # plaintext straight to the sidecar: connection reset by peer, as Envoy does (PeerAuthentication STRICT)
  curl -sk --cert ${payment}/cert-chain.pem --key ${payment}/key.pem https://${inbound}/order
      # mTLS with a valid mesh identity (payment's) that is not the gateway's: 403 RBAC: access denied (AuthorizationPolicy)
  curl -s localhost:${p.sidecarAdmin}/stats/prometheus | grep 'istio_requests_total{reporter="destination"'
      # inbound requests: connection_security_policy="mutual_tls", source_principal = the caller's SPIFFE ID

Proxies:
  curl -s localhost:${p.gatewayAdmin}/clusters                       # gateway: clusters, endpoints, health
  curl -s localhost:${p.gatewayAdmin}/stats/prometheus | grep istio_requests_total
  curl -s localhost:${p.gatewayAdmin}/config_dump | less
  curl -s localhost:${p.sidecarAdmin}/stats/prometheus | grep istio_requests_total   # order sidecar (reporter=source/destination)

Hot reload: edit the weights of route "payment" in
  ${editable}
  (e.g. 90/10 → 50/50), save, and rerun the loop: no restart.

Access logs follow, tagged [gateway] and [order-sidecar]. Ctrl-C stops everything.
`;
}

async function main(): Promise<void> {
  const args = parse();

  const logs: string[] = [];
  const quietLog = (tag: string, line: string, stream: LogStream): void => {
    const text = `[${tag}]${stream === 'stderr' ? ' (stderr)' : ''} ${line}`;
    if (args.verbose) console.log(text);
    else logs.push(text);
  };
  const opts: CoffeeShopOptions = {
    ...(args.portBase !== undefined ? { portBase: args.portBase } : {}),
    // The check edits the YAML: never the files in the repository.
    ...(args.check ? { copyMesh: true, onLog: quietLog } : {}),
  };

  // Ctrl-C / SIGTERM at any time: a graceful stop once the shop is up; before that, exit at
  // once (the exit hook in demo.ts kills whatever already started).
  let shop: CoffeeShop | undefined;
  let signals = 0;
  const shutdown = (why: string, code: number): void => {
    if (shop === undefined || ++signals > 1) {
      console.error(`\ncoffee-shop: ${why}, stopping at once`);
      process.exit(code === 0 ? 130 : code);
    }
    console.log(`\ncoffee-shop: ${why}, stopping…`);
    void shop.stop().then(() => {
      console.log('coffee-shop: closed');
      process.exit(code);
    });
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => shutdown(sig, args.check ? 1 : 0));
  // Orphaned (the parent died without passing a signal on, as the sh wrapper of
  // node_modules/.bin/node does on SIGTERM): stop as if signalled rather than run on.
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) shutdown('parent process gone', args.check ? 1 : 0);
  }, 500).unref();

  console.log(args.check ? 'coffee-shop: starting the mesh for a check…' : 'coffee-shop: starting the backends, the order sidecar and the gateway…');
  try {
    shop = await startCoffeeShop(opts);
  } catch (err) {
    if (!args.verbose && logs.length > 0) console.error(logs.join('\n'));
    console.error(`coffee-shop: ${(err as Error).message}`);
    process.exit(1);
  }

  if (args.check) {
    const print = (r: CheckResult): void => console.log(`${r.ok ? 'OK  ' : 'FAIL'}  ${r.name}\n      ${r.detail}`);
    let results: CheckResult[] = [];
    try {
      results = await runChecks(shop, { hotReload: args.hotReload, onResult: print });
    } finally {
      await shop.stop();
    }
    const failed = results.filter((r) => !r.ok).length;
    if (failed > 0 && !args.verbose) {
      console.log('\n--- proxy output ---');
      console.log(logs.join('\n'));
      console.log('--- commands ---');
      for (const [tag, cmd] of Object.entries(shop.commands)) console.log(`${tag}: node ${cmd.join(' ')}`);
    }
    console.log(failed === 0 ? `\ncoffee-shop: all ${results.length} checks passed` : `\ncoffee-shop: ${failed} of ${results.length} checks FAILED`);
    process.exit(failed === 0 ? 0 : 1);
  }

  console.log(banner(shop));
  void shop.unexpectedExit.then((e) => {
    const how = e.signal !== null ? `signal ${e.signal}` : `exit code ${e.code}`;
    shutdown(`${e.tag} exited on its own (${how})`, 1);
  });
}

await main();
