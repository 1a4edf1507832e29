/**
 * Envoy's codec and type registry, loaded on first use: loading the descriptors takes about
 * 0.3 s, which only code that reads an Envoy message pays (the loader thread for a mesh
 * with EnvoyFilters or filter configs to check); the proxy's main thread, which imports this
 * package too, never does.
 */
import { createRequire } from 'node:module';
import type { DescMessage } from '@bufbuild/protobuf';

export interface EnvoyCodec {
  readonly envoyFromJson: typeof import('./codec.ts').envoyFromJson;
  readonly envoyToJson: typeof import('./codec.ts').envoyToJson;
  readonly messageType: (typeName: string) => DescMessage | undefined;
}

let loaded: EnvoyCodec | null = null;

/** The codec, loading the descriptors the first time. */
export function envoyCodec(): EnvoyCodec {
  if (loaded !== null) return loaded;
  const require = createRequire(import.meta.url);
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
  const codec = require(`./codec${ext}`) as typeof import('./codec.ts');
  const registry = require(`./registry${ext}`) as typeof import('./registry.ts');
  loaded = { envoyFromJson: codec.envoyFromJson, envoyToJson: codec.envoyToJson, messageType: (t) => registry.envoyRegistry.getMessage(t) };
  return loaded;
}

