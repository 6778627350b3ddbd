//! The plugins an agent runs — isolators and health checks — fetched from
//! the master and kept in step with it: every heartbeat reply carries a
//! fingerprint of the list, and a new fingerprint means fetch the list,
//! load what changed, drop what went. No restart needed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use wasmos_core::PluginKind;
use wasmos_core::protocol::{self, AgentPlugin};
use wasmos_runtime::health::HealthCheckInstance;
use wasmos_runtime::isolator::IsolatorInstance;
use wasmos_runtime::{PluginHealth, PluginRuntime};

use crate::Agent;

/// A loaded plugin.
pub(crate) enum Loaded {
    Isolator(Arc<Mutex<IsolatorInstance>>),
    Health(Arc<Mutex<HealthCheckInstance>>),
}

struct Entry {
    meta: AgentPlugin,
    loaded: Loaded,
    /// Its health as last read, reported while a call holds the plugin.
    last: Mutex<(PluginHealth, Option<String>)>,
}

/// The agent's plugins.
pub(crate) struct Plugins {
    runtime: PluginRuntime,
    fingerprint: Mutex<String>,
    entries: Mutex<BTreeMap<String, Entry>>,
    sync_lock: tokio::sync::Mutex<()>,
    /// The last log line of each plugin sent with a heartbeat.
    logs_sent: Mutex<BTreeMap<String, u64>>,
}

impl Plugins {
    /// The runtime's per-plugin call metrics (clones share the series).
    pub(crate) fn call_metrics(&self) -> wasmos_runtime::CallMetrics {
        self.runtime.calls.clone()
    }

    /// What the runtime saw of each plugin (clones share it).
    pub(crate) fn observed(&self) -> wasmos_runtime::observe::Observed {
        self.runtime.observed.clone()
    }

