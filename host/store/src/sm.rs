//! The replicated state machine: openraft applies committed entries here,
//! and they become the cluster's [`State`].
//!
//! The state lives in memory behind a lock that readers share; snapshots
//! (the whole state as JSON, with the raft metadata) are written to the
//! same redb database as the log. On open the newest snapshot is loaded;
//! openraft then re-applies the committed entries after it.

use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use redb::{Database, ReadableDatabase, TableDefinition};
use tokio::sync::mpsc;
use wasmos_state::{Command, Response, SCHEMA_VERSION, Snapshot as StateSnapshot, State};

use crate::types::{
    LogId, Replies, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
};

pub(crate) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_snapshot");
const META_KEY: &str = "meta";
const DATA_KEY: &str = "data";

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// One applied log entry, as told to subscribers: the commands of every
/// proposal in it, in order, with their responses.
#[derive(Debug)]
pub struct Applied {
    pub index: u64,
    /// The entry's proposals (shared with the log, not copied).
    batch: Arc<Vec<Vec<Command>>>,
    /// One per command, in the order of [`Applied::commands`].
    pub responses: Vec<Response>,
}

impl Applied {
    /// The commands of every proposal, in order.
    pub fn commands(&self) -> impl Iterator<Item = &Command> {
        self.batch.iter().flatten()
    }
}

/// What the state machine shares with the rest of the store.
pub(crate) struct Shared {
    pub(crate) state: RwLock<State>,
    pub(crate) last_index: AtomicU64,
    /// Bytes of log appended here since the last snapshot was made or
    /// installed (the log store adds, snapshots reset).
    pub(crate) log_bytes: Arc<AtomicU64>,
    /// The size of the latest snapshot.
    pub(crate) snapshot_bytes: AtomicU64,
    pub(crate) subscribers: Mutex<Vec<mpsc::UnboundedSender<Arc<Applied>>>>,
}

impl Shared {
    fn publish(&self, applied: Arc<Applied>) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subs.retain(|s| s.send(applied.clone()).is_ok());
    }
}

/// openraft's handle on the state machine.
pub struct StateMachine {
    db: Arc<Database>,
    pub(crate) shared: Arc<Shared>,
    applied: Option<LogId>,
    membership: StoredMembership,
}

impl StateMachine {
    /// Loads the newest snapshot from `db`, if any.
    pub(crate) fn open(db: Arc<Database>) -> io::Result<StateMachine> {
        let (state, applied, membership, size) = match read_snapshot(&db)? {
            Some((meta, data)) => {
                let snap = StateSnapshot::decode(&data).map_err(io_err)?;
                (
                    snap.state,
                    meta.last_log_id,
                    meta.last_membership,
                    data.len(),
                )
            }
            None => (State::default(), None, StoredMembership::default(), 0),
        };
        let shared = Arc::new(Shared {
            log_bytes: Arc::default(),
            snapshot_bytes: AtomicU64::new(size as u64),
            last_index: AtomicU64::new(applied.as_ref().map_or(0, |l| l.index)),
            state: RwLock::new(state),
            subscribers: Mutex::new(Vec::new()),
        });
        Ok(StateMachine {
            db,
            shared,
            applied,
            membership,
        })
    }

    async fn apply_membership(
        &mut self,
        log_id: LogId,
        m: openraft::Membership<u64, crate::MasterNode>,
    ) {
        let before: BTreeSet<u64> = self.membership.nodes().map(|(id, _)| *id).collect();
        let after: BTreeSet<u64> = m.nodes().map(|(id, _)| *id).collect();
        let gone: Vec<u64> = before.difference(&after).copied().collect();
        if !gone.is_empty() {
            write_when_free(&self.shared.state)
                .await
                .retired_masters
                .extend(gone);
        }
        self.membership = StoredMembership::new(Some(log_id), m);
    }
}

/// The state's write lock, taken once no one holds the lock, without
/// queueing for it. std's lock prefers writers: a writer queued behind a
/// long read makes every later reader queue too, and at thousands of
/// agents that blocked all of a master's async threads — raft's answers
/// among them — until the read ended (elections followed). Applying waits
/// for a long read instead; everything else goes on. Should reads overlap
/// without a gap for a second, it queues after all (commits must go on).
async fn write_when_free(lock: &RwLock<State>) -> std::sync::RwLockWriteGuard<'_, State> {
    let started = std::time::Instant::now();
    loop {
        if started.elapsed() > std::time::Duration::from_secs(1) {
            tracing::warn!(
                "reads of the state overlapped for a second without a gap; applying queues for the lock (reads wait behind it)"
            );
            return lock.write().unwrap_or_else(|p| p.into_inner());
        }
        let busy = match lock.try_write() {
            Ok(g) => return g,
            Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => true,
        };
        if busy {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
}

fn read_snapshot(db: &Database) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
    let txn = db.begin_read().map_err(io_err)?;
    let table = match txn.open_table(SNAPSHOT) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let (Some(meta), Some(data)) = (
        table.get(META_KEY).map_err(io_err)?,
        table.get(DATA_KEY).map_err(io_err)?,
    ) else {
        return Ok(None);
    };
    let meta: SnapshotMeta = serde_json::from_slice(meta.value()).map_err(io_err)?;
    Ok(Some((meta, data.value().to_vec())))
}

