//! Which life of each master a peer is talking to.
//!
//! A master's data dir gets a random incarnation when it is made. Every raft
//! request and answer carries `<id>:<incarnation>` in [`HEADER`]; each master
//! remembers (in `<data dir>/peer-incarnations.json`) the first incarnation
//! it saw for every id, and refuses a request from, or ignores an answer of,
//! the same id with another one. A master whose data was lost forgot the
//! votes it cast and the entries it acknowledged: were it to take part under
//! its old id, it could vote twice in one term or help elect a leader that
//! lacks a committed entry. Refused by its peers, it must be removed and added
//! back under a new id (ids are never reused).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The header raft requests and answers carry: `<master id>:<incarnation>`.
pub const HEADER: &str = "x-wasmos-master";
/// The header a raft request carries when its sender knows the receiver:
/// the receiver's `<master id>:<incarnation>` as the sender first saw it.
pub const EXPECTED: &str = "x-wasmos-expected-master";

const OWN_FILE: &str = "incarnation";
const PEERS_FILE: &str = "peer-incarnations.json";

#[derive(Debug)]
pub struct Incarnations {
    /// This master's `<id>:<incarnation>`.
    me: String,
    id: u64,
    peers: Mutex<BTreeMap<u64, String>>,
    path: PathBuf,
    /// Refused `<id>:<incarnation>`s already logged.
    told: Mutex<std::collections::HashSet<String>>,
}

