// The Room: the operator's screen at the cart. The room's current study is the server's (the
// room status names it); this page only shows it and asks the server to change it.
import { api, attempt, badge, commitmentLabel, dicomDate, field, fmtSeconds, fmtTime, formValues, h, keyedList, loadCurrentStudy,
         personName, readOnly, render, roomLine, route, scheduleRefresh, setText, startStudy, state, swap, toast, whoOf } from "./lib.js";
import { exportDialog } from "./export.js";
import { ledgerLine, refreshLedgerLine } from "./retention.js";
import { addFileButton } from "./upload.js";

// The Room on screen, built once per study: live events (capture state, media, deliveries arrive
// several times a second during a recording) update it in place, so a press on Snapshot, the
// keyboard focus and an open dialog survive them. Only another current study (another patient)
// paints the page anew — never under an open dialog, which acts on the study it was opened for.
let shown = null;

export async function viewRoom(arg, setView) {
  state.rooms = await api("GET", "/api/v1/rooms");
  if (!state.rooms.some((r) => r.room === state.room)) state.room = state.rooms[0]?.room || "";
  const room = state.room;
  const info = state.rooms.find((r) => r.room === room);
  // The capture service names the room's study even while the database is away: a study that
  // cannot be read is an error to show, never "No current study".
  const study = info?.study_id
    ? await api("GET", `/api/v1/studies/${info.study_id}`).catch((e) => { if (e.status === 404) return null; throw e; }) : null;
  // A render that the operator overtook (another room picked, a newer render) paints nothing
  // and leaves state.study to the page on screen.
  if (room !== state.room || !setView.current()) return;
  const onScreen = shown?.header.isConnected ? shown : null;
  if (onScreen && onScreen.room === room && onScreen.studyId === studyKey(info, study)) {
    onScreen.update(info, study);
    state.study = study;
    return;
  }
  const open = onScreen && document.querySelector("dialog[open]");
  if (open) { open.addEventListener("close", scheduleRefresh, { once: true }); return; }
  const view = roomView(room, info, study);
  if (setView(view.header, ...view.panels)) { shown = view; state.study = study; }
}

// Which study the Room shows: a room whose capture service does not answer has an unknown one.
const studyKey = (info, study) => (info && !info.reachable ? "unknown" : study?.id ?? null);

function roomView(room, info, study) {
  const picker = h("select", { id: "room-picker", "aria-label": "Room shown on this screen", onchange: (e) => {
    state.room = e.target.value; localStorage.setItem("cb.room", state.room); render(); } });
  const header = h("div", { class: "row" }, h("h1", {}, "Room"), h("div", {}, picker),
    h("span", { class: "spacer" }),
    h("span", { class: "dim" }, "Pedal keys: ", h("span", { class: "kbd" }, "S/F9"), " snapshot · ",
      h("span", { class: "kbd" }, "R/F10"), " record · ", h("span", { class: "kbd" }, "X/F11"), " stop"));
  const card = info && !info.reachable ? unknownStudyCard(info) : studyCard(study), sources = sourcesPanel(), media = mediaPanel(study), deliveries = deliveriesPanel(study);
  const update = (i, st) => {
    const names = state.rooms.map((r) => r.room);
    if (names.join("\n") !== [...picker.options].map((o) => o.value).join("\n")) {
      picker.replaceChildren(...names.map((r) => h("option", { value: r }, r)));
    }
    picker.value = state.room;
    card.update(st); sources.update(i); media.update(st); deliveries.update(st);
  };
  update(info, study);
  return { room, studyId: studyKey(info, study), header, update,
           panels: [card.el, sources.el, media.el, deliveries.el].filter(Boolean) };
}


