//! `wasmos-bench frameworks`: external frameworks on Mesos' v1 scheduler
//! API (JSON over TLS, as a framework speaks it), against a real master on
//! simulated agents (`sim.rs`: the real agent protocol, tasks RUNNING at
//! once, no processes):
//!
//! - round trip: an offer seen by the framework → ACCEPT with one task →
//!   TASK_RUNNING seen by the framework, one launch after another;
//! - offers per second to 100 subscribed frameworks that decline every
//!   offer (refuse_seconds 0), at the allocation interval given;
//! - DRF convergence: how long after a second framework subscribes to a
//!   cluster the first one fills (tasks end and are relaunched) until the
//!   second holds at least 90 % of the first's share.
//!
//! Mesos cannot run on this machine (no package, no image can be pulled),
//! so there is no peer in the same run; BENCHMARKS.md says so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::launch::spawn_daemon;
use crate::sim::SimAgents;
use crate::stats::Latencies;

#[derive(Debug, clap::Args)]
pub struct FrameworksArgs {
    /// Launches timed one after another for the round trip (0: skip it).
    #[arg(long, default_value_t = 300)]
    launches: usize,
    /// Subscribed frameworks for the offer rate (0: skip it).
    #[arg(long, default_value_t = 100)]
    frameworks: usize,
    /// Simulated agents for the offer rate.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Seconds to count offers.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// DRF convergence measurements (each on a fresh master).
    #[arg(long, default_value_t = 1)]
    convergences: usize,
    /// The master's --allocation-interval-ms for the offer rate.
    #[arg(long, default_value_t = 10)]
    allocation_interval_ms: u64,
    /// The wasmos binary (default: next to this one).
    #[arg(long)]
    pub wasmos: Option<PathBuf>,
}

/// A framework subscribed to a master, with its events.
pub(crate) struct Framework {
    http: reqwest::Client,
    url: String,
    id: String,
    stream_id: String,
    pub(crate) events: mpsc::UnboundedReceiver<Value>,
}

impl Framework {
    pub(crate) async fn subscribe(
        http: &reqwest::Client,
        master: &str,
        name: &str,
    ) -> anyhow::Result<Self> {
        let url = format!("{master}/api/v1/scheduler");
        let resp = http
            .post(&url)
            .json(&json!({"type": "SUBSCRIBE", "subscribe": {"framework_info":
                {"user": "", "name": name, "failover_timeout": 0}}}))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("SUBSCRIBE answered {}", resp.status());
        }
        let stream_id = resp
            .headers()
            .get("mesos-stream-id")
            .and_then(|v| v.to_str().ok())
            .context("no Mesos-Stream-Id")?
            .to_string();
        let (tx, mut events) = mpsc::unbounded_channel();
        let mut body = resp.bytes_stream();
        tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.extend_from_slice(&chunk);
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let Some(len) = std::str::from_utf8(&buf[..nl])
                        .ok()
                        .and_then(|s| s.parse::<usize>().ok())
                    else {
                        return;
                    };
                    if buf.len() < nl + 1 + len {
                        break;
                    }
                    let record: Vec<u8> = buf.drain(..nl + 1 + len).skip(nl + 1).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&record)
                        && tx.send(v).is_err()
                    {
                        return;
                    }
                }
            }
        });
        let first = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .ok()
            .flatten()
            .context("no SUBSCRIBED")?;
        let id = first["subscribed"]["framework_id"]["value"]
            .as_str()
            .with_context(|| format!("not SUBSCRIBED: {first}"))?
            .to_string();
        Ok(Framework {
            http: http.clone(),
            url,
            id,
            stream_id,
            events,
        })
    }

    pub(crate) async fn call(&self, mut call: Value) -> anyhow::Result<()> {
        call["framework_id"] = json!({ "value": self.id });
        let r = self
            .http
            .post(&self.url)
            .header("mesos-stream-id", &self.stream_id)
            .timeout(Duration::from_secs(30))
            .json(&call)
            .send()
            .await?;
        if r.status().as_u16() != 202 {
            bail!(
                "{} answered {}: {}",
                call["type"],
                r.status(),
                r.text().await?
            );
        }
        Ok(())
    }

    async fn next(&mut self) -> anyhow::Result<Value> {
        tokio::time::timeout(Duration::from_secs(30), self.events.recv())
            .await
            .ok()
            .flatten()
            .context("no event within 30 s")
    }

    /// Acknowledges an update that carries a uuid.
    pub(crate) async fn ack(&self, status: &Value) -> anyhow::Result<()> {
        if status.get("uuid").is_none() {
            return Ok(());
        }
        self.call(json!({"type": "ACKNOWLEDGE", "acknowledge": {
            "agent_id": status["agent_id"], "task_id": status["task_id"], "uuid": status["uuid"]}}))
            .await
    }
}

