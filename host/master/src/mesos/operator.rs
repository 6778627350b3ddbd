//! Mesos' operator API (`POST /api/v1`) and the legacy JSON endpoints tools
//! still read (`/master/state`, `/master/slaves`, `/metrics/snapshot`, ...),
//! answered from the replicated state and the leader's memory (offers,
//! connections) in Mesos' shapes: v1 IDs as `{"value": ...}`, resources as
//! lists and times as `{"nanoseconds": ...}`; the legacy endpoints with flat
//! resource objects and times in seconds.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use wasmos_core::{
    AgentId, AgentState, ExecutorKind, ExecutorSpec, FrameworkId, FrameworkKind, Offer, Resources,
    TaskState,
};
use wasmos_state::acl::{Access, Area};
use wasmos_state::usage::Usage;
use wasmos_state::{AgentRecord, FrameworkRecord, TaskRecord};

use super::scheduler::{master_info, teardown};
use super::v1::{self, id, resources_json};
use crate::auth::Principal;
use crate::http::Lead;
use crate::leader::{Leader, now_secs};
use crate::node::Node;

/// The Mesos version tools are told (they parse it as dotted numbers).
pub const MESOS_VERSION: &str = "1.11.0";

fn fail(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

fn json_response(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// One agent as the leader sees it now.
pub(super) struct AgentSnap {
    pub(super) rec: AgentRecord,
    pub(super) used: Resources,
    pub(super) offered: Resources,
    pub(super) connected: bool,
}

/// One framework as the leader sees it now.
pub(super) struct FrameworkSnap {
    pub(super) rec: FrameworkRecord,
    /// Offered to, and connected (the same thing here).
    active: bool,
    used: Resources,
    offered: Resources,
    offers: Vec<Offer>,
    tasks: Vec<TaskRecord>,
    completed: Vec<TaskRecord>,
}

/// The cluster at one instant.
pub(super) struct Snap {
    pub(super) agents: Vec<AgentSnap>,
    pub(super) frameworks: Vec<FrameworkSnap>,
}

/// What a snapshot reads from the leader's memory, outside the state's
/// lock: connections, offers, and which frameworks are connected.
pub(super) struct Live {
    connected: std::collections::HashSet<AgentId>,
    offers: Vec<Offer>,
    active: BTreeMap<FrameworkId, bool>,
}

impl Live {
    pub(super) fn of(l: &Leader) -> Live {
        // A framework is active (offered to) exactly while it is connected:
        // a plugin always, an external framework while subscribed.
        Live {
            connected: l.agents.connected(),
            offers: l.allocator().offers(),
            active: l
                .frameworks_read()
                .iter()
                .map(|(id, h)| (id.clone(), h.is_active()))
                .collect(),
        }
    }

    /// What is offered of each agent.
    pub(super) fn offered(&self) -> std::collections::HashMap<&AgentId, Resources> {
        let mut offered: std::collections::HashMap<&AgentId, Resources> = Default::default();
        for o in &self.offers {
            let e = offered.entry(&o.agent_id).or_default();
            *e = e.add(&o.resources);
        }
        offered
    }

    /// Whether an agent is connected.
    pub(super) fn connected(&self, agent: &AgentId) -> bool {
        self.connected.contains(agent)
    }

    /// Every agent, with what its tasks use and what is offered of it.
    pub(super) fn agents(&self, s: &wasmos_state::State, used: &Usage) -> Vec<AgentSnap> {
        let used = &used.by_agent;
        let offered = self.offered();
        s.agents
            .values()
            .map(|a| AgentSnap {
                rec: a.clone(),
                used: used.get(&a.id).cloned().unwrap_or_default(),
                offered: offered.get(&a.id).cloned().unwrap_or_default(),
                connected: self.connected.contains(&a.id),
            })
            .collect()
    }

    /// Every framework with its offers and what its tasks use, without its
    /// tasks.
    pub(super) fn frameworks(&self, s: &wasmos_state::State, used: &Usage) -> Vec<FrameworkSnap> {
        let used = &used.by_framework;
        s.frameworks
            .values()
            .map(|f| {
                let mine: Vec<Offer> = self
                    .offers
                    .iter()
                    .filter(|o| o.framework_id == f.id)
                    .cloned()
                    .collect();
                FrameworkSnap {
                    rec: f.clone(),
                    active: f.removed_at.is_none()
                        && self.active.get(&f.id).copied().unwrap_or(false),
                    used: used.get(&f.id).cloned().unwrap_or_default(),
                    offered: mine
                        .iter()
                        .fold(Resources::default(), |acc, o| acc.add(&o.resources)),
                    offers: mine,
                    tasks: Vec::new(),
                    completed: Vec::new(),
                }
            })
            .collect()
    }
}

pub(super) fn snapshot(l: &Leader) -> Snap {
    let live = Live::of(l);
    l.store.read(|s| {
        let used = l.usage(s);
        let agents = live.agents(s, &used);
        let mut frameworks = live.frameworks(s, &used);
        // One pass over the tasks (not one per framework).
        let at: std::collections::HashMap<FrameworkId, usize> = frameworks
            .iter()
            .enumerate()
            .map(|(i, f)| (f.rec.id.clone(), i))
            .collect();
        for t in s.tasks.values() {
            if let Some(f) = at.get(&t.framework_id).map(|i| &mut frameworks[*i]) {
                if t.state().is_terminal() {
                    f.completed.push(t.clone());
                } else {
                    f.tasks.push(t.clone());
                }
            }
        }
        Snap { agents, frameworks }
    })
}

fn nanos(secs: f64) -> Value {
    json!({ "nanoseconds": (secs * 1e9) as i64 })
}

/// The `host:port` part of a URL, and the port.
fn host_port(url: &str) -> (String, u16) {
    let u = reqwest::Url::parse(url).ok();
    let host = u
        .as_ref()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let port = u.and_then(|u| u.port_or_known_default()).unwrap_or(0);
    (host, port)
}

fn agent_pid(a: &AgentRecord) -> String {
    let (host, port) = host_port(&a.info.endpoint);
    format!("slave(1)@{host}:{port}")
}

fn master_pid(l: &Leader) -> String {
    let (host, port) = host_port(&l.address);
    format!("master@{host}:{port}")
}

/// Legacy resources: `{"cpus": 2, "mem": ..., "disk": ..., "gpus": 0, "ports": "[a-b, c-d]"}`.
fn legacy_resources(r: &Resources) -> Value {
    let mut v = json!({
        "cpus": r.cpus.as_f64(),
        "mem": r.mem.as_f64(),
        "disk": r.disk.as_f64(),
        "gpus": f64::from(r.gpus),
    });
    if !r.ports.is_empty() {
        v["ports"] = json!(r.ports.to_string());
    }
    v
}

pub(super) fn legacy_task(t: &TaskRecord) -> Value {
    let statuses: Vec<Value> = t
        .statuses
        .iter()
        .map(|s| {
            let mut v = json!({"state": s.state.as_str(), "timestamp": s.timestamp});
            if let Some(h) = s.healthy {
                v["healthy"] = json!(h);
            }
            v
        })
        .collect();
    let mut v = json!({
        "id": t.spec.task_id,
        "name": t.spec.name,
        "framework_id": t.framework_id,
        "executor_id": t.spec.executor.as_ref().map(|e| e.executor_id.as_str()).unwrap_or(""),
        "slave_id": t.agent_id,
        "state": t.state().as_str(),
        "resources": legacy_resources(&t.spec.resources),
        "role": "*",
        "statuses": statuses,
    });
    if let Some(u) = &t.spec.command.user {
        v["user"] = json!(u);
    }
    if !t.spec.labels.is_empty() {
        v["labels"] = json!(labels(&t.spec.labels));
    }
    if let Some(d) = t.spec.container.as_ref().and_then(|c| c.docker()) {
        v["container"] = json!({"type": "DOCKER", "docker": {"image": d.image, "network": format!("{:?}", d.network).to_uppercase()}});
    }
    v
}

fn labels(l: &BTreeMap<String, String>) -> Vec<Value> {
    l.iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect()
}

pub(super) fn legacy_agent(a: &AgentSnap) -> Value {
    let (_, port) = host_port(&a.rec.info.endpoint);
    let reserved = a.rec.reserved();
    json!({
        "id": a.rec.id,
        "hostname": a.rec.info.hostname,
        "port": port,
        "pid": agent_pid(&a.rec),
        "attributes": a.rec.info.attributes,
        "registered_time": a.rec.registered_at,
        "reregistered_time": a.rec.reregistered_at,
        "resources": legacy_resources(&a.rec.info.resources),
        "used_resources": legacy_resources(&a.used),
        "offered_resources": legacy_resources(&a.offered),
        "reserved_resources": reserved.iter().map(|(role, r)| (role.clone(), legacy_resources(r))).collect::<serde_json::Map<_, _>>(),
        "unreserved_resources": legacy_resources(&a.rec.info.resources.saturating_sub(&wasmos_core::reservation::total(&reserved))),
        "reserved_resources_full": reserved_full(&a.rec),
        "active": a.rec.state == AgentState::Active && a.connected,
        "deactivated": a.rec.deactivated,
        "drain_info": drain_info(&a.rec),
        "version": a.rec.info.version,
        "capabilities": [],
    })
}

/// Mesos' MachineIDs from JSON.
fn parse_machines(v: &Value) -> Result<Vec<wasmos_state::MachineId>, String> {
    let list = v.as_array().ok_or("expected a list of {hostname, ip}")?;
    list.iter()
        .map(|m| {
            let field = |k: &str| match &m[k] {
                Value::Null => Ok(None),
                Value::String(s) if !s.is_empty() => Ok(Some(s.clone())),
                other => Err(format!("{k} must be a non-empty string, not {other}")),
            };
            let id = wasmos_state::MachineId {
                hostname: field("hostname")?,
                ip: field("ip")?,
            };
            if id.hostname.is_none() && id.ip.is_none() {
                return Err("a machine needs a hostname or an ip".into());
            }
            Ok(id)
        })
        .collect()
}

/// Mesos' maintenance Schedule from JSON.
fn parse_schedule(v: &Value) -> Result<Vec<wasmos_state::MaintenanceWindow>, String> {
    let windows = match &v["windows"] {
        Value::Null => return Ok(Vec::new()),
        w => w.as_array().ok_or("schedule.windows must be a list")?,
    };
    windows
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let machines = parse_machines(&w["machine_ids"])
                .map_err(|e| format!("schedule.windows[{i}].machine_ids: {e}"))?;
            let ns = |d: &Value| d["nanoseconds"].as_i64();
            let start_ns = ns(&w["unavailability"]["start"]).ok_or(format!(
                "schedule.windows[{i}].unavailability.start.nanoseconds is required"
            ))?;
            let duration_ns = match &w["unavailability"]["duration"] {
                Value::Null => None,
                d => Some(ns(d).ok_or(format!(
                    "schedule.windows[{i}].unavailability.duration must hold nanoseconds"
                ))?),
            };
            Ok(wasmos_state::MaintenanceWindow {
                machines,
                start_ns,
                duration_ns,
            })
        })
        .collect()
}

