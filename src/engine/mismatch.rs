//! How a graph differs from its card: what any engine's check reports, in one line each.

use crate::contract::card::SAMPLE_DIM;

/// How a graph differs from its card; each variant renders as one line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MismatchError {
    /// The file's SHA-256 is not the card's.
    #[error("SHA-256 is {file}, the card says {card} (wrong file, or the card is stale)")]
    Sha256 {
        /// The file's digest.
        file: String,
        /// The card's `onnx_sha256`.
        card: String,
    },
    /// The bundle was scored with another model.
    #[error("the bundle was scored with ONNX {bundle}, this model is {model}")]
    BundleModel {
        /// The bundle's `onnx_sha256`.
        bundle: String,
        /// The model card's.
        model: String,
    },
    /// Inputs the card names are not in the graph.
    #[error("graph has no input named {}", .0.join(", "))]
    MissingInputs(Vec<String>),
    /// Graph inputs the card does not name.
    #[error("graph input {} is not in the card", .0.join(", "))]
    ExtraInputs(Vec<String>),
    /// An input is not f32.
    #[error("input {name} is {got}, the contract needs F32")]
    InputType {
        /// The input.
        name: String,
        /// Its datum type.
        got: String,
    },
    /// The image input's shape is not the card's.
    #[error("input {name} is {graph} in the graph, {card} in the card")]
    ImageShape {
        /// The input.
        name: String,
        /// Its shape in the graph.
        graph: String,
        /// Its shape in the card.
        card: String,
    },
    /// A mask input is not `[T, ..site shape]`.
    #[error("mask input {name} is {graph} in the graph, the card needs [{SAMPLE_DIM}, {site}]")]
    MaskShape {
        /// The mask input.
        name: String,
        /// Its shape in the graph.
        graph: String,
        /// The site's shape in the card, comma-separated.
        site: String,
    },
    /// The graph has another number of outputs than the card names (the probabilities, and
    /// a density output if the card names one).
    #[error("graph has {got} outputs, the card names {expected}")]
    OutputCount {
        /// Outputs in the graph.
        got: usize,
        /// Outputs the card names.
        expected: usize,
    },
    /// The second output is not the card's density output, F32 `[1, 1]`.
    #[error(
        "graph output {name} is {graph}, the card needs its density output {card:?} as F32 [1, 1]"
    )]
    DensityOutput {
        /// The graph's second output.
        name: String,
        /// Its type and shape in the graph.
        graph: String,
        /// The name in the card.
        card: String,
    },
    /// The output's name is not the card's.
    #[error("graph output is named {graph:?}, the card says {card:?}")]
    OutputName {
        /// The name in the graph.
        graph: String,
        /// The name in the card.
        card: String,
    },
    /// The output is not F32 `[T, classes]` (`[M·T, classes]` for an ensemble of M).
    #[error("output {name} is {graph}, the card needs F32 [{rows}, {classes}]")]
    OutputShape {
        /// The output.
        name: String,
        /// Its type and shape in the graph.
        graph: String,
        /// The rows the card implies: `T`, or `M*T` for an ensemble.
        rows: String,
        /// The card's class count.
        classes: usize,
    },
    /// The engine could not answer a question about the graph.
    #[error("{0}")]
    Graph(String),
}
