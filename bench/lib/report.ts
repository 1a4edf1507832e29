// What a results file says besides the numbers: the machine, the tools' versions, the command,
// and the plumbing to rewrite RESULTS.md section by section.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { cpus, release, type } from 'node:os';
import { createRequire } from 'node:module';
import { join, relative } from 'node:path';

export interface MachineInfo {
  readonly cpuModel: string;
  readonly cores: number;
  readonly kernel: string;
  readonly node: string;
  readonly nginx: string;
  readonly haproxy: string;
  readonly autocannon: string;
}

function firstLine(text: string): string {
  return text.trim().split('\n')[0]?.trim() ?? '';
}

/** Version line of a tool, or "not installed". */
function toolVersion(command: string, args: readonly string[]): string {
  const r = spawnSync(command, args, { encoding: 'utf8' });
  if (r.error) return 'not installed';
  return firstLine(`${r.stdout ?? ''}${r.stderr ?? ''}`);
}

export function machineInfo(): MachineInfo {
  let cpuModel = cpus()[0]?.model ?? 'unknown';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) cpuModel = (m[1] as string).trim();
  } catch {
    // Not Linux: os.cpus() it is.
  }
  const require = createRequire(import.meta.url);
  const autocannonPkg = require('autocannon/package.json') as { version: string };
  return {
    cpuModel,
    cores: cpus().length,
    kernel: `${type()} ${release()}`,
    node: process.version,
    nginx: toolVersion('nginx', ['-v']).replace(/^nginx version:\s*/, ''),
    haproxy: toolVersion('haproxy', ['-v']).replace(/^HAProxy version\s*/, '').replace(/ - https?:\S+$/, ''),
    autocannon: autocannonPkg.version,
  };
}

export function machineSection(m: MachineInfo): string {
  return [
    '| | |',
    '|---|---|',
    `| CPU | ${m.cpuModel} |`,
    `| cores | ${m.cores} |`,
    `| kernel | ${m.kernel} |`,
    `| Node.js | ${m.node} |`,
    `| nginx | ${m.nginx} |`,
    `| HAProxy | ${m.haproxy} |`,
    `| autocannon | ${m.autocannon} |`,
  ].join('\n');
}

/** Which Remora was measured: the commit, whether the packages had uncommitted changes, when packages/proxy/dist was last written. */
export function remoraBuild(repoRoot: string): string {
  const cli = join(repoRoot, 'packages/proxy/dist/cli.js');
  if (!existsSync(cli)) return 'not built';
  let commit = 'unknown commit';
  try {
    commit = execFileSync('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['-C', repoRoot, 'status', '--porcelain', '--', 'packages'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    if (dirty.trim() !== '') commit += ' with uncommitted changes in packages/';
  } catch {
    // Not a git checkout: the build time alone will do.
  }
  // tsc -b rewrites only the outputs that changed: the newest file is when the build last ran.
  let built = 0;
  for (const f of readdirSync(join(repoRoot, 'packages/proxy/dist'), { recursive: true, encoding: 'utf8' })) {
    if (f.endsWith('.js')) built = Math.max(built, statSync(join(repoRoot, 'packages/proxy/dist', f)).mtimeMs);
  }
  return `${commit}; packages/proxy/dist last built ${new Date(built).toISOString().replace(/\.\d+Z$/, 'Z')}`;
}

/** The command as the user typed it, near enough: `pnpm bench …` when run through pnpm. */
export function commandLine(script: string, repoRoot: string): string {
  const args = process.argv.slice(2).map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", "'\\''")}'`));
  const event = process.env.npm_lifecycle_event;
  const base = event === 'bench' || event === 'soak' ? `pnpm ${event}` : `node ${relative(repoRoot, script)}`;
  return [base, ...args].join(' ');
}

/** Markdown table; numbers right-aligned. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const numeric = header.map((_, i) => i > 0 && rows.every((r) => /^[\s\d.,×%+−/–-]*$|^n\/a$|^—$/.test(r[i] ?? '')));
  const line = (cells: readonly string[]): string =>
    `| ${cells.map((c, i) => (numeric[i] ? c.padStart(widths[i] as number) : c.padEnd(widths[i] as number))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (numeric[i] ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}

/** A number for a table: `digits` decimals, thousands separated, "—" when not a number. */
export function fmt(value: number, digits: number): string {
  if (!Number.isFinite(value)) return '—';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export const MiB = 1024 * 1024;

// RESULTS.md is rewritten by run.ts except for the soak section, which soak.ts owns.
const SOAK_BEGIN = '<!-- soak:begin -->';
const SOAK_END = '<!-- soak:end -->';

function soakBlock(text: string): string | null {
  const a = text.indexOf(SOAK_BEGIN);
  const b = text.indexOf(SOAK_END);
  return a >= 0 && b > a ? text.slice(a, b + SOAK_END.length) : null;
}

/** Writes RESULTS.md with `main` as everything but the soak section, which is kept as it was. */
export function writeResultsMain(file: string, main: string): void {
  const old = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const soak = soakBlock(old);
  writeFileSync(file, `${main.trimEnd()}\n${soak === null ? '' : `\n${soak}\n`}`);
}

/** Replaces (or appends) the soak section of RESULTS.md, keeping the rest. */
export function writeResultsSoak(file: string, soak: string): void {
  const old = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmark results\n';
  const block = `${SOAK_BEGIN}\n${soak.trim()}\n${SOAK_END}`;
  const current = soakBlock(old);
  const next = current === null ? `${old.trimEnd()}\n\n${block}\n` : old.replace(current, () => block);
  writeFileSync(file, next);
}

/** Pins this process and all its threads (the load generator) to `cpu`. */
export function pinSelf(cpu: number): void {
  execFileSync('taskset', ['-a', '-p', '-c', String(cpu), String(process.pid)], { stdio: 'ignore' });
}

/** Names of the required executables that are not on PATH. */
export function missingTools(tools: readonly string[]): string[] {
  return tools.filter((t) => spawnSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' }).status !== 0);
}
