//! Roles' reservations and persistent volumes.
//!
//! Resources on an agent are either unreserved (offered to any role) or
//! reserved for one role (offered only to frameworks of that role or a
//! role nested below it). A reservation is static (the agent's
//! `--resources "cpus(ops):2"`) or dynamic (made by a framework's RESERVE
//! or an operator). A persistent volume is a directory on the agent, taken
//! from its role's reserved disk, that outlives the tasks using it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::resources::{ResourceError, Resources, Scalar};

/// The longest role name accepted.
pub const MAX_ROLE: usize = 255;
/// The longest persistence id accepted.
pub const MAX_VOLUME_ID: usize = 128;

/// Reserved resources by role.
pub type RoleResources = BTreeMap<String, Resources>;

/// Checks a role name as Mesos does: `*`, or `/`-separated segments, none
/// empty, `.` or `..`, none starting with `-`, no spaces, control
/// characters or `*` inside a hierarchy.
pub fn check_role(role: &str) -> Result<(), String> {
    if role == "*" {
        return Ok(());
    }
    let bad = |why: &str| Err(format!("role {role:?} is not valid: {why}"));
    if role.is_empty() || role.len() > MAX_ROLE {
        return bad("it must have 1 to 255 characters");
    }
    for seg in role.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return bad("a segment is empty, `.` or `..`");
        }
        if seg.starts_with('-') {
            return bad("a segment starts with `-`");
        }
        if seg
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '*' || c == '\\')
        {
            return bad("it holds a space, a control character, `*` or `\\`");
        }
    }
    Ok(())
}

/// A role resources can be reserved for: a valid role other than `*`.
pub fn check_reservation_role(role: &str) -> Result<(), String> {
    if role == "*" {
        return Err("resources cannot be reserved for role \"*\" (that is unreserved)".into());
    }
    check_role(role)
}

/// Whether `role` is `ancestor` or nested below it.
pub fn within(role: &str, ancestor: &str) -> bool {
    role == ancestor
        || (role.len() > ancestor.len()
            && role.starts_with(ancestor)
            && role.as_bytes()[ancestor.len()] == b'/')
}

/// The sum of every role's reserved resources.
pub fn total(reserved: &RoleResources) -> Resources {
    reserved
        .values()
        .fold(Resources::default(), |acc, r| acc.add(r))
}

/// Adds `r` to `role`'s share of `map`.
pub fn add(map: &mut RoleResources, role: &str, r: &Resources) {
    if r.is_empty() {
        return;
    }
    let e = map.entry(role.to_string()).or_default();
    *e = e.add(r);
}

/// Takes `r` from `role`'s share of `map`, or says why it cannot.
pub fn take(map: &mut RoleResources, role: &str, r: &Resources) -> Result<(), String> {
    if r.is_empty() {
        return Ok(());
    }
    let have = map.get(role).cloned().unwrap_or_default();
    let left = have.checked_sub(r).ok_or_else(|| {
        format!("role {role} has {have} reserved and unused here, not the {r} asked for")
    })?;
    if left.is_empty() {
        map.remove(role);
    } else {
        map.insert(role.to_string(), left);
    }
    Ok(())
}

/// Takes `r` from `role`'s reserved resources `reserved`, of which
/// `statik` is static: dynamic ones go first. A framework that reserves
/// does so to launch on (or make a volume of) what it reserved, and what a
/// task or volume holds cannot be given back, as in Mesos; static
/// reservations take what dynamic ones cannot hold.
pub fn take_dynamic_first(
    reserved: &mut RoleResources,
    statik: &mut RoleResources,
    role: &str,
    r: &Resources,
) {
    let have = reserved.get(role).cloned().unwrap_or_default();
    let fixed = statik.get(role).cloned().unwrap_or_default();
    let dynamic = have.saturating_sub(&fixed);
    let from_static = r.saturating_sub(&dynamic);
    if let Some(s) = statik.get_mut(role) {
        *s = s.saturating_sub(&from_static);
    }
    if let Some(h) = reserved.get_mut(role) {
        *h = h.saturating_sub(r);
    }
    reserved.retain(|_, v| !v.is_empty());
    statik.retain(|_, v| !v.is_empty());
}

