//! The head checks: every node after a site, where axis 0 carries the T samples, against the
//! ops known to keep it there; `Reshape` constants that pin it to 1 rewritten.

use std::collections::{HashMap, HashSet};

use super::error::ConvertError;
use super::graph::*;
use crate::contract::onnx::{self as builder, DataType, Dim};
use crate::contract::pb;
use crate::engine::tract::analysis::Fact;

/// Checks every node after a site (see the module doc) and makes the Reshape edits; returns
/// the tensors that carry the samples.
pub(super) fn check_head(
    graph: &mut pb::GraphProto,
    facts: &HashMap<String, Fact>,
    masks: &[String],
    opset: i64,
    ir_version: i64,
    names: &mut HashSet<String>,
) -> Result<HashSet<String>, ConvertError> {
    let mut batched: HashSet<String> = masks.iter().cloned().collect();
    let mut edits = vec![];
    for (i, node) in graph.node.iter().enumerate() {
        let reads_samples = node.input.iter().any(|n| batched.contains(n))
            || captured(node).iter().any(|n| batched.contains(n));
        if !reads_samples {
            continue;
        }
        let fail = |why: String| ConvertError::Unbatchable {
            node: label(node),
            op: node.op_type.clone(),
            why,
        };
        let cx = Cx {
            graph,
            facts,
            batched: &batched,
            opset,
        };
        if let Some(edit) = head_rule(node, &cx).map_err(fail)? {
            edits.push((i, edit));
        }
        for o in node.output.iter().filter(|o| !o.is_empty()) {
            let shape = cx.shape(o).map_err(fail)?;
            if shape.first() != Some(&1) {
                return Err(fail(format!(
                    "its output {o} is {shape:?} at batch 1; the samples need a leading axis of 1"
                )));
            }
        }
        batched.extend(node.output.iter().filter(|o| !o.is_empty()).cloned());
    }
    // New constants, never edited in place: a trunk node may share the old one.
    for (i, (slot, shape)) in edits {
        let name = fresh(names, &format!("{}_samples", graph.node[i].input[slot]));
        let len = shape.len() as i64;
        graph
            .initializer
            .push(builder::i64_tensor(&name, &[len], &shape));
        if ir_version < 4 {
            // IR 3 lists every initializer among the graph inputs.
            let info = builder::typed_value_info(&name, DataType::Int64, &[Dim::Fixed(len)]);
            graph.input.push(info);
        }
        graph.node[i].input[slot] = name;
    }
    Ok(batched)
}

/// What a head rule needs to know.
pub(super) struct Cx<'a> {
    pub(super) graph: &'a pb::GraphProto,
    pub(super) facts: &'a HashMap<String, Fact>,
    pub(super) batched: &'a HashSet<String>,
    pub(super) opset: i64,
}

impl Cx<'_> {
    pub(super) fn shape(&self, name: &str) -> Result<&[usize], String> {
        self.facts
            .get(name)
            .and_then(|f| f.shape.as_deref())
            .ok_or_else(|| format!("the shape of {name} is not known"))
    }

    pub(super) fn samples(&self, name: &str) -> bool {
        self.batched.contains(name)
    }

    /// The integers of optional input `slot`: None when absent, an error when computed.
    pub(super) fn ints_input(
        &self,
        node: &pb::NodeProto,
        slot: usize,
        what: &str,
    ) -> Result<Option<Vec<i64>>, String> {
        let Some(name) = node.input.get(slot).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        constant(self.graph, name)
            .and_then(|t| ints(&t))
            .map(Some)
            .ok_or_else(|| format!("its {what} ({name}) is computed, not a constant"))
    }

    /// Axes as an attribute (older opsets) or as input `slot` (newer ones).
    pub(super) fn axes(
        &self,
        node: &pb::NodeProto,
        slot: usize,
    ) -> Result<Option<Vec<i64>>, String> {
        match attr(node, "axes") {
            Some(a) => Ok(Some(a.ints.clone())),
            None => self.ints_input(node, slot, "axes"),
        }
    }
}

