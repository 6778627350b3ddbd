//! Finding the leading master among several.
//!
//! The agent knows a list of master URLs (`--master URL1,URL2,URL3`). It
//! talks to the one it last found leading; a follower answers 307 with the
//! leader's URL, which the agent follows itself (only to another master:
//! the TLS configuration requires a master certificate from the cluster
//! CA); an unreachable master or one without a leader sends it to the next
//! URL in the list.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::{Method, StatusCode, header};

/// Why no master answered.
#[derive(Debug, thiserror::Error)]
#[error("no master answered (tried {tried}): {why}")]
pub struct Unreachable {
    pub tried: String,
    pub why: String,
}

/// The masters, and which one leads as far as this agent knows.
pub(crate) struct Masters {
    urls: Vec<String>,
    current: Mutex<String>,
    client: reqwest::Client,
}

impl Masters {
    /// `client` must not follow redirects.
    pub(crate) fn new(urls: Vec<String>, client: reqwest::Client) -> Masters {
        let first = urls.first().cloned().unwrap_or_default();
        Masters {
            urls,
            current: Mutex::new(first),
            client,
        }
    }

    /// The master believed to lead.
    pub(crate) fn current(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_current(&self, base: &str) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = base.to_string();
    }

    /// The URL after `base` in the list (wrapping).
    fn next_after(&self, base: &str) -> String {
        let i = self.urls.iter().position(|u| u == base);
        let next = match i {
            Some(i) => self.urls[(i + 1) % self.urls.len()].clone(),
            None => self.urls.first().cloned().unwrap_or_default(),
        };
        self.set_current(&next);
        next
    }

    /// Sends a request to the leader, following redirects and moving on
    /// from masters that are down or have no leader. Returns the leader's
    /// answer, whatever its status.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, Unreachable> {
        let max_hops = self.urls.len() * 2 + 3;
        let mut base = self.current();
        let mut why = String::new();
        let mut tried = Vec::new();
        for hop in 0..max_hops {
            if !tried.contains(&base) {
                tried.push(base.clone());
            }
            let mut req = self.client.request(method.clone(), format!("{base}{path}"));
            if let Some(body) = &json {
                req = req
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            match req.send().await {
                Ok(resp)
                    if matches!(
                        resp.status(),
                        StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
                    ) =>
                {
                    match leader_base(&resp, path) {
                        Some(leader) => {
                            tracing::debug!(from = %base, to = %leader, "following the leader");
                            self.set_current(&leader);
                            base = leader;
                        }
                        None => {
                            why = format!("{base} redirected without a usable Location");
                            base = self.next_after(&base);
                        }
                    }
                }
                Ok(resp)
                    if resp.status() == StatusCode::SERVICE_UNAVAILABLE
                        && resp.headers().contains_key(header::RETRY_AFTER) =>
                {
                    // No leader known there (an election is under way).
                    why = format!("{base} has no leader yet");
                    base = self.next_after(&base);
                    if hop + 1 < max_hops {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    } else {
                        return Ok(resp);
                    }
                }
                Ok(resp) => return Ok(resp),
                Err(e) => {
                    why = format!("{base}: {}", root_cause(&e));
                    base = self.next_after(&base);
                }
            }
        }
        Err(Unreachable {
            tried: tried.join(", "),
            why,
        })
    }
}

/// The leader's base URL from a redirect to `<leader><path>`.
fn leader_base(resp: &reqwest::Response, path: &str) -> Option<String> {
    let loc = resp.headers().get(header::LOCATION)?.to_str().ok()?;
    let base = match loc.strip_suffix(path) {
        Some(b) => b.to_string(),
        None => {
            let u = reqwest::Url::parse(loc).ok()?;
            u.origin().ascii_serialization()
        }
    };
    let base = base.trim_end_matches('/').to_string();
    (base.starts_with("http://") || base.starts_with("https://")).then_some(base)
}

/// The innermost cause, e.g. "Connection refused (os error 111)".
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
