//! The dashboard in a real browser (Debian's headless Chromium, driven by
//! `tests/clients/browser.py`): every page loads with no console error or
//! failed request, shows the objects the test made, at a desktop's and at
//! a phone's width; the main actions work from the page; the charts'
//! history is sampled by the masters and outlives a restart. Screenshots
//! are kept under `target/test-artefacts/dashboard/`.

use serde_json::{Value, json};
use wasmos_tests::{Cluster, DEADLINE, wait_for};

/// A step for `browser.py`: `body` runs in the page with `q(selector)`
/// (the element) and `t(selector)` (its text) at hand, and returns true
/// when the step is done.
pub(crate) fn step(body: &str) -> String {
    format!(
        "(() => {{ const q = (s) => document.querySelector(s); \
         const t = (s) => (q(s) || {{}}).textContent || ''; {body} }})()"
    )
}

/// Opens `#/<route>` signed in with the management token, waits for each
/// step in turn, keeps a screenshot as `<shot>.png`; returns the last
/// step's value. `expect` lists page errors the steps cause on purpose.
pub(crate) async fn browse(
    c: &Cluster,
    route: &str,
    steps: &[String],
    phone: bool,
    shot: &str,
    expect: &[&str],
) -> Value {
    let url = format!("{}/#/{route}", c.up.url);
    let ca = c.ca();
    let token = wasmos_tests::token_for(&c.up.url).unwrap();
    let png = wasmos_tests::artefacts("dashboard").join(format!("{shot}.png"));
    let mut args: Vec<&str> = vec![
        &url,
        &steps[0],
        "--ca",
        ca.to_str().unwrap(),
        "--session",
        &token,
        "--png",
        png.to_str().unwrap(),
    ];
    for s in &steps[1..] {
        args.extend(["--then", s.as_str()]);
    }
    if phone {
        args.extend(["--width", "390", "--height", "844", "--mobile"]);
    }
    for e in expect {
        args.extend(["--expect-error", e]);
    }
    let out = wasmos_tests::browser(&args).await;
    serde_json::from_str(out.trim()).unwrap_or(Value::Null)
}

async fn add_app(c: &Cluster, id: &str, instances: u64) {
    let (code, v) = c
        .api
        .post(
            "/v2/apps",
            &json!({"id": id, "cmd": "sleep 600", "cpus": 0.1, "mem": 32, "instances": instances}),
        )
        .await;
    assert_eq!(code, 201, "{v}");
}

async fn add_job(c: &Cluster, name: &str) {
    let (code, v) = c
        .api
        .post(
            "/v1/scheduler/iso8601",
            &json!({"name": name, "command": "echo ran", "schedule": "R/2099-01-01T00:00:00Z/PT24H",
                    "cpus": 0.1, "mem": 32, "owner": "ops@example.com"}),
        )
        .await;
    assert!(code == 204 || code == 200, "{code} {v}");
}

async fn running(c: &Cluster, app: &str, n: usize) -> Value {
    wait_for(&format!("{app} to run {n} tasks"), DEADLINE, || async {
        let (_, v) = c.api.get(&format!("/v2/apps{app}")).await;
        (v["app"]["tasksRunning"].as_u64() == Some(n as u64)).then_some(v)
    })
    .await
}

