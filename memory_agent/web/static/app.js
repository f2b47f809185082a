// The @memory timeline page: search, a trace's timeline, events per type per day.
// Plain JavaScript, no build step, no requests but to this origin. Every value from a report is
// put in the page as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = ["#2f6fed", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#0b7285", "#e67700", "#5c940d", "#862e9c", "#495057"];
const HIDDEN = new Set(["event", "trace_id", "occurred_at", "service"]);
const colorOf = new Map();
let token = "";

function color(type) {
  if (!colorOf.has(type)) colorOf.set(type, COLORS[colorOf.size % COLORS.length]);
  return colorOf.get(type);
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

async function api(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value) query.set(key, value);
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const response = await fetch(path + "?" + query.toString(), { headers });
  const body = await response.json();
  if (response.status === 401) {
    $("token-form").hidden = false;
    throw new Error(body.error);
  }
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function windowParams() {
  const choice = $("window").value;
  if (choice === "custom") {
    const local = (input) => (input.value ? new Date(input.value).toISOString() : "");
    return { since: local($("since")), until: local($("until")) };
  }
  if (!choice) return {};
  return { since: new Date(Date.now() - Number(choice) * 1000).toISOString() };
}

function filterParams() {
  const out = {};
  for (const name of ["event", "service", "from_handle", "trace_id"]) out[name] = $("f-" + name).value.trim();
  return out;
}

function fieldChips(payload) {
  const cell = el("td");
  for (const [key, value] of Object.entries(payload || {})) {
    if (HIDDEN.has(key) || value === null) continue;
    const text = typeof value === "string" ? value : JSON.stringify(value);
    cell.append(el("span", { class: "chip" }, el("b", { text: key + " " }), text.length > 200 ? text.slice(0, 199) + "…" : text));
  }
  return cell;
}

function when(iso) {
  return iso.replace("T", " ").replace("Z", "");
}

function traceButton(traceId) {
  const button = el("button", { type: "button", class: "trace-link", text: traceId });
  button.addEventListener("click", () => showTimeline(traceId));
  return button;
}

function renderResults(body, query) {
  const tbody = $("results").querySelector("tbody");
  tbody.replaceChildren();
  $("answer").hidden = !body.answer;
  $("answer").textContent = body.answer || "";
  const shown = body.events.length;
  $("results-title").textContent = query
    ? `Results (${body.intent}): ${shown} of ${body.total}`
    : `Newest events: ${shown} of ${body.total}`;
  for (const e of body.events) {
    const row = el("tr", { class: "result", "data-id": String(e.id) },
      el("td", { class: "num", text: "#" + e.id }),
      el("td", { class: "when", text: when(e.occurred_at) }),
      el("td", { class: "handle", text: "@" + e.from_handle }),
      el("td", { text: e.event }),
      el("td", { text: (e.payload && typeof e.payload.service === "string") ? e.payload.service : "" }),
      el("td", {}, traceButton(e.trace_id)),
      fieldChips(e.payload));
    tbody.append(row);
  }
}

async function showTimeline(traceId) {
  try {
    const body = await api("/api/timeline", { trace_id: traceId });
    $("timeline-title").textContent = `Trace ${body.trace_id}: ${body.total} event${body.total === 1 ? "" : "s"}`;
    $("timeline-hint").hidden = true;
    const list = $("timeline");
    list.replaceChildren();
    for (const e of body.events) {
      const item = el("li", { class: "tl-item", "data-id": String(e.id) },
        el("div", { class: "tl-time", text: when(e.occurred_at) }),
        el("div", { class: "tl-head" }, el("span", { class: "handle", text: "@" + e.from_handle }), " reported " + e.event),
        el("div", {}, ...Array.from(fieldChips(e.payload).childNodes)));
      item.style.setProperty("--dot", color(e.event));
      list.append(item);
    }
  } catch (error) {
    showError(String(error.message || error));
  }
}

function renderChart(body) {
  const box = $("chart");
  box.replaceChildren();
  $("legend").replaceChildren();
  const days = body.days;
  const types = Object.keys(body.series).sort();
  if (!days.length || !types.length) {
    box.append(el("p", { class: "hint", text: "No events in this window." }));
    return;
  }
  const totals = days.map((_, i) => types.reduce((sum, t) => sum + body.series[t][i], 0));
  const top = Math.max(1, ...totals);
  const width = 600, height = 150, base = 130, slot = width / days.length;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img",
                             "aria-label": "events per type per day" });
  days.forEach((day, i) => {
    let y = base;
    for (const type of types) {
      const n = body.series[type][i];
      if (!n) continue;
      const h = (n / top) * (base - 8);
      y -= h;
      const bar = svg("rect", { x: i * slot + slot * 0.15, y, width: slot * 0.7, height: h, fill: color(type),
                                "data-type": type, "data-day": day, "data-count": n });
      const title = svg("title", {});
      title.textContent = `${day}: ${n} ${type}`;
      bar.append(title);
      chart.append(bar);
    }
    if (days.length <= 16 || i % Math.ceil(days.length / 8) === 0) {
      const label = svg("text", { x: i * slot + slot / 2, y: height - 4, "text-anchor": "middle", class: "axis" });
      label.textContent = day.slice(5);
      chart.append(label);
    }
  });
  box.append(chart);
  for (const type of types) {
    const swatch = el("span");
    swatch.style.setProperty("background", color(type));
    $("legend").append(el("li", {}, swatch, `${type} (${body.series[type].reduce((a, b) => a + b, 0)})`));
  }
}

async function search() {
  showError("");
  const query = $("q").value.trim();
  const params = { q: query, ...windowParams(), ...filterParams() };
  try {
    const [results, daily] = await Promise.all([
      api("/api/search", params),
      api("/api/daily", { ...windowParams(), ...filterParams() }),
    ]);
    renderResults(results, query);
    renderChart(daily);
  } catch (error) {
    showError(String(error.message || error));
  }
}

async function refreshStatus() {
  try {
    const response = await fetch("/readyz");
    const body = await response.json();
    const badge = $("status");
    badge.className = "badge " + (body.ready ? "ready" : "not-ready");
    badge.textContent = body.ready ? `ready · ${body.checks.store.detail} · ${body.checks.index.detail}`
                                   : `not ready (${body.phase})`;
  } catch (error) {
    $("status").textContent = "unreachable";
  }
}

function init() {
  const url = new URL(window.location.href);
  token = url.searchParams.get("token") || sessionStorage.getItem("memory-token") || "";
  if (url.searchParams.has("token")) {
    sessionStorage.setItem("memory-token", token);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search);  // the token leaves the address bar
  }
  $("search").addEventListener("submit", (event) => { event.preventDefault(); search(); });
  $("window").addEventListener("change", () => { $("custom").hidden = $("window").value !== "custom"; });
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("memory-token", token);
    $("token-form").hidden = true;
    search();
  });
  refreshStatus();
  setInterval(refreshStatus, 10000);
  search();
}

init();
