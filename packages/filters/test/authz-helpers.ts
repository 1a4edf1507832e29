// A small FilterRequest and FilterCallbacks for the authorization filter's unit tests, and a
// way to run a request through a compiled set of policies.
import type { AuthzPolicy } from '@remora/config';
import {
  authzFactory,
  FilterStatus,
  type FilterCallbacks,
  type FilterCompileContext,
  type FilterRequest,
  type FilterResponseFlag,
  type PeerIdentity,
  type RequestAuth,
} from '@remora/filters';

export interface ReqInit {
  method?: string;
  path?: string;
  authority?: string;
  scheme?: string;
  sourceIp?: string;
  remoteIp?: string;
  destinationIp?: string;
  destinationPort?: number;
  sni?: string;
  peer?: PeerIdentity | null;
  auth?: RequestAuth | null;
  headers?: Record<string, string>;
}

/** The request as the runtime would show it to filters; headers by lower-case name. */
export class TestRequest implements FilterRequest {
  readonly method: string;
  readonly path: string;
  readonly authority: string;
  readonly scheme: string;
  readonly sourceIp: string;
  readonly remoteIp: string;
  readonly destinationIp: string;
  readonly destinationPort: number;
  readonly sni: string;
  readonly peer: PeerIdentity | null;
  readonly isGrpc = false;
  readonly routeName = null;
  auth: RequestAuth | null;
  readonly headers: Map<string, string>;

  constructor(init: ReqInit = {}) {
    this.method = init.method ?? 'GET';
    this.path = init.path ?? '/';
    this.authority = init.authority ?? 'httpbin.foo';
    this.scheme = init.scheme ?? 'http';
    this.sourceIp = init.sourceIp ?? '10.0.0.1';
    this.remoteIp = init.remoteIp ?? this.sourceIp;
    this.destinationIp = init.destinationIp ?? '10.0.0.100';
    this.destinationPort = init.destinationPort ?? 8000;
    this.sni = init.sni ?? '';
    this.peer = init.peer ?? null;
    this.auth = init.auth ?? null;
    this.headers = new Map(Object.entries(init.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
  }

  requestHeader(name: string): string | null {
    return this.headers.get(name) ?? null;
  }
  setRequestHeader(name: string, value: string): void {
    this.headers.set(name.toLowerCase(), value);
  }
  removeRequestHeader(name: string): void {
    this.headers.delete(name.toLowerCase());
  }
  queryParam(): string | null {
    return null;
  }
  cookie(): string | null {
    return null;
  }
  routeFilterConfig(): unknown {
    return null;
  }
}

/** What the filter did to the request. */
export interface LocalReply {
  status: number;
  body: string | null;
  flag: FilterResponseFlag | null;
  details: string;
}

export class TestCallbacks implements FilterCallbacks {
  reply: LocalReply | null = null;
  aborted = false;
  sendLocalReply(status: number, body: string | null, flag: FilterResponseFlag | null, details: string): void {
    this.reply = { status, body, flag, details };
  }
  continueRequest(): void {}
  addResponseHeader(): void {}
  setResponseFlag(): void {}
}

/** A compile context that keeps the warnings. */
export function testContext(): FilterCompileContext & { warnings: string[] } {
  const warnings: string[] = [];
  const store = new Map<string, unknown>();
  return {
    warnings,
    persistent<T>(key: string, create: () => T): T {
      if (!store.has(key)) store.set(key, create());
      return store.get(key) as T;
    },
    warn: (m: string) => void warnings.push(m),
  };
}

/** An AuthorizationPolicy as the translator hands it over; `rules` undefined: the spec had none. */
export function policy(name: string, action: AuthzPolicy['action'], rules?: unknown[]): AuthzPolicy {
  return { name, action, rules: rules ?? [], hasRules: rules !== undefined, provider: null };
}

/** Compiles the policies (trust domain `cluster.local` unless given) into the filter's config. */
export function compile(policies: AuthzPolicy[], trustDomain = 'cluster.local') {
  const context = testContext();
  const config = authzFactory.compile({ policies, trustDomain }, context);
  return { config, warnings: context.warnings };
}

/** Runs one request: 'allow', or the details of the 403 (after checking the reply is Envoy's). */
export function decide(policies: AuthzPolicy[], init: ReqInit, trustDomain?: string): string {
  const { config } = compile(policies, trustDomain);
  return run(config.create(), init);
}

export function run(filter: ReturnType<ReturnType<typeof compile>['config']['create']>, init: ReqInit): string {
  const cb = new TestCallbacks();
  const status = filter.onRequest(new TestRequest(init), cb);
  if (status === FilterStatus.Continue) {
    if (cb.reply !== null) throw new Error('continued after a local reply');
    return 'allow';
  }
  const r = cb.reply;
  if (r === null) throw new Error('stopped without a local reply');
  if (r.status !== 403 || r.body !== 'RBAC: access denied' || r.flag !== null) throw new Error(`unexpected reply ${JSON.stringify(r)}`);
  return r.details;
}

/** Envoy's details for a denial by a DENY rule, or by an ALLOW filter nothing matched. */
export const denied = (ns: string, name: string, rule = 0) => `rbac_access_denied_matched_policy[ns[${ns}]-policy[${name}]-rule[${rule}]]`;
export const DENIED_NONE = 'rbac_access_denied_matched_policy[none]';

export const peer = (ns: string, sa: string, td = 'cluster.local'): PeerIdentity => ({ principal: `${td}/ns/${ns}/sa/${sa}`, namespace: ns });

export function jwt(iss: string, sub: string, claims: Record<string, unknown> = {}, audiences: string[] = [], presenter = ''): RequestAuth {
  return { principal: `${iss}/${sub}`, issuer: iss, subject: sub, audiences, presenter, claims: { iss, sub, ...claims } };
}
