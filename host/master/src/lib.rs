//! The Wasmos master: the cluster's state, the allocator that makes offers,
//! the framework plugins that take them, and the HTTP APIs.
//!
//! Key types: [`MasterConfig`] (validated settings), [`RunningMaster`] (a
//! started master), [`node::Node`] (a raft member; leads when elected),
//! [`leader::Leader`] (what a leading master does),
//! [`allocator::Allocator`] (DRF offers), [`frameworks`] (plugin actors).
//!
//! Design decisions:
//! - Every change goes through `wasmos_store::Store::propose`, which makes
//!   it durable before it is applied and acknowledged; everything the
//!   master does in reaction reads committed entries. The store replicates
//!   the log to the other masters with openraft.
//! - Only the raft leader acts (offers, framework plugins, commands to
//!   agents, each stamped with its raft term); followers send callers to it.
//! - Offers, heartbeats and in-flight launches are leader memory; a new
//!   leader rebuilds from the state and agents re-register.
//! - Framework plugins run outside `apply`: a call's effects become
//!   commands, committed before anything is sent or answered.

/// A path of the Wasmos API (`/api/wasmos/v1` + `$path`). Routes are
/// registered with their whole path rather than nested under the prefix:
/// a nested router rewrites every request's URI on the way in.
macro_rules! v1 {
    ($path:literal) => {
        concat!("/api/wasmos/v1", $path)
    };
}

pub mod acl;
pub mod agent_client;
pub mod agents;
pub mod allocator;
pub mod auth;
pub mod catalogue;
pub mod dns;
pub mod error;
pub mod events;
pub mod frameworks;
pub mod history;
pub mod http;
pub mod l4lb;
pub mod launch;
pub mod leader;
pub mod mesos;
pub mod metrics;
pub mod node;
pub mod placements;
pub mod plugins;
pub mod roles;
pub mod simulate;
pub mod tls;
pub mod trust;
mod ui;
pub mod vars;
pub mod views;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use wasmos_core::PluginManifest;
use wasmos_store::{Bootstrap, Store, StoreConfig};

pub use leader::Leader;
pub use node::Node;
pub use wasmos_store::DEFAULT_ELECTION_TIMEOUT_MS;

/// A master's validated settings.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    pub listen: SocketAddr,
    /// The URL agents, clients and the other masters use to reach this
    /// master; by default `http://<bound address>`.
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// Where compiled plugins are cached (default `<data_dir>/plugin-cache`).
    pub plugin_cache: PathBuf,
    /// This master's id among the masters; never reused.
    pub id: u64,
    /// The initial masters (id → URL) of a new cluster; `None` waits to be
    /// added to a running one. Empty means a one-master cluster.
    pub peers: Option<BTreeMap<u64, String>>,
    /// TLS on the listener and to agents and masters, with the cluster CA;
    /// `None` is `--insecure`: plain HTTP, no certificates.
    pub tls: Option<tls::MasterTls>,
    /// The plaintext listener's base URL once it is bound (set by `run`).
    pub plain_url: Option<String>,
    /// A plaintext listener beside the TLS one, for clients that cannot
    /// speak TLS (opened only when an operator asks).
    pub plain_listen: Option<SocketAddr>,
    /// The secret of the first management token: a leader of a cluster
    /// whose ACLs were never bootstrapped makes it.
    pub bootstrap_token: Option<auth::Secret>,
    /// A public key (PEM) trusted to sign plugins from the start: a leader
    /// adds it once, as `bootstrap`, if no bootstrap key was ever added.
    pub bootstrap_plugin_key: Option<String>,
    /// Raft: a follower that hears no leader for 1–1.5× this elects anew.
    pub election_timeout: Duration,
    pub allocation_interval: Duration,
    pub heartbeat_interval: Duration,
    /// An agent silent this long gets no more offers until it registers.
    pub agent_timeout: Duration,
    /// How fast silent agents are marked unreachable.
    pub unreachable_rate: crate::agents::UnreachableRate,
    /// Offers held longer than this are rescinded.
    pub offer_timeout: Duration,
    /// A launch that cannot reach its agent for this long is dropped.
    pub launch_timeout: Duration,
    pub plugin_call_deadline: Duration,
    /// The largest request body accepted.
    pub max_body: usize,
    /// How often this master samples the cluster for the dashboard's
    /// charts (a day of samples is kept).
    pub history_interval: Duration,
    /// Where to serve DNS (UDP and TCP; port 0: any free one), if at all.
    pub dns_listen: Option<SocketAddr>,
    /// The DNS domain (Mesos-DNS' default, `mesos`).
    pub dns_domain: String,
    /// How long framework plugins get to move their tasks off a draining
    /// agent before the master kills them, when the drain names no max
    /// grace period.
    pub drain_handoff: Duration,
    /// At most this many queued calls of a framework plugin commit as one
    /// log entry (1: each call commits alone).
    pub framework_group_calls: usize,
}

