//! The agents' layer-4 load balancer: a Marathon app's named virtual IP
//! (`VIP_0` label) resolves by DNS to an address every agent listens on,
//! and connections to it, or to the app's service port, spread over the
//! app's healthy tasks; a task being killed leaves it first.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use hickory_proto::rr::{RData, RecordType};
use serde_json::{Value, json};
use wasmos_tests::{Cluster, DEADLINE, dns_query, wait_for};

/// A server that answers every GET with its task id and the request's
/// `X-Forwarded-For`, and on SIGTERM keeps serving for 3 s before it exits
/// (as a service that drains would).
const SERVER: &str = r#"import http.server, os, signal, threading
tid = os.environ['MESOS_TASK_ID']
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.0'
    def do_GET(self):
        b = (tid + ' ' + (self.headers.get('X-Forwarded-For') or '-')).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT0'])), H)
signal.signal(signal.SIGTERM, lambda *a: threading.Timer(3, lambda: os._exit(0)).start())
s.serve_forever()
"#;

/// The task id a server answered with.
async fn get_id(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let r = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("status {}", r.status()));
    }
    let body = r.text().await.map_err(|e| e.to_string())?;
    Ok(body.split(' ').next().unwrap_or("").to_string())
}

/// A cluster whose `files/server.py` is [`SERVER`], started with `extra`.
async fn cluster_with_server(extra: &[&str]) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("files")).unwrap();
    std::fs::write(dir.path().join("files/server.py"), SERVER).unwrap();
    Cluster::up_with(dir, extra).await
}

/// An app of `n` [`SERVER`] tasks with `more` fields.
fn server_app(c: &Cluster, id: &str, n: u32, more: Value) -> Value {
    let mut app = json!({
        "id": id, "cmd": "exec python3 server.py", "cpus": 0.1, "mem": 64, "instances": n,
        "fetch": [{"uri": format!("file://{}", c.files().join("server.py").display())}],
    });
    for (k, v) in more.as_object().unwrap() {
        app[k] = v.clone();
    }
    app
}

/// A VIP spreads 1,000 connections over an app's three tasks and loses
/// none while one of them is killed; the app's service port does the
/// same; the VIP's name resolves to its address.
#[tokio::test(flavor = "multi_thread")]
async fn a_vip_spreads_connections_over_an_apps_tasks_and_loses_none_while_one_is_killed() {
    // The service ports of this cluster on an address of its own (other
    // tests' clusters on this machine assign the same ports).
    let own = Ipv4Addr::new(127, 1, (std::process::id() % 250) as u8, 1);
    let c = cluster_with_server(&["--service-port-listen", &own.to_string()]).await;
    let vip = format!("lbtest{}", std::process::id());
    let app = server_app(
        &c,
        "/lb",
        3,
        json!({
            "taskKillGracePeriodSeconds": 10,
            "portDefinitions": [{"port": 0, "name": "http", "labels": {"VIP_0": format!("/{vip}:8080")}}],
            "healthChecks": [{"protocol": "HTTP", "path": "/", "gracePeriodSeconds": 30,
                              "intervalSeconds": 1, "timeoutSeconds": 2}]
        }),
    );
    let (code, v) = c.api.post("/v2/apps", &app).await;
    assert_eq!(code, 201, "{v}");
    let app = wait_for("three healthy tasks", DEADLINE, || async {
        let (_, a) = c.api.get("/v2/apps/lb").await;
        let a = a["app"].clone();
        (a["tasksHealthy"] == 3).then_some(a)
    })
    .await;
    let service_port = app["portDefinitions"][0]["port"].as_u64().unwrap();
    let name = format!("{vip}.marathon.l4lb.mesos.");
    let ip = wait_for(&format!("{name} to resolve"), DEADLINE, || async {
        let (_, answers, _) = dns_query(c.dns(), &name, RecordType::A, false).await;
        answers.iter().find_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
    })
    .await;
    assert_eq!(&ip.octets()[..2], &[127, 77], "{ip}");
    // A new connection per request (no pooling): each is balanced.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("http://{ip}:8080/");
    let ids: Vec<String> = app["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    wait_for(
        "the agent's balancer to serve the VIP",
        DEADLINE,
        || async { get_id(&http, &url).await.ok() },
    )
    .await;
    let victim = ids[0].clone();
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut after_kill: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..1000 {
        if i == 300 {
            let (code, v) = c
                .api
                .send(
                    reqwest::Method::DELETE,
                    &format!("/v2/apps/lb/tasks/{victim}"),
                    None,
                )
                .await;
            assert_eq!(code, 200, "{v}");
        }
        match get_id(&http, &url).await {
            Ok(id) => {
                *answers.entry(id.clone()).or_default() += 1;
                if i >= 800 {
                    *after_kill.entry(id).or_default() += 1;
                }
            }
            Err(e) => failures.push((i, e)),
        }
    }
    assert!(failures.is_empty(), "lost requests: {failures:?}");
    for id in &ids {
        assert!(
            answers.get(id).is_some_and(|n| *n >= 50),
            "every task took its share: {answers:?}"
        );
    }
    assert!(
        !after_kill.contains_key(&victim),
        "the killed task left the VIP: {after_kill:?}"
    );
    // The service port reaches the same tasks.
    let via_port = get_id(&http, &format!("http://{own}:{service_port}/"))
        .await
        .unwrap();
    let (_, now) = c.api.get("/v2/apps/lb").await;
    let live: Vec<&str> = now["app"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t: &Value| t["id"].as_str())
        .collect();
    assert!(
        live.contains(&via_port.as_str()),
        "{via_port} not in {live:?}"
    );
}

