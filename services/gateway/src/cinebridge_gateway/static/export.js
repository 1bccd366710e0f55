// Export of the current study: MP4/JPEG files, DICOM media with a DICOMDIR, or a de-identified
// copy (PS3.15 Annex E), as a ZIP download or into the station's export folder. The converter
// writes it; the gateway checks the role and audits it. A viewer never sees the button.
import { api, attempt, fmtBytes, h, personName, toast } from "./lib.js";

const KINDS = [
  ["mp4", "Video and pictures (MP4 / JPEG)"],
  ["dicomdir", "DICOM media with DICOMDIR (CD / USB)"],
  ["deid", "De-identified DICOM copy (teaching)"],
];

export function exportDialog(study) {
  const radios = (name, options, checked) => options.map(([value, label]) =>
    h("label", { class: "row" }, h("input", { type: "radio", name, value, checked: value === checked }), ` ${label}`));
  const captionBox = h("fieldset", { id: "export-caption" }, h("legend", {}, "Caption (patient and date)"),
    radios("caption", [["none", "None"], ["burned", "Burned into the pictures"], ["sidecar", "Side-car text file"]], "none"));
  const deidBox = h("fieldset", { id: "export-deid", hidden: true }, h("legend", {}, "De-identification options"),
    h("label", { class: "row" }, h("input", { type: "checkbox", name: "retain_dates" }), " Keep dates, shifted (Retain Longitudinal Temporal Information)"),
    h("label", { class: "row" }, h("input", { type: "checkbox", name: "clean_descriptors" }), " Keep cleaned descriptions (Clean Descriptors)"),
    h("p", { class: "dim small" }, "Names, IDs, dates and UIDs are replaced; text burned into the pictures is not removed."));
  const status = h("p", { id: "export-status", class: "dim", role: "status" });
  const form = h("form", { method: "dialog", onchange: (e) => {
    const kind = e.currentTarget.querySelector("input[name=kind]:checked").value;
    captionBox.hidden = kind !== "mp4";
    deidBox.hidden = kind !== "deid";
  }, onsubmit: async (e) => {
    if (e.submitter?.value === "cancel") return;
    e.preventDefault();
    const go = e.currentTarget.querySelector("#export-go");
    go.disabled = true;
    status.textContent = "Exporting… (a burned-in caption re-encodes every recording)";
    const result = await runExport(study, new FormData(e.currentTarget));
    go.disabled = false;
    status.textContent = "";
    if (result) showResult(dlg, result);
  } },
  h("fieldset", {}, h("legend", {}, "What"), radios("kind", KINDS, "mp4")),
  captionBox, deidBox,
  h("fieldset", {}, h("legend", {}, "Where"),
    radios("target", [["download", "Download a ZIP"], ["folder", "Write to the export folder (USB stick / network share)"]], "download")),
  status,
  h("div", { class: "row" }, h("button", { value: "cancel", formnovalidate: true }, "Close"),
    h("button", { class: "primary", id: "export-go" }, "Export")));
  const dlg = h("dialog", { id: "export-dialog" },
    h("h2", {}, `Export — ${personName(study.patient_name) || "(no name)"}`), form);
  document.body.append(dlg);
  dlg.addEventListener("close", () => dlg.remove());
  dlg.showModal();
}

async function runExport(study, data) {
  const body = { kind: data.get("kind"), target: data.get("target") };
  if (body.kind === "mp4") body.caption = data.get("caption");
  if (body.kind === "deid") {
    body.retain_dates = data.has("retain_dates");
    body.clean_descriptors = data.has("clean_descriptors");
  }
  return attempt(() => api("POST", `/api/v1/studies/${study.id}/export`, body));
}

function showResult(dlg, result) {
  const where = result.download_url
    ? h("a", { id: "export-download", href: result.download_url, download: "" }, "Download the ZIP")
    : h("span", {}, "Written to ", h("code", { id: "export-folder" }, result.folder));
  dlg.querySelector("#export-result")?.remove();
  dlg.querySelector("form").before(h("div", { id: "export-result", class: "panel" },
    h("p", {}, `${result.files} file(s), ${fmtBytes(result.bytes)}. `, where),
    result.warnings.map((w) => h("p", { class: "error-text export-warning" }, `Warning: ${w}`))));
  toast(result.warnings.length ? "Export ready — read the warnings" : "Export ready", result.warnings.length > 0);
}
