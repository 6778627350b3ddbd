//! Framework plugins on the leader: one actor per plugin.
//!
//! An actor owns its plugin instance and makes one call at a time (offers,
//! a status update, a tick, an HTTP request) on a blocking thread. Calls
//! go in groups: the message that woke the actor, what else queued in its
//! mailbox meanwhile (up to `--framework-group-calls`, taken while the
//! group is younger than `GROUP_TIME`), and the status deliveries due (at
//! least one call, more while the group is younger than `GROUP_TIME`). The group's effects — state writes,
//! launches that passed the offer checks, acknowledgements of the updates
//! delivered — are proposed as one log entry (group commit: under load the
//! commit, not the call, is the wait). A call's state writes are
//! *unsettled* until then, and the group's later calls read them. Only
//! once the entry is durable does the actor reply to the HTTP callers,
//! send launches to agents, or start the next group; if it cannot be
//! committed, every caller is told to try again and the instance restarts
//! from the replicated state. So an acknowledged submission is never lost,
//! and a launch is never made twice.
//!
//! Status updates reach a framework in order per task and at least once:
//! each update stays queued in the state until the `status` call that
//! delivered it commits its acknowledgement. The oldest update of up to
//! 64 tasks go in one sandboxed call whose effects and acknowledgements
//! commit as one entry (a failure redelivers them all).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;
use wasmos_core::{AgentId, FrameworkId, Offer, TaskId, TaskStatus};
use wasmos_runtime::framework::{
    DriverAction, Effects, FrameworkInstance, HttpRequest, HttpResponse, KvOp, KvSource,
};
use wasmos_runtime::{CallError, PluginHealth};
use wasmos_state::{Command, PluginRecord, Response};
use wasmos_store::Store;

use crate::error::ApiError;
use crate::launch::{LaunchBatch, refuse_duration};
use crate::leader::{Leader, now_secs, pending_tasks};

/// How many delivery calls an actor makes before it looks at its mailbox
/// again (offers and requests wait meanwhile: a burst of thousands of
/// updates must not hold back the offers that launch the next tasks).
const DELIVERIES_PER_ROUND: usize = 8;
/// Updates (each of another task) delivered in one call and one commit.
const BATCH: usize = 64;
/// At most `MasterConfig::framework_group_calls` queued messages join one
/// group (one commit), or as many as are made in this long: the group's callers wait for
/// its commit.
const GROUP_TIME: Duration = Duration::from_millis(250);
/// A call or commit taking longer than this is logged.
const SLOW: Duration = Duration::from_millis(300);

/// Work for a framework actor.
pub enum FrameworkMsg {
    Offers(Vec<Offer>),
    Http(HttpRequest, oneshot::Sender<Result<HttpResponse, ApiError>>),
    Tick,
    Reconfigure(BTreeMap<String, String>),
    /// Offers withdrawn (timed out, or their agent went away).
    Rescind(Vec<wasmos_core::OfferId>),
    /// Inverse offers (Mesos' JSON) for an external framework: give back
    /// what runs on machines scheduled for maintenance.
    InverseOffers(Vec<serde_json::Value>),
    /// Inverse offers withdrawn (their machine left the schedule or went
    /// down), by id.
    RescindInverse(Vec<String>),
}

/// The leader's handle on a running framework actor: a plugin's, or an
/// external framework's (then `link` is its connection). Dropping it stops
/// the actor.
pub struct FrameworkHandle {
    pub digest: String,
    pub config: BTreeMap<String, String>,
    tx: mpsc::Sender<FrameworkMsg>,
    pending: Arc<Mutex<BTreeSet<TaskId>>>,
    wake: Arc<Notify>,
    health: Arc<Mutex<(PluginHealth, Option<String>)>>,
    pub link: Option<Arc<crate::mesos::scheduler::Link>>,
}

impl FrameworkHandle {
    /// The handle of an external framework's actor.
    pub fn external(
        tx: mpsc::Sender<FrameworkMsg>,
        pending: Arc<Mutex<BTreeSet<TaskId>>>,
        wake: Arc<Notify>,
        link: Arc<crate::mesos::scheduler::Link>,
    ) -> FrameworkHandle {
        FrameworkHandle {
            digest: String::new(),
            config: BTreeMap::new(),
            tx,
            pending,
            wake,
            health: Arc::new(Mutex::new((PluginHealth::Healthy, None))),
            link: Some(link),
        }
    }

