//! The cluster's replicated state and the only function that changes it.
//!
//! [`State::apply`] is pure: no clock, no randomness, no I/O. Time and ids
//! arrive as fields of the [`Command`], so every replica that applies the
//! same log reaches the same state. Commands are only ever appended to this
//! enum (never renumbered or repurposed), and [`Snapshot`]s carry a schema
//! version.
//!
//! What lives here is *intent and record*: agents, frameworks, tasks with
//! their status history and the updates their framework has yet to
//! acknowledge, installed plugins, and each framework's key-value namespace.
//! What does not: offers, heartbeats, metrics (the leader's memory).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use wasmos_core::bytes::Blob;
use wasmos_core::reservation::{self, RoleResources, Volume};
use wasmos_core::{
    AgentId, AgentInfo, AgentState, ExecutorId, ExecutorSpec, FrameworkId, FrameworkInfo,
    PluginManifest, Reason, Resources, TaskId, TaskSpec, TaskState, TaskStatus,
};

/// The version of the snapshot layout; bump it when the layout changes.
pub const SCHEMA_VERSION: u32 = 1;
/// Terminal, acknowledged tasks kept for inspection before the oldest go.
pub const MAX_COMPLETED_TASKS: usize = 5000;
/// Status updates kept per task.
pub const MAX_STATUS_HISTORY: usize = 32;
/// Persistent volumes one agent may hold.
pub const MAX_VOLUMES_PER_AGENT: usize = 1000;
pub use wasmos_core::limits::{MAX_KV_KEY, MAX_KV_VALUE};

pub mod acl;
pub mod codec;
pub mod roles;
pub mod usage;
pub mod vars;

/// The master that leads a term.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderInfo {
    pub master_id: String,
    /// The base URL of its API.
    pub address: String,
    pub term: u64,
    /// The base URL of its plaintext listener (`--plain-listen`), if open:
    /// where a follower's plaintext listener redirects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: AgentId,
    pub info: AgentInfo,
    pub state: AgentState,
    pub registered_at: f64,
    pub reregistered_at: Option<f64>,
    /// The name in the certificate the agent registered with: only that
    /// certificate may speak for this agent. `None` under --insecure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// Dynamic reservations by role (static ones are in `info.reserved`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reservations: RoleResources,
    /// Persistent volumes by persistence id (unique on the agent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, Volume>,
    /// Taken out of service (DEACTIVATE_AGENT, or while draining): no
    /// offers, no launches, until reactivated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deactivated: bool,
    /// Being drained (DRAIN_AGENT), or drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainInfo>,
}

/// An agent's draining: its tasks are killed (each with its kill grace
/// period, at most `max_grace_period_secs`); drained once none lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainInfo {
    pub state: DrainState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_grace_period_secs: Option<f64>,
    /// Marked gone once drained.
    #[serde(default)]
    pub mark_gone: bool,
    /// Its tasks are left to end on their own instead of being killed.
    #[serde(default)]
    pub let_finish: bool,
    pub started_at: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DrainState {
    Draining,
    Drained,
}

/// What is free on an agent by the state's account (tasks that have not
/// ended hold theirs; the leader also takes out what is offered).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentPools {
    /// Unreserved resources no task holds.
    pub unreserved: Resources,
    /// Each role's reserved resources no task or volume holds.
    pub reserved: RoleResources,
    /// The static part of `reserved` (tasks and volumes are counted
    /// against dynamic reservations first).
    pub static_reserved: RoleResources,
    /// Volumes no task uses.
    pub volumes: Vec<Volume>,
}

impl AgentRecord {
    /// Every role's reserved resources here, static and dynamic.
    pub fn reserved(&self) -> RoleResources {
        let mut all = self.info.reserved.clone();
        for (role, r) in &self.reservations {
            reservation::add(&mut all, role, r);
        }
        all
    }

    /// What is free here with nothing running: everything but the
    /// volumes' disk.
    pub fn idle_pools(&self) -> AgentPools {
        let mut reserved = self.reserved();
        let unreserved = self
            .info
            .resources
            .saturating_sub(&reservation::total(&reserved));
        let mut static_reserved = self.info.reserved.clone();
        for v in self.volumes.values() {
            reservation::take_dynamic_first(
                &mut reserved,
                &mut static_reserved,
                &v.role,
                &v.resources(),
            );
        }
        AgentPools {
            unreserved,
            reserved,
            static_reserved,
            volumes: self.volumes.values().cloned().collect(),
        }
    }
}

impl AgentPools {
    /// Whether a task fits what is free: its unreserved part, each
    /// reserved part, each volume.
    fn fits(&self, spec: &TaskSpec) -> Result<(), String> {
        let unreserved = spec
            .resources
            .saturating_sub(&reservation::total(&spec.reserved));
        if !self.unreserved.contains(&unreserved) {
            return Err(format!(
                "the agent has {} unreserved and free, not the {unreserved} the task needs",
                self.unreserved
            ));
        }
        for (role, r) in &spec.reserved {
            let have = self.reserved.get(role).cloned().unwrap_or_default();
            if !have.contains(r) {
                return Err(format!(
                    "the agent has {have} reserved for {role} and free, not the {r} the task needs"
                ));
            }
        }
        for m in &spec.volumes {
            if !self
                .volumes
                .iter()
                .any(|v| v.id == m.id && v.role == m.role)
            {
                return Err(format!(
                    "volume {} (role {}) is not on the agent, or another task uses it",
                    m.id, m.role
                ));
            }
        }
        Ok(())
    }

    /// Takes out what a running executor holds (unreserved resources).
    fn hold_executor(&mut self, e: &ExecutorSpec) {
        self.unreserved = self.unreserved.saturating_sub(&e.resources);
    }

    /// Takes out what a task holds.
    fn hold(&mut self, spec: &TaskSpec) {
        let reserved = reservation::total(&spec.reserved);
        self.unreserved = self
            .unreserved
            .saturating_sub(&spec.resources.saturating_sub(&reserved));
        for (role, r) in &spec.reserved {
            if self.reserved.contains_key(role) {
                reservation::take_dynamic_first(
                    &mut self.reserved,
                    &mut self.static_reserved,
                    role,
                    r,
                );
            } else {
                // A reservation given back under a running task (it cannot
                // be, but a count must not go missing): take it from the
                // unreserved.
                self.unreserved = self.unreserved.saturating_sub(r);
            }
        }
        self.volumes
            .retain(|v| !spec.volumes.iter().any(|m| m.id == v.id));
    }
}

