//! Who may do what: ACL tokens, users and policies, replicated with the
//! rest of the state. Deny by default: a principal may do only what one of
//! its policies allows, and a matching `deny` rule always wins.
//!
//! Secrets never enter the state: a token is kept as the SHA-256 of its
//! secret, a user's password as an Argon2 hash (made by the leader before
//! it proposes the command, so `apply` stays deterministic).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An API area a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Area {
    /// The cluster's view: agents, frameworks, totals, the event stream.
    Cluster,
    /// Tasks (the native API and the `exec` framework).
    Tasks,
    /// Sandbox files of tasks.
    Files,
    /// Marathon apps, groups, deployments.
    Apps,
    /// Chronos jobs.
    Jobs,
    /// Other framework plugins' own APIs, by framework name.
    Frameworks,
    Plugins,
    Masters,
    Vars,
    /// Tokens, users and policies.
    Acl,
    /// Roles' weights and quotas, by role name.
    Roles,
    /// The package catalogue: its repositories (install and uninstall
    /// need this and the area of what a package makes, e.g. apps).
    Packages,
}

impl Area {
    pub const ALL: [Area; 12] = [
        Area::Cluster,
        Area::Tasks,
        Area::Files,
        Area::Apps,
        Area::Jobs,
        Area::Frameworks,
        Area::Plugins,
        Area::Masters,
        Area::Vars,
        Area::Acl,
        Area::Roles,
        Area::Packages,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Area::Cluster => "cluster",
            Area::Tasks => "tasks",
            Area::Files => "files",
            Area::Apps => "apps",
            Area::Jobs => "jobs",
            Area::Frameworks => "frameworks",
            Area::Plugins => "plugins",
            Area::Masters => "masters",
            Area::Vars => "vars",
            Area::Acl => "acl",
            Area::Roles => "roles",
            Area::Packages => "packages",
        }
    }
}

impl std::fmt::Display for Area {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a rule grants (write includes read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Deny,
    Read,
    Write,
}

impl Access {
    pub fn name(self) -> &'static str {
        match self {
            Access::Deny => "deny",
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// One rule: `access` to the objects of `area` whose name starts with
/// `prefix` (empty: all of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub area: Area,
    #[serde(default)]
    pub prefix: String,
    pub access: Access,
}

/// A named set of rules, and the OS users tasks of its holders may run as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// OS users tasks submitted under this policy may run as (besides the
    /// agent's unprivileged default); `*` is any.
    #[serde(default)]
    pub run_as: Vec<String>,
}

/// A token: its secret is shown once, at creation; the state keeps its
/// SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id (for listing and revoking).
    pub accessor: String,
    /// `sha256:<hex>` of the secret.
    pub secret_hash: String,
    pub name: String,
    /// Management tokens may do everything.
    #[serde(default)]
    pub management: bool,
    #[serde(default)]
    pub policies: Vec<String>,
    pub created_at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<f64>,
    /// Who made it (a principal name), for the audit trail.
    #[serde(default)]
    pub created_by: String,
    /// A dashboard or login session (not listed with the operator's tokens).
    #[serde(default)]
    pub session: bool,
    /// A session's credentials: `token:<accessor>` or `user:<name>`. The
    /// session ends when they are revoked, removed or changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

impl TokenRecord {
    pub fn expired(&self, now: f64) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

/// A user who logs in with a password (HTTP Basic, the dashboard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    /// An Argon2id PHC string.
    pub password_hash: String,
    #[serde(default)]
    pub policies: Vec<String>,
    pub created_at: f64,
}

/// A public key the cluster trusts to sign plugins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrustedKey {
    pub name: String,
    /// PEM SubjectPublicKeyInfo (checked by the master before it is added).
    pub public_key: String,
    /// `sha256:<hex>` of the DER key.
    pub fingerprint: String,
    pub added_at: f64,
    /// Who added it (a principal name).
    #[serde(default)]
    pub added_by: String,
}

/// The most plugin signing keys a cluster trusts.
pub const MAX_TRUSTED_KEYS: usize = 256;

