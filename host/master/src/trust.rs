//! `/api/wasmos/v1/plugin-keys`: the public keys trusted to sign plugins.
//!
//! - `GET /plugin-keys`, `GET /plugin-keys/<name>`;
//! - `POST /plugin-keys` `{"name", "public_key"}` (PEM, as cosign.pub);
//! - `DELETE /plugin-keys/<name>`.
//!
//! They are in the ACL area: whoever may change them decides what code the
//! cluster runs, so a token that may install plugins may not trust a key.

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
use wasmos_state::Command;
use wasmos_state::acl::{TrustedKey, check_name};

use crate::acl::propose;
use crate::auth::Principal;
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::http::Lead;
use crate::node::Node;

pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route(v1!("/plugin-keys"), get(list).post(add))
        .route(v1!("/plugin-keys/{name}"), get(one).delete(remove))
}

async fn list(Lead(l): Lead) -> ApiJson<Vec<TrustedKey>> {
    ApiJson(
        l.store
            .read(|s| s.acl.plugin_keys.values().cloned().collect()),
    )
}

async fn one(Lead(l): Lead, Path(name): Path<String>) -> ApiResult<ApiJson<TrustedKey>> {
    l.store
        .read(|s| s.acl.plugin_keys.get(&name).cloned())
        .map(ApiJson)
        .ok_or_else(|| ApiError::NotFound(format!("no trusted key named {name}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddKey {
    name: String,
    /// PEM SubjectPublicKeyInfo.
    public_key: String,
}

async fn add(
    Lead(l): Lead,
    axum::Extension(p): axum::Extension<Principal>,
    ApiJson(req): ApiJson<AddKey>,
) -> ApiResult<(StatusCode, ApiJson<TrustedKey>)> {
    check_name("key", &req.name).map_err(ApiError::BadRequest)?;
    let key = wasmos_oci::sign::PublicKey::from_pem(&req.public_key, "public_key")
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let record = TrustedKey {
        name: req.name,
        public_key: key.to_pem(),
        fingerprint: key.fingerprint(),
        added_at: crate::leader::now_secs(),
        added_by: p.name.clone(),
    };
    if let Some(k) = l
        .store
        .read(|s| s.acl.plugin_keys.get(&record.name).cloned())
    {
        return Err(ApiError::Conflict(format!(
            "a key named {} is trusted already ({}); remove it first (`wasmos plugin trust remove {}`)",
            k.name, k.fingerprint, k.name
        )));
    }
    propose(
        &l,
        Command::PluginKeySet {
            key: record.clone(),
            bootstrap: false,
        },
    )
    .await?;
    tracing::info!(key = %record.name, fingerprint = %record.fingerprint, by = %p.name, "trusting a plugin signing key");
    Ok((StatusCode::CREATED, ApiJson(record)))
}

async fn remove(
    Lead(l): Lead,
    axum::Extension(p): axum::Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    if !l.store.read(|s| s.acl.plugin_keys.contains_key(&name)) {
        return Err(ApiError::NotFound(format!("no trusted key named {name}")));
    }
    propose(&l, Command::PluginKeyRemove { name: name.clone() }).await?;
    tracing::info!(key = %name, by = %p.name, "no longer trusting a plugin signing key");
    Ok(StatusCode::NO_CONTENT)
}
