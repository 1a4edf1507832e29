import type { FilterResponse } from '@remora/filters';
import { removeHeader } from './request-headers.ts';

/**
 * The response head as filters' `onResponse` sees it: a view over the flat header list the
 * proxy is about to write (edits go straight into it) and the status. Made only for chains
 * that have a response phase.
 */
export class ResponseView implements FilterResponse {
  status: number;
  readonly local: boolean;
  readonly #headers: string[];

  constructor(status: number, headers: string[], local: boolean) {
    this.status = status;
    this.#headers = headers;
    this.local = local;
  }

  setStatus(status: number): void {
    if (!Number.isInteger(status) || status < 100 || status > 999) throw new RangeError(`invalid response status ${status}`);
    this.status = status;
  }

  header(name: string): string | null {
    const h = this.#headers;
    let out: string | null = null;
    for (let i = 0; i < h.length; i += 2) {
      if (h[i]!.toLowerCase() === name) out = out === null ? h[i + 1]! : `${out},${h[i + 1]!}`;
    }
    return out;
  }

  headerList(): readonly string[] {
    return this.#headers;
  }

  setHeader(name: string, value: string): void {
    const lower = name.toLowerCase();
    this.removeHeader(lower);
    this.#headers.push(lower, value);
  }

  addHeader(name: string, value: string): void {
    this.#headers.push(name.toLowerCase(), value);
  }

  removeHeader(name: string): void {
    removeHeader(this.#headers, name.toLowerCase());
  }
}
