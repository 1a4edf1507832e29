import type { Listener, TlsServer } from '../model/index.ts';
import type { OutboundTrafficMode } from '../schema/mesh-config.ts';
import type { Resource } from '../resources/resource.ts';
import type { TranslateContext } from './context.ts';
import { hostCovers } from './host.ts';
import { normalizeProtocol, portProtocol, type ServiceProtocol } from './registry.ts';
import { scopedResources } from './workload-scope.ts';

interface IstioSidecarSpec {
  workloadSelector?: { labels?: Record<string, string> };
  egress?: { hosts?: string[]; port?: { number?: number; protocol?: string; name?: string }; bind?: string; captureMode?: string }[];
  ingress?: IstioIngressListener[];
  outboundTrafficPolicy?: { mode?: string };
}

interface IstioIngressListener {
  port?: { number?: number; protocol?: string; name?: string; targetPort?: number };
  bind?: string;
  captureMode?: string;
  defaultEndpoint?: string;
  tls?: {
    mode?: string;
    serverCertificate?: string;
    privateKey?: string;
    caCertificates?: string;
    minProtocolVersion?: string;
    maxProtocolVersion?: string;
    cipherSuites?: string[];
  };
}

/**
 * One `ingress` listener of the Sidecar: a port the workload serves, where the sidecar sends
 * its traffic (`defaultEndpoint`), and the TLS the sidecar terminates on it. With any, these
 * and no others are the workload's inbound ports (as istiod builds them).
 */
export interface SidecarIngress {
  /** Index in `spec.ingress`, for messages. */
  readonly index: number;
  readonly port: number;
  /** The port's protocol as written (upper case; '' when absent). */
  readonly protocol: string;
  readonly name: string;
  /**
   * Where the sidecar forwards: `127.0.0.1:PORT` (loopback), `0.0.0.0:PORT` (the workload's
   * address), `unix://<path>` (a unix domain socket, `pipe`); absent: the workload's address at `port`.
   */
  readonly endpoint: { readonly address: string; readonly port: number; readonly pipe?: string };
  /** SIMPLE or MUTUAL termination with the given files; null: Istio mTLS per PeerAuthentication. */
  readonly tls: TlsServer | null;
  /** captureMode NONE: a listener bound to `bind:port` itself, not reached by capture. */
  readonly bound: { readonly address: string } | null;
}

interface EgressPortSpec {
  readonly index: number;
  readonly port: number;
  readonly protocol: ServiceProtocol;
  readonly hosts: readonly EgressHost[];
  readonly bound: { readonly address: string } | null;
}

/**
 * An `egress` listener with a port: on that port the outbound side sees its own hosts only
 * (HTTP: the port's route table; TCP, TLS, unknown: the listeners of those hosts' services,
 * as istiod builds them for the port); with `captureMode: NONE` or a `bind` address it is a
 * listener bound to `bind:port` (127.0.0.1 when NONE names no address) that the app talks to
 * directly. A `bind: unix://<path>` listener (port 0) is bound to that unix domain socket.
 */
export interface SidecarEgressListener {
  readonly index: number;
  /** The listener's port; 0 for a unix domain socket listener. */
  readonly port: number;
  /** The port's protocol as istiod reads it: declared, else by its name's prefix, else unknown (sniffed). */
  readonly protocol: ServiceProtocol;
  /** A scope of this listener's hosts alone. */
  readonly scope: SidecarScope;
  /** Bound to its own socket: an IP, or `unix://<path>`; null: reached through capture. */
  readonly bound: { readonly address: string } | null;
}

/** One `namespace/host` entry of a Sidecar's egress hosts. */
interface EgressHost {
  /** `*` any namespace, `~` none, else one namespace (`.` already resolved). */
  readonly namespace: string;
  /** `*`, `*.suffix` or an exact name (lower case). */
  readonly host: string;
}

/**
 * What Istio's `Sidecar` resource says to this sidecar: which services and VirtualServices its
 * outbound side may see (`egress[].hosts`), and what happens to requests for anything else
 * (`outboundTrafficPolicy`). The Sidecar that applies is Istio's pick: one in the workload's
 * namespace whose `workloadSelector` matches, else the one there without a selector, else the
 * root namespace's (the oldest of each, as Istio picks). No Sidecar: everything is visible.
 */
export class SidecarScope {
  readonly origin: string;
  readonly #hosts: readonly EgressHost[];
  /** The Sidecar's `outboundTrafficPolicy` is REGISTRY_ONLY (see `outboundTrafficMode`). */
  readonly registryOnly: boolean;
  /** The Sidecar sets `outboundTrafficPolicy` (else the MeshConfig's applies). */
  readonly setsOutboundPolicy: boolean;
  /** The Sidecar's `ingress` listeners; empty: the services selecting the workload decide its inbound ports. */
  readonly ingress: readonly SidecarIngress[];
  /** The Sidecar resource, for messages; null in scopes built by hand. */
  readonly resource: Resource | null;

  /** The Sidecar's per-port HTTP egress listeners. */
  readonly egressListeners: readonly SidecarEgressListener[];

