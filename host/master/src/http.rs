//! The master's HTTP surface, on one listener:
//! - `/api/wasmos/v1/...`: the native API (the CLI and dashboard use only this);
//! - `/internal/v1/...`: agents register, heartbeat, send status updates,
//!   executors' messages and exits;
//! - `/frameworks/<name>/...`: framework plugins' own APIs;
//! - `/health`, `/version`, and the dashboard at `/`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequestParts, OriginalUri, Path, Query, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use futures::{Stream, StreamExt};
use serde_json::json;
use tokio_stream::wrappers::BroadcastStream;
use wasmos_core::protocol::{self, Heartbeat, HeartbeatReply, RegisterAgent, Registered};
use wasmos_core::{AgentId, FrameworkId, TaskId, TaskState};
use wasmos_runtime::framework::HttpRequest;
use wasmos_state::StatusOutcome;
use wasmos_state::acl::{Access, Area};
use wasmos_tls::{Identity, Peer};

use crate::auth::Principal;
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::frameworks::into_response;
use crate::leader::Leader;
use crate::node::Node;
use crate::ui;
use crate::views::{AgentView, ClusterView, FrameworkView, PluginView, TaskView};

/// The leader, for handlers only a leader can answer. On a follower the
/// extraction fails with a 307 to the leader (or 503 while none is known).
pub struct Lead(pub Arc<Leader>);

impl FromRequestParts<Arc<Node>> for Lead {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Self, Response> {
        // Inside nested routers `parts.uri` lost its prefix.
        let uri = parts
            .extensions
            .get::<OriginalUri>()
            .map(|o| o.0.clone())
            .unwrap_or_else(|| parts.uri.clone());
        // A client on the plaintext listener of a TLS cluster (it speaks
        // no TLS) is sent to the leader's plaintext listener. (Under
        // --insecure every listener is plain: the usual redirect.)
        let plain = node.tls.is_some()
            && parts
                .extensions
                .get::<axum::extract::ConnectInfo<wasmos_tls::Peer>>()
                .is_some_and(|c| !c.0.tls);
        let lead = node.leader().map(Lead).ok_or_else(|| {
            if plain {
                node.redirect_plain(&uri)
            } else {
                node.redirect(&uri)
            }
        })?;
        // A read is answered from the cluster's latest state: a leader
        // that was paused, or is cut off and has not noticed, answers 503
        // rather than a state a newer leader has moved past. (Writes are
        // safe without: they must commit with a majority.)
        if parts.method == Method::GET || parts.method == Method::HEAD {
            lead.0
                .store
                .confirm_latest(CONFIRM_READS_WITHIN)
                .await
                .map_err(|e| ApiError::from(e).into_response())?;
        }
        Ok(lead)
    }
}

/// How long a leader may take to confirm it still leads before a read.
pub(crate) const CONFIRM_READS_WITHIN: Duration = Duration::from_secs(2);

type NodeState = State<Arc<Node>>;

/// Builds the router.
pub fn router(node: Arc<Node>) -> Router {
    let max_body = node.config.max_body;
    let agents_only = Router::new()
        .route(protocol::paths::REGISTER, post(register))
        .route(protocol::paths::HEARTBEAT, post(heartbeat))
        .route(protocol::paths::STATUS, post(status_update))
        .route(protocol::paths::FROM_EXECUTOR, post(from_executor))
        .route(protocol::paths::EXECUTOR_EXITED, post(executor_exited))
        .route(protocol::paths::PLUGINS, get(agent_plugins))
        .route(protocol::paths::PROXY, get(proxy_table))
        .route("/internal/v1/plugins/{name}", get(agent_plugin_component))
        .route(protocol::paths::RENEW, post(renew))
        .route_layer(middleware::from_fn_with_state(node.clone(), require_agent));
    let masters_only = Router::new()
        .route(
            "/raft/v1/{op}",
            post(raft_rpc).layer(DefaultBodyLimit::max(MAX_RAFT_BODY)),
        )
        .route_layer(middleware::from_fn_with_state(node.clone(), require_master));
    let internal = agents_only
        .merge(masters_only)
        .route(protocol::paths::JOIN, post(join));
    let api = Router::new()
        .route(v1!("/cluster"), get(cluster))
        .route(v1!("/history"), get(history))
        .route(v1!("/leader"), get(leader_info))
        .route(v1!("/masters"), get(masters).post(add_master))
        .route(v1!("/masters/{id}"), axum::routing::delete(remove_master))
        .route(v1!("/agents"), get(agents))
        .route(v1!("/agents/{id}"), get(agent))
        .route(v1!("/agents/{id}/metrics"), get(agent_metrics))
        .route(v1!("/agents/{id}/drain"), post(drain_agent))
        .route(v1!("/agents/{id}/deactivate"), post(deactivate_agent))
        .route(v1!("/agents/{id}/reactivate"), post(reactivate_agent))
        .route(v1!("/prometheus/targets"), get(prometheus_targets))
        .route(v1!("/frameworks"), get(frameworks))
        .route(v1!("/frameworks/{id}"), get(framework))
        .route(v1!("/frameworks/{id}/waiting"), get(framework_waiting))
        .route(v1!("/tasks"), get(tasks))
        .route(v1!("/tasks/{id}"), get(task))
        .route(v1!("/tasks/{id}/kill"), post(kill))
        .route(v1!("/tasks/{id}/placement"), get(task_placement))
        .route(v1!("/tasks/{id}/files/{op}"), get(files))
        .route(
            v1!("/plugins"),
            get(plugins)
                .post(install_plugin)
                .layer(DefaultBodyLimit::max(
                    crate::plugins::MAX_COMPONENT / 3 * 4 + (1 << 20),
                )),
        )
        .route(v1!("/plugins/{name}"), get(plugin).delete(remove_plugin))
        .route(
            v1!("/plugins/{name}/config"),
            axum::routing::patch(configure_plugin),
        )
        .route(v1!("/plugins/{name}/rollback"), post(rollback_plugin))
        .route(v1!("/plugins/{name}/logs"), get(plugin_logs))
        .route(v1!("/events"), get(events))
        .merge(crate::vars::routes())
        .merge(crate::acl::routes())
        .merge(crate::trust::routes())
        .merge(crate::roles::routes());
    Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/version", get(version))
        .route("/master/redirect", get(master_redirect))
        .route("/", get(dashboard))
        .route("/ui/{file}", get(ui::asset))
        .route("/frameworks/{name}", any(framework_http_root))
        .route("/frameworks/{name}/", any(framework_http_root))
        .route("/frameworks/{name}/{*rest}", any(framework_http))
        .merge(api)
        .merge(crate::mesos::routes())
        .merge(crate::catalogue::routes())
        .merge(crate::dns::routes())
        .merge(internal)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            node.clone(),
            crate::auth::middleware,
        ))
        .layer(tower::util::MapResponseLayer::new(close_after_unread_body))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(max_body, refuse_oversized))
        .with_state(node)
}

