//! Chronos' REST API, both prefixes, and the Wasmos view of jobs.
//!
//! - Chronos 3.x under `/v1/scheduler/...`, Chronos 2.x under
//!   `/scheduler/...` (its job JSON carries `epsilon` and `async`, and it
//!   takes `PUT` to update); both also below `/frameworks/chronos/`.
//!   Bodiless successes are exactly 204 (chronos-python treats an empty 200
//!   as an error); errors are 400 `{"status": "Bad Request", "message"}`,
//!   "not found" included, as Chronos answers them.
//! - `/metrics` in Chronos' Dropwizard JSON shape (the master merges it
//!   with Marathon's).
//! - For `wasmos job` and the dashboard, below `/frameworks/chronos/`:
//!   `GET /jobs` (each job with its schedule, next run, last result and
//!   what runs), `GET /jobs/<name>` (the job, its runs in flight and its
//!   history with every attempt), `POST /jobs/<name>/runs[?arguments=]`
//!   (run now: 201 with the run's id, or 200 when it joined a queued run),
//!   `GET /graph` (the tree and DOT).

use serde_json::{Value, json};
use wasmos_sdk::framework::placement_service;
use wasmos_sdk::framework::{Request, Response};

use crate::job::{Endpoint, JobDef, Kind};
use crate::model::{Histogram, KillCause, Run, RunState};
use crate::schedule::{Schedule, iso_ms, short_time};
use crate::{Chronos, graph, now};

/// Chronos' error: 400 unless said otherwise, with `status` and `message`.
fn error(status: u16, message: &str) -> Response {
    let reason = match status {
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        _ => "Internal Server Error",
    };
    Response::json(status, &json!({ "status": reason, "message": message }))
}

fn bad(message: &str) -> Response {
    error(400, message)
}

fn not_found(name: &str) -> Response {
    bad(&format!("Job '{name}' not found"))
}

pub fn handle(c: &mut Chronos, req: &Request) -> Response {
    let method = req.method.to_ascii_uppercase();
    let segs = req.decoded_segments();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["v1", "scheduler", rest @ ..] => scheduler(c, req, &method, rest, false),
        ["scheduler", rest @ ..] => scheduler(c, req, &method, rest, true),
        ["metrics"] if method == "GET" => Response::json(200, &metrics(c)),
        ["ping"] if method == "GET" => Response::text(200, "pong\n"),
        [] if method == "GET" => Response::json(
            200,
            &json!({
                "framework": "chronos",
                "jobs": c.jobs.len(),
                "runs_in_flight": c.runs.len(),
            }),
        ),
        ["jobs"] if method == "GET" => Response::json(200, &json!({ "jobs": job_views(c) })),
        ["jobs", name] if method == "GET" => job_detail(c, name),
        ["jobs", name, "runs"] if method == "POST" => {
            if !c.jobs.contains_key(*name) {
                return error(404, &format!("no job {name}"));
            }
            if c.jobs.get(*name).is_some_and(|j| j.def.disabled) {
                return error(
                    409,
                    &format!("job {name} is disabled: a run would be dropped"),
                );
            }
            let args = req
                .query_param("arguments")
                .filter(|a| !a.trim().is_empty());
            match c.run_now(name, args) {
                Some(id) => Response::json(201, &json!({ "job": name, "run": id })),
                None => {
                    let queued = c
                        .runs_of(name)
                        .find(|(_, r)| r.state == RunState::Queued)
                        .map(|(k, _)| k.1.clone());
                    Response::json(
                        200,
                        &json!({ "job": name, "run": queued, "joined": true,
                                 "message": "a run of this job was already queued; this request joined it" }),
                    )
                }
            }
        }
        ["graph"] if method == "GET" => Response::json(
            200,
            &json!({
                "tree": graph::tree(&c.jobs, |n| tree_label(c, n)),
                "dot": graph::dot(&c.jobs),
            }),
        ),
        _ => error(404, &format!("no endpoint {method} {}", req.path)),
    }
}