// Who the next capture is for: always on screen, read from the server. Its buttons are made once
// and act on the study as last read (`current`).
function studyCard(study) {
  let current = study;
  const actions = readOnly() ? h("p", { class: "dim" }, "Read-only (viewer role).") : h("div", { class: "row" },
    study ? h("button", { id: "edit-patient", onclick: () => route("#/patient") }, "Edit patient") : "",
    h("button", { id: "new-study", onclick: () => route("#/patient/new") }, "New study"),
    h("button", { onclick: () => route("#/worklist") }, "Worklist"),
    h("button", { onclick: () => route("#/local") }, "Local search"),
    study ? h("button", { id: "close-study", onclick: () => closeStudy(current) }, "Close study") : "",
    study ? h("button", { id: "discontinue-button", onclick: () => discontinueDialog(current) }, "Discontinue") : "",
    study ? addFileButton() : "",
    h("span", { class: "spacer" }),
    h("button", { class: "primary", id: "save-button", disabled: !study, onclick: () => saveStudy(current) }, "Save"),
    h("button", { id: "forward-button", disabled: !study, onclick: () => forwardDialog(current) }, "Forward"),
    h("button", { id: "export-button", disabled: !study, onclick: () => exportDialog(current) }, "Export"));
  if (!study) {
    return { update: () => {}, el: h("section", { class: "panel study-card", id: "study-card" },
      h("div", { class: "name", id: "study-patient" }, "No current study"),
      h("p", { class: "dim" }, "Start one from the patient form, the worklist or a local study — or just capture: an unscheduled study is created."), actions) };
  }
  let parts = studyFacts(study);
  const ledger = ledgerLine(study);
  const last = h("div", { id: "last-capture", class: "dim small" });
  const el = h("section", { class: "panel study-card", id: "study-card", "data-study": study.id }, parts, ledger, last, actions);
  const update = (st) => {
    if (st !== study) {
      current = st;
      parts = studyFacts(st).map((fresh, i) => swap(parts[i], fresh));
      refreshLedgerLine(el.querySelector("#study-ledger"), st);
    }
    setText(last, state.lastCapture?.studyId === st.id && state.lastCapture.room === state.room ? state.lastCapture.text : "");
  };
  return { el, update };
}
// The capture service keeps the room's current study: while it does not answer, who the next
// capture is for is not known here, and "No current study" would be a guess.
function unknownStudyCard(info) {
  return { update: () => {}, el: h("section", { class: "panel study-card", id: "study-card", "data-study-unknown": info.room },
    h("div", { class: "name", id: "study-patient" }, "Current study unknown"),
    h("p", { class: "error-text" }, `Capture for ${info.room} is not answering, so who the next capture is for cannot be shown. The page shows it again once capture answers.`)) };
}
function studyFacts(study) {
  const fact = (label, value, id) => h("span", { class: "fact" }, h("span", { class: "dim" }, `${label} `), h("strong", { id }, value || "–"));
  return [
    h("div", { class: "row" }, h("span", { class: "name", id: "study-patient" }, personName(study.patient_name) || "(no name yet)"),
      badge(study.status || "non-converted"), study.commitment ? badge(commitmentLabel(study.commitment)) : null, study.edited ? badge("edited") : null, badge(study.origin)),
    h("div", { class: "row facts" }, fact("Patient ID", study.patient_id, "study-patient-id"),
      fact("Born", dicomDate(study.patient_birth_date), "study-birth-date"), fact("Sex", study.patient_sex),
      fact("Accession", study.accession_number, "study-accession"), fact("Modality", study.modality, "study-modality"),
      study.study_description ? fact("Study", study.study_description) : ""),
    // The Study Instance UID is for IT (its tooltip); the operator reads when it started.
    h("div", { class: "dim small", id: "study-started", title: `Study Instance UID ${study.study_instance_uid}` },
      `Started ${dicomDate(study.study_date)} ${fmtTime(study.created_at).split(", ").pop()}`),
    mppsLine(study)];
}

// What the RIS was told about the procedure (Modality Performed Procedure Step, PS3.4 Annex F).
function mppsLine(study) {
  const m = study.mpps;
  if (!m) return h("div", { class: "row small", hidden: true });
  const reason = m.reason ? ` (${m.reason.meaning})` : "";
  return h("div", { class: "row small", id: "study-mpps", "data-mpps-state": m.state },
    h("span", { class: "dim" }, "Procedure step (MPPS) "), badge(m.state), h("span", { class: "dim" }, `${m.pps_id}${reason}`),
    m.last_error ? h("span", { class: "error-text", id: "study-mpps-error" }, m.last_error) : "",
    !readOnly() && ["failed", "failed-retrying"].includes(m.state)
      ? h("button", { class: "small", id: "mpps-retry", onclick: async () => {
        if (await attempt(() => api("POST", `/api/v1/studies/${study.id}/mpps/retry`), "Procedure step sent again")) scheduleRefresh();
      } }, "Retry") : "");
}

