//! What plugin calls cost, with the bundled `constraints` placement plugin:
//! instantiation (on demand and pooled), a call's fixed cost, batched
//! `filter` at 1 / 100 / 10,000 candidates, the same filter in native
//! Rust, and what epoch interruption (our deadlines) costs.
//!
//! `cargo bench -p wasmos-runtime --bench placement`; results and method in
//! BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wasmos_core::Resources;
use wasmos_runtime::bindings::placement_types as pt;
use wasmos_runtime::bindings::types as wit;
use wasmos_runtime::placement::{AgentTable, PlacementAgent, PlacementInstance};
use wasmos_runtime::{PluginRuntime, RuntimeConfig};
use wasmos_sdk::placement as sdk;

const AGENTS: u32 = 10_000;

fn constraints() -> &'static [u8] {
    wasmos_bundled::all()
        .into_iter()
        .find(|p| p.manifest.name == "constraints")
        .map(|p| p.component)
        .unwrap_or_default()
}

fn instance(config: RuntimeConfig) -> (PluginRuntime, PlacementInstance) {
    let rt = PluginRuntime::new(config).unwrap_or_else(|e| panic!("{e}"));
    let c = rt.compile(constraints()).unwrap_or_else(|e| panic!("{e}"));
    let inst = PlacementInstance::new(&rt, "constraints", &c, Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    (rt, inst)
}

fn attrs(i: u32) -> Vec<(String, String)> {
    vec![
        ("rack".into(), format!("r{}", i % 40)),
        ("zone".into(), format!("z{}", i % 3)),
        (
            "disk".into(),
            if i.is_multiple_of(2) {
                "ssd".into()
            } else {
                "hdd".into()
            },
        ),
        ("gen".into(), format!("{}", 7 + i % 3)),
    ]
}

fn table() -> AgentTable {
    let mut t = AgentTable::default();
    t.set(
        (0..AGENTS)
            .map(|i| PlacementAgent {
                id: format!("agent-{i}"),
                hostname: format!("host-{i}.example.org"),
                attributes: attrs(i).into_iter().collect(),
                resources: Resources::cpus_mem(16.0, 65536.0).unwrap_or_default(),
            })
            .collect(),
    );
    t
}

fn constraint(field: &str, op: &str, value: Option<&str>) -> pt::Constraint {
    pt::Constraint {
        field: field.into(),
        operator: op.into(),
        value: value.map(String::from),
    }
}

/// A task of an app with 20 instances placed, UNIQUE per host and at most
/// 2 per rack: two rules, both needing the group's counts.
fn task() -> pt::PlacementTask {
    pt::PlacementTask {
        group: "/prod/web".into(),
        constraints: vec![
            constraint("hostname", "UNIQUE", None),
            constraint("rack", "MAX_PER", Some("2")),
        ],
        resources: wit::Resources {
            cpus: 0.5,
            mem: 512.0,
            disk: 0.0,
            gpus: 0,
            ports: vec![],
        },
        placed: (0..20).map(|i| (i * 7, 1)).collect(),
    }
}

fn candidates(n: u32) -> Vec<pt::Candidate> {
    (0..n)
        .map(|agent| pt::Candidate {
            agent,
            cpus: 8.0,
            mem: 32768.0,
            disk: 0.0,
        })
        .collect()
}

fn instantiate(c: &mut Criterion) {
    let mut g = c.benchmark_group("instantiate");
    for (name, pool) in [("on-demand", None), ("pooling", Some(64))] {
        let (_rt, mut inst) = instance(RuntimeConfig {
            pool_size: pool,
            ..Default::default()
        });
        // Timed: a new store and instantiation from the pre-linked
        // component. Not timed: dropping it.
        g.bench_function(format!("{name}/bare"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = std::time::Instant::now();
                    let live = inst.instantiate_bare().unwrap_or_else(|e| panic!("{e}"));
                    total += t.elapsed();
                    drop(live);
                }
                total
            })
        });
        // Timed: the same plus the plugin's `init`, i.e. ready to be called.
        // Not timed: dropping the previous one.
        g.bench_function(format!("{name}/with-init"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    inst.discard();
                    let t = std::time::Instant::now();
                    inst.warm().unwrap_or_else(|e| panic!("{e}"));
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

fn call_overhead(c: &mut Criterion) {
    let (_rt, mut inst) = instance(RuntimeConfig::default());
    let t = AgentTable::default();
    c.bench_function("call/validate-nothing", |b| {
        b.iter(|| black_box(inst.validate(&t, &[]).unwrap_or_else(|e| panic!("{e}"))))
    });
}

fn filter(c: &mut Criterion) {
    let t = table();
    let task = task();
    let mut g = c.benchmark_group("filter");
    for epochs in [true, false] {
        let (_rt, mut inst) = instance(RuntimeConfig {
            epoch_interruption: epochs,
            ..Default::default()
        });
        // Send the 10,000 agents once; every later call sends no agent.
        inst.filter(&t, &task, &candidates(1))
            .unwrap_or_else(|e| panic!("{e}"));
        for n in [1u32, 100, 10_000] {
            if !epochs && n != 100 {
                continue;
            }
            let cands = candidates(n);
            g.throughput(Throughput::Elements(u64::from(n)));
            let label = if epochs { "wasm" } else { "wasm-no-epoch" };
            g.bench_with_input(BenchmarkId::new(label, n), &cands, |b, cands| {
                b.iter(|| {
                    black_box(
                        inst.filter(&t, &task, cands)
                            .unwrap_or_else(|e| panic!("{e}")),
                    )
                })
            });
        }
    }
    // The same logic compiled natively, on the SDK's own view of the agents.
    let mut agents = sdk::Agents::default();
    agents.apply(
        (0..AGENTS)
            .map(|i| {
                sdk::AgentChange::Upsert(sdk::AgentView {
                    index: i,
                    id: format!("agent-{i}"),
                    hostname: format!("host-{i}.example.org"),
                    attributes: attrs(i)
                        .into_iter()
                        .map(|(key, value)| sdk::KeyValue { key, value })
                        .collect(),
                    resources: sdk::Resources {
                        cpus: 16.0,
                        mem: 65536.0,
                        disk: 0.0,
                        gpus: 0,
                        ports: vec![],
                    },
                })
            })
            .collect(),
    );
    let ntask = sdk::PlacementTask {
        group: task.group.clone(),
        constraints: task
            .constraints
            .iter()
            .map(|c| sdk::Constraint {
                field: c.field.clone(),
                operator: c.operator.clone(),
                value: c.value.clone(),
            })
            .collect(),
        resources: sdk::Resources {
            cpus: 0.5,
            mem: 512.0,
            disk: 0.0,
            gpus: 0,
            ports: vec![],
        },
        placed: task.placed.clone(),
    };
    for n in [1u32, 100, 10_000] {
        let cands: Vec<sdk::Candidate> = (0..n)
            .map(|agent| sdk::Candidate {
                agent,
                cpus: 8.0,
                mem: 32768.0,
                disk: 0.0,
            })
            .collect();
        g.throughput(Throughput::Elements(u64::from(n)));
        g.bench_with_input(BenchmarkId::new("native", n), &cands, |b, cands| {
            let mut native = wasmos_plugin_constraints::Native::default();
            b.iter(|| black_box(native.filter(&agents, &ntask, cands)))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = instantiate, call_overhead, filter
}
criterion_main!(benches);
