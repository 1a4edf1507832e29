// Envoy's command line as Istio's agent writes it, and the proxy's identity read from the
// node Istio's agent puts in the bootstrap.
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { EnvoyUsageError, parseEnvoyArgs, proxyNodeFromEnvoy, type EnvoyOptions } from '../src/cli/envoy-options.ts';

const GOLDENS = resolve(import.meta.dirname, '../../../../shared/corpus/istio-goldens/bootstrap');

function parse(argv: string[]): EnvoyOptions {
  const o = parseEnvoyArgs(argv);
  if (typeof o === 'string') throw new Error(`unexpected ${o}`);
  return o;
}

t.test("the agent's command line (pkg/envoy/proxy.go) is accepted and read", async (t) => {
  const o = parse([
    '-c', 'etc/istio/proxy/envoy-rev.json',
    '--drain-time-s', '45',
    '--drain-strategy', 'immediate',
    '--local-address-ip-version', 'v4',
    '--file-flush-interval-msec', '1000',
    '--disable-hot-restart',
    '--allow-unknown-static-fields',
    '-l', 'warning',
    '--component-log-level', 'misc:error,upstream:debug',
    '--concurrency', '2',
  ]);
  t.equal(o.configPath, 'etc/istio/proxy/envoy-rev.json');
  t.equal(o.drainTimeMs, 45_000);
  t.equal(o.drainStrategy, 'immediate');
  t.equal(o.fileFlushIntervalMs, 1000);
  t.equal(o.allowUnknownStaticFields, true);
  t.equal(o.logLevel, 'warning');
  t.same(o.componentLogLevels, { misc: 'error', upstream: 'debug' });
  t.equal(o.concurrency, 2);
  t.equal(o.mode, 'serve');
});

t.test("Envoy's defaults where the command line is silent", async (t) => {
  const o = parse(['--config-yaml', '{}']);
  t.equal(o.configPath, null);
  t.equal(o.configYaml, '{}');
  t.equal(o.drainTimeMs, 600_000, 'Envoy drains for 600 s by default');
  t.equal(o.drainStrategy, 'gradual');
  t.equal(o.logLevel, 'info');
  t.equal(o.concurrency, null);
  t.equal(o.allowUnknownStaticFields, false);
  t.equal(o.fileFlushIntervalMs, 10_000);
});

t.test('flags in --name=value form and the warn alias', async (t) => {
  const o = parse(['--config-path=b.yaml', '--log-level=warn', '--mode=validate']);
  t.equal(o.configPath, 'b.yaml');
  t.equal(o.logLevel, 'warning');
  t.equal(o.mode, 'validate');
});

t.test('help and version', async (t) => {
  t.equal(parseEnvoyArgs(['--help']), 'help');
  t.equal(parseEnvoyArgs(['-c', 'x', '--version']), 'version');
});

t.test("bad command lines are refused with Envoy's words", async (t) => {
  const bad: [string[], RegExp][] = [
    [['-c', 'b.json', '--no-such-flag'], /PARSE ERROR: Argument: --no-such-flag\s+Couldn't find match for argument/],
    [['-c'], /Missing a value for this argument/],
    [['-c', 'b.json', '--concurrency', 'two'], /Couldn't read argument value from string 'two'/],
    [['-c', 'b.json', '-l', 'loud'], /invalid log level specified 'loud'/],
    [['-c', 'b.json', '--component-log-level', 'upstream'], /component log level not correctly specified 'upstream'/],
    [['-c', 'b.json', '--mode', 'fast'], /unknown mode 'fast'/],
    [['-c', 'b.json', '--local-address-ip-version', 'v5'], /unknown IP address version 'v5'/],
    [[], /At least one of --config-path or --config-yaml/],
  ];
  for (const [argv, message] of bad) t.throws(() => parseEnvoyArgs(argv), { name: 'EnvoyUsageError', message }, argv.join(' '));
  t.ok(new EnvoyUsageError('x') instanceof Error);
});

t.test("the node of a real agent's bootstrap: a sidecar, defaults for what it leaves out", { skip: existsSync(GOLDENS) ? false : `Istio's goldens not found at ${GOLDENS} (shared/corpus beside the repository)` }, async (t) => {
  const golden = JSON.parse(readFileSync(resolve(GOLDENS, 'default_golden.json'), 'utf8')) as { node: { id: string; cluster: string; metadata: Record<string, unknown> } };
  const node = proxyNodeFromEnvoy(golden.node);
  t.equal(node.kind, 'sidecar');
  t.equal(node.namespace, 'default', 'no NAMESPACE and no namespace in the id');
  t.equal(node.workloadName, 'foo', 'the pod name from the id');
  t.equal(node.clusterDomain, 'cluster.local');
  t.equal(node.locality, '');
});

t.test('the node of a gateway pod, as istiod builds it', async (t) => {
  const node = proxyNodeFromEnvoy({
    id: 'router~10.1.2.3~istio-ingressgateway-5d8f.istio-system~istio-system.svc.corp.example',
    cluster: 'istio-ingressgateway.istio-system',
    metadata: {
      NAMESPACE: 'istio-system',
      SERVICE_ACCOUNT: 'istio-ingressgateway-service-account',
      WORKLOAD_NAME: 'istio-ingressgateway',
      LABELS: { istio: 'ingressgateway', app: 'istio-ingressgateway', 'topology.istio.io/network': 7 },
      HTTP10: '1',
    },
    locality: { region: 'us-east1', zone: 'us-east1-b' },
  });
  t.equal(node.kind, 'gateway');
  t.equal(node.namespace, 'istio-system');
  t.equal(node.serviceAccount, 'istio-ingressgateway-service-account');
  t.equal(node.workloadName, 'istio-ingressgateway');
  t.same(node.labels, { istio: 'ingressgateway', app: 'istio-ingressgateway' }, 'only string labels');
  t.equal(node.clusterDomain, 'corp.example');
  t.equal(node.locality, 'us-east1/us-east1-b/');
  t.equal(node.http10, true);
});

t.test('a sidecar whose namespace only the id gives', async (t) => {
  const node = proxyNodeFromEnvoy({ id: 'sidecar~10.0.0.9~reviews-v1-abc.bookinfo~bookinfo.svc.cluster.local', metadata: { LABELS: { app: 'reviews', version: 'v1' } } });
  t.equal(node.namespace, 'bookinfo');
  t.equal(node.workloadName, 'reviews', 'the app label when WORKLOAD_NAME is absent');
  t.equal(node.http10, false);
});
