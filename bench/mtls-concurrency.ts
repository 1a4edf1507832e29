// mTLS between two Remoras under concurrency: gateway → STRICT sidecar over auto mTLS, each
// proxy its own process (the CLI). One warm-up request (so the gateway holds a TLS session for
// the sidecar, as any gateway that has served before does), then N requests at concurrency C;
// prints the errors, req/s and how many upstream handshakes the sidecar saw resumed.
// Run by hand; not part of `pnpm bench`. Bounded: N requests, 60 s.
//
//   node bench/mtls-concurrency.ts [--requests 2000] [--concurrency 50]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import { DevCa, writeWorkloadFiles } from '../packages/proxy/dist/index.js';
import { startBackend } from '../test/helpers/backends.ts';
import { freePort } from '../test/helpers/net.ts';
import { MeshDir, spawnRemora } from '../test/helpers/remora.ts';

const { values: args } = parseArgs({ options: { requests: { type: 'string', default: '2000' }, concurrency: { type: 'string', default: '50' } } });
const N = Number(args.requests);
const C = Number(args.concurrency);
const work = mkdtempSync(join(tmpdir(), 'mtls-load-'));
const ca = await DevCa.create();
await writeWorkloadFiles(join(work, 'sc'), await ca.issueWorkload({ namespace: 'default', serviceAccount: 'productpage' }));
await writeWorkloadFiles(join(work, 'gw'), await ca.issueWorkload({ namespace: 'istio-system', serviceAccount: 'istio-ingressgateway-service-account' }));
const app = await startBackend('productpage', (_req, res) => res.end('ok'));
const scMesh = new MeshDir({ 'pa.yaml': 'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: default, namespace: istio-system }\nspec: { mtls: { mode: STRICT } }\n' });
const sidecar = await spawnRemora('sidecar', [scMesh.dir], ['--app-port', String(app.port), '--labels', 'app=productpage', '--namespace', 'default', '--service-account', 'productpage', '--certs-dir', join(work, 'sc'), '--access-log-format', 'off']);
const gwPort = await freePort();
const gwMesh = new MeshDir({
  'mesh.yaml': `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: gw, namespace: default }
spec:
  selector: { istio: ingressgateway }
  servers: [{ port: { number: ${gwPort}, name: http, protocol: HTTP }, hosts: ["*"] }]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: productpage, namespace: default }
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{ route: [{ destination: { host: productpage, port: { number: 9080 } } }] }]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: productpage, namespace: default }
spec:
  hosts: ["productpage"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  endpoints: [{ address: 127.0.0.1, ports: { http: ${sidecar.ports.inbound} }, labels: { app: productpage, security.istio.io/tlsMode: istio }, serviceAccount: productpage }]
`,
});
const gw = await spawnRemora('gateway', [gwMesh.dir], ['--labels', 'istio=ingressgateway', '--certs-dir', join(work, 'gw'), '--access-log-format', 'off']);
// One request first, as a gateway that has served before: its pool holds a session for the sidecar.
const warm = await fetch(`http://127.0.0.1:${gwPort}/`, { headers: { host: 'shop.example.com' } });
console.log(`warm-up: ${warm.status}`);
await warm.arrayBuffer();
const pool = new Pool(`http://127.0.0.1:${gwPort}`, { connections: C });
const codes = new Map<string, number>();
let next = 0;
const deadline = Date.now() + 60_000;
const started = performance.now();
await Promise.all(Array.from({ length: C }, async () => {
  while (next < N && Date.now() < deadline) {
    next++;
    let k: string;
    try {
      const r = await pool.request({ path: '/', method: 'GET', headers: { host: 'shop.example.com' }, headersTimeout: 10_000, bodyTimeout: 10_000 });
      await r.body.dump();
      k = String(r.statusCode);
    } catch (e) {
      k = (e as Error).message;
    }
    codes.set(k, (codes.get(k) ?? 0) + 1);
  }
}));
const secs = (performance.now() - started) / 1000;
const done = [...codes.values()].reduce((a, b) => a + b, 0);
const ok = codes.get('200') ?? 0;
console.log(`requests=${done} concurrency=${C} ok=${ok} errors=${done - ok} seconds=${secs.toFixed(2)} req/s=${(done / secs).toFixed(0)} codes=${JSON.stringify(Object.fromEntries(codes))}`);
const stats = await (await fetch(`http://127.0.0.1:${sidecar.ports.admin}/stats`)).text();
const sum = (name: string): number => [...stats.matchAll(new RegExp(`\\.ssl\\.${name}: (\\d+)`, 'g'))].reduce((a, m) => a + Number(m[1]), 0);
console.log(`sidecar: ssl.handshake=${sum('handshake')} ssl.session_reused=${sum('session_reused')} ssl.connection_error=${sum('connection_error')}`);
await pool.close();
await gw.stop();
await sidecar.stop();
await app.close();
gwMesh.cleanup();
scMesh.cleanup();
rmSync(work, { recursive: true, force: true });