fn task(id: &str, agent: &Value, cpus: f64) -> Value {
    json!({"name": id, "task_id": {"value": id}, "agent_id": agent,
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
                      {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}],
        "command": {"value": "sleep 3600"}})
}

/// A master with `agents` simulated agents of `cpus` each, their tasks
/// lasting `lifetime`.
pub(crate) struct Rig {
    pub(crate) dir: tempfile::TempDir,
    master: tokio::process::Child,
    /// The master's arguments, to start it again.
    args: Vec<String>,
    pub(crate) sims: SimAgents,
    pub(crate) url: String,
    pub(crate) http: reqwest::Client,
}

impl Rig {
    /// The master's process id.
    pub(crate) fn master_pid(&self) -> Option<u32> {
        self.master.id()
    }

    /// Stops the master as an operator would (SIGINT) and starts it again
    /// on its data dir; returns its new URL (the simulated agents keep the
    /// old one).
    pub(crate) async fn restart_master(&mut self, bin: &Path) -> anyhow::Result<String> {
        if let Some(pid) = self.master.id() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGINT,
            )?;
        }
        tokio::time::timeout(Duration::from_secs(60), self.master.wait())
            .await
            .context("the master did not stop within 60 s of SIGINT")??;
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let (master, url) =
            spawn_daemon(bin, &args, &self.dir.path().join("master"), "master").await?;
        self.master = master;
        Ok(url)
    }
}

pub(crate) async fn rig(
    bin: &Path,
    agents: usize,
    cpus: f64,
    lifetime: Duration,
    interval_ms: u64,
) -> anyhow::Result<Rig> {
    let resources = agent_resources(cpus)?;
    rig_with(
        bin,
        agents,
        resources,
        lifetime,
        interval_ms,
        &[],
        async |_| {},
    )
    .await
}

/// A simulated agent of `cpus` with room for any memory and disk.
pub(crate) fn agent_resources(cpus: f64) -> anyhow::Result<wasmos_core::Resources> {
    crate::sim::resources(cpus, 1e6, 1e6)
}

/// [`rig`] with more master arguments; `started` sees the master's pid
/// before any agent registers.
pub(crate) async fn rig_with(
    bin: &Path,
    agents: usize,
    resources: wasmos_core::Resources,
    lifetime: Duration,
    interval_ms: u64,
    extra: &[String],
    started: impl AsyncFnOnce(Option<u32>),
) -> anyhow::Result<Rig> {
    std::fs::create_dir_all("/var/tmp")?;
    let mut dir = tempfile::tempdir_in("/var/tmp")?;
    if std::env::var_os("WASMOS_BENCH_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("   data and log kept in {}", dir.path().display());
    }
    let pki = crate::pki::Pki::create(&dir.path().join("tls"))?;
    let mut args = vec![
        "master".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--allocation-interval-ms".into(),
        interval_ms.to_string(),
    ];
    args.extend(pki.master_args());
    args.extend(extra.iter().cloned());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (master, url) = spawn_daemon(bin, &argv, &dir.path().join("master"), "master").await?;
    started(master.id()).await;
    // No overall timeout: a subscription's answer never ends (calls set
    // their own).
    let http = pki
        .client()?
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let sims = SimAgents::start(&url, &pki, agents, resources, lifetime).await?;
    Ok(Rig {
        dir,
        master,
        args,
        sims,
        url,
        http,
    })
}

