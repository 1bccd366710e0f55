// The local purge policy on screen (docs/purge.md): per study, its delivery ledger state and
// what the policy will do with its local data and when; on the ops page, free space of the media
// store against the watermarks, the warning, studies per ledger state.
import { api, attempt, badge, fmtTime, h, scheduleRefresh, state, swap } from "./lib.js";

const PLAN = {
  purged: (l) => `local data purged ${fmtTime(l.purged_at)}`,
  purging: () => "local data being purged",
  held: () => "held: kept until released",
  "kept-uncommitted": () => "not committed: kept",
  "policy-off": () => "committed; purge policy off: kept",
  scheduled: (l) => `committed; local data purged after ${fmtTime(l.purge_at)}`,
};

// One line under the study, filled when the ledger arrives: the page never waits for the sender
// (while it is away the line stays empty).
export function ledgerLine(study) {
  const slot = h("div", { class: "row small", id: "study-ledger" });
  if (study) refreshLedgerLine(slot, study);
  return slot;
}
// A live event asks again: the line (and its Hold button) is replaced only if the ledger changed.
export function refreshLedgerLine(line, study) {
  api("GET", `/api/v1/studies/${study.id}/ledger`)
    .then((ledger) => { if (line.isConnected) swap(line, retentionLine(study, ledger)); })
    .catch(() => {});
}

// The ledger badge, the plan, Hold/Release for administrators.
function retentionLine(study, ledger) {
  const admin = state.me?.role === "administrator";
  const hold = async (held) => {
    const done = await attempt(() => api(held ? "POST" : "DELETE", `/api/v1/studies/${study.id}/hold`), held ? "Study held" : "Study released");
    if (done) scheduleRefresh();
  };
  return h("div", { class: "row small", id: "study-ledger", "data-ledger": ledger.ledger, "data-purge": ledger.purge },
    h("span", { class: "dim" }, "Ledger "), badge(ledger.ledger),
    h("span", { class: "dim", id: "study-purge-plan" }, (PLAN[ledger.purge] || (() => ledger.purge))(ledger)),
    admin && !["purged", "purging"].includes(ledger.purge)
      ? h("button", { class: "small", id: "hold-button", onclick: () => hold(!ledger.held) }, ledger.held ? "Release" : "Hold") : "");
}

// The ops page's panel, filled when its answer arrives (the sender away: it says so, and the
// rest of the page does not wait).
export function purgePanel() {
  const slot = h("section", { class: "panel", id: "purge" }, h("h2", {}, "Local purge"), h("div", { class: "dim" }, "…"));
  api("GET", "/api/v1/ops/purge")
    .then((p) => slot.replaceChildren(...purgeView(p)))
    .catch((err) => slot.replaceChildren(h("h2", {}, "Local purge"), h("div", { class: "error-text" }, String(err.message || err))));
  return slot;
}

function purgeView(p) {
  return [h("h2", {}, "Local purge"),
    p.warning ? h("div", { class: "error-text", id: "purge-warning" },
      `Media store ${p.free_percent.toFixed(1)} % free, below the low watermark (${p.low_watermark_percent} %), and nothing may be purged: ${p.kept_uncommitted} studies not committed, ${p.held} held.`) : "",
    h("div", {}, `${p.enabled ? "on" : "off"} · retention ${p.retention_days} days after commitment · watermarks ${p.low_watermark_percent} % → ${p.high_watermark_percent} % free · now ${p.free_percent.toFixed(1)} % free`),
    h("div", { class: "row", id: "ledger-counts" }, Object.entries(p.ledger).map(([s, n]) => h("span", { class: "fact" }, badge(s), ` ${n}`)))];
}
