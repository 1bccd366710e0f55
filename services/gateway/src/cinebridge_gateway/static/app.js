// CineBridge web UI: plain ES modules, no build step. This module is the shell (live events,
// routing, log-in, pedal keys) and the Worklist view; each other view has its module, and
// lib.js holds the API client and the helpers they share.
import { $, ApiFailure, api, attempt, failure, readOnly, dicomDate, dicomTime, field, formValues, h, loadCurrentStudy, personName, roomLine,
         route, routes, scheduleRefresh, setRenderer, startStudy, state, toast, whoOf } from "./lib.js";
import { capture, progressText, viewPatient, viewRoom } from "./room.js";
import { viewLocal } from "./local.js";
import { viewSettings } from "./settings.js";
import { opsPending, viewOps } from "./ops.js";
import { viewAdmin, viewPassword } from "./admin.js";

// Each render gets a token; a slower render that an event started before the operator moved
// on must not paint over the newer page.
let viewToken = 0;
// A view that updates in place (the Room) asks `current()` before it writes.
function viewSetter(token) {
  const setView = (...nodes) => {
    if (token !== viewToken) return false;
    $("#view").replaceChildren(...nodes);
    return true;
  };
  setView.current = () => token === viewToken;
  return setView;
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
                         "cb.evt.delivery.state_changed", "cb.evt.study.changed", "cb.evt.mpps.state_changed",
                         "cb.evt.room.study_changed"]) {
    es.addEventListener(subject, (ev) => onLiveEvent(subject, JSON.parse(ev.data)));
  }
  es.addEventListener("cb.evt.service.heartbeat", () => {
    if (location.hash.startsWith("#/ops")) { if (!opsPending()) scheduleRefresh(); }
    // A Room waiting for its capture service asks again while services beat.
    else if (document.querySelector("[data-study-unknown]")) scheduleRefresh();
  });
}
function onLiveEvent(subject, data) {
  if (subject === "cb.evt.conversion.progressed" && state.study && data.study_id === state.study.id) {
    const el = document.getElementById(`progress-${data.media_id}`);
    if (el) el.textContent = progressText(data);
    return;
  }
  // Only pages that show live state re-render: a dialog being filled in is never reset.
  const page = (location.hash || "#/room").split("/")[1] || "room";
  if (page === "ops") { if (!opsPending()) scheduleRefresh(); }
  else if (page !== "room") return;
  // The room's current study changed on another screen (or a capture created one): show it.
  else if (subject === "cb.evt.capture.state_changed" && data.room === state.room) scheduleRefresh();
  else if (subject === "cb.evt.room.study_changed") {
    // A page that shows that study already (this tab changed it) is not painted again.
    if (data.room === state.room && (data.study_id ?? null) !== (state.study?.id ?? null)) scheduleRefresh();
  }
  else if (state.study && data.study_id === state.study.id) scheduleRefresh();
}
// ---------------------------------------------------------------- routing
Object.assign(routes, { login: viewLogin, room: viewRoom, local: viewLocal, worklist: viewWorklist,
                        patient: viewPatient, settings: viewSettings, ops: viewOps, admin: viewAdmin,
                        password: viewPassword });
async function render() {
  const hash = location.hash;
  try {
    await renderPage();
    painted = hash;
  } catch (e) {
    if (e.status === 401) return;  // api() went to the log-in form
    // A page on screen stays (a recording's Stop with it) and says it is not up to date; a page
    // that could not be shown at all says why instead of staying blank, and tries again.
    if (painted === hash && !$("#page-unavailable")) { toast(`Not up to date: ${e.message}`, true); return; }
    painted = null;
    viewToken += 1;
    viewSetter(viewToken)(unavailable(e));
    setTimeout(() => { if ($("#page-unavailable") && location.hash === hash) render(); }, 5000);
  }
}
// The hash whose page is on screen, painted by a render that succeeded.
let painted = null;
function unavailable(e) {
  return h("section", { class: "panel", id: "page-unavailable", role: "alert" }, h("h1", {}, "This page cannot be shown now"),
    h("p", { class: "error-text" }, e.message || String(e)),
    h("p", { class: "dim" }, "It is shown again by itself once the station answers."),
    h("p", {}, h("button", { onclick: () => render() }, "Try again")));
}
async function renderPage() {
  const [, page, arg] = (location.hash || "#/room").split("/");
  let name = page;
  if (!state.me && name !== "login") {
    let me;
    try {
      me = await fetch("/api/v1/auth/me", { credentials: "same-origin" });
    } catch {
      throw new ApiFailure(0, "unreachable", "The station does not answer (its gateway is down or the network is)");
    }
    // Only a refused session means "log in": a station that cannot check it says why.
    if (me.status === 401) {
      // A page opened by its URL (a bookmark of Ops, a link to Local) is shown after the log-in.
      if (!location.hash.startsWith("#/login")) state.returnTo = location.hash;
      return route("#/login");
    }
    if (!me.ok) throw failure(me.status, await me.json().catch(() => null));
    setMe(await me.json());
  }
  // A first-run (or reset) password is changed before anything else.
  if (state.me?.must_change_password && name !== "login") name = "password";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.id === `nav-${name}`);
  $("#topbar").hidden = !state.me || name === "login";
  $("#nav-admin").hidden = state.me?.role !== "administrator";
  $("#nav-worklist").hidden = readOnly();
  viewToken += 1;
  // A page slow to come (a dependency slow to answer) does not leave the former page — another
  // patient's Room, its buttons live — under the new tab meanwhile.
  const token = viewToken, hash = location.hash;
  const slow = setTimeout(() => {
    if (token === viewToken && painted !== hash) $("#view").replaceChildren(h("p", { class: "dim", id: "page-loading", role: "status" }, "Loading…"));
  }, 1000);
  try {
    await (routes[name] || viewRoom)(arg ? decodeURIComponent(arg) : undefined, viewSetter(viewToken));
  } finally {
    clearTimeout(slow);
  }
}
setRenderer(render);
function setMe(me) {
  state.me = me; state.csrf = me.csrf_token;
  $("#whoami").textContent = `${me.username} (${me.role})`;
  if (!state.events) connectEvents();
}


