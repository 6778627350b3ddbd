//! DNS with Mesos-DNS' names, served by every master from the state it
//! has applied (leader or not), and Mesos-DNS' HTTP API.
//!
//! The zone (`<domain>.`, `mesos.` by default) is rebuilt from the state
//! on every applied change (at most every [`REBUILD_EVERY`], longer when a
//! rebuild takes long), so an answer follows a scale or a failing health
//! check within a second (up to 100,000 tasks on two cores):
//!
//! - per running task (only healthy ones when it has a health check),
//!   framework label `fw`, task label `t`: A `t.fw.d` and `t.fw.slave.d`
//!   (the agent's address), the canonical `t-<hash>-<agent>.fw.d` and
//!   `.fw.slave.d`, and SRV `_t._tcp.fw.d`, `_t._udp.fw.d` (and their
//!   `.slave.` forms) to the canonical slave name and each host port;
//! - `leader.d`, `master.d`, `masterN.d`, `slave.d`, `<framework>.d`,
//!   `ns1.d`, with `_leader._tcp`/`_udp`, `_slave._tcp` and
//!   `_framework._tcp.<framework>` SRV records; SOA and NS at the apex.
//!
//! Names are mangled as Mesos-DNS mangles them (RFC 1123 labels), and a
//! Marathon task's name is its app's path reversed (`/prod/web` →
//! `web-prod`). Answers carry TTL [`TTL`]: nothing caches them past a
//! change. Names outside the domain are refused (this is not a
//! recursive resolver).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use hickory_proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, NS, SOA, SRV};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use serde_json::{Value, json};
use sha1::Digest;
use wasmos_core::TaskState;
use wasmos_state::State as ClusterState;

use crate::error::ApiJson;
use crate::node::Node;

/// The time to live of every answer: none (as Consul's default), so that
/// a client asks again and sees a task move at once.
pub const TTL: u32 = 0;

/// How often at most the zone is rebuilt while changes arrive.
pub const REBUILD_EVERY: Duration = Duration::from_millis(200);

/// One record's data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rec {
    A(Ipv4Addr),
    /// A port on the host named `target` (a name with its final dot).
    Srv {
        port: u16,
        target: String,
    },
}

/// Every name of the domain and its records; names lower-case with their
/// final dot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Zone {
    /// The domain, with its final dot (`mesos.`).
    pub domain: String,
    pub records: BTreeMap<String, Vec<Rec>>,
    /// Bumped on every rebuild (the SOA serial).
    pub serial: u32,
}

impl Zone {
    /// Puts each name's records in order (answers are rotated from it).
    fn finish(&mut self) {
        for recs in self.records.values_mut() {
            recs.sort();
        }
    }

    fn add(&mut self, name: String, rec: Rec) {
        let recs = self.records.entry(name).or_default();
        if !recs.contains(&rec) {
            recs.push(rec);
        }
    }

    /// The addresses of `name`.
    pub fn addresses(&self, name: &str) -> Vec<Ipv4Addr> {
        self.records
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|r| match r {
                Rec::A(ip) => Some(*ip),
                Rec::Srv { .. } => None,
            })
            .collect()
    }
}

/// What the zone is made of besides the state: the masters (id and API
/// URL), which leads, and the address of the master serving it.
pub struct Sources<'a> {
    pub domain: &'a str,
    pub masters: Vec<(u64, String)>,
    pub leader: Option<u64>,
    pub this_master: Option<Ipv4Addr>,
    pub serial: u32,
}

/// A name as one DNS label, as Mesos-DNS makes it (RFC 1123): lower
/// case, `-`, `.` and `_` as `-`, other characters dropped, no `-` at
/// either end, at most 63 characters.
pub fn label(s: &str) -> String {
    let mut out: String = s
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' => Some(c),
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            '-' | '.' | '_' => Some('-'),
            _ => None,
        })
        .collect();
    out.truncate(63);
    out.trim_matches('-').to_string()
}

