//! Executors: the programs that run a framework's tasks for it (Mesos'
//! custom executors, speaking the v1 executor API), and the default
//! executor for task groups, which is the agent itself.
//!
//! A custom executor is started the first time a task names it and lives
//! while it has tasks: the agent starts it in its own container (under the
//! native containerizer cgroups and namespaces like any task, sized for the
//! executor and its first tasks and grown as more arrive) with
//! `MESOS_AGENT_ENDPOINT` pointing at a loopback-only listener,
//! hands it its tasks once it subscribes, forwards its status updates to
//! the master (reliably, as its own), tells it when each is acknowledged,
//! and shuts it down when its last task ended or its framework asks.
//!
//! Executors do not authenticate (pymesos' does not even try): a call is
//! the executor's only if the connection comes from a process inside that
//! executor's container (its socket is found in `/proc`), or carries the
//! executor's `MESOS_EXECUTOR_AUTHENTICATION_TOKEN` as a bearer token.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;
use wasmos_core::protocol::{self, ExecutorExited, ExecutorMessage};
use wasmos_core::{
    ExecutorId, ExecutorKind, ExecutorSpec, FrameworkId, Reason, Source, TaskId, TaskSpec,
    TaskState, TaskStatus,
};

use crate::Agent;
use crate::containerizer::{ExitInfo, Signaller};

/// How long a started executor has to subscribe (Mesos'
/// `--executor_registration_timeout` default).
pub const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a subscribed executor hears a HEARTBEAT.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// The prefix of executor containers' ids.
pub const CONTAINER_PREFIX: &str = "executor-";
/// The label an executor container's checkpoint carries: how a restarted
/// agent tells it from a task (whatever the task's id).
pub const CONTAINER_LABEL: &str = "wasmos.executor-container";

type Key = (FrameworkId, ExecutorId);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Started, not subscribed yet.
    Starting,
    Subscribed,
    /// Told to shut down; killed after its grace period.
    ShuttingDown,
}

/// One custom executor on this agent.
pub(crate) struct ExecutorEntry {
    spec: ExecutorSpec,
    container: TaskId,
    phase: Phase,
    /// The subscriber's event stream.
    events: Option<mpsc::UnboundedSender<Bytes>>,
    /// Tasks it runs, by id; those not yet handed to it are in `queued`.
    tasks: BTreeSet<TaskId>,
    queued: Vec<TaskId>,
    /// Tasks for the next instance (they arrived while this one was
    /// shutting down).
    next: Vec<TaskId>,
    pid: Option<u32>,
    signal: Option<Signaller>,
    token: String,
    /// Shut down by request (its tasks end KILLED, not FAILED).
    shutdown_requested: bool,
    /// SUBSCRIBE calls so far: a deadline set before one is void after.
    subscriptions: u64,
    /// Killed for not subscribing in time.
    timed_out: bool,
}

/// What a restarted agent needs to take an executor back
/// (`checkpoint/<container>/executor.json`): it, its tasks, and each
/// task's latest update (sent again: the master drops it if it had it).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct ExecutorRecord {
    framework_id: FrameworkId,
    spec: ExecutorSpec,
    token: String,
    tasks: BTreeMap<TaskId, TaskSpec>,
    #[serde(default)]
    last: BTreeMap<TaskId, TaskStatus>,
}

/// The executors of this agent and where they call it.
pub(crate) struct Executors {
    map: std::sync::Mutex<BTreeMap<Key, ExecutorEntry>>,
    /// `127.0.0.1:<port>` of the executor listener.
    pub endpoint: std::sync::OnceLock<SocketAddr>,
    /// Connections already traced to an executor: peer → (socket inode,
    /// executor).
    peers: std::sync::Mutex<BTreeMap<SocketAddr, (u64, Key)>>,
}

