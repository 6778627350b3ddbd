//! `wasmos master`, `wasmos agent` and `wasmos up`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use wasmos_agent::AgentConfig;
use wasmos_master::MasterConfig;

use crate::{default_data_dir, parse_addr};

#[derive(Debug, Args)]
pub struct MasterArgs {
    /// Address to serve the API (and raft traffic) on.
    #[arg(long, default_value = "127.0.0.1:5050", value_parser = parse_addr)]
    listen: SocketAddr,
    /// Where the master keeps its state.
    #[arg(long)]
    data_dir: PathBuf,
    /// Where compiled plugins are cached (default: `plugin-cache` in the
    /// data dir). Daemons on one machine may share one, e.g. a master and
    /// an agent; only the daemons' user may be able to write to it, since
    /// what it holds is loaded as machine code.
    #[arg(long, env = "WASMOS_PLUGIN_CACHE")]
    plugin_cache: Option<PathBuf>,
    /// The URL agents, clients and other masters use to reach this master
    /// (default: its --peers entry, else http://<listen>).
    #[arg(long)]
    advertise: Option<String>,
    /// This master's id; ids of removed masters are never reused.
    #[arg(long, default_value_t = 1)]
    id: u64,
    /// The initial masters of a new cluster, e.g. `1=10.0.0.1:5050,2=10.0.0.2:5050,3=10.0.0.3:5050`;
    /// give every initial master the same list. Ignored once the cluster has formed.
    #[arg(long, conflicts_with = "join")]
    peers: Option<String>,
    /// Join a running cluster instead of forming one: the master waits
    /// until `wasmos masters add ID=URL` adds it.
    #[arg(long)]
    join: bool,
    /// Raft election timeout in milliseconds: a follower that hears no
    /// leader for 1–1.5× this starts an election (etcd's default; lower
    /// it for faster failover on dedicated, quiet machines).
    #[arg(long, default_value_t = wasmos_master::DEFAULT_ELECTION_TIMEOUT_MS)]
    election_timeout_ms: u64,
    /// Stop when the process that started this one exits (`wasmos up`).
    #[arg(long, hide = true)]
    exit_with_parent: bool,
    /// The cluster CA's key (with the global --ca-cert): masters issue
    /// certificates to each other and to agents. Default: `tls/ca.key` and
    /// `tls/ca.pem` in the data dir, made there by the first start of a
    /// one-master cluster. Every master of a cluster needs the same CA.
    #[arg(long, value_name = "PATH")]
    ca_key: Option<PathBuf>,
    /// A file holding the join token agents present to get their
    /// certificates (none: no agent can join).
    #[arg(long, value_name = "PATH")]
    join_token_file: Option<PathBuf>,
    /// A file holding the secret of the first management token: made when
    /// this master leads a cluster that has none (else `wasmos acl
    /// bootstrap` makes one, once).
    #[arg(long, value_name = "PATH")]
    bootstrap_token_file: Option<PathBuf>,
    /// A public key (PEM, as cosign.pub) trusted to sign plugins from the
    /// start, as `bootstrap`: added once, when this master leads a cluster
    /// that never had one (later keys: `wasmos plugin trust add`).
    #[arg(long, value_name = "PATH")]
    bootstrap_plugin_key: Option<PathBuf>,
    /// More host names or addresses for this master's certificate (its
    /// advertised host, listen address and loopback are always in it).
    #[arg(long = "tls-host", value_name = "NAME")]
    tls_hosts: Vec<String>,
    /// How long the certificates this master issues are valid, in seconds
    /// (renewed after two thirds of it).
    #[arg(long, default_value_t = 30 * 24 * 3600, value_parser = clap::value_parser!(u64).range(30..))]
    cert_lifetime_secs: u64,
    /// Also serve plain HTTP here, for clients that cannot speak TLS:
    /// loopback or a trusted network only (a warning is logged).
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    plain_listen: Option<SocketAddr>,
    /// Plain HTTP and no certificates anywhere: for a laptop, never a
    /// network (a warning is logged on every start).
    #[arg(long)]
    insecure: bool,
    /// How often agents heartbeat, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    heartbeat_interval_ms: u64,
    /// An agent silent this long (ms) is unreachable: no offers, and its
    /// tasks TASK_UNREACHABLE until it registers again.
    #[arg(long, default_value_t = 10_000)]
    agent_timeout_ms: u64,
    /// How fast agents past their timeout are marked unreachable (Mesos'
    /// --agent_removal_rate_limit): N/DURATION (e.g. 1/10mins),
    /// P%/DURATION of the registered agents, never fewer than 5 (e.g.
    /// 10%/1min), or unlimited. The rest keep their tasks until their turn.
    #[arg(long, default_value = wasmos_master::agents::UnreachableRate::DEFAULT)]
    agent_unreachable_rate: wasmos_master::agents::UnreachableRate,
    /// How often the allocator offers free resources, in milliseconds
    /// (it also runs on every change: an agent joining, a task ending, a
    /// revive); Mesos' `--allocation_interval`.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    allocation_interval_ms: u64,
    /// At most this many calls of a framework plugin (Marathon's requests,
    /// offers, status deliveries) queued while its last commit was under
    /// way commit together as one log entry; 1 commits each alone.
    #[arg(long, default_value_t = wasmos_master::DEFAULT_FRAMEWORK_GROUP_CALLS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    framework_group_calls: usize,
    /// How long Marathon, Chronos and other framework plugins get to move
    /// their tasks off a draining agent (starting replacements elsewhere
    /// first) before the master kills what is left there, when the drain
    /// names no --max-grace-period; in seconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    drain_handoff_secs: u64,
    /// How often the master samples the cluster for the dashboard's charts,
    /// in seconds (it keeps a day of samples, also across restarts).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    history_interval_secs: u64,
    /// Serve DNS (UDP and TCP) with Mesos-DNS' names for tasks, masters
    /// and agents here, e.g. `0.0.0.0:53` (port 0: any free one).
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub dns_listen: Option<SocketAddr>,
    /// The DNS domain (`<task>.<framework>.<domain>`).
    #[arg(long, default_value = "mesos", value_parser = parse_domain)]
    pub dns_domain: String,
    /// Threads serving the API and raft (default: one per core). Where
    /// several masters share a machine's cores, one each spends less CPU
    /// per write on handing work between threads (BENCHMARKS.md).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Address to serve the agent's API on.
    #[arg(long, default_value = "127.0.0.1:5051", value_parser = parse_addr)]
    listen: SocketAddr,
    /// Where the agent keeps sandboxes and its identity.
    // An Option, so that `wasmos agent drain ID` parses without it.
    #[arg(long, required = true)]
    data_dir: Option<PathBuf>,
    /// Where compiled plugins are cached (default: `plugin-cache` in the
    /// data dir). Daemons on one machine may share one, e.g. a master and
    /// an agent; only the daemons' user may be able to write to it, since
    /// what it holds is loaded as machine code.
    #[arg(long, env = "WASMOS_PLUGIN_CACHE")]
    plugin_cache: Option<PathBuf>,
    /// The URL the master uses to reach this agent.
    #[arg(long)]
    advertise: Option<String>,
    /// The host name to register with (default: this machine's).
    #[arg(long)]
    hostname: Option<String>,
    /// Resources to offer instead of the discovered ones, e.g. `cpus:2;mem:1024;ports:[31000-31100]`.
    #[arg(long)]
    resources: Option<String>,
    /// Attributes for placement constraints, e.g. `rack:r1;zone:a`.
    #[arg(long)]
    attributes: Option<String>,
    /// A file holding the join token (the masters' --join-token-file): the
    /// agent presents it once to get its certificate (kept in the data dir).
    #[arg(long, value_name = "PATH")]
    join_token_file: Option<PathBuf>,
    /// More host names or addresses for this agent's certificate.
    #[arg(long = "tls-host", value_name = "NAME")]
    tls_hosts: Vec<String>,
    /// Plain HTTP, masters not authenticated: for a laptop, never a network.
    #[arg(long)]
    insecure: bool,
    #[command(flatten)]
    tasks: TaskArgs,
}

