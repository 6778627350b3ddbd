//! An agent's side of the cluster's TLS: it joins with the join token to
//! get its certificate (kept in `<data dir>/tls`), presents it to the
//! masters and serves its API with it, and renews it before it expires.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use tokio::sync::watch;
use wasmos_core::protocol::{self, CertificateRequest, IssuedCertificate};
use wasmos_tls::{Credential, Expect, Keys, Trust};

/// An agent's TLS settings.
#[derive(Clone)]
pub struct AgentTls {
    /// The cluster CA's certificate: masters must present certificates it
    /// signed.
    pub trust: Trust,
    /// Presented once, to get this agent's certificate.
    pub join_token: Option<String>,
    /// Host names or addresses this agent's certificate covers besides its
    /// advertised host, its listen address and loopback.
    pub extra_hosts: Vec<String>,
}

impl std::fmt::Debug for AgentTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the join token.
        f.debug_struct("AgentTls")
            .field("extra_hosts", &self.extra_hosts)
            .finish_non_exhaustive()
    }
}

const NAME: &str = "agent";

fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

/// This agent's certificate: the one it holds if the cluster's CA issued
/// it and it is not due for renewal, else a new one from a master.
pub(crate) async fn credentials(
    tls: &AgentTls,
    data_dir: &Path,
    masters: &[String],
    hosts: &[String],
) -> anyhow::Result<Keys> {
    let dir = dir(data_dir);
    if let Some(c) = Credential::load(&dir, NAME)? {
        // Still valid: kept (the renewal loop renews it if it is due), so
        // the agent stays the same agent.
        if c.issued_by(&tls.trust) && !c.expired(SystemTime::now()) {
            tracing::info!(identity = ?c.identity(), "using this agent's certificate");
            return Ok(Keys::new(c)?);
        }
        tracing::info!(
            "this agent's certificate is from another cluster CA, or expired; joining anew"
        );
    }
    let Some(token) = &tls.join_token else {
        bail!(
            "this agent has no certificate from the cluster's CA yet: give it the join token with --join-token-file (wasmos up keeps it in its data dir as join-token)"
        );
    };
    let c = join(tls, token, masters, hosts).await?;
    crate::link::forget_identity(data_dir);
    c.save(&dir, NAME)
        .with_context(|| format!("cannot keep this agent's certificate in {}", dir.display()))?;
    tracing::info!(identity = ?c.identity(), "joined: the masters issued this agent's certificate");
    Ok(Keys::new(c)?)
}

/// Asks the masters, in turn, for a certificate; waits (with a message)
/// while none answers, fails at once when one refuses.
async fn join(
    tls: &AgentTls,
    token: &str,
    masters: &[String],
    hosts: &[String],
) -> anyhow::Result<Credential> {
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(wasmos_tls::client_config(&tls.trust, Expect::Master, None)?)
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let (csr, key_pem) = Credential::request()?;
    let body = CertificateRequest {
        csr,
        hosts: hosts.to_vec(),
    };
    let mut wait = Duration::from_millis(200);
    let mut said = false;
    loop {
        let mut why = Vec::new();
        for m in masters {
            let r = client
                .post(format!("{m}{}", protocol::paths::JOIN))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => {
                    let issued: IssuedCertificate = r
                        .json()
                        .await
                        .with_context(|| format!("{m} answered the join with something else"))?;
                    return Ok(Credential {
                        cert_pem: issued.certificate,
                        key_pem,
                    });
                }
                Ok(r) if r.status().is_client_error() => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    let message = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["message"].as_str().map(str::to_string))
                        .unwrap_or(text);
                    bail!("{m} refused this agent's join ({status}): {message}");
                }
                Ok(r) => why.push(format!("{m}: {}", r.status())),
                Err(e) => {
                    let cause = root_cause(&e);
                    if cause.contains("certificate") || cause.contains("UnknownIssuer") {
                        bail!(
                            "{m}: {cause}: the master's certificate is not from the CA given with --ca-cert (give the cluster's CA certificate, the `ca:` line of wasmos up)"
                        );
                    }
                    why.push(format!("{m}: {cause}"));
                }
            }
        }
        if !said {
            tracing::warn!(tried = %why.join("; "), "no master answered the join yet; retrying");
            said = true;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

impl crate::Agent {
    /// Renews this agent's certificate once it is past two thirds of its
    /// life: a new key, the same identity, from any master.
    pub(crate) async fn renew_loop(self: Arc<Self>, keys: Keys, hosts: Vec<String>) {
        let mut shutdown: watch::Receiver<bool> = self.shutdown.clone();
        let lifetime = keys
            .credential()
            .validity()
            .and_then(|(from, to)| to.duration_since(from).ok())
            .unwrap_or(Duration::from_secs(3600));
        let every = (lifetime / 20).clamp(Duration::from_secs(1), Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait_for(|v| *v) => return,
            }
            if !keys.credential().needs_renewal(SystemTime::now()) {
                continue;
            }
            match self.renew(&keys, &hosts).await {
                Ok(()) => tracing::info!("renewed this agent's certificate"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew this agent's certificate yet; retrying")
                }
            }
        }
    }

    async fn renew(&self, keys: &Keys, hosts: &[String]) -> anyhow::Result<()> {
        let (csr, key_pem) = Credential::request()?;
        let body = serde_json::to_vec(&CertificateRequest {
            csr,
            hosts: hosts.to_vec(),
        })?;
        let r = self
            .masters
            .send(reqwest::Method::POST, protocol::paths::RENEW, Some(body))
            .await?;
        if !r.status().is_success() {
            bail!(
                "the master answered {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        let issued: IssuedCertificate = r.json().await?;
        let c = Credential {
            cert_pem: issued.certificate,
            key_pem,
        };
        let dir = dir(&self.config.data_dir);
        c.save(&dir, NAME)?;
        keys.replace(c)?;
        Ok(())
    }
}
