//! The framework world's host side, driven with the real bundled `exec`
//! component.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use wasmos_core::{FrameworkId, Offer, OfferId, Resources, TaskId, TaskState, TaskStatus};
use wasmos_runtime::framework::{DriverAction, FrameworkInstance, HttpRequest, KvOp, KvSource};
use wasmos_runtime::placement::NoPlacement;
use wasmos_runtime::{PluginRuntime, RuntimeConfig};

/// An in-memory namespace standing in for the replicated state.
#[derive(Default)]
struct MemKv(Mutex<BTreeMap<String, Vec<u8>>>);

impl KvSource for MemKv {
    fn get(&self, _ns: &FrameworkId, key: &str) -> Option<Vec<u8>> {
        self.0.lock().unwrap().get(key).cloned()
    }
    fn keys(&self, _ns: &FrameworkId, prefix: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }
}

impl MemKv {
    fn commit(&self, ops: &[KvOp]) {
        let mut m = self.0.lock().unwrap();
        for op in ops {
            match op {
                KvOp::Set { key, value } => {
                    m.insert(key.clone(), value.clone());
                }
                KvOp::Delete { key } => {
                    m.remove(key);
                }
            }
        }
    }
}

fn exec(kv: Arc<MemKv>) -> FrameworkInstance {
    let runtime = PluginRuntime::new(RuntimeConfig::default()).unwrap();
    let bundled = wasmos_bundled::all();
    let exec = bundled.iter().find(|p| p.manifest.name == "exec").unwrap();
    let component = runtime.compile(exec.component).unwrap();
    FrameworkInstance::new(
        &runtime,
        "exec",
        FrameworkId::new("exec").unwrap(),
        &component,
        exec.manifest.config.clone(),
        kv,
        Arc::new(NoPlacement),
    )
    .unwrap()
}

fn post(path: &str, body: &str) -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        path: path.into(),
        body: body.as_bytes().to_vec(),
        ..Default::default()
    }
}

#[test]
fn a_submitted_task_is_recorded_then_launched_on_a_fitting_offer() {
    let kv = Arc::new(MemKv::default());
    let mut fw = exec(kv.clone());

    let (resp, effects) = fw
        .http(post(
            "/tasks",
            r#"{"argv": ["sleep", "60"], "cpus": 0.5, "mem": 64}"#,
        ))
        .unwrap();
    assert_eq!(resp.status, 201, "{}", String::from_utf8_lossy(&resp.body));
    let task: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    let id = task["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("sleep-"), "{id}");
    assert!(
        effects
            .kv
            .iter()
            .any(|op| matches!(op, KvOp::Set { key, .. } if key == &format!("task/{id}"))),
        "the submission is written to the replicated store: {effects:?}"
    );
    assert!(effects.actions.contains(&DriverAction::Revive));
    kv.commit(&effects.kv);

    let small = Offer {
        id: OfferId::new("o1").unwrap(),
        framework_id: FrameworkId::new("exec").unwrap(),
        agent_id: "a1".parse().unwrap(),
        hostname: "h".into(),
        resources: Resources::cpus_mem(0.25, 1024.0).unwrap(),
        reserved: Default::default(),
        static_reserved: Default::default(),
        volumes: Vec::new(),
        attributes: BTreeMap::new(),
    };
    let big = Offer {
        id: OfferId::new("o2").unwrap(),
        resources: Resources::cpus_mem(2.0, 1024.0).unwrap(),
        ..small.clone()
    };
    let effects = fw.offers(&[small, big]).unwrap();
    let launched: Vec<_> = effects
        .actions
        .iter()
        .filter_map(|a| match a {
            DriverAction::Launch {
                offer_ids, tasks, ..
            } => Some((offer_ids.clone(), tasks.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(launched.len(), 1, "{effects:?}");
    assert_eq!(launched[0].0, vec![OfferId::new("o2").unwrap()]);
    assert_eq!(launched[0].1[0].task_id.as_str(), id);
    assert!(
        effects.actions.iter().any(|a| matches!(a, DriverAction::Decline { offer_ids, .. } if offer_ids == &vec![OfferId::new("o1").unwrap()])),
        "the offer that does not fit is declined: {effects:?}"
    );
    assert!(
        effects.actions.contains(&DriverAction::Suppress),
        "nothing left to run"
    );
    kv.commit(&effects.kv);

    // A status update reaches the framework's record.
    let effects = fw
        .status(&TaskStatus {
            task_id: TaskId::new(id.clone()).unwrap(),
            state: TaskState::Failed,
            agent_id: None,
            source: wasmos_core::Source::Agent,
            reason: None,
            message: Some("exited with status 3".into()),
            exit_code: Some(3),
            signal: None,
            healthy: None,
            ready: None,
            timestamp: 1.0,
            uuid: uuid_like(),
            data: None,
            executor_id: None,
        })
        .unwrap();
    kv.commit(&effects.kv);
    let (resp, _) = fw
        .http(HttpRequest {
            method: "GET".into(),
            path: format!("/tasks/{id}"),
            ..Default::default()
        })
        .unwrap();
    let task: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(task["state"], "TASK_FAILED");
    assert_eq!(task["exit_code"], 3);
}

#[test]
fn a_new_instance_rebuilds_its_queue_from_the_store() {
    let kv = Arc::new(MemKv::default());
    let mut first = exec(kv.clone());
    let (resp, effects) = first.http(post("/tasks", r#"{"cmd": "echo hi"}"#)).unwrap();
    assert_eq!(resp.status, 201);
    kv.commit(&effects.kv);
    drop(first);

    let mut second = exec(kv);
    let (resp, _) = second
        .http(HttpRequest {
            method: "GET".into(),
            path: "/tasks".into(),
            query: "state=queued".into(),
            ..Default::default()
        })
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(body["tasks"].as_array().unwrap().len(), 1, "{body}");
}

#[test]
fn bad_submissions_get_a_clear_400_and_change_nothing() {
    let kv = Arc::new(MemKv::default());
    let mut fw = exec(kv);
    for body in [
        "{not json",
        r#"{"cmd": "x", "argv": ["y"]}"#,
        r#"{"cmd": "x", "bogus": 1}"#,
        r#"{"cmd": "x", "id": "../etc"}"#,
        r#"{"cmd": "x", "cpus": -1}"#,
        r#"{}"#,
    ] {
        let (resp, effects) = fw.http(post("/tasks", body)).unwrap();
        assert_eq!(
            resp.status,
            400,
            "{body}: {}",
            String::from_utf8_lossy(&resp.body)
        );
        let msg: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert!(msg["message"].is_string(), "{body}");
        assert!(
            effects.kv.is_empty(),
            "{body}: a refused submission writes nothing: {effects:?}"
        );
    }
}

fn uuid_like() -> uuid::Uuid {
    uuid::Uuid::from_u128(42)
}
