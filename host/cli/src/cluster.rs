//! `wasmos agents`, `wasmos frameworks`, `wasmos roles`, `wasmos plugin ...`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::Value;
use wasmos_core::PluginManifest;
use wasmos_master::plugins::InstallRequest;
use wasmos_master::views::{AgentView, FrameworkView, PluginView};

use crate::client::Client;
use crate::table;

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Start a plugin: a directory NAME (or --dir) with the manifest,
    /// starting code for the world, a build script, a test and the WIT
    /// contract with the language's Wasmos library. No cluster needed.
    New {
        name: String,
        /// The plugin's world.
        #[arg(long, value_enum)]
        kind: crate::scaffold::Kind,
        #[arg(long, value_enum, default_value = "rust")]
        lang: crate::scaffold::Lang,
        /// Where (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build a plugin made by `plugin new` (its build.sh) into NAME.wasm,
    /// beside its plugin.toml, where `plugin install DIR` finds it.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// List installed plugins.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Install (or upgrade) a plugin on the running cluster.
    ///
    /// PATH is a plugin directory (plugin.toml and one .wasm), a
    /// plugin.toml, a .wasm component with plugin.toml beside it, or an OCI
    /// reference (oci://registry/repo:tag, oci+http:// without TLS) that
    /// the master pulls.
    Install {
        path: String,
        /// The component, when it is not next to the manifest (e.g. in
        /// target/wasm32-wasip2/release/).
        #[arg(long)]
        component: Option<PathBuf>,
        /// The manifest, when it is not next to the component.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Configuration overrides, KEY=VALUE (repeatable).
        #[arg(long = "config", value_parser = parse_pair)]
        config: Vec<(String, String)>,
        /// Sign a local plugin with this private key as it is uploaded
        /// (default: `wasmos up`'s key on this machine, if there is one).
        #[arg(long, env = "WASMOS_SIGNING_KEY", value_name = "PATH")]
        key: Option<PathBuf>,
        /// A local plugin's signature, made by `wasmos plugin sign`
        /// (default: the component's path with `.sig` added, if there).
        #[arg(long, value_name = "PATH")]
        signature: Option<PathBuf>,
    },
    /// Sign a plugin, so that clusters trusting the key install it.
    ///
    /// TARGET is an OCI reference (the signature is stored beside the
    /// artifact in its registry, as `cosign sign --key` does) or a local
    /// plugin as for install (the signature is written to the component's
    /// path with `.sig` added, as `cosign sign-blob` would).
    Sign {
        target: String,
        /// The private key (PKCS#8 PEM, ECDSA P-256): `wasmos plugin
        /// keygen` makes one (default: `wasmos up`'s key on this machine).
        #[arg(long, env = "WASMOS_SIGNING_KEY", value_name = "PATH")]
        key: Option<PathBuf>,
        #[arg(long)]
        component: Option<PathBuf>,
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Make a signing key pair: PREFIX.key (private, 0600) and PREFIX.pub
    /// (what a cluster trusts: `wasmos plugin trust add`).
    Keygen {
        #[arg(default_value = "wasmos-plugin")]
        prefix: PathBuf,
    },
    /// The public keys the cluster trusts to sign plugins.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Show a plugin's configuration, or change it: KEY=VALUE sets,
    /// KEY= goes back to the manifest's default. Takes effect at once.
    Config {
        name: String,
        #[arg(value_parser = parse_pair)]
        changes: Vec<(String, String)>,
    },
    /// Push a plugin to an OCI registry (as a Wasm OCI artifact).
    Push {
        /// As for install: a directory, a plugin.toml or a .wasm.
        path: PathBuf,
        /// Where: oci://registry/repository[:tag] (the tag defaults to the
        /// plugin's version), or oci+http:// for a registry without TLS.
        reference: String,
        #[arg(long)]
        component: Option<PathBuf>,
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// A plugin in detail: its manifest, health, and what its hosts saw of
    /// it (calls, latency percentiles, failures by kind, restarts, memory).
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// The lines a plugin logged through its `log` import (the last
    /// thousand its hosts kept: the leader for frameworks and placement
    /// plugins, the agents for isolators and health checks).
    Logs {
        name: String,
        /// Keep printing new lines as they come (Ctrl-C stops).
        #[arg(long, short)]
        follow: bool,
        /// Only the last N lines kept.
        #[arg(long, value_name = "N")]
        tail: Option<u64>,
    },
    /// Put back the version a plugin had before its last upgrade (its
    /// framework state and tasks stay); again, to undo the rollback.
    Rollback { name: String },
    /// Remove a plugin from the cluster.
    Remove {
        name: String,
        /// Remove a framework plugin even though it has live tasks (they
        /// are killed).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// List the trusted keys.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Trust a public key (PEM, as `wasmos plugin keygen` or cosign
    /// writes it) to sign plugins.
    Add { name: String, public_key: PathBuf },
    /// Stop trusting a key (installed plugins stay).
    Remove { name: String },
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// `wasmos agent drain|deactivate|reactivate ID`.
#[derive(Debug, Subcommand)]
pub enum AgentAction {
    /// Drain an agent for maintenance: no new tasks there, and its tasks
    /// killed (each with its kill grace period) so that their frameworks
    /// place them elsewhere; waits until none is left (DRAINED). A drain
    /// cannot be cancelled: `reactivate` the agent once it is drained.
    Drain {
        id: String,
        /// Cap every task's kill grace period at this many seconds.
        #[arg(long, value_name = "SECS")]
        max_grace_period: Option<f64>,
        /// Mark the agent gone once drained (for good: it may not come back).
        #[arg(long)]
        mark_gone: bool,
        /// Kill nothing: wait for its tasks to end on their own (batch work).
        #[arg(long, conflicts_with = "max_grace_period")]
        let_finish: bool,
        /// Return once the drain has started.
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Stop offering an agent's resources (its tasks keep running).
    Deactivate {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Put a drained or deactivated agent back in service.
    Reactivate {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn agent_action(c: &Client, a: AgentAction) -> anyhow::Result<()> {
    let (id, op, body, json, wait) = match a {
        AgentAction::Drain {
            id,
            max_grace_period,
            mark_gone,
            let_finish,
            no_wait,
            json,
        } => {
            if max_grace_period.is_some_and(|g| !g.is_finite() || g < 0.0) {
                bail!("--max-grace-period must be 0 or more seconds");
            }
            (
                id,
                "drain",
                serde_json::json!({"max_grace_period_secs": max_grace_period, "mark_gone": mark_gone, "let_finish": let_finish}),
                json,
                !no_wait,
            )
        }
        AgentAction::Deactivate { id, json } => {
            (id, "deactivate", serde_json::json!({}), json, false)
        }
        AgentAction::Reactivate { id, json } => {
            (id, "reactivate", serde_json::json!({}), json, false)
        }
    };
    let mut v: AgentView = c
        .post(&format!("/api/wasmos/v1/agents/{id}/{op}"), &body)
        .await?;
    if wait {
        let mut left = usize::MAX;
        while v
            .drain
            .as_ref()
            .is_some_and(|d| d.state == wasmos_state::DrainState::Draining)
        {
            if v.tasks != left && !json {
                eprintln!("draining agent {id}: {} tasks left…", v.tasks);
                left = v.tasks;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            v = c.get(&format!("/api/wasmos/v1/agents/{id}")).await?;
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    match op {
        "drain" if wait => println!(
            "agent {id} is drained: nothing runs there; `wasmos agent reactivate {id}` puts it back in service"
        ),
        "drain" => println!(
            "agent {id} is draining ({} tasks left); `wasmos agents` shows when it is drained",
            v.tasks
        ),
        "deactivate" => println!(
            "agent {id} is deactivated: its tasks run on, nothing new is placed there; `wasmos agent reactivate {id}` undoes it"
        ),
        _ => println!("agent {id} is back in service"),
    }
    Ok(())
}

pub async fn agents(c: &Client, json: bool) -> anyhow::Result<()> {
    let agents: Vec<AgentView> = c.get("/api/wasmos/v1/agents").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&agents)?);
        return Ok(());
    }
    if agents.is_empty() {
        eprintln!(
            "no agents have registered; start one with `wasmos agent --master {}`",
            c.base()
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let state = match (&a.drain, a.deactivated) {
                (Some(d), _) if d.state == wasmos_state::DrainState::Draining => "draining".into(),
                (Some(_), _) => "drained".into(),
                (None, true) => "deactivated".into(),
                _ if a.connected => serde_json::to_value(a.state)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                _ => "disconnected".into(),
            };
            let attrs: Vec<String> = a
                .attributes
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect();
            vec![
                a.id.to_string(),
                a.hostname.clone(),
                state,
                format!(
                    "{}/{}",
                    table::num(a.used.cpus.as_f64()),
                    table::num(a.resources.cpus.as_f64())
                ),
                format!(
                    "{}/{}",
                    table::num(a.used.mem.as_f64()),
                    table::num(a.resources.mem.as_f64())
                ),
                format!(
                    "{}/{}",
                    table::num(a.used.disk.as_f64()),
                    table::num(a.resources.disk.as_f64())
                ),
                a.tasks.to_string(),
                a.endpoint.clone(),
                attrs.join(";"),
            ]
        })
        .collect();
    table::print(
        &[
            "ID",
            "HOSTNAME",
            "STATE",
            "CPUS",
            "MEM",
            "DISK",
            "TASKS",
            "ENDPOINT",
            "ATTRIBUTES",
        ],
        &rows,
    );
    Ok(())
}

pub async fn frameworks(c: &Client, json: bool) -> anyhow::Result<()> {
    let fws: Vec<FrameworkView> = c.get("/api/wasmos/v1/frameworks").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&fws)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = fws
        .iter()
        .map(|f| {
            let kind = match &f.kind {
                wasmos_core::FrameworkKind::Plugin { plugin } => format!("plugin:{plugin}"),
                wasmos_core::FrameworkKind::External => format!("external:{}", f.name),
            };
            vec![
                f.id.to_string(),
                kind,
                f.role.clone(),
                f.health.clone().unwrap_or_else(|| {
                    if f.removed_at.is_some() {
                        "removed".into()
                    } else if f.active {
                        "active".into()
                    } else {
                        "disconnected".into()
                    }
                }),
                f.tasks.to_string(),
                table::num(f.used.cpus.as_f64()),
                table::num(f.used.mem.as_f64()),
                format!(
                    "{}{}",
                    f.offers,
                    if f.suppressed { " (suppressed)" } else { "" }
                ),
            ]
        })
        .collect();
    table::print(
        &[
            "ID", "KIND", "ROLE", "HEALTH", "TASKS", "CPUS", "MEM", "OFFERS",
        ],
        &rows,
    );
    for f in fws.iter().filter(|f| f.last_error.is_some()) {
        eprintln!(
            "last error of {}: {}",
            f.id,
            f.last_error.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// The one file with `ext` in `dir`.
fn only_file(dir: &Path, ext: &str) -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!(
            "no .{ext} file in {}; name it with --{}",
            dir.display(),
            if ext == "wasm" {
                "component"
            } else {
                "manifest"
            }
        ),
        _ => bail!(
            "several .{ext} files in {}; name one with --{}",
            dir.display(),
            if ext == "wasm" {
                "component"
            } else {
                "manifest"
            }
        ),
    }
}

/// Finds the manifest and the component from what the user gave.
pub(crate) fn locate(
    path: &Path,
    component: Option<PathBuf>,
    manifest: Option<PathBuf>,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    let (m, c) = if path.is_dir() {
        let m = manifest.unwrap_or_else(|| path.join("plugin.toml"));
        let c = match component {
            Some(c) => c,
            None => only_file(path, "wasm")?,
        };
        (m, c)
    } else if path.extension().is_some_and(|e| e == "wasm") {
        let dir = path.parent().unwrap_or(Path::new("."));
        (
            manifest.unwrap_or_else(|| dir.join("plugin.toml")),
            path.to_path_buf(),
        )
    } else {
        let dir = path.parent().unwrap_or(Path::new("."));
        let c = match component {
            Some(c) => c,
            None => only_file(dir, "wasm")?,
        };
        (path.to_path_buf(), c)
    };
    if !m.exists() {
        bail!("no manifest at {}; give one with --manifest", m.display());
    }
    Ok((m, c))
}

fn mib(n: usize) -> String {
    format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
}

pub async fn plugin(cmd: PluginCommand, c: &Client) -> anyhow::Result<()> {
    match cmd {
        // (main.rs runs these two before connecting: they need no cluster.)
        PluginCommand::New {
            name,
            kind,
            lang,
            dir,
        } => crate::scaffold::new(&name, kind, lang, dir.as_deref()),
        PluginCommand::Build { dir } => crate::scaffold::build(&dir),
        PluginCommand::List { json } => {
            let plugins: Vec<PluginView> = c.get("/api/wasmos/v1/plugins").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&plugins)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = plugins
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.kind.to_string(),
                        p.version.clone(),
                        p.health.clone().unwrap_or_else(|| "-".into()),
                        p.source.clone(),
                        p.signed_by.clone().unwrap_or_else(|| {
                            if p.source == "bundled" {
                                "(bundled)".into()
                            } else {
                                "unsigned".into()
                            }
                        }),
                        p.digest.chars().take(19).collect(),
                    ]
                })
                .collect();
            table::print(
                &[
                    "NAME",
                    "KIND",
                    "VERSION",
                    "HEALTH",
                    "SOURCE",
                    "SIGNED BY",
                    "DIGEST",
                ],
                &rows,
            );
            for p in plugins.iter().filter(|p| p.last_error.is_some()) {
                eprintln!(
                    "last error of {}: {}",
                    p.name,
                    p.last_error.as_deref().unwrap_or("")
                );
            }
            Ok(())
        }
        PluginCommand::Install {
            path,
            component,
            manifest,
            config,
            key,
            signature,
        } => {
            if path.starts_with("oci://") || path.starts_with("oci+http://") {
                let r: wasmos_oci::Reference = path.parse()?;
                if signature.is_some() {
                    bail!(
                        "--signature: a plugin from a registry is signed there; sign it with `wasmos plugin sign {r}`"
                    );
                }
                eprintln!("the master pulls {r} and checks it and its signature…");
                let req = InstallRequest {
                    from: Some(r.to_string()),
                    config: config.into_iter().collect(),
                    ..Default::default()
                };
                let v: PluginView = c.post("/api/wasmos/v1/plugins", &req).await?;
                println!(
                    "installed {} {} ({}) from {}",
                    v.name, v.version, v.kind, v.source
                );
                upgrade_hint(&v);
                return Ok(());
            }
            let (manifest, bytes, cpath) = read_plugin(Path::new(&path), component, manifest)?;
            let signature = upload_signature(&manifest, &bytes, &cpath, key, signature)?;
            eprintln!(
                "uploading {} {} ({}, {}); the master checks it against the {} world…",
                manifest.name,
                manifest.version,
                cpath.display(),
                mib(bytes.len()),
                manifest.kind
            );
            let req = InstallRequest {
                manifest: Some(manifest),
                component: Some(bytes),
                from: None,
                config: config.into_iter().collect(),
                source: cpath.display().to_string(),
                signature,
            };
            // Straight to the leader: a follower's redirect would come
            // before the upload was read.
            let v: PluginView = c
                .at_leader()
                .await?
                .post("/api/wasmos/v1/plugins", &req)
                .await?;
            println!(
                "installed {} {} ({}), {}, signed by {}",
                v.name,
                v.version,
                v.kind,
                v.digest,
                v.signed_by.as_deref().unwrap_or("-")
            );
            upgrade_hint(&v);
            Ok(())
        }
        PluginCommand::Show { name, json } => {
            let v: PluginView = c.get(&format!("/api/wasmos/v1/plugins/{name}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            print!("{}", show_plugin(&v));
            Ok(())
        }
        PluginCommand::Logs { name, follow, tail } => {
            let mut after = 0u64;
            let mut first = true;
            loop {
                let mut path = format!("/api/wasmos/v1/plugins/{name}/logs?after={after}");
                if first && let Some(n) = tail {
                    path.push_str(&format!("&tail={n}"));
                }
                if follow && !first {
                    path.push_str("&wait=25");
                }
                let lines: Vec<wasmos_core::plugin::PluginLogLine> = c.get(&path).await?;
                for l in &lines {
                    println!("{}", log_line(l));
                    after = after.max(l.seq);
                }
                if !follow {
                    return Ok(());
                }
                first = false;
            }
        }
        PluginCommand::Rollback { name } => {
            let v: PluginView = c
                .post(
                    &format!("/api/wasmos/v1/plugins/{name}/rollback"),
                    &serde_json::json!({}),
                )
                .await?;
            println!(
                "rolled {} back to {} ({}, {})",
                v.name, v.version, v.kind, v.digest
            );
            if let Some(prev) = &v.previous_version {
                eprintln!(
                    "`wasmos plugin rollback {}` again returns to {prev}",
                    v.name
                );
            }
            Ok(())
        }
        PluginCommand::Sign {
            target,
            key,
            component,
            manifest,
        } => {
            let (key, key_path) = signing_key(key)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "--key: give the private key to sign with (or WASMOS_SIGNING_KEY); `wasmos plugin keygen` makes one"
                )
            })?;
            if target.starts_with("oci://") || target.starts_with("oci+http://") {
                let r: wasmos_oci::Reference = target.parse()?;
                let client = registry_client()?;
                eprintln!("reading {r}…");
                let pulled = wasmos_oci::pull(&client, &r).await?;
                let pinned = r.pinned(&pulled.digest);
                wasmos_oci::sign::sign_artifact(&client, &r, &pulled.digest, &key).await?;
                println!(
                    "signed {} {} at {pinned} with {} ({}); the signature is under the tag {}",
                    pulled.manifest.name,
                    pulled.manifest.version,
                    key_path.display(),
                    key.public().fingerprint(),
                    wasmos_oci::sign::signature_tag(&pulled.digest)
                );
                return Ok(());
            }
            let (manifest, bytes, cpath) = read_plugin(Path::new(&target), component, manifest)?;
            // What is signed: the manifest and the component's digest.
            let statement = wasmos_oci::sign::upload_statement(&manifest, &bytes);
            let (out, stated) = (sig_path(&cpath, "sig"), sig_path(&cpath, "statement.json"));
            std::fs::write(&stated, &statement)
                .with_context(|| format!("cannot write {}", stated.display()))?;
            std::fs::write(&out, key.sign(&statement) + "\n")
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "signed {} {} ({}) with {} ({}): {} (of {}, the manifest and the component's digest)",
                manifest.name,
                manifest.version,
                cpath.display(),
                key_path.display(),
                key.public().fingerprint(),
                out.display(),
                stated.display()
            );
            Ok(())
        }
        PluginCommand::Keygen { prefix } => {
            let (private, public) = (sig_path(&prefix, "key"), sig_path(&prefix, "pub"));
            for p in [&private, &public] {
                if p.exists() {
                    bail!(
                        "{} exists; give another PREFIX, or remove it first",
                        p.display()
                    );
                }
            }
            let key = crate::daemon::write_plugin_key(&private, &public)?;
            println!(
                "wrote {} (keep it secret) and {} ({})",
                private.display(),
                public.display(),
                key.fingerprint()
            );
            eprintln!(
                "a cluster trusts it with `wasmos plugin trust add NAME {}`; sign with `wasmos plugin sign TARGET --key {}`",
                public.display(),
                private.display()
            );
            Ok(())
        }
        PluginCommand::Trust(cmd) => trust(cmd, c).await,
        PluginCommand::Push {
            path,
            reference,
            component,
            manifest,
        } => {
            let r: wasmos_oci::Reference = reference.parse()?;
            let (manifest, bytes, cpath) = read_plugin(&path, component, manifest)?;
            eprintln!(
                "pushing {} {} ({}, {}) to {r}…",
                manifest.name,
                manifest.version,
                cpath.display(),
                mib(bytes.len())
            );
            let client = registry_client()?;
            let digest = wasmos_oci::push(&client, &r, &manifest, &bytes).await?;
            println!(
                "pushed {} {} to {}",
                manifest.name,
                manifest.version,
                r.pinned(&digest)
            );
            Ok(())
        }
        PluginCommand::Config { name, changes } => {
            let v: PluginView = if changes.is_empty() {
                c.get(&format!("/api/wasmos/v1/plugins/{name}")).await?
            } else {
                let body: BTreeMap<String, Value> = changes
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k,
                            if v.is_empty() {
                                Value::Null
                            } else {
                                Value::String(v)
                            },
                        )
                    })
                    .collect();
                c.patch(&format!("/api/wasmos/v1/plugins/{name}/config"), &body)
                    .await?
            };
            for (k, v) in &v.config {
                println!("{k}={v}");
            }
            Ok(())
        }
        PluginCommand::Remove { name, force } => {
            let path = format!(
                "/api/wasmos/v1/plugins/{name}{}",
                if force { "?force=true" } else { "" }
            );
            c.delete_empty(&path).await?;
            println!("removed {name}");
            Ok(())
        }
    }
}

