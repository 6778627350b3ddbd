//! A master's side of the cluster's TLS: its own certificate (issued by
//! the cluster CA it holds, renewed before it expires), the client
//! configurations it calls agents and other masters with, and the
//! certificates it issues to agents that join with the join token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use wasmos_tls::{Authority, Expect, Identity, Keys, Trust};

/// A master's TLS settings.
#[derive(Clone)]
pub struct MasterTls {
    /// The cluster CA, with its key: masters issue certificates.
    pub authority: Arc<Authority>,
    /// What an agent presents to get its certificate; `None` lets no agent
    /// join.
    pub join_token: Option<String>,
    /// How long the certificates this master issues (its own, agents') are
    /// valid; they are renewed after two thirds of it.
    pub cert_lifetime: Duration,
    /// Host names or addresses this master's certificate covers besides
    /// its advertised host, its listen address and loopback.
    pub extra_hosts: Vec<String>,
}

impl std::fmt::Debug for MasterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the join token.
        f.debug_struct("MasterTls")
            .field("cert_lifetime", &self.cert_lifetime)
            .field("extra_hosts", &self.extra_hosts)
            .finish_non_exhaustive()
    }
}

/// The default lifetime of issued certificates.
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// A running master's TLS state.
pub struct NodeTls {
    pub settings: MasterTls,
    pub trust: Trust,
    /// This master's own certificate (server and client).
    pub keys: Keys,
    id: u64,
    hosts: Vec<String>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls").field("id", &self.id).finish()
    }
}

impl NodeTls {
    /// Issues this master's certificate for the hosts of `url` and `listen`.
    pub fn new(
        settings: MasterTls,
        id: u64,
        url: &str,
        listen: SocketAddr,
    ) -> anyhow::Result<NodeTls> {
        let hosts = wasmos_tls::hosts_for(url, listen, &settings.extra_hosts);
        let cred =
            settings
                .authority
                .issue(&Identity::Master(id), &hosts, settings.cert_lifetime)?;
        Ok(NodeTls {
            trust: settings.authority.trust()?,
            keys: Keys::new(cred)?,
            settings,
            id,
            hosts,
        })
    }

    /// The TLS server configuration of this master's listener.
    pub fn server(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        Ok(wasmos_tls::server_config(&self.trust, self.keys.clone())?)
    }

    /// A client configuration presenting this master's certificate to
    /// servers that must be `expect`.
    pub fn client(&self, expect: Expect) -> anyhow::Result<rustls::ClientConfig> {
        Ok(wasmos_tls::client_config(
            &self.trust,
            expect,
            Some(self.keys.clone()),
        )?)
    }

    /// A certificate for an agent's signing request: its identity and the
    /// one name all agents' certificates carry (`wasmos_tls::AGENT_NAME`),
    /// never the host names the agent asks for.
    pub fn issue_agent(&self, csr: &str, name: &str) -> Result<String, String> {
        self.settings
            .authority
            .sign_request(
                csr,
                &Identity::Agent(name.to_string()),
                &[wasmos_tls::AGENT_NAME.to_string()],
                self.settings.cert_lifetime,
            )
            .map_err(|e| e.to_string())
    }

    /// Renews this master's own certificate whenever it is past two thirds
    /// of its life.
    pub async fn renew_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let every = (self.settings.cert_lifetime / 20)
            .clamp(Duration::from_secs(1), Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait_for(|v| *v) => return,
            }
            if !self.keys.credential().needs_renewal(SystemTime::now()) {
                continue;
            }
            match self
                .settings
                .authority
                .issue(
                    &Identity::Master(self.id),
                    &self.hosts,
                    self.settings.cert_lifetime,
                )
                .map_err(anyhow::Error::from)
                .and_then(|c| Ok(self.keys.replace(c)?))
            {
                Ok(()) => tracing::info!("renewed this master's certificate"),
                Err(e) => {
                    tracing::error!(error = %e, "cannot renew this master's certificate; retrying")
                }
            }
        }
    }
}

/// A reqwest client builder that speaks TLS with `tls` (or plain HTTP when
/// the master runs --insecure).
pub fn with_tls(
    builder: reqwest::ClientBuilder,
    tls: Option<&NodeTls>,
    expect: Expect,
) -> anyhow::Result<reqwest::ClientBuilder> {
    Ok(match tls {
        Some(t) => builder.use_preconfigured_tls(t.client(expect)?),
        None => builder,
    })
}
