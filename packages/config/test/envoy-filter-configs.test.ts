// Envoy's HTTP filter configs as istiod and Istio users write them: the RBAC and ext_authz
// filters istiod's AuthorizationPolicy builder emits (its own testdata, lowerCamelCase YAML),
// the local rate limit config from Istio's EnvoyFilter sample (snake_case, a TypedStruct and
// a typed_per_filter_config), and JWT, fault and CORS configs in the shape istiod gives them.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { parse, parseAllDocuments } from 'yaml';
import { type JsonObject, type JsonValue } from '@bufbuild/protobuf';
import { envoyFromJson, envoyMessageType, envoyToJson, envoyUnpack } from '@remora/config/envoy';
import { RouteSchema } from '@remora/config/envoy/gen/envoy/config/route/v3/route_components_pb.js';
import { RBAC_Action } from '@remora/config/envoy/gen/envoy/config/rbac/v3/rbac_pb.js';
import { HttpFilterSchema } from '@remora/config/envoy/gen/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager_pb.js';
import { RBACSchema as HttpRbacSchema } from '@remora/config/envoy/gen/envoy/extensions/filters/http/rbac/v3/rbac_pb.js';
import { ExtAuthzSchema } from '@remora/config/envoy/gen/envoy/extensions/filters/http/ext_authz/v3/ext_authz_pb.js';
import { LocalRateLimitSchema } from '@remora/config/envoy/gen/envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit_pb.js';
import { JwtAuthenticationSchema } from '@remora/config/envoy/gen/envoy/extensions/filters/http/jwt_authn/v3/config_pb.js';
import { HTTPFaultSchema } from '@remora/config/envoy/gen/envoy/extensions/filters/http/fault/v3/fault_pb.js';
import { CorsPolicySchema } from '@remora/config/envoy/gen/envoy/extensions/filters/http/cors/v3/cors_pb.js';
import { UriTemplateMatchConfigSchema } from '@remora/config/envoy/gen/envoy/extensions/path/match/uri_template/v3/uri_template_match_pb.js';
import { XRateLimitHeadersRFCVersion } from '@remora/config/envoy/gen/envoy/extensions/common/ratelimit/v3/ratelimit_pb.js';
import { TypedStructSchema } from '@remora/config/envoy/gen/udpa/type/v1/typed_struct_pb.js';
import { assertPresent, GOLDENS_DIR, GOLDENS_MISSING, notContainedIn, typedConfigOf } from './helpers/envoy.ts';

const skip = GOLDENS_DIR === null ? GOLDENS_MISSING : false;

t.test('every RBAC and ext_authz filter istiod\'s authz builder emits reads as an HttpFilter and writes back the same', { skip }, async (t) => {
  const dir = join(GOLDENS_DIR ?? '', 'authz-builder');
  const files = readdirSync(dir).filter((f) => /-out\d*\.yaml$/.test(f));
  t.equal(files.length, 29);
  for (const file of files) {
    const json = parse(readFileSync(join(dir, file), 'utf8')) as JsonObject;
    const filter = envoyFromJson(HttpFilterSchema, json);
    t.equal(filter.name, json['name'], `${file}: name`);
    if (filter.configType.case !== 'typedConfig') {
      t.fail(`${file}: no typed_config`);
      continue;
    }
    const rawConfig = json['typedConfig'] as JsonObject;
    if (filter.configType.value.typeUrl.endsWith('.RBAC')) {
      const rbac = envoyUnpack(filter.configType.value, HttpRbacSchema);
      // Dry-run and CUSTOM policies come as shadow rules only.
      for (const [rules, raw] of [
        [rbac.rules, rawConfig['rules']],
        [rbac.shadowRules, rawConfig['shadowRules']],
      ] as const) {
        const rawRules = raw as JsonObject | undefined;
        t.equal(rules === undefined, rawRules === undefined, `${file}: rules present as in the input`);
        if (rules === undefined || rawRules === undefined) continue;
        t.same(Object.keys(rules.policies), Object.keys((rawRules['policies'] as JsonObject | undefined) ?? {}), `${file}: policy names`);
        t.equal(rules.action, RBAC_Action[(rawRules['action'] as keyof typeof RBAC_Action | undefined) ?? 'ALLOW'], `${file}: action`);
      }
    } else {
      const extAuthz = envoyUnpack(filter.configType.value, ExtAuthzSchema);
      t.equal(extAuthz.failureModeAllow, rawConfig['failureModeAllow'] ?? false, `${file}: ext_authz failure mode`);
    }
    // lowerCamelCase in, lowerCamelCase out: everything written was in the input, and
    // everything in the input is written once defaults are (`action: ALLOW` is the default).
    const out = envoyToJson(HttpFilterSchema, filter);
    t.same(notContainedIn(out, json), [], `${file}: nothing added`);
    t.same(notContainedIn(json, envoyToJson(HttpFilterSchema, filter, { alwaysEmitImplicit: true })), [], `${file}: nothing lost`);
  }
});

