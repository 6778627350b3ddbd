//! An isolator that misbehaves for tasks labelled `misbehave=loop` or
//! `misbehave=trap`, and does nothing for the others.

use std::hint::black_box;

use wasmos_sdk::isolator::{Adjustments, ContainerSpec, Isolator};

struct MisbehaveIsolator;

impl Isolator for MisbehaveIsolator {
    fn init(_config: wasmos_sdk::Config) -> Result<Self, String> {
        Ok(MisbehaveIsolator)
    }

    fn prepare(&mut self, spec: ContainerSpec) -> Result<Adjustments, String> {
        match spec.label("misbehave") {
            Some("loop") => {
                let mut i = 0u64;
                loop {
                    i = black_box(i.wrapping_add(1));
                }
            }
            Some("trap") => panic!("this isolator traps on purpose"),
            _ => Ok(Adjustments::none()),
        }
    }
}

wasmos_sdk::export_isolator!(MisbehaveIsolator);
