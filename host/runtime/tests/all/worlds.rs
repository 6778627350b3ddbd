//! The placement, isolator and health-check worlds, driven with the real
//! bundled components.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener};
use std::time::Duration;

use wasmos_core::Resources;
use wasmos_runtime::bindings::placement_types::Candidate;
use wasmos_runtime::health::{CheckTarget, HealthCheckInstance};
use wasmos_runtime::isolator::{ContainerInfo, IsolatorError, IsolatorInstance};
use wasmos_runtime::placement::{
    AgentRef, NumberedError, PlacementAgent, PlacementEvaluator, PlacementService, Rule,
};
use wasmos_runtime::{PluginRuntime, RuntimeConfig};

fn bundled(name: &str) -> (wasmos_core::PluginManifest, &'static [u8]) {
    let p = wasmos_bundled::all()
        .into_iter()
        .find(|p| p.manifest.name == name)
        .unwrap();
    (p.manifest, p.component)
}

fn runtime() -> PluginRuntime {
    PluginRuntime::new(RuntimeConfig::default()).unwrap()
}

fn rule(field: &str, op: &str, value: Option<&str>) -> Rule {
    Rule {
        field: field.into(),
        operator: op.into(),
        value: value.map(String::from),
        plugin: None,
    }
}

fn service() -> std::sync::Arc<PlacementService> {
    let rt = runtime();
    let svc = PlacementService::new(&rt);
    let (m, bytes) = bundled("constraints");
    let c = rt.compile(bytes).unwrap();
    svc.install(
        "constraints",
        "d1",
        &c,
        m.operators.clone(),
        m.config.clone(),
    )
    .unwrap();
    let agent = |id: &str, rack: &str| PlacementAgent {
        id: id.into(),
        hostname: format!("host-{id}"),
        attributes: [("rack".to_string(), rack.to_string())].into(),
        resources: Resources::cpus_mem(4.0, 4096.0).unwrap(),
    };
    svc.set_agents(vec![
        agent("a1", "r1"),
        agent("a2", "r1"),
        agent("a3", "r2"),
    ]);
    svc
}

/// An agent in a rack, as placement sees it after a change.
fn agent_in(id: &str, rack: &str) -> PlacementAgent {
    PlacementAgent {
        id: id.into(),
        hostname: format!("host-{id}"),
        attributes: [("rack".to_string(), rack.to_string())].into(),
        resources: Resources::default(),
    }
}

fn cands(ids: &[&str]) -> Vec<AgentRef> {
    ids.iter()
        .map(|id| AgentRef {
            agent_id: id.to_string(),
            cpus: 1.0,
            mem: 128.0,
            disk: 0.0,
        })
        .collect()
}

#[test]
fn constraints_place_through_the_service_and_follow_agent_changes() {
    let svc = service();
    let res = Resources::cpus_mem(0.1, 32.0).unwrap();
    let unique = [rule("rack", "UNIQUE", None)];
    let v = svc
        .evaluate(
            "web",
            &unique,
            &res,
            &[("a1".into(), 1)],
            &cands(&["a1", "a2", "a3"]),
        )
        .unwrap();
    let fits: Vec<bool> = v.iter().map(|v| v.fits).collect();
    assert_eq!(fits, [false, false, true], "{v:?}");
    assert!(v[0].reason.as_deref().unwrap().contains("UNIQUE"), "{v:?}");

    // An agent changes rack: the plugin's view follows without a restart.
    svc.set_agents(vec![agent_in("a1", "r1"), agent_in("a3", "r1")]);
    let v = svc
        .evaluate(
            "web",
            &unique,
            &res,
            &[("a1".into(), 1)],
            &cands(&["a3", "a2"]),
        )
        .unwrap();
    assert!(!v[0].fits, "a3 is in r1 now");
    assert!(
        !v[1].fits && v[1].reason.as_deref().unwrap().contains("not known"),
        "a2 is gone: {v:?}"
    );
}