impl AgentRecord {
    /// Whether a caller whose certificate names `principal` may speak for
    /// this agent: the one it registered with (any, for an agent registered
    /// without one, under --insecure or before TLS).
    pub fn speaks_for(&self, principal: Option<&str>) -> bool {
        match (&self.principal, principal) {
            (Some(mine), Some(theirs)) => mine == theirs,
            (Some(_), None) => false,
            (None, _) => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameworkRecord {
    pub id: FrameworkId,
    pub info: FrameworkInfo,
    pub registered_at: f64,
    /// When it was torn down (by itself, an operator, or its failover
    /// timeout); a removed framework never subscribes again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_at: Option<f64>,
}

/// A task and its life so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub spec: TaskSpec,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    /// Oldest first; the last one is the current status. Never empty.
    pub statuses: Vec<TaskStatus>,
    /// Updates the framework has not acknowledged yet, oldest first.
    #[serde(default)]
    pub pending: VecDeque<TaskStatus>,
    pub launched_at: f64,
}

impl TaskRecord {
    /// The current status.
    pub fn status(&self) -> &TaskStatus {
        // `statuses` starts with STAGING and is only ever appended to or
        // trimmed from the front down to MAX_STATUS_HISTORY >= 1 entries.
        &self.statuses[self.statuses.len() - 1]
    }

    pub fn state(&self) -> TaskState {
        self.status().state
    }

    /// The last state the task was seen in before it became unreachable.
    pub fn state_before_unreachable(&self) -> Option<TaskState> {
        self.statuses
            .iter()
            .rev()
            .map(|s| s.state)
            .find(|s| *s != TaskState::Unreachable)
    }

    fn knows_update(&self, uuid: &uuid::Uuid) -> bool {
        self.statuses.iter().any(|s| &s.uuid == uuid)
            || self.pending.iter().any(|s| &s.uuid == uuid)
    }
}

/// A plugin installed in the cluster, component bytes included, so every
/// master can load it after a failover without fetching anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginRecord {
    pub manifest: PluginManifest,
    /// `sha256:<hex>` of the component.
    pub digest: String,
    pub component: Blob,
    /// Overrides of the manifest's default configuration.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    pub installed_at: f64,
    /// Where it came from (a path or an OCI reference), for display.
    #[serde(default)]
    pub source: String,
    /// The trusted key whose signature it carried (`None`: bundled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
}

impl PluginRecord {
    /// The manifest's defaults overlaid with the cluster's overrides.
    pub fn effective_config(&self) -> BTreeMap<String, String> {
        let mut c = self.manifest.config.clone();
        c.extend(self.config.clone());
        c
    }
}

/// The whole replicated state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Set by the first leader; agent ids derive from it.
    pub cluster_id: String,
    pub term: u64,
    pub leader: Option<LeaderInfo>,
    pub agents: BTreeMap<AgentId, AgentRecord>,
    pub next_agent: u64,
    pub frameworks: BTreeMap<FrameworkId, FrameworkRecord>,
    pub tasks: BTreeMap<TaskId, TaskRecord>,
    /// The live tasks on each agent (derived from `tasks`; see `usage`).
    #[serde(skip)]
    pub(crate) live: usage::LiveIndex,
    /// Terminal tasks whose updates are all acknowledged, oldest first.
    pub completed: VecDeque<TaskId>,
    pub plugins: BTreeMap<String, PluginRecord>,
    /// The version each plugin had before its last upgrade, for
    /// `rollback` (which swaps the two).
    #[serde(default)]
    pub previous_plugins: BTreeMap<String, PluginRecord>,
    pub kv: BTreeMap<FrameworkId, BTreeMap<String, Blob>>,
    /// Bundled plugins ever installed, so that one an operator removed is
    /// not installed again on the next start.
    #[serde(default)]
    pub bundled_seen: std::collections::BTreeSet<String>,
    /// Master (raft node) ids that left the cluster: never used again.
    #[serde(default)]
    pub retired_masters: std::collections::BTreeSet<u64>,
    /// Cluster variables by path.
    #[serde(default)]
    pub vars: BTreeMap<String, vars::Var>,
    /// Bumped by every variable write.
    #[serde(default)]
    pub vars_index: u64,
    /// Tokens, users and policies.
    #[serde(default)]
    pub acl: acl::Acl,
    /// Roles with a weight or a quota (others weigh 1, with no quota).
    #[serde(default)]
    pub roles: BTreeMap<String, roles::RoleConfig>,
    /// The package catalogue's repositories, first wins.
    #[serde(default)]
    pub package_repos: Vec<PackageRepo>,
    /// Packages installed from the catalogue, by install id.
    #[serde(default)]
    pub package_installs: BTreeMap<String, PackageInstall>,
    /// Mesos' maintenance schedule: windows of machines' unavailability.
    #[serde(default)]
    pub maintenance: Vec<MaintenanceWindow>,
    /// Machines an operator took down (START_MAINTENANCE): their agents
    /// are out, and may not register until the machine is up again.
    #[serde(default)]
    pub machines_down: std::collections::BTreeSet<MachineId>,
    /// Agent certificates no longer honoured, by the principal they name:
    /// those of agents marked gone (the agent they were issued to).
    #[serde(default)]
    pub revoked_agents: BTreeMap<String, AgentId>,
}

/// A machine, by host name, address or both (Mesos' MachineID).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MachineId {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

impl MachineId {
    /// Whether the agent runs on this machine: its host name (any case)
    /// and the address in its endpoint, each where given.
    pub fn holds(&self, a: &AgentInfo) -> bool {
        let host_ok = self
            .hostname
            .as_deref()
            .is_none_or(|h| h.eq_ignore_ascii_case(&a.hostname));
        let ip_ok = self
            .ip
            .as_deref()
            .is_none_or(|ip| endpoint_host(&a.endpoint) == Some(ip));
        (self.hostname.is_some() || self.ip.is_some()) && host_ok && ip_ok
    }
}

/// The host of `scheme://host:port/...`.
fn endpoint_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next();
    }
    authority.split(':').next()
}

/// When machines will be unavailable (Mesos' maintenance window).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceWindow {
    pub machines: Vec<MachineId>,
    /// The start of the unavailability, ns since the epoch.
    pub start_ns: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<i64>,
}

/// A package installed from the catalogue and the parts it made (each
/// part belongs to one install).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageInstall {
    /// The app's id, or `/<package name>` (or the id asked for) when the
    /// package makes no app.
    pub id: String,
    pub name: String,
    pub version: String,
    /// The repository it came from.
    pub source: String,
    /// The options given, as JSON text.
    pub options: String,
    /// The package as installed, as JSON text.
    pub package: String,
    /// The Marathon app it made.
    #[serde(default)]
    pub app: Option<String>,
    /// The Chronos job it made.
    #[serde(default)]
    pub job: Option<String>,
    /// The plugins it installed.
    #[serde(default)]
    pub plugins: Vec<String>,
    pub installed_at: u64,
}

impl PackageInstall {
    /// Its parts, each named by kind (`app:/web`, `job:report`, `plugin:x`).
    pub fn parts(&self) -> Vec<String> {
        let mut out: Vec<String> = self.app.iter().map(|a| format!("app:{a}")).collect();
        out.extend(self.job.iter().map(|j| format!("job:{j}")));
        out.extend(self.plugins.iter().map(|p| format!("plugin:{p}")));
        out
    }
}

/// A repository of packages: an index served at `uri`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRepo {
    pub name: String,
    pub uri: String,
}

/// Every change to the state. Append new variants at the end; never change
/// the meaning of one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// A master starts leading `term`.
    BeginTerm {
        term: u64,
        leader: LeaderInfo,
        /// Used only when the state has no cluster id yet.
        cluster_id: String,
    },
    /// An agent registers (`agent_id` None) or re-registers.
    RegisterAgent {
        agent_id: Option<AgentId>,
        info: AgentInfo,
        /// The name in the agent's certificate (`None` under --insecure).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        principal: Option<String>,
        now: f64,
    },
    SetAgentState {
        agent_id: AgentId,
        state: AgentState,
    },
    /// A framework registers or updates its info.
    RegisterFramework {
        framework_id: FrameworkId,
        info: FrameworkInfo,
        now: f64,
    },
    /// Tasks accepted by the leader's offer checks, to be recorded as
    /// STAGING. `staging_uuids` pairs with `tasks`.
    LaunchTasks {
        framework_id: FrameworkId,
        agent_id: AgentId,
        tasks: Vec<TaskSpec>,
        staging_uuids: Vec<uuid::Uuid>,
        now: f64,
    },
    /// A status update from an agent (or made by the master).
    StatusUpdate {
        status: TaskStatus,
    },
    /// The framework processed the update with `uuid`.
    AcknowledgeStatus {
        task_id: TaskId,
        uuid: uuid::Uuid,
    },
    KvSet {
        framework_id: FrameworkId,
        key: String,
        value: Blob,
    },
    KvDelete {
        framework_id: FrameworkId,
        key: String,
    },
    InstallPlugin {
        record: Box<PluginRecord>,
    },
    RemovePlugin {
        name: String,
    },
    /// Puts back the version a plugin had before its last upgrade (and
    /// keeps the replaced one, so a second rollback undoes the first).
    RollbackPlugin {
        name: String,
    },
    /// Replaces a plugin's configuration overrides.
    ConfigurePlugin {
        name: String,
        config: BTreeMap<String, String>,
    },
    /// Writes a cluster variable (all its items), if `cas` holds.
    VarSet {
        path: String,
        items: BTreeMap<String, String>,
        #[serde(default)]
        cas: Option<u64>,
    },
    /// Deletes a cluster variable, if `cas` holds.
    VarDelete {
        path: String,
        #[serde(default)]
        cas: Option<u64>,
    },
    /// The first management token; refused once one was made.
    AclBootstrap {
        token: acl::TokenRecord,
    },
    /// A token (expired tokens are dropped as it is added).
    AclTokenCreate {
        token: acl::TokenRecord,
    },
    AclTokenRevoke {
        accessor: String,
    },
    /// Adds or replaces a user.
    AclUserSet {
        user: acl::UserRecord,
    },
    AclUserRemove {
        name: String,
    },
    /// Adds or replaces a policy.
    AclPolicySet {
        policy: acl::Policy,
    },
    AclPolicyRemove {
        name: String,
    },
    /// Trusts a public key to sign plugins (adds or replaces by name).
    /// With `bootstrap`, only if no bootstrap key was ever added.
    PluginKeySet {
        key: acl::TrustedKey,
        #[serde(default)]
        bootstrap: bool,
    },
    PluginKeyRemove {
        name: String,
    },
    /// A framework is torn down: it may never register again (its tasks
    /// are killed by the leader).
    RemoveFramework {
        framework_id: FrameworkId,
        now: f64,
    },
    /// Sets roles' weights, all or none.
    RoleWeightsSet {
        weights: BTreeMap<String, f64>,
    },
    /// Sets roles' quotas (an empty quota removes it), all or none.
    RoleQuotasSet {
        quotas: BTreeMap<String, roles::Quota>,
    },
    /// Reserves unreserved resources no task holds on an agent for a role.
    ReserveResources {
        agent_id: AgentId,
        role: String,
        resources: Resources,
    },
    /// Gives back dynamically reserved resources no task or volume holds.
    UnreserveResources {
        agent_id: AgentId,
        role: String,
        resources: Resources,
    },
    /// Creates persistent volumes from their roles' free reserved disk,
    /// all or none.
    CreateVolumes {
        agent_id: AgentId,
        volumes: Vec<Volume>,
    },
    /// Destroys persistent volumes no task uses, all or none (the leader
    /// then has the agent delete their data).
    DestroyVolumes {
        agent_id: AgentId,
        /// Named by id and role (both must match).
        volumes: Vec<Volume>,
    },
    /// Adds a package repository at `index` (the end when `None`); its
    /// name and URI must be new.
    PackageRepoAdd {
        repo: PackageRepo,
        #[serde(default)]
        index: Option<usize>,
    },
    /// Removes the package repository named `name` or at `uri`.
    PackageRepoDelete {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        uri: Option<String>,
    },
    /// Records a package install before its parts are made; its id must
    /// be new and none of its parts another install's.
    PackageInstalled {
        install: Box<PackageInstall>,
    },
    /// Forgets the package install `id` (its parts are removed first).
    PackageUninstalled {
        id: String,
    },
    /// Takes an agent out of service: no offers, no launches.
    DeactivateAgent {
        agent_id: AgentId,
    },
    /// Puts an agent back in service (refused while it drains).
    ReactivateAgent {
        agent_id: AgentId,
    },
    /// Starts draining an agent: deactivated, its tasks to be killed.
    DrainAgent {
        agent_id: AgentId,
        #[serde(default)]
        max_grace_period_secs: Option<f64>,
        #[serde(default)]
        mark_gone: bool,
        #[serde(default)]
        let_finish: bool,
        now: f64,
    },
    /// A draining agent has no live task left.
    AgentDrained {
        agent_id: AgentId,
    },
    /// Replaces the maintenance schedule (an empty one cancels it).
    UpdateMaintenanceSchedule {
        windows: Vec<MaintenanceWindow>,
    },
    /// Takes scheduled machines down.
    StartMaintenance {
        machines: Vec<MachineId>,
    },
    /// Brings machines that are down up again (and out of the schedule).
    StopMaintenance {
        machines: Vec<MachineId>,
    },
}

