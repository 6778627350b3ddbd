//! Tasks: what a framework launches ([`TaskSpec`]) and what happens to it
//! ([`TaskStatus`], [`TaskState`]). Names follow Mesos.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{AgentId, TaskId};
use crate::resources::Resources;

/// The default time between SIGTERM and SIGKILL when a task is killed.
pub const DEFAULT_KILL_GRACE_MS: u64 = 3_000;
/// The longest grace period a task may ask for.
pub const MAX_KILL_GRACE_MS: u64 = 10 * 60 * 1000;

/// Mesos' task states, with their Mesos names on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaskState {
    #[serde(rename = "TASK_STAGING")]
    Staging,
    #[serde(rename = "TASK_STARTING")]
    Starting,
    #[serde(rename = "TASK_RUNNING")]
    Running,
    #[serde(rename = "TASK_KILLING")]
    Killing,
    #[serde(rename = "TASK_FINISHED")]
    Finished,
    #[serde(rename = "TASK_FAILED")]
    Failed,
    #[serde(rename = "TASK_KILLED")]
    Killed,
    #[serde(rename = "TASK_ERROR")]
    Error,
    #[serde(rename = "TASK_LOST")]
    Lost,
    #[serde(rename = "TASK_DROPPED")]
    Dropped,
    #[serde(rename = "TASK_UNREACHABLE")]
    Unreachable,
    #[serde(rename = "TASK_GONE")]
    Gone,
    #[serde(rename = "TASK_GONE_BY_OPERATOR")]
    GoneByOperator,
    #[serde(rename = "TASK_UNKNOWN")]
    Unknown,
}

impl TaskState {
    /// Every state, in Mesos' order of a task's life.
    pub const ALL: [TaskState; 14] = [
        TaskState::Staging,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Killing,
        TaskState::Finished,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Error,
        TaskState::Lost,
        TaskState::Dropped,
        TaskState::Unreachable,
        TaskState::Gone,
        TaskState::GoneByOperator,
        TaskState::Unknown,
    ];

    /// Terminal states never change again (Mesos' `isTerminalState`).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Error
                | TaskState::Lost
                | TaskState::Dropped
                | TaskState::Gone
                | TaskState::GoneByOperator
        )
    }

    /// The Mesos name, e.g. `TASK_RUNNING`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Killing => "TASK_KILLING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Error => "TASK_ERROR",
            TaskState::Lost => "TASK_LOST",
            TaskState::Dropped => "TASK_DROPPED",
            TaskState::Unreachable => "TASK_UNREACHABLE",
            TaskState::Gone => "TASK_GONE",
            TaskState::GoneByOperator => "TASK_GONE_BY_OPERATOR",
            TaskState::Unknown => "TASK_UNKNOWN",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who produced a status update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    #[serde(rename = "SOURCE_MASTER")]
    Master,
    #[serde(rename = "SOURCE_AGENT")]
    Agent,
    #[serde(rename = "SOURCE_EXECUTOR")]
    Executor,
}

/// Why a task is in its state (a subset of Mesos' reasons; unknown names
/// from newer peers read as `Other`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    ReasonCommandExecutorFailed,
    ReasonContainerLaunchFailed,
    ReasonContainerLimitation,
    ReasonContainerLimitationMemory,
    ReasonContainerLimitationDisk,
    ReasonExecutorTerminated,
    ReasonAgentRestarted,
    ReasonAgentRemoved,
    ReasonAgentReregistered,
    ReasonAgentDisconnected,
    ReasonAgentUnknown,
    ReasonReconciliation,
    ReasonTaskInvalid,
    ReasonTaskGroupInvalid,
    ReasonExecutorRegistrationTimeout,
    ReasonTaskKilledDuringLaunch,
    ReasonTaskHealthCheckStatusUpdated,
    ReasonTaskCheckStatusUpdated,
    ReasonInvalidOffers,
    ReasonFrameworkRemoved,
    ReasonTaskUnknown,
    ReasonTaskUnauthorized,
    ReasonAgentRemovedByOperator,
    #[serde(other)]
    Other,
}

impl Reason {
    /// The Mesos name, e.g. `REASON_CONTAINER_LAUNCH_FAILED`.
    pub fn as_str(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "REASON_OTHER".into())
    }
}

