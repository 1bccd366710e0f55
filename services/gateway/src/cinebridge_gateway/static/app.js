// CineBridge web UI: plain JS, no build step. Every text from the server goes through
// textContent (never innerHTML), so patient names cannot inject markup.
"use strict";

const state = { me: null, csrf: null, room: localStorage.getItem("cb.room") || "", rooms: [],
                study: null, events: null, timer: null, destinations: [] };

// ---------------------------------------------------------------- helpers
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const $ = (sel) => document.querySelector(sel);
const badge = (text) => h("span", { class: `badge b-${String(text).replace(/[^a-z-]/g, "")}` }, text);
const fmtBytes = (n) => n == null ? "–" : n > 1e9 ? `${(n / 1e9).toFixed(1)} GB` : `${(n / 1e6).toFixed(1)} MB`;
const fmtTime = (t) => t ? new Date(t).toLocaleString() : "–";
const dicomDate = (d) => d && d.length === 8 ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : (d || "");

function toast(text, isError) {
  const el = $("#toast");
  el.textContent = text;
  el.className = isError ? "error" : "";
  el.hidden = false;
  clearTimeout(toast.t);
  toast.t = setTimeout(() => { el.hidden = true; }, isError ? 6000 : 3000);
}

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (state.csrf) opts.headers["X-CSRF-Token"] = state.csrf;
  if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  const res = await fetch(path, opts);
  if (res.status === 401 && !path.endsWith("/auth/login")) { state.me = null; route("#/login"); throw new Error("log in again"); }
  if (res.status === 204) return null;
  const data = res.headers.get("content-type")?.includes("json") ? await res.json() : await res.text();
  if (!res.ok) throw new Error(data?.error?.message || `${res.status}`);
  return data;
}
async function attempt(fn, ok) {
  try { const r = await fn(); if (ok) toast(ok); return r; } catch (e) { toast(e.message, true); return undefined; }
}
function field(name, label, value, extra) {
  return h("label", {}, label, h("input", { name, value: value ?? "", ...(extra || {}) }));
}
function formValues(form) { return Object.fromEntries(new FormData(form).entries()); }
// Each render gets a token; a slower render that an event started before the operator moved
// on must not paint over the newer page.
let viewToken = 0;
function viewSetter(token) {
  return (...nodes) => { if (token === viewToken) $("#view").replaceChildren(...nodes); };
}

// ---------------------------------------------------------------- live updates (SSE)
function connectEvents() {
  if (state.events) state.events.close();
  const es = new EventSource("/api/events");
  state.events = es;
  es.onopen = () => { $("#live").textContent = "live"; $("#live").className = "badge b-up"; };
  es.onerror = () => { $("#live").textContent = "offline"; $("#live").className = "badge b-down"; };
  for (const subject of ["cb.evt.media.captured", "cb.evt.capture.state_changed", "cb.evt.instance.created",
                         "cb.evt.conversion.progressed", "cb.evt.conversion.failed",
                         "cb.evt.delivery.state_changed", "cb.evt.study.changed"]) {
    es.addEventListener(subject, (ev) => onLiveEvent(subject, JSON.parse(ev.data)));
  }
  es.addEventListener("cb.evt.service.heartbeat", () => { if (location.hash.startsWith("#/ops")) scheduleRefresh(); });
}
function onLiveEvent(subject, data) {
  if (subject === "cb.evt.conversion.progressed" && state.study && data.study_id === state.study.id) {
    const el = document.getElementById(`progress-${data.media_id}`);
    if (el) el.textContent = `${data.stage} ${Math.round(data.fraction * 100)}%`;
    return;
  }
  // Only pages that show live state re-render: a dialog being filled in is never reset.
  const page = (location.hash || "#/room").split("/")[1] || "room";
  if (page === "ops") scheduleRefresh();
  else if (page !== "room") return;
  else if (subject === "cb.evt.capture.state_changed" && data.room === state.room) scheduleRefresh();
  else if (state.study && data.study_id === state.study.id) scheduleRefresh();
}
function scheduleRefresh() {
  clearTimeout(state.timer);
  state.timer = setTimeout(() => render(), 300);
}

// ---------------------------------------------------------------- routing
const routes = { login: viewLogin, room: viewRoom, local: viewLocal, worklist: viewWorklist,
                 patient: viewPatient, settings: viewSettings, ops: viewOps };
function route(hash) { if (location.hash !== hash) location.hash = hash; else render(); }
async function render() {
  const [, name, arg] = (location.hash || "#/room").split("/");
  if (!state.me && name !== "login") {
    const me = await fetch("/api/v1/auth/me", { credentials: "same-origin" });
    if (!me.ok) return route("#/login");
    setMe(await me.json());
  }
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.id === `nav-${name}`);
  $("#topbar").hidden = !state.me;
  viewToken += 1;
  await (routes[name] || viewRoom)(arg ? decodeURIComponent(arg) : undefined, viewSetter(viewToken));
}
function setMe(me) {
  state.me = me; state.csrf = me.csrf_token;
  $("#whoami").textContent = `${me.username} (${me.role})`;
  if (!state.events) connectEvents();
}

