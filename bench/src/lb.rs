//! `wasmos-bench lb`: the agents' layer-4 load balancer (a Marathon app's
//! named VIP) against Debian's haproxy (TCP mode, round-robin) over the
//! same three backend tasks, and against connecting to a backend directly.
//!
//! The backends are tasks of this binary (`wasmos-bench lb-backend`, a
//! minimal HTTP/1.0 server) launched by Marathon on a one-agent cluster.
//! Each round measures, for each target, the round trip of one request on
//! a new connection (sequential), then connections per second with
//! `--clients` concurrent clients; rounds alternate which balancer goes
//! first, and the report gives the median of the rounds. Then it scales
//! the app up one task at a time and times how soon DNS names the new task.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::stats::{Latencies, median};

#[derive(Debug, clap::Args)]
pub struct LbArgs {
    /// Sequential requests per target and round (each on a new connection).
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Concurrent clients for the connections/s measurement.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds of the connections/s measurement, per target and round.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds (each measures every target; the report gives medians).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Scale-ups after the rounds, each timing how soon DNS names the new
    /// task.
    #[arg(long, default_value_t = 5)]
    scales: usize,
    /// The haproxy binary (Debian: `apt-get install haproxy`).
    #[arg(long, default_value = "/usr/sbin/haproxy")]
    haproxy: PathBuf,
    /// The wasmos binary (default: next to this one).
    #[arg(long)]
    pub wasmos: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct BackendArgs {
    #[arg(long)]
    port: u16,
}

/// The backend task: answers each request with a small 200 and closes.
pub async fn backend(a: BackendArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", a.port)).await?;
    loop {
        let (mut s, _) = listener.accept().await?;
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s
                .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
        });
    }
}

/// One request on a new connection; its round trip.
async fn one(addr: SocketAddr) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    if !out.starts_with(b"HTTP/1.0 200") {
        bail!("{addr} answered {:?}", String::from_utf8_lossy(&out));
    }
    Ok(t.elapsed())
}

async fn latency(addr: SocketAddr, n: usize) -> anyhow::Result<Latencies> {
    let mut l = Latencies::default();
    for _ in 0..n {
        l.push(one(addr).await?);
    }
    Ok(l)
}

