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
    #[arg(long, default_value_t = 100)]
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
    /// Also measure native launches with every daemon --insecure (plain
    /// HTTP), to see what TLS costs.
    #[arg(long)]
    insecure_too: bool,
    /// With --insecure-too: run the TLS and --insecure clusters side by
    /// side and measure them in this many pairs, alternating which goes
    /// first (drift on the machine then hits both alike); prints each
    /// pair's ratios and their medians. Native paths only.
    #[arg(long, default_value_t = 0)]
    pairs: usize,
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
    if a.insecure_too && a.pairs > 0 {
        return tls_pairs(&a, &wasmos_bin, base.path(), &stamp).await;
    }
    let mut rows: Vec<(String, Latencies, Option<f64>)> = Vec::new();

    let stamp_s = stamp.display().to_string();
    // A whole cpu: a small CFS quota would throttle the start itself.
    let native = json!({"argv": [stamp_s], "cpus": 1, "mem": 32});
    let modes: &[bool] = if a.insecure_too {
        &[true, false]
    } else {
        &[true]
    };
    let mut template = Value::Null;
    for &tls in modes {
        let suffix = if tls { "" } else { ", --insecure" };
        let up = Up::start(
            &wasmos_bin,
            &base.path().join(if tls {
                "up-native"
            } else {
                "up-native-insecure"
            }),
            false,
            tls,
        )
        .await?;
        eprintln!(
            "== native tasks through the agent{suffix}: {} launches",
            a.count
        );
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
        rows.push((
            format!("through the master and `exec` (TASK_STARTING → exec'd){suffix}"),
            one,
            Some(rate),
        ));
        let warm = up.get("/api/wasmos/v1/tasks/warm-0").await?;
        template = json!({
            "task_id": "x", "name": "x",
            "resources": warm["resources"], "command": warm["command"], "labels": warm["labels"],
        });
        up.stop().await;
    }
    for &tls in modes {
        let suffix = if tls { "" } else { ", --insecure" };
        eprintln!(
            "== native tasks straight to an agent's API (stand-in master{suffix}): concurrency 1, then 16"
        );
        let pki = if tls {
            Some(std::sync::Arc::new(crate::pki::Pki::create(
                &base.path().join("stand-in-tls"),
            )?))
        } else {
            None
        };
        let master = stand_in_master(pki.clone()).await?;
        let adir = base
            .path()
            .join(if tls { "agent" } else { "agent-insecure" });
        let (_agent, agent_url) = start_agent(&wasmos_bin, &adir, &master, pki.as_deref()).await?;
        let http = match &pki {
            Some(p) => p
                .client_as(
                    p.keys(wasmos_tls::Identity::Master(1))?,
                    wasmos_tls::Expect::Agent,
                )?
                .build()?,
            None => reqwest::Client::new(),
        };
        let sandboxes = adir.join("sandboxes");
        direct(&http, &agent_url, &sandboxes, "dwarm", 10, 1, &template).await?;
        let (one, rate1) =
            direct(&http, &agent_url, &sandboxes, "d1", a.count, 1, &template).await?;
        rows.push((
            format!("agent API, concurrency 1 (post → exec'd){suffix}"),
            one,
            Some(rate1),
        ));
        let (many, rate16) =
            direct(&http, &agent_url, &sandboxes, "d16", a.count, 16, &template).await?;
        rows.push((
            format!("agent API, concurrency 16{suffix}"),
            many,
            Some(rate16),
        ));
    }

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
        let up = Up::start(&wasmos_bin, &base.path().join("up-docker"), true, true).await?;
        import_image(&stamp, &base.path().join("image"))?;
        let task = json!({
            "argv": ["/stamp"], "cpus": 1, "mem": 32,
            "container": {"type": "DOCKER", "docker": {"image": IMAGE, "network": "NONE"}},
        });
        eprintln!(
            "== Docker: {} launches through the agent and {} through the raw API, alternating; then a burst of each",
            a.docker_count, a.docker_count
        );
        up.burst("dwarm", 3, &task).await?;
        let raw = RawDocker::connect().await?;
        raw.one().await?;
        // Alternating, so that drift of this noisy machine hits both alike.
        let (mut agent_lat, mut raw_lat) = (Latencies::default(), Latencies::default());
        for i in 0..a.docker_count {
            let (l, _) = up.burst(&format!("d1-{i}"), 1, &task).await?;
            agent_lat.extend(l);
            let (s, e) = raw.one().await?;
            raw_lat.push(since(s, e));
        }
        let (_, agent_rate) = up.burst("dburst", a.docker_count, &task).await?;
        let raw_rate = raw.burst(a.docker_count, a.docker_concurrency).await?;
        docker_rows.push((
            "wasmos agent, Docker containerizer".to_string(),
            agent_lat,
            Some(agent_rate),
        ));
        docker_rows.push((
            "raw Engine API (create + start)".to_string(),
            raw_lat,
            Some(raw_rate),
        ));
        up.stop().await;
    }

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