// ---------------------------------------------------------------- login
function viewLogin(arg, setView) {
  $("#topbar").hidden = true;
  const form = h("form", { class: "panel login", id: "login-form", onsubmit: async (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    const me = await attempt(() => api("POST", "/api/v1/auth/login", v));
    if (me) { setMe(me); route("#/room"); }
  } },
  h("h1", {}, "CineBridge"), h("p", { class: "dim" }, "Log in to the video station"),
  field("username", "User", "", { autocomplete: "username", required: true }),
  field("password", "Password", "", { type: "password", autocomplete: "current-password", required: true }),
  h("p", {}, h("button", { class: "primary", type: "submit", id: "login-button" }, "Log in")));
  setView(form);
}

// ---------------------------------------------------------------- room (operator screen)
async function currentStudy(roomInfo) {
  const id = roomInfo?.study_id || localStorage.getItem(`cb.study.${state.room}`);
  if (!id) return null;
  try { return await api("GET", `/api/v1/studies/${id}`); } catch { return null; }
}
async function makeCurrent(study) {
  localStorage.setItem(`cb.study.${state.room}`, study.id);
  if (state.room) {
    await attempt(() => api("PUT", `/api/v1/rooms/${state.room}/study`, { study_id: study.id }));
  }
  route("#/room");
}

async function viewRoom(arg, setView) {
  state.rooms = await api("GET", "/api/v1/rooms");
  if (!state.room && state.rooms.length) state.room = state.rooms[0].room;
  const info = state.rooms.find((r) => r.room === state.room);
  const study = state.study = await currentStudy(info);
  const picker = h("select", { id: "room-picker", onchange: (e) => {
    state.room = e.target.value; localStorage.setItem("cb.room", state.room); render(); } },
  state.rooms.map((r) => h("option", { value: r.room, selected: r.room === state.room }, r.room)));
  const header = h("div", { class: "row" }, h("h1", {}, "Room"), h("div", {}, picker),
    h("span", { class: "spacer" }),
    h("span", { class: "dim" }, "Pedal keys: ", h("span", { class: "kbd" }, "S/F9"), " snapshot · ",
      h("span", { class: "kbd" }, "R/F10"), " record · ", h("span", { class: "kbd" }, "X/F11"), " stop"));
  setView(header, studyCard(study), sourcesPanel(info, study), mediaPanel(study), deliveriesPanel(study));
}

function studyCard(study) {
  const actions = h("div", { class: "row" },
    h("button", { onclick: () => route("#/patient") }, study ? "Edit patient" : "Patient form"),
    h("button", { onclick: () => route("#/worklist") }, "Worklist"),
    h("button", { onclick: () => route("#/local") }, "Local search"),
    h("span", { class: "spacer" }),
    h("button", { class: "primary", id: "save-button", disabled: !study, onclick: () => saveStudy(study) }, "Save"),
    h("button", { id: "forward-button", disabled: !study, onclick: () => forwardDialog(study) }, "Forward"));
  if (!study) {
    return h("section", { class: "panel study-card" }, h("div", { class: "name" }, "No current study"),
      h("p", { class: "dim" }, "Start one from the patient form, the worklist or a local study — or just record: an unscheduled study is created."), actions);
  }
  return h("section", { class: "panel study-card", id: "study-card" },
    h("div", { class: "row" }, h("span", { class: "name", id: "study-patient" }, study.patient_name || "(no name)"),
      badge(study.status || "non-converted"), study.edited ? badge("edited") : null, badge(study.origin)),
    h("div", { class: "dim" }, `ID ${study.patient_id || "–"} · born ${dicomDate(study.patient_birth_date) || "–"} · ${study.patient_sex || "–"} · accession ${study.accession_number || "–"} · ${study.study_description || ""}`),
    h("div", { class: "dim" }, `Study UID ${study.study_instance_uid}`), actions);
}

