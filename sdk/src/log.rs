//! Logging to the host's log, tagged with the plugin's name.

use crate::framework::bindings::wasmos::plugin::log::{Level, log};

pub fn debug(msg: &str) {
    log(Level::Debug, msg)
}

pub fn info(msg: &str) {
    log(Level::Info, msg)
}

pub fn warn(msg: &str) {
    log(Level::Warn, msg)
}

pub fn error(msg: &str) {
    log(Level::Error, msg)
}

/// Milliseconds since the Unix epoch, from the host's clock.
pub fn now_ms() -> u64 {
    crate::framework::bindings::wasmos::plugin::clock::now_ms()
}