/// `plugin show`'s text.
fn show_plugin(v: &PluginView) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{} {} ({})", v.name, v.version, v.kind);
    if !v.description.is_empty() {
        let _ = writeln!(out, "  {}", v.description);
    }
    let _ = writeln!(
        out,
        "health:   {}",
        v.health.as_deref().unwrap_or("not running")
    );
    if let Some(e) = &v.last_error {
        let _ = writeln!(out, "last error: {e}");
    }
    let _ = writeln!(out, "digest:   {} ({})", v.digest, mib(v.size));
    let _ = writeln!(out, "source:   {}", v.source);
    let _ = writeln!(
        out,
        "signed by: {}",
        v.signed_by.as_deref().unwrap_or("(bundled)")
    );
    if let Some(p) = &v.previous_version {
        let _ = writeln!(out, "previous: {p} (`wasmos plugin rollback {}`)", v.name);
    }
    for (k, val) in &v.config {
        let _ = writeln!(out, "config:   {k}={val}");
    }
    match &v.stats {
        None => {
            let _ = writeln!(out, "calls:    none yet");
        }
        Some(s) => {
            let _ = writeln!(
                out,
                "calls:    {} (p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms)",
                s.calls, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
            );
            let failed: Vec<String> = s.failures.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(
                out,
                "failures: {}",
                if failed.is_empty() {
                    "none".to_string()
                } else {
                    failed.join(", ")
                }
            );
            let _ = writeln!(
                out,
                "restarts: {} ({} instances built)",
                s.instances.saturating_sub(1),
                s.instances
            );
            let _ = writeln!(
                out,
                "memory:   {} at most",
                mib(s.memory_high_water as usize)
            );
        }
    }
    out
}

