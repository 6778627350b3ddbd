//! What must survive restarts: status updates, the state, and tasks'
//! fates when a cluster stops.

use wasmos_tests::{Api, Cluster, DEADLINE, Daemon, PROCESS, cli, free_port, wait_for};

/// A one-master cluster as its own process: the master makes the cluster
/// CA in its data dir on its first start; agents join with `dir/join-token`.
async fn start_master(dir: &std::path::Path, port: u16) -> Daemon {
    start_master_with(dir, port, &[]).await
}

/// Master flags that make a silent agent unreachable within 1.5 s.
const QUICK_SILENCE: &[&str] = &[
    "--heartbeat-interval-ms",
    "300",
    "--agent-timeout-ms",
    "1500",
];

/// [`start_master`] with more flags.
async fn start_master_with(dir: &std::path::Path, port: u16, extra: &[&str]) -> Daemon {
    let data = dir.join("master");
    let token = dir.join("join-token");
    std::fs::write(&token, "reliability-join-token").unwrap();
    let listen = format!("127.0.0.1:{port}");
    let management = wasmos_tests::bootstrap_token_file(dir);
    let mut args = vec![
        "master",
        "--listen",
        &listen,
        "--data-dir",
        data.to_str().expect("utf-8 temp path"),
        "--join-token-file",
        token.to_str().expect("utf-8 temp path"),
        "--bootstrap-token-file",
        &management,
    ];
    args.extend_from_slice(extra);
    let d = Daemon::start("master", &args, "master", dir).await;
    wasmos_tests::register(&d.url, &ca(dir), Some(wasmos_tests::TEST_TOKEN));
    d
}

/// The CA the master made.
fn ca(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("master/tls/ca.pem")
}

/// An agent of `master`, keeping its state under `dir/agent`.
async fn start_agent(dir: &std::path::Path, master: &str) -> Daemon {
    start_agent_in(dir, master, "agent").await
}

/// An agent with its data under `dir/<name>`.
async fn start_agent_in(dir: &std::path::Path, master: &str, name: &str) -> Daemon {
    let data = dir.join(name);
    let d = Daemon::start(
        "agent",
        &[
            "agent",
            "--master",
            master,
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().expect("utf-8 temp path"),
            "--ca-cert",
            ca(dir).to_str().expect("utf-8 temp path"),
            "--join-token-file",
            dir.join("join-token").to_str().expect("utf-8 temp path"),
            // Its tasks wait on files of the test's under /tmp (its own,
            // 0700 temp dir: as root).
            "--containerizer",
            "process",
            "--task-user",
            "root",
            "--resources",
            &wasmos_tests::own_ports(""),
        ],
        "agent",
        dir,
    )
    .await;
    wasmos_tests::trust(&d.url, &ca(dir));
    d
}