function sourcesPanel(info, study) {
  if (!info) return h("section", { class: "panel" }, h("h2", {}, "Sources"), h("p", { class: "dim" }, "No capture service reports this room."));
  if (!info.reachable) return h("section", { class: "panel" }, h("h2", {}, "Sources"), h("p", { class: "error-text" }, `Capture for ${info.room} is not reachable: ${info.error || ""}`));
  return h("section", { class: "sources" }, info.sources.map((s) => h("div", { class: "panel source", "data-source": s.name },
    h("div", { class: "row" }, h("h3", {}, s.name), badge(s.state), h("span", { class: "spacer" }),
      h("span", { class: "dim" }, `${s.width || "?"}×${s.height || "?"} · ${s.fps_in ? s.fps_in.toFixed(1) : "–"} fps · ${s.dropped_frames} dropped`)),
    h("img", { class: "preview", alt: `live preview of ${s.name}`, src: s.preview_url }),
    h("div", { class: "row controls" },
      h("button", { class: "primary", "data-action": "snapshot", onclick: () => capture(s.name, "snapshot") }, "Snapshot"),
      s.state === "recording"
        ? h("button", { class: "rec", "data-action": "record_stop", onclick: () => capture(s.name, "record_stop") }, `Stop ${s.recording_seconds ? Math.round(s.recording_seconds) + " s" : ""}`)
        : h("button", { class: "rec", "data-action": "record_start", onclick: () => capture(s.name, "record_start") }, "Record")))));
}

async function capture(source, action) {
  const r = await attempt(() => api("POST", `/api/v1/rooms/${state.room}/sources/${source}/${action}`),
    { snapshot: "Snapshot taken", record_start: "Recording", record_stop: "Recording stopped" }[action]);
  if (r?.study_id) localStorage.setItem(`cb.study.${state.room}`, r.study_id);
  scheduleRefresh();
}

function mediaPanel(study) {
  if (!study) return "";
  const items = study.media.map((m) => h("div", { class: "thumb", "data-media": m.id },
    m.kind === "snapshot" ? h("img", { src: m.content_url, alt: "snapshot", loading: "lazy" })
      : h("video", { src: m.content_url, controls: true, preload: "metadata" }),
    h("div", { class: "meta" }, h("span", {}, m.kind === "recording" ? `${(m.duration_s || 0).toFixed(1)} s` : `${m.width || ""}×${m.height || ""}`),
      h("span", { id: `progress-${m.id}` }, m.state),
      h("button", { class: "small danger", title: "delete", onclick: () => deleteMedia(m) }, "✕"))));
  return h("section", { class: "panel" }, h("h2", {}, `Images and videos (${study.media.length})`),
    items.length ? h("div", { class: "thumbs", id: "thumbs" }, items) : h("p", { class: "dim" }, "Nothing captured yet."));
}
async function deleteMedia(m) {
  if (!confirm(`Delete this ${m.kind}? This cannot be undone.`)) return;
  await attempt(() => api("DELETE", `/api/v1/media/${m.id}?confirm=true`), "Deleted");
  scheduleRefresh();
}

function deliveriesPanel(study) {
  if (!study || !study.deliveries.length) return "";
  return h("section", { class: "panel" }, h("h2", {}, "Delivery"),
    h("table", { id: "deliveries" }, h("tr", {}, ["Instance", "Destination", "State", "Attempts", "Last error", ""].map((t) => h("th", {}, t))),
      study.deliveries.map((d) => h("tr", { "data-delivery": d.id },
        h("td", {}, d.sop_instance_uid.slice(-18)), h("td", {}, d.destination_name), h("td", {}, badge(d.state)),
        h("td", {}, d.attempts), h("td", { class: "dim" }, ["sent", "queued"].includes(d.state) ? "" : (d.last_error || "")),
        h("td", { class: "row" }, h("button", { class: "small", onclick: () => attemptsDialog(d) }, "Attempts"),
          d.state.startsWith("failed") ? h("button", { class: "small", onclick: () => retry(d.id) }, "Retry") : "")))));
}
async function attemptsDialog(d) {
  const rows = await attempt(() => api("GET", `/api/v1/deliveries/${d.id}/attempts`));
  if (!rows) return;
  const dlg = h("dialog", { id: "attempts-dialog" }, h("h2", {}, `${d.destination_name}: ${d.sop_instance_uid}`),
    h("table", {}, h("tr", {}, ["#", "Finished", "Outcome", "Status", "Error"].map((t) => h("th", {}, t))),
      rows.map((a) => h("tr", {}, h("td", {}, a.attempt), h("td", {}, fmtTime(a.finished_at)), h("td", {}, badge(a.outcome)),
        h("td", {}, a.status_code == null ? "–" : a.status_code.toString(16).padStart(4, "0")), h("td", { class: "dim" }, a.error || "")))),
    h("form", { method: "dialog" }, h("button", {}, "Close")));
  document.body.append(dlg);
  dlg.addEventListener("close", () => dlg.remove());
  dlg.showModal();
}
async function retry(id) { await attempt(() => api("POST", `/api/v1/deliveries/${id}/retry`), "Retry queued"); scheduleRefresh(); }

