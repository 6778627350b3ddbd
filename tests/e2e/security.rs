//! Secure by default: every listener speaks only TLS with the cluster's
//! CA, daemons know each other by certificate, agents join with the join
//! token, and certificates rotate before they expire.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wasmos_tests::{Api, Cluster, DEADLINE, Daemon, wait_for};

/// What a plaintext request to `url`'s port gets back, raw.
async fn plaintext_get(url: &str) -> String {
    let addr = url.trim_start_matches("https://").trim_end_matches('/');
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut out))
        .await
        .expect("an answer, not a hang")
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_is_refused_on_the_masters_and_the_agents_listeners() {
    let c = Cluster::up().await;
    let agent = c.up.announced("agent").unwrap().to_string();
    assert!(c.up.url.starts_with("https://"), "{}", c.up.url);
    assert!(agent.starts_with("https://"), "{agent}");
    for url in [c.up.url.as_str(), agent.as_str()] {
        let answer = plaintext_get(url).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{url}: {answer}");
        assert!(answer.contains("use https://"), "{url}: {answer}");
    }
    // The CLI, pointed at http://, says what to do.
    let plain = c.up.url.replacen("https://", "http://", 1);
    let out = wasmos_tests::cli(&plain, &["task", "list"]).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("https://"), "{out:?}");
    // Over TLS with the cluster's CA, the same request works.
    assert_eq!(c.api.get("/health").await.0, 200);
}

/// A client trusting the system's roots (not the cluster's CA) cannot
/// talk to a master: its certificate is not from a public CA.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_does_not_trust_the_cluster_ca_cannot_connect() {
    let c = Cluster::up().await;
    let err = reqwest::Client::new()
        .get(format!("{}/health", c.up.url))
        .send()
        .await
        .expect_err("the cluster's certificate is not publicly trusted");
    assert!(err.is_connect(), "{err}");
    // The CLI without --ca-cert (and no `wasmos up` in its default data
    // dir) says where the CA certificate is.
    let out = tokio::process::Command::new(wasmos_tests::wasmos_bin())
        .args(["--master", &c.up.url, "task", "list"])
        .env_remove("WASMOS_CACERT")
        .env("HOME", c.dir.path().join("nohome"))
        .env("XDG_DATA_HOME", c.dir.path().join("nohome"))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--ca-cert"), "{stderr}");
}

/// Runs `wasmos <args>` to its end (it must end within a minute).
async fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(wasmos_tests::wasmos_bin())
            .args(args)
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("wasmos ends by itself")
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn agent_args<'a>(master: &'a str, ca: &'a str, token: &'a str, data: &'a str) -> Vec<&'a str> {
    vec![
        "agent",
        "--master",
        master,
        "--ca-cert",
        ca,
        "--join-token-file",
        token,
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data,
        "--containerizer",
        "process",
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_needs_the_join_token_and_the_clusters_ca() {
    let c = Cluster::up().await;
    let dir = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let ca = s(&c.ca());
    let data = s(&dir.path().join("agent"));

    // A wrong join token: refused, the agent exits saying so.
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let (code, log) = run_to_exit(&agent_args(&c.up.url, &ca, &s(&wrong), &data)).await;
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("join token"), "{log}");

    // The right token, but another cluster's CA: the agent does not trust
    // the master and says which flag to fix.
    let other = dir.path().join("other-ca");
    wasmos_tls::Authority::create(&other, "other").unwrap();
    let token = s(&c.dir.path().join("data/join-token"));
    let (code, log) = run_to_exit(&agent_args(
        &c.up.url,
        &s(&other.join("ca.pem")),
        &token,
        &data,
    ))
    .await;
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("--ca-cert"), "{log}");

    // Only up's own agent joined.
    let (_, agents) = c.api.get("/api/wasmos/v1/agents").await;
    assert_eq!(agents.as_array().unwrap().len(), 1, "{agents}");
}