impl Command {
    /// Whether applying this may change the ACLs (tokens, users, policies,
    /// trusted keys): a command that does gives them a new generation.
    pub fn may_change_acl(&self) -> bool {
        matches!(
            self,
            Command::AclBootstrap { .. }
                | Command::AclTokenCreate { .. }
                | Command::AclTokenRevoke { .. }
                | Command::AclUserSet { .. }
                | Command::AclUserRemove { .. }
                | Command::AclPolicySet { .. }
                | Command::AclPolicyRemove { .. }
                | Command::PluginKeySet { .. }
                | Command::PluginKeyRemove { .. }
        )
    }
}

/// What applying a status update did (the master's answer to the agent).
pub use wasmos_core::protocol::StatusOutcome;

/// The result of applying one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Ok,
    AgentRegistered {
        agent_id: AgentId,
        new: bool,
    },
    TasksLaunched {
        accepted: Vec<TaskId>,
        rejected: Vec<(TaskId, String)>,
    },
    Status {
        outcome: StatusOutcome,
    },
    /// The command was refused; nothing changed.
    Rejected {
        reason: String,
    },
    /// A variable was written (or deleted) at this index.
    Var {
        modify_index: u64,
    },
    /// A check-and-set condition did not hold; nothing changed.
    Conflict {
        reason: String,
    },
}

fn machine_name(m: &MachineId) -> String {
    match (&m.hostname, &m.ip) {
        (Some(h), Some(ip)) => format!("{h} ({ip})"),
        (Some(h), None) => h.clone(),
        (None, Some(ip)) => ip.clone(),
        (None, None) => "(unnamed)".into(),
    }
}

fn rejected(reason: impl Into<String>) -> Response {
    Response::Rejected {
        reason: reason.into(),
    }
}

