//! Errors: [`MasterError`], what the leader's operations (registering
//! agents, status updates, kills, marking agents gone) fail with, and
//! [`ApiError`], the one error type of the master's HTTP APIs, which the
//! former becomes at the edge.
//!
//! Every error answer is `{"message": "..."}` with a 4xx or 5xx status.
//! Details of 5xx errors are logged once here and never sent.

use axum::Json;
use axum::extract::FromRequest;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An API error, by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unauthorized(String),
    /// Known, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    Rejection { status: StatusCode, message: String },
    /// A dependency (an agent, a plugin) failed; the message is safe to show.
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    Unavailable(String),
    /// Not done, and safe to send again (to the leader): 503 with
    /// Retry-After, which clients take as "retry".
    #[error("{0}")]
    Retry(String),
    /// Something broke inside; logged, not shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Rejection { status, .. } => *status,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) | ApiError::Retry(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error answering a request");
                "internal error; see the master's log".to_string()
            }
            other => other.to_string(),
        };
        let mut resp = (status, Json(json!({ "message": message }))).into_response();
        if matches!(self, ApiError::Retry(_)) {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        resp
    }
}

/// Why an operation of the leader failed, by what went wrong (not by how
/// an API answers it).
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// The request itself is wrong; sending it again will not help.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// It contradicts what is recorded (an older term, a taken id).
    #[error("{0}")]
    Conflict(String),
    /// The agent it needs did not answer, or refused.
    #[error("{0}")]
    Agent(String),
    /// The agent it needs is not known to this leader yet.
    #[error("{0}")]
    AgentUnknown(String),
    /// Recording it failed.
    #[error(transparent)]
    Store(#[from] wasmos_store::StoreError),
    /// The state answered what it never answers to this command.
    #[error("unexpected answer from the state: {0}")]
    Unexpected(String),
}

impl From<MasterError> for ApiError {
    fn from(e: MasterError) -> Self {
        match e {
            MasterError::Invalid(m) => ApiError::BadRequest(m),
            MasterError::NotFound(m) => ApiError::NotFound(m),
            MasterError::Conflict(m) => ApiError::Conflict(m),
            MasterError::Agent(m) => ApiError::BadGateway(m),
            MasterError::AgentUnknown(m) => ApiError::Unavailable(m),
            MasterError::Store(s) => s.into(),
            MasterError::Unexpected(m) => ApiError::Internal(m),
        }
    }
}

impl From<wasmos_store::StoreError> for ApiError {
    fn from(e: wasmos_store::StoreError) -> Self {
        use wasmos_store::StoreError as E;
        match e {
            // Leadership moved: the caller retries (and finds the leader).
            // Nothing was appended: the caller may send it again.
            E::NotLeader { .. } | E::Unconfirmed(_) => ApiError::Retry(e.to_string()),
            // It may have been committed: the caller must check first.
            E::Indeterminate { .. } | E::NotCommitted(_) => ApiError::Unavailable(e.to_string()),
            E::Membership(m) => ApiError::Conflict(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::Rejection {
            status: r.status(),
            message: r.body_text(),
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(r: axum::extract::rejection::BytesRejection) -> Self {
        ApiError::Rejection {
            status: r.status(),
            message: r.body_text(),
        }
    }
}

/// `Json` whose rejections are [`ApiError`]s (so they share the body shape).
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// An error with its causes (`a: b: c`), each once: reqwest's own text
/// says only "error sending request", the reason (a refused certificate,
/// a reset) is in its sources.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
