//! `wasmos app`: long-running services through the bundled Marathon
//! framework's API (`/v2`), with a progress view of each deployment.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{Client, is_not_found};
use crate::table;

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Create or update an app from a Marathon app definition (JSON; `-`
    /// reads standard input), then follow its deployment.
    Deploy {
        file: String,
        /// Cancel deployments that hold the app instead of refusing.
        #[arg(long)]
        force: bool,
        /// Return once the deployment is accepted.
        #[arg(long)]
        no_wait: bool,
    },
    /// List apps with their task counts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show an app, its tasks and its deployments.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Change how many instances an app runs.
    Scale {
        id: String,
        instances: u32,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        no_wait: bool,
    },
    /// Replace every task of an app, within its upgrade strategy.
    Restart {
        id: String,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        no_wait: bool,
    },
    /// Why an app waits: what ruled out each agent its last round of
    /// offers came from, and what would make it fit (`wasmos task why`
    /// says why a running task went where it did).
    Why {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop an app's tasks and remove it.
    Remove {
        id: String,
        #[arg(long)]
        no_wait: bool,
    },
}

/// The `/v2/apps/...` path of an app id (`web`, `/web` or `/prod/web`).
fn app_path(id: &str) -> String {
    format!("/v2/apps/{}", id.trim_matches('/'))
}

pub async fn run(cmd: AppCommand, c: &Client) -> anyhow::Result<u8> {
    match cmd {
        AppCommand::Deploy {
            file,
            force,
            no_wait,
        } => deploy(c, &file, force, no_wait).await,
        AppCommand::List { json } => list(c, json).await,
        AppCommand::Show { id, json } => show(c, &id, json).await,
        AppCommand::Scale {
            id,
            instances,
            force,
            no_wait,
        } => {
            // PUT would create a missing app: make sure it exists first.
            c.get::<Value>(&app_path(&id))
                .await
                .map_err(|e| not_found_hint(e, &id))?;
            let path = format!("{}?force={force}", app_path(&id));
            let dr: Value = c
                .put(&path, &json!({ "instances": instances }))
                .await
                .map_err(|e| not_found_hint(e, &id))?;
            follow(
                c,
                &id,
                &dr,
                no_wait,
                &format!("scaling {id} to {instances}"),
            )
            .await
        }
        AppCommand::Restart { id, force, no_wait } => {
            let path = format!("{}/restart?force={force}", app_path(&id));
            let dr: Value = c
                .post(&path, &json!({}))
                .await
                .map_err(|e| not_found_hint(e, &id))?;
            follow(c, &id, &dr, no_wait, &format!("restarting {id}")).await
        }
        AppCommand::Why { id, json } => {
            let app: Value = c
                .get(&app_path(&id))
                .await
                .map_err(|e| not_found_hint(e, &id))?;
            let app_id = app["app"]["id"].as_str().unwrap_or(&id).to_string();
            if !crate::task::why_waiting(c, "marathon", &app_id, json).await? && !json {
                println!(
                    "{app_id} is not waiting for a place: each of its tasks runs where `wasmos task why TASK` says \
                     (`wasmos app show {app_id}` lists them)"
                );
            }
            Ok(0)
        }
        AppCommand::Remove { id, no_wait } => {
            let dr: Value = c
                .delete(&app_path(&id))
                .await
                .map_err(|e| not_found_hint(e, &id))?;
            follow(c, &id, &dr, no_wait, &format!("removing {id}")).await
        }
    }
}

fn not_found_hint(e: crate::client::ClientError, id: &str) -> anyhow::Error {
    if is_not_found(&e) {
        anyhow::anyhow!("{e}; `wasmos app list` shows the apps (ids look like /web or /prod/web)")
    } else if matches!(e, crate::client::ClientError::Api { status: 409, .. }) {
        anyhow::anyhow!("{e}\nwait for it (`wasmos app show {id}`), or pass --force to cancel it")
    } else {
        e.into()
    }
}

async fn deploy(c: &Client, file: &str, force: bool, no_wait: bool) -> anyhow::Result<u8> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin())
            .context("cannot read the definition from stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
    };
    let def: Value = serde_json::from_str(&text)
        .with_context(|| format!("{file} is not a JSON app definition"))?;
    let Some(id) = def.get("id").and_then(Value::as_str).map(str::to_string) else {
        bail!("{file}: the app definition needs an \"id\", e.g. \"/web\"");
    };
    // PUT creates the app or replaces its whole definition.
    let path = format!("{}?partialUpdate=false&force={force}", app_path(&id));
    let dr: Value = c
        .put(&path, &def)
        .await
        .map_err(|e| not_found_hint(e, &id))?;
    follow(c, &id, &dr, no_wait, &format!("deploying {id}")).await
}

