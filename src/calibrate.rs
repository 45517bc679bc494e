//! `mcgate calibrate`: set a model's MI threshold on the camera's own clean frames.
//!
//! The frames are gated as `gate` gates them (same preprocessing, same masks), their mutual
//! information collected, and the threshold put at the (1 − fpr) quantile: at most a share
//! `fpr` of these clean frames lie above it. With `--signals`, every signal named is kept per
//! frame and the fused decision (`score::fusion`) set at the same rate. A frame that cannot be
//! read or scored stops the calibration (a threshold from a silently shortened set would not
//! be the one asked for).
//!
//! With a holdout, the last share of the frames, in order, is not used to set anything: the
//! decision's rate on them is what a camera's later frames will see (an in-sample rate is the
//! target by construction, whatever the frames).

use std::path::{Path, PathBuf};

use crate::contract::card::{
    Calibration, Fused, FusedSignal, Fusion, Holdout, InputSpec, ModelCard, ModelPaths, Resize,
    Signal, Tamper, Threshold, SCHEMA, SCHEMA_V3,
};
use crate::gate::{Pool, Seeds};
use crate::input::frame;
use crate::model::{LoadError, Model};
use crate::output::frames::write_atomically_with_mode;
use crate::score::fusion::{signal_value, FusedGate};
use crate::score::measures::Measures;
use crate::score::roc;
use crate::score::tamper::{self, FrozenCounter, TamperMeasures, TamperMeter};
use crate::score::verdict::{self, Decision};
use crate::Error;

pub(crate) mod error;
pub use error::{CalibrationError, MIN_EXPECTED_ABOVE, MI_SIGNAL_FLOOR};

/// Share of ln(classes) (the most MI the classes allow) above which a calibrated threshold is
/// warned about. The shipped models' thresholds are 1.7–10 % of it; frames the model is unsure
/// of (salt-and-pepper noise gave the MNIST model 48 %) set a threshold that passes them.
pub const HIGH_THRESHOLD_SHARE: f64 = 0.25;

/// How to calibrate.
#[derive(Debug, Clone)]
pub struct Options {
    /// Target share of clean frames rejected, in (0, 1).
    pub fpr: f64,
    /// Monte-Carlo samples T per frame.
    pub samples: usize,
    /// Run seed of the masks (recorded in the card).
    pub seed: u64,
    /// Frames scored at once, one thread each.
    pub jobs: usize,
    /// Also set tamper checks on the frames (`score::tamper::calibrate`).
    pub tamper: bool,
    /// Signals to fuse into one decision; empty: the MI threshold alone decides.
    pub signals: Vec<Signal>,
    /// How the fused signals combine.
    pub rule: Fusion,
    /// Share of the frames, the last ones, held out of the calibration to measure its rate
    /// on; 0: none.
    pub holdout: f64,
}

/// A scored calibration frame: its measures and the model's density output, if any.
type Scored = (Measures, Option<f64>);

/// The frames a calibration needs for a target rate `fpr`.
pub fn frames_needed(fpr: f64) -> usize {
    (MIN_EXPECTED_ABOVE / fpr).ceil() as usize
}

/// Calibration frames that are not of the model's kind: in other channels than the model's,
/// or (for a stretched input) of another size. A gate calibrated on photos for a digit model
/// gets a threshold that the digits it guards never reach.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unlike {
    /// How many.
    pub frames: usize,
    /// The first one: its source, and its size and channels in words.
    pub first: Option<(String, String)>,
}

impl Unlike {
    fn count(&mut self, frame: &frame::Frame, input: &InputSpec) {
        let channels = frame.image.color().channel_count() as usize;
        let (w, h) = (frame.image.width(), frame.image.height());
        let other_size = input.resize == Resize::Stretch
            && (w as usize != input.width() || h as usize != input.height());
        if channels != input.channels() || other_size {
            self.frames += 1;
            self.first.get_or_insert_with(|| {
                (
                    frame.source.clone(),
                    format!("{w}x{h} {}", channels_word(channels)),
                )
            });
        }
    }

    /// The warning to print, if any frame was unlike the model's input.
    pub fn warning(&self, total: usize, input: &InputSpec) -> Option<String> {
        let (source, what) = self.first.as_ref()?;
        Some(format!(
            "{} of {total} calibration frames are not what the model takes ({}x{} {}), e.g. {} is \
             {what}: calibrate on frames as the camera sends them at gate time, or the threshold \
             will not fit them",
            self.frames,
            input.width(),
            input.height(),
            channels_word(input.channels()),
            crate::text::printable(source),
        ))
    }
}

fn channels_word(channels: usize) -> &'static str {
    match channels {
        1 => "gray",
        3 => "RGB",
        _ => "of other channels",
    }
}

