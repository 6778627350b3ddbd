//! `/api/wasmos/v1/acl/...`, `/login`, `/logout`, `/whoami`: tokens, users
//! and policies (see `wasmos_state::acl`) and dashboard sessions.
//!
//! - `POST /acl/bootstrap`: the first management token, once (a cluster
//!   started with `--bootstrap-token-file`, as `wasmos up` does, is
//!   bootstrapped already);
//! - `GET /acl/tokens`, `POST /acl/tokens` `{"name", "policies",
//!   "management", "expires_in_secs"}` (the secret is in the answer, and
//!   nowhere else, ever), `DELETE /acl/tokens/<accessor>`;
//! - `GET /acl/policies[/<name>]`, `PUT /acl/policies/<name>` `{"rules":
//!   [{"area", "prefix", "access"}], "run_as": [...]}`, `DELETE`;
//! - `GET /acl/users[/<name>]`, `PUT /acl/users/<name>` `{"password",
//!   "policies"}`, `DELETE`;
//! - `POST /login` `{"user", "password"}` or `{"token"}`: a session token,
//!   also set as the `wasmos-session` cookie (HttpOnly, Secure,
//!   SameSite=Strict); `POST /logout` ends it, and so do revoking the token
//!   or removing or setting again the user it was made from; `GET /whoami`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use wasmos_state::acl::{Policy, Rule, TokenRecord, UserRecord, check_name};
use wasmos_state::{Command, Response as StateResponse};

use crate::auth::{self, Principal};
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::http::Lead;
use crate::node::Node;

pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route(v1!("/acl/bootstrap"), post(bootstrap))
        .route(v1!("/acl/tokens"), get(list_tokens).post(create_token))
        .route(
            v1!("/acl/tokens/{accessor}"),
            axum::routing::delete(revoke_token),
        )
        .route(v1!("/acl/token/self"), get(token_self))
        .route(v1!("/acl/policies"), get(list_policies))
        .route(
            v1!("/acl/policies/{name}"),
            get(get_policy).put(put_policy).delete(remove_policy),
        )
        .route(v1!("/acl/users"), get(list_users))
        .route(
            v1!("/acl/users/{name}"),
            get(get_user).put(put_user).delete(remove_user),
        )
        .route(v1!("/login"), post(login))
        .route(v1!("/logout"), post(logout))
        .route(v1!("/whoami"), get(whoami))
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

pub(crate) async fn propose(l: &crate::leader::Leader, cmd: Command) -> ApiResult<()> {
    match l.store.propose_one(cmd).await? {
        StateResponse::Ok => Ok(()),
        StateResponse::Rejected { reason } => Err(ApiError::BadRequest(reason)),
        other => Err(ApiError::Internal(format!("unexpected {other:?}"))),
    }
}

/// A token as listed: never its secret.
#[derive(Debug, Serialize)]
struct TokenView {
    accessor: String,
    name: String,
    management: bool,
    policies: Vec<String>,
    created_at: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<f64>,
    created_by: String,
    /// A login session (listed with `?sessions=true`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    session: bool,
    /// What a session was made from: `token:<accessor>` or `user:<name>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    session_of: Option<String>,
}

impl From<&TokenRecord> for TokenView {
    fn from(t: &TokenRecord) -> Self {
        TokenView {
            accessor: t.accessor.clone(),
            name: t.name.clone(),
            management: t.management,
            policies: t.policies.clone(),
            created_at: t.created_at,
            expires_at: t.expires_at,
            created_by: t.created_by.clone(),
            session: t.session,
            session_of: t.parent.clone(),
        }
    }
}

/// A new token's record and secret.
fn new_token(
    name: &str,
    management: bool,
    policies: Vec<String>,
    expires_in: Option<f64>,
    created_by: &str,
    session: bool,
) -> (TokenRecord, String) {
    let secret = auth::new_secret();
    let now = now_secs();
    (
        TokenRecord {
            accessor: uuid::Uuid::new_v4().to_string(),
            secret_hash: auth::hash_secret(&secret),
            name: name.to_string(),
            management,
            policies,
            created_at: now,
            expires_at: expires_in.map(|s| now + s),
            created_by: created_by.to_string(),
            session,
            parent: None,
        },
        secret,
    )
}

/// The first management token, made once (Nomad's `acl bootstrap`).
async fn bootstrap(Lead(l): Lead) -> ApiResult<(StatusCode, ApiJson<serde_json::Value>)> {
    if l.store.read(|s| s.acl.bootstrapped) {
        return Err(ApiError::Conflict(
            "the cluster's ACLs were bootstrapped already (wasmos up's management token, or an earlier bootstrap); use that token".into(),
        ));
    }
    let (token, secret) = new_token("bootstrap", true, Vec::new(), None, "bootstrap", false);
    let accessor = token.accessor.clone();
    propose(&l, Command::AclBootstrap { token }).await?;
    tracing::info!(%accessor, "the management token was made by an ACL bootstrap");
    Ok((
        StatusCode::CREATED,
        ApiJson(
            json!({ "accessor": accessor, "name": "bootstrap", "management": true, "secret": secret }),
        ),
    ))
}

