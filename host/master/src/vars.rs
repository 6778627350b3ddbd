//! `/api/wasmos/v1/vars`: cluster variables (see `wasmos_state::vars`).
//!
//! - `GET /vars?prefix=P`: paths and indexes of the variables under P;
//! - `GET /vars/<path>`: one variable with its items;
//! - `PUT /vars/<path>[?cas=N]` with `{"items": {...}}`: writes it;
//!   `cas=0` creates only, `cas=N` writes only if its modify index is N;
//! - `DELETE /vars/<path>[?cas=N]`.
//!
//! A write is acknowledged once it is committed on a majority of masters;
//! a read answers the latest committed state, confirmed by a majority (a
//! leader cut off from the others answers 503, never an old value).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use wasmos_state::{Command, Response};

use crate::error::{ApiError, ApiJson, ApiResult};
use crate::http::Lead;
use crate::node::Node;

/// A variable as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VarView {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<BTreeMap<String, String>>,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutVar {
    items: BTreeMap<String, String>,
}

pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route(v1!("/vars"), get(list))
        .route(v1!("/vars/{*path}"), get(read).put(write).delete(remove))
}

fn cas(q: &HashMap<String, String>) -> ApiResult<Option<u64>> {
    for k in q.keys() {
        if k != "cas" {
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter {k:?} (known: cas)"
            )));
        }
    }
    q.get("cas")
        .map(|c| {
            c.parse()
                .map_err(|_| ApiError::BadRequest(format!("cas must be an index, not {c:?}")))
        })
        .transpose()
}

async fn list(
    Lead(l): Lead,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<ApiJson<Vec<VarView>>> {
    if let Some(k) = q.keys().find(|k| *k != "prefix") {
        return Err(ApiError::BadRequest(format!(
            "unknown query parameter {k:?} (known: prefix)"
        )));
    }
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    Ok(ApiJson(l.store.read(|s| {
        s.vars
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, v)| VarView {
                path: p.clone(),
                items: None,
                create_index: v.create_index,
                modify_index: v.modify_index,
            })
            .collect()
    })))
}

async fn read(Lead(l): Lead, Path(path): Path<String>) -> ApiResult<ApiJson<VarView>> {
    l.store
        .read(|s| {
            s.vars.get(&path).map(|v| VarView {
                path: path.clone(),
                items: Some(v.items.clone()),
                create_index: v.create_index,
                modify_index: v.modify_index,
            })
        })
        .map(ApiJson)
        .ok_or_else(|| ApiError::NotFound(format!("no variable {path}")))
}

async fn write(
    Lead(l): Lead,
    Path(path): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    ApiJson(body): ApiJson<PutVar>,
) -> ApiResult<ApiJson<VarView>> {
    let cas = cas(&q)?;
    let r = l
        .store
        .propose_one(Command::VarSet {
            path: path.clone(),
            items: body.items.clone(),
            cas,
        })
        .await?;
    match r {
        Response::Var { modify_index } => {
            let create_index = l
                .store
                .read(|s| s.vars.get(&path).map(|v| v.create_index))
                .unwrap_or(modify_index);
            Ok(ApiJson(VarView {
                path,
                items: Some(body.items),
                create_index,
                modify_index,
            }))
        }
        other => Err(refusal(other)),
    }
}

async fn remove(
    Lead(l): Lead,
    Path(path): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let cas = cas(&q)?;
    match l
        .store
        .propose_one(Command::VarDelete { path, cas })
        .await?
    {
        Response::Var { .. } => Ok(StatusCode::NO_CONTENT),
        other => Err(refusal(other)),
    }
}

fn refusal(r: Response) -> ApiError {
    match r {
        Response::Rejected { reason } => ApiError::BadRequest(reason),
        Response::Conflict { reason } => ApiError::Conflict(reason),
        other => ApiError::Internal(format!("unexpected {other:?}")),
    }
}