/// One Chronos endpoint (`legacy`: the 2.x prefix).
fn scheduler(
    c: &mut Chronos,
    req: &Request,
    method: &str,
    rest: &[&str],
    legacy: bool,
) -> Response {
    match (method, rest) {
        ("GET", ["jobs"]) => {
            let jobs: Vec<Value> = c.jobs.values().map(|j| chronos_json(j, legacy)).collect();
            Response::json(200, &jobs)
        }
        ("GET", ["jobs", "search"]) => search(c, req, legacy),
        ("GET", ["jobs", "summary"]) => summary(c),
        ("POST" | "PUT", ["iso8601"]) => add(c, req, Endpoint::Iso8601, legacy),
        ("POST" | "PUT", ["dependency"]) => add(c, req, Endpoint::Dependency, legacy),
        ("GET", ["job", "stat", name]) => job_stat(c, name),
        ("PUT", ["job", "success", name]) => {
            if !c.jobs.contains_key(*name) {
                return not_found(name);
            }
            c.mark_success(name);
            Response::text(200, &format!("marked job {name} as successful: true"))
        }
        ("GET", ["job", name]) => match c.jobs.get(*name) {
            Some(j) => Response::json(200, &chronos_json(j, legacy)),
            None => not_found(name),
        },
        ("PUT", ["job", name]) => {
            if !c.jobs.contains_key(*name) {
                return not_found(name);
            }
            let args = req
                .query_param("arguments")
                .filter(|a| !a.trim().is_empty());
            c.run_now(name, args);
            Response::empty(204)
        }
        ("DELETE", ["job", name]) => {
            if !c.jobs.contains_key(*name) {
                return not_found(name);
            }
            c.delete_job(name);
            Response::empty(204)
        }
        ("DELETE", ["task", "kill", name]) => {
            if !c.jobs.contains_key(*name) {
                return not_found(name);
            }
            c.kill_runs(name, KillCause::Request);
            Response::empty(204)
        }
        ("GET", ["stats", pct]) => stats(c, pct),
        ("GET", ["graph", "dot"]) => Response::text(200, &graph::dot(&c.jobs)),
        ("GET", ["graph", "csv"]) => {
            let csv = graph::csv(&c.jobs, |n| c.state_of(n));
            if csv.is_empty() {
                // chronos-python treats an empty 200 as an error.
                Response::empty(204)
            } else {
                Response::text(200, &csv)
            }
        }
        ("GET", ["leader"]) => Response::json(
            200,
            &json!({ "leader": req.header("host").unwrap_or("localhost") }),
        ),
        (
            _,
            ["jobs"]
            | ["jobs", "search" | "summary"]
            | ["iso8601" | "dependency" | "leader"]
            | ["job", ..]
            | ["task", "kill", _]
            | ["stats", _]
            | ["graph", "dot" | "csv"],
        ) => error(405, &format!("{method} is not allowed here")),
        _ => error(404, &format!("no endpoint {method} {}", req.path)),
    }
}

fn chronos_json(j: &crate::model::JobRecord, legacy: bool) -> Value {
    j.def.to_json(&j.counters, j.schedule.as_deref(), legacy)
}

