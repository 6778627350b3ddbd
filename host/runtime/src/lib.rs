//! The wasmtime embedding: the only crate that configures wasmtime and
//! generates host bindings from `wit/`.
//!
//! Key types: [`PluginRuntime`] (one engine, its epoch ticker and limits),
//! [`framework::FrameworkInstance`] (a framework plugin: one `Store`, calls
//! made one at a time), [`CallError`] (why a call failed).
//!
//! Design decisions:
//! - Sync calls with `concurrency_support(false)`: a sync component call
//!   costs ~200 ns here against ~720 ns with it on (see
//!   reference/wasm-costs.md); callers run plugin calls off the async
//!   reactor, on a blocking thread.
//! - Every call runs under an epoch deadline (a 10 ms ticker), a memory cap
//!   (a `ResourceLimiter` that also tells us *why* a grow failed), and a
//!   wasm stack limit. A trapped instance is dropped and rebuilt on the next
//!   call, after a backoff that grows with consecutive failures; a plugin
//!   that keeps failing is reported failed.
//! - A plugin sees only its world's imports. WASI is linked because Rust's
//!   std imports it, but with no preopens, no environment, no arguments and
//!   every socket address denied; its stdout and stderr are discarded.
//! - The host side of each world never touches the cluster directly: it
//!   records what the plugin asked for (`Effects`) and the caller commits
//!   them after the call returns. That keeps plugins outside the state
//!   machine's `apply`.

pub mod bindings;
mod convert;
pub mod framework;
pub mod health;
pub mod isolator;
pub mod observe;
pub mod placement;
mod sandbox;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, ResourceLimiter, Trap};

/// How often the epoch advances; deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits applied to every plugin call.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The longest a single call may run.
    pub call_deadline: Duration,
    /// The most linear memory one instance may have, in bytes.
    pub memory_limit: usize,
    /// The most wasm stack a call may use, in bytes.
    pub max_wasm_stack: usize,
    /// The largest HTTP response body a plugin may return.
    pub max_response_body: usize,
    /// Consecutive failed calls after which a plugin is reported failed.
    pub max_consecutive_failures: u32,
    /// Instances from a pre-reserved pool (about half the instantiation
    /// time, at the cost of large virtual-memory reservations); `None`
    /// allocates on demand.
    pub pool_size: Option<u32>,
    /// Deadlines by epoch interruption. Only the benchmarks turn this off,
    /// to measure what it costs: without it a looping plugin runs forever.
    pub epoch_interruption: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            call_deadline: Duration::from_secs(2),
            memory_limit: 128 << 20,
            max_wasm_stack: 1 << 20,
            max_response_body: 8 << 20,
            max_consecutive_failures: 5,
            pool_size: None,
            epoch_interruption: true,
        }
    }
}

/// Why a plugin call failed. The host stays up in every case.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("plugin {plugin} did not finish within {deadline_ms} ms and was stopped")]
    Timeout { plugin: String, deadline_ms: u64 },
    #[error("plugin {plugin} exceeded its memory limit of {limit_mb} MiB")]
    MemoryLimit { plugin: String, limit_mb: usize },
    #[error("plugin {plugin} trapped: {message}")]
    Trap { plugin: String, message: String },
    #[error("plugin {plugin} could not be started: {message}")]
    Instantiate { plugin: String, message: String },
    #[error("plugin {plugin} failed to initialize: {message}")]
    Init { plugin: String, message: String },
    #[error("plugin {plugin} returned a response over the {limit} byte limit")]
    ResponseTooLarge { plugin: String, limit: usize },
    #[error("plugin {plugin} is restarting after failures; next attempt in {retry_in_ms} ms")]
    Backoff { plugin: String, retry_in_ms: u64 },
    #[error(
        "plugin {plugin} is marked failed after {failures} failures in a row (last: {last_error}); fix it, then reinstall or reconfigure it"
    )]
    Failed {
        plugin: String,
        failures: u32,
        last_error: String,
    },
    #[error("plugin {plugin} broke the contract: {message}")]
    Contract { plugin: String, message: String },
}

/// Why a component cannot be loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadError {
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    #[error(
        "component was built against wasmos:plugin@{found}, but this host serves @{expected}; rebuild it against this release's wit/"
    )]
    WorldVersion { found: String, expected: String },
    #[error("component does not fit the {world} world: {message}")]
    WrongWorld { world: String, message: String },
}

impl CallError {
    /// A short name of what went wrong, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Timeout { .. } => "timeout",
            CallError::MemoryLimit { .. } => "memory_limit",
            CallError::Trap { .. } => "trap",
            CallError::Instantiate { .. } => "instantiate",
            CallError::Init { .. } => "init",
            CallError::ResponseTooLarge { .. } => "response_too_large",
            CallError::Backoff { .. } => "backoff",
            CallError::Failed { .. } => "failed",
            CallError::Contract { .. } => "contract",
        }
    }
}

