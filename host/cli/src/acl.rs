//! `wasmos login`, `wasmos whoami` and `wasmos acl ...`: credentials for
//! the CLI, and the cluster's tokens, users and policies.
//!
//! Where the CLI finds its credentials, first match wins: `--token` (or
//! `WASMOS_TOKEN`); what `wasmos login` saved (`~/.config/wasmos/cli.json`,
//! with the master and CA it logged in to); the management token `wasmos
//! up` keeps in its default data dir.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::client::Client;
use crate::table;

/// What `wasmos login` saves.
#[derive(Default, Clone, Serialize, Deserialize)]
pub struct Saved {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

pub fn config_path() -> PathBuf {
    dirs::config_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("wasmos")
        .join("cli.json")
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Saved")
            .field("master", &self.master)
            .field("ca_cert", &self.ca_cert)
            .finish_non_exhaustive()
    }
}

impl Saved {
    pub fn load() -> Saved {
        std::fs::read_to_string(config_path())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn save(&self) -> anyhow::Result<PathBuf> {
        let path = config_path();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        wasmos_tls::write_private(&path, &serde_json::to_string_pretty(self)?)?;
        Ok(path)
    }
}

/// The token `wasmos up` made in `data_dir`, if any.
pub fn up_token(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join("token"))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn read_stdin_line(what: &str) -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .with_context(|| format!("cannot read the {what} from standard input"))?;
    let s = s
        .lines()
        .next()
        .unwrap_or("")
        .trim_end_matches('\r')
        .to_string();
    if s.is_empty() {
        bail!("the {what} on standard input is empty");
    }
    Ok(s)
}

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// Log in as this user; the password is read from standard input.
    #[arg(long)]
    user: Option<String>,
    /// Read a token from standard input instead (else the one of --token
    /// or WASMOS_TOKEN).
    #[arg(long, conflicts_with = "user")]
    token_stdin: bool,
}

/// Checks the credentials against the master and saves them (with the
/// master and the CA certificate) for later commands.
pub async fn login(
    a: LoginArgs,
    c: &Client,
    master: &str,
    ca_cert: Option<PathBuf>,
    token: Option<String>,
) -> anyhow::Result<()> {
    let (token, who) = match a.user {
        Some(user) => {
            let password = read_stdin_line("password")?;
            let v: Value = c
                .unauthenticated()
                .post(
                    "/api/wasmos/v1/login",
                    &json!({"user": user, "password": password}),
                )
                .await?;
            let t = v["token"]
                .as_str()
                .context("the master's answer has no token")?
                .to_string();
            (t, v["principal"].as_str().unwrap_or("").to_string())
        }
        None => {
            let t = if a.token_stdin {
                read_stdin_line("token")?
            } else {
                token.context(
                    "give --user NAME (password on standard input), --token-stdin, or --token",
                )?
            };
            let v: Value = c
                .with_token(&t)
                .get("/api/wasmos/v1/acl/token/self")
                .await?;
            (t, v["principal"].as_str().unwrap_or("").to_string())
        }
    };
    let ca_cert = ca_cert.map(|p| std::path::absolute(&p).unwrap_or(p));
    let path = Saved {
        master: Some(master.to_string()),
        ca_cert,
        token: Some(token),
    }
    .save()?;
    eprintln!(
        "logged in to {master} as {who}; saved in {}",
        path.display()
    );
    Ok(())
}

