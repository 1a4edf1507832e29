/**
 * `envoy.filters.http.ext_authz`: compiles Envoy's ExtAuthz config once per snapshot, with the
 * snapshot's clusters to reach the authorization service through and Envoy's counters.
 */
import type { ExtAuthzJson } from '@remora/config/envoy/gen/envoy/extensions/filters/http/ext_authz/v3/ext_authz_pb.js';
import { DETACHED_STATS } from '../filter-stats.ts';
import { FilterName, type FilterCompileContext, type HttpFilterFactory } from '../filter.ts';
import { ExtAuthzSettings } from './ext-authz-config.ts';
import { ExtAuthzFilterConfig } from './ext-authz-filter.ts';

export class ExtAuthzFilterFactory implements HttpFilterFactory {
  readonly name = FilterName.ExtAuthz;

  compile(config: unknown, context: FilterCompileContext): ExtAuthzFilterConfig {
    if (config === null || typeof config !== 'object' || Array.isArray(config)) throw new Error('config must be an ExtAuthz message (JSON object)');
    const c = config as ExtAuthzJson;
    const settings = new ExtAuthzSettings(c);
    // Envoy's `stat_prefix` goes between `ext_authz.` and the counter.
    const prefix = `ext_authz.${c.statPrefix === undefined || c.statPrefix === '' ? '' : `${c.statPrefix}.`}`;
    const stats = context.stats ?? DETACHED_STATS;
    return new ExtAuthzFilterConfig(this.name, settings, context.upstream ?? null, {
      ok: stats.http(`${prefix}ok`),
      denied: stats.http(`${prefix}denied`),
      error: stats.http(`${prefix}error`),
      failureModeAllowed: stats.http(`${prefix}failure_mode_allowed`),
      disabled: stats.http(`${prefix}disabled`),
    });
  }
}

/** The factory the runtime registers, under Envoy's name `envoy.filters.http.ext_authz`. */
export const extAuthzFactory = new ExtAuthzFilterFactory();