/// A task's label: its name, or for a name that is a path (a Marathon
/// app's, `/prod/web`) the path reversed as Marathon names its Mesos
/// tasks (`web.prod`), made one label.
pub fn task_label(name: &str) -> String {
    if name.contains('/') {
        let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).rev().collect();
        label(&parts.join("."))
    } else {
        label(name)
    }
}

/// A framework's name as labels: split on dots, each mangled.
pub fn framework_labels(name: &str) -> String {
    name.split('.')
        .map(label)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

/// Mesos-DNS' unique part of a task's name: the first five characters of
/// zbase32(SHA-1(task id)).
pub fn task_hash(task_id: &str) -> String {
    let zbase32 = {
        let mut spec = data_encoding::Specification::new();
        spec.symbols.push_str("ybndrfg8ejkmcpqxot1uwisza345h769");
        spec.encoding()
    };
    match zbase32 {
        Ok(e) => e
            .encode(&sha1::Sha1::digest(task_id.as_bytes()))
            .chars()
            .take(5)
            .collect(),
        // The alphabet is a constant: it cannot fail.
        Err(_) => String::new(),
    }
}

/// The IPv4 address in a URL or host (`localhost` is loopback). Names
/// are not resolved here: agents and masters that advertise a host name
/// get no record.
pub fn ipv4_of(url_or_host: &str) -> Option<Ipv4Addr> {
    let host = match reqwest::Url::parse(url_or_host) {
        Ok(u) if u.has_host() => u.host_str()?.to_string(),
        _ => url_or_host.to_string(),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return Some(Ipv4Addr::LOCALHOST);
    }
    match host.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

fn port_of(url: &str) -> Option<u16> {
    reqwest::Url::parse(url).ok()?.port_or_known_default()
}

/// The zone the state and `src` make, in one read (what
/// [`build_in_parts`] must equal).
#[cfg(test)]
pub fn build(state: &ClusterState, src: &Sources<'_>) -> Zone {
    let agent_ip = agent_ips(state);
    let mut z = base(state, src, &agent_ip);
    for t in state.tasks.values() {
        add_task(&mut z, state, &agent_ip, t);
    }
    z.finish();
    z
}

/// The zone without its tasks' records: masters, agents, frameworks.
fn base(
    state: &ClusterState,
    src: &Sources<'_>,
    agent_ip: &BTreeMap<wasmos_core::AgentId, Ipv4Addr>,
) -> Zone {
    let d = format!("{}.", framework_labels(src.domain));
    let mut z = Zone {
        domain: d.clone(),
        records: BTreeMap::new(),
        serial: src.serial,
    };
    if let Some(ip) = src.this_master {
        z.add(format!("ns1.{d}"), Rec::A(ip));
    }
    let mut masters = src.masters.clone();
    masters.sort();
    for (i, (id, url)) in masters.iter().enumerate() {
        let Some(ip) = ipv4_of(url) else { continue };
        z.add(format!("master.{d}"), Rec::A(ip));
        z.add(format!("master{i}.{d}"), Rec::A(ip));
        if src.leader == Some(*id) {
            z.add(format!("leader.{d}"), Rec::A(ip));
            if let Some(port) = port_of(url) {
                for proto in ["tcp", "udp"] {
                    z.add(
                        format!("_leader._{proto}.{d}"),
                        Rec::Srv {
                            port,
                            target: format!("leader.{d}"),
                        },
                    );
                }
            }
        }
    }
    let leader_url = masters
        .iter()
        .find(|(id, _)| src.leader == Some(*id))
        .map(|(_, u)| u.clone());
    for (id, &ip) in agent_ip {
        let Some(a) = state.agents.get(id) else {
            continue;
        };
        z.add(format!("slave.{d}"), Rec::A(ip));
        if let Some(port) = port_of(&a.info.endpoint) {
            z.add(
                format!("_slave._tcp.{d}"),
                Rec::Srv {
                    port,
                    target: format!("slave.{d}"),
                },
            );
        }
    }
    for f in state.frameworks.values() {
        if f.removed_at.is_some() {
            continue;
        }
        let fw = framework_labels(&f.info.name);
        if fw.is_empty() {
            continue;
        }
        // A plugin framework runs in the leader; another one where it says.
        let (host, port) = match f.info.kind {
            wasmos_core::FrameworkKind::Plugin { .. } => (
                leader_url.as_deref().and_then(ipv4_of),
                leader_url.as_deref().and_then(port_of),
            ),
            _ => (f.info.hostname.as_deref().and_then(ipv4_of), None),
        };
        if let Some(ip) = host {
            z.add(format!("{fw}.{d}"), Rec::A(ip));
            if let Some(port) = port {
                z.add(
                    format!("_framework._tcp.{fw}.{d}"),
                    Rec::Srv {
                        port,
                        target: format!("{fw}.{d}"),
                    },
                );
            }
        }
    }
    z
}

/// A task's records (a running one's, healthy if it is checked).
fn add_task(
    z: &mut Zone,
    state: &ClusterState,
    agent_ip: &BTreeMap<wasmos_core::AgentId, Ipv4Addr>,
    t: &wasmos_state::TaskRecord,
) {
    if t.state() != TaskState::Running
        || (t.spec.health_check.is_some() && t.status().healthy != Some(true))
    {
        return;
    }
    let Some(ip) = agent_ip.get(&t.agent_id).copied() else {
        return;
    };
    let Some(f) = state.frameworks.get(&t.framework_id) else {
        return;
    };
    let d = z.domain.clone();
    let fw = framework_labels(&f.info.name);
    let name = task_label(&t.spec.name);
    if fw.is_empty() || name.is_empty() {
        return;
    }
    let agent_tail = label(
        t.agent_id
            .as_str()
            .rsplit('-')
            .next()
            .unwrap_or(t.agent_id.as_str()),
    );
    let canonical = label(&format!(
        "{name}-{}-{agent_tail}",
        task_hash(t.spec.task_id.as_str())
    ));
    for n in [
        format!("{name}.{fw}.{d}"),
        format!("{name}.{fw}.slave.{d}"),
        format!("{canonical}.{fw}.{d}"),
        format!("{canonical}.{fw}.slave.{d}"),
    ] {
        z.add(n, Rec::A(ip));
    }
    let target = format!("{canonical}.{fw}.slave.{d}");
    for range in t.spec.resources.ports.ranges() {
        for port in range.begin..=range.end {
            for proto in ["tcp", "udp"] {
                for n in [
                    format!("_{name}._{proto}.{fw}.{d}"),
                    format!("_{name}._{proto}.{fw}.slave.{d}"),
                ] {
                    z.add(
                        n,
                        Rec::Srv {
                            port,
                            target: target.clone(),
                        },
                    );
                }
            }
        }
    }
}

// ---- the server ------------------------------------------------------------------

/// The addresses of the active agents (of their endpoint, else their
/// hostname).
pub fn agent_ips(state: &ClusterState) -> BTreeMap<wasmos_core::AgentId, Ipv4Addr> {
    state
        .agents
        .iter()
        .filter(|(_, a)| a.state == wasmos_core::AgentState::Active)
        .filter_map(|(id, a)| {
            let ip = ipv4_of(&a.info.endpoint).or_else(|| ipv4_of(&a.info.hostname))?;
            Some((id.clone(), ip))
        })
        .collect()
}

/// The zone being served, swapped whole on each rebuild.
#[derive(Debug, Default)]
pub struct Served {
    zone: RwLock<Arc<Zone>>,
}

impl Served {
    pub fn get(&self) -> Arc<Zone> {
        self.zone.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, z: Zone) {
        *self.zone.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(z);
    }
}

/// Tasks read under one hold of the state's lock during a rebuild.
const TASKS_PER_READ: usize = 1000;

/// Rebuilds the zone from `node`'s state now. The tasks are read a
/// thousand at a time, letting go of the state's lock in between: at
/// 50,000 tasks one read of them all held it for 50-400 ms, and
/// everything else on the master — commits, the API, raft's own answers
/// — waited (elections followed). Records of tasks that change between
/// two parts are made again by the next rebuild.
pub fn rebuild(node: &Node, serial: u32) {
    let leader = node.leadership().leader.map(|(id, _)| id);
    let masters: Vec<(u64, String)> = node
        .store
        .members()
        .into_iter()
        .map(|m| (m.id, m.addr))
        .collect();
    let src = Sources {
        domain: &node.config.dns_domain,
        masters,
        leader,
        this_master: ipv4_of(&node.url),
        serial,
    };
    let (zone, table) = build_in_parts(|f| node.store.read(|s| f(s)), &src, TASKS_PER_READ);
    node.dns.set(zone);
    node.lb.set(table);
}

/// The zone and the balancer's table, the state read through `read` once
/// for the rest and then `per_read` tasks at a time.
fn build_in_parts(
    mut read: impl FnMut(&mut dyn FnMut(&ClusterState) -> bool) -> bool,
    src: &Sources<'_>,
    per_read: usize,
) -> (Zone, wasmos_core::protocol::ProxyTable) {
    debug_assert!(per_read > 0, "a read must take at least one task");
    let per_read = per_read.max(1);
    let mut parts: Option<(Zone, BTreeMap<wasmos_core::AgentId, Ipv4Addr>)> = None;
    read(&mut |s| {
        let agent_ip = agent_ips(s);
        parts = Some((base(s, src, &agent_ip), agent_ip));
        true
    });
    let Some((mut zone, agent_ip)) = parts else {
        return Default::default();
    };
    let mut lb = crate::l4lb::Builder::default();
    let mut after: Option<wasmos_core::TaskId> = None;
    while !read(&mut |s| {
        let rest = match &after {
            Some(id) => s.tasks.range::<wasmos_core::TaskId, _>((
                std::ops::Bound::Excluded(id),
                std::ops::Bound::Unbounded,
            )),
            None => s.tasks.range::<wasmos_core::TaskId, _>(..),
        };
        for (n, (id, t)) in rest.enumerate() {
            if n == per_read {
                return false;
            }
            add_task(&mut zone, s, &agent_ip, t);
            lb.add(s, &agent_ip, t);
            after = Some(id.clone());
        }
        true
    }) {}
    zone.finish();
    let (table, vips) = lb.finish();
    // Named VIPs: `<name>.<framework>.l4lb.<domain>`.
    for (name, ip) in vips {
        let n = format!("{name}.l4lb.{}", zone.domain);
        zone.add(n, Rec::A(ip));
    }
    (zone, table)
}

/// Keeps the zone current: rebuilt after applied changes (at most every
/// [`REBUILD_EVERY`], or four times as long as the last rebuild took),
/// after a change of leader, and every few seconds (membership).
pub async fn follow(node: Arc<Node>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut applied = node.store.subscribe();
    let mut leadership = node.store.leadership();
    let mut serial: u32 = 1;
    let started = std::time::Instant::now();
    let n = node.clone();
    let _ = tokio::task::spawn_blocking(move || rebuild(&n, serial)).await;
    let mut took = started.elapsed();
    loop {
        let (stopping, burst) = tokio::select! {
            r = stop.changed() => (r.is_err() || *stop.borrow(), false),
            got = applied.recv() => (got.is_none(), true),
            r = leadership.changed() => (r.is_err(), false),
            _ = tokio::time::sleep(Duration::from_secs(5)) => (false, false),
        };
        if stopping {
            return;
        }
        if burst {
            // Let a burst of changes land, then build once. A rebuild reads
            // every task: with many, wait longer, so that keeping DNS and
            // the balancer current costs at most a fifth of a core (at
            // 100,000 tasks a rebuild every 200 ms took a third of one).
            tokio::time::sleep(REBUILD_EVERY.max(took * 4)).await;
            while applied.try_recv().is_ok() {}
        }
        serial = serial.wrapping_add(1);
        let started = std::time::Instant::now();
        // Off the async threads: at tens of thousands of tasks a rebuild
        // takes tens of milliseconds, which on a worker thread delays raft's
        // heartbeats and the API behind it.
        let n = node.clone();
        if tokio::task::spawn_blocking(move || rebuild(&n, serial))
            .await
            .is_err()
        {
            tracing::error!("the DNS zone rebuild panicked; the last zone is still served");
        }
        took = started.elapsed();
    }
}

/// Answers queries from the served zone.
pub struct Handler {
    served: Arc<Node>,
    /// Rotates answers of several records, query by query.
    turn: AtomicUsize,
}

impl Handler {
    pub fn new(node: Arc<Node>) -> Handler {
        Handler {
            served: node,
            turn: AtomicUsize::new(0),
        }
    }
}

fn name(s: &str) -> Option<Name> {
    Name::from_ascii(s).ok()
}

fn soa(z: &Zone) -> Option<Record> {
    let origin = name(&z.domain)?;
    Some(Record::from_rdata(
        origin,
        TTL,
        RData::SOA(SOA::new(
            name(&format!("ns1.{}", z.domain))?,
            name(&format!("root.ns1.{}", z.domain))?,
            z.serial,
            60,
            60,
            86400,
            TTL,
        )),
    ))
}

/// The records answering `qtype` for `qname`, and whether the name exists.
fn answer(z: &Zone, qname: &str, qtype: RecordType, turn: usize) -> (Vec<Record>, bool) {
    let mut out = Vec::new();
    let mut exists = false;
    let Some(owner) = name(qname) else {
        return (out, false);
    };
    if qname == z.domain {
        exists = true;
        match qtype {
            RecordType::SOA | RecordType::ANY => out.extend(soa(z)),
            RecordType::NS => {
                if let Some(ns) = name(&format!("ns1.{}", z.domain)) {
                    out.push(Record::from_rdata(owner.clone(), TTL, RData::NS(NS(ns))));
                }
            }
            _ => {}
        }
    }
    if let Some(recs) = z.records.get(qname) {
        exists = true;
        let n = recs.len().max(1);
        for i in 0..recs.len() {
            let rdata = match &recs[(i + turn) % n] {
                Rec::A(ip) if matches!(qtype, RecordType::A | RecordType::ANY) => RData::A(A(*ip)),
                Rec::Srv { port, target } if matches!(qtype, RecordType::SRV | RecordType::ANY) => {
                    let Some(t) = name(target) else { continue };
                    RData::SRV(SRV::new(0, 1, *port, t))
                }
                _ => continue,
            };
            out.push(Record::from_rdata(owner.clone(), TTL, rdata));
        }
    } else if z.records.keys().any(|k| k.ends_with(&format!(".{qname}"))) {
        // An empty non-terminal (`marathon.mesos.` above its tasks).
        exists = true;
    }
    (out, exists)
}

/// The SRV answers' targets' addresses, for the additional section.
fn additionals(z: &Zone, answers: &[Record]) -> Vec<Record> {
    let mut out = Vec::new();
    for r in answers {
        if let RData::SRV(srv) = &r.data {
            let target = srv.target.to_ascii().to_lowercase();
            for ip in z.addresses(&target) {
                out.push(Record::from_rdata(srv.target.clone(), TTL, RData::A(A(ip))));
            }
        }
    }
    out.dedup();
    out
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            let r = builder.error_msg(&request.metadata, ResponseCode::NotImp);
            return send(&mut response, r, request).await;
        }
        let Ok(info) = request.request_info() else {
            let r = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return send(&mut response, r, request).await;
        };
        let z = self.served.dns.get();
        let qname: &LowerName = info.query.name();
        let qname = qname.to_string().to_lowercase();
        let qname = if qname.ends_with('.') {
            qname
        } else {
            format!("{qname}.")
        };
        if info.query.query_class() != DNSClass::IN
            || !(qname == z.domain || qname.ends_with(&format!(".{}", z.domain)))
        {
            let r = builder.error_msg(&request.metadata, ResponseCode::Refused);
            return send(&mut response, r, request).await;
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let (answers, exists) = answer(&z, &qname, info.query.query_type(), turn);
        let extra = additionals(&z, &answers);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let mut authority = Vec::new();
        if answers.is_empty() {
            metadata.response_code = if exists {
                ResponseCode::NoError
            } else {
                ResponseCode::NXDomain
            };
            authority.extend(soa(&z));
        }
        let none: Vec<Record> = Vec::new();
        let r = builder.build(
            metadata,
            answers.iter(),
            none.iter(),
            authority.iter(),
            extra.iter(),
        );
        send(&mut response, r, request).await
    }
}

/// Sends an answer, with EDNS when the query had it (else a UDP answer
/// is cut at 512 bytes).
async fn send<'a, R: ResponseHandler>(
    rh: &mut R,
    mut resp: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Request,
) -> ResponseInfo {
    let edns;
    if let Some(asked) = request.edns.as_ref() {
        let mut e = Edns::new();
        e.set_max_payload(asked.max_payload().max(512));
        e.set_version(0);
        edns = e;
        resp.set_edns(&edns);
    }
    match rh.send_response(resp).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "cannot send a DNS answer");
            let mut h = hickory_proto::op::Header {
                metadata: Metadata::response_from_request(&request.metadata),
                counts: Default::default(),
            };
            h.metadata.response_code = ResponseCode::ServFail;
            h.into()
        }
    }
}

