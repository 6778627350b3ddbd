//! `wasmos simulate`: a placement plugin tried on a simulated cluster
//! before it is installed anywhere.

use serde_json::{Value, json};
use wasmos_tests::{cli, root, test_plugin};

/// The example `avoid` plugin (`[field, AVOID, value]`), with its
/// manifest, in a directory as `wasmos plugin install DIR` takes it.
fn avoid_plugin(dir: &std::path::Path) -> String {
    let p = dir.join("avoid");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::copy(
        test_plugin("wasmos_example_placement.wasm"),
        p.join("avoid.wasm"),
    )
    .unwrap();
    std::fs::copy(
        root().join("examples/placement-template/plugin.toml"),
        p.join("plugin.toml"),
    )
    .unwrap();
    p.to_str().unwrap().to_string()
}

/// The simulator runs the real Marathon, allocator and placement plugins
/// in virtual time: with the plugin, an app that avoids a rack runs
/// everywhere else and each placement has its decision record naming the
/// plugin's rule; an instance too big for any agent waits with the reason;
/// without the plugin, Marathon refuses the app, as a cluster would.
#[tokio::test(flavor = "multi_thread")]
async fn a_placement_plugin_is_tried_on_a_simulated_cluster_before_it_is_installed() {
    let dir = tempfile::tempdir().unwrap();
    let agents = dir.path().join("agents.json");
    std::fs::write(
        &agents,
        json!([
            {"count": 3, "hostname": "a-{i}", "attributes": {"rack": "a"}, "cpus": 4, "mem": 4096},
            {"count": 2, "hostname": "b-{i}", "attributes": {"rack": "b"}, "cpus": 4, "mem": 4096}
        ])
        .to_string(),
    )
    .unwrap();
    let workload = dir.path().join("workload.json");
    std::fs::write(
        &workload,
        json!({"apps": [
            {"at": 0, "app": {"id": "/web", "cmd": "serve", "cpus": 1, "mem": 256, "instances": 6,
                              "constraints": [["rack", "AVOID", "b"]]}},
            {"at": 20, "app": {"id": "/huge", "cmd": "big", "cpus": 8, "mem": 256, "instances": 1}}
        ]})
        .to_string(),
    )
    .unwrap();
    let plugin = avoid_plugin(dir.path());
    let decisions = dir.path().join("decisions.jsonl");
    let (a, w, d) = (
        agents.to_str().unwrap(),
        workload.to_str().unwrap(),
        decisions.to_str().unwrap(),
    );
    let out = cli(
        "https://127.0.0.1:9",
        &[
            "simulate",
            "--agents",
            a,
            "--workload",
            w,
            "--plugin",
            &plugin,
            "--duration",
            "120",
            "--decisions",
            d,
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(r["virtual_seconds"], 120.0, "{r}");
    assert_eq!(r["plugins"], json!(["constraints", "avoid"]), "{r}");
    let app = |id: &str| {
        r["apps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {r}"))
    };
    let web = app("/web");
    assert_eq!(
        (&web["running"], &web["hosts"]),
        (&json!(6), &json!(3)),
        "{web}"
    );
    let placed = r["placements"].as_array().unwrap();
    let web_hosts: Vec<&str> = placed
        .iter()
        .filter(|p| p["app"] == "/web")
        .map(|p| p["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(web_hosts.len(), 6, "{r}");
    assert!(
        web_hosts.iter().all(|h| h.starts_with("a-")),
        "{web_hosts:?}"
    );
    let huge = app("/huge");
    assert_eq!(huge["running"], 0, "{huge}");
    assert!(
        huge["waiting"]
            .as_str()
            .unwrap()
            .starts_with("no offer has 8 cpus free"),
        "{huge}"
    );
    // One decision record per launch, and the waiting app's refusal; the
    // web tasks' name the plugin's rule for the b agents they passed over.
    let lines: Vec<Value> = std::fs::read_to_string(&decisions)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), placed.len() + 1, "{lines:?}");
    let web_decision = lines.iter().find(|d| d["group"] == "/web").unwrap();
    let refused: Vec<&str> = web_decision["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["refused"].as_str())
        .collect();
    assert!(
        refused.contains(&"avoid: [rack, AVOID, b] not met"),
        "{web_decision}"
    );
    // Without the plugin nothing handles AVOID: the app is refused.
    let out = cli(
        "https://127.0.0.1:9",
        &[
            "simulate",
            "--agents",
            a,
            "--workload",
            w,
            "--duration",
            "30",
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("refused: apps[0] (/web): 422")
            && out
                .stdout
                .contains("no placement plugin handles operator AVOID"),
        "{out:?}"
    );
    // A bad agents file is named, with what is wrong.
    std::fs::write(&agents, r#"[{"hostname": "x", "cpus": 1}]"#).unwrap();
    let out = cli(
        "https://127.0.0.1:9",
        &["simulate", "--agents", a, "--workload", w],
    )
    .await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("agents file") && out.stderr.contains("mem"),
        "{out:?}"
    );
}
