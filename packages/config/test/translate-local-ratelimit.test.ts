// Local rate limits from EnvoyFilter (Istio's "Enabling Rate Limits using Envoy" task: an
// HTTP_FILTER patch with a TypedStruct LocalRateLimit, HTTP_ROUTE patches with
// typed_per_filter_config) and from Remora's LocalRateLimit resource, and the config errors
// for bad values, naming resource and field. The filter's config is Envoy's LocalRateLimit in
// canonical proto3 JSON (read with Envoy's descriptors, written back lowerCamelCase).
import t from 'tap';
import type { HttpFilterConfig, LocalRateLimitConfigJson, ProxyConfig } from '@remora/config';
import { BOOKINFO_SERVICES, INGRESS, load, nodeWith, PORTS, routeTable, SIDECAR, translate } from './helpers/translate.ts';

const INBOUND = { ...PORTS, appPort: 9080 };
const LRL = 'envoy.filters.http.local_ratelimit';

function limitOf(config: ProxyConfig, listener: string): LocalRateLimitConfigJson | undefined {
  const l = config.listeners.find((x) => x.name === listener);
  if (l === undefined) throw new Error(`no listener ${listener}: ${config.listeners.map((x) => x.name).join(', ')}`);
  return l.httpFilters.find((f: HttpFilterConfig) => f.name === LRL)?.config as LocalRateLimitConfigJson | undefined;
}

/** Istio's documented local rate limit EnvoyFilter (inbound, 4 tokens per minute), with `extra` appended to the value. */
function docsFilter(opts: { ns?: string; selector?: string; context?: string; port?: number; value?: string; bucket?: string } = {}): string {
  const bucket = opts.bucket ?? '{max_tokens: 4, tokens_per_fill: 4, fill_interval: 60s}';
  return `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: filter-local-ratelimit-svc, namespace: ${opts.ns ?? 'istio-system'}}
spec:
  workloadSelector:
    labels: {${opts.selector ?? 'app: productpage'}}
  configPatches:
    - applyTo: HTTP_FILTER
      match:
        context: ${opts.context ?? 'SIDECAR_INBOUND'}
        listener:
          ${opts.port !== undefined ? `portNumber: ${opts.port}` : ''}
          filterChain:
            filter:
              name: "envoy.filters.network.http_connection_manager"
      patch:
        operation: INSERT_BEFORE
        value:
          name: envoy.filters.http.local_ratelimit
          typed_config:
            "@type": type.googleapis.com/udpa.type.v1.TypedStruct
            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            value:
              stat_prefix: http_local_rate_limiter
              token_bucket: ${bucket}
              filter_enabled:
                runtime_key: local_rate_limit_enabled
                default_value: {numerator: 100, denominator: HUNDRED}
              filter_enforced:
                runtime_key: local_rate_limit_enforced
                default_value: {numerator: 100, denominator: HUNDRED}
              response_headers_to_add:
                - append: false
                  header: {key: x-local-rate-limit, value: 'true'}
${opts.value ?? ''}
`;
}

t.test("Istio's documented EnvoyFilter: the inbound listener gets the limit", async (t) => {
  const { config, brief } = translate([BOOKINFO_SERVICES, docsFilter()], SIDECAR, INBOUND);
  t.same(brief, []);
  t.strictSame(limitOf(config, 'virtualInbound'), {
    statPrefix: 'http_local_rate_limiter',
    tokenBucket: { maxTokens: 4, tokensPerFill: 4, fillInterval: '60s' },
    filterEnabled: { defaultValue: { numerator: 100 }, runtimeKey: 'local_rate_limit_enabled' },
    filterEnforced: { defaultValue: { numerator: 100 }, runtimeKey: 'local_rate_limit_enforced' },
    responseHeadersToAdd: [{ header: { key: 'x-local-rate-limit', value: 'true' }, append: false }],
  });
  t.equal(limitOf(config, 'virtualOutbound'), undefined, 'SIDECAR_INBOUND only');
  const order = config.listeners.find((l) => l.name === 'virtualInbound')!.httpFilters.map((f) => f.name);
  t.same(order, [LRL, 'envoy.filters.http.cors', 'envoy.filters.http.router'], 'INSERT_BEFORE without a subFilter: first; the router last');
});