/// Every page shows what the cluster holds: the Overview's charts from
/// the masters' samples, the services by status, the components; each
/// list and each object's own page; at 1280 px and at 390 px, where the
/// page itself never scrolls sideways.
#[tokio::test(flavor = "multi_thread")]
async fn every_page_shows_the_clusters_objects_on_a_desktop_and_a_phone() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::up_with(dir, &["--history-interval-secs", "1"]).await;
    add_app(&c, "/prod/web", 1).await;
    add_job(&c, "nightly").await;
    let (code, v) = c
        .api
        .post(
            "/package/repository/add",
            &json!({"name": "examples", "uri": crate::catalogue::catalogue()}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let web = running(&c, "/prod/web", 1).await;
    let web_task = web["app"]["tasks"][0]["id"].as_str().unwrap().to_string();
    // An app no agent can hold: its page says why it waits.
    let (code, v) = c
        .api
        .post(
            "/v2/apps",
            &json!({"id": "/prod/huge", "cmd": "sleep 600", "cpus": 1000, "mem": 32, "instances": 1}),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    // The master samples the cluster: its history shows the task running.
    wait_for("a sample with the task running", DEADLINE, || async {
        let (_, h) = c.api.get("/api/wasmos/v1/history").await;
        h["samples"]
            .as_array()?
            .iter()
            .any(|s| s["running"].as_u64() >= Some(1) && s["cpus"][0].as_f64() > Some(0.0))
            .then_some(())
    })
    .await;
    let (_, agents) = c.api.get("/api/wasmos/v1/agents").await;
    let agent = agents[0]["id"].as_str().unwrap().to_string();
    let host = agents[0]["hostname"].as_str().unwrap().to_string();
    let pages: Vec<(String, String)> = vec![
        (
            "overview".into(),
            "return q('#p-cpus svg path.line').getAttribute('d').split('L').length > 2 && /[1-9]\\d* running/.test(t('#p-tasks .figure')) \
             && t('#p-services').includes('/prod/web') && t('#p-services').includes('Running') \
             && t('#p-components').includes('master 1') && t('#p-components').includes('leader') \
             && t('#p-components').includes('marathon') && /of 2 Cores|Cores/.test(t('#p-cpus .figure'));"
                .into(),
        ),
        (
            "services".into(),
            "return t('#services').includes('/prod/web') && t('#services').includes('Running') \
             && t('#services').includes('/prod');"
                .into(),
        ),
        (
            "services/%2Fprod%2Fweb".into(),
            "return t('#app-summary').includes('1 / 1') && !!q('#app-tasks [data-kill]') \
             && q('#app-json').value.includes('sleep 600');"
                .into(),
        ),
        (
            "services/%2Fprod%2Fhuge".into(),
            "return t('#app-waiting').includes('Why it waits') && t('#app-waiting').includes('no offer has 1000 cpus free') \
             && t('#app-waiting').includes('InsufficientCpus');"
                .into(),
        ),
        (
            format!("tasks/{web_task}"),
            format!(
                "return t('#task-placement').includes('placed on {host}') && t('#task-placement').includes('chosen') \
                 && !!q('#task-placement table.placement tr.chosen');"
            ),
        ),
        (
            "jobs".into(),
            "return t('#jobs').includes('nightly') && t('#job-graph').includes('nightly');".into(),
        ),
        (
            "jobs/nightly".into(),
            "return t('#job-name') === 'nightly' && t('#job-runs').includes('no runs yet');".into(),
        ),
        (
            "catalogue".into(),
            "return t('#packages').includes('static-web') && t('#repos').includes('examples');".into(),
        ),
        (
            "catalogue/static-web".into(),
            "return !!q('[data-opt=\"/service/greeting\"]') && t('#pkg-facts').includes('static web server');"
                .into(),
        ),
        (
            "tasks".into(),
            "return t('#tasks').includes('prod_web') && t('#tasks').includes('RUNNING');".into(),
        ),
        (
            "nodes".into(),
            format!("return t('#agents').includes({host:?}) && t('#agents').includes('active');"),
        ),
        (
            format!("nodes/{agent}"),
            "return t('#node-tasks').includes('prod_web') && t('#node-facts').includes('Endpoint');"
                .into(),
        ),
        (
            "plugins".into(),
            "return t('#plugins').includes('marathon') && t('#plugins').includes('health-http') \
             && t('#plugins').includes('healthy');"
                .into(),
        ),
        (
            "plugins/marathon".into(),
            "return t('#plugin-facts').includes('sha256:') && t('#plugin-facts').includes('framework') \
             && t('#plugin-stats').includes('p99') && t('#plugin-stats').includes('built') \
             && t('#plugin-log').includes('deployment');"
                .into(),
        ),
        (
            "frameworks".into(),
            "return t('#frameworks').includes('marathon') && t('#frameworks').includes('chronos');"
                .into(),
        ),
        (
            "masters".into(),
            "return t('#masters').includes('leader') && t('#raft').includes('master 1');".into(),
        ),
    ];
    for phone in [false, true] {
        for (route, ready) in &pages {
            let ready = if phone {
                // Usable on a phone: nothing wider than the screen but the
                // tables, which scroll inside their own boxes.
                format!(
                    "{} if (!ok) return false; return document.documentElement.scrollWidth <= window.innerWidth + 1;",
                    ready.replacen("return ", "const ok = ", 1)
                )
            } else {
                ready.clone()
            };
            let shot = format!(
                "{}-{}",
                route.replace(['/', '%'], "_"),
                if phone { 390 } else { 1280 }
            );
            browse(&c, route, &[step(&ready)], phone, &shot, &[]).await;
        }
    }
}

/// From the pages alone: an app made with a JSON editor (its errors shown
/// by field first), scaled, one of its tasks killed, the app destroyed; a
/// job run now; a plugin's configuration edited. Each is checked through
/// the API.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboards_actions_create_scale_kill_and_destroy_an_app_run_a_job_and_configure_a_plugin()
 {
    let c = Cluster::up().await;
    add_job(&c, "manual").await;
    let bad = json!({"id": "/from-ui", "cmd": "sleep 600", "cpus": -1, "mem": 32, "instances": 1});
    let good =
        json!({"id": "/from-ui", "cmd": "sleep 600", "cpus": 0.1, "mem": 32, "instances": 1});
    let killed = browse(
        &c,
        "services",
        &[
            step(&format!(
                "if (!q('#svc-new')) return false; q('#svc-new').click(); \
                 q('#svc-json').value = JSON.stringify({bad}); q('#svc-create').click(); return true;"
            )),
            step("return t('#svc-errors').includes('/cpus');"),
            step(&format!(
                "q('#svc-json').value = JSON.stringify({good}); q('#svc-create').click(); return true;"
            )),
            step(
                "return location.hash === '#/services/%2Ffrom-ui' && t('#app-summary').includes('1 / 1');",
            ),
            step("q('#app-instances').value = '2'; q('#app-scale').click(); return true;"),
            step(
                "return t('#app-summary').includes('2 / 2') \
                 && document.querySelectorAll('#app-tasks [data-kill]').length === 2;",
            ),
            step(
                "const b = q('#app-tasks [data-kill]'); window.__killed = b.dataset.kill; \
                 b.click(); return true;",
            ),
            step("return t('#toast').includes('done') && window.__killed;"),
        ],
        false,
        "actions-app",
        &["HTTP 422 for"],
    )
    .await;
    let killed = killed.as_str().expect("the killed task's id").to_string();
    let (_, app) = c.api.get("/v2/apps/from-ui").await;
    assert_eq!(app["app"]["instances"], 2, "{app}");
    assert_eq!(
        app["app"]["cpus"], 0.1,
        "the invalid app was not made: {app}"
    );
    wait_for("the task killed from the page to end", DEADLINE, || async {
        let (_, t) = c.api.get(&format!("/api/wasmos/v1/tasks/{killed}")).await;
        (t["state"] == "TASK_KILLED").then_some(())
    })
    .await;
    // Marathon replaces what was killed.
    running(&c, "/from-ui", 2).await;

    browse(
        &c,
        "services/%2Ffrom-ui",
        &[
            step(
                "if (!t('#app-summary').includes('2 / 2')) return false; \
                 q('#app-destroy').click(); q('#app-destroy').click(); return true;",
            ),
            step("return location.hash === '#/services';"),
        ],
        false,
        "actions-destroy",
        &[],
    )
    .await;
    wait_for("the destroyed app to be gone", DEADLINE, || async {
        let (code, _) = c.api.get("/v2/apps/from-ui").await;
        (code == 404).then_some(())
    })
    .await;

    browse(
        &c,
        "jobs",
        &[
            step(
                "const b = q('[data-run-job=\"manual\"]'); if (!b) return false; b.click(); return true;",
            ),
            step("return t('#toast').includes('run manual: done');"),
        ],
        false,
        "actions-job",
        &[],
    )
    .await;
    wait_for("the job run from the page to succeed", DEADLINE, || async {
        let (_, j) = c.api.get("/v1/scheduler/job/manual").await;
        (j["successCount"].as_u64() >= Some(1)).then_some(())
    })
    .await;

    browse(
        &c,
        "plugins/health-http",
        &[
            step(
                "if (!t('#plugin-facts').includes('sha256:')) return false; q('#plugin-add').click(); \
                 const rows = document.querySelectorAll('#plugin-config .row'); const r = rows[rows.length - 1]; \
                 r.querySelector('.k').value = 'note'; r.querySelector('.v').value = 'set from the dashboard'; \
                 q('#plugin-save').click(); return true;",
            ),
            step("return t('#plugin-msg') === 'saved';"),
        ],
        false,
        "actions-plugin",
        &[],
    )
    .await;
    let (_, p) = c.api.get("/api/wasmos/v1/plugins/health-http").await;
    assert_eq!(p["config"]["note"], "set from the dashboard", "{p}");
}

/// The charts' history is the masters': a master restarted on its data
/// dir still has the samples taken before, so a fresh page shows them.
#[tokio::test(flavor = "multi_thread")]
async fn the_history_of_the_charts_outlives_a_restart_of_the_master() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::up_with(dir, &["--history-interval-secs", "1"]).await;
    let before = wait_for("three samples", DEADLINE, || async {
        let (_, h) = c.api.get("/api/wasmos/v1/history").await;
        let s = h["samples"].as_array()?.clone();
        (s.len() >= 3).then_some(s)
    })
    .await;
    let (code, bad) = c.api.get("/api/wasmos/v1/history?points=0").await;
    assert_eq!(code, 400, "{bad}");
    assert!(bad["message"].as_str().unwrap().contains("points"), "{bad}");
    let (_, dir) = c.stop().await;
    let c = Cluster::up_with(dir, &["--history-interval-secs", "1"]).await;
    let (_, h) = c.api.get("/api/wasmos/v1/history").await;
    let after = h["samples"].as_array().unwrap();
    for s in &before {
        assert!(after.contains(s), "sample {s} was lost over the restart");
    }
    // And the page draws them.
    browse(
        &c,
        "overview",
        &[step(
            "return !!q('#p-agents svg path.line') && t('#p-agents .figure').includes('1 active');",
        )],
        false,
        "overview-after-restart",
        &[],
    )
    .await;
}

/// The Nodes page shows an agent taken out of service, and its node page
/// puts it back (the Reactivate action).
#[tokio::test(flavor = "multi_thread")]
async fn the_nodes_page_shows_a_deactivated_agent_and_reactivates_it() {
    let c = Cluster::up().await;
    let (_, agents) = c.api.get("/api/wasmos/v1/agents").await;
    let id = agents[0]["id"].as_str().unwrap().to_string();
    let (code, v) = c
        .api
        .post(
            &format!("/api/wasmos/v1/agents/{id}/deactivate"),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    browse(
        &c,
        "nodes",
        &[step("return t('#agents .drain').includes('deactivated');")],
        false,
        "nodes-deactivated",
        &[],
    )
    .await;
    browse(
        &c,
        &format!("nodes/{id}"),
        &[
            step("const b = q('[data-node-op=\"reactivate\"]'); if (!b) return false; b.click(); return true;"),
            step("return !!q('[data-node-op=\"drain\"]') && t('#node-facts').includes('Drain');"),
        ],
        false,
        "node-reactivated",
        &[],
    )
    .await;
    let (_, v) = c.api.get(&format!("/api/wasmos/v1/agents/{id}")).await;
    assert_eq!(v["deactivated"], false, "{v}");
}