#[tokio::test(flavor = "multi_thread")]
async fn status_updates_survive_a_master_restart_in_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut master = start_master(dir.path(), port).await;
    let agent = start_agent(dir.path(), &master.url).await;
    let api = Api::new(&master.url);
    let agent_api = Api::to_agent(
        &agent.url,
        Some(&wasmos_tests::master_identity(
            &dir.path().join("master/tls"),
        )),
    );

    // The task finishes only when told to, so it ends while the master is down.
    let go = dir.path().join("go");
    let script = format!(
        "echo started; while [ ! -e {} ]; do sleep 0.05; done; echo done",
        go.display()
    );
    let run = cli(
        &master.url,
        &["task", "run", "-d", "--id", "survivor", "--shell", &script],
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    api.wait_task_state("survivor", "TASK_RUNNING").await;

    master.kill9().await;
    std::fs::write(&go, b"").unwrap();
    // The agent saw the task finish and holds the update it could not send.
    wait_for(
        "the agent to hold the FINISHED update",
        DEADLINE,
        || async {
            let (code, st) = agent_api.get("/api/wasmos/v1/state").await;
            let finished = st["tasks"].as_array().is_some_and(|t| {
                t.iter()
                    .any(|t| t["id"] == "survivor" && t["state"] == "TASK_FINISHED")
            });
            (code == 200 && finished && st["pending_updates"].as_u64() >= Some(1)).then_some(())
        },
    )
    .await;

    let master = start_master(dir.path(), port).await;
    let t = api.wait_task_state("survivor", "TASK_FINISHED").await;
    assert_eq!(t["status"]["exit_code"], 0);
    let states: Vec<&str> = t["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "TASK_STAGING",
            "TASK_STARTING",
            "TASK_RUNNING",
            "TASK_FINISHED"
        ],
        "every update once, in order"
    );
    // The framework was told too.
    wait_for("exec to see the task finish", DEADLINE, || async {
        let (_, v) = api.get("/frameworks/exec/tasks/survivor").await;
        (v["state"] == "TASK_FINISHED").then_some(())
    })
    .await;
    let logs = cli(&master.url, &["task", "logs", "survivor"]).await;
    assert_eq!(logs.stdout, "started\ndone\n");
    drop(agent);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_submission_acknowledged_before_a_master_crash_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut master = start_master(dir.path(), port).await;
    // No agent yet: the submission can only wait in the exec queue.
    let (code, body) = Api::new(&master.url)
        .post(
            "/frameworks/exec/tasks",
            &serde_json::json!({"id": "queued-1", "cmd": "echo ran"}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    master.kill9().await;

    let master = start_master(dir.path(), port).await;
    let _agent = start_agent(dir.path(), &master.url).await;
    let api = Api::new(&master.url);
    api.wait_task_state("queued-1", "TASK_FINISHED").await;
    assert_eq!(
        cli(&master.url, &["task", "logs", "queued-1"]).await.stdout,
        "ran\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_up_and_kills_its_tasks_and_a_second_up_recovers_the_state() {
    // The task reports its host pid.
    let c = Cluster::up_with(tempfile::tempdir().unwrap(), PROCESS).await;
    let done = c
        .cli(&["task", "run", "--id", "first", "--", "echo", "kept"])
        .await;
    assert_eq!(done.code, Some(0), "{done:?}");
    let run = c
        .cli(&[
            "task",
            "run",
            "-d",
            "--id",
            "sleeper",
            "--",
            "sh",
            "-c",
            "echo $$; exec sleep 600",
        ])
        .await;
    assert_eq!(run.code, Some(0));
    c.api.wait_task_state("sleeper", "TASK_RUNNING").await;
    let pid: i32 = wait_for("the sleeper's pid", DEADLINE, || async {
        c.cli(&["task", "logs", "sleeper"])
            .await
            .stdout
            .trim()
            .parse()
            .ok()
    })
    .await;
    let term_before = c.api.get("/api/wasmos/v1/cluster").await.1["term"]
        .as_u64()
        .unwrap();

    let (code, dir) = c.stop().await;
    assert_eq!(code, Some(0), "up exits cleanly on Ctrl-C");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the task's process {pid} was killed"
    );

    let c = Cluster::up_with(dir, PROCESS).await;
    let (_, cluster) = c.api.get("/api/wasmos/v1/cluster").await;
    assert!(
        cluster["term"].as_u64().unwrap() > term_before,
        "a restarted master leads in a newer term"
    );
    assert_eq!(
        c.api.task_state("first").await.as_deref(),
        Some("TASK_FINISHED")
    );
    assert_eq!(
        c.api.task_state("sleeper").await.as_deref(),
        Some("TASK_KILLED"),
        "the kill was reported before up stopped"
    );
    assert_eq!(c.cli(&["task", "logs", "first"]).await.stdout, "kept\n");
    let agents = c.api.get("/api/wasmos/v1/agents").await.1;
    assert_eq!(
        agents.as_array().unwrap().len(),
        1,
        "the agent came back under its old id: {agents}"
    );
    // And the recovered cluster still runs tasks.
    let again = c.cli(&["task", "run", "--", "true"]).await;
    assert_eq!(again.code, Some(0), "{again:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_follows_a_master_whose_state_was_wiped() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut master = start_master(dir.path(), port).await;
    let _agent = start_agent(dir.path(), &master.url).await;
    // Two restarts: the agent has now seen a term above 2.
    let mut last_term = Api::new(&master.url).get("/api/wasmos/v1/cluster").await.1["term"]
        .as_u64()
        .unwrap_or(0);
    for _ in 0..2 {
        master.kill9().await;
        master = start_master(dir.path(), port).await;
        let api = Api::new(&master.url);
        last_term = wait_for(
            "the agent to register with a newer term",
            DEADLINE,
            || async {
                let (_, c) = api.get("/api/wasmos/v1/cluster").await;
                let (_, agents) = api.get("/api/wasmos/v1/agents").await;
                let connected = agents
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a["connected"] == true));
                let term = c["term"].as_u64().unwrap_or(0);
                (term > last_term && connected).then_some(term)
            },
        )
        .await;
    }
    assert!(last_term > 2, "terms grow with every new leadership");
    // A fresh state: a new cluster, counting terms from 1 again. The
    // cluster CA stays (an agent trusts only the CA it was given).
    master.kill9().await;
    let ca_dir = dir.path().join("ca-kept");
    std::fs::rename(dir.path().join("master/tls"), &ca_dir).unwrap();
    std::fs::remove_dir_all(dir.path().join("master")).unwrap();
    std::fs::create_dir_all(dir.path().join("master")).unwrap();
    std::fs::rename(&ca_dir, dir.path().join("master/tls")).unwrap();
    let master = start_master(dir.path(), port).await;
    let out = cli(
        &master.url,
        &["task", "run", "--id", "after-wipe", "--", "echo", "ok"],
    )
    .await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "ok\n"),
        "{out:?}"
    );
}

