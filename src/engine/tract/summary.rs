//! What a typed graph declares, for `mcgate info`.

use tract_onnx::prelude::*;

use super::dims_to_string;
use crate::engine::GraphSummary;

/// What a typed graph declares.
pub(crate) fn summarise(model: &TypedModel) -> TractResult<GraphSummary> {
    let mut inputs = vec![];
    for (ix, outlet) in model.input_outlets()?.iter().enumerate() {
        let fact = model.input_fact(ix)?;
        inputs.push((
            model.node(outlet.node).name.clone(),
            format!(
                "{:?} {}",
                fact.datum_type,
                dims_to_string(&fact.shape.to_tvec())
            ),
        ));
    }
    let mut outputs = vec![];
    for (ix, outlet) in model.output_outlets()?.iter().enumerate() {
        let fact = model.output_fact(ix)?;
        let name = model
            .outlet_label(*outlet)
            .unwrap_or(&model.node(outlet.node).name);
        outputs.push((
            name.to_string(),
            format!(
                "{:?} {}",
                fact.datum_type,
                dims_to_string(&fact.shape.to_tvec())
            ),
        ));
    }
    let mut ops: Vec<(String, usize)> = vec![];
    for node in model.nodes() {
        let op = node.op.name().to_string();
        match ops.iter_mut().find(|(name, _)| *name == op) {
            Some((_, n)) => *n += 1,
            None => ops.push((op, 1)),
        }
    }
    Ok(GraphSummary {
        inputs,
        outputs,
        nodes: model.nodes().len(),
        ops,
    })
}
