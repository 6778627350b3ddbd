//! Task launch, side by side (perf anchors B5 and B6): the agent's native
//! containerizer against `crun run` / `runc run` on the same static
//! program, and Docker tasks through the agent against the engine's raw
//! API.
//!
//! Every task runs `stamp`, a static C program that prints the wall clock
//! (ns) the moment it runs: "exec'd" is that stamp. For tasks through the
//! agent the start is the agent's TASK_STARTING timestamp, taken when the
//! launch reaches it; for `crun`/`runc`/raw Docker it is taken just before
//! the runtime is asked. One clock, one machine.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

use crate::stats::Latencies;

#[derive(Debug, clap::Args)]
pub struct LaunchArgs {
    /// Native tasks (and crun/runc runs) to launch.
    #[arg(long, default_value_t = 400)]
    count: usize,
    /// Docker containers per path (agent, raw API).
    #[arg(long, default_value_t = 50)]
    docker_count: usize,
    /// Concurrent raw API clients for the Docker burst.
    #[arg(long, default_value_t = 8)]
    docker_concurrency: usize,
    /// The wasmos binary (default: next to this one).
    #[arg(long)]
    pub wasmos: Option<PathBuf>,
    /// Skip crun and runc.
    #[arg(long)]
    skip_oci: bool,
    /// Skip Docker.
    #[arg(long)]
    skip_docker: bool,
}