/// How an agent runs tasks: shared by `wasmos agent` and `wasmos up`.
#[derive(Debug, Clone, Args)]
pub struct TaskArgs {
    /// How command tasks run: `native` (own cgroup and namespaces, a
    /// supervisor that outlives the agent; needs root), `process` (plain
    /// processes), or `auto` (native when possible).
    #[arg(long, default_value = "auto", value_parser = parse_containerizer)]
    containerizer: wasmos_agent::ContainerizerChoice,
    /// Most processes one task may have (native and Docker containerizers).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(i64).range(16..))]
    task_pids_max: i64,
    /// Docker tasks: `auto` (when the engine answers at start), `on`
    /// (refuse to start without it) or `off`.
    #[arg(long, default_value = "auto", value_parser = parse_docker)]
    docker: wasmos_agent::DockerChoice,
    /// The Docker engine's unix socket.
    #[arg(long, default_value = "/var/run/docker.sock")]
    docker_socket: String,
    /// How often (ms) the sandboxes of tasks with a disk limit are
    /// measured; a task over its `disk` is failed.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..))]
    disk_watch_interval_ms: u64,
    /// Sandboxes of ended tasks are deleted this many seconds after their
    /// last change (default a week).
    #[arg(long, default_value_t = 7 * 24 * 3600, value_parser = clap::value_parser!(u64).range(1..))]
    sandbox_gc_age_secs: u64,
    /// A directory tasks may fetch `file://` URIs from (repeat for more;
    /// none by default: `file://` fetches are refused). Everything under
    /// it becomes readable by any task.
    #[arg(long = "fetch-allow", value_name = "DIR", value_parser = parse_fetch_dir)]
    fetch_allow: Vec<PathBuf>,
    /// A directory whose contents tasks may mount as host volumes
    /// (Marathon's `hostPath`; repeat for more; none by default: host
    /// volumes are refused). Tasks read and write there as their user.
    #[arg(long = "host-volumes", value_name = "DIR", value_parser = parse_fetch_dir)]
    host_volumes: Vec<PathBuf>,
    /// The agent's layer-4 load balancer for virtual IPs (`VIP_0` labels)
    /// and Marathon's service ports: on or off.
    #[arg(long, default_value = "on", value_parser = parse_on_off)]
    proxy: bool,
    /// Where the load balancer listens for Marathon's service ports (all
    /// interfaces by default).
    #[arg(long, default_value = "0.0.0.0", value_name = "IP")]
    service_port_listen: std::net::IpAddr,
    /// Make this an edge agent: serve Marathon apps' virtual hosts
    /// (marathon-lb's HAPROXY_GROUP and HAPROXY_0_VHOST labels) over HTTP
    /// here, e.g. 0.0.0.0:80.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    edge_listen: Option<SocketAddr>,
    /// A HAPROXY_GROUP the edge serves (repeat for more; default external).
    #[arg(long = "edge-group", value_name = "NAME", default_value = "external")]
    edge_groups: Vec<String>,
    /// The OS user command tasks that name none run as (default nobody:
    /// never the agent's own user). Running as another user, root
    /// included, needs a policy that lists it (`run_as`).
    #[arg(long, default_value = "nobody", value_name = "USER")]
    task_user: String,
}