t.test('a path template permission carries its UriTemplateMatchConfig in Any', { skip }, async (t) => {
  const json = parse(readFileSync(join(GOLDENS_DIR ?? '', 'authz-builder', 'allow-path-out.yaml'), 'utf8')) as JsonValue;
  const filter = envoyFromJson(HttpFilterSchema, json);
  const policy = envoyUnpack(typedConfigOf(filter, 'the RBAC filter'), HttpRbacSchema).rules?.policies['ns[foo]-policy[httpbin-1]-rule[0]'];
  const and = policy?.permissions[0]?.rule;
  const or = and?.case === 'andRules' ? and.value.rules[0]?.rule : undefined;
  const templates = or?.case === 'orRules' ? or.value.rules.flatMap((r) => (r.rule.case === 'uriTemplate' ? [r.rule.value] : [])) : [];
  t.same(
    templates.map((tpl) => (tpl.typedConfig === undefined ? null : envoyUnpack(tpl.typedConfig, UriTemplateMatchConfigSchema).pathTemplate)),
    ['/path/template/*', '/**/path/template'],
  );
});

t.test('Istio\'s local rate limit EnvoyFilter sample: the filter in a TypedStruct, the route\'s config typed', { skip }, async (t) => {
  const sample = join(GOLDENS_DIR ?? '', '..', 'istio-samples', 'ratelimit', 'local-rate-limit-service.yaml');
  const envoyFilter = parseAllDocuments(readFileSync(sample, 'utf8'))[0]?.toJSON() as { spec: { configPatches: { patch: { value: JsonObject } }[] } };
  const [filterPatch, routePatch] = envoyFilter.spec.configPatches;
  assertPresent(filterPatch, 'sample changed');
  assertPresent(routePatch, 'sample changed');

  const filter = envoyFromJson(HttpFilterSchema, filterPatch.patch.value);
  t.equal(filter.name, 'envoy.filters.http.local_ratelimit');
  const typed = envoyUnpack(typedConfigOf(filter, 'the local rate limit filter'), TypedStructSchema);
  t.equal(typed.typeUrl, 'type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit');
  // A TypedStruct's value is the named message in JSON form: the registry reads it.
  const schema = envoyMessageType(typed.typeUrl);
  assertPresent(schema, 'LocalRateLimit not in the registry');
  const inner = envoyFromJson(LocalRateLimitSchema, (typed.value ?? {}) as JsonObject);
  t.equal(inner.statPrefix, 'http_local_rate_limiter');
  t.equal(schema.typeName, LocalRateLimitSchema.typeName);

  // The HTTP_ROUTE patch value is a (partial) Route.
  const route = envoyFromJson(RouteSchema, routePatch.patch.value);
  const action = route.action.case === 'route' ? route.action.value : undefined;
  t.equal(action?.rateLimits.length, 2);
  const perFilter = route.typedPerFilterConfig['envoy.filters.http.local_ratelimit'];
  assertPresent(perFilter, 'no typed_per_filter_config');
  const limit = envoyUnpack(perFilter, LocalRateLimitSchema);
  t.equal(limit.statPrefix, 'test_enabled');
  t.same([limit.tokenBucket?.maxTokens, limit.tokenBucket?.tokensPerFill, limit.tokenBucket?.fillInterval?.seconds], [100, 100, 60n]);
  t.same(limit.descriptors.map((d) => [d.entries.map((e) => `${e.key}=${e.value}`), d.tokenBucket?.maxTokens]), [[['header_match=productpage'], 10]]);
  t.equal(limit.enableXRatelimitHeaders, XRateLimitHeadersRFCVersion.DRAFT_VERSION_03);
  t.same(limit.responseHeadersToAdd.map((h) => [h.header?.key, h.header?.value, h.append]), [['x-local-rate-limit', 'true', false]]);
});

