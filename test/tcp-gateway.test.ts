// Gateway TCP servers end to end, after Istio's "TCP Traffic Shifting" task: two versions of a
// TCP echo service behind the gateway's TCP port, shifted by VirtualService `tcp` weights, hot
// reloaded, with Envoy's TCP access log lines; an upstream that refuses gives UF.
import { createServer, connect, type Server, type AddressInfo } from 'node:net';
import t from 'tap';
import { request } from './helpers/http.ts';
import { freePorts, waitFor } from './helpers/net.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';

/** Istio's tcp-echo: answers each line with `<prefix> <line>`. */
async function tcpEcho(prefix: string): Promise<{ server: Server; port: number; connections: number }> {
  const state = { connections: 0 };
  const server = createServer((s) => {
    state.connections++;
    s.setEncoding('utf8');
    let buf = '';
    s.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        s.write(`${prefix} ${buf.slice(0, nl)}\n`);
        buf = buf.slice(nl + 1);
      }
    });
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return Object.defineProperty({ server, port: (server.address() as AddressInfo).port }, 'connections', { get: () => state.connections }) as {
    server: Server;
    port: number;
    connections: number;
  };
}

/** One connection: sends a line, reads the answer line (or '' when closed without one). */
function echo(port: number, line: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port }, () => s.write(`${line}\n`));
    s.setEncoding('utf8');
    let got = '';
    const timer = setTimeout(() => s.destroy(), 5_000);
    s.on('data', (d: string) => {
      got += d;
      if (got.includes('\n')) s.end();
    });
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      resolve(got.trim());
    });
  });
}

const services = (v1: number, v2: number, dead: number) => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: tcp-echo, namespace: default }
spec:
  hosts: [tcp-echo]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9000, name: tcp, protocol: TCP }]
  endpoints:
  - { address: 127.0.0.1, ports: { tcp: ${v1} }, labels: { version: v1 } }
  - { address: 127.0.0.1, ports: { tcp: ${v2} }, labels: { version: v2 } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: gone, namespace: default }
spec:
  hosts: [gone]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9000, name: tcp, protocol: TCP }]
  endpoints:
  - { address: 127.0.0.1, ports: { tcp: ${dead} } }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: tcp-echo, namespace: default }
spec:
  host: tcp-echo
  subsets:
  - { name: v1, labels: { version: v1 } }
  - { name: v2, labels: { version: v2 } }
`;

const gatewayYaml = (port: number, deadPort: number) => `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: tcp-echo-gateway, namespace: default }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: ${port}, name: tcp, protocol: TCP }
    hosts: ["*"]
  - port: { number: ${deadPort}, name: tcp-gone, protocol: TCP }
    hosts: ["*"]
`;

const routes = (port: number, deadPort: number, v1: number, v2: number) => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: tcp-echo, namespace: default }
spec:
  hosts: ["*"]
  gateways: [tcp-echo-gateway]
  tcp:
  - match: [{ port: ${port} }]
    route:
    - { destination: { host: tcp-echo, port: { number: 9000 }, subset: v1 }, weight: ${v1} }
    - { destination: { host: tcp-echo, port: { number: 9000 }, subset: v2 }, weight: ${v2} }
  - match: [{ port: ${deadPort} }]
    route: [{ destination: { host: gone, port: { number: 9000 } } }]
`;

t.test('TCP traffic shifting through the gateway, reloads, access log, refused upstream', async (t) => {
  const one = await tcpEcho('one');
  const two = await tcpEcho('two');
  const [port, deadGwPort, deadPort] = (await freePorts(3)) as [number, number, number];
  const mesh = new MeshDir({
    'services.yaml': services(one.port, two.port, deadPort),
    'gateway.yaml': gatewayYaml(port, deadGwPort),
    'routes.yaml': routes(port, deadGwPort, 100, 0),
  });
  const remora = await startRemora('gateway', [mesh.dir]);
  t.teardown(async () => {
    await remora.stop();
    one.server.close();
    two.server.close();
    mesh.cleanup();
  });

  // All traffic to v1.
  for (let i = 0; i < 10; i++) t.equal(await echo(port, `hello ${i}`), `one hello ${i}`);

  // 80/20, as the task does it; a hot reload, no restart.
  mesh.write('routes.yaml', routes(port, deadGwPort, 80, 20));
  await waitFor('the 80/20 routes', async () => (await echo(port, 'probe')).startsWith('two'), 15_000);
  const n = 400;
  let v2 = 0;
  for (let i = 0; i < n; i++) if ((await echo(port, 'x')).startsWith('two')) v2++;
  t.ok(v2 > n * 0.13 && v2 < n * 0.27, `about 20% to v2 (got ${v2} of ${n})`);

  // Envoy's TCP access log line: no request, bytes both ways, the upstream and its cluster.
  await waitFor('TCP log lines', () => remora.accessLog.some((l) => l.includes('outbound|9000|v2|tcp-echo.default.svc.cluster.local')));
  const line = remora.accessLog.find((l) => l.includes('outbound|9000|v1|tcp-echo.default.svc.cluster.local'))!;
  t.match(line, new RegExp(`"- - -" 0 - - - "-" \\d+ \\d+ \\d+ - "-" "-" "-" "-" "127\\.0\\.0\\.1:${one.port}" outbound\\|9000\\|v1\\|tcp-echo\\.default\\.svc\\.cluster\\.local - 127\\.0\\.0\\.1:${port} 127\\.0\\.0\\.1:\\d+ - -$`));

  // An upstream that refuses: the client's connection is closed, the log says UF.
  t.equal(await echo(deadGwPort, 'anyone?'), '');
  await waitFor('UF line', () => remora.accessLog.some((l) => l.includes(`127.0.0.1:${deadPort}`)));
  t.match(remora.accessLog.find((l) => l.includes(`127.0.0.1:${deadPort}`)), /"- - -" 0 UF - - "ECONNREFUSED" /);

  // Istio's TCP metrics, by upstream version and final flags.
  const metrics = (await request(remora.ports.admin, '/stats/prometheus')).body.split('\n');
  const value = (name: string, ...parts: string[]): number =>
    metrics.filter((l) => l.startsWith(`${name}{`) && parts.every((p) => l.includes(p))).reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  const opened = value('istio_tcp_connections_opened_total', 'request_protocol="tcp"', 'destination_service="tcp-echo.default.svc.cluster.local"');
  t.ok(opened >= 10 + n + 1, `connections opened to tcp-echo: ${opened}`);
  t.equal(value('istio_tcp_connections_opened_total', 'destination_version="v2"'), two.connections, 'v2\'s series counts what v2 saw');
  t.equal(value('istio_tcp_connections_closed_total', 'destination_service="tcp-echo.default.svc.cluster.local"'), opened, 'each one closed');
  t.ok(value('istio_tcp_received_bytes_total', 'destination_service="tcp-echo.default.svc.cluster.local"') >= n * 2, 'bytes from the clients counted');
  t.ok(value('istio_tcp_sent_bytes_total', 'destination_service="tcp-echo.default.svc.cluster.local"') >= n * 6, 'bytes to the clients counted');
  t.equal(value('istio_tcp_connections_closed_total', 'destination_service="gone.default.svc.cluster.local"', 'response_flags="UF"'), 1, 'the refused one, closed with UF');
  t.equal(value('istio_tcp_connections_opened_total', 'destination_service="gone.default.svc.cluster.local"'), 0, 'and never opened');
});
