//! Running tasks through `wasmos task ...`.

use wasmos_tests::{Cluster, DEADLINE, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn task_output_is_streamed_and_its_exit_code_comes_back() {
    let c = Cluster::up().await;
    let out = c
        .cli(&[
            "task",
            "run",
            "--cpus",
            "0.1",
            "--mem",
            "32",
            "--",
            "sh",
            "-c",
            "echo hello; echo oops >&2; exit 3",
        ])
        .await;
    assert_eq!(out.stdout, "hello\n");
    assert!(out.stderr.contains("oops"), "stderr: {}", out.stderr);
    assert_eq!(out.code, Some(3), "{out:?}");

    let ok = c.cli(&["task", "run", "--shell", "printf 'a b'"]).await;
    assert_eq!((ok.code, ok.stdout.as_str()), (Some(0), "a b"), "{ok:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_command_fails_with_a_clear_message() {
    let c = Cluster::up().await;
    let out = c
        .cli(&[
            "task",
            "run",
            "--id",
            "missing-1",
            "--",
            "no-such-command-xyz",
        ])
        .await;
    assert_eq!(out.code, Some(127), "{out:?}");
    assert!(
        out.stderr
            .contains("command not found: no-such-command-xyz"),
        "stderr: {}",
        out.stderr
    );
    let t = c.api.wait_task_state("missing-1", "TASK_FAILED").await;
    assert_eq!(
        t["status"]["message"],
        "command not found: no-such-command-xyz"
    );
    assert_eq!(t["status"]["reason"], "REASON_CONTAINER_LAUNCH_FAILED");
    assert_eq!(t["status"]["exit_code"], 127);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_task_is_killed_on_request_and_its_runner_exits_143() {
    // The task reports its host pid.
    let c = Cluster::up_with(tempfile::tempdir().unwrap(), wasmos_tests::PROCESS).await;
    let url = c.up.url.clone();
    let runner = tokio::spawn(async move {
        wasmos_tests::cli(
            &url,
            &[
                "task",
                "run",
                "--id",
                "long-1",
                "--",
                "sh",
                "-c",
                "echo $$; exec sleep 600",
            ],
        )
        .await
    });
    c.api.wait_task_state("long-1", "TASK_RUNNING").await;
    // The task printed its pid; it must be alive now and gone after the kill.
    let pid: i32 = wait_for("the task's pid in its stdout", DEADLINE, || async {
        let out = c.cli(&["task", "logs", "long-1"]).await;
        out.stdout.trim().parse().ok()
    })
    .await;
    assert!(alive(pid), "task process {pid} runs");

    let listed = c.cli(&["task", "list"]).await;
    assert!(
        listed.stdout.contains("long-1") && listed.stdout.contains("RUNNING"),
        "{listed:?}"
    );

    let kill = c.cli(&["task", "kill", "long-1"]).await;
    assert_eq!(kill.code, Some(0), "{kill:?}");
    let t = c.api.wait_task_state("long-1", "TASK_KILLED").await;
    assert_eq!(t["status"]["signal"], 15, "SIGTERM was enough: {t}");
    wait_for("the task's process to be gone", DEADLINE, || async {
        (!alive(pid)).then_some(())
    })
    .await;

    let out = runner.await.unwrap();
    assert_eq!(out.code, Some(143), "{out:?}");
    assert!(out.stderr.contains("was killed"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_that_ignores_sigterm_is_killed_after_its_grace_period() {
    let c = Cluster::up().await;
    let (code, body) = c
        .api
        .post(
            "/frameworks/exec/tasks",
            &serde_json::json!({"id": "stubborn", "cmd": "trap '' TERM; echo ready; while true; do sleep 0.1; done", "kill_grace_period_ms": 500}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    c.api.wait_task_state("stubborn", "TASK_RUNNING").await;
    // SIGTERM must not land before the trap is set.
    wait_for("the trap to be set", DEADLINE, || async {
        c.cli(&["task", "logs", "stubborn"])
            .await
            .stdout
            .contains("ready")
            .then_some(())
    })
    .await;
    assert_eq!(c.cli(&["task", "kill", "stubborn"]).await.code, Some(0));
    let t = c.api.wait_task_state("stubborn", "TASK_KILLED").await;
    assert_eq!(t["status"]["signal"], 9, "escalated to SIGKILL: {t}");
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_follow_streams_until_the_task_ends() {
    let c = Cluster::up().await;
    let run = c
        .cli(&[
            "task",
            "run",
            "-d",
            "--id",
            "chatty",
            "--",
            "sh",
            "-c",
            "echo one; sleep 1; echo two; echo err >&2",
        ])
        .await;
    assert_eq!(run.stdout.trim(), "chatty", "{run:?}");
    let out = c.cli(&["task", "logs", "--follow", "chatty"]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "one\ntwo\n"),
        "{out:?}"
    );
    let err = c.cli(&["task", "logs", "--stderr", "chatty"]).await;
    assert_eq!(err.stdout, "err\n");
    c.api.wait_task_state("chatty", "TASK_FINISHED").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_sees_its_sandbox_id_and_ports_in_its_environment() {
    let c = Cluster::up().await;
    let out = c
        .cli(&["task", "run", "--id", "env-1", "--ports", "2", "-e", "GREETING=hi there", "--", "sh", "-c",
            "echo $WASMOS_TASK_ID $GREETING; test \"$PWD\" = \"$WASMOS_SANDBOX\" && echo in-sandbox; echo $PORT0 $PORT1 $PORTS"])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "env-1 hi there");
    assert_eq!(lines[1], "in-sandbox");
    let ports: Vec<&str> = lines[2].split(' ').collect();
    assert_eq!(ports.len(), 3, "{lines:?}");
    assert_eq!(ports[2], format!("{},{}", ports[0], ports[1]));
    let p0: u16 = ports[0].parse().unwrap();
    assert!(
        (31000..=32000).contains(&p0),
        "ports come from the offered range: {p0}"
    );
}

/// A port of the agent's range that another process on its host listens
/// on is never given to a task: the task could not bind it, and a health
/// check of it would reach the stranger.
#[tokio::test(flavor = "multi_thread")]
async fn a_port_another_process_listens_on_is_not_given_to_a_task() {
    let c = Cluster::up().await;
    let ports_of = |out: &wasmos_tests::Output| -> Vec<u16> {
        assert_eq!(out.code, Some(0), "{out:?}");
        out.stdout
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect()
    };
    let args = [
        "task",
        "run",
        "--ports",
        "2",
        "--",
        "sh",
        "-c",
        "echo $PORT0 $PORT1",
    ];
    let first = ports_of(&c.cli(&args).await);
    // A stranger takes the first port the task had.
    let stranger = std::net::TcpListener::bind(("0.0.0.0", first[0])).unwrap();
    wait_for("the agent to report the bound port", DEADLINE, || async {
        let (_, agents) = c.api.get("/api/wasmos/v1/agents").await;
        let p = u64::from(first[0]);
        agents[0]["bound_ports"]
            .as_array()?
            .iter()
            .any(|r| r["begin"].as_u64() <= Some(p) && r["end"].as_u64() >= Some(p))
            .then_some(())
    })
    .await;
    for _ in 0..3 {
        let again = ports_of(&c.cli(&args).await);
        assert!(
            !again.contains(&first[0]),
            "a task was given port {} that another process listens on: {again:?}",
            first[0]
        );
    }
    drop(stranger);
}

fn alive(pid: i32) -> bool {
    // A zombie counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_no_agent_can_fit_waits_says_so_and_can_be_given_up() {
    let c = Cluster::up().await;
    let url = c.up.url.clone();
    let runner = tokio::spawn(async move {
        wasmos_tests::cli(
            &url,
            &[
                "task", "run", "--id", "huge", "--cpus", "1000", "--", "true",
            ],
        )
        .await
    });
    // Queued in exec, never launched, for longer than the CLI's patience.
    let submitted: f64 = wait_for("the task to be queued", DEADLINE, || async {
        let (_, t) = c.api.get("/frameworks/exec/tasks/huge").await;
        (t["state"] == "QUEUED")
            .then(|| t["submitted_at_ms"].as_f64())
            .flatten()
    })
    .await;
    wait_for("the task to have waited 4 s", DEADLINE, || async {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as f64;
        (now - submitted > 4000.0).then_some(())
    })
    .await;
    assert_eq!(c.api.task_state("huge").await, None, "nothing was launched");
    let kill = c.cli(&["task", "kill", "huge"]).await;
    assert_eq!(kill.code, Some(0), "{kill:?}");
    assert!(kill.stderr.contains("was queued"), "{kill:?}");
    let out = runner.await.unwrap();
    assert!(
        out.stderr
            .contains("waiting for an offer: no offer has 1000 cpus free"),
        "{out:?}"
    );
    assert_eq!(out.code, Some(137), "{out:?}");
    let (_, t) = c.api.get("/frameworks/exec/tasks/huge").await;
    assert_eq!(t["state"], "TASK_KILLED");
}

/// A new task asks for offers again at once, even while the framework
/// holds offers it declined for tasks that wait for placement (here for ten
/// minutes): `echo hi` must not wait behind a unique task that cannot run.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_task_revives_offers_declined_while_others_wait_for_placement() {
    let c = Cluster::up().await;
    let out = c
        .cli(&[
            "plugin",
            "config",
            "exec",
            "refuse_while_waiting_seconds=600",
        ])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    for id in ["solo-1", "solo-2"] {
        c.run_detached(&[
            "--id",
            id,
            "--group",
            "solo",
            "--constraint",
            "hostname:UNIQUE",
            "--",
            "sleep",
            "600",
        ])
        .await;
    }
    c.api.wait_task_state("solo-1", "TASK_RUNNING").await;
    let why = wait_for("solo-2 to say why it waits", DEADLINE, || async {
        let (_, t) = c.api.get("/frameworks/exec/tasks/solo-2").await;
        t["waiting_for"].as_str().map(String::from)
    })
    .await;
    assert!(why.contains("UNIQUE"), "{why}");
    // Declined for 600 s by now; only a revive brings the offer back.
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        c.cli(&["task", "run", "--", "echo", "hi"]),
    )
    .await
    .expect("echo ran long before the ten-minute refuse filter ended");
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "hi\n"),
        "{out:?}"
    );
}

/// Tasks cannot gain privileges through a setuid binary or file
/// capabilities (no_new_privs), in real containers and as plain processes.
#[tokio::test(flavor = "multi_thread")]
async fn tasks_run_with_no_new_privileges_in_every_containerizer_and_native_ones_without_admin_capabilities()
 {
    for containerizer in ["native", "process"] {
        let dir = tempfile::tempdir().unwrap();
        let c = Cluster::up_with(dir, &["--containerizer", containerizer]).await;
        let out = c
            .cli(&[
                "task",
                "run",
                "--",
                "grep",
                "NoNewPrivs",
                "/proc/self/status",
            ])
            .await;
        assert_eq!(out.code, Some(0), "{containerizer}: {out:?}");
        assert_eq!(out.stdout, "NoNewPrivs:\t1\n", "{containerizer}: {out:?}");
        if containerizer == "native" {
            // A root task (the management token may ask for one) holds
            // only Docker's default capabilities: no CAP_SYS_ADMIN (mount),
            // CAP_NET_ADMIN, CAP_SYS_PTRACE, ...
            let caps = c
                .cli(&[
                    "task",
                    "run",
                    "--user",
                    "root",
                    "--",
                    "grep",
                    "^CapBnd",
                    "/proc/self/status",
                ])
                .await;
            assert_eq!(caps.stdout, "CapBnd:\t00000000a80425fb\n", "{caps:?}");
            let mount = c
                .cli(&[
                    "task",
                    "run",
                    "--user",
                    "root",
                    "--shell",
                    "mount -t tmpfs none /mnt",
                ])
                .await;
            assert_ne!(
                mount.code,
                Some(0),
                "a task mounted a filesystem: {mount:?}"
            );
            assert!(
                mount.stderr.contains("permission denied"),
                "refused for want of the capability: {mount:?}"
            );
        }
    }
}

/// Under `ip netns exec`, which remounts /sys, no cgroup hierarchy is
/// mounted: an agent asked for the native containerizer says so and what
/// to do, and exits (it used to panic inside cgroups-rs); under `auto` it
/// runs tasks as plain processes with a warning.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_without_cgroups_says_so_instead_of_panicking() {
    struct Netns(String);
    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "delete", &self.0])
                .status();
        }
    }
    let ns = Netns(format!("wasmos-nocg-{}", std::process::id()));
    let made = std::process::Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap();
    assert!(made.success(), "ip netns add {}", ns.0);
    let run = |containerizer: &'static str| {
        let ns = ns.0.clone();
        async move {
            let data = tempfile::tempdir().unwrap();
            let mut child = tokio::process::Command::new("ip")
                .args(["netns", "exec", &ns])
                .arg(wasmos_tests::wasmos_bin())
                .args(["agent", "--insecure", "--master", "http://127.0.0.1:1"])
                .args(["--listen", "127.0.0.1:0", "--containerizer", containerizer])
                .arg("--data-dir")
                .arg(data.path())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let mut err = child.stderr.take().unwrap();
            let mut text = String::new();
            // Native: the agent ends by itself. Auto: it keeps running (no
            // master to reach); what it said at start is enough.
            let read = async {
                use tokio::io::AsyncReadExt as _;
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = err.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    text.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if text.contains("without isolation") {
                        break;
                    }
                }
            };
            tokio::time::timeout(DEADLINE, read)
                .await
                .expect("the agent says what it does");
            let _ = child.start_kill();
            let status = child.wait().await.unwrap();
            (status.code(), text)
        }
    };
    let (code, text) = run("native").await;
    assert_eq!(code, Some(1), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(
        text.contains("--containerizer native: no cgroup filesystem is mounted")
            && text.contains("nsenter --net="),
        "{text}"
    );
    let (_, text) = run("auto").await;
    assert!(!text.contains("panicked"), "{text}");
    assert!(
        text.contains("tasks run as plain processes, without isolation"),
        "{text}"
    );
}
