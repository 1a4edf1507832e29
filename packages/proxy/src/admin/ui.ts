/**
 * `/ui` on the admin port: one self-contained page (inline script and SVG, nothing fetched
 * from elsewhere) drawing this proxy's listeners → route configurations → clusters →
 * endpoints, with each edge's request rate, error rate, p50/p99 latency and response flags
 * over the last seconds, ejected hosts and open circuit breakers marked, the last access log
 * lines with a filter box, and the config version. It polls `/ui/data`, built here from the
 * live snapshot and the LiveWindow's counts.
 */
import type { Runtime } from '../runtime/runtime.ts';
import { NO_ROUTE, type EdgeSummary, type LiveWindow } from './ui-window.ts';

export interface UiNode {
  readonly id: string;
  readonly kind: 'listener' | 'routes' | 'cluster' | 'endpoint';
  readonly label: string;
  /** listener: direction and address; cluster: lb and subset; endpoint: locality. */
  readonly detail: string;
  /** Endpoint: ejected by outlier detection. Cluster: how many of its hosts are. */
  readonly ejected?: boolean;
  readonly ejectedHosts?: number;
  /** Cluster: a circuit breaker is open (a limit reached now) or has overflowed. */
  readonly breakerOpen?: boolean;
  readonly overflows?: number;
  readonly panic?: boolean;
}

export interface UiEdge extends EdgeSummary {
  readonly from: string;
  readonly to: string;
}

export interface UiData {
  readonly version: string | null;
  readonly liveSince: string | null;
  readonly node: { readonly kind: string; readonly namespace: string; readonly name: string };
  readonly windowSeconds: number;
  readonly nodes: readonly UiNode[];
  readonly edges: readonly UiEdge[];
  readonly log: readonly string[];
}

const ZERO = (total: number): EdgeSummary => ({ requests: 0, rps: 0, errorRate: 0, p50Ms: null, p99Ms: null, flags: {}, total });

/** `/ui/data`: the graph of the live config with the window's numbers on its edges. */
export function uiData(rt: Runtime, win: LiveWindow, seconds: number): UiData {
  win.watched();
  const snap = rt.snapshot;
  const nodes = new Map<string, UiNode>();
  const edges = new Map<string, UiEdge>();
  const now = win.nowSecond();
  const clusters = rt.clusterManager.clusters;
  const lid = (n: string): string => `listener:${n}`;
  const rid = (n: string): string => `routes:${n}`;
  const cid = (n: string): string => `cluster:${n}`;
  const eid = (c: string, h: string): string => `endpoint:${c}|${h}`;
  const edge = (from: string, to: string, w: { summary(now: number, s: number): EdgeSummary } | undefined): void => {
    edges.set(`${from}\n${to}`, { from, to, ...(w === undefined ? ZERO(0) : w.summary(now, seconds)) });
  };
  const addCluster = (name: string): void => {
    if (nodes.has(cid(name))) return;
    const c = clusters.get(name);
    if (c === undefined) {
      nodes.set(cid(name), { id: cid(name), kind: 'cluster', label: name, detail: 'missing: 503 NC' });
      return;
    }
    const b = c.breaker;
    let ejected = 0;
    for (const h of c.hosts) {
      const out = c.isEjected(h);
      if (out) ejected++;
      nodes.set(eid(name, h.host.hostPort), { id: eid(name, h.host.hostPort), kind: 'endpoint', label: h.host.hostPort, detail: h.endpoint.locality || '-', ejected: out });
      edge(cid(name), eid(name, h.host.hostPort), win.clustersToEndpoints.get(name)?.get(h.host.hostPort));
    }
    nodes.set(cid(name), {
      id: cid(name),
      kind: 'cluster',
      label: name,
      detail: `${c.model.lb.kind}${c.model.subset ? `, subset ${c.model.subset}` : ''}`,
      ejectedHosts: ejected,
      breakerOpen: b.rqOpen > 0 || b.rqPendingOpen > 0 || b.cxOpen > 0 || b.rqRetryOpen > 0,
      overflows: b.overflows,
      panic: c.panic,
    });
  };
  if (snap !== null) {
    const rcs = new Map(snap.config.routeConfigs.map((rc) => [rc.name, rc]));
    for (const l of snap.listeners.values()) {
      if (l.listener.tcpProxy !== undefined) continue;
      const m = l.listener;
      nodes.set(lid(m.name), { id: lid(m.name), kind: 'listener', label: m.name, detail: `${m.direction} ${m.address}:${m.port}` });
      const names = new Set([m.routeConfig, ...Object.values(m.routeConfigsByPort ?? {})]);
      for (const rcName of names) {
        const rc = rcs.get(rcName);
        if (rc === undefined) continue;
        if (!nodes.has(rid(rcName))) {
          nodes.set(rid(rcName), { id: rid(rcName), kind: 'routes', label: rcName, detail: `${rc.virtualHosts.length} virtual host${rc.virtualHosts.length === 1 ? '' : 's'}` });
          const used = new Set<string>();
          for (const vh of rc.virtualHosts) for (const r of vh.routes) if (r.action.kind === 'forward') for (const c of r.action.clusters) used.add(c.cluster);
          for (const c of used) {
            addCluster(c);
            edge(rid(rcName), cid(c), win.routesToClusters.get(rcName)?.get(c));
          }
        }
        edge(lid(m.name), rid(rcName), win.listenerToRoutes.get(m.name)?.get(rcName));
      }
    }
  }
  // Traffic on edges the live config no longer has (or never listed): shown as it happened.
  for (const [l, tos] of win.listenerToRoutes) {
    for (const [rc, w] of tos) {
      if (edges.has(`${lid(l)}\n${rid(rc)}`)) continue;
      if (!nodes.has(lid(l))) nodes.set(lid(l), { id: lid(l), kind: 'listener', label: l, detail: 'not in the live config' });
      if (!nodes.has(rid(rc))) nodes.set(rid(rc), { id: rid(rc), kind: 'routes', label: rc, detail: rc === NO_ROUTE ? '404 NR' : 'not in the live config' });
      edge(lid(l), rid(rc), w);
    }
  }
  for (const [rc, tos] of win.routesToClusters) {
    for (const [c, w] of tos) {
      if (edges.has(`${rid(rc)}\n${cid(c)}`) || !nodes.has(rid(rc))) continue;
      addCluster(c);
      edge(rid(rc), cid(c), w);
    }
  }
  const node = rt.node;
  return {
    version: snap?.config.version ?? null,
    liveSince: snap === null ? null : new Date(rt.snapshotLiveAt).toISOString(),
    node: { kind: node.kind, namespace: node.namespace, name: node.podName ?? node.workloadName },
    windowSeconds: seconds,
    nodes: [...nodes.values()],
    edges: [...edges.values()],
    log: win.logLines(),
  };
}