/// Framework plugin calls committed together at most, by default.
pub const DEFAULT_FRAMEWORK_GROUP_CALLS: usize = 32;

impl MasterConfig {
    /// Defaults for everything but where to listen and store: a
    /// one-master cluster.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        MasterConfig {
            listen,
            advertise: None,
            plugin_cache: data_dir.join("plugin-cache"),
            data_dir,
            id: 1,
            peers: Some(BTreeMap::new()),
            tls: None,
            plain_listen: None,
            plain_url: None,
            bootstrap_token: None,
            bootstrap_plugin_key: None,
            election_timeout: Duration::from_millis(wasmos_store::DEFAULT_ELECTION_TIMEOUT_MS),
            allocation_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(2),
            agent_timeout: Duration::from_secs(10),
            unreachable_rate: Default::default(),
            offer_timeout: Duration::from_secs(60),
            launch_timeout: Duration::from_secs(120),
            plugin_call_deadline: Duration::from_secs(2),
            framework_group_calls: DEFAULT_FRAMEWORK_GROUP_CALLS,
            max_body: 1 << 20,
            history_interval: Duration::from_secs(10),
            dns_listen: None,
            dns_domain: "mesos".into(),
            drain_handoff: Duration::from_secs(300),
        }
    }
}

/// A started master.
pub struct RunningMaster {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its advertised URL.
    pub url: String,
    /// Where it serves DNS (`dns_listen`), once bound.
    pub dns_addr: Option<SocketAddr>,
    /// The plaintext listener's base URL (`--plain-listen`).
    pub plain_url: Option<String>,
    pub node: Arc<Node>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl std::fmt::Debug for RunningMaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningMaster")
            .field("url", &self.url)
            .finish()
    }
}

/// Binds, opens the replicated state, joins the other masters, and starts
/// serving. Whether this master leads is raft's business: see [`Node`].
pub async fn start(
    config: MasterConfig,
    bundled: Vec<(PluginManifest, &'static [u8])>,
) -> anyhow::Result<RunningMaster> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another master running? pick another with --listen)",
                config.listen
            )
        })?;
    start_on(listener, config, bundled).await
}

