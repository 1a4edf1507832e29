import type { ConfigIssue } from '../errors.ts';
import type { ListenerPorts, ProxyNode } from '../model/node.ts';
import type { ProxyConfig } from '../model/proxy-config.ts';
import type { VirtualHost } from '../model/route.ts';
import type { MeshLoadOptions } from './mesh-loader.ts';
import type { LoadTimings } from './load-timings.ts';
import type { ProxySettings } from '../translate/proxy-settings.ts';

/** Messages between `MeshLoaderThread` and its worker. */
export type ToLoader =
  | { readonly type: 'load'; readonly id: number; readonly paths: readonly string[]; readonly node: ProxyNode; readonly ports: ListenerPorts; readonly options: MeshLoadOptions }
  /** Asks for the next piece of the result; the caller asks only when it is ready for more. */
  | { readonly type: 'next'; readonly id: number };

export type FromLoader =
  /** The config without its virtual hosts (null on errors), the issues, and how many pieces follow. */
  | { readonly type: 'head'; readonly id: number; readonly config: ProxyConfig | null; readonly issues: readonly ConfigIssue[]; readonly files: readonly string[]; readonly timings: LoadTimings; readonly proxySettings: ProxySettings | null; readonly pieces: number }
  /** Virtual hosts to append to `routeConfigs[routeConfig]`. */
  | { readonly type: 'piece'; readonly id: number; readonly routeConfig: number; readonly virtualHosts: readonly VirtualHost[] }
  | { readonly type: 'failed'; readonly id: number; readonly message: string };