/// The most an oversized body is read (and dropped) before its 413.
const MAX_DRAIN: usize = 16 << 20;

/// A body whose `Content-Length` is over its route's limit is refused with
/// a 413 at once, after reading and dropping it (up to [`MAX_DRAIN`], for
/// 5 s at most): closing on unread data would reset the connection, and
/// a client still sending would lose the answer.
async fn refuse_oversized(
    State(max_body): State<usize>,
    req: Request,
    next: middleware::Next,
) -> Response {
    let path = req.uri().path();
    let limit = if path.starts_with("/raft/") {
        MAX_RAFT_BODY
    } else if path == v1!("/plugins") {
        crate::plugins::MAX_COMPONENT / 3 * 4 + (1 << 20)
    } else {
        max_body
    };
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(length) = length.filter(|l| *l > limit as u64) else {
        return next.run(req).await;
    };
    let body = req.into_body();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        axum::body::to_bytes(body, MAX_DRAIN),
    )
    .await;
    let mut resp = ApiError::Rejection {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!("the request body ({length} bytes) is larger than the {limit}-byte limit"),
    }
    .into_response();
    resp.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    resp
}

/// Raft entries carry plugin components; snapshots carry all of them.
const MAX_RAFT_BODY: usize = 512 << 20;

/// A raft RPC from another master.
async fn raft_rpc(
    State(n): NodeState,
    Path(op): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body?;
    let codec = wasmos_store::Codec::from_content_type(
        headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let header_of = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let from = header_of(wasmos_store::incarnation::HEADER);
    let expected = header_of(wasmos_store::incarnation::EXPECTED);
    let mut resp = match n.store.handle_rpc(&op, codec, &body, from, expected).await {
        Ok(answer) => typed(codec.content_type(), answer),
        Err(why) => ApiError::BadRequest(why).into_response(),
    };
    if let Ok(v) = header::HeaderValue::from_str(n.store.incarnation()) {
        resp.headers_mut()
            .insert(wasmos_store::incarnation::HEADER, v);
    }
    Ok(resp)
}

/// The dashboard is served by the leader (its API calls go there too).
async fn dashboard(Lead(_l): Lead) -> Response {
    ui::index().await.into_response()
}

/// Mesos' `/master/redirect`: 307 to the leader's base URL.
async fn master_redirect(State(n): NodeState) -> Response {
    if n.leader().is_some() {
        let mut resp = StatusCode::TEMPORARY_REDIRECT.into_response();
        if let Ok(v) = header::HeaderValue::from_str(&n.url) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return resp;
    }
    n.redirect(&Uri::from_static(""))
}

/// Who leads, as this master sees it.
async fn leader_info(State(n): NodeState) -> ApiJson<serde_json::Value> {
    let l = n.leadership();
    let role = if n.leader().is_some() {
        "leader"
    } else if l.is_me {
        "starting"
    } else if n
        .store
        .members()
        .iter()
        .any(|m| m.id == n.store.node_id() && m.voter)
    {
        "follower"
    } else {
        "learner"
    };
    ApiJson(json!({
        "term": l.term,
        "leader": l.leader.map(|(id, address)| json!({ "id": id, "address": address })),
        "this_master": { "id": n.store.node_id(), "address": n.url, "role": role },
    }))
}

/// A member that has not answered the leader for this long is shown as
/// unreachable (raft heartbeats go out every 50 ms by default).
const UNREACHABLE_AFTER_MS: u64 = 2000;

async fn masters(State(n): NodeState) -> ApiJson<serde_json::Value> {
    let l = n.leadership();
    let leader = l.leader.as_ref().map(|(id, _)| *id);
    let is_leader = leader == Some(n.store.node_id());
    let members: Vec<serde_json::Value> = n
        .store
        .members()
        .into_iter()
        .map(|m| {
            // Only the leader hears from every member: elsewhere a member's
            // reachability is unknown, not assumed.
            let silent = m.last_ack_ms.is_none_or(|ms| ms > UNREACHABLE_AFTER_MS);
            let role = if Some(m.id) == leader {
                "leader"
            } else if is_leader && silent {
                "unreachable"
            } else if m.voter {
                "follower"
            } else {
                "learner"
            };
            json!({
                "id": m.id,
                "address": m.addr,
                "role": role,
                "voter": m.voter,
                "matched_index": m.matched,
                "last_ack_ms": m.last_ack_ms,
            })
        })
        .collect();
    ApiJson(json!({
        "leader": l.leader.map(|(id, address)| json!({ "id": id, "address": address })),
        "term": l.term,
        "masters": members,
        "retired": n.store.read(|s| s.retired_masters.clone()),
        "this_master": n.store.raft_status(),
    }))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMaster {
    id: u64,
    address: String,
}

/// Adds a master (on the raft leader; followers redirect).
async fn add_master(
    State(n): NodeState,
    OriginalUri(uri): OriginalUri,
    ApiJson(req): ApiJson<AddMaster>,
) -> ApiResult<Response> {
    if !n.leadership().is_me {
        return Ok(n.redirect(&uri));
    }
    let address = req.address.trim_end_matches('/').to_string();
    let url = reqwest::Url::parse(&address)
        .map_err(|e| ApiError::BadRequest(format!("address {address:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::BadRequest(format!(
            "address {address:?} must be an http(s) URL"
        )));
    }
    n.store
        .add_member(req.id, &address, std::time::Duration::from_secs(60))
        .await?;
    tracing::info!(id = req.id, %address, "master added");
    Ok((
        StatusCode::CREATED,
        ApiJson(json!({ "id": req.id, "address": address, "role": "follower" })),
    )
        .into_response())
}

/// Removes a master for good (on the raft leader; followers redirect).
async fn remove_master(
    State(n): NodeState,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("master id {id:?} is not a number")))?;
    if !n.leadership().is_me {
        return Ok(n.redirect(&uri));
    }
    n.store.remove_member(id).await?;
    tracing::info!(id, "master removed; its id is retired");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A body refused for its size was not read to its end, so the connection
/// cannot carry another request: tell the client, or it would reuse it and
/// see its next request fail.
fn close_after_unread_body(mut resp: Response) -> Response {
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    resp
}

