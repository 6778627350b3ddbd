//! `exec`: a framework that runs ad-hoc command tasks, as mesos-execute did.
//!
//! Its API, mounted at `/frameworks/exec/`:
//! - `POST /tasks` `{"cmd": "echo hi"}` or `{"argv": ["sleep", "60"]}`, with
//!   optional `id`, `name`, `cpus`, `mem`, `disk`, `gpus`, `ports`, `env`,
//!   `labels`, `user`, `kill_grace_period_ms`, `health_check`, and
//!   `container` (Mesos' ContainerInfo: `{"type": "DOCKER", "docker":
//!   {"image": "busybox"}}`; a Docker task may omit cmd and argv to run the
//!   image's entrypoint) → 201 and the task.
//! - `GET /tasks[?state=queued|active|finished]`, `GET /tasks/<id>`.
//! - `DELETE /tasks/<id>` (or `POST /tasks/<id>/kill`): unqueue or kill.
//!
//! Every task is a record `task/<id>` in the framework's replicated
//! key-value store, written in the same commit as the launch it causes, so
//! a submission acknowledged with 201 survives a master restart, and a
//! launch is never made twice. In memory it keeps only a cache of those
//! records, rebuilt in `init`.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use wasmos_sdk::framework::{
    Command, Container, DockerInfo, DockerNetwork, Framework, HealthCheck, KeyValue, Offer,
    OfferInterest, PortMapping, PortRange, Request, Resources, Response, Rule, TaskSpec,
    TaskStatus, driver, is_terminal, placement_service, state_name,
};
use wasmos_sdk::offers::{Need, Packer, Placement};
use wasmos_sdk::{kv, log};

const QUEUED: &str = "QUEUED";
const TASK_PREFIX: &str = "task/";
const SEQ_KEY: &str = "seq";
/// Offers declined with nothing to run.
const REFUSE_IDLE: f64 = 30.0;

/// A submission to `POST /tasks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Submit {
    id: Option<String>,
    name: Option<String>,
    /// A shell command, run with `/bin/sh -c`.
    cmd: Option<String>,
    /// A program and its arguments, executed directly.
    argv: Option<Vec<String>>,
    cpus: Option<f64>,
    mem: Option<f64>,
    #[serde(default)]
    disk: f64,
    #[serde(default)]
    gpus: u32,
    /// How many host ports the task needs (exposed as PORT0..n).
    #[serde(default)]
    ports: u32,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    user: Option<String>,
    kill_grace_period_ms: Option<u64>,
    /// Placement rules, Marathon style: `[["hostname", "UNIQUE"]]`.
    #[serde(default)]
    constraints: Vec<Vec<serde_json::Value>>,
    /// The group constraints count tasks of (default: the task alone).
    group: Option<String>,
    health_check: Option<HealthCheckDef>,
    container: Option<ContainerDef>,
}

