//! The cluster's recent history for the dashboard's charts: every master
//! samples the replicated state it has applied (allocation against
//! capacity, agents, tasks running and staging, tasks that ended and
//! failed) at a fixed interval into a bounded ring, a day by default, and
//! appends each sample to a file in its data dir. So a fresh page shows
//! the last day, a restarted master keeps what it sampled, and a newly
//! elected leader already holds the history it sampled as a follower.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmos_core::{AgentState, Resources, TaskState};
use wasmos_state::State;

/// How far back the ring reaches.
pub const SPAN: Duration = Duration::from_secs(24 * 3600);

/// The most points one answer carries (a day at 10 s is 8,640 samples).
pub const MAX_POINTS: usize = 10_000;

/// The cluster at one instant. Resources are `[allocated, total]`: held by
/// live tasks and executors, against the active agents' capacity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the Unix epoch.
    pub t: f64,
    pub cpus: [f64; 2],
    pub mem: [f64; 2],
    pub disk: [f64; 2],
    pub gpus: [f64; 2],
    /// Active agents.
    pub agents: u32,
    /// Agents the leader stopped hearing from.
    pub unreachable: u32,
    pub running: u32,
    /// Staging or starting.
    pub staging: u32,
    /// Tasks that ended since the previous sample, and of those the ones
    /// that failed (failed, errored, lost, dropped, gone).
    pub ended: u32,
    pub failed: u32,
}

impl Sample {
    /// Samples `state` at `t`; tasks count as ended in this sample when
    /// their terminal update is newer than `since`.
    pub fn of(state: &State, t: f64, since: f64) -> Sample {
        let mut total = Resources::default();
        let (mut agents, mut unreachable) = (0, 0);
        for a in state.agents.values() {
            match a.state {
                AgentState::Active => {
                    agents += 1;
                    total = total.add(&a.info.resources);
                }
                AgentState::Unreachable => unreachable += 1,
                AgentState::Gone => {}
            }
        }
        let used = state
            .used_by_agent()
            .values()
            .fold(Resources::default(), |acc, r| acc.add(r));
        let mut s = Sample {
            t,
            cpus: [used.cpus.as_f64(), total.cpus.as_f64()],
            mem: [used.mem.as_f64(), total.mem.as_f64()],
            disk: [used.disk.as_f64(), total.disk.as_f64()],
            gpus: [f64::from(used.gpus), f64::from(total.gpus)],
            agents,
            unreachable,
            ..Sample::default()
        };
        for task in state.tasks.values() {
            let status = task.status();
            match status.state {
                TaskState::Running => s.running += 1,
                TaskState::Staging | TaskState::Starting => s.staging += 1,
                st if st.is_terminal() && status.timestamp > since && status.timestamp <= t => {
                    s.ended += 1;
                    if is_failure(st) {
                        s.failed += 1;
                    }
                }
                _ => {}
            }
        }
        s
    }
}

/// Ends that count against the failure rate (a kill or a finish does not).
fn is_failure(s: TaskState) -> bool {
    matches!(
        s,
        TaskState::Failed
            | TaskState::Error
            | TaskState::Lost
            | TaskState::Dropped
            | TaskState::Gone
    )
}

/// A bounded ring of samples, mirrored to a file of JSON lines.
#[derive(Debug)]
pub struct History {
    pub interval: Duration,
    capacity: usize,
    ring: Mutex<Ring>,
    file: Option<PathBuf>,
}

#[derive(Debug, Default)]
struct Ring {
    samples: VecDeque<Sample>,
    /// Lines in the file (compacted when it holds far more than the ring).
    lines: usize,
}