/// Paths no route matched: a framework plugin's root prefix (`/v2` for
/// Marathon) when one holds it, otherwise 404.
async fn not_found(
    State(n): NodeState,
    principal: Option<axum::Extension<Principal>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(axum::Extension(principal)) = principal else {
        // Only public paths come without one: none of them is here.
        return ApiError::NotFound(format!("no endpoint {method} {}", uri.path())).into_response();
    };
    let path = uri.path();
    // Prometheus (by its Accept header) gets this master's metrics, on
    // followers too; other clients the frameworks' JSON below.
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if path == "/metrics"
        && matches!(method, Method::GET | Method::HEAD)
        && let Some(content_type) = crate::metrics::prometheus_type(accept)
    {
        if let Err(r) = principal.check(Area::Cluster, "", Access::Read) {
            return r.into_response();
        }
        return (
            [(header::CONTENT_TYPE, content_type)],
            crate::metrics::render(&n),
        )
            .into_response();
    }
    if wasmos_core::plugin::SHARED_PREFIXES.contains(&path) {
        let holders: Vec<String> = n.store.read(|s| {
            s.plugins
                .values()
                .filter(|p| p.manifest.http_prefixes.iter().any(|q| q == path))
                .map(|p| p.manifest.name.clone())
                .collect()
        });
        if !holders.is_empty() {
            if let Err(r) = principal.check(Area::Cluster, "", Access::Read) {
                return r.into_response();
            }
            return shared_endpoint(&n, &method, &uri, &headers, holders).await;
        }
    }
    // The longest prefix that holds the path wins (`/v1/scheduler` over a
    // hypothetical `/v1`).
    let owner = n.store.read(|s| {
        s.plugins
            .values()
            .filter_map(|p| {
                let longest = p
                    .manifest
                    .http_prefixes
                    .iter()
                    .filter(|q| wasmos_core::plugin::prefix_holds(q, path))
                    .map(String::len)
                    .max()?;
                let stream = p.manifest.event_streams.iter().any(|e| e == path);
                Some((longest, p.manifest.name.clone(), stream))
            })
            .max_by_key(|(len, _, _)| *len)
    });
    let Some((_, name, is_stream)) = owner else {
        return ApiError::NotFound(format!("no endpoint {method} {path}")).into_response();
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let cut = match crate::auth::check_framework(&principal, &name, &method, uri.path(), &body) {
        Ok(cut) => cut,
        Err(r) => return r.into_response(),
    };
    // The leader cuts listings (a forwarded request is checked again
    // there); a stream of everything cannot be cut.
    if is_stream
        && let Some(area) = cut
        && let Err(e) = principal.check(area, "", Access::Read)
    {
        return e.into_response();
    }
    let Some(l) = n.leader() else {
        // Forwarded to the leader, event streams included (relayed for as
        // long as they last).
        return if is_stream && method == Method::GET {
            n.proxy_stream(&uri, &headers).await
        } else {
            n.proxy(&method, &uri, &headers, body).await
        };
    };
    // The plugin sees the whole path, as it does below `/frameworks/<name>`.
    let path = uri.path().to_string();
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    if is_stream && wants_stream && method == Method::GET {
        let forwarded: Vec<(String, String)> = plugin_headers(&headers, &principal)
            .into_iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case(EVENTS_AFTER))
            .collect();
        let query = uri.query().unwrap_or("").to_string();
        return event_stream(l, name, path, query, forwarded);
    }
    serve_framework(
        Lead(l),
        &principal,
        cut,
        name,
        path,
        method,
        uri,
        headers,
        body,
    )
    .await
}

/// `/ping` and `/metrics`, which several frameworks may declare: the master
/// answers `/ping` as Marathon and Chronos do (`pong`, or the JSON string
/// when the client prefers JSON), and merges the Dropwizard-style JSON of
/// every holder's `/metrics` (their metric names carry their own prefixes).
async fn shared_endpoint(
    n: &Node,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    holders: Vec<String>,
) -> Response {
    if *method != Method::GET && *method != Method::HEAD {
        return ApiError::Rejection {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("{method} {} is not allowed; GET it", uri.path()),
        }
        .into_response();
    }
    if uri.path() == "/ping" {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return if accept.contains("application/json") && !accept.contains("text/plain") {
            axum::Json(json!("pong")).into_response()
        } else {
            (
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "pong\n",
            )
                .into_response()
        };
    }
    let Some(l) = n.leader() else {
        return n.redirect(uri);
    };
    let mut merged = serde_json::Map::new();
    for name in holders {
        let req = HttpRequest {
            method: "GET".into(),
            path: uri.path().to_string(),
            query: uri.query().unwrap_or("").to_string(),
            headers: vec![("accept".into(), "application/json".into())],
            body: Vec::new(),
        };
        let part = match call_framework(&l, &name, req).await {
            Ok(r) if r.status == 200 => {
                serde_json::from_slice::<serde_json::Value>(&r.body).unwrap_or_default()
            }
            Ok(r) => {
                tracing::debug!(framework = %name, status = r.status, "metrics not served");
                continue;
            }
            Err(e) => {
                tracing::debug!(framework = %name, error = %e, "metrics not served");
                continue;
            }
        };
        let serde_json::Value::Object(part) = part else {
            continue;
        };
        for (k, v) in part {
            match (merged.get_mut(&k), v) {
                (Some(serde_json::Value::Object(into)), serde_json::Value::Object(more)) => {
                    into.extend(more);
                }
                (Some(_), _) => {}
                (None, v) => {
                    merged.insert(k, v);
                }
            }
        }
    }
    axum::Json(serde_json::Value::Object(merged)).into_response()
}

/// Who the client certificate of a request's connection names, if any.
fn peer_identity(req: &Request) -> Option<Identity> {
    req.extensions()
        .get::<ConnectInfo<Peer>>()
        .and_then(|c| c.0.identity.clone())
}

/// The agent a request comes from, by its certificate.
#[derive(Debug, Clone)]
pub struct AgentName(pub String);

/// Agents' endpoints: the connection must present an agent certificate
/// from the cluster CA (none needed under --insecure).
async fn require_agent(State(n): NodeState, mut req: Request, next: Next) -> Response {
    if n.tls.is_some() {
        match peer_identity(&req) {
            Some(Identity::Agent(name)) => {
                if let Some(agent) = n.store.read(|s| s.revoked_agents.get(&name).cloned()) {
                    return ApiError::Forbidden(format!(
                        "this certificate was revoked when agent {agent} was marked gone; a machine that returns must join as a new agent (a fresh --data-dir and the join token)"
                    ))
                    .into_response();
                }
                req.extensions_mut().insert(AgentName(name));
            }
            _ => {
                return ApiError::Unauthorized(
                    "only the cluster's agents may call this: present the agent certificate the masters issued when the agent joined (wasmos agent --join-token-file and --ca-cert)".into(),
                )
                .into_response();
            }
        }
    }
    next.run(req).await
}

