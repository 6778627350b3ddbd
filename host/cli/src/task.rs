//! `wasmos task ...`: tasks through the bundled `exec` framework, and any
//! framework's tasks through the native API.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use anyhow::bail;
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::{Value, json};
use wasmos_core::{TaskState, TaskStatus};
use wasmos_master::placements::Record;
use wasmos_master::views::TaskView;

use crate::client::{Client, ClientError, is_not_found};
use crate::table;

/// `docker run`'s codes for failures of the runner itself.
const EXIT_WASMOS_ERROR: u8 = 125;

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Run a command as a task; stream its output; exit with its exit code.
    Run(Box<RunArgs>),
    /// List tasks (live ones, and queued ones of the exec framework).
    List {
        #[arg(long)]
        json: bool,
        /// Include tasks that ended.
        #[arg(long, short)]
        all: bool,
    },
    /// Show one task and its status history.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Why a task runs where it does: the agents its framework looked at,
    /// what ruled each out (a shortfall, a placement plugin's rule), the
    /// scores and the choice. For a queued `exec` task, why it fits
    /// nowhere yet and what would make it fit.
    Why {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Kill a task (SIGTERM, then SIGKILL after its grace period).
    Kill { id: String },
    /// Print a task's output.
    Logs {
        id: String,
        /// Keep printing as the task writes, until it ends.
        #[arg(long, short)]
        follow: bool,
        /// Print stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// CPUs for the task (default 0.1).
    #[arg(long)]
    cpus: Option<f64>,
    /// Memory for the task in MB (default 32).
    #[arg(long)]
    mem: Option<f64>,
    /// Disk for the task in MB.
    #[arg(long, default_value_t = 0.0)]
    disk: f64,
    /// Host ports the task needs (given to it as PORT0, PORT1, ...).
    #[arg(long, default_value_t = 0)]
    ports: u32,
    /// Environment variables, NAME=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// The task's id (default: made from the command).
    #[arg(long)]
    id: Option<String>,
    /// A name for the task.
    #[arg(long)]
    name: Option<String>,
    /// Run as this user.
    #[arg(long)]
    user: Option<String>,
    /// Run this string with /bin/sh -c instead of a program and arguments.
    #[arg(long)]
    shell: Option<String>,
    /// Print the task's id and return at once.
    #[arg(long, short)]
    detach: bool,
    /// Labels, NAME=VALUE (repeatable).
    #[arg(long = "label", short = 'l', value_parser = parse_env)]
    labels: Vec<(String, String)>,
    /// A placement rule FIELD:OPERATOR[:VALUE], e.g. `hostname:UNIQUE` or
    /// `rack:CLUSTER:r1` (repeatable; see the constraints plugin).
    #[arg(long = "constraint", value_parser = parse_constraint)]
    constraints: Vec<Vec<String>>,
    /// The group constraints count (tasks of one app share a group).
    #[arg(long)]
    group: Option<String>,
    /// Check health with an HTTP GET of this path on the task's first port.
    #[arg(long, value_name = "PATH")]
    health_http: Option<String>,
    /// Check health by connecting to the task's first port.
    #[arg(long, conflicts_with = "health_http")]
    health_tcp: bool,
    /// Check health with this installed health-check plugin.
    #[arg(long, conflicts_with_all = ["health_http", "health_tcp"])]
    health_plugin: Option<String>,
    /// Parameters for the health check, KEY=VALUE (repeatable).
    #[arg(long = "health-config", value_parser = parse_env)]
    health_config: Vec<(String, String)>,
    /// Seconds before the first health check.
    #[arg(long, default_value_t = 15.0)]
    health_delay: f64,
    /// Seconds between health checks.
    #[arg(long, default_value_t = 10.0)]
    health_interval: f64,
    /// Seconds of failures tolerated before the first healthy check.
    #[arg(long, default_value_t = 10.0)]
    health_grace: f64,
    /// Consecutive failed checks after which the task is killed.
    #[arg(long, default_value_t = 3)]
    health_max_failures: u32,
    /// Run in this Docker image, through the agent's Docker engine (with
    /// no program after `--`, the image's own entrypoint runs).
    #[arg(long, value_name = "IMAGE")]
    docker_image: Option<String>,
    /// The Docker task's network: host, bridge or none.
    #[arg(long, default_value = "host", requires = "docker_image", value_parser = ["host", "bridge", "none"])]
    docker_network: String,
    /// Publish a container port on the task's next host port, PORT[/udp]
    /// (bridge network; repeatable, needs as many --ports).
    #[arg(long = "publish", short = 'p', requires = "docker_image")]
    publish: Vec<String>,
    /// GPUs for the task.
    #[arg(long, default_value_t = 0)]
    gpus: u32,
    /// The program and its arguments, after `--`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    argv: Vec<String>,
}

/// `--publish 8080` or `--publish 53/udp` as a port mapping.
fn port_mapping(s: &str) -> anyhow::Result<serde_json::Value> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
        anyhow::anyhow!("--publish {s:?}: give a container port 1-65535, e.g. 8080 or 53/udp")
    })?;
    if proto != "tcp" && proto != "udp" {
        bail!("--publish {s:?}: the protocol is tcp or udp");
    }
    Ok(json!({"container_port": port, "protocol": proto}))
}

