//! `wasmos-bench masters`: Wasmos' replicated masters against etcd, side by
//! side in one run, on this machine.
//!
//! Both systems run as three processes on loopback with their data on the
//! same disk (fsync on), with matching election settings. Clients are
//! closed loops, each writing a 256-byte value under its own key:
//! - Wasmos: `PUT /api/wasmos/v1/vars/bench/c<N>` (HTTP/1.1, JSON) to the
//!   leader — a write is acknowledged once a majority has it on disk;
//! - etcd: `etcdserverpb.KV/Put` over gRPC to the leader.
//!
//! Then failover: kill -9 the leader, and time until a write through any
//! survivor is acknowledged; restart the killed process, wait until it has
//! caught up, repeat.
//!
//! `wasmos-bench launch`: task launch latency and rate (see `launch.rs`).
//! `wasmos-bench marathon`: Marathon deployments of many instances (`marathon.rs`).
//! `wasmos-bench jobs`: Chronos jobs due every minute on simulated agents (`jobs.rs`, `sim.rs`).
//! `wasmos-bench faults`: long seeded fault runs with a history checker (`faults.rs`).

mod churn;
mod dashboard;
mod etcd;
mod faults;
mod frameworks;
mod http1;
mod jobs;
mod launch;
mod lb;
mod marathon;
mod pki;
mod placement;
mod scale;
mod sim;
mod stats;
mod wasmos;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::stats::{Latencies, Row};

#[derive(Debug, Parser)]
#[command(
    name = "wasmos-bench",
    about = "Benchmarks of Wasmos against its peers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replicated write path and failover: three Wasmos masters vs three etcd members.
    Masters(MastersArgs),
    /// Task launch: the agent's native and Docker paths vs crun/runc and the raw Docker API.
    Launch(launch::LaunchArgs),
    /// Marathon deployments: POST /v2/apps → every instance running, 100 and 1,000 instances.
    Marathon(marathon::MarathonArgs),
    /// Chronos jobs due every minute (1,000 and 10,000) on simulated agents: lateness and master CPU per run.
    Jobs(jobs::JobsArgs),
    /// External frameworks on the Mesos v1 scheduler API: launch round trip, offers/s to 100 frameworks, DRF convergence.
    Frameworks(frameworks::FrameworksArgs),
    /// The dashboard's Overview in headless Chromium with 1,000 simulated agents and 10,000 tasks: first render, bytes per refresh.
    Dashboard(dashboard::DashboardArgs),
    /// The agents' load balancer (a Marathon app's VIP) vs Debian's haproxy and a direct connection: latency and connections/s.
    Lb(lb::LbArgs),
    /// One master at cluster scale: 10,000 simulated agents and 100,000 Marathon tasks — memory per agent and task, allocation cycle (B1), full state (B10), restart.
    Scale(scale::ScaleArgs),
    /// B2: placement throughput with constraints — replicated masters, 5,000 simulated agents, 100,000 Marathon tasks with UNIQUE/GROUP_BY/LIKE.
    Placement(placement::PlacementArgs),
    /// B8: offer-cycle latency — 1,000 one-task agents, 100 v1 frameworks taking every offer, tasks ending continuously: freed → offered, accept → launch, DRF fairness.
    Churn(churn::ChurnArgs),
    /// A long fault run: masters and agents on hosts of their own, a seeded nemesis, a recorded history and its checker; exits 1 on a violation.
    Faults(faults::FaultsArgs),
    /// (Used by `lb`.) A minimal HTTP/1.0 server: the backend task.
    #[command(hide = true)]
    LbBackend(lb::BackendArgs),
}

