//! How a task's process is started, watched and signalled.
//!
//! [`Containerizer`] is the seam: the [`ProcessContainerizer`] here starts
//! the task as a plain process in its own process group, in its sandbox,
//! with a clean environment and its output captured to files. Isolation
//! (cgroups, namespaces) and the Docker engine plug in behind the same
//! trait.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use wasmos_core::{Resources, TaskId};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A resource limit to set on the task's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub resource: nix::sys::resource::Resource,
    pub soft: u64,
    pub hard: u64,
}

/// The `RLIMIT_*` resource for a name like `nofile`.
pub fn rlimit_resource(name: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource;
    Some(match name {
        "nofile" => Resource::RLIMIT_NOFILE,
        "nproc" => Resource::RLIMIT_NPROC,
        "core" => Resource::RLIMIT_CORE,
        "stack" => Resource::RLIMIT_STACK,
        "fsize" => Resource::RLIMIT_FSIZE,
        "memlock" => Resource::RLIMIT_MEMLOCK,
        "as" => Resource::RLIMIT_AS,
        "cpu" => Resource::RLIMIT_CPU,
        "data" => Resource::RLIMIT_DATA,
        _ => return None,
    })
}

/// The name of an `RLIMIT_*` resource, as [`rlimit_resource`] reads it.
pub fn rlimit_name(r: nix::sys::resource::Resource) -> &'static str {
    use nix::sys::resource::Resource;
    match r {
        Resource::RLIMIT_NOFILE => "nofile",
        Resource::RLIMIT_NPROC => "nproc",
        Resource::RLIMIT_CORE => "core",
        Resource::RLIMIT_STACK => "stack",
        Resource::RLIMIT_FSIZE => "fsize",
        Resource::RLIMIT_MEMLOCK => "memlock",
        Resource::RLIMIT_AS => "as",
        Resource::RLIMIT_CPU => "cpu",
        _ => "data",
    }
}

/// Cgroup limits isolators asked for, on top of those from the task's
/// resources (the native containerizer enforces them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupAsk {
    pub memory_mb: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub pids_max: Option<i64>,
}

impl CgroupAsk {
    /// A memory limit in bytes (`base`, from the task's resources) lowered
    /// to what isolators asked, if they asked less.
    pub fn memory_bytes(&self, base: Option<i64>) -> Option<i64> {
        let Some(m) = self.memory_mb else { return base };
        let asked = i64::try_from(m.saturating_mul(1 << 20)).unwrap_or(i64::MAX);
        Some(base.map_or(asked, |l| l.min(asked)))
    }

    /// The pids limit: what isolators asked, never above the agent's.
    pub fn pids(&self, agent_max: i64) -> i64 {
        self.pids_max.map_or(agent_max, |p| p.min(agent_max))
    }
}

/// Everything needed to start one task.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub task_id: TaskId,
    pub framework_id: String,
    pub sandbox: PathBuf,
    pub program: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub user: Option<String>,
    pub resources: Resources,
    /// Limits isolators asked for, already validated.
    pub rlimits: Vec<Rlimit>,
    pub cgroup: CgroupAsk,
    pub network: crate::native::Network,
    /// The image to run in, for the Docker containerizer.
    pub container: Option<wasmos_core::container::ContainerInfo>,
    /// Persistent volumes to mount into the sandbox.
    pub volumes: Vec<VolumeBind>,
}

/// A persistent volume's directory, seen by the task at `container_path`
/// below its sandbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VolumeBind {
    pub host: PathBuf,
    pub container_path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// The path `rel` below `sandbox` where a volume goes, its directories
/// made one by one: no step may be a symbolic link (a fetched archive
/// could hold one pointing anywhere), and each must be a directory. With
/// `make_last` the last step is made too (a mount point); without it, it
/// must not exist.
pub(crate) fn volume_target(sandbox: &Path, rel: &str, make_last: bool) -> Result<PathBuf, String> {
    let steps: Vec<&str> = rel.split('/').collect();
    let mut at = sandbox.to_path_buf();
    for (i, step) in steps.iter().enumerate() {
        at.push(step);
        let last = i + 1 == steps.len();
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!("{} is a symbolic link", at.display()));
            }
            Ok(_) if last && !make_last => {
                return Err(format!("{} exists already", at.display()));
            }
            Ok(m) if !m.is_dir() => return Err(format!("{} is not a directory", at.display())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !last || make_last {
                    std::fs::create_dir(&at)
                        .map_err(|e| format!("cannot make {}: {e}", at.display()))?;
                }
            }
            Err(e) => return Err(format!("cannot read {}: {e}", at.display())),
        }
    }
    Ok(at)
}