/// Parses an agent's `--resources` in Mesos' text form, where a name may
/// carry a role: `cpus:4;mem:2048;cpus(ops):2;mem(ops):512`. Returns
/// everything (unreserved and reserved) and the reserved part by role.
/// `name(*)` is unreserved.
pub fn parse_agent_resources(input: &str) -> Result<(Resources, RoleResources), ResourceError> {
    let mut all = Resources::default();
    let mut reserved = RoleResources::new();
    for part in input.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once(':').unwrap_or((part, ""));
        let (name, role) = match name.trim().split_once('(') {
            Some((n, rest)) => {
                let role = rest.strip_suffix(')').ok_or_else(|| ResourceError::Parse {
                    input: part.to_string(),
                    why: "a role is written `name(role):value`".into(),
                })?;
                (n.trim(), Some(role.trim()))
            }
            None => (name.trim(), None),
        };
        let one: Resources = format!("{name}:{value}").parse()?;
        match role {
            Some(role) if role != "*" => {
                check_reservation_role(role).map_err(|why| ResourceError::Parse {
                    input: part.to_string(),
                    why,
                })?;
                add(&mut reserved, role, &one);
            }
            _ => {}
        }
        all = all.add(&one);
    }
    Ok((all, reserved))
}

/// A persistent volume: a directory on one agent, taken from its role's
/// reserved disk, kept until it is destroyed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// Mesos' persistence id; unique on its agent.
    pub id: String,
    /// The role whose reserved disk it takes.
    pub role: String,
    /// Its size in MB.
    pub disk: Scalar,
    /// Where tasks see it, relative to their sandbox.
    pub container_path: String,
    /// Who created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// Set by the master when it is created: a volume destroyed and made
    /// again with the same id is a new directory, never the old data.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uuid: String,
}

impl Volume {
    /// Its directory's name on the agent.
    pub fn dir_name(&self) -> String {
        dir_name(&self.id, &self.uuid)
    }

    pub fn validate(&self) -> Result<(), String> {
        check_volume_id(&self.id)?;
        check_reservation_role(&self.role).map_err(|e| format!("volume {}: {e}", self.id))?;
        check_container_path(&self.container_path)
            .map_err(|e| format!("volume {}: {e}", self.id))?;
        if self.disk.is_zero() {
            return Err(format!("volume {}: its disk size must be above 0", self.id));
        }
        if !self.uuid.is_empty() {
            check_volume_uuid(&self.uuid)?;
        }
        Ok(())
    }

    /// The disk it takes, as resources.
    pub fn resources(&self) -> Resources {
        Resources {
            disk: self.disk,
            ..Resources::default()
        }
    }
}

/// A task's use of a persistent volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// The volume's persistence id.
    pub id: String,
    /// The volume's role (the agent keeps volumes by role).
    pub role: String,
    /// Where the task sees it, relative to its sandbox.
    pub container_path: String,
    #[serde(default)]
    pub read_only: bool,
    /// The volume's uuid (filled in by the master from its record).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uuid: String,
    /// A framework plugin's persistent volume: its size, for the master to
    /// reserve and create the volume with when the agent has none of this
    /// id (cleared once the master has decided).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_mb: Option<Scalar>,
}

impl VolumeMount {
    /// The volume's directory's name on the agent.
    pub fn dir_name(&self) -> String {
        dir_name(&self.id, &self.uuid)
    }

    pub fn validate(&self) -> Result<(), String> {
        check_volume_id(&self.id)?;
        // A plugin's request names no role: the master gives it its
        // framework's before the launch goes anywhere.
        if !(self.role.is_empty() && self.create_mb.is_some()) {
            check_reservation_role(&self.role)?;
        }
        if !self.uuid.is_empty() {
            check_volume_uuid(&self.uuid)?;
        }
        if let Some(mb) = self.create_mb
            && (mb.is_zero() || mb.as_f64() > MAX_VOLUME_MB)
        {
            return Err(format!(
                "volume {}: its size must be above 0 and at most {MAX_VOLUME_MB} MB, got {mb}",
                self.id
            ));
        }
        check_container_path(&self.container_path)
    }
}

/// The largest persistent volume a framework plugin may ask for (1 PiB).
pub const MAX_VOLUME_MB: f64 = 1024.0 * 1024.0 * 1024.0;

/// A persistence id: letters, digits, `-`, `_` and `.`, not starting with
/// `.` (it names a directory on the agent).
pub fn check_volume_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_VOLUME_ID
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "persistence id {id:?} must be 1 to {MAX_VOLUME_ID} letters, digits, `-`, `_` or `.`, not starting with `.`"
        ))
    }
}

/// Whether `path` is `/`-separated segments, none empty, `.` or `..`,
/// and without control characters.
pub fn plain_segments(path: &str) -> bool {
    path.split('/')
        .all(|s| !s.is_empty() && s != "." && s != "..")
        && !path.chars().any(char::is_control)
}

