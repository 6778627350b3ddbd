//! `wasmos-bench dashboard`: the Overview page in headless Chromium on a
//! master with simulated agents (`sim.rs`) running Marathon tasks: its
//! time to first full render (navigation start → the first refresh of
//! every panel done, as the page itself records it) and the bytes one
//! refresh pulls (the page's own fetches, as the browser's Resource
//! Timing counts their bodies). The peers, on the same master in the same
//! run: what Mesos' web UI pulls per refresh (`/master/state`) and what
//! the DC/OS UI does (`/master/state-summary` plus Marathon's groups with
//! its embeds).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Tasks running (Marathon apps of a thousand instances each).
    #[arg(long, default_value_t = 10_000)]
    tasks: u32,
    /// Page loads measured.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The wasmos binary (default: next to this one).
    #[arg(long)]
    pub wasmos: Option<PathBuf>,
}

/// The browser driver the dashboard tests use.
fn browser_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients/browser.py")
}

/// Loads the Overview once; returns (first full render in ms, bytes of
/// one refresh, requests of one refresh).
async fn load(url: &str, ca: &Path, token: &str, tasks: u32) -> anyhow::Result<(f64, f64, f64)> {
    let ready = format!(
        "(() => {{ const t = (s) => (document.querySelector(s) || {{}}).textContent || ''; \
         if (!t('#p-tasks .figure').includes('{tasks} running') || !window.wasmosFirstRender) return false; \
         performance.clearResourceTimings(); window.__done = false; \
         refreshNow().then(() => {{ window.__done = true; }}); return true; }})()"
    );
    let measured = "(() => { if (!window.__done) return false; \
         const r = performance.getEntriesByType('resource'); \
         return JSON.stringify({render: window.wasmosFirstRender.ms, bytes: r.reduce((a, e) => a + e.encodedBodySize, 0), requests: r.length}); })()";
    let out = tokio::process::Command::new("python3")
        .arg(browser_py())
        .args([
            &format!("{url}/#/overview"),
            &ready,
            "--then",
            measured,
            "--ca",
            ca.to_str().context("utf-8 path")?,
            "--session",
            token,
            "--timeout",
            "180",
        ])
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "browser.py: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: String = serde_json::from_slice(&out.stdout)?;
    let v: Value = serde_json::from_str(&printed)?;
    Ok((
        v["render"].as_f64().unwrap_or(f64::NAN),
        v["bytes"].as_f64().unwrap_or(f64::NAN),
        v["requests"].as_f64().unwrap_or(f64::NAN),
    ))
}

use crate::stats::median;

/// Bytes and milliseconds of one GET.
async fn fetch(http: &reqwest::Client, url: &str) -> anyhow::Result<(f64, f64)> {
    let started = std::time::Instant::now();
    let r = http.get(url).send().await?;
    anyhow::ensure!(r.status().is_success(), "GET {url}: {}", r.status());
    let body = r.bytes().await?;
    Ok((body.len() as f64, started.elapsed().as_secs_f64() * 1000.0))
}

pub async fn run(a: DashboardArgs, bin: PathBuf) -> anyhow::Result<()> {
    eprintln!(
        "== a master, {} simulated agents, {} Marathon tasks",
        a.agents, a.tasks
    );
    let rig =
        crate::frameworks::rig(&bin, a.agents, 64.0, Duration::from_secs(24 * 3600), 1000).await?;
    crate::marathon::wait_agents(&rig.http, &rig.url, a.agents).await?;
    let mut left = a.tasks;
    let mut n = 0;
    while left > 0 {
        let size = left.min(1000);
        let (running, _) =
            crate::marathon::deploy(&rig.http, &rig.url, &format!("/bench/app-{n}"), size).await?;
        eprintln!(
            "   {size} tasks running after {:.1} s",
            running.as_secs_f64()
        );
        left -= size;
        n += 1;
    }
    let ca = rig.dir.path().join("tls/ca.pem");
    let token = "bench-management-token";
    let (mut render, mut bytes, mut requests) = (Vec::new(), Vec::new(), Vec::new());
    let (mut state, mut summary, mut groups) = (Vec::new(), Vec::new(), Vec::new());
    let (mut state_ms, mut summary_ms) = (Vec::new(), Vec::new());
    for run in 0..a.runs {
        let (r, b, q) = load(&rig.url, &ca, token, a.tasks).await?;
        eprintln!(
            "   load {run}: first full render {r:.0} ms, a refresh {b:.0} bytes in {q} requests"
        );
        render.push(r);
        bytes.push(b);
        requests.push(q);
        let (b, ms) = fetch(&rig.http, &format!("{}/master/state", rig.url)).await?;
        state.push(b);
        state_ms.push(ms);
        let (b, ms) = fetch(&rig.http, &format!("{}/master/state-summary", rig.url)).await?;
        summary.push(b);
        summary_ms.push(ms);
        let (b, _) = fetch(
            &rig.http,
            &format!(
                "{}/v2/groups?embed=group.groups&embed=group.apps&embed=group.apps.deployments&embed=group.apps.counts&embed=group.apps.tasks&embed=group.apps.lastTaskFailure",
                rig.url
            ),
        )
        .await?;
        groups.push(b);
    }
    let kib = |l: &mut Vec<f64>| median(l) / 1024.0;
    println!(
        "\n| {} agents, {} tasks (medians of {} loads) | result |",
        a.agents, a.tasks, a.runs
    );
    println!("|---|---:|");
    println!(
        "| Wasmos Overview: navigation → first full render | {:.0} ms |",
        median(&mut render)
    );
    println!(
        "| Wasmos Overview: one refresh | {:.0} KiB in {:.0} requests |",
        kib(&mut bytes),
        median(&mut requests)
    );
    println!(
        "| Mesos web UI's refresh: `/master/state` | {:.0} KiB, served in {:.0} ms |",
        kib(&mut state),
        median(&mut state_ms)
    );
    println!(
        "| DC/OS UI's refresh: `/master/state-summary` + Marathon groups (embeds) | {:.0} KiB + {:.0} KiB, state-summary served in {:.0} ms |",
        kib(&mut summary),
        kib(&mut groups),
        median(&mut summary_ms)
    );
    Ok(())
}
