/* MiniObserv dashboard: vanilla JavaScript and hand-written SVG charts, no external requests.
 *
 * Every REFRESH_MS it reloads hosts, the selected host's charts, alerts and log lines. A
 * failed refresh shows a banner and the next one is scheduled all the same, so the page
 * recovers by itself when the server is back. A 401 asks for a read token, kept in
 * sessionStorage: for this tab only. A token in the URL fragment (#token=…, the link that
 * `miniobserv demo` and `serve` print) is kept the same way and removed from the address bar
 * at once; the fragment never reaches the server.
 */
"use strict";

// Every 10 s; ``?refresh=2`` (seconds, at least 1) changes it, e.g. for tests and wall screens.
const REFRESH_MS = Math.max(1, Number(new URLSearchParams(location.search).get("refresh")) || 10)
  * 1000;
const TOKEN_KEY = "miniobserv.token";
const WINDOWS = [  // window, its length in seconds, the bucket its charts use
  {name: "15m", seconds: 900, bucket: "10s"},
  {name: "1h", seconds: 3600, bucket: "1m"},
  {name: "6h", seconds: 21600, bucket: "5m"},
  {name: "24h", seconds: 86400, bucket: "15m"},
  {name: "7d", seconds: 604800, bucket: "1h"},
];
const BUCKET_SECONDS = {"10s": 10, "1m": 60, "5m": 300, "15m": 900, "1h": 3600};
const COLORS = ["#2f6fed", "#25a18e", "#e07a16", "#9b51e0", "#d64545", "#6b8e23", "#c2185b",
                "#00838f"];
const ORDER = ["cpu.", "mem.", "swap.", "load.", "disk.", "net.", "system.", "custom."];
const SVG_NS = "http://www.w3.org/2000/svg";
const W = 520, H = 170, PAD = {left: 62, right: 12, top: 10, bottom: 22};

const state = {host: null, window: "1h", timer: null, generation: 0,
               fleet: [], fleetSort: {key: "host", dir: 1}};
// The fleet table's columns: the newest value of each series /api/v1/dashboard/fleet answers
// (as /api/v1/metrics/latest); a host's disk is its fullest mount.
const FLEET_COLUMNS = [
  {key: "cpu", name: "cpu.usage_pct", label: "core:total"},
  {key: "mem", name: "mem.used_pct"},
  {key: "disk", name: "disk.used_pct"},
];

class AuthError extends Error {}

/* --- small helpers ----------------------------------------------------------------------- */

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

async function api(path, params) {
  const url = params ? `${path}?${params}` : path;
  const headers = {"Accept": "application/json"};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(url, {headers, cache: "no-store"});
  if (response.status === 401) throw new AuthError("a read token is needed");
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(`${path}: ${message}`);
  }
  return response.json();
}

function isoAgo(seconds) {
  return new Date(Date.now() - seconds * 1000).toISOString().replace(/\.\d+Z$/, "Z");
}

function ago(iso) {
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86400)}d ago`;
}

function formatValue(name, value) {
  if (value === null || value === undefined) return "–";
  if (name.endsWith("_pct")) return `${value.toFixed(1)} %`;
  if (name.endsWith("_bytes")) return formatBytes(value);
  if (name.endsWith("_seconds")) return formatSeconds(value);
  const abs = Math.abs(value);
  if (abs >= 1e6) return `${(value / 1e6).toFixed(1)}M`;
  if (abs >= 1e4) return `${(value / 1e3).toFixed(1)}k`;
  return Number.isInteger(value) ? String(value) : value.toFixed(2);
}

function formatBytes(value) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = value, i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function formatSeconds(value) {
  if (value >= 86400) return `${(value / 86400).toFixed(1)} d`;
  if (value >= 3600) return `${(value / 3600).toFixed(1)} h`;
  if (value >= 60) return `${(value / 60).toFixed(1)} min`;
  return `${value.toFixed(0)} s`;
}

function formatTick(date, windowSeconds) {
  const time = date.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
  if (windowSeconds <= 86400) return time;
  return `${date.toLocaleDateString([], {weekday: "short"})} ${time}`;
}

function labelText(labels) {
  const pairs = Object.entries(labels || {}).sort(([a], [b]) => (a < b ? -1 : 1));
  return pairs.map(([k, v]) => `${k}=${v}`).join(",");
}

function currentWindow() { return WINDOWS.find((w) => w.name === state.window) || WINDOWS[1]; }

/* --- state in the URL: #host=web-01&window=1h (and once #token=…) -------------------------- */

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = (params.get("token") || "").trim();
  if (params.has("token")) {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    params.delete("token");  // out of the address bar, the history and any copied link
    const rest = params.toString() ? `#${params}` : "";
    history.replaceState(null, "", `${location.pathname}${location.search}${rest}`);
  }
  if (params.get("host")) state.host = params.get("host");
  if (WINDOWS.some((w) => w.name === params.get("window"))) state.window = params.get("window");
}

