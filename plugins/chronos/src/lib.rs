//! `chronos`: repeating and dependent batch jobs, serving Chronos' REST API.
//!
//! A job runs on an ISO 8601 repeating schedule in a time zone
//! ([`schedule`]), or after its parents succeed ([`graph`]). Each run is
//! one instant of the job: it is queued, launched on an offer that fits
//! (through the SDK's packer, constraints through the placement plugins),
//! retried after failures, and kept in the job's history with every attempt
//! ([`model`]). The API ([`api`]) is Chronos 3's under `/v1/scheduler` and
//! Chronos 2's under `/scheduler`, both also below `/frameworks/chronos/`,
//! plus a Wasmos view of jobs and runs for `wasmos job` and the dashboard.
//!
//! Everything lasting is in the framework's replicated key-value state and
//! is written in the same commit as the action it records (see [`model`]),
//! so a master failover neither loses a due run nor runs it twice. In
//! memory there are only indexes over it, rebuilt in `init`.

mod api;
mod graph;
mod job;
mod model;
mod schedule;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use wasmos_sdk::framework::{
    Command, Container, DockerInfo, DockerNetwork, FetchUri, Framework, KeyValue, Offer,
    OfferInterest, Request, Resources, Response, Rule, TaskSpec, TaskState, TaskStatus, Volume,
    VolumeSource, driver, is_terminal, state_name,
};
use wasmos_sdk::offers::{Need, Packer, Placement};
use wasmos_sdk::placement::Constraint;
use wasmos_sdk::{kv, log};

use crate::job::{Defaults, JobDef, Kind};
use crate::model::{
    ACTIVE_PREFIX, Attempt, JobRecord, KillCause, RECENT_PREFIX, Run, RunState, Sample, Trigger,
    active_key, hist_key, job_key, recent_key,
};
use crate::schedule::{Schedule, iso_ms, run_id};

/// Offers declined while runs wait but nothing fits come back this soon.
const REFUSE_WHILE_WAITING: f64 = 1.0;
/// Offers declined with nothing to run.
const REFUSE_IDLE: f64 = 30.0;
/// Launches the master may drop (stale offers) before the run fails.
const MAX_DROPS: u32 = 5;
/// Due occurrences turned into runs in one call.
const MAX_FIRED_PER_CALL: usize = 500;
/// Runs launched on one offer in one round (Marathon's
/// max_instances_per_offer): a backlog spreads over the agents.
const MAX_RUNS_PER_OFFER: usize = 100;

/// The plugin's configuration (Chronos' command-line flags).
#[derive(Debug, Clone)]
struct Settings {
    defaults: Defaults,
    failure_retry_ms: u64,
    disable_after_failures: u64,
    history_per_job: usize,
    unreachable_timeout_ms: u64,
}

impl Settings {
    fn from_config(config: &wasmos_sdk::Config) -> Result<Settings, String> {
        let num = |k: &str, d: f64| -> Result<f64, String> {
            match config.get(k) {
                Some(v) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| format!("config {k}={v:?} is not a non-negative number")),
                None => Ok(d),
            }
        };
        let epsilon = config
            .get("task_epsilon")
            .cloned()
            .unwrap_or_else(|| "PT60S".into());
        schedule::duration_ms(&epsilon).map_err(|e| format!("config task_epsilon: {e}"))?;
        Ok(Settings {
            defaults: Defaults {
                cpus: num("mesos_task_cpu", 0.1)?,
                mem: num("mesos_task_mem", 128.0)?,
                disk: num("mesos_task_disk", 256.0)?,
                user: config.get("user").cloned().unwrap_or_default(),
                epsilon,
            },
            failure_retry_ms: num("failure_retry_ms", 60_000.0)? as u64,
            disable_after_failures: num("disable_after_failures", 0.0)? as u64,
            history_per_job: (num("history_per_job", 100.0)? as usize).max(1),
            unreachable_timeout_ms: num("unreachable_timeout_ms", 300_000.0)? as u64,
        })
    }
}

type RunKey = (String, String);

/// The Chronos framework.
pub(crate) struct Chronos {
    settings: Settings,
    jobs: BTreeMap<String, JobRecord>,
    /// Parsed schedules of scheduled jobs.
    schedules: BTreeMap<String, Schedule>,
    /// (next occurrence, job) of every enabled scheduled job with one left.
    due: BTreeSet<(u64, String)>,
    armed: BTreeMap<String, u64>,
    /// Runs not finished, by (job, run id).
    runs: BTreeMap<RunKey, Run>,
    by_task: BTreeMap<String, RunKey>,
    recent: BTreeMap<String, VecDeque<Sample>>,
    children: BTreeMap<String, BTreeSet<String>>,
    /// Why queued runs are not launched yet (not durable).
    waiting: BTreeMap<RunKey, String>,
    offers: OfferInterest,
    eligible_before: usize,
    /// Whether a run changed in a way that can change how many runs may
    /// launch (anything but a launched run starting to run): the count is
    /// recomputed then and on every tick, not after every status update.
    eligible_stale: std::cell::Cell<bool>,
    /// Since this instance started (for `/metrics`; not durable).
    launched: u64,
    succeeded: u64,
    failed: u64,
}

