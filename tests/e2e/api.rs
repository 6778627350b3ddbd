//! The native API and the CLI's behaviour on bad input.

use serde_json::json;
use wasmos_tests::{Cluster, DEADLINE, cli};

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_a_4xx_with_a_message_and_change_nothing() {
    let c = Cluster::up().await;
    let api = &c.api;
    let before = api.get("/api/wasmos/v1/cluster").await.1["log_index"].clone();
    let cases: Vec<(&str, u16, (u16, serde_json::Value))> = vec![
        (
            "malformed JSON",
            400,
            api.post_raw(
                "/frameworks/exec/tasks",
                "application/json",
                b"{bad".to_vec(),
            )
            .await,
        ),
        (
            "unknown field",
            400,
            api.post(
                "/frameworks/exec/tasks",
                &json!({"cmd": "true", "colour": "red"}),
            )
            .await,
        ),
        (
            "impossible resources",
            400,
            api.post("/frameworks/exec/tasks", &json!({"cmd": "true", "mem": -5}))
                .await,
        ),
        (
            "id with a slash",
            400,
            api.post(
                "/frameworks/exec/tasks",
                &json!({"cmd": "true", "id": "../../etc"}),
            )
            .await,
        ),
        (
            "oversized body",
            413,
            api.post_raw(
                "/frameworks/exec/tasks",
                "application/json",
                vec![b' '; 2 << 20],
            )
            .await,
        ),
        (
            "unknown task",
            404,
            api.get("/api/wasmos/v1/tasks/nope").await,
        ),
        (
            "traversal in a task id",
            400,
            api.get("/api/wasmos/v1/tasks/..%2F..%2Fetc").await,
        ),
        (
            "unknown agent",
            404,
            api.get("/api/wasmos/v1/agents/nope").await,
        ),
        (
            "unknown framework",
            404,
            api.get("/frameworks/nope/tasks").await,
        ),
        (
            "kill of an unknown task",
            404,
            api.post("/api/wasmos/v1/tasks/nope/kill", &json!({})).await,
        ),
        (
            "bad state filter",
            400,
            api.get("/api/wasmos/v1/tasks?state=RUNNING").await,
        ),
        (
            "a page of no tasks",
            400,
            api.get("/api/wasmos/v1/tasks?per_page=0").await,
        ),
        (
            "unknown endpoint",
            404,
            api.get("/api/wasmos/v1/nope").await,
        ),
        (
            "agent endpoint without an agent certificate",
            401,
            api.post("/internal/v1/status", &json!({})).await,
        ),
        (
            "register without an agent certificate",
            401,
            api.post("/internal/v1/agents/register", &json!({})).await,
        ),
    ];
    for (what, want, (code, body)) in cases {
        assert_eq!(code, want, "{what}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: no message in {body}"
        );
    }
    let after = api.get("/api/wasmos/v1/cluster").await.1["log_index"].clone();
    assert_eq!(before, after, "bad requests must not change the state");
    let (_, tasks) = api.get("/frameworks/exec/tasks").await;
    assert_eq!(tasks["tasks"], json!([]), "nothing was queued");
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_paths_that_escape_are_refused() {
    let c = Cluster::up().await;
    let out = c
        .cli(&[
            "task",
            "run",
            "--id",
            "files-1",
            "--",
            "sh",
            "-c",
            "echo x > inside; ln -s / root",
        ])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    for (path, want) in [
        ("../../agent.json", 400),
        ("/etc/passwd", 400),
        ("root/etc/passwd", 400),
        ("nothing", 404),
    ] {
        let (code, body) = c
            .api
            .get(&format!(
                "/api/wasmos/v1/tasks/files-1/files/read?path={path}"
            ))
            .await;
        assert_eq!(code, want, "{path}: {body}");
    }
    let (code, _) = c
        .api
        .get("/api/wasmos/v1/tasks/files-1/files/read?path=inside")
        .await;
    assert_eq!(code, 200);
    let (code, listing) = c.api.get("/api/wasmos/v1/tasks/files-1/files/browse").await;
    assert_eq!(code, 200);
    let names: Vec<&str> = listing
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(
        names.contains(&"inside") && names.contains(&"stdout"),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_master_gets_one_clear_line() {
    for args in [
        vec!["agents"],
        vec!["task", "list"],
        vec!["task", "run", "--", "true"],
    ] {
        let out = cli("http://127.0.0.1:9", &args).await;
        assert_eq!(out.code, Some(1), "{args:?}: {out:?}");
        assert_eq!(
            out.stderr.trim().lines().count(),
            1,
            "{args:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr
                .contains("cannot reach the master at http://127.0.0.1:9"),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("wasmos up"),
            "says what to do: {}",
            out.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_and_frameworks_are_listed() {
    let c = Cluster::up().await;
    let agents = c.cli(&["agents"]).await;
    assert_eq!(agents.code, Some(0), "{agents:?}");
    assert!(agents.stdout.contains("active"), "{}", agents.stdout);
    let json = c.cli(&["agents", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(v[0]["resources"]["cpus"].as_f64().unwrap() >= 1.0, "{v}");
    let fws = c.cli(&["frameworks"]).await;
    assert!(
        fws.stdout.contains("exec") && fws.stdout.contains("healthy"),
        "{}",
        fws.stdout
    );
    let plugins = c.cli(&["plugin", "list", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&plugins.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "chronos",
            "constraints",
            "exec",
            "health-command",
            "health-http",
            "health-tcp",
            "labels",
            "marathon"
        ]
    );
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|p| p["source"] == "bundled")
    );
    let (code, _) = c.api.get("/health").await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_reports_task_changes() {
    let c = Cluster::up().await;
    let resp = wasmos_tests::client_for(&c.up.url)
        .build()
        .unwrap()
        .get(format!("{}/api/wasmos/v1/events", c.up.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let reader = tokio::spawn(async move {
        use futures::StreamExt as _;
        let mut body = String::new();
        let mut stream = resp.bytes_stream();
        while let Some(Ok(chunk)) = stream.next().await {
            body.push_str(&String::from_utf8_lossy(&chunk));
            if body.contains("TASK_FINISHED") {
                return body;
            }
        }
        body
    });
    let out = c
        .cli(&["task", "run", "--id", "evented", "--", "true"])
        .await;
    assert_eq!(out.code, Some(0));
    let body = tokio::time::timeout(wasmos_tests::DEADLINE, reader)
        .await
        .unwrap()
        .unwrap();
    assert!(body.contains("event: connected"), "{body}");
    assert!(body.contains("event: task_updated"), "{body}");
    assert!(body.contains("\"evented\""), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn variables_are_written_read_and_guarded_by_check_and_set() {
    let c = Cluster::up().await;
    let api = &c.api;
    let put = c
        .cli(&[
            "var",
            "put",
            "apps/web",
            "image=nginx",
            "replicas=3",
            "--cas",
            "0",
        ])
        .await;
    assert_eq!(put.code, Some(0), "{put:?}");
    let get = c.cli(&["var", "get", "apps/web"]).await;
    assert_eq!(get.stdout, "image=nginx\nreplicas=3\n", "{get:?}");
    let (_, v) = api.get("/api/wasmos/v1/vars/apps/web").await;
    let index = v["modify_index"].as_u64().unwrap();

    // A writer holding a stale index loses; nothing changes.
    let (code, body) = api
        .put(
            &format!("/api/wasmos/v1/vars/apps/web?cas={}", index + 5),
            &json!({"items": {"image": "httpd"}}),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("modify index"));
    let again = c
        .cli(&["var", "put", "apps/web", "image=httpd", "--cas", "0"])
        .await;
    assert_ne!(again.code, Some(0));
    assert!(again.stderr.contains("exists"), "{again:?}");
    // Bad input: 400 with a message, nothing written.
    for (path, body) in [
        ("/api/wasmos/v1/vars/a%20b", json!({"items": {"k": "v"}})),
        ("/api/wasmos/v1/vars/ok", json!({"items": {}})),
        (
            "/api/wasmos/v1/vars/ok",
            json!({"items": {"k": "v"}, "extra": 1}),
        ),
        ("/api/wasmos/v1/vars/ok?cas=x", json!({"items": {"k": "v"}})),
    ] {
        let (code, b) = api.put(path, &body).await;
        assert!((400..500).contains(&code), "{path}: {code} {b}");
        assert!(b["message"].is_string(), "{path}: {b}");
    }
    let list = c.cli(&["var", "list", "--json"]).await;
    let vars: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(vars.as_array().unwrap().len(), 1, "{vars}");
    assert_eq!(c.cli(&["var", "get", "apps/web"]).await.stdout, get.stdout);
    let rm = c
        .cli(&["var", "rm", "apps/web", "--cas", &index.to_string()])
        .await;
    assert_eq!(rm.code, Some(0), "{rm:?}");
    assert_eq!(api.get("/api/wasmos/v1/vars/apps/web").await.0, 404);
}

/// `/metrics` answers Prometheus in its text format (parsed by the
/// Prometheus project's own parsers) with a token that may read the
/// cluster, and JSON clients as before; the master's service discovery
/// lists every daemon, agents scraped through the master.
#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_every_master_and_agent_and_json_clients_keep_their_json() {
    let c = Cluster::up().await;
    let (code, v) = c
        .api
        .post(
            "/v2/apps",
            &json!({"id": "/scraped", "cmd": "sleep 600", "cpus": 0.1, "mem": 32, "instances": 1}),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    wasmos_tests::wait_for("the app's task to run", wasmos_tests::DEADLINE, || async {
        let (_, tasks) = c.api.get("/api/wasmos/v1/tasks?state=TASK_RUNNING").await;
        (!tasks.as_array()?.is_empty()).then_some(())
    })
    .await;
    let (code, v) = c
        .api
        .put(
            "/api/wasmos/v1/acl/policies/prometheus",
            &json!({"rules": [{"area": "cluster", "access": "read"}]}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let (code, token) = c
        .api
        .post(
            "/api/wasmos/v1/acl/tokens",
            &json!({"name": "prometheus", "policies": ["prometheus"]}),
        )
        .await;
    assert_eq!(code, 201, "{token}");
    wasmos_tests::run_client_script(
        "prometheus_scrape.py",
        &[
            &c.up.url,
            c.ca().to_str().unwrap(),
            token["secret"].as_str().unwrap(),
            "1",
        ],
        "prometheus scrape: ok",
    )
    .await;
}

/// The native task list comes a page at a time, as Nomad's lists do: at
/// most `per_page` tasks in id order, the next page's first id in
/// `X-Wasmos-Next-Token`; the pages together are the whole list, each task
/// once, and filters apply within pages.
#[tokio::test]
async fn the_task_list_pages_through_every_task_once() {
    let c = Cluster::up().await;
    let (code, v) = c
        .api
        .post(
            "/v2/apps",
            &json!({"id": "/paged", "cmd": "sleep 600", "cpus": 0.01, "mem": 8, "instances": 5}),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    let all = wasmos_tests::wait_for("five running tasks", DEADLINE, || async {
        let (_, t) = c.api.get("/api/wasmos/v1/tasks?state=TASK_RUNNING").await;
        let ids: Vec<String> = t
            .as_array()?
            .iter()
            .filter_map(|t| t["id"].as_str().map(str::to_string))
            .collect();
        (ids.len() == 5).then_some(ids)
    })
    .await;
    let mut paged = Vec::new();
    let mut next: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &next {
            None => "/api/wasmos/v1/tasks?state=TASK_RUNNING&per_page=2".to_string(),
            Some(t) => format!("/api/wasmos/v1/tasks?state=TASK_RUNNING&per_page=2&next_token={t}"),
        };
        let (code, headers, page) = c.api.get_with_headers(&path).await;
        assert_eq!(code, 200, "{page}");
        let page = page.as_array().unwrap();
        assert!(!page.is_empty() && page.len() <= 2, "{page:?}");
        paged.extend(page.iter().map(|t| t["id"].as_str().unwrap().to_string()));
        pages += 1;
        next = headers
            .get("x-wasmos-next-token")
            .map(|v| v.to_str().unwrap().to_string());
        if next.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3, "5 tasks by 2: {paged:?}");
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(paged, sorted, "every task once, in id order");
}
