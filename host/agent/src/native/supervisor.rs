//! The per-task supervisor: `wasmos supervise <checkpoint dir>`.
//!
//! The agent starts it for each native task; it detaches (its own session,
//! not the agent's child) so that it outlives an agent restart. It:
//!
//! 1. creates the task's cgroup with its limits;
//! 2. forks an init into a new pid namespace, moves it into the cgroup, and
//!    lets it set up the mount (own `/proc`, own `/tmp`), uts, ipc and, when
//!    asked, network namespaces;
//! 3. the init forks the task (its own session, the user, `no_new_privs`,
//!    rlimits) and execs it; then it reaps orphans, forwards SIGTERM and
//!    friends to everything in the namespace, and reports the task's exit;
//! 4. the supervisor answers the agent's launch with one line on stdout
//!    (`started <init pid>` or `error <kind> <message>`), waits for the end,
//!    writes `exit.json` (exit code or signal, whether the OOM killer
//!    struck) atomically into the checkpoint directory, and removes the
//!    cgroup.
//!
//! The agent normally asks its supervisor factory (`wasmos supervise
//! --serve`, see [`serve`]) to fork a supervisor rather than execute one.
//!
//! Everything here is synchronous and single-threaded, so forking is safe.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use super::cgroup::TaskCgroup;
use super::{ExitRecord, LaunchSpec, Network, SupervisorRecord, write_json_atomic};

/// Runs the supervisor for the checkpoint directory `dir`; never returns.
pub fn main(dir: &Path) -> ! {
    std::process::exit(run_exit_code(dir, None))
}

fn run_exit_code(dir: &Path, token: Option<&str>) -> i32 {
    match run(dir, token) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("supervisor: {e}");
            1
        }
    }
}

/// `wasmos supervise --serve`: the agent's supervisor factory. Reads
/// `TOKEN DIR` lines on stdin and forks a supervisor for each, which
/// answers on stdout as `TOKEN <answer>`. Forking this small,
/// single-threaded process instead of executing `wasmos supervise` anew
/// saves the exec and the dynamic loading of the whole binary on every
/// launch. Ends when stdin closes (the agent went away); the supervisors
/// it started live on.
pub fn serve() -> ! {
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => std::process::exit(0),
            Ok(_) => {}
        }
        let Some((token, dir)) = line.trim_end().split_once(' ') else {
            continue;
        };
        // SAFETY: single-threaded process; the child runs the supervisor,
        // which ends in exit.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                // The agent's request pipe is the factory's, not ours.
                if let Ok(null) = std::fs::File::open("/dev/null") {
                    let _ = nix::unistd::dup2_stdin(&null);
                }
                let code = run_exit_code(Path::new(dir), Some(token));
                std::process::exit(code)
            }
            // The child forks the supervisor proper and exits at once.
            Ok(ForkResult::Parent { child }) => {
                let _ = waitpid(child, None);
            }
            Err(e) => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{token} error other fork: {e}");
                let _ = out.flush();
            }
        }
    }
}

/// Where the supervisor answers the agent: one line, written with a
/// single write so that answers of concurrent supervisors on the
/// factory's pipe never interleave.
pub(crate) struct Answer {
    out: std::fs::File,
    token: Option<String>,
}

impl Answer {
    fn line(&mut self, text: &str) {
        let line = match &self.token {
            Some(t) => format!("{t} {text}\n"),
            None => format!("{text}\n"),
        };
        let _ = self.out.write_all(line.as_bytes());
    }
}

