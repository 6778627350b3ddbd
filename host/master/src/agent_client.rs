//! The leader's calls to agents (`/internal/v1/launch`, `/internal/v1/kill`,
//! `/internal/v1/executors/shutdown`, `/internal/v1/executors/message`),
//! over HTTPS with this master's certificate. Launches are sent only after
//! they are committed ([`crate::launch`]) and retried until the agent takes
//! them or the tasks leave STAGING.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmos_core::protocol::{self, ExecutorMessage, KillTask, LaunchTasks, ShutdownExecutor};
use wasmos_core::{AgentId, ExecutorId, FrameworkId, Reason, TaskId, TaskSpec, TaskState};
use wasmos_state::Command;

use crate::error::MasterError;
use crate::leader::{Leader, master_status, now_secs};

impl Leader {
    /// Sends accepted tasks to their agent, retrying until the agent takes
    /// them, the tasks leave STAGING, or the launch is given up (the tasks
    /// are then DROPPED: they never reached the agent).
    pub fn send_launch(
        self: &Arc<Self>,
        framework_id: FrameworkId,
        agent_id: AgentId,
        tasks: Vec<TaskSpec>,
    ) {
        if tasks.is_empty() {
            return;
        }
        let ids: Vec<TaskId> = tasks.iter().map(|t| t.task_id.clone()).collect();
        self.set_inflight(&ids, true);
        let me = self.clone();
        tokio::spawn(async move {
            let give_up = Instant::now() + me.config.launch_timeout;
            let mut backoff = Duration::from_millis(100);
            let outcome: Result<(), String> = loop {
                let staging: Vec<TaskSpec> = me.store.read(|s| {
                    tasks
                        .iter()
                        .filter(|t| {
                            s.tasks
                                .get(&t.task_id)
                                .is_some_and(|r| r.state() == TaskState::Staging)
                        })
                        .cloned()
                        .collect()
                });
                if staging.is_empty() {
                    break Ok(());
                }
                let endpoint = me.agent_endpoint(&agent_id);
                let msg = LaunchTasks {
                    term: me.term,
                    agent_id: Some(agent_id.clone()),
                    framework_id: framework_id.clone(),
                    tasks: staging,
                };
                let why = match endpoint {
                    None => format!("agent {agent_id} is unknown"),
                    Some(ep) => match me
                        .http
                        .post(format!("{ep}{}", protocol::paths::LAUNCH))
                        .json(&msg)
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => break Ok(()),
                        Ok(r) if r.status().is_client_error() => {
                            let body = r.text().await.unwrap_or_default();
                            break Err(format!("agent {agent_id} refused the launch: {body}"));
                        }
                        Ok(r) => format!("agent answered {}", r.status()),
                        Err(e) => format!("agent unreachable: {}", crate::error::with_causes(&e)),
                    },
                };
                if *me.shutdown.borrow() {
                    // This master stopped leading: the next leader finds
                    // the task STAGING and settles it with the agent.
                    me.set_inflight(&ids, false);
                    return;
                }
                if Instant::now() > give_up {
                    break Err(format!("could not reach agent {agent_id} to launch: {why}"));
                }
                tracing::debug!(agent = %agent_id, %why, "launch will be retried");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            };
            if let Err(message) = outcome {
                tracing::warn!(agent = %agent_id, %message, "launch dropped");
                let now = now_secs();
                let cmds = ids
                    .iter()
                    .map(|id| Command::StatusUpdate {
                        status: master_status(
                            id,
                            Some(&agent_id),
                            TaskState::Dropped,
                            Reason::ReasonAgentDisconnected,
                            message.clone(),
                            now,
                        ),
                    })
                    .collect();
                if let Err(e) = me.store.propose(cmds).await {
                    tracing::error!(error = %e, "cannot record dropped launch");
                }
            }
            me.set_inflight(&ids, false);
        });
    }

    /// The base URL to call `agent` at. With TLS, its host is the name of
    /// the certificate the agent registered with (resolved to its address
    /// by `agent_names`), so a connection to it is refused unless that
    /// very agent answers — not any agent the CA certified.
    pub(crate) fn agent_endpoint(&self, agent: &AgentId) -> Option<String> {
        let (principal, recorded) = self.store.read(|s| {
            s.agents
                .get(agent)
                .map(|a| (a.principal.clone(), a.info.endpoint.clone()))
                .unzip()
        });
        let endpoint = self.agents.endpoint(agent).or(recorded)?;
        let endpoint = endpoint.trim_end_matches('/');
        Some(match principal.flatten() {
            Some(p) => self.agent_names.url_for(&p, endpoint),
            None => endpoint.to_string(),
        })
    }

    pub(crate) async fn send_kill(
        &self,
        endpoint: &str,
        task_id: &TaskId,
        grace_ms: u64,
    ) -> Result<reqwest::Response, reqwest::Error> {
        // Mesos reports TASK_KILLING only to frameworks that know it.
        let killing = self.store.read(|s| {
            s.tasks
                .get(task_id)
                .and_then(|t| s.frameworks.get(&t.framework_id))
                .is_some_and(|f| match f.info.kind {
                    wasmos_core::FrameworkKind::Plugin { .. } => true,
                    wasmos_core::FrameworkKind::External => f
                        .info
                        .capabilities
                        .iter()
                        .any(|c| c == "TASK_KILLING_STATE"),
                })
        });
        let msg = KillTask {
            term: self.term,
            task_id: task_id.clone(),
            grace_period_ms: Some(grace_ms),
            killing,
        };
        self.http
            .post(format!("{endpoint}{}", protocol::paths::KILL))
            .json(&msg)
            .send()
            .await
    }

    /// Asks the agent at `endpoint` to kill a task whatever the state
    /// says of it (a gone agent's tasks are recorded ended first).
    pub async fn kill_on_agent(
        &self,
        endpoint: Option<String>,
        task_id: &TaskId,
    ) -> Result<(), String> {
        let endpoint = endpoint.ok_or("the agent's address is unknown")?;
        let grace = self
            .store
            .read(|s| s.tasks.get(task_id).map(|t| t.spec.kill_grace_ms()))
            .unwrap_or(0);
        let resp = self
            .send_kill(&endpoint, task_id, grace)
            .await
            .map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("the agent answered {}", resp.status()))
        }
    }

    /// Kills a task: asks its agent (SIGTERM, grace, SIGKILL). A task the
    /// agent never received is recorded KILLED here.
    pub async fn kill_task(&self, task_id: &TaskId) -> Result<(), MasterError> {
        let Some((agent_id, state, grace)) = self.store.read(|s| {
            s.tasks
                .get(task_id)
                .map(|t| (t.agent_id.clone(), t.state(), t.spec.kill_grace_ms()))
        }) else {
            return Err(MasterError::NotFound(format!("no task {task_id}")));
        };
        if state.is_terminal() {
            return Ok(());
        }
        let endpoint = self
            .agent_endpoint(&agent_id)
            .ok_or_else(|| MasterError::AgentUnknown(format!("agent {agent_id} is unknown")))?;
        let resp = self.send_kill(&endpoint, task_id, grace).await.map_err(|e| {
            MasterError::Agent(format!(
                "agent {agent_id} is unreachable ({e}); the kill will not happen until it is back"
            ))
        })?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            // The agent never got the launch and now never will (it keeps
            // the id as killed): the task ends here.
            self.store
                .propose_one(Command::StatusUpdate {
                    status: master_status(
                        task_id,
                        Some(&agent_id),
                        TaskState::Killed,
                        Reason::ReasonTaskKilledDuringLaunch,
                        "killed before it reached its agent".into(),
                        now_secs(),
                    ),
                })
                .await?;
            return Ok(());
        }
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(MasterError::Agent(format!(
                "agent {agent_id} refused the kill ({status}): {body}"
            )));
        }
        Ok(())
    }

    /// Asks an agent to shut an executor down: its tasks end KILLED.
    pub async fn shutdown_executor(
        &self,
        agent_id: &AgentId,
        framework_id: &FrameworkId,
        executor_id: &ExecutorId,
    ) -> Result<(), String> {
        let msg = ShutdownExecutor {
            term: self.term,
            framework_id: framework_id.clone(),
            executor_id: executor_id.clone(),
        };
        self.post_to_agent(agent_id, protocol::paths::SHUTDOWN_EXECUTOR, &msg)
            .await
    }

    /// Hands a framework's message to its executor on `agent_id`.
    pub async fn message_executor(
        &self,
        agent_id: &AgentId,
        msg: &ExecutorMessage,
    ) -> Result<(), String> {
        self.post_to_agent(agent_id, protocol::paths::TO_EXECUTOR, msg)
            .await
    }

    async fn post_to_agent(
        &self,
        agent_id: &AgentId,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<(), String> {
        let endpoint = self
            .agent_endpoint(agent_id)
            .ok_or_else(|| format!("agent {agent_id} is unknown"))?;
        let resp = self
            .http
            .post(format!("{endpoint}{path}"))
            .json(body)
            .send()
            .await
            .map_err(|e| format!("agent {agent_id} is unreachable: {e}"))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            let code = resp.status();
            Err(format!(
                "agent {agent_id} answered {code}: {}",
                resp.text().await.unwrap_or_default()
            ))
        }
    }
}
