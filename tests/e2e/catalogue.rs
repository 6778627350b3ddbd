//! The package catalogue: a repository in Universe's source layout
//! (`examples/catalogue`), searched, described and installed with the
//! CLI as `dcos package` would, options checked against the package's
//! schema before anything changes, the app it makes serving what the
//! options said; Cosmos' media types and error body on the HTTP API.

use serde_json::{Value, json};
use wasmos_tests::{Cluster, DEADLINE, wait_for};

pub(crate) fn catalogue() -> String {
    let dir = wasmos_tests::root().join("examples/catalogue");
    format!("file://{}", dir.canonicalize().unwrap().display())
}

fn json_of(out: &wasmos_tests::Output) -> Value {
    assert_eq!(out.code, Some(0), "{out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// The example catalogue, pushed to a real OCI registry, is a
/// repository: a package installs from it with options that the app it
/// makes obeys (a greeting with quotes and markup arrives as written),
/// lists, refuses a second install and options its schema forbids, and
/// uninstalls.
#[tokio::test(flavor = "multi_thread")]
async fn a_package_installs_from_a_repository_in_an_oci_registry_with_checked_options_and_uninstalls()
 {
    let c = Cluster::up().await;
    let registry = wasmos_tests::Registry::start().await;
    let reference = format!("oci+http://{}/catalogue/examples:1", registry.addr);
    let dir = wasmos_tests::root().join("examples/catalogue");
    let out = c
        .cli(&["package", "repo", "push", dir.to_str().unwrap(), &reference])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("@sha256:"), "{out:?}");
    // A URI no repository can be at is refused, and nothing is added.
    let out = c
        .cli(&["package", "repo", "add", "bad", "ftp://example.com/repo"])
        .await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("https://"), "{out:?}");
    // A reference where the registry holds no index is refused.
    let missing = format!("oci+http://{}/catalogue/none:1", registry.addr);
    let out = c.cli(&["package", "repo", "add", "none", &missing]).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("cannot read the repository"), "{out:?}");
    let repos = json_of(
        &c.cli(&["package", "repo", "add", "examples", &reference, "--json"])
            .await,
    );
    assert_eq!(
        repos["repositories"],
        json!([{"name": "examples", "uri": reference}])
    );
    let out = c
        .cli(&["package", "repo", "add", "again", &reference])
        .await;
    assert!(out.stderr.contains("already present"), "{out:?}");

    let found = json_of(&c.cli(&["package", "search", "web", "--json"]).await);
    let names: Vec<&str> = found["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    // Selected packages first, as Cosmos orders them.
    assert_eq!(names, ["static-web", "greeter"], "{found}");
    let out = c.cli(&["package", "describe", "static-web"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains("greeting (string) = \"Hello from Wasmos\""),
        "{out:?}"
    );
    // In the order the package's schema lists them.
    let at = |k: &str| out.stdout.find(&format!("{k} (")).unwrap();
    assert!(
        at("name") < at("instances") && at("cpus") < at("mem") && at("mem") < at("greeting"),
        "options in the schema's order: {out:?}"
    );

    // Options the schema forbids: refused with each reason; nothing made.
    let bad = c.dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"service": {"instances": -1, "colour": "red"}}"#).unwrap();
    let out = c
        .cli(&[
            "package",
            "install",
            "static-web",
            "--options",
            bad.to_str().unwrap(),
        ])
        .await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("/service/instances"), "{out:?}");
    assert!(out.stderr.contains("colour"), "{out:?}");
    let (_, apps) = c.api.get("/v2/apps").await;
    assert_eq!(apps["apps"], json!([]), "nothing was installed: {apps}");

    let greeting = "Hi \"there\" <b>&</b> \\o/";
    let good = c.dir.path().join("good.json");
    std::fs::write(
        &good,
        json!({"service": {"name": "site", "greeting": greeting}}).to_string(),
    )
    .unwrap();
    let installed = json_of(
        &c.cli(&[
            "package",
            "install",
            "static-web",
            "--options",
            good.to_str().unwrap(),
            "--json",
        ])
        .await,
    );
    assert_eq!(installed["appId"], "/site", "{installed}");
    assert_eq!(installed["packageVersion"], "1.0.0");
    let app = wait_for("the package's app to run healthy", DEADLINE, || async {
        let (_, v) = c.api.get("/v2/apps/site?embed=app.tasks").await;
        (v["app"]["tasksHealthy"].as_u64() == Some(1)).then_some(v["app"].clone())
    })
    .await;
    assert_eq!(app["labels"]["DCOS_PACKAGE_NAME"], "static-web", "{app}");
    assert_eq!(app["labels"]["DCOS_PACKAGE_SOURCE"], reference.as_str());
    let port = app["tasks"][0]["ports"][0].as_u64().unwrap();
    let page = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        page.trim_end(),
        greeting,
        "the app serves the greeting as written"
    );

    let listed = json_of(&c.cli(&["package", "list", "--json"]).await);
    assert_eq!(listed["packages"][0]["appId"], "/site", "{listed}");
    assert_eq!(
        listed["packages"][0]["packageInformation"]["packageDefinition"]["name"],
        "static-web"
    );
    let out = c
        .cli(&[
            "package",
            "install",
            "static-web",
            "--options",
            good.to_str().unwrap(),
        ])
        .await;
    assert!(out.stderr.contains("already installed"), "{out:?}");

    let out = c.cli(&["package", "uninstall", "static-web"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    wait_for("the package's app to be gone", DEADLINE, || async {
        let (code, _) = c.api.get("/v2/apps/site").await;
        (code == 404).then_some(())
    })
    .await;
    let listed = json_of(&c.cli(&["package", "list", "--json"]).await);
    assert_eq!(listed["packages"], json!([]));
    let out = c.cli(&["package", "uninstall", "static-web"]).await;
    assert!(out.stderr.contains("not installed"), "{out:?}");
}

/// Packages that are a Chronos job, a plugin (the example health checks
/// in C and Python) or an app with the Rust plugin it needs, from the
/// example catalogue in a real OCI registry beside those plugins (signed
/// there): each installs with one command, lists with what it made,
/// works, and uninstalls whole; an install whose app is refused after its
/// plugin was made leaves nothing behind.
#[tokio::test(flavor = "multi_thread")]
async fn jobs_plugins_and_packages_of_several_parts_install_and_uninstall_whole() {
    let components = [
        (
            "health-check-c",
            wasmos_tests::example_component("health-check-c"),
            "plugins/health-tcp-c:0.1.0",
        ),
        (
            "health-check-python",
            wasmos_tests::example_component("health-check-python"),
            "plugins/health-tcp-py:0.1.0",
        ),
        (
            "health-check-template",
            wasmos_tests::test_plugin("wasmos_example_health_check.wasm"),
            "plugins/health-body:0.1.0",
        ),
    ];
    let c = Cluster::up().await;
    let registry = wasmos_tests::Registry::start().await;
    let root = wasmos_tests::root();
    for (dir, component, tag) in &components {
        let reference = registry.reference(tag);
        let dir = root.join("examples").join(dir);
        let push = c
            .cli(&[
                "plugin",
                "push",
                dir.to_str().unwrap(),
                &reference,
                "--component",
                component.to_str().unwrap(),
            ])
            .await;
        assert_eq!(push.code, Some(0), "{push:?}");
        let sign = c.cli(&["plugin", "sign", &reference]).await;
        assert_eq!(sign.code, Some(0), "{sign:?}");
    }
    let reference = registry.reference("catalogue/examples:1");
    let dir = root.join("examples/catalogue");
    let out = c
        .cli(&["package", "repo", "push", dir.to_str().unwrap(), &reference])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = c
        .cli(&["package", "repo", "add", "examples", &reference])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let plugin = |name: &'static str| {
        let c = &c;
        async move { c.api.get(&format!("/api/wasmos/v1/plugins/{name}")).await }
    };

    // greeter's app is refused (Marathon takes no capitals in an id) after
    // its plugin was made: the plugin goes again, nothing is recorded.
    let out = c
        .cli(&["package", "install", "greeter", "--app-id", "/Not_An_Id"])
        .await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("Marathon"), "{out:?}");
    assert_eq!(plugin("health-body").await.0, 404);
    let listed = json_of(&c.cli(&["package", "list", "--json"]).await);
    assert_eq!(listed["packages"], json!([]), "{listed}");

    // Plugins in C and Python: one command each, pulled from the
    // package's own registry, pinned and signed.
    for name in ["health-tcp-c", "health-tcp-py"] {
        // The master compiles the 18 MB Python component before it
        // answers, on a machine busy with the rest of the suite.
        let out = wasmos_tests::cli_within(
            &c.up.url,
            &["package", "install", name],
            std::time::Duration::from_secs(300),
        )
        .await;
        assert_eq!(out.code, Some(0), "{out:?}");
        assert!(
            out.stderr.contains(&format!(
                "plugin {}",
                registry.reference(&format!("plugins/{name}:0.1.0"))
            )),
            "progress names what it installs: {out:?}"
        );
        let (code, v) = plugin(name).await;
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["kind"], "health-check", "{v}");
        assert_eq!(v["signed_by"], "bootstrap", "{v}");
        assert!(
            v["source"]
                .as_str()
                .unwrap()
                .starts_with(&registry.reference(&format!("plugins/{name}:0.1.0@sha256:"))),
            "{v}"
        );
    }
    let out = c.cli(&["package", "install", "health-tcp-c"]).await;
    assert!(out.stderr.contains("already installed"), "{out:?}");

    // An app and the Rust plugin that checks it, together.
    let greeting = "Hi from the catalogue";
    let options = c.dir.path().join("greeter.json");
    std::fs::write(
        &options,
        json!({"service": {"greeting": greeting}}).to_string(),
    )
    .unwrap();
    let installed = json_of(
        &c.cli(&[
            "package",
            "install",
            "greeter",
            "--options",
            options.to_str().unwrap(),
            "--json",
        ])
        .await,
    );
    assert_eq!(installed["appId"], "/greeter", "{installed}");
    assert_eq!(installed["plugins"], json!(["health-body"]), "{installed}");
    let app = wait_for(
        "greeter's app to be healthy by its plugin",
        DEADLINE,
        || async {
            let (_, v) = c.api.get("/v2/apps/greeter?embed=app.tasks").await;
            (v["app"]["tasksHealthy"].as_u64() == Some(1)).then_some(v["app"].clone())
        },
    )
    .await;
    assert_eq!(app["healthChecks"][0]["plugin"], "health-body", "{app}");
    let task_id = app["tasks"][0]["id"].as_str().unwrap().to_string();
    let (_, task) = c.api.get(&format!("/api/wasmos/v1/tasks/{task_id}")).await;
    assert_eq!(task["status"]["message"], "body as expected", "{task}");

    // A periodic job that does its work on its schedule (its first run is
    // at once): files older than a week go, newer ones stay. Tasks have
    // their own /tmp, so the directory is elsewhere.
    let work = tempfile::Builder::new()
        .prefix("wasmos-reaper-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let (old, new) = (work.path().join("old.log"), work.path().join("new.log"));
    std::fs::write(&old, "old").unwrap();
    std::fs::write(&new, "new").unwrap();
    let touched = std::process::Command::new("touch")
        .args(["-d", "10 days ago"])
        .arg(&old)
        .status()
        .unwrap();
    assert!(touched.success());
    // Tasks run as an unprivileged user.
    let status = std::process::Command::new("chmod")
        .arg("0777")
        .arg(work.path())
        .status()
        .unwrap();
    assert!(status.success());
    let options = c.dir.path().join("reaper.json");
    std::fs::write(
        &options,
        json!({"job": {"name": "reaper"}, "reap": {"directory": work.path(), "days": 7}})
            .to_string(),
    )
    .unwrap();
    let out = c
        .cli(&[
            "package",
            "install",
            "tmp-reaper",
            "--options",
            options.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("job reaper"), "{out:?}");
    wait_for(
        "the job's first run to reap the old file",
        DEADLINE,
        || async { (!old.exists()).then_some(()) },
    )
    .await;
    assert!(new.exists(), "a file newer than the limit stays");
    let (code, job) = c.api.get("/v1/scheduler/job/reaper").await;
    assert_eq!(code, 200, "{job}");
    assert!(
        job["command"].as_str().unwrap().contains("-mtime +7"),
        "{job}"
    );

    // Each install lists with what it made.
    let listed = json_of(&c.cli(&["package", "list", "--json"]).await);
    let made: Vec<(String, Value)> = listed["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["appId"].as_str().unwrap().to_string(), p["parts"].clone()))
        .collect();
    assert_eq!(
        made,
        vec![
            (
                "/greeter".to_string(),
                json!({"app": "/greeter", "job": null, "plugins": ["health-body"]})
            ),
            (
                "/health-tcp-c".to_string(),
                json!({"app": null, "job": null, "plugins": ["health-tcp-c"]})
            ),
            (
                "/health-tcp-py".to_string(),
                json!({"app": null, "job": null, "plugins": ["health-tcp-py"]})
            ),
            (
                "/tmp-reaper".to_string(),
                json!({"app": null, "job": "reaper", "plugins": []})
            ),
        ],
        "{listed}"
    );

    // Uninstalling removes everything each made.
    for name in ["greeter", "tmp-reaper", "health-tcp-c", "health-tcp-py"] {
        let out = c.cli(&["package", "uninstall", name]).await;
        assert_eq!(out.code, Some(0), "{name}: {out:?}");
    }
    wait_for("greeter's app to be gone", DEADLINE, || async {
        (c.api.get("/v2/apps/greeter").await.0 == 404).then_some(())
    })
    .await;
    for name in ["health-body", "health-tcp-c", "health-tcp-py"] {
        assert_eq!(plugin(name).await.0, 404, "{name} is removed");
    }
    let (code, v) = c.api.get("/v1/scheduler/job/reaper").await;
    assert_eq!(code, 400, "Chronos' not found: {v}");
    let listed = json_of(&c.cli(&["package", "list", "--json"]).await);
    assert_eq!(listed["packages"], json!([]), "{listed}");
}

/// The HTTP API speaks Cosmos: the versioned media types it is asked
/// for, describe v3 and v2, and its error envelope.
#[tokio::test(flavor = "multi_thread")]
async fn the_package_api_answers_with_cosmos_media_types_and_errors() {
    let c = Cluster::up().await;
    let http = wasmos_tests::client_for(&c.up.url).build().unwrap();
    let call = |op: &str, accept: &str, body: Value| {
        http.post(format!("{}/package/{op}", c.up.url))
            .header(
                "content-type",
                format!("application/vnd.dcos.package.{op}-request+json;charset=utf-8;version=v1"),
            )
            .header("accept", accept.to_string())
            .body(body.to_string())
            .send()
    };
    let r = call(
        "repository/add",
        "application/vnd.dcos.package.repository.add-response+json;charset=utf-8;version=v1",
        json!({"name": "examples", "uri": catalogue()}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.dcos.package.repository.add-response+json;charset=utf-8;version=v1"
    );
    for (version, nested) in [("v3", true), ("v2", false)] {
        let r = call(
            "describe",
            &format!("application/vnd.dcos.package.describe-response+json;charset=utf-8;version={version}"),
            json!({"packageName": "static-web"}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .ends_with(&format!("version={version}")),
            "{:?}",
            r.headers()
        );
        let v: Value = r.json().await.unwrap();
        let p = if nested { &v["package"] } else { &v };
        assert_eq!(p["name"], "static-web", "{v}");
        assert_eq!(p["releaseVersion"], 0);
        assert!(p["marathon"]["v2AppMustacheTemplate"].is_string());
    }
    let r = call(
        "describe",
        "application/json",
        json!({"packageName": "nope"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.dcos.package.error+json;charset=utf-8;version=v1"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "PackageNotFound", "{v}");
    assert_eq!(v["data"]["packageName"], "nope");
    let r = call(
        "render",
        "application/json",
        json!({"packageName": "static-web", "options": {"service": {"mem": 1}}}),
    )
    .await
    .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "JsonSchemaMismatch", "{v}");
    assert_eq!(v["data"]["errors"][0]["path"], "/service/mem", "{v}");
    let r = call(
        "render",
        "application/json",
        json!({"packageName": "static-web", "appId": "/team/web"}),
    )
    .await
    .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["marathonJson"]["id"], "/team/web", "{v}");
    assert_eq!(v["marathonJson"]["env"]["GREETING"], "Hello from Wasmos");
    let r = call("search", "application/json", json!({"query": "stat*"}))
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["packages"][0]["name"], "static-web", "{v}");
    assert_eq!(v["packages"][0]["versions"], json!({"1.0.0": "0"}));
}

/// The dashboard's Catalogue page installs a package with a form made
/// from its options' schema: a value the schema forbids is shown by its
/// field and installs nothing; then the app runs with what the form said.
#[tokio::test(flavor = "multi_thread")]
async fn the_catalogue_page_installs_a_package_with_a_form_made_from_its_schema() {
    use crate::dashboard::{browse, step};
    let c = Cluster::up().await;
    let (code, v) = c
        .api
        .post(
            "/package/repository/add",
            &json!({"name": "examples", "uri": catalogue()}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    browse(
        &c,
        "catalogue/static-web",
        &[
            step(
                "const n = q('[data-opt=\"/service/instances\"]'); if (!n) return false; \
                 n.value = '-1'; q('[data-opt=\"/service/greeting\"]').value = 'from the form'; \
                 q('[data-opt=\"/service/name\"]').value = 'formed'; q('#pkg-install').click(); return true;",
            ),
            step("return t('[data-error-for=\"/service/instances\"]').length > 0 && t('#pkg-errors').includes('JSON');"),
            step(
                "q('[data-opt=\"/service/instances\"]').value = '1'; q('#pkg-install').click(); return true;",
            ),
            step("return location.hash === '#/services/%2Fformed';"),
        ],
        false,
        "catalogue-install",
        &["HTTP 400 for"],
    )
    .await;
    let (code, app) = c.api.get("/v2/apps/formed").await;
    assert_eq!(code, 200, "{app}");
    assert_eq!(app["app"]["env"]["GREETING"], "from the form", "{app}");
    assert_eq!(app["app"]["instances"], 1);
    assert_eq!(app["app"]["labels"]["DCOS_PACKAGE_NAME"], "static-web");

    // A job's package: its form installs the job, and the page goes to it.
    browse(
        &c,
        "catalogue/tmp-reaper",
        &[
            step(
                "const n = q('[data-opt=\"/job/name\"]'); if (!n) return false; n.value = 'from-form'; \
                 q('[data-opt=\"/job/schedule\"]').value = 'R/2099-01-01T00:00:00Z/P1D'; \
                 q('[data-opt=\"/reap/directory\"]').value = '/var/tmp/nothing-here'; q('#pkg-install').click(); return true;",
            ),
            step("return location.hash === '#/jobs/from-form' && t('main').includes('R/2099-01-01');"),
        ],
        false,
        "catalogue-install-job",
        &[],
    )
    .await;
    let (code, job) = c.api.get("/v1/scheduler/job/from-form").await;
    assert_eq!(code, 200, "{job}");
    assert_eq!(job["schedule"], "R/2099-01-01T00:00:00.000Z/P1D", "{job}");
}
