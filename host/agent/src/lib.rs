//! The Wasmos agent: runs on every worker, offers its resources to the
//! master, launches the tasks it is given, and reports what happens to them.
//!
//! Key types: [`AgentConfig`] (validated settings), [`RunningAgent`] (a
//! started agent), [`Agent`] (its shared context), and the
//! [`containerizer::Containerizer`] seam that starts tasks.
//!
//! Design decisions:
//! - Status updates are queued per task and sent in order, each retried
//!   with backoff until the master acknowledges it (its 2xx reply, sent
//!   only once the update is durable in the master's state). A master
//!   restart in the middle loses nothing: the agent keeps retrying.
//! - Every command from a master carries its leader term; commands from a
//!   term older than the newest seen are refused, so a deposed leader
//!   cannot launch or kill.
//! - Launches are idempotent by task id, and ids of tasks that ended (or
//!   were killed before they arrived) are remembered, so a retried launch
//!   never starts a task twice.

pub mod containerizer;
pub mod disk;
pub mod docker;
mod executors;
mod fetch;
pub mod files;
pub mod gpu;
mod health;
mod http;
mod isolation;
mod link;
mod masters;
mod metrics;
pub mod native;
mod plugins;
mod proxy;
pub mod resources;
mod tasks;
pub mod tls;
mod updates;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{Notify, watch};
use wasmos_core::{AgentId, AgentInfo, FrameworkId, TaskId, TaskStatus};

use crate::containerizer::{Containerizer, ProcessContainerizer};
use crate::native::{NativeConfig, NativeContainerizer};

/// Which containerizer runs command tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerizerChoice {
    /// Native when the agent can (root, cgroup controllers), else process.
    Auto,
    /// Cgroups, namespaces and a supervisor per task; fails to start
    /// without them.
    Native,
    /// Plain processes (no isolation; tasks end with the agent).
    Process,
}

/// Whether Docker tasks run here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerChoice {
    /// When the engine answers at start.
    Auto,
    /// Always; the agent does not start without a reachable engine.
    On,
    Off,
}

/// An agent's validated settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The masters' base URLs; the agent finds the leader among them.
    pub masters: Vec<String>,
    pub listen: SocketAddr,
    /// The URL the master uses to reach this agent; by default
    /// `http://<bound address>`.
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// Where compiled plugins are cached (default `<data_dir>/plugin-cache`).
    pub plugin_cache: PathBuf,
    pub hostname: Option<String>,
    /// `cpus:2;mem:1024;...` over the discovered resources.
    pub resources: Option<String>,
    pub attributes: BTreeMap<String, String>,
    /// TLS with the cluster CA, and the token to join with; `None` is
    /// `--insecure` (plain HTTP, nothing authenticated).
    pub tls: Option<tls::AgentTls>,
    /// Status updates are retried with backoff between these.
    pub update_retry_min: Duration,
    pub update_retry_max: Duration,
    pub containerizer: ContainerizerChoice,
    /// The binary whose `supervise` subcommand supervises native tasks
    /// (the `wasmos` binary; default: the running executable).
    pub supervisor_bin: Option<PathBuf>,
    /// Most processes one native task may have.
    pub task_pids_max: i64,
    pub docker: DockerChoice,
    /// The Docker engine's unix socket.
    pub docker_socket: String,
    /// How often sandboxes of tasks with a disk limit are measured.
    pub disk_watch_interval: Duration,
    /// Sandboxes of forgotten tasks are deleted after this long.
    pub sandbox_gc_age: Duration,
    /// Directories `file://` fetches may read from (none: refused).
    pub fetch_allow: Vec<PathBuf>,
    /// Directories whose contents tasks may mount as host volumes (none:
    /// refused).
    pub host_volumes: Vec<PathBuf>,
    /// Run the layer-4 load balancer (virtual IPs, service ports).
    pub proxy: bool,
    /// Where the load balancer listens for Marathon's service ports.
    pub service_port_listen: std::net::IpAddr,
    /// Where the HTTP edge (marathon-lb's virtual hosts) listens, if this
    /// is an edge agent.
    pub edge_listen: Option<SocketAddr>,
    /// The `HAPROXY_GROUP`s the edge serves.
    pub edge_groups: Vec<String>,
    /// The OS user command tasks that name none run as (an unprivileged
    /// one); Docker tasks keep their image's user.
    pub task_user: String,
}

