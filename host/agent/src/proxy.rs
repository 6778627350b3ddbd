//! The agent's layer-4 load balancer (DC/OS' minuteman, Marathon's
//! service ports): it long-polls the master for the table of virtual IPs
//! and service ports (`/internal/v1/proxy?after=<version>`), listens on
//! each (a named VIP's 127.77.x.y address, bound on the loopback; service
//! ports on `--service-port-listen`), and spreads connections round-robin
//! over the backends, moving on to the next one when a backend refuses or
//! does not answer within [`CONNECT_TIMEOUT`]. A new table swaps a
//! listener's backends in place: established connections are never cut,
//! listeners no longer in the table stop accepting.

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
        loop {
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

/// Connects the client to the first backend that answers, starting at the
/// `first`-th (round-robin), and copies both ways until either side ends.
async fn forward(mut client: TcpStream, backends: Arc<Vec<SocketAddr>>, first: usize) {
    let n = backends.len();
    for i in 0..n {
        let b = backends[(first + i) % n];
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(b)).await {
            Ok(Ok(mut up)) => {
                let _ = client.set_nodelay(true);
                let _ = up.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(backend = %b, error = %e, "load balancer: backend refused; trying the next")
            }
            Err(_) => {
                tracing::debug!(backend = %b, "load balancer: backend did not answer; trying the next")
            }
        }
    }
    // No backend: the client's connection closes.
}
