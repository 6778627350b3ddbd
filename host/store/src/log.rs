//! The raft log and vote on redb. Every write is a durable (fsynced) redb
//! transaction, made by one writer thread per database in the order the
//! writes were submitted ([`Writer`]); writes queued while a transaction
//! commits go into the next one together (one fsync for all of them).
//! `append` only submits: it returns at once and completes openraft's
//! callback when the entries are durable, so the leader replicates them to
//! followers while its own disk is still writing them. Vote, truncation
//! and purge wait until they are durable, and so, being queued behind
//! them, are all earlier appends.
//!
//! The newest entries are also kept in memory ([`Tail`]): replicating
//! them to followers and applying them read them from there instead of
//! reading and decoding them from disk again.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use openraft::OptionalSend;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::types::{Entry, LogId, TypeConfig, Vote};
use wasmos_state::codec;

pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "purged";

/// The most entries kept in memory, and the most bytes (encoded) they take.
const TAIL_ENTRIES: usize = 4096;
const TAIL_BYTES: usize = 32 << 20;

/// The newest entries of the log, in order and without gaps: a copy of the
/// end of what redb holds (appends, truncations and purges change both).
#[derive(Default)]
struct Tail {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Tail {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn push(&mut self, entry: Entry, size: usize) {
        let index = entry.log_id.index;
        if let Some((last, _)) = self.entries.back() {
            let last = last.log_id.index;
            if index <= last {
                self.truncate_from(index);
            } else if index > last + 1 {
                // Not adjacent (cannot happen while the two mirror each
                // other): start over rather than leave a gap.
                self.entries.clear();
                self.bytes = 0;
            }
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.entries.len() > TAIL_ENTRIES || self.bytes > TAIL_BYTES {
            let Some((_, size)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= size;
        }
    }

    /// Drops the entries from `index` on.
    fn truncate_from(&mut self, index: u64) {
        while let Some((e, size)) = self.entries.back() {
            if e.log_id.index < index {
                break;
            }
            self.bytes -= size;
            self.entries.pop_back();
        }
    }

    /// Drops the entries up to `index`.
    fn purge_upto(&mut self, index: u64) {
        while let Some((e, size)) = self.entries.front() {
            if e.log_id.index > index {
                break;
            }
            self.bytes -= size;
            self.entries.pop_front();
        }
    }

    /// The entries from `start` to `end` (or the last), when the tail
    /// holds all of those the log holds.
    fn range(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        if start < first {
            return None;
        }
        Some(
            self.entries
                .iter()
                .skip((start - first) as usize)
                .map(|(e, _)| e)
                .take_while(|e| end.is_none_or(|end| e.log_id.index <= end))
                .cloned()
                .collect(),
        )
    }
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// A change to make in a write transaction.
type WriteFn = Box<dyn FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error> + Send>;

/// Who waits for a write to be durable.
enum Done {
    /// openraft, for an append.
    Flushed(IOFlushed<TypeConfig>),
    /// A caller awaiting it.
    Reply(tokio::sync::oneshot::Sender<Result<(), String>>),
}

/// A write (or, with none, a barrier: done once everything before it is).
struct Job {
    write: Option<WriteFn>,
    done: Done,
}

/// The most jobs committed in one transaction.
const MAX_GROUP: usize = 1024;

/// Submits writes to the database's writer thread, which commits them in
/// submission order; the thread ends when the last `Writer` is dropped. It
/// does not keep the database open: once the stores are dropped, the
/// database can be opened again at once.
#[derive(Clone)]
struct Writer(mpsc::Sender<Job>);

impl Writer {
    fn start(db: &Arc<Database>) -> Writer {
        let db = Arc::downgrade(db);
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || {
                // After a failed commit nothing more is written: a later
                // append that succeeded would leave a hole in the log.
                let mut failed: Option<String> = None;
                while let Ok(first) = rx.recv() {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    let result = match (&failed, db.upgrade()) {
                        (Some(e), _) => Err(e.clone()),
                        (None, Some(db)) => commit(&db, &mut group),
                        (None, None) => Err("the raft log's database is closed".to_string()),
                    };
                    if let Err(e) = &result {
                        failed.get_or_insert_with(|| {
                            format!(
                                "an earlier write to the raft log failed ({e}); restart the master"
                            )
                        });
                    }
                    for job in group {
                        match job.done {
                            Done::Flushed(cb) => cb.io_completed(result.clone().map_err(io_err)),
                            Done::Reply(tx) => {
                                let _ = tx.send(result.clone());
                            }
                        }
                    }
                }
            })
            .expect("cannot start the raft log's writer thread");
        Writer(tx)
    }

    fn submit(&self, write: Option<WriteFn>, done: Done) -> io::Result<()> {
        self.0.send(Job { write, done }).map_err(|e| {
            let msg = "the raft log's writer thread has stopped";
            if let Done::Flushed(cb) = e.0.done {
                cb.io_completed(Err(io_err(msg)));
            }
            io_err(msg)
        })
    }

    /// Submits `write` (or a barrier) and waits until it is durable.
    async fn wait(&self, write: Option<WriteFn>) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(write, Done::Reply(tx))?;
        rx.await
            .map_err(|_| io_err("the raft log's writer thread has stopped"))?
            .map_err(io_err)
    }
}

/// Runs the group's writes in one transaction (none if all are barriers).
fn commit(db: &Database, group: &mut [Job]) -> Result<(), String> {
    let writes: Vec<WriteFn> = group.iter_mut().filter_map(|j| j.write.take()).collect();
    if writes.is_empty() {
        return Ok(());
    }
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    for write in writes {
        write(&txn).map_err(|e| e.to_string())?;
    }
    txn.commit().map_err(|e| e.to_string())
}

/// The log store; cheap to clone (readers share the database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    writer: Writer,
    /// The newest committed index openraft told us, written to disk with
    /// the next append.
    committed: Arc<Mutex<Option<LogId>>>,
    tail: Arc<Mutex<Tail>>,
    appended: Arc<AtomicU64>,
}

impl LogStore {
    /// `appended` counts the bytes of every entry appended (for the
    /// snapshot policy).
    pub(crate) fn new(db: Arc<Database>, appended: Arc<AtomicU64>) -> Self {
        LogStore {
            writer: Writer::start(&db),
            db,
            committed: Arc::default(),
            tail: Arc::default(),
            appended,
        }
    }