    pub(crate) fn new(runtime: PluginRuntime) -> Self {
        Plugins {
            runtime,
            fingerprint: Mutex::new(String::new()),
            logs_sent: Mutex::new(BTreeMap::new()),
            entries: Mutex::new(BTreeMap::new()),
            sync_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The isolators, in name order (the order they are applied in).
    pub(crate) fn isolators(&self) -> Vec<(String, Arc<Mutex<IsolatorInstance>>)> {
        self.entries()
            .iter()
            .filter_map(|(n, e)| match &e.loaded {
                Loaded::Isolator(i) => Some((n.clone(), i.clone())),
                Loaded::Health(_) => None,
            })
            .collect()
    }

    pub(crate) fn health_check(&self, name: &str) -> Option<Arc<Mutex<HealthCheckInstance>>> {
        match self.entries().get(name).map(|e| &e.loaded) {
            Some(Loaded::Health(h)) => Some(h.clone()),
            _ => None,
        }
    }

    /// Each plugin's health, for the agent's state and heartbeats. Never
    /// waits for a plugin: one busy in a call (a COMMAND health check
    /// holds its instance while the command runs, which needs the async
    /// runtime this is called from) is reported as it was last read.
    pub(crate) fn report(&self) -> Vec<(String, PluginHealth, Option<String>)> {
        self.entries()
            .iter()
            .map(|(n, e)| {
                let now = match &e.loaded {
                    Loaded::Isolator(i) => read_now(i, IsolatorInstance::health),
                    Loaded::Health(h) => read_now(h, HealthCheckInstance::health),
                };
                let mut last = e.last.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(h) = now {
                    *last = h;
                }
                (n.clone(), last.0.clone(), last.1.clone())
            })
            .collect()
    }
}

/// `f` of the plugin behind `m`, unless a call holds it now.
fn read_now<T, R>(m: &Mutex<T>, f: impl FnOnce(&T) -> R) -> Option<R> {
    match m.try_lock() {
        Ok(g) => Some(f(&g)),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(f(&p.into_inner())),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

impl Agent {
    /// Each plugin's health, figures and new log lines, for heartbeats.
    pub(crate) fn plugin_reports(&self) -> Vec<protocol::PluginReport> {
        let observed = self.plugins.observed();
        let mut sent = self
            .plugins
            .logs_sent
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.plugins
            .report()
            .into_iter()
            .map(|(name, health, last_error)| {
                let after = sent.get(&name).copied().unwrap_or(0);
                // The newest lines when there are more than fit.
                let mut logs = observed.logs_after(&name, after, usize::MAX);
                let skip = logs
                    .len()
                    .saturating_sub(protocol::MAX_LOG_LINES_PER_HEARTBEAT);
                logs.drain(..skip);
                if let Some(last) = logs.last() {
                    sent.insert(name.clone(), last.seq);
                }
                protocol::PluginReport {
                    stats: observed.stats(&name),
                    health: serde_json::to_value(health)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                    name,
                    last_error,
                    logs,
                }
            })
            .collect()
    }

    /// Each plugin's health, as JSON for the agent's state endpoint.
    pub(crate) fn plugins_report(&self) -> Vec<serde_json::Value> {
        self.plugins
            .report()
            .into_iter()
            .map(|(name, health, last_error)| serde_json::json!({ "name": name, "health": health, "last_error": last_error }))
            .collect()
    }

    /// Fetches the plugin list if `fingerprint` is not the one loaded.
    pub(crate) async fn sync_plugins(&self, fingerprint: &str) {
        if *self
            .plugins
            .fingerprint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            == fingerprint
        {
            return;
        }
        let _guard = self.plugins.sync_lock.lock().await;
        match self.fetch_plugins().await {
            Ok(fp) => {
                tracing::info!(fingerprint = %fp, plugins = self.plugins.entries().len(), "plugins in step with the master")
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch plugins from the master; will try again")
            }
        }
    }

    /// Fetches the plugin list now, whatever is loaded.
    pub(crate) async fn ensure_plugins(&self) -> Result<(), String> {
        let _guard = self.plugins.sync_lock.lock().await;
        self.fetch_plugins().await.map(|_| ())
    }

    async fn fetch_plugins(&self) -> Result<String, String> {
        let list: Vec<AgentPlugin> = self
            .masters
            .send(reqwest::Method::GET, protocol::paths::PLUGINS, None)
            .await
            .map_err(|e| e.to_string())?
            .error_for_status()
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let fp = protocol::plugins_fingerprint(&list);
        let wanted: std::collections::BTreeSet<String> =
            list.iter().map(|p| p.name.clone()).collect();
        self.plugins.entries().retain(|n, _| {
            let keep = wanted.contains(n);
            if !keep {
                tracing::info!(plugin = %n, "plugin removed");
            }
            keep
        });
        for meta in list {
            let current = self
                .plugins
                .entries()
                .get(&meta.name)
                .map(|e| e.meta.clone());
            match current {
                Some(c) if c == meta => continue,
                Some(c) if c.digest == meta.digest => {
                    // Only the configuration changed: restart the instance
                    // (locked with the list released: a health check holds
                    // its instance while its command runs).
                    let loaded = self
                        .plugins
                        .entries()
                        .get(&meta.name)
                        .map(|e| match &e.loaded {
                            Loaded::Isolator(i) => Loaded::Isolator(i.clone()),
                            Loaded::Health(h) => Loaded::Health(h.clone()),
                        });
                    match loaded {
                        Some(Loaded::Isolator(i)) => {
                            let _ = i.lock().map(|mut i| i.reset(meta.config.clone()));
                        }
                        Some(Loaded::Health(h)) => {
                            let _ = h.lock().map(|mut h| h.reset(meta.config.clone()));
                        }
                        None => {}
                    }
                    if let Some(e) = self.plugins.entries().get_mut(&meta.name) {
                        e.meta = meta.clone();
                    }
                    continue;
                }
                _ => {}
            }
            let path = format!("{}/{}", protocol::paths::PLUGINS, meta.name);
            let bytes = self
                .masters
                .send(reqwest::Method::GET, &path, None)
                .await
                .map_err(|e| e.to_string())?
                .error_for_status()
                .map_err(|e| e.to_string())?
                .bytes()
                .await
                .map_err(|e| e.to_string())?;
            if wasmos_runtime::digest(&bytes) != meta.digest {
                return Err(format!(
                    "plugin {} arrived with the wrong digest",
                    meta.name
                ));
            }
            let runtime = self.plugins.runtime.clone();
            let m = meta.clone();
            let loaded = tokio::task::spawn_blocking(move || -> Result<Loaded, String> {
                let c = runtime.compile(&bytes).map_err(|e| e.to_string())?;
                Ok(match m.kind {
                    PluginKind::Isolator => Loaded::Isolator(Arc::new(Mutex::new(
                        IsolatorInstance::new(&runtime, &m.name, &c, m.config.clone())
                            .map_err(|e| e.to_string())?,
                    ))),
                    PluginKind::HealthCheck => Loaded::Health(Arc::new(Mutex::new(
                        HealthCheckInstance::new(&runtime, &m.name, &c, m.config.clone())
                            .map_err(|e| e.to_string())?,
                    ))),
                    other => return Err(format!("agents do not run {other} plugins")),
                })
            })
            .await
            .map_err(|e| e.to_string())?;
            match loaded {
                Ok(loaded) => {
                    tracing::info!(plugin = %meta.name, version = %meta.version, "plugin loaded");
                    self.plugins.entries().insert(
                        meta.name.clone(),
                        Entry {
                            meta,
                            loaded,
                            last: Mutex::new((PluginHealth::Healthy, None)),
                        },
                    );
                }
                Err(e) => tracing::error!(plugin = %meta.name, error = %e, "cannot load plugin"),
            }
        }
        *self
            .plugins
            .fingerprint
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = fp.clone();
        Ok(fp)
    }
}

/// Whether `plugins` has a health check named `name`, fetching the list
/// once more if not (it may have been installed a moment ago).
pub(crate) async fn ensure_health_check(
    agent: &Arc<Agent>,
    name: &str,
) -> Option<Arc<Mutex<HealthCheckInstance>>> {
    if let Some(h) = agent.plugins.health_check(name) {
        return Some(h);
    }
    {
        *agent
            .plugins
            .fingerprint
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = String::new();
    }
    agent.sync_plugins("?").await;
    agent.plugins.health_check(name)
}
