// VirtualService `fault` → Envoy's HTTPFault in the route's typed_per_filter_config, as
// istiod's route.TranslateFault builds it (pilot/pkg/networking/core/route/route.go):
// percentages over a MILLION, the deprecated integer `percent` over a HUNDRED, gRPC status
// names as codes. The config is canonical
// proto3 JSON: reading it with Envoy's descriptors and writing it back gives the same object.
import t from 'tap';
import { envoyFromJson, envoyToJson } from '@remora/config/envoy';
import { HTTPFaultSchema } from '@remora/config/envoy/gen/envoy/extensions/filters/http/fault/v3/fault_pb.js';
import { BOOKINFO_SERVICES, translate, vhost } from './helpers/translate.ts';

const FAULT = 'envoy.filters.http.fault';

function faultOf(fault: string): unknown {
  const out = translate(
    `${BOOKINFO_SERVICES}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings}\nspec:\n  hosts: [ratings]\n  http:\n  - fault: ${fault}\n    route:\n    - destination: {host: ratings}\n`,
  );
  return vhost(out.config, 'ratings.default.svc.cluster.local:9080').routes[0]!.filterConfigs[FAULT];
}

const cases: [string, string, unknown][] = [
  ['delay with percentage', '{delay: {fixedDelay: 7s, percentage: {value: 100}}}', { delay: { fixedDelay: '7s', percentage: { numerator: 1_000_000, denominator: 'MILLION' } } }],
  ['fractional delay and percentage', '{delay: {fixedDelay: 1500ms, percentage: {value: 0.1}}}', { delay: { fixedDelay: '1.500s', percentage: { numerator: 1000, denominator: 'MILLION' } } }],
  ['deprecated integer percent', '{delay: {fixedDelay: 2s, percent: 30}}', { delay: { fixedDelay: '2s', percentage: { numerator: 30 } } }],
  ['delay without a percentage: 0%', '{delay: {fixedDelay: 2s}}', { delay: { fixedDelay: '2s', percentage: {} } }],
  ['abort HTTP', '{abort: {httpStatus: 503, percentage: {value: 50}}}', { abort: { httpStatus: 503, percentage: { numerator: 500_000, denominator: 'MILLION' } } }],
  ['abort gRPC by name', '{abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}', { abort: { grpcStatus: 14, percentage: { numerator: 1_000_000, denominator: 'MILLION' } } }],
  ['abort without a percentage', '{abort: {httpStatus: 500}}', { abort: { httpStatus: 500 } }],
  ['zero percentage', '{abort: {httpStatus: 500, percentage: {value: 0}}}', { abort: { httpStatus: 500, percentage: { denominator: 'MILLION' } } }],
  ['both', '{delay: {fixedDelay: 0.2s, percentage: {value: 100}}, abort: {httpStatus: 418, percentage: {value: 100}}}', {
    delay: { fixedDelay: '0.200s', percentage: { numerator: 1_000_000, denominator: 'MILLION' } },
    abort: { httpStatus: 418, percentage: { numerator: 1_000_000, denominator: 'MILLION' } },
  }],
];

for (const [name, fault, want] of cases) {
  t.test(name, async (t) => {
    const got = faultOf(fault);
    t.strictSame(got, want);
    t.strictSame(envoyToJson(HTTPFaultSchema, envoyFromJson(HTTPFaultSchema, got as never)), want, 'canonical proto3 JSON of envoy.extensions.filters.http.fault.v3.HTTPFault');
  });
}
