//! The contract between the training crate and the runtime, in one place: what a model's files
//! and an eval bundle's manifest hold, and how ONNX graphs are written. The training crate
//! writes these with the same types the runtime reads them with (docs/model-format.md).
//!
//! - `card`: the model card schema and its versions (the JSON beside each ONNX model);
//! - `onnx`: the one ONNX graph builder (training exports, the converter, tests);
//! - `pb`: ONNX's protobuf messages (generated prost types);
//! - `bundle`: the eval bundle manifest `mcgate validate` replays.

pub mod bundle;
pub mod card;
pub mod onnx;
pub mod pb;
