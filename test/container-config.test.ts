// The container files stay consistent with the CLI: every flag the image's CMD, its
// entrypoint and the Kubernetes example pass to `remora` is one `remora` accepts (with a
// valid value), the init container's flags are ones docker/iptables.sh accepts, the app
// probes the manifest rewrites are all registered with the sidecar, and the sidecar's
// config in docker/k8s/mesh validates. Cheap: nothing is built or run but the CLI.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { OPTIONS, parseOptions, type Command } from '../packages/proxy/src/cli/options.ts';
import { parseAppProbers } from '../packages/proxy/src/admin/app-probes.ts';
import { run } from './helpers/netns.ts';
import { REPO, runCli } from './helpers/remora.ts';

const DOCKER = join(REPO, 'docker');
const dockerfile = readFileSync(join(DOCKER, 'Dockerfile'), 'utf8');
const entrypoint = readFileSync(join(DOCKER, 'entrypoint.sh'), 'utf8');

interface Container {
  readonly name: string;
  readonly image: string;
  readonly args?: string[];
  readonly env?: Array<{ name: string; value?: string }>;
  readonly readinessProbe?: Probe;
  readonly livenessProbe?: Probe;
  readonly startupProbe?: Probe;
  readonly restartPolicy?: string;
}
interface Probe {
  readonly httpGet?: { path: string; port: number | string };
}

function deployment(): { initContainers: Container[]; containers: Container[] } {
  const docs = parseAllDocuments(readFileSync(join(DOCKER, 'k8s/productpage.yaml'), 'utf8')).map((d) => d.toJS() as { kind: string; spec: { template: { spec: { initContainers: Container[]; containers: Container[] } } } });
  const d = docs.find((x) => x.kind === 'Deployment');
  if (!d) throw new Error('no Deployment in docker/k8s/productpage.yaml');
  return d.spec.template.spec;
}

/** Throws the CLI's own usage error when `remora <argv>` would refuse it. */
function checkRemoraArgs(argv: readonly string[], env: NodeJS.ProcessEnv = {}): void {
  const [command, ...rest] = argv;
  if (command !== 'sidecar' && command !== 'gateway') throw new Error(`not a proxy command: ${command}`);
  parseOptions(command as Command, rest, env);
}

t.test('the image’s CMD is a command line remora accepts', async (t) => {
  const cmd = /^CMD (\[.*\])$/m.exec(dockerfile);
  t.ok(cmd, 'the Dockerfile has an exec-form CMD');
  const argv = JSON.parse(cmd![1]!) as string[];
  t.doesNotThrow(() => checkRemoraArgs(argv));
  t.match(dockerfile, /^ENTRYPOINT \["\/usr\/local\/bin\/remora-entrypoint"\]$/m, 'the entrypoint is docker/entrypoint.sh');
});

t.test('the flags the entrypoint adds are flags of remora sidecar', { todo: OPTIONS['conntrack-fd'] === undefined ? '--conntrack-fd comes with the capture runtime' : false }, async (t) => {
  t.match(entrypoint, /set -- sidecar --conntrack-fd 3 "\$@"/);
  t.doesNotThrow(() => checkRemoraArgs(['sidecar', '-c', '/etc/remora', '--conntrack-fd', '3']));
  t.doesNotThrow(() => checkRemoraArgs(['sidecar', '-c', '/etc/remora', '--interception-mode', 'NONE']), 'the entrypoint reads --interception-mode');
});

t.test('the entrypoint is valid POSIX sh', async (t) => {
  const r = await run('sh', ['-n', join(DOCKER, 'entrypoint.sh')], { timeoutMs: 5_000 });
  t.equal(r.code, 0, r.stderr);
});

t.test('the HEALTHCHECK probes the health port’s readiness path', async (t) => {
  const hc = /^HEALTHCHECK[^\n]*\\\n\s*CMD (\[.*\])$/m.exec(dockerfile);
  t.ok(hc, 'an exec-form HEALTHCHECK');
  const script = (JSON.parse(hc![1]!) as string[]).join(' ');
  const opts = parseOptions('sidecar', ['-c', '/etc/remora'], {});
  t.ok(opts !== 'help' && script.includes(`:-${opts.healthPort}}`), 'the default health port');
  t.match(script, 'GET /healthz/ready ');
});

t.test('the Kubernetes example: remora’s args, the init container’s flags, the rewritten probes', async (t) => {
  const spec = deployment();
  const init = spec.initContainers.find((c) => c.name === 'remora-init');
  const sidecar = spec.initContainers.find((c) => c.name === 'remora');
  t.ok(init && sidecar, 'remora-init and the remora sidecar are initContainers');
  t.ok(spec.initContainers.indexOf(init!) < spec.initContainers.indexOf(sidecar!), 'the capture is set up before the sidecar starts');
  t.equal(sidecar!.restartPolicy, 'Always', 'a native sidecar (holdApplicationUntilProxyStarts)');
  t.ok(sidecar!.startupProbe?.httpGet, 'the app waits for the sidecar’s startupProbe');

  const env = Object.fromEntries((sidecar!.env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value!]));
  t.doesNotThrow(() => checkRemoraArgs(sidecar!.args ?? [], env), `remora ${(sidecar!.args ?? []).join(' ')}`);
  const opts = parseOptions('sidecar', (sidecar!.args ?? []).slice(1), env);
  if (opts === 'help') throw new Error('help');
  for (const probe of [sidecar!.startupProbe, sidecar!.readinessProbe, sidecar!.livenessProbe]) {
    t.same(probe?.httpGet, { path: '/healthz/ready', port: opts.healthPort }, 'the sidecar is probed on its health port');
  }

  const probers = parseAppProbers(env.ISTIO_KUBE_APP_PROBERS ?? '{}');
  for (const c of spec.containers) {
    for (const probe of [c.readinessProbe, c.livenessProbe, c.startupProbe]) {
      if (probe?.httpGet?.port !== opts.statusPort) continue;
      t.ok(probers.has(probe.httpGet.path), `${c.name}'s probe ${probe.httpGet.path} is in the sidecar's ISTIO_KUBE_APP_PROBERS`);
    }
  }
  t.ok(probers.size > 0, 'the app’s probes are rewritten');

  const dry = await run('sh', [join(DOCKER, 'iptables.sh'), '--dry-run', ...(init!.args ?? [])], { timeoutMs: 10_000 });
  t.equal(dry.code, 0, `iptables.sh ${(init!.args ?? []).join(' ')}: ${dry.stderr}`);
  t.match(dry.stdout, `--to-ports ${opts.ports.outboundPort}`, 'the init container redirects outbound to the sidecar’s outbound port');
  t.match(dry.stdout, `--to-ports ${opts.ports.inboundPort}`, 'and inbound to its inbound port');
});

t.test('the sidecar’s config in docker/k8s/mesh validates', async (t) => {
  const r = await runCli(['validate', '-c', join(DOCKER, 'k8s/mesh')]);
  t.equal(r.code, 0, r.stdout + r.stderr);
});
