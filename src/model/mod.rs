//! Translate time: read a model's ONNX file and card, have the engine check one against the
//! other, and keep the engine's graph that [`Plan`](crate::run::plan::Plan)s are built from.
//! Nothing here runs per frame. The files' formats are the `contract`'s; `rewrite` is the
//! converter's graph rewrite (any classifier → the mask-input contract).

pub mod rewrite;
mod summary;

use std::path::{Path, PathBuf};

use crate::contract::card::{self, CardError, ModelCard, ModelPaths};
use crate::engine::tract::{ReadError, TractGraph};
use crate::engine::{Engine, Graph, OrtOptions, SitePath};
pub use crate::engine::{GraphSummary, MismatchError, ModelError};

/// The name that selects the model compiled into the binary.
pub const BUILTIN: &str = "builtin:mnist";

/// Why a model cannot be loaded: the model layer's one error (each variant one line).
// Causes are fields, not `source`s: the message already carries the cause, and a source
// would be printed twice by the `{:#}` chains of the training commands.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file the command needs could not be read.
    #[error("cannot {what} {}: {cause}", path.display())]
    Io {
        /// What was being done, e.g. "read model".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        cause: std::io::Error,
    },
    /// The model card is not valid on its own.
    #[error("model card {}: {problem}", path.display())]
    Card {
        /// The card file (or `builtin:mnist`).
        path: PathBuf,
        /// What is wrong with it.
        problem: CardError,
    },
    /// The ONNX file cannot be loaded or planned.
    #[error("model {}: {problem}", path.display())]
    Model {
        /// The ONNX file (or the card's model name when planning).
        path: PathBuf,
        /// What went wrong.
        problem: ModelError,
    },
    /// The ONNX file is not the one its card describes.
    #[error("model {} does not match its card: {problem}", path.display())]
    Mismatch {
        /// The ONNX file, or the bundle scored with another model.
        path: PathBuf,
        /// What differs.
        problem: MismatchError,
    },
    /// The model card is not the one the operator pinned (`gate --card-sha256`).
    #[error(
        "model card {} has SHA-256 {found}, not the pinned {pinned}: the model changed since \
         it was pinned (`mcgate info` prints a card's digest)",
        path.display()
    )]
    Unpinned {
        /// The card file (or `builtin:mnist`).
        path: PathBuf,
        /// The card's digest.
        found: String,
        /// The digest given.
        pinned: String,
    },
}

impl LoadError {
    /// An I/O error on `path` while doing `what`.
    pub fn io(what: &'static str, path: &Path, cause: std::io::Error) -> LoadError {
        LoadError::Io {
            what,
            path: path.to_owned(),
            cause,
        }
    }
}

impl ModelCard {
    /// Reads and validates the card at `path`.
    pub fn read(path: &Path) -> Result<ModelCard, LoadError> {
        Self::read_with_sha256(path).map(|(card, _)| card)
    }

    /// Reads and validates the card at `path`, with the SHA-256 of the bytes it was parsed
    /// from (what `gate --card-sha256` pins).
    pub fn read_with_sha256(path: &Path) -> Result<(ModelCard, String), LoadError> {
        let bytes = crate::files::read_bounded(path, crate::files::MAX_CARD_BYTES)
            .map_err(|e| LoadError::io("read model card", path, e))?;
        let card = Self::from_json(&bytes).map_err(|problem| LoadError::Card {
            path: path.to_owned(),
            problem,
        })?;
        // The fused decision's level is made from the calibration values: one that cannot be
        // made is a card the gate refuses now, not a gate that falls back to MI.
        if let Some(fused) = &card.fusion {
            crate::score::fusion::FusedGate::new(fused, None).map_err(|e| LoadError::Card {
                path: path.to_owned(),
                problem: CardError::Fusion(e.to_string()),
            })?;
        }
        Ok((card, card::sha256_hex(&bytes)))
    }
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
    graph: Box<dyn Graph>,
}

impl Model {
    /// Reads `<stem>.onnx` and `<stem>.card.json`, checks the card's SHA-256 of the ONNX
    /// bytes, and checks that the graph's inputs and output are the ones the card describes.
    pub fn load(paths: &ModelPaths) -> Result<Model, LoadError> {
        Self::load_with(paths, &Engine::Tract)
    }

    /// [`Model::load`] with the plans run by `engine` (tract still reads and checks the
    /// graph).
    pub fn load_with(paths: &ModelPaths, engine: &Engine) -> Result<Model, LoadError> {
        let (card, card_sha256) = ModelCard::read_with_sha256(&paths.card)?;
        let bytes = crate::files::read_bounded(&paths.onnx, crate::files::MAX_ONNX_BYTES)
            .map_err(|e| LoadError::io("read model", &paths.onnx, e))?;
        let model = Self::from_parts_with(card, &bytes, &paths.onnx, engine)?;
        Ok(Model {
            card_sha256: Some(card_sha256),
            ..model
        })
    }

