//! B1 of ../shared/reference/perf-anchors.md: the offer allocator in
//! process, in the shapes of Mesos' `HierarchicalAllocator_BENCHMARK_Test`.
//!
//! - `decline_offers`: 10,000 agents × 1,000 frameworks in one role; every
//!   cycle offers each agent to a framework, and every framework declines
//!   what it got with a long filter (so cycle N skips N-1 frameworks per
//!   agent, as in Mesos' benchmark). One iteration is one `allocate()`; the
//!   declines between cycles are not timed.
//! - `quota`: agents, roles (each with a guarantee and a limit) and a
//!   framework in each, 300 of each: the first cycle (an offer per agent)
//!   and a cycle with nothing left.
//! - `large_and_small_quota`: Mesos' `LargeAndSmallQuota` at 3,000 agents,
//!   3,000 roles and 3,000 frameworks: the first cycle, every cycle until
//!   every quota is met, and a cycle with every role at its limit.
//! - `one_percent_changed`: 10,000 agents × 1,000 frameworks, every agent
//!   offered; 1 % of the offers are declined without a filter, then a cycle
//!   re-offers them.
//! - `usage`: what the leader reads from the replicated state before each
//!   cycle — every agent's free pools and every framework's use — at 10,000
//!   agents and 100,000 tasks: a full pass over the tasks, and the kept
//!   usage after 1 % of the tasks changed.
//!
//! `cargo bench -p wasmos-master --bench allocator`; results and method in
//! BENCHMARKS.md.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use wasmos_core::{
    AgentId, AgentInfo, FrameworkId, FrameworkInfo, Offer, Source, TaskId, TaskSpec, TaskState,
    TaskStatus,
};
use wasmos_master::allocator::{AgentSlot, Allocator, Inputs};
use wasmos_state::roles::{Quota, RoleConfig};
use wasmos_state::{AgentPools, Command, LeaderInfo, Response, State};

const RESOURCES: &str = "cpus:24;mem:4096;disk:4096;ports:[31000-32000]";

fn agents(n: usize) -> Vec<AgentSlot> {
    agents_of(n, RESOURCES)
}

/// `n` agents with `resources` each, all free.
fn agents_of(n: usize, resources: &str) -> Vec<AgentSlot> {
    (0..n)
        .map(|i| AgentSlot {
            id: AgentId::new(format!("agent-{i:05}")).expect("an agent id"),
            hostname: format!("host-{i:05}"),
            total: resources.parse().expect("the agents' resources"),
            attributes: BTreeMap::new(),
            free: AgentPools {
                unreserved: resources.parse().expect("the agents' resources"),
                ..Default::default()
            },
        })
        .collect()
}

fn frameworks(n: usize) -> Vec<FrameworkId> {
    (0..n)
        .map(|i| FrameworkId::new(format!("framework-{i:04}")).expect("a framework id"))
        .collect()
}

fn inputs(agents: Vec<AgentSlot>, frameworks: Vec<FrameworkId>) -> Inputs {
    Inputs {
        agents,
        used_by_framework: BTreeMap::new(),
        frameworks,
        framework_roles: BTreeMap::new(),
        roles: BTreeMap::new(),
    }
}

/// Every offer back, each framework filtering its agent for `refuse`.
fn decline_all(a: &mut Allocator, offers: Vec<Offer>, refuse: Duration, now: Instant) {
    let mut by_fw: BTreeMap<FrameworkId, Vec<_>> = BTreeMap::new();
    for o in offers {
        by_fw.entry(o.framework_id).or_default().push(o.id);
    }
    for (f, ids) in by_fw {
        a.decline(&f, &ids, Some(refuse), now);
    }
}

fn decline_offers(c: &mut Criterion) {
    let mut g = c.benchmark_group("decline_offers");
    g.sample_size(10);
    let inp = inputs(agents(10_000), frameworks(1_000));
    let mut a = Allocator::new(1);
    let t0 = Instant::now();
    let mut cycles = 0u32;
    g.bench_function("10000 agents x 1000 frameworks, allocate", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let now = t0 + Duration::from_millis(u64::from(cycles));
                cycles += 1;
                let started = Instant::now();
                let offers = a.allocate(black_box(&inp), now);
                spent += started.elapsed();
                assert_eq!(
                    offers.len(),
                    10_000,
                    "every agent offered in cycle {cycles}"
                );
                decline_all(&mut a, offers, Duration::from_secs(3600), now);
            }
            spent
        })
    });
    eprintln!("decline_offers: {cycles} cycles measured");
    g.finish();
}

/// Agents, roles and frameworks in `quota` (see the module's text).
const QUOTA_SHAPE: usize = 300;

