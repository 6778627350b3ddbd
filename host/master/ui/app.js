// The Wasmos dashboard. Reads /api/wasmos/v1 and re-reads on every event
// from /api/wasmos/v1/events. No framework, no build step.
"use strict";

const API = "/api/wasmos/v1";
const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const num = (x, d = 2) => (Math.round(x * 10 ** d) / 10 ** d).toString();

async function get(path) {
  const r = await fetch(API + path);
  if (!r.ok) throw new Error((await r.json().catch(() => ({}))).message || r.statusText);
  return r.json();
}

function bar(used, total) {
  const pct = total > 0 ? Math.min(100, (100 * used) / total) : 0;
  return `<div class="bar"><div style="width:${pct}%"></div></div>`;
}

function card(k, v, extra = "") {
  return `<div class="card"><div class="k">${esc(k)}</div><div class="v">${v}</div>${extra}</div>`;
}

async function renderSummary() {
  const c = await get("/cluster");
  const running = c.tasks.TASK_RUNNING || 0;
  const live = Object.entries(c.tasks).filter(([s]) => !/FINISHED|FAILED|KILLED|ERROR|LOST|DROPPED|GONE/.test(s)).reduce((a, [, n]) => a + n, 0);
  $("#summary").innerHTML =
    card("Agents", c.agents) +
    card("Frameworks", c.frameworks) +
    card("Tasks running", running, `<div class="dim">${live} live, ${Object.values(c.tasks).reduce((a, b) => a + b, 0)} known</div>`) +
    card("CPUs", `${num(c.used.cpus)} / ${num(c.total.cpus)}`, bar(c.used.cpus, c.total.cpus)) +
    card("Memory (MB)", `${num(c.used.mem, 0)} / ${num(c.total.mem, 0)}`, bar(c.used.mem, c.total.mem)) +
    card("Offers out", c.offers);
  $("#cluster-meta").textContent = `cluster ${c.cluster_id.slice(0, 8)} · term ${c.term} · log ${c.log_index} · v${c.version}`;
}

async function renderTasks() {
  const showDone = $("#show-done").checked;
  let tasks = await get("/tasks");
  tasks.sort((a, b) => b.launched_at - a.launched_at);
  if (!showDone) tasks = tasks.filter((t) => !/FINISHED|FAILED|KILLED|ERROR|LOST|DROPPED|GONE/.test(t.state));
  const cmd = (c) => (c.shell || !c.arguments.length ? c.value : c.arguments.join(" "));
  const detail = (s) => [s.message, s.exit_code != null ? `exit ${s.exit_code}` : ""].filter(Boolean).join(" · ");
  const live = (s) => !/FINISHED|FAILED|KILLED|ERROR|LOST|DROPPED|GONE/.test(s);
  $("#tasks tbody").innerHTML = tasks.map((t) => `
    <tr class="clickable" data-task="${esc(t.id)}">
      <td><code>${esc(t.id)}</code></td><td>${esc(t.framework_id)}</td>
      <td class="state ${esc(t.state)}">${esc(t.state.replace("TASK_", ""))}</td>
      <td>${esc(t.hostname || t.agent_id)}</td><td>${num(t.resources.cpus)}</td><td>${num(t.resources.mem, 0)}</td>
      <td><code>${esc(cmd(t.command)).slice(0, 80)}</code></td><td>${esc(detail(t.status))}</td>
      <td>${live(t.state) ? `<button class="danger" data-kill="${esc(t.id)}">kill</button>` : ""}</td>
    </tr>`).join("") || `<tr><td colspan="9" class="dim">no tasks yet</td></tr>`;
}

