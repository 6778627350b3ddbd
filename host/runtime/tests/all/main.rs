//! Integration tests of the runtime: each plugin world driven with real
//! components.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod framework;
mod worlds;
