//! Authentication and authorization of the client APIs (the native API,
//! framework plugins' APIs, the dashboard's data).
//!
//! Every request but `/health`, `/version`, the dashboard's static files,
//! the login endpoints and the daemons' own (certificate-checked) endpoints
//! must carry credentials: a token (`Authorization: Bearer <secret>`, or
//! DC/OS' `Authorization: token=<secret>`), a user's password (HTTP Basic,
//! what marathon-python and chronos-python send), or the dashboard's
//! session cookie. Without valid ones the answer is 401 with a
//! `WWW-Authenticate: Basic` challenge (chronos-python's httplib2 sends
//! credentials only after one), and it never says whether a name exists.
//! Then the request's area, object and access are checked against the
//! principal's policies (deny by default): 403 names what is missing.
//! Every change is written to the audit log with its principal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use wasmos_state::acl::{Access, Area, Grants};

use crate::error::ApiError;
use crate::node::Node;

/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "wasmos-session";
/// How long a login session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The header a framework plugin learns its caller from.
pub const PRINCIPAL_HEADER: &str = "x-wasmos-principal";

/// A secret in a configuration: shown by `Debug` as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Who made a request, and what they may do: cheap to clone (requests
/// carry it in their extensions, handlers take copies).
#[derive(Debug, Clone)]
pub struct Principal(Arc<Who>);

#[derive(Debug)]
pub struct Who {
    /// `token:<name>`, `user:<name>`, or `anonymous` under --insecure.
    pub name: String,
    pub grants: Arc<Grants>,
    /// The session token's accessor, for logging out.
    pub session: Option<String>,
    /// Where the rights come from (a session made from this principal gets
    /// these, not whatever the login request names).
    pub management: bool,
    pub policies: Vec<String>,
    /// When the credentials expire (a session never outlives them).
    pub expires_at: Option<f64>,
    /// The credentials, for sessions made from them: `token:<accessor>`
    /// or `user:<name>`.
    pub source: Option<String>,
}

impl std::ops::Deref for Principal {
    type Target = Who;

    fn deref(&self) -> &Who {
        &self.0
    }
}

impl Principal {
    pub fn new(who: Who) -> Principal {
        Principal(Arc::new(who))
    }

    /// Everything allowed (--insecure, where nothing is authenticated).
    pub fn insecure() -> Principal {
        Principal::new(Who {
            name: "anonymous".into(),
            grants: Arc::new(Grants::all()),
            session: None,
            management: true,
            policies: Vec::new(),
            expires_at: None,
            source: None,
        })
    }

    /// Ok, or 403 naming the missing permission.
    pub fn check(&self, area: Area, object: &str, access: Access) -> Result<(), ApiError> {
        if self.grants.allows(area, object, access) {
            return Ok(());
        }
        let on = if object.is_empty() {
            String::new()
        } else {
            format!(" on {object:?}")
        };
        Err(ApiError::Forbidden(format!(
            "{} may not do this: it needs {}:{}{on}; ask an operator for a policy that grants it",
            self.name,
            area,
            access.name()
        )))
    }
}

impl Principal {
    /// For a read of a whole collection of `area`: `Ok(false)` to show all
    /// of it, `Ok(true)` to show only what the principal may read (its
    /// grants cover part of the area), 403 when they cover none.
    pub fn listing(&self, area: Area) -> Result<bool, ApiError> {
        if self.grants.whole(area, Access::Read) {
            Ok(false)
        } else if self.grants.some(area, Access::Read) {
            Ok(true)
        } else {
            self.check(area, "", Access::Read).map(|()| false)
        }
    }
}

/// A listing's body with only the objects `visible` allows, for a
/// principal who may read part of an area; `None` when the answer is not a
/// listing this knows how to cut (then the principal needs the whole
/// area). `framework` is the plugin that answered (empty: the native API).
pub fn visible_listing(
    framework: &str,
    path: &str,
    body: &[u8],
    visible: &dyn Fn(&str) -> bool,
) -> Option<Vec<u8>> {
    use serde_json::Value;
    let by = |key: &'static str| {
        move |v: &Value| v.get(key).and_then(Value::as_str).is_some_and(visible)
    };
    let path = path.trim_end_matches('/');
    if framework == "chronos" && matches!(path, "/scheduler/graph/csv" | "/v1/scheduler/graph/csv")
    {
        // `node,<job>,<last>,<state>` lines.
        let text = std::str::from_utf8(body).ok()?;
        let kept: String = text
            .lines()
            .filter(|l| l.split(',').nth(1).is_some_and(visible))
            .map(|l| format!("{l}\n"))
            .collect();
        return Some(kept.into_bytes());
    }
    // Marathon's facts about itself name no app.
    if framework == "marathon" && matches!(path, "/v2/info" | "/v2/leader") {
        return Some(body.to_vec());
    }
    let mut v: Value = serde_json::from_slice(body).ok()?;
    match (framework, path) {
        ("marathon", "/v2/apps") => retain(v.get_mut("apps")?, by("id"))?,
        ("marathon", "/v2/tasks") => retain(v.get_mut("tasks")?, by("appId"))?,
        ("marathon", "/v2/queue") => retain(v.get_mut("queue")?, |q| {
            ["app", "pod"]
                .iter()
                .filter_map(|k| q[*k]["id"].as_str())
                .any(visible)
        })?,
        // A deployment shows only when every app it touches does.
        ("marathon", "/v2/deployments") => retain(&mut v, |d| {
            d["affectedApps"]
                .as_array()
                .is_some_and(|apps| apps.iter().all(|a| a.as_str().is_some_and(visible)))
        })?,
        ("marathon", "/v2/groups") => {
            v = visible_group(v, visible).unwrap_or_else(|| {
                serde_json::json!({
                    "id": "/", "apps": [], "groups": [], "pods": [], "dependencies": []
                })
            });
        }
        (
            "chronos",
            "/scheduler/jobs"
            | "/v1/scheduler/jobs"
            | "/scheduler/jobs/search"
            | "/v1/scheduler/jobs/search",
        ) => retain(&mut v, by("name"))?,
        // The native API's collections: arrays of objects named by `id`
        // (tasks), `name` (plugins, roles) or `path` (vars).
        ("", _) => retain(&mut v, |o| {
            ["id", "name", "path"]
                .iter()
                .find_map(|k| o[*k].as_str())
                .is_some_and(visible)
        })?,
        _ => return None,
    }
    serde_json::to_vec(&v).ok()
}