async function renderAgents() {
  const agents = await get("/agents");
  $("#agents tbody").innerHTML = agents.map((a) => `
    <tr><td><code>${esc(a.id)}</code></td><td>${esc(a.hostname)}</td>
      <td class="${a.connected ? "active" : "unreachable"}">${a.connected ? esc(a.state) : "disconnected"}</td>
      <td>${num(a.used.cpus)} / ${num(a.resources.cpus)}${bar(a.used.cpus, a.resources.cpus)}</td>
      <td>${num(a.used.mem, 0)} / ${num(a.resources.mem, 0)}${bar(a.used.mem, a.resources.mem)}</td>
      <td>${num(a.used.disk, 0)} / ${num(a.resources.disk, 0)}</td><td>${a.tasks}</td>
      <td>${Object.entries(a.attributes).map(([k, v]) => `<code>${esc(k)}:${esc(v)}</code>`).join(" ")}</td></tr>`).join("")
    || `<tr><td colspan="8" class="dim">no agents registered</td></tr>`;
}

async function renderFrameworks() {
  const fws = await get("/frameworks");
  $("#frameworks tbody").innerHTML = fws.map((f) => `
    <tr><td><code>${esc(f.id)}</code></td><td>${esc(f.kind.type)}</td>
      <td class="${esc(f.health || "")}" title="${esc(f.last_error || "")}">${esc(f.health || (f.active ? "active" : "inactive"))}</td>
      <td>${f.tasks}</td><td>${f.offers}${f.suppressed ? ' <span class="dim">(suppressed)</span>' : ""}</td></tr>`).join("");
  const plugins = await get("/plugins");
  $("#plugins tbody").innerHTML = plugins.map((p) => `
    <tr><td><code>${esc(p.name)}</code></td><td>${esc(p.kind)}</td><td>${esc(p.version)}</td><td>${esc(p.source)}</td>
      <td>${esc(p.signed_by || (p.source === "bundled" ? "(bundled)" : "unsigned"))}</td><td><code title="${esc(p.digest)}">${esc(p.digest.slice(7, 19))}</code></td></tr>`).join("");
}

// Jobs, from the chronos framework's own view (absent when it is not installed).
const JOBS = "/frameworks/chronos";
const when = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "–");
let openJob = null;

async function renderJobs() {
  const r = await fetch(JOBS + "/jobs");
  if (!r.ok) { $("#jobs-section").hidden = true; return; }
  $("#jobs-section").hidden = false;
  const { jobs } = await r.json();
  $("#jobs tbody").innerHTML = jobs.map((j) => {
    const sched = j.kind === "dependent" ? `after ${j.parents.map(esc).join(" + ")}` : `<code>${esc(j.schedule)}</code>${j.schedule_time_zone ? ` <span class="dim">${esc(j.schedule_time_zone)}</span>` : ""}`;
    const last = j.last_run ? `<span class="${esc(j.last_run.result)}">${esc(j.last_run.result)}</span> <span class="dim">${esc(when(j.last_run.ended))}</span>` : '<span class="dim">never ran</span>';
    return `<tr class="clickable" data-job="${esc(j.name)}"><td><code>${esc(j.name)}</code></td><td>${sched}</td>
      <td>${j.disabled ? '<span class="dim">disabled</span>' : esc(when(j.next_run))}</td><td>${last}</td>
      <td>${j.success_count} / <span class="${j.error_count ? "failed" : ""}">${j.error_count}</span></td>
      <td class="${/running/.test(j.state) ? "running" : esc(j.state)}" title="${esc(j.waiting_for || "")}">${esc(j.state)}</td>
      <td><button data-run-job="${esc(j.name)}"${j.disabled ? " disabled" : ""}>run now</button></td></tr>`;
  }).join("") || `<tr><td colspan="7" class="dim">no jobs; add one with <code>wasmos job add FILE</code> or POST Chronos job JSON to /v1/scheduler/iso8601</td></tr>`;
  const g = await (await fetch(JOBS + "/graph")).json().catch(() => ({}));
  $("#job-graph").textContent = g.tree || "no jobs";
  if (openJob) await renderJob(openJob);
}

