//! The TLS material a benchmark's cluster uses, made by the bench itself:
//! a cluster CA, a join token, and certificates for the parts the bench
//! plays (simulated agents, a stand-in master).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmos_tls::{Authority, Expect, Identity, Keys, Trust};

pub struct Pki {
    pub dir: PathBuf,
    pub authority: Authority,
    pub trust: Trust,
    token: PathBuf,
    /// The management token's file (`--bootstrap-token-file`).
    management: PathBuf,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

impl Pki {
    /// A new CA and join token in `dir`.
    pub fn create(dir: &Path) -> anyhow::Result<Pki> {
        let authority = Authority::create(dir, "bench")?;
        let token = dir.join("join-token");
        std::fs::write(&token, "bench-join-token")?;
        let management = dir.join("management-token");
        std::fs::write(&management, "bench-management-token")?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            trust: authority.trust()?,
            authority,
            token,
            management,
        })
    }

    /// The CA `wasmos up` made in its data dir.
    pub fn of_up(data_dir: &Path) -> anyhow::Result<Pki> {
        let dir = data_dir.join("tls");
        let authority = Authority::load(&dir.join("ca.pem"), &dir.join("ca.key"))?;
        Ok(Pki {
            trust: authority.trust()?,
            authority,
            token: data_dir.join("join-token"),
            management: data_dir.join("token"),
            dir,
        })
    }

    fn path(&self, p: &Path) -> String {
        p.display().to_string()
    }

    /// What `wasmos master` needs to issue certificates and admit agents.
    pub fn master_args(&self) -> Vec<String> {
        vec![
            "--ca-cert".into(),
            self.path(&self.dir.join("ca.pem")),
            "--ca-key".into(),
            self.path(&self.dir.join("ca.key")),
            "--join-token-file".into(),
            self.path(&self.token),
            "--bootstrap-token-file".into(),
            self.path(&self.management),
        ]
    }

    /// The management token.
    pub fn management_token(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(&self.management)?
            .trim()
            .to_string())
    }

    /// What `wasmos agent` needs to join.
    pub fn agent_args(&self) -> Vec<String> {
        vec![
            "--ca-cert".into(),
            self.path(&self.dir.join("ca.pem")),
            "--join-token-file".into(),
            self.path(&self.token),
        ]
    }

    /// A certificate for `identity`: on loopback for a master, with the
    /// name every agent's carries for an agent.
    pub fn keys(&self, identity: Identity) -> anyhow::Result<Keys> {
        let hosts: Vec<String> = match identity {
            Identity::Agent(_) => vec![wasmos_tls::AGENT_NAME.into()],
            Identity::Master(_) => vec!["127.0.0.1".into(), "localhost".into()],
        };
        let c = self.authority.issue(&identity, &hosts, DAY)?;
        Ok(Keys::new(c)?)
    }

    /// A client of masters, as the CLI is (no certificate of its own),
    /// presenting the management token.
    pub fn client(&self) -> anyhow::Result<reqwest::ClientBuilder> {
        let c = wasmos_tls::client_config(&self.trust, Expect::Master, None)?;
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", self.management_token()?).parse()?,
        );
        Ok(reqwest::Client::builder()
            .use_preconfigured_tls(c)
            .default_headers(h))
    }

    /// A client presenting `keys` to servers that must be `expect`.
    pub fn client_as(&self, keys: Keys, expect: Expect) -> anyhow::Result<reqwest::ClientBuilder> {
        let c = wasmos_tls::client_config(&self.trust, expect, Some(keys))?;
        Ok(reqwest::Client::builder().use_preconfigured_tls(c))
    }

    pub fn server_config(&self, keys: Keys) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        Ok(wasmos_tls::server_config(&self.trust, keys)?)
    }
}