fn machine_json(m: &wasmos_state::MachineId) -> Value {
    let mut v = json!({});
    if let Some(h) = &m.hostname {
        v["hostname"] = json!(h);
    }
    if let Some(ip) = &m.ip {
        v["ip"] = json!(ip);
    }
    v
}

fn schedule_json(windows: &[wasmos_state::MaintenanceWindow]) -> Value {
    let windows: Vec<Value> = windows
        .iter()
        .map(|w| {
            let mut unavailability = json!({"start": {"nanoseconds": w.start_ns}});
            if let Some(d) = w.duration_ns {
                unavailability["duration"] = json!({"nanoseconds": d});
            }
            json!({
                "machine_ids": w.machines.iter().map(machine_json).collect::<Vec<_>>(),
                "unavailability": unavailability,
            })
        })
        .collect();
    json!({ "windows": windows })
}

/// Mesos' ClusterStatus: scheduled machines not yet down are draining,
/// each with the answers to the inverse offers made for it.
fn maintenance_status(l: &Leader) -> Value {
    let made: Vec<crate::leader::InverseOffer> = l
        .inverse_offers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    let s = l
        .store
        .read(|s| (s.maintenance.clone(), s.machines_down.clone()));
    let (maintenance, machines_down) = (&s.0, &s.1);
    let draining: Vec<Value> = maintenance
        .iter()
        .flat_map(|w| w.machines.iter())
        .filter(|m| !machines_down.contains(*m))
        .map(|m| {
            let statuses: Vec<Value> = made
                .iter()
                .filter(|o| &o.machine == m)
                .map(|o| {
                    let (status, at) = o.answer.unwrap_or(("UNKNOWN", 0.0));
                    json!({"framework_id": {"value": o.framework.to_string()}, "status": status,
                           "timestamp": {"nanoseconds": (at * 1e9) as i64}})
                })
                .collect();
            json!({"id": machine_json(m), "statuses": statuses})
        })
        .collect();
    let down: Vec<Value> = machines_down.iter().map(machine_json).collect();
    json!({"draining_machines": draining, "down_machines": down})
}

/// Mesos' `DrainInfo` of an agent being drained or drained (null
/// otherwise).
fn drain_info(a: &wasmos_state::AgentRecord) -> Value {
    match &a.drain {
        None => Value::Null,
        Some(d) => {
            let mut config = json!({"mark_gone": d.mark_gone});
            if let Some(g) = d.max_grace_period_secs {
                config["max_grace_period"] = json!({"nanoseconds": (g * 1e9) as i64});
            }
            json!({
                "state": match d.state {
                    wasmos_state::DrainState::Draining => "DRAINING",
                    wasmos_state::DrainState::Drained => "DRAINED",
                },
                "config": config,
            })
        }
    }
}