fn run(dir: &Path, token: Option<&str>) -> Result<(), String> {
    let spec: LaunchSpec = serde_json::from_slice(
        &std::fs::read(dir.join("launch.json"))
            .map_err(|e| format!("cannot read launch.json: {e}"))?,
    )
    .map_err(|e| format!("malformed launch.json: {e}"))?;
    // Detach: the agent waits for this first process, which exits at once;
    // the supervisor proper is its child in a new session.
    // SAFETY: single-threaded process; the child continues normally.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    let _ = nix::unistd::setsid();
    if let Ok(log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("supervisor.log"))
    {
        let _ = nix::unistd::dup2_stderr(&log);
    }
    let mut answer = Answer {
        out: unsafe_stdout(),
        token: token.map(str::to_string),
    };
    let result = supervise(dir, &spec, &mut answer);
    if let Err(e) = &result {
        answer.line(&format!("error other {}", e.replace('\n', " ")));
        let _ = write_json_atomic(
            &dir.join("exit.json"),
            &ExitRecord {
                launch_error: Some(("other".into(), e.clone())),
                ..Default::default()
            },
        );
    }
    result
}

/// The answer pipe to the agent (our stdout).
fn unsafe_stdout() -> std::fs::File {
    // SAFETY: fd 1 is open (the agent's pipe) and nothing else owns it.
    unsafe { std::fs::File::from_raw_fd(1) }
}

fn pipe() -> Result<(std::fs::File, std::fs::File), String> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    Ok((std::fs::File::from(r), std::fs::File::from(w)))
}

