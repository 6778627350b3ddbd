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
            && wrong.stderr.contains("@0.5.0")
            && wrong.stderr.contains("rebuild"),
        "{}",
        wrong.stderr
    );

    // A framework component declared as a placement plugin.
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("plugin.toml");
    std::fs::write(
        &toml,
        "name = \"liar\"\nversion = \"1.0.0\"\nkind = \"placement\"\nworld_version = \"0.5.0\"\noperators = [\"NEAR\"]\n",
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
    wasmos_tests::wait_agent_plugin(&agent, "misbehave-isolator").await;

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

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_written_in_python_and_c_run_beside_rust_ones() {
    let (py, c_) = (
        wasmos_tests::example_component("health-check-python"),
        wasmos_tests::example_component("health-check-c"),
    );

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
    // The Python library turns a bad parameter into an unhealthy verdict
    // with the reason (here: a port index the task does not have).
    let run = c
        .cli(&[
            "task",
            "run",
            "-d",
            "--id",
            "py-no-port",
            "--ports",
            "1",
            "--health-plugin",
            "health-tcp-py",
            "--health-config",
            "port-index=3",
            "--health-delay",
            "0",
            "--health-interval",
            "0.5",
            "--",
            "sleep",
            "600",
        ])
        .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    wait_for(
        "the portless task found unhealthy, with why",
        std::time::Duration::from_secs(90),
        || async {
            let (_, t) = c.api.get("/api/wasmos/v1/tasks/py-no-port").await;
            let why = t["status"]["message"].as_str().unwrap_or("");
            (t["status"]["healthy"] == false && why.contains("has no port at index 3 (it has 1)"))
                .then_some(())
        },
    )
    .await;
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
    let manifest = registry_manifest(&registry, "plugins/hello", "0.1.0").await;
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");

    // Unsigned, or signed by a key the cluster does not trust: refused,
    // and nothing changes.
    let before = c.api.get("/api/wasmos/v1/cluster").await.1["log_index"].clone();
    refused(
        c.cli(&["plugin", "install", &reference]).await,
        "is not signed",
    );
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    let keygen = c.cli(&["plugin", "keygen", path(&other)]).await;
    assert_eq!(keygen.code, Some(0), "{keygen:?}");
    let other_key = dir.path().join("other.key");
    let signed = c
        .cli(&["plugin", "sign", &reference, "--key", path(&other_key)])
        .await;
    assert_eq!(signed.code, Some(0), "{signed:?}");
    refused(
        c.cli(&["plugin", "install", &reference]).await,
        "by no key the cluster trusts",
    );
    assert_eq!(c.api.get("/api/wasmos/v1/plugins/hello").await.0, 404);
    assert_eq!(
        before,
        c.api.get("/api/wasmos/v1/cluster").await.1["log_index"]
    );

    // Signed with the key `up` made and the cluster trusts (the harness
    // gives it to the CLI as WASMOS_SIGNING_KEY): installs.
    let signed = c.cli(&["plugin", "sign", &reference]).await;
    assert_eq!(signed.code, Some(0), "{signed:?}");
    let install = c.cli(&["plugin", "install", &reference]).await;
    assert_eq!(install.code, Some(0), "{install:?}");

    // The signatures are cosign's, beside the artifact: a simple signing
    // claim per layer, its ECDSA signature in an annotation. OpenSSL, not
    // Wasmos, checks the trusted one.
    let digest = signed
        .stdout
        .split("@sha256:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .map(|h| format!("sha256:{h}"))
        .unwrap_or_else(|| panic!("the signed digest: {signed:?}"));
    let sig_manifest = registry_manifest(
        &registry,
        "plugins/hello",
        &format!("{}.sig", digest.replace(':', "-")),
    )
    .await;
    let layers = sig_manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "two keys signed it: {sig_manifest}");
    let public = c.dir.path().join("data/plugin-signing.pub");
    let mut verified = 0;
    for l in layers {
        assert_eq!(
            l["mediaType"],
            "application/vnd.dev.cosign.simplesigning.v1+json"
        );
        let payload = reqwest::get(format!(
            "http://{}/v2/plugins/hello/blobs/{}",
            registry.addr,
            l["digest"].as_str().unwrap()
        ))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
        let claim: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(claim["critical"]["image"]["docker-manifest-digest"], digest);
        assert_eq!(
            claim["critical"]["type"],
            "cosign container image signature"
        );
        let sig = l["annotations"]["dev.cosignproject.cosign/signature"]
            .as_str()
            .unwrap();
        if openssl_verifies(&public, &payload, sig, dir.path()) {
            verified += 1;
        }
    }
    assert_eq!(verified, 1, "exactly the trusted key's signature verifies");
    wait_for("the pulled framework to serve", DEADLINE, || async {
        (c.api.get("/frameworks/hello/").await.0 == 200).then_some(())
    })
    .await;
    let (_, v) = c.api.get("/api/wasmos/v1/plugins/hello").await;
    assert!(
        v["source"].as_str().unwrap().contains("@sha256:"),
        "pinned by digest: {v}"
    );
    assert_eq!(v["signed_by"], "bootstrap", "{v}");
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

/// Whether `openssl dgst -verify` accepts `signature` (base64, as cosign
/// stores it) of `message` by the public key at `public`.
fn openssl_verifies(
    public: &std::path::Path,
    message: &[u8],
    signature: &str,
    dir: &std::path::Path,
) -> bool {
    use base64::Engine as _;
    let (m, s) = (dir.join("message"), dir.join("signature.der"));
    std::fs::write(&m, message).unwrap();
    std::fs::write(
        &s,
        base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public)
        .arg("-signature")
        .arg(&s)
        .arg(&m)
        .output()
        .expect("run openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() || text.contains("Verification failure"),
        "openssl could not check it: {out:?}"
    );
    out.status.success() && text.contains("Verified OK")
}

/// Runs openssl with `args`, which must succeed.
fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn local_plugins_install_only_with_a_signature_from_a_trusted_key() {
    let c = Cluster::up().await;
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("hello.wasm");
    std::fs::copy(test_plugin("wasmos_example_framework.wasm"), &component).unwrap();
    let manifest = root().join("examples/framework-template/plugin.toml");
    let install = |extra: Vec<String>| {
        let mut args: Vec<String> = [
            "plugin",
            "install",
            path(&manifest),
            "--component",
            path(&component),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra);
        let c = &c;
        async move {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            c.cli(&a).await
        }
    };
    let before = c.api.get("/api/wasmos/v1/cluster").await.1["log_index"].clone();

    // No signature (an empty signature file), and a key the cluster does
    // not trust: refused with the reason.
    let empty = dir.path().join("empty.sig");
    std::fs::write(&empty, "").unwrap();
    refused(
        install(vec!["--signature".into(), path(&empty).into()]).await,
        "is not signed",
    );
    // A key made with OpenSSL, not yet trusted.
    let (key, public) = (dir.path().join("ops.pem"), dir.path().join("ops.pub"));
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        path(&key),
    ]);
    openssl(&["pkey", "-in", path(&key), "-pubout", "-out", path(&public)]);
    refused(
        install(vec!["--key".into(), path(&key).into()]).await,
        "by no key the cluster trusts",
    );
    assert_eq!(c.api.get("/api/wasmos/v1/plugins/hello").await.0, 404);
    assert_eq!(
        before,
        c.api.get("/api/wasmos/v1/cluster").await.1["log_index"]
    );

    // Trusting a key is an ACL change: a user who may install plugins may
    // not trust one; a private key or garbage is not a public key.
    let password = wasmos_tests::user_with(
        &c.api,
        "installer",
        json!([{"area": "plugins", "access": "write"}]),
    )
    .await;
    let basic = {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("installer:{password}"))
        )
    };
    let installer = Api::with_authorization(&c.up.url, &basic);
    let pem = std::fs::read_to_string(&public).unwrap();
    let (code, v) = installer
        .post(
            "/api/wasmos/v1/plugin-keys",
            &json!({"name": "ops", "public_key": pem}),
        )
        .await;
    assert_eq!(code, 403, "{v}");
    let (code, v) = c
        .api
        .post(
            "/api/wasmos/v1/plugin-keys",
            &json!({"name": "ops", "public_key": std::fs::read_to_string(&key).unwrap()}),
        )
        .await;
    assert_eq!(code, 400, "{v}");
    assert!(v.to_string().contains("BEGIN PUBLIC KEY"), "{v}");
    let add = c
        .cli(&["plugin", "trust", "add", "ops", path(&public)])
        .await;
    assert_eq!(add.code, Some(0), "{add:?}");
    let list = c.cli(&["plugin", "trust", "list"]).await;
    assert!(
        list.stdout.contains("bootstrap") && list.stdout.contains("ops"),
        "{list:?}"
    );

    // A second key under a trusted name is refused, not swapped in.
    let other = dir.path().join("other");
    assert_eq!(
        c.cli(&["plugin", "keygen", path(&other)]).await.code,
        Some(0)
    );
    refused(
        c.cli(&[
            "plugin",
            "trust",
            "add",
            "ops",
            path(&dir.path().join("other.pub")),
        ])
        .await,
        "is trusted already",
    );

    // `plugin sign` signs a statement of the manifest and the component's
    // digest, and writes both beside the component (cosign sign-blob's
    // signature of that file, which OpenSSL checks); the upload carries it.
    let sign = c
        .cli(&[
            "plugin",
            "sign",
            path(&manifest),
            "--component",
            path(&component),
            "--key",
            path(&key),
        ])
        .await;
    assert_eq!(sign.code, Some(0), "{sign:?}");
    let sig = std::fs::read_to_string(dir.path().join("hello.wasm.sig")).unwrap();
    let statement = std::fs::read(dir.path().join("hello.wasm.statement.json")).unwrap();
    assert!(openssl_verifies(&public, &statement, &sig, dir.path()));
    let stated: serde_json::Value = serde_json::from_slice(&statement).unwrap();
    assert_eq!(
        stated["component"],
        format!("sha256:{}", hex_sha256(&std::fs::read(&component).unwrap()))
    );
    assert_eq!(stated["manifest"]["name"], "hello");
    let component_b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&component).unwrap())
    };
    let upload = |manifest: serde_json::Value| {
        let body = json!({
            "manifest": manifest,
            "component": component_b64,
            "signature": sig.trim(),
        });
        let installer = &installer;
        async move { installer.post("/api/wasmos/v1/plugins", &body).await }
    };
    // The signed component under a manifest of the uploader's own: refused.
    let mut renamed = toml_to_json(&manifest);
    renamed["name"] = json!("impostor");
    let (code, v) = upload(renamed).await;
    assert_eq!(code, 400, "{v}");
    assert!(
        v.to_string().contains("by no key the cluster trusts"),
        "{v}"
    );
    assert_eq!(c.api.get("/api/wasmos/v1/plugins/impostor").await.0, 404);
    let (code, v) = upload(toml_to_json(&manifest)).await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["signed_by"], "ops", "{v}");

    // A key no longer trusted signs nothing new; what it signed stays.
    let rm = c.cli(&["plugin", "trust", "remove", "ops"]).await;
    assert_eq!(rm.code, Some(0), "{rm:?}");
    let again = install(vec![
        "--signature".into(),
        path(&dir.path().join("hello.wasm.sig")).into(),
    ])
    .await;
    refused(again, "by no key the cluster trusts");
    assert_eq!(c.api.get("/api/wasmos/v1/plugins/hello").await.0, 200);
}

/// The OCI image manifest at `repository:tag` in the test registry.
async fn registry_manifest(
    registry: &wasmos_tests::Registry,
    repository: &str,
    tag: &str,
) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!(
            "http://{}/v2/{repository}/manifests/{tag}",
            registry.addr
        ))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The CLI failed, saying `why`.
fn refused(out: wasmos_tests::Output, why: &str) {
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains(why), "{why:?}: {out:?}");
}

/// A plugin.toml as the JSON manifest the API takes.
fn toml_to_json(path: &std::path::Path) -> serde_json::Value {
    let v: toml::Value = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    serde_json::to_value(v).unwrap()
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