impl State {
    /// Applies one command. Deterministic: same state and command, same
    /// result. A refused command changes nothing.
    pub fn apply(&mut self, cmd: Command) -> Response {
        if cmd.may_change_acl() {
            self.acl.generation = acl::Generation::next();
        }
        match cmd {
            Command::BeginTerm {
                term,
                leader,
                cluster_id,
            } => {
                // Raft has one leader per term: a leader that starts over
                // within its term (same master) may record it again.
                let same_leader = self
                    .leader
                    .as_ref()
                    .is_some_and(|l| l.master_id == leader.master_id);
                if term < self.term || (term == self.term && !same_leader) {
                    return rejected(format!("term {term} is not newer than {}", self.term));
                }
                if self.cluster_id.is_empty() {
                    self.cluster_id = cluster_id;
                }
                self.term = term;
                self.leader = Some(leader);
                Response::Ok
            }
            Command::RegisterAgent {
                agent_id,
                info,
                principal,
                now,
            } => self.register_agent(agent_id, info, principal, now),
            Command::SetAgentState { agent_id, state } => match self.agents.get_mut(&agent_id) {
                Some(a) if a.state == AgentState::Gone && state != AgentState::Gone => {
                    rejected(format!("agent {agent_id} was marked gone; that is final"))
                }
                Some(a) => {
                    a.state = state;
                    // Gone is final: so is the agent's certificate,
                    // unless the same machine already serves under a new
                    // id with it (it rebooted).
                    if state == AgentState::Gone
                        && let Some(p) = a.principal.clone()
                        && !self.agents.values().any(|o| {
                            o.id != agent_id
                                && o.state != AgentState::Gone
                                && o.principal.as_ref() == Some(&p)
                        })
                    {
                        self.revoked_agents.insert(p, agent_id);
                    }
                    Response::Ok
                }
                None => rejected(format!("unknown agent {agent_id}")),
            },
            Command::RegisterFramework {
                framework_id,
                info,
                now,
            } => {
                let existing = self.frameworks.get(&framework_id);
                if existing.is_some_and(|f| f.removed_at.is_some()) {
                    return rejected(format!("framework {framework_id} has been removed"));
                }
                let registered_at = existing.map_or(now, |f| f.registered_at);
                self.frameworks.insert(
                    framework_id.clone(),
                    FrameworkRecord {
                        id: framework_id,
                        info,
                        registered_at,
                        removed_at: None,
                    },
                );
                Response::Ok
            }
            Command::LaunchTasks {
                framework_id,
                agent_id,
                tasks,
                staging_uuids,
                now,
            } => self.launch(framework_id, agent_id, tasks, staging_uuids, now),
            Command::StatusUpdate { status } => Response::Status {
                outcome: self.status_update(status),
            },
            Command::AcknowledgeStatus { task_id, uuid } => {
                let Some(task) = self.tasks.get_mut(&task_id) else {
                    return rejected(format!("unknown task {task_id}"));
                };
                if task.pending.front().map(|s| s.uuid) != Some(uuid) {
                    return rejected(format!(
                        "update {uuid} is not the next unacknowledged update of task {task_id}"
                    ));
                }
                task.pending.pop_front();
                self.retire_if_done(&task_id);
                Response::Ok
            }
            Command::KvSet {
                framework_id,
                key,
                value,
            } => {
                if key.len() > MAX_KV_KEY {
                    return rejected(format!("key is longer than {MAX_KV_KEY} bytes"));
                }
                if value.0.len() > MAX_KV_VALUE {
                    return rejected(format!("value is larger than {MAX_KV_VALUE} bytes"));
                }
                self.kv.entry(framework_id).or_default().insert(key, value);
                Response::Ok
            }
            Command::VarSet { path, items, cas } => {
                if let Err(e) = vars::check_path(&path).and_then(|_| vars::check_items(&items)) {
                    return rejected(e);
                }
                let current = self.vars.get(&path);
                if let Err(e) = vars::cas_holds(current, cas) {
                    return Response::Conflict { reason: e };
                }
                if current.is_none() && self.vars.len() >= vars::MAX_VARS {
                    return rejected(format!(
                        "the cluster holds {} variables already; delete some first",
                        vars::MAX_VARS
                    ));
                }
                self.vars_index += 1;
                let index = self.vars_index;
                let create_index = current.map_or(index, |v| v.create_index);
                self.vars.insert(
                    path,
                    vars::Var {
                        items,
                        create_index,
                        modify_index: index,
                    },
                );
                Response::Var {
                    modify_index: index,
                }
            }
            Command::VarDelete { path, cas } => {
                let current = self.vars.get(&path);
                if current.is_none() && cas.is_none() {
                    return Response::Var {
                        modify_index: self.vars_index,
                    };
                }
                if let Err(e) = vars::cas_holds(current, cas) {
                    return Response::Conflict { reason: e };
                }
                self.vars.remove(&path);
                self.vars_index += 1;
                Response::Var {
                    modify_index: self.vars_index,
                }
            }
            Command::AclBootstrap { token } => {
                if self.acl.bootstrapped {
                    return rejected("the cluster's ACLs were bootstrapped already");
                }
                self.acl.bootstrapped = true;
                self.acl.tokens.insert(token.secret_hash.clone(), token);
                Response::Ok
            }
            Command::AclTokenCreate { token } => {
                // A session is named after the principal that logged in.
                if !token.session
                    && let Err(e) = acl::check_name("token", &token.name)
                {
                    return rejected(e);
                }
                let now = token.created_at;
                self.acl.tokens.retain(|_, t| !t.expired(now));
                if token.session {
                    // The principal's oldest sessions end to make room.
                    let mut mine: Vec<(f64, String)> = self
                        .acl
                        .tokens
                        .values()
                        .filter(|t| t.session && t.name == token.name)
                        .map(|t| (t.created_at, t.accessor.clone()))
                        .collect();
                    mine.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
                    let excess = (mine.len() + 1).saturating_sub(acl::MAX_SESSIONS_PER_PRINCIPAL);
                    for (_, accessor) in mine.into_iter().take(excess) {
                        self.acl.tokens.retain(|_, t| t.accessor != accessor);
                        self.end_sessions_of(&format!("token:{accessor}"));
                    }
                }
                if self.acl.tokens.len() >= acl::MAX_ACL_OBJECTS {
                    return rejected(format!(
                        "the cluster holds {} tokens already; revoke some",
                        acl::MAX_ACL_OBJECTS
                    ));
                }
                if self.acl.tokens.contains_key(&token.secret_hash)
                    || self.acl.token_by_accessor(&token.accessor).is_some()
                {
                    return rejected("a token with that secret or accessor exists");
                }
                self.acl.tokens.insert(token.secret_hash.clone(), token);
                Response::Ok
            }
            Command::AclTokenRevoke { accessor } => {
                let before = self.acl.tokens.len();
                self.acl.tokens.retain(|_, t| t.accessor != accessor);
                if self.acl.tokens.len() == before {
                    return rejected(format!("no token with accessor {accessor}"));
                }
                self.end_sessions_of(&format!("token:{accessor}"));
                Response::Ok
            }
            Command::AclUserSet { user } => {
                if let Err(e) = acl::check_name("user", &user.name) {
                    return rejected(e);
                }
                if !self.acl.users.contains_key(&user.name)
                    && self.acl.users.len() >= acl::MAX_ACL_OBJECTS
                {
                    return rejected("too many users");
                }
                // A changed password or policies end the user's sessions.
                self.end_sessions_of(&format!("user:{}", user.name));
                self.acl.users.insert(user.name.clone(), user);
                Response::Ok
            }
            Command::AclUserRemove { name } => match self.acl.users.remove(&name) {
                Some(_) => {
                    self.end_sessions_of(&format!("user:{name}"));
                    Response::Ok
                }
                None => rejected(format!("no user named {name}")),
            },
            Command::AclPolicySet { policy } => {
                if let Err(e) = policy.validate() {
                    return rejected(e);
                }
                if !self.acl.policies.contains_key(&policy.name)
                    && self.acl.policies.len() >= acl::MAX_ACL_OBJECTS
                {
                    return rejected("too many policies");
                }
                self.acl.policies.insert(policy.name.clone(), policy);
                Response::Ok
            }
            Command::AclPolicyRemove { name } => match self.acl.policies.remove(&name) {
                Some(_) => Response::Ok,
                None => rejected(format!("no policy named {name}")),
            },
            Command::PluginKeySet { key, bootstrap } => {
                if let Err(e) = acl::check_name("key", &key.name) {
                    return rejected(e);
                }
                if bootstrap && self.acl.plugin_keys_bootstrapped {
                    return rejected("the bootstrap signing key was added already");
                }
                let why_not = if let Some(k) = self.acl.plugin_keys.get(&key.name) {
                    Some(format!(
                        "a key named {} is trusted already ({}); remove it first",
                        k.name, k.fingerprint
                    ))
                } else if let Some(k) = self
                    .acl
                    .plugin_keys
                    .values()
                    .find(|k| k.fingerprint == key.fingerprint)
                {
                    Some(format!("that key is trusted already, as {}", k.name))
                } else if self.acl.plugin_keys.len() >= acl::MAX_TRUSTED_KEYS {
                    Some(format!(
                        "the cluster trusts {} keys already; remove some",
                        acl::MAX_TRUSTED_KEYS
                    ))
                } else {
                    None
                };
                match why_not {
                    // The bootstrap key is offered once: an operator's own
                    // key of that name, or the key itself under another
                    // name, stays as it is, and it is not offered again.
                    Some(_) if bootstrap => {
                        self.acl.plugin_keys_bootstrapped = true;
                        Response::Ok
                    }
                    Some(why) => rejected(why),
                    None => {
                        self.acl.plugin_keys_bootstrapped |= bootstrap;
                        self.acl.plugin_keys.insert(key.name.clone(), key);
                        Response::Ok
                    }
                }
            }
            Command::PluginKeyRemove { name } => match self.acl.plugin_keys.remove(&name) {
                Some(_) => Response::Ok,
                None => rejected(format!("no trusted key named {name}")),
            },
            Command::RemoveFramework { framework_id, now } => {
                match self.frameworks.get_mut(&framework_id) {
                    Some(f) if f.removed_at.is_none() => {
                        f.removed_at = Some(now);
                        // Nobody is left to acknowledge its updates.
                        let mut ids = Vec::new();
                        for t in self.tasks.values_mut() {
                            if t.framework_id == framework_id {
                                t.pending.clear();
                                ids.push(t.spec.task_id.clone());
                            }
                        }
                        for id in ids {
                            self.retire_if_done(&id);
                        }
                        Response::Ok
                    }
                    Some(_) => rejected(format!("framework {framework_id} was removed already")),
                    None => rejected(format!("no framework {framework_id}")),
                }
            }
            Command::RoleWeightsSet { weights } => self.set_roles(
                weights,
                |role, w| {
                    if w.is_finite() && *w > 0.0 && *w <= 1e6 {
                        Ok(())
                    } else {
                        Err(format!(
                            "role {role}: a weight is a number above 0 (and at most 1e6), got {w}"
                        ))
                    }
                },
                |c, w| c.weight = w,
            ),
            Command::RoleQuotasSet { quotas } => {
                self.set_roles(quotas, |role, q| q.check(role), |c, q| c.quota = q)
            }
            Command::ReserveResources {
                agent_id,
                role,
                resources,
            } => self.reserve(agent_id, role, resources),
            Command::UnreserveResources {
                agent_id,
                role,
                resources,
            } => self.unreserve(agent_id, role, resources),
            Command::CreateVolumes { agent_id, volumes } => self.create_volumes(agent_id, volumes),
            Command::DestroyVolumes { agent_id, volumes } => {
                self.destroy_volumes(agent_id, volumes)
            }
            Command::PackageRepoAdd { repo, index } => {
                if let Some(same) = self
                    .package_repos
                    .iter()
                    .find(|r| r.name == repo.name || r.uri == repo.uri)
                {
                    return rejected(format!(
                        "a repository named {:?} at {:?} is already present",
                        same.name, same.uri
                    ));
                }
                let at = index.unwrap_or(self.package_repos.len());
                if at > self.package_repos.len() {
                    return rejected(format!(
                        "index {at} is past the end of the list ({} repositories)",
                        self.package_repos.len()
                    ));
                }
                self.package_repos.insert(at, repo);
                Response::Ok
            }
            Command::PackageRepoDelete { name, uri } => {
                let before = self.package_repos.len();
                self.package_repos.retain(|r| {
                    !(name.as_ref().is_some_and(|n| *n == r.name)
                        || uri.as_ref().is_some_and(|u| *u == r.uri))
                });
                if self.package_repos.len() == before {
                    return rejected("no such repository".to_string());
                }
                Response::Ok
            }
            Command::PackageInstalled { install } => {
                if self.package_installs.contains_key(&install.id) {
                    return rejected(format!("{} is already installed", install.id));
                }
                let parts = install.parts();
                for other in self.package_installs.values() {
                    if let Some(p) = other.parts().iter().find(|p| parts.contains(p)) {
                        return rejected(format!(
                            "{p} belongs to the install {} of {}",
                            other.id, other.name
                        ));
                    }
                }
                self.package_installs.insert(install.id.clone(), *install);
                Response::Ok
            }
            Command::DeactivateAgent { agent_id } => match self.agents.get_mut(&agent_id) {
                Some(a) if a.state == AgentState::Gone => {
                    rejected(format!("agent {agent_id} was marked gone"))
                }
                Some(a) => {
                    a.deactivated = true;
                    Response::Ok
                }
                None => rejected(format!("unknown agent {agent_id}")),
            },
            Command::ReactivateAgent { agent_id } => match self.agents.get_mut(&agent_id) {
                Some(a) if a.state == AgentState::Gone => {
                    rejected(format!("agent {agent_id} was marked gone"))
                }
                Some(a)
                    if a.drain
                        .as_ref()
                        .is_some_and(|d| d.state == DrainState::Draining) =>
                {
                    rejected(format!(
                        "agent {agent_id} is draining: a drain cannot be cancelled; reactivate it once it is drained"
                    ))
                }
                Some(a) => {
                    a.deactivated = false;
                    a.drain = None;
                    Response::Ok
                }
                None => rejected(format!("unknown agent {agent_id}")),
            },
            Command::DrainAgent {
                agent_id,
                max_grace_period_secs,
                mark_gone,
                let_finish,
                now,
            } => match self.agents.get_mut(&agent_id) {
                Some(a) if a.state == AgentState::Gone => {
                    rejected(format!("agent {agent_id} was marked gone"))
                }
                Some(_)
                    if max_grace_period_secs
                        .is_some_and(|g| !(0.0..=31_536_000.0).contains(&g)) =>
                {
                    rejected("max_grace_period must be between 0 and a year")
                }
                Some(a) => {
                    a.deactivated = true;
                    a.drain = Some(DrainInfo {
                        state: DrainState::Draining,
                        max_grace_period_secs,
                        mark_gone,
                        let_finish,
                        started_at: a.drain.as_ref().map_or(now, |d| d.started_at),
                    });
                    Response::Ok
                }
                None => rejected(format!("unknown agent {agent_id}")),
            },
            Command::AgentDrained { agent_id } => {
                let live = self.live_tasks_on(&agent_id).count();
                match self.agents.get_mut(&agent_id) {
                    Some(a) if live == 0 => match &mut a.drain {
                        Some(d) => {
                            d.state = DrainState::Drained;
                            Response::Ok
                        }
                        None => rejected(format!("agent {agent_id} is not draining")),
                    },
                    Some(_) => rejected(format!("agent {agent_id} still runs {live} tasks")),
                    None => rejected(format!("unknown agent {agent_id}")),
                }
            }
            Command::UpdateMaintenanceSchedule { windows } => {
                let mut seen = std::collections::BTreeSet::new();
                for w in &windows {
                    if w.machines.is_empty() {
                        return rejected("a maintenance window needs at least one machine");
                    }
                    if w.duration_ns.is_some_and(|d| d < 0) {
                        return rejected("a window's duration must not be negative");
                    }
                    for m in &w.machines {
                        if m.hostname.as_deref().is_none_or(str::is_empty)
                            && m.ip.as_deref().is_none_or(str::is_empty)
                        {
                            return rejected("a machine needs a hostname or an ip");
                        }
                        if !seen.insert(m.clone()) {
                            return rejected(format!(
                                "machine {} appears in more than one window",
                                machine_name(m)
                            ));
                        }
                    }
                }
                if let Some(m) = self.machines_down.iter().find(|m| !seen.contains(*m)) {
                    return rejected(format!(
                        "machine {} is down for maintenance: it cannot leave the schedule until STOP_MAINTENANCE brings it up",
                        machine_name(m)
                    ));
                }
                self.maintenance = windows;
                Response::Ok
            }
            Command::StartMaintenance { machines } => {
                if machines.is_empty() {
                    return rejected("name at least one machine");
                }
                for m in &machines {
                    if !self.maintenance.iter().any(|w| w.machines.contains(m)) {
                        return rejected(format!(
                            "machine {} is not in the maintenance schedule",
                            machine_name(m)
                        ));
                    }
                }
                self.machines_down.extend(machines);
                Response::Ok
            }
            Command::StopMaintenance { machines } => {
                if machines.is_empty() {
                    return rejected("name at least one machine");
                }
                if let Some(m) = machines.iter().find(|m| !self.machines_down.contains(*m)) {
                    return rejected(format!("machine {} is not down", machine_name(m)));
                }
                for m in &machines {
                    self.machines_down.remove(m);
                }
                for w in &mut self.maintenance {
                    w.machines.retain(|m| !machines.contains(m));
                }
                self.maintenance.retain(|w| !w.machines.is_empty());
                Response::Ok
            }
            Command::PackageUninstalled { id } => match self.package_installs.remove(&id) {
                Some(_) => Response::Ok,
                None => rejected(format!("no package is installed as {id}")),
            },
            Command::KvDelete { framework_id, key } => {
                if let Some(ns) = self.kv.get_mut(&framework_id) {
                    ns.remove(&key);
                }
                Response::Ok
            }
            Command::InstallPlugin { record } => {
                if let Err(e) = record.manifest.validate() {
                    return rejected(e.to_string());
                }
                let name = record.manifest.name.clone();
                for prefix in &record.manifest.http_prefixes {
                    if wasmos_core::plugin::SHARED_PREFIXES.contains(&prefix.as_str()) {
                        continue;
                    }
                    if let Some(other) = self.plugins.values().find(|p| {
                        p.manifest.name != name
                            && p.manifest.http_prefixes.iter().any(|q| {
                                wasmos_core::plugin::prefix_holds(q, prefix)
                                    || wasmos_core::plugin::prefix_holds(prefix, q)
                            })
                    }) {
                        return rejected(format!(
                            "http prefix {prefix} is held by plugin {}",
                            other.manifest.name
                        ));
                    }
                }
                if let Some(old) = self.plugins.get(&name)
                    && old.manifest.kind != record.manifest.kind
                {
                    return rejected(format!(
                        "plugin {name} is a {} plugin; a new version must be one too (or remove {name} first)",
                        old.manifest.kind
                    ));
                }
                if record.source == "bundled" {
                    self.bundled_seen.insert(name.clone());
                }
                if let Some(old) = self.plugins.insert(name.clone(), *record) {
                    let new = &self.plugins[&name];
                    if old.digest != new.digest || old.manifest != new.manifest {
                        self.previous_plugins.insert(name, old);
                    }
                }
                Response::Ok
            }
            Command::RemovePlugin { name } => match self.plugins.remove(&name) {
                Some(_) => {
                    self.previous_plugins.remove(&name);
                    Response::Ok
                }
                None => rejected(format!("no plugin named {name}")),
            },
            Command::RollbackPlugin { name } => {
                if !self.plugins.contains_key(&name) {
                    return rejected(format!("no plugin named {name}"));
                }
                let Some(previous) = self.previous_plugins.remove(&name) else {
                    return rejected(format!(
                        "plugin {name} has no earlier version to roll back to (it was not upgraded since it was installed)"
                    ));
                };
                if !wasmos_core::plugin::world_compatible(&previous.manifest.world_version) {
                    let why = format!(
                        "plugin {name}'s earlier version {} targets world {}, which this cluster no longer serves",
                        previous.manifest.version, previous.manifest.world_version
                    );
                    self.previous_plugins.insert(name, previous);
                    return rejected(why);
                }
                let Some(current) = self.plugins.remove(&name) else {
                    return rejected(format!("no plugin named {name}"));
                };
                self.plugins.insert(name.clone(), previous);
                self.previous_plugins.insert(name, current);
                Response::Ok
            }
            Command::ConfigurePlugin { name, config } => match self.plugins.get_mut(&name) {
                Some(p) => {
                    p.config = config;
                    Response::Ok
                }
                None => rejected(format!("no plugin named {name}")),
            },
        }
    }

