//! The table of the agents' layer-4 load balancer, built from the state a
//! master has applied (with the DNS zone, on every applied change):
//!
//! - a named virtual IP (a task port's `VIP_<n>` label `/name:port`, as
//!   DC/OS writes it) gets an address in [`VIP_NET`] (127.77.0.0/16, from a
//!   hash of its name: every agent binds it on its loopback, so a client
//!   on any agent reaches its own agent's balancer) and the DNS name
//!   `<name>.<framework>.l4lb.<domain>`; a `VIP_<n>` of `a.b.c.d:port` is
//!   listened on as given;
//! - a Marathon service port is listened on at each agent's service-port
//!   address (`--service-port-listen`, all interfaces by default);
//! - the backends are the tasks' host ports, of running tasks only, and of
//!   healthy ones when the task has a health check: a task being killed
//!   (TASK_KILLING), unhealthy or gone is out of the next table;
//! - the HTTP edge's routes follow marathon-lb's labels on the task (an
//!   app's labels): `HAPROXY_GROUP` (comma-separated groups; edge agents
//!   serve theirs, `external` by default) and `HAPROXY_<n>_VHOST`
//!   (comma-separated host names) for the task's n-th port.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};

use sha1::Digest;
use wasmos_core::TaskState;
use wasmos_core::protocol::{HttpRoute, ProxyService, ProxyTable};
use wasmos_state::State as ClusterState;

/// Where named VIPs get their addresses: 127.77.0.0/16.
pub const VIP_NET: [u8; 2] = [127, 77];

/// A named VIP's address: from a hash of its name, the next free one on a
/// collision (names in order, so every master picks alike).
fn vip_ip(name: &str, taken: &BTreeSet<Ipv4Addr>) -> Ipv4Addr {
    let h = sha1::Sha1::digest(name.as_bytes());
    let mut n = u16::from_be_bytes([h[0], h[1]]);
    loop {
        let [c, d] = n.to_be_bytes();
        let ip = Ipv4Addr::new(VIP_NET[0], VIP_NET[1], c, d);
        // Not the network's first or last address, nor one in use.
        if d != 0 && d != 255 && !taken.contains(&ip) {
            return ip;
        }
        n = n.wrapping_add(1);
    }
}

/// A VIP's name as a DNS label: its path without `/`, as DC/OS names
/// `/prod/web` `prodweb`.
pub fn vip_label(name: &str) -> String {
    crate::dns::label(&name.replace('/', ""))
}

/// The table, and the DNS names of the named VIPs (`<label>.<framework>`,
/// below `l4lb.<domain>`) with their addresses.
#[cfg(test)]
pub fn build(
    state: &ClusterState,
    agent_ip: &BTreeMap<wasmos_core::AgentId, Ipv4Addr>,
) -> (ProxyTable, Vec<(String, Ipv4Addr)>) {
    let mut b = Builder::default();
    for t in state.tasks.values() {
        b.add(state, agent_ip, t);
    }
    b.finish()
}

/// [`build`] task by task (so that a rebuild can read the state in
/// parts).
#[derive(Debug, Default)]
pub struct Builder {
    /// (name or address, port) → backends.
    vips: BTreeMap<(String, u16), BTreeSet<SocketAddr>>,
    /// Named VIPs' frameworks.
    framework_of: BTreeMap<String, String>,
    service_ports: BTreeMap<u16, BTreeSet<SocketAddr>>,
    routes: BTreeMap<(String, String), BTreeSet<SocketAddr>>,
}

