//! Health checks: for every task whose spec names one, the agent runs the
//! health-check plugin on the check's interval, turns changes of health
//! into status updates (`healthy`, reason
//! `REASON_TASK_HEALTH_CHECK_STATUS_UPDATED`), and kills the task after too
//! many consecutive failures. Mesos' rules: nothing before `delay`;
//! failures before the first success within `grace_period` do not count.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmos_core::{FrameworkId, HealthCheckSpec, Reason, TaskId, TaskSpec, TaskState};
use wasmos_runtime::health::{CheckResult, CheckTarget};

use crate::Agent;
use crate::plugins::ensure_health_check;
use crate::tasks::KillCause;

/// What a check loop decides: health (failures kill) or readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    Health,
    Readiness,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

impl Agent {
    /// Starts the task's health and readiness checks, if it has any.
    pub(crate) fn start_health_checks(
        self: &Arc<Self>,
        framework_id: FrameworkId,
        spec: &TaskSpec,
    ) {
        let ports = crate::resources::task_ports(&spec.resources.ports);
        let grace_kill = spec.kill_grace_ms();
        let checks = [
            (spec.health_check.clone(), Purpose::Health),
            (spec.readiness_check.clone(), Purpose::Readiness),
        ];
        for (check, purpose) in checks {
            let Some(hc) = check else { continue };
            let me = self.clone();
            let (fw, id, ports) = (framework_id.clone(), spec.task_id.clone(), ports.clone());
            tokio::spawn(
                async move { me.health_loop(fw, id, ports, hc, grace_kill, purpose).await },
            );
        }
    }

    fn is_running(&self, id: &TaskId) -> bool {
        self.lock_tasks()
            .get(id)
            .is_some_and(|t| t.state == TaskState::Running && !t.kill_requested())
    }

    fn health_update(&self, framework_id: &FrameworkId, id: &TaskId, r: &CheckResult) {
        // A check that ends after a kill began reports nothing (the task
        // may be TASK_KILLING by now).
        if !self.is_running(id) {
            return;
        }
        let mut s = self.status_of(id, TaskState::Running);
        s.healthy = Some(r.healthy);
        s.reason = Some(Reason::ReasonTaskHealthCheckStatusUpdated);
        s.message = Some(r.message.clone());
        self.queue_update(framework_id, s);
    }

    fn ready_update(&self, framework_id: &FrameworkId, id: &TaskId, r: &CheckResult) {
        // A check that ends after a kill began reports nothing (the task
        // may be TASK_KILLING by now).
        if !self.is_running(id) {
            return;
        }
        let mut s = self.status_of(id, TaskState::Running);
        s.ready = Some(r.healthy);
        s.reason = Some(Reason::ReasonTaskCheckStatusUpdated);
        s.message = Some(r.message.clone());
        self.queue_update(framework_id, s);
    }

    async fn health_loop(
        self: Arc<Self>,
        framework_id: FrameworkId,
        id: TaskId,
        ports: Vec<u16>,
        hc: HealthCheckSpec,
        kill_grace_ms: u64,
        purpose: Purpose,
    ) {
        let started = Instant::now();
        let mut shutdown = self.shutdown.clone();
        let Some(plugin) = ensure_health_check(&self, &hc.plugin).await else {
            if purpose == Purpose::Readiness {
                let r = CheckResult {
                    healthy: false,
                    message: format!(
                        "readiness-check plugin {} is not installed; the task will not become ready",
                        hc.plugin
                    ),
                };
                self.ready_update(&framework_id, &id, &r);
                return;
            }
            let r = CheckResult {
                healthy: false,
                message: format!(
                    "health-check plugin {} is not installed; install it or fix the task",
                    hc.plugin
                ),
            };
            tracing::warn!(task = %id, plugin = %hc.plugin, "health-check plugin missing; killing the task");
            self.health_update(&framework_id, &id, &r);
            let _ = self.kill_because(&id, kill_grace_ms, KillCause::Unhealthy(r.message));
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep(secs(hc.delay_seconds)) => {}
            _ = shutdown.changed() => return,
        }
        // Commands (COMMAND checks) run where the task runs; the check runs
        // on a blocking thread, which may wait on the runtime.
        let exec = self.lock_tasks().get(&id).and_then(|t| t.exec.clone());
        let handle = tokio::runtime::Handle::current();
        let exec: Option<wasmos_runtime::health::Exec> = exec.map(|e| {
            let f: wasmos_runtime::health::Exec = Arc::new(move |command: &str, timeout| {
                handle
                    .block_on(e(command.to_string(), timeout))
                    .map(|o| (o.code, o.output))
            });
            f
        });
        let target = CheckTarget {
            task_id: id.to_string(),
            ip: IpAddr::from([127, 0, 0, 1]),
            ports,
            config: hc.config.clone(),
            timeout: secs(hc.timeout_seconds),
            exec,
        };
        let mut healthy: Option<bool> = None;
        let mut ever_healthy = false;
        let mut failures = 0u32;
        loop {
            if !self.is_running(&id) {
                return;
            }
            let p = plugin.clone();
            let t = target.clone();
            let result = match tokio::task::spawn_blocking(move || {
                p.lock().unwrap_or_else(|e| e.into_inner()).check(&t)
            })
            .await
            {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => CheckResult {
                    healthy: false,
                    message: format!("health check could not run: {e}"),
                },
                Err(e) => CheckResult {
                    healthy: false,
                    message: format!("health check could not run: {e}"),
                },
            };
            if !self.is_running(&id) {
                return;
            }
            if purpose == Purpose::Readiness {
                // Readiness reports changes; it never kills.
                if healthy != Some(result.healthy) {
                    tracing::info!(task = %id, ready = result.healthy, message = %result.message, "readiness changed");
                    healthy = Some(result.healthy);
                    self.ready_update(&framework_id, &id, &result);
                }
            } else if result.healthy {
                failures = 0;
                ever_healthy = true;
                if healthy != Some(true) {
                    tracing::info!(task = %id, message = %result.message, "task is healthy");
                    healthy = Some(true);
                    self.health_update(&framework_id, &id, &result);
                }
            } else if ever_healthy || started.elapsed() >= secs(hc.grace_period_seconds) {
                failures += 1;
                if healthy != Some(false) {
                    tracing::info!(task = %id, message = %result.message, "task is unhealthy");
                    healthy = Some(false);
                    self.health_update(&framework_id, &id, &result);
                }
                if failures >= hc.max_consecutive_failures.max(1) {
                    let why = format!(
                        "killed after {failures} consecutive failed health checks (last: {})",
                        result.message
                    );
                    tracing::warn!(task = %id, %why, "killing unhealthy task");
                    let _ = self.kill_because(&id, kill_grace_ms, KillCause::Unhealthy(why));
                    return;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(secs(hc.interval_seconds)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