/// An existing directory, absolute.
fn parse_fetch_dir(s: &str) -> Result<PathBuf, String> {
    let p = std::path::absolute(s).map_err(|e| format!("{s}: {e}"))?;
    if !p.is_dir() {
        return Err(format!(
            "{} is not a directory on this machine",
            p.display()
        ));
    }
    Ok(p)
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("{other:?} is not on or off")),
    }
}

fn parse_docker(s: &str) -> Result<wasmos_agent::DockerChoice, String> {
    use wasmos_agent::DockerChoice as D;
    match s {
        "auto" => Ok(D::Auto),
        "on" => Ok(D::On),
        "off" => Ok(D::Off),
        other => Err(format!("{other:?} is not auto, on or off")),
    }
}

fn parse_containerizer(s: &str) -> Result<wasmos_agent::ContainerizerChoice, String> {
    use wasmos_agent::ContainerizerChoice as C;
    match s {
        "auto" => Ok(C::Auto),
        "native" => Ok(C::Native),
        "process" => Ok(C::Process),
        other => Err(format!("{other:?} is not auto, native or process")),
    }
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Address to serve the API and dashboard on.
    #[arg(long, default_value = "127.0.0.1:5050", value_parser = parse_addr)]
    listen: SocketAddr,
    /// Where the cluster keeps its state (default: ~/.local/share/wasmos).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where compiled plugins are cached (default: `plugin-cache` in the
    /// data dir, shared by the cluster's daemons).
    #[arg(long, env = "WASMOS_PLUGIN_CACHE")]
    plugin_cache: Option<PathBuf>,
    /// Address of the agent's API.
    #[arg(long, default_value = "127.0.0.1:0", value_parser = parse_addr)]
    agent_listen: SocketAddr,
    /// Resources the agent offers instead of the discovered ones.
    #[arg(long)]
    resources: Option<String>,
    /// Attributes of the agent, e.g. `rack:r1;zone:a`.
    #[arg(long)]
    attributes: Option<String>,
    /// How many masters: 1, or 3 or 5 for a replicated local cluster (one
    /// process each, on consecutive ports from --listen).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=7))]
    masters: u64,
    /// Plain HTTP and no certificates: for a laptop, never a network.
    #[arg(long)]
    insecure: bool,
    /// Also serve the master's API as plain HTTP here (still
    /// authenticated), for clients that cannot speak TLS, such as pymesos
    /// schedulers: loopback or a trusted network only.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    plain_listen: Option<SocketAddr>,
    /// How often the master samples the cluster for the dashboard's charts,
    /// in seconds (a day of samples is kept).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    history_interval_secs: u64,
    /// Where the masters serve DNS (UDP and TCP; port 0: a free one, each
    /// master its own); printed as `dns: HOST:PORT`.
    #[arg(long, default_value = "127.0.0.1:0", value_parser = parse_addr)]
    dns_listen: SocketAddr,
    /// The DNS domain (`<task>.<framework>.<domain>`).
    #[arg(long, default_value = "mesos", value_parser = parse_domain)]
    dns_domain: String,
    #[command(flatten)]
    tasks: TaskArgs,
}

/// A DNS domain: labels of letters, digits and `-`.
fn parse_domain(s: &str) -> Result<String, String> {
    let d = s.trim_end_matches('.').to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= 200
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(d)
    } else {
        Err(format!(
            "{s:?} is not a DNS domain (labels of letters, digits and -, e.g. mesos or cluster.example)"
        ))
    }
}

fn read_token(path: Option<&Path>) -> anyhow::Result<Option<String>> {
    read_file_token("--join-token-file", path)
}

fn read_file_token(flag: &str, path: Option<&Path>) -> anyhow::Result<Option<String>> {
    let Some(path) = path else { return Ok(None) };
    let s = std::fs::read_to_string(path)
        .with_context(|| format!("{flag} {}: cannot read it", path.display()))?;
    let s = s.trim().to_string();
    if s.is_empty() {
        bail!("{flag} {}: the file is empty", path.display());
    }
    Ok(Some(s))
}

/// The cluster CA a master issues with: the given files, or those in its
/// data dir — made there when this master forms a cluster alone.
fn master_authority(
    ca_cert: Option<&Path>,
    ca_key: Option<&Path>,
    data_dir: &Path,
    alone: bool,
) -> anyhow::Result<wasmos_tls::Authority> {
    use wasmos_tls::Authority;
    match (ca_cert, ca_key) {
        (Some(c), Some(k)) => Ok(Authority::load(c, k)?),
        (Some(_), None) | (None, Some(_)) => {
            bail!("--ca-cert and --ca-key go together: the cluster CA's certificate and its key")
        }
        (None, None) => {
            let dir = data_dir.join("tls");
            let (c, k) = (dir.join(wasmos_tls::CA_CERT), dir.join(wasmos_tls::CA_KEY));
            if c.exists() {
                return Ok(Authority::load(&c, &k)?);
            }
            if !alone {
                bail!(
                    "this master has no cluster CA: give every master of the cluster the same one with --ca-cert and --ca-key (make it once, e.g. by starting a one-master cluster, or with `wasmos up`, and copy its tls/ca.pem and tls/ca.key)"
                );
            }
            let a = Authority::create(&dir, &format!("{:08x}", rand::random::<u32>()))?;
            tracing::info!(ca = %c.display(), "made the cluster CA (clients and agents need its certificate)");
            Ok(a)
        }
    }
}

