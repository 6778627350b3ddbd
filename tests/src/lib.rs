//! A harness for end-to-end tests: starts the real `wasmos` binary (a
//! one-machine cluster, or a master and agents as separate processes) on
//! port 0 in temp dirs, and waits on conditions with deadlines.
//!
//! The binary is the one cargo built next to this test (`target/<profile>/
//! wasmos`), or `$WASMOS_BIN`. `./dev test` builds it first.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// For tests whose tasks share files with the test through the host's
/// `/tmp` or report host pids: plain processes, not the native
/// containerizer's own `/tmp` and pid namespace, run as root (the test's
/// temp dirs are its own), which this agent's operator chose.
pub const PROCESS: &[&str] = &["--containerizer", "process", "--task-user", "root"];

/// The default deadline for a condition.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How long a daemon may take to announce itself: a first `up` compiles
/// the bundled plugins on every master, which under the whole suite's
/// parallel load has taken longer than [`DEADLINE`].
pub const START_DEADLINE: Duration = Duration::from_secs(90);

/// Which cluster CA each daemon address (`host:port`) belongs to, and the
/// token to present there: the clusters a test starts register here, so
/// that [`Api::new`] and [`cli`] trust the right CA and present the right
/// token for the address they are given.
static TRUSTED: std::sync::Mutex<Vec<(String, PathBuf, Option<String>)>> =
    std::sync::Mutex::new(Vec::new());

fn authority_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', ',']).next().unwrap_or("").to_string()
}

/// Records that the daemon at `url` has a certificate from the CA whose
/// certificate is at `ca`.
pub fn trust(url: &str, ca: &Path) {
    register(url, ca, None);
}

/// Records the CA of the master at `url` and the (management) token to
/// present to it.
pub fn register(url: &str, ca: &Path, token: Option<&str>) {
    let mut t = TRUSTED.lock().unwrap_or_else(|p| p.into_inner());
    let a = authority_of(url);
    t.retain(|(u, _, _)| *u != a);
    t.push((a, ca.to_path_buf(), token.map(str::to_string)));
}

/// What a test registered for the daemon at `url`: its CA and token.
fn registered(url: &str) -> Option<(PathBuf, Option<String>)> {
    let a = authority_of(url);
    TRUSTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(u, _, _)| *u == a)
        .map(|(_, p, t)| (p.clone(), t.clone()))
}

/// The plugin signing key the cluster of each master address trusts
/// (`wasmos up`'s): [`cli`] signs local plugins with it.
static SIGNING: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());

/// Records the private key the cluster at `url` trusts to sign plugins.
pub fn register_signing_key(url: &str, key: &Path) {
    let mut s = SIGNING.lock().unwrap_or_else(|p| p.into_inner());
    let a = authority_of(url);
    s.retain(|(u, _)| *u != a);
    s.push((a, key.to_path_buf()));
}

/// A plugin signing key pair under `dir` (`plugin-signing.key`, `.pub`),
/// made once, for masters started with `--bootstrap-plugin-key <pub>`:
/// returns (private key, `--bootstrap-plugin-key` value).
pub fn plugin_signing_key(dir: &Path) -> (PathBuf, String) {
    let (private, public) = (
        dir.join("plugin-signing.key"),
        dir.join("plugin-signing.pub"),
    );
    if !private.exists() {
        let key = wasmos_oci::sign::SigningKey::generate().expect("a signing key");
        wasmos_tls::write_private(&private, &key.private_pem()).expect("write the signing key");
        std::fs::write(&public, key.public().to_pem()).expect("write the public key");
    }
    let public = public.to_str().expect("utf-8 temp path").to_string();
    (private, public)
}

/// The signing key registered for the master at `url`.
pub fn signing_key_for(url: &str) -> Option<PathBuf> {
    let a = authority_of(url);
    SIGNING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(u, _)| *u == a)
        .map(|(_, k)| k.clone())
}

/// The CA certificate for the daemon at `url`, if a test registered one.
pub fn ca_for(url: &str) -> Option<PathBuf> {
    registered(url).map(|(ca, _)| ca)
}

/// The token registered for the master at `url`.
pub fn token_for(url: &str) -> Option<String> {
    registered(url).and_then(|(_, t)| t)
}

/// The management token tests give the masters they start themselves
/// (`--bootstrap-token-file`).
pub const TEST_TOKEN: &str = "test-management-token";

/// Writes [`TEST_TOKEN`] to `<dir>/management-token` for
/// `--bootstrap-token-file`; returns the path.
pub fn bootstrap_token_file(dir: &Path) -> String {
    let p = dir.join("management-token");
    std::fs::write(&p, TEST_TOKEN).expect("write the bootstrap token");
    p.to_str().expect("utf-8 temp path").to_string()
}

/// A reqwest client builder that trusts the CA at `ca` (only it) and
/// presents `identity` (PEM certificate + key) when given.
pub fn tls_client(ca: &Path, identity: Option<&[u8]>) -> reqwest::ClientBuilder {
    let pem = std::fs::read(ca).expect("read the cluster CA certificate");
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM CA certificate"))
        .use_rustls_tls();
    if let Some(id) = identity {
        b = b.identity(reqwest::Identity::from_pem(id).expect("a PEM certificate and key"));
    }
    b
}

/// A reqwest client builder for the daemon at `url`: trusting its
/// cluster's CA when a test registered one ([`trust`]).
pub fn client_for(url: &str) -> reqwest::ClientBuilder {
    let b = match ca_for(url) {
        Some(ca) => tls_client(&ca, None),
        None => reqwest::Client::builder(),
    };
    match token_for(url) {
        Some(t) => {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {t}").parse().expect("a header value"),
            );
            b.default_headers(h)
        }
        None => b,
    }
}

/// Makes policy `name` with `rules` (JSON) and a user of the same name
/// holding it, through `api` (a management client); returns the password.
pub async fn user_with(api: &Api, name: &str, rules: Value) -> String {
    let (code, body) = api
        .put(
            &format!("/api/wasmos/v1/acl/policies/{name}"),
            &serde_json::json!({ "rules": rules }),
        )
        .await;
    assert_eq!(code, 200, "policy {name}: {body}");
    let password = format!("{name}-password-1");
    let (code, body) = api
        .put(
            &format!("/api/wasmos/v1/acl/users/{name}"),
            &serde_json::json!({ "password": password, "policies": [name] }),
        )
        .await;
    assert_eq!(code, 200, "user {name}: {body}");
    password
}