async function saveStudy(study) {
  const r = await attempt(() => api("POST", `/api/v1/studies/${study.id}/save`, {}));
  if (r) toast(`Saving ${r.accepted} item(s): converting to DICOM, then sending`);
}
async function forwardDialog(study) {
  const dests = await attempt(() => api("GET", "/api/v1/settings/destinations"));
  if (!dests) return;
  const dlg = h("dialog", { id: "forward-dialog" }, h("h2", {}, "Forward to"),
    h("form", { method: "dialog", onsubmit: async (e) => {
      const ids = [...e.target.querySelectorAll("input:checked")].map((i) => i.value);
      if (!ids.length) return;
      await attempt(() => api("POST", `/api/v1/studies/${study.id}/forward`, { destination_ids: ids }), "Forward queued");
    } },
    dests.length ? dests.map((d) => h("label", { class: "row" }, h("input", { type: "checkbox", value: d.id, checked: true }), ` ${d.name} (${d.ae_title}@${d.host}:${d.port})`))
      : h("p", { class: "dim" }, "No destinations configured (Settings)."),
    h("div", { class: "row" }, h("button", { value: "cancel", formnovalidate: true }, "Cancel"), h("button", { class: "primary", id: "forward-go" }, "Forward"))));
  document.body.append(dlg);
  dlg.addEventListener("close", () => dlg.remove());
  dlg.showModal();
}

// ---------------------------------------------------------------- patient form
async function viewPatient(arg, setView) {
  const study = state.study;
  const p = study || {};
  const form = h("form", { class: "panel", id: "patient-form", onsubmit: async (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    if (study) {
      const r = await attempt(() => api("PATCH", `/api/v1/studies/${study.id}`, v), "Patient data updated");
      if (r) route("#/room");
    } else {
      const r = await attempt(() => api("POST", "/api/v1/studies", { origin: "form", room: state.room || null, patient: v }), "Study started");
      if (r) await makeCurrent(r);
    }
  } },
  h("h1", {}, study ? "Edit patient data" : "New study — patient"),
  study && study.origin === "worklist" && !study.edited ? h("p", { class: "dim" }, "This study came from the worklist: editing it unlinks it (new Study UID, statement §8.1.5).") : "",
  h("div", { class: "form" },
    field("patient_name", "Patient name (LAST^FIRST)", p.patient_name, { maxlength: 64 }),
    field("patient_id", "Patient ID", p.patient_id, { maxlength: 64 }),
    field("patient_birth_date", "Birth date", dicomDate(p.patient_birth_date), { type: "date" }),
    h("label", {}, "Sex", h("select", { name: "patient_sex" }, ["", "M", "F", "O"].map((s) => h("option", { value: s, selected: p.patient_sex === s }, s || "–")))),
    field("accession_number", "Accession number", p.accession_number, { maxlength: 16 }),
    field("study_description", "Study description", p.study_description, { maxlength: 64 }),
    field("referring_physician", "Referring physician", p.referring_physician, { maxlength: 64 })),
  h("p", { class: "row" }, h("button", { type: "button", onclick: () => route("#/room") }, "Cancel"),
    h("button", { class: "primary", type: "submit", id: "patient-submit" }, study ? "Save changes" : "Start study")));
  setView(form);
}

