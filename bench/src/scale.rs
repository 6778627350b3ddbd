//! `wasmos-bench scale`: one master at cluster scale (issue 19) — thousands
//! of simulated agents (`sim.rs`: the real master↔agent protocol over
//! HTTPS, no processes) running Marathon tasks. Measures, in order:
//! registering the agents; the master's memory per agent and per task;
//! Marathon's launch rate as the cluster fills; the allocation cycle (B1,
//! from the master's own `allocation_cycle_seconds` histogram) and the full
//! state (B10: Mesos' `/master/state` and the native task list) while the
//! agents heartbeat; the state on disk; and a restarted master's time to
//! serve every task again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;

use crate::stats::Latencies;

#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    /// Simulated agents (64 CPUs each).
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Tasks to run (Marathon apps of `--app-size` instances).
    #[arg(long, default_value_t = 100_000)]
    tasks: u32,
    /// Instances per Marathon app.
    #[arg(long, default_value_t = 1000)]
    app_size: u32,
    /// State queries measured per endpoint.
    #[arg(long, default_value_t = 20)]
    queries: usize,
    /// How often the agents heartbeat (the master's --heartbeat-interval-ms;
    /// 2000 is its default, Mesos pings every 15 s).
    #[arg(long, default_value_t = 2000)]
    heartbeat_ms: u64,
    /// The wasmos binary (default: next to this one).
    #[arg(long)]
    pub wasmos: Option<PathBuf>,
}

/// Resident memory of a process, in bytes.
fn rss(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return f64::NAN };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb * 1024.0)
}

