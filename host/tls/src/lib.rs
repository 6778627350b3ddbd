//! TLS between everything: the cluster's certificate authority, the
//! certificates masters and agents present, and the listeners and client
//! configurations that use them.
//!
//! Key types: [`Authority`] (the cluster CA; masters hold it and issue
//! certificates), [`Trust`] (the CA certificate alone: what clients and
//! agents verify against), [`Credential`] (a certificate and its key, PEM),
//! [`Keys`] (a credential in use, replaced in place when it is renewed),
//! [`Identity`] (who a certificate names: a master or an agent),
//! [`Listener`] (TLS, or an explicitly opened plaintext listener, for axum).
//!
//! Design decisions:
//! - A daemon's identity is a URI in its certificate's subject alternative
//!   names (`wasmos://master/<id>`, `wasmos://agent/<name>`), beside the
//!   host names and addresses it serves on. Only the CA issues them, so a
//!   peer's identity is whatever its verified certificate says.
//! - Client certificates are optional at the handshake (browsers and the
//!   CLI have none); the routes that need a daemon check [`Peer::identity`].
//! - Daemons check the role of the server they connect to ([`Expect`]), so a
//!   joined agent cannot pose as a master to another daemon.
//! - A plaintext request on a TLS port is answered with a 400 that says to
//!   use https, not a reset.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};

/// File names of the CA certificate and key in a directory.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";

/// The one name in agents' certificates, and what masters verify an
/// agent's certificate for, whatever address they dial: an agent cannot
/// get a certificate for a master's (or anyone's) host name, so a joined
/// agent cannot pose as a master to browsers and other clients that check
/// only the host name.
pub const AGENT_NAME: &str = "agent.wasmos.internal";

/// The name a client dials to reach the agent whose certificate names
/// `principal` (`<principal>.agent.wasmos.internal`): a client that dials
/// it accepts that agent's certificate and no other agent's. The name
/// resolves only through the dialler's own table (the master maps it to
/// the agent's registered address).
pub fn agent_host(principal: &str) -> String {
    format!("{principal}.{AGENT_NAME}")
}

/// The principal an [`agent_host`] name is for.
pub fn agent_of_host(host: &str) -> Option<&str> {
    host.strip_suffix(AGENT_NAME)?
        .strip_suffix('.')
        .filter(|p| !p.is_empty() && !p.contains('.'))
}

/// How long a CA made by [`Authority::create`] is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start this long before they are made (clocks differ).
const BACKDATE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Certificate(String),
}

type Result<T> = std::result::Result<T, TlsError>;

fn cert_err(what: &str) -> impl Fn(rcgen::Error) -> TlsError + '_ {
    move |e| TlsError::Certificate(format!("{what}: {e}"))
}

fn file_err(path: &Path) -> impl Fn(std::io::Error) -> TlsError + '_ {
    move |e| TlsError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The crypto every configuration here uses (ring, as reqwest does), with
/// AES-128-GCM preferred over ring's default first choice, AES-256-GCM:
/// four fewer rounds per block on every record of the write path
/// (BENCHMARKS.md, "TLS and authorization on the write path"), and the
/// suite Go's crypto/tls and browsers put first. Both sides here are ours;
/// other clients still get what they ask for among the rest.
pub fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(p)
}

/// Who a certificate names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Master(u64),
    /// An agent, by the name the master gave it when it joined.
    Agent(String),
}

impl Identity {
    const PREFIX: &'static str = "wasmos://";

    pub fn uri(&self) -> String {
        match self {
            Identity::Master(id) => format!("{}master/{id}", Self::PREFIX),
            Identity::Agent(name) => format!("{}agent/{name}", Self::PREFIX),
        }
    }

    pub fn from_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix(Self::PREFIX)?;
        match rest.split_once('/')? {
            ("master", id) => id.parse().ok().map(Identity::Master),
            ("agent", name) if !name.is_empty() && !name.contains('/') => {
                Some(Identity::Agent(name.to_string()))
            }
            _ => None,
        }
    }

    /// The identity a DER certificate carries (unverified: use it on
    /// certificates the handshake verified).
    pub fn of(der: &[u8]) -> Option<Identity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let san = cert.subject_alternative_name().ok()??;
        san.value.general_names.iter().find_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Identity::from_uri(u),
            _ => None,
        })
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Master(id) => write!(f, "master {id}"),
            Identity::Agent(name) => write!(f, "agent {name}"),
        }
    }
}