pub(crate) fn now() -> u64 {
    log::now_ms()
}

fn save<T: serde::Serialize>(key: &str, value: &T) {
    if let Err(e) = kv::set_json(key, value) {
        log::error(&format!("cannot save {key}: {e}"));
    }
}

impl Chronos {
    fn save_job(&mut self, name: &str) {
        if let Some(j) = self.jobs.get_mut(name) {
            j.updated_ms = now();
            save(&job_key(name), j);
        }
    }

    fn save_run(&self, key: &RunKey) {
        if let Some(r) = self.runs.get(key) {
            if r.state != RunState::Running {
                self.eligible_stale.set(true);
            }
            save(&active_key(&key.0, &key.1), r);
        }
    }

    /// Puts the job's next occurrence in the due index (or takes it out).
    fn arm(&mut self, name: &str) {
        if let Some(at) = self.armed.remove(name) {
            self.due.remove(&(at, name.to_string()));
        }
        let Some(j) = self.jobs.get(name) else { return };
        if j.def.disabled {
            return;
        }
        if let Some(at) = self.schedules.get(name).and_then(Schedule::next_ms) {
            self.due.insert((at, name.to_string()));
            self.armed.insert(name.to_string(), at);
        }
    }

    /// Parses a job's stored schedule into the index.
    fn load_schedule(&mut self, name: &str) {
        self.schedules.remove(name);
        let Some(j) = self.jobs.get(name) else { return };
        if let (Kind::Scheduled { time_zone, .. }, Some(text)) = (&j.def.kind, &j.schedule) {
            match Schedule::parse(text, time_zone, now()) {
                Ok(s) => {
                    self.schedules.insert(name.to_string(), s);
                }
                Err(e) => log::error(&format!("job {name}: stored schedule unusable: {e}")),
            }
        }
        self.arm(name);
    }

    fn runs_of(&self, job: &str) -> impl Iterator<Item = (&RunKey, &Run)> {
        self.runs
            .range((job.to_string(), String::new())..)
            .take_while(move |(k, _)| k.0 == job)
    }

    /// `idle`, `queued` or `N running`, as Chronos shows a job.
    pub(crate) fn state_of(&self, job: &str) -> String {
        let mut running = 0;
        let mut queued = false;
        for (_, r) in self.runs_of(job) {
            match r.state {
                RunState::Launched | RunState::Running => running += 1,
                RunState::Queued => queued = true,
                _ => {}
            }
        }
        if running > 0 {
            format!("{running} running")
        } else if queued {
            "queued".into()
        } else {
            "idle".into()
        }
    }

    /// Starts the occurrences that are due, at most `MAX_FIRED_PER_CALL`
    /// (the rest in the next call, a tick later): one call's commit stays a
    /// bounded size and well within the call's deadline when thousands of
    /// jobs share one instant.
    fn fire_due(&mut self, now_ms: u64) {
        let mut fired = 0;
        while let Some((at, name)) = self.due.first().cloned() {
            if at > now_ms || fired >= MAX_FIRED_PER_CALL {
                break;
            }
            fired += 1;
            self.due.remove(&(at, name.clone()));
            self.armed.remove(&name);
            let Some(mut sched) = self.schedules.get(&name).cloned() else {
                continue;
            };
            let Some(job) = self.jobs.get(&name) else {
                continue;
            };
            let due = match job.def.epsilon.as_deref().map(schedule::duration_ms) {
                Some(Ok(eps)) => {
                    let (skipped, due) = sched.skip_past(now_ms, eps);
                    if skipped > 0 {
                        log::warn(&format!(
                            "job {name}: {skipped} occurrence(s) older than its epsilon skipped"
                        ));
                    }
                    if let Some(j) = self.jobs.get_mut(&name) {
                        j.skipped += skipped;
                    }
                    due
                }
                _ => sched.coalesce_past(now_ms),
            };
            if let Some(j) = self.jobs.get_mut(&name) {
                j.schedule = Some(sched.canonical());
            }
            self.schedules.insert(name.clone(), sched);
            if let Some(due) = due {
                self.enqueue(&name, due, Trigger::Schedule, None, now_ms);
            }
            self.save_job(&name);
            self.arm(&name);
        }
    }

    /// Queues a run of `job` for instant `due_ms`. Chronos keeps at most
    /// one queued run per job: a second one coalesces into it.
    fn enqueue(
        &mut self,
        job: &str,
        due_ms: u64,
        trigger: Trigger,
        arguments: Option<String>,
        now_ms: u64,
    ) -> Option<String> {
        let j = self.jobs.get(job)?;
        if j.def.disabled {
            log::info(&format!(
                "job {job} is disabled; its {trigger:?} run is dropped"
            ));
            return None;
        }
        if self
            .runs_of(job)
            .any(|(_, r)| r.state == RunState::Queued && r.attempt == 0)
        {
            log::debug(&format!(
                "job {job} already has a queued run; this one joins it"
            ));
            return None;
        }
        let base = run_id(due_ms);
        let mut id = base.clone();
        let mut n = 1;
        while self.runs.contains_key(&(job.to_string(), id.clone()))
            || kv::get(&hist_key(job, &id)).is_some()
        {
            n += 1;
            id = format!("{base}-{n}");
        }
        let run = Run {
            job: job.to_string(),
            id: id.clone(),
            due_ms,
            trigger,
            arguments,
            state: RunState::Queued,
            attempt: 0,
            not_before_ms: 0,
            queued_ms: now_ms,
            attempts: Vec::new(),
            ended_ms: None,
            message: None,
            kill: None,
            drops: 0,
        };
        let key = (job.to_string(), id.clone());
        self.runs.insert(key.clone(), run);
        self.save_run(&key);
        Some(id)
    }

