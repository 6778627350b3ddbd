use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use redb::Database;
use wasmos_state::LeaderInfo;

use crate::types::{Entry, Vote};

use super::*;

fn term(n: u64) -> Command {
    Command::BeginTerm {
        term: n,
        leader: LeaderInfo {
            master_id: format!("m{n}"),
            address: "http://x".into(),
            term: n,
            plain_address: None,
        },
        cluster_id: "c".into(),
    }
}

fn kv(i: u64) -> Command {
    Command::KvSet {
        framework_id: "f".parse().unwrap(),
        key: format!("k{i}"),
        value: wasmos_core::bytes::Blob(vec![1]),
    }
}

/// openraft's own conformance suite for log storage and state machine.
struct Builder;

impl StoreBuilder<TypeConfig, log::LogStore, sm::StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, log::LogStore, sm::StateMachine), StorageError<TypeConfig>>
    {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("raft.redb")).unwrap());
        let sm = sm::StateMachine::open(db.clone()).unwrap();
        let appended = sm.shared.log_bytes.clone();
        Ok((dir, log::LogStore::new(db, appended), sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_passes_the_openraft_suite() {
    Suite::test_all(Builder).await.unwrap();
}

async fn open_single(dir: &std::path::Path, snapshot_every: u64) -> Store {
    let mut cfg = StoreConfig::single(dir, "http://127.0.0.1:1");
    cfg.snapshot_every = snapshot_every;
    let deadline = Instant::now() + Duration::from_secs(10);
    // Reopening waits for the previous node to release the database.
    let store = loop {
        match Store::open(cfg.clone()).await {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let mut l = store.leadership();
    tokio::time::timeout(Duration::from_secs(10), l.wait_for(|l| l.is_me))
        .await
        .expect("a single master elects itself")
        .unwrap();
    store
}

#[tokio::test]
async fn committed_commands_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_single(dir.path(), 5000).await;
        assert_eq!(store.propose_one(term(1)).await.unwrap(), Response::Ok);
        assert_eq!(store.propose_one(term(2)).await.unwrap(), Response::Ok);
        store.shutdown().await;
    }
    let store = open_single(dir.path(), 5000).await;
    store.ensure_linearizable().await.unwrap();
    assert_eq!(store.read(|s| s.term), 2);
}

/// A data directory written by a master from before MessagePack (JSON log
/// records, vote and committed index) is read as it is.
#[tokio::test]
async fn a_log_written_as_json_by_an_older_master_is_replayed() {
    use redb::{ReadableDatabase, ReadableTable};
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_single(dir.path(), 5000).await;
        for n in 1..=5 {
            store.propose_one(kv(n)).await.unwrap();
        }
        store.shutdown().await;
    }
    {
        let db = Database::create(db_path(dir.path())).unwrap();
        let entries: Vec<(u64, Entry)> = {
            let txn = db.begin_read().unwrap();
            let t = txn.open_table(log::LOG).unwrap();
            t.iter()
                .unwrap()
                .map(|r| {
                    let (k, v) = r.unwrap();
                    (k.value(), codec::decode(v.value()).unwrap())
                })
                .collect()
        };
        assert!(entries.len() >= 5, "the log holds the writes");
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(log::LOG).unwrap();
            for (i, e) in &entries {
                t.insert(*i, serde_json::to_vec(e).unwrap().as_slice())
                    .unwrap();
            }
            let mut meta = txn.open_table(log::META).unwrap();
            let vote: Vote = codec::decode(meta.get("vote").unwrap().unwrap().value()).unwrap();
            meta.insert("vote", serde_json::to_vec(&vote).unwrap().as_slice())
                .unwrap();
            meta.insert("committed", b"null".as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = open_single(dir.path(), 5000).await;
    store.ensure_linearizable().await.unwrap();
    assert_eq!(store.read(|s| s.kv["f"].len()), 5);
    // New records are MessagePack again, beside the old JSON ones.
    store.propose_one(kv(6)).await.unwrap();
    assert_eq!(store.read(|s| s.kv["f"].len()), 6);
}

#[tokio::test]
async fn snapshots_compact_the_log_and_a_restart_replays_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_single(dir.path(), 3).await;
        for n in 1..=20 {
            store.propose_one(kv(n)).await.unwrap();
        }
        store.snapshot_now().await.unwrap();
        for n in 21..=25 {
            store.propose_one(kv(n)).await.unwrap();
        }
        store.shutdown().await;
    }
    let store = open_single(dir.path(), 3).await;
    store.ensure_linearizable().await.unwrap();
    assert_eq!(store.read(|s| s.kv["f"].len()), 25);
}

/// Snapshots follow the bytes written: the first once the log holds
/// `snapshot_min_bytes`, the next only once it holds as much again as that
/// snapshot, however many entries that takes (up to `snapshot_every`).
#[test]
fn a_snapshot_is_due_once_the_log_outweighs_the_last_one() {
    let (every, min) = (100_000, 64 << 10);
    let due = |entries, bytes, last| snapshot_due(entries, bytes, last, every, min);
    assert!(!due(0, 1 << 30, 0), "nothing new since the last one");
    assert!(!due(5, 40 << 10, 0), "under snapshot_min_bytes");
    assert!(due(10, 80 << 10, 0));
    assert!(
        !due(5_000, 50 << 10, 80 << 10),
        "under the last snapshot's size"
    );
    assert!(due(5_000, 90 << 10, 80 << 10));
    assert!(!due(99_999, 1, 1 << 30));
    assert!(due(100_000, 1, 1 << 30), "snapshot_every entries");
}

/// The policy runs: a store whose log outgrows `snapshot_min_bytes` makes
/// a snapshot by itself and counts the log from it on.
#[tokio::test]
async fn a_store_snapshots_by_itself_once_its_log_is_big_enough() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StoreConfig::single(dir.path(), "http://127.0.0.1:1");
    cfg.snapshot_min_bytes = 64 << 10;
    let store = Store::open(cfg).await.unwrap();
    let mut l = store.leadership();
    tokio::time::timeout(Duration::from_secs(10), l.wait_for(|l| l.is_me))
        .await
        .expect("a single master elects itself")
        .unwrap();
    for i in 0..10 {
        let big = Command::KvSet {
            framework_id: "f".parse().unwrap(),
            key: format!("big{i}"),
            value: wasmos_core::bytes::Blob(vec![7; 8 << 10]),
        };
        store.propose_one(big).await.unwrap();
    }
    store
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.snapshot.is_some(), "a snapshot after 80 KiB of log")
        .await
        .expect("no snapshot after 80 KiB of log within 10 s");
    let size = store.shared.snapshot_bytes.load(Ordering::Relaxed);
    assert!(
        size >= 80 << 10,
        "the snapshot holds the values: {size} bytes"
    );
    assert!(
        store.shared.log_bytes.load(Ordering::Relaxed) < size,
        "the log is counted from the snapshot on"
    );
}

