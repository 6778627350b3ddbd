//! Mesos' HTTP APIs, for frameworks and tools written against Mesos: the v1
//! scheduler API (external frameworks such as pymesos schedulers), the v1
//! operator API and the legacy JSON endpoints (`/master/state`, ...).

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::node::Node;

pub mod operator;
mod operator_stream;
pub mod proto;
pub mod scheduler;
pub mod state_json;
pub mod v1;

/// The Mesos routes, under both the bare and the `/master` prefix (as the
/// Mesos master serves them).
pub fn routes() -> Router<Arc<Node>> {
    let mut r = Router::new()
        .route("/api/v1/scheduler", post(scheduler::endpoint))
        .route("/master/api/v1/scheduler", post(scheduler::endpoint))
        .route("/api/v1", post(operator::endpoint))
        .route("/api/v1/operator", post(operator::endpoint))
        .route("/master/api/v1", post(operator::endpoint))
        .route("/metrics/snapshot", get(operator::metrics_snapshot))
        .route("/master/state-summary", get(operator::state_summary))
        .route("/master/frameworks", get(operator::frameworks))
        .route("/master/roles", get(operator::roles))
        .route("/master/flags", get(operator::master_flags));
    for p in [
        "/master/state",
        "/state",
        "/master/state.json",
        "/state.json",
    ] {
        r = r.route(p, get(operator::state));
    }
    for prefix in ["", "/master"] {
        r = r
            .route(
                &format!("{prefix}/maintenance/schedule"),
                get(operator::maintenance_schedule).post(operator::maintenance_schedule),
            )
            .route(
                &format!("{prefix}/maintenance/status"),
                get(operator::maintenance_status_legacy),
            )
            .route(
                &format!("{prefix}/machine/down"),
                post(operator::machine_down),
            )
            .route(&format!("{prefix}/machine/up"), post(operator::machine_up));
    }
    for p in ["/master/slaves", "/slaves"] {
        r = r.route(p, get(operator::slaves));
    }
    for p in ["/master/tasks", "/tasks"] {
        r = r.route(p, get(operator::tasks));
    }
    r
}

/// Whether a GET path is one of the legacy read-only endpoints (which need
/// `cluster:read`).
pub fn is_legacy_read(path: &str) -> bool {
    matches!(
        path.trim_end_matches('/'),
        "/master/state"
            | "/state"
            | "/master/state.json"
            | "/state.json"
            | "/master/state-summary"
            | "/master/frameworks"
            | "/master/slaves"
            | "/slaves"
            | "/master/tasks"
            | "/tasks"
            | "/master/roles"
            | "/master/flags"
            | "/metrics/snapshot"
            | "/maintenance/schedule"
            | "/master/maintenance/schedule"
            | "/maintenance/status"
            | "/master/maintenance/status"
    )
}

/// The answer to a call whose body is neither JSON nor (where
/// `protobuf`) protobuf, as Mesos gives it: 400 without a Content-Type, 415
/// with another one. `None`: go on.
pub fn refuse_content_type(headers: &HeaderMap, protobuf: bool) -> Option<Response> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let (status, message) = match ct {
        None => (
            StatusCode::BAD_REQUEST,
            "Expecting 'Content-Type' to be present".to_string(),
        ),
        Some(ct) if ct.starts_with("application/json") => return None,
        Some(ct) if protobuf && ct.starts_with("application/x-protobuf") => return None,
        Some(ct) if ct.starts_with("application/x-protobuf") => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/x-protobuf is not supported by this endpoint yet; send application/json"
                .to_string(),
        ),
        Some(ct) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Expecting 'Content-Type' of application/json or application/x-protobuf, got {ct}"
            ),
        ),
    };
    Some((status, message).into_response())
}

/// Whether a request's body is protobuf.
pub fn is_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-protobuf"))
}
