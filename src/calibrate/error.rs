//! Why a calibration cannot be made (apart from `calibrate`, so that the error above the
//! commands can name it without importing the command).

/// Frames above the threshold that a calibration must expect, at least: with fewer, the
/// quantile is set by a handful of frames and the false-positive rate means little.
pub const MIN_EXPECTED_ABOVE: f64 = crate::contract::card::MIN_EXPECTED_REJECTS;

pub use crate::score::measures::MI_SIGNAL_FLOOR;

/// Why a calibration cannot be made from the frames given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalibrationError {
    /// Fewer frames than the target rate needs.
    #[error(
        "{got} frames{} are too few for --fpr {fpr}: calibrating needs at least {needed} \
         (so that about {MIN_EXPECTED_ABOVE} lie above the threshold)",
        if *held_out > 0 { format!(" (another {held_out} held out by --holdout)") } else { String::new() }
    )]
    TooFewFrames {
        /// Frames to calibrate on.
        got: usize,
        /// Frames held out besides.
        held_out: usize,
        /// Frames needed.
        needed: usize,
        /// The target rate.
        fpr: f64,
    },
    /// The frames' MI carries no signal: the threshold would sit in float rounding noise.
    #[error(
        "the threshold would be {threshold:e} nats, below {MI_SIGNAL_FLOOR:e}: on these \
         {frames} frames the model's Monte-Carlo samples (almost) never disagree, and MI that \
         small is the rounding of float probabilities, not a signal (check its dropout sites)"
    )]
    NoUncertainty {
        /// Frames scored.
        frames: usize,
        /// The quantile the threshold would have been.
        threshold: f64,
    },
    /// `--tamper`, but no tamper check can be set on these frames.
    #[error(
        "no tamper check can be set on these {frames} frames: each check's clean values come \
         too near what a tampered camera gives (docs/model-format.md, `tamper`)"
    )]
    NoTamperCheck {
        /// Frames measured.
        frames: usize,
    },
    /// The fused signals make no decision on these frames (a signal without finite values,
    /// or a level no frame can fall under).
    #[error("the fused signals cannot be calibrated on these frames: {0}")]
    Fusion(String),
    /// A frame could not be read or scored.
    #[error("frame {index} ({source_name}) could not be scored: {reason}; calibrate on frames the gate can read")]
    Unscored {
        /// Its position.
        index: u64,
        /// Its file, or `stdin#i`.
        source_name: String,
        /// Why.
        reason: String,
    },
}