/// With several rules, a refused agent's reason names the one rule that
/// refused it (each is asked alone), not the whole list.
#[test]
fn a_refusal_names_the_rule_that_made_it() {
    let svc = service();
    let res = Resources::cpus_mem(0.1, 32.0).unwrap();
    let rules = [
        rule("rack", "LIKE", Some("r1")),
        rule("hostname", "UNIQUE", None),
    ];
    let v = svc
        .evaluate(
            "web",
            &rules,
            &res,
            &[("a1".into(), 1)],
            &cands(&["a1", "a2", "a3"]),
        )
        .unwrap();
    let reasons: Vec<Option<&str>> = v.iter().map(|v| v.reason.as_deref()).collect();
    assert_eq!(
        reasons,
        [
            Some("constraints: [hostname, UNIQUE] not met"),
            None,
            Some("constraints: [rack, LIKE, r1] not met"),
        ],
        "{v:?}"
    );
}

/// Frameworks judging thousands of offers number the agents once and
/// send numbers: the verdicts are the named path's, each reason text is
/// sent once, and numbers of agents that left since are refused, not
/// judged as whichever agent took the number.
#[test]
fn numbered_candidates_get_the_named_verdicts_until_an_agent_leaves() {
    let svc = service();
    let res = Resources::cpus_mem(0.1, 32.0).unwrap();
    let rules = [
        rule("rack", "LIKE", Some("r1")),
        rule("hostname", "UNIQUE", None),
    ];
    let ids: Vec<String> = ["a1", "a2", "a3", "nobody"].map(String::from).into();
    let (generation, numbers) = svc.numbers(&ids);
    assert_eq!(numbers[3], None, "an unknown agent has no number");
    let numbered: Vec<Candidate> = numbers[..3]
        .iter()
        .map(|n| Candidate {
            agent: n.expect("known agents are numbered"),
            cpus: 1.0,
            mem: 128.0,
            disk: 0.0,
        })
        .collect();
    let placed = [("a1".to_string(), 1)];
    let ev = svc
        .evaluate_numbered("web", &rules, &res, &placed, generation, &numbered)
        .unwrap();
    let named = svc
        .evaluate("web", &rules, &res, &placed, &cands(&["a1", "a2", "a3"]))
        .unwrap();
    let as_named: Vec<(bool, Option<&str>)> = ev
        .verdicts
        .iter()
        .map(|v| (v.fits, v.reason.map(|r| ev.reasons[r as usize].as_str())))
        .collect();
    let expected: Vec<(bool, Option<&str>)> = named
        .iter()
        .map(|v| (v.fits, v.reason.as_deref()))
        .collect();
    assert_eq!(as_named, expected);
    assert_eq!(ev.reasons.len(), 2, "{:?}", ev.reasons);

    // a2 leaves and a newcomer may take its number: the old numbers are
    // refused until the framework asks again.
    svc.set_agents(vec![agent_in("a1", "r1"), agent_in("a4", "r1")]);
    let stale = svc.evaluate_numbered("web", &rules, &res, &placed, generation, &numbered);
    assert_eq!(stale, Err(NumberedError::AgentsChanged));
    let (again, numbers) = svc.numbers(&ids);
    assert_ne!(again, generation);
    assert_eq!(numbers[1], None, "a2 is gone");
}

#[test]
fn bad_rules_are_refused_with_a_reason() {
    let svc = service();
    let err = svc
        .validate(&[rule("hostname", "UNIQUE", Some("x"))])
        .unwrap_err();
    assert!(err.contains("does not accept a value"), "{err}");
    let err = svc.validate(&[rule("hostname", "NEAR", None)]).unwrap_err();
    assert!(
        err.contains("no placement plugin handles operator NEAR"),
        "{err}"
    );
    assert!(svc.validate(&[rule("rack", "GROUP_BY", Some("2"))]).is_ok());
}