fn supervise(dir: &Path, spec: &LaunchSpec, answer: &mut Answer) -> Result<(), String> {
    let cg = TaskCgroup::create(&spec.container_id, &spec.limits)?;
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.sandbox.join(name))
            .map_err(|e| format!("cannot open {name} in the sandbox: {e}"))
    };
    let (out, err) = (open("stdout")?, open("stderr")?);
    let (go_r, mut go_w) = pipe()?;
    let (report_r, report_w) = pipe()?;
    let self_join = cg.self_join_files();
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("cannot create a pid namespace: {e}"))?;
    // SAFETY: single-threaded; the child only runs `init`, which ends in
    // exit or exec.
    let init = match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(go_w);
            drop(report_r);
            let code = init_main(spec, &self_join, go_r, report_w, out, err);
            // SAFETY: leave without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(go_r);
    drop(report_w);
    // On cgroup v1 the init joins by itself (see `init_main`); on v2 it
    // is moved in from here.
    if self_join.is_empty()
        && let Err(e) = cg.add(init.as_raw() as u32)
    {
        let _ = signal::kill(init, Signal::SIGKILL);
        let _ = waitpid(init, None);
        let _ = cg.destroy();
        return Err(e);
    }
    let _ = go_w.write_all(b"g");
    drop(go_w);
    let mut lines = BufReader::new(report_r).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    if let Some(rest) = first.strip_prefix("error ") {
        let (kind, msg) = rest.split_once(' ').unwrap_or((rest, ""));
        let _ = waitpid(init, None);
        let _ = cg.destroy();
        write_json_atomic(
            &dir.join("exit.json"),
            &ExitRecord {
                launch_error: Some((kind.to_string(), msg.to_string())),
                ..Default::default()
            },
        )?;
        answer.line(&format!("error {kind} {msg}"));
        return Ok(());
    }
    if first != "started" {
        // The init died before it could exec the task.
        let status = waitpid(init, None);
        let _ = cg.destroy();
        return Err(format!(
            "the task's init ended before the task started ({status:?})"
        ));
    }
    write_json_atomic(
        &dir.join("supervisor.json"),
        &SupervisorRecord {
            supervisor_pid: std::process::id(),
            supervisor_start: super::process_start_time(std::process::id()).unwrap_or(0),
            init_pid: init.as_raw() as u32,
            boot_id: crate::resources::boot_id(),
        },
    )?;
    answer.line(&format!("started {}", init.as_raw()));
    // The agent has its answer; from now on it may be gone.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
    let reported = lines.next().and_then(Result::ok);
    let init_status = loop {
        match waitpid(init, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    let (mut code, mut sig) = (None, None);
    match reported.as_deref().and_then(|l| l.strip_prefix("exit ")) {
        Some(rest) => {
            let mut it = rest.split(' ');
            let kind = it.next().unwrap_or("");
            let n = it.next().and_then(|v| v.parse().ok());
            match kind {
                "code" => code = n,
                _ => sig = n,
            }
        }
        // The init itself was killed (SIGKILL from the agent, or the OOM
        // killer): the task went with it.
        None => match init_status {
            Ok(WaitStatus::Signaled(_, s, _)) => sig = Some(s as i32),
            Ok(WaitStatus::Exited(_, c)) => code = Some(c),
            _ => {}
        },
    }
    let oom_kills = cg.oom_kills();
    let record = ExitRecord {
        code,
        signal: sig,
        oom_killed: oom_kills > 0,
        memory_limit_bytes: spec.limits.memory_bytes,
        peak_memory_bytes: cg.peak_memory(),
        launch_error: None,
    };
    write_json_atomic(&dir.join("exit.json"), &record)?;
    if let Err(e) = cg.destroy() {
        eprintln!("supervisor: {e}");
    }
    Ok(())
}

/// The signal the init last received, to forward.
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn remember(sig: libc::c_int) {
    PENDING.store(sig, Ordering::SeqCst);
}

const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Pid 1 of the task's namespace. Returns the exit code of the init.
fn init_main(
    spec: &LaunchSpec,
    self_join: &[std::path::PathBuf],
    mut go: std::fs::File,
    mut report: std::fs::File,
    out: std::fs::File,
    err: std::fs::File,
) -> i32 {
    let mut b = [0u8; 1];
    if go.read_exact(&mut b).is_err() {
        return 1;
    }
    // "0" in a v1 `tasks` file moves the writing thread itself, which the
    // kernel does without the global threadgroup lock (an RCU grace period
    // per write when another process is moved): milliseconds less per
    // launch. The init is single-threaded, so the thread is the process.
    for f in self_join {
        if let Err(e) = std::fs::write(f, b"0") {
            let _ = writeln!(
                report,
                "error other cannot join cgroup {}: {e}",
                f.display()
            );
            return 1;
        }
    }
    if let Err(e) = namespaces(spec) {
        let _ = writeln!(report, "error other {e}");
        return 1;
    }
    for s in FORWARDED {
        let a = SigAction::new(
            SigHandler::Handler(remember),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler only stores into an atomic.
        let _ = unsafe { signal::sigaction(s, &a) };
    }
    let (exec_r, exec_w) = match pipe() {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(report, "error other {e}");
            return 1;
        }
    };
    let prepared = match Prepared::new(spec) {
        Ok(p) => p,
        Err((kind, e)) => {
            let _ = writeln!(report, "error {kind} {e}");
            return 1;
        }
    };
    // SAFETY: single-threaded; the child only calls `exec_task`, which
    // execs or exits.
    let task = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(exec_r);
            exec_task(&prepared, exec_w, out, err)
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => {
            let _ = writeln!(report, "error other fork: {e}");
            return 1;
        }
    };
    drop(exec_w);
    drop(out);
    drop(err);
    let mut errno = Vec::new();
    let _ = (&exec_r).read_to_end(&mut errno);
    if errno.len() >= 4 {
        let e = i32::from_ne_bytes([errno[0], errno[1], errno[2], errno[3]]);
        let _ = waitpid(task, None);
        let kind = match e {
            libc::ENOENT => "notfound",
            libc::EACCES | libc::EPERM | libc::ENOEXEC => "denied",
            _ => "other",
        };
        let msg = format!(
            "{}: {}",
            spec.program,
            nix::errno::Errno::from_raw(e).desc()
        );
        let _ = writeln!(report, "error {kind} {msg}");
        return 1;
    }
    let _ = writeln!(report, "started");
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::__WALL)) {
            Err(nix::errno::Errno::EINTR) => {
                let s = PENDING.swap(0, Ordering::SeqCst);
                if s != 0 {
                    // SAFETY: kill(2) with pid -1: every process in this
                    // namespace but the init.
                    unsafe { libc::kill(-1, s) };
                }
            }
            Err(_) => return 1,
            Ok(WaitStatus::Exited(p, c)) if p == task => {
                let _ = writeln!(report, "exit code {c}");
                unsafe { libc::kill(-1, libc::SIGKILL) };
                return 0;
            }
            Ok(WaitStatus::Signaled(p, s, _)) if p == task => {
                let _ = writeln!(report, "exit signal {}", s as i32);
                unsafe { libc::kill(-1, libc::SIGKILL) };
                return 0;
            }
            Ok(_) => {}
        }
    }
}

