//! The raft log and vote on redb. Every write is a durable (fsynced) redb
//! transaction; `append` completes openraft's callback only after its
//! transaction commits. openraft serializes calls into the log store, so
//! vote and log writes are never reordered.
//!
//! The newest entries are also kept in memory ([`Tail`]): replicating
//! them to followers and applying them read them from there instead of
//! reading and decoding them from disk again.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

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

/// The log store; cheap to clone (readers share the database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// The newest committed index openraft told us, written to disk with
    /// the next append.
    committed: Arc<Mutex<Option<LogId>>>,
    tail: Arc<Mutex<Tail>>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        LogStore {
            db,
            committed: Arc::default(),
            tail: Arc::default(),
        }
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

    /// Runs `f` in one durable write transaction, off the async reactor.
    async fn write<F>(&self, f: F) -> io::Result<()>
    where
        F: FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let txn = db.begin_write().map_err(io_err)?;
            f(&txn).map_err(io_err)?;
            txn.commit().map_err(io_err)
        })
        .await
        .map_err(io_err)?
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
        let r = match encoded {
            Ok(encoded) => {
                self.write(move |txn| {
                    if let Some(c) = &committed {
                        Self::put_meta_in(txn, COMMITTED, c)?;
                    }
                    let mut log = txn.open_table(LOG)?;
                    for (i, bytes) in &encoded {
                        log.insert(*i, bytes.as_slice())?;
                    }
                    Ok(())
                })
                .await
            }
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
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
}