#[test]
fn the_labels_isolator_turns_labels_into_environment_and_limits() {
    let rt = runtime();
    let (m, bytes) = bundled("labels");
    let c = rt.compile(bytes).unwrap();
    let mut iso = IsolatorInstance::new(&rt, "labels", &c, m.config.clone()).unwrap();
    let mut info = ContainerInfo {
        container_id: "t1".into(),
        task_id: "t1".into(),
        framework_id: "exec".into(),
        user: None,
        resources: Resources::cpus_mem(0.1, 32.0).unwrap(),
        labels: [
            ("wasmos.env.GREETING".to_string(), "hi".to_string()),
            ("wasmos.rlimit.nofile".to_string(), "256:512".to_string()),
            ("other".to_string(), "ignored".to_string()),
        ]
        .into(),
        environment: BTreeMap::new(),
    };
    let a = iso.prepare(&info).unwrap();
    assert_eq!(a.environment["GREETING"], "hi");
    assert_eq!(
        (
            a.rlimits[0].name.as_str(),
            a.rlimits[0].soft,
            a.rlimits[0].hard
        ),
        ("nofile", 256, 512)
    );
    info.labels.insert("wasmos.rlimit.bogus".into(), "1".into());
    match iso.prepare(&info) {
        Err(IsolatorError::Refused { message, .. }) => {
            assert!(message.contains("bogus"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

/// A one-shot HTTP server answering `status`.
fn http_server(status: u16) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().take(4) {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = write!(s, "HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    port
}

fn target(ports: Vec<u16>, config: &[(&str, &str)]) -> CheckTarget {
    CheckTarget {
        task_id: "t1".into(),
        ip: IpAddr::from([127, 0, 0, 1]),
        ports,
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        timeout: Duration::from_secs(2),
        exec: None,
    }
}

#[test]
fn http_and_tcp_checks_reach_the_task_and_only_the_task() {
    let rt = runtime();
    let (m, bytes) = bundled("health-http");
    let c = rt.compile(bytes).unwrap();
    let mut http = HealthCheckInstance::new(&rt, "health-http", &c, m.config.clone()).unwrap();

    let ok = http_server(200);
    let r = http
        .check(&target(vec![ok], &[("path", "/health")]))
        .unwrap();
    assert!(r.healthy, "{r:?}");
    let bad = http_server(503);
    let r = http.check(&target(vec![bad], &[])).unwrap();
    assert!(!r.healthy && r.message.contains("503"), "{r:?}");

    // A port that is not the task's is refused by the host, whatever the
    // plugin asks for.
    let other = http_server(200);
    let r = http
        .check(&target(vec![ok], &[("port", &other.to_string())]))
        .unwrap();
    assert!(
        !r.healthy && r.message.contains("not one of the task's ports"),
        "{r:?}"
    );

    let (m, bytes) = bundled("health-tcp");
    let c = rt.compile(bytes).unwrap();
    let mut tcp = HealthCheckInstance::new(&rt, "health-tcp", &c, m.config.clone()).unwrap();
    let listening = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listening.local_addr().unwrap().port();
    assert!(tcp.check(&target(vec![port], &[])).unwrap().healthy);
    drop(listening);
    let r = tcp.check(&target(vec![port], &[])).unwrap();
    assert!(!r.healthy, "{r:?}");
}

/// Regression: threads compiling one component at once shared a temporary
/// cache file, so one truncated the file another had renamed into place and
/// mapped, and the daemon died of SIGBUS. And they compile it once: the
/// others wait for the first, then load what it cached.
#[test]
fn concurrent_compiles_of_one_component_share_the_cache_safely_and_compile_once() {
    let (_, bytes) = bundled("health-tcp");
    for _ in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime().with_cache(dir.path().to_path_buf());
        let start = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (rt, start) = (rt.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    rt.compile(bytes).map(|_| ())
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(
            rt.compiled(),
            1,
            "one compiled it, the others waited and loaded it"
        );
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names.iter().filter(|n| n.ends_with(".cwasm")).count(),
            1,
            "one cached artifact: {names:?}"
        );
        assert!(
            names
                .iter()
                .all(|n| n.ends_with(".cwasm") || n.ends_with(".lock")),
            "no temporaries left: {names:?}"
        );
        // And the cached artifact loads, without compiling again.
        rt.compile(bytes).unwrap();
        assert_eq!(rt.compiled(), 1);
    }
}
