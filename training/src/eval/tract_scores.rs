//! Scoring images through an exported file the way the `mcgate` runtime does (tract plan,
//! wyrand masks), so that exported files — float or int8 — are measured by the code that
//! ships, not by tch.

use anyhow::{ensure, Result};
use mcgate::model::Model;
use mcgate::run::plan::Plan;
use mcgate::run::rng::mix;

use crate::data::Dataset;
use crate::measures;

/// Predictions and per-image MI of an exported model as the runtime runs it.
#[derive(Debug, Clone)]
pub struct TractScores {
    /// Masks of ones: dropout off.
    pub det_pred: Vec<usize>,
    /// Argmax of the mean of `samples` MC probabilities.
    pub mc_pred: Vec<usize>,
    pub mi: Vec<f64>,
}

impl TractScores {
    /// Fractions of `labels` the deterministic and MC predictions get right.
    pub fn accuracy(&self, labels: &[u8]) -> (f64, f64) {
        let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        self.accuracy_of(&labels)
    }

    /// (deterministic, MC) accuracy against `labels`.
    pub fn accuracy_of(&self, labels: &[i64]) -> (f64, f64) {
        let n = labels.len().max(1) as f64;
        let right = |pred: &[usize]| {
            pred.iter()
                .zip(labels)
                .filter(|(p, &l)| **p as i64 == l)
                .count()
        };
        (
            right(&self.det_pred) as f64 / n,
            right(&self.mc_pred) as f64 / n,
        )
    }
}

/// Scores `images` (row-major, `pixels` model-input floats each). Image i's masks come from
/// `mcgate::run::rng::mix(seed, i)`, as frame i's in `mcgate gate --seed`: two models scored
/// with the same seed see the same masks.
pub fn tract_scores(
    model: &Model,
    images: &[f32],
    pixels: usize,
    samples: usize,
    seed: u64,
) -> Result<TractScores> {
    let classes = model.card.classes.len();
    // With every mask 1, an ensemble's M rows are its members' deterministic outputs: the
    // measures' mean is the ensemble's deterministic prediction.
    let det_rows = model.card.output_rows(1);
    let mc_rows = model.card.output_rows(samples);
    let mut det = Plan::new(model, 1)?;
    let mut mc = Plan::new(model, samples)?;
    let ones: Vec<Vec<f32>> = model
        .card
        .dropout_sites
        .iter()
        .map(|s| vec![1.0; s.sample_len()])
        .collect();
    let ones: Vec<&[f32]> = ones.iter().map(Vec::as_slice).collect();
    let n = images.len() / pixels.max(1);
    // Image-major [N, T, C] probabilities, scored together below.
    let mut det_probs = Vec::with_capacity(n * det_rows * classes);
    let mut mc_probs = Vec::with_capacity(n * mc_rows * classes);
    for (i, input) in images.chunks_exact(pixels).enumerate() {
        let probs = det.run_with_masks(input, &ones)?;
        ensure!(
            probs.len() == det_rows * classes,
            "image {i}: {} outputs, not {det_rows} × {classes}",
            probs.len()
        );
        det_probs.extend_from_slice(probs);
        let probs = mc.run(input, mix(seed, i as u64))?;
        ensure!(
            probs.len() == mc_rows * classes,
            "image {i}: {} outputs, not {mc_rows} × {classes}",
            probs.len()
        );
        mc_probs.extend_from_slice(probs);
    }
    let det = measures::per_image(&det_probs, det_rows, classes)?;
    let mc = measures::per_image(&mc_probs, mc_rows, classes)?;
    Ok(TractScores {
        det_pred: det.iter().map(|m| m.predicted_class).collect(),
        mc_pred: mc.iter().map(|m| m.predicted_class).collect(),
        mi: mc.iter().map(|m| m.mutual_information).collect(),
    })
}

/// Scores every image of a dataset, bytes scaled to [0, 1] (a card with scale 1/255, mean 0
/// and std 1).
pub fn tract_scores_dataset(
    model: &Model,
    data: &Dataset,
    samples: usize,
    seed: u64,
) -> Result<TractScores> {
    tract_scores(model, &data.unit_floats(), data.pixels(), samples, seed)
}