/// What a calibration found.
#[derive(Debug, Clone)]
pub struct Calibrated {
    /// Frames unlike the model's input.
    pub unlike: Unlike,
    /// The new threshold.
    pub threshold: f64,
    /// MI of every calibration frame (the held-out ones not included), in frame order.
    pub mutual_information: Vec<f64>,
    /// Share of the calibration frames above the threshold.
    pub clean_fpr: f64,
    /// Its 95 % Wilson score interval.
    pub clean_fpr_interval: (f64, f64),
    /// The tamper checks set on the frames, when asked for.
    pub tamper: Option<Tamper>,
    /// The fused decision, when signals were asked for.
    pub fusion: Option<Fused>,
    /// The MI threshold's (with the tamper checks) rate on the held-out frames, if any.
    pub holdout: Option<Holdout>,
}

impl Calibrated {
    /// The warning to print when the threshold is over [`HIGH_THRESHOLD_SHARE`] of
    /// ln(`classes`): the "clean" frames are ones the model is unsure of.
    pub fn high_threshold_warning(&self, classes: usize) -> Option<String> {
        let most = (classes as f64).ln();
        (self.threshold > HIGH_THRESHOLD_SHARE * most).then(|| {
            format!(
                "the threshold, {:.4} nats, is {:.0} % of ln({classes}) = {most:.4}, the most \
                 mutual information {classes} classes can have (over {:.0} % is unusual): the \
                 model is unsure of many of these frames, and the gate will pass frames as \
                 uncertain. Calibrate on clean frames from the camera",
                self.threshold,
                100.0 * self.threshold / most,
                100.0 * HIGH_THRESHOLD_SHARE
            )
        })
    }

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
    if !(0.0..1.0).contains(&opts.holdout) {
        return Err(Error::out_of_range("holdout", "in [0, 1)", opts.holdout));
    }
    if opts.signals.contains(&Signal::Density) && model.card.output.log_density.is_none() {
        return Err(Error::Setting(format!(
            "--signals density: model {} has no density output (output.log_density in its card)",
            model.card.name
        )));
    }
    // The threshold given to the gates is irrelevant: only the measures are read.
    let mut pool = Pool::new(
        model,
        opts.samples,
        0.0,
        Seeds::PerFrame(opts.seed),
        opts.jobs,
    )?;
    // The card's own checks (and fusion) would reject clean frames the new ones are set on.
    pool.without_tamper();
    let mut meter = TamperMeter::new();
    let mut frozen = FrozenCounter::new();
    let mut tamper_measures = vec![];
    // Identical frames in a row at each frame, in order.
    let mut runs = vec![];
    let mut measures = vec![];
    let mut unlike = Unlike::default();
    let input = &model.card.input;
    pool.score_stream(source, |report, frame| match report.measures {
        Some(m) => {
            measures.push((m, report.log_density));
            if let Some(frame) = frame {
                unlike.count(frame, input);
                if opts.tamper {
                    tamper_measures.push(meter.measure(&frame.image));
                    runs.push(frozen.push(&frame.image));
                }
            }
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
    let held_out = (opts.holdout * measures.len() as f64).floor() as usize;
    let (set_on, later) = measures.split_at(measures.len() - held_out);
    let needed = frames_needed(opts.fpr);
    if set_on.len() < needed {
        return Err(Error::Calibration(CalibrationError::TooFewFrames {
            got: set_on.len(),
            held_out,
            needed,
            fpr: opts.fpr,
        }));
    }
    let mi: Vec<f64> = set_on.iter().map(|(m, _)| m.mutual_information).collect();
    let threshold = roc::threshold_at_fpr(&mi, opts.fpr).ok_or_else(|| {
        Error::Calibration(CalibrationError::Unscored {
            index: 0,
            source_name: "-".into(),
            reason: "a mutual information is NaN".into(),
        })
    })?;
    // Samples that never disagree (a site that drops nothing, or a head that ignores it) give
    // MI of rounding noise, not 0: a threshold there passes frames on noise.
    if threshold < MI_SIGNAL_FLOOR {
        return Err(Error::Calibration(CalibrationError::NoUncertainty {
            frames: mi.len(),
            threshold,
        }));
    }
    let above = mi.iter().filter(|&&v| v > threshold).count();
    let (tamper_set_on, tamper_later) =
        tamper_measures.split_at(tamper_measures.len().min(set_on.len()));
    let tamper = match opts.tamper {
        false => None,
        true => Some(
            tamper::calibrate(
                tamper_set_on,
                runs[..tamper_set_on.len()]
                    .iter()
                    .copied()
                    .max()
                    .unwrap_or(0),
            )
            .ok_or(Error::Calibration(CalibrationError::NoTamperCheck {
                frames: tamper_set_on.len(),
            }))?,
        ),
    };
    let tampered = |i: usize| {
        tamper.as_ref().is_some_and(|t| {
            tamper_later
                .get(i)
                .is_some_and(|m: &TamperMeasures| tamper::first_failed(&t.checks, m).is_some())
        })
    };
    let rate_on = |rejects: &dyn Fn(usize, &Scored) -> bool| {
        (held_out > 0).then(|| {
            let n = later
                .iter()
                .enumerate()
                .filter(|(i, m)| rejects(*i, m))
                .count();
            let (low, high) = roc::wilson_interval(n, held_out);
            Holdout {
                frames: held_out,
                clean_fpr: [n as f64 / held_out as f64, low, high],
            }
        })
    };
    // The gate's own rules decide the held-out frames.
    let holdout = rate_on(&|i, (m, _)| {
        tampered(i) || verdict::decide(m, threshold).decision() == Decision::Reject
    });
    let fusion = match opts.signals.is_empty() {
        true => None,
        false => {
            let mut fused = Fused {
                rule: opts.rule,
                target_fpr: opts.fpr,
                signals: opts
                    .signals
                    .iter()
                    .map(|&name| FusedSignal {
                        name,
                        clean: set_on
                            .iter()
                            .map(|(m, density)| signal_value(name, m, *density))
                            .collect(),
                    })
                    .collect(),
                holdout: None,
            };
            let gate = FusedGate::new(&fused, None)
                .map_err(|e| Error::Calibration(CalibrationError::Fusion(e.to_string())))?;
            fused.holdout =
                rate_on(&|i, (m, density)| tampered(i) || gate.score(m, *density).rejects());
            Some(fused)
        }
    };
    Ok(Calibrated {
        tamper,
        unlike,
        threshold,
        clean_fpr: above as f64 / mi.len() as f64,
        clean_fpr_interval: roc::wilson_interval(above, mi.len()),
        mutual_information: mi,
        fusion,
        holdout,
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
    if let Some(t) = &c.tamper {
        card.tamper = Some(t.clone());
    }
    // A new calibration replaces the old decision: MI alone unless signals were asked for.
    card.fusion = c.fusion.clone();
    // The red team's numbers were measured against the old decision: they say nothing of
    // the new one.
    card.security = None;
    // The lowest schema that holds the card: an MI-only card stays schema 2.
    card.schema = if card.tamper.is_some() || card.fusion.is_some() {
        SCHEMA_V3
    } else {
        SCHEMA
    }
    .into();
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
            holdout: c.holdout,
        }),
    });
    card
}

/// The card file a calibration of `model_arg` rewrites: the card itself, or the file its link
/// points to (the link is kept, its target updated), with the mode to keep. A read-only card
/// is refused: someone made it so. Checked before any frame is scored.
pub fn card_to_write(model_arg: &Path) -> Result<(PathBuf, std::fs::Permissions), Error> {
    let path = ModelPaths::resolve(model_arg).card;
    let fail = |cause: String| Error::Output {
        what: format!("model card {}", path.display()),
        cause,
    };
    let target = std::fs::canonicalize(&path).map_err(|e| fail(e.to_string()))?;
    let permissions = std::fs::metadata(&target)
        .map_err(|e| fail(e.to_string()))?
        .permissions();
    if permissions.readonly() {
        return Err(fail(
            "it is read-only: make it writable to calibrate it (mcgate keeps its mode)".into(),
        ));
    }
    Ok((target, permissions))
}

/// Writes `card` over the card file of the model named `model_arg` ([`card_to_write`]),
/// atomically (a temporary file, then a rename): a failed write leaves the old card as it was.
/// Returns the card's path as named.
pub fn write_card(model_arg: &Path, card: &ModelCard) -> Result<PathBuf, Error> {
    let (target, permissions) = card_to_write(model_arg)?;
    // The card a gate will load: never write one it would refuse.
    card.validate().map_err(|problem| LoadError::Card {
        path: target.clone(),
        problem,
    })?;
    write_atomically_with_mode(&target, card.to_json().as_bytes(), Some(permissions))?;
    Ok(ModelPaths::resolve(model_arg).card)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threshold_near_the_most_mi_the_classes_allow_is_warned_about() {
        let calibrated = |threshold| Calibrated {
            unlike: Unlike::default(),
            threshold,
            mutual_information: vec![threshold],
            clean_fpr: 0.0,
            clean_fpr_interval: (0.0, 0.0),
            tamper: None,
            fusion: None,
            holdout: None,
        };
        // models/mnist's 0.113 (4.9 % of ln 10) and the salt-and-pepper 1.098 (48 %).
        assert_eq!(calibrated(0.113).high_threshold_warning(10), None);
        let warning = calibrated(1.098).high_threshold_warning(10).unwrap();
        assert!(warning.contains("is 48 % of ln(10) = 2.3026"), "{warning}");
        assert_eq!(calibrated(1.0).high_threshold_warning(1000), None);
    }
}
