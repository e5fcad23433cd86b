// perceptd console: one page, no build step, no third-party code.  Live numbers and messages
// arrive over Server-Sent Events (/api/stream); state-changing calls are POSTs with the CSRF
// token the daemon rendered into the page.
"use strict";
const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const TL_MIN = parseInt(document.querySelector('meta[name="timeline-minutes"]').content, 10) || 30;
const $ = (sel) => document.querySelector(sel);
const MAX_MSGS = 2000;
const msgs = [];            // recent published event/command/speech messages (parsed)
const active = new Map();   // event name -> its last start/update message
let eventNames = [];

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}
const fmt = (v, d = 2) => (v === null || v === undefined) ? "-" : Number(v).toFixed(d);
function rows(table, head, data) {
  table.replaceChildren(el("tr", {}, ...head.map((h) => el("th", {}, h))),
    ...data.map((r) => el("tr", {}, ...r.map((c) => c instanceof Node ? el("td", {}, c) : el("td", {}, c)))));
}
async function post(url, body) {
  const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json",
    "X-CSRF-Token": CSRF}, body: JSON.stringify(body), credentials: "same-origin"});
  return [r.status, await r.json()];
}

// ---------------------------------------------------------------- views
for (const b of document.querySelectorAll("nav button")) {
  b.addEventListener("click", () => show(b.dataset.view));
}
function show(view) {
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("active", b.dataset.view === view);
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + view;
  if (view === "timeline") drawTimeline();
  if (view === "samples") loadSamples();
  if (view === "health") loadHealth();
}

// ---------------------------------------------------------------- live
function weights(mods) {
  const out = el("span");
  for (const [name, m] of Object.entries(mods || {})) {
    const top = (m.top || []).slice(0, 2).map(([l, p]) => `${l} ${fmt(p)}`).join(", ");
    out.append(el("span", {class: "w", title: `modality score ${fmt(m.score)}`},
      el("span", {class: "bar", style: `width:${Math.round(60 * m.weight)}px`}),
      `${name} ${fmt(m.weight)}`, top ? ` (${top})` : ""));
  }
  return out;
}
function describe(m) {
  if (m.topic.startsWith("event.")) return `${m.event} ${m.phase} ${fmt(m.score)}`;
  if (m.topic === "command") return `command "${m.text}" -> ${m.accepted ? m.event : "no event"}`;
  if (m.topic === "speech") return m.text === null || m.text === undefined ? "speech segment" : `heard "${m.text}"`;
  return m.topic;
}
function addMessage(m) {
  msgs.push(m);
  if (msgs.length > MAX_MSGS) msgs.shift();
  if (m.topic.startsWith("event.")) {
    if (m.phase === "end") active.delete(m.event); else active.set(m.event, m);
    drawActive();
  }
  const li = el("li", {class: "msg", "data-topic": m.topic, onclick: () => showDetail(m)},
    el("span", {class: "muted"}, m.wall_time.slice(11, 19) + " "), describe(m), " ",
    m.topic.startsWith("event.") ? weights(m.modalities) : "");
  const list = $("#events");
  list.prepend(li);
  while (list.children.length > 200) list.lastChild.remove();
  if (!$("#view-timeline").hidden) drawTimeline();
}
function drawActive() {
  const box = $("#active");
  if (!active.size) { box.replaceChildren(el("p", {class: "muted"}, "none")); return; }
  box.replaceChildren(...[...active.values()].map((m) => el("div", {class: "ev", "data-event": m.event},
    el("strong", {}, m.event), el("span", {}, fmt(m.score)), weights(m.modalities))));
}
// camera thumbnails: fetched (and encoded by the daemon) only while this view is on screen
const THUMB_MS = 500;
function drawThumbs(cams) {
  const box = $("#thumbs");
  const have = [...box.querySelectorAll("img.thumb")].map((i) => i.dataset.camera);
  if (have.join("|") === cams.join("|")) return;
  if (!cams.length) { box.replaceChildren(el("p", {class: "muted"}, "no camera")); return; }
  box.replaceChildren(...cams.map((c) => el("figure", {class: "cam"},
    el("img", {class: "thumb", "data-camera": c, alt: c, width: "320"}), el("figcaption", {}, c))));
  refreshThumbs();
}
function refreshThumbs() {
  if (document.hidden || $("#view-live").hidden) return;
  for (const img of document.querySelectorAll("img.thumb")) {
    if (img.dataset.loading) continue;
    img.dataset.loading = "1";
    const next = new Image();
    next.onload = () => { img.src = next.src; delete img.dataset.loading; };
    next.onerror = () => { delete img.dataset.loading; };
    next.src = `/api/thumb/${encodeURIComponent(img.dataset.camera)}?t=${Date.now()}`;
  }
}
setInterval(refreshThumbs, THUMB_MS);
function drawLive(s) {
  $("#model").textContent = s.model_version ? `model ${s.model_version} · ${s.state}` : s.state;
  if (!s.sources) return;
  const levels = s.audio_levels || {};
  rows($("#sources"), ["source", "kind", "state", "captured", "reconnects", "level"],
    Object.entries(s.sources).map(([k, v]) => [k, v.kind,
      el("span", {class: "state-" + v.state}, v.state), v.captured, v.reconnects,
      k in levels ? meter(levels[k]) : ""]));
  drawThumbs(Object.entries(s.sources).filter(([, v]) => v.kind === "camera").map(([k]) => k));
  rows($("#stages"), ["stage", "fps", "items", "errors"],
    Object.entries(s.stages).map(([k, v]) => [k, fmt(v.fps, 1), v.items, v.errors]));
  rows($("#queues"), ["queue", "depth", "dropped"],
    Object.entries(s.queues).map(([k, v]) => [k, `${v.depth}/${v.maxsize}`, v.dropped]));
  rows($("#latency"), ["topic", "p50 ms", "p99 ms", "n"],
    Object.entries(s.latency_ms).map(([k, v]) => [k, v.p50 ?? "-", v.p99 ?? "-", v.count]));
  const parts = [];
  for (const t of ["vision", "audio"]) {
    const m = (s.latest || {})[t];
    if (m && m.top) parts.push(`${t}: ` + m.top.slice(0, 3).map(([l, p]) => `${l} ${fmt(p)}`).join(", "));
  }
  $("#seeing").textContent = parts.join(" · ");
}

