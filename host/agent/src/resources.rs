//! What this machine brings to the pool: cpus, memory, disk and ports,
//! discovered the way Mesos does, minus a reserve for the system.

use std::path::Path;

use wasmos_core::reservation::{RoleResources, parse_agent_resources};
use wasmos_core::{PortSet, ResourceError, Resources, Scalar};

/// The port range offered when none is configured (Mesos' default).
pub const DEFAULT_PORTS: &str = "[31000-32000]";

/// Discovers this machine's resources, keeping some for the system:
/// memory above 2 GiB keeps 1 GiB back, below it half; disk keeps
/// min(5 GiB, half) back.
pub fn discover(work_dir: &Path) -> Resources {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0);
    let mem_mb = meminfo_total_mb().unwrap_or(1024.0);
    let mem = if mem_mb >= 2048.0 {
        mem_mb - 1024.0
    } else {
        mem_mb / 2.0
    };
    let disk_mb = disk_total_mb(work_dir).unwrap_or(0.0);
    let disk = disk_mb - (5.0 * 1024.0f64).min(disk_mb / 2.0);
    Resources {
        cpus: Scalar::from_f64("cpus", cpus).unwrap_or_default(),
        mem: Scalar::from_f64("mem", mem.floor()).unwrap_or_default(),
        disk: Scalar::from_f64("disk", disk.floor().max(0.0)).unwrap_or_default(),
        gpus: 0,
        ports: DEFAULT_PORTS.parse().unwrap_or_default(),
    }
}

/// Applies `cpus:2;mem:1024;ports:[...]` over discovered resources: only
/// the names given change. A name may carry a role, as in Mesos:
/// `cpus:2;cpus(ops):2` is 4 cpus, 2 of them statically reserved for
/// `ops`. Returns the resources and their reserved part by role.
pub fn apply_overrides(
    mut r: Resources,
    overrides: &str,
) -> Result<(Resources, RoleResources), ResourceError> {
    let (given, reserved) = parse_agent_resources(overrides)?;
    let named = |n: &str| {
        overrides.split(';').any(|p| {
            let name = p.split(':').next().unwrap_or("");
            name.split('(').next().unwrap_or("").trim() == n
        })
    };
    if named("cpus") {
        r.cpus = given.cpus;
    }
    if named("mem") {
        r.mem = given.mem;
    }
    if named("disk") {
        r.disk = given.disk;
    }
    if named("gpus") {
        r.gpus = given.gpus;
    }
    if named("ports") {
        r.ports = given.ports;
    }
    Ok((r, reserved))
}

fn meminfo_total_mb() -> Option<f64> {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

fn parse_meminfo(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn disk_total_mb(dir: &Path) -> Option<f64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(st.blocks() as f64 * st.fragment_size() as f64 / (1024.0 * 1024.0))
}

/// The Linux boot id (changes on every reboot).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// This machine's host name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The ports a task was given, in order.
pub fn task_ports(ports: &PortSet) -> Vec<u16> {
    ports.ports().collect()
}

/// The ports of `range` that something in this network namespace is bound
/// to: TCP listeners and UDP sockets (bound or connected, both hold their
/// local port), over IPv4 and IPv6, from `/proc/net`. An unreadable table
/// counts as empty (logged once). Reads files: call it off the async
/// threads.
pub fn bound_ports(range: &PortSet) -> PortSet {
    if range.is_empty() {
        return PortSet::default();
    }
    let mut ports = std::collections::BTreeSet::new();
    for (table, state) in [
        ("tcp", Some("0A")),
        ("tcp6", Some("0A")),
        ("udp", None),
        ("udp6", None),
    ] {
        match std::fs::read_to_string(format!("/proc/net/{table}")) {
            Ok(text) => {
                ports.extend(sockets_in_state(&text, state).filter(|p| range.contains_port(*p)))
            }
            Err(e) => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(table, error = %e, "cannot read /proc/net: ports other processes hold may be offered to tasks");
                });
            }
        }
    }
    port_set(ports)
}

