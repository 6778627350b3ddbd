//! DNS: the masters answer Mesos-DNS' names for a Marathon app's tasks,
//! the masters and the agents, asked with hickory's DNS client over UDP
//! and TCP, and Mesos-DNS' HTTP API; answers follow a scale, and a task
//! that fails its health check is not named.

use std::collections::BTreeSet;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use serde_json::{Value, json};
use wasmos_tests::{Cluster, DEADLINE, dns_query, wait_for};

/// The ports the SRV answer for `name` holds, and whether each target's
/// address came along in the additional section.
async fn srv_ports(c: &Cluster, name: &str) -> (BTreeSet<u16>, bool) {
    let (code, answers, extra) = dns_query(c.dns(), name, RecordType::SRV, false).await;
    if code != ResponseCode::NoError {
        return (BTreeSet::new(), false);
    }
    let mut ports = BTreeSet::new();
    let mut addressed = true;
    for r in &answers {
        let RData::SRV(srv) = &r.data else {
            panic!("not an SRV record: {r}")
        };
        ports.insert(srv.port);
        addressed &= extra
            .iter()
            .any(|a| a.name == srv.target && matches!(a.data, RData::A(_)));
    }
    (ports, addressed)
}

async fn task_ports(c: &Cluster, app: &str) -> BTreeSet<u16> {
    let (_, v) = c.api.get(&format!("/v2/apps/{app}/tasks")).await;
    v["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["healthCheckResults"][0]["alive"] == true)
        .map(|t| t["ports"][0].as_u64().unwrap() as u16)
        .collect()
}

fn web(id: &str, instances: u32) -> Value {
    json!({
        "id": id,
        "cmd": "exec python3 -m http.server --bind 127.0.0.1 $PORT0",
        "cpus": 0.1, "mem": 128, "instances": instances,
        "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0,
                          "gracePeriodSeconds": 30, "intervalSeconds": 1, "maxConsecutiveFailures": 3}]
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_marathon_apps_tasks_resolve_by_name_and_follow_a_scale() {
    let c = Cluster::up().await;
    let (code, v) = c.api.post("/v2/apps", &web("/prod/web", 2)).await;
    assert_eq!(code, 201, "{v}");
    // Marathon's Mesos task name is the app's path reversed: web.prod.
    let name = "_web-prod._tcp.marathon.mesos.";
    let two = wait_for("both tasks healthy", DEADLINE, || async {
        let ports = task_ports(&c, "prod/web").await;
        (ports.len() == 2).then_some(ports)
    })
    .await;
    wait_for("the SRV answer to name both tasks", DEADLINE, || async {
        let (ports, addressed) = srv_ports(&c, name).await;
        (ports == two && addressed).then_some(())
    })
    .await;
    let (code, answers, _) =
        dns_query(c.dns(), "web-prod.marathon.mesos.", RecordType::A, false).await;
    assert_eq!(code, ResponseCode::NoError);
    assert_eq!(
        answers.len(),
        1,
        "both tasks are on the one agent: {answers:?}"
    );
    assert_eq!(answers[0].data.to_string(), "127.0.0.1");
    // The same over TCP.
    let (code, answers, _) = dns_query(c.dns(), name, RecordType::SRV, true).await;
    assert_eq!(code, ResponseCode::NoError);
    assert_eq!(answers.len(), 2, "{answers:?}");

    // Scaled to three: the answer names the third.
    let (code, v) = c
        .api
        .put("/v2/apps/prod/web", &json!({"instances": 3}))
        .await;
    assert_eq!(code, 200, "{v}");
    let three = wait_for("three tasks healthy", DEADLINE, || async {
        let ports = task_ports(&c, "prod/web").await;
        (ports.len() == 3).then_some(ports)
    })
    .await;
    wait_for(
        "the SRV answer to name the third task",
        DEADLINE,
        || async { (srv_ports(&c, name).await.0 == three).then_some(()) },
    )
    .await;

    // Mesos-DNS' HTTP API answers the same.
    let (code, v) = c.api.get(&format!("/v1/services/{name}")).await;
    assert_eq!(code, 200, "{v}");
    let ports: BTreeSet<u16> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["port"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ports, three, "{v}");
    assert_eq!(v[0]["ip"], "127.0.0.1", "{v}");
    let (_, v) = c.api.get("/v1/hosts/web-prod.marathon.mesos").await;
    assert_eq!(
        v,
        json!([{"host": "web-prod.marathon.mesos.", "ip": "127.0.0.1"}])
    );
    let (_, v) = c.api.get("/v1/hosts/nothing.marathon.mesos").await;
    assert_eq!(v, json!([{"host": "", "ip": ""}]));
    let (_, v) = c.api.get("/v1/version").await;
    assert_eq!(v["Service"], "Mesos-DNS", "{v}");

    // A task that fails its health check is running but not named.
    let mut sick = web("/sick", 1);
    sick["cmd"] = json!("sleep 600");
    sick["healthChecks"] = json!([{"protocol": "COMMAND", "command": {"value": "false"},
        "gracePeriodSeconds": 0, "intervalSeconds": 1, "maxConsecutiveFailures": 0}]);
    let (code, v) = c.api.post("/v2/apps", &sick).await;
    assert_eq!(code, 201, "{v}");
    wait_for("the sick task to be found unhealthy", DEADLINE, || async {
        let (_, v) = c.api.get("/v2/apps/sick").await;
        (v["app"]["tasksUnhealthy"] == 1).then_some(())
    })
    .await;
    let (code, answers, _) = dns_query(c.dns(), "sick.marathon.mesos.", RecordType::A, false).await;
    assert_eq!(code, ResponseCode::NXDomain, "{answers:?}");

    // The masters, the leader and the agents.
    let port = reqwest::Url::parse(&c.up.url).unwrap().port().unwrap();
    let (_, leader, _) = dns_query(c.dns(), "_leader._tcp.mesos.", RecordType::SRV, false).await;
    match &leader[..] {
        [r] => match &r.data {
            RData::SRV(srv) => {
                assert_eq!(srv.port, port);
                assert_eq!(srv.target.to_ascii(), "leader.mesos.");
            }
            other => panic!("not SRV: {other}"),
        },
        other => panic!("one leader: {other:?}"),
    }
    for host in [
        "leader.mesos.",
        "master.mesos.",
        "master0.mesos.",
        "slave.mesos.",
        "marathon.mesos.",
    ] {
        let (code, answers, _) = dns_query(c.dns(), host, RecordType::A, false).await;
        assert_eq!(code, ResponseCode::NoError, "{host}");
        assert_eq!(answers.len(), 1, "{host}: {answers:?}");
        assert_eq!(answers[0].data.to_string(), "127.0.0.1", "{host}");
    }
    // No such name in the domain; a name outside it (no recursion).
    let (code, _, _) = dns_query(c.dns(), "nothing.marathon.mesos.", RecordType::A, false).await;
    assert_eq!(code, ResponseCode::NXDomain);
    let (code, _, _) = dns_query(c.dns(), "example.com.", RecordType::A, false).await;
    assert_eq!(code, ResponseCode::Refused);
}
