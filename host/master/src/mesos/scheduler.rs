//! Mesos' v1 scheduler API, `POST /api/v1/scheduler`: frameworks that run
//! outside the cluster (pymesos, or anything speaking the v1 HTTP API)
//! subscribe on a long-lived RecordIO stream and send every other call as
//! a short POST.
//!
//! An external framework is registered in the replicated state like a
//! plugin framework; on the leader it has a handle and an actor (the
//! [`Link`] to its current subscriber) beside the plugin actors: offers go
//! to it through the same allocator, and its ACCEPTs take the master's one
//! launch path ([`crate::launch`]). Status updates are kept in the state
//! until the framework acknowledges them and are sent again on every
//! (re-)subscription. A framework whose stream closes keeps its tasks for
//! its `failover_timeout`; then it is removed and its tasks are killed,
//! also when the leader changed in between (a new leader starts the clock
//! again for frameworks that have not re-subscribed to it).

use std::collections::{BTreeSet, HashSet};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;
use wasmos_core::protocol::ExecutorMessage;
use wasmos_core::{
    AgentId, AgentState, ExecutorId, FrameworkId, FrameworkInfo, FrameworkKind, OfferId, Reason,
    Source, TaskId, TaskState, TaskStatus,
};
use wasmos_state::acl::{Access, Area};
use wasmos_state::{Command, Response as StateResponse};

use super::v1;
use crate::allocator::OfferOp;
use crate::auth::Principal;
use crate::frameworks::{FrameworkHandle, FrameworkMsg};
use crate::http::Lead;
use crate::launch::{LaunchBatch, refuse_duration};
use crate::leader::{Leader, master_status, now_secs, pending_tasks};

/// How often a subscriber hears HEARTBEAT (Mesos' default).
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Events buffered for a subscriber that reads slowly; beyond this it is
/// disconnected (and re-subscribes to get the rest).
const STREAM_BUFFER: usize = 8192;
/// The header naming a subscription.
pub const STREAM_ID: &str = "mesos-stream-id";

/// A Mesos-style error: status and a plain-text reason.
fn fail(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

/// One RecordIO record: the length in decimal, a newline, the event (its
/// JSON, or its protobuf encoding for a protobuf subscriber).
pub fn record(event: &Value, protobuf: bool) -> Bytes {
    let body = if protobuf {
        match super::proto::event_to_protobuf(event) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "an event cannot be encoded as protobuf; sending an ERROR instead");
                super::proto::event_to_protobuf(&json!({"type": "ERROR", "error": {"message": e}}))
                    .unwrap_or_default()
            }
        }
    } else {
        event.to_string().into_bytes()
    };
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&body);
    Bytes::from(out)
}

struct Subscriber {
    stream_id: Uuid,
    tx: mpsc::Sender<Bytes>,
    /// Events go in protobuf (else JSON).
    protobuf: bool,
}

struct LinkState {
    subscriber: Option<Subscriber>,
    /// When the last subscriber went away (`None` while one is connected).
    disconnected_at: Option<Instant>,
    failover_timeout: Duration,
    partition_aware: bool,
    /// Updates sent to the current subscriber and not acknowledged yet.
    sent: HashSet<Uuid>,
}

/// An external framework's connection to the leader.
pub struct Link {
    pub id: FrameworkId,
    state: Mutex<LinkState>,
    wake: Arc<Notify>,
}

impl Link {
    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a subscriber is connected (offers go only then).
    pub fn connected(&self) -> bool {
        self.lock().subscriber.is_some()
    }

    fn stream_id(&self) -> Option<Uuid> {
        self.lock().subscriber.as_ref().map(|s| s.stream_id)
    }

    /// Queues an event for the subscriber; false if none is connected (or
    /// it fell too far behind and is now disconnected).
    fn send(&self, event: &Value) -> bool {
        let mut st = self.lock();
        let Some(sub) = &st.subscriber else {
            return false;
        };
        if sub.tx.try_send(record(event, sub.protobuf)).is_ok() {
            return true;
        }
        tracing::warn!(framework = %self.id, "subscriber gone or too far behind; disconnecting it");
        st.subscriber = None;
        st.disconnected_at = Some(Instant::now());
        drop(st);
        self.wake.notify_one();
        false
    }

    /// Tells the subscriber an agent is lost (unreachable or gone):
    /// Mesos' FAILURE event, pymesos' `slaveLost`.
    pub fn agent_lost(&self, agent: &AgentId) {
        self.send(&json!({"type": "FAILURE", "failure": {"agent_id": v1::id(agent)}}));
    }

    /// Hands an executor's message to the subscriber (Mesos' MESSAGE).
    pub fn executor_message(&self, agent: &AgentId, executor: &ExecutorId, data: &str) {
        self.send(&json!({"type": "MESSAGE", "message": {
            "agent_id": v1::id(agent), "executor_id": {"value": executor.as_str()}, "data": data}}));
    }

    /// Tells the subscriber an executor ended with wait status `status`
    /// (Mesos' FAILURE, pymesos' `executorLost`).
    pub fn executor_lost(&self, agent: &AgentId, executor: &ExecutorId, status: i32) {
        self.send(&json!({"type": "FAILURE", "failure": {
            "agent_id": v1::id(agent), "executor_id": {"value": executor.as_str()}, "status": status}}));
    }

    /// Sends an update the framework must acknowledge, once per
    /// subscription.
    fn send_update(&self, status: &TaskStatus) -> bool {
        if !self.lock().sent.insert(status.uuid) {
            return true;
        }
        let ok = self
            .send(&json!({"type": "UPDATE", "update": {"status": v1::status_json(status, true)}}));
        if !ok {
            self.lock().sent.remove(&status.uuid);
        }
        ok
    }

    /// Sends an update the master made up on the spot (no acknowledgement).
    fn send_ephemeral(&self, status: &TaskStatus) {
        let mut s = status.clone();
        if !self.lock().partition_aware {
            s.state = lost_if_unaware(s.state);
        }
        self.send(&json!({"type": "UPDATE", "update": {"status": v1::status_json(&s, false)}}));
    }