impl Executors {
    pub fn new() -> Self {
        Executors {
            map: std::sync::Mutex::new(BTreeMap::new()),
            endpoint: std::sync::OnceLock::new(),
            peers: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, ExecutorEntry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One RecordIO record of a JSON event.
fn record(event: &Value) -> Bytes {
    let body = event.to_string();
    Bytes::from(format!("{}\n{body}", body.len()))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The TaskInfo a custom executor gets for `spec`: the framework's own,
/// with the agent id filled in.
fn task_info(spec: &TaskSpec, agent_id: Option<&str>) -> Value {
    let mut v: Value = spec
        .task_info
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_else(|| {
            json!({"name": spec.name, "task_id": {"value": spec.task_id.as_str()}, "resources": []})
        });
    if let Some(a) = agent_id
        && v.get("agent_id").is_none()
    {
        v["agent_id"] = json!({ "value": a });
    }
    v
}

impl Agent {
    fn lock_executors(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, ExecutorEntry>> {
        self.executors.lock()
    }

    /// Takes a task for its custom executor: queues it (starting the
    /// executor if need be); [`Self::hand_over_all`] sends what is queued
    /// to subscribed executors, so that a group goes as one.
    pub(crate) fn launch_to_executor(self: &Arc<Self>, framework_id: FrameworkId, spec: TaskSpec) {
        let Some(e) = spec.executor.clone() else {
            return;
        };
        let key = (framework_id.clone(), e.executor_id.clone());
        let id = spec.task_id.clone();
        let mut start = false;
        {
            let mut map = self.lock_executors();
            match map.get_mut(&key) {
                Some(x) if x.phase == Phase::ShuttingDown => x.next.push(id.clone()),
                Some(x) => {
                    x.tasks.insert(id.clone());
                    x.queued.push(id.clone());
                }
                None => {
                    map.insert(key.clone(), self.new_executor(e, vec![id.clone()]));
                    start = true;
                }
            }
        }
        if start {
            let me = self.clone();
            tokio::spawn(async move { me.run_executor(key).await });
        } else {
            self.checkpoint_executor(&key);
            self.size_executor(&key);
        }
    }

    /// Makes a running executor's container hold it and all its live
    /// tasks (memory only grows while it runs).
    fn size_executor(&self, key: &Key) {
        let (Some(native), Some((container, mut need, ids))) = (
            self.native.clone(),
            self.lock_executors()
                .get(key)
                .filter(|x| x.pid.is_some())
                .map(|x| {
                    (
                        x.container.clone(),
                        x.spec.resources.clone(),
                        x.tasks.clone(),
                    )
                }),
        ) else {
            return;
        };
        {
            let tasks = self.lock_tasks();
            for id in ids {
                if let Some(t) = tasks.get(&id).filter(|t| !t.state.is_terminal()) {
                    need = need.add(&t.spec.resources);
                }
            }
        }
        if let Err(e) = native.grow(container.as_str(), &need) {
            tracing::warn!(executor = %key.1, error = %e, "cannot grow the executor's container for its new task; it keeps its limits");
        }
    }

    /// Hands every subscribed executor what is queued for it.
    pub(crate) fn hand_over_all(&self) {
        let keys: Vec<Key> = self
            .lock_executors()
            .iter()
            .filter(|(_, x)| x.phase == Phase::Subscribed && !x.queued.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.hand_over(&k);
        }
    }

    fn new_executor(&self, spec: ExecutorSpec, tasks: Vec<TaskId>) -> ExecutorEntry {
        let container = TaskId::new(format!("{CONTAINER_PREFIX}{}", Uuid::new_v4().simple()))
            .unwrap_or_else(|_| unreachable_id());
        ExecutorEntry {
            spec,
            container,
            phase: Phase::Starting,
            events: None,
            tasks: tasks.iter().cloned().collect(),
            queued: tasks,
            next: Vec::new(),
            pid: None,
            signal: None,
            token: Uuid::new_v4().simple().to_string(),
            shutdown_requested: false,
            subscriptions: 0,
            timed_out: false,
        }
    }

    /// Records the executor and its tasks for a restarted agent (native
    /// containerizer only: only its containers outlive the agent).
    fn checkpoint_executor(&self, key: &Key) {
        if self.native.is_none() {
            return;
        }
        let Some((container, spec, token, ids)) = self.lock_executors().get(key).map(|x| {
            (
                x.container.clone(),
                x.spec.clone(),
                x.token.clone(),
                x.tasks.clone(),
            )
        }) else {
            return;
        };
        let mut rec = ExecutorRecord {
            framework_id: key.0.clone(),
            spec,
            token,
            tasks: BTreeMap::new(),
            last: BTreeMap::new(),
        };
        {
            let tasks = self.lock_tasks();
            for id in ids {
                if let Some(t) = tasks.get(&id) {
                    rec.tasks.insert(id.clone(), t.spec.clone());
                    if let Some(l) = &t.last_status {
                        rec.last.insert(id, l.clone());
                    }
                }
            }
        }
        let dir = self.checkpoint_dir().join(container.as_str());
        if let Err(e) = std::fs::create_dir_all(&dir)
            .map_err(|e| e.to_string())
            .and_then(|()| crate::native::write_json_atomic(&dir.join("executor.json"), &rec))
        {
            tracing::warn!(executor = %key.1, error = %e, "cannot checkpoint the executor; an agent restart would end it");
        }
    }

    /// Takes back an executor found running when the agent starts: its
    /// tasks are known again (their latest updates sent again), and it
    /// re-subscribes (it was told `MESOS_CHECKPOINT=1`). One that ended
    /// while the agent was away fails its tasks.
    pub(crate) fn recover_executor(
        self: &Arc<Self>,
        container: TaskId,
        rec: ExecutorRecord,
        running: Option<crate::containerizer::Launched>,
    ) {
        let key = (rec.framework_id.clone(), rec.spec.executor_id.clone());
        {
            let mut tasks = self.lock_tasks();
            for (id, spec) in &rec.tasks {
                let last = rec.last.get(id).cloned();
                let state = last.as_ref().map_or(TaskState::Staging, |l| l.state);
                tasks.insert(
                    id.clone(),
                    crate::tasks::TaskEntry::recovered(key.0.clone(), spec.clone(), state, last),
                );
            }
        }
        for (id, last) in &rec.last {
            if self.is_tombstoned(id) {
                continue;
            }
            if last.state.is_terminal() {
                self.tombstone(id);
            }
            self.queue_update(&key.0, last.clone());
        }
        let Some(launched) = running else {
            tracing::info!(executor = %key.1, "an executor ended while the agent was away");
            let live: Vec<TaskId> = {
                let tasks = self.lock_tasks();
                rec.tasks
                    .keys()
                    .filter(|id| tasks.get(*id).is_some_and(|t| !t.state.is_terminal()))
                    .cloned()
                    .collect()
            };
            for id in live {
                let mut s = self.status_of(&id, TaskState::Failed);
                s.message = Some("its executor ended while the agent was away".into());
                s.executor_id = Some(key.1.clone());
                s.reason = Some(Reason::ReasonExecutorTerminated);
                self.finish(&key.0, s);
            }
            let _ = std::fs::remove_dir_all(self.checkpoint_dir().join(container.as_str()));
            return;
        };
        tracing::info!(executor = %key.1, framework = %key.0, pid = launched.pid, "reattached to a running executor; waiting for it to subscribe again");
        let mut entry = self.new_executor(rec.spec, Vec::new());
        entry.container = container.clone();
        entry.token = rec.token;
        entry.tasks = rec.tasks.keys().cloned().collect();
        entry.pid = Some(launched.pid);
        entry.signal = Some(launched.signal.clone());

        self.lock_executors().insert(key.clone(), entry);
        let me = self.clone();
        tokio::spawn(async move {
            me.registration_deadline(&key, &container);
            let exit = launched.exit.await;
            me.after_exit(&key, &container, exit).await;
        });
    }

    /// Sends a subscribed executor the tasks queued for it: a task group
    /// (tasks of one group, queued together) as one LAUNCH_GROUP.
    fn hand_over(&self, key: &Key) {
        let agent_id = self.agent_id().map(|a| a.to_string());
        let (tx, queued) = {
            let mut map = self.lock_executors();
            let Some(x) = map.get_mut(key) else { return };
            if x.phase != Phase::Subscribed {
                return;
            }
            let Some(tx) = x.events.clone() else { return };
            (tx, std::mem::take(&mut x.queued))
        };
        let specs: Vec<TaskSpec> = {
            let tasks = self.lock_tasks();
            queued
                .iter()
                .filter_map(|id| tasks.get(id))
                .filter(|t| !t.state.is_terminal())
                .map(|t| t.spec.clone())
                .collect()
        };
        let mut groups: BTreeMap<TaskId, Vec<Value>> = BTreeMap::new();
        for s in &specs {
            let info = task_info(s, agent_id.as_deref());
            match &s.group {
                Some(g) => groups.entry(g.clone()).or_default().push(info),
                None => {
                    let _ = tx.send(record(&json!({"type": "LAUNCH", "launch": {"task": info}})));
                }
            }
        }
        for (_, tasks) in groups {
            let _ = tx.send(record(&json!({"type": "LAUNCH_GROUP",
                "launch_group": {"task_group": {"tasks": tasks}}})));
        }
    }

    /// Starts an executor's container and watches it to its end.
    async fn run_executor(self: Arc<Self>, key: Key) {
        let Some((spec, container, token, first)) = self.lock_executors().get(&key).map(|x| {
            (
                x.spec.clone(),
                x.container.clone(),
                x.token.clone(),
                x.queued.clone(),
            )
        }) else {
            return;
        };
        let launched = self
            .start_executor(&key, &spec, &container, &token, &first)
            .await;
        let launched = match launched {
            Ok(l) => l,
            Err(why) => {
                tracing::warn!(executor = %key.1, framework = %key.0, error = %why, "executor failed to start");
                self.executor_ended(
                    &key,
                    None,
                    &format!("the executor could not start: {why}"),
                    Reason::ReasonContainerLaunchFailed,
                )
                .await;
                self.cleanup_isolators(container.as_str()).await;
                return;
            }
        };
        tracing::info!(executor = %key.1, framework = %key.0, pid = launched.pid, "executor started");
        let shutting_down = {
            let mut map = self.lock_executors();
            match map.get_mut(&key) {
                Some(x) => {
                    x.pid = Some(launched.pid);
                    x.signal = Some(launched.signal.clone());
                    x.phase == Phase::ShuttingDown
                }
                None => false,
            }
        };
        self.checkpoint_executor(&key);
        if shutting_down {
            // Told to shut down while it was starting.
            self.kill_after_grace(&key, &container);
        }
        self.registration_deadline(&key, &container);
        let exit = launched.exit.await;
        self.after_exit(&key, &container, exit).await;
    }

    /// Kills this instance of the executor (`container`) if it has not
    /// subscribed (again) within [`REGISTRATION_TIMEOUT`].
    fn registration_deadline(self: &Arc<Self>, key: &Key, container: &TaskId) {
        let me = self.clone();
        let (key, container) = (key.clone(), container.clone());
        let seen = self
            .lock_executors()
            .get(&key)
            .map_or(0, |x| x.subscriptions);
        tokio::spawn(async move {
            tokio::time::sleep(REGISTRATION_TIMEOUT).await;
            let signal = {
                let mut map = me.lock_executors();
                match map.get_mut(&key) {
                    Some(x)
                        if x.container == container
                            && x.subscriptions == seen
                            && x.events.is_none() =>
                    {
                        x.timed_out = true;
                        x.signal.clone()
                    }
                    _ => None,
                }
            };
            if let Some(signal) = signal {
                tracing::warn!(executor = %key.1, "executor did not subscribe in time; killing it");
                let _ = signal(Signal::SIGKILL);
            }
        });
    }

    /// SIGKILL for this instance of the executor once its shutdown grace
    /// period is over, unless it ended by then.
    fn kill_after_grace(self: &Arc<Self>, key: &Key, container: &TaskId) {
        let me = self.clone();
        let (key, container) = (key.clone(), container.clone());
        let Some(grace) = self
            .lock_executors()
            .get(&key)
            .map(|x| Duration::from_millis(x.spec.shutdown_grace_ms()))
        else {
            return;
        };
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let signal = me
                .lock_executors()
                .get(&key)
                .filter(|x| x.container == container)
                .and_then(|x| x.signal.clone());
            if let Some(s) = signal {
                tracing::info!(executor = %key.1, "executor still running after its grace period; SIGKILL");
                let _ = s(Signal::SIGKILL);
            }
        });
    }

    async fn after_exit(self: &Arc<Self>, key: &Key, container: &TaskId, exit: ExitInfo) {
        let (timed_out, subscribed) = self
            .lock_executors()
            .get(key)
            .map_or((false, true), |x| (x.timed_out, x.subscriptions > 0));
        let sandbox = self.sandbox_root().join(container.as_str());
        let (why, reason) = if timed_out {
            (
                format!(
                    "the executor did not subscribe within {} s; see its output in {}",
                    REGISTRATION_TIMEOUT.as_secs(),
                    sandbox.display()
                ),
                Reason::ReasonExecutorRegistrationTimeout,
            )
        } else if !subscribed {
            (
                format!(
                    "the executor ended ({}) before it subscribed; see its output in {}",
                    describe(&exit),
                    sandbox.display()
                ),
                Reason::ReasonExecutorTerminated,
            )
        } else {
            (
                format!("the executor ended ({})", describe(&exit)),
                Reason::ReasonExecutorTerminated,
            )
        };
        self.executor_ended(key, Some(&exit), &why, reason).await;
        self.cleanup_isolators(container.as_str()).await;
    }

    async fn start_executor(
        &self,
        key: &Key,
        spec: &ExecutorSpec,
        container: &TaskId,
        token: &str,
        first: &[TaskId],
    ) -> Result<crate::containerizer::Launched, String> {
        let sandbox = self.sandbox_root().join(container.as_str());
        std::fs::create_dir_all(&sandbox)
            .map_err(|e| format!("cannot create sandbox {}: {e}", sandbox.display()))?;
        let endpoint = self
            .executors
            .endpoint
            .get()
            .copied()
            .ok_or("the agent's executor listener is not open")?;
        // The container holds the executor and the tasks it starts with.
        let mut resources = spec.resources.clone();
        {
            let tasks = self.lock_tasks();
            for id in first {
                if let Some(t) = tasks.get(id) {
                    resources = resources.add(&t.spec.resources);
                }
            }
        }
        let mut command = spec.command.clone().unwrap_or_default();
        if command.user.is_none() {
            command.user = Some(self.config.task_user.clone());
        }
        let as_task = TaskSpec {
            task_id: container.clone(),
            name: spec.name.clone(),
            resources,
            command,
            labels: BTreeMap::from([(CONTAINER_LABEL.to_string(), key.1.to_string())]),
            kill_grace_period_ms: Some(spec.shutdown_grace_ms()),
            health_check: None,
            container: None,
            fetch: spec.fetch.clone(),
            readiness_check: None,
            reserved: Default::default(),
            volumes: Vec::new(),
            executor: None,
            group: None,
            task_info: None,
            accepted_roles: Vec::new(),
            host_volumes: Vec::new(),
            discovery: Vec::new(),
        };
        let mut c = self.container_spec(&key.0, &as_task, sandbox.clone());
        c.env
            .retain(|(k, _)| k != "WASMOS_TASK_ID" && k != "MESOS_TASK_ID");
        let grace = Duration::from_millis(spec.shutdown_grace_ms());
        for (k, v) in [
            ("MESOS_FRAMEWORK_ID", key.0.to_string()),
            ("MESOS_EXECUTOR_ID", key.1.to_string()),
            ("MESOS_AGENT_ENDPOINT", endpoint.to_string()),
            ("MESOS_SLAVE_PID", format!("slave(1)@{endpoint}")),
            ("MESOS_DIRECTORY", sandbox.display().to_string()),
            ("MESOS_CHECKPOINT", "1".to_string()),
            (
                "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD",
                format!("{}secs", grace.as_secs_f64()),
            ),
            ("MESOS_EXECUTOR_AUTHENTICATION_TOKEN", token.to_string()),
            ("MESOS_RECOVERY_TIMEOUT", "15mins".to_string()),
            ("MESOS_SUBSCRIPTION_BACKOFF_MAX", "2secs".to_string()),
        ] {
            c.env.retain(|(n, _)| n != k);
            c.env.push((k.to_string(), v));
        }
        if let Some(a) = self.agent_id() {
            c.env.push(("MESOS_SLAVE_ID".into(), a.to_string()));
            c.env.push(("MESOS_AGENT_ID".into(), a.to_string()));
        }
        crate::fetch::fetch_all(&as_task, &sandbox, &self.config.fetch_allow).await?;
        let iso = self.isolate(&key.0, &as_task, &c.env).await?;
        c.env.retain(|(k, _)| !iso.env.contains_key(k));
        c.env.extend(iso.env);
        c.rlimits = iso.rlimits;
        c.cgroup = iso.cgroup;
        if self.native.is_some() {
            // Recorded so that a restarted agent finds the container again
            // (and takes it back from its `executor.json`, or ends it when
            // that is missing).
            self.checkpoint_task(&crate::native::TaskRecord {
                framework_id: key.0.clone(),
                spec: as_task.clone(),
                gpus: Vec::new(),
            })?;
        }
        self.containerizer
            .launch(c)
            .await
            .map_err(|e| e.to_string())
    }

    /// An executor ended (or never started): its tasks that had not ended
    /// fail (or are killed, when it was shut down by request), its
    /// framework hears of it, and tasks that arrived meanwhile get a new
    /// instance.
    async fn executor_ended(
        self: &Arc<Self>,
        key: &Key,
        exit: Option<&ExitInfo>,
        why: &str,
        reason: Reason,
    ) {
        let Some(x) = self.lock_executors().remove(key) else {
            return;
        };
        self.executors
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (_, k)| k != key);
        let live: Vec<TaskId> = {
            let tasks = self.lock_tasks();
            x.tasks
                .iter()
                .filter(|id| tasks.get(*id).is_some_and(|t| !t.state.is_terminal()))
                .cloned()
                .collect()
        };
        for id in live {
            let killed = x.shutdown_requested
                || self
                    .lock_tasks()
                    .get(&id)
                    .is_some_and(|t| t.kill_requested());
            let mut s = self.status_of(
                &id,
                if killed {
                    TaskState::Killed
                } else {
                    TaskState::Failed
                },
            );
            s.message = Some(why.to_string());
            s.reason = Some(reason);
            s.executor_id = Some(key.1.clone());
            self.finish_task(&key.0, s);
        }
        let _ = std::fs::remove_dir_all(self.checkpoint_dir().join(x.container.as_str()));
        if let Some(exit) = exit {
            let status = wait_status(exit);
            tracing::info!(executor = %key.1, framework = %key.0, status, "executor ended");
            if let Some(agent_id) = self.agent_id() {
                let msg = ExecutorExited {
                    agent_id,
                    framework_id: key.0.clone(),
                    executor_id: key.1.clone(),
                    status,
                };
                self.tell_master_later(protocol::paths::EXECUTOR_EXITED, msg);
            }
        }
        // Tasks that came while it was shutting down get a fresh one.
        let next: Vec<TaskId> = x.next;
        if !next.is_empty() {
            let specs: Vec<TaskSpec> = {
                let tasks = self.lock_tasks();
                next.iter()
                    .filter_map(|id| tasks.get(id))
                    .filter(|t| !t.state.is_terminal())
                    .map(|t| t.spec.clone())
                    .collect()
            };
            for s in specs {
                self.launch_to_executor(key.0.clone(), s);
            }
        }
    }

    /// Sends the master a message about an executor in the background, a
    /// few times until it takes it (best effort, as Mesos' own).
    fn tell_master_later(
        self: &Arc<Self>,
        path: &'static str,
        body: impl serde::Serialize + Send + Sync + 'static,
    ) {
        let me = self.clone();
        tokio::spawn(async move { me.tell_master(path, &body).await });
    }

    async fn tell_master(&self, path: &str, body: &impl serde::Serialize) {
        let body = serde_json::to_vec(body).unwrap_or_default();
        for attempt in 0..5u32 {
            match self
                .masters
                .send(reqwest::Method::POST, path, Some(body.clone()))
                .await
            {
                Ok(r) if r.status().is_success() => return,
                Ok(r) if r.status().is_client_error() => {
                    tracing::info!(path, status = %r.status(), "master refused an executor message");
                    return;
                }
                _ => tokio::time::sleep(Duration::from_millis(500 << attempt)).await,
            }
        }
    }

    /// Kills a task its custom executor runs: the executor is told (KILL)
    /// and reports the end; a task not handed over yet ends here.
    pub(crate) fn kill_executor_task(self: &Arc<Self>, id: &TaskId, key: &Key, grace_ms: u64) {
        let tx = {
            let mut map = self.lock_executors();
            let Some(x) = map.get_mut(key) else {
                drop(map);
                let mut s = self.status_of(id, TaskState::Killed);
                s.message = Some("killed before its executor ran it".into());
                s.executor_id = Some(key.1.clone());
                self.finish_task(&key.0, s);
                return;
            };
            let before = x.queued.len() + x.next.len();
            x.queued.retain(|t| t != id);
            x.next.retain(|t| t != id);
            if x.queued.len() + x.next.len() < before {
                Err(())
            } else {
                // Not subscribed now: the KILL goes when it subscribes
                // again; shutting down: it ends with its executor.
                Ok(x.events.clone())
            }
        };
        match tx {
            Ok(Some(tx)) => {
                let _ = tx.send(kill_event(id, grace_ms));
            }
            Ok(None) => {}
            Err(()) => {
                let mut s = self.status_of(id, TaskState::Killed);
                s.message = Some("killed before its executor ran it".into());
                s.executor_id = Some(key.1.clone());
                self.finish_task(&key.0, s);
            }
        }
    }

    /// Shuts an executor down: SHUTDOWN, then SIGKILL after its grace
    /// period. `requested`: by its framework (tasks end KILLED).
    pub(crate) fn shutdown_executor(self: &Arc<Self>, key: &Key, requested: bool) -> bool {
        let (tx, container) = {
            let mut map = self.lock_executors();
            let Some(x) = map.get_mut(key) else {
                drop(map);
                return requested && self.shutdown_default_executor(key);
            };
            x.shutdown_requested |= requested;
            if x.phase == Phase::ShuttingDown {
                return true;
            }
            x.phase = Phase::ShuttingDown;
            (x.events.take(), x.container.clone())
        };
        tracing::info!(executor = %key.1, framework = %key.0, requested, "shutting the executor down");
        if let Some(tx) = tx {
            let _ = tx.send(record(&json!({"type": "SHUTDOWN"})));
        }
        // Not started yet: `run_executor` sets the timer once it has.
        if self
            .lock_executors()
            .get(key)
            .is_some_and(|x| x.signal.is_some())
        {
            self.kill_after_grace(key, &container);
        }
        true
    }

    /// The default executor (the agent itself) shuts down by killing its
    /// tasks; false when the framework has none under that executor id.
    fn shutdown_default_executor(self: &Arc<Self>, key: &Key) -> bool {
        let tasks: Vec<(TaskId, u64)> = self
            .lock_tasks()
            .iter()
            .filter(|(_, t)| {
                t.framework_id == key.0
                    && !t.state.is_terminal()
                    && t.spec
                        .executor
                        .as_ref()
                        .is_some_and(|e| e.executor_id == key.1)
            })
            .map(|(id, t)| (id.clone(), t.spec.kill_grace_ms()))
            .collect();
        for (id, grace) in &tasks {
            let _ = self.kill(id, *grace);
        }
        !tasks.is_empty()
    }

    /// An executor whose tasks all ended is shut down (it holds resources
    /// the master no longer counts).
    fn shutdown_if_idle(self: &Arc<Self>, key: &Key) {
        let idle = {
            let map = self.lock_executors();
            let Some(x) = map.get(key) else { return };
            let tasks = self.lock_tasks();
            x.next.is_empty()
                && x.tasks
                    .iter()
                    .all(|id| tasks.get(id).is_none_or(|t| t.state.is_terminal()))
        };
        if idle {
            self.shutdown_executor(key, false);
        }
    }

    /// After the master acknowledged an update an executor sent, the
    /// executor is told (ACKNOWLEDGED).
    pub(crate) fn executor_acknowledged(&self, status: &TaskStatus) {
        if status.source != Source::Executor {
            return;
        }
        let Some(key) = self.lock_tasks().get(&status.task_id).and_then(|t| {
            t.spec
                .executor
                .as_ref()
                .map(|e| (t.framework_id.clone(), e.executor_id.clone()))
        }) else {
            return;
        };
        let tx = self
            .lock_executors()
            .get(&key)
            .and_then(|x| x.events.clone());
        if let Some(tx) = tx {
            let _ = tx.send(record(&json!({"type": "ACKNOWLEDGED", "acknowledged": {
                "task_id": {"value": status.task_id.as_str()},
                "uuid": b64(status.uuid.as_bytes())}})));
        }
    }

    /// A framework's message for its executor.
    pub(crate) fn message_to_executor(&self, msg: &ExecutorMessage) -> bool {
        let tx = self
            .lock_executors()
            .get(&(msg.framework_id.clone(), msg.executor_id.clone()))
            .and_then(|x| x.events.clone());
        match tx {
            Some(tx) => tx
                .send(record(
                    &json!({"type": "MESSAGE", "message": {"data": msg.data}}),
                ))
                .is_ok(),
            None => false,
        }
    }

    /// The default executor's rule: when a task of a group ends other than
    /// FINISHED, the rest of its group is killed.
    pub(crate) fn end_group_with(self: &Arc<Self>, spec: &TaskSpec, state: TaskState) {
        let (Some(group), Some(e)) = (&spec.group, &spec.executor) else {
            return;
        };
        if e.kind != ExecutorKind::Default || state == TaskState::Finished {
            return;
        }
        let siblings: Vec<(TaskId, u64)> = self
            .lock_tasks()
            .iter()
            .filter(|(id, t)| {
                *id != &spec.task_id
                    && t.spec.group.as_ref() == Some(group)
                    && !t.state.is_terminal()
            })
            .map(|(id, t)| (id.clone(), t.spec.kill_grace_ms()))
            .collect();
        for (id, grace) in siblings {
            tracing::info!(task = %id, group = %group, "a task of its group ended {state}; killing it");
            let _ = self.kill(&id, grace);
        }
    }

    /// Ends a task's life here with `status`, and lets its executor go if
    /// it was the last.
    pub(crate) fn finish_task(self: &Arc<Self>, framework_id: &FrameworkId, status: TaskStatus) {
        let spec = self
            .lock_tasks()
            .get(&status.task_id)
            .map(|t| t.spec.clone());
        self.finish(framework_id, status.clone());
        if let Some(spec) = spec {
            self.end_group_with(&spec, status.state);
            if let Some(e) = spec
                .executor
                .as_ref()
                .filter(|e| e.kind == ExecutorKind::Custom)
            {
                self.shutdown_if_idle(&(framework_id.clone(), e.executor_id.clone()));
            }
        }
    }

    /// The sandbox directory name of a task: its own, or its custom
    /// executor's while that runs.
    pub(crate) fn sandbox_of(&self, task: &TaskId) -> TaskId {
        let key = self.lock_tasks().get(task).and_then(|t| {
            let e = t.spec.executor.as_ref()?;
            (e.kind == ExecutorKind::Custom)
                .then(|| (t.framework_id.clone(), e.executor_id.clone()))
        });
        key.and_then(|k| self.lock_executors().get(&k).map(|x| x.container.clone()))
            .unwrap_or_else(|| task.clone())
    }

    /// Whether `container` is a running executor's (its sandbox is kept).
    pub(crate) fn runs_executor_container(&self, container: &TaskId) -> bool {
        self.lock_executors()
            .values()
            .any(|x| &x.container == container)
    }

    pub(crate) fn longest_executor_grace(&self) -> Duration {
        self.lock_executors()
            .values()
            .map(|x| Duration::from_millis(x.spec.shutdown_grace_ms()))
            .max()
            .unwrap_or_default()
    }

    pub(crate) fn executor_keys(&self) -> Vec<Key> {
        self.lock_executors().keys().cloned().collect()
    }

    /// The executors running here, for the agent's state.
    pub(crate) fn executors_report(&self) -> Vec<Value> {
        self.lock_executors()
            .iter()
            .map(|((f, e), x)| {
                json!({"framework_id": f, "executor_id": e, "container": x.container,
                    "pid": x.pid, "tasks": x.tasks, "subscribed": x.phase == Phase::Subscribed})
            })
            .collect()
    }
}

fn kill_event(id: &TaskId, grace_ms: u64) -> Bytes {
    record(&json!({"type": "KILL", "kill": {
        "task_id": {"value": id.as_str()},
        "kill_policy": {"grace_period": {"nanoseconds": grace_ms.saturating_mul(1_000_000)}}}}))
}

/// A wait status as Mesos reports it (`status` of the FAILURE event).
fn wait_status(exit: &ExitInfo) -> i32 {
    match (exit.code, exit.signal) {
        (Some(c), _) => (c & 0xff) << 8,
        (None, Some(s)) => s & 0x7f,
        (None, None) => 0,
    }
}

fn describe(exit: &ExitInfo) -> String {
    match (exit.code, exit.signal) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("signal {}", crate::tasks::signal_name(s)),
        (None, None) => "lost".into(),
    }
}

fn unreachable_id() -> TaskId {
    // A uuid behind a fixed prefix is always a valid id.
    TaskId::new("executor").unwrap_or_else(|_| unreachable!())
}

// ---------------------------------------------------------------------
// The executor API: POST /api/v1/executor on a loopback-only listener.

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

/// Opens the loopback listener executors call (`MESOS_AGENT_ENDPOINT`).
pub(crate) async fn listen(agent: Arc<Agent>) -> anyhow::Result<()> {
    // The same port across agent restarts when it is free, so that a
    // checkpointing executor finds the agent again.
    let port_file = agent.config.data_dir.join("executor-port");
    let old: u16 = std::fs::read_to_string(&port_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", old)).await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?,
    };
    let addr = listener.local_addr()?;
    let _ = std::fs::write(&port_file, addr.port().to_string());
    let _ = agent.executors.endpoint.set(addr);
    tracing::info!(%addr, "executor API listening (loopback only)");
    let app = Router::new()
        .route("/api/v1/executor", post(call))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such endpoint; executors call POST /api/v1/executor",
            )
        })
        .layer(DefaultBodyLimit::max(4 << 20))
        .with_state(agent.clone())
        .into_make_service_with_connect_info::<SocketAddr>();
    let mut rx = agent.shutdown.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|v| *v).await;
            })
            .await;
    });
    Ok(())
}