fn check_url(flag: &str, url: &str) -> anyhow::Result<String> {
    let u = url.trim_end_matches('/');
    let parsed = reqwest::Url::parse(u).map_err(|e| anyhow::anyhow!("{flag} {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!("{flag} {url:?}: must be an http:// or https:// URL");
    }
    Ok(u.to_string())
}

/// Parses `1=host:port,2=http://host:port,...` into id → base URL.
pub(crate) fn parse_peers(s: &str, scheme: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut peers = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (id, addr) = item.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("--peers: {item:?} is not ID=ADDRESS, e.g. 2=10.0.0.2:5050")
        })?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| anyhow::anyhow!("--peers: {id:?} is not a master id (1, 2, ...)"))?;
        let addr = addr.trim();
        let url = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("{scheme}://{addr}")
        };
        let url = check_url("--peers", &url)?;
        if peers.insert(id, url).is_some() {
            bail!("--peers: master id {id} is listed twice");
        }
    }
    if peers.is_empty() {
        bail!("--peers: list at least this master, e.g. 1=127.0.0.1:5050");
    }
    Ok(peers)
}

fn master_config(a: MasterArgs, ca_cert: Option<&Path>) -> anyhow::Result<MasterConfig> {
    let MasterArgs {
        listen,
        data_dir,
        plugin_cache,
        advertise,
        id,
        peers,
        join,
        election_timeout_ms,
        exit_with_parent: _,
        ca_key,
        join_token_file,
        bootstrap_token_file,
        bootstrap_plugin_key,
        tls_hosts,
        cert_lifetime_secs,
        plain_listen,
        insecure,
        heartbeat_interval_ms,
        agent_timeout_ms,
        agent_unreachable_rate,
        allocation_interval_ms,
        framework_group_calls,
        drain_handoff_secs,
        history_interval_secs,
        worker_threads: _,
        dns_listen,
        dns_domain,
    } = a;
    if heartbeat_interval_ms == 0 || agent_timeout_ms <= heartbeat_interval_ms {
        bail!("--agent-timeout-ms must be longer than --heartbeat-interval-ms, and both above 0");
    }
    if id == 0 {
        bail!("--id: master ids start at 1");
    }
    if !(20..=60_000).contains(&election_timeout_ms) {
        bail!("--election-timeout-ms must be between 20 and 60000");
    }
    let scheme = if insecure { "http" } else { "https" };
    let mut c = MasterConfig::new(listen, data_dir);
    if let Some(path) = &bootstrap_plugin_key {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("--bootstrap-plugin-key: cannot read {}", path.display()))?;
        let what = format!("--bootstrap-plugin-key {}", path.display());
        wasmos_oci::sign::PublicKey::from_pem(&pem, &what)?;
        c.bootstrap_plugin_key = Some(pem);
    }
    if let Some(dir) = plugin_cache {
        c.plugin_cache = dir;
    }
    c.id = id;
    c.election_timeout = Duration::from_millis(election_timeout_ms);
    c.peers = match (peers, join) {
        (_, true) => None,
        (Some(p), false) => {
            let p = parse_peers(&p, scheme)?;
            if !p.contains_key(&id) {
                bail!("--peers must include this master (--id {id})");
            }
            Some(p)
        }
        (None, false) => Some(BTreeMap::new()),
    };
    let advertise = advertise.or_else(|| c.peers.as_ref().and_then(|p| p.get(&id).cloned()));
    c.advertise = advertise
        .map(|u| check_url("--advertise", &u))
        .transpose()?;
    if insecure {
        if ca_cert.is_some()
            || ca_key.is_some()
            || join_token_file.is_some()
            || bootstrap_token_file.is_some()
        {
            bail!(
                "--insecure: then no --ca-cert, --ca-key, --join-token-file or --bootstrap-token-file"
            );
        }
    } else {
        c.bootstrap_token =
            read_file_token("--bootstrap-token-file", bootstrap_token_file.as_deref())?
                .map(wasmos_master::auth::Secret);
        let alone = matches!(&c.peers, Some(p) if p.len() <= 1);
        c.tls = Some(wasmos_master::tls::MasterTls {
            authority: std::sync::Arc::new(master_authority(
                ca_cert,
                ca_key.as_deref(),
                &c.data_dir,
                alone,
            )?),
            join_token: read_token(join_token_file.as_deref())?,
            cert_lifetime: Duration::from_secs(cert_lifetime_secs),
            extra_hosts: tls_hosts,
        });
    }
    c.plain_listen = plain_listen;
    c.heartbeat_interval = Duration::from_millis(heartbeat_interval_ms);
    c.agent_timeout = Duration::from_millis(agent_timeout_ms);
    c.unreachable_rate = agent_unreachable_rate;
    c.allocation_interval = Duration::from_millis(allocation_interval_ms);
    c.framework_group_calls = framework_group_calls;
    c.drain_handoff = Duration::from_secs(drain_handoff_secs);
    c.history_interval = Duration::from_secs(history_interval_secs);
    c.dns_listen = dns_listen;
    c.dns_domain = dns_domain;
    Ok(c)
}

