//! Hosts of their own on this machine: a "switch" network namespace
//! holding a bridge and, per host, a network namespace joined to it by a
//! veth pair, with an address of its own; the run's clients work from one
//! more namespace on the same bridge. Nothing is made in the machine's own
//! network namespace: a new interface there makes browsers of other tests
//! drop their requests (Chromium's ERR_NETWORK_CHANGED).
//!
//! Faults are real network faults made with iptables inside the hosts'
//! namespaces: dropped packets (partitions of any shape, random loss) and
//! duplicated ones (the TEE target). The kernel here has no netem qdisc,
//! so delay is not among them.
//!
//! Processes run in a host with `nsenter --net`, which keeps the machine's
//! mounts (cgroups included); `ip netns exec` would remount /sys.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
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
    /// The switch's namespace (with the bridge) and the clients'.
    switch: String,
    client: String,
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
    /// Makes a bridge on 10.<a>.<b>.0/24, the clients' namespace at .1 and
    /// one namespace per name at .11, .12, ... `tag` (0..=65535) keeps nets
    /// of concurrent runs apart.
    pub fn create(tag: u16, names: &[&str]) -> Result<Net> {
        if !Path::new("/proc/sys/net/ipv4").exists() || !nix::unistd::geteuid().is_root() {
            bail!("hosts of their own need root (network namespaces and iptables)");
        }
        let [a, b] = tag.to_be_bytes();
        let net = format!("10.{}.{b}", 200 + a % 50);
        let switch = format!("wsf{tag}-switch");
        let client = format!("wsf{tag}-clients");
        let mut n = Net {
            switch: switch.clone(),
            client: client.clone(),
            hosts: Vec::new(),
        };
        let fresh = |ns: &str| -> Result<()> {
            // Leftovers of a run that was killed.
            let _ = run("ip", &["netns", "del", ns]);
            run("ip", &["netns", "add", ns])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])
        };
        fresh(&switch)?;
        run(
            "ip",
            &[
                "-n", &switch, "link", "add", "name", "bridge0", "type", "bridge",
            ],
        )?;
        run("ip", &["-n", &switch, "link", "set", "bridge0", "up"])?;
        let plug = |i: usize, ns: &str, ip: &str| -> Result<()> {
            let port = format!("p{i}");
            run(
                "ip",
                &[
                    "-n", &switch, "link", "add", "name", &port, "type", "veth", "peer", "name",
                    "eth0", "netns", ns,
                ],
            )?;
            run(
                "ip",
                &[
                    "-n", &switch, "link", "set", &port, "master", "bridge0", "up",
                ],
            )?;
            run(
                "ip",
                &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            )?;
            run("ip", &["-n", ns, "link", "set", "eth0", "up"])
        };
        fresh(&client)?;
        plug(0, &client, &format!("{net}.1"))?;
        for (i, name) in names.iter().enumerate() {
            let ns = format!("wsf{tag}-{name}");
            let ip: Ipv4Addr = format!("{net}.{}", 11 + i).parse()?;
            fresh(&ns)?;
            n.hosts.push(Host {
                name: name.to_string(),
                ns: ns.clone(),
                ip,
            });
            plug(i + 1, &ns, &ip.to_string())?;
            n.iptables(&ns, &["-N", CHAIN])?;
            n.iptables(&ns, &["-I", "INPUT", "-j", CHAIN])?;
            n.iptables(&ns, &["-t", "mangle", "-N", CHAIN])?;
            n.iptables(&ns, &["-t", "mangle", "-I", "POSTROUTING", "-j", CHAIN])?;
        }
        Ok(n)
    }

    /// Moves the calling thread into the clients' namespace: sockets it
    /// (and threads it starts afterwards) opens are on the bridge.
    pub fn enter_clients(&self) -> Result<()> {
        let f = std::fs::File::open(format!("/run/netns/{}", self.client))?;
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .context("enter the clients' network namespace")?;
        Ok(())
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
        // A namespace's interfaces go with it.
        for ns in self
            .hosts
            .iter()
            .map(|h| h.ns.as_str())
            .chain([self.client.as_str(), self.switch.as_str()])
        {
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
}