// an audio source's level: -60..0 dBFS as a bar, the figure beside it
function meter(db) {
  const pct = Math.max(0, Math.min(100, (db + 60) * 100 / 60));
  return el("span", {class: "meter", "data-dbfs": db, title: `${fmt(db, 1)} dBFS`},
    el("span", {class: "meter-fill" + (db > -3 ? " hot" : ""), style: `width:${(0.8 * pct).toFixed(0)}px`}),
    el("span", {class: "meter-db"}, `${fmt(db, 0)} dB`));
}

function connect(after) {
  const src = new EventSource("/api/stream?after=" + (after || 0));
  src.onopen = () => { $("#conn").textContent = "live"; $("#conn").className = "badge ok"; };
  src.onerror = () => { $("#conn").textContent = "reconnecting"; $("#conn").className = "badge"; };
  src.addEventListener("live", (e) => drawLive(JSON.parse(e.data)));
  src.addEventListener("msg", (e) => addMessage(JSON.parse(e.data)));
}

// ---------------------------------------------------------------- timeline
function drawTimeline() {
  const now = Date.now(), span = TL_MIN * 60e3, t0 = now - span;
  $("#tl-span").textContent = `last ${TL_MIN} min`;
  const bars = new Map();  // event -> [{start, end, msg}]
  const marks = [];
  for (const m of msgs) {
    const t = Date.parse(m.wall_time);
    if (m.topic.startsWith("event.")) {
      const list = bars.get(m.event) || []; bars.set(m.event, list);
      const open = list.length && list[list.length - 1].end === null ? list[list.length - 1] : null;
      if (m.phase === "start" || !open) list.push({start: t, end: m.phase === "end" ? t : null, msg: m});
      else if (m.phase === "end") open.end = t;
    } else if (m.topic === "command" || (m.topic === "speech" && m.text)) marks.push({t, m});
  }
  const pct = (t) => `${Math.max(0, Math.min(100, 100 * (t - t0) / span))}%`;
  const out = [];
  for (const [name, list] of [...bars.entries()].sort()) {
    const track = el("div", {class: "tl-track"});
    for (const b of list) {
      const end = b.end ?? now;
      if (end < t0) continue;
      track.append(el("div", {class: "tl-bar", "data-event": name, title: describe(b.msg),
        style: `left:${pct(b.start)};width:calc(${pct(end)} - ${pct(b.start)})`,
        onclick: () => showDetail(b.msg)}));
    }
    out.push(el("div", {class: "tl-row"}, el("span", {}, name), track));
  }
  const mtrack = el("div", {class: "tl-track"});
  for (const {t, m} of marks) if (t >= t0) mtrack.append(el("div", {class: "tl-mark", title: describe(m),
    style: `left:${pct(t)}`, onclick: () => showDetail(m)}));
  out.push(el("div", {class: "tl-row"}, el("span", {class: "muted"}, "commands / speech"), mtrack));
  $("#timeline").replaceChildren(...out);
}
function showDetail(m) {
  show("timeline");
  const body = [el("p", {}, el("strong", {}, describe(m)), el("span", {class: "muted"},
    `  ${m.wall_time} · model ${m.model_version} · seq ${m.seq}` + (m.sample_id ? ` · sample ${m.sample_id}` : "")))];
  if (m.modalities) {
    const t = el("table");
    rows(t, ["modality", "weight", "score", "top labels"], Object.entries(m.modalities).map(([k, v]) =>
      [k, fmt(v.weight), fmt(v.score), (v.top || []).map(([l, p]) => `${l} ${fmt(p)}`).join(", ")]));
    body.push(t);
  }
  if (m.snapshot) body.push(snapshotFigure(m.snapshot));
  else if (m.topic.startsWith("event.") && m.phase === "start")
    body.push(el("p", {class: "muted"}, "no snapshot (snapshots are off unless the config keeps them)"));
  $("#detail-body").replaceChildren(...body);
  $("#detail").hidden = false;
}
// the frames current at the event's start, one per camera, from the daemon's snapshot store
function snapshotFigure(id) {
  const box = el("div", {class: "snapshot", "data-snapshot": id}, el("p", {class: "muted"}, `snapshot ${id}`));
  fetch(`/api/snapshot/${encodeURIComponent(id)}`, {credentials: "same-origin"}).then(async (r) => {
    const j = await r.json();
    if (!r.ok) { box.append(el("p", {class: "muted"}, j.error || `snapshot ${id} not available`)); return; }
    for (const c of j.cameras) box.append(el("figure", {class: "cam"},
      el("img", {class: "snap", src: j.images[c], alt: `${c} at ${j.wall_time}`}), el("figcaption", {}, c)));
  }).catch(() => box.append(el("p", {class: "muted"}, "snapshot could not be loaded")));
  return box;
}

