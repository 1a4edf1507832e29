/**
 * A large gateway mesh for reload tests and measurements: `virtualServices` VirtualServices of
 * `routesEach` routes, spread over `files` files. Every route answers directly with a body that
 * names the generation, so a client can tell which config served it, or, given `destination`,
 * forwards to it. VirtualService `vs-<i>` serves host `vs-<i>.example`; its route `r` matches
 * prefix `/r<r>/` with header `x-variant: v<digits>`, or exactly `/r<r>` (two Envoy routes each).
 */

export interface LargeMeshOptions {
  readonly port: number;
  readonly virtualServices?: number;
  readonly routesEach?: number;
  readonly files?: number;
  /** Bind the VirtualServices to this Gateway (`namespace/name` or `name`) and write none of ours. */
  readonly gateway?: string;
  /** Forward every route here instead of answering directly. */
  readonly destination?: { readonly host: string; readonly port: number };
}

/** The file names and texts; `generation` is written into every direct response body. */
export function largeMesh(opts: LargeMeshOptions, generation: number): Record<string, string> {
  const vsCount = opts.virtualServices ?? 1_000;
  const routesEach = opts.routesEach ?? 10;
  const fileCount = opts.files ?? 10;
  const gateway = opts.gateway ?? 'gw';
  const action = (i: number, r: number): string =>
    opts.destination === undefined
      ? `directResponse: { status: 200, body: { string: "gen ${generation} vs ${i} route ${r}" } }`
      : `route: [{ destination: { host: ${opts.destination.host}, port: { number: ${opts.destination.port} } } }]`;
  const out: Record<string, string> = {};
  if (opts.gateway === undefined) {
    out['gateway.yaml'] = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: gw }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: ${opts.port}, name: http, protocol: HTTP }
    hosts: ["*"]
`;
  }
  const perFile = Math.ceil(vsCount / fileCount);
  for (let f = 0; f < fileCount; f++) {
    const docs: string[] = [];
    for (let i = f * perFile; i < Math.min(vsCount, (f + 1) * perFile); i++) {
      const routes: string[] = [];
      for (let r = 0; r < routesEach; r++) {
        routes.push(`  - match: [{ uri: { prefix: /r${r}/ }, headers: { x-variant: { regex: "v[0-9]+" } } }, { uri: { exact: /r${r} } }]
    ${action(i, r)}`);
      }
      docs.push(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: vs-${i} }
spec:
  hosts: ["vs-${i}.example"]
  gateways: [${gateway}]
  http:
${routes.join('\n')}
`);
    }
    out[`routes-${String(f).padStart(3, '0')}.yaml`] = docs.join('---\n');
  }
  return out;
}
