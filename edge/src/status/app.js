// Livestrom status page: reads the admin endpoints and /v1/stream with an
// admin key kept in this tab's sessionStorage and sent as X-API-Key (never
// in a URL). No dependencies; all data is written with textContent.
"use strict";

const KEY_STORAGE = "livestrom.adminKey";
const REFRESH_MS = 5000;
const LIVE_MAX = 200;
const TYPES = ["rss", "json", "html", "firehose"];
const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
let key = sessionStorage.getItem(KEY_STORAGE);
let refreshTimer = null;

// ---------- key handling ----------

class KeyError extends Error {}

function setKeyStatus(text, bad) {
  const el = $("key-status");
  el.textContent = text;
  el.classList.toggle("bad", !!bad);
}

async function problemText(res) {
  try {
    const p = await res.json();
    return p.detail || p.title || res.statusText;
  } catch (_) {
    return res.statusText;
  }
}

// Turns a refused request into a message the operator can act on; stops
// everything that would keep sending the refused key.
async function refuse(res) {
  const detail = await problemText(res);
  let msg;
  if (res.status === 401) {
    msg = `The key was not accepted (401): ${detail}. Enter a valid admin key.`;
  } else {
    msg = `The key cannot read this (403): ${detail}. Use a key with the admin scope.`;
  }
  sessionStorage.removeItem(KEY_STORAGE);
  key = null;
  stopRefresh();
  stopLive("Stopped: no usable key.");
  setKeyStatus(msg, true);
  document.body.classList.remove("authed");
  $("key").focus();
  throw new KeyError(msg);
}

