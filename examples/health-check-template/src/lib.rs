//! A template health check. Copy this directory to start your own.
//!
//! Healthy when `GET <path>` on the task's port answers 2xx and its body
//! contains `expect` (check parameters `path`, `expect`, `port-index`).
//! The plugin cannot open sockets: it asks the host through `probe`, and
//! the host lets it reach only the task's own ports.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p wasmos-example-health-check`.

use wasmos_sdk::health::{CheckResult, CheckTarget, HealthCheck, probe};

struct BodyCheck;

impl HealthCheck for BodyCheck {
    fn init(_config: wasmos_sdk::Config) -> Result<Self, String> {
        Ok(BodyCheck)
    }

    fn check(&mut self, target: CheckTarget) -> CheckResult {
        let port = match target.port() {
            Ok(p) => p,
            Err(e) => return CheckResult::unhealthy(e),
        };
        let path = target.param("path").unwrap_or("/");
        let expect = target.param("expect").unwrap_or("");
        match probe::http_get(port, path, target.timeout_ms) {
            Ok(r) if !(200..300).contains(&r.status) => {
                CheckResult::unhealthy(format!("HTTP {}", r.status))
            }
            Ok(r) if String::from_utf8_lossy(&r.body).contains(expect) => {
                CheckResult::healthy("body as expected")
            }
            Ok(_) => CheckResult::unhealthy(format!("body does not contain {expect:?}")),
            Err(e) => CheckResult::unhealthy(e),
        }
    }
}

wasmos_sdk::export_health_check!(BodyCheck);