/// Keeps the items of a JSON array that `keep` allows; `None` if `v` is
/// not an array.
fn retain(v: &mut serde_json::Value, keep: impl Fn(&serde_json::Value) -> bool) -> Option<()> {
    v.as_array_mut()?.retain(|i| keep(i));
    Some(())
}

/// A Marathon group with only the visible apps, and the subgroups that
/// hold some (or are visible themselves); `None` when nothing is left.
fn visible_group(
    mut g: serde_json::Value,
    visible: &dyn Fn(&str) -> bool,
) -> Option<serde_json::Value> {
    let id = g["id"].as_str().unwrap_or("/").to_string();
    if let Some(apps) = g.get_mut("apps").and_then(|a| a.as_array_mut()) {
        apps.retain(|a| a["id"].as_str().is_some_and(visible));
    }
    if let Some(pods) = g.get_mut("pods").and_then(|a| a.as_array_mut()) {
        pods.retain(|a| a["id"].as_str().is_some_and(visible));
    }
    if let Some(groups) = g.get_mut("groups").and_then(|a| a.as_array_mut()) {
        let kept: Vec<serde_json::Value> = std::mem::take(groups)
            .into_iter()
            .filter_map(|sub| visible_group(sub, visible))
            .collect();
        *groups = kept;
    }
    let empty = |k: &str| g[k].as_array().is_none_or(|a| a.is_empty());
    (id == "/" || visible(&id) || !(empty("apps") && empty("groups") && empty("pods"))).then_some(g)
}

pub fn forbidden(message: String) -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({ "message": message })),
    )
        .into_response()
}

/// `sha256:<hex>` of a token's secret: how the state keeps it.
pub fn hash_secret(secret: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(secret.as_bytes())))
}

/// A new random secret (256 bits, hex).
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// An Argon2id hash of a password, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&bytes).map_err(|e| format!("cannot make a salt: {e}"))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier as _};
    PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Failed password checks within [`PasswordGuard::WINDOW`] by user name,
/// known or not. A name with [`PasswordGuard::MAX_FAILURES`] of them has no
/// password checked until the oldest ages out: guessing one account's
/// password costs a minute per 20 tries (per master), and a locked name is
/// answered exactly as a wrong password is, so it tells nothing about which
/// names exist. Tokens are not limited (they cannot be guessed).
#[derive(Default)]
pub struct PasswordGuard {
    failures: Mutex<HashMap<String, std::collections::VecDeque<Instant>>>,
}

impl PasswordGuard {
    pub const MAX_FAILURES: usize = 20;
    pub const WINDOW: Duration = Duration::from_secs(60);
    /// Names tracked at most (the oldest are forgotten beyond it).
    const MAX_NAMES: usize = 10_000;

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, std::collections::VecDeque<Instant>>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `user`'s passwords are not to be checked now.
    pub fn locked(&self, user: &str, now: Instant) -> bool {
        let mut m = self.lock();
        let Some(q) = m.get_mut(user) else {
            return false;
        };
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Self::WINDOW)
        {
            q.pop_front();
        }
        q.len() >= Self::MAX_FAILURES
    }

    /// Records a failed check; true when it locks the name.
    pub fn failed(&self, user: &str, now: Instant) -> bool {
        let mut m = self.lock();
        if m.len() >= Self::MAX_NAMES && !m.contains_key(user) {
            m.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.duration_since(*t) < Self::WINDOW)
            });
            if m.len() >= Self::MAX_NAMES {
                return false;
            }
        }
        let q = m.entry(user.to_string()).or_default();
        q.push_back(now);
        while q.len() > Self::MAX_FAILURES {
            q.pop_front();
        }
        q.len() == Self::MAX_FAILURES
    }

    /// A right password clears the name's failures.
    pub fn succeeded(&self, user: &str) {
        self.lock().remove(user);
    }
}