/// Raft: the connection must present a master certificate from the
/// cluster CA.
async fn require_master(State(n): NodeState, req: Request, next: Next) -> Response {
    if n.tls.is_some() && !matches!(peer_identity(&req), Some(Identity::Master(_))) {
        return ApiError::Unauthorized(
            "only the cluster's masters may call this: start every master with the same cluster CA (--ca-cert and --ca-key)".into(),
        )
        .into_response();
    }
    next.run(req).await
}

/// An agent that presents the join token gets a certificate naming it
/// (under a name the master chooses) for the key of its request.
async fn join(
    State(n): NodeState,
    headers: HeaderMap,
    ApiJson(req): ApiJson<protocol::CertificateRequest>,
) -> ApiResult<ApiJson<protocol::IssuedCertificate>> {
    let Some(tls) = &n.tls else {
        return Err(ApiError::BadRequest(
            "this master runs --insecure: agents need no certificate".into(),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let ok = tls
        .settings
        .join_token
        .as_deref()
        .is_some_and(|t| protocol::bearer_matches(given, t));
    if !ok {
        return Err(ApiError::Unauthorized(
            "missing or wrong join token: start the agent with --join-token-file naming the file the masters were given (wasmos up keeps it in its data dir)".into(),
        ));
    }
    req.validate().map_err(ApiError::BadRequest)?;
    let name = uuid::Uuid::new_v4().to_string();
    let certificate = tls
        .issue_agent(&req.csr, &name)
        .map_err(ApiError::BadRequest)?;
    tracing::info!(agent = %name, hosts = ?req.hosts, "issued a certificate to a joining agent");
    Ok(ApiJson(protocol::IssuedCertificate {
        certificate,
        ca: tls.trust.pem().to_string(),
    }))
}

/// An agent renews its certificate before it expires: same name, new key.
async fn renew(
    State(n): NodeState,
    name: Option<axum::Extension<AgentName>>,
    ApiJson(req): ApiJson<protocol::CertificateRequest>,
) -> ApiResult<ApiJson<protocol::IssuedCertificate>> {
    let (Some(tls), Some(axum::Extension(AgentName(name)))) = (&n.tls, name) else {
        return Err(ApiError::BadRequest(
            "this master runs --insecure: agents need no certificate".into(),
        ));
    };
    req.validate().map_err(ApiError::BadRequest)?;
    let certificate = tls
        .issue_agent(&req.csr, &name)
        .map_err(ApiError::BadRequest)?;
    tracing::info!(agent = %name, "renewed an agent's certificate");
    Ok(ApiJson(protocol::IssuedCertificate {
        certificate,
        ca: tls.trust.pem().to_string(),
    }))
}

async fn version() -> impl IntoResponse {
    axum::Json(
        json!({ "version": wasmos_core::VERSION, "world_version": wasmos_core::plugin::WORLD_VERSION }),
    )
}

type Caller = Option<axum::Extension<AgentName>>;

fn principal(caller: &Caller) -> Option<&str> {
    caller
        .as_ref()
        .map(|axum::Extension(AgentName(n))| n.as_str())
}

/// A caller may speak only for the agent its certificate registered.
fn check_speaks_for(l: &Leader, agent: &AgentId, caller: &Caller) -> ApiResult<()> {
    let allowed = l.store.read(|s| {
        s.agents
            .get(agent)
            .is_none_or(|a| a.speaks_for(principal(caller)))
    });
    if allowed {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "agent {agent} registered with another certificate: an agent speaks only for itself"
        )))
    }
}

async fn register(
    Lead(l): Lead,
    caller: Caller,
    ApiJson(req): ApiJson<RegisterAgent>,
) -> ApiResult<ApiJson<Registered>> {
    if let Some(id) = &req.agent_id {
        check_speaks_for(&l, id, &caller)?;
    }
    Ok(ApiJson(
        l.register_agent(req, principal(&caller).map(str::to_string))
            .await?,
    ))
}

async fn heartbeat(
    Lead(l): Lead,
    caller: Caller,
    ApiJson(hb): ApiJson<Heartbeat>,
) -> ApiResult<ApiJson<HeartbeatReply>> {
    check_speaks_for(&l, &hb.agent_id, &caller)?;
    let known = l
        .agents
        .heartbeat(&hb.agent_id, Instant::now(), hb.plugins, hb.bound_ports);
    Ok(ApiJson(HeartbeatReply {
        master_id: l.master_id.clone(),
        term: l.term,
        reregister: !known,
        plugins: l.agent_plugins().1,
        volumes: known.then(|| l.volumes_of(&hb.agent_id)),
    }))
}

async fn status_update(
    Lead(l): Lead,
    caller: Caller,
    ApiJson(update): ApiJson<protocol::StatusUpdate>,
) -> ApiResult<ApiJson<protocol::StatusReply>> {
    check_speaks_for(&l, &update.agent_id, &caller)?;
    let outcome: StatusOutcome = l.status_update(update).await?;
    Ok(ApiJson(protocol::StatusReply { outcome }))
}

/// An executor's message for its framework, handed on if the framework
/// is subscribed (best effort, as in Mesos).
async fn from_executor(
    Lead(l): Lead,
    caller: Caller,
    ApiJson(msg): ApiJson<protocol::ExecutorMessage>,
) -> ApiResult<StatusCode> {
    let agent_id = msg
        .agent_id
        .clone()
        .ok_or_else(|| ApiError::BadRequest("agent_id is required".into()))?;
    check_speaks_for(&l, &agent_id, &caller)?;
    if let Some(link) = l
        .frameworks_read()
        .get(&msg.framework_id)
        .and_then(|h| h.link.clone())
    {
        link.executor_message(&agent_id, &msg.executor_id, &msg.data);
    }
    Ok(StatusCode::ACCEPTED)
}

/// An executor ended: its framework hears of it (Mesos' FAILURE event).
async fn executor_exited(
    Lead(l): Lead,
    caller: Caller,
    ApiJson(msg): ApiJson<protocol::ExecutorExited>,
) -> ApiResult<StatusCode> {
    check_speaks_for(&l, &msg.agent_id, &caller)?;
    tracing::info!(agent = %msg.agent_id, framework = %msg.framework_id, executor = %msg.executor_id, status = msg.status, "executor ended");
    if let Some(link) = l
        .frameworks_read()
        .get(&msg.framework_id)
        .and_then(|h| h.link.clone())
    {
        link.executor_lost(&msg.agent_id, &msg.executor_id, msg.status);
    }
    Ok(StatusCode::ACCEPTED)
}

fn parse_id<T: std::str::FromStr<Err = wasmos_core::IdError>>(what: &str, s: &str) -> ApiResult<T> {
    s.parse()
        .map_err(|e| ApiError::BadRequest(format!("{what} id {s:?} is not valid: {e}")))
}

