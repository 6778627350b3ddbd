//! The framework's replicated key-value store.
//!
//! Writes made during a call become durable together when the call returns
//! (and are discarded if it fails); reads see the call's own writes.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::framework::bindings::wasmos::plugin::state;

/// The raw value at `key`.
pub fn get(key: &str) -> Option<Vec<u8>> {
    state::get(key)
}

/// Stores raw bytes at `key` (keys up to 1 KiB, values up to 1 MiB).
pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
    state::set(key, value)
}

/// Removes `key`.
pub fn delete(key: &str) {
    state::delete(key)
}

/// Keys starting with `prefix`, in byte order.
pub fn keys(prefix: &str) -> Vec<String> {
    state::keys(prefix)
}

/// The value at `key` decoded from JSON; None when missing or not decodable.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Option<T> {
    get(key).and_then(|b| serde_json::from_slice(&b).ok())
}

/// Stores `value` as JSON at `key`.
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), String> {
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    set(key, &bytes)
}