const STAMP_C: &str = r#"#include <stdio.h>
#include <time.h>
int main(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    printf("%lld\n", (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
    return 0;
}
"#;

const IMAGE: &str = "wasmos-bench/stamp:1";

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn since(start_ns: i128, stamp_ns: i128) -> Duration {
    Duration::from_nanos(u64::try_from(stamp_ns - start_ns).unwrap_or(0))
}

fn parse_stamp(text: &str) -> Option<i128> {
    text.lines().last()?.trim().parse().ok()
}

/// Builds the static `stamp` program.
fn build_stamp(dir: &Path) -> anyhow::Result<PathBuf> {
    let src = dir.join("stamp.c");
    let bin = dir.join("stamp");
    std::fs::write(&src, STAMP_C)?;
    let st = std::process::Command::new("gcc")
        .args(["-O2", "-static", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .context("gcc is needed to build the stamp program: apt-get install gcc")?;
    anyhow::ensure!(
        st.success(),
        "gcc -static failed: install gcc and libc6-dev"
    );
    Ok(bin)
}

pub async fn run(a: LaunchArgs, wasmos_bin: PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all("/var/tmp")?;
    let base = tempfile::tempdir_in("/var/tmp")?;
    eprintln!("data under {}", base.path().display());
    let stamp = build_stamp(base.path())?;
    let mut rows: Vec<(String, Latencies, Option<f64>)> = Vec::new();

    let up = Up::start(&wasmos_bin, &base.path().join("up"), !a.skip_docker).await?;
    eprintln!("== native tasks through the agent: {} launches", a.count);
    let stamp_s = stamp.display().to_string();
    // A whole cpu: a small CFS quota would throttle the start itself.
    let native = json!({"argv": [stamp_s], "cpus": 1, "mem": 32});
    up.burst("warm", 10, &native).await?;
    // Latency one launch at a time (concurrency 1), rate in one burst.
    let mut one = Latencies::default();
    for i in 0..a.count {
        let (l, _) = up.burst(&format!("n1-{i}"), 1, &native).await?;
        one.extend(l);
    }
    let (mut burst, rate) = up.burst("native", a.count, &native).await?;
    eprintln!(
        "   in the burst: p50 {:.1} ms, p99 {:.1} ms from received to exec'd (queueing included)",
        burst.percentile(50.0),
        burst.percentile(99.0)
    );
    rows.push(("wasmos agent, native containerizer".into(), one, Some(rate)));

    if !a.skip_oci {
        for runtime in ["crun", "runc"] {
            eprintln!("== {runtime} run: {} runs", a.count);
            match oci(runtime, &stamp, &base.path().join(runtime), a.count) {
                Ok((lat, rate)) => rows.push((format!("`{runtime} run`"), lat, Some(rate))),
                Err(e) => eprintln!("   {runtime}: {e:#}"),
            }
        }
    }

    let mut docker_rows = Vec::new();
    if !a.skip_docker {
        import_image(&stamp, &base.path().join("image"))?;
        let task = json!({
            "argv": ["/stamp"], "cpus": 1, "mem": 32,
            "container": {"type": "DOCKER", "docker": {"image": IMAGE, "network": "NONE"}},
        });
        eprintln!(
            "== Docker tasks through the agent: {} one by one, then a burst",
            a.docker_count
        );
        up.burst("dwarm", 3, &task).await?;
        let mut one = Latencies::default();
        for i in 0..a.docker_count {
            let (l, _) = up.burst(&format!("d1-{i}"), 1, &task).await?;
            one.extend(l);
        }
        let (_, rate) = up.burst("dburst", a.docker_count, &task).await?;
        docker_rows.push((
            "wasmos agent, Docker containerizer".to_string(),
            one,
            Some(rate),
        ));
        eprintln!(
            "== Docker raw API: {} one by one, then {} at a time",
            a.docker_count, a.docker_concurrency
        );
        let (lat, rate) = raw_docker(a.docker_count, a.docker_concurrency).await?;
        docker_rows.push((
            "raw Engine API (create + start)".to_string(),
            lat,
            Some(rate),
        ));
    }
    up.stop().await;

    println!("\n| Native launch → exec'd | p50 ms | p99 ms | launches/s |");
    println!("|---|---|---|---|");
    for (name, mut l, rate) in rows {
        println!(
            "| {name} ({} samples) | {:.2} | {:.2} | {} |",
            l.len(),
            l.percentile(50.0),
            l.percentile(99.0),
            rate.map_or("—".into(), |r| format!("{r:.0}"))
        );
    }
    if !docker_rows.is_empty() {
        println!("\n| Docker launch → exec'd | p50 ms | p99 ms | burst containers/s |");
        println!("|---|---|---|---|");
        let mut p50s = Vec::new();
        for (name, mut l, rate) in docker_rows {
            p50s.push((l.percentile(50.0), rate.unwrap_or(0.0)));
            println!(
                "| {name} ({} samples) | {:.1} | {:.1} | {} |",
                l.len(),
                l.percentile(50.0),
                l.percentile(99.0),
                rate.map_or("—".into(), |r| format!("{r:.1}"))
            );
        }
        if let [(agent, ar), (raw, rr)] = p50s.as_slice() {
            println!(
                "\nagent over raw API: {:+.1} ms ({:+.1} %) at p50; burst throughput {:.2}× raw",
                agent - raw,
                (agent - raw) / raw * 100.0,
                ar / rr
            );
        }
    }
    Ok(())
}

/// A one-machine cluster (`wasmos up`) with the native containerizer.
struct Up {
    child: tokio::process::Child,
    url: String,
    sandboxes: PathBuf,
    http: reqwest::Client,
}

impl Up {
    async fn start(bin: &Path, dir: &Path, docker: bool) -> anyhow::Result<Up> {
        anyhow::ensure!(
            bin.exists(),
            "{} is missing: build it with `cargo build --release -p wasmos`, or pass --wasmos",
            bin.display()
        );
        std::fs::create_dir_all(dir)?;
        let log = std::fs::File::create(dir.join("up.log"))?;
        let mut child = tokio::process::Command::new(bin)
            .args(["up", "--listen", "127.0.0.1:0", "--containerizer", "native"])
            .args(["--docker", if docker { "on" } else { "off" }])
            // Room for every task at once: the agent's launch path is what
            // is measured, not the allocator's packing.
            .args(["--resources", "cpus:1000;mem:1000000"])
            .arg("--data-dir")
            .arg(dir)
            .env("WASMOS_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("up's stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut url = None;
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(u) = line.strip_prefix("master: ") {
                    url = Some(u.to_string());
                }
                if line.starts_with("agent: ") {
                    return true;
                }
            }
            false
        })
        .await;
        let Some(url) = url.filter(|_| matches!(found, Ok(true))) else {
            bail!(
                "wasmos up did not start; see {}",
                dir.join("up.log").display()
            );
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let up = Up {
            child,
            url,
            sandboxes: dir.join("agent/sandboxes"),
            http: reqwest::Client::new(),
        };
        up.wait_ready().await?;
        Ok(up)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await?
            .json()
            .await?)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let agents = self.get("/api/wasmos/v1/agents").await.unwrap_or_default();
            let fws = self
                .get("/api/wasmos/v1/frameworks")
                .await
                .unwrap_or_default();
            let agent = agents
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["connected"] == true));
            let exec = fws
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["id"] == "exec" && f["active"] == true));
            if agent && exec {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the cluster did not get ready in 60 s")
    }

    /// Submits `n` tasks at once and waits for them all; returns each
    /// one's launch-received → exec'd latency and the launches per second
    /// (tasks / first received → last exec'd).
    async fn burst(
        &self,
        prefix: &str,
        n: usize,
        task: &Value,
    ) -> anyhow::Result<(Latencies, f64)> {
        let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
        let submits = ids.iter().map(|id| {
            let mut body = task.clone();
            body["id"] = json!(id);
            let url = format!("{}/frameworks/exec/tasks", self.url);
            async move {
                // 503 is the framework's backpressure: retry, as the CLI does.
                loop {
                    let r = self.http.post(&url).json(&body).send().await?;
                    match r.status().as_u16() {
                        201 => return anyhow::Ok(()),
                        503 => tokio::time::sleep(Duration::from_millis(20)).await,
                        _ => bail!("submit: {}", r.text().await?),
                    }
                }
            }
        });
        for r in futures::future::join_all(submits).await {
            r?;
        }
        let deadline = Instant::now() + Duration::from_secs(120 + n as u64);
        let mut lat = Latencies::default();
        let (mut first, mut last) = (i128::MAX, i128::MIN);
        for id in &ids {
            let t = loop {
                let t = self.get(&format!("/api/wasmos/v1/tasks/{id}")).await?;
                match t["state"].as_str() {
                    Some("TASK_FINISHED") => break t,
                    Some(
                        s @ ("TASK_FAILED" | "TASK_KILLED" | "TASK_ERROR" | "TASK_LOST"
                        | "TASK_DROPPED"),
                    ) => {
                        bail!("task {id} ended {s}: {}", t["status"]["message"])
                    }
                    _ if Instant::now() > deadline => bail!("task {id} did not finish in time"),
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            let starting = t["statuses"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["state"] == "TASK_STARTING"))
                .and_then(|s| s["timestamp"].as_f64())
                .with_context(|| format!("task {id} has no TASK_STARTING status"))?;
            let received = (starting * 1e9) as i128;
            let out = std::fs::read_to_string(self.sandboxes.join(id).join("stdout"))?;
            let exec = parse_stamp(&out).with_context(|| format!("no stamp from task {id}"))?;
            lat.push(since(received, exec));
            first = first.min(received);
            last = last.max(exec);
        }
        let secs = (last - first) as f64 / 1e9;
        Ok((lat, n as f64 / secs.max(1e-9)))
    }

    async fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id().unwrap_or(0) as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

/// `crun run` / `runc run` of the stamp program, one after another.
fn oci(runtime: &str, stamp: &Path, dir: &Path, n: usize) -> anyhow::Result<(Latencies, f64)> {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    std::fs::copy(stamp, rootfs.join("stamp"))?;
    let st = std::process::Command::new(runtime)
        .arg("spec")
        .current_dir(dir)
        .status()
        .with_context(|| format!("{runtime} is not installed: apt-get install {runtime}"))?;
    anyhow::ensure!(st.success(), "{runtime} spec failed");
    let path = dir.join("config.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!(["/stamp"]);
    spec["root"]["path"] = json!("rootfs");
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    let mut lat = Latencies::default();
    let t0 = Instant::now();
    for i in 0..n {
        let start = now_ns();
        let out = std::process::Command::new(runtime)
            .args(["run", "--bundle"])
            .arg(dir)
            .arg(format!("bench-{}-{i}", std::process::id()))
            .output()?;
        if !out.status.success() {
            bail!(
                "{runtime} run failed: {} (on a host with cgroup v1 and no hugetlb hierarchy, crun needs: mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb)",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let exec = parse_stamp(&String::from_utf8_lossy(&out.stdout))
            .context("no stamp from the container")?;
        lat.push(since(start, exec));
    }
    Ok((lat, n as f64 / t0.elapsed().as_secs_f64()))
}

/// An image holding only the stamp program.
fn import_image(stamp: &Path, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::copy(stamp, dir.join("stamp"))?;
    let tar = dir.with_extension("tar");
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()?;
    anyhow::ensure!(st.success(), "tar failed");
    let st = std::process::Command::new("docker")
        .arg("import")
        .arg(&tar)
        .arg(IMAGE)
        .stdout(std::process::Stdio::null())
        .status()
        .context("the docker CLI is needed to import the image")?;
    anyhow::ensure!(st.success(), "docker import failed");
    Ok(())
}

/// Create + start + (wait, logs, remove) through the engine's API, the way
/// a minimal client would; one by one, then `concurrency` at a time.
async fn raw_docker(n: usize, concurrency: usize) -> anyhow::Result<(Latencies, f64)> {
    use bollard::models::{ContainerCreateBody, HostConfig};
    use futures::StreamExt as _;
    let docker = bollard::Docker::connect_with_local_defaults()?
        .negotiate_version()
        .await?;
    let one = |docker: bollard::Docker| async move {
        let start = now_ns();
        let body = ContainerCreateBody {
            image: Some(IMAGE.into()),
            cmd: Some(vec!["/stamp".into()]),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                memory: Some(32 << 20),
                nano_cpus: Some(1_000_000_000),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = docker.create_container(None, body).await?.id;
        docker.start_container(&id, None).await?;
        let _ = docker.wait_container(&id, None).next().await;
        let mut logs = docker.logs(
            &id,
            Some(bollard::query_parameters::LogsOptions {
                stdout: true,
                ..Default::default()
            }),
        );
        let mut text = String::new();
        while let Some(Ok(l)) = logs.next().await {
            text.push_str(&l.to_string());
        }
        let _ = docker
            .remove_container(
                &id,
                Some(bollard::query_parameters::RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
        let exec = parse_stamp(&text).context("no stamp from the container")?;
        anyhow::Ok((start, exec))
    };
    let mut lat = Latencies::default();
    for _ in 0..n {
        let (s, e) = one(docker.clone()).await?;
        lat.push(since(s, e));
    }
    // The same window as through the agent: first start → last exec'd.
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|_| one(docker.clone()))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let (mut first, mut last) = (i128::MAX, i128::MIN);
    for r in results {
        let (s, e) = r?;
        first = first.min(s);
        last = last.max(e);
    }
    let secs = (last - first) as f64 / 1e9;
    Ok((lat, n as f64 / secs.max(1e-9)))
}
