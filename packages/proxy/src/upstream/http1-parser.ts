/**
 * Node's own HTTP/1 parser (the llhttp binding node:http's client uses), reached
 * through `_http_common`. It parses in native code and hands header names and values over
 * as strings, which is what makes the HTTP/1.1 pool cheaper than undici's wasm parser.
 */
import { createRequire } from 'node:module';

export interface HTTPParser {
  initialize(type: number, resource: object, maxHeaderSize?: number, lenient?: number): void;
  /** Bytes parsed, or the parse error (`code` HPE_*, `reason`). */
  execute(data: Buffer): number | (Error & { code?: string; reason?: string });
  /** Ends a read-until-close body; the parse error if the message was incomplete. */
  finish(): undefined | (Error & { code?: string; reason?: string });
  close(): void;
  free(): void;
  /** Stops (or resumes) parsing between `execute` calls; not from within a callback. */
  pause(): void;
  resume(): void;
  remove(): void;
  [callback: number]: unknown;
}

interface HTTPParserClass {
  new (): HTTPParser;
  readonly REQUEST: number;
  readonly RESPONSE: number;
  readonly kOnMessageBegin: number;
  readonly kOnHeaders: number;
  readonly kOnHeadersComplete: number;
  readonly kOnBody: number;
  readonly kOnMessageComplete: number;
  readonly kOnExecute: number;
}

const common = createRequire(import.meta.url)('node:_http_common') as { HTTPParser: HTTPParserClass; methods: readonly string[] };

export const HTTPParser = common.HTTPParser;

/** llhttp's method names by the number a request parser reports. */
export const HTTP_METHODS: readonly string[] = common.methods;

/** `onHeadersComplete` of a response: (major, minor, headers | undefined, method, url, status, statusMessage, upgrade, shouldKeepAlive). */
export type OnHeadersComplete = (
  versionMajor: number,
  versionMinor: number,
  headers: string[] | undefined,
  method: undefined,
  url: undefined,
  statusCode: number,
  statusMessage: string,
  upgrade: boolean,
  shouldKeepAlive: boolean,
) => number;