/// A certificate from another CA gets no further than the handshake, on
/// the masters' agent endpoints and on an agent's API; the same request
/// with the cluster's own certificates gets through.
#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_with_a_certificate_from_another_ca_is_refused() {
    let c = Cluster::up().await;
    let other = tempfile::tempdir().unwrap();
    let ca = wasmos_tls::Authority::create(other.path(), "other").unwrap();
    let trust = wasmos_tls::Trust::load(&c.ca()).unwrap();
    let agent = c.up.announced("agent").unwrap().to_string();
    let stranger = |identity: wasmos_tls::Identity, expect| {
        let cred = ca
            .issue(
                &identity,
                &["127.0.0.1".into(), wasmos_tls::AGENT_NAME.into()],
                Duration::from_secs(3600),
            )
            .unwrap();
        let config =
            wasmos_tls::client_config(&trust, expect, Some(wasmos_tls::Keys::new(cred).unwrap()))
                .unwrap();
        reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .build()
            .unwrap()
    };
    for (url, path, client) in [
        (
            c.up.url.as_str(),
            "/internal/v1/agents/register",
            stranger(
                wasmos_tls::Identity::Agent("x".into()),
                wasmos_tls::Expect::Master,
            ),
        ),
        (
            agent.as_str(),
            "/api/wasmos/v1/state",
            stranger(wasmos_tls::Identity::Master(1), wasmos_tls::Expect::Agent),
        ),
    ] {
        // Refused in the handshake: the server rejected the certificate.
        // (With TLS 1.3 the client may first see the connection close
        // before its request went out, and the alert only on a new try.)
        let mut text = String::new();
        for _ in 0..3 {
            let err = client
                .get(format!("{url}{path}"))
                .send()
                .await
                .expect_err("another CA's certificate was accepted");
            let mut cause: &dyn std::error::Error = &err;
            text = cause.to_string();
            while let Some(next) = cause.source() {
                cause = next;
                text.push_str(&format!(": {cause}"));
            }
            if !text.contains("connection was not ready") {
                break;
            }
        }
        assert!(
            text.contains("alert") || text.contains("certificate"),
            "{url}{path}: not a TLS refusal: {text}"
        );
    }
    // The master's own agent endpoints refuse a client without any
    // certificate, and the agent's API refuses callers that are not masters.
    assert_eq!(
        c.api
            .post("/internal/v1/agents/heartbeat", &json!({}))
            .await
            .0,
        401
    );
    assert_eq!(
        Api::to_agent(&agent, None)
            .get("/api/wasmos/v1/state")
            .await
            .0,
        401
    );
    assert_eq!(c.agent_api().get("/api/wasmos/v1/state").await.0, 200);
}