fn parse_constraint(s: &str) -> Result<Vec<String>, String> {
    let parts: Vec<String> = s.splitn(3, ':').map(String::from).collect();
    if parts.len() < 2 || parts.iter().take(2).any(String::is_empty) {
        return Err(format!(
            "{s:?} is not FIELD:OPERATOR or FIELD:OPERATOR:VALUE"
        ));
    }
    Ok(parts)
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

/// The exec framework's record of a task.
#[derive(Debug, Deserialize)]
struct ExecTask {
    id: String,
    state: String,
    message: Option<String>,
    exit_code: Option<i32>,
    #[serde(default)]
    waiting_for: Option<String>,
}

pub async fn run(cmd: TaskCommand, c: &Client) -> anyhow::Result<u8> {
    match cmd {
        TaskCommand::Run(a) => run_task(*a, c).await,
        TaskCommand::List { json, all } => list(c, json, all).await.map(|_| 0),
        TaskCommand::Show { id, json } => show(c, &id, json).await.map(|_| 0),
        TaskCommand::Why { id, json } => why(c, &id, json).await.map(|_| 0),
        TaskCommand::Kill { id } => kill(c, &id).await.map(|_| 0),
        TaskCommand::Logs { id, follow, stderr } => {
            logs(c, &id, follow, if stderr { "stderr" } else { "stdout" })
                .await
                .map(|_| 0)
        }
    }
}

async fn run_task(a: RunArgs, c: &Client) -> anyhow::Result<u8> {
    let RunArgs {
        cpus,
        mem,
        disk,
        ports,
        env,
        id,
        name,
        user,
        shell,
        detach,
        labels,
        constraints,
        group,
        health_http,
        health_tcp,
        health_plugin,
        health_config,
        health_delay,
        health_interval,
        health_grace,
        health_max_failures,
        docker_image,
        docker_network,
        publish,
        gpus,
        argv,
    } = a;
    let mut body = json!({
        "disk": disk,
        "ports": ports,
        "env": env.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        "labels": labels.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        "constraints": constraints,
    });
    if gpus > 0 {
        body["gpus"] = json!(gpus);
    }
    if let Some(image) = &docker_image {
        if publish.len() > ports as usize {
            bail!(
                "{} --publish but {ports} --ports: each published port takes one of the task's host ports; add --ports {}",
                publish.len(),
                publish.len()
            );
        }
        if !publish.is_empty() && docker_network != "bridge" {
            bail!("--publish needs --docker-network bridge");
        }
        let mappings = publish
            .iter()
            .map(|p| port_mapping(p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        body["container"] = json!({
            "type": "DOCKER",
            "docker": {
                "image": image,
                "network": docker_network.to_uppercase(),
                "port_mappings": mappings,
            },
        });
    }
    if let Some(g) = group {
        body["group"] = json!(g);
    }
    let health = match (health_http, health_tcp, health_plugin) {
        (Some(path), _, _) => Some(json!({"plugin": "health-http", "config": {"path": path}})),
        (None, true, _) => Some(json!({"plugin": "health-tcp"})),
        (None, false, Some(plugin)) => Some(json!({"plugin": plugin})),
        (None, false, None) => None,
    };
    if let Some(mut h) = health {
        if ports == 0 {
            bail!("a health check needs a port: add --ports 1 (the task gets it as $PORT0)");
        }
        for (k, v) in health_config {
            h["config"][k] = json!(v);
        }
        h["delay_seconds"] = json!(health_delay);
        h["interval_seconds"] = json!(health_interval);
        h["grace_period_seconds"] = json!(health_grace);
        h["max_consecutive_failures"] = json!(health_max_failures);
        body["health_check"] = h;
    }
    match (shell, argv.is_empty()) {
        (Some(_), false) => bail!("give either --shell 'COMMAND' or a program after --, not both"),
        (None, true) if docker_image.is_some() => {}
        (None, true) => bail!(
            "nothing to run: give a program after -- (e.g. `wasmos task run -- echo hi`) or --shell 'COMMAND'"
        ),
        (Some(s), true) => body["cmd"] = json!(s),
        (None, false) => body["argv"] = json!(argv),
    }
    for (k, v) in [
        ("cpus", cpus.map(|x| json!(x))),
        ("mem", mem.map(|x| json!(x))),
    ] {
        if let Some(v) = v {
            body[k] = v;
        }
    }
    for (k, v) in [("id", id), ("name", name), ("user", user)] {
        if let Some(v) = v {
            body[k] = json!(v);
        }
    }
    let submitted: ExecTask = match c.post("/frameworks/exec/tasks", &body).await {
        Ok(t) => t,
        Err(e @ ClientError::Api { status: 404, .. }) => {
            bail!("{e}; is the exec framework plugin installed? (`wasmos frameworks`)")
        }
        Err(e) => return Err(e.into()),
    };
    let id = submitted.id;
    if detach {
        println!("{id}");
        return Ok(0);
    }
    tracing::info!(task = %id, "submitted");
    let mut out = Output::default();
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let mut interrupted = false;
    let mut idle = Duration::from_millis(100);
    let queued_since = std::time::Instant::now();
    let mut told_waiting = false;
    loop {
        let ended = current(c, &id).await?;
        if !told_waiting
            && out.is_empty()
            && queued_since.elapsed() > Duration::from_secs(3)
            && let Some(why) = still_queued(c, &id).await
        {
            told_waiting = true;
            eprintln!(
                "wasmos: task {id} is waiting for an offer: {why}; `wasmos agents` shows what is free, `wasmos task kill {id}` gives up"
            );
        }
        let wrote = out.pump(c, &id).await;
        if let Some(end) = ended {
            // Everything the task wrote is in its files by now.
            while out.pump(c, &id).await {}
            return Ok(end.report(&id));
        }
        idle = if wrote {
            Duration::from_millis(100)
        } else {
            (idle * 2).min(Duration::from_millis(500))
        };
        tokio::select! {
            _ = tokio::time::sleep(idle) => {}
            r = &mut interrupt, if !interrupted => {
                let _ = r;
                interrupted = true;
                eprintln!("wasmos: killing task {id} (Ctrl-C again to stop waiting)");
                if let Err(e) = kill(c, &id).await {
                    eprintln!("wasmos: {e:#}");
                }
                let again = tokio::signal::ctrl_c();
                tokio::spawn(async move {
                    let _ = again.await;
                    std::process::exit(130);
                });
            }
        }
    }
}

/// Whether the exec framework still holds the task in its queue.
/// Why the task still waits for an offer (None once it left the queue).
async fn still_queued(c: &Client, id: &str) -> Option<String> {
    c.get::<ExecTask>(&format!("/frameworks/exec/tasks/{id}"))
        .await
        .ok()
        .filter(|t| t.state == "QUEUED")
        .map(|t| t.waiting_for.unwrap_or_else(|| "no offer yet".into()))
}

/// How a task ended, from whichever view knows it.
#[derive(Debug)]
struct End {
    state: String,
    message: Option<String>,
    exit_code: Option<i32>,
    signal: Option<i32>,
}

impl End {
    /// Tells the user what needs telling, and picks the exit code: the
    /// task's own, 128+signal when a signal ended it, 125 when it never ran.
    fn report(&self, id: &str) -> u8 {
        let msg = self.message.as_deref().unwrap_or("");
        match (self.state.as_str(), self.exit_code, self.signal) {
            ("TASK_FINISHED", _, _) => 0,
            ("TASK_FAILED", Some(code @ (126 | 127)), _) => {
                eprintln!("wasmos: task {id} failed: {msg}");
                code as u8
            }
            ("TASK_FAILED", Some(code), _) => code as u8,
            ("TASK_FAILED" | "TASK_KILLED", None, Some(sig)) => {
                if self.state == "TASK_KILLED" {
                    eprintln!("wasmos: task {id} was killed ({msg})");
                } else {
                    eprintln!("wasmos: task {id} {msg}");
                }
                128u8.saturating_add(sig as u8)
            }
            ("TASK_KILLED", code, _) => {
                eprintln!("wasmos: task {id} was killed ({msg})");
                code.map(|c| c as u8).unwrap_or(137)
            }
            (state, _, _) => {
                eprintln!("wasmos: task {id} ended {state}: {msg}");
                EXIT_WASMOS_ERROR
            }
        }
    }
}

/// The task's end, if it ended. The master's record is authoritative once
/// the task is launched; before that only the exec framework knows it.
async fn current(c: &Client, id: &str) -> anyhow::Result<Option<End>> {
    match c
        .get::<TaskView>(&format!("/api/wasmos/v1/tasks/{id}"))
        .await
    {
        Ok(t) => Ok(t.state.is_terminal().then(|| end_of(&t.status))),
        Err(e) if is_not_found(&e) => {
            let t: ExecTask = c.get(&format!("/frameworks/exec/tasks/{id}")).await?;
            let terminal = serde_json::from_value::<TaskState>(json!(t.state))
                .map(|s| s.is_terminal())
                .unwrap_or(false);
            Ok(terminal.then_some(End {
                state: t.state,
                message: t.message,
                exit_code: t.exit_code,
                signal: None,
            }))
        }
        Err(e) => Err(e.into()),
    }
}

fn end_of(s: &TaskStatus) -> End {
    End {
        state: s.state.to_string(),
        message: s.message.clone(),
        exit_code: s.exit_code,
        signal: s.signal,
    }
}

/// Copies new output from the task's sandbox to our stdout and stderr.
#[derive(Debug, Default)]
struct Output {
    stdout: u64,
    stderr: u64,
}

impl Output {
    fn is_empty(&self) -> bool {
        self.stdout == 0 && self.stderr == 0
    }

    /// One read of each stream; true if anything was written.
    async fn pump(&mut self, c: &Client, id: &str) -> bool {
        let mut wrote = false;
        for (file, offset) in [("stdout", &mut self.stdout), ("stderr", &mut self.stderr)] {
            let path = format!(
                "/api/wasmos/v1/tasks/{id}/files/read?path={file}&offset={offset}&length=1048576"
            );
            let Ok(bytes) = c.bytes(&path).await else {
                continue;
            };
            if bytes.is_empty() {
                continue;
            }
            *offset += bytes.len() as u64;
            wrote = true;
            if file == "stdout" {
                let mut o = std::io::stdout().lock();
                let _ = o.write_all(&bytes);
                let _ = o.flush();
            } else {
                let mut o = std::io::stderr().lock();
                let _ = o.write_all(&bytes);
                let _ = o.flush();
            }
        }
        wrote
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

async fn list(c: &Client, as_json: bool, all: bool) -> anyhow::Result<()> {
    let path = if all {
        "/api/wasmos/v1/tasks"
    } else {
        "/api/wasmos/v1/tasks?active=true"
    };
    let mut tasks: Vec<TaskView> = c.get(path).await?;
    tasks.sort_by(|a, b| a.launched_at.total_cmp(&b.launched_at));
    // Queued exec tasks are not in the cluster state yet.
    let queued: Vec<Value> = c
        .get::<Value>("/frameworks/exec/tasks?state=queued")
        .await
        .ok()
        .and_then(|v| v["tasks"].as_array().cloned())
        .unwrap_or_default();
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "tasks": tasks, "queued": queued }))?
        );
        return Ok(());
    }
    let now = now();
    let mut rows: Vec<Vec<String>> = queued
        .iter()
        .map(|q| {
            vec![
                q["id"].as_str().unwrap_or("").to_string(),
                "QUEUED".into(),
                "exec".into(),
                "-".into(),
                table::num(q["cpus"].as_f64().unwrap_or(0.0)),
                table::num(q["mem"].as_f64().unwrap_or(0.0)),
                "-".into(),
                q["command"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    rows.extend(tasks.iter().map(|t| {
        vec![
            t.id.to_string(),
            t.state.as_str().trim_start_matches("TASK_").to_string(),
            t.framework_id.to_string(),
            t.hostname.clone().unwrap_or_else(|| t.agent_id.to_string()),
            table::num(t.resources.cpus.as_f64()),
            table::num(t.resources.mem.as_f64()),
            table::age(now - t.launched_at),
            what_runs(t),
        ]
    }));
    if rows.is_empty() {
        eprintln!("no {}tasks", if all { "" } else { "live " });
        return Ok(());
    }
    table::print(
        &[
            "ID",
            "STATE",
            "FRAMEWORK",
            "HOST",
            "CPUS",
            "MEM",
            "AGE",
            "COMMAND",
        ],
        &rows,
    );
    Ok(())
}

async fn show(c: &Client, id: &str, as_json: bool) -> anyhow::Result<()> {
    let t: TaskView = c.get(&format!("/api/wasmos/v1/tasks/{id}")).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&t)?);
        return Ok(());
    }
    println!("id:         {}", t.id);
    println!("state:      {}", t.state);
    println!("framework:  {}", t.framework_id);
    println!(
        "agent:      {} ({})",
        t.agent_id,
        t.hostname.as_deref().unwrap_or("?")
    );
    println!("resources:  {}", t.resources);
    match &t.executor {
        Some(e) => {
            let kind = match e.kind {
                wasmos_core::ExecutorKind::Default => "default",
                wasmos_core::ExecutorKind::Custom => "custom",
            };
            println!("executor:   {} ({kind})", e.id);
            if let Some(c) = &e.command {
                println!("  command:  {}", c.display());
            }
            if let Some(g) = &e.group {
                println!("group:      {g}");
            }
            if e.kind == wasmos_core::ExecutorKind::Default {
                println!("command:    {}", t.command.display());
            }
        }
        None => println!("command:    {}", t.command.display()),
    }
    if let Some(m) = &t.status.message {
        println!("message:    {m}");
    }
    if let Some(code) = t.status.exit_code {
        println!("exit code:  {code}");
    }
    println!("history:");
    for s in &t.statuses {
        println!(
            "  {}  {}{}",
            table::age(now() - s.timestamp),
            s.state,
            s.message
                .as_deref()
                .map(|m| format!("  {m}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

async fn why(c: &Client, id: &str, as_json: bool) -> anyhow::Result<()> {
    let r: Record = c
        .get(&format!("/api/wasmos/v1/tasks/{id}/placement"))
        .await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_placement(&r);
    }
    Ok(())
}

/// A placement decision for people: the sentence, what was asked, what
/// ruled offers out, and the sampled agents.
pub(crate) fn print_placement(r: &Record) {
    let what = match &r.task_id {
        Some(t) => format!("task {t}"),
        None => format!("{} (waiting)", r.group),
    };
    println!(
        "{what} of framework {}, decided {} ago",
        r.framework_id,
        table::age(now() - r.at)
    );
    println!("  {}", r.summary);
    if r.task_id.is_some() && !r.group.is_empty() {
        println!("group:      {}", r.group);
    }
    println!(
        "needs:      {} cpus, {} MB mem, {} MB disk{}",
        table::num(r.resources.cpus.as_f64()),
        table::num(r.resources.mem.as_f64()),
        table::num(r.resources.disk.as_f64()),
        if r.resources.gpus > 0 {
            format!(", {} GPUs", r.resources.gpus)
        } else {
            String::new()
        }
    );
    if !r.rules.is_empty() {
        println!("rules:      {}", r.rules.join(", "));
    }
    println!("offers:     {} looked at", r.offers);
    if !r.explained {
        return;
    }
    if !r.refusals.is_empty() {
        println!("ruled out:");
        for x in &r.refusals {
            println!("  {:>6}  {}", x.offers, x.reason);
        }
    }
    println!();
    let rows: Vec<Vec<String>> = r
        .candidates
        .iter()
        .map(|c| {
            let verdict = match (&c.refused, Some(&c.agent_id) == r.chosen.as_ref()) {
                (_, true) => "chosen".to_string(),
                (Some(why), _) => why.clone(),
                (None, _) => "could take it".to_string(),
            };
            vec![
                c.hostname.clone(),
                c.agent_id.clone(),
                table::num(c.score),
                verdict,
            ]
        })
        .collect();
    table::print(&["HOST", "AGENT", "SCORE", "VERDICT"], &rows);
    let shown = r.candidates.len() as u32;
    if r.offers > shown {
        println!(
            "({} more offers not shown: counted above)",
            r.offers - shown
        );
    }
}

/// Why a framework's app, job or group waits: its latest refusal.
pub(crate) async fn why_waiting(
    c: &Client,
    framework: &str,
    group: &str,
    as_json: bool,
) -> anyhow::Result<bool> {
    let records: Vec<Record> = c
        .get(&format!(
            "/api/wasmos/v1/frameworks/{framework}/waiting?group={}",
            crate::vars::urlencode(group)
        ))
        .await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    }
    let Some(r) = records.first() else {
        return Ok(false);
    };
    if !as_json {
        print_placement(r);
    }
    Ok(true)
}

async fn kill(c: &Client, id: &str) -> anyhow::Result<()> {
    match c
        .post::<_, Value>(&format!("/api/wasmos/v1/tasks/{id}/kill"), &json!({}))
        .await
    {
        Ok(_) => {
            eprintln!("kill requested for {id}");
            Ok(())
        }
        Err(e) if is_not_found(&e) => {
            // Not launched yet: take it out of the exec framework's queue.
            match c
                .delete::<Value>(&format!("/frameworks/exec/tasks/{id}"))
                .await
            {
                Ok(_) => {
                    eprintln!("{id} was queued; it will not run");
                    Ok(())
                }
                Err(e2) if is_not_found(&e2) => {
                    bail!("no task {id} (see `wasmos task list --all`)")
                }
                Err(e2) => Err(e2.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

async fn logs(c: &Client, id: &str, follow: bool, file: &str) -> anyhow::Result<()> {
    let mut offset = 0u64;
    let mut idle = Duration::from_millis(100);
    loop {
        let path = format!(
            "/api/wasmos/v1/tasks/{id}/files/read?path={file}&offset={offset}&length=1048576"
        );
        let bytes = match c.bytes(&path).await {
            Ok(b) => b,
            Err(e) if is_not_found(&e) && follow => {
                // Launched but the sandbox is not there yet; or not launched.
                if current(c, id).await?.is_some() {
                    return Ok(());
                }
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
        if !bytes.is_empty() {
            offset += bytes.len() as u64;
            let mut o = std::io::stdout().lock();
            o.write_all(&bytes)?;
            o.flush()?;
            idle = Duration::from_millis(100);
            continue;
        }
        if !follow {
            return Ok(());
        }
        if current(c, id).await?.is_some() {
            // Ended: one last read for what it wrote at the very end.
            let path = format!(
                "/api/wasmos/v1/tasks/{id}/files/read?path={file}&offset={offset}&length=1048576"
            );
            if let Ok(b) = c.bytes(&path).await
                && !b.is_empty()
            {
                offset += b.len() as u64;
                std::io::stdout().write_all(&b)?;
                continue;
            }
            return Ok(());
        }
        tokio::time::sleep(idle).await;
        idle = (idle * 2).min(Duration::from_millis(500));
    }
}

/// What a listing shows a task runs: its command, or its custom executor.
fn what_runs(t: &TaskView) -> String {
    match &t.executor {
        Some(e) if e.kind == wasmos_core::ExecutorKind::Custom => {
            format!("(executor {})", e.id)
        }
        _ => t.command.display(),
    }
}
