//! `/metrics` in Prometheus' text format (OpenMetrics, through the
//! `prometheus-client` crate), for scrapers that ask for it by their
//! `Accept` header; other clients (Marathon's and Chronos') keep getting
//! the JSON of the framework plugins' own `/metrics`.
//!
//! Every master answers for itself, leader or not: its raft view, and the
//! cluster's replicated state as it has applied it (agents, frameworks,
//! tasks by state, resources offered and held). The leader adds what only
//! it knows (outstanding offers, connected agents). Counters and
//! histograms accumulate in this master's process from its start:
//! allocation cycles and offers, launches and status updates committed
//! while it led, raft commit latency, plugin calls and failures.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use wasmos_core::{AgentState, FrameworkKind, Resources, TaskState};
use wasmos_state::{Command, Response};

use crate::node::Node;

pub use wasmos_core::protocol::prometheus_type;

type Labels = Vec<(String, String)>;

/// What a master counts while it leads. Clones share the same series.
#[derive(Debug, Clone)]
pub struct Instruments {
    /// Seconds per allocation cycle (rescinds, the allocator, sending).
    pub allocation_seconds: Histogram,
    /// Offers made to frameworks.
    pub offers: Counter,
    /// Tasks committed as launched or refused, by `outcome`.
    pub launches: Family<Labels, Counter>,
    /// Status updates applied, by the `state` they report.
    pub status_updates: Family<Labels, Counter>,
    /// Framework plugin calls whose effects went in one log entry.
    pub framework_group_calls: Histogram,
    /// Seconds per call into a framework plugin by its actor, by
    /// `framework` and `call` (offers, http, tick, status, ...).
    pub framework_call_seconds: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for Instruments {
    fn default() -> Self {
        Instruments {
            allocation_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 18)),
            offers: Counter::default(),
            launches: Family::default(),
            status_updates: Family::default(),
            framework_group_calls: Histogram::new(exponential_buckets(1.0, 2.0, 7)),
            framework_call_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.00005, 2.0, 18))
            }),
        }
    }
}

impl Instruments {
    /// Counts what a committed command did.
    pub fn count(&self, cmd: &Command, resp: &Response) {
        match (cmd, resp) {
            (Command::LaunchTasks { .. }, Response::TasksLaunched { accepted, rejected }) => {
                self.launches
                    .get_or_create(&labels(&[("outcome", "launched")]))
                    .inc_by(accepted.len() as u64);
                self.launches
                    .get_or_create(&labels(&[("outcome", "refused")]))
                    .inc_by(rejected.len() as u64);
            }
            (
                Command::StatusUpdate { status },
                Response::Status {
                    outcome: wasmos_state::StatusOutcome::Applied,
                },
            ) => {
                self.status_updates
                    .get_or_create(&labels(&[("state", status.state.as_str())]))
                    .inc();
            }
            _ => {}
        }
    }
}
type FloatGauge = Gauge<f64, AtomicU64>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let g = FloatGauge::default();
    g.set(value);
    registry.register(name, help, g);
}

fn family(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Labels, f64)>,
) {
    let f = Family::<Labels, FloatGauge>::default();
    for (l, v) in values {
        f.get_or_create(&l).set(v);
    }
    registry.register(name, help, f);
}

fn by_resource(r: &Resources, kind: &str) -> Vec<(Labels, f64)> {
    [
        ("cpus", r.cpus.as_f64()),
        ("mem", r.mem.as_f64()),
        ("disk", r.disk.as_f64()),
        ("gpus", f64::from(r.gpus)),
    ]
    .into_iter()
    .map(|(name, v)| (labels(&[("resource", name), ("kind", kind)]), v))
    .collect()
}