fn quota(c: &mut Criterion) {
    let mut g = c.benchmark_group("quota");
    g.sample_size(10);
    let fws = frameworks(QUOTA_SHAPE);
    let mut inp = inputs(agents(QUOTA_SHAPE), fws.clone());
    for (i, f) in fws.iter().enumerate() {
        let role = format!("role-{i:04}");
        inp.framework_roles.insert(f.clone(), role.clone());
        inp.roles.insert(
            role,
            RoleConfig {
                weight: 1.0,
                quota: Quota {
                    guarantees: [("cpus".to_string(), 2.0)].into(),
                    limits: [("cpus".to_string(), 48.0)].into(),
                },
            },
        );
    }
    g.bench_function("300 agents, roles and frameworks, first cycle", |b| {
        b.iter_batched(
            || Allocator::new(1),
            |mut a| {
                let offers = a.allocate(&inp, Instant::now());
                assert_eq!(offers.len(), QUOTA_SHAPE);
                a
            },
            criterion::BatchSize::PerIteration,
        )
    });
    g.bench_function("300 agents, roles and frameworks, nothing left", |b| {
        let mut a = Allocator::new(1);
        assert_eq!(a.allocate(&inp, Instant::now()).len(), QUOTA_SHAPE);
        b.iter(|| assert!(a.allocate(black_box(&inp), Instant::now()).is_empty()))
    });
    g.finish();
}

/// Mesos' `LargeAndSmallQuota` at its largest: 2,500 roles whose quota
/// half an agent meets and 500 whose quota takes two agents, a framework in
/// each, 3,000 agents of `cpus:2;mem:2048;disk:2048`; a quota is both the
/// role's guarantee and its limit (as Mesos' quota was). Wasmos offers an
/// agent to one framework per cycle (Mesos may split it in one cycle), so
/// meeting every quota takes cycles: timed is the first cycle, and every
/// cycle until one offers nothing (the offers are kept, not accepted).
fn large_and_small_quota(c: &mut Criterion) {
    let mut g = c.benchmark_group("large_and_small_quota");
    g.sample_size(10);
    let (small, large) = (2_500, 500);
    let mut inp = inputs(
        agents_of(small / 5 + large * 5, "cpus:2;mem:2048;disk:2048"),
        Vec::new(),
    );
    let quota = |units: f64| {
        let q: BTreeMap<String, f64> = [
            ("cpus".to_string(), units),
            ("mem".to_string(), 1024.0 * units),
            ("disk".to_string(), 1024.0 * units),
        ]
        .into();
        RoleConfig {
            weight: 1.0,
            quota: Quota {
                guarantees: q.clone(),
                limits: q,
            },
        }
    };
    for (kind, count, units) in [("small", small, 1.0), ("large", large, 4.0)] {
        for i in 0..count {
            let role = format!("{kind}QuotaRole{i}");
            let f = FrameworkId::new(format!("framework_{kind}_{i}")).expect("a framework id");
            inp.frameworks.push(f.clone());
            inp.framework_roles.insert(f, role.clone());
            inp.roles.insert(role, quota(units));
        }
    }
    let agents = inp.agents.len();
    // Every cycle until one offers nothing: (offers made, cycles).
    let until_quiet = |a: &mut Allocator| {
        let (mut made, mut cycles) = (0, 0);
        loop {
            let n = a.allocate(black_box(&inp), Instant::now()).len();
            cycles += 1;
            if n == 0 {
                return (made, cycles);
            }
            made += n;
        }
    };
    let (made, cycles) = until_quiet(&mut Allocator::new(1));
    eprintln!("large_and_small_quota: {made} offers in {cycles} cycles, the last empty");
    g.bench_function("3000 agents and roles, first cycle", |b| {
        b.iter_batched(
            || Allocator::new(1),
            |mut a| {
                assert_eq!(a.allocate(&inp, Instant::now()).len(), agents);
                a
            },
            criterion::BatchSize::PerIteration,
        )
    });
    g.bench_function(
        "3000 agents and roles, every cycle until one offers nothing",
        |b| {
            b.iter_batched(
                || Allocator::new(1),
                |mut a| {
                    assert_eq!(until_quiet(&mut a), (made, cycles));
                    a
                },
                criterion::BatchSize::PerIteration,
            )
        },
    );
    g.bench_function(
        "3000 agents and roles, a cycle with every limit reached",
        |b| {
            let mut a = Allocator::new(1);
            until_quiet(&mut a);
            b.iter(|| assert!(a.allocate(black_box(&inp), Instant::now()).is_empty()))
        },
    );
    g.finish();
}

fn one_percent_changed(c: &mut Criterion) {
    let mut g = c.benchmark_group("one_percent_changed");
    g.sample_size(10);
    let inp = inputs(agents(10_000), frameworks(1_000));
    let mut a = Allocator::new(1);
    let now = Instant::now();
    let mut offers = a.allocate(&inp, now);
    assert_eq!(offers.len(), 10_000);
    g.bench_function("10000 agents x 1000 frameworks, 100 re-offered", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let back: Vec<Offer> = offers.drain(..100).collect();
                decline_all(&mut a, back, Duration::ZERO, now);
                let started = Instant::now();
                let again = a.allocate(black_box(&inp), now);
                spent += started.elapsed();
                assert_eq!(again.len(), 100);
                offers.extend(again);
            }
            spent
        })
    });
    g.finish();
}

