//! The external framework of the workload: pymesos (PyPI, unchanged)
//! driving Mesos' v1 scheduler API through a master's plaintext listener,
//! as `tests/clients/pymesos_scheduler.py faults`. It launches short tasks
//! from offers; each task appends a line to `<runs>/framework/<id>` when
//! it starts. The script records every launch (before its ACCEPT), every
//! subscription and every status update in a history of its own. When it
//! crashes (pymesos ends its driver on any refused call, as a master that
//! just lost its leadership answers), it is started again, as a real
//! framework's supervisor would, and re-subscribes as the same framework.
//! At the end it reconciles until every task is terminal; the checker then
//! counts runs from the marks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::workload::Ctx;

/// Where pymesos and the script are.
#[derive(Debug, Clone)]
pub struct Pymesos {
    /// A Python that has pymesos (`./dev test` makes `target/pymesos`).
    pub python: PathBuf,
    /// `tests/clients/pymesos_scheduler.py`.
    pub script: PathBuf,
}

/// How to reach the cluster as the framework's principal.
pub struct Access {
    /// A master's plaintext listener, `ip:port`.
    pub master: String,
    pub principal: String,
    pub secret: String,
}

/// What the framework's supervisor saw.
#[derive(Debug, Default)]
pub struct Supervised {
    /// Starts of the script after the first (crashes before the stop).
    pub restarts: usize,
    /// The last lines of its output, for a crash or a failure at the end.
    pub failure: Option<String>,
}