/// An agent's reservations by role, each role's resources and volumes in
/// Mesos' JSON form (static and dynamic told apart).
fn reserved_full(a: &AgentRecord) -> serde_json::Map<String, Value> {
    let idle = a.idle_pools();
    let mut roles: std::collections::BTreeSet<&String> = idle.reserved.keys().collect();
    roles.extend(a.volumes.values().map(|v| &v.role));
    roles
        .into_iter()
        .map(|role| {
            let r = idle.reserved.get(role).cloned().unwrap_or_default();
            let fixed = idle.static_reserved.get(role).cloned().unwrap_or_default();
            let mut full = v1::role_json(role, &r, &fixed, v1::ReservationFormat::Refinement);
            full.extend(
                a.volumes
                    .values()
                    .filter(|v| &v.role == role)
                    .map(|v| v1::volume_json(v, v1::ReservationFormat::Refinement)),
            );
            (role.clone(), Value::Array(full))
        })
        .collect()
}

pub(super) fn legacy_framework(f: &FrameworkSnap) -> Value {
    let i = &f.rec.info;
    let mut v = json!({
        "id": f.rec.id,
        "name": i.name,
        "used_resources": legacy_resources(&f.used),
        "offered_resources": legacy_resources(&f.offered),
        "resources": legacy_resources(&f.used.add(&f.offered)),
        "capabilities": i.capabilities,
        "hostname": i.hostname.clone().unwrap_or_default(),
        "webui_url": i.webui_url.clone().unwrap_or_default(),
        "active": f.active,
        "connected": f.active,
        "recovered": false,
        "user": i.user,
        "failover_timeout": i.failover_timeout_secs,
        "checkpoint": true,
        "registered_time": f.rec.registered_at,
        "unregistered_time": f.rec.removed_at.unwrap_or(0.0),
        "role": i.role,
        "tasks": f.tasks.iter().map(legacy_task).collect::<Vec<_>>(),
        "unreachable_tasks": [],
        "completed_tasks": f.completed.iter().map(legacy_task).collect::<Vec<_>>(),
        "offers": f.offers.iter().map(|o| json!({
            "id": o.id, "framework_id": o.framework_id, "slave_id": o.agent_id,
            "resources": legacy_resources(&o.resources),
        })).collect::<Vec<_>>(),
        "executors": legacy_executors(f),
    });
    if let Some(p) = &i.principal {
        v["principal"] = json!(p);
    }
    v
}

/// `activated` and `unreachable` count agents; `state_json` adds the agents
/// themselves (`slaves`) and the frameworks.
pub(super) fn legacy_state_head(l: &Leader, activated: usize, unreachable: usize) -> Value {
    let (host, port) = host_port(&l.address);
    json!({
        "version": MESOS_VERSION,
        "build_date": "",
        "build_time": 0,
        "build_user": "",
        "start_time": l.elected_at,
        "elected_time": l.elected_at,
        "id": l.master_id,
        "pid": master_pid(l),
        "hostname": host,
        "capabilities": [],
        "activated_slaves": activated,
        "deactivated_slaves": 0,
        "unreachable_slaves": unreachable,
        "leader": master_pid(l),
        "leader_info": {"id": l.master_id, "pid": master_pid(l), "port": port, "hostname": host},
        "flags": flags(l),
        "recovered_slaves": [],
        "orphan_tasks": [],
        "unregistered_frameworks": [],
    })
}

fn flags(l: &Leader) -> Value {
    json!({
        "allocation_interval": format!("{}ms", l.config.allocation_interval.as_millis()),
        "offer_timeout": format!("{}ms", l.config.offer_timeout.as_millis()),
        "agent_ping_timeout": format!("{}ms", l.config.agent_timeout.as_millis()),
        "agent_removal_rate_limit": l.config.unreachable_rate.to_string(),
        "authenticate_http_frameworks": (l.config.tls.is_some()).to_string(),
        "authenticate_http_readonly": (l.config.tls.is_some()).to_string(),
        "authenticate_http_readwrite": (l.config.tls.is_some()).to_string(),
        "roles": "*",
    })
}

/// `/master/state` (and `/state`, `/master/state.json`, `/state.json`).
pub async fn state(Lead(l): Lead) -> Response {
    let body = tokio::task::spawn_blocking(move || super::state_json::legacy_state(&l))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let len = body.len;
    let chunks = futures::stream::iter(
        body.into_chunks()
            .map(|c| Ok::<_, std::convert::Infallible>(Bytes::from(c))),
    );
    (
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        axum::body::Body::from_stream(chunks),
    )
        .into_response()
}

/// `/master/state-summary`.
pub async fn state_summary(Lead(l): Lead) -> Response {
    let snap = snapshot(&l);
    let count = |tasks: &mut dyn Iterator<Item = &TaskRecord>| {
        let mut c: BTreeMap<&'static str, usize> = BTreeMap::new();
        for t in tasks {
            *c.entry(t.state().as_str()).or_default() += 1;
        }
        c
    };
    // Per agent, one pass over the tasks: its tasks by state, and the
    // frameworks with live tasks on it.
    let mut on: std::collections::HashMap<&AgentId, (BTreeMap<&'static str, usize>, Vec<String>)> =
        Default::default();
    for f in &snap.frameworks {
        for t in f.tasks.iter().chain(&f.completed) {
            *on.entry(&t.agent_id)
                .or_default()
                .0
                .entry(t.state().as_str())
                .or_default() += 1;
        }
        let mut agents: Vec<&AgentId> = f.tasks.iter().map(|t| &t.agent_id).collect();
        agents.sort();
        agents.dedup();
        for a in agents {
            on.entry(a).or_default().1.push(f.rec.id.to_string());
        }
    }
    let slaves: Vec<Value> = snap
        .agents
        .iter()
        .map(|a| {
            let mut v = legacy_agent(a);
            let (counts, frameworks) = on.remove(&a.rec.id).unwrap_or_default();
            for (k, n) in counts {
                v[k] = json!(n);
            }
            v["framework_ids"] = json!(frameworks);
            v
        })
        .collect();
    let frameworks: Vec<Value> = snap
        .frameworks
        .iter()
        .filter(|f| f.rec.removed_at.is_none())
        .map(|f| {
            let mut v = json!({
                "id": f.rec.id, "name": f.rec.info.name, "active": f.active,
                "connected": f.active, "used_resources": legacy_resources(&f.used),
                "offered_resources": legacy_resources(&f.offered),
                "webui_url": f.rec.info.webui_url.clone().unwrap_or_default(),
                "hostname": f.rec.info.hostname.clone().unwrap_or_default(),
                "slave_ids": f.tasks.iter().map(|t| t.agent_id.to_string()).collect::<std::collections::BTreeSet<_>>(),
            });
            for (k, n) in count(&mut f.tasks.iter().chain(&f.completed)) {
                v[k] = json!(n);
            }
            v
        })
        .collect();
    let (host, _) = host_port(&l.address);
    json_response(&json!({"hostname": host, "slaves": slaves, "frameworks": frameworks}))
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub struct Filter {
    framework_id: Option<String>,
    slave_id: Option<String>,
    task_id: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
    order: Option<String>,
}

/// `/master/frameworks[?framework_id=]`.
pub async fn frameworks(Lead(l): Lead, Query(q): Query<Filter>) -> Response {
    let snap = snapshot(&l);
    let pick = |f: &&FrameworkSnap| {
        q.framework_id
            .as_deref()
            .is_none_or(|id| f.rec.id.as_str() == id)
    };
    let (live, done): (Vec<&FrameworkSnap>, Vec<&FrameworkSnap>) = snap
        .frameworks
        .iter()
        .filter(pick)
        .partition(|f| f.rec.removed_at.is_none());
    json_response(&json!({
        "frameworks": live.into_iter().map(legacy_framework).collect::<Vec<_>>(),
        "completed_frameworks": done.into_iter().map(legacy_framework).collect::<Vec<_>>(),
        "unregistered_frameworks": [],
    }))
}

/// `/maintenance/schedule`: the schedule (GET) or a new one (POST, the
/// schedule's JSON; an empty one cancels it).
pub async fn maintenance_schedule(Lead(l): Lead, method: Method, body: Bytes) -> Response {
    if method == Method::GET {
        return json_response(&l.store.read(|s| schedule_json(&s.maintenance)));
    }
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("Failed to parse the schedule: {e}"),
            );
        }
    };
    match parse_schedule(&v) {
        Ok(windows) => match l.update_maintenance(windows).await {
            Ok(()) => StatusCode::OK.into_response(),
            Err(e) => crate::error::ApiError::from(e).into_response(),
        },
        Err(why) => fail(StatusCode::BAD_REQUEST, why),
    }
}

