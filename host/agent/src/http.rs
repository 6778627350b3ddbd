//! The agent's HTTP API: launch, kill, executor shutdown and framework
//! messages for executors (from the leader, term-checked), sandbox files (a
//! custom executor's task: its executor's sandbox), and the agent's own
//! view of its tasks and executors.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, extract::rejection::JsonRejection};
use serde_json::json;
use wasmos_core::protocol::{self, ExecutorMessage, KillTask, LaunchTasks, ShutdownExecutor};
use wasmos_core::{AgentId, TaskId};
use wasmos_tls::{Identity, Peer};

use crate::Agent;
use crate::files::{self, FilesError};
use crate::tasks::KillError;

type Shared = State<Arc<Agent>>;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "message": message.into() }))).into_response()
}

pub(crate) fn router(agent: Arc<Agent>) -> Router {
    let guarded = Router::new()
        .route(protocol::paths::LAUNCH, post(launch))
        .route(protocol::paths::KILL, post(kill))
        .route(protocol::paths::SHUTDOWN_EXECUTOR, post(shutdown_executor))
        .route(protocol::paths::TO_EXECUTOR, post(to_executor))
        .route("/api/wasmos/v1/state", get(state))
        .route("/metrics", get(metrics))
        .route("/api/wasmos/v1/sandboxes/{task}/files/{op}", get(files_op))
        .route_layer(middleware::from_fn_with_state(
            agent.clone(),
            require_master,
        ));
    Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        .merge(guarded)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(16 << 20))
        .with_state(agent)
}

/// Everything but /health is for the leading master: the connection must
/// present a master certificate from the cluster CA (none needed under
/// --insecure).
async fn require_master(State(a): Shared, req: Request, next: Next) -> Response {
    if a.config.tls.is_some() {
        let identity = req
            .extensions()
            .get::<ConnectInfo<Peer>>()
            .and_then(|c| c.0.identity.clone());
        if !matches!(identity, Some(Identity::Master(_))) {
            return error(
                StatusCode::UNAUTHORIZED,
                "only the cluster's masters may call an agent: present a master certificate from the cluster CA",
            );
        }
    }
    next.run(req).await
}

fn stale(a: &Agent, term: u64) -> Option<Response> {
    (!a.check_term(term)).then(|| {
        error(
            StatusCode::CONFLICT,
            format!(
                "term {term} is older than term {} already seen; not the leader",
                a.term()
            ),
        )
    })
}

/// A master's command: its body, if it parses and comes from a current
/// term.
fn command<T>(
    a: &Agent,
    body: Result<Json<T>, JsonRejection>,
    term: impl Fn(&T) -> u64,
) -> Result<T, Box<Response>> {
    let Json(msg) = body.map_err(|r| Box::new(error(r.status(), r.body_text())))?;
    match stale(a, term(&msg)) {
        Some(r) => Err(Box::new(r)),
        None => Ok(msg),
    }
}

async fn launch(State(a): Shared, body: Result<Json<LaunchTasks>, JsonRejection>) -> Response {
    let msg = match command(&a, body, |m| m.term) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    if let Err((code, why)) = addressed_here(a.agent_id().as_ref(), msg.agent_id.as_ref()) {
        return error(code, why);
    }
    for t in &msg.tasks {
        if let Err(e) = t.validate() {
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
    }
    for mut t in msg.tasks {
        // A task that names no user runs as the unprivileged default,
        // never as the agent's own (root) nor as its Docker image's.
        if t.command.user.is_none() {
            t.command.user = Some(a.config.task_user.clone());
        }
        a.launch(msg.framework_id.clone(), t);
    }
    // Tasks for subscribed executors go now, a group as one LAUNCH_GROUP.
    a.hand_over_all();
    StatusCode::ACCEPTED.into_response()
}

/// Whether a launch for agent `want` may run on this agent, `me`: not on
/// another agent at the same address (the machine registered anew after a
/// reboot: 409, and the master ends what that agent had); not yet while
/// this agent registers (503: the master retries).
fn addressed_here(
    me: Option<&AgentId>,
    want: Option<&AgentId>,
) -> Result<(), (StatusCode, String)> {
    match (me, want) {
        (_, None) => Ok(()),
        (None, Some(want)) => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            format!("tasks for agent {want}: this agent is still registering"),
        )),
        (Some(me), Some(want)) if me != want => Err((
            StatusCode::CONFLICT,
            format!(
                "these tasks were given to agent {want}, and this is agent {me}: the machine registered anew (after a reboot), and the master ends what {want} had"
            ),
        )),
        _ => Ok(()),
    }
}

async fn kill(State(a): Shared, body: Result<Json<KillTask>, JsonRejection>) -> Response {
    let msg = match command(&a, body, |m| m.term) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let grace = msg
        .grace_period_ms
        .unwrap_or(wasmos_core::task::DEFAULT_KILL_GRACE_MS)
        .min(wasmos_core::task::MAX_KILL_GRACE_MS);
    match a.kill_reporting(&msg.task_id, grace, msg.killing) {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(KillError::Unknown) => error(
            StatusCode::NOT_FOUND,
            format!(
                "task {} is not on this agent; it will not be launched here",
                msg.task_id
            ),
        ),
    }
}

