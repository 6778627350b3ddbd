//! The guest libraries for plugin authors (sdk/python, ...): their unit
//! tests, and the examples written on them doing real work on a cluster.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use wasmos_tests::{
    Api, Cluster, DEADLINE, Masters, Output, Racks, cli, cli_within, plugin_toolchains, root,
    wait_for, wasmos_bin,
};

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn the_python_library_and_its_examples_pass_their_unit_tests_in_every_world() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = plugin_toolchains(&mut std::process::Command::new(
        root().join("sdk/python/test.sh"),
    ))
    .env("OUT_DIR", out_dir.path())
    .output()
    .expect("run sdk/python/test.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // unittest reports on stderr: one "Ran N tests" per suite, none empty.
    let ran: Vec<u32> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("Ran ")?.split(' ').next()?.parse().ok())
        .collect();
    assert!(
        ran.len() >= 2,
        "the library's and the work queue's: {stderr}"
    );
    assert!(ran.iter().all(|n| *n > 0), "{stderr}");
}

/// Installs a plugin from `manifest` and `component` through `master`,
/// again while the answer is that the leader changed before the commit
/// (the same component twice is one install). A Python component is
/// 18 MB: the master compiles it before it answers.
async fn install(master: &str, manifest: &std::path::Path, component: &std::path::Path) -> Output {
    let args = [
        "plugin",
        "install",
        path(manifest),
        "--component",
        path(component),
    ];
    let mut tries = 0;
    loop {
        let out = cli_within(master, &args, Duration::from_secs(300)).await;
        tries += 1;
        if out.code == Some(0) || !out.stderr.contains("the leader changed") || tries == 5 {
            return out;
        }
    }
}

/// Waits until the leader has loaded the placement plugin `name`.
async fn wait_loaded(api: &Api, name: &str) {
    wait_for(
        &format!("the leader to load {name}"),
        Duration::from_secs(180),
        || async {
            let (_, p) = api.get(&format!("/api/wasmos/v1/plugins/{name}")).await;
            (p["health"] == "healthy").then_some(())
        },
    )
    .await;
}

/// Three agents on two racks (h1 and h2 on r1, h3 on r2, 1 cpu each) with
/// the placement plugin of `examples/<example>` (named `name`) loaded.
async fn racks_with(example: &str, name: &str) -> (Racks, Api) {
    let component = wasmos_tests::example_component(example);
    let r = Racks::start(&[("h1", "r1"), ("h2", "r1"), ("h3", "r2")]).await;
    let api = Api::new(&r.master.url);
    let manifest = root().join("examples").join(example).join("plugin.toml");
    let installed = install(&r.master.url, &manifest, &component).await;
    assert_eq!(installed.code, Some(0), "{installed:?}");
    wait_loaded(&api, name).await;
    (r, api)
}

/// `wasmos task run -d --id ID --cpus CPUS --constraint C -- sleep 600`.
async fn run_sleep(master: &str, id: &str, cpus: &str, constraint: &str) -> Output {
    let args = [
        "task",
        "run",
        "-d",
        "--id",
        id,
        "--cpus",
        cpus,
        "--constraint",
        constraint,
        "--",
        "sleep",
        "600",
    ];
    cli(master, &args).await
}

/// The host task `id` runs on, once it runs.
async fn running_on(api: &Api, id: &str) -> String {
    let t = api.wait_task_state(id, "TASK_RUNNING").await;
    t["hostname"].as_str().unwrap_or_default().to_string()
}

