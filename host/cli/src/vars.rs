//! `wasmos var ...`: cluster variables.

use std::collections::BTreeMap;

use anyhow::bail;
use clap::Subcommand;
use wasmos_master::vars::VarView;

use crate::client::Client;
use crate::table;

#[derive(Debug, Subcommand)]
pub enum VarCommand {
    /// List variables (paths and indexes) under a prefix.
    List {
        prefix: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show a variable's items (and, on stderr, its modify index).
    Get {
        path: String,
        #[arg(long)]
        json: bool,
        /// Print only the modify index (what `put --cas` takes).
        #[arg(long, conflicts_with = "json")]
        index: bool,
    },
    /// Write a variable: all its items at once, KEY=VALUE (repeatable).
    Put {
        path: String,
        #[arg(required = true, value_parser = parse_item)]
        items: Vec<(String, String)>,
        /// Write only if the variable's modify index is this (0: only if
        /// it does not exist yet).
        #[arg(long)]
        cas: Option<u64>,
    },
    /// Delete a variable.
    Rm {
        path: String,
        #[arg(long)]
        cas: Option<u64>,
    },
}

fn parse_item(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn cas_query(cas: Option<u64>) -> String {
    cas.map(|c| format!("?cas={c}")).unwrap_or_default()
}

pub async fn run(cmd: VarCommand, c: &Client) -> anyhow::Result<()> {
    match cmd {
        VarCommand::List { prefix, json } => {
            let q = prefix
                .map(|p| format!("?prefix={}", urlencode(&p)))
                .unwrap_or_default();
            let vars: Vec<VarView> = c.get(&format!("/api/wasmos/v1/vars{q}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&vars)?);
            } else if vars.is_empty() {
                eprintln!("no variables; write one with `wasmos var put PATH KEY=VALUE`");
            } else {
                let rows: Vec<Vec<String>> = vars
                    .iter()
                    .map(|v| {
                        vec![
                            v.path.clone(),
                            v.create_index.to_string(),
                            v.modify_index.to_string(),
                        ]
                    })
                    .collect();
                table::print(&["PATH", "CREATED", "MODIFIED"], &rows);
            }
        }
        VarCommand::Get { path, json, index } => {
            let v: VarView = c.get(&format!("/api/wasmos/v1/vars/{path}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if index {
                println!("{}", v.modify_index);
            } else {
                eprintln!("# {} (modify index {})", v.path, v.modify_index);
                for (k, val) in v.items.unwrap_or_default() {
                    println!("{k}={val}");
                }
            }
        }
        VarCommand::Put { path, items, cas } => {
            let items: BTreeMap<String, String> = items.into_iter().collect();
            let v: VarView = c
                .put(
                    &format!("/api/wasmos/v1/vars/{path}{}", cas_query(cas)),
                    &serde_json::json!({ "items": items }),
                )
                .await?;
            println!("{} written (modify index {})", v.path, v.modify_index);
        }
        VarCommand::Rm { path, cas } => {
            if path.is_empty() {
                bail!("var rm: give a path");
            }
            c.delete_empty(&format!("/api/wasmos/v1/vars/{path}{}", cas_query(cas)))
                .await?;
            println!("{path} deleted");
        }
    }
    Ok(())
}

/// Percent-encodes a query value.
pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