#[derive(Debug, clap::Args)]
pub struct MastersArgs {
    /// Concurrent clients to measure, comma-separated.
    #[arg(long, default_value = "1,16,256", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Seconds to measure each client count (after a 2 s warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Leader kills for the failover measurement.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Where the systems keep their data (default: a temp dir under /var/tmp,
    /// on disk).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The wasmos binary (default: next to this one).
    #[arg(long)]
    wasmos: Option<PathBuf>,
    /// The etcd binary (Debian: `apt-get install etcd-server`).
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
    /// Measure Wasmos only.
    #[arg(long)]
    skip_etcd: bool,
    /// Also measure masters started with --insecure (plain HTTP), to see
    /// what TLS costs.
    #[arg(long)]
    insecure_too: bool,
    /// With --insecure-too: run both clusters side by side and measure this
    /// many TLS/--insecure pairs per client count, alternating which goes
    /// first, then report the medians (this VM's noise between runs is far
    /// larger than the difference being measured).
    #[arg(long, default_value_t = 0)]
    pairs: usize,
    /// Raft election timeout (ms) for both systems (etcd: heartbeat a fifth of it, its minimum ratio).
    #[arg(long, default_value_t = 150)]
    election_timeout_ms: u64,
    /// Each master's `--worker-threads` (0: its default, one per core).
    #[arg(long, default_value_t = 0)]
    wasmos_worker_threads: u16,
    /// Each etcd member's GOMAXPROCS (0: its default, one per core).
    #[arg(long, default_value_t = 0)]
    etcd_gomaxprocs: u16,
}

/// The value every write carries.
pub const VALUE_BYTES: usize = 256;

/// A three-process cluster under test.
pub trait System {
    fn name(&self) -> &'static str;
    /// A client that writes to the leader.
    fn writer(
        &self,
        clients: usize,
    ) -> impl std::future::Future<Output = anyhow::Result<Box<dyn Writer>>>;
    /// Kills the leader (SIGKILL); returns its index.
    fn kill_leader(&mut self) -> impl std::future::Future<Output = anyhow::Result<usize>>;
    /// One write through any live member, with a short timeout.
    fn probe_write(&self, n: u64) -> impl std::future::Future<Output = bool>;
    /// Restarts member `i` and waits until it follows the leader again.
    fn restart(&mut self, i: usize) -> impl std::future::Future<Output = anyhow::Result<()>>;
    /// Raft log entries so far (to count writes per entry), if known.
    fn log_index(&self) -> impl std::future::Future<Output = Option<u64>>;
    /// The process ids of the running members.
    fn pids(&self) -> Vec<u32>;
}

/// Writes key `client` with a value; returns when acknowledged.
pub trait Writer: Send + Sync {
    fn write<'a>(
        &'a self,
        client: usize,
        value: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send + 'a>>;
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Masters(a) => masters(a).await,
            Command::Launch(a) => {
                let bin = wasmos_bin(a.wasmos.clone())?;
                launch::run(a, bin).await
            }
            Command::Marathon(a) => {
                let bin = wasmos_bin(a.wasmos.clone())?;
                marathon::run(a, bin).await
            }
            Command::Jobs(a) => {
                let bin = wasmos_bin(a.wasmos.clone())?;
                jobs::run(a, bin).await
            }
            Command::Frameworks(a) => {
                let bin = wasmos_bin(a.wasmos.clone())?;
                frameworks::run(a, bin).await
            }
            Command::Dashboard(a) => {
                let bin = wasmos_bin(a.wasmos.clone())?;
                dashboard::run(a, bin).await
            }
            Command::Lb(a) => {
                let bin = wasmos_bin(a.wasmos.clone())?;
                lb::run(a, bin).await
            }
            Command::Scale(a) => {
                let bin = wasmos_bin(a.wasmos.clone())?;
                scale::run(a, bin).await
            }
            Command::Placement(a) => {
                let bin = wasmos_bin(a.wasmos.clone())?;
                placement::run(a, bin).await
            }
            Command::Churn(a) => {
                let bin = wasmos_bin(a.wasmos.clone())?;
                churn::run(a, bin).await
            }
            Command::Faults(a) => {
                let bin = wasmos_bin(a.wasmos.clone())?;
                faults::run(a, bin).await
            }
            Command::LbBackend(a) => lb::backend(a).await,
        }
    })
}

/// The wasmos binary given, or the one next to this one.
fn wasmos_bin(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(b) => Ok(b),
        None => default_wasmos(),
    }
}