pub async fn whoami(c: &Client) -> anyhow::Result<()> {
    let v: Value = c.get("/api/wasmos/v1/acl/token/self").await?;
    println!("{}", v["principal"].as_str().unwrap_or("?"));
    if v["management"] == true {
        println!("management: may do everything");
    }
    for r in v["rules"].as_array().into_iter().flatten() {
        println!(
            "{} {}{}",
            r["access"].as_str().unwrap_or(""),
            r["area"].as_str().unwrap_or(""),
            match r["prefix"].as_str() {
                Some(p) if !p.is_empty() => format!(" {p}*"),
                _ => String::new(),
            }
        );
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Make the first management token of a cluster started without one
    /// (`wasmos up` makes it itself); works once.
    Bootstrap,
    /// Tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Policies: what tokens and users may do.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Users who log in with a password.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token; its secret is printed once.
    Create {
        #[arg(long)]
        name: String,
        /// A policy it holds (repeat for more).
        #[arg(long = "policy")]
        policies: Vec<String>,
        /// May do everything.
        #[arg(long)]
        management: bool,
        /// Expires after this many seconds.
        #[arg(long)]
        expires_in: Option<f64>,
    },
    /// List the tokens; with --sessions, the live login sessions (of the
    /// dashboard and `POST /login`) instead.
    List {
        #[arg(long)]
        json: bool,
        #[arg(long)]
        sessions: bool,
    },
    /// Revoke a token (or a login session) by its accessor id.
    Revoke { accessor: String },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Create or replace a policy from a JSON file (`-`: standard input):
    /// `{"rules": [{"area": "apps", "prefix": "/team-a/", "access": "write"}], "run_as": ["nobody"]}`.
    Apply {
        name: String,
        file: PathBuf,
    },
    List,
    Show {
        name: String,
    },
    Remove {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create or replace a user; the password is read from standard input.
    Add {
        name: String,
        #[arg(long = "policy")]
        policies: Vec<String>,
    },
    List,
    Remove {
        name: String,
    },
}

fn ts(t: &Value) -> String {
    t.as_f64().map_or("-".into(), |s| {
        jiff::Timestamp::from_second(s as i64)
            .map(|t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
            .unwrap_or_default()
    })
}

pub async fn run(cmd: AclCommand, c: &Client) -> anyhow::Result<()> {
    match cmd {
        AclCommand::Bootstrap => {
            let v: Value = c
                .unauthenticated()
                .post("/api/wasmos/v1/acl/bootstrap", &json!({}))
                .await?;
            println!("{}", v["secret"].as_str().unwrap_or(""));
            eprintln!(
                "the management token (accessor {}); it is shown only now: keep it safe, e.g. `wasmos login --token-stdin`",
                v["accessor"].as_str().unwrap_or("")
            );
        }
        AclCommand::Token(TokenCommand::Create {
            name,
            policies,
            management,
            expires_in,
        }) => {
            let v: Value = c
                .post(
                    "/api/wasmos/v1/acl/tokens",
                    &json!({"name": name, "policies": policies, "management": management,
                            "expires_in_secs": expires_in}),
                )
                .await?;
            println!("{}", v["secret"].as_str().unwrap_or(""));
            eprintln!(
                "token {name} (accessor {}); its secret is shown only now",
                v["accessor"].as_str().unwrap_or("")
            );
        }
        AclCommand::Token(TokenCommand::List { json, sessions }) => {
            let v: Value = c
                .get(&format!("/api/wasmos/v1/acl/tokens?sessions={sessions}"))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    vec![
                        t["accessor"].as_str().unwrap_or("").to_string(),
                        t["name"].as_str().unwrap_or("").to_string(),
                        if t["management"] == true {
                            "management".to_string()
                        } else {
                            t["policies"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|p| p.as_str())
                                .collect::<Vec<_>>()
                                .join(",")
                        },
                        ts(&t["expires_at"]),
                        t["session_of"]
                            .as_str()
                            .or(t["created_by"].as_str())
                            .unwrap_or("")
                            .to_string(),
                    ]
                })
                .collect();
            let last = if sessions { "SESSION OF" } else { "CREATED BY" };
            table::print(&["ACCESSOR", "NAME", "POLICIES", "EXPIRES", last], &rows);
        }
        AclCommand::Token(TokenCommand::Revoke { accessor }) => {
            c.send_no_content(
                reqwest::Method::DELETE,
                &format!("/api/wasmos/v1/acl/tokens/{accessor}"),
                None,
            )
            .await?;
            eprintln!("revoked {accessor}");
        }
        AclCommand::Policy(PolicyCommand::Apply { name, file }) => {
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let body: Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", file.display()))?;
            let _: Value = c
                .put(&format!("/api/wasmos/v1/acl/policies/{name}"), &body)
                .await?;
            eprintln!("policy {name} applied");
        }
        AclCommand::Policy(PolicyCommand::List) => {
            let v: Value = c.get("/api/wasmos/v1/acl/policies").await?;
            let rows: Vec<Vec<String>> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    vec![
                        p["name"].as_str().unwrap_or("").to_string(),
                        p["rules"].as_array().map_or(0, |r| r.len()).to_string(),
                        p["description"].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect();
            table::print(&["NAME", "RULES", "DESCRIPTION"], &rows);
        }
        AclCommand::Policy(PolicyCommand::Show { name }) => {
            let v: Value = c
                .get(&format!("/api/wasmos/v1/acl/policies/{name}"))
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        AclCommand::Policy(PolicyCommand::Remove { name }) => {
            c.send_no_content(
                reqwest::Method::DELETE,
                &format!("/api/wasmos/v1/acl/policies/{name}"),
                None,
            )
            .await?;
            eprintln!("policy {name} removed");
        }
        AclCommand::User(UserCommand::Add { name, policies }) => {
            let password = read_stdin_line("password")?;
            let _: Value = c
                .put(
                    &format!("/api/wasmos/v1/acl/users/{name}"),
                    &json!({"password": password, "policies": policies}),
                )
                .await?;
            eprintln!("user {name} saved");
        }
        AclCommand::User(UserCommand::List) => {
            let v: Value = c.get("/api/wasmos/v1/acl/users").await?;
            let rows: Vec<Vec<String>> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|u| {
                    vec![
                        u["name"].as_str().unwrap_or("").to_string(),
                        u["policies"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|p| p.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                    ]
                })
                .collect();
            table::print(&["NAME", "POLICIES"], &rows);
        }
        AclCommand::User(UserCommand::Remove { name }) => {
            c.send_no_content(
                reqwest::Method::DELETE,
                &format!("/api/wasmos/v1/acl/users/{name}"),
                None,
            )
            .await?;
            eprintln!("user {name} removed");
        }
    }
    Ok(())
}