// The operator abandons the study: the RIS is told DISCONTINUED with a reason of PS3.16 CID 9300.
async function discontinueDialog(study) {
  const reasons = await attempt(() => api("GET", "/api/v1/codes/discontinuation-reasons"));
  if (!reasons) return;
  const dlg = h("dialog", { id: "discontinue-dialog" }, h("h2", {}, "Discontinue the procedure"),
    h("form", { method: "dialog", onsubmit: async (e) => {
      if (e.submitter?.value === "cancel") return;
      const reason = e.target.reason.value;
      if (await attempt(() => api("POST", `/api/v1/studies/${study.id}/discontinue`, { reason }), "Procedure discontinued")) scheduleRefresh();
    } },
    h("label", {}, "Reason", h("select", { name: "reason", id: "discontinue-reason" },
      reasons.map((r) => h("option", { value: r.value, selected: r.value === "110513" }, r.meaning)))),
    h("p", { class: "dim" }, "The captured images stay; the worklist server is told the procedure was discontinued."),
    h("div", { class: "row" }, h("button", { value: "cancel", formnovalidate: true }, "Cancel"), h("button", { class: "danger", id: "discontinue-go" }, "Discontinue"))));
  document.body.append(dlg);
  dlg.addEventListener("close", () => dlg.remove());
  dlg.showModal();
}

async function closeStudy(study) {
  const r = await attempt(() => api("DELETE", `/api/v1/rooms/${state.room}/study`));
  if (r) { toast(`Study of ${personName(study.patient_name) || "(no name)"} closed; its images stay in Local search`); render(); }
}

// The sources of the room, one card each (by name): their controls are made once and only their
// state follows the events.
function sourcesPanel() {
  const el = h("section", {});
  const sync = keyedList(el, (s) => s.name, sourceCard);
  const update = (info) => {
    const problem = !info ? h("p", { class: "dim" }, "No capture service reports this room.")
      : !info.reachable ? h("p", { class: "error-text" }, `Capture for ${info.room} is not reachable: ${info.error || ""}`) : null;
    if (problem) {
      // The cards leave (their views are kept and come back with the capture service).
      el.className = "panel";
      const said = el.querySelector(":scope > p");
      if (said) swap(said, problem); else el.replaceChildren(h("h2", {}, "Sources"), problem);
      return;
    }
    if (el.className !== "sources") { el.className = "sources"; el.replaceChildren(); }
    sync(info.sources);
  };
  return { el, update };
}
function sourceCard(first) {
  const name = first.name;
  let stateBadge = badge(first.state);
  const spec = h("span", { class: "dim" });
  const preview = h("img", { class: "preview", alt: `live preview of ${name}` });
  // One Record button: what a press does is what it shows at that moment.
  const rec = h("button", { class: "rec", onclick: () => {
    if (["record_start", "record_stop"].includes(rec.dataset.action)) capture(name, rec.dataset.action);
  } });
  let last = h("div");
  const el = h("div", { class: "panel source", "data-source": name },
    h("div", { class: "row" }, h("h3", {}, name), stateBadge, h("span", { class: "spacer" }), spec),
    preview,
    readOnly() ? "" : h("div", { class: "row controls" },
      h("button", { class: "primary", "data-action": "snapshot", onclick: () => capture(name, "snapshot") }, "Snapshot"), rec),
    last);
  const update = (s) => {
    // The timer counts from the recording's real start (the status says how long it has run).
    if (s.state === "recording") state.recording[name] ??= Date.now() - (s.recording_seconds || 0) * 1000;
    else delete state.recording[name];
    stateBadge = swap(stateBadge, badge(s.state));
    setText(spec, `${s.width || "?"}×${s.height || "?"} · ${s.fps_in ? s.fps_in.toFixed(1) : "–"} fps · ${s.dropped_frames} dropped`);
    if (preview.getAttribute("src") !== s.preview_url) preview.src = s.preview_url;
    recordButton(rec, s);
    last = swap(last, lastRecording(s));
  };
  return { el, update };
}
// Stop (with the running time) while recording; Finishing… while the capture service finishes
// the file (an encoder far behind may need a while); Record again once it is done.
function recordButton(rec, s) {
  const action = s.state === "recording" ? "record_stop" : s.state === "stopping" ? "record_stopping" : "record_start";
  rec.disabled = action === "record_stopping";
  if (rec.dataset.action === action) return;
  rec.dataset.action = action;
  if (action === "record_stop") {
    rec.replaceChildren("Stop ", h("span", { class: "rec-timer", "data-timer": s.name }, fmtSeconds((Date.now() - state.recording[s.name]) / 1000)));
  } else rec.replaceChildren(action === "record_start" ? "Record" : "Finishing…");
}
// How the source's last recording ended, as the capture service reports it once known.
function lastRecording(s) {
  const r = s.last_recording;
  if (!r || s.state === "recording") return h("div");
  let text = "Finishing the recording…";
  if (r.state === "done") text = `Last recording kept: ${fmtSeconds(r.duration_s || 0)}, ${r.frames} frames${r.detail ? ` (ended early: ${r.detail})` : ""}`;
  else if (r.state === "empty") text = `Last recording not kept: ${r.detail || "no frame was recorded"}`;
  else if (r.state === "failed") text = `Last recording: ${r.detail || "could not be finished"}`;
  const bad = r.state === "empty" || r.state === "failed";
  return h("div", { class: bad ? "error-text small" : "dim small", "data-last-recording": r.state }, text);
}
setInterval(() => {
  for (const el of document.querySelectorAll("[data-timer]")) {
    const started = state.recording[el.dataset.timer];
    if (started) el.textContent = fmtSeconds((Date.now() - started) / 1000);
  }
}, 500);

