//! The native containerizer: each task in its own cgroup (cpu shares and
//! quota, memory, pids) and its own pid, mount, uts and ipc namespaces
//! (network too when the task asks), owned by a per-task supervisor
//! process that outlives the agent.
//!
//! The checkpoint directory of a task (`<data>/checkpoint/<task>/`) holds:
//! - `task.json`: the framework and the task, written by the agent before
//!   the launch (what recovery reports);
//! - `launch.json`: what the supervisor runs;
//! - `supervisor.json`: the supervisor's pid and start time, the init's
//!   pid, and the boot id — written once the task exec'd;
//! - `exit.json`: how the task ended, written by the supervisor;
//! - `executor.json` (an executor's container, `executor-<uuid>`): the
//!   executor, its tasks and each one's latest update, written by the agent
//!   (`executors.rs`).

pub mod cgroup;
pub mod supervisor;

use std::io::Write as _;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt as _;
use wasmos_core::{FrameworkId, TaskSpec};

use crate::containerizer::{
    BoxFuture, ContainerSpec, Containerizer, ExitInfo, LaunchError, Launched, Limitation,
};

/// Whether the task gets the host's network or its own, empty one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    #[default]
    Host,
    /// Its own network namespace with only loopback.
    None,
}

/// What the supervisor runs (`launch.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// The cgroup's name under `wasmos/` (unique per launch).
    pub container_id: String,
    pub task_id: String,
    pub sandbox: PathBuf,
    pub program: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub user: Option<String>,
    pub limits: cgroup::Limits,
    pub rlimits: Vec<(String, u64, u64)>,
    pub network: Network,
    /// Size of the task's own `/tmp` (tmpfs), in MB.
    pub tmp_mb: u64,
    /// Persistent volumes bound into the sandbox.
    #[serde(default)]
    pub volumes: Vec<crate::containerizer::VolumeBind>,
}

/// The supervisor's identity (`supervisor.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupervisorRecord {
    pub supervisor_pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: tells a reused pid apart.
    pub supervisor_start: u64,
    pub init_pid: u32,
    pub boot_id: String,
}

/// How the task ended (`exit.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExitRecord {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    #[serde(default)]
    pub oom_killed: bool,
    pub memory_limit_bytes: Option<i64>,
    pub peak_memory_bytes: Option<u64>,
    /// `(kind, message)` when the task never started.
    pub launch_error: Option<(String, String)>,
}

/// The agent's record of a task (`task.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    pub framework_id: FrameworkId,
    pub spec: TaskSpec,
    /// The GPUs (indices) it was given, so that a restarted agent does
    /// not hand them out again while it runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<u32>,
}

/// Writes `value` as JSON to `path` via a temporary file and a rename, so
/// a reader sees all of it or none.
///
/// Not fsynced: checkpoints are trusted only within one boot (after a
/// reboot every task is reported gone), and within a boot the page cache
/// outlives any process that crashes, the agent included. Syncing would
/// add milliseconds to every launch and protect nothing that is used.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    let mut f =
        std::fs::File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(&bytes)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// Reads a checkpoint file; None when it is missing or unreadable.
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// A process's start time (clock ticks since boot), to tell a reused pid
/// apart.
pub fn process_start_time(pid: u32) -> Option<u64> {
    stat_field(pid, 22)
}

/// Field `n` (1-based, as in proc(5)) of `/proc/<pid>/stat`, from field 3 on.
fn stat_field<T: std::str::FromStr>(pid: u32, n: usize) -> Option<T> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(n.checked_sub(3)?)?.parse().ok()
}

/// Whether `r`'s supervisor is still the live process it recorded.
fn supervisor_alive(r: &SupervisorRecord) -> bool {
    process_start_time(r.supervisor_pid) == Some(r.supervisor_start)
}

