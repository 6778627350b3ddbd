use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn ca(dir: &Path) -> Authority {
    Authority::create(dir, "test").unwrap()
}

#[test]
fn identities_round_trip_through_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path());
    for id in [Identity::Master(3), Identity::Agent("a1b2".into())] {
        let c = ca
            .issue(&id, &["127.0.0.1".into(), "node1".into()], DAY)
            .unwrap();
        assert_eq!(c.identity(), Some(id.clone()));
        let (from, to) = c.validity().unwrap();
        assert!(from < SystemTime::now() && to > SystemTime::now() + DAY - Duration::from_secs(60));
    }
    assert_eq!(Identity::from_uri("wasmos://agent/x/y"), None);
    assert_eq!(Identity::from_uri("wasmos://master/one"), None);
    assert_eq!(Identity::from_uri("https://master/1"), None);
}

#[test]
fn a_ca_is_loaded_back_from_its_files_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let first = ca(dir.path());
    assert!(Authority::create(dir.path(), "again").is_err());
    let again = Authority::load(&dir.path().join(CA_CERT), &dir.path().join(CA_KEY)).unwrap();
    let c = again.issue(&Identity::Master(1), &[], DAY).unwrap();
    assert!(c.issued_by(&first.trust().unwrap()));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.path().join(CA_KEY))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "the CA key is readable by others: {mode:o}"
    );
}

#[test]
fn a_signing_request_gets_the_identity_the_ca_chooses_for_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path());
    let (csr, key) = Credential::request().unwrap();
    let cert = ca
        .sign_request(
            &csr,
            &Identity::Agent("chosen".into()),
            &["10.0.0.9".into()],
            DAY,
        )
        .unwrap();
    let c = Credential {
        cert_pem: cert,
        key_pem: key,
    };
    assert_eq!(c.identity(), Some(Identity::Agent("chosen".into())));
    // The key and the certificate go together.
    Keys::new(c).unwrap();
    assert!(
        ca.sign_request("not a request", &Identity::Master(1), &[], DAY)
            .is_err()
    );
}

#[test]
fn another_cas_certificates_are_not_issued_by_this_one() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let (ca_a, ca_b) = (ca(a.path()), ca(b.path()));
    let c = ca_b.issue(&Identity::Master(1), &[], DAY).unwrap();
    assert!(!c.issued_by(&ca_a.trust().unwrap()));
    assert!(c.issued_by(&ca_b.trust().unwrap()));
}

#[test]
fn renewal_is_due_in_the_last_third_of_a_certificates_life() {
    let dir = tempfile::tempdir().unwrap();
    let c = ca(dir.path())
        .issue(&Identity::Master(1), &[], 30 * DAY)
        .unwrap();
    let now = SystemTime::now();
    assert!(!c.needs_renewal(now));
    assert!(!c.needs_renewal(now + 15 * DAY));
    assert!(c.needs_renewal(now + 21 * DAY));
}

#[test]
fn hosts_cover_the_advertised_host_and_the_listen_address() {
    let h = hosts_for(
        "https://node7.example:5050/",
        "10.1.2.3:5050".parse().unwrap(),
        &[],
    );
    assert_eq!(h, ["node7.example", "10.1.2.3", "localhost", "127.0.0.1"]);
    let h = hosts_for("https://[::1]:5050", "0.0.0.0:5050".parse().unwrap(), &[]);
    assert_eq!(h[0], "::1");
    assert!(!h.contains(&"0.0.0.0".to_string()));
}

struct Server {
    addr: SocketAddr,
    peers: tokio::sync::mpsc::Receiver<Peer>,
}

/// A TLS listener answering every connection with its peer's identity.
async fn serve(trust: &Trust, keys: Keys) -> Server {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut l = Listener::tls(tcp, server_config(trust, keys).unwrap()).unwrap();
    let addr = axum::serve::Listener::local_addr(&l).unwrap().addr;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let (mut io, peer) = axum::serve::Listener::accept(&mut l).await;
            let _ = tx.send(peer).await;
            let _ = io.write_all(b"hello").await;
            let _ = io.shutdown().await;
        }
    });
    Server { addr, peers: rx }
}

async fn connect(config: rustls::ClientConfig, addr: SocketAddr) -> std::io::Result<String> {
    connect_as(config, addr, "127.0.0.1").await
}

