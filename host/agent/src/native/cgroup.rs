//! A task's cgroup, through cgroups-rs: the same calls on a cgroup v1
//! hierarchy (one directory per controller) and on cgroup v2 (one unified
//! directory).

use std::path::Path;

use cgroups_rs::CgroupPid;
use cgroups_rs::fs::cgroup_builder::CgroupBuilder;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::{Cgroup, MaxValue, hierarchies};
use serde::{Deserialize, Serialize};

/// The limits a task's cgroup enforces.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// CPU shares (v1; converted to a weight on v2): 1024 per cpu.
    pub cpu_shares: Option<u64>,
    /// CFS quota per 100 ms period, in µs: 100,000 per cpu.
    pub cpu_quota_us: Option<i64>,
    /// Hard memory limit in bytes (no swap beyond it).
    pub memory_bytes: Option<i64>,
    pub pids_max: Option<i64>,
}

pub const CPU_PERIOD_US: u64 = 100_000;

/// The cgroup parent every task cgroup lives under.
pub const PARENT: &str = "wasmos";

fn controllers(v2: bool) -> Vec<String> {
    let names: &[&str] = if v2 {
        &["cpu", "memory", "pids"]
    } else {
        &["cpu", "cpuacct", "memory", "pids", "freezer"]
    };
    names.iter().map(|s| s.to_string()).collect()
}

/// cgroup v2's cpu.weight for v1 shares (the runc conversion).
fn weight(shares: u64) -> u64 {
    if shares <= 2 {
        1
    } else if shares >= 262_144 {
        10_000
    } else {
        1 + ((shares - 2) * 9_999) / 262_142
    }
}

/// Whether this host has the controllers a task cgroup needs, writable.
pub fn available() -> Result<(), String> {
    // cgroups-rs panics when no hierarchy is mounted: look first.
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    if !has_cgroup_mount(&info) {
        return Err("no cgroup filesystem is mounted where the agent runs (under `ip netns exec`, which remounts /sys, /sys/fs/cgroup is empty): start it with `nsenter --net=/run/netns/NAME`, which keeps the host's mounts, or use --containerizer process".into());
    }
    let h = hierarchies::auto();
    let root = h.root();
    if h.v2() {
        let have = std::fs::read_to_string(root.join("cgroup.controllers"))
            .map_err(|e| format!("cannot read {}: {e}", root.display()))?;
        for c in ["cpu", "memory", "pids"] {
            if !have.split_whitespace().any(|h| h == c) {
                return Err(format!("the cgroup v2 controller {c} is not enabled"));
            }
        }
    } else {
        for c in ["cpu", "memory", "pids"] {
            if !root.join(c).is_dir() {
                return Err(format!("the cgroup v1 controller {c} is not mounted"));
            }
        }
    }
    Ok(())
}

/// Whether a mountinfo table lists a cgroup (v1) or cgroup2 filesystem.
fn has_cgroup_mount(mountinfo: &str) -> bool {
    mountinfo.lines().any(|l| {
        l.split_once(" - ")
            .and_then(|(_, fs)| fs.split_whitespace().next())
            .is_some_and(|t| t == "cgroup" || t == "cgroup2")
    })
}

/// A task's cgroup.
pub struct TaskCgroup {
    cg: Cgroup,
}

impl TaskCgroup {
    fn path(name: &str) -> String {
        format!("{PARENT}/{name}")
    }

    /// Creates `wasmos/<name>` with `limits`, checking that the memory
    /// limit took (cgroups-rs does not report a refused memory write).
    pub fn create(name: &str, limits: &Limits) -> Result<TaskCgroup, String> {
        let hier = hierarchies::auto();
        let v2 = hier.v2();
        let mut b =
            CgroupBuilder::new(&Self::path(name)).set_specified_controllers(controllers(v2));
        {
            let mut cpu = b.cpu();
            if let Some(s) = limits.cpu_shares {
                cpu = cpu.shares(if v2 { weight(s) } else { s });
            }
            if let Some(q) = limits.cpu_quota_us {
                cpu = cpu.period(CPU_PERIOD_US).quota(q);
            }
            b = cpu.done();
        }
        if let Some(m) = limits.memory_bytes {
            // v1: memory+swap equal to memory (no swap); v2: swap.max 0.
            b = b
                .memory()
                .memory_hard_limit(m)
                .memory_swap_limit(if v2 { 0 } else { m })
                .done();
        }
        if let Some(p) = limits.pids_max {
            b = b
                .pid()
                .maximum_number_of_processes(MaxValue::Value(p))
                .done();
        }
        let cg = b
            .build(hier)
            .map_err(|e| format!("cannot create cgroup {}: {e}", Self::path(name)))?;
        let me = TaskCgroup { cg };
        if let Some(m) = limits.memory_bytes {
            let mem: Option<&MemController> = me.cg.controller_of();
            let set = mem.map(|c| c.memory_stat().limit_in_bytes);
            {
                // Some kernels round to pages: accept a limit within one page.
                if set.is_none_or(|s| (s - m).abs() >= 4096) {
                    let _ = me.cg.delete();
                    return Err(format!(
                        "cgroup {} did not take the memory limit {m} (has {set:?})",
                        Self::path(name)
                    ));
                }
            }
        }
        Ok(me)
    }

