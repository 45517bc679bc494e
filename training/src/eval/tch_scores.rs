//! Every measure of every image by the tch network (the model being trained and attacked).

use std::collections::BTreeMap;

use anyhow::Result;
use tch::Tensor;

use crate::measures::{self, Measure};
use crate::nets::{deterministic_probs, mc_measures, DropoutNet};

/// Every measure for every image, plus the deterministic and MC predictions.
#[derive(Debug, Clone, Default)]
pub struct TchScores {
    pub by_measure: BTreeMap<Measure, Vec<f64>>,
    pub det_pred: Vec<i64>,
    pub mc_pred: Vec<i64>,
}

impl TchScores {
    /// The scores of images `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> TchScores {
        let pick_i = |v: &[i64]| idx.iter().map(|&i| v[i]).collect();
        TchScores {
            by_measure: self
                .by_measure
                .iter()
                .map(|(&m, v)| (m, idx.iter().map(|&i| v[i]).collect()))
                .collect(),
            det_pred: pick_i(&self.det_pred),
            mc_pred: pick_i(&self.mc_pred),
        }
    }
}

/// Scores images `pixels` (`[N, C, H, W]` in [0, 1], mapped to the network's input):
/// `det_entropy` with dropout off, the rest from `samples` MC samples with fresh masks from
/// tch's generator.
pub fn tch_scores(net: &dyn DropoutNet, pixels: &Tensor, samples: i64) -> Result<TchScores> {
    let x = &net.input_from_pixels(pixels);
    let classes = net.classes();
    let det = measures::per_image(&deterministic_probs(net, x)?, 1, classes)?;
    let mc = mc_measures(net, x, samples)?;
    let mut by_measure = BTreeMap::new();
    by_measure.insert(
        Measure::DetEntropy,
        det.iter().map(|m| m.predictive_entropy).collect(),
    );
    for measure in Measure::MC {
        let values = mc.iter().map(|m| measure.value(m).expect("an MC measure"));
        by_measure.insert(measure, values.collect());
    }
    Ok(TchScores {
        by_measure,
        det_pred: det.iter().map(|m| m.predicted_class as i64).collect(),
        mc_pred: mc.iter().map(|m| m.predicted_class as i64).collect(),
    })
}
