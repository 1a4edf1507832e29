// One HTTP try (HttpUpstreamRequest) through a real host pool against a real server on
// 127.0.0.1, reporting to a recording owner: the owner hears each outcome once and only while
// the try is its current one, failures come classified (Envoy's connect failure, per-try
// timeout), and what the try holds — the host's active gauge, the breaker slot — is given back
// exactly once however it ends. (A retry's place in the budget is the retry state's, given back
// at the try's outcome: try-outcome.test.ts.)
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import type { Dispatcher } from 'undici';
import { ADMITTED, CircuitBreaker } from '../src/upstream/circuit-breaker.ts';
import { AttemptFailure } from '../src/upstream/connect-errors.ts';
import { HttpUpstreamRequest, type HttpUpstreamOwner } from '../src/upstream/http-upstream-request.ts';
import type { ClusterHost } from '../src/upstream/upstream-host.ts';
import type { UpstreamHeaders, UpstreamRequest } from '../src/upstream/upstream-request.ts';
import { POOL as NO_LIMITS, TestHosts } from './helpers/upstream-fixtures.ts';

/** Four connections at most. */
const POOL = { ...NO_LIMITS, maxConnections: 4 };

const made = new TestHosts();
const clusterHost = (port: number): ClusterHost => made.host('127.0.0.1', port);

/** The router's side, recording what it hears; `current` is its current try. */
class Owner implements HttpUpstreamOwner {
  current: UpstreamRequest | null = null;
  readonly events: string[] = [];
  body = '';
  failure: { failure: AttemptFailure; reason: string } | null = null;
  #done: () => void = () => {};
  readonly done = new Promise<void>((resolve) => (this.#done = resolve));

  isCurrent(r: UpstreamRequest): boolean {
    return this.current === r;
  }
  onUpstreamBodySent(_chunk: Buffer): void {}
  onUpstreamRequestSent(_r: UpstreamRequest): void {
    this.events.push('sent');
  }
  onUpstreamResponseHead(_r: UpstreamRequest, status: number, head: UpstreamHeaders): boolean {
    this.events.push(`head ${status} ${String(head['x-test'])}`);
    return true;
  }
  onUpstreamData(_r: UpstreamRequest, chunk: Buffer): boolean {
    this.body += chunk.toString();
    return true;
  }
  onUpstreamEnd(_r: UpstreamRequest, trailers: UpstreamHeaders): void {
    this.events.push(`end ${Object.keys(trailers).length}`);
    this.#done();
  }
  onUpstreamFailed(_r: UpstreamRequest, failure: AttemptFailure, reason: string): void {
    this.events.push('failed');
    this.failure = { failure, reason };
    this.#done();
  }
}

let server: Server;
let port = 0;
t.before(async () => {
  server = createServer((req, res) => {
    if (req.url === '/slow') return; // never answers
    res.setHeader('x-test', 'yes');
    res.end('hello');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
t.teardown(async () => {
  await made.destroyAll();
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

function dispatch(h: ClusterHost, path: string, r: HttpUpstreamRequest): void {
  h.host.active++;
  h.host.pool.dispatch({ path, method: 'GET', headers: ['host', 'test'], body: null, blocking: false } as Dispatcher.DispatchOptions, r);
}

/** A breaker with a slot taken for the try. */
function holdings(t: Test): { breaker: CircuitBreaker } {
  const breaker = new CircuitBreaker(POOL, 'http1');
  t.equal(breaker.admit({ aborted: false, onAdmitted: () => {} }), ADMITTED);
  return { breaker };
}

t.test('a response: head, body, end, each once; the gauge and breaker slot given back once', async (t) => {
  const h = clusterHost(port);
  const owner = new Owner();
  const { breaker } = holdings(t);
  const r = new HttpUpstreamRequest(owner, h, 0, breaker);
  owner.current = r;
  dispatch(h, '/', r);
  t.equal(h.host.active, 1);
  await owner.done;
  t.same(owner.events, ['sent', 'head 200 yes', 'end 0']);
  t.equal(owner.body, 'hello');
  t.equal(h.host.active, 0);
  t.equal(breaker.active, 0);
  r.cancel();
  r.release();
  t.equal(h.host.active, 0, 'a later cancel gives nothing back twice');
  t.equal(breaker.active, 0);
});

t.test('a refused connection is a connect failure with its errno reason', async (t) => {
  // A port that was listening a moment ago and is closed now.
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const deadPort = (closed.address() as AddressInfo).port;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  const h = clusterHost(deadPort);
  const owner = new Owner();
  const { breaker } = holdings(t);
  const r = new HttpUpstreamRequest(owner, h, 0, breaker);
  owner.current = r;
  dispatch(h, '/', r);
  await owner.done;
  t.same(owner.failure, { failure: AttemptFailure.ConnectFailure, reason: 'ECONNREFUSED' });
  t.same(owner.events, ['failed']);
  t.equal(h.host.active, 0);
  t.equal(breaker.active, 0);
});

t.test('the per-try timeout fails the try as a per-try timeout', async (t) => {
  const h = clusterHost(port);
  const owner = new Owner();
  const { breaker } = holdings(t);
  const r = new HttpUpstreamRequest(owner, h, 100, breaker);
  owner.current = r;
  dispatch(h, '/slow', r);
  await owner.done;
  t.same(owner.failure, { failure: AttemptFailure.PerTryTimeout, reason: 'per_try_timeout' });
  t.equal(owner.events.filter((e) => e === 'failed').length, 1);
  t.equal(h.host.active, 0);
  t.equal(breaker.active, 0);
});

t.test('a cancelled try (the owner moved on) reports nothing more and gives back what it held once', async (t) => {
  const h = clusterHost(port);
  const owner = new Owner();
  const { breaker } = holdings(t);
  const r = new HttpUpstreamRequest(owner, h, 0, breaker);
  owner.current = r;
  dispatch(h, '/slow', r);
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.same(owner.events, ['sent'], 'the request went out; no response yet');
  owner.current = null;
  r.cancel();
  t.equal(h.host.active, 0);
  t.equal(breaker.active, 0);
  // undici reports the abort back to the handler; nothing reaches the owner, nothing is released twice.
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.same(owner.events, ['sent'], 'nothing after the cancel');
  t.equal(h.host.active, 0);
  t.equal(breaker.active, 0);
});