/// The mount, uts, ipc (and network) namespaces of the task.
fn namespaces(spec: &LaunchSpec) -> Result<(), String> {
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if spec.network == Network::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(|e| format!("cannot create namespaces: {e}"))?;
    // Nothing mounted here leaks back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("cannot make / private: {e}"))?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("cannot mount /proc: {e}"))?;
    // A sandbox under /tmp would vanish under the new /tmp: hold it open
    // and bind it back at the same path.
    let under_tmp = spec.sandbox.starts_with("/tmp");
    let held = if under_tmp {
        Some(
            std::fs::File::open(&spec.sandbox)
                .map_err(|e| format!("cannot open the sandbox {}: {e}", spec.sandbox.display()))?,
        )
    } else {
        None
    };
    // Volumes are held open too: their directories may be under /tmp.
    let volumes = spec
        .volumes
        .iter()
        .map(|v| {
            std::fs::File::open(&v.host)
                .map(|f| (f, v))
                .map_err(|e| format!("cannot open volume {}: {e}", v.host.display()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let size = format!("mode=1777,size={}m", spec.tmp_mb.max(1));
    mount(
        Some("tmpfs"),
        "/tmp",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(size.as_str()),
    )
    .map_err(|e| format!("cannot mount /tmp: {e}"))?;
    if let Some(fd) = held {
        std::fs::create_dir_all(&spec.sandbox)
            .map_err(|e| format!("cannot recreate the sandbox path under /tmp: {e}"))?;
        let src = format!("/proc/self/fd/{}", fd.as_raw_fd());
        mount(
            Some(src.as_str()),
            &spec.sandbox,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("cannot bind the sandbox back under /tmp: {e}"))?;
    }
    for (fd, v) in volumes {
        // Made step by step, never through a symbolic link: the volume
        // lands inside the sandbox or nowhere.
        let at = crate::containerizer::volume_target(&spec.sandbox, &v.container_path, true)
            .map_err(|e| format!("cannot place volume {}: {e}", v.container_path))?;
        let src = format!("/proc/self/fd/{}", fd.as_raw_fd());
        mount(
            Some(src.as_str()),
            &at,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("cannot mount volume {}: {e}", v.host.display()))?;
        let mut flags =
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        if v.read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        mount(None::<&str>, &at, None::<&str>, flags, None::<&str>)
            .map_err(|e| format!("cannot restrict volume {}: {e}", v.host.display()))?;
    }
    if spec.network == Network::None {
        loopback_up()?;
    }
    Ok(())
}

/// `ip link set lo up` in the task's network namespace.
fn loopback_up() -> Result<(), String> {
    // SAFETY: plain socket/ioctl calls on a zeroed, correctly sized ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err("cannot open a socket to bring up lo".into());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err("cannot read the flags of lo".into());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err("cannot bring lo up".into());
        }
    }
    Ok(())
}

/// Everything the task's child needs, allocated before the fork.
struct Prepared {
    program: CString,
    /// Own the strings `argv_ptrs` / `env_ptrs` point into.
    _argv: Vec<CString>,
    _env: Vec<CString>,
    /// NULL-terminated pointers into `argv` / `env` (a CString's bytes do
    /// not move with it), built before the fork.
    argv_ptrs: Vec<*const libc::c_char>,
    env_ptrs: Vec<*const libc::c_char>,
    sandbox: CString,
    ids: Option<(libc::uid_t, libc::gid_t)>,
    rlimits: Vec<(nix::sys::resource::Resource, u64, u64)>,
}

impl Prepared {
    fn new(spec: &LaunchSpec) -> Result<Prepared, (&'static str, String)> {
        let c =
            |s: &str| CString::new(s).map_err(|_| ("other", format!("{s:?} contains a NUL byte")));
        let path = spec
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let program = resolve(&spec.program, &path, &spec.sandbox)
            .ok_or_else(|| ("notfound", format!("command not found: {}", spec.program)))?;
        let ids = match &spec.user {
            None => None,
            Some(u) => {
                let user = nix::unistd::User::from_name(u)
                    .ok()
                    .flatten()
                    .ok_or_else(|| ("user", format!("unknown user {u}")))?;
                Some((user.uid.as_raw(), user.gid.as_raw()))
            }
        };
        let mut rlimits = Vec::new();
        for (name, soft, hard) in &spec.rlimits {
            let r = crate::containerizer::rlimit_resource(name)
                .ok_or_else(|| ("other", format!("unknown resource limit {name}")))?;
            rlimits.push((r, *soft, *hard));
        }
        let argv: Vec<CString> = spec.argv.iter().map(|a| c(a)).collect::<Result<_, _>>()?;
        let env: Vec<CString> = spec
            .env
            .iter()
            .map(|(k, v)| c(&format!("{k}={v}")))
            .collect::<Result<_, _>>()?;
        Ok(Prepared {
            program: c(&program)?,
            argv_ptrs: nul_terminated(&argv),
            env_ptrs: nul_terminated(&env),
            _argv: argv,
            _env: env,
            sandbox: c(&spec.sandbox.display().to_string())?,
            ids,
            rlimits,
        })
    }
}

fn nul_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// `program` as execve needs it: searched in `path` when it has no slash.
fn resolve(program: &str, path: &str, cwd: &Path) -> Option<String> {
    if program.contains('/') {
        let p = if Path::new(program).is_absolute() {
            program.to_string()
        } else {
            cwd.join(program).display().to_string()
        };
        return Some(p);
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

/// In the task's process: set it up and exec. Never returns.
/// The capabilities a native task may hold: Docker's default set (chown,
/// dac_override, fowner, fsetid, kill, setgid, setuid, setpcap,
/// net_bind_service, net_raw, sys_chroot, mknod, audit_write, setfcap).
/// Not sys_admin, net_admin, sys_ptrace, sys_module and the rest.
const TASK_CAPS: u64 = 0xa804_25fb;

fn exec_task(
    p: &Prepared,
    mut exec_err: std::fs::File,
    out: std::fs::File,
    err: std::fs::File,
) -> ! {
    let fail = |f: &mut std::fs::File, errno: i32| -> ! {
        let _ = f.write_all(&errno.to_ne_bytes());
        // SAFETY: leave at once, as a failed exec would.
        unsafe { libc::_exit(127) }
    };
    let errno = || nix::errno::Errno::last_raw();
    // SAFETY: plain system calls on descriptors and values prepared before
    // the fork.
    unsafe {
        for s in FORWARDED {
            libc::signal(s as i32, libc::SIG_DFL);
        }
        let empty: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        if null < 0
            || libc::dup2(null, 0) < 0
            || libc::dup2(out.as_raw_fd(), 1) < 0
            || libc::dup2(err.as_raw_fd(), 2) < 0
        {
            fail(&mut exec_err, errno());
        }
        if libc::chdir(p.sandbox.as_ptr()) < 0 {
            fail(&mut exec_err, errno());
        }
        for (r, soft, hard) in &p.rlimits {
            if nix::sys::resource::setrlimit(*r, *soft, *hard).is_err() {
                fail(&mut exec_err, errno());
            }
        }
        // The bounding set is what an exec as root gains: only the
        // capabilities a Docker container gets by default are left (a task
        // of another user loses them all at setuid anyway).
        if let Err(e) = drop_capabilities() {
            fail(&mut exec_err, e);
        }
        if let Some((uid, gid)) = p.ids
            && (libc::setgroups(0, std::ptr::null()) < 0
                || libc::setgid(gid) < 0
                || libc::setuid(uid) < 0)
        {
            fail(&mut exec_err, errno());
        }
        libc::execve(
            p.program.as_ptr(),
            p.argv_ptrs.as_ptr(),
            p.env_ptrs.as_ptr(),
        );
        fail(&mut exec_err, errno())
    }
}

/// `wasmos supervise --enter PID DIR UID GID COMMAND`: runs `/bin/sh -c
/// COMMAND` inside the native task whose init is `PID` (its mount, uts,
/// ipc, net and pid namespaces), in `DIR`, as `UID`/`GID` (`-`: stay
/// root), with the environment this process was given and no more
/// privilege than the task itself: the same capability bounding set and
/// `no_new_privs`. COMMAND health checks and `exec` run this way; exits
/// with the command's status. Single-threaded (setns of a mount namespace
/// needs it).
pub fn enter(args: &[std::ffi::OsString]) -> ! {
    match enter_exit_code(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("cannot enter the task: {e}");
            std::process::exit(126)
        }
    }
}

fn enter_exit_code(args: &[std::ffi::OsString]) -> Result<i32, String> {
    use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
    let [pid, dir, uid, gid, command] = args else {
        return Err("usage: wasmos supervise --enter PID DIR UID|- GID|- COMMAND".into());
    };
    let text = |s: &std::ffi::OsString| s.to_str().map(str::to_string);
    let pid: u32 = text(pid)
        .and_then(|p| p.parse().ok())
        .ok_or("PID must be a number")?;
    let id = |s: &std::ffi::OsString, what: &str| -> Result<Option<u32>, String> {
        match text(s).as_deref() {
            Some("-") => Ok(None),
            Some(n) => n
                .parse()
                .map(Some)
                .map_err(|_| format!("{what} must be a number or -")),
            None => Err(format!("{what} must be a number or -")),
        }
    };
    let ids = match (id(uid, "UID")?, id(gid, "GID")?) {
        (Some(u), Some(g)) => Some((u, g)),
        (None, None) => None,
        _ => return Err("give both UID and GID, or neither".into()),
    };
    // Every namespace is opened before any is entered (after the mount
    // namespace, /proc may be the task's).
    let kinds = [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    let mut fds = Vec::new();
    for (name, flag) in kinds {
        let path = format!("/proc/{pid}/ns/{name}");
        let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        fds.push((f, flag, name));
    }
    for (f, flag, name) in &fds {
        nix::sched::setns(f, *flag).map_err(|e| format!("joining the {name} namespace: {e}"))?;
    }
    let dir = CString::new(dir.as_encoded_bytes()).map_err(|_| "DIR has a NUL byte")?;
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c").arg(command);
    // SAFETY: the closure runs in the forked child before exec and makes
    // only async-signal-safe system calls on values prepared before.
    unsafe {
        cmd.pre_exec(move || {
            let last = || std::io::Error::last_os_error();
            if libc::chdir(dir.as_ptr()) < 0 {
                return Err(last());
            }
            drop_capabilities().map_err(std::io::Error::from_raw_os_error)?;
            if let Some((uid, gid)) = ids
                && (libc::setgroups(0, std::ptr::null()) < 0
                    || libc::setgid(gid) < 0
                    || libc::setuid(uid) < 0)
            {
                return Err(last());
            }
            Ok(())
        });
    }
    // The command is forked from here, so it is born in the task's pid
    // namespace.
    let status = cmd
        .status()
        .map_err(|e| format!("running /bin/sh in the task: {e}"))?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Cuts the capability bounding set to [`TASK_CAPS`] and sets
/// `no_new_privs`; the errno of the first failure.
///
/// # Safety
/// Plain `prctl` calls: safe between fork and exec.
unsafe fn drop_capabilities() -> Result<(), i32> {
    let errno = || nix::errno::Errno::last_raw();
    // SAFETY: prctl with integer arguments only.
    unsafe {
        // EINVAL: past the kernel's last capability.
        for cap in 0..64 {
            if TASK_CAPS & (1u64 << cap) == 0
                && libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0
                && errno() != libc::EINVAL
            {
                return Err(errno());
            }
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            return Err(errno());
        }
    }
    Ok(())
}
