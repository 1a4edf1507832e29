// Config changes over ADS while traffic flows. A steady client loop runs against a gateway
// while the control plane pushes snapshot after snapshot (the weights flip between v1 and
// v2, a cluster comes and goes): no request fails. And endpoints change by
// ClusterLoadAssignment alone, with no CDS update: a new endpoint gets traffic, a removed
// one gets none, and the admin's /clusters shows the membership.
import { Agent } from 'node:http';
import t from 'tap';
import { startBackend } from './helpers/backends.ts';
import { CLUSTER, ENDPOINTS, ROUTES } from './helpers/control-plane.ts';
import { request } from './helpers/http.ts';
import { doc, gateway, serviceEntry } from './helpers/mesh.ts';
import { freePort, sleep, waitFor } from './helpers/net.ts';
import { envoyFor, startGateway, weighted } from './helpers/xds-mesh.ts';

const XDS_MODES = ['sotw', 'delta'] as const;


for (const mode of XDS_MODES) {
  t.test(`${mode}: 20 snapshots pushed under a steady 20-connection load lose no request`, async (t) => {
    const v1 = await startBackend('v1');
    const v2 = await startBackend('v2');
    const spare = await startBackend('spare');
    t.teardown(() => Promise.all([v1.close(), v2.close(), spare.close()]));
    const port = await freePort();
    const gw = await startGateway(mode, weighted(port, v1.port, v2.port, 0, null));
    t.teardown(() => gw.stop());
    t.equal((await request(port, '/', { headers: { host: 'web.example' } })).headers['x-backend'], 'v1');

    const agent = new Agent({ keepAlive: true, maxSockets: 20 });
    t.teardown(() => agent.destroy());
    const counts = new Map<string, number>();
    const failures: string[] = [];
    let stop = false;
    const client = async (): Promise<void> => {
      while (!stop) {
        try {
          const r = await request(port, '/', { agent, headers: { host: 'web.example' } });
          const key = `${r.status} ${String(r.headers['x-backend'])}`;
          counts.set(key, (counts.get(key) ?? 0) + 1);
          if (r.status !== 200 || (r.headers['x-backend'] !== 'v1' && r.headers['x-backend'] !== 'v2')) failures.push(`${key}: ${r.body.slice(0, 200)}`);
        } catch (e) {
          failures.push((e as Error).message);
        }
      }
    };
    const clients = Array.from({ length: 20 }, client);
    // 20 pushes over ~4 s: odd ones send everything to v2 and add a cluster, even ones undo both.
    const versions: string[] = [];
    for (let i = 1; i <= 20; i++) {
      await sleep(200);
      versions.push(gw.update(weighted(port, v1.port, v2.port, i % 2 === 1 ? 100 : 0, i % 2 === 1 ? spare.port : null)));
    }
    await sleep(200);
    stop = true;
    await Promise.all(clients);

    const total = [...counts.values()].reduce((a, b) => a + b, 0);
    t.same(failures, [], `no request failed (${total} requests: ${JSON.stringify(Object.fromEntries(counts))})`);
    t.ok(total > 200, `the load was steady (${total} requests)`);
    t.ok((counts.get('200 v1') ?? 0) > 0 && (counts.get('200 v2') ?? 0) > 0, 'both v1 and v2 served');
    const last = versions.at(-1)!;
    t.equal((await gw.cp!.verdict(CLUSTER, last)).ack, true, 'the last cluster set is ACKed');
    t.equal((await gw.cp!.verdict(ROUTES, last)).ack, true, 'the last route table is ACKed');
    t.equal(gw.cp!.verdicts.filter((v) => !v.ack).length, 0, 'nothing was NACKed');
    t.equal((await request(port, '/', { headers: { host: 'web.example' } })).headers['x-backend'], 'v1', 'the last snapshot (all to v1) serves');
    const clusters = (await request(gw.remora.ports.admin, '/clusters?format=json')).json<{ clusters: { name: string }[] }>().clusters.map((c) => c.name);
    t.notOk(clusters.includes('outbound|80||spare.example'), 'the cluster the last snapshot dropped is gone');
  });

  t.test(`${mode}: endpoints added and removed by ClusterLoadAssignment alone`, async (t) => {
    const [a, b, c] = [await startBackend('a'), await startBackend('b'), await startBackend('c')];
    t.teardown(() => Promise.all([a.close(), b.close(), c.close()]));
    const port = await freePort();
    const yaml = doc(
      gateway('gw', port),
      serviceEntry('web', 'web.example', [{ port: a.port }]),
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: web }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route: [{ destination: { host: web.example } }]
    retries: { attempts: 0 }
`,
    );
    const gw = await startGateway(mode, yaml);
    t.teardown(() => gw.stop());
    const cp = gw.cp!;
    const name = 'outbound|80||web.example';
    const cluster = envoyFor(yaml).clusters.find((x) => x.name === name);
    t.equal(cluster?.type, 'EDS', 'the ServiceEntry is an EDS cluster, as istiod makes it');

    const members = async (): Promise<string[]> =>
      (await request(gw.remora.ports.admin, '/clusters?format=json'))
        .json<{ clusters: { name: string; endpoints: { address: string }[] }[] }>()
        .clusters.find((x) => x.name === name)!
        .endpoints.map((e) => e.address)
        .sort();
    const text = async (): Promise<string> => (await request(gw.remora.ports.admin, '/clusters')).body;
    const assignment = (ports: number[]) => ({
      clusterName: name,
      endpoints: [{ lbEndpoints: ports.map((p) => ({ endpoint: { address: { socketAddress: { address: '127.0.0.1', portValue: p } } } })) }],
    });
    const served = async (n: number): Promise<Set<string>> => {
      const seen = new Set<string>();
      for (let i = 0; i < n; i++) {
        const r = await request(port, '/', { headers: { host: 'web.example' } });
        t.equal(r.status, 200);
        seen.add(String(r.headers['x-backend']));
      }
      return seen;
    };
    t.same(await members(), [`127.0.0.1:${a.port}`]);
    t.same([...(await served(4))], ['a']);
    const cdsVerdicts = (): number => cp.verdicts.filter((v) => v.typeUrl === CLUSTER).length;
    const cdsBefore = cdsVerdicts();
    const cdsRequestsBefore = cp.requests.filter((r) => r.typeUrl === CLUSTER).length + cp.deltaRequests.filter((r) => r.typeUrl === CLUSTER).length;

    // b joins.
    const added = cp.put(ENDPOINTS, assignment([a.port, b.port]));
    t.equal((await cp.verdict(ENDPOINTS, added)).ack, true, 'the new assignment is ACKed');
    await waitFor('b to be a member', async () => (await members()).length === 2);
    t.same(await members(), [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`].sort(), '/clusters?format=json lists a and b');
    t.match(await text(), new RegExp(`^${name.replace(/[|.]/g, '\\$&')}::127\\.0\\.0\\.1:${b.port}::health_flags::healthy$`, 'm'), '/clusters lists b, healthy');
    t.same([...(await served(10))].sort(), ['a', 'b'], 'the new endpoint gets traffic');

    // a leaves, c joins.
    const moved = cp.put(ENDPOINTS, assignment([b.port, c.port]));
    t.equal((await cp.verdict(ENDPOINTS, moved)).ack, true);
    await waitFor('a to leave', async () => !(await members()).includes(`127.0.0.1:${a.port}`));
    t.same(await members(), [`127.0.0.1:${b.port}`, `127.0.0.1:${c.port}`].sort(), '/clusters lists b and c only');
    t.notMatch(await text(), new RegExp(`:${a.port}::`), 'a is gone from /clusters');
    const seenByA = a.seen.length;
    t.same([...(await served(10))].sort(), ['b', 'c'], 'the removed endpoint gets no traffic, the new one does');
    t.equal(a.seen.length, seenByA, 'nothing reached a after it was removed');

    t.equal(cdsVerdicts(), cdsBefore, 'no CDS update was sent or answered meanwhile');
    const cdsRequestsAfter = cp.requests.filter((r) => r.typeUrl === CLUSTER).length + cp.deltaRequests.filter((r) => r.typeUrl === CLUSTER).length;
    t.equal(cdsRequestsAfter, cdsRequestsBefore, 'and the proxy asked for no clusters');
  });
}