/// A change in a task's life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub task_id: TaskId,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    pub source: Source,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The exit code of the task's process, when it exited normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended the task's process, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// The readiness check's verdict, when the task has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// Seconds since the Unix epoch, when the update was made.
    pub timestamp: f64,
    /// Identifies this update across retries.
    pub uuid: Uuid,
    /// What an executor attached for its framework (base64, Mesos'
    /// `TaskStatus.data`), at most [`MAX_STATUS_DATA`] bytes of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The executor that sent it (Mesos' `TaskStatus.executor_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_id: Option<crate::ids::ExecutorId>,
}

/// The longest `data` (base64) a status update may carry: it is kept in
/// the task's replicated history.
pub const MAX_STATUS_DATA: usize = 16 * 1024;

/// How a task's process is started (Mesos' CommandInfo).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandSpec {
    /// true: `/bin/sh -c value`. false: exec `value` with `arguments` as argv.
    pub shell: bool,
    pub value: String,
    pub arguments: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub user: Option<String>,
}

impl CommandSpec {
    /// The program and argv to execute.
    pub fn argv(&self) -> (String, Vec<String>) {
        if self.shell {
            (
                "/bin/sh".into(),
                vec!["sh".into(), "-c".into(), self.value.clone()],
            )
        } else if self.arguments.is_empty() {
            (self.value.clone(), vec![self.value.clone()])
        } else {
            (self.value.clone(), self.arguments.clone())
        }
    }

    /// A one-line rendering for listings.
    pub fn display(&self) -> String {
        if self.shell || self.arguments.is_empty() {
            self.value.clone()
        } else {
            self.arguments.join(" ")
        }
    }
}

/// Why a task description is not valid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaskSpecError {
    #[error("task {0}: command is empty")]
    EmptyCommand(TaskId),
    #[error("task {0}: a task needs some cpus or mem")]
    NoResources(TaskId),
    #[error("task {id}: {field} is too long (limit {limit} bytes)")]
    TooLong {
        id: TaskId,
        field: &'static str,
        limit: usize,
    },
    #[error("task {id}: {what}")]
    Invalid { id: TaskId, what: String },
}

/// How the agent checks a task's health (Mesos' HealthCheck, run by a
/// health-check plugin). Defaults are Mesos'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// The health-check plugin, e.g. `health-http`.
    pub plugin: String,
    /// The plugin's parameters, e.g. `path=/health`, `port-index=0`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    #[serde(default = "defaults::delay")]
    pub delay_seconds: f64,
    #[serde(default = "defaults::interval")]
    pub interval_seconds: f64,
    #[serde(default = "defaults::timeout")]
    pub timeout_seconds: f64,
    #[serde(default = "defaults::grace")]
    pub grace_period_seconds: f64,
    #[serde(default = "defaults::failures")]
    pub max_consecutive_failures: u32,
}

mod defaults {
    pub fn delay() -> f64 {
        15.0
    }
    pub fn interval() -> f64 {
        10.0
    }
    pub fn timeout() -> f64 {
        20.0
    }
    pub fn grace() -> f64 {
        10.0
    }
    pub fn failures() -> u32 {
        3
    }
}