    /// Makes `tx` the subscriber (telling a previous one it was replaced).
    fn subscribe(
        &self,
        stream_id: Uuid,
        tx: mpsc::Sender<Bytes>,
        protobuf: bool,
        info: &FrameworkInfo,
    ) {
        let mut st = self.lock();
        if let Some(old) = st.subscriber.take() {
            let _ = old.tx.try_send(record(
                &json!({"type": "ERROR", "error": {"message": "Framework failed over"}}),
                old.protobuf,
            ));
        }
        st.subscriber = Some(Subscriber {
            stream_id,
            tx,
            protobuf,
        });
        st.disconnected_at = None;
        st.sent.clear();
        st.failover_timeout = failover_timeout(info);
        st.partition_aware = info.partition_aware;
    }

    /// The subscriber of `stream_id` went away.
    fn disconnected(&self, stream_id: Uuid) {
        let mut st = self.lock();
        if st
            .subscriber
            .as_ref()
            .is_some_and(|s| s.stream_id == stream_id)
        {
            st.subscriber = None;
            st.disconnected_at = Some(Instant::now());
            tracing::info!(framework = %self.id, timeout_s = st.failover_timeout.as_secs_f64(), "framework disconnected; its tasks are kept for its failover timeout");
            drop(st);
            self.wake.notify_one();
        }
    }

    /// Closes the stream (after a last event, if given).
    fn close(&self, last: Option<&Value>) {
        let mut st = self.lock();
        if let Some(sub) = st.subscriber.take() {
            if let Some(e) = last {
                let _ = sub.tx.try_send(record(e, sub.protobuf));
            }
            st.disconnected_at = Some(Instant::now());
        }
    }

    /// When the framework is removed unless it subscribes again.
    fn failover_deadline(&self) -> Option<Instant> {
        let st = self.lock();
        st.disconnected_at.map(|t| t + st.failover_timeout)
    }
}

fn failover_timeout(info: &FrameworkInfo) -> Duration {
    let s = info.failover_timeout_secs;
    if s.is_finite() && s > 0.0 {
        Duration::from_secs_f64(s.min(1e9))
    } else {
        Duration::ZERO
    }
}

/// What a framework that is not partition aware is told instead.
fn lost_if_unaware(state: TaskState) -> TaskState {
    match state {
        TaskState::Dropped
        | TaskState::Unreachable
        | TaskState::Gone
        | TaskState::GoneByOperator
        | TaskState::Unknown => TaskState::Lost,
        s => s,
    }
}

/// The body of a subscription: its events, and word to the link when the
/// connection goes (hyper drops the body).
struct EventStream {
    rx: mpsc::Receiver<Bytes>,
    link: Arc<Link>,
    stream_id: Uuid,
}

impl Stream for EventStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|b| b.map(Ok))
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.link.disconnected(self.stream_id);
    }
}

/// Starts the leader's side of an external framework. `connected`: a
/// subscriber is about to attach; otherwise the failover clock starts now.
pub fn spawn(leader: &Arc<Leader>, id: FrameworkId, info: &FrameworkInfo) -> FrameworkHandle {
    let wake = Arc::new(Notify::new());
    let link = Arc::new(Link {
        id: id.clone(),
        state: Mutex::new(LinkState {
            subscriber: None,
            disconnected_at: Some(Instant::now()),
            failover_timeout: failover_timeout(info),
            partition_aware: info.partition_aware,
            sent: HashSet::new(),
        }),
        wake: wake.clone(),
    });
    let (tx, rx) = mpsc::channel(256);
    let pending = Arc::new(Mutex::new(pending_tasks(&leader.store, &id)));
    let actor = Actor {
        leader: leader.clone(),
        id,
        link: link.clone(),
        pending: pending.clone(),
        wake: wake.clone(),
    };
    tokio::spawn(actor.run(rx));
    FrameworkHandle::external(tx, pending, wake, link)
}

struct Actor {
    leader: Arc<Leader>,
    id: FrameworkId,
    link: Arc<Link>,
    pending: Arc<Mutex<BTreeSet<TaskId>>>,
    wake: Arc<Notify>,
}

