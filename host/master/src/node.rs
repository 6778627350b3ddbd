//! One master process: a raft member that serves its HTTP API always, and
//! runs a [`Leader`] only while raft elects it.
//!
//! [`Node`] watches the store's leadership. When this master becomes the
//! raft leader of term T it first waits until it has applied everything
//! committed before (a linearizable barrier), then starts a `Leader` for T;
//! the moment raft says otherwise, that `Leader` is stopped (its loops and
//! framework actors end, its offers are void). Requests that only a leader
//! can answer are sent to the leader with a 307 from followers, except
//! those for frameworks' root paths (Marathon's, Chronos'), which followers
//! forward to the leader as those masters did.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::watch;
use wasmos_core::PluginManifest;
use wasmos_runtime::PluginRuntime;
use wasmos_store::{Leadership, Store};

use crate::MasterConfig;
use crate::leader::Leader;
use crate::tls::NodeTls;

/// Set on a request a follower forwards to the leader (the forwarder's id).
const PROXIED: &str = "x-wasmos-proxied-by";
/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
    "te",
    "trailer",
];
/// How long a forwarded request may take.
const PROXY_TIMEOUT: Duration = Duration::from_secs(60);

/// A leader and the switch that stops it.
struct Acting {
    leader: Arc<Leader>,
    stop: watch::Sender<bool>,
}

/// A master process.
pub struct Node {
    pub config: MasterConfig,
    /// This master's base URL.
    pub url: String,
    pub store: Store,
    /// One wasmtime engine (and compiled-code cache) for every term this
    /// master leads.
    pub runtime: PluginRuntime,
    bundled: Vec<(PluginManifest, &'static [u8])>,
    acting: RwLock<Option<Acting>>,
    /// Forwards framework API requests to the leader (see `proxy`).
    proxy_http: reqwest::Client,
    /// This master's certificate and the cluster CA (`None`: --insecure).
    pub tls: Option<Arc<NodeTls>>,
    pub(crate) passwords: crate::auth::PasswordCache,
    pub(crate) password_guard: crate::auth::PasswordGuard,
    pub(crate) principals: crate::auth::PrincipalCache,
    pub(crate) audit: crate::auth::AuditLog,
    /// The dashboard's charts: what this master sampled of the cluster.
    pub history: crate::history::History,
    /// Counters and histograms the leaders of this master record.
    pub instruments: crate::metrics::Instruments,
    /// The DNS zone this master serves, kept current from its state.
    pub dns: crate::dns::Served,
    /// The agents' load-balancer table, rebuilt with the zone.
    pub lb: crate::l4lb::Served,
    /// Where it serves DNS (`--dns-listen`), once bound.
    pub dns_addr: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("url", &self.url)
            .field("id", &self.store.node_id())
            .finish()
    }
}

impl Node {
    pub(crate) fn new(
        config: MasterConfig,
        url: String,
        store: Store,
        runtime: PluginRuntime,
        bundled: Vec<(PluginManifest, &'static [u8])>,
        tls: Option<Arc<NodeTls>>,
        dns_addr: Option<std::net::SocketAddr>,
    ) -> anyhow::Result<Arc<Node>> {
        let proxy_http = crate::tls::with_tls(
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(2)),
            tls.as_deref(),
            wasmos_tls::Expect::Master,
        )?
        .build()?;
        Ok(Arc::new(Node {
            url,
            store,
            runtime,
            bundled,
            acting: RwLock::new(None),
            proxy_http,
            tls,
            passwords: Default::default(),
            password_guard: Default::default(),
            principals: Default::default(),
            audit: crate::auth::AuditLog::open(&config.data_dir.join("audit.log")),
            instruments: crate::metrics::Instruments::default(),
            dns: crate::dns::Served::default(),
            lb: crate::l4lb::Served::default(),
            dns_addr,
            history: crate::history::History::open(
                config.history_interval,
                Some(config.data_dir.join("history.jsonl")),
            ),
            config,
        }))
    }