async function api(path) {
  const res = await fetch(path, { headers: { "X-API-Key": key }, cache: "no-store" });
  if (res.status === 401 || res.status === 403) await refuse(res);
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await problemText(res)}`);
  return res.json();
}

$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = $("key").value.trim();
  if (!value) {
    setKeyStatus("Enter a key first.", true);
    return;
  }
  key = value;
  sessionStorage.setItem(KEY_STORAGE, key);
  $("key").value = "";
  start();
});

$("forget-key").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORAGE);
  key = null;
  stopRefresh();
  stopLive("Not connected.");
  document.body.classList.remove("authed");
  setKeyStatus("Key forgotten.", false);
});

// ---------- formatting ----------

function rel(iso) {
  if (!iso) return "–";
  const s = Math.round((Date.parse(iso) - Date.now()) / 1000);
  const a = Math.abs(s);
  const n = a < 60 ? `${a} s` : a < 3600 ? `${Math.round(a / 60)} min` : a < 86400 ? `${Math.round(a / 3600)} h` : `${Math.round(a / 86400)} d`;
  return s >= 0 ? `in ${n}` : `${n} ago`;
}

function timeCell(td, iso) {
  if (!iso) {
    td.textContent = "–";
    return;
  }
  const t = document.createElement("time");
  t.dateTime = iso;
  t.title = iso;
  t.textContent = rel(iso);
  td.append(t);
}

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value;
  if (cls) el.className = cls;
  return el;
}

// ---------- sources, state, chart ----------

function renderSources(list) {
  const body = $("sources-body");
  const rows = list.map((s) => {
    const tr = document.createElement("tr");
    tr.dataset.source = s.source_id;
    tr.dataset.health = s.health;
    const th = text("th", s.source_id);
    th.scope = "row";
    tr.append(th);
    tr.append(text("td", s.source_type || "–"));
    tr.append(text("td", (s.tags || []).join(", ") || "–"));
    const health = text("td", "");
    health.append(text("span", s.health, `badge ${s.health}`));
    if (s.consecutive_failures > 1) health.append(text("span", ` ×${s.consecutive_failures}`, "muted"));
    tr.append(health);
    const lastPoll = document.createElement("td");
    timeCell(lastPoll, s.last_poll_at);
    tr.append(lastPoll);
    tr.append(text("td", s.last_error || "", "last-error"));
    tr.append(text("td", String(s.items), "num"));
    tr.append(text("td", String(s.events), "num"));
    const next = document.createElement("td");
    timeCell(next, s.next_poll_at);
    tr.append(next);
    return tr;
  });
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = text("td", "No sources yet.");
    td.colSpan = 9;
    tr.append(td);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

function renderStats(st, activity) {
  $("st-subscribers").textContent = String(st.subscribers);
  $("st-head").textContent = st.log_head || "empty";
  $("st-floor").textContent = st.retention_floor;
  $("st-live").textContent = st.live_position || "–";
  if (activity) $("st-rate").textContent = String(activity.last_minute);
  $("st-updated").textContent = new Date().toLocaleTimeString();
}

function svg(tag, attrs) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function renderChart(activity) {
  const W = 600, H = 160, left = 34, bottom = 18, top = 6;
  const mins = activity.per_minute;
  const totals = mins.map((m) => TYPES.reduce((a, t) => a + m.counts[t], 0));
  const max = Math.max(1, ...totals);
  const bw = (W - left) / Math.max(1, mins.length);
  const scale = (H - top - bottom) / max;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart" });
  const sum = TYPES.map((t) => `${t} ${mins.reduce((a, m) => a + m.counts[t], 0)}`).join(", ");
  const label = `Events per minute over the last ${activity.minutes} minutes: ${activity.events} in all (${sum}); busiest minute ${Math.max(0, ...totals)}.`;
  root.setAttribute("aria-label", label);
  root.append(svg("line", { x1: left, y1: H - bottom, x2: W, y2: H - bottom, class: "axis" }));
  const yMax = svg("text", { x: left - 4, y: top + 8, "text-anchor": "end", class: "tick" });
  yMax.textContent = String(max);
  const y0 = svg("text", { x: left - 4, y: H - bottom, "text-anchor": "end", class: "tick" });
  y0.textContent = "0";
  const xl = svg("text", { x: left, y: H - 4, class: "tick" });
  xl.textContent = `${activity.minutes} min ago`;
  const xr = svg("text", { x: W, y: H - 4, "text-anchor": "end", class: "tick" });
  xr.textContent = "now";
  root.append(yMax, y0, xl, xr);
  mins.forEach((m, i) => {
    let y = H - bottom;
    const g = svg("g", {});
    const title = svg("title", {});
    title.textContent = `${new Date(m.start).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}: ` +
      TYPES.map((t) => `${t} ${m.counts[t]}`).join(", ");
    g.append(title);
    for (const t of TYPES) {
      const n = m.counts[t];
      if (!n) continue;
      const h = n * scale;
      y -= h;
      g.append(svg("rect", { x: left + i * bw + 0.5, y, width: Math.max(1, bw - 1), height: h, class: `bar ${t}` }));
    }
    root.append(g);
  });
  $("chart").replaceChildren(root);
  $("chart-caption").textContent = activity.truncated
    ? "By source type, oldest minute on the left. Too many events to count them all: the newest minutes are incomplete."
    : "By source type, oldest minute on the left.";
  const legend = TYPES.map((t) => {
    const li = document.createElement("li");
    li.append(text("span", "", `swatch ${t}`), text("span", t));
    return li;
  });
  $("chart-legend").replaceChildren(...legend);
}

async function refresh() {
  try {
    const [sources, stats, activity] = await Promise.all([
      api("/v1/admin/sources"),
      api("/v1/admin/stats"),
      api("/v1/admin/activity?minutes=60"),
    ]);
    document.body.classList.add("authed");
    setKeyStatus("Key accepted. Refreshing every 5 s.", false);
    renderSources(sources.sources);
    renderStats(stats, activity);
    renderChart(activity);
  } catch (e) {
    if (e instanceof KeyError) return;
    setKeyStatus(`Could not refresh: ${e.message}. Retrying.`, true);
  }
  if (key) refreshTimer = setTimeout(refresh, REFRESH_MS);
}

function stopRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = null;
}

// ---------- live stream ----------

// `gen` names the current connection loop: a loop that was replaced (new
// filter, pause, new key) notices it and stops instead of reconnecting.
const live = { abort: null, lastId: null, paused: false, query: "", gen: 0 };

function liveStatus(msg, bad) {
  $("live-status").textContent = msg;
  $("live-status").classList.toggle("bad", !!bad);
}

function filterQuery() {
  const form = new FormData($("live-form"));
  const q = new URLSearchParams();
  for (const name of ["source", "source_type", "tag", "keyword"]) {
    for (const v of String(form.get(name) || "").split(/\s+/)) if (v) q.append(name, v);
  }
  return q.toString();
}

function addEvent(type, ev) {
  const li = document.createElement("li");
  li.dataset.id = ev.id;
  const head = document.createElement("div");
  head.className = "ev-head";
  head.append(text("span", type, `badge ${type}`), text("span", ev.source_id, "ev-source"));
  const t = document.createElement("time");
  t.dateTime = ev.emitted_at;
  t.textContent = new Date(ev.emitted_at).toLocaleTimeString();
  head.append(t);
  li.append(head);
  const a = document.createElement("a");
  a.href = /^https?:\/\//.test(ev.url) ? ev.url : "#";
  a.rel = "noopener noreferrer";
  a.target = "_blank";
  a.textContent = ev.title || ev.url;
  a.className = "ev-title";
  li.append(a);
  const list = $("live-list");
  list.prepend(li);
  while (list.children.length > LIVE_MAX) list.lastElementChild.remove();
}

// Parses the stream's SSE frames (blank-line separated; id-only frames are
// checkpoints that only move the resume position).
function handleFrame(frame) {
  let id = null, type = "message", data = null;
  for (const line of frame.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "id") id = value;
    else if (field === "event") type = value;
    else if (field === "data") data = data === null ? value : `${data}\n${value}`;
  }
  if (type === "error" && data) {
    const p = JSON.parse(data);
    live.lastId = null;
    throw new Error(`${p.title}: ${p.detail}`);
  }
  if (id) live.lastId = id;
  if (data) addEvent(type, JSON.parse(data));
}

async function runLive() {
  const ctrl = new AbortController();
  live.abort = ctrl;
  const headers = { "X-API-Key": key };
  if (live.lastId) headers["Last-Event-ID"] = live.lastId;
  liveStatus("Connecting…");
  const res = await fetch(`/v1/stream${live.query ? "?" + live.query : ""}`, {
    headers, signal: ctrl.signal, cache: "no-store",
  });
  if (res.status === 403) {
    // An admin key without `stream:read` still shows everything else.
    const p = await res.clone().json().catch(() => ({}));
    if (String(p.type).endsWith("/missing-scope")) {
      liveStatus("The live view needs a key that also has the stream:read scope (livestrom apikey update NAME --scopes admin,stream:read).", true);
      return "stop";
    }
  }
  if (res.status === 401 || res.status === 403) await refuse(res);
  if (res.status === 410) {
    live.lastId = null;
    throw new Error("resume position expired; continuing from now");
  }
  if (res.status === 400) {
    const msg = await problemText(res);
    liveStatus(`Filter refused (400): ${msg}`, true);
    return "stop";
  }
  if (!res.ok) throw new Error(`${res.status} ${await problemText(res)}`);
  liveStatus(live.query ? `Live, filtered: ${decodeURIComponent(live.query)}` : "Live: every event.");
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const frame = buf.slice(0, end);
      buf = buf.slice(end + 2);
      handleFrame(frame);
    }
  }
  throw new Error("the server ended the stream");
}

async function liveLoop(gen) {
  while (key && !live.paused && live.gen === gen) {
    try {
      if ((await runLive()) === "stop" || live.paused) break;
    } catch (e) {
      if (e instanceof KeyError || e.name === "AbortError" || live.paused || !key || live.gen !== gen) break;
      liveStatus(`Reconnecting in 2 s (${e.message})…`, true);
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

function stopLive(msg) {
  live.gen += 1;
  if (live.abort) live.abort.abort();
  live.abort = null;
  if (msg) liveStatus(msg);
}

function syncToggle() {
  const b = $("live-toggle");
  b.textContent = live.paused ? "Resume" : "Pause";
  b.setAttribute("aria-pressed", String(live.paused));
}

function startLive() {
  stopLive();
  if (!key || live.paused) return;
  liveLoop(live.gen);
}

$("live-form").addEventListener("submit", (e) => {
  e.preventDefault();
  live.query = filterQuery();
  live.lastId = null; // a new filter starts from now
  $("live-list").replaceChildren();
  live.paused = false;
  syncToggle();
  startLive();
});

$("live-toggle").addEventListener("click", () => {
  live.paused = !live.paused;
  syncToggle();
  if (live.paused) {
    stopLive("Paused. Resuming picks up every event since the last one shown.");
  } else {
    startLive();
  }
});

$("live-clear").addEventListener("click", () => $("live-list").replaceChildren());

// ---------- start ----------

function start() {
  stopRefresh();
  setKeyStatus("Checking the key…", false);
  live.query = filterQuery();
  refresh();
  startLive();
}

if (key) start();
else $("key").focus();
