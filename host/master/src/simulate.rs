//! `wasmos simulate`: the real allocator, the real placement plugins (the
//! bundled `constraints` and any given) and the real Marathon framework
//! plugin run against a simulated cluster in virtual time, offline and
//! faster than real time. Agents are records in a [`State`] changed by the
//! same commands the masters commit; tasks are launched through the
//! allocator's accept, reported running after a start-up delay, and finish
//! after their app's `runSeconds`. Marathon reads the virtual clock, so its
//! deployments, backoffs and waits pass in virtual time too.
//!
//! What comes out ([`Report`]): where every task went and the decision
//! record that put it there, what waits and why, utilisation and
//! fragmentation — so an operator can try a placement plugin or a policy
//! change on a copy of production before installing it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wasmos_core::{
    AgentId, AgentInfo, FrameworkId, FrameworkInfo, PluginManifest, PortRange, PortSet, Resources,
    Scalar, Source, TaskId, TaskSpec, TaskState, TaskStatus,
};
use wasmos_runtime::framework::{
    Clock, DriverAction, Effects, FrameworkInstance, HttpRequest, KvOp, KvSource,
};
use wasmos_runtime::placement::{Decision, PlacementAgent, PlacementService};
use wasmos_runtime::{PluginRuntime, RuntimeConfig};
use wasmos_state::usage::UsageMemo;
use wasmos_state::{Command, Response, State};

use crate::allocator::{Allocator, Inputs, OfferOp};
use crate::launch::refuse_duration;

/// Agents alike, `count` of them: `{i}` in the hostname and in attribute
/// values is the agent's number in the group (from 0).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentGroup {
    #[serde(default = "one")]
    pub count: u32,
    pub hostname: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    pub cpus: f64,
    pub mem: f64,
    #[serde(default)]
    pub disk: f64,
    /// Port ranges, `[first, last]` (an agent's default: 31000–32000).
    #[serde(default = "default_ports")]
    pub ports: Vec<[u16; 2]>,
}

fn one() -> u32 {
    1
}

/// The longest span a simulation takes, in virtual seconds (a year).
const MAX_SECS: f64 = 366.0 * 86_400.0;

fn default_ports() -> Vec<[u16; 2]> {
    vec![[31000, 32000]]
}

/// One Marathon app arriving at `at` seconds; its tasks end by themselves
/// after `runSeconds` (absent: they run until the simulation ends).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Arrival {
    #[serde(default)]
    pub at: f64,
    #[serde(default)]
    pub run_seconds: Option<f64>,
    /// A Marathon app definition, as `POST /v2/apps` takes it.
    pub app: Value,
}

/// What arrives, and when.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub apps: Vec<Arrival>,
}

/// A placement plugin to try: its manifest and component.
#[derive(Debug, Clone)]
pub struct PluginFile {
    pub manifest: PluginManifest,
    pub component: Vec<u8>,
}

/// How the simulation runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Virtual seconds to simulate.
    pub duration_secs: f64,
    /// Virtual seconds between allocation cycles (and Marathon's ticks).
    pub cycle_secs: f64,
    /// Virtual seconds from a launch to TASK_RUNNING.
    pub start_secs: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            duration_secs: 300.0,
            cycle_secs: 1.0,
            start_secs: 1.0,
        }
    }
}

/// Where one task went.
#[derive(Debug, Clone, Serialize)]
pub struct Placed {
    pub task_id: String,
    pub app: String,
    pub agent_id: String,
    pub hostname: String,
    /// Virtual seconds from the start.
    pub at: f64,
}

/// One app at the end.
#[derive(Debug, Clone, Serialize)]
pub struct AppReport {
    pub id: String,
    pub instances: u64,
    pub running: u64,
    /// Tasks that ran to their end (`runSeconds`).
    pub finished: u64,
    /// Distinct agents its live tasks are on.
    pub hosts: usize,
    /// Why instances wait, if any do: the framework's last refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

/// Used against total.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Utilisation {
    pub cpus_total: f64,
    pub mem_total: f64,
    pub cpus_used: f64,
    pub mem_used: f64,
    pub peak_cpus_used: f64,
    pub peak_mem_used: f64,
}