t.test('JWT authn, fault and CORS configs in the shape istiod writes them', async (t) => {
  const jwt = envoyFromJson(JwtAuthenticationSchema, {
    providers: {
      'origins-0': {
        issuer: 'testing@secure.istio.io',
        local_jwks: { inline_string: '{"keys":[]}' },
        forward: true,
        from_headers: [{ name: 'x-jwt-assertion', value_prefix: 'Bearer ' }],
        from_params: ['access_token'],
        claim_to_headers: [{ header_name: 'x-jwt-group', claim_name: 'groups' }],
        payload_in_metadata: 'testing@secure.istio.io',
      },
    },
    rules: [{ match: { prefix: '/' }, requires: { requires_any: { requirements: [{ provider_name: 'origins-0' }, { allow_missing: {} }] } } }],
    bypass_cors_preflight: true,
  });
  const provider = jwt.providers['origins-0'];
  t.equal(provider?.issuer, 'testing@secure.istio.io');
  t.same(provider?.fromHeaders.map((h) => [h.name, h.valuePrefix]), [['x-jwt-assertion', 'Bearer ']]);
  t.same(provider?.claimToHeaders.map((c) => [c.headerName, c.claimName]), [['x-jwt-group', 'groups']]);
  t.equal(provider?.payloadInMetadata, 'testing@secure.istio.io');
  const rule = jwt.rules[0]?.requirementType;
  const requires = rule?.case === 'requires' ? rule.value.requiresType : undefined;
  t.same(requires?.case === 'requiresAny' ? requires.value.requirements.map((r) => r.requiresType.case) : [], ['providerName', 'allowMissing']);

  const fault = envoyFromJson(HTTPFaultSchema, {
    delay: { fixed_delay: '5s', percentage: { numerator: 10, denominator: 'HUNDRED' } },
    abort: { http_status: 503, percentage: { numerator: 500000, denominator: 'MILLION' } },
  });
  t.same([fault.delay?.faultDelaySecifier.case, fault.delay?.percentage?.numerator], ['fixedDelay', 10]);
  t.same([fault.abort?.errorType.case, fault.abort?.errorType.value, fault.abort?.percentage?.numerator], ['httpStatus', 503, 500000]);

  const cors = envoyFromJson(CorsPolicySchema, {
    allow_origin_string_match: [{ exact: 'https://example.com' }, { safe_regex: { regex: 'https://.*\\.example\\.com' } }],
    allow_methods: 'GET,POST',
    max_age: '86400',
    allow_credentials: true,
    filter_enabled: { default_value: { numerator: 100 } },
  });
  t.same(cors.allowOriginStringMatch.map((m) => m.matchPattern.case), ['exact', 'safeRegex']);
  t.same([cors.allowMethods, cors.maxAge, cors.allowCredentials], ['GET,POST', '86400', true]);
});
