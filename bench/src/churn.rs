//! `wasmos-bench churn` (B8 in perf-anchors): how fast freed resources are
//! offered again. A real master, simulated agents (`sim.rs`) each with room
//! for exactly one task, and external frameworks on Mesos' v1 scheduler API
//! (JSON over TLS) that accept every offer with one task taking all of it.
//! Tasks end after a drawn lifetime, so the cluster churns continuously.
//!
//! Measured over a window after a warm-up:
//! - freed → offered: from the agent sending a task's terminal update to
//!   the next offer of that agent reaching a framework (one agent holds one
//!   task, so that offer is the freed resources); and the part of it spent
//!   before the master acknowledged the update (its commit);
//! - accept → launch: from a framework's ACCEPT to the launch reaching the
//!   agent;
//! - fairness: each framework's mean share of the running tasks, sampled
//!   every second, against the ideal 1 / frameworks;
//! - the master's allocation cycles (its histogram) and CPU.
//!
//! Mesos cannot run on this machine (no package, no image can be pulled),
//! so its figures are the published ones (BENCHMARKS.md says so).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::frameworks::Framework;
use crate::stats::Latencies;

#[derive(Debug, clap::Args)]
pub struct ChurnArgs {
    /// Simulated agents, each with room for one task (1 CPU, 128 MiB).
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// External frameworks accepting every offer.
    #[arg(long, default_value_t = 100)]
    frameworks: usize,
    /// Mean task lifetime; lifetimes are drawn from ±`--spread` of it.
    /// 2,000 ms on 1,000 agents is at most 500 ends per second.
    #[arg(long, default_value_t = 2000)]
    lifetime_ms: u64,
    /// How far lifetimes spread around the mean (0..1).
    #[arg(long, default_value_t = 0.5)]
    spread: f64,
    /// Seconds of churn before measuring.
    #[arg(long, default_value_t = 15)]
    warmup: u64,
    /// Seconds measured (fairness is over this window).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The master's --allocation-interval-ms (its default: a freed
    /// resource wakes a cycle at once, the interval only bounds the wait
    /// otherwise).
    #[arg(long, default_value_t = 1000)]
    allocation_interval_ms: u64,
    /// The wasmos binary (default: next to this one).
    #[arg(long)]
    pub wasmos: Option<PathBuf>,
}

/// What every framework records, shared.
#[derive(Default)]
struct Log {
    /// (agent id, when an offer of it reached a framework).
    offers: Mutex<Vec<(String, Instant)>>,
    /// Task id → when its ACCEPT was sent.
    accepts: Mutex<HashMap<String, SystemTime>>,
    /// Calls the master refused or that failed, with the first error.
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Log {
    fn fail(&self, e: anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(format!("{e:#}"));
        }
    }
}

fn scalar(offer: &Value, name: &str) -> f64 {
    offer["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == name))
        .and_then(|r| r["scalar"]["value"].as_f64())
        .unwrap_or(0.0)
}

/// A framework that takes every offer whole with one task, and counts
/// its running tasks in `held`.
async fn taker(mut fw: Framework, name: String, log: Arc<Log>, held: Arc<AtomicU64>) {
    let mut events = std::mem::replace(&mut fw.events, tokio::sync::mpsc::unbounded_channel().1);
    let fw = Arc::new(fw);
    let mut running: HashSet<String> = HashSet::new();
    let mut n = 0u64;
    while let Some(e) = events.recv().await {
        if e["type"] == "ERROR" {
            log.fail(anyhow::anyhow!("{name} got an ERROR event: {e}"));
            continue;
        }
        if let Some(status) = e.get("update").map(|u| u["status"].clone()) {
            let id = status["task_id"]["value"]
                .as_str()
                .unwrap_or("")
                .to_string();
            match status["state"].as_str() {
                Some("TASK_RUNNING") => {
                    running.insert(id);
                }
                Some("TASK_STARTING" | "TASK_STAGING") => {}
                Some("TASK_FINISHED") => {
                    running.remove(&id);
                }
                // A launch refused after its ACCEPT, or a task lost: the
                // run is not what it measures.
                other => {
                    log.fail(anyhow::anyhow!(
                        "{id} went {}: {}",
                        other.unwrap_or("?"),
                        status["message"]
                    ));
                    running.remove(&id);
                }
            }
            held.store(running.len() as u64, Ordering::Relaxed);
            let (fw, log) = (fw.clone(), log.clone());
            tokio::spawn(async move {
                if let Err(e) = fw.ack(&status).await {
                    log.fail(e);
                }
            });
            continue;
        }
        let Some(offers) = e["offers"]["offers"].as_array() else {
            continue;
        };
        let now = Instant::now();
        for offer in offers {
            let agent = offer["agent_id"]["value"]
                .as_str()
                .unwrap_or("")
                .to_string();
            log.offers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((agent, now));
            n += 1;
            let id = format!("{name}-{n}");
            let task = json!({"name": id, "task_id": {"value": id}, "agent_id": offer["agent_id"],
                "resources": [
                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": scalar(offer, "cpus")}},
                    {"name": "mem", "type": "SCALAR", "scalar": {"value": scalar(offer, "mem")}}],
                "command": {"value": "sleep 1"}});
            let call = json!({"type": "ACCEPT", "accept": {"offer_ids": [offer["id"]],
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}}],
                "filters": {"refuse_seconds": 0}}});
            log.accepts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, SystemTime::now());
            let (fw, log) = (fw.clone(), log.clone());
            tokio::spawn(async move {
                if let Err(e) = fw.call(call).await {
                    log.fail(e);
                }
            });
        }
    }
    // Aborted at the end of the run, so an end here is the stream's.
    log.fail(anyhow::anyhow!("{name}'s event stream ended"));
}

