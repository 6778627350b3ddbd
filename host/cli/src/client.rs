//! The CLI's HTTP client for the native API, with errors that say what to
//! do next.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use wasmos_tls::Trust;

/// Why a request failed, in the user's terms.
#[derive(Debug)]
pub enum ClientError {
    /// The master could not be reached at all.
    Unreachable { url: String, why: String },
    /// The request was sent but no answer came: it may have taken effect.
    NoAnswer { url: String, why: String },
    /// The API answered with an error.
    Api { status: u16, message: String },
    /// The answer was not what this CLI expects.
    Decode(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unreachable { url, why }
                if why.contains("certificate") || why.contains("UnknownIssuer") =>
            {
                write!(
                    f,
                    "cannot trust the master at {url} ({why}); give the cluster's CA certificate with --ca-cert (or WASMOS_CACERT): the `ca:` line of `wasmos up`"
                )
            }
            ClientError::Unreachable { url, why } => write!(
                f,
                "cannot reach the master at {url} ({why}); start a cluster with `wasmos up`, or point --master (or WASMOS_MASTER) at a running master"
            ),
            ClientError::NoAnswer { url, why } => write!(
                f,
                "no answer from the master at {url} ({why}); the request may or may not have taken effect: check before retrying (e.g. `wasmos task list`)"
            ),
            ClientError::Api {
                status: 401,
                message,
            } => write!(
                f,
                "{message} (HTTP 401); give a token with --token (or WASMOS_TOKEN), or `wasmos login`"
            ),
            ClientError::Api { status, message } => write!(f, "{message} (HTTP {status})"),
            ClientError::Decode(why) => write!(f, "unexpected answer from the master: {why}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A client of the cluster's masters: it talks to the first that answers
/// and follows followers' redirects to the leader.
#[derive(Debug, Clone)]
pub struct Client {
    bases: Vec<String>,
    http: reqwest::Client,
    /// Sent as `Authorization: Bearer` on every request.
    token: Option<String>,
}

/// The innermost cause of a reqwest error, e.g. "Connection refused (os error 111)".
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn split(masters: &str) -> Vec<String> {
    masters
        .split(',')
        .map(|m| m.trim().trim_end_matches('/').to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

/// The CA certificate the CLI trusts: `--ca-cert` (or WASMOS_CACERT), else
/// the one `wasmos up` made in its default data dir, if there is one.
pub fn trust(ca_cert: Option<&Path>, default_data_dir: &Path) -> anyhow::Result<Option<Trust>> {
    match ca_cert {
        Some(p) => Trust::load(p)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("--ca-cert: {e}")),
        None => {
            let p = default_data_dir.join("tls").join(wasmos_tls::CA_CERT);
            Ok(p.is_file().then(|| Trust::load(&p)).transpose()?)
        }
    }
}

/// How long to keep retrying while the masters elect a leader.
const ELECTION_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

impl Client {
    /// `masters` is one URL or several, comma-separated.
    /// `masters` is one URL or several, comma-separated; `trust` the
    /// cluster CA (else the system's roots, which do not know it).
    pub fn new(masters: &str, trust: Option<&Trust>) -> anyhow::Result<Self> {
        let mut http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(3))
            .timeout(std::time::Duration::from_secs(300))
            // Redirects to the leader are followed by `send`.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(t) = trust {
            http = http.use_preconfigured_tls(wasmos_tls::client_config(
                t,
                wasmos_tls::Expect::Master,
                None,
            )?);
        }
        Ok(Client {
            bases: split(masters),
            http: http.build()?,
            token: None,
        })
    }

    /// The same client (trust, credentials) for other masters.
    pub fn at(&self, masters: &str) -> Client {
        Client {
            bases: split(masters),
            http: self.http.clone(),
            token: self.token.clone(),
        }
    }

    /// The same client presenting `token`.
    pub fn with_token(&self, token: &str) -> Client {
        Client {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    /// The same client without credentials (logging in, bootstrapping).
    pub fn unauthenticated(&self) -> Client {
        Client {
            token: None,
            ..self.clone()
        }
    }

    /// The masters, as given.
    pub fn base(&self) -> String {
        self.bases.join(",")
    }

    /// Sends the request `make` builds for a master's base URL: to each
    /// master in turn until one answers, following followers' redirects to
    /// the leader; while there is no leader (an election), retries for a
    /// while.
    async fn send(
        &self,
        path: &str,
        make: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let (resp, _) = self.route(path, make).await?;
        self.checked(resp).await
    }

    /// A client that sends everything to the leader the masters name now
    /// (for large uploads: a follower answers its redirect before it has
    /// read the body, and the connection closes under the upload).
    pub async fn at_leader(&self) -> Result<Client, ClientError> {
        let path = "/api/wasmos/v1/plugins";
        let (resp, base) = self
            .route(path, |b| self.http.get(format!("{b}{path}")))
            .await?;
        self.checked(resp).await?;
        Ok(Client {
            bases: vec![base],
            ..self.clone()
        })
    }

    /// [`Client::send`]'s routing: the response, and the master that gave it.
    async fn route(
        &self,
        path: &str,
        make: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<(reqwest::Response, String), ClientError> {
        let deadline = std::time::Instant::now() + ELECTION_PATIENCE;
        let n = self.bases.len().max(1);
        let mut next = 0usize;
        let mut base = self.bases.first().cloned().unwrap_or_default();
        // Whether `base` came from a redirect (a leader that may be gone).
        let mut redirected = false;
        // Whether a leader went away: then every master is asked again
        // until the others elect a new one (or patience runs out).
        let mut electing = false;
        let resp = loop {
            let mut req = make(&base);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            match req.send().await {
                // Sent, but no answer: it may have been done. Not retried,
                // or a submission could happen twice.
                Err(e) if !e.is_connect() => {
                    return Err(ClientError::NoAnswer {
                        url: base,
                        why: root_cause(&e),
                    });
                }
                Err(e) => {
                    electing |= redirected;
                    let waiting = electing && std::time::Instant::now() < deadline;
                    if !waiting && next + 1 >= n {
                        // Every master was tried.
                        let why = if electing {
                            format!(
                                "no leader was elected within {}s ({}); a majority of the masters must be up",
                                ELECTION_PATIENCE.as_secs(),
                                root_cause(&e)
                            )
                        } else {
                            root_cause(&e)
                        };
                        return Err(ClientError::Unreachable {
                            url: self.base(),
                            why,
                        });
                    }
                    if waiting {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    next += 1;
                    redirected = false;
                    base = self.bases.get(next % n).cloned().unwrap_or_default();
                }
                Ok(r) if r.status().is_redirection() => match leader_base(&r, path) {
                    Some(leader) if std::time::Instant::now() < deadline => {
                        base = leader;
                        redirected = true;
                    }
                    _ => break r,
                },
                // 503 with Retry-After: no leader yet; nothing was done.
                Ok(r)
                    if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
                        && r.headers().contains_key(reqwest::header::RETRY_AFTER)
                        && std::time::Instant::now() < deadline =>
                {
                    electing = true;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    next += 1;
                    redirected = false;
                    base = self.bases.get(next % n).cloned().unwrap_or_default();
                }
                Ok(r) => break r,
            }
        };
        Ok((resp, base))
    }

    /// The response if it is a success, else its error as the API said it.
    async fn checked(&self, resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                let mut m = v["message"].as_str()?.to_string();
                // Marathon's validation errors: what is wrong, by field.
                for d in v["details"].as_array().into_iter().flatten() {
                    let errors: Vec<&str> = d["errors"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e.as_str())
                        .collect();
                    m.push_str(&format!(
                        "\n  {}: {}",
                        d["path"].as_str().unwrap_or("/"),
                        errors.join("; ")
                    ));
                }
                Some(m)
            })
            .unwrap_or_else(|| {
                if body.is_empty() {
                    "no details".into()
                } else {
                    body
                }
            });
        Err(ClientError::Api { status, message })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self
            .send(path, |b| self.http.get(format!("{b}{path}")))
            .await?;
        resp.json()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let resp = self
            .send(path, |b| self.http.post(format!("{b}{path}")).json(body))
            .await?;
        resp.json()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let resp = self
            .send(path, |b| self.http.put(format!("{b}{path}")).json(body))
            .await?;
        resp.json()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let resp = self
            .send(path, |b| self.http.patch(format!("{b}{path}")).json(body))
            .await?;
        resp.json()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// A request whose success has no body worth reading (Chronos answers
    /// 204): `method` with an optional JSON body.
    pub async fn send_no_content(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(), ClientError> {
        self.send(path, |b| {
            let r = self.http.request(method.clone(), format!("{b}{path}"));
            match body {
                Some(v) => r.json(v),
                None => r,
            }
        })
        .await
        .map(|_| ())
    }

    /// DELETE, expecting no body back.
    pub async fn delete_empty(&self, path: &str) -> Result<(), ClientError> {
        self.send(path, |b| self.http.delete(format!("{b}{path}")))
            .await
            .map(|_| ())
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self
            .send(path, |b| self.http.delete(format!("{b}{path}")))
            .await?;
        resp.json()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Reads raw bytes (sandbox files).
    pub async fn bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let resp = self
            .send(path, |b| self.http.get(format!("{b}{path}")))
            .await?;
        resp.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| ClientError::Decode(e.to_string()))
    }
}

/// The leader's base URL from a redirect to `<leader><path>`.
fn leader_base(resp: &reqwest::Response, path: &str) -> Option<String> {
    let loc = resp
        .headers()
        .get(reqwest::header::LOCATION)?
        .to_str()
        .ok()?;
    let base = match loc.strip_suffix(path) {
        Some(b) => b.to_string(),
        None => reqwest::Url::parse(loc)
            .ok()?
            .origin()
            .ascii_serialization(),
    };
    let base = base.trim_end_matches('/').to_string();
    (base.starts_with("http://") || base.starts_with("https://")).then_some(base)
}

/// Whether an error is the API saying "not found".
pub fn is_not_found(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { status: 404, .. })
}
