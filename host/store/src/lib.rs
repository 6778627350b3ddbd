//! The replicated, durable command log under the master's state machine.
//!
//! [`Store`] is the one way to change the cluster's [`State`]: callers
//! [`Store::propose`] commands on the leader; they are appended to the raft
//! log (openraft, pinned), made durable on a majority of masters, applied
//! by every master to its copy of the state, and only then acknowledged.
//!
//! - Log, vote and snapshots live in one redb database per master (pure
//!   Rust, ACID, fsync on every commit): see [`log`] and [`sm`].
//! - Throughput: proposals that arrive while earlier ones are on their way
//!   are packed into one raft entry ([`types::Batch`]); several entries are
//!   in flight at once (pipelining), and the log's writer thread commits
//!   the writes queued meanwhile with one fsync; appending does not wait
//!   for the disk, so a leader replicates entries while writing them.
//! - Raft traffic is HTTP on the master's own listener ([`net`]); the
//!   master mounts [`Store::handle_rpc`] under [`net::RAFT_PREFIX`].
//! - Leadership is watched ([`Store::leadership`]); the master acts only
//!   while this node leads, and stamps the raft term on what it sends.

pub mod incarnation;
pub mod log;
pub mod net;
pub mod sm;
pub mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::{ChangeMembers, Config, ReadPolicy, ServerState, SnapshotPolicy};
use redb::Database;
use serde::Serialize;

use tokio::sync::{Semaphore, mpsc, oneshot, watch};
pub use wasmos_state::codec::{self, Codec};
use wasmos_state::{Command, Response, State};

pub use sm::Applied;
pub use types::{Batch, MasterNode, Replies, TypeConfig};

/// The raft node as openraft knows it.
pub type Raft = openraft::Raft<TypeConfig, sm::StateMachine>;

/// The most proposals packed into one raft entry.
const MAX_PROPOSALS: usize = 1024;
/// The raft election timeout masters use unless told otherwise, in ms:
/// etcd's default. With 150 ms, three masters sharing two busy cores with
/// 5,000 agents (wasmos-bench placement) elected a new leader dozens of
/// times in a run, each election failing writes in flight; a quiet
/// network of dedicated machines can go lower (`--election-timeout-ms`).
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 1000;
/// Holding the state's lock longer than this (reading or applying) is
/// logged.
pub(crate) const SLOW_READ: std::time::Duration = std::time::Duration::from_millis(50);
/// Raft entries proposed and not yet answered, at most.
const MAX_IN_FLIGHT: usize = 8;

/// Why the store could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state at {path}: {why}")]
    Open { path: PathBuf, why: String },
    #[error("this master is not the leader{}", leader_hint(.leader))]
    NotLeader { leader: Option<(u64, String)> },
    #[error(
        "the leader changed before the change was committed; it may or may not have been applied{}",
        leader_hint(.leader)
    )]
    Indeterminate { leader: Option<(u64, String)> },
    #[error("{0}")]
    Membership(String),
    #[error(
        "this master could not confirm with a majority of masters within {0:?} that it still leads; retry (through another master if it persists)"
    )]
    Unconfirmed(Duration),
    #[error(
        "the change was not committed within {0:?}: a majority of masters did not confirm it; it may or may not be applied later — read the state before you send it again"
    )]
    NotCommitted(Duration),
    #[error("the state store has stopped: {0}")]
    Stopped(String),
}

fn leader_hint(leader: &Option<(u64, String)>) -> String {
    match leader {
        Some((id, addr)) => format!("; the leader is master {id} at {addr}"),
        None => "; no leader is elected yet, retry shortly".into(),
    }
}

/// Who leads, as this master sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Leadership {
    /// The raft term.
    pub term: u64,
    /// The leader's id and base URL, when one is known.
    pub leader: Option<(u64, String)>,
    /// Whether this master leads (its raft role is leader).
    pub is_me: bool,
}