/// The dashboard's charts: this master's samples of the cluster (any
/// master answers from its own ring), those after `since` (Unix seconds),
/// merged down to at most `points` (default 720).
async fn history(
    State(n): NodeState,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<ApiJson<serde_json::Value>> {
    for k in q.keys() {
        if !matches!(k.as_str(), "since" | "points") {
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter {k:?} (known: since, points)"
            )));
        }
    }
    let since = match q.get("since") {
        None => None,
        Some(v) => Some(
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "since must be a time in seconds since the Unix epoch, not {v:?}"
                    ))
                })?,
        ),
    };
    let points = match q.get("points") {
        None => 720,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|p| (1..=crate::history::MAX_POINTS).contains(p))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "points must be a whole number from 1 to {}, not {v:?}",
                    crate::history::MAX_POINTS
                ))
            })?,
    };
    Ok(ApiJson(json!({
        "master_id": n.store.node_id(),
        "interval_secs": n.history.interval.as_secs_f64(),
        "capacity": n.history.capacity(),
        "samples": n.history.query(since, points),
    })))
}

async fn cluster(Lead(l): Lead) -> ApiJson<ClusterView> {
    let offers = l.allocator().outstanding();
    let connected = l.agents.connected();
    ApiJson(l.store.read(|s| {
        let mut tasks = std::collections::BTreeMap::new();
        for t in s.tasks.values() {
            *tasks.entry(t.state().to_string()).or_insert(0) += 1;
        }
        let total = s
            .agents
            .values()
            .filter(|a| connected.contains(&a.id))
            .fold(wasmos_core::Resources::default(), |acc, a| {
                acc.add(&a.info.resources)
            });
        let used = s
            .used_by_agent()
            .values()
            .fold(wasmos_core::Resources::default(), |acc, r| acc.add(r));
        ClusterView {
            cluster_id: s.cluster_id.clone(),
            master_id: l.master_id.clone(),
            leader: s.leader.as_ref().map(|x| x.address.clone()),
            term: s.term,
            version: wasmos_core::VERSION.to_string(),
            agents: s.agents.len(),
            frameworks: s.frameworks.len(),
            tasks,
            total,
            used,
            offers,
            log_index: l.store.last_index(),
        }
    }))
}

fn agent_views(l: &Leader) -> Vec<AgentView> {
    let connected = l.agents.connected();
    let mut bound = l.agents.bound_ports();
    l.store.read(|s| {
        let used = s.used_by_agent();
        s.agents
            .values()
            .map(|a| AgentView {
                bound_ports: bound.remove(&a.id).unwrap_or_default(),
                ..AgentView::new(a, s, used.get(&a.id), connected.contains(&a.id))
            })
            .collect()
    })
}

async fn agents(Lead(l): Lead) -> ApiJson<Vec<AgentView>> {
    ApiJson(agent_views(&l))
}

async fn agent(Lead(l): Lead, Path(id): Path<String>) -> ApiResult<ApiJson<AgentView>> {
    let id: AgentId = parse_id("agent", &id)?;
    agent_views(&l)
        .into_iter()
        .find(|a| a.id == id)
        .map(ApiJson)
        .ok_or_else(|| ApiError::NotFound(format!("no agent {id}")))
}

fn agent_view(l: &Leader, id: &AgentId) -> ApiResult<ApiJson<AgentView>> {
    agent_views(l)
        .into_iter()
        .find(|a| &a.id == id)
        .map(ApiJson)
        .ok_or_else(|| ApiError::NotFound(format!("no agent {id}")))
}

fn framework_views(l: &Leader) -> Vec<FrameworkView> {
    let mut views: Vec<FrameworkView> = l.store.read(|s| {
        let used = s.used_by_framework();
        s.frameworks
            .values()
            .map(|f| FrameworkView::new(f, s, used.get(&f.id)))
            .collect()
    });
    let fws = l.frameworks_read();
    let alloc = l.allocator();
    for v in &mut views {
        if let Some(h) = fws.get(&v.id) {
            let (health, last_error) = h.health();
            v.active = h.is_active();
            v.health = Some(
                serde_json::to_value(health)
                    .ok()
                    .and_then(|x| x.as_str().map(String::from))
                    .unwrap_or_default(),
            );
            v.last_error = last_error;
        }
        v.offers = alloc.offers_of(&v.id);
        v.suppressed = alloc.is_suppressed(&v.id);
    }
    views
}

async fn frameworks(Lead(l): Lead) -> ApiJson<Vec<FrameworkView>> {
    ApiJson(framework_views(&l))
}

async fn framework(Lead(l): Lead, Path(id): Path<String>) -> ApiResult<ApiJson<FrameworkView>> {
    let id: FrameworkId = parse_id("framework", &id)?;
    framework_views(&l)
        .into_iter()
        .find(|f| f.id == id)
        .map(ApiJson)
        .ok_or_else(|| ApiError::NotFound(format!("no framework {id}")))
}

async fn tasks(Lead(l): Lead, Query(q): Query<HashMap<String, String>>) -> ApiResult<Response> {
    for k in q.keys() {
        if !matches!(
            k.as_str(),
            "state" | "framework" | "agent" | "active" | "per_page" | "next_token"
        ) {
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter {k:?} (known: state, framework, agent, active, per_page, next_token)"
            )));
        }
    }
    // Pages, as Nomad's lists have them: at most `per_page` tasks in id
    // order from `next_token` on; the header names the next page's first.
    let per_page = match q.get("per_page") {
        None => usize::MAX,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "per_page must be a positive number, not {n:?}"
                )));
            }
        },
    };
    let from: Option<TaskId> = q
        .get("next_token")
        .map(|t| parse_id("next_token", t))
        .transpose()?;
    let state: Option<TaskState> = match q.get("state") {
        Some(s) => Some(serde_json::from_value(json!(s)).map_err(|_| {
            ApiError::BadRequest(format!(
                "state {s:?} is not a task state, e.g. TASK_RUNNING"
            ))
        })?),
        None => None,
    };
    let active = match q.get("active").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "active must be true or false, not {other:?}"
            )));
        }
    };
    let fw = q.get("framework");
    let agent = q.get("agent");
    let (page, next) = l.store.read(|s| {
        let mut matching = s
            .tasks
            .range((
                from.clone()
                    .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Included),
                std::ops::Bound::Unbounded,
            ))
            .map(|(_, t)| t)
            .filter(|t| state.is_none_or(|st| t.state() == st))
            .filter(|t| active.is_none_or(|a| a != t.state().is_terminal()))
            .filter(|t| fw.is_none_or(|f| t.framework_id.as_str() == f))
            .filter(|t| agent.is_none_or(|a| t.agent_id.as_str() == a));
        let page: Vec<TaskView> = matching
            .by_ref()
            .take(per_page)
            .map(|t| TaskView::new(t, s))
            .collect();
        (page, matching.next().map(|t| t.spec.task_id.clone()))
    });
    let mut r = ApiJson(page).into_response();
    if let Some(next) = next
        && let Ok(v) = axum::http::HeaderValue::from_str(next.as_str())
    {
        r.headers_mut().insert("x-wasmos-next-token", v);
    }
    Ok(r)
}

