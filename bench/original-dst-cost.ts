// What one original-destination lookup costs (ConntrackTable: a read of /proc/net/nf_conntrack
// and a search of its text) with 10, 1,000 and 10,000 conntrack entries in the network
// namespace, one at a time and in a burst of concurrent lookups (which share reads). Needs
// root (it creates a network namespace and an iptables rule, removed at the end). Run by
// hand; not part of `pnpm bench`.
//
//   node bench/original-dst-cost.ts [--sizes 10,1000,10000] [--lookups 200] [--burst 100]
//
// The entries are UDP flows to 127.0.0.1 (one per destination port, 30 s unreplied timeout):
// conntrack formats them like any other entry, and the one TCP connection looked up is
// somewhere among them.
import { execFileSync, spawnSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ConntrackTable } from '../packages/proxy/src/listener/original-dst.ts';

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '10,1000,10000' },
    lookups: { type: 'string', default: '200' },
    burst: { type: 'string', default: '100' },
    inside: { type: 'boolean', default: false },
  },
});

if (!values.inside) {
  // Re-run this script inside a fresh network namespace, then remove it.
  if (process.getuid?.() !== 0) {
    console.error('original-dst-cost: needs root (network namespace, iptables)');
    process.exit(1);
  }
  const ns = `remora-odcost-${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    const argv = process.argv.slice(2);
    const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, fileURLToPath(import.meta.url), ...argv, '--inside'], { stdio: 'inherit' });
    process.exitCode = r.status ?? 1;
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
} else {
  await inside();
}

async function inside(): Promise<void> {
  const sizes = values.sizes.split(',').map(Number);
  const lookups = Number(values.lookups);
  const burst = Number(values.burst);
  execFileSync('ip', ['link', 'set', 'lo', 'up']);
  // A REDIRECT like the sidecar's: 10.96.0.10:9080 -> 15001 (also switches conntrack on in
  // this namespace).
  execFileSync('ip', ['route', 'add', '10.96.0.0/16', 'dev', 'lo']);
  execFileSync('iptables', ['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', '10.96.0.10', '--dport', '9080', '-j', 'REDIRECT', '--to-ports', '15001']);

  let accepted: Socket | undefined;
  const server = createServer((s) => (accepted = s));
  await new Promise<void>((r) => server.listen(15001, '127.0.0.1', r));
  const client = connect(9080, '10.96.0.10');
  await new Promise<void>((r, j) => {
    client.once('connect', r);
    client.once('error', j);
  });
  while (!accepted) await new Promise((r) => setTimeout(r, 1));
  const socket = accepted;

  const table = await ConntrackTable.open();
  const first = await table.lookup(socket);
  if (first?.address !== '10.96.0.10' || first.port !== 9080) throw new Error(`lookup answered ${JSON.stringify(first)}`);

  const udp = createSocket('udp4');
  await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
  const payload = Buffer.from('x');
  let nextPort = 20000;
  const count = (): number => Number(readFileSync('/proc/sys/net/netfilter/nf_conntrack_count', 'utf8'));

  console.log(`entries  table KiB  miss (whole table) ms  hit: mean    p50     p99 ms  burst of ${burst} hits: total ms  reads  ms/lookup`);
  for (const size of sizes) {
    // Fill up to `size` entries (the TCP connection and the ICMP/UDP flows already there count).
    while (count() < size) {
      const want = size - count();
      for (let i = 0; i < want; i++) udp.send(payload, nextPort++, '127.0.0.1');
      await new Promise((r) => setTimeout(r, 20));
    }
    // Warm up (the buffer grows to the table's size once).
    for (let i = 0; i < 5; i++) await table.lookup(socket);

    const times: number[] = [];
    for (let i = 0; i < lookups; i++) {
      const t0 = performance.now();
      const d = await table.lookup(socket);
      times.push(performance.now() - t0);
      if (d?.port !== 9080) throw new Error('lost the entry');
    }
    times.sort((a, b) => a - b);
    const mean = times.reduce((a, b) => a + b, 0) / times.length;
    const pct = (p: number): number => times[Math.min(times.length - 1, Math.floor((p / 100) * times.length))]!;

    // A connection with no entry: the whole table is read (the worst case; a found entry
    // stops the read where it is, so a hit costs what its hash bucket's position says).
    const missing = { localAddress: '127.0.0.1', localPort: 15001, remoteAddress: '127.0.0.2', remotePort: 1 };
    const missTimes: number[] = [];
    for (let i = 0; i < Math.max(10, lookups / 4); i++) {
      const t0 = performance.now();
      if ((await table.lookup(missing)) !== null) throw new Error('found a connection that does not exist');
      missTimes.push(performance.now() - t0);
    }
    const fullBytes = table.lastReadBytes;
    const missMean = missTimes.reduce((a, b) => a + b, 0) / missTimes.length;

    const readsBefore = table.reads;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: burst }, () => table.lookup(socket)));
    const burstMs = performance.now() - t0;
    const reads = table.reads - readsBefore;

    console.log(
      `${String(count()).padStart(7)}  ${(fullBytes / 1024).toFixed(0).padStart(9)}  ${missMean.toFixed(3).padStart(21)}  ` +
        `${mean.toFixed(3).padStart(9)}  ${pct(50).toFixed(3).padStart(6)}  ${pct(99).toFixed(3).padStart(6)}` +
        `${burstMs.toFixed(2).padStart(26)}  ${String(reads).padStart(5)}  ${(burstMs / burst).toFixed(4).padStart(9)}`,
    );
  }
  table.close();
  udp.close();
  client.destroy();
  socket.destroy();
  server.close();
}