/// A container to run the task in, as Mesos writes ContainerInfo.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "UPPERCASE")]
enum ContainerDef {
    Docker { docker: DockerDef },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct DockerDef {
    image: String,
    /// `HOST` (default), `BRIDGE` or `NONE`.
    #[serde(default = "d_network")]
    network: String,
    /// The n-th mapping publishes its container port on the task's n-th
    /// host port (`BRIDGE` only).
    #[serde(default)]
    port_mappings: Vec<PortMappingDef>,
    #[serde(default)]
    force_pull_image: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct PortMappingDef {
    container_port: u16,
    #[serde(default = "d_protocol")]
    protocol: String,
}

fn d_network() -> String {
    "HOST".into()
}
fn d_protocol() -> String {
    "tcp".into()
}

impl ContainerDef {
    fn docker(&self) -> &DockerDef {
        match self {
            ContainerDef::Docker { docker } => docker,
        }
    }

    /// Checks what the submitter can fix; the master checks again.
    fn check(&self, ports: u32) -> Result<(), String> {
        let d = self.docker();
        if d.image.trim().is_empty() || d.image.contains(char::is_whitespace) {
            return Err(format!(
                "container.docker.image {:?} is not an image reference",
                d.image
            ));
        }
        if !matches!(d.network.as_str(), "HOST" | "BRIDGE" | "NONE") {
            return Err(format!(
                "container.docker.network must be HOST, BRIDGE or NONE, not {:?}",
                d.network
            ));
        }
        if !d.port_mappings.is_empty() && d.network != "BRIDGE" {
            return Err("container.docker.port_mappings need network BRIDGE".into());
        }
        if d.port_mappings.len() > ports as usize {
            return Err(format!(
                "container.docker.port_mappings has {} entries but the task asks for {ports} ports; set ports",
                d.port_mappings.len()
            ));
        }
        Ok(())
    }

    fn to_wit(&self) -> Container {
        let d = self.docker();
        Container::Docker(DockerInfo {
            image: d.image.clone(),
            network: match d.network.as_str() {
                "BRIDGE" => DockerNetwork::Bridge,
                "NONE" => DockerNetwork::None,
                _ => DockerNetwork::Host,
            },
            port_mappings: d
                .port_mappings
                .iter()
                .map(|m| PortMapping {
                    container_port: m.container_port,
                    protocol: m.protocol.clone(),
                })
                .collect(),
            force_pull_image: d.force_pull_image,
        })
    }
}

/// A health check, as submitted (defaults are Mesos').
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct HealthCheckDef {
    /// The health-check plugin, e.g. `health-http` or `health-tcp`.
    plugin: String,
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default = "d_delay")]
    delay_seconds: f64,
    #[serde(default = "d_interval")]
    interval_seconds: f64,
    #[serde(default = "d_timeout")]
    timeout_seconds: f64,
    #[serde(default = "d_grace")]
    grace_period_seconds: f64,
    #[serde(default = "d_failures")]
    max_consecutive_failures: u32,
}

fn d_delay() -> f64 {
    15.0
}
fn d_interval() -> f64 {
    10.0
}
fn d_timeout() -> f64 {
    20.0
}
fn d_grace() -> f64 {
    10.0
}
fn d_failures() -> u32 {
    3
}

impl HealthCheckDef {
    fn to_wit(&self) -> HealthCheck {
        HealthCheck {
            plugin: self.plugin.clone(),
            config: pairs(&self.config),
            delay_seconds: self.delay_seconds,
            interval_seconds: self.interval_seconds,
            timeout_seconds: self.timeout_seconds,
            grace_period_seconds: self.grace_period_seconds,
            max_consecutive_failures: self.max_consecutive_failures,
        }
    }
}

/// A task as this framework records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct ExecTask {
    id: String,
    name: String,
    seq: u64,
    shell: bool,
    command: String,
    arguments: Vec<String>,
    env: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    user: Option<String>,
    cpus: f64,
    mem: f64,
    disk: f64,
    #[serde(default)]
    gpus: u32,
    ports: u32,
    kill_grace_period_ms: Option<u64>,
    #[serde(default)]
    container: Option<ContainerDef>,
    /// `QUEUED` until launched, then the Mesos state name.
    state: String,
    agent_id: Option<String>,
    hostname: Option<String>,
    message: Option<String>,
    reason: Option<String>,
    exit_code: Option<i32>,
    submitted_at_ms: u64,
    updated_at_ms: u64,
    kill_requested: bool,
    #[serde(default)]
    constraints: Vec<Vec<String>>,
    #[serde(default)]
    group: String,
    #[serde(default)]
    health_check: Option<HealthCheckDef>,
    #[serde(default)]
    healthy: Option<bool>,
    /// Why a queued task is not placed yet.
    #[serde(default)]
    waiting_for: Option<String>,
}

impl ExecTask {
    fn is_queued(&self) -> bool {
        self.state == QUEUED
    }

    fn is_finished(&self) -> bool {
        !self.is_queued() && wasmos_sdk::framework::is_terminal_name(&self.state)
    }