async fn task(Lead(l): Lead, Path(id): Path<String>) -> ApiResult<ApiJson<TaskView>> {
    let id: TaskId = parse_id("task", &id)?;
    l.store
        .read(|s| s.tasks.get(&id).map(|t| TaskView::new(t, s)))
        .map(ApiJson)
        .ok_or_else(|| ApiError::NotFound(format!("no task {id}")))
}

/// Why a task went where it did (or, for a queued `exec` task, why it
/// fits nowhere yet).
async fn task_placement(
    Lead(l): Lead,
    Path(id): Path<String>,
) -> ApiResult<ApiJson<crate::placements::Record>> {
    let id: TaskId = parse_id("task", &id)?;
    match l.placements.task(id.as_str()) {
        Some(r) => Ok(ApiJson((*r).clone())),
        None => Err(ApiError::NotFound(format!(
            "no placement decision is kept for task {id}: the leading master keeps those of the newest {} launches it made itself \
             (a task launched before it led, or long ago, has none); a task that waits is explained under its app, job or group \
             (GET /api/wasmos/v1/frameworks/FRAMEWORK/waiting)",
            crate::placements::Placements::TASKS
        ))),
    }
}

/// Why a framework's waiting groups (apps, jobs) fit nowhere now, newest
/// first; `?group=` for one.
async fn framework_waiting(
    Lead(l): Lead,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<ApiJson<Vec<crate::placements::Record>>> {
    if let Some(k) = q.keys().find(|k| k.as_str() != "group") {
        return Err(ApiError::BadRequest(format!(
            "unknown query parameter {k:?} (known: group)"
        )));
    }
    let id: FrameworkId = parse_id("framework", &id)?;
    let known = l.store.read(|s| s.frameworks.contains_key(&id));
    if !known {
        return Err(ApiError::NotFound(format!(
            "no framework {id} (GET /api/wasmos/v1/frameworks lists them)"
        )));
    }
    Ok(ApiJson(
        l.placements
            .waiting(id.as_str(), q.get("group").map(String::as_str))
            .into_iter()
            .map(|r| (*r).clone())
            .collect(),
    ))
}

async fn kill(
    Lead(l): Lead,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, ApiJson<serde_json::Value>)> {
    let id: TaskId = parse_id("task", &id)?;
    l.kill_task(&id).await?;
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(json!({ "task_id": id, "kill": "requested" })),
    ))
}

/// Proxies a task's sandbox files from its agent.
async fn files(
    Lead(l): Lead,
    Path((id, op)): Path<(String, String)>,
    uri: Uri,
) -> ApiResult<Response> {
    let id: TaskId = parse_id("task", &id)?;
    if op != "read" && op != "browse" {
        return Err(ApiError::NotFound(format!(
            "no endpoint files/{op}; use files/read or files/browse"
        )));
    }
    let agent = l
        .store
        .read(|s| s.tasks.get(&id).map(|t| t.agent_id.clone()))
        .ok_or_else(|| ApiError::NotFound(format!("no task {id}")))?;
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    proxy_agent(
        &l,
        &agent,
        &format!("/api/wasmos/v1/sandboxes/{id}/files/{op}{query}"),
        &HeaderMap::new(),
        &[header::CONTENT_TYPE.as_str(), "x-wasmos-file-size"],
    )
    .await
}

/// A GET of `path` on an agent, with `headers`, answered with the agent's
/// status, body and the `keep` headers.
async fn proxy_agent(
    l: &Leader,
    agent: &AgentId,
    path: &str,
    headers: &HeaderMap,
    keep: &[&str],
) -> ApiResult<Response> {
    let endpoint = l
        .agent_endpoint(agent)
        .ok_or_else(|| ApiError::NotFound(format!("no agent {agent}")))?;
    let url = format!("{}{path}", endpoint.trim_end_matches('/'));
    let resp = l
        .http
        .get(&url)
        .headers(headers.clone())
        .send()
        .await
        .map_err(|e| {
            ApiError::BadGateway(format!(
                "agent {agent} is unreachable: {}",
                crate::error::with_causes(&e)
            ))
        })?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out = HeaderMap::new();
    for name in keep {
        if let Some(v) = resp.headers().get(*name)
            && let (Ok(n), Ok(v)) = (
                header::HeaderName::try_from(*name),
                header::HeaderValue::from_bytes(v.as_bytes()),
            )
        {
            out.insert(n, v);
        }
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| ApiError::BadGateway(format!("reading from agent {agent}: {e}")))?;
    Ok((status, out, body).into_response())
}

/// An agent's `/metrics`, through this master (the agent answers masters
/// only): Prometheus' text format or JSON by `Accept`, as the agent
/// chooses.
async fn agent_metrics(
    Lead(l): Lead,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let id: AgentId = parse_id("agent", &id)?;
    let mut forward = HeaderMap::new();
    if let Some(a) = headers.get(header::ACCEPT) {
        forward.insert(header::ACCEPT, a.clone());
    }
    proxy_agent(
        &l,
        &id,
        "/metrics",
        &forward,
        &[header::CONTENT_TYPE.as_str()],
    )
    .await
}

/// Prometheus' HTTP service discovery: the masters, and each agent's
/// metrics path through this master.
async fn prometheus_targets(State(n): NodeState) -> ApiJson<serde_json::Value> {
    let host = |url: &str| {
        url.split("://")
            .nth(1)
            .unwrap_or(url)
            .trim_end_matches('/')
            .to_string()
    };
    let masters: Vec<String> = n.store.members().iter().map(|m| host(&m.addr)).collect();
    let mut groups = vec![json!({
        "targets": masters,
        "labels": {"wasmos_role": "master"},
    })];
    let me = host(&n.url);
    n.store.read(|s| {
        for a in s
            .agents
            .values()
            .filter(|a| a.state != wasmos_core::AgentState::Gone)
        {
            groups.push(json!({
                "targets": [me],
                "labels": {
                    "wasmos_role": "agent",
                    "agent_id": a.id,
                    "hostname": a.info.hostname,
                    "__metrics_path__": format!("/api/wasmos/v1/agents/{}/metrics", a.id),
                },
            }));
        }
    });
    ApiJson(json!(groups))
}