    /// Raises the limits of a running container to `limits` (an executor
    /// given another task): the memory limit only grows, cpu follows.
    pub fn grow(&self, limits: &Limits) -> Result<(), String> {
        let v2 = hierarchies::auto().v2();
        if let Some(m) = limits.memory_bytes {
            let mem: Option<&MemController> = self.cg.controller_of();
            if let Some(c) = mem {
                let now = c.memory_stat().limit_in_bytes;
                if now < m {
                    // v1 wants memory+swap at least memory: raise it first.
                    if !v2 {
                        c.set_memswap_limit(m).map_err(|e| e.to_string())?;
                    }
                    c.set_limit(m).map_err(|e| e.to_string())?;
                }
            }
        }
        let cpu: Option<&cgroups_rs::fs::cpu::CpuController> = self.cg.controller_of();
        if let Some(c) = cpu {
            if let Some(s) = limits.cpu_shares {
                c.set_shares(if v2 { weight(s) } else { s })
                    .map_err(|e| e.to_string())?;
            }
            if let Some(q) = limits.cpu_quota_us {
                c.set_cfs_quota(q).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// The cgroup of an earlier launch (after a restart).
    pub fn load(name: &str) -> TaskCgroup {
        let hier = hierarchies::auto();
        let v2 = hier.v2();
        TaskCgroup {
            cg: Cgroup::load_with_specified_controllers(hier, Self::path(name), controllers(v2)),
        }
    }

    /// On cgroup v1, the `tasks` file of every controller's directory: a
    /// process joins by writing "0" there itself. Empty on v2.
    pub fn self_join_files(&self) -> Vec<std::path::PathBuf> {
        if self.cg.v2() {
            return Vec::new();
        }
        self.cg
            .subsystems()
            .iter()
            .map(|s| s.to_controller().path().join("tasks"))
            .collect()
    }

    pub fn add(&self, pid: u32) -> Result<(), String> {
        self.cg
            .add_task_by_tgid(CgroupPid::from(pid as u64))
            .map_err(|e| format!("cannot move process {pid} into its cgroup: {e}"))
    }

    /// How many processes the kernel's OOM killer ended in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let Some(mem) = self.cg.controller_of::<MemController>() else {
            return 0;
        };
        if self.cg.v2() {
            let events = cgroups_rs::fs::Controller::path(mem).join("memory.events");
            std::fs::File::open(events)
                .ok()
                .and_then(|f| cgroups_rs::fs::flat_keyed_to_hashmap(f).ok())
                .and_then(|m| m.get("oom_kill").copied())
                .unwrap_or(0)
                .max(0) as u64
        } else {
            mem.memory_stat().oom_control.oom_kill
        }
    }

    /// Peak memory use in bytes, if the kernel reports it.
    pub fn peak_memory(&self) -> Option<u64> {
        let mem = self.cg.controller_of::<MemController>()?;
        let peak = mem.memory_stat().max_usage_in_bytes;
        (peak > 0).then_some(peak)
    }

    pub fn procs(&self) -> Vec<u32> {
        self.cg.procs().into_iter().map(|p| p.pid as u32).collect()
    }

    /// SIGKILLs everything left in the cgroup and removes it.
    pub fn destroy(&self) -> Result<(), String> {
        for _ in 0..100 {
            let left = self.procs();
            if left.is_empty() {
                break;
            }
            for p in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        self.cg
            .delete()
            .map_err(|e| format!("cannot remove cgroup: {e}"))
    }
}

/// Whether a cgroup directory for `name` exists.
pub fn exists(name: &str) -> bool {
    let h = hierarchies::auto();
    let root = h.root();
    let p = Path::new(PARENT).join(name);
    if h.v2() {
        root.join(p).is_dir()
    } else {
        root.join("memory").join(p).is_dir()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_convert_to_weights_like_runc() {
        assert_eq!(weight(2), 1);
        assert_eq!(weight(1024), 39);
        assert_eq!(weight(262_144), 10_000);
    }

    #[test]
    fn cgroup_mounts_are_found_by_filesystem_type() {
        let hybrid = "35 24 0:30 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      36 35 0:31 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert!(has_cgroup_mount(hybrid));
        let v1 = "40 35 0:35 / /sys/fs/cgroup/cpu rw shared:9 - cgroup cgroup rw,cpu\n";
        assert!(has_cgroup_mount(v1));
        // `ip netns exec`: a fresh sysfs, nothing under it.
        let netns = "22 1 0:20 / /sys rw - sysfs none rw\n23 1 0:5 / /dev rw - devtmpfs udev rw\n";
        assert!(!has_cgroup_mount(netns));
        // A path named cgroup is not a cgroup filesystem.
        assert!(!has_cgroup_mount(
            "50 1 0:40 / /cgroup rw - tmpfs cgroup rw\n"
        ));
    }
}
