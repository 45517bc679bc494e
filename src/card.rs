//! The model card: the JSON file beside each ONNX model that tells the runtime how to feed it.
//!
//! This is the one definition of the schema; the training crate writes it with these types.
//! `docs/model-format.md` documents every field.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// The schema version this build reads and writes. Bump it on any incompatible change.
pub const SCHEMA: &str = "mcgate.card/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    pub schema: String,
    pub name: String,
    /// One label per output class, in output order.
    pub classes: Vec<String>,
    pub input: InputSpec,
    pub dropout_sites: Vec<DropoutSite>,
    pub output: OutputSpec,
    /// Monte-Carlo samples T used when `--samples` is not given.
    pub default_samples: usize,
    pub threshold: Threshold,
    pub metrics: Metrics,
    /// Lower-case hex SHA-256 of the ONNX file's bytes.
    pub onnx_sha256: String,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Graph input name, `x` in this contract.
    pub name: String,
    /// `[1, C, H, W]`.
    pub shape: [usize; 4],
    /// Always `NCHW` in schema 1.
    pub layout: String,
    /// Model input value = (pixel * scale - mean[c]) / std[c], pixels in 0..=255.
    pub scale: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl InputSpec {
    pub fn channels(&self) -> usize {
        self.shape[1]
    }
    pub fn height(&self) -> usize {
        self.shape[2]
    }
    pub fn width(&self) -> usize {
        self.shape[3]
    }
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropoutSite {
    /// Graph input carrying this site's mask, e.g. `mask_0`; its shape is `[T, ..shape]`.
    pub input: String,
    /// Drop probability: mask values are 0 with probability p, else 1/(1-p).
    pub p: f32,
    /// Shape of one sample's mask (without the leading T).
    pub shape: Vec<usize>,
}

impl DropoutSite {
    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Graph output name, `probs`: softmax probabilities `[T, classes]`.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Frames whose mutual information (nats) is above this are rejected.
    pub mutual_information: f64,
    /// How the value was chosen, in words.
    pub method: String,
    /// Target clean false-positive rate the value was chosen for, if any.
    pub target_fpr: Option<f64>,
    /// True until the value has been checked against attacks (see docs/RESULTS.md).
    pub provisional: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Test accuracy with dropout off.
    pub test_accuracy_deterministic: f64,
    /// Test accuracy of the MC mean over `mc_samples` dropout samples.
    pub test_accuracy_mc: f64,
    pub mc_samples: usize,
    pub test_images: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    pub dataset: String,
    pub train_images: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: String,
    pub seed: u64,
    pub device: String,
    pub train_seconds: f64,
    /// `git describe --always --dirty` of the tree that trained the model.
    pub source_commit: String,
}

/// Where a model's two files live, from whatever the user typed: `models/mnist`,
/// `models/mnist.onnx` or `models/mnist.card.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPaths {
    pub onnx: PathBuf,
    pub card: PathBuf,
}

impl ModelPaths {
    pub fn resolve(arg: &Path) -> ModelPaths {
        let s = arg.to_string_lossy();
        let stem = if let Some(stem) = s.strip_suffix(".card.json") {
            stem.to_string()
        } else if let Some(stem) = s.strip_suffix(".onnx") {
            stem.to_string()
        } else {
            s.to_string()
        };
        ModelPaths {
            onnx: PathBuf::from(format!("{stem}.onnx")),
            card: PathBuf::from(format!("{stem}.card.json")),
        }
    }
}

/// Largest T accepted: far beyond any useful value, small enough that masks fit in memory.
pub const MAX_SAMPLES: usize = 4096;

