//! Authentication and authorization: nothing without credentials, deny by
//! default, policies by area and prefix, tokens that expire and are
//! revoked, users with passwords, an audit trail, secrets stored hashed.

use reqwest::Method;
use serde_json::{Value, json};
use wasmos_tests::{Api, Cluster, DEADLINE, wait_for};

/// One request of each API area.
fn one_of_each_area() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::GET, "/api/wasmos/v1/cluster", None),
        (Method::GET, "/api/wasmos/v1/agents", None),
        (Method::GET, "/api/wasmos/v1/events", None),
        (Method::GET, "/api/wasmos/v1/tasks", None),
        (Method::POST, "/api/wasmos/v1/tasks/x/kill", Some(json!({}))),
        (
            Method::GET,
            "/api/wasmos/v1/tasks/x/files/read?path=stdout",
            None,
        ),
        (Method::GET, "/api/wasmos/v1/plugins", None),
        (Method::DELETE, "/api/wasmos/v1/plugins/labels", None),
        (Method::GET, "/api/wasmos/v1/masters", None),
        (Method::GET, "/api/wasmos/v1/vars", None),
        (
            Method::PUT,
            "/api/wasmos/v1/vars/a/b",
            Some(json!({"items": {"k": "v"}})),
        ),
        (Method::GET, "/api/wasmos/v1/acl/tokens", None),
        (Method::GET, "/api/wasmos/v1/plugin-keys", None),
        (
            Method::POST,
            "/api/wasmos/v1/plugin-keys",
            Some(json!({"name": "k", "public_key": "x"})),
        ),
        (Method::GET, "/frameworks/exec/tasks", None),
        (
            Method::POST,
            "/frameworks/exec/tasks",
            Some(json!({"cmd": "true"})),
        ),
        (Method::GET, "/v2/apps", None),
        (
            Method::POST,
            "/v2/apps",
            Some(json!({"id": "/x", "cmd": "sleep 1"})),
        ),
        (Method::GET, "/v1/scheduler/jobs", None),
        (Method::GET, "/scheduler/jobs", None),
        (Method::GET, "/master/redirect", None),
        (Method::GET, "/ping", None),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_api_area_answers_401_with_a_basic_challenge_without_valid_credentials() {
    let c = Cluster::up().await;
    let before = c.api.get("/api/wasmos/v1/cluster").await.1["log_index"].clone();
    let anonymous = Api::anonymous(&c.up.url);
    let wrong_token = Api::with_authorization(&c.up.url, "Bearer not-a-token");
    let dcos_wrong = Api::with_authorization(&c.up.url, "token=not-a-token");
    // A user that does not exist and one that does, with a wrong password:
    // the same answer, so nobody learns which names exist.
    wasmos_tests::user_with(
        &c.api,
        "alice",
        json!([{"area": "cluster", "access": "read"}]),
    )
    .await;
    let basic = |u: &str, p: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    let nobody = Api::with_authorization(&c.up.url, &basic("nobody", "whatever-1"));
    let alice_wrong = Api::with_authorization(&c.up.url, &basic("alice", "wrong-password"));
    let http = wasmos_tests::tls_client(&c.ca(), None).build().unwrap();
    for (method, path, body) in one_of_each_area() {
        let mut answers = Vec::new();
        for (who, api) in [
            ("no credentials", &anonymous),
            ("a wrong token", &wrong_token),
            ("a wrong DC/OS token", &dcos_wrong),
            ("an unknown user", &nobody),
            ("a wrong password", &alice_wrong),
        ] {
            let (code, v) = api.send(method.clone(), path, body.as_ref()).await;
            assert_eq!(code, 401, "{method} {path} with {who}: {v}");
            assert!(
                v["message"].as_str().is_some_and(|m| m.contains("token")),
                "{method} {path} with {who}: {v}"
            );
            answers.push(v);
        }
        assert!(
            answers.windows(2).all(|w| w[0] == w[1]),
            "{method} {path}: the answers differ: {answers:?}"
        );
        // The challenge chronos-python's httplib2 waits for.
        let r = http
            .request(method.clone(), format!("{}{path}", c.up.url))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Basic realm=\"wasmos\""),
            "{method} {path}"
        );
    }
    // Public: liveness, version, the dashboard's page.
    for path in ["/health", "/version", "/"] {
        let r = http
            .get(format!("{}{path}", c.up.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // Twenty wrong passwords in a minute lock the name: alice's right one
    // is not even checked now, and the answer is a wrong password's.
    let mut wrong = Value::Null;
    for _ in 0..20 {
        wrong = alice_wrong.get("/api/wasmos/v1/cluster").await.1;
    }
    let alice = Api::with_authorization(&c.up.url, &basic("alice", "alice-password-1"));
    let (code, v) = alice.get("/api/wasmos/v1/cluster").await;
    assert_eq!(code, 401, "{v}");
    assert_eq!(v, wrong, "a locked name looks like a wrong password");
    let after = c.api.get("/api/wasmos/v1/cluster").await.1["log_index"].clone();
    // Two ACL writes (alice's policy and user), nothing else.
    assert_eq!(
        after.as_u64().unwrap(),
        before.as_u64().unwrap() + 2,
        "refused requests changed the state"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_token_reads_everything_and_writes_nothing() {
    let c = Cluster::up().await;
    let rules: Vec<Value> = [
        "cluster", "tasks", "files", "apps", "jobs", "plugins", "masters", "vars",
    ]
    .iter()
    .map(|a| json!({"area": a, "access": "read"}))
    .collect();
    let (code, _) = c
        .api
        .put(
            "/api/wasmos/v1/acl/policies/readonly",
            &json!({ "rules": rules }),
        )
        .await;
    assert_eq!(code, 200);
    let (code, t) = c
        .api
        .post(
            "/api/wasmos/v1/acl/tokens",
            &json!({"name": "auditor", "policies": ["readonly"]}),
        )
        .await;
    assert_eq!(code, 201, "{t}");
    let reader = Api::with_authorization(
        &c.up.url,
        &format!("Bearer {}", t["secret"].as_str().unwrap()),
    );
    let before = c.api.get("/api/wasmos/v1/cluster").await.1["log_index"].clone();
    for (method, path, body) in one_of_each_area() {
        if path.contains("/events") {
            continue; // a stream: its status is enough below
        }
        let (code, v) = reader.send(method.clone(), path, body.as_ref()).await;
        let write = method != Method::GET;
        // Signing keys are in the ACL area, which this policy cannot read.
        if path.contains("/acl/") || path.contains("/plugin-keys") {
            assert_eq!(code, 403, "{method} {path}: {v}");
        } else if write {
            assert_eq!(code, 403, "{method} {path}: {v}");
            let m = v["message"].as_str().unwrap_or("");
            assert!(
                m.contains("token:auditor") && m.contains(":write"),
                "{method} {path}: the 403 names the missing permission: {v}"
            );
        } else {
            assert!(
                code != 401 && code != 403,
                "{method} {path} is a read: {code} {v}"
            );
        }
    }
    let after = c.api.get("/api/wasmos/v1/cluster").await.1["log_index"].clone();
    assert_eq!(before, after, "refused writes changed the state");
    // The same writes with the management token go through.
    let (code, _) = c
        .api
        .put("/api/wasmos/v1/vars/a/b", &json!({"items": {"k": "v"}}))
        .await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_limits_apps_and_variables_to_its_prefix() {
    let c = Cluster::up().await;
    let rules = json!([
        {"area": "apps", "prefix": "/team-a/", "access": "write"},
        {"area": "vars", "prefix": "team-a/", "access": "write"},
        {"area": "cluster", "access": "read"},
    ]);
    let password = wasmos_tests::user_with(&c.api, "team-a", rules).await;
    let basic = {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("team-a:{password}"))
        )
    };
    let a = Api::with_authorization(&c.up.url, &basic);
    let app =
        |id: &str| json!({"id": id, "cmd": "sleep 600", "cpus": 0.05, "mem": 16, "instances": 0});
    let (code, v) = a.post("/v2/apps", &app("/team-a/web")).await;
    assert_eq!(code, 201, "{v}");
    // Relative to the root: also outside the prefix.
    for id in ["/team-b/web", "team-b/web", "/team-ab"] {
        let (code, v) = a.post("/v2/apps", &app(id)).await;
        assert_eq!(code, 403, "{id}: {v}");
        assert!(v["message"].as_str().unwrap().contains("apps:write"), "{v}");
    }
    let (code, _) = c.api.post("/v2/apps", &app("/team-b/db")).await;
    assert_eq!(code, 201, "the management token creates anything");
    let (code, v) = a.send(Method::DELETE, "/v2/apps/team-b/db", None).await;
    assert_eq!(code, 403, "{v}");
    // The path is checked whatever the body says, dot segments and
    // percent-encoding resolved as the plugin would resolve them.
    let team_a_body = json!({"id": "/team-a/x"});
    for (method, path) in [
        (Method::PUT, "/v2/apps/team-b/db"),
        (Method::DELETE, "/v2/apps/team-b/db"),
        (Method::GET, "/v2/apps/team-b/db"),
        (Method::GET, "/v2/events"),
        (Method::PUT, "/v2/apps/team-a/../team-b/db"),
        (
            Method::PUT,
            "/frameworks/marathon/v2/apps/team-a/%2e%2e/team-b/db",
        ),
        (Method::POST, "/v2/apps/team-a/%2E%2E/team-b/db/restart"),
    ] {
        let (code, v) = a.send(method.clone(), path, Some(&team_a_body)).await;
        assert_eq!(code, 403, "{method} {path}: {v}");
    }
    let (code, v) = a.post("/v2/apps", &app("/team-a/../team-b/sneaky")).await;
    assert_eq!(code, 403, "{v}");
    let (code, apps) = c.api.get("/v2/apps").await;
    assert_eq!(code, 200);
    assert!(
        !apps.to_string().contains("sneaky"),
        "nothing was made outside the prefix: {apps}"
    );
    // Listings show what the prefix allows, and nothing else.
    let (code, apps) = a.get("/v2/apps").await;
    assert_eq!(code, 200, "{apps}");
    let ids: Vec<&str> = apps["apps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(ids, ["/team-a/web"], "{apps}");
    let (code, root) = a.get("/v2/groups").await;
    assert_eq!(code, 200, "{root}");
    assert!(
        root.to_string().contains("/team-a/web") && !root.to_string().contains("team-b"),
        "{root}"
    );
    let (code, info) = a.get("/v2/info").await;
    assert_eq!(code, 200, "{info}");
    let (code, v) = a.send(Method::DELETE, "/v2/apps/team-a/web", None).await;
    assert_eq!(code, 200, "{v}");
    // Variables: its prefix only, listing included.
    let (code, _) = a
        .put(
            "/api/wasmos/v1/vars/team-a/db",
            &json!({"items": {"url": "x"}}),
        )
        .await;
    assert_eq!(code, 200);
    let (code, _) = a
        .put(
            "/api/wasmos/v1/vars/team-b/db",
            &json!({"items": {"url": "x"}}),
        )
        .await;
    assert_eq!(code, 403);
    assert_eq!(a.get("/api/wasmos/v1/vars?prefix=team-a/").await.0, 200);
    // A wider listing shows only what the prefix allows.
    let (code, _) = c
        .api
        .put(
            "/api/wasmos/v1/vars/team-b/other",
            &json!({"items": {"url": "y"}}),
        )
        .await;
    assert_eq!(code, 200);
    for path in [
        "/api/wasmos/v1/vars",
        "/api/wasmos/v1/vars?prefix=team-a/&prefix=",
    ] {
        let (code, vars) = a.get(path).await;
        assert_eq!(code, 200, "{path}: {vars}");
        let paths: Vec<&str> = vars
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["path"].as_str())
            .collect();
        assert_eq!(paths, ["team-a/db"], "{path}: {vars}");
    }
    assert_eq!(
        a.get("/api/wasmos/v1/vars/team-a/%2e%2e/team-b/db").await.0,
        403
    );
    // Not its areas at all.
    assert_eq!(a.get("/api/wasmos/v1/plugins").await.0, 403);
    assert_eq!(a.get("/api/wasmos/v1/acl/users").await.0, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_expire_and_revoked_tokens_stop_working_at_once() {
    let c = Cluster::up().await;
    let make = |name: &str, expires: Option<f64>| {
        let api = c.api.clone();
        let name = name.to_string();
        async move {
            let (code, t) = api
                .post(
                    "/api/wasmos/v1/acl/tokens",
                    &json!({"name": name, "management": true, "expires_in_secs": expires}),
                )
                .await;
            assert_eq!(code, 201, "{t}");
            (
                t["accessor"].as_str().unwrap().to_string(),
                t["secret"].as_str().unwrap().to_string(),
            )
        }
    };
    // A token given as the password of a user's name (as Basic-only
    // clients do) logs in as the token, never as that user.
    wasmos_tests::user_with(&c.api, "boss", json!([{"area": "acl", "access": "write"}])).await;
    let (code, limited) = c
        .api
        .post(
            "/api/wasmos/v1/acl/tokens",
            &json!({"name": "limited", "policies": []}),
        )
        .await;
    assert_eq!(code, 201);
    let (code, session) = Api::anonymous(&c.up.url)
        .post(
            "/api/wasmos/v1/login",
            &json!({"user": "boss", "password": limited["secret"]}),
        )
        .await;
    assert_eq!(code, 200, "{session}");
    assert_eq!(session["principal"], "token:limited", "{session}");
    let as_session = Api::with_authorization(
        &c.up.url,
        &format!("Bearer {}", session["token"].as_str().unwrap()),
    );
    assert_eq!(as_session.get("/api/wasmos/v1/acl/users").await.0, 403);
    // Sessions are listed apart from tokens, with what they were made
    // from, never their secret.
    let (code, sessions) = c.api.get("/api/wasmos/v1/acl/tokens?sessions=true").await;
    assert_eq!(code, 200, "{sessions}");
    let limited_accessor = limited["accessor"].as_str().unwrap();
    let listed = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["session_of"] == format!("token:{limited_accessor}").as_str())
        .unwrap_or_else(|| panic!("the session is listed: {sessions}"));
    assert_eq!(listed["name"], "token:limited", "{listed}");
    assert!(
        !sessions
            .to_string()
            .contains(session["token"].as_str().unwrap()),
        "{sessions}"
    );
    let (_, tokens) = c.api.get("/api/wasmos/v1/acl/tokens").await;
    assert!(
        tokens
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["session"].is_null()),
        "the token list holds no session: {tokens}"
    );

    let (_, short) = make("short", Some(2.0)).await;
    let (accessor, revoked) = make("revoked", None).await;
    let short_api = Api::with_authorization(&c.up.url, &format!("Bearer {short}"));
    let revoked_api = Api::with_authorization(&c.up.url, &format!("token={revoked}"));
    assert_eq!(revoked_api.get("/api/wasmos/v1/cluster").await.0, 200);
    // The list shows the tokens, never a secret.
    let (_, list) = c.api.get("/api/wasmos/v1/acl/tokens").await;
    let text = list.to_string();
    assert!(text.contains(&accessor), "{text}");
    assert!(!text.contains(&revoked) && !text.contains(&short), "{text}");
    let (code, _) = c
        .api
        .send(
            Method::DELETE,
            &format!("/api/wasmos/v1/acl/tokens/{accessor}"),
            None,
        )
        .await;
    assert_eq!(code, 204);
    assert_eq!(revoked_api.get("/api/wasmos/v1/cluster").await.0, 401);
    // A session made from a token ends when the token is revoked: known
    // (403, it has no policy) before, unknown (401) after.
    assert_eq!(as_session.get("/api/wasmos/v1/cluster").await.0, 403);
    let (code, _) = c
        .api
        .send(
            Method::DELETE,
            &format!(
                "/api/wasmos/v1/acl/tokens/{}",
                limited["accessor"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(code, 204);
    assert_eq!(as_session.get("/api/wasmos/v1/cluster").await.0, 401);
    wait_for("the short token to expire", DEADLINE, || async {
        (short_api.get("/api/wasmos/v1/cluster").await.0 == 401).then_some(())
    })
    .await;
    // Bad input: named fields, nothing made.
    let (code, v) = c
        .api
        .post(
            "/api/wasmos/v1/acl/tokens",
            &json!({"name": "x", "policies": ["no-such-policy"]}),
        )
        .await;
    assert_eq!(code, 400);
    assert!(
        v["message"].as_str().unwrap().contains("no-such-policy"),
        "{v}"
    );
    let (code, v) = c
        .api
        .post(
            "/api/wasmos/v1/acl/tokens",
            &json!({"name": "x", "expires_in_secs": -1}),
        )
        .await;
    assert_eq!(code, 400, "{v}");
}

/// Secrets never reach the disk in the clear, nor a log: the state holds
/// a token's SHA-256 and a password's Argon2 hash; the audit trail names
/// who changed what.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_stored_hashed_and_changes_are_audited_with_their_principal() {
    let c = Cluster::up().await;
    let password =
        wasmos_tests::user_with(&c.api, "ops", json!([{"area": "vars", "access": "write"}])).await;
    let (code, t) = c
        .api
        .post(
            "/api/wasmos/v1/acl/tokens",
            &json!({"name": "ci", "policies": ["ops"]}),
        )
        .await;
    assert_eq!(code, 201);
    let secret = t["secret"].as_str().unwrap().to_string();
    let basic = {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("ops:{password}"))
        )
    };
    let ops = Api::with_authorization(&c.up.url, &basic);
    let (code, _) = ops
        .put("/api/wasmos/v1/vars/audited", &json!({"items": {"k": "v"}}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(ops.get("/api/wasmos/v1/plugins").await.0, 403);
    let audit = c.dir.path().join("data/master/audit.log");
    let lines = wait_for("the audit trail", DEADLINE, || async {
        let text = std::fs::read_to_string(&audit).ok()?;
        (text.contains("/vars/audited") && text.contains("/api/wasmos/v1/plugins")).then_some(text)
    })
    .await;
    let entries: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    assert!(
        entries.iter().any(|e| e["principal"] == "user:ops"
            && e["path"] == "/api/wasmos/v1/vars/audited"
            && e["method"] == "PUT"
            && e["status"] == 200),
        "{lines}"
    );
    assert!(
        entries.iter().any(|e| e["principal"] == "user:ops"
            && e["path"] == "/api/wasmos/v1/plugins"
            && e["status"] == 403),
        "{lines}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["principal"] == "token:management"
                && e["path"] == "/api/wasmos/v1/acl/tokens"),
        "{lines}"
    );
    // Neither secret is anywhere under the data dir, nor in up's log.
    let management = wasmos_tests::token_for(&c.up.url).unwrap();
    let mut found = Vec::new();
    for entry in walk(&c.dir.path().join("data")) {
        if entry.ends_with("token") || entry.ends_with("cli.json") {
            continue; // up's own token file, on purpose
        }
        let bytes = std::fs::read(&entry).unwrap_or_default();
        for s in [secret.as_str(), password.as_str(), management.as_str()] {
            if bytes.windows(s.len()).any(|w| w == s.as_bytes()) {
                found.push(format!("{} holds a secret", entry.display()));
            }
        }
    }
    let log = c.up.log();
    for s in [secret.as_str(), password.as_str()] {
        if log.contains(s) {
            found.push("up's log holds a secret".into());
        }
    }
    assert!(found.is_empty(), "{found:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.ends_with("plugin-cache") || p.ends_with("sandboxes") {
                continue;
            }
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A browser.py expression: fills the dashboard's login form as `viewer`
/// with `password` once it shows, then is `then` (where `q` is
/// `document.querySelector`).
fn sign_in(password: &str, then: &str) -> String {
    format!(
        "(() => {{ const q = (s) => document.querySelector(s); \
         if (!q('#login').hidden && !window.__tried) {{ window.__tried = 1; \
           q('#login-user').value = 'viewer'; q('#login-password').value = {password:?}; \
           q('#login-form').requestSubmit(); return false; }} \
         return {then}; }})()"
    )
}

/// The dashboard in headless Chromium: the login form, a user's password,
/// then the dashboard's data; logging out ends the session.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_logs_in_with_a_password_in_a_real_browser() {
    let c = Cluster::up().await;
    let password = wasmos_tests::user_with(
        &c.api,
        "viewer",
        json!(
            ["cluster", "tasks", "files", "jobs", "apps", "plugins"]
                .iter()
                .map(|a| json!({"area": a, "access": "read"}))
                .collect::<Vec<_>>()
        ),
    )
    .await;
    let page = format!("{}/", c.up.url);
    // Fills the form once it shows, then waits for the signed-in dashboard.
    let script = sign_in(
        &password,
        "q('#app').hidden === false && q('#whoami').textContent.includes('user:viewer') \
           && (q('#p-agents .figure') || {}).textContent === '1 active' \
           && q('#p-services').textContent.includes('Services') \
           && q('#nav a[data-page=masters]').hidden && !q('#nav a[data-page=services]').hidden",
    );
    let ca = c.ca();
    wasmos_tests::run_client_script(
        "browser.py",
        &[&page, &script, "--ca", ca.to_str().unwrap()],
        "true",
    )
    .await;
    // The login made a session: a token of the user's, listed nowhere.
    let (_, tokens) = c.api.get("/api/wasmos/v1/acl/tokens").await;
    assert!(
        !tokens.to_string().contains("user:viewer"),
        "sessions are not listed as tokens: {tokens}"
    );
    // A wrong password shows the error on the form and signs nobody in.
    let script = &sign_in(
        "wrong-password",
        "window.__tried === 1 && q('#login-msg').textContent.includes('wrong') && q('#app').hidden",
    );
    wasmos_tests::run_client_script(
        "browser.py",
        &[
            &page,
            script,
            "--ca",
            ca.to_str().unwrap(),
            "--expect-error",
            "HTTP 401 for",
        ],
        "true",
    )
    .await;
    // A session that ends mid-use (here: ended by its own logout, behind
    // the page's back) brings the login form back with a word on why; the
    // dashboard's calls get no Basic challenge, which would make a browser
    // open its own password dialog over the page.
    let login = sign_in(
        &password,
        "q('#app').hidden === false && q('#whoami').textContent.includes('user:viewer')",
    );
    let end = "(() => { if (!window.__ended) { window.__ended = 1; \
           if (stream) { stream.close(); stream = null; } \
           fetch(API + '/logout', { method: 'POST' }) \
             .then(() => fetch(API + '/cluster', { headers: { 'x-wasmos-dashboard': '1' } })) \
             .then((r) => { window.__status = r.status; window.__challenge = r.headers.get('www-authenticate'); refreshSoon(); }); \
           return false; } \
         return window.__status === 401 && window.__challenge === null; })()";
    let again = "(() => { const q = (s) => document.querySelector(s); \
         return !q('#login').hidden && q('#app').hidden && q('#login-msg').textContent.includes('session ended'); })()";
    wasmos_tests::run_client_script(
        "browser.py",
        &[
            &page,
            &login,
            "--then",
            end,
            "--then",
            again,
            "--ca",
            ca.to_str().unwrap(),
            "--expect-error",
            "HTTP 401 for",
        ],
        "true",
    )
    .await;
    // Other clients still get the challenge chronos-python waits for.
    let r = wasmos_tests::tls_client(&ca, None)
        .build()
        .unwrap()
        .get(format!("{}/api/wasmos/v1/cluster", c.up.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
}

/// A task that names no user runs as the agents' unprivileged task user;
/// root, or any user, only for a principal whose policy lists it.
#[tokio::test(flavor = "multi_thread")]
async fn tasks_run_unprivileged_and_root_needs_a_policy_that_allows_it() {
    let c = Cluster::up().await;
    // No user: not root (nobody), in the native containerizer and as
    // Marathon and Chronos would ask.
    let out = c.cli(&["task", "run", "--", "id", "-u"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .to_string();
    assert_eq!(out.stdout.trim(), nobody, "{out:?}");
    assert_ne!(out.stdout.trim(), "0");

    let rules = json!([{"area": "tasks", "access": "write"}, {"area": "apps", "access": "write"},
        {"area": "jobs", "access": "write"}, {"area": "cluster", "access": "read"}]);
    let password = wasmos_tests::user_with(&c.api, "dev", rules).await;
    let basic = {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("dev:{password}"))
        )
    };
    let dev = Api::with_authorization(&c.up.url, &basic);
    let before = c.api.get("/api/wasmos/v1/cluster").await.1["log_index"].clone();
    for (path, body) in [
        (
            "/frameworks/exec/tasks",
            json!({"cmd": "id -u", "user": "root", "cpus": 0.1, "mem": 16}),
        ),
        (
            "/v2/apps",
            json!({"id": "/as-root", "cmd": "sleep 60", "user": "root", "cpus": 0.1, "mem": 16}),
        ),
        (
            "/v2/groups",
            json!({"id": "/g", "apps": [{"id": "/g/a", "cmd": "sleep 60", "user": "daemon"}]}),
        ),
        (
            "/v1/scheduler/iso8601",
            json!({"name": "as-root", "command": "id", "runAsUser": "root",
                   "schedule": "R/2030-01-01T00:00:00Z/PT1H"}),
        ),
    ] {
        let (code, v) = dev.post(path, &body).await;
        assert_eq!(code, 403, "{path}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains("run_as"),
            "{path}: the reason names run_as: {v}"
        );
    }
    let after = c.api.get("/api/wasmos/v1/cluster").await.1["log_index"].clone();
    assert_eq!(before, after, "a refused submission changed the state");
    // Without a user, the same principal's task runs (unprivileged).
    let (code, v) = dev
        .post(
            "/frameworks/exec/tasks",
            &json!({"id": "dev-task", "cmd": "id -u", "cpus": 0.1, "mem": 16}),
        )
        .await;
    assert!(code < 300, "{v}");
    // A policy that lists root lets its holder run as root.
    let (code, _) = c
        .api
        .put(
            "/api/wasmos/v1/acl/policies/dev",
            &json!({"rules": [{"area": "tasks", "access": "write"}, {"area": "cluster", "access": "read"}],
                    "run_as": ["root"]}),
        )
        .await;
    assert_eq!(code, 200);
    let (code, v) = dev
        .post(
            "/frameworks/exec/tasks",
            &json!({"id": "root-task", "cmd": "id -u", "user": "root", "cpus": 0.1, "mem": 16}),
        )
        .await;
    assert!(code < 300, "{v}");
    c.api.wait_task_state("root-task", "TASK_FINISHED").await;
    let out = c.cli(&["task", "logs", "root-task"]).await;
    assert_eq!(out.stdout, "0\n", "{out:?}");
}

/// Runs `wasmos <args>` as a user on another machine would: its own home
/// (no saved login, no `wasmos up` data), no WASMOS_* variables, `stdin`
/// on standard input.
async fn cli_as_user(home: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(wasmos_tests::wasmos_bin())
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env_remove("WASMOS_TOKEN")
        .env_remove("WASMOS_CACERT")
        .env_remove("WASMOS_MASTER")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("wasmos ends")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `wasmos login` checks a user's password (or a token), saves it with the
/// master and CA (0600), and later commands use it; `wasmos acl` manages
/// tokens with the management token.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_logs_in_saves_its_credentials_and_manages_tokens() {
    let c = Cluster::up().await;
    let password = wasmos_tests::user_with(
        &c.api,
        "carol",
        json!([{"area": "tasks", "access": "read"}, {"area": "cluster", "access": "read"}]),
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let ca = c.ca();
    let ca = ca.to_str().unwrap();
    let url = c.up.url.as_str();

    // Nothing saved, no token: the master says what to do.
    let (ok, _, err) = cli_as_user(
        home.path(),
        &["--master", url, "--ca-cert", ca, "task", "list"],
        "",
    )
    .await;
    assert!(!ok);
    assert!(err.contains("401") && err.contains("wasmos login"), "{err}");
    // A wrong password: refused, nothing saved.
    let (ok, _, err) = cli_as_user(
        home.path(),
        &["--master", url, "--ca-cert", ca, "login", "--user", "carol"],
        "wrong-password\n",
    )
    .await;
    assert!(!ok, "{err}");
    let saved = home.path().join("config/wasmos/cli.json");
    assert!(!saved.exists());
    let (ok, _, err) = cli_as_user(
        home.path(),
        &["--master", url, "--ca-cert", ca, "login", "--user", "carol"],
        &format!("{password}\n"),
    )
    .await;
    assert!(ok, "{err}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&saved).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o077,
        0,
        "the saved login is readable by others: {mode:o}"
    );
    assert!(
        !std::fs::read_to_string(&saved).unwrap().contains(&password),
        "the password itself is not saved"
    );
    // Later commands need no flags at all.
    let (ok, out, err) = cli_as_user(home.path(), &["whoami"], "").await;
    assert!(ok, "{err}");
    assert!(out.starts_with("user:carol"), "{out}");
    let (ok, _, err) = cli_as_user(home.path(), &["task", "list"], "").await;
    assert!(ok, "{err}");
    let (ok, _, err) = cli_as_user(home.path(), &["acl", "token", "list"], "").await;
    assert!(!ok);
    assert!(err.contains("403") && err.contains("acl:read"), "{err}");

    // The management token, given once on standard input, manages tokens.
    let management = wasmos_tests::token_for(&c.up.url).unwrap();
    let (ok, _, err) = cli_as_user(
        home.path(),
        &["--master", url, "--ca-cert", ca, "login", "--token-stdin"],
        &format!("{management}\n"),
    )
    .await;
    assert!(ok, "{err}");
    let (ok, secret, err) = cli_as_user(
        home.path(),
        &[
            "acl", "token", "create", "--name", "reader", "--policy", "carol",
        ],
        "",
    )
    .await;
    assert!(ok, "{err}");
    let secret = secret.trim().to_string();
    assert_eq!(secret.len(), 64, "{secret}");
    let (ok, list, _) = cli_as_user(home.path(), &["acl", "token", "list"], "").await;
    assert!(
        ok && list.contains("reader") && !list.contains(&secret),
        "{list}"
    );
    // The new token works through WASMOS_TOKEN-style flags.
    let (ok, out, err) = cli_as_user(home.path(), &["--token", &secret, "whoami"], "").await;
    assert!(ok, "{err}");
    assert!(out.starts_with("token:reader"), "{out}");
}