/// Recently verified passwords (by a hash of user, password and the stored
/// hash), so that clients sending Basic credentials on every request do not
/// pay for Argon2 every time. A changed password changes the stored hash.
#[derive(Default, Clone)]
pub struct PasswordCache {
    ok: Arc<Mutex<HashMap<[u8; 32], Instant>>>,
}

const PASSWORD_CACHE_TTL: Duration = Duration::from_secs(300);

impl PasswordCache {
    fn verify(&self, user: &str, password: &str, phc: &str) -> bool {
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .chain_update([0])
            .chain_update(phc.as_bytes())
            .finalize()
            .into();
        let now = Instant::now();
        {
            let mut ok = self.ok.lock().unwrap_or_else(|p| p.into_inner());
            if ok
                .get(&key)
                .is_some_and(|t| now.duration_since(*t) < PASSWORD_CACHE_TTL)
            {
                return true;
            }
            if ok.len() > 10_000 {
                ok.retain(|_, t| now.duration_since(*t) < PASSWORD_CACHE_TTL);
            }
        }
        if !verify_password(password, phc) {
            return false;
        }
        self.ok
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, now);
        true
    }
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Credentials a request carries.
enum Credentials {
    Token(String),
    Basic(String, String),
    None,
}

fn credentials(headers: &HeaderMap) -> Credentials {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("token="))
        {
            return Credentials::Token(t.trim().to_string());
        }
        if let Some(b) = v.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok());
            if let Some((u, p)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
                return Credentials::Basic(u.to_string(), p.to_string());
            }
        }
        return Credentials::Token(String::new());
    }
    for c in headers.get_all(header::COOKIE) {
        let Ok(c) = c.to_str() else { continue };
        for pair in c.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=')
                && k == SESSION_COOKIE
            {
                return Credentials::Token(v.to_string());
            }
        }
    }
    Credentials::None
}

/// The principal behind `headers`' credentials, if they are valid.
/// Password checks (Argon2) run off the async threads.
pub async fn authenticate_headers(n: &Node, headers: &HeaderMap) -> Option<Principal> {
    match credentials(headers) {
        Credentials::Token(secret) if !secret.is_empty() => token_principal(n, &secret),
        Credentials::Basic(user, password) => {
            // A token as the password (any user name): for clients that
            // can send only Basic credentials.
            if let Some(p) = token_principal(n, &password) {
                return Some(p);
            }
            let now = Instant::now();
            if n.password_guard.locked(&user, now) {
                return None;
            }
            let found = n.store.read(|s| {
                s.acl
                    .users
                    .get(&user)
                    .map(|u| (u.password_hash.clone(), u.policies.clone()))
            });
            // An unknown user costs as much as a wrong password: the time
            // taken does not tell which names exist.
            let (phc, policies, known) = match found {
                Some((phc, policies)) => (phc, policies, true),
                None => (dummy_hash().to_string(), Vec::new(), false),
            };
            let cache = n.passwords.clone();
            let (u, p) = (user.clone(), password);
            let ok = tokio::task::spawn_blocking(move || cache.verify(&u, &p, &phc))
                .await
                .unwrap_or(false);
            if !(ok && known) {
                if n.password_guard.failed(&user, now) {
                    tracing::warn!(
                        user = %user,
                        "{} wrong passwords for this name within a minute: its passwords are not checked until they age out",
                        PasswordGuard::MAX_FAILURES
                    );
                }
                return None;
            }
            n.password_guard.succeeded(&user);
            Some(Principal::new(Who {
                name: format!("user:{user}"),
                grants: Arc::new(n.store.read(|s| s.acl.grants(false, &policies))),
                session: None,
                management: false,
                policies,
                expires_at: None,
                source: Some(format!("user:{user}")),
            }))
        }
        _ => None,
    }
}

fn token_principal(n: &Node, secret: &str) -> Option<Principal> {
    let hash = hash_secret(secret);
    let now = now_secs();
    n.store.read(|s| {
        let generation = s.acl.generation.get();
        if let Some(p) = n.principals.get(&hash, generation, now) {
            return Some(p);
        }
        let t = s.acl.token(&hash, now)?;
        let p = Principal::new(Who {
            name: if t.session {
                t.name.clone()
            } else {
                format!("token:{}", t.name)
            },
            grants: Arc::new(s.acl.grants(t.management, &t.policies)),
            session: t.session.then(|| t.accessor.clone()),
            management: t.management,
            policies: t.policies.clone(),
            expires_at: t.expires_at,
            source: Some(format!("token:{}", t.accessor)),
        });
        n.principals.put(hash, generation, p.clone());
        Some(p)
    })
}

/// The principals of tokens presented lately, by the token's hash, each
/// with the generation of the ACLs it was made from: a request with the
/// same token skips finding the token and gathering its policies' rules
/// until the ACLs change (any token, user or policy command) or the token
/// expires.
#[derive(Default)]
pub struct PrincipalCache(Mutex<HashMap<String, (u64, Principal)>>);

impl PrincipalCache {
    /// The most principals kept; past it the cache starts over.
    const MAX: usize = 4096;

