// Shared by every view: the API client, DOM helpers, formatting, toasts, the router's registry
// and the room's study lifecycle. Every text from the server goes through textContent (never
// innerHTML), so patient names cannot inject markup.

// state.room is only which room this screen shows (a preference of the cart); the room's
// current study is always read from the server, never kept here.
export const state = { me: null, csrf: null, room: localStorage.getItem("cb.room") || "", rooms: [],
                       study: null, events: null, timer: null, recording: {} };

// ---------------------------------------------------------------- DOM helpers
export function h(tag, attrs, ...children) {
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
export const $ = (sel) => document.querySelector(sel);
// Live views update in place: an element under the operator's finger or focus is never replaced
// by an equal one. setText writes only a changed text; swap replaces a (non-interactive) part only
// when what it shows changed, and returns the part now on the page.
export function setText(el, text) { if (el.textContent !== text) el.textContent = text; }
export function swap(old, fresh) {
  if (old.isEqualNode(fresh)) return old;
  old.replaceWith(fresh);
  return fresh;
}
// A list of items shown by id in `container` (which holds nothing else): an item seen for the
// first time gets its view from create(item) ({el, update}), a known one is updated, a gone one
// removed; nodes already in place are not moved.
export function keyedList(container, key, create) {
  const views = new Map();
  return (items) => {
    const keys = items.map(key);
    for (const [k, view] of views) if (!keys.includes(k)) { view.el.remove(); views.delete(k); }
    const order = items.map((item, i) => {
      let view = views.get(keys[i]);
      if (!view) { view = create(item); views.set(keys[i], view); }
      view.update(item);
      return view;
    });
    let at = container.firstChild;
    for (const view of order) {
      if (view.el === at) at = at.nextSibling;
      else container.insertBefore(view.el, at);
    }
  };
}
// A viewer watches: every control that changes something is left out (the server refuses anyway).
export const readOnly = () => state.me?.role === "viewer";
export const badge = (text) => h("span", { class: `badge b-${String(text).replace(/[^a-z-]/g, "")}` }, text);
// A study's or an instance's Storage Commitment state (PS3.4 Annex J) as the operator reads it.
const COMMITMENT_LABELS = { sent: "commit pending", requested: "commit requested", committed: "committed",
  "commit-failed": "commit failed", failed: "commit failed", unsupported: "not committed (unsupported)" };
export const commitmentLabel = (state) => COMMITMENT_LABELS[state] || state;
export function field(name, label, value, extra) {
  return h("label", {}, label, h("input", { name, value: value ?? "", ...(extra || {}) }));
}
export function formValues(form) { return Object.fromEntries(new FormData(form).entries()); }

// ---------------------------------------------------------------- formatting
export const fmtBytes = (n) => n == null ? "–" : n > 1e9 ? `${(n / 1e9).toFixed(1)} GB` : `${(n / 1e6).toFixed(1)} MB`;
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
export const fmtTime = (t) => t ? dateTimeFormat.format(new Date(t)) : "–";
// DA (YYYYMMDD) as an ISO date: unambiguous in every locale.
export const dicomDate = (d) => d && d.length === 8 ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : (d || "");
// TM (HHMMSS.FFFFFF) as HH:MM.
export const dicomTime = (t) => t && t.length >= 4 ? `${t.slice(0, 2)}:${t.slice(2, 4)}` : (t || "");
// PN "FAMILY^Given^Middle" as people read it: "FAMILY, Given Middle".
export function personName(pn) {
  const parts = String(pn || "").split("=")[0].split("^").map((p) => p.trim());
  const family = parts[0] || "";
  const given = parts.slice(1).filter(Boolean).join(" ");
  return family && given ? `${family}, ${given}` : family || given;
}
export const fmtSeconds = (s) => {
  const total = Math.max(0, Math.floor(s));
  return `${Math.floor(total / 60)}:${String(total % 60).padStart(2, "0")}`;
};

// ---------------------------------------------------------------- toasts
export function toast(text, isError) {
  const el = $("#toast");
  el.textContent = text;
  el.className = isError ? "error" : "";
  el.hidden = false;
  clearTimeout(toast.t);
  toast.t = setTimeout(() => { el.hidden = true; }, isError ? 6000 : 3000);
}
// A success takes an error toast off the screen: it no longer describes the state.
export function clearErrorToast() {
  const el = $("#toast");
  if (el.className === "error") { el.hidden = true; clearTimeout(toast.t); }
}

// ---------------------------------------------------------------- API client
export class ApiFailure extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}
export async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (state.csrf) opts.headers["X-CSRF-Token"] = state.csrf;
  if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  let res;
  try {
    res = await fetch(path, opts);
  } catch {
    throw new ApiFailure(0, "unreachable", "The station does not answer (its gateway is down or the network is)");
  }
  if (res.status === 401 && !path.endsWith("/auth/login")) {
    // The session lapsed (idle, expired, or ended by an administrator): after the log-in the
    // operator is back on the page they were on.
    if (!location.hash.startsWith("#/login")) state.returnTo = location.hash;
    state.me = null; route("#/login");
    throw new ApiFailure(401, "unauthenticated", "Your session has ended: log in again");
  }
  if (res.status === 204) return null;
  const data = res.headers.get("content-type")?.includes("json") ? await res.json() : await res.text();
  if (!res.ok) throw failure(res.status, data);
  return data;
}
// What went wrong, worded for the person at the screen where the API's words are for a program.
const OUTAGES = {
  database_unavailable: "The station's database (PostgreSQL) is not answering: nothing can be read or saved until it is back",
  timed_out: "The station did not answer in time: its database or one of its services is not answering (see Ops)",
};
export function failure(status, data) {
  const code = data?.error?.code || "";
  return new ApiFailure(status, code, OUTAGES[code] || data?.error?.message || `${status}`);
}
export async function attempt(fn, ok) {
  try {
    const r = await fn();
    if (ok) toast(ok); else clearErrorToast();
    return r;
  } catch (e) { toast(e.message, true); return undefined; }
}