/// Free resources no instance of the workload fits in: on an agent whose
/// free cpus or mem are below every app's instance.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Fragmentation {
    pub free_cpus: f64,
    pub free_mem: f64,
    pub stranded_cpus: f64,
    pub stranded_mem: f64,
    /// Agents with some free and some used.
    pub partly_used_agents: usize,
}

/// What a simulation found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub virtual_seconds: f64,
    pub wall_seconds: f64,
    pub agents: usize,
    pub plugins: Vec<String>,
    pub apps: Vec<AppReport>,
    pub utilisation: Utilisation,
    pub fragmentation: Fragmentation,
    pub placements: Vec<Placed>,
    /// Every placement's decision record, and each waiting app's last
    /// refusal.
    pub decisions: Vec<Decision>,
    /// Apps the framework refused, with its answer.
    pub refused_apps: Vec<String>,
    /// Calls into Marathon that failed (trapped, ran past the call
    /// deadline, ran out of memory), the first of each kind with when:
    /// on a cluster, the plugin would be restarted just the same.
    pub plugin_failures: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Submit(usize),
    Cycle,
    Status(TaskId, AgentId, TaskStateKey),
}

/// [`TaskState`] as an orderable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TaskStateKey {
    Running,
    Finished,
    Killed,
}

impl TaskStateKey {
    fn state(self) -> TaskState {
        match self {
            TaskStateKey::Running => TaskState::Running,
            TaskStateKey::Finished => TaskState::Finished,
            TaskStateKey::Killed => TaskState::Killed,
        }
    }
}

/// The framework's key-value namespace, in memory.
#[derive(Default)]
struct MemKv(Mutex<BTreeMap<String, Vec<u8>>>);