// ---------------------------------------------------------------- worklist dialog
async function viewWorklist(arg, setView) {
  const results = h("div", { id: "worklist-results" });
  const servers = (await attempt(() => api("GET", "/api/v1/settings/worklist-servers"))) || [];
  const form = h("form", { class: "panel", id: "worklist-form", onsubmit: async (e) => {
    e.preventDefault();
    const v = Object.fromEntries(Object.entries(formValues(e.target)).filter(([, x]) => x !== ""));
    for (const k of ["date_from", "date_to"]) if (v[k]) v[k] = v[k].replaceAll("-", "");
    results.replaceChildren(h("p", { class: "dim" }, "Searching…"));
    v.limit = WORKLIST_PAGE;
    const r = await attempt(() => api("POST", "/api/v1/worklist/query", v));
    if (!r) { results.replaceChildren(); return; }
    showWorklistPage(results, r);
  } },
  h("h1", {}, "Worklist"),
  h("div", { class: "form" },
    servers.length ? h("label", {}, "Server", h("select", { name: "server_id" }, h("option", { value: "" }, "all"), servers.map((s) => h("option", { value: s.id }, s.name || s.id)))) : "",
    field("patient_name", "Patient name (wildcards * ?)", ""), field("patient_id", "Patient ID", ""),
    field("accession_number", "Accession number", ""), field("requested_procedure_id", "Requested procedure ID", ""),
    field("date_from", "Scheduled from", "", { type: "date" }), field("date_to", "Scheduled to", "", { type: "date" })),
  h("p", {}, h("button", { class: "primary", type: "submit", id: "worklist-search" }, "Search")));
  setView(form, h("section", { class: "panel" }, results));
}
// The answer is paged by the gateway (result_id); the banner and the flags come with each page.
const WORKLIST_PAGE = 100;
function showWorklistPage(results, r) {
  const last = Math.min(r.offset + r.items.length, r.total);
  const turn = async (offset) => {
    const p = await attempt(() => api("GET", `/api/v1/worklist/results/${r.result_id}?offset=${offset}&limit=${WORKLIST_PAGE}`));
    if (p) showWorklistPage(results, p);
  };
  const pager = r.total > r.items.length ? h("div", { class: "row pager" },
    h("button", { class: "small", id: "worklist-prev", disabled: r.offset === 0, onclick: () => turn(Math.max(0, r.offset - WORKLIST_PAGE)) }, "Previous"),
    h("span", { class: "dim", id: "worklist-range" }, `${r.offset + 1}–${last} of ${r.total}`),
    h("button", { class: "small", id: "worklist-next", disabled: last >= r.total, onclick: () => turn(r.offset + WORKLIST_PAGE) }, "Next")) : "";
  results.replaceChildren(
    r.warnings?.length || r.too_many || r.incomplete ? h("p", { class: "error-text" }, [r.too_many ? "Too many results: refine the search. " : "", r.incomplete ? "Results are incomplete. " : "", ...(r.warnings || [])].join(" ")) : "",
    pager,
    h("table", { id: "worklist-table" }, h("tr", {}, ["Patient", "ID", "Birth", "Accession", "Procedure", "Scheduled", ""].map((t) => h("th", {}, t))),
      r.items.map((it) => h("tr", { class: it.flags?.length ? "flagged" : null }, h("td", {}, it.patient_name || "", flagNote(it)), h("td", {}, it.patient_id || ""),
        h("td", {}, dicomDate(it.patient_birth_date)), h("td", {}, it.accession_number || ""),
        h("td", {}, it.requested_procedure_description || it.scheduled_procedure_step_description || ""),
        h("td", {}, `${dicomDate(it.scheduled_procedure_step_start_date)} ${it.scheduled_procedure_step_start_time || ""}`),
        h("td", { class: "row" }, h("button", { class: "primary small", onclick: () => startFromWorklist(it) }, "Start study"),
          canTakeWorklist() ? h("button", { class: "small", onclick: () => reconcile(it) }, "Use for current study") : "")))),
    r.total ? "" : h("p", { class: "dim" }, "No worklist entries match."));
}
// Values the worklist server sent wrong (or in another character set): what came, what is used.
function flagNote(it) {
  if (!it.flags?.length) return "";
  const text = it.flags.map((f) => `${f.keyword || f.tag}: ${f.problem}${f.value ? ` (received “${f.value}”)` : ""} → ${f.action}`).join("; ");
  return h("div", { class: "flag-note", title: text }, `⚠ ${text}`);
}
// A study begun before its patient data (statement §4.1.3) takes a worklist item later.
function canTakeWorklist() { return !!state.study && (state.study.origin !== "worklist" || state.study.edited); }
async function reconcile(item) {
  const r = await attempt(() => api("POST", `/api/v1/studies/${state.study.id}/reconcile`, { worklist_item: item }), "Current study linked to the worklist item");
  if (r) route("#/room");
}
async function startFromWorklist(item) {
  const r = await attempt(() => api("POST", "/api/v1/studies", { origin: "worklist", room: state.room || null, worklist_item: item }), "Study started from the worklist");
  if (r) await makeCurrent(r);
}