/// Waits until process `pid` ends (it need not be our child).
async fn wait_exit(pid: u32) {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd.
    #[allow(unsafe_code)]
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        // Gone already (or pidfd unsupported: poll).
        while process_start_time(pid).is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        return;
    }
    // SAFETY: the fd was just returned to us and nothing else owns it.
    #[allow(unsafe_code)]
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: `fd` is an OwnedFd: as_raw_fd returns the descriptor it
    // owns for as long as the AsyncFd lives.
    #[allow(unsafe_code)]
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    };
    match registered {
        Ok(afd) => {
            let _ = afd.readable().await;
        }
        Err(_) => {
            while process_start_time(pid).is_some() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// How a task ended, from its checkpoint, once its supervisor is gone.
fn exit_info(dir: &Path) -> ExitInfo {
    match read_json::<ExitRecord>(&dir.join("exit.json")) {
        Some(r) => {
            let limitation = r.oom_killed.then_some(Limitation::Memory {
                limit_bytes: r.memory_limit_bytes,
                peak_bytes: r.peak_memory_bytes,
            });
            ExitInfo {
                code: r.code,
                signal: r.signal,
                limitation,
            }
        }
        None => ExitInfo::limited(Limitation::Lost(
            "the task's supervisor ended without recording its exit".into(),
        )),
    }
}

/// A process's parent pid (field 4 of `/proc/<pid>/stat`).
fn parent_pid(pid: u32) -> Option<u32> {
    stat_field(pid, 4)
}

/// A pidfd for the task's init while it is still the supervisor's child.
/// Signals then reach that process and no other, even once its pid is
/// free again (pids wrap quickly on a busy host).
fn init_pidfd(rec: &SupervisorRecord) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd.
    #[allow(unsafe_code)]
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, rec.init_pid as libc::c_int, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the fd was just returned to us and nothing else owns it.
    #[allow(unsafe_code)]
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // The pidfd pins whichever process has the pid now: it is the init
    // only if its parent is the supervisor (whose only child it is).
    (parent_pid(rec.init_pid) == Some(rec.supervisor_pid)).then_some(fd)
}

fn launched(bin: &Path, dir: PathBuf, rec: &SupervisorRecord) -> Launched {
    use std::os::fd::AsRawFd as _;
    let launch_path = dir.join("launch.json");
    let sup = rec.supervisor_pid;
    let init = init_pidfd(rec);
    let exit = Box::pin(async move {
        wait_exit(sup).await;
        exit_info(&dir)
    });
    // Signals go to the namespace's init, which forwards them to every
    // process of the task; SIGKILL ends the whole namespace.
    let signal = Arc::new(move |sig: Signal| {
        // No init any more: the task has ended, nothing to signal.
        let Some(fd) = &init else { return Ok(()) };
        // SAFETY: pidfd_send_signal(2) on a pidfd we own, no siginfo.
        #[allow(unsafe_code)]
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                sig as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        match r {
            0 => Ok(()),
            _ if nix::errno::Errno::last() == nix::errno::Errno::ESRCH => Ok(()),
            _ => Err(format!("cannot signal task: {}", nix::errno::Errno::last())),
        }
    });
    Launched {
        pid: rec.init_pid,
        exit,
        signal,
        exec: read_json::<LaunchSpec>(&launch_path)
            .map(|l| namespace_executor(bin.to_path_buf(), rec.init_pid, l)),
    }
}

/// Commands inside a native task: `wasmos supervise --enter` joins its
/// init's mount, uts, ipc, net and pid namespaces and runs the command
/// with the task's environment and user, in its sandbox, with no more
/// capabilities than the task has (never the agent's full set).
fn namespace_executor(
    bin: PathBuf,
    init_pid: u32,
    launch: LaunchSpec,
) -> crate::containerizer::Executor {
    let ids = launch.user.as_ref().and_then(|u| {
        nix::unistd::User::from_name(u)
            .ok()
            .flatten()
            .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
    });
    let (uid, gid) = ids.map_or(("-".to_string(), "-".to_string()), |(u, g)| {
        (u.to_string(), g.to_string())
    });
    Arc::new(move |command: String, timeout| {
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.args(["supervise", "--enter", &init_pid.to_string()])
            .arg(&launch.sandbox)
            .args([&uid, &gid])
            .arg(command)
            .env_clear()
            .envs(launch.env.iter().cloned());
        Box::pin(crate::containerizer::run_command(cmd, timeout))
    })
}

/// The cgroup limits of a container holding `r`.
fn limits_for(r: &wasmos_core::Resources, pids_max: Option<i64>) -> cgroup::Limits {
    let cpus = r.cpus.as_f64();
    cgroup::Limits {
        cpu_shares: (cpus > 0.0).then(|| ((cpus * 1024.0) as u64).max(2)),
        cpu_quota_us: (cpus > 0.0)
            .then(|| ((cpus * cgroup::CPU_PERIOD_US as f64) as i64).max(1000)),
        memory_bytes: (r.mem.as_f64() > 0.0).then(|| (r.mem.as_f64() * 1024.0 * 1024.0) as i64),
        pids_max,
    }
}

/// A task found in the checkpoints when the agent starts.
pub struct Recovered {
    pub record: TaskRecord,
    /// Still running: how to watch and signal it.
    pub running: Option<Launched>,
    /// Ended while the agent was away (or on a previous boot).
    pub ended: Option<ExitInfo>,
}

/// Settings of the native containerizer.
#[derive(Debug, Clone)]
pub struct NativeConfig {
    /// Where checkpoints live (`<data>/checkpoint`).
    pub checkpoint_dir: PathBuf,
    /// The binary with the `supervise` subcommand (the running `wasmos`).
    pub supervisor_bin: PathBuf,
    /// Limit on processes per task (fork bombs stop there).
    pub pids_max: i64,
    pub tmp_mb: u64,
}

#[derive(Debug)]
pub struct NativeContainerizer {
    config: NativeConfig,
    factory: Factory,
}

impl NativeContainerizer {
    /// Checks that this host can isolate tasks (root, cgroup controllers).
    pub fn new(config: NativeConfig) -> Result<NativeContainerizer, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("the native containerizer needs root (cgroups and namespaces)".into());
        }
        cgroup::available()?;
        std::fs::create_dir_all(&config.checkpoint_dir)
            .map_err(|e| format!("cannot create {}: {e}", config.checkpoint_dir.display()))?;
        Ok(NativeContainerizer {
            config,
            factory: Factory::default(),
        })
    }

    pub fn task_dir(&self, task_id: &str) -> PathBuf {
        self.config.checkpoint_dir.join(task_id)
    }

    /// Every checkpointed task: reattached when its supervisor lives on,
    /// ended (with its recorded exit) otherwise. After a reboot nothing
    /// recorded is trusted: every task is reported gone.
    pub fn recover(&self, boot_id: &str) -> Vec<Recovered> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.config.checkpoint_dir) else {
            return out;
        };
        for e in entries.flatten() {
            let dir = e.path();
            if dir.join("docker.json").exists() {
                // The Docker containerizer's to recover.
                continue;
            }
            let Some(record) = read_json::<TaskRecord>(&dir.join("task.json")) else {
                tracing::warn!(dir = %dir.display(), "unreadable task checkpoint removed");
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            };
            let sup = read_json::<SupervisorRecord>(&dir.join("supervisor.json"));
            let launch = read_json::<LaunchSpec>(&dir.join("launch.json"));
            let rebooted = sup.as_ref().is_some_and(|s| s.boot_id != boot_id);
            let r = if rebooted {
                Recovered {
                    record,
                    running: None,
                    ended: Some(ExitInfo::limited(Limitation::Gone(
                        "the host rebooted; the task's checkpoint is from an earlier boot".into(),
                    ))),
                }
            } else {
                match &sup {
                    Some(s) if supervisor_alive(s) => Recovered {
                        record,
                        running: Some(launched(&self.config.supervisor_bin, dir.clone(), s)),
                        ended: None,
                    },
                    _ => {
                        // Ended while the agent was away; a cgroup left
                        // behind (supervisor killed) is cleaned up.
                        if let Some(l) = &launch
                            && cgroup::exists(&l.container_id)
                        {
                            let _ = cgroup::TaskCgroup::load(&l.container_id).destroy();
                        }
                        let ended = if sup.is_none() && !dir.join("exit.json").exists() {
                            ExitInfo::limited(Limitation::Lost(
                                "the agent stopped while launching the task".into(),
                            ))
                        } else {
                            exit_info(&dir)
                        };
                        Recovered {
                            record,
                            running: None,
                            ended: Some(ended),
                        }
                    }
                }
            };
            out.push(r);
        }
        out
    }

    /// Raises a running container's limits to what `resources` need (an
    /// executor given another task).
    pub fn grow(&self, task_id: &str, resources: &wasmos_core::Resources) -> Result<(), String> {
        let launch = read_json::<LaunchSpec>(&self.task_dir(task_id).join("launch.json"))
            .ok_or("the container's launch record is missing")?;
        cgroup::TaskCgroup::load(&launch.container_id).grow(&limits_for(resources, None))
    }

    async fn launch_native(&self, spec: ContainerSpec) -> Result<Launched, LaunchError> {
        let dir = self.task_dir(spec.task_id.as_str());
        std::fs::create_dir_all(&dir)
            .map_err(|e| LaunchError::Other(format!("cannot create {}: {e}", dir.display())))?;
        let mut limits = limits_for(
            &spec.resources,
            Some(spec.cgroup.pids(self.config.pids_max)),
        );
        if let Some(s) = spec.cgroup.cpu_shares {
            limits.cpu_shares = Some(s);
        }
        limits.memory_bytes = spec.cgroup.memory_bytes(limits.memory_bytes);
        let launch = LaunchSpec {
            container_id: uuid::Uuid::new_v4().simple().to_string(),
            task_id: spec.task_id.to_string(),
            sandbox: spec.sandbox.clone(),
            program: spec.program.clone(),
            argv: spec.argv.clone(),
            env: spec.env.clone(),
            user: spec.user.clone(),
            limits,
            rlimits: spec
                .rlimits
                .iter()
                .map(|l| {
                    (
                        crate::containerizer::rlimit_name(l.resource).to_string(),
                        l.soft,
                        l.hard,
                    )
                })
                .collect(),
            network: spec.network,
            tmp_mb: self.config.tmp_mb,
            volumes: spec.volumes.clone(),
        };
        write_json_atomic(&dir.join("launch.json"), &launch).map_err(LaunchError::Other)?;
        if let Some(user) = &spec.user {
            let u = nix::unistd::User::from_name(user)
                .ok()
                .flatten()
                .ok_or_else(|| LaunchError::UnknownUser(user.clone()))?;
            let _ = nix::unistd::chown(&spec.sandbox, Some(u.uid), Some(u.gid));
            for f in ["stdout", "stderr"] {
                let p = spec.sandbox.join(f);
                let _ = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&p);
                let _ = nix::unistd::chown(&p, Some(u.uid), Some(u.gid));
            }
        }
        let line = match self.factory.ask(&self.config.supervisor_bin, &dir).await {
            Some(line) => line,
            // No factory (it could not start): one supervisor process.
            None => self.spawn_supervisor(&dir).await?,
        };
        if line.is_empty() {
            let log = std::fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default();
            return Err(LaunchError::Other(format!(
                "the task supervisor gave no answer: {}",
                log.lines()
                    .last()
                    .unwrap_or("see supervisor.log in the checkpoint directory")
            )));
        }
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("error ") {
            let (kind, msg) = rest.split_once(' ').unwrap_or((rest, ""));
            return Err(match kind {
                "notfound" => LaunchError::NotFound(spec.program.clone()),
                "denied" => LaunchError::PermissionDenied(spec.program.clone()),
                "user" => LaunchError::UnknownUser(spec.user.clone().unwrap_or_default()),
                _ => LaunchError::Other(msg.to_string()),
            });
        }
        let rec = read_json::<SupervisorRecord>(&dir.join("supervisor.json")).ok_or_else(|| {
            LaunchError::Other(format!(
                "the task supervisor answered {line:?} but recorded nothing"
            ))
        })?;
        Ok(launched(&self.config.supervisor_bin, dir, &rec))
    }
}

