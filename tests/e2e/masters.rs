//! Three masters as separate processes on their own loopback addresses:
//! leader kills, full restarts, a partition, a paused leader, membership
//! changes. Nothing acknowledged may be lost and nothing may run twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use wasmos_tests::{Api, Cut, DEADLINE, Daemon, Masters, cli, wait_for};

async fn start_agent(m: &Masters, dir: &Path) -> Daemon {
    m.start_agent(dir).await
}

async fn wait_ready(api: &Api) {
    api.wait_framework_and_agent("exec").await;
}

/// Waits until masters 1-3 have applied the same log.
async fn wait_same_log(m: &Masters) {
    wait_for("every master to apply the same log", DEADLINE, || async {
        let mut applied = Vec::new();
        for id in [1, 2, 3] {
            let (_, v) = Api::new(&m.url(id)).get("/api/wasmos/v1/masters").await;
            applied.push(v["this_master"]["applied"].as_u64());
        }
        (applied.iter().all(|a| a.is_some() && *a == applied[0])).then_some(())
    })
    .await;
}

/// How many times each id appears as a line of `file`.
fn runs(file: &Path) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
        *seen.entry(line.trim().to_string()).or_insert(0) += 1;
    }
    seen
}

/// A pid a task printed as its first output line.
async fn task_pid(urls: &str, id: &str) -> i32 {
    wait_for("the task's pid", DEADLINE, || async {
        cli(urls, &["task", "logs", id])
            .await
            .stdout
            .trim()
            .parse()
            .ok()
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_leader_loses_no_acknowledged_launch_and_runs_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Masters::start(3, dir.path()).await;
    let (leader, term) = m.wait_leader(&[1, 2, 3], None).await;
    let _agent = start_agent(&m, dir.path()).await;
    let urls = m.urls();
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let api = Api::new(&m.url(follower));
    wait_ready(&api).await;

    let steady = cli(
        &urls,
        &[
            "task",
            "run",
            "-d",
            "--id",
            "steady",
            "--",
            "sh",
            "-c",
            "echo $$; exec sleep 600",
        ],
    )
    .await;
    assert_eq!(steady.code, Some(0), "{steady:?}");
    api.wait_task_state("steady", "TASK_RUNNING").await;
    let pid = task_pid(&urls, "steady").await;

    // Submit tasks one after another; kill the leader in the middle.
    let log = dir.path().join("runs.log");
    let mut acked = Vec::new();
    let mut unacked = Vec::new();
    for i in 0..16 {
        if i == 5 {
            m.kill9(leader).await;
        }
        let id = format!("burst-{i}");
        let script = format!("echo {id} >> {}", log.display());
        let out = cli(
            &urls,
            &["task", "run", "-d", "--id", &id, "--", "sh", "-c", &script],
        )
        .await;
        if out.code == Some(0) {
            acked.push(id);
        } else {
            unacked.push((id, out.stderr));
        }
    }
    assert!(
        acked.len() >= 10,
        "most submissions went through a failover: {unacked:?}"
    );

    let survivors: Vec<u64> = m.running();
    let (new_leader, new_term) = m.wait_leader(&survivors, Some(leader)).await;
    assert_ne!(new_leader, leader);
    assert!(new_term > term, "the new leader leads a newer term");
    let api = Api::new(&m.url(new_leader));
    for id in &acked {
        api.wait_task_state(id, "TASK_FINISHED").await;
    }
    let seen = runs(&log);
    for id in &acked {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "acknowledged {id} ran exactly once: {seen:?}"
        );
    }
    for (id, _) in &unacked {
        assert!(
            seen.get(id).copied().unwrap_or(0) <= 1,
            "{id} ran at most once: {seen:?}"
        );
    }
    // The long task kept running through the failover, untouched.
    assert_eq!(
        api.task_state("steady").await.as_deref(),
        Some("TASK_RUNNING")
    );
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "steady's process still runs"
    );
    assert_eq!(task_pid(&urls, "steady").await, pid);
}