    fn spec(&self, ports: Vec<PortRange>) -> TaskSpec {
        TaskSpec {
            task_id: self.id.clone(),
            name: self.name.clone(),
            resources: Resources {
                cpus: self.cpus,
                mem: self.mem,
                disk: self.disk,
                gpus: self.gpus,
                ports,
            },
            command: Command {
                shell: self.shell,
                value: self.command.clone(),
                arguments: self.arguments.clone(),
                environment: pairs(&self.env),
                user: self.user.clone(),
            },
            labels: pairs(&self.labels),
            kill_grace_period_ms: self.kill_grace_period_ms,
            health_check: self.health_check.as_ref().map(HealthCheckDef::to_wit),
            container: self.container.as_ref().map(ContainerDef::to_wit),
            fetch: Vec::new(),
            readiness_check: None,
            accepted_roles: Vec::new(),
            volumes: Vec::new(),
            discovery: Vec::new(),
        }
    }

    fn need(&self) -> Need {
        Need {
            cpus: self.cpus,
            mem: self.mem,
            disk: self.disk,
            gpus: self.gpus,
            ports: Need::any_ports(self.ports as usize),
            roles: Vec::new(),
            ..Need::default()
        }
    }

    /// The group constraints count: the task's own id when it has none.
    fn group_name(&self) -> &str {
        if self.group.is_empty() {
            &self.id
        } else {
            &self.group
        }
    }

    fn rules(&self) -> Vec<Rule> {
        self.constraints
            .iter()
            .filter_map(|c| Rule::from_marathon(c).ok())
            .collect()
    }
}

/// Marathon accepts numbers as constraint values; keep them as text.
fn constraint_strings(c: &[serde_json::Value]) -> Result<Vec<String>, String> {
    c.iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s.clone()),
            serde_json::Value::Number(n) => Ok(n.to_string()),
            other => Err(format!("constraint part {other} must be a string")),
        })
        .collect()
}

fn pairs(m: &BTreeMap<String, String>) -> Vec<KeyValue> {
    m.iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

/// The same rule the master applies to task ids.
fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 255 {
        return Err("id must be 1-255 bytes".into());
    }
    if id == "." || id == ".." {
        return Err("id must not be `.` or `..`".into());
    }
    if let Some(c) = id
        .chars()
        .find(|c| *c == '/' || *c == '\\' || c.is_control() || c.is_whitespace())
    {
        return Err(format!("id contains {c:?}, which is not allowed"));
    }
    Ok(())
}

/// A readable id prefix from the command: `sleep` for `sleep 60`.
fn slug(program: &str) -> String {
    let base = program.rsplit('/').next().unwrap_or(program);
    let s: String = base
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.')
        .take(40)
        .collect();
    let s = s.trim_matches('.').to_string();
    if s.is_empty() { "task".into() } else { s }
}

fn positive(name: &str, v: f64) -> Result<f64, String> {
    if !v.is_finite() || !(0.0..=1e9).contains(&v) {
        return Err(format!(
            "{name} must be a number between 0 and 1e9, got {v}"
        ));
    }
    Ok(v)
}

/// The exec framework.
struct Exec {
    tasks: BTreeMap<String, ExecTask>,
    /// Queued task ids in submission order.
    queue: VecDeque<String>,
    /// Finished task ids, oldest first.
    finished: VecDeque<String>,
    default_cpus: f64,
    default_mem: f64,
    max_finished: usize,
    /// Offers declined while tasks wait but do not fit come back this soon
    /// (a new task revives them at once).
    refuse_while_waiting: f64,
    offers: OfferInterest,
}

impl Exec {
    fn save(&mut self, mut t: ExecTask) {
        t.updated_at_ms = log::now_ms();
        if let Err(e) = kv::set_json(&format!("{TASK_PREFIX}{}", t.id), &t) {
            log::error(&format!("cannot save task {}: {e}", t.id));
        }
        self.tasks.insert(t.id.clone(), t);
    }

    fn next_seq(&mut self) -> u64 {
        let seq = kv::get_json::<u64>(SEQ_KEY).unwrap_or(0) + 1;
        if let Err(e) = kv::set_json(SEQ_KEY, &seq) {
            log::error(&format!("cannot save the task counter: {e}"));
        }
        seq
    }

    /// Forgets the oldest finished tasks beyond the limit.
    fn prune(&mut self) {
        while self.finished.len() > self.max_finished {
            if let Some(old) = self.finished.pop_front() {
                self.tasks.remove(&old);
                kv::delete(&format!("{TASK_PREFIX}{old}"));
            }
        }
    }