impl HealthCheckSpec {
    /// A check with Mesos' default timing.
    pub fn new(plugin: &str) -> Self {
        HealthCheckSpec {
            plugin: plugin.to_string(),
            config: BTreeMap::new(),
            delay_seconds: defaults::delay(),
            interval_seconds: defaults::interval(),
            timeout_seconds: defaults::timeout(),
            grace_period_seconds: defaults::grace(),
            max_consecutive_failures: defaults::failures(),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let day = 86_400.0;
        for (name, v, min) in [
            ("delay_seconds", self.delay_seconds, 0.0),
            ("interval_seconds", self.interval_seconds, 0.1),
            ("timeout_seconds", self.timeout_seconds, 0.1),
            ("grace_period_seconds", self.grace_period_seconds, 0.0),
        ] {
            if !v.is_finite() || v < min || v > day {
                return Err(format!(
                    "health check {name} must be between {min} and {day}, got {v}"
                ));
            }
        }
        if self.plugin.is_empty() || self.plugin.len() > 64 {
            return Err("health check plugin must be named".into());
        }
        Ok(())
    }
}

/// A task as a framework launches it (Mesos' TaskInfo, trimmed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub task_id: TaskId,
    pub name: String,
    pub resources: Resources,
    pub command: CommandSpec,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_grace_period_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
    /// A container image to run in (Docker), instead of the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<crate::container::ContainerInfo>,
    /// Files fetched into the sandbox before the task starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fetch: Vec<FetchUri>,
    /// Decides when the task is ready; never kills it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_check: Option<HealthCheckSpec>,
    /// The part of `resources` taken from reservations, by role (the rest
    /// is unreserved).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reserved: crate::reservation::RoleResources,
    /// Persistent volumes mounted into the sandbox (their disk is the
    /// volume's, not in `resources`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::reservation::VolumeMount>,
    /// The executor that runs the task; `None`: the agent runs its
    /// command (Mesos' command executor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<ExecutorSpec>,
    /// The task group it was launched in (LAUNCH_GROUP): its first task's
    /// id. The default executor ends a group together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<TaskId>,
    /// The Mesos TaskInfo as its framework gave it (JSON), handed to a
    /// custom executor in its LAUNCH event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_info: Option<String>,
    /// Whose resources the task may take from its offers (Marathon's
    /// `acceptedResourceRoles`): `*` for unreserved ones, a role for its
    /// reservations. Empty: any, reserved ones first. Only for tasks whose
    /// reserved parts the master assigns (framework plugins').
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_roles: Vec<String>,
    /// Directories of the agent's host mounted into the task (Marathon's
    /// `hostPath` volumes); the agent mounts only what its policy allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_volumes: Vec<HostVolume>,
    /// Its ports as service discovery and the load balancer see them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub discovery: Vec<DiscoveryPort>,
}

/// One of a task's ports for service discovery (Mesos' DiscoveryInfo
/// port) and the agents' load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryPort {
    /// One of the task's host ports.
    pub number: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "tcp")]
    pub protocol: String,
    /// `VIP_<n>`: `/name:port` (a named virtual IP) or `ip:port`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Marathon's service port, forwarded by every agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_port: Option<u16>,
}

fn tcp() -> String {
    "tcp".into()
}

impl DiscoveryPort {
    /// The virtual IPs it is behind: (`/name` or an address, the VIP's
    /// port), from its `VIP_<n>` labels.
    pub fn vips(&self) -> Vec<(String, u16)> {
        self.labels
            .iter()
            .filter(|(k, _)| k.starts_with("VIP_"))
            .filter_map(|(_, v)| {
                let (name, port) = v.rsplit_once(':')?;
                let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
                let name = name.trim();
                (!name.is_empty() && name.len() <= 253).then(|| (name.to_string(), port))
            })
            .collect()
    }
}

/// A directory of the agent's host mounted into a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostVolume {
    /// Absolute: a directory of the host, under one of the agent's
    /// `--host-volumes` prefixes. Relative (Docker tasks only): a
    /// directory of the sandbox, such as a persistent volume's path.
    pub host_path: String,
    /// Relative: below the sandbox. Absolute: inside a Docker task's
    /// container.
    pub container_path: String,
    #[serde(default)]
    pub read_only: bool,
}

impl HostVolume {
    /// Checks the paths' form (not the agent's policy); `docker`: the task
    /// runs in a Docker container.
    pub fn validate(&self, docker: bool) -> Result<(), String> {
        if self.host_path.starts_with('/') {
            check_absolute(&self.host_path, "host_path")?;
        } else if docker {
            crate::reservation::check_container_path(&self.host_path)
                .map_err(|e| format!("host_path: {e}"))?;
        } else {
            return Err(format!(
                "host_path {:?} must be an absolute path (a relative one is for Docker tasks)",
                self.host_path
            ));
        }
        if self.container_path.starts_with('/') {
            if !docker {
                return Err(format!(
                    "container_path {:?} must be relative to the sandbox: a task on the host sees the host's own filesystem",
                    self.container_path
                ));
            }
            check_absolute(&self.container_path, "container_path")
        } else {
            crate::reservation::check_container_path(&self.container_path)
        }
    }
}

/// An absolute path without `.`, `..` or empty segments.
pub fn check_absolute(path: &str, what: &str) -> Result<(), String> {
    let ok = path.len() <= 4096
        && path
            .strip_prefix('/')
            .is_some_and(crate::reservation::plain_segments);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {path:?} must be an absolute path without `.`, `..` or empty segments"
        ))
    }
}