/// Parses `--master URL1,URL2,...`.
fn master_urls(master: &str) -> anyhow::Result<Vec<String>> {
    let urls: Vec<String> = master
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| check_url("--master", u))
        .collect::<anyhow::Result<_>>()?;
    if urls.is_empty() {
        bail!("--master: give at least one master URL");
    }
    Ok(urls)
}

fn agent_config(a: AgentArgs, master: &str, ca_cert: Option<&Path>) -> anyhow::Result<AgentConfig> {
    let AgentArgs {
        listen,
        data_dir,
        plugin_cache,
        advertise,
        hostname,
        resources,
        attributes,
        join_token_file,
        tls_hosts,
        insecure,
        tasks,
    } = a;
    let data_dir = data_dir.context("--data-dir is required: where the agent keeps sandboxes")?;
    let mut c = AgentConfig::new(master_urls(master)?, listen, data_dir);
    if let Some(dir) = plugin_cache {
        c.plugin_cache = dir;
    }
    c.advertise = advertise
        .map(|u| check_url("--advertise", &u))
        .transpose()?;
    c.hostname = hostname;
    if let Some(r) = &resources {
        // Validate now, with the flag's name in the error.
        wasmos_agent::resources::apply_overrides(Default::default(), r)
            .map_err(|e| anyhow::anyhow!("--resources: {e}"))?;
    }
    c.resources = resources;
    c.attributes = match attributes {
        Some(s) => wasmos_core::agent::parse_attributes(&s)
            .map_err(|e| anyhow::anyhow!("--attributes: {e}"))?,
        None => Default::default(),
    };
    if insecure {
        if ca_cert.is_some() || join_token_file.is_some() {
            bail!("--insecure: then no --ca-cert or --join-token-file");
        }
    } else {
        let Some(ca) = ca_cert else {
            bail!(
                "--ca-cert: give the cluster CA's certificate (the `ca:` line of wasmos up; a master keeps it as tls/ca.pem in its data dir), or --insecure on a laptop"
            );
        };
        c.tls = Some(wasmos_agent::tls::AgentTls {
            trust: wasmos_tls::Trust::load(ca).map_err(|e| anyhow::anyhow!("--ca-cert: {e}"))?,
            join_token: read_token(join_token_file.as_deref())?,
            extra_hosts: tls_hosts,
        });
    }
    let TaskArgs {
        containerizer,
        task_pids_max,
        docker,
        docker_socket,
        disk_watch_interval_ms,
        sandbox_gc_age_secs,
        fetch_allow,
        host_volumes,
        proxy,
        service_port_listen,
        edge_listen,
        edge_groups,
        task_user,
    } = tasks;
    c.containerizer = containerizer;
    c.task_pids_max = task_pids_max;
    c.docker = docker;
    c.docker_socket = docker_socket;
    c.disk_watch_interval = Duration::from_millis(disk_watch_interval_ms);
    c.sandbox_gc_age = Duration::from_secs(sandbox_gc_age_secs);
    c.fetch_allow = fetch_allow;
    c.host_volumes = host_volumes;
    c.proxy = proxy;
    c.service_port_listen = service_port_listen;
    c.edge_listen = edge_listen;
    c.edge_groups = edge_groups;
    c.task_user = task_user;
    Ok(c)
}

fn bundled() -> Vec<(wasmos_core::PluginManifest, &'static [u8])> {
    wasmos_bundled::all()
        .into_iter()
        .map(|p| (p.manifest, p.component))
        .collect()
}

/// Waits for Ctrl-C or SIGTERM.
async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Prints a line to stdout at once (tests and scripts read it).
fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub async fn master(a: MasterArgs, ca_cert: Option<&Path>) -> anyhow::Result<()> {
    let with_parent = a.exit_with_parent;
    let config = master_config(a, ca_cert)?;
    let single = matches!(&config.peers, Some(p) if p.len() <= 1);
    let m = wasmos_master::start(config, bundled()).await?;
    if single && let Err(e) = m.wait_leading(Duration::from_secs(30)).await {
        tracing::warn!(error = %e, "serving anyway");
    }
    if let Some(p) = &m.plain_url {
        announce(&format!("plain: {p}"));
    }
    announce(&format!("master: {}", m.url));
    let store = m.node.store.clone();
    let removed = tokio::select! {
        _ = stop_signal() => None,
        _ = parent_exit(with_parent) => {
            tracing::warn!("the process that started this master exited");
            None
        }
        why = store.removed() => Some(why),
    };
    tracing::info!("stopping");
    m.stop().await;
    if let Some(why) = removed {
        bail!(
            "{why}; its id is retired, so this data directory cannot rejoin. To bring this machine back, start a new master with a new --id and --join, then `wasmos masters add`"
        );
    }
    Ok(())
}

pub async fn agent(a: AgentArgs, master: &str, ca_cert: Option<&Path>) -> anyhow::Result<()> {
    let config = agent_config(a, master, ca_cert)?;
    let running = wasmos_agent::start(config).await?;
    announce(&format!("agent: {}", running.url));
    stop_signal().await;
    tracing::info!("stopping; killing tasks");
    running.stop().await;
    Ok(())
}

