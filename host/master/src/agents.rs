//! The leader's live links to agents: who heartbeats, where to reach them,
//! and the HTTP client that sends them launches and kills.
//!
//! Liveness is leader memory, not replicated state: a new leader starts with
//! no links, and agents re-register (their heartbeats are answered with
//! "register again" until they do).

use std::collections::{HashMap, HashSet, VecDeque};
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

/// How fast agents that went silent are marked unreachable (Mesos'
/// `--agent_removal_rate_limit`): when many go silent at once — a switch
/// fails, a rack loses power, the leader's own network hiccups — their
/// tasks are not all given up in one moment; the rest wait their turn, and
/// any that comes back meanwhile is never marked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnreachableRate {
    Unlimited,
    /// At most `count` agents per `per`.
    Agents {
        count: u32,
        per: Duration,
    },
    /// At most `percent` % of the registered agents (never fewer than
    /// [`UnreachableRate::MIN_AGENTS`]) per `per`.
    Percent {
        percent: f64,
        per: Duration,
    },
}

impl UnreachableRate {
    /// A percentage never holds back fewer agents than this per window, so
    /// that small clusters are not slowed.
    pub const MIN_AGENTS: usize = 5;
    pub const DEFAULT: &str = "10%/1min";

    /// How many agents may be marked within one window of how long, for a
    /// cluster of `registered` agents; `None`: no limit.
    pub fn allowance(&self, registered: usize) -> Option<(usize, Duration)> {
        match *self {
            UnreachableRate::Unlimited => None,
            UnreachableRate::Agents { count, per } => Some((count as usize, per)),
            UnreachableRate::Percent { percent, per } => Some((
                ((registered as f64 * percent / 100.0).ceil() as usize).max(Self::MIN_AGENTS),
                per,
            )),
        }
    }
}

impl Default for UnreachableRate {
    fn default() -> UnreachableRate {
        UnreachableRate::DEFAULT
            .parse()
            .unwrap_or(UnreachableRate::Unlimited)
    }
}

impl std::str::FromStr for UnreachableRate {
    type Err = String;

    /// `N/DURATION` (Mesos' form, e.g. `1/10mins`), `P%/DURATION` (e.g.
    /// `10%/1min`) or `unlimited`.
    fn from_str(s: &str) -> Result<UnreachableRate, String> {
        let s = s.trim();
        if s == "unlimited" {
            return Ok(UnreachableRate::Unlimited);
        }
        let form = "write N/DURATION (e.g. 1/10mins), P%/DURATION (e.g. 10%/1min) or unlimited";
        let (n, per) = s.split_once('/').ok_or_else(|| format!("{s:?}: {form}"))?;
        let per = humantime::parse_duration(per.trim())
            .map_err(|e| format!("{s:?}: the duration {:?}: {e}; {form}", per.trim()))?;
        if per.is_zero() {
            return Err(format!("{s:?}: the duration must be above 0; {form}"));
        }
        match n.trim().strip_suffix('%') {
            Some(p) => match p.trim().parse::<f64>() {
                Ok(percent) if percent > 0.0 && percent <= 100.0 => {
                    Ok(UnreachableRate::Percent { percent, per })
                }
                _ => Err(format!(
                    "{s:?}: the percentage must be a number above 0 and at most 100"
                )),
            },
            None => match n.trim().parse::<u32>() {
                Ok(count) if count > 0 => Ok(UnreachableRate::Agents { count, per }),
                _ => Err(format!(
                    "{s:?}: the count must be a whole number of agents, at least 1 (or write unlimited)"
                )),
            },
        }
    }
}

impl std::fmt::Display for UnreachableRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnreachableRate::Unlimited => f.write_str("unlimited"),
            UnreachableRate::Agents { count, per } => {
                write!(f, "{count}/{}", humantime::format_duration(*per))
            }
            UnreachableRate::Percent { percent, per } => {
                write!(f, "{percent}%/{}", humantime::format_duration(*per))
            }
        }
    }
}