/// `GET /maintenance/status`: draining and down machines.
pub async fn maintenance_status_legacy(Lead(l): Lead) -> Response {
    json_response(&maintenance_status(&l))
}

/// `POST /machine/down` and `/machine/up`: a JSON list of machines.
pub async fn machine_down(Lead(l): Lead, body: Bytes) -> Response {
    machines_call(&l, &body, true).await
}

pub async fn machine_up(Lead(l): Lead, body: Bytes) -> Response {
    machines_call(&l, &body, false).await
}

async fn machines_call(l: &Arc<Leader>, body: &[u8], down: bool) -> Response {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("Failed to parse the machines: {e}"),
            );
        }
    };
    let machines = match parse_machines(&v) {
        Ok(m) => m,
        Err(why) => return fail(StatusCode::BAD_REQUEST, why),
    };
    let done = if down {
        l.start_maintenance(machines).await
    } else {
        l.stop_maintenance(machines).await
    };
    match done {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => crate::error::ApiError::from(e).into_response(),
    }
}

/// `/master/slaves[?slave_id=]` (and `/slaves`).
pub async fn slaves(Lead(l): Lead, Query(q): Query<Filter>) -> Response {
    let snap = snapshot(&l);
    let slaves: Vec<Value> = snap
        .agents
        .iter()
        .filter(|a| {
            q.slave_id
                .as_deref()
                .is_none_or(|id| a.rec.id.as_str() == id)
        })
        .filter(|a| a.rec.state != AgentState::Gone)
        .map(legacy_agent)
        .collect();
    json_response(&json!({"slaves": slaves, "recovered_slaves": []}))
}

/// `/master/tasks[?limit=100&offset=0&order=asc|desc&framework_id=&task_id=]`
/// (and `/tasks`).
pub async fn tasks(Lead(l): Lead, Query(q): Query<Filter>) -> Response {
    let mut tasks: Vec<TaskRecord> = l.store.read(|s| {
        s.tasks
            .values()
            .filter(|t| {
                q.framework_id
                    .as_deref()
                    .is_none_or(|f| t.framework_id.as_str() == f)
            })
            .filter(|t| {
                q.task_id
                    .as_deref()
                    .is_none_or(|id| t.spec.task_id.as_str() == id)
            })
            .cloned()
            .collect()
    });
    tasks.sort_by(|a, b| a.launched_at.total_cmp(&b.launched_at));
    if q.order.as_deref() == Some("desc") {
        tasks.reverse();
    }
    let page: Vec<Value> = tasks
        .iter()
        .skip(q.offset.unwrap_or(0))
        .take(q.limit.unwrap_or(100))
        .map(legacy_task)
        .collect();
    json_response(&json!({ "tasks": page }))
}

/// `/master/roles`.
pub async fn roles(Lead(l): Lead) -> Response {
    json_response(&json!({ "roles": roles_json(&l, true) }))
}

/// `/master/flags`.
pub async fn master_flags(Lead(l): Lead) -> Response {
    json_response(&json!({ "flags": flags(&l) }))
}

fn quota_config(role: &str, q: &wasmos_state::roles::Quota) -> Value {
    let amounts = |m: &BTreeMap<String, f64>| -> Value {
        m.iter()
            .map(|(k, v)| (k.clone(), json!({ "value": v })))
            .collect::<serde_json::Map<String, Value>>()
            .into()
    };
    json!({"role": role, "guarantees": amounts(&q.guarantees), "limits": amounts(&q.limits)})
}

fn roles_json(l: &Leader, legacy: bool) -> Vec<Value> {
    l.store
        .read(crate::roles::role_views)
        .into_iter()
        .map(|r| {
            let mut v = if legacy {
                json!({"name": r.name, "weight": r.weight,
                    "frameworks": r.frameworks, "resources": legacy_resources(&r.allocated)})
            } else {
                json!({"name": r.name, "weight": r.weight,
                    "frameworks": r.frameworks.iter().map(id).collect::<Vec<_>>(),
                    "resources": resources_json(&r.allocated),
                    "allocated": resources_json(&r.allocated)})
            };
            if !r.quota.is_empty() {
                let mut q = quota_config(&r.name, &r.quota);
                q["consumed"] = if legacy {
                    legacy_resources(&r.allocated)
                } else {
                    json!(resources_json(&r.allocated))
                };
                v["quota"] = q;
            }
            v
        })
        .collect()
}

