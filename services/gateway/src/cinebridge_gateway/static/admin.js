// Hospital IT's screens: users and roles, API tokens, the audit log; and every user's own
// password (asked first when it was a one-time or reset password).
import { $, api, attempt, badge, field, fmtTime, formValues, h, personName, render, route, state, toast } from "./lib.js";

const ROLES = [["viewer", "viewer (read only)"], ["operator", "operator"], ["administrator", "administrator"]];
const roleSelect = (name, value, extra) => h("select", { name, ...(extra || {}) },
  ROLES.map(([v, t]) => h("option", { value: v, selected: v === value }, t)));

export async function viewAdmin(arg, setView) {
  if (state.me.role !== "administrator") {
    setView(h("h1", {}, "Administration"), h("p", { class: "dim" }, "Only an administrator manages users and tokens; the audit log is on this page for administrators."));
    return;
  }
  const tab = arg || "users";
  const tabs = h("div", { class: "row tabs" }, [["users", "Users"], ["tokens", "API tokens"], ["audit", "Audit log"]].map(([k, t]) =>
    h("a", { href: `#/admin/${k}`, class: k === tab ? "button active" : "button", id: `tab-${k}` }, t)));
  const body = await ({ users: usersPanel, tokens: tokensPanel, audit: auditPanel }[tab] || usersPanel)();
  setView(h("h1", {}, "Administration"), tabs, body);
}

// ---------------------------------------------------------------- users
async function usersPanel() {
  const users = (await attempt(() => api("GET", "/api/v1/users"))) || [];
  const create = h("form", { class: "row", id: "user-form", onsubmit: async (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    if (await attempt(() => api("POST", "/api/v1/users", v), `User ${v.username} created; they set their own password at first log-in`)) render();
  } }, field("username", "User name", "", { required: true, pattern: "[A-Za-z0-9_.@\\-]{1,64}" }),
  field("password", "One-time password (8+)", "", { type: "password", required: true, minlength: 8, autocomplete: "new-password" }),
  h("label", {}, "Role", roleSelect("role", "operator")), h("button", { class: "primary" }, "Create user"));
  const change = async (u, body, ok) => { if (await attempt(() => api("PATCH", `/api/v1/users/${encodeURIComponent(u.username)}`, body), ok)) render(); };
  const rows = users.map((u) => h("tr", { "data-user": u.username },
    h("td", {}, u.username, u.username === state.me.username ? h("span", { class: "dim" }, " (you)") : ""),
    h("td", {}, roleSelect("role", u.role, { class: "inline", "aria-label": `role of ${u.username}`, disabled: u.username === state.me.username,
      onchange: (e) => change(u, { role: e.target.value }, `${u.username} is now ${e.target.value}`) })),
    h("td", {}, u.disabled ? badge("disabled") : badge("ok"), u.must_change_password ? h("span", { class: "dim" }, " password to change") : ""),
    h("td", {}, fmtTime(u.created_at)),
    h("td", { class: "row" },
      u.username === state.me.username ? "" : h("button", { class: "small", "data-action": "toggle", onclick: () =>
        change(u, { disabled: !u.disabled }, u.disabled ? `${u.username} enabled` : `${u.username} disabled; their sessions ended`) }, u.disabled ? "Enable" : "Disable"),
      h("button", { class: "small", "data-action": "reset", onclick: () => {
        const pw = prompt(`New one-time password for ${u.username} (8 characters or more); they change it at their next log-in:`);
        if (pw) change(u, { password: pw }, `Password of ${u.username} reset`);
      } }, "Reset password"))));
  return h("section", { class: "panel" }, h("h2", {}, "Users"),
    h("p", { class: "dim" }, "viewer: dashboards and the ops page, no changes · operator: capture, studies, save, forward · administrator: also settings, users, tokens."),
    h("table", { id: "users" }, h("tr", {}, ["User", "Role", "State", "Created", ""].map((t) => h("th", {}, t))), rows), create);
}

