//! The tract engine: everything that names tract. Translate time: read the ONNX bytes, type
//! the graph, check it against the card (`check`), summarise it (`summary`), find the dropout
//! sites that can run as a sparse difference (`split`). Run time: the optimised plans and
//! their reusable buffers (`plan`), and the sparse layers between them (`sparse`).

pub mod analysis;
pub mod check;
pub mod plan;
pub mod sparse;
pub mod split;
mod summary;

use tract_onnx::prelude::*;

use super::{
    EngineError, Graph, GraphSummary, MismatchError, ModelError, Runner, SitePath, Strategy,
};
use crate::contract::card::ModelCard;
use crate::text::one_line;

/// Why tract cannot take a model: the file itself, or the file against its card.
#[derive(Debug)]
pub enum ReadError {
    /// The file cannot be read, typed or summarised.
    Model(ModelError),
    /// The graph is not the one the card describes.
    Mismatch(MismatchError),
}

/// A model's graph as tract typed it, checked against its card (not yet optimised: each
/// plan optimises it for its own cut).
pub struct TractGraph {
    typed: TypedModel,
}

impl TractGraph {
    /// Reads and types `onnx`, checks it against `card`, and says what it declares.
    pub fn read(onnx: &[u8], card: &ModelCard) -> Result<(TractGraph, GraphSummary), ReadError> {
        let model_error = |e: ModelError| ReadError::Model(e);
        let inference = tract_onnx::onnx()
            .model_for_read(&mut &onnx[..])
            .map_err(|e| model_error(ModelError::NotOnnx(one_line(&e))))?;
        let typed = inference
            .into_typed()
            .map_err(|e| model_error(ModelError::Types(one_line(&e))))?;
        let summary =
            summary::summarise(&typed).map_err(|e| model_error(ModelError::Graph(one_line(&e))))?;
        check::against_card(&typed, card).map_err(ReadError::Mismatch)?;
        Ok((TractGraph { typed }, summary))
    }

    /// The tract graph behind `graph`, if tract read it (for tools that look inside tract:
    /// benchmarks, profiles).
    pub fn of(graph: &dyn Graph) -> Option<&TractGraph> {
        graph.as_any().downcast_ref()
    }

    /// The checked, typed graph.
    pub fn typed(&self) -> &TypedModel {
        &self.typed
    }
}

impl Graph for TractGraph {
    fn site_paths(&self, card: &ModelCard) -> Vec<SitePath> {
        split::site_paths(&self.typed, card)
    }

    fn plan(
        &self,
        card: &ModelCard,
        samples: usize,
        strategy: Strategy,
    ) -> Result<Box<dyn Runner>, EngineError> {
        Ok(Box::new(plan::TractPlan::new(
            &self.typed,
            card,
            samples,
            strategy,
        )?))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// `[a, b, T]` as text.
pub(crate) fn dims_to_string(dims: &[TDim]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}
