//! Offers: free resources on one agent, held by one framework.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, FrameworkId, OfferId};
use crate::resources::Resources;

/// Resources on one agent offered to one framework.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub id: OfferId,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub hostname: String,
    /// Everything offered, reserved parts included (volumes excluded).
    pub resources: Resources,
    /// The part of `resources` reserved, by role.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reserved: crate::reservation::RoleResources,
    /// The part of `reserved` that is static (the agent's `--resources`);
    /// the rest is dynamic and may be unreserved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub static_reserved: crate::reservation::RoleResources,
    /// Persistent volumes offered for use (none in use by a task).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::reservation::Volume>,
    pub attributes: BTreeMap<String, String>,
}