const DONE = { snapshot: "Snapshot", record_start: "Recording started", record_stop: "Recording stopped (finishing the file)" };
// The server attaches the media to the room's current study at the moment it captures and names
// that study in its answer; the page reports that answer, never what it showed when the button
// was pressed. The room is fixed when the request leaves: another room picked while it is in
// flight does not take the answer, and an answer naming another study than the one on screen
// (the current study changed on another screen) says so and refreshes the page.
export async function capture(source, action) {
  const room = state.room;
  const shown = state.study?.id ?? null;
  const r = await attempt(() => api("POST", `/api/v1/rooms/${room}/sources/${source}/${action}`));
  if (!r) return;
  const s = r.study;
  const who = s ? `${personName(s.patient_name) || "(no name)"} · ID ${s.patient_id || "–"} · accession ${s.accession_number || "–"}` : "the room's study";
  const text = `${DONE[action]} in ${room} → ${who}`;
  state.lastCapture = { room, studyId: r.study_id, text: `Last capture: ${text}` };
  const elsewhere = room !== state.room;
  const other = !elsewhere && shown && r.study_id && r.study_id !== shown;
  toast(other ? `${text} — not the patient that was shown: the room's current study changed` : text, !!other);
  const line = document.getElementById("last-capture");
  if (line && !elsewhere && line.closest("[data-study]")?.dataset.study === r.study_id) line.textContent = state.lastCapture.text;
  if (!elsewhere) scheduleRefresh();
}