async function renderJob(name) {
  const r = await fetch(`${JOBS}/jobs/${encodeURIComponent(name)}`);
  if (!r.ok) { $("#job-detail").hidden = true; openJob = null; return; }
  const d = await r.json();
  openJob = name;
  $("#job-detail").hidden = false;
  $("#job-name").textContent = name;
  const s = d.stats;
  $("#job-summary").textContent = s.count ? `· due → end median ${num(s.median_ms, 0)} ms, p99 ${num(s.p99_ms, 0)} ms over ${s.count} successes` : "";
  const row = (run) => {
    const a = run.attempts[run.attempts.length - 1] || {};
    return `<tr><td><code>${esc(run.id)}</code></td><td>${esc(when(run.due))}</td><td>${esc(run.trigger)}</td>
      <td class="${esc(run.state)}" title="${esc(run.message || "")}">${esc(run.state)}${run.message ? ` <span class="dim">${esc(run.message).slice(0, 60)}</span>` : ""}</td>
      <td>${run.attempts.length}</td><td>${esc(when(run.started))}</td><td>${esc(when(run.ended))}</td><td>${a.exit_code ?? "–"}</td>
      <td>${a.task_id ? `<a href="#" data-task="${esc(a.task_id)}"><code>${esc(a.task_id)}</code></a>` : "–"}</td></tr>`;
  };
  $("#job-runs tbody").innerHTML = [...d.active, ...d.history].map(row).join("") || `<tr><td colspan="9" class="dim">no runs yet</td></tr>`;
}

let refreshTimer = null;
function refreshSoon() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(async () => {
    refreshTimer = null;
    await Promise.allSettled([renderSummary(), renderTasks(), renderAgents(), renderFrameworks(), renderJobs()]);
  }, 150);
}

function connectEvents() {
  const es = new EventSource(API + "/events");
  const list = $("#events");
  const note = (kind, data) => {
    const li = document.createElement("li");
    let what = "";
    try {
      const d = JSON.parse(data);
      what = d.id ? `${d.id}${d.state ? " → " + d.state : ""}` : d.name || "";
    } catch (_) {}
    li.textContent = `${new Date().toLocaleTimeString()} ${kind} ${what}`;
    list.prepend(li);
    while (list.children.length > 200) list.lastChild.remove();
  };
  es.onopen = () => { $("#conn").textContent = "live"; $("#conn").className = "pill ok"; refreshSoon(); };
  es.onerror = () => { $("#conn").textContent = "reconnecting…"; $("#conn").className = "pill off"; };
  for (const kind of ["task_updated", "agent_added", "agent_reregistered", "agent_updated", "framework_added", "plugin_installed", "plugin_removed", "plugin_configured", "leader_elected", "lagged"]) {
    es.addEventListener(kind, (e) => { note(kind, e.data); refreshSoon(); if (kind === "task_updated") refreshLogs(); });
  }
}

// Task output, read from the task's sandbox through the master.
let logs = { task: null, file: "stdout", offset: 0, timer: null };
async function refreshLogs() {
  if (!logs.task) return;
  const r = await fetch(`${API}/tasks/${encodeURIComponent(logs.task)}/files/read?path=${logs.file}&offset=${logs.offset}`);
  if (!r.ok) {
    $("#logs-body").innerHTML = `<span class="err">${esc((await r.json().catch(() => ({}))).message || r.statusText)}</span>`;
    return;
  }
  const text = await r.text();
  if (text.length) {
    $("#logs-body").textContent += text;
    logs.offset += new TextEncoder().encode(text).length;
    $("#logs-body").scrollTop = $("#logs-body").scrollHeight;
  }
}
function openLogs(task, file = "stdout") {
  logs = { ...logs, task, file, offset: 0 };
  $("#logs").hidden = false;
  $("#logs-task").textContent = task;
  $("#logs-body").textContent = "";
  document.querySelectorAll(".tabs button").forEach((b) => b.classList.toggle("on", b.dataset.file === file));
  clearInterval(logs.timer);
  logs.timer = setInterval(refreshLogs, 1000);
  refreshLogs();
}