    fn get(&self, hash: &str, generation: u64, now: f64) -> Option<Principal> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (made_from, p) = map.get(hash)?;
        (*made_from == generation && !p.expires_at.is_some_and(|e| e <= now)).then(|| p.clone())
    }

    fn put(&self, hash: String, generation: u64, p: Principal) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(hash, (generation, p));
    }
}

/// A hash no password matches, verified for unknown users.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&new_secret()).unwrap_or_default())
}

/// 401 with what to do, and the Basic challenge.
/// What the dashboard's scripts send with every call they make.
pub const DASHBOARD_HEADER: &str = "x-wasmos-dashboard";

fn from_dashboard(headers: &axum::http::HeaderMap) -> bool {
    headers.contains_key(DASHBOARD_HEADER)
}

pub fn unauthorized() -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({
            "message": "missing or invalid credentials: send a token (Authorization: Bearer <token>) or a user's password (HTTP Basic); `wasmos login` saves them for the CLI, and `wasmos up` prints the management token"
        })),
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"wasmos\""),
    );
    r
}

/// Paths anyone may reach: liveness, the dashboard's page and static
/// files (its data needs credentials), logging in, and the daemons'
/// endpoints (checked by certificate).
fn public(method: &Method, path: &str) -> bool {
    matches!(path, "/health" | "/version" | "/" | "/favicon.ico")
        || path.starts_with("/ui/")
        || path.starts_with("/internal/")
        || path.starts_with("/raft/")
        || (*method == Method::POST
            && matches!(
                path,
                "/api/wasmos/v1/login" | "/api/wasmos/v1/acl/bootstrap"
            ))
        || (*method == Method::GET && path == "/api/wasmos/v1/whoami")
}

/// What a request of the native API needs; `None` for framework plugins'
/// APIs (checked where the body is read) and for what any principal may do.
pub fn required(method: &Method, path: &str, query: &str) -> Option<(Area, String, Access)> {
    let access = if matches!(*method, Method::GET | Method::HEAD) {
        Access::Read
    } else {
        Access::Write
    };
    // Mesos' legacy maintenance endpoints: reading them, or changing the
    // schedule and machines' modes (as the operator calls do).
    let legacy = path.strip_prefix("/master").unwrap_or(path);
    if matches!(legacy, "/machine/down" | "/machine/up")
        || (legacy == "/maintenance/schedule" && access == Access::Write)
    {
        return Some((Area::Cluster, String::new(), Access::Write));
    }
    if path == "/master/redirect" || crate::mesos::is_legacy_read(path) {
        return Some((Area::Cluster, String::new(), Access::Read));
    }
    // Cosmos' calls are all POSTs: what they change decides. Installing
    // and uninstalling also need the area of what a package makes (the
    // marathon plugin checks the app with the caller's rights).
    // Mesos-DNS' HTTP API: what the cluster's DNS answers.
    if ["/v1/version", "/v1/config"].contains(&path)
        || path.starts_with("/v1/hosts/")
        || path.starts_with("/v1/services/")
    {
        return Some((Area::Cluster, String::new(), Access::Read));
    }
    if path == "/capabilities" {
        return Some((Area::Packages, String::new(), Access::Read));
    }
    if let Some(op) = path.strip_prefix("/package/") {
        let access = match op {
            "install" | "uninstall" | "repository/add" | "repository/delete" => Access::Write,
            _ => Access::Read,
        };
        return Some((Area::Packages, String::new(), access));
    }
    // The objects as the handlers will see them: decoded.
    let decoded = percent_decode(path);
    let rest = decoded.strip_prefix("/api/wasmos/v1/")?;
    let (head, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let r = match head {
        // Draining, deactivating or reactivating an agent changes the
        // cluster (as MARK_AGENT_GONE does).
        "agents" if access == Access::Write => (Area::Cluster, String::new(), Access::Write),
        // Why a framework's apps, jobs or task groups wait: read as the
        // framework's own objects (an app by id, a job by name); without
        // `group`, the whole area.
        "frameworks" if tail.ends_with("/waiting") => {
            let fw = tail.trim_end_matches("/waiting");
            let group = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("group="))
                .map(percent_decode)
                .unwrap_or_default();
            match fw {
                "marathon" => (Area::Apps, group, Access::Read),
                "chronos" => (Area::Jobs, group, Access::Read),
                "exec" => (Area::Tasks, group, Access::Read),
                other => (Area::Frameworks, other.to_string(), Access::Read),
            }
        }
        "cluster" | "history" | "leader" | "agents" | "frameworks" | "events" | "prometheus" => {
            (Area::Cluster, String::new(), Access::Read)
        }
        "masters" => (Area::Masters, tail.to_string(), access),
        "tasks" => {
            let (id, sub) = tail.split_once('/').unwrap_or((tail, ""));
            if sub.starts_with("files") {
                (Area::Files, id.to_string(), Access::Read)
            } else {
                (Area::Tasks, id.to_string(), access)
            }
        }
        "plugins" => {
            let name = tail.split('/').next().unwrap_or("");
            (Area::Plugins, name.to_string(), access)
        }
        "vars" => {
            let object = if tail.is_empty() {
                // A listing under a prefix; a repeated `prefix` is the
                // whole tree (the handler would take one of them).
                let prefixes: Vec<&str> = query
                    .split('&')
                    .filter_map(|kv| kv.strip_prefix("prefix="))
                    .collect();
                match prefixes.as_slice() {
                    [one] => percent_decode(one),
                    _ => String::new(),
                }
            } else {
                tail.to_string()
            };
            (Area::Vars, object, access)
        }
        // Anyone may end their own session.
        "logout" => return None,
        "acl" if tail == "token/self" => return None,
        "acl" => (Area::Acl, String::new(), access),
        // Who may trust a signing key decides what code runs.
        "plugin-keys" => (Area::Acl, String::new(), access),
        "roles" => (Area::Roles, tail.to_string(), access),
        _ => return None,
    };
    Some(r)
}

