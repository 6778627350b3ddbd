//! A component built against `wasmos:plugin@9.0.0`: the host must refuse
//! it at install, with a message naming both versions.

// The bindings wit-bindgen generates here export functions by name.
#![allow(unsafe_code)]

wit_bindgen::generate!({ world: "framework", path: "wit" });

struct Future;

impl Guest for Future {
    fn init() -> Result<(), String> {
        wasmos::plugin::log::log("from the future");
        Ok(())
    }
}

export!(Future);
