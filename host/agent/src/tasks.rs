//! Running tasks: launch, watch, kill, and the status updates each step
//! makes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use uuid::Uuid;
use wasmos_core::protocol::ReportedTask;
use wasmos_core::{
    ExecutorKind, FrameworkId, Reason, Source, TaskId, TaskSpec, TaskState, TaskStatus,
};

use crate::Agent;
use crate::containerizer::{ContainerSpec, ExitInfo, LaunchError, Launched, Limitation, Signaller};
use crate::native::{Network, Recovered, TaskRecord};

/// The label that gives a task its own network namespace (`none`: only
/// loopback) instead of the host's (`host`, the default).
pub const NETWORK_LABEL: &str = "wasmos.network";

fn network_of(spec: &TaskSpec) -> Result<Network, String> {
    match spec.labels.get(NETWORK_LABEL).map(String::as_str) {
        None | Some("host") => Ok(Network::Host),
        Some("none") => Ok(Network::None),
        Some(other) => Err(format!(
            "label {NETWORK_LABEL} must be \"host\" or \"none\", not {other:?}"
        )),
    }
}

/// A task this agent knows.
pub(crate) struct TaskEntry {
    pub framework_id: FrameworkId,
    pub spec: TaskSpec,
    pub state: TaskState,
    pub pid: Option<u32>,
    signal: Option<Signaller>,
    /// Runs commands in the task's context (COMMAND health checks).
    pub exec: Option<crate::containerizer::Executor>,
    kill_requested: bool,
    /// Why the agent itself killed the task (failed health checks, a
    /// limit exceeded).
    kill_reason: Option<KillCause>,
    /// The latest update queued for it (an executor's tasks are
    /// checkpointed with it).
    pub last_status: Option<TaskStatus>,
}

/// Why the agent itself killed a task; the final status says so.
#[derive(Debug, Clone)]
pub(crate) enum KillCause {
    /// Failed health checks: TASK_KILLED, unhealthy.
    Unhealthy(String),
    /// Over its disk limit: TASK_FAILED with the disk limitation.
    Disk(String),
}

impl TaskEntry {
    pub(crate) fn kill_requested(&self) -> bool {
        self.kill_requested
    }

    /// A task of an executor a restarted agent took back.
    pub(crate) fn recovered(
        framework_id: FrameworkId,
        spec: TaskSpec,
        state: TaskState,
        last_status: Option<TaskStatus>,
    ) -> Self {
        TaskEntry {
            framework_id,
            spec,
            state,
            pid: None,
            signal: None,
            exec: None,
            kill_requested: false,
            kill_reason: None,
            last_status,
        }
    }
}

