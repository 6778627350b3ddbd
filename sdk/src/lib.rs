//! The Rust SDK for Wasmos plugins.
//!
//! Write a framework in three steps: implement [`framework::Framework`] on
//! a type, call [`export_framework!`] with it, and build the crate for
//! `wasm32-wasip2` as a `cdylib`:
//!
//! ```ignore
//! use wasmos_sdk::framework::{Framework, Offer, Request, Response, TaskStatus};
//!
//! struct Hello;
//!
//! impl Framework for Hello {
//!     fn init(_config: wasmos_sdk::Config) -> Result<Self, String> {
//!         Ok(Hello)
//!     }
//!     fn http(&mut self, _req: Request) -> Response {
//!         Response::text(200, "hello from a plugin\n")
//!     }
//! }
//!
//! wasmos_sdk::export_framework!(Hello);
//! ```
//!
//! The plugin's instance can be rebuilt at any time (after a trap, on a new
//! leader), and `init` always runs first on a new instance: keep what must
//! last in [`kv`], the framework's replicated key-value store, and rebuild
//! in-memory caches from it in `init`.

use std::collections::BTreeMap;

/// Configuration handed to `init`: the manifest's defaults with the
/// cluster's overrides.
pub type Config = BTreeMap<String, String>;

// The generated bindings name the runtime and bindings by this crate's
// path, so that plugin crates need no direct wit-bindgen dependency.
extern crate self as wasmos_sdk;

#[doc(hidden)]
pub use wit_bindgen::rt;

pub mod framework;
pub mod health;
pub mod http;
pub mod isolator;
pub mod kv;
pub mod log;
pub mod offers;
pub mod placement;

/// The `wasmos:plugin` package version this SDK builds against.
pub const WORLD_VERSION: &str = "0.5.0";
