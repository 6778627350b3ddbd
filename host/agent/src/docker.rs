//! The Docker containerizer: tasks with a Docker image run through the
//! agent's Docker engine (bollard over its unix socket), as Mesos' Docker
//! containerizer did.
//!
//! A task's container gets the task's cpu (shares and CFS quota) and memory
//! (no swap) limits, a pids limit, the isolators' limits (or a refused
//! launch where the engine cannot set one), its environment (sandbox paths rewritten
//! to the sandbox's mount point, `/mnt/mesos/sandbox`), its network (host,
//! bridge with port mappings from the task's ports, or none), and labels
//! tying it to its task and to this agent. Its output is followed into the
//! sandbox's `stdout`/`stderr`.
//!
//! Recovery: the engine, not the agent, owns the container, so it outlives
//! an agent restart. `docker.json` in the task's checkpoint directory names
//! the container; a restarted agent inspects it and watches it again, or
//! reports how it ended. The container is removed once the master has
//! acknowledged the task's end.
//!
//! Design decision: every engine call has its own deadline, because the
//! client's own timeout must be long enough for `wait` and `logs --follow`
//! on long-running tasks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions,
    MountVolumeOptionsDriverConfig, PortBinding, ResourcesUlimits,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, KillContainerOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions,
};
use futures::StreamExt as _;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;
use wasmos_core::container::{DockerInfo, DockerNetwork};

use crate::containerizer::{
    BoxFuture, ContainerSpec, Containerizer, ExitInfo, LaunchError, Launched, Limitation,
};
use crate::native::{Recovered, TaskRecord, read_json, write_json_atomic};

/// Where the task's sandbox is mounted in its container (Mesos' path).
pub const SANDBOX_MOUNT: &str = "/mnt/mesos/sandbox";

/// Where a volume goes in a container: an absolute path as is, a relative
/// one below the sandbox.
fn container_target(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{SANDBOX_MOUNT}/{path}")
    }
}
/// Labels on every container this agent starts.
pub const LABEL_TASK: &str = "wasmos.task-id";
pub const LABEL_FRAMEWORK: &str = "wasmos.framework-id";
/// The agent's checkpoint directory: tells apart the agents of one host.
pub const LABEL_AGENT: &str = "wasmos.agent";

/// Longest wait for one engine call (create, start, inspect, kill).
const CALL_DEADLINE: Duration = Duration::from_secs(60);
/// Longest wait for an image pull.
const PULL_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// Settings of the Docker containerizer.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// The engine's unix socket, e.g. `/var/run/docker.sock`.
    pub socket: String,
    /// Where checkpoints live (`<data>/checkpoint`), shared with the
    /// native containerizer.
    pub checkpoint_dir: PathBuf,
    /// Where task sandboxes live (`<data>/sandboxes`).
    pub sandbox_root: PathBuf,
    /// Most processes one task's container may have.
    pub pids_max: i64,
}

/// Which container runs a task (`docker.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DockerRecord {
    pub container_id: String,
    pub boot_id: String,
}

pub struct DockerContainerizer {
    docker: Docker,
    config: DockerConfig,
    boot_id: String,
}

impl std::fmt::Debug for DockerContainerizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerContainerizer")
            .field("socket", &self.config.socket)
            .finish()
    }
}

fn engine_error(what: &str, e: impl std::fmt::Display) -> LaunchError {
    LaunchError::Other(format!("docker: {what}: {e}"))
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

async fn deadline<T, E: std::fmt::Display>(
    what: &str,
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!(
            "{what}: the Docker engine gave no answer in {}s",
            limit.as_secs()
        )),
    }
}

/// What a task's container is limited to: its resources, with what the
/// isolators asked on top as the native containerizer applies it (the
/// lower memory limit, their cpu shares, a pids limit no higher than the
/// agent's), and their rlimits as Docker ulimits. A limit the engine
/// cannot set refuses the launch: a limit is enforced or refused, never
/// dropped.
#[derive(Debug, Clone, PartialEq)]
struct Limits {
    memory: Option<i64>,
    nano_cpus: Option<i64>,
    cpu_shares: Option<i64>,
    pids: i64,
    ulimits: Vec<ResourcesUlimits>,
}