    /// Queued runs that may launch now, with their job: due (past any
    /// retry delay), and not held back by a running run of a job that is
    /// not `concurrent`.
    fn launchable(&self, now_ms: u64) -> impl Iterator<Item = (&RunKey, &Run, &JobRecord)> {
        let busy: BTreeSet<&str> = self
            .runs
            .iter()
            .filter(|(_, r)| matches!(r.state, RunState::Launched | RunState::Running))
            .map(|(k, _)| k.0.as_str())
            .collect();
        self.runs
            .iter()
            .filter(move |(_, r)| r.state == RunState::Queued && r.not_before_ms <= now_ms)
            .filter_map(move |(k, r)| {
                let j = self.jobs.get(&k.0)?;
                (j.def.concurrent || !busy.contains(k.0.as_str())).then_some((k, r, j))
            })
    }

    /// [`Chronos::launchable`] in launch order: high priority first, then
    /// by due instant.
    fn eligible(&self, now_ms: u64) -> Vec<RunKey> {
        let mut out: Vec<(bool, u64, &RunKey)> = self
            .launchable(now_ms)
            .map(|(k, r, j)| (!j.def.high_priority, r.due_ms, k))
            .collect();
        out.sort();
        out.into_iter().map(|(_, _, k)| k.clone()).collect()
    }

    /// Asks for offers while runs can launch; a run newly able to launch
    /// revives at once.
    fn want_offers(&mut self, now_ms: u64) {
        if !self.eligible_stale.replace(false) {
            return;
        }
        let n = self.launchable(now_ms).count();
        if n > self.eligible_before {
            log::debug(&format!(
                "{n} runs can launch (was {}): reviving offers",
                self.eligible_before
            ));
            self.offers.more();
        } else {
            self.offers.want(n > 0);
        }
        self.eligible_before = n;
    }

