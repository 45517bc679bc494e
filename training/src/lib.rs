//! mcgate-training: trains the MC-dropout models, evaluates them, and exports the ONNX
//! files and model cards the `mcgate` runtime loads (docs/model-format.md).
//!
//! data (IDX files) → net (tch model) → train → export (ONNX + card).
//! Shared things (card schema, measures, calibration) come from the `mcgate` library.

pub mod attack;
pub mod bundle;
pub mod data;
pub mod evaluate;
pub mod export;
pub mod int8;
pub mod net;
pub mod plots;
pub mod runtime;
pub mod samples;
pub mod train;
