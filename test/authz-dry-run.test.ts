// istio.io's "Dry Run" task (security/authorization/authz-dry-run) against a real sidecar:
// the task's `deny-path-headers` policy with `istio.io/dry-run: "true"` is evaluated and not
// enforced. `/headers` still answers 200; the RBAC filter counts it under istiod's shadow
// stat prefix (`rbac.istio_dry_run_deny_shadow_denied`), and with `POST /logging?rbac=debug`
// (what `istioctl proxy-config log --level rbac:debug` sends) the proxy logs Envoy's lines,
// `shadow denied, matched policy ns[foo]-policy[deny-path-headers]-rule[0]`.
import t from 'tap';
import { startBackend } from './helpers/backends.ts';
import { get, request } from './helpers/http.ts';
import { waitFor } from './helpers/net.ts';
import { MeshDir, startRemora } from './helpers/remora.ts';

// The task's policy, as written on istio.io.
const DENY_PATH_HEADERS = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-path-headers
  namespace: foo
  annotations:
    "istio.io/dry-run": "true"
spec:
  selector:
    matchLabels:
      app: httpbin
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/headers"]
`;

t.test('dry-run: deny-path-headers is evaluated, counted and logged, never enforced', async (t) => {
  const httpbin = await startBackend('httpbin');
  const mesh = new MeshDir({ 'policy.yaml': DENY_PATH_HEADERS });
  t.teardown(async () => {
    await httpbin.close();
    mesh.cleanup();
  });
  const remora = await startRemora('sidecar', [mesh.dir], ['--app-port', String(httpbin.port), '--labels', 'app=httpbin', '--namespace', 'foo']);
  t.teardown(() => remora.stop());
  const inbound = remora.ports.inbound;
  const send = (path: string) => get(inbound, path, 'httpbin.foo:8000');
  const counters = async (): Promise<Map<string, number>> => {
    const out = new Map<string, number>();
    for (const line of (await request(remora.ports.admin, '/stats?filter=rbac')).body.split('\n')) {
      const m = /^http\.[^:]*\.rbac\.(\S+): (\d+)$/.exec(line);
      if (m) out.set(m[1]!, (out.get(m[1]!) ?? 0) + Number(m[2]));
    }
    return out;
  };

  t.equal((await send('/ip')).status, 200, '/ip: 200');
  t.equal((await send('/headers')).status, 200, '/headers: 200, the dry-run DENY is not enforced');
  const c = await counters();
  t.equal(c.get('istio_dry_run_deny_shadow_denied'), 1, 'the /headers request is shadow_denied under istiod\'s prefix');
  t.equal(c.get('istio_dry_run_deny_shadow_allowed'), 1, 'the /ip request is shadow_allowed');
  t.notOk(c.has('denied') && c.get('denied')! > 0, 'nothing is denied for real');

  t.test('no debug lines at the default level', async (t) => {
    t.notOk(remora.log.some((l) => l.includes('[rbac]')), 'rbac logs nothing at info');
  });

  t.test('/logging?rbac=debug: Envoy\'s RBAC debug lines', async (t) => {
    const set = await request(remora.ports.admin, '/logging?rbac=debug', { method: 'POST' });
    t.equal(set.status, 200);
    t.match(set.body, /rbac: debug/, 'the rbac component is listed at debug');
    const before = remora.log.length;
    t.equal((await send('/headers')).status, 200);
    await waitFor('the shadow denial is logged', () => remora.log.slice(before).some((l) => l.includes('shadow denied')));
    const lines = remora.log.slice(before).filter((l) => l.includes('[debug][rbac]'));
    t.ok(lines.some((l) => /checking request: requestedServerName: , sourceIP: 127\.0\.0\.1, .*':path', '\/headers'/s.test(l)), 'checking request: … headers');
    t.ok(lines.some((l) => l.endsWith('shadow denied, matched policy ns[foo]-policy[deny-path-headers]-rule[0]')), 'shadow denied names the policy and rule');
    t.ok(lines.some((l) => l.endsWith('no engine, allowed by default')), 'no enforced rules: allowed by default');

    const allowedAt = remora.log.length;
    t.equal((await send('/ip')).status, 200);
    await waitFor('the shadow allow is logged', () => remora.log.slice(allowedAt).some((l) => l.endsWith('shadow allowed, matched policy none')));
    t.pass('shadow allowed, matched policy none');

    await request(remora.ports.admin, '/logging?rbac=info', { method: 'POST' });
    const quietAt = remora.log.length;
    t.equal((await send('/headers')).status, 200);
    t.notOk(remora.log.slice(quietAt).some((l) => l.includes('[rbac]')), 'back at info: no rbac lines');
  });

  t.test('dropping the annotation enforces the same policy', async (t) => {
    mesh.write('policy.yaml', DENY_PATH_HEADERS.replace(/  annotations:\n    "istio.io\/dry-run": "true"\n/, ''));
    await waitFor('enforced', async () => (await send('/headers')).status === 403, 15_000);
    t.equal((await send('/ip')).status, 200, '/ip still passes');
  });
});
