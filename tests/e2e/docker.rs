//! The Docker containerizer against this machine's real Docker engine, with
//! a busybox image built locally (nothing can be pulled here).

use serde_json::Value;
use wasmos_tests::{Cluster, DEADLINE, DockerJanitor, busybox_image, containers_under, wait_for};

const DOCKER: &[&str] = &["--docker", "on"];

async fn up() -> (Cluster, DockerJanitor) {
    let dir = tempfile::tempdir().unwrap();
    let janitor = DockerJanitor(dir.path().to_path_buf());
    (Cluster::up_with(dir, DOCKER).await, janitor)
}

fn inspect(id: &str) -> Value {
    let out = std::process::Command::new("docker")
        .args(["inspect", id])
        .output()
        .unwrap();
    assert!(out.status.success(), "docker inspect {id}: {out:?}");
    serde_json::from_slice::<Value>(&out.stdout).unwrap()[0].clone()
}

/// The container running task `task`.
fn container_of(c: &Cluster, task: &str) -> Value {
    containers_under(c.dir.path())
        .iter()
        .map(|id| inspect(id))
        .find(|v| v["Config"]["Labels"]["wasmos.task-id"] == task)
        .unwrap_or_else(|| panic!("no container labelled with task {task}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_docker_task_runs_in_its_image_and_its_output_reaches_the_sandbox() {
    let image = busybox_image();
    let (c, _j) = up().await;
    let out = c
        .cli(&[
            "task",
            "run",
            "--docker-image",
            image,
            "--",
            "sh",
            "-c",
            "echo in-image $MESOS_SANDBOX; ls /bin/busybox; grep NoNewPrivs /proc/self/status; echo uid=$(id -u) > $MESOS_SANDBOX/who; cat $MESOS_SANDBOX/who; exit 3",
        ])
        .await;
    assert_eq!(out.code, Some(3), "{out:?}");
    // Not root, nor the image's user: the agent's unprivileged task user
    // (nobody), who owns the sandbox it writes to.
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid;
    assert!(out.stdout.contains(&format!("uid={nobody}\n")), "{out:?}");
    // Started with no-new-privileges: no setuid binary raises its rights.
    assert!(out.stdout.contains("NoNewPrivs:\t1"), "{out:?}");
    assert!(
        out.stdout
            .contains("in-image /mnt/mesos/sandbox\n/bin/busybox"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_docker_task_gets_its_limits_labels_and_published_port_then_is_killed_and_removed() {
    let image = busybox_image();
    let (c, _j) = up().await;
    c.run_detached(&["--id",
            "web",
            "--cpus",
            "0.5",
            "--mem",
            "48",
            "--ports",
            "1",
            "--docker-image",
            image,
            "--docker-network",
            "bridge",
            "--publish",
            "8080",
            "--",
            "sh",
            "-c",
            "echo hello-docker > /mnt/mesos/sandbox/index.html; exec httpd -f -p 8080 -h /mnt/mesos/sandbox",
        ]).await;
    c.api.wait_task_state("web", "TASK_RUNNING").await;
    let ct = container_of(&c, "web");
    let hc = &ct["HostConfig"];
    assert_eq!(hc["Memory"], 48 << 20, "{hc}");
    assert_eq!(hc["MemorySwap"], 48 << 20, "no swap beyond the limit: {hc}");
    assert_eq!(hc["NanoCpus"], 500_000_000u64, "{hc}");
    assert_eq!(ct["Config"]["Labels"]["wasmos.framework-id"], "exec");
    let host_port: u16 = hc["PortBindings"]["8080/tcp"][0]["HostPort"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("8080 is not published: {hc}"));
    // The host port is the one the task was given.
    let (_, task) = c.api.get("/api/wasmos/v1/tasks/web").await;
    assert!(
        task.to_string().contains(&host_port.to_string()),
        "host port {host_port} is not the task's: {task}"
    );
    let body = wait_for("the published port to answer", DEADLINE, || async {
        let r = reqwest::get(format!("http://127.0.0.1:{host_port}/index.html"))
            .await
            .ok()?;
        r.text().await.ok()
    })
    .await;
    assert_eq!(body, "hello-docker\n");

    let out = c.cli(&["task", "kill", "web"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    c.api.wait_task_state("web", "TASK_KILLED").await;
    wait_for("the container removed", DEADLINE, || async {
        containers_under(c.dir.path()).is_empty().then_some(())
    })
    .await;
}

/// Isolators' limits are enforced in containers as on native tasks, and
/// one the engine cannot set refuses the launch instead of being dropped.
#[tokio::test(flavor = "multi_thread")]
async fn a_docker_task_gets_its_isolators_rlimits_or_is_refused_one_docker_cannot_set() {
    let image = busybox_image();
    let (c, _j) = up().await;
    let out = c
        .cli(&[
            "task",
            "run",
            "-l",
            "wasmos.rlimit.nofile=77:99",
            "--docker-image",
            image,
            "--",
            "sh",
            "-c",
            "ulimit -Sn; ulimit -Hn",
        ])
        .await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "77\n99\n"),
        "{out:?}"
    );
    let refused = c
        .cli(&[
            "task",
            "run",
            "-l",
            "wasmos.rlimit.as=1073741824",
            "--docker-image",
            image,
            "--",
            "true",
        ])
        .await;
    assert_ne!(refused.code, Some(0), "{refused:?}");
    assert!(
        refused.stderr.contains("rlimit as"),
        "the refusal names the limit: {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_docker_memory_hog_fails_with_the_memory_reason() {
    let image = busybox_image();
    let (c, _j) = up().await;
    c.run_detached(&[
        "--id",
        "hog",
        "--mem",
        "32",
        "--docker-image",
        image,
        "--",
        "sh",
        "-c",
        "x=xxxxxxxxxxxxxxxx; while :; do x=$x$x; done",
    ])
    .await;
    let t = c.api.wait_task_state("hog", "TASK_FAILED").await;
    assert_eq!(
        t["status"]["reason"], "REASON_CONTAINER_LIMITATION_MEMORY",
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_that_is_not_here_fails_the_launch_with_what_to_do() {
    let (c, _j) = up().await;
    c.run_detached(&[
        "--id",
        "nope",
        "--docker-image",
        "wasmos-test/not-here:1",
        "--",
        "true",
    ])
    .await;
    let t = c.api.wait_task_state("nope", "TASK_FAILED").await;
    assert_eq!(
        t["status"]["reason"], "REASON_CONTAINER_LAUNCH_FAILED",
        "{t}"
    );
    let msg = t["status"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("cannot pull image wasmos-test/not-here:1") && msg.contains("docker load"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn native_and_docker_tasks_outlive_a_killed_agent_and_keep_their_state() {
    let image = busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let _j = DockerJanitor(dir.path().to_path_buf());
    let args = &["--docker", "on", "--containerizer", "native"];
    let mut c = Cluster::up_with(dir, args).await;
    for (id, cmd) in [
        ("native-long", "echo n; exec sleep 600"),
        ("native-short", "sleep 3; exit 5"),
    ] {
        c.run_detached(&["--id", id, "--", "sh", "-c", cmd]).await;
    }
    for (id, cmd) in [
        ("docker-long", "echo d; exec sleep 600"),
        ("docker-short", "sleep 3; exit 6"),
    ] {
        c.run_detached(&["--id", id, "--docker-image", image, "--", "sh", "-c", cmd])
            .await;
    }
    for id in ["native-long", "native-short", "docker-long", "docker-short"] {
        c.api.wait_task_state(id, "TASK_RUNNING").await;
    }
    let before = container_of(&c, "docker-long");

    c.up.kill9().await;
    // The short ones end while nobody watches.
    wait_for("docker-short to stop", DEADLINE, || async {
        containers_under(c.dir.path())
            .iter()
            .map(|id| inspect(id))
            .any(|v| {
                v["Config"]["Labels"]["wasmos.task-id"] == "docker-short"
                    && v["State"]["Running"] == false
            })
            .then_some(())
    })
    .await;
    wait_for("native-short's exit recorded", DEADLINE, || async {
        c.dir
            .path()
            .join("data/agent/checkpoint/native-short/exit.json")
            .exists()
            .then_some(())
    })
    .await;

    let c = Cluster::up_with(c.dir, args).await;
    let t = c.api.wait_task_state("native-short", "TASK_FAILED").await;
    assert_eq!(t["status"]["exit_code"], 5, "{t}");
    let t = c.api.wait_task_state("docker-short", "TASK_FAILED").await;
    assert_eq!(t["status"]["exit_code"], 6, "{t}");
    for id in ["native-long", "docker-long"] {
        assert_eq!(
            c.api.task_state(id).await.as_deref(),
            Some("TASK_RUNNING"),
            "{id}"
        );
    }
    // Not restarted: the same container, started once.
    let after = container_of(&c, "docker-long");
    assert_eq!(after["Id"], before["Id"]);
    assert_eq!(after["State"]["StartedAt"], before["State"]["StartedAt"]);
    assert_eq!(c.cli(&["task", "logs", "native-long"]).await.stdout, "n\n");
    // Still ours to kill, both.
    for id in ["native-long", "docker-long"] {
        let out = c.cli(&["task", "kill", id]).await;
        assert_eq!(out.code, Some(0), "{out:?}");
    }
    c.api.wait_task_state("native-long", "TASK_KILLED").await;
    c.api.wait_task_state("docker-long", "TASK_KILLED").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_health_check_runs_inside_the_container() {
    let image = busybox_image();
    let (c, _j) = up().await;
    // `/tmp/inside` exists only in the container's own filesystem.
    let (code, body) = c
        .api
        .post(
            "/frameworks/exec/tasks",
            &serde_json::json!({
                "id": "dhc",
                "argv": ["sh", "-c", "touch /tmp/inside; exec sleep 600"],
                "container": {"type": "DOCKER", "docker": {"image": image, "network": "NONE"}},
                "health_check": {
                    "plugin": "health-command",
                    "config": {"command": "test -e /tmp/inside"},
                    "delay_seconds": 0, "interval_seconds": 1, "timeout_seconds": 5,
                    "grace_period_seconds": 10
                }
            }),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let t = wait_for("the container's check to pass", DEADLINE, || async {
        let (_, t) = c.api.get("/api/wasmos/v1/tasks/dhc").await;
        (t["status"]["healthy"] == true).then_some(t)
    })
    .await;
    assert_eq!(t["status"]["message"], "command exited 0", "{t}");
    assert!(!std::path::Path::new("/tmp/inside").exists());
}
