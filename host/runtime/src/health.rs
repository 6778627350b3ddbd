//! The host side of the `health-check` world.
//!
//! A health-check plugin decides *how* to judge a task; the host does the
//! networking for it through `probe`, and only towards the task's own host
//! and ports, within the check's timeout. A probe anywhere else is refused.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::{Component, HasSelf};

use crate::bindings::health::wasmos::plugin::{health_types as ht, probe};
use crate::bindings::health::{HealthCheck, HealthCheckPre};
use crate::bindings::{clock, log, types as wit};
use crate::convert::{config_to_wit, pairs_to_wit};
use crate::sandbox::{Common, HostData, Sandbox, World, link, wasi_view};
use crate::{CallError, LoadError, PluginHealth, PluginRuntime};

/// The most a probe reads of a response body.
const MAX_BODY: usize = 4096;
/// The most a probe reads of response headers.
const MAX_HEAD: usize = 16 * 1024;
/// Probes one check may make.
const MAX_PROBES: u32 = 16;

/// Runs a shell command where the task runs: (exit code, output) or why not.
pub type Exec =
    std::sync::Arc<dyn Fn(&str, Duration) -> Result<(i32, Vec<u8>), String> + Send + Sync>;

/// The task to check.
#[derive(Clone)]
pub struct CheckTarget {
    pub task_id: String,
    /// Where the task's ports are reached from the agent.
    pub ip: IpAddr,
    /// The task's ports; probes may reach only these.
    pub ports: Vec<u16>,
    pub config: BTreeMap<String, String>,
    pub timeout: Duration,
    /// How to run a command in the task's context, where it can.
    pub exec: Option<Exec>,
}

impl std::fmt::Debug for CheckTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckTarget")
            .field("task_id", &self.task_id)
            .field("ip", &self.ip)
            .field("ports", &self.ports)
            .field("timeout", &self.timeout)
            .field("exec", &self.exec.is_some())
            .finish()
    }
}

/// A check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub healthy: bool,
    pub message: String,
}

pub struct HealthHost {
    common: Common,
    ip: IpAddr,
    ports: Vec<u16>,
    deadline: Instant,
    probes: u32,
    exec: Option<Exec>,
}

wasi_view!(HealthHost);

impl HostData for HealthHost {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }
}

impl wit::Host for HealthHost {}
impl ht::Host for HealthHost {}

impl log::Host for HealthHost {
    fn log(&mut self, level: log::Level, message: String) {
        self.common.log(level, message);
    }
}

impl clock::Host for HealthHost {
    fn now_ms(&mut self) -> u64 {
        crate::now_ms()
    }
}

impl HealthHost {
    /// Checks a probe is allowed; returns where to connect and for how long.
    fn permit(&mut self, port: u16, timeout_ms: u32) -> Result<(SocketAddr, Duration), String> {
        if !self.ports.contains(&port) {
            return Err(format!(
                "port {port} is not one of the task's ports {:?}; probes may reach only the task",
                self.ports
            ));
        }
        self.probes += 1;
        if self.probes > MAX_PROBES {
            return Err(format!("more than {MAX_PROBES} probes in one check"));
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        let timeout = Duration::from_millis(u64::from(timeout_ms.max(1))).min(left);
        if timeout.is_zero() {
            return Err("the check's time is up".into());
        }
        Ok((SocketAddr::new(self.ip, port), timeout))
    }
}

fn connect(addr: SocketAddr, timeout: Duration) -> Result<(TcpStream, Instant), String> {
    let until = Instant::now() + timeout;
    let s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    Ok((s, until))
}

fn left(until: Instant) -> Result<Duration, String> {
    let d = until.saturating_duration_since(Instant::now());
    if d.is_zero() {
        Err("timed out".into())
    } else {
        Ok(d)
    }
}

/// Accepts any server certificate (signatures still checked): tasks serve
/// self-signed ones, and Marathon's HTTPS checks do not verify them.
#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS client configuration of HTTPS probes (made once).
fn tls_config() -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    static CONFIG: std::sync::OnceLock<Result<std::sync::Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS setup: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Ok(std::sync::Arc::new(config))
        })
        .clone()
}