impl Actor {
    async fn run(self, mut rx: mpsc::Receiver<FrameworkMsg>) {
        let mut shutdown = self.leader.shutdown.clone();
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.link.failover_deadline();
            let failover = async move {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => self.handle(m),
                    None => break,
                },
                _ = self.wake.notified() => self.deliver(),
                _ = heartbeat.tick() => {
                    self.link.send(&json!({"type": "HEARTBEAT"}));
                }
                _ = failover => {
                    tracing::warn!(framework = %self.id, "framework did not re-subscribe within its failover timeout; removing it and killing its tasks");
                    teardown(&self.leader, &self.id, "its failover timeout passed").await;
                    break;
                }
                _ = shutdown.changed() => {
                    // This master no longer leads: end the subscription so
                    // that the framework subscribes again, to the leader
                    // (Mesos' masters end by exiting when they lose it).
                    self.link.close(None);
                    break;
                }
            }
        }
        tracing::debug!(framework = %self.id, "external framework actor stopped");
    }

    fn handle(&self, msg: FrameworkMsg) {
        match msg {
            FrameworkMsg::Offers(offers) => {
                let format = self.leader.store.read(|s| {
                    s.frameworks
                        .get(&self.id)
                        .map_or(v1::ReservationFormat::PreRefinement, |f| {
                            v1::ReservationFormat::of(&f.info)
                        })
                });
                let mut list: Vec<Value> =
                    offers.iter().map(|o| v1::offer_json(o, format)).collect();
                // Offers from machines scheduled for maintenance say when
                // they go (Mesos' `unavailability`).
                let windows: Vec<Option<(i64, Option<i64>)>> = self.leader.store.read(|s| {
                    offers
                        .iter()
                        .map(|o| {
                            let a = s.agents.get(&o.agent_id)?;
                            s.maintenance
                                .iter()
                                .find(|w| {
                                    w.machines
                                        .iter()
                                        .any(|m| m.holds(&a.info) && !s.machines_down.contains(m))
                                })
                                .map(|w| (w.start_ns, w.duration_ns))
                        })
                        .collect()
                });
                for (v, w) in list.iter_mut().zip(windows) {
                    if let Some((start, duration)) = w {
                        v["unavailability"] = json!({"start": {"nanoseconds": start}});
                        if let Some(d) = duration {
                            v["unavailability"]["duration"] = json!({"nanoseconds": d});
                        }
                    }
                }
                if !self
                    .link
                    .send(&json!({"type": "OFFERS", "offers": {"offers": list}}))
                {
                    let ids: Vec<OfferId> = offers.into_iter().map(|o| o.id).collect();
                    self.leader.allocator().decline(
                        &self.id,
                        &ids,
                        Some(Duration::ZERO),
                        Instant::now(),
                    );
                }
            }
            FrameworkMsg::InverseOffers(offers) => {
                self.link.send(&json!({"type": "INVERSE_OFFERS",
                                       "inverse_offers": {"inverse_offers": offers}}));
            }
            FrameworkMsg::RescindInverse(ids) => {
                for id in ids {
                    self.link.send(&json!({"type": "RESCIND_INVERSE_OFFER",
                                           "rescind_inverse_offer": {"inverse_offer_id": v1::id(&id)}}));
                }
            }
            FrameworkMsg::Rescind(ids) => {
                for id in ids {
                    self.link
                        .send(&json!({"type": "RESCIND", "rescind": {"offer_id": v1::id(&id)}}));
                }
            }
            _ => {}
        }
    }

    /// Sends each task's oldest unacknowledged update (the next goes once
    /// that one is acknowledged).
    fn deliver(&self) {
        if !self.link.connected() {
            return;
        }
        let tasks: Vec<TaskId> = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let fronts: Vec<(TaskId, Option<TaskStatus>)> = self.leader.store.read(|s| {
            tasks
                .into_iter()
                .map(|id| {
                    let front = s
                        .tasks
                        .get(&id)
                        .filter(|t| t.framework_id == self.id)
                        .and_then(|t| t.pending.front().cloned());
                    (id, front)
                })
                .collect()
        });
        for (id, front) in fronts {
            match front {
                None => {
                    self.pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id);
                }
                Some(update) => {
                    if !self.link.send_update(&update) {
                        return;
                    }
                }
            }
        }
    }
}

/// Removes a framework: recorded in the state (it may never subscribe
/// again), its stream closed, its tasks killed.
pub async fn teardown(leader: &Arc<Leader>, id: &FrameworkId, why: &str) {
    match leader
        .store
        .propose_one(Command::RemoveFramework {
            framework_id: id.clone(),
            now: now_secs(),
        })
        .await
    {
        Ok(_) => {}
        Err(e) => {
            tracing::error!(framework = %id, error = %e, "cannot record the framework's removal; it stays");
            return;
        }
    }
    let handle = leader.frameworks_write().remove(id);
    if let Some(link) = handle.as_ref().and_then(|h| h.link.clone()) {
        link.close(Some(
            &json!({"type": "ERROR", "error": {"message": format!("Framework has been removed: {why}")}}),
        ));
    }
    leader.allocator().remove_framework(id);
    let (tasks, executors): (Vec<TaskId>, Vec<(AgentId, ExecutorId)>) = leader.store.read(|s| {
        let tasks = s
            .tasks
            .values()
            .filter(|t| &t.framework_id == id && !t.state().is_terminal())
            .map(|t| t.spec.task_id.clone())
            .collect();
        let executors = s
            .live_executors()
            .into_keys()
            .filter(|(_, f, _)| f == id)
            .map(|(a, _, e)| (a, e))
            .collect();
        (tasks, executors)
    });
    tracing::info!(framework = %id, tasks = tasks.len(), %why, "framework removed; killing its tasks");
    // Its executors are shut down (their tasks end with them); the kills
    // below end the rest, and any task an executor never ran.
    for (agent, executor) in executors {
        let (l, fid) = (leader.clone(), id.clone());
        tokio::spawn(async move {
            if let Err(e) = l.shutdown_executor(&agent, &fid, &executor).await {
                tracing::warn!(%executor, error = %e, "cannot shut a removed framework's executor down");
            }
        });
    }
    for task in tasks {
        let l = leader.clone();
        tokio::spawn(async move {
            if let Err(e) = l.kill_task(&task).await {
                tracing::warn!(%task, error = %e, "cannot kill a removed framework's task");
            }
        });
    }
    leader.alloc_wakeup.notify_one();
}

/// The principal's name as Mesos sees it (`user:alice` is `alice`).
fn principal_name(p: &Principal) -> &str {
    p.name
        .strip_prefix("user:")
        .or_else(|| p.name.strip_prefix("token:"))
        .unwrap_or(&p.name)
}

