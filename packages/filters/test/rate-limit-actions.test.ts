// Envoy's rate limit actions, one test per action: the descriptor each makes of a request.
import t from 'tap';
import type { RateLimitJson } from '@remora/config/envoy/gen/envoy/config/route/v3/route_components_pb.js';
import { compileRateLimits, populateDescriptor, type RateLimitRoute } from '../src/ratelimit/rate-limit-actions.ts';
import { FakeRequest, type ReqInit } from '@remora/filters/testing';

const ROUTE: RateLimitRoute = { cluster: 'outbound|80||a.test', serviceCluster: 'productpage.default', metadata: { 'acme.plans': { plan: { name: 'gold', level: 3 } } } };

/** The descriptor one entry of `actions` makes of a request, or null when it makes none. */
function descriptor(actions: unknown[], init: ReqInit = {}, setup?: (r: FakeRequest) => void, route: RateLimitRoute = ROUTE): [string, string][] | null {
  const [entry] = compileRateLimits([{ actions } as RateLimitJson], 'rate_limits', route);
  const req = new FakeRequest(init);
  setup?.(req);
  const keys: string[] = [];
  const values: string[] = [];
  if (!populateDescriptor(req, entry!.actions, keys, values)) return null;
  return keys.map((k, i) => [k, values[i]!]);
}

t.test('source_cluster: the local service cluster', async (t) => {
  t.same(descriptor([{ sourceCluster: {} }]), [['source_cluster', 'productpage.default']]);
});

t.test('masked_remote_address: IPv4 and IPv6, default and given prefixes', async (t) => {
  t.same(descriptor([{ maskedRemoteAddress: {} }], { remoteIp: '10.1.2.3' }), [['masked_remote_address', '10.1.2.3/32']], 'default /32');
  t.same(descriptor([{ maskedRemoteAddress: { v4PrefixMaskLen: 16 } }], { remoteIp: '10.1.2.3' }), [['masked_remote_address', '10.1.0.0/16']]);
  t.same(descriptor([{ maskedRemoteAddress: { v4PrefixMaskLen: 0 } }], { remoteIp: '10.1.2.3' }), [['masked_remote_address', '0.0.0.0/0']]);
  t.same(descriptor([{ maskedRemoteAddress: { v4PrefixMaskLen: 24 } }], { remoteIp: '::ffff:192.168.7.9' }), [['masked_remote_address', '192.168.7.0/24']], 'an IPv4-mapped address is IPv4');
  t.same(descriptor([{ maskedRemoteAddress: { v6PrefixMaskLen: 64 } }], { remoteIp: '2001:db8:1:2:3:4:5:6' }), [['masked_remote_address', '2001:db8:1:2::/64']]);
  t.same(descriptor([{ maskedRemoteAddress: {} }], { remoteIp: '2001:db8::1' }), [['masked_remote_address', '2001:db8::1/128']], 'default /128');
  t.same(descriptor([{ maskedRemoteAddress: { v6PrefixMaskLen: 0 } }], { remoteIp: '2001:db8::1' }), [['masked_remote_address', '::/0']]);
  t.equal(descriptor([{ maskedRemoteAddress: {} }], { remoteIp: '' }), null, 'no address: no descriptor');
  t.throws(() => descriptor([{ maskedRemoteAddress: { v4PrefixMaskLen: 33 } }]), /actions\[0\]\.maskedRemoteAddress\.v4PrefixMaskLen must be 0 to 32/);
});

t.test('query_parameter_value_match: all parameters match, or with expect_match false none', async (t) => {
  const action = { queryParameterValueMatch: { descriptorValue: 'free', queryParameters: [{ name: 'tier', stringMatch: { exact: 'free' } }, { name: 'beta', presentMatch: true }] } };
  t.same(descriptor([action], { path: '/x?tier=free&beta=1' }), [['query_match', 'free']]);
  t.equal(descriptor([action], { path: '/x?tier=free' }), null, 'one missing: no descriptor');
  t.equal(descriptor([action], { path: '/x?tier=paid&beta' }), null);
  const inverted = { queryParameterValueMatch: { ...action.queryParameterValueMatch, descriptorKey: 'k', expectMatch: false } };
  t.same(descriptor([inverted], { path: '/x?tier=paid' }), [['k', 'free']]);
  t.equal(descriptor([inverted], { path: '/x?tier=free&beta=1' }), null);
  t.throws(() => descriptor([{ queryParameterValueMatch: { descriptorValue: 'v' } }]), /queryParameters must not be empty/);
});