/// Which executor runs a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecutorKind {
    /// The agent's own executor for task groups: each task runs in its
    /// own container, and a group ends together.
    #[serde(rename = "DEFAULT")]
    Default,
    /// The framework's program, speaking the v1 executor API to the agent.
    #[serde(rename = "CUSTOM")]
    Custom,
}

/// An executor (Mesos' ExecutorInfo): one per executor id and framework
/// on an agent, shared by the tasks launched to it, alive while any of
/// them is. Its resources are held besides its tasks'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutorSpec {
    pub executor_id: crate::ids::ExecutorId,
    pub kind: ExecutorKind,
    #[serde(default)]
    pub name: String,
    /// How a custom executor is started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandSpec>,
    #[serde(default)]
    pub resources: Resources,
    /// Files fetched into the executor's sandbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fetch: Vec<FetchUri>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_period_ms: Option<u64>,
    /// The ExecutorInfo as its framework gave it (JSON), handed back to
    /// the executor when it subscribes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
}

/// The longest Mesos TaskInfo or ExecutorInfo kept for an executor.
pub const MAX_MESOS_INFO: usize = 256 * 1024;
/// The default time an executor has between SHUTDOWN and SIGKILL (Mesos'
/// `--executor_shutdown_grace_period`).
pub const DEFAULT_EXECUTOR_SHUTDOWN_GRACE_MS: u64 = 5_000;

impl ExecutorSpec {
    /// Checks what can be checked without the cluster's state.
    pub fn validate(&self) -> Result<(), String> {
        let id = &self.executor_id;
        match (self.kind, &self.command) {
            (ExecutorKind::Custom, None) => {
                return Err(format!("executor {id}: a custom executor needs a command"));
            }
            (ExecutorKind::Custom, Some(c)) if c.value.trim().is_empty() => {
                return Err(format!("executor {id}: its command is empty"));
            }
            (ExecutorKind::Default, Some(_)) => {
                return Err(format!(
                    "executor {id}: the default executor takes no command"
                ));
            }
            _ => {}
        }
        if let Some(c) = &self.command {
            let (program, argv) = c.argv();
            let nul = program.contains('\0') || argv.iter().any(|a| a.contains('\0'));
            let bad_env = c
                .env
                .iter()
                .any(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0'));
            if nul || bad_env {
                return Err(format!(
                    "executor {id}: its command or environment holds a NUL byte or a bad name"
                ));
            }
            if let Some(u) = &c.user
                && (u.is_empty() || u.contains(['/', '\0', ':']))
            {
                return Err(format!(
                    "executor {id}: user {u:?} is not a valid user name"
                ));
            }
        }
        if self.name.len() > 1024 || self.info.as_ref().is_some_and(|i| i.len() > MAX_MESOS_INFO) {
            return Err(format!(
                "executor {id}: its name or ExecutorInfo is too long"
            ));
        }
        if self.fetch.len() > MAX_FETCH {
            return Err(format!(
                "executor {id}: it may fetch at most {MAX_FETCH} files"
            ));
        }
        for f in &self.fetch {
            f.validate().map_err(|e| format!("executor {id}: {e}"))?;
        }
        if self.shutdown_grace_period_ms.unwrap_or(0) > MAX_KILL_GRACE_MS {
            return Err(format!(
                "executor {id}: shutdown grace period is over {MAX_KILL_GRACE_MS} ms"
            ));
        }
        Ok(())
    }

    pub fn shutdown_grace_ms(&self) -> u64 {
        self.shutdown_grace_period_ms
            .unwrap_or(DEFAULT_EXECUTOR_SHUTDOWN_GRACE_MS)
    }

    /// Whether `other` describes the same executor (what a second task
    /// naming this executor id must agree on).
    pub fn same_as(&self, other: &ExecutorSpec) -> bool {
        self.kind == other.kind
            && self.command == other.command
            && self.resources == other.resources
            && self.fetch == other.fetch
    }
}

/// A file fetched into a task's sandbox before it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchUri {
    /// `http://`, `https://` or `file://`.
    pub uri: String,
    #[serde(default)]
    pub extract: bool,
    #[serde(default)]
    pub executable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_path: Option<String>,
}

/// Most files one task may fetch.
pub const MAX_FETCH: usize = 64;
/// Most persistent volumes one task may use.
pub const MAX_VOLUMES: usize = 16;

