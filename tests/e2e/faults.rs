//! A short fault run with a fixed seed: three masters and two agents on
//! hosts of their own (network namespaces), clients reading, writing and
//! swapping variables, submitting tasks, changing Marathon apps, running
//! a pymesos framework and a Chronos job every 3 s while the nemesis kills,
//! pauses, partitions, loses and duplicates packets, steps a clock and
//! fills a master's disk; then the checker. A violation
//! prints the window of the history that breaks the rule; the same seed
//! replays it (`wasmos-bench faults --seed 3258 --seconds 90`).

use std::time::Duration;

use wasmos_tests::{root, wasmos_bin};

/// The seed of the suite's run.
const SEED: u64 = 3258;

#[tokio::test(flavor = "multi_thread")]
async fn a_seeded_fault_run_on_hosts_of_their_own_loses_no_acknowledged_change_and_runs_no_task_twice()
 {
    // Not under /tmp: each task has a /tmp of its own.
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let cfg = wasmos_faults::Config {
        setup: wasmos_faults::Setup {
            wasmos: wasmos_bin(),
            dir: dir.path().join("run"),
            masters: 3,
            agents: 2,
            election_timeout_ms: 1000,
            plugin_cache: Some(root().join("target/e2e-plugin-cache")),
            tag: (std::process::id() % 60_000) as u16,
            disk_mib: 256,
        },
        seed: SEED,
        faults_for: Duration::from_secs(90),
        registers: 3,
        register_clients: 4,
        task_clients: 1,
        marathon_clients: 1,
        pymesos: Some(wasmos_faults::framework::Pymesos {
            python: root().join("target/pymesos/bin/python"),
            script: root().join("tests/clients/pymesos_scheduler.py"),
        }),
        heal_within: Duration::from_secs(90),
    };
    let report = wasmos_faults::run(cfg, |s| eprintln!("faults: {s}"))
        .await
        .unwrap();
    eprintln!("{report}");
    if !report.violations.is_empty() {
        // Keep the history and the logs for whoever reads the failure.
        let kept = wasmos_tests::artefacts("faults");
        let _ = std::process::Command::new("cp")
            .arg("-r")
            .arg(&report.dir)
            .arg(&kept)
            .status();
        panic!(
            "the checker found violations (history in {}):\n{report}",
            kept.display()
        );
    }
    // A run that did too little proves nothing.
    assert!(report.applied.len() >= 8, "{report}");
    assert!(
        report.register_ops >= 300
            && report.acked_tasks >= 10
            && report.runs >= 10
            && report.chronos_runs >= 10
            && report.app_changes_acked >= 10
            && report.marathon_runs >= 10
            && report.framework_launched >= 10
            && report.framework_runs >= 10,
        "{report}"
    );
}
