// The registry compiles a listener's chain as Envoy reads an HttpConnectionManager's
// http_filters: an unknown filter is refused, naming it, unless it is is_optional (skipped
// with a warning); Istio's own filters are accepted and skipped; the router is terminal.
import t from 'tap';
import { FilterName } from '@remora/filters';
import { faultFactory, FilterRegistry, routerFactory, SKIPPED_ISTIO_FILTERS } from '@remora/filters/internal';
import { storeContext } from '@remora/filters/testing';

const registry = new FilterRegistry().register(faultFactory).register(routerFactory);
const router = { name: FilterName.Router, config: {} };
const fault = { name: FilterName.Fault, config: {} };

t.test('an unknown filter is an error naming it', async (t) => {
  t.throws(() => registry.compileChain([{ name: 'envoy.filters.http.lua', config: {} }, router], storeContext()), {
    message: 'unknown HTTP filter envoy.filters.http.lua (at 0 of the chain); Envoy refuses it too unless it is marked is_optional',
  });
});

t.test('an unknown filter marked is_optional is skipped with a warning', async (t) => {
  const ctx = storeContext();
  const steps = registry.compileChain([{ name: 'envoy.filters.http.lua', config: {}, isOptional: true }, fault, router], ctx);
  t.same(steps.map((s) => s.name), [FilterName.Fault]);
  t.same(ctx.warnings, ['HTTP filter envoy.filters.http.lua is not supported; it is optional (is_optional), so it is skipped']);
});

t.test("Istio's own filters are accepted and skipped, silently", async (t) => {
  const ctx = storeContext();
  const chain = [...SKIPPED_ISTIO_FILTERS.keys()].map((name) => ({ name, config: {} }));
  t.same([...SKIPPED_ISTIO_FILTERS.keys()].sort(), ['envoy.filters.http.grpc_stats', 'istio.alpn', 'istio.metadata_exchange', 'istio.stats']);
  t.same(registry.compileChain([...chain, router], ctx), []);
  t.same(ctx.warnings, []);
});

t.test('the router is terminal: last, and not a step requests run', async (t) => {
  t.same(registry.compileChain([fault, router], storeContext()).map((s) => s.name), [FilterName.Fault]);
  t.throws(() => registry.compileChain([router, fault], storeContext()), { message: 'filter envoy.filters.http.router is terminal and must be the last HTTP filter, but is at 0 of 2' });
  t.throws(() => registry.compileChain([{ name: FilterName.Router, config: { upstreamHttpFilters: [{ name: 'x' }] } }], storeContext()), {
    message: 'filter envoy.filters.http.router: upstreamHttpFilters is not supported',
  });
  const ctx = storeContext();
  registry.compileChain([{ name: FilterName.Router, config: { suppressEnvoyHeaders: true, startChildSpan: true } }], ctx);
  t.same(ctx.warnings, [
    "router: startChildSpan is not honoured; a request has one span, retries included (Istio's default)",
    'router: suppressEnvoyHeaders is not honoured; x-envoy-* headers are still added',
  ]);
});