async fn plugins(Lead(l): Lead) -> ApiJson<Vec<PluginView>> {
    let names: Vec<String> = l.store.read(|s| s.plugins.keys().cloned().collect());
    ApiJson(names.iter().filter_map(|n| l.plugin_view(n)).collect())
}

async fn plugin(Lead(l): Lead, Path(name): Path<String>) -> ApiResult<ApiJson<PluginView>> {
    l.plugin_view(&name)
        .map(ApiJson)
        .ok_or_else(|| ApiError::NotFound(format!("no plugin {name}")))
}

/// `POST /api/wasmos/v1/agents/{id}/drain`: what DRAIN_AGENT takes.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainRequest {
    /// The longest any task's kill grace period may be, in seconds.
    #[serde(default)]
    max_grace_period_secs: Option<f64>,
    /// Mark the agent gone once drained (for good).
    #[serde(default)]
    mark_gone: bool,
    /// Leave its tasks to end on their own (batch work) instead of killing them.
    #[serde(default)]
    let_finish: bool,
}

async fn drain_agent(
    Lead(l): Lead,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<ApiJson<AgentView>> {
    let req: DrainRequest = if body.iter().all(u8::is_ascii_whitespace) {
        DrainRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("the drain request: {e}")))?
    };
    if req
        .max_grace_period_secs
        .is_some_and(|g| !g.is_finite() || g < 0.0)
    {
        return Err(ApiError::BadRequest(
            "max_grace_period_secs must be 0 or more".into(),
        ));
    }
    let agent: AgentId = parse_id("agent", &id)?;
    l.drain_agent(
        &agent,
        req.max_grace_period_secs,
        req.mark_gone,
        req.let_finish,
    )
    .await?;
    agent_view(&l, &agent)
}

async fn deactivate_agent(Lead(l): Lead, Path(id): Path<String>) -> ApiResult<ApiJson<AgentView>> {
    let agent: AgentId = parse_id("agent", &id)?;
    l.set_agent_active(&agent, false).await?;
    agent_view(&l, &agent)
}

async fn reactivate_agent(Lead(l): Lead, Path(id): Path<String>) -> ApiResult<ApiJson<AgentView>> {
    let agent: AgentId = parse_id("agent", &id)?;
    l.set_agent_active(&agent, true).await?;
    agent_view(&l, &agent)
}

async fn install_plugin(
    Lead(l): Lead,
    ApiJson(req): ApiJson<crate::plugins::InstallRequest>,
) -> ApiResult<(StatusCode, ApiJson<PluginView>)> {
    let v = l.install_plugin(req).await?;
    Ok((StatusCode::CREATED, ApiJson(v)))
}

async fn remove_plugin(
    Lead(l): Lead,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let force = match q.get("force").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "force must be true or false, not {other:?}"
            )));
        }
    };
    l.remove_plugin(&name, force).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A plugin's log lines after `after` (a line's `seq`); with `wait`
/// (seconds, up to 30), waits that long for one when there is none yet;
/// with `tail`, only the last so many.
async fn plugin_logs(
    Lead(l): Lead,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<ApiJson<Vec<wasmos_core::plugin::PluginLogLine>>> {
    let number = |key: &str| -> Result<Option<u64>, ApiError> {
        q.get(key)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::BadRequest(format!("{key} must be a whole number, not {v:?}"))
                })
            })
            .transpose()
    };
    let after = number("after")?.unwrap_or(0);
    let tail = number("tail")?;
    let wait = number("wait")?.unwrap_or(0);
    if wait > 30 {
        return Err(ApiError::BadRequest("wait is at most 30 seconds".into()));
    }
    let kind = l
        .plugin_view(&name)
        .map(|v| v.kind)
        .ok_or_else(|| ApiError::NotFound(format!("no plugin {name}")))?;
    let source = l.plugin_log_source(kind);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
    loop {
        let logged = source.logged();
        tokio::pin!(logged);
        logged.as_mut().enable();
        let mut lines = source.logs_after(&name, after, wasmos_runtime::observe::LOG_LINES);
        if !lines.is_empty() || tokio::time::Instant::now() >= deadline {
            if let Some(n) = tail {
                let skip = lines.len().saturating_sub(n as usize);
                lines.drain(..skip);
            }
            return Ok(ApiJson(lines));
        }
        let _ = tokio::time::timeout_at(deadline, logged).await;
    }
}

async fn rollback_plugin(
    Lead(l): Lead,
    Path(name): Path<String>,
) -> ApiResult<ApiJson<PluginView>> {
    l.rollback_plugin(&name).await.map(ApiJson)
}

async fn configure_plugin(
    Lead(l): Lead,
    principal: Option<axum::Extension<Principal>>,
    Path(name): Path<String>,
    ApiJson(changes): ApiJson<std::collections::BTreeMap<String, Option<String>>>,
) -> ApiResult<ApiJson<PluginView>> {
    // A framework plugin's role is where its tasks run: putting it in a
    // role needs what an external framework needs for it.
    if let Some(Some(role)) = changes.get("mesos_role")
        && role != "*"
        && let Some(axum::Extension(p)) = &principal
    {
        p.check(
            wasmos_state::acl::Area::Roles,
            role,
            wasmos_state::acl::Access::Read,
        )
        .map_err(|e| ApiError::Forbidden(format!("mesos_role {role}: {e}")))?;
    }
    l.configure_plugin(&name, changes).await.map(ApiJson)
}

/// The load balancer's table; with `after`, once it differs from that
/// version (waiting up to 8 s: agents long-poll).
async fn proxy_table(
    State(node): NodeState,
    Query(q): Query<HashMap<String, String>>,
) -> ApiJson<protocol::ProxyTable> {
    let table = match q.get("after").and_then(|v| v.parse::<u64>().ok()) {
        Some(after) => {
            node.lb
                .newer_than(after, std::time::Duration::from_secs(8))
                .await
        }
        None => node.lb.get(),
    };
    ApiJson((*table).clone())
}

async fn agent_plugins(Lead(l): Lead) -> ApiJson<Vec<protocol::AgentPlugin>> {
    ApiJson(l.agent_plugins().0)
}

async fn agent_plugin_component(Lead(l): Lead, Path(name): Path<String>) -> ApiResult<Response> {
    let (bytes, digest) = l
        .store
        .read(|s| {
            s.plugins
                .get(&name)
                .map(|p| (p.component.0.clone(), p.digest.clone()))
        })
        .ok_or_else(|| ApiError::NotFound(format!("no plugin {name}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/wasm".to_string()),
            (header::HeaderName::from_static("x-wasmos-digest"), digest),
        ],
        bytes,
    )
        .into_response())
}

