// writeLinesSync: workers that write the access log to one pipe themselves must never mix
// their lines. Two threads write batches of long lines to the same FIFO at once; the reader
// checks every line arrived whole, once.
import { execFileSync } from 'node:child_process';
import { closeSync, createReadStream, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import t from 'tap';
import { writeLinesSync } from '../src/telemetry/access-log.ts';

/** The module the writer threads load (tests run from sources). */
const MODULE = new URL('../src/telemetry/access-log.ts', import.meta.url).href;

/** A thread that opens the FIFO and writes `batches` batches of `lines` lines, each `size` bytes, tagged with `tag`. */
const WRITER = `
const { workerData } = require('node:worker_threads');
const { openSync, closeSync } = require('node:fs');
import(workerData.module).then(({ writeLinesSync }) => {
  const fd = openSync(workerData.path, 'w');
  const { tag, batches, lines, size } = workerData;
  for (let b = 0; b < batches; b++) {
    let chunk = '';
    for (let l = 0; l < lines; l++) {
      const head = tag + ' ' + b + ' ' + l + ' ';
      chunk += head + tag.repeat(size - head.length - 1) + '\\n';
    }
    const rest = writeLinesSync(fd, chunk);
    if (rest !== null) throw new Error('a blocking FIFO took only part of a batch');
  }
  closeSync(fd);
});
`;

t.test('two threads writing long lines to one pipe: every line whole, none mixed', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'remora-lines-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'fifo');
  execFileSync('mkfifo', [path]);
  const batches = 150;
  const lines = 12;
  const size = 900; // 12 lines of 900 bytes: a batch of ~10.8 KB goes out in three pieces
  const received: string[] = [];
  let partial = '';
  const reader = createReadStream(path, { encoding: 'utf8', highWaterMark: 1024 });
  const ended = new Promise<void>((resolve, reject) => {
    reader.on('data', (c) => {
      const parts = (partial + (c as string)).split('\n');
      partial = parts.pop()!;
      received.push(...parts);
    });
    reader.on('end', resolve);
    reader.on('error', reject);
  });
  const writers = ['a', 'b'].map(
    (tag) => new Promise<void>((resolve, reject) => {
      const w = new Worker(WRITER, { eval: true, workerData: { module: MODULE, path, tag, batches, lines, size } });
      w.on('error', reject);
      w.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`writer ${tag} exited ${code}`))));
    }),
  );
  await Promise.all(writers);
  await ended;
  t.equal(partial, '', 'the stream ends at a line end');
  const whole = /^([ab]) (\d+) (\d+) \1+$/;
  const bad = received.filter((l) => !whole.test(l) || l.length !== size - 1);
  t.same(bad.map((l) => l.slice(0, 40)), [], 'no line was cut or mixed with the other thread\'s');
  t.equal(new Set(received).size, 2 * batches * lines, 'every line once');
});

t.test('a line longer than a pipe write is written whole, after the shorter lines before it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'remora-lines-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'log');
  const fd = openSync(file, 'a');
  const chunk = `short 1\n${'L'.repeat(10_000)}\nshort 2\n`;
  t.equal(writeLinesSync(fd, chunk), null, 'all of it written');
  closeSync(fd);
  t.equal(readFileSync(file, 'utf8'), chunk);
});