/// marathon-lb's labels: an edge agent serves each app's virtual hosts
/// (`HAPROXY_0_VHOST`) over HTTP by the request's `Host`, with
/// `X-Forwarded-For`, only for the apps of its group (`HAPROXY_GROUP`,
/// `external` by default); any other host gets a 503.
#[tokio::test(flavor = "multi_thread")]
async fn an_edge_agent_routes_http_by_host_to_the_apps_of_its_group() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let edge = format!("127.1.{}.2:{port}", std::process::id() % 250);
    let c = cluster_with_server(&["--edge-listen", &edge]).await;
    let sites = [
        ("/site-a", "external", "a.example.com"),
        (
            "/site-b",
            "external,public",
            "b.example.com, www.b.example.com",
        ),
        ("/site-c", "internal", "c.example.com"),
    ];
    for (id, group, hosts) in sites {
        let app = server_app(
            &c,
            id,
            1,
            json!({"labels": {"HAPROXY_GROUP": group, "HAPROXY_0_VHOST": hosts}}),
        );
        let (code, v) = c.api.post("/v2/apps", &app).await;
        assert_eq!(code, 201, "{v}");
    }
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let ask = |host: &'static str| {
        let http = http.clone();
        let url = format!("http://{edge}/");
        async move {
            let r = http.get(&url).header("host", host).send().await.ok()?;
            let code = r.status().as_u16();
            Some((code, r.text().await.ok()?))
        }
    };
    let task_of = |app: &'static str| {
        let api = &c.api;
        async move {
            let (_, a) = api.get(&format!("/v2/apps/{app}")).await;
            a["app"]["tasks"][0]["id"].as_str().map(str::to_string)
        }
    };
    for (app, host) in [
        ("site-a", "a.example.com"),
        ("site-b", "b.example.com"),
        ("site-b", "WWW.b.example.com:80"),
    ] {
        let (id, body) = wait_for(&format!("{host} to reach {app}"), DEADLINE, || async {
            let id = task_of(app).await?;
            let (code, body) = ask(host).await?;
            (code == 200 && body.starts_with(&id)).then_some((id, body))
        })
        .await;
        let xff = body.strip_prefix(&id).unwrap().trim();
        assert!(xff.starts_with("127."), "X-Forwarded-For {xff:?}: {body}");
    }
    // site-c's group is not this edge's; an unknown host is not served.
    // It runs (posted with the others, it may be placed a round later).
    wait_for("site-c to have a task", DEADLINE, || task_of("site-c")).await;
    for host in ["c.example.com", "nobody.example.com"] {
        let (code, body) = ask(host).await.expect("the edge answers");
        assert_eq!(code, 503, "{host}: {body}");
        assert!(body.contains(&host.to_string()), "{body}");
    }
}