document.addEventListener("click", async (e) => {
  const kill = e.target.closest("[data-kill]");
  if (kill) {
    e.stopPropagation();
    const r = await fetch(`${API}/tasks/${encodeURIComponent(kill.dataset.kill)}/kill`, { method: "POST" });
    if (!r.ok) alert((await r.json().catch(() => ({}))).message || r.statusText);
    return;
  }
  const runJob = e.target.closest("[data-run-job]");
  if (runJob) {
    e.stopPropagation();
    const r = await fetch(`${JOBS}/jobs/${encodeURIComponent(runJob.dataset.runJob)}/runs`, { method: "POST" });
    if (!r.ok) alert((await r.json().catch(() => ({}))).message || r.statusText);
    location.hash = "job/" + encodeURIComponent(runJob.dataset.runJob);
    refreshSoon();
    return;
  }
  const job = e.target.closest("[data-job]");
  if (job) { location.hash = "job/" + encodeURIComponent(job.dataset.job); return; }
  const row = e.target.closest("[data-task]");
  if (row) { e.preventDefault(); openLogs(row.dataset.task); }
  const tab = e.target.closest(".tabs button");
  if (tab && logs.task) openLogs(logs.task, tab.dataset.file);
});
// Deep links: #job/<name> opens a job's runs.
function followHash() {
  const m = location.hash.match(/^#job\/(.+)$/);
  if (m) renderJob(decodeURIComponent(m[1])).then(() => $("#job-detail").scrollIntoView({ block: "nearest" }));
  else { openJob = null; $("#job-detail").hidden = true; }
}
window.addEventListener("hashchange", followHash);
$("#job-close").onclick = () => { location.hash = ""; };
$("#logs-close").onclick = () => { $("#logs").hidden = true; clearInterval(logs.timer); logs.task = null; };
$("#show-done").onchange = refreshSoon;

$("#run").onsubmit = async (e) => {
  e.preventDefault();
  const body = { cmd: $("#run-cmd").value, cpus: parseFloat($("#run-cpus").value), mem: parseFloat($("#run-mem").value) };
  const r = await fetch("/frameworks/exec/tasks", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const j = await r.json().catch(() => ({}));
  $("#run-msg").innerHTML = r.ok ? `submitted <code>${esc(j.id)}</code>` : `<span class="err">${esc(j.message || r.statusText)}</span>`;
  if (r.ok) { $("#run-cmd").value = ""; setTimeout(() => openLogs(j.id), 1500); }
};

// Signed in (the session cookie, HttpOnly) or not: the login form first.
function showLogin(message) {
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#login-msg").innerHTML = message ? `<span class="err">${esc(message)}</span>` : "";
}

$("#login-form").onsubmit = async (e) => {
  e.preventDefault();
  const token = $("#login-token").value;
  const body = token ? { token } : { user: $("#login-user").value, password: $("#login-password").value };
  const r = await fetch(API + "/login", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  if (r.ok) { $("#login-password").value = ""; $("#login-token").value = ""; start(); return; }
  const j = await r.json().catch(() => ({}));
  showLogin(j.message || r.statusText);
};

$("#logout").onclick = async () => {
  await fetch(API + "/logout", { method: "POST" });
  location.reload();
};

let started = false;
async function start() {
  const r = await fetch(API + "/whoami");
  const me = await r.json().catch(() => ({}));
  if (!me.principal) { showLogin(); return; }
  $("#whoami").textContent = me.principal ? `signed in as ${me.principal}` : "";
  $("#logout").hidden = false;
  $("#login").hidden = true;
  $("#app").hidden = false;
  if (started) { refreshSoon(); return; }
  started = true;
  connectEvents();
  refreshSoon();
  followHash();
  setInterval(refreshSoon, 10000);
}
start();