impl NativeContainerizer {
    /// Starts `wasmos supervise DIR` and reads its answer ("" if none).
    async fn spawn_supervisor(&self, dir: &Path) -> Result<String, LaunchError> {
        let mut child = tokio::process::Command::new(&self.config.supervisor_bin)
            .arg("supervise")
            .arg(dir)
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| {
                LaunchError::Other(format!(
                    "cannot start the task supervisor {}: {e}",
                    self.config.supervisor_bin.display()
                ))
            })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| LaunchError::Other("no supervisor pipe".into()))?;
        // The first process only forks the supervisor and exits.
        let _ = child.wait().await;
        let mut line = String::new();
        let _ = tokio::time::timeout(
            ANSWER_DEADLINE,
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await;
        Ok(line)
    }
}

/// How long a supervisor may take to answer a launch.
const ANSWER_DEADLINE: Duration = Duration::from_secs(30);

/// The agent's end of `wasmos supervise --serve`: one long-lived,
/// single-threaded process that forks a supervisor per launch, started on
/// first use and again if it dies. Answers come back tagged with the
/// launch's token.
#[derive(Debug, Default)]
struct Factory {
    conn: tokio::sync::Mutex<Option<FactoryConn>>,
}

#[derive(Debug)]
struct FactoryConn {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    waiting: Waiting,
}

