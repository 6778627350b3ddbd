//! The part every plugin instance shares, whatever its world: one `Store`,
//! built on first use with `init`; each call under a deadline and a memory
//! cap; a failed call drops the instance, and the next one is built after
//! a backoff; too many failures in a row and the plugin is reported failed.

use wasmtime::Store;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView};

use crate::{CallError, FailureTracker, Limiter, LoadError, PluginHealth, PluginRuntime, classify};

/// The WASI context every plugin gets: no files, no environment, no
/// arguments, no sockets; its stdout goes nowhere and the tail of its
/// stderr is kept for error messages.
pub(crate) fn empty_wasi(stderr: Tail) -> WasiCtx {
    let mut wasi = WasiCtxBuilder::new();
    wasi.stderr(stderr)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    wasi.build()
}

/// Per-store state common to all worlds.
pub struct Common {
    pub(crate) plugin: String,
    /// Where log lines are kept (set when a sandbox builds the instance).
    observed: Option<crate::observe::Observed>,
    stderr: Tail,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
}

impl Common {
    pub(crate) fn new(plugin: &str, memory_limit: usize) -> Self {
        let stderr = Tail::default();
        Common {
            plugin: plugin.to_string(),
            observed: None,
            wasi: empty_wasi(stderr.clone()),
            stderr,
            table: ResourceTable::new(),
            limiter: Limiter::new(memory_limit),
        }
    }
}

/// A world's per-store state.
pub(crate) trait HostData: Send + 'static {
    fn common(&mut self) -> &mut Common;
    /// Forgets what a failed call buffered.
    fn discard(&mut self) {}
}

/// Implements WASI for a host type through its [`Common`].
macro_rules! wasi_view {
    ($t:ty) => {
        impl wasmtime_wasi::WasiView for $t {
            fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
                self.common.wasi_view()
            }
        }
    };
}
pub(crate) use wasi_view;

impl Common {
    /// A line the plugin logs.
    pub(crate) fn log(&self, level: crate::bindings::log::Level, message: String) {
        crate::plugin_log(self.observed.as_ref(), &self.plugin, level, message);
    }

    pub(crate) fn wasi_view(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Adds the plugin's own panic message to a trap.
fn with_panic(err: CallError, panic: Option<String>) -> CallError {
    match (err, panic) {
        (CallError::Trap { plugin, message }, Some(p)) => CallError::Trap {
            plugin,
            message: format!("{message}: {p}"),
        },
        (e, _) => e,
    }
}

/// What a world brings to a [`Sandbox`].
pub(crate) trait World: Send + 'static {
    type Host: HostData;
    type Bindings: Send + 'static;

    /// A fresh store's state.
    fn new_host(&self, plugin: &str, memory_limit: usize) -> Self::Host;
    /// Instantiates the component.
    fn instantiate(&self, store: &mut Store<Self::Host>) -> wasmtime::Result<Self::Bindings>;
    /// The world's `init` export.
    fn init(
        &self,
        bindings: &Self::Bindings,
        store: &mut Store<Self::Host>,
        config: &[(String, String)],
    ) -> wasmtime::Result<Result<(), String>>;
}

/// Links `component` against a world's linker: fails with a clear error if
/// the component does not fit the world.
pub(crate) fn link<T: 'static>(
    runtime: &PluginRuntime,
    world: &str,
    component: &Component,
    add: impl FnOnce(&mut Linker<T>) -> wasmtime::Result<()>,
) -> Result<wasmtime::component::InstancePre<T>, LoadError> {
    let wrong = |e: wasmtime::Error| LoadError::WrongWorld {
        world: world.into(),
        message: format!("{e:#}"),
    };
    let mut linker: Linker<T> = Linker::new(runtime.engine());
    add(&mut linker).map_err(wrong)?;
    linker.instantiate_pre(component).map_err(wrong)
}