/// Joins `c` as a new agent would, with the join token: an API client
/// presenting the certificate the masters issued, and the signing request
/// it was issued for.
async fn join(c: &Cluster) -> (Api, String) {
    let token = std::fs::read_to_string(c.dir.path().join("data/join-token")).unwrap();
    let (csr, key) = wasmos_tls::Credential::request().unwrap();
    let joined: Value = wasmos_tests::tls_client(&c.ca(), None)
        .build()
        .unwrap()
        .post(format!("{}/internal/v1/join", c.up.url))
        .bearer_auth(token.trim())
        .json(&json!({"csr": csr, "hosts": ["127.0.0.1"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cert = joined["certificate"].as_str().expect("a certificate");
    let identity = format!("{cert}{key}");
    (Api::with_identity(&c.up.url, identity.as_bytes()), csr)
}

/// The agent certificate a (second) joined agent holds cannot speak for the
/// first agent: not to register as it, heartbeat for it, or report its
/// tasks.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_presenting_another_agents_id_is_refused() {
    let c = Cluster::up().await;
    let (_, agents) = c.api.get("/api/wasmos/v1/agents").await;
    let victim = agents[0]["id"].as_str().unwrap().to_string();

    let (intruder, _) = join(&c).await;

    let info = json!({"hostname": "intruder", "endpoint": "https://127.0.0.1:9",
        "resources": {}, "attributes": {}, "boot_id": "x", "version": "0"});
    let tries = [
        (
            "register as the victim",
            intruder
                .post(
                    "/internal/v1/agents/register",
                    &json!({"agent_id": victim, "info": info}),
                )
                .await,
        ),
        (
            "heartbeat for the victim",
            intruder
                .post("/internal/v1/agents/heartbeat", &json!({"agent_id": victim}))
                .await,
        ),
        (
            "a status update for the victim's task",
            intruder
                .post(
                    "/internal/v1/status",
                    &json!({"agent_id": victim, "framework_id": "exec",
                        "status": {"task_id": "nope", "state": "TASK_FAILED", "source": "SOURCE_AGENT",
                                   "uuid": "00000000-0000-0000-0000-000000000001", "timestamp": 1.0}}),
                )
                .await,
        ),
    ];
    for (what, (code, body)) in tries {
        assert_eq!(code, 403, "{what}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("another certificate")),
            "{what}: {body}"
        );
    }
    // The victim is untouched and still connected.
    let (_, agent) = c.api.get(&format!("/api/wasmos/v1/agents/{victim}")).await;
    assert_eq!(agent["hostname"], agents[0]["hostname"], "{agent}");
    assert_eq!(agent["connected"], true, "{agent}");
}

/// With short-lived certificates, the agent renews its own before it
/// expires and goes on working with the new one.
#[tokio::test(flavor = "multi_thread")]
async fn certificates_rotate_before_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("join-token");
    std::fs::write(&token, "rotation-token").unwrap();
    let port = wasmos_tests::free_port();
    let master = Daemon::start(
        "master",
        &[
            "master",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            dir.path().join("master").to_str().unwrap(),
            "--join-token-file",
            token.to_str().unwrap(),
            "--cert-lifetime-secs",
            "30",
            "--bootstrap-token-file",
            &wasmos_tests::bootstrap_token_file(dir.path()),
        ],
        "master",
        dir.path(),
    )
    .await;
    let ca = dir.path().join("master/tls/ca.pem");
    wasmos_tests::register(&master.url, &ca, Some(wasmos_tests::TEST_TOKEN));
    let data = dir.path().join("agent");
    let mut args = agent_args(
        &master.url,
        ca.to_str().unwrap(),
        token.to_str().unwrap(),
        data.to_str().unwrap(),
    );
    args.extend(["--resources", "cpus:1;mem:256"]);
    let _agent = Daemon::start("agent", &args, "agent", dir.path()).await;
    let cert = data.join("tls/agent.pem");
    let first = std::fs::read_to_string(&cert).unwrap();
    let name = wasmos_tls::Credential {
        cert_pem: first.clone(),
        key_pem: String::new(),
    }
    .identity()
    .expect("the agent's certificate names it");
    let renewed = wait_for(
        "the agent to renew its certificate",
        Duration::from_secs(90),
        || async {
            let now = std::fs::read_to_string(&cert).ok()?;
            (now != first).then_some(now)
        },
    )
    .await;
    let renewed = wasmos_tls::Credential {
        cert_pem: renewed,
        key_pem: String::new(),
    };
    assert_eq!(
        renewed.identity(),
        Some(name),
        "the same agent, a new certificate"
    );
    // Still registered, and tasks launch through new connections.
    let api = Api::new(&master.url);
    let out = wasmos_tests::cli(
        &master.url,
        &[
            "task",
            "run",
            "--id",
            "after-rotation",
            "--",
            "echo",
            "rotated",
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "rotated\n");
    wait_for("the agent to stay connected", DEADLINE, || async {
        let (_, a) = api.get("/api/wasmos/v1/agents").await;
        (a[0]["connected"] == true).then_some(())
    })
    .await;
}

/// The leader dials each agent by the name of the certificate it
/// registered with: an agent record pointing at another agent's address
/// gets no answer from that other agent (the handshake refuses its
/// certificate), so one agent cannot take another's calls. Marking an
/// agent gone revokes its certificate: every agent endpoint refuses it.
#[tokio::test(flavor = "multi_thread")]
async fn the_leader_talks_only_to_the_agent_a_certificate_names_and_gone_agents_certificates_are_revoked()
 {
    let c = Cluster::up().await;
    let (_, agents) = c.api.get("/api/wasmos/v1/agents").await;
    let victim_endpoint = agents[0]["endpoint"].as_str().unwrap().to_string();

    // A joined intruder registers an agent of its own whose endpoint is
    // the victim's address.
    let (intruder, csr) = join(&c).await;
    let info = json!({"hostname": "intruder", "endpoint": victim_endpoint,
        "resources": {"cpus": 4.0, "mem": 4096.0, "disk": 4096.0}, "attributes": {},
        "boot_id": "x", "version": "0"});
    let (code, registered) = intruder
        .post("/internal/v1/agents/register", &json!({"info": info}))
        .await;
    assert_eq!(code, 200, "{registered}");
    let intruder_id = registered["agent_id"].as_str().unwrap().to_string();

    // A task placed on the intruder's agent: the leader's calls for it go
    // to the victim's address, where the victim's certificate answers.
    let run = c
        .cli(&[
            "task",
            "run",
            "--detach",
            "--constraint",
            "hostname:LIKE:intruder",
            "--",
            "sleep",
            "600",
        ])
        .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let task = run.stdout.trim().to_string();
    let refused = wait_for(
        "the leader refusing the victim's answer",
        DEADLINE,
        || async {
            let (code, body) = c
                .api
                .get(&format!("/api/wasmos/v1/tasks/{task}/files/browse"))
                .await;
            (code != 404 || !body["message"].as_str().unwrap_or("").contains("no task"))
                .then_some((code, body))
        },
    )
    .await;
    assert_eq!(refused.0, 502, "{}", refused.1);
    assert!(
        refused.1["message"]
            .as_str()
            .is_some_and(|m| m.contains("not agent")),
        "{}",
        refused.1
    );
    // The victim never ran it: its agent knows no such task.
    let (_, state) = c.agent_api().get("/api/wasmos/v1/state").await;
    assert!(
        !state.to_string().contains(&task),
        "the victim's agent took the intruder's launch: {state}"
    );

    // Gone is final, and so is the certificate.
    let (code, body) = c
        .api
        .post(
            "/api/v1",
            &json!({"type": "MARK_AGENT_GONE", "mark_agent_gone": {"agent_id": {"value": intruder_id}}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    for (path, body) in [
        (
            "/internal/v1/agents/heartbeat",
            json!({"agent_id": intruder_id}),
        ),
        ("/internal/v1/renew", json!({"csr": csr, "hosts": []})),
        ("/internal/v1/agents/register", json!({"info": info})),
    ] {
        let (code, answer) = intruder.post(path, &body).await;
        assert_eq!(code, 403, "{path}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains("revoked")),
            "{path}: {answer}"
        );
    }
}
