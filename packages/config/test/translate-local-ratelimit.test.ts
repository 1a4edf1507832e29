// Remora's LocalRateLimit resource (ratelimit.remora.dev/v1alpha1) on the listeners it selects:
// Envoy's LocalRateLimit in canonical proto3 JSON, right after authentication and
// authorization, one per listener, and schema errors naming the field. The EnvoyFilter form of
// Istio's task patches Envoy's resources: envoyfilter-patch.test.ts.
import t from 'tap';
import type { HttpFilterConfig, LocalRateLimitConfigJson, ProxyConfig } from '@remora/config';
import { BOOKINFO_SERVICES, INGRESS, load, PORTS, SIDECAR, translate } from './helpers/translate.ts';

const INBOUND = { ...PORTS, appPort: 9080 };
const LRL = 'envoy.filters.http.local_ratelimit';

function limitOf(config: ProxyConfig, listener: string): LocalRateLimitConfigJson | undefined {
  const l = config.listeners.find((x) => x.name === listener);
  if (l === undefined) throw new Error(`no listener ${listener}: ${config.listeners.map((x) => x.name).join(', ')}`);
  return l.httpFilters.find((f: HttpFilterConfig) => f.name === LRL)?.config as LocalRateLimitConfigJson | undefined;
}

const GATEWAY = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
    - port: {number: 8080, name: http, protocol: HTTP}
      hosts: ["*"]
    - port: {number: 8081, name: http2, protocol: HTTP}
      hosts: ["*"]
---
`;

const DENY_ADMIN_GW = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin"]}}]
---
`;

t.test('the native LocalRateLimit resource', async (t) => {
  const native = (spec: string, ns = 'default') => `apiVersion: ratelimit.remora.dev/v1alpha1
kind: LocalRateLimit
metadata: {name: rl, namespace: ${ns}}
spec:
${spec}
`;
  const { config, brief } = translate(
    [BOOKINFO_SERVICES, native('  selector: {matchLabels: {app: productpage}}\n  tokenBucket: {maxTokens: 100, fillInterval: 60s}\n  responseHeaders: true')],
    SIDECAR,
    INBOUND,
  );
  t.same(brief, []);
  t.strictSame(limitOf(config, 'virtualInbound'), {
    statPrefix: 'http_local_rate_limiter',
    tokenBucket: { maxTokens: 100, tokensPerFill: 1, fillInterval: '60s' },
    filterEnabled: { runtimeKey: 'local_rate_limit_enabled', defaultValue: { numerator: 100 } },
    filterEnforced: { runtimeKey: 'local_rate_limit_enforced', defaultValue: { numerator: 100 } },
    enableXRatelimitHeaders: 'DRAFT_VERSION_03',
  });
  t.equal(limitOf(translate([BOOKINFO_SERVICES, native('  tokenBucket: {maxTokens: 1, fillInterval: 1s}', 'other')], SIDECAR, INBOUND).config, 'virtualInbound'), undefined);
  const out = translate([BOOKINFO_SERVICES, native('  context: SIDECAR_OUTBOUND\n  tokenBucket: {maxTokens: 1, fillInterval: 1s}')], SIDECAR, INBOUND).config;
  t.ok(limitOf(out, 'virtualOutbound'));
  t.equal(limitOf(out, 'virtualInbound'), undefined);

  const two = translate([BOOKINFO_SERVICES, native('  tokenBucket: {maxTokens: 4, fillInterval: 1s}'), native('  tokenBucket: {maxTokens: 1, fillInterval: 1s}').replace('name: rl,', 'name: rl2,')], SIDECAR, INBOUND);
  t.equal(limitOf(two.config, 'virtualInbound')!.tokenBucket?.maxTokens, 4, 'the oldest wins');
  t.same(two.brief, ['warning LocalRateLimit default/rl2 spec: LocalRateLimit default/rl already sets the local rate limit of this SIDECAR_INBOUND listener (port 15006); this one is ignored']);
  t.same(
    config.listeners.find((l) => l.name === 'virtualInbound')!.httpFilters.map((f) => f.name),
    [LRL, 'envoy.filters.http.cors', 'envoy.filters.http.router'],
  );
  const gw = translate([BOOKINFO_SERVICES, GATEWAY, DENY_ADMIN_GW, native('  selector: {matchLabels: {istio: ingressgateway}}\n  tokenBucket: {maxTokens: 1, fillInterval: 1s}', 'istio-system')], INGRESS);
  t.same(gw.brief, []);
  for (const l of ['0.0.0.0_8080', '0.0.0.0_8081']) {
    t.same(gw.config.listeners.find((x) => x.name === l)!.httpFilters.map((f) => f.name), ['envoy.filters.http.rbac', LRL, 'envoy.filters.http.cors', 'envoy.filters.http.router'], `${l}: right after authorization`);
  }
});

t.test('native resource validation names the field', async (t) => {
  const check = (spec: string) =>
    load(`apiVersion: ratelimit.remora.dev/v1alpha1\nkind: LocalRateLimit\nmetadata: {name: rl, namespace: default}\nspec:\n${spec}\n`);
  t.throws(() => check('  tokenBucket: {maxTokens: -1, fillInterval: 1s}'), /spec\.tokenBucket\.maxTokens/);
  t.throws(() => check('  tokenBucket: {maxTokens: 1, fillInterval: soon}'), /spec\.tokenBucket\.fillInterval/);
  t.throws(() => check('  tokenBucket: {maxTokens: 1, fillInterval: 10ms}'), /fillInterval must be at least 50ms/);
  t.throws(() => check('  context: SIDECAR_INBOUND'), /tokenBucket/);
  t.throws(() => check('  tokenBucket: {maxTokens: 1, fillInterval: 1s}\n  burst: 3'), /burst/);
  t.doesNotThrow(() => check('  tokenBucket: {maxTokens: 1, fillInterval: 1s}'));
});