/// `POST /api/v1/scheduler`.
pub async fn endpoint(
    Lead(l): Lead,
    principal: Option<Extension<Principal>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let principal = principal.map_or_else(Principal::insecure, |Extension(p)| p);
    if let Some(refused) = super::refuse_content_type(&headers, true) {
        return refused;
    }
    let parsed = if super::is_protobuf(&headers) {
        super::proto::call_to_json(&body).and_then(|v| {
            serde_json::from_value::<v1::Call>(v)
                .map_err(|e| format!("Failed to convert Call protobuf: {e}"))
        })
    } else {
        serde_json::from_slice::<v1::Call>(&body)
            .map_err(|e| format!("Failed to convert JSON into Call protobuf: {e}"))
    };
    let call = match parsed {
        Ok(c) => c,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e),
    };
    let Some(kind) = call.kind.clone() else {
        return fail(
            StatusCode::BAD_REQUEST,
            "Failed to validate scheduler::Call: Expecting 'type' to be present",
        );
    };
    if !l.wait_ready().await {
        return fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "the master stopped leading; retry",
        );
    }
    if kind == "SUBSCRIBE" {
        return subscribe(&l, &principal, &headers, call).await;
    }
    let Some(fid) = call.framework_id.as_ref().map(|i| i.value.clone()) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "Failed to validate scheduler::Call: Expecting 'framework_id' to be present",
        );
    };
    let Ok(fid) = FrameworkId::new(fid) else {
        return fail(StatusCode::BAD_REQUEST, "Framework cannot be found");
    };
    let Some(info) = l.store.read(|s| {
        s.frameworks
            .get(&fid)
            .filter(|f| f.removed_at.is_none() && f.info.kind == FrameworkKind::External)
            .map(|f| f.info.clone())
    }) else {
        return fail(StatusCode::BAD_REQUEST, "Framework cannot be found");
    };
    if let Some(p) = &info.principal
        && l.config.tls.is_some()
        && p != principal_name(&principal)
    {
        return fail(
            StatusCode::BAD_REQUEST,
            format!(
                "Authenticated principal '{}' does not match principal '{p}' set in FrameworkInfo",
                principal_name(&principal)
            ),
        );
    }
    if let Err(e) = principal.check(Area::Frameworks, &info.name, Access::Write) {
        return fail(StatusCode::FORBIDDEN, e.to_string());
    }
    if let Some(refused) = may_use_role(&principal, &info.role) {
        return refused;
    }
    let Some(link) = l.frameworks_read().get(&fid).and_then(|h| h.link.clone()) else {
        return fail(StatusCode::FORBIDDEN, "Framework is not subscribed");
    };
    let Some(current) = link.stream_id() else {
        return fail(StatusCode::FORBIDDEN, "Framework is not subscribed");
    };
    match headers.get(STREAM_ID).and_then(|v| v.to_str().ok()) {
        None => {
            return fail(
                StatusCode::BAD_REQUEST,
                "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
            );
        }
        Some(s) if s.trim() != current.to_string() => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!(
                    "The stream ID '{s}' included in this request didn't match the stream ID currently associated with framework ID {fid}"
                ),
            );
        }
        Some(_) => {}
    }
    let calls = Calls {
        l: &l,
        fid: &fid,
        info: &info,
        link: &link,
        principal: &principal,
    };
    match kind.as_str() {
        "TEARDOWN" => {
            let (l, fid) = (l.clone(), fid.clone());
            tokio::spawn(async move { teardown(&l, &fid, "the framework asked to").await });
            accepted()
        }
        "ACCEPT" => match call.accept {
            Some(a) => calls.accept(a).await,
            None => missing("accept"),
        },
        "DECLINE" => match call.decline {
            Some(d) => {
                let ids = offer_ids(&d.offer_ids);
                let refuse = refuse_duration(d.filters.and_then(|f| f.refuse_seconds));
                l.allocator().decline(&fid, &ids, refuse, Instant::now());
                accepted()
            }
            None => missing("decline"),
        },
        "REVIVE" => {
            l.allocator().revive(&fid);
            l.alloc_wakeup.notify_one();
            accepted()
        }
        "SUPPRESS" => {
            l.allocator().suppress(&fid);
            accepted()
        }
        "KILL" => match call.kill.and_then(|k| k.task_id) {
            Some(t) => calls.kill(&t.value),
            None => missing("kill.task_id"),
        },
        "SHUTDOWN" => match call.shutdown {
            Some(v1::Shutdown {
                executor_id: Some(e),
                agent_id: Some(a),
            }) => calls.shutdown(&e.value, &a.value),
            _ => missing("shutdown.executor_id and shutdown.agent_id"),
        },
        "MESSAGE" => match call.message {
            Some(m) => calls.message(&m),
            None => missing("message"),
        },
        "ACKNOWLEDGE" => match call.acknowledge {
            Some(a) => calls.acknowledge(a).await,
            None => missing("acknowledge"),
        },
        "RECONCILE" => match call.reconcile {
            Some(r) => {
                calls.reconcile(&r.tasks);
                accepted()
            }
            None => missing("reconcile"),
        },
        "UPDATE_FRAMEWORK" => match call.update_framework {
            Some(u) => calls.update(u).await,
            None => missing("update_framework"),
        },
        "ACCEPT_INVERSE_OFFERS" | "DECLINE_INVERSE_OFFERS" => {
            let accept = kind == "ACCEPT_INVERSE_OFFERS";
            let Some(ids) = (if accept {
                call.accept_inverse_offers
            } else {
                call.decline_inverse_offers
            }) else {
                return missing(&kind.to_ascii_lowercase());
            };
            let ids: Vec<String> = ids.inverse_offer_ids.into_iter().map(|i| i.value).collect();
            l.answer_inverse_offers(&fid, &ids, accept);
            accepted()
        }
        // Accepted and ignored: no operations with feedback, and the
        // allocator reads no requests (neither does Mesos').
        "REQUEST" | "RECONCILE_OPERATIONS" | "ACKNOWLEDGE_OPERATION_STATUS" => accepted(),
        "UNKNOWN" => fail(
            StatusCode::NOT_IMPLEMENTED,
            "Received an unexpected UNKNOWN call",
        ),
        other => fail(
            StatusCode::BAD_REQUEST,
            format!("Failed to convert JSON into Call protobuf: unknown call type {other:?}"),
        ),
    }
}

fn accepted() -> Response {
    StatusCode::ACCEPTED.into_response()
}

fn missing(field: &str) -> Response {
    fail(
        StatusCode::BAD_REQUEST,
        format!("Failed to validate scheduler::Call: Expecting '{field}' to be present"),
    )
}

fn offer_ids(ids: &[v1::Id]) -> Vec<OfferId> {
    ids.iter()
        .filter_map(|i| OfferId::new(i.value.clone()).ok())
        .collect()
}

/// The one role a framework subscribes in (`*` when it names none).
fn role_of(fi: &v1::FrameworkInfo) -> String {
    fi.roles
        .first()
        .cloned()
        .or_else(|| fi.role.clone())
        .unwrap_or_else(|| "*".into())
}

/// Whether the principal may run a framework in its role: any may use
/// `*`; another role needs `roles` (read) on it, since a role's frameworks
/// are offered its reservations and volumes.
fn may_use_role(principal: &Principal, role: &str) -> Option<Response> {
    if role == "*" {
        return None;
    }
    principal
        .check(Area::Roles, role, Access::Read)
        .err()
        .map(|e| fail(StatusCode::FORBIDDEN, format!("role {role}: {e}")))
}

