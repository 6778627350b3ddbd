//! Plugin manifests: what a plugin is, before any of its code runs.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The version of the `wasmos:plugin` WIT package this host serves.
pub const WORLD_VERSION: &str = "0.3.0";

/// The four plugin worlds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    Framework,
    Placement,
    Isolator,
    HealthCheck,
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PluginKind::Framework => "framework",
            PluginKind::Placement => "placement",
            PluginKind::Isolator => "isolator",
            PluginKind::HealthCheck => "health-check",
        })
    }
}

/// Why a manifest is not acceptable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "plugin name {0:?} must be 1-64 characters of a-z, 0-9 and `-`, starting with a letter"
    )]
    BadName(String),
    #[error(
        "plugin {name} targets world version {found}, but this host serves {WORLD_VERSION}; rebuild it against wit/ of this release"
    )]
    WorldVersion { name: String, found: String },
    #[error(
        "plugin {name}: http prefix {prefix:?} must start with `/` and name one path segment, e.g. `/v2`"
    )]
    BadPrefix { name: String, prefix: String },
    #[error(
        "plugin {name}: event stream {path:?} must lie under one of its http_prefixes, e.g. `/v2/events` under `/v2`"
    )]
    BadEventStream { name: String, path: String },
    #[error("plugin {name}: only framework plugins serve HTTP")]
    PrefixOnNonFramework { name: String },
    #[error("plugin {name}: only placement plugins declare operators")]
    OperatorsOnNonPlacement { name: String },
    #[error("plugin {name}: operator {operator:?} must be upper case letters, digits and `_`")]
    BadOperator { name: String, operator: String },
}

/// A plugin's manifest (`plugin.toml` beside its source, or the config blob
/// of its OCI artifact).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginManifest {
    pub name: String,
    pub version: String,
    pub kind: PluginKind,
    /// The `wasmos:plugin` package version the component was built against.
    pub world_version: String,
    #[serde(default)]
    pub description: String,
    /// Capabilities the plugin asks for beyond its world's imports.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Default configuration, overridable per cluster.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Root path prefixes a framework asks to serve besides
    /// `/frameworks/<name>/` (e.g. `/v2` for Marathon), granted when no other
    /// plugin holds them.
    #[serde(default)]
    pub http_prefixes: Vec<String>,
    /// Paths under those prefixes the master serves as server-sent event
    /// streams (e.g. `/v2/events`), fed by polling the plugin's handler
    /// with `x-wasmos-events-after`.
    #[serde(default)]
    pub event_streams: Vec<String>,
    /// The constraint operators a placement plugin evaluates (upper case,
    /// e.g. `UNIQUE`).
    #[serde(default)]
    pub operators: Vec<String>,
}

impl PluginManifest {
    /// Checks the manifest against this host.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self.name.starts_with(|c: char| c.is_ascii_lowercase())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !name_ok {
            return Err(ManifestError::BadName(self.name.clone()));
        }
        if !world_compatible(&self.world_version) {
            return Err(ManifestError::WorldVersion {
                name: self.name.clone(),
                found: self.world_version.clone(),
            });
        }
        if !self.http_prefixes.is_empty() && self.kind != PluginKind::Framework {
            return Err(ManifestError::PrefixOnNonFramework {
                name: self.name.clone(),
            });
        }
        if !self.operators.is_empty() && self.kind != PluginKind::Placement {
            return Err(ManifestError::OperatorsOnNonPlacement {
                name: self.name.clone(),
            });
        }
        for op in &self.operators {
            let ok = !op.is_empty()
                && op.len() <= 64
                && op
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !ok {
                return Err(ManifestError::BadOperator {
                    name: self.name.clone(),
                    operator: op.clone(),
                });
            }
        }
        for e in &self.event_streams {
            let under = self
                .http_prefixes
                .iter()
                .any(|p| e.starts_with(&format!("{p}/")));
            if !under {
                return Err(ManifestError::BadEventStream {
                    name: self.name.clone(),
                    path: e.clone(),
                });
            }
        }
        for p in &self.http_prefixes {
            let seg = p.strip_prefix('/').unwrap_or("");
            let ok = !seg.is_empty()
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok || seg == "api" || seg == "frameworks" || seg == "ui" {
                return Err(ManifestError::BadPrefix {
                    name: self.name.clone(),
                    prefix: p.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Whether a plugin built against `version` runs on this host. Before 1.0 a
/// minor version is a breaking change, so major and minor must match.
pub fn world_compatible(version: &str) -> bool {
    let mm = |v: &str| {
        let mut it = v.split('.');
        (it.next().map(str::to_string), it.next().map(str::to_string))
    };
    let (maj, min) = mm(version);
    let (hmaj, hmin) = mm(WORLD_VERSION);
    maj.is_some() && maj == hmaj && min == hmin
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(name: &str, world: &str) -> PluginManifest {
        PluginManifest {
            name: name.into(),
            version: "1.0.0".into(),
            kind: PluginKind::Framework,
            world_version: world.into(),
            description: String::new(),
            capabilities: vec![],
            config: BTreeMap::new(),
            http_prefixes: vec![],
            event_streams: vec![],
            operators: vec![],
        }
    }

    #[test]
    fn incompatible_world_versions_are_refused_with_a_hint() {
        // 0.2 plugins predate the task spec's fetch and readiness fields.
        let err = manifest("exec", "0.2.0").validate().unwrap_err();
        assert!(err.to_string().contains("rebuild"), "{err}");
        assert!(manifest("exec", "0.4.0").validate().is_err());
        assert!(manifest("exec", "0.3.7").validate().is_ok());
        assert!(manifest("exec", "1.1.0").validate().is_err());
    }

    #[test]
    fn plugin_names_are_simple() {
        for bad in ["", "Exec", "1x", "a/b", "a_b"] {
            assert!(manifest(bad, WORLD_VERSION).validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn event_streams_must_lie_under_the_plugins_prefixes() {
        let mut m = manifest("marathon", WORLD_VERSION);
        m.http_prefixes = vec!["/v2".into()];
        m.event_streams = vec!["/v2/events".into()];
        assert!(m.validate().is_ok());
        m.event_streams = vec!["/v3/events".into()];
        assert!(matches!(
            m.validate(),
            Err(ManifestError::BadEventStream { .. })
        ));
    }

    #[test]
    fn reserved_and_nested_http_prefixes_are_refused() {
        let mut m = manifest("marathon", WORLD_VERSION);
        m.http_prefixes = vec!["/v2".into()];
        assert!(m.validate().is_ok());
        for bad in ["v2", "/api", "/a/b", "/"] {
            m.http_prefixes = vec![bad.into()];
            assert!(m.validate().is_err(), "{bad}");
        }
    }
}
