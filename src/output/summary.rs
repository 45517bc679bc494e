//! The end-of-run summary: counts and latency percentiles in constant memory.

use std::time::Duration;

use crate::score::report::Report;
use crate::score::verdict::{Decision, RejectReason};

/// Latency percentiles from a fixed log-spaced histogram: constant memory on runs of any
/// length, each bucket 1/40 of a decade wide (about 6 % resolution), from 1 µs to 100 s.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    counts: [u64; Self::BUCKETS],
    total: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: [0; Self::BUCKETS],
            total: 0,
        }
    }
}

impl LatencyHistogram {
    const PER_DECADE: f64 = 40.0;
    const BUCKETS: usize = 8 * 40;

    /// Counts one latency.
    pub fn record(&mut self, d: Duration) {
        let us = (d.as_secs_f64() * 1e6).max(1.0);
        let b = ((us.log10() * Self::PER_DECADE) as usize).min(Self::BUCKETS - 1);
        self.counts[b] += 1;
        self.total += 1;
    }

    /// The q-quantile (0..=1) in milliseconds, as the geometric middle of its bucket.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let us = 10f64.powf((b as f64 + 0.5) / Self::PER_DECADE);
                return Some(us / 1e3);
            }
        }
        None
    }
}

/// Counts for the end-of-run summary.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Frames gated.
    pub frames: u64,
    /// Frames accepted.
    pub accepted: u64,
    /// Frames rejected, for any reason.
    pub rejected: u64,
    /// Rejected because they could not be read or scored.
    pub unscored: u64,
    /// Alarms raised.
    pub alarms: u64,
    /// Tamper events started.
    pub tamper_events: u64,
    /// Latencies of the scored frames.
    pub latency: LatencyHistogram,
}

impl Summary {
    /// Counts one frame's report.
    pub fn record(&mut self, r: &Report) {
        self.frames += 1;
        match r.verdict.decision() {
            Decision::Accept => self.accepted += 1,
            Decision::Reject => self.rejected += 1,
        }
        let tampered = r.verdict.reason().is_some_and(RejectReason::is_tamper);
        if r.measures.is_none() && !tampered {
            self.unscored += 1;
        } else {
            self.latency.record(r.latency);
        }
        self.alarms += r.alarm as u64;
        self.tamper_events += r.tamper_event.is_some() as u64;
    }

    /// The one line printed on stderr at the end of a run.
    pub fn to_text(&self) -> String {
        let ms = |q| {
            self.latency
                .quantile_ms(q)
                .map_or("-".to_string(), |v| format!("{v:.2} ms"))
        };
        // Said only when there were any: a run without tamper checks reads as before.
        let tamper = match self.tamper_events {
            0 => String::new(),
            n => format!(", {n} tamper events"),
        };
        format!(
            "mcgate: {} frames, {} accepted, {} rejected ({} could not be scored), {} alarms{tamper}; latency p50 {} p99 {}",
            self.frames,
            self.accepted,
            self.rejected,
            self.unscored,
            self.alarms,
            ms(0.5),
            ms(0.99)
        )
    }
}

impl super::Sink for Summary {
    fn observe(
        &mut self,
        report: &Report,
        _: Option<&crate::input::frame::Frame>,
    ) -> Result<(), super::OutputError> {
        self.record(report);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_a_bucket() {
        let mut h = LatencyHistogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((p50 / 50.0 - 1.0).abs() < 0.06, "p50 {p50}");
        assert!((p99 / 99.0 - 1.0).abs() < 0.06, "p99 {p99}");
        assert_eq!(LatencyHistogram::default().quantile_ms(0.5), None);
    }
}
