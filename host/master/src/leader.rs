//! The leading master: everything that acts, as opposed to what is stored.
//!
//! [`Leader`] holds the store, the allocator, the links to agents and the
//! framework actors. It is the only place that talks to agents and runs
//! framework plugins. Everything it decides enters the state through
//! `Store::propose`; everything it reacts to comes from committed entries
//! (the dispatcher) or from agents' requests.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, mpsc, watch};
use uuid::Uuid;
use wasmos_core::protocol::{self, RegisterAgent, Registered};
use wasmos_core::{
    AgentId, AgentInfo, AgentState, FrameworkId, Reason, Source, TaskId, TaskSpec, TaskState,
    TaskStatus,
};
use wasmos_runtime::PluginRuntime;
use wasmos_runtime::placement::PlacementService;
use wasmos_state::{Command, LeaderInfo, Response, StatusOutcome};
use wasmos_store::{Applied, Store};

use crate::MasterConfig;
use crate::agents::AgentLinks;
use crate::allocator::{Allocator, Inputs};
use crate::error::MasterError;
use crate::events::{EventHub, events_for};
use crate::frameworks::{FrameworkHandle, FrameworkMsg};
use crate::node::Node;

/// Seconds since the Unix epoch.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The leading master's context, shared by its loops and HTTP handlers.
/// An inverse offer made to an external framework, and its answer.
#[derive(Debug, Clone)]
pub struct InverseOffer {
    pub framework: FrameworkId,
    pub agent: AgentId,
    pub machine: wasmos_state::MachineId,
    /// ACCEPT or DECLINE, and when.
    pub answer: Option<(&'static str, f64)>,
}

pub struct Leader {
    pub config: MasterConfig,
    /// Counters and histograms of this master's leading (shared with the
    /// node, so they outlive a term).
    pub instruments: crate::metrics::Instruments,
    pub master_id: String,
    pub address: String,
    pub term: u64,
    pub store: Store,
    pub allocator: Mutex<Allocator>,
    pub agents: AgentLinks,
    pub frameworks: std::sync::RwLock<BTreeMap<FrameworkId, FrameworkHandle>>,
    pub events: EventHub,
    /// To agents: TLS with this master's certificate, agents' verified
    /// (each dialled by its certificate's name, see [`Leader::agent_endpoint`]).
    pub http: reqwest::Client,
    /// Where agents' certificate names are (the DNS of `http`).
    pub agent_names: crate::tls::AgentNames,
    /// For OCI registries: the system's trust roots, no certificate of
    /// ours, longer timeouts.
    pub registry: reqwest::Client,
    /// Package repositories' indexes read lately (through `registry`).
    pub indexes: crate::catalogue::IndexCache,
    pub runtime: PluginRuntime,
    /// Tasks whose launch is on its way to an agent.
    pub placement: Arc<PlacementService>,
    pub inflight: Mutex<HashSet<TaskId>>,
    /// Why tasks went where they did (bounded, this leader's only).
    pub placements: crate::placements::Placements,
    /// Tasks' JSON as `/master/state` gives it, kept between answers.
    pub task_json: crate::mesos::state_json::TaskJson,
    /// Agents' pools and frameworks' use, kept between allocation cycles.
    pub(crate) usage_memo: Mutex<wasmos_state::usage::UsageMemo>,
    pub alloc_wakeup: Notify,
    /// Silent agents waiting their turn to be marked unreachable.
    pub unreachable_waiting: std::sync::atomic::AtomicUsize,
    /// Tasks on draining agents this leader has asked their agents to kill.
    drain_kills: Mutex<HashSet<TaskId>>,
    /// Inverse offers this leader made, by id (Mesos keeps them in the
    /// master's memory too: a new leader makes them again).
    pub(crate) inverse_offers: Mutex<BTreeMap<String, InverseOffer>>,
    pub shutdown: watch::Receiver<bool>,
    pub(crate) reconcile_lock: tokio::sync::Mutex<()>,
    /// One external framework subscribes at a time (ids are handed out
    /// in order).
    pub(crate) subscribe_lock: tokio::sync::Mutex<()>,
    /// Set once the framework actors and loops run.
    ready: watch::Sender<bool>,
    /// When this master began leading: agents registered with an earlier
    /// leader get one agent timeout to re-register before they count as
    /// unreachable.
    leading_since: Instant,
    /// When this master began leading, in seconds since the epoch.
    pub elected_at: f64,
}

impl std::fmt::Debug for Leader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leader")
            .field("master_id", &self.master_id)
            .field("term", &self.term)
            .finish()
    }
}

impl Leader {
    /// Begins leading raft term `term` on `node`: records the term in the
    /// state, installs bundled plugins new to the cluster, then (in the
    /// background) starts the framework actors and the leader's loops.
    /// Everything stops when `shutdown` is set.
    pub async fn start(
        node: &Arc<Node>,
        term: u64,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Arc<Leader>> {
        let config = node.config.clone();
        let store = node.store.clone();
        let master_id = store.node_id().to_string();
        let address = node.url.clone();
        let applied = store.subscribe();
        let runtime = node.runtime.clone();
        let placement = PlacementService::new(&runtime);
        let agent_names = crate::tls::AgentNames::default();
        let http = crate::tls::with_tls(
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(15))
                .dns_resolver(Arc::new(agent_names.clone())),
            node.tls.as_deref(),
            wasmos_tls::Expect::Agent,
        )?
        .build()?;
        let (ready, _) = watch::channel(false);
        let leader = Arc::new(Leader {
            instruments: node.instruments.clone(),
            master_id: master_id.clone(),
            address: address.clone(),
            term,
            allocator: Mutex::new(Allocator::new(term)),
            agents: AgentLinks::default(),
            frameworks: Default::default(),
            events: EventHub::default(),
            http,
            agent_names,
            registry: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(300))
                .build()?,
            indexes: Default::default(),
            runtime,
            placement,
            inflight: Mutex::new(HashSet::new()),
            placements: Default::default(),
            task_json: Default::default(),
            usage_memo: Default::default(),
            alloc_wakeup: Notify::new(),
            unreachable_waiting: Default::default(),
            drain_kills: Mutex::new(HashSet::new()),
            inverse_offers: Mutex::new(BTreeMap::new()),
            shutdown,
            reconcile_lock: tokio::sync::Mutex::new(()),
            subscribe_lock: tokio::sync::Mutex::new(()),
            ready,
            leading_since: Instant::now(),
            elected_at: now_secs(),
            store,
            config,
        });
        tokio::spawn(leader.clone().dispatch(applied));

