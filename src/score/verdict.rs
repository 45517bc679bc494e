//! Per-frame verdicts and the rolling alarm window.

use heapless::Deque;

use crate::contract::card::TamperKind;
use crate::input::frame::ReadError;
use crate::input::preprocess::PreprocessError;
use crate::score::fusion::{FusedScore, SignalScore};
use crate::score::measures::{Measures, Unscorable};

/// Accept or reject, without the why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The frame may pass.
    Accept,
    /// The frame must not pass.
    Reject,
}

/// Why a frame was rejected: a value, so that sinks count and render it as they need.
#[derive(Debug, Clone, PartialEq)]
pub enum RejectReason {
    /// Scored, and its mutual information is above the threshold.
    AboveThreshold {
        /// The frame's MI (nats).
        mutual_information: f64,
        /// The threshold in force.
        threshold: f64,
    },
    /// Scored, but the mutual information is NaN.
    NanScore,
    /// Scored, and the fused signals' statistic is under the level (or a signal is not a
    /// number): the signal with the smallest tail probability named.
    Fused {
        /// The deciding signal.
        deciding: SignalScore,
        /// The combined statistic.
        statistic: f64,
        /// The level in force.
        level: f64,
    },
    /// The raw frame failed a tamper check (the model did not run).
    Tamper {
        /// Which check.
        kind: TamperKind,
        /// The frame's measure (NaN when it could not be measured).
        value: f64,
        /// The check's cut.
        at: f64,
    },
    /// The frame could not be read.
    Unreadable(ReadError),
    /// The frame could not be turned into model input.
    Preprocess(PreprocessError),
    /// tract failed on the frame.
    Inference(String),
    /// The model's output is not a probability matrix.
    Unscorable(Unscorable),
    /// The thread scoring the frame failed.
    ScoringThread,
    /// Accepted, but writing it on (e.g. to `--accepted`) failed, so it did not pass.
    NotPassedOn(String),
}

impl RejectReason {
    /// A reject the gate decided without scoring the frame (a tamper check): the frame was
    /// read and judged, so it is not "could not be scored".
    pub fn is_tamper(&self) -> bool {
        matches!(self, RejectReason::Tamper { .. })
    }

    /// A short stable name for counting rejects by reason (metrics labels).
    pub fn kind(&self) -> &'static str {
        match self {
            RejectReason::AboveThreshold { .. } => "above_threshold",
            RejectReason::NanScore => "nan_score",
            RejectReason::Fused { deciding, .. } => deciding.signal.name(),
            RejectReason::Tamper { kind, .. } => match kind {
                TamperKind::Covered => "tamper_covered",
                TamperKind::Blinded => "tamper_blinded",
                TamperKind::Glare => "tamper_glare",
                TamperKind::Defocused => "tamper_defocused",
                TamperKind::Snow => "tamper_snow",
                TamperKind::Frozen => "tamper_frozen",
            },
            RejectReason::Unreadable(_) => "unreadable",
            RejectReason::Preprocess(_) => "preprocess",
            RejectReason::Inference(_) => "inference",
            RejectReason::Unscorable(_) => "unscorable",
            RejectReason::ScoringThread => "scoring_thread",
            RejectReason::NotPassedOn(_) => "not_passed_on",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectReason::AboveThreshold {
                mutual_information,
                threshold,
            } => write!(
                f,
                "mutual information {mutual_information:.4} above threshold {threshold:.4}"
            ),
            RejectReason::NanScore => f.write_str("mutual information is NaN"),
            RejectReason::Fused {
                deciding,
                statistic,
                level,
            } if !deciding.value.is_finite() => write!(
                f,
                "{} is {} (fused statistic {statistic:.4}, level {level:.4})",
                deciding.signal.name(),
                deciding.value
            ),
            RejectReason::Fused {
                deciding,
                statistic,
                level,
            } => write!(
                f,
                "{} {:.4} (tail p {:.4}): fused statistic {statistic:.4} under level {level:.4}",
                deciding.signal.name(),
                deciding.value,
                deciding.p
            ),
            RejectReason::Tamper {
                kind: TamperKind::Frozen,
                value,
                at,
            } => write!(
                f,
                "tamper:frozen ({value} identical frames in a row, at or over {at})"
            ),
            RejectReason::Tamper { kind, value, at } => write!(
                f,
                "tamper:{} ({} {value:.4} {} {at:.4})",
                kind.name(),
                kind.measure(),
                if kind.rejects_low() {
                    "at or under"
                } else {
                    "at or over"
                }
            ),
            RejectReason::Unreadable(e) => e.fmt(f),
            RejectReason::Preprocess(e) => e.fmt(f),
            RejectReason::Inference(e) => write!(f, "inference failed: {e}"),
            RejectReason::Unscorable(e) => e.fmt(f),
            RejectReason::ScoringThread => f.write_str("the scoring thread failed"),
            RejectReason::NotPassedOn(e) => write!(f, "accepted but not passed on: {e}"),
        }
    }
}

/// The gate's decision on one frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The frame may pass.
    Accept,
    /// The frame must not pass, and why.
    Reject(RejectReason),
}

