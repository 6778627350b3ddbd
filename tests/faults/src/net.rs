//! Hosts of their own on this machine: a bridge in the root network
//! namespace and, per host, a network namespace joined to it by a veth
//! pair, with an address of its own. Faults are real network faults made
//! with iptables inside the hosts' namespaces: dropped packets (partitions
//! of any shape, random loss) and duplicated ones (the TEE target). The
//! kernel here has no netem qdisc, so delay is not among them.
//!
//! Processes run in a host with `nsenter --net`, which keeps the machine's
//! mounts (cgroups included); `ip netns exec` would remount /sys.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Our iptables chains in each host, hooked into INPUT and POSTROUTING.
const CHAIN: &str = "WASMOS-NEMESIS";

/// One host: a network namespace with an address on the bridge.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
}

/// A bridge and its hosts; torn down when dropped.
pub struct Net {
    bridge: String,
    gateway: Ipv4Addr,
    pub hosts: Vec<Host>,
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program} (install iproute2 and iptables)"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Net {
    /// Makes a bridge on 10.<a>.<b>.0/24 and one namespace per name, at
    /// .11, .12, ... `tag` (0..=65535) keeps nets of concurrent runs apart.
    pub fn create(tag: u16, names: &[&str]) -> Result<Net> {
        if !Path::new("/proc/sys/net/ipv4").exists() || !nix::unistd::geteuid().is_root() {
            bail!("hosts of their own need root (network namespaces and iptables)");
        }
        let [a, b] = tag.to_be_bytes();
        let net = format!("10.{}.{b}", 200 + a % 50);
        let bridge = format!("wsf{tag}");
        let mut n = Net {
            bridge: bridge.clone(),
            gateway: format!("{net}.1").parse()?,
            hosts: Vec::new(),
        };
        // Leftovers of a run that was killed.
        let _ = run("ip", &["link", "del", &bridge]);
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        run(
            "ip",
            &["addr", "add", &format!("{net}.1/24"), "dev", &bridge],
        )?;
        run("ip", &["link", "set", &bridge, "up"])?;
        // Bridged frames pass the root namespace's FORWARD chain (Docker
        // sets its policy to DROP).
        run(
            "iptables",
            &[
                "-w", "-I", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT",
            ],
        )?;
        for (i, name) in names.iter().enumerate() {
            let ns = format!("wsf{tag}-{name}");
            let veth = format!("wsf{tag}v{i}");
            let ip: Ipv4Addr = format!("{net}.{}", 11 + i).parse()?;
            let _ = run("ip", &["netns", "del", &ns]);
            run("ip", &["netns", "add", &ns])?;
            n.hosts.push(Host {
                name: name.to_string(),
                ns: ns.clone(),
                ip,
            });
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run("ip", &["link", "set", &veth, "master", &bridge, "up"])?;
            run(
                "ip",
                &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            )?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            run(
                "ip",
                &[
                    "-n",
                    &ns,
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("{net}.1"),
                ],
            )?;
            n.iptables(&ns, &["-N", CHAIN])?;
            n.iptables(&ns, &["-I", "INPUT", "-j", CHAIN])?;
            n.iptables(&ns, &["-t", "mangle", "-N", CHAIN])?;
            n.iptables(&ns, &["-t", "mangle", "-I", "POSTROUTING", "-j", CHAIN])?;
        }
        Ok(n)
    }

    fn iptables(&self, ns: &str, args: &[&str]) -> Result<()> {
        let mut a = vec!["netns", "exec", ns, "iptables", "-w"];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// The bridge's address: where this process's clients come from.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// A command that runs `program` inside host `name`'s network.
    pub fn command(&self, name: &str, program: &Path) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.host(name).ns))
            .arg("--")
            .arg(program);
        c
    }

    /// Drops every packet `from` sends to `to` (as `to` receives it).
    pub fn drop_link(&self, from: &str, to: &str) -> Result<()> {
        let src = self.host(from).ip.to_string();
        self.iptables(&self.host(to).ns, &["-A", CHAIN, "-s", &src, "-j", "DROP"])
    }

    /// Drops `percent` of the packets `name` receives.
    pub fn lose(&self, name: &str, percent: u32) -> Result<()> {
        let p = format!("{:.2}", f64::from(percent) / 100.0);
        self.iptables(
            &self.host(name).ns,
            &[
                "-A",
                CHAIN,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ],
        )
    }

    /// Sends `percent` of the packets `name` sends to each other host twice.
    pub fn duplicate(&self, name: &str, percent: u32) -> Result<()> {
        let p = format!("{:.2}", f64::from(percent) / 100.0);
        let h = self.host(name);
        for other in self.hosts.iter().filter(|o| o.name != name) {
            let ip = other.ip.to_string();
            self.iptables(
                &h.ns,
                &[
                    "-t",
                    "mangle",
                    "-A",
                    CHAIN,
                    "-d",
                    &ip,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "TEE",
                    "--gateway",
                    &ip,
                ],
            )?;
        }
        Ok(())
    }

    /// Removes every fault from every host.
    pub fn heal(&self) -> Result<()> {
        for h in &self.hosts {
            self.iptables(&h.ns, &["-F", CHAIN])?;
            self.iptables(&h.ns, &["-t", "mangle", "-F", CHAIN])?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = run("ip", &["netns", "del", &h.ns]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
        let _ = run(
            "iptables",
            &[
                "-w",
                "-D",
                "FORWARD",
                "-i",
                &self.bridge,
                "-o",
                &self.bridge,
                "-j",
                "ACCEPT",
            ],
        );
    }
}
