//! Disk: each task's sandbox use is measured and held to the task's `disk`
//! (Mesos' posix/disk isolator with quota enforcement), and sandboxes of
//! forgotten tasks are garbage-collected after a configurable age (Mesos'
//! `--gc_delay`).
//!
//! Design decision: usage is measured by walking the sandbox (as `du`
//! does) on a timer rather than with filesystem quotas, which need an XFS
//! or ext4 project-quota mount this agent cannot assume. A task can
//! overshoot its limit by what it writes in one interval.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use wasmos_core::TaskId;

use crate::Agent;
use crate::tasks::KillCause;

/// Bytes used by the files under `dir` (allocated blocks, as `du`),
/// without following symlinks.
pub fn dir_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            total = total.saturating_add(m.blocks().saturating_mul(512));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// Whether a sandbox last changed longer than `age` ago.
fn older_than(dir: &Path, age: Duration, now: SystemTime) -> bool {
    std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| now.duration_since(t).ok())
        .is_some_and(|d| d >= age)
}

impl Agent {
    /// Measures the sandboxes of running tasks that ask for disk and kills
    /// those over their limit.
    pub(crate) async fn disk_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        let mut tick = tokio::time::interval(self.config.disk_watch_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let watched: Vec<(TaskId, f64, u64)> = self
                .lock_tasks()
                .iter()
                .filter(|(_, t)| !t.state.is_terminal() && !t.kill_requested())
                .filter(|(_, t)| t.spec.resources.disk.as_f64() > 0.0)
                .map(|(id, t)| {
                    (
                        id.clone(),
                        t.spec.resources.disk.as_f64(),
                        t.spec.kill_grace_ms(),
                    )
                })
                .collect();
            for (id, limit_mb, grace) in watched {
                let dir = self.sandbox_root().join(id.as_str());
                let Ok(used) = tokio::task::spawn_blocking(move || dir_usage(&dir)).await else {
                    continue;
                };
                let used_mb = used as f64 / (1024.0 * 1024.0);
                if used_mb > limit_mb {
                    let why = format!(
                        "disk limit of {limit_mb} MB exceeded: the sandbox holds {used_mb:.1} MB"
                    );
                    tracing::info!(task = %id, %why, "killing task");
                    let _ = self.kill_because(&id, grace, KillCause::Disk(why));
                }
            }
        }
    }

    /// Deletes sandboxes of tasks this agent no longer knows once they are
    /// older than the configured age.
    pub(crate) async fn sandbox_gc_loop(self: Arc<Self>) {
        let age = self.config.sandbox_gc_age;
        let every = (age / 4).clamp(Duration::from_millis(500), Duration::from_secs(600));
        let mut shutdown = self.shutdown.clone();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let root = self.sandbox_root();
            let Ok(entries) = std::fs::read_dir(&root) else {
                continue;
            };
            let now = SystemTime::now();
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let known = TaskId::new(name.clone())
                    .map(|id| {
                        self.lock_tasks().contains_key(&id) || self.runs_executor_container(&id)
                    })
                    .unwrap_or(false);
                if known || !older_than(&e.path(), age, now) {
                    continue;
                }
                let path = e.path();
                match tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&path)).await {
                    Ok(Ok(())) => tracing::info!(sandbox = %name, "old sandbox removed"),
                    Ok(Err(e)) => {
                        tracing::warn!(sandbox = %name, error = %e, "cannot remove an old sandbox")
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_nested_files_and_not_symlink_targets() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/big"), vec![1u8; 1 << 20]).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("huge"), vec![1u8; 4 << 20]).unwrap();
        std::os::unix::fs::symlink(outside.path().join("huge"), d.path().join("link")).unwrap();
        let used = dir_usage(d.path());
        assert!(used >= 1 << 20, "{used}");
        assert!(used < 2 << 20, "the symlink's target was counted: {used}");
    }

    #[test]
    fn age_is_measured_from_the_last_change() {
        let d = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        assert!(!older_than(d.path(), Duration::from_secs(60), now));
        assert!(older_than(
            d.path(),
            Duration::from_secs(60),
            now + Duration::from_secs(61)
        ));
    }
}