impl FetchUri {
    /// The path in the sandbox the file goes to: `dest_path`, or the
    /// URI's last path segment.
    pub fn dest(&self) -> Result<String, String> {
        let name = match &self.dest_path {
            Some(d) => d.clone(),
            None => {
                let path = self.uri.split(['?', '#']).next().unwrap_or("");
                let path = path.split_once("://").map(|(_, rest)| rest).unwrap_or(path);
                let path = path.split_once('/').map(|(_, p)| p).unwrap_or("");
                path.rsplit('/').next().unwrap_or("").to_string()
            }
        };
        if name.is_empty() {
            return Err(format!(
                "fetch {}: the URI names no file; give dest_path",
                self.uri
            ));
        }
        if name.starts_with('/') || name.split('/').any(|s| s == ".." || s.is_empty()) {
            return Err(format!(
                "fetch {}: dest_path {name:?} must be a relative path without `..`",
                self.uri
            ));
        }
        Ok(name)
    }

    fn validate(&self) -> Result<(), String> {
        let scheme_ok = ["http://", "https://", "file://"]
            .iter()
            .any(|s| self.uri.starts_with(s));
        if !scheme_ok || self.uri.len() > 4096 || self.uri.chars().any(char::is_control) {
            return Err(format!(
                "fetch {:?}: only http://, https:// and file:// URIs can be fetched",
                self.uri
            ));
        }
        self.dest().map(|_| ())
    }
}

impl TaskSpec {
    /// A task that runs `command` in a shell with `resources`, named by its
    /// id, and nothing else set.
    pub fn shell(task_id: TaskId, command: &str, resources: Resources) -> TaskSpec {
        TaskSpec {
            name: task_id.to_string(),
            task_id,
            resources,
            command: CommandSpec {
                shell: true,
                value: command.into(),
                ..Default::default()
            },
            labels: BTreeMap::new(),
            kill_grace_period_ms: None,
            health_check: None,
            container: None,
            fetch: Vec::new(),
            readiness_check: None,
            reserved: Default::default(),
            volumes: Vec::new(),
            executor: None,
            group: None,
            task_info: None,
            accepted_roles: Vec::new(),
            host_volumes: Vec::new(),
            discovery: Vec::new(),
        }
    }

