// istio.io's "Locality failover" task, with real upstreams in four localities and a gateway
// in region1/zone1: the task's DestinationRule (localityLbSetting failover region1 →
// region2, outlier detection with consecutive5xxErrors 1) and Istio's default retries.
// Draining a locality (its server stops listening: connection refused) moves the traffic to
// the next priority, and on past the second: zone1 → zone2 → region2 → region3, without 5xx
// once the ejection has happened. Under Kubernetes, readiness takes a drained endpoint out;
// here only outlier ejections do, so the rule must let more than Envoy's default 10% of the
// endpoints be ejected, and the task's rule as written gets a warning that says so.
import t, { type Test } from 'tap';
import { startBackend, type Backend } from './helpers/backends.ts';
import { request } from './helpers/http.ts';
import { doc, gateway } from './helpers/mesh.ts';
import { freePort } from './helpers/net.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';

const LOCALITIES = ['region1/zone1/subzone1', 'region1/zone2/subzone1', 'region2/zone3/subzone1', 'region3/zone4/subzone1'] as const;

const helloworld = (eps: readonly { port: number; locality: string }[]) => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: helloworld, namespace: sample }
spec:
  hosts: [helloworld.sample.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 5000, name: http, protocol: HTTP }]
  endpoints:
${eps.map((e) => `  - { address: 127.0.0.1, ports: { http: ${e.port} }, locality: ${e.locality} }`).join('\n')}
`;

// The task's DestinationRule, as istio.io gives it.
const DESTINATION_RULE = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: helloworld, namespace: sample }
spec:
  host: helloworld.sample.svc.cluster.local
  trafficPolicy:
    connectionPool:
      http:
        maxRequestsPerConnection: 1
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
        enabled: true
        failover:
          - from: region1
            to: region2
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 1m
`;

const ROUTE = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: helloworld, namespace: sample }
spec:
  hosts: ["*"]
  gateways: [default/gw]
  http:
  - route: [{ destination: { host: helloworld.sample.svc.cluster.local, port: { number: 5000 } } }]
`;

/** A helloworld that answers with its locality. */
async function helloworldIn(locality: string): Promise<Backend> {
  return startBackend(locality, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`Hello version: v1, instance: ${locality}\n`);
  });
}

/** The four localities behind a gateway in region1/zone1, with `rule` as the DestinationRule. */
async function mesh(t: Test, rule: string) {
  const backends = await Promise.all(LOCALITIES.map(helloworldIn));
  const port = await freePort();
  const dir = new MeshDir({
    'mesh.yaml': doc(gateway('gw', port), helloworld(backends.map((b, i) => ({ port: b.port, locality: LOCALITIES[i]! }))), rule, ROUTE),
  });
  const remora = await startRemora('gateway', [dir.dir], ['--locality', LOCALITIES[0]]);
  t.teardown(async () => {
    await remora.stop();
    for (const b of backends) await b.close();
    dir.cleanup();
  });
  /** `n` calls, one at a time: which locality answered each, or the status and body when none did. */
  const calls = async (n: number): Promise<string[]> => {
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      const r = await request(port, '/hello', { headers: { host: 'helloworld.sample:5000' } });
      out.push(r.status === 200 ? r.body.replace(/^.*instance: /s, '').trim() : `${r.status} ${r.body}`);
    }
    return out;
  };
  return { backends, remora, calls };
}

t.test("the task's rule as written: a warning says the default ejection cap stops failover", async (t) => {
  const { remora, calls } = await mesh(t, DESTINATION_RULE);
  t.ok(
    remora.log.some((l) => l.includes('DestinationRule sample/helloworld') && l.includes('spec.trafficPolicy.loadBalancer.localityLbSetting') && l.includes('maxEjectionPercent is unset')),
    'the warning names the resource, the field and the cure',
  );
  t.same([...new Set(await calls(5))], [LOCALITIES[0]], 'the local zone answers');
});

t.test('locality failover goes on past the second priority: zone1 → zone2 → region2 → region3', async (t) => {
  const { backends, remora, calls } = await mesh(t, DESTINATION_RULE.replace('      baseEjectionTime: 1m\n', '      baseEjectionTime: 1m\n      maxEjectionPercent: 100\n'));
  t.notOk(remora.log.some((l) => l.includes('maxEjectionPercent is unset')), 'no warning once the cap is set');
  t.same([...new Set(await calls(10))], [LOCALITIES[0]], 'the local zone answers everything');
  for (let drained = 0; drained < LOCALITIES.length - 1; drained++) {
    await backends[drained]!.close();
    // The task: "the first call will fail, which triggers the failover" (Istio's default
    // retries on connect-failure usually hide even that one).
    const first = await calls(1);
    t.ok(first[0] === LOCALITIES[drained + 1] || first[0]!.startsWith('503'), `the call that finds ${LOCALITIES[drained]} drained: ${first[0]}`);
    t.same([...new Set(await calls(10))], [LOCALITIES[drained + 1]], `with ${LOCALITIES.slice(0, drained + 1).join(', ')} drained, ${LOCALITIES[drained + 1]} answers every call`);
  }
});
