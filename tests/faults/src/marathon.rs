//! The Marathon part of the workload: one client creates apps, scales
//! them, deploys new configurations, restarts and deletes them while the
//! nemesis works; each of the apps' tasks appends its task id and app
//! version to `<runs>/marathon-runs` when it starts. At the end the run
//! waits for Marathon to converge and reads what it shows; the checker
//! then requires every acknowledged change to have survived, no task id
//! to have run twice, and nothing to run for Marathon that it does not
//! know.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::history::Event;
use crate::workload::{Answer, Ctx, send};

/// The file the apps' tasks mark: one line per start, `<task id> <version>`.
pub const RUNS_FILE: &str = "marathon-runs";
/// Every app of the run is under this group.
const GROUP: &str = "/faults/";

/// What an app's definition is, as far as the checker cares: how many
/// instances, and which generation of its configuration (the `FAULTS_GEN`
/// variable; a new one makes Marathon replace every task).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppWant {
    pub instances: u64,
    pub generation: u64,
}

/// What came of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A 200 or 201: it happened.
    Acked,
    /// Never reached a master that acted on it, or refused for a reason
    /// that leaves the app as it was (a 404: the app is not there).
    NotApplied,
    /// Sent, and the answer is unknown (a timeout, a cut connection, a
    /// 5xx): it may have happened.
    Unknown,
}

/// The kinds of change the client makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Create,
    Scale,
    Deploy,
    Restart,
    Delete,
}

impl Op {
    /// Whether it sets the app's definition (a restart keeps it; the
    /// client's idea of the definition may be wrong after a change of
    /// unknown outcome, so a restart says nothing about it).
    fn defines(self) -> bool {
        self != Op::Restart
    }
}

fn app_body(id: &str, want: AppWant, runs: &Path) -> Value {
    json!({
        "id": id,
        "cmd": format!(
            "echo \"$MESOS_TASK_ID $MARATHON_APP_VERSION\" >> {}/{RUNS_FILE}; exec sleep 3600",
            runs.display()
        ),
        "cpus": 0.05,
        "mem": 16,
        "instances": want.instances,
        "env": {"FAULTS_GEN": want.generation.to_string()},
        "portDefinitions": [],
        "healthChecks": [{
            "protocol": "COMMAND",
            "command": {"value": "test -d /proc/self"},
            "gracePeriodSeconds": 30,
            "intervalSeconds": 2,
            "timeoutSeconds": 5,
            "maxConsecutiveFailures": 5,
        }],
        "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.5},
    })
}

/// Changes Marathon apps until stopped, one change every one to three
/// seconds, through a master picked at random. A change whose answer is
/// lost is not sent again: the checker allows for it having happened or
/// not.
pub async fn client(ctx: Ctx, client: usize, runs: std::path::PathBuf, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // The app being worked on, and the definition the client last asked for.
    let mut app: Option<(String, AppWant)> = None;
    let (mut apps, mut generation) = (0u64, 0u64);
    while ctx.running() {
        generation += 1;
        let master = ctx.master(&mut rng).to_string();
        let (id, op, want) = match &app {
            None => {
                apps += 1;
                let want = AppWant {
                    instances: rng.random_range(1..=2),
                    generation,
                };
                (format!("{GROUP}m{apps}"), Op::Create, Some(want))
            }
            Some((id, last)) => {
                let (op, want) = match rng.random_range(0..20) {
                    0..7 => (
                        Op::Scale,
                        Some(AppWant {
                            instances: rng.random_range(0..=3),
                            generation: last.generation,
                        }),
                    ),
                    7..13 => (
                        Op::Deploy,
                        Some(AppWant {
                            instances: last.instances,
                            generation,
                        }),
                    ),
                    13..17 => (Op::Restart, Some(*last)),
                    _ => (Op::Delete, None),
                };
                (id.clone(), op, want)
            }
        };
        let (method, url, body) = match (op, want) {
            (Op::Create, Some(w)) => (
                Method::POST,
                format!("{master}/v2/apps"),
                Some(app_body(&id, w, &runs)),
            ),
            (Op::Restart, _) => (
                Method::POST,
                format!("{master}/v2/apps{id}/restart?force=true"),
                None,
            ),
            (Op::Delete, _) => (
                Method::DELETE,
                format!("{master}/v2/apps{id}?force=true"),
                None,
            ),
            (_, w) => (
                Method::PUT,
                format!("{master}/v2/apps{id}?force=true"),
                w.map(|w| app_body(&id, w, &runs)),
            ),
        };
        let call = ctx.rec.now();
        let a = send(&ctx.http, method, &url, body.as_ref()).await;
        let ret = ctx.rec.now();
        let (outcome, answer) = match a {
            Answer::Status(200 | 201, v) => (Outcome::Acked, v.to_string()),
            Answer::Status(404, v) if op != Op::Create => (Outcome::NotApplied, format!("404 {v}")),
            Answer::Status(429, v) => (Outcome::NotApplied, format!("429 {v}")),
            Answer::Status(code @ 400..=499, v) => {
                ctx.rec.push(Event::Refused {
                    client,
                    at: ret,
                    request: format!("{op:?} {id}"),
                    answer: format!("{code} {v}"),
                });
                (Outcome::NotApplied, format!("{code} {v}"))
            }
            Answer::Status(code, v) => (Outcome::Unknown, format!("{code} {v}")),
            Answer::NotSent(e) => (Outcome::NotApplied, e),
            Answer::Unknown(e) => (Outcome::Unknown, e),
        };
        ctx.rec.push(Event::AppChange {
            client,
            app: id.clone(),
            op,
            call,
            ret,
            outcome,
            want,
            answer,
        });
        if outcome != Outcome::NotApplied {
            app = want.map(|w| (id, w));
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(1000..3000))).await;
    }
}

