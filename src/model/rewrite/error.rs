//! Why a graph cannot be converted.

use crate::contract::card::{MAX_P, MIN_P};

/// Before opset 7, Mul broadcasts only with an attribute; the masks need plain broadcasting.
pub(super) const MIN_OPSET: i64 = 7;

/// Why a graph cannot be converted; each variant renders as one line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    /// The bytes are not an ONNX model.
    #[error("not an ONNX model: {0}")]
    Decode(String),
    /// Weights live in a separate file; convert reads one self-contained file.
    #[error(
        "weight {0} is in an external data file: save the model with its weights inside \
         (PyTorch: torch.onnx.export(..., external_data=False); onnx: \
         onnx.save(model, path, save_as_external_data=False))"
    )]
    ExternalData(String),
    /// The default domain's opset is below 7 (0: none declared).
    #[error("ONNX opset {0}: convert needs opset {MIN_OPSET} or later")]
    Opset(i64),
    /// The graph does not have exactly one data input.
    #[error("graph has {} data inputs ({}); the contract takes one image", .0.len(), .0.join(", "))]
    Inputs(Vec<String>),
    /// The image input is not float32 `[1 or N, C, H, W]` with fixed C, H, W.
    #[error("image input {name} {why}")]
    ImageInput {
        /// The input.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// tract cannot infer the graph's shapes at batch 1.
    #[error("tract cannot infer the graph's shapes: {0}")]
    Shapes(String),
    /// The graph has several outputs and none was chosen.
    #[error("graph has {} outputs ({}); name the one to keep", .0.len(), .0.join(", "))]
    Outputs(Vec<String>),
    /// The chosen output is not one of the graph's.
    #[error("graph has no output {name} (outputs: {})", outputs.join(", "))]
    UnknownOutput {
        /// The name asked for.
        name: String,
        /// The graph's outputs.
        outputs: Vec<String>,
    },
    /// The output cannot become `probs` `[T, classes]`.
    #[error("output {name} {why}")]
    Output {
        /// The graph output.
        name: String,
        /// Why.
        why: String,
    },
    /// A site names a tensor the graph does not have.
    #[error("no tensor named {0} in the graph")]
    UnknownTensor(String),
    /// A site's p is outside [0, 1), or too small or large to make samples differ.
    #[error(
        "site {tensor}: p = {p} is outside [0, 1) or [{MIN_P}, {MAX_P}] (masks that drop almost \
         nothing or almost everything make the samples agree, and every frame pass)"
    )]
    SiteP {
        /// The site's tensor.
        tensor: String,
        /// The p given.
        p: f32,
    },
    /// A tensor is a site twice (named twice, or named and a Dropout's input or output).
    #[error("tensor {0} is a dropout site twice (named twice, or a Dropout's input or output)")]
    SiteTwice(String),
    /// A site's tensor cannot be masked.
    #[error("site {tensor} {why}")]
    Site {
        /// The site's tensor.
        tensor: String,
        /// Why.
        why: String,
    },
    /// A Dropout node cannot become a site.
    #[error("Dropout node {node}: {why}")]
    Dropout {
        /// The node.
        node: String,
        /// Why.
        why: String,
    },
    /// Neither a Dropout reaching the output nor a named site.
    #[error("no dropout site: no Dropout node reaches the output and no site was named")]
    NoSites,
    /// A node after a site cannot carry the T samples on axis 0.
    #[error("{op} node {node} after a dropout site: {why}")]
    Unbatchable {
        /// The node.
        node: String,
        /// Its op type.
        op: String,
        /// Why.
        why: String,
    },
    /// A weight holds NaN or an infinity.
    #[error("weight {0} is not all finite (NaN or infinity): the model is broken")]
    NonFinite(String),
    /// The graph's nodes cannot be ordered (a cycle).
    #[error("graph has a cycle through or before node {0}")]
    Cycle(String),
    /// The card for the converted graph cannot be made (`mcgate convert`'s card options).
    #[error("card: {0}")]
    Card(String),
    /// The converted graph failed convert's own check through tract (a convert bug).
    #[error("converted graph does not check out: {0}")]
    Verify(String),
}