/// The wasmos binary next to this one.
fn default_wasmos() -> anyhow::Result<PathBuf> {
    std::env::current_exe()?
        .parent()
        .map(|d| d.join("wasmos"))
        .ok_or_else(|| anyhow::anyhow!("cannot find the wasmos binary; pass --wasmos"))
}

async fn masters(a: MastersArgs) -> anyhow::Result<()> {
    let base = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::tempdir_in(d)?
        }
        None => {
            std::fs::create_dir_all("/var/tmp")?;
            tempfile::tempdir_in("/var/tmp")?
        }
    };
    eprintln!("data under {} (on disk; fsync on)", base.path().display());
    let mut rows: Vec<Row> = Vec::new();
    let mut failovers: Vec<(String, Latencies)> = Vec::new();

    let wasmos_bin = wasmos_bin(a.wasmos.clone())?;
    if a.insecure_too && a.pairs > 0 {
        return tls_pairs(&wasmos_bin, base.path(), &a).await;
    }
    let modes: &[bool] = if a.insecure_too {
        &[true, false]
    } else {
        &[true]
    };
    for &tls in modes {
        eprintln!(
            "== wasmos: starting three masters{}",
            if tls { "" } else { " with --insecure" }
        );
        let dir = if tls { "wasmos" } else { "wasmos-insecure" };
        let mut w = wasmos::Cluster::start(
            &wasmos_bin,
            &base.path().join(dir),
            a.election_timeout_ms,
            a.wasmos_worker_threads,
            tls,
        )
        .await?;
        rows.extend(throughput(&w, &a).await?);
        failovers.push((w.name().into(), failover(&mut w, a.kills).await?));
        w.stop().await;
    }
    if !a.skip_etcd {
        eprintln!("== etcd: starting three members");
        let mut e = etcd::Cluster::start(
            &a.etcd,
            &base.path().join("etcd"),
            a.election_timeout_ms,
            a.etcd_gomaxprocs,
        )
        .await?;
        rows.extend(throughput(&e, &a).await?);
        failovers.push((e.name().into(), failover(&mut e, a.kills).await?));
        e.stop().await;
    }

    let threads = |n: u16| match n {
        0 => "default (one per core)".to_string(),
        n => n.to_string(),
    };
    println!("\n### Committed writes, 3 members on loopback, fsync on, {VALUE_BYTES} B values\n");
    println!(
        "wasmos --worker-threads: {}; etcd GOMAXPROCS: {}\n",
        threads(a.wasmos_worker_threads),
        threads(a.etcd_gomaxprocs)
    );
    println!(
        "| system | clients | writes/s | p50 ms | p99 ms | writes per raft entry | members' CPU µs per write | load generator's CPU µs per write |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!("{r}");
    }
    if a.kills > 0 {
        println!(
            "\n### Failover: kill -9 the leader → a write is acknowledged ({} kills)\n",
            a.kills
        );
        println!("| system | p50 ms | p99 ms | max ms |");
        println!("|---|---:|---:|---:|");
        for (name, l) in &mut failovers {
            println!(
                "| {name} | {:.0} | {:.0} | {:.0} |",
                l.percentile(50.0),
                l.percentile(99.0),
                l.max()
            );
        }
    }
    let most = a.clients.iter().max().copied().unwrap_or(0);
    let at_most = rows_by_clients(&rows, most);
    if let Some(e) = at_most.iter().find(|r| r.system == "etcd") {
        for w in at_most.iter().filter(|r| r.system != "etcd") {
            println!(
                "\nat {most} clients {}/etcd throughput ratio: {:.2}×",
                w.system,
                w.writes_per_sec / e.writes_per_sec.max(f64::MIN_POSITIVE)
            );
        }
    }
    Ok(())
}

/// The process ids of the members still running.
pub fn pids_of(children: &[Option<tokio::process::Child>]) -> Vec<u32> {
    children.iter().flatten().filter_map(|c| c.id()).collect()
}