/// The operator's tokens; with `?sessions=true`, the live login sessions
/// instead (revoked like tokens, by accessor).
async fn list_tokens(
    Lead(l): Lead,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> ApiResult<ApiJson<Vec<TokenView>>> {
    if let Some(k) = q.keys().find(|k| *k != "sessions") {
        return Err(ApiError::BadRequest(format!(
            "unknown query parameter {k:?} (known: sessions)"
        )));
    }
    let sessions = match q.get("sessions").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "sessions must be true or false, not {other:?}"
            )));
        }
    };
    let now = now_secs();
    Ok(ApiJson(l.store.read(|s| {
        s.acl
            .tokens
            .values()
            .filter(|t| t.session == sessions && !t.expired(now))
            .map(TokenView::from)
            .collect()
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    name: String,
    #[serde(default)]
    policies: Vec<String>,
    #[serde(default)]
    management: bool,
    #[serde(default)]
    expires_in_secs: Option<f64>,
}

async fn create_token(
    Lead(l): Lead,
    axum::Extension(p): axum::Extension<Principal>,
    ApiJson(req): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, ApiJson<serde_json::Value>)> {
    check_name("token", &req.name).map_err(ApiError::BadRequest)?;
    if let Some(e) = req.expires_in_secs
        && !(e.is_finite() && e > 0.0)
    {
        return Err(ApiError::BadRequest(
            "expires_in_secs: a positive number of seconds".into(),
        ));
    }
    if req.management && !p.grants.management {
        return Err(ApiError::Forbidden(
            "only a management token may make another management token".into(),
        ));
    }
    check_policies_exist(&l, &req.policies)?;
    let (token, secret) = new_token(
        &req.name,
        req.management,
        req.policies,
        req.expires_in_secs,
        &p.name,
        false,
    );
    let view = serde_json::to_value(TokenView::from(&token))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    propose(&l, Command::AclTokenCreate { token }).await?;
    let mut v = view;
    v["secret"] = json!(secret);
    Ok((StatusCode::CREATED, ApiJson(v)))
}

fn check_policies_exist(l: &crate::leader::Leader, names: &[String]) -> ApiResult<()> {
    let missing: Vec<String> = l.store.read(|s| {
        names
            .iter()
            .filter(|n| !s.acl.policies.contains_key(*n))
            .cloned()
            .collect()
    });
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "policies: no policy named {}; create it first (wasmos acl policy apply)",
            missing.join(", ")
        )))
    }
}

async fn revoke_token(Lead(l): Lead, Path(accessor): Path<String>) -> ApiResult<StatusCode> {
    propose(&l, Command::AclTokenRevoke { accessor })
        .await
        .map_err(not_found_if_missing)?;
    Ok(StatusCode::NO_CONTENT)
}

fn not_found_if_missing(e: ApiError) -> ApiError {
    match e {
        ApiError::BadRequest(m) if m.starts_with("no ") => ApiError::NotFound(m),
        other => other,
    }
}

fn describe(p: &Principal) -> serde_json::Value {
    json!({
        "principal": p.name,
        "management": p.grants.management,
        "rules": p.grants.rules,
        "run_as": p.grants.run_as,
    })
}

/// The caller's identity and rights (credentials required).
async fn token_self(axum::Extension(p): axum::Extension<Principal>) -> ApiJson<serde_json::Value> {
    ApiJson(describe(&p))
}

/// Who the caller is, or `{"principal": null}` without valid credentials
/// (the dashboard asks before showing its login form; never a 401).
async fn whoami(
    State(n): State<Arc<Node>>,
    headers: axum::http::HeaderMap,
    p: Option<axum::Extension<Principal>>,
) -> ApiJson<serde_json::Value> {
    let p = match p {
        Some(axum::Extension(p)) => Some(p),
        None => auth::authenticate_headers(&n, &headers).await,
    };
    ApiJson(p.map_or_else(|| json!({ "principal": null }), |p| describe(&p)))
}

async fn list_policies(Lead(l): Lead) -> ApiJson<Vec<Policy>> {
    ApiJson(l.store.read(|s| s.acl.policies.values().cloned().collect()))
}

