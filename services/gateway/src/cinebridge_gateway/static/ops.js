// Ops: health of every service, rooms and sources, job queues, unsent and failed deliveries,
// studies not committed in time, dead letters, SCP received counts, disk headroom.
import { api, attempt, badge, fmtBytes, fmtTime, h, render, scheduleRefresh } from "./lib.js";
import { purgePanel } from "./retention.js";

// Heartbeats refresh the page over the event stream; while NATS is away none arrive, so the
// page also asks every 4 s and shows a dependency outage by itself.
// A summary slow to come (a dependency waited out) is not asked for again meanwhile: each new
// render would take the place of the one about to paint, and the page would never show.
let pending = false;
export const opsPending = () => pending;
setInterval(() => { if (location.hash.startsWith("#/ops") && !document.hidden && !pending) scheduleRefresh(); }, 4000);
// What the database holds is null in the summary while PostgreSQL is away.
const orNA = (value, show) => (value === null || value === undefined ? h("span", { class: "dim" }, "database unavailable") : show(value));

// ---------------------------------------------------------------- ops dashboard
export async function viewOps(arg, setView) {
  pending = true;
  let s;
  try {
    s = await api("GET", "/api/v1/ops/summary");
  } finally {
    pending = false;
  }
  const purge = purgePanel();
  const tbl = (id, head, rows) => h("table", { id }, h("tr", {}, head.map((t) => h("th", {}, t))), rows);
  setView(h("h1", {}, "Operations"),
    h("div", { class: "grid" },
      h("div", { class: "panel", id: "health-status" }, h("h2", {}, "Health"), badge(s.health.status),
        h("ul", { class: "components" }, Object.entries(s.health.components || {}).map(([name, c]) =>
          h("li", { "data-component": name }, `${name === "postgres" ? "PostgreSQL" : name === "nats" ? "NATS" : name} `, badge(c.state),
            c.state === "up" ? "" : h("span", { class: "dim" }, ` ${c.detail}`))))),
      h("div", { class: "panel" }, h("h2", {}, "Disk headroom"), h("div", { id: "disk" }, `${fmtBytes(s.disk.free_bytes)} free of ${fmtBytes(s.disk.total_bytes)}`)),
      h("div", { class: "panel" }, h("h2", {}, "Unsent"), h("div", {}, orNA(s.deliveries, (d) => `${d.pending} deliveries; oldest ${fmtTime(d.oldest_unsent_at)}`)), h("div", { class: "dim" }, orNA(s.outbox, (o) => `outbox ${o.pending} pending`))),
      h("div", { class: "panel" }, h("h2", {}, "Dead letters"), h("div", {}, orNA(s.dead_letters, (n) => String(n)))),
      h("div", { class: "panel" }, h("h2", {}, "SCP received"), h("div", {}, s.received ? `${s.received.instances} instances (${s.received.last_24h} in 24 h)` : "–")),
      h("div", { class: "panel" }, h("h2", {}, "Local studies"), h("div", {}, orNA(s.studies, (n) => String(n))))),
    purge,
    h("section", { class: "panel" }, h("h2", {}, "Services"), tbl("health", ["Service", "Instance", "Room", "State", "Last seen", "Restarts", "Version", ""],
      s.health.instances.map((i) => h("tr", {}, h("td", {}, i.service), h("td", {}, i.instance), h("td", {}, i.room || ""), h("td", {}, badge(i.state)),
        h("td", {}, `${i.age_s} s ago`),
        h("td", { class: i.previous_end === "ended unexpectedly" ? "error-text" : "" },
          i.restarts ? `${i.restarts}, last ${fmtTime(i.restarted_at)} (${i.previous_end})` : "0"),
        h("td", { class: "dim" }, i.version),
        h("td", {}, i.health_url ? h("a", { href: `/api/v1/services/${i.service}/${i.instance}/metrics`, target: "_blank" }, "metrics") : ""))))),
    h("section", { class: "panel" }, h("h2", {}, "Rooms and sources"), tbl("sources", ["Room", "Source", "", "State", "fps in", "fps encoded", "Dropped", "Disk free"],
      s.rooms.flatMap((r) => r.reachable ? r.sources.map((src) => h("tr", {}, h("td", {}, r.room), h("td", {}, src.name),
        h("td", {}, src.signal ? h("img", { class: "source-thumb", alt: `thumbnail of ${src.name}`, src: src.thumbnail_url }) : ""), h("td", {}, badge(src.state)),
        h("td", {}, src.fps_in?.toFixed(1) ?? "–"), h("td", {}, src.fps_encoded?.toFixed(1) ?? "–"), h("td", {}, src.dropped_frames), h("td", {}, fmtBytes(r.disk_free_bytes))))
        : [h("tr", {}, h("td", {}, r.room), h("td", { colspan: 7, class: "error-text" }, r.error || "unreachable"))]))),
    h("section", { class: "panel" }, h("h2", {}, "Job queues"), tbl("queues", ["Consumer", "Pending", "In flight", "Redelivered"],
      s.queues.map((q) => h("tr", {}, h("td", {}, q.consumer), h("td", {}, q.pending), h("td", {}, q.in_flight), h("td", {}, q.redelivered))))),
    h("section", { class: "panel" }, h("h2", {}, "Failed deliveries"), tbl("failed", ["When", "Destination", "State", "Attempts", "Status", "Error", ""],
      (s.failed_deliveries || []).map((d) => h("tr", {}, h("td", {}, fmtTime(d.updated_at)), h("td", {}, d.destination_name), h("td", {}, badge(d.state)),
        h("td", {}, d.attempts), h("td", {}, d.last_status ?? ""), h("td", { class: "dim" }, d.last_error || ""),
        h("td", {}, h("button", { class: "small", onclick: async () => { await attempt(() => api("POST", `/api/v1/deliveries/${d.id}/retry`), "Retry queued"); render(); } }, "Retry")))))),
    // Storage Commitment (PS3.4 Annex J): studies an archive that must commit has not committed
    // CB_GATEWAY_COMMITMENT_OVERDUE_S after they were sent.
    h("section", { class: "panel" }, h("h2", {}, `Not committed after ${Math.round(s.uncommitted_after_s / 60)} min`),
      orNA(s.uncommitted, (rows) => tbl("uncommitted", ["Sent", "Destination", "Study", "Patient ID", "Accession", "Instances", "Commit-failed", "Reason"],
        rows.map((u) => h("tr", {}, h("td", {}, fmtTime(u.sent_at)), h("td", {}, u.destination),
          h("td", { class: "dim" }, u.study_id ? u.study_id.slice(0, 8) : ""), h("td", {}, u.patient_id || ""),
          h("td", {}, u.accession_number || ""), h("td", {}, u.instances), h("td", {}, u.failed), h("td", { class: "dim" }, u.reason || "")))))));
}
