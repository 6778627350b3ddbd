//! `wasmos job`: repeating and dependent batch jobs through the bundled
//! Chronos framework — its Chronos API (`/v1/scheduler`) to change jobs,
//! its Wasmos view (`/frameworks/chronos/jobs`) to show them.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use crate::client::{Client, is_not_found};
use crate::table;

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Add or replace jobs from Chronos job JSON (one job or a list; `-`
    /// reads standard input). Jobs with `parents` are dependent jobs.
    Add { file: String },
    /// List jobs: schedule or parents, next run, last result, what runs.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a job, its runs in flight and its history.
    Show {
        name: String,
        /// How many finished runs to show.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        #[arg(long)]
        json: bool,
    },
    /// Run a job now (its children follow when it succeeds).
    Run {
        name: String,
        /// Appended to the job's command for this run.
        #[arg(long)]
        arguments: Option<String>,
        /// Follow the run until it ends; exit 0 only if it succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// Why a job's queued run waits: what ruled out each agent its last
    /// round of offers came from, and what would make it fit.
    Why {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Kill a job's running tasks (queued runs stay queued).
    Kill { name: String },
    /// Remove a job; its children are re-linked as Chronos does.
    Remove { name: String },
    /// Draw the dependency graph.
    Graph {
        /// Print Graphviz DOT instead.
        #[arg(long)]
        dot: bool,
    },
}

/// A job name in a URL path.
fn path_name(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn not_found_hint(e: crate::client::ClientError, name: &str) -> anyhow::Error {
    let text = e.to_string();
    if is_not_found(&e) || text.contains("not found") {
        anyhow::anyhow!("{text}; `wasmos job list` shows the jobs")
    } else {
        anyhow::anyhow!("job {name}: {text}")
    }
}

pub async fn run(cmd: JobCommand, c: &Client) -> anyhow::Result<u8> {
    match cmd {
        JobCommand::Add { file } => add(c, &file).await.map(|_| 0),
        JobCommand::List { json } => list(c, json).await.map(|_| 0),
        JobCommand::Show { name, runs, json } => show(c, &name, runs, json).await.map(|_| 0),
        JobCommand::Run {
            name,
            arguments,
            wait,
        } => run_now(c, &name, arguments.as_deref(), wait).await,
        JobCommand::Why { name, json } => {
            let _: Value = c
                .get(&format!("/frameworks/chronos/jobs/{}", path_name(&name)))
                .await
                .map_err(|e| not_found_hint(e, &name))?;
            if !crate::task::why_waiting(c, "chronos", &name, json).await? && !json {
                println!(
                    "no run of {name} is waiting for a place (`wasmos job show {name}` shows its runs; \
                     `wasmos task why TASK` says why one ran where it did)"
                );
            }
            Ok(0)
        }
        JobCommand::Kill { name } => {
            delete(c, "task/kill", &name).await?;
            println!("kill sent to the running tasks of {name}");
            Ok(0)
        }
        JobCommand::Remove { name } => {
            delete(c, "job", &name).await?;
            println!("{name} removed");
            Ok(0)
        }
        JobCommand::Graph { dot } => {
            let g: Value = c.get("/frameworks/chronos/graph").await?;
            let key = if dot { "dot" } else { "tree" };
            let text = g[key].as_str().unwrap_or("");
            if text.is_empty() {
                eprintln!("no jobs; add one with `wasmos job add FILE`");
            } else {
                print!("{text}");
            }
            Ok(0)
        }
    }
}

/// `DELETE /v1/scheduler/<what>/<name>`.
async fn delete(c: &Client, what: &str, name: &str) -> anyhow::Result<()> {
    let path = format!("/v1/scheduler/{what}/{}", path_name(name));
    c.send_no_content(Method::DELETE, &path, None)
        .await
        .map_err(|e| not_found_hint(e, name))
}

async fn add(c: &Client, file: &str) -> anyhow::Result<()> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
    };
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("{file} is not JSON (a Chronos job, or a list of them)"))?;
    let jobs = match v {
        Value::Array(a) => a,
        one => vec![one],
    };
    if jobs.is_empty() {
        bail!("{file} holds no jobs");
    }
    // Parents first, so that each dependent job finds its parents.
    let mut order: Vec<&Value> = jobs.iter().filter(|j| j.get("parents").is_none()).collect();
    let mut dependent: Vec<&Value> = jobs.iter().filter(|j| j.get("parents").is_some()).collect();
    while !dependent.is_empty() {
        let known: Vec<&str> = order.iter().filter_map(|j| j["name"].as_str()).collect();
        let (ready, later): (Vec<&Value>, Vec<&Value>) = dependent.into_iter().partition(|j| {
            j["parents"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str())
                .all(|p| known.contains(&p) || !jobs.iter().any(|x| x["name"] == p))
        });
        if ready.is_empty() {
            // A cycle within the file: let the server name it.
            order.extend(later);
            break;
        }
        order.extend(ready);
        dependent = later;
    }
    for job in order {
        let name = job["name"].as_str().unwrap_or("(no name)");
        let endpoint = if job.get("parents").is_some() {
            "dependency"
        } else {
            "iso8601"
        };
        c.send_no_content(
            Method::POST,
            &format!("/v1/scheduler/{endpoint}"),
            Some(job),
        )
        .await
        .map_err(|e| anyhow::anyhow!("job {name}: {e}"))?;
        println!("{name} saved");
    }
    Ok(())
}