impl Verdict {
    /// Accept or reject.
    pub fn decision(&self) -> Decision {
        match self {
            Verdict::Accept => Decision::Accept,
            Verdict::Reject(_) => Decision::Reject,
        }
    }

    /// Why the frame was rejected; `None` for accepted frames.
    pub fn reason(&self) -> Option<&RejectReason> {
        match self {
            Verdict::Accept => None,
            Verdict::Reject(reason) => Some(reason),
        }
    }
}

/// Accepts a scored frame only if its mutual information is at or below `threshold`.
pub fn decide(m: &Measures, threshold: f64) -> Verdict {
    if m.mutual_information.is_nan() {
        return Verdict::Reject(RejectReason::NanScore);
    }
    if m.mutual_information > threshold {
        Verdict::Reject(RejectReason::AboveThreshold {
            mutual_information: m.mutual_information,
            threshold,
        })
    } else {
        Verdict::Accept
    }
}

/// Accepts a scored frame only if every fused signal is a number and the fused statistic is
/// at or over the level.
pub fn decide_fused(score: &FusedScore) -> Verdict {
    if !score.rejects() {
        return Verdict::Accept;
    }
    Verdict::Reject(RejectReason::Fused {
        deciding: score.deciding(),
        statistic: score.statistic,
        level: score.level,
    })
}

/// The MI threshold in force, shared by a pool's gates and changed while they run (SIGHUP
/// re-reads the card): each frame is decided with the value read when it is scored.
#[derive(Debug)]
pub struct SharedThreshold(std::sync::atomic::AtomicU64);

impl SharedThreshold {
    /// A threshold of `value` nats.
    pub fn new(value: f64) -> SharedThreshold {
        SharedThreshold(std::sync::atomic::AtomicU64::new(value.to_bits()))
    }

    /// The value now.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Changes the value for the frames scored from now on.
    pub fn set(&self, value: f64) {
        self.0
            .store(value.to_bits(), std::sync::atomic::Ordering::Relaxed);
    }
}

/// Largest alarm window (`--alarm-window`): fixed capacity, no allocation per frame.
pub const MAX_WINDOW: usize = 1024;

/// Raises an alarm when at least `k` of the last `n` frames were rejected. The alarm fires
/// on entering that state, and again only after the state has cleared.
#[derive(Debug)]
pub struct AlarmWindow {
    recent: Deque<bool, MAX_WINDOW>,
    n: usize,
    k: usize,
    rejected: usize,
    active: bool,
}

/// An alarm's k of n that cannot be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("alarm needs 1 <= k <= n <= {MAX_WINDOW}, got k={k} n={n}")]
pub struct AlarmError {
    /// Rejects that raise the alarm.
    pub k: usize,
    /// Frames looked back on.
    pub n: usize,
}

impl AlarmWindow {
    /// An alarm on `k` rejects in the last `n` frames.
    pub fn new(k: usize, n: usize) -> Result<AlarmWindow, AlarmError> {
        if n == 0 || n > MAX_WINDOW || k == 0 || k > n {
            return Err(AlarmError { k, n });
        }
        Ok(AlarmWindow {
            recent: Deque::new(),
            n,
            k,
            rejected: 0,
            active: false,
        })
    }

    /// Records one verdict; returns true when this frame raises the alarm.
    pub fn push(&mut self, decision: Decision) -> bool {
        let rejected = decision == Decision::Reject;
        if self.recent.len() == self.n && self.recent.pop_front() == Some(true) {
            self.rejected -= 1;
        }
        // Capacity is MAX_WINDOW ≥ n and we just made room, so this cannot fail.
        let _ = self.recent.push_back(rejected);
        self.rejected += rejected as usize;
        let now = self.rejected >= self.k;
        let raised = now && !self.active;
        self.active = now;
        raised
    }

    /// The window length n.
    pub fn window(&self) -> usize {
        self.n
    }

    /// Rejected frames among the last `n`.
    pub fn rejected_in_window(&self) -> usize {
        self.rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;

    #[test]
    fn alarm_fires_on_k_of_n_and_rearms_after_clearing() {
        let mut w = AlarmWindow::new(2, 3).unwrap();
        let seq = [
            Reject, Accept, Accept, Reject, Reject, Reject, Accept, Accept, Accept, Reject, Reject,
        ];
        let fired: Vec<bool> = seq.iter().map(|&d| w.push(d)).collect();
        assert_eq!(
            fired,
            vec![false, false, false, false, true, false, false, false, false, false, true]
        );
        assert!(AlarmWindow::new(4, 3).is_err());
        assert!(AlarmWindow::new(1, MAX_WINDOW + 1).is_err());
    }

    #[test]
    fn threshold_is_inclusive_for_accept() {
        let m = Measures {
            predictive_entropy: 0.5,
            expected_entropy: 0.3,
            mutual_information: 0.2,
            softmax_variance: 0.0,
            variation_ratio: 0.0,
            max_probability: 0.9,
            predicted_class: 1,
        };
        assert_eq!(decide(&m, 0.2), Verdict::Accept);
        let v = decide(&m, 0.1);
        assert_eq!(
            v,
            Verdict::Reject(RejectReason::AboveThreshold {
                mutual_information: 0.2,
                threshold: 0.1
            })
        );
        assert!(v.reason().unwrap().to_string().contains("above threshold"));
    }
}
