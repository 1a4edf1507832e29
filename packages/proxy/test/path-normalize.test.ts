// Envoy's path normalization (`normalize_path`, then `merge_slashes`) as Istio's default
// `pathNormalization: BASE` configures it.
//
// Reference: envoy test/common/http/path_utility_test.cc (NormalizeValidPaths,
// NormalizeCasePath, InvalidPaths, MergeSlashes), source/common/http/path_utility.cc
// (canonicalPath, rfcNormalize, mergeSlashes) and Chromium's url/url_canon_path.cc.
import t from 'tap';
import { GCProfiler } from 'node:v8';
import { normalizePath } from '@remora/proxy';

// Envoy's own tables, with Envoy's exact behaviour for `..` above the root (resolved).
const norm = (p: string): string | null => normalizePath(p, false, false);
const merged = (p: string): string | null => normalizePath(p, true, false);

t.test("Envoy's NormalizeValidPaths and NormalizeCasePath tables", async (t) => {
  const cases: [string, string][] = [
    ['/xyz', '/xyz'],
    ['/x/y/z', '/x/y/z'],
    ['/a/b/../c', '/a/c'], // parent dir
    ['/a/b/./c', '/a/b/c'], // current dir
    ['a/b/../c', '/a/c'], // non / start
    ['/a/b/../../../../c', '/c'], // out number parent
    ['/a/..\\c', '/c'], // "..\\" canonicalization
    ['/%c0%af', '/%c0%af'], // 2 bytes unicode reserved characters
    ['/%5c%25', '/%5c%25'], // reserved characters
    ['/a/b/%2E%2E/c', '/a/c'], // %2E escape
    ['/a/b/%2E./c', '/a/c'],
    ['/a/b/%2E/c', '/a/b/c'],
    ['..', '/'],
    ['/../a/b', '/a/b'],
    ['/./a/b', '/a/b'],
    ['/A/B/C', '/A/B/C'], // not normalized to lower case
    ['/a/b/%2e%2e/c', '/a/c'], // %2e can be normalized to .
    ['/a/%2F%2f/c', '/a/%2F%2f/c'], // %2F is not normalized to %2f
  ];
  for (const [input, want] of cases) t.equal(norm(input), want, input);
});

t.test("Envoy's InvalidPaths: a NUL, escaped or not, is rejected", async (t) => {
  for (const p of ['/xyz/.%00../abc', '/xyz/%00.%00./abc', '/xyz/AAAAA%%0000/abc', '/a\u0000b', '/%00']) {
    t.equal(norm(p), null, JSON.stringify(p));
  }
});

t.test('`..` above the root is resolved at the root, as Envoy does, not rejected', async (t) => {
  t.equal(norm('/../x'), '/x');
  t.equal(norm('/a/../../x'), '/x');
  t.equal(norm('/..'), '/');
  t.equal(norm('/../'), '/');
  t.equal(norm('/%2e%2e/%2E%2e/etc/passwd'), '/etc/passwd');
  t.equal(norm('/a/b/..'), '/a/', 'a trailing `..` leaves the directory, with its slash');
  t.equal(norm('/a/b/.'), '/a/b/');
  t.equal(norm('/a/.%2e/b'), '/b', 'a dot and an escaped dot make `..`');
});

t.test('dots that are part of a name stay', async (t) => {
  for (const p of ['/.well-known/acme', '/a./b', '/a/..b', '/a/.../b', '/a/b.', '/v1.2/x..y', '/a/.b/']) t.equal(norm(p), p, p);
  t.equal(norm('/a/%2Ex'), '/a/.x', 'an escaped dot is decoded even when it is no segment');
  t.equal(norm('/a%2eb'), '/a.b');
});

t.test('backslashes are separators; an escaped backslash is not', async (t) => {
  t.equal(norm('/a\\b\\c'), '/a/b/c');
  t.equal(norm('\\a\\..\\b'), '/b');
  t.equal(norm('/a/%5C../b'), '/a/%5C../b');
});

t.test('escaped unreserved characters are decoded; characters a path cannot hold are escaped', async (t) => {
  t.equal(norm('/%41%62%7e%2D%5f%30'), '/Ab~-_0');
  t.equal(norm('/a b"c<d>e^f`g{h|i}j#k'), '/a%20b%22c%3Cd%3Ee%5Ef%60g%7Bh%7Ci%7Dj%23k');
  t.equal(norm('/caf\u00e9'), '/caf%E9', 'Node gives the target as latin1: one character per byte');
  t.equal(norm('/\u20ac'), '/%E2%82%AC', 'characters above 0xFF are escaped as UTF-8');
  t.equal(norm('/\ud83d\ude00'), '/%F0%9F%98%80');
  t.equal(norm('/\ud83d'), null, 'a lone surrogate is invalid');
  t.equal(norm('/a\tb\u007f'), '/a%09b%7F');
  t.equal(norm('/100%'), '/100%', 'a lone percent is kept');
  t.equal(norm('/x%2'), '/x%2');
  t.equal(norm('/%zz%2'), '/%zz%2');
  t.equal(norm('/%%41'), '/%A', 'an invalid escape keeps its `%`; what follows is read on its own');
  t.equal(norm('/%3a%3A%40%2c'), '/%3a%3A%40%2c', 'reserved escapes are kept exactly, hex case included');
});