/// An app of the run as Marathon shows it once converged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppFinal {
    pub want: AppWant,
    /// (task id, the app version it was launched with).
    pub tasks: Vec<(String, String)>,
}

/// What Marathon and the master show at the end, and the marks.
#[derive(Debug, Default)]
pub struct MarathonFinal {
    /// The run's apps that exist.
    pub apps: BTreeMap<String, AppFinal>,
    /// Tasks the master has of Marathon's framework that are not ended
    /// and that no app lists.
    pub orphans: Vec<String>,
    /// Each start of a task: (task id, app version), from the marks.
    pub marks: Vec<(String, String)>,
}

/// Reads Marathon's apps and the master's tasks once: the finals, and why
/// Marathon has not converged yet (`None` once it has: no deployment, every
/// app running and healthy as many tasks as it asks for, nothing running
/// for Marathon that no app lists).
async fn read_once(
    http: &reqwest::Client,
    leader: &str,
) -> Result<(MarathonFinal, Option<String>), String> {
    let Answer::Status(200, v) = send(
        http,
        Method::GET,
        &format!("{leader}/v2/apps?embed=apps.tasks"),
        None,
    )
    .await
    else {
        return Err("GET /v2/apps did not answer 200".into());
    };
    let mut f = MarathonFinal::default();
    let mut waiting = Vec::new();
    for a in v["apps"].as_array().into_iter().flatten() {
        let Some(id) = a["id"].as_str().filter(|i| i.starts_with(GROUP)) else {
            continue;
        };
        let instances = a["instances"].as_u64().unwrap_or(u64::MAX);
        let generation = a["env"]["FAULTS_GEN"]
            .as_str()
            .and_then(|g| g.parse().ok())
            .unwrap_or(u64::MAX);
        let tasks: Vec<(String, String)> = a["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                Some((
                    t["id"].as_str()?.to_string(),
                    t["version"].as_str()?.to_string(),
                ))
            })
            .collect();
        let deployments = a["deployments"].as_array().map_or(0, Vec::len);
        let running = a["tasksRunning"].as_u64().unwrap_or(0);
        let healthy = a["tasksHealthy"].as_u64().unwrap_or(0);
        if deployments > 0
            || running != instances
            || healthy != instances
            || tasks.len() as u64 != instances
        {
            waiting.push(format!(
                "{id}: {instances} instances, {} tasks, {running} running, {healthy} healthy, {deployments} deployments",
                tasks.len()
            ));
        }
        f.apps.insert(
            id.to_string(),
            AppFinal {
                want: AppWant {
                    instances,
                    generation,
                },
                tasks,
            },
        );
    }
    let Answer::Status(200, tasks) = send(
        http,
        Method::GET,
        &format!("{leader}/api/wasmos/v1/tasks"),
        None,
    )
    .await
    else {
        return Err("GET /api/wasmos/v1/tasks did not answer 200".into());
    };
    let listed: BTreeSet<&str> = f
        .apps
        .values()
        .flat_map(|a| a.tasks.iter().map(|(t, _)| t.as_str()))
        .collect();
    f.orphans = tasks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["framework_id"] == "marathon")
        .filter(|t| {
            t["state"]
                .as_str()
                .is_some_and(|s| crate::check::rank(s) < 4)
        })
        .filter_map(|t| t["id"].as_str())
        .filter(|t| !listed.contains(t))
        .map(str::to_string)
        .collect();
    if !f.orphans.is_empty() {
        waiting.push(format!(
            "the master has {} tasks of Marathon no app lists",
            f.orphans.len()
        ));
    }
    Ok((f, (!waiting.is_empty()).then(|| waiting.join("; "))))
}

