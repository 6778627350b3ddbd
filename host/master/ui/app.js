// The Wasmos dashboard's core: API calls, the session, the router (one
// page per `#/<page>[/<object>]`), the live event stream and the refresh
// loop. Pages register themselves from pages.js. No framework, no build.
"use strict";

const API = "/api/wasmos/v1";
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const num = (x, d = 2) => (Math.round((x || 0) * 10 ** d) / 10 ** d).toString();
const pct = (used, total) => (total > 0 ? (100 * used) / total : 0);
const when = (v) => {
  if (v === null || v === undefined || v === "") return "–";
  const d = typeof v === "number" ? new Date(v * 1000) : new Date(v);
  return isNaN(d) ? String(v) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
};
const ENDED = /FINISHED|FAILED|KILLED|ERROR|LOST|DROPPED|GONE/;
const isLive = (state) => !ENDED.test(state);
const enc = encodeURIComponent;

// A request; JSON answers are parsed. Errors carry the server's message.
// A 401 (the session ended or was revoked) brings back the login form;
// the header spares the browser's own password dialog.
async function call(method, path, body) {
  const opts = { method, headers: { "x-wasmos-dashboard": "1" } };
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
  if (r.status === 401 && Me && !path.endsWith("/login")) showLogin("Your session ended; log in again.");
  return { ok: r.ok, status: r.status, data };
}

async function get(path) {
  const r = await call("GET", path);
  if (!r.ok) throw new Error(errorText(r));
  return r.data;
}
// The native API's paths.
const native = (path) => get(API + path);

// What went wrong, from an answer: Marathon's `message` and `details`,
// the native API's `message`, or the status.
function errorText(r) {
  const d = r.data;
  if (d && typeof d === "object") {
    const details = Array.isArray(d.details) ? d.details.map((x) => `${x.path}: ${(x.errors || []).join(", ")}`).join("; ") : d.details || "";
    return [d.message, details].filter(Boolean).join(" — ") || `HTTP ${r.status}`;
  }
  return (typeof d === "string" && d.trim()) || `HTTP ${r.status}`;
}

// Runs an action from a button: disabled meanwhile, the outcome shown in
// the toast; refreshes the page after.
async function act(button, what, fn) {
  if (button) button.disabled = true;
  try {
    const r = await fn();
    if (r && r.ok === false) throw new Error(errorText(r));
    toast(`${what}: done`);
    return r;
  } catch (e) {
    toast(`${what}: ${e.message}`, true);
    return null;
  } finally {
    if (button) button.disabled = false;
    refreshSoon();
  }
}

let toastTimer = null;
function toast(msg, bad = false) {
  let t = $("#toast");
  if (!t) {
    t = document.createElement("div");
    t.id = "toast";
    t.setAttribute("role", "status");
    document.body.append(t);
  }
  t.textContent = msg;
  t.className = bad ? "bad" : "";
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, bad ? 8000 : 3000);
}

// ---- who is signed in, and what they may read ------------------------------
let Me = { management: false, rules: [] };
// Whether the signed-in principal may read a whole area (a rule on it
// with no prefix), so pages ask only for what they may see.
function can(area) {
  if (Me.management) return true;
  const rules = (Me.rules || []).filter((r) => r.area === area && !r.prefix);
  return rules.some((r) => r.access !== "deny") && !rules.some((r) => r.access === "deny");
}
// The area each page reads.
const AREAS = { overview: "cluster", services: "apps", catalogue: "packages", jobs: "jobs", tasks: "tasks", nodes: "cluster", plugins: "plugins", frameworks: "cluster", masters: "masters" };

// ---- pages and the router ----------------------------------------------
const Pages = {};
// A page: `render(arg)` returns its skeleton's HTML (built once per visit,
// so forms keep what is typed), `refresh(arg)` fills its live parts.
function page(name, def) { Pages[name] = def; }

let current = { name: null, arg: null };
function route() {
  let h = location.hash.replace(/^#/, "");
  // Links of the one-page dashboard before: #job/<name>.
  const old = h.match(/^job\/(.+)$/);
  if (old) { location.replace(`#/jobs/${old[1]}`); return; }
  if (!h.startsWith("/")) h = "/overview";
  const [, name, ...rest] = h.split("/");
  const arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
  const p = Pages[name] ? name : "overview";
  current = { name: p, arg };
  $$("#nav a").forEach((a) => a.classList.toggle("on", a.dataset.page === p));
  const def = Pages[p];
  document.title = `${def.title(arg)} · Wasmos`;
  $("#page").dataset.page = p;
  if (!can(AREAS[p])) {
    $("#page").innerHTML = `<h2>${esc(def.title(arg))}</h2><p class="err">Your policy does not let you read the <code>${AREAS[p]}</code> area.
      Ask an operator for a rule on it (<code>wasmos acl policy</code>), or sign in as someone else.</p>`;
    return;
  }
  $("#page").innerHTML = def.render(arg);
  if (def.mount) def.mount(arg);
  refreshNow();
}
window.addEventListener("hashchange", () => { if (started) route(); });

let refreshing = false, again = false, refreshTimer = null;
async function refreshNow() {
  if (refreshing) { again = true; return; }
  refreshing = true;
  const { name, arg } = current;
  if (!name || !can(AREAS[name])) { refreshing = false; return; }
  try {
    // One read of /cluster per refresh, for the header and any page.
    Cache.cluster = native("/cluster");
    await Promise.all([Pages[name].refresh(arg), header()]);
    const e = $("#page-error");
    if (e) e.hidden = true;
    // For measurements (wasmos-bench dashboard): when the first page was
    // whole, since navigation started.
    if (!window.wasmosFirstRender) window.wasmosFirstRender = { page: name, ms: performance.now() };
  } catch (e) {
    let box = $("#page-error");
    if (!box) {
      box = document.createElement("p");
      box.id = "page-error";
      box.className = "err";
      $("#page").prepend(box);
    }
    box.hidden = false;
    box.textContent = `Could not load this page: ${e.message}. It retries on the next event or in 10 s.`;
  } finally {
    refreshing = false;
    if (again) { again = false; refreshSoon(); }
  }
}
function refreshSoon() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refreshNow(); }, 250);
}