impl Builder {
    /// What task `t` serves, if anything.
    pub fn add(
        &mut self,
        state: &ClusterState,
        agent_ip: &BTreeMap<wasmos_core::AgentId, Ipv4Addr>,
        t: &wasmos_state::TaskRecord,
    ) {
        let serving = t.state() == TaskState::Running
            && (t.spec.health_check.is_none() || t.status().healthy == Some(true));
        let ip = agent_ip.get(&t.agent_id).copied();
        if let Some(groups) = t.spec.labels.get("HAPROXY_GROUP") {
            let ports: Vec<u16> = t.spec.resources.ports.ports().collect();
            for (key, hosts) in &t.spec.labels {
                let Some(n) = key
                    .strip_prefix("HAPROXY_")
                    .and_then(|k| k.strip_suffix("_VHOST"))
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    continue;
                };
                // The n-th port as the task's discovery lists it, else
                // its n-th host port.
                let Some(port) = t
                    .spec
                    .discovery
                    .get(n)
                    .map(|d| d.number)
                    .or_else(|| ports.get(n).copied())
                else {
                    continue;
                };
                let backend = ip
                    .filter(|_| serving)
                    .map(|ip| SocketAddr::from((ip, port)));
                for g in groups.split(',').map(str::trim).filter(|g| !g.is_empty()) {
                    for h in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                        self.routes
                            .entry((g.to_string(), h.to_ascii_lowercase()))
                            .or_default()
                            .extend(backend);
                    }
                }
            }
        }
        let fw = state
            .frameworks
            .get(&t.framework_id)
            .map(|f| crate::dns::framework_labels(&f.info.name))
            .unwrap_or_default();
        for d in &t.spec.discovery {
            if d.protocol != "tcp" {
                continue;
            }
            let backend = ip
                .filter(|_| serving)
                .map(|ip| SocketAddr::from((ip, d.number)));
            for (name, port) in d.vips() {
                let set = self.vips.entry((name.clone(), port)).or_default();
                if name.parse::<Ipv4Addr>().is_err() {
                    self.framework_of.entry(name).or_insert_with(|| fw.clone());
                }
                set.extend(backend);
            }
            if let Some(sp) = d.service_port {
                self.service_ports.entry(sp).or_default().extend(backend);
            }
        }
    }

    /// The table, and the DNS names of the named VIPs.
    pub fn finish(self) -> (ProxyTable, Vec<(String, Ipv4Addr)>) {
        let Builder {
            vips,
            framework_of,
            service_ports,
            routes,
        } = self;
        let mut taken = BTreeSet::new();
        let mut named: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
        for name in framework_of.keys() {
            let ip = vip_ip(name, &taken);
            taken.insert(ip);
            named.insert(name.clone(), ip);
        }
        let mut services: Vec<ProxyService> = vips
            .into_iter()
            .map(|((name, port), backends)| ProxyService {
                ip: Some(name.parse().unwrap_or_else(|_| named[&name])),
                name: format!("vip {name}:{port}"),
                port,
                backends: backends.into_iter().collect(),
            })
            .chain(
                service_ports
                    .into_iter()
                    .map(|(port, backends)| ProxyService {
                        name: format!("service port {port}"),
                        ip: None,
                        port,
                        backends: backends.into_iter().collect(),
                    }),
            )
            .collect();
        services.sort();
        let http: Vec<HttpRoute> = routes
            .into_iter()
            .map(|((group, vhost), backends)| HttpRoute {
                group,
                vhost,
                backends: backends.into_iter().collect(),
            })
            .collect();
        let digest =
            sha1::Sha1::digest(serde_json::to_vec(&(&services, &http)).unwrap_or_default());
        let version = u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]));
        let dns = named
            .into_iter()
            .filter_map(|(name, ip)| {
                let label = vip_label(&name);
                let fw = framework_of.get(&name)?;
                (!label.is_empty() && !fw.is_empty()).then(|| (format!("{label}.{fw}"), ip))
            })
            .collect();
        (
            ProxyTable {
                version,
                services,
                http,
            },
            dns,
        )
    }
}

/// The table this master serves to agents, swapped whole on each rebuild;
/// agents waiting for a newer one are woken.
pub struct Served {
    table: tokio::sync::watch::Sender<std::sync::Arc<ProxyTable>>,
}

impl Default for Served {
    fn default() -> Self {
        Served {
            table: tokio::sync::watch::Sender::new(Default::default()),
        }
    }
}

impl Served {
    pub fn get(&self) -> std::sync::Arc<ProxyTable> {
        self.table.borrow().clone()
    }

    pub fn set(&self, t: ProxyTable) {
        self.table.send_if_modified(|cur| {
            if cur.version == t.version {
                false
            } else {
                *cur = std::sync::Arc::new(t);
                true
            }
        });
    }

    /// The table once its version differs from `after`, or the current
    /// one after `wait`.
    pub async fn newer_than(
        &self,
        after: u64,
        wait: std::time::Duration,
    ) -> std::sync::Arc<ProxyTable> {
        let mut rx = self.table.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|t| t.version != after)).await;
        self.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_addresses_are_stable_distinct_and_inside_the_vip_network() {
        let mut taken = BTreeSet::new();
        let a = vip_ip("/web", &taken);
        assert_eq!(a, vip_ip("/web", &taken), "the same name, the same address");
        assert_eq!(&a.octets()[..2], &VIP_NET);
        taken.insert(a);
        let b = vip_ip("/web", &taken);
        assert_ne!(a, b, "a collision moves to the next free address");
        assert_eq!(vip_label("/prod/web"), "prodweb");
    }
}