/// Links each volume into the sandbox, for containerizers without a mount
/// namespace of their own (Mesos' `filesystem/posix` does the same).
pub(crate) fn link_volumes(sandbox: &Path, volumes: &[VolumeBind]) -> Result<(), LaunchError> {
    for v in volumes {
        if v.read_only {
            return Err(LaunchError::Other(
                "read-only volumes need the native containerizer (run the agent as root)".into(),
            ));
        }
        let at = volume_target(sandbox, &v.container_path, false).map_err(|e| {
            LaunchError::Other(format!("cannot place volume {}: {e}", v.container_path))
        })?;
        std::os::unix::fs::symlink(&v.host, &at).map_err(|e| {
            LaunchError::Other(format!(
                "cannot link volume {} into the sandbox: {e}",
                v.host.display()
            ))
        })?;
    }
    Ok(())
}

/// How a task's process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// Why, when it was not the task's own doing.
    pub limitation: Option<Limitation>,
}

impl ExitInfo {
    /// An end with no exit status of the task's own.
    pub fn limited(l: Limitation) -> ExitInfo {
        ExitInfo {
            code: None,
            signal: None,
            limitation: Some(l),
        }
    }
}

/// What ended a task from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limitation {
    /// The kernel's OOM killer, at the task's memory limit.
    Memory {
        limit_bytes: Option<i64>,
        peak_bytes: Option<u64>,
    },
    /// Its supervisor ended without recording the exit.
    Lost(String),
    /// Not trusted any more (the host rebooted).
    Gone(String),
}

/// Why a task could not be started. Codes follow the shell: 127 for a
/// command not found, 126 for one that cannot be executed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LaunchError {
    #[error("command not found: {0}")]
    NotFound(String),
    #[error("permission denied executing {0}")]
    PermissionDenied(String),
    #[error("unknown user {0}")]
    UnknownUser(String),
    #[error("{0}")]
    Other(String),
}

impl LaunchError {
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            LaunchError::NotFound(_) => Some(127),
            LaunchError::PermissionDenied(_) => Some(126),
            _ => None,
        }
    }
}

/// Sends a signal to a task and everything it started.
pub type Signaller = Arc<dyn Fn(Signal) -> Result<(), String> + Send + Sync>;

/// How a command run in a task's context ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit code, or 128 + N when signal N ended it.
    pub code: i32,
    /// Standard output, then standard error: at most [`EXEC_OUTPUT_MAX`].
    pub output: Vec<u8>,
}

/// The most of a command's output a check keeps.
pub const EXEC_OUTPUT_MAX: usize = 4096;

/// Runs `/bin/sh -c <command>` where a task runs (its namespaces or its
/// container, its environment, its sandbox), within a timeout.
pub type Executor = Arc<
    dyn Fn(String, std::time::Duration) -> BoxFuture<'static, Result<ExecOutput, String>>
        + Send
        + Sync,
>;

/// A started task.
pub struct Launched {
    pub pid: u32,
    /// Resolves when the task's process ends.
    pub exit: BoxFuture<'static, ExitInfo>,
    /// Signals the task and everything it started.
    pub signal: Signaller,
    /// Runs commands in the task's context (COMMAND health checks).
    pub exec: Option<Executor>,
}

/// Runs a prepared command (its own process group) to its end within
/// `timeout`; on timeout the whole group is killed.
pub async fn run_command(
    mut cmd: tokio::process::Command,
    timeout: std::time::Duration,
) -> Result<ExecOutput, String> {
    restrict_child(&mut cmd, Vec::new());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run the command: {e}"))?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => {
            if let Some(p) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(Pid::from_raw(p), Signal::SIGKILL);
            }
            Err(format!(
                "the command did not finish within {} ms",
                timeout.as_millis()
            ))
        }
        Ok(Err(e)) => Err(format!("cannot wait for the command: {e}")),
        Ok(Ok(out)) => {
            use std::os::unix::process::ExitStatusExt as _;
            let code = out
                .status
                .code()
                .or_else(|| out.status.signal().map(|s| 128 + s))
                .unwrap_or(-1);
            let mut output = out.stdout;
            output.extend_from_slice(&out.stderr);
            output.truncate(EXEC_OUTPUT_MAX);
            Ok(ExecOutput { code, output })
        }
    }
}

