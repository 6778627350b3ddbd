//! `wasmos simulate`: try placement plugins and workloads on a simulated
//! cluster, offline, in virtual time (`wasmos_master::simulate`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use wasmos_master::simulate::{self, AgentGroup, Options, PluginFile, Report, Workload};

use crate::table;

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The agents: a JSON list of groups, e.g. `[{"count": 100,
    /// "hostname": "r1-h{i}", "attributes": {"rack": "r1"}, "cpus": 16,
    /// "mem": 65536}]` (`{i}` is the agent's number in its group).
    #[arg(long)]
    agents: PathBuf,
    /// The workload: `{"apps": [{"at": 0, "runSeconds": 600, "app": {...}}]}`,
    /// each app a Marathon app definition arriving `at` seconds in, its
    /// tasks ending after `runSeconds` (absent: never).
    #[arg(long)]
    workload: PathBuf,
    /// A placement plugin to try besides the bundled `constraints`: a
    /// directory (plugin.toml and one .wasm), a plugin.toml, or a .wasm with
    /// plugin.toml beside it (repeatable).
    #[arg(long = "plugin")]
    plugins: Vec<PathBuf>,
    /// Virtual seconds to simulate.
    #[arg(long, default_value_t = 300.0)]
    duration: f64,
    /// Virtual seconds between allocation cycles.
    #[arg(long, default_value_t = 1.0)]
    cycle: f64,
    /// Write every decision record (JSON, one per line) to this file.
    #[arg(long)]
    decisions: Option<PathBuf>,
    /// Print the whole report as JSON.
    #[arg(long)]
    json: bool,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &PathBuf, what: &str) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{what} file {}", path.display()))
}

pub fn run(a: SimulateArgs) -> anyhow::Result<u8> {
    let agents: Vec<AgentGroup> = read_json(&a.agents, "agents")?;
    let workload: Workload = read_json(&a.workload, "workload")?;
    let bundled = |name: &str| -> anyhow::Result<PluginFile> {
        let p = wasmos_bundled::all()
            .into_iter()
            .find(|p| p.manifest.name == name)
            .with_context(|| format!("this binary carries no {name} plugin"))?;
        Ok(PluginFile {
            manifest: p.manifest,
            component: p.component.to_vec(),
        })
    };
    let mut placement = vec![bundled("constraints")?];
    for path in &a.plugins {
        let (m, c) = crate::cluster::locate(path, None, None)?;
        let manifest: wasmos_core::PluginManifest = toml::from_str(
            &std::fs::read_to_string(&m).with_context(|| format!("cannot read {}", m.display()))?,
        )
        .with_context(|| format!("{} is not a plugin manifest", m.display()))?;
        manifest
            .validate()
            .map_err(|e| anyhow::anyhow!("{}: {e}", m.display()))?;
        if placement.iter().any(|p| p.manifest.name == manifest.name) {
            bail!(
                "two placement plugins are named {}; rename one in its plugin.toml",
                manifest.name
            );
        }
        let component =
            std::fs::read(&c).with_context(|| format!("cannot read {}", c.display()))?;
        placement.push(PluginFile {
            manifest,
            component,
        });
    }
    let opts = Options {
        duration_secs: a.duration,
        cycle_secs: a.cycle,
        ..Options::default()
    };
    let report = simulate::run(
        &agents,
        workload,
        &bundled("marathon")?,
        placement,
        opts,
        &mut |line| eprintln!("{line}"),
    )?;
    if let Some(path) = &a.decisions {
        let mut out = String::new();
        for d in &report.decisions {
            out.push_str(&serde_json::to_string(d)?);
            out.push('\n');
        }
        std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report, a.decisions.as_ref());
    }
    Ok(0)
}

fn print(r: &Report, decisions: Option<&PathBuf>) {
    println!(
        "simulated {}s in {:.1}s ({}x real time): {} agents; placement plugins: {}",
        table::num(r.virtual_seconds),
        r.wall_seconds,
        table::num((r.virtual_seconds / r.wall_seconds.max(1e-3)).round()),
        r.agents,
        r.plugins.join(", ")
    );
    for refused in &r.refused_apps {
        println!("refused: {refused}");
    }
    for f in &r.plugin_failures {
        println!("marathon failed: {f}");
    }
    println!();
    let rows: Vec<Vec<String>> = r
        .apps
        .iter()
        .map(|a| {
            vec![
                a.id.clone(),
                format!("{} / {}", a.running, a.instances),
                a.hosts.to_string(),
                a.finished.to_string(),
                a.waiting.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table::print(
        &["APP", "RUNNING", "HOSTS", "FINISHED", "WHY WAITING"],
        &rows,
    );
    let u = &r.utilisation;
    let pct = |x: f64, of: f64| if of > 0.0 { 100.0 * x / of } else { 0.0 };
    println!();
    println!(
        "utilisation: cpus {} of {} ({:.1}%), mem {} of {} MB ({:.1}%); peak cpus {}, mem {} MB",
        table::num(u.cpus_used),
        table::num(u.cpus_total),
        pct(u.cpus_used, u.cpus_total),
        table::num(u.mem_used),
        table::num(u.mem_total),
        pct(u.mem_used, u.mem_total),
        table::num(u.peak_cpus_used),
        table::num(u.peak_mem_used)
    );
    let f = &r.fragmentation;
    println!(
        "fragmentation: {} of {} free cpus ({:.1}%) and {} of {} free MB are stranded (no app's instance fits there); {} agents partly used",
        table::num(f.stranded_cpus),
        table::num(f.free_cpus),
        pct(f.stranded_cpus, f.free_cpus),
        table::num(f.stranded_mem),
        table::num(f.free_mem),
        f.partly_used_agents
    );
    let mut hosts: std::collections::BTreeMap<&str, usize> = Default::default();
    for p in &r.placements {
        *hosts.entry(p.hostname.as_str()).or_default() += 1;
    }
    println!(
        "placements: {} launches on {} agents{}",
        r.placements.len(),
        hosts.len(),
        match decisions {
            Some(p) => format!("; decision records in {}", p.display()),
            None =>
                "; --decisions FILE keeps every decision record, --json the whole report".into(),
        }
    );
}
