//! What the runtime saw of each plugin since the process started — calls
//! and their latencies, failures by kind, instances built, memory
//! high-water — and the last lines each logged, for `wasmos plugin show`
//! and `wasmos plugin logs`. Prometheus gets the call figures from
//! [`crate::CallMetrics`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use wasmos_core::plugin::{PluginLogLine, PluginStats};

/// Calls whose latencies make the percentiles.
const RECENT_CALLS: usize = 1024;
/// Log lines kept per plugin.
pub const LOG_LINES: usize = 1000;

#[derive(Debug, Default)]
struct Entry {
    calls: u64,
    failures: BTreeMap<String, u64>,
    /// Milliseconds of the recent calls, oldest first.
    recent: VecDeque<f64>,
    instances: u64,
    high_water: u64,
    logs: VecDeque<PluginLogLine>,
    next_seq: u64,
}

/// Per-plugin observations. Clones share them.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    logged: Arc<tokio::sync::Notify>,
}

impl Observed {
    fn with<R>(&self, plugin: &str, f: impl FnOnce(&mut Entry) -> R) -> R {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        // Every plugin call comes here: the name is allocated only the
        // first time a plugin is seen.
        if let Some(entry) = e.get_mut(plugin) {
            return f(entry);
        }
        f(e.entry(plugin.to_string()).or_default())
    }

    /// One call that took `ms`, failed with `failure` (a
    /// [`crate::CallError`]'s kind) or not, with its instance's linear
    /// memory at `memory` bytes after it (one lock for both).
    pub fn call(&self, plugin: &str, ms: f64, failure: Option<&str>, memory: u64) {
        self.with(plugin, |e| {
            e.calls += 1;
            e.high_water = e.high_water.max(memory);
            if e.recent.len() == RECENT_CALLS {
                e.recent.pop_front();
            }
            e.recent.push_back(ms);
            if let Some(kind) = failure {
                *e.failures.entry(kind.to_string()).or_default() += 1;
            }
        });
    }

    /// An instance was built (with `init`).
    pub fn instance(&self, plugin: &str) {
        self.with(plugin, |e| e.instances += 1);
    }

    /// An instance has `bytes` of linear memory.
    pub fn memory(&self, plugin: &str, bytes: u64) {
        self.with(plugin, |e| e.high_water = e.high_water.max(bytes));
    }

    /// A line the plugin logged (on `agent`, when the lines are an
    /// agent's, kept by a master); the oldest go beyond [`LOG_LINES`].
    pub fn log(&self, plugin: &str, level: &str, message: &str, at_ms: u64) {
        self.log_from(plugin, level, message, at_ms, None);
    }

    pub fn log_from(
        &self,
        plugin: &str,
        level: &str,
        message: &str,
        at_ms: u64,
        agent: Option<&str>,
    ) {
        self.with(plugin, |e| {
            e.next_seq += 1;
            if e.logs.len() == LOG_LINES {
                e.logs.pop_front();
            }
            e.logs.push_back(PluginLogLine {
                seq: e.next_seq,
                at_ms,
                level: level.to_string(),
                message: message.to_string(),
                agent: agent.map(String::from),
            });
        });
        self.logged.notify_waiters();
    }

    /// The figures for `plugin`, if it was ever called or built.
    pub fn stats(&self, plugin: &str) -> Option<PluginStats> {
        let e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let e = e.get(plugin)?;
        let mut sorted: Vec<f64> = e.recent.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            if sorted.is_empty() {
                return 0.0;
            }
            let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[i]
        };
        Some(PluginStats {
            calls: e.calls,
            failures: e.failures.clone(),
            p50_ms: pick(0.50),
            p90_ms: pick(0.90),
            p99_ms: pick(0.99),
            max_ms: sorted.last().copied().unwrap_or(0.0),
            instances: e.instances,
            memory_high_water: e.high_water,
        })
    }

    /// Up to `max` lines of `plugin` after `after` (a line's `seq`; 0 for
    /// the oldest kept), oldest first.
    pub fn logs_after(&self, plugin: &str, after: u64, max: usize) -> Vec<PluginLogLine> {
        let e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.get(plugin)
            .map(|e| {
                e.logs
                    .iter()
                    .filter(|l| l.seq > after)
                    .take(max)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Resolves when some plugin logs a line after it was created (and
    /// `enable`d): create it before looking, so no line slips between.
    pub fn logged(&self) -> tokio::sync::futures::Notified<'_> {
        self.logged.notified()
    }

    /// Every plugin's figures, by name.
    pub fn all_stats(&self) -> BTreeMap<String, PluginStats> {
        let names: Vec<String> = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        names
            .into_iter()
            .filter_map(|n| self.stats(&n).map(|s| (n, s)))
            .collect()
    }
}

impl Observed {
    /// Adds the instances built and the memory high-water of every
    /// plugin to a Prometheus registry (as gauges: figures since this
    /// process started).
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::gauge::Gauge;
        type Labels = Vec<(String, String)>;
        let instances = Family::<Labels, Gauge>::default();
        let memory = Family::<Labels, Gauge>::default();
        for (name, s) in self.all_stats() {
            let l = vec![("plugin".to_string(), name)];
            instances
                .get_or_create(&l)
                .set(i64::try_from(s.instances).unwrap_or(i64::MAX));
            memory
                .get_or_create(&l)
                .set(i64::try_from(s.memory_high_water).unwrap_or(i64::MAX));
        }
        registry.register(
            "plugin_instances",
            "Instances of a plugin built on this host since it started (the first, then one per restart)",
            instances,
        );
        registry.register(
            "plugin_memory_high_water_bytes",
            "The most linear memory an instance of a plugin has had on this host",
            memory,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recent_calls_and_failures_count_by_kind() {
        let o = Observed::default();
        for ms in 1..=100 {
            o.call("p", ms as f64, (ms % 50 == 0).then_some("trap"), 0);
        }
        o.call("p", 5.0, Some("timeout"), 3 << 20);
        o.instance("p");
        o.instance("p");
        o.memory("p", 2 << 20);
        o.memory("p", 1 << 20);
        let s = o.stats("p").unwrap();
        assert_eq!(s.calls, 101);
        assert_eq!(s.failures["trap"], 2);
        assert_eq!(s.failures["timeout"], 1);
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (50.0, 99.0, 100.0));
        assert_eq!(
            (s.instances, s.memory_high_water),
            (2, 3 << 20),
            "the high-water is the most seen by a call or an instance"
        );
        assert!(o.stats("other").is_none());
        for ms in 0..RECENT_CALLS {
            o.call("p", 1000.0 + ms as f64, None, 0);
        }
        assert!(o.stats("p").unwrap().p50_ms >= 1000.0, "old calls age out");
    }

    #[test]
    fn log_lines_are_kept_bounded_and_read_after_a_sequence_number() {
        let o = Observed::default();
        for i in 0..LOG_LINES + 10 {
            o.log("p", "info", &format!("line {i}"), 7);
        }
        let all = o.logs_after("p", 0, usize::MAX);
        assert_eq!(all.len(), LOG_LINES);
        assert_eq!(all[0].message, "line 10");
        let last = all.last().unwrap().seq;
        assert_eq!(o.logs_after("p", last - 2, 10).len(), 2);
        assert!(o.logs_after("p", last, 10).is_empty());
        assert!(o.logs_after("q", 0, 10).is_empty());
    }
}