    /// Waits until every write submitted so far is durable (so that redb
    /// holds them).
    async fn flush(&self) -> io::Result<()> {
        self.writer.wait(None).await
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn latest_committed(&self) -> Option<LogId> {
        *self.committed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(io_err(e)),
        };
        match table.get(key).map_err(io_err)? {
            Some(v) => codec::decode(v.value()).map(Some).map_err(io_err),
            None => Ok(None),
        }
    }

    /// Runs `f` in a durable write transaction after every write submitted
    /// before it, and waits until it is durable.
    async fn write<F>(&self, f: F) -> io::Result<()>
    where
        F: FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error> + Send + 'static,
    {
        self.writer.wait(Some(Box::new(f))).await
    }

    fn put_meta_in(
        txn: &redb::WriteTransaction,
        key: &str,
        bytes: &[u8],
    ) -> Result<(), redb::Error> {
        txn.open_table(META)?.insert(key, bytes)?;
        Ok(())
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => Some(*e),
        Bound::Excluded(0) => return (1, Some(0)),
        Bound::Excluded(e) => Some(e - 1),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = bounds(&range);
        if end.is_some_and(|e| e < start) {
            return Ok(Vec::new());
        }
        if let Some(entries) = self.tail().range(start, end) {
            return Ok(entries);
        }
        // Entries appended but not yet durable are in the tail, unless one
        // is over its budget: wait for them to reach redb.
        self.flush().await?;
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = match txn.open_table(LOG) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(io_err(e)),
        };
        let iter = match end {
            Some(e) => table.range(start..=e),
            None => table.range(start..),
        }
        .map_err(io_err)?;
        let mut out = Vec::new();
        for item in iter {
            let (_, v) = item.map_err(io_err)?;
            out.push(codec::decode(v.value()).map_err(io_err)?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        self.flush().await?;
        let purged: Option<LogId> = self.get_meta(PURGED)?;
        let last = {
            let txn = self.db.begin_read().map_err(io_err)?;
            match txn.open_table(LOG) {
                Ok(t) => match t.last().map_err(io_err)? {
                    Some((_, v)) => Some(codec::decode::<Entry>(v.value()).map_err(io_err)?.log_id),
                    None => None,
                },
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(io_err(e)),
            }
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = codec::encode(vote).map_err(io_err)?;
        self.write(move |txn| Self::put_meta_in(txn, VOTE, &bytes))
            .await
    }

    /// The committed index is a hint that lets a restarted master apply
    /// what it already knows is committed before it hears from a leader.
    /// A stale hint is safe, so it costs no transaction of its own: it is
    /// written with the next append.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let mut latest = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        if committed > *latest {
            *latest = committed;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        match self.latest_committed() {
            Some(c) => Ok(Some(c)),
            None => Ok(self.get_meta::<Option<LogId>>(COMMITTED)?.flatten()),
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded: io::Result<Vec<(Entry, Vec<u8>)>> = entries
            .into_iter()
            .map(|e| {
                let bytes = codec::encode(&e).map_err(io_err)?;
                Ok((e, bytes))
            })
            .collect();
        // Into the tail before they are durable: replication may send them
        // on meanwhile (the leader counts itself towards a majority only
        // once `callback` says they are durable here).
        let encoded: io::Result<Vec<(u64, Vec<u8>)>> = encoded.map(|entries| {
            let bytes: usize = entries.iter().map(|(_, b)| b.len()).sum();
            self.appended.fetch_add(bytes as u64, Ordering::Relaxed);
            let mut tail = self.tail();
            entries
                .into_iter()
                .map(|(e, bytes)| {
                    let index = e.log_id.index;
                    tail.push(e, bytes.len());
                    (index, bytes)
                })
                .collect()
        });
        let committed = match self.latest_committed() {
            Some(c) => Some(codec::encode(&Some(c)).map_err(io_err)?),
            None => None,
        };
        match encoded {
            Ok(encoded) => self.writer.submit(
                Some(Box::new(move |txn| {
                    if let Some(c) = &committed {
                        Self::put_meta_in(txn, COMMITTED, c)?;
                    }
                    let mut log = txn.open_table(LOG)?;
                    for (i, bytes) in &encoded {
                        log.insert(*i, bytes.as_slice())?;
                    }
                    Ok(())
                })),
                Done::Flushed(callback),
            ),
            Err(e) => {
                callback.io_completed(Err(io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        self.tail().truncate_from(from);
        self.write(move |txn| {
            let mut log = txn.open_table(LOG)?;
            log.retain_in(from.., |_, _| false)?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let upto = log_id.index;
        let bytes = codec::encode(&log_id).map_err(io_err)?;
        self.tail().purge_upto(upto);
        self.write(move |txn| {
            Self::put_meta_in(txn, PURGED, &bytes)?;
            let mut log = txn.open_table(LOG)?;
            log.retain_in(..=upto, |_, _| false)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tail_tests {
    use super::*;
    use openraft::entry::RaftEntry;

    fn entry(term: u64, index: u64) -> Entry {
        Entry::new_blank(LogId::new_term_index(term, index))
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<(u64, u64)>> {
        entries.map(|es| {
            es.iter()
                .map(|e| (e.log_id.committed_leader_id().term, e.log_id.index))
                .collect()
        })
    }

    #[test]
    fn the_tail_mirrors_appends_truncations_and_purges_of_the_log() {
        let mut tail = Tail::default();
        assert_eq!(
            tail.range(0, None).map(|e| e.len()),
            None,
            "empty: ask redb"
        );
        for i in 1..=5 {
            tail.push(entry(1, i), 10);
        }
        assert_eq!(indexes(tail.range(2, Some(3))), Some(vec![(1, 2), (1, 3)]));
        assert_eq!(indexes(tail.range(5, None)), Some(vec![(1, 5)]));
        assert_eq!(indexes(tail.range(6, None)), Some(vec![]), "past the end");
        // A new leader overwrites 4..: the old 4 and 5 are gone.
        tail.truncate_from(4);
        tail.push(entry(2, 4), 10);
        assert_eq!(indexes(tail.range(3, None)), Some(vec![(1, 3), (2, 4)]));
        // An append over existing indexes replaces them too.
        tail.push(entry(3, 3), 10);
        assert_eq!(indexes(tail.range(1, None)).unwrap().last(), Some(&(3, 3)));
        assert_eq!(tail.bytes, 30);
        tail.purge_upto(2);
        assert_eq!(
            tail.range(2, None).map(|e| e.len()),
            None,
            "purged: ask redb"
        );
        assert_eq!(indexes(tail.range(3, None)), Some(vec![(3, 3)]));
        // A gap starts the tail over, never serving a range with a hole.
        tail.push(entry(3, 9), 10);
        assert_eq!(tail.range(3, None).map(|e| e.len()), None);
        assert_eq!(indexes(tail.range(9, None)), Some(vec![(3, 9)]));
    }

    #[test]
    fn the_tail_keeps_at_most_its_budget() {
        let mut tail = Tail::default();
        for i in 1..=(TAIL_ENTRIES as u64 + 10) {
            tail.push(entry(1, i), 1);
        }
        assert_eq!(tail.entries.len(), TAIL_ENTRIES);
        assert_eq!(tail.first_index(), Some(11));
        tail.push(entry(1, TAIL_ENTRIES as u64 + 11), TAIL_BYTES);
        assert_eq!(tail.entries.len(), 1, "one entry of the whole budget");
        tail.push(entry(1, TAIL_ENTRIES as u64 + 12), TAIL_BYTES + 1);
        assert!(tail.entries.is_empty(), "an entry over budget is not kept");
        assert_eq!(tail.bytes, 0);
    }

    fn put(key: &'static str, value: &'static [u8]) -> Option<WriteFn> {
        Some(Box::new(move |txn| LogStore::put_meta_in(txn, key, value)))
    }

    #[tokio::test]
    async fn the_writer_commits_in_submission_order_and_does_not_hold_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        let db = Arc::new(Database::create(&path).unwrap());
        let store = LogStore::new(db.clone(), Arc::default());
        // Many writes of one key queued back to back (several share a
        // transaction): the last one submitted is the one that stays.
        let mut replies = Vec::new();
        for i in 0..200u8 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let value: &'static [u8] = Box::leak(vec![i].into_boxed_slice());
            store
                .writer
                .submit(put("k", value), Done::Reply(tx))
                .unwrap();
            replies.push(rx);
        }
        // A barrier is done only once everything before it is durable.
        store.flush().await.unwrap();
        let read = |db: &Database| {
            let txn = db.begin_read().unwrap();
            let t = txn.open_table(META).unwrap();
            t.get("k").unwrap().unwrap().value().to_vec()
        };
        assert_eq!(read(&db), vec![199]);
        for rx in replies {
            assert_eq!(rx.await.unwrap(), Ok(()));
        }
        // Once the stores are gone the file is free to open again.
        drop(store);
        drop(db);
        let db = Database::create(&path).expect("the writer thread let go of the database");
        assert_eq!(read(&db), vec![199]);
    }

    #[tokio::test]
    async fn after_a_failed_write_nothing_more_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("raft.redb")).unwrap());
        let store = LogStore::new(db.clone(), Arc::default());
        store
            .write(|txn| LogStore::put_meta_in(txn, "a", b"1"))
            .await
            .unwrap();
        // META exists with string keys: opening it with u64 keys fails.
        let bad = store
            .write(|txn| {
                txn.open_table(TableDefinition::<u64, u64>::new("raft_meta"))?;
                Ok(())
            })
            .await;
        assert!(bad.is_err());
        // A later write fails too and leaves nothing behind (it could be
        // an append after a lost one: a hole in the log).
        let later = store
            .write(|txn| LogStore::put_meta_in(txn, "b", b"2"))
            .await;
        assert!(later.unwrap_err().to_string().contains("an earlier write"));
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(META).unwrap();
        assert!(t.get("a").unwrap().is_some());
        assert!(t.get("b").unwrap().is_none());
    }
}