/// Binds UDP and TCP on the same address (the same free port when `addr`
/// asks for port 0).
pub async fn bind(
    addr: SocketAddr,
) -> anyhow::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let mut last = None;
    for _ in 0..20 {
        let udp = tokio::net::UdpSocket::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("cannot serve DNS on {addr} (UDP): {e}; choose another --dns-listen")
        })?;
        let at = udp.local_addr()?;
        match tokio::net::TcpListener::bind(at).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => {
                anyhow::bail!("cannot serve DNS on {addr} (TCP): {e}; choose another --dns-listen")
            }
        }
    }
    anyhow::bail!(
        "cannot find a port free for both UDP and TCP on {}: {}",
        addr.ip(),
        last.map(|e| e.to_string()).unwrap_or_default()
    )
}

/// Serves DNS on `udp` and `tcp` until `stop`.
pub fn serve(
    node: Arc<Node>,
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut server = hickory_server::Server::new(Handler::new(node));
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 65_535);
    tokio::spawn(async move {
        let _ = stop.wait_for(|v| *v).await;
        if let Err(e) = server.shutdown_gracefully().await {
            tracing::debug!(error = %e, "DNS server stopped");
        }
    });
}

// ---- Mesos-DNS' HTTP API ------------------------------------------------------------

pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/v1/version", get(version))
        .route("/v1/config", get(config))
        .route("/v1/hosts/{host}", get(hosts))
        .route("/v1/services/{service}", get(services))
}