function writeHash() {
  const params = new URLSearchParams();
  if (state.host) params.set("host", state.host);
  params.set("window", state.window);
  history.replaceState(null, "", `#${params}`);
}

/* --- refresh loop ------------------------------------------------------------------------- */

function schedule(delay) {
  clearTimeout(state.timer);
  state.timer = setTimeout(refresh, delay);
}

async function refresh() {
  const generation = ++state.generation;
  try {
    await loadEverything(generation);
    if (generation !== state.generation) return;
    $("banner").classList.add("hidden");
    $("token-form").classList.add("hidden");
    $("refreshed").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    if (generation !== state.generation) return;
    if (err instanceof AuthError) {
      showTokenForm();
    } else {
      showBanner(`Cannot refresh: ${err.message}. Retrying every ${REFRESH_MS / 1000} s…`);
    }
  } finally {
    if (generation === state.generation) schedule(REFRESH_MS);  // also after a failure
  }
}

function showBanner(text) {
  const banner = $("banner");
  banner.textContent = text;
  banner.classList.remove("hidden");
  $("refreshed").textContent = "refresh failed";
}

function showTokenForm() {
  $("token-form").classList.remove("hidden");
  $("banner").classList.add("hidden");
  $("refreshed").textContent = "waiting for a token";
  if (sessionStorage.getItem(TOKEN_KEY)) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("token-input").placeholder = "that token was refused; paste another";
  }
}

async function loadEverything(generation) {
  const hosts = await api("/api/v1/hosts");
  if (generation !== state.generation) return;
  $("token-form").classList.add("hidden");  // the token works: no need to wait for the charts
  renderHosts(hosts.hosts);
  const results = await Promise.allSettled([loadFleet(hosts.hosts, generation),
                                            loadCharts(generation), loadAlerts(), loadLogs()]);
  const failed = results.find((r) => r.status === "rejected");
  if (failed) throw failed.reason;
}

/* --- hosts -------------------------------------------------------------------------------- */

function renderHosts(hosts) {
  if (!state.host || !hosts.some((h) => h.host === state.host)) {
    state.host = hosts.length ? hosts[0].host : null;
    writeHash();
  }
  $("host-count").textContent = hosts.length ? `(${hosts.length})` : "";
  const list = $("hosts");
  list.replaceChildren(...hosts.map((h) => {
    const item = el("li", {"class": h.host === state.host ? "selected" : "",
                           "data-host": h.host, "data-status": h.status,
                           "title": `${h.host}: ${h.status}`},
      el("span", {"class": `dot ${h.status}`}),
      el("span", {"class": "name"}, h.host),
      el("span", {"class": "seen"}, `${h.status} · last seen ${ago(h.last_seen)}`));
    item.addEventListener("click", () => selectHost(h.host));
    return item;
  }));
  if (!hosts.length) list.replaceChildren(el("li", {"class": "empty"}, "No host has reported yet."));
}

function selectHost(host) {
  state.host = host;
  writeHash();
  $("charts").replaceChildren();
  refresh();
}

/* --- fleet table: every host's current CPU, memory and disk, sortable ---------------------- */

async function loadFleet(hosts, generation) {
  const answers = await Promise.all(FLEET_COLUMNS.map((column) => {
    const params = new URLSearchParams({name: column.name});
    if (column.label) params.set("label", column.label);
    return api("/api/v1/dashboard/fleet", params);
  }));
  if (generation !== state.generation) return;
  const rows = new Map(hosts.map((h) => [h.host, {host: h.host, status: h.status}]));
  FLEET_COLUMNS.forEach((column, index) => {
    for (const s of answers[index].series) {
      const row = rows.get(s.host) || {host: s.host, status: "ok"};
      row[column.key] = Math.max(row[column.key] ?? -Infinity, s.value);  // fullest mount
      rows.set(s.host, row);
    }
  });
  state.fleet = [...rows.values()];
  renderFleet();
}

function compareFleet(a, b) {
  const {key, dir} = state.fleetSort;
  if (key === "host") return dir * (a.host < b.host ? -1 : a.host > b.host ? 1 : 0);
  const x = a[key], y = b[key];
  if (x === undefined || y === undefined) {  // hosts without a value last, either way
    return (x === undefined) - (y === undefined) || (a.host < b.host ? -1 : 1);
  }
  return dir * (x - y) || (a.host < b.host ? -1 : 1);
}