t.test('selection: workloadSelector, namespace, context, listener port', async (t) => {
  t.equal(limitOf(translate([BOOKINFO_SERVICES, docsFilter({ selector: 'app: reviews' })], SIDECAR, INBOUND).config, 'virtualInbound'), undefined, 'other workload');
  t.equal(limitOf(translate([BOOKINFO_SERVICES, docsFilter({ ns: 'other' })], SIDECAR, INBOUND).config, 'virtualInbound'), undefined, 'other namespace');
  t.ok(limitOf(translate([BOOKINFO_SERVICES, docsFilter({ ns: 'default' })], SIDECAR, INBOUND).config, 'virtualInbound'), 'own namespace');
  t.ok(limitOf(translate([BOOKINFO_SERVICES, docsFilter({ port: 9080 })], SIDECAR, INBOUND).config, 'virtualInbound'), 'the app port selects the inbound side');
  t.equal(limitOf(translate([BOOKINFO_SERVICES, docsFilter({ port: 9999 })], SIDECAR, INBOUND).config, 'virtualInbound'), undefined, 'another port');
  const any = translate([BOOKINFO_SERVICES, docsFilter({ context: 'ANY' })], SIDECAR, INBOUND).config;
  t.ok(limitOf(any, 'virtualInbound') && limitOf(any, 'virtualOutbound'), 'ANY: both sides (each listener its own bucket, at run time)');
  const gw = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
    - port: {number: 8080, name: http, protocol: HTTP}
      hosts: ["*"]
    - port: {number: 8081, name: http2, protocol: HTTP}
      hosts: ["*"]
`;
  const g = translate([BOOKINFO_SERVICES, gw, docsFilter({ context: 'GATEWAY', selector: 'istio: ingressgateway', port: 8080 })], INGRESS).config;
  t.ok(limitOf(g, '0.0.0.0_8080'), 'gateway port 8080');
  t.equal(limitOf(g, '0.0.0.0_8081'), undefined, 'not 8081');
});

t.test('fields: camelCase names, direct @type, fractions, headers, descriptors and rate_limits', async (t) => {
  const yaml = `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: lrl, namespace: default}
spec:
  configPatches:
    - applyTo: HTTP_FILTER
      match: {context: SIDECAR_INBOUND}
      patch:
        operation: INSERT_BEFORE
        value:
          name: envoy.filters.http.local_ratelimit
          typedConfig:
            "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            statPrefix: rl
            tokenBucket: {maxTokens: 10, fillInterval: 1.5s}
            filterEnabled: {runtimeKey: e, defaultValue: {numerator: 5000, denominator: TEN_THOUSAND}}
            status: {code: 503}
            enable_x_ratelimit_headers: DRAFT_VERSION_03
            rate_limited_as_resource_exhausted: true
            always_consume_default_token_bucket: false
            descriptors:
              - entries: [{key: client, value: slow}]
                token_bucket: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 60s}
            rate_limits:
              - actions: [{request_headers: {header_name: x-client, descriptor_key: client}}]
              - actions: [{generic_key: {descriptor_value: all}}, {remote_address: {}}]
`;
  const { config, brief } = translate([BOOKINFO_SERVICES, yaml], SIDECAR, INBOUND);
  t.same(brief, []);
  t.strictSame(limitOf(config, 'virtualInbound'), {
    statPrefix: 'rl',
    status: { code: 'ServiceUnavailable' },
    tokenBucket: { maxTokens: 10, fillInterval: '1.500s' },
    filterEnabled: { defaultValue: { numerator: 5000, denominator: 'TEN_THOUSAND' }, runtimeKey: 'e' },
    descriptors: [{ entries: [{ key: 'client', value: 'slow' }], tokenBucket: { maxTokens: 1, tokensPerFill: 1, fillInterval: '60s' } }],
    enableXRatelimitHeaders: 'DRAFT_VERSION_03',
    alwaysConsumeDefaultTokenBucket: false,
    rateLimitedAsResourceExhausted: true,
    rateLimits: [
      { actions: [{ requestHeaders: { headerName: 'x-client', descriptorKey: 'client' } }] },
      { actions: [{ genericKey: { descriptorValue: 'all' } }, { remoteAddress: {} }] },
    ],
  });
});

t.test('HTTP_ROUTE patches: typed_per_filter_config and rate_limits on the matching routes', async (t) => {
  const routes = `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: per-route, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  configPatches:
    - applyTo: HTTP_ROUTE
      match:
        context: SIDECAR_INBOUND
        routeConfiguration:
          vhost:
            name: "inbound|http|9080"
            route: {action: ANY}
      patch:
        operation: MERGE
        value:
          typed_per_filter_config:
            envoy.filters.http.local_ratelimit:
              "@type": type.googleapis.com/udpa.type.v1.TypedStruct
              type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              value:
                stat_prefix: http_local_rate_limiter
                token_bucket: {max_tokens: 2, tokens_per_fill: 2, fill_interval: 10s}
                filter_enabled: {default_value: {numerator: 100}}
                filter_enforced: {default_value: {numerator: 100}}
          route:
            rate_limits:
              - actions: [{remote_address: {}}]
    - applyTo: HTTP_ROUTE
      match:
        context: SIDECAR_INBOUND
        routeConfiguration: {vhost: {name: "inbound|http|1234"}}
      patch:
        operation: MERGE
        value:
          route: {rate_limits: [{actions: [{remote_address: {}}]}]}
