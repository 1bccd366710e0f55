// Settings: station, the station's own SCP, destinations (C-STORE or STOW-RS), worklist servers (Echo on
// each). Administrators edit; others read.
import { api, attempt, badge, field, formValues, h, render, state } from "./lib.js";

export async function viewSettings(arg, setView) {
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
    v.purge_enabled = !!e.target.purge_enabled.checked;
    await attempt(() => api("PUT", "/api/v1/settings/station", v), "Settings saved");
  } },
  h("h2", {}, "Station"),
  h("div", { class: "form" },
    field("station_name", "Station name", station.station_name, { disabled: !admin, maxlength: 16 }),
    field("local_ae_title", "Calling AE title of this station (C-STORE, C-FIND, C-ECHO requests)", station.local_ae_title, { disabled: !admin, maxlength: 16 }),
    h("label", {}, "Character set (§6)", select("character_set", ["ISO_IR 192", "ISO_IR 100", "ISO_IR 101", "ISO_IR 144", "ISO_IR 126", "ISO_IR 6"].map((c) => [c, c]), station.character_set)),
    h("label", {}, "Worklist character set", select("worklist_character_set", ["ISO_IR 192", "ISO_IR 100", "ISO_IR 101", "ISO_IR 144", "ISO_IR 126", "ISO_IR 6"].map((c) => [c, c]), station.worklist_character_set)),
    h("label", {}, "Video transfer syntax", select("video_transfer_syntax", [["1.2.840.10008.1.2.4.100", "MPEG-2 MP@ML"], ["1.2.840.10008.1.2.4.101", "MPEG-2 MP@HL"], ["1.2.840.10008.1.2.4.102", "H.264 HP@L4.1"], ["1.2.840.10008.1.2.4.103", "H.264 BD HP@L4.1"]], station.video_transfer_syntax)),
    h("label", {}, "IOD", select("iod", [["standard", "Standard (by Modality)"], ["videostation", "Secondary Capture (VideoStation-compatible)"], ["mf-sc", "SC / Multi-frame True Color SC"], ["vl", "VL Endoscopic / Video"], ["vl-photographic", "VL Photographic / Video"]], station.iod === "sc" ? "videostation" : station.iod)),
    h("label", { class: "row" }, h("input", { type: "checkbox", name: "wildcard_matching", checked: station.wildcard_matching, disabled: !admin }), "Worklist wildcard matching"),
    h("label", {}, "Performed procedure step (MPPS) starts", select("mpps_trigger", [["first-capture", "at the first snapshot or recording"], ["study-start", "when the study is started"]], station.mpps_trigger)),
    // Local purge policy (docs/purge.md): only what every destination requiring commitment committed.
    h("label", { class: "row" }, h("input", { type: "checkbox", name: "purge_enabled", checked: station.purge_enabled, disabled: !admin }), "Purge local data of committed studies"),
    field("purge_retention_days", "Retention after commitment (days)", station.purge_retention_days, { type: "number", min: 0, max: 36500, step: "any", disabled: !admin }),
    field("purge_low_watermark_percent", "Purge the oldest committed first below (% free)", station.purge_low_watermark_percent, { type: "number", min: 0, max: 100, step: "any", disabled: !admin }),
    field("purge_high_watermark_percent", "... until free space is back above (% free)", station.purge_high_watermark_percent, { type: "number", min: 0, max: 100, step: "any", disabled: !admin })),
  admin ? h("p", {}, h("button", { class: "primary", id: "station-save" }, "Save settings")) : h("p", { class: "dim" }, "Only an administrator can change settings."));

  // Add, or edit the destination picked with "Edit" (its other settings are kept). A DIMSE
  // destination has an AE title, host and port; a DICOMweb one (STOW-RS) a base URL and its
  // authentication. The password/token is write-only: left empty on an edit, the stored one stays.
  let editing = null;
  const destSubmit = h("button", { class: "primary", id: "destination-save" }, "Add");
  // Storage Commitment (PS3.4 Annex J): ask the archive to commit each study it acknowledged.
  const dimseFields = [field("ae_title", "Called AE title (the destination's)", "", { maxlength: 16 }),
    field("host", "Host", ""), field("port", "Port", "104", { type: "number", min: 1, max: 65535 }),
    h("label", { class: "row" }, h("input", { type: "checkbox", name: "commitment_required" }), "Commitment required"),
    field("commitment_timeout_s", "Commitment report time-out (s)", "300", { type: "number", min: 1, max: 604800 }),
    field("commitment_retries", "Commitment retries", "3", { type: "number", min: 0, max: 100 })];
  const webFields = [field("base_url", "DICOMweb base URL", "", { type: "url", placeholder: "https://archive/dicom-web" }),
    h("label", {}, "Authentication", select("auth", [["none", "None"], ["basic", "Basic"], ["bearer", "Bearer token"]], "none")),
    field("username", "User", "", { autocomplete: "off" }),
    field("secret", "Password or token (empty: keep)", "", { type: "password", autocomplete: "new-password" }),
    h("label", { class: "row" }, h("input", { type: "checkbox", name: "tls_verify", checked: true }), "Verify the certificate"),
    field("ca_file", "CA file on the sender (optional)", "")];
  const showKind = (kind) => { for (const el of dimseFields) el.hidden = kind !== "dimse"; for (const el of webFields) el.hidden = kind === "dimse"; };
  const kindSelect = select("kind", [["dimse", "DIMSE (C-STORE)"], ["dicomweb", "DICOMweb (STOW-RS)"]], "dimse");
  kindSelect.addEventListener("change", () => showKind(kindSelect.value));
  const destForm = h("form", { class: "row", id: "destination-form", onsubmit: async (e) => {
    e.preventDefault();
    const v = Object.fromEntries(Object.entries(formValues(e.target)).filter(([, x]) => x !== ""));
    if (v.port) v.port = Number(v.port);
    v.tls_verify = !!e.target.tls_verify.checked;
    v.commitment_required = v.kind !== "dicomweb" && !!e.target.commitment_required.checked;
    for (const k of ["commitment_timeout_s", "commitment_retries"]) if (v[k] !== undefined) v[k] = Number(v[k]);
    const { health, last_error, secret_set, ...kept } = editing || {};
    const body = editing ? { ...kept, ...v, id: editing.id } : v;
    if (await attempt(() => api("POST", "/api/v1/settings/destinations", body), editing ? "Destination updated" : "Destination saved")) render();
  } }, field("name", "Name", "", { required: true }), h("label", {}, "Type", kindSelect), ...dimseFields, ...webFields,
  destSubmit,
  ...echoButtonFromForm());
  showKind("dimse");
  const editDestination = (d) => {
    editing = d;
    for (const k of ["name", "kind", "ae_title", "host", "port", "base_url", "auth", "username", "ca_file", "commitment_timeout_s", "commitment_retries"]) destForm.elements[k].value = d[k] ?? "";
    destForm.elements.commitment_required.checked = !!d.commitment_required;
    destForm.elements.secret.value = "";
    destForm.elements.tls_verify.checked = d.tls_verify !== false;
    showKind(d.kind || "dimse");
    destSubmit.textContent = `Save ${d.name}`;
    destForm.scrollIntoView({ block: "center" });
  };
  const setEnabled = async (d, enabled) => {
    const { health, last_error, secret_set, ...kept } = d;
    if (await attempt(() => api("POST", "/api/v1/settings/destinations", { ...kept, enabled }), `${d.name} ${enabled ? "enabled" : "disabled"}`)) render();
  };
  function echoButtonFromForm() {
    const out = h("span", { class: "echo-result", id: "adhoc-echo-result" });
    return [h("button", { type: "button", id: "adhoc-echo", onclick: async () => {
      const v = formValues(destForm); out.textContent = "…";
      echoResult(out, await attempt(() => api("POST", "/api/v1/settings/echo", { ae_title: v.ae_title, host: v.host, port: Number(v.port) })));
    } }, "Echo"), out];
  }
  const destTable = h("table", { id: "destinations" }, h("tr", {}, ["Name", "AE title", "Host or URL", "Port", "Enabled", ""].map((t) => h("th", {}, t))),
    dests.map((d) => h("tr", { "data-destination": d.id }, h("td", {}, d.name),
      ...(d.kind === "dicomweb" ? [h("td", {}, "STOW-RS"), h("td", {}, d.base_url), h("td", {}, d.auth === "none" ? "" : d.auth)]
        : [h("td", {}, d.ae_title), h("td", {}, d.host), h("td", {}, d.port)]),
      h("td", {}, d.enabled ? badge("enabled") : badge("disabled"), d.commitment_required ? [" ", badge("commitment required")] : ""), h("td", { class: "row" }, ...echoButton(`/api/v1/settings/destinations/${d.id}/echo`),
        admin ? h("button", { class: "small", "data-action": "edit", onclick: () => editDestination(d) }, "Edit") : "",
        admin ? h("button", { class: "small", "data-action": "toggle", onclick: () => setEnabled(d, !d.enabled) }, d.enabled ? "Disable" : "Enable") : "",
        admin ? h("button", { class: "small danger", onclick: async () => { if (confirm(`Delete ${d.name}?`) && await attempt(() => api("DELETE", `/api/v1/settings/destinations/${d.id}`), "Deleted") !== undefined) render(); } }, "Delete") : ""))));
  const mppsOf = (s) => (s.mpps_enabled ? `${s.mpps_ae || s.called_ae}@${s.mpps_host || s.host}:${s.mpps_port || s.port}` : "off");
  const serverTable = h("table", { id: "worklist-servers" }, h("tr", {}, ["Name", "Called AE", "Host", "Port", "MPPS SCP", ""].map((t) => h("th", {}, t))),
    servers.map((s) => h("tr", { "data-server": s.id }, h("td", {}, s.name || s.id), h("td", {}, s.called_ae), h("td", {}, s.host), h("td", {}, s.port), h("td", { "data-mpps": s.id }, mppsOf(s)),
      h("td", { class: "row" }, ...echoButton(`/api/v1/settings/worklist-servers/${s.id}/echo`),
        admin ? h("button", { class: "small", "data-action": "edit", onclick: () => editServer(s) }, "Edit") : "",
        admin ? h("button", { class: "small danger", "data-action": "delete", onclick: async () => {
          if (confirm(`Delete worklist server ${s.name || s.id}?`) && await attempt(() => api("DELETE", `/api/v1/settings/worklist-servers/${s.id}`), "Worklist server deleted") !== undefined) render();
        } }, "Delete") : ""))));
  // Add, or edit the server picked with "Edit": its id stays, and the settings this form does
  // not show (character set, C keys, time-out, entry limit, position) are kept.
  let editingServer = null;
  const serverSubmit = h("button", { class: "primary", id: "worklist-server-save" }, "Add");
  const serverForm = admin ? h("form", { class: "row", id: "worklist-server-form", onsubmit: async (e) => {
    e.preventDefault(); const v = formValues(e.target); v.port = Number(v.port);
    // MPPS SCP (PS3.4 Annex F): AE title, host and port left empty take the worklist server's.
    v.mpps_enabled = !!e.target.mpps_enabled.checked;
    for (const k of ["mpps_ae", "mpps_host", "mpps_port"]) if (!v[k]) v[k] = null;
    if (v.mpps_port) v.mpps_port = Number(v.mpps_port);
    const body = editingServer ? { ...editingServer, ...v, id: editingServer.id } : v;
    if (await attempt(() => api("POST", "/api/v1/settings/worklist-servers", body), editingServer ? "Worklist server updated" : "Worklist server saved")) render();
  } }, field("id", "Id (a-z0-9)", "", { required: true, pattern: "[a-z0-9][a-z0-9_-]{0,31}" }), field("name", "Name", ""),
  field("called_ae", "Called AE", "", { required: true, maxlength: 16 }), field("host", "Host", "", { required: true }),
  field("port", "Port", "104", { type: "number", min: 1, max: 65535 }),
  h("label", { class: "row" }, h("input", { type: "checkbox", name: "mpps_enabled" }), "MPPS SCP"),
  field("mpps_ae", "MPPS AE title", "", { maxlength: 16 }), field("mpps_host", "MPPS host", ""),
  field("mpps_port", "MPPS port", "", { type: "number", min: 1, max: 65535 }), serverSubmit) : "";
  const editServer = (srv) => {
    editingServer = srv;
    for (const k of ["id", "name", "called_ae", "host", "port", "mpps_ae", "mpps_host", "mpps_port"]) serverForm.elements[k].value = srv[k] ?? "";
    serverForm.elements.mpps_enabled.checked = !!srv.mpps_enabled;
    serverForm.elements.id.readOnly = true;
    serverSubmit.textContent = `Save ${srv.name || srv.id}`;
    serverForm.scrollIntoView({ block: "center" });
    serverForm.elements.host.focus();
  };
  const scpPanel = h("section", { class: "panel", id: "local-scp" }, h("h2", {}, "Storage SCP of this station (statement Table 25)"),
    h("p", { class: "dim" }, "The AE title peers call to send to this station (set by CB_SCP_AE_TITLE); it is not the calling AE title above."),
    scps.length ? h("table", {}, h("tr", {}, ["Instance", "AE title", "Ports", "State", ""].map((t) => h("th", {}, t))),
      scps.map((i) => h("tr", {}, h("td", {}, i.instance), h("td", {}, i.detail.ae_title), h("td", {}, i.detail.ports || ""), h("td", {}, badge(i.state)),
        h("td", { class: "row" }, ...echoButton("/api/v1/settings/echo", { ae_title: i.detail.ae_title, host: i.detail.host || "127.0.0.1", port: Number((i.detail.ports || "").split(",")[0]) })))))
      : h("p", { class: "dim" }, "No SCP instance reports (its AE title and port are set by CB_SCP_AE_TITLE / CB_SCP_PORT)."));
  setView(h("h1", {}, "Settings"), stationForm, scpPanel,
    h("section", { class: "panel" }, h("h2", {}, "Destinations (C-STORE, STOW-RS)"), destTable, admin ? destForm : ""),
    h("section", { class: "panel" }, h("h2", {}, "Worklist servers"), serverTable, serverForm));
}