fn short_time(iso: &Value) -> String {
    iso.as_str()
        .filter(|s| !s.is_empty())
        .map(|s| s.replace('T', " ").trim_end_matches('Z').to_string())
        .map(|s| s.split('.').next().unwrap_or("").to_string() + "Z")
        .unwrap_or_else(|| "-".into())
}

async fn list(c: &Client, json: bool) -> anyhow::Result<()> {
    let v: Value = c.get("/frameworks/chronos/jobs").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let jobs = v["jobs"].as_array().cloned().unwrap_or_default();
    if jobs.is_empty() {
        eprintln!("no jobs; add one with `wasmos job add FILE` (Chronos job JSON)");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            let when = if j["kind"] == "dependent" {
                let parents: Vec<&str> = j["parents"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.as_str())
                    .collect();
                format!("after {}", parents.join(" + "))
            } else {
                j["schedule"].as_str().unwrap_or("").to_string()
            };
            let next = if j["disabled"] == true {
                "disabled".to_string()
            } else {
                short_time(&j["next_run"])
            };
            let last = match &j["last_run"] {
                Value::Object(r) => format!(
                    "{} {}",
                    r.get("result").and_then(|x| x.as_str()).unwrap_or(""),
                    short_time(r.get("ended").unwrap_or(&Value::Null))
                ),
                _ => "-".into(),
            };
            vec![
                j["name"].as_str().unwrap_or("").to_string(),
                when,
                next,
                last,
                format!("{}/{}", j["success_count"], j["error_count"]),
                j["state"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    table::print(
        &[
            "NAME",
            "SCHEDULE",
            "NEXT RUN",
            "LAST RESULT",
            "OK/ERR",
            "STATE",
        ],
        &rows,
    );
    Ok(())
}

fn run_rows<'a>(runs: impl Iterator<Item = &'a Value>) -> Vec<Vec<String>> {
    runs.map(|r| {
        let attempts = r["attempts"].as_array().cloned().unwrap_or_default();
        let last = attempts.last();
        let exit = last
            .and_then(|a| a["exit_code"].as_i64())
            .map_or("-".into(), |c| c.to_string());
        let task = last
            .and_then(|a| a["task_id"].as_str())
            .unwrap_or("-")
            .to_string();
        vec![
            r["id"].as_str().unwrap_or("").to_string(),
            short_time(&r["due"]),
            r["trigger"].as_str().unwrap_or("").to_string(),
            r["state"].as_str().unwrap_or("").to_string(),
            attempts.len().to_string(),
            short_time(&r["started"]),
            short_time(&r["ended"]),
            exit,
            task,
            r["message"].as_str().unwrap_or("").to_string(),
        ]
    })
    .collect()
}

const RUN_HEADER: [&str; 10] = [
    "RUN", "DUE", "TRIGGER", "RESULT", "TRIES", "STARTED", "ENDED", "EXIT", "TASK", "MESSAGE",
];

async fn show(c: &Client, name: &str, runs: usize, json: bool) -> anyhow::Result<()> {
    let v: Value = c
        .get(&format!("/frameworks/chronos/jobs/{}", path_name(name)))
        .await
        .map_err(|e| not_found_hint(e, name))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let j = &v["job"];
    let d = &v["definition"];
    println!("name:        {}", j["name"].as_str().unwrap_or(""));
    println!("command:     {}", d["command"].as_str().unwrap_or(""));
    if j["kind"] == "dependent" {
        let parents: Vec<&str> = j["parents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str())
            .collect();
        println!(
            "after:       {} (each since this job last started)",
            parents.join(" + ")
        );
    } else {
        let tz = j["schedule_time_zone"].as_str().filter(|t| !t.is_empty());
        println!(
            "schedule:    {}{}",
            j["schedule"].as_str().unwrap_or(""),
            tz.map(|t| format!(" ({t})")).unwrap_or_default()
        );
        println!("next run:    {}", short_time(&j["next_run"]));
    }
    let n = |k: &str| table::num(d[k].as_f64().unwrap_or(0.0));
    println!(
        "resources:   {} cpus, {} MB memory, {} MB disk, as {}",
        n("cpus"),
        n("mem"),
        n("disk"),
        d["runAsUser"].as_str().unwrap_or("")
    );
    println!(
        "results:     {} succeeded, {} failed ({}); {}{}",
        j["success_count"],
        j["error_count"],
        j["status"].as_str().unwrap_or(""),
        j["state"].as_str().unwrap_or(""),
        if j["disabled"] == true {
            ", disabled"
        } else {
            ""
        }
    );
    if let Some(w) = j["waiting_for"].as_str() {
        println!("waiting:     {w}");
    }
    let s = &v["stats"];
    if s["count"].as_u64().unwrap_or(0) > 0 {
        println!(
            "due → end:   median {} ms, p99 {} ms over {} successful runs",
            table::num(s["median_ms"].as_f64().unwrap_or(0.0)),
            table::num(s["p99_ms"].as_f64().unwrap_or(0.0)),
            s["count"]
        );
    }
    let active = v["active"].as_array().cloned().unwrap_or_default();
    if !active.is_empty() {
        println!("\nin flight:");
        table::print(&RUN_HEADER, &run_rows(active.iter()));
    }
    let history = v["history"].as_array().cloned().unwrap_or_default();
    if history.is_empty() {
        println!("\nno finished runs yet");
    } else {
        println!("\nhistory (newest first; `wasmos task logs TASK` shows a run's output):");
        table::print(&RUN_HEADER, &run_rows(history.iter().take(runs)));
    }
    Ok(())
}

async fn run_now(
    c: &Client,
    name: &str,
    arguments: Option<&str>,
    wait: bool,
) -> anyhow::Result<u8> {
    let q = arguments
        .map(|a| format!("?arguments={}", path_name(a)))
        .unwrap_or_default();
    let r: Value = c
        .post(
            &format!("/frameworks/chronos/jobs/{}/runs{q}", path_name(name)),
            &serde_json::json!({}),
        )
        .await
        .map_err(|e| not_found_hint(e, name))?;
    let run = r["run"].as_str().unwrap_or("").to_string();
    if r["joined"] == true {
        println!("{name}: joined the queued run {run}");
    } else {
        println!("{name}: run {run} queued");
    }
    if !wait || run.is_empty() {
        return Ok(0);
    }
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let v: Value = c
            .get(&format!("/frameworks/chronos/jobs/{}", path_name(name)))
            .await
            .map_err(|e| not_found_hint(e, name))?;
        let find = |list: &str| {
            v[list]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["id"] == run.as_str()).cloned())
        };
        if let Some(done) = find("history") {
            let state = done["state"].as_str().unwrap_or("");
            let msg = done["message"].as_str().unwrap_or("");
            println!(
                "{name}: run {run} {state} after {:.1}s{}",
                started.elapsed().as_secs_f64(),
                if msg.is_empty() {
                    String::new()
                } else {
                    format!(": {msg}")
                }
            );
            return Ok(if state == "succeeded" { 0 } else { 1 });
        }
        let now = match find("active") {
            Some(r) => {
                let attempt = r["attempt"].as_u64().unwrap_or(0);
                let mut s = format!(
                    "{} (attempt {})",
                    r["state"].as_str().unwrap_or(""),
                    attempt + 1
                );
                if let Some(w) = v["job"]["waiting_for"].as_str() {
                    s.push_str(&format!(": waiting for an offer: {w}"));
                }
                s
            }
            None => "gone (the job was removed?)".into(),
        };
        if now != last {
            eprintln!("{:>5.1}s  {now}", started.elapsed().as_secs_f64());
            last = now;
        }
        if last.starts_with("gone") {
            return Ok(1);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
