//! Plugin manifests: what a plugin is, before any of its code runs.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The version of the `wasmos:plugin` WIT package this host serves.
pub const WORLD_VERSION: &str = "0.5.0";

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

/// What a host saw of a plugin since it started: calls and their
/// latencies, failures by kind, instances built, memory high-water.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginStats {
    pub calls: u64,
    /// Failed calls by kind (`trap`, `timeout`, `memory_limit`, `init`, ...).
    #[serde(default)]
    pub failures: BTreeMap<String, u64>,
    /// Latency percentiles of the recent calls (the last 1,024), in ms.
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Instances built: the first, then one per restart (after a failed
    /// call, a new configuration or version, a failover).
    pub instances: u64,
    /// The most linear memory one of its instances has had, in bytes.
    pub memory_high_water: u64,
}

impl PluginStats {
    /// Adds another host's figures: counts add up; for latencies and
    /// memory, the worst host's.
    pub fn merge(&mut self, other: &PluginStats) {
        self.calls += other.calls;
        for (k, n) in &other.failures {
            *self.failures.entry(k.clone()).or_default() += n;
        }
        self.p50_ms = self.p50_ms.max(other.p50_ms);
        self.p90_ms = self.p90_ms.max(other.p90_ms);
        self.p99_ms = self.p99_ms.max(other.p99_ms);
        self.max_ms = self.max_ms.max(other.max_ms);
        self.instances += other.instances;
        self.memory_high_water = self.memory_high_water.max(other.memory_high_water);
    }
}

/// A line a plugin logged through its `log` import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginLogLine {
    /// Increases by one per line on the host that keeps the lines.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: String,
    pub message: String,
    /// The agent that ran the plugin (isolators and health checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
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
        "plugin {name}: http prefix {prefix:?} must be `/` and path segments of letters, digits, `-` and `_`, e.g. `/v2` or `/v1/scheduler`, outside /api, /frameworks and /ui"
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
    #[error(
        "plugin {name}: tick_ms must be between {MIN_TICK_MS} and {MAX_TICK_MS}, and only frameworks tick"
    )]
    BadTick { name: String },
}

/// Bounds of a framework's tick interval.
pub const MIN_TICK_MS: u64 = 50;
pub const MAX_TICK_MS: u64 = 60_000;
/// How often a framework is ticked when its manifest does not say.
pub const DEFAULT_TICK_MS: u64 = 1000;

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
    /// How often a framework's `tick` is called, in milliseconds (default
    /// [`DEFAULT_TICK_MS`]); a scheduler of timed work asks for more often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick_ms: Option<u64>,
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
        if let Some(t) = self.tick_ms
            && (self.kind != PluginKind::Framework || !(MIN_TICK_MS..=MAX_TICK_MS).contains(&t))
        {
            return Err(ManifestError::BadTick {
                name: self.name.clone(),
            });
        }
        for p in &self.http_prefixes {
            let segs: Vec<&str> = match p.strip_prefix('/') {
                Some(rest) => rest.split('/').collect(),
                None => Vec::new(),
            };
            let ok = !segs.is_empty()
                && segs.iter().all(|seg| {
                    !seg.is_empty()
                        && seg
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                });
            let reserved = matches!(segs.first(), Some(&("api" | "frameworks" | "ui")));
            if !ok || reserved {
                return Err(ManifestError::BadPrefix {
                    name: self.name.clone(),
                    prefix: p.clone(),
                });
            }
        }
        Ok(())
    }

    /// Whether a framework's prefixes hold `path` (the prefix itself or
    /// anything below it).
    pub fn holds_path(&self, path: &str) -> bool {
        self.http_prefixes.iter().any(|p| prefix_holds(p, path))
    }

    /// The interval between `tick` calls.
    pub fn tick_interval_ms(&self) -> u64 {
        self.tick_ms.unwrap_or(DEFAULT_TICK_MS)
    }
}

/// Root endpoints several frameworks may declare at once: the master
/// answers `/ping` itself and merges every holder's `/metrics` (Marathon's
/// and Chronos' clients both call them on the same address).
pub const SHARED_PREFIXES: &[&str] = &["/ping", "/metrics"];

/// Whether root prefix `prefix` (e.g. `/v1/scheduler`) holds `path`.
pub fn prefix_holds(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
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
            tick_ms: None,
        }
    }

    #[test]
    fn incompatible_world_versions_are_refused_with_a_hint() {
        // 0.4 plugins predate offers' volumes and tasks' volumes.
        let err = manifest("exec", "0.4.0").validate().unwrap_err();
        assert!(err.to_string().contains("rebuild"), "{err}");
        assert!(manifest("exec", "0.6.0").validate().is_err());
        assert!(manifest("exec", "0.5.7").validate().is_ok());
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
        for bad in ["v2", "/api", "/api/x", "/a//b", "/a/", "/", "/a b"] {
            m.http_prefixes = vec![bad.into()];
            assert!(m.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn nested_prefixes_hold_their_subtree_only() {
        let mut m = manifest("chronos", WORLD_VERSION);
        m.http_prefixes = vec!["/v1/scheduler".into(), "/ping".into()];
        assert!(m.validate().is_ok());
        assert!(m.holds_path("/v1/scheduler"));
        assert!(m.holds_path("/v1/scheduler/jobs"));
        assert!(m.holds_path("/ping"));
        assert!(!m.holds_path("/v1/schedulerx"));
        assert!(!m.holds_path("/v1/hosts"));
        assert!(!m.holds_path("/pingu"));
    }

    #[test]
    fn only_frameworks_tick_and_within_bounds() {
        let mut m = manifest("chronos", WORLD_VERSION);
        m.tick_ms = Some(100);
        assert!(m.validate().is_ok());
        assert_eq!(m.tick_interval_ms(), 100);
        m.tick_ms = Some(10);
        assert!(matches!(m.validate(), Err(ManifestError::BadTick { .. })));
        m.tick_ms = Some(100);
        m.kind = PluginKind::Placement;
        assert!(matches!(m.validate(), Err(ManifestError::BadTick { .. })));
        assert_eq!(manifest("x", WORLD_VERSION).tick_interval_ms(), 1000);
    }
}
