//! `labels`: an isolator that turns task labels into environment variables
//! and resource limits, so a framework can shape a container without the
//! host knowing about it.
//!
//! With the default prefix `wasmos.`:
//! - `wasmos.env.NAME=value` sets `NAME` in the task's environment;
//! - `wasmos.rlimit.NAME=SOFT` or `SOFT:HARD` sets a resource limit
//!   (`nofile`, `nproc`, `core`, `stack`, `fsize`, `memlock`, `as`, `cpu`,
//!   `data`; `unlimited` is allowed).
//!
//! A malformed label stops the launch with a message that names it.

use wasmos_sdk::isolator::{Adjustments, ContainerSpec, Isolator, KeyValue, Rlimit};

const RLIMITS: &[&str] = &[
    "nofile", "nproc", "core", "stack", "fsize", "memlock", "as", "cpu", "data",
];

struct Labels {
    prefix: String,
}

fn limit(label: &str, v: &str) -> Result<u64, String> {
    match v.trim() {
        "unlimited" => Ok(u64::MAX),
        n => n
            .parse()
            .map_err(|_| format!("label {label}: {n:?} is not a number or `unlimited`")),
    }
}

impl Isolator for Labels {
    fn init(config: wasmos_sdk::Config) -> Result<Self, String> {
        Ok(Labels {
            prefix: config
                .get("prefix")
                .cloned()
                .unwrap_or_else(|| "wasmos.".into()),
        })
    }

    fn prepare(&mut self, spec: ContainerSpec) -> Result<Adjustments, String> {
        let mut out = Adjustments::none();
        for kv in &spec.labels {
            let Some(rest) = kv.key.strip_prefix(&self.prefix) else {
                continue;
            };
            if let Some(name) = rest.strip_prefix("env.") {
                if name.is_empty() || name.contains('=') {
                    return Err(format!(
                        "label {}: {name:?} is not an environment variable name",
                        kv.key
                    ));
                }
                out.environment.push(KeyValue {
                    key: name.to_string(),
                    value: kv.value.clone(),
                });
            } else if let Some(name) = rest.strip_prefix("rlimit.") {
                if !RLIMITS.contains(&name) {
                    return Err(format!(
                        "label {}: unknown limit {name:?} (known: {})",
                        kv.key,
                        RLIMITS.join(", ")
                    ));
                }
                let (soft, hard) = kv.value.split_once(':').unwrap_or((&kv.value, &kv.value));
                let (soft, hard) = (limit(&kv.key, soft)?, limit(&kv.key, hard)?);
                if soft > hard {
                    return Err(format!(
                        "label {}: soft limit {soft} is above the hard limit {hard}",
                        kv.key
                    ));
                }
                out.rlimits.push(Rlimit {
                    name: name.to_string(),
                    soft,
                    hard,
                });
            }
        }
        Ok(out)
    }
}

wasmos_sdk::export_isolator!(Labels);