/// The framework's info as Wasmos keeps it.
fn framework_info(fi: &v1::FrameworkInfo, principal: Option<String>) -> FrameworkInfo {
    let role = role_of(fi);
    FrameworkInfo {
        name: fi.name.clone().unwrap_or_default(),
        kind: FrameworkKind::External,
        user: fi.user.clone().unwrap_or_default(),
        role,
        principal,
        partition_aware: fi.has_capability("PARTITION_AWARE"),
        failover_timeout_secs: fi.failover_timeout.unwrap_or(0.0),
        hostname: fi.hostname.clone(),
        webui_url: fi.webui_url.clone(),
        capabilities: fi
            .capabilities
            .iter()
            .filter_map(|c| c.kind.clone())
            .collect(),
    }
}

/// The leader as Mesos' `MasterInfo`.
pub fn master_info(l: &Leader) -> Value {
    let url = reqwest::Url::parse(&l.address).ok();
    let host = url
        .as_ref()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let port = url
        .as_ref()
        .and_then(|u| u.port_or_known_default())
        .unwrap_or(0);
    let ip: Option<std::net::Ipv4Addr> = host.parse().ok();
    let mut info = json!({
        "id": l.master_id,
        "port": port,
        "hostname": host,
        "version": wasmos_core::VERSION,
        "address": {"hostname": host, "port": port},
    });
    if let Some(ip) = ip {
        info["ip"] = json!(u32::from_le_bytes(ip.octets()));
        info["address"]["ip"] = json!(ip.to_string());
    }
    info
}

fn media_type(protobuf: bool) -> HeaderValue {
    HeaderValue::from_static(if protobuf {
        "application/x-protobuf"
    } else {
        "application/json"
    })
}

/// A one-event stream that then ends (an ERROR answering a subscription).
fn error_stream(message: &str, protobuf: bool) -> Response {
    let mut resp = Response::new(Body::from(record(
        &json!({"type": "ERROR", "error": {"message": message}}),
        protobuf,
    )));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, media_type(protobuf));
    resp
}