    /// Samples the cluster into [`Node::history`] every interval, leader or
    /// not (each master samples the state it has applied), until
    /// `shutdown` is set.
    pub(crate) async fn sample_history(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let interval = self.history.interval;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|v| *v) => return,
            }
            let now = crate::leader::now_secs();
            // Ends since the last sample; after a long gap (a restart), one
            // interval's worth, not everything since.
            let since = self
                .history
                .last_t()
                .map_or(now - interval.as_secs_f64(), |t| {
                    t.max(now - 2.0 * interval.as_secs_f64())
                });
            let sample = self
                .store
                .read(|s| crate::history::Sample::of(s, now, since));
            self.history.push(sample);
        }
    }

    /// The leader this master runs, if it leads now.
    pub fn leader(&self) -> Option<Arc<Leader>> {
        self.acting
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|a| a.leader.clone())
    }

    /// Raft's view of who leads.
    pub fn leadership(&self) -> Leadership {
        self.store.leadership().borrow().clone()
    }

    /// Follows raft: starts a leader when this master is elected, stops it
    /// when it is not the leader any more. Ends when `shutdown` is set.
    pub(crate) async fn follow_leadership(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut rx = self.store.leadership();
        loop {
            let now = rx.borrow_and_update().clone();
            let acting_term = self.leader().map(|l| l.term);
            if acting_term.is_some() && (!now.is_me || acting_term != Some(now.term)) {
                self.stop_leading("raft elected another leader");
            }
            if now.is_me && self.leader().is_none() {
                self.clone().try_lead(now.term, &mut rx).await;
                continue;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { break },
                _ = shutdown.wait_for(|v| *v) => break,
            }
        }
        self.stop_leading("the master is stopping");
    }

    /// Starts leading `term`, unless leadership moves on meanwhile.
    async fn try_lead(self: Arc<Self>, term: u64, rx: &mut watch::Receiver<Leadership>) {
        tracing::info!(term, "elected leader; catching up before acting");
        let (stop, stop_rx) = watch::channel(false);
        let mut moved = rx.clone();
        let moved_on = async move {
            let _ = moved.wait_for(|l| !(l.is_me && l.term == term)).await;
        };
        let start = async {
            // Apply everything committed before this term first: the state
            // a leader acts on must be the cluster's latest.
            self.store.ensure_linearizable().await?;
            Leader::start(&self, term, stop_rx).await
        };
        let started = tokio::select! {
            r = start => r,
            _ = moved_on => Err(anyhow::anyhow!("leadership moved on while taking over")),
        };
        match started {
            Ok(leader) => {
                let still = {
                    let l = rx.borrow();
                    l.is_me && l.term == term
                };
                if still {
                    *self.acting.write().unwrap_or_else(|p| p.into_inner()) =
                        Some(Acting { leader, stop });
                    tracing::info!(term, url = %self.url, "this master leads");
                } else {
                    let _ = stop.send(true);
                }
            }
            Err(e) => {
                let _ = stop.send(true);
                tracing::warn!(term, error = %e, "could not start leading; waiting for the next election");
                // Let raft move on (or retry once it settles).
                tokio::select! {
                    _ = rx.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }

    fn stop_leading(&self, why: &str) {
        let acting = self
            .acting
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(a) = acting {
            tracing::warn!(
                term = a.leader.term,
                why,
                "stepping down: no more offers, launches or kills from this term"
            );
            let _ = a.stop.send(true);
        }
    }

    /// The leader's base URL, as raft knows it, if another master leads.
    fn other_leader(&self) -> Option<(u64, String)> {
        let l = self.leadership();
        l.leader.filter(|(id, _)| *id != self.store.node_id())
    }

    /// Sends a request for a framework's root paths (`/v2`, `/v1/scheduler`)
    /// on to the leader and relays its answer, as Marathon and Chronos
    /// masters do: some of their clients do not follow a redirect for a
    /// POST or PUT (chronos-python's httplib2 takes the 307 as success).
    /// A request already proxied once is redirected instead of forwarded
    /// again; while no leader is known, the answer is 503 (retry).
    pub async fn proxy(
        &self,
        method: &axum::http::Method,
        uri: &Uri,
        headers: &axum::http::HeaderMap,
        body: axum::body::Bytes,
    ) -> Response {
        self.forward(method, uri, headers, body, false).await
    }

    /// Relays a framework's event stream (`/v2/events`) from the leader
    /// for as long as both ends keep it open, so that a client connected
    /// to a follower gets the events without following a redirect (which
    /// python-requests does without the credentials it was given when the
    /// host changes).
    pub async fn proxy_stream(&self, uri: &Uri, headers: &axum::http::HeaderMap) -> Response {
        let body = axum::body::Bytes::new();
        self.forward(&axum::http::Method::GET, uri, headers, body, true)
            .await
    }

    async fn forward(
        &self,
        method: &axum::http::Method,
        uri: &Uri,
        headers: &axum::http::HeaderMap,
        body: axum::body::Bytes,
        stream: bool,
    ) -> Response {
        let Some((id, addr)) = self.other_leader() else {
            return self.redirect(uri);
        };
        if headers.contains_key(PROXIED) {
            return self.redirect(uri);
        }
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let url = format!("{}{path}", addr.trim_end_matches('/'));
        let Ok(m) = reqwest::Method::from_bytes(method.as_str().as_bytes()) else {
            return self.redirect(uri);
        };
        let mut req = self.proxy_http.request(m, &url).body(body);
        if !stream {
            req = req.timeout(PROXY_TIMEOUT);
        }
        for (k, v) in headers {
            if !HOP_BY_HOP.contains(&k.as_str()) {
                req = req.header(k.as_str(), v.as_bytes());
            }
        }
        req = req.header(PROXIED, self.store.node_id().to_string());
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                let mut r = crate::error::ApiError::Retry(format!(
                    "the leader (master {id} at {addr}) cannot be reached from this master; retry shortly"
                ))
                .into_response();
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return r;
            }
            Err(e) => {
                return crate::error::ApiError::BadGateway(format!(
                    "the leader (master {id} at {addr}) did not answer ({e}); the request may or may not have been carried out"
                ))
                .into_response();
            }
        };
        let status =
            StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut out = axum::http::HeaderMap::new();
        for (k, v) in resp.headers() {
            if !HOP_BY_HOP.contains(&k.as_str())
                && k.as_str() != "content-length"
                && let (Ok(k), Ok(v)) = (
                    axum::http::HeaderName::from_bytes(k.as_str().as_bytes()),
                    HeaderValue::from_bytes(v.as_bytes()),
                )
            {
                out.append(k, v);
            }
        }
        if stream {
            let mut r =
                (status, axum::body::Body::from_stream(resp.bytes_stream())).into_response();
            r.headers_mut().extend(out);
            return r;
        }
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return crate::error::ApiError::BadGateway(format!(
                    "the leader's answer broke off ({e}); the request may or may not have been carried out"
                ))
                .into_response();
            }
        };
        let mut r = (status, bytes).into_response();
        r.headers_mut().extend(out);
        r
    }

    /// A request whose credentials this master does not know. Only the
    /// leader says 401: another master may be behind it (a token made a
    /// moment ago, or a master that is joining and has not caught up), so
    /// the leader decides. A stream (a Mesos subscription, an event stream)
    /// is redirected there, anything else forwarded; while no leader is
    /// known the answer is 503 (retry). The request back when this master
    /// leads: the 401 is its own.
    pub async fn defer_unknown_credentials(
        &self,
        req: axum::extract::Request,
        plain: bool,
    ) -> Result<Response, axum::extract::Request> {
        if self.leadership().is_me {
            return Err(req);
        }
        if self.other_leader().is_none() || req.headers().contains_key(PROXIED) {
            return Ok(self.redirect(req.uri()));
        }
        let path = req.uri().path();
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let stream = matches!(path, "/api/v1" | "/api/v1/scheduler" | "/api/v1/executor")
            || path.ends_with("/events")
            || accept.contains("text/event-stream")
            || accept.contains("recordio");
        if stream || plain {
            let uri = req.uri().clone();
            return Ok(if plain {
                self.redirect_plain(&uri)
            } else {
                self.redirect(&uri)
            });
        }
        let (parts, body) = req.into_parts();
        let limit = crate::plugins::MAX_COMPONENT / 3 * 4 + (1 << 20);
        match axum::body::to_bytes(body, limit).await {
            Ok(bytes) => Ok(self
                .proxy(&parts.method, &parts.uri, &parts.headers, bytes)
                .await),
            Err(e) => Ok(crate::error::ApiError::BadRequest(format!(
                "the request body could not be read: {e}"
            ))
            .into_response()),
        }
    }

    /// For a request on the plaintext listener: 307 to the same path on
    /// the leader's plaintext listener; 503 while none is known or the
    /// leader has none open.
    pub fn redirect_plain(&self, uri: &Uri) -> Response {
        let Some((id, _)) = self.other_leader() else {
            return self.redirect(uri);
        };
        let plain = self.store.read(|s| {
            s.leader
                .as_ref()
                .filter(|l| l.master_id == id.to_string())
                .and_then(|l| l.plain_address.clone())
        });
        let Some(addr) = plain else {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({
                    "message": format!("master {} is not the leader, and the leader (master {id}) has no plaintext listener; connect to it over TLS, or start it with --plain-listen", self.store.node_id()),
                })),
            )
                .into_response();
        };
        self.to_leader(uri, id, &addr, "plaintext at")
    }

    /// 307 to the same path at `addr`, the base URL of leader `id`.
    fn to_leader(&self, uri: &Uri, id: u64, addr: &str, at: &str) -> Response {
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut resp = (
            StatusCode::TEMPORARY_REDIRECT,
            axum::Json(json!({
                "message": format!("master {} is not the leader; the leader is master {id} {at} {addr}", self.store.node_id()),
                "leader": addr,
            })),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("{}{path}", addr.trim_end_matches('/'))) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        resp
    }

    /// 307 to the same path on the leader; 503 while none is known.
    pub fn redirect(&self, uri: &Uri) -> Response {
        match self.other_leader() {
            Some((id, addr)) => self.to_leader(uri, id, &addr, "at"),
            None => {
                let l = self.leadership();
                let message = if l.is_me {
                    "this master was just elected and is taking over; retry in a moment".to_string()
                } else {
                    format!(
                        "no leader is elected yet (term {}); a majority of masters must be up — retry shortly",
                        l.term
                    )
                };
                let mut resp = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(json!({ "message": message })),
                )
                    .into_response();
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                resp
            }
        }
    }

    /// Keeps the compiled-code cache holding every plugin the master runs
    /// (frameworks, placement), so that a master elected later starts them
    /// without compiling.
    pub(crate) async fn warm_plugins(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        use wasmos_core::PluginKind;
        use wasmos_state::Command;
        let mut applied = self.store.subscribe();
        let mut done: std::collections::HashSet<String> = Default::default();
        loop {
            let todo: Vec<(String, Vec<u8>)> = self.store.read(|s| {
                s.plugins
                    .values()
                    .filter(|p| {
                        matches!(
                            p.manifest.kind,
                            PluginKind::Framework | PluginKind::Placement
                        )
                    })
                    .filter(|p| !done.contains(&p.digest))
                    .map(|p| (p.digest.clone(), p.component.0.clone()))
                    .collect()
            });
            for (digest, bytes) in todo {
                let runtime = self.runtime.clone();
                let r = tokio::task::spawn_blocking(move || runtime.compile(&bytes)).await;
                if let Ok(Err(e)) = r {
                    tracing::debug!(%digest, error = %e, "cannot precompile a plugin");
                }
                done.insert(digest);
            }
            // Wait for the next plugin install.
            loop {
                tokio::select! {
                    a = applied.recv() => match a {
                        Some(a) if a.commands().any(|c| matches!(c, Command::InstallPlugin { .. })) => break,
                        Some(_) => continue,
                        None => return,
                    },
                    _ = shutdown.wait_for(|v| *v) => return,
                }
            }
        }
    }

    pub(crate) fn bundled(&self) -> Vec<(PluginManifest, &'static [u8])> {
        self.bundled.clone()
    }
}