/// One log line as `plugin logs` prints it.
fn log_line(l: &wasmos_core::plugin::PluginLogLine) -> String {
    let at = jiff::Timestamp::from_millisecond(l.at_ms as i64)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|_| l.at_ms.to_string());
    match &l.agent {
        Some(a) => format!(
            "{at} {:5} [agent {a}] {}",
            l.level.to_uppercase(),
            l.message
        ),
        None => format!("{at} {:5} {}", l.level.to_uppercase(), l.message),
    }
}

/// After an install: what it replaced, and how to undo it.
fn upgrade_hint(v: &PluginView) {
    if let Some(prev) = &v.previous_version {
        eprintln!(
            "it replaced version {prev}; `wasmos plugin rollback {}` puts that back",
            v.name
        );
    }
}

pub(crate) fn registry_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(300))
        .build()?)
}

/// `path` with `.ext` added (not replacing an extension): where a local
/// component's signature is kept (`x.wasm.sig`), a key pair's files.
fn sig_path(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// The signing key: `--key` (or WASMOS_SIGNING_KEY), else `wasmos up`'s
/// on this machine, if there is one.
fn signing_key(
    flag: Option<PathBuf>,
) -> anyhow::Result<Option<(wasmos_oci::sign::SigningKey, PathBuf)>> {
    let path = match flag {
        Some(p) => p,
        None => {
            let p = crate::default_data_dir().join(crate::daemon::PLUGIN_KEY);
            if !p.exists() {
                return Ok(None);
            }
            p
        }
    };
    let pem = std::fs::read_to_string(&path)
        .with_context(|| format!("--key: cannot read {}", path.display()))?;
    let key = wasmos_oci::sign::SigningKey::from_pem(&pem, &path.display().to_string())?;
    Ok(Some((key, path)))
}

/// The signature a local plugin is uploaded with: `--signature`, else
/// signed now with `--key`, else the `.sig` beside the component, else
/// signed with `wasmos up`'s key; none if there is none of these (the
/// master then says how to sign).
fn upload_signature(
    manifest: &PluginManifest,
    bytes: &[u8],
    component: &Path,
    key: Option<PathBuf>,
    signature: Option<PathBuf>,
) -> anyhow::Result<Option<String>> {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .with_context(|| format!("--signature: cannot read {}", p.display()))
    };
    if let Some(p) = signature {
        return read(&p).map(Some);
    }
    let beside = sig_path(component, "sig");
    if key.is_none() && beside.exists() {
        eprintln!("with the signature in {}", beside.display());
        return read(&beside).map(Some);
    }
    Ok(signing_key(key)?.map(|(k, path)| {
        eprintln!("signing with {}", path.display());
        k.sign(&wasmos_oci::sign::upload_statement(manifest, bytes))
    }))
}

