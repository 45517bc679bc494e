//! What the gate concluded about one frame: made by the gate, finished by the session (the
//! alarm, a frame that could not be passed on), read by every output.

use std::time::Duration;

use super::fusion::FusedScore;
use super::measures::Measures;
use super::verdict::Verdict;
use crate::contract::card::TamperKind;

/// What the gate concluded about one frame.
#[derive(Debug, Clone)]
pub struct Report {
    /// The frame's position in the run.
    pub index: u64,
    /// The frame's file path, or `stdin#<index>`.
    pub source: String,
    /// Accept, or reject with a reason.
    pub verdict: Verdict,
    /// `None` when the frame could not be scored.
    pub measures: Option<Measures>,
    /// The model's feature log density (cards with `output.log_density`), when scored.
    pub log_density: Option<f64>,
    /// Mask seed used; `None` when no masks were drawn.
    pub seed: Option<u64>,
    /// Preprocess + inference + measures; zero for frames that could not be read.
    pub latency: Duration,
    /// Set by the session when this frame raised the alarm.
    pub alarm: bool,
    /// Set by the session when this frame starts a tamper event: the first of a run of frames
    /// rejected by the same tamper check (a camera that stays covered is one event).
    pub tamper_event: Option<TamperKind>,
    /// The MI threshold the frame was decided with (when no fused decision was).
    pub threshold: f64,
    /// The fused signals' score, when the fused decision decided the frame.
    pub fused: Option<FusedScore>,
}
