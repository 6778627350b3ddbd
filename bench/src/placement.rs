//! `wasmos-bench placement`: B2 of the performance anchors — end-to-end
//! placement throughput with constraints. Replicated masters (three by
//! default, TLS, fsync) and thousands of simulated agents (`sim.rs`, 32
//! CPUs and 128 GiB each, in racks, of three classes); Marathon apps whose
//! every instance must land on its own host (`UNIQUE hostname`), spread
//! evenly over all the racks (`GROUP_BY rack <racks>`: without the count,
//! Marathon's rule evens out only among the racks already in use, so an
//! instance may join a used rack while another is empty) and on matching
//! hardware (`class LIKE compute|general`).
//!
//! Two rounds: `--apps` apps of `--instances` posted as fast as the API
//! takes them on an empty cluster, then as many more on the half-full one.
//! A placement counts once its launch has been committed by the masters
//! and has reached its agent. Measured per round: placements per second
//! (first POST → last launch seen), each task's latency from its app's
//! POST to its launch, and the CPU the masters and this process (the
//! agents, the clients) used per 1,000 placements. Every placement is then
//! checked against its app's constraints.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use futures::StreamExt as _;
use serde_json::json;

use crate::sim::{Seen, SimAgents};
use crate::stats::Latencies;

#[derive(Debug, clap::Args)]
pub struct PlacementArgs {
    /// Masters (3: a replicated cluster, every launch committed by two).
    #[arg(long, default_value_t = 3)]
    masters: usize,
    /// Simulated agents (32 CPUs, 128 GiB each).
    #[arg(long, default_value_t = 5000)]
    agents: usize,
    /// Racks the agents are spread over (the GROUP_BY field).
    #[arg(long, default_value_t = 50)]
    racks: usize,
    /// Apps per round.
    #[arg(long, default_value_t = 1000)]
    apps: usize,
    /// Instances per app (each on its own host: at most --agents).
    #[arg(long, default_value_t = 50)]
    instances: usize,
    /// Rounds: the first on an empty cluster, each next one on top.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// The masters' raft election timeout (the master's default).
    #[arg(long, default_value_t = 1000)]
    election_timeout_ms: u64,
    /// Each master's --worker-threads (0: its default, one per core).
    #[arg(long, default_value_t = 0)]
    worker_threads: u16,
    /// The masters' --framework-group-calls (1: every Marathon call
    /// commits alone; 0: the master's default).
    #[arg(long, default_value_t = 0)]
    framework_group_calls: usize,
    /// POSTs in flight at once.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// The wasmos binary (default: next to this one).
    #[arg(long)]
    pub wasmos: Option<PathBuf>,
}

/// Agent `i`'s attributes: rack `r<i mod racks>`, and a class that cycles
/// within each rack so that every rack has agents of each.
fn attributes(i: usize, racks: usize) -> BTreeMap<String, String> {
    const CLASSES: [&str; 3] = ["compute", "general", "storage"];
    BTreeMap::from([
        ("rack".to_string(), format!("r{}", i % racks)),
        ("class".to_string(), CLASSES[(i / racks) % 3].to_string()),
    ])
}

/// Marathon's task id starts with the app id, slashes as underscores.
fn app_of(task: &str) -> Option<&str> {
    task.split_once(".instance-").map(|(app, _)| app)
}

/// The masters' and this process's CPU time so far, in seconds.
fn cpu(masters: &[u32]) -> (f64, f64) {
    let secs = |pid: u32| crate::cpu_ticks(pid) as f64 / 100.0;
    (
        masters.iter().map(|p| secs(*p)).sum(),
        secs(std::process::id()),
    )
}

/// What one round measured.
struct Round {
    /// Raft terms begun during the round.
    elections: u64,
    /// POSTs answered 503 or 307 and sent again.
    retried: usize,
    placed: usize,
    secs: f64,
    latency: Latencies,
    masters_cpu: f64,
    bench_cpu: f64,
}

