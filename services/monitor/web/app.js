// gridflow operators' monitor: one page, polling the monitor's JSON API.
"use strict";

const REFRESH_MS = 3000;
const TIERS = ["compound", "area", "community", "street", "district"];
const TIER_ZH = {compound: "小区", area: "片区", community: "社区", street: "街道", district: "区"};
const state = {tab: "overview", grid: null, departments: {}, timer: null, caseId: null};

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const kid of kids) e.append(kid instanceof Node ? kid : document.createTextNode(kid ?? ""));
  return e;
};
const fmtTime = (iso) => iso ? new Date(iso).toLocaleString("zh-CN", {hour12: false}) : "—";
const fmtNum = (n) => n === null || n === undefined ? "—" : (typeof n === "number" ? n.toLocaleString() : n);
const pct = (r) => r === null || r === undefined ? "—" : (100 * r).toFixed(1) + " %";
const fmtDur = (s) => {
  if (s === null || s === undefined) return "—";
  const m = Math.round(s / 60);
  return m < 60 ? `${m} min` : `${Math.floor(m / 60)} h ${m % 60} min`;
};

async function api(path, options = {}) {
  const resp = await fetch(path, {credentials: "same-origin", headers: {"content-type": "application/json"}, ...options});
  if (resp.status === 401) { showLogin(); throw new Error("not logged in"); }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const errors = body.errors ? Object.entries(body.errors).map(([k, v]) => `${k}: ${[].concat(v).join(", ")}`).join("; ") : resp.statusText;
    throw new Error(`${path}: ${errors}`);
  }
  return body;
}
const post = (path, body) => api(path, {method: "POST", body: JSON.stringify(body)});
function fill(tbody, rows) { tbody.replaceChildren(...rows); }
function showError(e) { $("#error").textContent = e ? String(e.message || e) : ""; }

// -- log in ---------------------------------------------------------------------------------
function showLogin() {
  clearTimeout(state.timer);
  document.querySelectorAll("section.tab").forEach((s) => (s.hidden = true));
  $("#tabs").hidden = true; $("#who").hidden = true; $("#login").hidden = false;
}
$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#login-error").textContent = "";
  const key = $("#login-key").value.trim();
  const resp = await fetch("/api/login", {method: "POST", credentials: "same-origin",
    headers: {"content-type": "application/json"},
    body: JSON.stringify(key ? {key}
      : {name: $("#login-name").value, password: $("#login-password").value})});
  if (!resp.ok) {
    const why = await resp.json().catch(() => ({}));
    $("#login-error").textContent = ((why.errors || {})._auth || ["Unknown operator or wrong password."])[0];
    return;
  }
  start();
});
$("#logout").addEventListener("click", async () => { await post("/api/logout", {}); showLogin(); });

// -- charts ---------------------------------------------------------------------------------
function barChart(container, items, {percent = false, warnAbove = null} = {}) {
  const NS = "http://www.w3.org/2000/svg", rowH = 22, labelW = 150, width = 560;
  const max = Math.max(percent ? 1 : 0, ...items.map((i) => i.value || 0)) || 1;
  const svg = document.createElementNS(NS, "svg");
  const height = items.length * rowH + 8;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width); svg.setAttribute("height", height);
  items.forEach((item, i) => {
    const y = 4 + i * rowH, w = ((item.value || 0) / max) * (width - labelW - 80);
    const label = document.createElementNS(NS, "text");
    label.setAttribute("x", 4); label.setAttribute("y", y + 15); label.textContent = item.label;
    const bar = document.createElementNS(NS, "rect");
    bar.setAttribute("x", labelW); bar.setAttribute("y", y + 3); bar.setAttribute("height", rowH - 8);
    bar.setAttribute("width", Math.max(w, 0));
    bar.setAttribute("class", "bar" + (warnAbove !== null && item.value > warnAbove ? " warn" : ""));
    const value = document.createElementNS(NS, "text");
    value.setAttribute("x", labelW + w + 6); value.setAttribute("y", y + 15);
    value.textContent = percent ? pct(item.value) : fmtNum(item.value);
    svg.append(label, bar, value);
  });
  container.replaceChildren(svg);
}