/// Connects to `addr` dialling the name `host`.
async fn connect_as(
    config: rustls::ClientConfig,
    addr: SocketAddr,
    host: &str,
) -> std::io::Result<String> {
    let tcp = TcpStream::connect(addr).await?;
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(host.to_string()).unwrap(), tcp)
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn daemons_know_each_other_by_certificate_and_refuse_other_cas() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path());
    let trust = ca.trust().unwrap();
    let hosts = vec!["127.0.0.1".to_string()];
    let master = Keys::new(ca.issue(&Identity::Master(1), &hosts, DAY).unwrap()).unwrap();
    let agent = Keys::new(
        ca.issue(&Identity::Agent("a".into()), &[AGENT_NAME.into()], DAY)
            .unwrap(),
    )
    .unwrap();
    let mut server = serve(&trust, master.clone()).await;

    // An agent connecting to a master: both verified, the master sees who.
    let c = client_config(&trust, Expect::Master, Some(agent.clone())).unwrap();
    assert_eq!(connect(c, server.addr).await.unwrap(), "hello");
    let peer = server.peers.recv().await.unwrap();
    assert_eq!(peer.identity, Some(Identity::Agent("a".into())));
    assert!(peer.tls);

    // A client without a certificate is served, with no identity.
    let c = client_config(&trust, Expect::Master, None).unwrap();
    assert_eq!(connect(c, server.addr).await.unwrap(), "hello");
    assert_eq!(server.peers.recv().await.unwrap().identity, None);

    // Expecting an agent where a master answers: refused by the client.
    let c = client_config(&trust, Expect::Agent, None).unwrap();
    let e = connect(c, server.addr).await.unwrap_err();
    assert!(e.to_string().contains("names master 1, not a agent"), "{e}");
    // A master reaches an agent at any address: the agent's certificate
    // names no host, only what every agent's does.
    let agent_server = serve(&trust, agent.clone()).await;
    let c = client_config(&trust, Expect::Agent, Some(master.clone())).unwrap();
    assert_eq!(connect(c, agent_server.addr).await.unwrap(), "hello");
    // Dialled by an agent's own name, that agent's certificate passes and
    // another agent's does not (one agent cannot answer for another).
    let c = client_config(&trust, Expect::Agent, Some(master.clone())).unwrap();
    assert_eq!(
        connect_as(c.clone(), agent_server.addr, &agent_host("a"))
            .await
            .unwrap(),
        "hello"
    );
    let e = connect_as(c, agent_server.addr, &agent_host("b"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("names agent a, not agent b"), "{e}");
    assert_eq!(agent_of_host(&agent_host("b")), Some("b"));
    assert_eq!(agent_of_host(AGENT_NAME), None);
    assert_eq!(agent_of_host("x.y.agent.wasmos.internal"), None);
    // ... and no agent certificate passes for a master's host name.
    let c = client_config(&trust, Expect::Master, None).unwrap();
    assert!(connect(c, agent_server.addr).await.is_err());

    // A daemon whose certificate comes from another CA: refused by the server.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Authority::create(other_dir.path(), "other").unwrap();
    let stranger = Keys::new(
        other
            .issue(&Identity::Agent("a".into()), &hosts, DAY)
            .unwrap(),
    )
    .unwrap();
    let c = client_config(&trust, Expect::Master, Some(stranger)).unwrap();
    assert!(
        connect(c, server.addr).await.is_err(),
        "another CA's client certificate was accepted"
    );
    // ... and a server from another CA is refused by the client.
    let other_keys = Keys::new(other.issue(&Identity::Master(1), &hosts, DAY).unwrap()).unwrap();
    let other_server = serve(&other.trust().unwrap(), other_keys).await;
    let c = client_config(&trust, Expect::Master, None).unwrap();
    assert!(
        connect(c, other_server.addr).await.is_err(),
        "another CA's server was trusted"
    );
}

#[tokio::test]
async fn a_renewed_certificate_is_presented_on_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path());
    let trust = ca.trust().unwrap();
    let hosts = vec!["127.0.0.1".to_string()];
    let master = Keys::new(ca.issue(&Identity::Master(1), &hosts, DAY).unwrap()).unwrap();
    let agent = Keys::new(
        ca.issue(&Identity::Agent("old".into()), &hosts, DAY)
            .unwrap(),
    )
    .unwrap();
    let mut server = serve(&trust, master).await;
    let mut c = client_config(&trust, Expect::Master, Some(agent.clone())).unwrap();
    // A resumed session carries the certificate of the session it resumes.
    c.resumption = rustls::client::Resumption::disabled();
    connect(c.clone(), server.addr).await.unwrap();
    assert_eq!(
        server.peers.recv().await.unwrap().identity,
        Some(Identity::Agent("old".into()))
    );
    agent
        .replace(
            ca.issue(&Identity::Agent("new".into()), &hosts, DAY)
                .unwrap(),
        )
        .unwrap();
    connect(c, server.addr).await.unwrap();
    assert_eq!(
        server.peers.recv().await.unwrap().identity,
        Some(Identity::Agent("new".into()))
    );
}

#[tokio::test]
async fn plaintext_http_on_a_tls_port_is_told_to_use_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path());
    let keys = Keys::new(
        ca.issue(&Identity::Master(1), &["127.0.0.1".into()], DAY)
            .unwrap(),
    )
    .unwrap();
    let mut server = serve(&ca.trust().unwrap(), keys).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    let body = out.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(body).expect("the body is the JSON its length says");
    assert!(v["message"].as_str().unwrap().contains("https://"));
    // Nothing was served.
    assert!(server.peers.try_recv().is_err());
}

#[tokio::test]
async fn daemons_agree_on_aes_128_gcm() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path());
    let trust = ca.trust().unwrap();
    let hosts = vec!["127.0.0.1".to_string()];
    let master = Keys::new(ca.issue(&Identity::Master(1), &hosts, DAY).unwrap()).unwrap();
    let server = serve(&trust, master).await;
    let c = client_config(&trust, Expect::Master, None).unwrap();
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let s = tokio_rustls::TlsConnector::from(Arc::new(c))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        s.get_ref().1.negotiated_cipher_suite().map(|c| c.suite()),
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
}
