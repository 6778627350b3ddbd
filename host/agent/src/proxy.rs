//! The agent's layer-4 load balancer (DC/OS' minuteman, Marathon's
//! service ports): it long-polls the master for the table of virtual IPs
//! and service ports (`/internal/v1/proxy?after=<version>`), listens on
//! each (a named VIP's 127.77.x.y address, bound on the loopback; service
//! ports on `--service-port-listen`), and spreads connections round-robin
//! over the backends, moving on to the next one when a backend refuses or
//! does not answer within [`CONNECT_TIMEOUT`]. A new table swaps a
//! listener's backends in place: established connections are never cut,
//! listeners no longer in the table stop accepting.
//!
//! On an edge agent (`--edge-listen`) it is also marathon-lb's HTTP edge:
//! a request's `Host` picks the virtual host of the agent's groups
//! (`--edge-group`, `external` by default) whose tasks serve it; the
//! request goes to one of them with `X-Forwarded-For` added, and the
//! connection stays with that task. An unknown host gets a 503.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use wasmos_core::protocol::{self, ProxyTable};

use crate::Agent;

/// How long a backend gets to accept a connection before the next one is
/// tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

type Backends = Arc<RwLock<Arc<Vec<SocketAddr>>>>;

/// The edge's virtual hosts: host name → backends.
type Routes = Arc<RwLock<Arc<HashMap<String, Vec<SocketAddr>>>>>;

/// The longest request head the edge reads to find `Host`.
const MAX_HEAD: usize = 16 * 1024;

struct Listening {
    name: String,
    backends: Backends,
    accept: tokio::task::JoinHandle<()>,
}

impl Agent {
    /// Follows the master's table until the agent stops.
    pub(crate) async fn proxy_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        let mut version: Option<u64> = None;
        let mut listening: HashMap<SocketAddr, Listening> = HashMap::new();
        let routes: Routes = Arc::default();
        let mut edge: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            if let (None, Some(addr)) = (&edge, self.config.edge_listen) {
                match bind(addr) {
                    Ok(l) => {
                        tracing::info!(%addr, groups = ?self.config.edge_groups, "HTTP edge: listening");
                        edge = Some(tokio::spawn(serve_edge(l, routes.clone())));
                    }
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "HTTP edge: cannot listen; trying again")
                    }
                }
            }
            let path = match version {
                Some(v) => format!("{}?after={v}", protocol::paths::PROXY),
                None => protocol::paths::PROXY.to_string(),
            };
            let got = tokio::select! {
                r = self.masters.send(reqwest::Method::GET, &path, None) => r,
                _ = shutdown.changed() => break,
            };
            let table = match got {
                Ok(resp) if resp.status().is_success() => resp.json::<ProxyTable>().await.ok(),
                _ => None,
            };
            match table {
                Some(t) => {
                    if version != Some(t.version) {
                        self.apply_table(&t, &mut listening).await;
                        let mut mine: HashMap<String, Vec<SocketAddr>> = HashMap::new();
                        for r in t
                            .http
                            .iter()
                            .filter(|r| self.config.edge_groups.contains(&r.group))
                        {
                            let b = mine.entry(r.vhost.clone()).or_default();
                            b.extend(
                                r.backends
                                    .iter()
                                    .filter(|x| !b.contains(x))
                                    .copied()
                                    .collect::<Vec<_>>(),
                            );
                        }
                        *routes.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(mine);
                        version = Some(t.version);
                    }
                }
                None => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => break,
                    }
                }
            }
        }
        for (_, l) in listening {
            l.accept.abort();
        }
        if let Some(e) = edge {
            e.abort();
        }
    }

    async fn apply_table(&self, t: &ProxyTable, listening: &mut HashMap<SocketAddr, Listening>) {
        let mut wanted: HashMap<SocketAddr, (&str, Vec<SocketAddr>)> = HashMap::new();
        for s in &t.services {
            let ip =
                s.ip.map(IpAddr::V4)
                    .unwrap_or(self.config.service_port_listen);
            wanted.insert(SocketAddr::new(ip, s.port), (&s.name, s.backends.clone()));
        }
        listening.retain(|addr, l| {
            let keep = wanted.contains_key(addr);
            if !keep {
                tracing::info!(service = %l.name, %addr, "load balancer: no longer listening");
                l.accept.abort();
            }
            keep
        });
        for (addr, (name, backends)) in wanted {
            if let Some(l) = listening.get(&addr) {
                *l.backends.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(backends);
                continue;
            }
            match bind(addr) {
                Ok(listener) => {
                    tracing::info!(service = name, %addr, backends = backends.len(), "load balancer: listening");
                    let shared: Backends = Arc::new(RwLock::new(Arc::new(backends)));
                    let accept = tokio::spawn(serve(listener, shared.clone()));
                    listening.insert(
                        addr,
                        Listening {
                            name: name.to_string(),
                            backends: shared,
                            accept,
                        },
                    );
                }
                // Tried again with the next table.
                Err(e) => {
                    tracing::warn!(service = name, %addr, error = %e, "load balancer: cannot listen; is the address in use by something else?")
                }
            }
        }
    }
}

