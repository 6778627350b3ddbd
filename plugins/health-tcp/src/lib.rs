//! `health-tcp`: a task is healthy when a TCP connection to one of its
//! ports opens (Marathon's TCP health check).
//!
//! Check parameters: `port-index` (default 0) or `port`.

use wasmos_sdk::health::{CheckResult, CheckTarget, HealthCheck, probe};

struct HealthTcp;

impl HealthCheck for HealthTcp {
    fn init(_config: wasmos_sdk::Config) -> Result<Self, String> {
        Ok(HealthTcp)
    }

    fn check(&mut self, target: CheckTarget) -> CheckResult {
        let port = match target.port() {
            Ok(p) => p,
            Err(e) => return CheckResult::unhealthy(e),
        };
        match probe::tcp_connect(port, target.timeout_ms) {
            Ok(()) => CheckResult::healthy(format!("port {port} accepts connections")),
            Err(e) => CheckResult::unhealthy(e),
        }
    }
}

wasmos_sdk::export_health_check!(HealthTcp);