`;
  const { config, brief } = translate([BOOKINFO_SERVICES, docsFilter({ bucket: 'null' }), routes], SIDECAR, INBOUND);
  t.same(brief, []);
  t.equal(limitOf(config, 'virtualInbound')!.tokenBucket, undefined, 'the listener-level filter without a bucket (the per-route form)');
  const inbound = routeTable(config, 'inbound|9080||');
  const route = inbound.virtualHosts[0]!.routes[0]!;
  t.strictSame(route.filterConfigs[LRL], {
    statPrefix: 'http_local_rate_limiter',
    tokenBucket: { maxTokens: 2, tokensPerFill: 2, fillInterval: '10s' },
    filterEnabled: { defaultValue: { numerator: 100 } },
    filterEnforced: { defaultValue: { numerator: 100 } },
  });
  t.strictSame(route.rateLimits, [{ actions: [{ remoteAddress: {} }] }], "Envoy's route rate_limits on the route");
  const outbound = routeTable(config, '9080');
  t.ok(outbound.virtualHosts.every((v) => v.routes.every((r) => !(LRL in r.filterConfigs))), 'outbound routes untouched');
});

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

  const two = translate([BOOKINFO_SERVICES, docsFilter(), native('  tokenBucket: {maxTokens: 1, fillInterval: 1s}')], SIDECAR, INBOUND);
  t.equal(limitOf(two.config, 'virtualInbound')!.tokenBucket?.maxTokens, 4, 'the oldest (the EnvoyFilter) wins');
  t.match(two.brief, [/warning LocalRateLimit default\/rl spec: EnvoyFilter istio-system\/filter-local-ratelimit-svc already sets the local rate limit/]);
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

t.test('EnvoyFilter errors name the resource and field', async (t) => {
  const cases: [string, RegExp][] = [
    // Type errors come from Envoy's descriptors (the codec), with the field path as written.
    ['{max_tokens: -4, tokens_per_fill: 4, fill_interval: 60s}', /value\.token_bucket\.max_tokens: cannot decode field envoy\.type\.v3\.TokenBucket\.max_tokens from JSON: expected number \(uint32\): -4 out of range$/],
    ['{max_tokens: 4, fill_interval: 1 minute}', /value\.token_bucket\.fill_interval: cannot decode message google\.protobuf\.Duration from JSON: "1 minute"$/],
    ['{max_tokens: 4, fill_interval: 20ms}', /value\.token_bucket\.fill_interval: cannot decode message google\.protobuf\.Duration from JSON: "20ms"$/],
    ['{max_tokens: 4, fillInterval: 60s, burst: 2}', /value\.token_bucket\.burst: unknown field "burst" in envoy\.type\.v3\.TokenBucket$/],
    // Envoy's own rules (protoc-gen-validate), which the codec does not check.
    // proto3: a 0 is the field left unset.
    ['{max_tokens: 0, tokens_per_fill: 4, fill_interval: 60s}', /value\.token_bucket\.max_tokens: max_tokens is required$/],
    ['{max_tokens: 4, tokens_per_fill: 0, fill_interval: 60s}', /value\.token_bucket\.tokens_per_fill: tokens_per_fill must be a positive integer, got 0$/],
    ['{max_tokens: 4, fill_interval: 0.020s}', /value\.token_bucket\.fill_interval: fill_interval must be at least 50ms/],
    ['{fill_interval: 1s}', /value\.token_bucket\.max_tokens: max_tokens is required$/],
  ];
  for (const [bucket, want] of cases) {
    const { config, brief } = translate([BOOKINFO_SERVICES, docsFilter({ bucket })], SIDECAR, INBOUND);
    t.match(brief, [new RegExp(`^error EnvoyFilter istio-system/filter-local-ratelimit-svc spec\\.configPatches\\[0\\]\\.patch\\.value\\.typed_config\\.${want.source}`)], bucket);
    t.equal(limitOf(config, 'virtualInbound'), undefined, 'an invalid limit is not installed');
  }
  const badFraction = translate(
    [BOOKINFO_SERVICES, docsFilter().replace(/(runtime_key: local_rate_limit_enforced\n\s+default_value: \{numerator: 100, denominator: )HUNDRED/, '$1PERCENT')],
    SIDECAR,
    INBOUND,
  );
  t.same(badFraction.brief, [
    'error EnvoyFilter istio-system/filter-local-ratelimit-svc spec.configPatches[0].patch.value.typed_config.value.filter_enforced.default_value.denominator: cannot decode enum envoy.type.v3.FractionalPercent.DenominatorType from JSON: "PERCENT"',
  ]);
  const routeNoBucket = `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: r, namespace: default}