pub async fn run(a: FrameworksArgs, bin: PathBuf) -> anyhow::Result<()> {
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release -p wasmos`, or pass --wasmos",
        bin.display()
    );
    println!("| measure | result |");
    println!("|---|---|");
    if a.launches > 0 {
        eprintln!(
            "== round trip: offer seen → ACCEPT → TASK_RUNNING seen, {} launches",
            a.launches
        );
        let mut rt = round_trip(&bin, a.launches).await?;
        println!(
            "| round trip, offer seen → TASK_RUNNING seen ({} launches) | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms |",
            rt.len(),
            rt.percentile(50.0),
            rt.percentile(99.0),
            rt.max()
        );
    }
    if a.frameworks > 0 {
        eprintln!(
            "== offers per second to {} frameworks on {} agents (allocation interval {} ms)",
            a.frameworks, a.agents, a.allocation_interval_ms
        );
        let rate = offer_rate(&bin, &a).await?;
        println!(
            "| offers/s to {} frameworks declining everything, {} agents, allocation every {} ms | {:.0} |",
            a.frameworks, a.agents, a.allocation_interval_ms, rate
        );
    }
    for _ in 0..a.convergences {
        eprintln!("== DRF convergence after a second framework joins");
        let conv = convergence(&bin).await?;
        println!(
            "| second framework joins a full cluster (20 agents × 4 cpus, 1-cpu tasks of 2 s): time until the second holds 90 % of the first's share | {conv:.1} s |"
        );
    }
    Ok(())
}

async fn round_trip(bin: &Path, launches: usize) -> anyhow::Result<Latencies> {
    let r = rig(bin, 10, 64.0, Duration::from_secs(3600), 1000).await?;
    let res = round_trip_on(&r, launches).await;
    if res.is_err() {
        let fws: Value = r
            .http
            .get(format!("{}/api/wasmos/v1/frameworks", r.url))
            .send()
            .await?
            .json()
            .await?;
        eprintln!("   frameworks when it failed: {fws}");
    }
    res
}

async fn round_trip_on(r: &Rig, launches: usize) -> anyhow::Result<Latencies> {
    let mut fw = Framework::subscribe(&r.http, &r.url, "bench-round-trip").await?;
    let mut lat = Latencies::default();
    let mut n = 0;
    while n < launches {
        let e = fw.next().await?;
        let offers = e["offers"]["offers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(status) = e.get("update").map(|u| &u["status"]) {
            fw.ack(status).await?;
            continue;
        }
        let Some(offer) = offers.first() else {
            continue;
        };
        let seen = Instant::now();
        let id = format!("rt-{n}");
        fw.call(json!({"type": "ACCEPT", "accept": {"offer_ids": [offer["id"]],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task(&id, &offer["agent_id"], 0.1)]}}],
            "filters": {"refuse_seconds": 0}}}))
            .await?;
        let rest: Vec<Value> = offers.iter().skip(1).map(|o| o["id"].clone()).collect();
        if !rest.is_empty() {
            fw.call(json!({"type": "DECLINE", "decline": {"offer_ids": rest, "filters": {"refuse_seconds": 0}}}))
                .await?;
        }
        loop {
            let e = fw.next().await?;
            // Offers made meanwhile go back at once (held, they would
            // starve the next launch).
            if let Some(more) = e["offers"]["offers"].as_array() {
                let ids: Vec<Value> = more.iter().map(|o| o["id"].clone()).collect();
                fw.call(json!({"type": "DECLINE", "decline": {"offer_ids": ids, "filters": {"refuse_seconds": 0}}}))
                    .await?;
                continue;
            }
            let Some(status) = e.get("update").map(|u| &u["status"]) else {
                continue;
            };
            fw.ack(status).await?;
            if status["task_id"]["value"] == id.as_str() {
                match status["state"].as_str() {
                    Some("TASK_RUNNING") => break,
                    Some("TASK_STARTING" | "TASK_STAGING") => {}
                    other => bail!("{id} went {other:?}: {status}"),
                }
            }
        }
        lat.push(seen.elapsed());
        n += 1;
        if n % 50 == 0 {
            eprintln!("   {n} launches");
        }
    }
    Ok(lat)
}

async fn offer_rate(bin: &Path, a: &FrameworksArgs) -> anyhow::Result<f64> {
    let r = rig(
        bin,
        a.agents,
        8.0,
        Duration::from_secs(3600),
        a.allocation_interval_ms,
    )
    .await?;
    let count = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut handles = Vec::new();
    for i in 0..a.frameworks {
        let mut fw = Framework::subscribe(&r.http, &r.url, &format!("bench-offers-{i}")).await?;
        let (count, counting) = (count.clone(), counting.clone());
        handles.push(tokio::spawn(async move {
            while let Some(e) = fw.events.recv().await {
                let Some(offers) = e["offers"]["offers"].as_array() else {
                    continue;
                };
                if counting.load(Ordering::Relaxed) {
                    count.fetch_add(offers.len() as u64, Ordering::Relaxed);
                }
                let ids: Vec<Value> = offers.iter().map(|o| o["id"].clone()).collect();
                let _ = fw
                    .call(json!({"type": "DECLINE", "decline": {"offer_ids": ids, "filters": {"refuse_seconds": 0}}}))
                    .await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    counting.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    counting.store(false, Ordering::Relaxed);
    let n = count.load(Ordering::Relaxed);
    for h in handles {
        h.abort();
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// A greedy framework: as many 1-cpu tasks as each offer holds,
/// relaunching as tasks end;
/// `held` is how many of its tasks run.
async fn greedy(mut fw: Framework, name: &'static str, held: Arc<AtomicU64>) -> anyhow::Result<()> {
    let mut live: HashMap<String, ()> = HashMap::new();
    let mut n = 0u64;
    while let Some(e) = fw.events.recv().await {
        if let Some(status) = e.get("update").map(|u| &u["status"]) {
            fw.ack(status).await?;
            let id = status["task_id"]["value"]
                .as_str()
                .unwrap_or("")
                .to_string();
            match status["state"].as_str() {
                Some("TASK_RUNNING") => {
                    live.insert(id, ());
                }
                Some(s) if s != "TASK_STARTING" && s != "TASK_STAGING" => {
                    live.remove(&id);
                }
                _ => {}
            }
            held.store(live.len() as u64, Ordering::Relaxed);
            continue;
        }
        for offer in e["offers"]["offers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let cpus = offer["resources"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["name"] == "cpus"))
                .and_then(|r| r["scalar"]["value"].as_f64())
                .unwrap_or(0.0);
            if cpus < 1.0 {
                fw.call(json!({"type": "DECLINE", "decline": {"offer_ids": [offer["id"]], "filters": {"refuse_seconds": 0}}}))
                    .await?;
                continue;
            }
            // As many 1-cpu tasks as the offer holds: what a framework
            // holds is then what it runs.
            let tasks: Vec<Value> = (0..cpus.floor() as u64)
                .map(|_| {
                    n += 1;
                    task(&format!("{name}-{n}"), &offer["agent_id"], 1.0)
                })
                .collect();
            fw.call(
                json!({"type": "ACCEPT", "accept": {"offer_ids": [offer["id"]],
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": tasks}}],
                "filters": {"refuse_seconds": 0}}}),
            )
            .await?;
        }
    }
    Ok(())
}

/// Logs why a framework's loop stopped.
async fn report(f: impl std::future::Future<Output = anyhow::Result<()>>) {
    if let Err(e) = f.await {
        eprintln!("   a framework stopped: {e:#}");
    }
}

async fn convergence(bin: &Path) -> anyhow::Result<f64> {
    let r = rig(bin, 20, 4.0, Duration::from_secs(2), 1000).await?;
    let (ha, hb) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let a = Framework::subscribe(&r.http, &r.url, "bench-drf-a").await?;
    tokio::spawn(report(greedy(a, "a", ha.clone())));
    let full = Instant::now();
    while ha.load(Ordering::Relaxed) < 76 {
        if full.elapsed() > Duration::from_secs(60) {
            bail!("the first framework did not fill the cluster in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = Framework::subscribe(&r.http, &r.url, "bench-drf-b").await?;
    let joined = Instant::now();
    tokio::spawn(report(greedy(b, "b", hb.clone())));
    loop {
        let (x, y) = (ha.load(Ordering::Relaxed), hb.load(Ordering::Relaxed));
        if y as f64 >= 0.9 * x as f64 {
            return Ok(joined.elapsed().as_secs_f64());
        }
        if joined.elapsed() > Duration::from_secs(120) {
            bail!("shares did not converge in 120 s (a {x}, b {y})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
