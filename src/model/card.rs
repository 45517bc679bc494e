//! The model card: the JSON file beside each ONNX model that tells the runtime how to feed it.
//!
//! This is the one definition of the schema; the training crate writes it with these types.
//! `docs/model-format.md` documents every field.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// The schema version this build reads and writes. Bump it on any incompatible change.
pub const SCHEMA: &str = "mcgate.card/1";

/// A model card: how to feed the ONNX file beside it, and what was measured of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// [`SCHEMA`].
    pub schema: String,
    /// The model's name, e.g. `mnist`.
    pub name: String,
    /// One label per output class, in output order.
    pub classes: Vec<String>,
    /// The image input.
    pub input: InputSpec,
    /// The mask inputs, one per dropout site.
    pub dropout_sites: Vec<DropoutSite>,
    /// The probabilities output.
    pub output: OutputSpec,
    /// Monte-Carlo samples T used when `--samples` is not given.
    pub default_samples: usize,
    /// The MI threshold above which frames are rejected.
    pub threshold: Threshold,
    /// Accuracy measured at export.
    pub metrics: Metrics,
    /// Lower-case hex SHA-256 of the ONNX file's bytes.
    pub onnx_sha256: String,
    /// How the model was trained.
    pub provenance: Provenance,
}

/// The image input and its normalisation.
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
    /// Per-channel mean, subtracted after scaling.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, divided by last.
    pub std: Vec<f32>,
}

impl InputSpec {
    /// C.
    pub fn channels(&self) -> usize {
        self.shape[1]
    }
    /// H.
    pub fn height(&self) -> usize {
        self.shape[2]
    }
    /// W.
    pub fn width(&self) -> usize {
        self.shape[3]
    }
    /// Values in one input, C·H·W.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// True when the input has no values (a valid card never).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One dropout site: a mask input the runtime fills each run.
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
    /// Values in one sample's mask.
    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The graph's one output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Graph output name, `probs`: softmax probabilities `[T, classes]`.
    pub name: String,
}

/// The gate's MI threshold and how it was chosen.
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

/// Test accuracy measured at export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Test accuracy with dropout off.
    pub test_accuracy_deterministic: f64,
    /// Test accuracy of the MC mean over `mc_samples` dropout samples.
    pub test_accuracy_mc: f64,
    /// T of the MC accuracy.
    pub mc_samples: usize,
    /// Test images measured.
    pub test_images: usize,
}

/// How the model was trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The training data, in words.
    pub dataset: String,
    /// Images trained on.
    pub train_images: usize,
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Optimiser and learning rate, in words.
    pub optimizer: String,
    /// Training seed.
    pub seed: u64,
    /// The device trained on.
    pub device: String,
    /// Training time.
    pub train_seconds: f64,
    /// `git describe --always --dirty` of the tree that trained the model.
    pub source_commit: String,
}

/// Where a model's two files live, from whatever the user typed: `models/mnist`,
/// `models/mnist.onnx` or `models/mnist.card.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPaths {
    /// `<stem>.onnx`.
    pub onnx: PathBuf,
    /// `<stem>.card.json`.
    pub card: PathBuf,
}