/// The area a framework plugin's API is in, and the objects a request
/// names (from its path and, for writes, its JSON body): Marathon's apps
/// and groups by id, Chronos' jobs by name, `exec`'s tasks, other
/// frameworks by their name.
pub fn framework_objects(
    framework: &str,
    path: &str,
    body: &[u8],
    write: bool,
) -> (Area, Vec<String>) {
    let from_body = |key: &str| -> Vec<String> {
        if !write {
            return Vec::new();
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Vec::new();
        };
        let items = match &v {
            serde_json::Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        };
        items
            .iter()
            .filter_map(|i| i[key].as_str().map(str::to_string))
            .collect()
    };
    let path = percent_decode(path);
    match framework {
        "marathon" => {
            // The path names an app or group; a write's body may name more
            // (`POST /v2/apps`, `PUT /v2/apps` with many): all are checked,
            // as the plugin will resolve them (dot segments included).
            let mut objects = Vec::new();
            for root in ["/v2/apps", "/v2/groups"] {
                if let Some(rest) = path.strip_prefix(root) {
                    let rest = canonical(rest);
                    let ids: Vec<String> = from_body("id")
                        .into_iter()
                        .map(|id| {
                            if id.starts_with('/') {
                                canonical(&id)
                            } else {
                                canonical(&format!("{rest}/{id}"))
                            }
                        })
                        .collect();
                    // Creating in a collection: the new ids are the objects.
                    if rest == "/" && !ids.is_empty() {
                        objects.extend(ids);
                    } else {
                        objects.push(if rest == "/" { String::new() } else { rest });
                        objects.extend(ids);
                    }
                }
            }
            if objects.is_empty() {
                objects.push(String::new());
            }
            (Area::Apps, objects)
        }
        "chronos" => {
            let p = path.strip_prefix("/v1").unwrap_or(&path);
            let mut objects = Vec::new();
            for root in [
                "/scheduler/job/stat/",
                "/scheduler/task/kill/",
                "/scheduler/job/",
            ] {
                if let Some(name) = p.strip_prefix(root) {
                    objects.push(name.to_string());
                    break;
                }
            }
            objects.extend(from_body("name"));
            if objects.is_empty() {
                objects.push(String::new());
            }
            (Area::Jobs, objects)
        }
        "exec" => (Area::Tasks, vec![String::new()]),
        other => (Area::Frameworks, vec![other.to_string()]),
    }
}

/// `%XX` decoded (invalid escapes kept as they are).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An absolute id with `.` and `..` segments resolved and empty ones
/// dropped, as Marathon resolves ids: `/team-a/../team-b/x` is
/// `/team-b/x`.
pub fn canonical(id: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in id.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Checks a framework API request against the principal's grants.
///
/// `Ok(Some(area))`: a read of a whole collection by a principal who may
/// read part of it; the answer is to be cut to what they may see
/// ([`visible_listing`]).
pub fn check_framework(
    p: &Principal,
    framework: &str,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Result<Option<Area>, ApiError> {
    let access = if matches!(*method, Method::GET | Method::HEAD) {
        Access::Read
    } else {
        Access::Write
    };
    let (area, objects) = framework_objects(framework, path, body, access == Access::Write);
    if access == Access::Read && objects == [""] {
        return Ok(p.listing(area)?.then_some(area));
    }
    for o in objects {
        p.check(area, &o, access)?;
    }
    if access == Access::Write {
        for user in task_users(framework, body) {
            if !p.grants.may_run_as(&user) {
                return Err(ApiError::Forbidden(format!(
                    "{} may not run tasks as {user:?}: no policy of theirs lists it in run_as; leave the user out to run as the agents' unprivileged task user",
                    p.name
                )));
            }
        }
    }
    Ok(None)
}

/// The OS users a framework request asks its tasks to run as: Marathon
/// apps' `user` (also inside groups), Chronos jobs' `runAsUser`, `exec`'s
/// `user`. Empty means the agent's unprivileged default.
pub fn task_users(framework: &str, body: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let key = match framework {
        "marathon" => "user",
        "chronos" => "runAsUser",
        _ => "user",
    };
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, key: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Array(a) => a.iter().for_each(|i| walk(i, key, out)),
            serde_json::Value::Object(o) => {
                if let Some(u) = o.get(key).and_then(|u| u.as_str())
                    && !u.is_empty()
                {
                    out.push(u.to_string());
                }
                for nested in ["apps", "groups"] {
                    if let Some(n) = o.get(nested) {
                        walk(n, key, out);
                    }
                }
            }
            _ => {}
        }
    }
    walk(&v, key, &mut out);
    out
}