/// CPU time (user + system, in clock ticks) a process has used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name, which ends with the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at 3.
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

/// Waits until the members are idle (under a fifth of a core together
/// for three seconds in a row), so that start-up work — Wasmos masters
/// compile the bundled plugins on a fresh data dir, one after another — is
/// not measured as steady state. Three idle Wasmos masters with a 150 ms
/// election timeout use 10-15 % of a core (raft heartbeats, framework
/// ticks), so a tenth was never reached and every run waited 3 minutes.
async fn settle(name: &str, pids: &[u32]) {
    let ticks = || pids.iter().map(|p| cpu_ticks(*p)).sum::<u64>();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = ticks();
    let mut quiet = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = ticks();
        // Clock ticks are 1/100 s on Linux: 20 ticks in a second is 20 %.
        let busy = now.saturating_sub(last);
        last = now;
        if busy < 20 {
            quiet += 1;
            if quiet == 3 {
                return;
            }
            continue;
        }
        quiet = 0;
        eprintln!("   waiting for {name} to go idle: {busy} % of a core in the last second");
        if Instant::now() > deadline {
            eprintln!("   {name} is still busy after 3 minutes; measuring anyway");
            return;
        }
    }
}

fn rows_by_clients(rows: &[Row], clients: usize) -> Vec<&Row> {
    rows.iter().filter(|r| r.clients == clients).collect()
}