    fn register_agent(
        &mut self,
        agent_id: Option<AgentId>,
        info: AgentInfo,
        principal: Option<String>,
        now: f64,
    ) -> Response {
        if self.machine_down(&info) {
            return rejected(format!(
                "machine {} is down for maintenance; its agents may register once STOP_MAINTENANCE brings it up",
                info.hostname
            ));
        }
        if let Some(id) = agent_id {
            if self
                .agents
                .get(&id)
                .is_some_and(|r| r.state == AgentState::Gone)
            {
                return rejected(format!(
                    "agent {id} was marked gone by an operator and may not register again; start it with a fresh data directory to join as a new agent"
                ));
            }
            if let Some(rec) = self.agents.get(&id)
                && !rec.speaks_for(principal.as_deref())
            {
                return rejected(format!(
                    "agent {id} registered with another certificate: one agent cannot register as another"
                ));
            }
            let new = !self.agents.contains_key(&id);
            let rec = self
                .agents
                .entry(id.clone())
                .or_insert_with(|| AgentRecord {
                    id: id.clone(),
                    info: info.clone(),
                    state: AgentState::Active,
                    registered_at: now,
                    reregistered_at: None,
                    principal: principal.clone(),
                    reservations: RoleResources::new(),
                    volumes: BTreeMap::new(),
                    deactivated: false,
                    drain: None,
                });
            rec.info = info;
            if principal.is_some() {
                rec.principal = principal;
            }
            rec.state = AgentState::Active;
            if !new {
                rec.reregistered_at = Some(now);
            }
            return Response::AgentRegistered { agent_id: id, new };
        }
        let prefix = self.cluster_id.split('-').next().unwrap_or("");
        let prefix = if prefix.is_empty() { "agent" } else { prefix };
        let id = loop {
            let candidate = format!("{prefix}-S{}", self.next_agent);
            self.next_agent += 1;
            match AgentId::new(candidate) {
                Ok(id) if !self.agents.contains_key(&id) => break id,
                Ok(_) => continue,
                Err(e) => return rejected(format!("cannot make an agent id: {e}")),
            }
        };
        self.agents.insert(
            id.clone(),
            AgentRecord {
                id: id.clone(),
                info,
                state: AgentState::Active,
                registered_at: now,
                reregistered_at: None,
                principal,
                reservations: RoleResources::new(),
                volumes: BTreeMap::new(),
                deactivated: false,
                drain: None,
            },
        );
        Response::AgentRegistered {
            agent_id: id,
            new: true,
        }
    }

