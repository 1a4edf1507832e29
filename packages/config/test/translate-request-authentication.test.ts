// RequestAuthentication → Envoy's `envoy.filters.http.jwt_authn` config, compared semantically
// (both sides read as envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication and written
// back) with what istiod produces. The expected values are istiod's own test expectations in
// pilot/pkg/security/authn/policy_applier_test.go (TestJwtFilter, TestConvertToEnvoyJwtConfig),
// named per case; where istiod has no test (token locations, timeout, gateways), they follow
// convertToEnvoyJwtConfig and plugin/authn/authentication.go (BuildHTTP) line by line.
import t, { type Test } from 'tap';
import type { JsonValue } from '@bufbuild/protobuf';
import { envoyFromJson, envoyToJson } from '@remora/config/envoy';
import { JwtAuthenticationSchema, type JwtAuthenticationJson, type JwtProviderJson } from '@remora/config/envoy/gen/envoy/extensions/filters/http/jwt_authn/v3/config_pb.js';
import type { ProxyConfig } from '@remora/config';
import { INGRESS, PORTS, SIDECAR, translate as translateFor, type Translated } from './helpers/translate.ts';
import type { ProxyNode } from '@remora/config';

const JWT_AUTHN = 'envoy.filters.http.jwt_authn';

/** A sidecar with an app port has an inbound listener, where istiod puts the filter. */
const translate = (yaml: string, node: ProxyNode): Translated => translateFor(yaml, node, { ...PORTS, appPort: 9080 });

function requestAuthn(name: string, rules: string, ns = 'default', selector = ''): string {
  return `apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n${selector}${rules === '' ? '  {}\n' : `  jwtRules:\n${rules}`}---\n`;
}

/** A Gateway for the ingress node, so it has a listener to put the filter on. */
const GATEWAY = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
`;

/** The jwt_authn config on the proxy's inbound (sidecar) or gateway listeners; they must all carry the same one. */
function jwtConfigs(config: ProxyConfig): unknown[] {
  return config.listeners.flatMap((l) => l.httpFilters.filter((f) => f.name === JWT_AUTHN).map((f) => f.config));
}

/** The message in its canonical JSON form: proves it is a valid JwtAuthentication and drops spelling differences. */
function canonical(json: unknown): JsonValue {
  return envoyToJson(JwtAuthenticationSchema, envoyFromJson(JwtAuthenticationSchema, json as JwtAuthenticationJson));
}

function only(t: Test, config: ProxyConfig): JsonValue {
  const found = jwtConfigs(config);
  t.ok(found.length > 0, 'a listener has the jwt_authn filter');
  for (const c of found.slice(1)) t.same(canonical(c), canonical(found[0]), 'every listener has the same config');
  return canonical(found[0]);
}

/** istiod's provider fields every case has: payload in metadata under `payload`, `scope` and `permission` as lists. */
const PROVIDER_DEFAULTS = { payloadInMetadata: 'payload', normalizePayloadInMetadata: { spaceDelimitedClaims: ['permission', 'scope'] } };

/** istiod's single-provider requirement: origins-0 or no token. */
function single(provider: JwtProviderJson): JwtAuthenticationJson {
  return {
    rules: [{ match: { prefix: '/' }, requires: { requiresAny: { requirements: [{ providerName: 'origins-0' }, { allowMissing: {} }] } } }],
    providers: { 'origins-0': { ...PROVIDER_DEFAULTS, ...provider } },
    bypassCorsPreflight: true,
  };
}

const INLINE = `{"keys":[]}`;

t.test('no policy, an empty policy, a policy for other workloads: no jwt_authn filter', async (t) => {
  // TestJwtFilter "No policy" and "Empty policy": nil filter.
  t.same(jwtConfigs(translate('', SIDECAR).config), []);
  t.same(jwtConfigs(translate(requestAuthn('empty', ''), SIDECAR).config), []);
  const other = translate(requestAuthn('other', `  - issuer: https://secret.foo.com\n    jwks: '${INLINE}'\n`, 'default', '  selector: {matchLabels: {app: reviews}}\n'), SIDECAR);
  t.same(jwtConfigs(other.config), []);
});