impl Incarnations {
    /// This master's incarnation and the peers' it has seen. A new one is
    /// made on the data dir's first use, and whenever it is `fresh` (its
    /// raft log is gone, whatever else survived).
    pub fn open(dir: &Path, id: u64, fresh: bool) -> Result<Incarnations, String> {
        let own = dir.join(OWN_FILE);
        let read = if fresh {
            Err(std::io::ErrorKind::NotFound.into())
        } else {
            std::fs::read_to_string(&own)
        };
        let me = match read {
            Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
            Ok(_) => return Err(format!("{} is empty; move it away", own.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let made = uuid::Uuid::new_v4().simple().to_string();
                write_synced(&own, made.as_bytes())?;
                made
            }
            Err(e) => return Err(format!("cannot read {}: {e}", own.display())),
        };
        let path = dir.join(PEERS_FILE);
        let peers = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| format!("{} is damaged ({e}); move it away", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(Incarnations {
            me: format!("{id}:{me}"),
            id,
            peers: Mutex::new(peers),
            path,
            told: Default::default(),
        })
    }

    /// True the first time `header` is refused (to log it once).
    pub fn first_refusal(&self, header: &str) -> bool {
        self.told
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(header.to_string())
    }

    /// What this master sends in [`EXPECTED`] to master `id`.
    pub fn known(&self, id: u64) -> Option<String> {
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map(|life| format!("{id}:{life}"))
    }

    /// Checks an answer's [`HEADER`] from the master the request went to:
    /// another id means its address now serves another master.
    pub fn check_answer(&self, target: u64, header: Option<&str>) -> Result<(), String> {
        if let Some(id) = header.and_then(|h| h.split_once(':')).map(|(id, _)| id)
            && id != target.to_string()
        {
            return Err(format!(
                "the address of master {target} answered as master {id}: check the masters' --advertise addresses (`wasmos masters list`)"
            ));
        }
        self.check(header)
    }

    /// Checks what a peer knows this master as ([`EXPECTED`]): another
    /// incarnation means this master's own data was lost since.
    pub fn check_expected(&self, expected: Option<&str>) -> Result<(), String> {
        let my_id = self.id.to_string();
        match expected {
            Some(e) if e.split_once(':').map(|(id, _)| id) != Some(my_id.as_str()) => Err(format!(
                "a peer sent this master (id {my_id}) a request meant for {e:?}: check the masters' --advertise addresses (`wasmos masters list`)"
            )),
            Some(e) if e != self.me => Err(format!(
                "the cluster knew master {id} with another data dir: this master's data was lost (it forgot the votes it cast and the entries it acknowledged), so it may not take part under id {id}; remove it (`wasmos masters remove {id}`) and add it back under a new id (`wasmos masters add N=URL`, then start it with --id N --join and an empty data dir)",
                id = self.id
            )),
            _ => Ok(()),
        }
    }

    /// What this master sends in [`HEADER`].
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Checks a peer's `<id>:<incarnation>`: the first one seen for an id
    /// is remembered (on disk before it is trusted); another one for the
    /// same id is refused with what to do. A missing header (a master older
    /// than this check) passes.
    pub fn check(&self, header: Option<&str>) -> Result<(), String> {
        let Some(h) = header else { return Ok(()) };
        let (id, life) = h
            .split_once(':')
            .and_then(|(id, life)| Some((id.parse::<u64>().ok()?, life)))
            .ok_or_else(|| format!("{HEADER} {h:?} is not <master id>:<incarnation>"))?;
        if id == self.id {
            // A leader tells itself when it removes itself.
            if h == self.me {
                return Ok(());
            }
            return Err(format!(
                "a master presents this master's own id {id}: two masters run with --id {id}"
            ));
        }
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        match peers.get(&id) {
            Some(known) if known == life => Ok(()),
            Some(_) => Err(format!(
                "master {id} came back with a new data dir (its earlier data was lost): it forgot the votes it cast and the entries it acknowledged, so it may not take part under id {id}; remove it (`wasmos masters remove {id}`) and add it back under a new id (`wasmos masters add N=URL`, then start it with --id N --join)"
            )),
            None => {
                peers.insert(id, life.to_string());
                let bytes = serde_json::to_vec(&*peers).map_err(|e| e.to_string())?;
                if let Err(e) = write_synced(&self.path, &bytes) {
                    peers.remove(&id);
                    return Err(e);
                }
                Ok(())
            }
        }
    }
}

/// Writes `path` whole and durably.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    wasmos_core::durable::write(path, bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_known_by_its_first_incarnation_even_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let one = Incarnations::open(dir.path(), 1, false).unwrap();
        assert!(one.me().starts_with("1:"));
        assert_eq!(one.check(Some("2:aaa")), Ok(()));
        assert_eq!(one.check(Some("2:aaa")), Ok(()));
        assert_eq!(one.check(None), Ok(()), "an older master sends none");
        let refused = one.check(Some("2:bbb")).unwrap_err();
        assert!(refused.contains("masters remove 2"), "{refused}");
        assert!(one.check(Some("1:ccc")).is_err(), "our id, another master");
        assert_eq!(one.check(Some(one.me())), Ok(()), "itself");
        assert!(one.check(Some("garbage")).is_err());
        // Restarted: the same incarnation, and the peers it knew.
        let again = Incarnations::open(dir.path(), 1, false).unwrap();
        assert_eq!(again.me(), one.me());
        assert!(again.check(Some("2:bbb")).is_err());
        // Its raft log lost, the rest kept: a new incarnation.
        let relived = Incarnations::open(dir.path(), 1, true).unwrap();
        assert_ne!(relived.me(), one.me());
        // Wiped: a new incarnation, which a peer that knew the old one
        // tells it about.
        let other = tempfile::tempdir().unwrap();
        let wiped = Incarnations::open(other.path(), 1, false).unwrap();
        assert_ne!(wiped.me(), one.me());
        let dir_two = tempfile::tempdir().unwrap();
        let two = Incarnations::open(dir_two.path(), 2, false).unwrap();
        assert_eq!(two.check(Some(one.me())), Ok(()));
        let told = wiped.check_expected(two.known(1).as_deref()).unwrap_err();
        assert!(told.contains("data was lost"), "{told}");
        assert_eq!(one.check_expected(two.known(1).as_deref()), Ok(()));
        assert_eq!(one.check_expected(None), Ok(()));
        assert!(
            one.check_expected(Some("3:xyz"))
                .unwrap_err()
                .contains("meant for")
        );
        // An answer from another id than the one asked is not counted.
        assert!(two.check_answer(3, Some(one.me())).is_err());
        assert_eq!(two.check_answer(1, Some(one.me())), Ok(()));
    }
}