// The study's items by id: a new capture adds its card, a known one has its texts updated (its
// picture or video is not loaded again).
function mediaPanel(study) {
  if (!study) return { el: null, update: () => {} };
  const title = h("h2", {});
  const thumbs = h("div", { class: "thumbs", id: "thumbs" });
  const none = h("p", { class: "dim" }, "Nothing captured yet.");
  const sync = keyedList(thumbs, (m) => m.id, mediaCard);
  const update = (st) => {
    setText(title, `Images and videos (${st.media.length})`);
    thumbs.hidden = !st.media.length;
    none.hidden = !!st.media.length;
    sync(st.media);
  };
  return { el: h("section", { class: "panel" }, title, thumbs, none), update };
}
function mediaCard(m) {
  const label = h("span", {});
  const progress = h("span", { id: `progress-${m.id}` });
  let ledger = h("span");
  const el = h("div", { class: "thumb", "data-media": m.id },
    m.kind === "snapshot" ? h("img", { src: m.content_url, alt: "snapshot", loading: "lazy" })
      : h("video", { src: m.content_url, controls: true, preload: "metadata", "aria-label": "recording" }),
    h("div", { class: "meta" }, label, progress, ledger,
      readOnly() ? "" : h("button", { class: "small danger", title: "delete", "aria-label": `delete this ${m.kind}`, onclick: () => deleteMedia(m) }, "✕")));
  const update = (item) => {
    setText(label, item.kind === "recording" ? `video ${fmtSeconds(item.duration_s || 0)}` : `image ${item.width || ""}×${item.height || ""}`);
    // A conversion under way shows the converter's latest report as the server kept it (a
    // refresh or a reload shows it too); otherwise the state where the ledger does not say it.
    setText(progress, item.progress ? progressText(item.progress) : item.state === item.ledger ? "" : item.state);
    ledger = swap(ledger, itemLedger(item));
  };
  return { el, update };
}
export function progressText(report) {
  return `${report.stage} ${Math.round(report.fraction * 100)}%`;
}
// The item's place in the delivery ledger, each destination's in the title (docs/purge.md).
function itemLedger(m) {
  if (!m.ledger) return h("span");
  const where = Object.entries(m.destinations || {}).map(([d, st]) => `${d}: ${commitmentLabel(st)}`).join(", ");
  return h("span", { class: "item-ledger", "data-ledger": m.ledger, title: where || "not sent" }, badge(m.ledger));
}
async function deleteMedia(m) {
  if (!confirm(`Delete this ${m.kind}? This cannot be undone.`)) return;
  await attempt(() => api("DELETE", `/api/v1/media/${m.id}?confirm=true`), "Deleted");
  scheduleRefresh();
}

// Which captured item a delivery carries: its thumbnail and kind (not a UID tail).
function deliveryItem(d, study) {
  const m = study.media.find((x) => x.id === d.media_id);
  const video = m ? m.kind === "recording" : /\.77\.1\.\d\.1$/.test(d.sop_class_uid || "");
  return h("span", { class: "row item", title: d.sop_instance_uid },
    m && m.kind === "snapshot" ? h("img", { class: "delivery-thumb", src: m.content_url, alt: "" }) : "",
    `${video ? "video" : "image"}${m ? ` #${study.media.indexOf(m) + 1}` : ""}`);
}
// One row per delivery (by id), made again only when what it shows changed.
function deliveriesPanel(study) {
  if (!study) return { el: null, update: () => {} };
  const rows = h("tbody", {});
  const el = h("section", { class: "panel" }, h("h2", {}, "Delivery"),
    h("table", { id: "deliveries" }, h("thead", {}, h("tr", {}, ["Instance", "Destination", "State", "Attempts", "Last error", ""].map((t) => h("th", {}, t)))), rows));
  let current = study;
  const sync = keyedList(rows, (d) => d.id, () => {
    const view = { el: h("tr"), update: (d) => { view.el = swap(view.el, deliveryRow(d, current)); } };
    return view;
  });
  const update = (st) => {
    current = st;
    el.hidden = !st.deliveries.length;
    sync(st.deliveries);
  };
  return { el, update };
}
function deliveryRow(d, study) {
  return h("tr", { "data-delivery": d.id },
    h("td", {}, deliveryItem(d, study)), h("td", {}, d.destination_name), h("td", {}, badge(d.state), d.commitment ? [" ", badge(commitmentLabel(d.commitment))] : ""),
    h("td", {}, d.attempts), h("td", { class: "dim" }, ["sent", "queued"].includes(d.state) ? "" : (d.last_error || "")),
    h("td", { class: "row" }, h("button", { class: "small", onclick: () => attemptsDialog(d) }, "Attempts"),
      d.state.startsWith("failed") && !readOnly() ? h("button", { class: "small", onclick: () => retry(d.id) }, "Retry") : ""));
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
      if (!ids.length) {
        if (e.submitter?.value !== "cancel") { e.preventDefault(); toast("Tick the destinations to forward to", true); }
        return;
      }
      await attempt(() => api("POST", `/api/v1/studies/${study.id}/forward`, { destination_ids: ids }), "Forward queued");
    } },
    // A disabled destination is shown but cannot be ticked: nothing would send to it.
    dests.length ? dests.map((d) => h("label", { class: d.enabled === false ? "row dim" : "row", "data-destination": d.id },
      h("input", { type: "checkbox", value: d.id, disabled: d.enabled === false }),
      ` ${d.name} (${d.kind === "dicomweb" ? d.base_url : `${d.ae_title}@${d.host}:${d.port}`})${d.enabled === false ? " — disabled in Settings" : ""}`))
      : h("p", { class: "dim" }, "No destinations configured (Settings)."),
    h("div", { class: "row" }, h("button", { value: "cancel", formnovalidate: true }, "Cancel"), h("button", { class: "primary", id: "forward-go" }, "Forward"))));
  document.body.append(dlg);
  dlg.addEventListener("close", () => dlg.remove());
  dlg.showModal();
}

