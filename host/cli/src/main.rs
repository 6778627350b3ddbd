//! `wasmos`: the one binary. Runs a master, an agent, or a whole
//! one-machine cluster (`up`), and talks to a cluster as a client (`task`,
//! `agents`, `frameworks`, `plugin`, `app`).
//!
//! Raw arguments are parsed by clap, then validated into the daemons'
//! config types; client commands use only the native HTTP API.

mod acl;
mod app;
mod client;
mod cluster;
mod daemon;
mod job;
mod maintenance;
mod package;
mod scaffold;
mod simulate;
mod table;
mod task;
mod vars;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "wasmos",
    version,
    about = "A cluster operating system whose policy is WebAssembly",
    propagate_version = true
)]
struct Cli {
    /// The masters to talk to, comma-separated (agents register with
    /// whichever leads).
    /// (default: the one `wasmos login` saved, else https://127.0.0.1:5050)
    #[arg(long, global = true, env = "WASMOS_MASTER")]
    master: Option<String>,

    /// The cluster CA's certificate, to verify the masters with (default:
    /// the one `wasmos login` saved, else the one `wasmos up` made in its
    /// default data dir).
    #[arg(long, global = true, env = "WASMOS_CACERT", value_name = "PATH")]
    ca_cert: Option<PathBuf>,

    /// The token to present (default: the one `wasmos login` saved, else
    /// the management token `wasmos up` made in its default data dir).
    #[arg(long, global = true, env = "WASMOS_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Log filter, e.g. `info` or `wasmos_master=debug` (also WASMOS_LOG).
    #[arg(long, global = true, env = "WASMOS_LOG")]
    log: Option<String>,

    #[command(subcommand)]
    command: Command,
}

/// `wasmos agent [OPTIONS]` runs an agent; `wasmos agent drain ID` (and
/// `deactivate`, `reactivate`) acts on one.
#[derive(Debug, clap::Args)]
struct AgentCmd {
    #[command(subcommand)]
    action: Option<cluster::AgentAction>,
    #[command(flatten)]
    run: daemon::AgentArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a master.
    Master(daemon::MasterArgs),
    /// Run an agent on this machine; or drain, deactivate, reactivate one.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Agent(AgentCmd),
    /// Run a one-machine cluster: a master, an agent, the bundled plugins.
    Up(daemon::UpArgs),
    /// Run, list, kill tasks and read their output.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// List the agents.
    Agents(ListArgs),
    /// List the frameworks.
    Frameworks(ListArgs),
    /// Mesos' maintenance: schedule machines, take them down, bring them up.
    #[command(subcommand)]
    Maintenance(maintenance::MaintenanceCommand),
    /// List roles (weights, quotas, what their frameworks hold); `roles set` changes one.
    Roles(cluster::RolesArgs),
    /// List roles' quotas, or set one: `quota ROLE --guarantee cpus:2 --limit cpus:8`.
    Quota(cluster::QuotaArgs),
    /// Manage plugins.
    #[command(subcommand)]
    Plugin(cluster::PluginCommand),
    /// List, add and remove masters.
    #[command(subcommand)]
    Masters(cluster::MastersCommand),
    /// Read and write cluster variables.
    #[command(subcommand)]
    Var(vars::VarCommand),
    /// Deploy, scale, restart and remove long-running apps (Marathon).
    #[command(subcommand)]
    App(app::AppCommand),
    /// Add, list, run and remove repeating and dependent jobs (Chronos).
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Search, install and uninstall packages from catalogue repositories.
    #[command(subcommand)]
    Package(package::PackageCommand),
    /// Check credentials and save them (with the master and CA) for later commands.
    Login(acl::LoginArgs),
    /// Who the CLI's credentials are, and what they may do.
    Whoami,
    /// Tokens, policies and users.
    #[command(subcommand)]
    Acl(acl::AclCommand),
    /// Try placement plugins and a workload on a simulated cluster, offline
    /// and in virtual time: the real allocator, placement plugins and
    /// Marathon; reports placements, utilisation, fragmentation and why
    /// anything waits.
    Simulate(simulate::SimulateArgs),
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Parses a listen address with a helpful error.
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an address like 127.0.0.1:5050"))
}

/// The default data directory: `~/.local/share/wasmos` on Linux.
fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("wasmos")
}

