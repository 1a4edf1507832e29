/**
 * The SDS side of Istio's agent, for tests: a grpc-js server on a Unix socket serving
 * `envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets` as the agent's sdsservice.go
 * does — the first request of a stream (no nonce) is answered with every secret it names; an
 * ACK or a NACK (error_detail) is recorded and not answered; a changed set of names is
 * answered; `push(name)` sends that one secret to every stream that asked for it. Secrets go
 * as bare `Any`s of `envoy.extensions.transport_sockets.tls.v3.Secret`: `default` a
 * tlsCertificate with the chain and key inline, `ROOTCA` a validationContext with trustedCa.
 * `DeltaSecrets` answers UNIMPLEMENTED, as the agent's does.
 */
import { randomUUID } from 'node:crypto';
import { streamingMethod } from './grpc-method.ts';
import * as grpc from '@grpc/grpc-js';
import { create, type DescMessage } from '@bufbuild/protobuf';
import { envoyFromJson, envoyPack } from '@remora/config/envoy';
import { SecretSchema } from '@remora/config/envoy/gen/envoy/extensions/transport_sockets/tls/v3/secret_pb.js';
import type { SecretJson } from '@remora/config/envoy/gen/envoy/extensions/transport_sockets/tls/v3/secret_pb.js';
import {
  DeltaDiscoveryRequestSchema,
  DeltaDiscoveryResponseSchema,
  DiscoveryRequestSchema,
  DiscoveryResponseSchema,
  type DiscoveryRequest,
  type DiscoveryResponse,
} from '@remora/config/envoy/gen/envoy/service/discovery/v3/discovery_pb.js';

export const SECRET_TYPE = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';

const method = (name: string, input: DescMessage, output: DescMessage): grpc.MethodDefinition<unknown, unknown> => streamingMethod('envoy.service.secret.v3.SecretDiscoveryService', name, input, output);

const SDS_DEFINITION = {
  StreamSecrets: method('StreamSecrets', DiscoveryRequestSchema, DiscoveryResponseSchema),
  DeltaSecrets: method('DeltaSecrets', DeltaDiscoveryRequestSchema, DeltaDiscoveryResponseSchema),
} satisfies grpc.ServiceDefinition;

/** What the proxy answered to a response. */
export interface SdsVerdict {
  readonly nonce: string;
  readonly version: string;
  readonly ack: boolean;
  readonly error: string;
  readonly names: readonly string[];
}

interface Stream {
  readonly call: grpc.ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>;
  names: Set<string>;
  nonceSent: string;
}

/** `default` from a chain and key, as the agent builds it. */
export function certificateSecret(certChainPem: string, keyPem: string, name = 'default'): SecretJson {
  const b64 = (s: string): string => Buffer.from(s).toString('base64');
  return { name, tlsCertificate: { certificateChain: { inlineBytes: b64(certChainPem) }, privateKey: { inlineBytes: b64(keyPem) } } };
}

/** `ROOTCA` from a root bundle. */
export function rootsSecret(rootsPem: string, name = 'ROOTCA'): SecretJson {
  return { name, validationContext: { trustedCa: { inlineBytes: Buffer.from(rootsPem).toString('base64') } } };
}

export class SdsAgent {
  readonly requests: DiscoveryRequest[] = [];
  readonly verdicts: SdsVerdict[] = [];
  readonly #secrets = new Map<string, SecretJson>();
  readonly #streams = new Set<Stream>();
  readonly #address: string;
  #server: grpc.Server | null = null;
  #version = 0;
  /** Streams opened in all (reconnections count). */
  streamsOpened = 0;

  /** `address`: `unix:/path/to/socket`. */
  constructor(address: string) {
    this.#address = address;
  }

  /** Sets a secret; it is sent on the next request or `push`. */
  set(secret: SecretJson): void {
    this.#secrets.set(secret.name!, secret);
  }

  async start(): Promise<void> {
    const server = new grpc.Server();
    server.addService(SDS_DEFINITION, {
      StreamSecrets: (call: grpc.ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>) => this.#open(call),
      DeltaSecrets: (call: grpc.ServerDuplexStream<unknown, unknown>) => call.emit('error', { code: grpc.status.UNIMPLEMENTED, details: 'DeltaSecrets not implemented' }),
    });
    await new Promise<void>((resolve, reject) => server.bindAsync(this.#address, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
    this.#server = server;
  }

  /** Drops every stream at once, as an agent that died. */
  kill(): void {
    this.#server?.forceShutdown();
    this.#server = null;
    this.#streams.clear();
  }

  /** Sends secret `name` (as set now) to every stream that asked for it, as the agent does after a rotation. */
  push(name: string): number {
    let sent = 0;
    for (const s of this.#streams) {
      if (!s.names.has(name)) continue;
      this.#send(s, [name]);
      sent++;
    }
    return sent;
  }

  /** How many streams are open and have asked for something. */
  get watching(): number {
    return [...this.#streams].filter((s) => s.names.size > 0).length;
  }

  #open(call: grpc.ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>): void {
    this.streamsOpened++;
    const stream: Stream = { call, names: new Set(), nonceSent: '' };
    this.#streams.add(stream);
    call.on('data', (req: DiscoveryRequest) => this.#onRequest(stream, req));
    call.on('error', () => {});
    call.on('end', () => {
      this.#streams.delete(stream);
      call.end();
    });
    call.on('cancelled', () => this.#streams.delete(stream));
  }

  #onRequest(stream: Stream, req: DiscoveryRequest): void {
    this.requests.push(req);
    if (req.errorDetail !== undefined) {
      this.verdicts.push({ nonce: req.responseNonce, version: req.versionInfo, ack: false, error: req.errorDetail.message, names: req.resourceNames });
      return;
    }
    if (req.responseNonce === '') {
      stream.names = new Set(req.resourceNames);
      this.#send(stream, req.resourceNames);
      return;
    }
    if (req.responseNonce !== stream.nonceSent) return; // stale
    this.verdicts.push({ nonce: req.responseNonce, version: req.versionInfo, ack: true, error: '', names: req.resourceNames });
    const added = req.resourceNames.filter((n) => !stream.names.has(n));
    stream.names = new Set(req.resourceNames);
    if (added.length > 0) this.#send(stream, added);
  }

  #send(stream: Stream, names: readonly string[]): void {
    const resources = names.filter((n) => this.#secrets.has(n)).map((n) => envoyPack(SecretSchema, envoyFromJson(SecretSchema, this.#secrets.get(n)! as never)));
    const nonce = randomUUID();
    stream.nonceSent = nonce;
    stream.call.write(create(DiscoveryResponseSchema, { typeUrl: SECRET_TYPE, versionInfo: `${new Date().toISOString()}/${++this.#version}`, nonce, resources }));
  }
}