/// Mesos' metric names, from the state and the leader's memory.
fn metrics(l: &Leader, snap: &Snap) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    m.insert("master/elected".into(), 1.0);
    m.insert("master/uptime_secs".into(), now_secs() - l.elected_at);
    let active = |a: &&AgentSnap| a.rec.state == AgentState::Active;
    m.insert(
        "master/slaves_active".into(),
        snap.agents.iter().filter(active).count() as f64,
    );
    m.insert(
        "master/slaves_connected".into(),
        snap.agents.iter().filter(|a| a.connected).count() as f64,
    );
    m.insert(
        "master/slaves_disconnected".into(),
        snap.agents.iter().filter(|a| !a.connected).count() as f64,
    );
    m.insert("master/slaves_inactive".into(), 0.0);
    m.insert(
        "master/slaves_unreachable".into(),
        snap.agents
            .iter()
            .filter(|a| a.rec.state == AgentState::Unreachable)
            .count() as f64,
    );
    let live: Vec<&FrameworkSnap> = snap
        .frameworks
        .iter()
        .filter(|f| f.rec.removed_at.is_none())
        .collect();
    m.insert(
        "master/frameworks_active".into(),
        live.iter().filter(|f| f.active).count() as f64,
    );
    m.insert(
        "master/frameworks_connected".into(),
        live.iter().filter(|f| f.active).count() as f64,
    );
    m.insert(
        "master/frameworks_disconnected".into(),
        live.iter().filter(|f| !f.active).count() as f64,
    );
    m.insert(
        "master/frameworks_inactive".into(),
        live.iter().filter(|f| !f.active).count() as f64,
    );
    for state in [
        TaskState::Staging,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Killing,
        TaskState::Finished,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Lost,
        TaskState::Error,
        TaskState::Unreachable,
        TaskState::Dropped,
        TaskState::Gone,
    ] {
        let n = snap
            .frameworks
            .iter()
            .flat_map(|f| f.tasks.iter().chain(&f.completed))
            .filter(|t| t.state() == state)
            .count();
        let name = state.as_str().trim_start_matches("TASK_").to_lowercase();
        m.insert(format!("master/tasks_{name}"), n as f64);
    }
    let total = snap
        .agents
        .iter()
        .filter(active)
        .fold(Resources::default(), |acc, a| {
            acc.add(&a.rec.info.resources)
        });
    let used = snap
        .agents
        .iter()
        .filter(active)
        .fold(Resources::default(), |acc, a| acc.add(&a.used));
    for (name, t, u) in [
        ("cpus", total.cpus.as_f64(), used.cpus.as_f64()),
        ("mem", total.mem.as_f64(), used.mem.as_f64()),
        ("disk", total.disk.as_f64(), used.disk.as_f64()),
        ("gpus", f64::from(total.gpus), f64::from(used.gpus)),
    ] {
        m.insert(format!("master/{name}_total"), t);
        m.insert(format!("master/{name}_used"), u);
        m.insert(
            format!("master/{name}_percent"),
            if t > 0.0 { u / t } else { 0.0 },
        );
    }
    m.insert(
        "master/outstanding_offers".into(),
        snap.frameworks
            .iter()
            .map(|f| f.offers.len())
            .sum::<usize>() as f64,
    );
    m
}

/// `/metrics/snapshot`: on a follower only `master/elected` (0), as in Mesos.
pub async fn metrics_snapshot(State(n): State<Arc<Node>>) -> Response {
    match n.leader() {
        Some(l) => {
            let snap = snapshot(&l);
            json_response(&json!(metrics(&l, &snap)))
        }
        None => json_response(&json!({"master/elected": 0.0})),
    }
}

pub(super) fn v1_task(t: &TaskRecord) -> Value {
    let mut v = json!({
        "name": t.spec.name,
        "task_id": id(&t.spec.task_id),
        "framework_id": id(&t.framework_id),
        "agent_id": id(&t.agent_id),
        "state": t.state().as_str(),
        "resources": v1::resource_list_json(&t.spec.resources, &t.spec.reserved, &Default::default(), &[], v1::ReservationFormat::Refinement),
        "statuses": t.statuses.iter().map(|s| v1::status_json(s, false)).collect::<Vec<_>>(),
    });
    if let Some(u) = &t.spec.command.user {
        v["user"] = json!(u);
    }
    if !t.spec.labels.is_empty() {
        v["labels"] = json!({"labels": labels(&t.spec.labels)});
    }
    if let Some(e) = &t.spec.executor {
        v["executor_id"] = json!({"value": e.executor_id.as_str()});
    }
    v
}

pub(super) fn v1_agent(a: &AgentSnap) -> Value {
    let (_, port) = host_port(&a.rec.info.endpoint);
    let attributes: Vec<Value> = a
        .rec
        .info
        .attributes
        .iter()
        .map(|(k, v)| json!({"name": k, "type": "TEXT", "text": {"value": v}}))
        .collect();
    let idle = a.rec.idle_pools();
    let volumes_disk = a
        .rec
        .volumes
        .values()
        .fold(Resources::default(), |acc, v| acc.add(&v.resources()));
    let total = v1::resource_list_json(
        &a.rec.info.resources.saturating_sub(&volumes_disk),
        &idle.reserved,
        &idle.static_reserved,
        &idle.volumes,
        v1::ReservationFormat::Refinement,
    );
    json!({
        "agent_info": {
            "hostname": a.rec.info.hostname,
            "id": id(&a.rec.id),
            "port": port,
            "resources": resources_json(&a.rec.info.resources),
            "attributes": attributes,
        },
        "active": a.rec.state == AgentState::Active && a.connected,
        "deactivated": a.rec.deactivated,
        "drain_info": drain_info(&a.rec),
        "version": a.rec.info.version,
        "pid": agent_pid(&a.rec),
        "registered_time": nanos(a.rec.registered_at),
        "total_resources": total,
        "allocated_resources": resources_json(&a.used),
        "offered_resources": resources_json(&a.offered),
        "capabilities": [],
    })
}

pub(super) fn v1_framework(f: &FrameworkSnap) -> Value {
    let i = &f.rec.info;
    let mut info = json!({
        "user": i.user,
        "name": i.name,
        "id": id(&f.rec.id),
        "failover_timeout": i.failover_timeout_secs,
        "checkpoint": true,
        "role": i.role,
        "capabilities": i.capabilities.iter().map(|c| json!({"type": c})).collect::<Vec<_>>(),
    });
    for (k, v) in [
        ("hostname", &i.hostname),
        ("webui_url", &i.webui_url),
        ("principal", &i.principal),
    ] {
        if let Some(v) = v {
            info[k] = json!(v);
        }
    }
    let mut v = json!({
        "framework_info": info,
        "active": f.active,
        "connected": f.active,
        "recovered": false,
        "registered_time": nanos(f.rec.registered_at),
        "allocated_resources": resources_json(&f.used),
        "offered_resources": resources_json(&f.offered),
        "offers": f.offers.iter().map(|o| v1::offer_json(o, v1::ReservationFormat::Refinement)).collect::<Vec<_>>(),
    });
    if let Some(r) = f.rec.removed_at {
        v["unregistered_time"] = nanos(r);
    }
    v
}

