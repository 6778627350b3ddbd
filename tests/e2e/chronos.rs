//! The bundled Chronos framework, driven through Chronos' REST API and
//! `wasmos job` as its users would: real schedules, real tasks, real
//! masters. Runs are counted from what the tasks themselves printed (their
//! stdout through the files API), not from the framework's counters.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{Value, json};
use wasmos_tests::{Api, Cluster, DEADLINE, DockerJanitor, Masters, busybox_image, cli, wait_for};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `2026-12-02T09:30:04` (UTC, no offset) for Unix milliseconds.
fn civil(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .unwrap()
        .strftime("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// What the command of every test job prints: the instant its run is for,
/// and when the task itself started (ms).
const REPORT: &str =
    "echo due=$CHRONOS_JOB_RUN_TIME attempt=$CHRONOS_JOB_RUN_ATTEMPT started=$(date +%s%3N)";

/// Offers flow once the leader runs every bundled framework.
async fn wait_chronos(api: &Api) {
    for fw in ["chronos", "exec", "marathon"] {
        api.wait_framework_and_agent(fw).await;
    }
}

async fn add(api: &Api, job: Value) {
    let endpoint = if job.get("parents").is_some() {
        "dependency"
    } else {
        "iso8601"
    };
    let (code, body) = api
        .send(
            Method::POST,
            &format!("/v1/scheduler/{endpoint}"),
            Some(&job),
        )
        .await;
    assert_eq!(code, 204, "adding {job}: {body}");
}

/// The Wasmos view of a job (its runs in flight and history).
async fn detail(api: &Api, name: &str) -> Value {
    let (code, v) = api.get(&format!("/frameworks/chronos/jobs/{name}")).await;
    assert_eq!(code, 200, "{v}");
    v
}

/// The Chronos view of a job. A leader just elected answers 503 (retry)
/// until its framework plugins run: retried, as a client would.
async fn chronos_job(api: &Api, name: &str) -> Value {
    let path = format!("/v1/scheduler/job/{name}");
    let (code, v) = wait_for("an answer other than 503", DEADLINE, || async {
        let (code, v) = api.get(&path).await;
        (code != 503).then_some((code, v))
    })
    .await;
    assert_eq!(code, 200, "{v}");
    v
}

async fn wait_count(api: &Api, name: &str, field: &str, n: u64) -> Value {
    let what = format!("{name}'s {field} to reach {n}");
    wait_for(&what, DEADLINE, || async {
        let (code, v) = api.get(&format!("/v1/scheduler/job/{name}")).await;
        (code == 200 && v[field].as_u64().unwrap_or(0) >= n).then_some(v)
    })
    .await
}

/// One line a task of a job printed.
#[derive(Debug, Clone)]
struct Report {
    task: String,
    state: String,
    due: u64,
    attempt: u64,
    started: u64,
}

/// What every task of job `name` printed, from the tasks' stdout.
async fn reports(api: &Api, name: &str) -> Vec<Report> {
    let (_, tasks) = api.get("/api/wasmos/v1/tasks?framework=chronos").await;
    let mut out = Vec::new();
    for t in tasks.as_array().cloned().unwrap_or_default() {
        if t["labels"]["chronos.job"] != name {
            continue;
        }
        let id = t["id"].as_str().unwrap().to_string();
        let (code, text) = api
            .text(&format!("/api/wasmos/v1/tasks/{id}/files/read?path=stdout"))
            .await;
        assert_eq!(code, 200, "stdout of {id}: {text}");
        for line in text.lines().filter(|l| l.starts_with("due=")) {
            let field = |k: &str| -> u64 {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{k}=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{k} in {line:?}"))
            };
            out.push(Report {
                task: id.clone(),
                state: t["state"].as_str().unwrap_or("").to_string(),
                due: field("due"),
                attempt: field("attempt"),
                started: field("started"),
            });
        }
    }
    out.sort_by_key(|r| (r.due, r.attempt));
    out
}

/// Asserts that the reports cover every instant `period_ms` apart from the
/// first to the last, each exactly once, by a finished task; an instant
/// with no run of its own must have been due before the run of the
/// instant before it started (Chronos 3.x coalesces the occurrences missed
/// while a run waits, e.g. through a failover longer than the period,
/// into that run).
fn assert_each_instant_once(reports: &[Report], period_ms: u64) -> BTreeMap<u64, usize> {
    let mut per_due: BTreeMap<u64, usize> = BTreeMap::new();
    for r in reports {
        *per_due.entry(r.due).or_default() += 1;
    }
    let twice: Vec<_> = per_due.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "instants that ran twice: {twice:?}\n{reports:#?}"
    );
    let dues: Vec<u64> = per_due.keys().copied().collect();
    for pair in dues.windows(2) {
        assert_eq!(
            (pair[1] - pair[0]) % period_ms,
            0,
            "runs off the schedule: {reports:#?}"
        );
        let started = reports
            .iter()
            .filter(|r| r.due == pair[0])
            .map(|r| r.started)
            .min()
            .unwrap_or(0);
        let missing_last = pair[1] - period_ms;
        assert!(
            missing_last == pair[0] || started >= missing_last,
            "a due instant was lost between {} and {} (the run before started at {started}, before it was due): {reports:#?}",
            pair[0],
            pair[1]
        );
    }
    for r in reports {
        assert_eq!(r.state, "TASK_FINISHED", "{r:?}");
    }
    per_due
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeating_job_runs_at_its_instants_within_a_second_and_counts_successes() {
    let c = Cluster::up().await;
    wait_chronos(&c.api).await;
    // Every 2 s from a whole second a little ahead.
    let start = (now_ms() / 1000 + 2) * 1000;
    add(
        &c.api,
        json!({"name": "tick", "command": REPORT, "owner": "", "cpus": 0.05, "mem": 32,
               "schedule": format!("R/{}Z/PT2S", civil(start))}),
    )
    .await;
    let job = wait_count(&c.api, "tick", "successCount", 5).await;
    assert_eq!(job["errorCount"], 0, "{job}");
    // Stop it, then count what ran.
    let mut off = job.clone();
    off["disabled"] = json!(true);
    add(&c.api, off).await;
    let finished = wait_for("no run of tick in flight", DEADLINE, || async {
        let d = detail(&c.api, "tick").await;
        d["active"].as_array()?.is_empty().then_some(d)
    })
    .await;
    let reports = reports(&c.api, "tick").await;
    let per_due = assert_each_instant_once(&reports, 2000);
    assert_eq!(
        per_due.keys().next(),
        Some(&start),
        "the first run is the schedule's start"
    );
    for r in &reports {
        let late = r.started as i64 - r.due as i64;
        assert!(
            (0..1000).contains(&late),
            "run for {} started {late} ms after its instant",
            r.due
        );
    }
    // Chronos' counters agree with the tasks, and so does the history.
    let counted = chronos_job(&c.api, "tick").await["successCount"]
        .as_u64()
        .unwrap();
    assert_eq!(counted as usize, reports.len());
    assert_eq!(finished["history"].as_array().unwrap().len(), reports.len());
    let (_, stat) = c.api.get("/v1/scheduler/job/stat/tick").await;
    assert_eq!(stat["histogram"]["count"].as_u64(), Some(counted), "{stat}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_job_retries_then_counts_one_error_and_a_soft_error_still_runs_its_child() {
    let c = Cluster::up().await;
    wait_chronos(&c.api).await;
    let out = c
        .cli(&["plugin", "config", "chronos", "failure_retry_ms=300"])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    wait_chronos(&c.api).await;
    add(
        &c.api,
        json!({"name": "flaky", "command": format!("{REPORT}; exit 3"), "retries": 2,
               "softError": true, "mem": 32, "schedule": "R0/2030-01-01T00:00:00Z/PT1H"}),
    )
    .await;
    add(
        &c.api,
        json!({"name": "cleanup", "command": REPORT, "parents": ["flaky"], "mem": 32}),
    )
    .await;
    let (code, _) = c
        .api
        .send(Method::PUT, "/v1/scheduler/job/flaky", None)
        .await;
    assert_eq!(code, 204);
    let job = wait_count(&c.api, "flaky", "errorCount", 1).await;
    assert_eq!(job["successCount"], 0, "{job}");
    assert_eq!(job["errorsSinceLastSuccess"], 1, "{job}");
    assert!(!job["lastError"].as_str().unwrap().is_empty(), "{job}");
    // Three attempts of one run, each a task that exited 3.
    let flaky = reports(&c.api, "flaky").await;
    let attempts: Vec<u64> = flaky.iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, [0, 1, 2], "{flaky:#?}");
    assert!(
        flaky
            .iter()
            .all(|r| r.due == flaky[0].due && r.state == "TASK_FAILED")
    );
    let d = detail(&c.api, "flaky").await;
    let run = &d["history"][0];
    assert_eq!(run["state"], "failed", "{d}");
    assert_eq!(run["attempts"].as_array().unwrap().len(), 3, "{d}");
    assert!(
        run["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["exit_code"] == 3)
    );
    // softError: the child ran after its parent failed for good.
    wait_count(&c.api, "cleanup", "successCount", 1).await;
    let child = &reports(&c.api, "cleanup").await[0];
    assert!(
        child.started >= flaky[2].started,
        "{child:?} ran before the last attempt"
    );
    // Chronos' rule: no retries while the job's last result is an error.
    let (code, _) = c
        .api
        .send(Method::PUT, "/v1/scheduler/job/flaky", None)
        .await;
    assert_eq!(code, 204);
    wait_count(&c.api, "flaky", "errorCount", 2).await;
    let d = detail(&c.api, "flaky").await;
    assert_eq!(
        d["history"][0]["attempts"].as_array().unwrap().len(),
        1,
        "{d}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_three_level_graph_runs_in_order_a_two_parent_child_waits_for_both_and_a_cycle_changes_nothing()
 {
    let c = Cluster::up().await;
    wait_chronos(&c.api).await;
    let file = c.dir.path().join("jobs.json");
    // Listed child first: `job add` posts parents before children.
    std::fs::write(
        &file,
        json!([
            {"name": "load", "command": REPORT, "parents": ["clean", "fetch-b"], "mem": 32},
            {"name": "fetch-a", "command": REPORT, "schedule": "R0/2030-01-01T00:00:00Z/PT1H", "mem": 32},
            {"name": "fetch-b", "command": REPORT, "schedule": "R0/2030-01-01T00:00:00Z/PT1H", "mem": 32},
            {"name": "clean", "command": REPORT, "parents": ["fetch-a"], "mem": 32}
        ])
        .to_string(),
    )
    .unwrap();
    let out = c.cli(&["job", "add", file.to_str().unwrap()]).await;
    assert_eq!(out.code, Some(0), "{out:?}");

    let out = c.cli(&["job", "run", "fetch-a", "--wait"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let clean = wait_count(&c.api, "clean", "successCount", 1).await;
    // `clean` was queued in the same step that counted fetch-a's success;
    // `load` was not: fetch-b has not run.
    assert_eq!(clean["errorCount"], 0);
    let load = detail(&c.api, "load").await;
    assert_eq!(load["job"]["success_count"], 0, "{load}");
    assert!(load["active"].as_array().unwrap().is_empty(), "{load}");

    let out = c.cli(&["job", "run", "fetch-b", "--wait"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    wait_count(&c.api, "load", "successCount", 1).await;
    let started = |name: &'static str| {
        let api = c.api.clone();
        async move { reports(&api, name).await[0].started }
    };
    let (a, b, cl, l) = (
        started("fetch-a").await,
        started("fetch-b").await,
        started("clean").await,
        started("load").await,
    );
    assert!(
        a <= cl && cl <= l && b <= l,
        "order: fetch-a {a}, clean {cl}, fetch-b {b}, load {l}"
    );
    assert_eq!(reports(&c.api, "load").await.len(), 1, "load ran once");

    // A cycle is refused and changes nothing.
    let (code, body) = c
        .api
        .send(
            Method::POST,
            "/v1/scheduler/dependency",
            Some(&json!({"name": "fetch-a", "command": "true", "parents": ["load"]})),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("cycle"),
        "{body}"
    );
    assert!(chronos_job(&c.api, "fetch-a").await["schedule"].is_string());

    let graph = c.cli(&["job", "graph"]).await;
    assert_eq!(graph.code, Some(0), "{graph:?}");
    for line in ["fetch-a", "└── clean", "└── load"] {
        assert!(graph.stdout.contains(line), "{line:?} in\n{}", graph.stdout);
    }
    let list = c.cli(&["job", "list"]).await;
    assert!(
        list.stdout.contains("after clean + fetch-b"),
        "{}",
        list.stdout
    );

    // Removing `clean` re-links `load` to clean's parent, as Chronos does.
    let out = c.cli(&["job", "remove", "clean"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        chronos_job(&c.api, "load").await["parents"],
        json!(["fetch-a", "fetch-b"])
    );
    let out = c.cli(&["job", "show", "no-such-job"]).await;
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("wasmos job list"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_in_a_time_zone_runs_at_the_matching_utc_instant() {
    let c = Cluster::up().await;
    wait_chronos(&c.api).await;
    // Kolkata is UTC+05:30 all year. The start's fields are read in the
    // job's zone, as Chronos does, whatever offset they were written with.
    let due = (now_ms() / 1000 + 3) * 1000;
    let kolkata = civil(due + 19_800_000);
    add(
        &c.api,
        json!({"name": "kolkata", "command": REPORT, "mem": 32,
               "schedule": format!("R1/{kolkata}Z/PT24H"), "scheduleTimeZone": "Asia/Kolkata"}),
    )
    .await;
    let job = chronos_job(&c.api, "kolkata").await;
    assert!(
        job["schedule"].as_str().unwrap().contains("+05:30"),
        "{job}"
    );
    wait_count(&c.api, "kolkata", "successCount", 1).await;
    let r = &reports(&c.api, "kolkata").await[0];
    assert_eq!(r.due, due, "{r:?}");
    assert!(
        (0..1000).contains(&(r.started as i64 - due as i64)),
        "{r:?}"
    );
    // Its one repetition used, the job is done.
    assert_eq!(chronos_job(&c.api, "kolkata").await["disabled"], true);
    let (code, body) = c
        .api
        .send(
            Method::POST,
            "/v1/scheduler/iso8601",
            Some(&json!({"name": "nowhere", "command": "true",
                         "schedule": "R/2030-01-01T00:00:00Z/PT1H", "scheduleTimeZone": "Mars/Olympus"})),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("scheduleTimeZone"),
        "{body}"
    );
}

/// A Docker job runs in its image, with an agent directory (beneath the
/// agent's --host-volumes) mounted where its container.volumes say.
#[tokio::test(flavor = "multi_thread")]
async fn a_docker_job_runs_in_its_image() {
    let image = busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let shared = shared.to_str().unwrap().to_string();
    let _janitor = DockerJanitor(dir.path().to_path_buf());
    let c = Cluster::up_with(dir, &["--docker", "on", "--host-volumes", &shared]).await;
    wait_chronos(&c.api).await;
    add(
        &c.api,
        json!({"name": "boxed", "mem": 32, "schedule": "R1//PT1H",
               "command": "echo in-image $MESOS_SANDBOX $CHRONOS_JOB_NAME; ls /bin/busybox; echo from-chronos > /data/out",
               "container": {"type": "DOCKER", "image": image, "network": "HOST",
                             "volumes": [{"hostPath": format!("{shared}/"), "containerPath": "/data", "mode": "RW"}]}}),
    )
    .await;
    wait_count(&c.api, "boxed", "successCount", 1).await;
    assert_eq!(
        std::fs::read_to_string(format!("{shared}/out")).unwrap(),
        "from-chronos\n"
    );
    let (_, tasks) = c.api.get("/api/wasmos/v1/tasks?framework=chronos").await;
    let id = tasks.as_array().unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, out) = c
        .api
        .text(&format!("/api/wasmos/v1/tasks/{id}/files/read?path=stdout"))
        .await;
    assert!(
        out.contains("in-image /mnt/mesos/sandbox boxed\n/bin/busybox"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_kills_mid_schedule_neither_lose_nor_repeat_a_due_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Masters::start(3, dir.path()).await;
    let (leader, _) = m.wait_leader(&[1, 2, 3], None).await;
    let _agent = m.start_agent(dir.path()).await;
    let urls = m.urls();
    let base: Vec<String> = (1..=3).map(|id| m.url(id)).collect();
    let api_of = |id: u64| Api::new(&base[id as usize - 1]);
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    wait_chronos(&api_of(follower)).await;
    let period = 3000;
    let start = (now_ms() / 1000 + 2) * 1000;
    // A follower forwards Chronos' API to the leader, as Chronos' masters
    // did: a client that does not follow a redirect on POST (httplib2,
    // under chronos-python) is answered by the leader all the same.
    let no_redirects = wasmos_tests::client_for(&m.url(follower))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirects
        .post(format!("{}/v1/scheduler/iso8601", m.url(follower)))
        .json(
            &json!({"name": "beat", "command": REPORT, "mem": 32, "cpus": 0.05,
                      "schedule": format!("R/{}Z/PT3S", civil(start))}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204, "{:?}", resp.text().await);
    let listed: Value = no_redirects
        .get(format!("{}/scheduler/jobs", m.url(follower)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["name"], "beat", "{listed}");
    wait_count(&api_of(follower), "beat", "successCount", 2).await;

    // Kill the leader just before an instant, then, with the first master
    // back, the new leader just after one (while it launches the run).
    let mut killed = Vec::new();
    for (offset, victim_hint) in [(-40i64, leader), (60, 0)] {
        let running = m.running();
        let (current, _) = m.wait_leader(&running, None).await;
        let victim = if victim_hint == 0 {
            current
        } else {
            victim_hint
        };
        assert_eq!(victim, current, "the leader moved before the kill");
        let next = (now_ms() - start) / period * period + start + period;
        let at = (next as i64 + offset) as u64;
        if at > now_ms() {
            tokio::time::sleep(Duration::from_millis(at - now_ms())).await;
        }
        m.kill9(victim).await;
        killed.push(victim);
        let survivors = m.running();
        let (new_leader, _) = m.wait_leader(&survivors, Some(victim)).await;
        let before = chronos_job(&api_of(new_leader), "beat").await["successCount"]
            .as_u64()
            .unwrap();
        wait_count(&api_of(new_leader), "beat", "successCount", before + 2).await;
        let peers = m.peers();
        m.start_master(victim, &["--peers", &peers]).await;
    }

    // Stop the schedule and let the last run finish.
    let all = m.running();
    let (leader, _) = m.wait_leader(&all, None).await;
    let api = api_of(leader);
    let mut off = chronos_job(&api, "beat").await;
    off["disabled"] = json!(true);
    add(&api, off).await;
    let out = cli(&urls, &["job", "list"]).await;
    assert!(out.stdout.contains("disabled"), "{out:?}");
    wait_for("no run of beat in flight", DEADLINE, || async {
        let d = detail(&api, "beat").await;
        d["active"].as_array()?.is_empty().then_some(())
    })
    .await;
    let reports = reports(&api, "beat").await;
    let per_due = assert_each_instant_once(&reports, period);
    assert!(per_due.len() >= 6, "{reports:#?}");
    assert_eq!(per_due.keys().next(), Some(&start));
    let tasks: std::collections::BTreeSet<&str> = reports.iter().map(|r| r.task.as_str()).collect();
    assert_eq!(tasks.len(), reports.len(), "one task per run");
    let counted = chronos_job(&api, "beat").await["successCount"]
        .as_u64()
        .unwrap();
    assert_eq!(
        counted as usize,
        reports.len(),
        "the counter agrees with the tasks"
    );
}

/// chronos-python, unchanged, on both prefixes (see the script).
#[tokio::test(flavor = "multi_thread")]
async fn chronos_python_drives_both_api_prefixes_unchanged() {
    let c = Cluster::up().await;
    wait_chronos(&c.api).await;
    let server =
        c.up.url
            .strip_prefix("https://")
            .expect("the master speaks https");
    let ca = c.ca();
    // A user who may manage jobs: chronos-python sends the password only
    // after the 401's Basic challenge.
    let rules = json!([{"area": "jobs", "access": "write"}, {"area": "cluster", "access": "read"}]);
    let password = wasmos_tests::user_with(&c.api, "scheduler", rules).await;
    wasmos_tests::run_client_script(
        "chronos_python.py",
        &[server, ca.to_str().unwrap(), "scheduler", &password],
        "chronos-python: ok",
    )
    .await;
}

/// The dashboard's Jobs view in a real headless Chromium: the jobs with
/// their schedules and results, the dependency tree, and a deep link to a
/// job's runs, at desktop and at phone width, with no page error.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_jobs_their_runs_and_the_graph_in_a_real_browser() {
    let c = Cluster::up().await;
    wait_chronos(&c.api).await;
    add(
        &c.api,
        json!({"name": "nightly", "command": "true", "mem": 32,
               "schedule": "R/2030-01-01T02:00:00Z/P1D", "scheduleTimeZone": "Europe/Berlin"}),
    )
    .await;
    add(
        &c.api,
        json!({"name": "after-nightly", "command": "echo done", "mem": 32, "parents": ["nightly"]}),
    )
    .await;
    let (code, _) = c
        .api
        .send(Method::PUT, "/v1/scheduler/job/nightly", None)
        .await;
    assert_eq!(code, 204);
    wait_count(&c.api, "after-nightly", "successCount", 1).await;
    let page = format!("{}/#job/after-nightly", c.up.url);
    let ready = "(() => { const t = (s) => document.querySelector(s)?.textContent || ''; \
        return t('#jobs').includes('nightly') && t('#jobs').includes('Europe/Berlin') \
        && t('#jobs').includes('after nightly') && t('#job-name') === 'after-nightly' \
        && t('#job-runs tbody').includes('succeeded') && t('#job-graph').includes('└── after-nightly'); })()";
    for extra in [
        &[][..],
        &["--width", "390", "--height", "844", "--mobile"][..],
    ] {
        let ca = c.ca();
        let token = wasmos_tests::token_for(&c.up.url).unwrap();
        let mut args = vec![
            page.as_str(),
            ready,
            "--ca",
            ca.to_str().unwrap(),
            "--session",
            &token,
        ];
        args.extend_from_slice(extra);
        wasmos_tests::run_client_script("browser.py", &args, "true").await;
    }
}

/// A run gets its job's fetched files, arguments (or the manual run's) and
/// user; one that runs past `maxCompletionTime` is killed and counted failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_gets_its_files_arguments_and_user_and_is_stopped_past_its_max_completion_time() {
    let c = Cluster::up().await;
    wait_chronos(&c.api).await;
    let payload = c.files().join("payload.txt");
    std::fs::write(&payload, "fetched-payload\n").unwrap();
    add(
        &c.api,
        json!({"name": "fetcher", "mem": 32, "schedule": "R0/2030-01-01T00:00:00Z/PT1H",
               "command": "cat payload.txt; id -un; echo args:", "arguments": ["a1", "a2"],
               "runAsUser": "nobody",
               "fetch": [{"uri": format!("file://{}", payload.display()), "extract": false}]}),
    )
    .await;
    let out = c.cli(&["job", "run", "fetcher", "--wait"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let (code, _) = c
        .api
        .send(Method::PUT, "/v1/scheduler/job/fetcher?arguments=x9", None)
        .await;
    assert_eq!(code, 204);
    wait_count(&c.api, "fetcher", "successCount", 2).await;
    let d = detail(&c.api, "fetcher").await;
    let mut outputs = Vec::new();
    for run in d["history"].as_array().unwrap() {
        let task = run["attempts"][0]["task_id"].as_str().unwrap();
        let (_, text) = c
            .api
            .text(&format!(
                "/api/wasmos/v1/tasks/{task}/files/read?path=stdout"
            ))
            .await;
        outputs.push(text);
    }
    outputs.sort();
    assert_eq!(
        outputs,
        [
            "fetched-payload\nnobody\nargs: a1 a2\n",
            "fetched-payload\nnobody\nargs: x9\n"
        ]
    );

    add(
        &c.api,
        json!({"name": "slow", "command": "sleep 120", "mem": 32, "retries": 0,
               "maxCompletionTime": 1, "schedule": "R1//PT1H"}),
    )
    .await;
    let job = wait_count(&c.api, "slow", "errorCount", 1).await;
    assert_eq!(job["successCount"], 0, "{job}");
    let d = detail(&c.api, "slow").await;
    let run = &d["history"][0];
    assert_eq!(run["state"], "failed", "{d}");
    assert!(
        run["message"]
            .as_str()
            .unwrap()
            .contains("maxCompletionTime of 1 s"),
        "{d}"
    );
    assert_eq!(run["attempts"][0]["state"], "TASK_KILLED", "{d}");
}