/// Ops that work on each sample alone, through their first input.
#[rustfmt::skip]
pub(super) const PER_SAMPLE: &[&str] = &[
    "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "AveragePool",
    "BatchNormalization", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Conv", "ConvTranspose",
    "Cos", "Cosh", "DepthToSpace", "Elu", "Erf", "Exp", "Floor", "Gelu", "GlobalAveragePool",
    "GlobalLpPool", "GlobalMaxPool", "HardSigmoid", "HardSwish", "Identity",
    "InstanceNormalization", "IsInf", "IsNaN", "LRN", "LeakyRelu", "Log", "LpPool", "MaxPool",
    "Mish", "Neg", "Not", "Reciprocal", "Relu", "Round", "Selu", "Shrink", "Sigmoid", "Sign",
    "Sin", "Sinh", "Softplus", "Softsign", "SpaceToDepth", "Sqrt", "Tan", "Tanh",
    "ThresholdedRelu",
];

/// Elementwise ops with multidirectional broadcasting.
#[rustfmt::skip]
pub(super) const BROADCAST: &[&str] = &[
    "Add", "And", "BitShift", "Div", "Equal", "Greater", "GreaterOrEqual", "Less",
    "LessOrEqual", "Max", "Mean", "Min", "Mod", "Mul", "Or", "PRelu", "Pow", "Sub", "Sum",
    "Where", "Xor",
];

/// Reductions with `axes` (attribute before opset 13 or 18, input after).
#[rustfmt::skip]
pub(super) const REDUCE: &[&str] = &[
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
    "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare",
];

