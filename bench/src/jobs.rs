//! `wasmos-bench jobs`: thousands of Chronos jobs due every minute on a real
//! master with its bundled chronos framework, on simulated agents (`sim.rs`:
//! the real protocol, no processes). For each run: lateness, from the
//! instant it was due to TASK_RUNNING (when its launch reached an agent);
//! and the master's CPU time per run. Chronos itself cannot run here (it
//! needs Mesos and ZooKeeper); its known limit — falling behind at a few
//! thousand jobs — and the goal (p99 ≤ 1 s at 10,000 jobs a minute) are
//! the yardsticks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::launch::spawn_daemon;
use crate::sim::SimAgents;
use crate::stats::Latencies;

#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    /// Job counts to measure, each on a fresh master, comma-separated.
    #[arg(long, default_value = "1000,10000", value_delimiter = ',')]
    jobs: Vec<usize>,
    /// Minutes to measure each count.
    #[arg(long, default_value_t = 3)]
    minutes: u64,
    /// Simulated agents.
    #[arg(long, default_value_t = 20)]
    agents: usize,
    /// How long each run's task lasts, in seconds.
    #[arg(long, default_value_t = 2.0)]
    task_seconds: f64,
    /// Every job due at the same second of the minute, instead of spread
    /// evenly over it.
    #[arg(long)]
    burst: bool,
    /// Keep each master's data directory (and log) instead of deleting it.
    #[arg(long)]
    keep: bool,
    /// The wasmos binary (default: next to this one).
    #[arg(long)]
    pub wasmos: Option<PathBuf>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// `2026-12-02T09:30:04.250Z`.