/// A listener that other agents on this machine may share (the kernel
/// spreads connections over them; they serve the same table).
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.set_reuseport(true)?;
    s.bind(addr)?;
    s.listen(1024)
}

async fn serve(listener: TcpListener, backends: Backends) {
    let turn = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let list = backends.read().unwrap_or_else(|p| p.into_inner()).clone();
        let first = turn.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(forward(client, list, first));
    }
}

/// A connection to the first backend that accepts one, starting at the
/// `first`-th (round-robin); a backend that refuses or does not answer
/// within [`CONNECT_TIMEOUT`] is passed over.
async fn connect_any(backends: &[SocketAddr], first: usize) -> Option<TcpStream> {
    let n = backends.len();
    for i in 0..n {
        let b = backends[(first + i) % n];
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(b)).await {
            Ok(Ok(up)) => {
                let _ = up.set_nodelay(true);
                return Some(up);
            }
            Ok(Err(e)) => {
                tracing::debug!(backend = %b, error = %e, "load balancer: backend refused; trying the next")
            }
            Err(_) => {
                tracing::debug!(backend = %b, "load balancer: backend did not answer; trying the next")
            }
        }
    }
    None
}

/// Connects the client to a backend ([`connect_any`]) and copies both ways
/// until either side ends; with no backend the client's connection closes.
async fn forward(mut client: TcpStream, backends: Arc<Vec<SocketAddr>>, first: usize) {
    if let Some(mut up) = connect_any(&backends, first).await {
        let _ = client.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
    }
}

async fn serve_edge(listener: TcpListener, routes: Routes) {
    let turn = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((client, peer)) = listener.accept().await else {
            continue;
        };
        let routes = routes.read().unwrap_or_else(|p| p.into_inner()).clone();
        let first = turn.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(edge_request(client, peer, routes, first));
    }
}

/// The `Host` of a request head, lower case and without a port.
fn host_of(head: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(head).ok()?;
    text.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("host").then(|| {
            let v = value.trim();
            // `[v6]:port`, `name:port`, or a bare name.
            let v = match v.rfind(':') {
                Some(i) if !v[i..].contains(']') => &v[..i],
                _ => v,
            };
            v.to_ascii_lowercase()
        })
    })
}

/// The head with `X-Forwarded-For` added after the request line.
fn forwarded(head: &[u8], peer: SocketAddr) -> Vec<u8> {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(head.len(), |i| i + 2);
    let mut out = Vec::with_capacity(head.len() + 40);
    out.extend_from_slice(&head[..line_end]);
    out.extend_from_slice(format!("X-Forwarded-For: {}\r\n", peer.ip()).as_bytes());
    out.extend_from_slice(&head[line_end..]);
    out
}

async fn edge_request(
    mut client: TcpStream,
    peer: SocketAddr,
    routes: Arc<HashMap<String, Vec<SocketAddr>>>,
    first: usize,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > MAX_HEAD {
            let _ = client
                .write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
            return;
        }
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    };
    let host = host_of(&head[..end]).unwrap_or_default();
    let Some(backends) = routes.get(&host).filter(|b| !b.is_empty()) else {
        let body = format!("no service for host {host:?} on this edge\n");
        let _ = client
            .write_all(
                format!(
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
        return;
    };
    if let Some(mut up) = connect_any(backends, first).await {
        let mut sent = forwarded(&head[..end], peer);
        sent.extend_from_slice(&head[end..]);
        if up.write_all(&sent).await.is_ok() {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            return;
        }
    }
    let _ = client
        .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edge_reads_the_host_and_adds_x_forwarded_for() {
        let head = b"GET / HTTP/1.1\r\nhost: Web.Example.com:8080\r\nAccept: */*\r\n\r\n";
        assert_eq!(host_of(head).as_deref(), Some("web.example.com"));
        assert_eq!(host_of(b"GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(
            host_of(b"GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n").as_deref(),
            Some("[::1]")
        );
        let peer: SocketAddr = "10.0.0.9:5555".parse().unwrap();
        let out = forwarded(head, peer);
        assert!(out.starts_with(b"GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.9\r\nhost:"));
    }
}
