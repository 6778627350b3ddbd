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
    pub resources: Resources,
    pub attributes: BTreeMap<String, String>,
}
