//! Graph utilities the passes share: order, pruning, names, attributes, constants.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::error::ConvertError;
use crate::contract::pb;
use crate::engine::tract::analysis::{self, Values};

/// Orders the nodes topologically, keeping the file's order where it already is one.
pub(super) fn topo_sort(graph: &mut pb::GraphProto) -> Result<(), ConvertError> {
    let n = graph.node.len();
    let mut producer = HashMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        for o in node.output.iter().filter(|o| !o.is_empty()) {
            producer.insert(o.clone(), i);
        }
    }
    let mut waiting = vec![0usize; n];
    let mut users = vec![vec![]; n];
    for (i, node) in graph.node.iter().enumerate() {
        let mut seen = HashSet::new();
        for name in reads(node) {
            if let Some(&p) = producer.get(&name) {
                if p == i {
                    return Err(ConvertError::Cycle(label(node)));
                }
                if seen.insert(p) {
                    waiting[i] += 1;
                    users[p].push(i);
                }
            }
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            waiting[u] -= 1;
            if waiting[u] == 0 {
                ready.insert(u);
            }
        }
    }
    if order.len() < n {
        let stuck = (0..n).find(|&i| waiting[i] > 0).expect("some node waits");
        return Err(ConvertError::Cycle(label(&graph.node[stuck])));
    }
    let mut nodes: Vec<Option<pb::NodeProto>> = std::mem::take(&mut graph.node)
        .into_iter()
        .map(Some)
        .collect();
    graph.node = order
        .iter()
        .map(|&i| nodes[i].take().expect("once"))
        .collect();
    Ok(())
}

/// Drops the nodes, initializers and inputs that `output` does not need.
pub(super) fn prune(graph: &mut pb::GraphProto, output: &str) {
    let mut needed: HashSet<String> = HashSet::from([output.to_string()]);
    let mut keep = vec![false; graph.node.len()];
    for (i, node) in graph.node.iter().enumerate().rev() {
        if node.output.iter().any(|o| needed.contains(o)) {
            keep[i] = true;
            needed.extend(reads(node));
        }
    }
    let mut flags = keep.into_iter();
    graph
        .node
        .retain(|_| flags.next().expect("one flag per node"));
    graph.initializer.retain(|t| needed.contains(&t.name));
    graph.input.retain(|i| needed.contains(&i.name));
}

/// Everything a node reads: its inputs and what its subgraphs capture.
pub(super) fn reads(node: &pb::NodeProto) -> Vec<String> {
    let mut out: Vec<String> = node
        .input
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect();
    out.extend(captured(node));
    out
}

/// Names read inside a node's subgraphs (If, Loop, Scan bodies): outer tensors they capture
/// (and their own, which no outer tensor can share).
pub(super) fn captured(node: &pb::NodeProto) -> Vec<String> {
    let mut out = vec![];
    for a in &node.attribute {
        for g in a.g.iter().chain(&a.graphs) {
            for n in &g.node {
                out.extend(reads(n));
            }
        }
    }
    out
}

pub(super) fn for_subgraphs(node: &mut pb::NodeProto, f: &mut dyn FnMut(&mut pb::GraphProto)) {
    for a in &mut node.attribute {
        for g in a.g.iter_mut().chain(&mut a.graphs) {
            f(g);
        }
    }
}

/// Renames tensor `old` to `new` everywhere, subgraphs included.
pub(super) fn rename(graph: &mut pb::GraphProto, old: &str, new: &str) {
    let fix = |s: &mut String| {
        if s == old {
            *s = new.to_string();
        }
    };
    for node in &mut graph.node {
        node.input.iter_mut().for_each(fix);
        node.output.iter_mut().for_each(fix);
        for_subgraphs(node, &mut |g| rename(g, old, new));
    }
    let infos = graph.input.iter_mut().chain(&mut graph.output);
    infos
        .chain(&mut graph.value_info)
        .for_each(|i| fix(&mut i.name));
    graph.initializer.iter_mut().for_each(|t| fix(&mut t.name));
}