/// Commands as plain processes with the task's environment, in its sandbox.
pub fn host_executor(env: Vec<(String, String)>, sandbox: PathBuf) -> Executor {
    Arc::new(move |command: String, timeout| {
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(command)
            .env_clear()
            .envs(env.iter().cloned())
            .current_dir(&sandbox);
        Box::pin(run_command(cmd, timeout))
    })
}

/// Starts tasks.
pub trait Containerizer: Send + Sync {
    fn name(&self) -> &'static str;
    fn launch(&self, spec: ContainerSpec) -> BoxFuture<'_, Result<Launched, LaunchError>>;
}

/// Plain processes, each the leader of its own process group.
#[derive(Debug, Default)]
pub struct ProcessContainerizer;

impl Containerizer for ProcessContainerizer {
    fn name(&self) -> &'static str {
        "process"
    }

    fn launch(&self, spec: ContainerSpec) -> BoxFuture<'_, Result<Launched, LaunchError>> {
        Box::pin(async move { launch_process(spec) })
    }
}

/// Restricts the child between fork and exec: `no_new_privs` (a setuid
/// binary or file capabilities cannot raise its privileges), then the
/// resource limits.
#[allow(unsafe_code)]
pub(crate) fn restrict_child(cmd: &mut tokio::process::Command, limits: Vec<Rlimit>) {
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed. It calls prctl(2) and
    // setrlimit(2) (plain system calls) on data moved in before the fork;
    // it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_no_new_privs()
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
            for l in &limits {
                nix::sys::resource::setrlimit(l.resource, l.soft, l.hard)
                    .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
            }
            Ok(())
        });
    }
}

fn launch_process(spec: ContainerSpec) -> Result<Launched, LaunchError> {
    link_volumes(&spec.sandbox, &spec.volumes)?;
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.sandbox.join(name))
            .map_err(|e| LaunchError::Other(format!("cannot open {name} in the sandbox: {e}")))
    };
    let (stdout, stderr) = (open("stdout")?, open("stderr")?);
    let mut cmd = tokio::process::Command::new(&spec.program);
    if let Some((argv0, rest)) = spec.argv.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.sandbox)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .process_group(0)
        .kill_on_drop(false);
    if let Some(user) = &spec.user {
        let u = nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .ok_or_else(|| LaunchError::UnknownUser(user.clone()))?;
        cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
        // The sandbox belongs to the task's user.
        let _ = nix::unistd::chown(&spec.sandbox, Some(u.uid), Some(u.gid));
        for f in ["stdout", "stderr"] {
            let _ = nix::unistd::chown(&spec.sandbox.join(f), Some(u.uid), Some(u.gid));
        }
    }
    restrict_child(&mut cmd, spec.rlimits.clone());
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LaunchError::NotFound(spec.program.clone()),
        std::io::ErrorKind::PermissionDenied => LaunchError::PermissionDenied(spec.program.clone()),
        _ => LaunchError::Other(format!("cannot start {}: {e}", spec.program)),
    })?;
    let pid = child
        .id()
        .ok_or_else(|| LaunchError::Other("the process ended before it was watched".into()))?;
    let exit = Box::pin(async move {
        use std::os::unix::process::ExitStatusExt;
        match child.wait().await {
            Ok(st) => ExitInfo {
                code: st.code(),
                signal: st.signal(),
                limitation: None,
            },
            Err(_) => ExitInfo {
                code: None,
                signal: None,
                limitation: None,
            },
        }
    });
    let pgid = Pid::from_raw(pid as i32);
    let signal = Arc::new(move |sig: Signal| {
        nix::sys::signal::killpg(pgid, sig).map_err(|e| format!("cannot signal task: {e}"))
    });
    let exec = host_executor(spec.env.clone(), spec.sandbox.clone());
    Ok(Launched {
        pid,
        exit,
        signal,
        exec: Some(exec),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_is_never_placed_through_a_symbolic_link() {
        let sandbox = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), sandbox.path().join("evil")).unwrap();
        assert!(volume_target(sandbox.path(), "evil", true).is_err());
        assert!(volume_target(sandbox.path(), "evil/data", true).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        let at = volume_target(sandbox.path(), "a/b", true).unwrap();
        assert!(at.is_dir() && at.starts_with(sandbox.path()));
        // A link's place must be free.
        assert!(volume_target(sandbox.path(), "a/b", false).is_err());
        assert!(volume_target(sandbox.path(), "a/c", false).is_ok());
    }
}