/// A plugin instance of world `W`.
pub(crate) struct Sandbox<W: World> {
    world: W,
    runtime: PluginRuntime,
    name: String,
    config: Vec<(String, String)>,
    live: Option<(Store<W::Host>, W::Bindings)>,
    failures: FailureTracker,
    /// The linear memory of the instance the last call ran in, in bytes.
    memory: u64,
}

impl<W: World> Sandbox<W> {
    /// The world, to change what new instances get.
    pub(crate) fn world_mut(&mut self) -> &mut W {
        &mut self.world
    }

    pub(crate) fn new(
        runtime: &PluginRuntime,
        name: &str,
        world: W,
        config: std::collections::BTreeMap<String, String>,
    ) -> Self {
        Sandbox {
            world,
            runtime: runtime.clone(),
            name: name.to_string(),
            config: config.into_iter().collect(),
            live: None,
            failures: FailureTracker::new(runtime.config().max_consecutive_failures),
            memory: 0,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn runtime(&self) -> &PluginRuntime {
        &self.runtime
    }

    pub(crate) fn health(&self) -> (PluginHealth, Option<String>) {
        (self.failures.health(), self.failures.last_error.clone())
    }

    /// Forgets failures and the live instance, with a new configuration.
    /// Drops the live instance: the next call builds a new one (`init`
    /// first), keeping the configuration and the failure count.
    pub(crate) fn restart(&mut self) {
        self.live = None;
    }

    pub(crate) fn reset(&mut self, config: std::collections::BTreeMap<String, String>) {
        self.config = config.into_iter().collect();
        self.live = None;
        self.failures = FailureTracker::new(self.runtime.config().max_consecutive_failures);
    }

    /// Runs `f` on a live instance under the deadline. `f` learns whether
    /// the instance is new (so a world can first bring it up to date).
    pub(crate) fn call<R>(
        &mut self,
        f: impl FnOnce(&W::Bindings, &mut Store<W::Host>, bool) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let deadline = self.runtime.config().call_deadline;
        self.call_checked(deadline, f, |_| Ok(()))
    }

    /// Like [`Self::call`], with a deadline of its own (for calls that
    /// wait on the host, such as health probes).
    pub(crate) fn call_within<R>(
        &mut self,
        deadline: std::time::Duration,
        f: impl FnOnce(&W::Bindings, &mut Store<W::Host>, bool) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        self.call_checked(deadline, f, |_| Ok(()))
    }

    /// The general form: `check` judges what the plugin returned (its
    /// size, its length); a result that breaks the contract counts as a
    /// failed call, like a trap.
    pub(crate) fn call_checked<R>(
        &mut self,
        deadline: std::time::Duration,
        f: impl FnOnce(&W::Bindings, &mut Store<W::Host>, bool) -> wasmtime::Result<R>,
        check: impl FnOnce(&R) -> Result<(), CallError>,
    ) -> Result<R, CallError> {
        let started = std::time::Instant::now();
        self.memory = 0;
        let r = self.call_unmeasured(deadline, f, check);
        let seconds = started.elapsed().as_secs_f64();
        self.runtime
            .calls
            .record(&self.name, seconds, r.as_ref().err());
        self.runtime.observed.call(
            &self.name,
            seconds * 1000.0,
            r.as_ref().err().map(CallError::kind),
            self.memory,
        );
        r
    }

    fn call_unmeasured<R>(
        &mut self,
        deadline: std::time::Duration,
        f: impl FnOnce(&W::Bindings, &mut Store<W::Host>, bool) -> wasmtime::Result<R>,
        check: impl FnOnce(&R) -> Result<(), CallError>,
    ) -> Result<R, CallError> {
        if self.failures.health() == PluginHealth::Failed {
            return Err(CallError::Failed {
                plugin: self.name.clone(),
                failures: self.failures.consecutive,
                last_error: self.failures.last_error.clone().unwrap_or_default(),
            });
        }
        let fresh = self.live.is_none();
        if fresh {
            if let Some(left) = self.failures.wait_left() {
                return Err(CallError::Backoff {
                    plugin: self.name.clone(),
                    retry_in_ms: left.as_millis() as u64,
                });
            }
            match self.instantiate() {
                Ok(live) => self.live = Some(live),
                Err(e) => {
                    self.failures.record_failure(&e);
                    return Err(e);
                }
            }
        }
        let Some((store, bindings)) = self.live.as_mut() else {
            unreachable!("the instance was just built")
        };
        if self.runtime.epochs() {
            store.set_epoch_deadline(PluginRuntime::deadline_ticks(deadline));
        }
        store.data_mut().common().limiter.denied = false;
        store.data_mut().common().stderr.clear();
        let result = f(bindings, store, fresh);
        self.memory = store.data_mut().common().limiter.high_water as u64;
        let outcome = match result {
            Ok(r) => check(&r).map(|()| r),
            Err(e) => {
                let common = store.data_mut().common();
                let (denied, panic) = (common.limiter.denied, common.stderr.panic_message());
                Err(with_panic(
                    classify(&self.name, e, denied, self.runtime.config(), deadline),
                    panic,
                ))
            }
        };
        match outcome {
            Ok(r) => {
                self.failures.record_success();
                Ok(r)
            }
            Err(err) => {
                if let Some((store, _)) = self.live.as_mut() {
                    store.data_mut().discard();
                }
                tracing::warn!(plugin = %self.name, error = %err, "plugin call failed; the instance will be rebuilt");
                self.live = None;
                self.failures.record_failure(&err);
                Err(err)
            }
        }
    }

    /// A store and an instance, without `init`: what instantiation alone
    /// costs, for the benchmarks. The caller drops it (untimed).
    pub(crate) fn instantiate_bare(&self) -> wasmtime::Result<Box<dyn std::any::Any>> {
        let cfg = self.runtime.config();
        let host = self.world.new_host(&self.name, cfg.memory_limit);
        let mut store = Store::new(self.runtime.engine(), host);
        store.limiter(|h| &mut h.common().limiter);
        if self.runtime.epochs() {
            store.set_epoch_deadline(PluginRuntime::deadline_ticks(cfg.call_deadline));
        }
        let bindings = self.world.instantiate(&mut store)?;
        Ok(Box::new((store, bindings)))
    }

    /// Drops the live instance; the next call builds a new one.
    pub(crate) fn discard(&mut self) {
        self.live = None;
    }

    /// Builds the instance (with `init`) now, if there is none.
    pub(crate) fn warm(&mut self) -> Result<(), CallError> {
        if self.live.is_none() {
            self.live = Some(self.instantiate()?);
        }
        Ok(())
    }

    fn instantiate(&mut self) -> Result<(Store<W::Host>, W::Bindings), CallError> {
        let cfg = self.runtime.config().clone();
        let mut host = self.world.new_host(&self.name, cfg.memory_limit);
        host.common().observed = Some(self.runtime.observed.clone());
        let mut store = Store::new(self.runtime.engine(), host);
        store.limiter(|h| &mut h.common().limiter);
        if self.runtime.epochs() {
            store.set_epoch_deadline(PluginRuntime::deadline_ticks(cfg.call_deadline));
        }
        let fail = |store: &mut Store<W::Host>, e: wasmtime::Error| {
            let common = store.data_mut().common();
            let (denied, panic) = (common.limiter.denied, common.stderr.panic_message());
            with_panic(
                classify(&self.name, e, denied, &cfg, cfg.call_deadline),
                panic,
            )
        };
        let bindings = match self.world.instantiate(&mut store) {
            Ok(b) => b,
            Err(e) => {
                let err = fail(&mut store, e);
                return Err(CallError::Instantiate {
                    plugin: self.name.clone(),
                    message: err.to_string(),
                });
            }
        };
        match self.world.init(&bindings, &mut store, &self.config) {
            Ok(Ok(())) => {
                self.runtime.observed.instance(&self.name);
                let high_water = store.data_mut().common().limiter.high_water;
                self.runtime.observed.memory(&self.name, high_water as u64);
                Ok((store, bindings))
            }
            Ok(Err(message)) => Err(CallError::Init {
                plugin: self.name.clone(),
                message,
            }),
            Err(e) => Err(fail(&mut store, e)),
        }
    }
}

/// A plugin's stderr: the last few KiB it wrote, kept in memory so that a
/// trap can be reported with the panic message that came before it.
/// Writing never fails (a full buffer drops its oldest bytes).
#[derive(Clone, Default)]
pub(crate) struct Tail(std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<u8>>>);

const TAIL: usize = 8 * 1024;

impl Tail {
    fn push(&self, bytes: &[u8]) {
        let mut b = self.0.lock().unwrap_or_else(|p| p.into_inner());
        b.extend(bytes.iter().copied().skip(bytes.len().saturating_sub(TAIL)));
        let extra = b.len().saturating_sub(TAIL);
        b.drain(..extra);
    }

    /// What the plugin said about why it failed, if anything: a Rust
    /// panic's message, or the exception that ended a Python traceback
    /// (componentize-py prints it before trapping), with where it was
    /// raised.
    pub(crate) fn panic_message(&self) -> Option<String> {
        let mut b = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let text = String::from_utf8_lossy(b.make_contiguous()).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        if let Some(at) = lines.iter().rposition(|l| l.contains("panicked at")) {
            // Rust prints "thread '...' panicked at FILE:LINE:COL:" then the
            // message on the next line.
            let msg = lines
                .get(at + 1)
                .map(|m| m.trim())
                .filter(|m| !m.is_empty());
            return Some(match msg {
                Some(m) => format!("{} ({})", m, lines[at].trim().trim_end_matches(':')),
                None => lines[at].trim().to_string(),
            });
        }
        let at = lines
            .iter()
            .rposition(|l| l.starts_with("Traceback (most recent call last)"))?;
        let tail = &lines[at + 1..];
        // The exception is the last line that is not indented; where it
        // was raised, the last `File "...", line N, in f` above it.
        let exception = tail
            .iter()
            .rposition(|l| !l.is_empty() && !l.starts_with(' '))?;
        let place = tail[..exception]
            .iter()
            .rev()
            .find(|l| l.trim_start().starts_with("File "))
            .map(|l| l.trim());
        Some(match place {
            Some(p) => format!("{} ({p})", tail[exception].trim()),
            None => tail[exception].trim().to_string(),
        })
    }

    fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl wasmtime_wasi::cli::IsTerminal for Tail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for Tail {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::OutputStream for Tail {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), wasmtime_wasi::p2::StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), wasmtime_wasi::p2::StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, wasmtime_wasi::p2::StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for Tail {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Tail {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::Tail;

    #[test]
    fn the_tail_keeps_the_last_panic_and_never_grows_unbounded() {
        let t = Tail::default();
        t.push(&vec![b'x'; 100_000]);
        t.push(b"\nthread '<unnamed>' panicked at src/lib.rs:40:17:\nthis plugin traps on purpose\nnote: run with RUST_BACKTRACE=1\n");
        assert_eq!(
            t.panic_message().as_deref(),
            Some("this plugin traps on purpose (thread '<unnamed>' panicked at src/lib.rs:40:17)")
        );
        assert!(t.0.lock().unwrap().len() <= super::TAIL);
        t.clear();
        assert_eq!(t.panic_message(), None);
    }

    #[test]
    fn a_python_exception_is_the_reason_with_where_it_was_raised() {
        let t = Tail::default();
        t.push(b"Traceback (most recent call last):\n  File \"/app.py\", line 40, in offers\n    job = self.queued()[0]\n          ~~~~~~~~~~~~~^^^\nIndexError: list index out of range\n");
        assert_eq!(
            t.panic_message().as_deref(),
            Some("IndexError: list index out of range (File \"/app.py\", line 40, in offers)")
        );
    }
}
