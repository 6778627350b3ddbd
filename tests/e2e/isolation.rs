//! The native containerizer on this machine (root): cgroup limits,
//! namespaces, and tasks that outlive a killed agent.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmos_tests::{Cluster, DEADLINE, wait_for};

const NATIVE: &[&str] = &["--containerizer", "native"];

/// The launch record of a task under `up`'s agent.
fn launch_record(c: &Cluster, task: &str) -> Value {
    let p = c
        .dir
        .path()
        .join("data/agent/checkpoint")
        .join(task)
        .join("launch.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// A controller's directory of a task's cgroup (v1, or the v2 unified one).
fn cgroup_dir(controller: &str, container_id: &str) -> PathBuf {
    let v1 = Path::new("/sys/fs/cgroup").join(controller);
    let base = if v1.is_dir() {
        v1
    } else {
        PathBuf::from("/sys/fs/cgroup")
    };
    base.join("wasmos").join(container_id)
}

fn read_u64(p: &Path, key: Option<&str>) -> Option<u64> {
    let s = std::fs::read_to_string(p).ok()?;
    match key {
        None => s.trim().parse().ok(),
        Some(k) => s
            .lines()
            .find_map(|l| l.strip_prefix(k)?.trim().parse().ok()),
    }
}

/// Starts a task, waits until it runs; returns its cgroup's container id.
async fn start_running(c: &Cluster, id: &str, args: &[&str]) -> String {
    let mut all = vec!["--id", id];
    all.extend_from_slice(args);
    c.run_detached(&all).await;
    c.api.wait_task_state(id, "TASK_RUNNING").await;
    launch_record(c, id)["container_id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_hog_is_oom_killed_with_the_memory_reason_while_its_neighbour_lives() {
    let c = Cluster::up_with(tempfile::tempdir().unwrap(), NATIVE).await;
    c.run_detached(&["--id", "calm", "--mem", "32", "--", "sleep", "600"])
        .await;
    c.api.wait_task_state("calm", "TASK_RUNNING").await;
    c.run_detached(&[
        "--id",
        "hog",
        "--mem",
        "32",
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
    let msg = t["status"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("memory limit of 32 MB exceeded"), "{msg}");
    assert_eq!(
        c.api.task_state("calm").await.as_deref(),
        Some("TASK_RUNNING")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_sees_only_its_own_processes_and_its_own_tmp() {
    let c = Cluster::up_with(tempfile::tempdir().unwrap(), NATIVE).await;
    let out = c
        .cli(&[
            "task",
            "run",
            "--",
            "sh",
            "-c",
            "set -- /proc/[0-9]*; echo $#; touch /tmp/wasmos-isolation-probe && echo wrote",
        ])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let mut lines = out.stdout.lines();
    let seen: usize = lines
        .next()
        .unwrap_or_default()
        .parse()
        .unwrap_or(usize::MAX);
    // Its init and its shell, where the host has hundreds.
    assert!(seen <= 3, "the task saw {seen} processes: {out:?}");
    assert_eq!(lines.next(), Some("wrote"));
    assert!(
        !Path::new("/tmp/wasmos-isolation-probe").exists(),
        "the task's /tmp is the host's"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_bomb_is_capped_by_the_pids_limit_and_can_be_killed() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::up_with(dir, &["--containerizer", "native", "--task-pids-max", "64"]).await;
    let cid = start_running(
        &c,
        "bomb",
        &[
            "--cpus",
            "0.2",
            "--",
            "sh",
            "-c",
            // At the limit forks fail, and a shell whose fork fails exits:
            // a subshell keeps starting the tree again while the task
            // itself is a sleep that never forks.
            "b() { b & b & wait; }; (while :; do b; done) 2>/dev/null & exec sleep 600",
        ],
    )
    .await;
    let max = launch_record(&c, "bomb")["limits"]["pids_max"]
        .as_u64()
        .unwrap();
    let dir = cgroup_dir("pids", &cid);
    // The kernel refused forks at the limit...
    wait_for("forks refused at the pids limit", DEADLINE, || async {
        read_u64(&dir.join("pids.events"), Some("max "))
            .filter(|n| *n > 0)
            .map(|_| ())
    })
    .await;
    let current = read_u64(&dir.join("pids.current"), None).unwrap();
    assert!(current <= max, "{current} processes over a limit of {max}");
    // ...and the whole bomb goes with one kill.
    let out = c.cli(&["task", "kill", "bomb"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    c.api.wait_task_state("bomb", "TASK_KILLED").await;
    wait_for("the bomb's cgroup removed", DEADLINE, || async {
        (!dir.exists()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cpu_hog_limited_to_half_a_cpu_stays_near_its_quota() {
    let c = Cluster::up_with(tempfile::tempdir().unwrap(), NATIVE).await;
    // Two busy loops: unlimited they would take both cores.
    let cid = start_running(
        &c,
        "spin",
        &[
            "--cpus",
            "0.5",
            "--",
            "sh",
            "-c",
            "while :; do :; done & while :; do :; done",
        ],
    )
    .await;
    let v1 = cgroup_dir("cpuacct", &cid).join("cpuacct.usage");
    let usage_ns = || -> u64 {
        if v1.exists() {
            read_u64(&v1, None).unwrap()
        } else {
            read_u64(
                &cgroup_dir("cpu", &cid).join("cpu.stat"),
                Some("usage_usec "),
            )
            .unwrap()
                * 1000
        }
    };
    // A window of cpu use over elapsed time: the quota's effect, not a
    // speed.
    let (u0, t0) = (usage_ns(), Instant::now());
    wait_for("two seconds of the hog", DEADLINE, || async {
        (t0.elapsed() >= Duration::from_secs(2)).then_some(())
    })
    .await;
    let (u1, t1) = (usage_ns(), t0.elapsed());
    let cpus = (u1 - u0) as f64 / t1.as_nanos() as f64;
    assert!(
        cpus > 0.2 && cpus < 0.8,
        "the hog used {cpus:.2} cpus with a quota of 0.5"
    );
    let out = c.cli(&["task", "kill", "spin"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_outlive_a_killed_agent_and_are_recovered_with_their_real_exit() {
    let mut c = Cluster::up_with(tempfile::tempdir().unwrap(), NATIVE).await;
    c.run_detached(&[
        "--id",
        "long",
        "--",
        "sh",
        "-c",
        "echo started; exec sleep 600",
    ])
    .await;
    c.run_detached(&["--id", "short", "--", "sh", "-c", "sleep 4; exit 7"])
        .await;
    c.api.wait_task_state("long", "TASK_RUNNING").await;
    c.api.wait_task_state("short", "TASK_RUNNING").await;
    let checkpoint = c.dir.path().join("data/agent/checkpoint");
    let sup: Value =
        serde_json::from_slice(&std::fs::read(checkpoint.join("long/supervisor.json")).unwrap())
            .unwrap();

    // kill -9 the whole one-machine cluster: master and agent.
    c.up.kill9().await;
    // `short` ends while nobody watches; its supervisor records how.
    wait_for("short's exit recorded", DEADLINE, || async {
        checkpoint.join("short/exit.json").exists().then_some(())
    })
    .await;
    let init = nix::unistd::Pid::from_raw(sup["init_pid"].as_i64().unwrap() as i32);
    assert!(
        nix::sys::signal::kill(init, None).is_ok(),
        "long died with its agent"
    );

    let c = Cluster::up_with(c.dir, NATIVE).await;
    let t = c.api.wait_task_state("short", "TASK_FAILED").await;
    assert_eq!(t["status"]["exit_code"], 7, "{t}");
    assert_eq!(
        c.api.task_state("long").await.as_deref(),
        Some("TASK_RUNNING")
    );
    // Not restarted: the same process, which printed once.
    let again: Value =
        serde_json::from_slice(&std::fs::read(checkpoint.join("long/supervisor.json")).unwrap())
            .unwrap();
    assert_eq!(again["init_pid"], sup["init_pid"]);
    let out = c.cli(&["task", "logs", "long"]).await;
    assert_eq!(out.stdout, "started\n", "{out:?}");
    // And it is still ours to kill.
    let out = c.cli(&["task", "kill", "long"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    c.api.wait_task_state("long", "TASK_KILLED").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_over_its_disk_limit_fails_and_old_sandboxes_are_collected() {
    let c = Cluster::up_with(
        tempfile::tempdir().unwrap(),
        &[
            "--disk-watch-interval-ms",
            "200",
            "--sandbox-gc-age-secs",
            "2",
        ],
    )
    .await;
    c.run_detached(&[
        "--id",
        "filler",
        "--disk",
        "4",
        "--",
        "sh",
        "-c",
        "dd if=/dev/zero of=big bs=1M count=16 2>/dev/null; exec sleep 600",
    ])
    .await;
    let t = c.api.wait_task_state("filler", "TASK_FAILED").await;
    assert_eq!(
        t["status"]["reason"], "REASON_CONTAINER_LIMITATION_DISK",
        "{t}"
    );
    let msg = t["status"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("disk limit of 4 MB exceeded"), "{msg}");
    // Forgotten once its end is acknowledged, then collected when old.
    let sandbox = c.dir.path().join("data/agent/sandboxes/filler");
    wait_for("the old sandbox to be collected", DEADLINE, || async {
        (!sandbox.exists()).then_some(())
    })
    .await;
}

/// Runs a task with one GPU that prints which it was given.
async fn run_gpu_task(c: &Cluster, id: &str) {
    c.run_detached(&[
        "--id",
        id,
        "--gpus",
        "1",
        "--",
        "sh",
        "-c",
        "echo \"gpu=$CUDA_VISIBLE_DEVICES\"; exec sleep 600",
    ])
    .await;
}

/// A task's logged output, once it has printed a line.
async fn first_line(c: &Cluster, task: &str) -> String {
    wait_for(&format!("{task} to print"), DEADLINE, || async {
        let out = c.cli(&["task", "logs", task]).await;
        out.stdout.lines().next().map(str::to_string)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn gpus_of_a_task_recovered_by_a_restarted_agent_are_not_given_to_another() {
    // Two GPUs, as a fake `nvidia-smi` first on the agent's PATH lists them.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let smi = bin.join("nvidia-smi");
    std::fs::write(
        &smi,
        "#!/bin/sh\necho '0, Fake GPU, 1024, GPU-fake-0'\necho '1, Fake GPU, 1024, GPU-fake-1'\n",
    )
    .unwrap();
    std::fs::set_permissions(&smi, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [("PATH", path)];
    let mut c = Cluster::up_with_env(dir, NATIVE, &env).await;
    run_gpu_task(&c, "first").await;
    c.api.wait_task_state("first", "TASK_RUNNING").await;
    assert_eq!(first_line(&c, "first").await, "gpu=0");

    // The agent dies and comes back; `first` runs on with GPU 0.
    c.up.kill9().await;
    let c = Cluster::up_with_env(c.dir, NATIVE, &env).await;
    assert_eq!(
        c.api.task_state("first").await.as_deref(),
        Some("TASK_RUNNING")
    );
    run_gpu_task(&c, "second").await;
    c.api.wait_task_state("second", "TASK_RUNNING").await;
    assert_eq!(
        first_line(&c, "second").await,
        "gpu=1",
        "GPU 0 is still the recovered task's"
    );

    // Given back when the recovered task ends.
    let out = c.cli(&["task", "kill", "first"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    c.api.wait_task_state("first", "TASK_KILLED").await;
    run_gpu_task(&c, "third").await;
    c.api.wait_task_state("third", "TASK_RUNNING").await;
    assert_eq!(first_line(&c, "third").await, "gpu=0");
}