/// Why a call is not taken as the executor's.
enum AuthError {
    Refused(String),
    /// Its container has not started yet (no process to trace to).
    NotYet,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Call {
    framework_id: Option<IdValue>,
    executor_id: Option<IdValue>,
    #[serde(rename = "type")]
    kind: Option<String>,
    subscribe: Option<Subscribe>,
    update: Option<Update>,
    message: Option<MessageBody>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct IdValue {
    value: String,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Subscribe {
    unacknowledged_tasks: Vec<Value>,
    unacknowledged_updates: Vec<Update>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Update {
    status: Option<Value>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct MessageBody {
    data: Option<String>,
}

async fn call(
    State(a): State<Arc<Agent>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_type {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "executor calls must be Content-Type: application/json",
        );
    }
    let call: Call = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("Failed to parse body into JSON: {e}"),
            );
        }
    };
    let (Some(f), Some(e)) = (&call.framework_id, &call.executor_id) else {
        return error(
            StatusCode::BAD_REQUEST,
            "framework_id and executor_id are required",
        );
    };
    let (Ok(framework_id), Ok(executor_id)) = (
        FrameworkId::new(f.value.clone()),
        ExecutorId::new(e.value.clone()),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "framework_id and executor_id must be valid ids",
        );
    };
    let key = (framework_id, executor_id);
    match a.authenticate_executor(&key, peer, &headers).await {
        Ok(()) => {}
        Err(AuthError::Refused(why)) => return error(StatusCode::FORBIDDEN, why),
        Err(AuthError::NotYet) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the executor's container is still starting; retry in a moment",
            );
        }
    }
    match call.kind.as_deref().unwrap_or("") {
        "SUBSCRIBE" => a.executor_subscribe(&key, call.subscribe.unwrap_or_default()),
        "UPDATE" => match call.update.and_then(|u| u.status) {
            Some(s) => match a.executor_update(&key, &s) {
                Ok(()) => StatusCode::ACCEPTED.into_response(),
                Err(why) => error(StatusCode::BAD_REQUEST, why),
            },
            None => error(StatusCode::BAD_REQUEST, "update.status is required"),
        },
        "MESSAGE" => match call.message.and_then(|m| m.data) {
            Some(data)
                if base64::engine::general_purpose::STANDARD
                    .decode(&data)
                    .is_ok() =>
            {
                if let Some(agent_id) = a.agent_id() {
                    let msg = ExecutorMessage {
                        term: 0,
                        agent_id: Some(agent_id),
                        framework_id: key.0.clone(),
                        executor_id: key.1.clone(),
                        data,
                    };
                    a.tell_master_later(protocol::paths::FROM_EXECUTOR, msg);
                }
                StatusCode::ACCEPTED.into_response()
            }
            _ => error(StatusCode::BAD_REQUEST, "message.data (base64) is required"),
        },
        "HEARTBEAT" => StatusCode::ACCEPTED.into_response(),
        other => error(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown executor call type {other:?} (SUBSCRIBE, UPDATE, MESSAGE or HEARTBEAT)"
            ),
        ),
    }
}