// ---------------------------------------------------------------- local search dialog
async function viewLocal(arg, setView) {
  const results = h("div", { id: "local-results" });
  const search = async (form) => {
    const v = Object.entries(formValues(form)).filter(([, x]) => x !== "");
    const q = new URLSearchParams(v.map(([k, x]) => [k, k.startsWith("date") ? x.replaceAll("-", "") : x]));
    const rows = await attempt(() => api("GET", `/api/v1/studies?${q}`));
    if (!rows) return;
    results.replaceChildren(h("table", {}, h("tr", {}, ["Patient", "ID", "Accession", "Date", "Origin", "Media", "Status", ""].map((t) => h("th", {}, t))),
      rows.map((s) => h("tr", { "data-study": s.id }, h("td", {}, s.patient_name), h("td", {}, s.patient_id), h("td", {}, s.accession_number),
        h("td", {}, dicomDate(s.study_date)), h("td", {}, s.origin), h("td", {}, s.media_count ?? ""), h("td", {}, badge(s.status)),
        h("td", { class: "row" }, s.origin === "received" ? "" : h("button", { class: "small", onclick: () => makeCurrent(s) }, "Open"),
          h("button", { class: "small", onclick: () => newForPatient(s) }, "New study"),
          state.study && state.study.id !== s.id ? h("button", { class: "small", onclick: () => takePatient(s) }, "Use for current study") : "")))),
    rows.length ? "" : h("p", { class: "dim" }, "No local studies match."));
  };
  const form = h("form", { class: "panel", id: "local-form", onsubmit: (e) => { e.preventDefault(); search(e.target); } },
    h("h1", {}, "Local studies"),
    h("div", { class: "form" }, field("q", "Name, patient ID or accession", ""), field("date_from", "From", "", { type: "date" }),
      field("date_to", "To", "", { type: "date" }),
      h("label", {}, "Status", h("select", { name: "status" }, ["", "non-converted", "converted", "sent", "failed", "received"].map((s) => h("option", { value: s }, s || "any"))))),
    h("p", {}, h("button", { class: "primary", type: "submit", id: "local-search" }, "Search")));
  setView(form, h("section", { class: "panel" }, results));
  search(form);
}
// LOCAL dialog on the current study: its patient becomes this one (statement §4.1.3: worklist
// data is dropped and the Study UID regenerated, which the edit rule does).
async function takePatient(s) {
  const patient = { patient_name: s.patient_name, patient_id: s.patient_id, patient_birth_date: s.patient_birth_date, patient_sex: s.patient_sex };
  const r = await attempt(() => api("PATCH", `/api/v1/studies/${state.study.id}`, patient), "Patient taken for the current study");
  if (r) route("#/room");
}
async function newForPatient(s) {
  const r = await attempt(() => api("POST", "/api/v1/studies", { origin: "local", room: state.room || null, from_study_id: s.id }), "New study for this patient");
  if (r) await makeCurrent(r);
}

