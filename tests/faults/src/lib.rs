//! Fault injection on hosts of their own, with a history and a checker.
//!
//! [`run`] starts a cluster whose masters and agents each have a network
//! namespace of their own ([`net`], [`cluster`]), runs clients against it
//! ([`workload`]) while the nemesis does the faults a seed schedules
//! ([`nemesis`]), records every request and answer ([`history`]), heals
//! everything, and checks the history and the final state ([`check`],
//! [`linear`]). The same seed replays the same faults.
//!
//! `./dev test` runs a short fixed seed (`tests/e2e/faults.rs`);
//! `wasmos-bench faults --seed N --minutes M` runs long ones.

pub mod check;
pub mod cluster;
pub mod framework;
pub mod history;
pub mod linear;
pub mod marathon;
pub mod nemesis;
pub mod net;
pub mod workload;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

pub use cluster::Setup;

/// The seed of the suite's short run (90 s of faults): the first whose
/// schedule holds a leader kill, an agent kill, a leader pause, a leader
/// isolation, a split, a clock step, a full disk on the leader, a reboot
/// and a master replaced (`nemesis::tests` checks it still does).
pub const SUITE_SEED: u64 = 478888;

use crate::check::Finals;
use crate::cluster::Cluster;
use crate::history::{Event, Recorder};
use crate::nemesis::{Applied, Step};
use crate::workload::Ctx;

/// A run: the cluster, the seed, how long faults go on, the clients.
#[derive(Debug, Clone)]
pub struct Config {
    pub setup: Setup,
    pub seed: u64,
    pub faults_for: Duration,
    pub registers: usize,
    pub register_clients: usize,
    pub task_clients: usize,
    /// Clients changing Marathon apps.
    pub marathon_clients: usize,
    /// The external framework (pymesos), when there is a Python with it.
    pub pymesos: Option<framework::Pymesos>,
    /// How soon after the last fault the cluster must be whole again.
    pub heal_within: Duration,
}

/// What a run did and found.
#[derive(Debug)]
pub struct Report {
    pub seed: u64,
    pub dir: PathBuf,
    pub schedule: Vec<Step>,
    pub applied: Vec<Applied>,
    pub register_ops: usize,
    pub register_unknown: usize,
    pub submitted: usize,
    pub acked_tasks: usize,
    pub runs: usize,
    /// The Chronos job's instants run, and its runs that failed.
    pub chronos_runs: usize,
    pub chronos_failed: u64,
    /// Marathon app changes: made, acknowledged, of unknown outcome; and
    /// the starts of the apps' tasks.
    pub app_changes: usize,
    pub app_changes_acked: usize,
    pub app_changes_unknown: usize,
    pub marathon_runs: usize,
    /// The external framework's launches, its tasks' starts, and how many
    /// times it was started again after a crash.
    pub framework_launched: usize,
    pub framework_runs: usize,
    pub framework_restarts: usize,
    /// How many of exec's tasks ended in each state.
    pub ended: std::collections::BTreeMap<String, usize>,
    pub healed_in: Option<Duration>,
    pub violations: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {}: {} faults; {} register operations ({} of unknown outcome); {} tasks submitted, {} acknowledged, {} runs",
            self.seed,
            self.applied.len(),
            self.register_ops,
            self.register_unknown,
            self.submitted,
            self.acked_tasks,
            self.runs
        )?;
        writeln!(
            f,
            "chronos: {} runs, {} failed",
            self.chronos_runs, self.chronos_failed
        )?;
        writeln!(
            f,
            "marathon: {} app changes ({} acknowledged, {} of unknown outcome), {} task starts",
            self.app_changes, self.app_changes_acked, self.app_changes_unknown, self.marathon_runs
        )?;
        writeln!(
            f,
            "framework (pymesos): {} launches, {} task starts, {} restarts after a crash",
            self.framework_launched, self.framework_runs, self.framework_restarts
        )?;
        writeln!(
            f,
            "tasks ended: {}",
            self.ended
                .iter()
                .map(|(s, n)| format!("{n} {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        match self.healed_in {
            Some(d) => writeln!(
                f,
                "whole again {:.1}s after the last fault",
                d.as_secs_f64()
            )?,
            None => writeln!(f, "never whole again after the last fault")?,
        }
        writeln!(
            f,
            "history and logs: {} (replay: the same seed)",
            self.dir.display()
        )?;
        if self.violations.is_empty() {
            writeln!(f, "no violation")
        } else {
            writeln!(f, "{} violations:", self.violations.len())?;
            for v in &self.violations {
                writeln!(f, "- {v}")?;
            }
            Ok(())
        }
    }
}