function renderFleet() {
  const {key, dir} = state.fleetSort;
  for (const button of document.querySelectorAll("#fleet th button")) {
    const sorted = button.dataset.sort === key;
    button.parentElement.setAttribute("aria-sort",
      sorted ? (dir > 0 ? "ascending" : "descending") : "none");
  }
  const rows = [...state.fleet].sort(compareFleet).map((r) => {
    const link = el("a", {"href": `#host=${encodeURIComponent(r.host)}&window=${state.window}`,
                          "class": "host-link"}, r.host);
    link.addEventListener("click", (event) => { event.preventDefault(); selectHost(r.host); });
    return el("tr", {"data-host": r.host, "class": r.host === state.host ? "selected" : ""},
      el("td", {}, el("span", {"class": `dot ${r.status}`}), link),
      ...FLEET_COLUMNS.map((c) => fleetCell(c, r[c.key])));
  });
  $("fleet-rows").replaceChildren(...(rows.length ? rows : [el("tr", {},
    el("td", {"colspan": "4", "class": "empty"}, "No host has reported yet."))]));
}

function fleetCell(column, value) {
  if (value === undefined) return el("td", {"class": "num", "data-value": ""}, "–");
  const level = value >= 90 ? "high" : value >= 75 ? "warn" : "";
  const fill = el("span", {"class": "fill"});
  fill.style.width = `${Math.min(100, Math.max(0, value)).toFixed(1)}%`;  // CSSOM: CSP allows it
  return el("td", {"class": `num ${level}`, "data-value": String(value)},
    el("span", {"class": "value"}, formatValue(column.name, value)),
    el("span", {"class": "bar"}, fill));
}

function sortFleet(key) {
  const same = state.fleetSort.key === key;
  // A first click sorts hosts A→Z, values highest first; a second click reverses.
  state.fleetSort = {key, dir: same ? -state.fleetSort.dir : (key === "host" ? 1 : -1)};
  renderFleet();
}

/* --- charts ------------------------------------------------------------------------------- */

function chartPlans(latest) {
  // One chart per metric name; split by the label that varies (mount, iface, device…);
  // cpu.usage_pct shows the total, not every core.
  const byName = new Map();
  for (const series of latest) {
    if (!byName.has(series.name)) byName.set(series.name, []);
    byName.get(series.name).push(series);
  }
  const plans = [];
  for (const [name, series] of byName) {
    const plan = {name, label: null, groupBy: null, latest: series};
    if (name === "cpu.usage_pct" && series.some((s) => s.labels.core === "total")) {
      plan.label = "core:total";
      plan.latest = series.filter((s) => s.labels.core === "total");
    } else {
      plan.groupBy = varyingKey(series);
    }
    plans.push(plan);
  }
  const rank = (name) => {
    const index = ORDER.findIndex((prefix) => name.startsWith(prefix));
    return index < 0 ? ORDER.length : index;
  };
  return plans.sort((a, b) => rank(a.name) - rank(b.name) || (a.name < b.name ? -1 : 1));
}

function varyingKey(series) {
  const keys = new Set(series.flatMap((s) => Object.keys(s.labels)));
  for (const key of [...keys].sort()) {
    const values = new Set(series.map((s) => s.labels[key]));
    if (values.size > 1) return key;
  }
  return null;
}

async function loadCharts(generation) {
  const host = state.host;
  if (!host) {
    $("host-title").textContent = "No host selected";
    $("host-sub").textContent = "";
    $("charts").replaceChildren(el("div", {"class": "empty"}, "Waiting for data from an agent."));
    return;
  }
  const win = currentWindow();
  const from = isoAgo(win.seconds);
  const to = new Date(Date.now() + 60000).toISOString().replace(/\.\d+Z$/, "Z");
  const latest = await api("/api/v1/dashboard/latest", new URLSearchParams({host, from}));
  const plans = chartPlans(latest.series);
  const answers = await Promise.all(plans.map((plan) => {
    const params = new URLSearchParams({host, name: plan.name, from, to, bucket: win.bucket,
                                        agg: "avg"});
    if (plan.label) params.append("label", plan.label);
    if (plan.groupBy) params.set("group_by", plan.groupBy);
    return api("/api/v1/dashboard/query", params);
  }));
  if (generation !== state.generation || host !== state.host) return;
  $("host-title").textContent = host;
  $("host-sub").textContent = `${plans.length} metrics · last ${win.name} · ${win.bucket} buckets`;
  const cards = plans.map((plan, i) => chartCard(plan, answers[i], win));
  $("charts").replaceChildren(...(cards.length ? cards :
    [el("div", {"class": "empty"}, `No data from ${host} in the last ${win.name}.`)]));
}