// ---------------------------------------------------------------- samples
async function loadSamples() {
  const q = new URLSearchParams({limit: "100"});
  if ($("#f-trigger").value) q.set("trigger", $("#f-trigger").value);
  if ($("#f-event").value) q.set("event", $("#f-event").value);
  const r = await fetch("/api/samples?" + q, {credentials: "same-origin"});
  const data = await r.json();
  if (!data.ok) { $("#s-msg").textContent = data.error; return; }
  if (!eventNames.length) {
    eventNames = data.events;
    for (const sel of [$("#f-event"), $("#bulk-event")]) {
      for (const n of eventNames) if (sel.id !== "f-event" || n !== "none") sel.append(el("option", {}, n));
    }
  }
  const counts = {};
  for (const s of data.samples) for (const [e, v] of Object.entries(s.labels)) if (v) counts[e] = (counts[e] || 0) + 1;
  $("#s-counts").textContent = `${data.samples.length} samples · labelled: ` +
    (Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(", ") || "none");
  rows($("#samples"), ["", "created", "trigger", "event", "score", "seen", "labels", "label as"],
    data.samples.map((s) => [
      el("input", {type: "checkbox", class: "pick", value: s.id}),
      s.created, s.trigger, s.event ?? "-", fmt(s.score), seen(s),
      el("span", {class: "labelled", "data-sample": s.id},
        Object.entries(s.labels).map(([e, v]) => v ? e : "-" + e).join(", ") || "-"),
      el("span", {}, ...eventNames.map((n) => el("button", {class: "lab", "data-sample": s.id, "data-event": n,
        onclick: () => label([s.id], n)}, n)))]));
}
// what a sample saw: its kept frame where raw media is kept, else (on a click) its top labels
function seen(s) {
  const box = el("span", {class: "seen", "data-sample": s.id});
  if ((s.media || "").includes("jpeg"))
    box.append(el("img", {class: "sample-frame", loading: "lazy", alt: s.id,
      src: `/api/samples/${encodeURIComponent(s.id)}/frame.jpg`}));
  box.append(el("button", {class: "what", "data-sample": s.id, onclick: () => sampleDetail(s.id, box)},
    s.modalities || "what it saw"));
  return box;
}
async function sampleDetail(id, box) {
  const r = await fetch(`/api/samples/${encodeURIComponent(id)}`, {credentials: "same-origin"});
  const d = await r.json();
  const lines = d.ok ? Object.entries(d.tops || {}).map(([m, top]) =>
    `${m}: ` + top.slice(0, 3).map(([l, p]) => `${l} ${fmt(p)}`).join(", ")) : [d.error || "not available"];
  if (d.ok && d.text) lines.push(`text: "${d.text}"`);
  if (d.ok) lines.push("scores: " + d.scores.map(([e, v]) => `${e} ${fmt(v)}`).join(", "));
  box.querySelector(".tops")?.remove();
  box.append(el("div", {class: "tops muted"}, ...lines.map((l) => el("div", {}, l))));
}
async function deleteSelected() {
  const ids = [...document.querySelectorAll("input.pick:checked")].map((i) => i.value);
  if (!ids.length || !confirm(`Delete ${ids.length} sample(s)? This cannot be undone.`)) return;
  const [status, data] = await post("/api/samples/delete", {ids});
  $("#s-msg").textContent = data.ok ? `deleted ${data.deleted}` : `refused (${status}): ${data.error}`;
  await loadSamples();
}
async function label(ids, event) {
  const [status, data] = await post("/api/samples/label", {ids, event});
  $("#s-msg").textContent = data.ok ? `labelled ${data.labelled.length} as ${event}` : `refused (${status}): ${data.error || JSON.stringify(data.errors)}`;
  await loadSamples();
}
$("#s-refresh").addEventListener("click", loadSamples);
$("#f-trigger").addEventListener("change", loadSamples);
$("#f-event").addEventListener("change", loadSamples);
$("#bulk-delete").addEventListener("click", deleteSelected);
$("#bulk-apply").addEventListener("click", () => {
  const ids = [...document.querySelectorAll("input.pick:checked")].map((i) => i.value);
  if (ids.length) label(ids, $("#bulk-event").value);
});

