// What the JWT filter's unit tests share: keys and tokens made with jose, a JWKS server on
// 127.0.0.1, and a way to run a request to its end (the filter may finish later).
import type { KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { JwtAuthenticationJson, JwtProviderJson, JwtRequirementJson } from '@remora/config/envoy/gen/envoy/extensions/filters/http/jwt_authn/v3/config_pb.js';
import { FilterStatus, type HttpFilterConfig } from '@remora/filters';
import { type Clock, JwtAuthnFilterFactory, jwtAuthnFactory, type JwtAuthnFilterConfig } from '@remora/filters/internal';
import { exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT } from 'jose';
import { FakeRequest, RecordingCallbacks, storeContext, type ReqInit } from '@remora/filters/testing';

/** A RequestAuthentication jwtRule, as a test writes it. */
export interface RuleInit {
  issuer: string;
  audiences?: string[];
  jwks?: string | null;
  jwksUri?: string | null;
  fromHeaders?: { name: string; prefix: string }[];
  fromParams?: string[];
  fromCookies?: string[];
  outputPayloadToHeader?: string | null;
  outputClaimToHeaders?: { header: string; claim: string }[];
  forwardOriginalToken?: boolean;
  timeoutMs?: number;
}

export function rule(init: RuleInit): RuleInit {
  return init;
}

/** A jwtRule as the Envoy provider istiod makes of it (policy_applier.go). */
export function provider(r: RuleInit, clearRouteCache = false): JwtProviderJson {
  const p: JwtProviderJson = { issuer: r.issuer, payloadInMetadata: 'payload', normalizePayloadInMetadata: { spaceDelimitedClaims: ['permission', 'scope'] } };
  if (r.audiences?.length) p.audiences = r.audiences;
  if (r.jwks != null) p.localJwks = { inlineString: r.jwks };
  else if (r.jwksUri != null) p.remoteJwks = { httpUri: { uri: r.jwksUri, cluster: 'jwks', timeout: `${(r.timeoutMs ?? 5_000) / 1000}s` }, cacheDuration: '300s' };
  if (r.forwardOriginalToken) p.forward = true;
  if (r.fromHeaders?.length) p.fromHeaders = r.fromHeaders.map((h) => ({ name: h.name, valuePrefix: h.prefix }));
  if (r.fromParams?.length) p.fromParams = r.fromParams;
  if (r.fromCookies?.length) p.fromCookies = r.fromCookies;
  if (r.outputPayloadToHeader) p.forwardPayloadHeader = r.outputPayloadToHeader;
  if (r.outputClaimToHeaders?.length) p.claimToHeaders = r.outputClaimToHeaders.map((o) => ({ headerName: o.header, claimName: o.claim }));
  if (clearRouteCache) p.clearRouteCache = true;
  return p;
}

/** The JwtAuthentication istiod builds from these rules (in this order): providers `origins-<i>`, any of them or no token. */
export function istiodConfig(rules: RuleInit[], opts: { clearRouteCache?: boolean } = {}): JwtAuthenticationJson {
  const providers: Record<string, JwtProviderJson> = {};
  const inner: JwtRequirementJson[] = [];
  const outer: JwtRequirementJson[] = [];
  rules.forEach((r, i) => {
    providers[`origins-${i}`] = provider(r, opts.clearRouteCache);
    inner.push({ requiresAny: { requirements: [{ providerName: `origins-${i}` }, { allowMissing: {} }] } });
    outer.push({ providerName: `origins-${i}` });
  });
  const requires = inner.length === 1 ? inner[0]! : { requiresAny: { requirements: [...outer, { requiresAll: { requirements: inner } }] } };
  return { providers, rules: [{ match: { prefix: '/' }, requires }], bypassCorsPreflight: true };
}

/** `opts.clock`: the JWKS caches' clock (a test's own moves only when the test says). */
export function compile(rules: RuleInit[], ctx = storeContext(), opts: { clearRouteCache?: boolean; clock?: Clock } = {}): JwtAuthnFilterConfig {
  const factory = opts.clock === undefined ? jwtAuthnFactory : new JwtAuthnFilterFactory({ clock: opts.clock });
  return factory.compile(istiodConfig(rules, opts), ctx);
}

/**
 * A clock the test moves (`clock.advance(ms)`), for JWKS expiry and refresh intervals. It
 * starts well above 0: lru-cache takes a start time of 0 as "no TTL".
 */
export function manualClock(): Clock & { advance(ms: number): void } {
  let now = 1_000_000;
  return Object.assign(() => now, { advance: (ms: number) => void (now += ms) });
}

/** Polls `check` every 5 ms until it holds (for work the test cannot await, e.g. a background fetch); throws after `timeoutMs`. */
export async function until(what: string, check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** How a request ended: 'continue' (and the request as the upstream would get it), or the local reply. */
export interface Result {
  sync: boolean;
  outcome: 'continue' | number;
  body: string | null;
  details: string | null;
  req: FakeRequest;
  cb: RecordingCallbacks;
}

export async function run(config: HttpFilterConfig, init: ReqInit): Promise<Result> {
  const req = new FakeRequest(init);
  const cb = new RecordingCallbacks();
  const filter = config.create();
  const status = filter.onRequest(req, cb);
  const sync = status === FilterStatus.Continue || cb.reply !== null;
  if (status === FilterStatus.StopIteration && cb.reply === null) await cb.settled;
  filter.onDestroy?.();
  return {
    sync,
    outcome: cb.reply === null ? 'continue' : cb.reply.status,
    body: cb.reply?.body ?? null,
    details: cb.reply?.details ?? null,
    req,
    cb,
  };
}

/** What jose signs with. */
export type SigningKey = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'] | KeyObject;

/** A signing key and its public JWK. */
export interface TestKey {
  readonly alg: string;
  readonly kid: string;
  readonly privateKey: SigningKey;
  readonly jwk: JWK;
}

export async function makeKey(alg: string, kid: string, opts: { withAlg?: boolean } = {}): Promise<TestKey> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true, ...(alg === 'EdDSA' ? { crv: 'Ed25519' } : {}) });
  const jwk = await exportJWK(publicKey);
  jwk.kid = kid;
  if (opts.withAlg !== false) jwk.alg = alg;
  return { alg, kid, privateKey, jwk };
}