    /// Ends the sessions made from `parent`'s credentials, and sessions
    /// made from those.
    fn end_sessions_of(&mut self, parent: &str) {
        let mut gone = vec![parent.to_string()];
        while let Some(p) = gone.pop() {
            let ended: Vec<String> = self
                .acl
                .tokens
                .values()
                .filter(|t| t.session && t.parent.as_deref() == Some(p.as_str()))
                .map(|t| t.accessor.clone())
                .collect();
            self.acl
                .tokens
                .retain(|_, t| !(t.session && t.parent.as_deref() == Some(p.as_str())));
            gone.extend(ended.into_iter().map(|a| format!("token:{a}")));
        }
    }

    /// What is free on one agent (see [`AgentPools`]).
    pub fn agent_pools(&self, agent: &AgentId) -> Option<AgentPools> {
        let mut pools = self.agents.get(agent)?.idle_pools();
        for t in self.live_tasks_on(agent) {
            pools.hold(&t.spec);
        }
        for e in executors_among(self.live_tasks_on(agent)).values() {
            pools.hold_executor(e);
        }
        Some(pools)
    }

    /// What is free on every agent, in one pass over the tasks.
    pub fn pools_by_agent(&self) -> BTreeMap<AgentId, AgentPools> {
        let mut out: BTreeMap<AgentId, AgentPools> = self
            .agents
            .iter()
            .map(|(id, a)| (id.clone(), a.idle_pools()))
            .collect();
        let mut executors = ExecutorsSeen::default();
        for t in self.tasks.values().filter(|t| !t.state().is_terminal()) {
            if let Some(p) = out.get_mut(&t.agent_id) {
                p.hold(&t.spec);
                if let Some(e) = executors.first(t) {
                    p.hold_executor(e);
                }
            }
        }
        out
    }

    /// The executors that run: one per agent, framework and executor id
    /// with a task that has not ended (an executor lives while its tasks
    /// do, and holds its resources that long).
    pub fn live_executors(&self) -> BTreeMap<(AgentId, FrameworkId, ExecutorId), &ExecutorSpec> {
        executors_among(self.tasks.values().filter(|t| !t.state().is_terminal()))
    }

    fn reserve(&mut self, agent_id: AgentId, role: String, resources: Resources) -> Response {
        if let Err(e) = reservation::check_reservation_role(&role) {
            return rejected(e);
        }
        if resources.is_empty() {
            return rejected("nothing to reserve: the resources are empty");
        }
        let Some(pools) = self.agent_pools(&agent_id) else {
            return rejected(format!("unknown agent {agent_id}"));
        };
        if !pools.unreserved.contains(&resources) {
            return rejected(format!(
                "agent {agent_id} has {} unreserved and free, not the {resources} asked for",
                pools.unreserved
            ));
        }
        if let Some(a) = self.agents.get_mut(&agent_id) {
            reservation::add(&mut a.reservations, &role, &resources);
        }
        Response::Ok
    }

    fn unreserve(&mut self, agent_id: AgentId, role: String, resources: Resources) -> Response {
        if resources.is_empty() {
            return rejected("nothing to unreserve: the resources are empty");
        }
        let Some(pools) = self.agent_pools(&agent_id) else {
            return rejected(format!("unknown agent {agent_id}"));
        };
        // Only what no task or volume holds of the dynamic reservations.
        let mut dynamic = pools.reserved.clone();
        for (r, s) in &pools.static_reserved {
            if let Some(d) = dynamic.get_mut(r) {
                *d = d.saturating_sub(s);
            }
        }
        if let Err(e) = reservation::take(&mut dynamic, &role, &resources) {
            return rejected(format!(
                "{e} dynamically (tasks and persistent volumes keep what they use; destroy the volumes first; static reservations change only with the agent's --resources)"
            ));
        }
        let Some(a) = self.agents.get_mut(&agent_id) else {
            return rejected(format!("unknown agent {agent_id}"));
        };
        let mut dynamic = a.reservations.clone();
        if let Err(e) = reservation::take(&mut dynamic, &role, &resources) {
            return rejected(format!(
                "{e} dynamically; static reservations change only with the agent's --resources"
            ));
        }
        a.reservations = dynamic;
        Response::Ok
    }

    fn create_volumes(&mut self, agent_id: AgentId, volumes: Vec<Volume>) -> Response {
        let Some(mut pools) = self.agent_pools(&agent_id) else {
            return rejected(format!("unknown agent {agent_id}"));
        };
        if volumes.is_empty() {
            return rejected("no volumes to create");
        }
        let existing = &self.agents[&agent_id].volumes;
        let mut ids = std::collections::BTreeSet::new();
        for v in &volumes {
            if let Err(e) = v.validate() {
                return rejected(e);
            }
            if v.uuid.is_empty() {
                return rejected(format!(
                    "volume {}: the master gives every volume a uuid",
                    v.id
                ));
            }
            if existing.contains_key(&v.id) || !ids.insert(v.id.as_str()) {
                return rejected(format!(
                    "a volume with persistence id {} exists on agent {agent_id}",
                    v.id
                ));
            }
            if let Err(e) = reservation::take(&mut pools.reserved, &v.role, &v.resources()) {
                return rejected(format!("volume {}: {e}", v.id));
            }
        }
        if existing.len() + volumes.len() > MAX_VOLUMES_PER_AGENT {
            return rejected(format!(
                "an agent holds at most {MAX_VOLUMES_PER_AGENT} volumes"
            ));
        }
        if let Some(a) = self.agents.get_mut(&agent_id) {
            for v in volumes {
                a.volumes.insert(v.id.clone(), v);
            }
        }
        Response::Ok
    }