fn limits(spec: &ContainerSpec, pids_max: i64) -> Result<Limits, String> {
    let r = &spec.resources;
    let cpus = r.cpus.as_f64();
    let mem = r.mem.as_f64();
    let memory = spec
        .cgroup
        .memory_bytes((mem > 0.0).then_some((mem * 1024.0 * 1024.0) as i64));
    let cpu_shares = match spec.cgroup.cpu_shares {
        Some(s) => Some(i64::try_from(s).unwrap_or(i64::MAX).max(2)),
        None => (cpus > 0.0).then_some(((cpus * 1024.0) as i64).max(2)),
    };
    let ulimit = |v: u64| i64::try_from(v).unwrap_or(-1);
    let ulimits = spec
        .rlimits
        .iter()
        .map(|l| {
            let name = crate::containerizer::rlimit_name(l.resource);
            if name == "as" {
                return Err("isolators asked for rlimit as (address space), which the Docker engine cannot set; limit the task's memory with its mem resource instead, or run it without a Docker image".to_string());
            }
            Ok(ResourcesUlimits {
                name: Some(name.to_string()),
                soft: Some(ulimit(l.soft)),
                hard: Some(ulimit(l.hard)),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Limits {
        memory,
        nano_cpus: (cpus > 0.0).then_some((cpus * 1e9) as i64),
        cpu_shares,
        pids: spec.cgroup.pids(pids_max),
        ulimits,
    })
}

impl DockerContainerizer {
    /// Connects to the engine (negotiating its API version) and checks
    /// that it answers.
    pub async fn connect(config: DockerConfig, boot_id: String) -> Result<Self, String> {
        // The client's own timeout bounds `wait` and `logs --follow` too,
        // so it is long; each call has its own deadline here.
        let docker =
            Docker::connect_with_unix(&config.socket, 30 * 24 * 3600, bollard::API_DEFAULT_VERSION)
                .map_err(|e| format!("cannot use the Docker socket {}: {e}", config.socket))?;
        let docker = deadline(
            "cannot reach the Docker engine",
            Duration::from_secs(5),
            docker.negotiate_version(),
        )
        .await
        .map_err(|e| format!("{e} (socket {}; is dockerd running?)", config.socket))?;
        std::fs::create_dir_all(&config.checkpoint_dir)
            .map_err(|e| format!("cannot create {}: {e}", config.checkpoint_dir.display()))?;
        Ok(DockerContainerizer {
            docker,
            config,
            boot_id,
        })
    }

    fn task_dir(&self, task_id: &str) -> PathBuf {
        self.config.checkpoint_dir.join(task_id)
    }

    fn agent_label(&self) -> String {
        self.config.checkpoint_dir.display().to_string()
    }

    /// Pulls `image`, logging the pull's progress.
    async fn pull(&self, image: &str) -> Result<(), LaunchError> {
        tracing::info!(%image, "pulling image");
        let options = CreateImageOptions {
            from_image: Some(image.to_string()),
            ..Default::default()
        };
        let pull = async {
            let mut stream = self.docker.create_image(Some(options), None, None);
            while let Some(item) = stream.next().await {
                let info = item?;
                if let Some(status) = info.status {
                    let layer = info.id.unwrap_or_default();
                    tracing::info!(%image, %layer, "pull: {status}");
                }
            }
            Ok::<(), bollard::errors::Error>(())
        };
        deadline("pull", PULL_DEADLINE, pull).await.map_err(|e| {
            LaunchError::Other(format!(
                "cannot pull image {image}: {e}; load it on this agent (docker load or docker import) or check the image name and registry"
            ))
        })
    }

    fn create_body(
        &self,
        spec: &ContainerSpec,
        d: &DockerInfo,
        limits: &Limits,
    ) -> ContainerCreateBody {
        let sandbox = spec.sandbox.display().to_string();
        let env: Vec<String> = spec
            .env
            .iter()
            .filter(|(k, v)| !(k == "PATH" && v == crate::tasks::DEFAULT_PATH))
            .map(|(k, v)| {
                // Paths into the sandbox are seen from inside the container.
                let v = if v == &sandbox {
                    SANDBOX_MOUNT.to_string()
                } else {
                    v.clone()
                };
                format!("{k}={v}")
            })
            .collect();
        let (entrypoint, cmd) = if spec.program.is_empty() {
            (None, None)
        } else {
            (
                Some(vec![spec.program.clone()]),
                Some(spec.argv.iter().skip(1).cloned().collect::<Vec<_>>()),
            )
        };
        let ports = crate::resources::task_ports(&spec.resources.ports);
        let mut exposed = Vec::new();
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for (m, host) in d.port_mappings.iter().zip(&ports) {
            let key = format!("{}/{}", m.container_port, m.protocol);
            exposed.push(key.clone());
            bindings
                .entry(key)
                .or_default()
                .get_or_insert_default()
                .push(PortBinding {
                    host_ip: None,
                    host_port: Some(host.to_string()),
                });
        }
        let labels = HashMap::from([
            (LABEL_TASK.to_string(), spec.task_id.to_string()),
            (LABEL_FRAMEWORK.to_string(), spec.framework_id.clone()),
            (LABEL_AGENT.to_string(), self.agent_label()),
        ]);
        ContainerCreateBody {
            image: Some(d.image.clone()),
            entrypoint,
            cmd,
            env: Some(env),
            user: spec.user.as_deref().map(docker_user),
            labels: Some(labels),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            host_config: Some(HostConfig {
                memory: limits.memory,
                // No swap: the limit is the limit.
                memory_swap: limits.memory,
                nano_cpus: limits.nano_cpus,
                cpu_shares: limits.cpu_shares,
                pids_limit: Some(limits.pids),
                ulimits: (!limits.ulimits.is_empty()).then(|| limits.ulimits.clone()),
                // As native tasks: no setuid binary or file capability
                // raises a task's privileges (`docker exec` inherits it).
                security_opt: Some(vec!["no-new-privileges".to_string()]),
                network_mode: Some(d.network.as_docker().to_string()),
                port_bindings: (d.network == DockerNetwork::Bridge && !bindings.is_empty())
                    .then_some(bindings),
                // A structured mount, not a `host:container` bind string:
                // sandbox paths may hold `:` (Chronos task ids do).
                mounts: Some(
                    std::iter::once(Mount {
                        target: Some(SANDBOX_MOUNT.to_string()),
                        source: Some(sandbox),
                        typ: Some(MountType::BIND),
                        read_only: Some(false),
                        ..Default::default()
                    })
                    .chain(spec.volumes.iter().map(|v| Mount {
                        target: Some(container_target(&v.container_path)),
                        source: Some(v.host.display().to_string()),
                        typ: Some(MountType::BIND),
                        read_only: Some(v.read_only),
                        ..Default::default()
                    }))
                    .chain(d.volumes.iter().map(|v| Mount {
                        target: Some(container_target(&v.container_path)),
                        source: Some(v.name.clone()),
                        typ: Some(MountType::VOLUME),
                        read_only: Some(v.read_only),
                        volume_options: Some(MountVolumeOptions {
                            driver_config: Some(MountVolumeOptionsDriverConfig {
                                name: Some(if v.driver.is_empty() {
                                    "local".to_string()
                                } else {
                                    v.driver.clone()
                                }),
                                options: (!v.options.is_empty()).then(|| {
                                    v.options
                                        .iter()
                                        .map(|(k, v)| (k.clone(), v.clone()))
                                        .collect()
                                }),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }))
                    .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn launch_docker(&self, spec: ContainerSpec) -> Result<Launched, LaunchError> {
        let Some(d) = spec.container.as_ref().and_then(|c| c.docker()).cloned() else {
            return Err(LaunchError::Other(
                "the Docker containerizer got a task without a docker image".into(),
            ));
        };
        if d.force_pull_image {
            self.pull(&d.image).await?;
        }
        // The sandbox, mounted into the container, belongs to its user.
        if let Some(Ok(Some(u))) = spec.user.as_deref().map(nix::unistd::User::from_name) {
            let _ = nix::unistd::chown(&spec.sandbox, Some(u.uid), Some(u.gid));
        }
        let limits = limits(&spec, self.config.pids_max).map_err(LaunchError::Other)?;
        let name = format!("wasmos-{}", uuid::Uuid::new_v4().simple());
        let create = || {
            let body = self.create_body(&spec, &d, &limits);
            let options = CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            };
            async move {
                tokio::time::timeout(
                    CALL_DEADLINE,
                    self.docker.create_container(Some(options), body),
                )
                .await
            }
        };
        // Create first and pull only when the engine lacks the image, as
        // `docker run` does: one round trip less on every launch.
        let created = match create().await {
            Ok(Err(e)) if is_not_found(&e) => {
                self.pull(&d.image).await?;
                create().await
            }
            other => other,
        };
        let created = match created {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(engine_error("create container", e)),
            Err(_) => {
                return Err(engine_error(
                    "create container",
                    "the Docker engine gave no answer in time",
                ));
            }
        };
        let id = created.id;
        // Recorded before the start, so that recovery finds the container
        // even if the agent dies right now.
        let dir = self.task_dir(spec.task_id.as_str());
        std::fs::create_dir_all(&dir)
            .map_err(|e| LaunchError::Other(format!("cannot create {}: {e}", dir.display())))?;
        write_json_atomic(
            &dir.join("docker.json"),
            &DockerRecord {
                container_id: id.clone(),
                boot_id: self.boot_id.clone(),
            },
        )
        .map_err(LaunchError::Other)?;
        if let Err(e) = deadline(
            "start container",
            CALL_DEADLINE,
            self.docker.start_container(&id, None),
        )
        .await
        {
            self.remove(&id).await;
            let _ = std::fs::remove_file(dir.join("docker.json"));
            // The engine says "executable file not found" for a missing
            // program, as a shell says 127.
            if e.contains("executable file not found") || e.contains("no such file or directory") {
                return Err(LaunchError::NotFound(spec.program.clone()));
            }
            if e.contains("permission denied") {
                return Err(LaunchError::PermissionDenied(spec.program.clone()));
            }
            return Err(LaunchError::Other(format!("docker: {e}")));
        }
        Ok(self.watch(id, spec.sandbox, None).await)
    }

    /// Follows a started container: its pid, its output into the sandbox
    /// (from `since`, seconds since the epoch, when recovering), its end.
    async fn watch(&self, id: String, sandbox: PathBuf, since: Option<i32>) -> Launched {
        let pid =
            match tokio::time::timeout(CALL_DEADLINE, self.docker.inspect_container(&id, None))
                .await
            {
                Ok(Ok(c)) => c
                    .state
                    .and_then(|s| s.pid)
                    .and_then(|p| u32::try_from(p).ok())
                    .unwrap_or(0),
                _ => 0,
            };
        let logs = tokio::spawn(follow_logs(
            self.docker.clone(),
            id.clone(),
            sandbox,
            since.unwrap_or(0),
        ));
        let docker = self.docker.clone();
        let wait_id = id.clone();
        let exit = Box::pin(async move {
            let exit = wait_exit(&docker, &wait_id).await;
            // The output is complete before the end is reported.
            let _ = tokio::time::timeout(Duration::from_secs(5), logs).await;
            exit
        });
        let exec = docker_executor(self.docker.clone(), id.clone());
        let docker = self.docker.clone();
        let handle = tokio::runtime::Handle::current();
        let signal = Arc::new(move |sig: Signal| {
            let docker = docker.clone();
            let id = id.clone();
            handle.spawn(async move {
                let options = KillContainerOptions {
                    signal: sig.as_str().to_string(),
                };
                let r =
                    tokio::time::timeout(CALL_DEADLINE, docker.kill_container(&id, Some(options)))
                        .await;
                if let Ok(Err(e)) = r {
                    tracing::debug!(container = %id, error = %e, "docker kill");
                }
            });
            Ok(())
        });
        Launched {
            pid,
            exit,
            signal,
            exec: Some(exec),
        }
    }

    async fn remove(&self, id: &str) {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match tokio::time::timeout(
            CALL_DEADLINE,
            self.docker.remove_container(id, Some(options)),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) if is_not_found(&e) => {}
            Ok(Err(e)) => tracing::warn!(container = %id, error = %e, "cannot remove container"),
            Err(_) => tracing::warn!(container = %id, "removing the container took too long"),
        }
    }

    /// Whether this task ran under Docker (its checkpoint names a
    /// container).
    pub fn owns(&self, task_id: &str) -> bool {
        self.task_dir(task_id).join("docker.json").exists()
    }

    /// Removes an ended task's container and checkpoint once the master has
    /// acknowledged its end.
    pub async fn forget(&self, task_id: &str) {
        let dir = self.task_dir(task_id);
        if let Some(r) = read_record(&dir) {
            self.remove(&r.container_id).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The Docker tasks in the checkpoints: watched again when their
    /// container runs, reported with how it ended otherwise. Containers of
    /// this agent that no checkpoint names are removed.
    pub async fn recover(&self, boot_id: &str) -> Vec<Recovered> {
        let mut out = Vec::new();
        let mut known = std::collections::HashSet::new();
        if let Ok(entries) = std::fs::read_dir(&self.config.checkpoint_dir) {
            for e in entries.flatten() {
                let dir = e.path();
                let Some(rec) = read_record(&dir) else {
                    continue;
                };
                known.insert(rec.container_id.clone());
                let Some(record) = read_json::<TaskRecord>(&dir.join("task.json")) else {
                    tracing::warn!(dir = %dir.display(), "unreadable task checkpoint removed");
                    self.remove(&rec.container_id).await;
                    let _ = std::fs::remove_dir_all(&dir);
                    continue;
                };
                out.push(self.recover_one(record, &rec, boot_id).await);
            }
        }
        self.remove_strays(&known).await;
        out
    }

    async fn recover_one(
        &self,
        record: TaskRecord,
        rec: &DockerRecord,
        boot_id: &str,
    ) -> Recovered {
        let ended = |e: ExitInfo| Recovered {
            record: record.clone(),
            running: None,
            ended: Some(e),
        };
        if rec.boot_id != boot_id {
            self.remove(&rec.container_id).await;
            return ended(ExitInfo::limited(Limitation::Gone(
                "the host rebooted; the task's container is from an earlier boot".into(),
            )));
        }
        let inspected = tokio::time::timeout(
            CALL_DEADLINE,
            self.docker.inspect_container(&rec.container_id, None),
        )
        .await;
        let state = match inspected {
            Ok(Ok(c)) => c.state.unwrap_or_default(),
            Ok(Err(e)) if is_not_found(&e) => {
                return ended(ExitInfo::limited(Limitation::Lost(format!(
                    "the task's container {} is gone",
                    rec.container_id
                ))));
            }
            Ok(Err(e)) => {
                return ended(ExitInfo::limited(Limitation::Lost(format!(
                    "cannot inspect the task's container {}: {e}",
                    rec.container_id
                ))));
            }
            Err(_) => {
                return ended(ExitInfo::limited(Limitation::Lost(
                    "the Docker engine gave no answer about the task's container".into(),
                )));
            }
        };
        if state.running == Some(true) {
            let sandbox = self.config.sandbox_root.join(record.spec.task_id.as_str());
            let since = last_output_time(&sandbox);
            let launched = self
                .watch(rec.container_id.clone(), sandbox, Some(since))
                .await;
            return Recovered {
                record,
                running: Some(launched),
                ended: None,
            };
        }
        ended(exit_of(&state))
    }

    /// Removes containers labelled as this agent's that no checkpoint
    /// names (left by a crash between create and checkpoint).
    async fn remove_strays(&self, known: &std::collections::HashSet<String>) {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![format!("{LABEL_AGENT}={}", self.agent_label())],
            )])),
            ..Default::default()
        };
        let Ok(Ok(list)) =
            tokio::time::timeout(CALL_DEADLINE, self.docker.list_containers(Some(options))).await
        else {
            return;
        };
        for c in list {
            if let Some(id) = c.id
                && !known.contains(&id)
            {
                tracing::info!(container = %id, "removing a container no checkpoint names");
                self.remove(&id).await;
            }
        }
    }
}

impl Containerizer for DockerContainerizer {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn launch(&self, spec: ContainerSpec) -> BoxFuture<'_, Result<Launched, LaunchError>> {
        Box::pin(self.launch_docker(spec))
    }
}

/// The container's user: a user of this machine (the agent's unprivileged
/// task user, or one a policy allowed) by its numeric ids, which need no
/// entry in the image's /etc/passwd; any other name as the image defines it.
fn docker_user(name: &str) -> String {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => format!("{}:{}", u.uid, u.gid),
        _ => name.to_string(),
    }
}

fn read_record(dir: &Path) -> Option<DockerRecord> {
    read_json(&dir.join("docker.json"))
}

/// How a stopped container ended.
fn exit_of(state: &bollard::models::ContainerState) -> ExitInfo {
    if state.oom_killed == Some(true) {
        return ExitInfo::limited(Limitation::Memory {
            limit_bytes: None,
            peak_bytes: None,
        });
    }
    ExitInfo {
        code: state.exit_code.and_then(|c| i32::try_from(c).ok()),
        signal: None,
        limitation: None,
    }
}

/// Waits until the container stops, riding out dropped connections.
async fn wait_exit(docker: &Docker, id: &str) -> ExitInfo {
    let mut failures = 0u32;
    loop {
        // Ends with the exit (an error for a non-zero one) or a dropped
        // connection; the inspection below tells which.
        let mut wait = docker.wait_container(id, None);
        let _ = wait.next().await;
        match tokio::time::timeout(CALL_DEADLINE, docker.inspect_container(id, None)).await {
            Ok(Ok(c)) => {
                let state = c.state.unwrap_or_default();
                if state.running != Some(true) {
                    let mut exit = exit_of(&state);
                    if let Some(Limitation::Memory { limit_bytes, .. }) = &mut exit.limitation {
                        *limit_bytes = c.host_config.and_then(|h| h.memory);
                    }
                    return exit;
                }
                failures = 0;
            }
            Ok(Err(e)) if is_not_found(&e) => {
                return ExitInfo::limited(Limitation::Lost(format!(
                    "the task's container {id} was removed"
                )));
            }
            _ => failures += 1,
        }
        let pause = Duration::from_millis(500 * u64::from(failures.min(20)));
        tokio::time::sleep(pause).await;
    }
}

/// Appends the container's output to the sandbox's `stdout` and `stderr`
/// until it stops.
async fn follow_logs(docker: Docker, id: String, sandbox: PathBuf, since: i32) {
    let open = |name: &str| {
        let p = sandbox.join(name);
        async move {
            tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .await
                .ok()
        }
    };
    let (Some(mut out), Some(mut err)) = (open("stdout").await, open("stderr").await) else {
        tracing::warn!(container = %id, "cannot open the sandbox's output files");
        return;
    };
    let options = LogsOptions {
        follow: true,
        stdout: true,
        stderr: true,
        since,
        ..Default::default()
    };
    let mut stream = docker.logs(&id, Some(options));
    while let Some(item) = stream.next().await {
        let r = match item {
            Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                out.write_all(&message).await
            }
            Ok(LogOutput::StdErr { message }) => err.write_all(&message).await,
            Ok(LogOutput::StdIn { .. }) => Ok(()),
            Err(e) => {
                tracing::debug!(container = %id, error = %e, "log stream ended");
                break;
            }
        };
        if r.is_err() {
            break;
        }
    }
    let _ = out.flush().await;
    let _ = err.flush().await;
}

/// When the sandbox's output was last written (seconds since the epoch),
/// so that a re-followed log starts where it stopped (lines of that last
/// second may appear twice; none are lost).
fn last_output_time(sandbox: &Path) -> i32 {
    ["stdout", "stderr"]
        .iter()
        .filter_map(|f| std::fs::metadata(sandbox.join(f)).ok()?.modified().ok())
        .filter_map(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX))
        .max()
        .unwrap_or(0)
}

/// Commands inside a container: `docker exec` (the image's environment,
/// the container's working directory).
fn docker_executor(docker: Docker, id: String) -> crate::containerizer::Executor {
    Arc::new(move |command: String, timeout| {
        let (docker, id) = (docker.clone(), id.clone());
        Box::pin(async move {
            let run = async {
                let config = bollard::models::ExecConfig {
                    cmd: Some(vec!["/bin/sh".into(), "-c".into(), command]),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                };
                let created = docker
                    .create_exec(&id, config)
                    .await
                    .map_err(|e| format!("docker exec in {id}: {e}"))?;
                let mut out = Vec::new();
                if let bollard::exec::StartExecResults::Attached { mut output, .. } = docker
                    .start_exec(&created.id, None)
                    .await
                    .map_err(|e| format!("docker exec in {id}: {e}"))?
                {
                    while let Some(chunk) = output.next().await {
                        let chunk = chunk.map_err(|e| format!("docker exec output: {e}"))?;
                        if out.len() < crate::containerizer::EXEC_OUTPUT_MAX {
                            out.extend_from_slice(&chunk.into_bytes());
                        }
                    }
                }
                out.truncate(crate::containerizer::EXEC_OUTPUT_MAX);
                let inspect = docker
                    .inspect_exec(&created.id)
                    .await
                    .map_err(|e| format!("docker exec in {id}: {e}"))?;
                let code = inspect
                    .exit_code
                    .and_then(|c| i32::try_from(c).ok())
                    .unwrap_or(-1);
                Ok(crate::containerizer::ExecOutput { code, output: out })
            };
            tokio::time::timeout(timeout, run)
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "the command did not finish within {} ms",
                        timeout.as_millis()
                    ))
                })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolators_limits_reach_the_container_or_refuse_the_launch() {
        use crate::containerizer::{CgroupAsk, Rlimit};
        use nix::sys::resource::Resource;
        let mut spec = ContainerSpec {
            task_id: "t".parse().unwrap(),
            framework_id: "exec".into(),
            sandbox: "/tmp/sandbox".into(),
            program: "sh".into(),
            argv: vec!["sh".into()],
            env: Vec::new(),
            user: None,
            resources: "cpus:0.5;mem:64".parse().unwrap(),
            rlimits: Vec::new(),
            cgroup: CgroupAsk::default(),
            network: crate::native::Network::Host,
            container: None,
            volumes: Vec::new(),
        };
        let plain = limits(&spec, 1000).unwrap();
        assert_eq!(plain.memory, Some(64 << 20));
        assert_eq!(plain.cpu_shares, Some(512));
        assert_eq!(plain.nano_cpus, Some(500_000_000));
        assert_eq!(plain.pids, 1000);
        assert!(plain.ulimits.is_empty());

        spec.cgroup = CgroupAsk {
            memory_mb: Some(32),
            cpu_shares: Some(100),
            pids_max: Some(5000),
        };
        spec.rlimits = vec![
            Rlimit {
                resource: Resource::RLIMIT_NOFILE,
                soft: 77,
                hard: 99,
            },
            Rlimit {
                resource: Resource::RLIMIT_CORE,
                soft: u64::MAX,
                hard: u64::MAX,
            },
        ];
        let asked = limits(&spec, 1000).unwrap();
        assert_eq!(asked.memory, Some(32 << 20), "the lower memory limit");
        assert_eq!(asked.cpu_shares, Some(100));
        assert_eq!(asked.pids, 1000, "never above the agent's pids limit");
        let ulimit = |name: &str, soft, hard| ResourcesUlimits {
            name: Some(name.into()),
            soft: Some(soft),
            hard: Some(hard),
        };
        assert_eq!(
            asked.ulimits,
            vec![ulimit("nofile", 77, 99), ulimit("core", -1, -1)]
        );
        spec.cgroup.memory_mb = Some(128);
        assert_eq!(limits(&spec, 1000).unwrap().memory, Some(64 << 20));

        spec.rlimits.push(Rlimit {
            resource: Resource::RLIMIT_AS,
            soft: 1 << 30,
            hard: 1 << 30,
        });
        let refused = limits(&spec, 1000).unwrap_err();
        assert!(refused.contains("rlimit as"), "{refused}");
    }

    #[test]
    fn an_oom_killed_container_ends_with_the_memory_limitation() {
        let state = bollard::models::ContainerState {
            oom_killed: Some(true),
            exit_code: Some(137),
            ..Default::default()
        };
        assert!(matches!(
            exit_of(&state).limitation,
            Some(Limitation::Memory { .. })
        ));
        let state = bollard::models::ContainerState {
            exit_code: Some(3),
            ..Default::default()
        };
        assert_eq!(exit_of(&state).code, Some(3));
    }

    #[test]
    fn output_time_is_zero_without_output() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(last_output_time(d.path()), 0);
        std::fs::write(d.path().join("stdout"), "x").unwrap();
        assert!(last_output_time(d.path()) > 0);
    }
}