t.test('jwksUri: remote_jwks with istiod cluster name, 5 s timeout and 5 min cache', async (t) => {
  // TestJwtFilter "JWT policy with non Mesh cluster as issuer and remote jwks mode Envoy".
  const out = translate(requestAuthn('jwt', `  - issuer: "invalid|7443|"\n    jwksUri: http://invalid-issuer.com:7443/jwks\n`), SIDECAR);
  t.same(out.issues, []);
  t.same(
    only(t, out.config),
    canonical(
      single({
        issuer: 'invalid|7443|',
        remoteJwks: { httpUri: { uri: 'http://invalid-issuer.com:7443/jwks', cluster: 'outbound|7443||invalid-issuer.com', timeout: '5s' }, cacheDuration: '300s' },
      }),
    ),
  );
  // The rule's own timeout goes to http_uri.timeout; the port follows the scheme when the URI has none.
  const timed = translate(requestAuthn('jwt', `  - issuer: https://secret.foo.com\n    jwksUri: https://keys.foo.com/certs\n    timeout: 1.5s\n`), SIDECAR);
  t.same(
    only(t, timed.config),
    canonical(
      single({
        issuer: 'https://secret.foo.com',
        remoteJwks: { httpUri: { uri: 'https://keys.foo.com/certs', cluster: 'outbound|443||keys.foo.com', timeout: '1.500s' }, cacheDuration: '300s' },
      }),
    ),
  );
});

t.test('jwks: local_jwks inline', async (t) => {
  // TestJwtFilter "JWT policy with inline Jwks".
  const out = translate(requestAuthn('jwt', `  - issuer: https://secret.foo.com\n    jwks: '${INLINE}'\n`), SIDECAR);
  t.same(only(t, out.config), canonical(single({ issuer: 'https://secret.foo.com', localJwks: { inlineString: INLINE } })));
});

t.test('several rules across policies: sorted by issuer, any provider or every present token valid', async (t) => {
  // TestJwtFilter "Multi JWTs policy": foo (jwksUri), an empty policy, bar (jwks) → origins-0 is bar.
  const out = translate(
    requestAuthn('foo', `  - issuer: https://secret.foo.com\n    jwksUri: http://keys.foo.com/certs\n`) +
      requestAuthn('empty', '') +
      requestAuthn('bar', `  - issuer: https://secret.bar.com\n    jwks: '${INLINE}'\n`),
    SIDECAR,
  );
  const anyOrMissing = (name: string) => ({ requiresAny: { requirements: [{ providerName: name }, { allowMissing: {} }] } });
  const expected: JwtAuthenticationJson = {
    rules: [
      {
        match: { prefix: '/' },
        requires: {
          requiresAny: {
            requirements: [{ providerName: 'origins-0' }, { providerName: 'origins-1' }, { requiresAll: { requirements: [anyOrMissing('origins-0'), anyOrMissing('origins-1')] } }],
          },
        },
      },
    ],
    providers: {
      'origins-0': { ...PROVIDER_DEFAULTS, issuer: 'https://secret.bar.com', localJwks: { inlineString: INLINE } },
      'origins-1': {
        ...PROVIDER_DEFAULTS,
        issuer: 'https://secret.foo.com',
        remoteJwks: { httpUri: { uri: 'http://keys.foo.com/certs', cluster: 'outbound|80||keys.foo.com', timeout: '5s' }, cacheDuration: '300s' },
      },
    },
    bypassCorsPreflight: true,
  };
  t.same(only(t, out.config), canonical(expected));
});

t.test('forwardOriginalToken, outputPayloadToHeader, outputClaimToHeaders, audiences', async (t) => {
  // TestJwtFilter "Forward original token", "Output payload" and "Output claim to header".
  const out = translate(
    requestAuthn(
      'jwt',
      `  - issuer: https://secret.foo.com
    jwks: '${INLINE}'
    audiences: [bookstore, https://api.foo.com]
    forwardOriginalToken: true
    outputPayloadToHeader: x-foo
    outputClaimToHeaders:
    - {header: x-jwt-key1, claim: value1}
    - {header: x-jwt-key2, claim: value2}
`,
    ),
    SIDECAR,
  );
  t.same(
    only(t, out.config),
    canonical(
      single({
        issuer: 'https://secret.foo.com',
        audiences: ['bookstore', 'https://api.foo.com'],
        localJwks: { inlineString: INLINE },
        forward: true,
        forwardPayloadHeader: 'x-foo',
        claimToHeaders: [
          { headerName: 'x-jwt-key1', claimName: 'value1' },
          { headerName: 'x-jwt-key2', claimName: 'value2' },
        ],
      }),
    ),
  );
});