/// A state of 10,000 agents and 100,000 live tasks, made through the
/// state's own commands.
fn big_state() -> State {
    let mut s = State::default();
    s.apply(Command::BeginTerm {
        term: 1,
        leader: LeaderInfo {
            master_id: "m".into(),
            address: "https://m".into(),
            term: 1,
            plain_address: None,
        },
        cluster_id: "bench-cluster".into(),
    });
    s.apply(Command::RegisterFramework {
        framework_id: framework(),
        info: FrameworkInfo::plugin("marathon", "*"),
        now: 1.0,
    });
    let mut uuid = 0u128;
    for i in 0..10_000 {
        let Response::AgentRegistered { agent_id, .. } = s.apply(Command::RegisterAgent {
            agent_id: None,
            info: AgentInfo {
                hostname: format!("host-{i:05}"),
                endpoint: format!("https://10.0.{}.{}:5051", i / 250, i % 250),
                resources: RESOURCES.parse().expect("the agents' resources"),
                reserved: Default::default(),
                attributes: Default::default(),
                boot_id: format!("boot-{i}"),
                version: "bench".into(),
            },
            principal: None,
            now: 1.0,
        }) else {
            panic!("agent {i} not registered")
        };
        let tasks = (0..10).map(|k| format!("app-{k}.task-{i:05}")).collect();
        launch(&mut s, &agent_id, tasks, &mut uuid);
    }
    s
}

fn framework() -> FrameworkId {
    FrameworkId::new("marathon").expect("a framework id")
}

fn launch(s: &mut State, agent: &AgentId, ids: Vec<String>, uuid: &mut u128) {
    let tasks: Vec<TaskSpec> = ids.into_iter().map(spec).collect();
    let uuids = tasks
        .iter()
        .map(|_| {
            *uuid += 1;
            uuid::Uuid::from_u128(*uuid)
        })
        .collect();
    let r = s.apply(Command::LaunchTasks {
        framework_id: framework(),
        agent_id: agent.clone(),
        tasks,
        staging_uuids: uuids,
        now: 2.0,
    });
    assert!(
        matches!(r, Response::TasksLaunched { ref rejected, .. } if rejected.is_empty()),
        "{r:?}"
    );
}

fn spec(id: String) -> TaskSpec {
    TaskSpec::shell(
        TaskId::new(id).expect("a task id"),
        "sleep 3600",
        "cpus:0.01;mem:4".parse().expect("a task's resources"),
    )
}

fn finished(id: &TaskId, uuid: u128) -> TaskStatus {
    TaskStatus {
        task_id: id.clone(),
        state: TaskState::Finished,
        agent_id: None,
        source: Source::Agent,
        reason: None,
        message: None,
        exit_code: Some(0),
        signal: None,
        healthy: None,
        ready: None,
        timestamp: 3.0,
        uuid: uuid::Uuid::from_u128(uuid),
        data: None,
        executor_id: None,
    }
}

fn usage(c: &mut Criterion) {
    let mut g = c.benchmark_group("usage");
    g.sample_size(10);
    let mut s = big_state();
    let mut memo = wasmos_state::usage::UsageMemo::default();
    let kept = s.usage(&mut memo);
    assert_eq!(kept.pools, s.pools_by_agent());
    g.bench_function("10000 agents, 100000 tasks, a pass over every task", |b| {
        b.iter(|| black_box((s.pools_by_agent(), s.used_by_framework())))
    });
    let agents: Vec<AgentId> = s.agents.keys().cloned().collect();
    let mut uuid = 1u128 << 100;
    let mut round = 0usize;
    g.bench_function(
        "10000 agents, 100000 tasks, kept, 1% of agents changed",
        |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    // On 100 agents a task ends and another starts (untimed).
                    round += 1;
                    for k in 0..100 {
                        let agent = &agents[(round * 100 + k) * 7919 % agents.len()];
                        let live = s
                            .tasks
                            .values()
                            .find(|t| &t.agent_id == agent && !t.state().is_terminal())
                            .map(|t| t.spec.task_id.clone());
                        if let Some(id) = live {
                            uuid += 1;
                            s.apply(Command::StatusUpdate {
                                status: finished(&id, uuid),
                            });
                        }
                        launch(&mut s, agent, vec![format!("churn-{round}-{k}")], &mut uuid);
                    }
                    let started = Instant::now();
                    black_box(s.usage(&mut memo));
                    spent += started.elapsed();
                }
                spent
            })
        },
    );
    g.finish();
}

criterion_group!(
    benches,
    decline_offers,
    quota,
    large_and_small_quota,
    one_percent_changed,
    usage
);
criterion_main!(benches);