/// One side of a pair: p50 latency (ms) at concurrency 1 and the rate of a
/// burst (launches/s).
type Side = (f64, f64);

/// `--insecure-too --pairs N`: TLS and --insecure side by side, each path
/// measured N times per mode in alternating order.
async fn tls_pairs(
    a: &LaunchArgs,
    wasmos_bin: &Path,
    base: &Path,
    stamp: &Path,
) -> anyhow::Result<()> {
    let native = json!({"argv": [stamp.display().to_string()], "cpus": 1, "mem": 32});
    eprintln!("== starting a TLS and an --insecure cluster, side by side");
    let tls_up = Up::start(wasmos_bin, &base.join("up-tls"), false, true).await?;
    let plain_up = Up::start(wasmos_bin, &base.join("up-plain"), false, false).await?;
    tls_up.burst("warm", 10, &native).await?;
    plain_up.burst("warm", 10, &native).await?;
    let warm = tls_up.get("/api/wasmos/v1/tasks/warm-0").await?;
    let template = json!({
        "task_id": "x", "name": "x",
        "resources": warm["resources"], "command": warm["command"], "labels": warm["labels"],
    });
    eprintln!("== and an agent behind a stand-in master for each");
    let pki = std::sync::Arc::new(crate::pki::Pki::create(&base.join("stand-in-tls"))?);
    let tls_master = stand_in_master(Some(pki.clone())).await?;
    let plain_master = stand_in_master(None).await?;
    let (tls_dir, plain_dir) = (base.join("agent-tls"), base.join("agent-plain"));
    let (_tls_agent, tls_agent_url) =
        start_agent(wasmos_bin, &tls_dir, &tls_master, Some(&pki)).await?;
    let (_plain_agent, plain_agent_url) =
        start_agent(wasmos_bin, &plain_dir, &plain_master, None).await?;
    let tls_http = pki
        .client_as(
            pki.keys(wasmos_tls::Identity::Master(1))?,
            wasmos_tls::Expect::Agent,
        )?
        .build()?;
    let plain_http = reqwest::Client::new();
    let direct_side = |tls: bool, tag: String| {
        let (http, url, dir) = if tls {
            (&tls_http, &tls_agent_url, tls_dir.join("sandboxes"))
        } else {
            (&plain_http, &plain_agent_url, plain_dir.join("sandboxes"))
        };
        let template = template.clone();
        async move {
            let (mut one, _) =
                direct(http, url, &dir, &format!("{tag}-1"), a.count, 1, &template).await?;
            let (_, rate16) = direct(
                http,
                url,
                &dir,
                &format!("{tag}-16"),
                a.count,
                16,
                &template,
            )
            .await?;
            anyhow::Ok((one.percentile(50.0), rate16))
        }
    };
    let master_side = |tls: bool, tag: String| {
        let up = if tls { &tls_up } else { &plain_up };
        let native = native.clone();
        async move {
            let mut one = Latencies::default();
            for i in 0..a.count {
                let (l, _) = up.burst(&format!("{tag}-1-{i}"), 1, &native).await?;
                one.extend(l);
            }
            let (_, rate) = up.burst(&format!("{tag}-b"), a.count, &native).await?;
            anyhow::Ok((one.percentile(50.0), rate))
        }
    };
    direct_side(true, "dwarm-t".into()).await?;
    direct_side(false, "dwarm-p".into()).await?;
    let mut master_pairs: Vec<(Side, Side)> = Vec::new();
    let mut direct_pairs: Vec<(Side, Side)> = Vec::new();
    for pair in 0..a.pairs {
        let tls_first = pair % 2 == 0;
        eprintln!(
            "== pair {}/{} ({} first)",
            pair + 1,
            a.pairs,
            if tls_first { "TLS" } else { "--insecure" }
        );
        let mut m = [(0.0, 0.0); 2];
        let mut d = [(0.0, 0.0); 2];
        for (k, tls) in [(0, tls_first), (1, !tls_first)] {
            let mode = if tls { "t" } else { "p" };
            m[k] = master_side(tls, format!("m{pair}{mode}")).await?;
            d[k] = direct_side(tls, format!("d{pair}{mode}")).await?;
        }
        let (ti, pi) = if tls_first { (0, 1) } else { (1, 0) };
        master_pairs.push((m[ti], m[pi]));
        direct_pairs.push((d[ti], d[pi]));
    }
    tls_up.stop().await;
    plain_up.stop().await;
    println!(
        "\n### Native launch, TLS + auth against --insecure, side by side, {} pairs in alternating order ({} launches per measurement)\n",
        a.pairs, a.count
    );
    println!(
        "| path | TLS p50 ms (median) | --insecure p50 ms (median) | median p50 ratio (TLS/insecure) | TLS rate/s (median) | --insecure rate/s (median) | median rate ratio (TLS/insecure) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, pairs) in [
        (
            "through the master and `exec` (TASK_STARTING → exec'd; rate of a burst)",
            &master_pairs,
        ),
        (
            "straight to an agent's API (post → exec'd at concurrency 1; rate at concurrency 16)",
            &direct_pairs,
        ),
    ] {
        let col = |f: &dyn Fn(&(Side, Side)) -> f64| {
            let mut v: Vec<f64> = pairs.iter().map(f).collect();
            crate::stats::median(&mut v)
        };
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.2} |",
            col(&|p| p.0.0),
            col(&|p| p.1.0),
            col(&|p| p.0.0 / p.1.0),
            col(&|p| p.0.1),
            col(&|p| p.1.1),
            col(&|p| p.0.1 / p.1.1),
        );
        let each: Vec<String> = pairs
            .iter()
            .map(|p| format!("{:.2}/{:.2}", p.0.0 / p.1.0, p.0.1 / p.1.1))
            .collect();
        eprintln!(
            "   {name}: per pair (p50 ratio/rate ratio) {}",
            each.join(", ")
        );
    }
    Ok(())
}