    fn destroy_volumes(&mut self, agent_id: AgentId, volumes: Vec<Volume>) -> Response {
        let Some(pools) = self.agent_pools(&agent_id) else {
            return rejected(format!("unknown agent {agent_id}"));
        };
        let existing = &self.agents[&agent_id].volumes;
        for v in &volumes {
            match existing.get(&v.id) {
                Some(e) if e.role == v.role => {}
                _ => {
                    return rejected(format!(
                        "agent {agent_id} has no volume {} of role {}",
                        v.id, v.role
                    ));
                }
            }
            if !pools.volumes.iter().any(|f| f.id == v.id) {
                return rejected(format!(
                    "volume {} is in use by a task; kill the task first",
                    v.id
                ));
            }
        }
        if let Some(a) = self.agents.get_mut(&agent_id) {
            for v in &volumes {
                a.volumes.remove(&v.id);
            }
        }
        Response::Ok
    }

    fn launch(
        &mut self,
        framework_id: FrameworkId,
        agent_id: AgentId,
        tasks: Vec<TaskSpec>,
        staging_uuids: Vec<uuid::Uuid>,
        now: f64,
    ) -> Response {
        match self.frameworks.get(&framework_id) {
            None => return rejected(format!("unknown framework {framework_id}")),
            Some(f) if f.removed_at.is_some() => {
                return rejected(format!("framework {framework_id} has been removed"));
            }
            Some(_) => {}
        }
        match self.agents.get(&agent_id) {
            Some(a) if a.deactivated => {
                return rejected(format!(
                    "agent {agent_id} is deactivated (drained or in maintenance)"
                ));
            }
            Some(a) if self.machine_down(&a.info) => {
                return rejected(format!(
                    "agent {agent_id} is on a machine down for maintenance"
                ));
            }
            Some(a) if a.state == AgentState::Active => {}
            Some(_) => return rejected(format!("agent {agent_id} is not active")),
            None => return rejected(format!("unknown agent {agent_id}")),
        }
        if staging_uuids.len() != tasks.len() {
            return rejected("every task needs a staging uuid");
        }
        let mut accepted = Vec::new();
        let mut rejected_tasks = Vec::new();
        // On an agent with reservations (or for a task using them), what
        // the task takes is checked here too: the offers it came from may
        // have counted on an operation the state refused (an UNRESERVE of
        // a static reservation), and reserved pools must never go short.
        let check = self.agents[&agent_id].volumes.len()
            + self.agents[&agent_id].reservations.len()
            + self.agents[&agent_id].info.reserved.len()
            > 0
            || tasks
                .iter()
                .any(|t| !t.reserved.is_empty() || !t.volumes.is_empty());
        let mut pools = if check {
            self.agent_pools(&agent_id)
        } else {
            None
        };
        // The executors running there, and those this launch starts: a
        // task must agree with its executor's description.
        let mut executors: BTreeMap<ExecutorId, ExecutorSpec> =
            if tasks.iter().any(|t| t.executor.is_some()) {
                executors_among(self.live_tasks_on(&agent_id))
                    .into_iter()
                    .filter(|((_, f, _), _)| f == &framework_id)
                    .map(|((_, _, e), spec)| (e, spec.clone()))
                    .collect()
            } else {
                BTreeMap::new()
            };
        let groups: BTreeMap<TaskId, TaskId> = tasks
            .iter()
            .filter_map(|t| Some((t.task_id.clone(), t.group.clone()?)))
            .collect();
        for (mut spec, uuid) in tasks.into_iter().zip(staging_uuids) {
            let id = spec.task_id.clone();
            if self.tasks.contains_key(&id) {
                rejected_tasks.push((id, "a task with this id already exists".to_string()));
                continue;
            }
            // The spec was checked once, before the commit
            // (`Allocator::accept`); it is not checked again here: what the
            // log holds must apply alike under every later version, whose
            // checks may differ.
            let mut new_executor = None;
            if let Some(e) = &spec.executor {
                match executors.get(&e.executor_id) {
                    Some(running) if !running.same_as(e) => {
                        rejected_tasks.push((
                            id,
                            format!(
                                "executor {} runs on this agent with another description (command, resources or kind)",
                                e.executor_id
                            ),
                        ));
                        continue;
                    }
                    Some(_) => {}
                    None => new_executor = Some(e.clone()),
                }
            }
            if let Some(p) = pools.as_mut() {
                let fits = p.fits(&spec).and_then(|()| match &new_executor {
                    Some(e) => {
                        let need = spec
                            .resources
                            .saturating_sub(&reservation::total(&spec.reserved))
                            .add(&e.resources);
                        if p.unreserved.contains(&need) {
                            Ok(())
                        } else {
                            Err(format!(
                                "the agent has {} unreserved and free, not the {need} the task and its executor need",
                                p.unreserved
                            ))
                        }
                    }
                    None => Ok(()),
                });
                if let Err(e) = fits {
                    rejected_tasks.push((id, e));
                    continue;
                }
                if let Some(e) = &new_executor {
                    p.hold_executor(e);
                }
                // The task names its volumes; their directories are the
                // records' (a volume made again is a new one).
                for m in &mut spec.volumes {
                    if let Some(v) = p.volumes.iter().find(|v| v.id == m.id) {
                        m.uuid = v.uuid.clone();
                    }
                }
                p.hold(&spec);
            }
            let staging = TaskStatus {
                task_id: id.clone(),
                state: TaskState::Staging,
                agent_id: Some(agent_id.clone()),
                source: wasmos_core::Source::Master,
                reason: None,
                message: None,
                exit_code: None,
                signal: None,
                healthy: None,
                ready: None,
                timestamp: now,
                uuid,
                data: None,
                executor_id: None,
            };
            if let Some(e) = new_executor {
                executors.insert(e.executor_id.clone(), e);
            }
            let task = TaskRecord {
                spec,
                framework_id: framework_id.clone(),
                agent_id: agent_id.clone(),
                statuses: vec![staging],
                pending: VecDeque::new(),
                launched_at: now,
            };
            self.live.update(&task);
            if let Some(old) = self.tasks.insert(id.clone(), task)
                && old.agent_id != agent_id
            {
                self.live.remove(&old);
            }
            accepted.push(id);
        }
        // A task group launches whole or not at all.
        let failed_groups: BTreeMap<TaskId, String> = rejected_tasks
            .iter()
            .filter_map(|(id, why)| {
                let group = groups.get(id)?;
                Some((group.clone(), format!("task {id} of its group: {why}")))
            })
            .collect();
        if !failed_groups.is_empty() {
            accepted.retain(|id| {
                let Some(why) = groups.get(id).and_then(|g| failed_groups.get(g)) else {
                    return true;
                };
                if let Some(t) = self.tasks.remove(id) {
                    self.live.remove(&t);
                }
                rejected_tasks.push((id.clone(), format!("its task group cannot launch: {why}")));
                false
            });
        }
        Response::TasksLaunched {
            accepted,
            rejected: rejected_tasks,
        }
    }

    fn status_update(&mut self, status: TaskStatus) -> StatusOutcome {
        // A removed framework is told nothing more: its tasks' updates are
        // recorded, never queued for it.
        let removed = self.tasks.get(&status.task_id).is_some_and(|t| {
            self.frameworks
                .get(&t.framework_id)
                .is_some_and(|f| f.removed_at.is_some())
        });
        let Some(task) = self.tasks.get_mut(&status.task_id) else {
            return StatusOutcome::UnknownTask;
        };
        if task.knows_update(&status.uuid) {
            return StatusOutcome::Duplicate;
        }
        if task.state().is_terminal() {
            return StatusOutcome::AlreadyTerminal;
        }
        let task_id = status.task_id.clone();
        if !removed {
            task.pending.push_back(status.clone());
        }
        task.statuses.push(status);
        if task.statuses.len() > MAX_STATUS_HISTORY {
            let extra = task.statuses.len() - MAX_STATUS_HISTORY;
            task.statuses.drain(..extra);
        }
        self.live.update(task);
        self.retire_if_done(&task_id);
        StatusOutcome::Applied
    }

    /// Sets one thing about several roles, all or none: every role name and
    /// value is checked first; roles back at the defaults are forgotten.
    fn set_roles<T>(
        &mut self,
        items: BTreeMap<String, T>,
        check: impl Fn(&str, &T) -> Result<(), String>,
        set: impl Fn(&mut roles::RoleConfig, T),
    ) -> Response {
        for (role, v) in &items {
            if let Err(e) = roles::check_role(role).and_then(|_| check(role, v)) {
                return rejected(e);
            }
        }
        let new = items
            .keys()
            .filter(|r| !self.roles.contains_key(*r))
            .count();
        if self.roles.len() + new > roles::MAX_ROLES {
            return rejected(format!(
                "at most {} roles can be configured",
                roles::MAX_ROLES
            ));
        }
        for (role, v) in items {
            set(self.roles.entry(role).or_default(), v);
        }
        self.roles
            .retain(|_, c| c.weight != 1.0 || !c.quota.is_empty());
        Response::Ok
    }

