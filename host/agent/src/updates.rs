//! Reliable status updates: queued per task, sent oldest first, retried
//! with backoff until the master acknowledges each one.

use std::sync::Arc;
use std::time::Duration;

use wasmos_core::protocol::{self, StatusOutcome, StatusUpdate};
use wasmos_core::{FrameworkId, TaskStatus};

use crate::Agent;

impl Agent {
    /// Queues an update for delivery.
    pub(crate) fn queue_update(&self, framework_id: &FrameworkId, status: TaskStatus) {
        if let Some(t) = self.lock_tasks().get_mut(&status.task_id) {
            t.last_status = Some(status.clone());
        }
        self.updates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(status.task_id.clone())
            .or_default()
            .push_back((framework_id.clone(), status));
        self.updates_wake.notify_one();
    }

    /// The oldest unacknowledged update of every task.
    fn heads(&self) -> Vec<(FrameworkId, TaskStatus)> {
        self.updates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(|q| q.front().cloned())
            .collect()
    }

    pub(crate) fn pending_updates(&self) -> usize {
        self.updates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|q| q.len())
            .sum()
    }

    /// Removes an acknowledged update; forgets a task whose last update it was.
    fn acknowledged(self: &Arc<Self>, status: &TaskStatus, outcome: Option<StatusOutcome>) {
        let done = {
            let mut updates = self.updates.lock().unwrap_or_else(|p| p.into_inner());
            let Some(q) = updates.get_mut(&status.task_id) else {
                return;
            };
            if q.front().is_some_and(|(_, s)| s.uuid == status.uuid) {
                q.pop_front();
            }
            let empty = q.is_empty();
            if empty {
                updates.remove(&status.task_id);
            }
            empty
        };
        // The master no longer tracks this task (it ended there, or was
        // never known): a live copy here is an orphan.
        if !status.state.is_terminal()
            && matches!(
                outcome,
                Some(StatusOutcome::AlreadyTerminal | StatusOutcome::UnknownTask)
            )
        {
            tracing::warn!(task = %status.task_id, ?outcome, "the master does not know this task as live; killing it");
            let grace = self
                .lock_tasks()
                .get(&status.task_id)
                .map(|t| t.spec.kill_grace_ms())
                .unwrap_or(0);
            let _ = self.kill(&status.task_id, grace);
        }
        self.executor_acknowledged(status);
        if done {
            self.forget_if_done(&status.task_id);
        }
    }

    /// Sends queued updates for as long as the agent runs.
    pub(crate) async fn send_updates(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        let min = self.config.update_retry_min;
        let max = self.config.update_retry_max;
        let mut backoff = min;
        loop {
            let heads = self.heads();
            let Some(agent_id) = self.agent_id() else {
                tokio::select! {
                    _ = self.registered.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => return,
                }
                continue;
            };
            if heads.is_empty() {
                tokio::select! {
                    _ = self.updates_wake.notified() => {}
                    _ = shutdown.changed() => return,
                }
                continue;
            }
            let mut failed = None;
            for (framework_id, status) in heads {
                let msg = StatusUpdate {
                    agent_id: agent_id.clone(),
                    framework_id,
                    status: status.clone(),
                };
                let body = serde_json::to_vec(&msg).unwrap_or_default();
                match self
                    .masters
                    .send(reqwest::Method::POST, protocol::paths::STATUS, Some(body))
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        // A reply this agent cannot read (a newer master)
                        // still acknowledges the update.
                        let outcome = r
                            .json::<protocol::StatusReply>()
                            .await
                            .ok()
                            .map(|r| r.outcome);
                        tracing::debug!(task = %status.task_id, state = %status.state, ?outcome, "update acknowledged");
                        self.acknowledged(&status, outcome);
                    }
                    Ok(r)
                        if r.status().is_client_error()
                            && r.status() != reqwest::StatusCode::UNAUTHORIZED
                            && r.status() != reqwest::StatusCode::TOO_MANY_REQUESTS =>
                    {
                        let code = r.status();
                        let body = r.text().await.unwrap_or_default();
                        tracing::error!(task = %status.task_id, %code, %body, "master refused a status update; dropping it");
                        self.acknowledged(&status, None);
                    }
                    Ok(r) => {
                        failed = Some(format!("master answered {}", r.status()));
                        break;
                    }
                    Err(e) => {
                        failed = Some(format!("master unreachable: {e}"));
                        break;
                    }
                }
            }
            match failed {
                None => backoff = min,
                Some(why) => {
                    tracing::debug!(%why, retry_in = ?backoff, pending = self.pending_updates(), "status updates will be retried");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.registered.notified() => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(max);
                }
            }
        }
    }

    /// Waits until every queued update is acknowledged, or `timeout`.
    pub(crate) async fn flush_updates(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.pending_updates() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = self.pending_updates();
        if left > 0 {
            tracing::warn!(left, "status updates not delivered before shutdown");
        }
    }
}