pub async fn run(a: ChurnArgs, bin: PathBuf) -> anyhow::Result<()> {
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release -p wasmos`, or pass --wasmos",
        bin.display()
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.spread),
        "--spread must be within 0..1"
    );
    anyhow::ensure!(
        a.agents > 0 && a.frameworks > 0,
        "--agents and --frameworks must be > 0"
    );
    eprintln!(
        "== B8: {} agents (one task each), {} frameworks accepting every offer, lifetimes {} ms ± {:.0} %",
        a.agents,
        a.frameworks,
        a.lifetime_ms,
        a.spread * 100.0
    );
    let one_task = crate::sim::resources(1.0, 128.0, 0.0)?;
    let rig = crate::frameworks::rig_with(
        &bin,
        a.agents,
        one_task,
        Duration::from_millis(a.lifetime_ms),
        a.allocation_interval_ms,
        &[],
        async |_| {},
    )
    .await?;
    rig.sims.set_lifetime_spread(a.spread);
    crate::marathon::wait_agents(&rig.http, &rig.url, a.agents).await?;
    eprintln!("   {} agents registered", a.agents);

    let log = Arc::new(Log::default());
    let mut held = Vec::new();
    let mut loops = Vec::new();
    for i in 0..a.frameworks {
        let name = format!("b8-{i}");
        let fw = Framework::subscribe(&rig.http, &rig.url, &name)
            .await
            .with_context(|| format!("subscribing framework {name}"))?;
        let h = Arc::new(AtomicU64::new(0));
        held.push(h.clone());
        loops.push(tokio::spawn(taker(fw, name, log.clone(), h)));
    }
    eprintln!(
        "   {} frameworks subscribed; warming up {} s",
        a.frameworks, a.warmup
    );
    tokio::time::sleep(Duration::from_secs(a.warmup)).await;

    let pid = rig.master_pid().context("the master has exited")?;
    let cycles_before = crate::scale::allocation_cycles(&rig.http, &rig.url)
        .await?
        .0;
    let cpu_before = crate::cpu_ticks(pid);
    let bench_before = crate::cpu_ticks(std::process::id());
    let t0 = Instant::now();
    let w0 = SystemTime::now();
    let mut sums = vec![0u64; a.frameworks];
    let mut samples = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    for s in 0..a.seconds {
        tick.tick().await;
        for (sum, h) in sums.iter_mut().zip(&held) {
            *sum += h.load(Ordering::Relaxed);
        }
        samples += 1;
        if (s + 1) % 10 == 0 {
            eprintln!("   {} s measured", s + 1);
        }
    }
    let t1 = Instant::now();
    let w1 = SystemTime::now();
    let window = t1.duration_since(t0).as_secs_f64();
    let cpu = (crate::cpu_ticks(pid) - cpu_before) as f64 / 100.0;
    let bench_cpu = (crate::cpu_ticks(std::process::id()) - bench_before) as f64 / 100.0;
    let (cycles_after, p50, p99) = crate::scale::allocation_cycles(&rig.http, &rig.url).await?;
    // Offers of the window's last ends arrive after it (an end offered
    // later than this counts as not offered again).
    tokio::time::sleep(Duration::from_secs(5)).await;
    for l in &loops {
        l.abort();
    }

    // freed → offered: the first offer of the agent after its update.
    let mut by_agent: HashMap<String, Vec<Instant>> = HashMap::new();
    for (agent, at) in log.offers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        by_agent.entry(agent.clone()).or_default().push(*at);
    }
    for v in by_agent.values_mut() {
        v.sort();
    }
    let (mut offered, mut committed) = (Latencies::default(), Latencies::default());
    // From the master's answer to the update (it has applied it; the offer
    // may even reach the framework first).
    let (mut after_ack, mut before_ack) = (Latencies::default(), 0);
    let mut never = 0;
    // The longest waits, to say when and where they were.
    let mut slowest: Vec<(Duration, Duration, crate::sim::Freed)> = Vec::new();
    let freed: Vec<_> = rig
        .sims
        .freed()
        .into_iter()
        .filter(|f| f.sent >= t0 && f.sent < t1)
        .collect();
    for f in &freed {
        committed.push(f.acked.duration_since(f.sent));
        let next = rig
            .sims
            .agent_id(f.agent)
            .and_then(|id| by_agent.get(id.as_str()))
            .and_then(|v| {
                let i = v.partition_point(|t| *t <= f.sent);
                v.get(i).copied()
            });
        match next {
            Some(at) => {
                offered.push(at.duration_since(f.sent));
                slowest.push((at.duration_since(f.sent), f.sent.duration_since(t0), *f));
                match at.checked_duration_since(f.acked) {
                    Some(d) => after_ack.push(d),
                    None => before_ack += 1,
                }
            }
            None => never += 1,
        }
    }
    slowest.sort_by_key(|s| std::cmp::Reverse(s.0));
    for (wait, when, f) in slowest.iter().take(8) {
        eprintln!(
            "   a long wait: {:.0} ms for agent {} (its end sent {:.1} s into the window, acknowledged after {:.0} ms)",
            wait.as_secs_f64() * 1000.0,
            f.agent,
            when.as_secs_f64(),
            f.acked.duration_since(f.sent).as_secs_f64() * 1000.0
        );
    }
    // accept → the launch at the agent.
    let mut launched = Latencies::default();
    {
        let accepts = log.accepts.lock().unwrap_or_else(|p| p.into_inner());
        for s in rig.sims.seen() {
            if s.running_at < w0 || s.running_at >= w1 {
                continue;
            }
            if let Some(sent) = accepts.get(s.spec.task_id.as_str())
                && let Ok(d) = s.running_at.duration_since(*sent)
            {
                launched.push(d);
            }
        }
    }
    // Fairness: each framework's mean share of what runs.
    let means: Vec<f64> = sums.iter().map(|s| *s as f64 / samples as f64).collect();
    let total: f64 = means.iter().sum();
    let ideal = 1.0 / a.frameworks as f64;
    let shares: Vec<f64> = means
        .iter()
        .map(|m| m / total.max(f64::MIN_POSITIVE))
        .collect();
    let lo = shares.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = shares.iter().copied().fold(0.0, f64::max);
    let mut ranked: Vec<(f64, usize)> = shares.iter().copied().zip(0..).collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    let names = |r: &[(f64, usize)]| {
        r.iter()
            .map(|(s, i)| format!("b8-{i} {:.2} %", s * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    };
    eprintln!(
        "   highest shares: {}; lowest: {}",
        names(&ranked[..ranked.len().min(5)]),
        names(&ranked[ranked.len().saturating_sub(5)..])
    );
    let worst = shares
        .iter()
        .map(|s| (s - ideal).abs() / ideal * 100.0)
        .fold(0.0, f64::max);
    let failed = log.failed.load(Ordering::Relaxed);
    let gave_up = rig.sims.gave_up();

    println!(
        "| B8: 1 master, {} agents, {} frameworks, lifetimes {} ms ± {:.0} %, {} s window | result |",
        a.agents,
        a.frameworks,
        a.lifetime_ms,
        a.spread * 100.0,
        a.seconds
    );
    println!("|---|---|");
    println!(
        "| churn: task ends acknowledged per second | {:.0}/s ({} in {window:.1} s) |",
        freed.len() as f64 / window,
        freed.len()
    );
    println!(
        "| freed → offered (terminal update sent → next offer of that agent at a framework) | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} ends; {never} not offered again) |",
        offered.percentile(50.0),
        offered.percentile(99.0),
        offered.max(),
        offered.len()
    );
    println!(
        "| of which the update's commit (sent → acknowledged) | p50 {:.1} ms, p99 {:.1} ms |",
        committed.percentile(50.0),
        committed.percentile(99.0)
    );
    println!(
        "| freed → offered, from the master's answer to the update | p50 {:.1} ms, p99 {:.1} ms ({before_ack} offers reached a framework before the answer reached the agent, counted apart) |",
        after_ack.percentile(50.0),
        after_ack.percentile(99.0)
    );
    println!(
        "| accept → launch at the agent | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} launches) |",
        launched.percentile(50.0),
        launched.percentile(99.0),
        launched.max(),
        launched.len()
    );
    println!(
        "| fairness: frameworks' mean share of running tasks (ideal {:.2} %) | {:.2} – {:.2} %, worst {:.1} % off ideal; {total:.0} tasks running on average |",
        ideal * 100.0,
        lo * 100.0,
        hi * 100.0,
        worst
    );
    println!(
        "| allocation cycles in the window; all cycles' p50 / p99 (bucket bounds) | {:.0}; ≤ {p50} ms / ≤ {p99} ms |",
        cycles_after - cycles_before
    );
    println!(
        "| master CPU | {:.2} cores ({:.2} CPU-s per 1,000 ends) |",
        cpu / window,
        cpu / freed.len().max(1) as f64 * 1000.0
    );
    println!(
        "| this bench's CPU (agents and frameworks) | {:.2} cores |",
        bench_cpu / window
    );
    anyhow::ensure!(
        gave_up == 0,
        "{gave_up} task updates were never acknowledged by the master"
    );
    if failed > 0 {
        anyhow::bail!(
            "{failed} framework calls failed; the first: {}",
            log.first_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_default()
        );
    }
    anyhow::ensure!(
        !freed.is_empty(),
        "no task ended in the window: nothing churned"
    );
    Ok(())
}
