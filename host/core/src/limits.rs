//! Limits shared by every layer that enforces them.

/// The longest key in a framework's key-value namespace.
pub const MAX_KV_KEY: usize = 1024;
/// The largest value in a framework's key-value namespace.
pub const MAX_KV_VALUE: usize = 1024 * 1024;