/// The validity of a DER certificate: (not before, not after).
pub fn validity(der: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let at = |t: i64| UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    let v = cert.validity();
    Some((at(v.not_before.timestamp()), at(v.not_after.timestamp())))
}

fn first_cert(pem: &str) -> Result<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| TlsError::Certificate(format!("not a PEM certificate: {e}")))
}

/// The cluster CA's certificate: what everyone verifies against.
#[derive(Clone)]
pub struct Trust {
    roots: Arc<RootCertStore>,
    pem: String,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust").finish_non_exhaustive()
    }
}

impl Trust {
    pub fn from_pem(pem: &str) -> Result<Trust> {
        let mut roots = RootCertStore::empty();
        roots
            .add(first_cert(pem)?)
            .map_err(|e| TlsError::Certificate(format!("not a usable CA certificate: {e}")))?;
        Ok(Trust {
            roots: Arc::new(roots),
            pem: pem.to_string(),
        })
    }

    pub fn load(path: &Path) -> Result<Trust> {
        let pem = std::fs::read_to_string(path).map_err(file_err(path))?;
        Trust::from_pem(&pem).map_err(|e| TlsError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }
}

/// A certificate (PEM) and its private key (PEM).
#[derive(Clone)]
pub struct Credential {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Credential")
            .field("identity", &self.identity())
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// A new key and a signing request for it (an agent joining): the CA
    /// decides what the certificate names, the request only carries the key.
    pub fn request() -> Result<(String, String)> {
        let key = KeyPair::generate().map_err(cert_err("cannot make a key"))?;
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .map_err(cert_err("cannot make a signing request"))?
            .pem()
            .map_err(cert_err("cannot encode a signing request"))?;
        Ok((csr, key.serialize_pem()))
    }

    pub fn der(&self) -> Result<CertificateDer<'static>> {
        first_cert(&self.cert_pem)
    }

    pub fn identity(&self) -> Option<Identity> {
        self.der().ok().and_then(|d| Identity::of(&d))
    }

    /// (not before, not after).
    pub fn validity(&self) -> Option<(SystemTime, SystemTime)> {
        self.der().ok().and_then(|d| validity(&d))
    }

    /// Whether it has expired (or is unreadable).
    pub fn expired(&self, now: SystemTime) -> bool {
        self.validity().is_none_or(|(_, to)| now >= to)
    }

    /// Whether it is past two thirds of its life (or unreadable): time to
    /// renew.
    pub fn needs_renewal(&self, now: SystemTime) -> bool {
        match self.validity() {
            Some((from, to)) => {
                let life = to.duration_since(from).unwrap_or_default();
                now + life / 3 >= to
            }
            None => true,
        }
    }

    /// Whether `trust`'s CA signed it (a cluster made anew has a new CA).
    pub fn issued_by(&self, trust: &Trust) -> bool {
        let Ok(der) = self.der() else { return false };
        let Ok(verifier) = rustls::server::WebPkiClientVerifier::builder_with_provider(
            trust.roots.clone(),
            provider(),
        )
        .build() else {
            return false;
        };
        let now = UnixTime::since_unix_epoch(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        );
        verifier.verify_client_cert(&der, &[], now).is_ok()
    }

    /// Writes `<name>.pem` and `<name>.key` (0600) into `dir`, each through
    /// a temporary file and a rename.
    pub fn save(&self, dir: &Path, name: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(file_err(dir))?;
        write_private(&dir.join(format!("{name}.key")), &self.key_pem)?;
        write_private(&dir.join(format!("{name}.pem")), &self.cert_pem)
    }

