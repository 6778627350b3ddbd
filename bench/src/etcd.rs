//! Three etcd members, driven over gRPC.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use crate::{System, Writer};

/// `etcdserverpb.PutRequest`, the fields this benchmark sets.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `etcdserverpb.PutResponse`; its fields are not read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {}

pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    client_ports: Vec<u16>,
    peer_ports: Vec<u16>,
    election_ms: u64,
    /// Each member's GOMAXPROCS; 0 leaves Go's default.
    gomaxprocs: u16,
    children: Vec<Option<Child>>,
    http: reqwest::Client,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn put(
    channel: Channel,
    key: Vec<u8>,
    value: Vec<u8>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let mut req = tonic::Request::new(PutRequest { key, value });
    req.set_timeout(timeout);
    let codec = tonic_prost::ProstCodec::<PutRequest, PutResponse>::default();
    grpc.unary(
        req,
        PathAndQuery::from_static("/etcdserverpb.KV/Put"),
        codec,
    )
    .await?;
    Ok(())
}

impl Cluster {
    pub async fn start(
        bin: &Path,
        dir: &Path,
        election_ms: u64,
        gomaxprocs: u16,
    ) -> anyhow::Result<Cluster> {
        let found = std::process::Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        anyhow::ensure!(
            found,
            "{} does not run: install etcd (`apt-get install etcd-server`), pass --etcd, or --skip-etcd",
            bin.display()
        );
        std::fs::create_dir_all(dir)?;
        let mut c = Cluster {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            client_ports: (0..3).map(|_| free_port()).collect::<anyhow::Result<_>>()?,
            peer_ports: (0..3).map(|_| free_port()).collect::<anyhow::Result<_>>()?,
            election_ms,
            gomaxprocs,
            children: vec![None, None, None],
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        };
        for i in 0..3 {
            c.spawn(i)?;
        }
        c.wait_leader(Duration::from_secs(60)).await?;
        Ok(c)
    }

    fn client_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.client_ports[i])
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let peer = |j: usize| format!("http://127.0.0.1:{}", self.peer_ports[j]);
        let initial: Vec<String> = (0..3).map(|j| format!("e{}={}", j + 1, peer(j))).collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("e{}.log", i + 1)))?;
        let mut cmd = Command::new(&self.bin);
        if self.gomaxprocs > 0 {
            cmd.env("GOMAXPROCS", self.gomaxprocs.to_string());
        }
        let child = cmd
            .args(["--name", &format!("e{}", i + 1)])
            .arg("--data-dir")
            .arg(self.dir.join(format!("e{}", i + 1)))
            .args(["--listen-client-urls", &self.client_url(i)])
            .args(["--advertise-client-urls", &self.client_url(i)])
            .args(["--listen-peer-urls", &peer(i)])
            .args(["--initial-advertise-peer-urls", &peer(i)])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "wasmos-bench"])
            .args([
                "--heartbeat-interval",
                &(self.election_ms / 5).max(10).to_string(),
            ])
            .args(["--election-timeout", &self.election_ms.to_string()])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        self.children[i] = Some(child);
        Ok(())
    }

    /// `(member id, leader id, raft index)` as member `i` reports them.
    async fn status(&self, i: usize) -> Option<(String, String, u64)> {
        let r = self
            .http
            .post(format!("{}/v3/maintenance/status", self.client_url(i)))
            .body("{}")
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        let me = v["header"]["member_id"].as_str()?.to_string();
        let leader = v["leader"].as_str()?.to_string();
        let index = v["raftIndex"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Some((me, leader, index))
    }

    async fn leader(&self) -> Option<usize> {
        for i in 0..3 {
            if self.children[i].is_none() {
                continue;
            }
            if let Some((me, leader, _)) = self.status(i).await
                && me == leader
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
                "no etcd member became leader; see the logs in {}",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill().await;
        }
    }

    async fn channel(&self, i: usize) -> anyhow::Result<Channel> {
        Ok(Channel::from_shared(self.client_url(i))?
            .tcp_nodelay(true)
            .connect()
            .await?)
    }
}

struct GrpcWriter {
    channels: Vec<Channel>,
}

impl Writer for GrpcWriter {
    fn write<'a>(
        &'a self,
        client: usize,
        value: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let ch = self.channels[client % self.channels.len()].clone();
            put(
                ch,
                format!("bench/c{client}").into_bytes(),
                value.as_bytes().to_vec(),
                Duration::from_secs(10),
            )
            .await
        })
    }
}

impl System for Cluster {
    fn name(&self) -> &'static str {
        "etcd"
    }

    async fn writer(&self, _clients: usize) -> anyhow::Result<Box<dyn Writer>> {
        let leader = self.wait_leader(Duration::from_secs(30)).await?;
        // Like etcd's own benchmark tool: a few connections, many streams.
        let mut channels = Vec::new();
        for _ in 0..16 {
            channels.push(self.channel(leader).await?);
        }
        Ok(Box::new(GrpcWriter { channels }))
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
        for i in 0..3 {
            if self.children[i].is_none() {
                continue;
            }
            let Ok(ch) = tokio::time::timeout(Duration::from_millis(300), self.channel(i)).await
            else {
                continue;
            };
            let Ok(ch) = ch else { continue };
            let r = put(
                ch,
                b"bench/probe".to_vec(),
                n.to_string().into_bytes(),
                Duration::from_millis(300),
            )
            .await;
            if r.is_ok() {
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
            if let (Some(l), Some((_, leader, me))) = (self.leader().await, self.status(i).await)
                && !leader.is_empty()
                && leader != "0"
                && let Some((_, _, li)) = self.status(l).await
                && me + 10 >= li
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "etcd member {} did not catch up after a restart",
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
        self.status(l).await.map(|(_, _, i)| i)
    }
}
