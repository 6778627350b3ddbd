//! Isolator plugins around a launch: each installed isolator (in name
//! order) says what the container needs; the agent checks every request
//! against what it can and may enforce, and applies it. An isolator that
//! fails or refuses stops the launch (fail closed: isolators are policy).

use std::collections::BTreeMap;

use wasmos_core::{FrameworkId, TaskSpec};
use wasmos_runtime::isolator::{Adjustments, ContainerInfo};

use crate::Agent;
use crate::containerizer::{CgroupAsk, Rlimit, rlimit_resource};

/// What the isolators' adjustments come to, checked.
#[derive(Debug, Default)]
pub(crate) struct Isolation {
    pub env: BTreeMap<String, String>,
    pub rlimits: Vec<Rlimit>,
    pub cgroup: CgroupAsk,
}

/// Checks adjustments against what this agent enforces (`cgroups`: its
/// containerizer puts tasks in cgroups).
pub(crate) fn validate(a: Adjustments, cgroups: bool) -> Result<Isolation, String> {
    for (k, v) in &a.environment {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(format!(
                "isolators asked for an invalid environment variable {k:?}"
            ));
        }
    }
    let mut rlimits = Vec::new();
    for r in &a.rlimits {
        let resource = rlimit_resource(&r.name)
            .ok_or_else(|| format!("isolators asked for an unknown resource limit {:?}", r.name))?;
        if r.soft > r.hard {
            return Err(format!(
                "isolators asked for rlimit {} with soft {} above hard {}",
                r.name, r.soft, r.hard
            ));
        }
        rlimits.push(Rlimit {
            resource,
            soft: r.soft,
            hard: r.hard,
        });
    }
    let c = &a.cgroup;
    if !cgroups && (c.memory_mb.is_some() || c.cpu_shares.is_some() || c.pids_max.is_some()) {
        return Err("isolators asked for cgroup limits, which this agent's process containerizer cannot enforce (run the agent as root for the native one)".into());
    }
    // Zero reads as "no limit" to Docker and as "nothing" to cgroups:
    // neither is what an isolator could mean.
    if c.memory_mb == Some(0) || c.pids_max == Some(0) || c.cpu_shares == Some(0) {
        return Err("isolators asked for a cgroup limit of 0 (memory_mb, cpu_shares or pids_max); a limit must be at least 1".into());
    }
    let cgroup = CgroupAsk {
        memory_mb: c.memory_mb,
        cpu_shares: c.cpu_shares,
        pids_max: c.pids_max.map(|p| p.min(i64::MAX as u64) as i64),
    };
    if let Some(m) = a.mounts.first() {
        return Err(format!(
            "isolators asked to mount {} at {}, which this agent's process containerizer cannot do",
            m.source, m.target
        ));
    }
    Ok(Isolation {
        env: a.environment,
        rlimits,
        cgroup,
    })
}

impl Agent {
    /// Asks every isolator about the container; returns what to enforce.
    pub(crate) async fn isolate(
        &self,
        framework_id: &FrameworkId,
        spec: &TaskSpec,
        env: &[(String, String)],
    ) -> Result<Isolation, String> {
        let isolators = self.plugins.isolators();
        if isolators.is_empty() {
            return Ok(Isolation::default());
        }
        let info = ContainerInfo {
            container_id: spec.task_id.to_string(),
            task_id: spec.task_id.to_string(),
            framework_id: framework_id.to_string(),
            user: spec.command.user.clone(),
            resources: spec.resources.clone(),
            labels: spec.labels.clone(),
            environment: env.iter().cloned().collect(),
        };
        let merged = tokio::task::spawn_blocking(move || -> Result<Adjustments, String> {
            let mut all = Adjustments::default();
            for (name, iso) in isolators {
                let a = iso
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .prepare(&info)
                    .map_err(|e| match e {
                        wasmos_runtime::isolator::IsolatorError::Refused { .. } => e.to_string(),
                        other => format!("isolator {name} failed: {other}"),
                    })?;
                all.merge(a);
            }
            Ok(all)
        })
        .await
        .map_err(|e| format!("isolators could not run: {e}"))??;
        validate(merged, self.native.is_some())
    }

    /// Tells every isolator the container is gone.
    pub(crate) async fn cleanup_isolators(&self, container_id: &str) {
        let isolators = self.plugins.isolators();
        if isolators.is_empty() {
            return;
        }
        let id = container_id.to_string();
        let _ = tokio::task::spawn_blocking(move || {
            for (name, iso) in isolators {
                if let Err(e) = iso.lock().unwrap_or_else(|p| p.into_inner()).cleanup(&id) {
                    tracing::warn!(plugin = %name, container = %id, error = %e, "isolator cleanup failed");
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmos_runtime::isolator::{CgroupLimits, Mount, Rlimit as Asked};

    #[test]
    fn what_the_agent_cannot_enforce_is_refused_not_ignored() {
        let a = Adjustments {
            cgroup: CgroupLimits {
                pids_max: Some(10),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(validate(a.clone(), false).unwrap_err().contains("cgroup"));
        assert_eq!(validate(a, true).unwrap().cgroup.pids_max, Some(10));
        let a = Adjustments {
            mounts: vec![Mount {
                source: "/data".into(),
                target: "/data".into(),
                read_only: true,
            }],
            ..Default::default()
        };
        assert!(validate(a, true).unwrap_err().contains("mount"));
    }

    #[test]
    fn rlimits_and_environment_are_checked() {
        let ok = Adjustments {
            rlimits: vec![Asked {
                name: "nofile".into(),
                soft: 64,
                hard: 128,
            }],
            environment: [("A".to_string(), "b".to_string())].into(),
            ..Default::default()
        };
        let i = validate(ok, false).unwrap();
        assert_eq!(i.rlimits.len(), 1);
        let bad = Adjustments {
            rlimits: vec![Asked {
                name: "nofile".into(),
                soft: 2,
                hard: 1,
            }],
            ..Default::default()
        };
        assert!(validate(bad, false).is_err());
        let bad = Adjustments {
            environment: [("A=B".to_string(), "x".to_string())].into(),
            ..Default::default()
        };
        assert!(validate(bad, false).is_err());
    }
}
