//! What the framework keeps in its replicated key-value state, and how.
//!
//! - `job/<name>`: a [`JobRecord`] — the definition, the counters Chronos
//!   shows, the schedule's next occurrence (as its canonical text), and the
//!   dependency counters of the edges into the job.
//! - `active/<name>/<run>`: a [`Run`] not finished yet (queued, waiting for
//!   a retry, launched, running). A new leader finds every run in flight
//!   here, with the task id of its current attempt.
//! - `hist/<name>/<run>`: a finished [`Run`], kept for the newest
//!   `history_per_job` runs of each job.
//! - `recent/<name>`: the newest finished runs in brief ([`Sample`]s), for
//!   statistics and for pruning `hist/` without listing it.
//!
//! A run is created in the same commit as the schedule's advance past its
//! instant, launched in the same commit as its state becoming `launched`,
//! and finished in the same commit as the acknowledgement of the status
//! update that ended it: whatever a leader kill interrupts, the next
//! leader sees either the step done with its effect, or neither.

use serde::{Deserialize, Serialize};

use crate::job::{Counters, JobDef};

pub const JOB_PREFIX: &str = "job/";
pub const ACTIVE_PREFIX: &str = "active/";
pub const HIST_PREFIX: &str = "hist/";
pub const RECENT_PREFIX: &str = "recent/";

pub fn job_key(name: &str) -> String {
    format!("{JOB_PREFIX}{name}")
}

pub fn active_key(job: &str, run: &str) -> String {
    format!("{ACTIVE_PREFIX}{job}/{run}")
}

pub fn hist_key(job: &str, run: &str) -> String {
    format!("{HIST_PREFIX}{job}/{run}")
}

pub fn recent_key(job: &str) -> String {
    format!("{RECENT_PREFIX}{job}")
}

/// A job and what the server keeps about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub def: JobDef,
    pub counters: Counters,
    /// A scheduled job's schedule as it stands: its next occurrence and the
    /// repetitions left (Chronos rewrites it the same way).
    pub schedule: Option<String>,
    /// For each parent: its successes since this job last started.
    #[serde(default)]
    pub parent_counts: std::collections::BTreeMap<String, u64>,
    /// Occurrences skipped because they were older than the epsilon.
    #[serde(default)]
    pub skipped: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// Why a run exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// An occurrence of the job's schedule.
    Schedule,
    /// Started by hand (`PUT job/<name>`, `wasmos job run`).
    Manual,
    /// Its parents succeeded.
    Parents,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for an offer (or, with `not_before_ms`, for its retry).
    Queued,
    /// Its task was launched and has not started running yet.
    Launched,
    Running,
    Succeeded,
    /// Failed beyond its retries (or timed out).
    Failed,
    /// Killed on request; Chronos counts this as neither success nor error.
    Killed,
}

impl RunState {
    pub fn name(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Launched => "launched",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Killed => "killed",
        }
    }
}

/// Why this framework asked for an attempt's task to be killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillCause {
    /// `task/kill/<name>`: the run ends killed.
    Request,
    /// It ran past `maxCompletionTime`: the attempt failed.
    Overdue,
}

/// One task launched for a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub attempt: u32,
    pub task_id: String,
    pub agent_id: String,
    pub hostname: String,
    pub launched_ms: u64,
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    /// The task's Mesos state, e.g. `TASK_FINISHED`.
    pub state: String,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    pub reason: Option<String>,
    /// Since when its agent has been unreachable, while it is.
    #[serde(default)]
    pub unreachable_ms: Option<u64>,
}

/// One execution of a job for one instant: queued, then one or more
/// attempts (retries after failures), then a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub job: String,
    /// Unique within the job: the due instant (`20261202T093000.000Z`),
    /// with `-2`, `-3`, ... when two runs share one.
    pub id: String,
    /// The instant the run is for: the schedule's occurrence, or when it
    /// was asked for.
    pub due_ms: u64,
    pub trigger: Trigger,
    /// `?arguments=` of a manual run.
    #[serde(default)]
    pub arguments: Option<String>,
    pub state: RunState,
    /// The current attempt, from 0.
    pub attempt: u32,
    /// A retry waits until then.
    #[serde(default)]
    pub not_before_ms: u64,
    pub queued_ms: u64,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    pub ended_ms: Option<u64>,
    #[serde(default)]
    pub message: Option<String>,
    /// Set when this framework asked to kill the current attempt.
    #[serde(default)]
    pub kill: Option<KillCause>,
    /// Launches the master dropped (stale offers) before the task reached
    /// an agent; they do not use up retries.
    #[serde(default)]
    pub drops: u32,
}

impl Run {
    /// The task id of attempt `attempt`, as Chronos makes them:
    /// `ct:<due ms>:<attempt>:<job>` (plus the run's suffix, if any).
    pub fn task_id(&self, attempt: u32) -> String {
        let base = format!("ct:{}:{attempt}:{}", self.due_ms, self.job);
        match self.id.rsplit_once('-') {
            Some((_, n)) if n.chars().all(|c| c.is_ascii_digit()) => format!("{base}:{n}"),
            _ => base,
        }
    }

    pub fn current(&self) -> Option<&Attempt> {
        self.attempts.last().filter(|a| a.attempt == self.attempt)
    }

