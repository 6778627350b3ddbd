//! Frameworks: the schedulers that decide what runs.

use serde::{Deserialize, Serialize};

/// Where a framework's scheduler runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FrameworkKind {
    /// A Wasm framework plugin inside the leading master.
    Plugin { plugin: String },
    /// A scheduler outside the cluster, over the Mesos v1 scheduler API.
    External,
}

/// What the master knows of a framework.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameworkInfo {
    pub name: String,
    pub kind: FrameworkKind,
    #[serde(default)]
    pub user: String,
    #[serde(default = "default_role")]
    pub role: String,
    #[serde(default)]
    pub principal: Option<String>,
    /// Told TASK_UNREACHABLE / TASK_GONE rather than TASK_LOST.
    #[serde(default)]
    pub partition_aware: bool,
    /// Seconds the master keeps the framework's tasks after it disconnects.
    #[serde(default)]
    pub failover_timeout_secs: f64,
    /// Where an external framework's scheduler runs, and its web UI
    /// (Mesos' `hostname` and `webui_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webui_url: Option<String>,
    /// Mesos capability names the framework declared (`PARTITION_AWARE`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
}

fn default_role() -> String {
    "*".into()
}

impl FrameworkInfo {
    /// A framework plugin named `name`, in `role`: partition aware, no user
    /// of its own, its tasks never kept for a failover.
    pub fn plugin(name: &str, role: &str) -> FrameworkInfo {
        FrameworkInfo {
            name: name.to_string(),
            kind: FrameworkKind::Plugin {
                plugin: name.to_string(),
            },
            user: String::new(),
            role: role.to_string(),
            principal: None,
            partition_aware: true,
            failover_timeout_secs: 0.0,
            hostname: None,
            webui_url: None,
            capabilities: Vec::new(),
        }
    }
}
