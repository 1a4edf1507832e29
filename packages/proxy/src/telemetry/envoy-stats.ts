import { Stat, type FilterStats } from '@remora/filters';

/**
 * Envoy's filter statistics by their Envoy names. Filters resolve their stats here when a
 * snapshot is compiled; the same name gives the same object in every later snapshot, so
 * counters carry on across config swaps as Envoy's do. `/stats` prints them by name;
 * `/stats/prometheus` prints them as Envoy does under Istio's bootstrap, whose tag extractor
 * takes the connection manager's stat_prefix out of `http.<stat_prefix>.<name>` into the
 * `http_conn_manager_prefix` label: `envoy_http_rbac_allowed{http_conn_manager_prefix="inbound_0.0.0.0_9080"}`.
 */

/** A stat with its names, fixed when it is created. */
export class NamedStat extends Stat {
  /** Envoy's stat name, as `/stats` prints it. */
  readonly name: string;
  readonly gauge: boolean;
  /** The Prometheus metric name, the connection manager prefix taken out. */
  readonly metricName: string;
  /** The `http_conn_manager_prefix` label's value; null for stats outside a connection manager. */
  readonly connectionManager: string | null;

  constructor(name: string, gauge: boolean, metricName: string, connectionManager: string | null) {
    super();
    this.name = name;
    this.gauge = gauge;
    this.metricName = metricName;
    this.connectionManager = connectionManager;
  }
}

/** Envoy's Prometheus name: `envoy_` and the stat name with every character outside [a-zA-Z0-9_] made `_`. */
export function prometheusName(statName: string): string {
  return `envoy_${statName.replace(/[^a-zA-Z0-9_]/g, '_')}`;
}

/** Stats without tags in Prometheus text, one `# TYPE` each: `envoy_server_live{} 1`. */
export function untaggedPrometheus(stats: Iterable<readonly [name: string, value: number, kind: 'counter' | 'gauge']>): string {
  let out = '';
  for (const [name, value, kind] of stats) {
    const metric = prometheusName(name);
    out += `# TYPE ${metric} ${kind}\n${metric}{} ${value}\n`;
  }
  return out;
}

function labelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

export class EnvoyStats {
  readonly #stats = new Map<string, NamedStat>();

  /** The stats a chain's filters see: `http()` names under `http.<statPrefix>.`; null for route configs, which have no connection manager. */
  scope(statPrefix: string | null): FilterStats {
    return {
      http: (name, gauge = false) => {
        if (statPrefix === null) throw new Error(`stat http.<stat_prefix>.${name}: a route's filter config has no connection manager of its own`);
        return this.#get(`http.${statPrefix}.${name}`, gauge, prometheusName(`http.${name}`), statPrefix);
      },
      root: (name, gauge = false) => this.#get(name, gauge, prometheusName(name), null),
    };
  }

  #get(name: string, gauge: boolean, metricName: string, connectionManager: string | null): NamedStat {
    let s = this.#stats.get(name);
    if (s === undefined) this.#stats.set(name, (s = new NamedStat(name, gauge, metricName, connectionManager)));
    return s;
  }

  values(): IterableIterator<NamedStat> {
    return this.#stats.values();
  }

  /** The Prometheus text of every stat, one `# TYPE` per metric name, sorted. */
  prometheus(): string {
    const byMetric = new Map<string, NamedStat[]>();
    for (const s of this.#stats.values()) {
      const list = byMetric.get(s.metricName);
      if (list === undefined) byMetric.set(s.metricName, [s]);
      else list.push(s);
    }
    let out = '';
    for (const metric of [...byMetric.keys()].sort()) {
      const list = byMetric.get(metric)!;
      out += `# TYPE ${metric} ${list[0]!.gauge ? 'gauge' : 'counter'}\n`;
      for (const s of list) {
        const labels = s.connectionManager === null ? '' : `http_conn_manager_prefix="${labelValue(s.connectionManager)}"`;
        out += `${metric}{${labels}} ${s.value}\n`;
      }
    }
    return out;
  }
}