/// Agents silent past their timeout, waiting to be marked unreachable, in
/// the order they went silent, and when the marks of the current window
/// were made.
#[derive(Debug, Default)]
pub struct UnreachableQueue {
    waiting: VecDeque<AgentId>,
    queued: HashSet<AgentId>,
    marked: VecDeque<Instant>,
}

impl UnreachableQueue {
    /// Queues agents that went silent (once each).
    pub fn add(&mut self, ids: impl IntoIterator<Item = AgentId>) {
        for id in ids {
            if self.queued.insert(id.clone()) {
                self.waiting.push_back(id);
            }
        }
    }

    /// Agents waiting their turn.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The agents to mark unreachable now, oldest silence first: those
    /// `still_silent` says are, as many as `allowance` (how many per how
    /// long) leaves in the window ending `now`. Agents that came back
    /// leave the queue unmarked.
    pub fn due(
        &mut self,
        now: Instant,
        allowance: Option<(usize, Duration)>,
        still_silent: impl Fn(&AgentId) -> bool,
    ) -> Vec<AgentId> {
        let back: Vec<AgentId> = self
            .waiting
            .iter()
            .filter(|id| !still_silent(id))
            .cloned()
            .collect();
        for id in &back {
            self.queued.remove(id);
        }
        self.waiting.retain(|id| self.queued.contains(id));
        let Some((count, per)) = allowance else {
            self.queued.clear();
            self.marked.clear();
            return self.waiting.drain(..).collect();
        };
        while self
            .marked
            .front()
            .is_some_and(|t| now.duration_since(*t) >= per)
        {
            self.marked.pop_front();
        }
        let n = count
            .saturating_sub(self.marked.len())
            .min(self.waiting.len());
        let due: Vec<AgentId> = self.waiting.drain(..n).collect();
        for id in &due {
            self.queued.remove(id);
            self.marked.push_back(now);
        }
        due
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

    #[test]
    fn unreachable_rates_read_as_mesos_writes_them_or_as_a_share() {
        let min = Duration::from_secs(60);
        assert_eq!(
            "1/10mins".parse(),
            Ok(UnreachableRate::Agents {
                count: 1,
                per: 10 * min
            })
        );
        assert_eq!(
            "10%/1min".parse(),
            Ok(UnreachableRate::Percent {
                percent: 10.0,
                per: min
            })
        );
        assert_eq!("unlimited".parse(), Ok(UnreachableRate::Unlimited));
        assert_eq!(UnreachableRate::default().to_string(), "10%/1m");
        for bad in [
            "",
            "5",
            "0/1min",
            "x/1min",
            "1/soon",
            "1/0s",
            "0%/1min",
            "150%/1min",
        ] {
            let e = bad.parse::<UnreachableRate>().unwrap_err();
            assert!(e.contains(bad), "{bad:?}: {e}");
        }
        // A share of the cluster, never fewer than five agents.
        let rate: UnreachableRate = "10%/1min".parse().unwrap();
        assert_eq!(rate.allowance(10_000), Some((1000, min)));
        assert_eq!(rate.allowance(3), Some((5, min)));
        assert_eq!(UnreachableRate::Unlimited.allowance(3), None);
    }

    #[test]
    fn silent_agents_are_marked_at_the_rate_and_those_that_return_never_are() {
        let id = |i: usize| AgentId::new(format!("a{i}")).unwrap();
        let t0 = Instant::now();
        let per = Duration::from_secs(60);
        let mut q = UnreachableQueue::default();
        q.add((0..4).map(id));
        q.add([id(0)]);
        assert_eq!(q.len(), 4, "an agent is queued once");
        assert_eq!(q.due(t0, Some((2, per)), |_| true), vec![id(0), id(1)]);
        // The window is spent; a2 comes back meanwhile.
        let back = id(2);
        assert!(
            q.due(t0 + per / 2, Some((2, per)), |a| *a != back)
                .is_empty()
        );
        assert_eq!(q.len(), 1);
        assert_eq!(q.due(t0 + per, Some((2, per)), |_| true), vec![id(3)]);
        assert!(q.is_empty());
        q.add((4..7).map(id));
        assert_eq!(q.due(t0 + per, None, |_| true).len(), 3, "no limit");
    }
}