// -- overview: services and queues ----------------------------------------------------------
async function loadOverview() {
  const [services, queues, letters] = await Promise.all([
    api("/api/services"), api("/api/queues"), api("/api/dead-letters?state=parked&limit=1")]);
  fill($("#services-table tbody"), services.instances.map((i) =>
    el("tr", {dataset: {instance: i.instance, service: i.service, status: i.status}},
      el("td", {}, i.service), el("td", {class: i.status}, i.status), el("td", {}, i.host),
      el("td", {class: "num"}, i.pid), el("td", {}, i.version), el("td", {}, fmtTime(i.started_at)),
      el("td", {}, `${fmtTime(i.last_seen)} (${i.seconds_since} s ago)`))));
  const showAll = $("#queues-all").checked;
  const rows = queues.queues.filter((q) => showAll || q.alerts.length || (q.kind !== "retry" && !(q.kind === "dead letters" && !q.messages)));
  $("#queues-source").textContent = `from the ${queues.source}, ${fmtTime(queues.sampled_at)}`;
  fill($("#queues-table tbody"), rows.map((q) =>
    el("tr", {class: q.alerts.length ? "alert" : "", dataset: {queue: q.name, alerts: q.alerts.join(",")}},
      el("td", {}, q.name), el("td", {}, q.kind), el("td", {class: "num"}, fmtNum(q.messages)),
      el("td", {class: "num ready"}, fmtNum(q.ready)), el("td", {class: "num"}, fmtNum(q.unacked)),
      el("td", {class: "num consumers"}, fmtNum(q.consumers)),
      el("td", {class: "num"}, q.publish_rate ?? "—"), el("td", {class: "num"}, q.deliver_rate ?? "—"),
      el("td", {class: "attention"}, q.alerts.join(", ")))));
  const down = services.services.filter((s) => s.status === "down").map((s) => s.service);
  const alerting = queues.queues.filter((q) => q.alerts.length).length;
  const parked = letters.by_state.parked;
  $("#letters-badge").textContent = parked ? parked : "";
  const card = (label, value, bad) => el("div", {class: "card" + (bad ? " bad" : "")}, el("b", {}, value), el("span", {}, label));
  fill($("#cards"), [
    card("services up", services.services.filter((s) => s.status === "up").length + " / " + services.services.length, down.length),
    card(down.length ? "down: " + down.join(", ") : "none down", down.length, down.length),
    card("queues needing attention", alerting, alerting),
    card("messages waiting for services and departments",
      queues.queues.reduce((n, q) => n + (["service", "department", "tier"].includes(q.kind) ? q.ready : 0), 0)),
    card("dead letters parked", parked, parked),
  ]);
}
$("#queues-all").addEventListener("change", () => loadOverview().catch(showError));

