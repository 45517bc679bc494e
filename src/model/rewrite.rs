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

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::contract::pb;
use crate::engine::tract::analysis::{self, Fact, Values};
use prost::Message;

use crate::contract::card::SAMPLE_DIM;
use crate::contract::card::{DropoutSite, MAX_INPUT_VALUES, MAX_P, MIN_P};
use crate::contract::onnx::{self as builder, DataType, Dim};
use crate::text::one_line;

/// The output of a converted graph.
pub const OUTPUT: &str = "probs";

/// Before opset 7, Mul broadcasts only with an attribute; the masks need plain broadcasting.
const MIN_OPSET: i64 = 7;

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

/// Renames the tensors (and nodes) that have a name in `reserved`; returns old → new.
fn claim(
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
struct Site {
    tensor: String,
    p: f32,
    shape: Vec<usize>,
    dropout: Option<usize>,
}

/// The Dropout nodes and the named tensors, in topological order, with their shapes.
fn find_sites(
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

/// Puts the masks in: each Dropout becomes `Mul(x, mask_k)`; after a named tensor's producer
/// goes `Mul(tensor, mask_k)`, which its consumers (and `output`) then read. Returns the
/// mask names, with their facts (the site's, T standing where the batch of 1 was) added.
fn insert_masks(
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

/// Checks every node after a site (see the module doc) and makes the Reshape edits; returns
/// the tensors that carry the samples.
fn check_head(
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

/// Makes `output` (at batch 1: `[1, classes]`, or with unit axes besides) the `probs`
/// tensor: flattened to `[T, classes]`, softmaxed unless a Softmax over the classes made it.
/// Returns the class count and whether a Softmax was appended.
fn finish_output(
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

/// Every node output's fact, from tract with the image pinned to `shape`: each one is made a
/// graph output of a copy of the model, so that tract's renaming of nodes does not matter.
fn infer(
    model: &pb::ModelProto,
    image: &str,
    shape: [usize; 4],
) -> Result<HashMap<String, Fact>, ConvertError> {
    let shapes = |e: anyhow::Error| ConvertError::Shapes(one_line(&e));
    let mut proto = model.clone();
    let graph = proto.graph.as_mut().expect("decode checks the graph");
    graph.value_info.clear();
    let mut names = vec![];
    for node in &graph.node {
        for (k, o) in node.output.iter().enumerate() {
            // A Dropout's mask is never a site, and tract types it bool.
            if o.is_empty() || (is_dropout(node) && k > 0) {
                continue;
            }
            names.push(o.clone());
        }
    }
    graph.output = names
        .iter()
        .map(|n| pb::ValueInfoProto {
            name: n.clone(),
            ..Default::default()
        })
        .collect();
    let facts = analysis::output_facts(&proto, image, &shape, names.len()).map_err(shapes)?;
    let mut facts: HashMap<String, Fact> = names.into_iter().zip(facts).collect();
    for t in &model
        .graph
        .as_ref()
        .expect("decode checks the graph")
        .initializer
    {
        let fact = Fact {
            float: t.data_type == DataType::Float as i32,
            shape: Some(t.dims.iter().map(|&d| d as usize).collect()),
            constant: true,
        };
        facts.insert(t.name.clone(), fact);
    }
    let fact = Fact {
        float: true,
        shape: Some(shape.to_vec()),
        constant: false,
    };
    facts.insert(image.to_string(), fact);
    Ok(facts)
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

/// What a head rule needs to know.
struct Cx<'a> {
    graph: &'a pb::GraphProto,
    facts: &'a HashMap<String, Fact>,
    batched: &'a HashSet<String>,
    opset: i64,
}

impl Cx<'_> {
    fn shape(&self, name: &str) -> Result<&[usize], String> {
        self.facts
            .get(name)
            .and_then(|f| f.shape.as_deref())
            .ok_or_else(|| format!("the shape of {name} is not known"))
    }

    fn samples(&self, name: &str) -> bool {
        self.batched.contains(name)
    }

    /// The integers of optional input `slot`: None when absent, an error when computed.
    fn ints_input(
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
    fn axes(&self, node: &pb::NodeProto, slot: usize) -> Result<Option<Vec<i64>>, String> {
        match attr(node, "axes") {
            Some(a) => Ok(Some(a.ints.clone())),
            None => self.ints_input(node, slot, "axes"),
        }
    }
}

/// Ops that work on each sample alone, through their first input.
#[rustfmt::skip]
const PER_SAMPLE: &[&str] = &[
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
const BROADCAST: &[&str] = &[
    "Add", "And", "BitShift", "Div", "Equal", "Greater", "GreaterOrEqual", "Less",
    "LessOrEqual", "Max", "Mean", "Min", "Mod", "Mul", "Or", "PRelu", "Pow", "Sub", "Sum",
    "Where", "Xor",
];

/// Reductions with `axes` (attribute before opset 13 or 18, input after).
#[rustfmt::skip]
const REDUCE: &[&str] = &[
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
    "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare",
];

/// Whether `node`, which reads a tensor after a site, keeps the samples on axis 0; `Ok(Some
/// (slot, shape))` when its constant input `slot` must become `shape` for that.
fn head_rule(node: &pb::NodeProto, cx: &Cx) -> Result<Option<(usize, Vec<i64>)>, String> {
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
fn matmul(node: &pb::NodeProto, cx: &Cx) -> Result<(), String> {
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
fn reshape(node: &pb::NodeProto, cx: &Cx) -> Result<Option<(usize, Vec<i64>)>, String> {
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

/// Whether `node` is a Softmax over the classes of an output of `shape` (batch 1).
fn softmax_over_classes(node: &pb::NodeProto, shape: &[usize], opset: i64) -> bool {
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

/// A Dropout's drop probability: its `ratio` input (opset 12+) or attribute, else 0.5.
fn dropout_p(graph: &pb::GraphProto, node: &pb::NodeProto) -> Result<f32, String> {
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

fn is_dropout(node: &pb::NodeProto) -> bool {
    node.op_type == "Dropout" && (node.domain.is_empty() || node.domain == "ai.onnx")
}

/// The one graph output, or the one asked for.
fn pick_output(graph: &pb::GraphProto, wanted: Option<&str>) -> Result<String, ConvertError> {
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

/// The graph input that carries the image: the one non-initializer input that a node reads
/// (a Dropout's ratio or training_mode do not count: they go with the Dropout).
fn image_input(graph: &pb::GraphProto) -> Result<String, ConvertError> {
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut read = HashSet::new();
    for node in &graph.node {
        let data = if is_dropout(node) {
            1
        } else {
            node.input.len()
        };
        read.extend(node.input.iter().take(data).cloned());
        read.extend(captured(node));
    }
    let data: Vec<String> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()) && read.contains(&i.name))
        .map(|i| i.name.clone())
        .collect();
    match &data[..] {
        [one] => Ok(one.clone()),
        _ => Err(ConvertError::Inputs(data)),
    }
}

/// Checks the image input and declares it `[1, C, H, W]` float32.
fn pin_image(graph: &mut pb::GraphProto, name: &str) -> Result<[usize; 4], ConvertError> {
    use pb::tensor_shape_proto::dimension::Value;
    let bad = |why: String| ConvertError::ImageInput {
        name: name.to_string(),
        why,
    };
    let info = graph
        .input
        .iter_mut()
        .find(|i| i.name == name)
        .expect("the image is a graph input");
    let Some(pb::type_proto::Value::TensorType(t)) =
        info.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(bad("is not a tensor".into()));
    };
    if t.elem_type != DataType::Float as i32 {
        let got = DataType::try_from(t.elem_type).map_or("an unknown type", |d| d.as_str_name());
        return Err(bad(format!("is {got}; the contract needs FLOAT (float32)")));
    }
    let dims = t.shape.as_ref().map_or(&[][..], |s| &s.dim[..]);
    if dims.len() != 4 {
        return Err(bad(format!(
            "has {} axes; the contract needs [1, C, H, W]",
            dims.len()
        )));
    }
    match &dims[0].value {
        Some(Value::DimValue(1)) | Some(Value::DimParam(_)) | None => {}
        Some(Value::DimValue(n)) => {
            return Err(bad(format!(
                "has batch size {n}; convert needs 1 or a symbolic batch"
            )))
        }
    }
    let mut shape = [1; 4];
    for k in 1..4 {
        match &dims[k].value {
            Some(Value::DimValue(v)) if *v > 0 => shape[k] = *v as usize,
            _ => return Err(bad(format!("has no fixed size on axis {k}"))),
        }
    }
    // Bounded before tract infers anything: a hostile shape would overflow or allocate gigabytes.
    let values = shape.iter().fold(1usize, |n, &d| n.saturating_mul(d));
    if values > MAX_INPUT_VALUES {
        return Err(bad(format!(
            "is {shape:?}: {values} values, over the {MAX_INPUT_VALUES} the gate holds"
        )));
    }
    let fixed: Vec<Dim> = shape.iter().map(|&d| Dim::Fixed(d as i64)).collect();
    *info = builder::value_info(name, &fixed);
    Ok(shape)
}

/// Orders the nodes topologically, keeping the file's order where it already is one.
fn topo_sort(graph: &mut pb::GraphProto) -> Result<(), ConvertError> {
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
fn prune(graph: &mut pb::GraphProto, output: &str) {
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
fn reads(node: &pb::NodeProto) -> Vec<String> {
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
fn captured(node: &pb::NodeProto) -> Vec<String> {
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

/// The label of a Dropout anywhere inside `node`'s subgraphs, if any.
fn nested_dropout(node: &pb::NodeProto) -> Option<String> {
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

fn for_subgraphs(node: &mut pb::NodeProto, f: &mut dyn FnMut(&mut pb::GraphProto)) {
    for a in &mut node.attribute {
        for g in a.g.iter_mut().chain(&mut a.graphs) {
            f(g);
        }
    }
}

/// Renames tensor `old` to `new` everywhere, subgraphs included.
fn rename(graph: &mut pb::GraphProto, old: &str, new: &str) {
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
fn names_in(graph: &pb::GraphProto) -> HashSet<String> {
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
fn tensors_in(graph: &pb::GraphProto) -> HashSet<String> {
    let mut tensors: HashSet<String> = graph.input.iter().map(|i| i.name.clone()).collect();
    tensors.extend(graph.initializer.iter().map(|t| t.name.clone()));
    tensors.extend(graph.node.iter().flat_map(|n| n.output.iter().cloned()));
    tensors.remove("");
    tensors
}

/// `base`, or `base.1`, `base.2`… whichever is not taken yet; taken from then on.
fn fresh(names: &mut HashSet<String>, base: &str) -> String {
    let name = std::iter::once(base.to_string())
        .chain((1..).map(|i| format!("{base}.{i}")))
        .find(|n| !names.contains(n))
        .expect("some name is free");
    names.insert(name.clone());
    name
}

/// A node's name for messages: its own, or its first output's.
fn label(node: &pb::NodeProto) -> String {
    if !node.name.is_empty() {
        node.name.clone()
    } else {
        node.output.first().cloned().unwrap_or_default()
    }
}

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_int(node: &pb::NodeProto, name: &str) -> Option<i64> {
    attr(node, name).map(|a| a.i)
}

fn normalise(axis: i64, rank: usize) -> i64 {
    if axis < 0 {
        axis + rank as i64
    } else {
        axis
    }
}

fn normalised(axes: &[i64], rank: usize) -> Vec<i64> {
    axes.iter().map(|&a| normalise(a, rank)).collect()
}

/// The values of a constant tensor: an initializer or a Constant node's output.
fn constant(graph: &pb::GraphProto, name: &str) -> Option<Values> {
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
fn ints(values: &Values) -> Option<Vec<i64>> {
    Some(match values {
        Values::Int(v) => v.clone(),
        Values::Float(v) => v.iter().map(|&x| x as i64).collect(),
    })
}

/// A one-value constant as f32.
fn scalar(values: &Values) -> Option<f32> {
    match values {
        Values::Float(v) if v.len() == 1 => Some(v[0] as f32),
        Values::Int(v) if v.len() == 1 => Some(v[0] as f32),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::contract::card::tests::sample_card;
    use crate::contract::card::{sha256_hex, ModelCard};
    use crate::contract::onnx::{f32_scalar, f32_tensor, float, i64_tensor, int, tensor, Graph};
    use crate::model::Model;
    use crate::run::masks;
    use crate::run::plan::Plan;
    use crate::run::rng::WyRand;

    /// Samples per run in the tests.
    const T: usize = 3;

    fn uniform(rng: &mut WyRand, n: usize, scale: f32) -> Vec<f32> {
        let unit = |u: u64| (u >> 40) as f32 / (1u64 << 24) as f32;
        (0..n)
            .map(|_| (unit(rng.next_u64()) * 2.0 - 1.0) * scale)
            .collect()
    }

    fn softmax(v: &[f32]) -> Vec<f32> {
        let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = v.iter().map(|x| (x - max).exp()).collect();
        let sum: f32 = e.iter().sum();
        e.iter().map(|x| x / sum).collect()
    }

    /// `w·x + b`, W `[out, in]` row-major (Gemm with transB = 1).
    fn dense(w: &[f32], b: &[f32], x: &[f32]) -> Vec<f32> {
        let n = x.len();
        let dot = |o: usize| (0..n).map(|i| w[o * n + i] * x[i]).sum::<f32>();
        b.iter().enumerate().map(|(o, bo)| bo + dot(o)).collect()
    }

    /// A 1×1 convolution of `[cin, pixels]` with W `[cout, cin]`.
    fn conv1x1(w: &[f32], b: &[f32], x: &[f32], pixels: usize) -> Vec<f32> {
        let cin = x.len() / pixels;
        let mut out = vec![];
        for (o, bo) in b.iter().enumerate() {
            for p in 0..pixels {
                out.push(
                    bo + (0..cin)
                        .map(|i| w[o * cin + i] * x[i * pixels + p])
                        .sum::<f32>(),
                );
            }
        }
        out
    }

    /// Global average pooling of `[c, pixels]`.
    fn pool(x: &[f32], pixels: usize) -> Vec<f32> {
        let mean = |c: &[f32]| c.iter().sum::<f32>() / pixels as f32;
        x.chunks(pixels).map(mean).collect()
    }

    fn relu(v: Vec<f32>) -> Vec<f32> {
        v.into_iter().map(|x| x.max(0.0)).collect()
    }

    fn masked(a: &[f32], m: &[f32]) -> Vec<f32> {
        a.iter().zip(m).map(|(a, m)| a * m).collect()
    }

    fn fixed(dims: &[i64]) -> Vec<Dim> {
        dims.iter().map(|&d| Dim::Fixed(d)).collect()
    }

    /// The graph as a model file of `opset` (IR 3 before opset 8, as exporters wrote them).
    fn bytes(g: Graph, opset: i64) -> Vec<u8> {
        let mut m = g.into_model("test", "0");
        m.opset_import[0].version = opset;
        m.ir_version = if opset < 8 { 3 } else { 8 };
        m.encode_to_vec()
    }

    /// A node with several outputs (the builder's have one).
    fn node_n(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            name: name.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    /// The original model run by tract at batch 1, output flattened (softmaxed for logits).
    fn original(onnx: &[u8], shape: [usize; 4], x: &[f32], logits: bool) -> Vec<f32> {
        let out = analysis::Reference::new(onnx, None, &shape)
            .unwrap()
            .run(x)
            .unwrap();
        if logits {
            softmax(&out)
        } else {
            out
        }
    }

    /// The converted model loaded and checked by the runtime against a card built from it.
    fn load(conv: &Converted) -> Model {
        let mut card: ModelCard = sample_card();
        let channels = conv.input.1[1];
        card.input.name.clone_from(&conv.input.0);
        card.input.shape = conv.input.1;
        card.input.mean = vec![0.0; channels];
        card.input.std = vec![1.0; channels];
        card.dropout_sites.clone_from(&conv.sites);
        card.output.name.clone_from(&conv.output);
        card.classes = (0..conv.classes).map(|c| format!("c{c}")).collect();
        card.onnx_sha256 = sha256_hex(&conv.onnx);
        card.validate().unwrap();
        Model::from_parts(card, &conv.onnx, Path::new("converted.onnx")).unwrap()
    }

    fn run(model: &Model, x: &[f32], masks: &[Vec<f32>]) -> Vec<f32> {
        let mut plan = Plan::new(model, T).unwrap();
        let masks: Vec<&[f32]> = masks.iter().map(Vec::as_slice).collect();
        plan.run_with_masks(x, &masks).unwrap().to_vec()
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{what}: {got:?} against {want:?}");
        }
    }

    /// Check 1: with every mask 1, each of the T rows is the original model's output.
    fn check_ones(onnx: &[u8], conv: &Converted, logits: bool) {
        let model = load(conv);
        let mut rng = WyRand::new(7);
        let ones: Vec<Vec<f32>> = conv
            .sites
            .iter()
            .map(|s| vec![1.0; T * s.sample_len()])
            .collect();
        let [_, c, h, w] = conv.input.1;
        for _ in 0..3 {
            let x = uniform(&mut rng, c * h * w, 2.0);
            let want = original(onnx, conv.input.1, &x, logits);
            assert_eq!(want.len(), conv.classes);
            let got = run(&model, &x, &ones);
            for row in got.chunks(conv.classes) {
                assert_close(row, &want, "masks of ones");
            }
        }
    }

    /// Check 2: with random masks, each row is `reference(x, that sample's masks)`.
    fn check_random(conv: &Converted, reference: impl Fn(&[f32], &[&[f32]]) -> Vec<f32>) {
        let model = load(conv);
        let mut rng = WyRand::new(11);
        let [_, c, h, w] = conv.input.1;
        for _ in 0..3 {
            let x = uniform(&mut rng, c * h * w, 2.0);
            let drawn: Vec<Vec<f32>> = conv
                .sites
                .iter()
                .map(|s| {
                    let mut m = vec![0.0; T * s.sample_len()];
                    masks::fill(&mut m, s.p, &mut rng);
                    m
                })
                .collect();
            let got = run(&model, &x, &drawn);
            for (t, row) in got.chunks(conv.classes).enumerate() {
                let sample: Vec<&[f32]> = conv
                    .sites
                    .iter()
                    .zip(&drawn)
                    .map(|(s, m)| &m[t * s.sample_len()..(t + 1) * s.sample_len()])
                    .collect();
                assert_close(row, &reference(&x, &sample), "random masks");
            }
        }
    }

    fn site(input: &str, p: f32, shape: &[usize]) -> DropoutSite {
        DropoutSite {
            input: input.into(),
            p,
            shape: shape.to_vec(),
        }
    }

    /// Weights of the MLP tests: x [1,1,4,4] → Flatten → Gemm 16→8 → Relu → (head) → Gemm 8→3.
    struct Mlp {
        w1: Vec<f32>,
        b1: Vec<f32>,
        w2: Vec<f32>,
        b2: Vec<f32>,
    }

    impl Mlp {
        fn new() -> Mlp {
            let mut rng = WyRand::new(3);
            Mlp {
                w1: uniform(&mut rng, 8 * 16, 0.5),
                b1: uniform(&mut rng, 8, 0.2),
                w2: uniform(&mut rng, 3 * 8, 1.0),
                b2: uniform(&mut rng, 3, 0.2),
            }
        }

        /// x → Flatten `flat` → Gemm `h1` → Relu `h`, with the weights as constants.
        fn trunk(&self, opset_ir3: bool) -> Graph {
            let mut g = Graph::new("t");
            g.input("x", &fixed(&[1, 1, 4, 4]))
                .constant(f32_tensor("w1", &[8, 16], &self.w1))
                .constant(f32_tensor("b1", &[8], &self.b1))
                .constant(f32_tensor("w2", &[3, 8], &self.w2))
                .constant(f32_tensor("b2", &[3], &self.b2))
                .node("Flatten", &["x"], "flat", vec![])
                .node("Gemm", &["flat", "w1", "b1"], "h1", vec![int("transB", 1)])
                .node("Relu", &["h1"], "h", vec![]);
            if opset_ir3 {
                // IR 3 lists the initializers among the graph inputs.
                g.input("w1", &fixed(&[8, 16]))
                    .input("b1", &fixed(&[8]))
                    .input("w2", &fixed(&[3, 8]))
                    .input("b2", &fixed(&[3]));
            }
            g
        }

        fn hidden(&self, x: &[f32]) -> Vec<f32> {
            relu(dense(&self.w1, &self.b1, x))
        }

        /// softmax(W2·(m ⊙ h) + b2).
        fn head(&self, h: &[f32], m: &[f32]) -> Vec<f32> {
            softmax(&dense(&self.w2, &self.b2, &masked(h, m)))
        }
    }

    #[test]
    fn dropout_at_opset_7_with_a_ratio_attribute_and_logits() {
        let mlp = Mlp::new();
        let mut g = mlp.trunk(true);
        g.node("Dropout", &["h"], "hd", vec![float("ratio", 0.3)])
            .node(
                "Gemm",
                &["hd", "w2", "b2"],
                "logits",
                vec![int("transB", 1)],
            )
            .output("logits", &fixed(&[1, 3]));
        let onnx = bytes(g, 7);
        let conv = convert(&onnx, &Options::default()).unwrap();
        assert_eq!(conv.input, ("x".to_string(), [1, 1, 4, 4]));
        assert_eq!(conv.sites, vec![site("mask_0", 0.3, &[8])]);
        assert_eq!((conv.output.as_str(), conv.classes), ("probs", 3));
        assert!(conv.softmax_appended);
        let out = pb::ModelProto::decode(&conv.onnx[..]).unwrap();
        assert_eq!((out.opset_import[0].version, out.ir_version), (7, 3));
        check_ones(&onnx, &conv, true);
        check_random(&conv, |x, m| mlp.head(&mlp.hidden(x), m[0]));
    }

    #[test]
    fn dropout_at_opset_10_before_an_existing_softmax() {
        let mlp = Mlp::new();
        let mut g = mlp.trunk(false);
        g.node("Dropout", &["h"], "hd", vec![float("ratio", 0.2)])
            .node(
                "Gemm",
                &["hd", "w2", "b2"],
                "logits",
                vec![int("transB", 1)],
            )
            .node("Softmax", &["logits"], "out", vec![])
            .output("out", &fixed(&[1, 3]));
        let onnx = bytes(g, 10);
        let conv = convert(&onnx, &Options::default()).unwrap();
        assert_eq!(conv.sites, vec![site("mask_0", 0.2, &[8])]);
        assert!(!conv.softmax_appended);
        check_ones(&onnx, &conv, false);
        check_random(&conv, |x, m| mlp.head(&mlp.hidden(x), m[0]));
    }

    #[test]
    fn dropout_at_opset_12_with_a_ratio_initializer() {
        let mlp = Mlp::new();
        let mut g = mlp.trunk(false);
        g.constant(f32_scalar("ratio", 0.25))
            .node("Dropout", &["h", "ratio"], "hd", vec![])
            .node(
                "Gemm",
                &["hd", "w2", "b2"],
                "logits",
                vec![int("transB", 1)],
            )
            .output("logits", &fixed(&[1, 3]));
        let onnx = bytes(g, 12);
        let conv = convert(&onnx, &Options::default()).unwrap();
        assert_eq!(conv.sites, vec![site("mask_0", 0.25, &[8])]);
        check_ones(&onnx, &conv, true);
        check_random(&conv, |x, m| mlp.head(&mlp.hidden(x), m[0]));
    }

    #[test]
    fn dropout_at_opset_13_with_ratio_training_mode_and_an_unused_mask() {
        let mlp = Mlp::new();
        let mut g = mlp.trunk(false);
        let ratio = pb::NodeProto {
            op_type: "Constant".into(),
            output: vec!["ratio".into()],
            attribute: vec![pb::AttributeProto {
                name: "value".into(),
                r#type: pb::attribute_proto::AttributeType::Tensor as i32,
                t: Some(f32_scalar("", 0.4)),
                ..Default::default()
            }],
            ..Default::default()
        };
        g.nodes.push(ratio);
        g.constant(tensor("train", &[], DataType::Bool, vec![0]));
        let dropout = node_n(
            "Dropout",
            "drop",
            &["h", "ratio", "train"],
            &["hd", "hmask"],
        );
        g.nodes.push(dropout);
        g.node(
            "Gemm",
            &["hd", "w2", "b2"],
            "logits",
            vec![int("transB", 1)],
        )
        .node("Softmax", &["logits"], "out", vec![])
        .output("out", &fixed(&[1, 3]));
        let onnx = bytes(g, 13);
        let conv = convert(&onnx, &Options::default()).unwrap();
        assert_eq!(conv.sites, vec![site("mask_0", 0.4, &[8])]);
        assert!(!conv.softmax_appended);
        let out = pb::ModelProto::decode(&conv.onnx[..]).unwrap();
        let graph = out.graph.unwrap();
        assert!(graph
            .node
            .iter()
            .all(|n| n.op_type != "Dropout" && n.op_type != "Constant"));
        assert!(graph.initializer.iter().all(|t| t.name != "train"));
        check_ones(&onnx, &conv, false);
        check_random(&conv, |x, m| mlp.head(&mlp.hidden(x), m[0]));
    }

    /// PyTorch's eval export: no Dropout, `x.view(..)` as a Reshape to a constant shape.
    fn pytorch_head(w: [&[f32]; 4], shape: &[i64], allowzero: bool) -> Vec<u8> {
        let mut g = Graph::new("t");
        let attrs = if allowzero {
            vec![int("allowzero", 1)]
        } else {
            vec![]
        };
        g.input("x", &fixed(&[1, 1, 4, 4]))
            .constant(f32_tensor("cw", &[2, 1, 1, 1], w[0]))
            .constant(f32_tensor("cb", &[2], w[1]))
            .constant(i64_tensor("shape", &[shape.len() as i64], shape))
            .constant(f32_tensor("fw", &[3, 32], w[2]))
            .constant(f32_tensor("fb", &[3], w[3]))
            .node("Conv", &["x", "cw", "cb"], "c", vec![])
            .node("Relu", &["c"], "feat", vec![])
            .node("Reshape", &["feat", "shape"], "flat", attrs)
            .node(
                "Gemm",
                &["flat", "fw", "fb"],
                "logits",
                vec![int("transB", 1)],
            )
            .output("logits", &fixed(&[1, 3]));
        bytes(g, 17)
    }

    #[test]
    fn a_named_site_before_a_pytorch_reshape() {
        let mut rng = WyRand::new(5);
        let (w, b) = (uniform(&mut rng, 2, 1.0), uniform(&mut rng, 2, 0.2));
        let (w2, b2) = (uniform(&mut rng, 96, 0.5), uniform(&mut rng, 3, 0.2));
        let weights = [&w[..], &b, &w2, &b2];
        let opts = Options {
            sites: vec![("feat".into(), 0.5)],
            output: None,
        };
        // (target shape, allowzero) → the target shape after conversion.
        let cases: [(&[i64], bool, &[i64]); 5] = [
            (&[1, -1], false, &[0, -1]),
            (&[1, 32], false, &[0, 32]),
            (&[-1, 32], false, &[-1, 32]),
            (&[1, 32], true, &[-1, 32]),
            (&[1, -1], true, &[-1, 32]),
        ];
        for (shape, allowzero, want) in cases {
            let onnx = pytorch_head(weights, shape, allowzero);
            let conv = convert(&onnx, &opts).unwrap();
            assert_eq!(conv.sites, vec![site("mask_0", 0.5, &[2, 4, 4])]);
            assert!(conv.softmax_appended);
            let graph = pb::ModelProto::decode(&conv.onnx[..])
                .unwrap()
                .graph
                .unwrap();
            let reshape = graph.node.iter().find(|n| n.op_type == "Reshape").unwrap();
            let got = ints(&constant(&graph, &reshape.input[1]).unwrap()).unwrap();
            assert_eq!(got, want, "{shape:?} allowzero {allowzero}");
            check_ones(&onnx, &conv, true);
            check_random(&conv, |x, m| {
                let feat = relu(conv1x1(&w, &b, x, 16));
                softmax(&dense(&w2, &b2, &masked(&feat, m[0])))
            });
        }

        let onnx = pytorch_head(weights, &[1, -1], false);
        assert_eq!(
            convert(&onnx, &Options::default()),
            Err(ConvertError::NoSites)
        );
        let candidates = list_sites(&onnx).unwrap();
        let tensors: Vec<(&str, &[usize], &str)> = candidates
            .iter()
            .map(|c| (c.tensor.as_str(), &c.shape[..], c.feeds.as_str()))
            .collect();
        assert_eq!(
            tensors,
            vec![
                ("x", &[1, 1, 4, 4][..], "Conv c"),
                ("flat", &[1, 32][..], "Gemm logits")
            ]
        );
    }

    #[test]
    fn frees_the_contract_names_and_refuses_old_opsets() {
        let mlp = Mlp::new();
        let mut g = mlp.trunk(false);
        g.node("Dropout", &["h"], "hd", vec![])
            .node(
                "Gemm",
                &["hd", "w2", "b2"],
                "logits",
                vec![int("transB", 1)],
            )
            .output("logits", &fixed(&[1, 3]));
        let mut model = pb::ModelProto::decode(&bytes(g, 17)[..]).unwrap();
        // The graph already has a `mask_0` (the activation) and a `probs` (its logits).
        rename(model.graph.as_mut().unwrap(), "h", "mask_0");
        rename(model.graph.as_mut().unwrap(), "logits", "probs");
        let onnx = model.encode_to_vec();
        let conv = convert(&onnx, &Options::default()).unwrap();
        assert_eq!(conv.sites, vec![site("mask_0", 0.5, &[8])]);
        assert!(conv.softmax_appended);
        check_ones(&onnx, &conv, true);
        check_random(&conv, |x, m| mlp.head(&mlp.hidden(x), m[0]));

        model.opset_import[0].version = 6;
        let err = convert(&model.encode_to_vec(), &Options::default());
        assert_eq!(err, Err(ConvertError::Opset(6)));

        // Weights in an external file (PyTorch's dynamo exporter writes them so by default).
        model.opset_import[0].version = 17;
        let w = &mut model.graph.as_mut().unwrap().initializer[0];
        w.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
        let name = w.name.clone();
        let err = convert(&model.encode_to_vec(), &Options::default());
        assert_eq!(err, Err(ConvertError::ExternalData(name)));
    }

    #[test]
    fn a_dropout_inside_a_subgraph_is_refused() {
        let mut body = Graph::new("then");
        body.node("Dropout", &["h"], "hd", vec![]);
        let if_node = pb::NodeProto {
            op_type: "If".into(),
            name: "branch".into(),
            input: vec!["cond".into()],
            output: vec!["y".into()],
            attribute: vec![pb::AttributeProto {
                name: "then_branch".into(),
                r#type: pb::attribute_proto::AttributeType::Graph as i32,
                g: Some(body.into_model("t", "0").graph.unwrap()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let graph = pb::GraphProto {
            node: vec![if_node],
            ..Default::default()
        };
        let Err(err) = find_sites(&graph, &[], &HashMap::new(), "y") else {
            panic!("a Dropout in an If body was not refused");
        };
        assert!(
            matches!(&err, ConvertError::Dropout { why, .. } if why.contains("inside the subgraph")),
            "{err}"
        );
    }

    #[test]
    fn two_sites_are_numbered_in_topological_order() {
        let mlp = Mlp::new();
        let mut g = mlp.trunk(false);
        g.node("Dropout", &["h"], "hd", vec![])
            .node(
                "Gemm",
                &["hd", "w2", "b2"],
                "logits",
                vec![int("transB", 1)],
            )
            .node("Softmax", &["logits"], "out", vec![int("axis", -1)])
            .output("out", &fixed(&[1, 3]));
        let onnx = bytes(g, 17);
        let opts = Options {
            sites: vec![("flat".into(), 0.1)],
            output: None,
        };
        let conv = convert(&onnx, &opts).unwrap();
        assert_eq!(
            conv.sites,
            vec![site("mask_0", 0.1, &[16]), site("mask_1", 0.5, &[8])]
        );
        assert!(!conv.softmax_appended);
        check_ones(&onnx, &conv, false);
        check_random(&conv, |x, m| mlp.head(&mlp.hidden(&masked(x, m[0])), m[1]));
    }

    /// x [batch,C,4,4] → Conv 1×1 → Relu → Dropout → Conv 1×1 classifier (→ Relu) → global
    /// average pool (→ Flatten).
    struct Squeeze {
        c: usize,
        w1: Vec<f32>,
        b1: Vec<f32>,
        w2: Vec<f32>,
        b2: Vec<f32>,
    }

    impl Squeeze {
        fn new(c: usize) -> Squeeze {
            let mut rng = WyRand::new(9);
            Squeeze {
                c,
                w1: uniform(&mut rng, 4 * c, 1.0),
                b1: uniform(&mut rng, 4, 0.2),
                w2: uniform(&mut rng, 3 * 4, 1.0),
                b2: uniform(&mut rng, 3, 0.2),
            }
        }

        fn graph(&self, batch: Dim, relu_flatten: bool) -> Graph {
            let c = self.c as i64;
            let mut g = Graph::new("t");
            g.input("x", &[batch, Dim::Fixed(c), Dim::Fixed(4), Dim::Fixed(4)])
                .constant(f32_tensor("w1", &[4, c, 1, 1], &self.w1))
                .constant(f32_tensor("b1", &[4], &self.b1))
                .constant(f32_tensor("w2", &[3, 4, 1, 1], &self.w2))
                .constant(f32_tensor("b2", &[3], &self.b2))
                .node("Conv", &["x", "w1", "b1"], "c1", vec![])
                .node("Relu", &["c1"], "f", vec![])
                .node("Dropout", &["f"], "fd", vec![float("ratio", 0.5)])
                .node("Conv", &["fd", "w2", "b2"], "c2", vec![]);
            if relu_flatten {
                g.node("Relu", &["c2"], "r", vec![])
                    .node("GlobalAveragePool", &["r"], "gap", vec![])
                    .node("Flatten", &["gap"], "logits", vec![])
                    .output("logits", &[batch, Dim::Fixed(3)]);
            } else {
                g.node("GlobalAveragePool", &["c2"], "gap", vec![])
                    .output("gap", &[batch, Dim::Fixed(3), Dim::Fixed(1), Dim::Fixed(1)]);
            }
            g
        }

        fn reference(&self, x: &[f32], m: &[f32], relu_after: bool) -> Vec<f32> {
            let f = relu(conv1x1(&self.w1, &self.b1, x, 16));
            let mut c2 = conv1x1(&self.w2, &self.b2, &masked(&f, m), 16);
            if relu_after {
                c2 = relu(c2);
            }
            softmax(&pool(&c2, 16))
        }
    }

    #[test]
    fn a_site_on_a_conv_feature_map_before_a_conv_classifier() {
        let net = Squeeze::new(3);
        let onnx = bytes(net.graph(Dim::Fixed(1), true), 17);
        let conv = convert(&onnx, &Options::default()).unwrap();
        assert_eq!(conv.input, ("x".to_string(), [1, 3, 4, 4]));
        assert_eq!(conv.sites, vec![site("mask_0", 0.5, &[4, 4, 4])]);
        assert!(conv.softmax_appended);
        check_ones(&onnx, &conv, true);
        check_random(&conv, |x, m| net.reference(x, m[0], true));
    }

    #[test]
    fn a_symbolic_batch_is_pinned_and_a_1x1_output_flattened() {
        let net = Squeeze::new(1);
        let mut model = net.graph(Dim::Samples, false).into_model("test", "0");
        // Rename the symbolic batch T → N, as exporters name it, also in stale value_info.
        let graph = model.graph.as_mut().unwrap();
        let mut f = builder::value_info(
            "f",
            &[Dim::Samples, Dim::Fixed(4), Dim::Fixed(4), Dim::Fixed(4)],
        );
        let infos = graph.input.iter_mut().chain(&mut graph.output);
        for info in infos.chain(std::iter::once(&mut f)) {
            let Some(pb::type_proto::Value::TensorType(t)) =
                info.r#type.as_mut().and_then(|t| t.value.as_mut())
            else {
                unreachable!()
            };
            use pb::tensor_shape_proto::dimension::Value;
            t.shape.as_mut().unwrap().dim[0].value = Some(Value::DimParam("N".into()));
        }
        graph.value_info.push(f);
        let onnx = model.encode_to_vec();
        let conv = convert(&onnx, &Options::default()).unwrap();
        assert_eq!(conv.input, ("x".to_string(), [1, 1, 4, 4]));
        assert_eq!(conv.sites, vec![site("mask_0", 0.5, &[4, 4, 4])]);
        assert!(conv.softmax_appended);
        let graph = pb::ModelProto::decode(&conv.onnx[..])
            .unwrap()
            .graph
            .unwrap();
        assert!(graph.node.iter().any(|n| n.op_type == "Flatten"));
        assert!(graph.value_info.is_empty());
        check_ones(&onnx, &conv, true);
        check_random(&conv, |x, m| net.reference(x, m[0], false));
    }

    #[test]
    fn picks_one_of_several_outputs() {
        let mlp = Mlp::new();
        let mut g = mlp.trunk(false);
        g.node("Dropout", &["h"], "hd", vec![])
            .node(
                "Gemm",
                &["hd", "w2", "b2"],
                "logits",
                vec![int("transB", 1)],
            )
            .output("logits", &fixed(&[1, 3]))
            .output("h", &fixed(&[1, 8]));
        let onnx = bytes(g, 17);
        let err = convert(&onnx, &Options::default()).unwrap_err();
        assert_eq!(
            err,
            ConvertError::Outputs(vec!["logits".into(), "h".into()])
        );
        let opts = |name: &str| Options {
            sites: vec![],
            output: Some(name.into()),
        };
        assert!(matches!(
            convert(&onnx, &opts("nope")),
            Err(ConvertError::UnknownOutput { .. })
        ));
        let conv = convert(&onnx, &opts("logits")).unwrap();
        let mut single = pb::ModelProto::decode(&onnx[..]).unwrap();
        single.graph.as_mut().unwrap().output.truncate(1);
        check_ones(&single.encode_to_vec(), &conv, true);
    }

    /// An MLP whose head after Dropout `hd` is `head`, then Gemm → logits.
    fn mlp_with(head: impl FnOnce(&mut Graph) -> &str) -> Vec<u8> {
        let mlp = Mlp::new();
        let mut g = mlp.trunk(false);
        g.node("Dropout", &["h"], "hd", vec![]);
        let last = head(&mut g).to_string();
        g.node(
            "Gemm",
            &[&last, "w2", "b2"],
            "logits",
            vec![int("transB", 1)],
        )
        .output("logits", &fixed(&[1, 3]));
        bytes(g, 17)
    }

    fn unbatchable(onnx: &[u8]) -> (String, String, String) {
        match convert(onnx, &Options::default()) {
            Err(e @ ConvertError::Unbatchable { .. }) => {
                assert!(!e.to_string().contains('\n'), "{e}");
                let ConvertError::Unbatchable { node, op, why } = e else {
                    unreachable!()
                };
                (node, op, why)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_what_cannot_carry_the_samples() {
        // A Reshape to a shape computed (at batch 1) from the trunk.
        let onnx = mlp_with(|g| {
            g.node("Shape", &["h"], "hs", vec![])
                .node("Reshape", &["hd", "hs"], "r", vec![]);
            "r"
        });
        let (node, op, why) = unbatchable(&onnx);
        assert_eq!((node.as_str(), op.as_str()), ("r", "Reshape"));
        assert!(why.contains("computed"), "{why}");

        // A Reshape whose constant shape leads with 2.
        let onnx = mlp_with(|g| {
            g.constant(i64_tensor("s", &[3], &[2, 2, 2]))
                .constant(i64_tensor("back", &[2], &[1, 8]))
                .node("Reshape", &["hd", "s"], "r", vec![])
                .node("Reshape", &["r", "back"], "r2", vec![]);
            "r2"
        });
        let (node, _, why) = unbatchable(&onnx);
        assert_eq!(node, "r");
        assert!(why.contains("starts with 2"), "{why}");

        // A Gather on axis 0.
        let onnx = mlp_with(|g| {
            g.constant(i64_tensor("i", &[1], &[0]))
                .node("Gather", &["hd", "i"], "g", vec![]);
            "g"
        });
        let (_, op, why) = unbatchable(&onnx);
        assert_eq!(op, "Gather");
        assert!(why.contains("sample axis"), "{why}");

        // The shape of a tensor after a site.
        let onnx = mlp_with(|g| {
            g.node("Shape", &["hd"], "s", vec![])
                .node("Reshape", &["hd", "s"], "r", vec![]);
            "r"
        });
        assert_eq!(unbatchable(&onnx).1, "Shape");
    }

    #[test]
    fn refuses_a_used_dropout_mask_and_bad_sites() {
        let mlp = Mlp::new();
        let mut g = mlp.trunk(false);
        g.nodes
            .push(node_n("Dropout", "drop", &["h"], &["hd", "hm"]));
        g.node(
            "Cast",
            &["hm"],
            "hmf",
            vec![int("to", DataType::Float as i64)],
        )
        .node("Add", &["hd", "hmf"], "sum", vec![])
        .node(
            "Gemm",
            &["sum", "w2", "b2"],
            "logits",
            vec![int("transB", 1)],
        )
        .output("logits", &fixed(&[1, 3]));
        let onnx = bytes(g, 13);
        let err = convert(&onnx, &Options::default()).unwrap_err();
        assert!(
            matches!(&err, ConvertError::Dropout { node, why } if node == "drop" && why.contains("hmf")),
            "{err}"
        );

        let onnx = mlp_with(|_| "hd");
        let with = |tensor: &str, p: f32| Options {
            sites: vec![(tensor.into(), p)],
            output: None,
        };
        assert_eq!(
            convert(&onnx, &with("nope", 0.5)),
            Err(ConvertError::UnknownTensor("nope".into()))
        );
        for p in [1.0, -0.1, f32::NAN] {
            assert!(matches!(
                convert(&onnx, &with("flat", p)),
                Err(ConvertError::SiteP { .. })
            ));
        }
        assert_eq!(
            convert(&onnx, &with("hd", 0.5)),
            Err(ConvertError::SiteTwice("hd".into()))
        );
        let err = convert(&onnx, &with("w1", 0.5)).unwrap_err();
        assert!(matches!(err, ConvertError::Site { .. }), "{err}");
        for e in [err, ConvertError::NoSites, ConvertError::Opset(6)] {
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }
}