async fn get_policy(Lead(l): Lead, Path(name): Path<String>) -> ApiResult<ApiJson<Policy>> {
    l.store
        .read(|s| s.acl.policies.get(&name).cloned())
        .map(ApiJson)
        .ok_or_else(|| ApiError::NotFound(format!("no policy named {name}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutPolicy {
    #[serde(default)]
    description: String,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    run_as: Vec<String>,
}

async fn put_policy(
    Lead(l): Lead,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<PutPolicy>,
) -> ApiResult<ApiJson<Policy>> {
    let policy = Policy {
        name,
        description: req.description,
        rules: req.rules,
        run_as: req.run_as,
    };
    policy.validate().map_err(ApiError::BadRequest)?;
    propose(
        &l,
        Command::AclPolicySet {
            policy: policy.clone(),
        },
    )
    .await?;
    Ok(ApiJson(policy))
}

async fn remove_policy(Lead(l): Lead, Path(name): Path<String>) -> ApiResult<StatusCode> {
    propose(&l, Command::AclPolicyRemove { name })
        .await
        .map_err(not_found_if_missing)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
struct UserView {
    name: String,
    policies: Vec<String>,
    created_at: f64,
}

impl From<&UserRecord> for UserView {
    fn from(u: &UserRecord) -> Self {
        UserView {
            name: u.name.clone(),
            policies: u.policies.clone(),
            created_at: u.created_at,
        }
    }
}

async fn list_users(Lead(l): Lead) -> ApiJson<Vec<UserView>> {
    ApiJson(
        l.store
            .read(|s| s.acl.users.values().map(UserView::from).collect()),
    )
}

async fn get_user(Lead(l): Lead, Path(name): Path<String>) -> ApiResult<ApiJson<UserView>> {
    l.store
        .read(|s| s.acl.users.get(&name).map(UserView::from))
        .map(ApiJson)
        .ok_or_else(|| ApiError::NotFound(format!("no user named {name}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutUser {
    password: String,
    #[serde(default)]
    policies: Vec<String>,
}

impl std::fmt::Debug for PutUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("PutUser")
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

async fn put_user(
    Lead(l): Lead,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<PutUser>,
) -> ApiResult<(StatusCode, ApiJson<UserView>)> {
    check_name("user", &name).map_err(ApiError::BadRequest)?;
    if req.password.chars().count() < 8 {
        return Err(ApiError::BadRequest(
            "password: at least 8 characters".into(),
        ));
    }
    check_policies_exist(&l, &req.policies)?;
    let password = req.password;
    let password_hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::Internal)?;
    let user = UserRecord {
        name,
        password_hash,
        policies: req.policies,
        created_at: now_secs(),
    };
    let view = UserView::from(&user);
    propose(&l, Command::AclUserSet { user }).await?;
    Ok((StatusCode::OK, ApiJson(view)))
}

async fn remove_user(Lead(l): Lead, Path(name): Path<String>) -> ApiResult<StatusCode> {
    propose(&l, Command::AclUserRemove { name })
        .await
        .map_err(not_found_if_missing)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

/// A session for a user's password or a token: a token of its own with
/// the same rights, for a limited time, also set as the session cookie.
async fn login(
    Lead(l): Lead,
    State(n): State<Arc<Node>>,
    ApiJson(req): ApiJson<Login>,
) -> ApiResult<Response> {
    let mut headers = axum::http::HeaderMap::new();
    let creds = match (&req.user, &req.password, &req.token) {
        (Some(u), Some(p), None) => {
            use base64::Engine as _;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        }
        (None, None, Some(t)) => format!("Bearer {t}"),
        _ => {
            return Err(ApiError::BadRequest(
                "give {\"user\", \"password\"} or {\"token\"}".into(),
            ));
        }
    };
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&creds)
            .map_err(|_| ApiError::BadRequest("credentials: not valid header text".into()))?,
    );
    let Some(p) = auth::authenticate_headers(&n, &headers).await else {
        return Err(ApiError::Unauthorized(
            "wrong user name, password or token".into(),
        ));
    };
    // The session has the rights of the principal that authenticated,
    // and never outlives its credentials.
    let lifetime = auth::SESSION_LIFETIME.as_secs_f64();
    let lifetime = match p.expires_at {
        Some(e) => (e - now_secs()).min(lifetime),
        None => lifetime,
    };
    if lifetime <= 0.0 {
        return Err(ApiError::Unauthorized("the token has expired".into()));
    }
    let (management, policies) = (p.management, p.policies.clone());
    // The session is named after the principal that logged in.
    let (mut token, secret) =
        new_token(&p.name, management, policies, Some(lifetime), &p.name, true);
    // It ends with the credentials it was made from.
    token.parent = p.source.clone();
    propose(&l, Command::AclTokenCreate { token }).await?;
    let cookie = format!(
        "{}={secret}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        auth::SESSION_COOKIE,
        lifetime as u64
    );
    let mut resp = ApiJson(json!({ "principal": p.name, "token": secret })).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

async fn logout(
    Lead(l): Lead,
    axum::Extension(p): axum::Extension<Principal>,
) -> ApiResult<Response> {
    if let Some(accessor) = p.session.clone() {
        propose(&l, Command::AclTokenRevoke { accessor }).await?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "wasmos-session=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0",
        ),
    );
    Ok(resp)
}