impl ModelCard {
    pub fn read(path: &Path) -> Result<ModelCard, Error> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("read model card", path, e))?;
        Self::from_json(&bytes).map_err(|reason| Error::Card {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses and validates a card; the error is a one-line reason.
    pub fn from_json(bytes: &[u8]) -> Result<ModelCard, String> {
        // Read the version first so an old or future card gets a version error, not a
        // confusing field error.
        #[derive(Deserialize)]
        struct Version {
            schema: Option<String>,
        }
        let version: Version =
            serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
        match version.schema.as_deref() {
            Some(SCHEMA) => {}
            Some(other) => return Err(format!("schema is {other:?}, this build reads {SCHEMA:?}")),
            None => return Err(format!("no \"schema\" field (expected {SCHEMA:?})")),
        }
        let card: ModelCard = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        card.validate()?;
        Ok(card)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a card always serialises") + "\n"
    }

    /// Checks the card on its own (the graph is checked against it at load time).
    pub fn validate(&self) -> Result<(), String> {
        if self.classes.is_empty() {
            return Err("no classes".into());
        }
        let i = &self.input;
        if i.layout != "NCHW" {
            return Err(format!(
                "input layout {:?} is not supported (NCHW only)",
                i.layout
            ));
        }
        if i.shape[0] != 1 || i.shape[1..].contains(&0) {
            return Err(format!(
                "input shape {:?} must be [1, C, H, W] with C, H, W > 0",
                i.shape
            ));
        }
        if !matches!(i.channels(), 1 | 3) {
            return Err(format!(
                "input has {} channels; 1 (gray) or 3 (RGB) supported",
                i.channels()
            ));
        }
        if i.mean.len() != i.channels() || i.std.len() != i.channels() {
            return Err(format!(
                "input mean/std need one value per channel ({}), got {}/{}",
                i.channels(),
                i.mean.len(),
                i.std.len()
            ));
        }
        if !i.scale.is_finite()
            || i.scale <= 0.0
            || i.mean.iter().any(|m| !m.is_finite())
            || i.std.iter().any(|s| !s.is_finite() || *s <= 0.0)
        {
            return Err("input scale/std must be finite and positive, mean finite".into());
        }
        if self.dropout_sites.is_empty() {
            return Err("no dropout sites: MC dropout needs at least one".into());
        }
        for site in &self.dropout_sites {
            if !(0.0..1.0).contains(&site.p) {
                return Err(format!(
                    "dropout site {}: p = {} is outside [0, 1)",
                    site.input, site.p
                ));
            }
            if site.shape.is_empty() || site.shape.contains(&0) {
                return Err(format!(
                    "dropout site {}: empty shape {:?}",
                    site.input, site.shape
                ));
            }
            if site.input == i.name {
                return Err(format!(
                    "dropout site {} has the image input's name",
                    site.input
                ));
            }
        }
        for (a, site) in self.dropout_sites.iter().enumerate() {
            if self.dropout_sites[..a]
                .iter()
                .any(|s| s.input == site.input)
            {
                return Err(format!("dropout site {} is listed twice", site.input));
            }
        }
        if self.default_samples == 0 || self.default_samples > MAX_SAMPLES {
            return Err(format!(
                "default_samples {} is outside 1..={MAX_SAMPLES}",
                self.default_samples
            ));
        }
        let t = self.threshold.mutual_information;
        if !t.is_finite() || t < 0.0 {
            return Err(format!("threshold {t} must be finite and non-negative"));
        }
        if self.onnx_sha256.len() != 64 || !self.onnx_sha256.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err("onnx_sha256 is not 64 hex digits".into());
        }
        Ok(())
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_floats_read_back_exactly() {
        // Found by the `card` fuzz target: with serde_json's default float parser, a threshold
        // written with 18 digits read back 1 ULP away after one round trip.
        let text = include_str!("../models/mnist.card.json").replace(
            "\"mutual_information\": 0.11344639163348419",
            "\"mutual_information\": 0.113446391633484192",
        );
        assert!(text.contains("0.113446391633484192"));
        let card = ModelCard::from_json(text.as_bytes()).unwrap();
        let again = ModelCard::from_json(card.to_json().as_bytes()).unwrap();
        assert_eq!(
            again.threshold.mutual_information.to_bits(),
            card.threshold.mutual_information.to_bits()
        );
        assert_eq!(again.to_json(), card.to_json());
    }

    pub(crate) fn sample_card() -> ModelCard {
        ModelCard {
            schema: SCHEMA.into(),
            name: "t".into(),
            classes: vec!["a".into(), "b".into()],
            input: InputSpec {
                name: "x".into(),
                shape: [1, 1, 4, 4],
                layout: "NCHW".into(),
                scale: 1.0 / 255.0,
                mean: vec![0.0],
                std: vec![1.0],
            },
            dropout_sites: vec![DropoutSite {
                input: "mask_0".into(),
                p: 0.5,
                shape: vec![3],
            }],
            output: OutputSpec {
                name: "probs".into(),
            },
            default_samples: 20,
            threshold: Threshold {
                mutual_information: 0.1,
                method: "test".into(),
                target_fpr: None,
                provisional: true,
            },
            metrics: Metrics {
                test_accuracy_deterministic: 0.0,
                test_accuracy_mc: 0.0,
                mc_samples: 20,
                test_images: 0,
            },
            onnx_sha256: "0".repeat(64),
            provenance: Provenance {
                dataset: "none".into(),
                train_images: 0,
                epochs: 0,
                batch_size: 0,
                optimizer: "none".into(),
                seed: 0,
                device: "cpu".into(),
                train_seconds: 0.0,
                source_commit: "none".into(),
            },
        }
    }

    #[test]
    fn round_trips_through_json() {
        let card = sample_card();
        assert_eq!(
            ModelCard::from_json(card.to_json().as_bytes()).unwrap(),
            card
        );
    }

    #[test]
    fn rejects_wrong_schema_and_bad_p() {
        let mut card = sample_card();
        card.schema = "mcgate.card/0".into();
        let err = ModelCard::from_json(card.to_json().as_bytes()).unwrap_err();
        assert!(err.contains("mcgate.card/0"), "{err}");
        let mut card = sample_card();
        card.dropout_sites[0].p = 1.0;
        let err = ModelCard::from_json(card.to_json().as_bytes()).unwrap_err();
        assert!(err.contains("outside [0, 1)"), "{err}");
        assert!(ModelCard::from_json(b"{")
            .unwrap_err()
            .contains("not valid JSON"));
    }

    #[test]
    fn resolves_model_paths() {
        let want = ModelPaths {
            onnx: "m/a.onnx".into(),
            card: "m/a.card.json".into(),
        };
        for arg in ["m/a", "m/a.onnx", "m/a.card.json"] {
            assert_eq!(ModelPaths::resolve(Path::new(arg)), want);
        }
    }
}