impl AgentConfig {
    pub fn new(masters: Vec<String>, listen: SocketAddr, data_dir: PathBuf) -> Self {
        AgentConfig {
            masters,
            listen,
            advertise: None,
            plugin_cache: data_dir.join("plugin-cache"),
            data_dir,
            hostname: None,
            resources: None,
            attributes: BTreeMap::new(),
            tls: None,
            update_retry_min: Duration::from_millis(250),
            update_retry_max: Duration::from_secs(5),
            containerizer: ContainerizerChoice::Auto,
            supervisor_bin: None,
            task_pids_max: 4096,
            docker: DockerChoice::Auto,
            docker_socket: "/var/run/docker.sock".into(),
            disk_watch_interval: Duration::from_secs(5),
            sandbox_gc_age: Duration::from_secs(7 * 24 * 3600),
            fetch_allow: Vec::new(),
            host_volumes: Vec::new(),
            proxy: true,
            service_port_listen: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            edge_listen: None,
            edge_groups: vec!["external".into()],
            task_user: "nobody".into(),
        }
    }
}

/// The agent's shared context.
pub struct Agent {
    config: AgentConfig,
    info: AgentInfo,
    agent_id: RwLock<Option<AgentId>>,
    /// The newest leader term seen (saved in the data directory).
    term: AtomicU64,
    /// Held while the term is saved.
    term_file: Mutex<()>,
    master_id: Mutex<Option<String>>,
    cluster_id: Mutex<Option<String>>,
    heartbeat_interval: Mutex<Duration>,
    tasks: Mutex<BTreeMap<TaskId, tasks::TaskEntry>>,
    /// Ids that must never launch: tasks that ended, or were killed before
    /// their launch arrived. Bounded, oldest forgotten first.
    tombstones: Mutex<(HashSet<TaskId>, VecDeque<TaskId>)>,
    updates: Mutex<BTreeMap<TaskId, VecDeque<(FrameworkId, TaskStatus)>>>,
    updates_wake: Notify,
    registered: Notify,
    containerizer: Arc<dyn Containerizer>,
    /// The native containerizer, when tasks run under it (checkpoints,
    /// recovery).
    native: Option<Arc<NativeContainerizer>>,
    /// The Docker containerizer, when the engine is reachable.
    docker: Option<Arc<docker::DockerContainerizer>>,
    gpus: gpu::GpuPool,
    plugins: plugins::Plugins,
    masters: masters::Masters,
    executors: executors::Executors,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("agent_id", &self.agent_id())
            .finish()
    }
}

const MAX_TOMBSTONES: usize = 10_000;

impl Agent {
    /// The id the master gave this agent, once registered.
    pub fn agent_id(&self) -> Option<AgentId> {
        self.agent_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn info(&self) -> &AgentInfo {
        &self.info
    }

    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Acquire)
    }

    /// Accepts `term` unless it is older than one already seen. A newer
    /// one is saved before it is accepted.
    fn check_term(&self, term: u64) -> bool {
        let seen = self.term.fetch_max(term, Ordering::AcqRel);
        if term > seen {
            self.persist_term();
        }
        term >= seen
    }

    /// Saves the newest term seen and the cluster (writers in turn, so an
    /// older term never overwrites a newer one).
    fn persist_term(&self) {
        let _turn = self.term_file.lock().unwrap_or_else(|p| p.into_inner());
        let seen = link::SeenTerm {
            cluster_id: self
                .cluster_id
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            term: self.term(),
        };
        if let Err(e) = link::save_term(&self.config.data_dir, &seen) {
            tracing::error!(error = %e, term = seen.term, dir = %self.config.data_dir.display(), "cannot save the newest leader term: after a restart this agent could follow a deposed leader until it hears from the current one; check the data directory's disk");
        }
    }

    fn sandbox_root(&self) -> PathBuf {
        self.config.data_dir.join("sandboxes")
    }

    /// Where checkpointed tasks are recorded (native and Docker).
    fn checkpoint_dir(&self) -> PathBuf {
        self.config.data_dir.join("checkpoint")
    }

    fn tombstone(&self, id: &TaskId) {
        let mut t = self.tombstones.lock().unwrap_or_else(|p| p.into_inner());
        if t.0.insert(id.clone()) {
            t.1.push_back(id.clone());
            while t.1.len() > MAX_TOMBSTONES {
                if let Some(old) = t.1.pop_front() {
                    t.0.remove(&old);
                }
            }
        }
    }

    fn is_tombstoned(&self, id: &TaskId) -> bool {
        self.tombstones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .contains(id)
    }
}