impl Factory {
    /// Asks the factory for a supervisor of `dir`; its answer line ("" if
    /// none came), or None when no factory can run (the caller then
    /// spawns one supervisor).
    async fn ask(&self, bin: &Path, dir: &Path) -> Option<String> {
        use tokio::io::AsyncWriteExt as _;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let request = format!("{token} {}\n", dir.display());
        let answer = {
            let mut conn = self.conn.lock().await;
            let mut sent = None;
            // A factory that died is replaced once.
            for _ in 0..2 {
                let alive = conn
                    .as_mut()
                    .is_some_and(|c| matches!(c.child.try_wait(), Ok(None)));
                if !alive {
                    match FactoryConn::start(bin) {
                        Ok(c) => *conn = Some(c),
                        Err(e) => {
                            tracing::warn!(error = %e, "no supervisor factory; one supervisor process per launch");
                            return None;
                        }
                    }
                }
                let c = conn.as_mut()?;
                let (tx, rx) = tokio::sync::oneshot::channel();
                c.waiting().insert(token.clone(), tx);
                if c.stdin.write_all(request.as_bytes()).await.is_ok() {
                    sent = Some(rx);
                    break;
                }
                c.waiting().remove(&token);
                *conn = None;
            }
            sent?
        };
        match tokio::time::timeout(ANSWER_DEADLINE, answer).await {
            Ok(Ok(line)) => Some(line),
            _ => Some(String::new()),
        }
    }
}