impl KvSource for MemKv {
    fn get(&self, _: &FrameworkId, key: &str) -> Option<Vec<u8>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn keys(&self, _: &FrameworkId, prefix: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

impl MemKv {
    fn apply(&self, op: KvOp) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match op {
            KvOp::Set { key, value } => {
                m.insert(key, value);
            }
            KvOp::Delete { key } => {
                m.remove(&key);
            }
        }
    }
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{0}")]
    Input(String),
    #[error("plugin {name}: {message}")]
    Plugin { name: String, message: String },
}

struct Sim {
    state: State,
    memo: UsageMemo,
    alloc: Allocator,
    marathon: FrameworkInstance,
    kv: Arc<MemKv>,
    fw: FrameworkId,
    /// Virtual milliseconds since the Unix epoch.
    clock: Arc<AtomicU64>,
    start_ms: u64,
    base: Instant,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    opts: Options,
    arrivals: Vec<Arrival>,
    /// App id (without its leading `/`) → its tasks' lifetime.
    run_for: HashMap<String, f64>,
    placements: Vec<Placed>,
    decisions: BTreeMap<String, Decision>,
    refusals: BTreeMap<String, Decision>,
    finished: HashMap<String, u64>,
    refused_apps: Vec<String>,
    /// Failed calls by kind: when first, how often, the first message.
    failures: BTreeMap<String, (f64, u64, String)>,
    peak: (f64, f64),
}

/// Runs a simulation of `marathon` (the framework plugin) placing through
/// `placement` (the bundled `constraints` and those to try); `progress`
/// hears a line now and then.
pub fn run(
    agents: &[AgentGroup],
    workload: Workload,
    marathon: &PluginFile,
    placement_plugins: Vec<PluginFile>,
    opts: Options,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, SimError> {
    let span = |x: f64| x.is_finite() && (0.0..=MAX_SECS).contains(&x);
    if !(span(opts.duration_secs) && opts.duration_secs > 0.0) {
        return Err(SimError::Input(format!(
            "duration must be more than 0 and at most {MAX_SECS} seconds, not {}",
            opts.duration_secs
        )));
    }
    if !(span(opts.cycle_secs) && opts.cycle_secs >= 0.001 && span(opts.start_secs)) {
        return Err(SimError::Input(format!(
            "cycle must be at least 0.001 seconds (it is {}) and the start-up time not negative",
            opts.cycle_secs
        )));
    }
    for (i, a) in workload.apps.iter().enumerate() {
        if !span(a.at) {
            return Err(SimError::Input(format!(
                "apps[{i}].at must be seconds from the start (0 to {MAX_SECS}), not {}",
                a.at
            )));
        }
        if let Some(r) = a.run_seconds.filter(|r| !span(*r)) {
            return Err(SimError::Input(format!(
                "apps[{i}].runSeconds must be 0 to {MAX_SECS} seconds, not {r}"
            )));
        }
    }
    let wall = Instant::now();
    let runtime = PluginRuntime::new(RuntimeConfig::default()).map_err(SimError::Input)?;
    let placement = PlacementService::new(&runtime);
    let mut tried: Vec<String> = Vec::new();
    for p in placement_plugins {
        if p.manifest.kind != wasmos_core::PluginKind::Placement {
            return Err(SimError::Plugin {
                name: p.manifest.name.clone(),
                message: format!(
                    "is a {} plugin; only placement plugins can be tried here",
                    p.manifest.kind
                ),
            });
        }
        progress(&format!("compiling placement plugin {}", p.manifest.name));
        let plugin_err = |message: String| SimError::Plugin {
            name: p.manifest.name.clone(),
            message,
        };
        let component = runtime
            .compile(&p.component)
            .map_err(|e| plugin_err(e.to_string()))?;
        placement
            .install(
                &p.manifest.name,
                &p.manifest.name,
                &component,
                p.manifest.operators.clone(),
                p.manifest.config.clone(),
            )
            .map_err(|e| plugin_err(e.to_string()))?;
        tried.push(p.manifest.name.clone());
    }

    let mut state = State::default();
    let now_s = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let mut n = 0usize;
    for g in agents {
        for i in 0..g.count {
            let fill = |s: &str| s.replace("{i}", &i.to_string());
            let scalar = |name: &'static str, x: f64| {
                Scalar::from_f64(name, x)
                    .map_err(|e| SimError::Input(format!("agents {}: {e}", g.hostname)))
            };
            let resources = Resources {
                cpus: scalar("cpus", g.cpus)?,
                mem: scalar("mem", g.mem)?,
                disk: scalar("disk", g.disk)?,
                gpus: 0,
                ports: PortSet::from_ranges(g.ports.iter().map(|[begin, end]| PortRange {
                    begin: *begin,
                    end: *end,
                }))
                .map_err(|e| SimError::Input(format!("agents {}: ports: {e}", g.hostname)))?,
            };
            let info = AgentInfo {
                hostname: fill(&g.hostname),
                endpoint: format!("sim://{n}"),
                resources,
                reserved: Default::default(),
                attributes: g
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), fill(v)))
                    .collect(),
                boot_id: String::new(),
                version: String::new(),
            };
            let id =
                AgentId::new(format!("sim-S{n}")).map_err(|e| SimError::Input(e.to_string()))?;
            match state.apply(Command::RegisterAgent {
                agent_id: Some(id),
                info,
                principal: None,
                now: now_s,
            }) {
                Response::AgentRegistered { .. } => {}
                other => return Err(SimError::Input(format!("agent {n}: {other:?}"))),
            }
            n += 1;
        }
    }
    if n == 0 {
        return Err(SimError::Input("no agents: give at least one".into()));
    }
    placement.set_agents(
        state
            .agents
            .values()
            .map(|a| PlacementAgent {
                id: a.id.to_string(),
                hostname: a.info.hostname.clone(),
                attributes: a.info.attributes.clone(),
                resources: a.info.resources.clone(),
            })
            .collect(),
    );
    let fw = FrameworkId::new("marathon").map_err(|e| SimError::Input(e.to_string()))?;
    state.apply(Command::RegisterFramework {
        framework_id: fw.clone(),
        info: FrameworkInfo::plugin("marathon", "*"),
        now: now_s,
    });
    progress("compiling the marathon framework plugin");
    let component = runtime
        .compile(&marathon.component)
        .map_err(|e| SimError::Plugin {
            name: "marathon".into(),
            message: e.to_string(),
        })?;
    let start_ms = (now_s * 1000.0) as u64;
    let clock = Arc::new(AtomicU64::new(start_ms));
    let reads = clock.clone();
    let kv = Arc::new(MemKv::default());
    let marathon = FrameworkInstance::new(
        &runtime,
        "marathon",
        fw.clone(),
        &component,
        marathon.manifest.config.clone(),
        kv.clone(),
        placement,
    )
    .map_err(|e| SimError::Plugin {
        name: "marathon".into(),
        message: e.to_string(),
    })?
    .with_clock(Arc::new(move || reads.load(Ordering::Relaxed)) as Clock);
    let run_for = workload
        .apps
        .iter()
        .filter_map(|a| {
            let id = a.app.get("id")?.as_str()?.trim_matches('/').to_string();
            Some((id, a.run_seconds?))
        })
        .collect();
    let mut sim = Sim {
        state,
        memo: UsageMemo::default(),
        alloc: Allocator::new(1),
        marathon,
        kv,
        fw,
        clock,
        start_ms,
        base: Instant::now(),
        events: BinaryHeap::new(),
        seq: 0,
        opts,
        arrivals: workload.apps,
        run_for,
        placements: Vec::new(),
        decisions: BTreeMap::new(),
        refusals: BTreeMap::new(),
        finished: HashMap::new(),
        refused_apps: Vec::new(),
        failures: BTreeMap::new(),
        peak: (0.0, 0.0),
    };
    for i in 0..sim.arrivals.len() {
        let at = sim.arrivals[i].at;
        sim.at(at, Event::Submit(i));
    }
    sim.at(0.0, Event::Cycle);
    let end_ms = sim.ms(sim.opts.duration_secs);
    let mut next_note = 60.0;
    while let Some(Reverse((t, _, ev))) = sim.events.pop() {
        if t > end_ms {
            break;
        }
        sim.clock.store(t, Ordering::Relaxed);
        let secs = (t - sim.start_ms) as f64 / 1000.0;
        if secs >= next_note {
            let running = sim.live_tasks();
            progress(&format!(
                "t={secs:.0}s: {running} tasks running, {} apps waiting",
                sim.refusals.len()
            ));
            next_note += 60.0;
        }
        match ev {
            Event::Submit(i) => sim.submit(i),
            Event::Cycle => {
                sim.cycle();
                let next = secs + sim.opts.cycle_secs;
                sim.at(next, Event::Cycle);
            }
            Event::Status(task, agent, state) => sim.deliver(&task, &agent, state.state()),
        }
    }
    sim.clock.store(end_ms, Ordering::Relaxed);
    Ok(sim.report(wall.elapsed().as_secs_f64(), tried))
}