/// Where `up` keeps the cluster CA, the join token and the management
/// token.
struct LocalTls {
    cert: PathBuf,
    key: PathBuf,
    token: PathBuf,
    management: PathBuf,
}

/// The `token:` and `ca:` lines: what a client needs.
fn announce_credentials(t: &LocalTls) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(&t.management)
        .with_context(|| format!("cannot read {}", t.management.display()))?;
    announce(&format!("token: {}", token.trim()));
    announce(&format!("ca: {}", t.cert.display()));
    Ok(())
}

/// The key `up`'s cluster trusts to sign plugins: the CLI on this machine
/// signs with it (`wasmos plugin install` of a local plugin just works
/// here); anyone else signs with a key an operator trusts.
struct LocalPluginKey {
    private: PathBuf,
    public: PathBuf,
}

/// Where `up` keeps its plugin signing key, in its data dir.
pub const PLUGIN_KEY: &str = "plugin-signing.key";

/// Makes the plugin signing key pair on the first `up`.
fn local_plugin_key(dir: &Path) -> anyhow::Result<LocalPluginKey> {
    let private = dir.join(PLUGIN_KEY);
    let public = dir.join("plugin-signing.pub");
    if private.exists() && !public.exists() {
        // Never a new key for a lost public half: the cluster trusts this one.
        let pem = std::fs::read_to_string(&private)
            .with_context(|| format!("cannot read {}", private.display()))?;
        let key = wasmos_oci::sign::SigningKey::from_pem(&pem, &private.display().to_string())?;
        std::fs::write(&public, key.public().to_pem())
            .with_context(|| format!("cannot write {}", public.display()))?;
    } else if !private.exists() {
        eprintln!(
            "wasmos up: making the plugin signing key {}",
            private.display()
        );
        write_plugin_key(&private, &public)?;
    }
    Ok(LocalPluginKey { private, public })
}

/// Makes a plugin signing key pair: the private key to `private` (0600),
/// the public one to `public`.
pub fn write_plugin_key(
    private: &Path,
    public: &Path,
) -> anyhow::Result<wasmos_oci::sign::PublicKey> {
    let key = wasmos_oci::sign::SigningKey::generate()?;
    wasmos_tls::write_private(private, &key.private_pem())?;
    std::fs::write(public, key.public().to_pem())
        .with_context(|| format!("cannot write {}", public.display()))?;
    Ok(key.public())
}

/// A secret of a local cluster (0600), made on the first `up`.
fn local_secret_file(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    if !path.exists() {
        let token: String = {
            use rand::Rng;
            let mut rng = rand::rng();
            (0..32)
                .map(|_| format!("{:02x}", rng.random::<u8>()))
                .collect()
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        f.write_all(token.as_bytes())?;
    }
    Ok(path)
}

/// Resolves when the parent process exits (never, unless `enabled`).
async fn parent_exit(enabled: bool) {
    if !enabled {
        return std::future::pending().await;
    }
    let parent = nix::unistd::getppid();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if nix::unistd::getppid() != parent {
            return;
        }
    }
}