/// The local ports of a `/proc/net/{tcp,udp}[6]` table's sockets in
/// `state` (hex: `0A` is TCP LISTEN), or in any state.
fn sockets_in_state<'a>(table: &'a str, state: Option<&'a str>) -> impl Iterator<Item = u16> + 'a {
    table.lines().skip(1).filter_map(move |line| {
        let mut cols = line.split_whitespace();
        let local = cols.nth(1)?;
        let st = cols.nth(1)?;
        if state.is_some_and(|s| s != st) {
            return None;
        }
        u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
    })
}

/// Sorted, distinct ports as a set of ranges.
fn port_set(ports: std::collections::BTreeSet<u16>) -> PortSet {
    let mut ranges: Vec<wasmos_core::resources::PortRange> = Vec::new();
    for p in ports {
        match ranges.last_mut() {
            Some(r) if u32::from(r.end) + 1 == u32::from(p) => r.end = p,
            _ => ranges.push(wasmos_core::resources::PortRange { begin: p, end: p }),
        }
    }
    PortSet::from_ranges(ranges).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_ports_are_read_from_listening_and_bound_sockets() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:7918 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:7919 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
";
        // 31000 listens, 31001 is only a connection's local end, 8080
        // listens outside the range.
        assert_eq!(
            sockets_in_state(tcp, Some("0A")).collect::<Vec<_>>(),
            vec![31000, 8080]
        );
        let six =
            "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:791A 00000000000000000000000000000000:0000 0A
";
        assert_eq!(
            sockets_in_state(six, Some("0A")).collect::<Vec<_>>(),
            vec![31002]
        );
        // UDP: a bound socket (07) and a connected one (01) both hold theirs.
        let udp = "   sl  local_address rem_address   st
  10: 00000000:7918 00000000:0000 07
  11: 0100007F:7919 0100007F:0035 01
";
        assert_eq!(
            sockets_in_state(udp, None).collect::<Vec<_>>(),
            vec![31000, 31001]
        );
        let set = port_set([31000, 31002, 31003, 31004].into_iter().collect());
        assert_eq!(set.to_string(), "[31000-31000, 31002-31004]");
        // This process's own listener shows up.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        let range: PortSet = format!("[{p}-{p}]").parse().unwrap();
        assert!(bound_ports(&range).contains_port(p));
        drop(l);
    }

    #[test]
    fn meminfo_total_is_read_in_megabytes() {
        let text = "MemTotal:       24576000 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_meminfo(text), Some(24000.0));
        assert_eq!(parse_meminfo("garbage"), None);
    }

    #[test]
    fn overrides_change_only_what_they_name() {
        let base: Resources = "cpus:8;mem:16000;disk:100;ports:[31000-32000]"
            .parse()
            .unwrap();
        let (r, reserved) = apply_overrides(base.clone(), "cpus:2; ports:[5000-5001]").unwrap();
        assert_eq!(r.to_string(), "cpus:2;mem:16000;disk:100;ports:[5000-5001]");
        assert!(reserved.is_empty());
        // Static reservations add to what is named.
        let (r, reserved) = apply_overrides(base, "cpus:2;cpus(ops):1;mem(ops):500").unwrap();
        assert_eq!(r.to_string(), "cpus:3;mem:500;disk:100;ports:[31000-32000]");
        assert_eq!(reserved["ops"].to_string(), "cpus:1;mem:500;disk:0");
        assert!(apply_overrides(Resources::default(), "cpus:-1").is_err());
        assert!(apply_overrides(Resources::default(), "bogus:1").is_err());
    }

    #[test]
    fn discovery_finds_something_on_this_machine() {
        let r = discover(Path::new("/"));
        assert!(r.cpus.as_f64() >= 1.0);
        assert!(r.mem.as_f64() > 0.0);
        assert_eq!(r.ports.to_string(), "[31000-32000]");
    }
}