t.test('header_value_match: expect_match false', async (t) => {
  const action = { headerValueMatch: { descriptorValue: 'anon', expectMatch: false, headers: [{ name: 'authorization', presentMatch: true }] } };
  t.same(descriptor([action]), [['header_match', 'anon']]);
  t.equal(descriptor([action], { headers: { authorization: 'Bearer x' } }), null);
});

t.test('query_parameters: a parameter\'s value, skip_if_absent', async (t) => {
  t.same(descriptor([{ genericKey: { descriptorValue: 'g' } }, { queryParameters: { queryParameterName: 'user', descriptorKey: 'u' } }], { path: '/?user=ann' }), [
    ['generic_key', 'g'],
    ['u', 'ann'],
  ]);
  t.equal(descriptor([{ queryParameters: { queryParameterName: 'user', descriptorKey: 'u' } }], { path: '/' }), null);
  t.same(descriptor([{ genericKey: { descriptorValue: 'g' } }, { queryParameters: { queryParameterName: 'user', descriptorKey: 'u', skipIfAbsent: true } }], { path: '/' }), [['generic_key', 'g']]);
});

t.test('metadata, DYNAMIC: the request\'s dynamic metadata, default_value, skip_if_absent', async (t) => {
  const action = { metadata: { descriptorKey: 'tenant', metadataKey: { key: 'envoy.filters.http.lua', path: [{ key: 'tenant' }] } } };
  t.same(descriptor([action], {}, (r) => r.setDynamicMetadata('envoy.filters.http.lua', 'tenant', 'acme')), [['tenant', 'acme']]);
  t.equal(descriptor([action]), null, 'absent: no descriptor');
  t.same(descriptor([{ metadata: { ...action.metadata, defaultValue: 'none' } }]), [['tenant', 'none']], 'absent: the default');
  t.same(descriptor([{ genericKey: { descriptorValue: 'g' } }, { metadata: { ...action.metadata, skipIfAbsent: true } }]), [['generic_key', 'g']], 'absent, skip_if_absent: the entry is left out');
  t.same(descriptor([{ dynamicMetadata: { descriptorKey: 'tenant', metadataKey: action.metadata.metadataKey } }], {}, (r) => r.setDynamicMetadata('envoy.filters.http.lua', 'tenant', 'x')), [['tenant', 'x']], 'the deprecated dynamic_metadata action');
  t.throws(() => descriptor([{ metadata: { descriptorKey: 'k', metadataKey: { key: 'f', path: [{ key: 'a' }, { key: 'b' }] } } }]), /actions\[0\]\.metadata\.metadataKey\.path: dynamic metadata is read by filter and one field/);
  t.throws(() => descriptor([{ metadata: { metadataKey: { key: 'f', path: [{ key: 'a' }] } } }]), /metadata\.descriptorKey is required/);
});

t.test('metadata, ROUTE_ENTRY: the route\'s metadata, a string at the path', async (t) => {
  const key = { key: 'acme.plans', path: [{ key: 'plan' }, { key: 'name' }] };
  t.same(descriptor([{ metadata: { descriptorKey: 'plan', metadataKey: key, source: 'ROUTE_ENTRY' } }]), [['plan', 'gold']]);
  const level = { key: 'acme.plans', path: [{ key: 'plan' }, { key: 'level' }] };
  t.equal(descriptor([{ metadata: { descriptorKey: 'plan', metadataKey: level, source: 'ROUTE_ENTRY' } }]), null, 'not a string: absent, as Envoy reads string_value');
  t.same(descriptor([{ metadata: { descriptorKey: 'plan', metadataKey: key, source: 'ROUTE_ENTRY', defaultValue: 'basic' } }], {}, undefined, { cluster: null }), [['plan', 'basic']], 'a route without metadata: the default');
});

t.test('extension is refused, naming it', async (t) => {
  t.throws(() => descriptor([{ extension: { name: 'x' } }]), /rate_limits\[0\]\.actions\[0\]\.extension: not supported/);
});