async fn subscribe(
    l: &Arc<Leader>,
    principal: &Principal,
    headers: &HeaderMap,
    call: v1::Call,
) -> Response {
    // Events in JSON unless the subscriber accepts only protobuf.
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*");
    let json_ok = ["application/json", "*/*", "application/*"]
        .iter()
        .any(|t| accept.contains(t));
    let protobuf = !json_ok && accept.contains("application/x-protobuf");
    if !json_ok && !protobuf {
        return fail(
            StatusCode::NOT_ACCEPTABLE,
            "Expecting 'Accept' to allow application/json or application/x-protobuf",
        );
    }
    let error_stream = |m: &str| error_stream(m, protobuf);
    if headers.contains_key(STREAM_ID) {
        return fail(
            StatusCode::BAD_REQUEST,
            "Subscribe calls should not include the 'Mesos-Stream-Id' header",
        );
    }
    let Some(sub) = call.subscribe else {
        return missing("subscribe");
    };
    let Some(fi) = sub.framework_info else {
        return missing("subscribe.framework_info");
    };
    if fi.name.as_deref().is_none_or(str::is_empty) {
        return missing("subscribe.framework_info.name");
    }
    if fi.user.is_none() {
        return missing("subscribe.framework_info.user");
    }
    let top = call.framework_id.as_ref().map(|i| i.value.as_str());
    let inner = fi.id.as_ref().map(|i| i.value.as_str());
    if top != inner {
        return fail(
            StatusCode::BAD_REQUEST,
            "Failed to validate scheduler::Call: 'framework_id' differs from 'subscribe.framework_info.id'",
        );
    }
    let name = fi.name.clone().unwrap_or_default();
    let authenticated = principal_name(principal).to_string();
    let secure = l.config.tls.is_some();
    if secure
        && let Some(p) = &fi.principal
        && p != &authenticated
    {
        return fail(
            StatusCode::FORBIDDEN,
            format!(
                "framework_info.principal '{p}' is not the authenticated principal '{authenticated}'"
            ),
        );
    }
    if let Err(e) = principal.check(Area::Frameworks, &name, Access::Write) {
        return fail(StatusCode::FORBIDDEN, e.to_string());
    }
    if let Some(refused) = may_use_role(principal, &role_of(&fi)) {
        return refused;
    }
    if fi.roles.len() > 1 {
        return error_stream(
            "this cluster offers one role per framework: give one role (roles with several are not supported yet)",
        );
    }
    let fid = match inner.map(|v| FrameworkId::new(v.to_string())) {
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return error_stream("framework_info.id is not a valid framework id"),
        None => None,
    };
    let guard = l.subscribe_lock.lock().await;
    let existing = fid
        .as_ref()
        .and_then(|id| l.store.read(|s| s.frameworks.get(id).cloned()));
    if let Some(f) = &existing {
        if f.removed_at.is_some() {
            return error_stream("Framework has been removed");
        }
        if f.info.kind != FrameworkKind::External {
            return error_stream(&format!(
                "framework {} is a Wasm framework plugin of this cluster, not an external framework",
                f.id
            ));
        }
    }
    let fid = match fid {
        Some(id) => id,
        None => match new_framework_id(l) {
            Some(id) => id,
            None => {
                return fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot make a framework id; retry",
                );
            }
        },
    };
    // user and principal never change once registered (as in Mesos).
    let mut info = framework_info(&fi, Some(fi.principal.clone().unwrap_or(authenticated)));
    if let Some(f) = &existing {
        info.user = f.info.user.clone();
        info.principal = f.info.principal.clone();
    }
    match l
        .store
        .propose_one(Command::RegisterFramework {
            framework_id: fid.clone(),
            info: info.clone(),
            now: now_secs(),
        })
        .await
    {
        Ok(StateResponse::Ok) => {}
        Ok(StateResponse::Rejected { reason }) => return error_stream(&reason),
        Ok(other) => {
            return fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("unexpected {other:?}"),
            );
        }
        Err(e) => return fail(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
    let link = {
        let mut fws = l.frameworks_write();
        let h = fws
            .entry(fid.clone())
            .or_insert_with(|| spawn(l, fid.clone(), &info));
        h.link.clone()
    };
    drop(guard);
    let Some(link) = link else {
        return fail(
            StatusCode::CONFLICT,
            "a framework plugin runs under this id",
        );
    };
    let stream_id = Uuid::new_v4();
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    link.subscribe(stream_id, tx, protobuf, &info);
    {
        let mut alloc = l.allocator();
        // Offers made to an earlier subscriber are void.
        alloc.remove_framework(&fid);
        alloc.revive(&fid);
        if !sub.suppressed_roles.is_empty() {
            alloc.suppress(&fid);
        }
    }
    let subscribed = json!({
        "type": "SUBSCRIBED",
        "subscribed": {
            "framework_id": v1::id(&fid),
            "heartbeat_interval_seconds": HEARTBEAT.as_secs_f64(),
            "master_info": master_info(l),
        }
    });
    link.send(&subscribed);
    if let Some(h) = l.frameworks_read().get(&fid) {
        for task in pending_tasks(&l.store, &fid) {
            h.mark_pending(task);
        }
    }
    l.alloc_wakeup.notify_one();
    tracing::info!(framework = %fid, name = %info.name, principal = ?info.principal, "external framework subscribed");
    let body = Body::from_stream(EventStream {
        rx,
        link,
        stream_id,
    });
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, media_type(protobuf));
    if let Ok(v) = HeaderValue::from_str(&stream_id.to_string()) {
        h.insert(STREAM_ID, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// A RESERVE, UNRESERVE, CREATE or DESTROY of an ACCEPT, for a framework
/// authenticated as `principal` (volumes it creates name it).
fn offer_op(kind: &str, op: v1::Operation, principal: Option<&str>) -> Result<OfferOp, String> {
    let body = |b: Option<v1::ResourcesOp>| {
        b.ok_or(format!("{kind} needs its `{}` field", kind.to_lowercase()))
    };
    Ok(match kind {
        "RESERVE" => {
            let b = body(op.reserve)?;
            if !b.source.is_empty() {
                return Err("RESERVE with `source` (changing a reservation) is not supported; UNRESERVE and RESERVE again".into());
            }
            let (role, resources) = v1::reserved_bundle(&b.resources)?;
            OfferOp::Reserve { role, resources }
        }
        "UNRESERVE" => {
            let (role, resources) = v1::reserved_bundle(&body(op.unreserve)?.resources)?;
            OfferOp::Unreserve { role, resources }
        }
        "CREATE" => {
            let mut volumes = v1::volume_list(&body(op.create)?.volumes)?;
            // The creator is who the framework authenticated as.
            for v in &mut volumes {
                v.principal = principal.map(String::from);
            }
            OfferOp::Create(volumes)
        }
        _ => OfferOp::Destroy(v1::volume_list(&body(op.destroy)?.volumes)?),
    })
}

/// `<cluster id>-<4 digits>`, the first one not taken (Mesos' form).
fn new_framework_id(l: &Leader) -> Option<FrameworkId> {
    l.store.read(|s| {
        let base = if s.cluster_id.is_empty() {
            l.master_id.clone()
        } else {
            s.cluster_id.clone()
        };
        (0..u32::MAX)
            .map(|n| format!("{base}-{n:04}"))
            .filter_map(|v| FrameworkId::new(v).ok())
            .find(|id| !s.frameworks.contains_key(id))
    })
}

/// The calls of one subscribed framework.
struct Calls<'a> {
    l: &'a Arc<Leader>,
    fid: &'a FrameworkId,
    info: &'a FrameworkInfo,
    link: &'a Arc<Link>,
    principal: &'a Principal,
}

impl Calls<'_> {
    async fn accept(&self, a: v1::Accept) -> Response {
        let ids = offer_ids(&a.offer_ids);
        let refuse = a.filters.and_then(|f| f.refuse_seconds);
        let agent: Option<AgentId> = ids.first().and_then(|o| self.l.allocator().offer_agent(o));
        let mut batch = LaunchBatch::default();
        let mut ops: Vec<OfferOp> = Vec::new();
        let mut invalid: Vec<(String, String)> = Vec::new();
        for op in a.operations {
            match op.kind.as_deref() {
                Some("LAUNCH") => {
                    let mut tasks = Vec::new();
                    for info in op.launch.map(|l| l.task_infos).unwrap_or_default() {
                        let raw = info["task_id"]["value"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string();
                        let Ok(task_id) = TaskId::new(raw.clone()) else {
                            invalid.push((raw, "task_id is not a valid id".into()));
                            continue;
                        };
                        let t: v1::TaskInfo = match serde_json::from_value(info.clone()) {
                            Ok(t) => t,
                            Err(e) => {
                                batch.refuse(
                                    &task_id,
                                    None,
                                    Reason::ReasonTaskInvalid,
                                    format!("not a valid TaskInfo: {e}"),
                                );
                                continue;
                            }
                        };
                        let named = v1::task_agent(&t);
                        let spec = v1::task_spec(&t, &self.info.user).map(|mut spec| {
                            if spec.executor.is_some() {
                                spec.task_info = Some(info.to_string());
                            }
                            spec
                        });
                        match spec {
                            Err(why) => batch.refuse(&task_id, named.as_ref(), Reason::ReasonTaskInvalid, why),
                            Ok(_) if named.is_some() && agent.is_some() && named != agent => batch.refuse(
                                &task_id,
                                named.as_ref(),
                                Reason::ReasonTaskInvalid,
                                "the task's agent_id is not the agent of its offers".into(),
                            ),
                            Ok(spec) => match spec.command.user.as_deref().or_else(|| {
                                spec.executor.as_ref()?.command.as_ref()?.user.as_deref()
                            }) {
                                Some(u) if !self.principal.grants.may_run_as(u) => batch.refuse(
                                    &task_id,
                                    named.as_ref(),
                                    Reason::ReasonTaskUnauthorized,
                                    format!("{} may not run tasks as {u:?}: no policy of theirs lists it in run_as; set framework_info.user to \"\" (or leave command.user out) to run as the agents' unprivileged task user", self.principal.name),
                                ),
                                _ => tasks.push(spec),
                            },
                        }
                    }
                    ops.push(OfferOp::Launch(tasks));
                }
                Some("LAUNCH_GROUP") => {
                    let group = op.launch_group.unwrap_or_default();
                    let refuse_all = |batch: &mut LaunchBatch, ids: &[String], why: &str| {
                        for id in ids.iter().filter_map(|i| TaskId::new(i.clone()).ok()) {
                            batch.refuse(
                                &id,
                                agent.as_ref(),
                                Reason::ReasonTaskGroupInvalid,
                                why.to_string(),
                            );
                        }
                    };
                    match v1::task_group(&group, &self.info.user) {
                        Err((ids, why)) => refuse_all(&mut batch, &ids, &why),
                        Ok(tasks) => {
                            let ids: Vec<String> =
                                tasks.iter().map(|t| t.task_id.to_string()).collect();
                            let named = group["task_group"]["tasks"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|t| t["agent_id"]["value"].as_str())
                                .any(|a| agent.as_ref().is_some_and(|x| x.as_str() != a));
                            let user = tasks
                                .iter()
                                .filter_map(|t| t.command.user.as_deref())
                                .chain(
                                    tasks[0]
                                        .executor
                                        .iter()
                                        .filter_map(|e| e.command.as_ref()?.user.as_deref()),
                                )
                                .find(|u| !self.principal.grants.may_run_as(u));
                            if named {
                                refuse_all(
                                    &mut batch,
                                    &ids,
                                    "a task's agent_id is not the agent of its offers",
                                );
                            } else if let Some(u) = user {
                                for id in tasks.iter().map(|t| &t.task_id) {
                                    batch.refuse(id, agent.as_ref(), Reason::ReasonTaskUnauthorized, format!("{} may not run tasks as {u:?}: no policy of theirs lists it in run_as", self.principal.name));
                                }
                            } else {
                                ops.push(OfferOp::Launch(tasks));
                            }
                        }
                    }
                }
                Some(kind @ ("RESERVE" | "UNRESERVE" | "CREATE" | "DESTROY")) => {
                    let kind = kind.to_string();
                    match offer_op(&kind, op, self.info.principal.as_deref()) {
                        Ok(o) => ops.push(o),
                        Err(why) => tracing::warn!(framework = %self.fid, "{kind} dropped: {why}"),
                    }
                }
                other => {
                    tracing::warn!(framework = %self.fid, operation = ?other, "offer operation not supported; ignored");
                }
            }
        }
        let nothing = ops
            .iter()
            .all(|op| matches!(op, OfferOp::Launch(t) if t.is_empty()));
        if nothing {
            self.l
                .allocator()
                .decline(self.fid, &ids, refuse_duration(refuse), Instant::now());
        } else {
            batch.accept_ops(self.l, self.fid, &ids, ops, refuse);
        }
        let refused = match self.l.commit_launches(self.fid, Vec::new(), batch).await {
            Ok((refused, _)) => refused,
            Err(e) => {
                return fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot record the launch: {e}; retry with new offers"),
                );
            }
        };
        for s in &refused {
            self.link.send_ephemeral(s);
        }
        // What the launch left of its offers is free again: offer it now
        // rather than at the next allocation interval.
        self.l.alloc_wakeup.notify_one();
        let now = now_secs();
        for (raw, why) in invalid {
            self.link
                .send(&json!({"type": "UPDATE", "update": {"status": {
                "task_id": {"value": raw}, "state": "TASK_ERROR", "source": "SOURCE_MASTER",
                "reason": "REASON_TASK_INVALID", "message": why, "timestamp": now}}}));
        }
        accepted()
    }

    /// Shuts an executor down (its tasks end KILLED); a command task's
    /// executor is the task itself.
    fn shutdown(&self, executor: &str, agent: &str) -> Response {
        let (Ok(executor_id), Ok(agent_id)) = (
            ExecutorId::new(executor.to_string()),
            AgentId::new(agent.to_string()),
        ) else {
            return fail(
                StatusCode::BAD_REQUEST,
                "shutdown: executor_id and agent_id must be valid ids",
            );
        };
        let running = self.l.store.read(|s| {
            s.live_executors().contains_key(&(
                agent_id.clone(),
                self.fid.clone(),
                executor_id.clone(),
            ))
        });
        if !running {
            // A command task's executor is the task itself; an executor
            // that is not running has nothing to shut down.
            let task = TaskId::new(executor.to_string()).ok().filter(|id| {
                self.l.store.read(|s| {
                    s.tasks.get(id).is_some_and(|t| {
                        &t.framework_id == self.fid
                            && t.spec.executor.is_none()
                            && !t.state().is_terminal()
                    })
                })
            });
            return match task {
                Some(t) => self.kill(t.as_str()),
                None => accepted(),
            };
        }
        let (l, fid) = (self.l.clone(), self.fid.clone());
        tokio::spawn(async move {
            if let Err(e) = l.shutdown_executor(&agent_id, &fid, &executor_id).await {
                tracing::warn!(executor = %executor_id, agent = %agent_id, error = %e, "executor shutdown failed");
            }
        });
        accepted()
    }

    /// Hands a framework's message to its executor, best effort (as Mesos).
    fn message(&self, m: &Value) -> Response {
        let id = |k: &str| m[k]["value"].as_str().map(str::to_string);
        let (Some(Ok(agent_id)), Some(Ok(executor_id)), Some(data)) = (
            id("agent_id").map(AgentId::new),
            id("executor_id").map(ExecutorId::new),
            m["data"].as_str(),
        ) else {
            return fail(
                StatusCode::BAD_REQUEST,
                "message needs agent_id, executor_id and data (base64)",
            );
        };
        if base64::engine::general_purpose::STANDARD
            .decode(data)
            .is_err()
        {
            return fail(StatusCode::BAD_REQUEST, "message.data must be base64");
        }
        let msg = ExecutorMessage {
            term: self.l.term,
            agent_id: None,
            framework_id: self.fid.clone(),
            executor_id,
            data: data.to_string(),
        };
        let l = self.l.clone();
        tokio::spawn(async move {
            if let Err(e) = l.message_executor(&agent_id, &msg).await {
                tracing::info!(agent = %agent_id, executor = %msg.executor_id, error = %e, "framework message not delivered");
            }
        });
        accepted()
    }

    fn kill(&self, task: &str) -> Response {
        let owned = TaskId::new(task.to_string()).ok().filter(|id| {
            self.l.store.read(|s| {
                s.tasks
                    .get(id)
                    .is_some_and(|t| &t.framework_id == self.fid && !t.state().is_terminal())
            })
        });
        match owned {
            Some(id) => {
                let l = self.l.clone();
                tokio::spawn(async move {
                    if let Err(e) = l.kill_task(&id).await {
                        tracing::warn!(task = %id, error = %e, "kill failed");
                    }
                });
            }
            // Killing a task the master does not know reconciles it.
            None => self.reconcile(&[v1::ReconcileTask {
                task_id: Some(v1::Id {
                    value: task.to_string(),
                }),
                agent_id: None,
            }]),
        }
        accepted()
    }

    async fn acknowledge(&self, a: v1::Acknowledge) -> Response {
        let (Some(task), Some(uuid)) = (a.task_id, a.uuid) else {
            return missing("acknowledge.task_id and acknowledge.uuid");
        };
        let uuid = match v1::parse_uuid(&uuid) {
            Ok(u) => u,
            Err(e) => {
                return fail(
                    StatusCode::BAD_REQUEST,
                    format!("Failed to validate scheduler::Call: {e}"),
                );
            }
        };
        let Ok(task) = TaskId::new(task.value) else {
            return accepted();
        };
        let next = self.l.store.read(|s| {
            s.tasks
                .get(&task)
                .filter(|t| &t.framework_id == self.fid)
                .and_then(|t| t.pending.front().map(|u| u.uuid))
        });
        // Anything else (a repeat, an update long acknowledged) is
        // accepted and ignored: a framework never learns more from a 4xx.
        if next == Some(uuid) {
            if let Err(e) = self
                .l
                .store
                .propose_one(Command::AcknowledgeStatus {
                    task_id: task.clone(),
                    uuid,
                })
                .await
            {
                return fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot record the acknowledgement: {e}; retry"),
                );
            }
            self.link.lock().sent.remove(&uuid);
            if let Some(h) = self.l.frameworks_read().get(self.fid) {
                h.mark_pending(task);
            }
        }
        accepted()
    }

    /// Answers with each task's latest state (no uuid: nothing to
    /// acknowledge). No tasks named: every live task of the framework.
    fn reconcile(&self, asked: &[v1::ReconcileTask]) {
        let now = now_secs();
        let updates: Vec<TaskStatus> = self.l.store.read(|s| {
            let latest = |t: &wasmos_state::TaskRecord| {
                let mut st = t.status().clone();
                st.source = Source::Master;
                st.reason = Some(Reason::ReasonReconciliation);
                st.message = Some("Reconciliation: latest task state".into());
                st.timestamp = now;
                st
            };
            if asked.is_empty() {
                return s
                    .tasks
                    .values()
                    .filter(|t| &t.framework_id == self.fid && !t.state().is_terminal())
                    .map(latest)
                    .collect();
            }
            asked
                .iter()
                .filter_map(|r| {
                    let id = TaskId::new(r.task_id.as_ref()?.value.clone()).ok()?;
                    if let Some(t) = s.tasks.get(&id).filter(|t| &t.framework_id == self.fid) {
                        return Some(latest(t));
                    }
                    let agent = r
                        .agent_id
                        .as_ref()
                        .and_then(|a| AgentId::new(a.value.clone()).ok());
                    let state = match agent.as_ref().map(|a| s.agents.get(a)) {
                        Some(None) => TaskState::Unknown,
                        Some(Some(a)) if a.state == AgentState::Unreachable => {
                            TaskState::Unreachable
                        }
                        _ => TaskState::Gone,
                    };
                    Some(master_status(
                        &id,
                        agent.as_ref(),
                        state,
                        Reason::ReasonReconciliation,
                        "Reconciliation: task is unknown".into(),
                        now,
                    ))
                })
                .collect()
        });
        for u in &updates {
            self.link.send_ephemeral(u);
        }
    }

    async fn update(&self, u: v1::Subscribe) -> Response {
        let Some(fi) = u.framework_info else {
            return missing("update_framework.framework_info");
        };
        if fi.id.as_ref().map(|i| i.value.as_str()) != Some(self.fid.as_str()) {
            return fail(
                StatusCode::BAD_REQUEST,
                "Failed to validate scheduler::Call: 'framework_id' differs from 'update_framework.framework_info.id'",
            );
        }
        let mut info = framework_info(&fi, self.info.principal.clone());
        if fi.user.as_deref().is_some_and(|u| u != self.info.user)
            || fi.principal.is_some() && fi.principal != self.info.principal
            || fi.name.as_deref().is_none_or(str::is_empty)
        {
            return fail(
                StatusCode::BAD_REQUEST,
                "update_framework may not change user or principal, and needs a name",
            );
        }
        info.user = self.info.user.clone();
        if let Some(refused) = may_use_role(self.principal, &info.role) {
            return refused;
        }
        match self
            .l
            .store
            .propose_one(Command::RegisterFramework {
                framework_id: self.fid.clone(),
                info: info.clone(),
                now: now_secs(),
            })
            .await
        {
            Ok(StateResponse::Ok) => {
                let mut st = self.link.lock();
                st.failover_timeout = failover_timeout(&info);
                st.partition_aware = info.partition_aware;
                drop(st);
                if !u.suppressed_roles.is_empty() {
                    self.l.allocator().suppress(self.fid);
                }
                StatusCode::OK.into_response()
            }
            Ok(StateResponse::Rejected { reason }) => fail(StatusCode::BAD_REQUEST, reason),
            Ok(other) => fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("unexpected {other:?}"),
            ),
            Err(e) => fail(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
}
