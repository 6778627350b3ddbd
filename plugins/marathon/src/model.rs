//! What the framework keeps in its replicated key-value store: apps (with
//! their runtime target), instances (tasks), deployments, versions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::{App, VersionInfo};
use crate::deploy::Action;

pub const APP_PREFIX: &str = "app/";
pub const TASK_PREFIX: &str = "task/";
pub const DEP_PREFIX: &str = "dep/";
pub const VER_PREFIX: &str = "ver/";
pub const SEQ_KEY: &str = "seq";
pub const SLOT_PREFIX: &str = "slot/";

/// A resident instance's place (Marathon's reservation): the agent and
/// the persistent volumes its tasks run on, kept when a task ends so that
/// the next one finds the data, until the app is deleted or the task is
/// wiped.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Slot {
    pub id: String,
    pub app_id: String,
    pub agent_id: String,
    pub host: String,
    pub volumes: Vec<LocalVolume>,
    /// The task running on it, if any (a task no longer known has ended).
    #[serde(default)]
    pub task: Option<String>,
    /// A task of it has started: its volumes exist.
    #[serde(default)]
    pub confirmed: bool,
    /// Wiped: its volumes are destroyed once its task has ended.
    #[serde(default)]
    pub wiping: bool,
}

/// A persistent volume of a slot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LocalVolume {
    pub container_path: String,
    pub persistence_id: String,
    pub size_mb: f64,
}

/// The backoff of an app's launches after failures.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Delay {
    pub seconds: f64,
    /// No launch before this time.
    pub until_ms: u64,
}

/// An app as stored: its definition and what the controller maintains.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppRecord {
    /// The definition in Marathon's JSON form, version included.
    pub def: Value,
    /// Instances kept running now (a deployment step moves it to the
    /// definition's `instances`).
    pub target: u32,
    /// A rolling restart to the current config is in progress.
    #[serde(default)]
    pub restarting: bool,
    /// Being stopped: gone from the API, removed once no task is left.
    #[serde(default)]
    pub deleting: bool,
    #[serde(default)]
    pub delay: Option<Delay>,
    #[serde(default)]
    pub last_failure: Option<Value>,
}

/// An app loaded: the record and its parsed definition.
#[derive(Debug, Clone)]
pub struct AppState {
    pub rec: AppRecord,
    pub app: App,
}

impl AppState {
    pub fn load(rec: AppRecord) -> Result<AppState, String> {
        let id = rec.def["id"].as_str().unwrap_or("").to_string();
        let mut app = App::from_json(&id, &rec.def)
            .map_err(|e| format!("stored app {id} does not parse: {e:?}"))?;
        app.version = rec.def["version"].as_str().unwrap_or("").to_string();
        app.version_info =
            serde_json::from_value::<VersionInfo>(rec.def["versionInfo"].clone()).ok();
        Ok(AppState { rec, app })
    }

    /// The config version new instances are launched with.
    pub fn config_version(&self) -> String {
        self.app
            .version_info
            .as_ref()
            .map(|v| v.last_config_change_at.clone())
            .unwrap_or_else(|| self.app.version.clone())
    }
}

/// What an app checks before a task counts as up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    pub health: bool,
    pub ready: bool,
}

impl Checks {
    pub fn of(app: &App) -> Checks {
        Checks {
            health: !app.health_checks.is_empty(),
            ready: !app.readiness_checks.is_empty(),
        }
    }
}

/// One task of an app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Instance {
    pub id: String,
    pub app_id: String,
    /// The app version it was launched with.
    pub version: String,
    /// The config version (lastConfigChangeAt) it was launched with.
    pub config: String,
    pub state: String,
    pub agent_id: Option<String>,
    pub host: Option<String>,
    pub ports: Vec<u16>,
    pub staged_at: u64,
    pub started_at: Option<u64>,
    /// false once the instance is decommissioned (being killed for good).
    pub goal_running: bool,
    #[serde(default)]
    pub kill_sent: bool,
    /// When the kill was last sent (ms): sent again every
    /// [`KILL_RETRY_MS`](crate::KILL_RETRY_MS) until the task's end is
    /// reported (an agent cut off when it was sent never got it).
    #[serde(default)]
    pub kill_sent_at: Option<u64>,
    #[serde(default)]
    pub healthy: Option<bool>,
    /// The readiness check's last verdict.
    #[serde(default)]
    pub ready: Option<bool>,
    #[serde(default)]
    pub unreachable_since: Option<u64>,
    #[serde(default)]
    pub first_success: Option<u64>,
    #[serde(default)]
    pub last_success: Option<u64>,
    #[serde(default)]
    pub last_failure: Option<u64>,
    #[serde(default)]
    pub consecutive_failures: u32,
    #[serde(default)]
    pub message: Option<String>,
    /// The slot of a resident instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
}

impl Instance {
    pub fn is_terminal(&self) -> bool {
        wasmos_sdk::framework::is_terminal_name(&self.state)
    }

    /// Counted as one of the app's instances: wanted, not ended, and not
    /// unreachable for longer than the app tolerates.
    pub fn is_active(&self, inactive_after_ms: Option<u64>, now: u64) -> bool {
        if !self.goal_running || self.is_terminal() {
            return false;
        }
        match (self.unreachable_since, inactive_after_ms) {
            (Some(since), Some(after)) => now < since + after,
            _ => true,
        }
    }

    /// Healthy and ready: running, healthy when the app checks health,
    /// ready when it checks readiness.
    pub fn is_healthy(&self, checks: Checks) -> bool {
        self.state == "TASK_RUNNING"
            && (!checks.health || self.healthy == Some(true))
            && (!checks.ready || self.ready == Some(true))
    }

    /// `a_b.instance-<uuid>` of `a_b.instance-<uuid>._app.1`.
    pub fn instance_id(&self) -> &str {
        self.id.split("._app").next().unwrap_or(&self.id)
    }
}

/// A deployment: the steps taking some apps from `original` to `target`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub version: String,
    pub seq: u64,
    pub affected: Vec<String>,
    pub steps: Vec<Vec<Action>>,
    /// Index of the step in progress.
    pub current: usize,
    /// Whether the current step's actions were applied to the apps.
    pub step_started: bool,
    /// The apps' definitions before (null = absent), for a revert.
    pub original: BTreeMap<String, Value>,
    pub target: BTreeMap<String, Value>,
}