    /// Checks `onnx` (named `path` in errors) against `card` and prepares it.
    pub fn from_parts(card: ModelCard, onnx: &[u8], path: &Path) -> Result<Model, LoadError> {
        Self::from_parts_with(card, onnx, path, &Engine::Tract)
    }

    /// [`Model::from_parts`] with the plans run by `engine`.
    pub fn from_parts_with(
        card: ModelCard,
        onnx: &[u8],
        path: &Path,
        engine: &Engine,
    ) -> Result<Model, LoadError> {
        let mismatch = |problem| LoadError::Mismatch {
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
        let (graph, summary) = TractGraph::read(onnx, &card).map_err(|e| match e {
            ReadError::Model(problem) => LoadError::Model {
                path: path.to_owned(),
                problem,
            },
            ReadError::Mismatch(problem) => mismatch(problem),
        })?;
        let graph: Box<dyn Graph> = match engine {
            Engine::Tract => Box::new(graph),
            Engine::Ort(options) => {
                ort_graph(onnx, options).map_err(|problem| LoadError::Model {
                    path: path.to_owned(),
                    problem: ModelError::Engine {
                        engine: "onnxruntime",
                        problem,
                    },
                })?
            }
        };
        Ok(Model {
            card,
            summary,
            card_sha256: None,
            graph,
        })
    }

    /// Loads the model a user named: a stem or file path, or `builtin:mnist`, the shipped
    /// MNIST model compiled into the binary (feature `builtin-model`, on by default).
    pub fn load_from(arg: &Path) -> Result<Model, LoadError> {
        Self::load_from_with(arg, &Engine::Tract)
    }

    /// [`Model::load_from`] with the plans run by `engine`.
    pub fn load_from_with(arg: &Path, engine: &Engine) -> Result<Model, LoadError> {
        if arg.as_os_str() == BUILTIN {
            return Self::builtin(arg, engine);
        }
        Self::load_with(&ModelPaths::resolve(arg), engine)
    }

    #[cfg(feature = "builtin-model")]
    fn builtin(arg: &Path, engine: &Engine) -> Result<Model, LoadError> {
        let card_bytes = include_bytes!("../../models/mnist.card.json");
        let card = ModelCard::from_json(card_bytes).map_err(|problem| LoadError::Card {
            path: arg.to_owned(),
            problem,
        })?;
        let model =
            Self::from_parts_with(card, include_bytes!("../../models/mnist.onnx"), arg, engine)?;
        Ok(Model {
            card_sha256: Some(card::sha256_hex(card_bytes)),
            ..model
        })
    }

    #[cfg(not(feature = "builtin-model"))]
    fn builtin(arg: &Path, _engine: &Engine) -> Result<Model, LoadError> {
        Err(LoadError::Model {
            path: arg.to_owned(),
            problem: ModelError::NoBuiltin,
        })
    }

    /// Refuses this model unless its card's SHA-256 is `pinned` (lower-case hex): the model
    /// named `model_arg` changed since the operator pinned it (`gate --card-sha256`).
    pub fn check_pin(&self, model_arg: &Path, pinned: &str) -> Result<(), LoadError> {
        let found = self.card_sha256.clone().unwrap_or_default();
        if found == pinned {
            return Ok(());
        }
        let path = if model_arg.as_os_str() == BUILTIN {
            model_arg.to_owned()
        } else {
            ModelPaths::resolve(model_arg).card
        };
        Err(LoadError::Unpinned {
            path,
            found,
            pinned: pinned.to_owned(),
        })
    }

    /// The engine's checked graph, that plans are made from.
    pub fn graph(&self) -> &dyn Graph {
        self.graph.as_ref()
    }

    /// How the plan runs each dropout site (card order): as a sparse difference or in the
    /// plain plan, and why.
    pub fn site_paths(&self) -> Vec<SitePath> {
        self.graph.site_paths(&self.card)
    }
}

/// The ort engine's graph of `onnx`.
#[cfg(feature = "ort")]
fn ort_graph(onnx: &[u8], options: &OrtOptions) -> Result<Box<dyn Graph>, String> {
    Ok(Box::new(crate::engine::onnxruntime::OrtGraph::new(
        onnx, options,
    )?))
}

/// Without the feature: refused ([`Engine::ready`] says so before any model is read).
#[cfg(not(feature = "ort"))]
fn ort_graph(_onnx: &[u8], _options: &OrtOptions) -> Result<Box<dyn Graph>, String> {
    Err("this build has no ort engine (feature ort)".into())
}
