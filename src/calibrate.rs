//! `mcgate calibrate`: set a model's MI threshold on the camera's own clean frames.
//!
//! The frames are gated as `gate` gates them (same preprocessing, same masks), their mutual
//! information collected, and the threshold put at the (1 − fpr) quantile: at most a share
//! `fpr` of these clean frames lie above it. A frame that cannot be read or scored stops the
//! calibration (a threshold from a silently shortened set would not be the one asked for).

use std::path::{Path, PathBuf};

use crate::gate::{Pool, Seeds};
use crate::input::frame;
use crate::model::card::{Calibration, ModelCard, ModelPaths, Threshold, SCHEMA};
use crate::model::Model;
use crate::output::frames::write_atomically;
use crate::score::roc;
use crate::Error;

/// Frames above the threshold that a calibration must expect, at least: with fewer, the
/// quantile is set by a handful of frames and the false-positive rate means little.
pub const MIN_EXPECTED_ABOVE: f64 = 5.0;

/// How to calibrate.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Target share of clean frames rejected, in (0, 1).
    pub fpr: f64,
    /// Monte-Carlo samples T per frame.
    pub samples: usize,
    /// Run seed of the masks (recorded in the card).
    pub seed: u64,
    /// Frames scored at once, one thread each.
    pub jobs: usize,
}

/// Why a calibration cannot be made from the frames given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalibrationError {
    /// Fewer frames than the target rate needs.
    #[error(
        "{got} frames are too few for --fpr {fpr}: calibrating needs at least {needed} \
         (so that about {MIN_EXPECTED_ABOVE} lie above the threshold)"
    )]
    TooFewFrames {
        /// Frames given.
        got: usize,
        /// Frames needed.
        needed: usize,
        /// The target rate.
        fpr: f64,
    },
    /// Every frame scored MI 0: the model's samples never disagree.
    #[error(
        "all {frames} frames score mutual information 0: the model's Monte-Carlo samples never \
         disagree, so MI cannot gate it (check its dropout sites)"
    )]
    NoUncertainty {
        /// Frames scored.
        frames: usize,
    },
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

/// The frames a calibration needs for a target rate `fpr`.
pub fn frames_needed(fpr: f64) -> usize {
    (MIN_EXPECTED_ABOVE / fpr).ceil() as usize
}

/// What a calibration found.
#[derive(Debug, Clone)]
pub struct Calibrated {
    /// The new threshold.
    pub threshold: f64,
    /// MI of every frame, in frame order.
    pub mutual_information: Vec<f64>,
    /// Share of the frames above the threshold.
    pub clean_fpr: f64,
    /// Its 95 % Wilson score interval.
    pub clean_fpr_interval: (f64, f64),
}

impl Calibrated {
    /// The q-quantile (0..=1) of the frames' MI, nearest rank.
    pub fn mi_quantile(&self, q: f64) -> f64 {
        let mut sorted = self.mutual_information.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }
}

/// Scores every frame of `source` with `model` and sets the threshold.
pub fn calibrate(
    model: &Model,
    source: impl Iterator<Item = frame::Item> + Send + 'static,
    opts: &Options,
) -> Result<Calibrated, Error> {
    if !(opts.fpr > 0.0 && opts.fpr < 1.0) {
        return Err(Error::out_of_range("fpr", "in (0, 1)", opts.fpr));
    }
    // The threshold given to the gates is irrelevant: only the measures are read.
    let no_threshold = (model.card.classes.len() as f64).ln();
    let mut pool = Pool::new(
        model,
        opts.samples,
        no_threshold,
        Seeds::PerFrame(opts.seed),
        opts.jobs,
    )?;
    let mut mi = vec![];
    pool.score_stream(source, |report, _| match report.measures {
        Some(m) => {
            mi.push(m.mutual_information);
            Ok(())
        }
        None => Err(Error::Calibration(CalibrationError::Unscored {
            index: report.index,
            source_name: report.source,
            reason: report
                .verdict
                .reason()
                .map(ToString::to_string)
                .unwrap_or_default(),
        })),
    })?;
    let needed = frames_needed(opts.fpr);
    if mi.len() < needed {
        return Err(Error::Calibration(CalibrationError::TooFewFrames {
            got: mi.len(),
            needed,
            fpr: opts.fpr,
        }));
    }
    let threshold = roc::threshold_at_fpr(&mi, opts.fpr).ok_or_else(|| {
        Error::Calibration(CalibrationError::Unscored {
            index: 0,
            source_name: "-".into(),
            reason: "a mutual information is NaN".into(),
        })
    })?;
    // MI 0 on every frame: the samples never disagree (a site that drops nothing, or a head
    // that ignores it), so a threshold of 0 would pass every frame.
    if mi.iter().all(|&v| v == 0.0) {
        return Err(Error::Calibration(CalibrationError::NoUncertainty {
            frames: mi.len(),
        }));
    }
    let above = mi.iter().filter(|&&v| v > threshold).count();
    Ok(Calibrated {
        threshold,
        clean_fpr: above as f64 / mi.len() as f64,
        clean_fpr_interval: roc::wilson_interval(above, mi.len()),
        mutual_information: mi,
    })
}

/// `card` with the calibrated threshold, as schema 2 (which records the calibration).
pub fn calibrated_card(
    card: &ModelCard,
    c: &Calibrated,
    opts: &Options,
    date: String,
) -> ModelCard {
    let mut card = card.clone();
    card.schema = SCHEMA.into();
    // The gate runs at the T the threshold was set for: MI's estimate depends on T.
    card.default_samples = opts.samples;
    card.threshold = Some(Threshold {
        mutual_information: c.threshold,
        method: format!(
            "{}th percentile of MI (T={}) on {} clean frames from the camera (mcgate calibrate)",
            100.0 * (1.0 - opts.fpr),
            opts.samples,
            c.mutual_information.len()
        ),
        target_fpr: Some(opts.fpr),
        provisional: true,
        calibration: Some(Calibration {
            frames: c.mutual_information.len(),
            samples: opts.samples,
            seed: opts.seed,
            date,
            clean_fpr: Some([c.clean_fpr, c.clean_fpr_interval.0, c.clean_fpr_interval.1]),
        }),
    });
    card
}

/// Writes `card` over the card file of the model named `model_arg`, atomically (a temporary
/// file, then a rename): a failed write leaves the old card as it was.
pub fn write_card(model_arg: &Path, card: &ModelCard) -> Result<PathBuf, Error> {
    let path = ModelPaths::resolve(model_arg).card;
    write_atomically(&path, card.to_json().as_bytes())?;
    Ok(path)
}