fn iso(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// User and system CPU time of a process so far, in milliseconds.
fn cpu_ms(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // Clock ticks of 10 ms (USER_HZ is 100 on Linux).
    Ok(ticks * 10.0)
}

struct Outcome {
    jobs: usize,
    expected: usize,
    ran: usize,
    twice: usize,
    lateness: Latencies,
    cpu_per_run_ms: f64,
    cpu_share: f64,
    post_secs: f64,
}

pub async fn run(a: JobsArgs, bin: PathBuf) -> anyhow::Result<()> {
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release -p wasmos`, or pass --wasmos",
        bin.display()
    );
    let mut rows = Vec::new();
    for &n in &a.jobs {
        eprintln!(
            "== {n} jobs due every minute ({} agents, tasks of {} s)",
            a.agents, a.task_seconds
        );
        rows.push(one(&a, &bin, n).await?);
    }
    println!();
    println!(
        "| jobs/min | spread | runs due | ran | ran twice | lateness p50 | p99 | max | master CPU per run | master CPU | posting the jobs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for mut r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.2} ms | {:.0}% of a core | {:.1} s |",
            r.jobs,
            if a.burst { "burst" } else { "even" },
            r.expected,
            r.ran,
            r.twice,
            r.lateness.percentile(50.0),
            r.lateness.percentile(99.0),
            r.lateness.max(),
            r.cpu_per_run_ms,
            r.cpu_share * 100.0,
            r.post_secs,
        );
    }
    Ok(())
}

async fn one(a: &JobsArgs, bin: &Path, n: usize) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all("/var/tmp")?;
    let base = tempfile::tempdir_in("/var/tmp")?;
    let pki = crate::pki::Pki::create(&base.path().join("tls"))?;
    let mut args = vec![
        "master".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(pki.master_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (master, url) = spawn_daemon(bin, &args, &base.path().join("master"), "master").await?;
    let pid = master.id().context("the master's pid")?;
    let http = pki.client()?.timeout(Duration::from_secs(60)).build()?;
    wait_chronos(&http, &url).await?;
    let resources = crate::sim::resources(64.0, 65536.0, 1e6)?;
    let sims = SimAgents::start(
        &url,
        &pki,
        a.agents,
        resources,
        Duration::from_secs_f64(a.task_seconds),
    )
    .await?;

    // The first occurrences fall a minute after the next whole minute, so
    // posting is done before anything is due.
    let first = (now_ms() / 60_000 + 2) * 60_000;
    let posted_at = std::time::Instant::now();
    post_jobs(&http, &url, n, first, a.burst).await?;
    let post_secs = posted_at.elapsed().as_secs_f64();
    eprintln!(
        "   posted {n} jobs in {post_secs:.1} s; first runs due at {}",
        iso(first)
    );
    anyhow::ensure!(
        now_ms() < first,
        "posting took past the first due instant; measure fewer jobs or fewer at once"
    );
    let window = a.minutes * 60_000;
    sleep_until(first).await;
    let cpu0 = cpu_ms(pid)?;
    for m in 1..=a.minutes {
        sleep_until(first + m * 60_000).await;
        let done = sims.seen().len();
        eprintln!("   minute {m}: {done} runs launched so far");
    }
    let cpu1 = cpu_ms(pid)?;
    // Let the last runs' launches arrive.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let mut per_due: BTreeMap<(String, u64), usize> = BTreeMap::new();
    let mut lateness = Latencies::default();
    // The worst lateness of each second of the window: a stall shows here.
    let mut worst: BTreeMap<u64, u64> = BTreeMap::new();
    for s in sims.seen() {
        let due = s
            .spec
            .command
            .env
            .get("CHRONOS_JOB_RUN_TIME")
            .and_then(|v| v.parse::<u64>().ok());
        let job = s
            .spec
            .labels
            .get("chronos.job")
            .cloned()
            .unwrap_or_default();
        let Some(due) = due else { continue };
        if due < first || due >= first + window {
            continue;
        }
        *per_due.entry((job, due)).or_default() += 1;
        let at = s
            .running_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        lateness.push(Duration::from_millis(at.saturating_sub(due)));
        let w = worst.entry((due - first) / 1000).or_default();
        *w = (*w).max(at.saturating_sub(due));
    }
    let slow: Vec<String> = worst
        .iter()
        .filter(|(_, ms)| **ms > 1000)
        .map(|(s, ms)| format!("{s}s:{ms}ms"))
        .collect();
    if !slow.is_empty() {
        eprintln!(
            "   seconds of the window with a run over 1 s late: {}",
            slow.join(" ")
        );
    }
    let expected = n * a.minutes as usize;
    let ran = per_due.len();
    let twice = per_due.values().filter(|c| **c > 1).count();
    let cpu_per_run_ms = if ran > 0 {
        (cpu1 - cpu0) / ran as f64
    } else {
        0.0
    };
    drop(sims);
    drop(master);
    let master_log = base.path().join("master/master.log");
    if a.keep {
        let kept = base.keep();
        eprintln!("   data and log kept in {}", kept.display());
    }
    if ran == 0 {
        bail!("no run was launched; see {}", master_log.display());
    }
    Ok(Outcome {
        jobs: n,
        expected,
        ran,
        twice,
        lateness,
        cpu_per_run_ms,
        cpu_share: (cpu1 - cpu0) / window as f64,
        post_secs,
    })
}

async fn sleep_until(ms: u64) {
    let now = now_ms();
    if ms > now {
        tokio::time::sleep(Duration::from_millis(ms - now)).await;
    }
}

async fn wait_chronos(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let fws: Value = match http
            .get(format!("{url}/api/wasmos/v1/frameworks"))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let active = |id: &str| {
            fws.as_array()
                .is_some_and(|f| f.iter().any(|f| f["id"] == id && f["active"] == true))
        };
        if ["chronos", "exec", "marathon"].iter().all(|id| active(id)) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("the chronos framework did not start on {url}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Posts `n` jobs every minute from `first` (spread evenly over the minute,
/// or all at once), 32 at a time.
async fn post_jobs(
    http: &reqwest::Client,
    url: &str,
    n: usize,
    first: u64,
    burst: bool,
) -> anyhow::Result<()> {
    let bodies: Vec<Value> = (0..n)
        .map(|i| {
            let offset = if burst {
                0
            } else {
                (i as u64 * 60_000) / n as u64
            };
            json!({
                "name": format!("bench-{i:05}"),
                "command": "true",
                "owner": "",
                "disabled": false,
                "cpus": 0.01,
                "mem": 1,
                "disk": 1,
                "schedule": format!("R/{}/PT1M", iso(first + offset)),
            })
        })
        .collect();
    let mut stream = futures::stream::iter(bodies.into_iter().map(|body| {
        let http = http.clone();
        let url = url.to_string();
        async move {
            for _ in 0..5 {
                let r = http
                    .post(format!("{url}/v1/scheduler/iso8601"))
                    .json(&body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 204 => return Ok(()),
                    Ok(r) if r.status().is_server_error() => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Ok(r) => {
                        let status = r.status();
                        bail!(
                            "posting {}: {status} {}",
                            body["name"],
                            r.text().await.unwrap_or_default()
                        )
                    }
                    Err(e) => bail!("posting {}: {e}", body["name"]),
                }
            }
            bail!("posting {}: the master kept answering 5xx", body["name"])
        }
    }))
    .buffer_unordered(32);
    use futures::StreamExt as _;
    while let Some(r) = stream.next().await {
        r?;
    }
    Ok(())
}
