//! The bundled Marathon framework, driven through Marathon's own REST API
//! (`/v2`) as a Marathon client would: real HTTP servers as tasks, real
//! health checks, real agents and masters.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use wasmos_tests::{Cluster, DEADLINE, Masters, Racks, cli, wait_for};

/// A client of `/v2` that also sees response headers.
struct V2 {
    base: String,
    http: reqwest::Client,
}

struct Reply {
    status: u16,
    deployment: Option<String>,
    body: Value,
}

impl V2 {
    fn new(base: &str) -> V2 {
        V2 {
            base: base.trim_end_matches('/').to_string(),
            http: wasmos_tests::client_for(base)
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Reply {
        // Marathon clients send JSON headers on every request.
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("accept", "application/json")
            .header("content-type", "application/json");
        if let Some(b) = body {
            r = r.body(serde_json::to_vec(b).unwrap());
        }
        match r.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let deployment = resp
                    .headers()
                    .get("marathon-deployment-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = resp.json().await.unwrap_or(Value::Null);
                Reply {
                    status,
                    deployment,
                    body,
                }
            }
            Err(_) => Reply {
                status: 0,
                deployment: None,
                body: Value::Null,
            },
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: &Value) -> Reply {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: &Value) -> Reply {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// Waits until Marathon serves (its plugin runs on the leader).
    async fn wait_up(&self) {
        wait_for("marathon to answer /v2/info", DEADLINE, || async {
            (self.get("/v2/info").await.status == 200).then_some(())
        })
        .await;
    }

    /// The app as GET /v2/apps/{id} shows it (tasks embedded).
    async fn app(&self, id: &str) -> Value {
        let r = self.get(&format!("/v2/apps/{id}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["app"].clone()
    }

    /// Waits until the app has no deployment and `n` healthy tasks.
    async fn wait_deployed(&self, id: &str, n: usize, deadline: Duration) -> Value {
        wait_for(
            &format!("{id} deployed with {n} healthy tasks"),
            deadline,
            || async {
                let r = self.get(&format!("/v2/apps/{id}")).await;
                let app = &r.body["app"];
                let tasks = app["tasks"].as_array()?;
                let healthy = tasks.iter().filter(|t| healthy(app, t)).count();
                (r.status == 200
                    && app["deployments"].as_array()?.is_empty()
                    && tasks.len() == n
                    && healthy == n)
                    .then(|| app.clone())
            },
        )
        .await
    }
}

/// A task is healthy when it runs and, if its app checks health, its
/// health check has said alive.
fn healthy(app: &Value, t: &Value) -> bool {
    let checked = app["healthChecks"]
        .as_array()
        .is_some_and(|h| !h.is_empty());
    let checks = t["healthCheckResults"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    t["state"] == "TASK_RUNNING"
        && (!checked || (!checks.is_empty() && checks.iter().all(|c| c["alive"] == true)))
}

fn task_ids(app: &Value) -> BTreeSet<String> {
    app["tasks"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter_map(|t| t["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Python's http.server on the task's first port, health-checked over HTTP.
fn web_app(id: &str, instances: u32) -> Value {
    json!({
        "id": id,
        "cmd": "exec python3 -m http.server --bind 127.0.0.1 $PORT0",
        "cpus": 0.1,
        "mem": 128,
        "instances": instances,
        "healthChecks": [{
            "protocol": "HTTP", "path": "/", "portIndex": 0,
            "gracePeriodSeconds": 30, "intervalSeconds": 1, "timeoutSeconds": 2,
            "maxConsecutiveFailures": 3
        }],
        // Keep two of three healthy; no room above three.
        "upgradeStrategy": { "minimumHealthCapacity": 0.6, "maximumOverCapacity": 0 }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn marathon_apps_deploy_heal_roll_within_health_capacity_scale_and_go() {
    let c = Cluster::up().await;
    let m = V2::new(&c.up.url);
    m.wait_up().await;
    let long = Duration::from_secs(90);

    // Bad definitions change nothing and say what is wrong, by path.
    let bad = m
        .post(
            "/v2/apps",
            &json!({"id": "/bad", "cmd": "x", "cpus": "many"}),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert_eq!(bad.body["message"], "Object is not valid");
    assert_eq!(bad.body["details"][0]["path"], "/cpus");
    assert_eq!(m.get("/v2/apps/bad").await.status, 404);

    // Deploy three instances: 201, a deployment, then three healthy tasks.
    let created = m.post("/v2/apps", &web_app("/web", 3)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let dep = created.deployment.expect("a Marathon-Deployment-Id header");
    assert_eq!(created.body["deployments"][0]["id"], dep.as_str());
    assert_eq!(created.body["id"], "/web");
    assert_eq!(created.body["backoffFactor"], 1.15);
    let dup = m.post("/v2/apps", &web_app("web", 1)).await;
    assert_eq!(dup.status, 409, "{}", dup.body);
    let app = m.wait_deployed("//web", 3, long).await;
    let mut ports = BTreeSet::new();
    for t in app["tasks"].as_array().unwrap() {
        let port = t["ports"][0].as_u64().unwrap();
        ports.insert(port);
        let page = reqwest::get(format!("http://127.0.0.1:{port}/"))
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "task {} serves HTTP", t["id"]);
        assert!(t["stagedAt"].as_str().unwrap().ends_with('Z'));
        assert_eq!(t["servicePorts"].as_array().unwrap().len(), 1);
    }
    assert_eq!(ports.len(), 3, "each task has its own port");
    assert_eq!(m.get("/v2/deployments").await.body, json!([]));
    let listed = m.get("/v2/apps?embed=app.counts&label=").await;
    assert_eq!(listed.body["apps"][0]["tasksHealthy"], 3);

    // A killed task is replaced.
    let victim = task_ids(&app).into_iter().next().unwrap();
    let k = m.delete(&format!("/v2/apps/web/tasks/{victim}")).await;
    assert_eq!(k.status, 200, "{}", k.body);
    assert_eq!(k.body["task"]["id"], victim.as_str());
    let healed = wait_for("the killed task to be replaced", long, || async {
        let app = m.app("/web").await;
        let ids = task_ids(&app);
        let ok = !ids.contains(&victim)
            && ids.len() == 3
            && app["tasks"].as_array()?.iter().all(|t| healthy(&app, t));
        ok.then_some(app)
    })
    .await;

    // A rolling upgrade keeps at least ceil(3 * 0.6) = 2 healthy at every
    // sample, and ends with three healthy tasks of the new version.
    let old_ids = task_ids(&healed);
    let mut changed = web_app("/web", 3);
    changed["env"] = json!({ "RELEASE": "2" });
    let up = m.put("/v2/apps/web", &changed).await;
    assert_eq!(up.status, 200, "{}", up.body);
    let version = up.body["version"].as_str().unwrap().to_string();
    // A second change while it rolls is refused unless forced.
    let locked = m.put("/v2/apps/web", &json!({"instances": 2})).await;
    assert_eq!(locked.status, 409, "{}", locked.body);
    assert_eq!(locked.body["deployments"][0]["id"], up.body["deploymentId"]);
    let mut samples = 0;
    let mut lowest = usize::MAX;
    let deadline = tokio::time::Instant::now() + long;
    loop {
        let app = m.app("/web").await;
        let tasks = app["tasks"].as_array().unwrap().clone();
        let healthy_now = tasks.iter().filter(|t| healthy(&app, t)).count();
        lowest = lowest.min(healthy_now);
        samples += 1;
        assert!(
            healthy_now >= 2,
            "only {healthy_now} healthy during the upgrade: {tasks:?}"
        );
        assert!(
            tasks.len() <= 3,
            "maximumOverCapacity 0 allows no fourth task: {tasks:?}"
        );
        let done = app["deployments"].as_array().unwrap().is_empty()
            && tasks.len() == 3
            && tasks
                .iter()
                .all(|t| healthy(&app, t) && t["version"] == version.as_str());
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upgrade did not finish: {app}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(samples > 3, "the upgrade was observed while it ran");
    let app = m.app("/web").await;
    assert!(
        task_ids(&app).is_disjoint(&old_ids),
        "every task was replaced"
    );
    assert_eq!(app["env"]["RELEASE"], "2");
    let versions = m.get("/v2/apps/web/versions").await;
    assert_eq!(versions.body["versions"][0], version.as_str());
    assert_eq!(versions.body["versions"].as_array().unwrap().len(), 2);

    // Scaling down kills two and keeps one, without a restart.
    let kept = task_ids(&app);
    let scale = m.put("/v2/apps//web", &json!({"instances": 1})).await;
    assert_eq!(scale.status, 200, "{}", scale.body);
    let app = m.wait_deployed("/web", 1, long).await;
    assert!(
        kept.is_superset(&task_ids(&app)),
        "the survivor is an old task"
    );
    assert_eq!(app["versionInfo"]["lastConfigChangeAt"], version.as_str());

    // Removing the app kills its tasks.
    let gone = m.delete("/v2/apps/web").await;
    assert_eq!(gone.status, 200, "{}", gone.body);
    assert_eq!(m.get("/v2/apps/web").await.status, 404);
    let last = task_ids(&app).into_iter().next().unwrap();
    c.api.wait_task_state(&last, "TASK_KILLED").await;
    wait_for("the removal to finish", DEADLINE, || async {
        (m.get("/v2/deployments").await.body == json!([])).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashing_app_is_relaunched_with_backoff_and_its_failure_is_shown() {
    let c = Cluster::up().await;
    let m = V2::new(&c.up.url);
    m.wait_up().await;
    let r = m
        .post(
            "/v2/apps",
            &json!({"id": "/crash", "cmd": "exit 3", "cpus": 0.1, "mem": 32,
                    "backoffSeconds": 30, "portDefinitions": []}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let app = wait_for("the first failure", DEADLINE, || async {
        let app = m.app("crash").await;
        app.get("lastTaskFailure").is_some().then_some(app)
    })
    .await;
    assert_eq!(app["lastTaskFailure"]["state"], "TASK_FAILED");
    assert_eq!(app["lastTaskFailure"]["appId"], "/crash");
    // The relaunch waits out the backoff, visible in the queue.
    let q = wait_for("the app in the launch queue", DEADLINE, || async {
        let q = m.get("/v2/queue").await.body;
        let item = q["queue"].as_array()?.first()?.clone();
        (item["delay"]["timeLeftSeconds"].as_u64()? > 0).then_some(item)
    })
    .await;
    assert_eq!(q["app"]["id"], "/crash");
    assert_eq!(q["count"], 1);
    assert_eq!(q["delay"]["overdue"], false);
    // Asked why it waits, the answer is the backoff, not a placement
    // (rounds of offers go on while it is delayed).
    let why = wait_for("the delay as the reason it waits", DEADLINE, || async {
        let out = c.cli(&["app", "why", "/crash"]).await;
        out.stdout
            .contains("delayed after failed tasks")
            .then_some(out.stdout)
    })
    .await;
    assert!(why.contains("/v2/queue//crash/delay"), "{why}");
    // Resetting the delay relaunches at once.
    let failures_before = c.api.get("/api/wasmos/v1/tasks").await.1;
    let before = failures_before.as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(m.delete("/v2/queue//crash/delay").await.status, 204);
    wait_for("a relaunch after the reset", DEADLINE, || async {
        let (_, t) = c.api.get("/api/wasmos/v1/tasks").await;
        (t.as_array()?.len() > before).then_some(())
    })
    .await;
}

/// Also: every placement is explained (`/api/wasmos/v1/tasks/{id}/placement`,
/// `wasmos task why`), naming the rule that ruled out each other agent, and
/// so is the instance that waits (`wasmos app why`), until it no longer
/// does.
#[tokio::test(flavor = "multi_thread")]
async fn unique_hostnames_spread_an_app_and_an_unmeetable_instance_waits_in_the_queue() {
    let r = Racks::start(&[("h1", "r1"), ("h2", "r1"), ("h3", "r2")]).await;
    let m = V2::new(&r.master.url);
    m.wait_up().await;
    let app = json!({
        "id": "/spread", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 3,
        "constraints": [["hostname", "UNIQUE"], ["rack", "LIKE", "r1"]]
    });
    let created = m.post("/v2/apps", &app).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let app = wait_for("two tasks on two hosts", DEADLINE, || async {
        let app = m.app("/spread").await;
        let running = app["tasks"]
            .as_array()?
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .count();
        (running == 2).then_some(app)
    })
    .await;
    let hosts: BTreeSet<&str> = app["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, BTreeSet::from(["h1", "h2"]));
    // Each task's decision names where it went and why h3 could not take
    // it (with h1 and h2 both free, h3 is the one every decision rules out).
    let api = wasmos_tests::Api::new(&r.master.url);
    for t in app["tasks"].as_array().unwrap() {
        let id = t["id"].as_str().unwrap();
        let (code, d) = api
            .get(&format!("/api/wasmos/v1/tasks/{id}/placement"))
            .await;
        assert_eq!(code, 200, "{d}");
        assert_eq!(d["chosen"], t["slaveId"], "{d}");
        assert_eq!(d["explained"], true, "{d}");
        assert_eq!(d["group"], "/spread", "{d}");
        let chosen = &d["candidates"][0];
        assert_eq!(
            (&chosen["hostname"], &chosen["refused"]),
            (&t["host"], &Value::Null),
            "{d}"
        );
        let h3 = d["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["hostname"] == "h3")
            .unwrap_or_else(|| panic!("h3 is among the candidates: {d}"));
        assert_eq!(
            h3["refused"], "constraints: [rack, LIKE, r1] not met",
            "{d}"
        );
    }
    let first = app["tasks"][0]["id"].as_str().unwrap();
    let why = cli(&r.master.url, &["task", "why", first]).await;
    assert_eq!(why.code, Some(0), "{why:?}");
    assert!(
        why.stdout.contains("chosen") && why.stdout.contains("[rack, LIKE, r1] not met"),
        "{why:?}"
    );
    let (code, none) = api.get("/api/wasmos/v1/tasks/no-such-task/placement").await;
    assert_eq!(code, 404, "{none}");
    // The third cannot be placed: it waits, with the reason, and the
    // deployment stays open.
    let item = wait_for("the third instance in the queue", DEADLINE, || async {
        let q = m.get("/v2/queue").await.body;
        let item = q["queue"].as_array()?.first()?.clone();
        let reasons = item["processedOffersSummary"]["rejectSummaryLastOffers"]
            .as_array()?
            .clone();
        reasons
            .iter()
            .any(|r| r["reason"] == "UnfulfilledConstraint")
            .then_some(item)
    })
    .await;
    assert_eq!(item["count"], 1);
    assert_eq!(
        m.get("/v2/deployments")
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // More offers come and go unused, and still nothing is launched.
    let seen = item["processedOffersSummary"]["processedOffersCount"]
        .as_u64()
        .unwrap();
    wait_for("more offers refused", DEADLINE, || async {
        let q = m.get("/v2/queue").await.body;
        let n = q["queue"][0]["processedOffersSummary"]["processedOffersCount"].as_u64()?;
        (n >= seen + 4).then_some(())
    })
    .await;
    let app = m.app("/spread").await;
    assert_eq!(
        app["tasks"].as_array().unwrap().len(),
        2,
        "nothing launched wrongly"
    );
    // Why it waits: each agent ruled out by the rule it breaks, and what
    // would make it fit.
    let why = cli(&r.master.url, &["app", "why", "spread"]).await;
    assert_eq!(why.code, Some(0), "{why:?}");
    for needle in [
        "/spread (waiting) of framework marathon",
        "] not met",
        "it fits once an agent with room meets the rules",
    ] {
        assert!(why.stdout.contains(needle), "{needle}: {why:?}");
    }
    // A round of offers may hold some agents' offers only: across rounds,
    // each agent is ruled out by the rule it breaks, and only by it.
    let seen: std::sync::Mutex<BTreeSet<(String, String)>> = Default::default();
    wait_for("every agent ruled out by its rule", DEADLINE, || async {
        let (_, w) = api
            .get("/api/wasmos/v1/frameworks/marathon/waiting?group=/spread")
            .await;
        for c in w[0]["candidates"].as_array()? {
            let host = c["hostname"].as_str()?.to_string();
            let why = c["refused"].as_str()?.to_string();
            let rule = if host == "h3" {
                "[rack, LIKE, r1]"
            } else {
                "[hostname, UNIQUE]"
            };
            assert_eq!(why, format!("constraints: {rule} not met"), "{w}");
            seen.lock().unwrap().insert((host, why));
        }
        (seen.lock().unwrap().len() == 3).then_some(())
    })
    .await;
    // Scaling to what fits completes the deployment (forced: it is locked).
    let fit = m
        .put("/v2/apps/spread?force=true", &json!({"instances": 2}))
        .await;
    assert_eq!(fit.status, 200, "{}", fit.body);
    m.wait_deployed("/spread", 2, DEADLINE).await;
    assert_eq!(m.get("/v2/queue").await.body, json!({"queue": []}));
    // Nothing waits any more, and nothing says it does.
    wait_for("the refusal to be dropped", DEADLINE, || async {
        let (_, w) = api.get("/api/wasmos/v1/frameworks/marathon/waiting").await;
        (w.as_array()?.is_empty()).then_some(())
    })
    .await;
    let why = cli(&r.master.url, &["app", "why", "/spread"]).await;
    assert!(why.stdout.contains("is not waiting"), "{why:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_survives_a_leader_kill_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    let mut ms = Masters::start(3, dir.path()).await;
    let (leader, _) = ms.wait_leader(&[1, 2, 3], None).await;
    let data = dir.path().join("agent");
    let _agent = wasmos_tests::Daemon::start(
        "agent",
        &[
            "agent",
            "--master",
            &ms.urls(),
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--ca-cert",
            ms.ca().to_str().unwrap(),
            "--join-token-file",
            ms.join_token_file().to_str().unwrap(),
            "--resources",
            &wasmos_tests::own_ports(""),
        ],
        "agent",
        dir.path(),
    )
    .await;
    let m = V2::new(&ms.url(leader));
    m.wait_up().await;
    // Tasks that take a few seconds to turn healthy keep the deployment
    // open while the leader dies.
    let mut app = web_app("/slow", 3);
    app["cmd"] = json!("sleep 10; exec python3 -m http.server --bind 127.0.0.1 $PORT0");
    // Three masters starting on two busy cores may still be electing: a 503
    // says nothing was acknowledged (retry), a 409 that an earlier try got
    // through after all.
    wait_for("the app accepted", DEADLINE, || async {
        let r = m.post("/v2/apps", &app).await;
        assert!(matches!(r.status, 201 | 409 | 503 | 0), "{}", r.body);
        matches!(r.status, 201 | 409).then_some(())
    })
    .await;
    let deps = m.get("/v2/deployments").await.body;
    let dep = deps[0]["id"].as_str().expect("a deployment").to_string();
    wait_for("some tasks launched", DEADLINE, || async {
        let a = m.app("/slow").await;
        (!a["tasks"].as_array()?.is_empty()).then_some(())
    })
    .await;
    let deps = m.get("/v2/deployments").await.body;
    assert_eq!(
        deps[0]["id"],
        dep.as_str(),
        "still deploying when the leader dies"
    );
    ms.kill9(leader).await;
    let survivors = ms.running();
    let (new_leader, _) = ms.wait_leader(&survivors, Some(leader)).await;
    // Clients follow the leader through any surviving master.
    let m = V2::new(&ms.url(new_leader));
    m.wait_up().await;
    let app = m.wait_deployed("/slow", 3, Duration::from_secs(90)).await;
    assert_eq!(
        app["tasks"].as_array().unwrap().len(),
        3,
        "nothing launched twice"
    );
    let (_, tasks) = wasmos_tests::Api::new(&ms.url(new_leader))
        .get("/api/wasmos/v1/tasks")
        .await;
    let live = tasks
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .count();
    assert_eq!(live, 3, "exactly three tasks run in the cluster: {tasks}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_app_cli_deploys_scales_shows_and_removes_with_progress() {
    let c = Cluster::up().await;
    V2::new(&c.up.url).wait_up().await;
    let file = c.dir.path().join("sleeper.json");
    std::fs::write(
        &file,
        json!({"id": "/tools/sleeper", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 2})
            .to_string(),
    )
    .unwrap();
    let deployed = c.cli(&["app", "deploy", file.to_str().unwrap()]).await;
    assert_eq!(deployed.code, Some(0), "{deployed:?}");
    assert!(
        deployed
            .stdout
            .contains("deploying /tools/sleeper: deployment "),
        "{}",
        deployed.stdout
    );
    assert!(
        deployed.stdout.contains("2 of 2 instances healthy"),
        "{}",
        deployed.stdout
    );

    let list = c.cli(&["app", "list"]).await;
    assert!(list.stdout.contains("/tools/sleeper"), "{}", list.stdout);
    assert!(list.stdout.contains("2/2"), "{}", list.stdout);

    let scaled = c.cli(&["app", "scale", "tools/sleeper", "3"]).await;
    assert_eq!(scaled.code, Some(0), "{scaled:?}");
    assert!(
        scaled.stdout.contains("3 of 3 instances healthy"),
        "{}",
        scaled.stdout
    );
    let show = c.cli(&["app", "show", "/tools/sleeper"]).await;
    assert_eq!(
        show.stdout.matches("TASK_RUNNING").count(),
        3,
        "{}",
        show.stdout
    );

    // Bad input names the field and changes nothing.
    std::fs::write(
        &file,
        json!({"id": "/tools/sleeper", "cmd": "x", "mem": -1}).to_string(),
    )
    .unwrap();
    let bad = c.cli(&["app", "deploy", file.to_str().unwrap()]).await;
    assert_eq!(bad.code, Some(1));
    assert!(bad.stderr.contains("/mem"), "{}", bad.stderr);
    let show = c.cli(&["app", "show", "/tools/sleeper"]).await;
    assert!(
        show.stdout.contains("cmd:       sleep 600"),
        "{}",
        show.stdout
    );
    let missing = c.cli(&["app", "scale", "nope", "1"]).await;
    assert_eq!(missing.code, Some(1));
    assert!(
        missing.stderr.contains("App '/nope' does not exist"),
        "{}",
        missing.stderr
    );

    let removed = c.cli(&["app", "remove", "/tools/sleeper"]).await;
    assert_eq!(removed.code, Some(0), "{removed:?}");
    assert!(removed.stdout.contains("is removed"), "{}", removed.stdout);
    let list = c.cli(&["app", "list"]).await;
    assert!(list.stdout.contains("no apps"), "{}", list.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_sends_marathon_events_framed_for_its_clients() {
    use futures::StreamExt;
    let c = Cluster::up().await;
    let m = V2::new(&c.up.url);
    m.wait_up().await;
    // Without the SSE Accept header Marathon answers 405.
    assert_eq!(m.get("/v2/events").await.status, 405);

    let resp = wasmos_tests::client_for(&c.up.url)
        .build()
        .unwrap()
        .get(format!("{}/v2/events", c.up.url))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let mut read_until = async |needle: &str, text: &mut String| {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !text.contains(needle) {
            let chunk = tokio::time::timeout_at(deadline, body.next())
                .await
                .unwrap_or_else(|_| panic!("no {needle} in the stream: {text}"))
                .expect("the stream stays open")
                .unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    read_until("event: event_stream_attached\r\n", &mut text).await;
    let r = m
        .post(
            "/v2/apps",
            &json!({"id": "/ev", "cmd": "sleep 600", "cpus": 0.1, "mem": 16}),
        )
        .await;
    assert_eq!(r.status, 201);
    for kind in [
        "api_post_event",
        "deployment_info",
        "status_update_event",
        "deployment_success",
    ] {
        read_until(&format!("event: {kind}\r\n"), &mut text).await;
    }
    // Every frame is `event:` then one `data:` line of JSON with the type
    // and a Marathon timestamp.
    // (What follows the last blank line may be a frame still arriving.)
    let complete = &text[..text.rfind("\r\n\r\n").unwrap()];
    for frame in complete
        .split("\r\n\r\n")
        .filter(|f| f.starts_with("event: "))
    {
        let mut lines = frame.split("\r\n");
        let kind = lines.next().unwrap().strip_prefix("event: ").unwrap();
        let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["eventType"], kind, "{frame}");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{frame}");
        if kind == "deployment_info" {
            assert!(
                v["plan"]["original"]["apps"].is_array(),
                "the full plan: {v}"
            );
            assert_eq!(v["plan"]["target"]["apps"][0]["id"], "/ev");
        }
    }
}

/// marathon-python, the common Python client, unchanged: it parses every
/// answer strictly (an unknown key or a wrong timestamp format is an error).
#[tokio::test(flavor = "multi_thread")]
async fn marathon_python_drives_wasmos_unchanged() {
    let c = Cluster::up().await;
    V2::new(&c.up.url).wait_up().await;
    // A user who may manage apps (and read the cluster): marathon-python
    // sends its password with HTTP Basic, and a token as `token=`.
    let rules = json!([{"area": "apps", "access": "write"}, {"area": "cluster", "access": "read"}]);
    let password = wasmos_tests::user_with(&c.api, "deployer", rules).await;
    let (code, token) = c
        .api
        .post(
            "/api/wasmos/v1/acl/tokens",
            &json!({"name": "deployer-ci", "policies": ["deployer"]}),
        )
        .await;
    assert_eq!(code, 201, "{token}");
    wasmos_tests::run_client_script(
        "marathon_python.py",
        &[
            &c.up.url,
            c.ca().to_str().unwrap(),
            "deployer",
            &password,
            token["secret"].as_str().unwrap(),
        ],
        "marathon-python: ok",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_health_check_runs_where_the_task_runs_and_failing_it_replaces_the_task() {
    let c = Cluster::up().await;
    let m = V2::new(&c.up.url);
    m.wait_up().await;
    // Healthy while the task's sandbox holds `ok`; the task removes it
    // after a few seconds, so the check starts failing.
    let app = json!({
        "id": "/cmd", "cmd": "touch ok; sleep 4; rm ok; exec sleep 600",
        "cpus": 0.1, "mem": 32, "portDefinitions": [],
        // A root task (the management token may ask for one): its check
        // runs as root too, but with no capability the task lacks.
        "user": "root",
        "healthChecks": [{
            "protocol": "COMMAND",
            // The check, like the task, cannot gain privileges
            // (no_new_privs) and holds only Docker's default capabilities
            // (not the agent's CAP_SYS_ADMIN and the rest).
            "command": {"value": "grep -q 'NoNewPrivs:.*1' /proc/self/status || { echo privileges can grow; exit 4; }; grep -q 'CapBnd:.*00000000a80425fb' /proc/self/status || { grep CapBnd /proc/self/status; exit 5; }; test -e \"$MESOS_SANDBOX/ok\" || { echo no ok in $PWD; exit 3; }"},
            "gracePeriodSeconds": 30, "intervalSeconds": 1, "timeoutSeconds": 5,
            "maxConsecutiveFailures": 2
        }]
    });
    let created = m.post("/v2/apps", &app).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let first = wait_for("the task healthy by its command", DEADLINE, || async {
        let app = m.app("/cmd").await;
        let t = app["tasks"].as_array()?.first()?.clone();
        (t["healthCheckResults"][0]["alive"] == true).then_some(t)
    })
    .await;
    let id = first["id"].as_str().unwrap().to_string();
    // Two failed checks kill it; the app gets a new task.
    let t = c.api.wait_task_state(&id, "TASK_KILLED").await;
    let msg = t["status"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("command exited 3: no ok in"), "{t}");
    wait_for("a replacement task", DEADLINE, || async {
        let app = m.app("/cmd").await;
        let tasks = app["tasks"].as_array()?.clone();
        tasks
            .iter()
            .any(|t| t["id"] != id.as_str() && t["state"] == "TASK_RUNNING")
            .then_some(())
    })
    .await;
}

/// SIGSTOP silences an agent as a partition would. The app's
/// unreachableStrategy replaces its task after `inactiveAfterSeconds`; when
/// the agent returns, the surplus task is killed.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_task_is_replaced_after_inactive_after_seconds_and_the_surplus_killed_on_return()
 {
    let r = Racks::start_with(
        &[("h1", "r1"), ("h2", "r1")],
        &[
            "--heartbeat-interval-ms",
            "300",
            "--agent-timeout-ms",
            "1500",
        ],
    )
    .await;
    let m = V2::new(&r.master.url);
    m.wait_up().await;
    let app = json!({
        "id": "/steady", "cmd": "sleep 600", "cpus": 0.1, "mem": 16,
        "unreachableStrategy": {"inactiveAfterSeconds": 1, "expungeAfterSeconds": 600}
    });
    assert_eq!(m.post("/v2/apps", &app).await.status, 201);
    let first = m.wait_deployed("/steady", 1, DEADLINE).await["tasks"][0].clone();
    let host = first["host"].as_str().unwrap().to_string();
    let silent = &r.agents[if host == "h1" { 0 } else { 1 }];

    silent.signal(nix::sys::signal::Signal::SIGSTOP);
    let replaced = wait_for("a replacement on the other host", DEADLINE, || async {
        let app = m.app("/steady").await;
        let tasks = app["tasks"].as_array()?.clone();
        let unreachable = tasks
            .iter()
            .any(|t| t["id"] == first["id"] && t["state"] == "TASK_UNREACHABLE");
        let other = tasks
            .iter()
            .find(|t| t["id"] != first["id"] && t["state"] == "TASK_RUNNING")?
            .clone();
        unreachable.then_some(other)
    })
    .await;
    assert_ne!(replaced["host"], host.as_str());

    silent.signal(nix::sys::signal::Signal::SIGCONT);
    wait_for(
        "one task again once the agent is back",
        DEADLINE,
        || async {
            let app = m.app("/steady").await;
            let tasks = app["tasks"].as_array()?.clone();
            let running: Vec<&Value> = tasks
                .iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .collect();
            (tasks.len() == 1 && running.len() == 1).then_some(())
        },
    )
    .await;
}

/// Serves `dir` over HTTP on a free port (Python's http.server).
struct FileServer {
    child: tokio::process::Child,
    port: u16,
}

impl FileServer {
    async fn start(dir: &std::path::Path) -> FileServer {
        let port = wasmos_tests::free_port();
        let child = tokio::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        wait_for("the file server", DEADLINE, || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        FileServer { child, port }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fetched_files_are_in_the_sandbox_before_the_task_starts_and_a_failed_fetch_fails_it() {
    let c = Cluster::up().await;
    let m = V2::new(&c.up.url);
    m.wait_up().await;
    // An archive on the agent's disk and a script on an HTTP server.
    let files = c.files();
    std::fs::create_dir_all(files.join("bundle")).unwrap();
    std::fs::write(files.join("bundle/hello.txt"), "hello from the archive\n").unwrap();
    let tar = std::process::Command::new("tar")
        .args(["-czf", "bundle.tgz", "bundle"])
        .current_dir(&files)
        .status()
        .unwrap();
    assert!(tar.success());
    std::fs::write(
        files.join("run.sh"),
        "#!/bin/sh\ncat bundle/hello.txt\nexec sleep 600\n",
    )
    .unwrap();
    let server = FileServer::start(&files).await;
    let archive = format!("file://{}", files.join("bundle.tgz").display());
    let script = format!("http://127.0.0.1:{}/run.sh", server.port);
    let app = json!({
        "id": "/fetcher", "cmd": "./run.sh", "cpus": 0.1, "mem": 32, "portDefinitions": [],
        "fetch": [{"uri": archive, "extract": true}, {"uri": script, "executable": true}]
    });
    assert_eq!(m.post("/v2/apps", &app).await.status, 201);
    let task = m.wait_deployed("/fetcher", 1, DEADLINE).await["tasks"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("the script's output", DEADLINE, || async {
        let out = c.cli(&["task", "logs", &task]).await;
        out.stdout.contains("hello from the archive").then_some(())
    })
    .await;
    // Marathon echoes `fetch` back, and turns `uris` into it.
    let got = m.app("/fetcher").await;
    assert_eq!(got["fetch"][1]["executable"], true, "{got}");

    let missing = format!("http://127.0.0.1:{}/no-such-file", server.port);
    let broken = json!({"id": "/broken", "cmd": "true", "cpus": 0.1, "mem": 16,
        "portDefinitions": [], "backoffSeconds": 60, "uris": [missing]});
    assert_eq!(m.post("/v2/apps", &broken).await.status, 201);
    let failure = wait_for("the failed fetch", DEADLINE, || async {
        m.app("/broken").await.get("lastTaskFailure").cloned()
    })
    .await;
    assert_eq!(failure["state"], "TASK_FAILED");
    let msg = failure["message"].as_str().unwrap();
    assert!(msg.contains("no-such-file") && msg.contains("404"), "{msg}");
    drop(server.child);
}

/// `file://` reads only beneath the directories the agent allows: the
/// agent's own files (here the cluster CA's key) cannot be fetched, not by
/// path, not through `..`, not through a symbolic link; the task fails
/// before it runs, saying why.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_fetch_outside_the_allowed_directories_fails_the_task_and_copies_nothing() {
    let c = Cluster::up().await;
    let m = V2::new(&c.up.url);
    m.wait_up().await;
    let secret = c.dir.path().join("data/tls/ca.key");
    assert!(
        secret.is_file(),
        "up keeps the cluster CA's key at {}",
        secret.display()
    );
    std::os::unix::fs::symlink(&secret, c.files().join("innocent.txt")).unwrap();
    let tries = [
        (
            "/direct",
            format!("file://{}", secret.display()),
            "not beneath a directory",
        ),
        (
            "/dots",
            format!("file://{}/../data/tls/ca.key", c.files().display()),
            "leads out of",
        ),
        (
            "/link",
            format!("file://{}/innocent.txt", c.files().display()),
            "leads out of",
        ),
        (
            "/shadow",
            "file:///etc/shadow".to_string(),
            "not beneath a directory",
        ),
    ];
    for (id, uri, why) in &tries {
        let app = json!({"id": id, "cmd": "cat *; sleep 600", "cpus": 0.1, "mem": 16,
            "portDefinitions": [], "backoffSeconds": 600,
            "fetch": [{"uri": uri, "extract": false}]});
        assert_eq!(m.post("/v2/apps", &app).await.status, 201);
        let failure = wait_for("the refused fetch", DEADLINE, || async {
            m.app(id).await.get("lastTaskFailure").cloned()
        })
        .await;
        assert_eq!(failure["state"], "TASK_FAILED", "{id}: {failure}");
        let msg = failure["message"].as_str().unwrap();
        assert!(msg.contains(why), "{id}: {msg}");
        assert!(
            msg.contains("file://") || msg.contains("--fetch-allow"),
            "{id}: {msg}"
        );
        // Never started: no sandbox holds a copy.
        let task = failure["taskId"].as_str().unwrap();
        let sandbox = c.dir.path().join("data/agent/sandboxes").join(task);
        let copied: Vec<_> = std::fs::read_dir(&sandbox)
            .unwrap_or_else(|e| panic!("{id}: the task's sandbox {}: {e}", sandbox.display()))
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            copied
                .iter()
                .all(|n| !n.to_string_lossy().contains("ca.key")
                    && !n.to_string_lossy().contains("shadow")
                    && !n.to_string_lossy().contains("innocent")),
            "{id}: {copied:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_waits_for_readiness_and_reports_it() {
    let c = Cluster::up().await;
    let m = V2::new(&c.up.url);
    m.wait_up().await;
    // Ready once `ready` exists in the sandbox, a few seconds after start.
    let app = json!({
        "id": "/warm", "cpus": 0.1, "mem": 128,
        "cmd": "(sleep 4; touch ready) & exec python3 -m http.server --bind 127.0.0.1 $PORT0",
        "portDefinitions": [{"port": 0, "name": "http"}],
        "readinessChecks": [{"name": "warmed", "portName": "http", "path": "/ready",
                             "intervalSeconds": 1, "timeoutSeconds": 0.5}]
    });
    let r = m.post("/v2/apps", &app).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Running, but not ready: the deployment holds.
    wait_for("a running task that is not ready yet", DEADLINE, || async {
        let a = m.get("/v2/apps/warm?embed=app.readiness").await.body["app"].clone();
        let running = a["tasks"]
            .as_array()?
            .iter()
            .any(|t| t["state"] == "TASK_RUNNING");
        let not_ready = a["readinessCheckResults"]
            .as_array()?
            .iter()
            .any(|r| r["ready"] == false && r["name"] == "warmed");
        (running && not_ready && !a["deployments"].as_array()?.is_empty()).then_some(())
    })
    .await;
    let a = wait_for("the deployment to finish once ready", DEADLINE, || async {
        let a = m.get("/v2/apps/warm?embed=app.readiness").await.body["app"].clone();
        a["deployments"].as_array()?.is_empty().then_some(a)
    })
    .await;
    assert_eq!(a["readinessCheckResults"][0]["ready"], true, "{a}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_health_check_accepts_a_tasks_self_signed_certificate() {
    let c = Cluster::up().await;
    let m = V2::new(&c.up.url);
    m.wait_up().await;
    let certs = c.files().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=task", "-days", "1",
            "-keyout", "key.pem", "-out", "cert.pem",
        ])
        .current_dir(&certs)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    // The task runs as the agent's unprivileged task user, and a fetch
    // copies only what that user could read: openssl made the key 0600.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        certs.join("key.pem"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    // The key and certificate reach the sandbox through fetch.
    let fetch: Vec<Value> = ["cert.pem", "key.pem"]
        .iter()
        .map(|f| json!({"uri": format!("file://{}", certs.join(f).display())}))
        .collect();
    let serve = "import http.server, ssl, os; \
        s = http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT0'])), http.server.SimpleHTTPRequestHandler); \
        t = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); t.load_cert_chain('cert.pem', 'key.pem'); \
        s.socket = t.wrap_socket(s.socket, server_side=True); s.serve_forever()";
    let app = json!({
        "id": "/tls", "cmd": format!("exec python3 -c \"{serve}\""), "cpus": 0.1, "mem": 128,
        "fetch": fetch,
        "healthChecks": [{"protocol": "HTTPS", "path": "/", "gracePeriodSeconds": 30,
                          "intervalSeconds": 1, "timeoutSeconds": 2}]
    });
    let r = m.post("/v2/apps", &app).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let a = m.wait_deployed("/tls", 1, DEADLINE).await;
    let id = a["tasks"][0]["id"].as_str().unwrap();
    let (_, t) = c.api.get(&format!("/api/wasmos/v1/tasks/{id}")).await;
    let msg = t["status"]["message"].as_str().unwrap_or("");
    assert!(msg.starts_with("HTTPS 200 from :"), "{t}");
}

/// The hosts an app's tasks run on.
fn hosts_of(app: &Value) -> BTreeSet<&str> {
    app["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["host"].as_str())
        .collect()
}

/// Waits until Marathon holds exactly one task of `app`, on `host`.
async fn wait_only_on(m: &V2, app: &str, host: &str) {
    wait_for(
        &format!("Marathon to hold one task of {app}, on {host}"),
        DEADLINE,
        || async {
            let tasks = m.app(app).await["tasks"].clone();
            let tasks = tasks.as_array()?.clone();
            (tasks.len() == 1 && tasks[0]["host"] == host).then_some(())
        },
    )
    .await;
}

/// An operator drains an agent with the CLI: nothing new goes there, its
/// tasks are killed and Marathon runs them on the other agent, and it is
/// DRAINED once none is left (the native API and Mesos' GET_AGENTS say
/// so); reactivated, it takes tasks again.
#[tokio::test(flavor = "multi_thread")]
async fn a_drained_agent_hands_its_tasks_to_another_and_comes_back_when_reactivated() {
    let r = Racks::start(&[("h1", "r1"), ("h2", "r1")]).await;
    let m = V2::new(&r.master.url);
    m.wait_up().await;
    let api = wasmos_tests::Api::new(&r.master.url);
    let app = json!({"id": "/moved", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 2,
                     "constraints": [["hostname", "UNIQUE"]]});
    assert_eq!(m.post("/v2/apps", &app).await.status, 201);
    m.wait_deployed("/moved", 2, DEADLINE).await;
    let (_, agents) = api.get("/api/wasmos/v1/agents").await;
    let h1 = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["hostname"] == "h1")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Bad input: refused, nothing changes.
    let out = wasmos_tests::cli(&r.master.url, &["agent", "drain", "nobody-S9"]).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("nobody-S9"), "{out:?}");
    let (code, v) = api
        .post(
            &format!("/api/wasmos/v1/agents/{h1}/drain"),
            &json!({"max_grace_period_secs": -1}),
        )
        .await;
    assert_eq!(code, 400, "{v}");

    // UNIQUE per host, two hosts, one drained: one task runs, the other
    // waits; none is on h1.
    let out = wasmos_tests::cli(
        &r.master.url,
        &["agent", "drain", &h1, "--max-grace-period", "1"],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("is drained"), "{out:?}");
    let (_, v) = api.get(&format!("/api/wasmos/v1/agents/{h1}")).await;
    assert_eq!(v["drain"]["state"], "DRAINED", "{v}");
    assert_eq!(v["deactivated"], true, "{v}");
    assert_eq!(v["tasks"], 0, "{v}");
    let (_, state) = api.post("/api/v1", &json!({"type": "GET_AGENTS"})).await;
    let mesos_h1 = state["get_agents"]["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_info"]["hostname"] == "h1")
        .cloned()
        .unwrap();
    assert_eq!(mesos_h1["deactivated"], true, "{mesos_h1}");
    assert_eq!(mesos_h1["drain_info"]["state"], "DRAINED", "{mesos_h1}");
    wait_only_on(&m, "/moved", "h2").await;
    // A drain cannot be undone mid-way, but a drained agent comes back.
    let out = wasmos_tests::cli(&r.master.url, &["agent", "reactivate", &h1]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let app = m.wait_deployed("/moved", 2, DEADLINE).await;
    assert_eq!(hosts_of(&app), BTreeSet::from(["h1", "h2"]), "{app}");
    let (_, v) = api.get(&format!("/api/wasmos/v1/agents/{h1}")).await;
    assert_eq!(v["deactivated"], false, "{v}");
    assert!(v["drain"].is_null(), "{v}");

    // Batch work is let finish: nothing killed, drained once it ended.
    assert_eq!(m.delete("/v2/apps/moved").await.status, 200);
    let run = wasmos_tests::cli(
        &r.master.url,
        &[
            "task",
            "run",
            "-d",
            "--id",
            "batch",
            "--constraint",
            "hostname:CLUSTER:h1",
            "--",
            "sleep",
            "2",
        ],
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    api.wait_task_state("batch", "TASK_RUNNING").await;
    let out = wasmos_tests::cli(&r.master.url, &["agent", "drain", &h1, "--let-finish"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let (_, t) = api.get("/api/wasmos/v1/tasks/batch").await;
    assert_eq!(t["state"], "TASK_FINISHED", "the drain waited for it: {t}");
}

/// Mesos' maintenance primitives through the operator API: a schedule
/// puts a machine in DRAINING; START_MAINTENANCE takes it DOWN (its task
/// ends, Marathon keeps the app on the other machine, nothing is placed
/// there); STOP_MAINTENANCE brings it up and the app spreads again. Bad
/// schedules and calls are refused and change nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_machine_goes_down_for_maintenance_and_comes_back_up() {
    let r = Racks::start(&[("h1", "r1"), ("h2", "r1")]).await;
    let m = V2::new(&r.master.url);
    m.wait_up().await;
    let api = wasmos_tests::Api::new(&r.master.url);
    let call = |body: Value| {
        let api = &api;
        async move { api.post("/api/v1", &body).await }
    };
    let app = json!({"id": "/kept", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 2,
                     "constraints": [["hostname", "UNIQUE"]]});
    assert_eq!(m.post("/v2/apps", &app).await.status, 201);
    m.wait_deployed("/kept", 2, DEADLINE).await;

    let window = |hosts: &[&str]| {
        json!({"machine_ids": hosts.iter().map(|h| json!({"hostname": h})).collect::<Vec<_>>(),
               "unavailability": {"start": {"nanoseconds": 1_700_000_000_000_000_000i64},
                                  "duration": {"nanoseconds": 3_600_000_000_000i64}}})
    };
    let update = |windows: Vec<Value>| {
        json!({"type": "UPDATE_MAINTENANCE_SCHEDULE",
               "update_maintenance_schedule": {"schedule": {"windows": windows}}})
    };
    // A machine in two windows: refused, the schedule stays empty.
    let (code, v) = call(update(vec![window(&["h1"]), window(&["h1"])])).await;
    assert_eq!(code, 400, "{v}");
    let (code, v) = call(update(vec![window(&["h1"])])).await;
    assert_eq!(code, 200, "{v}");
    let (_, v) = call(json!({"type": "GET_MAINTENANCE_SCHEDULE"})).await;
    assert_eq!(
        v["get_maintenance_schedule"]["schedule"]["windows"][0]["machine_ids"],
        json!([{"hostname": "h1"}]),
        "{v}"
    );
    let (_, v) = call(json!({"type": "GET_MAINTENANCE_STATUS"})).await;
    assert_eq!(
        v["get_maintenance_status"]["status"]["draining_machines"][0]["id"],
        json!({"hostname": "h1"}),
        "{v}"
    );
    // Only a scheduled machine goes down.
    let (code, v) = call(json!({"type": "START_MAINTENANCE",
                                "start_maintenance": {"machines": [{"hostname": "h2"}]}}))
    .await;
    assert_eq!(code, 400, "{v}");

    let (code, v) = call(json!({"type": "START_MAINTENANCE",
                                "start_maintenance": {"machines": [{"hostname": "h1"}]}}))
    .await;
    assert_eq!(code, 200, "{v}");
    wait_only_on(&m, "/kept", "h2").await;
    let (_, v) = call(json!({"type": "GET_MAINTENANCE_STATUS"})).await;
    assert_eq!(
        v["get_maintenance_status"]["status"]["down_machines"],
        json!([{"hostname": "h1"}]),
        "{v}"
    );
    // A machine that is down cannot leave the schedule.
    let (code, v) = call(update(vec![])).await;
    assert_eq!(code, 400, "{v}");
    assert!(v["message"].as_str().unwrap_or("").contains("down"), "{v}");

    let (code, v) = call(json!({"type": "STOP_MAINTENANCE",
                                "stop_maintenance": {"machines": [{"hostname": "h1"}]}}))
    .await;
    assert_eq!(code, 200, "{v}");
    let app = m.wait_deployed("/kept", 2, DEADLINE).await;
    assert_eq!(hosts_of(&app), BTreeSet::from(["h1", "h2"]), "{app}");
    let (_, v) = call(json!({"type": "GET_MAINTENANCE_SCHEDULE"})).await;
    assert_eq!(
        v["get_maintenance_schedule"]["schedule"]["windows"],
        json!([]),
        "a machine brought up leaves the schedule: {v}"
    );

    // Mesos' legacy endpoints do the same.
    let (code, v) = api
        .post(
            "/master/maintenance/schedule",
            &json!({"windows": [window(&["h2"])]}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let (_, v) = api.get("/maintenance/schedule").await;
    assert_eq!(
        v["windows"][0]["machine_ids"],
        json!([{"hostname": "h2"}]),
        "{v}"
    );
    let (code, v) = api.post("/machine/down", &json!({"hostname": "h2"})).await;
    assert_eq!(code, 400, "not a list: {v}");
    let (code, v) = api
        .post("/machine/down", &json!([{"hostname": "h2"}]))
        .await;
    assert_eq!(code, 200, "{v}");
    let (_, v) = api.get("/master/maintenance/status").await;
    assert_eq!(v["down_machines"], json!([{"hostname": "h2"}]), "{v}");
    let (code, v) = api.post("/machine/up", &json!([{"hostname": "h2"}])).await;
    assert_eq!(code, 200, "{v}");
    let (_, v) = api.get("/maintenance/status").await;
    assert_eq!(v, json!({"draining_machines": [], "down_machines": []}));

    // And the CLI, as an operator drives it.
    let cli = |args: &'static [&'static str]| wasmos_tests::cli(&r.master.url, args);
    let out = cli(&["maintenance", "schedule", "h2", "--start", "yesterday"]).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("--start"), "{out:?}");
    let out = cli(&["maintenance", "schedule", "h2", "--duration", "2h"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = cli(&["maintenance", "status"]).await;
    assert!(
        out.stdout.contains("h2") && out.stdout.contains("DRAINING"),
        "{out:?}"
    );
    assert!(out.stdout.contains("2h"), "{out:?}");
    let out = cli(&["maintenance", "down", "h2"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = cli(&["maintenance", "status"]).await;
    assert!(out.stdout.contains("DOWN"), "{out:?}");
    let out = cli(&["maintenance", "up", "h2"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = cli(&["maintenance", "status"]).await;
    assert!(out.stderr.contains("no machine is scheduled"), "{out:?}");
}

/// The persistence ids of the volumes the master's `/slaves` lists for
/// `role` on the first agent, and whether any disk is reserved for it.
async fn volumes_of(c: &Cluster, role: &str) -> (Vec<String>, bool) {
    let (code, v) = c.api.get("/slaves").await;
    assert_eq!(code, 200, "{v}");
    let list = v["slaves"][0]["reserved_resources_full"][role]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ids = list
        .iter()
        .filter_map(|r| r["disk"]["persistence"]["id"].as_str())
        .map(str::to_string)
        .collect();
    (ids, list.iter().any(|r| r["name"] == "disk"))
}

/// The stdout of a task, read through the master.
async fn stdout_of(c: &Cluster, task: &str) -> String {
    let (code, out) = c
        .api
        .text(&format!(
            "/api/wasmos/v1/tasks/{task}/files/read?path=stdout"
        ))
        .await;
    assert_eq!(code, 200, "{out}");
    out
}

/// Waits until the app runs one task other than `not`, and returns it
/// once its stdout has a line.
async fn next_task(c: &Cluster, m: &V2, app: &str, not: &[String]) -> (String, String) {
    wait_for(
        &format!("a new task of {app} to run and write"),
        DEADLINE,
        || async {
            let a = m.app(app).await;
            let t = a["tasks"]
                .as_array()?
                .iter()
                .find(|t| t["state"] == "TASK_RUNNING" && !not.iter().any(|n| t["id"] == **n))?
                .clone();
            let id = t["id"].as_str()?.to_string();
            let out = stdout_of(c, &id).await;
            out.contains("seen:").then_some((id, out))
        },
    )
    .await
}

/// A stateful app (a persistent volume: Marathon's resident app) keeps its
/// data: a replacement task after a kill, and a task after a restart, find
/// what the earlier ones wrote, on the same volume; without a role to
/// reserve its disk for, the app is refused; deleting the app destroys the
/// volume and gives its disk back.
#[tokio::test(flavor = "multi_thread")]
async fn a_stateful_apps_data_survives_its_tasks_restarts_and_goes_with_the_app() {
    let c = Cluster::up().await;
    let m = V2::new(&c.up.url);
    m.wait_up().await;
    let app = json!({
        "id": "/db",
        "cmd": "echo seen: $(cat data/log 2>/dev/null); echo $MESOS_TASK_ID >> data/log; exec sleep 600",
        "cpus": 0.1, "mem": 32,
        "container": {"type": "MESOS", "volumes": [
            {"containerPath": "data", "mode": "RW", "persistent": {"size": 16}}
        ]}
    });
    let r = m.post("/v2/apps", &app).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.to_string().contains("mesos_role"), "{}", r.body);
    assert_eq!(m.get("/v2/apps/db").await.status, 404);
    // A nested path and a growing restart are refused too.
    let mut bad = app.clone();
    bad["container"]["volumes"][0]["containerPath"] = json!("var/data");
    bad["upgradeStrategy"] = json!({"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.5});
    let r = m.post("/v2/apps", &bad).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let paths: Vec<&str> = r.body["details"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["path"].as_str())
        .collect();
    assert!(
        paths.contains(&"/container/volumes(0)/containerPath")
            && paths.contains(&"/upgradeStrategy/maximumOverCapacity"),
        "{}",
        r.body
    );

    let out = c
        .cli(&["plugin", "config", "marathon", "mesos_role=db"])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    wait_for("marathon to run in role db", DEADLINE, || async {
        (m.get("/v2/info").await.body["marathon_config"]["mesos_role"] == "db").then_some(())
    })
    .await;
    let r = m.post("/v2/apps", &app).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.body["upgradeStrategy"]["maximumOverCapacity"], 0,
        "{}",
        r.body
    );
    assert_eq!(r.body["unreachableStrategy"], "disabled", "{}", r.body);
    let (first, out) = next_task(&c, &m, "db", &[]).await;
    assert_eq!(out.trim(), "seen:", "a new volume is empty");
    let a = m.app("db").await;
    let local = a["tasks"][0]["localVolumes"].clone();
    assert_eq!(local[0]["containerPath"], "data", "{a}");
    let pid = local[0]["persistenceId"].as_str().unwrap().to_string();
    let (ids, _) = volumes_of(&c, "db").await;
    assert_eq!(ids, vec![pid.clone()], "the master lists the volume");

    // Killed, the task is replaced on its volume.
    let r = m.delete(&format!("/v2/apps/db/tasks/{first}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (second, out) = next_task(&c, &m, "db", std::slice::from_ref(&first)).await;
    assert!(out.contains(&first), "the replacement sees {first}: {out}");

    // Restarted, the app's new task finds both.
    let r = m.post("/v2/apps/db/restart", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (_, out) = next_task(&c, &m, "db", &[first.clone(), second.clone()]).await;
    assert!(out.contains(&first) && out.contains(&second), "{out}");
    let a = m.app("db").await;
    assert_eq!(
        a["tasks"][0]["localVolumes"][0]["persistenceId"],
        pid.as_str()
    );

    // Deleted, the app's volume goes and its disk is unreserved.
    let r = m.delete("/v2/apps/db").await;
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for(
        "the volume destroyed and its disk unreserved",
        DEADLINE,
        || async { (volumes_of(&c, "db").await == (vec![], false)).then_some(()) },
    )
    .await;
}

/// Host volumes mount an agent's directory into a task, only beneath the
/// directories the agent allows (`--host-volumes`); a path elsewhere fails
/// the task with the reason.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_volume_mounts_an_allowed_directory_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(shared.join("app")).unwrap();
    std::fs::write(shared.join("app/in"), "hello from the host\n").unwrap();
    // Tasks run as the agent's unprivileged task user.
    use std::os::unix::fs::PermissionsExt as _;
    for p in [dir.path().to_path_buf(), shared.clone(), shared.join("app")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let allowed = shared.to_str().unwrap().to_string();
    let c = Cluster::up_with(dir, &["--host-volumes", &allowed]).await;
    let m = V2::new(&c.up.url);
    m.wait_up().await;
    let app = json!({
        "id": "/reader",
        "cmd": "echo seen: $(cat host/in); echo written > host/out; exec sleep 600",
        "cpus": 0.1, "mem": 32,
        "container": {"type": "MESOS", "volumes": [
            {"containerPath": "host", "hostPath": format!("{allowed}/app"), "mode": "RW"}
        ]}
    });
    let r = m.post("/v2/apps", &app).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let (_, out) = next_task(&c, &m, "reader", &[]).await;
    assert!(out.contains("hello from the host"), "{out}");
    wait_for("the task's file on the host", DEADLINE, || async {
        std::fs::read_to_string(format!("{allowed}/app/out"))
            .ok()
            .filter(|s| s == "written\n")
    })
    .await;

    let elsewhere = json!({
        "id": "/snoop", "cmd": "cat etc/passwd; sleep 600", "cpus": 0.1, "mem": 32,
        "container": {"type": "MESOS", "volumes": [
            {"containerPath": "etc", "hostPath": "/etc", "mode": "RO"}
        ]}
    });
    let r = m.post("/v2/apps", &elsewhere).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let failure = wait_for(
        "the task outside the allowed directory to fail",
        DEADLINE,
        || async {
            let a = m.app("snoop").await;
            let f = a["lastTaskFailure"].clone();
            f["message"].as_str().is_some().then_some(f)
        },
    )
    .await;
    assert_eq!(failure["state"], "TASK_FAILED", "{failure}");
    assert!(
        failure["message"]
            .as_str()
            .unwrap()
            .contains("not beneath a directory this agent allows host volumes from"),
        "{failure}"
    );
}

/// Removes a Docker volume when dropped (after the containers using it).
struct VolumeJanitor(String);

impl Drop for VolumeJanitor {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["volume", "rm", "-f", &self.0])
            .output();
    }
}

/// A Docker app's external volume (provider dvdi: a Docker named volume,
/// here of the `local` driver bound to a directory) outlives its
/// containers: after a restart the new container reads what the old one
/// wrote, and Docker made the volume with the driver and options asked.
#[tokio::test(flavor = "multi_thread")]
async fn a_docker_apps_named_volume_outlives_its_containers() {
    let image = wasmos_tests::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("volume-store");
    std::fs::create_dir_all(&store).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777)).unwrap();
    let janitor = wasmos_tests::DockerJanitor(dir.path().to_path_buf());
    let name = format!(
        "wasmos-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let c = Cluster::up_with(dir, &["--docker", "on"]).await;
    let m = V2::new(&c.up.url);
    m.wait_up().await;
    let app = json!({
        "id": "/dv",
        "cmd": "echo seen: $(cat /vol/log 2>/dev/null); echo $MESOS_TASK_ID >> /vol/log; exec sleep 600",
        "cpus": 0.1, "mem": 32,
        "container": {"type": "DOCKER", "docker": {"image": image}, "volumes": [
            {"containerPath": "/vol", "mode": "RW", "external": {
                "name": name, "provider": "dvdi",
                "options": {"dvdi/driver": "local", "type": "none", "o": "bind",
                            "device": store.to_str().unwrap()}}}
        ]}
    });
    let r = m.post("/v2/apps", &app).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let _volume = VolumeJanitor(name.clone());
    let (first, out) = next_task(&c, &m, "dv", &[]).await;
    assert_eq!(out.trim(), "seen:", "{out}");
    let r = m.post("/v2/apps/dv/restart", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (_, out) = next_task(&c, &m, "dv", std::slice::from_ref(&first)).await;
    assert!(
        out.contains(&first),
        "the new container sees {first}: {out}"
    );
    let inspect = std::process::Command::new("docker")
        .args(["volume", "inspect", &name])
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{inspect:?}");
    let v: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v[0]["Driver"], "local", "{v}");
    assert_eq!(v[0]["Options"]["o"], "bind", "{v}");
    // The containers go before the volume can.
    drop(c);
    drop(janitor);
}

/// Deploys `/steady` (one task, HTTP health check) on two racks; returns
/// the racks, the app's host and agent, and the other host.
async fn steady_app() -> (Racks, V2, String, String, &'static str) {
    let r = Racks::start(&[("h1", "r1"), ("h2", "r1")]).await;
    let m = V2::new(&r.master.url);
    m.wait_up().await;
    let app = json!({"id": "/steady",
        "cmd": "exec python3 -m http.server --bind 127.0.0.1 $PORT0", "cpus": 0.1, "mem": 64,
        "healthChecks": [{"protocol": "HTTP", "path": "/", "gracePeriodSeconds": 30,
                          "intervalSeconds": 1, "timeoutSeconds": 2}]});
    assert_eq!(m.post("/v2/apps", &app).await.status, 201);
    let a = m.wait_deployed("/steady", 1, DEADLINE).await;
    let from = a["tasks"][0]["host"].as_str().unwrap().to_string();
    let to = if from == "h1" { "h2" } else { "h1" };
    let agent = a["tasks"][0]["slaveId"].as_str().unwrap().to_string();
    (r, m, from, agent, to)
}

/// Waits until `done`, sampling `/steady`'s healthy tasks meanwhile;
/// asserts there was always one.
async fn always_one_healthy<F, Fut>(m: &V2, what: &str, done: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let fewest = Arc::new(AtomicUsize::new(usize::MAX));
    wait_for(what, DEADLINE, || {
        let fewest = fewest.clone();
        let done = &done;
        async move {
            let app = m.app("steady").await;
            let healthy = app["tasks"]
                .as_array()
                .map_or(0, |ts| ts.iter().filter(|t| healthy(&app, t)).count());
            fewest.fetch_min(healthy, Ordering::SeqCst);
            done().await.then_some(())
        }
    })
    .await;
    assert_eq!(
        fewest.load(Ordering::SeqCst),
        1,
        "the app always had its one healthy task"
    );
}

/// Draining an agent moves a Marathon app off it without an outage: the
/// master leaves Marathon's task there during the hand-off window, and
/// Marathon starts the replacement on the other agent and kills the old
/// task only once the new one is healthy (minimumHealthCapacity 1 of 1),
/// well before the window (the default, 300 s) ends.
#[tokio::test(flavor = "multi_thread")]
async fn draining_an_agent_moves_a_marathon_app_without_dropping_below_its_health_capacity() {
    let (r, m, from, agent, to) = steady_app().await;
    let api = wasmos_tests::Api::new(&r.master.url);
    let (code, v) = api
        .post(&format!("/api/wasmos/v1/agents/{agent}/drain"), &json!({}))
        .await;
    assert_eq!(code, 200, "{v}");
    always_one_healthy(&m, &format!("{from} to be drained"), || async {
        let (_, v) = api.get(&format!("/api/wasmos/v1/agents/{agent}")).await;
        v["drain"]["state"] == "DRAINED"
    })
    .await;
    wait_only_on(&m, "/steady", to).await;
    let a = m.wait_deployed("/steady", 1, DEADLINE).await;
    assert_eq!(hosts_of(&a), BTreeSet::from([to]), "{a}");
}

/// A machine entering its maintenance window (scheduled, not yet down)
/// has Marathon move its tasks first, replacement healthy before the old
/// task goes; the machine then goes down with nothing of the app on it.
#[tokio::test(flavor = "multi_thread")]
async fn a_maintenance_window_has_marathon_move_an_app_before_the_machine_goes_down() {
    let (r, m, from, _, to) = steady_app().await;
    let api = wasmos_tests::Api::new(&r.master.url);
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let (code, v) = api
        .post(
            "/api/v1",
            &json!({"type": "UPDATE_MAINTENANCE_SCHEDULE",
                "update_maintenance_schedule": {"schedule": {"windows": [
                    {"machine_ids": [{"hostname": from}],
                     "unavailability": {"start": {"nanoseconds": now_ns},
                                        "duration": {"nanoseconds": 3_600_000_000_000i64}}}]}}}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    always_one_healthy(&m, &format!("the app to leave {from}"), || async {
        let a = m.app("steady").await;
        hosts_of(&a) == BTreeSet::from([to]) && a["tasks"].as_array().is_some_and(|t| t.len() == 1)
    })
    .await;
    let (code, v) = api
        .post(
            "/api/v1",
            &json!({"type": "START_MAINTENANCE",
                    "start_maintenance": {"machines": [{"hostname": from}]}}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let a = m.wait_deployed("/steady", 1, DEADLINE).await;
    assert_eq!(hosts_of(&a), BTreeSet::from([to]), "{a}");
}

/// marathon-python against a master that is not the leader: calls are
/// forwarded, and the event stream is relayed from the leader instead of
/// redirected (python-requests follows a redirect to another host without
/// the credentials it was given, and the stream would get a 401).
#[tokio::test(flavor = "multi_thread")]
async fn marathon_python_reads_the_event_stream_through_a_follower() {
    let dir = tempfile::tempdir().unwrap();
    let ms = Masters::start(3, dir.path()).await;
    let (leader, _) = ms.wait_leader(&[1, 2, 3], None).await;
    let _agent = ms.start_agent(dir.path()).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    V2::new(&ms.url(leader)).wait_up().await;
    let api = wasmos_tests::Api::new(&ms.url(leader));
    let rules = json!([{"area": "apps", "access": "write"}]);
    let password = wasmos_tests::user_with(&api, "watcher", rules).await;
    wasmos_tests::run_client_script(
        "marathon_follower.py",
        &[
            &ms.url(follower),
            ms.ca().to_str().unwrap(),
            "watcher",
            &password,
        ],
        "marathon-python follower: ok",
    )
    .await;
}
