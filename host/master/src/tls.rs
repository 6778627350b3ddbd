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

/// The addresses of agents' names (`wasmos_tls::agent_host`): the leader
/// dials an agent by a name made from its certificate's principal, so the
/// handshake accepts only that agent's certificate, and this table (filled
/// from the agents' registered endpoints as they are dialled) tells where
/// the name is. Other names resolve through the system.
#[derive(Debug, Default, Clone)]
pub struct AgentNames {
    hosts: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
}

impl AgentNames {
    /// The URL to reach the agent registered at `endpoint` whose
    /// certificate names `principal`: its host replaced by the agent's
    /// name (recorded here). `endpoint` unchanged when it is not HTTPS.
    pub fn url_for(&self, principal: &str, endpoint: &str) -> String {
        let endpoint = endpoint.trim_end_matches('/');
        let Ok(mut url) = reqwest::Url::parse(endpoint) else {
            return endpoint.to_string();
        };
        let Some(host) = url.host_str() else {
            return endpoint.to_string();
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let name = wasmos_tls::agent_host(principal);
        if url.scheme() != "https" || url.set_host(Some(&name)).is_err() {
            return endpoint.to_string();
        }
        self.hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(principal.to_string(), host);
        url.as_str().trim_end_matches('/').to_string()
    }

    fn host_of(&self, name: &str) -> Option<String> {
        let principal = wasmos_tls::agent_of_host(name)?;
        self.hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(principal)
            .cloned()
    }
}

impl reqwest::dns::Resolve for AgentNames {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let wanted = name.as_str().to_string();
        let host = match self.host_of(&wanted) {
            Some(h) => Ok(h),
            None if wasmos_tls::agent_of_host(&wanted).is_some() => Err(format!(
                "{wanted}: no agent with this certificate name has registered with this master"
            )),
            None => Ok(wanted),
        };
        Box::pin(async move {
            let host =
                host.map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })?;
            // The connector puts the URL's port on every address.
            let addrs: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, 0)],
                Err(_) => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