function seriesOf(plan, answer) {
  // Each drawn series, with the current value: the NEWEST raw point of that series.
  if (!plan.groupBy) {
    const newest = plan.latest.reduce((a, b) => (a && a.time >= b.time ? a : b), null);
    return [{label: plan.name, points: answer.points || [], current: newest && newest.value}];
  }
  return (answer.series || []).map((s) => {
    const value = s.labels[plan.groupBy];
    const match = plan.latest.filter((l) => l.labels[plan.groupBy] === value)
      .reduce((a, b) => (a && a.time >= b.time ? a : b), null);
    return {label: value, points: s.points, current: match && match.value};
  });
}

function chartCard(plan, answer, win) {
  const series = seriesOf(plan, answer);
  const headline = series.length === 1 ? formatValue(plan.name, series[0].current) : "";
  const title = plan.label ? `${plan.name}{${plan.label.replace(":", "=")}}` : plan.name;
  const card = el("div", {"class": "chart", "data-name": plan.name},
    el("div", {"class": "chart-head"},
      el("span", {"class": "chart-title"}, title),
      el("span", {"class": "chart-value"}, headline)),
    drawChart(plan.name, series, win));
  if (series.length > 1) {
    card.append(el("div", {"class": "legend"}, ...series.map((s, i) => {
      const swatch = el("i");
      swatch.style.background = COLORS[i % COLORS.length];
      return el("span", {}, swatch, `${plan.groupBy}=${s.label} `,
                el("b", {}, formatValue(plan.name, s.current)));
    })));
  }
  return card;
}

function niceTicks(min, max, count) {
  if (min === max) {
    if (min >= 0) { max = min === 0 ? 1 : min * 2; min = 0; } else { min *= 2; max = 0; }
  }
  const raw = (max - min) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  const low = Math.floor(min / step) * step;
  const ticks = [];
  for (let v = low; v < max + step * 0.999; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function axisTicks(name, min, max) {
  // Bytes get ticks at round numbers of their own unit (KiB, MiB…), other values decimal.
  if (!name.endsWith("_bytes")) {
    return niceTicks(min, max, 4).map((v) => ({value: v, label: shortValue(name, v)}));
  }
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let scale = 1, unit = 0;
  while (Math.max(Math.abs(min), Math.abs(max)) / scale >= 1024 && unit < units.length - 1) {
    scale *= 1024;
    unit += 1;
  }
  return niceTicks(min / scale, max / scale, 4)
    .map((v) => ({value: v * scale, label: `${v} ${units[unit]}`}));
}

function shortValue(name, value) {
  if (name.endsWith("_pct")) return `${value}%`;
  if (name.endsWith("_seconds")) return formatSeconds(value);
  return formatValue("", value);
}

function drawChart(name, series, win) {
  const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, role: "img",
                           "aria-label": `${name} over the last ${win.name}`});
  const all = series.flatMap((s) => s.points);
  root.setAttribute("data-points", String(all.length));
  const end = Date.now(), start = end - win.seconds * 1000;
  const plotW = W - PAD.left - PAD.right, plotH = H - PAD.top - PAD.bottom;
  const x = (t) => PAD.left + ((t - start) / (end - start)) * plotW;
  if (!all.length) {
    const text = svg("text", {x: W / 2, y: H / 2, "text-anchor": "middle", "class": "nodata"});
    text.textContent = "no data in this window";
    root.append(text);
    return root;
  }
  let min = Math.min(...all.map((p) => p.value)), max = Math.max(...all.map((p) => p.value));
  if (name.endsWith("_pct")) { min = Math.min(min, 0); max = Math.max(max, 100); }
  else if (min >= 0) min = 0;
  const ticks = axisTicks(name, min, max);
  const lo = ticks[0].value, hi = ticks[ticks.length - 1].value;
  const y = (v) => PAD.top + plotH - ((v - lo) / (hi - lo || 1)) * plotH;
  for (const tick of ticks) {
    root.append(svg("line", {x1: PAD.left, x2: W - PAD.right, y1: y(tick.value),
                             y2: y(tick.value), "class": "gridline"}));
    const label = svg("text", {x: PAD.left - 6, y: y(tick.value) + 3, "text-anchor": "end"});
    label.textContent = tick.label;
    root.append(label);
  }
  for (let i = 0; i <= 4; i += 1) {
    const t = start + ((end - start) * i) / 4;
    const label = svg("text", {x: x(t), y: H - 6,
                               "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle"});
    label.textContent = formatTick(new Date(t), win.seconds);
    root.append(label);
  }
  const gap = 2.5 * BUCKET_SECONDS[win.bucket] * 1000;
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const d = pathOf(s.points, x, y, gap);
    if (series.length === 1 && s.points.length > 1) {
      const first = x(Date.parse(s.points[0].time));
      const last = x(Date.parse(s.points[s.points.length - 1].time));
      root.append(svg("path", {d: `${d} L${last},${y(lo)} L${first},${y(lo)} Z`,
                               "class": "area", fill: color}));
    }
    root.append(svg("path", {d, "class": "line", stroke: color}));
    if (s.points.length === 1) {
      const p = s.points[0];
      root.append(svg("circle", {cx: x(Date.parse(p.time)), cy: y(p.value), r: 2.5,
                                 fill: color}));
    }
  });
  return root;
}

