//! Frameworks from outside: Mesos' v1 scheduler API, driven by pymesos
//! (PyPI, unchanged) over the master's plaintext listener, authenticated
//! as a principal.

use std::time::Duration;

use serde_json::{Value, json};
use wasmos_tests::{Api, Cluster, DEADLINE, run_pymesos, user_with, wait_for};

const SCRIPT: &str = "pymesos_scheduler.py";

/// A cluster with a plaintext listener (pymesos speaks no TLS) at `plain`,
/// and a principal `pyfw` that may run frameworks named `pymesos-*` in any
/// role.
async fn cluster(dir: tempfile::TempDir, plain: &str) -> (Cluster, String, String) {
    cluster_with(dir, &["--plain-listen", plain]).await
}

async fn cluster_with(dir: tempfile::TempDir, args: &[&str]) -> (Cluster, String, String) {
    let c = Cluster::up_with(dir, args).await;
    let url =
        c.up.announced("plain")
            .expect("up announces its plain listener");
    let host_port = url
        .strip_prefix("http://")
        .expect("a plain URL")
        .to_string();
    let rules = json!([{"area": "frameworks", "prefix": "pymesos-", "access": "write"},
                       {"area": "roles", "prefix": "", "access": "read"}]);
    let password = user_with(&c.api, "pyfw", rules).await;
    (c, host_port, password)
}

