//! Host bindings for the four worlds, generated from `wit/`. The shared
//! interfaces (types, log, clock, placement-types) are generated once, with
//! the framework world, and reused by the others so their types are the
//! same Rust types.

pub mod framework {
    wasmtime::component::bindgen!({
        world: "framework",
        path: "../../wit",
    });
}

pub mod placement {
    wasmtime::component::bindgen!({
        world: "placement",
        path: "../../wit",
        with: {
            "wasmos:plugin/types": crate::bindings::framework::wasmos::plugin::types,
            "wasmos:plugin/log": crate::bindings::framework::wasmos::plugin::log,
            "wasmos:plugin/placement-types": crate::bindings::framework::wasmos::plugin::placement_types,
        },
    });
}

pub mod isolator {
    wasmtime::component::bindgen!({
        world: "isolator",
        path: "../../wit",
        with: {
            "wasmos:plugin/types": crate::bindings::framework::wasmos::plugin::types,
            "wasmos:plugin/log": crate::bindings::framework::wasmos::plugin::log,
        },
    });
}

pub mod health {
    wasmtime::component::bindgen!({
        world: "health-check",
        path: "../../wit",
        with: {
            "wasmos:plugin/types": crate::bindings::framework::wasmos::plugin::types,
            "wasmos:plugin/log": crate::bindings::framework::wasmos::plugin::log,
            "wasmos:plugin/clock": crate::bindings::framework::wasmos::plugin::clock,
        },
    });
}

pub use framework::wasmos::plugin::{clock, log, placement_types, types};