// ---------------------------------------------------------------- login
function viewLogin(arg, setView) {
  $("#topbar").hidden = true;
  // A dialog of the page the session ended on (modal: the log-in behind it would be inert, and
  // it shows the patient it was opened for) does not outlive the session.
  for (const dlg of document.querySelectorAll("dialog")) dlg.close();
  const form = h("form", { class: "panel login", id: "login-form", onsubmit: async (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    const me = await attempt(() => api("POST", "/api/v1/auth/login", v));
    if (!me) return;
    setMe(me);
    const back = state.returnTo && !state.returnTo.startsWith("#/password") ? state.returnTo : "#/room";
    state.returnTo = null;
    route(me.must_change_password ? "#/password" : back);
  } },
  h("h1", {}, "CineBridge"), h("p", { class: "dim" }, "Log in to the video station"),
  field("username", "User", "", { autocomplete: "username", required: true }),
  field("password", "Password", "", { type: "password", autocomplete: "current-password", required: true }),
  h("p", {}, h("button", { class: "primary", type: "submit", id: "login-button" }, "Log in")));
  setView(form);
}


// ---------------------------------------------------------------- worklist dialog
async function viewWorklist(arg, setView) {
  if (readOnly()) {
    return setView(h("section", { class: "panel" }, h("h1", {}, "Worklist"),
      h("p", { class: "dim", id: "worklist-read-only" }, "Read-only (viewer role): the worklist is searched by the operators who start studies.")));
  }
  const results = h("div", { id: "worklist-results" });
  // Opened by its URL (or reloaded) the page knows its room and the room's current study.
  const current = await loadCurrentStudy();
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
  h("h1", {}, "Worklist"), roomLine(current),
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
    // What went wrong (cut answer) in red; what is only said about the answer (no partial
    // matches, flagged values, an offline copy) as a note.
    r.too_many || r.incomplete ? h("p", { class: "error-text", id: "worklist-problem" }, [r.too_many ? "Too many results: refine the search." : "", r.incomplete ? "Results are incomplete." : ""].join(" ").trim()) : "",
    r.warnings?.length ? h("p", { class: "note", id: "worklist-note" }, r.warnings.join(" ")) : "",
    pager,
    h("table", { id: "worklist-table" }, h("tr", {}, ["Patient", "ID", "Birth", "Accession", "Procedure", "Scheduled", ""].map((t) => h("th", {}, t))),
      r.items.map((it) => h("tr", { class: it.flags?.length ? "flagged" : null }, h("td", {}, personName(it.patient_name), flagNote(it)), h("td", {}, it.patient_id || ""),
        h("td", {}, dicomDate(it.patient_birth_date)), h("td", {}, it.accession_number || ""),
        h("td", {}, it.requested_procedure_description || it.scheduled_procedure_step_description || ""),
        h("td", {}, `${dicomDate(it.scheduled_procedure_step_start_date)} ${dicomTime(it.scheduled_procedure_step_start_time)}`),
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
// The study linked is the one this page named as current: if the room moved on meanwhile (another
// screen started or closed a study), nothing is linked and the page shows the new state.
async function reconcile(item) {
  const shown = state.study;
  const r = await attempt(async () => {
    const now = await loadCurrentStudy();
    if (now?.id !== shown.id) throw new Error(`The current study of ${state.room} changed (now: ${whoOf(now) || "none"}); nothing was linked`);
    return api("POST", `/api/v1/studies/${shown.id}/reconcile`, { worklist_item: item });
  }, "Current study linked to the worklist item");
  if (r) route("#/room"); else render();
}
async function startFromWorklist(item) {
  await startStudy({ origin: "worklist", worklist_item: item }, "Started from the worklist");
}


// ---------------------------------------------------------------- pedals / keyboard
// Plain keys only: Ctrl+R (reload), Ctrl+S and other shortcuts stay the browser's; nothing is
// captured behind an open dialog or for a viewer (read-only).
document.addEventListener("keydown", (e) => {
  if (!(location.hash || "#/room").startsWith("#/room") || e.target.matches("input, select, textarea") || e.repeat) return;
  if (e.ctrlKey || e.metaKey || e.altKey || document.querySelector("dialog[open]") || readOnly()) return;
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
// Logging out in one tab logs out this browser's other tabs at once: none keeps a patient on
// screen (or its buttons live) until its next request finds the session gone.
const sessionChannel = "BroadcastChannel" in window ? new BroadcastChannel("cinebridge-session") : null;
function loggedOut() {
  state.me = null; state.csrf = null; state.events?.close(); state.events = null; route("#/login");
}
sessionChannel?.addEventListener("message", (e) => { if (e.data === "logout" && state.me) loggedOut(); });
// A module runs after the document is parsed.
{
  $("#logout").addEventListener("click", async () => {
    await attempt(() => api("POST", "/api/v1/auth/logout"));
    loggedOut();
    sessionChannel?.postMessage("logout");
  });
  render();
}
