//! The agent's `/metrics`: Prometheus' text format (OpenMetrics, through
//! `prometheus-client`) for a scraper that asks for it by `Accept`, and a
//! JSON object in Mesos' agent `/metrics/snapshot` names otherwise. The
//! agent's API is for the masters only: Prometheus scrapes agents through
//! a master (`/api/wasmos/v1/agents/<id>/metrics`, found with the master's
//! HTTP service discovery at `/api/wasmos/v1/prometheus/targets`).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value, json};
use wasmos_core::{Resources, TaskState};

use crate::Agent;

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// What the agent holds now.
struct Snapshot {
    registered: bool,
    tasks: BTreeMap<TaskState, u64>,
    total: Resources,
    used: Resources,
    executors: usize,
    pending_updates: usize,
}

fn snapshot(a: &Agent) -> Snapshot {
    let mut tasks = BTreeMap::new();
    let mut used = Resources::default();
    for t in a.lock_tasks().values() {
        *tasks.entry(t.state).or_insert(0) += 1;
        if !t.state.is_terminal() {
            used = used.add(&t.spec.resources);
        }
    }
    Snapshot {
        registered: a.agent_id().is_some(),
        tasks,
        total: a.info.resources.clone(),
        used,
        executors: a.executors_report().len(),
        pending_updates: a.pending_updates(),
    }
}

fn resource_values(r: &Resources) -> [(&'static str, f64); 4] {
    [
        ("cpus", r.cpus.as_f64()),
        ("mem", r.mem.as_f64()),
        ("disk", r.disk.as_f64()),
        ("gpus", f64::from(r.gpus)),
    ]
}

/// The agent's metrics in Prometheus' text format.
pub(crate) fn render(a: &Agent) -> String {
    let s = snapshot(a);
    let mut reg = Registry::with_prefix("wasmos_agent");
    let gauge = |reg: &mut Registry, name: &str, help: &str, v: f64| {
        let g = FloatGauge::default();
        g.set(v);
        reg.register(name, help, g);
    };
    gauge(
        &mut reg,
        "registered",
        "1 once a master registered this agent",
        if s.registered { 1.0 } else { 0.0 },
    );
    let tasks = Family::<Labels, FloatGauge>::default();
    for st in TaskState::ALL {
        tasks
            .get_or_create(&vec![("state".into(), st.as_str().into())])
            .set(s.tasks.get(&st).copied().unwrap_or(0) as f64);
    }
    reg.register("tasks", "Tasks this agent holds, by state", tasks);
    let resources = Family::<Labels, FloatGauge>::default();
    for (kind, r) in [("total", &s.total), ("used", &s.used)] {
        for (name, v) in resource_values(r) {
            resources
                .get_or_create(&vec![
                    ("resource".into(), name.into()),
                    ("kind".into(), kind.into()),
                ])
                .set(v);
        }
    }
    reg.register(
        "resources",
        "This agent's resources (total) and those its live tasks hold (used)",
        resources,
    );
    gauge(
        &mut reg,
        "executors",
        "Executors running on this agent",
        s.executors as f64,
    );
    gauge(
        &mut reg,
        "pending_status_updates",
        "Status updates not yet acknowledged by the master",
        s.pending_updates as f64,
    );
    let calls = a.plugins.call_metrics();
    reg.register(
        "plugin_call_seconds",
        "Seconds per call into a plugin (isolators, health checks) on this agent",
        calls.seconds,
    );
    reg.register(
        "plugin_call_failures",
        "Failed calls into a plugin on this agent, by kind",
        calls.failures,
    );
    a.plugins.observed().register(&mut reg);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// The same, as Mesos' agent names them in `/metrics/snapshot`.
pub(crate) fn snapshot_json(a: &Agent) -> Value {
    let s = snapshot(a);
    let mut m = Map::new();
    m.insert("slave/registered".into(), json!(u8::from(s.registered)));
    for (st, key) in [
        (TaskState::Staging, "tasks_staging"),
        (TaskState::Starting, "tasks_starting"),
        (TaskState::Running, "tasks_running"),
        (TaskState::Killing, "tasks_killing"),
        (TaskState::Finished, "tasks_finished"),
        (TaskState::Failed, "tasks_failed"),
        (TaskState::Killed, "tasks_killed"),
        (TaskState::Lost, "tasks_lost"),
    ] {
        m.insert(
            format!("slave/{key}"),
            json!(s.tasks.get(&st).copied().unwrap_or(0)),
        );
    }
    for ((name, total), (_, used)) in resource_values(&s.total)
        .into_iter()
        .zip(resource_values(&s.used))
    {
        m.insert(format!("slave/{name}_total"), json!(total));
        m.insert(format!("slave/{name}_used"), json!(used));
        m.insert(
            format!("slave/{name}_percent"),
            json!(if total > 0.0 { used / total } else { 0.0 }),
        );
    }
    m.insert("slave/executors_running".into(), json!(s.executors));
    Value::Object(m)
}