    /// Asks for offers only while something waits.
    fn want_offers(&mut self) {
        self.offers.want(!self.queue.is_empty());
    }

    fn submit(&mut self, req: &Request) -> Response {
        let s: Submit = match req.json() {
            Ok(s) => s,
            Err(r) => return r,
        };
        match self.accept(s) {
            Ok(t) => {
                let body = Response::json(201, &t);
                self.queue.push_back(t.id.clone());
                self.save(t);
                // Revive even while asking already: offers declined a moment
                // ago, while other tasks waited for placement, come back now.
                self.offers.more();
                body
            }
            Err((status, msg)) => Response::error(status, &msg),
        }
    }

    fn accept(&mut self, s: Submit) -> Result<ExecTask, (u16, String)> {
        let bad = |m: String| (400u16, m);
        let (shell, command, arguments) = match (s.cmd, s.argv) {
            (Some(_), Some(_)) => return Err(bad("give either cmd or argv, not both".into())),
            // A Docker task without a command runs its image's entrypoint.
            (None, None) if s.container.is_some() => (false, String::new(), Vec::new()),
            (None, None) => return Err(bad("a task needs cmd (a shell command) or argv".into())),
            (Some(cmd), None) if cmd.trim().is_empty() => return Err(bad("cmd is empty".into())),
            (Some(cmd), None) => (true, cmd, Vec::new()),
            (None, Some(argv)) => match argv.first() {
                Some(p) if !p.is_empty() => (false, p.clone(), argv),
                _ => return Err(bad("argv must start with a program".into())),
            },
        };
        let cpus = positive("cpus", s.cpus.unwrap_or(self.default_cpus)).map_err(bad)?;
        let mem = positive("mem", s.mem.unwrap_or(self.default_mem)).map_err(bad)?;
        let disk = positive("disk", s.disk).map_err(bad)?;
        if cpus == 0.0 && mem == 0.0 {
            return Err(bad("a task needs some cpus or mem".into()));
        }
        if s.ports > 100 {
            return Err(bad("a task may ask for at most 100 ports".into()));
        }
        if let Some(c) = &s.container {
            c.check(s.ports).map_err(bad)?;
        }
        let constraints = s
            .constraints
            .iter()
            .map(|c| constraint_strings(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        let rules = constraints
            .iter()
            .map(|c| Rule::from_marathon(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        if !rules.is_empty() {
            placement_service::validate(&rules).map_err(|e| (422, e))?;
        }
        if let Some(h) = &s.health_check {
            if h.plugin.is_empty() {
                return Err(bad(
                    "health_check.plugin names a health-check plugin, e.g. health-http".into(),
                ));
            }
            for (name, v) in [
                ("interval_seconds", h.interval_seconds),
                ("timeout_seconds", h.timeout_seconds),
            ] {
                if !v.is_finite() || v <= 0.0 {
                    return Err(bad(format!("health_check.{name} must be above 0")));
                }
            }
        }
        if let Some(id) = &s.id {
            check_id(id).map_err(|e| bad(format!("id {id:?}: {e}")))?;
            if self.tasks.contains_key(id) {
                return Err((409, format!("a task with id {id} already exists")));
            }
        }
        // Everything is valid: only now write (the counter is durable state).
        let seq = self.next_seq();
        let id = match s.id {
            Some(id) => id,
            None => {
                let program = if shell {
                    command
                        .split_whitespace()
                        .next()
                        .unwrap_or("task")
                        .to_string()
                } else if command.is_empty() {
                    // An image's entrypoint: named after the image.
                    let image = s.container.as_ref().map(|c| c.docker().image.as_str());
                    let base = image.and_then(|i| i.rsplit('/').next()).unwrap_or("task");
                    base.split([':', '@']).next().unwrap_or("task").to_string()
                } else {
                    command.clone()
                };
                format!("{}-{seq}", slug(&program))
            }
        };
        let now = log::now_ms();
        Ok(ExecTask {
            name: s.name.unwrap_or_else(|| id.clone()),
            id,
            seq,
            shell,
            command,
            arguments,
            env: s.env,
            labels: s.labels,
            user: s.user,
            cpus,
            mem,
            disk,
            gpus: s.gpus,
            ports: s.ports,
            kill_grace_period_ms: s.kill_grace_period_ms,
            container: s.container,
            state: QUEUED.into(),
            agent_id: None,
            hostname: None,
            message: None,
            reason: None,
            exit_code: None,
            submitted_at_ms: now,
            updated_at_ms: now,
            kill_requested: false,
            constraints,
            group: s.group.unwrap_or_default(),
            health_check: s.health_check,
            healthy: None,
            waiting_for: None,
        })
    }

    fn kill(&mut self, id: &str) -> Response {
        let Some(mut t) = self.tasks.get(id).cloned() else {
            return Response::error(404, &format!("no task {id}"));
        };
        if t.is_queued() {
            self.queue.retain(|q| q != id);
            t.state = "TASK_KILLED".into();
            t.message = Some("killed before it was launched".into());
            self.finished.push_back(t.id.clone());
            let body = Response::json(200, &t);
            self.save(t);
            self.prune();
            self.want_offers();
            return body;
        }
        if t.is_finished() {
            return Response::json(200, &t);
        }
        driver::kill(&t.id);
        t.kill_requested = true;
        let body = Response::json(202, &t);
        self.save(t);
        body
    }

    fn list(&self, req: &Request) -> Response {
        let filter = req.query_param("state");
        let mut tasks: Vec<&ExecTask> = self
            .tasks
            .values()
            .filter(|t| match filter.as_deref() {
                Some("queued") => t.is_queued(),
                Some("active") => !t.is_queued() && !t.is_finished(),
                Some("finished") => t.is_finished(),
                _ => true,
            })
            .collect();
        tasks.sort_by_key(|t| t.seq);
        Response::json(200, &serde_json::json!({ "tasks": tasks }))
    }
}

impl Exec {
    /// Where the task's group runs now: (agent id, count).
    fn placed(&self, group: &str) -> Vec<(String, u32)> {
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for t in self
            .tasks
            .values()
            .filter(|t| t.group_name() == group && !t.is_queued() && !t.is_finished())
        {
            if let Some(a) = &t.agent_id {
                *counts.entry(a.clone()).or_default() += 1;
            }
        }
        counts.into_iter().collect()
    }
}

impl Framework for Exec {
    fn init(config: wasmos_sdk::Config) -> Result<Self, String> {
        let num = |k: &str, d: f64| -> Result<f64, String> {
            match config.get(k) {
                Some(v) => v
                    .parse::<f64>()
                    .map_err(|_| format!("config {k}={v:?} is not a number")),
                None => Ok(d),
            }
        };
        let mut tasks: Vec<ExecTask> = kv::keys(TASK_PREFIX)
            .iter()
            .filter_map(|k| kv::get_json::<ExecTask>(k))
            .collect();
        tasks.sort_by_key(|t| t.seq);
        let queue = tasks
            .iter()
            .filter(|t| t.is_queued())
            .map(|t| t.id.clone())
            .collect();
        let finished = tasks
            .iter()
            .filter(|t| t.is_finished())
            .map(|t| t.id.clone())
            .collect();
        let mut exec = Exec {
            tasks: tasks.into_iter().map(|t| (t.id.clone(), t)).collect(),
            queue,
            finished,
            default_cpus: num("default_cpus", 0.1)?,
            default_mem: num("default_mem", 32.0)?,
            max_finished: num("max_finished", 1000.0)? as usize,
            refuse_while_waiting: num("refuse_while_waiting_seconds", 2.0)?,
            offers: OfferInterest::default(),
        };
        exec.want_offers();
        Ok(exec)
    }

    fn offers(&mut self, offers: Vec<Offer>) {
        let mut packer = Packer::new(&offers);
        for id in self.queue.clone() {
            let Some(t) = self.tasks.get(&id).cloned() else {
                continue;
            };
            // Always named, so that a task which fits nowhere is explained
            // under its group (its id when it has none).
            let placement = Placement {
                group: t.group_name().to_string(),
                placed: if t.constraints.is_empty() {
                    Vec::new()
                } else {
                    self.placed(t.group_name())
                },
                rules: t.rules(),
            };
            match packer.place(&t.need(), Some(&placement)) {
                Ok(fit) => {
                    packer.add(fit.offer, t.spec(fit.port_ranges()));
                }
                Err(why) => {
                    let why = why.to_string();
                    if t.waiting_for.as_deref() != Some(why.as_str()) {
                        let mut t = t;
                        t.waiting_for = Some(why);
                        self.save(t);
                    }
                }
            }
        }
        let packed = packer.finish();
        for launch in &packed.launches {
            let ids: Vec<String> = launch.specs.iter().map(|s| s.task_id.clone()).collect();
            self.queue.retain(|q| !ids.contains(q));
            let result = launch.send();
            for id in ids {
                let Some(mut t) = self.tasks.get(&id).cloned() else {
                    continue;
                };
                t.waiting_for = None;
                match &result {
                    Ok(()) => {
                        t.state = "TASK_STAGING".into();
                        t.agent_id = Some(launch.agent_id.clone());
                        t.hostname = Some(launch.hostname.clone());
                    }
                    Err(e) => {
                        t.state = "TASK_ERROR".into();
                        t.message = Some(e.clone());
                        self.finished.push_back(t.id.clone());
                    }
                }
                self.save(t);
            }
        }
        if !packed.unused.is_empty() {
            let refuse = if self.queue.is_empty() {
                REFUSE_IDLE
            } else {
                self.refuse_while_waiting
            };
            driver::decline(&packed.unused, Some(refuse));
        }
        self.prune();
        self.want_offers();
    }

    fn status(&mut self, update: TaskStatus) {
        let Some(mut t) = self.tasks.get(&update.task_id).cloned() else {
            log::debug(&format!("status for unknown task {}", update.task_id));
            return;
        };
        if t.is_finished() {
            return;
        }
        let was_queued = t.is_queued();
        t.state = state_name(update.state).to_string();
        if update.agent_id.is_some() {
            t.agent_id = update.agent_id;
        }
        t.message = update.message.or(t.message);
        t.reason = update.reason.or(t.reason);
        t.exit_code = update.exit_code.or(t.exit_code);
        if update.healthy.is_some() {
            t.healthy = update.healthy;
        }
        let id = t.id.clone();
        if is_terminal(update.state) {
            self.finished.push_back(id.clone());
        }
        self.save(t);
        if was_queued {
            self.queue.retain(|q| q != &id);
            self.want_offers();
        }
        self.prune();
    }

    fn http(&mut self, req: Request) -> Response {
        let method = req.method.to_ascii_uppercase();
        let segs: Vec<String> = req.segments().iter().map(|s| s.to_string()).collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        match (method.as_str(), segs.as_slice()) {
            ("GET", []) => Response::json(
                200,
                &serde_json::json!({
                    "framework": "exec",
                    "queued": self.queue.len(),
                    "finished": self.finished.len(),
                    "tasks": self.tasks.len(),
                }),
            ),
            ("GET", ["tasks"]) => self.list(&req),
            ("POST", ["tasks"]) => self.submit(&req),
            ("GET", ["tasks", id]) => match self.tasks.get(*id) {
                Some(t) => Response::json(200, t),
                None => Response::error(404, &format!("no task {id}")),
            },
            ("DELETE", ["tasks", id]) | ("POST", ["tasks", id, "kill"]) => self.kill(id),
            (_, ["tasks"]) | (_, ["tasks", _]) | (_, []) => {
                Response::error(405, &format!("{method} is not allowed here"))
            }
            _ => Response::error(404, &format!("no endpoint {}", req.path)),
        }
    }
}

wasmos_sdk::export_framework!(Exec);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_masters_rules() {
        assert!(check_id("sleep-3").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "x\n"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn slugs_are_safe_and_readable() {
        assert_eq!(slug("/usr/bin/sleep"), "sleep");
        assert_eq!(slug("../../x"), "x");
        assert_eq!(slug("$$$"), "task");
        assert_eq!(slug("python3.11"), "python3.11");
    }
}