pub async fn run(a: PlacementArgs, bin: PathBuf) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.instances <= a.agents,
        "--instances {} cannot each have their own host among {} agents",
        a.instances,
        a.agents
    );
    anyhow::ensure!(a.racks >= 1, "--racks must be at least 1");
    std::fs::create_dir_all("/var/tmp")?;
    let mut dir = tempfile::tempdir_in("/var/tmp")?;
    if std::env::var_os("WASMOS_BENCH_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("   data and logs kept in {}", dir.path().display());
    }
    eprintln!(
        "== B2: {} master(s), {} simulated agents in {} racks, {} round(s) of {} apps × {} instances (UNIQUE hostname, GROUP_BY rack, LIKE class)",
        a.masters, a.agents, a.racks, a.rounds, a.apps, a.instances
    );
    let mut cluster = crate::wasmos::Cluster::start_with(
        &bin,
        dir.path(),
        a.masters,
        a.election_timeout_ms,
        a.worker_threads,
        true,
        if a.framework_group_calls > 0 {
            vec![
                "--framework-group-calls".to_string(),
                a.framework_group_calls.to_string(),
            ]
        } else {
            Vec::new()
        },
    )
    .await?;
    let pki = cluster.pki().context("the cluster runs with TLS")?;
    let url = cluster.leader_url().await?;
    crate::settle("the masters", &crate::System::pids(&cluster)).await;
    // Redirects are not followed: one to another master would go without
    // the credentials (reqwest drops them when the host changes); a 307 is
    // sent again instead, to the master that forwards to its leader.
    let http = pki
        .client()?
        .timeout(Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let resources = crate::sim::resources(32.0, 131072.0, 1e6)?;
    let registering = Instant::now();
    let racks = a.racks;
    let sims = SimAgents::start_with(
        &url,
        pki,
        a.agents,
        resources,
        Duration::from_secs(24 * 3600),
        |i| attributes(i, racks),
    )
    .await?;
    crate::marathon::wait_agents(&http, &url, a.agents).await?;
    eprintln!(
        "   {} agents registered in {:.0} s",
        a.agents,
        registering.elapsed().as_secs_f64()
    );
    crate::settle("the masters", &crate::System::pids(&cluster)).await;

    let mut rows = Vec::new();
    for round in 0..a.rounds {
        let r = one_round(&a, round, &http, &url, &sims, &cluster).await?;
        rows.push(r);
    }
    // How many framework calls each commit carried (group commit), on the
    // leader now (its counts start when it started).
    let leader = cluster.leader_url().await;
    let grouped = match &leader {
        Ok(leader) => crate::scale::histogram(&http, leader, "wasmos_framework_group_calls")
            .await
            .map(|(_, n, sum)| (n, sum)),
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    };
    // Where Marathon's actor spent its time: its calls, one at a time,
    // by kind.
    let mut marathon_calls = Vec::new();
    if let Ok(leader) = &leader {
        for kind in ["http", "offers", "status", "tick"] {
            let r = crate::scale::histogram_of(
                &http,
                leader,
                "wasmos_framework_call_seconds",
                &[("framework", "marathon"), ("call", kind)],
            )
            .await
            .map(|(_, n, sum)| (n, sum));
            marathon_calls.push((kind, r));
        }
    }
    let seen = sims.seen();
    let broken = check_constraints(&seen, racks);
    cluster.stop().await;

    println!(
        "\n| B2: {} master(s), {} agents, apps of {} instances with UNIQUE hostname + GROUP_BY rack (all racks) + LIKE class | placements/s | submit → launched p50 / p99 | master CPU per 1,000 | bench CPU per 1,000 | elections, POSTs retried |",
        a.masters, a.agents, a.instances
    );
    println!("|---|---|---|---|---|---|");
    for (i, mut r) in rows.into_iter().enumerate() {
        let k = r.placed as f64 / 1000.0;
        println!(
            "| round {} ({} apps, {} tasks{}) | {:.0} | {:.0} ms / {:.0} ms | {:.2} s | {:.2} s | {}, {} |",
            i + 1,
            a.apps,
            r.placed,
            if i == 0 {
                ", empty cluster".to_string()
            } else {
                format!(", {} already running", i * a.apps * a.instances)
            },
            r.placed as f64 / r.secs,
            r.latency.percentile(50.0),
            r.latency.percentile(99.0),
            r.masters_cpu / k,
            r.bench_cpu / k,
            r.elections,
            r.retried,
        );
    }
    match grouped {
        Ok((commits, calls)) => println!(
            "\nframework plugin calls per commit on the leader: {:.1} on average ({calls:.0} calls in {commits:.0} commits)",
            calls / commits.max(1.0)
        ),
        Err(e) => eprintln!("   (framework calls per commit not read: {e:#})"),
    }
    for (kind, r) in marathon_calls {
        match r {
            Ok((n, secs)) => println!(
                "Marathon's {kind} calls on the leader: {n:.0}, {:.1} ms on average, {secs:.1} s in all",
                secs / n.max(1.0) * 1000.0
            ),
            Err(e) => eprintln!("   (Marathon's {kind} call times not read: {e:#})"),
        }
    }
    // After the figures, so that a failed run still shows them.
    anyhow::ensure!(
        broken.is_empty(),
        "{} app(s) placed against their constraints, e.g. {:?}",
        broken.len(),
        broken.iter().take(5).collect::<Vec<_>>()
    );
    eprintln!(
        "   every placement kept its app's constraints ({} tasks)",
        seen.len()
    );
    Ok(())
}