    /// The task of a run's current attempt.
    fn spec(&self, run: &Run, def: &JobDef) -> TaskSpec {
        let task_id = run.task_id(run.attempt);
        let extra = run
            .arguments
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty());
        let (shell, value, arguments) = if def.shell {
            let args = extra
                .map(str::to_string)
                .or_else(|| (!def.arguments.is_empty()).then(|| def.arguments.join(" ")));
            let value = match args {
                Some(a) => format!("{} {a}", def.command),
                None => def.command.clone(),
            };
            (true, value, Vec::new())
        } else if def.command.is_empty() {
            // A container's own entrypoint.
            (false, String::new(), Vec::new())
        } else {
            let mut argv = vec![def.command.clone()];
            argv.extend(def.arguments.iter().cloned());
            argv.extend(
                extra
                    .into_iter()
                    .flat_map(|a| a.split_whitespace().map(str::to_string)),
            );
            (false, def.command.clone(), argv)
        };
        let mut env: Vec<(String, String)> = vec![
            ("mesos_task_id".into(), task_id.clone()),
            ("MESOS_TASK_ID".into(), task_id.clone()),
            ("CHRONOS_JOB_OWNER".into(), def.owner.clone()),
            ("CHRONOS_JOB_NAME".into(), def.name.clone()),
            ("CHRONOS_RESOURCE_MEM".into(), format!("{:?}", def.mem)),
            ("CHRONOS_RESOURCE_CPU".into(), format!("{:?}", def.cpus)),
            ("CHRONOS_RESOURCE_DISK".into(), format!("{:?}", def.disk)),
            ("CHRONOS_JOB_RUN_TIME".into(), run.due_ms.to_string()),
            ("CHRONOS_JOB_RUN_ATTEMPT".into(), run.attempt.to_string()),
            ("WASMOS_CHRONOS_RUN_ID".into(), run.id.clone()),
        ];
        // The job's own variables never override Chronos' (as in Chronos).
        for (k, v) in &def.environment_variables {
            if !env.iter().any(|(e, _)| e == k) {
                env.push((k.clone(), v.clone()));
            }
        }
        TaskSpec {
            task_id,
            name: format!("ChronosTask:{}", def.name),
            resources: Resources {
                cpus: def.cpus,
                mem: def.mem,
                disk: def.disk,
                gpus: 0,
                ports: Vec::new(),
            },
            command: Command {
                shell,
                value,
                arguments,
                environment: env
                    .into_iter()
                    .map(|(key, value)| KeyValue { key, value })
                    .collect(),
                user: Some(def.run_as_user.clone()).filter(|u| !u.is_empty()),
            },
            labels: vec![
                KeyValue {
                    key: "chronos.job".into(),
                    value: def.name.clone(),
                },
                KeyValue {
                    key: "chronos.run".into(),
                    value: run.id.clone(),
                },
            ],
            kill_grace_period_ms: None,
            health_check: None,
            container: def.container.as_ref().map(|c| {
                Container::Docker(DockerInfo {
                    image: c.image.clone(),
                    network: if c.network == "BRIDGE" {
                        DockerNetwork::Bridge
                    } else {
                        DockerNetwork::Host
                    },
                    port_mappings: Vec::new(),
                    force_pull_image: c.force_pull_image,
                })
            }),
            fetch: def
                .fetch
                .iter()
                .map(|f| FetchUri {
                    uri: f.uri.clone(),
                    extract: f.extract,
                    executable: f.executable,
                    dest_path: f.output_file.clone(),
                })
                .collect(),
            readiness_check: None,
            accepted_roles: Vec::new(),
            volumes: def
                .container
                .iter()
                .flat_map(|c| &c.volumes)
                .map(|v| Volume {
                    container_path: v.container_path.clone(),
                    read_only: v.read_only,
                    source: VolumeSource::Host(v.host_path.clone()),
                })
                .collect(),
            discovery: Vec::new(),
        }
    }

    /// Placement rules of a job's constraints: EQUALS is Marathon's
    /// CLUSTER with a value (the attribute equals it); LIKE and UNLIKE are
    /// full regular-expression matches, as in Chronos.
    pub(crate) fn rules(def: &JobDef) -> Vec<Rule> {
        def.constraints
            .iter()
            .map(|[field, op, value]| Rule {
                constraint: Constraint {
                    field: field.clone(),
                    operator: if op == "EQUALS" {
                        "CLUSTER".into()
                    } else {
                        op.clone()
                    },
                    value: Some(value.clone()),
                },
                plugin: None,
            })
            .collect()
    }

    /// Records the outcome of a status update for a run's current attempt.
    fn on_status(&mut self, key: RunKey, update: &TaskStatus, now_ms: u64) {
        let Some(mut run) = self.runs.get(&key).cloned() else {
            return;
        };
        if run.current().map(|a| a.task_id.as_str()) != Some(update.task_id.as_str()) {
            // An update for an earlier attempt: only its record changes.
            if let Some(a) = run
                .attempts
                .iter_mut()
                .find(|a| a.task_id == update.task_id)
            {
                a.state = state_name(update.state).to_string();
                if is_terminal(update.state) && a.ended_ms.is_none() {
                    a.ended_ms = Some(now_ms);
                }
                self.runs.insert(key.clone(), run);
                self.save_run(&key);
            }
            return;
        }
        if let Some(a) = run.current_mut() {
            a.state = state_name(update.state).to_string();
            a.unreachable_ms = match update.state {
                TaskState::Unreachable => a.unreachable_ms.or(Some(now_ms)),
                _ => None,
            };
            if let Some(agent) = &update.agent_id {
                a.agent_id = agent.clone();
            }
            a.message = update.message.clone().or(a.message.take());
            a.reason = update.reason.clone().or(a.reason.take());
            a.exit_code = update.exit_code.or(a.exit_code);
            if is_terminal(update.state) {
                a.ended_ms = Some(now_ms);
            }
        }
        match update.state {
            TaskState::Running => {
                let first = run.current().is_some_and(|a| a.started_ms.is_none());
                if let Some(a) = run.current_mut()
                    && a.started_ms.is_none()
                {
                    a.started_ms = Some(now_ms);
                }
                run.state = RunState::Running;
                self.runs.insert(key.clone(), run);
                self.save_run(&key);
                if first {
                    // Chronos: a child's edges count again from its start.
                    if let Some(j) = self.jobs.get_mut(&key.0)
                        && j.parent_counts.values().any(|n| *n > 0)
                    {
                        j.parent_counts.clear();
                        self.save_job(&key.0);
                    }
                }
            }
            TaskState::Finished => self.succeed(key, run, now_ms),
            TaskState::Killed => match run.kill {
                Some(KillCause::Overdue) => {
                    let max = self
                        .jobs
                        .get(&key.0)
                        .map_or(0, |j| j.def.max_completion_time);
                    self.fail(
                        key,
                        run,
                        now_ms,
                        format!("killed after its maxCompletionTime of {max} s"),
                    );
                }
                _ => {
                    run.state = RunState::Killed;
                    run.message = Some(
                        update
                            .message
                            .clone()
                            .unwrap_or_else(|| "killed".to_string()),
                    );
                    self.finish(key, run, now_ms);
                }
            },
            TaskState::Dropped if run.drops < MAX_DROPS => {
                // The launch never reached an agent (its offer went stale):
                // launch again, without using up a retry.
                run.drops += 1;
                run.state = RunState::Queued;
                run.not_before_ms = now_ms + 1000;
                run.attempts.pop();
                self.by_task.remove(&update.task_id);
                self.runs.insert(key.clone(), run);
                self.save_run(&key);
            }
            s if is_terminal(s) => {
                let why = update
                    .message
                    .clone()
                    .unwrap_or_else(|| state_name(s).to_string());
                self.fail(key, run, now_ms, why);
            }
            _ => {
                self.runs.insert(key.clone(), run);
                self.save_run(&key);
            }
        }
    }

    fn succeed(&mut self, key: RunKey, mut run: Run, now_ms: u64) {
        run.state = RunState::Succeeded;
        run.message = None;
        self.succeeded += 1;
        // The schedule's last occurrence succeeded: Chronos disables the
        // job. A manual or dependent run of a job with R0 left does not.
        let exhausted = run.trigger == Trigger::Schedule
            && self
                .schedules
                .get(&key.0)
                .is_some_and(|s| s.repeat == Some(0));
        if let Some(j) = self.jobs.get_mut(&key.0) {
            j.counters.success_count += 1;
            j.counters.errors_since_last_success = 0;
            j.counters.last_success = iso_ms(now_ms);
            if exhausted && !j.def.disabled {
                j.def.disabled = true;
                log::info(&format!(
                    "job {} has exhausted all of its recurrences",
                    key.0
                ));
            }
        }
        self.save_job(&key.0);
        self.arm(&key.0);
        let job = key.0.clone();
        self.finish(key, run, now_ms);
        self.trigger_children(&job, now_ms);
    }

    /// A failed attempt: retried (Chronos' rule, quirk included: no
    /// retries while the job's last result is an error), else the run fails.
    fn fail(&mut self, key: RunKey, mut run: Run, now_ms: u64, why: String) {
        let Some(j) = self.jobs.get(&key.0) else {
            run.state = RunState::Failed;
            run.message = Some(why);
            self.finish(key, run, now_ms);
            return;
        };
        let c = &j.counters;
        let retry = run.attempt < j.def.retries
            && (c.last_error.is_empty() || c.last_success >= c.last_error);
        if retry {
            log::info(&format!(
                "run {}/{} attempt {} failed ({why}); retry {} in {} ms",
                key.0,
                key.1,
                run.attempt,
                run.attempt + 1,
                self.settings.failure_retry_ms
            ));
            if let Some(a) = run.current() {
                self.by_task.remove(&a.task_id);
            }
            run.attempt += 1;
            run.state = RunState::Queued;
            run.not_before_ms = now_ms + self.settings.failure_retry_ms;
            run.kill = None;
            run.message = Some(why);
            self.runs.insert(key.clone(), run);
            self.save_run(&key);
            return;
        }
        run.state = RunState::Failed;
        run.message = Some(why);
        self.failed += 1;
        let soft = j.def.soft_error;
        let limit = self.settings.disable_after_failures;
        if let Some(j) = self.jobs.get_mut(&key.0) {
            j.counters.error_count += 1;
            j.counters.errors_since_last_success += 1;
            j.counters.last_error = iso_ms(now_ms);
            if limit > 0 && j.counters.errors_since_last_success >= limit {
                j.def.disabled = true;
                log::warn(&format!(
                    "job {} disabled after {limit} failures in a row",
                    key.0
                ));
            }
        }
        self.save_job(&key.0);
        self.arm(&key.0);
        let job = key.0.clone();
        self.finish(key, run, now_ms);
        if soft {
            self.trigger_children(&job, now_ms);
        }
    }

    /// Moves a finished run to the job's history.
    fn finish(&mut self, key: RunKey, mut run: Run, now_ms: u64) {
        run.ended_ms = Some(now_ms);
        for a in &run.attempts {
            self.by_task.remove(&a.task_id);
        }
        self.runs.remove(&key);
        self.eligible_stale.set(true);
        self.waiting.remove(&key);
        kv::delete(&active_key(&key.0, &key.1));
        if !self.jobs.contains_key(&key.0) {
            return;
        }
        save(&hist_key(&key.0, &key.1), &run);
        let ring = self.recent.entry(key.0.clone()).or_default();
        ring.push_back(Sample {
            run: run.id.clone(),
            due_ms: run.due_ms,
            ended_ms: now_ms,
            state: run.state,
        });
        while ring.len() > self.settings.history_per_job {
            if let Some(old) = ring.pop_front() {
                kv::delete(&hist_key(&key.0, &old.run));
            }
        }
        save(&recent_key(&key.0), &ring);
    }

    /// Counts a success of `parent` on each edge out of it and queues the
    /// children whose parents have all succeeded since they last started.
    fn trigger_children(&mut self, parent: &str, now_ms: u64) {
        let kids: Vec<String> = self
            .children
            .get(parent)
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default();
        for child in kids {
            let Some(j) = self.jobs.get_mut(&child) else {
                continue;
            };
            let go = graph::count_success(j, parent);
            self.save_job(&child);
            if go {
                self.enqueue(&child, now_ms, Trigger::Parents, None, now_ms);
            }
        }
    }

    /// Kills the runs of `job` that have a task (queued ones stay: Chronos'
    /// kill reaches only running tasks).
    pub(crate) fn kill_runs(&mut self, job: &str, cause: KillCause) -> usize {
        let keys: Vec<RunKey> = self
            .runs_of(job)
            .filter(|(_, r)| matches!(r.state, RunState::Launched | RunState::Running))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &keys {
            self.kill_current(key, cause);
        }
        keys.len()
    }

    /// Kills the task of a run's current attempt, noting why.
    fn kill_current(&mut self, key: &RunKey, cause: KillCause) {
        if let Some(r) = self.runs.get_mut(key) {
            if let Some(a) = r.current() {
                driver::kill(&a.task_id);
            }
            r.kill = Some(cause);
        }
        self.save_run(key);
    }

    /// Kills runs past their job's maxCompletionTime.
    fn kill_overdue(&mut self, now_ms: u64) {
        let overdue: Vec<RunKey> = self
            .runs
            .iter()
            .filter(|(_, r)| r.kill.is_none())
            .filter(|(k, r)| {
                let max = self.jobs.get(&k.0).map_or(0, |j| j.def.max_completion_time);
                let since = r
                    .current()
                    .and_then(|a| a.started_ms.or(Some(a.launched_ms)));
                max > 0
                    && matches!(r.state, RunState::Launched | RunState::Running)
                    && since.is_some_and(|s| s + max * 1000 <= now_ms)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in overdue {
            log::info(&format!(
                "run {}/{} passed its maxCompletionTime; killing it",
                key.0, key.1
            ));
            self.kill_current(&key, KillCause::Overdue);
        }
    }

    /// Queued runs of jobs disabled since are dropped, as Chronos drops
    /// them when they come out of its queue.
    fn drop_disabled(&mut self, now_ms: u64) {
        let dropped: Vec<RunKey> = self
            .runs
            .iter()
            .filter(|(k, r)| {
                r.state == RunState::Queued && self.jobs.get(&k.0).is_none_or(|j| j.def.disabled)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in dropped {
            if let Some(mut run) = self.runs.get(&key).cloned() {
                log::info(&format!(
                    "run {}/{} dropped: its job is disabled",
                    key.0, key.1
                ));
                run.state = RunState::Killed;
                run.message = Some("dropped before it ran: the job was disabled".into());
                self.finish(key, run, now_ms);
            }
        }
    }

    /// An attempt whose agent has been unreachable for longer than
    /// `unreachable_timeout_ms` counts as lost: it is killed (should the
    /// agent come back) and fails, so the run retries elsewhere instead of
    /// blocking its job for good.
    fn give_up_unreachable(&mut self, now_ms: u64) {
        let limit = self.settings.unreachable_timeout_ms;
        let lost: Vec<RunKey> = self
            .runs
            .iter()
            .filter(|(_, r)| {
                r.current()
                    .and_then(|a| a.unreachable_ms)
                    .is_some_and(|since| since + limit <= now_ms)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in lost {
            let Some(run) = self.runs.get(&key).cloned() else {
                continue;
            };
            if let Some(a) = run.current() {
                driver::kill(&a.task_id);
            }
            let why = format!(
                "its agent was unreachable for {} s; the attempt is counted lost",
                limit / 1000
            );
            self.fail(key, run, now_ms, why);
        }
    }

    /// Adds or replaces a job (validated by the API), keeping what the
    /// server knows about it.
    pub(crate) fn put_job(
        &mut self,
        def: JobDef,
        counters: &job::CountersIn,
        sched: Option<Schedule>,
    ) {
        let name = def.name.clone();
        let now_ms = now();
        let previous = self.jobs.remove(&name);
        let old_parents: Vec<String> = previous
            .as_ref()
            .map(|p| p.def.parents().to_vec())
            .unwrap_or_default();
        let mut rec = match previous {
            Some(mut old) => {
                old.def = def;
                old.counters.merge(counters);
                // Counters of edges from parents it no longer has go.
                let parents: BTreeSet<&String> = old.def.parents().iter().collect();
                old.parent_counts.retain(|p, _| parents.contains(p));
                old
            }
            None => {
                let mut c = job::Counters::default();
                c.merge(counters);
                JobRecord {
                    def,
                    counters: c,
                    schedule: None,
                    parent_counts: BTreeMap::new(),
                    skipped: 0,
                    created_ms: now_ms,
                    updated_ms: now_ms,
                }
            }
        };
        match sched {
            Some(new) => {
                // Posted again on the same series (chronos-sync does): keep
                // the next occurrence instead of running at once.
                let keep = self
                    .schedules
                    .get(&name)
                    .filter(|cur| cur.same_series(&new))
                    .cloned();
                let s = match keep {
                    Some(mut cur) => {
                        cur.repeat = new.repeat;
                        cur
                    }
                    None => new,
                };
                rec.schedule = Some(s.canonical());
                self.schedules.insert(name.clone(), s);
            }
            None => {
                rec.schedule = None;
                self.schedules.remove(&name);
            }
        }
        // The children index changes only at this job's edges.
        for p in &old_parents {
            if let Some(kids) = self.children.get_mut(p) {
                kids.remove(&name);
            }
        }
        for p in rec.def.parents() {
            self.children
                .entry(p.clone())
                .or_default()
                .insert(name.clone());
        }
        self.children.retain(|_, kids| !kids.is_empty());
        self.jobs.insert(name.clone(), rec);
        self.save_job(&name);
        self.arm(&name);
    }

    /// Removes a job: kills its tasks, forgets its runs and history, and
    /// re-links its children as Chronos does.
    pub(crate) fn delete_job(&mut self, name: &str) {
        let Some(rec) = self.jobs.get(name).cloned() else {
            return;
        };
        for (child, kind) in graph::relink_after_delete(&self.jobs, &rec) {
            let time_zone = match &kind {
                Kind::Scheduled { time_zone, .. } => Some(time_zone.clone()),
                Kind::Dependent { .. } => None,
            };
            if let Some(j) = self.jobs.get_mut(&child) {
                j.def.kind = kind;
                j.parent_counts.clear();
                j.schedule = time_zone.as_ref().and(rec.schedule.clone());
            }
            log::info(&format!(
                "job {child} re-linked after its parent {name} was deleted"
            ));
            self.save_job(&child);
            self.load_schedule(&child);
        }
        let keys: Vec<RunKey> = self.runs_of(name).map(|(k, _)| k.clone()).collect();
        for key in keys {
            if let Some(r) = self.runs.remove(&key) {
                self.eligible_stale.set(true);
                for a in &r.attempts {
                    self.by_task.remove(&a.task_id);
                    if a.ended_ms.is_none() {
                        driver::kill(&a.task_id);
                    }
                }
            }
            self.waiting.remove(&key);
            kv::delete(&active_key(&key.0, &key.1));
        }
        for k in kv::keys(&format!("{}{name}/", model::HIST_PREFIX)) {
            kv::delete(&k);
        }
        kv::delete(&recent_key(name));
        kv::delete(&job_key(name));
        self.recent.remove(name);
        self.jobs.remove(name);
        self.schedules.remove(name);
        self.arm(name);
        self.children = graph::children(&self.jobs);
    }

    /// `PUT job/success/<name>`: counts a success without a run and fires
    /// the children, as after a real one.
    pub(crate) fn mark_success(&mut self, name: &str) {
        let now_ms = now();
        if let Some(j) = self.jobs.get_mut(name) {
            j.counters.success_count += 1;
            j.counters.errors_since_last_success = 0;
            j.counters.last_success = iso_ms(now_ms);
        }
        self.save_job(name);
        self.trigger_children(name, now_ms);
    }

    /// A manual run (`PUT job/<name>`); None when it joined a queued one
    /// or the job is disabled.
    pub(crate) fn run_now(&mut self, name: &str, arguments: Option<String>) -> Option<String> {
        let now_ms = now();
        self.enqueue(name, now_ms, Trigger::Manual, arguments, now_ms)
    }

    /// The job's finished runs, newest first (from its history).
    pub(crate) fn history(&self, name: &str) -> Vec<Run> {
        let mut runs: Vec<Run> = self
            .recent
            .get(name)
            .map(|ring| {
                ring.iter()
                    .rev()
                    .filter_map(|s| kv::get_json::<Run>(&hist_key(name, &s.run)))
                    .collect()
            })
            .unwrap_or_default();
        runs.sort_by(|a, b| b.due_ms.cmp(&a.due_ms).then(b.id.cmp(&a.id)));
        runs
    }
}

impl Framework for Chronos {
    fn init(config: wasmos_sdk::Config) -> Result<Self, String> {
        let settings = Settings::from_config(&config)?;
        let mut c = Chronos {
            settings,
            jobs: BTreeMap::new(),
            schedules: BTreeMap::new(),
            due: BTreeSet::new(),
            armed: BTreeMap::new(),
            runs: BTreeMap::new(),
            by_task: BTreeMap::new(),
            recent: BTreeMap::new(),
            children: BTreeMap::new(),
            waiting: BTreeMap::new(),
            offers: OfferInterest::default(),
            eligible_before: 0,
            eligible_stale: std::cell::Cell::new(true),
            launched: 0,
            succeeded: 0,
            failed: 0,
        };
        for k in kv::keys(model::JOB_PREFIX) {
            match kv::get_json::<JobRecord>(&k) {
                Some(j) => {
                    c.jobs.insert(j.def.name.clone(), j);
                }
                None => log::error(&format!("{k} cannot be read; the job is ignored")),
            }
        }
        let names: Vec<String> = c.jobs.keys().cloned().collect();
        for name in &names {
            c.load_schedule(name);
        }
        c.children = graph::children(&c.jobs);
        for k in kv::keys(ACTIVE_PREFIX) {
            let Some(r) = kv::get_json::<Run>(&k) else {
                log::error(&format!("{k} cannot be read; the run is ignored"));
                continue;
            };
            let key = (r.job.clone(), r.id.clone());
            if matches!(r.state, RunState::Launched | RunState::Running)
                && let Some(a) = r.current()
            {
                c.by_task.insert(a.task_id.clone(), key.clone());
            }
            c.runs.insert(key, r);
        }
        for k in kv::keys(RECENT_PREFIX) {
            if let Some(ring) = kv::get_json::<VecDeque<Sample>>(&k) {
                c.recent
                    .insert(k.trim_start_matches(RECENT_PREFIX).to_string(), ring);
            }
        }
        log::info(&format!(
            "chronos: {} jobs, {} runs in flight",
            c.jobs.len(),
            c.runs.len()
        ));
        let now_ms = now();
        c.want_offers(now_ms);
        Ok(c)
    }

    fn offers(&mut self, offers: Vec<Offer>) {
        let now_ms = now();
        self.fire_due(now_ms);
        let mut packer = Packer::new(&offers).limit_per_offer(MAX_RUNS_PER_OFFER);
        let mut batch_jobs: BTreeSet<String> = BTreeSet::new();
        let mut placed: BTreeMap<String, RunKey> = BTreeMap::new();
        for key in self.eligible(now_ms) {
            let (Some(run), Some(job)) = (self.runs.get(&key), self.jobs.get(&key.0)) else {
                continue;
            };
            if !job.def.concurrent && batch_jobs.contains(&key.0) {
                continue;
            }
            let need = Need {
                cpus: job.def.cpus,
                mem: job.def.mem,
                disk: job.def.disk,
                gpus: 0,
                ports: Vec::new(),
                roles: Vec::new(),
                ..Need::default()
            };
            // Always named, so that a run which fits nowhere is explained
            // under its job (rules or none).
            let placement = Placement {
                group: key.0.clone(),
                rules: Self::rules(&job.def),
                placed: Vec::new(),
            };
            match packer.place(&need, Some(&placement)) {
                Ok(fit) => {
                    let spec = self.spec(run, &job.def);
                    placed.insert(spec.task_id.clone(), key.clone());
                    packer.add(fit.offer, spec);
                    batch_jobs.insert(key.0.clone());
                    self.waiting.remove(&key);
                }
                Err(why) => {
                    self.waiting.insert(key, why.to_string());
                }
            }
        }
        let packed = packer.finish();
        for launch in &packed.launches {
            let result = launch.send_refusing(Some(REFUSE_WHILE_WAITING));
            for spec in &launch.specs {
                let Some(key) = placed.get(&spec.task_id).cloned() else {
                    continue;
                };
                let Some(mut run) = self.runs.get(&key).cloned() else {
                    continue;
                };
                match &result {
                    Ok(()) => {
                        log::info(&format!(
                            "launching {} (run {} of {}) on {}",
                            spec.task_id, key.1, key.0, launch.hostname
                        ));
                        self.launched += 1;
                        run.state = RunState::Launched;
                        run.attempts.push(Attempt {
                            attempt: run.attempt,
                            task_id: spec.task_id.clone(),
                            agent_id: launch.agent_id.clone(),
                            hostname: launch.hostname.clone(),
                            launched_ms: now_ms,
                            started_ms: None,
                            ended_ms: None,
                            state: "TASK_STAGING".into(),
                            exit_code: None,
                            message: None,
                            reason: None,
                            unreachable_ms: None,
                        });
                        self.by_task.insert(spec.task_id.clone(), key.clone());
                        self.runs.insert(key.clone(), run);
                        self.save_run(&key);
                    }
                    Err(e) => {
                        log::error(&format!("launch of {} refused: {e}", spec.task_id));
                        run.state = RunState::Failed;
                        run.message = Some(format!("launch refused: {e}"));
                        self.failed += 1;
                        self.finish(key, run, now_ms);
                    }
                }
            }
        }
        let waiting = self.launchable(now_ms).count();
        log::debug(&format!(
            "{} offers: {} runs launched on {}, {waiting} still waiting, {} offers declined",
            offers.len(),
            placed.len(),
            packed.launches.len(),
            packed.unused.len()
        ));
        if !packed.unused.is_empty() {
            let refuse = if waiting == 0 {
                REFUSE_IDLE
            } else {
                REFUSE_WHILE_WAITING
            };
            driver::decline(&packed.unused, Some(refuse));
        }
        if waiting > 0 && !packed.launches.is_empty() {
            // A backlog that filled this round's offers: the next round now.
            self.offers.more();
        }
        self.want_offers(now_ms);
    }

    fn status(&mut self, update: TaskStatus) {
        let now_ms = now();
        match self.by_task.get(&update.task_id).cloned() {
            Some(key) => self.on_status(key, &update, now_ms),
            None if !is_terminal(update.state)
                && update.task_id.starts_with("ct:")
                && update.state != TaskState::Killing =>
            {
                // A task of a deleted job, or of a run that already ended.
                log::warn(&format!(
                    "status {} for task {} of no run; killing it",
                    state_name(update.state),
                    update.task_id
                ));
                driver::kill(&update.task_id);
            }
            None => {}
        }
        self.fire_due(now_ms);
        self.want_offers(now_ms);
    }

    fn tick(&mut self, now_ms: u64) {
        // Retries and re-launches become eligible as time passes.
        self.eligible_stale.set(true);
        self.fire_due(now_ms);
        self.kill_overdue(now_ms);
        self.drop_disabled(now_ms);
        self.give_up_unreachable(now_ms);
        self.want_offers(now_ms);
    }

    fn http(&mut self, req: Request) -> Response {
        let resp = api::handle(self, &req);
        // A job changed (disabled, concurrent, deleted) changes which runs
        // may launch without a run changing.
        self.eligible_stale.set(true);
        let now_ms = now();
        self.fire_due(now_ms);
        self.want_offers(now_ms);
        resp
    }
}

wasmos_sdk::export_framework!(Chronos);
