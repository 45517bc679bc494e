//! The graph rewrite behind `mcgate convert`: an ONNX classifier into a graph under the
//! contract (docs/model-format.md) — one image input `[1, C, H, W]`, one mask input `mask_k`
//! `[T, ..site]` per dropout site, one output `probs` `[T, classes]` of probabilities.
//!
//! In order, [`convert`]:
//! 1. keeps only what the chosen output needs (`Options::output`, or the graph's only one);
//! 2. pins the image input's batch dimension to 1 (a symbolic `N` too) and takes every
//!    tensor's shape at batch 1 from tract's shape inference;
//! 3. turns every `Dropout` (opset 7+: ratio as attribute, or as a constant `ratio` input,
//!    0.5 when absent; the `training_mode` input and an unused `mask` output are dropped) into
//!    `Mul(x, mask_k)`, and puts `Mul(tensor, mask_k)` before every consumer of each
//!    `Options::sites` tensor (for exports that dropped Dropout); sites are numbered in
//!    topological order;
//! 4. checks the *head*, every node after a site, where axis 0 carries the T samples instead
//!    of the batch of 1, against the ops known to keep it there, and rewrites the `Reshape`
//!    constants that pin it to 1;
//! 5. makes the output `probs`: `Flatten` when it has more than two axes (`[1, C, 1, 1]`),
//!    then `Softmax` over the last axis unless a Softmax over the classes already makes it
//!    (after a LogSoftmax too: the softmax of log-probabilities is the probabilities).
//!
//! What the head accepts (anything else after a site is refused with the node and why):
//! - per-sample ops (activations, Clip, Cast, Conv, pools, BatchNormalization, LRN…) whose
//!   only input after a site is the data; broadcasting ops (Add, Mul, Where…) whose inputs
//!   after a site have the output's rank while the others have fewer axes or a leading 1;
//! - Gemm with the samples on A (transA = 0); MatMul with them on A's rows or on a
//!   broadcast axis;
//! - Reshape to a constant shape: a leading 0 (copy) or a leading −1 that resolved to 1 is
//!   kept, a leading 1 becomes 0 (−1 when allowzero = 1); a computed shape, or one leading
//!   with another constant, is refused. Flatten with axis ≥ 1;
//! - ops with axes (Concat, Split, Softmax, Reduce*, ArgMax, Gather, Slice, Squeeze,
//!   Unsqueeze, Transpose, LayerNormalization…) whose axes are constants that leave axis 0
//!   alone; Concat also needs every input after a site (a batch-1 input would not match T);
//! - Expand, Tile and Pad with constant arguments that leave axis 0 alone.
//!
//! Refused after a site: Shape, Size and ConstantOfShape (they read the batch size, which
//! becomes T), subgraph ops (If, Loop, Scan) that see a tensor after a site, custom domains,
//! and every op not listed. Not supported at all: opsets before 7 (Mul without
//! broadcasting), tensors in external files, more than one data input, an image input that is
//! not float32 `[1 or N, C, H, W]` with fixed C, H, W, and Dropout inside subgraphs.
//!
//! The result keeps the input's opset and IR version; `value_info` is dropped (the shapes
//! after a site changed), and so is whatever the output does not need.

use std::collections::HashSet;

use crate::contract::pb;
use crate::engine::tract::analysis::{self, Values};
use prost::Message;

use crate::contract::card::SAMPLE_DIM;
use crate::contract::card::{DropoutSite, MAX_P, MIN_P};
use crate::contract::onnx::{self as builder, Dim};
use crate::text::one_line;

mod batch;
mod error;
mod graph;
mod head;
mod masks;
mod output;
mod sites;
use batch::*;
pub use error::ConvertError;
use error::MIN_OPSET;
use graph::*;
use head::*;
use masks::*;
pub use output::OUTPUT;
use output::*;
use sites::*;

/// What [`convert`] is told besides the graph.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// Extra dropout sites, `(tensor name, p)`: every consumer of the tensor reads it masked.
    pub sites: Vec<(String, f32)>,
    /// The graph output to keep, when the graph has several.
    pub output: Option<String>,
}