/// Runs the framework until the workload stops, then tells it to stop
/// (the file `STOP`) and waits (three minutes at most) for its final
/// reconciliation.
pub async fn supervise(ctx: Ctx, p: Pymesos, a: Access, dir: PathBuf) -> Supervised {
    let runs = dir.join("runs/framework");
    let stop = dir.join("framework-stop");
    let log = dir.join("pymesos.log");
    let mut s = Supervised::default();
    let mut starts = 0;
    let mut deadline: Option<Instant> = None;
    loop {
        let out = match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
        {
            Ok(f) => f,
            Err(e) => {
                s.failure = Some(format!("cannot open {}: {e}", log.display()));
                return s;
            }
        };
        let err = out.try_clone().ok();
        starts += 1;
        let child = tokio::process::Command::new(&p.python)
            .arg(&p.script)
            .args(["faults", &a.master, &a.principal, &a.secret])
            .env("HISTORY", dir.join("framework.jsonl"))
            .env("RUNS", &runs)
            .env("STOP", &stop)
            .stdout(Stdio::from(out))
            .stderr(err.map_or(Stdio::null(), Stdio::from))
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                s.failure = Some(format!("cannot start {}: {e}", p.python.display()));
                return s;
            }
        };
        let status = loop {
            if deadline.is_none() && !ctx.running() {
                let _ = std::fs::write(&stop, "");
                deadline = Some(Instant::now() + Duration::from_secs(180));
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                let _ = child.kill().await;
                s.failure = Some(format!(
                    "the framework did not end within 3 minutes of being told to stop:\n{}",
                    tail(&log)
                ));
                return s;
            }
            match tokio::time::timeout(Duration::from_millis(300), child.wait()).await {
                Ok(st) => break st,
                Err(_) => continue,
            }
        };
        match status {
            Ok(st) if st.success() && deadline.is_some() => return s,
            _ if starts > 50 => {
                s.failure = Some(format!(
                    "the framework crashed {starts} times; the last:\n{}",
                    tail(&log)
                ));
                return s;
            }
            _ => {
                if deadline.is_none() {
                    s.restarts += 1;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The framework's history and the marks its tasks left.
#[derive(Debug, Default)]
pub struct FrameworkFinal {
    /// Task ids in the order they were launched.
    pub launched: Vec<String>,
    /// Each task's updates, in the order the framework got them.
    pub updates: BTreeMap<String, Vec<String>>,
    /// The states the framework held at the end, if it got that far.
    pub finals: Option<BTreeMap<String, Option<String>>>,
    /// How many times the framework subscribed.
    pub subscriptions: usize,
    /// How many times each task ran (its marks).
    pub runs: BTreeMap<String, usize>,
    pub supervised: Supervised,
}

/// Reads the framework's history and marks under `dir`.
pub fn read(dir: &Path, supervised: Supervised) -> anyhow::Result<FrameworkFinal> {
    let mut f = FrameworkFinal {
        supervised,
        ..Default::default()
    };
    let history = match std::fs::read_to_string(dir.join("framework.jsonl")) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.into()),
    };
    for line in history.lines() {
        let Ok(e) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if e.get("subscribed").is_some() {
            f.subscriptions += 1;
        }
        if let Some(t) = e["launch"].as_str() {
            f.launched.push(t.to_string());
        }
        if let (Some(t), Some(s)) = (e["update"].as_str(), e["state"].as_str()) {
            f.updates
                .entry(t.to_string())
                .or_default()
                .push(s.to_string());
        }
        if let Some(m) = e["final"].as_object() {
            f.finals = Some(
                m.iter()
                    .map(|(t, s)| (t.clone(), s.as_str().map(str::to_string)))
                    .collect(),
            );
        }
    }
    let runs = dir.join("runs/framework");
    if runs.exists() {
        for e in std::fs::read_dir(&runs)? {
            let e = e?;
            let n = std::fs::read_to_string(e.path())?.lines().count();
            f.runs
                .insert(e.file_name().to_string_lossy().into_owned(), n);
        }
    }
    Ok(f)
}

/// States in which a task never ran.
pub(crate) const NEVER_RAN: &[&str] = &["TASK_UNKNOWN", "TASK_DROPPED", "TASK_ERROR"];

/// The framework's rules: no task ran twice or without being launched; every
/// launched task ended, as far as the framework knows; a finished task ran
/// once; a task the master says never ran (unknown, dropped, refused) left
/// no mark; the updates each task got follow the life cycle.
pub fn check(f: &FrameworkFinal, v: &mut Vec<String>) {
    if let Some(why) = &f.supervised.failure {
        v.push(format!("framework: {why}"));
    }
    for (task, n) in &f.runs {
        if *n > 1 {
            v.push(format!("framework: task {task} ran {n} times"));
        }
        if !f.launched.contains(task) {
            v.push(format!(
                "framework: task {task} ran, and the framework never launched it"
            ));
        }
    }
    let Some(finals) = &f.finals else {
        if f.supervised.failure.is_none() {
            v.push("framework: it never recorded its final states".into());
        }
        return;
    };
    for task in &f.launched {
        let state = finals.get(task).cloned().flatten();
        let ran = f.runs.get(task).copied().unwrap_or(0);
        match state.as_deref() {
            None => v.push(format!(
                "framework: task {task} was launched and the framework never learned what became of it"
            )),
            Some(s) if crate::check::rank(s) < 4 => v.push(format!(
                "framework: task {task} is still {s} two minutes after the faults (its updates: {:?})",
                f.updates.get(task)
            )),
            Some("TASK_FINISHED") if ran != 1 => v.push(format!(
                "framework: task {task} finished, and ran {ran} times"
            )),
            Some(s) if NEVER_RAN.contains(&s) && ran > 0 => v.push(format!(
                "framework: task {task} ended {s}, and it ran (updates: {:?})",
                f.updates.get(task)
            )),
            Some(_) => {}
        }
    }
    for (task, states) in &f.updates {
        if let Some((_, a, b)) = crate::check::illegal_step(states) {
            v.push(format!(
                "framework: task {task} was told {a} then {b} ({})",
                states.join(" → ")
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fin(
        launched: &[&str],
        updates: &[(&str, &[&str])],
        finals: &[(&str, &str)],
        runs: &[(&str, usize)],
    ) -> FrameworkFinal {
        FrameworkFinal {
            launched: launched.iter().map(|s| s.to_string()).collect(),
            updates: updates
                .iter()
                .map(|(t, s)| (t.to_string(), s.iter().map(|x| x.to_string()).collect()))
                .collect(),
            finals: Some(
                finals
                    .iter()
                    .map(|(t, s)| (t.to_string(), Some(s.to_string())))
                    .collect(),
            ),
            subscriptions: 1,
            runs: runs.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
            supervised: Supervised::default(),
        }
    }

    #[test]
    fn a_framework_whose_tasks_ran_once_or_never_has_no_violation() {
        let f = fin(
            &["f-1", "f-2", "f-3"],
            &[
                ("f-1", &["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]),
                (
                    "f-2",
                    &[
                        "TASK_RUNNING",
                        "TASK_UNREACHABLE",
                        "TASK_RUNNING",
                        "TASK_RUNNING",
                        "TASK_FINISHED",
                    ],
                ),
                ("f-3", &["TASK_UNKNOWN"]),
            ],
            &[
                ("f-1", "TASK_FINISHED"),
                ("f-2", "TASK_FINISHED"),
                ("f-3", "TASK_UNKNOWN"),
            ],
            &[("f-1", 1), ("f-2", 1)],
        );
        let mut v = Vec::new();
        check(&f, &mut v);
        assert_eq!(v, Vec::<String>::new());
    }

    #[test]
    fn a_second_run_a_stray_run_an_unended_task_and_a_run_the_master_denies_are_each_named() {
        let f = fin(
            &["f-1", "f-2", "f-3"],
            &[
                ("f-1", &["TASK_RUNNING", "TASK_FINISHED"]),
                ("f-3", &["TASK_DROPPED", "TASK_RUNNING"]),
            ],
            &[
                ("f-1", "TASK_FINISHED"),
                ("f-2", "TASK_RUNNING"),
                ("f-3", "TASK_DROPPED"),
            ],
            &[("f-1", 2), ("f-3", 1), ("f-9", 1)],
        );
        let mut v = Vec::new();
        check(&f, &mut v);
        assert_eq!(v.len(), 6, "{v:#?}");
        assert!(v[0].contains("f-1 ran 2 times"), "{}", v[0]);
        assert!(v[1].contains("f-9 ran, and the framework never launched it"));
        assert!(v[2].contains("f-1 finished, and ran 2 times"));
        assert!(v[3].contains("f-2 is still TASK_RUNNING"));
        assert!(v[4].contains("f-3 ended TASK_DROPPED, and it ran"));
        assert!(v[5].contains("f-3 was told TASK_DROPPED then TASK_RUNNING"));
    }
}
