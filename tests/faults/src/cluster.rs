//! A Wasmos cluster whose masters and agents each run on a host of their
//! own ([`Net`]): the real `wasmos` binary, with TLS and credentials, its
//! data on disk, killed, paused and restarted as the nemesis says.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use crate::net::Net;

/// The port every master listens on, in its own network.
pub const MASTER_PORT: u16 = 5050;
/// The port of every master's plaintext listener (for pymesos, which
/// speaks no TLS; frameworks authenticate with HTTP Basic on it).
pub const PLAIN_PORT: u16 = 5052;
/// The port every agent listens on.
pub const AGENT_PORT: u16 = 5051;
/// The management token the masters are bootstrapped with.
pub const TOKEN: &str = "faults-management-token";
/// How long a start may take (the first compiles the bundled plugins).
const START: Duration = Duration::from_secs(120);

/// Where the run's cluster lives and what it runs.
#[derive(Debug, Clone)]
pub struct Setup {
    pub wasmos: PathBuf,
    pub dir: PathBuf,
    pub masters: usize,
    pub agents: usize,
    pub election_timeout_ms: u64,
    /// `WASMOS_PLUGIN_CACHE` for every daemon (compiled plugins, shared).
    pub plugin_cache: Option<PathBuf>,
    /// Keeps concurrent runs' bridges and addresses apart.
    pub tag: u16,
    /// Each master's data dir is a filesystem of its own of this many MiB
    /// (a loop-mounted ext4 image), which the nemesis can fill.
    pub disk_mib: u64,
}

/// Debian's libfaketime: every daemon runs with it preloaded, reading its
/// wall-clock offset from a file of its host's that the nemesis rewrites
/// (time namespaces offset only the monotonic clocks). Monotonic time is
/// left alone, as it is by a real clock step.
pub const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// A daemon process on its host.
pub struct Proc {
    child: Child,
    pub paused: bool,
}

impl Proc {
    fn pid(&self) -> Option<Pid> {
        self.child.id().map(|p| Pid::from_raw(p as i32))
    }
    fn signal(&self, s: Signal) {
        if let Some(p) = self.pid() {
            let _ = kill(p, s);
        }
    }
}

/// One master or agent: its host, arguments and process (if running).
pub struct Node {
    pub host: String,
    pub url: String,
    /// A master's raft id (a replaced master gets a new one); 0 for agents.
    pub id: u64,
    args: Vec<String>,
    log: PathBuf,
    pub proc: Option<Proc>,
}

pub struct Cluster {
    pub setup: Setup,
    pub net: Net,
    pub masters: Vec<Node>,
    pub agents: Vec<Node>,
    pub ca: PathBuf,
    /// The masters' mounted data filesystems.
    disks: Vec<PathBuf>,
    /// The id the next new master gets (ids are never reused).
    next_id: u64,
}

fn sh(program: &str, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A new boot id, in the kernel's form.
fn boot_id() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}\n",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Whether `pid` is still there (a zombie is not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next())
        })
        .flatten()
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// Every process of a host: those in its network namespace, their
/// descendants, and whoever shares a task's cgroup (`wasmos/...`) with one
/// of them.
fn host_processes(ns: &str) -> Result<std::collections::BTreeSet<i32>> {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .context("run ip netns pids")?;
    let mut found: std::collections::BTreeSet<i32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    let mut children: std::collections::HashMap<i32, Vec<i32>> = Default::default();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let ppid = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| {
                let (_, rest) = s.rsplit_once(')')?;
                rest.split_whitespace().nth(1)?.parse::<i32>().ok()
            });
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut todo: Vec<i32> = found.iter().copied().collect();
    while let Some(p) = todo.pop() {
        let mut more: Vec<i32> = children.get(&p).cloned().unwrap_or_default();
        let cgroups = std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap_or_default();
        for line in cgroups.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
            let (Some(controllers), Some(path)) = (controllers, path) else {
                continue;
            };
            if !path.starts_with("/wasmos/") {
                continue;
            }
            let dirs: Vec<String> = if controllers.is_empty() {
                vec![
                    format!("/sys/fs/cgroup{path}"),
                    format!("/sys/fs/cgroup/unified{path}"),
                ]
            } else {
                controllers
                    .split(',')
                    .map(|c| format!("/sys/fs/cgroup/{c}{path}"))
                    .collect()
            };
            for d in dirs {
                if let Ok(procs) = std::fs::read_to_string(format!("{d}/cgroup.procs")) {
                    more.extend(
                        procs
                            .split_whitespace()
                            .filter_map(|x| x.parse::<i32>().ok()),
                    );
                }
            }
        }
        for m in more {
            if found.insert(m) {
                todo.push(m);
            }
        }
    }
    Ok(found)
}

