// What the JWT filter's unit tests share: keys and tokens made with jose, a JWKS server on
// 127.0.0.1, and a way to run a request to its end (the filter may finish later).
import type { KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { JwtRule } from '@remora/config';
import { FilterStatus, jwtAuthnFactory, type HttpFilterConfig, type JwtAuthnFilterConfig } from '@remora/filters';
import { exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT } from 'jose';
import { FakeRequest, RecordingCallbacks, storeContext, type ReqInit } from './filter-fakes.ts';

/** A jwtRule as the translator hands it over, with Istio's defaults. */
export function rule(init: Partial<JwtRule> & { issuer: string }): JwtRule {
  const anyLocation = (init.fromHeaders?.length ?? 0) + (init.fromParams?.length ?? 0) + (init.fromCookies?.length ?? 0) > 0;
  return {
    origin: 'foo/jwt',
    audiences: [],
    jwks: null,
    jwksUri: null,
    outputPayloadToHeader: null,
    outputClaimToHeaders: [],
    forwardOriginalToken: false,
    timeoutMs: 5_000,
    ...init,
    fromHeaders: anyLocation ? (init.fromHeaders ?? []) : [{ name: 'authorization', prefix: 'Bearer ' }],
    fromParams: anyLocation ? (init.fromParams ?? []) : ['access_token'],
    fromCookies: init.fromCookies ?? [],
  };
}

export function compile(rules: JwtRule[], ctx = storeContext()): JwtAuthnFilterConfig {
  return jwtAuthnFactory.compile({ rules }, ctx);
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