/// Launches straight through the agent's API, as the master would
/// (perf anchor B5): `concurrency` clients each posting one launch and
/// waiting for its stamp. Latency is post → exec'd; the rate is tasks
/// / first post → last exec'd. `template` is a task spec the master
/// recorded, reused with new ids.
async fn direct(
    http: &reqwest::Client,
    agent: &str,
    sandboxes: &Path,
    prefix: &str,
    n: usize,
    concurrency: usize,
    template: &Value,
) -> anyhow::Result<(Latencies, f64)> {
    let term = 1;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let client = |_| async {
        let mut out = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= n {
                return anyhow::Ok(out);
            }
            let id = format!("{prefix}-{i}");
            let mut spec = template.clone();
            spec["task_id"] = json!(id);
            spec["name"] = json!(id);
            let body = json!({"term": term, "framework_id": "bench", "tasks": [spec]});
            let start = now_ns();
            let r = http
                .post(format!("{agent}/internal/v1/launch"))
                .json(&body)
                .send()
                .await?;
            anyhow::ensure!(r.status().as_u16() == 202, "launch: {}", r.text().await?);
            let out_file = sandboxes.join(&id).join("stdout");
            let deadline = Instant::now() + Duration::from_secs(30);
            let exec = loop {
                if let Some(e) = std::fs::read_to_string(&out_file)
                    .ok()
                    .as_deref()
                    .and_then(parse_stamp)
                {
                    break e;
                }
                anyhow::ensure!(Instant::now() < deadline, "task {id} never ran");
                tokio::time::sleep(Duration::from_micros(200)).await;
            };
            out.push((start, exec));
        }
    };
    let all = futures::future::join_all((0..concurrency.max(1)).map(client)).await;
    let mut lat = Latencies::default();
    let (mut first, mut last) = (i128::MAX, i128::MIN);
    for r in all {
        for (s, e) in r? {
            lat.push(since(s, e));
            first = first.min(s);
            last = last.max(e);
        }
    }
    let secs = (last - first) as f64 / 1e9;
    Ok((lat, n as f64 / secs.max(1e-9)))
}

/// A stand-in master for measuring the agent alone (perf anchor B5:
/// "through the agent API"): it registers the agent, answers heartbeats,
/// lists no plugins and acknowledges every status update as applied, over
/// HTTP/1.1 on loopback: with TLS and a master's certificate from `pki`'s
/// CA (issuing the agent's certificate when it joins), or plain for an
/// agent run --insecure. Nothing else.
async fn stand_in_master(pki: Option<std::sync::Arc<crate::pki::Pki>>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let scheme = if pki.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr()?);
    let acceptor = match &pki {
        Some(p) => Some(tokio_rustls::TlsAcceptor::from(
            p.server_config(p.keys(wasmos_tls::Identity::Master(1))?)?,
        )),
        None => None,
    };
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let pki = pki.clone();
            tokio::spawn(async move {
                match acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(conn).await {
                            stand_in_serve(tls, pki).await;
                        }
                    }
                    None => stand_in_serve(conn, pki).await,
                }
            });
        }
    });
    Ok(url)
}

