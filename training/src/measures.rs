//! Monte-Carlo probabilities → the runtime's uncertainty measures (`mcgate::score::measures`),
//! and the names of the measures the evaluation scores.

use anyhow::{anyhow, ensure, Result};
use mcgate::score::measures::{compute, Measures};
use serde::Serialize;
use tch::{Kind, Tensor};

/// `mcgate`'s measures of each image in `probs`, row-major `[N, T, C]`: image after image,
/// each a `[T, C]` block of T softmax rows (the runtime's layout for one frame). With T = 1 a
/// block is one deterministic softmax row.
pub fn per_image(probs: &[f32], samples: usize, classes: usize) -> Result<Vec<Measures>> {
    let block = samples * classes;
    ensure!(
        block > 0 && probs.len().is_multiple_of(block),
        "{} probabilities are not whole images of {samples} samples × {classes} classes",
        probs.len()
    );
    let mut scratch = vec![0.0; classes];
    probs
        .chunks(block)
        .enumerate()
        .map(|(i, p)| {
            compute(p, classes, &mut scratch)
                .map_err(|e| anyhow!("image {i}: model output cannot be scored: {e}"))
        })
        .collect()
}

/// A measure the evaluation scores each image by. Serialised as its snake_case name;
/// declared in alphabetical order of those names, so maps keyed by it serialise sorted
/// alphabetically as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Entropy of the softmax with dropout off.
    DetEntropy,
    /// Mean over the T samples of each sample's entropy.
    ExpectedEntropy,
    /// Predictive entropy minus expected entropy (MI): what the gate thresholds.
    MutualInformation,
    /// Entropy of the mean of the T softmaxes.
    PredictiveEntropy,
    /// Variance of the softmax over the samples, averaged over classes.
    SoftmaxVariance,
    /// One minus the share of samples that vote for the modal class.
    VariationRatio,
}

impl Measure {
    /// Every measure, in table order: the deterministic entropy, then the five from T MC
    /// samples.
    pub const TABLE: [Measure; 6] = [
        Measure::DetEntropy,
        Measure::PredictiveEntropy,
        Measure::MutualInformation,
        Measure::ExpectedEntropy,
        Measure::SoftmaxVariance,
        Measure::VariationRatio,
    ];

    /// The measures taken from T MC samples: the runtime's ([`mcgate::score::measures::NAMED`]), less the
    /// confidence (`max_probability`), which the evaluation does not score by.
    pub const MC: [Measure; 5] = [
        Measure::PredictiveEntropy,
        Measure::MutualInformation,
        Measure::ExpectedEntropy,
        Measure::SoftmaxVariance,
        Measure::VariationRatio,
    ];

    /// This measure's value in `mcgate`'s [`Measures`], read by its name; `None` for the
    /// deterministic entropy, which is not one of them.
    pub fn value(self, m: &Measures) -> Option<f64> {
        m.by_name(self.name())
    }

    /// The snake_case name (the JSON key).
    pub fn name(self) -> &'static str {
        match self {
            Measure::DetEntropy => "det_entropy",
            Measure::ExpectedEntropy => "expected_entropy",
            Measure::MutualInformation => "mutual_information",
            Measure::PredictiveEntropy => "predictive_entropy",
            Measure::SoftmaxVariance => "softmax_variance",
            Measure::VariationRatio => "variation_ratio",
        }
    }
}

/// Mutual information per image of MC probabilities `[R, N, C]`, differentiable: the entropy
/// of the mean over the R rows minus the mean of the rows' entropies, `[N]` — what the
/// attacks push on (the gate's own, in f64, is `mcgate::score::measures::compute`).
pub fn mutual_information(probs: &Tensor) -> Tensor {
    predictive_entropy(probs) - entropy(probs).mean_dim(0, false, Kind::Float)
}

/// Predictive entropy per image of MC probabilities `[R, N, C]`: the entropy of the mean over
/// the R rows, `[N]`, differentiable.
pub fn predictive_entropy(probs: &Tensor) -> Tensor {
    entropy(&probs.mean_dim(0, false, Kind::Float))
}

/// Entropy over the last axis (nats).
fn entropy(p: &Tensor) -> Tensor {
    -(p * p.clamp_min(1e-12).log()).sum_dim_intlist(-1, false, Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcgate::score::measures::NAMED;

    #[test]
    fn measures_serialise_by_name_and_sort_alphabetically() {
        let mut by_name = Measure::TABLE;
        by_name.sort_by_key(|m| m.name());
        let mut by_order = Measure::TABLE;
        by_order.sort();
        assert_eq!(by_name, by_order);
        for m in Measure::TABLE {
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.name())
            );
        }
        let map: std::collections::BTreeMap<Measure, u8> =
            Measure::TABLE.iter().map(|&m| (m, 0)).collect();
        assert_eq!(
            serde_json::to_string(&map).unwrap(),
            "{\"det_entropy\":0,\"expected_entropy\":0,\"mutual_information\":0,\
             \"predictive_entropy\":0,\"softmax_variance\":0,\"variation_ratio\":0}"
        );
    }

    #[test]
    fn the_mc_measures_are_the_runtimes_less_the_confidence() {
        let mut runtime: Vec<&str> = NAMED
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| *n != "max_probability")
            .collect();
        let mut mc: Vec<&str> = Measure::MC.iter().map(|m| m.name()).collect();
        runtime.sort();
        mc.sort();
        assert_eq!(
            mc, runtime,
            "a runtime measure is missing from the evaluation"
        );
        let m = per_image(&[0.5, 0.5, 1.0, 0.0], 2, 2).unwrap()[0];
        assert_eq!(
            Measure::MutualInformation.value(&m),
            Some(m.mutual_information)
        );
        assert_eq!(Measure::DetEntropy.value(&m), None);
    }

    #[test]
    fn per_image_scores_each_block() {
        let probs = [0.5, 0.5, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0];
        let m = per_image(&probs, 2, 2).unwrap();
        assert_eq!(m.len(), 2);
        assert!(m[0].mutual_information > 0.1 && m[1].mutual_information == 0.0);
        assert_eq!(m[1].predicted_class, 1);
        assert!(per_image(&probs, 3, 2).is_err());
    }
}
