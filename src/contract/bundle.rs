//! The eval bundle manifest: frames with the workstation's scores, written by the training
//! crate and replayed by `mcgate validate` (docs/model-format.md documents it).

use serde::{Deserialize, Serialize};

/// The manifest schema version this build reads and writes.
pub const BUNDLE_SCHEMA: &str = "mcgate.bundle/1";

/// Whether a group's frames should be accepted or rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Clean or noise frames: the gate should accept them.
    Negative,
    /// Adversarial frames: the gate should reject them.
    Positive,
}

/// A set of frames made the same way (clean, one attack, or its matched noise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// The group's name, e.g. `fgm_eps25.5`.
    pub name: String,
    /// Accept or reject.
    pub role: Role,
    /// For a noise group: the attack group whose perturbation norm it matches.
    pub paired_with: Option<String>,
    /// The attack method, for attack groups.
    pub method: Option<String>,
    /// The attack's L∞ budget on the 0–255 scale.
    pub eps_255: Option<f64>,
}

/// One frame of a bundle and the workstation's results on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleFrame {
    /// Path relative to the bundle directory.
    pub file: String,
    /// The group it belongs to.
    pub group: String,
    /// True label.
    pub label: usize,
    /// The class the workstation predicted.
    pub workstation_class: usize,
    /// The workstation's MI in each of `Manifest::repeats` independent MC runs.
    pub workstation_mutual_information: Vec<f64>,
}

/// A bundle's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`BUNDLE_SCHEMA`].
    pub schema: String,
    /// The ONNX file the workstation scores belong to.
    pub onnx_sha256: String,
    /// Monte-Carlo samples T the workstation used.
    pub samples: usize,
    /// Independent MC runs scored per frame. One run's MI is noisy (heavy-tailed at low
    /// values), so the AUC of a single run varies by a few hundredths between runs; both
    /// sides compare the *mean* single-run AUC over this many runs.
    pub repeats: usize,
    /// The card's MI threshold when the bundle was written.
    pub threshold: f64,
    /// The workstation's seed.
    pub seed: u64,
    /// The frame groups.
    pub groups: Vec<Group>,
    /// The frames, in order.
    pub frames: Vec<BundleFrame>,
}