/// A master's certificate and key (PEM, concatenated) from the CA in `dir`
/// (`ca.pem`, `ca.key`): for a test that calls agents as the leader would.
pub fn master_identity(dir: &Path) -> Vec<u8> {
    let ca = wasmos_tls::Authority::load(&dir.join("ca.pem"), &dir.join("ca.key"))
        .expect("the cluster CA");
    let c = ca
        .issue(
            &wasmos_tls::Identity::Master(99),
            &["127.0.0.1".into(), "localhost".into()],
            Duration::from_secs(3600),
        )
        .expect("issue a test master certificate");
    format!("{}{}", c.cert_pem, c.key_pem).into_bytes()
}

/// The `wasmos` binary under test.
pub fn wasmos_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WASMOS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // target/<profile>/deps/e2e-<hash> → target/<profile>/wasmos
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("wasmos"))
        .expect("the test binary lives in target/<profile>/deps");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p wasmos` (./dev test does)",
        bin.display()
    );
    bin
}

/// Waits until `f` returns Some, polling; panics with `what` at the deadline.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

/// Every thread's stack of a stuck daemon (with gdb, when installed), so
/// that a start that hangs can be diagnosed from the test's output.
fn thread_stacks(pid: u32) -> String {
    wasmos_faults::cluster::thread_stacks(pid)
}

/// A daemon process (`up`, `master` or `agent`). Killed when dropped; its
/// log is printed if the test is failing.
pub struct Daemon {
    pub name: String,
    pub url: String,
    /// Other `key: value` lines it announced (e.g. `agent`).
    pub announced: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `wasmos <args>`; waits until it announces `<key>: <url>`.
    pub async fn start(name: &str, args: &[&str], key: &str, log_dir: &Path) -> Daemon {
        Self::start_until(name, args, &[key], log_dir).await
    }

    /// Starts `wasmos <args>`; waits until it announced every key; its URL
    /// is the first key's.
    pub async fn start_until(name: &str, args: &[&str], keys: &[&str], log_dir: &Path) -> Daemon {
        Self::start_with_env(name, args, keys, log_dir, &[]).await
    }

    /// Like [`Daemon::start_until`], with extra environment variables.
    pub async fn start_with_env(
        name: &str,
        args: &[&str],
        keys: &[&str],
        log_dir: &Path,
        env: &[(&str, String)],
    ) -> Daemon {
        let log = log_dir.join(format!("{name}.log"));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open daemon log");
        let mut child = Command::new(wasmos_bin())
            .args(args)
            .env("WASMOS_LOG", "info,wasmos_master=debug,wasmos_agent=debug")
            // Every daemon of the suite shares one compiled-plugin cache:
            // each test's fresh cluster would otherwise compile every bundled
            // plugin again (seconds of CPU on a machine the tests share).
            .env(
                "WASMOS_PLUGIN_CACHE",
                root().join("target/e2e-plugin-cache"),
            )
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .expect("start wasmos");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut announced: Vec<(String, String)> = Vec::new();
        let found = tokio::time::timeout(START_DEADLINE, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some((k, v)) = line.split_once(": ") {
                    announced.push((k.to_string(), v.to_string()));
                }
                if keys.iter().all(|k| announced.iter().any(|(a, _)| a == k)) {
                    return announced
                        .iter()
                        .find(|(a, _)| a == keys[0])
                        .map(|(_, v)| v.clone());
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(url) = found else {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let stacks = child.id().map(thread_stacks).unwrap_or_default();
            panic!("{name} did not start; its log:\n{text}\nits threads:\n{stacks}");
        };
        // Keep draining stdout so the daemon never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Daemon {
            name: name.to_string(),
            url,
            announced,
            child: Some(child),
            log,
        }
    }

    /// A value the daemon announced, like `agent`.
    pub fn announced(&self, key: &str) -> Option<&str> {
        self.announced
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .and_then(|c| c.id())
            .map(|p| p as i32)
            .expect("the daemon runs")
    }

    /// Sends a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// kill -9, and wait for it to be gone.
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
            let _ = c.wait().await;
        }
    }

    /// Ctrl-C, then waits for a clean exit; returns its exit code.
    /// Waits for it to exit by itself; its exit code.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        match tokio::time::timeout(DEADLINE, c.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => {
                let _ = c.kill().await;
                panic!("{} did not exit within {DEADLINE:?}", self.name);
            }
        }
    }

    pub async fn interrupt(&mut self) -> Option<i32> {
        self.signal(nix::sys::signal::Signal::SIGINT);
        let mut c = self.child.take()?;
        match tokio::time::timeout(DEADLINE, c.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => {
                let _ = c.kill().await;
                panic!("{} did not stop within {DEADLINE:?} of Ctrl-C", self.name);
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Lines of a daemon's log printed when a test fails.
const LOG_TAIL: usize = 40;

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The whole log goes to a file; the output keeps its end only,
            // so that the failure printed before it stays in view of a CI
            // excerpt, which shows the end of the output.
            let log = self.log();
            let kept = artefacts("daemon-logs").join(format!(
                "{}-{}.log",
                self.name,
                self.child.as_ref().and_then(|c| c.id()).unwrap_or(0)
            ));
            let _ = std::fs::write(&kept, &log);
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n");
            eprintln!(
                "----- last {} of {} lines of the log of {} (all in {}) -----\n{tail}\n----- end of {} -----",
                LOG_TAIL.min(lines.len()),
                lines.len(),
                self.name,
                kept.display(),
                self.name
            );
        }
        // Stop it as an operator would, so that it stops its tasks too;
        // SIGKILL only if it does not go.
        if let Some(c) = self.child.as_mut() {
            if let Some(pid) = c.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGINT,
                );
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while std::time::Instant::now() < deadline {
                    if matches!(c.try_wait(), Ok(Some(_))) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = c.start_kill();
        }
    }
}

/// The output of one CLI run.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// `wasmos --master <master> <args>` with the CA, token and signing key
/// registered for `master`, not started.
pub fn cli_command(master: &str, args: &[&str]) -> Command {
    let mut c = Command::new(wasmos_bin());
    if let Some(ca) = ca_for(master) {
        c.env("WASMOS_CACERT", ca);
    }
    if let Some(t) = token_for(master) {
        c.env("WASMOS_TOKEN", t);
    }
    if let Some(k) = signing_key_for(master) {
        c.env("WASMOS_SIGNING_KEY", k);
    }
    c.arg("--master")
        .arg(master)
        .args(args)
        .stdin(Stdio::null());
    c
}

/// Runs `wasmos --master <master> <args>` to completion (bounded).
pub async fn cli(master: &str, args: &[&str]) -> Output {
    cli_within(master, args, Duration::from_secs(120)).await
}

/// [`cli`] with a bound of its own (installing an 18 MB Python plugin
/// compiles it first, on a machine busy with the rest of the suite).
pub async fn cli_within(master: &str, args: &[&str], within: Duration) -> Output {
    let out = tokio::time::timeout(within, cli_command(master, args).output())
        .await
        .unwrap_or_else(|_| panic!("wasmos {args:?} did not finish"))
        .expect("run wasmos");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `tests/clients/<script>` with the Python that `./dev test` set up
/// (`target/py`, where the client libraries are installed) and `args`;
/// panics with its output unless it exits 0 and prints `<ok>`.
pub async fn run_client_script(script: &str, args: &[&str], ok: &str) {
    run_python("target/py", script, args, &[], ok).await;
}

/// Loads a page of the dashboard in headless Chromium with
/// `tests/clients/browser.py` (its arguments: the URL, the expressions to
/// wait for, options); returns the last expression's value as JSON once
/// every expression became true with no page error.
pub async fn browser(args: &[&str]) -> String {
    run_python("target/py", "browser.py", args, &[], "").await
}

/// Where tests keep what people look at after a run (screenshots), under
/// `target/test-artefacts/<what>`.
pub fn artefacts(what: &str) -> PathBuf {
    let dir = root().join("target/test-artefacts").join(what);
    std::fs::create_dir_all(&dir).expect("create the artefacts dir");
    dir
}

/// Runs `tests/clients/pymesos_scheduler.py` (or another pymesos script)
/// with the Python `./dev test` installed pymesos for (`target/pymesos`:
/// Debian's Python, whose packaged http-parser pymesos needs); returns its
/// output once it exits 0 having printed `ok`.
pub async fn run_pymesos(script: &str, args: &[&str], env: &[(&str, String)], ok: &str) -> String {
    run_python("target/pymesos", script, args, env, ok).await
}

/// Starts a pymesos script that keeps running (as `run_pymesos`'s Python),
/// and waits for it to print `framework: <id>`; returns the process (killed
/// when dropped) and the id.
pub async fn spawn_pymesos(script: &str, args: &[&str], env: &[(&str, String)]) -> (Child, String) {
    let python = root().join("target/pymesos/bin/python");
    assert!(
        python.exists(),
        "{} is missing: `./dev test` installs pymesos there",
        python.display()
    );
    let mut child = Command::new(&python)
        .arg(root().join("tests/clients").join(script))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start python");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let id = tokio::time::timeout(DEADLINE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(id) = line.strip_prefix("framework: ") {
                return Some(id.trim().to_string());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(|| panic!("{script} {args:?} did not subscribe"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, id)
}

async fn run_python(
    venv: &str,
    script: &str,
    args: &[&str],
    env: &[(&str, String)],
    ok: &str,
) -> String {
    let python = root().join(venv).join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: `./dev test` installs the client libraries there",
        python.display()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(240),
        Command::new(&python)
            .arg(root().join("tests/clients").join(script))
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{script} did not finish in 240 s"))
    .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(ok),
        "{script}:\n{stdout}\n{stderr}"
    );
    stdout
}

/// Mesos' v1 messages, generated from the master's `.proto` files, for
/// the tests' protobuf client of the scheduler API.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod mesos {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/mesos.v1.rs"));
        pub mod scheduler {
            include!(concat!(env!("OUT_DIR"), "/mesos.v1.scheduler.rs"));
        }
    }
}

/// Reads RecordIO records (`<length>\n<bytes>`) from a streamed body.
pub struct RecordIo<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S, E> RecordIo<S>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    pub fn new(stream: S) -> Self {
        RecordIo {
            stream,
            buf: Vec::new(),
        }
    }

    /// The next record; panics if none comes within `deadline`, the stream
    /// ends, or the framing is wrong.
    pub async fn next(&mut self, deadline: Duration) -> Vec<u8> {
        use futures::StreamExt as _;
        tokio::time::timeout(deadline, async {
            loop {
                if let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                    let len: usize = std::str::from_utf8(&self.buf[..nl])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("bad RecordIO length {:?}", &self.buf[..nl]));
                    if self.buf.len() >= nl + 1 + len {
                        let record = self.buf[nl + 1..nl + 1 + len].to_vec();
                        self.buf.drain(..nl + 1 + len);
                        return record;
                    }
                }
                match self.stream.next().await {
                    Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                    Some(Err(e)) => panic!("the event stream failed: {e}"),
                    None => panic!("the event stream ended"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no event within {deadline:?}"))
    }
}

impl<S, E> RecordIo<S>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    /// Whether the stream ends (cleanly or cut) within `deadline`; any
    /// records before its end are skipped.
    pub async fn ends_within(&mut self, deadline: Duration) -> bool {
        use futures::StreamExt as _;
        tokio::time::timeout(deadline, async {
            while let Some(Ok(_)) = self.stream.next().await {}
        })
        .await
        .is_ok()
    }
}

/// A JSON API client for assertions.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

impl Api {
    /// A client of the daemon at `base`, trusting the CA its cluster
    /// registered ([`trust`]) and presenting the token registered for it.
    pub fn new(base: &str) -> Api {
        Self::build(base, None)
    }

    /// A client presenting no credentials at all.
    pub fn anonymous(base: &str) -> Api {
        let b = match ca_for(base) {
            Some(ca) => tls_client(&ca, None),
            None => reqwest::Client::builder(),
        };
        Api {
            base: base.trim_end_matches('/').to_string(),
            http: b
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    /// A client presenting `authorization` as its Authorization header.
    pub fn with_authorization(base: &str, authorization: &str) -> Api {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::AUTHORIZATION,
            authorization.parse().expect("a header value"),
        );
        let b = match ca_for(base) {
            Some(ca) => tls_client(&ca, None),
            None => reqwest::Client::builder(),
        };
        Api {
            base: base.trim_end_matches('/').to_string(),
            http: b
                .default_headers(h)
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    /// A client of a master presenting `identity` (PEM certificate and
    /// key), e.g. an agent's.
    pub fn with_identity(base: &str, identity: &[u8]) -> Api {
        Self::build(base, Some(identity))
    }

    /// A client of the agent at `base`'s own API, presenting `identity`
    /// (PEM certificate and key; a master's, as the leader would) and
    /// checking the agent's certificate as masters do (agents' certificates
    /// name no host).
    pub fn to_agent(base: &str, identity: Option<&[u8]>) -> Api {
        let ca = ca_for(base).expect("the agent's cluster registered its CA");
        let trust = wasmos_tls::Trust::load(&ca).expect("the cluster CA");
        let keys = identity.map(|pem| {
            let pem = String::from_utf8_lossy(pem);
            let at = pem
                .find("-----BEGIN PRIVATE KEY-----")
                .expect("a key in the identity");
            wasmos_tls::Keys::new(wasmos_tls::Credential {
                cert_pem: pem[..at].to_string(),
                key_pem: pem[at..].to_string(),
            })
            .expect("a usable identity")
        });
        let config = wasmos_tls::client_config(&trust, wasmos_tls::Expect::Agent, keys)
            .expect("a client configuration");
        Api {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .use_preconfigured_tls(config)
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    fn build(base: &str, identity: Option<&[u8]>) -> Api {
        let mut b = match ca_for(base) {
            Some(ca) => tls_client(&ca, identity),
            None => reqwest::Client::builder(),
        };
        if let Some(t) = token_for(base) {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {t}").parse().expect("a header value"),
            );
            b = b.default_headers(h);
        }
        Api {
            base: base.trim_end_matches('/').to_string(),
            http: b
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    /// Sends what `build` makes for a URL, following redirects (to the
    /// leader) itself: reqwest drops the Authorization header on a redirect
    /// to another host, as clients should, and the masters of a test live
    /// on different addresses. `None`: no answer.
    async fn exec(
        &self,
        path: &str,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Option<reqwest::Response> {
        let mut url = format!("{}{path}", self.base);
        for _ in 0..5 {
            let r = build(&url).send().await.ok()?;
            if !matches!(r.status().as_u16(), 307 | 308) {
                return Some(r);
            }
            let Some(next) = r
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
            else {
                return Some(r);
            };
            url = next.to_string();
        }
        None
    }

    async fn json_of(r: Option<reqwest::Response>) -> (u16, Value) {
        match r {
            Some(r) => {
                let s = r.status().as_u16();
                (s, r.json().await.unwrap_or(Value::Null))
            }
            None => (0, Value::Null),
        }
    }

    /// GET; the status and the body as JSON (Null if not JSON).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        Self::json_of(self.exec(path, |u| self.http.get(u)).await).await
    }

    /// GET, with the answer's headers.
    pub async fn get_with_headers(&self, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self.exec(path, |u| self.http.get(u)).await;
        let headers = r.as_ref().map(|r| r.headers().clone()).unwrap_or_default();
        let (code, v) = Self::json_of(r).await;
        (code, headers, v)
    }

    /// POST a raw body with a content type.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .exec(path, |u| {
                self.http
                    .post(u)
                    .header("content-type", content_type)
                    .body(body.clone())
            })
            .await;
        Self::json_of(r).await
    }

    /// PUT JSON.
    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        Self::json_of(self.exec(path, |u| self.http.put(u).json(body)).await).await
    }

    /// Any method, with an optional JSON body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let r = self
            .exec(path, |u| {
                let r = self.http.request(method.clone(), u);
                match body {
                    Some(b) => r.json(b),
                    None => r,
                }
            })
            .await;
        Self::json_of(r).await
    }

    /// GET as Prometheus asks (its text format); the status and the body.
    pub async fn prometheus_text(&self, path: &str) -> (u16, String) {
        let accept = "text/plain; version=0.0.4";
        match self
            .exec(path, |u| {
                self.http.get(u).header(reqwest::header::ACCEPT, accept)
            })
            .await
        {
            Some(r) => {
                let s = r.status().as_u16();
                (s, r.text().await.unwrap_or_default())
            }
            None => (0, String::new()),
        }
    }

    /// GET; the status and the body as text.
    pub async fn text(&self, path: &str) -> (u16, String) {
        match self.exec(path, |u| self.http.get(u)).await {
            Some(r) => {
                let s = r.status().as_u16();
                (s, r.text().await.unwrap_or_default())
            }
            None => (0, String::new()),
        }
    }

    /// Waits until the leader reached through this API (following
    /// redirects) runs `framework` and has an agent connected.
    pub async fn wait_framework_and_agent(&self, framework: &str) {
        let what = format!("the agent and the {framework} framework on the leader");
        wait_for(&what, DEADLINE, || async {
            let (_, agents) = self.get("/api/wasmos/v1/agents").await;
            let (_, fws) = self.get("/api/wasmos/v1/frameworks").await;
            let agent_ok = agents
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["connected"] == true));
            let fw_ok = fws.as_array().is_some_and(|f| {
                f.iter()
                    .any(|f| f["id"] == framework && f["active"] == true)
            });
            (agent_ok && fw_ok).then_some(())
        })
        .await;
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(
            path,
            "application/json",
            serde_json::to_vec(body).unwrap_or_default(),
        )
        .await
    }

    /// A task's state from the master, if the master knows the task.
    pub async fn task_state(&self, id: &str) -> Option<String> {
        let (code, v) = self.get(&format!("/api/wasmos/v1/tasks/{id}")).await;
        (code == 200).then(|| v["state"].as_str().unwrap_or("").to_string())
    }

    /// Waits until the master has the task in `state`.
    pub async fn wait_task_state(&self, id: &str, state: &str) -> Value {
        let what = format!("task {id} to be {state}");
        wait_for(&what, DEADLINE, || async {
            let (code, v) = self.get(&format!("/api/wasmos/v1/tasks/{id}")).await;
            (code == 200 && v["state"] == state).then_some(v)
        })
        .await
    }
}

/// Waits until the agent behind `agent` (its own API) has loaded the
/// plugin `name`.
pub async fn wait_agent_plugin(agent: &Api, name: &str) {
    wait_for(&format!("the agent to load {name}"), DEADLINE, || async {
        let (_, st) = agent.get("/api/wasmos/v1/state").await;
        st["plugins"]
            .as_array()?
            .iter()
            .any(|p| p["name"] == name)
            .then_some(())
    })
    .await;
}

/// A one-machine cluster (`wasmos up`) in a temp dir.
/// `--resources` for an agent a test starts: a window of the default port
/// range of its own. Tests run in parallel on one host network; two agents
/// offering the same ports let one test's task take a port another test's
/// task listens on (and its HTTP health check be answered by the other).
pub fn own_ports(with: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const WIDTH: u32 = 40;
    let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % (1000 / WIDTH);
    let lo = 31000 + k * WIDTH;
    let ports = format!("ports:[{lo}-{}]", lo + WIDTH - 1);
    if with.is_empty() {
        ports
    } else {
        format!("{with};{ports}")
    }
}

pub struct Cluster {
    pub up: Daemon,
    pub api: Api,
    pub dir: TaskDir,
}

/// A test's temp dir holding agents' data. Dropped, it first kills the
/// native tasks still running from it: an agent killed with SIGKILL leaves
/// its tasks running (so that a restarted agent recovers them), and left
/// alive past the test they would hold ports that later tests' agents
/// offer again (own_ports cycles through the range).
pub struct TaskDir(tempfile::TempDir);

impl TaskDir {
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl From<tempfile::TempDir> for TaskDir {
    fn from(d: tempfile::TempDir) -> TaskDir {
        TaskDir(d)
    }
}

impl Drop for TaskDir {
    fn drop(&mut self) {
        reap_tasks(self.0.path());
    }
}

/// Kills the native tasks whose checkpoints lie under `dir`: each task's
/// init (which ends its pid namespace) and its supervisor, once checked to
/// be the process the checkpoint names (its start time).
pub fn reap_tasks(dir: &Path) {
    fn checkpoints(d: &Path, depth: u32, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(d) else {
            return;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name();
            match name.to_str() {
                Some("checkpoint") => out.push(e.path()),
                Some("sandboxes" | "volumes" | "plugin-cache" | "raft") => {}
                _ if depth > 0 => checkpoints(&e.path(), depth - 1, out),
                _ => {}
            }
        }
    }
    fn start_time(pid: u64) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Field 22, counted after the command's closing parenthesis.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(19)?
            .parse()
            .ok()
    }
    let mut dirs = Vec::new();
    checkpoints(dir, 4, &mut dirs);
    for cp in dirs {
        let Ok(tasks) = std::fs::read_dir(&cp) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(text) = std::fs::read_to_string(t.path().join("supervisor.json")) else {
                continue;
            };
            let Ok(rec) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let (Some(sup), Some(start), Some(init)) = (
                rec["supervisor_pid"].as_u64(),
                rec["supervisor_start"].as_u64(),
                rec["init_pid"].as_u64(),
            ) else {
                continue;
            };
            if start_time(sup) != Some(start) {
                continue;
            }
            for pid in [init, sup] {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

impl Cluster {
    pub async fn up() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::up_in(dir).await
    }

    /// Starts `up` on an existing data dir (to test recovery).
    pub async fn up_in(dir: impl Into<TaskDir>) -> Cluster {
        Self::up_with(dir, &[]).await
    }

    /// Starts `up` with extra options on a data dir.
    pub async fn up_with(dir: impl Into<TaskDir>, extra: &[&str]) -> Cluster {
        Self::up_with_env(dir, extra, &[]).await
    }

    /// Starts `up` with extra options and environment variables.
    pub async fn up_with_env(
        dir: impl Into<TaskDir>,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Cluster {
        let dir: TaskDir = dir.into();
        let data = dir.path().join("data");
        let data = data.to_str().expect("utf-8 temp path").to_string();
        // Tests' own files for file:// fetches; nothing else of the
        // machine (not the data dir with the cluster CA and join token).
        let files = dir.path().join("files");
        std::fs::create_dir_all(&files).expect("create the files dir");
        let files = files.to_str().expect("utf-8 temp path").to_string();
        let ports = own_ports("");
        let mut args = vec![
            "up",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data,
            "--fetch-allow",
            &files,
        ];
        if !extra.contains(&"--resources") {
            args.extend(["--resources", &ports]);
        }
        args.extend_from_slice(extra);
        let up = Daemon::start_with_env(
            "up",
            &args,
            &["master", "agent", "token", "ca", "plugin key"],
            dir.path(),
            env,
        )
        .await;
        let ca = PathBuf::from(up.announced("ca").expect("up announces its CA"));
        let token = up
            .announced("token")
            .expect("up announces the management token");
        register(&up.url, &ca, Some(token));
        register_signing_key(
            &up.url,
            Path::new(
                up.announced("plugin key")
                    .expect("up announces its plugin key"),
            ),
        );
        trust(up.announced("agent").expect("up announces its agent"), &ca);
        let api = Api::new(&up.url);
        // Ready when the agent has registered and exec runs.
        wait_for("the agent and the exec framework", DEADLINE, || async {
            let (_, agents) = api.get("/api/wasmos/v1/agents").await;
            let (_, fws) = api.get("/api/wasmos/v1/frameworks").await;
            let agent_ok = agents
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["connected"] == true));
            let exec_ok = fws
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["id"] == "exec" && f["active"] == true));
            (agent_ok && exec_ok).then_some(())
        })
        .await;
        Cluster { up, api, dir }
    }

    pub async fn cli(&self, args: &[&str]) -> Output {
        cli(&self.up.url, args).await
    }

    /// The directory the agent lets tasks fetch `file://` URIs from.
    pub fn files(&self) -> PathBuf {
        self.dir.path().join("files")
    }

    /// `wasmos task run -d <args>`, which must be accepted.
    pub async fn run_detached(&self, args: &[&str]) {
        let mut all = vec!["task", "run", "-d"];
        all.extend_from_slice(args);
        let out = self.cli(&all).await;
        assert_eq!(out.code, Some(0), "{out:?}");
    }

    /// The cluster CA's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("data/tls/ca.pem")
    }

    /// Where `up`'s master serves DNS.
    pub fn dns(&self) -> std::net::SocketAddr {
        self.up
            .announced("dns")
            .expect("up announces its DNS")
            .parse()
            .expect("dns: HOST:PORT")
    }

    /// The agent's own API, called as a master would (with a master
    /// certificate from the cluster CA).
    pub fn agent_api(&self) -> Api {
        Api::to_agent(
            self.up.announced("agent").expect("up announces its agent"),
            Some(&master_identity(&self.dir.path().join("data/tls"))),
        )
    }

    /// Stops `up` with Ctrl-C and hands back its data dir.
    pub async fn stop(mut self) -> (Option<i32>, TaskDir) {
        let code = self.up.interrupt().await;
        (code, self.dir)
    }
}