// ---------------------------------------------------------------- teach
$("#try-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("#try-text").value.trim();
  if (!text) return;
  $("#try-result").textContent = "scoring ...";
  const [status, r] = await post("/api/try", {text});
  if (!r.ok) { $("#try-result").textContent = `refused (${status}): ${r.error}`; return; }
  if (r.score === null) { $("#try-result").textContent = r.detail; return; }
  const t = el("table");
  rows(t, ["modality", "weight", "score", "cosine", "top labels"], Object.entries(r.modalities).map(([k, v]) =>
    [k, fmt(v.weight), fmt(v.score), fmt(v.cosine), v.top.map(([l, p]) => `${l} ${fmt(p)}`).join(", ")]));
  $("#try-result").replaceChildren(el("p", {}, el("span", {class: "score", id: "try-score"}, fmt(r.score, 3)),
    el("span", {class: "muted"}, `  ${r.fires ? "would fire" : "would not fire"} at threshold ${r.threshold_on}` +
      (r.camera ? ` · ${r.camera}` : "") + ` · model ${r.model_version}`)), t);
});

// ---------------------------------------------------------------- retrain
let rtTimer = null, rtShown = null;
function rtReport(st) {
  const r = st.report;
  if (!r) { $("#rt-report").replaceChildren(); rtShown = null; return; }
  const key = `${st.job}:${r.promoted}`;
  if (rtShown === key) return;
  rtShown = key;
  const rules = el("table", {id: "rt-rules"});
  rows(rules, ["", "rule", "detail"], (r.rules || []).map((x) =>
    [el("span", {class: x.passed ? "state-up" : "state-down"}, x.passed ? "ok" : "FAIL"), x.name, x.detail]));
  const ev = el("table");
  rows(ev, ["event", "F1 old", "F1 new"], Object.entries(r.per_event || {}).map(([n, e]) =>
    [n, fmt(e.old.f1, 3), fmt(e.new.f1, 3)]));
  const kids = [el("p", {id: "rt-verdict", "data-passed": String(r.passed), "data-version": r.bundle_version || ""},
    el("b", {}, r.passed ? "gate PASSED" : "gate REFUSED"), ` · ${r.bundle_version} (from ${r.base_version})`,
    el("br"), el("span", {class: "muted"}, r.outcome || "")), rules, ev];
  if (st.png) kids.push(el("img", {id: "rt-png", src: st.png, alt: "gate report", style: "max-width:100%"}));
  $("#rt-report").replaceChildren(...kids);
}
function rtRender(st) {
  $("#rt-state").textContent = st.state;
  $("#rt-state").className = "badge state-" + st.state;
  $("#rt-start").disabled = st.state === "running" || !st.available;
  if (!st.available) $("#rt-msg").textContent = "the daemon was not started from a config file";
  $("#rt-progress").textContent = (st.progress || []).slice(-8).join("\n") || (st.error || "");
  $("#rt-promote").disabled = !(st.state === "finished" && st.report && st.report.passed && !st.report.promoted);
  rtReport(st);
  clearTimeout(rtTimer);
  if (st.state === "running") rtTimer = setTimeout(rtPoll, 1000);
}
async function rtPoll() {
  const r = await fetch("/api/retrain", {credentials: "same-origin"});
  rtRender(await r.json());
}
$("#rt-start").addEventListener("click", async () => {
  $("#rt-msg").textContent = "";
  const [status, r] = await post("/api/retrain/start", {});
  if (!r.ok) { $("#rt-msg").textContent = `refused (${status}): ${r.error}`; return; }
  rtRender(r);
});
async function rtSwitch(action) {
  $("#rt-msg").textContent = `${action} ...`;
  const [status, r] = await post(`/api/retrain/${action}`, {});
  $("#rt-msg").textContent = r.ok ? `${action}: current -> ${r.current} (daemon ${r.daemon})`
    : `${action} refused (${status}): ${r.error || r.detail || r.daemon}`;
  $("#rt-msg").dataset.done = action;
  rtPoll();
}
$("#rt-promote").addEventListener("click", () => rtSwitch("promote"));
$("#rt-rollback").addEventListener("click", () => rtSwitch("rollback"));
for (const b of document.querySelectorAll("nav button[data-view='teach']")) b.addEventListener("click", rtPoll);

// ---------------------------------------------------------------- health
async function loadHealth() {
  const r = await fetch("/api/status", {credentials: "same-origin"});
  const s = await r.json();
  $("#health-json").textContent = JSON.stringify(s, null, 2);
  if (!s.ok) return;
  const h = s.health || {};
  rows($("#health-summary"), ["", ""], [
    ["state", s.state], ["healthy", String(h.healthy)], ["problems", (h.problems || []).join("; ") || "none"],
    ["warnings", (h.warnings || []).join("; ") || "none"], ["model", s.model_version],
    ["uptime", `${fmt(s.uptime_s, 0)} s`], ["published", s.published], ["summary", s.summary],
    ["errors", (s.errors || []).join("; ") || "none"]]);
}
$("#h-refresh").addEventListener("click", loadHealth);

// ---------------------------------------------------------------- start
fetch("/api/recent", {credentials: "same-origin"}).then((r) => r.json()).then((data) => {
  for (const m of data.items) addMessage(m);
  connect(data.after);
}).catch(() => connect(0));