t.test('fromHeaders, fromParams, fromCookies: as written, no defaults added (Envoy applies its own)', async (t) => {
  // convertToEnvoyJwtConfig copies FromHeaders (name, value_prefix), FromParams and FromCookies.
  const out = translate(
    requestAuthn(
      'jwt',
      `  - issuer: https://secret.foo.com
    jwks: '${INLINE}'
    fromHeaders:
    - {name: x-jwt-assertion, prefix: "Bearer "}
    - {name: X-Token}
    fromParams: [token]
    fromCookies: [session]
`,
    ),
    SIDECAR,
  );
  t.same(
    only(t, out.config),
    canonical(
      single({
        issuer: 'https://secret.foo.com',
        localJwks: { inlineString: INLINE },
        fromHeaders: [{ name: 'x-jwt-assertion', valuePrefix: 'Bearer ' }, { name: 'X-Token' }],
        fromParams: ['token'],
        fromCookies: ['session'],
      }),
    ),
  );
  const plain = translate(requestAuthn('jwt', `  - issuer: https://secret.foo.com\n    jwks: '${INLINE}'\n`), SIDECAR);
  const provider = (only(t, plain.config) as { providers: Record<string, Record<string, unknown>> }).providers['origins-0'];
  t.same([provider?.['fromHeaders'], provider?.['fromParams'], provider?.['fromCookies']], [undefined, undefined, undefined]);
});

t.test('spaceDelimitedClaims: added to scope and permission, sorted', async (t) => {
  // TestConvertToEnvoyJwtConfig "Single JWT policy with custom space delimited claims".
  const out = translate(requestAuthn('jwt', `  - issuer: https://secret.foo.com\n    jwks: '${INLINE}'\n    spaceDelimitedClaims: [custom_scope, roles]\n`), SIDECAR);
  const expected = single({ issuer: 'https://secret.foo.com', localJwks: { inlineString: INLINE } });
  expected.providers!['origins-0']!.normalizePayloadInMetadata = { spaceDelimitedClaims: ['custom_scope', 'permission', 'roles', 'scope'] };
  t.same(only(t, out.config), canonical(expected));
});

t.test('gateways clear the route cache on every provider; sidecars do not', async (t) => {
  // authentication.go BuildHTTP: JwtFilter(clearRouteCache = proxy.Type != SidecarProxy).
  const rule = `  - issuer: https://secret.foo.com\n    jwks: '${INLINE}'\n`;
  const gw = translate(GATEWAY + requestAuthn('jwt', rule, 'istio-system', '  selector: {matchLabels: {istio: ingressgateway}}\n'), INGRESS);
  t.same(gw.issues, []);
  t.same(only(t, gw.config), canonical(single({ issuer: 'https://secret.foo.com', localJwks: { inlineString: INLINE }, clearRouteCache: true })));
  const sidecar = translate(requestAuthn('jwt', rule), SIDECAR);
  t.same(only(t, sidecar.config), canonical(single({ issuer: 'https://secret.foo.com', localJwks: { inlineString: INLINE } })));
});

t.test("the filter sits where istiod puts it: inbound and gateway only, before RBAC", async (t) => {
  const policy = `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny, namespace: default}\nspec: {action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}\n---\n`;
  const out = translate(requestAuthn('jwt', `  - issuer: https://secret.foo.com\n    jwks: '${INLINE}'\n`) + policy, SIDECAR);
  for (const l of out.config.listeners) {
    const names = l.httpFilters.map((f) => f.name);
    if (l.direction === 'outbound') t.notOk(names.includes(JWT_AUTHN), `${l.name}: none on the outbound side`);
    else t.same(names.slice(0, 2), [JWT_AUTHN, 'envoy.filters.http.rbac'], `${l.name}: jwt_authn, then rbac`);
  }
});

t.test('a rule without jwks or jwksUri is left out with a warning naming it', async (t) => {
  const out = translate(requestAuthn('jwt', `  - issuer: https://secret.foo.com\n  - issuer: https://secret.bar.com\n    jwks: '${INLINE}'\n`), SIDECAR);
  t.match(out.brief, [/RequestAuthentication default\/jwt spec\.jwtRules\[0\]: neither jwks nor jwksUri is set/]);
  t.same(only(t, out.config), canonical(single({ issuer: 'https://secret.bar.com', localJwks: { inlineString: INLINE } })));
});
