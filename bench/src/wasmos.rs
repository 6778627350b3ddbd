//! Three `wasmos master` processes, with TLS (the default) or `--insecure`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::{System, Writer};

pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    ports: Vec<u16>,
    election_ms: u64,
    /// Each master's `--worker-threads`; 0 leaves the default.
    worker_threads: u16,
    /// More arguments for every master.
    extra: Vec<String>,
    children: Vec<Option<Child>>,
    http: reqwest::Client,
    /// The cluster CA and the management token the masters share; `None`:
    /// they run --insecure.
    tls: Option<crate::pki::Pki>,
    /// For the load generator's own connections.
    connector: Option<tokio_rustls::TlsConnector>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Cluster {
    pub async fn start(
        bin: &Path,
        dir: &Path,
        election_ms: u64,
        worker_threads: u16,
        tls: bool,
    ) -> anyhow::Result<Cluster> {
        Self::start_with(bin, dir, 3, election_ms, worker_threads, tls, Vec::new()).await
    }

    /// [`Cluster::start`] with `members` masters (1 or more), each also
    /// given `extra` arguments.
    pub async fn start_with(
        bin: &Path,
        dir: &Path,
        members: usize,
        election_ms: u64,
        worker_threads: u16,
        tls: bool,
        extra: Vec<String>,
    ) -> anyhow::Result<Cluster> {
        anyhow::ensure!(
            bin.exists(),
            "{} is missing: build it with `cargo build --release -p wasmos`, or pass --wasmos",
            bin.display()
        );
        std::fs::create_dir_all(dir)?;
        anyhow::ensure!(members >= 1, "a cluster needs at least one master");
        let ports = (0..members)
            .map(|_| free_port())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (tls, connector, http) = if tls {
            let pki = crate::pki::Pki::create(&dir.join("tls"))?;
            let config = wasmos_tls::client_config(&pki.trust, wasmos_tls::Expect::Master, None)?;
            let http = pki.client()?;
            (
                Some(pki),
                Some(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
                    config,
                ))),
                http,
            )
        } else {
            (None, None, reqwest::Client::builder())
        };
        let mut c = Cluster {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            ports,
            election_ms,
            worker_threads,
            extra,
            children: (0..members).map(|_| None).collect(),
            http: http.timeout(Duration::from_secs(5)).build()?,
            tls,
            connector,
        };
        for i in 0..members {
            c.spawn(i)?;
        }
        c.wait_leader(Duration::from_secs(60)).await?;
        Ok(c)
    }

    fn url(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.ports[i])
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let peers: Vec<String> = (0..self.ports.len())
            .map(|j| format!("{}={}", j + 1, self.url(j)))
            .collect();
        let data = self.dir.join(format!("m{}", i + 1));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("m{}.log", i + 1)))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("master");
        match &self.tls {
            Some(p) => cmd.args(p.master_args()),
            None => cmd.arg("--insecure"),
        };
        if self.worker_threads > 0 {
            cmd.args(["--worker-threads", &self.worker_threads.to_string()]);
        }
        let child = cmd
            .args(["--id", &(i + 1).to_string()])
            .args(["--listen", &format!("127.0.0.1:{}", self.ports[i])])
            .args(["--peers", &peers.join(",")])
            .args(["--election-timeout-ms", &self.election_ms.to_string()])
            .args(&self.extra)
            .arg("--data-dir")
            .arg(&data)
            .env("WASMOS_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        self.children[i] = Some(child);
        Ok(())
    }

    async fn view(&self, i: usize) -> Option<Value> {
        let r = self
            .http
            .get(format!("{}/api/wasmos/v1/leader", self.url(i)))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// The index of the member acting as leader.
    async fn leader(&self) -> Option<usize> {
        for i in 0..self.children.len() {
            if self.children[i].is_none() {
                continue;
            }
            if let Some(v) = self.view(i).await
                && v["this_master"]["role"] == "leader"
            {
                return Some(i);
            }
        }
        None
    }

    async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.leader().await {
                return Ok(i);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no wasmos master became leader; see the logs in {}",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn status(&self, i: usize) -> Option<Value> {
        let r = self
            .http
            .get(format!("{}/api/wasmos/v1/masters", self.url(i)))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .ok()?;
        r.json::<Value>()
            .await
            .ok()
            .map(|v| v["this_master"].clone())
    }

    /// The leader's URL, once there is one.
    pub async fn leader_url(&self) -> anyhow::Result<String> {
        let i = self.wait_leader(Duration::from_secs(60)).await?;
        Ok(self.url(i))
    }

    /// The highest raft term any live master knows (each election raises
    /// it).
    pub async fn term(&self) -> Option<u64> {
        let mut best = None;
        for i in 0..self.children.len() {
            if self.children[i].is_some()
                && let Some(t) = self.view(i).await.and_then(|v| v["term"].as_u64())
            {
                best = best.max(Some(t));
            }
        }
        best
    }

    /// The cluster's CA and tokens (`None` under --insecure).
    pub fn pki(&self) -> Option<&crate::pki::Pki> {
        self.tls.as_ref()
    }

    pub async fn stop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill().await;
        }
    }
}