    pub fn current_mut(&mut self) -> Option<&mut Attempt> {
        let n = self.attempt;
        self.attempts.last_mut().filter(|a| a.attempt == n)
    }

    /// When the run's first attempt started running.
    pub fn started_ms(&self) -> Option<u64> {
        self.attempts.iter().find_map(|a| a.started_ms)
    }
}

/// A finished run in brief. Stored as `[run, due, ms to end, state]` — a
/// job's newest runs are rewritten together whenever one ends, so each is
/// kept small.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "SampleWire", from = "SampleWire")]
pub struct Sample {
    pub run: String,
    pub due_ms: u64,
    pub ended_ms: u64,
    pub state: RunState,
}

/// [`Sample`] as stored.
#[derive(Serialize, Deserialize)]
struct SampleWire(String, u64, u64, RunState);

impl From<Sample> for SampleWire {
    fn from(s: Sample) -> Self {
        SampleWire(
            s.run,
            s.due_ms,
            s.ended_ms.saturating_sub(s.due_ms),
            s.state,
        )
    }
}

impl From<SampleWire> for Sample {
    fn from(w: SampleWire) -> Self {
        Sample {
            run: w.0,
            due_ms: w.1,
            ended_ms: w.1.saturating_add(w.2),
            state: w.3,
        }
    }
}

impl Sample {
    /// Due instant to end, in milliseconds: what Chronos' histograms measure.
    pub fn elapsed_ms(&self) -> u64 {
        self.ended_ms.saturating_sub(self.due_ms)
    }
}

/// Percentiles of successful runs' durations (due → end), in ms.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Histogram {
    pub p75: f64,
    pub p95: f64,
    pub p98: f64,
    pub p99: f64,
    pub median: f64,
    pub mean: f64,
    pub count: usize,
}

impl Histogram {
    pub fn of<'a>(samples: impl Iterator<Item = &'a Sample>) -> Histogram {
        let mut v: Vec<f64> = samples
            .filter(|s| s.state == RunState::Succeeded)
            .map(|s| s.elapsed_ms() as f64)
            .collect();
        if v.is_empty() {
            return Histogram::default();
        }
        v.sort_by(f64::total_cmp);
        // Nearest rank, as Dropwizard's snapshots compute quantiles.
        let q = |p: f64| -> f64 {
            let pos = p * (v.len() as f64 + 1.0);
            if pos < 1.0 {
                v[0]
            } else if pos >= v.len() as f64 {
                v[v.len() - 1]
            } else {
                let lower = v[pos as usize - 1];
                let upper = v[pos as usize];
                lower + (pos - pos.floor()) * (upper - lower)
            }
        };
        Histogram {
            p75: q(0.75),
            p95: q(0.95),
            p98: q(0.98),
            p99: q(0.99),
            median: q(0.5),
            mean: v.iter().sum::<f64>() / v.len() as f64,
            count: v.len(),
        }
    }

    /// The value Chronos' `stats/<pct>` names.
    pub fn get(&self, name: &str) -> Option<f64> {
        Some(match name {
            "75thPercentile" => self.p75,
            "95thPercentile" => self.p95,
            "98thPercentile" => self.p98,
            "99thPercentile" => self.p99,
            "median" => self.median,
            "mean" => self.mean,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(due: u64, end: u64, state: RunState) -> Sample {
        Sample {
            run: due.to_string(),
            due_ms: due,
            ended_ms: end,
            state,
        }
    }

    #[test]
    fn samples_are_stored_small_and_read_back_whole() {
        let s = sample(1_796_198_400_000, 1_796_198_400_045, RunState::Succeeded);
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(text, r#"["1796198400000",1796198400000,45,"succeeded"]"#);
        assert_eq!(serde_json::from_str::<Sample>(&text).unwrap(), s);
    }

    #[test]
    fn histograms_count_successes_only() {
        let s: Vec<Sample> = (1..=100)
            .map(|i| sample(0, i * 10, RunState::Succeeded))
            .chain([sample(0, 1_000_000, RunState::Failed)])
            .collect();
        let h = Histogram::of(s.iter());
        assert_eq!(h.count, 100);
        assert!((h.median - 505.0).abs() < 1e-9, "{h:?}");
        assert!((h.p99 - 999.9).abs() < 1e-9, "{h:?}");
        assert!((h.mean - 505.0).abs() < 1e-9, "{h:?}");
        assert_eq!(Histogram::of([].iter()), Histogram::default());
        assert_eq!(h.get("median"), Some(h.median));
        assert_eq!(h.get("bogus"), None);
    }

    #[test]
    fn task_ids_follow_chronos_and_stay_unique_per_run() {
        let mut r = Run {
            job: "nightly".into(),
            id: "20260101T000000.000Z".into(),
            due_ms: 1_767_225_600_000,
            trigger: Trigger::Schedule,
            arguments: None,
            state: RunState::Queued,
            attempt: 0,
            not_before_ms: 0,
            queued_ms: 0,
            attempts: vec![],
            ended_ms: None,
            message: None,
            kill: None,
            drops: 0,
        };
        assert_eq!(r.task_id(1), "ct:1767225600000:1:nightly");
        r.id.push_str("-2");
        assert_eq!(r.task_id(0), "ct:1767225600000:0:nightly:2");
    }
}
