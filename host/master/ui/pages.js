// The dashboard's pages. Each has a skeleton (render) and live parts
// (refresh); objects link to their own pages (#/services/<app>,
// #/jobs/<job>, #/tasks/<task>, #/nodes/<agent>, #/plugins/<plugin>,
// #/frameworks/<framework>).
"use strict";

const link = (pageName, id, text = id) => `<a href="#/${pageName}/${enc(id)}">${esc(text)}</a>`;
const mem = (mb) => (mb >= 1024 ? `${num(mb / 1024, 1)} GiB` : `${num(mb, 0)} MiB`);
const bar = (used, total) => `<div class="bar"><div style="width:${Math.min(100, pct(used, total))}%"></div></div>`;
const stateCell = (s) => `<span class="state ${esc(s)}">${esc(String(s).replace("TASK_", ""))}</span>`;
const empty = (cols, text) => `<tr><td colspan="${cols}" class="dim">${text}</td></tr>`;
const MARATHON = "/v2";
const CHRONOS = "/frameworks/chronos";

// A two-step button: the first click arms it, the second (within 5 s) acts.
function armed(button) {
  if (button.dataset.armed) return true;
  button.dataset.armed = "1";
  const text = button.textContent;
  button.textContent = `really ${text}?`;
  setTimeout(() => { delete button.dataset.armed; button.textContent = text; }, 5000);
  return false;
}

// Marathon's answers, with what the pages derive from them.
async function marathonApps(withDeployments = true) {
  const [apps, queue, deployments] = await Promise.all([
    get(`${MARATHON}/apps?embed=apps.counts&embed=apps.deployments&embed=apps.lastTaskFailure`),
    get(`${MARATHON}/queue`),
    withDeployments ? get(`${MARATHON}/deployments`) : [],
  ]);
  const delayed = new Set((queue.queue || []).filter((q) => q.delay && q.delay.overdue === false).map((q) => (q.app || {}).id));
  return { apps: apps.apps, delayed, deployments };
}
// DC/OS' service status and health words.
function appStatus(a, delayed) {
  if (a.deployments && a.deployments.length) return "Deploying";
  if (delayed.has(a.id)) return "Delayed";
  if (a.instances === 0 && !a.tasksRunning) return "Suspended";
  if ((a.tasksRunning || 0) < a.instances) return "Waiting";
  return "Running";
}
function appHealth(a) {
  if (!(a.healthChecks || []).length) return "n/a";
  if (a.tasksUnhealthy > 0) return "Unhealthy";
  if (a.instances > 0 && a.tasksHealthy >= a.instances) return "Healthy";
  return a.instances === 0 ? "n/a" : "Unknown";
}
// Worst first, as DC/OS orders its Services Status panel.
function appBadness(a, delayed) {
  const h = appHealth(a), s = appStatus(a, delayed);
  return h === "Unhealthy" ? 0 : s === "Delayed" ? 1 : s === "Waiting" ? 2 : s === "Deploying" ? 3 : h === "Unknown" ? 4 : s === "Suspended" ? 6 : 5;
}