/// A master in the cluster's membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub id: u64,
    pub addr: String,
    /// Voters elect and commit; learners only follow (a master being added).
    pub voter: bool,
    /// On the leader: the last log index this member is known to hold.
    pub matched: Option<u64>,
    /// On the leader: milliseconds since this member last answered it
    /// (None when it never has, or when this master does not lead).
    pub last_ack_ms: Option<u64>,
}

/// How a master joins on its first start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// Form a cluster of these masters (id → base URL), this one included.
    /// Every initial master is started with the same list.
    Members(BTreeMap<u64, String>),
    /// Wait to be added by the running cluster (`wasmos masters add`).
    Join,
}

/// Settings of a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// This master's raft node id; never reused for another master.
    pub node_id: u64,
    /// This master's base URL, as its peers reach it.
    pub addr: String,
    pub bootstrap: Bootstrap,
    /// TLS to peers: this master's certificate, peers' verified against the
    /// cluster CA. `None`: plain HTTP (`--insecure`).
    pub tls: Option<rustls::ClientConfig>,
    /// The local address raft connections go out from.
    pub bind_ip: Option<IpAddr>,
    /// A follower that hears nothing from a leader for a random time in
    /// `[election_timeout, 1.5 × election_timeout]` starts an election.
    pub election_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// Snapshot (and compact the log) once the log since the last snapshot
    /// holds as many bytes as that snapshot (so that snapshotting costs at
    /// most as much as the writes did, whatever the state's size) and at
    /// least `snapshot_min_bytes`; or after `snapshot_every` entries,
    /// whichever comes first.
    pub snapshot_every: u64,
    pub snapshot_min_bytes: u64,
}

impl StoreConfig {
    /// A one-master cluster.
    pub fn single(data_dir: impl Into<PathBuf>, addr: &str) -> StoreConfig {
        StoreConfig {
            data_dir: data_dir.into(),
            node_id: 1,
            addr: addr.to_string(),
            bootstrap: Bootstrap::Members(BTreeMap::from([(1, addr.to_string())])),
            tls: None,
            bind_ip: None,
            election_timeout: Duration::from_millis(DEFAULT_ELECTION_TIMEOUT_MS),
            heartbeat_interval: Duration::from_millis(50),
            snapshot_every: 100_000,
            snapshot_min_bytes: 16 << 20,
        }
    }

    fn raft_config(&self) -> Result<Config, String> {
        // openraft's follower campaigns once it has heard nothing for the
        // leader lease (`election_timeout_max`) plus a random time in
        // `[election_timeout_min, election_timeout_max]`: a quarter and
        // three quarters of ours make that `[1, 1.5] × election_timeout`.
        let t = (self.election_timeout.as_millis() as u64).max(20);
        let (min, max) = (t / 4, t * 3 / 4);
        Config {
            cluster_name: "wasmos".into(),
            election_timeout_min: min,
            election_timeout_max: max,
            heartbeat_interval: (self.heartbeat_interval.as_millis() as u64).clamp(2, min * 2 / 3),
            // Pre-vote keeps a master that was cut off from disrupting the
            // leader when it comes back with a higher term.
            enable_pre_vote: Some(true),
            // A restarted leader is elected again like anyone else, so
            // every leadership has its own term (agents fence on terms).
            enable_leader_restore: Some(false),
            // Snapshots carry plugin components: give them time to travel.
            install_snapshot_timeout: 60_000,
            // `snapshot_policy` below decides.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: 1000,
            replication_lag_threshold: self.snapshot_every.clamp(1, 5000) * 2,
            // Entries carry batches (and plugin components): keep each
            // replication request a sane size.
            max_payload_entries: 64,
            ..Default::default()
        }
        .validate()
        .map_err(|e| format!("raft settings: {e}"))
    }
}

/// The database inside a master's data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("raft.redb")
}

struct Proposal {
    commands: Vec<Command>,
    reply: oneshot::Sender<Result<Vec<Response>, StoreError>>,
}