// ---------------------------------------------------------------- API tokens
async function tokensPanel() {
  const tokens = (await attempt(() => api("GET", "/api/v1/tokens"))) || [];
  const shown = h("div", { id: "new-token" });
  const create = h("form", { class: "row", id: "token-form", onsubmit: async (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    const body = { name: v.name, role: v.role, expires_in_days: v.expires_in_days ? Number(v.expires_in_days) : null };
    const t = await attempt(() => api("POST", "/api/v1/tokens", body), `Token ${v.name} created`);
    if (!t) return;
    // Shown once: the gateway keeps only its SHA-256.
    shown.replaceChildren(h("div", { class: "panel" }, h("strong", {}, "Copy this token now — it is not shown again:"),
      h("div", { class: "token-once", id: "token-value" }, t.token),
      h("p", { class: "dim" }, "Send it as: Authorization: Bearer <token>")));
    e.target.reset();
    const list = await attempt(() => api("GET", "/api/v1/tokens"));
    if (list) $("#tokens")?.replaceWith(tokenTable(list));
  } }, field("name", "Name", "", { required: true, maxlength: 64 }), h("label", {}, "Role", roleSelect("role", "viewer")),
  field("expires_in_days", "Expires after (days, empty: never)", "90", { type: "number", min: 1, max: 3650 }),
  h("button", { class: "primary" }, "Create token"));
  return h("section", { class: "panel" }, h("h2", {}, "API tokens (ops tools, dashboards)"), tokenTable(tokens), create, shown);
}
function tokenTable(tokens) {
  return h("table", { id: "tokens" }, h("tr", {}, ["Name", "Role", "Created by", "Created", "Expires", "Last used", "State", ""].map((t) => h("th", {}, t))),
    tokens.map((t) => {
      const expired = t.expires_at && new Date(t.expires_at) < new Date();
      return h("tr", { "data-token": t.id }, h("td", {}, t.name), h("td", {}, t.role), h("td", {}, t.created_by || ""),
        h("td", {}, fmtTime(t.created_at)), h("td", {}, t.expires_at ? fmtTime(t.expires_at) : "never"), h("td", {}, fmtTime(t.last_used)),
        h("td", {}, t.revoked_at ? badge("revoked") : expired ? badge("expired") : badge("ok")),
        h("td", {}, t.revoked_at ? "" : h("button", { class: "small danger", onclick: async () => {
          if (confirm(`Revoke token ${t.name}? Tools using it stop working.`) && await attempt(() => api("DELETE", `/api/v1/tokens/${t.id}`), `Token ${t.name} revoked`) !== undefined) render();
        } }, "Revoke")));
    }));
}

// ---------------------------------------------------------------- audit log
async function auditPanel() {
  const results = h("div", { id: "audit-results" });
  const query = (form) => {
    const v = formValues(form);
    const q = new URLSearchParams();
    for (const k of ["actor", "action", "patient"]) if (v[k]) q.set(k, v[k].trim());
    // datetime-local is the browser's local time: sent with its offset.
    for (const k of ["since", "until"]) if (v[k]) q.set(k, new Date(v[k]).toISOString());
    return q;
  };
  const search = async (form) => {
    const q = query(form);
    q.set("limit", "200");
    const rows = await attempt(() => api("GET", `/api/v1/audit?${q}`));
    if (!rows) return;
    results.replaceChildren(h("table", { id: "audit" }, h("tr", {}, ["When", "User", "Action", "Patient", "Target", "Client", "Detail"].map((t) => h("th", {}, t))),
      rows.map((r) => h("tr", {}, h("td", {}, fmtTime(r.at)), h("td", {}, r.actor), h("td", {}, r.action),
        h("td", {}, r.patient_name || r.patient_id ? `${personName(r.patient_name)} (${r.patient_id || "–"})` : ""),
        h("td", {}, r.target || ""), h("td", { class: "dim" }, r.client || ""),
        h("td", { class: "dim small" }, Object.keys(r.detail || {}).length ? JSON.stringify(r.detail) : "")))),
    rows.length ? "" : h("p", { class: "dim" }, "No audit entries match."));
  };
  const form = h("form", { class: "form", id: "audit-form", onsubmit: (e) => { e.preventDefault(); search(e.target); } },
    field("actor", "User", ""), field("action", "Action (e.g. login, study_created)", ""), field("patient", "Patient name or ID", ""),
    field("since", "From", "", { type: "datetime-local" }), field("until", "To", "", { type: "datetime-local" }),
    h("div", { class: "row" }, h("button", { class: "primary", id: "audit-search" }, "Filter"),
      h("button", { type: "button", id: "audit-csv", onclick: () => { location.href = `/api/v1/audit.csv?${query(form)}`; } }, "Export CSV")));
  search(form);
  return h("section", { class: "panel" }, h("h2", {}, "Audit log"), form, results);
}

// ---------------------------------------------------------------- own password
export async function viewPassword(arg, setView) {
  const forced = state.me.must_change_password;
  const form = h("form", { class: "panel login", id: "password-form", onsubmit: async (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    if (v.new_password !== v.repeat) { toast("The two new passwords differ", true); return; }
    const done = await attempt(() => api("POST", "/api/v1/auth/password", { current_password: v.current_password, new_password: v.new_password }), "Password changed");
    if (done !== undefined) { state.me.must_change_password = false; route("#/room"); }
  } },
  h("h1", {}, "Change password"),
  forced ? h("p", { class: "note", id: "password-required" }, "This password was given to you once: choose your own before you go on.") : "",
  field("current_password", "Current password", "", { type: "password", required: true, autocomplete: "current-password" }),
  field("new_password", "New password (8 characters or more)", "", { type: "password", required: true, minlength: 8, autocomplete: "new-password" }),
  field("repeat", "New password again", "", { type: "password", required: true, minlength: 8, autocomplete: "new-password" }),
  h("p", {}, h("button", { class: "primary", id: "password-submit" }, "Change password")));
  setView(form);
}
