//! The package catalogue: Universe's idea, with the subset of Cosmos' API
//! that `dcos package` and the DC/OS UI use (`/package/search`,
//! `describe`, `list-versions`, `render`, `install`, `uninstall`, `list`,
//! `/package/repository/list|add|delete`, `/capabilities`), their media
//! types and error body.
//!
//! A repository is a Universe index (`{"packages": [...]}`, v3/v4/v5) at
//! an `https://` URL, in a file (`file:///path/repo.json`) or in an OCI
//! registry (`oci://registry/repo:tag`, pushed by `wasmos package repo
//! push`), or a
//! directory in Universe's source layout (`file:///dir` holding
//! `packages/<L>/<name>/<release>/package.json`, `config.json`,
//! `marathon.json.mustache`, `resource.json`, and Wasmos'
//! `chronos.json.mustache` and `plugins.json.mustache`).
//!
//! A package makes any of a Marathon app (Universe's
//! `marathon.v2AppMustacheTemplate`), a Chronos job
//! (`chronos.v1JobMustacheTemplate`) and plugins
//! (`plugins.v1PluginsMustacheTemplate`: a list of `{"from": REFERENCE,
//! "config": {...}}`, a reference naming no registry being in the
//! package's own OCI registry). Its templates are rendered as Cosmos
//! renders the Marathon one (config defaults, then the user's options,
//! validated against the config's JSON schema, then `resource`; strings
//! JSON-escaped, no HTML escaping). An install is recorded in the
//! replicated state before its parts are made — plugins (pulled, signed,
//! checked), then the job and the app through the chronos and marathon
//! plugins with the caller's rights — and removed whole if one fails; the
//! app is labelled `DCOS_PACKAGE_*` as Cosmos labels it, and an app so
//! labelled by someone else lists as an install too.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Map, Value, json};
use wasmos_state::acl::{Access, Area};
use wasmos_state::{Command, PackageInstall, PackageRepo, PluginRecord, Response as StateResponse};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::Lead;
use crate::leader::Leader;
use crate::node::Node;
use crate::plugins::InstallRequest;

/// A Cosmos error: its type (Cosmos' class name), message, status, data.
#[derive(Debug)]
pub struct CosmosError {
    pub kind: &'static str,
    pub message: String,
    pub status: StatusCode,
    pub data: Option<Value>,
}

fn error(kind: &'static str, message: impl Into<String>) -> CosmosError {
    CosmosError {
        kind,
        message: message.into(),
        status: StatusCode::BAD_REQUEST,
        data: None,
    }
}

impl CosmosError {
    fn status(mut self, s: StatusCode) -> Self {
        self.status = s;
        self
    }
    fn data(mut self, d: Value) -> Self {
        self.data = Some(d);
        self
    }
}

const ERROR_TYPE: &str = "application/vnd.dcos.package.error+json;charset=utf-8;version=v1";

impl IntoResponse for CosmosError {
    fn into_response(self) -> Response {
        let mut body = json!({ "type": self.kind, "message": self.message });
        if let Some(d) = self.data {
            body["data"] = d;
        }
        typed(self.status, ERROR_TYPE, &body)
    }
}