t.test('a path without a leading slash gets one; an empty path is `/`', async (t) => {
  t.equal(norm(''), '/');
  t.equal(norm('a'), '/a');
  t.equal(norm('?x=1'), '/?x=1');
  t.equal(norm('./a'), '/a');
});

t.test('the query is kept exactly as it is', async (t) => {
  t.equal(norm('/a/../b?x=/../y&z=%2e%2e\\'), '/b?x=/../y&z=%2e%2e\\');
  t.equal(norm('/a/./?%41'), '/a/?%41');
  t.equal(norm('/a/b?'), '/a/b?');
  t.equal(norm('/a/b/..?q'), '/a/?q');
  t.equal(norm('/a?b/../c'), '/a?b/../c', 'a fast-path path with a query is untouched');
  t.equal(norm('/a?\u0000'), '/a?\u0000', 'the query is not checked either');
});

t.test("merge_slashes: Envoy's MergeSlashes table, after normalization", async (t) => {
  const cases: [string, string][] = [
    ['/a//b/c/', '/a/b/c/'], // ends with slash
    ['/a', '/a'], // no-op
    ['//a/b/c', '/a/b/c'], // double / start
    ['/a//b/c', '/a/b/c'], // double / in the middle
    ['/a/b/c//', '/a/b/c/'], // double / end
    ['/a///b/c', '/a/b/c'], // triple / in the middle
    ['/a////b/c', '/a/b/c'], // quadruple / in the middle
    ['/a//b?a=///c', '/a/b?a=///c'], // slashes in the query are ignored
    ['/a//b?', '/a/b?'], // empty query
    ['//a/?b', '/a/?b'], // ends with slash + query
    ['a//b/c', '/a/b/c'], // relative: normalization adds the leading slash first
    ['/a//..//b', '/a/b'], // `..` only removes the empty segment; merging does the rest
    ['/a\\\\b', '/a/b'], // backslashes become slashes, then merge
  ];
  for (const [input, want] of cases) t.equal(merged(input), want, input);
  t.equal(merged('//'), '//', "Envoy's mergeSlashes keeps a leading and a trailing slash even when there is nothing between");
  t.equal(norm('/a//b'), '/a//b', 'without merge_slashes (Istio BASE), `//` stays');
});

t.test('the fast path: an already-normal path comes back as the same string, with no allocation', async (t) => {
  const common = ['/', '/productpage', '/api/v1/reviews/0?user=jason&x=/../y', '/static/app.min.js', '/a/%2F/b%20c', '/.well-known/x', "/a-b_c~d!$&'()*+,;=:@[]"];
  for (const p of common) t.equal(normalizePath(p, true), p, p);

  // No garbage collection while normalizing a 3.2 KiB path 100 000 times: nothing was
  // allocated. The control (one copy per call) shows the measurement sees allocation.
  const long = `/${'segment-'.repeat(400)}?q=1`;
  const gcs = (fn: (s: string) => string | null): { collections: number; last: string | null } => {
    const profiler = new GCProfiler();
    profiler.start();
    let last: string | null = null;
    for (let i = 0; i < 100_000; i++) last = fn(long);
    return { collections: profiler.stop().statistics.length, last };
  };
  gcs((s) => normalizePath(s, true)); // warm up the optimizing compiler
  t.same(gcs((s) => normalizePath(s, true)), { collections: 0, last: long }, 'fast path: no collection');
  t.ok(gcs((s) => s.toUpperCase()).collections > 0, 'control: one 3.2 KiB copy per call (320 MB) does collect');
});

t.test('the fast path answers what the full canonicalization answers (seeded fuzz)', async (t) => {
  // A leading `\` is a slash to the canonicalizer but always takes the slow path, so
  // `\` + rest and `/` + rest must normalize the same.
  const alphabet = ['/', '/', '.', '.', '%', '2', 'e', 'E', 'a', 'A', '4', '1', '0', 'f', '\\', '?', ' ', '~', '#', '\u00e9', '\u0000'];
  let seed = 0x2545f491;
  const rand = (n: number): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  let checked = 0;
  let fast = 0;
  for (let k = 0; k < 20_000; k++) {
    let rest = '';
    const len = 1 + rand(10);
    for (let i = 0; i < len; i++) rest += alphabet[rand(alphabet.length)];
    for (const merge of [false, true]) {
      const a = normalizePath(`/${rest}`, merge);
      const b = normalizePath(`\\${rest}`, merge);
      if (a !== b) {
        t.fail(`/${rest} (merge ${merge}): ${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
        return;
      }
      if (a === `/${rest}`) fast++;
      checked++;
    }
  }
  t.equal(checked, 40_000);
  t.ok(fast > 1000, `the inputs exercise the fast path (${fast} unchanged)`);
});

t.test('by default a `..` that climbs above the root is refused; inside the path it resolves', async (t) => {
  t.equal(normalizePath('/../etc/passwd', false), null);
  t.equal(normalizePath('/a/../../x', false), null);
  t.equal(normalizePath('/a/%2e%2e/%2E%2E/x', false), null, 'encoded dots count');
  t.equal(normalizePath('/a/b/../c?q=/../', false), '/a/c?q=/../', 'the query is not a path');
  t.equal(normalizePath('/a/..', false), '/', 'back to the root is fine');
  t.equal(normalizePath('/a/../../x', false, false), '/x', 'Envoy resolves it when asked to behave exactly as Envoy');
});