/// A job as the work queue's API shows it, once `ready` holds for it.
async fn wait_job(api: &Api, id: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    wait_for(
        &format!("job {id} {what}"),
        Duration::from_secs(60),
        || async {
            let (code, job) = api.get(&format!("/frameworks/work-queue/jobs/{id}")).await;
            (code == 200 && ready(&job)).then_some(job)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_work_queue_runs_jobs_from_its_api_and_carries_on_after_a_leader_kill() {
    let component = wasmos_tests::example_component("work-queue-python");
    let dir = tempfile::tempdir().unwrap();
    // The 18 MB component is one raft entry: with the suite's 400 ms the
    // followers' heartbeats, which wait behind it, time out and leadership
    // moves while it commits (plugin bytes in raft: issue 19).
    let mut m = Masters::start_with_election_timeout(3, dir.path(), 2000).await;
    let (leader, _) = m.wait_leader(&[1, 2, 3], None).await;
    let _agent = m.start_agent(dir.path()).await;
    let urls = m.urls();
    let manifest = root().join("examples/work-queue-python/plugin.toml");
    let installed = install(&urls, &manifest, &component).await;
    assert_eq!(installed.code, Some(0), "{installed:?}");
    let api = Api::new(&m.url(leader));
    // Every master compiles the 18 MB component first.
    wait_for(
        "the work queue to serve",
        Duration::from_secs(180),
        || async { (api.get("/frameworks/work-queue/").await.0 == 200).then_some(()) },
    )
    .await;

    // Bad input is refused with the field named, and nothing is queued.
    let (code, body) = api
        .post(
            "/frameworks/work-queue/jobs",
            &json!({"cmd": "true", "cpus": "lots"}),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("cpus"), "{body}");

    let submit = |job: Value| {
        let api = &api;
        async move {
            let (code, body) = api.post("/frameworks/work-queue/jobs", &job).await;
            assert_eq!(code, 201, "{job}: {body}");
            body
        }
    };
    let quick = submit(json!({"id": "quick", "cmd": "echo quick-done"})).await;
    // The master tells the plugin who called; the queue records it.
    assert_eq!(quick["submitted_by"], "token:management", "{quick}");
    submit(json!({"id": "slow", "cmd": "sleep 5; echo slow-done"})).await;
    submit(json!({"id": "flaky", "cmd": "exit 3", "retries": 1})).await;
    wait_job(&api, "quick", "finished", |j| j["state"] == "finished").await;
    let logs = cli(&urls, &["task", "logs", "wq.quick.1"]).await;
    assert_eq!(logs.stdout, "quick-done\n", "{logs:?}");
    wait_job(&api, "slow", "running", |j| j["state"] == "running").await;

    // The leader dies while `slow` runs: the next leader's instance finds
    // the queue in kv, takes the task's status, and runs nothing twice.
    // (The 18 MB install may have moved leadership: ask again.)
    let (leader, _) = m.wait_leader(&m.running(), None).await;
    m.kill9(leader).await;
    let survivors = m.running();
    let (next, _) = m.wait_leader(&survivors, Some(leader)).await;
    let api = Api::new(&m.url(next));
    let after = wait_for("the new leader's queue to take a job", DEADLINE, || async {
        let (code, body) = api
            .post(
                "/frameworks/work-queue/jobs",
                &json!({"id": "after", "cmd": "echo after-done"}),
            )
            .await;
        (code == 201).then_some(body)
    })
    .await;
    assert_eq!(after["state"], "queued", "{after}");
    let slow = wait_job(&api, "slow", "finished", |j| j["state"] == "finished").await;
    assert_eq!(slow["attempts"], 1, "{slow}");
    let flaky = wait_job(&api, "flaky", "failed", |j| j["state"] == "failed").await;
    assert_eq!(flaky["attempts"], 2, "one run and one retry: {flaky}");
    assert_eq!(flaky["exit_code"], 3, "{flaky}");
    wait_job(&api, "after", "finished", |j| j["state"] == "finished").await;
    for (task, out) in [("wq.slow.1", "slow-done\n"), ("wq.after.1", "after-done\n")] {
        let logs = cli(&urls, &["task", "logs", task]).await;
        assert_eq!(logs.stdout, out, "{task}: {logs:?}");
    }
    assert_eq!(api.task_state("wq.slow.2").await, None, "slow ran once");
    let (_, counts) = api.get("/frameworks/work-queue/").await;
    assert_eq!(counts["finished"], 3, "{counts}");
    assert_eq!(counts["failed"], 1, "{counts}");
    let (_, failed) = api.get("/frameworks/work-queue/jobs?state=failed").await;
    assert_eq!(failed.as_array().map(Vec::len), Some(1), "{failed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_bin_packing_plugin_puts_tasks_on_the_fullest_agent_with_room() {
    let (r, api) = racks_with("placement-binpack-python", "binpack-py").await;
    let url = r.master.url.clone();

    // A rule the plugin cannot evaluate is refused when submitted.
    let bad = run_sleep(&url, "bad", "0.1", "rack:BINPACK").await;
    assert_ne!(bad.code, Some(0), "{bad:?}");
    assert!(
        bad.stderr.contains("must be one of cpus, mem, disk"),
        "{bad:?}"
    );

    // Each agent offers 1 cpu. Fill h1 to 0.6 and h3 to 0.3.
    for (id, cpus, host) in [("p1", "0.6", "h1"), ("p3", "0.3", "h3")] {
        let out = run_sleep(&url, id, cpus, &format!("hostname:CLUSTER:{host}")).await;
        assert_eq!(out.code, Some(0), "{out:?}");
    }
    assert_eq!(running_on(&api, "p1").await, "h1");
    assert_eq!(running_on(&api, "p3").await, "h3");

    // The fullest agent with room takes the task: h1 (0.9 once there),
    // then, with h1 out of room, h3 (0.6) over the empty h2.
    for (id, want) in [("b1", "h1"), ("b2", "h3")] {
        let out = run_sleep(&url, id, "0.3", "cpus:BINPACK").await;
        assert_eq!(out.code, Some(0), "{out:?}");
        assert_eq!(running_on(&api, id).await, want, "{id}");
    }
    // A maximum fill refuses agents the task would fill past it: h3 would
    // be at 0.9, over 0.5; only the empty h2 stays.
    let out = run_sleep(&url, "b3", "0.3", "cpus:BINPACK:0.5").await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(running_on(&api, "b3").await, "h2");
    // With a fill no agent can keep, the task waits and says why.
    let out = run_sleep(&url, "b4", "0.3", "cpus:BINPACK:0.2").await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let waiting = wait_for("b4 to say why it waits", DEADLINE, || async {
        let (_, t) = api.get("/frameworks/exec/tasks/b4").await;
        t["waiting_for"].as_str().map(String::from)
    })
    .await;
    assert!(
        waiting.contains("binpack-py") && waiting.contains("BINPACK"),
        "{waiting}"
    );
    assert_eq!(api.task_state("b4").await, None, "nothing was launched");
}

/// The soft and hard values of one line of /proc/self/limits ("Max open
/// files  256  256  files").
fn limit_of(limits: &str, name: &str) -> (String, String) {
    let line = limits
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {limits}"));
    let rest: Vec<&str> = line[name.len()..].split_whitespace().collect();
    (rest[0].to_string(), rest[1].to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_c_isolator_sets_each_tasks_limits_from_its_labels() {
    let component = wasmos_tests::example_component("isolator-limits-c");
    let c = Cluster::up().await;
    let manifest = root().join("examples/isolator-limits-c/plugin.toml");
    let installed = install(&c.up.url, &manifest, &component).await;
    assert_eq!(installed.code, Some(0), "{installed:?}");
    let agent = c.agent_api();
    wasmos_tests::wait_agent_plugin(&agent, "limits-c").await;

    let run = c
        .cli(&[
            "task",
            "run",
            "--id",
            "limited",
            "-l",
            "limits/nofile=256",
            "-l",
            // RLIMIT_NPROC counts the user's processes on the whole host
            // (every test's tasks run as the same unprivileged user).
            "limits/nproc=3000:4000",
            "--",
            "sh",
            "-c",
            "cat /proc/self/limits; echo \"got $WASMOS_LIMITS\"",
        ])
        .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let logs = c.cli(&["task", "logs", "limited"]).await.stdout;
    assert_eq!(
        limit_of(&logs, "Max open files"),
        ("256".into(), "256".into())
    );
    assert_eq!(
        limit_of(&logs, "Max processes"),
        ("3000".into(), "4000".into())
    );
    assert!(logs.contains("got nofile=256,nproc=3000:4000"), "{logs}");
    // What the isolator logged on the agent reaches the master with the
    // agent's heartbeats; its calls are counted there too.
    let lines = wait_for(
        "the isolator's log line at the master",
        DEADLINE,
        || async {
            let out = c.cli(&["plugin", "logs", "limits-c"]).await;
            out.stdout
                .contains("task limited: nofile=256,nproc=3000:4000")
                .then_some(out.stdout)
        },
    )
    .await;
    assert!(lines.contains("DEBUG [agent "), "{lines}");
    let (_, shown) = c.api.get("/api/wasmos/v1/plugins/limits-c").await;
    assert!(shown["stats"]["calls"].as_u64() >= Some(1), "{shown}");
    assert!(shown["stats"]["instances"].as_u64() >= Some(1), "{shown}");

    // Bad labels fail the launch with the isolator's reason.
    for (id, label, why) in [
        (
            "bad-number",
            "limits/nofile=lots",
            "expected N or SOFT:HARD",
        ),
        ("too-high", "limits/nofile=100000", "ceiling of 65536"),
        ("bad-name", "limits/nofiles=10", "is not one of nofile"),
    ] {
        let out = c
            .cli(&["task", "run", "--id", id, "-l", label, "--", "true"])
            .await;
        assert_ne!(out.code, Some(0), "{id}: {out:?}");
        let t = c.api.wait_task_state(id, "TASK_FAILED").await;
        let msg = t["status"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("limits-c") && msg.contains(why), "{id}: {msg}");
    }
    // A task without such labels is left as it was.
    let plain = c
        .cli(&[
            "task",
            "run",
            "--id",
            "plain",
            "--",
            "sh",
            "-c",
            "echo \"[$WASMOS_LIMITS]\"",
        ])
        .await;
    assert_eq!(plain.code, Some(0), "{plain:?}");
    assert_eq!(c.cli(&["task", "logs", "plain"]).await.stdout, "[]\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_c_placement_plugin_prefers_agents_without_refusing_the_others() {
    let (r, api) = racks_with("placement-prefer-c", "prefer-c").await;
    let url = r.master.url.clone();

    let bad = run_sleep(&url, "bad", "0.1", "rack:PREFER").await;
    assert_ne!(bad.code, Some(0), "{bad:?}");
    assert!(
        bad.stderr.contains("needs the value(s) to prefer"),
        "{bad:?}"
    );

    // The preferred rack while it has room...
    let out = run_sleep(&url, "q1", "0.6", "rack:PREFER:r2").await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(running_on(&api, "q1").await, "h3");
    // ...and elsewhere, at once, when it has none.
    let out = run_sleep(&url, "q2", "0.6", "rack:PREFER:r2").await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let second = running_on(&api, "q2").await;
    assert!(second == "h1" || second == "h2", "{second}");
    // One of several values; h3 has 0.4 cpus left.
    let out = run_sleep(&url, "q3", "0.3", "hostname:PREFER:h9|h3").await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(running_on(&api, "q3").await, "h3");
}

/// `wasmos ARGS` run in `dir` with the plugin toolchains; its output.
fn wasmos_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    plugin_toolchains(&mut std::process::Command::new(wasmos_bin()))
        // The Rust scaffold's build, warm from one run to the next.
        .env("CARGO_TARGET_DIR", root().join("target/scaffolds"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run wasmos")
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_made_by_plugin_new_build_with_one_command_and_install_with_the_next() {
    let work = tempfile::tempdir().unwrap();
    let made = [
        ("hello-c", "framework", "c"),
        ("avoid-py", "placement", "python"),
        ("nofile-rs", "isolator", "rust"),
    ];
    for (name, kind, lang) in made {
        let new = wasmos_in(
            work.path(),
            &["plugin", "new", name, "--kind", kind, "--lang", lang],
        );
        let said = String::from_utf8_lossy(&new.stdout);
        assert!(new.status.success(), "{name}: {new:?}");
        assert!(said.contains("wasmos plugin build"), "{said}");
        let build = wasmos_in(work.path(), &["plugin", "build", name]);
        let said = String::from_utf8_lossy(&build.stdout);
        assert!(build.status.success(), "{name}: {build:?}");
        assert!(
            said.contains(&format!("built {name}/{name}.wasm")),
            "{said}"
        );
    }
    // The scaffold's own test runs (the Python one on a fake host).
    let test = plugin_toolchains(&mut std::process::Command::new(
        work.path().join("avoid-py/test.sh"),
    ))
    .output()
    .unwrap();
    assert!(test.status.success(), "{test:?}");
    assert!(
        String::from_utf8_lossy(&test.stderr).contains("Ran 1 test"),
        "{test:?}"
    );
    // Again: the directory exists.
    let again = wasmos_in(
        work.path(),
        &["plugin", "new", "avoid-py", "--kind", "placement"],
    );
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists"),
        "{again:?}"
    );

    let c = Cluster::up().await;
    for (name, _, _) in made {
        let out = cli_within(
            &c.up.url,
            &["plugin", "install", path(&work.path().join(name))],
            Duration::from_secs(300),
        )
        .await;
        assert_eq!(out.code, Some(0), "{name}: {out:?}");
    }
    // The framework (in C) serves and launches.
    wait_for("hello-c to serve", DEADLINE, || async {
        (c.api.get("/frameworks/hello-c/").await.0 == 200).then_some(())
    })
    .await;
    let (code, body) = c.api.post("/frameworks/hello-c/run", &json!({})).await;
    assert_eq!(code, 202, "{body}");
    c.api.wait_task_state("hello-c-1", "TASK_FINISHED").await;
    let logs = c.cli(&["task", "logs", "hello-c-1"]).await;
    assert_eq!(logs.stdout, "hello from a Wasm framework\n", "{logs:?}");
    let (_, counts) = c.api.get("/frameworks/hello-c/").await;
    assert_eq!(counts, json!({"launched": 1, "waiting": 0}));
    // The placement plugin checks its rules.
    wait_loaded(&c.api, "avoid-py").await;
    let bad = c
        .cli(&["task", "run", "--constraint", "rack:AVOID", "--", "true"])
        .await;
    assert!(bad.stderr.contains("needs a value to avoid"), "{bad:?}");
    // The isolator caps every task's open files.
    let agent = c.agent_api();
    wasmos_tests::wait_agent_plugin(&agent, "nofile-rs").await;
    let run = c
        .cli(&[
            "task",
            "run",
            "--id",
            "capped",
            "--constraint",
            "hostname:AVOID:elsewhere",
            "--",
            "sh",
            "-c",
            "echo \"$WASMOS_NOFILE\"; grep 'Max open files' /proc/self/limits",
        ])
        .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let logs = c.cli(&["task", "logs", "capped"]).await.stdout;
    assert!(logs.starts_with("4096\n"), "{logs}");
    assert_eq!(
        limit_of(&logs, "Max open files"),
        ("4096".into(), "4096".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_framework_upgraded_live_keeps_its_state_and_tasks_and_can_be_rolled_back() {
    let v1 = wasmos_tests::example_component("work-queue-python");
    // Version 0.2.0: the same queue, whose summary also names its version.
    let src = tempfile::tempdir().unwrap();
    let v2_dir = src.path().join("work-queue-v2");
    std::fs::create_dir(&v2_dir).unwrap();
    let example = root().join("examples/work-queue-python");
    for file in ["app.py", "plugin.toml", "build.sh"] {
        std::fs::copy(example.join(file), v2_dir.join(file)).unwrap();
    }
    let app = std::fs::read_to_string(v2_dir.join("app.py")).unwrap();
    let patched = app.replace(
        "return Response.json(200, self.counts())",
        "return Response.json(200, {**self.counts(), \"version\": 2})",
    );
    assert_ne!(app, patched, "the summary handler moved; update this test");
    std::fs::write(v2_dir.join("app.py"), patched).unwrap();
    let manifest = std::fs::read_to_string(v2_dir.join("plugin.toml")).unwrap();
    std::fs::write(
        v2_dir.join("plugin.toml"),
        manifest.replace("version = \"0.1.0\"", "version = \"0.2.0\""),
    )
    .unwrap();
    // The example's build.sh finds the library relative to itself.
    let v2 = v2_dir.join("work-queue.wasm");
    let built = plugin_toolchains(&mut std::process::Command::new(
        root().join("sdk/python/build.sh"),
    ))
    .args(["framework", path(&v2_dir), "app", path(&v2)])
    .output()
    .unwrap();
    assert!(built.status.success(), "{built:?}");

    let c = Cluster::up().await;
    let out = install(&c.up.url, &example.join("plugin.toml"), &v1).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    wait_for(
        "the work queue to serve",
        Duration::from_secs(120),
        || async { (c.api.get("/frameworks/work-queue/").await.0 == 200).then_some(()) },
    )
    .await;
    for job in [
        json!({"id": "long", "cmd": "sleep 600"}),
        json!({"id": "short", "cmd": "echo short-done"}),
    ] {
        let (code, body) = c.api.post("/frameworks/work-queue/jobs", &job).await;
        assert_eq!(code, 201, "{body}");
    }
    wait_job(&c.api, "long", "running", |j| j["state"] == "running").await;
    wait_job(&c.api, "short", "finished", |j| j["state"] == "finished").await;
    let before = c.api.wait_task_state("wq.long.1", "TASK_RUNNING").await;

    // Upgrade in place: the new code serves the same jobs; the task runs on.
    let out = install(&c.up.url, &v2_dir.join("plugin.toml"), &v2).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("installed work-queue 0.2.0"), "{out:?}");
    assert!(
        out.stderr.contains("replaced version 0.1.0") && out.stderr.contains("rollback"),
        "{out:?}"
    );
    let summary = wait_for("the new version to serve", DEADLINE, || async {
        let (code, v) = c.api.get("/frameworks/work-queue/").await;
        (code == 200 && v["version"] == 2).then_some(v)
    })
    .await;
    assert_eq!(summary["running"], 1, "{summary}");
    assert_eq!(summary["finished"], 1, "{summary}");
    let during = c.api.wait_task_state("wq.long.1", "TASK_RUNNING").await;
    assert_eq!(
        during["status"]["timestamp"], before["status"]["timestamp"],
        "the task was not restarted"
    );
    // Its log, followed: the line the new version logs for a new job.
    let mut follow =
        wasmos_tests::cli_command(&c.up.url, &["plugin", "logs", "work-queue", "--follow"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    let (code, body) = c
        .api
        .post(
            "/frameworks/work-queue/jobs",
            &json!({"id": "after", "cmd": "echo after-done"}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let seen = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("job after queued by token:management") {
                return line;
            }
        }
        panic!("plugin logs --follow ended");
    })
    .await
    .expect("the new job's line in plugin logs --follow");
    assert!(seen.contains(" INFO "), "{seen}");
    drop(follow);
    wait_job(&c.api, "after", "finished", |j| j["state"] == "finished").await;
    // Its figures on the leader: calls, and the instances built (one per
    // version at least).
    let show = c.cli(&["plugin", "show", "work-queue"]).await;
    assert_eq!(show.code, Some(0), "{show:?}");
    assert!(
        show.stdout.contains("work-queue 0.2.0 (framework)")
            && show.stdout.contains("previous: 0.1.0")
            && show.stdout.contains("failures: none"),
        "{}",
        show.stdout
    );
    let (_, shown) = c.api.get("/api/wasmos/v1/plugins/work-queue").await;
    assert!(shown["stats"]["calls"].as_u64() > Some(3), "{shown}");
    assert!(shown["stats"]["instances"].as_u64() >= Some(2), "{shown}");
    assert!(
        shown["stats"]["memory_high_water"].as_u64() > Some(1 << 20),
        "{shown}"
    );

    // A version for another contract is refused, and changes nothing.
    let wrong = src.path().join("wrong.toml");
    let text = std::fs::read_to_string(v2_dir.join("plugin.toml")).unwrap();
    std::fs::write(
        &wrong,
        text.replace("world_version = \"0.5.0\"", "world_version = \"9.0.0\""),
    )
    .unwrap();
    let out = install(&c.up.url, &wrong, &v2).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("9.0.0"), "{out:?}");
    let (_, shown) = c.api.get("/api/wasmos/v1/plugins/work-queue").await;
    assert_eq!(shown["version"], "0.2.0", "{shown}");
    assert_eq!(shown["previous_version"], "0.1.0", "{shown}");

    // Roll back: the first version again, with everything the second did.
    let out = c.cli(&["plugin", "rollback", "work-queue"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("rolled work-queue back to 0.1.0"),
        "{out:?}"
    );
    let summary = wait_for("the first version to serve again", DEADLINE, || async {
        let (code, v) = c.api.get("/frameworks/work-queue/").await;
        (code == 200 && v.get("version").is_none()).then_some(v)
    })
    .await;
    assert_eq!(summary["finished"], 2, "{summary}");
    let (code, job) = c
        .api
        .send(
            reqwest::Method::DELETE,
            "/frameworks/work-queue/jobs/long",
            None,
        )
        .await;
    assert_eq!(code, 200, "{job}");
    wait_job(&c.api, "long", "cancelled", |j| j["state"] == "cancelled").await;
    c.api.wait_task_state("wq.long.1", "TASK_KILLED").await;
}