/// Server-sent events of committed changes. The stream ends when the
/// master shuts down.
async fn events(Lead(l): Lead) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let mut shutdown = l.shutdown.clone();
    let hello_data = json!({ "term": l.term, "master_id": l.master_id }).to_string();
    let hello = futures::stream::once(async move {
        Ok(SseEvent::default().event("connected").data(hello_data))
    });
    let rx = l.events.subscribe();
    let stream = BroadcastStream::new(rx).map(|item| {
        Ok(match item {
            Ok(e) => SseEvent::default().event(e.kind).data(e.data.to_string()),
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                SseEvent::default()
                    .event("lagged")
                    .data(json!({ "missed": n }).to_string())
            }
        })
    });
    let stream = hello.chain(stream).take_until(async move {
        let _ = shutdown.wait_for(|v| *v).await;
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn framework_http_root(
    state: Lead,
    axum::Extension(p): axum::Extension<Principal>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return ApiError::from(e).into_response(),
    };
    checked_framework(state, &p, name, "/".into(), method, uri, headers, body).await
}

async fn framework_http(
    state: Lead,
    axum::Extension(p): axum::Extension<Principal>,
    Path((name, rest)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return ApiError::from(e).into_response(),
    };
    checked_framework(
        state,
        &p,
        name,
        format!("/{rest}"),
        method,
        uri,
        headers,
        body,
    )
    .await
}

/// A framework API request, once the principal may make it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn checked_framework(
    Lead(l): Lead,
    p: &Principal,
    name: String,
    path: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cut = match crate::auth::check_framework(p, &name, &method, &path, &body) {
        Ok(cut) => cut,
        Err(r) => return r.into_response(),
    };
    serve_framework(Lead(l), p, cut, name, path, method, uri, headers, body).await
}

/// The headers a framework plugin sees: the request's, without
/// credentials (a plugin has no use for them, and must not log them), and
/// with who the caller is.
fn plugin_headers(headers: &HeaderMap, p: &Principal) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| {
            *k != header::AUTHORIZATION
                && *k != header::COOKIE
                && !k
                    .as_str()
                    .eq_ignore_ascii_case(crate::auth::PRINCIPAL_HEADER)
        })
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
        .collect();
    out.push((crate::auth::PRINCIPAL_HEADER.to_string(), p.name.clone()));
    out
}

#[allow(clippy::too_many_arguments)]
/// Calls the framework plugin `name` with a checked request; `cut`: the
/// answer is a listing to cut to what `p` may read of that area.
async fn serve_framework(
    Lead(l): Lead,
    p: &Principal,
    cut: Option<Area>,
    name: String,
    path: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = HttpRequest {
        method: method.to_string(),
        path,
        query: uri.query().unwrap_or("").to_string(),
        headers: plugin_headers(&headers, p),
        body: body.to_vec(),
    };
    let listing = cut.map(|area| (area, req.path.clone()));
    let resp = match call_framework(&l, &name, req).await {
        Ok(r) => into_response(r),
        Err(e) => return e.into_response(),
    };
    match listing {
        Some((area, path)) => crate::auth::cut_listing(p, area, &name, &path, resp).await,
        None => resp,
    }
}

/// One request to a framework plugin's HTTP handler.
async fn call_framework(
    l: &Leader,
    name: &str,
    req: HttpRequest,
) -> ApiResult<wasmos_runtime::framework::HttpResponse> {
    let id: FrameworkId = parse_id("framework", name)?;
    let fut = {
        let fws = l.frameworks_read();
        let h = fws.get(&id).ok_or_else(|| {
            if l.is_ready() {
                ApiError::NotFound(format!("no framework plugin {id} is running"))
            } else {
                ApiError::Retry(format!(
                    "the leader is still starting its framework plugins; retry {id} in a moment"
                ))
            }
        })?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !h.try_send(crate::frameworks::FrameworkMsg::Http(req, tx)) {
            return Err(ApiError::Retry(format!(
                "framework {id} is busy; try again"
            )));
        }
        rx
    };
    fut.await
        .map_err(|_| ApiError::Unavailable(format!("framework {id} stopped; try again")))?
}

/// The header a framework's event-stream path is polled with: the
/// sequence number of the last event the stream has sent.
pub const EVENTS_AFTER: &str = "x-wasmos-events-after";

/// Serves a framework's event stream (`event_streams` in its manifest) as
/// server-sent events: the plugin is polled for events after the last one
/// sent (`x-wasmos-events-after`) and answers `{"next": N, "events":
/// [{"type": ..., "data": ...}]}`; each event goes out as
/// `event: <type>\r\ndata: <json>\r\n\r\n`, with a blank line every 15 s
/// to keep idle connections open. It ends when this master stops leading.
fn event_stream(
    l: Arc<Leader>,
    name: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
) -> Response {
    struct St {
        l: Arc<Leader>,
        after: Option<u64>,
        last_write: Instant,
        pending: std::collections::VecDeque<Bytes>,
    }
    let st = St {
        l,
        after: None,
        last_write: Instant::now(),
        pending: Default::default(),
    };
    let stream = futures::stream::unfold(st, move |mut st| {
        let (name, path, query, headers) =
            (name.clone(), path.clone(), query.clone(), headers.clone());
        async move {
            loop {
                if let Some(b) = st.pending.pop_front() {
                    st.last_write = Instant::now();
                    return Some((Ok::<Bytes, Infallible>(b), st));
                }
                let mut h = headers.clone();
                if let Some(a) = st.after {
                    h.push((EVENTS_AFTER.into(), a.to_string()));
                } else {
                    h.push((EVENTS_AFTER.into(), "start".into()));
                }
                let req = HttpRequest {
                    method: "GET".into(),
                    path: path.clone(),
                    query: query.clone(),
                    headers: h,
                    body: Vec::new(),
                };
                let resp = match call_framework(&st.l, &name, req).await {
                    Ok(r) => r,
                    // Busy: try again shortly.
                    Err(ApiError::Retry(_)) => {
                        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                        continue;
                    }
                    Err(_) => return None,
                };
                if *st.l.shutdown.borrow() || resp.status != 200 {
                    return None;
                }
                let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
                if let Some(n) = v["next"].as_u64() {
                    st.after = Some(n);
                }
                for e in v["events"].as_array().into_iter().flatten() {
                    let kind = e["type"].as_str().unwrap_or("message");
                    let data = match &e["data"] {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    st.pending.push_back(Bytes::from(format!(
                        "event: {kind}\r\ndata: {data}\r\n\r\n"
                    )));
                }
                if st.pending.is_empty() {
                    if st.last_write.elapsed() >= std::time::Duration::from_secs(15) {
                        st.pending.push_back(Bytes::from_static(b"\r\n"));
                    } else {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                }
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    resp
}

/// A response body from bytes with a content type.
pub fn typed(content_type: &'static str, body: impl Into<Body>) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body.into()).into_response()
}