fn fqdn(s: &str) -> String {
    let s = s.to_lowercase();
    if s.ends_with('.') { s } else { format!("{s}.") }
}

async fn version() -> ApiJson<Value> {
    ApiJson(json!({
        "Service": "Mesos-DNS",
        "URL": "https://github.com/mesosphere/mesos-dns",
        "Version": format!("wasmos-{}", wasmos_core::VERSION),
    }))
}

async fn config(State(n): State<Arc<Node>>) -> ApiJson<Value> {
    let z = n.dns.get();
    ApiJson(json!({
        "Domain": z.domain.trim_end_matches('.'),
        "Listener": n.dns_addr.map(|a| a.ip().to_string()),
        "Port": n.dns_addr.map(|a| a.port()),
        "TTL": TTL,
        "RefreshSeconds": 0,
        "Masters": n.store.members().into_iter().map(|m| m.addr).collect::<Vec<_>>(),
        "SOAMname": format!("ns1.{}", z.domain),
        "SOARname": format!("root.ns1.{}", z.domain),
        "ExternalOn": false,
        "IPSources": ["host"],
        "EnforceRFC952": false,
        "DNSOn": n.dns_addr.is_some(),
        "HTTPOn": true,
    }))
}

async fn hosts(State(n): State<Arc<Node>>, Path(host): Path<String>) -> ApiJson<Value> {
    let z = n.dns.get();
    let host = fqdn(&host);
    let found: Vec<Value> = z
        .addresses(&host)
        .iter()
        .map(|ip| json!({"host": host, "ip": ip.to_string()}))
        .collect();
    ApiJson(if found.is_empty() {
        json!([{"host": "", "ip": ""}])
    } else {
        json!(found)
    })
}

