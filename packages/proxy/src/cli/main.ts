import { formatIssue, hasErrors, type ConfigIssue, type ProxyNode } from '@remora/config';
import { helpText, parseOptions, UsageError, type Command, type ProxyOptions } from './options.ts';
import { ProxyProcess, StartError } from './proxy-process.ts';
import { runCa } from './ca.ts';
import { runProxyConfig } from './proxy-config/command.ts';
import { runEnvoy } from './envoy-command.ts';
import { runRateLimitService } from './ratelimit-service.ts';
import { runExplain } from './explain-command.ts';
import { builtinFilters } from '../runtime/builtin-filters.ts';
import { registerFilterModules } from './filter-modules.ts';

const COMMANDS = new Set<Command>(['gateway', 'sidecar', 'validate']);

interface Io {
  readonly out: (s: string) => void;
  readonly err: (s: string) => void;
  readonly env: NodeJS.ProcessEnv;
  readonly exit: (code: number) => void;
}

/** `remora <command> …`. Resolves with the exit status for commands that end by themselves. */
export async function main(argv: readonly string[], io: Io): Promise<number | null> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    io.out(helpText(null));
    return command === undefined ? 2 : 0;
  }
  if (command === 'ca') return runCa(rest, io);
  if (command === 'proxy-config' || command === 'pc') return runProxyConfig(rest, io);
  if (command === 'envoy') return runEnvoy(rest, io);
  if (command === 'ratelimit-service') return runRateLimitService(rest, io);
  if (command === 'explain') return runExplain(rest, io);
  if (!COMMANDS.has(command as Command)) {
    io.err(`remora: unknown command "${command}"\n\n${helpText(null)}`);
    return 2;
  }
  let opts: ProxyOptions | 'help';
  try {
    opts = parseOptions(command as Command, rest, io.env);
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`remora ${command}: ${err.message}\n\n${helpText(command as Command)}`);
      return 2;
    }
    throw err;
  }
  if (opts === 'help') {
    io.out(helpText(command as Command));
    return 0;
  }
  if (opts.command === 'validate') return validate(opts, io);
  return runProxy(opts, io);
}

/**
 * Checks the mesh as both kinds of proxy would read it (a gateway with the default gateway
 * labels, and a sidecar in the given namespace), so problems that only show in one
 * translation are found too. Prints every problem once.
 */
async function validate(opts: ProxyOptions, io: Io): Promise<number> {
  const { loadMesh } = await import('@remora/config/envoy');
  const asSidecar: ProxyNode = { ...opts.node, kind: 'sidecar' };
  const asGateway: ProxyNode = {
    ...opts.node,
    kind: 'gateway',
    labels: Object.keys(opts.node.labels).length > 0 ? opts.node.labels : { istio: 'ingressgateway', app: 'istio-ingressgateway' },
  };
  const issues: ConfigIssue[] = [];
  const seen = new Set<string>();
  let resources = 0;
  // --filter modules: EnvoyFilters may insert their filters.
  const extensionFilters = new Set(opts.filterModules.length === 0 ? [] : await registerFilterModules(builtinFilters(), opts.filterModules));
  for (const node of [asSidecar, asGateway]) {
    const r = loadMesh(opts.configPaths, node, opts.ports, {
      dnsRefreshMs: opts.dnsRefreshMs,
      ...(extensionFilters.size > 0 ? { extensionFilters } : {}),
      ...(opts.meshConfigFile !== undefined ? { meshConfigFile: opts.meshConfigFile } : {}),
    });
    resources = Math.max(resources, r.resources.length);
    for (const i of r.issues) {
      const line = formatIssue(i);
      if (seen.has(line)) continue;
      seen.add(line);
      issues.push(i);
    }
  }
  issues.sort((a, b) => (a.file === b.file ? a.line - b.line : a.file < b.file ? -1 : 1));
  for (const i of issues) io.out(`${formatIssue(i)}\n`);
  const errors = issues.filter((i) => i.severity === 'error').length;
  const warnings = issues.length - errors;
  io.out(`${resources} resource${resources === 1 ? '' : 's'} valid; ${errors} error${errors === 1 ? '' : 's'}, ${warnings} warning${warnings === 1 ? '' : 's'}\n`);
  return hasErrors(issues) ? 1 : 0;
}

async function runProxy(opts: ProxyOptions, io: Io): Promise<number | null> {
  const proxy = await ProxyProcess.create(opts, io.exit);
  try {
    await proxy.start();
  } catch (err) {
    if (err instanceof StartError) {
      io.err(`remora ${opts.command}: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      io.err(`remora: ${sig} again, exiting now\n`);
      io.exit(0);
      return;
    }
    proxy.loggers.get('main').info(`${sig} received`);
    void proxy.stop(0);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('uncaughtException', (err) => {
    // A bug must not take every connection down with it; log loudly and keep serving.
    proxy.loggers.get('main').log('critical', `uncaught exception: ${err.stack ?? String(err)}`);
  });
  return null;
}