// -- dead letters ---------------------------------------------------------------------------
async function loadLetters() {
  const st = $("#letters-state").value, queue = $("#letters-queue").value;
  const qs = new URLSearchParams({state: st, limit: "200"});
  if (queue) qs.set("queue", queue);
  const [letters, audit] = await Promise.all([api("/api/dead-letters?" + qs), api("/api/audit?limit=30")]);
  const checked = new Set([...document.querySelectorAll(".dl-select:checked")].map((c) => c.dataset.id));
  const queues = Object.keys(letters.parked_by_queue).sort();
  const select = $("#letters-queue");
  const current = select.value;
  select.replaceChildren(el("option", {value: ""}, "all queues"),
    ...queues.map((q) => el("option", {value: q}, `${q} (${letters.parked_by_queue[q]})`)));
  if (current && !queues.includes(current)) select.append(el("option", {value: current}, current));
  select.value = current;
  $("#letters-counts").textContent = Object.entries(letters.by_state).map(([k, v]) => `${k} ${v}`).join(" · ");
  fill($("#letters-table tbody"), letters.items.map((d) => {
    const box = el("input", {type: "checkbox", class: "dl-select", dataset: {id: d.id}});
    box.checked = checked.has(String(d.id)); box.disabled = d.state !== "parked";
    return el("tr", {dataset: {id: d.id, queue: d.queue, state: d.state}},
      el("td", {}, box), el("td", {class: "num"}, d.id), el("td", {class: "reason"}, d.reason),
      el("td", {}, d.queue), el("td", {}, d.routing_key || "—"), el("td", {}, fmtTime(d.first_death_at)),
      el("td", {}, el("details", {}, el("summary", {}, d.preview || "(empty)"), el("pre", {class: "payload"}, d.payload))),
      el("td", {}, d.state + (d.decided_by ? ` by ${d.decided_by}` : "") + (d.note ? `: ${d.note}` : "")));
  }));
  fill($("#audit-table tbody"), audit.items.map((a) => el("tr", {},
    el("td", {}, fmtTime(a.at)), el("td", {}, a.operator), el("td", {class: "action"}, a.action),
    el("td", {}, a.target), el("td", {}, JSON.stringify(a.detail)), el("td", {}, a.remote_addr))));
}
const selectedIds = () => [...document.querySelectorAll(".dl-select:checked")].map((c) => Number(c.dataset.id));
async function letterAction(path, body) {
  try {
    const result = await post(path, body);
    const done = result.replayed || result.discarded || [];
    $("#letters-result").textContent = `${path.endsWith("replay") ? "replayed" : "discarded"} ${done.length}` +
      (result.failed && Object.keys(result.failed).length ? `, failed ${Object.keys(result.failed).length}` : "");
    await loadLetters();
  } catch (e) { $("#letters-result").textContent = e.message; }
}
$("#replay-selected").addEventListener("click", () => {
  const ids = selectedIds();
  if (ids.length) letterAction("/api/dead-letters/replay", {ids});
});
$("#replay-all").addEventListener("click", () => {
  const queue = $("#letters-queue").value;
  if (confirm(`Replay every parked dead letter${queue ? " of " + queue : ""}?`))
    letterAction("/api/dead-letters/replay", queue ? {all: true, queue} : {all: true});
});
$("#discard-selected").addEventListener("click", () => {
  const ids = selectedIds();
  if (ids.length) letterAction("/api/dead-letters/discard", {ids, reason: $("#discard-reason").value});
});
$("#letters-check-all").addEventListener("change", (ev) =>
  document.querySelectorAll(".dl-select:not(:disabled)").forEach((c) => (c.checked = ev.target.checked)));
["#letters-state", "#letters-queue"].forEach((s) => $(s).addEventListener("change", () => loadLetters().catch(showError)));

// -- filters shared by the funnel and the measures ------------------------------------------
function periodFilters(container, onChange) {
  if (container.childElementCount) return;
  const today = new Date(); const monthAgo = new Date(today.getTime() - 30 * 86400e3);
  const day = (d) => d.toISOString().slice(0, 10);
  const dept = el("select", {class: "f-department"}, el("option", {value: ""}, "all departments"),
    ...Object.entries(state.departments).map(([c, n]) => el("option", {value: c}, `${n} (${c})`)));
  container.append(
    el("label", {}, "From ", el("input", {type: "date", class: "f-since", value: day(monthAgo)})),
    el("label", {}, "to ", el("input", {type: "date", class: "f-until", value: ""})),
    el("label", {}, "Department ", dept));
  container.querySelectorAll("input, select").forEach((i) => i.addEventListener("change", onChange));
}
function filterQuery(container) {
  const qs = new URLSearchParams();
  const since = container.querySelector(".f-since").value, until = container.querySelector(".f-until").value;
  const dept = container.querySelector(".f-department").value;
  if (since) qs.set("since", new Date(since + "T00:00:00").toISOString());
  if (until) qs.set("until", new Date(new Date(until + "T00:00:00").getTime() + 86400e3).toISOString());
  if (dept) qs.set("department", dept);
  if (state.grid) qs.set("grid", state.grid);
  return qs;
}
function crumbs(container, path) {
  container.replaceChildren(...(path || []).map((n) =>
    el("a", {href: "#", dataset: {grid: n.code}, onclick: (ev) => { ev.preventDefault(); drill(n.code); }},
      `${n.name}`)));
}
function drill(code) { state.grid = code; refresh(); }

