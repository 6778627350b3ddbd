//! The agents' layer-4 load balancer: a Marathon app's named virtual IP
//! (`VIP_0` label) resolves by DNS to an address every agent listens on,
//! and connections to it, or to the app's service port, spread over the
//! app's healthy tasks; a task being killed leaves it first.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use hickory_proto::rr::{RData, RecordType};
use serde_json::{Value, json};
use wasmos_tests::{Cluster, DEADLINE, dns_query, wait_for};

/// A server that answers every GET with its task id, and on SIGTERM keeps
/// serving for 3 s before it exits (as a service that drains would).
const SERVER: &str = r#"import http.server, os, signal, threading
tid = os.environ['MESOS_TASK_ID'].encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.0'
    def do_GET(self):
        self.send_response(200)
        self.send_header('Content-Length', str(len(tid)))
        self.end_headers()
        self.wfile.write(tid)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT0'])), H)
signal.signal(signal.SIGTERM, lambda *a: threading.Timer(3, lambda: os._exit(0)).start())
s.serve_forever()
"#;

async fn get_id(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let r = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("status {}", r.status()));
    }
    r.text().await.map_err(|e| e.to_string())
}

/// A VIP spreads 1,000 connections over an app's three tasks and loses
/// none while one of them is killed; the app's service port does the
/// same; the VIP's name resolves to its address.
#[tokio::test(flavor = "multi_thread")]
async fn a_vip_spreads_connections_over_an_apps_tasks_and_loses_none_while_one_is_killed() {
    // The service ports of this cluster on an address of its own (other
    // tests' clusters on this machine assign the same ports).
    let own = Ipv4Addr::new(127, 1, (std::process::id() % 250) as u8, 1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("files")).unwrap();
    std::fs::write(dir.path().join("files/server.py"), SERVER).unwrap();
    let c = Cluster::up_with(dir, &["--service-port-listen", &own.to_string()]).await;
    let vip = format!("lbtest{}", std::process::id());
    let app = json!({
        "id": "/lb", "cmd": "exec python3 server.py", "cpus": 0.1, "mem": 64, "instances": 3,
        "fetch": [{"uri": format!("file://{}", c.files().join("server.py").display())}],
        "taskKillGracePeriodSeconds": 10,
        "portDefinitions": [{"port": 0, "name": "http", "labels": {"VIP_0": format!("/{vip}:8080")}}],
        "healthChecks": [{"protocol": "HTTP", "path": "/", "gracePeriodSeconds": 30,
                          "intervalSeconds": 1, "timeoutSeconds": 2}]
    });
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