// #/patient edits the current study's patient; #/patient/new starts a new study in the room.
export async function viewPatient(arg, setView) {
  // The study edited is the room's current one as the server has it now, in full: neither the
  // page's last copy (another screen may have switched the room since; a reload has none) nor the
  // summary other pages read, which lacks fields the form would send back empty.
  const current = await loadCurrentStudy();
  const study = arg === "new" || !current ? null : await api("GET", `/api/v1/studies/${current.id}`);
  if (arg !== "new" && !study) {
    toast(`${state.room || "The room"} has no current study to edit`, true);
    return route("#/room");
  }
  const p = study || {};
  const form = h("form", { class: "panel", id: "patient-form", onsubmit: async (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    v.modality = v.modality.trim().toUpperCase();  // a CS is upper case (PS3.5 6.2)
    if (study) {
      // Saved only to the study the form was filled for: if the room moved on meanwhile, these
      // values are not given to another patient's images, and the Room shows who is current.
      let moved = false;
      const r = await attempt(async () => {
        const now = await loadCurrentStudy();
        moved = now?.id !== study.id;
        if (moved) throw new Error(`The current study of ${state.room} changed (now: ${whoOf(now) || "none"}); nothing was saved`);
        return api("PATCH", `/api/v1/studies/${study.id}`, v);
      }, "Patient data updated");
      if (r || moved) route("#/room");
    } else {
      await startStudy({ origin: "form", patient: v }, "Study started");
    }
  } },
  h("h1", {}, study ? "Edit patient data" : `New study in ${state.room || "the room"} — patient`), roomLine(current),
  study && study.origin === "worklist" && !study.edited ? h("p", { class: "dim" }, "This study came from the worklist: editing it unlinks it (new Study UID, statement §8.1.5).") : "",
  h("div", { class: "form" },
    field("patient_name", "Patient name (FAMILY^Given)", p.patient_name, { maxlength: 64 }),
    field("patient_id", "Patient ID", p.patient_id, { maxlength: 64 }),
    field("patient_birth_date", "Birth date", dicomDate(p.patient_birth_date), { type: "date" }),
    h("label", {}, "Sex", h("select", { name: "patient_sex" }, ["", "M", "F", "O"].map((s) => h("option", { value: s, selected: p.patient_sex === s }, s || "–")))),
    field("accession_number", "Accession number", p.accession_number, { maxlength: 16 }),
    field("study_description", "Study description", p.study_description, { maxlength: 64 }),
    // §8.1.5: the procedure's modality stays unless changed here (empty: the station's default).
    field("modality", "Modality", p.modality, { maxlength: 16, list: "modality-codes", pattern: "[A-Za-z0-9 _]{0,16}",
      title: "a DICOM modality code (CS), e.g. ES endoscopy, XC external camera, GM microscopy" }),
    h("datalist", { id: "modality-codes" }, [["ES", "Endoscopy"], ["XC", "External-camera photography"], ["GM", "General microscopy"],
      ["SM", "Slide microscopy"], ["US", "Ultrasound"], ["OP", "Ophthalmic photography"], ["OT", "Other"]]
      .map(([code, label]) => h("option", { value: code }, label))),
    field("referring_physician", "Referring physician", p.referring_physician, { maxlength: 64 })),
  h("p", { class: "row" }, h("button", { type: "button", onclick: () => route("#/room") }, "Cancel"),
    study ? "" : h("button", { type: "button", id: "start-unscheduled", onclick: () => startStudy({ origin: "unscheduled" }, "Unscheduled study started") }, "Start without patient data"),
    h("button", { class: "primary", type: "submit", id: "patient-submit" }, study ? "Save changes" : "Start study")));
  setView(form);
}