fn typed(status: StatusCode, content_type: &str, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// Cosmos' response media type for `<namespace>.<kind>`, at `version`.
fn media(kind: &str, version: &str) -> String {
    format!("application/vnd.dcos.{kind}-response+json;charset=utf-8;version={version}")
}

type CResult<T> = Result<T, CosmosError>;

pub fn routes() -> Router<Arc<Node>> {
    let mut r = Router::new().route("/capabilities", get(capabilities));
    for op in [
        "search",
        "describe",
        "list-versions",
        "render",
        "install",
        "uninstall",
        "list",
        "repository/list",
        "repository/add",
        "repository/delete",
    ] {
        r = r.route(&format!("/package/{op}"), post(dispatch));
    }
    r
}

async fn capabilities() -> Response {
    typed(
        StatusCode::OK,
        "application/vnd.dcos.capabilities+json;charset=utf-8;version=v1",
        &json!({"capabilities": [{"name": "PACKAGE_MANAGEMENT"}]}),
    )
}

/// What the caller's `Accept` asks of `kind`: the highest version of
/// those we answer that it lists, or our default when it names none.
fn version(headers: &HeaderMap, kind: &str, ours: &[&'static str]) -> CResult<&'static str> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let wanted = format!("application/vnd.dcos.{kind}-response+json");
    if !accept.contains("application/vnd.dcos.") {
        return Ok(ours[0]);
    }
    for v in ours {
        if accept.split(',').any(|m| {
            let m = m.trim();
            m.starts_with(&wanted) && m.contains(&format!("version={v}"))
        }) {
            return Ok(v);
        }
    }
    Err(error(
        "NotAcceptable",
        format!("Accept lists no version of {wanted} this server answers ({ours:?})"),
    )
    .status(StatusCode::NOT_ACCEPTABLE))
}

async fn dispatch(
    Lead(l): Lead,
    principal: Option<axum::Extension<Principal>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let op = uri.path().trim_start_matches("/package/").replace('/', ".");
    let p = principal.map(|axum::Extension(p)| p);
    let leader = l.clone();
    match serve(&leader, Lead(l), p.as_ref(), &op, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The request's JSON object (`{}` for an empty body).
fn request(body: &[u8]) -> CResult<Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(error(
            "MalformedRequest",
            "the request body must be a JSON object",
        )),
        Err(e) => Err(error(
            "MalformedRequest",
            format!("the request body is not JSON: {e}"),
        )),
    }
}

fn string(req: &Map<String, Value>, key: &str) -> CResult<Option<String>> {
    match req.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(error(
            "MalformedRequest",
            format!("{key} must be a string, not {other}"),
        )),
    }
}

fn required(req: &Map<String, Value>, key: &str) -> CResult<String> {
    string(req, key)?.ok_or_else(|| error("MalformedRequest", format!("{key} is required")))
}

async fn serve(
    n: &Leader,
    lead: Lead,
    p: Option<&Principal>,
    op: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> CResult<Response> {
    let req = request(body)?;
    let ns = format!("package.{op}");
    let ok = |version: &str, v: Value| typed(StatusCode::OK, &media(&ns, version), &v);
    match op {
        "repository.list" => {
            let v = version(headers, &ns, &["v1"])?;
            Ok(ok(v, json!({ "repositories": repos(n) })))
        }
        "repository.add" => {
            let v = version(headers, &ns, &["v1"])?;
            let name = required(&req, "name")?;
            let uri = required(&req, "uri")?;
            let index = match req.get("index") {
                None | Some(Value::Null) => None,
                Some(i) => Some(i.as_u64().map(|i| i as usize).ok_or_else(|| {
                    error(
                        "MalformedRequest",
                        format!("index must be a whole number, not {i}"),
                    )
                })?),
            };
            check_uri(&uri)?;
            if name.trim().is_empty() {
                return Err(error("MalformedRequest", "name must not be empty"));
            }
            // The repository must answer with an index before it is added.
            fetch(n, &uri).await?;
            let count = n.store.read(|s| s.package_repos.len());
            if index.is_some_and(|i| i > count) {
                return Err(error(
                    "RepositoryAddIndexOutOfBounds",
                    format!(
                        "index {} is past the end of the list ({count} repositories)",
                        index.unwrap_or(0)
                    ),
                )
                .data(json!({"attempted": index, "max": count})));
            }
            let repo = PackageRepo {
                name: name.clone(),
                uri: uri.clone(),
            };
            match propose(&lead, Command::PackageRepoAdd { repo, index }).await? {
                StateResponse::Ok => Ok(ok(v, json!({ "repositories": repos(n) }))),
                StateResponse::Rejected { reason } => {
                    Err(error("RepositoryAlreadyPresent", reason)
                        .data(json!({"name": name, "uri": uri})))
                }
                other => Err(internal(other)),
            }
        }
        "repository.delete" => {
            let v = version(headers, &ns, &["v1"])?;
            let name = string(&req, "name")?;
            let uri = string(&req, "uri")?;
            if name.is_none() && uri.is_none() {
                return Err(error("RepoNameOrUriMissing", "name or uri is required"));
            }
            match propose(
                &lead,
                Command::PackageRepoDelete {
                    name: name.clone(),
                    uri: uri.clone(),
                },
            )
            .await?
            {
                StateResponse::Ok => Ok(ok(v, json!({ "repositories": repos(n) }))),
                StateResponse::Rejected { .. } => Err(error(
                    "RepositoryNotPresent",
                    format!(
                        "no repository named {} or at {}",
                        name.as_deref().unwrap_or("-"),
                        uri.as_deref().unwrap_or("-")
                    ),
                )
                .data(json!({"name": name, "uri": uri}))),
                other => Err(internal(other)),
            }
        }
        "search" => {
            let v = version(headers, &ns, &["v1"])?;
            let query = string(&req, "query")?.unwrap_or_default();
            let all = catalogue(n).await?;
            Ok(ok(v, json!({ "packages": search(&all, &query) })))
        }
        "describe" => {
            let v = version(headers, &ns, &["v3", "v2"])?;
            let (pkg, _) = resolve(n, &req).await?;
            Ok(ok(
                v,
                if v == "v3" {
                    json!({ "package": pkg })
                } else {
                    pkg
                },
            ))
        }
        "list-versions" => {
            let v = version(headers, &ns, &["v1"])?;
            let name = required(&req, "packageName")?;
            let all = catalogue(n).await?;
            let results: Map<String, Value> = all
                .iter()
                .filter(|e| e.name() == name)
                .map(|e| (e.version().to_string(), json!(e.release().to_string())))
                .collect();
            if results.is_empty() {
                return Err(not_found(&name));
            }
            Ok(ok(v, json!({ "results": results })))
        }
        "render" => {
            let v = version(headers, &ns, &["v1"])?;
            let (_, _, parts) = rendered(n, &req).await?;
            Ok(ok(v, parts.to_json()))
        }
        "install" => {
            let v = version(headers, &ns, &["v2", "v1"])?;
            let (pkg, source, parts) = rendered(n, &req).await?;
            let mut out =
                install(n, &lead, p, &pkg, &source, parts, string(&req, "appId")?).await?;
            if v == "v2"
                && let Some(notes) = pkg.get("postInstallNotes")
            {
                out["postInstallNotes"] = notes.clone();
            }
            Ok(ok(v, out))
        }
        "list" => {
            let v = version(headers, &ns, &["v1"])?;
            let name = string(&req, "packageName")?;
            let app_id = string(&req, "appId")?.map(|a| canonical(&a));
            let mut out: Vec<Value> = installs(n, &lead, p)
                .await?
                .iter()
                .filter(|i| name.as_deref().is_none_or(|n| n == i.name))
                .filter(|i| app_id.as_deref().is_none_or(|a| a == i.id))
                .map(Install::to_json)
                .collect();
            out.sort_by(|a, b| {
                let k = |x: &Value| {
                    (
                        x["packageInformation"]["packageDefinition"]["name"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                        x["appId"].as_str().unwrap_or("").to_string(),
                    )
                };
                k(a).cmp(&k(b))
            });
            Ok(ok(v, json!({ "packages": out })))
        }
        "uninstall" => {
            let v = version(headers, &ns, &["v1"])?;
            let name = required(&req, "packageName")?;
            let app_id = string(&req, "appId")?;
            let all = req.get("all").and_then(Value::as_bool).unwrap_or(false);
            let of_name: Vec<Install> = installs(n, &lead, p)
                .await?
                .into_iter()
                .filter(|i| i.name == name)
                .collect();
            let ids: Vec<String> = of_name.iter().map(|i| i.id.clone()).collect();
            let targets: Vec<Install> = match &app_id {
                Some(id) => {
                    let id = canonical(id);
                    let Some(i) = of_name.into_iter().find(|i| i.id == id) else {
                        return Err(error(
                            "UninstallNonExistentAppForPackage",
                            format!("{name} is not installed as {id}"),
                        )
                        .data(json!({"packageName": name, "appId": id})));
                    };
                    vec![i]
                }
                None if of_name.is_empty() => {
                    return Err(
                        error("PackageNotInstalled", format!("{name} is not installed"))
                            .data(json!({"packageName": name})),
                    );
                }
                None if of_name.len() > 1 && !all => {
                    return Err(error(
                        "AmbiguousAppId",
                        format!(
                            "{name} is installed as {}: name one with appId, or uninstall all",
                            ids.join(", ")
                        ),
                    )
                    .data(json!({"packageName": name, "appIds": ids})));
                }
                None => of_name,
            };
            let mut results = Vec::new();
            for i in targets {
                remove_parts(n, &lead, p, &i.parts).await?;
                if i.recorded {
                    match propose(&lead, Command::PackageUninstalled { id: i.id.clone() }).await? {
                        StateResponse::Ok | StateResponse::Rejected { .. } => {}
                        other => return Err(internal(other)),
                    }
                }
                results.push(json!({"packageName": name, "appId": i.id}));
            }
            Ok(ok(v, json!({ "results": results })))
        }
        other => {
            Err(error("NotFound", format!("no /package/{other}")).status(StatusCode::NOT_FOUND))
        }
    }
}

/// The package a request names, its repository, and what it makes with
/// the request's options and `appId`.
async fn rendered(n: &Leader, req: &Map<String, Value>) -> CResult<(Value, String, Rendered)> {
    let (pkg, source) = resolve(n, req).await?;
    let parts = render(
        &pkg,
        &source,
        req.get("options"),
        string(req, "appId")?.as_deref(),
    )?;
    Ok((pkg, source, parts))
}

fn internal(r: StateResponse) -> CosmosError {
    error(
        "InternalError",
        format!("unexpected answer from the state: {r:?}"),
    )
    .status(StatusCode::INTERNAL_SERVER_ERROR)
}

async fn propose(lead: &Lead, cmd: Command) -> CResult<StateResponse> {
    lead.0.store.propose_one(cmd).await.map_err(|e| {
        error(
            "ServiceUnavailable",
            format!("the change was not committed: {e}; try again"),
        )
        .status(StatusCode::SERVICE_UNAVAILABLE)
    })
}

fn repos(n: &Leader) -> Vec<Value> {
    n.store.read(|s| {
        s.package_repos
            .iter()
            .map(|r| json!({"name": r.name, "uri": r.uri}))
            .collect()
    })
}

fn check_uri(uri: &str) -> CResult<()> {
    if ["https://", "http://", "file:///", "oci://", "oci+http://"]
        .iter()
        .any(|p| uri.starts_with(p))
    {
        Ok(())
    } else {
        Err(error(
            "UnsupportedRepositoryUri",
            format!(
                "{uri}: a repository is at an https://, http://, file:/// or oci:// (oci+http:// for a registry without TLS) URI"
            ),
        ))
    }
}

fn canonical(id: &str) -> String {
    format!("/{}", id.trim_matches('/'))
}

fn not_found(name: &str) -> CosmosError {
    error(
        "PackageNotFound",
        format!("no package named {name} in any repository"),
    )
    .data(json!({"packageName": name}))
}

// ---- repositories -------------------------------------------------------------

/// One package of one repository, with where it came from.
#[derive(Debug, Clone)]
pub struct Entry {
    pub repo_index: usize,
    pub source: String,
    pub package: Value,
}

impl Entry {
    fn name(&self) -> &str {
        self.package["name"].as_str().unwrap_or("")
    }
    fn version(&self) -> &str {
        self.package["version"].as_str().unwrap_or("")
    }
    fn release(&self) -> u64 {
        release_of(&self.package)
    }
}

fn release_of(p: &Value) -> u64 {
    match &p["releaseVersion"] {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

/// Every package of every repository, merged as Cosmos does: by name,
/// then repository order, then release (newest first); a (name, version)
/// seen in an earlier repository hides later ones.
async fn catalogue(n: &Leader) -> CResult<Vec<Entry>> {
    let repos = n.store.read(|s| s.package_repos.clone());
    let mut out: Vec<Entry> = Vec::new();
    for (i, r) in repos.iter().enumerate() {
        for p in n.indexes.get(n, &r.uri).await?.iter().cloned() {
            let e = Entry {
                repo_index: i,
                source: r.uri.clone(),
                package: p,
            };
            if !out
                .iter()
                .any(|x| x.name() == e.name() && x.version() == e.version())
            {
                out.push(e);
            }
        }
    }
    out.sort_by(|a, b| {
        (a.name(), a.repo_index, std::cmp::Reverse(a.release())).cmp(&(
            b.name(),
            b.repo_index,
            std::cmp::Reverse(b.release()),
        ))
    });
    Ok(out)
}

/// How long a repository's index is used before it is read again (the
/// dashboard's Catalogue page asks on every refresh; an install renders,
/// then installs).
const INDEX_TTL: std::time::Duration = std::time::Duration::from_secs(15);

/// An index as read at an instant.
type ReadIndex = (std::time::Instant, Arc<Vec<Value>>);

/// Indexes read lately, by URI.
#[derive(Debug, Default)]
pub struct IndexCache {
    read: std::sync::Mutex<std::collections::HashMap<String, ReadIndex>>,
}

impl IndexCache {
    /// The packages of the index at `uri`, read again when older than
    /// [`INDEX_TTL`].
    async fn get(&self, n: &Leader, uri: &str) -> CResult<Arc<Vec<Value>>> {
        let lock = || self.read.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, packages)) = lock().get(uri)
            && at.elapsed() < INDEX_TTL
        {
            return Ok(packages.clone());
        }
        let packages = Arc::new(fetch(n, uri).await?);
        lock().insert(
            uri.to_string(),
            (std::time::Instant::now(), packages.clone()),
        );
        Ok(packages)
    }
}

/// The packages of the index at `uri`.
async fn fetch(n: &Leader, uri: &str) -> CResult<Vec<Value>> {
    let unreachable = |why: String| {
        error(
            "RepositoryUriConnection",
            format!("cannot read the repository at {uri}: {why}"),
        )
    };
    let index: Value = if let Some(path) = uri.strip_prefix("file://") {
        let path = std::path::Path::new(path);
        if path.is_dir() {
            return source_layout(path).map_err(unreachable);
        }
        let text = tokio::fs::read(path)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        serde_json::from_slice(&text).map_err(|e| {
            error(
                "IndexNotFound",
                format!("{uri} is not a repository index: {e}"),
            )
        })?
    } else if uri.starts_with("oci://") || uri.starts_with("oci+http://") {
        let r: wasmos_oci::Reference = uri
            .parse()
            .map_err(|e: wasmos_oci::OciError| error("UnsupportedRepositoryUri", e.to_string()))?;
        let (bytes, _) = wasmos_oci::pull_index(&n.registry, &r)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            error(
                "IndexNotFound",
                format!("{uri} is not a repository index: {e}"),
            )
        })?
    } else {
        let r = n
            .registry
            .get(uri)
            .header(
                header::ACCEPT,
                "application/vnd.dcos.universe.repo+json;charset=utf-8;version=v5,\
                 application/vnd.dcos.universe.repo+json;charset=utf-8;version=v4,\
                 application/vnd.dcos.universe.repo+json;charset=utf-8;version=v3,\
                 application/json",
            )
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if !r.status().is_success() {
            return Err(unreachable(format!("HTTP {}", r.status())));
        }
        r.json().await.map_err(|e| {
            error(
                "IndexNotFound",
                format!("{uri} is not a repository index: {e}"),
            )
        })?
    };
    let Some(packages) = index["packages"].as_array() else {
        return Err(error(
            "IndexNotFound",
            format!("{uri} is not a repository index (no \"packages\" list)"),
        ));
    };
    Ok(packages.clone())
}

/// The template files of the source layout and where an index holds
/// them (base64): Universe's Marathon app, and Wasmos' Chronos job and
/// plugins.
const TEMPLATES: [(&str, &str, &str); 3] = [
    (
        "marathon.json.mustache",
        "marathon",
        "v2AppMustacheTemplate",
    ),
    ("chronos.json.mustache", "chronos", "v1JobMustacheTemplate"),
    (
        "plugins.json.mustache",
        "plugins",
        "v1PluginsMustacheTemplate",
    ),
];

/// Universe's source layout: `packages/<L>/<name>/<release>/` with
/// `package.json` and the optional `config.json`, `resource.json` and
/// templates ([`TEMPLATES`]), made into index entries as Universe's
/// build does.
pub fn source_layout(dir: &std::path::Path) -> Result<Vec<Value>, String> {
    let root = dir.join("packages");
    let read_dir = |p: &std::path::Path| -> Result<Vec<std::path::PathBuf>, String> {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .map_err(|e| format!("{}: {e}", p.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        v.sort();
        Ok(v)
    };
    let json_file = |p: std::path::PathBuf| -> Result<Option<Value>, String> {
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| format!("{}: {e}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", p.display())),
        }
    };
    let mut out = Vec::new();
    for letter in read_dir(&root)? {
        for pkg in read_dir(&letter)? {
            for rev in read_dir(&pkg)? {
                let release: u64 = rev
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| {
                        format!(
                            "{}: a release directory is named by a number",
                            rev.display()
                        )
                    })?;
                let Some(mut p) = json_file(rev.join("package.json"))? else {
                    return Err(format!("{}: no package.json", rev.display()));
                };
                p["releaseVersion"] = json!(release);
                if let Some(c) = json_file(rev.join("config.json"))? {
                    p["config"] = c;
                }
                if let Some(r) = json_file(rev.join("resource.json"))? {
                    p["resource"] = r;
                }
                for (file, section, key) in TEMPLATES {
                    match std::fs::read(rev.join(file)) {
                        Ok(t) => {
                            p[section] = json!({
                                key: base64::engine::general_purpose::STANDARD.encode(t)
                            });
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(format!("{}: {e}", rev.join(file).display())),
                    }
                }
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// Cosmos' search: all for an empty query; `*` as a wildcard (anchored);
/// otherwise a case-insensitive substring of the name, description or a
/// tag. One result per name, selected packages first.
pub fn search(all: &[Entry], query: &str) -> Vec<Value> {
    let q = query.to_lowercase();
    let matches = |s: &str| {
        let s = s.to_lowercase();
        if q.contains('*') {
            wildcard(&q, &s)
        } else {
            s.contains(&q)
        }
    };
    let mut out: Vec<Value> = Vec::new();
    for e in all {
        let p = &e.package;
        let hit = q.is_empty()
            || matches(e.name())
            || matches(p["description"].as_str().unwrap_or(""))
            || p["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| matches(t.as_str().unwrap_or(""))));
        if !hit {
            continue;
        }
        if let Some(existing) = out.iter_mut().find(|x| x["name"] == e.name()) {
            existing["versions"][e.version()] = json!(e.release().to_string());
            continue;
        }
        let mut r = json!({
            "name": e.name(),
            "currentVersion": e.version(),
            "versions": { e.version(): e.release().to_string() },
            "description": p["description"],
            "framework": p["framework"].as_bool().unwrap_or(false),
            "tags": p["tags"].clone(),
            "selected": p["selected"].as_bool().unwrap_or(false),
        });
        if let Some(images) = p["resource"].get("images") {
            r["images"] = images.clone();
        }
        out.push(r);
    }
    out.sort_by(|a, b| {
        (
            !a["selected"].as_bool().unwrap_or(false),
            a["name"].as_str(),
        )
            .cmp(&(
                !b["selected"].as_bool().unwrap_or(false),
                b["name"].as_str(),
            ))
    });
    out
}

/// `pattern` with `*` for any run of characters, matched against all of `s`.
fn wildcard(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = s;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    rest.is_empty()
}

/// The package a request names (`packageName`, optional
/// `packageVersion`), and the URI of its repository.
async fn resolve(n: &Leader, req: &Map<String, Value>) -> CResult<(Value, String)> {
    let name = required(req, "packageName")?;
    let version = string(req, "packageVersion")?;
    let all = catalogue(n).await?;
    let mut of_name = all.into_iter().filter(|e| e.name() == name).peekable();
    if of_name.peek().is_none() {
        return Err(not_found(&name));
    }
    let found = match &version {
        None => of_name.next(),
        Some(v) => of_name.find(|e| e.version() == v),
    };
    found.map(|e| (e.package, e.source)).ok_or_else(|| {
        error(
            "VersionNotFound",
            format!("{name} has no version {}", version.as_deref().unwrap_or("")),
        )
        .data(json!({"packageName": name, "packageVersion": version}))
    })
}

// ---- rendering -----------------------------------------------------------------

/// The defaults a JSON schema's `properties` give, nested as they are.
pub fn defaults(schema: &Value) -> Value {
    let mut out = Map::new();
    if let Some(props) = schema["properties"].as_object() {
        for (k, p) in props {
            if let Some(d) = p.get("default") {
                out.insert(k.clone(), d.clone());
            } else if p.get("properties").is_some() {
                let nested = defaults(p);
                if nested.as_object().is_some_and(|m| !m.is_empty()) {
                    out.insert(k.clone(), nested);
                }
            }
        }
    }
    Value::Object(out)
}

/// `b` over `a`, objects merged key by key.
pub fn merge(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut out = x.clone();
            for (k, v) in y {
                let merged = match out.get(k) {
                    Some(old) => merge(old, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (_, b) => b.clone(),
    }
}

/// What a package makes with a request's options: any of a Marathon app,
/// a Chronos job and plugins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rendered {
    /// The options as given (without the defaults), for the record.
    pub options: Value,
    /// The Marathon app, labelled as Cosmos labels it.
    pub app: Option<Value>,
    /// The Chronos job (Chronos' job JSON).
    pub job: Option<Value>,
    /// The plugins, each an OCI reference (resolved against the
    /// repository's registry when it names none) and its configuration.
    pub plugins: Vec<PluginPart>,
}

impl Rendered {
    /// Whether the package makes nothing (a CLI-only one).
    pub fn is_empty(&self) -> bool {
        self.app.is_none() && self.job.is_none() && self.plugins.is_empty()
    }

    /// The render answer: Cosmos' `marathonJson`, and Wasmos' `chronosJson`
    /// and `plugins`.
    pub fn to_json(&self) -> Value {
        let mut out = json!({});
        if let Some(app) = &self.app {
            out["marathonJson"] = app.clone();
        }
        if let Some(job) = &self.job {
            out["chronosJson"] = job.clone();
        }
        if !self.plugins.is_empty() {
            out["plugins"] = json!(self.plugins);
        }
        out
    }
}

/// A plugin a package installs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginPart {
    /// `oci://registry/repository:tag`, or `repository:tag` in the
    /// package's own registry.
    pub from: String,
    #[serde(default)]
    pub config: std::collections::BTreeMap<String, String>,
}

/// What a package makes with `options`: its templates rendered with the
/// schema's defaults under the options, once the options fit the schema.
pub fn render(
    pkg: &Value,
    source: &str,
    options: Option<&Value>,
    app_id: Option<&str>,
) -> CResult<Rendered> {
    let user = match options {
        None | Some(Value::Null) => json!({}),
        Some(o @ Value::Object(_)) => o.clone(),
        Some(other) => {
            return Err(error(
                "MalformedRequest",
                format!("options must be a JSON object, not {other}"),
            ));
        }
    };
    let merged = match pkg.get("config") {
        Some(schema) => {
            let merged = merge(&defaults(schema), &user);
            let validator = jsonschema::draft4::new(schema).map_err(|e| {
                error(
                    "InvalidPackage",
                    format!("the package's config.json is not a JSON schema: {e}"),
                )
            })?;
            let errors: Vec<Value> = validator
                .iter_errors(&merged)
                .map(|e| json!({"path": e.instance_path.to_string(), "message": e.to_string()}))
                .collect();
            if !errors.is_empty() {
                let summary: Vec<String> = errors
                    .iter()
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e["path"].as_str().filter(|p| !p.is_empty()).unwrap_or("/"),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                return Err(error(
                    "JsonSchemaMismatch",
                    format!("Options JSON failed validation: {}", summary.join("; ")),
                )
                .data(json!({ "errors": errors })));
            }
            merged
        }
        None if user.as_object().is_some_and(|m| !m.is_empty()) => {
            return Err(error(
                "OptionsNotAllowed",
                "this package takes no options (it has no config.json)",
            ));
        }
        None => json!({}),
    };
    let mut context = merged;
    if let Some(r) = pkg.get("resource") {
        context["resource"] = r.clone();
    }
    let mut out = Rendered {
        options: user.clone(),
        ..Rendered::default()
    };
    if let Some(mut app) = template(
        pkg,
        ("marathon", "v2AppMustacheTemplate"),
        "Marathon app",
        &context,
    )? {
        if !app.is_object() {
            return Err(error(
                "MarathonTemplateMustBeJsonObject",
                "the rendered Marathon template is not a JSON object",
            ));
        }
        if let Some(id) = app_id {
            app["id"] = json!(canonical(id));
        }
        label(&mut app, pkg, source, &user)?;
        out.app = Some(app);
    }
    if let Some(job) = template(
        pkg,
        ("chronos", "v1JobMustacheTemplate"),
        "Chronos job",
        &context,
    )? {
        if job["name"].as_str().is_none_or(str::is_empty) {
            return Err(error(
                "InvalidPackage",
                "the rendered Chronos job is not a JSON object with a name",
            ));
        }
        out.job = Some(job);
    }
    if let Some(plugins) = template(
        pkg,
        ("plugins", "v1PluginsMustacheTemplate"),
        "plugins",
        &context,
    )? {
        let parts: Vec<PluginPart> = serde_json::from_value(plugins).map_err(|e| {
            error(
                "InvalidPackage",
                format!(
                    "the rendered plugins are not a list of {{\"from\": REFERENCE, \"config\": {{...}}}}: {e}"
                ),
            )
        })?;
        for mut part in parts {
            part.from = plugin_reference(&part.from, source)?;
            out.plugins.push(part);
        }
    }
    Ok(out)
}

/// The template at `pkg[section][key]` (base64 Mustache) rendered with
/// `context`, as JSON; `None` when the package has none.
fn template(
    pkg: &Value,
    (section, key): (&str, &str),
    what: &str,
    context: &Value,
) -> CResult<Option<Value>> {
    let Some(template) = pkg[section][key].as_str() else {
        return Ok(None);
    };
    let template = base64::engine::general_purpose::STANDARD
        .decode(template)
        .ok()
        .and_then(|t| String::from_utf8(t).ok())
        .ok_or_else(|| {
            error(
                "InvalidPackage",
                format!("the package's {what} template is not base64 of UTF-8"),
            )
        })?;
    let text = mustache_render(&template, context).map_err(|e| {
        error(
            "InvalidPackage",
            format!("the package's {what} template: {e}"),
        )
    })?;
    serde_json::from_str(&text).map(Some).map_err(|e| {
        error(
            if section == "marathon" {
                "MarathonTemplateMustBeJsonObject"
            } else {
                "InvalidPackage"
            },
            format!("the rendered {what} template is not JSON ({e}): {text}"),
        )
    })
}

/// Labels an app as Cosmos does, so that its package is known from it.
fn label(app: &mut Value, pkg: &Value, source: &str, user: &Value) -> CResult<()> {
    let mut labels = match app.get("labels") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) if m.values().all(Value::is_string) => m.clone(),
        Some(_) => {
            return Err(error(
                "InvalidLabelSchema",
                "the rendered app's labels must map strings to strings",
            ));
        }
    };
    let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
    labels.insert("DCOS_PACKAGE_NAME".into(), pkg["name"].clone());
    labels.insert("DCOS_PACKAGE_VERSION".into(), pkg["version"].clone());
    labels.insert("DCOS_PACKAGE_SOURCE".into(), json!(source));
    labels.insert(
        "DCOS_PACKAGE_OPTIONS".into(),
        json!(b64(user.to_string().as_bytes())),
    );
    labels.insert(
        "DCOS_PACKAGE_DEFINITION".into(),
        json!(b64(definition(pkg).to_string().as_bytes())),
    );
    app["labels"] = Value::Object(labels);
    Ok(())
}

/// A package's plugin reference as an OCI reference: one naming no
/// registry (no `scheme://`) is in the registry of the package's OCI
/// repository.
pub fn plugin_reference(from: &str, source: &str) -> CResult<String> {
    if from.contains("://") {
        return Ok(from.to_string());
    }
    let Some((scheme, rest)) = source
        .split_once("://")
        .filter(|(s, _)| *s == "oci" || *s == "oci+http")
    else {
        return Err(error(
            "InvalidPackage",
            format!(
                "the package's plugin {from} names no registry, which only a package from an OCI repository may do; this one comes from {source}: push the catalogue with `wasmos package repo push`, or name the plugin oci://REGISTRY/{from}"
            ),
        ));
    };
    let host = rest.split('/').next().unwrap_or(rest);
    Ok(format!(
        "{scheme}://{host}/{}",
        from.trim_start_matches('/')
    ))
}

/// Cosmos' `DCOS_PACKAGE_DEFINITION`: the package's JSON, gzipped, in an
/// envelope naming its media type.
fn definition(pkg: &Value) -> Value {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = gz.write_all(pkg.to_string().as_bytes());
    let data = gz.finish().unwrap_or_default();
    let version = match pkg["packagingVersion"].as_str() {
        Some("4.0") => "v4",
        Some("5.0") => "v5",
        _ => "v3",
    };
    json!({
        "metadata": {
            "Content-Type": format!("application/vnd.dcos.universe.package+json;charset=utf-8;version={version}"),
            "Content-Encoding": "gzip",
        },
        "data": base64::engine::general_purpose::STANDARD.encode(data),
    })
}

fn decode_definition(label: &str) -> Option<Value> {
    use std::io::Read;
    let b64 = base64::engine::general_purpose::STANDARD;
    let envelope: Value = serde_json::from_slice(&b64.decode(label).ok()?).ok()?;
    let gz = b64.decode(envelope["data"].as_str()?).ok()?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .ok()?;
    serde_json::from_str(&text).ok()
}

/// Renders a Mustache template as Cosmos does: no HTML escaping, string
/// values JSON-escaped without their quotes (but strings directly in an
/// array keep them), whole numbers without a fraction, booleans as
/// `true`/`false`.
pub fn mustache_render(template: &str, context: &Value) -> Result<String, String> {
    let t = mustache::compile_str(&unescaped(template, context)).map_err(|e| e.to_string())?;
    let data = to_data(context, false);
    // The crate panics on values it cannot interpolate; a package's
    // template must not take the master down.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut out = Vec::new();
        t.render_data(&mut out, &data).map(|()| out)
    }))
    .map_err(|_| "a tag interpolates a value that is not text (a list or an object?)".to_string())?
    .map_err(|e| e.to_string())
    .and_then(|out| String::from_utf8(out).map_err(|e| e.to_string()))
}

fn to_data(v: &Value, in_array: bool) -> mustache::Data {
    use mustache::Data;
    match v {
        Value::Null => Data::Null,
        Value::Bool(b) => Data::Bool(*b),
        Value::Number(n) => Data::String(match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 && !n.is_f64() => format!("{}", f as i64),
            _ => n.to_string(),
        }),
        Value::String(s) => {
            let quoted = Value::String(s.clone()).to_string();
            Data::String(if in_array {
                quoted
            } else {
                quoted[1..quoted.len() - 1].to_string()
            })
        }
        Value::Array(a) => Data::Vec(a.iter().map(|x| to_data(x, true)).collect()),
        Value::Object(m) => Data::Map(
            m.iter()
                .map(|(k, x)| (k.clone(), to_data(x, false)))
                .collect(),
        ),
    }
}

