//! The output `probs`: the chosen output, flattened when it has more than two axes, and a
//! `Softmax` over the classes unless one already makes it.

use std::collections::{HashMap, HashSet};

use super::error::ConvertError;
use super::graph::*;
use crate::contract::onnx::{self as builder};
use crate::contract::pb;
use crate::engine::tract::analysis::Fact;

/// The output of a converted graph.
pub const OUTPUT: &str = "probs";

/// Makes `output` (at batch 1: `[1, classes]`, or with unit axes besides) the `probs`
/// tensor: flattened to `[T, classes]`, softmaxed unless a Softmax over the classes made it.
/// Returns the class count and whether a Softmax was appended.
pub(super) fn finish_output(
    graph: &mut pb::GraphProto,
    output: &str,
    facts: &HashMap<String, Fact>,
    batched: &HashSet<String>,
    opset: i64,
    names: &mut HashSet<String>,
) -> Result<(usize, bool), ConvertError> {
    let bad = |why: String| ConvertError::Output {
        name: output.to_string(),
        why,
    };
    if !batched.contains(output) {
        return Err(bad("does not depend on any dropout site".into()));
    }
    let shape = facts
        .get(output)
        .and_then(|f| f.shape.clone())
        .ok_or_else(|| bad("has no fixed shape at batch 1".into()))?;
    if shape.len() < 2 || shape[1..].iter().filter(|&&d| d != 1).count() > 1 {
        return Err(bad(format!(
            "is {shape:?} at batch 1; a classifier's output is [1, classes] or [1, classes, 1, 1]"
        )));
    }
    let classes: usize = shape[1..].iter().product();
    let softmax_done = graph
        .node
        .iter()
        .find(|n| n.output.first().is_some_and(|o| o == output))
        .is_some_and(|n| softmax_over_classes(n, &shape, opset));
    let mut last = output.to_string();
    let flatten = shape.len() > 2;
    if flatten {
        let name = if softmax_done {
            OUTPUT.to_string()
        } else {
            fresh(names, &format!("{output}_flat"))
        };
        let axis = vec![builder::int("axis", 1)];
        graph
            .node
            .push(builder::node("Flatten", &[&last], &name, axis));
        last = name;
    }
    if !softmax_done {
        // On [T, classes], axis 1 is the last axis under either Softmax semantics.
        let axis = vec![builder::int("axis", if opset < 13 { 1 } else { -1 })];
        graph
            .node
            .push(builder::node("Softmax", &[&last], OUTPUT, axis));
    } else if !flatten {
        rename(graph, output, OUTPUT);
    }
    Ok((classes, !softmax_done))
}

/// Whether `node` is a Softmax over the classes of an output of `shape` (batch 1).
pub(super) fn softmax_over_classes(node: &pb::NodeProto, shape: &[usize], opset: i64) -> bool {
    if node.op_type != "Softmax" || !(node.domain.is_empty() || node.domain == "ai.onnx") {
        return false;
    }
    let rank = shape.len();
    let default = if opset < 13 { 1 } else { -1 };
    let a = normalise(attr_int(node, "axis").unwrap_or(default), rank);
    if a < 1 || a >= rank as i64 {
        return false;
    }
    let a = a as usize;
    if opset < 13 {
        // Coerced to 2-D: normalised over axes a.. together, so those before a must be 1.
        shape[1..a].iter().all(|&d| d == 1)
    } else {
        shape
            .iter()
            .enumerate()
            .skip(1)
            .all(|(i, &d)| i == a || d == 1)
    }
}

/// The one graph output, or the one asked for.
pub(super) fn pick_output(
    graph: &pb::GraphProto,
    wanted: Option<&str>,
) -> Result<String, ConvertError> {
    let outputs: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    match wanted {
        Some(w) if outputs.iter().any(|o| o == w) => Ok(w.to_string()),
        Some(w) => Err(ConvertError::UnknownOutput {
            name: w.to_string(),
            outputs,
        }),
        None if outputs.len() == 1 => Ok(outputs[0].clone()),
        None => Err(ConvertError::Outputs(outputs)),
    }
}