/// Connections per second with `clients` concurrent clients for `secs`.
async fn throughput(addr: SocketAddr, clients: usize, secs: u64) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (done, failed) = (done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                match one(addr).await {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let failed = failed.load(Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "{failed} connections to {addr} failed");
    Ok(done.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub async fn run(a: LbArgs, bin: PathBuf) -> anyhow::Result<()> {
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release -p wasmos`, or pass --wasmos",
        bin.display()
    );
    anyhow::ensure!(
        a.haproxy.exists(),
        "{} is missing: install Debian's haproxy (apt-get install haproxy), or pass --haproxy",
        a.haproxy.display()
    );
    let me = std::env::current_exe()?;
    let c = crate::marathon::BenchCluster::start(
        &bin,
        1,
        "process",
        &["--service-port-listen", "127.0.0.1"],
    )
    .await?;
    // The backend tasks go whatever happens (plain processes would outlive
    // the agent).
    let result = measure(&a, &c, &me).await;
    if let Err(e) = crate::marathon::remove(&c.http, &c.url, "/lbbench").await {
        eprintln!("cannot remove the backend app: {e}");
    }
    result
}

async fn measure(
    a: &LbArgs,
    c: &crate::marathon::BenchCluster,
    me: &std::path::Path,
) -> anyhow::Result<()> {
    let (url, http) = (c.url.clone(), c.http.clone());
    let app = json!({
        "id": "/lbbench", "instances": 3, "cpus": 0.1, "mem": 32,
        "cmd": format!("exec {} lb-backend --port $PORT0", me.display()),
        "portDefinitions": [{"port": 0, "labels": {"VIP_0": "/lbbench:18080"}}]
    });
    crate::marathon::post_app(&http, &url, &app).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let backends: Vec<SocketAddr> = loop {
        let v: Value = http
            .get(format!("{url}/v2/apps/lbbench"))
            .send()
            .await?
            .json()
            .await?;
        let tasks = v["app"]["tasks"].as_array().cloned().unwrap_or_default();
        let up: Vec<SocketAddr> = tasks
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .filter_map(|t| format!("127.0.0.1:{}", t["ports"][0]).parse().ok())
            .collect();
        if up.len() == 3 {
            break up;
        }
        if Instant::now() > deadline {
            bail!("the three backend tasks did not start: {v}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let hosts: Value = http
        .get(format!("{url}/v1/hosts/lbbench.marathon.l4lb.mesos"))
        .send()
        .await?
        .json()
        .await?;
    let vip: SocketAddr = format!(
        "{}:18080",
        hosts[0]["ip"].as_str().context("the VIP has no address")?
    )
    .parse()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while one(vip).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the VIP {vip} does not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hport = free_port()?;
    let cfg = c.base.path().join("haproxy.cfg");
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("    server b{i} {b}\n"))
        .collect();
    std::fs::write(
        &cfg,
        format!(
            "global\n    maxconn 4096\n\ndefaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\nfrontend f\n    bind 127.0.0.1:{hport}\n    default_backend b\n\nbackend b\n    balance roundrobin\n{servers}"
        ),
    )?;
    let _haproxy = tokio::process::Command::new(&a.haproxy)
        .args(["-db", "-f"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start haproxy")?;
    let haproxy: SocketAddr = format!("127.0.0.1:{hport}").parse()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while one(haproxy).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "haproxy does not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "backends {backends:?}; Wasmos VIP {vip}; haproxy {haproxy}; {} rounds",
        a.rounds
    );
    let targets = [
        ("direct", backends[0]),
        ("wasmos", vip),
        ("haproxy", haproxy),
    ];
    // Per target: round medians of p50 and p99 latency (ms), and conn/s.
    let mut p50 = vec![Vec::new(); 3];
    let mut p99 = vec![Vec::new(); 3];
    let mut rate = vec![Vec::new(); 3];
    for round in 0..a.rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            vec![0, 1, 2]
        } else {
            vec![0, 2, 1]
        };
        for &i in &order {
            let (name, addr) = targets[i];
            let mut l = latency(addr, a.requests).await?;
            let r = throughput(addr, a.clients, a.seconds).await?;
            let (m, t) = (l.percentile(50.0), l.percentile(99.0));
            eprintln!(
                "   round {}: {name:8} p50 {m:.3} ms  p99 {t:.3} ms  {r:.0} conn/s",
                round + 1
            );
            p50[i].push(m);
            p99[i].push(t);
            rate[i].push(r);
        }
    }
    let m50: Vec<f64> = p50.iter_mut().map(|v| median(v)).collect();
    let m99: Vec<f64> = p99.iter_mut().map(|v| median(v)).collect();
    let mrate: Vec<f64> = rate.iter_mut().map(|v| median(v)).collect();
    println!(
        "\n| path | request on a new connection p50 (ms) | p99 (ms) | added p50 vs direct (ms) | connections/s ({} clients) |",
        a.clients
    );
    println!("|---|---:|---:|---:|---:|");
    for (i, (name, _)) in targets.iter().enumerate() {
        println!(
            "| {name} | {:.3} | {:.3} | {:+.3} | {:.0} |",
            m50[i],
            m99[i],
            m50[i] - m50[0],
            mrate[i]
        );
    }
    println!(
        "\nWasmos/haproxy: added latency {:.2}×, connections/s {:.2}× (medians of {} rounds).",
        (m50[1] - m50[0]) / (m50[2] - m50[0]),
        mrate[1] / mrate[2],
        a.rounds
    );
    // How soon DNS follows a scale: from the moment Marathon reports the
    // new task running to the moment the SRV name lists it.
    let mut follow = Vec::new();
    for step in 0..a.scales {
        let n = 4 + step;
        let r = http
            .put(format!("{url}/v2/apps/lbbench"))
            .json(&json!({"instances": n}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "scale: {}", r.text().await?);
        let (mut running_at, mut named_at) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        let (r, d) = loop {
            if let (Some(r), Some(d)) = (running_at, named_at) {
                break (r, d);
            }
            anyhow::ensure!(Instant::now() < deadline, "the scale to {n} did not show");
            let now = Instant::now();
            if running_at.is_none() {
                let v: Value = http
                    .get(format!("{url}/v2/apps/lbbench?embed=app.counts"))
                    .send()
                    .await?
                    .json()
                    .await?;
                if v["app"]["tasksRunning"].as_u64() == Some(n as u64) {
                    running_at = Some(now);
                }
            }
            if named_at.is_none() {
                let v: Value = http
                    .get(format!("{url}/v1/services/_lbbench._tcp.marathon.mesos"))
                    .send()
                    .await?
                    .json()
                    .await?;
                if v.as_array().is_some_and(|l| l.len() == n) {
                    named_at = Some(now);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let ms = if d >= r {
            d.duration_since(r).as_secs_f64() * 1e3
        } else {
            -(r.duration_since(d).as_secs_f64() * 1e3)
        };
        eprintln!(
            "   scale to {n}: DNS lists the new task {ms:+.0} ms after Marathon reports it running"
        );
        follow.push(ms);
    }
    if !follow.is_empty() {
        println!(
            "DNS after a scale: the new task is named {:+.0} ms (median of {}; max {:+.0}) after Marathon reports it running (zone rebuilt at most every 200 ms).",
            median(&mut follow.clone()),
            follow.len(),
            follow.iter().copied().fold(f64::MIN, f64::max)
        );
    }
    Ok(())
}