/// A real OCI registry: Debian's `docker-registry` on a free port, storing
/// in a temp dir. Stopped when dropped.
pub struct Registry {
    pub addr: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub async fn start() -> Registry {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is not installed; ./dev test installs it (apt-get install docker-registry)");
        let url = format!("http://{addr}/v2/");
        wait_for("the registry to answer", DEADLINE, || async {
            reqwest::get(&url)
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        })
        .await;
        Registry {
            addr,
            child,
            _dir: dir,
        }
    }

    /// `oci+http://<addr>/<path>`.
    pub fn reference(&self, path: &str) -> String {
        format!("oci+http://{}/{path}", self.addr)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the test build put the plugins it built (`tests/build.rs`).
pub fn test_plugin(file: &str) -> PathBuf {
    PathBuf::from(env!("WASMOS_TEST_PLUGINS")).join(file)
}

/// `cmd` with the toolchains `./dev test` installs for plugins in other
/// languages: wit-bindgen and wasm-tools on its PATH, componentize-py, and
/// the WASI preview1 adapter.
pub fn plugin_toolchains(cmd: &mut std::process::Command) -> &mut std::process::Command {
    let root = root();
    let path = format!(
        "{}:{}",
        root.join("target/tools/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let cpy = std::env::var("COMPONENTIZE_PY").unwrap_or_else(|_| {
        root.join("target/py/bin/componentize-py")
            .display()
            .to_string()
    });
    cmd.env("PATH", path).env("COMPONENTIZE_PY", cpy).env(
        "WASI_ADAPTER",
        test_plugin("wasi_snapshot_preview1.reactor.wasm"),
    )
}

/// The component an example in another language builds (its
/// `build.sh`, with the toolchains `./dev test` installs), built once per
/// test process.
pub fn example_component(dir: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Option<(tempfile::TempDir, Vec<String>)>> =
        std::sync::Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let (out_dir, done) =
        built.get_or_insert_with(|| (tempfile::tempdir().expect("temp dir"), Vec::new()));
    let out = out_dir.path().join(format!("{dir}.wasm"));
    if done.iter().any(|d| d == dir) {
        return out;
    }
    let status = plugin_toolchains(&mut std::process::Command::new(
        root().join("examples").join(dir).join("build.sh"),
    ))
    .arg(&out)
    .status()
    .expect("run the build script");
    assert!(
        status.success(),
        "examples/{dir}/build.sh failed; ./dev test installs what it needs (clang, wasi-libc, wit-bindgen, wasm-tools, componentize-py)"
    );
    done.push(dir.to_string());
    out
}

/// Asks the DNS server at `server` for `name`'s records of type `rtype`
/// with hickory's DNS client over UDP (or TCP): the answer's code, its
/// answers and its additional records.
pub async fn dns_query(
    server: std::net::SocketAddr,
    name: &str,
    rtype: hickory_proto::rr::RecordType,
    tcp: bool,
) -> (
    hickory_proto::op::ResponseCode,
    Vec<hickory_proto::rr::Record>,
    Vec<hickory_proto::rr::Record>,
) {
    use hickory_net::client::{Client, ClientHandle};
    use hickory_net::runtime::TokioRuntimeProvider;
    let name = hickory_proto::rr::Name::from_ascii(name).expect("a DNS name");
    let mut client = if tcp {
        let (stream, sender) = hickory_net::tcp::TcpClientStream::new(
            server,
            None,
            Some(std::time::Duration::from_secs(5)),
            TokioRuntimeProvider::default(),
        );
        let stream = stream
            .await
            .unwrap_or_else(|e| panic!("cannot reach the DNS server at {server} over TCP: {e}"));
        let (client, bg) = Client::<TokioRuntimeProvider>::new(stream, sender);
        tokio::spawn(bg);
        client
    } else {
        let conn =
            hickory_net::udp::UdpClientStream::builder(server, TokioRuntimeProvider::default())
                .build();
        let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(conn);
        tokio::spawn(bg);
        client
    };
    let r = client
        .query(name, hickory_proto::rr::DNSClass::IN, rtype)
        .await
        .unwrap_or_else(|e| panic!("the DNS server at {server} did not answer: {e}"));
    (
        r.metadata.response_code,
        r.answers.clone(),
        r.additionals.clone(),
    )
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A free TCP port on 127.0.0.1 (for daemons that must come back on the
/// same address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Loopback networks handed to [`Masters`] (127.0.N.0/24), distinct per
/// test in this process so that partitions of one test cut no other.
static NEXT_NET: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Several masters, each its own process on its own loopback address
/// (127.0.N.<id>), forming one cluster.
pub struct Masters {
    /// Index `id - 1`; `None` while that master is stopped.
    pub daemons: Vec<Option<Daemon>>,
    pub ips: Vec<String>,
    pub ports: Vec<u16>,
    pub dir: PathBuf,
    /// The cluster CA (`ca.pem`, `ca.key`) every master is given.
    pub tls: PathBuf,
    join_token: PathBuf,
    /// Every master's `--election-timeout-ms`.
    election_timeout_ms: String,
}

impl Masters {
    /// Starts `n` masters with ids 1..=n under `dir`, with one cluster CA
    /// and join token.
    pub async fn start(n: usize, dir: &Path) -> Masters {
        Self::start_with_election_timeout(n, dir, 400).await
    }

    /// [`Masters::start`] with another election timeout (for a test whose
    /// raft entries are large: an 18 MB plugin is one entry, and heartbeats
    /// wait behind it).
    pub async fn start_with_election_timeout(n: usize, dir: &Path, ms: u64) -> Masters {
        let net = 20
            + (std::process::id() % 100)
            + NEXT_NET.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ips: Vec<String> = (1..=n)
            .map(|i| format!("127.0.{}.{i}", net % 250))
            .collect();
        let ports: Vec<u16> = ips
            .iter()
            .map(|ip| {
                std::net::TcpListener::bind(format!("{ip}:0"))
                    .and_then(|l| l.local_addr())
                    .map(|a| a.port())
                    .expect("a free port")
            })
            .collect();
        let tls = dir.join("tls");
        wasmos_tls::Authority::create(&tls, "test").expect("make a cluster CA");
        let join_token = dir.join("join-token");
        std::fs::write(&join_token, "test-join-token").expect("write the join token");
        bootstrap_token_file(dir);
        let mut m = Masters {
            daemons: (0..n).map(|_| None).collect(),
            ips,
            ports,
            dir: dir.to_path_buf(),
            tls,
            join_token,
            election_timeout_ms: ms.to_string(),
        };
        let peers = m.peers();
        for id in 1..=n as u64 {
            m.start_master(id, &["--peers", &peers]).await;
        }
        m
    }

    /// `1=http://...,2=...` for --peers.
    pub fn peers(&self) -> String {
        (1..=self.ips.len() as u64)
            .map(|id| format!("{id}={}", self.url(id)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The cluster CA's certificate.
    pub fn ca(&self) -> PathBuf {
        self.tls.join("ca.pem")
    }

    /// An agent that knows every master, running plain processes (tests
    /// have their tasks write to files of theirs under /tmp, which the
    /// native containerizer would give each task its own of).
    pub async fn start_agent(&self, dir: &Path) -> Daemon {
        let data = dir.join("agent");
        let d = Daemon::start(
            "agent",
            &[
                "agent",
                "--master",
                &self.urls(),
                "--ca-cert",
                self.ca().to_str().expect("utf-8 temp path"),
                "--join-token-file",
                self.join_token.to_str().expect("utf-8 temp path"),
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data.to_str().expect("utf-8 temp path"),
                "--containerizer",
                "process",
                // Tasks write to the test's own (0700) temp dir.
                "--task-user",
                "root",
                "--resources",
                &own_ports(""),
            ],
            "agent",
            dir,
        )
        .await;
        trust(&d.url, &self.ca());
        d
    }

    /// Master `id`'s base URL.
    pub fn url(&self, id: u64) -> String {
        let i = (id - 1) as usize;
        format!("https://{}:{}", self.ips[i], self.ports[i])
    }

    /// Every master's URL, comma-separated (for --master).
    pub fn urls(&self) -> String {
        (1..=self.ips.len() as u64)
            .map(|id| self.url(id))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn join_token_file(&self) -> &Path {
        &self.join_token
    }

    /// The agent at `url`'s own API, called as a master would.
    pub fn agent_api(&self, url: &str) -> Api {
        Api::to_agent(url, Some(&master_identity(&self.tls)))
    }

    /// Adds a slot for one more master (to join the running cluster); returns its id.
    pub fn add_slot(&mut self) -> u64 {
        let net = self.ips[0]
            .rsplit_once('.')
            .map(|(n, _)| n.to_string())
            .expect("an ip");
        let id = self.ips.len() as u64 + 1;
        let ip = format!("{net}.{id}");
        let port = std::net::TcpListener::bind(format!("{ip}:0"))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        self.ips.push(ip);
        self.ports.push(port);
        self.daemons.push(None);
        id
    }

    /// Starts (or restarts) master `id` with `extra` arguments (`--peers`
    /// or `--join`).
    pub async fn start_master(&mut self, id: u64, extra: &[&str]) {
        let i = (id - 1) as usize;
        let data = self.dir.join(format!("master-{id}"));
        let listen = format!("{}:{}", self.ips[i], self.ports[i]);
        let id_s = id.to_string();
        let ca = self.ca().to_str().expect("utf-8 temp path").to_string();
        let key = self
            .tls
            .join("ca.key")
            .to_str()
            .expect("utf-8 temp path")
            .to_string();
        let token = self
            .join_token
            .to_str()
            .expect("utf-8 temp path")
            .to_string();
        let management = bootstrap_token_file(&self.dir);
        register(&self.url(id), &self.ca(), Some(TEST_TOKEN));
        let (signing_key, plugin_key) = plugin_signing_key(&self.dir);
        register_signing_key(&self.url(id), &signing_key);
        let election_timeout = self.election_timeout_ms.clone();
        let mut args: Vec<&str> = vec![
            "master",
            "--id",
            &id_s,
            "--listen",
            &listen,
            "--data-dir",
            data.to_str().expect("utf-8 temp path"),
            "--ca-cert",
            &ca,
            "--ca-key",
            &key,
            "--join-token-file",
            &token,
            "--bootstrap-token-file",
            &management,
            "--bootstrap-plugin-key",
            &plugin_key,
            // Several clusters share two cores while the suite runs: with
            // 150 ms a starved heartbeat starts an election; 400 keeps
            // failover tests quick (the default is 1,000).
            "--election-timeout-ms",
            &election_timeout,
        ];
        args.extend_from_slice(extra);
        let d = Daemon::start(&format!("master-{id}"), &args, "master", &self.dir).await;
        self.daemons[i] = Some(d);
    }

    pub fn daemon(&self, id: u64) -> &Daemon {
        self.daemons[(id - 1) as usize]
            .as_ref()
            .expect("that master runs")
    }

    /// kill -9 master `id`.
    pub async fn kill9(&mut self, id: u64) {
        if let Some(mut d) = self.daemons[(id - 1) as usize].take() {
            d.kill9().await;
        }
    }

    /// Waits for master `id` to exit by itself: its exit code and log.
    pub async fn wait_exit(&mut self, id: u64) -> (Option<i32>, String) {
        let mut d = self.daemons[(id - 1) as usize]
            .take()
            .expect("the master was started");
        let code = d.wait_exit().await;
        (code, d.log())
    }

    /// Ctrl-C master `id` and wait for it to exit.
    pub async fn stop(&mut self, id: u64) {
        if let Some(mut d) = self.daemons[(id - 1) as usize].take() {
            d.interrupt().await;
        }
    }

    /// Ids of the masters that run.
    pub fn running(&self) -> Vec<u64> {
        (1..=self.daemons.len() as u64)
            .filter(|id| self.daemons[(*id - 1) as usize].is_some())
            .collect()
    }

    /// What master `id` says about leadership (`/api/wasmos/v1/leader`).
    pub async fn leader_view(&self, id: u64) -> Value {
        Api::new(&self.url(id)).get("/api/wasmos/v1/leader").await.1
    }

    /// Waits until one running master (other than `not`) acts as leader,
    /// with every other running master in `among` agreeing; returns its id
    /// and term.
    pub async fn wait_leader(&self, among: &[u64], not: Option<u64>) -> (u64, u64) {
        wait_for("a leader the masters agree on", DEADLINE, || async {
            let mut leader = None;
            let mut views = Vec::new();
            for id in among {
                let v = self.leader_view(*id).await;
                if v["this_master"]["role"] == "leader" {
                    leader = Some((*id, v["term"].as_u64().unwrap_or(0)));
                }
                views.push(v["leader"]["id"].as_u64());
            }
            let (id, term) = leader?;
            if Some(id) == not || views.iter().any(|v| *v != Some(id)) {
                return None;
            }
            // Stable: the same leader in the same term a moment later.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let again = self.leader_view(id).await;
            (again["this_master"]["role"] == "leader" && again["term"].as_u64() == Some(term))
                .then_some((id, term))
        })
        .await
    }
}

/// iptables rules that cut traffic between two loopback addresses both
/// ways; removed when dropped.
pub struct Cut {
    rules: Vec<Vec<String>>,
}

impl Cut {
    /// Drops every packet between `a` and each of `others`.
    pub fn between(a: &str, others: &[&str]) -> Cut {
        let mut rules = Vec::new();
        for b in others {
            for (s, d) in [(a, *b), (*b, a)] {
                rules.push(vec![
                    "INPUT".to_string(),
                    "-s".into(),
                    s.to_string(),
                    "-d".into(),
                    d.to_string(),
                    "-j".into(),
                    "DROP".into(),
                ]);
            }
        }
        for r in &rules {
            let ok = std::process::Command::new("iptables")
                .arg("-I")
                .args(r)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(
                ok,
                "iptables -I {r:?} failed: the partition test needs root and iptables"
            );
        }
        Cut { rules }
    }

    /// Heals the cut now.
    pub fn heal(self) {}
}

impl Drop for Cut {
    fn drop(&mut self) {
        for r in &self.rules {
            let _ = std::process::Command::new("iptables")
                .arg("-D")
                .args(r)
                .status();
        }
    }
}

/// The image Docker tests run: Debian's static busybox, imported into the
/// local engine (nothing can be pulled here). Built once per engine;
/// concurrent tests agree through a lock file.
pub const BUSYBOX_IMAGE: &str = "wasmos-test/busybox:2";

/// Makes sure [`BUSYBOX_IMAGE`] is in the local Docker engine.
pub fn busybox_image() -> &'static str {
    let has = || {
        std::process::Command::new("docker")
            .args(["image", "inspect", BUSYBOX_IMAGE])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has() {
        return BUSYBOX_IMAGE;
    }
    let lock = std::fs::File::create(std::env::temp_dir().join("wasmos-busybox-image.lock"))
        .expect("lock file");
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map(|l| {
            if !has() {
                build_busybox_image();
            }
            drop(l);
        })
        .map_err(|(_, e)| e)
        .expect("lock the image build");
    BUSYBOX_IMAGE
}

fn build_busybox_image() {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox is missing: apt-get install busybox-static (./dev test does)"
    );
    let root = tempfile::tempdir().expect("temp dir");
    busybox_rootfs(busybox, root.path()).expect("a busybox root filesystem");
    let archive = tempfile::NamedTempFile::new().expect("temp file");
    let tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .arg("-cf")
        .arg(archive.path())
        .arg(".")
        .status()
        .expect("tar");
    assert!(tar.success(), "tar of the busybox root filesystem failed");
    let out = std::process::Command::new("docker")
        .args(["import", "-c", "ENV PATH=/bin", "-c", "CMD [\"sh\"]"])
        .arg(archive.path())
        .arg(BUSYBOX_IMAGE)
        .output()
        .expect("docker import");
    assert!(
        out.status.success(),
        "docker import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `/bin` with busybox and a link per applet, and the few files a shell
/// expects.
fn busybox_rootfs(busybox: &Path, root: &Path) -> std::io::Result<()> {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin)?;
    for d in ["tmp", "etc", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    // As in every real image: anyone (the unprivileged task user) may
    // write /tmp.
    std::fs::set_permissions(
        root.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )?;
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )?;
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    std::fs::copy(busybox, bin.join("busybox"))?;
    let list = std::process::Command::new(busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet))?;
        }
    }
    Ok(())
}

/// The ids of the Docker containers a test's agent started (labelled with
/// its checkpoint directory, under `dir`).
pub fn containers_under(dir: &Path) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--no-trunc", "--filter"])
        .arg(format!(
            "label=wasmos.agent={}",
            dir.join("data/agent/checkpoint").display()
        ))
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Removes the containers of a test's agent when the test ends, pass or
/// fail.
pub struct DockerJanitor(pub PathBuf);

impl Drop for DockerJanitor {
    fn drop(&mut self) {
        let ids = containers_under(&self.0);
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A master and agents with their own hostnames and a `rack` attribute,
/// each offering one CPU and 512 MB.
pub struct Racks {
    pub master: Daemon,
    pub agents: Vec<Daemon>,
    pub dir: TaskDir,
}

impl Racks {
    /// Starts the master, then an agent per (hostname, rack), and waits
    /// until every agent is connected.
    pub async fn start(hosts: &[(&str, &str)]) -> Racks {
        Self::start_with(hosts, &[]).await
    }

    /// As `start`, with extra options for the master.
    pub async fn start_with(hosts: &[(&str, &str)], master_extra: &[&str]) -> Racks {
        let dir = TaskDir::from(tempfile::tempdir().expect("temp dir"));
        let port = free_port();
        let mdata = dir.path().join("master");
        let listen = format!("127.0.0.1:{port}");
        let token = dir.path().join("join-token");
        std::fs::write(&token, "racks-join-token").expect("write the join token");
        let token = token.to_str().expect("utf-8 temp path").to_string();
        let management = bootstrap_token_file(dir.path());
        let (signing_key, plugin_key) = plugin_signing_key(dir.path());
        let mut args = vec![
            "master",
            "--listen",
            &listen,
            "--data-dir",
            mdata.to_str().expect("utf-8 temp path"),
            "--join-token-file",
            &token,
            "--bootstrap-token-file",
            &management,
            "--bootstrap-plugin-key",
            &plugin_key,
        ];
        args.extend_from_slice(master_extra);
        let master = Daemon::start("master", &args, "master", dir.path()).await;
        // The master made the cluster CA in its data dir.
        let ca = mdata.join("tls/ca.pem");
        register(&master.url, &ca, Some(TEST_TOKEN));
        register_signing_key(&master.url, &signing_key);
        let ca = ca.to_str().expect("utf-8 temp path").to_string();
        let mut agents = Vec::new();
        for (host, rack) in hosts {
            let data = dir.path().join(host);
            agents.push(
                Daemon::start(
                    host,
                    &[
                        "agent",
                        "--master",
                        &master.url,
                        "--ca-cert",
                        &ca,
                        "--join-token-file",
                        &token,
                        "--listen",
                        "127.0.0.1:0",
                        "--data-dir",
                        data.to_str().expect("utf-8 temp path"),
                        "--hostname",
                        host,
                        "--attributes",
                        &format!("rack:{rack}"),
                        "--resources",
                        &own_ports("cpus:1;mem:512"),
                    ],
                    "agent",
                    dir.path(),
                )
                .await,
            );
        }
        let api = Api::new(&master.url);
        let want = hosts.len();
        wait_for("every agent connected", DEADLINE, || async {
            let (_, a) = api.get("/api/wasmos/v1/agents").await;
            (a.as_array()?
                .iter()
                .filter(|a| a["connected"] == true)
                .count()
                == want)
                .then_some(())
        })
        .await;
        Racks {
            master,
            agents,
            dir,
        }
    }
}