/// Tokens, users, policies and the keys trusted to sign plugins.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Acl {
    /// By secret hash (a request presents the secret).
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenRecord>,
    #[serde(default)]
    pub users: BTreeMap<String, UserRecord>,
    #[serde(default)]
    pub policies: BTreeMap<String, Policy>,
    /// Whether the bootstrap management token was made (it is made once).
    #[serde(default)]
    pub bootstrapped: bool,
    /// Public keys whose signatures let a plugin install, by name.
    #[serde(default)]
    pub plugin_keys: BTreeMap<String, TrustedKey>,
    /// Whether the bootstrap signing key was added (it is added once, so
    /// that one an operator removed does not come back).
    #[serde(default)]
    pub plugin_keys_bootstrapped: bool,
    /// Which version of these ACLs this is: changed by every command that
    /// may change them, so that what a master derived from them (a token's
    /// principal) can be kept until it no longer holds.
    #[serde(skip)]
    pub generation: Generation,
}

/// A version of a cluster's ACLs, unique in this process: a fresh one for
/// every change and for every `Acl` made or read from a snapshot, so that
/// two different ACLs never share one. Not compared (two equal ACLs may
/// have different generations) and not serialised.
#[derive(Debug, Clone, Copy)]
pub struct Generation(u64);

impl Generation {
    pub fn next() -> Generation {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Generation(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl Default for Generation {
    fn default() -> Generation {
        Generation::next()
    }
}

impl PartialEq for Generation {
    fn eq(&self, _: &Generation) -> bool {
        true
    }
}

/// The most tokens, users or policies a cluster keeps.
pub const MAX_ACL_OBJECTS: usize = 10_000;
/// Live login sessions a principal keeps at most: a new login ends the
/// oldest beyond it (logins cannot fill the token table).
pub const MAX_SESSIONS_PER_PRINCIPAL: usize = 16;

/// Checks a name of a token, user or policy.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err(format!("{what} names have 1 to 128 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
    {
        return Err(format!(
            "{what} name {name:?} has {c:?}; use letters, digits, `.`, `_`, `-` and `@`"
        ));
    }
    Ok(())
}

impl Policy {
    pub fn validate(&self) -> Result<(), String> {
        check_name("policy", &self.name)?;
        if self.rules.len() > 256 {
            return Err("a policy has at most 256 rules".into());
        }
        for u in &self.run_as {
            if u != "*" {
                check_name("run_as user", u)?;
            }
        }
        Ok(())
    }
}

/// What a principal may do: the union of its policies' rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub management: bool,
    pub rules: Vec<Rule>,
    pub run_as: Vec<String>,
}

impl Grants {
    pub fn all() -> Grants {
        Grants {
            management: true,
            ..Default::default()
        }
    }

    /// Whether `access` to `object` of `area` is allowed: some matching
    /// rule grants it and no matching rule denies it.
    pub fn allows(&self, area: Area, object: &str, access: Access) -> bool {
        if self.management {
            return true;
        }
        let matching = self
            .rules
            .iter()
            .filter(|r| r.area == area && object.starts_with(r.prefix.as_str()));
        let mut granted = false;
        for r in matching {
            match r.access {
                Access::Deny => return false,
                a => granted |= a >= access,
            }
        }
        granted
    }

    /// Whether `access` covers every object of `area`: granted for all of
    /// it, and no rule of the area denies a part.
    pub fn whole(&self, area: Area, access: Access) -> bool {
        self.management
            || (self.allows(area, "", access)
                && !self
                    .rules
                    .iter()
                    .any(|r| r.area == area && r.access == Access::Deny))
    }

    /// Whether `access` covers some objects of `area` (a listing of it then
    /// shows those).
    pub fn some(&self, area: Area, access: Access) -> bool {
        self.management
            || self
                .rules
                .iter()
                .any(|r| r.area == area && r.access != Access::Deny && r.access >= access)
    }

    /// Whether tasks may run as OS user `user`.
    pub fn may_run_as(&self, user: &str) -> bool {
        self.management || self.run_as.iter().any(|u| u == "*" || u == user)
    }
}

impl Acl {
    /// The grants of a set of policy names (unknown names grant nothing).
    pub fn grants(&self, management: bool, policies: &[String]) -> Grants {
        let mut g = Grants {
            management,
            ..Default::default()
        };
        for p in policies.iter().filter_map(|n| self.policies.get(n)) {
            g.rules.extend(p.rules.iter().cloned());
            g.run_as.extend(p.run_as.iter().cloned());
        }
        g
    }

    /// The live token whose secret hashes to `hash`.
    pub fn token(&self, hash: &str, now: f64) -> Option<&TokenRecord> {
        self.tokens.get(hash).filter(|t| !t.expired(now))
    }

    pub fn token_by_accessor(&self, accessor: &str) -> Option<&TokenRecord> {
        self.tokens.values().find(|t| t.accessor == accessor)
    }
}