// ---------------------------------------------------------------- routing registry
export const routes = {};
export function route(hash) { if (location.hash !== hash) location.hash = hash; else render(); }
let renderer = async () => {};
export function setRenderer(fn) { renderer = fn; }
export function render() { return renderer(); }
// A refresh is for the page that asked for it: once the operator has moved on (e.g. to the
// patient form), it would repaint that page and wipe what is being typed.
export function scheduleRefresh() {
  clearTimeout(state.timer);
  const page = location.hash;
  state.timer = setTimeout(() => { if (location.hash === page) render(); }, 300);
}

// ---------------------------------------------------------------- the room's study
// The room this screen works for, known on every page (a worklist opened by its URL too).
export async function ensureRoom() {
  if (!state.rooms.length) state.rooms = await api("GET", "/api/v1/rooms");
  if (!state.rooms.some((r) => r.room === state.room)) state.room = state.rooms[0]?.room || "";
  if (state.room) localStorage.setItem("cb.room", state.room);
  return state.room;
}
// The room's current study as the server has it now (a summary: who it is for), for pages
// opened by their URL that never showed the Room; state.study follows it.
// A room whose study cannot be read (its capture service or the bus not answering) has an
// unknown current study, never "none": state.studyUnknown says why.
export async function loadCurrentStudy() {
  const room = await ensureRoom().catch(() => "");
  state.studyUnknown = null;
  const current = room ? await api("GET", `/api/v1/rooms/${room}/study`).catch((e) => { state.studyUnknown = e.message; return null; }) : null;
  state.study = current?.study || null;
  return state.study;
}
// "Room · current patient" line of the dialogs that act on the room's study.
export function roomLine(study) {
  if (state.room && state.studyUnknown) {
    return h("p", { class: "error-text", id: "room-current" }, `Room ${state.room} · current study unknown: ${state.studyUnknown}`);
  }
  return h("p", { class: "dim", id: "room-current" }, state.room
    ? [`Room ${state.room} · current study: `, study ? h("strong", {}, whoOf(study)) : "none"]
    : "No room reports a capture service.");
}
// Asks before leaving a study that holds captured media (the server insists on `confirm`).
async function withSwitchConfirmation(send) {
  try {
    return await send(false);
  } catch (e) {
    if (e.code !== "confirmation_required") throw e;
    // The server names the study and what it holds; the operator reads what happens to it.
    const held = e.message.match(/^the current study \((.*)\) holds (\d+) captured item/);
    const what = held ? `The current study of ${state.room} (${held[1]}) holds ${held[2]} captured item(s); they stay with that study.`
      : e.message.replace(/ only with confirm=true$/, ".");
    if (!confirm(`${what}\n\nSwitch ${state.room} to the new study?`)) return null;
    return await send(true);
  }
}
export function whoOf(study) {
  return study ? `${personName(study.patient_name) || "(no name)"} · ID ${study.patient_id || "–"}` : "";
}
// Start a study (form, worklist item, local study, unscheduled) as the room's current one: one
// request naming the room.
export async function startStudy(body, label) {
  const r = await attempt(async () => {
    const room = await ensureRoom();
    if (!room) throw new Error("no room reports a capture service: start the study in a room");
    return await withSwitchConfirmation((confirm) => api("POST", `/api/v1/rooms/${room}/study`, { ...body, confirm }));
  });
  if (r) { toast(`${label}: ${whoOf(r.study)} is the current study of ${r.room}`); route("#/room"); }
  return r;
}
export async function openStudy(studyId) {
  const r = await attempt(async () => {
    const room = await ensureRoom();
    if (!room) throw new Error("no room reports a capture service");
    return await withSwitchConfirmation((confirm) => api("PUT", `/api/v1/rooms/${room}/study`, { study_id: studyId, confirm }));
  });
  if (r) { toast(`${whoOf(r.study)} is the current study of ${r.room}`); route("#/room"); }
  return r;
}