pub async fn up(a: UpArgs) -> anyhow::Result<()> {
    let UpArgs {
        listen,
        data_dir,
        plugin_cache,
        agent_listen,
        resources,
        attributes,
        masters,
        insecure,
        plain_listen,
        history_interval_secs,
        dns_listen,
        dns_domain,
        tasks,
    } = a;
    if plain_listen.is_some() && masters > 1 {
        bail!(
            "--plain-listen works with one master; for several, start `wasmos master --plain-listen` on each"
        );
    }
    let data_dir = data_dir.unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    eprintln!("wasmos up: state in {}", data_dir.display());
    // The cluster CA (made on the first `up`) and the token the agent joins with.
    let tls = if insecure {
        eprintln!(
            "wasmos up: WARNING --insecure: plain HTTP and no certificates; anyone who reaches these ports controls this machine"
        );
        None
    } else {
        let dir = data_dir.join("tls");
        let (cert, key) = (dir.join(wasmos_tls::CA_CERT), dir.join(wasmos_tls::CA_KEY));
        if !cert.exists() {
            eprintln!(
                "wasmos up: making the cluster's certificate authority in {}",
                dir.display()
            );
            wasmos_tls::Authority::create(&dir, &format!("{:08x}", rand::random::<u32>()))?;
        }
        Some(LocalTls {
            cert,
            key,
            token: local_secret_file(&data_dir, "join-token")?,
            management: local_secret_file(&data_dir, "token")?,
        })
    };
    // The master and the agent compile different plugins; one cache serves
    // both (and survives a fresh start of either).
    let plugin_cache = Some(plugin_cache.unwrap_or_else(|| data_dir.join("plugin-cache")));
    let agent = AgentArgs {
        listen: agent_listen,
        data_dir: Some(data_dir.join("agent")),
        plugin_cache: plugin_cache.clone(),
        advertise: None,
        hostname: None,
        resources,
        attributes,
        join_token_file: tls.as_ref().map(|t| t.token.clone()),
        tls_hosts: Vec::new(),
        insecure,
        tasks,
    };
    let ca_cert = tls.as_ref().map(|t| t.cert.clone());
    let plugin_key = local_plugin_key(&data_dir)?;
    if masters > 1 {
        return up_replicated(
            masters,
            listen,
            &data_dir,
            tls.as_ref(),
            &plugin_key,
            agent,
            EachMaster {
                history_interval_secs,
                dns_listen,
                dns_domain: &dns_domain,
            },
        )
        .await;
    }
    eprintln!("wasmos up: starting the master and loading the bundled plugins…");
    let mconf = master_config(
        MasterArgs {
            listen,
            data_dir: data_dir.join("master"),
            plugin_cache,
            advertise: None,
            id: 1,
            peers: None,
            join: false,
            election_timeout_ms: wasmos_master::DEFAULT_ELECTION_TIMEOUT_MS,
            exit_with_parent: false,
            ca_key: tls.as_ref().map(|t| t.key.clone()),
            join_token_file: tls.as_ref().map(|t| t.token.clone()),
            bootstrap_token_file: tls.as_ref().map(|t| t.management.clone()),
            bootstrap_plugin_key: Some(plugin_key.public.clone()),
            tls_hosts: Vec::new(),
            cert_lifetime_secs: 30 * 24 * 3600,
            plain_listen,
            insecure,
            heartbeat_interval_ms: 2000,
            agent_timeout_ms: 10_000,
            agent_unreachable_rate: Default::default(),
            allocation_interval_ms: 1000,
            framework_group_calls: wasmos_master::DEFAULT_FRAMEWORK_GROUP_CALLS,
            drain_handoff_secs: 300,
            history_interval_secs,
            worker_threads: None,
            dns_listen: Some(dns_listen),
            dns_domain,
        },
        ca_cert.as_deref(),
    )?;
    let master = wasmos_master::start(mconf, bundled()).await?;
    if let Err(e) = master.wait_leading(Duration::from_secs(60)).await {
        master.stop().await;
        return Err(e);
    }
    eprintln!("wasmos up: starting the agent…");
    let aconf = agent_config(agent, &master.url, ca_cert.as_deref())?;
    let agent = match wasmos_agent::start(aconf).await {
        Ok(a) => a,
        Err(e) => {
            master.stop().await;
            return Err(e);
        }
    };
    announce(&format!("master: {}", master.url));
    announce(&format!("dashboard: {}/", master.url));
    announce(&format!("agent: {}", agent.url));
    if let Some(d) = master.dns_addr {
        announce(&format!("dns: {d}"));
    }
    if let Some(p) = &master.plain_url {
        announce(&format!("plain: {p}"));
    }
    if let Some(t) = &tls {
        announce_credentials(t)?;
    }
    announce(&format!("plugin key: {}", plugin_key.private.display()));
    eprintln!(
        "wasmos up: ready. Try `wasmos task run -- echo hello`. Ctrl-C stops the cluster and its tasks."
    );
    stop_signal().await;
    eprintln!("wasmos up: stopping; killing tasks…");
    agent.stop().await;
    master.stop().await;
    eprintln!("wasmos up: stopped");
    Ok(())
}

/// `wasmos up --masters N`: N master processes (so that one can be killed
/// to watch the others take over) and an agent in this process.
async fn up_replicated(
    n: u64,
    listen: SocketAddr,
    data_dir: &Path,
    tls: Option<&LocalTls>,
    plugin_key: &LocalPluginKey,
    agent: AgentArgs,
    each: EachMaster<'_>,
) -> anyhow::Result<()> {
    let EachMaster {
        history_interval_secs,
        dns_listen,
        dns_domain,
    } = each;
    let addrs = local_master_addrs(n, listen, data_dir)?;
    let mut dns = Vec::new();
    for i in 0..n as u16 {
        dns.push(match dns_listen.port() {
            0 => free_dns_addr(dns_listen.ip())?,
            p => SocketAddr::new(
                dns_listen.ip(),
                p.checked_add(i).context("--dns-listen port too high")?,
            ),
        });
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let peers: String = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={scheme}://{a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let urls: Vec<String> = addrs.iter().map(|a| format!("{scheme}://{a}")).collect();
    let exe = std::env::current_exe().context("cannot find the wasmos binary to start masters")?;
    let mut children = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = i + 1;
        let dir = data_dir.join("masters").join(id.to_string());
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let log_path = dir.join("master.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg("master");
        match tls {
            Some(t) => cmd
                .arg("--ca-cert")
                .arg(&t.cert)
                .arg("--ca-key")
                .arg(&t.key)
                .arg("--join-token-file")
                .arg(&t.token)
                .arg("--bootstrap-token-file")
                .arg(&t.management),
            None => cmd.arg("--insecure"),
        };
        cmd.arg("--bootstrap-plugin-key").arg(&plugin_key.public);
        let child = cmd
            .args(["--id", &id.to_string()])
            .args(["--listen", &addr.to_string()])
            .args(["--peers", &peers])
            .args([
                "--history-interval-secs",
                &history_interval_secs.to_string(),
            ])
            .args(["--dns-listen", &dns[i].to_string()])
            .args(["--dns-domain", dns_domain])
            .arg("--data-dir")
            .arg(&dir)
            .arg("--plugin-cache")
            .arg(
                agent
                    .plugin_cache
                    .clone()
                    .unwrap_or_else(|| data_dir.join("plugin-cache")),
            )
            .arg("--exit-with-parent")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start master {id}"))?;
        eprintln!(
            "wasmos up: master {id} on {scheme}://{addr} (pid {}, log {})",
            child.id().unwrap_or(0),
            log_path.display()
        );
        children.push((id, child));
    }
    let result = async {
        eprintln!(
            "wasmos up: waiting for the masters to elect a leader and start the bundled plugins…"
        );
        let ca = tls.map(|t| t.cert.clone());
        let token = tls
            .map(|t| std::fs::read_to_string(&t.management))
            .transpose()
            .context("cannot read the management token")?;
        wait_cluster_ready(
            &urls.join(","),
            ca.as_deref(),
            token.as_deref().map(str::trim),
            Duration::from_secs(90),
        )
        .await?;
        eprintln!("wasmos up: starting the agent…");
        let aconf = agent_config(agent, &urls.join(","), ca.as_deref())?;
        wasmos_agent::start(aconf).await
    }
    .await;
    let agent = match result {
        Ok(a) => a,
        Err(e) => {
            stop_children(&mut children).await;
            return Err(e);
        }
    };
    announce(&format!("masters: {}", urls.join(",")));
    announce(&format!("dashboard: {}/", urls[0]));
    announce(&format!("agent: {}", agent.url));
    for d in &dns {
        announce(&format!("dns: {d}"));
    }
    if let Some(t) = tls {
        announce_credentials(t)?;
    }
    announce(&format!("plugin key: {}", plugin_key.private.display()));
    eprintln!(
        "wasmos up: ready. Point the CLI at all masters: `export WASMOS_MASTER={}`; kill one master (its pid above) and the others carry on. Ctrl-C stops everything.",
        urls.join(",")
    );
    stop_signal().await;
    eprintln!("wasmos up: stopping; killing tasks…");
    agent.stop().await;
    stop_children(&mut children).await;
    eprintln!("wasmos up: stopped");
    Ok(())
}

/// The masters' addresses of a local replicated cluster: those it was
/// formed with (kept in the data dir), or new ones — consecutive ports from
/// `listen`, or free ports when its port is 0.
/// What `up --masters N` gives every master.
struct EachMaster<'a> {
    history_interval_secs: u64,
    dns_listen: SocketAddr,
    dns_domain: &'a str,
}