/// A volume's `container_path`: relative, inside the sandbox, no `..`.
pub fn check_container_path(path: &str) -> Result<(), String> {
    let ok = path.len() <= 255 && !path.starts_with('/') && plain_segments(path);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "container_path {path:?} must be a relative path inside the sandbox, without `.`, `..` or empty segments"
        ))
    }
}

fn dir_name(id: &str, uuid: &str) -> String {
    if uuid.is_empty() {
        id.to_string()
    } else {
        format!("{id}.{uuid}")
    }
}

/// Where an agent keeps a role's volume, below its data directory (as
/// Mesos, `volumes/roles/<role, "/" as " ">/`, then `<id>.<uuid>`).
pub fn volume_dir(role: &str, dir_name: &str) -> String {
    format!("volumes/roles/{}/{dir_name}", role.replace('/', " "))
}

/// A volume's uuid as the master makes it: 32 hex digits.
pub fn check_volume_uuid(uuid: &str) -> Result<(), String> {
    if uuid.len() == 32 && uuid.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!("volume uuid {uuid:?} is not 32 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_follow_mesos_rules() {
        for ok in ["*", "eng", "eng/backend", "a.b", "team_1"] {
            assert!(check_role(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "/eng", "eng/", "a//b", ".", "a/..", "-x", "a b", "a/*", "x\n",
        ] {
            assert!(check_role(bad).is_err(), "{bad:?}");
        }
        assert!(within("eng/backend", "eng"));
        assert!(within("eng", "eng"));
        assert!(!within("engineering", "eng"));
        assert!(check_reservation_role("*").is_err());
    }

    #[test]
    fn agent_resources_carry_static_reservations() {
        let (all, reserved) =
            parse_agent_resources("cpus:4;mem:2048;cpus(ops):2;mem(ops):512;disk(*):100").unwrap();
        assert_eq!(all.to_string(), "cpus:6;mem:2560;disk:100");
        assert_eq!(reserved.len(), 1);
        assert_eq!(reserved["ops"].to_string(), "cpus:2;mem:512;disk:0");
        assert!(parse_agent_resources("cpus(ops:2").is_err());
        assert!(parse_agent_resources("cpus(a b):2").is_err());
    }

    #[test]
    fn taking_more_than_a_role_has_is_refused_and_changes_nothing() {
        let mut m = RoleResources::new();
        add(&mut m, "ops", &"cpus:2;mem:100".parse().unwrap());
        assert!(take(&mut m, "ops", &"cpus:3".parse().unwrap()).is_err());
        assert_eq!(m["ops"].to_string(), "cpus:2;mem:100;disk:0");
        take(&mut m, "ops", &"cpus:2;mem:100".parse().unwrap()).unwrap();
        assert!(m.is_empty());
    }

    #[test]
    fn what_is_used_counts_against_dynamic_reservations_first() {
        let mut reserved = RoleResources::new();
        let mut statik = RoleResources::new();
        add(&mut reserved, "ops", &"cpus:3".parse().unwrap());
        add(&mut statik, "ops", &"cpus:1".parse().unwrap());
        take_dynamic_first(
            &mut reserved,
            &mut statik,
            "ops",
            &"cpus:1.5".parse().unwrap(),
        );
        assert_eq!(reserved["ops"].to_string(), "cpus:1.5;mem:0;disk:0");
        assert_eq!(statik["ops"].to_string(), "cpus:1;mem:0;disk:0");
        take_dynamic_first(
            &mut reserved,
            &mut statik,
            "ops",
            &"cpus:1".parse().unwrap(),
        );
        assert_eq!(statik["ops"].to_string(), "cpus:0.5;mem:0;disk:0");
    }

    #[test]
    fn volume_paths_stay_inside_the_sandbox() {
        for bad in ["/data", "../x", "a/../b", "", "a//b", "./a"] {
            assert!(check_container_path(bad).is_err(), "{bad:?}");
        }
        for ok in ["data", "data/db", "v1.0"] {
            assert!(check_container_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "x y"] {
            assert!(check_volume_id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(volume_dir("eng/db", "v1"), "volumes/roles/eng db/v1");
        let m = VolumeMount {
            id: "v1".into(),
            role: "db".into(),
            container_path: "data".into(),
            read_only: false,
            uuid: "ab".repeat(16),
            create_mb: None,
        };
        assert_eq!(m.dir_name(), format!("v1.{}", "ab".repeat(16)));
        assert!(check_volume_uuid(&m.uuid).is_ok());
        assert!(check_volume_uuid("../x").is_err());
    }
}