fn get_tasks(snap: &Snap) -> Value {
    let live: Vec<Value> = snap
        .frameworks
        .iter()
        .flat_map(|f| &f.tasks)
        .filter(|t| t.state() != TaskState::Unreachable)
        .map(v1_task)
        .collect();
    let unreachable: Vec<Value> = snap
        .frameworks
        .iter()
        .flat_map(|f| &f.tasks)
        .filter(|t| t.state() == TaskState::Unreachable)
        .map(v1_task)
        .collect();
    let completed: Vec<Value> = snap
        .frameworks
        .iter()
        .flat_map(|f| &f.completed)
        .map(v1_task)
        .collect();
    json!({"tasks": live, "unreachable_tasks": unreachable, "completed_tasks": completed})
}

/// The executors of a framework's live tasks, one per agent and
/// executor id.
fn executors_of(f: &FrameworkSnap) -> Vec<(&AgentId, &ExecutorSpec)> {
    let mut seen = BTreeMap::new();
    for t in &f.tasks {
        if let Some(e) = &t.spec.executor {
            seen.entry((&t.agent_id, &e.executor_id)).or_insert(e);
        }
    }
    seen.into_iter().map(|((a, _), e)| (a, e)).collect()
}

/// An ExecutorInfo as its framework gave it (Wasmos' own fields when it
/// is not kept).
fn executor_info(framework: &FrameworkId, e: &ExecutorSpec) -> Value {
    let mut v: Value = e
        .info
        .as_deref()
        .and_then(|i| serde_json::from_str(i).ok())
        .unwrap_or_else(|| json!({}));
    v["executor_id"] = json!({"value": e.executor_id.as_str()});
    v["framework_id"] = id(framework);
    v["type"] = json!(match e.kind {
        ExecutorKind::Default => "DEFAULT",
        ExecutorKind::Custom => "CUSTOM",
    });
    v
}

fn get_executors(snap: &Snap) -> Value {
    let executors: Vec<Value> = snap
        .frameworks
        .iter()
        .flat_map(|f| {
            executors_of(f).into_iter().map(
                |(a, e)| json!({"executor_info": executor_info(&f.rec.id, e), "agent_id": id(a)}),
            )
        })
        .collect();
    json!({ "executors": executors })
}

fn legacy_executors(f: &FrameworkSnap) -> Vec<Value> {
    executors_of(f)
        .into_iter()
        .map(|(a, e)| {
            let tasks: Vec<Value> = f
                .tasks
                .iter()
                .filter(|t| {
                    &t.agent_id == a
                        && t.spec.executor.as_ref().map(|x| &x.executor_id) == Some(&e.executor_id)
                })
                .map(legacy_task)
                .collect();
            let mut v = legacy_executor(&f.rec.id, a, e);
            v["tasks"] = json!(tasks);
            v
        })
        .collect()
}

/// One executor in the legacy endpoints' shape, without its tasks.
pub(super) fn legacy_executor(framework: &FrameworkId, agent: &AgentId, e: &ExecutorSpec) -> Value {
    let mut v = json!({
        "executor_id": e.executor_id,
        "name": e.name,
        "framework_id": framework,
        "slave_id": agent,
        "type": match e.kind { ExecutorKind::Default => "DEFAULT", ExecutorKind::Custom => "CUSTOM" },
        "resources": legacy_resources(&e.resources),
    });
    if let Some(c) = &e.command {
        v["command"] = json!({"value": c.value, "shell": c.shell, "argv": c.arguments});
    }
    v
}

/// GET_STATE's answer (and the operator stream's first event).
pub(super) fn get_state(snap: &Snap) -> Value {
    json!({
        "get_tasks": get_tasks(snap),
        "get_executors": get_executors(snap),
        "get_frameworks": get_frameworks(snap),
        "get_agents": get_agents(snap),
    })
}

fn get_agents(snap: &Snap) -> Value {
    json!({
        "agents": snap.agents.iter().filter(|a| a.rec.state != AgentState::Gone).map(v1_agent).collect::<Vec<_>>(),
        "recovered_agents": [],
    })
}

fn get_frameworks(snap: &Snap) -> Value {
    let (live, done): (Vec<&FrameworkSnap>, Vec<&FrameworkSnap>) = snap
        .frameworks
        .iter()
        .partition(|f| f.rec.removed_at.is_none());
    json!({
        "frameworks": live.into_iter().map(v1_framework).collect::<Vec<_>>(),
        "completed_frameworks": done.into_iter().map(v1_framework).collect::<Vec<_>>(),
    })
}