/// SIGSTOP makes the agent fall silent as a network partition would; its
/// tasks go on running.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_agent_becomes_unreachable_and_its_tasks_run_again_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master_with(dir.path(), free_port(), QUICK_SILENCE).await;
    let agent = start_agent(dir.path(), &master.url).await;
    let api = Api::new(&master.url);
    let run = cli(
        &master.url,
        &["task", "run", "-d", "--id", "steady", "--", "sleep", "600"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    api.wait_task_state("steady", "TASK_RUNNING").await;

    agent.signal(nix::sys::signal::Signal::SIGSTOP);
    let t = api.wait_task_state("steady", "TASK_UNREACHABLE").await;
    assert_eq!(t["status"]["reason"], "REASON_AGENT_REMOVED", "{t}");
    let (_, agents) = api.get("/api/wasmos/v1/agents").await;
    assert_eq!(agents[0]["state"], "unreachable", "{agents}");
    // The exec framework was told.
    let (_, fw_task) = api.get("/frameworks/exec/tasks/steady").await;
    assert_eq!(fw_task["state"], "TASK_UNREACHABLE", "{fw_task}");

    agent.signal(nix::sys::signal::Signal::SIGCONT);
    let t = api.wait_task_state("steady", "TASK_RUNNING").await;
    assert_eq!(t["status"]["reason"], "REASON_AGENT_REREGISTERED", "{t}");
    wait_for(
        "the framework to see it running again",
        DEADLINE,
        || async {
            let (_, fw_task) = api.get("/frameworks/exec/tasks/steady").await;
            (fw_task["state"] == "TASK_RUNNING").then_some(())
        },
    )
    .await;
    let out = cli(&master.url, &["task", "kill", "steady"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    api.wait_task_state("steady", "TASK_KILLED").await;
}

/// More agents silent at once than `--agent-unreachable-rate` allows: the
/// first is marked unreachable, the other waits its turn (still holding its
/// tasks), and coming back before its turn it is never marked.
#[tokio::test(flavor = "multi_thread")]
async fn agents_silent_together_are_marked_unreachable_no_faster_than_the_rate() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [QUICK_SILENCE, &["--agent-unreachable-rate", "1/10mins"]].concat();
    let master = start_master_with(dir.path(), free_port(), &flags).await;
    let agents = [
        start_agent_in(dir.path(), &master.url, "agent-1").await,
        start_agent_in(dir.path(), &master.url, "agent-2").await,
    ];
    let api = Api::new(&master.url);
    wait_for("both agents to register", DEADLINE, || async {
        let (_, a) = api.get("/api/wasmos/v1/agents").await;
        let a = a.as_array()?;
        (a.len() == 2 && a.iter().all(|a| a["connected"] == true)).then_some(())
    })
    .await;
    for a in &agents {
        a.signal(nix::sys::signal::Signal::SIGSTOP);
    }
    let waiting = wait_for(
        "one agent unreachable, the other waiting its turn",
        DEADLINE,
        || async {
            let (_, a) = api.get("/api/wasmos/v1/agents").await;
            let a = a.as_array()?;
            let unreachable = a.iter().filter(|a| a["state"] == "unreachable").count();
            let silent_active = a
                .iter()
                .find(|a| a["state"] == "active" && a["connected"] == false)?;
            let (_, metrics) = api.prometheus_text("/metrics").await;
            (unreachable == 1 && metrics.contains("wasmos_agents_awaiting_unreachable 1"))
                .then(|| silent_active["endpoint"].as_str().unwrap_or("").to_string())
        },
    )
    .await;
    for a in &agents {
        a.signal(nix::sys::signal::Signal::SIGCONT);
    }
    wait_for("the waiting agent to be back", DEADLINE, || async {
        let (_, a) = api.get("/api/wasmos/v1/agents").await;
        let back = a
            .as_array()?
            .iter()
            .find(|a| a["endpoint"] == waiting.as_str())?
            .clone();
        let (_, metrics) = api.prometheus_text("/metrics").await;
        (back["connected"] == true
            && back["state"] == "active"
            && metrics.contains("wasmos_agents_awaiting_unreachable 0"))
        .then_some(())
    })
    .await;
    let (_, a) = api.get("/api/wasmos/v1/agents").await;
    let id = a
        .as_array()
        .and_then(|a| a.iter().find(|a| a["endpoint"] == waiting.as_str()))
        .map(|a| a["id"].as_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let marked: Vec<String> = master
        .log()
        .lines()
        .filter(|l| l.contains("agent stopped heartbeating") && l.contains(&id))
        .map(str::to_string)
        .collect();
    assert!(
        marked.is_empty(),
        "agent {id} was marked unreachable: {marked:?}"
    );
}