async fn stand_in_serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut conn: S,
    pki: Option<std::sync::Arc<crate::pki::Pki>>,
) {
    use tokio::io::AsyncWriteExt as _;
    let mut buf = Vec::new();
    while let Ok(Some(request)) = crate::http1::read_message(&mut conn, &mut buf).await {
        let path = request.second_word();
        let joined;
        let body = if path.ends_with("/join") {
            let Some(p) = &pki else { return };
            let req: Value = serde_json::from_slice(&request.body).unwrap_or_default();
            let cert = p.authority.sign_request(
                req["csr"].as_str().unwrap_or(""),
                &wasmos_tls::Identity::Agent("bench".into()),
                &[wasmos_tls::AGENT_NAME.into()],
                Duration::from_secs(24 * 3600),
            );
            let Ok(cert) = cert else { return };
            joined = json!({"certificate": cert, "ca": p.trust.pem()}).to_string();
            joined.as_str()
        } else if path.ends_with("/agents/register") {
            r#"{"agent_id":"bench-S0","cluster_id":"bench","master_id":"bench","term":1,"heartbeat_interval_ms":1000,"orphans":[],"plugins":""}"#
        } else if path.ends_with("/agents/heartbeat") {
            r#"{"master_id":"bench","term":1,"reregister":false,"plugins":""}"#
        } else if path.ends_with("/plugins") {
            "[]"
        } else {
            r#"{"outcome":"applied"}"#
        };
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if conn.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// `wasmos agent` of the stand-in master, native containerizer.
async fn start_agent(
    bin: &Path,
    dir: &Path,
    master: &str,
    pki: Option<&crate::pki::Pki>,
) -> anyhow::Result<(tokio::process::Child, String)> {
    let tls = match pki {
        Some(p) => p.agent_args(),
        None => vec!["--insecure".to_string()],
    };
    let args = [
        "agent",
        "--master",
        master,
        "--listen",
        "127.0.0.1:0",
        "--containerizer",
        "native",
        "--docker",
        "off",
        "--resources",
        "cpus:1000;mem:1000000",
    ];
    let args: Vec<&str> = args
        .into_iter()
        .chain(tls.iter().map(String::as_str))
        .collect();
    let started = spawn_daemon(bin, &args, dir, "agent").await?;
    // Registered once the stand-in has been asked (the first heartbeat).
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(started)
}

/// Starts `wasmos <args> --data-dir <dir>` (log in `<dir>/<name>.log`) and
/// returns it with the URL it announces as `<name>: <url>`.
pub async fn spawn_daemon(
    bin: &Path,
    args: &[&str],
    dir: &Path,
    name: &str,
) -> anyhow::Result<(tokio::process::Child, String)> {
    std::fs::create_dir_all(dir)?;
    let log_path = dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut child = tokio::process::Command::new(bin)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        // The daemons log warnings unless WASMOS_LOG asks for more.
        .env(
            "WASMOS_LOG",
            std::env::var("WASMOS_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("the daemon's stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let prefix = format!("{name}: ");
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(u) = line.strip_prefix(&prefix) {
                return Some(u.to_string());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .with_context(|| format!("wasmos {name} did not start; see {}", log_path.display()))?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, url))
}

/// A one-machine cluster (`wasmos up`) with the native containerizer.
struct Up {
    child: tokio::process::Child,
    url: String,
    sandboxes: PathBuf,
    http: reqwest::Client,
}

impl Up {
    async fn start(bin: &Path, dir: &Path, docker: bool, tls: bool) -> anyhow::Result<Up> {
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
            .args(if tls { &[][..] } else { &["--insecure"][..] })
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
        let http = if tls {
            crate::pki::Pki::of_up(dir)?.client()?.build()?
        } else {
            reqwest::Client::new()
        };
        let up = Up {
            child,
            url,
            sandboxes: dir.join("agent/sandboxes"),
            http,
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
/// a minimal client would.
struct RawDocker {
    docker: bollard::Docker,
}

impl RawDocker {
    async fn connect() -> anyhow::Result<RawDocker> {
        let docker = bollard::Docker::connect_with_local_defaults()?
            .negotiate_version()
            .await?;
        Ok(RawDocker { docker })
    }

    /// One container: (start, exec'd) in ns.
    async fn one(&self) -> anyhow::Result<(i128, i128)> {
        use bollard::models::{ContainerCreateBody, HostConfig};
        use futures::StreamExt as _;
        let docker = &self.docker;
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
        Ok((start, exec))
    }

    /// `n` containers, `concurrency` at a time: containers per second from
    /// the first start to the last exec'd (the window used through the
    /// agent).
    async fn burst(&self, n: usize, concurrency: usize) -> anyhow::Result<f64> {
        use futures::StreamExt as _;
        let results: Vec<_> = futures::stream::iter(0..n)
            .map(|_| self.one())
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
        Ok(n as f64 / secs.max(1e-9))
    }
}