impl ModelPaths {
    /// The two paths for a stem or either file's path.
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

/// Why a card is not valid on its own; each variant renders as one line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CardError {
    /// The bytes are not JSON.
    #[error("not valid JSON: {0}")]
    Json(String),
    /// The `schema` field is missing.
    #[error("no \"schema\" field (expected {SCHEMA:?})")]
    NoSchema,
    /// The card is of another schema version.
    #[error("schema is {found:?}, this build reads {SCHEMA:?}")]
    Schema {
        /// The card's `schema`.
        found: String,
    },
    /// A field is missing, unknown, or of the wrong type (serde's words).
    #[error("{0}")]
    Fields(String),
    /// `classes` is empty.
    #[error("no classes")]
    NoClasses,
    /// `input.layout` is not NCHW.
    #[error("input layout {0:?} is not supported (NCHW only)")]
    Layout(String),
    /// `input.shape` is not `[1, C, H, W]` with positive C, H, W.
    #[error("input shape {0:?} must be [1, C, H, W] with C, H, W > 0")]
    InputShape([usize; 4]),
    /// The input has neither 1 nor 3 channels.
    #[error("input has {0} channels; 1 (gray) or 3 (RGB) supported")]
    Channels(usize),
    /// `mean` or `std` does not have one value per channel.
    #[error("input mean/std need one value per channel ({channels}), got {mean}/{std}")]
    MeanStdLength {
        /// Input channels.
        channels: usize,
        /// Values in `mean`.
        mean: usize,
        /// Values in `std`.
        std: usize,
    },
    /// `scale` or `std` is not finite and positive, or `mean` not finite.
    #[error("input scale/std must be finite and positive, mean finite")]
    Normalisation,
    /// No dropout sites.
    #[error("no dropout sites: MC dropout needs at least one")]
    NoSites,
    /// A site's p is outside [0, 1).
    #[error("dropout site {site}: p = {p} is outside [0, 1)")]
    SiteP {
        /// The site's input name.
        site: String,
        /// Its drop probability.
        p: f32,
    },
    /// A site's shape is empty or has a zero.
    #[error("dropout site {site}: empty shape {shape:?}")]
    SiteShape {
        /// The site's input name.
        site: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A site has the image input's name.
    #[error("dropout site {0} has the image input's name")]
    SiteIsImage(String),
    /// A site is listed twice.
    #[error("dropout site {0} is listed twice")]
    SiteTwice(String),
    /// `default_samples` is 0 or above [`MAX_SAMPLES`].
    #[error("default_samples {0} is outside 1..={MAX_SAMPLES}")]
    DefaultSamples(usize),
    /// The threshold is negative or not finite.
    #[error("threshold {0} must be finite and non-negative")]
    Threshold(f64),
    /// `onnx_sha256` is not 64 hex digits.
    #[error("onnx_sha256 is not 64 hex digits")]
    Sha256,
}

impl ModelCard {
    /// Reads and validates the card at `path`.
    pub fn read(path: &Path) -> Result<ModelCard, Error> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("read model card", path, e))?;
        Self::from_json(&bytes).map_err(|problem| Error::Card {
            path: path.to_owned(),
            problem,
        })
    }

    /// Parses and validates a card.
    pub fn from_json(bytes: &[u8]) -> Result<ModelCard, CardError> {
        // Read the version first so an old or future card gets a version error, not a
        // confusing field error.
        #[derive(Deserialize)]
        struct Version {
            schema: Option<String>,
        }
        let version: Version =
            serde_json::from_slice(bytes).map_err(|e| CardError::Json(e.to_string()))?;
        match version.schema {
            Some(s) if s == SCHEMA => {}
            Some(found) => return Err(CardError::Schema { found }),
            None => return Err(CardError::NoSchema),
        }
        let card: ModelCard =
            serde_json::from_slice(bytes).map_err(|e| CardError::Fields(e.to_string()))?;
        card.validate()?;
        Ok(card)
    }

    /// The card as pretty JSON with a final newline, as the training crate writes it.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a card always serialises") + "\n"
    }

    /// Checks the card on its own (the graph is checked against it at load time).
    pub fn validate(&self) -> Result<(), CardError> {
        if self.classes.is_empty() {
            return Err(CardError::NoClasses);
        }
        let i = &self.input;
        if i.layout != "NCHW" {
            return Err(CardError::Layout(i.layout.clone()));
        }
        if i.shape[0] != 1 || i.shape[1..].contains(&0) {
            return Err(CardError::InputShape(i.shape));
        }
        if !matches!(i.channels(), 1 | 3) {
            return Err(CardError::Channels(i.channels()));
        }
        if i.mean.len() != i.channels() || i.std.len() != i.channels() {
            return Err(CardError::MeanStdLength {
                channels: i.channels(),
                mean: i.mean.len(),
                std: i.std.len(),
            });
        }
        if !i.scale.is_finite()
            || i.scale <= 0.0
            || i.mean.iter().any(|m| !m.is_finite())
            || i.std.iter().any(|s| !s.is_finite() || *s <= 0.0)
        {
            return Err(CardError::Normalisation);
        }
        if self.dropout_sites.is_empty() {
            return Err(CardError::NoSites);
        }
        for site in &self.dropout_sites {
            if !(0.0..1.0).contains(&site.p) {
                return Err(CardError::SiteP {
                    site: site.input.clone(),
                    p: site.p,
                });
            }
            if site.shape.is_empty() || site.shape.contains(&0) {
                return Err(CardError::SiteShape {
                    site: site.input.clone(),
                    shape: site.shape.clone(),
                });
            }
            if site.input == i.name {
                return Err(CardError::SiteIsImage(site.input.clone()));
            }
        }
        for (a, site) in self.dropout_sites.iter().enumerate() {
            if self.dropout_sites[..a]
                .iter()
                .any(|s| s.input == site.input)
            {
                return Err(CardError::SiteTwice(site.input.clone()));
            }
        }
        if self.default_samples == 0 || self.default_samples > MAX_SAMPLES {
            return Err(CardError::DefaultSamples(self.default_samples));
        }
        let t = self.threshold.mutual_information;
        if !t.is_finite() || t < 0.0 {
            return Err(CardError::Threshold(t));
        }
        if self.onnx_sha256.len() != 64 || !self.onnx_sha256.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(CardError::Sha256);
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
pub(crate) mod tests {
    use super::*;

    #[test]
    fn long_floats_read_back_exactly() {
        // Found by the `card` fuzz target: with serde_json's default float parser, a threshold
        // written with 18 digits read back 1 ULP away after one round trip.
        let text = include_str!("../../models/mnist.card.json").replace(
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
        assert_eq!(
            err,
            CardError::Schema {
                found: "mcgate.card/0".into()
            }
        );
        assert!(err.to_string().contains("mcgate.card/0"), "{err}");
        let mut card = sample_card();
        card.dropout_sites[0].p = 1.0;
        let err = ModelCard::from_json(card.to_json().as_bytes()).unwrap_err();
        assert!(
            matches!(err, CardError::SiteP { p, .. } if p == 1.0),
            "{err}"
        );
        assert!(err.to_string().contains("outside [0, 1)"), "{err}");
        assert!(ModelCard::from_json(b"{")
            .unwrap_err()
            .to_string()
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