        let self_plain = leader.config.plain_url.clone();
        let r = leader
            .store
            .propose_one(Command::BeginTerm {
                term,
                leader: LeaderInfo {
                    master_id,
                    address,
                    term,
                    plain_address: self_plain,
                },
                cluster_id: Uuid::new_v4().to_string(),
            })
            .await?;
        if let Response::Rejected { reason } = r {
            anyhow::bail!("cannot begin term {term}: {reason}");
        }
        leader.bootstrap_acl().await?;
        leader.bootstrap_plugin_key().await?;
        leader.install_bundled(node.bundled()).await?;
        let me = leader.clone();
        tokio::spawn(async move {
            me.sync_placement_agents();
            me.reconcile_plugins().await;
            me.restore_external_frameworks();
            tokio::spawn(me.clone().allocation_loop());
            tokio::spawn(me.clone().housekeeping_loop());
            me.ready.send_replace(true);
        });
        Ok(leader)
    }

    /// Makes the first management token from `--bootstrap-token-file`,
    /// if the cluster has none yet (only its hash is stored).
    async fn bootstrap_acl(&self) -> anyhow::Result<()> {
        let Some(secret) = &self.config.bootstrap_token else {
            return Ok(());
        };
        if self.store.read(|s| s.acl.bootstrapped) {
            return Ok(());
        }
        let token = wasmos_state::acl::TokenRecord {
            accessor: Uuid::new_v4().to_string(),
            secret_hash: crate::auth::hash_secret(&secret.0),
            name: "management".into(),
            management: true,
            policies: Vec::new(),
            created_at: now_secs(),
            expires_at: None,
            created_by: "bootstrap".into(),
            session: false,
            parent: None,
        };
        match self
            .store
            .propose_one(Command::AclBootstrap { token })
            .await?
        {
            Response::Ok => {
                tracing::info!("made the management token from --bootstrap-token-file");
                Ok(())
            }
            // Another leader did it first.
            Response::Rejected { .. } => Ok(()),
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }

    /// Trusts `--bootstrap-plugin-key` to sign plugins, once per cluster
    /// (an operator who removes it later is not overruled by a restart).
    async fn bootstrap_plugin_key(&self) -> anyhow::Result<()> {
        let Some(pem) = &self.config.bootstrap_plugin_key else {
            return Ok(());
        };
        if self.store.read(|s| s.acl.plugin_keys_bootstrapped) {
            return Ok(());
        }
        let key = wasmos_oci::sign::PublicKey::from_pem(pem, "--bootstrap-plugin-key")?;
        let record = wasmos_state::acl::TrustedKey {
            name: "bootstrap".into(),
            public_key: key.to_pem(),
            fingerprint: key.fingerprint(),
            added_at: now_secs(),
            added_by: "bootstrap".into(),
        };
        match self
            .store
            .propose_one(Command::PluginKeySet {
                key: record,
                bootstrap: true,
            })
            .await?
        {
            Response::Ok => {
                tracing::info!(fingerprint = %key.fingerprint(), "trusting --bootstrap-plugin-key to sign plugins, as `bootstrap`");
                Ok(())
            }
            Response::Rejected { reason } => {
                tracing::warn!("--bootstrap-plugin-key not added: {reason}");
                Ok(())
            }
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }

    /// External frameworks of the state get a handle, disconnected: each
    /// has its failover timeout, from now, to subscribe to this leader.
    fn restore_external_frameworks(self: &Arc<Self>) {
        let external: Vec<(FrameworkId, wasmos_core::FrameworkInfo)> = self.store.read(|s| {
            s.frameworks
                .values()
                .filter(|f| {
                    f.removed_at.is_none() && f.info.kind == wasmos_core::FrameworkKind::External
                })
                .map(|f| (f.id.clone(), f.info.clone()))
                .collect()
        });
        let mut fws = self.frameworks_write();
        for (id, info) in external {
            fws.entry(id.clone())
                .or_insert_with(|| crate::mesos::scheduler::spawn(self, id, &info));
        }
    }

    /// Whether the framework actors and loops run.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the framework plugins run and offers flow (or the
    /// leader stops first, then returns false).
    pub async fn wait_ready(&self) -> bool {
        let mut ready = self.ready.subscribe();
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            r = ready.wait_for(|v| *v) => r.is_ok(),
            _ = shutdown.wait_for(|v| *v) => false,
        }
    }

    pub fn frameworks_read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<FrameworkId, FrameworkHandle>> {
        self.frameworks.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn frameworks_write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<FrameworkId, FrameworkHandle>> {
        self.frameworks.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn allocator(&self) -> std::sync::MutexGuard<'_, Allocator> {
        self.allocator.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reacts to every committed entry: events, framework deliveries,
    /// allocation triggers, plugin changes.
    async fn dispatch(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Arc<Applied>>) {
        let mut shutdown = self.shutdown.clone();
        loop {
            let applied = tokio::select! {
                a = rx.recv() => match a {
                    Some(a) => a,
                    None => return,
                },
                _ = shutdown.wait_for(|v| *v) => return,
            };
            let mut realloc = false;
            let mut plugins_changed = false;
            let mut agents_changed = false;
            let mut pending: Vec<(FrameworkId, TaskId)> = Vec::new();
            let mut lost: Vec<AgentId> = Vec::new();
            let events = self.store.read(|state| {
                let mut events = Vec::new();
                for (cmd, resp) in applied.commands().zip(&applied.responses) {
                    events.extend(events_for(cmd, resp, state));
                    self.instruments.count(cmd, resp);
                    match (cmd, resp) {
                        (
                            Command::StatusUpdate { status },
                            Response::Status {
                                outcome: StatusOutcome::Applied,
                            },
                        ) => {
                            if let Some(t) = state.tasks.get(&status.task_id) {
                                pending.push((t.framework_id.clone(), status.task_id.clone()));
                            }
                            realloc |= status.state.is_terminal();
                        }
                        (
                            Command::SetAgentState {
                                agent_id,
                                state: AgentState::Unreachable | AgentState::Gone,
                            },
                            Response::Ok,
                        ) => {
                            lost.push(agent_id.clone());
                            realloc = true;
                            agents_changed = true;
                        }
                        (Command::RegisterAgent { .. }, _) | (Command::SetAgentState { .. }, _) => {
                            realloc = true;
                            agents_changed = true;
                        }
                        (Command::InstallPlugin { .. }, Response::Ok)
                        | (Command::RemovePlugin { .. }, Response::Ok)
                        | (Command::RollbackPlugin { .. }, Response::Ok)
                        | (Command::ConfigurePlugin { .. }, Response::Ok) => plugins_changed = true,
                        _ => {}
                    }
                }
                events
            });
            for e in events {
                self.events.publish(e);
            }
            {
                let fws = self.frameworks_read();
                // External frameworks hear of a lost agent (Mesos' FAILURE).
                for agent in &lost {
                    for link in fws.values().filter_map(|h| h.link.as_ref()) {
                        link.agent_lost(agent);
                    }
                }
                for (fw, task) in pending {
                    if let Some(h) = fws.get(&fw) {
                        h.mark_pending(task);
                    }
                }
            }
            if agents_changed {
                self.sync_placement_agents();
            }
            if realloc {
                self.alloc_wakeup.notify_one();
            }
            if plugins_changed {
                let me = self.clone();
                tokio::spawn(async move { me.reconcile_plugins().await });
            }
        }
    }

    async fn allocation_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.allocation_interval) => {}
                _ = self.alloc_wakeup.notified() => {}
                _ = shutdown.changed() => return,
            }
            // Off the async threads: at thousands of agents a cycle takes
            // tens of milliseconds, which would delay raft's heartbeats and
            // the API on a worker thread.
            let me = self.clone();
            if tokio::task::spawn_blocking(move || me.allocate_once())
                .await
                .is_err()
            {
                tracing::error!("an allocation cycle panicked; the next one runs as usual");
            }
            self.follow_drains().await;
            self.follow_maintenance();
        }
    }

    /// Takes an agent out of service (DEACTIVATE_AGENT), or back in
    /// (REACTIVATE_AGENT; refused while it drains). Its offers are
    /// rescinded at once.
    pub async fn set_agent_active(
        &self,
        agent_id: &AgentId,
        active: bool,
    ) -> Result<(), MasterError> {
        let cmd = if active {
            Command::ReactivateAgent {
                agent_id: agent_id.clone(),
            }
        } else {
            Command::DeactivateAgent {
                agent_id: agent_id.clone(),
            }
        };
        self.agent_change(agent_id, cmd).await
    }

    /// Drains an agent (DRAIN_AGENT): no more offers or launches there, and
    /// its tasks are killed, each with its kill grace period (at most
    /// `max_grace_period_secs`); once none lives it is DRAINED (and marked
    /// gone if asked). Frameworks see their tasks killed and place them
    /// elsewhere. With `let_finish` its tasks are left to end on their own. A drain cannot be cancelled; draining again changes its
    /// settings.
    pub async fn drain_agent(
        &self,
        agent_id: &AgentId,
        max_grace_period_secs: Option<f64>,
        mark_gone: bool,
        let_finish: bool,
    ) -> Result<(), MasterError> {
        self.agent_change(
            agent_id,
            Command::DrainAgent {
                agent_id: agent_id.clone(),
                max_grace_period_secs,
                mark_gone,
                let_finish,
                now: now_secs(),
            },
        )
        .await
    }

    /// Makes inverse offers to external frameworks for what they run on
    /// machines scheduled for maintenance (once per framework and agent),
    /// and rescinds those whose machine left the schedule or went down.
    fn follow_maintenance(&self) {
        let (wanted, windows) = self.store.read(|s| {
            let mut wanted: BTreeMap<(FrameworkId, AgentId), wasmos_state::MachineId> =
                BTreeMap::new();
            let mut windows = BTreeMap::new();
            for w in &s.maintenance {
                for m in &w.machines {
                    if s.machines_down.contains(m) {
                        continue;
                    }
                    for a in s.agents.values().filter(|a| m.holds(&a.info)) {
                        windows.insert(a.id.clone(), (w.start_ns, w.duration_ns));
                        for t in s.live_tasks_on(&a.id) {
                            let external = s.frameworks.get(&t.framework_id).is_some_and(|f| {
                                matches!(f.info.kind, wasmos_core::FrameworkKind::External)
                            });
                            if external {
                                wanted.insert((t.framework_id.clone(), a.id.clone()), m.clone());
                            }
                        }
                    }
                }
            }
            (wanted, windows)
        });
        let fws = self.frameworks_read();
        let mut made = self
            .inverse_offers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let stale: Vec<String> = made
            .iter()
            .filter(|(_, o)| !wanted.contains_key(&(o.framework.clone(), o.agent.clone())))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some(o) = made.remove(&id)
                && let Some(h) = fws.get(&o.framework)
            {
                h.try_send(FrameworkMsg::RescindInverse(vec![id]));
            }
        }
        for ((fw, agent), machine) in wanted {
            if made.values().any(|o| o.framework == fw && o.agent == agent) {
                continue;
            }
            let Some(h) = fws.get(&fw) else { continue };
            let id = format!("{agent}-I{}", Uuid::new_v4().simple());
            let (start_ns, duration_ns) = windows.get(&agent).copied().unwrap_or((0, None));
            let mut unavailability = serde_json::json!({"start": {"nanoseconds": start_ns}});
            if let Some(d) = duration_ns {
                unavailability["duration"] = serde_json::json!({"nanoseconds": d});
            }
            let offer = serde_json::json!({
                "id": {"value": id},
                "framework_id": {"value": fw.to_string()},
                "agent_id": {"value": agent.to_string()},
                "unavailability": unavailability,
                "resources": [],
            });
            if h.try_send(FrameworkMsg::InverseOffers(vec![offer])) {
                tracing::info!(framework = %fw, %agent, inverse_offer = %id, "inverse offer made");
                made.insert(
                    id,
                    InverseOffer {
                        framework: fw,
                        agent,
                        machine,
                        answer: None,
                    },
                );
            }
        }
    }

    /// A framework's answer to its inverse offers (ACCEPT_INVERSE_OFFERS or
    /// DECLINE_INVERSE_OFFERS): advisory, shown in the maintenance status.
    pub fn answer_inverse_offers(&self, fw: &FrameworkId, ids: &[String], accept: bool) {
        let mut made = self
            .inverse_offers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for id in ids {
            if let Some(o) = made.get_mut(id)
                && &o.framework == fw
            {
                o.answer = Some((if accept { "ACCEPT" } else { "DECLINE" }, now_secs()));
            }
        }
    }

    /// Replaces the maintenance schedule (UPDATE_MAINTENANCE_SCHEDULE).
    pub async fn update_maintenance(
        &self,
        windows: Vec<wasmos_state::MaintenanceWindow>,
    ) -> Result<(), MasterError> {
        self.maintenance_change(Command::UpdateMaintenanceSchedule { windows })
            .await
    }

    /// Takes scheduled machines down (START_MAINTENANCE): their agents get
    /// no offers and may not register, and their tasks end as for an agent
    /// marked gone (TASK_GONE_BY_OPERATOR, or TASK_LOST for frameworks that
    /// are not partition aware), the agents asked to kill them.
    pub async fn start_maintenance(
        self: &Arc<Self>,
        machines: Vec<wasmos_state::MachineId>,
    ) -> Result<(), MasterError> {
        self.maintenance_change(Command::StartMaintenance {
            machines: machines.clone(),
        })
        .await?;
        let now = now_secs();
        let (updates, kills) = self.store.read(|s| {
            let mut updates = Vec::new();
            let mut kills = Vec::new();
            for a in s.agents.values() {
                if !machines.iter().any(|m| m.holds(&a.info)) {
                    continue;
                }
                updates.extend(ended_on_agent(
                    s,
                    &a.id,
                    TaskState::GoneByOperator,
                    Reason::ReasonAgentRemovedByOperator,
                    &format!("machine {} is down for maintenance", a.info.hostname),
                    now,
                ));
                kills.extend(
                    s.live_tasks_on(&a.id)
                        .map(|t| (a.id.clone(), t.spec.task_id.clone())),
                );
            }
            (updates, kills)
        });
        if !updates.is_empty() {
            self.store.propose(updates).await?;
        }
        for (agent_id, task_id) in kills {
            let (me, endpoint) = (self.clone(), self.agent_endpoint(&agent_id));
            tokio::spawn(async move {
                if let Err(e) = me.kill_on_agent(endpoint, &task_id).await {
                    tracing::info!(task = %task_id, error = %e, "could not ask an agent going down to kill a task");
                }
            });
        }
        Ok(())
    }

    /// Brings machines up again (STOP_MAINTENANCE): out of the schedule,
    /// their agents may register and take tasks.
    pub async fn stop_maintenance(
        &self,
        machines: Vec<wasmos_state::MachineId>,
    ) -> Result<(), MasterError> {
        self.maintenance_change(Command::StopMaintenance { machines })
            .await
    }

    async fn maintenance_change(&self, cmd: Command) -> Result<(), MasterError> {
        match self.store.propose_one(cmd).await? {
            Response::Ok => {
                self.alloc_wakeup.notify_one();
                Ok(())
            }
            Response::Rejected { reason } => Err(MasterError::Invalid(reason)),
            other => Err(MasterError::Unexpected(format!("{other:?}"))),
        }
    }

    async fn agent_change(&self, agent_id: &AgentId, cmd: Command) -> Result<(), MasterError> {
        match self.store.propose_one(cmd).await? {
            Response::Ok => {
                tracing::info!(agent = %agent_id, "agent service state changed");
                self.alloc_wakeup.notify_one();
                Ok(())
            }
            Response::Rejected { reason } if reason.starts_with("unknown agent") => {
                Err(MasterError::NotFound(reason))
            }
            Response::Rejected { reason } => Err(MasterError::Conflict(reason)),
            other => Err(MasterError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Kills what still lives on draining agents (once per task and
    /// leader: a new leader asks again), and records an agent drained once
    /// nothing lives there (marking it gone if the drain asked).
    async fn follow_drains(self: &Arc<Self>) {
        let now = now_secs();
        let (to_kill, drained) = self.store.read(|s| {
            let mut to_kill = Vec::new();
            let mut drained = Vec::new();
            for a in s.agents.values() {
                let Some(d) = &a.drain else { continue };
                if d.state != wasmos_state::DrainState::Draining {
                    continue;
                }
                // Framework plugins (Marathon, Chronos) get a hand-off
                // window to start replacements elsewhere and stop their
                // tasks here themselves (`driver.draining-agents`).
                let handoff = d
                    .max_grace_period_secs
                    .unwrap_or(self.config.drain_handoff.as_secs_f64());
                let handing_off = now < d.started_at + handoff;
                let mut live = 0;
                for t in s.live_tasks_on(&a.id) {
                    live += 1;
                    if d.let_finish {
                        continue;
                    }
                    let plugin = s.frameworks.get(&t.framework_id).is_some_and(|f| {
                        matches!(f.info.kind, wasmos_core::FrameworkKind::Plugin { .. })
                    });
                    if plugin && handing_off {
                        continue;
                    }
                    let grace = t.spec.kill_grace_ms();
                    let grace = d
                        .max_grace_period_secs
                        .map_or(grace, |m| grace.min((m * 1000.0) as u64));
                    to_kill.push((a.id.clone(), t.spec.task_id.clone(), grace));
                }
                if live == 0 {
                    drained.push((a.id.clone(), d.mark_gone));
                }
            }
            (to_kill, drained)
        });
        for (agent_id, task_id, grace) in to_kill {
            if !self
                .drain_kills
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(task_id.clone())
            {
                continue;
            }
            let Some(endpoint) = self.agent_endpoint(&agent_id) else {
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                tracing::info!(agent = %agent_id, task = %task_id, grace_ms = grace, "draining: killing a task");
                if let Err(e) = me.send_kill(&endpoint, &task_id, grace).await {
                    tracing::warn!(agent = %agent_id, task = %task_id, error = %e, "draining: the agent did not take the kill; asking again");
                    me.drain_kills
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&task_id);
                }
            });
        }
        for (agent_id, mark_gone) in drained {
            match self
                .store
                .propose_one(Command::AgentDrained {
                    agent_id: agent_id.clone(),
                })
                .await
            {
                Ok(Response::Ok) => {
                    tracing::info!(agent = %agent_id, "agent drained");
                    if mark_gone && let Err(e) = self.mark_gone(&agent_id).await {
                        tracing::warn!(agent = %agent_id, error = %e, "cannot mark the drained agent gone");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(agent = %agent_id, error = %e, "cannot record the agent drained")
                }
            }
        }
    }

    /// One allocation cycle: rescind stale offers, make new ones, send them.
    pub fn allocate_once(&self) {
        let now = Instant::now();
        let offered = self.allocate_and_offer(now);
        self.instruments
            .allocation_seconds
            .observe(now.elapsed().as_secs_f64());
        self.instruments.offers.inc_by(offered);
    }

    /// What live tasks hold in `s` (this leader's state), recomputed only
    /// where it changed since the last call (`wasmos_state::usage`).
    pub(crate) fn usage(&self, s: &wasmos_state::State) -> wasmos_state::usage::Usage {
        s.usage(&mut self.usage_memo.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The body of [`Leader::allocate_once`]; returns how many offers it made.
    fn allocate_and_offer(&self, now: Instant) -> u64 {
        let connected = self.agents.connected();
        let bound = self.agents.bound_ports();
        let (inputs, live_agents) = self.store.read(|s| {
            let mut inputs = Inputs::from_state(s, self.usage(s), |a| connected.contains(a));
            inputs.withhold_ports(&bound);
            let live: HashSet<AgentId> = inputs.agents.iter().map(|a| a.id.clone()).collect();
            (inputs, live)
        });
        let fws = self.frameworks_read();
        let ready: HashSet<FrameworkId> = fws
            .iter()
            .filter(|(_, h)| h.is_active())
            .map(|(id, _)| id.clone())
            .collect();
        let inputs = Inputs {
            frameworks: ready.iter().cloned().collect(),
            ..inputs
        };
        let offers = {
            let mut alloc = self.allocator();
            let rescinded = alloc.rescind(now, self.config.offer_timeout, &live_agents, &ready);
            if !rescinded.is_empty() {
                tracing::debug!(count = rescinded.len(), "offers rescinded");
            }
            send_rescinds(&fws, rescinded);
            alloc.allocate(&inputs, now)
        };
        let made = offers.len() as u64;
        let mut by_fw: BTreeMap<FrameworkId, Vec<wasmos_core::Offer>> = BTreeMap::new();
        for o in offers {
            by_fw.entry(o.framework_id.clone()).or_default().push(o);
        }
        for (fw, offers) in by_fw {
            let ids: Vec<_> = offers.iter().map(|o| o.id.clone()).collect();
            let sent = fws
                .get(&fw)
                .is_some_and(|h| h.try_send(FrameworkMsg::Offers(offers)));
            if !sent {
                self.allocator()
                    .decline(&fw, &ids, Some(Duration::ZERO), now);
            }
        }
        made
    }

    /// Commits an operator's change to an agent's reservations or volumes:
    /// the agent's offers are rescinded and it is not offered until the
    /// change is in the state, so no framework is offered what the change
    /// takes.
    pub async fn change_agent(
        &self,
        agent: &AgentId,
        cmds: Vec<Command>,
    ) -> Result<Vec<Response>, wasmos_store::StoreError> {
        let rescinded = self.allocator().pause_agent(agent);
        send_rescinds(&self.frameworks_read(), rescinded);
        // Launches accepted on the agent's offers are one log entry from
        // being recorded; let them land first (bounded: a commit takes
        // milliseconds).
        let until = Instant::now() + Duration::from_secs(2);
        while self.allocator().agent_held(agent) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let result = self.store.propose(cmds).await;
        self.allocator().resume_agent(agent);
        self.alloc_wakeup.notify_one();
        result
    }

    /// A framework plugin's `destroy-volumes`: its role's volumes of those
    /// ids on the agent are destroyed and their disk unreserved, one volume
    /// at a time (one in use stays, logged). Ids the agent does not hold
    /// for the role are ignored.
    pub async fn destroy_framework_volumes(
        &self,
        framework: &FrameworkId,
        agent: &AgentId,
        ids: &[String],
    ) {
        let (role, volumes) = self.store.read(|s| {
            let role = s
                .frameworks
                .get(framework)
                .map_or_else(|| "*".to_string(), |f| f.info.role.clone());
            let volumes: Vec<wasmos_core::Volume> = s
                .agents
                .get(agent)
                .map(|a| {
                    ids.iter()
                        .filter_map(|id| a.volumes.get(id))
                        .filter(|v| v.role == role)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            (role, volumes)
        });
        for v in volumes {
            let cmds = vec![
                Command::DestroyVolumes {
                    agent_id: agent.clone(),
                    volumes: vec![v.clone()],
                },
                Command::UnreserveResources {
                    agent_id: agent.clone(),
                    role: role.clone(),
                    resources: v.resources(),
                },
            ];
            match self.change_agent(agent, cmds).await {
                Ok(resps) => {
                    if let Some(Response::Rejected { reason }) = resps.first() {
                        tracing::warn!(framework = %framework, %agent, volume = %v.id, "volume not destroyed: {reason}");
                    } else {
                        tracing::info!(framework = %framework, %agent, volume = %v.id, "volume destroyed");
                    }
                }
                Err(e) => {
                    tracing::warn!(framework = %framework, %agent, volume = %v.id, error = %e, "volume not destroyed")
                }
            }
        }
    }

    /// Expires silent agents (framework actors tick themselves).
    async fn housekeeping_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut queue = crate::agents::UnreachableQueue::default();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let now = Instant::now();
            let mut silent = self.agents.expire(now, self.config.agent_timeout);
            if now.duration_since(self.leading_since) > self.config.agent_timeout {
                // Agents of an earlier leader that never came back.
                let linked = self.agents.connected();
                silent.extend(self.store.read(|s| {
                    s.agents
                        .values()
                        .filter(|a| a.state == AgentState::Active && !linked.contains(&a.id))
                        .map(|a| a.id.clone())
                        .collect::<Vec<_>>()
                }));
            }
            queue.add(silent);
            if queue.is_empty() {
                continue;
            }
            let linked = self.agents.connected();
            let rate = self.config.unreachable_rate;
            let due = self.store.read(|s| {
                let registered = s
                    .agents
                    .values()
                    .filter(|a| a.state != AgentState::Gone)
                    .count();
                queue.due(now, rate.allowance(registered), |id| {
                    !linked.contains(id)
                        && s.agents
                            .get(id)
                            .is_some_and(|a| a.state == AgentState::Active)
                })
            });
            for id in due {
                // Registered again while the ones before it were marked.
                if self.agents.is_connected(&id) {
                    continue;
                }
                tracing::warn!(agent = %id, "agent stopped heartbeating; it is unreachable until it registers again");
                if let Err(e) = self.mark_unreachable(&id).await {
                    tracing::warn!(agent = %id, error = %e, "cannot mark the agent unreachable; will try again");
                    queue.add([id]);
                }
                self.alloc_wakeup.notify_one();
            }
            let waiting = queue.len();
            let before = self
                .unreachable_waiting
                .swap(waiting, std::sync::atomic::Ordering::Relaxed);
            if waiting > 0 && waiting != before {
                tracing::warn!(waiting, %rate, "more agents went silent than --agent-unreachable-rate lets be marked unreachable at once: the rest keep their tasks until their turn, and any that comes back first is never marked");
            }
        }
    }

    /// Records a silent agent as unreachable and its live tasks as
    /// TASK_UNREACHABLE (TASK_LOST for frameworks that are not partition
    /// aware), as Mesos does when an agent misses its health checks.
    async fn mark_unreachable(&self, agent_id: &AgentId) -> Result<(), MasterError> {
        let now = now_secs();
        let timeout = self.config.agent_timeout.as_secs_f64();
        let mut commands = vec![Command::SetAgentState {
            agent_id: agent_id.clone(),
            state: AgentState::Unreachable,
        }];
        commands.extend(self.store.read(|s| {
            ended_on_agent(
                s,
                agent_id,
                TaskState::Unreachable,
                Reason::ReasonAgentRemoved,
                &format!(
                    "agent {agent_id} missed its heartbeats for {timeout:.0}s and is unreachable"
                ),
                now,
            )
        }));
        self.store.propose(commands).await?;
        Ok(())
    }

    /// Marks an agent gone for good (Mesos' MARK_AGENT_GONE): its live tasks
    /// become TASK_GONE_BY_OPERATOR (TASK_LOST for frameworks that are not
    /// partition aware), it is never offered again and may not register
    /// again. The agent is asked to kill what it runs, if it still answers.
    pub async fn mark_gone(self: &Arc<Self>, agent_id: &AgentId) -> Result<(), MasterError> {
        let now = now_secs();
        let (known, live, updates) = self.store.read(|s| {
            let live: Vec<TaskId> = s
                .live_tasks_on(agent_id)
                .map(|t| t.spec.task_id.clone())
                .collect();
            let updates = ended_on_agent(
                s,
                agent_id,
                TaskState::GoneByOperator,
                Reason::ReasonAgentRemovedByOperator,
                &format!("an operator marked agent {agent_id} gone"),
                now,
            );
            (s.agents.contains_key(agent_id), live, updates)
        });
        if !known {
            return Err(MasterError::NotFound(format!("no agent {agent_id}")));
        }
        let mut commands = vec![Command::SetAgentState {
            agent_id: agent_id.clone(),
            state: AgentState::Gone,
        }];
        commands.extend(updates);
        self.store.propose(commands).await?;
        self.alloc_wakeup.notify_one();
        // The tasks are recorded gone first, so that what the agent says
        // of them afterwards does not change their end.
        let endpoint = self.agent_endpoint(agent_id);
        for id in live {
            let (me, endpoint) = (self.clone(), endpoint.clone());
            tokio::spawn(async move {
                if let Err(e) = me.kill_on_agent(endpoint, &id).await {
                    tracing::info!(task = %id, error = %e, "could not ask the gone agent to kill a task");
                }
            });
        }
        Ok(())
    }

    /// Registers (or re-registers) an agent and reconciles its tasks: STAGING
    /// tasks it does not report never reached it (an earlier leader stopped
    /// before telling it) and are sent again; other live tasks it does not
    /// report are lost; tasks it reports that are not live here are orphans
    /// it must kill.
    /// `principal`: the name in the agent's certificate (under TLS).
    pub async fn register_agent(
        self: &Arc<Self>,
        req: RegisterAgent,
        principal: Option<String>,
    ) -> Result<Registered, MasterError> {
        let info = req.info;
        if info.hostname.trim().is_empty() {
            return Err(MasterError::Invalid("hostname must not be empty".into()));
        }
        let endpoint = reqwest::Url::parse(&info.endpoint)
            .map_err(|e| MasterError::Invalid(format!("endpoint {:?}: {e}", info.endpoint)))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(MasterError::Invalid(format!(
                "endpoint {} must be an http(s) URL",
                info.endpoint
            )));
        }
        let endpoint = info.endpoint.trim_end_matches('/').to_string();
        let anew = req.agent_id.is_none();
        let r = self
            .store
            .propose_one(Command::RegisterAgent {
                agent_id: req.agent_id,
                info: info.clone(),
                principal: principal.clone(),
                now: now_secs(),
            })
            .await?;
        let agent_id = match r {
            Response::AgentRegistered { agent_id, new } => {
                tracing::info!(agent = %agent_id, %endpoint, new, "agent registered");
                agent_id
            }
            Response::Rejected { reason } => return Err(MasterError::Invalid(reason)),
            other => return Err(MasterError::Unexpected(format!("{other:?}"))),
        };
        if anew {
            self.replace_rebooted(&agent_id, &info, principal.as_deref())
                .await?;
        }
        self.agents
            .connect(agent_id.clone(), endpoint, Instant::now(), req.bound_ports);

        let reported: HashMap<TaskId, TaskState> = req
            .tasks
            .into_iter()
            .map(|t| (t.task_id, t.state))
            .collect();
        let inflight = self.inflight_snapshot();
        let now = now_secs();
        let (unsent, lost, back, orphans) = self.store.read(|s| {
            let missing = || {
                s.live_tasks_on(&agent_id)
                    .filter(|t| !reported.contains_key(&t.spec.task_id))
                    .filter(|t| !inflight.contains(&t.spec.task_id))
            };
            // The agent refuses launches of an older term and ignores
            // launches of tasks it knows, so sending again is safe.
            let mut unsent: BTreeMap<FrameworkId, Vec<TaskSpec>> = BTreeMap::new();
            for t in missing().filter(|t| t.state() == TaskState::Staging) {
                unsent
                    .entry(t.framework_id.clone())
                    .or_default()
                    .push(t.spec.clone());
            }
            let lost: Vec<TaskStatus> = s
                .missing_on_return(&agent_id, |id| {
                    reported.contains_key(id) || inflight.contains(id)
                })
                .into_iter()
                .map(|(id, state, reason)| {
                    let why = if reason == Reason::ReasonTaskUnknown {
                        "it never reached the agent, which was away"
                    } else {
                        "its agent registered again without it"
                    };
                    master_status(
                        &id,
                        Some(&agent_id),
                        state,
                        reason,
                        format!("{why} (agent {agent_id})"),
                        now,
                    )
                })
                .collect();
            let back: Vec<TaskStatus> = s
                .tasks_back_on(&agent_id, reported.iter().map(|(id, st)| (id.clone(), *st)))
                .into_iter()
                .map(|(id, state)| {
                    master_status(
                        &id,
                        Some(&agent_id),
                        state,
                        Reason::ReasonAgentReregistered,
                        format!("agent {agent_id} registered again and the task is {state}"),
                        now,
                    )
                })
                .collect();
            let orphans: Vec<TaskId> = reported
                .iter()
                .filter(|(id, st)| {
                    !st.is_terminal()
                        && s.tasks
                            .get(*id)
                            .is_none_or(|t| t.state().is_terminal() || t.agent_id != agent_id)
                })
                .map(|(id, _)| id.clone())
                .collect();
            (unsent, lost, back, orphans)
        });
        for (framework_id, tasks) in unsent {
            tracing::info!(agent = %agent_id, framework = %framework_id, count = tasks.len(), "sending launches an earlier leader did not deliver");
            self.send_launch(framework_id, agent_id.clone(), tasks);
        }
        if !lost.is_empty() {
            tracing::warn!(agent = %agent_id, count = lost.len(), "tasks missing from a re-registered agent");
            self.store
                .propose(
                    lost.into_iter()
                        .map(|status| Command::StatusUpdate { status })
                        .collect(),
                )
                .await?;
        }
        if !back.is_empty() {
            tracing::info!(agent = %agent_id, count = back.len(), "unreachable tasks are live again");
            self.store
                .propose(
                    back.into_iter()
                        .map(|status| Command::StatusUpdate { status })
                        .collect(),
                )
                .await?;
        }
        if !orphans.is_empty() {
            tracing::warn!(agent = %agent_id, ?orphans, "agent runs tasks this master does not know; telling it to kill them");
        }
        self.alloc_wakeup.notify_one();
        let volumes = Some(self.volumes_of(&agent_id));
        Ok(Registered {
            agent_id,
            cluster_id: self.store.read(|s| s.cluster_id.clone()),
            master_id: self.master_id.clone(),
            term: self.term,
            heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u64,
            orphans,
            plugins: self.agent_plugins().1,
            volumes,
        })
    }

    /// A machine that rebooted registers as a new agent; the agent it was
    /// before is gone for good, and so is everything it ran (Mesos removes
    /// an agent whose address registers anew): its live tasks become
    /// TASK_GONE (TASK_LOST for frameworks that are not partition aware)
    /// now, not after the unreachable window.
    async fn replace_rebooted(
        &self,
        agent_id: &AgentId,
        info: &AgentInfo,
        principal: Option<&str>,
    ) -> Result<(), MasterError> {
        let now = now_secs();
        let commands: Vec<Command> = self.store.read(|s| {
            s.replaced_by(info, principal)
                .into_iter()
                .filter(|old| old != agent_id)
                .flat_map(|old| {
                    tracing::warn!(agent = %agent_id, %old, host = %info.hostname, "the machine rebooted: its earlier agent and that agent's tasks are gone");
                    let ended = ended_on_agent(
                        s,
                        &old,
                        TaskState::Gone,
                        Reason::ReasonAgentRestarted,
                        &format!(
                            "the machine of agent {old} rebooted and registered again as agent {agent_id}"
                        ),
                        now,
                    );
                    std::iter::once(Command::SetAgentState {
                        agent_id: old,
                        state: AgentState::Gone,
                    })
                    .chain(ended)
                })
                .collect()
        });
        if !commands.is_empty() {
            self.store.propose(commands).await?;
        }
        Ok(())
    }

    /// The persistent volumes an agent holds, by directory name.
    pub fn volumes_of(&self, agent: &AgentId) -> Vec<String> {
        self.store.read(|s| {
            s.agents
                .get(agent)
                .map(|a| a.volumes.values().map(|v| v.dir_name()).collect())
                .unwrap_or_default()
        })
    }

    fn inflight_snapshot(&self) -> HashSet<TaskId> {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_inflight(&self, tasks: &[TaskId], on: bool) {
        let mut set = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        for t in tasks {
            if on {
                set.insert(t.clone());
            } else {
                set.remove(t);
            }
        }
    }

    /// Records a status update from an agent; returns once it is durable.
    pub async fn status_update(
        &self,
        update: protocol::StatusUpdate,
    ) -> Result<StatusOutcome, MasterError> {
        let owner = self.store.read(|s| {
            s.tasks
                .get(&update.status.task_id)
                .map(|t| (t.agent_id.clone(), t.framework_id.clone()))
        });
        if let Some((agent, _)) = &owner
            && agent != &update.agent_id
        {
            return Err(MasterError::Conflict(format!(
                "task {} runs on agent {agent}, not {}",
                update.status.task_id, update.agent_id
            )));
        }
        let mut status = update.status;
        status.agent_id = Some(update.agent_id);
        match self
            .store
            .propose_one(Command::StatusUpdate { status })
            .await?
        {
            Response::Status { outcome } => Ok(outcome),
            other => Err(MasterError::Unexpected(format!("{other:?}"))),
        }
    }
}

/// A status update made by the master (not by an agent).
pub fn master_status(
    task_id: &TaskId,
    agent_id: Option<&AgentId>,
    state: TaskState,
    reason: Reason,
    message: String,
    now: f64,
) -> TaskStatus {
    TaskStatus {
        task_id: task_id.clone(),
        state,
        agent_id: agent_id.cloned(),
        source: Source::Master,
        reason: Some(reason),
        message: Some(message),
        exit_code: None,
        signal: None,
        healthy: None,
        ready: None,
        timestamp: now,
        uuid: Uuid::new_v4(),
        data: None,
        executor_id: None,
    }
}

/// Task ids with updates their framework has not acknowledged.
pub fn pending_tasks(store: &Store, framework: &FrameworkId) -> BTreeSet<TaskId> {
    store.read(|s| {
        s.tasks
            .values()
            .filter(|t| &t.framework_id == framework && !t.pending.is_empty())
            .map(|t| t.spec.task_id.clone())
            .collect()
    })
}

/// Tells frameworks their offers are rescinded.
fn send_rescinds(
    fws: &BTreeMap<FrameworkId, crate::frameworks::FrameworkHandle>,
    offers: Vec<wasmos_core::Offer>,
) {
    let mut by_fw: BTreeMap<FrameworkId, Vec<wasmos_core::OfferId>> = BTreeMap::new();
    for o in offers {
        by_fw.entry(o.framework_id).or_default().push(o.id);
    }
    for (fw, ids) in by_fw {
        if let Some(h) = fws.get(&fw) {
            h.send(FrameworkMsg::Rescind(ids));
        }
    }
}

/// Updates ending the live tasks of an agent the master gave up on (not
/// already in `state`): `state` for partition-aware frameworks, TASK_LOST
/// for the others.
fn ended_on_agent(
    s: &wasmos_state::State,
    agent_id: &AgentId,
    state: TaskState,
    reason: Reason,
    message: &str,
    now: f64,
) -> Vec<Command> {
    s.live_tasks_on(agent_id)
        .filter(|t| t.state() != state)
        .map(|t| {
            let aware = s
                .frameworks
                .get(&t.framework_id)
                .is_some_and(|f| f.info.partition_aware);
            Command::StatusUpdate {
                status: master_status(
                    &t.spec.task_id,
                    Some(agent_id),
                    if aware { state } else { TaskState::Lost },
                    reason,
                    message.to_string(),
                    now,
                ),
            }
        })
        .collect()
}
