//! Mesos' operator event stream: `POST /api/v1` `{"type": "SUBSCRIBE"}`.
//!
//! A RecordIO stream of JSON events: SUBSCRIBED (the whole state, as
//! GET_STATE answers it), then TASK_ADDED, TASK_UPDATED, AGENT_ADDED,
//! AGENT_REMOVED, FRAMEWORK_ADDED, FRAMEWORK_UPDATED and FRAMEWORK_REMOVED
//! as committed changes land, and HEARTBEAT every 15 s. It is fed from the
//! same committed changes as `/api/wasmos/v1/events`; a subscriber that
//! falls too far behind is disconnected and subscribes again.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use wasmos_core::{AgentId, FrameworkId, TaskState};

use super::operator::{get_state, snapshot, v1_agent, v1_framework, v1_task};
use super::scheduler::{HEARTBEAT, record};
use super::v1;
use crate::events::Event;
use crate::leader::Leader;
use crate::views::TaskView;

/// Events queued for one subscriber before it counts as gone.
const BUFFER: usize = 1024;

/// Starts a subscriber's stream.
pub fn subscribe(l: &Arc<Leader>) -> Response {
    // Subscribed before the snapshot: nothing between them is missed (an
    // event may repeat what the snapshot shows, as Mesos allows).
    let changes = l.events.subscribe();
    let snap = snapshot(l);
    let known: HashSet<FrameworkId> = snap.frameworks.iter().map(|f| f.rec.id.clone()).collect();
    let first = json!({"type": "SUBSCRIBED", "subscribed": {
        "get_state": get_state(&snap),
        "heartbeat_interval_seconds": HEARTBEAT.as_secs_f64(),
    }});
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFER);
    tokio::spawn(feed(l.clone(), changes, known, first, tx));
    let body =
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn feed(
    l: Arc<Leader>,
    mut changes: broadcast::Receiver<Event>,
    mut known: HashSet<FrameworkId>,
    first: Value,
    tx: mpsc::Sender<Bytes>,
) {
    if tx.send(record(&first, false)).await.is_err() {
        return;
    }
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    let mut shutdown = l.shutdown.clone();
    // A leader that stopped before this started sends no change again.
    if *shutdown.borrow_and_update() {
        return;
    }
    loop {
        let change = tokio::select! {
            c = changes.recv() => match c {
                Ok(c) => c,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::info!(missed = n, "an operator stream fell behind; closing it");
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = beat.tick() => {
                if tx.send(record(&json!({"type": "HEARTBEAT"}), false)).await.is_err() {
                    return;
                }
                continue;
            }
            _ = shutdown.changed() => return,
            _ = tx.closed() => return,
        };
        for event in mesos_events(&l, &change, &mut known) {
            if tx.send(record(&event, false)).await.is_err() {
                return;
            }
        }
    }
}

/// The Mesos operator events one committed change makes.
fn mesos_events(l: &Leader, change: &Event, known: &mut HashSet<FrameworkId>) -> Vec<Value> {
    let str_of = |k: &str| change.data[k].as_str().map(str::to_string);
    match change.kind {
        "task_updated" => {
            // What the change said, not what the task is now (it may have
            // moved on since).
            let Ok(view) = serde_json::from_value::<TaskView>(change.data.clone()) else {
                return Vec::new();
            };
            if view.state == TaskState::Staging && view.statuses.len() <= 1 {
                // Launched: the task as it was then.
                let Some(mut t) = l.store.read(|s| s.tasks.get(&view.id).cloned()) else {
                    return Vec::new();
                };
                t.statuses.truncate(1);
                t.pending.clear();
                vec![json!({"type": "TASK_ADDED", "task_added": {"task": v1_task(&t)}})]
            } else {
                vec![json!({"type": "TASK_UPDATED", "task_updated": {
                    "framework_id": v1::id(&view.framework_id),
                    "status": v1::status_json(&view.status, false),
                    "state": view.state.as_str(),
                }})]
            }
        }
        "agent_added" | "agent_reregistered" => {
            let Some(id) = str_of("id") else {
                return Vec::new();
            };
            snapshot(l)
                .agents
                .iter()
                .filter(|a| a.rec.id.as_str() == id)
                .map(|a| json!({"type": "AGENT_ADDED", "agent_added": {"agent": v1_agent(a)}}))
                .collect()
        }
        "agent_updated" => match (str_of("id"), str_of("state").as_deref()) {
            (Some(id), Some("unreachable" | "gone")) => match AgentId::new(id) {
                Ok(id) => vec![json!({"type": "AGENT_REMOVED",
                    "agent_removed": {"agent_id": v1::id(&id)}})],
                Err(_) => Vec::new(),
            },
            _ => Vec::new(),
        },
        "framework_added" | "framework_removed" => {
            let Some(id) = str_of("id").and_then(|i| FrameworkId::new(i).ok()) else {
                return Vec::new();
            };
            let snap = snapshot(l);
            let Some(f) = snap.frameworks.iter().find(|f| f.rec.id == id) else {
                return Vec::new();
            };
            let framework = v1_framework(f);
            if change.kind == "framework_removed" {
                known.remove(&id);
                vec![json!({"type": "FRAMEWORK_REMOVED",
                    "framework_removed": {"framework_info": framework["framework_info"]}})]
            } else if known.insert(id) {
                vec![
                    json!({"type": "FRAMEWORK_ADDED", "framework_added": {"framework": framework}}),
                ]
            } else {
                vec![
                    json!({"type": "FRAMEWORK_UPDATED", "framework_updated": {"framework": framework}}),
                ]
            }
        }
        _ => Vec::new(),
    }
}