async fn framework_named(api: &Api, name: &str) -> Value {
    let (code, fws) = api.get("/api/wasmos/v1/frameworks").await;
    assert_eq!(code, 200, "{fws}");
    fws.as_array()
        .and_then(|a| a.iter().find(|f| f["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no framework {name}: {fws}"))
}

#[tokio::test]
async fn a_pymesos_framework_launches_acknowledges_reconciles_and_kills_tasks() {
    let (c, plain, password) = cluster(tempfile::tempdir().unwrap(), "127.0.0.1:0").await;
    run_pymesos(
        SCRIPT,
        &["tour", &plain, "pyfw", &password],
        &[],
        "pymesos tour: ok",
    )
    .await;
    // The native API saw the same tasks, owned by the framework, which
    // tore itself down at the end.
    let fw = framework_named(&c.api, "pymesos-tour").await;
    assert_eq!(fw["kind"]["type"], "external", "{fw}");
    assert_eq!(fw["principal"], "pyfw", "{fw}");
    assert!(fw["removed_at"].is_number(), "torn down: {fw}");
    assert_eq!(fw["active"], false, "{fw}");
    let (_, t) = c.api.get("/api/wasmos/v1/tasks/py-done").await;
    assert_eq!(t["state"], "TASK_FINISHED", "{t}");
    assert_eq!(t["framework_id"], fw["id"], "{t}");
    // A framework that does not explain its placements: only its choice
    // is on record, and said to be.
    let (code, p) = c.api.get("/api/wasmos/v1/tasks/py-done/placement").await;
    assert_eq!(code, 200, "{p}");
    assert_eq!(
        (&p["explained"], &p["chosen"], &p["framework_id"]),
        (&Value::Bool(false), &t["agent_id"], &fw["id"]),
        "{p}"
    );
    assert!(
        p["summary"].as_str().unwrap().contains("gave no reasons"),
        "{p}"
    );
    let (_, t) = c.api.get("/api/wasmos/v1/tasks/py-long").await;
    assert_eq!(t["state"], "TASK_KILLED", "{t}");
    // The refused task never entered the state.
    let (code, _) = c.api.get("/api/wasmos/v1/tasks/py-bad").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn the_scheduler_api_needs_a_principal_allowed_to_run_the_framework() {
    let (c, plain, password) = cluster(tempfile::tempdir().unwrap(), "127.0.0.1:0").await;
    let subscribe = |name: &str| json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "", "name": name}}});
    let http = reqwest::Client::new();
    let url = format!("http://{plain}/api/v1/scheduler");
    // No credentials: 401, with the challenge.
    let r = http
        .post(&url)
        .json(&subscribe("pymesos-x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    // A principal whose policy does not cover the name: 403 naming it.
    let r = http
        .post(&url)
        .basic_auth("pyfw", Some(&password))
        .json(&subscribe("other-framework"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("frameworks:write"));
    // Claiming another principal in framework_info: 403.
    let r = http
        .post(&url)
        .basic_auth("pyfw", Some(&password))
        .json(&json!({"type": "SUBSCRIBE", "subscribe": {"framework_info":
            {"user": "", "name": "pymesos-x", "principal": "someone-else"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Bad input: 4xx with the reason, and nothing registered.
    for (ct, body, code) in [
        ("application/json", "{not json", 400),
        ("text/plain", "{}", 415),
        ("application/json", r#"{"type": "ACCEPT"}"#, 400),
        (
            "application/json",
            r#"{"type": "SUBSCRIBE", "subscribe": {"framework_info": {"name": "pymesos-x"}}}"#,
            400,
        ),
        (
            "application/json",
            r#"{"type": "DECLINE", "framework_id": {"value": "nope"}, "decline": {}}"#,
            400,
        ),
    ] {
        let r = http
            .post(&url)
            .basic_auth("pyfw", Some(&password))
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), code, "{ct} {body}");
        assert!(!r.text().await.unwrap().is_empty(), "{body}: a reason");
    }
    let (_, fws) = c.api.get("/api/wasmos/v1/frameworks").await;
    assert!(
        !fws.as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "pymesos-x"),
        "{fws}"
    );
    // The TLS listener serves the same API, to the same principal.
    let r = wasmos_tests::tls_client(&c.ca(), None)
        .build()
        .unwrap()
        .post(format!("{}/api/v1/scheduler", c.up.url))
        .json(&subscribe("pymesos-x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // ... and with credentials it is the scheduler API answering.
    let r = wasmos_tests::client_for(&c.up.url)
        .build()
        .unwrap()
        .post(format!("{}/api/v1/scheduler", c.up.url))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
}

#[tokio::test]
async fn a_framework_that_goes_away_loses_its_tasks_at_its_failover_timeout() {
    let (c, plain, password) = cluster(tempfile::tempdir().unwrap(), "127.0.0.1:0").await;
    let failover = 6.0;
    let out = run_pymesos(
        SCRIPT,
        &["start", &plain, "pyfw", &password],
        &[("FAILOVER", failover.to_string())],
        "pymesos start: ok",
    )
    .await;
    let left: f64 = announced(&out, "left").parse().unwrap();
    let fid = announced(&out, "framework");
    // Gone, but within its timeout: the task runs on.
    assert_eq!(
        c.api.task_state("py-survivor").await.as_deref(),
        Some("TASK_RUNNING")
    );
    let t = c.api.wait_task_state("py-survivor", "TASK_KILLED").await;
    let killed: f64 = t["status"]["timestamp"].as_f64().unwrap();
    assert!(
        killed >= left + failover,
        "killed at {killed}, {}s after the framework left: before its failover timeout of {failover}s",
        killed - left
    );
    let fw = framework_named(&c.api, "pymesos-failover").await;
    assert_eq!(fw["id"], fid.as_str());
    let removed = fw["removed_at"].as_f64().expect("removed");
    assert!(removed >= left + failover, "{fw}");
    // It may not come back: its subscription gets ERROR and ends.
    let r = reqwest::Client::new()
        .post(format!("http://{plain}/api/v1/scheduler"))
        .basic_auth("pyfw", Some(&password))
        .json(&json!({"type": "SUBSCRIBE", "framework_id": {"value": fid},
            "subscribe": {"framework_info": {"user": "", "name": "pymesos-failover", "id": {"value": fid}}}}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("\"ERROR\"") && body.contains("Framework has been removed"),
        "{body}"
    );
}

#[tokio::test]
async fn a_pymesos_framework_resubscribes_after_its_master_restarts_with_its_task_running() {
    let plain = format!("127.0.0.1:{}", wasmos_tests::free_port());
    let (c, host_port, password) = cluster(tempfile::tempdir().unwrap(), &plain).await;
    let out = run_pymesos(
        SCRIPT,
        &["start", &host_port, "pyfw", &password],
        &[("FAILOVER", "3600".into())],
        "pymesos start: ok",
    )
    .await;
    let fid = announced(&out, "framework");
    // The master (and the agent beside it) die; the task does not.
    let mut c = c;
    c.up.kill9().await;
    let c = Cluster::up_with(c.dir, &["--plain-listen", &plain]).await;
    wait_for("the recovered task", DEADLINE, || async {
        (c.api.task_state("py-survivor").await.as_deref() == Some("TASK_RUNNING")).then_some(())
    })
    .await;
    run_pymesos(
        SCRIPT,
        &["resume", &host_port, "pyfw", &password, &fid],
        &[],
        "pymesos resume: ok",
    )
    .await;
    let t = c.api.wait_task_state("py-survivor", "TASK_KILLED").await;
    assert_eq!(t["framework_id"], fid.as_str(), "{t}");
}

/// The value of a `key: value` line a client script printed.
fn announced(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
        .trim()
        .to_string()
}

#[tokio::test]
async fn get_state_and_master_state_agree_with_the_native_api() {
    let (c, plain, password) = cluster(tempfile::tempdir().unwrap(), "127.0.0.1:0").await;
    let out = run_pymesos(
        SCRIPT,
        &["start", &plain, "pyfw", &password],
        &[("FAILOVER", "3600".into())],
        "pymesos start: ok",
    )
    .await;
    let fid = announced(&out, "framework");
    let (_, agents) = c.api.get("/api/wasmos/v1/agents").await;
    let agent = &agents[0];
    let (_, task) = c.api.get("/api/wasmos/v1/tasks/py-survivor").await;
    assert_eq!(task["state"], "TASK_RUNNING", "{task}");

    // The legacy endpoint, as tools read it.
    let (code, state) = c.api.get("/master/state").await;
    assert_eq!(code, 200, "{state}");
    assert_eq!(state["leader"], state["pid"], "{state}");
    assert!(
        state["version"]
            .as_str()
            .unwrap()
            .split('.')
            .all(|n| n.parse::<u32>().is_ok())
    );
    let slaves = state["slaves"].as_array().unwrap();
    assert_eq!(slaves.len(), 1, "{state}");
    assert_eq!(slaves[0]["id"], agent["id"]);
    assert_eq!(slaves[0]["hostname"], agent["hostname"]);
    assert_eq!(
        slaves[0]["resources"]["cpus"],
        agent["resources"]["cpus"].as_f64().unwrap()
    );
    assert_eq!(slaves[0]["used_resources"]["cpus"], 0.1);
    let fw = state["frameworks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == fid.as_str())
        .unwrap_or_else(|| panic!("{fid} in {state}"));
    assert_eq!(fw["name"], "pymesos-failover");
    assert_eq!(fw["principal"], "pyfw");
    assert_eq!(fw["connected"], false, "it went away: {fw}");
    let t = &fw["tasks"][0];
    assert_eq!(t["id"], "py-survivor");
    assert_eq!(t["state"], "TASK_RUNNING");
    assert_eq!(t["slave_id"], agent["id"]);
    assert_eq!(t["framework_id"], fid.as_str());
    // The bundled plugins are frameworks too.
    for name in ["marathon", "chronos", "exec"] {
        assert!(
            state["frameworks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["name"] == name),
            "{name} in {state}"
        );
    }
    let (_, tasks) = c
        .api
        .get(&format!("/master/tasks?framework_id={fid}"))
        .await;
    let tasks = tasks["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["id"], "py-survivor");
    // `/master/state` keeps each task's JSON between answers: it is the
    // one `/master/tasks` makes afresh.
    assert_eq!(&tasks[0], t, "/master/tasks and /master/state");

    // The operator API (v1 JSON).
    let (code, got) = c.api.post("/api/v1", &json!({"type": "GET_STATE"})).await;
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["type"], "GET_STATE");
    let s = &got["get_state"];
    let task = s["get_tasks"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"]["value"] == "py-survivor")
        .unwrap_or_else(|| panic!("py-survivor in {s}"));
    assert_eq!(task["agent_id"]["value"], agent["id"]);
    assert_eq!(task["framework_id"]["value"], fid.as_str());
    assert_eq!(task["state"], "TASK_RUNNING");
    assert_eq!(
        s["get_agents"]["agents"][0]["agent_info"]["id"]["value"],
        agent["id"]
    );
    let f = s["get_frameworks"]["frameworks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["framework_info"]["id"]["value"] == fid.as_str())
        .unwrap_or_else(|| panic!("{fid} in {s}"));
    assert_eq!(f["framework_info"]["name"], "pymesos-failover");
    for call in [
        "GET_HEALTH",
        "GET_VERSION",
        "GET_MASTER",
        "GET_METRICS",
        "GET_ROLES",
        "GET_FLAGS",
    ] {
        let (code, v) = c.api.post("/api/v1", &json!({ "type": call })).await;
        assert_eq!(code, 200, "{call}: {v}");
        assert_eq!(v["type"], call);
    }
    let (_, m) = c.api.get("/metrics/snapshot").await;
    assert_eq!(m["master/elected"], 1.0, "{m}");
    assert_eq!(m["master/tasks_running"], 1.0, "{m}");
    assert_eq!(m["master/slaves_active"], 1.0, "{m}");

    // Reading needs credentials; tearing down needs the framework's policy.
    let anon = Api::anonymous(&c.up.url);
    let (code, _) = anon.get("/master/state").await;
    assert_eq!(code, 401);
    let (code, _) = anon.post("/api/v1", &json!({"type": "GET_STATE"})).await;
    assert_eq!(code, 401);
    let (code, _) = c
        .api
        .post("/api/v1", &json!({"type": "GET_NONSENSE"}))
        .await;
    assert_eq!(code, 400);
    let (code, v) = c
        .api
        .post(
            "/api/v1",
            &json!({"type": "TEARDOWN", "teardown": {"framework_id": {"value": fid}}}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    c.api.wait_task_state("py-survivor", "TASK_KILLED").await;
    let fw = framework_named(&c.api, "pymesos-failover").await;
    assert!(fw["removed_at"].is_number(), "{fw}");
    // The task's kept JSON followed its end: the removed framework is
    // listed with it among its completed tasks, statuses and all.
    let (_, state) = c.api.get("/master/state").await;
    let fw = state["completed_frameworks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == fid.as_str())
        .unwrap_or_else(|| panic!("{fid} among the completed frameworks of {state}"));
    assert_eq!(fw["tasks"], json!([]), "{fw}");
    let t = &fw["completed_tasks"][0];
    assert_eq!(t["id"], "py-survivor", "{fw}");
    assert_eq!(t["state"], "TASK_KILLED", "{t}");
    let states: Vec<&Value> = t["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["state"])
        .collect();
    assert_eq!(states.last().copied(), Some(&json!("TASK_KILLED")), "{t}");
    assert!(states.contains(&&json!("TASK_RUNNING")), "{t}");
}

/// A framework speaking protobuf (the tests' generated Mesos messages):
/// the whole round trip of a task, events in protobuf too.
#[tokio::test]
async fn a_protobuf_framework_launches_acknowledges_reconciles_and_kills_a_task() {
    use prost::Message as _;
    use wasmos_tests::mesos::v1 as m;
    use wasmos_tests::mesos::v1::scheduler::{Call, Event, call, event};

    let c = Cluster::up().await;
    let http = wasmos_tests::client_for(&c.up.url).build().unwrap();
    let url = format!("{}/api/v1/scheduler", c.up.url);
    let ev = |b: Vec<u8>| Event::decode(b.as_slice()).expect("a protobuf Event");
    let subscribe = Call {
        r#type: Some(call::Type::Subscribe as i32),
        subscribe: Some(call::Subscribe {
            framework_info: Some(m::FrameworkInfo {
                user: Some(String::new()),
                name: Some("proto-fw".into()),
                failover_timeout: Some(60.0),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let resp = http
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .header("accept", "application/x-protobuf")
        .body(subscribe.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
    let stream_id = resp.headers()["mesos-stream-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut events = wasmos_tests::RecordIo::new(resp.bytes_stream());
    let first = ev(events.next(DEADLINE).await);
    assert_eq!(first.r#type, Some(event::Type::Subscribed as i32));
    let fid = first.subscribed.unwrap().framework_id.unwrap();

    let send = |call: Call| {
        let http = http.clone();
        let url = url.clone();
        let stream_id = stream_id.clone();
        async move {
            let r = http
                .post(&url)
                .header("content-type", "application/x-protobuf")
                .header("mesos-stream-id", stream_id)
                .body(call.encode_to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        }
    };
    let base = || Call {
        framework_id: Some(fid.clone()),
        ..Default::default()
    };
    // Offers, then a launch.
    let offer = loop {
        let e = ev(events.next(DEADLINE).await);
        if let Some(o) = e.offers.and_then(|o| o.offers.into_iter().next()) {
            break o;
        }
    };
    let scalar = |name: &str, v: f64| m::Resource {
        name: Some(name.into()),
        r#type: Some(m::value::Type::Scalar as i32),
        scalar: Some(m::value::Scalar { value: Some(v) }),
        ..Default::default()
    };
    let task = m::TaskInfo {
        name: Some("proto-1".into()),
        task_id: Some(m::TaskId {
            value: Some("proto-1".into()),
        }),
        agent_id: offer.agent_id.clone(),
        resources: vec![scalar("cpus", 0.1), scalar("mem", 32.0)],
        command: Some(m::CommandInfo {
            value: Some("exec sleep 600".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    send(Call {
        r#type: Some(call::Type::Accept as i32),
        accept: Some(call::Accept {
            offer_ids: vec![offer.id.clone().unwrap()],
            operations: vec![m::offer::Operation {
                r#type: Some(m::offer::operation::Type::Launch as i32),
                launch: Some(m::offer::operation::Launch {
                    task_infos: vec![task],
                }),
                ..Default::default()
            }],
            filters: None,
        }),
        ..base()
    })
    .await;
    // Updates until RUNNING, each acknowledged.
    let mut seen = Vec::new();
    let next_update = async |events: &mut wasmos_tests::RecordIo<_>| loop {
        let e = ev(events.next(DEADLINE).await);
        if let Some(u) = e.update {
            break u.status.unwrap();
        }
    };
    loop {
        let s = next_update(&mut events).await;
        let state = m::TaskState::try_from(s.state.unwrap()).unwrap();
        seen.push(state);
        let uuid = s.uuid.clone().expect("an agent's update carries its uuid");
        assert_eq!(uuid.len(), 16);
        send(Call {
            r#type: Some(call::Type::Acknowledge as i32),
            acknowledge: Some(call::Acknowledge {
                agent_id: s.agent_id.clone(),
                task_id: s.task_id.clone(),
                uuid: Some(uuid),
            }),
            ..base()
        })
        .await;
        if state == m::TaskState::TaskRunning {
            break;
        }
    }
    assert_eq!(
        c.api.task_state("proto-1").await.as_deref(),
        Some("TASK_RUNNING")
    );
    // Explicit reconciliation: the latest state, nothing to acknowledge.
    send(Call {
        r#type: Some(call::Type::Reconcile as i32),
        reconcile: Some(call::Reconcile {
            tasks: vec![call::reconcile::Task {
                task_id: Some(m::TaskId {
                    value: Some("proto-1".into()),
                }),
                agent_id: None,
            }],
        }),
        ..base()
    })
    .await;
    let s = next_update(&mut events).await;
    assert_eq!(s.state, Some(m::TaskState::TaskRunning as i32));
    assert_eq!(
        s.reason,
        Some(m::task_status::Reason::Reconciliation as i32)
    );
    assert!(s.uuid.is_none(), "reconciliation updates carry no uuid");
    // Kill: TASK_KILLED comes back.
    send(Call {
        r#type: Some(call::Type::Kill as i32),
        kill: Some(call::Kill {
            task_id: Some(m::TaskId {
                value: Some("proto-1".into()),
            }),
            ..Default::default()
        }),
        ..base()
    })
    .await;
    let s = next_update(&mut events).await;
    assert_eq!(s.state, Some(m::TaskState::TaskKilled as i32), "{seen:?}");
    send(Call {
        r#type: Some(call::Type::Teardown as i32),
        ..base()
    })
    .await;
    let fw = framework_named(&c.api, "proto-fw").await;
    assert_eq!(fw["id"], fid.value.unwrap().as_str());
    wait_for("the framework removed", DEADLINE, || async {
        framework_named(&c.api, "proto-fw").await["removed_at"]
            .is_number()
            .then_some(())
    })
    .await;
}

/// The cpus a framework's live tasks hold, as the native API reports them.
async fn cpus_of(api: &Api, name: &str) -> f64 {
    framework_named(api, name).await["used"]["cpus"]
        .as_f64()
        .unwrap_or(0.0)
}

fn greedy_env(name: &str, role: &str, go: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![
        ("NAME", name.to_string()),
        ("ROLE", role.to_string()),
        ("CPUS", "0.25".to_string()),
        ("GO", go.display().to_string()),
    ]
}

/// Role `a` weighs 2; greedy pymesos frameworks in roles `a` and `b`
/// subscribe and take one task per offer once the returned file exists
/// (the processes live as long as the returned children).
async fn greedy_a_weighing_2_and_b(
    c: &Cluster,
    plain: &str,
    password: &str,
) -> (
    std::path::PathBuf,
    tokio::process::Child,
    tokio::process::Child,
) {
    let (code, v) = c
        .api
        .post(
            "/api/v1",
            &json!({"type": "UPDATE_WEIGHTS", "update_weights": {"weight_infos": [{"role": "a", "weight": 2.0}]}}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let go = c.dir.path().join("go");
    let args = ["greedy", plain, "pyfw", password];
    let (a, _) =
        wasmos_tests::spawn_pymesos(SCRIPT, &args, &greedy_env("pymesos-a", "a", &go)).await;
    let (b, _) =
        wasmos_tests::spawn_pymesos(SCRIPT, &args, &greedy_env("pymesos-b", "b", &go)).await;
    (go, a, b)
}

const THREE_CPUS: [&str; 4] = [
    "--plain-listen",
    "127.0.0.1:0",
    "--resources",
    "cpus:3;mem:4096;disk:4096",
];

#[tokio::test]
async fn frameworks_of_weighted_roles_converge_to_their_weighted_shares() {
    let (c, plain, password) = cluster_with(tempfile::tempdir().unwrap(), &THREE_CPUS).await;
    let (go, _a, _b) = greedy_a_weighing_2_and_b(&c, &plain, &password).await;
    // Both are subscribed before either takes anything.
    std::fs::write(&go, "").unwrap();
    let shares = wait_for("the agent to be full", DEADLINE, || async {
        let (a, b) = (
            cpus_of(&c.api, "pymesos-a").await,
            cpus_of(&c.api, "pymesos-b").await,
        );
        (a + b >= 3.0).then_some((a, b))
    })
    .await;
    // Role a weighs twice role b: twice its dominant share.
    assert_eq!(shares, (2.0, 1.0));
    let (_, roles) = c.api.get("/api/wasmos/v1/roles").await;
    let a = roles
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "a")
        .unwrap_or_else(|| panic!("{roles}"));
    assert_eq!(a["weight"], 2.0);
    assert_eq!(a["allocated"]["cpus"], 2.0);
    let (_, got) = c.api.post("/api/v1", &json!({"type": "GET_WEIGHTS"})).await;
    assert_eq!(
        got["get_weights"]["weight_infos"],
        json!([{"role": "a", "weight": 2.0}])
    );
    let out = c.cli(&["roles"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("a ") && l.contains(" 2 ")),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn two_frameworks_and_marathon_competing_converge_to_their_weighted_drf_shares() {
    let (c, plain, password) = cluster_with(tempfile::tempdir().unwrap(), &THREE_CPUS).await;
    // Like every framework here, Marathon takes one instance per offer.
    let out = c
        .cli(&["plugin", "config", "marathon", "max_instances_per_offer=1"])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let (go, _a, _b) = greedy_a_weighing_2_and_b(&c, &plain, &password).await;
    // All three want more than the cluster has, from the same moment.
    std::fs::write(&go, "").unwrap();
    let (code, v) = c
        .api
        .post(
            "/v2/apps",
            &json!({"id": "/hog", "cmd": "sleep 600", "cpus": 0.25, "mem": 32, "instances": 12}),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    let shares = wait_for("the agent to be full", DEADLINE, || async {
        let (a, b, m) = (
            cpus_of(&c.api, "pymesos-a").await,
            cpus_of(&c.api, "pymesos-b").await,
            cpus_of(&c.api, "marathon").await,
        );
        (a + b + m >= 3.0).then_some((a, b, m))
    })
    .await;
    // Roles a (weight 2), b and `*` (Marathon's): 2:1:1 of 3 cpus.
    assert_eq!(shares, (1.5, 0.75, 0.75));
}

#[tokio::test]
async fn a_quota_guarantee_holds_while_another_role_floods() {
    let (c, plain, password) = cluster_with(tempfile::tempdir().unwrap(), &THREE_CPUS).await;
    // q is guaranteed a cpu (through Mesos' operator API, as tools set it).
    let (code, v) = c
        .api
        .post(
            "/api/v1",
            &json!({"type": "UPDATE_QUOTA", "update_quota": {"quota_configs": [
                {"role": "q", "guarantees": {"cpus": {"value": 1.0}}}]}}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let go = c.dir.path().join("go");
    std::fs::write(&go, "").unwrap();
    let args = ["greedy", &plain, "pyfw", &password];
    let (_flood, _) =
        wasmos_tests::spawn_pymesos(SCRIPT, &args, &greedy_env("pymesos-flood", "batch", &go))
            .await;
    // The flood takes all but the guarantee.
    wait_for("the flood to take 2 cpus", DEADLINE, || async {
        (cpus_of(&c.api, "pymesos-flood").await >= 2.0).then_some(())
    })
    .await;
    // q comes later and still gets its cpu.
    let (_q, _) =
        wasmos_tests::spawn_pymesos(SCRIPT, &args, &greedy_env("pymesos-q", "q", &go)).await;
    wait_for("q to hold its guarantee", DEADLINE, || async {
        (cpus_of(&c.api, "pymesos-q").await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(cpus_of(&c.api, "pymesos-flood").await, 2.0);
    assert_eq!(cpus_of(&c.api, "pymesos-q").await, 1.0);
    let (_, got) = c.api.post("/api/v1", &json!({"type": "GET_QUOTA"})).await;
    assert_eq!(
        got["get_quota"]["status"]["configs"][0]["role"], "q",
        "{got}"
    );
    // A guarantee above its limit is refused, and changes nothing.
    let (code, _) = c
        .api
        .post(
            "/api/v1",
            &json!({"type": "UPDATE_QUOTA", "update_quota": {"quota_configs": [
                {"role": "q", "guarantees": {"cpus": {"value": 3.0}}, "limits": {"cpus": {"value": 2.0}}}]}}),
        )
        .await;
    assert_eq!(code, 400);
    let (_, role) = c.api.get("/api/wasmos/v1/roles/q").await;
    assert_eq!(role["quota"]["guarantees"]["cpus"], 1.0, "{role}");
}

/// The reserved cpus of role `role` on the only agent, as `/master/slaves`
/// shows them (0 when it holds none).
async fn reserved_cpus(api: &Api, role: &str) -> f64 {
    let (code, v) = api.get("/master/slaves").await;
    assert_eq!(code, 200, "{v}");
    v["slaves"][0]["reserved_resources"][role]["cpus"]
        .as_f64()
        .unwrap_or(0.0)
}

#[tokio::test]
async fn reservations_go_only_to_their_role_and_a_persistent_volume_outlives_its_task() {
    // 0.5 cpus and 128 MB are reserved for `web` when the agent starts.
    let resources = wasmos_tests::own_ports("cpus:2;mem:2048;disk:1000;cpus(web):0.5;mem(web):128");
    let (c, plain, password) = cluster_with(
        tempfile::tempdir().unwrap(),
        &["--plain-listen", "127.0.0.1:0", "--resources", &resources],
    )
    .await;
    assert_eq!(reserved_cpus(&c.api, "web").await, 0.5);

    // A framework of `db` reserves, makes a volume, writes to it from one
    // task and reads it back from the next; it never sees web's part.
    let role_dir = c.dir.path().join("data/agent/volumes/roles/db");
    run_pymesos(
        SCRIPT,
        &["stateful", &plain, "pyfw", &password],
        &[
            ("ROLE", "db".into()),
            ("VOLUMES", role_dir.display().to_string()),
        ],
        "pymesos stateful: ok",
    )
    .await;
    // The volume was destroyed and its data deleted on the agent (at a
    // heartbeat once it has not changed for 10 s); the reservation is gone.
    wait_for(
        "the destroyed volume's data to be deleted",
        DEADLINE,
        || async {
            let left = std::fs::read_dir(&role_dir).map_or(0, |d| d.count());
            (left == 0).then_some(())
        },
    )
    .await;
    assert_eq!(reserved_cpus(&c.api, "db").await, 0.0);
    // A framework of `web` is offered web's reservation.
    run_pymesos(
        SCRIPT,
        &["reserved", &plain, "pyfw", &password],
        &[("ROLE", "web".into()), ("CPUS", "0.5".into())],
        "pymesos reserved: ok",
    )
    .await;

    // Operators reserve and unreserve through the operator API.
    let (_, agents) = c.api.get("/api/wasmos/v1/agents").await;
    let agent = agents[0]["id"].as_str().unwrap().to_string();
    let cpus = |role: &str| {
        json!([{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5},
                "reservations": [{"type": "DYNAMIC", "role": role}]}])
    };
    let call = |kind: &str, resources: Value| {
        let key = kind.to_lowercase();
        json!({"type": kind, key: {"agent_id": {"value": agent}, "resources": resources}})
    };
    let (code, v) = c
        .api
        .post("/api/v1", &call("RESERVE_RESOURCES", cpus("ops")))
        .await;
    assert_eq!(code, 202, "{v}");
    assert_eq!(reserved_cpus(&c.api, "ops").await, 0.5);
    let (_, got) = c.api.post("/api/v1", &json!({"type": "GET_AGENTS"})).await;
    let total = got["get_agents"]["agents"][0]["total_resources"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        total.iter().any(|r| r["name"] == "cpus"
            && r["reservations"][0]["role"] == "ops"
            && r["scalar"]["value"] == 0.5),
        "{total:?}"
    );
    // Bad input is refused with why, and changes nothing: no role, more
    // than is free, unreserving what is not reserved, an unknown agent.
    let unreserved = json!([{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}}]);
    let (code, v) = c
        .api
        .post("/api/v1", &call("RESERVE_RESOURCES", unreserved))
        .await;
    assert_eq!(code, 400, "{v}");
    let mut huge = cpus("ops");
    huge[0]["scalar"]["value"] = json!(64.0);
    let (code, v) = c
        .api
        .post("/api/v1", &call("RESERVE_RESOURCES", huge))
        .await;
    assert_eq!(code, 409, "{v}");
    let (code, v) = c
        .api
        .post("/api/v1", &call("UNRESERVE_RESOURCES", cpus("nobody")))
        .await;
    assert_eq!(code, 409, "{v}");
    let mut elsewhere = call("RESERVE_RESOURCES", cpus("ops"));
    elsewhere["reserve_resources"]["agent_id"]["value"] = json!("no-such-agent");
    let (code, _) = c.api.post("/api/v1", &elsewhere).await;
    assert_eq!(code, 404);
    assert_eq!(reserved_cpus(&c.api, "ops").await, 0.5);
    // Static reservations are not undone through the API.
    let (code, v) = c
        .api
        .post("/api/v1", &call("UNRESERVE_RESOURCES", cpus("web")))
        .await;
    assert_eq!(code, 409, "{v}");
    let (code, v) = c
        .api
        .post("/api/v1", &call("UNRESERVE_RESOURCES", cpus("ops")))
        .await;
    assert_eq!(code, 202, "{v}");
    assert_eq!(reserved_cpus(&c.api, "ops").await, 0.0);
    assert_eq!(reserved_cpus(&c.api, "web").await, 0.5);

    // A subscribed framework (taking no offers) will hear of it (FAILURE).
    let http = wasmos_tests::client_for(&c.up.url).build().unwrap();
    let resp = http
        .post(format!("{}/api/v1/scheduler", c.up.url))
        .header("content-type", "application/json")
        .body(
            json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "", "name": "watcher"},
                "suppressed_roles": ["*"]}})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut events = wasmos_tests::RecordIo::new(resp.bytes_stream());
    let next = |b: Vec<u8>| serde_json::from_slice::<Value>(&b).expect("a JSON event");
    assert_eq!(next(events.next(DEADLINE).await)["type"], "SUBSCRIBED");

    // An operator marks the agent gone: its task ends GONE_BY_OPERATOR
    // (exec is partition aware); the agent is no longer listed.
    let out = c
        .cli(&[
            "task", "run", "--detach", "--id", "doomed", "--", "sleep", "600",
        ])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    c.api.wait_task_state("doomed", "TASK_RUNNING").await;
    let gone =
        |a: &str| json!({"type": "MARK_AGENT_GONE", "mark_agent_gone": {"agent_id": {"value": a}}});
    let (code, _) = c
        .api
        .post("/api/v1", &json!({"type": "MARK_AGENT_GONE"}))
        .await;
    assert_eq!(code, 400);
    let (code, _) = c.api.post("/api/v1", &gone("no-such-agent")).await;
    assert_eq!(code, 404);
    let (code, v) = c.api.post("/api/v1", &gone(&agent)).await;
    assert_eq!(code, 200, "{v}");
    c.api
        .wait_task_state("doomed", "TASK_GONE_BY_OPERATOR")
        .await;
    let (_, slaves) = c.api.get("/master/slaves").await;
    assert_eq!(slaves["slaves"], json!([]), "{slaves}");
    loop {
        let e = next(events.next(DEADLINE).await);
        if e["type"] == "FAILURE" {
            assert_eq!(e["failure"]["agent_id"]["value"], agent.as_str(), "{e}");
            break;
        }
    }
}

#[tokio::test]
async fn the_operator_event_stream_starts_with_the_state_and_follows_a_task() {
    let c = Cluster::up().await;
    let http = wasmos_tests::client_for(&c.up.url).build().unwrap();
    let resp = http
        .post(format!("{}/api/v1", c.up.url))
        .header("content-type", "application/json")
        .body(json!({"type": "SUBSCRIBE"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let mut events = wasmos_tests::RecordIo::new(resp.bytes_stream());
    let next = |b: Vec<u8>| serde_json::from_slice::<Value>(&b).expect("a JSON event");
    let first = next(events.next(DEADLINE).await);
    assert_eq!(first["type"], "SUBSCRIBED", "{first}");
    let state = &first["subscribed"]["get_state"];
    assert_eq!(
        state["get_agents"]["agents"].as_array().unwrap().len(),
        1,
        "{state}"
    );
    assert_eq!(first["subscribed"]["heartbeat_interval_seconds"], 15.0);

    let out = c
        .cli(&["task", "run", "--id", "watched", "--", "true"])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let mut seen = Vec::new();
    while !seen.contains(&"TASK_FINISHED".to_string()) {
        let e = next(events.next(DEADLINE).await);
        match e["type"].as_str() {
            Some("TASK_ADDED") if e["task_added"]["task"]["task_id"]["value"] == "watched" => {
                assert_eq!(e["task_added"]["task"]["state"], "TASK_STAGING", "{e}");
                seen.push("TASK_ADDED".to_string());
            }
            Some("TASK_UPDATED")
                if e["task_updated"]["status"]["task_id"]["value"] == "watched" =>
            {
                assert_eq!(e["task_updated"]["framework_id"]["value"], "exec", "{e}");
                seen.push(e["task_updated"]["state"].as_str().unwrap().to_string());
            }
            _ => {}
        }
    }
    assert_eq!(
        seen.first().map(String::as_str),
        Some("TASK_ADDED"),
        "{seen:?}"
    );
    assert!(seen.iter().any(|s| s == "TASK_RUNNING"), "{seen:?}");
}

/// pymesos speaks no TLS: pointed at a follower's plaintext listener, it
/// is redirected to the leader's, and runs as against one master.
#[tokio::test]
async fn a_pymesos_framework_pointed_at_a_follower_is_sent_to_the_leaders_plain_listener() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = wasmos_tests::Masters::start(3, dir.path()).await;
    // Each master restarted with a plaintext listener of its own.
    let mut plain = Vec::new();
    let peers = m.peers();
    for id in 1..=3u64 {
        m.stop(id).await;
        let at = format!("{}:0", m.ips[(id - 1) as usize]);
        m.start_master(id, &["--peers", &peers, "--plain-listen", &at])
            .await;
        let url = m
            .daemon(id)
            .announced("plain")
            .expect("a plain listener")
            .to_string();
        plain.push(url.trim_start_matches("http://").to_string());
    }
    let (leader, _) = m.wait_leader(&[1, 2, 3], None).await;
    let _agent = m.start_agent(dir.path()).await;
    let api = Api::new(&m.url(leader));
    let rules = json!([{"area": "frameworks", "prefix": "pymesos-", "access": "write"}]);
    let password = user_with(&api, "pyfw", rules).await;
    wait_for("the agent to register", DEADLINE, || async {
        let (_, agents) = api.get("/api/wasmos/v1/agents").await;
        (agents.as_array().map_or(0, Vec::len) == 1).then_some(())
    })
    .await;
    let follower = if leader == 1 { 2 } else { 1 };
    let follower_plain = &plain[(follower - 1) as usize];
    let raw_client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // (503 until the follower has applied the leader's term.)
    let raw = wait_for("the follower to redirect", DEADLINE, || async {
        let r = raw_client
            .post(format!("http://{follower_plain}/api/v1/scheduler"))
            .basic_auth("pyfw", Some(&password))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .ok()?;
        (r.status() == 307).then_some(r)
    })
    .await;
    assert_eq!(
        raw.headers()["location"],
        format!("http://{}/api/v1/scheduler", plain[(leader - 1) as usize]).as_str()
    );
    // (This agent runs tasks as root, which the tour refuses: `start`
    // subscribes, launches a task and sees it running.)
    run_pymesos(
        SCRIPT,
        &["start", follower_plain, "pyfw", &password],
        &[("FAILOVER", "60".into())],
        "pymesos start: ok",
    )
    .await;
    let t = api.wait_task_state("py-survivor", "TASK_RUNNING").await;
    assert_eq!(t["state"], "TASK_RUNNING", "{t}");
}

#[tokio::test]
async fn marathon_in_a_role_runs_its_apps_on_that_roles_reservation() {
    // Half a cpu unreserved, two reserved for `prod`: a 1-cpu instance fits
    // only on the reservation.
    let resources =
        wasmos_tests::own_ports("cpus:0.5;mem:2048;disk:1000;cpus(prod):2;mem(prod):512");
    let c = Cluster::up_with(tempfile::tempdir().unwrap(), &["--resources", &resources]).await;
    let out = c
        .cli(&["plugin", "config", "marathon", "mesos_role=prod"])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    wait_for("marathon to run in role prod", DEADLINE, || async {
        (framework_named(&c.api, "marathon").await["role"] == "prod").then_some(())
    })
    .await;
    let (code, v) = c
        .api
        .post(
            "/v2/apps",
            &json!({"id": "/big", "cmd": "sleep 600", "cpus": 1.0, "mem": 128, "instances": 1}),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    let task = wait_for("the instance to run", DEADLINE, || async {
        let (_, tasks) = c.api.post("/api/v1", &json!({"type": "GET_TASKS"})).await;
        tasks["get_tasks"]["tasks"]
            .as_array()?
            .iter()
            .find(|t| t["state"] == "TASK_RUNNING")
            .cloned()
    })
    .await;
    let reserved_cpus: f64 = task["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"] == "cpus" && r["reservations"][0]["role"] == "prod")
        .filter_map(|r| r["scalar"]["value"].as_f64())
        .sum();
    assert_eq!(reserved_cpus, 1.0, "{task}");
    let (_, role) = c.api.get("/api/wasmos/v1/roles/prod").await;
    assert_eq!(role["allocated"]["cpus"], 1.0, "{role}");
    assert_eq!(role["reserved"]["cpus"], 2.0, "{role}");
    let (_, app) = c.api.get("/v2/apps/big").await;
    assert_eq!(
        app["app"]["role"], "prod",
        "an app takes Marathon's role: {app}"
    );
    // acceptedResourceRoles ["*"]: unreserved resources only, though a
    // prod cpu is still free.
    let (code, v) = c
        .api
        .post(
            "/v2/apps",
            &json!({"id": "/plain", "cmd": "sleep 600", "cpus": 0.5, "mem": 64, "instances": 1,
                    "acceptedResourceRoles": ["*"]}),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    let plain = wait_for("the unreserved instance to run", DEADLINE, || async {
        let (_, tasks) = c.api.post("/api/v1", &json!({"type": "GET_TASKS"})).await;
        tasks["get_tasks"]["tasks"]
            .as_array()?
            .iter()
            .find(|t| {
                t["state"] == "TASK_RUNNING"
                    && t["name"].as_str().is_some_and(|n| n.starts_with("plain"))
            })
            .cloned()
    })
    .await;
    let cpus = plain["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "cpus")
        .cloned()
        .unwrap();
    assert!(
        cpus.get("reservations")
            .is_none_or(|r| r.as_array().is_some_and(Vec::is_empty)),
        "{plain}"
    );
    assert_eq!(cpus["scalar"]["value"], 0.5, "{plain}");
    // Roles Marathon does not run in are refused, naming the field.
    for (body, path) in [
        (json!({"id": "/x", "cmd": "true", "role": "other"}), "/role"),
        (
            json!({"id": "/x", "cmd": "true", "acceptedResourceRoles": ["other"]}),
            "/acceptedResourceRoles",
        ),
        (
            json!({"id": "/x", "cmd": "true", "acceptedResourceRoles": []}),
            "/acceptedResourceRoles",
        ),
    ] {
        let (code, v) = c.api.post("/v2/apps", &body).await;
        assert_eq!(code, 422, "{body}: {v}");
        assert!(v.to_string().contains(path), "{body}: {v}");
    }
}

/// A volume's data survives its agent (and master) restarting: a framework
/// writes, the cluster is killed and started again, the framework comes
/// back and its next task reads the data.
#[tokio::test]
async fn a_persistent_volume_keeps_its_data_across_a_restart_of_its_agent() {
    let plain = format!("127.0.0.1:{}", wasmos_tests::free_port());
    let (c, host_port, password) = cluster(tempfile::tempdir().unwrap(), &plain).await;
    let role_dir = c.dir.path().join("data/agent/volumes/roles/db");
    let env = [
        ("ROLE", "db".to_string()),
        ("FAILOVER", "3600".to_string()),
        ("VOLUMES", role_dir.display().to_string()),
    ];
    let out = run_pymesos(
        SCRIPT,
        &["stateful-write", &host_port, "pyfw", &password],
        &env,
        "pymesos stateful write: ok",
    )
    .await;
    let fid = announced(&out, "framework");
    let mut c = c;
    c.up.kill9().await;
    let c = Cluster::up_with(c.dir, &["--plain-listen", &plain]).await;
    run_pymesos(
        SCRIPT,
        &["stateful-read", &host_port, "pyfw", &password, &fid],
        &env,
        "pymesos stateful: ok",
    )
    .await;
    assert_eq!(reserved_cpus(&c.api, "db").await, 0.0);
}

/// The executors GET_EXECUTORS lists.
async fn executors(api: &Api) -> Vec<Value> {
    let (code, v) = api.post("/api/v1", &json!({"type": "GET_EXECUTORS"})).await;
    assert_eq!(code, 200, "{v}");
    v["get_executors"]["executors"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The environment of pymesos_scheduler.py's `executor` mode: the go-ahead
/// file, and the Python and script of the executor the agent starts.
fn executor_env(go: &std::path::Path) -> Vec<(&'static str, String)> {
    let root = wasmos_tests::root();
    vec![
        ("GO", go.display().to_string()),
        (
            "EXECUTOR_PYTHON",
            root.join("target/pymesos/bin/python").display().to_string(),
        ),
        (
            "EXECUTOR_SCRIPT",
            root.join("tests/clients/pymesos_executor.py")
                .display()
                .to_string(),
        ),
    ]
}

#[tokio::test]
async fn a_pymesos_executor_runs_its_frameworks_tasks_and_ends_with_them() {
    let (c, plain, password) = cluster(tempfile::tempdir().unwrap(), "127.0.0.1:0").await;
    let go = c.dir.path().join("go");
    let env = executor_env(&go);
    let (mut scheduler, fid) =
        wasmos_tests::spawn_pymesos(SCRIPT, &["executor", &plain, "pyfw", &password], &env).await;
    // While its task runs, the executor is listed with the framework's
    // ExecutorInfo, in GET_EXECUTORS and /master/state alike.
    let listed = executors(&c.api).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let info = &listed[0]["executor_info"];
    assert_eq!(info["executor_id"]["value"], "pyexec", "{info}");
    assert_eq!(info["framework_id"]["value"], fid.as_str(), "{info}");
    assert_eq!(info["type"], "CUSTOM", "{info}");
    assert_eq!(info["name"], "pymesos test executor", "{info}");
    let (_, state) = c.api.get("/master/state").await;
    let fw = state["frameworks"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["id"] == fid.as_str()).cloned())
        .unwrap_or_else(|| panic!("framework {fid} in {state}"));
    assert_eq!(fw["executors"][0]["executor_id"], "pyexec", "{fw}");
    let (_, t) = c.api.get("/api/wasmos/v1/tasks/ex-long").await;
    assert_eq!(t["state"], "TASK_RUNNING", "{t}");
    assert_eq!(t["executor"]["id"], "pyexec", "{t}");
    assert_eq!(t["executor"]["kind"], "CUSTOM", "{t}");
    // Its files are its executor's sandbox (the executor's output).
    let (code, listing) = c.api.get("/api/wasmos/v1/tasks/ex-long/files/browse").await;
    assert_eq!(code, 200, "{listing}");
    assert!(
        listing
            .as_array()
            .is_some_and(|l| l.iter().any(|e| e["path"] == "stderr")),
        "{listing}"
    );
    // The executor and its tasks are held: the executor's resources count
    // once, beside both tasks' (0.1 + 0.1 cpus while ex-long runs).
    let (_, fws) = c.api.get("/api/wasmos/v1/frameworks").await;
    let used = fws
        .as_array()
        .and_then(|a| a.iter().find(|f| f["id"] == fid.as_str()).cloned())
        .map(|f| f["used"]["cpus"].as_f64().unwrap_or(-1.0));
    assert_eq!(used, Some(0.2), "{fws}");
    std::fs::write(&go, "").unwrap();
    let status = tokio::time::timeout(DEADLINE * 2, scheduler.wait())
        .await
        .expect("the scheduler finishes")
        .unwrap();
    assert!(status.success(), "pymesos executor mode failed: {status}");
    // The executor ended with its last task: nothing is listed or held.
    wait_for("the executor to be gone", DEADLINE, || async {
        executors(&c.api).await.is_empty().then_some(())
    })
    .await;
    let (_, t) = c.api.get("/api/wasmos/v1/tasks/ex-done").await;
    assert_eq!(t["state"], "TASK_FINISHED", "{t}");
    let (code, _) = c.api.get("/api/wasmos/v1/tasks/ex-other").await;
    assert_eq!(code, 404, "a refused task never enters the state");
}

#[tokio::test]
async fn task_groups_run_on_the_default_executor_and_end_together() {
    let (c, plain, password) = cluster(tempfile::tempdir().unwrap(), "127.0.0.1:0").await;
    run_pymesos(
        SCRIPT,
        &["group", &plain, "pyfw", &password],
        &[],
        "pymesos group: ok",
    )
    .await;
    let (_, t) = c.api.get("/api/wasmos/v1/tasks/g-victim").await;
    assert_eq!(t["state"], "TASK_KILLED", "{t}");
    let (code, _) = c.api.get("/api/wasmos/v1/tasks/g-fine").await;
    assert_eq!(code, 404, "a task of an invalid group never runs");
    assert!(executors(&c.api).await.is_empty());
}

#[tokio::test]
async fn a_pymesos_executor_and_its_task_survive_a_restart_of_their_agent() {
    let plain = format!("127.0.0.1:{}", wasmos_tests::free_port());
    let (c, host_port, password) = cluster(tempfile::tempdir().unwrap(), &plain).await;
    let go = c.dir.path().join("go");
    let mut env = executor_env(&go);
    env.push(("FAILOVER", "3600".to_string()));
    let (mut scheduler, _fid) =
        wasmos_tests::spawn_pymesos(SCRIPT, &["executor", &host_port, "pyfw", &password], &env)
            .await;
    // The executor runs ex-long; master and agent die at once and come
    // back: the executor's container lives on, the agent takes it back from
    // its checkpoint, and the executor subscribes again.
    let mut c = c;
    c.up.kill9().await;
    let c = Cluster::up_with(c.dir, &["--plain-listen", &plain]).await;
    // The framework comes back (its task is still recorded running); the
    // executor's part is proven by what the scheduler does next.
    wait_for("the framework to subscribe again", DEADLINE, || async {
        (framework_named(&c.api, "pymesos-executor").await["active"] == true).then_some(())
    })
    .await;
    assert_eq!(
        c.api.task_state("ex-long").await.as_deref(),
        Some("TASK_RUNNING")
    );
    std::fs::write(&go, "").unwrap();
    // It answers a message and is killed cleanly: KILLED, not LOST.
    let status = tokio::time::timeout(DEADLINE * 3, scheduler.wait())
        .await
        .expect("the scheduler finishes")
        .unwrap();
    assert!(status.success(), "pymesos executor mode failed: {status}");
    assert_eq!(
        c.api.task_state("ex-long").await.as_deref(),
        Some("TASK_KILLED")
    );
}

/// A pymesos framework running a task on a machine that an operator
/// schedules for maintenance gets an inverse offer saying when, and offers
/// from that machine carry the same unavailability; it accepts, and
/// GET_MAINTENANCE_STATUS shows its answer.
#[tokio::test]
async fn a_pymesos_framework_gets_inverse_offers_for_a_machine_scheduled_for_maintenance() {
    let (c, plain, password) = cluster(tempfile::tempdir().unwrap(), "127.0.0.1:0").await;
    let done = c.dir.path().join("maintained.json");
    let (_fw, fid) = wasmos_tests::spawn_pymesos(
        SCRIPT,
        &["maintenance", &plain, "pyfw", &password],
        &[("DONE", done.display().to_string())],
    )
    .await;
    let (_, agents) = c.api.get("/api/wasmos/v1/agents").await;
    let host = agents[0]["hostname"].as_str().unwrap().to_string();
    let agent_id = agents[0]["id"].as_str().unwrap().to_string();
    let start: i64 = 4_102_444_800_000_000_000; // 2100-01-01
    let (code, v) = c
        .api
        .post(
            "/api/v1",
            &json!({"type": "UPDATE_MAINTENANCE_SCHEDULE", "update_maintenance_schedule": {"schedule": {"windows": [
                {"machine_ids": [{"hostname": host}],
                 "unavailability": {"start": {"nanoseconds": start}, "duration": {"nanoseconds": 3_600_000_000_000i64}}}]}}}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let said: Value = wait_for(
        "the framework to answer its inverse offer",
        DEADLINE,
        || async {
            let text = std::fs::read_to_string(&done).ok()?;
            serde_json::from_str(&text).ok()
        },
    )
    .await;
    assert_eq!(said["agent"], agent_id.as_str(), "{said}");
    assert_eq!(said["framework"], fid.as_str(), "{said}");
    assert_eq!(said["start"], start, "{said}");
    assert_eq!(said["offer_start"], start, "{said}");
    let status = wait_for("its answer in the maintenance status", DEADLINE, || async {
        let (_, v) = c
            .api
            .post("/api/v1", &json!({"type": "GET_MAINTENANCE_STATUS"}))
            .await;
        let s =
            v["get_maintenance_status"]["status"]["draining_machines"][0]["statuses"][0].clone();
        (s["status"] == "ACCEPT").then_some(s)
    })
    .await;
    assert_eq!(status["framework_id"]["value"], fid.as_str(), "{status}");
}
