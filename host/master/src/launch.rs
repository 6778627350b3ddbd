//! The one launch path of the master, for Wasm framework plugins and
//! external (Mesos API) frameworks alike:
//!
//! offer accepted → tasks checked once against the offers
//! ([`LaunchBatch::accept`]) → committed as STAGING with whatever else the
//! framework's call changed ([`Leader::commit_launches`]) → sent to the
//! agent ([`Leader::send_launch`]).
//!
//! Tasks refused on the way come back as status updates made by the master
//! (TASK_ERROR for a task that can never run, TASK_DROPPED for a launch
//! whose offers were gone), for the caller to deliver to its framework.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;
use wasmos_core::{AgentId, FrameworkId, OfferId, Reason, TaskId, TaskSpec, TaskState, TaskStatus};
use wasmos_state::{Command, Response};
use wasmos_store::StoreError;

use crate::leader::{Leader, master_status, now_secs};

/// The longest refuse filter (Mesos caps `refuse_seconds` at a year).
const MAX_REFUSE_SECS: f64 = 31_536_000.0;

/// A framework's `refuse_seconds` as a filter: negative or not a number
/// is no filter, more than a year is a year.
pub fn refuse_duration(seconds: Option<f64>) -> Option<Duration> {
    let s = seconds?;
    (s.is_finite() || s == f64::INFINITY)
        .then(|| Duration::from_secs_f64(s.clamp(0.0, MAX_REFUSE_SECS)))
}

/// Launches checked against their offers, waiting to be committed.
#[derive(Default)]
pub struct LaunchBatch {
    /// Accepted tasks, by agent, in the order of their `LaunchTasks`
    /// commands.
    launches: Vec<(AgentId, Vec<TaskSpec>)>,
    /// Tasks whose resources the allocator holds until the commit.
    reserved: Vec<TaskId>,
    commands: Vec<Command>,
    /// Updates for tasks refused before the commit.
    pub refused: Vec<TaskStatus>,
}

impl LaunchBatch {
    /// Checks one launch (tasks on the agent of `offer_ids`) against the
    /// framework's outstanding offers, consumes them, and queues what
    /// passed. The framework is filtered from that agent's unused rest for
    /// `refuse_seconds`.
    pub fn accept(
        &mut self,
        leader: &Leader,
        framework: &FrameworkId,
        offer_ids: &[OfferId],
        tasks: Vec<TaskSpec>,
        refuse_seconds: Option<f64>,
    ) {
        let now = now_secs();
        let ids: Vec<TaskId> = tasks.iter().map(|t| t.task_id.clone()).collect();
        let taken: BTreeSet<TaskId> = leader.store.read(|s| {
            ids.iter()
                .filter(|id| s.tasks.contains_key(*id))
                .cloned()
                .collect()
        });
        let refuse = refuse_duration(refuse_seconds);
        let accepted =
            leader
                .allocator()
                .accept(framework, offer_ids, tasks, refuse, Instant::now(), |id| {
                    taken.contains(id)
                });
        match accepted {
            Ok(acc) => {
                for (id, why) in acc.refused {
                    self.refused.push(master_status(
                        &id,
                        Some(&acc.agent_id),
                        TaskState::Error,
                        Reason::ReasonTaskInvalid,
                        why,
                        now,
                    ));
                }
                if acc.tasks.is_empty() {
                    return;
                }
                self.reserved
                    .extend(acc.tasks.iter().map(|t| t.task_id.clone()));
                self.commands.push(Command::LaunchTasks {
                    framework_id: framework.clone(),
                    agent_id: acc.agent_id.clone(),
                    staging_uuids: acc.tasks.iter().map(|_| Uuid::new_v4()).collect(),
                    tasks: acc.tasks.clone(),
                    now,
                });
                self.launches.push((acc.agent_id, acc.tasks));
            }
            Err(e) => {
                for id in ids {
                    self.refused.push(master_status(
                        &id,
                        None,
                        TaskState::Dropped,
                        Reason::ReasonInvalidOffers,
                        e.to_string(),
                        now,
                    ));
                }
            }
        }
    }

    /// A task refused before it reached the allocator (e.g. a Mesos
    /// TaskInfo Wasmos cannot run), reported as TASK_ERROR.
    pub fn refuse(&mut self, task: &TaskId, agent: Option<&AgentId>, reason: Reason, why: String) {
        self.refused.push(master_status(
            task,
            agent,
            TaskState::Error,
            reason,
            why,
            now_secs(),
        ));
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty() && self.refused.is_empty()
    }
}

impl Leader {
    /// Commits `cmds` and the batch's launches as one log entry, then
    /// sends the committed launches to their agents. Returns the updates of
    /// every refused task (before or at the commit) and the responses to
    /// `cmds`, in order. On an error nothing was launched (the allocator's
    /// holds are released either way).
    pub async fn commit_launches(
        self: &Arc<Self>,
        framework: &FrameworkId,
        mut cmds: Vec<Command>,
        batch: LaunchBatch,
    ) -> Result<(Vec<TaskStatus>, Vec<Response>), StoreError> {
        let LaunchBatch {
            launches,
            reserved,
            commands,
            mut refused,
        } = batch;
        let own = cmds.len();
        cmds.extend(commands);
        let result = if cmds.is_empty() {
            Ok(Vec::new())
        } else {
            self.store.propose(cmds.clone()).await
        };
        self.allocator().release(&reserved);
        let mut responses = result?;
        let launch_responses = responses.split_off(own.min(responses.len()));
        let now = now_secs();
        for ((agent, tasks), resp) in launches.into_iter().zip(launch_responses) {
            match resp {
                Response::TasksLaunched { accepted, rejected } => {
                    for (id, why) in rejected {
                        refused.push(master_status(
                            &id,
                            Some(&agent),
                            TaskState::Error,
                            Reason::ReasonTaskInvalid,
                            why,
                            now,
                        ));
                    }
                    let go: Vec<TaskSpec> = tasks
                        .into_iter()
                        .filter(|t| accepted.contains(&t.task_id))
                        .collect();
                    self.send_launch(framework.clone(), agent, go);
                }
                Response::Rejected { reason } => {
                    for t in tasks {
                        refused.push(master_status(
                            &t.task_id,
                            None,
                            TaskState::Dropped,
                            Reason::ReasonInvalidOffers,
                            reason.clone(),
                            now,
                        ));
                    }
                }
                other => {
                    tracing::error!(framework = %framework, ?other, "unexpected answer to a launch");
                }
            }
        }
        Ok((refused, responses))
    }
}