/// Every tensor and node name in the graph and its subgraphs.
pub(super) fn names_in(graph: &pb::GraphProto) -> HashSet<String> {
    let mut names = HashSet::new();
    names.extend(graph.input.iter().map(|i| i.name.clone()));
    names.extend(graph.output.iter().map(|i| i.name.clone()));
    names.extend(graph.initializer.iter().map(|t| t.name.clone()));
    for node in &graph.node {
        names.extend(node.input.iter().chain(&node.output).cloned());
        names.insert(node.name.clone());
        for a in &node.attribute {
            for g in a.g.iter().chain(&a.graphs) {
                names.extend(names_in(g));
            }
        }
    }
    names.remove("");
    names
}

/// The graph's tensors: inputs, initializers and node outputs (subgraphs left out).
pub(super) fn tensors_in(graph: &pb::GraphProto) -> HashSet<String> {
    let mut tensors: HashSet<String> = graph.input.iter().map(|i| i.name.clone()).collect();
    tensors.extend(graph.initializer.iter().map(|t| t.name.clone()));
    tensors.extend(graph.node.iter().flat_map(|n| n.output.iter().cloned()));
    tensors.remove("");
    tensors
}

/// `base`, or `base.1`, `base.2`… whichever is not taken yet; taken from then on.
pub(super) fn fresh(names: &mut HashSet<String>, base: &str) -> String {
    let name = std::iter::once(base.to_string())
        .chain((1..).map(|i| format!("{base}.{i}")))
        .find(|n| !names.contains(n))
        .expect("some name is free");
    names.insert(name.clone());
    name
}

/// A node's name for messages: its own, or its first output's.
pub(super) fn label(node: &pb::NodeProto) -> String {
    if !node.name.is_empty() {
        node.name.clone()
    } else {
        node.output.first().cloned().unwrap_or_default()
    }
}

pub(super) fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

pub(super) fn attr_int(node: &pb::NodeProto, name: &str) -> Option<i64> {
    attr(node, name).map(|a| a.i)
}

pub(super) fn normalise(axis: i64, rank: usize) -> i64 {
    if axis < 0 {
        axis + rank as i64
    } else {
        axis
    }
}

pub(super) fn normalised(axes: &[i64], rank: usize) -> Vec<i64> {
    axes.iter().map(|&a| normalise(a, rank)).collect()
}

/// The values of a constant tensor: an initializer or a Constant node's output.
pub(super) fn constant(graph: &pb::GraphProto, name: &str) -> Option<Values> {
    if let Some(t) = graph.initializer.iter().find(|t| t.name == name) {
        return analysis::tensor_values(t);
    }
    let node = graph
        .node
        .iter()
        .find(|n| n.op_type == "Constant" && n.output.first().is_some_and(|o| o == name))?;
    let a = node.attribute.first()?;
    let floats = |v: &[f32]| Values::Float(v.iter().map(|&x| x as f64).collect());
    match a.name.as_str() {
        "value" => analysis::tensor_values(a.t.as_ref()?),
        "value_float" => Some(floats(&[a.f])),
        "value_floats" => Some(floats(&a.floats)),
        "value_int" => Some(Values::Int(vec![a.i])),
        "value_ints" => Some(Values::Int(a.ints.clone())),
        _ => None,
    }
}

/// A constant's values as integers (floats truncated, as a cast).
pub(super) fn ints(values: &Values) -> Option<Vec<i64>> {
    Some(match values {
        Values::Int(v) => v.clone(),
        Values::Float(v) => v.iter().map(|&x| x as i64).collect(),
    })
}

/// A one-value constant as f32.
pub(super) fn scalar(values: &Values) -> Option<f32> {
    match values {
        Values::Float(v) if v.len() == 1 => Some(v[0] as f32),
        Values::Int(v) if v.len() == 1 => Some(v[0] as f32),
        _ => None,
    }
}

pub(super) fn is_dropout(node: &pb::NodeProto) -> bool {
    node.op_type == "Dropout" && (node.domain.is_empty() || node.domain == "ai.onnx")
}

/// The label of a Dropout anywhere inside `node`'s subgraphs, if any.
pub(super) fn nested_dropout(node: &pb::NodeProto) -> Option<String> {
    node.attribute
        .iter()
        .flat_map(|a| a.g.iter().chain(&a.graphs))
        .flat_map(|g| &g.node)
        .find_map(|n| {
            if is_dropout(n) {
                Some(label(n))
            } else {
                nested_dropout(n)
            }
        })
}
