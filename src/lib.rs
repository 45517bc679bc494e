//! mcgate: an adversarial-input gate for edge cameras.
//!
//! A frame's walk, one folder per stage, data flowing one way:
//! `input` (frame sources, preprocess) → `run` (masks, the plan: the hot path, run by an
//! `engine` — tract's, the only one that names tract) →
//! `score` (measures, verdict and reject reasons, ROC) → `output` (report lines, frame
//! writers, annotation, summary). `model` is translate time: load the ONNX file and its
//! card, check one against the other, build ONNX graphs. `gate` strings the stages together
//! for one frame (and a pool of gates for several cores); `session` is the gate loop with
//! its per-frame rules (alarm, write-before-verdict), assembled from a
//! `session::config::GateConfig` (the command line fills one), its outputs `output::Sink`s;
//! `validate` replays an eval bundle;
//! `calibrate` sets a model's threshold on the camera's own clean frames; `text` makes names
//! and labels safe to print, `panic` turns a caught panic into a value (leaves every layer
//! may use).
//!
//! The card schema, the ONNX builder, the measures and ROC/AUC are shared with the training
//! crate, which depends on this library, never the reverse.
#![warn(missing_docs)]

pub mod calibrate;
pub mod contract;
pub mod convert;
pub mod engine;
pub mod error;
pub mod files;
pub mod gate;
pub mod input;
pub mod model;
pub mod output;
pub mod panic;
pub mod run;
pub mod score;
pub mod session;
pub mod text;
pub mod validate;

pub use error::Error;