async fn services(State(n): State<Arc<Node>>, Path(service): Path<String>) -> ApiJson<Value> {
    let z = n.dns.get();
    let service = fqdn(&service);
    let mut found = Vec::new();
    for r in z.records.get(&service).into_iter().flatten() {
        if let Rec::Srv { port, target } = r {
            for ip in z.addresses(target) {
                found.push(json!({"service": service, "host": target, "ip": ip.to_string(), "port": port.to_string()}));
            }
        }
    }
    ApiJson(if found.is_empty() {
        json!([{"service": "", "host": "", "ip": "", "port": ""}])
    } else {
        json!(found)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_mangled_as_mesos_dns_mangles_them() {
        assert_eq!(label("My_App.v2"), "my-app-v2");
        assert_eq!(label("-web!-"), "web");
        assert_eq!(label(&"x".repeat(70)).len(), 63);
        assert_eq!(task_label("prod/web"), "web-prod");
        assert_eq!(task_label("/team/db/primary"), "primary-db-team");
        assert_eq!(task_label("exec-task"), "exec-task");
        assert_eq!(framework_labels("my.Frame_work"), "my.frame-work");
    }

    #[test]
    fn the_task_hash_is_zbase32_of_the_sha1_of_the_id() {
        // SHA-1("a") = 86f7e437..., whose first 25 bits in zbase32.
        let h = task_hash("a");
        assert_eq!(h.len(), 5);
        assert!(
            h.chars()
                .all(|c| "ybndrfg8ejkmcpqxot1uwisza345h769".contains(c))
        );
        assert_eq!(h, task_hash("a"));
        assert_ne!(h, task_hash("b"));
        // 0x86 0xf7 0xe4 = 10000 11011 11011 11100 100.. → o, 5, 5, h/…
        assert!(h.starts_with("o55"), "{h}");
    }

    /// Two agents and `n` running tasks of one framework, each with a
    /// host port, a named VIP and a service port.
    fn cluster(n: usize) -> ClusterState {
        use wasmos_core::{AgentId, FrameworkId, TaskState};
        use wasmos_state::{Command, Response};
        let mut s = ClusterState::default();
        let fw = FrameworkId::new("fw-1").expect("an id");
        s.apply(Command::RegisterFramework {
            framework_id: fw.clone(),
            info: wasmos_core::FrameworkInfo::plugin("marathon", "*"),
            now: 1.0,
        });
        let agents: Vec<AgentId> = (0..2)
            .map(|i| {
                let id = AgentId::new(format!("c-S{i}")).expect("an id");
                let resp = s.apply(Command::RegisterAgent {
                    agent_id: Some(id.clone()),
                    info: wasmos_core::agent::AgentInfo {
                        hostname: format!("h{i}"),
                        endpoint: format!("https://10.0.0.{}:5051", i + 1),
                        resources: wasmos_core::Resources::default(),
                        reserved: Default::default(),
                        attributes: Default::default(),
                        boot_id: String::new(),
                        version: String::new(),
                    },
                    principal: None,
                    now: 1.0,
                });
                assert!(matches!(resp, Response::AgentRegistered { .. }), "{resp:?}");
                id
            })
            .collect();
        for i in 0..n {
            let port = 31000 + i as u16;
            let mut resources = wasmos_core::Resources::default();
            resources.ports =
                wasmos_core::resources::PortSet::from_ranges([wasmos_core::resources::PortRange {
                    begin: port,
                    end: port,
                }])
                .expect("ports");
            let id = wasmos_core::TaskId::new(format!("web{}.instance-{i}", i % 3)).expect("an id");
            let mut spec = wasmos_core::TaskSpec::shell(id.clone(), "true", resources);
            spec.name = format!("web{}", i % 3);
            spec.discovery = vec![wasmos_core::task::DiscoveryPort {
                number: port,
                name: None,
                protocol: "tcp".into(),
                labels: [("VIP_0".to_string(), format!("/web{}:80", i % 3))].into(),
                service_port: Some(10000 + (i % 3) as u16),
            }];
            let agent = agents[i % 2].clone();
            s.apply(Command::LaunchTasks {
                framework_id: fw.clone(),
                agent_id: agent.clone(),
                staging_uuids: vec![uuid::Uuid::new_v4()],
                tasks: vec![spec],
                now: 2.0,
            });
            s.apply(Command::StatusUpdate {
                status: crate::leader::master_status(
                    &id,
                    Some(&agent),
                    TaskState::Running,
                    wasmos_core::task::Reason::ReasonReconciliation,
                    String::new(),
                    3.0,
                ),
            });
        }
        s
    }

    #[test]
    fn a_zone_read_in_parts_is_the_zone_read_at_once() {
        let s = cluster(10);
        let src = Sources {
            domain: "mesos",
            masters: vec![(1, "https://10.0.0.9:5050".into())],
            leader: Some(1),
            this_master: Some(Ipv4Addr::new(10, 0, 0, 9)),
            serial: 7,
        };
        let whole = build(&s, &src);
        assert!(
            whole.records.contains_key("web2.marathon.mesos."),
            "the tasks have records: {:?}",
            whole.records.keys().collect::<Vec<_>>()
        );
        let (table, vips) = crate::l4lb::build(&s, &agent_ips(&s));
        assert!(!vips.is_empty() && !table.services.is_empty());
        for per_read in [1, 3, 10, 1000] {
            let mut reads = 0;
            let (mut parted, parted_table) = build_in_parts(
                |f| {
                    reads += 1;
                    f(&s)
                },
                &src,
                per_read,
            );
            // The named VIPs' records are added to the zone by the rebuild.
            for (name, _) in &vips {
                parted.records.remove(&format!("{name}.l4lb.mesos."));
            }
            assert_eq!(parted, whole, "{per_read} tasks per read");
            assert_eq!(parted_table, table, "{per_read} tasks per read");
            // One read for the rest, then the tasks in parts.
            assert_eq!(
                reads,
                1 + 10usize.div_ceil(per_read),
                "{per_read} tasks per read"
            );
        }
    }

    #[test]
    fn addresses_come_from_urls_and_hosts() {
        assert_eq!(
            ipv4_of("https://10.0.0.7:5050"),
            Some(Ipv4Addr::new(10, 0, 0, 7))
        );
        assert_eq!(ipv4_of("localhost"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(ipv4_of("192.168.1.2"), Some(Ipv4Addr::new(192, 168, 1, 2)));
        assert_eq!(ipv4_of("https://example.com"), None);
    }
}