/// The middleware: authenticates, checks the native API's permissions,
/// and writes changes to the audit log.
pub async fn middleware(State(n): State<Arc<Node>>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if n.config.tls.is_none() {
        req.extensions_mut().insert(Principal::insecure());
        return next.run(req).await;
    }
    if public(&method, &path) {
        return next.run(req).await;
    }
    let Some(principal) = authenticate_headers(&n, req.headers()).await else {
        let plain = req
            .extensions()
            .get::<axum::extract::ConnectInfo<wasmos_tls::Peer>>()
            .is_some_and(|c| !c.0.tls);
        let req = match n.defer_unknown_credentials(req, plain).await {
            Ok(resp) => return resp,
            Err(req) => req,
        };
        let page = from_dashboard(req.headers());
        drain(req).await;
        let mut r = unauthorized();
        if page {
            // The dashboard shows its login form itself; a challenge would
            // make the browser pop up its own password dialog instead.
            r.headers_mut().remove(header::WWW_AUTHENTICATE);
        }
        return r;
    };
    let mut cut = None;
    if let Some((area, object, access)) = required(&method, &path, req.uri().query().unwrap_or(""))
    {
        let allowed = if access == Access::Read && object.is_empty() {
            principal
                .listing(area)
                .map(|part| cut = part.then_some(area))
        } else {
            principal.check(area, &object, access)
        };
        if let Err(r) = allowed {
            audit(&n, &principal, &method, &path, StatusCode::FORBIDDEN);
            drain(req).await;
            return r.into_response();
        }
    }
    req.extensions_mut().insert(principal.clone());
    let resp = next.run(req).await;
    let resp = match cut {
        Some(area) => cut_listing(&principal, area, "", &path, resp).await,
        None => resp,
    };
    if !matches!(method, Method::GET | Method::HEAD) || resp.status() == StatusCode::FORBIDDEN {
        audit(&n, &principal, &method, &path, resp.status());
    }
    resp
}

/// A successful listing cut to what `p` may read of `area`; 403 (as if
/// the whole area had been asked for) when it is not a listing that can be
/// cut.
pub async fn cut_listing(
    p: &Principal,
    area: Area,
    framework: &str,
    path: &str,
    resp: Response,
) -> Response {
    if resp.status() != StatusCode::OK {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return ApiError::BadGateway("the listing could not be read".into()).into_response();
    };
    let visible = |o: &str| p.grants.allows(area, o, Access::Read);
    match visible_listing(framework, path, &bytes, &visible) {
        Some(cut) => {
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            Response::from_parts(parts, axum::body::Body::from(cut))
        }
        None => match p.check(area, "", Access::Read) {
            Err(e) => e.into_response(),
            Ok(()) => Response::from_parts(parts, axum::body::Body::from(bytes)),
        },
    }
}

/// Reads a refused request's body (up to the usual limit), so that the
/// connection can carry the client's next request: httplib2 (under
/// chronos-python) sends its credentials again on the same connection after
/// the 401's challenge.
async fn drain(req: Request) {
    let _ = axum::body::to_bytes(req.into_body(), 1 << 20).await;
}

/// One line of the audit trail: `<data dir>/audit.log`, JSON per line.
///
/// Written straight into the buffer, and not also logged at info: on the
/// replicated write path a log line per change (formatted, one write to
/// stderr each) cost more than the audit trail itself (BENCHMARKS.md).
pub fn audit(n: &Node, p: &Principal, method: &Method, path: &str, status: StatusCode) {
    tracing::debug!(target: "wasmos::audit", principal = %p.name, %method, path, status = status.as_u16(), "audit");
    n.audit.write(&AuditLine {
        time: now_secs(),
        master: n.store.node_id(),
        principal: &p.name,
        method: method.as_str(),
        path,
        status: status.as_u16(),
    });
}

#[derive(Serialize)]
struct AuditLine<'a> {
    time: f64,
    master: u64,
    principal: &'a str,
    method: &'a str,
    path: &'a str,
    status: u16,
}

/// The audit log file, appended to by one writer at a time.
///
/// Lines are buffered and written out by [`AuditLog::flush`], which the
/// master calls every [`AUDIT_FLUSH`] (and when it stops): one write per
/// interval instead of one per change, which on the replicated write path
/// cost as much as TLS.
pub struct AuditLog {
    file: Mutex<Option<std::io::BufWriter<std::fs::File>>>,
}

/// How often buffered audit lines reach the file.
pub const AUDIT_FLUSH: std::time::Duration = std::time::Duration::from_millis(200);

