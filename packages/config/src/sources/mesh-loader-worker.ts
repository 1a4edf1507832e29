/**
 * The worker side of `MeshLoaderThread`: reads, validates and translates the mesh off the
 * main thread, then hands the result over in pieces, one when asked, so the receiving event
 * loop never spends long taking in one message.
 */
import { parentPort } from 'node:worker_threads';
import type { VirtualHost } from '../model/route.ts';
import { loadMesh } from './mesh-loader.ts';
import type { FromLoader, ToLoader } from './mesh-loader-protocol.ts';

/** Virtual hosts per piece: 50 of 10 routes take a few milliseconds to copy in. */
const PIECE_HOSTS = 50;

const port = parentPort!;
let pending: { id: number; pieces: { routeConfig: number; virtualHosts: VirtualHost[] }[] } | null = null;

const send = (m: FromLoader): void => port.postMessage(m);

port.on('message', (m: ToLoader) => {
  if (m.type === 'next') {
    const piece = pending?.id === m.id ? pending.pieces.shift() : undefined;
    if (piece !== undefined) send({ type: 'piece', id: m.id, ...piece });
    if (pending?.pieces.length === 0) pending = null;
    return;
  }
  pending = null;
  try {
    const r = loadMesh(m.paths, m.node, m.ports, m.options);
    const pieces: { routeConfig: number; virtualHosts: VirtualHost[] }[] = [];
    let head = r.config;
    if (head !== null) {
      head.routeConfigs.forEach((rc, i) => {
        for (let at = 0; at < rc.virtualHosts.length; at += PIECE_HOSTS) pieces.push({ routeConfig: i, virtualHosts: rc.virtualHosts.slice(at, at + PIECE_HOSTS) });
      });
      head = { ...head, routeConfigs: head.routeConfigs.map((rc) => ({ ...rc, virtualHosts: [] })) };
    }
    if (pieces.length > 0) pending = { id: m.id, pieces };
    send({ type: 'head', id: m.id, config: head, issues: r.issues, files: r.files, timings: r.timings, proxySettings: r.proxySettings, pieces: pieces.length });
  } catch (err) {
    send({ type: 'failed', id: m.id, message: (err as Error).stack ?? String(err) });
  }
});
