//! Translate time: read a model's ONNX file and card, check them against each other, and
//! keep the typed graph that [`Plan`](crate::run::plan::Plan)s are built from. Nothing here
//! runs per frame.
//!
//! `card` is the model contract shared with the training crate (docs/model-format.md);
//! `onnx` is the one ONNX graph builder (training exports, tests, the converter).

pub mod card;
mod check;
pub mod onnx;
pub mod rewrite;
pub mod split;
mod summary;

use std::path::Path;

use tract_onnx::prelude::*;

use crate::error::{one_line, Error};
use card::{ModelCard, ModelPaths};
pub use check::MismatchError;
pub use summary::GraphSummary;

/// The name that selects the model compiled into the binary.
pub const BUILTIN: &str = "builtin:mnist";

/// The dimension name the contract gives the Monte-Carlo sample axis of masks and output.
pub const SAMPLE_DIM: &str = "T";

/// Why an ONNX file cannot be used, apart from not matching its card.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// tract cannot parse the file.
    #[error("not a loadable ONNX model: {0}")]
    NotOnnx(String),
    /// tract cannot infer the graph's types and shapes.
    #[error("cannot infer types and shapes: {0}")]
    Types(String),
    /// The graph's inputs or outputs cannot be read.
    #[error("cannot read graph: {0}")]
    Graph(String),
    /// tract cannot optimise the graph into a runnable plan.
    #[error("cannot build plan: {0}")]
    Plan(String),
    /// `builtin:mnist` was asked of a build without it.
    #[error("this build has no built-in model (feature builtin-model is off)")]
    NoBuiltin,
}

/// A model checked against its card: what a plan is built from.
pub struct Model {
    /// The card, validated.
    pub card: ModelCard,
    /// What the graph declares, for `mcgate info`.
    pub summary: GraphSummary,
    /// The SHA-256 of the card file's bytes, when the model was loaded from files or is the
    /// built-in one (none for a model put together in memory): what `gate --card-sha256` pins.
    /// The card holds the ONNX file's SHA-256, so this one digest pins the whole model.
    pub card_sha256: Option<String>,
    typed: TypedModel,
}

impl Model {
    /// Reads `<stem>.onnx` and `<stem>.card.json`, checks the card's SHA-256 of the ONNX
    /// bytes, and checks that the graph's inputs and output are the ones the card describes.
    pub fn load(paths: &ModelPaths) -> Result<Model, Error> {
        let (card, card_sha256) = ModelCard::read_with_sha256(&paths.card)?;
        let bytes = crate::files::read_bounded(&paths.onnx, crate::files::MAX_ONNX_BYTES)
            .map_err(|e| Error::io("read model", &paths.onnx, e))?;
        let model = Self::from_parts(card, &bytes, &paths.onnx)?;
        Ok(Model {
            card_sha256: Some(card_sha256),
            ..model
        })
    }

    /// Checks `onnx` (named `path` in errors) against `card` and prepares it.
    pub fn from_parts(card: ModelCard, onnx: &[u8], path: &Path) -> Result<Model, Error> {
        let mismatch = |problem| Error::Mismatch {
            path: path.to_owned(),
            problem,
        };
        let digest = card::sha256_hex(onnx);
        if digest != card.onnx_sha256.to_ascii_lowercase() {
            return Err(mismatch(MismatchError::Sha256 {
                file: digest,
                card: card.onnx_sha256.clone(),
            }));
        }
        let model_error = |problem| Error::Model {
            path: path.to_owned(),
            problem,
        };
        let inference = tract_onnx::onnx()
            .model_for_read(&mut &onnx[..])
            .map_err(|e| model_error(ModelError::NotOnnx(one_line(&e))))?;
        let typed = inference
            .into_typed()
            .map_err(|e| model_error(ModelError::Types(one_line(&e))))?;
        let summary =
            GraphSummary::of(&typed).map_err(|e| model_error(ModelError::Graph(one_line(&e))))?;
        check::against_card(&typed, &card).map_err(mismatch)?;
        Ok(Model {
            card,
            summary,
            card_sha256: None,
            typed,
        })
    }

    /// Loads the model a user named: a stem or file path, or `builtin:mnist`, the shipped
    /// MNIST model compiled into the binary (feature `builtin-model`, on by default).
    pub fn load_from(arg: &Path) -> Result<Model, Error> {
        if arg.as_os_str() == BUILTIN {
            return Self::builtin(arg);
        }
        Self::load(&ModelPaths::resolve(arg))
    }

    #[cfg(feature = "builtin-model")]
    fn builtin(arg: &Path) -> Result<Model, Error> {
        let card_bytes = include_bytes!("../../models/mnist.card.json");
        let card = ModelCard::from_json(card_bytes).map_err(|problem| Error::Card {
            path: arg.to_owned(),
            problem,
        })?;
        let model = Self::from_parts(card, include_bytes!("../../models/mnist.onnx"), arg)?;
        Ok(Model {
            card_sha256: Some(card::sha256_hex(card_bytes)),
            ..model
        })
    }

    #[cfg(not(feature = "builtin-model"))]
    fn builtin(arg: &Path) -> Result<Model, Error> {
        Err(Error::Model {
            path: arg.to_owned(),
            problem: ModelError::NoBuiltin,
        })
    }

    /// Refuses this model unless its card's SHA-256 is `pinned` (lower-case hex): the model
    /// named `model_arg` changed since the operator pinned it (`gate --card-sha256`).
    pub fn check_pin(&self, model_arg: &Path, pinned: &str) -> Result<(), Error> {
        let found = self.card_sha256.clone().unwrap_or_default();
        if found == pinned {
            return Ok(());
        }
        let path = if model_arg.as_os_str() == BUILTIN {
            model_arg.to_owned()
        } else {
            ModelPaths::resolve(model_arg).card
        };
        Err(Error::Unpinned {
            path,
            found,
            pinned: pinned.to_owned(),
        })
    }

    /// The checked, typed graph (not yet optimised).
    pub fn typed(&self) -> &TypedModel {
        &self.typed
    }

    /// How the plan runs each dropout site (card order): as a sparse difference or in the
    /// plain plan, and why.
    pub fn site_paths(&self) -> Vec<split::SitePath> {
        split::site_paths(&self.typed, &self.card)
    }
}

/// `[a, b, T]` as text.
fn dims_to_string(dims: &[TDim]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}