/// `POST /api/v1` (also `/api/v1/operator`, as pymesos posts, and
/// `/master/api/v1`).
pub async fn endpoint(
    Lead(l): Lead,
    principal: Option<Extension<Principal>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let principal = principal.map_or_else(Principal::insecure, |Extension(p)| p);
    if let Some(refused) = super::refuse_content_type(&headers, false) {
        return refused;
    }
    let call: Value = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("Failed to parse body into JSON: {e}"),
            );
        }
    };
    let Some(kind) = call["type"].as_str() else {
        return fail(
            StatusCode::BAD_REQUEST,
            "Failed to validate master::Call: Expecting 'type' to be present",
        );
    };
    let answer = |key: &str, payload: Value| json_response(&json!({"type": kind, key: payload}));
    if !matches!(
        kind,
        "TEARDOWN"
            | "UPDATE_WEIGHTS"
            | "UPDATE_QUOTA"
            | "RESERVE_RESOURCES"
            | "UNRESERVE_RESOURCES"
            | "CREATE_VOLUMES"
            | "DESTROY_VOLUMES"
            | "MARK_AGENT_GONE"
            | "DRAIN_AGENT"
            | "DEACTIVATE_AGENT"
            | "REACTIVATE_AGENT"
            | "UPDATE_MAINTENANCE_SCHEDULE"
            | "START_MAINTENANCE"
            | "STOP_MAINTENANCE"
    ) && let Err(e) = principal.check(Area::Cluster, "", Access::Read)
    {
        return fail(StatusCode::FORBIDDEN, format!("{kind}: {e}"));
    }
    match kind {
        "GET_HEALTH" => answer("get_health", json!({"healthy": true})),
        "GET_VERSION" => answer(
            "get_version",
            json!({"version_info": {"version": MESOS_VERSION, "build_date": "", "build_time": 0, "build_user": ""}}),
        ),
        "GET_FLAGS" => {
            let flags: Vec<Value> = flags(&l)
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| json!({"name": k, "value": v}))
                .collect();
            answer("get_flags", json!({ "flags": flags }))
        }
        "GET_MASTER" => answer(
            "get_master",
            json!({"master_info": master_info(&l), "start_time": l.elected_at, "elected_time": l.elected_at}),
        ),
        "GET_METRICS" => {
            let snap = snapshot(&l);
            let list: Vec<Value> = metrics(&l, &snap)
                .into_iter()
                .map(|(name, value)| json!({"name": name, "value": value}))
                .collect();
            answer("get_metrics", json!({ "metrics": list }))
        }
        "GET_STATE" => answer("get_state", get_state(&snapshot(&l))),
        "SUBSCRIBE" => super::operator_stream::subscribe(&l),
        "GET_AGENTS" => answer("get_agents", get_agents(&snapshot(&l))),
        "GET_FRAMEWORKS" => answer("get_frameworks", get_frameworks(&snapshot(&l))),
        "GET_TASKS" => answer("get_tasks", get_tasks(&snapshot(&l))),
        "GET_EXECUTORS" => answer("get_executors", get_executors(&snapshot(&l))),
        "GET_ROLES" => answer("get_roles", json!({"roles": roles_json(&l, false)})),
        "GET_WEIGHTS" => {
            let infos: Vec<Value> = l.store.read(|s| {
                s.roles
                    .iter()
                    .filter(|(_, c)| c.weight != 1.0)
                    .map(|(r, c)| json!({"role": r, "weight": c.weight}))
                    .collect()
            });
            answer("get_weights", json!({ "weight_infos": infos }))
        }
        "GET_QUOTA" => {
            let configs: Vec<Value> = l.store.read(|s| {
                s.roles
                    .iter()
                    .filter(|(_, c)| !c.quota.is_empty())
                    .map(|(r, c)| quota_config(r, &c.quota))
                    .collect()
            });
            answer("get_quota", json!({"status": {"configs": configs}}))
        }
        "UPDATE_WEIGHTS" => {
            let mut weights = BTreeMap::new();
            for w in call["update_weights"]["weight_infos"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let (Some(role), Some(weight)) = (w["role"].as_str(), w["weight"].as_f64()) else {
                    return fail(
                        StatusCode::BAD_REQUEST,
                        "Failed to validate master::Call: every weight_info needs a role and a weight",
                    );
                };
                weights.insert(role.to_string(), weight);
            }
            for role in weights.keys() {
                if let Err(e) = principal.check(Area::Roles, role, Access::Write) {
                    return fail(StatusCode::FORBIDDEN, e.to_string());
                }
            }
            update_roles(&l, wasmos_state::Command::RoleWeightsSet { weights }).await
        }
        "UPDATE_QUOTA" => {
            let mut quotas = BTreeMap::new();
            for c in call["update_quota"]["quota_configs"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let Some(role) = c["role"].as_str() else {
                    return fail(
                        StatusCode::BAD_REQUEST,
                        "Failed to validate master::Call: every quota_config needs a role",
                    );
                };
                let amounts = |v: &Value| -> BTreeMap<String, f64> {
                    v.as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v["value"].as_f64().unwrap_or(f64::NAN)))
                        .collect()
                };
                quotas.insert(
                    role.to_string(),
                    wasmos_state::roles::Quota {
                        guarantees: amounts(&c["guarantees"]),
                        limits: amounts(&c["limits"]),
                    },
                );
            }
            for role in quotas.keys() {
                if let Err(e) = principal.check(Area::Roles, role, Access::Write) {
                    return fail(StatusCode::FORBIDDEN, e.to_string());
                }
            }
            update_roles(&l, wasmos_state::Command::RoleQuotasSet { quotas }).await
        }
        "TEARDOWN" => {
            let Some(fid) = call["teardown"]["framework_id"]["value"]
                .as_str()
                .and_then(|v| FrameworkId::new(v.to_string()).ok())
            else {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "Failed to validate master::Call: Expecting 'teardown.framework_id' to be present",
                );
            };
            let Some(f) = l.store.read(|s| s.frameworks.get(&fid).cloned()) else {
                return fail(
                    StatusCode::BAD_REQUEST,
                    format!("No framework found with specified ID {fid}"),
                );
            };
            if let Err(e) = principal.check(Area::Frameworks, &f.info.name, Access::Write) {
                return fail(StatusCode::FORBIDDEN, e.to_string());
            }
            if f.info.kind != FrameworkKind::External {
                return fail(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "framework {fid} is a plugin of this cluster: remove the plugin instead (`wasmos plugin remove`)"
                    ),
                );
            }
            if f.removed_at.is_some() {
                return StatusCode::OK.into_response();
            }
            teardown(&l, &fid, "an operator tore it down").await;
            StatusCode::OK.into_response()
        }
        "RESERVE_RESOURCES" | "UNRESERVE_RESOURCES" | "CREATE_VOLUMES" | "DESTROY_VOLUMES" => {
            match resource_call(&principal, kind, &call) {
                Ok((agent, cmds)) => change_agent(&l, &agent, cmds).await,
                Err((code, why)) => fail(code, why),
            }
        }
        "MARK_AGENT_GONE" => {
            let Some(agent) = call["mark_agent_gone"]["agent_id"]["value"]
                .as_str()
                .and_then(|a| AgentId::new(a.to_string()).ok())
            else {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "Failed to validate master::Call: Expecting 'mark_agent_gone.agent_id' to be present",
                );
            };
            if let Err(e) = principal.check(Area::Cluster, "", Access::Write) {
                return fail(StatusCode::FORBIDDEN, format!("{kind}: {e}"));
            }
            match l.mark_gone(&agent).await {
                Ok(()) => StatusCode::OK.into_response(),
                Err(e) => crate::error::ApiError::from(e).into_response(),
            }
        }
        "DRAIN_AGENT" | "DEACTIVATE_AGENT" | "REACTIVATE_AGENT" => {
            let key = kind.to_ascii_lowercase();
            let Some(agent) = call[&key]["agent_id"]["value"]
                .as_str()
                .and_then(|a| AgentId::new(a.to_string()).ok())
            else {
                return fail(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "Failed to validate master::Call: Expecting '{key}.agent_id' to be present"
                    ),
                );
            };
            if let Err(e) = principal.check(Area::Cluster, "", Access::Write) {
                return fail(StatusCode::FORBIDDEN, format!("{kind}: {e}"));
            }
            let done = match kind {
                "DRAIN_AGENT" => {
                    let grace = match &call[&key]["max_grace_period"] {
                        Value::Null => None,
                        g => match g["nanoseconds"].as_i64() {
                            Some(ns) if ns >= 0 => Some(ns as f64 / 1e9),
                            _ => {
                                return fail(
                                    StatusCode::BAD_REQUEST,
                                    "Failed to validate master::Call: 'drain_agent.max_grace_period' must hold non-negative 'nanoseconds'",
                                );
                            }
                        },
                    };
                    let mark_gone = call[&key]["mark_gone"].as_bool().unwrap_or(false);
                    l.drain_agent(&agent, grace, mark_gone, false).await
                }
                "DEACTIVATE_AGENT" => l.set_agent_active(&agent, false).await,
                _ => l.set_agent_active(&agent, true).await,
            };
            match done {
                Ok(()) => StatusCode::OK.into_response(),
                Err(e) => crate::error::ApiError::from(e).into_response(),
            }
        }
        "GET_MAINTENANCE_SCHEDULE" => answer(
            "get_maintenance_schedule",
            json!({"schedule": l.store.read(|s| schedule_json(&s.maintenance))}),
        ),
        "GET_MAINTENANCE_STATUS" => answer(
            "get_maintenance_status",
            json!({"status": maintenance_status(&l)}),
        ),
        "UPDATE_MAINTENANCE_SCHEDULE" | "START_MAINTENANCE" | "STOP_MAINTENANCE" => {
            if let Err(e) = principal.check(Area::Cluster, "", Access::Write) {
                return fail(StatusCode::FORBIDDEN, format!("{kind}: {e}"));
            }
            let key = kind.to_ascii_lowercase();
            let done = if kind == "UPDATE_MAINTENANCE_SCHEDULE" {
                match parse_schedule(&call[&key]["schedule"]) {
                    Ok(windows) => l.update_maintenance(windows).await,
                    Err(why) => {
                        return fail(
                            StatusCode::BAD_REQUEST,
                            format!("Failed to validate master::Call: {why}"),
                        );
                    }
                }
            } else {
                match parse_machines(&call[&key]["machines"]) {
                    Ok(m) if kind == "START_MAINTENANCE" => l.start_maintenance(m).await,
                    Ok(m) => l.stop_maintenance(m).await,
                    Err(why) => {
                        return fail(
                            StatusCode::BAD_REQUEST,
                            format!("Failed to validate master::Call: {key}.machines: {why}"),
                        );
                    }
                }
            };
            match done {
                Ok(()) => StatusCode::OK.into_response(),
                Err(e) => crate::error::ApiError::from(e).into_response(),
            }
        }
        "SET_QUOTA" | "REMOVE_QUOTA" | "GROW_VOLUME" | "SHRINK_VOLUME" | "GET_OPERATIONS"
        | "GET_LOGGING_LEVEL" | "SET_LOGGING_LEVEL" | "LIST_FILES" | "READ_FILE" => fail(
            StatusCode::NOT_IMPLEMENTED,
            format!("{kind} is not supported by this cluster yet"),
        ),
        other => fail(
            StatusCode::BAD_REQUEST,
            format!("Failed to convert JSON into Call protobuf: unknown call type {other:?}"),
        ),
    }
}