impl Agent {
    /// Whether a call for executor `key` comes from it: its bearer token,
    /// or a connection from a process in its container.
    async fn authenticate_executor(
        &self,
        key: &Key,
        peer: SocketAddr,
        headers: &HeaderMap,
    ) -> Result<(), AuthError> {
        let (token, pid) = {
            let map = self.lock_executors();
            let Some(x) = map.get(key) else {
                return Err(AuthError::Refused(format!(
                    "executor {} of framework {} is not running on this agent",
                    key.1, key.0
                )));
            };
            (x.token.clone(), x.pid)
        };
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Some(h) = auth {
            return if protocol::bearer_matches(Some(h), &token) {
                Ok(())
            } else {
                Err(AuthError::Refused(
                    "the bearer token is not this executor's".into(),
                ))
            };
        }
        let Some(pid) = pid else {
            return Err(AuthError::NotYet);
        };
        let local = self.executors.endpoint.get().copied();
        let cached = self
            .executors
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .cloned();
        let k = key.clone();
        let found = tokio::task::spawn_blocking(move || -> Result<u64, String> {
            let local = local.ok_or("no executor listener")?;
            let inode = peer_inode(peer, local)
                .ok_or("the connection's socket is not found on this host")?;
            if let Some((i, ck)) = cached
                && i == inode
                && ck == k
            {
                return Ok(inode);
            }
            let owner = socket_owner(inode).ok_or("no process owns the connection's socket")?;
            if same_container(owner, pid) {
                Ok(inode)
            } else {
                Err(format!(
                    "the caller (pid {owner}) is not in the container of executor {}",
                    k.1
                ))
            }
        })
        .await
        .map_err(|e| AuthError::Refused(e.to_string()))?
        .map_err(AuthError::Refused)?;
        let mut peers = self
            .executors
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if peers.len() >= 4096 {
            // Connections come and go; tracing one again is cheap enough.
            peers.clear();
        }
        peers.insert(peer, (found, key.clone()));
        Ok(())
    }