#[tokio::test]
async fn concurrent_proposals_are_packed_and_all_applied() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_single(dir.path(), 5000).await;
    let mut sub = store.subscribe();
    let before = store.last_index();
    let mut handles = Vec::new();
    for i in 0..500u64 {
        let s = store.clone();
        handles.push(tokio::spawn(async move { s.propose_one(kv(i)).await }));
    }
    for h in handles {
        assert_eq!(h.await.unwrap().unwrap(), Response::Ok);
    }
    assert_eq!(store.read(|s| s.kv["f"].len()), 500);
    let mut seen = 0;
    let mut entries = 0;
    while seen < 500 {
        let a = sub.recv().await.unwrap();
        seen += a.commands().count();
        entries += 1;
    }
    assert_eq!(seen, 500);
    // Batching: fewer raft entries than proposals.
    assert!(entries < 500, "{entries} entries for 500 proposals");
    assert!(store.last_index() > before);
}

#[tokio::test]
async fn a_data_dir_stays_bound_to_its_master_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_single(dir.path(), 5000).await;
    store.shutdown().await;
    let mut cfg = StoreConfig::single(dir.path(), "http://127.0.0.1:1");
    cfg.node_id = 2;
    let err = Store::open(cfg).await.unwrap_err().to_string();
    assert!(err.contains("belongs to master 1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_ids_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_single(dir.path(), 5000).await;
    // A learner that never answers: adding it times out, and it stays a
    // learner until removed.
    let err = store
        .add_member(2, "http://127.0.0.1:9", Duration::from_millis(300))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("did not catch up"), "{err}");
    assert!(store.members().iter().any(|m| m.id == 2 && !m.voter));
    store.remove_member(2).await.unwrap();
    assert!(store.members().iter().all(|m| m.id != 2));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !store.read(|s| s.retired_masters.contains(&2)) {
        assert!(Instant::now() < deadline, "id 2 not retired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = store
        .add_member(2, "http://127.0.0.1:9", Duration::from_millis(300))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("never reused"), "{err}");
    let err = store.remove_member(1).await.unwrap_err().to_string();
    assert!(err.contains("only voting master"), "{err}");
}

/// Stands in for a master of an older version: it answers MessagePack
/// with a 400 as they did, and JSON by handing it to a real store. Returns
/// its address and the content types it was sent, in order.
async fn older_master(store: Store) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let (store, log) = (store.clone(), log.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| l.strip_prefix(&format!("{name}:")))
                            .map(|v| v.trim().to_string())
                    };
                    let len: usize = header("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        let mut chunk = [0u8; 4096];
                        let n = tcp.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let op = head
                        .split(' ')
                        .nth(1)
                        .and_then(|p| p.rsplit('/').next())
                        .unwrap_or("")
                        .to_string();
                    let body: Vec<u8> = buf.drain(..end + 4 + len).skip(end + 4).collect();
                    let content_type = header("content-type").unwrap_or_default();
                    log.lock().unwrap().push(content_type.clone());
                    let (status, answer) = if content_type == "application/json" {
                        match store.handle_rpc(&op, Codec::Json, &body, None, None).await {
                            Ok(a) => ("200 OK", a),
                            Err(e) => ("400 Bad Request", e.into_bytes()),
                        }
                    } else {
                        (
                            "400 Bad Request",
                            b"malformed raft request: expected value at line 1 column 1".to_vec(),
                        )
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        answer.len()
                    );
                    if tcp.write_all(reply.as_bytes()).await.is_err()
                        || tcp.write_all(&answer).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn a_master_that_reads_only_json_is_sent_json() {
    use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
    let dir = tempfile::tempdir().unwrap();
    let store = open_single(dir.path(), 5000).await;
    let (addr, seen) = older_master(store.clone()).await;
    let other = tempfile::tempdir().unwrap();
    let lives = std::sync::Arc::new(
        crate::incarnation::Incarnations::open(other.path(), 9, false).unwrap(),
    );
    let mut net = net::Network::new(None, None, lives).unwrap();
    let mut peer = net.new_client(1, &MasterNode { addr }).await;
    let vote = Vote::new(0, 9);
    let req = openraft::raft::VoteRequest::<TypeConfig>::new(vote, None);
    let resp = peer
        .vote(req.clone(), RPCOption::new(Duration::from_secs(5)))
        .await
        .expect("the older master answers once it is sent JSON");
    assert!(
        !resp.is_granted_to(&vote),
        "a stale candidate is refused: {resp:?}"
    );
    // The next message goes as JSON straight away.
    peer.vote(req, RPCOption::new(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "application/msgpack",
            "application/json",
            "application/json"
        ]
    );
    store.shutdown().await;
}
