// Authorization cost: time to build and compile a large AuthorizationPolicy set, and per-request
// cost over a mix of requests, for the RBAC filter. Pass the path of another authorization
// filter factory module (exporting `authzFactory` that takes `{ policies, trustDomain }`) to
// time it side by side on the same policies and requests.
//
//   node packages/filters/scripts/rbac-bench.ts [path/to/authz-factory.ts]
import { performance } from 'node:perf_hooks';
import { buildRbacFilters, type AuthzPolicyInput } from '@remora/config';
import { FilterStatus, type FilterCallbacks, type HttpFilter, type HttpFilterFactory } from '@remora/filters';
import { rbacFactory } from '@remora/filters/internal';
import { FakeRequest, storeContext, type ReqInit } from '@remora/filters/testing';

const POLICIES = 200;
const RULES = 5;
const REQUESTS = 100_000;

/** Policies in the shapes Istio's docs use: identities, namespaces, paths, methods, headers, claims, IPs. */
function policies(): AuthzPolicyInput[] {
  const out: AuthzPolicyInput[] = [];
  for (let p = 0; p < POLICIES; p++) {
    const rules: unknown[] = [];
    for (let r = 0; r < RULES; r++) {
      rules.push({
        from: [{ source: { principals: [`cluster.local/ns/ns${p}/sa/sa${r}`, `cluster.local/ns/ns${p}/sa/web-*`] } }, { source: { namespaces: [`team${p}-*`], ipBlocks: ['10.0.0.0/8'] } }],
        to: [{ operation: { methods: ['GET', 'HEAD'], paths: [`/api/v${r}/${p}/*`, `/static/{*}/p${p}`], hosts: ['*.example.com'] } }],
        when: [
          { key: 'request.headers[x-tenant]', values: [`tenant-${p}`, 'shared*'] },
          { key: 'request.auth.claims[groups]', values: [`group${r}`] },
        ],
      });
    }
    out.push({ namespace: 'foo', name: `policy-${p}`, action: p % 10 === 0 ? 'DENY' : 'ALLOW', rules, dryRun: false });
  }
  return out;
}

const REQS: ReqInit[] = [
  // Matches nothing: every policy is walked (the worst case for an ALLOW set).
  { method: 'GET', path: '/other?x=1', authority: 'a.example.com', peer: { principal: 'cluster.local/ns/nope/sa/x', namespace: 'nope' }, headers: { 'x-tenant': 'none' } },
  // Matches the last ALLOW policy's last rule.
  {
    method: 'GET', path: `/api/v${RULES - 1}/${POLICIES - 1}/items`, authority: 'a.example.com',
    peer: { principal: `cluster.local/ns/ns${POLICIES - 1}/sa/sa${RULES - 1}`, namespace: `ns${POLICIES - 1}` },
    headers: { 'x-tenant': `tenant-${POLICIES - 1}` },
    auth: { principal: 'i/s', issuer: 'i', subject: 's', audiences: [], presenter: '', claims: { groups: [`group${RULES - 1}`] } },
  },
  // Denied early by the first DENY policy's path, method and header.
  { method: 'GET', path: '/api/v0/0/x', authority: 'a.example.com', sourceIp: '10.1.1.1', peer: { principal: 'cluster.local/ns/team0-a/sa/x', namespace: 'team0-a' }, headers: { 'x-tenant': 'shared-1' },
    auth: { principal: 'i/s', issuer: 'i', subject: 's', audiences: [], presenter: '', claims: { groups: ['group0'] } } },
];

/** The median of `n` runs (the machine may be shared: the median is steadier than the mean). */
function time<T>(label: string, n: number, f: () => T): T {
  let out!: T;
  const runs: number[] = [];
  for (let i = 0; i < n; i++) {
    const start = performance.now();
    out = f();
    runs.push(performance.now() - start);
  }
  runs.sort((a, b) => a - b);
  console.log(`${label.padEnd(44)} ${runs[n >> 1]!.toFixed(1)} ms (median of ${n})`);
  return out;
}

function perRequest(label: string, filters: readonly HttpFilter[]): string {
  const reqs = REQS.map((r) => new FakeRequest({ sourceIp: '192.0.2.1', destinationIp: '10.0.0.100', destinationPort: 8000, ...r }));
  let denied = 0;
  let details = '';
  const cb: FilterCallbacks = {
    sendLocalReply: (_s, _b, _f, d) => {
      denied++;
      details = d;
    },
    continueRequest: () => {},
    addResponseHeader: () => {},
    setResponseFlag: () => {},
    clearRouteCache: () => {},
    aborted: false,
  };
  const once = (req: FakeRequest) => {
    for (const f of filters) if (f.onRequest(req, cb) !== FilterStatus.Continue) return;
  };
  for (let i = 0; i < 20_000; i++) once(reqs[i % reqs.length]!); // warm-up
  const start = performance.now();
  for (let i = 0; i < REQUESTS; i++) once(reqs[i % reqs.length]!);
  const ns = ((performance.now() - start) * 1e6) / REQUESTS;
  console.log(`${`${label}: per request (${REQUESTS} mixed)`.padEnd(44)} ${ns.toFixed(0)} ns  (${denied} denied, last: ${details})`);
  return details;
}

const input = policies();
console.log(`${POLICIES} policies × ${RULES} rules (${POLICIES * RULES} Envoy policies), Node ${process.version}`);
time('RBAC: build (translator, istiod\'s builder)', 11, () => buildRbacFilters(input, { trustDomains: ['cluster.local'], report: () => {} }));
const rbac = buildRbacFilters(input, { trustDomains: ['cluster.local'], report: () => {} });
const compiled = time('RBAC: compile (filter, per snapshot)', 11, () => rbac.map((c) => rbacFactory.compile(c, storeContext())));
perRequest('RBAC', compiled.map((c) => c.create()));

const oldModule = process.argv[2];
if (oldModule !== undefined) {
  const { authzFactory } = (await import(oldModule)) as { authzFactory: HttpFilterFactory };
  const old = input.map((p) => ({ name: `${p.namespace}/${p.name}`, action: p.action, rules: p.rules ?? [], hasRules: p.rules !== undefined, provider: null }));
  const oc = time('old: compile', 11, () => authzFactory.compile({ policies: old, trustDomain: 'cluster.local' }, storeContext()));
  perRequest('old', [oc.create()]);
}