/// Whether `node`, which reads a tensor after a site, keeps the samples on axis 0; `Ok(Some
/// (slot, shape))` when its constant input `slot` must become `shape` for that.
pub(super) fn head_rule(
    node: &pb::NodeProto,
    cx: &Cx,
) -> Result<Option<(usize, Vec<i64>)>, String> {
    if !(node.domain.is_empty() || node.domain == "ai.onnx") {
        return Err(format!(
            "convert knows only the default domain, not {}",
            node.domain
        ));
    }
    if let Some(n) = captured(node).iter().find(|n| cx.samples(n)) {
        return Err(format!("its subgraph reads {n}, which carries the samples"));
    }
    let op = node.op_type.as_str();
    let inputs = &node.input;
    let only_data = || match (1..inputs.len()).find(|&k| cx.samples(&inputs[k])) {
        Some(k) => Err(format!(
            "its input {k} ({}) carries the samples; only its data input may",
            inputs[k]
        )),
        None => Ok(()),
    };
    let one_output = || match node.output.iter().skip(1).find(|o| !o.is_empty()) {
        Some(o) => Err(format!(
            "its extra output {o} is not supported after a site"
        )),
        None => Ok(()),
    };
    let in_rank = || cx.shape(&inputs[0]).map(<[usize]>::len);
    let out_rank = || cx.shape(&node.output[0]).map(<[usize]>::len);
    let axis =
        |default: i64, rank: usize| normalise(attr_int(node, "axis").unwrap_or(default), rank);
    let refuse = |why: &str| Err(why.to_string());
    match op {
        _ if PER_SAMPLE.contains(&op) => {
            only_data()?;
            one_output()?;
            if op == "BatchNormalization" && attr_int(node, "training_mode") == Some(1) {
                return refuse("in training mode it takes its statistics over the samples");
            }
        }
        _ if BROADCAST.contains(&op) => {
            let rank = out_rank()?;
            for name in inputs.iter().filter(|n| !n.is_empty()) {
                let shape = cx.shape(name)?;
                if cx.samples(name) && shape.len() != rank {
                    return Err(format!(
                        "{name} carries the samples but has {} axes, the output {rank}",
                        shape.len()
                    ));
                }
                if !cx.samples(name) && shape.len() == rank && shape[0] != 1 {
                    return Err(format!(
                        "{name} has {} on the sample axis, where broadcasting needs 1",
                        shape[0]
                    ));
                }
            }
        }
        "Gemm" => {
            only_data()?;
            if attr_int(node, "transA").unwrap_or(0) != 0 {
                return refuse("transA = 1 would put the samples on A's columns");
            }
        }
        "MatMul" => matmul(node, cx)?,
        "Flatten" => {
            only_data()?;
            if axis(1, in_rank()?) == 0 {
                return refuse("axis 0 folds the samples into one row");
            }
        }
        "Reshape" => return reshape(node, cx),
        "Squeeze" => {
            only_data()?;
            match cx.axes(node, 1)? {
                None => return refuse("without axes it squeezes the sample axis too"),
                Some(a) if normalised(&a, in_rank()?).contains(&0) => {
                    return refuse("it squeezes the sample axis")
                }
                Some(_) => {}
            }
        }
        "Unsqueeze" => {
            only_data()?;
            match cx.axes(node, 1)? {
                Some(a) if !normalised(&a, out_rank()?).contains(&0) => {}
                _ => return refuse("it inserts an axis before the samples"),
            }
        }
        "Transpose" => {
            only_data()?;
            match attr(node, "perm") {
                Some(p) if p.ints.first().is_some_and(|&a| a != 0) => {
                    return refuse("its perm moves the sample axis")
                }
                None if in_rank()? > 1 => {
                    return refuse("without perm it reverses the axes, moving the sample axis")
                }
                _ => {}
            }
        }
        "Concat" => {
            if axis(0, out_rank()?) == 0 {
                return refuse("it concatenates along the sample axis");
            }
            if let Some(n) = inputs.iter().find(|n| !n.is_empty() && !cx.samples(n)) {
                return Err(format!(
                    "its input {n} is from before the sites (batch 1) while others carry the samples"
                ));
            }
        }
        "Split" => {
            only_data()?;
            if axis(0, in_rank()?) == 0 {
                return refuse("it splits the sample axis");
            }
        }
        "Slice" => {
            only_data()?;
            let axes = match cx.axes(node, 3)? {
                Some(a) => a,
                None => {
                    let starts = match attr(node, "starts") {
                        Some(a) => a.ints.clone(),
                        None => cx.ints_input(node, 1, "starts")?.unwrap_or_default(),
                    };
                    (0..starts.len() as i64).collect()
                }
            };
            if normalised(&axes, in_rank()?).contains(&0) {
                return refuse("it slices the sample axis");
            }
        }
        "Gather" => {
            only_data()?;
            if axis(0, in_rank()?) == 0 {
                return refuse("it gathers along the sample axis");
            }
        }
        _ if REDUCE.contains(&op) => {
            only_data()?;
            match cx.axes(node, 1)? {
                None if attr_int(node, "noop_with_empty_axes") == Some(1) => {}
                None => return refuse("without axes it reduces over the sample axis too"),
                Some(a) if normalised(&a, in_rank()?).contains(&0) => {
                    return refuse("it reduces over the sample axis")
                }
                Some(_) => {}
            }
        }
        "ArgMax" | "ArgMin" => {
            if axis(0, in_rank()?) == 0 {
                return refuse("it reduces over the sample axis");
            }
        }
        "Softmax" | "LogSoftmax" | "Hardmax" => {
            only_data()?;
            let default = if cx.opset < 13 { 1 } else { -1 };
            if axis(default, in_rank()?) == 0 {
                return refuse("it normalises over the sample axis");
            }
        }
        "LayerNormalization" | "LpNormalization" => {
            only_data()?;
            one_output()?;
            if axis(-1, in_rank()?) == 0 {
                return refuse("it normalises over the sample axis");
            }
        }
        "Expand" => {
            only_data()?;
            let shape = cx.ints_input(node, 1, "shape")?.unwrap_or_default();
            let rank = in_rank()?;
            if shape.len() > rank {
                return refuse("its shape adds axes before the samples");
            }
            if shape.len() == rank && shape[0] != 1 {
                return Err(format!(
                    "its shape starts with {}, which would replace the sample axis",
                    shape[0]
                ));
            }
        }
        "Tile" => {
            only_data()?;
            let repeats = cx.ints_input(node, 1, "repeats")?.unwrap_or_default();
            if repeats.first().is_some_and(|&r| r != 1) {
                return refuse("it repeats along the sample axis");
            }
        }
        "Pad" => {
            only_data()?;
            let rank = in_rank()?;
            let pads = match attr(node, "pads") {
                Some(a) => a.ints.clone(),
                None => cx.ints_input(node, 1, "pads")?.unwrap_or_default(),
            };
            let axes = match cx.ints_input(node, 3, "axes")? {
                Some(a) => normalised(&a, rank),
                None => (0..rank as i64).collect(),
            };
            let n = axes.len();
            if pads.len() != 2 * n {
                return refuse("its pads do not match its axes");
            }
            if let Some(k) = axes.iter().position(|&a| a == 0) {
                if pads[k] != 0 || pads[k + n] != 0 {
                    return refuse("it pads the sample axis");
                }
            }
        }
        "Shape" | "Size" | "ConstantOfShape" => {
            return refuse(
                "it reads the batch size, which becomes T after a site (computed shapes are not supported)",
            )
        }
        _ => {
            return Err(format!(
                "convert does not know whether {op} keeps the samples on axis 0"
            ))
        }
    }
    Ok(None)
}

