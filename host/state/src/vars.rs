//! Cluster variables: small documents of string items under a path, for
//! configuration that tasks and operators share (as Nomad's variables or
//! etcd's keys). Each write bumps a cluster-wide index; a write may be
//! conditional on the index it last saw (check-and-set).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The longest variable path.
pub const MAX_VAR_PATH: usize = 256;
/// The most bytes of items (keys and values) in one variable.
pub const MAX_VAR_BYTES: usize = 64 * 1024;
/// The most variables a cluster holds.
pub const MAX_VARS: usize = 100_000;

/// One variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Var {
    pub items: BTreeMap<String, String>,
    /// The index of the write that created it.
    pub create_index: u64,
    /// The index of its last write.
    pub modify_index: u64,
}

/// Checks a variable path: segments of letters, digits, `.`, `_`, `-`
/// separated by `/`; no empty segment, no `.` or `..` segment.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > MAX_VAR_PATH {
        return Err(format!(
            "a variable path has 1 to {MAX_VAR_PATH} characters"
        ));
    }
    for seg in path.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(format!(
                "variable path {path:?} has an empty, `.` or `..` segment"
            ));
        }
        if let Some(c) = seg
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "variable path {path:?} has {c:?}; use letters, digits, `.`, `_`, `-` and `/`"
            ));
        }
    }
    Ok(())
}

/// Checks a variable's items.
pub fn check_items(items: &BTreeMap<String, String>) -> Result<(), String> {
    if items.is_empty() {
        return Err("a variable needs at least one item".into());
    }
    if items.keys().any(|k| k.is_empty()) {
        return Err("item keys must not be empty".into());
    }
    let bytes: usize = items.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_VAR_BYTES {
        return Err(format!(
            "the items take {bytes} bytes; a variable holds at most {MAX_VAR_BYTES}"
        ));
    }
    Ok(())
}

/// Whether a check-and-set condition holds: `cas` 0 means "must not
/// exist"; otherwise it must equal the variable's modify index.
pub fn cas_holds(current: Option<&Var>, cas: Option<u64>) -> Result<(), String> {
    match (cas, current) {
        (None, _) => Ok(()),
        (Some(0), None) => Ok(()),
        (Some(0), Some(v)) => Err(format!(
            "the variable exists (modify index {}); cas=0 writes only new ones",
            v.modify_index
        )),
        (Some(i), Some(v)) if v.modify_index == i => Ok(()),
        (Some(i), Some(v)) => Err(format!(
            "the variable changed: its modify index is {}, not {i}",
            v.modify_index
        )),
        (Some(i), None) => Err(format!("the variable does not exist (cas={i})")),
    }
}
