//! Raft traffic between masters: HTTP POSTs of MessagePack (JSON to and
//! from older masters; see [`crate::codec`]) to
//! `<master>/raft/v1/{append,vote,pre-vote,snapshot,transfer-leader}` on
//! the masters' own API listener, over TLS: both ends present their master
//! certificates from the cluster CA.
//!
//! The receiving side is [`crate::Store::handle_rpc`]; the master's HTTP
//! layer mounts it. A snapshot travels as one request: a JSON header line
//! (vote and snapshot metadata), a newline, then the snapshot's bytes.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::OptionalSend;
use openraft::errors::{
    NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::incarnation::{self, Incarnations};
use crate::types::{MasterNode, Snapshot, SnapshotData, SnapshotMeta, TypeConfig, Vote};
use wasmos_state::codec::Codec;

/// How a master answers a raft request it cannot parse (older masters
/// answer MessagePack with it too).
pub(crate) const MALFORMED: &str = "malformed raft request";

/// The path prefix of raft RPCs.
pub const RAFT_PREFIX: &str = "/raft/v1";

/// What a leader tells a master it has removed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RemovedNotice {
    /// The removed master's id.
    pub id: u64,
    /// The leader that removed it.
    pub by: u64,
}

/// The header line of a snapshot request.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct SnapshotHeader {
    pub vote: Vote,
    pub meta: SnapshotMeta,
}

#[derive(Debug)]
struct HttpError(String);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpError {}

/// Makes one client per peer; all share one connection pool.
#[derive(Clone)]
pub struct Network {
    http: reqwest::Client,
    lives: Arc<Incarnations>,
}

impl Network {
    /// Tells the master at `addr` that it was removed from the cluster
    /// (best effort: a master that is down learns nothing).
    pub async fn notify_removed(&self, addr: &str, notice: &RemovedNotice) -> Result<(), String> {
        let url = format!("{}{RAFT_PREFIX}/removed", addr.trim_end_matches('/'));
        let resp = self
            .http
            .post(&url)
            .header(incarnation::HEADER, self.lives.me())
            .json(notice)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("{url} answered {}", resp.status()))
        }
    }

    /// `bind` is the local address outgoing connections use (so that a
    /// master on 127.0.0.2 talks from 127.0.0.2).
    pub fn new(
        tls: Option<rustls::ClientConfig>,
        bind: Option<IpAddr>,
        lives: Arc<Incarnations>,
    ) -> Result<Network, String> {
        let mut builder = reqwest::Client::builder();
        if let Some(t) = tls {
            builder = builder.use_preconfigured_tls(t);
        }
        let http = builder
            .connect_timeout(Duration::from_millis(500))
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .local_address(bind)
            .build()
            .map_err(|e| format!("cannot build the raft HTTP client: {e}"))?;
        Ok(Network { http, lives })
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &MasterNode) -> Peer {
        Peer {
            http: self.http.clone(),
            lives: self.lives.clone(),
            codec: Codec::MessagePack,
            target,
            base: format!("{}{RAFT_PREFIX}", node.addr.trim_end_matches('/')),
        }
    }
}

/// The connection to one peer.
pub struct Peer {
    http: reqwest::Client,
    lives: Arc<Incarnations>,
    /// MessagePack, until the peer turns out to be an older master that
    /// reads only JSON.
    codec: Codec,
    target: u64,
    base: String,
}

/// How a request failed, before it is typed for openraft.
enum Failure {
    /// Could not connect: back off.
    Unreachable(String),
    /// Sent but failed (timeout, reset, bad answer): retry soon.
    Network(String),
    /// The peer could not parse MessagePack: it is an older master.
    NeedsJson,
}

impl Failure {
    fn rpc(self) -> RPCError<TypeConfig> {
        match self {
            Failure::Unreachable(m) => RPCError::Unreachable(Unreachable::new(&HttpError(m))),
            Failure::Network(m) => RPCError::Network(NetworkError::new(&HttpError(m))),
            Failure::NeedsJson => {
                RPCError::Network(NetworkError::new(&HttpError("the peer needs JSON".into())))
            }
        }
    }

    fn streaming(self) -> StreamingError<TypeConfig> {
        match self {
            Failure::Unreachable(m) => StreamingError::Unreachable(Unreachable::new(&HttpError(m))),
            Failure::Network(m) => StreamingError::Network(NetworkError::new(&HttpError(m))),
            Failure::NeedsJson => {
                StreamingError::Network(NetworkError::new(&HttpError("the peer needs JSON".into())))
            }
        }
    }
}