/// Prints the deployment's progress until it is gone (done, or replaced).
async fn follow(c: &Client, id: &str, dr: &Value, no_wait: bool, what: &str) -> anyhow::Result<u8> {
    let dep = dr["deploymentId"].as_str().unwrap_or("").to_string();
    println!(
        "{what}: deployment {dep} (version {})",
        dr["version"].as_str().unwrap_or("?")
    );
    if no_wait {
        return Ok(0);
    }
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let deps: Value = c.get("/v2/deployments").await?;
        let mine = deps
            .as_array()
            .and_then(|d| d.iter().find(|d| d["id"] == dep.as_str()))
            .cloned();
        let app: Option<Value> = match c.get::<Value>(&app_path(id)).await {
            Ok(v) => Some(v["app"].clone()),
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(e.into()),
        };
        let line = progress_line(
            mine.as_ref(),
            app.as_ref(),
            &c.get::<Value>("/v2/queue").await.ok(),
            id,
        );
        if line != last {
            println!("  {:>5.1}s  {line}", start.elapsed().as_secs_f64());
            last = line;
        }
        if mine.is_none() {
            match app {
                Some(a) => println!(
                    "done in {:.1}s: {} of {} instances healthy",
                    start.elapsed().as_secs_f64(),
                    healthy_count(&a),
                    a["instances"]
                ),
                None => println!(
                    "done in {:.1}s: {id} is removed",
                    start.elapsed().as_secs_f64()
                ),
            }
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn healthy_count(app: &Value) -> usize {
    let checked = app["healthChecks"]
        .as_array()
        .is_some_and(|h| !h.is_empty());
    app["tasks"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter(|t| {
                    t["state"] == "TASK_RUNNING"
                        && (!checked
                            || t["healthCheckResults"].as_array().is_some_and(|h| {
                                !h.is_empty() && h.iter().all(|r| r["alive"] == true)
                            }))
                })
                .count()
        })
        .unwrap_or(0)
}

/// `step 2/2 RestartApplication /web · 2 of 3 healthy (1 staging) · waiting: ...`
fn progress_line(
    dep: Option<&Value>,
    app: Option<&Value>,
    queue: &Option<Value>,
    id: &str,
) -> String {
    let mut parts = Vec::new();
    if let Some(d) = dep {
        let actions: Vec<String> = d["currentActions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                format!(
                    "{} {}",
                    a["action"].as_str().unwrap_or("?"),
                    a["app"].as_str().unwrap_or("?")
                )
            })
            .collect();
        parts.push(format!(
            "step {}/{} {}",
            d["currentStep"],
            d["totalSteps"],
            actions.join(", ")
        ));
    }
    if let Some(a) = app {
        let tasks = a["tasks"].as_array().cloned().unwrap_or_default();
        let staging = tasks
            .iter()
            .filter(|t| t["state"] == "TASK_STAGING" || t["state"] == "TASK_STARTING")
            .count();
        let wanted = a["instances"].as_u64().unwrap_or(0) as usize;
        let healthy = healthy_count(a);
        let mut s = if tasks.len() == wanted {
            format!("{healthy} of {wanted} healthy")
        } else {
            format!("{healthy} of {wanted} healthy, {} tasks", tasks.len())
        };
        if staging > 0 {
            s.push_str(&format!(" ({staging} starting)"));
        }
        parts.push(s);
    }
    let canonical = format!("/{}", id.trim_matches('/'));
    if let Some(item) = queue
        .as_ref()
        .and_then(|q| q["queue"].as_array().cloned())
        .and_then(|q| q.into_iter().find(|i| i["app"]["id"] == canonical.as_str()))
    {
        let mut reasons: Vec<String> = item["processedOffersSummary"]["rejectSummaryLastOffers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["reason"].as_str().unwrap_or("?").to_string())
            .collect();
        reasons.dedup();
        let delay = item["delay"]["timeLeftSeconds"].as_u64().unwrap_or(0);
        let mut s = format!("{} waiting to launch", item["count"]);
        if delay > 0 {
            s.push_str(&format!(", backoff {delay}s"));
        }
        if !reasons.is_empty() {
            s.push_str(&format!(" (offers refused: {})", reasons.join(", ")));
        }
        parts.push(s);
    }
    if parts.is_empty() {
        return format!("{id} is gone");
    }
    parts.join(" · ")
}