impl History {
    /// A ring of a day's samples at `interval`, loaded from `file` when it
    /// exists (samples older than a day are dropped). `None`: memory only.
    pub fn open(interval: Duration, file: Option<PathBuf>) -> History {
        let capacity = capacity_for(interval);
        let mut ring = Ring::default();
        if let Some(path) = &file {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let mut torn = false;
                    for line in text.lines() {
                        ring.lines += 1;
                        // A torn last line (a crash mid-append) is skipped,
                        // and the file rewritten without it before anything
                        // is appended after it.
                        match serde_json::from_str::<Sample>(line) {
                            Ok(s) => ring.samples.push_back(s),
                            Err(_) => torn = true,
                        }
                    }
                    if torn {
                        ring.lines = ring.samples.len();
                        if let Err(e) = rewrite(path, ring.samples.iter()) {
                            tracing::warn!(path = %path.display(), error = %e, "cannot repair the dashboard's history file");
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "cannot read the dashboard's history; charts start empty (check the data dir's permissions)"
                ),
            }
        }
        let h = History {
            interval,
            capacity,
            ring: Mutex::new(ring),
            file,
        };
        {
            let mut ring = h.lock();
            let newest = ring.samples.back().map_or(0.0, |s| s.t);
            h.trim(&mut ring, newest);
        }
        h
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most samples the ring holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// When the newest sample was taken (`None`: none yet).
    pub fn last_t(&self) -> Option<f64> {
        self.lock().samples.back().map(|s| s.t)
    }

    /// Adds a sample (dropping the oldest past the capacity or the span)
    /// and appends it to the file.
    pub fn push(&self, s: Sample) {
        let mut ring = self.lock();
        ring.samples.push_back(s);
        self.trim(&mut ring, s.t);
        let Some(path) = &self.file else { return };
        ring.lines += 1;
        let result = if ring.lines > self.capacity + self.capacity / 4 + 16 {
            // Rewrite the file with what the ring holds, atomically.
            ring.lines = ring.samples.len();
            rewrite(path, ring.samples.iter())
        } else {
            append(path, &s)
        };
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot save the dashboard's history; it stays in memory");
        }
    }

    /// Drops samples past the capacity or older than a day before `newest`.
    fn trim(&self, ring: &mut Ring, newest: f64) {
        let oldest = newest - SPAN.as_secs_f64();
        while ring.samples.len() > self.capacity
            || ring.samples.front().is_some_and(|s| s.t < oldest)
        {
            ring.samples.pop_front();
        }
    }

    /// The samples taken after `since` (all with `None`), at most `points`
    /// of them: when there are more, consecutive samples are merged into
    /// `points` buckets of equal time (see [`merge`]).
    pub fn query(&self, since: Option<f64>, points: usize) -> Vec<Sample> {
        let points = points.clamp(1, MAX_POINTS);
        let ring = self.lock();
        let from = since.unwrap_or(f64::NEG_INFINITY);
        let picked: Vec<Sample> = ring
            .samples
            .iter()
            .filter(|s| s.t > from)
            .copied()
            .collect();
        drop(ring);
        downsample(&picked, points)
    }
}

/// A day's worth of samples at `interval`, at least one.
pub fn capacity_for(interval: Duration) -> usize {
    let secs = interval.as_secs_f64().max(0.001);
    ((SPAN.as_secs_f64() / secs).ceil() as usize).clamp(1, 10 * MAX_POINTS)
}

fn append(path: &Path, s: &Sample) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut line = serde_json::to_vec(s).map_err(std::io::Error::other)?;
    line.push(b'\n');
    f.write_all(&line)
}

fn rewrite<'a>(path: &Path, samples: impl Iterator<Item = &'a Sample>) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for s in samples {
            serde_json::to_writer(&mut f, s).map_err(std::io::Error::other)?;
            f.write_all(b"\n")?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(tmp, path)
}

