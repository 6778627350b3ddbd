//! Mesos' HTTP APIs, for frameworks and tools written against Mesos: the v1
//! scheduler API (external frameworks such as pymesos schedulers).

use std::sync::Arc;

use axum::Router;
use axum::routing::post;

use crate::node::Node;

pub mod scheduler;
pub mod v1;

/// The Mesos routes, under both the bare and the `/master` prefix (as the
/// Mesos master serves them).
pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/v1/scheduler", post(scheduler::endpoint))
        .route("/master/api/v1/scheduler", post(scheduler::endpoint))
}