impl AuditLog {
    pub fn open(path: &std::path::Path) -> AuditLog {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| tracing::error!(path = %path.display(), error = %e, "cannot open the audit log"))
            .ok()
            .map(|f| std::io::BufWriter::with_capacity(64 << 10, f));
        AuditLog {
            file: Mutex::new(file),
        }
    }

    fn write(&self, line: &AuditLine<'_>) {
        use std::io::Write as _;
        if let Some(f) = self.file.lock().unwrap_or_else(|p| p.into_inner()).as_mut()
            && (serde_json::to_writer(&mut *f, line).is_err() || f.write_all(b"\n").is_err())
        {
            tracing::error!("cannot write the audit log");
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&self) {
        use std::io::Write as _;
        if let Some(f) = self.file.lock().unwrap_or_else(|p| p.into_inner()).as_mut()
            && f.flush().is_err()
        {
            tracing::error!("cannot write the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_principal_serves_only_its_acl_generation_and_only_until_it_expires() {
        let who = |expires_at| {
            Principal::new(Who {
                name: "token:t".into(),
                grants: Arc::new(Grants::default()),
                session: None,
                management: false,
                policies: Vec::new(),
                expires_at,
                source: None,
            })
        };
        let cache = PrincipalCache::default();
        cache.put("sha256:a".into(), 7, who(Some(100.0)));
        cache.put("sha256:b".into(), 7, who(None));
        assert!(cache.get("sha256:a", 7, 99.0).is_some());
        assert!(cache.get("sha256:a", 8, 99.0).is_none(), "the ACLs changed");
        assert!(cache.get("sha256:a", 7, 100.0).is_none(), "expired");
        assert!(cache.get("sha256:b", 7, 1e12).is_some());
        assert!(cache.get("sha256:c", 7, 1.0).is_none());
        for i in 0..PrincipalCache::MAX {
            cache.put(format!("sha256:{i}"), 7, who(None));
        }
        let kept = cache.0.lock().unwrap().len();
        assert!(kept <= PrincipalCache::MAX, "{kept} principals kept");
    }

    #[test]
    fn twenty_wrong_passwords_lock_a_name_for_a_minute() {
        let g = PasswordGuard::default();
        let t0 = Instant::now();
        for i in 0..PasswordGuard::MAX_FAILURES {
            assert!(!g.locked("alice", t0), "locked after {i}");
            let locks = g.failed("alice", t0 + Duration::from_millis(i as u64));
            assert_eq!(locks, i + 1 == PasswordGuard::MAX_FAILURES);
        }
        assert!(g.locked("alice", t0 + Duration::from_secs(1)));
        assert!(!g.locked("bob", t0), "other names are not locked");
        // The oldest failure ages out: one more try.
        assert!(!g.locked("alice", t0 + PasswordGuard::WINDOW));
        // A right password clears the count.
        g.failed("bob", t0);
        g.succeeded("bob");
        assert!(g.lock().get("bob").is_none());
    }

    fn cut(framework: &str, path: &str, body: &str) -> Option<String> {
        let visible = |id: &str| id.starts_with("/a/") || id.starts_with("a-");
        visible_listing(framework, path, body.as_bytes(), &visible)
            .map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn listings_keep_only_what_the_principal_may_read() {
        let apps = r#"{"apps":[{"id":"/a/web"},{"id":"/b/db"}]}"#;
        assert_eq!(
            cut("marathon", "/v2/apps/", apps).unwrap(),
            r#"{"apps":[{"id":"/a/web"}]}"#
        );
        let tasks = r#"{"tasks":[{"appId":"/b/db"},{"appId":"/a/web"}]}"#;
        assert_eq!(
            cut("marathon", "/v2/tasks", tasks).unwrap(),
            r#"{"tasks":[{"appId":"/a/web"}]}"#
        );
        // A deployment shows only if every app it touches may be seen.
        let deps = r#"[{"affectedApps":["/a/web"]},{"affectedApps":["/a/web","/b/db"]}]"#;
        assert_eq!(
            cut("marathon", "/v2/deployments", deps).unwrap(),
            r#"[{"affectedApps":["/a/web"]}]"#
        );
        let queue = r#"{"queue":[{"app":{"id":"/b/db"}},{"pod":{"id":"/a/p"}}]}"#;
        assert_eq!(
            cut("marathon", "/v2/queue", queue).unwrap(),
            r#"{"queue":[{"pod":{"id":"/a/p"}}]}"#
        );
        let root = r#"{"id":"/","apps":[{"id":"/top"}],"groups":[
            {"id":"/a","apps":[{"id":"/a/web"}],"groups":[]},
            {"id":"/b","apps":[{"id":"/b/db"}],"groups":[]}]}"#;
        let g: serde_json::Value =
            serde_json::from_str(&cut("marathon", "/v2/groups", root).unwrap()).unwrap();
        assert_eq!(g["apps"], serde_json::json!([]));
        assert_eq!(g["groups"].as_array().unwrap().len(), 1, "{g}");
        assert_eq!(g["groups"][0]["apps"][0]["id"], "/a/web");
        // Chronos: jobs by name, the CSV graph by its second field.
        let jobs = r#"[{"name":"a-1"},{"name":"b-1"}]"#;
        assert_eq!(
            cut("chronos", "/scheduler/jobs", jobs).unwrap(),
            r#"[{"name":"a-1"}]"#
        );
        let csv = "node,a-1,success,idle\nnode,b-1,failure,idle\n";
        assert_eq!(
            cut("chronos", "/v1/scheduler/graph/csv", csv).unwrap(),
            "node,a-1,success,idle\n"
        );
        // The native API's arrays by id, name or path.
        let native = r#"[{"id":"a-t"},{"name":"b"},{"path":"a-v"}]"#;
        assert_eq!(
            cut("", "/api/wasmos/v1/tasks", native).unwrap(),
            r#"[{"id":"a-t"},{"path":"a-v"}]"#
        );
        // What cannot be cut is not shown at all.
        assert_eq!(cut("marathon", "/v2/pods", "[]"), None);
        assert_eq!(cut("chronos", "/scheduler/graph/dot", "digraph{}"), None);
        assert_eq!(cut("", "/api/wasmos/v1/cluster", "{}"), None);
    }

    #[test]
    fn ids_resolve_dot_segments_and_percent_escapes_as_marathon_would() {
        assert_eq!(canonical("/team-a/../team-b/x"), "/team-b/x");
        assert_eq!(canonical("team-a/./web/"), "/team-a/web");
        assert_eq!(canonical("/../../x"), "/x");
        assert_eq!(percent_decode("/a/%2e%2E/b%2"), "/a/../b%2");
    }

    #[test]
    fn marathon_requests_name_the_path_and_for_writes_the_body_ids() {
        let body = br#"{"id": "/team-a/x"}"#;
        let objects = |path: &str, write: bool| framework_objects("marathon", path, body, write).1;
        // Creating in the collection: the new id.
        assert_eq!(objects("/v2/apps", true), ["/team-a/x"]);
        // Naming an app: the path, whatever the body says (and the body too).
        assert_eq!(
            objects("/v2/apps/team-b/db", true),
            ["/team-b/db", "/team-a/x"]
        );
        // A read: the path only.
        assert_eq!(objects("/v2/apps", false), [""]);
        assert_eq!(objects("/v2/apps/team-a/%2e%2e/team-b", false), ["/team-b"]);
        let relative = framework_objects("marathon", "/v2/groups/g", br#"{"id": "../h"}"#, true).1;
        assert_eq!(relative, ["/g", "/h"]);
    }

    #[test]
    fn chronos_requests_name_their_job_once() {
        let o = |p: &str| framework_objects("chronos", p, b"", false).1;
        assert_eq!(o("/v1/scheduler/job/stat/nightly"), ["nightly"]);
        assert_eq!(o("/scheduler/job/nightly"), ["nightly"]);
        assert_eq!(o("/scheduler/jobs"), [""]);
    }

    #[test]
    fn task_users_are_found_in_apps_groups_and_jobs() {
        let body = br#"{"id": "/g", "apps": [{"id": "a", "user": "root"}], "groups": [{"apps": [{"user": "daemon"}]}]}"#;
        assert_eq!(task_users("marathon", body), ["root", "daemon"]);
        assert_eq!(task_users("chronos", br#"{"runAsUser": "root"}"#), ["root"]);
        assert!(task_users("exec", br#"{"cmd": "true"}"#).is_empty());
    }

    #[test]
    fn the_native_api_maps_to_areas_and_reads_or_writes() {
        let r = |m: Method, p: &str, q: &str| required(&m, p, q);
        assert_eq!(
            r(Method::POST, "/api/wasmos/v1/tasks/t1/kill", ""),
            Some((Area::Tasks, "t1".into(), Access::Write))
        );
        assert_eq!(
            r(Method::GET, "/api/wasmos/v1/tasks/t1/files/read", ""),
            Some((Area::Files, "t1".into(), Access::Read))
        );
        // Placement records are read as what they are about.
        assert_eq!(
            r(Method::GET, "/api/wasmos/v1/tasks/t1/placement", ""),
            Some((Area::Tasks, "t1".into(), Access::Read))
        );
        assert_eq!(
            r(
                Method::GET,
                "/api/wasmos/v1/frameworks/marathon/waiting",
                "group=%2Fteam-a%2Fweb"
            ),
            Some((Area::Apps, "/team-a/web".into(), Access::Read))
        );
        assert_eq!(
            r(Method::GET, "/api/wasmos/v1/frameworks/chronos/waiting", ""),
            Some((Area::Jobs, String::new(), Access::Read))
        );
        assert_eq!(
            r(
                Method::GET,
                "/api/wasmos/v1/frameworks/hello/waiting",
                "group=x"
            ),
            Some((Area::Frameworks, "hello".into(), Access::Read))
        );
        assert_eq!(
            r(Method::GET, "/api/wasmos/v1/vars", "prefix=a%2Fb/&x=1"),
            Some((Area::Vars, "a/b/".into(), Access::Read))
        );
        assert_eq!(
            r(Method::GET, "/api/wasmos/v1/vars", "prefix=a/&prefix=b/"),
            Some((Area::Vars, String::new(), Access::Read))
        );
        assert_eq!(
            r(Method::GET, "/master/redirect", ""),
            Some((Area::Cluster, String::new(), Access::Read))
        );
        // Trusting a signing key is an ACL change, not a plugin install.
        assert_eq!(
            r(Method::POST, "/api/wasmos/v1/plugin-keys", ""),
            Some((Area::Acl, String::new(), Access::Write))
        );
        assert_eq!(r(Method::GET, "/v2/apps", ""), None);
    }
}