/// A filesystem of `mib` MiB of its own, mounted at `at`.
fn disk(image: &Path, at: &Path, mib: u64) -> Result<()> {
    let s = |p: &Path| p.to_str().expect("a UTF-8 path").to_string();
    std::fs::create_dir_all(at)?;
    let _ = sh("umount", &[&s(at)]);
    sh("truncate", &["-s", &format!("{mib}M"), &s(image)])?;
    sh("mkfs.ext4", &["-q", "-F", &s(image)])?;
    sh("mount", &["-o", "loop", &s(image), &s(at)])
        .context("mount a loop device (the fault run's disks need root and loop devices)")
}

impl Cluster {
    /// The hosts `setup` needs: m1, m2, ... then a1, a2, ...
    pub fn hosts(setup: &Setup) -> Result<Net> {
        let names: Vec<String> = (1..=setup.masters)
            .map(|i| format!("m{i}"))
            .chain((1..=setup.agents).map(|i| format!("a{i}")))
            .collect();
        Net::create(
            setup.tag,
            &names.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    }

    /// Makes the cluster CA and tokens, and starts every master and agent
    /// on the hosts of `net` ([`Cluster::hosts`]), waiting until each
    /// announced itself.
    pub async fn start(setup: Setup, net: Net) -> Result<Cluster> {
        let dir = &setup.dir;
        if dir.starts_with("/tmp") {
            bail!(
                "{}: the run's directory must not be under /tmp (each task has a /tmp of its own, and marks its runs here)",
                dir.display()
            );
        }
        std::fs::create_dir_all(dir)?;
        if !Path::new(FAKETIME).exists() {
            bail!("{FAKETIME} is missing: apt-get install libfaketime (./dev test does)");
        }
        let mut disks = Vec::new();
        for i in 1..=setup.masters {
            let at = dir.join(format!("m{i}"));
            disk(&dir.join(format!("m{i}.img")), &at, setup.disk_mib)?;
            disks.push(at);
        }
        for h in &net.hosts {
            std::fs::write(dir.join(format!("{}.faketime", h.name)), "+0")?;
            std::fs::write(dir.join(format!("{}.boot_id", h.name)), boot_id())?;
        }
        let tls = dir.join("tls");
        wasmos_tls::Authority::create(&tls, "faults").context("make the cluster CA")?;
        let s = |p: &Path| p.to_str().expect("a UTF-8 path").to_string();
        let join = dir.join("join-token");
        std::fs::write(&join, "faults-join-token")?;
        let bootstrap = dir.join("management-token");
        std::fs::write(&bootstrap, TOKEN)?;
        let murl = |i: usize| format!("https://{}:{MASTER_PORT}", net.hosts[i].ip);
        let peers = (0..setup.masters)
            .map(|i| format!("{}={}", i + 1, murl(i)))
            .collect::<Vec<_>>()
            .join(",");
        let all = (0..setup.masters).map(murl).collect::<Vec<_>>().join(",");
        let masters = (0..setup.masters)
            .map(|i| Node {
                host: net.hosts[i].name.clone(),
                url: murl(i),
                id: i as u64 + 1,
                log: dir.join(format!("m{}.log", i + 1)),
                args: [
                    "master",
                    "--id",
                    &(i + 1).to_string(),
                    "--listen",
                    &format!("{}:{MASTER_PORT}", net.hosts[i].ip),
                    "--data-dir",
                    &s(&dir.join(format!("m{}", i + 1))),
                    "--ca-cert",
                    &s(&tls.join("ca.pem")),
                    "--ca-key",
                    &s(&tls.join("ca.key")),
                    "--join-token-file",
                    &s(&join),
                    "--bootstrap-token-file",
                    &s(&bootstrap),
                    "--election-timeout-ms",
                    &setup.election_timeout_ms.to_string(),
                    "--peers",
                    &peers,
                    "--plain-listen",
                    &format!("{}:{PLAIN_PORT}", net.hosts[i].ip),
                ]
                .map(str::to_string)
                .to_vec(),
                proc: None,
            })
            .collect();
        let agents = (0..setup.agents)
            .map(|i| {
                let h = &net.hosts[setup.masters + i];
                Node {
                    host: h.name.clone(),
                    url: format!("https://{}:{AGENT_PORT}", h.ip),
                    id: 0,
                    log: dir.join(format!("{}.log", h.name)),
                    args: [
                        "agent",
                        "--master",
                        &all,
                        "--ca-cert",
                        &s(&tls.join("ca.pem")),
                        "--join-token-file",
                        &s(&join),
                        "--listen",
                        &format!("{}:{AGENT_PORT}", h.ip),
                        "--hostname",
                        &h.name,
                        "--data-dir",
                        &s(&dir.join(&h.name)),
                        // Real containers (cgroups, namespaces, a
                        // supervisor that outlives the agent); tasks leave
                        // their marks in the run's directory, as root.
                        "--containerizer",
                        "native",
                        "--task-user",
                        "root",
                        "--resources",
                        "cpus:4;mem:2048;ports:[31000-31999]",
                    ]
                    .map(str::to_string)
                    .to_vec(),
                    proc: None,
                }
            })
            .collect();
        let mut c = Cluster {
            next_id: setup.masters as u64 + 1,
            disks,
            ca: tls.join("ca.pem"),
            setup,
            net,
            masters,
            agents,
        };
        let starts: Vec<_> = (0..c.masters.len()).map(Role::Master).collect();
        // Masters together: each waits for a quorum before it announces.
        let spawned: Vec<_> = starts
            .iter()
            .map(|r| c.spawn(*r))
            .collect::<Result<Vec<_>>>()?;
        for (r, (child, lines)) in starts.into_iter().zip(spawned) {
            c.announced(r, child, lines).await?;
        }
        for i in 0..c.agents.len() {
            c.restart(Role::Agent(i)).await?;
        }
        Ok(c)
    }

    fn node(&self, r: Role) -> &Node {
        match r {
            Role::Master(i) => &self.masters[i],
            Role::Agent(i) => &self.agents[i],
        }
    }

    fn node_mut(&mut self, r: Role) -> &mut Node {
        match r {
            Role::Master(i) => &mut self.masters[i],
            Role::Agent(i) => &mut self.agents[i],
        }
    }

    #[allow(clippy::type_complexity)]
    fn spawn(
        &self,
        r: Role,
    ) -> Result<(
        Child,
        tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    )> {
        let n = self.node(r);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)?;
        let mut cmd = match r {
            Role::Master(_) => self.net.command(&n.host, &self.setup.wasmos),
            // An agent sees its host's boot id (a file the nemesis changes
            // when it "reboots" the host), bound over the kernel's in a
            // mount namespace of its own; its supervisors and tasks inherit
            // it.
            Role::Agent(_) => {
                let mut c = self.net.command(&n.host, Path::new("unshare"));
                c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                    .arg(r#"mount --bind "$0" /proc/sys/kernel/random/boot_id && exec "$@""#)
                    .arg(self.boot_file(&n.host))
                    .arg(&self.setup.wasmos);
                c
            }
        };
        cmd.args(&n.args)
            .env("WASMOS_LOG", "info,wasmos_master=debug,wasmos_agent=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        if let Some(cache) = &self.setup.plugin_cache {
            cmd.env("WASMOS_PLUGIN_CACHE", cache);
        }
        cmd.env("LD_PRELOAD", FAKETIME)
            .env("FAKETIME_TIMESTAMP_FILE", self.clock_file(&n.host))
            .env("FAKETIME_CACHE_DURATION", "1")
            .env("DONT_FAKE_MONOTONIC", "1");
        let mut child = cmd.spawn().context("start wasmos under nsenter")?;
        let out = child.stdout.take().context("piped stdout")?;
        Ok((child, BufReader::new(out).lines()))
    }

    async fn announced(
        &mut self,
        r: Role,
        child: Child,
        mut lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    ) -> Result<()> {
        let key = match r {
            Role::Master(_) => "master: ",
            Role::Agent(_) => "agent: ",
        };
        let ok = tokio::time::timeout(START, async {
            while let Ok(Some(l)) = lines.next_line().await {
                if l.starts_with(key) {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        let log = self.node(r).log.clone();
        if !ok {
            bail!(
                "{} did not start within {START:?}; the end of its log ({}):\n{}",
                self.node(r).host,
                log.display(),
                tail(&log, 30)
            );
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.node_mut(r).proc = Some(Proc {
            child,
            paused: false,
        });
        Ok(())
    }

    /// Starts `r` again (it must not run).
    pub async fn restart(&mut self, r: Role) -> Result<()> {
        let (child, lines) = self.spawn(r)?;
        self.announced(r, child, lines).await
    }

    /// Starts `r` again without waiting for it to announce itself (a
    /// master cut off from a quorum cannot).
    pub fn restart_detached(&mut self, r: Role) -> Result<()> {
        let (child, mut lines) = self.spawn(r)?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.node_mut(r).proc = Some(Proc {
            child,
            paused: false,
        });
        Ok(())
    }

    /// kill -9, and waits until it is gone.
    pub async fn kill9(&mut self, r: Role) {
        if let Some(mut p) = self.node_mut(r).proc.take() {
            let _ = p.child.kill().await;
            let _ = p.child.wait().await;
        }
    }

    pub fn pause(&mut self, r: Role) {
        if let Some(p) = self.node_mut(r).proc.as_mut() {
            p.signal(Signal::SIGSTOP);
            p.paused = true;
        }
    }

    pub fn resume(&mut self, r: Role) {
        if let Some(p) = self.node_mut(r).proc.as_mut() {
            p.signal(Signal::SIGCONT);
            p.paused = false;
        }
    }

    fn clock_file(&self, host: &str) -> PathBuf {
        self.setup.dir.join(format!("{host}.faketime"))
    }

    fn boot_file(&self, host: &str) -> PathBuf {
        self.setup.dir.join(format!("{host}.boot_id"))
    }

    /// Power loss on `r`'s host: every process on it stopped at once, then
    /// killed — the daemon, its tasks' supervisors and the tasks (those in
    /// network namespaces of their own too: found as descendants, and as
    /// the other processes of their cgroups) — and the host's boot id
    /// changed, as the reboot that follows would. Start the daemon again
    /// with [`Cluster::restart`].
    pub async fn power_off(&mut self, r: Role) -> Result<()> {
        let ns = self.net.host(self.host_of(r)).ns.clone();
        let mut stopped = std::collections::BTreeSet::new();
        // Stopped processes fork no more: look again until nothing new.
        loop {
            let found = host_processes(&ns)?;
            let new: Vec<i32> = found.difference(&stopped).copied().collect();
            if new.is_empty() {
                break;
            }
            for p in new {
                let _ = kill(Pid::from_raw(p), Signal::SIGSTOP);
                stopped.insert(p);
            }
        }
        self.kill9(r).await;
        for p in &stopped {
            let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while stopped.iter().any(|p| alive(*p)) {
            if Instant::now() > deadline {
                bail!(
                    "processes of {} outlived SIGKILL for 10 s: {stopped:?}",
                    self.host_of(r)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::fs::write(self.boot_file(self.host_of(r)), boot_id())?;
        Ok(())
    }

    /// Replaces master `i` as an operator replaces a master whose machine
    /// failed: removes it from the membership (its id is retired for good),
    /// wipes its data disk, starts a master with a new id on the same host
    /// (`--join`) and adds it. `Ok(Err(why))` when the cluster did not
    /// acknowledge the removal or the addition in time.
    pub async fn replace_master(&mut self, i: usize) -> Result<std::result::Result<u64, String>> {
        let client = self.client(Duration::from_secs(70))?;
        let old = self.masters[i].id;
        let members = |v: &serde_json::Value| -> Vec<(u64, bool)> {
            v["masters"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|m| Some((m["id"].as_u64()?, m["voter"] == true)))
                        .collect()
                })
                .unwrap_or_default()
        };
        let removed = self
            .change_members(
                &client,
                reqwest::Method::DELETE,
                &format!("/{old}"),
                None,
                |v| {
                    v["retired"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|x| x.as_u64() == Some(old)))
                        && !members(v).iter().any(|(id, _)| *id == old)
                },
            )
            .await;
        if let Err(why) = removed {
            return Ok(Err(format!("removing master {old}: {why}")));
        }
        // Removed, it stops by itself; whatever it is doing, it is gone.
        self.kill9(Role::Master(i)).await;
        for e in std::fs::read_dir(&self.disks[i])?.flatten() {
            if e.file_name() == "lost+found" {
                continue;
            }
            let p = e.path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else {
                std::fs::remove_file(&p)?;
            }
        }
        let new = self.next_id;
        self.next_id += 1;
        let n = &mut self.masters[i];
        n.id = new;
        if let Some(at) = n.args.iter().position(|a| a == "--id") {
            n.args[at + 1] = new.to_string();
        }
        if let Some(at) = n.args.iter().position(|a| a == "--peers") {
            n.args.drain(at..at + 2);
        }
        if !n.args.iter().any(|a| a == "--join") {
            n.args.push("--join".into());
        }
        let url = n.url.clone();
        self.restart_detached(Role::Master(i))?;
        let body = serde_json::json!({ "id": new, "address": url });
        let added = self
            .change_members(&client, reqwest::Method::POST, "", Some(body), |v| {
                members(v).contains(&(new, true))
            })
            .await;
        Ok(added
            .map(|()| new)
            .map_err(|why| format!("adding master {new}: {why}")))
    }

    /// Sends a membership change to the leader until it is acknowledged or
    /// every master that answers shows it done (`done`, on `GET
    /// /api/wasmos/v1/masters`), for up to 90 s.
    async fn change_members(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> std::result::Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(l) = self.claimed_leader(client).await {
                let url = format!("{}/api/wasmos/v1/masters{path}", self.masters[l].url);
                let mut req = client.request(method.clone(), &url);
                if let Some(b) = &body {
                    req = req.json(b);
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => return Ok(()),
                    Ok(r) => {
                        last = format!("{} {}", r.status(), r.text().await.unwrap_or_default())
                    }
                    Err(e) => last = e.to_string(),
                }
                // An answer lost: the change may be done all the same.
                let v: Option<serde_json::Value> = match client
                    .get(format!("{}/api/wasmos/v1/masters", self.masters[l].url))
                    .send()
                    .await
                {
                    Ok(r) => r.json().await.ok(),
                    Err(_) => None,
                };
                if v.as_ref().is_some_and(&done) {
                    return Ok(());
                }
            } else {
                last = "no master says it leads".into();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(last)
    }

    /// Steps `r`'s wall clock `seconds` away from the real time (0: back
    /// to it); its daemon sees the step within a second.
    pub fn set_clock(&self, r: Role, seconds: i64) -> Result<()> {
        std::fs::write(self.clock_file(self.host_of(r)), format!("{seconds:+}"))?;
        Ok(())
    }

    /// Fills master `i`'s data filesystem (all but nothing left).
    pub fn fill_disk(&self, i: usize) -> Result<()> {
        let at = &self.disks[i];
        let st = nix::sys::statvfs::statvfs(at.as_path())?;
        let free = st.blocks_available() * st.fragment_size();
        let filler = at.join("nemesis-filler");
        sh(
            "fallocate",
            &[
                "-l",
                &free.to_string(),
                filler.to_str().expect("a UTF-8 path"),
            ],
        )
    }

    /// Frees what [`Cluster::fill_disk`] took.
    pub fn free_disk(&self, i: usize) -> Result<()> {
        match std::fs::remove_file(self.disks[i].join("nemesis-filler")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Nodes whose process ended by itself (a crash, or a fail-stop),
    /// with their exit status; they are marked not running.
    pub fn exited(&mut self) -> Vec<(Role, String)> {
        let mut gone = Vec::new();
        for r in self.roles() {
            let n = self.node_mut(r);
            if let Some(p) = n.proc.as_mut()
                && let Ok(Some(status)) = p.child.try_wait()
            {
                n.proc = None;
                gone.push((r, status.to_string()));
            }
        }
        gone
    }

    /// The end of `r`'s log.
    pub fn log_tail(&self, r: Role, lines: usize) -> String {
        tail(&self.node(r).log, lines)
    }

    /// Every node's role, masters first.
    pub fn roles(&self) -> Vec<Role> {
        (0..self.masters.len())
            .map(Role::Master)
            .chain((0..self.agents.len()).map(Role::Agent))
            .collect()
    }

    pub fn host_of(&self, r: Role) -> &str {
        &self.node(r).host
    }

    pub fn running(&self, r: Role) -> bool {
        self.node(r).proc.is_some()
    }

    /// An HTTPS client trusting the cluster CA and presenting the
    /// management token; it follows no redirect (see `workload::send`).
    pub fn client(&self, timeout: Duration) -> Result<reqwest::Client> {
        let pem = std::fs::read(&self.ca)?;
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {TOKEN}").parse()?,
        );
        Ok(reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .use_rustls_tls()
            .default_headers(h)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(2))
            .build()?)
    }

    /// A running master that says it leads (whatever the others say).
    async fn claimed_leader(&self, client: &reqwest::Client) -> Option<usize> {
        for (i, m) in self.masters.iter().enumerate() {
            if m.proc.as_ref().is_none_or(|p| p.paused) {
                continue;
            }
            let Ok(r) = client
                .get(format!("{}/api/wasmos/v1/leader", m.url))
                .timeout(Duration::from_secs(3))
                .send()
                .await
            else {
                continue;
            };
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            if v["this_master"]["role"] == "leader" {
                return Some(i);
            }
        }
        None
    }

    /// The master that says it leads and that every running, unpaused
    /// master names, with its term.
    pub async fn leader(&self, client: &reqwest::Client) -> Option<(usize, u64)> {
        let mut leader = None;
        let mut named = Vec::new();
        for (i, m) in self.masters.iter().enumerate() {
            if m.proc.as_ref().is_none_or(|p| p.paused) {
                continue;
            }
            let v: serde_json::Value = client
                .get(format!("{}/api/wasmos/v1/leader", m.url))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            if v["this_master"]["role"] == "leader" {
                leader = Some((i, v["term"].as_u64().unwrap_or(0)));
            }
            named.push(v["leader"]["id"].as_u64());
        }
        let (i, term) = leader?;
        named
            .iter()
            .all(|n| *n == Some(self.masters[i].id))
            .then_some((i, term))
    }

    /// Waits until the cluster is whole again: every master running and
    /// agreeing on a leader, every agent connected. Returns how long it took.
    pub async fn wait_healthy(&self, within: Duration) -> Result<Duration> {
        let start = Instant::now();
        let client = self.client(Duration::from_secs(3))?;
        let mut last = String::new();
        while start.elapsed() < within {
            match self.leader(&client).await {
                None => last = "no leader every master agrees on".into(),
                Some((l, _)) => {
                    match client
                        .get(format!("{}/api/wasmos/v1/agents", self.masters[l].url))
                        .send()
                        .await
                    {
                        Ok(r) => {
                            let agents: serde_json::Value = r.json().await.unwrap_or_default();
                            let connected = agents
                                .as_array()
                                .map(|a| a.iter().filter(|a| a["connected"] == true).count())
                                .unwrap_or(0);
                            if connected == self.agents.len() {
                                return Ok(start.elapsed());
                            }
                            last = format!("{connected} of {} agents connected", self.agents.len());
                        }
                        Err(e) => last = format!("the agents list: {e}"),
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bail!("the cluster was not healthy {within:?} after the faults stopped: {last}")
    }

    /// The end of every daemon's log, for a report.
    pub fn logs_tail(&self, lines: usize) -> String {
        self.masters
            .iter()
            .chain(&self.agents)
            .map(|n| {
                format!(
                    "----- {} ({}) -----\n{}",
                    n.host,
                    n.log.display(),
                    tail(&n.log, lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Writes every running daemon's thread stacks (gdb, when installed)
    /// to `<dir>/<host>.stacks`, for a run that found a violation: a daemon
    /// that hangs can be diagnosed after it is stopped.
    pub fn save_stacks(&self) {
        for n in self.masters.iter().chain(&self.agents) {
            let Some(pid) = n.proc.as_ref().and_then(Proc::pid) else {
                continue;
            };
            let out = thread_stacks(pid.as_raw() as u32);
            let _ = std::fs::write(self.setup.dir.join(format!("{}.stacks", n.host)), out);
        }
    }

    /// Stops every daemon as an operator would (SIGINT; the agents stop
    /// their tasks), SIGKILL after 10 s.
    pub async fn stop(&mut self) {
        let roles: Vec<Role> = self.roles().into_iter().rev().collect();
        for r in roles {
            if let Some(mut p) = self.node_mut(r).proc.take() {
                p.signal(Signal::SIGCONT);
                p.signal(Signal::SIGINT);
                if tokio::time::timeout(Duration::from_secs(10), p.child.wait())
                    .await
                    .is_err()
                {
                    let _ = p.child.kill().await;
                }
            }
        }
        for d in &self.disks {
            let _ = sh("umount", &[d.to_str().expect("a UTF-8 path")]);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // After a run that failed half-way; `stop` unmounts otherwise.
        for d in &self.disks {
            let _ = sh("umount", &["-l", d.to_str().expect("a UTF-8 path")]);
        }
    }
}

/// Every thread's stack of a daemon (with gdb, when installed): for a
/// daemon that hangs.
pub fn thread_stacks(pid: u32) -> String {
    std::process::Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt 30",
        ])
        .stdin(Stdio::null())
        .output()
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_else(|e| format!("(no stacks: gdb: {e})"))
}

/// A master or an agent, by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Role {
    Master(usize),
    Agent(usize),
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
