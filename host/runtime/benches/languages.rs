//! What the language of a plugin costs: the same placement logic —
//! `[field, AVOID, value]` keeps tasks off agents with that value and
//! scores the rest by free cpus, the template `wasmos plugin new --kind
//! placement` writes in each language — built from Rust, Python and C, and
//! natively in Rust beside them: instantiation (with `init`), one call's
//! fixed cost, `filter` at 100 and 10,000 candidates, and each instance's
//! linear memory.
//!
//! The components come from `bench/languages.sh`, which scaffolds and
//! builds them and runs this with `WASMOS_LANG_COMPONENTS` set to
//! `rust=PATH,python=PATH,c=PATH`. Results and method in BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wasmos_core::Resources;
use wasmos_runtime::bindings::placement_types as pt;
use wasmos_runtime::bindings::types as wit;
use wasmos_runtime::placement::{AgentTable, PlacementAgent, PlacementInstance};
use wasmos_runtime::{PluginRuntime, RuntimeConfig};

const AGENTS: u32 = 10_000;

/// (language, component path) from WASMOS_LANG_COMPONENTS.
fn components() -> Vec<(String, Vec<u8>)> {
    let Ok(spec) = std::env::var("WASMOS_LANG_COMPONENTS") else {
        eprintln!("WASMOS_LANG_COMPONENTS is not set: run bench/languages.sh");
        return Vec::new();
    };
    spec.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(lang, path)| {
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            (lang.to_string(), bytes)
        })
        .collect()
}

fn rack(i: u32) -> String {
    format!("r{}", i % 40)
}

fn table() -> AgentTable {
    let mut t = AgentTable::default();
    t.set(
        (0..AGENTS)
            .map(|i| PlacementAgent {
                id: format!("agent-{i}"),
                hostname: format!("host-{i}.example.org"),
                attributes: [("rack".to_string(), rack(i))].into_iter().collect(),
                resources: Resources::cpus_mem(16.0, 65536.0).unwrap_or_default(),
            })
            .collect(),
    );
    t
}

fn task() -> pt::PlacementTask {
    pt::PlacementTask {
        group: "/prod/web".into(),
        constraints: vec![pt::Constraint {
            field: "rack".into(),
            operator: "AVOID".into(),
            value: Some("r1".into()),
        }],
        resources: wit::Resources {
            cpus: 0.5,
            mem: 512.0,
            disk: 0.0,
            gpus: 0,
            ports: vec![],
        },
        placed: vec![],
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

fn languages(c: &mut Criterion) {
    let t = table();
    let task = task();
    let mut g = c.benchmark_group("avoid");
    for (lang, bytes) in components() {
        let rt = PluginRuntime::new(RuntimeConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        let comp = rt.compile(&bytes).unwrap_or_else(|e| panic!("{lang}: {e}"));
        let mut inst = PlacementInstance::new(&rt, "avoid", &comp, Default::default())
            .unwrap_or_else(|e| panic!("{lang}: {e}"));
        // Throughput: instances (then calls, then candidates) per second.
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("instantiate+init", &lang), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    inst.discard();
                    let started = std::time::Instant::now();
                    inst.warm().unwrap_or_else(|e| panic!("{e}"));
                    total += started.elapsed();
                }
                total
            })
        });
        // The 10,000 agents cross once; then only candidates do.
        let first = inst
            .filter(&t, &task, &candidates(2))
            .unwrap_or_else(|e| panic!("{lang}: {e}"));
        assert_eq!(first, vec![true, false], "{lang} avoids rack r1");
        let empty = AgentTable::default();
        g.bench_function(BenchmarkId::new("call (validate nothing)", &lang), |b| {
            b.iter(|| black_box(inst.validate(&empty, &[]).unwrap_or_else(|e| panic!("{e}"))))
        });
        inst.filter(&t, &task, &candidates(1))
            .unwrap_or_else(|e| panic!("{lang}: {e}"));
        for n in [100u32, 10_000] {
            let cands = candidates(n);
            g.throughput(Throughput::Elements(u64::from(n)));
            g.bench_with_input(
                BenchmarkId::new(format!("filter/{lang}"), n),
                &cands,
                |b, cands| {
                    b.iter(|| {
                        black_box(
                            inst.filter(&t, &task, cands)
                                .unwrap_or_else(|e| panic!("{e}")),
                        )
                    })
                },
            );
        }
        let stats = rt.observed.stats("avoid").unwrap_or_default();
        eprintln!(
            "{lang}: component {} KB, linear memory at most {:.1} MiB",
            bytes.len() / 1024,
            stats.memory_high_water as f64 / f64::from(1 << 20)
        );
    }
    // The same logic natively, on a view like the SDK's.
    let racks: Vec<String> = (0..AGENTS).map(rack).collect();
    for n in [100u32, 10_000] {
        let cands = candidates(n);
        g.throughput(Throughput::Elements(u64::from(n)));
        g.bench_with_input(BenchmarkId::new("filter/native", n), &cands, |b, cands| {
            b.iter(|| {
                black_box(
                    cands
                        .iter()
                        .map(|c| {
                            let have = racks.get(c.agent as usize);
                            task.constraints
                                .iter()
                                .all(|r| have.map(String::as_str) != r.value.as_deref())
                        })
                        .collect::<Vec<bool>>(),
                )
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = languages
}
criterion_main!(benches);