/** The page: no build step, no external resources. */
export const UI_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Remora live view</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:13px system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{display:flex;gap:18px;align-items:baseline;padding:10px 16px;background:#1d2330;color:#fff}
header h1{font-size:16px;margin:0}header span{opacity:.8}
#status{margin-left:auto}
main{padding:8px 16px}
svg{background:#fff;border:1px solid #d8dce3;border-radius:6px;width:100%}
.node rect{fill:#fff;stroke:#8a93a6;rx:5}
.node.listener rect{fill:#e8f0fe}.node.routes rect{fill:#eef7ee}.node.cluster rect{fill:#fff7e6}.node.endpoint rect{fill:#f4f4f4}
.node.ejected rect{fill:#fdd;stroke:#c00;stroke-width:2}
.node.breaker-open rect{stroke:#e67700;stroke-width:3;stroke-dasharray:5 3}
.node text{font-size:11px}.node .detail{fill:#666;font-size:10px}
.edge{fill:none;stroke:#b7bfcc;stroke-width:1.5}
.edge.active{stroke:#2f7d32;stroke-width:2.5}.edge.errors{stroke:#c62828}
.elabel{font-size:10px;fill:#333}
#log{background:#fff;border:1px solid #d8dce3;border-radius:6px;max-height:260px;overflow:auto;font:11px ui-monospace,monospace;white-space:pre;padding:6px}
#filter{width:360px;padding:4px;margin:8px 0}
.legend{font-size:11px;color:#555;margin:6px 0}
</style></head>
<body>
<header><h1>Remora live view</h1><span id="proxy"></span><span>config version <b id="version">-</b></span><span id="status">loading…</span></header>
<main>
<div class="legend">Edges: requests/s, error rate, p50/p99 latency, response flags over the last <span id="window">10</span> s. Red host: ejected by outlier detection; dashed orange cluster: circuit breaker open.</div>
<svg id="graph" role="img" aria-label="listeners, route configurations, clusters and endpoints"></svg>
<div><input id="filter" placeholder="filter access log lines (text or /regex/)"> <span id="logcount"></span></div>
<div id="log"></div>
</main>
<script>
"use strict";
const NS = "http://www.w3.org/2000/svg";
const COLS = ["listener", "routes", "cluster", "endpoint"];
const W = 230, H = 38, GAPY = 14, COLW = 420;
let last = null;
function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function short(s, n) { return s.length > n ? s.slice(0, n - 1) + "…" : s; }
function edgeText(e) {
  if (e.requests === 0) return "";
  const flags = Object.entries(e.flags).map(([k, v]) => k + ":" + v).join(" ");
  return e.rps + "/s " + (e.errorRate * 100).toFixed(1) + "% err " + e.p50Ms + "/" + e.p99Ms + "ms" + (flags ? " " + flags : "");
}
function draw(d) {
  const svg = document.getElementById("graph");
  const pos = new Map();
  const cols = COLS.map(k => d.nodes.filter(n => n.kind === k));
  const rows = Math.max(1, ...cols.map(c => c.length));
  const height = rows * (H + GAPY) + 30;
  svg.setAttribute("viewBox", "0 0 " + (COLS.length * COLW) + " " + height);
  svg.setAttribute("height", String(height));
  svg.replaceChildren();
  cols.forEach((col, ci) => col.forEach((n, ri) => pos.set(n.id, { x: 10 + ci * COLW, y: 20 + ri * (H + GAPY) })));
  const edges = el("g", { id: "edges" });
  for (const e of d.edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    const cls = "edge" + (e.requests > 0 ? " active" : "") + (e.errorRate > 0 ? " errors" : "");
    const p = el("path", { class: cls, d: "M" + x1 + "," + y1 + " C" + mx + "," + y1 + " " + mx + "," + y2 + " " + x2 + "," + y2,
      "data-from": e.from, "data-to": e.to, "data-requests": String(e.requests), "data-total": String(e.total), "data-error-rate": String(e.errorRate) });
    p.appendChild(el("title", {}, e.from + " → " + e.to + "\\n" + (edgeText(e) || "no requests in the window") + "\\n" + e.total + " since start"));
    edges.appendChild(p);
    const t = edgeText(e);
    // Beside the target, above its edge: each target's incoming edge gets its own line.
    if (t) edges.appendChild(el("text", { class: "elabel", x: String(x2 - 4), y: String(y2 - 4), "text-anchor": "end" }, t));
  }
  svg.appendChild(edges);
  for (const n of d.nodes) {
    const p = pos.get(n.id);
    const cls = "node " + n.kind + (n.ejected ? " ejected" : "") + (n.breakerOpen ? " breaker-open" : "");
    const g = el("g", { class: cls, "data-id": n.id, transform: "translate(" + p.x + "," + p.y + ")" });
    g.appendChild(el("rect", { width: String(W), height: String(H) }));
    g.appendChild(el("text", { x: "6", y: "15" }, short(n.label, 38)));
    let detail = n.detail;
    if (n.kind === "cluster") detail += (n.ejectedHosts ? " · " + n.ejectedHosts + " ejected" : "") + (n.breakerOpen ? " · breaker open" : "") + (n.overflows ? " · " + n.overflows + " overflows" : "") + (n.panic ? " · panic" : "");
    if (n.kind === "endpoint" && n.ejected) detail += " · EJECTED";
    g.appendChild(el("text", { class: "detail", x: "6", y: "30" }, short(detail, 42)));
    g.appendChild(el("title", {}, n.label + "\\n" + detail));
    svg.appendChild(g);
  }
  svg.setAttribute("data-ready", "true");
}
function showLog() {
  if (!last) return;
  const f = document.getElementById("filter").value;
  let test = l => true;
  if (f.length > 2 && f.startsWith("/") && f.endsWith("/")) { try { const re = new RegExp(f.slice(1, -1)); test = l => re.test(l); } catch (e) {} }
  else if (f) test = l => l.includes(f);
  const lines = last.log.filter(test);
  document.getElementById("log").textContent = lines.slice(-200).reverse().join("\\n");
  document.getElementById("logcount").textContent = lines.length + " of " + last.log.length + " lines";
}
async function poll() {
  try {
    const r = await fetch("/ui/data", { cache: "no-store" });
    const d = await r.json();
    last = d;
    document.getElementById("version").textContent = d.version || "-";
    document.getElementById("proxy").textContent = d.node.kind + " " + (d.node.name || "") + "." + d.node.namespace;
    document.getElementById("window").textContent = String(d.windowSeconds);
    draw(d);
    showLog();
    document.getElementById("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById("status").textContent = "cannot reach the proxy: " + e;
  }
}
document.getElementById("filter").addEventListener("input", showLog);
poll();
setInterval(poll, 2000);
</script>
</body></html>
`;