/// At most `points` samples spanning the same time as `samples`: runs of
/// consecutive samples in equal slices of time merge into one.
pub fn downsample(samples: &[Sample], points: usize) -> Vec<Sample> {
    if samples.len() <= points {
        return samples.to_vec();
    }
    let (first, last) = (samples[0].t, samples[samples.len() - 1].t);
    let width = ((last - first) / points as f64).max(f64::MIN_POSITIVE);
    let mut out: Vec<Sample> = Vec::with_capacity(points);
    let mut bucket = usize::MAX;
    for s in samples {
        let b = (((s.t - first) / width) as usize).min(points - 1);
        match out.last_mut() {
            Some(m) if b == bucket => *m = merge(m, s),
            _ => {
                out.push(*s);
                bucket = b;
            }
        }
    }
    out
}

/// One sample for two consecutive ones: the later gauges (the state as of
/// the bucket's end), the ends and failures of both.
pub fn merge(earlier: &Sample, later: &Sample) -> Sample {
    Sample {
        ended: earlier.ended + later.ended,
        failed: earlier.failed + later.failed,
        ..*later
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: f64) -> Sample {
        Sample {
            t,
            cpus: [t, 100.0],
            ended: 2,
            failed: 1,
            ..Sample::default()
        }
    }

    #[test]
    fn the_ring_keeps_a_day_and_drops_the_oldest_past_its_capacity() {
        let h = History::open(Duration::from_secs(3600), None);
        assert_eq!(h.capacity(), 24);
        for i in 0..30 {
            h.push(at(f64::from(i) * 3600.0));
        }
        let all = h.query(None, MAX_POINTS);
        assert_eq!(all.len(), 24);
        assert_eq!(all[0].t, 6.0 * 3600.0);
        // Only what came after `since`.
        let newer = h.query(Some(28.0 * 3600.0), MAX_POINTS);
        assert_eq!(
            newer.iter().map(|s| s.t).collect::<Vec<_>>(),
            [29.0 * 3600.0]
        );
    }

    #[test]
    fn samples_older_than_a_day_are_dropped_even_below_capacity() {
        let h = History::open(Duration::from_secs(10), None);
        h.push(at(0.0));
        h.push(at(SPAN.as_secs_f64() + 5.0));
        assert_eq!(h.query(None, 10).len(), 1);
    }

    #[test]
    fn downsampling_merges_buckets_keeping_the_latest_gauges_and_summing_failures() {
        let samples: Vec<Sample> = (0..100).map(|i| at(f64::from(i))).collect();
        let d = downsample(&samples, 10);
        assert_eq!(d.len(), 10);
        assert_eq!(d.iter().map(|s| s.ended).sum::<u32>(), 200);
        assert_eq!(d.iter().map(|s| s.failed).sum::<u32>(), 100);
        assert_eq!(d.last().unwrap().cpus[0], 99.0, "the last gauge survives");
        assert_eq!(d[0].t, 9.0, "a bucket is stamped with its latest sample");
        assert_eq!(downsample(&samples[..5], 10).len(), 5);
    }

    #[test]
    fn a_reopened_history_has_what_was_sampled_and_skips_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let h = History::open(Duration::from_secs(1), Some(path.clone()));
        for i in 0..5 {
            h.push(at(1000.0 + f64::from(i)));
        }
        drop(h);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"t\":10").unwrap();
        let h = History::open(Duration::from_secs(1), Some(path.clone()));
        let got = h.query(None, MAX_POINTS);
        assert_eq!(got.len(), 5);
        assert_eq!(got[4], at(1004.0));
        // What comes next lands on a line of its own.
        h.push(at(1005.0));
        drop(h);
        let h = History::open(Duration::from_secs(1), Some(path));
        assert_eq!(h.query(None, MAX_POINTS).len(), 6);
    }

    #[test]
    fn the_file_is_compacted_to_the_ring() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let h = History::open(Duration::from_secs(3600), Some(path.clone()));
        for i in 0..200 {
            h.push(at(f64::from(i)));
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= 24 + 24 / 4 + 16, "{lines} lines");
        let reopened = History::open(Duration::from_secs(3600), Some(path));
        assert_eq!(reopened.query(None, MAX_POINTS), h.query(None, MAX_POINTS));
    }
}