    /// Checks what can be checked without the cluster's state.
    pub fn validate(&self) -> Result<(), TaskSpecError> {
        let id = || self.task_id.clone();
        if let Some(e) = &self.executor {
            e.validate()
                .map_err(|what| TaskSpecError::Invalid { id: id(), what })?;
            if self
                .task_info
                .as_ref()
                .is_some_and(|t| t.len() > MAX_MESOS_INFO)
            {
                return Err(TaskSpecError::TooLong {
                    id: id(),
                    field: "task_info",
                    limit: MAX_MESOS_INFO,
                });
            }
            if e.kind == ExecutorKind::Custom {
                // The executor runs it: no command of its own, nothing for
                // the agent to check, fetch or mount.
                if !self.fetch.is_empty()
                    || self.container.is_some()
                    || self.health_check.is_some()
                    || self.readiness_check.is_some()
                    || !self.volumes.is_empty()
                {
                    return Err(TaskSpecError::Invalid {
                        id: id(),
                        what: "a task run by a custom executor cannot have a container, fetched files, volumes or checks of its own (give them to the executor)".into(),
                    });
                }
                if self.name.len() > 1024 {
                    return Err(TaskSpecError::TooLong {
                        id: id(),
                        field: "name",
                        limit: 1024,
                    });
                }
                return Ok(());
            }
        } else if self.group.is_some() {
            return Err(TaskSpecError::Invalid {
                id: id(),
                what: "a task group needs an executor".into(),
            });
        }
        let (program, argv) = self.command.argv();
        let docker = self.container.as_ref().and_then(|c| c.docker());
        // A Docker task with no command runs its image's entrypoint.
        let image_default =
            docker.is_some() && !self.command.shell && self.command.value.is_empty();
        if !image_default && (program.trim().is_empty() || argv.is_empty()) {
            return Err(TaskSpecError::EmptyCommand(id()));
        }
        if let Some(d) = docker {
            d.validate(self.resources.ports.count() as usize)
                .map_err(|what| TaskSpecError::Invalid { id: id(), what })?;
        }
        if self.resources.cpus.is_zero() && self.resources.mem.is_zero() {
            return Err(TaskSpecError::NoResources(id()));
        }
        let too_long = |field, limit| TaskSpecError::TooLong {
            id: id(),
            field,
            limit,
        };
        if self.name.len() > 1024 {
            return Err(too_long("name", 1024));
        }
        let cmd_len = self.command.value.len()
            + self
                .command
                .arguments
                .iter()
                .map(String::len)
                .sum::<usize>();
        if cmd_len > 64 * 1024 {
            return Err(too_long("command", 64 * 1024));
        }
        let env_len: usize = self
            .command
            .env
            .iter()
            .chain(self.labels.iter())
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if env_len > 256 * 1024 {
            return Err(too_long("env and labels", 256 * 1024));
        }
        for (k, v) in &self.command.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(TaskSpecError::Invalid {
                    id: id(),
                    what: format!("environment variable {k:?} is not a valid name=value"),
                });
            }
        }
        if program.contains('\0') || argv.iter().any(|a| a.contains('\0')) {
            return Err(TaskSpecError::Invalid {
                id: id(),
                what: "command contains a NUL byte".into(),
            });
        }
        if let Some(user) = &self.command.user
            && (user.is_empty() || user.contains(['/', '\0', ':']))
        {
            return Err(TaskSpecError::Invalid {
                id: id(),
                what: format!("user {user:?} is not a valid user name"),
            });
        }
        if let Some(h) = &self.health_check {
            h.validate()
                .map_err(|what| TaskSpecError::Invalid { id: id(), what })?;
        }
        if let Some(h) = &self.readiness_check {
            h.validate().map_err(|what| TaskSpecError::Invalid {
                id: id(),
                what: format!("readiness check: {what}"),
            })?;
        }
        let invalid = |what: String| TaskSpecError::Invalid { id: id(), what };
        if self.accepted_roles.len() > 16 {
            return Err(invalid("a task may accept at most 16 roles".into()));
        }
        for role in self.accepted_roles.iter().filter(|r| *r != "*") {
            crate::reservation::check_reservation_role(role)
                .map_err(|e| invalid(format!("accepted role: {e}")))?;
        }
        for role in self.reserved.keys() {
            crate::reservation::check_reservation_role(role).map_err(invalid)?;
        }
        if !self
            .resources
            .contains(&crate::reservation::total(&self.reserved))
        {
            return Err(invalid(format!(
                "its reserved resources are more than its resources ({})",
                self.resources
            )));
        }
        if self.volumes.len() > MAX_VOLUMES {
            return Err(invalid(format!(
                "a task may use at most {MAX_VOLUMES} volumes"
            )));
        }
        let docker = self.container.as_ref().and_then(|c| c.docker());
        let named = docker.map_or(0, |d| d.volumes.len());
        if self.volumes.len() + self.host_volumes.len() + named > MAX_VOLUMES {
            return Err(invalid(format!(
                "a task may use at most {MAX_VOLUMES} volumes"
            )));
        }
        let mut paths = std::collections::BTreeSet::new();
        for v in &self.volumes {
            v.validate().map_err(invalid)?;
            if !paths.insert(v.container_path.as_str()) {
                return Err(invalid(format!(
                    "two volumes are mounted at {}",
                    v.container_path
                )));
            }
        }
        for v in &self.host_volumes {
            v.validate(docker.is_some()).map_err(invalid)?;
            if !paths.insert(v.container_path.as_str()) {
                return Err(invalid(format!(
                    "two volumes are mounted at {}",
                    v.container_path
                )));
            }
        }
        if self.discovery.len() > 64 {
            return Err(invalid("a task may list at most 64 discovery ports".into()));
        }
        for d in &self.discovery {
            if !self.resources.ports.contains_port(d.number) {
                return Err(invalid(format!(
                    "discovery port {} is not one of the task's ports",
                    d.number
                )));
            }
            if d.protocol != "tcp" && d.protocol != "udp" {
                return Err(invalid(format!(
                    "discovery port {} protocol must be tcp or udp",
                    d.number
                )));
            }
            if d.labels.len() > 32
                || d.labels
                    .iter()
                    .any(|(k, v)| k.len() > 255 || v.len() > 1024)
            {
                return Err(invalid(format!(
                    "discovery port {}: at most 32 labels, keys up to 255 bytes and values up to 1 KiB",
                    d.number
                )));
            }
        }
        for v in docker.iter().flat_map(|d| &d.volumes) {
            if !paths.insert(v.container_path.as_str()) {
                return Err(invalid(format!(
                    "two volumes are mounted at {}",
                    v.container_path
                )));
            }
        }
        if self.fetch.len() > MAX_FETCH {
            return Err(TaskSpecError::Invalid {
                id: id(),
                what: format!("a task may fetch at most {MAX_FETCH} files"),
            });
        }
        for f in &self.fetch {
            f.validate()
                .map_err(|what| TaskSpecError::Invalid { id: id(), what })?;
        }
        if self.kill_grace_period_ms.unwrap_or(0) > MAX_KILL_GRACE_MS {
            return Err(TaskSpecError::Invalid {
                id: id(),
                what: format!("kill grace period is over {MAX_KILL_GRACE_MS} ms"),
            });
        }
        Ok(())
    }

    pub fn kill_grace_ms(&self) -> u64 {
        self.kill_grace_period_ms.unwrap_or(DEFAULT_KILL_GRACE_MS)
    }
}