/// The replicated cluster state on this master. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    raft: Raft,
    node_id: u64,
    shared: Arc<sm::Shared>,
    proposals: mpsc::UnboundedSender<Proposal>,
    leadership: watch::Receiver<Leadership>,
    net: net::Network,
    /// This master's incarnation and its peers'.
    lives: Arc<incarnation::Incarnations>,
    /// Set (with why) when the cluster tells this master it was removed.
    removed: Arc<watch::Sender<Option<String>>>,
    /// Seconds from a proposal to its commit and apply here.
    commit_seconds: prometheus_client::metrics::histogram::Histogram,
    /// How long a proposal may wait for its commit before its caller is
    /// told it is not committed (yet).
    commit_deadline: Duration,
}

/// The shortest wait for a commit; longer with a longer election timeout
/// (five of them: a leader cut off from the others, or one election).
const MIN_COMMIT_DEADLINE: Duration = Duration::from_secs(5);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("node_id", &self.node_id)
            .field("last_index", &self.last_index())
            .finish()
    }
}

impl Store {
    /// Opens (or creates) this master's raft state, loads the newest
    /// snapshot, starts the raft node, and on a first start forms the
    /// cluster from [`StoreConfig::bootstrap`].
    pub async fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let dir = config.data_dir.clone();
        let open_err = |why: String| StoreError::Open {
            path: dir.clone(),
            why,
        };
        if config.node_id == 0 {
            return Err(open_err("master ids start at 1".into()));
        }
        std::fs::create_dir_all(&dir).map_err(|e| open_err(e.to_string()))?;
        if dir.join("state.redb").exists() {
            return Err(open_err(
                "it holds state from a single-master Wasmos older than the replicated log; \
                 move it away and start with a fresh --data-dir"
                    .into(),
            ));
        }
        check_node_id(&dir, config.node_id).map_err(open_err)?;
        // No raft log: whatever the data dir still holds, this master has
        // no votes or entries of an earlier life, and is a new incarnation.
        let fresh = !db_path(&dir).exists();
        let lives = Arc::new(
            incarnation::Incarnations::open(&dir, config.node_id, fresh).map_err(open_err)?,
        );
        let raft_config = Arc::new(config.raft_config().map_err(open_err)?);
        let path = db_path(&dir);
        let db = tokio::task::spawn_blocking(move || Database::create(path))
            .await
            .map_err(|e| open_err(e.to_string()))?
            .map_err(|e| open_err(format!("{e} (is another master using this data dir?)")))?;
        let db = Arc::new(db);
        let state_machine = sm::StateMachine::open(db.clone()).map_err(|e| {
            open_err(format!(
                "the snapshot is damaged ({e}); restore the data dir from a backup, or remove this master and add it back under a new id"
            ))
        })?;
        let shared = state_machine.shared.clone();
        let log_store = log::LogStore::new(db, shared.log_bytes.clone());
        let network = net::Network::new(config.tls.clone(), config.bind_ip, lives.clone())
            .map_err(open_err)?;
        let raft = Raft::new(
            config.node_id,
            raft_config,
            network.clone(),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| open_err(format!("raft did not start: {e}")))?;

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| open_err(e.to_string()))?;
        if !initialized {
            match &config.bootstrap {
                Bootstrap::Members(members) => {
                    if !members.contains_key(&config.node_id) {
                        return Err(open_err(format!(
                            "the initial masters {:?} do not include this master's id {}",
                            members.keys().collect::<Vec<_>>(),
                            config.node_id
                        )));
                    }
                    let nodes: BTreeMap<u64, MasterNode> = members
                        .iter()
                        .map(|(id, addr)| (*id, MasterNode { addr: addr.clone() }))
                        .collect();
                    tracing::info!(members = ?members, "forming a new cluster");
                    if let Err(e) = raft.initialize(nodes).await {
                        tracing::debug!(error = %e, "initialize");
                    }
                }
                Bootstrap::Join => {
                    tracing::info!(
                        id = config.node_id,
                        addr = %config.addr,
                        "waiting to be added to a cluster: run `wasmos masters add {}={}` against it",
                        config.node_id,
                        config.addr
                    );
                }
            }
        } else {
            // A master that is the only voter elects itself now, not after
            // an election timeout (1-1.5 s by default): no one else can.
            let alone = {
                let m = raft.metrics().borrow_watched().clone();
                let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
                voters == [config.node_id]
            };
            if alone && let Err(e) = raft.trigger().elect(false).await {
                tracing::debug!(error = %e, "electing itself");
            }
        }

        let (tx, leadership) = watch::channel(Leadership::default());
        tokio::spawn(watch_leadership(raft.clone(), config.node_id, tx));
        let (proposals, rx) = mpsc::unbounded_channel();
        tokio::spawn(batcher(raft.clone(), rx));
        tokio::spawn(snapshot_policy(
            raft.clone(),
            shared.clone(),
            config.snapshot_every.max(1),
            config.snapshot_min_bytes,
        ));
        Ok(Store {
            raft,
            node_id: config.node_id,
            shared,
            proposals,
            leadership,
            net: network,
            lives,
            removed: Arc::new(watch::channel(None).0),
            commit_seconds: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16),
            ),
            commit_deadline: (config.election_timeout * 5).max(MIN_COMMIT_DEADLINE),
        })
    }

    /// This master's raft id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Commits `commands` (on the leader), applies them in order, and
    /// returns one response per command. Returns only once they are durable
    /// on a majority of masters and applied here.
    pub async fn propose(&self, commands: Vec<Command>) -> Result<Vec<Response>, StoreError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        let started = std::time::Instant::now();
        self.proposals
            .send(Proposal { commands, reply })
            .map_err(|_| StoreError::Stopped("the proposal queue is closed".into()))?;
        // A leader cut off from the others (which has not noticed yet)
        // would keep its callers waiting until the cut heals: they are told
        // instead, and the change may still commit later.
        let r = tokio::time::timeout(self.commit_deadline, rx)
            .await
            .map_err(|_| StoreError::NotCommitted(self.commit_deadline))?
            .map_err(|_| StoreError::Stopped("the proposal was dropped".into()))?;
        if r.is_ok() {
            self.commit_seconds.observe(started.elapsed().as_secs_f64());
        }
        r
    }

    /// Seconds from proposals to their commit (a handle on the live
    /// histogram, for `/metrics`).
    pub fn commit_seconds(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.commit_seconds.clone()
    }

    /// Proposes one command.
    pub async fn propose_one(&self, command: Command) -> Result<Response, StoreError> {
        let mut r = self.propose(vec![command]).await?;
        r.pop()
            .ok_or_else(|| StoreError::Stopped("no response".into()))
    }

    /// Reads this master's copy of the state. Keep the closure short:
    /// applying waits for it.
    #[track_caller]
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        // A panic while applying would poison the lock; the state itself is
        // still the last consistent one, so keep serving it.
        let state = self
            .shared
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let started = std::time::Instant::now();
        let r = f(&state);
        drop(state);
        let held = started.elapsed();
        if held > SLOW_READ {
            // Applying waits for it, and (the lock prefers writers) so
            // does every reader after that: the whole master stalls.
            tracing::warn!(
                ms = held.as_millis() as u64,
                at = %std::panic::Location::caller(),
                "a read of the state held its lock long; commits and other reads waited"
            );
        }
        r
    }

    /// The index of the last applied log entry.
    pub fn last_index(&self) -> u64 {
        self.shared.last_index.load(Ordering::Acquire)
    }

    /// Every entry applied here from now on, in order, without loss.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Arc<Applied>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        rx
    }

    /// Who leads, kept current.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// Confirms that this master still leads and has applied everything
    /// committed so far, so that what it reads next is the cluster's latest.
    /// A majority's acknowledgement younger than the leader lease (one
    /// election timeout, during which no other master can be elected)
    /// confirms it without a round trip; an older one (after a pause, or
    /// cut off) sends heartbeats first. `Unconfirmed` after `within`.
    pub async fn confirm_latest(&self, within: Duration) -> Result<(), StoreError> {
        let lease_or_heartbeat = openraft::LinearizerOption::new(None, true);
        match tokio::time::timeout(within, self.raft.ensure_linearizable(lease_or_heartbeat)).await
        {
            Ok(r) => r.map(|_| ()).map_err(|e| match e.forward_to_leader() {
                Some(f) => StoreError::NotLeader {
                    leader: forward_hint(f),
                },
                None => StoreError::NotLeader { leader: None },
            }),
            Err(_) => Err(StoreError::Unconfirmed(within)),
        }
    }

    /// Waits until this master, as leader, has applied everything committed
    /// before it was elected (so its state is the cluster's latest).
    pub async fn ensure_linearizable(&self) -> Result<(), StoreError> {
        self.raft
            .ensure_linearizable(ReadPolicy::ReadIndex)
            .await
            .map(|_| ())
            .map_err(|e| match e.forward_to_leader() {
                Some(f) => StoreError::NotLeader {
                    leader: forward_hint(f),
                },
                None => StoreError::NotLeader { leader: None },
            })
    }

    /// The masters in the cluster.
    pub fn members(&self) -> Vec<Member> {
        let m = self.raft.metrics().borrow_watched().clone();
        let cfg = m.membership_config.membership();
        let voters: BTreeSet<u64> = cfg.voter_ids().collect();
        let leading = m.state == ServerState::Leader;
        cfg.nodes()
            .map(|(id, n)| {
                let me = *id == m.id;
                let matched = if me && leading {
                    m.last_log_index
                } else {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(id).cloned().flatten())
                        .map(|l| l.index)
                };
                let last_ack_ms = if me && leading {
                    Some(0)
                } else {
                    m.heartbeat
                        .as_ref()
                        .and_then(|h| h.get(id).cloned().flatten())
                        .map(|at| openraft::Instant::elapsed(&*at).as_millis() as u64)
                };
                Member {
                    id: *id,
                    addr: n.addr.clone(),
                    voter: voters.contains(id),
                    matched,
                    last_ack_ms,
                }
            })
            .collect()
    }

    /// A summary of this master's raft progress, for operators.
    pub fn raft_status(&self) -> serde_json::Value {
        let m = self.raft.metrics().borrow_watched().clone();
        serde_json::json!({
            "id": m.id,
            "state": format!("{:?}", m.state),
            "term": m.current_term,
            "leader": m.current_leader,
            "last_log_index": m.last_log_index,
            "committed": m.cluster_committed.as_ref().map(|l| l.index),
            "applied": m.last_applied.as_ref().map(|l| l.index),
            "snapshot": m.snapshot.as_ref().map(|l| l.index),
        })
    }

    /// Adds a master: it first catches up as a learner, then becomes a
    /// voter. Ids of masters that were removed are refused.
    pub async fn add_member(
        &self,
        id: u64,
        addr: &str,
        catch_up: Duration,
    ) -> Result<(), StoreError> {
        if id == 0 {
            return Err(StoreError::Membership("master ids start at 1".into()));
        }
        // A leader just elected has not committed the membership it leads
        // with until its first entry commits; openraft refuses changes
        // until then.
        self.ensure_linearizable().await?;
        if self.read(|s| s.retired_masters.contains(&id)) {
            return Err(StoreError::Membership(format!(
                "master id {id} belonged to a master that was removed; ids are never reused, pick a new one"
            )));
        }
        if let Some(m) = self.members().into_iter().find(|m| m.id == id) {
            if m.voter {
                return Err(StoreError::Membership(format!(
                    "master {id} is already a member (at {})",
                    m.addr
                )));
            }
            if m.addr != addr {
                return Err(StoreError::Membership(format!(
                    "master {id} is being added at {}, not {addr}; remove it first",
                    m.addr
                )));
            }
        }
        let node = MasterNode {
            addr: addr.to_string(),
        };
        let added = self
            .raft
            .add_learner(id, node, false)
            .await
            .map_err(|e| self.membership_error(e))?;
        // Promote it only once it holds the log up to its own addition:
        // a voter that cannot keep up would stall every commit.
        let target = added.log_id.index;
        let mut metrics = self.raft.metrics();
        let caught_up = async {
            loop {
                let matched = metrics
                    .borrow_watched()
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index);
                if matched.is_some_and(|m| m >= target) {
                    return true;
                }
                if metrics.changed().await.is_err() {
                    return false;
                }
            }
        };
        if !tokio::time::timeout(catch_up, caught_up)
            .await
            .unwrap_or(false)
        {
            return Err(StoreError::Membership(format!(
                "master {id} at {addr} did not catch up within {catch_up:?}; is it running (`wasmos master --id {id} --join ...`) and reachable from the leader? It stays a learner until added again or removed"
            )));
        }
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| self.membership_error(e))?;
        Ok(())
    }

    /// Removes a master from the cluster for good; its id is retired.
    pub async fn remove_member(&self, id: u64) -> Result<(), StoreError> {
        self.ensure_linearizable().await?;
        let members = self.members();
        let Some(m) = members.iter().find(|m| m.id == id) else {
            return Err(StoreError::Membership(format!(
                "master {id} is not a member; `wasmos masters list` shows who is"
            )));
        };
        let addr = m.addr.clone();
        let change = if m.voter {
            if members.iter().filter(|m| m.voter).count() == 1 {
                return Err(StoreError::Membership(
                    "cannot remove the only voting master".into(),
                ));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| self.membership_error(e))?;
        // `members()` reads raft's metrics, published a moment after the
        // change commits: answer once they no longer list the master, so
        // that a `masters list` right after a removal does not show it.
        let _ = self
            .raft
            .wait(Some(Duration::from_secs(5)))
            .metrics(
                |m| {
                    !m.membership_config
                        .membership()
                        .nodes()
                        .any(|(n, _)| *n == id)
                },
                format!("master {id} gone from the membership"),
            )
            .await;
        // Tell it, so that it stops instead of lingering as a stranger.
        let notice = net::RemovedNotice {
            id,
            by: self.node_id,
        };
        let net = self.net.clone();
        tokio::spawn(async move {
            if let Err(e) = net.notify_removed(&addr, &notice).await {
                tracing::info!(master = id, error = %e, "could not tell the removed master");
            }
        });
        Ok(())
    }

    /// Resolves (with why) once the cluster has told this master that it
    /// was removed; it should then stop.
    pub async fn removed(&self) -> String {
        let mut rx = self.removed.subscribe();
        loop {
            if let Some(why) = rx.borrow_and_update().clone() {
                return why;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    fn membership_error<E>(&self, e: RaftError<TypeConfig, E>) -> StoreError
    where
        E: std::error::Error + openraft::TryAsRef<openraft::errors::ForwardToLeader<TypeConfig>>,
    {
        match e.forward_to_leader() {
            Some(f) => StoreError::NotLeader {
                leader: forward_hint(f),
            },
            None => StoreError::Membership(e.to_string()),
        }
    }

    /// What this master's raft requests and answers carry in
    /// [`incarnation::HEADER`].
    pub fn incarnation(&self) -> &str {
        self.lives.me()
    }

    /// Handles a raft RPC from a peer (`op` is the last path segment under
    /// [`net::RAFT_PREFIX`]) whose body is in `codec`; returns the answer in
    /// the same codec. `from` is the request's [`incarnation::HEADER`]: a
    /// peer back under its old id with a new data dir is refused.
    /// `expected` its [`incarnation::EXPECTED`]: a sender that knew this
    /// master with another data dir is refused too (this master lost its
    /// data).
    pub async fn handle_rpc(
        &self,
        op: &str,
        codec: Codec,
        body: &[u8],
        from: Option<&str>,
        expected: Option<&str>,
    ) -> Result<Vec<u8>, String> {
        if let Err(why) = self.lives.check(from) {
            if self.lives.first_refusal(from.unwrap_or_default()) {
                tracing::error!("refusing raft traffic: {why}");
            }
            return Err(why);
        }
        if let Err(why) = self.lives.check_expected(expected) {
            if self.lives.first_refusal(expected.unwrap_or_default()) {
                tracing::error!("refusing raft traffic: {why}");
            }
            return Err(why);
        }
        fn parse<T: serde::de::DeserializeOwned>(codec: Codec, body: &[u8]) -> Result<T, String> {
            codec
                .decode(body)
                .map_err(|e| format!("{}: {e}", net::MALFORMED))
        }
        match op {
            "append" => codec.encode(&self.raft.append_entries(parse(codec, body)?).await),
            "vote" => codec.encode(&self.raft.vote(parse(codec, body)?).await),
            "pre-vote" => codec.encode(&self.raft.pre_vote(parse(codec, body)?).await),
            "transfer-leader" => {
                let r = self.raft.handle_transfer_leader(parse(codec, body)?).await;
                codec.encode(&r.map_err(RaftError::<TypeConfig>::Fatal))
            }
            "snapshot" => {
                let nl = body
                    .iter()
                    .position(|b| *b == b'\n')
                    .ok_or("a snapshot request needs a header line")?;
                // The header line is JSON whatever the codec.
                let header: net::SnapshotHeader = parse(Codec::Json, &body[..nl])?;
                let snapshot = types::Snapshot {
                    meta: header.meta,
                    snapshot: types::SnapshotData::new(body[nl + 1..].to_vec()),
                };
                let r = self.raft.install_full_snapshot(header.vote, snapshot).await;
                codec.encode(&r.map_err(RaftError::<TypeConfig>::Fatal))
            }
            "removed" => {
                let n: net::RemovedNotice = parse(codec, body)?;
                if n.id != self.node_id {
                    return Err(format!("this is master {}, not {}", self.node_id, n.id));
                }
                let why = format!(
                    "master {} removed this master (id {}) from the cluster",
                    n.by, n.id
                );
                tracing::error!("{why}");
                self.removed.send_replace(Some(why));
                codec.encode(&serde_json::json!({}))
            }
            other => Err(format!("no raft operation {other:?}")),
        }
    }

    /// Takes a snapshot now (operators, tests).
    pub async fn snapshot_now(&self) -> Result<(), StoreError> {
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| StoreError::Stopped(e.to_string()))
    }

    /// Stops the raft node; the database is closed once it has stopped.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not stop cleanly");
        }
    }
}