    fn executor_subscribe(self: &Arc<Self>, key: &Key, sub: Subscribe) -> Response {
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let Some((info, container)) = self
            .lock_executors()
            .get(key)
            .map(|x| (x.spec.info.clone(), x.container.clone()))
        else {
            return error(StatusCode::NOT_FOUND, "the executor is not running here");
        };
        let mut executor_info: Value = info
            .as_deref()
            .and_then(|i| serde_json::from_str(i).ok())
            .unwrap_or_else(|| json!({}));
        executor_info["executor_id"] = json!({ "value": key.1.as_str() });
        executor_info["framework_id"] = json!({ "value": key.0.as_str() });
        let agent_id = self.agent_id().map(|a| a.to_string()).unwrap_or_default();
        let subscribed = record(&json!({"type": "SUBSCRIBED", "subscribed": {
            "executor_info": executor_info,
            "framework_info": {"id": {"value": key.0.as_str()}, "name": "", "user": self.config.task_user},
            "agent_info": {"id": {"value": agent_id}, "hostname": self.info.hostname,
                           "port": self.config.listen.port(), "resources": []},
            "container_id": {"value": container.as_str()}}}));
        // The tasks it holds; the rest of its tasks that it never reported
        // on (a stream that broke, an agent restart) are handed over again,
        // and kills it may have missed are sent again.
        let has: BTreeSet<&str> = sub
            .unacknowledged_tasks
            .iter()
            .filter_map(|t| t["task_id"]["value"].as_str())
            .collect();
        {
            let mut map = self.lock_executors();
            let Some(x) = map.get_mut(key).filter(|x| x.container == container) else {
                return error(StatusCode::NOT_FOUND, "the executor is not running here");
            };
            if x.phase == Phase::ShuttingDown {
                let _ = tx.send(record(&json!({"type": "SHUTDOWN"})));
                drop(map);
                return stream(rx);
            }
            // SUBSCRIBED goes first, before anything else can be sent.
            let _ = tx.send(subscribed);
            x.phase = Phase::Subscribed;
            x.events = Some(tx.clone());
            x.subscriptions += 1;
            let tasks = self.lock_tasks();
            for id in &x.tasks {
                let Some(t) = tasks.get(id).filter(|t| !t.state.is_terminal()) else {
                    continue;
                };
                let unsent = t.state == TaskState::Staging
                    && !has.contains(id.as_str())
                    && !x.queued.contains(id);
                if unsent && !t.kill_requested() {
                    x.queued.push(id.clone());
                } else if !unsent && t.kill_requested() {
                    let _ = tx.send(kill_event(id, t.spec.kill_grace_ms()));
                }
            }
        }
        tracing::info!(executor = %key.1, framework = %key.0, "executor subscribed");
        // Updates it sent before a reconnection and never saw acknowledged.
        for u in sub.unacknowledged_updates {
            if let Some(s) = u.status
                && let Err(why) = self.executor_update(key, &s)
            {
                tracing::info!(executor = %key.1, %why, "an unacknowledged update from a re-subscribing executor was refused");
            }
        }
        self.hand_over(key);
        let beat = tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                if beat.send(record(&json!({"type": "HEARTBEAT"}))).is_err() {
                    return;
                }
            }
        });
        // When the stream goes (the executor's connection closed), it has
        // REGISTRATION_TIMEOUT to subscribe again.
        let me = self.clone();
        let k = key.clone();
        tokio::spawn(async move {
            tx.closed().await;
            let gone = {
                let mut map = me.lock_executors();
                match map.get_mut(&k) {
                    Some(x)
                        if x.container == container
                            && x.events.as_ref().is_some_and(|e| e.same_channel(&tx)) =>
                    {
                        x.events = None;
                        x.phase = Phase::Starting;
                        true
                    }
                    _ => false,
                }
            };
            if gone {
                tracing::info!(executor = %k.1, framework = %k.0, "the executor's connection closed; waiting for it to subscribe again");
                me.registration_deadline(&k, &container);
            }
        });
        stream(rx)
    }

    /// An executor's status update: checked, then sent on to the master
    /// like the agent's own (and retried until acknowledged).
    fn executor_update(self: &Arc<Self>, key: &Key, s: &Value) -> Result<(), String> {
        let task_id = s["task_id"]["value"]
            .as_str()
            .ok_or("status.task_id is required")
            .and_then(|t| {
                TaskId::new(t.to_string()).map_err(|_| "status.task_id is not a valid id")
            })?;
        let uuid = s["uuid"]
            .as_str()
            .ok_or("status.uuid is required")
            .and_then(|u| {
                base64::engine::general_purpose::STANDARD
                    .decode(u)
                    .map_err(|_| "status.uuid is not base64")
            })
            .and_then(|b| Uuid::from_slice(&b).map_err(|_| "status.uuid must be 16 bytes"))?;
        if s["source"].as_str().is_some_and(|x| x != "SOURCE_EXECUTOR") {
            return Err("status.source must be SOURCE_EXECUTOR".into());
        }
        if let Some(e) = s["executor_id"]["value"].as_str()
            && e != key.1.as_str()
        {
            return Err("status.executor_id is not this executor".into());
        }
        let state: TaskState = serde_json::from_value(s["state"].clone())
            .map_err(|_| "status.state is not a task state")?;
        if state == TaskState::Staging {
            return Err("an executor cannot send TASK_STAGING".into());
        }
        {
            let tasks = self.lock_tasks();
            let Some(t) = tasks.get(&task_id) else {
                // Long over (its end acknowledged and forgotten): taken and
                // dropped, as Mesos does.
                tracing::info!(task = %task_id, executor = %key.1, "an update for a task this agent no longer tracks was dropped");
                return Ok(());
            };
            let mine = t
                .spec
                .executor
                .as_ref()
                .is_some_and(|e| e.executor_id == key.1)
                && t.framework_id == key.0;
            if !mine {
                return Err(format!("task {task_id} is not this executor's"));
            }
            if t.state.is_terminal() {
                // Already ended (a retry, or the agent ended it first):
                // acknowledged, so that the executor stops sending it.
                let tx = self
                    .lock_executors()
                    .get(key)
                    .and_then(|x| x.events.clone());
                if let Some(tx) = tx {
                    let _ = tx.send(record(&json!({"type": "ACKNOWLEDGED", "acknowledged": {
                        "task_id": {"value": task_id.as_str()}, "uuid": b64(uuid.as_bytes())}})));
                }
                return Ok(());
            }
        }
        let data = match s["data"].as_str() {
            None => None,
            Some(d) if d.len() > wasmos_core::task::MAX_STATUS_DATA => {
                return Err(format!(
                    "status.data is over {} bytes (base64); keep bulky results in the sandbox",
                    wasmos_core::task::MAX_STATUS_DATA
                ));
            }
            Some(d) if base64::engine::general_purpose::STANDARD.decode(d).is_err() => {
                return Err("status.data must be base64".into());
            }
            Some(d) => Some(d.to_string()),
        };
        let reason = s
            .get("reason")
            .and_then(|r| serde_json::from_value::<Reason>(r.clone()).ok());
        let status = TaskStatus {
            task_id: task_id.clone(),
            state,
            agent_id: self.agent_id(),
            source: Source::Executor,
            reason,
            message: s["message"]
                .as_str()
                .map(|m| m.chars().take(4096).collect()),
            exit_code: None,
            signal: None,
            healthy: s["healthy"].as_bool(),
            ready: None,
            timestamp: s["timestamp"].as_f64().unwrap_or_else(now),
            uuid,
            data,
            executor_id: Some(key.1.clone()),
        };
        if state.is_terminal() {
            self.finish_task(&key.0, status);
        } else {
            self.set_task_state(&task_id, state);
            self.queue_update(&key.0, status);
        }
        self.checkpoint_executor(key);
        Ok(())
    }
}

