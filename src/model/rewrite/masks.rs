//! Each site becomes `Mul(tensor, mask_k)` with `mask_k` a new `[T, ..site]` input.

use std::collections::{HashMap, HashSet};

use super::graph::*;
use super::sites::Site;
use crate::contract::onnx::{self as builder};
use crate::contract::pb;
use crate::engine::tract::analysis::Fact;

/// Puts the masks in: each Dropout becomes `Mul(x, mask_k)`; after a named tensor's producer
/// goes `Mul(tensor, mask_k)`, which its consumers (and `output`) then read. Returns the
/// mask names, with their facts (the site's, T standing where the batch of 1 was) added.
pub(super) fn insert_masks(
    graph: &mut pb::GraphProto,
    sites: &[Site],
    facts: &mut HashMap<String, Fact>,
    names: &mut HashSet<String>,
    output: &mut String,
) -> Vec<String> {
    let mut masks = vec![];
    let mut masked = vec![]; // (tensor, its masked name)
    let mut after: HashMap<Option<usize>, Vec<pb::NodeProto>> = HashMap::new();
    let mut dropout_masks = HashMap::new();
    for (k, site) in sites.iter().enumerate() {
        let mask = format!("mask_{k}");
        let fact = facts[&site.tensor].clone();
        facts.insert(mask.clone(), fact.clone());
        match site.dropout {
            Some(i) => {
                dropout_masks.insert(i, mask.clone());
            }
            None => {
                let name = fresh(names, &format!("{}_masked", site.tensor));
                facts.insert(name.clone(), fact);
                let mul = builder::node("Mul", &[&site.tensor, &mask], &name, vec![]);
                let producer = graph
                    .node
                    .iter()
                    .position(|n| n.output.contains(&site.tensor));
                after.entry(producer).or_default().push(mul);
                masked.push((site.tensor.clone(), name));
            }
        }
        masks.push(mask);
    }
    let mut nodes = after.remove(&None).unwrap_or_default();
    for (i, node) in std::mem::take(&mut graph.node).into_iter().enumerate() {
        match dropout_masks.get(&i) {
            Some(mask) => {
                let mut mul =
                    builder::node("Mul", &[&node.input[0], mask], &node.output[0], vec![]);
                if !node.name.is_empty() {
                    mul.name = node.name;
                }
                nodes.push(mul);
            }
            None => nodes.push(node),
        }
        nodes.extend(after.remove(&Some(i)).unwrap_or_default());
    }
    for (tensor, name) in &masked {
        for node in &mut nodes {
            if node.op_type == "Mul" && node.output[0] == *name {
                continue;
            }
            for input in node.input.iter_mut().filter(|i| *i == tensor) {
                input.clone_from(name);
            }
            for_subgraphs(node, &mut |g| rename(g, tensor, name));
        }
        if output == tensor {
            output.clone_from(name);
        }
    }
    graph.node = nodes;
    masks
}
