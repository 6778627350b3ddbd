//! GPUs: NVIDIA devices discovered with `nvidia-smi` (when the driver is
//! there), offered as `gpus`, and handed to tasks one by one through
//! `CUDA_VISIBLE_DEVICES` / `NVIDIA_VISIBLE_DEVICES`.

use std::collections::BTreeSet;
use std::sync::Mutex;

use wasmos_core::TaskId;

/// One GPU as `nvidia-smi` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    pub index: u32,
    pub name: String,
    pub memory_mb: u64,
    pub uuid: String,
}

/// The query the agent runs.
pub const NVIDIA_SMI_ARGS: &[&str] = &[
    "--query-gpu=index,name,memory.total,uuid",
    "--format=csv,noheader,nounits",
];

/// Parses `nvidia-smi --query-gpu=index,name,memory.total,uuid
/// --format=csv,noheader,nounits`; lines it cannot read are skipped.
pub fn parse_nvidia_smi(text: &str) -> Vec<Gpu> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let [index, name, memory, uuid] = f.as_slice() else {
                return None;
            };
            Some(Gpu {
                index: index.parse().ok()?,
                name: name.to_string(),
                memory_mb: memory.parse().ok()?,
                uuid: uuid.to_string(),
            })
        })
        .collect()
}

/// The GPUs of this machine (none without `nvidia-smi` or a driver).
pub fn discover() -> Vec<Gpu> {
    match std::process::Command::new("nvidia-smi")
        .args(NVIDIA_SMI_ARGS)
        .output()
    {
        Ok(out) if out.status.success() => parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout)),
        _ => Vec::new(),
    }
}

/// Free GPU indices, and what each task holds.
type Holdings = (BTreeSet<u32>, Vec<(TaskId, Vec<u32>)>);

/// Which task holds which GPU.
#[derive(Debug, Default)]
pub struct GpuPool {
    free: Mutex<Holdings>,
}

impl GpuPool {
    pub fn new(gpus: &[Gpu]) -> Self {
        GpuPool {
            free: Mutex::new((gpus.iter().map(|g| g.index).collect(), Vec::new())),
        }
    }

    /// Takes `n` free GPUs for `task`; an error when fewer are free.
    pub fn take(&self, task: &TaskId, n: u32) -> Result<Vec<u32>, String> {
        let mut g = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if (g.0.len() as u64) < u64::from(n) {
            return Err(format!(
                "task asks for {n} GPUs but {} are free on this agent",
                g.0.len()
            ));
        }
        let taken: Vec<u32> = g.0.iter().take(n as usize).copied().collect();
        for i in &taken {
            g.0.remove(i);
        }
        g.1.push((task.clone(), taken.clone()));
        Ok(taken)
    }

    /// Marks `idx` as held by `task` (a task found running at start);
    /// returns those that were not free.
    pub fn hold(&self, task: &TaskId, idx: &[u32]) -> Vec<u32> {
        let mut g = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let (held, lost): (Vec<u32>, Vec<u32>) = idx.iter().copied().partition(|i| g.0.remove(i));
        g.1.push((task.clone(), held));
        lost
    }

    /// Gives back what `task` held.
    pub fn release(&self, task: &TaskId) {
        let mut g = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let (mut held, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut g.1)
            .into_iter()
            .partition(|(t, _)| t == task);
        g.1 = rest;
        for (_, idx) in held.drain(..) {
            g.0.extend(idx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_smi_output_is_read_and_garbage_skipped() {
        let text = "0, NVIDIA A100-SXM4-40GB, 40960, GPU-5a3b2c1d-0000-1111-2222-333344445555\n\
                    1, Tesla T4, 15360, GPU-aaaa\n\
                    No devices were found\n\
                    x, bad, 1, u\n";
        let gpus = parse_nvidia_smi(text);
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].name, "NVIDIA A100-SXM4-40GB");
        assert_eq!(gpus[0].memory_mb, 40960);
        assert_eq!(gpus[1].index, 1);
        assert_eq!(gpus[1].uuid, "GPU-aaaa");
        assert!(parse_nvidia_smi("").is_empty());
    }

    #[test]
    fn gpus_are_handed_out_once_and_given_back() {
        let gpus = parse_nvidia_smi("0, A, 1, u0\n1, B, 1, u1\n");
        let pool = GpuPool::new(&gpus);
        let a = TaskId::new("a").unwrap();
        let b = TaskId::new("b").unwrap();
        assert_eq!(pool.take(&a, 1).unwrap(), vec![0]);
        assert!(pool.take(&b, 2).unwrap_err().contains("1 are free"));
        assert_eq!(pool.take(&b, 1).unwrap(), vec![1]);
        pool.release(&a);
        assert_eq!(pool.take(&b, 1).unwrap(), vec![0]);
    }

    #[test]
    fn gpus_of_a_recovered_task_are_not_handed_out_again() {
        let gpus = parse_nvidia_smi("0, A, 1, u0\n1, B, 1, u1\n");
        let pool = GpuPool::new(&gpus);
        let old = TaskId::new("old").unwrap();
        let new = TaskId::new("new").unwrap();
        assert_eq!(
            pool.hold(&old, &[0, 7]),
            vec![7],
            "7 is not on this machine"
        );
        assert_eq!(pool.take(&new, 1).unwrap(), vec![1]);
        assert!(pool.take(&new, 1).is_err(), "0 is still the old task's");
        pool.release(&old);
        assert_eq!(pool.take(&new, 1).unwrap(), vec![0]);
    }
}