fn stream(rx: mpsc::UnboundedReceiver<Bytes>) -> Response {
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::convert::Infallible>(b), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The inode of the client socket of a loopback connection from `peer`
/// to `local`, from `/proc/net/tcp` (and `tcp6`).
fn peer_inode(peer: SocketAddr, local: SocketAddr) -> Option<u64> {
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            // Inode 0: a socket in TIME_WAIT, owned by no one.
            if proc_addr(f[1]) == Some(peer) && proc_addr(f[2]) == Some(local) && f[9] != "0" {
                return f[9].parse().ok();
            }
        }
    }
    None
}

/// `0100007F:1F90` (or its IPv6 form) as an address.
fn proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip: std::net::IpAddr = match ip.len() {
        // The kernel prints the address's bytes as one host-order word.
        8 => std::net::Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.to_ne_bytes()).into(),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok()?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            let v6 = std::net::Ipv6Addr::from(bytes);
            match v6.to_ipv4_mapped() {
                Some(v4) => v4.into(),
                None => v6.into(),
            }
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The process holding socket `inode` open.
fn socket_owner(inode: u64) -> Option<u32> {
    let want = format!("socket:[{inode}]");
    for p in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

/// Whether `pid` runs in the container whose first process is `root`:
/// the same cgroup when the container has its own, else a descendant.
fn same_container(pid: u32, root: u32) -> bool {
    let cgroup = |p: u32| std::fs::read_to_string(format!("/proc/{p}/cgroup")).ok();
    let mine = cgroup(std::process::id());
    let theirs = cgroup(root);
    if theirs.is_some() && theirs != mine {
        return cgroup(pid) == theirs;
    }
    // No cgroup of its own (plain processes): follow the parents.
    let mut at = pid;
    for _ in 0..64 {
        if at == root {
            return true;
        }
        let Some(parent) = std::fs::read_to_string(format!("/proc/{at}/stat"))
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1;
                rest.split_whitespace().nth(1)?.parse::<u32>().ok()
            })
        else {
            return false;
        };
        if parent <= 1 {
            return false;
        }
        at = parent;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses_read_as_socket_addresses() {
        assert_eq!(
            proc_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            proc_addr("0000000000000000FFFF00000100007F:0050"),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(proc_addr("nonsense"), None);
    }

    #[test]
    fn a_loopback_connection_is_traced_to_the_process_that_opened_it() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = server.local_addr().unwrap();
        let client = std::net::TcpStream::connect(local).unwrap();
        let (_conn, peer) = server.accept().unwrap();
        let inode = peer_inode(peer, local).expect("the client socket is listed");
        assert_eq!(socket_owner(inode), Some(std::process::id()));
        assert!(same_container(std::process::id(), std::process::id()));
        drop(client);
    }

    #[test]
    fn wait_statuses_follow_waitpid() {
        let exit = |code, signal| ExitInfo {
            code,
            signal,
            limitation: None,
        };
        assert_eq!(wait_status(&exit(Some(1), None)), 256);
        assert_eq!(wait_status(&exit(None, Some(9))), 9);
        assert_eq!(wait_status(&exit(Some(0), None)), 0);
    }
}