/// Runs `cfg`, printing progress through `progress`. The run has a thread
/// of its own, in the clients' network namespace, with a runtime of its
/// own: every socket its clients open is on the hosts' bridge.
pub async fn run(cfg: Config, progress: impl Fn(&str) + Send + Sync + 'static) -> Result<Report> {
    let setup = cfg.setup.clone();
    with_cluster(setup, move |c| {
        Box::pin(async move {
            let r = drive(&cfg, c, &progress).await;
            if r.is_err() {
                progress(&c.logs_tail(20));
            }
            r
        })
    })
    .await?
}

/// Starts a cluster on hosts of its own and runs `f` with it, from the
/// clients' network namespace (on a thread and runtime of their own: the
/// hosts' addresses are reachable only from there), then stops it. A panic
/// in `f` fails the call.
pub async fn with_cluster<T, F>(setup: Setup, f: F) -> Result<T>
where
    T: Send + 'static,
    F: for<'a> FnOnce(&'a mut Cluster) -> std::pin::Pin<Box<dyn Future<Output = T> + 'a>>
        + Send
        + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("on-hosts".into())
        .spawn(move || {
            let run = || -> Result<T> {
                let net = Cluster::hosts(&setup)?;
                net.enter_clients()?;
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let mut c = Cluster::start(setup, net).await?;
                    let out = f(&mut c).await;
                    c.stop().await;
                    Ok(out)
                })
            };
            let _ = tx.send(run());
        })?;
    rx.await
        .context("the test on hosts of their own panicked")?
}