/// The longest log line a plugin may write; longer ones are cut.
const MAX_LOG_LINE: usize = 4096;

/// Writes a plugin's log line to the host's log, tagged with its name,
/// and keeps it in `observed` (for `wasmos plugin logs`).
pub(crate) fn plugin_log(
    observed: Option<&observe::Observed>,
    plugin: &str,
    level: bindings::log::Level,
    mut message: String,
) {
    use bindings::log::Level;
    if message.len() > MAX_LOG_LINE {
        let mut cut = MAX_LOG_LINE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    if let Some(o) = observed {
        let name = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        o.log(plugin, name, &message, now_ms());
    }
    match level {
        Level::Trace => tracing::trace!(target: "wasmos::plugin", plugin, "{message}"),
        Level::Debug => tracing::debug!(target: "wasmos::plugin", plugin, "{message}"),
        Level::Info => tracing::info!(target: "wasmos::plugin", plugin, "{message}"),
        Level::Warn => tracing::warn!(target: "wasmos::plugin", plugin, "{message}"),
        Level::Error => tracing::error!(target: "wasmos::plugin", plugin, "{message}"),
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `sha256:<hex>` of a component's bytes.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The wasmtime engine shared by all plugins of a process.
#[derive(Clone)]
pub struct PluginRuntime {
    engine: Engine,
    config: RuntimeConfig,
    /// Calls and failures per plugin, for `/metrics`.
    pub calls: CallMetrics,
    /// Per plugin: figures and log lines, for `plugin show` and `logs`.
    pub observed: observe::Observed,
    ticker_stop: Arc<AtomicBool>,
    cache_dir: Option<std::path::PathBuf>,
    /// Components this runtime compiled (not loaded from the cache).
    compiled: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("config", &self.config)
            .finish()
    }
}

impl PluginRuntime {
    /// Builds the engine and starts its epoch ticker thread.
    pub fn new(config: RuntimeConfig) -> Result<PluginRuntime, String> {
        let mut c = Config::new();
        c.wasm_component_model(true);
        c.epoch_interruption(config.epoch_interruption);
        if let Some(n) = config.pool_size {
            let mut p = wasmtime::PoolingAllocationConfig::default();
            p.total_component_instances(n)
                .total_core_instances(n * 8)
                .total_memories(n * 2)
                .total_tables(n * 4)
                .max_memory_size(config.memory_limit);
            c.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(p));
        }
        c.max_wasm_stack(config.max_wasm_stack);
        c.concurrency_support(false);
        // One compiling thread, at low priority (see `compile`): a plugin
        // is seconds of CPU to compile, which must not starve a master's
        // raft heartbeats or an agent's tasks.
        c.parallel_compilation(false);
        let engine = Engine::new(&c).map_err(|e| format!("cannot build the wasm engine: {e}"))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (e, stop) = (engine.weak(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("wasmos-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match e.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })
            .map_err(|e| format!("cannot start the epoch ticker: {e}"))?;
        Ok(PluginRuntime {
            engine,
            config,
            calls: CallMetrics::default(),
            observed: observe::Observed::default(),
            ticker_stop,
            cache_dir: None,
            compiled: Arc::default(),
        })
    }

    /// Keeps compiled components in `dir`, so a restart loads them in
    /// about a tenth of a millisecond instead of compiling again.
    pub fn with_cache(mut self, dir: std::path::PathBuf) -> Self {
        self.cache_dir = Some(dir);
        self
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// How many components this runtime (and its clones) compiled rather
    /// than found in the cache.
    pub fn compiled(&self) -> u64 {
        self.compiled.load(Ordering::Relaxed)
    }

    /// Compiles a component (or loads it from the cache) after checking
    /// which `wasmos:plugin` version it was built against.
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, LoadError> {
        // On its own thread, niced: the daemon's other threads (raft,
        // HTTP, task supervision) win the CPU while it compiles.
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("wasmos-compile".into())
                .spawn_scoped(s, || {
                    lower_this_threads_priority();
                    self.compile_here(bytes)
                })
                .map_err(|e| LoadError::Invalid(format!("cannot start a compile thread: {e}")))?
                .join()
                .unwrap_or_else(|_| Err(LoadError::Invalid("the compiler panicked".into())))
        })
    }

    fn compile_here(&self, bytes: &[u8]) -> Result<Component, LoadError> {
        let component = match &self.cache_dir {
            Some(dir) => self.compile_cached(dir, bytes)?,
            None => {
                self.compiled.fetch_add(1, Ordering::Relaxed);
                Component::new(&self.engine, bytes)
                    .map_err(|e| LoadError::Invalid(format!("{e:#}")))?
            }
        };
        check_world_version(&self.engine, &component)?;
        Ok(component)
    }

    fn compile_cached(&self, dir: &std::path::Path, bytes: &[u8]) -> Result<Component, LoadError> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let name = format!("{}-{:016x}.cwasm", &digest(bytes)[7..], h.finish());
        let path = dir.join(name);
        let cached = |path: &std::path::Path| {
            if !path.exists() {
                return None;
            }
            load_precompiled(&self.engine, path)
                .inspect_err(|e| tracing::warn!(path = %path.display(), error = %e, "cached component unusable; compiling again"))
                .ok()
        };
        if let Some(c) = cached(&path) {
            return Ok(c);
        }
        // Daemons sharing the cache that load one component at once (the
        // masters of a cluster on one machine, at an install) compile it
        // once: the others wait on this lock, then find it cached. Without
        // the lock (it cannot be made) each compiles for itself.
        let _compiling = std::fs::create_dir_all(dir)
            .and_then(|_| {
                std::fs::File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(path.with_extension("lock"))
            })
            .and_then(|f| f.lock().map(|()| f))
            .inspect_err(|e| tracing::debug!(dir = %dir.display(), error = %e, "compiling without the cache's lock"))
            .ok();
        if let Some(c) = cached(&path) {
            return Ok(c);
        }
        self.compiled.fetch_add(1, Ordering::Relaxed);
        let compiled = self
            .engine
            .precompile_component(bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        // A name of its own per write: two threads compiling the same
        // component must not write one temporary file, or one truncates the
        // file the other has just renamed into place and mapped — which
        // ends the process with SIGBUS.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        let written = std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(&tmp, &compiled))
            .and_then(|_| std::fs::rename(&tmp, &path));
        match written {
            Ok(()) => load_precompiled(&self.engine, &path).map_err(LoadError::Invalid),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot cache a compiled component");
                Component::new(&self.engine, bytes)
                    .map_err(|e| LoadError::Invalid(format!("{e:#}")))
            }
        }
    }

    /// The epoch deadline, in ticks, for a call of `d`.
    pub(crate) fn deadline_ticks(d: Duration) -> u64 {
        (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
    }

    pub(crate) fn epochs(&self) -> bool {
        self.config.epoch_interruption
    }
}

impl Drop for PluginRuntime {
    fn drop(&mut self) {
        // Only the last clone stops the ticker (the Arc is shared).
        if Arc::strong_count(&self.ticker_stop) == 1 {
            self.ticker_stop.store(true, Ordering::Relaxed);
        }
    }
}

/// Nice 10 for the calling thread (Linux keeps a nice value per thread).
#[allow(unsafe_code)]
fn lower_this_threads_priority() {
    // SAFETY: setpriority(2) takes plain integers; `who` 0 is the calling
    // thread on Linux. A failure only leaves the priority as it was.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
}

/// Loads a component this process (or an earlier run of it) compiled.
#[allow(unsafe_code)]
fn load_precompiled(engine: &Engine, path: &std::path::Path) -> Result<Component, String> {
    // SAFETY: wasmtime requires that a precompiled artifact be trusted: it
    // is machine code. The only writer of this cache is this runtime, into
    // a directory under the daemon's own data dir, written to a temporary
    // name and renamed whole; its name binds it to the component's digest
    // and the engine's compatibility hash, and wasmtime checks the header.
    unsafe { Component::deserialize_file(engine, path) }.map_err(|e| format!("{e:#}"))
}

/// Refuses components whose `wasmos:plugin` imports or exports name another
/// version, with a message that says so (wasmtime's own would only say an
/// import is missing).
fn check_world_version(engine: &Engine, component: &Component) -> Result<(), LoadError> {
    let ty = component.component_type();
    let names = ty
        .imports(engine)
        .map(|(n, _)| n.to_string())
        .chain(ty.exports(engine).map(|(n, _)| n.to_string()));
    for name in names {
        if let Some(rest) = name.strip_prefix("wasmos:plugin/")
            && let Some((_, version)) = rest.split_once('@')
            && !wasmos_core::plugin::world_compatible(version)
        {
            return Err(LoadError::WorldVersion {
                found: version.to_string(),
                expected: wasmos_core::plugin::WORLD_VERSION.to_string(),
            });
        }
    }
    Ok(())
}

/// A memory limiter that remembers whether it refused a grow, so a trap
/// that follows can be reported as what it is.
#[derive(Debug)]
pub(crate) struct Limiter {
    memory_limit: usize,
    pub(crate) denied: bool,
    /// The most linear memory granted to a memory of the instance.
    pub(crate) high_water: usize,
}

impl Limiter {
    pub(crate) fn new(memory_limit: usize) -> Self {
        Limiter {
            memory_limit,
            denied: false,
            high_water: 0,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.denied = true;
            return Ok(false);
        }
        self.high_water = self.high_water.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        16
    }
}

/// How healthy a plugin has been lately.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginHealth {
    Healthy,
    /// Recent calls failed; it is being restarted with backoff.
    Degraded,
    /// It failed too often in a row; calls are refused until it is
    /// reinstalled or reconfigured.
    Failed,
}

/// Failure bookkeeping for one plugin instance: consecutive failures, the
/// last error, and when the next attempt may be made.
#[derive(Debug, Clone)]
pub struct FailureTracker {
    pub consecutive: u32,
    pub total: u64,
    pub last_error: Option<String>,
    next_attempt: Option<Instant>,
    max_consecutive: u32,
}

impl FailureTracker {
    pub fn new(max_consecutive: u32) -> Self {
        FailureTracker {
            consecutive: 0,
            total: 0,
            last_error: None,
            next_attempt: None,
            max_consecutive,
        }
    }

    pub fn health(&self) -> PluginHealth {
        if self.consecutive >= self.max_consecutive {
            PluginHealth::Failed
        } else if self.consecutive > 0 {
            PluginHealth::Degraded
        } else {
            PluginHealth::Healthy
        }
    }

    pub(crate) fn record_failure(&mut self, err: &CallError) {
        self.consecutive += 1;
        self.total += 1;
        self.last_error = Some(err.to_string());
        // 100 ms, 200 ms, 400 ms ... capped at 30 s.
        let backoff =
            Duration::from_millis(100u64 << self.consecutive.min(9)).min(Duration::from_secs(30));
        self.next_attempt = Some(Instant::now() + backoff);
    }

    pub(crate) fn record_success(&mut self) {
        self.consecutive = 0;
        self.next_attempt = None;
    }

    /// Time left before another instantiation may be tried.
    pub(crate) fn wait_left(&self) -> Option<Duration> {
        self.next_attempt
            .and_then(|t| t.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }
}

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

type PluginLabels = Vec<(String, String)>;

/// Plugin calls as Prometheus sees them: seconds per call by plugin, and
/// failures by plugin and kind. Clones share the same series.
#[derive(Debug, Clone)]
pub struct CallMetrics {
    pub seconds: Family<PluginLabels, Histogram, fn() -> Histogram>,
    pub failures: Family<PluginLabels, Counter>,
}

impl Default for CallMetrics {
    fn default() -> Self {
        fn histogram() -> Histogram {
            Histogram::new(exponential_buckets(0.00005, 2.0, 18))
        }
        CallMetrics {
            seconds: Family::new_with_constructor(histogram),
            failures: Default::default(),
        }
    }
}

impl CallMetrics {
    /// Records one call of `plugin` that took `seconds` and ended in
    /// `failure` (a [`CallError`]'s kind) or not.
    pub fn record(&self, plugin: &str, seconds: f64, failure: Option<&CallError>) {
        self.seconds
            .get_or_create(&vec![("plugin".into(), plugin.to_string())])
            .observe(seconds);
        if let Some(e) = failure {
            self.failures
                .get_or_create(&vec![
                    ("plugin".into(), plugin.to_string()),
                    ("kind".into(), e.kind().to_string()),
                ])
                .inc();
        }
    }
}

/// Turns a wasmtime error from a call into a [`CallError`].
pub(crate) fn classify(
    plugin: &str,
    err: wasmtime::Error,
    memory_denied: bool,
    config: &RuntimeConfig,
    deadline: Duration,
) -> CallError {
    if memory_denied {
        return CallError::MemoryLimit {
            plugin: plugin.to_string(),
            limit_mb: config.memory_limit >> 20,
        };
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Timeout {
            plugin: plugin.to_string(),
            deadline_ms: deadline.as_millis() as u64,
        },
        Some(Trap::StackOverflow) => CallError::Trap {
            plugin: plugin.to_string(),
            message: "wasm stack overflow (recursion too deep)".into(),
        },
        Some(trap) => {
            tracing::debug!(
                plugin,
                error = format!("{err:#}"),
                "trap with its wasm backtrace"
            );
            CallError::Trap {
                plugin: plugin.to_string(),
                message: trap.to_string(),
            }
        }
        None => CallError::Trap {
            plugin: plugin.to_string(),
            message: format!("{err:#}"),
        },
    }
}
