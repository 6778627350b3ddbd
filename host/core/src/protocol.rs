//! The messages masters and agents exchange over HTTP (`/internal/v1/...`).
//!
//! Every command from a master carries the leader's `term`; an agent refuses
//! a command from a term older than the newest it has seen, so a deposed
//! leader cannot launch or kill anything.

use serde::{Deserialize, Serialize};

use crate::agent::AgentInfo;
use crate::ids::{AgentId, ExecutorId, FrameworkId, TaskId};
use crate::task::{TaskSpec, TaskState, TaskStatus};

/// Paths of the internal API.
pub mod paths {
    /// Master: an agent registers or re-registers.
    pub const REGISTER: &str = "/internal/v1/agents/register";
    /// Master: an agent's periodic heartbeat.
    pub const HEARTBEAT: &str = "/internal/v1/agents/heartbeat";
    /// Master: a task status update; a 2xx reply is the acknowledgement.
    pub const STATUS: &str = "/internal/v1/status";
    /// Master: the plugins agents run (isolators, health checks).
    pub const PLUGINS: &str = "/internal/v1/plugins";
    /// Agent: launch tasks.
    pub const LAUNCH: &str = "/internal/v1/launch";
    /// Agent: kill a task.
    pub const KILL: &str = "/internal/v1/kill";
    /// Master: an agent presents the join token and gets its certificate.
    pub const JOIN: &str = "/internal/v1/join";
    /// Master: an agent renews its certificate (with the current one).
    pub const RENEW: &str = "/internal/v1/renew";
    /// Agent: shut an executor down.
    pub const SHUTDOWN_EXECUTOR: &str = "/internal/v1/executors/shutdown";
    /// Agent: a framework's message for one of its executors.
    pub const TO_EXECUTOR: &str = "/internal/v1/executors/message";
    /// Master: an executor's message for its framework.
    pub const FROM_EXECUTOR: &str = "/internal/v1/executor-message";
    /// Master: an executor ended.
    pub const EXECUTOR_EXITED: &str = "/internal/v1/executor-exited";
    /// Master: the load balancer's table (`?after=<version>` waits for a
    /// newer one).
    pub const PROXY: &str = "/internal/v1/proxy";
}

/// What every agent's layer-4 load balancer serves: virtual IPs and
/// Marathon's service ports, each with the tasks connections go to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyTable {
    /// Changes whenever the services or routes do (a hash of them).
    pub version: u64,
    pub services: Vec<ProxyService>,
    /// The HTTP edge's routes (marathon-lb's labels).
    #[serde(default)]
    pub http: Vec<HttpRoute>,
}

/// A virtual host of the HTTP edge: requests whose `Host` is `vhost`, on
/// edge agents of `group`, go to the backends.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HttpRoute {
    pub group: String,
    /// Lower case, without a port.
    pub vhost: String,
    pub backends: Vec<std::net::SocketAddr>,
}

/// One address the load balancer listens on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProxyService {
    /// `vip /name:port`, `vip 1.2.3.4:port` or `service port N`.
    pub name: String,
    /// Where to listen: a virtual IP, or none for the agent's service-port
    /// address.
    pub ip: Option<std::net::Ipv4Addr>,
    pub port: u16,
    /// The running (and, if checked, healthy) tasks' host:port.
    pub backends: Vec<std::net::SocketAddr>,
}

/// What the master did with a status update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusOutcome {
    /// Recorded, and queued for the framework.
    Applied,
    /// Seen before (a retry); nothing changed.
    Duplicate,
    /// The task is not known (long gone, or never launched).
    UnknownTask,
    /// The task already ended; later updates are dropped.
    AlreadyTerminal,
}

/// Master → agent: the answer to a status update (its acknowledgement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    pub outcome: StatusOutcome,
}

/// Agent → master: a certificate for the key of `csr` (PEM), covering
/// `hosts` (the host names and addresses the agent serves on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateRequest {
    pub csr: String,
    #[serde(default)]
    pub hosts: Vec<String>,
}

impl CertificateRequest {
    pub fn validate(&self) -> Result<(), String> {
        if !self.csr.contains("BEGIN CERTIFICATE REQUEST") {
            return Err("csr: not a PEM certificate signing request".into());
        }
        if self.hosts.len() > 16 {
            return Err("hosts: at most 16".into());
        }
        for h in &self.hosts {
            if h.is_empty()
                || h.len() > 253
                || !h
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
            {
                return Err(format!("hosts: {h:?} is not a host name or address"));
            }
        }
        Ok(())
    }
}

/// Master → agent: the certificate (PEM) and the cluster CA's (PEM).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedCertificate {
    pub certificate: String,
    pub ca: String,
}

/// Whether an `Authorization` header value presents `secret` as a bearer
/// token. Masters and agents guard their internal endpoints with it.
pub fn bearer_matches(header: Option<&str>, secret: &str) -> bool {
    header
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.as_bytes(), secret.as_bytes()))
}

/// Compares without leaking, through timing, how much of a secret matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A task an agent reports when it (re-)registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportedTask {
    pub task_id: TaskId,
    pub framework_id: FrameworkId,
    pub state: TaskState,
}

/// Agent → master: register, or re-register with the agent's id and tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterAgent {
    pub agent_id: Option<AgentId>,
    pub info: AgentInfo,
    #[serde(default)]
    pub tasks: Vec<ReportedTask>,
    /// Ports of the agent's range that something on its host is bound to
    /// (see [`Heartbeat::bound_ports`]).
    #[serde(default, skip_serializing_if = "crate::PortSet::is_empty")]
    pub bound_ports: crate::PortSet,
}

