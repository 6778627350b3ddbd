//! Marathon's REST API (`/v2/...`, `/ping`) over the framework's state.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use wasmos_sdk::framework::{Request, Response, driver};
use wasmos_sdk::log;

use crate::app::{self, App, Invalid, VersionInfo, invalid_body};
use crate::deploy::{self, Action};
use crate::model::{AppRecord, AppState, Deployment, Instance, VER_PREFIX};
use crate::{Marathon, ids, kill_instance, time};

/// Every query value of `name` (repeated or `name[]`), percent-decoded.
fn params(req: &Request, name: &str) -> Vec<String> {
    req.query_params(name)
}

/// A boolean query parameter; Python clients send `True`/`False`.
pub(crate) fn flag(req: &Request, name: &str, default: bool) -> bool {
    params(req, name)
        .first()
        .map(|v| v.eq_ignore_ascii_case("true") || v == "1")
        .unwrap_or(default)
}

fn error(status: u16, message: &str) -> Response {
    Response::error(status, message)
}

/// The DeploymentResult of a change, with Marathon's header.
pub(crate) fn deployment_result(status: u16, dep: &str, version: &str) -> Response {
    let mut r = Response::json(status, &json!({ "deploymentId": dep, "version": version }));
    r.headers
        .push(("Marathon-Deployment-Id".into(), dep.to_string()));
    r
}

/// What GET embeds besides the defaults.
#[derive(Default)]
struct Embeds {
    tasks: bool,
    counts: bool,
    deployments: bool,
    readiness: bool,
    last_failure: bool,
    task_stats: bool,
}

fn embeds(req: &Request) -> Embeds {
    let mut e = Embeds::default();
    for v in params(req, "embed") {
        let s = v
            .trim_start_matches("group.apps.")
            .trim_start_matches("apps.")
            .trim_start_matches("app.");
        match s {
            "tasks" => {
                e.tasks = true;
                e.deployments = true;
            }
            "counts" => e.counts = true,
            "deployments" => e.deployments = true,
            "readiness" => e.readiness = true,
            "lastTaskFailure" => e.last_failure = true,
            "failures" => {
                e.tasks = true;
                e.last_failure = true;
                e.deployments = true;
            }
            "taskStats" => e.task_stats = true,
            _ => {}
        }
    }
    e
}

