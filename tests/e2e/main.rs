//! End-to-end tests: each starts the real `wasmos` binary and drives it as
//! a user would, through the CLI and the HTTP API.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod api;
mod auth;
mod catalogue;
mod chronos;
mod dashboard;
mod dns;
mod docker;
mod faults;
mod isolation;
mod lb;
mod marathon;
mod masters;
mod mesos;
mod plugins;
mod reliability;
mod sdk;
mod security;
mod simulate;
mod tasks;