/// A converted graph and what its card needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// The converted ONNX file.
    pub onnx: Vec<u8>,
    /// The image input's name and `[1, C, H, W]`.
    pub input: (String, [usize; 4]),
    /// The dropout sites in mask order: input `mask_k`, p, one sample's mask shape.
    pub sites: Vec<DropoutSite>,
    /// The output's name, [`OUTPUT`].
    pub output: String,
    /// Classes per sample.
    pub classes: usize,
    /// True when the graph gave logits and convert appended the Softmax.
    pub softmax_appended: bool,
}

/// A tensor where a dropout site could go (see [`list_sites`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The tensor's name, as `Options::sites` takes it.
    pub tensor: String,
    /// Its shape at batch 1, e.g. `[1, 512]`.
    pub shape: Vec<usize>,
    /// The layers it feeds, e.g. `Gemm fc`.
    pub feeds: String,
}

/// Converts an ONNX classifier's bytes into a graph under the contract.
pub fn convert(onnx: &[u8], opts: &Options) -> Result<Converted, ConvertError> {
    let (mut model, opset) = decode(onnx)?;
    let ir_version = model.ir_version;
    let graph = model.graph.as_mut().expect("decode checks the graph");
    graph.value_info.clear();
    topo_sort(graph)?;
    let output = pick_output(graph, opts.output.as_deref())?;
    let tensors = tensors_in(graph);
    for (i, (tensor, p)) in opts.sites.iter().enumerate() {
        if !tensors.contains(tensor) {
            return Err(ConvertError::UnknownTensor(tensor.clone()));
        }
        if !(0.0..1.0).contains(p) || (*p != 0.0 && !(MIN_P..=MAX_P).contains(p)) {
            return Err(ConvertError::SiteP {
                tensor: tensor.clone(),
                p: *p,
            });
        }
        if opts.sites[..i].iter().any(|(t, _)| t == tensor) {
            return Err(ConvertError::SiteTwice(tensor.clone()));
        }
    }
    graph.output.retain(|o| o.name == output);
    prune(graph, &output);

    // Free the names the contract gives its inputs and output.
    let dropouts = graph.node.iter().filter(|n| is_dropout(n)).count();
    let reserved: Vec<String> = std::iter::once(OUTPUT.to_string())
        .chain((0..dropouts + opts.sites.len()).map(|k| format!("mask_{k}")))
        .collect();
    let mut names = names_in(graph);
    let renamed = claim(graph, &reserved, &mut names);
    let current = |name: &String| renamed.get(name).unwrap_or(name).clone();
    let mut output = current(&output);
    let named: Vec<(String, f32)> = opts.sites.iter().map(|(t, p)| (current(t), *p)).collect();

    let image = image_input(graph)?;
    let image_shape = pin_image(graph, &image)?;
    let mut facts = infer(&model, &image, image_shape)?;
    let graph = model.graph.as_mut().expect("decode checks the graph");

    let sites = find_sites(graph, &named, &facts, &output)?;
    let masks = insert_masks(graph, &sites, &mut facts, &mut names, &mut output);
    let batched = check_head(graph, &facts, &masks, opset, ir_version, &mut names)?;
    let (classes, softmax_appended) =
        finish_output(graph, &output, &facts, &batched, opset, &mut names)?;

    // Interface: the image, the masks, and (IR 3) the initializers listed as inputs.
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let (mut inputs, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut graph.input)
        .into_iter()
        .filter(|i| i.name == image || initializers.contains(i.name.as_str()))
        .partition(|i| i.name == image);
    let mut card_sites = vec![];
    for (site, mask) in sites.iter().zip(&masks) {
        let mut dims = vec![Dim::Samples];
        dims.extend(site.shape[1..].iter().map(|&d| Dim::Fixed(d as i64)));
        inputs.push(builder::value_info(mask, &dims));
        card_sites.push(DropoutSite {
            input: mask.clone(),
            p: site.p,
            shape: site.shape[1..].to_vec(),
        });
    }
    inputs.extend(rest);
    graph.input = inputs;
    let dims = [Dim::Samples, Dim::Fixed(classes as i64)];
    graph.output = vec![builder::value_info(OUTPUT, &dims)];
    prune(graph, OUTPUT);

    let bytes = model.encode_to_vec();
    verify(&bytes, classes)?;
    Ok(Converted {
        onnx: bytes,
        input: (image, image_shape),
        sites: card_sites,
        output: OUTPUT.into(),
        classes,
        softmax_appended,
    })
}

