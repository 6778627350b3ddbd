//! The leader's live links to agents: who heartbeats, where to reach them,
//! and the HTTP client that sends them launches and kills.
//!
//! Liveness is leader memory, not replicated state: a new leader starts with
//! no links, and agents re-register (their heartbeats are answered with
//! "register again" until they do).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wasmos_core::protocol::PluginReport;
use wasmos_core::{AgentId, PortSet};

#[derive(Debug, Clone)]
struct Link {
    endpoint: String,
    last_seen: Instant,
    plugins: Vec<PluginReport>,
    /// Ports of its range something on its host is bound to.
    bound_ports: PortSet,
}

/// Agents registered with this leader and heartbeating.
#[derive(Debug, Default)]
pub struct AgentLinks {
    links: Mutex<HashMap<AgentId, Link>>,
    /// What the agents' plugins logged, as their heartbeats carried it.
    pub plugin_logs: wasmos_runtime::observe::Observed,
}

impl AgentLinks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, Link>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a (re-)registration.
    pub fn connect(&self, id: AgentId, endpoint: String, now: Instant, bound_ports: PortSet) {
        self.lock().insert(
            id,
            Link {
                endpoint,
                last_seen: now,
                plugins: Vec::new(),
                bound_ports,
            },
        );
    }

    /// Records a heartbeat; false when the agent must register first.
    pub fn heartbeat(
        &self,
        id: &AgentId,
        now: Instant,
        mut plugins: Vec<PluginReport>,
        bound_ports: PortSet,
    ) -> bool {
        match self.lock().get_mut(id) {
            Some(l) => {
                l.last_seen = now;
                l.bound_ports = bound_ports;
                for p in &mut plugins {
                    for line in std::mem::take(&mut p.logs) {
                        self.plugin_logs.log_from(
                            &p.name,
                            &line.level,
                            &line.message,
                            line.at_ms,
                            Some(id.as_str()),
                        );
                    }
                }
                l.plugins = plugins;
                true
            }
            None => false,
        }
    }

    /// A plugin's figures summed over the connected agents.
    pub fn plugin_stats(&self, name: &str) -> Option<wasmos_core::plugin::PluginStats> {
        let links = self.lock();
        let mut found = links
            .values()
            .filter_map(|l| l.plugins.iter().find(|p| p.name == name))
            .filter_map(|p| p.stats.as_ref())
            .peekable();
        found.peek()?;
        let mut total = wasmos_core::plugin::PluginStats::default();
        for s in found {
            total.merge(s);
        }
        Some(total)
    }

    /// A plugin's health across the connected agents: the worst, with the
    /// agent it comes from.
    pub fn plugin_health(&self, name: &str) -> Option<(String, Option<String>)> {
        let rank = |h: &str| match h {
            "failed" => 2,
            "degraded" => 1,
            _ => 0,
        };
        self.lock()
            .iter()
            .filter_map(|(id, l)| l.plugins.iter().find(|p| p.name == name).map(|p| (id, p)))
            .max_by_key(|(_, p)| rank(&p.health))
            .map(|(id, p)| {
                (
                    p.health.clone(),
                    p.last_error.as_ref().map(|e| format!("on agent {id}: {e}")),
                )
            })
    }

    pub fn is_connected(&self, id: &AgentId) -> bool {
        self.lock().contains_key(id)
    }

    pub fn connected(&self) -> HashSet<AgentId> {
        self.lock().keys().cloned().collect()
    }

    /// The ports each agent's host has bound, for agents with any.
    pub fn bound_ports(&self) -> HashMap<AgentId, PortSet> {
        self.lock()
            .iter()
            .filter(|(_, l)| !l.bound_ports.is_empty())
            .map(|(id, l)| (id.clone(), l.bound_ports.clone()))
            .collect()
    }

    pub fn endpoint(&self, id: &AgentId) -> Option<String> {
        self.lock().get(id).map(|l| l.endpoint.clone())
    }

    /// Drops links silent for longer than `timeout`; returns them.
    pub fn expire(&self, now: Instant, timeout: Duration) -> Vec<AgentId> {
        let mut links = self.lock();
        let gone: Vec<AgentId> = links
            .iter()
            .filter(|(_, l)| now.duration_since(l.last_seen) > timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            links.remove(id);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_agents_expire_and_must_register_again() {
        let links = AgentLinks::default();
        let id = AgentId::new("a1").unwrap();
        let t0 = Instant::now();
        assert!(
            !links.heartbeat(&id, t0, vec![], PortSet::default()),
            "unknown agents are told to register"
        );
        links.connect(id.clone(), "http://x".into(), t0, PortSet::default());
        assert!(links.heartbeat(&id, t0 + Duration::from_secs(5), vec![], PortSet::default()));
        assert!(
            links
                .expire(t0 + Duration::from_secs(10), Duration::from_secs(10))
                .is_empty()
        );
        assert_eq!(
            links.expire(t0 + Duration::from_secs(16), Duration::from_secs(10)),
            vec![id.clone()]
        );
        assert!(!links.is_connected(&id));
    }
}