function pathOf(points, x, y, gap) {
  let d = "", previous = null;
  for (const p of points) {
    const t = Date.parse(p.time);
    const command = previous === null || t - previous > gap ? "M" : "L";
    d += `${command}${x(t).toFixed(1)},${y(p.value).toFixed(1)} `;
    previous = t;
  }
  return d.trim();
}

/* --- alerts and logs ---------------------------------------------------------------------- */

async function loadAlerts() {
  const answer = await api("/api/v1/alerts");
  const rows = answer.alerts.map((a) => {
    const labels = labelText({...a.rule.labels, ...a.labels});
    const rule = `${a.rule.name}${labels ? `{${labels}}` : ""} ${a.rule.op} ` +
                 `${a.rule.threshold} for ${a.rule.for}`;
    return el("tr", {"data-state": a.state},
      el("td", {}, el("span", {"class": `pill ${a.state}`}, a.state.replace("_", " "))),
      el("td", {}, a.host),
      el("td", {"class": "rule"}, rule),
      el("td", {}, formatValue(a.rule.name, a.value)),
      el("td", {"title": a.since}, ago(a.since)));
  });
  $("alerts").replaceChildren(...(rows.length ? rows : [el("tr", {},
    el("td", {"colspan": "5", "class": "empty"}, "No alert rules (ALERT_RULES) or no state yet."))]));
}

async function loadLogs() {
  const params = new URLSearchParams({limit: "50"});
  if (state.host) params.set("host", state.host);
  let answer;
  try {
    answer = await api("/api/v1/dashboard/logs", params);
  } catch (err) {
    if (err instanceof AuthError) {  // log search is never public, even with DASHBOARD_AUTH=none
      $("logs").replaceChildren(el("div", {"class": "empty"}, "Log lines need a read token."));
      throw err;
    }
    // The other panels report an unreachable server; this one just stays calm.
    $("logs").replaceChildren(el("div", {"class": "empty"}, "Log lines are unavailable."));
    return;
  }
  $("logs-sub").textContent = state.host ? `from ${state.host}` : "";
  const lines = answer.entries.map((e) => el("div", {"class": "logline"},
    el("span", {"class": "time", "title": e.time}, logTime(e.time)),
    el("span", {"class": `level ${e.level}`}, e.level),
    el("span", {"class": "host", "title": e.path || ""}, e.host),
    el("span", {"class": "msg"}, e.message)));
  $("logs").replaceChildren(...(lines.length ? lines :
    [el("div", {"class": "empty"}, "No log lines yet.")]));
}

function logTime(iso) {
  const date = new Date(iso);
  const time = date.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit",
                                             second: "2-digit"});
  if (date.toDateString() === new Date().toDateString()) return time;
  return `${date.toLocaleDateString([], {month: "short", day: "numeric"})} ${time}`;
}

/* --- start -------------------------------------------------------------------------------- */

function renderWindows() {
  $("windows").replaceChildren(...WINDOWS.map((w) => {
    const button = el("button", {"type": "button", "data-window": w.name,
                                 "class": w.name === state.window ? "active" : ""}, w.name);
    button.addEventListener("click", () => {
      state.window = w.name;
      writeHash();
      renderWindows();
      refresh();
    });
    return button;
  }));
}

function start() {
  readHash();
  renderWindows();
  for (const button of document.querySelectorAll("#fleet th button")) {
    button.addEventListener("click", () => sortFleet(button.dataset.sort));
  }
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-input").value = "";
    refresh();
  });
  window.addEventListener("hashchange", () => {  // a #token=… link pasted into this tab
    if (!new URLSearchParams(location.hash.slice(1)).has("token")) return;
    readHash();
    renderWindows();
    refresh();
  });
  refresh();
}

document.addEventListener("DOMContentLoaded", start);
