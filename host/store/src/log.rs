//! The raft log and vote on redb. Every write is a durable (fsynced) redb
//! transaction; `append` completes openraft's callback only after its
//! transaction commits. openraft serializes calls into the log store, so
//! vote and log writes are never reordered.

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
}

impl LogStore {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        LogStore {
            db,
            committed: Arc::default(),
        }
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
        let encoded: io::Result<Vec<(u64, Vec<u8>)>> = entries
            .into_iter()
            .map(|e| Ok((e.log_id.index, codec::encode(&e).map_err(io_err)?)))
            .collect();
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
        self.write(move |txn| {
            Self::put_meta_in(txn, PURGED, &bytes)?;
            let mut log = txn.open_table(LOG)?;
            log.retain_in(..=upto, |_, _| false)?;
            Ok(())
        })
        .await
    }
}