/// The template with every escaping `{{name}}` made `{{&name}}` (the
/// crate escapes HTML, which Cosmos does not), and a tag naming a boolean
/// of the context written out (the crate cannot interpolate one).
fn unescaped(template: &str, context: &Value) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        rest = &rest[at + 2..];
        let sigil = rest.trim_start().chars().next();
        if matches!(sigil, Some('#' | '^' | '/' | '!' | '>' | '&' | '{' | '=')) {
            out.push_str("{{");
            continue;
        }
        let Some(end) = rest.find("}}") else {
            out.push_str("{{");
            continue;
        };
        let name = rest[..end].trim();
        let value = name.split('.').try_fold(context, |v, k| v.get(k));
        match value {
            Some(Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
            _ => {
                out.push_str("{{&");
                out.push_str(&rest[..end]);
                out.push_str("}}");
            }
        }
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

// ---- installs ----------------------------------------------------------------------

/// What an install made.
#[derive(Debug, Clone, Default)]
struct Parts {
    app: Option<String>,
    job: Option<String>,
    plugins: Vec<String>,
}

/// A package installed: recorded in the state, or known only from an
/// app's Cosmos labels (an app made through Marathon's API with them).
struct Install {
    id: String,
    name: String,
    definition: Value,
    parts: Parts,
    recorded: bool,
}

impl Install {
    /// Cosmos' list entry, with what the install made.
    fn to_json(&self) -> Value {
        json!({
            "appId": self.id,
            "packageInformation": {"packageDefinition": self.definition},
            "parts": {"app": self.parts.app, "job": self.parts.job, "plugins": self.parts.plugins},
        })
    }
}

/// Every install: the recorded ones, and the labelled apps the caller
/// may see that no record names.
async fn installs(n: &Leader, lead: &Lead, p: Option<&Principal>) -> CResult<Vec<Install>> {
    let recorded: Vec<PackageInstall> = n
        .store
        .read(|s| s.package_installs.values().cloned().collect());
    let mut out: Vec<Install> = recorded
        .into_iter()
        .map(|r| Install {
            definition: serde_json::from_str(&r.package)
                .unwrap_or_else(|_| json!({"name": r.name, "version": r.version})),
            id: r.id,
            name: r.name,
            parts: Parts {
                app: r.app,
                job: r.job,
                plugins: r.plugins,
            },
            recorded: true,
        })
        .collect();
    let (status, v) = framework(lead, p, "marathon", Method::GET, "/v2/apps", &Value::Null).await?;
    let apps = match status {
        s if s.is_success() => v["apps"].as_array().cloned().unwrap_or_default(),
        // No marathon plugin: no apps.
        StatusCode::NOT_FOUND => Vec::new(),
        s => return Err(marathon_error(s, &v)),
    };
    for app in apps {
        let labels = &app["labels"];
        let Some(name) = labels["DCOS_PACKAGE_NAME"].as_str() else {
            continue;
        };
        let id = app["id"].as_str().unwrap_or_default().to_string();
        if out
            .iter()
            .any(|i| i.parts.app.as_deref() == Some(id.as_str()))
        {
            continue;
        }
        let definition = labels["DCOS_PACKAGE_DEFINITION"]
            .as_str()
            .and_then(decode_definition)
            .unwrap_or_else(|| json!({"name": name, "version": labels["DCOS_PACKAGE_VERSION"]}));
        out.push(Install {
            id: id.clone(),
            name: name.to_string(),
            definition,
            parts: Parts {
                app: Some(id),
                ..Parts::default()
            },
            recorded: false,
        });
    }
    Ok(out)
}

/// A refusal because something of that name exists.
fn taken(message: String) -> CosmosError {
    error("PackageAlreadyInstalled", message).status(StatusCode::CONFLICT)
}

/// Installs what a package makes. The install is recorded first, so that
/// nothing it makes is ever unaccounted for; then its plugins, its job and
/// its app (which may use them) are made. Everything is checked first
/// (names free, plugins pulled, signed and linked, the caller's rights);
/// if making a part still fails, what was made is removed and the record
/// forgotten.
async fn install(
    n: &Leader,
    lead: &Lead,
    p: Option<&Principal>,
    pkg: &Value,
    source: &str,
    r: Rendered,
    app_id: Option<String>,
) -> CResult<Value> {
    let name = pkg["name"].as_str().unwrap_or_default().to_string();
    let version = pkg["version"].as_str().unwrap_or_default().to_string();
    let mut out = json!({"packageName": name, "packageVersion": version});
    if r.is_empty() {
        // A CLI-only package installs nothing.
        return Ok(out);
    }
    let id = match &r.app {
        Some(app) => canonical(app["id"].as_str().unwrap_or_default()),
        None => canonical(app_id.as_deref().unwrap_or(&name)),
    };
    if n.store.read(|s| s.package_installs.contains_key(&id)) {
        return Err(taken(format!(
            "{name} is already installed as {id}: uninstall it, or install it under another appId"
        )));
    }
    if r.app.is_some() {
        let (status, _) = framework(
            lead,
            p,
            "marathon",
            Method::GET,
            &format!("/v2/apps{id}"),
            &Value::Null,
        )
        .await?;
        if status.is_success() {
            return Err(taken(format!(
                "{name} is already installed as {id} (an app of that id exists): uninstall it, or install it under another appId"
            )));
        }
    }
    let job = match &r.job {
        None => None,
        Some(job) => {
            let job = job["name"].as_str().unwrap_or_default().to_string();
            let (status, answer) = framework(
                lead,
                p,
                "chronos",
                Method::GET,
                &format!("/v1/scheduler/job/{}", path_segment(&job)),
                &Value::Null,
            )
            .await?;
            match status {
                StatusCode::OK => {
                    return Err(taken(format!(
                        "a Chronos job named {job} exists: remove it, or give the package another job name in its options"
                    )));
                }
                // Chronos' "not found".
                StatusCode::BAD_REQUEST => {}
                s => return Err(framework_error("Chronos", s, &answer)),
            }
            Some(job)
        }
    };
    let mut plugins: Vec<PluginRecord> = Vec::new();
    for part in &r.plugins {
        let record = n
            .prepare_plugin(InstallRequest {
                from: Some(part.from.clone()),
                config: part.config.clone(),
                ..InstallRequest::default()
            })
            .await
            .map_err(|e| api_error(e, &format!("the package's plugin {}", part.from)))?;
        let plugin = record.manifest.name.clone();
        if let Some(p) = p {
            p.check(Area::Plugins, &plugin, Access::Write)
                .map_err(|e| api_error(e, "installing its plugins"))?;
        }
        if n.store.read(|s| s.plugins.contains_key(&plugin))
            || plugins.iter().any(|r| r.manifest.name == plugin)
        {
            return Err(taken(format!(
                "a plugin named {plugin} is installed: remove it (`wasmos plugin remove {plugin}`) before installing {name}"
            )));
        }
        plugins.push(record);
    }
    let record = PackageInstall {
        id: id.clone(),
        name: name.clone(),
        version,
        source: source.to_string(),
        options: r.options.to_string(),
        package: pkg.to_string(),
        app: r.app.as_ref().map(|_| id.clone()),
        job: job.clone(),
        plugins: plugins.iter().map(|r| r.manifest.name.clone()).collect(),
        installed_at: crate::leader::now_secs() as u64,
    };
    match propose(
        lead,
        Command::PackageInstalled {
            install: Box::new(record.clone()),
        },
    )
    .await?
    {
        StateResponse::Ok => {}
        StateResponse::Rejected { reason } => return Err(taken(reason)),
        other => return Err(internal(other)),
    }
    let mut made = Parts::default();
    if let Err(e) = make(n, lead, p, &r, plugins, &mut made).await {
        tracing::warn!(package = %name, %id, error = %e.message, "install failed; removing what it made");
        if let Err(undo) = remove_parts(n, lead, p, &made).await {
            tracing::warn!(package = %name, %id, error = %undo.message, "could not remove what a failed install made");
        }
        if let Err(forget) = propose(lead, Command::PackageUninstalled { id }).await {
            tracing::warn!(package = %name, error = %forget.message, "could not forget a failed install");
        }
        return Err(e);
    }
    tracing::info!(package = %name, %id, parts = ?record.parts(), "package installed");
    out["appId"] = json!(id);
    if let Some(job) = job {
        out["jobName"] = json!(job);
    }
    if !record.plugins.is_empty() {
        out["plugins"] = json!(record.plugins);
    }
    Ok(out)
}

/// Makes an install's parts, noting each in `made` once it exists.
async fn make(
    n: &Leader,
    lead: &Lead,
    p: Option<&Principal>,
    r: &Rendered,
    plugins: Vec<PluginRecord>,
    made: &mut Parts,
) -> CResult<()> {
    for record in plugins {
        let name = record.manifest.name.clone();
        n.commit_plugin(record)
            .await
            .map_err(|e| api_error(e, &format!("plugin {name}")))?;
        made.plugins.push(name);
    }
    if let Some(job) = &r.job {
        let path = if job.get("parents").is_some_and(|p| !p.is_null()) {
            "/v1/scheduler/dependency"
        } else {
            "/v1/scheduler/iso8601"
        };
        let (status, answer) = framework(lead, p, "chronos", Method::POST, path, job).await?;
        if !status.is_success() {
            return Err(framework_error("Chronos", status, &answer));
        }
        made.job = job["name"].as_str().map(str::to_string);
    }
    if let Some(app) = &r.app {
        let (status, answer) =
            framework(lead, p, "marathon", Method::POST, "/v2/apps", app).await?;
        match status {
            s if s.is_success() => {}
            StatusCode::CONFLICT => {
                return Err(taken(format!(
                    "an app {} exists: uninstall it, or install under another appId",
                    app["id"].as_str().unwrap_or_default()
                )));
            }
            s => return Err(marathon_error(s, &answer)),
        }
        made.app = app["id"].as_str().map(str::to_string);
    }
    Ok(())
}

/// Removes an install's parts: its app, its job, then its plugins (a
/// framework's tasks with it). A part already gone is fine.
async fn remove_parts(
    n: &Leader,
    lead: &Lead,
    p: Option<&Principal>,
    parts: &Parts,
) -> CResult<()> {
    // Every right first: an uninstall the caller may not finish starts
    // nothing.
    if let Some(p) = p {
        for plugin in &parts.plugins {
            p.check(Area::Plugins, plugin, Access::Write)
                .map_err(|e| api_error(e, "removing its plugins"))?;
        }
    }
    if let Some(app) = &parts.app {
        let (status, answer) = framework(
            lead,
            p,
            "marathon",
            Method::DELETE,
            &format!("/v2/apps{app}"),
            &Value::Null,
        )
        .await?;
        if !status.is_success() && status != StatusCode::NOT_FOUND {
            return Err(marathon_error(status, &answer));
        }
    }
    if let Some(job) = &parts.job {
        let (status, answer) = framework(
            lead,
            p,
            "chronos",
            Method::DELETE,
            &format!("/v1/scheduler/job/{}", path_segment(job)),
            &Value::Null,
        )
        .await?;
        let gone = status == StatusCode::BAD_REQUEST
            && answer["message"]
                .as_str()
                .is_some_and(|m| m.contains("not found"));
        if !status.is_success() && !gone {
            return Err(framework_error("Chronos", status, &answer));
        }
    }
    for plugin in &parts.plugins {
        match n.remove_plugin(plugin, true).await {
            Ok(()) | Err(ApiError::NotFound(_)) => {}
            Err(e) => return Err(api_error(e, &format!("plugin {plugin}"))),
        }
    }
    Ok(())
}

/// `s` as one path segment (`%`-escaped).
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A master API error met on the way, in Cosmos' envelope.
fn api_error(e: ApiError, during: &str) -> CosmosError {
    let status = e.status();
    let kind = match status.as_u16() {
        400 => "InvalidPackage",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "PackageAlreadyInstalled",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    };
    let message = match &e {
        ApiError::Internal(_) => "internal error; see the master's log".to_string(),
        other => other.to_string(),
    };
    if let ApiError::Internal(detail) = &e {
        tracing::error!(%detail, during, "internal error installing a package");
    }
    error(kind, format!("{during}: {message}")).status(status)
}

// ---- frameworks ----------------------------------------------------------------------

/// A request to a framework plugin's API with the caller's rights.
async fn framework(
    lead: &Lead,
    p: Option<&Principal>,
    name: &str,
    method: Method,
    path: &str,
    body: &Value,
) -> CResult<(StatusCode, Value)> {
    let anyone = Principal::insecure();
    let p = p.unwrap_or(&anyone);
    let bytes = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let uri: Uri = path
        .parse()
        .map_err(|_| error("MalformedRequest", format!("bad path {path}")))?;
    let r = crate::http::checked_framework(
        Lead(lead.0.clone()),
        p,
        name.into(),
        path.into(),
        method,
        uri,
        headers,
        bytes,
    )
    .await;
    let status = r.status();
    let body = axum::body::to_bytes(r.into_body(), 16 << 20)
        .await
        .map_err(|e| error("MarathonBadGateway", e.to_string()).status(StatusCode::BAD_GATEWAY))?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn marathon_error(status: StatusCode, answer: &Value) -> CosmosError {
    let message = answer["message"]
        .as_str()
        .unwrap_or("Marathon refused the app");
    let kind = match status.as_u16() {
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "MarathonAppNotFound",
        422 => "MarathonBadResponse",
        s if s >= 500 => "MarathonGenericError",
        _ => "MarathonBadResponse",
    };
    error(kind, format!("Marathon: {message}"))
        .status(status)
        .data(answer.clone())
}

/// A framework's refusal other than Marathon's.
fn framework_error(which: &str, status: StatusCode, answer: &Value) -> CosmosError {
    let message = answer["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{which} answered {status}"));
    let kind = match status.as_u16() {
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "ServiceUnavailable",
        s if s >= 500 => "ServiceUnavailable",
        _ => "InvalidPackage",
    };
    let hint = if status == StatusCode::NOT_FOUND {
        format!(" (is the {} plugin installed?)", which.to_lowercase())
    } else {
        String::new()
    };
    error(kind, format!("{which}: {message}{hint}"))
        .status(
            if status.is_server_error() || status == StatusCode::NOT_FOUND {
                StatusCode::BAD_GATEWAY
            } else {
                status
            },
        )
        .data(answer.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_render_json_escaped_and_unescaped_for_html() {
        let t = r#"{"cmd": "{{svc.cmd}}", "n": {{svc.n}}, "f": {{svc.f}}, "on": {{svc.on}}{{#svc.extra}}, "x": "{{svc.extra}}"{{/svc.extra}}}"#;
        let ctx = json!({"svc": {"cmd": "echo \"a<b>&c\"\n", "n": 2, "f": 0.5, "on": true}});
        let out = mustache_render(t, &ctx).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["cmd"], "echo \"a<b>&c\"\n");
        assert_eq!(v["n"], 2);
        assert_eq!(v["f"], 0.5);
        assert_eq!(v["on"], true);
        assert!(v.get("x").is_none(), "{out}");
    }

    #[test]
    fn a_tag_naming_a_list_or_an_object_fails_the_render_without_a_panic() {
        for ctx in [json!({"a": [1, 2]}), json!({"a": {"b": 1}})] {
            let r = mustache_render("{\"x\": \"{{a}}\"}", &ctx);
            assert!(r.is_err(), "{ctx}: {r:?}");
        }
        // In a section, the same values are what it iterates or enters.
        let out = mustache_render("{{#a}}[{{.}}]{{/a}}", &json!({"a": [1, 2]})).unwrap();
        assert_eq!(out, "[1][2]");
    }

    fn package() -> Value {
        let template = r#"{"id": "/{{service.name}}", "cmd": "serve --port $PORT0 --greeting '{{service.greeting}}'", "cpus": {{service.cpus}}, "mem": 32, "instances": {{service.instances}}, "labels": {"team": "web"}}"#;
        json!({
            "packagingVersion": "4.0", "name": "hello", "version": "1.0.0", "releaseVersion": 0,
            "description": "says hello", "tags": ["web", "demo"],
            "config": {"type": "object", "properties": {"service": {"type": "object", "properties": {
                "name": {"type": "string", "default": "hello"},
                "greeting": {"type": "string", "default": "hi"},
                "cpus": {"type": "number", "default": 0.1, "minimum": 0.01},
                "instances": {"type": "integer", "default": 1, "minimum": 0}}}}},
            "marathon": {"v2AppMustacheTemplate": base64::engine::general_purpose::STANDARD.encode(template)},
        })
    }

    #[test]
    fn a_package_renders_with_defaults_options_and_cosmos_labels() {
        let app = render(
            &package(),
            "file:///repo",
            Some(&json!({"service": {"instances": 3}})),
            None,
        )
        .unwrap()
        .app
        .unwrap();
        assert_eq!(app["id"], "/hello");
        assert_eq!(app["instances"], 3);
        assert_eq!(app["cpus"], 0.1);
        let l = &app["labels"];
        assert_eq!(l["team"], "web");
        assert_eq!(l["DCOS_PACKAGE_NAME"], "hello");
        assert_eq!(l["DCOS_PACKAGE_VERSION"], "1.0.0");
        assert_eq!(l["DCOS_PACKAGE_SOURCE"], "file:///repo");
        let opts = base64::engine::general_purpose::STANDARD
            .decode(l["DCOS_PACKAGE_OPTIONS"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&opts).unwrap(),
            json!({"service": {"instances": 3}})
        );
        let def = decode_definition(l["DCOS_PACKAGE_DEFINITION"].as_str().unwrap()).unwrap();
        assert_eq!(def["name"], "hello");
        let with_id = render(&package(), "x", None, Some("team/hi"))
            .unwrap()
            .app
            .unwrap();
        assert_eq!(with_id["id"], "/team/hi");
    }

    #[test]
    fn options_that_break_the_schema_are_refused_with_each_error() {
        let e = render(
            &package(),
            "x",
            Some(&json!({"service": {"instances": -1, "cpus": "lots"}})),
            None,
        )
        .unwrap_err();
        assert_eq!(e.kind, "JsonSchemaMismatch");
        let errors = e.data.unwrap()["errors"].as_array().unwrap().clone();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(e.message.contains("/service/instances"), "{}", e.message);
        let mut no_config = package();
        no_config.as_object_mut().unwrap().remove("config");
        let e = render(&no_config, "x", Some(&json!({"a": 1})), None).unwrap_err();
        assert_eq!(e.kind, "OptionsNotAllowed");
    }

    #[test]
    fn a_package_of_several_parts_renders_its_job_and_plugins_from_its_registry() {
        let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
        let mut pkg = package();
        pkg["chronos"] = json!({"v1JobMustacheTemplate": b64(
            r#"{"name": "{{service.name}}-report", "schedule": "R/2026-01-01T00:00:00Z/PT1H", "command": "echo '{{service.greeting}}'"}"#
        )});
        pkg["plugins"] = json!({"v1PluginsMustacheTemplate": b64(
            r#"[{"from": "plugins/check:1", "config": {"expect": "{{service.greeting}}"}},
                {"from": "oci://elsewhere.example/x:2"}]"#
        )});
        let r = render(
            &pkg,
            "oci+http://127.0.0.1:5000/catalogue/examples:1",
            Some(&json!({"service": {"greeting": "a \"b\""}})),
            None,
        )
        .unwrap();
        assert!(r.app.is_some());
        let job = r.job.as_ref().unwrap();
        assert_eq!(job["name"], "hello-report");
        assert_eq!(job["command"], "echo 'a \"b\"'");
        assert_eq!(
            r.plugins,
            vec![
                PluginPart {
                    from: "oci+http://127.0.0.1:5000/plugins/check:1".into(),
                    config: [("expect".to_string(), "a \"b\"".to_string())].into(),
                },
                PluginPart {
                    from: "oci://elsewhere.example/x:2".into(),
                    config: Default::default(),
                },
            ]
        );
        let answer = r.to_json();
        assert_eq!(answer["chronosJson"]["name"], "hello-report");
        assert_eq!(answer["plugins"][1]["from"], "oci://elsewhere.example/x:2");
        // A plugin in "the package's registry" needs a repository in one.
        let e = render(&pkg, "file:///repo", None, None).unwrap_err();
        assert_eq!(e.kind, "InvalidPackage");
        assert!(
            e.message.contains("wasmos package repo push"),
            "{}",
            e.message
        );
        // A job without a name, or plugins that are not a list: refused.
        pkg["chronos"] =
            json!({"v1JobMustacheTemplate": b64(r#"{"schedule": "R/2026-01-01T00:00:00Z/PT1H"}"#)});
        let e = render(&pkg, "oci://r/c", None, None).unwrap_err();
        assert!(e.message.contains("with a name"), "{}", e.message);
        pkg.as_object_mut().unwrap().remove("chronos");
        pkg["plugins"] = json!({"v1PluginsMustacheTemplate": b64(r#"{"from": "x"}"#)});
        let e = render(&pkg, "oci://r/c", None, None).unwrap_err();
        assert!(e.message.contains("not a list"), "{}", e.message);
    }

    #[test]
    fn search_matches_names_descriptions_tags_and_wildcards() {
        let e = |name: &str, version: &str, release: u64, selected: bool| Entry {
            repo_index: 0,
            source: String::new(),
            package: json!({"name": name, "version": version, "releaseVersion": release,
                            "description": format!("the {name} service"), "tags": ["demo"], "selected": selected}),
        };
        let all = vec![
            e("hello", "2", 1, false),
            e("hello", "1", 0, false),
            e("web", "1", 0, true),
        ];
        let names = |q: &str| {
            search(&all, q)
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(""), ["web", "hello"], "selected first");
        assert_eq!(names("HELL"), ["hello"]);
        assert_eq!(names("demo"), ["web", "hello"]);
        assert_eq!(names("h*o"), ["hello"]);
        assert!(names("zzz").is_empty());
        let hello = &search(&all, "hello")[0];
        assert_eq!(hello["versions"], json!({"2": "1", "1": "0"}));
        assert_eq!(hello["currentVersion"], "2");
    }
}