export function jwksOf(...keys: TestKey[]): string {
  return JSON.stringify({ keys: keys.map((k) => k.jwk) });
}

const now = () => Math.floor(Date.now() / 1000);

/** A signed token; `claims` overrides the defaults (iss, sub, exp an hour ahead). */
export async function sign(key: TestKey, claims: JWTPayload = {}, header: Record<string, unknown> = {}): Promise<string> {
  const payload: JWTPayload = { iss: 'https://issuer.example', sub: 'alice', exp: now() + 3600, ...claims };
  for (const k of Object.keys(payload)) if (payload[k] === undefined) delete payload[k];
  return new SignJWT(payload).setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT', ...header }).sign(key.privateKey);
}

/** A JWKS server on 127.0.0.1 whose document and status the test changes. */
export class JwksServer {
  body = '{"keys":[]}';
  status = 200;
  /** Delay before answering. */
  delayMs = 0;
  requests = 0;
  readonly #server: Server;
  port = 0;

  constructor() {
    this.#server = createServer((req, res) => {
      this.requests++;
      setTimeout(() => {
        res.writeHead(this.status, { 'content-type': 'application/json' });
        res.end(this.body);
      }, this.delayMs);
    });
  }
  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(this.port, '127.0.0.1', resolve));
    this.port = (this.#server.address() as AddressInfo).port;
    return this;
  }
  get uri(): string {
    return `http://127.0.0.1:${this.port}/jwks.json`;
  }
  /** Stops listening (the port stays known, so `start` can bring it back). */
  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
