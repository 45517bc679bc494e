//! mcgate-training: trains the MC-dropout models, attacks and evaluates them, and exports the
//! ONNX files and model cards the `mcgate` runtime loads (docs/model-format.md).
//!
//! The walk, each module using only those before it:
//! `plot` (font and PNG writing for every figure), `data` (IDX files, photos, image folders →
//! images, tensors) → `density` (class-conditional Gaussians on features, fitted in f64) →
//! `nets` (the `DropoutNet` trait; the paper's MNIST CNN,
//! EfficientNet-Lite0) → `features` (a frozen trunk's cached features) → `measures` (MC
//! probabilities → the runtime's measures) → `latent` (the 2-D VAE and the latent-space maps)
//! → `adversarial` (each training batch attacked: PGD, TRADES, fast FGSM) → `train` → `attack` → `eval` (scores by tch and through the runtime, matched noise, the
//! report, its Markdown and figures) → `redteam` (the gate attacked by an adversary who knows
//! it, every frame judged 8-bit through the runtime) → `export` (ONNX bytes, the card, files) → `bundle`
//! (frames for `mcgate validate`), `sample_frames` → `commands` (one function per CLI
//! subcommand).
//! Shared things (card schema, ONNX builder, measures, calibration) come from the `mcgate`
//! library.

pub mod adversarial;
pub mod attack;
pub mod bundle;
pub mod commands;
pub mod data;
pub mod density;
pub mod eval;
pub mod export;
pub mod features;
pub mod latent;
pub mod measures;
pub mod nets;
pub mod plot;
pub mod redteam;
pub mod sample_frames;
pub mod train;