// ---- Overview ---------------------------------------------------------------------
const RANGES = { "1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600 };
const POINTS = 240;
const Hist = { samples: [], range: null, span: "1h" };

async function loadHistory() {
  const secs = RANGES[Hist.span];
  const now = Date.now() / 1000;
  const s = Hist.samples;
  if (Hist.range !== secs || !s.length || s.length > 2 * POINTS) {
    const h = await native(`/history?since=${Math.floor(now - secs)}&points=${POINTS}`);
    Hist.samples = h.samples;
    Hist.range = secs;
    Hist.interval = h.interval_secs;
  } else {
    // Only what is new since the last sample held.
    const h = await native(`/history?since=${s[s.length - 1].t}&points=${POINTS}`);
    Hist.samples = s.concat(h.samples).filter((x) => x.t >= now - secs);
  }
}

function panel(id, title, extra = "") {
  return `<div class="panel" id="${id}"><h3>${title}</h3><div class="figure"></div><div class="plot"></div>${extra}</div>`;
}

page("overview", {
  title: () => "Overview",
  render: () => `<h2>Overview <span class="seg" id="range">${Object.keys(RANGES).map((k) => `<button data-range="${k}"${k === Hist.span ? ' class="on"' : ""}>${k}</button>`).join("")}</span></h2>
    <div class="grid">
      ${panel("p-cpus", "CPU Allocation")}${panel("p-mem", "Memory Allocation")}${panel("p-disk", "Disk Allocation")}
      ${panel("p-gpus", "GPU Allocation")}${panel("p-agents", "Nodes")}${panel("p-tasks", "Tasks")}
      ${panel("p-failures", "Task Failure Rate")}
      <div class="panel" id="p-services"><h3>Services Status</h3><ol class="status-list"></ol><a href="#/services" class="more"></a></div>
      <div class="panel" id="p-components"><h3>Components Health</h3><ol class="status-list"></ol></div>
    </div>
    <h3>Events</h3><ol id="events" class="events"></ol>`,
  mount() {
    $("#range").onclick = (e) => {
      const b = e.target.closest("[data-range]");
      if (!b) return;
      Hist.span = b.dataset.range;
      $$("#range button").forEach((x) => x.classList.toggle("on", x === b));
      refreshSoon();
    };
  },
  async refresh() {
    // What the principal may not read is left out, not asked for.
    const [, masters, plugins, agents, svc] = await Promise.all([
      loadHistory(), can("masters") ? native("/masters") : null, can("plugins") ? native("/plugins") : [],
      native("/agents"), can("apps") ? marathonApps(false).catch(() => null) : "forbidden",
    ]);
    const now = Date.now() / 1000, t0 = now - RANGES[Hist.span];
    // The charts end at the cluster as it is now; the figures are now's.
    const c = await Cache.cluster;
    const r = (k) => [c.used[k] || 0, c.total[k] || 0];
    const tasks = (st) => c.tasks[st] || 0;
    const live = { t: now, cpus: r("cpus"), mem: r("mem"), disk: r("disk"), gpus: r("gpus"),
      agents: agents.filter((a) => a.connected && a.state === "active").length,
      unreachable: agents.filter((a) => a.state === "unreachable").length,
      running: tasks("TASK_RUNNING"), staging: tasks("TASK_STAGING") + tasks("TASK_STARTING") };
    const s = Hist.samples, g = s.concat([live]);
    const axis = `<div class="axis-t"><span>−${Hist.span}</span><span>now</span></div>`;
    const resource = (key, name, unit) => {
      const el = $(`#p-${key}`);
      const pts = g.map((x) => ({ t: x.t, v: x[key][0], total: x[key][1] }));
      const [u, t] = live[key];
      const fmtv = key === "mem" || key === "disk" ? mem : (v) => num(v);
      $(".figure", el).innerHTML = `<b>${fmtv(u)}</b> of ${fmtv(t)} ${unit} <span class="pct">${Math.round(pct(u, t))}%</span>`;
      $(".plot", el).innerHTML = Charts.area(pts, { t0, t1: now, label: name }) + axis;
    };
    resource("cpus", "CPU", "Cores");
    resource("mem", "Memory", "");
    resource("disk", "Disk", "");
    resource("gpus", "GPU", "GPUs");
    const agentsEl = $("#p-agents");
    $(".figure", agentsEl).innerHTML = `<b>${live.agents}</b> active${live.unreachable ? `, <span class="warn">${live.unreachable} unreachable</span>` : ""}`;
    $(".plot", agentsEl).innerHTML = Charts.area(g.map((x) => ({ t: x.t, v: x.agents })), { t0, t1: now, label: "agents" }) + axis;
    const tasksEl = $("#p-tasks");
    $(".figure", tasksEl).innerHTML = `<b>${live.running}</b> running · <b>${live.staging}</b> staging`;
    $(".plot", tasksEl).innerHTML = Charts.area(g.map((x) => ({ t: x.t, v: x.running })), { t0, t1: now, label: "tasks running" }) + axis;
    const ended = s.reduce((a, x) => a + x.ended, 0), failed = s.reduce((a, x) => a + x.failed, 0);
    const failEl = $("#p-failures");
    $(".figure", failEl).innerHTML = `<b>${failed}</b> failed of ${ended} ended <span class="pct">${ended ? Math.round((100 * failed) / ended) : 0}%</span>`;
    $(".plot", failEl).innerHTML = Charts.area(s.map((x) => ({ t: x.t, v: x.ended ? (100 * x.failed) / x.ended : 0 })), { t0, t1: now, max: 100, label: "failure rate", cls: "bad" }) + axis;

    const services = $("#p-services");
    if (svc === "forbidden") {
      $(".status-list", services).innerHTML = '<li class="dim">your policy does not let you read apps</li>';
    } else if (!svc) {
      $(".status-list", services).innerHTML = '<li class="dim">Marathon is not installed</li>';
    } else {
      const worst = [...svc.apps].sort((a, b) => appBadness(a, svc.delayed) - appBadness(b, svc.delayed) || a.id.localeCompare(b.id));
      $(".status-list", services).innerHTML = worst.slice(0, 5).map((a) => {
        const h = appHealth(a), st = appStatus(a, svc.delayed);
        return `<li>${link("services", a.id)} <span class="st-${st}">${st}</span> <span class="h-${h}">${h === "n/a" ? "" : h}</span></li>`;
      }).join("") || '<li class="dim">no services; create one on the Services page</li>';
      $(".more", services).textContent = `View all ${svc.apps.length} services`;
    }
    const comps = [];
    const leaderIndex = masters ? masters.this_master.last_log_index || 0 : 0;
    for (const m of masters ? masters.masters : []) {
      const lag = m.role === "leader" || m.matched_index == null ? null : Math.max(0, leaderIndex - m.matched_index);
      const bad = m.role === "unreachable" ? 0 : lag > 100 ? 1 : 5;
      comps.push({ bad, html: `<a href="#/masters">master ${m.id}</a> <span class="role-${m.role}">${m.role}</span>${lag != null ? ` <span class="dim">lag ${lag}</span>` : ""}` });
    }
    const down = agents.filter((a) => !a.connected || a.state !== "active");
    comps.push({ bad: down.length ? 0 : 5, html: `<a href="#/nodes">agents</a> ${agents.length - down.length} of ${agents.length} <span class="${down.length ? "bad" : "healthy"}">${down.length ? `${down.length} down` : "healthy"}</span>` });
    for (const p of plugins) {
      const h = p.health || (p.last_error ? "failed" : "healthy");
      comps.push({ bad: h === "failed" ? 0 : h === "degraded" ? 1 : 6, html: `${link("plugins", p.name)} <span class="dim">${esc(p.kind)}</span> <span class="${esc(h)}">${esc(h)}</span>` });
    }
    comps.sort((a, b) => a.bad - b.bad);
    $("#p-components .status-list").innerHTML = comps.map((c) => `<li>${c.html}</li>`).join("");
    $("#events").innerHTML = Events.slice(0, 50).map((e) => `<li>${esc(e.at.toLocaleTimeString())} <b>${esc(e.kind)}</b> ${esc(e.what)}</li>`).join("") || '<li class="dim">no events since this page opened</li>';
  },
});

// ---- Services (Marathon) ------------------------------------------------------------------
const APP_TEMPLATE = JSON.stringify({ id: "/my-app", cmd: "python3 -m http.server $PORT0", cpus: 0.1, mem: 64, instances: 1, portDefinitions: [{ port: 0 }] }, null, 2);

// Shows Marathon's 422 details by field under an editor.
function showErrors(box, r) {
  const d = r.data || {};
  if (Array.isArray(d.details)) {
    box.innerHTML = `<p class="err">${esc(d.message || "invalid")}</p><ul>${d.details.map((x) =>
      `<li data-path="${esc(x.path)}"><code>${esc(x.path || "/")}</code> ${esc((x.errors || []).join("; "))}</li>`).join("")}</ul>`;
  } else {
    box.innerHTML = `<p class="err">${esc(errorText(r))}</p>`;
  }
}
const appPath = (id) => id.split("/").filter(Boolean).map(enc).join("/");

page("services", {
  title: (id) => (id ? `Service ${id}` : "Services"),
  render: (id) => (id ? appSkeleton(id) : `<h2>Services <small>Marathon apps and groups</small></h2>
    <div class="toolbar"><button id="svc-new">Create app</button><input id="svc-filter" placeholder="filter by id" type="search"></div>
    <section id="svc-editor" class="editor" hidden><h3>New app <small>Marathon app JSON</small></h3>
      <textarea id="svc-json" spellcheck="false" rows="12">${esc(APP_TEMPLATE)}</textarea>
      <div id="svc-errors" class="errors"></div>
      <button id="svc-create">Create</button> <button id="svc-cancel">Cancel</button></section>
    <div class="scroll"><table id="services"><thead><tr><th>ID</th><th>Status</th><th>Instances</th><th>Health</th><th>CPU</th><th>Mem</th><th>Last failure</th></tr></thead><tbody></tbody></table></div>
    <h3>Deployments in progress</h3>
    <div class="scroll"><table id="deployments"><thead><tr><th>ID</th><th>Apps</th><th>Step</th><th>Actions</th><th>Started</th><th></th></tr></thead><tbody></tbody></table></div>`),
  mount(id) {
    if (id) return appMount(id);
    $("#svc-new").onclick = () => { $("#svc-editor").hidden = false; $("#svc-json").focus(); };
    $("#svc-cancel").onclick = () => { $("#svc-editor").hidden = true; };
    $("#svc-filter").oninput = refreshSoon;
    $("#svc-create").onclick = async (e) => {
      let body;
      try { body = JSON.parse($("#svc-json").value); } catch (err) {
        $("#svc-errors").innerHTML = `<p class="err">not JSON: ${esc(err.message)}</p>`;
        return;
      }
      e.target.disabled = true;
      const r = await call("POST", `${MARATHON}/apps`, body);
      e.target.disabled = false;
      if (!r.ok) { showErrors($("#svc-errors"), r); return; }
      $("#svc-errors").innerHTML = "";
      toast(`created ${r.data.id}`);
      location.hash = `#/services/${enc(r.data.id)}`;
    };
    $("#deployments").onclick = (e) => {
      const b = e.target.closest("[data-revert]");
      if (b && armed(b)) act(b, `roll back ${b.dataset.revert}`, () => call("DELETE", `${MARATHON}/deployments/${enc(b.dataset.revert)}`));
    };
  },
  async refresh(id) {
    if (id) return appRefresh(id);
    const { apps, delayed, deployments } = await marathonApps();
    const filter = ($("#svc-filter") || {}).value || "";
    const shown = apps.filter((a) => a.id.includes(filter)).sort((a, b) => a.id.localeCompare(b.id));
    // Groups as rows above their apps, indented by depth.
    const rows = [];
    const groupsShown = new Set();
    for (const a of shown) {
      const parts = a.id.split("/").filter(Boolean);
      for (let i = 1; i < parts.length; i++) {
        const g = "/" + parts.slice(0, i).join("/");
        if (groupsShown.has(g)) continue;
        groupsShown.add(g);
        const inG = apps.filter((x) => x.id.startsWith(g + "/"));
        const napps = `${inG.length} app${inG.length === 1 ? "" : "s"}`;
        rows.push(`<tr class="group" data-group="${esc(g)}"><td style="padding-left:${0.6 + (i - 1)}rem">▾ <b>${esc(g)}</b></td><td></td>
          <td>${inG.reduce((n, x) => n + (x.tasksRunning || 0), 0)} / ${inG.reduce((n, x) => n + x.instances, 0)}</td><td class="dim">${napps}</td>
          <td>${num(inG.reduce((n, x) => n + x.cpus * x.instances, 0))}</td><td>${mem(inG.reduce((n, x) => n + x.mem * x.instances, 0))}</td><td></td></tr>`);
      }
      const st = appStatus(a, delayed), h = appHealth(a);
      const f = a.lastTaskFailure;
      rows.push(`<tr data-app="${esc(a.id)}"><td style="padding-left:${0.6 + (parts.length - 1)}rem">${link("services", a.id)}</td>
        <td class="st-${st}">${st}</td><td>${a.tasksRunning || 0} / ${a.instances}${a.tasksStaged ? ` <span class="dim">(${a.tasksStaged} staged)</span>` : ""}</td>
        <td class="h-${h}">${h}${a.tasksUnhealthy ? ` (${a.tasksUnhealthy})` : ""}</td><td>${num(a.cpus)}</td><td>${mem(a.mem)}</td>
        <td>${f ? `<span class="dim" title="${esc(f.message)}">${esc(f.state)} ${esc(when(f.timestamp))}</span>` : ""}</td></tr>`);
    }
    $("#services tbody").innerHTML = rows.join("") || empty(7, apps.length ? "no app matches the filter" : "no apps yet: <b>Create app</b> above, or POST to /v2/apps");
    $("#deployments tbody").innerHTML = deployments.map((d) => `<tr><td><code>${esc(d.id)}</code></td>
      <td>${(d.affectedApps || []).map((x) => link("services", x)).join(" ")}</td><td>${d.currentStep} / ${d.totalSteps}</td>
      <td>${(d.currentActions || []).map((x) => `${esc(x.action)} ${esc(x.app)}`).join(", ")}</td><td>${esc(when(d.version))}</td>
      <td><button data-revert="${esc(d.id)}">roll back</button></td></tr>`).join("") || empty(6, "none");
  },
});

function appSkeleton(id) {
  return `<h2><a href="#/services">Services</a> / <code>${esc(id)}</code> <span id="app-status"></span></h2>
    <div class="toolbar">
      <label>Instances <input id="app-instances" type="number" min="0" step="1"></label><button id="app-scale">Scale</button>
      <button id="app-restart">Restart</button><button id="app-suspend">Suspend</button>
      <button id="app-destroy" class="danger">Destroy</button></div>
    <div class="cards" id="app-summary"></div>
    <h3>Tasks</h3>
    <div class="scroll"><table id="app-tasks"><thead><tr><th>ID</th><th>State</th><th>Host</th><th>Ports</th><th>Health</th><th>Started</th><th></th></tr></thead><tbody></tbody></table></div>
    <div id="app-logs"></div>
    <div id="app-waiting"></div><div id="app-failure"></div>
    <h3>Configuration</h3>
    <section class="editor"><textarea id="app-json" spellcheck="false" rows="14"></textarea><div id="app-errors" class="errors"></div>
    <button id="app-save">Save and deploy</button> <button id="app-reload">Discard changes</button></section>`;
}

const AppPage = { loaded: null };
function appMount(id) {
  AppPage.loaded = null;
  AppPage.gone = null;
  const url = `${MARATHON}/apps/${appPath(id)}`;
  $("#app-scale").onclick = (e) => {
    const n = parseInt($("#app-instances").value, 10);
    act(e.target, `scale ${id} to ${n}`, () => call("PUT", url, { instances: n }));
  };
  $("#app-restart").onclick = (e) => act(e.target, `restart ${id}`, () => call("POST", `${url}/restart`));
  $("#app-suspend").onclick = (e) => act(e.target, `suspend ${id}`, () => call("PUT", url, { instances: 0 }));
  $("#app-destroy").onclick = async (e) => {
    if (!armed(e.target)) return;
    // Not read again while it goes (its tasks' events would ask).
    AppPage.gone = id;
    const r = await act(e.target, `destroy ${id}`, () => call("DELETE", url));
    if (r) location.hash = "#/services";
    else AppPage.gone = null;
  };
  $("#app-save").onclick = async (e) => {
    let body;
    try { body = JSON.parse($("#app-json").value); } catch (err) {
      $("#app-errors").innerHTML = `<p class="err">not JSON: ${esc(err.message)}</p>`;
      return;
    }
    e.target.disabled = true;
    const r = await call("PUT", url, body);
    e.target.disabled = false;
    if (!r.ok) { showErrors($("#app-errors"), r); return; }
    $("#app-errors").innerHTML = "";
    toast(`deploying ${id}`);
    AppPage.loaded = null;
    refreshSoon();
  };
  $("#app-reload").onclick = () => { AppPage.loaded = null; $("#app-errors").innerHTML = ""; refreshSoon(); };
  $("#app-tasks").onclick = (e) => {
    const kill = e.target.closest("[data-kill]");
    if (kill) {
      act(kill, `kill ${kill.dataset.kill}`, () => call("DELETE", `${url}/tasks/${enc(kill.dataset.kill)}`));
      return;
    }
    const logs = e.target.closest("[data-logs-of]");
    if (logs) {
      $("#app-logs").innerHTML = Logs.html(logs.dataset.logsOf);
      Logs.open(logs.dataset.logsOf);
    }
  };
}

async function appRefresh(id) {
  if (AppPage.gone === id) return;
  const url = `${MARATHON}/apps/${appPath(id)}`;
  const [{ app }, queue] = await Promise.all([get(`${url}?embed=app.tasks&embed=app.counts&embed=app.deployments&embed=app.lastTaskFailure`), get(`${MARATHON}/queue`)]);
  const delayed = new Set((queue.queue || []).filter((q) => q.delay && q.delay.overdue === false).map((q) => (q.app || {}).id));
  const st = appStatus(app, delayed), h = appHealth(app);
  $("#app-status").innerHTML = `<span class="pill st-${st}">${st}</span> <span class="pill h-${h}">${h}</span>`;
  const inst = $("#app-instances");
  if (document.activeElement !== inst) inst.value = app.instances;
  $("#app-summary").innerHTML = [
    ["Instances", `${app.tasksRunning || 0} / ${app.instances}`], ["Healthy", `${app.tasksHealthy || 0}`],
    ["CPU each", num(app.cpus)], ["Memory each", mem(app.mem)], ["Version", when(app.version)],
    ["Deployments", (app.deployments || []).length ? (app.deployments || []).map((d) => esc(d.id)).join(", ") : "none"],
  ].map(([k, v]) => `<div class="card"><div class="k">${k}</div><div class="v">${v}</div></div>`).join("");
  const tasks = (app.tasks || []).sort((a, b) => String(b.stagedAt).localeCompare(String(a.stagedAt)));
  $("#app-tasks tbody").innerHTML = tasks.map((t) => {
    const hc = (t.healthCheckResults || []);
    const health = hc.length ? (hc.every((r) => r.alive) ? '<span class="healthy">healthy</span>' : '<span class="failed">unhealthy</span>') : '<span class="dim">–</span>';
    return `<tr><td>${link("tasks", t.id)}</td><td>${stateCell(t.state)}</td><td>${esc(t.host)}</td><td>${(t.ports || []).join(", ")}</td>
      <td>${health}</td><td>${esc(when(t.startedAt || t.stagedAt))}</td>
      <td><button data-logs-of="${esc(t.id)}">logs</button> <button class="danger" data-kill="${esc(t.id)}">kill</button></td></tr>`;
  }).join("") || empty(7, app.instances ? "no tasks yet (waiting for offers)" : "suspended: scale up to run it");
  // Why instances wait: the framework's last refusal for the app.
  const waiting = (app.tasksRunning || 0) + (app.tasksStaged || 0) < app.instances
    ? await call("GET", `${API}/frameworks/marathon/waiting?group=${enc(app.id)}`) : null;
  const w = waiting && waiting.ok && waiting.data[0];
  $("#app-waiting").innerHTML = w ? `<h3>Why it waits</h3>${placementHtml(w)}` : "";
  const f = app.lastTaskFailure;
  $("#app-failure").innerHTML = f ? `<h3>Last task failure</h3><p><span class="failed">${esc(f.state)}</span> ${esc(when(f.timestamp))} on ${esc(f.host)}: ${esc(f.message)}</p>` : "";
  if (AppPage.loaded !== app.version) {
    AppPage.loaded = app.version;
    const conf = { ...app };
    for (const k of ["tasks", "tasksRunning", "tasksStaged", "tasksHealthy", "tasksUnhealthy", "deployments", "lastTaskFailure", "version", "versionInfo", "readinessCheckResults", "taskStats"]) delete conf[k];
    if (document.activeElement !== $("#app-json")) $("#app-json").value = JSON.stringify(conf, null, 2);
  }
}

// ---- Jobs (Chronos) --------------------------------------------------------------
const JOB_TEMPLATE = JSON.stringify({ name: "my-job", command: "echo hello", schedule: "R/2030-01-01T00:00:00Z/PT24H", cpus: 0.1, mem: 32, owner: "ops@example.com" }, null, 2);

page("jobs", {
  title: (name) => (name ? `Job ${name}` : "Jobs"),
  render: (name) => `<h2>${name ? `<a href="#/jobs">Jobs</a> / <code id="job-name">${esc(name)}</code>` : "Jobs <small>Chronos, at <code>/v1/scheduler</code></small>"}</h2>
    ${name ? `<div class="toolbar"><button id="job-run">Run now</button> <span id="job-summary" class="dim"></span></div>
      <h3>Runs</h3><div class="scroll"><table id="job-runs"><thead><tr><th>Run</th><th>Due</th><th>Trigger</th><th>Result</th><th>Tries</th><th>Started</th><th>Ended</th><th>Exit</th><th>Task</th></tr></thead><tbody></tbody></table></div>
      <div id="job-logs"></div>` : `<div class="toolbar"><button id="job-new">Add job</button></div>
      <section id="job-editor" class="editor" hidden><h3>New job <small>Chronos job JSON (<code>parents</code> makes it dependent)</small></h3>
        <textarea id="job-json" spellcheck="false" rows="10">${esc(JOB_TEMPLATE)}</textarea><div id="job-errors" class="errors"></div>
        <button id="job-create">Add</button> <button id="job-cancel">Cancel</button></section>`}
    <div class="scroll"><table id="jobs"><thead><tr><th>Name</th><th>Schedule</th><th>Next run</th><th>Last result</th><th>OK / Err</th><th>State</th><th></th></tr></thead><tbody></tbody></table></div>
    <h3>Dependencies</h3><pre id="job-graph" class="graph"></pre>`,
  mount(name) {
    $("#jobs").onclick = (e) => {
      const b = e.target.closest("[data-run-job]");
      if (b) act(b, `run ${b.dataset.runJob}`, () => call("POST", `${CHRONOS}/jobs/${enc(b.dataset.runJob)}/runs`));
    };
    if (name) {
      $("#job-run").onclick = (e) => act(e.target, `run ${name}`, () => call("POST", `${CHRONOS}/jobs/${enc(name)}/runs`));
      $("#job-runs").onclick = (e) => {
        const l = e.target.closest("[data-logs-of]");
        if (l) { $("#job-logs").innerHTML = Logs.html(l.dataset.logsOf); Logs.open(l.dataset.logsOf); }
      };
      return;
    }
    $("#job-new").onclick = () => { $("#job-editor").hidden = false; };
    $("#job-cancel").onclick = () => { $("#job-editor").hidden = true; };
    $("#job-create").onclick = async (e) => {
      let body;
      try { body = JSON.parse($("#job-json").value); } catch (err) {
        $("#job-errors").innerHTML = `<p class="err">not JSON: ${esc(err.message)}</p>`;
        return;
      }
      const kind = body.parents ? "dependency" : "iso8601";
      e.target.disabled = true;
      const r = await call("POST", `/v1/scheduler/${kind}`, body);
      e.target.disabled = false;
      if (!r.ok) { showErrors($("#job-errors"), r); return; }
      location.hash = `#/jobs/${enc(body.name)}`;
    };
  },
  async refresh(name) {
    const { jobs } = await get(`${CHRONOS}/jobs`);
    $("#jobs tbody").innerHTML = jobs.map((j) => {
      const sched = j.kind === "dependent" ? `after ${j.parents.map(esc).join(" + ")}` : `<code>${esc(j.schedule)}</code>${j.schedule_time_zone ? ` <span class="dim">${esc(j.schedule_time_zone)}</span>` : ""}`;
      const last = j.last_run ? `<span class="${esc(j.last_run.result)}">${esc(j.last_run.result)}</span> <span class="dim">${esc(when(j.last_run.ended))}</span>` : '<span class="dim">never ran</span>';
      return `<tr${j.name === name ? ' class="on"' : ""}><td>${link("jobs", j.name)}</td><td>${sched}</td>
        <td>${j.disabled ? '<span class="dim">disabled</span>' : esc(when(j.next_run))}</td><td>${last}</td>
        <td>${j.success_count} / <span class="${j.error_count ? "failed" : ""}">${j.error_count}</span></td>
        <td class="${/running/.test(j.state) ? "running" : esc(j.state)}" title="${esc(j.waiting_for || "")}">${esc(j.state)}</td>
        <td><button data-run-job="${esc(j.name)}"${j.disabled ? " disabled" : ""}>run now</button></td></tr>`;
    }).join("") || empty(7, "no jobs: <b>Add job</b>, <code>wasmos job add FILE</code>, or POST Chronos job JSON to /v1/scheduler/iso8601");
    const g = await get(`${CHRONOS}/graph`).catch(() => ({}));
    $("#job-graph").textContent = g.tree || "no jobs";
    if (!name) return;
    const r = await call("GET", `${CHRONOS}/jobs/${enc(name)}`);
    if (!r.ok) { $("#job-runs tbody").innerHTML = empty(9, esc(errorText(r))); return; }
    const d = r.data, s = d.stats;
    $("#job-summary").textContent = s.count ? `due → end median ${num(s.median_ms, 0)} ms, p99 ${num(s.p99_ms, 0)} ms over ${s.count} successes` : "";
    $("#job-runs tbody").innerHTML = [...d.active, ...d.history].map((run) => {
      const a = run.attempts[run.attempts.length - 1] || {};
      return `<tr><td><code>${esc(run.id)}</code></td><td>${esc(when(run.due))}</td><td>${esc(run.trigger)}</td>
        <td class="${esc(run.state)}" title="${esc(run.message || "")}">${esc(run.state)}${run.message ? ` <span class="dim">${esc(run.message).slice(0, 60)}</span>` : ""}</td>
        <td>${run.attempts.length}</td><td>${esc(when(run.started))}</td><td>${esc(when(run.ended))}</td><td>${a.exit_code ?? "–"}</td>
        <td>${a.task_id ? `${link("tasks", a.task_id)} <button data-logs-of="${esc(a.task_id)}">logs</button>` : "–"}</td></tr>`;
    }).join("") || empty(9, "no runs yet");
  },
});

// ---- Tasks ------------------------------------------------------------------------
const cmdText = (c) => (c.shell || !c.arguments.length ? c.value : c.arguments.join(" "));
const statusText = (s) => [s.message, s.exit_code != null ? `exit ${s.exit_code}` : ""].filter(Boolean).join(" · ");
function taskRows(tasks, withFramework = true) {
  return tasks.map((t) => `<tr><td>${link("tasks", t.id)}</td>${withFramework ? `<td>${link("frameworks", t.framework_id)}</td>` : ""}
    <td>${stateCell(t.state)}</td><td>${link("nodes", t.agent_id, t.hostname || t.agent_id)}</td><td>${num(t.resources.cpus)}</td><td>${mem(t.resources.mem)}</td>
    <td><code>${esc(cmdText(t.command).slice(0, 80))}</code></td><td>${esc(statusText(t.status))}</td>
    <td>${isLive(t.state) ? `<button class="danger" data-kill-task="${esc(t.id)}">kill</button>` : ""}</td></tr>`).join("");
}
document.addEventListener("click", (e) => {
  const k = e.target.closest("[data-kill-task]");
  if (k) act(k, `kill ${k.dataset.killTask}`, () => call("POST", `${API}/tasks/${enc(k.dataset.killTask)}/kill`));
});
// A placement decision: the sentence, what ruled offers out, the sampled
// agents with their verdicts and scores.
function placementHtml(r) {
  const ruled = (r.refusals || []).map((x) => `<li><b>${x.offers}</b> ${esc(x.reason)}</li>`).join("");
  const rows = (r.candidates || []).map((c) => {
    const chosen = c.agent_id === r.chosen;
    const verdict = chosen ? '<span class="healthy">chosen</span>' : c.refused ? `<span class="failed">${esc(c.refused)}</span>` : "could take it";
    return `<tr${chosen ? ' class="chosen"' : ""}><td>${link("nodes", c.agent_id, c.hostname || c.agent_id)}</td><td>${num(c.score)}</td><td>${verdict}</td></tr>`;
  }).join("");
  return `<p class="summary">${esc(r.summary)}</p>
    <p class="dim">${esc(r.framework_id)} decided ${esc(when(r.at))}: ${r.offers} offer(s) looked at${(r.rules || []).length ? `; rules ${r.rules.map((x) => `<code>${esc(x)}</code>`).join(" ")}` : ""}</p>
    ${ruled ? `<ul class="ruled">${ruled}</ul>` : ""}
    ${rows ? `<div class="scroll"><table class="placement"><thead><tr><th>Agent</th><th>Score</th><th>Verdict</th></tr></thead><tbody>${rows}</tbody></table></div>` : ""}`;
}

const TASK_HEAD = "<th>ID</th><th>Framework</th><th>State</th><th>Agent</th><th>CPU</th><th>Mem</th><th>Command</th><th>Detail</th><th></th>";

page("tasks", {
  title: (id) => (id ? `Task ${id}` : "Tasks"),
  render: (id) => (id ? `<h2><a href="#/tasks">Tasks</a> / <code>${esc(id)}</code> <span id="task-state"></span></h2>
      <div class="toolbar" id="task-actions"></div><dl class="facts" id="task-facts"></dl>
      <h3>Placement</h3><div id="task-placement"></div>
      <h3>Status updates</h3><div class="scroll"><table id="task-statuses"><thead><tr><th>When</th><th>State</th><th>Source</th><th>Reason</th><th>Message</th></tr></thead><tbody></tbody></table></div>
      ${Logs.html(id)}` : `<h2>Tasks</h2>
    <form id="run" class="toolbar"><input id="run-cmd" placeholder="run a shell command through exec, e.g. echo hello; sleep 5" required>
      <input id="run-cpus" type="number" step="0.01" min="0" value="0.1" title="cpus"><input id="run-mem" type="number" step="1" min="0" value="32" title="mem (MB)">
      <button>Run</button><span id="run-msg"></span></form>
    <label class="inline"><input type="checkbox" id="show-done"> show finished</label>
    <div class="scroll"><table id="tasks"><thead><tr>${TASK_HEAD}</tr></thead><tbody></tbody></table></div>`),
  mount(id) {
    if (id) { Logs.open(id); return; }
    $("#show-done").onchange = refreshSoon;
    $("#run").onsubmit = async (e) => {
      e.preventDefault();
      const body = { cmd: $("#run-cmd").value, cpus: parseFloat($("#run-cpus").value), mem: parseFloat($("#run-mem").value) };
      const r = await call("POST", "/frameworks/exec/tasks", body);
      $("#run-msg").innerHTML = r.ok ? `submitted ${link("tasks", r.data.id)}` : `<span class="err">${esc(errorText(r))}</span>`;
      if (r.ok) { $("#run-cmd").value = ""; refreshSoon(); }
    };
  },
  async refresh(id) {
    if (id) {
      const t = await native(`/tasks/${enc(id)}`);
      $("#task-state").innerHTML = stateCell(t.state);
      $("#task-actions").innerHTML = isLive(t.state) ? `<button class="danger" data-kill-task="${esc(t.id)}">Kill</button>` : "";
      const facts = [["Name", esc(t.name)], ["Framework", link("frameworks", t.framework_id)], ["Agent", link("nodes", t.agent_id, t.hostname || t.agent_id)],
        ["Resources", `${num(t.resources.cpus)} cpus, ${mem(t.resources.mem)}, disk ${mem(t.resources.disk)}`],
        ["Command", `<code>${esc(cmdText(t.command))}</code>`], ["Launched", esc(when(t.launched_at))],
        ["Executor", t.executor ? `<code>${esc(t.executor.id)}</code> (${esc(t.executor.kind)})` : "command"],
        ["Labels", Object.entries(t.labels || {}).map(([k, v]) => `<code>${esc(k)}=${esc(v)}</code>`).join(" ") || "–"]];
      $("#task-facts").innerHTML = facts.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("");
      $("#task-statuses tbody").innerHTML = [...t.statuses].reverse().map((s) => `<tr><td>${esc(when(s.timestamp))}</td><td>${stateCell(s.state)}</td>
        <td>${esc(s.source)}</td><td>${esc(s.reason || "")}</td><td>${esc(statusText(s))}</td></tr>`).join("");
      const p = await call("GET", `${API}/tasks/${enc(id)}/placement`);
      $("#task-placement").innerHTML = p.ok ? placementHtml(p.data) : `<p class="dim">${esc(errorText(p))}</p>`;
      return;
    }
    let tasks = await native($("#show-done").checked ? "/tasks" : "/tasks?active=true");
    tasks.sort((a, b) => b.launched_at - a.launched_at);
    $("#tasks tbody").innerHTML = taskRows(tasks) || empty(9, "no tasks; run one above");
  },
});

// ---- Nodes ---------------------------------------------------------------------------------
const Nodes = { view: "list", resource: "cpus" };
const agentStatus = (a) => (!a.connected && a.state === "active" ? "disconnected" : a.state);
page("nodes", {
  title: (id) => (id ? `Node ${id}` : "Nodes"),
  render: (id) => (id ? `<h2><a href="#/nodes">Nodes</a> / <code>${esc(id)}</code> <span id="node-state"></span></h2>
      <div class="toolbar" id="node-actions"></div>
      <dl class="facts" id="node-facts"></dl><div class="cards" id="node-res"></div>
      <h3>Tasks on it</h3><div class="scroll"><table id="node-tasks"><thead><tr>${TASK_HEAD}</tr></thead><tbody></tbody></table></div>` : `<h2>Nodes
      <span class="seg" id="nodes-view"><button data-view="list">list</button><button data-view="grid">grid</button></span>
      <span class="seg" id="nodes-res">${["cpus", "mem", "disk", "gpus"].map((r) => `<button data-res="${r}">${r}</button>`).join("")}</span></h2>
    <div id="nodes-list" class="scroll"><table id="agents"><thead><tr><th>Host</th><th>Status</th><th>Tasks</th><th>CPU</th><th>Mem</th><th>Disk</th><th>GPU</th><th>Attributes</th><th>Drain</th></tr></thead><tbody></tbody></table></div>
    <div id="nodes-grid" class="dials" hidden></div>`),
  mount(id) {
    if (id) {
      $("#node-actions").onclick = (e) => {
        const b = e.target.closest("[data-node-op]");
        if (!b || (b.classList.contains("danger") && !armed(b))) return;
        act(b, `${b.dataset.nodeOp} ${id}`, () => call("POST", `${API}/agents/${enc(id)}/${b.dataset.nodeOp}`, {}));
      };
      return;
    }
    const sync = () => {
      $$("#nodes-view button").forEach((b) => b.classList.toggle("on", b.dataset.view === Nodes.view));
      $$("#nodes-res button").forEach((b) => b.classList.toggle("on", b.dataset.res === Nodes.resource));
      $("#nodes-list").hidden = Nodes.view !== "list";
      $("#nodes-grid").hidden = Nodes.view !== "grid";
      $("#nodes-res").hidden = Nodes.view !== "grid";
    };
    $("#nodes-view").onclick = (e) => { const b = e.target.closest("[data-view]"); if (b) { Nodes.view = b.dataset.view; sync(); refreshSoon(); } };
    $("#nodes-res").onclick = (e) => { const b = e.target.closest("[data-res]"); if (b) { Nodes.resource = b.dataset.res; sync(); refreshSoon(); } };
    sync();
  },
  async refresh(id) {
    const agents = await native("/agents");
    const cell = (a, r) => {
      const u = a.used[r] || 0, t = a.resources[r] || 0;
      if (!t) return '<span class="dim">–</span>';
      return `${Math.round(pct(u, t))}% <span class="dim">${r === "mem" || r === "disk" ? mem(u) : num(u)} of ${r === "mem" || r === "disk" ? mem(t) : num(t)}</span>${bar(u, t)}`;
    };
    if (id) {
      const a = agents.find((x) => x.id === id);
      if (!a) throw new Error(`no agent ${id}`);
      $("#node-state").innerHTML = `<span class="pill ${a.connected ? "ok" : "off"}">${esc(agentStatus(a))}</span>`;
      const facts = [["Hostname", esc(a.hostname)], ["Endpoint", `<code>${esc(a.endpoint)}</code>`], ["Version", esc(a.version)],
        ["Registered", esc(when(a.registered_at))], ["Attributes", Object.entries(a.attributes).map(([k, v]) => `<code>${esc(k)}:${esc(v)}</code>`).join(" ") || "–"],
        ["Reserved", Object.entries(a.reserved || {}).map(([role, r]) => `<code>${esc(role)}</code>: ${num(r.cpus)} cpus, ${mem(r.mem)}`).join("; ") || "–"],
        ["Volumes", (a.volumes || []).map((v) => `<code>${esc(v.id || v.persistence_id || JSON.stringify(v))}</code>`).join(" ") || "–"],
        ["Drain", drainText(a)]];
      const draining = a.drain && a.drain.state === "DRAINING";
      $("#node-actions").innerHTML = draining ? '<span class="dim">draining: its tasks are being killed; a drain cannot be cancelled</span>'
        : a.deactivated ? '<button data-node-op="reactivate">Reactivate</button>'
          : '<button class="danger" data-node-op="drain">Drain</button> <button data-node-op="deactivate">Deactivate</button>';
      $("#node-facts").innerHTML = facts.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("");
      $("#node-res").innerHTML = ["cpus", "mem", "disk", "gpus"].map((r) => `<div class="card"><div class="k">${r}</div><div class="v">${cell(a, r)}</div></div>`).join("");
      const tasks = await native(`/tasks?agent=${enc(id)}&active=true`);
      $("#node-tasks tbody").innerHTML = taskRows(tasks) || empty(9, "no live tasks on this node");
      return;
    }
    agents.sort((a, b) => a.hostname.localeCompare(b.hostname) || a.id.localeCompare(b.id));
    if (Nodes.view === "list") {
      $("#agents tbody").innerHTML = agents.map((a) => `<tr><td>${link("nodes", a.id, a.hostname)} <div class="dim small">${esc(a.id)}</div></td>
        <td class="${a.connected ? "active" : "unreachable"}">${esc(agentStatus(a))}</td><td>${a.tasks}</td>
        <td>${cell(a, "cpus")}</td><td>${cell(a, "mem")}</td><td>${cell(a, "disk")}</td><td>${cell(a, "gpus")}</td>
        <td>${Object.entries(a.attributes).map(([k, v]) => `<code>${esc(k)}:${esc(v)}</code>`).join(" ")}</td><td class="drain">${drainText(a)}</td></tr>`).join("")
        || empty(9, "no agents registered: start one with <code>wasmos agent --master URL</code>");
    } else {
      const r = Nodes.resource;
      $("#nodes-grid").innerHTML = agents.map((a) => `<a class="dialbox" href="#/nodes/${enc(a.id)}" title="${esc(a.hostname)}">
        ${Charts.dial(pct(a.used[r] || 0, a.resources[r] || 0), { label: `${a.hostname} ${r}`, bad: !a.connected || a.state !== "active" })}
        <span>${esc(a.hostname)}</span></a>`).join("") || '<p class="dim">no agents registered</p>';
    }
  },
});

// An agent's service state: draining or drained (since when), deactivated, or in service.
function drainText(a) {
  if (a.maintenance === "DOWN") return "machine down for maintenance";
  if (a.drain) return `${a.drain.state === "DRAINING" ? "draining" : "drained"} <span class="dim">since ${esc(when(a.drain.started_at))}</span>`;
  if (a.deactivated) return "deactivated";
  return a.maintenance === "DRAINING" ? "maintenance scheduled" : '<span class="dim">–</span>';
}

// ---- Plugins ---------------------------------------------------------------------------------
page("plugins", {
  title: (name) => (name ? `Plugin ${name}` : "Plugins"),
  render: (name) => (name ? `<h2><a href="#/plugins">Plugins</a> / <code>${esc(name)}</code> <span id="plugin-health"></span></h2>
      <dl class="facts" id="plugin-facts"></dl>
      <div class="toolbar" id="plugin-versions" hidden><button id="plugin-rollback"></button> <span id="plugin-rollback-msg"></span></div>
      <h3>Calls <small>since each host that runs it started</small></h3><dl class="facts" id="plugin-stats"></dl>
      <h3>Configuration</h3><form id="plugin-config" class="kv"></form>
      <div class="toolbar"><button id="plugin-add">Add a key</button><button id="plugin-save">Save</button> <span id="plugin-msg"></span></div>
      <h3>Log <small>the last lines it wrote through <code>log</code></small></h3><div class="logs"><pre id="plugin-log"></pre></div>` : `<h2>Plugins <small>WebAssembly components: frameworks, isolators, placement, health checks</small></h2>
    <div class="scroll"><table id="plugins"><thead><tr><th>Name</th><th>Kind</th><th>Version</th><th>World</th><th>Digest</th><th>Signed by</th><th>Health</th><th>Last error</th></tr></thead><tbody></tbody></table></div>
    <p class="dim">Install with <code>wasmos plugin install oci://REGISTRY/REPO:TAG</code> (signed by a trusted key).</p>`),
  mount(name) {
    if (!name) return;
    PluginPage.loaded = false;
    PluginPage.after = 0;
    $("#plugin-rollback").onclick = async (e) => {
      const r = await act(e.target, `roll ${name} back`, () => call("POST", `${API}/plugins/${enc(name)}/rollback`, {}));
      $("#plugin-rollback-msg").textContent = r ? `now ${r.version}` : "";
      if (r) PluginPage.loaded = false;
    };
    $("#plugin-add").onclick = () => $("#plugin-config").insertAdjacentHTML("beforeend", kvRow("", ""));
    $("#plugin-config").onclick = (e) => { const x = e.target.closest("[data-remove]"); if (x) { e.preventDefault(); x.closest(".row").classList.toggle("removed"); } };
    $("#plugin-save").onclick = async (e) => {
      const changes = {};
      const keep = new Set();
      for (const row of $$("#plugin-config .row")) {
        const k = $(".k", row).value.trim(), v = $(".v", row).value;
        if (!k) continue;
        if (row.classList.contains("removed")) continue;
        keep.add(k);
        if (PluginPage.config[k] !== v) changes[k] = v;
      }
      for (const k of Object.keys(PluginPage.config)) if (!keep.has(k)) changes[k] = null;
      if (!Object.keys(changes).length) { $("#plugin-msg").textContent = "nothing changed"; return; }
      const r = await act(e.target, `configure ${name}`, () => call("PATCH", `${API}/plugins/${enc(name)}/config`, changes));
      $("#plugin-msg").textContent = r ? "saved" : "";
      if (r) PluginPage.loaded = false;
    };
  },
  async refresh(name) {
    if (name) {
      const p = await native(`/plugins/${enc(name)}`);
      const h = p.health || (p.last_error ? "failed" : "healthy");
      $("#plugin-health").innerHTML = `<span class="pill ${h === "healthy" ? "ok" : "off"}">${esc(h)}</span>`;
      const facts = [["Kind", esc(p.kind)], ["Version", esc(p.version)], ["WIT world", esc(p.world_version)], ["Description", esc(p.description)],
        ["Digest", `<code>${esc(p.digest)}</code>`], ["Size", `${num(p.size / 1024, 0)} KiB`], ["Source", esc(p.source)],
        ["Signed by", esc(p.signed_by || (p.source === "bundled" ? "(bundled with wasmos)" : "unsigned"))], ["Installed", esc(when(p.installed_at))],
        ["HTTP", (p.http_prefixes || []).map((x) => `<code>${esc(x)}</code>`).join(" ") || "–"], ["Last error", p.last_error ? `<span class="err">${esc(p.last_error)}</span>` : "–"]];
      $("#plugin-facts").innerHTML = facts.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("");
      $("#plugin-versions").hidden = !p.previous_version;
      if (p.previous_version) $("#plugin-rollback").textContent = `Roll back to ${p.previous_version}`;
      const st = p.stats;
      const failed = st ? Object.entries(st.failures || {}).map(([k, n]) => `${esc(k)} ${num(n, 0)}`).join(", ") : "";
      $("#plugin-stats").innerHTML = (st ? [["Calls", num(st.calls, 0)],
        ["Latency", `p50 ${num(st.p50_ms, 2)} ms · p90 ${num(st.p90_ms, 2)} ms · p99 ${num(st.p99_ms, 2)} ms · max ${num(st.max_ms, 2)} ms`],
        ["Failures", failed ? `<span class="err">${failed}</span>` : "none"], ["Instances", `${num(st.instances, 0)} built (${num(Math.max(st.instances - 1, 0), 0)} restarts)`],
        ["Memory", `${num(st.memory_high_water / 1048576, 1)} MiB at most`]] : [["Calls", "none yet"]]).map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("");
      const lines = await native(`/plugins/${enc(name)}/logs?after=${PluginPage.after}${PluginPage.after ? "" : "&tail=200"}`);
      if (lines.length) {
        PluginPage.after = lines[lines.length - 1].seq;
        const pre = $("#plugin-log");
        pre.textContent += lines.map((l) => `${new Date(l.at_ms).toISOString()} ${l.level.toUpperCase().padEnd(5)} ${l.agent ? `[agent ${l.agent}] ` : ""}${l.message}\n`).join("");
        const kept = pre.textContent.split("\n");
        if (kept.length > 500) pre.textContent = kept.slice(-500).join("\n");
      }
      if (!PluginPage.loaded) {
        PluginPage.loaded = true;
        PluginPage.config = p.config;
        $("#plugin-config").innerHTML = Object.entries(p.config).map(([k, v]) => kvRow(k, v)).join("") || "";
      }
      return;
    }
    const plugins = await native("/plugins");
    $("#plugins tbody").innerHTML = plugins.map((p) => {
      const h = p.health || (p.last_error ? "failed" : "healthy");
      return `<tr><td>${link("plugins", p.name)}</td><td>${esc(p.kind)}</td><td>${esc(p.version)}</td><td>${esc(p.world_version)}</td>
        <td><code title="${esc(p.digest)}">${esc(p.digest.slice(7, 19))}</code></td>
        <td>${esc(p.signed_by || (p.source === "bundled" ? "(bundled)" : "unsigned"))}</td><td class="${esc(h)}">${esc(h)}</td>
        <td class="err small">${esc(p.last_error || "")}</td></tr>`;
    }).join("");
  },
});
const PluginPage = { loaded: false, config: {}, after: 0 };
const kvRow = (k, v) => `<div class="row"><input class="k" value="${esc(k)}" placeholder="key"${k ? " readonly" : ""}><input class="v" value="${esc(v)}" placeholder="value"><button data-remove title="remove this key">×</button></div>`;

// ---- Frameworks ------------------------------------------------------------------------------------------
page("frameworks", {
  title: (id) => (id ? `Framework ${id}` : "Frameworks"),
  render: (id) => (id ? `<h2><a href="#/frameworks">Frameworks</a> / <code>${esc(id)}</code></h2><dl class="facts" id="fw-facts"></dl>
      <h3>Live tasks</h3><div class="scroll"><table id="fw-tasks"><thead><tr>${TASK_HEAD}</tr></thead><tbody></tbody></table></div>` : `<h2>Frameworks</h2>
    <div class="scroll"><table id="frameworks"><thead><tr><th>ID</th><th>Name</th><th>Kind</th><th>Role</th><th>Health</th><th>Tasks</th><th>CPU</th><th>Mem</th><th>Offers</th></tr></thead><tbody></tbody></table></div>`),
  async refresh(id) {
    const fws = await native("/frameworks");
    const kind = (f) => (f.kind.type === "plugin" ? `plugin ${link("plugins", f.kind.plugin || f.id, f.kind.plugin || f.id)}` : esc(f.kind.type));
    const health = (f) => `<span class="${esc(f.health || (f.active ? "active" : "inactive"))}" title="${esc(f.last_error || "")}">${esc(f.health || (f.active ? "active" : "inactive"))}</span>`;
    if (id) {
      const f = fws.find((x) => x.id === id);
      if (!f) throw new Error(`no framework ${id}`);
      const facts = [["Name", esc(f.name)], ["Kind", kind(f)], ["Role", esc(f.role)], ["Health", health(f)], ["Principal", esc(f.principal || "–")],
        ["Registered", esc(when(f.registered_at))], ["Failover timeout", `${num(f.failover_timeout_secs, 0)} s`],
        ["Using", `${num(f.used.cpus)} cpus, ${mem(f.used.mem)}`], ["Offers", `${f.offers}${f.suppressed ? " (suppressed)" : ""}`], ["Last error", esc(f.last_error || "–")]];
      $("#fw-facts").innerHTML = facts.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("");
      const tasks = await native(`/tasks?framework=${enc(id)}&active=true`);
      $("#fw-tasks tbody").innerHTML = taskRows(tasks) || empty(9, "no live tasks");
      return;
    }
    $("#frameworks tbody").innerHTML = fws.map((f) => `<tr><td>${link("frameworks", f.id)}</td><td>${esc(f.name)}</td><td>${kind(f)}</td><td>${esc(f.role)}</td>
      <td>${health(f)}</td><td>${f.tasks}</td><td>${num(f.used.cpus)}</td><td>${mem(f.used.mem)}</td><td>${f.offers}${f.suppressed ? ' <span class="dim">(suppressed)</span>' : ""}</td></tr>`).join("");
  },
});

// ---- Masters ---------------------------------------------------------------------------------
page("masters", {
  title: () => "Masters",
  render: () => `<h2>Masters <small>the raft group that holds the cluster's state</small></h2>
    <div class="cards" id="raft"></div>
    <div class="scroll"><table id="masters"><thead><tr><th>ID</th><th>Address</th><th>Role</th><th>Voter</th><th>Log position</th><th>Lag</th><th>Last answer</th></tr></thead><tbody></tbody></table></div>
    <p class="dim" id="masters-note"></p>`,
  async refresh() {
    const m = await native("/masters");
    const me = m.this_master;
    $("#raft").innerHTML = [["Leader", m.leader ? `master ${m.leader.id}` : "none"], ["Term", m.term], ["Last log index", me.last_log_index ?? "–"],
      ["Committed", me.committed ?? "–"], ["Applied", me.applied ?? "–"], ["Snapshot", me.snapshot ?? "–"]]
      .map(([k, v]) => `<div class="card"><div class="k">${k}</div><div class="v">${esc(v)}</div></div>`).join("");
    const top = me.last_log_index || 0;
    $("#masters tbody").innerHTML = m.masters.map((x) => `<tr><td>${x.id}${x.id === me.id ? ' <span class="dim">(this)</span>' : ""}</td><td><code>${esc(x.address)}</code></td>
      <td class="role-${esc(x.role)}">${esc(x.role)}</td><td>${x.voter ? "yes" : "no"}</td><td>${x.matched_index ?? "–"}</td>
      <td>${x.role === "leader" || x.matched_index == null ? "–" : Math.max(0, top - x.matched_index)}</td><td>${x.last_ack_ms == null ? "–" : `${x.last_ack_ms} ms ago`}</td></tr>`).join("");
    $("#masters-note").textContent = (m.retired || []).length ? `Retired ids (never reused): ${m.retired.join(", ")}` : "";
  },
});

// ---- Catalogue (packages) ---------------------------------------------------------------
const cosmos = (op, body = {}) => call("POST", `/package/${op}`, body);
async function cosmosGet(op, body) {
  const r = await cosmos(op, body);
  if (!r.ok) throw new Error(errorText(r));
  return r.data;
}

// A form for a JSON schema's properties: a fieldset per object, an input
// per value (a select for an enum, a checkbox for a boolean), each named
// by its JSON pointer and filled with its default.
function schemaForm(schema, path = "") {
  return Object.entries(schema.properties || {}).map(([k, p]) => {
    const at = `${path}/${k}`;
    if (p.type === "object" || p.properties) {
      return `<fieldset><legend>${esc(k)}</legend>${p.description ? `<p class="dim small">${esc(p.description)}</p>` : ""}${schemaForm(p, at)}</fieldset>`;
    }
    const d = p.default;
    let input;
    if (Array.isArray(p.enum)) {
      input = `<select data-opt="${esc(at)}" data-type="${esc(p.type || "string")}">${p.enum.map((v) => `<option${v === d ? " selected" : ""}>${esc(v)}</option>`).join("")}</select>`;
    } else if (p.type === "boolean") {
      input = `<input type="checkbox" data-opt="${esc(at)}" data-type="boolean"${d ? " checked" : ""}>`;
    } else {
      const kind = p.type === "integer" || p.type === "number" ? "number" : "text";
      input = `<input type="${kind}" ${kind === "number" ? `step="${p.type === "integer" ? 1 : "any"}"` : ""} data-opt="${esc(at)}" data-type="${esc(p.type || "string")}" value="${esc(d ?? "")}">`;
    }
    return `<label class="opt"><span>${esc(k)}${(schema.required || []).includes(k) ? " *" : ""}</span>${input}
      <span class="dim small">${esc(p.description || "")}</span><span class="err small" data-error-for="${esc(at)}"></span></label>`;
  }).join("");
}

// The options a schema form holds, as a nested object.
function formOptions(root) {
  const out = {};
  for (const el of $$("[data-opt]", root)) {
    const keys = el.dataset.opt.split("/").filter(Boolean);
    let v;
    if (el.dataset.type === "boolean") v = el.checked;
    else if (el.dataset.type === "integer" || el.dataset.type === "number") {
      if (el.value === "") continue;
      v = Number(el.value);
    } else v = el.value;
    let o = out;
    for (const k of keys.slice(0, -1)) o = o[k] = o[k] || {};
    o[keys[keys.length - 1]] = v;
  }
  return out;
}

page("catalogue", {
  title: (name) => (name ? `Package ${name}` : "Catalogue"),
  render: (name) => (name ? `<h2><a href="#/catalogue">Catalogue</a> / <code>${esc(name)}</code> <span id="pkg-version"></span></h2>
      <dl class="facts" id="pkg-facts"></dl>
      <section class="editor"><h3>Install</h3><form id="pkg-form" class="schema"></form>
        <label class="opt"><span>app id</span><input id="pkg-appid" placeholder="the package's own"></label>
        <div id="pkg-errors" class="errors"></div>
        <button id="pkg-review">Review</button> <button id="pkg-install">Install</button></section>
      <h3>What it makes</h3><pre id="pkg-render" class="graph">press Review</pre>` : `<h2>Catalogue <small>packages from the cluster's repositories</small></h2>
    <div class="toolbar"><input id="pkg-query" type="search" placeholder="search by name, description or tag (* is a wildcard)"></div>
    <div id="packages" class="tiles"></div>
    <h3>Installed</h3><div class="scroll"><table id="installed"><thead><tr><th>Package</th><th>Version</th><th>Installed as</th><th>Made</th><th></th></tr></thead><tbody></tbody></table></div>
    <h3>Repositories</h3><div class="scroll"><table id="repos"><thead><tr><th>#</th><th>Name</th><th>URI</th><th></th></tr></thead><tbody></tbody></table></div>
    <form id="repo-add" class="toolbar"><input id="repo-name" placeholder="name" required><input id="repo-uri" placeholder="https://… or file:///…" required><button>Add repository</button></form>`),
  mount(name) {
    if (name) {
      const options = () => formOptions($("#pkg-form"));
      const body = () => ({ packageName: name, options: options(), appId: $("#pkg-appid").value || undefined });
      const show = (r) => {
        $$("[data-error-for]").forEach((x) => { x.textContent = ""; });
        if (r.ok) { $("#pkg-errors").innerHTML = ""; return true; }
        const errs = (r.data && r.data.data && r.data.data.errors) || [];
        for (const e of errs) { const slot = $(`[data-error-for="${CSS.escape(e.path)}"]`); if (slot) slot.textContent = e.message; }
        $("#pkg-errors").innerHTML = `<p class="err">${esc(errorText(r))}</p>`;
        return false;
      };
      $("#pkg-review").onclick = async (e) => {
        e.preventDefault();
        const r = await cosmos("render", body());
        if (show(r)) $("#pkg-render").textContent = JSON.stringify(r.data, null, 2);
      };
      $("#pkg-install").onclick = async (e) => {
        e.preventDefault();
        e.target.disabled = true;
        const rendered = await cosmos("render", body());
        if (!show(rendered)) { e.target.disabled = false; return; }
        const r = await cosmos("install", body());
        e.target.disabled = false;
        if (!show(r)) return;
        toast(`installed ${name} as ${r.data.appId}`);
        // Where what it made is: its app, else its job, else its plugin.
        const d = r.data;
        location.hash = rendered.data.marathonJson ? `#/services/${enc(d.appId)}`
          : d.jobName ? `#/jobs/${enc(d.jobName)}` : d.plugins ? `#/plugins/${enc(d.plugins[0])}` : "#/catalogue";
      };
      return;
    }
    $("#pkg-query").oninput = refreshSoon;
    $("#repo-add").onsubmit = (e) => {
      e.preventDefault();
      act(e.submitter, `add repository ${$("#repo-name").value}`, () => cosmos("repository/add", { name: $("#repo-name").value, uri: $("#repo-uri").value }));
    };
    $("#repos").onclick = (e) => {
      const b = e.target.closest("[data-repo]");
      if (b && armed(b)) act(b, `remove repository ${b.dataset.repo}`, () => cosmos("repository/delete", { name: b.dataset.repo }));
    };
    $("#installed").onclick = (e) => {
      const b = e.target.closest("[data-uninstall]");
      if (b && armed(b)) act(b, `uninstall ${b.dataset.uninstall}`, () => cosmos("uninstall", { packageName: b.dataset.uninstall, appId: b.dataset.app }));
    };
  },
  async refresh(name) {
    if (name) {
      const { package: p } = await cosmosGet("describe", { packageName: name });
      $("#pkg-version").innerHTML = `<span class="pill">${esc(p.version)}</span>${p.selected ? ' <span class="pill ok">selected</span>' : ""}`;
      const facts = [["Description", esc(p.description)], ["Maintainer", esc(p.maintainer || "–")], ["Tags", (p.tags || []).map((t) => `<code>${esc(t)}</code>`).join(" ")],
        ["Release", esc(p.releaseVersion)], ["Framework", p.framework ? "yes" : "no"], ["Notes", esc(p.preInstallNotes || "–")]];
      $("#pkg-facts").innerHTML = facts.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("");
      if (!$("#pkg-form").dataset.built) {
        $("#pkg-form").dataset.built = "1";
        $("#pkg-form").innerHTML = p.config ? schemaForm(p.config) : '<p class="dim">This package takes no options.</p>';
      }
      return;
    }
    const [found, installed, repos] = await Promise.all([
      cosmosGet("search", { query: ($("#pkg-query") || {}).value || "" }), cosmosGet("list"), cosmosGet("repository/list"),
    ]);
    $("#packages").innerHTML = found.packages.map((p) => `<a class="tile" href="#/catalogue/${enc(p.name)}" data-package="${esc(p.name)}">
      <b>${esc(p.name)}</b> <span class="dim">${esc(p.currentVersion)}</span>${p.selected ? ' <span class="pill ok">selected</span>' : ""}
      <p>${esc(p.description)}</p><div>${(p.tags || []).map((t) => `<code>${esc(t)}</code>`).join(" ")}</div></a>`).join("")
      || `<p class="dim">${repos.repositories.length ? "no package matches" : "no repositories yet: add one below (e.g. <code>file:///…/examples/catalogue</code>)"}</p>`;
    $("#installed tbody").innerHTML = installed.packages.map((x) => {
      const d = x.packageInformation.packageDefinition;
      const parts = x.parts || { app: x.appId, plugins: [] };
      const made = [parts.app && `app ${link("services", parts.app)}`, parts.job && `job ${link("jobs", parts.job)}`,
        ...(parts.plugins || []).map((n) => `plugin ${link("plugins", n)}`)].filter(Boolean).join(", ");
      return `<tr><td>${link("catalogue", d.name)}</td><td>${esc(d.version)}</td><td><code>${esc(x.appId)}</code></td><td>${made || "–"}</td>
        <td><button class="danger" data-uninstall="${esc(d.name)}" data-app="${esc(x.appId)}">uninstall</button></td></tr>`;
    }).join("") || empty(5, "none");
    $("#repos tbody").innerHTML = repos.repositories.map((r, i) => `<tr><td>${i}</td><td>${esc(r.name)}</td><td><code>${esc(r.uri)}</code></td>
      <td><button class="danger" data-repo="${esc(r.name)}">remove</button></td></tr>`).join("") || empty(4, "none");
  },
});
