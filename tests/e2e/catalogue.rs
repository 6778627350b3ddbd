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
    assert_eq!(names, ["static-web"], "{found}");
    let out = c.cli(&["package", "describe", "static-web"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains("greeting (string) = \"Hello from Wasmos\""),
        "{out:?}"
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
}