/// Waits (up to `within`) for Marathon to converge, then reads the apps,
/// the master's tasks and the marks. Not converging is a violation.
pub async fn settle(
    http: &reqwest::Client,
    leader: &str,
    runs: &Path,
    within: Duration,
    violations: &mut Vec<String>,
) -> anyhow::Result<MarathonFinal> {
    let deadline = Instant::now() + within;
    let mut f = loop {
        let last = match read_once(http, leader).await {
            Ok((f, None)) => break f,
            Ok((f, Some(why))) if Instant::now() > deadline => {
                violations.push(format!(
                    "marathon: not converged {}s after the clients stopped: {why}",
                    within.as_secs()
                ));
                break f;
            }
            Ok((_, Some(why))) => why,
            Err(e) => e,
        };
        if Instant::now() > deadline {
            anyhow::bail!(
                "marathon: no answer to read the apps within {}s: {last}",
                within.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    };
    f.marks = match std::fs::read_to_string(runs.join(RUNS_FILE)) {
        Ok(t) => t
            .lines()
            .filter_map(|l| {
                let (task, version) = l.trim().split_once(' ')?;
                Some((task.to_string(), version.to_string()))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    Ok(f)
}

/// Deletes the run's apps (their tasks sleep for an hour), within a
/// minute.
pub async fn clean_up(http: &reqwest::Client, leader: &str, f: &MarathonFinal) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in f.apps.keys() {
        let url = format!("{leader}/v2/apps{id}?force=true");
        while Instant::now() < deadline {
            match send(http, Method::DELETE, &url, None).await {
                Answer::Status(200 | 404, _) => break,
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

/// A change as the checker reads it from the history.
#[derive(Debug)]
pub struct Change<'a> {
    pub op: Op,
    pub call: u64,
    pub outcome: Outcome,
    pub want: Option<AppWant>,
    pub answer: &'a str,
}

/// The Marathon rules: every app ends as its last acknowledged change left
/// it, or as a later-or-concurrent change of unknown outcome would have;
/// no task id ran twice; every task Marathon lists ran once, with the
/// version Marathon says; nothing runs for Marathon that no app lists.
pub fn check(changes: &BTreeMap<String, Vec<Change>>, f: &MarathonFinal, v: &mut Vec<String>) {
    for (app, ops) in changes {
        let defining: Vec<&Change> = ops.iter().filter(|c| c.op.defines()).collect();
        let last = defining.iter().rposition(|c| c.outcome == Outcome::Acked);
        let mut allowed: Vec<Option<AppWant>> = vec![last.and_then(|i| defining[i].want)];
        // A change of unknown outcome may take effect any time after it
        // was sent, even after a later change was acknowledged.
        allowed.extend(
            defining
                .iter()
                .filter(|c| c.outcome == Outcome::Unknown)
                .map(|c| c.want),
        );
        let now = f.apps.get(app).map(|a| a.want);
        if !allowed.contains(&now) {
            let mut s = format!(
                "marathon: app {app} ends as {now:?}, which no change could leave (allowed: {allowed:?}); its changes:\n"
            );
            for c in ops {
                s += &format!(
                    "    {:.3}s {:?} {:?}: {:?} — {}\n",
                    c.call as f64 / 1e9,
                    c.op,
                    c.want,
                    c.outcome,
                    c.answer.chars().take(160).collect::<String>()
                );
            }
            v.push(s);
        }
    }
    let mut runs: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (task, version) in &f.marks {
        runs.entry(task).or_default().push(version);
    }
    for (task, versions) in &runs {
        if versions.len() > 1 {
            v.push(format!(
                "marathon: task {task} ran {} times (versions {versions:?})",
                versions.len()
            ));
        }
    }
    for (app, a) in &f.apps {
        for (task, version) in &a.tasks {
            match runs.get(task.as_str()) {
                None => v.push(format!(
                    "marathon: task {task} of {app} is listed, and never started (no mark)"
                )),
                Some(vs) if !vs.contains(&version.as_str()) => v.push(format!(
                    "marathon: task {task} of {app} is listed with version {version}, and ran with {vs:?}"
                )),
                Some(_) => {}
            }
        }
    }
    for t in &f.orphans {
        v.push(format!(
            "marathon: the master still runs task {t} for Marathon, and no app lists it"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(op: Op, outcome: Outcome, want: Option<(u64, u64)>) -> Change<'static> {
        Change {
            op,
            call: 0,
            outcome,
            want: want.map(|(instances, generation)| AppWant {
                instances,
                generation,
            }),
            answer: "",
        }
    }

    fn app(instances: u64, generation: u64, tasks: &[(&str, &str)]) -> AppFinal {
        AppFinal {
            want: AppWant {
                instances,
                generation,
            },
            tasks: tasks
                .iter()
                .map(|(t, v)| (t.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn an_app_may_end_as_its_last_acknowledged_change_or_any_unknown_one() {
        use Outcome::*;
        let changes: BTreeMap<String, Vec<Change>> = [
            (
                "/faults/m1".to_string(),
                vec![
                    change(Op::Create, Acked, Some((1, 1))),
                    change(Op::Deploy, Unknown, Some((1, 2))),
                    change(Op::Scale, Acked, Some((2, 2))),
                    // The client thinks generation 3; it never happened.
                    change(Op::Deploy, NotApplied, Some((2, 3))),
                    change(Op::Restart, Acked, Some((2, 3))),
                ],
            ),
            (
                "/faults/m2".to_string(),
                vec![
                    change(Op::Create, Acked, Some((1, 4))),
                    change(Op::Delete, Unknown, None),
                ],
            ),
            (
                "/faults/m3".to_string(),
                vec![change(Op::Create, Unknown, Some((1, 5)))],
            ),
        ]
        .into();
        let f = MarathonFinal {
            apps: [
                (
                    "/faults/m1".to_string(),
                    app(2, 2, &[("a", "v1"), ("b", "v2")]),
                ),
                ("/faults/m2".to_string(), app(1, 4, &[])),
            ]
            .into(),
            orphans: vec![],
            marks: vec![("a".into(), "v1".into()), ("b".into(), "v2".into())],
        };
        let mut v = Vec::new();
        check(&changes, &f, &mut v);
        assert_eq!(v, Vec::<String>::new());
    }

    #[test]
    fn a_lost_change_a_second_run_a_task_that_never_ran_and_an_orphan_are_each_named() {
        use Outcome::*;
        let changes: BTreeMap<String, Vec<Change>> = [
            (
                "/faults/m1".to_string(),
                vec![
                    change(Op::Create, Acked, Some((1, 1))),
                    change(Op::Scale, Acked, Some((3, 1))),
                ],
            ),
            (
                "/faults/m2".to_string(),
                vec![
                    change(Op::Create, Acked, Some((1, 2))),
                    change(Op::Delete, Acked, None),
                ],
            ),
        ]
        .into();
        let f = MarathonFinal {
            apps: [
                // The scale to 3 was lost.
                ("/faults/m1".to_string(), app(1, 1, &[("a", "v1")])),
                // The acknowledged delete was lost; its task never ran.
                ("/faults/m2".to_string(), app(1, 2, &[("b", "v1")])),
            ]
            .into(),
            orphans: vec!["c".into()],
            marks: vec![("a".into(), "v1".into()), ("a".into(), "v1".into())],
        };
        let mut v = Vec::new();
        check(&changes, &f, &mut v);
        assert_eq!(v.len(), 5, "{v:#?}");
        assert!(v[0].contains("app /faults/m1 ends as Some"), "{}", v[0]);
        assert!(v[1].contains("app /faults/m2 ends as Some"), "{}", v[1]);
        assert!(v[2].contains("task a ran 2 times"), "{}", v[2]);
        assert!(v[3].contains("task b of /faults/m2 is listed, and never started"));
        assert!(v[4].contains("still runs task c"));
    }
}
