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

/// Who made a request, and what they may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `token:<name>`, `user:<name>`, or `anonymous` under --insecure.
    pub name: String,
    pub grants: Arc<Grants>,
    /// The session token's accessor, for logging out.
    pub session: Option<String>,
}

impl Principal {
    /// Everything allowed (--insecure, where nothing is authenticated).
    pub fn insecure() -> Principal {
        Principal {
            name: "anonymous".into(),
            grants: Arc::new(Grants::all()),
            session: None,
        }
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

/// Recently verified passwords (by a hash of user, password and the stored
/// hash), so that clients sending Basic credentials on every request do not
/// pay for Argon2 every time. A changed password changes the stored hash.
#[derive(Default)]
pub struct PasswordCache {
    ok: Mutex<HashMap<[u8; 32], Instant>>,
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
pub fn authenticate_headers(n: &Node, headers: &HeaderMap) -> Option<Principal> {
    let now = now_secs();
    match credentials(headers) {
        Credentials::Token(secret) if !secret.is_empty() => {
            let hash = hash_secret(&secret);
            n.store.read(|s| {
                let t = s.acl.token(&hash, now)?;
                Some(Principal {
                    name: if t.session {
                        t.name.clone()
                    } else {
                        format!("token:{}", t.name)
                    },
                    grants: Arc::new(s.acl.grants(t.management, &t.policies)),
                    session: t.session.then(|| t.accessor.clone()),
                })
            })
        }
        Credentials::Basic(user, password) => {
            // A token as the password (any user name): for clients that
            // can send only Basic credentials.
            if let Some(p) = authenticate_headers(n, &bearer(&password)) {
                return Some(p);
            }
            let (phc, policies) = n.store.read(|s| {
                s.acl
                    .users
                    .get(&user)
                    .map(|u| (u.password_hash.clone(), u.policies.clone()))
            })?;
            if !n.passwords.verify(&user, &password, &phc) {
                return None;
            }
            Some(Principal {
                name: format!("user:{user}"),
                grants: Arc::new(n.store.read(|s| s.acl.grants(false, &policies))),
                session: None,
            })
        }
        _ => None,
    }
}

fn bearer(secret: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {secret}")) {
        h.insert(header::AUTHORIZATION, v);
    }
    h
}

/// 401 with what to do, and the Basic challenge.
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
    if path == "/master/redirect" {
        return Some((Area::Cluster, String::new(), Access::Read));
    }
    let rest = path.strip_prefix("/api/wasmos/v1/")?;
    let (head, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let r = match head {
        "cluster" | "leader" | "agents" | "frameworks" | "events" => {
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
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("prefix="))
                    .unwrap_or("")
                    .to_string()
            } else {
                tail.to_string()
            };
            (Area::Vars, object, access)
        }
        // Anyone may end their own session.
        "logout" => return None,
        "acl" if tail == "token/self" => return None,
        "acl" => (Area::Acl, String::new(), access),
        _ => return None,
    };
    Some(r)
}

/// The area a framework plugin's API is in, and the objects a request
/// names (from its path and, for writes, its JSON body): Marathon's apps
/// and groups by id, Chronos' jobs by name, `exec`'s tasks, other
/// frameworks by their name.
pub fn framework_objects(framework: &str, path: &str, body: &[u8]) -> (Area, Vec<String>) {
    let from_body = |key: &str| -> Vec<String> {
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
    match framework {
        "marathon" => {
            // A write names its apps in the body (`POST /v2/apps`,
            // `PUT /v2/apps` with many); otherwise the path does.
            let mut objects = Vec::new();
            for root in ["/v2/apps", "/v2/groups"] {
                if let Some(rest) = path.strip_prefix(root) {
                    let ids: Vec<String> = from_body("id")
                        .into_iter()
                        .map(|id| {
                            if id.starts_with('/') {
                                id
                            } else {
                                format!("{}/{id}", rest.trim_end_matches('/'))
                            }
                        })
                        .collect();
                    if ids.is_empty() {
                        objects.push(rest.to_string());
                    } else {
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
            let p = path.strip_prefix("/v1").unwrap_or(path);
            let mut objects = Vec::new();
            for root in [
                "/scheduler/job/",
                "/scheduler/task/kill/",
                "/scheduler/job/stat/",
            ] {
                if let Some(name) = p.strip_prefix(root) {
                    objects.push(name.to_string());
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

/// Checks a framework API request against the principal's grants.
pub fn check_framework(
    p: &Principal,
    framework: &str,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Result<(), ApiError> {
    let access = if matches!(*method, Method::GET | Method::HEAD) {
        Access::Read
    } else {
        Access::Write
    };
    let (area, objects) = framework_objects(framework, path, body);
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
    Ok(())
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
    let Some(principal) = authenticate_headers(&n, req.headers()) else {
        drain(req).await;
        return unauthorized();
    };
    if let Some((area, object, access)) = required(&method, &path, req.uri().query().unwrap_or(""))
        && let Err(r) = principal.check(area, &object, access)
    {
        audit(&n, &principal, &method, &path, StatusCode::FORBIDDEN);
        drain(req).await;
        return r.into_response();
    }
    req.extensions_mut().insert(principal.clone());
    let resp = next.run(req).await;
    if !matches!(method, Method::GET | Method::HEAD) || resp.status() == StatusCode::FORBIDDEN {
        audit(&n, &principal, &method, &path, resp.status());
    }
    resp
}

/// Reads a refused request's body (up to the usual limit), so that the
/// connection can carry the client's next request: httplib2 (under
/// chronos-python) sends its credentials again on the same connection after
/// the 401's challenge.
async fn drain(req: Request) {
    let _ = axum::body::to_bytes(req.into_body(), 1 << 20).await;
}

/// One line of the audit trail: `<data dir>/audit.log`, JSON per line.
pub fn audit(n: &Node, p: &Principal, method: &Method, path: &str, status: StatusCode) {
    let line = json!({
        "time": now_secs(),
        "master": n.store.node_id(),
        "principal": p.name,
        "method": method.as_str(),
        "path": path,
        "status": status.as_u16(),
    });
    tracing::info!(target: "wasmos::audit", principal = %p.name, %method, path, status = status.as_u16(), "audit");
    n.audit.write(&line.to_string());
}

/// The audit log file, appended to by one writer at a time.
pub struct AuditLog {
    file: Mutex<Option<std::fs::File>>,
}

impl AuditLog {
    pub fn open(path: &std::path::Path) -> AuditLog {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| tracing::error!(path = %path.display(), error = %e, "cannot open the audit log"))
            .ok();
        AuditLog {
            file: Mutex::new(file),
        }
    }

    fn write(&self, line: &str) {
        use std::io::Write as _;
        if let Some(f) = self.file.lock().unwrap_or_else(|p| p.into_inner()).as_mut()
            && writeln!(f, "{line}").is_err()
        {
            tracing::error!("cannot write the audit log");
        }
    }
}