    /// Whether it takes offers now: a plugin always, an external framework
    /// while subscribed.
    pub fn is_active(&self) -> bool {
        self.link.as_ref().is_none_or(|l| l.connected())
    }

    /// Queues a message; false when the mailbox is full.
    pub fn try_send(&self, m: FrameworkMsg) -> bool {
        self.tx.try_send(m).is_ok()
    }

    pub fn send(&self, m: FrameworkMsg) {
        if self.tx.try_send(m).is_err() {
            tracing::warn!(digest = %self.digest, "framework mailbox full; message dropped");
        }
    }

    /// Notes that a task has updates to deliver.
    pub fn mark_pending(&self, task: TaskId) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(task);
        self.wake.notify_one();
    }

    /// `healthy`, `degraded` or `failed`, and the last error.
    pub fn health(&self) -> (PluginHealth, Option<String>) {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A framework's writes made by calls whose commit is under way, by key
/// (`None`: deleted). Later calls in the same group read them.
type Unsettled = Arc<Mutex<BTreeMap<String, Option<Vec<u8>>>>>;

/// Reads a framework's namespace from the replicated state, with its
/// unsettled writes over it.
struct StoreKv {
    store: Store,
    unsettled: Unsettled,
}

impl StoreKv {
    fn unsettled(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<Vec<u8>>>> {
        self.unsettled.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The keys under `prefix`: `stored` (in order) with `unsettled` writes
/// over them.
fn over(
    stored: Vec<String>,
    unsettled: &BTreeMap<String, Option<Vec<u8>>>,
    prefix: &str,
) -> Vec<String> {
    if unsettled.is_empty() {
        return stored;
    }
    let mut keys: BTreeSet<String> = stored.into_iter().collect();
    for (k, v) in unsettled
        .range(prefix.to_string()..)
        .take_while(|(k, _)| k.starts_with(prefix))
    {
        if v.is_some() {
            keys.insert(k.clone());
        } else {
            keys.remove(k);
        }
    }
    keys.into_iter().collect()
}

impl KvSource for StoreKv {
    fn get(&self, ns: &FrameworkId, key: &str) -> Option<Vec<u8>> {
        if let Some(v) = self.unsettled().get(key) {
            return v.clone();
        }
        self.store
            .read(|s| s.kv.get(ns).and_then(|m| m.get(key)).map(|b| b.0.clone()))
    }

    fn keys(&self, ns: &FrameworkId, prefix: &str) -> Vec<String> {
        let stored: Vec<String> = self.store.read(|s| {
            s.kv.get(ns)
                .map(|m| {
                    m.range(prefix.to_string()..)
                        .take_while(|(k, _)| k.starts_with(prefix))
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default()
        });
        over(stored, &self.unsettled(), prefix)
    }

    fn draining_agents(&self) -> Vec<AgentId> {
        let now_ns = (now_secs() * 1e9) as i64;
        self.store.read(|s| {
            s.agents
                .values()
                .filter(|a| {
                    let drained = a.drain.as_ref().is_some_and(|d| {
                        d.state == wasmos_state::DrainState::Draining && !d.let_finish
                    });
                    // A machine in its maintenance window, not yet down:
                    // its tasks should move before it goes down.
                    let in_window = !s.machine_down(&a.info)
                        && s.maintenance.iter().any(|w| {
                            w.start_ns <= now_ns
                                && w.duration_ns
                                    .is_none_or(|d| now_ns < w.start_ns.saturating_add(d))
                                && w.machines.iter().any(|m| m.holds(&a.info))
                        });
                    drained || in_window
                })
                .map(|a| a.id.clone())
                .collect()
        })
    }
}

/// Compiles the plugin and starts its actor.
pub async fn spawn(
    leader: Arc<Leader>,
    id: FrameworkId,
    record: PluginRecord,
) -> Result<FrameworkHandle, String> {
    let runtime = leader.runtime.clone();
    let bytes = record.component.0.clone();
    let component = tokio::task::spawn_blocking(move || runtime.compile(&bytes))
        .await
        .map_err(|e| format!("compiling panicked: {e}"))?
        .map_err(|e| e.to_string())?;
    let config = record.effective_config();
    let unsettled = Unsettled::default();
    let tick = Duration::from_millis(record.manifest.tick_interval_ms());
    let instance = FrameworkInstance::new(
        &leader.runtime,
        &record.manifest.name,
        id.clone(),
        &component,
        config.clone(),
        Arc::new(StoreKv {
            store: leader.store.clone(),
            unsettled: unsettled.clone(),
        }),
        leader.placement.clone(),
    )
    .map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel(256);
    let pending = Arc::new(Mutex::new(pending_tasks(&leader.store, &id)));
    let wake = Arc::new(Notify::new());
    let health = Arc::new(Mutex::new((PluginHealth::Healthy, None)));
    let actor = Actor {
        leader,
        id,
        instance: Arc::new(Mutex::new(instance)),
        unsettled,
        pending: pending.clone(),
        ephemeral: VecDeque::new(),
        wake: wake.clone(),
        health: health.clone(),
        retry_at: None,
        tick,
    };
    wake.notify_one();
    tokio::spawn(actor.run(rx));
    Ok(FrameworkHandle {
        digest: record.digest,
        config,
        tx,
        pending,
        wake,
        health,
        link: None,
    })
}

struct Actor {
    leader: Arc<Leader>,
    id: FrameworkId,
    instance: Arc<Mutex<FrameworkInstance>>,
    /// Its instance's reads see these writes of calls not yet committed.
    unsettled: Unsettled,
    pending: Arc<Mutex<BTreeSet<TaskId>>>,
    /// Updates made here and never stored (a launch refused before it
    /// reached the state), delivered once.
    ephemeral: VecDeque<TaskStatus>,
    wake: Arc<Notify>,
    health: Arc<Mutex<(PluginHealth, Option<String>)>>,
    /// After a failed call, deliveries wait until then.
    retry_at: Option<tokio::time::Instant>,
    /// How often the plugin's `tick` is called (its manifest's `tick_ms`).
    tick: Duration,
}

/// The calls of one round, whose effects commit as one entry, and the
/// callers waiting for that commit.
#[derive(Default)]
struct Group {
    /// Messages handled (calls made or failed).
    calls: usize,
    kv: Vec<KvOp>,
    actions: Vec<DriverAction>,
    acks: Vec<(TaskId, Uuid)>,
    /// Tasks whose oldest update this group delivers (not again in it).
    delivering: BTreeSet<TaskId>,
    /// HTTP answers, given once the group's commit is durable.
    replies: Vec<(
        oneshot::Sender<Result<HttpResponse, ApiError>>,
        HttpResponse,
    )>,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<FrameworkMsg>) {
        let mut shutdown = self.leader.shutdown.clone();
        let mut ticks = tokio::time::interval(self.tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let retry_at = self.retry_at;
            let retry = async move {
                match retry_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let mut group = Group::default();
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => self.handle(m, &mut group).await,
                    None => break,
                },
                _ = self.wake.notified() => {}
                _ = ticks.tick() => self.handle(FrameworkMsg::Tick, &mut group).await,
                _ = retry => self.retry_at = None,
                _ = shutdown.changed() => break,
            }
            // What queued during the last commit joins this one: one entry
            // for many calls (the commit, not the call, is the wait).
            let started = Instant::now();
            let most = self.leader.config.framework_group_calls.max(1);
            while group.calls < most && started.elapsed() < GROUP_TIME {
                match rx.try_recv() {
                    Ok(m) => self.handle(m, &mut group).await,
                    Err(_) => break,
                }
            }
            if self.retry_at.is_none() {
                self.deliver(&mut group, started).await;
            }
            self.flush(group).await;
        }
        tracing::debug!(framework = %self.id, "framework actor stopped");
    }

    /// Runs a plugin call (of `kind`: offers, http, tick, status, ...) on a
    /// blocking thread; its time is counted by kind.
    async fn call<R: Send + 'static>(
        &self,
        kind: &'static str,
        f: impl FnOnce(&mut FrameworkInstance) -> Result<R, CallError> + Send + 'static,
    ) -> Result<R, CallError> {
        let inst = self.instance.clone();
        let name = self.id.to_string();
        let started = Instant::now();
        let r = tokio::task::spawn_blocking(move || {
            let mut guard = inst.lock().unwrap_or_else(|p| p.into_inner());
            let r = f(&mut guard);
            (r, guard.health())
        })
        .await;
        let took = started.elapsed();
        self.leader
            .instruments
            .framework_call_seconds
            .get_or_create(&vec![
                ("framework".to_string(), self.id.to_string()),
                ("call".to_string(), kind.to_string()),
            ])
            .observe(took.as_secs_f64());
        if took > SLOW {
            tracing::info!(framework = %self.id, ms = took.as_millis() as u64, kind, "slow framework call");
        }
        match r {
            Ok((r, health)) => {
                *self.health.lock().unwrap_or_else(|p| p.into_inner()) = health;
                r
            }
            Err(e) => Err(CallError::Trap {
                plugin: name,
                message: format!("host thread failed: {e}"),
            }),
        }
    }

    fn backoff_after(&mut self, err: &CallError) {
        let wait = match err {
            CallError::Backoff { retry_in_ms, .. } => Duration::from_millis(*retry_in_ms),
            _ => Duration::from_millis(200),
        };
        self.retry_at = Some(tokio::time::Instant::now() + wait);
    }

    /// Adds a successful call's effects to the group; its state writes are
    /// read by the group's later calls from now on.
    fn add(&self, group: &mut Group, mut effects: Effects) {
        // Kept before the launches they explain are committed (a launch
        // without one gets the bare facts).
        self.leader.placements.record(
            &self.id,
            now_secs(),
            std::mem::take(&mut effects.decisions),
            effects.explained,
        );
        if !effects.kv.is_empty() {
            let mut unsettled = self.unsettled.lock().unwrap_or_else(|p| p.into_inner());
            for op in &effects.kv {
                match op {
                    KvOp::Set { key, value } => unsettled.insert(key.clone(), Some(value.clone())),
                    KvOp::Delete { key } => unsettled.insert(key.clone(), None),
                };
            }
        }
        group.kv.extend(effects.kv);
        group.actions.extend(effects.actions);
    }

    async fn handle(&mut self, msg: FrameworkMsg, group: &mut Group) {
        group.calls += 1;
        match msg {
            FrameworkMsg::Offers(offers) => {
                let ids: Vec<_> = offers.iter().map(|o| o.id.clone()).collect();
                match self.call("offers", move |i| i.offers(&offers)).await {
                    Ok(effects) => self.add(group, effects),
                    Err(e) => {
                        tracing::warn!(framework = %self.id, error = %e, "offers call failed; offers declined");
                        self.leader.allocator().decline(
                            &self.id,
                            &ids,
                            Some(Duration::ZERO),
                            Instant::now(),
                        );
                    }
                }
            }
            FrameworkMsg::Http(req, reply) => match self.call("http", move |i| i.http(req)).await {
                Ok((resp, effects)) => {
                    self.add(group, effects);
                    group.replies.push((reply, resp));
                }
                Err(e @ CallError::Backoff { .. }) => {
                    let _ = reply.send(Err(ApiError::Unavailable(e.to_string())));
                }
                Err(e) => {
                    let _ = reply.send(Err(ApiError::BadGateway(e.to_string())));
                }
            },
            FrameworkMsg::Tick => {
                let now_ms = (now_secs() * 1000.0) as u64;
                match self.call("tick", move |i| i.tick(now_ms)).await {
                    Ok(effects) => self.add(group, effects),
                    Err(e) => tracing::debug!(framework = %self.id, error = %e, "tick failed"),
                }
            }
            FrameworkMsg::Reconfigure(config) => {
                let _ = self
                    .call("reset", move |i| {
                        i.reset(config);
                        Ok(())
                    })
                    .await;
                tracing::info!(framework = %self.id, "framework reconfigured; its instance restarts");
            }
            // A plugin's offers are void with the call that carried them.
            // Plugin frameworks get no inverse offers (their world has no
            // call for them yet).
            FrameworkMsg::Rescind(_)
            | FrameworkMsg::InverseOffers(_)
            | FrameworkMsg::RescindInverse(_) => {}
        }
    }

    /// Delivers queued status updates, oldest first per task, into the
    /// group (committing it first when it is full). After the first
    /// delivery call, stops once the group has taken `GROUP_TIME` since
    /// `started` (its callers wait for its commit).
    async fn deliver(&mut self, group: &mut Group, started: Instant) {
        let most = self.leader.config.framework_group_calls.max(1);
        for round in 0..DELIVERIES_PER_ROUND {
            if round > 0 && started.elapsed() >= GROUP_TIME {
                break;
            }
            if group.calls >= most {
                self.flush(std::mem::take(group)).await;
                if self.retry_at.is_some() {
                    return;
                }
            }
            if let Some(update) = self.ephemeral.pop_front() {
                group.calls += 1;
                let u = update.clone();
                match self.call("status", move |i| i.status(&u)).await {
                    Ok(effects) => self.add(group, effects),
                    Err(e) => {
                        self.ephemeral.push_front(update);
                        self.backoff_after(&e);
                        return;
                    }
                }
                continue;
            }
            // The oldest undelivered update of up to BATCH tasks (not
            // already delivered in this group: their acknowledgements are
            // not committed yet): one call, acknowledged in the group's
            // commit (per task, in order).
            let tasks: Vec<TaskId> = {
                let set = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                set.iter()
                    .filter(|t| !group.delivering.contains(*t))
                    .take(BATCH)
                    .cloned()
                    .collect()
            };
            if tasks.is_empty() {
                return;
            }
            let updates: Vec<TaskStatus> = self.leader.store.read(|s| {
                tasks
                    .iter()
                    .filter_map(|id| {
                        s.tasks
                            .get(id)
                            .filter(|t| t.framework_id == self.id)
                            .and_then(|t| t.pending.front().cloned())
                    })
                    .collect()
            });
            {
                // Tasks with nothing to deliver leave the set — checked again
                // under its lock: an update applied since the read above
                // found its task still in the set (`mark_pending` did
                // nothing) and must not be stranded.
                let mut set = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                let idle: Vec<&TaskId> = tasks
                    .iter()
                    .filter(|id| !updates.iter().any(|u| &u.task_id == *id))
                    .collect();
                if !idle.is_empty() {
                    self.leader.store.read(|s| {
                        for id in idle {
                            let waiting = s.tasks.get(id).is_some_and(|t| {
                                t.framework_id == self.id && !t.pending.is_empty()
                            });
                            if !waiting {
                                set.remove(id);
                            }
                        }
                    });
                }
            }
            if updates.is_empty() {
                continue;
            }
            let batch = updates.clone();
            group.calls += 1;
            match self.call("status", move |i| i.status_batch(&batch)).await {
                Ok(effects) => {
                    self.add(group, effects);
                    for u in updates {
                        group.delivering.insert(u.task_id.clone());
                        group.acks.push((u.task_id, u.uuid));
                    }
                }
                Err(e) => {
                    tracing::warn!(framework = %self.id, updates = updates.len(), first = %updates[0].task_id, error = %e, "status delivery failed; it will be retried");
                    self.backoff_after(&e);
                    return;
                }
            }
        }
        // More may be waiting: come back after looking at the mailbox.
        self.wake.notify_one();
    }

    /// Commits the group, then answers its callers: with their responses
    /// once it is durable, or asking them to try again.
    async fn flush(&mut self, group: Group) {
        let Group {
            calls,
            kv,
            actions,
            acks,
            replies,
            ..
        } = group;
        let delivered = !acks.is_empty();
        if !(kv.is_empty() && actions.is_empty() && acks.is_empty()) {
            self.leader
                .instruments
                .framework_group_calls
                .observe(calls as f64);
        }
        let saved = self.commit(kv, actions, acks).await;
        // Committed (now in the state) or lost (the instance restarts from
        // the state): either way no longer unsettled.
        self.unsettled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        for (reply, resp) in replies {
            let _ = reply.send(if saved {
                Ok(resp)
            } else {
                Err(ApiError::Unavailable(
                    "the framework's changes could not be saved; try again".into(),
                ))
            });
        }
        if delivered {
            if saved {
                // The next updates of the tasks just acknowledged.
                self.wake.notify_one();
            } else {
                self.retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
            }
        }
    }

    /// Commits a group's state writes, launches (through the master's one
    /// launch path) and acknowledgements as one entry, then carries out
    /// what needs the commit first. False if nothing could be committed.
    async fn commit(
        &mut self,
        kv: Vec<KvOp>,
        actions: Vec<DriverAction>,
        acks: Vec<(TaskId, Uuid)>,
    ) -> bool {
        if kv.is_empty() && actions.is_empty() && acks.is_empty() {
            return true;
        }
        let leader = self.leader.clone();
        let now_i = Instant::now();
        let mut cmds: Vec<Command> = kv
            .into_iter()
            .map(|op| match op {
                KvOp::Set { key, value } => Command::KvSet {
                    framework_id: self.id.clone(),
                    key,
                    value: wasmos_core::bytes::Blob(value),
                },
                KvOp::Delete { key } => Command::KvDelete {
                    framework_id: self.id.clone(),
                    key,
                },
            })
            .collect();
        let mut batch = LaunchBatch::default();
        let mut kills: Vec<TaskId> = Vec::new();
        let mut destroys: Vec<(AgentId, Vec<String>)> = Vec::new();
        for action in actions {
            match action {
                DriverAction::Launch {
                    offer_ids,
                    tasks,
                    refuse_seconds,
                } => batch.accept(&leader, &self.id, &offer_ids, tasks, refuse_seconds),
                DriverAction::Decline {
                    offer_ids,
                    refuse_seconds,
                } => leader.allocator().decline(
                    &self.id,
                    &offer_ids,
                    refuse_duration(refuse_seconds),
                    now_i,
                ),
                DriverAction::Kill { task_id } => kills.push(task_id),
                DriverAction::Revive => {
                    leader.allocator().revive(&self.id);
                    leader.alloc_wakeup.notify_one();
                }
                DriverAction::Suppress => {
                    leader.allocator().suppress(&self.id);
                    // Asking for no offers: nothing of it waits for a place.
                    leader
                        .placements
                        .record(&self.id, crate::leader::now_secs(), Vec::new(), true);
                }
                DriverAction::DestroyVolumes {
                    agent_id,
                    volume_ids,
                } => destroys.push((agent_id, volume_ids)),
            }
        }
        cmds.extend(
            acks.into_iter()
                .map(|(task_id, uuid)| Command::AcknowledgeStatus { task_id, uuid }),
        );
        let started = Instant::now();
        let count = cmds.len();
        let result = leader.commit_launches(&self.id, cmds.clone(), batch).await;
        if started.elapsed() > SLOW {
            tracing::info!(framework = %self.id, ms = started.elapsed().as_millis() as u64, commands = count, "slow commit of a framework's changes");
        }
        let (refused, responses) = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(framework = %self.id, error = %e, "cannot commit a framework's changes; its instance restarts from the replicated state");
                // The call's effects are lost, but the instance's memory
                // believes them done: rebuild it from what was committed.
                let _ = self
                    .call("restart", |i| {
                        i.restart();
                        Ok(())
                    })
                    .await;
                return false;
            }
        };
        self.ephemeral.extend(refused);
        for (cmd, resp) in cmds.iter().zip(responses) {
            if let (Command::KvSet { key, .. }, Response::Rejected { reason }) = (cmd, resp) {
                tracing::warn!(framework = %self.id, %key, %reason, "state write refused");
            }
        }
        for task in kills {
            let l = leader.clone();
            tokio::spawn(async move {
                if let Err(e) = l.kill_task(&task).await {
                    tracing::warn!(%task, error = %e, "kill failed");
                }
            });
        }
        for (agent, ids) in destroys {
            let l = leader.clone();
            let fw = self.id.clone();
            tokio::spawn(async move { l.destroy_framework_volumes(&fw, &agent, &ids).await });
        }
        if !self.ephemeral.is_empty() {
            self.wake.notify_one();
        }
        true
    }
}

/// Turns a plugin's response into an HTTP response.
pub fn into_response(r: HttpResponse) -> axum::response::Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = axum::response::Response::new(Body::from(r.body));
    *resp.status_mut() = status;
    for (k, v) in r.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsettled_writes_and_deletes_show_over_the_stored_keys_under_the_prefix() {
        let stored = vec!["app/a".to_string(), "app/b".into(), "app/c".into()];
        let unsettled: BTreeMap<String, Option<Vec<u8>>> = [
            ("app/b".to_string(), None),
            ("app/d".into(), Some(b"new".to_vec())),
            ("apq/x".into(), Some(Vec::new())),
            ("ap".into(), Some(Vec::new())),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            over(stored.clone(), &unsettled, "app/"),
            ["app/a", "app/c", "app/d"],
            "b deleted, d written, keys outside the prefix left out"
        );
        assert_eq!(over(stored.clone(), &BTreeMap::new(), "app/"), stored);
    }
}