/// `--insecure-too --pairs N`: TLS and --insecure clusters side by side,
/// measured in alternating order, N pairs per client count.
async fn tls_pairs(bin: &Path, base: &Path, a: &MastersArgs) -> anyhow::Result<()> {
    let mut clusters = Vec::new();
    for tls in [true, false] {
        eprintln!(
            "== wasmos: starting three masters{}",
            if tls { "" } else { " with --insecure" }
        );
        let dir = if tls { "wasmos" } else { "wasmos-insecure" };
        let c = wasmos::Cluster::start(
            bin,
            &base.join(dir),
            a.election_timeout_ms,
            a.wasmos_worker_threads,
            tls,
        )
        .await?;
        clusters.push(c);
    }
    // Both compile the bundled plugins at start: wait for all six.
    let all: Vec<u32> = clusters.iter().flat_map(|c| c.pids()).collect();
    settle("both clusters", &all).await;
    println!(
        "
### TLS + auth against --insecure, side by side, {} pairs in alternating order
",
        a.pairs
    );
    println!(
        "| clients | pair | TLS writes/s | --insecure writes/s | ratio | TLS members' CPU µs/write | --insecure members' CPU µs/write |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut summary = Vec::new();
    for &clients in &a.clients {
        let mut ratios = Vec::new();
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for pair in 0..a.pairs {
            let order = if pair % 2 == 0 { [0, 1] } else { [1, 0] };
            let mut got: [Option<Row>; 2] = [None, None];
            for i in order {
                got[i] = Some(measure(&clusters[i], clients, a.seconds).await?);
            }
            let [Some(t), Some(i)] = got else {
                anyhow::bail!("a measurement is missing");
            };
            let ratio = t.writes_per_sec / i.writes_per_sec.max(f64::MIN_POSITIVE);
            println!(
                "| {clients} | {} | {:.0} | {:.0} | {ratio:.2} | {:.0} | {:.0} |",
                pair + 1,
                t.writes_per_sec,
                i.writes_per_sec,
                t.member_cpu_us,
                i.member_cpu_us
            );
            ratios.push(ratio);
            on.push(t.writes_per_sec);
            off.push(i.writes_per_sec);
        }
        summary.push((
            clients,
            median(&mut on),
            median(&mut off),
            median(&mut ratios),
        ));
    }
    println!(
        "
| clients | TLS writes/s (median) | --insecure writes/s (median) | median of the pairs' ratios |"
    );
    println!("|---:|---:|---:|---:|");
    for (clients, on, off, r) in summary {
        println!("| {clients} | {on:.0} | {off:.0} | {r:.2} |");
    }
    for mut c in clusters {
        c.stop().await;
    }
    Ok(())
}

use stats::median;

/// Closed-loop writers at each client count.
async fn throughput<S: System>(s: &S, a: &MastersArgs) -> anyhow::Result<Vec<Row>> {
    settle(s.name(), &s.pids()).await;
    let mut rows = Vec::new();
    for &clients in &a.clients {
        rows.push(measure(s, clients, a.seconds).await?);
    }
    Ok(rows)
}

/// `clients` closed-loop writers: 2 s of warm-up, then `seconds` measured.
async fn measure<S: System>(s: &S, clients: usize, seconds: u64) -> anyhow::Result<Row> {
    let value: String = "x".repeat(VALUE_BYTES);
    {
        let writer: std::sync::Arc<dyn Writer> = s.writer(clients).await?.into();
        let warmup = Duration::from_secs(2);
        let measure = Duration::from_secs(seconds);
        eprintln!(
            "   {} with {clients} clients: {} s of warm-up, then {} s measured",
            s.name(),
            warmup.as_secs(),
            measure.as_secs()
        );
        let start = Instant::now();
        let begin = start + warmup;
        let end = begin + measure;
        let mut handles = Vec::new();
        for c in 0..clients {
            let w = writer.clone();
            let v = value.clone();
            handles.push(tokio::spawn(async move {
                let mut lat = Latencies::default();
                let mut errors = 0u64;
                loop {
                    let t = Instant::now();
                    if t >= end {
                        break;
                    }
                    let ok = w.write(c, &v).await.is_ok();
                    let done = Instant::now();
                    if t >= begin && done <= end {
                        if ok {
                            lat.push(done - t);
                        } else {
                            errors += 1;
                        }
                    }
                    if !ok {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                (lat, errors)
            }));
        }
        tokio::time::sleep_until(begin.into()).await;
        let before = s.log_index().await;
        let pids = s.pids();
        let cpu_before: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
        let gen_before = cpu_ticks(std::process::id());
        tokio::time::sleep_until(end.into()).await;
        let cpu_after: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
        let gen_after = cpu_ticks(std::process::id());
        let after = s.log_index().await;
        let mut all = Latencies::default();
        let mut errors = 0;
        for h in handles {
            let (l, e) = h.await?;
            all.extend(l);
            errors += e;
        }
        let writes = all.len() as f64;
        let per_entry = match (before, after) {
            (Some(b), Some(a)) if a > b => Some(writes / (a - b) as f64),
            _ => None,
        };
        let row = Row {
            system: s.name().into(),
            clients,
            writes_per_sec: writes / measure.as_secs_f64(),
            p50_ms: all.percentile(50.0),
            p99_ms: all.percentile(99.0),
            per_entry,
            // Clock ticks are 10 ms.
            member_cpu_us: (cpu_after - cpu_before) as f64 * 10_000.0 / writes.max(1.0),
            generator_cpu_us: (gen_after - gen_before) as f64 * 10_000.0 / writes.max(1.0),
        };
        eprintln!(
            "{row}{}",
            if errors > 0 {
                format!(" ({errors} errors)")
            } else {
                String::new()
            }
        );
        Ok(row)
    }
}

/// Kill the leader `kills` times; time until a write is acknowledged.
async fn failover<S: System>(s: &mut S, kills: usize) -> anyhow::Result<Latencies> {
    let mut lat = Latencies::default();
    let mut n = 0u64;
    for k in 0..kills {
        // Settle: a write goes through before the kill.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !s.probe_write(n).await {
            n += 1;
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} did not accept writes before kill {k}",
                s.name()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let t0 = Instant::now();
        let killed = s.kill_leader().await?;
        loop {
            n += 1;
            if s.probe_write(n).await {
                break;
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(60),
                "{} elected no leader in 60 s",
                s.name()
            );
        }
        let took = t0.elapsed();
        eprintln!(
            "{} failover {}: {:.0} ms",
            s.name(),
            k + 1,
            took.as_secs_f64() * 1000.0
        );
        lat.push(took);
        s.restart(killed).await?;
    }
    Ok(lat)
}