    /// Reads what [`Credential::save`] wrote; `None` if either file is missing.
    pub fn load(dir: &Path, name: &str) -> Result<Option<Credential>> {
        let read = |ext: &str| {
            let p = dir.join(format!("{name}.{ext}"));
            match std::fs::read_to_string(&p) {
                Ok(s) => Ok(Some(s)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(file_err(&p)(e)),
            }
        };
        match (read("pem")?, read("key")?) {
            (Some(cert_pem), Some(key_pem)) => Ok(Some(Credential { cert_pem, key_pem })),
            _ => Ok(None),
        }
    }

    fn certified(&self) -> Result<Arc<CertifiedKey>> {
        let certs = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Certificate(format!("certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| TlsError::Certificate(format!("key: {e}")))?;
        CertifiedKey::from_der(certs, key, &provider())
            .map(Arc::new)
            .map_err(|e| TlsError::Certificate(format!("certificate and key: {e}")))
    }
}

/// Writes `text` to `path` readable by its owner only (0600), through a
/// temporary file and a rename, so a reader never sees half of it.
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(file_err(&tmp))?;
    f.write_all(text.as_bytes()).map_err(file_err(&tmp))?;
    f.sync_all().map_err(file_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(file_err(path))
}

/// The cluster's certificate authority: its certificate and signing key.
pub struct Authority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

impl Authority {
    /// Makes a new CA and writes `ca.pem` and `ca.key` (0600) into `dir`;
    /// refuses to replace an existing one.
    pub fn create(dir: &Path, name: &str) -> Result<Authority> {
        let cert_path = dir.join(CA_CERT);
        if cert_path.exists() {
            return Err(TlsError::File {
                path: cert_path,
                message: "a CA exists here already".into(),
            });
        }
        let key = KeyPair::generate().map_err(cert_err("cannot make the CA key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("Wasmos cluster CA {name}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = offset(now - BACKDATE);
        params.not_after = offset(now + CA_LIFETIME);
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(cert_err("cannot sign the CA certificate"))?;
        std::fs::create_dir_all(dir).map_err(file_err(dir))?;
        write_private(&dir.join(CA_KEY), &key.serialize_pem())?;
        std::fs::write(&cert_path, cert.pem()).map_err(file_err(&cert_path))?;
        Self::from_pem(&cert.pem(), &key.serialize_pem())
    }

    pub fn load(cert: &Path, key: &Path) -> Result<Authority> {
        let c = std::fs::read_to_string(cert).map_err(file_err(cert))?;
        let k = std::fs::read_to_string(key).map_err(file_err(key))?;
        Self::from_pem(&c, &k).map_err(|e| TlsError::File {
            path: cert.to_path_buf(),
            message: e.to_string(),
        })
    }

    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority> {
        let key = KeyPair::from_pem(key_pem).map_err(cert_err("the CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(cert_err("the CA certificate and key do not go together"))?;
        Ok(Authority {
            cert_pem: cert_pem.to_string(),
            issuer,
        })
    }

    pub fn trust(&self) -> Result<Trust> {
        Trust::from_pem(&self.cert_pem)
    }

    fn params(
        identity: &Identity,
        hosts: &[String],
        lifetime: Duration,
    ) -> Result<CertificateParams> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity.to_string());
        params.distinguished_name = dn;
        let uri = identity
            .uri()
            .try_into()
            .map_err(|e| TlsError::Certificate(format!("identity {identity}: {e}")))?;
        params.subject_alt_names.push(SanType::URI(uri));
        for h in hosts {
            let h = h.trim();
            if h.is_empty() {
                continue;
            }
            let san = match h.trim_matches(['[', ']']).parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    h.try_into()
                        .map_err(|e| TlsError::Certificate(format!("host name {h:?}: {e}")))?,
                ),
            };
            if !params.subject_alt_names.contains(&san) {
                params.subject_alt_names.push(san);
            }
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = offset(now - BACKDATE.min(lifetime / 4));
        params.not_after = offset(now + lifetime);
        params.serial_number = Some(random_serial());
        Ok(params)
    }

    fn sign(
        &self,
        identity: &Identity,
        hosts: &[String],
        key: &impl PublicKeyData,
        lifetime: Duration,
    ) -> Result<String> {
        let leaf = Self::params(identity, hosts, lifetime)?
            .signed_by(key, &self.issuer)
            .map_err(cert_err("cannot sign the certificate"))?
            .pem();
        // The CA's certificate follows in the chain a server sends, so that
        // a client can pin the CA (Chromium's SPKI list) and see the issuer.
        Ok(format!("{}\n{}", leaf.trim_end(), self.cert_pem.trim_end()) + "\n")
    }

    /// A new key and a certificate for it (a master's own).
    pub fn issue(
        &self,
        identity: &Identity,
        hosts: &[String],
        lifetime: Duration,
    ) -> Result<Credential> {
        let key = KeyPair::generate().map_err(cert_err("cannot make a key"))?;
        let cert_pem = self.sign(identity, hosts, &key, lifetime)?;
        Ok(Credential {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// A certificate for the key of a signing request (an agent joining or
    /// renewing). What it names is the CA's choice, not the request's.
    pub fn sign_request(
        &self,
        csr_pem: &str,
        identity: &Identity,
        hosts: &[String],
        lifetime: Duration,
    ) -> Result<String> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| TlsError::Certificate(format!("the signing request: {e}")))?;
        self.sign(identity, hosts, &csr.public_key, lifetime)
    }
}

/// A credential in use by listeners and clients, replaced in place when it
/// is renewed (connections made after see the new one).
#[derive(Clone)]
pub struct Keys {
    current: Arc<RwLock<(Arc<CertifiedKey>, Credential)>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("identity", &self.credential().identity())
            .finish()
    }
}

impl Keys {
    pub fn new(c: Credential) -> Result<Keys> {
        Ok(Keys {
            current: Arc::new(RwLock::new((c.certified()?, c))),
        })
    }

    pub fn replace(&self, c: Credential) -> Result<()> {
        let k = c.certified()?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (k, c);
        Ok(())
    }

    pub fn credential(&self) -> Credential {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    fn key(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }
}

impl rustls::server::ResolvesServerCert for Keys {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }
}

impl rustls::client::ResolvesClientCert for Keys {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A server configuration: `keys` as the server's certificate; client
/// certificates optional, and verified against `trust` when given.
pub fn server_config(trust: &Trust, keys: Keys) -> Result<Arc<rustls::ServerConfig>> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        trust.roots.clone(),
        provider(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| TlsError::Certificate(format!("client verifier: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Certificate(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(keys));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What a client requires of the server it connects to, beyond a
/// certificate from the cluster's CA for the host it dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A master (clients, agents, masters calling each other).
    Master,
    /// An agent (the leader calling agents).
    Agent,
}

#[derive(Debug)]
struct RoleVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    expect: Expect,
}

impl ServerCertVerifier for RoleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match (Identity::of(end_entity), self.expect) {
            (Some(Identity::Master(_)), Expect::Master) => {
                self.inner
                    .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            }
            // Agents' certificates name no host: the chain is checked for
            // the one name they all carry, whatever address was dialled.
            // Dialled by an agent's own name, only that agent will do.
            (Some(Identity::Agent(found)), Expect::Agent) => {
                if let ServerName::DnsName(dialled) = server_name
                    && let Some(wanted) = agent_of_host(dialled.as_ref())
                    && wanted != found
                {
                    return Err(rustls::Error::General(format!(
                        "the server's certificate names agent {found}, not agent {wanted}, whom this connection is for"
                    )));
                }
                let name = ServerName::try_from(AGENT_NAME)
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
                self.inner
                    .verify_server_cert(end_entity, intermediates, &name, ocsp, now)
            }
            (found, _) => Err(rustls::Error::General(format!(
                "the server's certificate names {}, not a {}",
                found.map_or("no Wasmos daemon".to_string(), |i| i.to_string()),
                match self.expect {
                    Expect::Master => "master",
                    Expect::Agent => "agent",
                }
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client configuration that trusts only the cluster's CA, requires the
/// server to be an `expect`, and presents `keys` when given (daemons).
pub fn client_config(
    trust: &Trust,
    expect: Expect,
    keys: Option<Keys>,
) -> Result<rustls::ClientConfig> {
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        trust.roots.clone(),
        provider(),
    )
    .build()
    .map_err(|e| TlsError::Certificate(format!("server verifier: {e}")))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Certificate(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RoleVerifier { inner, expect }));
    let mut config = match keys {
        Some(k) => builder.with_client_cert_resolver(Arc::new(k)),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The identity in the client certificate the handshake verified.
    pub identity: Option<Identity>,
    /// False on an explicitly opened plaintext listener.
    pub tls: bool,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Listener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Listener>) -> Peer {
        stream.remote_addr().clone()
    }
}

pub type Stream = tokio_util::either::Either<tokio_rustls::server::TlsStream<TcpStream>, TcpStream>;

/// Accepted connections, handshaken in the background (a slow or silent
/// client holds up no one), for `axum::serve`.
pub struct Listener {
    rx: tokio::sync::mpsc::Receiver<(Stream, Peer)>,
    local: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a plaintext HTTP request on a TLS port gets.
fn use_https() -> Vec<u8> {
    let body = r#"{"message":"this port speaks only HTTPS: use https:// and trust the cluster's CA certificate (the ca: line of wasmos up)"}"#;
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl Listener {
    /// TLS with `config` on `tcp`.
    pub fn tls(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Listener> {
        Self::spawn(tcp, Some(tokio_rustls::TlsAcceptor::from(config)))
    }

    /// Plaintext: only where an operator asked for it.
    pub fn plain(tcp: TcpListener) -> std::io::Result<Listener> {
        Self::spawn(tcp, None)
    }

    fn spawn(
        tcp: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<Listener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let accept = tokio::spawn(async move {
            loop {
                let (sock, addr) = match tcp.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of descriptors and the like: wait, don't spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Small request/response exchanges: never let Nagle hold a
                // reply back waiting for an ACK.
                let _ = sock.set_nodelay(true);
                let tx = tx.clone();
                match &tls {
                    None => {
                        let peer = Peer {
                            addr,
                            identity: None,
                            tls: false,
                        };
                        if tx.send((Stream::Right(sock), peer)).await.is_err() {
                            return;
                        }
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            if let Some(s) = handshake(acceptor, sock, addr).await {
                                let _ = tx.send(s).await;
                            }
                        });
                    }
                }
            }
        });
        Ok(Listener { rx, local, accept })
    }
}

async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    mut sock: TcpStream,
    addr: SocketAddr,
) -> Option<(Stream, Peer)> {
    let work = async {
        // A TLS connection opens with a handshake record (0x16); anything
        // else is most likely plaintext HTTP: say so instead of a reset.
        let mut first = [0u8; 1];
        if sock.peek(&mut first).await.ok()? == 0 {
            return None;
        }
        if first[0] != 0x16 {
            let _ = sock.write_all(&use_https()).await;
            let _ = sock.shutdown().await;
            return None;
        }
        match acceptor.accept(sock).await {
            Ok(s) => {
                let identity = s
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| Identity::of(c));
                Some((
                    Stream::Left(s),
                    Peer {
                        addr,
                        identity,
                        tls: true,
                    },
                ))
            }
            Err(e) => {
                tracing::debug!(%addr, error = %e, "TLS handshake failed");
                None
            }
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, work)
        .await
        .ok()
        .flatten()
}

impl axum::serve::Listener for Listener {
    type Io = Stream;
    type Addr = Peer;

    async fn accept(&mut self) -> (Stream, Peer) {
        match self.rx.recv().await {
            Some(s) => s,
            // The accept task ended (never, short of a panic): serve nothing.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer {
            addr: self.local,
            identity: None,
            tls: false,
        })
    }
}

/// The host names and addresses a daemon's certificate covers: the host of
/// the URL it advertises, the address it listens on (unless unspecified),
/// and loopback names.
pub fn hosts_for(advertise: &str, listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    let host = advertise
        .split_once("://")
        .map_or(advertise, |(_, r)| r)
        .split('/')
        .next()
        .unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    hosts.push(host.trim_matches(['[', ']']).to_string());
    if !listen.ip().is_unspecified() {
        hosts.push(listen.ip().to_string());
    }
    hosts.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
    hosts.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    hosts.retain(|h| !h.is_empty() && seen.insert(h.clone()));
    hosts
}

#[cfg(test)]
mod tests;