async fn write_snapshot(db: Arc<Database>, meta: SnapshotMeta, data: Vec<u8>) -> io::Result<()> {
    tokio::task::spawn_blocking(move || -> io::Result<()> {
        let meta = serde_json::to_vec(&meta).map_err(io_err)?;
        let txn = db.begin_write().map_err(io_err)?;
        {
            let mut t = txn.open_table(SNAPSHOT).map_err(io_err)?;
            t.insert(META_KEY, meta.as_slice()).map_err(io_err)?;
            t.insert(DATA_KEY, data.as_slice()).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)
    })
    .await
    .map_err(io_err)?
}

/// Builds a snapshot of the state as it was when the builder was made.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    shared: Arc<Shared>,
    state: State,
    applied: Option<LogId>,
    membership: StoredMembership,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let state = std::mem::take(&mut self.state);
        let last_index = self.applied.as_ref().map_or(0, |l| l.index);
        let data = tokio::task::spawn_blocking(move || {
            StateSnapshot {
                schema_version: SCHEMA_VERSION,
                last_index,
                state,
            }
            .encode()
        })
        .await
        .map_err(io_err)?;
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
        };
        write_snapshot(self.db.clone(), meta.clone(), data.clone()).await?;
        self.shared
            .snapshot_bytes
            .store(data.len() as u64, Ordering::Relaxed);
        tracing::debug!(last_index, bytes = data.len(), "snapshot written");
        Ok(Snapshot {
            meta,
            snapshot: SnapshotData::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let index = entry.log_id.index;
            let mut replies = Replies::default();
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Membership(m) => self.apply_membership(entry.log_id, m).await,
                EntryPayload::Normal(batch) => {
                    let mut responses = Vec::new();
                    {
                        let mut state = write_when_free(&self.shared.state).await;
                        let started = std::time::Instant::now();
                        for proposal in batch.0.iter() {
                            let r: Vec<Response> =
                                proposal.iter().cloned().map(|c| state.apply(c)).collect();
                            responses.extend(r.iter().cloned());
                            replies.0.push(r);
                        }
                        let held = started.elapsed();
                        if held > crate::SLOW_READ {
                            tracing::warn!(
                                ms = held.as_millis() as u64,
                                index,
                                commands = responses.len(),
                                "applying an entry held the state's lock long; reads waited"
                            );
                        }
                    }
                    self.shared.last_index.store(index, Ordering::Release);
                    self.applied = Some(entry.log_id);
                    self.shared.publish(Arc::new(Applied {
                        index,
                        batch: batch.0,
                        responses,
                    }));
                    if let Some(r) = responder {
                        r.send(replies);
                    }
                    continue;
                }
            }
            self.shared.last_index.store(index, Ordering::Release);
            self.applied = Some(entry.log_id);
            if let Some(r) = responder {
                r.send(replies);
            }
        }
        Ok(())
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<SnapshotBuilder> {
        Some(self.get_snapshot_builder().await)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        // What is appended from now on counts towards the next snapshot.
        self.shared.log_bytes.store(0, Ordering::Relaxed);
        SnapshotBuilder {
            db: self.db.clone(),
            shared: self.shared.clone(),
            state: self
                .shared
                .state
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            applied: self.applied,
            membership: self.membership.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let snap = StateSnapshot::decode(&data).map_err(io_err)?;
        let size = data.len() as u64;
        write_snapshot(self.db.clone(), meta.clone(), data).await?;
        self.shared.snapshot_bytes.store(size, Ordering::Relaxed);
        self.shared.log_bytes.store(0, Ordering::Relaxed);
        *write_when_free(&self.shared.state).await = snap.state;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.shared.last_index.store(
            self.applied.as_ref().map_or(0, |l| l.index),
            Ordering::Release,
        );
        tracing::info!(
            last_index = snap.last_index,
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let db = self.db.clone();
        let found = tokio::task::spawn_blocking(move || read_snapshot(&db))
            .await
            .map_err(io_err)??;
        Ok(found.map(|(meta, data)| Snapshot {
            meta,
            snapshot: SnapshotData::new(data),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While a long read holds the lock, applying waits without queueing:
    /// other readers still get in (with a queued `write()`, std's lock
    /// turns every later reader away until the long read ends).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_apply_does_not_stop_other_readers() {
        let lock = Arc::new(RwLock::new(State::default()));
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let long = {
            let lock = lock.clone();
            std::thread::spawn(move || {
                let _read = lock.read().unwrap_or_else(|p| p.into_inner());
                held_tx.send(()).expect("the test waits");
                release_rx.recv().expect("the test releases");
            })
        };
        held_rx.recv().expect("the long read started");
        let writer = {
            let lock = lock.clone();
            tokio::spawn(async move {
                let _w = write_when_free(&lock).await;
            })
        };
        // Give the writer time to try (and, were it queued, to block readers).
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!writer.is_finished(), "the writer cannot have the lock yet");
        assert!(
            lock.try_read().is_ok(),
            "another reader got in while the writer waited"
        );
        release_tx.send(()).expect("the reader waits");
        long.join().expect("the long read ended");
        tokio::time::timeout(std::time::Duration::from_secs(10), writer)
            .await
            .expect("the writer got the lock once the read ended")
            .expect("the writer did not panic");
    }
}