/// A launch the leader recorded (STAGING) but died before delivering — the
/// agent is paused so it cannot take it — is sent by the next leader when
/// the agent registers again without it: it runs once, and is not lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_launch_the_dead_leader_never_delivered_is_sent_by_the_next_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Masters::start(3, dir.path()).await;
    let (leader, _) = m.wait_leader(&[1, 2, 3], None).await;
    let agent = start_agent(&m, dir.path()).await;
    let urls = m.urls();
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let api = Api::new(&m.url(follower));
    wait_ready(&api).await;

    let log = dir.path().join("runs.log");
    agent.signal(nix::sys::signal::Signal::SIGSTOP);
    let script = format!("echo undelivered >> {}", log.display());
    let out = cli(
        &urls,
        &[
            "task",
            "run",
            "-d",
            "--id",
            "undelivered",
            "--",
            "sh",
            "-c",
            &script,
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "the submission is acknowledged: {out:?}");
    // exec launches it on the next offer; the paused agent cannot take it.
    api.wait_task_state("undelivered", "TASK_STAGING").await;
    m.kill9(leader).await;
    agent.signal(nix::sys::signal::Signal::SIGCONT);

    let survivors = m.running();
    let (new_leader, _) = m.wait_leader(&survivors, Some(leader)).await;
    let api = Api::new(&m.url(new_leader));
    api.wait_task_state("undelivered", "TASK_FINISHED").await;
    assert_eq!(
        runs(&log).get("undelivered"),
        Some(&1),
        "it ran exactly once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stopping_every_master_and_starting_them_again_brings_the_state_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ports = wasmos_tests::own_ports("");
    let up_args = [
        "up",
        "--masters",
        "3",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--resources",
        &ports,
    ];
    let mut up =
        Daemon::start_until("up", &up_args, &["masters", "agent", "token"], dir.path()).await;
    let urls = up.url.clone();
    let token = up
        .announced("token")
        .expect("up announces the management token")
        .to_string();
    for u in urls.split(',') {
        wasmos_tests::register(u, &data.join("tls/ca.pem"), Some(&token));
    }
    let api = Api::new(urls.split(',').next().unwrap());
    wait_ready(&api).await;

    let first = cli(
        &urls,
        &["task", "run", "--id", "first", "--", "echo", "kept"],
    )
    .await;
    assert_eq!(
        (first.code, first.stdout.as_str()),
        (Some(0), "kept\n"),
        "{first:?}"
    );
    let conf = cli(&urls, &["plugin", "config", "labels", "prefix=kept."]).await;
    assert_eq!(conf.code, Some(0), "{conf:?}");
    let (_, before) = api.get("/api/wasmos/v1/cluster").await;

    assert_eq!(
        up.interrupt().await,
        Some(0),
        "up stops its masters cleanly"
    );
    let up = Daemon::start_until("up", &up_args, &["masters", "agent", "token"], dir.path()).await;
    assert_eq!(up.url, urls, "the masters come back on their addresses");
    wait_ready(&api).await;
    let (_, after) = api.get("/api/wasmos/v1/cluster").await;
    assert_eq!(after["cluster_id"], before["cluster_id"]);
    assert!(after["term"].as_u64() > before["term"].as_u64());
    assert_eq!(
        api.task_state("first").await.as_deref(),
        Some("TASK_FINISHED")
    );
    assert_eq!(
        cli(&urls, &["task", "logs", "first"]).await.stdout,
        "kept\n"
    );
    let (_, labels) = api.get("/api/wasmos/v1/plugins/labels").await;
    assert_eq!(labels["config"]["prefix"], "kept.", "{labels}");
    let again = cli(&urls, &["task", "run", "--", "echo", "again"]).await;
    assert_eq!(again.stdout, "again\n", "{again:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_cut_off_cannot_commit_and_rejoins_as_a_follower() {
    let dir = tempfile::tempdir().unwrap();
    let m = Masters::start(3, dir.path()).await;
    let (leader, term) = m.wait_leader(&[1, 2, 3], None).await;
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let ip = |id: u64| m.ips[(id - 1) as usize].clone();
    let other_ips: Vec<String> = others.iter().map(|id| ip(*id)).collect();
    let other_refs: Vec<&str> = other_ips.iter().map(String::as_str).collect();

    let cut = Cut::between(&ip(leader), &other_refs);
    // The majority elects a leader of a newer term.
    let (new_leader, new_term) = m.wait_leader(&others, Some(leader)).await;
    assert!(new_term > term);
    // The cut-off master cannot commit: a write sent to it fails.
    let old = wasmos_tests::client_for(&m.url(leader))
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = old
        .patch(format!(
            "{}/api/wasmos/v1/plugins/labels/config",
            m.url(leader)
        ))
        .json(&serde_json::json!({ "prefix": "minority." }))
        .send()
        .await;
    // Answered — not acknowledged: a 503, saying either that it no longer
    // leads or (when it has not noticed yet) that the change was not
    // committed by its deadline. No answer at all, or an unreachable
    // master, proves nothing.
    let r = r.expect("the cut-off master answers (its commit deadline is 5 s)");
    assert_eq!(
        r.status(),
        503,
        "a minority master acknowledged a write: {r:?}"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("not committed") || m.contains("not the leader")),
        "{body}"
    );
    // The majority commits.
    let maj = Api::new(&m.url(new_leader));
    let conf = cli(
        &m.urls(),
        &["plugin", "config", "labels", "prefix=majority."],
    )
    .await;
    assert_eq!(conf.code, Some(0), "{conf:?}");
    // A read from the cut-off master, which has not heard of the newer
    // term, is not answered from its old state: it cannot confirm with a
    // majority that it still leads.
    let r = old
        .get(format!("{}/api/wasmos/v1/plugins/labels", m.url(leader)))
        .send()
        .await
        .expect("the cut-off master answers a read (it confirms within 2 s)");
    let code = r.status();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    assert!(
        code == 503 || code.is_redirection(),
        "the cut-off master answered a read from its old state: {code} {body}"
    );

    cut.heal();
    // The old leader follows the new one, and the write it took never
    // happened anywhere.
    wait_for(
        "the cut-off master to rejoin as a follower",
        DEADLINE,
        || async {
            let v = m.leader_view(leader).await;
            (v["leader"]["id"] == new_leader && v["this_master"]["role"] == "follower")
                .then_some(())
        },
    )
    .await;
    let (_, labels) = maj.get("/api/wasmos/v1/plugins/labels").await;
    assert_eq!(labels["config"]["prefix"], "majority.", "{labels}");
    wait_same_log(&m).await;
}

/// A framework subscribed to a leader that loses its leadership sees its
/// stream end, so that it subscribes again — to the new leader. (A stream
/// left open and silent kept a pymesos framework sending its calls to a
/// follower until the end of a fault run.)
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_that_steps_down_ends_its_frameworks_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let m = Masters::start(3, dir.path()).await;
    let (leader, _) = m.wait_leader(&[1, 2, 3], None).await;
    let _agent = start_agent(&m, dir.path()).await;
    wait_ready(&Api::new(&m.url(leader))).await;
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let ip = |id: u64| m.ips[(id - 1) as usize].clone();
    let other_ips: Vec<String> = others.iter().map(|id| ip(*id)).collect();
    let other_refs: Vec<&str> = other_ips.iter().map(String::as_str).collect();

    let http = wasmos_tests::client_for(&m.url(leader)).build().unwrap();
    let resp = http
        .post(format!("{}/api/v1/scheduler", m.url(leader)))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"type": "SUBSCRIBE", "subscribe": {"framework_info":
                {"user": "", "name": "step-down-watcher", "failover_timeout": 600.0}}})
            .to_string(),
        )
        .send()
        .await
        .expect("subscribe");
    assert_eq!(resp.status(), 200);
    let mut events = wasmos_tests::RecordIo::new(resp.bytes_stream());
    let first: serde_json::Value = serde_json::from_slice(&events.next(DEADLINE).await).unwrap();
    assert_eq!(first["type"], "SUBSCRIBED", "{first}");

    // Cut off, the leader goes on believing it leads while the others
    // elect a newer one; once the cut heals it hears of the newer term and
    // steps down.
    let cut = Cut::between(&ip(leader), &other_refs);
    m.wait_leader(&others, Some(leader)).await;
    cut.heal();
    assert!(
        events.ends_within(DEADLINE).await,
        "the subscription to a master that no longer leads stayed open"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_leader_does_nothing_with_its_stale_term() {
    let dir = tempfile::tempdir().unwrap();
    let m = Masters::start(3, dir.path()).await;
    let (leader, term) = m.wait_leader(&[1, 2, 3], None).await;
    let agent = start_agent(&m, dir.path()).await;
    let urls = m.urls();
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let api = Api::new(&m.url(others[0]));
    wait_ready(&api).await;
    let run = cli(
        &urls,
        &["task", "run", "-d", "--id", "victim", "--", "sleep", "600"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    api.wait_task_state("victim", "TASK_RUNNING").await;

    m.daemon(leader).signal(nix::sys::signal::Signal::SIGSTOP);
    let (new_leader, new_term) = m.wait_leader(&others, Some(leader)).await;
    assert!(new_term > term);
    // The agent follows the new leader and has seen its term.
    let agent_api = m.agent_api(&agent.url);
    wait_for("the agent to see the new term", DEADLINE, || async {
        let (_, st) = agent_api.get("/api/wasmos/v1/state").await;
        (st["term"].as_u64() >= Some(new_term)).then_some(())
    })
    .await;
    // A kill sent to the paused leader waits in its socket until it wakes
    // up, still believing it leads term `term`.
    let stale = wasmos_tests::client_for(&m.url(leader))
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let kill_url = format!("{}/api/wasmos/v1/tasks/victim/kill", m.url(leader));
    let pending =
        tokio::spawn(async move { stale.post(kill_url).send().await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    m.daemon(leader).signal(nix::sys::signal::Signal::SIGCONT);
    // Answered, and refused: the resumed master learns of the newer term.
    let status = pending
        .await
        .unwrap()
        .expect("the resumed master answers the kill it held");
    assert!(
        !status.is_success(),
        "the stale leader's kill went through: {status:?}"
    );
    wait_for(
        "the resumed master to follow the new leader",
        DEADLINE,
        || async {
            let v = m.leader_view(leader).await;
            (v["leader"]["id"] == new_leader && v["term"].as_u64() >= Some(new_term)).then_some(())
        },
    )
    .await;
    // Nothing happened to the task.
    let api = Api::new(&m.url(new_leader));
    assert_eq!(
        api.task_state("victim").await.as_deref(),
        Some("TASK_RUNNING")
    );
    let (_, st) = agent_api.get("/api/wasmos/v1/state").await;
    let victim = st["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["id"] == "victim").cloned())
        .unwrap_or_default();
    assert_eq!(victim["state"], "TASK_RUNNING", "{st}");
}

/// A master back under its old id with an empty data dir forgot the votes
/// it cast and the entries it acknowledged: its peers refuse it and it
/// refuses them, each saying what to do, and the other two go on.
#[tokio::test(flavor = "multi_thread")]
async fn a_master_back_with_a_wiped_data_dir_is_refused_under_its_old_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Masters::start(3, dir.path()).await;
    let (leader, _) = m.wait_leader(&[1, 2, 3], None).await;
    let victim = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != victim).collect();
    let urls = m.urls();
    let before = cli(&urls, &["plugin", "config", "labels", "prefix=before."]).await;
    assert_eq!(before.code, Some(0), "{before:?}");
    // Every member has heard from every other by now.
    wait_same_log(&m).await;

    m.kill9(victim).await;
    std::fs::remove_dir_all(dir.path().join(format!("master-{victim}"))).unwrap();
    let peers = m.peers();
    m.start_master(victim, &["--peers", &peers]).await;

    wait_for("a peer to refuse the wiped master", DEADLINE, || async {
        others
            .iter()
            .any(|id| {
                m.daemon(*id)
                    .log()
                    .contains(&format!("master {victim} came back with a new data dir"))
            })
            .then_some(())
    })
    .await;
    wait_for("the wiped master to learn why", DEADLINE, || async {
        m.daemon(victim)
            .log()
            .contains("this master's data was lost")
            .then_some(())
    })
    .await;
    // The two others go on, and the leader counts the wiped one out. (The
    // wiped master knows no tokens: clients are pointed at the others.)
    let rest = others
        .iter()
        .map(|id| m.url(*id))
        .collect::<Vec<_>>()
        .join(",");
    let after = cli(&rest, &["plugin", "config", "labels", "prefix=after."]).await;
    assert_eq!(after.code, Some(0), "{after:?}");
    let (l, _) = m.wait_leader(&others, None).await;
    wait_for(
        "the leader to show the wiped master unreachable",
        DEADLINE,
        || async {
            let (_, v) = Api::new(&m.url(l)).get("/api/wasmos/v1/masters").await;
            let me = v["masters"]
                .as_array()?
                .iter()
                .find(|x| x["id"] == victim)?
                .clone();
            (me["role"] == "unreachable").then_some(())
        },
    )
    .await;
    // It never heard the leader: every append was refused.
    let v = m.leader_view(victim).await;
    assert_ne!(
        v["leader"]["id"], l,
        "the wiped master follows the leader: {v}"
    );
}

/// The agent saves the newest leader term it has seen: restarted while no
/// master can be reached, it still refuses a command of an older term (a
/// deposed leader's), instead of starting again from term 0.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_agent_still_refuses_a_term_older_than_the_one_it_saw() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Masters::start(1, dir.path()).await;
    m.wait_leader(&[1], None).await;
    let mut agent = start_agent(&m, dir.path()).await;
    let api = m.agent_api(&agent.url);
    let term = wait_for("the agent to register", DEADLINE, || async {
        let (_, st) = api.get("/api/wasmos/v1/state").await;
        st["term"].as_u64().filter(|t| *t >= 1)
    })
    .await;
    // No master to hear the term from after the restart.
    m.kill9(1).await;
    agent.kill9().await;
    let agent = start_agent(&m, dir.path()).await;
    let api = m.agent_api(&agent.url);
    let (_, st) = api.get("/api/wasmos/v1/state").await;
    assert_eq!(st["term"].as_u64(), Some(term), "{st}");
    let (status, body) = api
        .post(
            "/internal/v1/kill",
            &serde_json::json!({ "term": term - 1, "task_id": "anything" }),
        )
        .await;
    assert_eq!(status, 409, "a deposed leader's kill: {body}");
    assert!(
        body.to_string().contains("older than term"),
        "the refusal says why: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn masters_are_added_and_removed_at_runtime_and_ids_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Masters::start(3, dir.path()).await;
    let (leader, _) = m.wait_leader(&[1, 2, 3], None).await;
    let urls = m.urls();

    let four = m.add_slot();
    m.start_master(four, &["--join"]).await;
    let add = cli(
        &urls,
        &["masters", "add", &format!("{four}={}", m.url(four))],
    )
    .await;
    assert_eq!(add.code, Some(0), "{add:?}");
    // A follower the CLI reaches may apply the change a moment later.
    wait_for(
        "four voters seen by the master the CLI reaches",
        DEADLINE,
        || async {
            let list = cli(&urls, &["masters", "list", "--json"]).await;
            let v: serde_json::Value = serde_json::from_str(&list.stdout).ok()?;
            let voters = v["masters"]
                .as_array()?
                .iter()
                .filter(|x| x["voter"] == true)
                .count();
            (voters == 4).then_some(())
        },
    )
    .await;

    // Remove the leader itself: the others carry on.
    let rm = cli(&urls, &["masters", "remove", &leader.to_string()]).await;
    assert_eq!(rm.code, Some(0), "{rm:?}");
    let rest: Vec<u64> = [1, 2, 3, four]
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let (new_leader, _) = m.wait_leader(&rest, Some(leader)).await;
    assert_ne!(new_leader, leader);
    // The removed master is told, and stops with why.
    let (code, log) = m.wait_exit(leader).await;
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("removed this master") && log.contains("new --id"),
        "{log}"
    );
    // Every master learns of the removal in its own time: until then one
    // may still point the CLI at the removed leader, so ask the others.
    let retired = format!("retired ids (never reused): {leader}");
    let others: String = rest
        .iter()
        .map(|id| m.url(*id))
        .collect::<Vec<_>>()
        .join(",");
    let list = wait_for(
        "the removal seen by the master the CLI reaches",
        DEADLINE,
        || async {
            let list = cli(&others, &["masters", "list"]).await;
            list.stdout.contains(&retired).then_some(list)
        },
    )
    .await;
    assert!(list.stdout.contains(&retired), "{list:?}");
    // Its id can never come back.
    let again = cli(
        &urls,
        &["masters", "add", &format!("{leader}={}", m.url(leader))],
    )
    .await;
    assert_ne!(again.code, Some(0));
    assert!(again.stderr.contains("never reused"), "{again:?}");
    // And the new membership commits writes.
    let conf = cli(&urls, &["plugin", "config", "labels", "prefix=after."]).await;
    assert_eq!(conf.code, Some(0), "{conf:?}");
    m.stop(leader).await;
}
