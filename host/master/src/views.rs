//! What the native API shows: views built from the state and the leader's
//! memory. The CLI and the dashboard read exactly these.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wasmos_core::{
    AgentId, AgentState, CommandSpec, FrameworkId, FrameworkKind, PluginKind, Resources, TaskId,
    TaskState, TaskStatus,
};
use wasmos_state::{AgentRecord, FrameworkRecord, PluginRecord, State, TaskRecord};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskView {
    pub id: TaskId,
    pub name: String,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub hostname: Option<String>,
    pub state: TaskState,
    pub status: TaskStatus,
    pub statuses: Vec<TaskStatus>,
    pub resources: Resources,
    pub command: CommandSpec,
    pub labels: BTreeMap<String, String>,
    pub launched_at: f64,
    /// The executor that runs it (`None`: the agent runs its command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<ExecutorView>,
}

/// A task's executor, as the native API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutorView {
    pub id: wasmos_core::ExecutorId,
    /// `DEFAULT` (a task group on the agent's default executor) or `CUSTOM`.
    pub kind: wasmos_core::ExecutorKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandSpec>,
    /// The task group, for tasks launched in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<TaskId>,
}

impl TaskView {
    pub fn new(t: &TaskRecord, state: &State) -> TaskView {
        TaskView {
            id: t.spec.task_id.clone(),
            name: t.spec.name.clone(),
            framework_id: t.framework_id.clone(),
            agent_id: t.agent_id.clone(),
            hostname: state
                .agents
                .get(&t.agent_id)
                .map(|a| a.info.hostname.clone()),
            state: t.state(),
            status: t.status().clone(),
            statuses: t.statuses.clone(),
            resources: t.spec.resources.clone(),
            command: t.spec.command.clone(),
            labels: t.spec.labels.clone(),
            launched_at: t.launched_at,
            executor: t.spec.executor.as_ref().map(|e| ExecutorView {
                id: e.executor_id.clone(),
                kind: e.kind,
                command: e.command.clone(),
                group: t.spec.group.clone(),
            }),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentView {
    pub id: AgentId,
    pub hostname: String,
    pub endpoint: String,
    pub state: AgentState,
    /// Heartbeating to this leader.
    pub connected: bool,
    pub resources: Resources,
    pub used: Resources,
    pub attributes: BTreeMap<String, String>,
    pub tasks: usize,
    pub registered_at: f64,
    pub version: String,
    /// Resources reserved for roles, static and dynamic (volumes' disk
    /// included).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reserved: wasmos_core::RoleResources,
    /// Persistent volumes on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<wasmos_core::Volume>,
    /// Out of service: no offers, no launches (drained, or deactivated).
    #[serde(default)]
    pub deactivated: bool,
    /// Its draining, if it was drained: `state` DRAINING or DRAINED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<wasmos_state::DrainInfo>,
    /// Its machine's maintenance mode: UP, DRAINING (scheduled) or DOWN.
    #[serde(default)]
    pub maintenance: String,
    /// Ports of its range something on its host is bound to (its tasks'
    /// or other processes'), as its last heartbeat said: never offered.
    #[serde(default, skip_serializing_if = "wasmos_core::PortSet::is_empty")]
    pub bound_ports: wasmos_core::PortSet,
}

impl AgentView {
    pub fn new(a: &AgentRecord, state: &State, used: Option<&Resources>, connected: bool) -> Self {
        AgentView {
            id: a.id.clone(),
            hostname: a.info.hostname.clone(),
            endpoint: a.info.endpoint.clone(),
            state: a.state,
            connected,
            resources: a.info.resources.clone(),
            used: used.cloned().unwrap_or_default(),
            attributes: a.info.attributes.clone(),
            tasks: state.live_tasks_on(&a.id).count(),
            registered_at: a.registered_at,
            version: a.info.version.clone(),
            reserved: a.reserved(),
            volumes: a.volumes.values().cloned().collect(),
            deactivated: a.deactivated,
            drain: a.drain.clone(),
            maintenance: state.machine_mode(&a.info).to_string(),
            bound_ports: wasmos_core::PortSet::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrameworkView {
    pub id: FrameworkId,
    pub name: String,
    pub kind: FrameworkKind,
    pub role: String,
    /// Receiving offers from this leader.
    pub active: bool,
    /// `healthy`, `degraded` or `failed` for plugin frameworks.
    pub health: Option<String>,
    pub last_error: Option<String>,
    pub tasks: usize,
    pub used: Resources,
    pub offers: usize,
    pub suppressed: bool,
    pub registered_at: f64,
    /// When it was torn down (it never comes back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_at: Option<f64>,
    /// An external framework's principal and its failover timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default)]
    pub failover_timeout_secs: f64,
}

impl FrameworkView {
    pub fn new(f: &FrameworkRecord, state: &State, used: Option<&Resources>) -> Self {
        FrameworkView {
            id: f.id.clone(),
            name: f.info.name.clone(),
            kind: f.info.kind.clone(),
            role: f.info.role.clone(),
            active: false,
            health: None,
            last_error: None,
            tasks: state
                .tasks
                .values()
                .filter(|t| t.framework_id == f.id && !t.state().is_terminal())
                .count(),
            used: used.cloned().unwrap_or_default(),
            offers: 0,
            suppressed: false,
            registered_at: f.registered_at,
            removed_at: f.removed_at,
            principal: f.info.principal.clone(),
            failover_timeout_secs: f.info.failover_timeout_secs,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginView {
    pub name: String,
    pub version: String,
    pub kind: PluginKind,
    pub world_version: String,
    pub description: String,
    pub digest: String,
    pub size: usize,
    pub source: String,
    pub installed_at: f64,
    pub config: BTreeMap<String, String>,
    pub http_prefixes: Vec<String>,
    pub health: Option<String>,
    pub last_error: Option<String>,
    /// The trusted key whose signature it carried (`None`: bundled with
    /// the binary).
    #[serde(default)]
    pub signed_by: Option<String>,
    /// The version before the last upgrade, which `rollback` puts back.
    #[serde(default)]
    pub previous_version: Option<String>,
    /// Calls, latencies, failures, restarts and memory: on the leader for
    /// frameworks and placement plugins, summed over the agents for
    /// isolators and health checks; since each host started.
    #[serde(default)]
    pub stats: Option<wasmos_core::plugin::PluginStats>,
}

impl PluginView {
    /// `p`, with `previous` the record a rollback would put back.
    pub fn new(p: &PluginRecord, previous: Option<&PluginRecord>) -> Self {
        PluginView {
            name: p.manifest.name.clone(),
            version: p.manifest.version.clone(),
            kind: p.manifest.kind,
            world_version: p.manifest.world_version.clone(),
            description: p.manifest.description.clone(),
            digest: p.digest.clone(),
            size: p.component.0.len(),
            source: p.source.clone(),
            signed_by: p.signed_by.clone(),
            installed_at: p.installed_at,
            config: p.effective_config(),
            http_prefixes: p.manifest.http_prefixes.clone(),
            health: None,
            last_error: None,
            previous_version: previous.map(|q| q.manifest.version.clone()),
            stats: None,
        }
    }
}

/// The cluster at a glance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterView {
    pub cluster_id: String,
    pub master_id: String,
    pub leader: Option<String>,
    pub term: u64,
    pub version: String,
    pub agents: usize,
    pub frameworks: usize,
    pub tasks: BTreeMap<String, usize>,
    pub total: Resources,
    pub used: Resources,
    pub offers: usize,
    pub log_index: u64,
}