async fn one_round(
    a: &PlacementArgs,
    round: usize,
    http: &reqwest::Client,
    url: &str,
    sims: &SimAgents,
    cluster: &crate::wasmos::Cluster,
) -> anyhow::Result<Round> {
    let pids = crate::System::pids(cluster);
    let before = sims.seen().len();
    let want = a.apps * a.instances;
    let (m0, b0) = cpu(&pids);
    let started = Instant::now();
    let posted: Arc<std::sync::Mutex<HashMap<String, SystemTime>>> = Default::default();
    let retried = std::sync::atomic::AtomicUsize::new(0);
    let term_before = cluster.term().await;
    let apps = (0..a.apps).map(|n| {
        let id = format!("/b2/r{round}/app-{n}");
        let posted = posted.clone();
        let retried = &retried;
        async move {
            let app = json!({
                "id": id, "cmd": "sleep 3600", "cpus": 0.5, "mem": 256,
                "instances": a.instances, "portDefinitions": [],
                "constraints": [
                    ["hostname", "UNIQUE"],
                    ["rack", "GROUP_BY", a.racks.to_string()],
                    ["class", "LIKE", "compute|general"],
                ],
            });
            let at = SystemTime::now();
            let again = crate::marathon::post_app_retrying(http, url, &app)
                .await
                .with_context(|| format!("posting {id}"))?;
            retried.fetch_add(again, std::sync::atomic::Ordering::Relaxed);
            posted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.trim_start_matches('/').replace('/', "_"), at);
            anyhow::Ok(())
        }
    });
    let mut posting = futures::stream::iter(apps).buffer_unordered(a.in_flight);
    let mut progress = Instant::now();
    while let Some(r) = posting.next().await {
        r?;
        if progress.elapsed() > Duration::from_secs(5) {
            progress = Instant::now();
            eprintln!(
                "   round {}: {} of {} apps posted, {} of {want} tasks launched",
                round + 1,
                posted.lock().unwrap_or_else(|p| p.into_inner()).len(),
                a.apps,
                sims.seen().len() - before
            );
        }
    }
    drop(posting);
    eprintln!(
        "   round {}: {} apps posted in {:.1} s",
        round + 1,
        a.apps,
        started.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let n = sims.seen().len() - before;
        if n >= want {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "round {}: {n} of {want} tasks launched after 30 minutes",
            round + 1
        );
        if progress.elapsed() > Duration::from_secs(5) {
            progress = Instant::now();
            eprintln!(
                "   round {}: {n} of {want} tasks launched after {:.0} s",
                round + 1,
                started.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (m1, b1) = cpu(&pids);
    let elections = cluster
        .term()
        .await
        .zip(term_before)
        .map_or(0, |(after, before)| after.saturating_sub(before));
    let seen = sims.seen();
    let posted = posted.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut latency = Latencies::default();
    let first = posted
        .values()
        .min()
        .copied()
        .unwrap_or_else(SystemTime::now);
    let mut last = first;
    for s in &seen[before..] {
        let app = app_of(s.spec.task_id.as_str())
            .with_context(|| format!("{} is not a Marathon task id", s.spec.task_id))?;
        let at = posted
            .get(app)
            .with_context(|| format!("{} was launched for an app not posted", s.spec.task_id))?;
        latency.push(s.running_at.duration_since(*at).unwrap_or_default());
        last = last.max(s.running_at);
    }
    let secs = last.duration_since(first).unwrap_or_default().as_secs_f64();
    eprintln!(
        "   round {}: {} tasks launched in {secs:.1} s",
        round + 1,
        seen.len() - before
    );
    Ok(Round {
        elections,
        retried: retried.into_inner(),
        placed: seen.len() - before,
        secs,
        latency,
        masters_cpu: m1 - m0,
        bench_cpu: b1 - b0,
    })
}

/// The apps whose placements break UNIQUE hostname, GROUP_BY rack (two
/// racks, used or not, differ by more than one task: every rack has
/// matching agents) or LIKE class, with why.
fn check_constraints(seen: &[Seen], racks: usize) -> Vec<String> {
    let mut by_app: HashMap<&str, Vec<usize>> = HashMap::new();
    for s in seen {
        if let Some(app) = app_of(s.spec.task_id.as_str()) {
            by_app.entry(app).or_default().push(s.agent);
        }
    }
    let mut broken = Vec::new();
    for (app, agents) in by_app {
        let distinct: HashSet<usize> = agents.iter().copied().collect();
        if distinct.len() != agents.len() {
            broken.push(format!("{app}: two instances on one host"));
        }
        let mut per_rack: HashMap<String, usize> =
            (0..racks).map(|r| (format!("r{r}"), 0)).collect();
        for &i in &agents {
            let attrs = attributes(i, racks);
            if attrs.get("class").is_some_and(|c| c == "storage") {
                broken.push(format!("{app}: an instance on storage agent sim-{i}"));
            }
            if let Some(r) = attrs.get("rack") {
                *per_rack.entry(r.clone()).or_default() += 1;
            }
        }
        let most = per_rack.values().max().copied().unwrap_or(0);
        let fewest = per_rack.values().min().copied().unwrap_or(0);
        if most > fewest + 1 {
            broken.push(format!(
                "{app}: racks hold {fewest} to {most} instances (GROUP_BY)"
            ));
        }
    }
    broken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rack_has_agents_of_each_class() {
        let classes: HashSet<(String, String)> = (0..150)
            .map(|i| {
                let a = attributes(i, 50);
                (a["rack"].clone(), a["class"].clone())
            })
            .collect();
        assert_eq!(classes.len(), 150);
    }

    #[test]
    fn the_checker_names_each_broken_rule() {
        let spec = |task: &str| {
            wasmos_core::TaskSpec::shell(
                wasmos_core::TaskId::new(task).expect("a task id"),
                "true",
                wasmos_core::Resources::default(),
            )
        };
        let seen = |task: &str, agent: usize| Seen {
            spec: spec(task),
            agent,
            running_at: SystemTime::now(),
        };
        // Agents 0 and 1 are racks r0 and r1 (compute); 100 is r0 storage.
        let ok = [seen("a.instance-1", 0), seen("a.instance-2", 1)];
        assert!(check_constraints(&ok, 50).is_empty());
        let twice = [seen("a.instance-1", 0), seen("a.instance-2", 0)];
        assert!(check_constraints(&twice, 50)[0].contains("one host"));
        let storage = [seen("a.instance-1", 100)];
        assert!(check_constraints(&storage, 50)[0].contains("storage"));
        let uneven = [
            seen("a.instance-1", 0),
            seen("a.instance-2", 50),
            seen("a.instance-3", 1),
            seen("a.instance-4", 51),
            seen("a.instance-5", 150),
            seen("a.instance-6", 2),
        ];
        // r0 holds 3 (0, 50, 150), r2 holds 1.
        let one_rack = [seen("a.instance-1", 0), seen("a.instance-2", 50)];
        assert!(
            check_constraints(&uneven, 50)
                .iter()
                .any(|b| b.contains("GROUP_BY"))
        );
        // Both in r0, none elsewhere: uneven, though only one rack is used.
        assert!(
            check_constraints(&one_rack, 50)
                .iter()
                .any(|b| b.contains("GROUP_BY"))
        );
    }
}