async fn drive(cfg: &Config, c: &mut Cluster, progress: &impl Fn(&str)) -> Result<Report> {
    progress(&format!(
        "{} masters and {} agents up, each on a host of its own under {}",
        c.masters.len(),
        c.agents.len(),
        cfg.setup.dir.display()
    ));
    c.wait_healthy(Duration::from_secs(90)).await?;
    let runs = cfg.setup.dir.join("runs");
    for d in ["exec", "framework"] {
        std::fs::create_dir_all(runs.join(d))?;
    }
    let rec = Recorder::new();
    let ctx = Ctx {
        masters: c.masters.iter().map(|m| m.url.clone()).collect(),
        http: c.client(Duration::from_secs(3))?,
        rec: rec.clone(),
        stop: Arc::new(AtomicBool::new(false)),
    };
    // A Chronos job due every 3 s from a whole second a few seconds on.
    let chronos_start = (now_ms() / 1000 + 5) * 1000;
    let leader = c.masters[c.leader(&ctx.http).await.map_or(0, |(l, _)| l)]
        .url
        .clone();
    // exec forgets all but its last 1,000 ended tasks by default; a long
    // run checks every one it submitted.
    // (Restarting the plugin may compile it first: a minute, not 3 s.)
    let r = c
        .client(Duration::from_secs(60))?
        .patch(format!("{leader}/api/wasmos/v1/plugins/exec/config"))
        .json(&serde_json::json!({"max_finished": "10000000"}))
        .send()
        .await
        .context("configuring exec to keep every ended task")?;
    let code = r.status();
    anyhow::ensure!(
        code.is_success(),
        "configuring exec to keep every ended task: {code} {}",
        r.text().await.unwrap_or_default()
    );
    workload::chronos_job(&ctx.http, &leader, &runs, chronos_start, false).await?;
    let keys: Vec<String> = (0..cfg.registers).map(|i| format!("faults/r{i}")).collect();
    let mut clients = Vec::new();
    for i in 0..cfg.register_clients {
        clients.push(tokio::spawn(workload::registers(
            ctx.clone(),
            i,
            keys.clone(),
            cfg.seed ^ (1000 + i as u64),
        )));
    }
    for i in 0..cfg.task_clients {
        clients.push(tokio::spawn(workload::tasks(
            ctx.clone(),
            i,
            runs.join("exec"),
            cfg.seed ^ (2000 + i as u64),
        )));
    }
    for i in 0..cfg.marathon_clients {
        clients.push(tokio::spawn(marathon::client(
            ctx.clone(),
            100 + i,
            runs.clone(),
            cfg.seed ^ (4000 + i as u64),
        )));
    }
    let framework = match &cfg.pymesos {
        Some(p) => {
            let secret = framework_principal(&ctx.http, &leader).await?;
            let access = framework::Access {
                master: format!("{}:{}", c.net.hosts[0].ip, cluster::PLAIN_PORT),
                principal: FRAMEWORK_PRINCIPAL.into(),
                secret,
            };
            Some(tokio::spawn(framework::supervise(
                ctx.clone(),
                p.clone(),
                access,
                cfg.setup.dir.clone(),
            )))
        }
        None => None,
    };
    clients.push(tokio::spawn(workload::observe(
        ctx.clone(),
        cfg.seed ^ 3000,
    )));
    let schedule = nemesis::schedule(cfg.seed, cfg.faults_for, c.masters.len(), c.agents.len());
    let mut applied = Vec::new();
    let mut crashes = Vec::new();
    for (n, step) in schedule.iter().enumerate() {
        tokio::time::sleep(step.quiet).await;
        let a = nemesis::start(c, &step.fault).await?;
        progress(&format!(
            "fault {}/{}: {:?} on {:?} for {:.1}s",
            n + 1,
            schedule.len(),
            a.fault,
            a.struck,
            step.lasts.as_secs_f64()
        ));
        rec.push(Event::Nemesis {
            at: rec.now(),
            end: false,
            applied: a.clone(),
        });
        tokio::time::sleep(step.lasts).await;
        for (what, crash) in nemesis::end(c, &a).await? {
            progress(&what);
            if crash {
                crashes.push(what);
            }
        }
        rec.push(Event::Nemesis {
            at: rec.now(),
            end: true,
            applied: a.clone(),
        });
        applied.push(a);
    }
    progress("faults over; waiting for the cluster to be whole again");
    let mut violations = crashes;
    let healed_in = match c.wait_healthy(cfg.heal_within).await {
        Ok(d) => Some(d),
        Err(e) => {
            violations.push(e.to_string());
            None
        }
    };
    // Instants due from 10 s after this must all run.
    let whole_ms = now_ms() + 10_000;
    // The clients go on a little on the healed cluster, then stop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    ctx.stop.store(true, Ordering::Relaxed);
    for h in clients {
        let _ = h.await;
    }
    let framework = match framework {
        Some(h) => Some(h.await.context("the framework's supervisor panicked")?),
        None => None,
    };
    progress("clients stopped; final reads, waiting for the tasks to end");
    let http = c.client(Duration::from_secs(5))?;
    let leader = match c.leader(&http).await {
        Some((l, _)) => c.masters[l].url.clone(),
        None => c.masters[0].url.clone(),
    };
    // A final read of every register, as one more client.
    for key in &keys {
        final_read(&ctx, &leader, key).await;
    }
    let mut finals = settle(&http, &leader, &runs.join("exec"), &mut violations).await?;
    if let Some(s) = framework {
        finals.framework = Some(framework::read(&cfg.setup.dir, s)?);
    }
    if cfg.marathon_clients > 0 {
        let m = marathon::settle(
            &http,
            &leader,
            &runs,
            Duration::from_secs(120),
            &mut violations,
        )
        .await?;
        marathon::clean_up(&http, &leader, &m).await;
        finals.marathon = Some(m);
    }
    finals.chronos = stop_chronos(
        &http,
        &leader,
        &runs,
        (chronos_start, whole_ms),
        &mut violations,
    )
    .await?;
    // Still whole at the end: no daemon hung or went away meanwhile.
    if let Err(e) = c.wait_healthy(Duration::from_secs(30)).await {
        violations.push(format!("after the checks: {e}"));
    }
    let events = rec.events();
    violations.extend(check::check(&events, &finals));
    if !violations.is_empty() {
        c.save_stacks();
    }
    let history = cfg.setup.dir.join("history.jsonl");
    std::fs::write(
        &history,
        events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .context("write the history")?;
    let count = |f: &dyn Fn(&Event) -> bool| events.iter().filter(|e| f(e)).count();
    let report = Report {
        seed: cfg.seed,
        dir: cfg.setup.dir.clone(),
        schedule,
        applied,
        register_ops: count(&|e| matches!(e, Event::Register { .. })),
        register_unknown: count(&|e| matches!(e, Event::Register { ret: None, .. })),
        submitted: count(&|e| matches!(e, Event::Submit { .. })),
        acked_tasks: count(&|e| matches!(e, Event::Submit { acked: true, .. })),
        runs: finals.runs.values().sum(),
        chronos_runs: finals.chronos.as_ref().map_or(0, |c| c.marks.len()),
        chronos_failed: finals.chronos.as_ref().map_or(0, |c| c.errors),
        app_changes: count(&|e| matches!(e, Event::AppChange { .. })),
        app_changes_acked: count(&|e| {
            matches!(
                e,
                Event::AppChange {
                    outcome: marathon::Outcome::Acked,
                    ..
                }
            )
        }),
        app_changes_unknown: count(&|e| {
            matches!(
                e,
                Event::AppChange {
                    outcome: marathon::Outcome::Unknown,
                    ..
                }
            )
        }),
        marathon_runs: finals.marathon.as_ref().map_or(0, |m| m.marks.len()),
        framework_launched: finals.framework.as_ref().map_or(0, |f| f.launched.len()),
        framework_runs: finals
            .framework
            .as_ref()
            .map_or(0, |f| f.runs.values().sum()),
        framework_restarts: finals
            .framework
            .as_ref()
            .map_or(0, |f| f.supervised.restarts),
        ended: finals.exec.values().fold(Default::default(), |mut m, s| {
            *m.entry(s.clone()).or_default() += 1;
            m
        }),
        healed_in,
        violations,
    };
    std::fs::write(cfg.setup.dir.join("report.txt"), report.to_string())?;
    Ok(report)
}

/// The principal the external framework runs as.
const FRAMEWORK_PRINCIPAL: &str = "pyfw";

/// Makes the framework's principal (a policy that may run frameworks named
/// `pymesos-*`, and a user with a password) through `leader`; returns the
/// password.
async fn framework_principal(http: &reqwest::Client, leader: &str) -> Result<String> {
    let secret = "pyfw-faults-password-1".to_string();
    let calls = [
        (
            format!("{leader}/api/wasmos/v1/acl/policies/{FRAMEWORK_PRINCIPAL}"),
            serde_json::json!({"rules": [
                {"area": "frameworks", "prefix": "pymesos-", "access": "write"},
                {"area": "roles", "prefix": "", "access": "read"},
            ]}),
        ),
        (
            format!("{leader}/api/wasmos/v1/acl/users/{FRAMEWORK_PRINCIPAL}"),
            serde_json::json!({"password": secret, "policies": [FRAMEWORK_PRINCIPAL]}),
        ),
    ];
    for (url, body) in calls {
        let r = http.put(&url).json(&body).send().await?;
        let code = r.status();
        anyhow::ensure!(
            code.is_success(),
            "PUT {url}: {code} {}",
            r.text().await.unwrap_or_default()
        );
    }
    Ok(secret)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Stops the Chronos job once three instants were due on the whole
/// cluster, waits (a minute at most) for its last run to end, and reads
/// what it did.
async fn stop_chronos(
    http: &reqwest::Client,
    leader: &str,
    runs: &std::path::Path,
    (start_ms, whole_ms): (u64, u64),
    violations: &mut Vec<String>,
) -> Result<Option<check::ChronosFinal>> {
    let stop_at = whole_ms + 3 * workload::CHRONOS_PERIOD_MS + 10_000;
    if let Some(wait) = stop_at.checked_sub(now_ms()) {
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    workload::chronos_job(http, leader, runs, start_ms, true).await?;
    let stopped_ms = now_ms();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (success, errors) = loop {
        match workload::chronos_counts(http, leader).await {
            Some((s, e, 0)) => break (s, e),
            _ if Instant::now() > deadline => {
                violations.push(
                    "chronos: runs still in flight a minute after the job was stopped".into(),
                );
                return Ok(None);
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let text = match std::fs::read_to_string(runs.join("chronos-beat")) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.into()),
    };
    // Uptime to real time: the machine's uptime now, and the time now.
    let (uptime_now, real_now) = (uptime()?, now_ms());
    let mut marks = Vec::new();
    let mut ran_at: std::collections::BTreeMap<u64, u64> = Default::default();
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let Some(due) = f.next().and_then(|d| d.parse::<u64>().ok()) else {
            continue;
        };
        marks.push(due);
        if let Some(up) = f.next().and_then(|u| u.parse::<f64>().ok()) {
            let at = real_now.saturating_sub(((uptime_now - up).max(0.0) * 1000.0) as u64);
            let e = ran_at.entry(due).or_insert(at);
            *e = (*e).min(at);
        }
    }
    Ok(Some(check::ChronosFinal {
        start_ms,
        period_ms: workload::CHRONOS_PERIOD_MS,
        whole_ms,
        stopped_ms,
        marks,
        ran_at,
        success,
        errors,
    }))
}

/// The machine's uptime in seconds (the clock the hosts share that
/// libfaketime leaves alone).
fn uptime() -> Result<f64> {
    let t = std::fs::read_to_string("/proc/uptime")?;
    t.split_whitespace()
        .next()
        .and_then(|u| u.parse().ok())
        .context("parse /proc/uptime")
}

async fn final_read(ctx: &Ctx, leader: &str, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = ctx.rec.events().len();
        workload::read_once(ctx, usize::MAX, leader, key).await;
        let events = ctx.rec.events();
        let known = events[before..]
            .iter()
            .any(|e| matches!(e, Event::Register { ret: Some(_), .. }));
        if known || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits (up to a minute) until no task of exec is waiting or running,
/// then reads the final state: exec's tasks, the master's statuses, the
/// marks the tasks left.
async fn settle(
    http: &reqwest::Client,
    leader: &str,
    runs: &std::path::Path,
    violations: &mut Vec<String>,
) -> Result<Finals> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let exec = loop {
        let list = workload::exec_tasks(http, leader).await.unwrap_or_default();
        let busy: Vec<&(String, String)> = list
            .iter()
            .filter(|(_, s)| !s.starts_with("TASK_") || check::rank(s) < 4)
            .collect();
        if busy.is_empty() && !list.is_empty() {
            break list;
        }
        if Instant::now() > deadline {
            violations.push(format!(
                "tasks still not ended a minute after the faults stopped: {busy:?}"
            ));
            break list;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let tasks: Value = http
        .get(format!("{leader}/api/wasmos/v1/tasks"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let statuses = tasks
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let states = t["statuses"]
                .as_array()?
                .iter()
                .filter_map(|s| s["state"].as_str().map(str::to_string))
                .collect();
            Some((t["id"].as_str()?.to_string(), states))
        })
        .collect();
    let mut marks = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(runs)? {
        let e = e?;
        let n = std::fs::read_to_string(e.path())?.lines().count();
        marks.insert(e.file_name().to_string_lossy().into_owned(), n);
    }
    Ok(Finals {
        exec: exec.into_iter().collect(),
        statuses,
        runs: marks,
        chronos: None,
        marathon: None,
        framework: None,
    })
}
