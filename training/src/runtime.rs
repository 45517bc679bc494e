//! Scoring images the way the `mcgate` runtime does (tract plan, wyrand masks), so that
//! exported files — float or int8 — are measured by the code that ships, not by tch.

use anyhow::Result;

use crate::data::Dataset;

/// Predictions and per-image MI of a model as the runtime runs it.
#[derive(Debug, Clone)]
pub struct RuntimeScores {
    /// Masks of ones: dropout off.
    pub det_pred: Vec<usize>,
    /// Argmax of the mean of `samples` MC probabilities.
    pub mc_pred: Vec<usize>,
    pub mi: Vec<f64>,
}

impl RuntimeScores {
    /// Fractions of `labels` the deterministic and MC predictions get right.
    pub fn accuracy(&self, labels: &[u8]) -> (f64, f64) {
        let n = labels.len().max(1) as f64;
        let right = |pred: &[usize]| {
            pred.iter()
                .zip(labels)
                .filter(|(p, &l)| **p == l as usize)
                .count()
        };
        (
            right(&self.det_pred) as f64 / n,
            right(&self.mc_pred) as f64 / n,
        )
    }
}

/// Scores `images` (row-major, `pixels` floats in [0, 1] each). Image i's masks come from
/// `mcgate::rng::mix(seed, i)`, as frame i's in `mcgate gate --seed`: two models scored with
/// the same seed see the same masks.
pub fn score(
    model: &mcgate::plan::Model,
    images: &[f32],
    pixels: usize,
    samples: usize,
    seed: u64,
) -> Result<RuntimeScores> {
    let classes = model.card.classes.len();
    let mut det = model.plan(1)?;
    let mut mc = model.plan(samples)?;
    let ones: Vec<Vec<f32>> = model
        .card
        .dropout_sites
        .iter()
        .map(|s| vec![1.0; s.sample_len()])
        .collect();
    let ones: Vec<&[f32]> = ones.iter().map(Vec::as_slice).collect();
    let mut scratch = vec![0.0; classes];
    let n = images.len() / pixels.max(1);
    let mut s = RuntimeScores {
        det_pred: Vec::with_capacity(n),
        mc_pred: Vec::with_capacity(n),
        mi: Vec::with_capacity(n),
    };
    for (i, input) in images.chunks_exact(pixels).enumerate() {
        let out = det.run_with_masks(input, &ones)?;
        let m = mcgate::measures::compute(mcgate::plan::output_slice(&out)?, classes, &mut scratch)
            .map_err(|e| anyhow::anyhow!("image {i}: {e}"))?;
        s.det_pred.push(m.predicted_class);
        let out = mc.run(input, mcgate::rng::mix(seed, i as u64))?;
        let m = mcgate::measures::compute(mcgate::plan::output_slice(&out)?, classes, &mut scratch)
            .map_err(|e| anyhow::anyhow!("image {i}: {e}"))?;
        s.mc_pred.push(m.predicted_class);
        s.mi.push(m.mutual_information);
    }
    Ok(s)
}

/// Scores every image of a dataset (bytes scaled to [0, 1]).
pub fn score_dataset(
    model: &mcgate::plan::Model,
    data: &Dataset,
    samples: usize,
    seed: u64,
) -> Result<RuntimeScores> {
    let images: Vec<f32> = data.images.iter().map(|&v| v as f32 / 255.0).collect();
    score(model, &images, data.rows * data.cols, samples, seed)
}