spec:
  configPatches:
    - applyTo: HTTP_ROUTE
      match: {context: SIDECAR_INBOUND}
      patch:
        operation: MERGE
        value:
          typed_per_filter_config:
            envoy.filters.http.local_ratelimit:
              "@type": type.googleapis.com/udpa.type.v1.TypedStruct
              type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              value: {stat_prefix: x}
`;
  const r = translate([BOOKINFO_SERVICES, routeNoBucket], SIDECAR, INBOUND);
  t.match(r.brief, [/^error EnvoyFilter default\/r spec\.configPatches\[0\]\.patch\.value\.typed_per_filter_config\.envoy\.filters\.http\.local_ratelimit\.value\.token_bucket: token_bucket is required in a route's local rate limit/]);
  const wrongType = docsFilter().replace('v3.LocalRateLimit', 'v3.RateLimit');
  t.match(translate([BOOKINFO_SERVICES, wrongType], SIDECAR, INBOUND).brief, [/typed_config\.type_url: type_url must be type\.googleapis\.com\/envoy\.extensions\.filters\.http\.local_ratelimit\.v3\.LocalRateLimit/]);
});

t.test('gateway ports: each listener its own filter', async (t) => {
  const gw = nodeWith(INGRESS, {});
  const g = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
    - port: {number: 8080, name: http, protocol: HTTP}
      hosts: ["*"]
    - port: {number: 8081, name: http2, protocol: HTTP}
      hosts: ["*"]
`;
  const { config } = translate([BOOKINFO_SERVICES, g, docsFilter({ context: 'GATEWAY', selector: 'istio: ingressgateway' })], gw);
  t.ok(limitOf(config, '0.0.0.0_8080') && limitOf(config, '0.0.0.0_8081'), 'both listeners (the runtime keys buckets by listener name)');
});

t.test('warnings: a route patch without the filter in the chain, an outbound port that names no listener', async (t) => {
  const routeOnly = `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: route-only, namespace: default}
spec:
  configPatches:
    - applyTo: HTTP_ROUTE
      match: {context: SIDECAR_INBOUND}
      patch:
        operation: MERGE
        value:
          typed_per_filter_config:
            envoy.filters.http.local_ratelimit:
              "@type": type.googleapis.com/udpa.type.v1.TypedStruct
              type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              value: {stat_prefix: x, token_bucket: {max_tokens: 1, fill_interval: 1s}}
`;
  t.same(translate([BOOKINFO_SERVICES, routeOnly], SIDECAR, INBOUND).brief, [
    'warning EnvoyFilter default/route-only spec.configPatches[0]: no HTTP_FILTER patch inserts envoy.filters.http.local_ratelimit on the SIDECAR_INBOUND listener (port 15006), so this route patch has no effect there',
  ]);
  const outbound = translate([BOOKINFO_SERVICES, docsFilter({ context: 'SIDECAR_OUTBOUND', port: 9080 })], SIDECAR, INBOUND);
  t.equal(limitOf(outbound.config, 'virtualOutbound'), undefined);
  t.match(outbound.brief, [/spec\.configPatches\[0\]\.match\.listener\.portNumber: the sidecar has one outbound listener \(port 15001\)/]);
});

t.test('an EnvoyFilter inserting a filter Remora does not have: an error naming it, unless is_optional', async (t) => {
  const lua = (extra: string) => `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: lua, namespace: default}
spec:
  configPatches:
    - applyTo: HTTP_FILTER
      match: {context: SIDECAR_INBOUND}
      patch:
        operation: INSERT_BEFORE
        value:
          name: envoy.filters.http.lua
${extra}`;
  t.same(translate([BOOKINFO_SERVICES, lua('')], SIDECAR, INBOUND).brief, [
    'error EnvoyFilter default/lua spec.configPatches[0].patch.value.name: Remora has no HTTP filter envoy.filters.http.lua; Envoy refuses an unknown filter too unless the patch sets is_optional: true',
  ]);
  t.same(translate([BOOKINFO_SERVICES, lua('          is_optional: true\n')], SIDECAR, INBOUND).brief, [
    'warning EnvoyFilter default/lua spec.configPatches[0].patch.value.is_optional: Remora has no HTTP filter envoy.filters.http.lua; it is optional, so it is skipped, as Envoy does',
  ]);
  const stats = lua('').replace('envoy.filters.http.lua', 'istio.stats');
  t.same(translate([BOOKINFO_SERVICES, stats], SIDECAR, INBOUND).brief, [], "Istio's own filters are accepted");
});
