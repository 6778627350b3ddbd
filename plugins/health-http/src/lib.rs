//! `health-http`: a task is healthy when an HTTP GET to one of its ports
//! answers with an accepted status (Marathon's HTTP health check).
//!
//! Check parameters: `path` (default `/`), `port-index` (default 0) or
//! `port`, `statuses` (default from the plugin config, `200-399`), e.g.
//! `200,204` or `200-299`, and `scheme` (`http`, or `https`: TLS, the
//! task's certificate not verified).

use wasmos_sdk::health::{CheckResult, CheckTarget, HealthCheck, probe};

struct HealthHttp {
    default_statuses: String,
}

/// Whether `status` is in a list like `200-299,304`.
fn accepted(spec: &str, status: u16) -> Result<bool, String> {
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let lo: u16 = lo
            .trim()
            .parse()
            .map_err(|_| format!("statuses {spec:?}: {part:?} is not a status"))?;
        let hi: u16 = hi
            .trim()
            .parse()
            .map_err(|_| format!("statuses {spec:?}: {part:?} is not a status"))?;
        if (lo..=hi).contains(&status) {
            return Ok(true);
        }
    }
    Ok(false)
}

impl HealthCheck for HealthHttp {
    fn init(config: wasmos_sdk::Config) -> Result<Self, String> {
        let default_statuses = config
            .get("statuses")
            .cloned()
            .unwrap_or_else(|| "200-399".into());
        accepted(&default_statuses, 200)?;
        Ok(HealthHttp { default_statuses })
    }

    fn check(&mut self, target: CheckTarget) -> CheckResult {
        let port = match target.port() {
            Ok(p) => p,
            Err(e) => return CheckResult::unhealthy(e),
        };
        let path = target.param("path").unwrap_or("/").to_string();
        let statuses = target
            .param("statuses")
            .unwrap_or(&self.default_statuses)
            .to_string();
        let (answer, proto) = match target.param("scheme").unwrap_or("http") {
            "http" => (probe::http_get(port, &path, target.timeout_ms), "HTTP"),
            "https" => (probe::https_get(port, &path, target.timeout_ms), "HTTPS"),
            other => {
                return CheckResult::unhealthy(format!("scheme {other:?} must be http or https"));
            }
        };
        match answer {
            Ok(resp) => match accepted(&statuses, resp.status) {
                Ok(true) => {
                    CheckResult::healthy(format!("{proto} {} from :{port}{path}", resp.status))
                }
                Ok(false) => CheckResult::unhealthy(format!(
                    "{proto} {} from :{port}{path} (accepted: {statuses})",
                    resp.status
                )),
                Err(e) => CheckResult::unhealthy(e),
            },
            Err(e) => CheckResult::unhealthy(e),
        }
    }
}

wasmos_sdk::export_health_check!(HealthHttp);

#[cfg(test)]
mod tests {
    #[test]
    fn status_ranges() {
        assert!(super::accepted("200-399", 301).unwrap());
        assert!(!super::accepted("200-299", 301).unwrap());
        assert!(super::accepted("200, 204", 204).unwrap());
        assert!(super::accepted("abc", 200).is_err());
    }
}
