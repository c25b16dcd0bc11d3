// The operator dashboard: GET /api/analytics and /api/insights/unanswered drawn with Chart.js
// (vendored: chart.umd.min.js, MIT, chart.js.LICENSE.md). The API key stays in this tab's
// sessionStorage; every text from the server is set with textContent, never as HTML.
"use strict";

const KEY_STORAGE = "voicebot.dashboard.key";
const COLORS = ["#2f5fd0", "#e0702f", "#2e9d5b", "#b43fa8", "#c9a227", "#20a4b8", "#d2455b", "#6b7385", "#7a5cd6", "#7fae32"];
const $ = (id) => document.getElementById(id);
const charts = {};
let lastAnalytics = null;
let defaultLanguage = "en";

function key() { return sessionStorage.getItem(KEY_STORAGE); }

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...(options.headers || {}), Authorization: `Bearer ${key()}` } });
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : response.statusText;
    const error = new Error(`${response.status}: ${detail}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function period() {
  const choice = $("period").value;
  if (choice === "custom") {
    const from = Date.parse($("from").value) / 1000, to = Date.parse($("to").value) / 1000;
    if (!(from < to)) throw new Error("choose a 'from' before 'to'");
    return { from, to };
  }
  const to = Date.now() / 1000;
  return { from: to - Number(choice), to };
}

function query(extra = {}) {
  const { from, to } = period();
  const params = new URLSearchParams({ from: String(from), to: String(to), ...extra });
  if ($("tenant").value) params.set("tenant", $("tenant").value);
  return params;
}

function label(at, span) {
  const date = new Date(at * 1000);
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return span <= 86400 ? time : `${date.toLocaleDateString([], { month: "2-digit", day: "2-digit" })} ${time}`;
}

function draw(id, config) {
  const canvas = $(id);
  if (charts[id]) charts[id].destroy();
  charts[id] = new Chart(canvas, { ...config, options: { animation: false, responsive: true, maintainAspectRatio: false, ...(config.options || {}) } });
  // What a test (or a curious operator) can read without parsing pixels.
  const values = config.data.datasets.flatMap((d) => d.data).filter((v) => typeof v === "number");
  canvas.dataset.points = String(values.reduce((a, b) => a + b, 0));
  canvas.dataset.labels = config.data.labels.join("|");
}

function series(name, data, color, extra = {}) {
  return { label: name, data, borderColor: color, backgroundColor: color, spanGaps: true, pointRadius: 2, ...extra };
}

function render(a) {
  const span = a.until - a.since;
  const labels = a.buckets.map((at) => label(at, span));
  draw("chart-volume", { type: "line", data: { labels, datasets: [
    series("conversations started", a.sessions, COLORS[0]), series("turns", a.turns, COLORS[1])] } });
  const percentile = $("percentile").value;
  $("percentile-name").textContent = percentile;
  const stages = Object.keys(a.latency).sort((x, y) => (x === "turn") - (y === "turn") || x.localeCompare(y));
  draw("chart-latency", { type: "line", data: { labels, datasets: stages.map((stage, i) =>
    series(stage, a.latency[stage][percentile], COLORS[i % COLORS.length], stage === "turn" ? { borderWidth: 3 } : {})) } });
  const pie = (id, entries) => draw(id, { type: "doughnut", data: { labels: entries.map((e) => e[0]),
    datasets: [{ data: entries.map((e) => e[1]), backgroundColor: entries.map((_, i) => COLORS[i % COLORS.length]) }] } });
  pie("chart-languages", Object.entries(a.languages));
  draw("chart-intents", { type: "bar", data: { labels: Object.keys(a.intents), datasets: [
    { label: "turns", data: Object.values(a.intents), backgroundColor: COLORS[0] }] }, options: { indexAxis: "y", plugins: { legend: { display: false } } } });
  pie("chart-containment", [["contained", a.containment.contained], ["handed off", a.containment.handed_off]]);
  draw("chart-handoffs", { type: "bar", data: { labels: Object.keys(a.handoffs), datasets: [
    { label: "hand-offs", data: Object.values(a.handoffs), backgroundColor: COLORS[1] }] }, options: { plugins: { legend: { display: false } } } });
  const stars = ["1", "2", "3", "4", "5"];
  draw("chart-satisfaction", { type: "bar", data: { labels: [...stars.map((s) => `${s}★`), "thumbs up", "thumbs down"], datasets: [
    { label: "ratings", data: [...stars.map((s) => a.satisfaction.ratings[s] || 0), a.satisfaction.thumbs_up, a.satisfaction.thumbs_down],
      backgroundColor: [...stars.map(() => COLORS[4]), COLORS[2], COLORS[6]] }] }, options: { plugins: { legend: { display: false } } } });
  draw("chart-sentiment", { type: "line", data: { labels, datasets: [series("mean sentiment", a.sentiment, COLORS[2])] },
    options: { scales: { y: { min: -1, max: 1 } } } });
  $("sum-sessions").textContent = String(a.sessions.reduce((x, y) => x + y, 0));
  $("sum-turns").textContent = String(a.turns.reduce((x, y) => x + y, 0));
  $("sum-containment").textContent = a.containment.rate === null ? "–" : `${Math.round(a.containment.rate * 100)} %`;
  $("sum-rating").textContent = a.satisfaction.mean_rating === null ? "–" : a.satisfaction.mean_rating.toFixed(2);
}

function tenants(list) {
  const select = $("tenant"), chosen = select.value;
  if (select.options.length - 1 === list.length) return;
  select.replaceChildren(new Option("all tenants", ""), ...list.map((t) => new Option(t, t)));
  select.value = chosen;
}

function cell(row, content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content); else td.textContent = content;
  row.append(td);
}

async function loadTopics() {
  const body = $("topics");
  try {
    const found = await api(`/api/insights/unanswered?${query()}`);
    $("unanswered-note").textContent = `${found.turns} unanswered turn(s), ${found.topics.length} recurring topic(s); messages compared by ${found.method}.`;
    body.replaceChildren(...found.topics.map((topic) => {
      const row = document.createElement("tr");
      row.dataset.testid = "topic";
      row.dataset.topic = topic.id;
      cell(row, String(topic.size));
      cell(row, Object.entries(topic.languages).map(([l, n]) => `${l} ${n}`).join(", "));
      cell(row, Object.entries(topic.reasons).map(([r, n]) => `${r} ${n}`).join(", "));
      const list = document.createElement("ul");
      topic.examples.forEach((text) => { const item = document.createElement("li"); item.textContent = text; list.append(item); });
      cell(row, list);
      cell(row, new Date(topic.last_seen * 1000).toLocaleString());
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "Draft intent";
      button.dataset.testid = "draft-topic";
      button.addEventListener("click", () => openDraft(topic));
      cell(row, button);
      return row;
    }));
  } catch (error) {
    body.replaceChildren();
    $("unanswered-note").textContent = error.status === 403 ? "This key may not read transcripts (transcripts:read)." : String(error.message);
  }
}

function openDraft(topic) {
  $("draft").hidden = false;
  $("draft").dataset.topic = topic.id;
  $("draft-topic").textContent = topic.id;
  $("draft-language").textContent = defaultLanguage;
  $("draft-result").textContent = "";
  $("reload").hidden = true;
  $("draft-name").focus();
}

async function submitDraft(event) {
  event.preventDefault();
  const { from, to } = period();
  const body = { topic_id: $("draft").dataset.topic, kind: "intent", name: $("draft-name").value,
                 answer: { [defaultLanguage]: $("draft-answer").value }, from, to };
  const tenant = $("tenant").value ? `?tenant=${encodeURIComponent($("tenant").value)}` : "";
  try {
    const written = await api(`/api/insights/proposals${tenant}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    $("draft-result").textContent = `Written: ${written.file}. ${written.warnings.length} warning(s). Review it, then reload.`;
    $("reload").hidden = false;
  } catch (error) {
    $("draft-result").textContent = `Not written: ${error.message}`;
  }
}