  constructor(
    origin: string,
    hosts: readonly EgressHost[],
    registryOnly: boolean,
    setsOutboundPolicy = registryOnly,
    ingress: readonly SidecarIngress[] = [],
    resource: Resource | null = null,
    egressListeners: readonly SidecarEgressListener[] = [],
  ) {
    this.egressListeners = egressListeners;
    this.origin = origin;
    this.#hosts = hosts;
    this.registryOnly = registryOnly;
    this.setsOutboundPolicy = setsOutboundPolicy;
    this.ingress = ingress;
    this.resource = resource;
  }

  /** May the outbound side see `host` (a service's or a VirtualService's) from `namespace`? */
  allows(namespace: string, host: string): boolean {
    const h = host.toLowerCase();
    for (const e of this.#hosts) {
      if (e.namespace === '~') continue;
      if (e.namespace !== '*' && e.namespace !== namespace) continue;
      if (hostCovers(e.host, h)) return true;
    }
    return false;
  }
}

/** The Sidecar resource that applies to this proxy, as a scope; null when none does. */
export function sidecarScope(ctx: TranslateContext): SidecarScope | null {
  const { node } = ctx;
  const levels = scopedResources(ctx, 'Sidecar', (spec) => (spec as IstioSidecarSpec).workloadSelector?.labels);
  const r = levels.workload ?? levels.namespace ?? levels.root;
  if (r === null) return null;
  const spec = (r.spec ?? {}) as IstioSidecarSpec;
  const ingress = sidecarIngress(ctx, r, spec.ingress ?? []);
  // A Sidecar in the root namespace applies to every namespace: its `.` means the workload's.
  const own = r.metadata.namespace === node.rootNamespace ? node.namespace : r.metadata.namespace;
  const hosts: EgressHost[] = [];
  const egress = spec.egress ?? [];
  const egressPorts: EgressPortSpec[] = [];
  egress.forEach((e, i) => {
    const mine: EgressHost[] = [];
    for (const raw of e.hosts ?? []) {
      const slash = raw.indexOf('/');
      const ns = slash < 0 ? '*' : raw.slice(0, slash);
      mine.push({ namespace: ns === '.' ? own : ns, host: (slash < 0 ? raw : raw.slice(slash + 1)).toLowerCase() });
    }
    hosts.push(...mine);
    const port = e.port?.number ?? 0;
    if (e.port === undefined || e.port === null) {
      if (e.bind !== undefined || (e.captureMode !== undefined && e.captureMode !== 'DEFAULT')) {
        ctx.warn(r, ['spec', 'egress', i], 'bind and captureMode of the egress listener without a port are not applied; its hosts apply to the outbound listener');
      }
      return;
    }
    const bind = e.bind ?? '';
    const unix = bind.startsWith('unix://');
    if (port <= 0 && !unix) return;
    const capture = (e.captureMode ?? 'DEFAULT').toUpperCase();
    // istiod: captureMode NONE and a unix socket bind open a socket of their own; `bind` alone is the listener's address.
    const bound = capture === 'NONE' || unix || bind !== '' ? { address: bind !== '' ? bind : '127.0.0.1' } : null;
    egressPorts.push({ index: i, port: unix ? 0 : port, protocol: egressProtocol(e.port), hosts: mine, bound });
  });
  // No egress section: Istio's default, every host of every namespace.
  if (egress.length === 0) hosts.push({ namespace: '*', host: '*' });
  // A Sidecar that sets `outboundTrafficPolicy` decides it; its mode's zero value is REGISTRY_ONLY.
  const registryOnly = spec.outboundTrafficPolicy !== undefined && spec.outboundTrafficPolicy !== null && (spec.outboundTrafficPolicy.mode ?? 'REGISTRY_ONLY') === 'REGISTRY_ONLY';
  const origin = `${r.metadata.namespace}/${r.metadata.name}`;
  const egressListeners = egressPorts.map((e) => ({ ...e, scope: new SidecarScope(`${origin}#egress${e.index}`, e.hosts, registryOnly, spec.outboundTrafficPolicy != null) }));
  return new SidecarScope(origin, hosts, registryOnly, spec.outboundTrafficPolicy != null, ingress, r, egressListeners);
}

/** Istio's `unix://<path>` address (validation checked the path: absolute, or `@name`): the path; null for anything else. */
export function unixPath(address: string): string | null {
  return address.startsWith('unix://') ? address.slice('unix://'.length) : null;
}

/**
 * A bound Sidecar listener's name and address, as istiod names it (`<bind>_<port>`): on an
 * IP and port, or on the unix domain socket of a `unix://<path>` bind (port 0).
 */
export function boundListenerAddress(bind: string, port: number): Pick<Listener, 'name' | 'address' | 'port' | 'pipe'> {
  const path = unixPath(bind);
  return { name: `${bind}_${port}`, address: bind, port, ...(path !== null ? { pipe: { path, mode: 0 } } : {}) };
}