/// The load generator's side of Wasmos' API: one keep-alive HTTP/1.1
/// connection per client, each write one request written whole and its
/// response read back (as `wrk` does), so that the generator takes little
/// of the CPU the masters share with it. A connection that fails is made
/// again by the next write.
struct HttpWriter {
    addr: std::net::SocketAddr,
    connector: Option<tokio_rustls::TlsConnector>,
    /// `authorization: Bearer <token>\r\n`, or nothing under --insecure.
    auth_line: String,
    /// `addr` as the `host` header.
    host: String,
    conns: Vec<tokio::sync::Mutex<Option<Conn>>>,
}

type Stream = tokio_util::either::Either<
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    tokio::net::TcpStream,
>;

struct Conn {
    tcp: Stream,
    /// Bytes read past the previous response (none, without pipelining).
    buf: Vec<u8>,
    /// The request being written (reused).
    req: Vec<u8>,
}

impl Conn {
    /// Sends one PUT of `body` to `path`; returns the response status.
    async fn put(
        &mut self,
        host: &str,
        auth_line: &str,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<u16> {
        use std::io::Write as _;
        use tokio::io::AsyncWriteExt;
        self.req.clear();
        write!(
            self.req,
            "PUT {path} HTTP/1.1\r\nhost: {host}\r\n{auth_line}content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )?;
        self.req.extend_from_slice(body);
        self.tcp.write_all(&self.req).await?;
        let resp = crate::http1::read_message(&mut self.tcp, &mut self.buf)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the server closed the connection"))?;
        let status: u16 = resp
            .second_word()
            .parse()
            .map_err(|_| anyhow::anyhow!("bad status line in {:?}", resp.head))?;
        let close = resp
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        anyhow::ensure!(!close, "the server closed the connection ({status})");
        Ok(status)
    }
}

impl HttpWriter {
    fn new(
        addr: std::net::SocketAddr,
        clients: usize,
        connector: Option<tokio_rustls::TlsConnector>,
        token: Option<String>,
    ) -> HttpWriter {
        HttpWriter {
            addr,
            connector,
            auth_line: token
                .map(|t| format!("authorization: Bearer {t}\r\n"))
                .unwrap_or_default(),
            host: addr.to_string(),
            conns: (0..clients)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
        }
    }

    async fn put(&self, client: usize, value: &str) -> anyhow::Result<()> {
        let mut slot = self
            .conns
            .get(client)
            .ok_or_else(|| anyhow::anyhow!("no connection for client {client}"))?
            .lock()
            .await;
        let mut conn = match slot.take() {
            Some(c) => c,
            None => {
                let tcp = tokio::net::TcpStream::connect(self.addr).await?;
                tcp.set_nodelay(true)?;
                let tcp = match &self.connector {
                    Some(c) => Stream::Left(
                        c.connect(rustls::pki_types::ServerName::from(self.addr.ip()), tcp)
                            .await?,
                    ),
                    None => Stream::Right(tcp),
                };
                Conn {
                    tcp,
                    buf: Vec::with_capacity(4096),
                    req: Vec::with_capacity(1024),
                }
            }
        };
        let body = serde_json::to_vec(&json!({ "items": { "v": value } }))?;
        let path = format!("/api/wasmos/v1/vars/bench/c{client}");
        let status = tokio::time::timeout(
            Duration::from_secs(10),
            conn.put(&self.host, &self.auth_line, &path, &body),
        )
        .await??;
        *slot = Some(conn);
        anyhow::ensure!((200..300).contains(&status), "answered {status}");
        Ok(())
    }
}

impl Writer for HttpWriter {
    fn write<'a>(
        &'a self,
        client: usize,
        value: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(self.put(client, value))
    }
}

impl System for Cluster {
    fn name(&self) -> &'static str {
        if self.tls.is_some() {
            "wasmos"
        } else {
            "wasmos --insecure"
        }
    }

    async fn writer(&self, clients: usize) -> anyhow::Result<Box<dyn Writer>> {
        let leader = self.wait_leader(Duration::from_secs(30)).await?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.ports[leader]));
        let token = self
            .tls
            .as_ref()
            .map(|p| p.management_token())
            .transpose()?;
        Ok(Box::new(HttpWriter::new(
            addr,
            clients,
            self.connector.clone(),
            token,
        )))
    }

    async fn kill_leader(&mut self) -> anyhow::Result<usize> {
        let i = self.wait_leader(Duration::from_secs(30)).await?;
        if let Some(mut c) = self.children[i].take() {
            c.kill().await?;
            let _ = c.wait().await;
        }
        Ok(i)
    }

    async fn probe_write(&self, n: u64) -> bool {
        for i in 0..self.children.len() {
            if self.children[i].is_none() {
                continue;
            }
            let r = self
                .http
                .put(format!("{}/api/wasmos/v1/vars/bench/probe", self.url(i)))
                .json(&json!({ "items": { "n": n.to_string() } }))
                .timeout(Duration::from_millis(300))
                .send()
                .await;
            if r.is_ok_and(|r| r.status().is_success()) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        false
    }

    async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let leader = self.leader().await;
            if leader == Some(i) {
                return Ok(());
            }
            if let (Some(l), Some(me)) = (leader, self.status(i).await)
                && l != i
                && let Some(ls) = self.status(l).await
                && me["applied"].as_u64().unwrap_or(0) + 10
                    >= ls["applied"].as_u64().unwrap_or(u64::MAX)
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "master {} did not catch up after a restart",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pids(&self) -> Vec<u32> {
        crate::pids_of(&self.children)
    }

    async fn log_index(&self) -> Option<u64> {
        let l = self.leader().await?;
        self.status(l).await?["last_log_index"].as_u64()
    }
}
