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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;
use wasmos_core::{
    AgentId, ExecutorId, ExecutorSpec, FrameworkId, OfferId, Reason, TaskId, TaskSpec, TaskState,
    TaskStatus,
};
use wasmos_state::{Command, Response};
use wasmos_store::StoreError;

use crate::allocator::OfferOp;
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

/// Launches (and other offer operations) checked against their offers,
/// waiting to be committed.
#[derive(Default)]
pub struct LaunchBatch {
    /// Accepted tasks: the index of their `LaunchTasks` command, their
    /// agent, and the tasks.
    launches: Vec<(usize, AgentId, Vec<TaskSpec>)>,
    /// Allocator holds to release after the commit, with their task ids.
    holds: Vec<(u64, Vec<TaskId>)>,
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
        self.accept_ops(
            leader,
            framework,
            offer_ids,
            vec![OfferOp::LaunchReservedFirst(tasks)],
            refuse_seconds,
        );
    }

    /// Checks an ACCEPT's operations, in order, against the framework's
    /// outstanding offers, consumes them, and queues what passed as
    /// commands in the same order. Operations that cannot be applied are
    /// dropped (and logged), as Mesos does.
    pub fn accept_ops(
        &mut self,
        leader: &Leader,
        framework: &FrameworkId,
        offer_ids: &[OfferId],
        ops: Vec<OfferOp>,
        refuse_seconds: Option<f64>,
    ) {
        let now = now_secs();
        let ids: Vec<TaskId> = ops
            .iter()
            .flat_map(|op| match op {
                OfferOp::Launch(tasks) | OfferOp::LaunchReservedFirst(tasks) => {
                    tasks.iter().map(|t| t.task_id.clone()).collect()
                }
                _ => Vec::new(),
            })
            .collect();
        let grouped: BTreeSet<TaskId> = ops
            .iter()
            .flat_map(|op| match op {
                OfferOp::Launch(tasks) | OfferOp::LaunchReservedFirst(tasks) => tasks
                    .iter()
                    .filter(|t| t.group.is_some())
                    .map(|t| t.task_id.clone())
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        let with_executors = ops.iter().any(|op| match op {
            OfferOp::Launch(tasks) | OfferOp::LaunchReservedFirst(tasks) => {
                tasks.iter().any(|t| t.executor.is_some())
            }
            _ => false,
        });
        let agent = offer_ids
            .first()
            .and_then(|o| leader.allocator().offer_agent(o));
        let (taken, role, executors, agent_volumes) = leader.store.read(|s| {
            let executors: BTreeMap<(AgentId, ExecutorId), ExecutorSpec> = if with_executors {
                s.live_executors()
                    .into_iter()
                    .filter(|((_, f, _), _)| f == framework)
                    .map(|((a, _, e), spec)| ((a, e), spec.clone()))
                    .collect()
            } else {
                BTreeMap::new()
            };
            let taken: BTreeSet<TaskId> = ids
                .iter()
                .filter(|id| s.tasks.contains_key(*id))
                .cloned()
                .collect();
            let role = s
                .frameworks
                .get(framework)
                .map_or_else(|| "*".to_string(), |f| f.info.role.clone());
            let agent_volumes = agent
                .as_ref()
                .and_then(|a| s.agents.get(a))
                .map(|a| a.volumes.clone())
                .unwrap_or_default();
            (taken, role, executors, agent_volumes)
        });
        let mut ops = ops;
        let creating = self.resolve_volumes(&role, &agent_volumes, agent.as_ref(), &mut ops, now);
        let refuse = refuse_duration(refuse_seconds);
        let accepted = leader.allocator().accept(
            framework,
            &role,
            offer_ids,
            ops,
            refuse,
            Instant::now(),
            |id| taken.contains(id),
            &executors,
        );
        match accepted {
            Ok(acc) => {
                for (id, mut why) in acc.refused {
                    // A task whose new volume could not be made: say why.
                    if creating.contains(&id) && !acc.dropped.is_empty() {
                        why = format!(
                            "{why}; making its persistent volume failed: {}",
                            acc.dropped.join("; ")
                        );
                    }
                    let reason = if grouped.contains(&id) {
                        Reason::ReasonTaskGroupInvalid
                    } else {
                        Reason::ReasonTaskInvalid
                    };
                    self.refused.push(master_status(
                        &id,
                        Some(&acc.agent_id),
                        TaskState::Error,
                        reason,
                        why,
                        now,
                    ));
                }
                for why in acc.dropped {
                    tracing::warn!(framework = %framework, agent = %acc.agent_id, "offer operation dropped: {why}");
                }
                let mut launched = Vec::new();
                for op in acc.ops {
                    let agent_id = acc.agent_id.clone();
                    let cmd = match op {
                        OfferOp::Reserve { role, resources } => Command::ReserveResources {
                            agent_id,
                            role,
                            resources,
                        },
                        OfferOp::Unreserve { role, resources } => Command::UnreserveResources {
                            agent_id,
                            role,
                            resources,
                        },
                        OfferOp::Create(mut volumes) => {
                            new_volume_uuids(&mut volumes);
                            Command::CreateVolumes { agent_id, volumes }
                        }
                        OfferOp::Destroy(volumes) => Command::DestroyVolumes { agent_id, volumes },
                        // The allocator answers with plain launches.
                        OfferOp::Launch(tasks) | OfferOp::LaunchReservedFirst(tasks) => {
                            launched.extend(tasks.iter().map(|t| t.task_id.clone()));
                            self.launches.push((
                                self.commands.len(),
                                agent_id.clone(),
                                tasks.clone(),
                            ));
                            Command::LaunchTasks {
                                framework_id: framework.clone(),
                                agent_id,
                                staging_uuids: tasks.iter().map(|_| Uuid::new_v4()).collect(),
                                tasks,
                                now,
                            }
                        }
                    };
                    self.commands.push(cmd);
                }
                self.holds.push((acc.hold, launched));
            }
            Err(e) => {
                for id in ids {
                    if self.refused.iter().any(|r| r.task_id == id) {
                        continue;
                    }
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

    /// Decides, for the persistent volumes framework plugins' tasks ask
    /// for, whether each is the agent's volume of that id (used as is: the
    /// allocator checks it is offered) or a new one: then the launch first
    /// reserves its disk for the framework's role and creates it, in the
    /// same ACCEPT (Mesos' RESERVE, CREATE, LAUNCH). Tasks that cannot
    /// have theirs are refused here. Returns the tasks making volumes.
    fn resolve_volumes(
        &mut self,
        role: &str,
        agent_volumes: &BTreeMap<String, wasmos_core::Volume>,
        agent: Option<&AgentId>,
        ops: &mut Vec<OfferOp>,
        now: f64,
    ) -> BTreeSet<TaskId> {
        let mut creates: Vec<wasmos_core::Volume> = Vec::new();
        let mut creating = BTreeSet::new();
        let mut refused = Vec::new();
        for op in ops.iter_mut() {
            let OfferOp::LaunchReservedFirst(tasks) = op else {
                continue;
            };
            tasks.retain_mut(|t| {
                let mut why = None;
                let mut mine: Vec<wasmos_core::Volume> = Vec::new();
                for m in &mut t.volumes {
                    let Some(mb) = m.create_mb.take() else {
                        continue;
                    };
                    if role == "*" {
                        why = Some(format!(
                            "persistent volume {} needs disk reserved for a role, and this framework's role is * (give it a role: its mesos_role setting)",
                            m.id
                        ));
                        break;
                    }
                    m.role = role.to_string();
                    match agent_volumes.get(&m.id) {
                        Some(v) if v.role == role => {}
                        Some(v) => {
                            why = Some(format!(
                                "volume {} on this agent belongs to role {}",
                                m.id, v.role
                            ));
                            break;
                        }
                        None if creates.iter().chain(&mine).any(|c| c.id == m.id) => {
                            why = Some(format!(
                                "volume {} is made by another task of this launch",
                                m.id
                            ));
                            break;
                        }
                        None => mine.push(wasmos_core::Volume {
                            id: m.id.clone(),
                            role: role.to_string(),
                            disk: mb,
                            container_path: m.container_path.clone(),
                            principal: None,
                            uuid: String::new(),
                        }),
                    }
                }
                match why {
                    Some(why) => {
                        refused.push((t.task_id.clone(), why));
                        false
                    }
                    None => {
                        if !mine.is_empty() {
                            creating.insert(t.task_id.clone());
                            creates.append(&mut mine);
                        }
                        true
                    }
                }
            });
        }
        for (id, why) in refused {
            self.refused.push(master_status(
                &id,
                agent,
                TaskState::Error,
                Reason::ReasonTaskInvalid,
                why,
                now,
            ));
        }
        if !creates.is_empty() {
            let disk = creates.iter().fold(wasmos_core::Scalar::ZERO, |sum, v| {
                sum.saturating_add(v.disk)
            });
            let reserve = OfferOp::Reserve {
                role: role.to_string(),
                resources: wasmos_core::Resources {
                    disk,
                    ..Default::default()
                },
            };
            ops.splice(0..0, [reserve, OfferOp::Create(creates)]);
        }
        creating
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

/// Gives new volumes their uuids.
pub fn new_volume_uuids(volumes: &mut [wasmos_core::Volume]) {
    for v in volumes {
        v.uuid = Uuid::new_v4().simple().to_string();
    }
}

impl Leader {
    /// What follows a committed command outside the state: a refused
    /// reservation or volume operation is logged. (Destroyed volumes' data
    /// is deleted by their agent when its next heartbeat reply no longer
    /// lists them.)
    pub fn after_commit(&self, cmd: &Command, resp: &Response) {
        let what = match cmd {
            Command::ReserveResources { .. } => "RESERVE",
            Command::UnreserveResources { .. } => "UNRESERVE",
            Command::CreateVolumes { .. } => "CREATE",
            Command::DestroyVolumes { .. } => "DESTROY",
            _ => return,
        };
        if let Response::Rejected { reason } = resp {
            tracing::warn!("{what} refused: {reason}");
        }
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
            holds,
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
        {
            let mut alloc = self.allocator();
            for (hold, tasks) in &holds {
                alloc.release(*hold, tasks);
            }
        }
        let mut responses = result?;
        let batch_responses = responses.split_off(own.min(responses.len()));
        for (cmd, resp) in cmds[own..].iter().zip(&batch_responses) {
            self.after_commit(cmd, resp);
        }
        let now = now_secs();
        for (index, agent, tasks) in launches {
            let Some(resp) = batch_responses.get(index).cloned() else {
                continue;
            };
            match resp {
                Response::TasksLaunched { accepted, rejected } => {
                    for (id, why) in rejected {
                        let grouped = tasks.iter().any(|t| t.task_id == id && t.group.is_some());
                        refused.push(master_status(
                            &id,
                            Some(&agent),
                            TaskState::Error,
                            if grouped {
                                Reason::ReasonTaskGroupInvalid
                            } else {
                                Reason::ReasonTaskInvalid
                            },
                            why,
                            now,
                        ));
                    }
                    // As recorded (the state names each volume's directory).
                    let (go, hostname): (Vec<TaskSpec>, String) = self.store.read(|s| {
                        let go = tasks
                            .iter()
                            .filter(|t| accepted.contains(&t.task_id))
                            .filter_map(|t| s.tasks.get(&t.task_id).map(|r| r.spec.clone()))
                            .collect();
                        let host = s.agents.get(&agent).map(|a| a.info.hostname.clone());
                        (go, host.unwrap_or_default())
                    });
                    self.placements.record_unexplained(
                        framework,
                        now,
                        go.iter().map(|t| crate::placements::Unexplained {
                            task_id: t.task_id.to_string(),
                            group: t.name.clone(),
                            agent_id: agent.to_string(),
                            hostname: hostname.clone(),
                            resources: t.resources.clone(),
                        }),
                    );
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