impl Sim {
    fn ms(&self, secs: f64) -> u64 {
        // Inputs are checked to at most a year; saturate all the same.
        self.start_ms
            .saturating_add((secs.clamp(0.0, 2.0 * MAX_SECS) * 1000.0).round() as u64)
    }

    fn now_ms(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    fn now_secs(&self) -> f64 {
        self.now_ms() as f64 / 1000.0
    }

    /// The allocator's clock: virtual time as an [`Instant`].
    fn instant(&self) -> Instant {
        self.base + Duration::from_millis(self.now_ms() - self.start_ms)
    }

    fn at(&mut self, secs: f64, ev: Event) {
        self.seq += 1;
        let t = self.ms(secs);
        self.events.push(Reverse((t, self.seq, ev)));
    }

    fn after(&mut self, secs: f64, ev: Event) {
        let from = (self.now_ms() - self.start_ms) as f64 / 1000.0;
        self.at(from + secs, ev);
    }

    /// Notes a failed call into Marathon.
    fn failed(&mut self, call: &str, e: &wasmos_runtime::CallError) {
        let at = (self.now_ms() - self.start_ms) as f64 / 1000.0;
        let kind = format!("{call}: {e}");
        // Messages that differ only in numbers are one kind.
        let key: String = kind.chars().filter(|c| !c.is_ascii_digit()).collect();
        self.failures.entry(key).or_insert((at, 0, kind)).1 += 1;
    }

    fn live_tasks(&self) -> usize {
        self.state
            .tasks
            .values()
            .filter(|t| t.status().state == TaskState::Running)
            .count()
    }

    fn submit(&mut self, i: usize) {
        let app = self.arrivals[i].app.clone();
        let req = HttpRequest {
            method: "POST".into(),
            path: "/v2/apps".into(),
            query: String::new(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(&app).unwrap_or_default(),
        };
        match self.marathon.http(req) {
            Ok((resp, effects)) => {
                if resp.status >= 300 {
                    self.refused_apps.push(format!(
                        "apps[{i}] ({}): {} {}",
                        app.get("id").and_then(Value::as_str).unwrap_or("?"),
                        resp.status,
                        String::from_utf8_lossy(&resp.body)
                    ));
                }
                self.apply(effects);
            }
            Err(e) => {
                self.failed("POST /v2/apps", &e);
                self.refused_apps.push(format!("apps[{i}]: {e}"));
            }
        }
    }

    /// One allocation cycle, the offers to Marathon, and its tick.
    fn cycle(&mut self) {
        let now = self.instant();
        let usage = self.state.usage(&mut self.memo);
        let inputs = Inputs {
            frameworks: vec![self.fw.clone()],
            ..Inputs::from_state(&self.state, usage, |_| true)
        };
        let live: HashSet<AgentId> = inputs.agents.iter().map(|a| a.id.clone()).collect();
        let ready: HashSet<FrameworkId> = [self.fw.clone()].into_iter().collect();
        // Offers Marathon kept too long come back (as the master's
        // offer timeout does).
        self.alloc
            .rescind(now, Duration::from_secs(60), &live, &ready);
        let offers = self.alloc.allocate(&inputs, now);
        if !offers.is_empty() {
            match self.marathon.offers(&offers) {
                Ok(e) => self.apply(e),
                Err(e) => {
                    self.failed(&format!("offers ({} of them)", offers.len()), &e);
                    let ids: Vec<_> = offers.iter().map(|o| o.id.clone()).collect();
                    self.alloc
                        .decline(&self.fw, &ids, Some(Duration::ZERO), now);
                }
            }
        }
        match self.marathon.tick(self.now_ms()) {
            Ok(e) => self.apply(e),
            Err(e) => self.failed("tick", &e),
        }
        let usage = self.state.usage(&mut self.memo);
        let used = usage.by_framework.values().fold((0.0, 0.0), |(c, m), r| {
            (c + r.cpus.as_f64(), m + r.mem.as_f64())
        });
        self.peak = (self.peak.0.max(used.0), self.peak.1.max(used.1));
    }

    fn apply(&mut self, e: Effects) {
        for op in e.kv {
            self.kv.apply(op);
        }
        if e.explained {
            self.refusals.clear();
        }
        for d in e.decisions {
            match (&d.task_id, &d.chosen) {
                (Some(t), Some(_)) => {
                    self.refusals.remove(&d.group);
                    self.decisions.insert(t.clone(), d);
                }
                _ => {
                    self.refusals.insert(d.group.clone(), d);
                }
            }
        }
        let now = self.instant();
        for a in e.actions {
            match a {
                DriverAction::Launch {
                    offer_ids,
                    tasks,
                    refuse_seconds,
                } => self.launch(&offer_ids, tasks, refuse_seconds),
                DriverAction::Decline {
                    offer_ids,
                    refuse_seconds,
                } => self
                    .alloc
                    .decline(&self.fw, &offer_ids, refuse_duration(refuse_seconds), now),
                DriverAction::Kill { task_id } => {
                    let agent = self.state.tasks.get(&task_id).map(|t| t.agent_id.clone());
                    if let Some(agent) = agent {
                        self.after(0.1, Event::Status(task_id, agent, TaskStateKey::Killed));
                    }
                }
                DriverAction::Revive => self.alloc.revive(&self.fw),
                DriverAction::Suppress => {
                    self.alloc.suppress(&self.fw);
                    self.refusals.clear();
                }
                // Persistent volumes are not simulated.
                DriverAction::DestroyVolumes { .. } => {}
            }
        }
    }

    fn launch(
        &mut self,
        offer_ids: &[wasmos_core::OfferId],
        tasks: Vec<TaskSpec>,
        refuse_seconds: Option<f64>,
    ) {
        let now = self.instant();
        let ids: Vec<TaskId> = tasks.iter().map(|t| t.task_id.clone()).collect();
        let state = &self.state;
        let accepted = self.alloc.accept(
            &self.fw,
            "*",
            offer_ids,
            vec![OfferOp::LaunchReservedFirst(tasks)],
            refuse_duration(refuse_seconds),
            now,
            |id| state.tasks.contains_key(id),
            &BTreeMap::new(),
        );
        let acc = match accepted {
            Ok(acc) => acc,
            Err(e) => {
                for t in ids {
                    self.tell(&t, None, TaskState::Dropped, &e.to_string());
                }
                return;
            }
        };
        for (t, why) in &acc.refused {
            self.tell(t, Some(&acc.agent_id), TaskState::Error, why);
        }
        let mut launched = Vec::new();
        for op in acc.ops {
            let (OfferOp::Launch(tasks) | OfferOp::LaunchReservedFirst(tasks)) = op else {
                continue;
            };
            let resp = self.state.apply(Command::LaunchTasks {
                framework_id: self.fw.clone(),
                agent_id: acc.agent_id.clone(),
                staging_uuids: tasks.iter().map(|_| uuid::Uuid::new_v4()).collect(),
                tasks: tasks.clone(),
                now: self.now_secs(),
            });
            let accepted = match resp {
                Response::TasksLaunched { accepted, rejected } => {
                    for (t, why) in rejected {
                        self.tell(&t, Some(&acc.agent_id), TaskState::Error, &why);
                    }
                    accepted
                }
                Response::Rejected { reason } => {
                    for t in &tasks {
                        self.tell(&t.task_id, None, TaskState::Dropped, &reason);
                    }
                    continue;
                }
                _ => continue,
            };
            let hostname = self
                .state
                .agents
                .get(&acc.agent_id)
                .map(|a| a.info.hostname.clone())
                .unwrap_or_default();
            for t in tasks.iter().filter(|t| accepted.contains(&t.task_id)) {
                self.placements.push(Placed {
                    task_id: t.task_id.to_string(),
                    app: format!("/{}", t.name),
                    agent_id: acc.agent_id.to_string(),
                    hostname: hostname.clone(),
                    at: (self.now_ms() - self.start_ms) as f64 / 1000.0,
                });
                let start = self.opts.start_secs;
                self.after(
                    start,
                    Event::Status(
                        t.task_id.clone(),
                        acc.agent_id.clone(),
                        TaskStateKey::Running,
                    ),
                );
                if let Some(run) = self.run_for.get(&t.name).copied() {
                    self.after(
                        start + run,
                        Event::Status(
                            t.task_id.clone(),
                            acc.agent_id.clone(),
                            TaskStateKey::Finished,
                        ),
                    );
                }
                launched.push(t.task_id.clone());
            }
        }
        self.alloc.release(acc.hold, &launched);
    }

    /// The master's update for a task it refused (never in the state), to
    /// Marathon only.
    fn tell(&mut self, task: &TaskId, agent: Option<&AgentId>, state: TaskState, why: &str) {
        let status = crate::leader::master_status(
            task,
            agent,
            state,
            wasmos_core::Reason::ReasonTaskInvalid,
            why.to_string(),
            self.now_secs(),
        );
        match self.marathon.status(&status) {
            Ok(e) => self.apply(e),
            Err(e) => self.failed("status", &e),
        }
    }

    /// An agent's update, through the state to Marathon.
    fn deliver(&mut self, task: &TaskId, agent: &AgentId, state: TaskState) {
        let live = self
            .state
            .tasks
            .get(task)
            .is_some_and(|t| !t.status().state.is_terminal());
        if !live {
            return;
        }
        if state == TaskState::Finished {
            let app = self
                .state
                .tasks
                .get(task)
                .map(|t| format!("/{}", t.spec.name))
                .unwrap_or_default();
            *self.finished.entry(app).or_default() += 1;
        }
        let status = TaskStatus {
            task_id: task.clone(),
            state,
            agent_id: Some(agent.clone()),
            source: Source::Agent,
            reason: None,
            message: None,
            exit_code: (state == TaskState::Finished).then_some(0),
            signal: None,
            healthy: None,
            ready: None,
            timestamp: self.now_secs(),
            uuid: uuid::Uuid::new_v4(),
            data: None,
            executor_id: None,
        };
        self.state.apply(Command::StatusUpdate {
            status: status.clone(),
        });
        match self.marathon.status(&status) {
            Ok(e) => self.apply(e),
            Err(e) => self.failed("status", &e),
        }
        self.state.apply(Command::AcknowledgeStatus {
            task_id: status.task_id.clone(),
            uuid: status.uuid,
        });
    }

    fn report(mut self, wall_seconds: f64, plugins: Vec<String>) -> Report {
        let usage = self.state.usage(&mut self.memo);
        let mut u = Utilisation {
            peak_cpus_used: self.peak.0,
            peak_mem_used: self.peak.1,
            ..Utilisation::default()
        };
        for r in usage.by_framework.values() {
            u.cpus_used += r.cpus.as_f64();
            u.mem_used += r.mem.as_f64();
        }
        // The smallest instance of the workload, by cpus then mem.
        let shapes: Vec<(f64, f64)> = self
            .arrivals
            .iter()
            .map(|a| {
                let num = |k: &str, d: f64| a.app.get(k).and_then(Value::as_f64).unwrap_or(d);
                (num("cpus", 1.0), num("mem", 128.0))
            })
            .collect();
        let mut f = Fragmentation::default();
        for a in self.state.agents.values() {
            let total = &a.info.resources;
            u.cpus_total += total.cpus.as_f64();
            u.mem_total += total.mem.as_f64();
            let used = usage.by_agent.get(&a.id).cloned().unwrap_or_default();
            let free = (
                total.cpus.as_f64() - used.cpus.as_f64(),
                total.mem.as_f64() - used.mem.as_f64(),
            );
            f.free_cpus += free.0;
            f.free_mem += free.1;
            if used.cpus.as_f64() > 0.0 && free.0 > 1e-9 {
                f.partly_used_agents += 1;
            }
            let fits_any = shapes
                .iter()
                .any(|(c, m)| *c <= free.0 + 1e-9 && *m <= free.1 + 1e-9);
            if !fits_any {
                f.stranded_cpus += free.0;
                f.stranded_mem += free.1;
            }
        }
        // The apps as Marathon's own API gives them.
        let apps = self
            .marathon
            .http(HttpRequest {
                method: "GET".into(),
                path: "/v2/apps".into(),
                query: String::new(),
                headers: vec![("accept".into(), "application/json".into())],
                body: Vec::new(),
            })
            .ok()
            .and_then(|(r, _)| serde_json::from_slice::<Value>(&r.body).ok())
            .unwrap_or_default();
        // Where each app's live tasks are (Marathon names a task after its
        // app, without the leading `/`).
        let mut hosts_of: HashMap<String, BTreeSet<&AgentId>> = HashMap::new();
        for t in self.state.tasks.values() {
            if !t.status().state.is_terminal() {
                hosts_of
                    .entry(format!("/{}", t.spec.name))
                    .or_default()
                    .insert(&t.agent_id);
            }
        }
        let apps = apps["apps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let id = a["id"].as_str().unwrap_or_default().to_string();
                let hosts = hosts_of.get(&id).map_or(0, BTreeSet::len);
                AppReport {
                    instances: a["instances"].as_u64().unwrap_or(0),
                    running: a["tasksRunning"].as_u64().unwrap_or(0),
                    finished: self.finished.get(&id).copied().unwrap_or(0),
                    hosts,
                    waiting: self.refusals.get(&id).map(|d| d.summary.clone()),
                    id,
                }
            })
            .collect();
        let mut decisions: Vec<Decision> =
            std::mem::take(&mut self.decisions).into_values().collect();
        decisions.extend(std::mem::take(&mut self.refusals).into_values());
        Report {
            virtual_seconds: (self.now_ms() - self.start_ms) as f64 / 1000.0,
            wall_seconds,
            agents: self.state.agents.len(),
            plugins,
            apps,
            utilisation: u,
            fragmentation: f,
            placements: self.placements,
            decisions,
            refused_apps: self.refused_apps,
            plugin_failures: self
                .failures
                .into_values()
                .map(|(at, n, first)| format!("{first} (first at {at:.0} s; {n} times)"))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bundled(name: &str) -> PluginFile {
        let p = wasmos_bundled::all()
            .into_iter()
            .find(|p| p.manifest.name == name)
            .unwrap();
        PluginFile {
            manifest: p.manifest,
            component: p.component.to_vec(),
        }
    }

    fn agents() -> Vec<AgentGroup> {
        vec![
            AgentGroup {
                count: 2,
                hostname: "r1-h{i}".into(),
                attributes: [("rack".to_string(), "r1".to_string())].into(),
                cpus: 2.0,
                mem: 1024.0,
                disk: 0.0,
                ports: default_ports(),
            },
            AgentGroup {
                count: 1,
                hostname: "r2-h{i}".into(),
                attributes: [("rack".to_string(), "r2".to_string())].into(),
                cpus: 2.0,
                mem: 1024.0,
                disk: 0.0,
                ports: default_ports(),
            },
        ]
    }

    /// The real Marathon, allocator and constraints plugin in virtual
    /// time: a UNIQUE app spreads and its extra instance waits with the
    /// reason; a batch app's tasks end after their runSeconds; two virtual
    /// minutes pass.
    #[test]
    fn a_simulated_cluster_places_with_the_real_plugins_and_explains_what_waits() {
        let workload: Workload = serde_json::from_value(json!({"apps": [
            {"at": 0, "app": {"id": "/web", "cmd": "serve", "cpus": 0.5, "mem": 64, "instances": 4,
                              "constraints": [["hostname", "UNIQUE"]]}},
            {"at": 10, "runSeconds": 30, "app": {"id": "/batch", "cmd": "crunch", "cpus": 1, "mem": 128,
                                                  "instances": 2, "constraints": [["rack", "LIKE", "r1"]]}}
        ]}))
        .unwrap();
        let opts = Options {
            duration_secs: 120.0,
            ..Options::default()
        };
        let mut lines = Vec::new();
        let r = run(
            &agents(),
            workload,
            &bundled("marathon"),
            vec![bundled("constraints")],
            opts,
            &mut |l| lines.push(l.to_string()),
        )
        .unwrap();
        assert!(r.refused_apps.is_empty(), "{:?}", r.refused_apps);
        assert_eq!(r.virtual_seconds, 120.0);
        let web = r.apps.iter().find(|a| a.id == "/web").unwrap();
        assert_eq!(
            (web.instances, web.running, web.hosts),
            (4, 3, 3),
            "{web:?}"
        );
        let why = web.waiting.as_deref().unwrap_or_default();
        assert!(why.contains("[hostname, UNIQUE] not met"), "{why}");
        // The batch app ran on r1 only, and its tasks ended (Marathon
        // relaunches finished instances of an app: at least the first two).
        let batch: Vec<&Placed> = r.placements.iter().filter(|p| p.app == "/batch").collect();
        assert!(batch.len() >= 2, "{:?}", r.placements);
        assert!(
            batch.iter().all(|p| p.hostname.starts_with("r1-")),
            "{batch:?}"
        );
        let b = r.apps.iter().find(|a| a.id == "/batch").unwrap();
        assert!(b.finished >= 2, "{b:?}");
        // Every placement has its decision record.
        for p in &r.placements {
            let d = r
                .decisions
                .iter()
                .find(|d| d.task_id.as_deref() == Some(p.task_id.as_str()))
                .unwrap_or_else(|| panic!("no decision for {}", p.task_id));
            assert_eq!(d.chosen.as_deref(), Some(p.agent_id.as_str()));
        }
        assert!(r.utilisation.cpus_used >= 1.5, "{:?}", r.utilisation);
        assert_eq!(r.utilisation.cpus_total, 6.0);
        assert!(r.utilisation.peak_cpus_used >= r.utilisation.cpus_used);
        assert!(
            lines.iter().any(|l| l.starts_with("t=60s")),
            "progress: {lines:?}"
        );
    }

    #[test]
    fn bad_input_is_refused_with_what_is_wrong() {
        let workload = Workload { apps: Vec::new() };
        let marathon = bundled("marathon");
        let err = run(
            &[],
            workload.clone(),
            &marathon,
            Vec::new(),
            Options::default(),
            &mut |_| {},
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("no agents"), "{err}");
        let err = run(
            &agents(),
            workload,
            &marathon,
            Vec::new(),
            Options {
                duration_secs: 0.0,
                ..Options::default()
            },
            &mut |_| {},
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("duration"), "{err}");
    }
}