/// Master → agent: the reply to [`RegisterAgent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    pub agent_id: AgentId,
    /// Terms are ordered within a cluster; an agent moved to a new cluster
    /// (or a master whose state was wiped) starts counting again.
    #[serde(default)]
    pub cluster_id: String,
    pub master_id: String,
    pub term: u64,
    pub heartbeat_interval_ms: u64,
    /// Tasks the agent reported that the master does not know as live:
    /// the agent kills them.
    #[serde(default)]
    pub orphans: Vec<TaskId>,
    /// Fingerprint of the plugins agents run; see [`AgentPlugin`].
    #[serde(default)]
    pub plugins: String,
    /// The persistent volumes the agent holds (their directories' names):
    /// the agent deletes the data of any other. `None`: say nothing of
    /// them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<String>>,
}

/// Agent → master, every heartbeat interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub agent_id: AgentId,
    /// How the agent's plugins are doing.
    #[serde(default)]
    pub plugins: Vec<PluginReport>,
    /// Ports of the agent's range that something on its host is bound to
    /// (a TCP listener or a bound UDP socket, a task's or a stranger's):
    /// the master offers none of them, so a task is never handed a port
    /// another process holds.
    #[serde(default, skip_serializing_if = "crate::PortSet::is_empty")]
    pub bound_ports: crate::PortSet,
}

/// A plugin's health on one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginReport {
    pub name: String,
    /// `healthy`, `degraded` or `failed`.
    pub health: String,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Its figures on this agent since the agent started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<crate::plugin::PluginStats>,
    /// Lines it logged since the last heartbeat (at most
    /// [`MAX_LOG_LINES_PER_HEARTBEAT`]; more are skipped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<crate::plugin::PluginLogLine>,
}

/// The most log lines of one plugin a heartbeat carries.
pub const MAX_LOG_LINES_PER_HEARTBEAT: usize = 200;

/// Master → agent: the reply to [`Heartbeat`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub master_id: String,
    pub term: u64,
    /// The master does not know this agent as connected: register again.
    pub reregister: bool,
    /// Fingerprint of the plugins agents run; when it changes the agent
    /// fetches the list again.
    #[serde(default)]
    pub plugins: String,
    /// As in [`Registered::volumes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<String>>,
}

/// A plugin an agent runs (an isolator or a health check), as listed at
/// [`paths::PLUGINS`]; its component is at `<PLUGINS>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPlugin {
    pub name: String,
    pub kind: crate::plugin::PluginKind,
    pub version: String,
    pub digest: String,
    pub config: std::collections::BTreeMap<String, String>,
}

/// A fingerprint of a plugin list: equal lists, equal fingerprints.
pub fn plugins_fingerprint(plugins: &[AgentPlugin]) -> String {
    // FNV-1a over the canonical JSON; stable across processes.
    let json = serde_json::to_string(plugins).unwrap_or_default();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in json.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// Agent → master: a status update, retried until acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub agent_id: AgentId,
    pub framework_id: FrameworkId,
    pub status: TaskStatus,
}

/// Master → agent: launch tasks for a framework.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchTasks {
    pub term: u64,
    /// The agent the tasks were given to: another agent at the same
    /// address (the machine rebooted and registered anew) refuses them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    pub framework_id: FrameworkId,
    pub tasks: Vec<TaskSpec>,
}

/// Master → agent: shut an executor down (its tasks end KILLED).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShutdownExecutor {
    pub term: u64,
    pub framework_id: FrameworkId,
    pub executor_id: ExecutorId,
}

/// A framework's message to its executor (master → agent), or an
/// executor's to its framework (agent → master). `data` is base64, as on
/// Mesos' wire; it is handed on unread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutorMessage {
    #[serde(default)]
    pub term: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    pub framework_id: FrameworkId,
    pub executor_id: ExecutorId,
    pub data: String,
}

/// Agent → master: an executor ended (Mesos' ExitedExecutorMessage);
/// `status` is its wait status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutorExited {
    pub agent_id: AgentId,
    pub framework_id: FrameworkId,
    pub executor_id: ExecutorId,
    pub status: i32,
}

/// Master → agent: kill a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KillTask {
    pub term: u64,
    pub task_id: TaskId,
    #[serde(default)]
    pub grace_period_ms: Option<u64>,
    /// Report TASK_KILLING when the kill starts (frameworks that know the
    /// state: plugins, and schedulers with TASK_KILLING_STATE).
    #[serde(default)]
    pub killing: bool,
}

/// The content type of a `/metrics` answer (masters' and agents'), for
/// the `Accept` header of the request: `None` when the client wants JSON
/// (it names no Prometheus type).
pub fn prometheus_type(accept: &str) -> Option<&'static str> {
    if accept.contains("application/openmetrics-text") {
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    } else if accept.contains("text/plain") && accept.contains("version=0.0.4") {
        Some("text/plain; version=0.0.4; charset=utf-8")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_exact_bearer_secret_matches() {
        assert!(super::bearer_matches(Some("Bearer s3cret"), "s3cret"));
        for bad in [
            None,
            Some("s3cret"),
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("bearer s3cret"),
        ] {
            assert!(!super::bearer_matches(bad, "s3cret"), "{bad:?}");
        }
    }
}
