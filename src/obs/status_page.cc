// The status page document (see status_page.hh).
#include "obs/status_page.hh"

namespace runewarp::obs {

namespace {

constexpr std::string_view kPage = R"HTML(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>runewarp status</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d2330; background: #f7f8fa; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
#meta { color: #5a6372; }
#error { color: #b00020; font-weight: 600; }
table { border-collapse: collapse; background: #fff; min-width: 40em; }
th, td { border: 1px solid #d9dde3; padding: .25em .6em; text-align: left; }
th { background: #eef0f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.member td:first-child { padding-left: 2em; }
.totals span { display: inline-block; margin-right: 1.6em; }
.graphs { display: flex; flex-wrap: wrap; gap: 1.5em; }
.graph { background: #fff; border: 1px solid #d9dde3; padding: .4em; }
.graph div { font-weight: 600; margin-bottom: .2em; }
.warn { color: #a05a00; }
.bad { color: #b00020; }
</style>
</head>
<body>
<h1>runewarp <span id="role"></span></h1>
<div id="meta">waiting for /status.json&hellip;</div>
<div id="error"></div>
<h2>Totals</h2>
<div class="totals" id="totals"></div>
<div class="graphs">
  <div class="graph"><div id="rate-label">Visitors per second</div>
    <canvas id="rate" width="420" height="120"></canvas><div id="rate-now"></div></div>
  <div class="graph"><div>Bytes per second</div>
    <canvas id="bps" width="420" height="120"></canvas><div id="bps-now"></div></div>
</div>
<h2 id="routes-title">Routes</h2>
<table id="routes"><thead></thead><tbody></tbody></table>
<h2 id="tunnels-title">Tunnels</h2>
<table id="tunnels"><thead></thead><tbody></tbody></table>
<h2>Certificates</h2>
<table id="certs"><thead><tr><th>Certificate</th><th>Expires</th><th>Days left</th></tr></thead>
<tbody></tbody></table>
<script>
"use strict";
const HISTORY = 120;
const rate = [], bps = [];
let last = null;

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const k in (attrs || {})) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = String(text);
  return e;
}
function row(cells, attrs) {
  const tr = el("tr", attrs);
  for (const c of cells) {
    const td = el("td", typeof c === "number" ? {class: "num"} : {}, c);
    tr.appendChild(td);
  }
  return tr;
}
function head(table, names) {
  const thead = table.querySelector("thead");
  thead.textContent = "";
  const tr = el("tr");
  for (const n of names) tr.appendChild(el("th", {}, n));
  thead.appendChild(tr);
}
function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + u[i];
}
function ms(s) { return s === null || s === undefined ? "-" : (s * 1000).toFixed(2) + " ms"; }
function draw(id, series, fmt) {
  const c = document.getElementById(id);
  const g = c.getContext && c.getContext("2d");
  const max = Math.max(1, ...series);
  document.getElementById(id + "-now").textContent =
    "now " + fmt(series.length ? series[series.length - 1] : 0) + ", peak " + fmt(max);
  if (!g) return;
  g.clearRect(0, 0, c.width, c.height);
  g.strokeStyle = "#d9dde3";
  g.strokeRect(0.5, 0.5, c.width - 1, c.height - 1);
  g.strokeStyle = "#2962ff";
  g.lineWidth = 2;
  g.beginPath();
  series.forEach((v, i) => {
    const x = (c.width - 4) * i / (HISTORY - 1) + 2;
    const y = c.height - 2 - (c.height - 4) * v / max;
    if (i) g.lineTo(x, y); else g.moveTo(x, y);
  });
  g.stroke();
}
function push(series, v) { series.push(Math.max(0, v)); if (series.length > HISTORY) series.shift(); }

function render(s) {
  const server = s.role === "server";
  document.getElementById("role").textContent = s.role + " " + s.version;
  document.getElementById("meta").textContent = "config generation " + s.generation +
    (s.reload_ok ? "" : " (last reload failed)") + ", updated " + new Date(s.now * 1000).toISOString();
  const t = s.totals, tot = document.getElementById("totals");
  tot.textContent = "";
  for (const k in t) {
    const span = el("span", {id: "total-" + k});
    span.textContent = k.replace(/_/g, " ") + ": " + (k.startsWith("bytes") ? bytes(t[k]) : t[k]);
    tot.appendChild(span);
  }
  const count = server ? t.visitors_accepted : t.streams_total;
  const moved = t.bytes_in + t.bytes_out;
  if (last) {
    const dt = Math.max(0.001, s.now_ms / 1000 - last.t);
    push(rate, (count - last.count) / dt);
    push(bps, (moved - last.moved) / dt);
  }
  last = {t: s.now_ms / 1000, count: count, moved: moved};
  document.getElementById("rate-label").textContent = server ? "Visitors per second" : "Streams per second";
  draw("rate", rate, v => v.toFixed(1) + "/s");
  draw("bps", bps, v => bytes(Math.round(v)) + "/s");

  const routes = document.getElementById("routes"), rb = routes.querySelector("tbody");
  rb.textContent = "";
  if (server) {
    document.getElementById("routes-title").textContent = "Routes";
    head(routes, ["Route", "Kind", "Public hostnames", "Target", "Active", "Relays", "Bytes in", "Bytes out"]);
    for (const r of s.routes)
      rb.appendChild(row([r.label, r.kind, r.hostnames.join(", "), r.target, r.active, r.relays,
                          bytes(r.bytes_in), bytes(r.bytes_out)], {class: "route", "data-label": r.label}));
  } else {
    document.getElementById("routes-title").textContent = "Services";
    head(routes, ["Service", "Public hostnames", "Backend", "Active", "Streams", "Backend failures", "Bytes in", "Bytes out"]);
    for (const r of s.services)
      rb.appendChild(row([r.label, r.hostnames.length ? r.hostnames.join(", ") : "(catch-all)", r.backend,
                          r.streams_active, r.streams_total, r.backend_failures, bytes(r.bytes_in),
                          bytes(r.bytes_out)], {class: "service", "data-label": r.label}));
  }
  const tunnels = document.getElementById("tunnels"), tb = tunnels.querySelector("tbody");
  tb.textContent = "";
  if (server) {
    document.getElementById("tunnels-title").textContent = "Tunnels and members";
    head(tunnels, ["Tunnel / member", "Client address", "RTT", "Active streams", "Bytes in", "Bytes out", "Connected since"]);
    for (const tn of s.tunnels) {
      tb.appendChild(row([tn.label + " (" + tn.members.length + " connected)", "", "", tn.streams_active,
                          bytes(tn.bytes_in), bytes(tn.bytes_out), ""], {class: "tunnel", "data-label": tn.label}));
      for (const m of tn.members)
        tb.appendChild(row(["#" + m.index + " " + m.identity, m.address, ms(m.rtt_seconds), m.active_streams,
                            bytes(m.bytes_in), bytes(m.bytes_out), new Date(m.connected_since * 1000).toISOString()],
                           {class: "member", "data-tunnel": tn.label, "data-identity": m.identity}));
    }
  } else {
    document.getElementById("tunnels-title").textContent = "Servers";
    head(tunnels, ["Server address", "Connected", "Remote", "RTT", "Reconnects"]);
    for (const a of s.servers)
      tb.appendChild(row([a.address, a.connected ? "yes" : "no", a.remote || "-", ms(a.rtt_seconds), a.reconnects],
                         {class: "server", "data-address": a.address}));
  }
  const cb = document.querySelector("#certs tbody");
  cb.textContent = "";
  for (const c of s.certificates) {
    const days = Math.floor((c.not_after - s.now) / 86400);
    const tr = row([c.cert, new Date(c.not_after * 1000).toISOString(), days], {class: "cert"});
    if (days < 0) tr.className += " bad"; else if (days < 21) tr.className += " warn";
    cb.appendChild(tr);
  }
}

async function poll() {
  try {
    const r = await fetch("status.json", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "status unavailable: " + e.message;
  }
}
poll();
setInterval(poll, 1000);
</script>
</body>
</html>
)HTML";

}  // namespace

std::string_view status_page_html() noexcept {
    return kPage;
}

}  // namespace runewarp::obs