async function header() {
  const c = await Cache.cluster;
  $("#cluster-meta").textContent = `cluster ${c.cluster_id.slice(0, 8)} · term ${c.term} · log ${c.log_index} · v${c.version}`;
}
// Reads shared by the header and the page within one refresh (promises).
const Cache = { cluster: null };

// ---- the live event stream ------------------------------------------------
const Events = [];
const EVENT_KINDS = ["task_updated", "agent_added", "agent_reregistered", "agent_updated", "framework_added", "framework_removed",
  "plugin_installed", "plugin_removed", "plugin_configured", "leader_elected", "lagged"];
let stream = null;
function connectEvents() {
  stream = new EventSource(API + "/events");
  stream.onopen = () => { $("#conn").textContent = "live"; $("#conn").className = "pill ok"; refreshSoon(); };
  stream.onerror = () => {
    $("#conn").textContent = "reconnecting…";
    $("#conn").className = "pill off";
    // A stream refused for credentials (a session that ended): log in again.
    fetch(API + "/whoami").then((r) => r.json()).then((me) => { if (!me.principal) showLogin("Your session ended; log in again."); }).catch(() => {});
  };
  for (const kind of EVENT_KINDS) {
    stream.addEventListener(kind, (e) => {
      let what = "";
      try {
        const d = JSON.parse(e.data);
        what = d.id ? `${d.id}${d.state ? " → " + d.state : ""}` : d.name || "";
      } catch (_) { /* no data */ }
      Events.unshift({ at: new Date(), kind, what });
      Events.length = Math.min(Events.length, 200);
      refreshSoon();
      if (kind === "task_updated") Logs.poll();
    });
  }
}

// ---- task output ------------------------------------------------------------
// One viewer at a time, read from the task's sandbox through the master.
const Logs = {
  task: null, file: "stdout", offset: 0, timer: null,
  html(task) {
    return `<section class="logs" data-logs="${esc(task)}"><h3>Output of <code>${esc(task)}</code>
      <span class="tabs"><button data-logfile="stdout" class="on">stdout</button><button data-logfile="stderr">stderr</button></span></h3>
      <pre class="logs-body"></pre></section>`;
  },
  open(task, file = "stdout") {
    clearInterval(this.timer);
    Object.assign(this, { task, file, offset: 0 });
    const box = $(".logs");
    if (!box) return;
    $$("[data-logfile]", box).forEach((b) => b.classList.toggle("on", b.dataset.logfile === file));
    $(".logs-body", box).textContent = "";
    this.timer = setInterval(() => this.poll(), 1000);
    this.poll();
  },
  close() { clearInterval(this.timer); this.task = null; },
  async poll() {
    const body = $(".logs-body");
    if (!this.task || !body) { this.close(); return; }
    const { task, file, offset } = this;
    const r = await fetch(`${API}/tasks/${enc(task)}/files/read?path=${file}&offset=${offset}`,
      { headers: { "x-wasmos-dashboard": "1" } });
    if (task !== this.task || file !== this.file) return;
    if (r.status === 401) { this.close(); showLogin("Your session ended; log in again."); return; }
    if (!r.ok) {
      const j = await r.json().catch(() => ({}));
      body.innerHTML = `<span class="err">${esc(j.message || r.statusText)}</span>`;
      return;
    }
    const text = await r.text();
    if (text.length) {
      body.textContent += text;
      this.offset += new TextEncoder().encode(text).length;
      body.scrollTop = body.scrollHeight;
    }
  },
};
document.addEventListener("click", (e) => {
  const tab = e.target.closest("[data-logfile]");
  if (tab && Logs.task) Logs.open(Logs.task, tab.dataset.logfile);
});

// ---- signing in -----------------------------------------------------------------
function showLogin(message) {
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#login-msg").innerHTML = message ? `<span class="err">${esc(message)}</span>` : "";
  if (stream) { stream.close(); stream = null; }
}

$("#login-form").onsubmit = async (e) => {
  e.preventDefault();
  const token = $("#login-token").value;
  const body = token ? { token } : { user: $("#login-user").value, password: $("#login-password").value };
  const r = await call("POST", API + "/login", body);
  if (r.ok) { $("#login-password").value = ""; $("#login-token").value = ""; start(); return; }
  showLogin(errorText(r));
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
  Me = me;
  $$("#nav a").forEach((a) => { a.hidden = !can(AREAS[a.dataset.page]); });
  $("#whoami").textContent = `signed in as ${me.principal}`;
  $("#logout").hidden = false;
  $("#login").hidden = true;
  $("#app").hidden = false;
  if (!stream) connectEvents();
  if (started) { refreshSoon(); return; }
  started = true;
  route();
  setInterval(refreshSoon, 10000);
}
// Pages register first (pages.js loads after this file).
window.addEventListener("DOMContentLoaded", start);