    /// Moves a terminal task with nothing left to tell its framework to the
    /// completed list, and forgets the oldest completed tasks over the limit.
    fn retire_if_done(&mut self, task_id: &TaskId) {
        let done = self
            .tasks
            .get(task_id)
            .is_some_and(|t| t.state().is_terminal() && t.pending.is_empty());
        if !done {
            return;
        }
        self.completed.push_back(task_id.clone());
        while self.completed.len() > MAX_COMPLETED_TASKS {
            if let Some(old) = self.completed.pop_front()
                && let Some(t) = self.tasks.remove(&old)
            {
                self.live.remove(&t);
            }
        }
    }

    /// Resources held by tasks that have not ended and their executors,
    /// per agent.
    pub fn used_by_agent(&self) -> BTreeMap<AgentId, Resources> {
        let mut out: BTreeMap<AgentId, Resources> = BTreeMap::new();
        let mut executors = ExecutorsSeen::default();
        for t in self.tasks.values().filter(|t| !t.state().is_terminal()) {
            let e = out.entry(t.agent_id.clone()).or_default();
            *e = e.add(&t.spec.resources);
            if let Some(x) = executors.first(t) {
                *e = e.add(&x.resources);
            }
        }
        out
    }

    /// Resources held by tasks that have not ended and their executors,
    /// per framework.
    pub fn used_by_framework(&self) -> BTreeMap<FrameworkId, Resources> {
        let mut out: BTreeMap<FrameworkId, Resources> = BTreeMap::new();
        let mut executors = ExecutorsSeen::default();
        for t in self.tasks.values().filter(|t| !t.state().is_terminal()) {
            let e = out.entry(t.framework_id.clone()).or_default();
            *e = e.add(&t.spec.resources);
            if let Some(x) = executors.first(t) {
                *e = e.add(&x.resources);
            }
        }
        out
    }

    /// Tasks on `agent` that have not ended.
    /// Whether the agent with `info` is on a machine down for maintenance.
    pub fn machine_down(&self, info: &AgentInfo) -> bool {
        self.machines_down.iter().any(|m| m.holds(info))
    }

    /// The maintenance mode of a machine: DOWN, DRAINING (scheduled) or UP.
    pub fn machine_mode(&self, info: &AgentInfo) -> &'static str {
        if self.machine_down(info) {
            "DOWN"
        } else if self
            .maintenance
            .iter()
            .any(|w| w.machines.iter().any(|m| m.holds(info)))
        {
            "DRAINING"
        } else {
            "UP"
        }
    }

    pub fn live_tasks_on<'a>(&'a self, agent: &'a AgentId) -> impl Iterator<Item = &'a TaskRecord> {
        self.tasks
            .values()
            .filter(move |t| &t.agent_id == agent && !t.state().is_terminal())
    }

    /// The agents a machine registering anew (no agent id) replaces: the
    /// same machine under an earlier boot. It is the same machine when it
    /// presents the same certificate (the agent keeps it in its data
    /// directory), or, with no certificates (--insecure), when it has the
    /// same hostname and endpoint. Only a changed boot id counts: after a
    /// reboot nothing the old agent ran is left, while a new registration
    /// on the same boot (its identity file lost) may have tasks running.
    pub fn replaced_by(&self, info: &AgentInfo, principal: Option<&str>) -> Vec<AgentId> {
        let endpoint = |e: &str| e.trim_end_matches('/').to_string();
        self.agents
            .values()
            .filter(|a| a.state != AgentState::Gone && a.info.boot_id != info.boot_id)
            .filter(|a| a.info.hostname == info.hostname)
            .filter(|a| match (a.principal.as_deref(), principal) {
                (Some(mine), Some(theirs)) => mine == theirs,
                (None, None) => endpoint(&a.info.endpoint) == endpoint(&info.endpoint),
                _ => false,
            })
            .map(|a| a.id.clone())
            .collect()
    }

    /// How each task this master has live on `agent` ends when the agent
    /// registers again without it (and no launch of it is in flight):
    /// one that never left STAGING here before the agent went silent never
    /// reached it — TASK_DROPPED (Mesos' answer for a task the agent does
    /// not know); one that started is TASK_GONE. Frameworks that are not
    /// partition aware get TASK_LOST for both. STAGING tasks are left out:
    /// their launch is sent again.
    pub fn missing_on_return(
        &self,
        agent: &AgentId,
        reported: impl Fn(&TaskId) -> bool,
    ) -> Vec<(TaskId, TaskState, Reason)> {
        self.live_tasks_on(agent)
            .filter(|t| t.state() != TaskState::Staging && !reported(&t.spec.task_id))
            .map(|t| {
                let aware = self
                    .frameworks
                    .get(&t.framework_id)
                    .is_some_and(|f| f.info.partition_aware);
                let (state, reason) = if t.state_before_unreachable() == Some(TaskState::Staging) {
                    (TaskState::Dropped, Reason::ReasonTaskUnknown)
                } else {
                    (TaskState::Gone, Reason::ReasonAgentRestarted)
                };
                let state = if aware { state } else { TaskState::Lost };
                (t.spec.task_id.clone(), state, reason)
            })
            .collect()
    }

    /// The unreachable tasks of a returning agent that are live again at
    /// once, each with the state the agent reports: only those it reports
    /// in the state this master last saw them in. A task the agent reports
    /// further along has updates on their way (the agent retries them until
    /// acknowledged) that carry it there in order; marking it RUNNING now
    /// would put that RUNNING before its own STARTING.
    pub fn tasks_back_on(
        &self,
        agent: &AgentId,
        reported: impl IntoIterator<Item = (TaskId, TaskState)>,
    ) -> Vec<(TaskId, TaskState)> {
        reported
            .into_iter()
            .filter(|(id, state)| {
                !state.is_terminal()
                    && self.tasks.get(id).is_some_and(|t| {
                        &t.agent_id == agent
                            && t.state() == TaskState::Unreachable
                            && t.state_before_unreachable() == Some(*state)
                    })
            })
            .collect()
    }
}

/// The executors of `tasks`, one per agent, framework and executor id.
fn executors_among<'a>(
    tasks: impl Iterator<Item = &'a TaskRecord>,
) -> BTreeMap<(AgentId, FrameworkId, ExecutorId), &'a ExecutorSpec> {
    let mut seen = ExecutorsSeen::default();
    tasks
        .filter_map(|t| {
            let e = seen.first(t)?;
            Some((
                (
                    t.agent_id.clone(),
                    t.framework_id.clone(),
                    e.executor_id.clone(),
                ),
                e,
            ))
        })
        .collect()
}

/// Counts each executor once in a pass over live tasks: an executor's
/// resources are held once, however many of its tasks run.
#[derive(Default)]
pub(crate) struct ExecutorsSeen<'a> {
    seen: std::collections::HashSet<(&'a AgentId, &'a FrameworkId, &'a ExecutorId)>,
}

impl<'a> ExecutorsSeen<'a> {
    /// The task's executor, the first time a task of it is seen.
    pub(crate) fn first(&mut self, t: &'a TaskRecord) -> Option<&'a ExecutorSpec> {
        let e = t.spec.executor.as_ref()?;
        self.seen
            .insert((&t.agent_id, &t.framework_id, &e.executor_id))
            .then_some(e)
    }
}

/// A point-in-time copy of the state, as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub schema_version: u32,
    /// The index of the last log entry the state includes.
    pub last_index: u64,
    pub state: State,
}

/// Why a snapshot cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(
        "snapshot schema version {found} is newer than this binary's {SCHEMA_VERSION}; upgrade wasmos"
    )]
    TooNew { found: u32 },
    #[error("snapshot is not valid: {0}")]
    Decode(#[from] serde_json::Error),
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data with string map keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        #[derive(Deserialize)]
        struct Version {
            schema_version: u32,
        }
        let v: Version = serde_json::from_slice(bytes)?;
        if v.schema_version > SCHEMA_VERSION {
            return Err(SnapshotError::TooNew {
                found: v.schema_version,
            });
        }
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests;