/// MatMul keeps the samples on axis 0 when they are A's rows (A a matrix, B broadcast
/// behind it) or a broadcast axis of a batched product.
pub(super) fn matmul(node: &pb::NodeProto, cx: &Cx) -> Result<(), String> {
    let (a, b) = (&node.input[0], &node.input[1]);
    let (sa, sb) = (cx.shape(a)?, cx.shape(b)?);
    match (cx.samples(a), cx.samples(b)) {
        (true, false) => {
            if sa.len() < 2 {
                return Err(format!("{a} carries the samples but is a vector"));
            }
            if sb.len() > sa.len() {
                return Err(format!(
                    "{b} has more axes than {a}, so they lead the output"
                ));
            }
            if sb.len() == sa.len() && sa.len() > 2 && sb[0] != 1 {
                return Err(format!("{b} has {} where the samples broadcast", sb[0]));
            }
        }
        (false, true) => {
            if sb.len() <= 2 {
                return Err(format!(
                    "the samples reach {b}, whose first axis is contracted"
                ));
            }
            if sa.len() > sb.len() {
                return Err(format!(
                    "{a} has more axes than {b}, so they lead the output"
                ));
            }
            if sa.len() == sb.len() && sa[0] != 1 {
                return Err(format!("{a} has {} where the samples broadcast", sa[0]));
            }
        }
        _ => {
            if sa.len() != sb.len() || sa.len() <= 2 {
                return Err(
                    "both inputs carry the samples, which only a batched product of equal ranks keeps apart"
                        .into(),
                );
            }
        }
    }
    Ok(())
}

/// A Reshape after a site: its target shape must be a constant whose first entry stands for
/// the batch (0 or −1), or 1, which is rewritten to stand for it.
pub(super) fn reshape(node: &pb::NodeProto, cx: &Cx) -> Result<Option<(usize, Vec<i64>)>, String> {
    if !cx.samples(&node.input[0]) {
        return Err("its target shape carries the samples".into());
    }
    let shape = cx
        .ints_input(node, 1, "target shape")?
        .ok_or("it has no target shape")?;
    let allowzero = attr_int(node, "allowzero").unwrap_or(0) != 0;
    let out = cx.shape(&node.output[0])?;
    match shape.first().copied() {
        None => Err("it reshapes to a scalar".into()),
        Some(0) if !allowzero => Ok(None),
        Some(-1) if out.first() == Some(&1) => Ok(None),
        Some(1) => {
            let mut new = shape.clone();
            if !allowzero {
                new[0] = 0;
            } else if !shape[1..].contains(&-1) {
                new[0] = -1;
            } else {
                // allowzero forbids copying and −1 is taken: spell the per-sample axes out.
                new = std::iter::once(-1)
                    .chain(out[1..].iter().map(|&d| d as i64))
                    .collect();
            }
            Ok(Some((1, new)))
        }
        Some(d) => Err(format!(
            "its target shape {shape:?} starts with {d}, which does not stand for the batch"
        )),
    }
}
