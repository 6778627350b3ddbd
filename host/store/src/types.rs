//! The openraft type configuration: what a log entry carries (a batch of
//! proposals, each a list of commands applied atomically), what applying
//! one returns, and what a master is to the others (its base URL).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wasmos_state::{Command, Response};

/// Several proposals committed as one log entry (group commit). Shared:
/// the log keeps its newest entries in memory, and replication and
/// applying read them from there without copying or decoding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch(pub Arc<Vec<Vec<Command>>>);

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch of {} proposals", self.0.len())
    }
}

/// One list of responses per proposal of a [`Batch`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Replies(pub Vec<Vec<Response>>);

/// A master as its peers know it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MasterNode {
    /// The base URL of its API (raft traffic goes to `<addr>/raft/v1/...`).
    pub addr: String,
}

impl fmt::Display for MasterNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

openraft::declare_raft_types!(
    /// Wasmos' raft: standard Raft leader ids (one leader per term), so a
    /// term alone fences a deposed leader's commands at the agents.
    pub TypeConfig:
        D = Batch,
        R = Replies,
        NodeId = u64,
        Node = MasterNode,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type SnapshotData = std::io::Cursor<Vec<u8>>;
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