/// A port free for both UDP and TCP on `ip` (for a master started next).
fn free_dns_addr(ip: std::net::IpAddr) -> anyhow::Result<SocketAddr> {
    for _ in 0..20 {
        let udp = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("cannot bind a DNS port on {ip}"))?;
        let at = udp.local_addr()?;
        if std::net::TcpListener::bind(at).is_ok() {
            return Ok(at);
        }
    }
    bail!("cannot find a port free for both UDP and TCP on {ip}; give --dns-listen")
}

fn local_master_addrs(
    n: u64,
    listen: SocketAddr,
    data_dir: &Path,
) -> anyhow::Result<Vec<SocketAddr>> {
    let file = data_dir.join("masters").join("addresses");
    if let Ok(text) = std::fs::read_to_string(&file) {
        let addrs: Vec<SocketAddr> = text
            .split_whitespace()
            .map(|a| a.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| {
                anyhow::anyhow!(
                    "{} is damaged ({e}); remove the data dir to start over",
                    file.display()
                )
            })?;
        if addrs.len() as u64 != n {
            bail!(
                "the data dir holds a cluster of {} masters; run `wasmos up --masters {}` or use another --data-dir",
                addrs.len(),
                addrs.len()
            );
        }
        return Ok(addrs);
    }
    let addrs: Vec<SocketAddr> = if listen.port() == 0 {
        (0..n)
            .map(|_| {
                std::net::TcpListener::bind(listen)
                    .and_then(|l| l.local_addr())
                    .with_context(|| format!("cannot find a free port on {}", listen.ip()))
            })
            .collect::<anyhow::Result<_>>()?
    } else {
        (0..n)
            .map(|i| {
                let port = listen.port().checked_add(i as u16).filter(|p| *p != 0);
                port.map(|p| SocketAddr::new(listen.ip(), p))
                    .ok_or_else(|| {
                        anyhow::anyhow!("--listen {listen}: need {n} consecutive ports from it")
                    })
            })
            .collect::<anyhow::Result<_>>()?
    };
    std::fs::create_dir_all(data_dir.join("masters"))?;
    let text: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    std::fs::write(&file, text.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(addrs)
}

/// Waits until some master leads and its frameworks run.
async fn wait_cluster_ready(
    masters: &str,
    ca: Option<&Path>,
    token: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let trust = ca.map(wasmos_tls::Trust::load).transpose()?;
    let mut client = crate::client::Client::new(masters, trust.as_ref())?;
    if let Some(t) = token {
        client = client.with_token(t);
    }
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let fws: Result<Vec<serde_json::Value>, _> = client.get("/api/wasmos/v1/frameworks").await;
        if let Ok(fws) = fws
            && fws.iter().any(|f| f["active"] == true)
        {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "the masters did not elect a leader within {timeout:?}; see the master logs under the data dir"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGTERM, then SIGKILL after a grace period.
async fn stop_children(children: &mut [(usize, tokio::process::Child)]) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    for (_, c) in children.iter() {
        if let Some(pid) = c.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    for (id, c) in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(10), c.wait())
            .await
            .is_err()
        {
            eprintln!("wasmos up: master {id} did not stop; killing it");
            let _ = c.kill().await;
        }
    }
}