// ---------------------------------------------------------------- settings
async function viewSettings(arg, setView) {
  const admin = state.me.role === "administrator";
  const station = await api("GET", "/api/v1/settings/station");
  const dests = (await attempt(() => api("GET", "/api/v1/settings/destinations"))) || [];
  const servers = (await attempt(() => api("GET", "/api/v1/settings/worklist-servers"))) || [];
  const health = (await attempt(() => api("GET", "/api/health"))) || { instances: [] };
  const scps = health.instances.filter((i) => i.service === "scp" && i.detail.ae_title);
  const echoResult = (el, r) => { el.replaceChildren(r ? badge(r.reachable ? "ok" : "bad") : "", r ? ` ${r.reachable ? `${(r.rtt_ms || 0).toFixed(0)} ms` : r.reason || "unreachable"}` : ""); };
  const echoButton = (path, body) => { const out = h("span", { class: "echo-result" });
    return [h("button", { class: "small echo", onclick: async () => { out.textContent = "…"; echoResult(out, await attempt(() => api("POST", path, body))); } }, "Echo"), out]; };
  const select = (name, options, value) => h("select", { name, disabled: !admin }, options.map(([v, t]) => h("option", { value: v, selected: v === value }, t)));
  const stationForm = h("form", { class: "panel", id: "station-form", onsubmit: async (e) => {
    e.preventDefault();
    const v = formValues(e.target); v.wildcard_matching = !!e.target.wildcard_matching.checked;
    await attempt(() => api("PUT", "/api/v1/settings/station", v), "Settings saved");
  } },
  h("h2", {}, "Station"),
  h("div", { class: "form" },
    field("station_name", "Station name", station.station_name, { disabled: !admin, maxlength: 16 }),
    field("local_ae_title", "Local AE title", station.local_ae_title, { disabled: !admin, maxlength: 16 }),
    h("label", {}, "Character set (§6)", select("character_set", ["ISO_IR 192", "ISO_IR 100", "ISO_IR 101", "ISO_IR 144", "ISO_IR 126", "ISO_IR 6"].map((c) => [c, c]), station.character_set)),
    h("label", {}, "Worklist character set", select("worklist_character_set", ["ISO_IR 192", "ISO_IR 100", "ISO_IR 101", "ISO_IR 144", "ISO_IR 126", "ISO_IR 6"].map((c) => [c, c]), station.worklist_character_set)),
    h("label", {}, "Video transfer syntax", select("video_transfer_syntax", [["1.2.840.10008.1.2.4.100", "MPEG-2 MP@ML"], ["1.2.840.10008.1.2.4.101", "MPEG-2 MP@HL"], ["1.2.840.10008.1.2.4.102", "H.264 HP@L4.1"], ["1.2.840.10008.1.2.4.103", "H.264 BD HP@L4.1"]], station.video_transfer_syntax)),
    h("label", {}, "IOD", select("iod", [["sc", "Secondary Capture"], ["vl", "VL Endoscopic / Video"]], station.iod)),
    h("label", { class: "row" }, h("input", { type: "checkbox", name: "wildcard_matching", checked: station.wildcard_matching, disabled: !admin }), "Worklist wildcard matching")),
  admin ? h("p", {}, h("button", { class: "primary", id: "station-save" }, "Save settings")) : h("p", { class: "dim" }, "Only an administrator can change settings."));

  const destForm = h("form", { class: "row", id: "destination-form", onsubmit: async (e) => {
    e.preventDefault(); const v = formValues(e.target); v.port = Number(v.port);
    if (await attempt(() => api("POST", "/api/v1/settings/destinations", v), "Destination saved")) render();
  } }, field("name", "Name", "", { required: true }), field("ae_title", "AE title", "", { required: true, maxlength: 16 }),
  field("host", "Host", "", { required: true }), field("port", "Port", "104", { type: "number", min: 1, max: 65535 }),
  h("button", { class: "primary" }, "Add"),
  ...echoButtonFromForm());
  function echoButtonFromForm() {
    const out = h("span", { class: "echo-result", id: "adhoc-echo-result" });
    return [h("button", { type: "button", id: "adhoc-echo", onclick: async () => {
      const v = formValues(destForm); out.textContent = "…";
      echoResult(out, await attempt(() => api("POST", "/api/v1/settings/echo", { ae_title: v.ae_title, host: v.host, port: Number(v.port) })));
    } }, "Echo"), out];
  }
  const destTable = h("table", { id: "destinations" }, h("tr", {}, ["Name", "AE title", "Host", "Port", "Enabled", ""].map((t) => h("th", {}, t))),
    dests.map((d) => h("tr", { "data-destination": d.id }, h("td", {}, d.name), h("td", {}, d.ae_title), h("td", {}, d.host), h("td", {}, d.port),
      h("td", {}, d.enabled ? "yes" : "no"), h("td", { class: "row" }, ...echoButton(`/api/v1/settings/destinations/${d.id}/echo`),
        admin ? h("button", { class: "small danger", onclick: async () => { if (confirm(`Delete ${d.name}?`) && await attempt(() => api("DELETE", `/api/v1/settings/destinations/${d.id}`), "Deleted") !== undefined) render(); } }, "Delete") : ""))));
  const serverTable = h("table", { id: "worklist-servers" }, h("tr", {}, ["Name", "Called AE", "Host", "Port", ""].map((t) => h("th", {}, t))),
    servers.map((s) => h("tr", {}, h("td", {}, s.name || s.id), h("td", {}, s.called_ae), h("td", {}, s.host), h("td", {}, s.port),
      h("td", { class: "row" }, ...echoButton(`/api/v1/settings/worklist-servers/${s.id}/echo`)))));
  const serverForm = admin ? h("form", { class: "row", id: "worklist-server-form", onsubmit: async (e) => {
    e.preventDefault(); const v = formValues(e.target); v.port = Number(v.port);
    if (await attempt(() => api("POST", "/api/v1/settings/worklist-servers", v), "Worklist server saved")) render();
  } }, field("id", "Id (a-z0-9)", "", { required: true, pattern: "[a-z0-9][a-z0-9_-]{0,31}" }), field("name", "Name", ""),
  field("called_ae", "Called AE", "", { required: true, maxlength: 16 }), field("host", "Host", "", { required: true }),
  field("port", "Port", "104", { type: "number", min: 1, max: 65535 }), h("button", { class: "primary" }, "Add")) : "";
  const scpPanel = h("section", { class: "panel", id: "local-scp" }, h("h2", {}, "Storage SCP of this station (statement Table 25)"),
    scps.length ? h("table", {}, h("tr", {}, ["Instance", "AE title", "Ports", "State", ""].map((t) => h("th", {}, t))),
      scps.map((i) => h("tr", {}, h("td", {}, i.instance), h("td", {}, i.detail.ae_title), h("td", {}, i.detail.ports || ""), h("td", {}, badge(i.state)),
        h("td", { class: "row" }, ...echoButton("/api/v1/settings/echo", { ae_title: i.detail.ae_title, host: i.detail.host || "127.0.0.1", port: Number((i.detail.ports || "").split(",")[0]) })))))
      : h("p", { class: "dim" }, "No SCP instance reports (its AE title and port are set by CB_SCP_AE_TITLE / CB_SCP_PORT)."));
  setView(h("h1", {}, "Settings"), stationForm, scpPanel,
    h("section", { class: "panel" }, h("h2", {}, "Destinations (C-STORE)"), destTable, admin ? destForm : ""),
    h("section", { class: "panel" }, h("h2", {}, "Worklist servers"), serverTable, serverForm));
}

