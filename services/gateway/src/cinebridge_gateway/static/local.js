// The LOCAL dialog (statement §4.1.3): search the station's studies, open one as the room's
// current study, start a new study for its patient, or give its patient to the current study.
import { api, attempt, badge, commitmentLabel, dicomDate, field, formValues, h, loadCurrentStudy, openStudy, personName, readOnly,
         render, roomLine, route, startStudy, state, whoOf } from "./lib.js";

// ---------------------------------------------------------------- local search dialog
export async function viewLocal(arg, setView) {
  const results = h("div", { id: "local-results" });
  // Opened by its URL the page still knows the room's current study (from the server).
  const current = await loadCurrentStudy();
  const search = async (form) => {
    const v = Object.entries(formValues(form)).filter(([, x]) => x !== "");
    const q = new URLSearchParams(v.map(([k, x]) => [k, k.startsWith("date") ? x.replaceAll("-", "") : x]));
    q.set("ledger", "true");
    const rows = await attempt(() => api("GET", `/api/v1/studies?${q}`));
    if (!rows) return;
    results.replaceChildren(h("table", {}, h("tr", {}, ["Patient", "ID", "Accession", "Date", "Origin", "Media", "Status", "Ledger", ""].map((t) => h("th", {}, t))),
      rows.map((s) => h("tr", { "data-study": s.id }, h("td", {}, personName(s.patient_name)), h("td", {}, s.patient_id), h("td", {}, s.accession_number),
        h("td", {}, dicomDate(s.study_date)), h("td", {}, s.origin === "received" ? badge("received by this station") : s.origin, s.received_back ? [" ", badge("received back")] : ""), h("td", {}, s.media_count ?? ""), h("td", {}, badge(s.status), s.commitment ? [" ", badge(commitmentLabel(s.commitment))] : ""),
        h("td", {}, s.ledger ? h("span", { class: "ledger-badge", "data-ledger": s.ledger, title: "delivery ledger" }, badge(s.ledger)) : ""),
        readOnly() ? h("td", {}) : h("td", { class: "row" }, s.origin === "received" ? "" : h("button", { class: "small", onclick: () => openStudy(s.id) }, "Open"),
          h("button", { class: "small", onclick: () => newForPatient(s) }, "New study"),
          state.study && state.study.id !== s.id ? h("button", { class: "small", onclick: () => takePatient(s) }, "Use for current study") : "")))),
    rows.length ? "" : h("p", { class: "dim" }, "No local studies match."));
  };
  const form = h("form", { class: "panel", id: "local-form", onsubmit: (e) => { e.preventDefault(); search(e.target); } },
    h("h1", {}, "Local studies"), roomLine(current),
    h("div", { class: "form" }, field("q", "Name, patient ID or accession", ""), field("date_from", "From", "", { type: "date" }),
      field("date_to", "To", "", { type: "date" }),
      h("label", {}, "Status", h("select", { name: "status" }, ["", "non-converted", "converted", "sent", "failed", "received"].map((s) => h("option", { value: s }, s || "any"))))),
    h("p", {}, h("button", { class: "primary", type: "submit", id: "local-search" }, "Search")));
  setView(form, h("section", { class: "panel" }, results));
  search(form);
}
// LOCAL dialog on the current study: its patient becomes this one (statement §4.1.3: worklist
// data is dropped and the Study UID regenerated, which the edit rule does).
// The study given the patient is the one this page named as current: if the room moved on
// meanwhile (another screen started or closed a study), nothing changes and the page shows the
// new state.
async function takePatient(s) {
  const shown = state.study;
  const patient = { patient_name: s.patient_name, patient_id: s.patient_id, patient_birth_date: s.patient_birth_date, patient_sex: s.patient_sex };
  const r = await attempt(async () => {
    const now = await loadCurrentStudy();
    if (now?.id !== shown.id) throw new Error(`The current study of ${state.room} changed (now: ${whoOf(now) || "none"}); nothing was changed`);
    return api("PATCH", `/api/v1/studies/${shown.id}`, patient);
  }, "Patient taken for the current study");
  if (r) route("#/room"); else render();
}
async function newForPatient(s) {
  await startStudy({ origin: "local", from_study_id: s.id }, "New study for this patient");
}