/**
 * The Sidecar's ingress listeners as istiod reads them (validation has checked the fields).
 * `defaultEndpoint` `127.0.0.1:PORT` forwards over loopback, `0.0.0.0:PORT` to the
 * workload's address (`--app-address`, what istiod's instance IP is to a pod),
 * `unix://<path>` to a unix domain socket.
 */
function sidecarIngress(ctx: TranslateContext, r: Resource, list: readonly IstioIngressListener[]): SidecarIngress[] {
  const { ports } = ctx;
  const out: SidecarIngress[] = [];
  list.forEach((l, index) => {
    const at = ['spec', 'ingress', index];
    const port = l.port?.number ?? 0;
    if (port <= 0) return;
    let endpoint: SidecarIngress['endpoint'] = { address: ports.appAddress, port };
    const raw = l.defaultEndpoint ?? '';
    const pipe = unixPath(raw);
    if (pipe !== null) {
      endpoint = { address: raw, port: 0, pipe };
    } else if (raw !== '') {
      const colon = raw.lastIndexOf(':');
      const host = raw.slice(0, colon).replace(/^\[|\]$/g, '');
      const target = Number(raw.slice(colon + 1));
      endpoint = { address: host === '0.0.0.0' || host === '::' ? ports.appAddress : host, port: target };
    }
    if (port === ports.outboundPort || port === ports.inboundPort) {
      ctx.warn(r, [...at, 'port', 'number'], `port ${port} is the proxy's own ${port === ports.outboundPort ? 'outbound' : 'inbound'} port; no inbound listener is built for it`);
      return;
    }
    const t = l.tls;
    let tls: TlsServer | null = null;
    if (t !== undefined && t !== null) {
      const mode = (t.mode ?? 'SIMPLE').toUpperCase();
      if (mode !== 'SIMPLE' && mode !== 'MUTUAL' && mode !== 'OPTIONAL_MUTUAL') {
        ctx.error(r, [...at, 'tls', 'mode'], `${mode} is not a mode a sidecar terminates; use SIMPLE or MUTUAL`);
        return;
      }
      if (!t.serverCertificate || !t.privateKey) {
        ctx.error(r, [...at, 'tls'], `${mode} needs serverCertificate and privateKey`);
        return;
      }
      if (mode !== 'SIMPLE' && !t.caCertificates) {
        ctx.error(r, [...at, 'tls', 'caCertificates'], `${mode} needs caCertificates to verify client certificates`);
        return;
      }
      tls = {
        hosts: ['*'],
        mode,
        certFile: t.serverCertificate,
        keyFile: t.privateKey,
        caFile: t.caCertificates ?? null,
        subjectAltNames: [],
        minVersion: tlsVersion(t.minProtocolVersion),
        maxVersion: tlsVersion(t.maxProtocolVersion),
        cipherSuites: t.cipherSuites ?? [],
        tcpRoutes: [],
        origin: `${r.metadata.namespace}/${r.metadata.name}#ingress${index}`,
      };
    }
    const protocol = (l.port?.protocol ?? '').toUpperCase();
    if (tls !== null && !['HTTPS', 'HTTP', 'HTTP2', 'GRPC', 'GRPC-WEB'].includes(protocol)) {
      ctx.warn(r, [...at, 'tls'], `terminating TLS in front of ${protocol || 'an unnamed protocol'} is not supported (only HTTP behind it); port ${port} gets no inbound listener`);
      return;
    }
    const bound = (l.captureMode ?? '').toUpperCase() === 'NONE' ? { address: l.bind || ports.bindAddress } : null;
    out.push({ index, port, protocol, name: l.port?.name ?? '', endpoint, tls, bound });
  });
  return out;
}

/** An egress port's protocol, istiod's protocol.Parse with the port name's prefix when none is declared. */
function egressProtocol(p: { protocol?: string; name?: string }): ServiceProtocol {
  return portProtocol({ number: 0, name: p.name ?? '', protocol: normalizeProtocol(p.protocol), targetPort: null });
}

/** TLS version names as Istio writes them → Node's. */
function tlsVersion(v: string | undefined): 'TLSv1.2' | 'TLSv1.3' | null {
  if (v === 'TLSV1_2') return 'TLSv1.2';
  if (v === 'TLSV1_3') return 'TLSv1.3';
  return null;
}

/**
 * The outbound traffic policy of this sidecar, as istiod's SidecarScope sets it: the applying
 * Sidecar resource's `outboundTrafficPolicy` when it has one, else the MeshConfig's, else
 * Istio's default ALLOW_ANY. ALLOW_ANY: traffic for a destination the registry does not know
 * goes where the app sent it (PassthroughCluster); REGISTRY_ONLY: it is refused
 * (BlackHoleCluster, HTTP's block_all 502).
 */
export function outboundTrafficMode(scope: SidecarScope | null, mesh: OutboundTrafficMode | undefined): OutboundTrafficMode {
  if (scope?.setsOutboundPolicy) return scope.registryOnly ? 'REGISTRY_ONLY' : 'ALLOW_ANY';
  return mesh ?? 'ALLOW_ANY';
}