/// This master's metrics, encoded.
pub fn render(n: &Node) -> String {
    let mut reg = Registry::with_prefix("wasmos");
    let leadership = n.store.leadership().borrow().clone();
    gauge(
        &mut reg,
        "master_leader",
        "1 when this master leads the cluster",
        if leadership.is_me { 1.0 } else { 0.0 },
    );
    gauge(
        &mut reg,
        "raft_term",
        "The raft term this master is in",
        leadership.term as f64,
    );
    gauge(
        &mut reg,
        "raft_last_log_index",
        "The index of this master's last log entry",
        n.store.last_index() as f64,
    );
    let (agents, frameworks, tasks, total, used, plugins) = n.store.read(|s| {
        let mut agents = std::collections::BTreeMap::new();
        let mut total = Resources::default();
        for a in s.agents.values() {
            *agents.entry(agent_state_name(a.state)).or_insert(0.0) += 1.0;
            if a.state == AgentState::Active {
                total = total.add(&a.info.resources);
            }
        }
        let mut frameworks = std::collections::BTreeMap::new();
        for f in s.frameworks.values().filter(|f| f.removed_at.is_none()) {
            let kind = match f.info.kind {
                FrameworkKind::Plugin { .. } => "plugin",
                FrameworkKind::External => "external",
            };
            *frameworks.entry(kind).or_insert(0.0) += 1.0;
        }
        let mut tasks = std::collections::BTreeMap::new();
        for t in s.tasks.values() {
            *tasks.entry(t.state()).or_insert(0.0) += 1.0;
        }
        let used = s
            .used_by_agent()
            .values()
            .fold(Resources::default(), |acc, r| acc.add(r));
        (agents, frameworks, tasks, total, used, s.plugins.len())
    });
    family(
        &mut reg,
        "agents",
        "Agents by state",
        [
            AgentState::Active,
            AgentState::Unreachable,
            AgentState::Gone,
        ]
        .into_iter()
        .map(|st| {
            let name = agent_state_name(st);
            (
                labels(&[("state", name)]),
                agents.get(name).copied().unwrap_or(0.0),
            )
        }),
    );
    family(
        &mut reg,
        "frameworks",
        "Frameworks not removed, by kind",
        ["plugin", "external"].into_iter().map(|k| {
            (
                labels(&[("kind", k)]),
                frameworks.get(k).copied().unwrap_or(0.0),
            )
        }),
    );
    family(
        &mut reg,
        "tasks",
        "Tasks the state holds, by state (ended ones until they are forgotten)",
        TaskState::ALL.iter().map(|st| {
            (
                labels(&[("state", st.as_str())]),
                tasks.get(st).copied().unwrap_or(0.0),
            )
        }),
    );
    let mut resources = by_resource(&total, "total");
    resources.extend(by_resource(&used, "used"));
    family(
        &mut reg,
        "resources",
        "Resources of active agents (total) and held by live tasks and their executors (used)",
        resources,
    );
    gauge(&mut reg, "plugins", "Installed plugins", plugins as f64);
    if let Some(l) = n.leader() {
        gauge(
            &mut reg,
            "offers_outstanding",
            "Offers sent to frameworks and not yet answered (leader only)",
            l.allocator().outstanding() as f64,
        );
        gauge(
            &mut reg,
            "agents_connected",
            "Agents heartbeating to this leader (leader only)",
            l.agents.connected().len() as f64,
        );
        gauge(
            &mut reg,
            "agents_awaiting_unreachable",
            "Silent agents waiting their turn under --agent-unreachable-rate to be marked unreachable (leader only)",
            l.unreachable_waiting
                .load(std::sync::atomic::Ordering::Relaxed) as f64,
        );
    }
    let i = &n.instruments;
    reg.register(
        "allocation_cycle_seconds",
        "Seconds per allocation cycle while this master led",
        i.allocation_seconds.clone(),
    );
    reg.register(
        "offers",
        "Offers made to frameworks while this master led",
        i.offers.clone(),
    );
    reg.register(
        "task_launches",
        "Tasks committed as launched, or refused, while this master led",
        i.launches.clone(),
    );
    reg.register(
        "status_updates",
        "Task status updates applied while this master led, by state",
        i.status_updates.clone(),
    );
    reg.register(
        "framework_group_calls",
        "Framework plugin calls committed together in one log entry while this master led",
        i.framework_group_calls.clone(),
    );
    reg.register(
        "framework_call_seconds",
        "Seconds per call into a framework plugin by its actor while this master led, by framework and call",
        i.framework_call_seconds.clone(),
    );
    reg.register(
        "raft_commit_seconds",
        "Seconds from a proposal of this master to its commit",
        n.store.commit_seconds(),
    );
    reg.register(
        "plugin_call_seconds",
        "Seconds per call into a plugin on this master",
        n.runtime.calls.seconds.clone(),
    );
    reg.register(
        "plugin_call_failures",
        "Failed calls into a plugin on this master, by kind",
        n.runtime.calls.failures.clone(),
    );
    n.runtime.observed.register(&mut reg);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

fn agent_state_name(s: AgentState) -> &'static str {
    match s {
        AgentState::Active => "active",
        AgentState::Unreachable => "unreachable",
        AgentState::Gone => "gone",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_is_chosen_by_its_accept_header_and_json_stays_the_default() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(
            prometheus_type(prometheus).is_some_and(|t| t.starts_with("application/openmetrics"))
        );
        assert!(prometheus_type("text/plain; version=0.0.4").is_some());
        for json in ["application/json", "*/*", "", "text/plain"] {
            assert_eq!(prometheus_type(json), None, "{json}");
        }
    }
}
