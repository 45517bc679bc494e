//! What an evaluation found: the report written as JSON (`serde`), as Markdown (`markdown`)
//! and as figures (`figures`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};

use crate::attack::Target;
use crate::measures::Measure;

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub images: usize,
    /// T, per member for an ensemble.
    pub samples: i64,
    /// Networks whose samples are pooled (1, or an ensemble's members).
    pub members: usize,
    pub seed: u64,
    pub labels: String,
    pub mc_loss: String,
    pub clean_accuracy_deterministic: f64,
    pub clean_accuracy_mc: f64,
    /// Which images were attacked, in words.
    pub attacked: String,
    /// The network the attacks were crafted on, in words.
    pub crafted_on: String,
    /// Clean negatives (the attacked images and any extra clean ones).
    pub clean_negatives: usize,
    pub threshold: f64,
    pub clean_fpr_at_threshold: f64,
    /// The exported models' clean results (`--runtime`).
    #[serde(rename = "runtime", skip_serializing_if = "Vec::is_empty")]
    pub exported: Vec<ExportedClean>,
    pub rows: Vec<Row>,
}

/// One attack: its detection by every measure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub target: AttackedModel,
    pub method: String,
    pub eps_255: f64,
    pub images: usize,
    /// Fraction of adversarial images whose prediction differs from the true label.
    pub success_rate: f64,
    /// Per measure, against clean + noise negatives, all adversarials.
    pub all: BTreeMap<Measure, Detection>,
    /// The same on successful adversarials only.
    pub successful: BTreeMap<Measure, Detection>,
    /// Per measure, all adversarials against the clean negatives alone (no noise).
    pub clean_only: BTreeMap<Measure, Detection>,
    /// AUC of MI minus AUC of each entropy (deterministic, MC) on all adversarials against
    /// clean + noise negatives, with a paired bootstrap interval: which orderings hold.
    pub mi_minus: BTreeMap<Measure, Difference>,
    /// The same on successful adversarials only.
    pub mi_minus_successful: BTreeMap<Measure, Difference>,
    /// Fraction of adversarials (all, successful) the card's MI threshold rejects.
    pub tpr_at_threshold: f64,
    pub tpr_at_threshold_successful: f64,
    /// Fraction of the noise negatives the threshold rejects.
    pub noise_fpr_at_threshold: f64,
    /// Per measure, the curves behind `all`.
    #[serde(skip)]
    pub curves: BTreeMap<Measure, Curves>,
    /// Per exported model (`--runtime`), by name: MI detection of the same images scored
    /// through the runtime.
    #[serde(rename = "runtime", skip_serializing_if = "BTreeMap::is_empty")]
    pub exported: BTreeMap<String, ExportedDetection>,
}

/// The model an attack differentiated, as the report names it: `deterministic`, `mc` (loss
/// of the MC mean or EOT) or `adaptive λ=<λ>`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttackedModel {
    Deterministic,
    Mc,
    Adaptive { lambda: f64 },
}

impl AttackedModel {
    /// The figure family of its rows.
    pub fn family(self) -> &'static str {
        match self {
            AttackedModel::Deterministic => "deterministic",
            AttackedModel::Mc => "mc",
            AttackedModel::Adaptive { .. } => "adaptive",
        }
    }
}

impl From<Target> for AttackedModel {
    fn from(target: Target) -> Self {
        match target {
            Target::Deterministic => AttackedModel::Deterministic,
            Target::McMean { .. } | Target::McEot { .. } => AttackedModel::Mc,
            Target::Adaptive { lambda, .. } => AttackedModel::Adaptive { lambda },
        }
    }
}

impl fmt::Display for AttackedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttackedModel::Adaptive { lambda } => write!(f, "adaptive λ={lambda}"),
            other => f.write_str(other.family()),
        }
    }
}

/// As its text (`"adaptive λ=0.2"`).
impl Serialize for AttackedModel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A difference of two measures' AUCs on the same frames, with its 95 % paired bootstrap
/// interval when computed.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Difference {
    pub auc_difference: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<(f64, f64)>,
}

impl Difference {
    /// "+0.012 [−0.004, +0.031]", with `*` when the interval excludes 0.
    pub fn text(&self) -> String {
        let sign = |v: f64| format!("{v:+.3}");
        match self.interval {
            Some((lo, hi)) => format!(
                "{} [{}, {}]{}",
                sign(self.auc_difference),
                sign(lo),
                sign(hi),
                if lo > 0.0 || hi < 0.0 { " *" } else { "" }
            ),
            None if self.auc_difference.is_nan() => "–".into(),
            None => sign(self.auc_difference),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    pub auc: f64,
    pub ap: f64,
    /// 95 % bootstrap interval of `auc` (image groups resampled), when computed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auc_interval: Option<(f64, f64)>,
}

impl Detection {
    /// ROC AUC and average precision of `pos` against `neg` (NaN where undefined).
    pub fn of(neg: &[f64], pos: &[f64]) -> Detection {
        Detection {
            auc: mcgate::score::roc::roc_auc(neg, pos).unwrap_or(f64::NAN),
            ap: mcgate::score::roc::average_precision(neg, pos).unwrap_or(f64::NAN),
            auc_interval: None,
        }
    }

    pub fn with_interval(mut self, interval: Option<(f64, f64)>) -> Detection {
        self.auc_interval = interval;
        self
    }
}

/// Exact ROC and precision–recall points of one measure, for the figures (not in the JSON).
#[derive(Debug, Clone, Default)]
pub struct Curves {
    pub roc: Vec<(f64, f64)>,
    pub pr: Vec<(f64, f64)>,
}

/// MI detection by an exported model run through `mcgate` (tract), on the images the tch
/// model's attack produced; "successful" is the attacked tch model's success.
#[derive(Debug, Clone, Serialize)]
pub struct ExportedDetection {
    pub mi: Detection,
    pub mi_successful: Detection,
    /// Fractions the model card's own MI threshold rejects.
    pub tpr_at_threshold_successful: f64,
    pub noise_fpr_at_threshold: f64,
}

/// An exported model's clean results on the evaluation images, through the runtime.
#[derive(Debug, Clone, Serialize)]
pub struct ExportedClean {
    pub name: String,
    pub threshold: f64,
    pub clean_accuracy_deterministic: f64,
    pub clean_accuracy_mc: f64,
    pub clean_fpr_at_threshold: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attacked_models_are_named_as_before() {
        let names: Vec<String> = [
            Target::Deterministic,
            Target::McMean { samples: 20 },
            Target::McEot { samples: 20 },
            Target::Adaptive {
                samples: 20,
                lambda: 0.2,
            },
            Target::Adaptive {
                samples: 20,
                lambda: 1.0,
            },
        ]
        .into_iter()
        .map(|t| serde_json::to_string(&AttackedModel::from(t)).unwrap())
        .collect();
        assert_eq!(
            names,
            [
                "\"deterministic\"",
                "\"mc\"",
                "\"mc\"",
                "\"adaptive λ=0.2\"",
                "\"adaptive λ=1\""
            ]
        );
    }
}