impl Peer {
    async fn send<R: DeserializeOwned>(
        &self,
        op: &str,
        codec: Codec,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<R, Failure> {
        let url = format!("{}/{op}", self.base);
        let mut req = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, codec.content_type())
            .header(incarnation::HEADER, self.lives.me());
        if let Some(known) = self.lives.known(self.target) {
            req = req.header(incarnation::EXPECTED, known);
        }
        let resp = req.body(body).timeout(timeout).send().await.map_err(|e| {
            if e.is_connect() {
                Failure::Unreachable(format!("master {} at {url}: {e}", self.target))
            } else {
                Failure::Network(format!("master {} at {url}: {e}", self.target))
            }
        })?;
        let status = resp.status();
        // An answer from another life of the peer's id is not counted (a
        // vote or an acknowledgement from a master that lost its data).
        let life = resp
            .headers()
            .get(incarnation::HEADER)
            .and_then(|v| v.to_str().ok());
        if let Err(why) = self.lives.check_answer(self.target, life) {
            if self.lives.first_refusal(life.unwrap_or_default()) {
                tracing::error!("ignoring raft answers: {why}");
            }
            return Err(Failure::Unreachable(why));
        }
        let resp_type = resp.headers().get(reqwest::header::CONTENT_TYPE).cloned();
        if status == reqwest::StatusCode::BAD_REQUEST && codec == Codec::MessagePack {
            let text = resp.text().await.unwrap_or_default();
            if text.contains(MALFORMED) {
                return Err(Failure::NeedsJson);
            }
            return Err(Failure::Unreachable(format!(
                "master {} answered {status}: {text}",
                self.target
            )));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Failure::Network(format!("master {}: {e}", self.target)))?;
        if !status.is_success() {
            // A peer that is shutting down, misconfigured, or refuses our
            // certificate: not worth hammering.
            return Err(Failure::Unreachable(format!(
                "master {} answered {status}: {}",
                self.target,
                String::from_utf8_lossy(&bytes)
            )));
        }
        let answered = Codec::from_content_type(resp_type.as_ref().and_then(|v| v.to_str().ok()));
        let result: Result<R, RaftError<TypeConfig>> = answered
            .decode(&bytes)
            .map_err(|e| Failure::Network(format!("master {}: bad answer: {e}", self.target)))?;
        result.map_err(|e| Failure::Unreachable(format!("master {}: {e}", self.target)))
    }

    async fn call<Q: Serialize, R: DeserializeOwned>(
        &mut self,
        op: &str,
        req: &Q,
        option: &RPCOption,
    ) -> Result<R, RPCError<TypeConfig>> {
        loop {
            let codec = self.codec;
            let body = codec
                .encode(req)
                .map_err(|e| RPCError::Network(NetworkError::new(&HttpError(e))))?;
            let ttl = ttl_for(option.hard_ttl(), body.len());
            match self.send(op, codec, body, ttl).await {
                Err(Failure::NeedsJson) => {
                    tracing::info!(
                        master = self.target,
                        "the master reads raft messages only as JSON (an older version); sending JSON to it"
                    );
                    self.codec = Codec::Json;
                }
                r => return r.map_err(Failure::rpc),
            }
        }
    }
}

/// How long a request may take: openraft's time-to-live (a heartbeat
/// interval, 50 ms by default) plus time to carry its bytes at 4 MB/s. An
/// entry holding plugin components is megabytes; under a heartbeat's TTL it
/// would time out on every try, and its install would never commit.
fn ttl_for(hard_ttl: Duration, body_len: usize) -> Duration {
    hard_ttl + Duration::from_micros(body_len as u64 / 4)
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("append", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("vote", &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("pre-vote", &rpc, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let header = SnapshotHeader {
            vote,
            meta: snapshot.meta,
        };
        let mut body = serde_json::to_vec(&header)
            .map_err(|e| StreamingError::Network(NetworkError::new(&HttpError(e.to_string()))))?;
        body.push(b'\n');
        body.extend_from_slice(snapshot.snapshot.get_ref());
        // A snapshot holds every plugin's component: give it time.
        let timeout = option.hard_ttl().max(Duration::from_secs(60));
        tokio::select! {
            r = self.send("snapshot", Codec::Json, body, timeout) => r.map_err(Failure::streaming),
            closed = cancel => Err(StreamingError::Closed(closed)),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("transfer-leader", &req, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_requests_get_time_to_travel() {
        let heartbeat = Duration::from_millis(50);
        assert_eq!(ttl_for(heartbeat, 200), Duration::from_micros(50_050));
        // Every bundled plugin in one entry is a few megabytes.
        assert!(ttl_for(heartbeat, 4 << 20) >= Duration::from_secs(1));
    }
}
