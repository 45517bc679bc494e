//! The dropout sites: the `Dropout` forms read (ratio as attribute or input, training mode
//! dropped), the tensors named by `--site`, their order, shapes and p, and the contract's
//! names freed for the mask inputs.

use std::collections::{HashMap, HashSet};

use super::error::ConvertError;
use super::graph::*;
use crate::contract::card::{MAX_P, MIN_P};
use crate::contract::pb;
use crate::engine::tract::analysis::Fact;

/// Renames the tensors (and nodes) that have a name in `reserved`; returns old → new.
pub(super) fn claim(
    graph: &mut pb::GraphProto,
    reserved: &[String],
    names: &mut HashSet<String>,
) -> HashMap<String, String> {
    let mut renamed = HashMap::new();
    for r in reserved {
        if !names.contains(r) {
            continue;
        }
        let new = fresh(names, &format!("{r}_orig"));
        rename(graph, r, &new);
        for node in graph.node.iter_mut().filter(|n| n.name == *r) {
            node.name.clone_from(&new);
        }
        renamed.insert(r.clone(), new);
    }
    renamed
}

/// A dropout site: the tensor masked, p, its shape at batch 1, and the Dropout it replaces.
pub(super) struct Site {
    pub(super) tensor: String,
    pub(super) p: f32,
    pub(super) shape: Vec<usize>,
    pub(super) dropout: Option<usize>,
}

/// The Dropout nodes and the named tensors, in topological order, with their shapes.
pub(super) fn find_sites(
    graph: &pb::GraphProto,
    named: &[(String, f32)],
    facts: &HashMap<String, Fact>,
    output: &str,
) -> Result<Vec<Site>, ConvertError> {
    // A Dropout inside an If/Loop/Scan body would stay an identity: refuse it, not skip it.
    if let Some((node, body)) = graph
        .node
        .iter()
        .find_map(|n| nested_dropout(n).map(|d| (label(n), d)))
    {
        return Err(ConvertError::Dropout {
            node: body,
            why: format!("it is inside the subgraph of {node}, which convert does not rewrite"),
        });
    }
    // Sort keys: a Dropout sits at its node, a named tensor just after its producer.
    let mut keyed = vec![];
    let mut dropout_tensors = HashSet::new();
    for (i, node) in graph.node.iter().enumerate().filter(|(_, n)| is_dropout(n)) {
        let fail = |why| ConvertError::Dropout {
            node: label(node),
            why,
        };
        let input = node
            .input
            .first()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| fail("it has no input".into()))?;
        let p = dropout_p(graph, node).map_err(fail)?;
        keyed.push((2 * (i + 1), input.clone(), p, Some(i)));
        dropout_tensors.insert(input.clone());
        dropout_tensors.insert(node.output[0].clone());
    }
    let tensors = tensors_in(graph);
    for (tensor, p) in named {
        if dropout_tensors.contains(tensor) {
            return Err(ConvertError::SiteTwice(tensor.clone()));
        }
        if !tensors.contains(tensor) {
            return Err(ConvertError::Site {
                tensor: tensor.clone(),
                why: format!("does not reach the output {output}"),
            });
        }
        let producer = graph.node.iter().position(|n| n.output.contains(tensor));
        let key = producer.map_or(1, |i| 2 * (i + 1) + 1);
        keyed.push((key, tensor.clone(), *p, None));
    }
    if keyed.is_empty() {
        return Err(ConvertError::NoSites);
    }
    keyed.sort_by_key(|k| k.0);
    let mut sites = vec![];
    for (_, tensor, p, dropout) in keyed {
        let fail = |why: &str| ConvertError::Site {
            tensor: tensor.clone(),
            why: why.into(),
        };
        let fact = facts
            .get(&tensor)
            .ok_or_else(|| fail("has no shape from tract"))?;
        if fact.constant {
            return Err(fail("is a constant, not an activation"));
        }
        if !fact.float {
            return Err(fail("is not float32"));
        }
        let shape = fact
            .shape
            .clone()
            .ok_or_else(|| fail("has no fixed shape at batch 1"))?;
        if shape.len() < 2 || shape[0] != 1 {
            return Err(fail(&format!(
                "is {shape:?} at batch 1; a site needs [1, ...] with at least one axis after the batch"
            )));
        }
        sites.push(Site {
            tensor,
            p,
            shape,
            dropout,
        });
    }
    Ok(sites)
}

/// A Dropout's drop probability: its `ratio` input (opset 12+) or attribute, else 0.5.
pub(super) fn dropout_p(graph: &pb::GraphProto, node: &pb::NodeProto) -> Result<f32, String> {
    if let Some(mask) = node.output.get(1).filter(|s| !s.is_empty()) {
        let user = graph
            .node
            .iter()
            .find(|n| n.input.contains(mask) || captured(n).contains(mask));
        if let Some(user) = user {
            return Err(format!(
                "its mask output {mask} is used by {} (the masks become inputs, so it would not exist)",
                label(user)
            ));
        }
        if graph.output.iter().any(|o| o.name == *mask) {
            return Err(format!("its mask output {mask} is the graph output"));
        }
    }
    let p = match node.input.get(1).filter(|s| !s.is_empty()) {
        Some(name) => constant(graph, name)
            .and_then(|v| scalar(&v))
            .ok_or_else(|| format!("its ratio {name} is not a constant scalar"))?,
        None => attr(node, "ratio").map_or(0.5, |a| a.f),
    };
    if !(0.0..1.0).contains(&p) {
        return Err(format!("its ratio {p} is outside [0, 1)"));
    }
    if p != 0.0 && !(MIN_P..=MAX_P).contains(&p) {
        return Err(format!(
            "its ratio {p} is outside [{MIN_P}, {MAX_P}]: masks that drop almost nothing or \
             almost everything make the samples agree, and every frame pass"
        ));
    }
    Ok(p)
}