/// The commands of a RESERVE_RESOURCES, UNRESERVE_RESOURCES,
/// CREATE_VOLUMES or DESTROY_VOLUMES call (one per role), and its agent;
/// or the status and why it is refused. Each role needs `roles` write permission.
fn resource_call(
    principal: &Principal,
    kind: &str,
    call: &Value,
) -> Result<(AgentId, Vec<wasmos_state::Command>), (StatusCode, String)> {
    let key = kind.to_lowercase();
    let body = &call[key.as_str()];
    let bad = |why: String| (StatusCode::BAD_REQUEST, format!("{kind}: {why}"));
    let agent = body["agent_id"]["value"]
        .as_str()
        .ok_or_else(|| bad(format!("Expecting '{key}.agent_id' to be present")))
        .and_then(|a| AgentId::new(a.to_string()).map_err(|e| bad(e.to_string())))?;
    let field = if kind.ends_with("_VOLUMES") {
        "volumes"
    } else {
        "resources"
    };
    let list: Vec<v1::Resource> = serde_json::from_value(body[field].clone())
        .map_err(|e| bad(format!("'{key}.{field}' is not a list of resources: {e}")))?;
    let roles: Vec<String>;
    let cmds = match kind {
        "RESERVE_RESOURCES" | "UNRESERVE_RESOURCES" => {
            if !body["source"].is_null() {
                return Err(bad(
                    "`source` (changing a reservation) is not supported; unreserve and reserve again"
                        .into(),
                ));
            }
            let parsed = v1::resource_list(&list).map_err(bad)?;
            if list.is_empty()
                || !parsed.volumes.is_empty()
                || wasmos_core::reservation::total(&parsed.reserved) != parsed.all
            {
                return Err(bad(
                    "every resource must carry the role it is reserved for (`reservations` or `role`), and volumes are made with CREATE_VOLUMES"
                        .into(),
                ));
            }
            roles = parsed.reserved.keys().cloned().collect();
            if roles.len() > 1 {
                return Err(bad(
                    "reserve or unreserve for one role per call (so that it is all or nothing)"
                        .into(),
                ));
            }
            parsed
                .reserved
                .into_iter()
                .map(|(role, resources)| {
                    if kind == "RESERVE_RESOURCES" {
                        wasmos_state::Command::ReserveResources {
                            agent_id: agent.clone(),
                            role,
                            resources,
                        }
                    } else {
                        wasmos_state::Command::UnreserveResources {
                            agent_id: agent.clone(),
                            role,
                            resources,
                        }
                    }
                })
                .collect()
        }
        _ => {
            let mut volumes = v1::volume_list(&list).map_err(bad)?;
            roles = volumes.iter().map(|v| v.role.clone()).collect();
            if kind == "CREATE_VOLUMES" {
                // The creator is who the caller authenticated as.
                for v in &mut volumes {
                    v.principal = Some(principal.name.clone());
                }
                crate::launch::new_volume_uuids(&mut volumes);
                vec![wasmos_state::Command::CreateVolumes {
                    agent_id: agent.clone(),
                    volumes,
                }]
            } else {
                vec![wasmos_state::Command::DestroyVolumes {
                    agent_id: agent.clone(),
                    volumes,
                }]
            }
        }
    };
    for role in &roles {
        if let Err(e) = principal.check(Area::Roles, role, Access::Write) {
            return Err((StatusCode::FORBIDDEN, format!("{kind}: {e}")));
        }
    }
    Ok((agent, cmds))
}

/// Commits an operator's reservation or volume change: 202 (as Mesos), 409
/// when the agent cannot take it (nothing changed), 404 for an unknown
/// agent.
async fn change_agent(
    l: &Arc<Leader>,
    agent: &AgentId,
    cmds: Vec<wasmos_state::Command>,
) -> Response {
    if l.store.read(|s| !s.agents.contains_key(agent)) {
        return fail(
            StatusCode::NOT_FOUND,
            format!("No agent found with specified ID {agent}"),
        );
    }
    match l.change_agent(agent, cmds).await {
        Ok(responses) => match responses
            .into_iter()
            .find(|r| !matches!(r, wasmos_state::Response::Ok))
        {
            None => StatusCode::ACCEPTED.into_response(),
            Some(wasmos_state::Response::Rejected { reason }) => fail(StatusCode::CONFLICT, reason),
            Some(other) => fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("unexpected {other:?}"),
            ),
        },
        Err(e) => fail(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Commits a change of roles' weights or quotas: 200, or 400 with why.
async fn update_roles(l: &Arc<Leader>, cmd: wasmos_state::Command) -> Response {
    match l.store.propose_one(cmd).await {
        Ok(wasmos_state::Response::Ok) => {
            l.alloc_wakeup.notify_one();
            StatusCode::OK.into_response()
        }
        Ok(wasmos_state::Response::Rejected { reason }) => fail(StatusCode::BAD_REQUEST, reason),
        Ok(other) => fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected {other:?}"),
        ),
        Err(e) => fail(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