/// Why a kill could not be done.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KillError {
    /// The task never arrived here (it is now barred from arriving).
    Unknown,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Agent {
    pub(crate) fn lock_tasks(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<TaskId, TaskEntry>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tasks to report when registering: every task not yet forgotten.
    pub(crate) fn report(&self) -> Vec<ReportedTask> {
        self.lock_tasks()
            .iter()
            .map(|(id, t)| ReportedTask {
                task_id: id.clone(),
                framework_id: t.framework_id.clone(),
                state: t.state,
            })
            .collect()
    }

    pub(crate) fn status_of(&self, task_id: &TaskId, state: TaskState) -> TaskStatus {
        TaskStatus {
            task_id: task_id.clone(),
            state,
            agent_id: self.agent_id(),
            source: Source::Agent,
            reason: None,
            message: None,
            exit_code: None,
            signal: None,
            healthy: None,
            ready: None,
            timestamp: now(),
            uuid: Uuid::new_v4(),
            data: None,
            executor_id: None,
        }
    }

    pub(crate) fn set_task_state(&self, task_id: &TaskId, state: TaskState) {
        if let Some(t) = self.lock_tasks().get_mut(task_id) {
            t.state = state;
        }
    }

    /// Launches a task unless it is known (a retried launch) or barred.
    pub(crate) fn launch(self: &Arc<Self>, framework_id: FrameworkId, spec: TaskSpec) {
        let id = spec.task_id.clone();
        if self.is_tombstoned(&id) {
            tracing::info!(task = %id, "launch of an ended or killed task ignored");
            return;
        }
        let custom = spec
            .executor
            .as_ref()
            .is_some_and(|e| e.kind == ExecutorKind::Custom);
        {
            let mut tasks = self.lock_tasks();
            if tasks.contains_key(&id) {
                return;
            }
            tasks.insert(
                id.clone(),
                TaskEntry {
                    framework_id: framework_id.clone(),
                    spec: spec.clone(),
                    // Its executor says when it starts.
                    state: if custom {
                        TaskState::Staging
                    } else {
                        TaskState::Starting
                    },
                    pid: None,
                    signal: None,
                    exec: None,
                    kill_requested: false,
                    kill_reason: None,
                    last_status: None,
                },
            );
        }
        if custom {
            self.launch_to_executor(framework_id, spec);
            return;
        }
        self.queue_update(&framework_id, self.status_of(&id, TaskState::Starting));
        let me = self.clone();
        tokio::spawn(async move { me.run(framework_id, spec).await });
    }

    async fn run(self: Arc<Self>, framework_id: FrameworkId, spec: TaskSpec) {
        let id = spec.task_id.clone();
        let sandbox = self.sandbox_root().join(id.as_str());
        let launched = match std::fs::create_dir_all(&sandbox) {
            Ok(()) => {
                let mut c = self.container_spec(&framework_id, &spec, sandbox.clone());
                let containerizer = self.containerizer_for(&spec);
                let checked = containerizer.clone().and_then(|(cz, checkpointed)| {
                    if cz.name() != "docker" {
                        let n = network_of(&spec)?;
                        c.network = n;
                        if n != Network::Host && self.native.is_none() {
                            return Err(format!(
                                "label {NETWORK_LABEL} needs the native containerizer (run the agent as root)"
                            ));
                        }
                    }
                    if checkpointed {
                        self.checkpoint_task(&TaskRecord {
                            framework_id: framework_id.clone(),
                            spec: spec.clone(),
                            gpus: Vec::new(),
                        })?;
                    }
                    Ok(())
                });
                let prepared = checked
                    .and_then(|()| self.prepare_volumes(&spec))
                    .and_then(|()| self.host_volumes(&spec, &sandbox));
                let fetched = match prepared {
                    Err(why) => Err(why),
                    Ok(binds) => {
                        c.volumes.extend(binds);
                        crate::fetch::fetch_all(&spec, &sandbox, &self.config.fetch_allow).await
                    }
                };
                match fetched {
                    Err(why) => Err(LaunchError::Other(why)),
                    Ok(()) => match self.isolate(&framework_id, &spec, &c.env).await {
                        Ok(iso) => {
                            c.env.retain(|(k, _)| !iso.env.contains_key(k));
                            c.env.extend(iso.env);
                            c.rlimits = iso.rlimits;
                            c.cgroup = iso.cgroup;
                            let gpus = match spec.resources.gpus {
                                0 => Ok(()),
                                n => self.gpus.take(&id, n).and_then(|idx| {
                                    let list: Vec<String> =
                                        idx.iter().map(u32::to_string).collect();
                                    for k in ["CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"] {
                                        c.env.push((k.into(), list.join(",")));
                                    }
                                    // Recorded, so that a restarted agent
                                    // knows they are taken.
                                    if matches!(containerizer, Ok((_, true))) {
                                        self.checkpoint_task(&TaskRecord {
                                            framework_id: framework_id.clone(),
                                            spec: spec.clone(),
                                            gpus: idx,
                                        })?;
                                    }
                                    Ok(())
                                }),
                            };
                            match containerizer.and_then(|cz| gpus.map(|()| cz)) {
                                Ok((cz, _)) => cz.launch(c).await,
                                Err(why) => Err(LaunchError::Other(why)),
                            }
                        }
                        Err(why) => Err(LaunchError::Other(why)),
                    },
                }
            }
            Err(e) => Err(LaunchError::Other(format!(
                "cannot create sandbox {}: {e}",
                sandbox.display()
            ))),
        };
        let launched = match launched {
            Ok(l) => l,
            Err(e) => {
                tracing::info!(task = %id, error = %e, "task failed to start");
                let mut s = self.status_of(&id, TaskState::Failed);
                s.message = Some(e.to_string());
                s.reason = Some(Reason::ReasonContainerLaunchFailed);
                s.exit_code = e.exit_code();
                self.finish_task(&framework_id, s);
                self.cleanup_isolators(id.as_str()).await;
                return;
            }
        };
        self.watch(framework_id, spec, launched, true).await;
    }

    /// Takes the tasks found in the checkpoints at start: live ones are
    /// watched again (not restarted), ended ones reported with how they
    /// ended.
    pub(crate) fn adopt(self: &Arc<Self>, found: Vec<Recovered>) {
        for r in found {
            let TaskRecord {
                framework_id,
                spec,
                gpus,
            } = r.record;
            let id = spec.task_id.clone();
            if spec.labels.contains_key(crate::executors::CONTAINER_LABEL) {
                let dir = self.checkpoint_dir().join(id.as_str());
                match crate::native::read_json(&dir.join("executor.json")) {
                    Some(rec) => self.recover_executor(id, rec, r.running),
                    None => {
                        // Started but never recorded: nothing to go back to.
                        if let Some(l) = r.running {
                            tracing::info!(container = %id, "ending an executor the agent knows nothing of");
                            let _ = (l.signal)(Signal::SIGKILL);
                        }
                        let _ = std::fs::remove_dir_all(dir);
                    }
                }
                continue;
            }
            self.lock_tasks().insert(
                id.clone(),
                TaskEntry {
                    framework_id: framework_id.clone(),
                    spec: spec.clone(),
                    state: TaskState::Running,
                    pid: None,
                    signal: None,
                    exec: None,
                    kill_requested: false,
                    kill_reason: None,
                    last_status: None,
                },
            );
            match (r.running, r.ended) {
                (Some(launched), _) => {
                    tracing::info!(task = %id, pid = launched.pid, "reattached to a running task");
                    if !gpus.is_empty() {
                        let lost = self.gpus.hold(&id, &gpus);
                        if !lost.is_empty() {
                            tracing::warn!(task = %id, gpus = ?lost, "the task holds GPUs this agent no longer has or already gave out");
                        }
                    }
                    let me = self.clone();
                    tokio::spawn(
                        async move { me.watch(framework_id, spec, launched, false).await },
                    );
                }
                (None, Some(exit)) => {
                    let status = self.exit_status(&id, &exit, false);
                    tracing::info!(task = %id, state = %status.state, "a task ended while the agent was away");
                    self.finish_task(&framework_id, status);
                }
                (None, None) => {}
            }
        }
    }

    /// Watches a started task until it ends, then reports how.
    /// `announce`: report it RUNNING (not for a reattached task).
    async fn watch(
        self: Arc<Self>,
        framework_id: FrameworkId,
        spec: TaskSpec,
        launched: Launched,
        announce: bool,
    ) {
        let id = spec.task_id.clone();
        let kill_now = {
            let mut tasks = self.lock_tasks();
            match tasks.get_mut(&id) {
                Some(t) => {
                    t.pid = Some(launched.pid);
                    t.signal = Some(launched.signal.clone());
                    t.exec = launched.exec.clone();
                    t.state = TaskState::Running;
                    t.kill_requested
                }
                None => true,
            }
        };
        if announce {
            tracing::info!(task = %id, pid = launched.pid, "task running");
            self.queue_update(&framework_id, self.status_of(&id, TaskState::Running));
        }
        self.start_health_checks(framework_id.clone(), &spec);
        if kill_now {
            let me = self.clone();
            let grace = spec.kill_grace_ms();
            let tid = id.clone();
            tokio::spawn(async move {
                let _ = me.kill(&tid, grace);
            });
        }
        let exit = launched.exit.await;
        let (killed, reason) = self
            .lock_tasks()
            .get(&id)
            .map(|t| (t.kill_requested, t.kill_reason.clone()))
            .unwrap_or((false, None));
        let mut status = self.exit_status(&id, &exit, killed);
        match reason {
            Some(KillCause::Unhealthy(why)) => {
                status.message = Some(why);
                status.healthy = Some(false);
                status.reason = Some(Reason::ReasonTaskHealthCheckStatusUpdated);
            }
            Some(KillCause::Disk(why)) => {
                status.state = TaskState::Failed;
                status.message = Some(why);
                status.reason = Some(Reason::ReasonContainerLimitationDisk);
            }
            None => {}
        }
        tracing::info!(task = %id, state = %status.state, code = ?exit.code, signal = ?exit.signal, "task ended");
        self.finish_task(&framework_id, status);
        self.cleanup_isolators(id.as_str()).await;
    }

    fn exit_status(&self, id: &TaskId, exit: &ExitInfo, killed: bool) -> TaskStatus {
        let mb = |b: u64| b.div_ceil(1 << 20);
        match &exit.limitation {
            Some(Limitation::Memory {
                limit_bytes,
                peak_bytes,
            }) => {
                let mut s = self.status_of(id, TaskState::Failed);
                let limit = limit_bytes.map(|l| format!(" of {} MB", mb(l.max(0) as u64)));
                let peak = peak_bytes.map(|p| format!(" (peak use {} MB)", mb(p)));
                s.message = Some(format!(
                    "memory limit{} exceeded{}: the kernel's OOM killer ended the task",
                    limit.unwrap_or_default(),
                    peak.unwrap_or_default()
                ));
                s.reason = Some(Reason::ReasonContainerLimitationMemory);
                s.exit_code = exit.code;
                s.signal = exit.signal;
                return s;
            }
            Some(Limitation::Lost(why)) => {
                let mut s = self.status_of(id, TaskState::Failed);
                s.message = Some(why.clone());
                s.reason = Some(Reason::ReasonExecutorTerminated);
                return s;
            }
            Some(Limitation::Gone(why)) => {
                let mut s = self.status_of(id, TaskState::Gone);
                s.message = Some(why.clone());
                s.reason = Some(Reason::ReasonAgentRestarted);
                return s;
            }
            None => {}
        }
        let (state, message) = match (killed, exit.code, exit.signal) {
            (true, _, Some(sig)) => (
                TaskState::Killed,
                format!("killed by request ({})", signal_name(sig)),
            ),
            (true, code, _) => (
                TaskState::Killed,
                format!(
                    "killed by request; exited with status {}",
                    code.unwrap_or(-1)
                ),
            ),
            (false, Some(0), _) => (
                TaskState::Finished,
                "command exited with status 0".to_string(),
            ),
            (false, Some(code), _) => (
                TaskState::Failed,
                format!("command exited with status {code}"),
            ),
            (false, None, Some(sig)) => (
                TaskState::Failed,
                format!("command terminated by signal {}", signal_name(sig)),
            ),
            (false, None, None) => (TaskState::Failed, "the task's process was lost".to_string()),
        };
        let mut s = self.status_of(id, state);
        s.message = Some(message);
        s.exit_code = exit.code;
        s.signal = exit.signal;
        s
    }

    /// Records a terminal status: bars the id from launching again and
    /// queues the update.
    pub(crate) fn finish(&self, framework_id: &FrameworkId, status: TaskStatus) {
        self.gpus.release(&status.task_id);
        self.set_task_state(&status.task_id, status.state);
        if let Some(t) = self.lock_tasks().get_mut(&status.task_id) {
            t.signal = None;
            t.exec = None;
        }
        self.tombstone(&status.task_id);
        self.queue_update(framework_id, status);
    }

    pub(crate) fn container_spec(
        &self,
        framework_id: &FrameworkId,
        spec: &TaskSpec,
        sandbox: PathBuf,
    ) -> ContainerSpec {
        let (program, argv) = spec.command.argv();
        let sandbox_s = sandbox.display().to_string();
        let ports: Vec<u16> = crate::resources::task_ports(&spec.resources.ports);
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), DEFAULT_PATH.into()),
            ("HOME".into(), sandbox_s.clone()),
            ("HOST".into(), self.info.hostname.clone()),
            ("WASMOS_SANDBOX".into(), sandbox_s.clone()),
            ("MESOS_SANDBOX".into(), sandbox_s),
            ("WASMOS_TASK_ID".into(), spec.task_id.to_string()),
            ("MESOS_TASK_ID".into(), spec.task_id.to_string()),
            ("WASMOS_FRAMEWORK_ID".into(), framework_id.to_string()),
        ];
        if let Some(a) = self.agent_id() {
            env.push(("WASMOS_AGENT_ID".into(), a.to_string()));
        }
        for (i, p) in ports.iter().enumerate() {
            env.push((format!("PORT{i}"), p.to_string()));
        }
        if let Some(p) = ports.first() {
            env.push(("PORT".into(), p.to_string()));
        }
        if !ports.is_empty() {
            let list: Vec<String> = ports.iter().map(u16::to_string).collect();
            env.push(("PORTS".into(), list.join(",")));
        }
        // The task's own environment wins.
        env.retain(|(k, _)| !spec.command.env.contains_key(k));
        env.extend(spec.command.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        ContainerSpec {
            task_id: spec.task_id.clone(),
            framework_id: framework_id.to_string(),
            sandbox,
            program,
            argv,
            env,
            user: spec.command.user.clone(),
            resources: spec.resources.clone(),
            rlimits: Vec::new(),
            cgroup: Default::default(),
            network: Network::Host,
            container: spec.container.clone(),
            volumes: spec
                .volumes
                .iter()
                .map(|m| crate::containerizer::VolumeBind {
                    host: self.volume_dir(m),
                    container_path: m.container_path.clone(),
                    read_only: m.read_only,
                })
                .collect(),
        }
    }

    /// Where a persistent volume's data lives on this agent.
    fn volume_dir(&self, m: &wasmos_core::VolumeMount) -> PathBuf {
        self.config
            .data_dir
            .join(wasmos_core::reservation::volume_dir(&m.role, &m.dir_name()))
    }

    /// Makes the task's persistent volumes' directories (on first use:
    /// owned by the task's user).
    fn prepare_volumes(&self, spec: &TaskSpec) -> Result<(), String> {
        for m in &spec.volumes {
            let dir = self.volume_dir(m);
            if dir.is_dir() {
                continue;
            }
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot make volume {} at {}: {e}", m.id, dir.display()))?;
            if let Some(user) = &spec.command.user
                && let Ok(Some(u)) = nix::unistd::User::from_name(user)
            {
                nix::unistd::chown(&dir, Some(u.uid), Some(u.gid))
                    .map_err(|e| format!("cannot give volume {} to {user}: {e}", m.id))?;
            }
        }
        Ok(())
    }

    /// The task's host volumes as binds, each checked against the agent's
    /// `--host-volumes` directories (after symbolic links are resolved). A
    /// Docker task's relative host path is a directory of its sandbox, or
    /// the directory of its persistent volume mounted at that path.
    fn host_volumes(
        &self,
        spec: &TaskSpec,
        sandbox: &std::path::Path,
    ) -> Result<Vec<crate::containerizer::VolumeBind>, String> {
        let docker = spec.container.is_some();
        let mut binds = Vec::new();
        for v in &spec.host_volumes {
            let host = if v.host_path.starts_with('/') {
                let real = std::fs::canonicalize(&v.host_path).map_err(|e| {
                    format!(
                        "host volume {}: {e}; make it on the agent first",
                        v.host_path
                    )
                })?;
                let allowed = self
                    .config
                    .host_volumes
                    .iter()
                    .any(|dir| std::fs::canonicalize(dir).is_ok_and(|d| real.starts_with(d)));
                if !allowed {
                    return Err(if self.config.host_volumes.is_empty() {
                        format!(
                            "host volume {}: this agent allows no host volumes; start it with --host-volumes DIR to let tasks mount directories beneath DIR",
                            v.host_path
                        )
                    } else {
                        let dirs: Vec<String> = self
                            .config
                            .host_volumes
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect();
                        format!(
                            "host volume {} is not beneath a directory this agent allows host volumes from ({})",
                            v.host_path,
                            dirs.join(", ")
                        )
                    });
                }
                if !docker && !real.is_dir() {
                    return Err(format!(
                        "host volume {} is not a directory (a task on the host mounts directories)",
                        v.host_path
                    ));
                }
                real
            } else if let Some(m) = spec
                .volumes
                .iter()
                .find(|m| m.container_path == v.host_path)
            {
                self.volume_dir(m)
            } else {
                let dir = crate::containerizer::volume_target(sandbox, &v.host_path, true)
                    .map_err(|e| format!("host volume {}: {e}", v.host_path))?;
                if let Some(user) = &spec.command.user
                    && let Ok(Some(u)) = nix::unistd::User::from_name(user)
                {
                    let _ = nix::unistd::chown(&dir, Some(u.uid), Some(u.gid));
                }
                dir
            };
            binds.push(crate::containerizer::VolumeBind {
                host,
                container_path: v.container_path.clone(),
                read_only: v.read_only,
            });
        }
        Ok(binds)
    }

    /// Deletes the data of persistent volumes this agent no longer holds
    /// (`keep`: the directories the master lists), unless a task here uses
    /// them or they changed in the last 10 s (the list may have been read
    /// just before the volume was created).
    pub(crate) fn collect_volumes(&self, keep: &[String]) {
        let root = self.config.data_dir.join("volumes").join("roles");
        let Ok(roles) = std::fs::read_dir(&root) else {
            return;
        };
        let in_use: Vec<String> = self
            .lock_tasks()
            .values()
            .filter(|t| !t.state.is_terminal())
            .flat_map(|t| t.spec.volumes.iter().map(|m| m.dir_name()))
            .collect();
        for role in roles.flatten() {
            let Ok(vols) = std::fs::read_dir(role.path()) else {
                continue;
            };
            for v in vols.flatten() {
                let id = v.file_name().to_string_lossy().to_string();
                let young = v
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_none_or(|age| age < std::time::Duration::from_secs(10));
                if keep.contains(&id) || in_use.contains(&id) || young {
                    continue;
                }
                match std::fs::remove_dir_all(v.path()) {
                    Ok(()) => {
                        tracing::info!(volume = %id, "persistent volume destroyed: its data is deleted")
                    }
                    Err(e) => {
                        tracing::warn!(volume = %id, error = %e, "cannot delete a destroyed volume's data")
                    }
                }
            }
        }
    }

    /// Kills a task: SIGTERM to its process group, SIGKILL after the grace
    /// period. An unknown task is barred from launching later.
    pub(crate) fn kill(self: &Arc<Self>, id: &TaskId, grace_ms: u64) -> Result<(), KillError> {
        self.kill_reporting(id, grace_ms, false)
    }

    /// [`Self::kill`]; with `killing`, a running task is first reported
    /// TASK_KILLING (load balancers and DNS drop it before it stops).
    pub(crate) fn kill_reporting(
        self: &Arc<Self>,
        id: &TaskId,
        grace_ms: u64,
        killing: bool,
    ) -> Result<(), KillError> {
        let mut report_killing = None;
        let signal = {
            let mut tasks = self.lock_tasks();
            let Some(t) = tasks.get_mut(id) else {
                drop(tasks);
                self.tombstone(id);
                return Err(KillError::Unknown);
            };
            if t.state.is_terminal() {
                return Ok(());
            }
            t.kill_requested = true;
            if let Some(e) = t
                .spec
                .executor
                .as_ref()
                .filter(|e| e.kind == ExecutorKind::Custom)
            {
                let key = (t.framework_id.clone(), e.executor_id.clone());
                drop(tasks);
                self.kill_executor_task(id, &key, grace_ms);
                return Ok(());
            }
            if killing && t.signal.is_some() && t.state == TaskState::Running {
                t.state = TaskState::Killing;
                report_killing = Some(t.framework_id.clone());
            }
            t.signal.clone()
        };
        if let Some(framework_id) = report_killing {
            self.queue_update(&framework_id, self.status_of(id, TaskState::Killing));
        }
        // Not started yet: `run` sees kill_requested once it has a process.
        let Some(signal) = signal else { return Ok(()) };
        tracing::info!(task = %id, grace_ms, "killing task");
        if let Err(e) = signal(Signal::SIGTERM) {
            tracing::debug!(task = %id, error = %e, "SIGTERM");
        }
        let me = self.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(grace_ms);
            loop {
                let alive = me
                    .lock_tasks()
                    .get(&id)
                    .is_some_and(|t| !t.state.is_terminal());
                if !alive {
                    return;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::info!(task = %id, "grace period over; SIGKILL");
                    let _ = signal(Signal::SIGKILL);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Ok(())
    }

    /// Kills a task for a reason of the agent's own, which its final
    /// status will carry.
    pub(crate) fn kill_because(
        self: &Arc<Self>,
        id: &TaskId,
        grace_ms: u64,
        why: KillCause,
    ) -> Result<(), KillError> {
        if let Some(t) = self.lock_tasks().get_mut(id) {
            t.kill_reason = Some(why);
        }
        self.kill(id, grace_ms)
    }

    /// Kills every live task and waits (bounded by the longest grace
    /// period) for them to end.
    pub(crate) async fn kill_all(self: &Arc<Self>, why: &str) {
        let live: Vec<(TaskId, u64)> = self
            .lock_tasks()
            .iter()
            .filter(|(_, t)| !t.state.is_terminal())
            .map(|(id, t)| (id.clone(), t.spec.kill_grace_ms()))
            .collect();
        let executors = self.executor_keys();
        for key in &executors {
            self.shutdown_executor(key, true);
        }
        if !executors.is_empty() {
            // Their SIGKILL timers die with the agent: wait them out.
            let longest = self.longest_executor_grace();
            let deadline = tokio::time::Instant::now() + longest + Duration::from_secs(2);
            while !self.executor_keys().is_empty() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if live.is_empty() {
            return;
        }
        tracing::info!(count = live.len(), why, "killing tasks");
        let longest = live.iter().map(|(_, g)| *g).max().unwrap_or(0);
        for (id, grace) in &live {
            let _ = self.kill(id, *grace);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(longest + 2000);
        while tokio::time::Instant::now() < deadline {
            let any_alive = live.iter().any(|(id, _)| {
                self.lock_tasks()
                    .get(id)
                    .is_some_and(|t| !t.state.is_terminal())
            });
            if !any_alive {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Forgets a task once its terminal update is acknowledged: its
    /// checkpoint, and its container under Docker.
    pub(crate) fn forget_if_done(&self, id: &TaskId) {
        let mut tasks = self.lock_tasks();
        if tasks.get(id).is_some_and(|t| t.state.is_terminal()) {
            tasks.remove(id);
            drop(tasks);
            match &self.docker {
                Some(d) if d.owns(id.as_str()) => {
                    let d = d.clone();
                    let id = id.clone();
                    tokio::spawn(async move { d.forget(id.as_str()).await });
                }
                _ => {
                    let _ = std::fs::remove_dir_all(self.checkpoint_dir().join(id.as_str()));
                }
            }
        }
    }

    /// The containerizer that runs `spec`, and whether the task is
    /// checkpointed (it outlives the agent).
    fn containerizer_for(
        &self,
        spec: &TaskSpec,
    ) -> Result<(Arc<dyn crate::containerizer::Containerizer>, bool), String> {
        if let Some(c) = &spec.container {
            let Some(d) = c.docker() else {
                return Err("this agent runs only Docker containers".into());
            };
            return match &self.docker {
                Some(docker) => Ok((docker.clone(), true)),
                None => Err(format!(
                    "task asks for docker image {} but this agent has no Docker engine; start the agent with --docker on (and a reachable --docker-socket)",
                    d.image
                )),
            };
        }
        Ok((self.containerizer.clone(), self.native.is_some()))
    }

    /// Records the task before it is launched, so that recovery knows it.
    pub(crate) fn checkpoint_task(&self, record: &TaskRecord) -> Result<(), String> {
        let dir = self.checkpoint_dir().join(record.spec.task_id.as_str());
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        crate::native::write_json_atomic(&dir.join("task.json"), record)
    }
}

/// `SIGTERM` for 15, and so on.
pub(crate) fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}
