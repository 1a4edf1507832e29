/**
 * How the ADS client reaches its server: a gRPC target (`unix:/etc/istio/proxy/XDS`,
 * `istiod.istio-system.svc:15012`) and the channel's security, plaintext or TLS with a CA
 * and an optional client certificate. Certificates are read from their files on every
 * connection attempt, so a rotated file is picked up by the next reconnect.
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';

/** PEM from a file (read at each connection attempt) or given inline. */
export type PemSource = { readonly filename: string } | { readonly pem: string | Uint8Array };

export type AdsTransport =
  | { readonly kind: 'plaintext' }
  | {
      readonly kind: 'tls';
      /** Roots the server's certificate must chain to; the system's when absent. */
      readonly ca?: PemSource;
      /** Client certificate chain and key, for mutual TLS. */
      readonly cert?: PemSource;
      readonly key?: PemSource;
      /** Name to verify the server's certificate against (and send as SNI), when not the target's host. */
      readonly serverName?: string;
    };

export const PLAINTEXT: AdsTransport = { kind: 'plaintext' };

/** The gRPC target for a Unix socket path (`unix:` + path, relative paths kept relative) or a host and port. */
export function grpcTarget(address: { readonly pipe: string } | { readonly host: string; readonly port: number }): string {
  if ('pipe' in address) return `unix:${address.pipe}`;
  return address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

/** A grpc-js client for one connection attempt. Throws when a certificate file cannot be read. */
export function makeGrpcClient(target: string, transport: AdsTransport, channelOptions: grpc.ChannelOptions): grpc.Client {
  if (transport.kind === 'plaintext') return new grpc.Client(target, grpc.credentials.createInsecure(), channelOptions);
  const credentials = grpc.credentials.createSsl(
    pem(transport.ca, 'ca'),
    pem(transport.key, 'key'),
    pem(transport.cert, 'cert'),
  );
  const options: grpc.ChannelOptions =
    transport.serverName === undefined
      ? channelOptions
      : { ...channelOptions, 'grpc.ssl_target_name_override': transport.serverName, 'grpc.default_authority': transport.serverName };
  return new grpc.Client(target, credentials, options);
}

function pem(source: PemSource | undefined, what: string): Buffer | null {
  if (source === undefined) return null;
  if ('filename' in source) {
    try {
      return readFileSync(source.filename);
    } catch (e) {
      throw new Error(`ADS TLS ${what}: cannot read ${source.filename}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
  }
  return Buffer.from(source.pem);
}