/// A minimal HTTPS GET (TLS over [`http_get`]'s exchange).
fn https_get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<probe::HttpResponse, String> {
    let (s, until) = connect(addr, timeout)?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(tls_config()?, name)
        .map_err(|e| format!("TLS to {addr}: {e}"))?;
    let tls = rustls::StreamOwned::new(conn, s);
    exchange(tls, addr, path, until, |t, d| {
        t.sock.set_read_timeout(Some(d))?;
        t.sock.set_write_timeout(Some(d))
    })
}

/// A minimal HTTP/1.1 GET: status and the start of the body.
fn http_get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<probe::HttpResponse, String> {
    let (s, until) = connect(addr, timeout)?;
    exchange(s, addr, path, until, |t, d| {
        t.set_read_timeout(Some(d))?;
        t.set_write_timeout(Some(d))
    })
}

/// Sends a GET on `s` and reads the status and the start of the body, the
/// socket's timeouts set by `deadline` to what is left before `until`.
fn exchange<S: Read + Write>(
    mut s: S,
    addr: SocketAddr,
    path: &str,
    until: Instant,
    deadline: impl Fn(&mut S, Duration) -> std::io::Result<()>,
) -> Result<probe::HttpResponse, String> {
    deadline(&mut s, left(until)?).map_err(|e| e.to_string())?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: wasmos-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .and_then(|()| s.flush())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err("response headers too large".into());
        }
        deadline(&mut s, left(until)?).map_err(|e| e.to_string())?;
        let n = s
            .read(&mut chunk)
            .map_err(|e| format!("read from {addr}: {e}"))?;
        if n == 0 {
            return Err(format!("{addr} closed the connection before answering"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let status_line = buf[..head_end]
        .split(|b| *b == b'\n')
        .next()
        .unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line);
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/"))
        .ok_or_else(|| format!("not an HTTP response: {:?}", status_line.trim()))?;
    let mut body = buf[head_end..].to_vec();
    while body.len() < MAX_BODY {
        let Ok(d) = left(until) else { break };
        if deadline(&mut s, d).is_err() {
            break;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(MAX_BODY);
    Ok(probe::HttpResponse { status, body })
}

/// A probe's path: no way to smuggle another request line.
fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/')
        || path.bytes().any(|b| b.is_ascii_control() || b == b' ')
        || path.len() > 2048
    {
        return Err(format!(
            "path {path:?} must start with / and contain no spaces or control characters"
        ));
    }
    Ok(())
}

impl probe::Host for HealthHost {
    fn http_get(
        &mut self,
        port: u16,
        path: String,
        timeout_ms: u32,
    ) -> Result<probe::HttpResponse, String> {
        check_path(&path)?;
        let (addr, timeout) = self.permit(port, timeout_ms)?;
        http_get(addr, &path, timeout)
    }

    fn https_get(
        &mut self,
        port: u16,
        path: String,
        timeout_ms: u32,
    ) -> Result<probe::HttpResponse, String> {
        check_path(&path)?;
        let (addr, timeout) = self.permit(port, timeout_ms)?;
        https_get(addr, &path, timeout)
    }

    fn tcp_connect(&mut self, port: u16, timeout_ms: u32) -> Result<(), String> {
        let (addr, timeout) = self.permit(port, timeout_ms)?;
        connect(addr, timeout).map(|_| ())
    }

    fn exec(&mut self, command: String, timeout_ms: u32) -> Result<probe::ExecResult, String> {
        if command.trim().is_empty() || command.len() > 16 * 1024 || command.contains('\0') {
            return Err("the command must be 1 byte to 16 KiB of text without NUL".into());
        }
        let exec = self
            .exec
            .clone()
            .ok_or_else(|| "this task's containerizer cannot run commands in it".to_string())?;
        self.probes += 1;
        if self.probes > MAX_PROBES {
            return Err(format!("more than {MAX_PROBES} probes in one check"));
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        let timeout = Duration::from_millis(u64::from(timeout_ms.max(1))).min(left);
        if timeout.is_zero() {
            return Err("the check's time is up".into());
        }
        let (exit_code, mut output) = exec(&command, timeout)?;
        output.truncate(MAX_BODY);
        Ok(probe::ExecResult { exit_code, output })
    }
}

pub(crate) struct HealthWorld {
    pre: HealthCheckPre<HealthHost>,
}

impl World for HealthWorld {
    type Host = HealthHost;
    type Bindings = HealthCheck;

    fn new_host(&self, plugin: &str, memory_limit: usize) -> HealthHost {
        HealthHost {
            common: Common::new(plugin, memory_limit),
            ip: IpAddr::from([127, 0, 0, 1]),
            ports: Vec::new(),
            deadline: Instant::now(),
            probes: 0,
            exec: None,
        }
    }

    fn instantiate(&self, store: &mut Store<HealthHost>) -> wasmtime::Result<HealthCheck> {
        self.pre.instantiate(store)
    }

    fn init(
        &self,
        b: &HealthCheck,
        store: &mut Store<HealthHost>,
        config: &[(String, String)],
    ) -> wasmtime::Result<Result<(), String>> {
        b.call_init(store, &config_to_wit(config))
    }
}

fn pre(
    runtime: &PluginRuntime,
    component: &Component,
) -> Result<HealthCheckPre<HealthHost>, LoadError> {
    let pre = link(runtime, "health-check", component, |l| {
        wasmtime_wasi::p2::add_to_linker_sync(l)?;
        HealthCheck::add_to_linker::<_, HasSelf<_>>(l, |h| h)
    })?;
    HealthCheckPre::new(pre).map_err(|e| LoadError::WrongWorld {
        world: "health-check".into(),
        message: format!("{e:#}"),
    })
}

/// Checks that a component is a health check this host can run.
pub fn check(runtime: &PluginRuntime, component: &Component) -> Result<(), LoadError> {
    pre(runtime, component).map(|_| ())
}

/// A sandboxed health-check plugin.
pub struct HealthCheckInstance {
    sandbox: Sandbox<HealthWorld>,
}

impl HealthCheckInstance {
    pub fn new(
        runtime: &PluginRuntime,
        name: &str,
        component: &Component,
        config: BTreeMap<String, String>,
    ) -> Result<Self, LoadError> {
        let world = HealthWorld {
            pre: pre(runtime, component)?,
        };
        Ok(HealthCheckInstance {
            sandbox: Sandbox::new(runtime, name, world, config),
        })
    }

    pub fn name(&self) -> &str {
        self.sandbox.name()
    }

    pub fn health(&self) -> (PluginHealth, Option<String>) {
        self.sandbox.health()
    }

    /// Restarts the plugin with a new configuration, forgetting failures.
    pub fn reset(&mut self, config: BTreeMap<String, String>) {
        self.sandbox.reset(config);
    }

    /// Checks a task once, within its timeout.
    pub fn check(&mut self, t: &CheckTarget) -> Result<CheckResult, CallError> {
        let target = ht::CheckTarget {
            task_id: t.task_id.clone(),
            host: t.ip.to_string(),
            ports: t.ports.clone(),
            config: pairs_to_wit(&t.config),
            timeout_ms: t.timeout.as_millis().min(u128::from(u32::MAX)) as u32,
        };
        let (ip, ports, deadline) = (t.ip, t.ports.clone(), Instant::now() + t.timeout);
        let exec = t.exec.clone();
        // Probes block outside wasm; the call's deadline covers them too.
        let r = self
            .sandbox
            .call_within(t.timeout + Duration::from_secs(1), |h, store, _| {
                let data = store.data_mut();
                data.ip = ip;
                data.ports = ports;
                data.deadline = deadline;
                data.probes = 0;
                data.exec = exec;
                h.call_check(store, &target)
            })?;
        Ok(CheckResult {
            healthy: r.healthy,
            message: r.message,
        })
    }
}
