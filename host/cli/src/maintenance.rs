//! `wasmos maintenance ...`: Mesos' maintenance schedule and machines'
//! modes, through the masters' operator API (`/api/v1`).

use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::Client;
use crate::table;

#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// The schedule and each scheduled machine's mode (DRAINING until it is
    /// taken down, then DOWN), with frameworks' answers to inverse offers.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Add a window to the schedule: these machines (host names, or
    /// addresses) will be unavailable from --start for --duration.
    /// Frameworks with tasks there get inverse offers; nothing stops yet.
    Schedule {
        #[arg(required = true, value_name = "MACHINE")]
        machines: Vec<String>,
        /// When the machines go: RFC 3339 (`2026-12-05T02:00:00Z`) or `now`.
        #[arg(long, default_value = "now")]
        start: String,
        /// For how long, e.g. `2h` or `90m` (open-ended without it).
        #[arg(long)]
        duration: Option<String>,
    },
    /// Take scheduled machines down: their tasks end, their agents get
    /// nothing and may not register until `up`.
    Down {
        #[arg(required = true, value_name = "MACHINE")]
        machines: Vec<String>,
    },
    /// Bring machines up again (they leave the schedule).
    Up {
        #[arg(required = true, value_name = "MACHINE")]
        machines: Vec<String>,
    },
    /// Empty the schedule (machines that are down stay down until `up`).
    Cancel,
}

/// A machine as Mesos names one: an address, or a host name.
fn machine(s: &str) -> Value {
    if s.parse::<std::net::IpAddr>().is_ok() {
        json!({ "ip": s })
    } else {
        json!({ "hostname": s })
    }
}

fn nanos(s: &str, what: &str) -> anyhow::Result<i64> {
    let t = if s == "now" {
        jiff::Timestamp::now()
    } else {
        s.parse::<jiff::Timestamp>().map_err(|e| {
            anyhow::anyhow!("{what} {s:?} is not an RFC 3339 time (e.g. 2026-12-05T02:00:00Z): {e}")
        })?
    };
    i64::try_from(t.as_nanosecond()).map_err(|_| anyhow::anyhow!("{what} {s:?} is out of range"))
}

async fn schedule_of(c: &Client) -> anyhow::Result<Vec<Value>> {
    let v: Value = c
        .post("/api/v1", &json!({"type": "GET_MAINTENANCE_SCHEDULE"}))
        .await?;
    Ok(v["get_maintenance_schedule"]["schedule"]["windows"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

async fn call(c: &Client, body: Value) -> anyhow::Result<()> {
    c.send_no_content(reqwest::Method::POST, "/api/v1", Some(&body))
        .await?;
    Ok(())
}

pub async fn run(cmd: MaintenanceCommand, c: &Client) -> anyhow::Result<()> {
    match cmd {
        MaintenanceCommand::Status { json } => {
            let windows = schedule_of(c).await?;
            let status: Value = c
                .post("/api/v1", &json!({"type": "GET_MAINTENANCE_STATUS"}))
                .await?;
            let status = &status["get_maintenance_status"]["status"];
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"schedule": {"windows": windows}, "status": status})
                    )?
                );
                return Ok(());
            }
            let name = |m: &Value| {
                m["hostname"]
                    .as_str()
                    .or(m["ip"].as_str())
                    .unwrap_or("?")
                    .to_string()
            };
            let down: Vec<String> = status["down_machines"]
                .as_array()
                .into_iter()
                .flatten()
                .map(name)
                .collect();
            let mut rows = Vec::new();
            for w in &windows {
                let start = w["unavailability"]["start"]["nanoseconds"]
                    .as_i64()
                    .and_then(|n| jiff::Timestamp::from_nanosecond(n.into()).ok())
                    .map_or("?".to_string(), |t| t.to_string());
                let duration = w["unavailability"]["duration"]["nanoseconds"]
                    .as_i64()
                    .map_or("open".to_string(), |n| {
                        format!("{:#}", jiff::SignedDuration::from_nanos(n))
                    });
                for m in w["machine_ids"].as_array().into_iter().flatten() {
                    let n = name(m);
                    let answers: Vec<String> = status["draining_machines"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|d| name(&d["id"]) == n)
                        .flat_map(|d| d["statuses"].as_array().cloned().unwrap_or_default())
                        .map(|s| {
                            format!(
                                "{}: {}",
                                s["framework_id"]["value"].as_str().unwrap_or("?"),
                                s["status"].as_str().unwrap_or("?")
                            )
                        })
                        .collect();
                    let mode = if down.contains(&n) {
                        "DOWN"
                    } else {
                        "DRAINING"
                    };
                    rows.push(vec![
                        n,
                        mode.to_string(),
                        start.clone(),
                        duration.clone(),
                        answers.join(", "),
                    ]);
                }
            }
            if rows.is_empty() {
                eprintln!(
                    "no machine is scheduled for maintenance; `wasmos maintenance schedule HOST --start TIME --duration 2h` adds one"
                );
                return Ok(());
            }
            table::print(
                &["MACHINE", "MODE", "START", "DURATION", "INVERSE OFFERS"],
                &rows,
            );
        }
        MaintenanceCommand::Schedule {
            machines,
            start,
            duration,
        } => {
            let start_ns = nanos(&start, "--start")?;
            let mut unavailability = json!({"start": {"nanoseconds": start_ns}});
            if let Some(d) = duration {
                let d: jiff::SignedDuration = d.parse().map_err(|e| {
                    anyhow::anyhow!("--duration {d:?} is not a duration (e.g. 2h, 90m): {e}")
                })?;
                if d.is_negative() {
                    anyhow::bail!("--duration must not be negative");
                }
                unavailability["duration"] =
                    json!({"nanoseconds": i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)});
            }
            let mut windows = schedule_of(c).await?;
            windows.push(json!({
                "machine_ids": machines.iter().map(|m| machine(m)).collect::<Vec<_>>(),
                "unavailability": unavailability,
            }));
            call(
                c,
                json!({"type": "UPDATE_MAINTENANCE_SCHEDULE",
                       "update_maintenance_schedule": {"schedule": {"windows": windows}}}),
            )
            .await?;
            println!(
                "scheduled {}: frameworks running there get inverse offers; `wasmos maintenance down` takes them down",
                machines.join(", ")
            );
        }
        MaintenanceCommand::Down { machines } => {
            call(
                c,
                json!({"type": "START_MAINTENANCE",
                       "start_maintenance": {"machines": machines.iter().map(|m| machine(m)).collect::<Vec<_>>()}}),
            )
            .await?;
            println!(
                "{} down: their tasks ended and nothing is placed there; `wasmos maintenance up` brings them back",
                machines.join(", ")
            );
        }
        MaintenanceCommand::Up { machines } => {
            call(
                c,
                json!({"type": "STOP_MAINTENANCE",
                       "stop_maintenance": {"machines": machines.iter().map(|m| machine(m)).collect::<Vec<_>>()}}),
            )
            .await?;
            println!("{} up again, out of the schedule", machines.join(", "));
        }
        MaintenanceCommand::Cancel => {
            call(
                c,
                json!({"type": "UPDATE_MAINTENANCE_SCHEDULE",
                       "update_maintenance_schedule": {"schedule": {"windows": []}}}),
            )
            .await?;
            println!("the maintenance schedule is empty");
        }
    }
    Ok(())
}