fn forward_hint(f: &openraft::errors::ForwardToLeader<TypeConfig>) -> Option<(u64, String)> {
    match (&f.leader_id, &f.leader_node) {
        (Some(id), Some(node)) => Some((*id, node.addr.clone())),
        _ => None,
    }
}

/// Keeps the data dir bound to one master id.
fn check_node_id(dir: &Path, id: u64) -> Result<(), String> {
    let path = dir.join("master-id");
    match std::fs::read_to_string(&path) {
        Ok(s) => match s.trim().parse::<u64>() {
            Ok(found) if found == id => Ok(()),
            Ok(found) => Err(format!(
                "it belongs to master {found}; start it with --id {found}, or use another data dir for master {id}"
            )),
            Err(_) => Err(format!(
                "{} is from an older Wasmos; move the data dir away and start fresh",
                path.display()
            )),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, format!("{id}\n"))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

async fn watch_leadership(raft: Raft, me: u64, tx: watch::Sender<Leadership>) {
    let mut rx = raft.metrics();
    loop {
        let m = rx.borrow_watched().clone();
        let leader = m.current_leader.and_then(|id| {
            m.membership_config
                .membership()
                .get_node(&id)
                .map(|n| (id, n.addr.clone()))
        });
        let now = Leadership {
            term: m.current_term,
            is_me: m.state == ServerState::Leader && m.current_leader == Some(me),
            leader,
        };
        tx.send_if_modified(|l| {
            if *l == now {
                false
            } else {
                *l = now;
                true
            }
        });
        if m.running_state.is_err() || rx.changed().await.is_err() {
            tx.send_modify(|l| {
                l.is_me = false;
                l.leader = None;
            });
            return;
        }
    }
}

/// Packs queued proposals into raft entries, keeping up to
/// [`MAX_IN_FLIGHT`] entries in flight.
/// Whether to snapshot, `entries` and `bytes` of log after one of `last`
/// bytes (see [`StoreConfig::snapshot_every`]).
fn snapshot_due(entries: u64, bytes: u64, last: u64, every: u64, min_bytes: u64) -> bool {
    entries > 0 && (entries >= every || bytes >= last.max(min_bytes))
}

/// When to snapshot: once the log since the last snapshot holds as many
/// bytes as that snapshot did (at least `min_bytes`), or `every` entries.
/// By entries alone (every 5,000 once), a master of 100,000 tasks rewrote
/// its whole state every few seconds while they launched.
async fn snapshot_policy(raft: Raft, shared: Arc<sm::Shared>, every: u64, min_bytes: u64) {
    let metrics = raft.metrics();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (entries, stopped) = {
            let m = metrics.borrow_watched();
            let applied = m.last_applied.as_ref().map_or(0, |l| l.index);
            let snapshot = m.snapshot.as_ref().map_or(0, |l| l.index);
            (applied.saturating_sub(snapshot), m.running_state.is_err())
        };
        if stopped {
            return;
        }
        let bytes = shared.log_bytes.load(Ordering::Relaxed);
        let last = shared.snapshot_bytes.load(Ordering::Relaxed);
        if snapshot_due(entries, bytes, last, every, min_bytes) {
            tracing::debug!(entries, bytes, "snapshotting");
            // Counted again from the snapshot on (the builder resets it).
            shared.log_bytes.store(0, Ordering::Relaxed);
            let before = metrics.borrow_watched().snapshot.as_ref().map(|l| l.index);
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
            // One at a time: wait until it is made (or a minute passed).
            let _ = raft
                .wait(Some(Duration::from_secs(60)))
                .metrics(
                    |m| m.snapshot.as_ref().map(|l| l.index) != before,
                    "the snapshot",
                )
                .await;
        }
    }
}

async fn batcher(raft: Raft, mut rx: mpsc::UnboundedReceiver<Proposal>) {
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_PROPOSALS {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (commands, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.commands, p.reply)).unzip();
        let (responder, answer) = openraft::impls::ProgressResponder::complete_only();
        if let Err(fatal) = raft
            .client_write_ff(Batch(Arc::new(commands)), Some(responder))
            .await
        {
            let e = StoreError::Stopped(fatal.to_string());
            for r in replies {
                let _ = r.send(Err(e.clone()));
            }
            continue;
        }
        tokio::spawn(async move {
            let _permit = permit;
            let result: Result<
                Result<ClientWriteResponse<TypeConfig>, ClientWriteError<TypeConfig>>,
                _,
            > = answer.await;
            match result {
                Ok(Ok(resp)) => {
                    for (reply, responses) in replies.into_iter().zip(resp.data.0) {
                        let _ = reply.send(Ok(responses));
                    }
                }
                Ok(Err(e)) => {
                    let e = match e {
                        ClientWriteError::ForwardToLeader(f) => StoreError::NotLeader {
                            leader: forward_hint(&f),
                        },
                        ClientWriteError::LogEntryDiscarded(f) => StoreError::Indeterminate {
                            leader: forward_hint(&f),
                        },
                        other => StoreError::Membership(other.to_string()),
                    };
                    for r in replies {
                        let _ = r.send(Err(e.clone()));
                    }
                }
                Err(_) => {
                    for r in replies {
                        let _ = r.send(Err(StoreError::Stopped("raft stopped".into())));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests;
