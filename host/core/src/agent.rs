//! Agents: worker machines and what they bring to the pool.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::resources::Resources;

/// What an agent tells the master about itself when it registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub hostname: String,
    /// The base URL at which the master reaches the agent's API.
    pub endpoint: String,
    /// Everything the agent offers to the cluster, reserved or not.
    pub resources: Resources,
    /// The part of `resources` statically reserved, by role (the agent's
    /// `--resources "cpus(ops):2"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reserved: crate::reservation::RoleResources,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The Linux boot id the agent runs under; a change means a reboot.
    #[serde(default)]
    pub boot_id: String,
    #[serde(default)]
    pub version: String,
}

/// Whether the master can reach an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    Active,
    Unreachable,
    Gone,
}

/// Parses `rack:r1;zone:a` into attributes.
pub fn parse_attributes(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once(':')
            .ok_or_else(|| format!("attribute `{part}` is not name:value"))?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            return Err(format!("attribute `{part}` has an empty name"));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn attributes_parse_from_mesos_text_form() {
        let a = super::parse_attributes("rack:r1; zone:a").unwrap();
        assert_eq!(a["rack"], "r1");
        assert_eq!(a["zone"], "a");
        assert!(super::parse_attributes("rack").is_err());
    }
}