/// Launches waiting for their supervisor's answer, by token.
type Waiting =
    Arc<std::sync::Mutex<std::collections::HashMap<String, tokio::sync::oneshot::Sender<String>>>>;

impl FactoryConn {
    fn waiting(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<String, tokio::sync::oneshot::Sender<String>>,
    > {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(bin: &Path) -> Result<FactoryConn, String> {
        let mut child = tokio::process::Command::new(bin)
            .args(["supervise", "--serve"])
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            // It ends by itself when the agent's end of stdin closes.
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| format!("cannot start {} supervise --serve: {e}", bin.display()))?;
        let stdin = child.stdin.take().ok_or("no factory stdin")?;
        let stdout = child.stdout.take().ok_or("no factory stdout")?;
        let waiting: Waiting = Default::default();
        let w = waiting.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Some((token, answer)) = line.split_once(' ') else {
                    continue;
                };
                let tx = w.lock().unwrap_or_else(|p| p.into_inner()).remove(token);
                if let Some(tx) = tx {
                    let _ = tx.send(answer.to_string());
                }
            }
            // The factory is gone: launches still waiting get no answer.
            w.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
        Ok(FactoryConn {
            child,
            stdin,
            waiting,
        })
    }
}

impl Containerizer for NativeContainerizer {
    fn name(&self) -> &'static str {
        "native"
    }

    fn launch(&self, spec: ContainerSpec) -> BoxFuture<'_, Result<Launched, LaunchError>> {
        Box::pin(self.launch_native(spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_this_process_is_read_past_its_name() {
        let t = process_start_time(std::process::id());
        assert!(t.is_some_and(|t| t > 0));
        assert_eq!(process_start_time(std::process::id()), t);
    }

    #[test]
    fn a_reused_init_pid_is_not_signalled() {
        assert_eq!(
            parent_pid(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
        // This process is not a child of pid 1's child 2: no pidfd, so
        // signals go nowhere rather than to a stranger.
        let rec = SupervisorRecord {
            supervisor_pid: 2,
            supervisor_start: 0,
            init_pid: std::process::id(),
            boot_id: String::new(),
        };
        assert!(init_pidfd(&rec).is_none());
        let (sig, exit) = {
            let l = launched(Path::new("wasmos"), std::env::temp_dir(), &rec);
            (l.signal, l.exit)
        };
        drop(exit);
        assert_eq!(
            sig(Signal::SIGKILL),
            Ok(()),
            "nothing signalled, and no error"
        );
    }

    #[test]
    fn a_missing_exit_record_is_reported_lost_not_success() {
        let d = tempfile::tempdir().unwrap();
        let e = exit_info(d.path());
        assert_eq!((e.code, e.signal), (None, None));
        assert!(matches!(e.limitation, Some(Limitation::Lost(_))));
        write_json_atomic(
            &d.path().join("exit.json"),
            &ExitRecord {
                signal: Some(9),
                oom_killed: true,
                memory_limit_bytes: Some(64 << 20),
                ..Default::default()
            },
        )
        .unwrap();
        let e = exit_info(d.path());
        assert_eq!(e.signal, Some(9));
        assert!(matches!(e.limitation, Some(Limitation::Memory { .. })));
    }
}
