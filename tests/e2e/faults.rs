//! A short fault run with a fixed seed: three masters and two agents on
//! hosts of their own (network namespaces), clients reading, writing and
//! swapping variables, submitting tasks, changing Marathon apps, running
//! a pymesos framework and a Chronos job every 3 s while the nemesis kills,
//! pauses, partitions, loses and duplicates packets, steps a clock,
//! fills a master's disk and reboots an agent's host; then the checker. A violation
//! prints the window of the history that breaks the rule; the same seed
//! replays it (`wasmos-bench faults --seed 478888 --seconds 90`).

use std::time::Duration;

use serde_json::{Value, json};
use wasmos_faults::Setup;
use wasmos_faults::cluster::{Cluster, Role};
use wasmos_tests::{DEADLINE, root, wait_for, wasmos_bin};

/// Hosts of their own for `masters` and `agents` under `dir`; `slot` (0
/// or 1) keeps the nets of this file's tests, which run side by side,
/// apart.
fn setup(dir: &std::path::Path, masters: usize, agents: usize, slot: u32) -> Setup {
    Setup {
        wasmos: wasmos_bin(),
        dir: dir.join("run"),
        masters,
        agents,
        election_timeout_ms: 1000,
        plugin_cache: Some(root().join("target/e2e-plugin-cache")),
        tag: (std::process::id() % 30_000 * 2 + slot) as u16,
        disk_mib: 256,
    }
}

/// The seed of the suite's run.
const SEED: u64 = wasmos_faults::SUITE_SEED;

#[tokio::test(flavor = "multi_thread")]
async fn a_seeded_fault_run_on_hosts_of_their_own_loses_no_acknowledged_change_and_runs_no_task_twice()
 {
    // Not under /tmp: each task has a /tmp of its own.
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let cfg = wasmos_faults::Config {
        setup: setup(dir.path(), 3, 2, 0),
        seed: SEED,
        faults_for: Duration::from_secs(90),
        registers: 3,
        register_clients: 4,
        task_clients: 1,
        marathon_clients: 1,
        pymesos: Some(wasmos_faults::framework::Pymesos {
            python: root().join("target/pymesos/bin/python"),
            script: root().join("tests/clients/pymesos_scheduler.py"),
        }),
        heal_within: Duration::from_secs(90),
    };
    let report = wasmos_faults::run(cfg, |s| eprintln!("faults: {s}"))
        .await
        .unwrap();
    eprintln!("{report}");
    if !report.violations.is_empty() {
        // Keep the history and the logs for whoever reads the failure.
        let kept = wasmos_tests::artefacts("faults");
        let _ = std::process::Command::new("cp")
            .arg("-r")
            .arg(&report.dir)
            .arg(&kept)
            .status();
        panic!(
            "the checker found violations (history in {}):\n{report}",
            kept.display()
        );
    }
    // A run that did too little proves nothing.
    assert!(report.applied.len() >= 8, "{report}");
    assert!(
        report.register_ops >= 300
            && report.acked_tasks >= 10
            && report.runs >= 10
            && report.chronos_runs >= 10
            && report.app_changes_acked >= 10
            && report.marathon_runs >= 10
            && report.framework_launched >= 10
            && report.framework_runs >= 10,
        "{report}"
    );
}

/// S-8: a host loses power and boots again (a new boot id; its data disk as
/// it was). Its agent registers as a new agent, and the master ends the
/// agent it was before at once — gone for good, its tasks TASK_GONE with
/// REASON_AGENT_RESTARTED — rather than waiting out the unreachable
/// window; the machine keeps its certificate and runs tasks again.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_that_reboots_comes_back_as_a_new_agent_and_what_it_ran_is_gone() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let setup = setup(dir.path(), 1, 1, 1);
    let marks = dir.path().join("marks");
    wasmos_faults::with_cluster(setup, move |c| Box::pin(reboot(c, marks)))
        .await
        .unwrap();
}

async fn reboot(c: &mut Cluster, marks: std::path::PathBuf) {
    let client = c.client(std::time::Duration::from_secs(10)).unwrap();
    let master = c.masters[0].url.clone();
    let get = |path: String| {
        let (client, master) = (client.clone(), master.clone());
        async move {
            let r = client.get(format!("{master}{path}")).send().await.ok()?;
            let ok = r.status().is_success();
            let v: Value = r.json().await.ok()?;
            ok.then_some(v)
        }
    };
    std::fs::create_dir_all(&marks).unwrap();
    // A token only this task's process carries, to find it on the machine.
    let token = 4000 + std::process::id() % 1000;
    let submit = |id: &str, cmd: String| {
        let (client, master) = (client.clone(), master.clone());
        let body = json!({"id": id, "cmd": cmd, "cpus": 0.1, "mem": 32});
        async move {
            let r = client
                .post(format!("{master}/frameworks/exec/tasks"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{:?}", r.text().await);
        }
    };
    submit(
        "before-reboot",
        format!(
            "echo ran >> {}/before-reboot; exec sleep {token}",
            marks.display()
        ),
    )
    .await;
    let task = |id: &'static str, state: &'static str| async move {
        wait_for(
            &format!("task {id} to be {state}"),
            DEADLINE,
            || async move {
                let t = get(format!("/api/wasmos/v1/tasks/{id}")).await?;
                (t["state"] == state).then_some(t)
            },
        )
        .await
    };
    let running = task("before-reboot", "TASK_RUNNING").await;
    let old_agent = running["agent_id"].as_str().unwrap().to_string();

    c.power_off(Role::Agent(0)).await.unwrap();
    let leftover = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|cmd| String::from_utf8_lossy(cmd).contains(&format!("sleep\0{token}")))
        .count();
    assert_eq!(leftover, 0, "the task's process is gone with the power");
    c.restart(Role::Agent(0)).await.unwrap();

    let gone = task("before-reboot", "TASK_GONE").await;
    assert_eq!(gone["status"]["reason"], "REASON_AGENT_RESTARTED", "{gone}");
    let agents = wait_for("the rebooted machine's new agent", DEADLINE, || {
        let (get, old_agent) = (get, old_agent.clone());
        async move {
            let a = get("/api/wasmos/v1/agents".into()).await?;
            let fresh = a
                .as_array()?
                .iter()
                .any(|a| a["id"] != old_agent.as_str() && a["connected"] == true);
            fresh.then_some(a)
        }
    })
    .await;
    let old = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == old_agent.as_str());
    assert!(
        old.is_none_or(|a| a["state"] == "gone"),
        "the agent it was before is gone for good: {agents}"
    );
    // Its certificate still serves the machine: it runs tasks again.
    submit(
        "after-reboot",
        format!("echo ran >> {}/after-reboot", marks.display()),
    )
    .await;
    task("after-reboot", "TASK_FINISHED").await;
    for id in ["before-reboot", "after-reboot"] {
        assert_eq!(
            std::fs::read_to_string(marks.join(id)).unwrap(),
            "ran\n",
            "task {id} ran once"
        );
    }
}
