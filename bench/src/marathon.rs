//! `wasmos-bench marathon`: time from `POST /v2/apps` to every instance
//! running, for apps of many small tasks on several agents on this machine
//! (Marathon's published figure: 500 instances in 14.2 s on 189 agents).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::launch::spawn_daemon;

#[derive(Debug, clap::Args)]
pub struct MarathonArgs {
    /// App sizes to deploy, one after another, comma-separated.
    #[arg(long, default_value = "100,1000", value_delimiter = ',')]
    instances: Vec<u32>,
    /// Agents to spread them over (separate processes).
    #[arg(long, default_value_t = 10)]
    agents: usize,
    /// Runs per size (the table shows each).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The agents' containerizer: `process` (plain processes) or `native`
    /// (cgroups and namespaces, a supervisor per task).
    #[arg(long, default_value = "process")]
    containerizer: String,
    /// The wasmos binary (default: next to this one).
    #[arg(long)]
    pub wasmos: Option<PathBuf>,
}

pub async fn run(a: MarathonArgs, bin: PathBuf) -> anyhow::Result<()> {
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release -p wasmos`, or pass --wasmos",
        bin.display()
    );
    let c = BenchCluster::start(
        &bin,
        a.agents,
        &a.containerizer,
        &["--resources", "cpus:64;mem:65536"],
    )
    .await?;
    let (url, http) = (c.url.clone(), c.http.clone());
    eprintln!(
        "master {url}, {} agents ({} containerizer)",
        a.agents, a.containerizer
    );

    let mut rows = Vec::new();
    for &n in &a.instances {
        for run in 0..a.runs {
            let id = format!("/bench/app-{n}-{run}");
            let (running, deployed) = deploy(&http, &url, &id, n).await?;
            eprintln!(
                "   {n} instances: all running after {:.2} s, deployment done after {:.2} s",
                running.as_secs_f64(),
                deployed.as_secs_f64()
            );
            rows.push((n, running, deployed));
            remove(&http, &url, &id).await?;
        }
    }
    println!(
        "\n| instances | agents | POST → all running (s) | tasks/s | POST → deployment done (s) |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for (n, running, deployed) in rows {
        println!(
            "| {n} | {} | {:.2} | {:.0} | {:.2} |",
            a.agents,
            running.as_secs_f64(),
            f64::from(n) / running.as_secs_f64(),
            deployed.as_secs_f64()
        );
    }
    println!("\nMarathon (published): 500 instances in 14.2 s on 189 agents, ≈ 35 tasks/s.");
    drop(c);
    Ok(())
}

/// A master and agents (separate processes on this machine, with the
/// cluster's TLS) under a temp dir in /var/tmp, Marathon answering.
pub(crate) struct BenchCluster {
    pub url: String,
    pub http: reqwest::Client,
    pub base: tempfile::TempDir,
    _master: tokio::process::Child,
    _agents: Vec<tokio::process::Child>,
}

impl BenchCluster {
    /// Starts the master and `agents` agents (`agent-<i>`) with the
    /// containerizer and `extra` agent options, and waits until they are
    /// connected and Marathon answers.
    pub async fn start(
        bin: &std::path::Path,
        agents: usize,
        containerizer: &str,
        extra: &[&str],
    ) -> anyhow::Result<BenchCluster> {
        std::fs::create_dir_all("/var/tmp")?;
        let base = tempfile::tempdir_in("/var/tmp")?;
        eprintln!("data under {}", base.path().display());
        let pki = crate::pki::Pki::create(&base.path().join("tls"))?;
        let mut margs = vec![
            "master".to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        margs.extend(pki.master_args());
        let margs: Vec<&str> = margs.iter().map(String::as_str).collect();
        let (master, url) =
            spawn_daemon(bin, &margs, &base.path().join("master"), "master").await?;
        let agent_tls = pki.agent_args();
        let mut children = Vec::new();
        for i in 0..agents {
            let host = format!("agent-{i}");
            let args = [
                "agent",
                "--master",
                &url,
                "--listen",
                "127.0.0.1:0",
                "--hostname",
                &host,
                "--containerizer",
                containerizer,
                "--docker",
                "off",
            ];
            let args: Vec<&str> = args
                .into_iter()
                .chain(extra.iter().copied())
                .chain(agent_tls.iter().map(String::as_str))
                .collect();
            children.push(
                spawn_daemon(bin, &args, &base.path().join(&host), "agent")
                    .await?
                    .0,
            );
        }
        let http = pki.client()?.timeout(Duration::from_secs(30)).build()?;
        wait_agents(&http, &url, agents).await?;
        Ok(BenchCluster {
            url,
            http,
            base,
            _master: master,
            _agents: children,
        })
    }
}

pub(crate) async fn wait_agents(http: &reqwest::Client, url: &str, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let agents: Value = http
            .get(format!("{url}/api/wasmos/v1/agents"))
            .send()
            .await?
            .json()
            .await?;
        let connected = agents
            .as_array()
            .map(|a| a.iter().filter(|a| a["connected"] == true).count())
            .unwrap_or(0);
        let marathon = http
            .get(format!("{url}/v2/info"))
            .send()
            .await?
            .status()
            .is_success();
        if connected == n && marathon {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {connected} of {n} agents registered (marathon up: {marathon})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Posts an app of `n` sleeping tasks; returns (until all running, until its
/// deployment is done).
pub(crate) async fn deploy(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    n: u32,
) -> anyhow::Result<(Duration, Duration)> {
    let app = json!({
        "id": id, "cmd": "sleep 3600", "cpus": 0.01, "mem": 4, "instances": n,
        "portDefinitions": [],
    });
    let start = Instant::now();
    post_app(http, url, &app).await?;
    let mut running_at = None;
    let deadline = start + Duration::from_secs(600);
    loop {
        let v: Value = http
            .get(format!("{url}/v2/apps{id}?embed=app.counts"))
            .send()
            .await?
            .json()
            .await
            .context("GET the app")?;
        let running = v["app"]["tasksRunning"].as_u64().unwrap_or(0);
        if running_at.is_none() && running == u64::from(n) {
            running_at = Some(start.elapsed());
        }
        let deploying = v["app"]["deployments"]
            .as_array()
            .is_some_and(|d| !d.is_empty());
        if let (Some(r), false) = (running_at, deploying) {
            return Ok((r, start.elapsed()));
        }
        if Instant::now() > deadline {
            bail!("{id}: only {running} of {n} running after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `POST /v2/apps`, which must create the app.
pub(crate) async fn post_app(http: &reqwest::Client, url: &str, app: &Value) -> anyhow::Result<()> {
    post_app_retrying(http, url, app).await.map(|_| ())
}

/// `POST /v2/apps` as a client does through an election: a 503 (no
/// leader yet, a framework restarting) or a 307 (a forward to a master
/// that no longer leads; not followed, as the credentials would not go
/// along) is sent again, and a 409 after that is the app an attempt whose
/// answer was lost created. Returns how many times it was sent again.
pub(crate) async fn post_app_retrying(
    http: &reqwest::Client,
    url: &str,
    app: &Value,
) -> anyhow::Result<usize> {
    let mut tries = 0;
    loop {
        let r = http.post(format!("{url}/v2/apps")).json(app).send().await?;
        match r.status().as_u16() {
            201 => return Ok(tries),
            409 if tries > 0 => return Ok(tries),
            307 | 503 if tries < 40 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            s => anyhow::bail!("POST /v2/apps {}: {s} {}", app["id"], r.text().await?),
        }
    }
}

pub(crate) async fn remove(http: &reqwest::Client, url: &str, id: &str) -> anyhow::Result<()> {
    http.delete(format!("{url}/v2/apps{id}")).send().await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let tasks: Value = http
            .get(format!("{url}/api/wasmos/v1/tasks?active=true"))
            .send()
            .await?
            .json()
            .await?;
        if tasks.as_array().is_some_and(Vec::is_empty) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{id} was not removed within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
