//! A template isolator. Copy this directory to start your own.
//!
//! Every task gets `RLIMIT_NOFILE` set to the configured `limit` and
//! `WASMOS_NOFILE` in its environment. An isolator only *computes*
//! adjustments; the agent validates and enforces them (it refuses what it
//! cannot enforce). Returning an error stops the launch with that message.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p wasmos-example-isolator`.

use wasmos_sdk::isolator::{Adjustments, ContainerSpec, Isolator, KeyValue, Rlimit};

struct NoFile {
    limit: u64,
}

impl Isolator for NoFile {
    fn init(config: wasmos_sdk::Config) -> Result<Self, String> {
        let limit = config
            .get("limit")
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("limit {v:?} is not a number"))
            })
            .transpose()?
            .unwrap_or(4096);
        Ok(NoFile { limit })
    }

    fn prepare(&mut self, _spec: ContainerSpec) -> Result<Adjustments, String> {
        let mut a = Adjustments::none();
        a.rlimits.push(Rlimit {
            name: "nofile".into(),
            soft: self.limit,
            hard: self.limit,
        });
        a.environment.push(KeyValue {
            key: "WASMOS_NOFILE".into(),
            value: self.limit.to_string(),
        });
        Ok(a)
    }
}

wasmos_sdk::export_isolator!(NoFile);
