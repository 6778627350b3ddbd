//! `wasmos package ...`: the package catalogue, through the masters'
//! Cosmos API (`/package/...`), as `dcos package` drives it.

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::Client;
use crate::table;

#[derive(Debug, Subcommand)]
pub enum PackageCommand {
    /// Find packages by name, description or tag (`*` is a wildcard); all without a query.
    Search {
        query: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show a package: its description, versions, options (with defaults) and notes.
    Describe {
        name: String,
        #[arg(long)]
        package_version: Option<String>,
        /// Print what the package would make with these options (its app, job, plugins), instead.
        #[arg(long, value_name = "FILE")]
        options: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Install a package: its options are checked against its schema first.
    Install {
        name: String,
        #[arg(long)]
        package_version: Option<String>,
        /// A JSON file of options (defaults fill what it leaves out).
        #[arg(long, value_name = "FILE")]
        options: Option<std::path::PathBuf>,
        /// The app's id instead of the package's own.
        #[arg(long)]
        app_id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove what a package installed.
    Uninstall {
        name: String,
        /// Which installation, when there are several.
        #[arg(long)]
        app_id: Option<String>,
        /// Every installation of the package.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// List installed packages.
    List {
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Package repositories: add, list, remove.
    #[command(subcommand)]
    Repo(RepoCommand),
}

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Add a repository: `file:///dir` (Universe's source layout),
    /// `file:///path/repo.json` or `https://host/repo` (a Universe index).
    Add {
        name: String,
        uri: String,
        /// Its place in the list (0 first; packages of earlier ones win).
        #[arg(long)]
        index: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Remove {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Publish a directory in Universe's source layout as an index to an
    /// OCI registry (`oci://registry/repository[:tag]`, `oci+http://` for
    /// one without TLS), for `repo add NAME oci://...`.
    Push {
        dir: std::path::PathBuf,
        reference: String,
    },
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn read_options(path: Option<&std::path::Path>) -> anyhow::Result<Option<Value>> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--options: cannot read {}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("--options: {} is not JSON", path.display()))?;
    if !v.is_object() {
        anyhow::bail!("--options: {} must hold a JSON object", path.display());
    }
    Ok(Some(v))
}

/// A string field of a JSON answer ("" when absent).
fn text(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

/// A table of the rows of list `key` of `v`, or `empty` on stderr.
fn print_rows(
    v: &Value,
    key: &str,
    headers: &[&str],
    row: impl Fn(usize, &Value) -> Vec<String>,
    empty: &str,
) {
    let rows: Vec<Vec<String>> = v[key]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, x)| row(i, x))
        .collect();
    if rows.is_empty() {
        eprintln!("{empty}");
    } else {
        table::print(headers, &rows);
    }
}

pub async fn run(cmd: PackageCommand, c: &Client) -> anyhow::Result<()> {
    match cmd {
        PackageCommand::Search { query, json } => {
            let v: Value = c
                .post(
                    "/package/search",
                    &json!({ "query": query.unwrap_or_default() }),
                )
                .await?;
            if json {
                return print_json(&v);
            }
            print_rows(
                &v,
                "packages",
                &["NAME", "VERSION", "SELECTED", "FRAMEWORK", "DESCRIPTION"],
                |_, p| {
                    vec![
                        text(&p["name"]),
                        text(&p["currentVersion"]),
                        if p["selected"] == true { "yes" } else { "" }.to_string(),
                        p["framework"].to_string(),
                        text(&p["description"]),
                    ]
                },
                "no package matches; `wasmos package repo list` shows where packages come from",
            );
        }
        PackageCommand::Describe {
            name,
            package_version,
            options,
            json,
        } => {
            let req = json!({"packageName": name, "packageVersion": package_version});
            if options.is_some() {
                let mut req = req;
                req["options"] = read_options(options.as_deref())?.unwrap_or(json!({}));
                let v: Value = c.post("/package/render", &req).await?;
                // Only an app: the app, as `dcos package describe --render` prints it.
                return match v.as_object().map(|m| m.len()) {
                    Some(1) if v.get("marathonJson").is_some() => print_json(&v["marathonJson"]),
                    _ => print_json(&v),
                };
            }
            let v: Value = c.post("/package/describe", &req).await?;
            let p = &v["package"];
            if json {
                return print_json(p);
            }
            println!(
                "{} {} (release {})",
                p["name"].as_str().unwrap_or(""),
                p["version"].as_str().unwrap_or(""),
                p["releaseVersion"]
            );
            println!("{}", p["description"].as_str().unwrap_or(""));
            if let Some(m) = p["maintainer"].as_str() {
                println!("maintainer: {m}");
            }
            if let Some(props) = p["config"]["properties"].as_object() {
                println!("options (defaults):");
                print_options(props, "  ");
            }
            if let Some(n) = p["preInstallNotes"].as_str() {
                println!("\n{n}");
            }
        }
        PackageCommand::Install {
            name,
            package_version,
            options,
            app_id,
            json,
        } => {
            let options = read_options(options.as_deref())?;
            let req = json!({"packageName": name, "packageVersion": package_version,
                             "options": options, "appId": app_id});
            if !json {
                eprintln!("checking {name}'s options and rendering it…");
            }
            // Render first: options that do not fit fail before anything changes.
            let plan: Value = c.post("/package/render", &req).await?;
            if !json {
                let mut parts = Vec::new();
                for p in plan["plugins"].as_array().into_iter().flatten() {
                    parts.push(format!("plugin {}", text(&p["from"])));
                }
                if let Some(j) = plan["chronosJson"]["name"].as_str() {
                    parts.push(format!("job {j}"));
                }
                if let Some(a) = plan["marathonJson"]["id"].as_str() {
                    parts.push(format!("app {a}"));
                }
                if parts.is_empty() {
                    eprintln!("installing {name} (it makes nothing to run)…");
                } else {
                    eprintln!("installing {name}: {}…", parts.join(", "));
                }
            }
            let v: Value = c.post("/package/install", &req).await?;
            if json {
                return print_json(&v);
            }
            let mut made = Vec::new();
            for p in v["plugins"].as_array().into_iter().flatten() {
                made.push(format!("plugin {} (`wasmos plugin list`)", text(p)));
            }
            if let Some(j) = v["jobName"].as_str() {
                made.push(format!("job {j} (`wasmos job list`)"));
            }
            if plan["marathonJson"].is_object()
                && let Some(id) = v["appId"].as_str()
            {
                made.push(format!("app {id} (`wasmos app list` shows it deploying)"));
            }
            let what = format!(
                "{} {}",
                v["packageName"].as_str().unwrap_or(&name),
                v["packageVersion"].as_str().unwrap_or("")
            );
            match v["appId"].as_str() {
                Some(id) => println!("installed {what} as {id}: {}", made.join(", ")),
                None => println!("installed {what} (it makes nothing to run)"),
            }
            if let Some(n) = v["postInstallNotes"].as_str() {
                println!("{n}");
            }
        }
        PackageCommand::Uninstall {
            name,
            app_id,
            all,
            json,
        } => {
            let v: Value = c
                .post(
                    "/package/uninstall",
                    &json!({"packageName": name, "appId": app_id, "all": all}),
                )
                .await?;
            if json {
                return print_json(&v);
            }
            for r in v["results"].as_array().into_iter().flatten() {
                println!(
                    "uninstalled {} (installed as {}) and everything it made",
                    r["packageName"].as_str().unwrap_or(""),
                    r["appId"].as_str().unwrap_or("")
                );
            }
        }
        PackageCommand::List { name, json } => {
            let v: Value = c
                .post("/package/list", &json!({ "packageName": name }))
                .await?;
            if json {
                return print_json(&v);
            }
            print_rows(
                &v,
                "packages",
                &["NAME", "VERSION", "ID", "MADE"],
                |_, p| {
                    let d = &p["packageInformation"]["packageDefinition"];
                    let parts = &p["parts"];
                    let mut made: Vec<String> = parts["app"]
                        .as_str()
                        .map(|a| format!("app {a}"))
                        .into_iter()
                        .collect();
                    made.extend(parts["job"].as_str().map(|j| format!("job {j}")));
                    for plugin in parts["plugins"].as_array().into_iter().flatten() {
                        made.push(format!("plugin {}", text(plugin)));
                    }
                    vec![
                        text(&d["name"]),
                        text(&d["version"]),
                        text(&p["appId"]),
                        made.join(", "),
                    ]
                },
                "no packages installed; `wasmos package search` shows what can be",
            );
        }
        PackageCommand::Repo(r) => {
            let (v, json): (Value, bool) = match r {
                RepoCommand::Add {
                    name,
                    uri,
                    index,
                    json,
                } => (
                    c.post(
                        "/package/repository/add",
                        &json!({"name": name, "uri": uri, "index": index}),
                    )
                    .await?,
                    json,
                ),
                RepoCommand::List { json } => {
                    (c.post("/package/repository/list", &json!({})).await?, json)
                }
                RepoCommand::Remove { name, json } => (
                    c.post("/package/repository/delete", &json!({ "name": name }))
                        .await?,
                    json,
                ),
                RepoCommand::Push { dir, reference } => return push_repo(&dir, &reference).await,
            };
            if json {
                return print_json(&v);
            }
            print_rows(
                &v,
                "repositories",
                &["#", "NAME", "URI"],
                |i, r| vec![i.to_string(), text(&r["name"]), text(&r["uri"])],
                "no repositories; add one with `wasmos package repo add NAME URI`",
            );
        }
    }
    Ok(())
}

/// `wasmos package repo push DIR REF`.
async fn push_repo(dir: &std::path::Path, reference: &str) -> anyhow::Result<()> {
    let r: wasmos_oci::Reference = reference.parse()?;
    let packages = wasmos_master::catalogue::source_layout(dir).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a catalogue in Universe's source layout ({e})",
            dir.display()
        )
    })?;
    let index = serde_json::to_vec(&json!({ "packages": packages }))?;
    eprintln!(
        "pushing {} packages from {} to {r}…",
        packages.len(),
        dir.display()
    );
    let digest = wasmos_oci::push_index(&crate::cluster::registry_client()?, &r, &index).await?;
    println!(
        "pushed to {}; add it with `wasmos package repo add NAME {r}`",
        r.pinned(&digest)
    );
    Ok(())
}

fn print_options(props: &serde_json::Map<String, Value>, indent: &str) {
    for (k, p) in props {
        if let Some(nested) = p["properties"].as_object() {
            println!("{indent}{k}:");
            print_options(nested, &format!("{indent}  "));
        } else {
            let default = p.get("default").map(Value::to_string).unwrap_or_default();
            let desc = p["description"].as_str().unwrap_or("");
            println!(
                "{indent}{k} ({}) = {default}  {desc}",
                p["type"].as_str().unwrap_or("any")
            );
        }
    }
}
