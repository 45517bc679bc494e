//! The graph against its card: the inputs, their types and shapes, and the one output must
//! be the ones the card describes (docs/model-format.md).

use tract_onnx::prelude::*;

use super::card::ModelCard;
use super::{dims_to_string, SAMPLE_DIM};
use crate::error::one_line;

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
    /// The graph has more or fewer than one output.
    #[error("graph has {0} outputs, the contract has one")]
    OutputCount(usize),
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
    /// tract could not answer a question about the graph.
    #[error("{0}")]
    Graph(String),
}

fn is_sample_dim(d: &TDim) -> bool {
    matches!(d, TDim::Sym(s) if s.to_string() == SAMPLE_DIM)
}

/// Checks inputs and output against the card.
pub(super) fn against_card(model: &TypedModel, card: &ModelCard) -> Result<(), MismatchError> {
    let tract = |e: anyhow::Error| MismatchError::Graph(one_line(&e));
    let mut graph_inputs = vec![];
    for (ix, outlet) in model.input_outlets().map_err(tract)?.iter().enumerate() {
        let fact = model.input_fact(ix).map_err(tract)?;
        graph_inputs.push((model.node(outlet.node).name.clone(), fact.clone()));
    }
    let mut wanted: Vec<&str> = vec![card.input.name.as_str()];
    wanted.extend(card.dropout_sites.iter().map(|s| s.input.as_str()));
    let missing: Vec<String> = wanted
        .iter()
        .filter(|w| !graph_inputs.iter().any(|(n, _)| n == *w))
        .map(|w| w.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(MismatchError::MissingInputs(missing));
    }
    let extra: Vec<String> = graph_inputs
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !wanted.contains(&n.as_str()))
        .cloned()
        .collect();
    if !extra.is_empty() {
        return Err(MismatchError::ExtraInputs(extra));
    }
    for (name, fact) in &graph_inputs {
        if fact.datum_type != f32::datum_type() {
            return Err(MismatchError::InputType {
                name: name.clone(),
                got: format!("{:?}", fact.datum_type),
            });
        }
        let dims = fact.shape.to_tvec();
        if *name == card.input.name {
            let want: Vec<TDim> = card
                .input
                .shape
                .iter()
                .map(|&d| (d as i64).into())
                .collect();
            if dims[..] != want[..] {
                return Err(MismatchError::ImageShape {
                    name: name.clone(),
                    graph: dims_to_string(&dims),
                    card: format!("{:?}", card.input.shape),
                });
            }
        } else {
            let site = card
                .dropout_sites
                .iter()
                .find(|s| &s.input == name)
                .expect("every graph input is in the card (checked above)");
            let want: Vec<TDim> = site.shape.iter().map(|&d| (d as i64).into()).collect();
            if dims.is_empty() || !is_sample_dim(&dims[0]) || dims[1..] != want[..] {
                return Err(MismatchError::MaskShape {
                    name: name.clone(),
                    graph: dims_to_string(&dims),
                    site: site
                        .shape
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
    }
    let outputs = model.output_outlets().map_err(tract)?;
    if outputs.len() != 1 {
        return Err(MismatchError::OutputCount(outputs.len()));
    }
    let label = model.outlet_label(outputs[0]).unwrap_or("");
    if label != card.output.name {
        return Err(MismatchError::OutputName {
            graph: label.to_string(),
            card: card.output.name.clone(),
        });
    }
    let fact = model.output_fact(0).map_err(tract)?;
    let dims = fact.shape.to_tvec();
    let classes: TDim = (card.classes.len() as i64).into();
    let members = card.members() as i64;
    let rows_ok = |d: &TDim| match members {
        1 => is_sample_dim(d),
        m => matches!(d, TDim::MulInt(k, t) if *k == m && is_sample_dim(t)),
    };
    if fact.datum_type != f32::datum_type()
        || dims.len() != 2
        || !rows_ok(&dims[0])
        || dims[1] != classes
    {
        return Err(MismatchError::OutputShape {
            name: label.to_string(),
            graph: format!("{:?} {}", fact.datum_type, dims_to_string(&dims)),
            rows: match members {
                1 => SAMPLE_DIM.to_string(),
                m => format!("{m}*{SAMPLE_DIM}"),
            },
            classes: card.classes.len(),
        });
    }
    Ok(())
}