/// A label selector term of `?label=`.
enum Term {
    Exists(String),
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

fn selector(s: &str) -> Result<Vec<Term>, String> {
    // Split on commas outside parentheses.
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    terms.push(cur);
    terms
        .into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .map(|t| {
            let set = |rest: &str| -> Result<Vec<String>, String> {
                let inner = rest
                    .trim()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("label selector {t:?}: a set is written (a,b)"))?;
                Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
            };
            if let Some((k, v)) = t.split_once("==") {
                Ok(Term::Eq(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = t.split_once("!=") {
                Ok(Term::Ne(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = t.split_once(" notin ") {
                Ok(Term::NotIn(k.trim().into(), set(v)?))
            } else if let Some((k, v)) = t.split_once(" in ") {
                Ok(Term::In(k.trim().into(), set(v)?))
            } else {
                Ok(Term::Exists(t))
            }
        })
        .collect()
}

fn matches(labels: &BTreeMap<String, String>, terms: &[Term]) -> bool {
    terms.iter().all(|t| match t {
        Term::Exists(k) => labels.contains_key(k),
        Term::Eq(k, v) => labels.get(k) == Some(v),
        Term::Ne(k, v) => labels.get(k) != Some(v),
        Term::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
        Term::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
    })
}

pub fn handle(m: &mut Marathon, req: &Request) -> Response {
    let method = req.method.to_ascii_uppercase();
    let segs: Vec<String> = req.segments().iter().map(|s| s.to_string()).collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (method.as_str(), s.as_slice()) {
        ("GET", ["ping"]) => ping(req),
        ("GET", ["metrics"]) => Response::json(200, &metrics(m)),
        (_, ["ping"]) | (_, ["metrics"]) => {
            error(405, &format!("{method} is not allowed on {}", req.path))
        }
        (_, ["v2", "apps", rest @ ..]) => apps(m, req, &method, rest),
        ("GET", ["v2", "tasks"]) => list_tasks(m, req),
        ("POST", ["v2", "tasks", "delete"]) => delete_tasks(m, req),
        ("GET", ["v2", "deployments"]) => Response::json(200, &m.deployments_json()),
        ("DELETE", ["v2", "deployments", id]) => delete_deployment(m, req, id),
        ("GET", ["v2", "queue"]) => Response::json(200, &json!({ "queue": m.queue_json() })),
        ("DELETE", ["v2", "queue", rest @ ..]) if rest.last() == Some(&"delay") => {
            let id = ids::canonical(&rest[..rest.len() - 1].join("/"), "/");
            match m.apps.get_mut(&id).filter(|a| !a.rec.deleting) {
                Some(a) => {
                    a.rec.delay = None;
                    m.save_app(&id);
                    Response::empty(204)
                }
                None => error(404, &format!("Application {id} not found in tasks queue.")),
            }
        }
        ("GET", ["v2", "info"]) => Response::json(200, &info(m, req)),
        ("GET", ["v2", "leader"]) => Response::json(200, &json!({ "leader": host(req) })),
        ("DELETE", ["v2", "leader"]) => error(
            405,
            "a Wasmos master cannot abdicate through Marathon's API; stop the leading master (or `wasmos masters remove`) to move leadership",
        ),
        ("GET", ["v2", "groups", rest @ ..]) => get_group(m, req, rest),
        ("DELETE", ["v2", "groups", rest @ ..]) => delete_group(m, req, rest),
        ("POST", ["v2", "groups", rest @ ..]) => crate::groups::change(m, req, rest, true),
        ("PUT", ["v2", "groups", rest @ ..]) => crate::groups::change(m, req, rest, false),
        (_, ["v2", "groups", ..]) => error(405, &format!("{method} is not allowed on groups")),
        ("GET", ["v2", "events"]) => events(m, req),
        (_, ["v2", "events"]) => error(405, "GET the event stream"),
        _ => error(404, &format!("Path '{}' does not exist", req.path)),
    }
}

/// Polled by the master, which streams the answer as server-sent events
/// (`x-wasmos-events-after` is the last event it sent, or `start`).
fn events(m: &Marathon, req: &Request) -> Response {
    let Some(after) = req.header("x-wasmos-events-after") else {
        return error(
            405,
            "the event stream needs the header Accept: text/event-stream",
        );
    };
    let types = params(req, "event_type");
    let wanted = |t: &str| types.is_empty() || types.iter().any(|x| x == t);
    let mut out = Vec::new();
    let after = match after.parse::<u64>() {
        // A new instance numbers from 0 again: send what it has.
        Ok(n) if n <= m.next_event => n,
        Ok(_) => 0,
        Err(_) => {
            if wanted("event_stream_attached") {
                let remote = req
                    .header("x-forwarded-for")
                    .unwrap_or("unknown")
                    .to_string();
                out.push(json!({
                    "type": "event_stream_attached",
                    "data": json!({
                        "remoteAddress": remote,
                        "eventType": "event_stream_attached",
                        "timestamp": time::format_ms(crate::now()),
                    }).to_string(),
                }));
            }
            m.next_event
        }
    };
    for (seq, kind, data) in &m.events {
        if *seq > after && wanted(kind) {
            out.push(json!({ "type": kind, "data": data.to_string() }));
        }
    }
    Response::json(200, &json!({ "next": m.next_event, "events": out }))
}

/// Marathon's `/metrics` shape, with this framework's gauges and counters.
fn metrics(m: &Marathon) -> Value {
    let gauge = |v: usize| json!({ "value": v });
    let running = m.all_tasks().filter(|t| t.state == "TASK_RUNNING").count();
    let staged = m
        .all_tasks()
        .filter(|t| matches!(t.state.as_str(), "TASK_STAGING" | "TASK_STARTING"))
        .count();
    json!({
        "version": "4.0.0",
        "gauges": {
            "marathon.apps.active.gauge": gauge(m.visible_apps().count()),
            "marathon.deployments.active.gauge": gauge(m.deployments.len()),
            "marathon.instances.running.gauge": gauge(running),
            "marathon.instances.staged.gauge": gauge(staged),
            "marathon.launch-queue.size.gauge": gauge(m.need.values().map(|n| *n as usize).sum()),
        },
        "counters": { "marathon.events.total.counter": { "count": m.next_event } },
        "histograms": {},
        "meters": {},
        "timers": {},
    })
}

fn ping(req: &Request) -> Response {
    let accept = req.header("accept").unwrap_or("");
    if accept.contains("application/json") && !accept.contains("text/plain") {
        Response::json(200, &json!("pong"))
    } else {
        Response::text(200, "pong\n")
    }
}

fn host(req: &Request) -> String {
    req.header("host").unwrap_or("localhost").to_string()
}

fn info(m: &Marathon, req: &Request) -> Value {
    let host = host(req);
    let (hostname, port) = host.rsplit_once(':').unwrap_or((host.as_str(), "80"));
    let port: u64 = port.parse().unwrap_or(80);
    json!({
        "name": "marathon",
        "version": "1.10.0",
        "buildref": format!("wasmos-{}", env!("CARGO_PKG_VERSION")),
        "elected": true,
        "leader": host,
        "frameworkId": "marathon",
        "marathon_config": {
            "access_control_allow_origin": null, "checkpoint": true, "decline_offer_duration": 120000,
            "default_network_name": null, "env_vars_prefix": null, "executor": "//cmd",
            "failover_timeout": 604800, "features": [], "framework_name": "marathon", "ha": true,
            "hostname": hostname, "launch_token": 100, "launch_token_refresh_interval": 30000,
            "leader_proxy_connection_timeout_ms": 5000, "leader_proxy_read_timeout_ms": 10000,
            "local_port_max": m.port_max, "local_port_min": m.port_min, "master": format!("wasmos://{host}"),
            "max_instances_per_offer": m.max_per_offer, "mesos_bridge_name": "mesos-bridge",
            "mesos_heartbeat_failure_threshold": 5, "mesos_heartbeat_interval": 15000,
            "mesos_leader_ui_url": format!("http://{host}/"), "mesos_role": m.role, "mesos_user": "root",
            "new_group_enforce_role": "Off", "min_revive_offers_interval": 5000,
            "offer_matching_timeout": 3000, "on_elected_prepare_timeout": 180000,
            "reconciliation_initial_delay": 15000, "reconciliation_interval": 600000,
            "scale_apps_initial_delay": 15000, "scale_apps_interval": 300000, "store_cache": true,
            "task_launch_confirm_timeout": 300000, "task_launch_timeout": 300000,
            "task_lost_expunge_initial_delay": 300000, "task_lost_expunge_interval": 30000,
            "task_reservation_timeout": 20000, "webui_url": null, "maintenance_mode": false
        },
        "zookeeper_config": {
            "zk": "wasmos://replicated-state/marathon", "zk_compression": false,
            "zk_compression_threshold": 65536, "zk_connection_timeout": 10000,
            "zk_max_node_size": 1048576, "zk_max_versions": m.max_versions,
            "zk_session_timeout": 10000, "zk_timeout": 10000
        },
        "http_config": { "http_port": port, "https_port": 8443 }
    })
}

impl Marathon {
    fn task_json(&self, t: &Instance) -> Value {
        let app = self.apps.get(&t.app_id);
        let mut service: Vec<u32> = app.map(|a| a.app.service_ports()).unwrap_or_default();
        service.resize(service.len().max(t.ports.len()), 0);
        let checked = app.is_some_and(|a| !a.app.health_checks.is_empty());
        let health: Vec<Value> = match t.healthy {
            Some(alive) if checked => {
                let mut h = json!({
                    "alive": alive,
                    "consecutiveFailures": t.consecutive_failures,
                    "instanceId": t.instance_id(),
                });
                for (k, v) in [
                    ("firstSuccess", t.first_success),
                    ("lastSuccess", t.last_success),
                    ("lastFailure", t.last_failure),
                ] {
                    if let Some(ms) = v {
                        h[k] = json!(time::format_ms(ms));
                    }
                }
                vec![h]
            }
            _ => vec![],
        };
        let mut v = json!({
            "appId": t.app_id,
            "healthCheckResults": health,
            "host": t.host.clone().unwrap_or_default(),
            "id": t.id,
            "ipAddresses": [],
            "ports": t.ports,
            "servicePorts": service,
            "slaveId": t.agent_id.clone().unwrap_or_default(),
            "state": t.state,
            "stagedAt": time::format_ms(t.staged_at),
            "version": t.version,
            "localVolumes": t
                .slot
                .as_ref()
                .and_then(|id| self.slots.get(id))
                .map(|s| {
                    s.volumes
                        .iter()
                        .map(|v| json!({"containerPath": v.container_path, "persistenceId": v.persistence_id}))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
            "role": self.role,
        });
        if let Some(s) = t.started_at {
            v["startedAt"] = json!(time::format_ms(s));
        }
        v
    }

    fn app_info(&self, a: &AppState, e: &Embeds, single: bool) -> Value {
        let mut v = a.app.to_json();
        let tasks: Vec<&Instance> = self.app_tasks(&a.app.id).collect();
        let checked = !a.app.health_checks.is_empty();
        let count = |f: &dyn Fn(&Instance) -> bool| tasks.iter().filter(|t| f(t)).count();
        let staged = count(&|t| matches!(t.state.as_str(), "TASK_STAGING" | "TASK_STARTING"));
        let running = count(&|t| t.state == "TASK_RUNNING");
        let healthy = count(&|t| checked && t.state == "TASK_RUNNING" && t.healthy == Some(true));
        let unhealthy = count(&|t| checked && t.healthy == Some(false));
        v["tasksStaged"] = json!(staged);
        v["tasksRunning"] = json!(running);
        v["tasksHealthy"] = json!(healthy);
        v["tasksUnhealthy"] = json!(unhealthy);
        v["deployments"] = json!(
            self.deployments_of(&a.app.id)
                .iter()
                .map(|d| json!({ "id": d.id }))
                .collect::<Vec<_>>()
        );
        if single || e.tasks {
            v["tasks"] = json!(tasks.iter().map(|t| self.task_json(t)).collect::<Vec<_>>());
        }
        if (single || e.last_failure)
            && let Some(f) = &a.rec.last_failure
        {
            v["lastTaskFailure"] = f.clone();
        }
        if e.readiness {
            let name = a
                .app
                .readiness_checks
                .first()
                .map(|r| r.name.clone())
                .unwrap_or_default();
            v["readinessCheckResults"] = json!(
                tasks
                    .iter()
                    .filter_map(|t| t.ready.map(|ready| json!({
                        "name": name, "taskId": t.id, "ready": ready,
                    })))
                    .collect::<Vec<_>>()
            );
        }
        if e.task_stats {
            let t = crate::now();
            let lifetimes: Vec<f64> = tasks
                .iter()
                .filter_map(|x| x.started_at)
                .map(|s| t.saturating_sub(s) as f64 / 1000.0)
                .collect();
            let stats = if tasks.is_empty() {
                json!({})
            } else {
                let mut sorted = lifetimes.clone();
                sorted.sort_by(f64::total_cmp);
                let avg = if sorted.is_empty() {
                    0.0
                } else {
                    sorted.iter().sum::<f64>() / sorted.len() as f64
                };
                let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
                json!({ "stats": {
                    "counts": { "staged": staged, "running": running, "healthy": healthy, "unhealthy": unhealthy },
                    "lifeTime": { "averageSeconds": avg, "medianSeconds": median }
                }})
            };
            v["taskStats"] = json!({
                "startedAfterLastScaling": stats, "withLatestConfig": stats,
                "withOutdatedConfig": {}, "totalSummary": stats
            });
        }
        v
    }

    pub(crate) fn deployments_json(&self) -> Value {
        let mut deps: Vec<&Deployment> = self.deployments.values().collect();
        deps.sort_by_key(|d| d.seq);
        let action = |a: &Action| json!({ "action": a.kind.name(), "app": a.app });
        Value::Array(
            deps.iter()
                .map(|d| {
                    let current: Vec<Value> = d
                        .steps
                        .get(d.current)
                        .map(|s| {
                            s.iter()
                                .map(|a| {
                                    let mut v = action(a);
                                    v["readinessCheckResults"] = json!([]);
                                    v
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    json!({
                        "id": d.id,
                        "version": d.version,
                        "affectedApps": d.affected,
                        "affectedPods": [],
                        "steps": d.steps.iter().map(|s| json!({ "actions": s.iter().map(action).collect::<Vec<_>>() })).collect::<Vec<_>>(),
                        "currentActions": current,
                        "currentStep": (d.current + 1).min(d.steps.len()),
                        "totalSteps": d.steps.len(),
                    })
                })
                .collect(),
        )
    }

    pub(crate) fn queue_json(&self) -> Value {
        let t = crate::now();
        Value::Array(
            self.need
                .iter()
                .filter_map(|(id, count)| {
                    let a = self.apps.get(id)?;
                    let left_ms = a
                        .rec
                        .delay
                        .map(|d| d.until_ms.saturating_sub(t))
                        .unwrap_or(0);
                    let stats = self.offer_stats.get(id).cloned().unwrap_or_default();
                    let mut summary = json!({
                        "processedOffersCount": stats.processed,
                        "unusedOffersCount": stats.unused,
                        "rejectSummaryLastOffers": stats.reasons.iter().map(|(r, n)| json!({
                            "reason": r, "declined": n, "processed": stats.processed,
                        })).collect::<Vec<_>>(),
                        "rejectSummaryLaunchAttempt": [],
                    });
                    if let Some(u) = stats.last_unused_ms {
                        summary["lastUnusedOfferAt"] = json!(time::format_ms(u));
                    }
                    if let Some(u) = stats.last_used_ms {
                        summary["lastUsedOfferAt"] = json!(time::format_ms(u));
                    }
                    Some(json!({
                        "app": a.app.to_json(),
                        "count": count,
                        "delay": { "timeLeftSeconds": left_ms / 1000, "overdue": left_ms == 0 },
                        "since": time::format_ms(self.waiting_since.get(id).copied().unwrap_or(t)),
                        "processedOffersSummary": summary,
                    }))
                })
                .collect(),
        )
    }

    /// Starts a deployment taking the apps in `targets` (None: removed) from
    /// what they are now. Returns (deployment id, version).
    pub(crate) fn deploy(
        &mut self,
        targets: BTreeMap<String, Option<App>>,
        restart: BTreeSet<String>,
        force: bool,
    ) -> Result<(String, String), Response> {
        let conflicting: Vec<String> = {
            let mut c: Vec<&Deployment> = self
                .deployments
                .values()
                .filter(|d| d.affected.iter().any(|a| targets.contains_key(a)))
                .collect();
            c.sort_by_key(|d| d.seq);
            c.iter().map(|d| d.id.clone()).collect()
        };
        if !conflicting.is_empty() {
            if !force {
                return Err(Response::json(
                    409,
                    &json!({
                        "message": format!(
                            "App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/{}'.",
                            conflicting[0]
                        ),
                        "deployments": conflicting.iter().map(|id| json!({ "id": id })).collect::<Vec<_>>(),
                    }),
                ));
            }
            for id in &conflicting {
                log::info(&format!("deployment {id} cancelled by a forced change"));
                self.cancel_deployment(id);
            }
        }
        let version = self.new_version();
        let mut original: BTreeMap<String, Option<App>> = BTreeMap::new();
        let mut target: BTreeMap<String, Option<App>> = BTreeMap::new();
        for (id, new) in targets {
            let old = self.apps.get(&id).map(|a| a.app.clone());
            let new = match new {
                Some(mut app) => {
                    let config_same = old
                        .as_ref()
                        .is_some_and(|o| o.same_config(&app) && !restart.contains(&id));
                    let last_config = match (&old, config_same) {
                        (Some(o), true) => o
                            .version_info
                            .as_ref()
                            .map(|v| v.last_config_change_at.clone())
                            .unwrap_or_else(|| o.version.clone()),
                        _ => version.clone(),
                    };
                    app.version = version.clone();
                    app.version_info = Some(VersionInfo {
                        last_scaling_at: version.clone(),
                        last_config_change_at: last_config,
                    });
                    self.assign_service_ports(&mut app, old.as_ref())
                        .map_err(|e| error(422, &e))?;
                    Some(app)
                }
                None => None,
            };
            original.insert(id.clone(), old);
            target.insert(id, new);
        }
        // Only now write: every app of the change is valid.
        for (id, new) in &target {
            match new {
                Some(app) => {
                    self.store_version(app);
                    let rec = match self.apps.get(id) {
                        Some(a) => AppRecord {
                            def: app.to_json(),
                            target: a.rec.target,
                            restarting: a.rec.restarting,
                            deleting: false,
                            delay: a.rec.delay,
                            last_failure: a.rec.last_failure.clone(),
                        },
                        None => AppRecord {
                            def: app.to_json(),
                            target: 0,
                            restarting: false,
                            deleting: false,
                            delay: None,
                            last_failure: None,
                        },
                    };
                    self.apps.insert(
                        id.clone(),
                        AppState {
                            rec,
                            app: app.clone(),
                        },
                    );
                    self.save_app(id);
                }
                None => {
                    if let Some(a) = self.apps.get_mut(id) {
                        a.rec.deleting = true;
                    }
                    self.save_app(id);
                }
            }
        }
        let steps = deploy::plan(&original, &target, &restart);
        let dep_id = self.new_uuid();
        if steps.is_empty() {
            return Ok((dep_id, version));
        }
        let to_json = |m: &BTreeMap<String, Option<App>>| -> BTreeMap<String, Value> {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_ref().map(App::to_json).unwrap_or(Value::Null),
                    )
                })
                .collect()
        };
        let d = Deployment {
            id: dep_id.clone(),
            version: version.clone(),
            seq: self.next_seq(),
            affected: target.keys().cloned().collect(),
            steps,
            current: 0,
            step_started: false,
            original: to_json(&original),
            target: to_json(&target),
        };
        log::info(&format!(
            "deployment {} of {} in {} steps",
            d.id,
            d.affected.join(", "),
            d.steps.len()
        ));
        self.save_deployment(&d);
        self.deployments.insert(dep_id.clone(), d);
        self.emit(
            "group_change_success",
            json!({ "groupId": "/", "version": version }),
        );
        Ok((dep_id, version))
    }

    /// Stops a deployment where it is; apps keep their tasks as they are.
    fn cancel_deployment(&mut self, id: &str) {
        if let Some(d) = self.deployments.get(id).cloned() {
            let plan = Self::plan_json(&d);
            self.emit(
                "deployment_failed",
                json!({ "id": d.id, "plan": plan, "reason": "cancelled by a newer change or a DELETE" }),
            );
            for app_id in &d.affected {
                if let Some(a) = self.apps.get_mut(app_id) {
                    if a.rec.deleting {
                        // A stop is not undone: finish it without the plan.
                        a.rec.target = 0;
                    } else {
                        a.rec.target = a.app.instances;
                        a.rec.restarting = false;
                    }
                }
                self.save_app(app_id);
            }
        }
        self.remove_deployment(id);
    }
}

/// `api_post_event` for an app a client created or changed.
fn posted(m: &mut Marathon, req: &Request, id: &str) {
    if let Some(def) = m.apps.get(id).map(|a| a.app.to_json()) {
        let ip = req.header("x-forwarded-for").unwrap_or("").to_string();
        m.emit(
            "api_post_event",
            json!({ "clientIp": ip, "uri": req.path, "appDefinition": def }),
        );
    }
}

/// The app a body defines, checked as a new or changed definition of `id`
/// (`before`: the app as it is now, if any).
fn app_from(id: &str, body: &Value, before: Option<&App>) -> Result<App, Response> {
    App::from_json(id, body)
        .and_then(|a| a.check_role().map(|()| a))
        .and_then(|a| a.check_constraints(before).map(|()| a))
        .map_err(|errs| Response::json(422, &invalid_body(&errs)))
}

fn parse_body(req: &Request) -> Result<Value, Response> {
    serde_json::from_slice(&req.body).map_err(|e| {
        Response::json(
            400,
            &json!({ "message": "Invalid JSON", "details": e.to_string() }),
        )
    })
}

fn not_found(id: &str) -> Response {
    error(404, &format!("App '{id}' does not exist"))
}

fn apps(m: &mut Marathon, req: &Request, method: &str, rest: &[&str]) -> Response {
    // Suffixes name sub-resources; everything before them is the app id.
    let pos = |name: &str| rest.iter().rposition(|s| *s == name);
    if let Some(i) = pos("tasks") {
        let id = ids::canonical(&rest[..i].join("/"), "/");
        let tail = &rest[i + 1..];
        return match (method, tail) {
            ("GET", []) => app_tasks(m, &id),
            ("DELETE", []) => kill_app_tasks(m, req, &id, None),
            ("DELETE", [task]) => kill_app_tasks(m, req, &id, Some(task)),
            _ => error(405, &format!("{method} is not allowed here")),
        };
    }
    if let Some(i) = pos("versions") {
        let id = ids::canonical(&rest[..i].join("/"), "/");
        if m.apps.get(&id).is_none_or(|a| a.rec.deleting) {
            return not_found(&id);
        }
        return match (method, &rest[i + 1..]) {
            ("GET", []) => {
                let mut v = m.versions(&id);
                v.reverse();
                Response::json(200, &json!({ "versions": v }))
            }
            ("GET", [v]) => {
                match wasmos_sdk::kv::get_json::<Value>(&format!("{VER_PREFIX}{id}/{v}")) {
                    Some(app) => Response::json(200, &app),
                    None => error(404, &format!("App '{id}' does not exist in version {v}")),
                }
            }
            _ => error(405, &format!("{method} is not allowed here")),
        };
    }
    if rest.last() == Some(&"restart") && rest.len() > 1 {
        if method != "POST" {
            return error(405, "POST to restart an app");
        }
        let id = ids::canonical(&rest[..rest.len() - 1].join("/"), "/");
        let Some(a) = m.apps.get(&id).filter(|a| !a.rec.deleting) else {
            return not_found(&id);
        };
        let app = a.app.clone();
        return match m.deploy(
            BTreeMap::from([(id.clone(), Some(app))]),
            BTreeSet::from([id]),
            flag(req, "force", false),
        ) {
            Ok((d, v)) => deployment_result(200, &d, &v),
            Err(r) => r,
        };
    }
    if rest.last() == Some(&"*") {
        let group = ids::canonical(&rest[..rest.len() - 1].join("/"), "/");
        let e = embeds(req);
        let list: Vec<Value> = m
            .visible_apps()
            .filter(|a| ids::in_group(&a.app.id, &group) && a.app.id != group)
            .map(|a| m.app_info(a, &e, false))
            .collect();
        return Response::json(200, &json!({ "*": list }));
    }
    let id = ids::canonical(&rest.join("/"), "/");
    match (method, rest.is_empty()) {
        ("GET", true) => list_apps(m, req),
        ("POST", true) => create_app(m, req),
        ("PUT", true) | ("PATCH", true) => update_many(m, req, method == "PATCH"),
        ("GET", false) => match m.apps.get(&id).filter(|a| !a.rec.deleting) {
            Some(a) => Response::json(200, &json!({ "app": m.app_info(a, &embeds(req), true) })),
            None => not_found(&id),
        },
        ("PUT", false) | ("PATCH", false) => update_app(m, req, &id, method == "PATCH"),
        ("DELETE", false) => {
            if m.apps.get(&id).is_none_or(|a| a.rec.deleting) {
                return not_found(&id);
            }
            match m.deploy(
                BTreeMap::from([(id, None)]),
                BTreeSet::new(),
                flag(req, "force", true),
            ) {
                Ok((d, v)) => deployment_result(200, &d, &v),
                Err(r) => r,
            }
        }
        _ => error(405, &format!("{method} is not allowed on {}", req.path)),
    }
}

fn list_apps(m: &Marathon, req: &Request) -> Response {
    let cmd = params(req, "cmd").first().map(|s| s.to_lowercase());
    let idf = params(req, "id").first().map(|s| s.to_lowercase());
    let terms = match params(req, "label").first().map(|l| selector(l)) {
        Some(Ok(t)) => t,
        Some(Err(e)) => return error(400, &e),
        None => Vec::new(),
    };
    let e = embeds(req);
    let list: Vec<Value> = m
        .visible_apps()
        .filter(|a| {
            cmd.as_ref().is_none_or(|c| {
                a.app
                    .cmd
                    .as_ref()
                    .is_some_and(|x| x.to_lowercase().contains(c.as_str()))
            })
        })
        .filter(|a| {
            idf.as_ref()
                .is_none_or(|i| a.app.id.to_lowercase().contains(i.as_str()))
        })
        .filter(|a| matches(&a.app.labels, &terms))
        .map(|a| m.app_info(a, &e, false))
        .collect();
    Response::json(200, &json!({ "apps": list }))
}

fn create_app(m: &mut Marathon, req: &Request) -> Response {
    let body = match parse_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(raw_id) = body.get("id").and_then(Value::as_str) else {
        return Response::json(
            422,
            &invalid_body(&[Invalid::new("/id", "error.path.missing")]),
        );
    };
    let id = ids::canonical(raw_id, "/");
    if m.apps.get(&id).is_some_and(|a| !a.rec.deleting) {
        return error(409, &format!("An app with id [{id}] already exists."));
    }
    let app = match app_from(&id, &app::writable(&body), None) {
        Ok(a) => a,
        Err(r) => return r,
    };
    match m.deploy(
        BTreeMap::from([(id.clone(), Some(app))]),
        BTreeSet::new(),
        flag(req, "force", false),
    ) {
        Ok((dep, _)) => {
            posted(m, req, &id);
            let Some(a) = m.apps.get(&id) else {
                return error(500, "the app vanished while it was created");
            };
            let mut v = m.app_info(a, &Embeds::default(), false);
            if let Some(o) = v.as_object_mut() {
                o.remove("versionInfo");
            }
            v["deployments"] = json!([{ "id": dep }]);
            let mut r = Response::json(201, &v);
            r.headers.push(("Location".into(), id));
            r.headers.push(("Marathon-Deployment-Id".into(), dep));
            r
        }
        Err(r) => r,
    }
}

/// The app an update body asks for: a rollback (`version`), a merge into
/// the current definition (partial), or a whole definition.
fn updated(m: &Marathon, id: &str, body: &Value, partial: bool) -> Result<App, Response> {
    let current = m.apps.get(id).filter(|a| !a.rec.deleting);
    if let (Some(v), Some(_), true) = (
        body.get("version").and_then(Value::as_str),
        current,
        partial,
    ) {
        let Some(def) = wasmos_sdk::kv::get_json::<Value>(&format!("{VER_PREFIX}{id}/{v}")) else {
            return Err(error(
                404,
                &format!("App '{id}' does not exist in version {v}"),
            ));
        };
        return app_from(id, &app::writable(&def), current.map(|a| &a.app));
    }
    match current {
        Some(a) if partial => app_from(id, &app::merge(&a.rec.def, body), Some(&a.app)),
        _ => app_from(id, &app::writable(body), current.map(|a| &a.app)),
    }
}

fn update_app(m: &mut Marathon, req: &Request, id: &str, patch: bool) -> Response {
    let body = match parse_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let exists = m.apps.get(id).is_some_and(|a| !a.rec.deleting);
    if patch && !exists {
        return not_found(id);
    }
    let partial = patch || flag(req, "partialUpdate", true);
    let app = match updated(m, id, &body, partial) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let r = m.deploy(
        BTreeMap::from([(id.to_string(), Some(app))]),
        BTreeSet::new(),
        flag(req, "force", false),
    );
    if r.is_ok() {
        posted(m, req, id);
    }
    match r {
        Ok((d, v)) if exists => deployment_result(200, &d, &v),
        Ok((d, v)) => {
            let mut r = deployment_result(201, &d, &v);
            r.headers.push(("Location".into(), id.to_string()));
            r
        }
        Err(r) => r,
    }
}

fn update_many(m: &mut Marathon, req: &Request, patch: bool) -> Response {
    let body = match parse_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(list) = body.as_array() else {
        return Response::json(
            422,
            &invalid_body(&[Invalid::new("/", "error.expected.jsarray")]),
        );
    };
    let partial = patch || flag(req, "partialUpdate", true);
    let mut targets = BTreeMap::new();
    for (i, item) in list.iter().enumerate() {
        let Some(raw) = item.get("id").and_then(Value::as_str) else {
            return Response::json(
                422,
                &invalid_body(&[Invalid::new(&format!("({i})/id"), "error.path.missing")]),
            );
        };
        let id = ids::canonical(raw, "/");
        if patch && m.apps.get(&id).is_none_or(|a| a.rec.deleting) {
            return not_found(&id);
        }
        match updated(m, &id, item, partial) {
            Ok(a) => {
                targets.insert(id, Some(a));
            }
            Err(r) => return r,
        }
    }
    let ids: Vec<String> = targets.keys().cloned().collect();
    match m.deploy(targets, BTreeSet::new(), flag(req, "force", false)) {
        Ok((d, v)) => {
            for id in ids {
                posted(m, req, &id);
            }
            deployment_result(200, &d, &v)
        }
        Err(r) => r,
    }
}

fn app_tasks(m: &Marathon, id: &str) -> Response {
    if m.apps.get(id).is_none_or(|a| a.rec.deleting) {
        return not_found(id);
    }
    let tasks: Vec<Value> = m.app_tasks(id).map(|t| m.task_json(t)).collect();
    Response::json(200, &json!({ "tasks": tasks }))
}

fn list_tasks(m: &Marathon, req: &Request) -> Response {
    let wanted: Vec<String> = params(req, "status")
        .iter()
        .map(|s| format!("TASK_{}", s.to_ascii_uppercase()))
        .collect();
    let tasks: Vec<Value> = m
        .all_tasks()
        .filter(|t| wanted.is_empty() || wanted.contains(&t.state))
        .map(|t| m.task_json(t))
        .collect();
    Response::json(200, &json!({ "tasks": tasks }))
}

/// Kills tasks (by app). `scale`: the apps shrink by the tasks killed (a
/// deployment); otherwise they are replaced. `wipe`: forgotten at once.
fn kill(m: &mut Marathon, req: &Request, by_app: BTreeMap<String, Vec<String>>) -> Response {
    let scale = flag(req, "scale", false);
    let wipe = flag(req, "wipe", false);
    if scale && wipe {
        return error(400, "You cannot use scale and wipe at the same time.");
    }
    let force = flag(req, "force", false);
    if scale {
        // Check the lock before killing anything.
        let locked: Vec<String> = by_app
            .keys()
            .flat_map(|a| m.deployments_of(a).into_iter().map(|d| d.id.clone()))
            .collect();
        if !locked.is_empty() && !force {
            return Response::json(
                409,
                &json!({
                    "message": format!("App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/{}'.", locked[0]),
                    "deployments": locked.iter().map(|id| json!({ "id": id })).collect::<Vec<_>>(),
                }),
            );
        }
    }
    let mut killed = Vec::new();
    let mut targets = BTreeMap::new();
    for (app_id, task_ids) in by_app {
        let mut n = 0;
        for tid in task_ids {
            let Some(mut t) = m.task(&tid).cloned() else {
                continue;
            };
            killed.push(m.task_json(&t));
            n += 1;
            if scale || wipe {
                kill_instance(&mut t);
            } else if !t.kill_sent {
                // Killed but still wanted: replaced once it has ended.
                driver::kill(&t.id);
                t.kill_sent = true;
            }
            // A resident task's volumes go with it: at once when it has
            // ended, else once it has (it is kept until then).
            let busy_slot = t
                .slot
                .clone()
                .and_then(|id| m.slots.get(&id).cloned())
                .filter(|_| wipe);
            if let Some(slot) = busy_slot {
                if m.slot_busy(&slot) {
                    m.save_slot(crate::model::Slot {
                        wiping: true,
                        ..slot
                    });
                    m.save_task(&t);
                    m.put_task(t);
                    continue;
                }
                m.destroy_slot(&slot.id);
            }
            if wipe {
                m.forget_task(&tid);
            } else {
                m.save_task(&t);
                m.put_task(t);
            }
        }
        if scale
            && n > 0
            && let Some(a) = m.apps.get(&app_id)
        {
            let mut app = a.app.clone();
            app.instances = app.instances.saturating_sub(n);
            targets.insert(app_id, Some(app));
        }
    }
    if scale {
        return match m.deploy(targets, BTreeSet::new(), true) {
            Ok((d, v)) => deployment_result(200, &d, &v),
            Err(r) => r,
        };
    }
    Response::json(200, &json!({ "tasks": killed }))
}

fn kill_app_tasks(m: &mut Marathon, req: &Request, id: &str, task: Option<&str>) -> Response {
    if m.apps.get(id).is_none_or(|a| a.rec.deleting) {
        return not_found(id);
    }
    let host = params(req, "host").first().cloned();
    let ids: Vec<String> = match task {
        Some(t) => {
            if m.task(t).is_none_or(|x| x.app_id != id) {
                return error(404, &format!("Task '{t}' does not exist"));
            }
            vec![t.to_string()]
        }
        None => m
            .app_tasks(id)
            .filter(|t| !t.is_terminal())
            .filter(|t| match host.as_deref() {
                None | Some("*") => true,
                Some(h) => t.host.as_deref() == Some(h),
            })
            .map(|t| t.id.clone())
            .collect(),
    };
    let single = task.is_some();
    let r = kill(m, req, BTreeMap::from([(id.to_string(), ids)]));
    if single && r.status == 200 {
        // `{"tasks": [t]}` → `{"task": t}` for a single kill.
        if let Ok(v) = serde_json::from_slice::<Value>(&r.body)
            && let Some(t) = v.get("tasks").and_then(|t| t.get(0))
        {
            return Response::json(200, &json!({ "task": t }));
        }
    }
    r
}

fn delete_tasks(m: &mut Marathon, req: &Request) -> Response {
    let body = match parse_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(list) = body.get("ids").and_then(Value::as_array) else {
        return error(400, "the body must be {\"ids\": [task ids]}");
    };
    let mut by_app: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in list {
        let id = v.as_str().unwrap_or("");
        if ids::app_of_task(id).is_none() {
            return error(
                400,
                &format!(
                    "Invalid task id '{id}'. [a task id names its app: <app>.instance-<uuid>._app.<n>]"
                ),
            );
        }
        if let Some(t) = m.task(id) {
            by_app
                .entry(t.app_id.clone())
                .or_default()
                .push(id.to_string());
        }
    }
    kill(m, req, by_app)
}

fn delete_deployment(m: &mut Marathon, req: &Request, id: &str) -> Response {
    let Some(d) = m.deployments.get(id).cloned() else {
        return error(404, &format!("DeploymentPlan {id} does not exist"));
    };
    if flag(req, "force", false) {
        m.cancel_deployment(id);
        return Response::empty(202);
    }
    // Revert: a new deployment back to the original definitions.
    let mut targets = BTreeMap::new();
    for (app_id, def) in &d.original {
        let app = if def.is_null() {
            None
        } else {
            match app_from(
                app_id,
                &app::writable(def),
                m.apps.get(app_id).map(|a| &a.app),
            ) {
                Ok(a) => Some(a),
                Err(r) => return r,
            }
        };
        targets.insert(app_id.clone(), app);
    }
    m.cancel_deployment(id);
    match m.deploy(targets, BTreeSet::new(), true) {
        Ok((d, v)) => deployment_result(200, &d, &v),
        Err(r) => r,
    }
}

fn group_json(m: &Marathon, group: &str, e: &Embeds) -> Value {
    let apps: Vec<&AppState> = m
        .visible_apps()
        .filter(|a| ids::parent(&a.app.id) == group)
        .collect();
    let below = |id: &str| {
        let rest = id[group.len()..].trim_start_matches('/');
        ids::canonical(rest.split('/').next().unwrap_or(""), group)
    };
    let children: BTreeSet<String> = m
        .visible_apps()
        .map(|a| a.app.id.as_str())
        .chain(m.groups.keys().map(String::as_str))
        .filter(|id| ids::in_group(id, group) && *id != group)
        .filter(|id| m.groups.contains_key(*id) || ids::parent(id) != group)
        .map(below)
        .collect();
    let dependencies = m
        .groups
        .get(group)
        .map(|g| g.dependencies.clone())
        .unwrap_or_default();
    let version = apps
        .iter()
        .map(|a| a.app.version.clone())
        .max()
        .unwrap_or_else(|| time::format_ms(0));
    json!({
        "id": group,
        "apps": apps.iter().map(|a| m.app_info(a, e, false)).collect::<Vec<_>>(),
        "groups": children.iter().map(|g| group_json(m, g, e)).collect::<Vec<_>>(),
        "pods": [],
        "dependencies": dependencies,
        "version": version,
    })
}

fn get_group(m: &Marathon, req: &Request, rest: &[&str]) -> Response {
    let (rest, apps_only) = match rest.last() {
        Some(&"apps") => (&rest[..rest.len() - 1], true),
        _ => (rest, false),
    };
    let group = ids::canonical(&rest.join("/"), "/");
    if !m.group_exists(&group) {
        return error(404, &format!("Group '{group}' does not exist"));
    }
    let e = embeds(req);
    if apps_only {
        let list: Vec<Value> = m
            .visible_apps()
            .filter(|a| ids::parent(&a.app.id) == group)
            .map(|a| m.app_info(a, &e, false))
            .collect();
        return Response::json(200, &json!({ "apps": list }));
    }
    Response::json(200, &group_json(m, &group, &e))
}

fn delete_group(m: &mut Marathon, req: &Request, rest: &[&str]) -> Response {
    let group = ids::canonical(&rest.join("/"), "/");
    let members: Vec<String> = m
        .visible_apps()
        .filter(|a| ids::in_group(&a.app.id, &group) && a.app.id != group)
        .map(|a| a.app.id.clone())
        .collect();
    if !m.group_exists(&group) {
        return error(404, &format!("Group '{group}' does not exist"));
    }
    let targets = members.into_iter().map(|id| (id, None)).collect();
    match m.deploy(targets, BTreeSet::new(), flag(req, "force", false)) {
        Ok((d, v)) => {
            m.forget_groups_under(&group);
            deployment_result(200, &d, &v)
        }
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(query: &str) -> Request {
        Request {
            method: "GET".into(),
            path: "/v2/apps".into(),
            query: query.into(),
            headers: vec![],
            body: vec![],
        }
    }

    #[test]
    fn query_values_repeat_and_booleans_ignore_case() {
        let r = req("embed=app.tasks&embed=app.counts&force=True&x=%2Fa%20b");
        assert_eq!(params(&r, "embed"), vec!["app.tasks", "app.counts"]);
        assert!(flag(&r, "force", false));
        assert!(!flag(&req("force=False"), "force", true));
        assert!(flag(&req(""), "force", true));
        assert_eq!(params(&r, "x"), vec!["/a b"]);
        let e = embeds(&r);
        assert!(e.tasks && e.counts && e.deployments && !e.task_stats);
    }

    #[test]
    fn label_selectors_follow_marathons_grammar() {
        let labels = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        for (sel, want) in [
            ("env", true),
            ("env==prod", true),
            ("env!=prod", false),
            ("env in (stage,prod)", true),
            ("env notin (stage,prod)", false),
            ("env,tier", false),
            ("tier notin (a)", true),
        ] {
            assert_eq!(matches(&labels, &selector(sel).unwrap()), want, "{sel}");
        }
        assert!(selector("env in stage").is_err());
    }
}