async fn trust(cmd: TrustCommand, c: &Client) -> anyhow::Result<()> {
    match cmd {
        TrustCommand::List { json } => {
            let keys: Value = c.get("/api/wasmos/v1/plugin-keys").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = keys
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|k| {
                    ["name", "fingerprint", "added_by"]
                        .iter()
                        .map(|f| k[f].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .collect();
            if rows.is_empty() {
                eprintln!(
                    "the cluster trusts no signing keys, so no plugin installs; add one with `wasmos plugin trust add NAME KEY.pub`"
                );
            }
            table::print(&["NAME", "FINGERPRINT", "ADDED BY"], &rows);
            Ok(())
        }
        TrustCommand::Add { name, public_key } => {
            let pem = std::fs::read_to_string(&public_key)
                .with_context(|| format!("cannot read {}", public_key.display()))?;
            let k: Value = c
                .post(
                    "/api/wasmos/v1/plugin-keys",
                    &serde_json::json!({ "name": name, "public_key": pem }),
                )
                .await?;
            println!(
                "the cluster trusts {} ({}) to sign plugins",
                k["name"].as_str().unwrap_or(&name),
                k["fingerprint"].as_str().unwrap_or("")
            );
            Ok(())
        }
        TrustCommand::Remove { name } => {
            c.delete_empty(&format!("/api/wasmos/v1/plugin-keys/{name}"))
                .await?;
            println!("the cluster no longer trusts {name}; installed plugins stay");
            Ok(())
        }
    }
}

/// Reads and checks a plugin's manifest and component from disk.
fn read_plugin(
    path: &Path,
    component: Option<PathBuf>,
    manifest: Option<PathBuf>,
) -> anyhow::Result<(PluginManifest, Vec<u8>, PathBuf)> {
    let (mpath, cpath) = locate(path, component, manifest)?;
    let text = std::fs::read_to_string(&mpath)
        .with_context(|| format!("cannot read {}", mpath.display()))?;
    let manifest: PluginManifest =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", mpath.display()))?;
    manifest
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", mpath.display()))?;
    let bytes =
        std::fs::read(&cpath).with_context(|| format!("cannot read {}", cpath.display()))?;
    Ok((manifest, bytes, cpath))
}

#[derive(Debug, Subcommand)]
pub enum MastersCommand {
    /// List the masters, who leads, and the ids retired for good.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Add a master to the running cluster: ID=URL, e.g. 4=http://10.0.0.4:5050.
    /// Start it first with `wasmos master --id 4 --join ...`; it catches up
    /// as a learner, then votes.
    Add {
        // Not named `master`: that is the global --master.
        #[arg(value_name = "ID=URL")]
        member: String,
    },
    /// Remove a master for good; its id is never used again.
    Remove { id: u64 },
}

pub async fn masters(cmd: MastersCommand, c: &Client) -> anyhow::Result<()> {
    match cmd {
        MastersCommand::List { json } => {
            let mut v: Value = c.get("/api/wasmos/v1/masters").await?;
            // Only the leader knows how far each member has caught up.
            if v["this_master"]["state"] != "Leader"
                && let Some(addr) = v["leader"]["address"].as_str()
                && let Ok(from_leader) = c.at(addr).get::<Value>("/api/wasmos/v1/masters").await
            {
                v = from_leader;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v["masters"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|m| {
                            let ack = match m["last_ack_ms"].as_u64() {
                                Some(0) => "-".to_string(),
                                Some(ms) if ms < 10_000 => format!("{ms} ms ago"),
                                Some(ms) => format!("{} s ago", ms / 1000),
                                None => "never".to_string(),
                            };
                            vec![
                                m["id"].to_string(),
                                m["address"].as_str().unwrap_or("").to_string(),
                                m["role"].as_str().unwrap_or("").to_string(),
                                m["matched_index"]
                                    .as_u64()
                                    .map_or("?".into(), |i| i.to_string()),
                                ack,
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            table::print(&["ID", "ADDRESS", "ROLE", "LOG INDEX", "LAST HEARD"], &rows);
            let t = &v["this_master"];
            println!(
                "term {}; committed {}, applied {} (as master {} sees it)",
                v["term"], t["committed"], t["applied"], t["id"]
            );
            if let Some(r) = v["retired"].as_array()
                && !r.is_empty()
            {
                let ids: Vec<String> = r.iter().map(|x| x.to_string()).collect();
                println!("retired ids (never reused): {}", ids.join(", "));
            }
        }
        MastersCommand::Add { member } => {
            // The scheme of the masters this CLI talks to, unless given.
            let scheme = if c.base().starts_with("http://") {
                "http"
            } else {
                "https"
            };
            let peers = crate::daemon::parse_peers(&member, scheme).map_err(|e| {
                anyhow::anyhow!("{}", e.to_string().replace("--peers", "masters add"))
            })?;
            let Some((id, address)) = peers.into_iter().next().filter(|_| !member.contains(','))
            else {
                bail!("masters add: give one master as ID=URL");
            };
            eprintln!("adding master {id} at {address}: it catches up with the log, then votes…");
            let _: Value = c
                .post(
                    "/api/wasmos/v1/masters",
                    &serde_json::json!({ "id": id, "address": address }),
                )
                .await?;
            println!("master {id} added");
        }
        MastersCommand::Remove { id } => {
            c.delete_empty(&format!("/api/wasmos/v1/masters/{id}"))
                .await?;
            println!("master {id} removed; id {id} is retired");
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct RolesArgs {
    #[command(subcommand)]
    command: Option<RolesCommand>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum RolesCommand {
    /// Set a role's weight and/or quota.
    Set {
        /// The role, e.g. `eng` or `eng/batch`.
        role: String,
        /// Its weight in fair sharing (default 1): a role weighing 2 gets
        /// twice the share of one weighing 1.
        #[arg(long)]
        weight: Option<f64>,
        /// Resources it is guaranteed, e.g. `cpus:2;mem:4096` (held back from
        /// other roles until it has them).
        #[arg(long)]
        guarantee: Option<String>,
        /// The most it may hold, e.g. `cpus:8` (resources not named are not
        /// limited).
        #[arg(long)]
        limit: Option<String>,
        /// Remove its quota (guarantee and limit).
        #[arg(long, conflicts_with_all = ["guarantee", "limit"])]
        no_quota: bool,
    },
}

/// `cpus:2;mem:4096` as quota amounts.
fn quota_amounts(flag: &str, s: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, value)) = part.split_once(':') else {
            bail!("{flag} {s:?}: expected name:amount pairs like cpus:2;mem:4096");
        };
        let v: f64 = value
            .trim()
            .parse()
            .with_context(|| format!("{flag} {s:?}: {value:?} is not a number"))?;
        out.insert(name.trim().to_string(), v);
    }
    Ok(out)
}

fn show_amounts(m: &BTreeMap<String, f64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}:{}", table::num(*v)))
        .collect::<Vec<_>>()
        .join(";")
}

pub async fn roles(a: RolesArgs, c: &Client) -> anyhow::Result<()> {
    if let Some(RolesCommand::Set {
        role,
        weight,
        guarantee,
        limit,
        no_quota,
    }) = a.command
    {
        let mut body = serde_json::Map::new();
        if let Some(w) = weight {
            body.insert("weight".into(), serde_json::json!(w));
        }
        if guarantee.is_some() || limit.is_some() || no_quota {
            let g = guarantee
                .as_deref()
                .map(|g| quota_amounts("--guarantee", g))
                .transpose()?
                .unwrap_or_default();
            let l = limit
                .as_deref()
                .map(|l| quota_amounts("--limit", l))
                .transpose()?
                .unwrap_or_default();
            body.insert(
                "quota".into(),
                serde_json::json!({"guarantees": g, "limits": l}),
            );
        }
        if body.is_empty() {
            bail!("give --weight, --guarantee/--limit, or --no-quota");
        }
        let path = format!("/api/wasmos/v1/roles/{role}");
        let v: Value = c.put(&path, &Value::Object(body)).await?;
        println!(
            "role {role}: weight {}, guarantee {}, limit {}",
            v["weight"],
            show_amounts(
                &serde_json::from_value(v["quota"]["guarantees"].clone()).unwrap_or_default()
            ),
            show_amounts(&serde_json::from_value(v["quota"]["limits"].clone()).unwrap_or_default()),
        );
        return Ok(());
    }
    let roles: Vec<wasmos_master::roles::RoleView> = c.get("/api/wasmos/v1/roles").await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&roles)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = roles
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                table::num(r.weight),
                show_amounts(&r.quota.guarantees),
                show_amounts(&r.quota.limits),
                r.frameworks.len().to_string(),
                table::num(r.allocated.cpus.as_f64()),
                table::num(r.allocated.mem.as_f64()),
                if r.reserved.is_empty() {
                    "-".into()
                } else {
                    format!(
                        "cpus:{};mem:{};disk:{}",
                        table::num(r.reserved.cpus.as_f64()),
                        table::num(r.reserved.mem.as_f64()),
                        table::num(r.reserved.disk.as_f64())
                    )
                },
                r.volumes.to_string(),
            ]
        })
        .collect();
    table::print(
        &[
            "ROLE",
            "WEIGHT",
            "GUARANTEE",
            "LIMIT",
            "FRAMEWORKS",
            "CPUS",
            "MEM",
            "RESERVED",
            "VOLUMES",
        ],
        &rows,
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct QuotaArgs {
    /// The role whose quota to set; without it, list every role's.
    role: Option<String>,
    /// Resources it is guaranteed, e.g. `cpus:2;mem:4096`.
    #[arg(long, requires = "role")]
    guarantee: Option<String>,
    /// The most it may hold, e.g. `cpus:8`.
    #[arg(long, requires = "role")]
    limit: Option<String>,
    /// Remove its quota.
    #[arg(long, requires = "role", conflicts_with_all = ["guarantee", "limit"])]
    remove: bool,
}

/// `wasmos quota [ROLE --guarantee ... --limit ... | --remove]`: the quota
/// part of `wasmos roles`.
pub async fn quota(a: QuotaArgs, c: &Client) -> anyhow::Result<()> {
    let command = match a.role {
        None => None,
        Some(role) => {
            if a.guarantee.is_none() && a.limit.is_none() && !a.remove {
                bail!("give --guarantee and/or --limit, or --remove, to change {role}'s quota");
            }
            Some(RolesCommand::Set {
                role,
                weight: None,
                guarantee: a.guarantee,
                limit: a.limit,
                no_quota: a.remove,
            })
        }
    };
    roles(
        RolesArgs {
            command,
            json: false,
        },
        c,
    )
    .await
}