/// A started agent.
pub struct RunningAgent {
    pub addr: SocketAddr,
    pub url: String,
    pub agent: Arc<Agent>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl std::fmt::Debug for RunningAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningAgent")
            .field("url", &self.url)
            .finish()
    }
}

/// Discovers resources, binds, and starts registering with the master.
pub async fn start(config: AgentConfig) -> anyhow::Result<RunningAgent> {
    std::fs::create_dir_all(config.data_dir.join("sandboxes"))
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another agent running? pick another with --listen)",
                config.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = config
        .advertise
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"));
    if config.masters.is_empty() {
        anyhow::bail!("--master: give at least one master URL");
    }
    if !matches!(nix::unistd::User::from_name(&config.task_user), Ok(Some(_))) {
        anyhow::bail!(
            "--task-user {}: no such user on this machine; name an unprivileged user that exists (default nobody)",
            config.task_user
        );
    }
    let keys = match &config.tls {
        Some(t) => {
            let hosts = wasmos_tls::hosts_for(&url, addr, &t.extra_hosts);
            let keys = tls::credentials(t, &config.data_dir, &config.masters, &hosts).await?;
            Some((keys, hosts))
        }
        None => {
            tracing::warn!(
                "--insecure: plain HTTP, and the masters are not authenticated; anyone who reaches {addr} can run anything on this machine. Never use it on a network"
            );
            None
        }
    };
    let mut resources = resources::discover(&config.data_dir);
    let gpus = gpu::discover();
    resources.gpus = gpus.len() as u32;
    for g in &gpus {
        tracing::info!(index = g.index, name = %g.name, memory_mb = g.memory_mb, "GPU found");
    }
    let mut reserved = Default::default();
    if let Some(o) = &config.resources {
        (resources, reserved) = resources::apply_overrides(resources, o).context("--resources")?;
    }
    let info = AgentInfo {
        hostname: config.hostname.clone().unwrap_or_else(resources::hostname),
        endpoint: url.clone(),
        resources,
        reserved,
        attributes: config.attributes.clone(),
        boot_id: resources::boot_id(),
        version: wasmos_core::VERSION.to_string(),
    };
    let mut client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        // Followers redirect to the leader; `Masters` follows them itself,
        // to any URL in the list or one a master named.
        .redirect(reqwest::redirect::Policy::none());
    if let (Some(t), Some((k, _))) = (&config.tls, &keys) {
        client = client.use_preconfigured_tls(wasmos_tls::client_config(
            &t.trust,
            wasmos_tls::Expect::Master,
            Some(k.clone()),
        )?);
    }
    let client = client.build()?;
    let runtime = wasmos_runtime::PluginRuntime::new(wasmos_runtime::RuntimeConfig::default())
        .map_err(anyhow::Error::msg)?
        .with_cache(config.plugin_cache.clone());
    let native = match config.containerizer {
        ContainerizerChoice::Process => None,
        choice => {
            let made = match config
                .supervisor_bin
                .clone()
                .map_or_else(std::env::current_exe, Ok)
            {
                Ok(bin) => NativeContainerizer::new(NativeConfig {
                    checkpoint_dir: config.data_dir.join("checkpoint"),
                    supervisor_bin: bin,
                    pids_max: config.task_pids_max,
                    tmp_mb: 256,
                }),
                Err(e) => Err(format!("cannot find the wasmos binary: {e}")),
            };
            match made {
                Ok(n) => Some(Arc::new(n)),
                Err(e) if choice == ContainerizerChoice::Auto => {
                    tracing::warn!(error = %e, "tasks run as plain processes, without isolation");
                    None
                }
                Err(e) => anyhow::bail!("--containerizer native: {e}"),
            }
        }
    };
    let docker = match config.docker {
        DockerChoice::Off => None,
        choice => {
            let made = docker::DockerContainerizer::connect(
                docker::DockerConfig {
                    socket: config.docker_socket.clone(),
                    checkpoint_dir: config.data_dir.join("checkpoint"),
                    sandbox_root: config.data_dir.join("sandboxes"),
                    pids_max: config.task_pids_max,
                },
                info.boot_id.clone(),
            )
            .await;
            match made {
                Ok(d) => Some(Arc::new(d)),
                Err(e) if choice == DockerChoice::Auto => {
                    tracing::info!(error = %e, "no Docker engine: tasks with a docker image will fail here (--docker on to require one)");
                    None
                }
                Err(e) => anyhow::bail!("--docker on: {e}"),
            }
        }
    };
    let containerizer: Arc<dyn Containerizer> = match &native {
        Some(n) => n.clone(),
        None => Arc::new(ProcessContainerizer),
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let seen = link::load_term(&config.data_dir);
    let agent = Arc::new(Agent {
        agent_id: RwLock::new(link::load_identity(&config.data_dir, &info.boot_id)),
        term: AtomicU64::new(seen.term),
        term_file: Mutex::new(()),
        master_id: Mutex::new(None),
        cluster_id: Mutex::new(seen.cluster_id),
        heartbeat_interval: Mutex::new(Duration::from_secs(2)),
        tasks: Mutex::new(BTreeMap::new()),
        tombstones: Mutex::new((HashSet::new(), VecDeque::new())),
        updates: Mutex::new(BTreeMap::new()),
        updates_wake: Notify::new(),
        registered: Notify::new(),
        containerizer,
        native,
        docker,
        gpus: gpu::GpuPool::new(&gpus),
        plugins: plugins::Plugins::new(runtime),
        masters: masters::Masters::new(config.masters.clone(), client),
        executors: executors::Executors::new(),
        shutdown: shutdown_rx.clone(),
        info,
        config,
    });
    tracing::info!(%url, resources = %agent.info.resources, hostname = %agent.info.hostname, "agent started");
    let mut found = Vec::new();
    if let Some(n) = &agent.native {
        found.extend(n.recover(&agent.info.boot_id));
    }
    if let Some(d) = &agent.docker {
        found.extend(d.recover(&agent.info.boot_id).await);
    }
    if !found.is_empty() {
        tracing::info!(count = found.len(), "recovering checkpointed tasks");
    }
    agent.adopt(found);
    executors::listen(agent.clone())
        .await
        .context("cannot open the executor API on 127.0.0.1")?;
    tokio::spawn(agent.clone().master_loop());
    tokio::spawn(agent.clone().disk_loop());
    tokio::spawn(agent.clone().sandbox_gc_loop());
    tokio::spawn(agent.clone().send_updates());
    if agent.config.proxy {
        tokio::spawn(agent.clone().proxy_loop());
    }
    let app = http::router(agent.clone()).into_make_service_with_connect_info::<wasmos_tls::Peer>();
    let listener = match (&agent.config.tls, keys) {
        (Some(t), Some((keys, hosts))) => {
            let server = wasmos_tls::server_config(&t.trust, keys.clone())?;
            tokio::spawn(agent.clone().renew_loop(keys, hosts));
            wasmos_tls::Listener::tls(listener, server)?
        }
        _ => wasmos_tls::Listener::plain(listener)?,
    };
    let mut rx = shutdown_rx;
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|v| *v).await;
            })
            .await
    });
    Ok(RunningAgent {
        addr,
        url,
        agent,
        shutdown,
        server,
    })
}

impl RunningAgent {
    /// Kills every task (SIGTERM, grace, SIGKILL), tries for a few seconds
    /// to deliver the resulting updates, then stops.
    pub async fn stop(self) {
        self.agent.kill_all("the agent is shutting down").await;
        self.agent.flush_updates(Duration::from_secs(5)).await;
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
    }
}