/// A task placed on an agent: the spec plus where and for whom it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacedTask {
    pub spec: TaskSpec,
    pub agent_id: AgentId,
    pub framework_id: crate::ids::FrameworkId,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cmd: CommandSpec) -> TaskSpec {
        TaskSpec {
            command: cmd,
            ..TaskSpec::shell(
                TaskId::new("t").unwrap(),
                "",
                Resources::cpus_mem(0.1, 32.0).unwrap(),
            )
        }
    }

    #[test]
    fn terminal_states_match_mesos() {
        use TaskState::*;
        for s in [
            Finished,
            Failed,
            Killed,
            Error,
            Lost,
            Dropped,
            Gone,
            GoneByOperator,
        ] {
            assert!(s.is_terminal(), "{s}");
        }
        for s in [Staging, Starting, Running, Killing, Unreachable, Unknown] {
            assert!(!s.is_terminal(), "{s}");
        }
        assert_eq!(serde_json::to_string(&Running).unwrap(), "\"TASK_RUNNING\"");
    }

    #[test]
    fn reasons_use_mesos_names_and_tolerate_new_ones() {
        assert_eq!(
            Reason::ReasonContainerLaunchFailed.as_str(),
            "REASON_CONTAINER_LAUNCH_FAILED"
        );
        let r: Reason = serde_json::from_str("\"REASON_SOMETHING_NEW\"").unwrap();
        assert_eq!(r, Reason::Other);
    }

    #[test]
    fn argv_follows_mesos_command_info() {
        let shell = CommandSpec {
            shell: true,
            value: "echo hi".into(),
            ..Default::default()
        };
        assert_eq!(shell.argv().1, vec!["sh", "-c", "echo hi"]);
        let bare = CommandSpec {
            value: "sleep".into(),
            ..Default::default()
        };
        assert_eq!(bare.argv(), ("sleep".into(), vec!["sleep".into()]));
    }

    #[test]
    fn invalid_specs_are_refused_with_a_reason() {
        assert!(matches!(
            spec(CommandSpec::default()).validate(),
            Err(TaskSpecError::EmptyCommand(_))
        ));
        let mut s = spec(CommandSpec {
            value: "true".into(),
            ..Default::default()
        });
        assert!(s.validate().is_ok());
        s.resources = Resources::default();
        assert!(matches!(s.validate(), Err(TaskSpecError::NoResources(_))));
        let mut s = spec(CommandSpec {
            value: "true".into(),
            ..Default::default()
        });
        s.command.env.insert("A=B".into(), "x".into());
        assert!(s.validate().is_err());
    }

    #[test]
    fn a_discovery_ports_vip_labels_name_its_virtual_ips() {
        let d = DiscoveryPort {
            number: 31000,
            name: Some("http".into()),
            protocol: "tcp".into(),
            labels: [
                ("VIP_0".to_string(), "/prod/web:80".to_string()),
                ("VIP_1".to_string(), "10.0.0.7:443".to_string()),
                ("VIP_2".to_string(), "no-port".to_string()),
                ("VIP_3".to_string(), "/x:0".to_string()),
                ("team".to_string(), "a:1".to_string()),
            ]
            .into(),
            service_port: None,
        };
        assert_eq!(
            d.vips(),
            vec![("/prod/web".to_string(), 80), ("10.0.0.7".to_string(), 443)]
        );
    }
}
