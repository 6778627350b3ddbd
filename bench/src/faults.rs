//! `wasmos-bench faults`: a long fault run — masters and agents on hosts
//! of their own (network namespaces), clients recording a history while a
//! seeded nemesis kills, pauses, partitions, loses and duplicates, then the
//! checker (see the `wasmos-faults` crate). The same seed replays the same
//! faults; exits 1 on any violation.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct FaultsArgs {
    /// The seed of the fault schedule and of the clients' choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long faults go on.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// How long faults go on, in seconds (instead of --minutes: the
    /// suite's short run is `--seed 478888 --seconds 90`).
    #[arg(long)]
    seconds: Option<u64>,
    #[arg(long, default_value_t = 3)]
    masters: usize,
    #[arg(long, default_value_t = 2)]
    agents: usize,
    /// Registers (variables) the register clients share.
    #[arg(long, default_value_t = 3)]
    registers: usize,
    #[arg(long, default_value_t = 4)]
    register_clients: usize,
    #[arg(long, default_value_t = 1)]
    task_clients: usize,
    /// Clients creating, scaling, deploying, restarting and deleting
    /// Marathon apps.
    #[arg(long, default_value_t = 1)]
    marathon_clients: usize,
    /// A Python with pymesos, for the external framework (default: the
    /// one `./dev test` makes, `target/pymesos/bin/python`, if it is
    /// there; without one the run has no external framework).
    #[arg(long)]
    pymesos_python: Option<PathBuf>,
    /// The masters' --election-timeout-ms.
    #[arg(long, default_value_t = 1000)]
    election_timeout_ms: u64,
    /// Where the run's data, logs and history go (kept); default a new
    /// directory under /var/tmp.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The wasmos binary (default: the one next to this one).
    #[arg(long)]
    pub wasmos: Option<PathBuf>,
}

pub async fn run(a: FaultsArgs, wasmos: PathBuf) -> anyhow::Result<()> {
    let dir = match a.dir {
        Some(d) => d,
        None => {
            std::fs::create_dir_all("/var/tmp")?;
            tempfile::Builder::new()
                .prefix(&format!("wasmos-faults-{}-", a.seed))
                .tempdir_in("/var/tmp")?
                .keep()
        }
    };
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = a
        .pymesos_python
        .or_else(|| Some(repo.join("target/pymesos/bin/python")).filter(|p| p.exists()));
    if python.is_none() {
        eprintln!(
            "no Python with pymesos (run ./dev test once, or pass --pymesos-python): the run has no external framework"
        );
    }
    let cfg = wasmos_faults::Config {
        setup: wasmos_faults::Setup {
            wasmos,
            dir,
            masters: a.masters,
            agents: a.agents,
            election_timeout_ms: a.election_timeout_ms,
            plugin_cache: None,
            tag: (std::process::id() % 60_000) as u16,
            disk_mib: 1024,
        },
        seed: a.seed,
        faults_for: Duration::from_secs(a.seconds.unwrap_or(a.minutes * 60)),
        registers: a.registers,
        register_clients: a.register_clients,
        task_clients: a.task_clients,
        marathon_clients: a.marathon_clients,
        pymesos: python.map(|python| wasmos_faults::framework::Pymesos {
            python,
            script: repo.join("tests/clients/pymesos_scheduler.py"),
        }),
        heal_within: Duration::from_secs(90),
    };
    let report = wasmos_faults::run(cfg, |s| eprintln!("{s}")).await?;
    println!("{report}");
    if !report.violations.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
