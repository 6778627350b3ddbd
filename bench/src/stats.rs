//! Latency samples and result rows.

use std::time::Duration;

/// The median of `v` (the mean of the middle two for an even count; 0
/// for none).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Latency samples.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    samples: Vec<Duration>,
    sorted: bool,
}

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.samples.push(d);
        self.sorted = false;
    }

    pub fn extend(&mut self, other: Latencies) {
        self.samples.extend(other.samples);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.samples.sort_unstable();
            self.sorted = true;
        }
    }

    /// The `p`th percentile in milliseconds (nearest rank); 0 without samples.
    pub fn percentile(&mut self, p: f64) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        self.sort();
        let rank = ((p / 100.0) * self.samples.len() as f64).ceil() as usize;
        let i = rank.clamp(1, self.samples.len()) - 1;
        self.samples[i].as_secs_f64() * 1000.0
    }

    pub fn max(&mut self) -> f64 {
        self.percentile(100.0)
    }
}

/// One throughput measurement.
#[derive(Debug, Clone)]
pub struct Row {
    pub system: String,
    pub clients: usize,
    pub writes_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Acknowledged writes per raft log entry (batching), when known.
    pub per_entry: Option<f64>,
    /// CPU time the three members used per acknowledged write.
    pub member_cpu_us: f64,
    /// CPU time the benchmark's clients used per acknowledged write.
    pub generator_cpu_us: f64,
}

impl std::fmt::Display for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {:.0} | {:.0} |",
            self.system,
            self.clients,
            self.writes_per_sec,
            self.p50_ms,
            self.p99_ms,
            self.per_entry
                .map(|p| format!("{p:.1}"))
                .unwrap_or_else(|| "–".into()),
            self.member_cpu_us,
            self.generator_cpu_us
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut l = Latencies::default();
        for ms in 1..=100 {
            l.push(Duration::from_millis(ms));
        }
        assert_eq!(l.percentile(50.0), 50.0);
        assert_eq!(l.percentile(99.0), 99.0);
        assert_eq!(l.max(), 100.0);
        assert_eq!(Latencies::default().percentile(50.0), 0.0);
    }
}
