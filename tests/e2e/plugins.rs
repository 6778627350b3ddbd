//! The plugin platform on a running cluster: install, configure, remove
//! without restarts; misbehaving plugins fail alone; placement, isolators
//! and health checks take effect.

use serde_json::json;
use wasmos_tests::{Api, Cluster, DEADLINE, Racks, cli, root, test_plugin, wait_for};

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_framework_installed_on_a_running_cluster_works_at_once_and_follows_its_config() {
    let c = Cluster::up().await;
    let pid = c.up.pid();
    let manifest = root().join("examples/framework-template/plugin.toml");
    let component = test_plugin("wasmos_example_framework.wasm");
    let out = c
        .cli(&[
            "plugin",
            "install",
            path(&manifest),
            "--component",
            path(&component),
        ])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("installed hello 0.1.0 (framework)"),
        "{out:?}"
    );

    let (code, _) = wait_for("the hello framework to serve", DEADLINE, || async {
        let r = c.api.get("/frameworks/hello/").await;
        (r.0 == 200).then_some(r)
    })
    .await;
    assert_eq!(code, 200);
    let (code, body) = c.api.post("/frameworks/hello/run", &json!({})).await;
    assert_eq!(code, 202, "{body}");
    c.api.wait_task_state("hello-1", "TASK_FINISHED").await;
    let logs = c.cli(&["task", "logs", "hello-1"]).await;
    assert_eq!(logs.stdout, "hello from a Wasm framework\n");

    // New configuration: the instance restarts with it, no daemon does.
    let cfg = c
        .cli(&["plugin", "config", "hello", "greeting=hi there"])
        .await;
    assert_eq!(cfg.code, Some(0), "{cfg:?}");
    assert!(cfg.stdout.contains("greeting=hi there"), "{cfg:?}");
    wait_for("the new greeting", DEADLINE, || async {
        let (code, _) = c.api.post("/frameworks/hello/run", &json!({})).await;
        if code != 202 {
            return None;
        }
        let (_, v) = c.api.get("/frameworks/hello/").await;
        let n = v["launched"].as_u64()?;
        let id = format!("hello-{}", n.max(2));
        let st = c.api.wait_task_state(&id, "TASK_FINISHED").await;
        let logs = c.cli(&["task", "logs", &id]).await;
        (logs.stdout == "hi there\n").then_some(st)
    })
    .await;

    let list = c.cli(&["plugin", "list"]).await;
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with("hello") && l.contains("healthy")),
        "{list:?}"
    );
    let rm = c.cli(&["plugin", "remove", "hello"]).await;
    assert_eq!(rm.code, Some(0), "{rm:?}");
    wait_for("the hello framework to be gone", DEADLINE, || async {
        (c.api.get("/frameworks/hello/").await.0 == 404).then_some(())
    })
    .await;
    assert_eq!(c.up.pid(), pid, "no restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn misbehaving_plugins_fail_alone_and_the_cluster_keeps_serving() {
    let c = Cluster::up().await;
    let manifest = root().join("tests/plugins/misbehave/plugin.toml");
    let component = test_plugin("wasmos_test_misbehave.wasm");
    let out = c
        .cli(&[
            "plugin",
            "install",
            path(&manifest),
            "--component",
            path(&component),
        ])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    wait_for("the plugin to serve", DEADLINE, || async {
        (c.api.get("/frameworks/misbehave/ok").await.0 == 200).then_some(())
    })
    .await;

    let cases = [
        ("/loop", "did not finish within"),
        ("/alloc", "exceeded its memory limit"),
        ("/recurse", "stack overflow"),
        ("/trap", "trapped"),
        ("/huge", "byte limit"),
    ];
    for (path, want) in cases {
        // After a failure the instance is rebuilt after a backoff (503).
        let (code, body) = wait_for(&format!("{path} to be tried"), DEADLINE, || async {
            let r = c.api.get(&format!("/frameworks/misbehave{path}")).await;
            (r.0 != 503).then_some(r)
        })
        .await;
        assert_eq!(code, 502, "{path}: {body}");
        let msg = body["message"].as_str().unwrap_or("");
        assert!(msg.contains(want), "{path}: {msg}");
        // The master answers, and other frameworks work.
        assert_eq!(c.api.get("/health").await.0, 200, "after {path}");
    }
    let run = c.cli(&["task", "run", "--", "echo", "still here"]).await;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (Some(0), "still here\n"),
        "{run:?}"
    );

    // One broken endpoint leaves a plugin degraded at worst: its other
    // calls (ticks) work. A plugin that traps on every call is marked
    // failed after five in a row, with the last error shown.
    let cfg = c.cli(&["plugin", "config", "misbehave", "mode=trap"]).await;
    assert_eq!(cfg.code, Some(0), "{cfg:?}");
    // (The endpoints above may already have marked it failed: five in a
    // row. The new configuration restarts it; wait for its new failure.)
    let v = wait_for(
        "the plugin to be marked failed for trapping",
        DEADLINE,
        || async {
            let (_, v) = c.api.get("/api/wasmos/v1/plugins/misbehave").await;
            let trapped = v["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("traps on purpose"));
            (v["health"] == "failed" && trapped).then_some(v)
        },
    )
    .await;
    assert!(
        v["last_error"]
            .as_str()
            .unwrap()
            .contains("traps on purpose"),
        "{v}"
    );
    let list = c.cli(&["plugin", "list"]).await;
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with("misbehave") && l.contains("failed")),
        "{list:?}"
    );
    assert!(list.stderr.contains("last error of misbehave"), "{list:?}");
    let (code, body) = c.api.get("/frameworks/misbehave/ok").await;
    assert_eq!(code, 502);
    assert!(
        body["message"].as_str().unwrap().contains("marked failed"),
        "{body}"
    );
    assert_eq!(c.api.get("/health").await.0, 200);
    // The operator's fix, a new configuration, gives it a fresh start.
    let cfg = c.cli(&["plugin", "config", "misbehave", "mode="]).await;
    assert_eq!(cfg.code, Some(0), "{cfg:?}");
    wait_for("the plugin to serve again", DEADLINE, || async {
        (c.api.get("/frameworks/misbehave/ok").await.0 == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_that_do_not_fit_are_refused_at_install_and_change_nothing() {
    let c = Cluster::up().await;
    let before = c.api.get("/api/wasmos/v1/cluster").await.1["log_index"].clone();

    let wrong = c
        .cli(&[
            "plugin",
            "install",
            path(&root().join("tests/plugins/wrong-version/plugin.toml")),
            "--component",
            path(&test_plugin("wasmos_test_wrong_version.wasm")),
        ])
        .await;
    assert_eq!(wrong.code, Some(1), "{wrong:?}");
    assert!(
        wrong.stderr.contains("wasmos:plugin@9.0.0")
            && wrong.stderr.contains("@0.3.0")
            && wrong.stderr.contains("rebuild"),
        "{}",
        wrong.stderr
    );

    // A framework component declared as a placement plugin.
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("plugin.toml");
    std::fs::write(
        &toml,
        "name = \"liar\"\nversion = \"1.0.0\"\nkind = \"placement\"\nworld_version = \"0.3.0\"\noperators = [\"NEAR\"]\n",
    )
    .unwrap();
    let liar = c
        .cli(&[
            "plugin",
            "install",
            path(&toml),
            "--component",
            path(&test_plugin("wasmos_test_misbehave.wasm")),
        ])
        .await;
    assert_eq!(liar.code, Some(1), "{liar:?}");
    assert!(
        liar.stderr.contains("does not fit the placement world"),
        "{}",
        liar.stderr
    );

    let after = c.api.get("/api/wasmos/v1/cluster").await.1["log_index"].clone();
    assert_eq!(before, after, "refused installs change nothing");
    let (_, list) = c.api.get("/api/wasmos/v1/plugins").await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|p| p["source"] == "bundled"),
        "only the bundled plugins: {list}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_misbehaving_isolator_fails_launches_not_the_agent() {
    let c = Cluster::up().await;
    let out = c
        .cli(&[
            "plugin",
            "install",
            path(&root().join("tests/plugins/misbehave-isolator/plugin.toml")),
            "--component",
            path(&test_plugin("wasmos_test_misbehave_isolator.wasm")),
        ])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let agent = c.agent_api();
    wait_for("the agent to load the isolator", DEADLINE, || async {
        let (_, st) = agent.get("/api/wasmos/v1/state").await;
        st["plugins"]
            .as_array()?
            .iter()
            .any(|p| p["name"] == "misbehave-isolator")
            .then_some(())
    })
    .await;

    let trap = c
        .cli(&[
            "task",
            "run",
            "--id",
            "iso-trap",
            "-l",
            "misbehave=trap",
            "--",
            "true",
        ])
        .await;
    assert_eq!(trap.code, Some(125), "{trap:?}");
    let t = c.api.wait_task_state("iso-trap", "TASK_FAILED").await;
    let msg = t["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("misbehave-isolator") && msg.contains("trapped"),
        "{msg}"
    );
    assert_eq!(t["status"]["reason"], "REASON_CONTAINER_LAUNCH_FAILED");

    let looped = wait_for("a launch past the isolator's backoff", DEADLINE, || async {
        let out = c
            .cli(&["task", "run", "-l", "misbehave=loop", "--", "true"])
            .await;
        (!out.stderr.contains("restarting after failures")).then_some(out)
    })
    .await;
    assert!(
        looped.stderr.contains("did not finish within"),
        "{looped:?}"
    );
    let (code, _) = agent.get("/health").await;
    assert_eq!(code, 200, "the agent keeps serving");
    // The master shows the isolator's trouble, and where it is.
    let v = wait_for(
        "the master to know the isolator's health",
        DEADLINE,
        || async {
            let (_, v) = c.api.get("/api/wasmos/v1/plugins/misbehave-isolator").await;
            (v["health"] != serde_json::Value::Null && v["last_error"].is_string()).then_some(v)
        },
    )
    .await;
    assert!(
        v["last_error"].as_str().unwrap().contains("on agent"),
        "{v}"
    );

    // The operator's fix: remove it; launches work again.
    assert_eq!(
        c.cli(&["plugin", "remove", "misbehave-isolator"])
            .await
            .code,
        Some(0)
    );
    wait_for("launches to work again", DEADLINE, || async {
        let out = c.cli(&["task", "run", "--", "echo", "ok"]).await;
        (out.code == Some(0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_labels_isolator_sets_environment_and_resource_limits() {
    let c = Cluster::up().await;
    let out = c
        .cli(&[
            "task",
            "run",
            "-l",
            "wasmos.env.GREETING=hi",
            "-l",
            "wasmos.rlimit.nofile=77:99",
            "--",
            "sh",
            "-c",
            "echo $GREETING; ulimit -Sn; ulimit -Hn",
        ])
        .await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "hi\n77\n99\n"),
        "{out:?}"
    );
    let bad = c
        .cli(&[
            "task",
            "run",
            "-l",
            "wasmos.rlimit.nofile=lots",
            "--",
            "true",
        ])
        .await;
    assert_eq!(bad.code, Some(125), "{bad:?}");
    assert!(
        bad.stderr.contains("wasmos.rlimit.nofile"),
        "the message names the label: {}",
        bad.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_report_healthy_tasks_and_kill_unhealthy_ones() {
    let c = Cluster::up().await;
    let run = c
        .cli(&[
            "task",
            "run",
            "-d",
            "--id",
            "web",
            "--ports",
            "1",
            "--health-http",
            "/",
            "--health-delay",
            "0",
            "--health-interval",
            "0.5",
            // Python's HTTP server needs more than the 32 MB default.
            "--mem",
            "128",
            "--",
            "sh",
            "-c",
            "exec python3 -m http.server --bind 127.0.0.1 $PORT0",
        ])
        .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let t = wait_for("the web task to be healthy", DEADLINE, || async {
        let (_, t) = c.api.get("/api/wasmos/v1/tasks/web").await;
        (t["status"]["healthy"] == true).then_some(t)
    })
    .await;
    assert_eq!(t["state"], "TASK_RUNNING");
    assert_eq!(
        t["status"]["reason"],
        "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED"
    );
    wait_for("exec to hear of it", DEADLINE, || async {
        let (_, v) = c.api.get("/frameworks/exec/tasks/web").await;
        (v["healthy"] == true).then_some(())
    })
    .await;

    // Nothing listens on this task's port: unhealthy, then killed.
    let out = c
        .cli(&[
            "task",
            "run",
            "--id",
            "deaf",
            "--ports",
            "1",
            "--health-tcp",
            "--health-delay",
            "0",
            "--health-interval",
            "0.2",
            "--health-grace",
            "0",
            "--health-max-failures",
            "2",
            "--",
            "sleep",
            "600",
        ])
        .await;
    assert_eq!(out.code, Some(143), "{out:?}");
    let t = c.api.wait_task_state("deaf", "TASK_KILLED").await;
    assert_eq!(t["status"]["healthy"], false);
    let msg = t["status"]["message"].as_str().unwrap();
    assert!(msg.contains("2 consecutive failed health checks"), "{msg}");
    assert!(
        t["statuses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["healthy"] == false && s["state"] == "TASK_RUNNING")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn constraints_spread_tasks_and_an_unmeetable_one_waits_without_launching() {
    let r = Racks::start(&[("h1", "r1"), ("h2", "r1"), ("h3", "r2")]).await;
    let api = Api::new(&r.master.url);
    let url = r.master.url.clone();
    let run = |id: &str, group: &str, extra: &[&str]| {
        let mut args: Vec<String> = ["task", "run", "-d", "--id", id, "--group", group]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["--", "sleep", "600"].iter().map(|s| s.to_string()));
        let url = url.clone();
        async move {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&url, &a).await
        }
    };
    for id in ["u1", "u2", "u3"] {
        assert_eq!(
            run(id, "web", &["--constraint", "hostname:UNIQUE"])
                .await
                .code,
            Some(0)
        );
    }
    let mut hosts = Vec::new();
    for id in ["u1", "u2", "u3"] {
        let t = api.wait_task_state(id, "TASK_RUNNING").await;
        hosts.push(t["hostname"].as_str().unwrap().to_string());
    }
    hosts.sort();
    assert_eq!(hosts, ["h1", "h2", "h3"], "one per host");

    // A fourth cannot be unique: it waits, and says why.
    assert_eq!(
        run("u4", "web", &["--constraint", "hostname:UNIQUE"])
            .await
            .code,
        Some(0)
    );
    let waiting = wait_for("u4 to say why it waits", DEADLINE, || async {
        let (_, t) = api.get("/frameworks/exec/tasks/u4").await;
        t["waiting_for"].as_str().map(String::from)
    })
    .await;
    assert!(waiting.contains("UNIQUE"), "{waiting}");
    assert_eq!(api.task_state("u4").await, None, "nothing was launched");

    // CLUSTER pins to a rack; LIKE matches the whole value.
    assert_eq!(
        run("c1", "other", &["--constraint", "rack:CLUSTER:r2"])
            .await
            .code,
        Some(0)
    );
    let t = api.wait_task_state("c1", "TASK_RUNNING").await;
    assert_eq!(t["hostname"], "h3");
    assert_eq!(
        run("l1", "third", &["--constraint", "hostname:LIKE:h[12]"])
            .await
            .code,
        Some(0)
    );
    let t = api.wait_task_state("l1", "TASK_RUNNING").await;
    assert!(t["hostname"] == "h1" || t["hostname"] == "h2", "{t}");
}

/// Runs an example's build script; the toolchains come from `./dev test`.
fn build_example(dir: &str, out: &std::path::Path) {
    let root = root();
    let tools = root.join("target/tools/bin");
    let path = format!(
        "{}:{}",
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let cpy = std::env::var("COMPONENTIZE_PY").unwrap_or_else(|_| {
        root.join("target/py/bin/componentize-py")
            .display()
            .to_string()
    });
    let status = std::process::Command::new(root.join("examples").join(dir).join("build.sh"))
        .arg(out)
        .env("PATH", path)
        .env("COMPONENTIZE_PY", cpy)
        .env(
            "WASI_ADAPTER",
            test_plugin("wasi_snapshot_preview1.reactor.wasm"),
        )
        .status()
        .expect("run the build script");
    assert!(
        status.success(),
        "examples/{dir}/build.sh failed; ./dev test installs what it needs (clang, wasi-libc, wit-bindgen, wasm-tools, componentize-py)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_written_in_python_and_c_run_beside_rust_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (py, c_) = (
        dir.path().join("health-py.wasm"),
        dir.path().join("health-c.wasm"),
    );
    build_example("health-check-python", &py);
    build_example("health-check-c", &c_);

    let c = Cluster::up().await;
    for (example, component) in [("health-check-python", &py), ("health-check-c", &c_)] {
        let manifest = root().join("examples").join(example).join("plugin.toml");
        let out = c
            .cli(&[
                "plugin",
                "install",
                path(&manifest),
                "--component",
                path(component),
            ])
            .await;
        assert_eq!(out.code, Some(0), "{example}: {out:?}");
    }
    for (plugin, lang) in [("health-tcp-py", "Python"), ("health-tcp-c", "C")] {
        let id = format!("{plugin}-task");
        let run = c
            .cli(&[
                "task",
                "run",
                "-d",
                "--id",
                &id,
                "--ports",
                "1",
                "--health-plugin",
                plugin,
                "--health-delay",
                "0",
                "--health-interval",
                "0.5",
                // Python's HTTP server needs more than the 32 MB default.
                "--mem",
                "128",
                "--",
                "sh",
                "-c",
                "exec python3 -m http.server --bind 127.0.0.1 $PORT0",
            ])
            .await;
        assert_eq!(run.code, Some(0), "{run:?}");
        let t = wait_for(
            &format!("{id} to be healthy"),
            std::time::Duration::from_secs(90),
            || async {
                let (_, t) = c.api.get(&format!("/api/wasmos/v1/tasks/{id}")).await;
                (t["status"]["healthy"] == true).then_some(t)
            },
        )
        .await;
        let msg = t["status"]["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("accepts connections ({lang})")),
            "{msg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_travel_through_an_oci_registry() {
    let registry = wasmos_tests::Registry::start().await;
    let c = Cluster::up().await;
    let reference = registry.reference("plugins/hello:0.1.0");
    let push = c
        .cli(&[
            "plugin",
            "push",
            path(&root().join("examples/framework-template")),
            &reference,
            "--component",
            path(&test_plugin("wasmos_example_framework.wasm")),
        ])
        .await;
    assert_eq!(push.code, Some(0), "{push:?}");
    assert!(
        push.stdout.contains(&format!("{reference}@sha256:")),
        "{push:?}"
    );

    // The registry holds a CNCF Wasm artifact: one application/wasm layer.
    let manifest: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "http://{}/v2/plugins/hello/manifests/0.1.0",
            registry.addr
        ))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");

    let install = c.cli(&["plugin", "install", &reference]).await;
    assert_eq!(install.code, Some(0), "{install:?}");
    wait_for("the pulled framework to serve", DEADLINE, || async {
        (c.api.get("/frameworks/hello/").await.0 == 200).then_some(())
    })
    .await;
    let (_, v) = c.api.get("/api/wasmos/v1/plugins/hello").await;
    assert!(
        v["source"].as_str().unwrap().contains("@sha256:"),
        "pinned by digest: {v}"
    );
    assert_eq!(
        v["digest"],
        format!(
            "sha256:{}",
            hex_sha256(&std::fs::read(test_plugin("wasmos_example_framework.wasm")).unwrap())
        )
    );

    let before = c.api.get("/api/wasmos/v1/cluster").await.1["log_index"].clone();
    let missing = c
        .cli(&[
            "plugin",
            "install",
            &registry.reference("plugins/nothing:1.0"),
        ])
        .await;
    assert_eq!(missing.code, Some(1), "{missing:?}");
    assert!(
        missing.stderr.contains("the registry has no manifest"),
        "{}",
        missing.stderr
    );
    let bad = c.cli(&["plugin", "install", "oci://Not A Reference"]).await;
    assert_eq!(bad.code, Some(1), "{bad:?}");
    assert!(
        bad.stderr.contains("is not an OCI reference"),
        "{}",
        bad.stderr
    );
    assert_eq!(
        before,
        c.api.get("/api/wasmos/v1/cluster").await.1["log_index"]
    );
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