/// Resident memory once it has stopped moving (start-up's compiles give
/// memory back for a while): sampled every second until five samples lie
/// within 1 MiB, or for 60 s.
async fn steady_rss(pid: Option<u32>) -> f64 {
    let mut last: Vec<f64> = Vec::new();
    for _ in 0..60 {
        last.push(rss(pid));
        if last.len() > 5 {
            last.remove(0);
        }
        let (lo, hi) = last
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if last.len() == 5 && hi - lo < 1048576.0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    last.last().copied().unwrap_or(f64::NAN)
}

/// Bytes of every file under `dir`, but for the plugin cache and logs.
fn state_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            let name = e.file_name();
            if name == "plugin-cache" || p.extension().is_some_and(|x| x == "log") {
                0
            } else if p.is_dir() {
                state_bytes(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

/// A histogram's buckets, count and sum from the master's `/metrics`.
pub(crate) async fn histogram(
    http: &reqwest::Client,
    url: &str,
    metric: &str,
) -> anyhow::Result<(Vec<prometheus_parse::HistogramCount>, f64, f64)> {
    histogram_of(http, url, metric, &[]).await
}

/// [`histogram`], of the series with these labels.
pub(crate) async fn histogram_of(
    http: &reqwest::Client,
    url: &str,
    metric: &str,
    labels: &[(&str, &str)],
) -> anyhow::Result<(Vec<prometheus_parse::HistogramCount>, f64, f64)> {
    let labelled = |l: &prometheus_parse::Labels| labels.iter().all(|(k, v)| l.get(k) == Some(*v));
    let text = http
        .get(format!("{url}/metrics"))
        // As Prometheus asks (any other Accept gets Marathon's JSON).
        .header("accept", "text/plain;version=0.0.4")
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .context("the master's /metrics is not Prometheus text")?;
    let value = |suffix: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == format!("{metric}{suffix}") && labelled(&s.labels))
            .and_then(|s| match s.value {
                prometheus_parse::Value::Untyped(v) | prometheus_parse::Value::Counter(v) => {
                    Some(v)
                }
                _ => None,
            })
    };
    let buckets = scrape
        .samples
        .iter()
        .find_map(|s| match &s.value {
            prometheus_parse::Value::Histogram(b) if s.metric == metric && labelled(&s.labels) => {
                Some(b.clone())
            }
            _ => None,
        })
        .with_context(|| {
            let short = metric.trim_start_matches("wasmos_");
            let lines: Vec<&str> = text.lines().filter(|l| l.contains(short)).collect();
            format!("no {metric} histogram in /metrics; its lines: {lines:?}")
        })?;
    let count = buckets.last().map_or(0.0, |b| b.count);
    Ok((buckets, count, value("_sum").unwrap_or(f64::NAN)))
}

/// The allocation cycles' histogram from the master's `/metrics`:
/// (cycles, p50 and p99 in ms as the upper bounds of their buckets).
pub(crate) async fn allocation_cycles(
    http: &reqwest::Client,
    url: &str,
) -> anyhow::Result<(f64, f64, f64)> {
    let (buckets, _, _) = histogram(http, url, "wasmos_allocation_cycle_seconds").await?;
    let total = buckets.last().map_or(0.0, |b| b.count);
    let at = |q: f64| {
        buckets
            .iter()
            .find(|b| b.count >= q * total)
            .map_or(f64::NAN, |b| b.less_than * 1000.0)
    };
    Ok((total, at(0.5), at(0.99)))
}

/// One GET of `path`, then `n` more one after another: the first's
/// latency (the master may keep work between answers), the others', and
/// the body's size.
async fn query(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    n: usize,
) -> anyhow::Result<(Duration, Latencies, usize)> {
    let mut l = Latencies::default();
    let mut bytes = 0;
    let mut first = None;
    for _ in 0..=n {
        let started = Instant::now();
        let r = http.get(format!("{url}{path}")).send().await?;
        anyhow::ensure!(r.status().is_success(), "GET {path}: {}", r.status());
        bytes = r.bytes().await?.len();
        match first {
            None => first = Some(started.elapsed()),
            Some(_) => l.push(started.elapsed()),
        }
    }
    Ok((first.unwrap_or_default(), l, bytes))
}

pub async fn run(a: ScaleArgs, bin: PathBuf) -> anyhow::Result<()> {
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release -p wasmos`, or pass --wasmos",
        bin.display()
    );
    let mut out = Vec::new();
    let mut row = |what: &str, v: String| {
        eprintln!("   {what}: {v}");
        out.push(format!("| {what} | {v} |"));
    };
    eprintln!(
        "== a master, {} simulated agents heartbeating every {} ms, {} Marathon tasks",
        a.agents, a.heartbeat_ms, a.tasks
    );
    let mut empty = f64::NAN;
    let extra = [
        "--heartbeat-interval-ms".to_string(),
        a.heartbeat_ms.to_string(),
        "--agent-timeout-ms".to_string(),
        (a.heartbeat_ms * 8).to_string(),
    ];
    let mut started = Instant::now();
    let mut rig = crate::frameworks::rig_with(
        &bin,
        a.agents,
        crate::frameworks::agent_resources(64.0)?,
        Duration::from_secs(24 * 3600),
        1000,
        &extra,
        async |pid| {
            // Once it has finished starting (the bundled plugins compiled).
            crate::settle("the master", &pid.into_iter().collect::<Vec<_>>()).await;
            empty = steady_rss(pid).await;
            started = Instant::now();
        },
    )
    .await?;
    crate::marathon::wait_agents(&rig.http, &rig.url, a.agents).await?;
    let registered = started.elapsed().as_secs_f64();
    row(
        "agents registered (one after another)",
        format!(
            "{} in {registered:.1} s ({:.0}/s)",
            a.agents,
            a.agents as f64 / registered
        ),
    );
    let with_agents = steady_rss(rig.master_pid()).await;
    let per_agent = (with_agents - empty) / a.agents as f64 / 1024.0;
    row(
        "master memory (resident): empty → with the agents",
        format!(
            "{:.0} MiB → {:.0} MiB ({})",
            empty / 1048576.0,
            with_agents / 1048576.0,
            if per_agent > 0.0 {
                format!("{per_agent:.1} KiB per agent")
            } else {
                "less: start-up's memory was still being given back".to_string()
            }
        ),
    );

    let mut left = a.tasks;
    let mut n = 0;
    let filling = Instant::now();
    while left > 0 {
        let size = left.min(a.app_size);
        let (running, _) =
            crate::marathon::deploy(&rig.http, &rig.url, &format!("/scale/app-{n}"), size).await?;
        left -= size;
        n += 1;
        eprintln!(
            "   app {n}: {size} tasks running after {:.1} s ({} of {} running)",
            running.as_secs_f64(),
            a.tasks - left,
            a.tasks
        );
    }
    let filled = filling.elapsed().as_secs_f64();
    row(
        "tasks launched through Marathon (apps one after another)",
        format!(
            "{} in {filled:.0} s ({:.0}/s)",
            a.tasks,
            f64::from(a.tasks) / filled
        ),
    );
    let with_tasks = steady_rss(rig.master_pid()).await;
    row(
        "master memory with the tasks",
        format!(
            "{:.0} MiB ({:.1} KiB per task)",
            with_tasks / 1048576.0,
            (with_tasks - with_agents) / f64::from(a.tasks) / 1024.0
        ),
    );
    let seen = rig.sims.seen().len();
    anyhow::ensure!(
        seen >= a.tasks as usize,
        "the simulated agents saw {seen} launches for {} tasks",
        a.tasks
    );

    let (before, _, _) = allocation_cycles(&rig.http, &rig.url).await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (cycles, p50, p99) = allocation_cycles(&rig.http, &rig.url).await?;
    row(
        "allocation cycle (B1), every cycle since the master started",
        format!(
            "p50 ≤ {p50:.2} ms, p99 ≤ {p99:.2} ms over {cycles:.0} cycles ({:.0} in the last 10 s)",
            cycles - before
        ),
    );
    for (what, path) in [
        ("Mesos `/master/state` (B10)", "/master/state"),
        ("native `/api/wasmos/v1/tasks`", "/api/wasmos/v1/tasks"),
        (
            "native tasks, a page of 500",
            "/api/wasmos/v1/tasks?per_page=500&next_token=scale",
        ),
        ("Mesos `/master/state-summary`", "/master/state-summary"),
        ("Marathon `/v2/apps`", "/v2/apps"),
    ] {
        let (first, mut l, bytes) = query(&rig.http, &rig.url, path, a.queries).await?;
        row(
            &format!("{what} while the agents heartbeat"),
            format!(
                "first {:.0} ms; then p50 {:.0} ms, p99 {:.0} ms; {:.0} KiB",
                first.as_secs_f64() * 1000.0,
                l.percentile(50.0),
                l.percentile(99.0),
                bytes as f64 / 1024.0
            ),
        );
    }
    let master_dir = rig.dir.path().join("master");
    row(
        "state on disk (raft log, snapshot, store)",
        format!("{:.1} MiB", state_bytes(&master_dir) as f64 / 1048576.0),
    );

    let stopped = Instant::now();
    let url = rig.restart_master(&bin).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let tasks: Option<Value> = match rig
            .http
            .get(format!("{url}/api/wasmos/v1/tasks"))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r.json().await.ok(),
            _ => None,
        };
        let n = tasks
            .as_ref()
            .and_then(Value::as_array)
            .map_or(0, |t| t.len());
        if n >= a.tasks as usize {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the restarted master serves {n} of {} tasks after 10 minutes",
            a.tasks
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    row(
        "master restarted (SIGINT, start on its data dir) → every task served again",
        format!("{:.1} s", stopped.elapsed().as_secs_f64()),
    );

    println!(
        "\n| one master, {} simulated agents (heartbeat {} ms), {} tasks | result |",
        a.agents, a.heartbeat_ms, a.tasks
    );
    println!("|---|---|");
    for l in out {
        println!("{l}");
    }
    Ok(())
}
