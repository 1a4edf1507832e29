import type { Endpoint, ProxyConfig, ProxyNode } from '@remora/config';
import type { SharedCellsInit } from '@remora/filters/internal';
import type { StatEntry } from '../admin/admin-stats.ts';
import type { ThreadCounts } from '../admin/admin-views.ts';
import type { LiveWindowState } from '../admin/ui-window.ts';
import type { LogLevel } from '../logger.ts';
import type { AccessLogFormat } from '../telemetry/access-log.ts';
import type { CaptureMode } from '../cli/capture.ts';
import type { OverloadLimits } from './overload-manager.ts';

/** What a worker thread is started with (`workerData`). */
export interface WorkerInit {
  /** 0 … concurrency − 1: Envoy's `worker_<n>`. */
  readonly index: number;
  readonly node: ProxyNode;
  readonly nodeId?: string;
  readonly logLevel: LogLevel;
  /** `--access-log-format`; null: the listeners' own access logs. */
  readonly accessLogFormat: AccessLogFormat | null;
  /** The access log goes to the process's stdout (fd 1): the worker writes it there itself; false: it posts it to the main thread's sink. */
  readonly accessLogToStdout: boolean;
  readonly trustedHops: number;
  readonly overload: OverloadLimits;
  readonly timeouts: { readonly headersMs: number; readonly requestMs: number };
  readonly interceptionMode: CaptureMode;
  readonly conntrackFd: number | null;
  readonly cells: SharedCellsInit;
  /** `--filter` modules, loaded again in each worker (from `cwd`) so its chains can name them. */
  readonly filterModules: readonly string[];
  readonly cwd: string;
}

/** The workload identity as the main thread holds it (PEM), or none. */
export type IdentityParts = { readonly certChainPem: string; readonly keyPem: string; readonly rootsPem: string } | null;

export type ToWorker =
  | { readonly t: 'apply'; readonly id: number; readonly config: ProxyConfig }
  | { readonly t: 'identity'; readonly parts: IdentityParts }
  | { readonly t: 'ejected'; readonly cluster: string; readonly keys: readonly string[] }
  /** A DNS cluster's addresses as the main thread resolved them (for the cluster of that model). */
  | { readonly t: 'dns'; readonly cluster: string; readonly modelKey: string; readonly endpoints: readonly Endpoint[] }
  | { readonly t: 'stats'; readonly id: number }
  | { readonly t: 'prometheus'; readonly id: number }
  /** `/clusters`, `/explain`: the worker's per-host and circuit-breaker counters. */
  | { readonly t: 'counts'; readonly id: number }
  /** `/ui/data`: the worker's live window (the page is watching: keep access log lines). */
  | { readonly t: 'liveWindow'; readonly id: number }
  | { readonly t: 'stopAccepting' }
  | { readonly t: 'resetCounters' }
  | { readonly t: 'logLevel'; readonly component: string | null; readonly level: LogLevel }
  | { readonly t: 'drain'; readonly id: number; readonly ms: number }
  | { readonly t: 'close'; readonly id: number };

export type FromWorker =
  | { readonly t: 'reply'; readonly id: number; readonly error: string | null; readonly value?: string | readonly StatEntry[] | ThreadCounts | LiveWindowState }
  | { readonly t: 'log'; readonly line: string }
  | { readonly t: 'access'; readonly chunk: string }
  /** Upstream outcomes for outlier detection: cluster, host key, status (0: local failure), repeated. */
  | { readonly t: 'outcomes'; readonly items: readonly (string | number)[] };
