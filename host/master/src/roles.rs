//! `/api/wasmos/v1/roles`: roles, their weights and quotas, and what their
//! frameworks hold.
//!
//! - `GET /roles`: every role with a configuration or a framework (and `*`);
//! - `GET /roles/<role>`;
//! - `PUT /roles/<role>` `{"weight": 2, "quota": {"guarantees": {"cpus": 2},
//!   "limits": {"cpus": 4, "mem": 8192}}}`: changes what is given.
//!
//! Roles nest with `/` (`eng/batch`), so `<role>` may hold slashes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use wasmos_core::{FrameworkId, Resources};
use wasmos_state::roles::{Quota, RoleConfig, check_role, within};
use wasmos_state::{Command, State};

use crate::acl::propose;
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::http::Lead;
use crate::node::Node;

pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route(v1!("/roles"), get(list))
        .route(v1!("/roles/{*role}"), get(one).put(set))
}

/// A role as listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleView {
    pub name: String,
    pub weight: f64,
    pub quota: Quota,
    /// Frameworks whose role is this one or below it (live ones).
    pub frameworks: Vec<FrameworkId>,
    /// What those frameworks' live tasks hold.
    pub allocated: Resources,
    /// What is reserved for it on all agents (static and dynamic,
    /// persistent volumes included).
    #[serde(default)]
    pub reserved: Resources,
    /// Its persistent volumes.
    #[serde(default)]
    pub volumes: usize,
}

/// Every role the cluster knows: configured ones, those of live
/// frameworks (and their ancestors), and `*`.
pub fn role_views(s: &State) -> Vec<RoleView> {
    let mut names: BTreeSet<String> = s.roles.keys().cloned().collect();
    names.insert("*".into());
    for f in s.frameworks.values().filter(|f| f.removed_at.is_none()) {
        let mut path = String::new();
        for seg in f.info.role.split('/') {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(seg);
            names.insert(path.clone());
        }
    }
    let mut reserved: BTreeMap<String, Resources> = BTreeMap::new();
    let mut volumes: BTreeMap<String, usize> = BTreeMap::new();
    for a in s.agents.values() {
        for (role, r) in a.reserved() {
            names.insert(role.clone());
            let e = reserved.entry(role).or_default();
            *e = e.add(&r);
        }
        for v in a.volumes.values() {
            *volumes.entry(v.role.clone()).or_default() += 1;
        }
    }
    let used = s.used_by_framework();
    names
        .into_iter()
        .map(|name| {
            let c = s.roles.get(&name).cloned().unwrap_or_default();
            let frameworks: Vec<FrameworkId> = s
                .frameworks
                .values()
                .filter(|f| f.removed_at.is_none() && within(&f.info.role, &name))
                .map(|f| f.id.clone())
                .collect();
            let allocated = frameworks
                .iter()
                .filter_map(|f| used.get(f))
                .fold(Resources::default(), |acc, r| acc.add(r));
            RoleView {
                reserved: reserved.get(&name).cloned().unwrap_or_default(),
                volumes: volumes.get(&name).copied().unwrap_or(0),
                name,
                weight: c.weight,
                quota: c.quota,
                frameworks,
                allocated,
            }
        })
        .collect()
}

async fn list(Lead(l): Lead) -> ApiJson<Vec<RoleView>> {
    ApiJson(l.store.read(role_views))
}

async fn one(Lead(l): Lead, Path(role): Path<String>) -> ApiResult<ApiJson<RoleView>> {
    check_role(&role).map_err(ApiError::BadRequest)?;
    l.store
        .read(|s| role_views(s).into_iter().find(|r| r.name == role))
        .map(ApiJson)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no role {role} (it has no configuration and no framework)"
            ))
        })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetRole {
    weight: Option<f64>,
    quota: Option<Quota>,
}

async fn set(
    Lead(l): Lead,
    Path(role): Path<String>,
    ApiJson(req): ApiJson<SetRole>,
) -> ApiResult<ApiJson<RoleView>> {
    check_role(&role).map_err(ApiError::BadRequest)?;
    if req.weight.is_none() && req.quota.is_none() {
        return Err(ApiError::BadRequest(
            "give a weight, a quota, or both".into(),
        ));
    }
    if let Some(w) = req.weight {
        propose(
            &l,
            Command::RoleWeightsSet {
                weights: BTreeMap::from([(role.clone(), w)]),
            },
        )
        .await?;
    }
    if let Some(q) = req.quota {
        propose(
            &l,
            Command::RoleQuotasSet {
                quotas: BTreeMap::from([(role.clone(), q)]),
            },
        )
        .await?;
    }
    l.alloc_wakeup.notify_one();
    let view = l.store.read(|s| {
        role_views(s)
            .into_iter()
            .find(|r| r.name == role)
            .unwrap_or(RoleView {
                name: role.clone(),
                weight: RoleConfig::default().weight,
                quota: Quota::default(),
                frameworks: Vec::new(),
                allocated: Resources::default(),
                reserved: Resources::default(),
                volumes: 0,
            })
    });
    Ok(ApiJson(view))
}