/// Tensors where a dropout site could go: the activations feeding each Gemm, MatMul and Conv
/// (not a Dropout's, already a site), in topological order, so the last layers come last.
pub fn list_sites(onnx: &[u8]) -> Result<Vec<Candidate>, ConvertError> {
    let (mut model, _) = decode(onnx)?;
    let graph = model.graph.as_mut().expect("decode checks the graph");
    graph.value_info.clear();
    topo_sort(graph)?;
    let image = image_input(graph)?;
    let shape = pin_image(graph, &image)?;
    let facts = infer(&model, &image, shape)?;
    let graph = model.graph.as_ref().expect("decode checks the graph");
    let dropped: HashSet<&str> = graph
        .node
        .iter()
        .filter(|n| is_dropout(n))
        .filter_map(|n| n.output.first().map(String::as_str))
        .collect();
    let mut out: Vec<Candidate> = vec![];
    for node in &graph.node {
        if !matches!(node.op_type.as_str(), "Gemm" | "MatMul" | "Conv") {
            continue;
        }
        let Some(tensor) = node.input.first() else {
            continue;
        };
        let Some(fact) = facts.get(tensor) else {
            continue;
        };
        let Some(shape) = &fact.shape else {
            continue;
        };
        if fact.constant || !fact.float || shape.len() < 2 || shape[0] != 1 {
            continue;
        }
        if dropped.contains(tensor.as_str()) {
            continue;
        }
        let feed = format!("{} {}", node.op_type, label(node));
        match out.iter_mut().find(|c| c.tensor == *tensor) {
            Some(c) => {
                c.feeds.push_str(", ");
                c.feeds.push_str(&feed);
            }
            None => out.push(Candidate {
                tensor: tensor.clone(),
                shape: shape.clone(),
                feeds: feed,
            }),
        }
    }
    Ok(out)
}

/// The model and its default-domain opset (at least [`MIN_OPSET`]).
fn decode(onnx: &[u8]) -> Result<(pb::ModelProto, i64), ConvertError> {
    let model = pb::ModelProto::decode(onnx).map_err(|e| ConvertError::Decode(e.to_string()))?;
    if model.graph.is_none() {
        return Err(ConvertError::Decode("the model has no graph".into()));
    }
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version);
    if opset < MIN_OPSET {
        return Err(ConvertError::Opset(opset));
    }
    let graph = model.graph.as_ref().expect("checked above");
    if let Some(t) = graph.initializer.iter().find(|t| {
        t.data_location == Some(pb::tensor_proto::DataLocation::External as i32)
            || !t.external_data.is_empty()
    }) {
        return Err(ConvertError::ExternalData(t.name.clone()));
    }
    // A NaN or infinite weight would fail convert's own check (NaN ≠ NaN) as if convert were
    // at fault: it is the model's.
    let constants = graph.initializer.iter().map(|t| t.name.as_str()).chain(
        graph
            .node
            .iter()
            .filter(|n| n.op_type == "Constant")
            .filter_map(|n| n.output.first().map(String::as_str)),
    );
    for name in constants {
        let finite = match constant(graph, name) {
            Some(Values::Float(v)) => v.iter().all(|x| x.is_finite()),
            _ => true,
        };
        if !finite {
            return Err(ConvertError::NonFinite(name.to_string()));
        }
    }
    Ok((model, opset))
}

/// Loads the converted graph in tract and checks that its output is `[T, classes]`.
fn verify(onnx: &[u8], classes: usize) -> Result<(), ConvertError> {
    let dims = analysis::output_dims(onnx).map_err(|e| ConvertError::Verify(one_line(&e)))?;
    if dims != [SAMPLE_DIM.to_string(), classes.to_string()] {
        return Err(ConvertError::Verify(format!(
            "output is [{}], not [{SAMPLE_DIM}, {classes}]",
            dims.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