/// [`start`] on a listener already bound (so that a caller can learn the
/// addresses of several masters before any of them starts).
pub async fn start_on(
    listener: tokio::net::TcpListener,
    config: MasterConfig,
    bundled: Vec<(PluginManifest, &'static [u8])>,
) -> anyhow::Result<RunningMaster> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
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
    let node_tls = match &config.tls {
        Some(t) => Some(Arc::new(
            tls::NodeTls::new(t.clone(), config.id, &url, addr)
                .context("cannot issue this master's certificate")?,
        )),
        None => {
            tracing::warn!(
                "--insecure: plain HTTP, and agents and masters are not authenticated; anyone who reaches {addr} controls the cluster. Never use it on a network"
            );
            None
        }
    };
    let plain = match config.plain_listen {
        Some(a) => {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("--plain-listen {a}: cannot listen there"))?;
            tracing::warn!(
                addr = %l.local_addr()?,
                "a plaintext listener is open (--plain-listen): what crosses it can be read and changed on the way; open it on loopback or a trusted network only"
            );
            Some(l)
        }
        None => None,
    };
    let mut config = config;
    if let Some(p) = &plain {
        config.plain_url = plain_url_of(p.local_addr()?, &url, addr);
    }
    let bootstrap = match &config.peers {
        None => Bootstrap::Join,
        Some(p) if p.is_empty() => Bootstrap::Members(BTreeMap::from([(config.id, url.clone())])),
        Some(p) => Bootstrap::Members(p.clone()),
    };
    let store = Store::open(StoreConfig {
        data_dir: config.data_dir.clone(),
        node_id: config.id,
        addr: url.clone(),
        bootstrap,
        tls: node_tls
            .as_ref()
            .map(|t| t.client(wasmos_tls::Expect::Master))
            .transpose()?,
        bind_ip: (!addr.ip().is_unspecified()).then_some(addr.ip()),
        election_timeout: config.election_timeout,
        heartbeat_interval: config.election_timeout / 3,
        ..StoreConfig::single(&config.data_dir, &url)
    })
    .await?;
    let runtime = wasmos_runtime::PluginRuntime::new(wasmos_runtime::RuntimeConfig {
        call_deadline: config.plugin_call_deadline,
        ..Default::default()
    })
    .map_err(anyhow::Error::msg)?
    .with_cache(config.plugin_cache.clone());
    let (shutdown, shutdown_rx) = watch::channel(false);
    let dns_sockets = match config.dns_listen {
        Some(a) => Some(dns::bind(a).await?),
        None => None,
    };
    let dns_addr = dns_sockets
        .as_ref()
        .map(|(udp, _)| udp.local_addr())
        .transpose()?;
    let node = Node::new(
        config,
        url.clone(),
        store,
        runtime,
        bundled,
        node_tls.clone(),
        dns_addr,
    )?;
    tokio::spawn(dns::follow(node.clone(), shutdown_rx.clone()));
    if let Some((udp, tcp)) = dns_sockets {
        dns::serve(node.clone(), udp, tcp, shutdown_rx.clone());
        tracing::info!(addr = ?dns_addr, domain = %node.config.dns_domain, "serving DNS");
    }
    tokio::spawn(node.clone().follow_leadership(shutdown_rx.clone()));
    if let Some(t) = &node_tls {
        tokio::spawn(t.clone().renew_loop(shutdown_rx.clone()));
    }
    {
        let node = node.clone();
        let mut stop = shutdown_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(auth::AUDIT_FLUSH) => node.audit.flush(),
                    _ = stop.wait_for(|v| *v) => {
                        node.audit.flush();
                        return;
                    }
                }
            }
        });
    }
    tokio::spawn(node.clone().warm_plugins(shutdown_rx.clone()));
    tokio::spawn(node.clone().sample_history(shutdown_rx.clone()));
    let app = http::router(node.clone()).into_make_service_with_connect_info::<wasmos_tls::Peer>();
    let listener = match &node_tls {
        Some(t) => wasmos_tls::Listener::tls(listener, t.server()?)?,
        None => wasmos_tls::Listener::plain(listener)?,
    };
    let plain_url = match &plain {
        Some(p) => Some(format!("http://{}", p.local_addr()?)),
        None => None,
    };
    if let Some(p) = plain {
        let app = app.clone();
        let mut rx = shutdown_rx.clone();
        tokio::spawn(async move {
            axum::serve(wasmos_tls::Listener::plain(p)?, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|v| *v).await;
                })
                .await
        });
    }
    let mut rx = shutdown_rx;
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|v| *v).await;
            })
            .await
    });
    tracing::info!(%url, id = node.store.node_id(), "master is up");
    Ok(RunningMaster {
        addr,
        dns_addr,
        url,
        plain_url,
        node,
        shutdown,
        server,
    })
}

impl RunningMaster {
    /// Waits until this master leads and its frameworks run (a one-master
    /// cluster, right after start).
    pub async fn wait_leading(&self, timeout: Duration) -> anyhow::Result<()> {
        let wait = async {
            let mut leadership = self.node.store.leadership();
            loop {
                if let Some(l) = self.node.leader()
                    && l.wait_ready().await
                {
                    return;
                }
                let _ = tokio::time::timeout(Duration::from_millis(50), leadership.changed()).await;
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| {
            anyhow::anyhow!("this master did not become the leader within {timeout:?}; see its log")
        })
    }

    /// Stops serving, stops leading, waits (up to a few seconds) for open
    /// requests, and stops raft.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
        self.node.store.shutdown().await;
    }
}

/// Where other machines reach the plaintext listener bound at `bound`:
/// the advertised host when it is bound to every address; `None` when it
/// is bound to loopback while the master itself is not (it serves only
/// local clients: a follower must not send anyone to "localhost").
fn plain_url_of(bound: SocketAddr, advertised: &str, listen: SocketAddr) -> Option<String> {
    let host = if bound.ip().is_unspecified() {
        reqwest::Url::parse(advertised)
            .ok()?
            .host_str()
            .map(str::to_string)?
    } else if bound.ip().is_loopback() && !listen.ip().is_loopback() {
        return None;
    } else {
        bound.ip().to_string()
    };
    Some(format!("http://{host}:{}", bound.port()))
}