/// `POST /iso8601` and `/dependency`: validate, then create or replace.
fn add(c: &mut Chronos, req: &Request, endpoint: Endpoint, legacy: bool) -> Response {
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => return bad(&format!("invalid JSON body: {e}")),
    };
    let now_ms = now();
    let (def, counters) = match JobDef::parse(
        &body,
        endpoint,
        legacy,
        &c.settings.defaults,
        &iso_ms(now_ms),
    ) {
        Ok(x) => x,
        Err(e) => return bad(&e),
    };
    let exists = c.jobs.contains_key(&def.name);
    let sched = match &def.kind {
        Kind::Scheduled {
            schedule,
            time_zone,
        } => match Schedule::parse(schedule, time_zone, now_ms) {
            Ok(s) => Some(s),
            Err(e) => return bad(&e),
        },
        Kind::Dependent { parents } => {
            let missing: Vec<&String> = parents
                .iter()
                .filter(|p| !c.jobs.contains_key(p.as_str()))
                .collect();
            if exists && !missing.is_empty() {
                return bad(&format!(
                    "JobSchedule {} does not have all parents defined! Missing: {}",
                    def.name,
                    missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if let Some(cycle) = graph::cycle(&c.jobs, &def.name, parents) {
                return bad(&format!(
                    "parents of {} would make a cycle: {}",
                    def.name,
                    cycle.join(" -> ")
                ));
            }
            None
        }
    };
    if !def.constraints.is_empty()
        && let Err(e) = placement_service::validate(&Chronos::rules(&def))
    {
        return bad(&format!("constraints: {e}"));
    }
    c.put_job(def, &counters, sched);
    Response::empty(204)
}

fn search(c: &Chronos, req: &Request, legacy: bool) -> Response {
    let lower = |k: &str| req.query_param(k).map(|v| v.to_lowercase());
    let (name, command, any) = (lower("name"), lower("command"), lower("any"));
    let num = |k: &str, d: usize| -> Result<usize, Response> {
        match req.query_param(k) {
            None => Ok(d),
            Some(v) => v
                .parse()
                .map_err(|_| bad(&format!("{k} must be a whole number, got {v:?}"))),
        }
    };
    let limit = match num("limit", 10) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let offset = match num("offset", 0) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let jobs: Vec<Value> = c
        .jobs
        .values()
        .filter(|j| {
            let n = j.def.name.to_lowercase();
            let cmd = j.def.command.to_lowercase();
            name.as_ref().is_none_or(|q| n.contains(q))
                && command.as_ref().is_none_or(|q| cmd.contains(q))
                && any
                    .as_ref()
                    .is_none_or(|q| n.contains(q) || cmd.contains(q))
        })
        .skip(offset)
        .take(limit)
        .map(|j| chronos_json(j, legacy))
        .collect();
    Response::json(200, &jobs)
}

fn summary(c: &Chronos) -> Response {
    let jobs: Vec<Value> = c
        .jobs
        .values()
        .map(|j| {
            json!({
                "name": j.def.name,
                "status": j.counters.status(),
                "state": c.state_of(&j.def.name),
                "schedule": j.schedule.clone().unwrap_or_default(),
                "parents": j.def.parents(),
                "disabled": j.def.disabled,
            })
        })
        .collect();
    Response::json(200, &json!({ "jobs": jobs }))
}

fn histogram(c: &Chronos, name: &str) -> Histogram {
    c.recent
        .get(name)
        .map(|ring| Histogram::of(ring.iter()))
        .unwrap_or_default()
}

/// `job/stat/<name>`: percentiles (ms) of successful runs' due-to-end
/// times, and the history (Chronos' shape, plus Wasmos' run fields).
fn job_stat(c: &Chronos, name: &str) -> Response {
    if !c.jobs.contains_key(name) {
        return not_found(name);
    }
    let h = histogram(c, name);
    let history: Vec<Value> = c
        .history(name)
        .iter()
        .flat_map(|r| {
            r.attempts.iter().map(move |a| {
                let mut v = json!({
                    "taskId": a.task_id,
                    "jobName": r.job,
                    "slaveId": a.agent_id,
                    "startTime": short_time(a.started_ms.unwrap_or(a.launched_ms)),
                    "endTime": a.ended_ms.map_or("N/A".to_string(), short_time),
                    "status": a.state,
                    "runId": r.id,
                    "due": iso_ms(r.due_ms),
                    "attempt": a.attempt,
                    "exitCode": a.exit_code,
                });
                if let (Some(s), Some(e)) = (a.started_ms, a.ended_ms) {
                    v["duration"] = json!(format!("{:.3}s", e.saturating_sub(s) as f64 / 1000.0));
                }
                v
            })
        })
        .collect();
    Response::json(
        200,
        &json!({
            "histogram": {
                "75thPercentile": h.p75, "95thPercentile": h.p95, "98thPercentile": h.p98,
                "99thPercentile": h.p99, "median": h.median, "mean": h.mean, "count": h.count,
            },
            "taskStatHistory": history,
        }),
    )
}

/// `stats/<pct>`: one entry per job, never-run jobs included, slowest first,
/// in seconds.
fn stats(c: &Chronos, pct: &str) -> Response {
    if Histogram::default().get(pct).is_none() {
        return bad(&format!(
            "unknown statistic {pct:?}; use 99thPercentile, 98thPercentile, 95thPercentile, 75thPercentile, median or mean"
        ));
    }
    let mut rows: Vec<(f64, String)> = c
        .jobs
        .keys()
        .map(|n| {
            let ms = histogram(c, n).get(pct).unwrap_or(0.0);
            (ms / 1000.0, n.clone())
        })
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let out: Vec<Value> = rows
        .into_iter()
        .map(|(t, n)| json!({ "jobNameLabel": n, "time": t }))
        .collect();
    Response::json(200, &out)
}

fn metrics(c: &Chronos) -> Value {
    let gauge = |v: usize| json!({ "value": v });
    let count = |s: RunState| c.runs.values().filter(|r| r.state == s).count();
    json!({
        "version": "3.0.0",
        "gauges": {
            "chronos.jobs.count": gauge(c.jobs.len()),
            "chronos.jobs.disabled": gauge(c.jobs.values().filter(|j| j.def.disabled).count()),
            "chronos.runs.queued": gauge(count(RunState::Queued)),
            "chronos.runs.launched": gauge(count(RunState::Launched)),
            "chronos.runs.running": gauge(count(RunState::Running)),
        },
        "counters": {
            "chronos.runs.launched.total": { "count": c.launched },
            "chronos.runs.succeeded.total": { "count": c.succeeded },
            "chronos.runs.failed.total": { "count": c.failed },
        },
        "histograms": {},
        "meters": {},
        "timers": {},
    })
}

fn next_run(c: &Chronos, name: &str) -> Option<u64> {
    let j = c.jobs.get(name)?;
    if j.def.disabled {
        return None;
    }
    c.schedules.get(name).and_then(Schedule::next_ms)
}

fn job_view(c: &Chronos, j: &crate::model::JobRecord) -> Value {
    let name = &j.def.name;
    let in_flight: Vec<&Run> = c.runs_of(name).map(|(_, r)| r).collect();
    let waiting: Option<&String> = c.waiting.iter().find(|(k, _)| k.0 == *name).map(|(_, w)| w);
    let last = c.recent.get(name).and_then(|r| r.back());
    json!({
        "name": name,
        "kind": match j.def.kind { Kind::Scheduled { .. } => "scheduled", Kind::Dependent { .. } => "dependent" },
        "schedule": j.schedule,
        "schedule_time_zone": match &j.def.kind { Kind::Scheduled { time_zone, .. } => time_zone.clone(), _ => String::new() },
        "parents": j.def.parents(),
        "missing_parents": j.def.parents().iter().filter(|p| !c.jobs.contains_key(p.as_str())).collect::<Vec<_>>(),
        "command": j.def.command,
        "disabled": j.def.disabled,
        "next_run": next_run(c, name).map(iso_ms),
        "status": j.counters.status(),
        "state": c.state_of(name),
        "last_run": last.map(|s| json!({ "id": s.run, "due": iso_ms(s.due_ms), "ended": iso_ms(s.ended_ms), "result": s.state.name() })),
        "success_count": j.counters.success_count,
        "error_count": j.counters.error_count,
        "last_success": j.counters.last_success,
        "last_error": j.counters.last_error,
        "skipped": j.skipped,
        "running": in_flight.iter().filter(|r| matches!(r.state, RunState::Launched | RunState::Running)).count(),
        "queued": in_flight.iter().filter(|r| r.state == RunState::Queued).count(),
        "waiting_for": waiting,
    })
}

fn job_views(c: &Chronos) -> Vec<Value> {
    c.jobs.values().map(|j| job_view(c, j)).collect()
}

fn run_view(r: &Run) -> Value {
    json!({
        "id": r.id,
        "due": iso_ms(r.due_ms),
        "trigger": r.trigger,
        "state": r.state.name(),
        "attempt": r.attempt,
        "arguments": r.arguments,
        "queued": iso_ms(r.queued_ms),
        "not_before": (r.not_before_ms > 0).then(|| iso_ms(r.not_before_ms)),
        "started": r.started_ms().map(iso_ms),
        "ended": r.ended_ms.map(iso_ms),
        "message": r.message,
        "attempts": r.attempts.iter().map(|a| json!({
            "attempt": a.attempt,
            "task_id": a.task_id,
            "agent_id": a.agent_id,
            "hostname": a.hostname,
            "launched": iso_ms(a.launched_ms),
            "started": a.started_ms.map(iso_ms),
            "ended": a.ended_ms.map(iso_ms),
            "state": a.state,
            "exit_code": a.exit_code,
            "message": a.message,
            "reason": a.reason,
        })).collect::<Vec<_>>(),
    })
}

fn job_detail(c: &Chronos, name: &str) -> Response {
    let Some(j) = c.jobs.get(name) else {
        return error(404, &format!("no job {name}"));
    };
    let active: Vec<Value> = c.runs_of(name).map(|(_, r)| run_view(r)).collect();
    let history: Vec<Value> = c.history(name).iter().map(run_view).collect();
    let h = histogram(c, name);
    Response::json(
        200,
        &json!({
            "job": job_view(c, j),
            "definition": chronos_json(j, false),
            "active": active,
            "history": history,
            "stats": { "count": h.count, "median_ms": h.median, "p99_ms": h.p99, "mean_ms": h.mean },
        }),
    )
}

fn tree_label(c: &Chronos, name: &str) -> String {
    let Some(j) = c.jobs.get(name) else {
        return name.to_string();
    };
    let what = match &j.schedule {
        Some(s) if j.def.parents().is_empty() => s.clone(),
        _ => "after parents".into(),
    };
    let disabled = if j.def.disabled { ", disabled" } else { "" };
    format!(
        "{name}  ({what}; {}, {}{disabled})",
        j.counters.status(),
        c.state_of(name)
    )
}