// ---------------------------------------------------------------- ops dashboard
async function viewOps(arg, setView) {
  const s = await api("GET", "/api/v1/ops/summary");
  const tbl = (id, head, rows) => h("table", { id }, h("tr", {}, head.map((t) => h("th", {}, t))), rows);
  setView(h("h1", {}, "Operations"),
    h("div", { class: "grid" },
      h("div", { class: "panel" }, h("h2", {}, "Health"), badge(s.health.status)),
      h("div", { class: "panel" }, h("h2", {}, "Disk headroom"), h("div", { id: "disk" }, `${fmtBytes(s.disk.free_bytes)} free of ${fmtBytes(s.disk.total_bytes)}`)),
      h("div", { class: "panel" }, h("h2", {}, "Unsent"), h("div", {}, `${s.deliveries.pending} deliveries; oldest ${fmtTime(s.deliveries.oldest_unsent_at)}`), h("div", { class: "dim" }, `outbox ${s.outbox.pending} pending`)),
      h("div", { class: "panel" }, h("h2", {}, "Dead letters"), h("div", {}, s.dead_letters)),
      h("div", { class: "panel" }, h("h2", {}, "SCP received"), h("div", {}, s.received ? `${s.received.instances} instances (${s.received.last_24h} in 24 h)` : "–")),
      h("div", { class: "panel" }, h("h2", {}, "Local studies"), h("div", {}, s.studies))),
    h("section", { class: "panel" }, h("h2", {}, "Services"), tbl("health", ["Service", "Instance", "Room", "State", "Last seen", "Version", ""],
      s.health.instances.map((i) => h("tr", {}, h("td", {}, i.service), h("td", {}, i.instance), h("td", {}, i.room || ""), h("td", {}, badge(i.state)),
        h("td", {}, `${i.age_s} s ago`), h("td", { class: "dim" }, i.version),
        h("td", {}, i.health_url ? h("a", { href: `/api/v1/services/${i.service}/${i.instance}/metrics`, target: "_blank" }, "metrics") : ""))))),
    h("section", { class: "panel" }, h("h2", {}, "Rooms and sources"), tbl("sources", ["Room", "Source", "", "State", "fps in", "fps encoded", "Dropped", "Disk free"],
      s.rooms.flatMap((r) => r.reachable ? r.sources.map((src) => h("tr", {}, h("td", {}, r.room), h("td", {}, src.name),
        h("td", {}, src.signal ? h("img", { class: "source-thumb", alt: `thumbnail of ${src.name}`, src: src.thumbnail_url }) : ""), h("td", {}, badge(src.state)),
        h("td", {}, src.fps_in?.toFixed(1) ?? "–"), h("td", {}, src.fps_encoded?.toFixed(1) ?? "–"), h("td", {}, src.dropped_frames), h("td", {}, fmtBytes(r.disk_free_bytes))))
        : [h("tr", {}, h("td", {}, r.room), h("td", { colspan: 7, class: "error-text" }, r.error || "unreachable"))]))),
    h("section", { class: "panel" }, h("h2", {}, "Job queues"), tbl("queues", ["Consumer", "Pending", "In flight", "Redelivered"],
      s.queues.map((q) => h("tr", {}, h("td", {}, q.consumer), h("td", {}, q.pending), h("td", {}, q.in_flight), h("td", {}, q.redelivered))))),
    h("section", { class: "panel" }, h("h2", {}, "Failed deliveries"), tbl("failed", ["When", "Destination", "State", "Attempts", "Status", "Error", ""],
      s.failed_deliveries.map((d) => h("tr", {}, h("td", {}, fmtTime(d.updated_at)), h("td", {}, d.destination_name), h("td", {}, badge(d.state)),
        h("td", {}, d.attempts), h("td", {}, d.last_status ?? ""), h("td", { class: "dim" }, d.last_error || ""),
        h("td", {}, h("button", { class: "small", onclick: () => retry(d.id) }, "Retry")))))));
}

// ---------------------------------------------------------------- pedals / keyboard
document.addEventListener("keydown", (e) => {
  if (!location.hash.startsWith("#/room") || e.target.matches("input, select, textarea") || e.repeat) return;
  const src = document.querySelector(".source");
  if (!src) return;
  const name = src.dataset.source;
  const key = e.key.toLowerCase();
  if (key === "s" || e.key === "F9") { e.preventDefault(); capture(name, "snapshot"); }
  else if (key === "r" || e.key === "F10") {
    e.preventDefault();
    const rec = src.querySelector("[data-action=record_stop]");
    capture(name, rec ? "record_stop" : "record_start");
  } else if (key === "x" || e.key === "F11") { e.preventDefault(); capture(name, "record_stop"); }
});

window.addEventListener("hashchange", render);
window.addEventListener("DOMContentLoaded", () => {
  $("#logout").addEventListener("click", async () => {
    await attempt(() => api("POST", "/api/v1/auth/logout"));
    state.me = null; state.csrf = null; state.events?.close(); state.events = null; route("#/login");
  });
  render();
});