// -- cases: funnel, drill-down, list --------------------------------------------------------
async function loadCases() {
  periodFilters($("#cases-filters"), () => refresh());
  const qs = filterQuery($("#cases-filters"));
  const [funnel, list] = await Promise.all([api("/api/funnel?" + qs), api("/api/cases?" + qs + "&limit=50")]);
  crumbs($("#grid-path"), funnel.path);
  barChart($("#funnel-state"), Object.entries(funnel.by_state).map(([k, v]) => ({label: k, value: v})));
  barChart($("#funnel-tier"), TIERS.filter((t) => t in funnel.by_tier).map((t) => ({label: `${TIER_ZH[t]} ${t}`, value: funnel.by_tier[t]})));
  fill($("#funnel-grid tbody"), (funnel.by_grid || []).map((g) =>
    el("tr", {class: g.leaf ? "" : "clickable", dataset: {grid: g.code},
      onclick: () => { if (!g.leaf) drill(g.code); }},
      el("td", {}, `${g.name} (${g.code})`), el("td", {}, g.tier),
      el("td", {class: "num"}, fmtNum(g.count ?? g.total)), el("td", {class: "num"}, fmtNum(g.open)))));
  const deptStates = [...new Set(Object.values(funnel.by_department || {}).flatMap((s) => Object.keys(s)))].sort();
  $("#funnel-department thead").replaceChildren(el("tr", {}, el("th", {}, "department"), ...deptStates.map((s) => el("th", {class: "num"}, s))));
  fill($("#funnel-department tbody"), Object.entries(funnel.by_department || {}).map(([d, s]) =>
    el("tr", {}, el("td", {}, state.departments[d] ? `${state.departments[d]} (${d})` : d),
      ...deptStates.map((k) => el("td", {class: "num"}, fmtNum(s[k] || 0))))));
  $("#cases-total").textContent = `${fmtNum(list.total)} in all, newest first`;
  fill($("#cases-table tbody"), list.items.map((c) =>
    el("tr", {class: "clickable", dataset: {case: c.case_id}, onclick: () => (location.hash = "case/" + c.case_id)},
      el("td", {}, c.case_id), el("td", {}, c.state), el("td", {}, c.tier || "—"),
      el("td", {}, c.category_name ? `${c.category_name} (${c.category})` : c.category),
      el("td", {}, c.grid_name || c.grid_code), el("td", {}, fmtTime(c.reported_at)),
      el("td", {class: "num"}, c.escalations))));
}

// -- the ledger -----------------------------------------------------------------------------
async function loadLedger() {
  const st = $("#ledger-state").value;
  const ledger = await api("/api/ledger?per_page=200" + (st ? "&state=" + st : ""));
  $("#ledger-total").textContent = `${fmtNum(ledger.total)} items`;
  fill($("#ledger-table tbody"), ledger.items.map((i) =>
    el("tr", {class: "clickable", dataset: {case: i.case_id}, onclick: () => (location.hash = "case/" + i.case_id)},
      el("td", {}, i.case_id), el("td", {}, i.department || "—"), el("td", {}, i.kind),
      el("td", {}, `${TIER_ZH[i.tier] || ""} ${i.tier}`), el("td", {}, i.owner ? `${i.owner.name || ""} ${i.owner.phone || ""}` : "—"),
      el("td", {}, fmtTime(i.due_at)), el("td", {class: "num"}, fmtDur(i.late_by_s)), el("td", {}, i.state))));
}
$("#measures-grid").addEventListener("change", (ev) => { if (ev.target.value) drill(ev.target.value); });
$("#ledger-state").addEventListener("change", () => loadLedger().catch(showError));

