//! Roles: how the cluster's resources are shared between groups of
//! frameworks. A role's weight scales its fair share (dominant resource
//! fairness by weight, across roles and then within them; roles nest with
//! `/`, as Mesos' hierarchical roles do); its quota guarantees it resources
//! (held back from other roles until it has them) and limits what it may
//! hold.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wasmos_core::{Resources, Scalar};

/// The most roles with a configuration.
pub const MAX_ROLES: usize = 1000;

/// What the cluster says about one role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleConfig {
    #[serde(default = "one")]
    pub weight: f64,
    #[serde(default)]
    pub quota: Quota,
}

impl Default for RoleConfig {
    fn default() -> Self {
        RoleConfig {
            weight: 1.0,
            quota: Quota::default(),
        }
    }
}

fn one() -> f64 {
    1.0
}

/// A role's quota, as Mesos' `QuotaConfig`: amounts of `cpus`, `mem`
/// (MB), `disk` (MB) and `gpus` it is guaranteed, and at most what it may
/// hold of each named one (a resource not named in `limits` is not
/// limited).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quota {
    #[serde(default)]
    pub guarantees: BTreeMap<String, f64>,
    #[serde(default)]
    pub limits: BTreeMap<String, f64>,
}

const QUOTA_RESOURCES: [&str; 4] = ["cpus", "mem", "disk", "gpus"];

fn bundle(amounts: &BTreeMap<String, f64>) -> Resources {
    let s = |name: &str| {
        Scalar::from_f64("quota", amounts.get(name).copied().unwrap_or(0.0)).unwrap_or_default()
    };
    Resources {
        cpus: s("cpus"),
        mem: s("mem"),
        disk: s("disk"),
        gpus: amounts.get("gpus").map_or(0, |g| *g as u32),
        ports: Default::default(),
    }
}

impl Quota {
    pub fn is_empty(&self) -> bool {
        self.guarantees.is_empty() && self.limits.is_empty()
    }

    /// What the role is guaranteed.
    pub fn guarantee(&self) -> Resources {
        bundle(&self.guarantees)
    }

    /// `offer` cut so that the role, holding `held`, stays within its
    /// limits.
    pub fn cap(&self, offer: &Resources, held: &Resources) -> Resources {
        let room = |name: &str, have: Scalar, want: Scalar| match self.limits.get(name) {
            None => want,
            Some(l) => {
                let left = Scalar::from_f64("quota", *l)
                    .unwrap_or_default()
                    .saturating_sub(have);
                if left < want { left } else { want }
            }
        };
        Resources {
            cpus: room("cpus", held.cpus, offer.cpus),
            mem: room("mem", held.mem, offer.mem),
            disk: room("disk", held.disk, offer.disk),
            gpus: match self.limits.get("gpus") {
                None => offer.gpus,
                Some(l) => offer.gpus.min((*l as u32).saturating_sub(held.gpus)),
            },
            ports: offer.ports.clone(),
        }
    }

    pub fn check(&self, role: &str) -> Result<(), String> {
        for (kind, amounts) in [("guarantees", &self.guarantees), ("limits", &self.limits)] {
            for (name, v) in amounts {
                if !QUOTA_RESOURCES.contains(&name.as_str()) {
                    return Err(format!(
                        "role {role}: {kind} may name cpus, mem, disk and gpus, not {name:?}"
                    ));
                }
                if !v.is_finite() || *v < 0.0 || *v > 1e12 || (name == "gpus" && v.fract() != 0.0) {
                    return Err(format!(
                        "role {role}: {kind}.{name} must be a non-negative number (gpus whole), got {v}"
                    ));
                }
            }
        }
        for (name, g) in &self.guarantees {
            if let Some(l) = self.limits.get(name)
                && g > l
            {
                return Err(format!(
                    "role {role}: the guarantee of {name} ({g}) exceeds its limit ({l})"
                ));
            }
        }
        Ok(())
    }
}

pub use wasmos_core::reservation::{check_role, within};

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(g: &[(&str, f64)], l: &[(&str, f64)]) -> Quota {
        Quota {
            guarantees: g.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            limits: l.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn a_guarantee_above_its_limit_or_of_unknown_resources_is_refused() {
        assert!(
            quota(&[("cpus", 2.0)], &[("cpus", 1.0)])
                .check("a")
                .is_err()
        );
        assert!(quota(&[("fpgas", 1.0)], &[]).check("a").is_err());
        assert!(quota(&[("gpus", 0.5)], &[]).check("a").is_err());
        assert!(
            quota(&[("cpus", 1.0)], &[("cpus", 2.0), ("mem", 100.0)])
                .check("a")
                .is_ok()
        );
    }

    #[test]
    fn limits_cut_only_what_they_name() {
        let q = quota(&[], &[("cpus", 2.0)]);
        let offer: Resources = "cpus:4;mem:1000".parse().unwrap();
        let held: Resources = "cpus:1.5".parse().unwrap();
        assert_eq!(q.cap(&offer, &held).to_string(), "cpus:0.5;mem:1000;disk:0");
    }
}
