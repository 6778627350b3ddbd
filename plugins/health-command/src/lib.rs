//! `health-command`: a task is healthy when a shell command, run where the
//! task runs (its namespaces or container, its environment, its sandbox),
//! exits 0 — Mesos' and Marathon's COMMAND health check.
//!
//! Check parameters: `command`, e.g. `curl -fs http://localhost:$PORT0/`.

use wasmos_sdk::health::{CheckResult, CheckTarget, HealthCheck, probe};

struct HealthCommand;

/// The first line of a command's output, for the message.
fn first_line(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    line.chars().take(200).collect()
}

impl HealthCheck for HealthCommand {
    fn init(_config: wasmos_sdk::Config) -> Result<Self, String> {
        Ok(HealthCommand)
    }

    fn check(&mut self, target: CheckTarget) -> CheckResult {
        let Some(command) = target.param("command").filter(|c| !c.trim().is_empty()) else {
            return CheckResult::unhealthy("the check has no `command` parameter");
        };
        match probe::exec(command, target.timeout_ms) {
            Ok(r) if r.exit_code == 0 => CheckResult::healthy("command exited 0"),
            Ok(r) => {
                let out = first_line(&r.output);
                CheckResult::unhealthy(if out.is_empty() {
                    format!("command exited {}", r.exit_code)
                } else {
                    format!("command exited {}: {out}", r.exit_code)
                })
            }
            Err(e) => CheckResult::unhealthy(e),
        }
    }
}

wasmos_sdk::export_health_check!(HealthCommand);

#[cfg(test)]
mod tests {
    #[test]
    fn messages_quote_the_first_line_of_output() {
        assert_eq!(
            super::first_line(b"\n  \nnope: not found\nmore"),
            "nope: not found"
        );
        assert_eq!(super::first_line(b""), "");
    }
}