// -- the measures ---------------------------------------------------------------------------
const MEASURES = [
  ["response_rate", "响应率 response rate"], ["resolution_rate", "解决率 resolution rate"],
  ["satisfaction_rate", "满意率 satisfaction rate"], ["on_time_closing_rate", "按期结案率 on-time closing"],
  ["rework_rate", "返工率 rework rate"],
];
async function loadMeasures() {
  periodFilters($("#measures-filters"), () => refresh());
  const qs = filterQuery($("#measures-filters"));
  const [m, funnel] = await Promise.all([api("/api/measures?" + qs), api("/api/funnel?" + qs)]);
  crumbs($("#measures-path"), m.path);  // the grid subtree: the same as the Cases tab's
  const narrow = $("#measures-grid");
  narrow.replaceChildren(el("option", {value: ""}, "narrow to …"),
    ...(funnel.by_grid || []).map((g) => el("option", {value: g.code}, `${g.name} (${g.tier})`)));
  const rates = m.rates || m;
  const rows = MEASURES.map(([key, label]) => {
    const r = rates[key] || {};
    const value = typeof r === "object" ? r.value : r;
    const of = typeof r === "object" && r.denominator !== undefined ? `${fmtNum(r.numerator)} / ${fmtNum(r.denominator)}` : "";
    return el("tr", {dataset: {measure: key, value: value ?? ""}}, el("td", {}, label), el("td", {class: "num value"}, pct(value)), el("td", {class: "num"}, of));
  });
  const hours = m.average_handling_hours ?? m.avg_handling_hours ?? (m.handling_time || {}).average_hours;
  rows.push(el("tr", {dataset: {measure: "average_handling_hours", value: hours ?? ""}},
    el("td", {}, "平均处置时长 average handling time"), el("td", {class: "num value"}, hours === null || hours === undefined ? "—" : `${hours} h`), el("td", {}, "")));
  fill($("#measures-table tbody"), rows);
  barChart($("#measures-chart"), MEASURES.map(([key, label]) => {
    const r = rates[key]; return {label: label.split(" ")[0], value: typeof r === "object" && r ? r.value : r};
  }), {percent: true});
  const split = m.tier_split || {};
  barChart($("#tier-split-chart"), TIERS.filter((t) => t in split).map((t) => ({label: `${TIER_ZH[t]} ${t}`, value: split[t]})));
  fill($("#tier-split tbody"), TIERS.filter((t) => t in split).map((t) =>
    el("tr", {dataset: {tier: t}}, el("td", {}, `${TIER_ZH[t]} ${t}`), el("td", {class: "num"}, fmtNum(split[t])))));
  const top = m.top_categories || [];
  barChart($("#top-categories-chart"), top.map((c) => ({label: c.name || c.code, value: c.count})));
  fill($("#top-categories tbody"), top.map((c) =>
    el("tr", {dataset: {category: c.code}}, el("td", {}, `${c.name || ""} (${c.code})`), el("td", {class: "num"}, fmtNum(c.count)))));
  const depts = m.by_department || [];
  const cols = depts.length ? Object.keys(depts[0]).filter((k) => k !== "department" && k !== "name") : [];
  $("#measures-departments thead").replaceChildren(el("tr", {}, el("th", {}, "department"), ...cols.map((c) => el("th", {class: "num"}, c))));
  fill($("#measures-departments tbody"), depts.map((d) => el("tr", {dataset: {department: d.department}},
    el("td", {}, `${d.name || state.departments[d.department] || ""} (${d.department})`),
    ...cols.map((c) => el("td", {class: "num"}, /rate/.test(c) ? pct(d[c]) : fmtNum(d[c]))))));
}