async function reloadDomain() {
  const tenant = $("tenant").value ? `?tenant=${encodeURIComponent($("tenant").value)}` : "";
  try {
    const domain = await api(`/api/domain/reload${tenant}`, { method: "POST" });
    $("draft-result").textContent = `Reloaded: ${domain.intents.length} intents are live.`;
  } catch (error) {
    $("draft-result").textContent = `Reload refused: ${error.message}`;
  }
}

async function refresh() {
  $("status").textContent = "loading…";
  try {
    const a = await api(`/api/analytics?${query()}`);
    lastAnalytics = a;
    tenants(a.tenants);
    render(a);
    $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = String(Date.now());
  } catch (error) {
    if (error.status === 401) return signOut("That key is not accepted.");
    $("status").textContent = error.status === 403 ? "This key lacks analytics:read." : String(error.message);
  }
  await loadTopics();
}

function signedIn() {
  $("sign-in").hidden = true;
  $("board").hidden = false;
  $("sign-out").hidden = false;
  refresh();
  api("/api/domain").then((d) => { defaultLanguage = d.languages[0] || "en"; }).catch(() => {});
}

function signOut(message = "") {
  sessionStorage.removeItem(KEY_STORAGE);
  $("board").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message;
}

document.addEventListener("DOMContentLoaded", () => {
  Chart.defaults.animation = false;
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("key").value.trim());
    $("key").value = "";
    signedIn();
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
  ["tenant", "period", "from", "to"].forEach((id) => $(id).addEventListener("change", () => {
    $("filters").classList.toggle("custom-period", $("period").value === "custom");
    if ($("period").value !== "custom" || ($("from").value && $("to").value)) refresh();
  }));
  $("percentile").addEventListener("change", () => lastAnalytics && render(lastAnalytics));
  $("draft").addEventListener("submit", submitDraft);
  $("draft-cancel").addEventListener("click", () => { $("draft").hidden = true; });
  $("reload").addEventListener("click", reloadDomain);
  if (key()) signedIn();
});