async fn list(c: &Client, as_json: bool) -> anyhow::Result<u8> {
    let v: Value = c
        .get("/v2/apps?embed=app.counts&embed=app.deployments")
        .await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v["apps"])?);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = v["apps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            vec![
                a["id"].as_str().unwrap_or("").to_string(),
                format!("{}/{}", a["tasksRunning"], a["instances"]),
                a["tasksHealthy"].to_string(),
                table::num(a["cpus"].as_f64().unwrap_or(0.0)),
                table::num(a["mem"].as_f64().unwrap_or(0.0)),
                if a["deployments"].as_array().is_some_and(|d| !d.is_empty()) {
                    "deploying".into()
                } else {
                    "-".into()
                },
                a["version"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no apps; deploy one with `wasmos app deploy app.json`");
        return Ok(0);
    }
    table::print(
        &[
            "ID",
            "RUNNING",
            "HEALTHY",
            "CPUS",
            "MEM",
            "DEPLOYMENT",
            "VERSION",
        ],
        &rows,
    );
    Ok(0)
}

async fn show(c: &Client, id: &str, as_json: bool) -> anyhow::Result<u8> {
    let v: Value = c
        .get(&app_path(id))
        .await
        .map_err(|e| not_found_hint(e, id))?;
    let a = &v["app"];
    if as_json {
        println!("{}", serde_json::to_string_pretty(a)?);
        return Ok(0);
    }
    println!("id:        {}", a["id"].as_str().unwrap_or(""));
    if let Some(cmd) = a["cmd"].as_str() {
        println!("cmd:       {cmd}");
    }
    if let Some(image) = a["container"]["docker"]["image"].as_str() {
        println!("image:     {image}");
    }
    println!(
        "instances: {} ({} running, {} healthy)",
        a["instances"], a["tasksRunning"], a["tasksHealthy"]
    );
    println!(
        "resources: cpus {} mem {} disk {}",
        a["cpus"], a["mem"], a["disk"]
    );
    println!("version:   {}", a["version"].as_str().unwrap_or(""));
    for d in a["deployments"].as_array().into_iter().flatten() {
        println!("deploying: {}", d["id"].as_str().unwrap_or(""));
    }
    if let Some(f) = a.get("lastTaskFailure") {
        println!(
            "last failure: {} {} at {} ({})",
            f["taskId"].as_str().unwrap_or(""),
            f["state"].as_str().unwrap_or(""),
            f["timestamp"].as_str().unwrap_or(""),
            f["message"].as_str().unwrap_or("")
        );
    }
    let rows: Vec<Vec<String>> = a["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let health = t["healthCheckResults"]
                .as_array()
                .and_then(|h| h.first())
                .map(|h| {
                    if h["alive"] == true {
                        "healthy"
                    } else {
                        "unhealthy"
                    }
                })
                .unwrap_or("-");
            let ports: Vec<String> = t["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p.to_string())
                .collect();
            vec![
                t["id"].as_str().unwrap_or("").to_string(),
                t["state"].as_str().unwrap_or("").to_string(),
                health.to_string(),
                t["host"].as_str().unwrap_or("").to_string(),
                ports.join(","),
                t["version"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        println!();
        table::print(
            &["TASK", "STATE", "HEALTH", "HOST", "PORTS", "VERSION"],
            &rows,
        );
    }
    Ok(0)
}