// -- a case ---------------------------------------------------------------------------------
async function loadCase() {
  const c = await api("/api/cases/" + encodeURIComponent(state.caseId));
  $("#case-title").textContent = `${c.case_id} · ${c.state}`;
  const where = c.location || {};
  const facts = [["category", c.category], ["grid", where.building_code || where.grid_code],
    ["tier", c.tier ? `${TIER_ZH[c.tier] || ""} ${c.tier} (${c.tier_code})` : "—"],
    ["description", c.description], ["reported", fmtTime(c.reported_at)],
    ["closed", fmtTime(c.closed_at)], ["escalations", c.escalations],
    ["ratings", (c.ratings || []).map((r) => `${r.score}★${r.fixed === false ? " not fixed" : ""}`).join(", ") || "—"]];
  $("#case-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, typeof v === "object" ? JSON.stringify(v) : String(v ?? "—"))]));
  fill($("#case-assignments tbody"), (c.assignments || []).map((a) => el("tr", {dataset: {department: a.department}},
    el("td", {}, a.department), el("td", {}, a.role), el("td", {}, a.state), el("td", {}, fmtTime((a.deadlines || {}).report_in)),
    el("td", {}, fmtTime(a.acknowledged_at)), el("td", {}, fmtTime((a.deadlines || {}).resolve)), el("td", {}, fmtTime(a.resolved_at)))));
  fill($("#case-supervision tbody"), (c.supervision || []).map((i) => el("tr", {},
    el("td", {}, i.department || "—"), el("td", {}, i.kind), el("td", {}, fmtTime(i.due_at)), el("td", {}, i.state), el("td", {}, fmtDur(i.late_by_s)))));
  $("#case-timeline").replaceChildren(...(c.timeline || []).map((t) =>
    el("li", {}, `${fmtTime(t.at)} — ${t.kind}${t.actor ? " · " + t.actor : ""}${t.reason ? " · " + t.reason : ""}`)));
}

// -- navigation and refresh -----------------------------------------------------------------
const LOADERS = {overview: loadOverview, letters: loadLetters, cases: loadCases, ledger: loadLedger,
                 measures: loadMeasures, "case-view": loadCase};
function route() {
  const hash = location.hash.slice(1);
  if (hash.startsWith("case/")) { state.caseId = decodeURIComponent(hash.slice(5)); state.tab = "case-view"; }
  else if (LOADERS[hash]) state.tab = hash;
  document.querySelectorAll("section.tab").forEach((s) => (s.hidden = s.id !== state.tab));
  document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b.dataset.tab === state.tab));
  refresh();
}
async function refresh() {
  clearTimeout(state.timer);
  try {
    await LOADERS[state.tab]();
    showError(null);
    $("#refreshed").textContent = "updated " + new Date().toLocaleTimeString("zh-CN", {hour12: false});
    document.body.dataset.loaded = state.tab;
  } catch (e) {
    if (e.message === "not logged in") return;
    showError(e);
  }
  state.timer = setTimeout(refresh, REFRESH_MS);
}
document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => (location.hash = b.dataset.tab)));
window.addEventListener("hashchange", route);

async function start() {
  try {
    const me = await api("/api/me");
    const ref = await api("/api/reference");
    state.departments = ref.departments;
    $("#operator").textContent = me.grid ? `${me.operator} (${me.grid})` : me.operator;
  } catch (e) { if (e.message !== "not logged in") showError(e); return; }
  $("#login").hidden = true; $("#tabs").hidden = false; $("#who").hidden = false;
  route();
}
start();
