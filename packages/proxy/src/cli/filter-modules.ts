/**
 * `--filter <module>`: HTTP filters from npm packages or files, loaded once at start. A
 * module's default export, or its `filters` export, is a filter factory (`defineFilter`'s
 * result) or a list of them; each is registered by name next to Envoy's filters, so a
 * listener's chain, the bootstrap and EnvoyFilter patches can name it.
 */
import { readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { FilterRegistry, HttpFilterFactory } from '@remora/filters';

/** A module that cannot be loaded or exports no filter; the message names the module. */
export class FilterModuleError extends Error {
  override readonly name = 'FilterModuleError';
}

/** Loads every module in order and registers its factories; throws FilterModuleError naming the module. Returns the names registered. */
export async function registerFilterModules(registry: FilterRegistry, specs: readonly string[], cwd = process.cwd()): Promise<string[]> {
  const names: string[] = [];
  for (const spec of specs) {
    for (const factory of await loadFilterModule(spec, cwd)) {
      if (registry.has(factory.name)) throw new FilterModuleError(`--filter ${spec}: a filter named ${factory.name} is already registered`);
      registry.register(factory);
      names.push(factory.name);
    }
  }
  return names;
}

/** The filter factories one module exports. */
export async function loadFilterModule(spec: string, cwd = process.cwd()): Promise<HttpFilterFactory[]> {
  let url: string;
  try {
    url = resolveModule(spec, cwd);
  } catch (err) {
    throw new FilterModuleError(`--filter ${spec}: cannot find the module from ${cwd}: ${(err as Error).message}`);
  }
  let mod: Record<string, unknown>;
  try {
    mod = (await import(url)) as Record<string, unknown>;
  } catch (err) {
    throw new FilterModuleError(`--filter ${spec}: loading ${url} failed: ${(err as Error).message}`);
  }
  const exported = mod.default ?? mod.filters;
  if (exported === undefined) throw new FilterModuleError(`--filter ${spec}: the module has neither a default export nor a \`filters\` export`);
  const list = Array.isArray(exported) ? (exported as unknown[]) : [exported];
  if (list.length === 0) throw new FilterModuleError(`--filter ${spec}: the module exports an empty list of filters`);
  return list.map((f, i) => {
    const factory = f as Partial<HttpFilterFactory> | null;
    if (factory === null || typeof factory !== 'object' || typeof factory.name !== 'string' || factory.name === '' || typeof factory.compile !== 'function') {
      throw new FilterModuleError(`--filter ${spec}: export ${Array.isArray(exported) ? `[${i}] ` : ''}is not a filter factory (a { name, compile } object, as defineFilter makes)`);
    }
    if (factory.terminal === true) throw new FilterModuleError(`--filter ${spec}: filter ${factory.name} is terminal; only the router ends a chain`);
    return factory as HttpFilterFactory;
  });
}

/** A path (`./x`, `/x`, `../x`, or one that exists) from `cwd`, else a package name resolved from `cwd`'s node_modules. */
function resolveModule(spec: string, cwd: string): string {
  const isPath = spec.startsWith('.') || spec.startsWith('/') || existsAt(resolve(cwd, spec));
  if (!isPath) return pathToFileURL(createRequire(join(cwd, 'noop.js')).resolve(spec)).href;
  const abs = resolve(cwd, spec);
  if (!statSync(abs).isDirectory()) return pathToFileURL(abs).href;
  // A package directory: its own entry point, as an import of its name would find it.
  const manifest = join(abs, 'package.json');
  const pkg = JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string; exports?: unknown };
  const req = createRequire(manifest);
  return pathToFileURL(typeof pkg.name === 'string' && pkg.exports !== undefined ? req.resolve(pkg.name) : req.resolve(abs)).href;
}

function existsAt(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}