fn init_logging(filter: Option<&str>, daemon: bool) {
    use tracing_subscriber::EnvFilter;
    // openraft reports every failed heartbeat to a down peer as a warning;
    // the master logs what matters (elections, stepping down) itself.
    let default = if daemon {
        "info,openraft=error"
    } else {
        "warn,openraft=error"
    };
    let filter = filter
        .map(str::to_string)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| default.to_string());
    let filter = if filter.contains("openraft") {
        filter
    } else {
        format!("{filter},openraft=error")
    };
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// mimalloc instead of glibc's malloc: a master's write path (HTTP, raft,
/// redb) allocates and frees small blocks on many threads, which glibc
/// serves with locks and consolidation (BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A task's supervisor (started by the agent): single-threaded, before
    // any runtime exists, so that it may fork.
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == "supervise") {
        match args.next() {
            Some(flag) if flag == "--serve" => wasmos_agent::native::supervisor::serve(),
            Some(flag) if flag == "--enter" => {
                let rest: Vec<std::ffi::OsString> = args.collect();
                wasmos_agent::native::supervisor::enter(&rest)
            }
            Some(dir) => wasmos_agent::native::supervisor::main(std::path::Path::new(&dir)),
            None => {
                eprintln!("error: supervise needs the task's checkpoint directory");
                return ExitCode::from(2);
            }
        }
    }
    let cli = Cli::parse();
    let daemon = matches!(
        cli.command,
        Command::Master(_) | Command::Agent(AgentCmd { action: None, .. }) | Command::Up(_)
    );
    // A simulation's plugins log every refusal; its report says why.
    let quiet = matches!(cli.command, Command::Simulate(_)).then_some("error");
    init_logging(cli.log.as_deref().or(quiet), daemon);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Command::Master(a) = &cli.command
        && let Some(n) = a.worker_threads
    {
        runtime.worker_threads(n.into());
    }
    let runtime = match runtime.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // Flags and environment first, then what `wasmos login` saved, then
    // what `wasmos up` keeps in its default data dir.
    let saved = acl::Saved::load();
    let from_flags = cli.master.is_some();
    let master = cli
        .master
        .clone()
        .or_else(|| saved.master.clone())
        .unwrap_or_else(|| "https://127.0.0.1:5050".to_string());
    let ca_cert = cli.ca_cert.clone().or_else(|| {
        (!from_flags || saved.master.as_deref() == Some(&master))
            .then(|| saved.ca_cert.clone())
            .flatten()
    });
    let token = cli
        .token
        .clone()
        .or_else(|| {
            (!from_flags || saved.master.as_deref() == Some(&master))
                .then(|| saved.token.clone())
                .flatten()
        })
        // `wasmos up`'s management token goes only to masters verified by
        // up's own CA (no other CA given): never to another cluster.
        .or_else(|| {
            ca_cert
                .is_none()
                .then(|| acl::up_token(&default_data_dir()))
                .flatten()
        });
    let (m, ca, t) = (master.clone(), ca_cert.clone(), token.clone());
    let connect = move || -> anyhow::Result<client::Client> {
        let trust = client::trust(ca.as_deref(), &default_data_dir())?;
        let c = client::Client::new(&m, trust.as_ref())?;
        Ok(match &t {
            Some(t) => c.with_token(t),
            None => c,
        })
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Master(a) => daemon::master(a, cli.ca_cert.as_deref()).await.map(|_| 0),
            Command::Agent(AgentCmd {
                action: Some(a), ..
            }) => cluster::agent_action(&connect()?, a).await.map(|_| 0),
            Command::Agent(a) => daemon::agent(a.run, &master, cli.ca_cert.as_deref())
                .await
                .map(|_| 0),
            Command::Up(a) => daemon::up(a).await.map(|_| 0),
            Command::Task(c) => task::run(c, &connect()?).await,
            Command::Agents(a) => cluster::agents(&connect()?, a.json).await.map(|_| 0),
            Command::Frameworks(a) => cluster::frameworks(&connect()?, a.json).await.map(|_| 0),
            Command::Maintenance(m) => maintenance::run(m, &connect()?).await.map(|_| 0),
            Command::Roles(a) => cluster::roles(a, &connect()?).await.map(|_| 0),
            Command::Quota(a) => cluster::quota(a, &connect()?).await.map(|_| 0),
            Command::Plugin(cluster::PluginCommand::New {
                name,
                kind,
                lang,
                dir,
            }) => scaffold::new(&name, kind, lang, dir.as_deref()).map(|_| 0),
            Command::Plugin(cluster::PluginCommand::Build { dir }) => {
                scaffold::build(&dir).map(|_| 0)
            }
            Command::Plugin(c) => cluster::plugin(c, &connect()?).await.map(|_| 0),
            Command::Simulate(a) => tokio::task::block_in_place(|| simulate::run(a)),
            Command::Masters(c) => cluster::masters(c, &connect()?).await.map(|_| 0),
            Command::Var(c) => vars::run(c, &connect()?).await.map(|_| 0),
            Command::App(c) => app::run(c, &connect()?).await,
            Command::Job(c) => job::run(c, &connect()?).await,
            Command::Package(c) => package::run(c, &connect()?).await.map(|_| 0),
            Command::Login(a) => acl::login(a, &connect()?, &master, ca_cert, cli.token.clone())
                .await
                .map(|_| 0),
            Command::Whoami => acl::whoami(&connect()?).await.map(|_| 0),
            Command::Acl(c) => acl::run(c, &connect()?).await.map(|_| 0),
        }
    });
    // Tasks' output may still be draining to a pipe; leave promptly anyway.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