async fn shutdown_executor(
    State(a): Shared,
    body: Result<Json<ShutdownExecutor>, JsonRejection>,
) -> Response {
    let msg = match command(&a, body, |m| m.term) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    if a.shutdown_executor(&(msg.framework_id, msg.executor_id.clone()), true) {
        StatusCode::ACCEPTED.into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            format!("executor {} is not running on this agent", msg.executor_id),
        )
    }
}

async fn to_executor(
    State(a): Shared,
    body: Result<Json<ExecutorMessage>, JsonRejection>,
) -> Response {
    let msg = match command(&a, body, |m| m.term) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    if a.message_to_executor(&msg) {
        StatusCode::ACCEPTED.into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            format!(
                "executor {} is not subscribed on this agent",
                msg.executor_id
            ),
        )
    }
}

/// Prometheus' text format when the scraper asks for it, else Mesos'
/// agent metrics as JSON.
async fn metrics(State(a): Shared, headers: axum::http::HeaderMap) -> Response {
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match wasmos_core::protocol::prometheus_type(accept) {
        Some(content_type) => (
            [(axum::http::header::CONTENT_TYPE, content_type)],
            crate::metrics::render(&a),
        )
            .into_response(),
        None => Json(crate::metrics::snapshot_json(&a)).into_response(),
    }
}

async fn state(State(a): Shared) -> Response {
    let tasks: Vec<_> = a
        .lock_tasks()
        .iter()
        .map(|(id, t)| json!({ "id": id, "framework_id": t.framework_id, "state": t.state, "pid": t.pid }))
        .collect();
    Json(json!({
        "agent_id": a.agent_id(),
        "hostname": a.info.hostname,
        "resources": a.info.resources,
        "term": a.term(),
        "pending_updates": a.pending_updates(),
        "tasks": tasks,
        "executors": a.executors_report(),
        "plugins": a.plugins_report(),
    }))
    .into_response()
}

async fn files_op(
    State(a): Shared,
    Path((task, op)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let task: TaskId = match task.parse() {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("task id: {e}")),
    };
    // A task its custom executor runs lives in the executor's sandbox.
    let task = a.sandbox_of(&task);
    let num = |k: &str| -> Result<Option<u64>, String> {
        q.get(k)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("{k} must be a non-negative integer"))
            })
            .transpose()
    };
    let (offset, length) = match (num("offset"), num("length")) {
        (Ok(o), Ok(l)) => (o.unwrap_or(0), l),
        (Err(m), _) | (_, Err(m)) => return error(StatusCode::BAD_REQUEST, m),
    };
    let root = a.sandbox_root();
    let files_error = |e: FilesError| match e {
        FilesError::BadPath(m) => error(StatusCode::BAD_REQUEST, m),
        FilesError::NotFound(m) => error(StatusCode::NOT_FOUND, m),
        FilesError::Io(m) => error(StatusCode::INTERNAL_SERVER_ERROR, m),
    };
    match op.as_str() {
        "read" => {
            let Some(path) = q.get("path") else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "path is required, e.g. path=stdout",
                );
            };
            let file = match files::open(&root, &task, path) {
                Ok(f) => f,
                Err(e) => return files_error(e),
            };
            match tokio::task::spawn_blocking(move || files::read(&file, offset, length)).await {
                Ok(Ok((data, size))) => (
                    [
                        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                        (
                            header::HeaderName::from_static("x-wasmos-file-size"),
                            size.to_string(),
                        ),
                    ],
                    data,
                )
                    .into_response(),
                Ok(Err(e)) => files_error(e),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        "browse" => {
            let rel = q.get("path").map(String::as_str).unwrap_or(".");
            let dir = match files::open(&root, &task, rel) {
                Ok(f) => f,
                Err(e) => return files_error(e),
            };
            let rel = rel.to_string();
            match tokio::task::spawn_blocking(move || files::browse(&dir, &rel)).await {
                Ok(Ok(entries)) => Json(entries).into_response(),
                Ok(Err(e)) => files_error(e),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        other => error(
            StatusCode::NOT_FOUND,
            format!("no files/{other}; use files/read or files/browse"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_launch_runs_only_on_the_agent_it_was_given_to() {
        let id = |s: &str| AgentId::new(s).unwrap();
        let (me, old) = (id("c-S2"), id("c-S1"));
        assert!(addressed_here(Some(&me), Some(&me)).is_ok());
        assert!(
            addressed_here(Some(&me), None).is_ok(),
            "an older master names none"
        );
        let (code, why) = addressed_here(Some(&me), Some(&old)).unwrap_err();
        assert_eq!(code, StatusCode::CONFLICT);
        assert!(why.contains("c-S1") && why.contains("c-S2"), "{why}");
        let (code, _) = addressed_here(None, Some(&old)).unwrap_err();
        assert_eq!(
            code,
            StatusCode::SERVICE_UNAVAILABLE,
            "retried, not dropped"
        );
    }
}
