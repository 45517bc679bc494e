//! Translate time: find the dropout sites whose masked value feeds a dense layer, and cut the
//! graph around them so the runtime can run that layer as a sparse difference.
//!
//! The T samples of a site share one activation vector `a` (batch 1, computed before any
//! mask) and differ only in which of its units are dropped. With s = 1/(1−p) and a layer
//! `y = W·x`, sample t is `y_t = W·(m_t ⊙ a) = W·(s·a) + Σ_{i: m_ti ≠ s} (m_ti − s)·a_i·W_i`:
//! one product over the non-zero `a_i`, then per sample only the dropped non-zero rows of W.
//! A site qualifies when, in the typed graph:
//! - its mask input feeds exactly one `Mul`, whose other operand is a one-frame F32 value
//!   computed from the image alone (no other site's mask upstream);
//! - the product reaches, through shape-only ops that keep the order of values (`Reshape`,
//!   adding or removing unit axes), an F32 `EinSum` with one constant, finite weight matrix
//!   whose output is `[T, outputs]` (ONNX `Gemm` and `MatMul` with constant weights become
//!   this); or, the int8 export's form, a `QuantizeLinearU8` (zero point 0) read by quantised
//!   `EinSum`s (u8 × i8, zero points 0, u8 output; `QLinearMatMul`) that one `Concat` on the
//!   output axis joins (or just one of them).
//!
//! The graph is then cut in two: the *trunk* (image → every qualifying site's `a`, batch 1)
//! and the *rest* (each such layer's output as a new `[T, outputs]` input, the other sites'
//! masks, → the model output). A model whose rest would still read the image runs whole.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::quant::QuantizeLinearU8;

use crate::contract::card::ModelCard;
use crate::engine::SitePath;

/// A qualifying site, located in the typed graph.
#[derive(Debug, Clone)]
struct Found {
    /// The one-frame activation `a` the mask multiplies.
    activation: OutletId,
    /// The dense layer's output, `[T, outputs]`.
    layer_output: OutletId,
    /// The dense layer's node name.
    layer: String,
    weights: FoundWeights,
    inputs: usize,
    outputs: usize,
}

/// A layer's weights as found, read out only when a plan is built.
#[derive(Debug, Clone)]
enum FoundWeights {
    Float(Product),
    /// The masked value quantised (`QuantizeLinearU8` multiplying by `quantise`, zero point
    /// 0), then one or more quantised products whose outputs are concatenated, in order.
    Int8 {
        quantise: f32,
        parts: Vec<QProduct>,
    },
}

/// One matrix product's constant weights.
#[derive(Debug, Clone)]
struct Product {
    weights: Arc<Tensor>,
    /// Which of the weights' two axes is contracted with the activation's values.
    contracted: usize,
    outputs: usize,
}

/// A quantised product (u8 activation, i8 weights, zero points 0, i32 accumulator) and its
/// requantisation to u8: `clamp(q_scale(acc + bias, scale) + zero_point, 0, 255)`.
#[derive(Debug, Clone)]
struct QProduct {
    product: Product,
    bias: Arc<Tensor>,
    scale: f32,
    zero_point: i32,
}

impl Product {
    /// The weights row-major `[inputs, outputs]`: row i, contiguous, is what the per-sample
    /// update streams.
    fn rows<T: Datum + Copy + Default>(&self, layer: &str) -> TractResult<Vec<T>> {
        let weights = self.weights.cast_to::<T>()?;
        let view = weights.to_plain_array_view::<T>()?;
        let w = view
            .as_slice()
            .ok_or_else(|| anyhow::anyhow!("{layer}: weights not contiguous"))?;
        if self.contracted == 0 {
            return Ok(w.to_vec());
        }
        // [outputs, inputs] → [inputs, outputs], in tiles that stay in cache (a strided
        // ndarray walk took 40 % of the start-up).
        let outputs = self.outputs;
        let inputs = w.len() / outputs;
        let mut rows = vec![T::default(); w.len()];
        const TILE: usize = 32;
        for o0 in (0..outputs).step_by(TILE) {
            for i0 in (0..inputs).step_by(TILE) {
                for o in o0..(o0 + TILE).min(outputs) {
                    for i in i0..(i0 + TILE).min(inputs) {
                        rows[i * outputs + o] = w[o * inputs + i];
                    }
                }
            }
        }
        Ok(rows)
    }
}

impl Found {
    fn weights(&self) -> TractResult<LayerWeights> {
        Ok(match &self.weights {
            FoundWeights::Float(product) => LayerWeights::Float(product.rows(&self.layer)?),
            FoundWeights::Int8 { quantise, parts } => {
                let mut rows = vec![0i8; self.inputs * self.outputs];
                let (mut bias, mut scale, mut zero_point) = (vec![], vec![], vec![]);
                let mut column = 0;
                for part in parts {
                    let n = part.product.outputs;
                    let part_rows = part.product.rows::<i8>(&self.layer)?;
                    for (i, row) in part_rows.chunks_exact(n).enumerate() {
                        rows[i * self.outputs + column..][..n].copy_from_slice(row);
                    }
                    let b = part.bias.cast_to::<i32>()?;
                    let b = b.to_plain_array_view::<i32>()?;
                    match b.len() {
                        1 => bias.extend(std::iter::repeat_n(
                            b.iter().next().copied().unwrap_or(0),
                            n,
                        )),
                        len if len == n => bias.extend(b.iter().copied()),
                        len => {
                            anyhow::bail!("{}: bias of {len} values for {n} outputs", self.layer)
                        }
                    }
                    scale.extend(std::iter::repeat_n(part.scale, n));
                    zero_point.extend(std::iter::repeat_n(part.zero_point, n));
                    column += n;
                }
                LayerWeights::Int8(Int8Weights {
                    rows,
                    quantise: *quantise,
                    bias,
                    scale,
                    zero_point,
                })
            }
        })
    }
}

/// What the runtime multiplies a sparse site's activation by.
#[derive(Debug, Clone)]
pub enum LayerWeights {
    /// F32, row-major `[inputs, outputs]`: row `i` multiplies activation value `i`.
    Float(Vec<f32>),
    /// The quantised form: activation → u8 → i8 product → i32 → u8.
    Int8(Int8Weights),
}

/// A quantised layer: `x_q = quantize_linear_f32_u8(m·a, quantise, 0)`, then per output o
/// `clamp(q_scale(Σ_i x_q,i·rows[i, o] + bias[o], scale[o]) + zero_point[o], 0, 255)`: tract's
/// own arithmetic for a `QuantizeLinear` → `QLinearMatMul` pair (u8 activations, i8 weights,
/// zero points 0), which the runtime reproduces bit for bit.
#[derive(Debug, Clone)]
pub struct Int8Weights {
    /// i8, row-major `[inputs, outputs]`.
    pub rows: Vec<i8>,
    /// The `QuantizeLinearU8` multiplier (1 / the activation's scale).
    pub quantise: f32,
    /// Per output: the i32 bias, the requantisation scale (a·w/y scales), the output zero
    /// point.
    pub bias: Vec<i32>,
    /// See `bias`.
    pub scale: Vec<f32>,
    /// See `bias`.
    pub zero_point: Vec<i32>,
}

/// One sparse site of a [`Split`], in card order.
#[derive(Debug, Clone)]
pub struct SparseLayer {
    /// The site's index in the card's `dropout_sites`.
    pub site: usize,
    /// The name of the rest graph's input that takes this layer's output.
    pub source: String,
    /// The weights, float or quantised.
    pub weights: LayerWeights,
    /// Values in one activation (= one sample's mask).
    pub inputs: usize,
    /// The layer's output width.
    pub outputs: usize,
}

/// A graph cut around its sparse sites.
#[derive(Debug, Clone)]
pub struct Split {
    /// Image → one output per sparse layer, its activation `a` (batch 1), in `layers` order.
    pub trunk: TypedModel,
    /// Inputs: one `[T, outputs]` per sparse layer (in `layers` order), then the masks of the
    /// dense sites (card order); output: the model's.
    pub rest: TypedModel,
    /// The sparse sites.
    pub layers: Vec<SparseLayer>,
    /// Where the density comes from, for a card that names one.
    pub density: Option<DensitySource>,
}

/// Where a split plan's density (`log_density`, one value per frame) comes from.
#[derive(Debug, Clone)]
pub enum DensitySource {
    /// Trunk output k (after the activations): the branch reads the image its own way, once
    /// per frame with the trunk.
    Trunk(usize),
    /// The branch's first product is sparse layer `layer`'s (same activation, same weights),
    /// unmasked: the head's shared term `W·(s·a)` divided by s feeds `graph`
    /// (`[1, outputs]` → `[1, 1]`), so the layer's weights are multiplied and held once.
    Layer {
        /// The index in [`Split::layers`].
        layer: usize,
        /// The branch after the product.
        graph: TypedModel,
    },
}

/// How each of the card's dropout sites would run (for `mcgate info`).
pub fn site_paths(typed: &TypedModel, card: &ModelCard) -> Vec<SitePath> {
    analyse(typed, card)
        .into_iter()
        .map(|f| match f {
            Ok(f) => SitePath::Sparse {
                int8: matches!(f.weights, FoundWeights::Int8 { .. }),
                layer: f.layer,
                inputs: f.inputs,
                outputs: f.outputs,
            },
            Err(reason) => SitePath::Dense { reason },
        })
        .collect()
}

/// Cuts `typed` around its sparse sites; `None` when no site qualifies (or the rest of the
/// graph would still need the image), and the plain plan runs.
pub fn split(typed: &TypedModel, card: &ModelCard) -> TractResult<Option<Split>> {
    let found = analyse(typed, card);
    if !found.iter().any(Result::is_ok) {
        return Ok(None);
    }
    let image = typed.node_by_name(&card.input.name)?.id;
    let mut layers = vec![];
    let mut activations = vec![];
    let mut rest = typed.clone();
    let mut rest_inputs = vec![];
    for (site, f) in found.iter().enumerate() {
        let Ok(f) = f else { continue };
        activations.push(f.activation);
        let name = format!("{}.sparse", f.layer);
        let source = rest.add_source(name.clone(), typed.outlet_fact(f.layer_output)?.clone())?;
        let successors = typed.outlet_successors(f.layer_output).to_vec();
        for inlet in successors {
            rest.add_edge(source, inlet)?;
        }
        for output in rest.outputs.iter_mut() {
            if *output == f.layer_output {
                *output = source;
            }
        }
        rest_inputs.push(source);
        layers.push(SparseLayer {
            site,
            source: name,
            weights: f.weights()?,
            inputs: f.inputs,
            outputs: f.outputs,
        });
    }
    for (site, f) in card.dropout_sites.iter().zip(&found) {
        if f.is_err() {
            rest_inputs.push(OutletId::new(typed.node_by_name(&site.input)?.id, 0));
        }
    }
    rest.set_input_outlets(&rest_inputs)?;
    // The rest gives the probabilities only; a density branch left in it reads nothing it
    // is fed, and optimisation drops it.
    let probs = rest.outputs[0];
    rest.select_output_outlets(&[probs])?;
    let mut trunk = typed.clone();
    trunk.set_input_outlets(&[OutletId::new(image, 0)])?;
    let density = match density_outlet(typed, card)? {
        None => None,
        Some(outlet) => Some(match shared_product(typed, card, &found, &layers, outlet) {
            Some((layer, product)) => DensitySource::Layer {
                layer,
                graph: branch_after(typed, product, outlet)?,
            },
            None => {
                activations.push(outlet);
                DensitySource::Trunk(activations.len() - 1)
            }
        }),
    };
    trunk.select_output_outlets(&activations)?;
    Ok(Some(Split {
        trunk,
        rest,
        layers,
        density,
    }))
}

/// The sparse layer (its index in `layers`) whose product the density branch starts with,
/// and that product's output in `typed`: a float layer whose head keeps a shared term
/// (p ≤ 1/2), whose activation reaches an F32 product with equal weights through shape-only
/// ops, where that product is the branch's only way back to the image.
fn shared_product(
    typed: &TypedModel,
    card: &ModelCard,
    found: &[Result<Found, String>],
    layers: &[SparseLayer],
    density: OutletId,
) -> Option<(usize, OutletId)> {
    let image = typed.node_by_name(&card.input.name).ok()?.id;
    for (k, layer) in layers.iter().enumerate() {
        let Ok(
            f @ Found {
                weights: FoundWeights::Float(weights),
                ..
            },
        ) = &found[layer.site]
        else {
            continue;
        };
        if card.dropout_sites[layer.site].p > 0.5 {
            continue;
        }
        for inlet in typed.outlet_successors(f.activation) {
            let mut at = f.activation;
            let mut next = typed.node(inlet.node);
            while matches!(
                next.op_as::<AxisOp>(),
                Some(AxisOp::Reshape(..) | AxisOp::Add(_) | AxisOp::Rm(_))
            ) {
                at = OutletId::new(next.id, 0);
                match typed.outlet_successors(at) {
                    [one] => next = typed.node(one.node),
                    _ => break,
                }
            }
            let shape = typed.outlet_fact(at).ok()?.shape.as_concrete()?.to_vec();
            let same = shape == [1, f.inputs]
                && product(typed, next, at, false).is_ok_and(|p| {
                    p.contracted == weights.contracted && *p.weights == *weights.weights
                });
            let out = OutletId::new(next.id, 0);
            if same && reaches_image_only_through(typed, density, out.node, image) == Some(true) {
                return Some((k, out));
            }
        }
    }
    None
}

/// Whether the value at `from` depends on the image through `via` alone (`Some(false)`: it
/// reads the image some other way too; `None`: not at all).
fn reaches_image_only_through(
    typed: &TypedModel,
    from: OutletId,
    via: usize,
    image: usize,
) -> Option<bool> {
    let mut stack = vec![from.node];
    let mut seen = std::collections::HashSet::new();
    let mut through = false;
    while let Some(node) = stack.pop() {
        if !seen.insert(node) {
            continue;
        }
        if node == via {
            through = true;
            continue;
        }
        if node == image {
            return Some(false);
        }
        stack.extend(typed.node(node).inputs.iter().map(|i| i.node));
    }
    through.then_some(true)
}

/// The graph from `product`'s output (a new input, `[1, outputs]`) to the density.
fn branch_after(
    typed: &TypedModel,
    product: OutletId,
    density: OutletId,
) -> TractResult<TypedModel> {
    let mut branch = typed.clone();
    let source = branch.add_source(
        "density.product".to_string(),
        typed.outlet_fact(product)?.clone(),
    )?;
    for inlet in typed.outlet_successors(product).to_vec() {
        branch.add_edge(source, inlet)?;
    }
    branch.set_input_outlets(&[source])?;
    branch.select_output_outlets(&[density])?;
    // Only the branch's own nodes: the copy of the trunk it was cut from goes now, not
    // after the optimiser has rewritten it too.
    branch.compact()?;
    Ok(branch)
}

/// Every site, card order: its pattern, or why it takes the plain plan (every site does
/// when the rest of the graph would still read the image).
fn analyse(typed: &TypedModel, card: &ModelCard) -> Vec<Result<Found, String>> {
    let found: Vec<_> = card
        .dropout_sites
        .iter()
        .map(|site| find(typed, card, &site.input, site.sample_len()))
        .collect();
    match rest_reads_image(typed, card, &found) {
        Some(reason) => found
            .into_iter()
            .map(|f| f.and_then(|_| Err(reason.clone())))
            .collect(),
        None => found,
    }
}

/// Why the rest of the graph would still need the image, if it does: the cut would then
/// run part of the trunk twice, so the whole model takes the plain plan.
fn rest_reads_image(
    typed: &TypedModel,
    card: &ModelCard,
    found: &[Result<Found, String>],
) -> Option<String> {
    let cut: Vec<usize> = found
        .iter()
        .flatten()
        .map(|f| f.layer_output.node)
        .collect();
    let image = typed.node_by_name(&card.input.name).ok()?.id;
    // Walk back from the probabilities, stopping at the cut layers (a density output reads
    // the image by design: it runs with the trunk).
    let mut stack: Vec<usize> = typed.outputs.iter().take(1).map(|o| o.node).collect();
    let mut seen = std::collections::HashSet::new();
    while let Some(node) = stack.pop() {
        if cut.contains(&node) || !seen.insert(node) {
            continue;
        }
        if node == image {
            return Some("the graph after its dense layers also reads the image".into());
        }
        stack.extend(typed.node(node).inputs.iter().map(|i| i.node));
    }
    None
}

/// Locates the pattern for the site whose mask input is `mask`, or says which node breaks it.
fn find(typed: &TypedModel, card: &ModelCard, mask: &str, len: usize) -> Result<Found, String> {
    let node = typed
        .node_by_name(mask)
        .map_err(|_| format!("no input {mask}"))?;
    let succ = typed.outlet_successors(OutletId::new(node.id, 0));
    let [mul] = succ else {
        return Err(format!("{mask} feeds {} nodes, not one Mul", succ.len()));
    };
    let mul = typed.node(mul.node);
    let is_mul = mul
        .op_as::<TypedBinOp>()
        .is_some_and(|op| op.0.name() == "Mul");
    if !is_mul || mul.inputs.len() != 2 {
        return Err(format!(
            "{mask} feeds {} ({}), not a Mul",
            mul.name,
            mul.op.name()
        ));
    }
    let activation = *mul
        .inputs
        .iter()
        .find(|i| i.node != node.id)
        .ok_or_else(|| format!("{} multiplies the mask by itself", mul.name))?;
    if let Some(source) = upstream_sources(typed, activation.node)
        .into_iter()
        .find(|&s| typed.node(s).name != card.input.name)
    {
        return Err(format!(
            "the activation at {} depends on {}",
            mul.name,
            typed.node(source).name
        ));
    }
    let fact = typed
        .outlet_fact(activation)
        .map_err(|e| format!("{}: {e}", mul.name))?;
    // `a` is `[1, ..site shape]`, so value i of a sample's mask multiplies `a_i`.
    let site_shape = &typed
        .outlet_fact(OutletId::new(node.id, 0))
        .map_err(|e| e.to_string())?
        .shape;
    let one_frame = fact.shape.as_concrete().is_some_and(|s| {
        s.len() == site_shape.len()
            && s[0] == 1
            && s[1..]
                .iter()
                .map(|&d| d.to_dim())
                .eq(site_shape.iter().skip(1).cloned())
    });
    if fact.datum_type != f32::datum_type() || !one_frame {
        return Err(format!(
            "{} multiplies the mask by {:?} {:?}, not one frame's F32 [1, ..{len} values]",
            mul.name, fact.datum_type, fact.shape
        ));
    }
    // Shape-only ops that keep the values' order, down to the dense layer.
    let mut at = OutletId::new(mul.id, 0);
    let layer = loop {
        let succ = typed.outlet_successors(at);
        let [next] = succ else {
            return Err(format!(
                "the masked value at {} feeds {} nodes, not one dense layer",
                typed.node(at.node).name,
                succ.len()
            ));
        };
        let next = typed.node(next.node);
        match next.op_as::<AxisOp>() {
            // Unit axes added or removed and row-major reshapes keep the values' order; the
            // sample axis must still be first (checked on the layer's input below).
            Some(AxisOp::Reshape(..) | AxisOp::Add(_) | AxisOp::Rm(_)) => {
                at = OutletId::new(next.id, 0);
            }
            _ => break next,
        }
    };
    let x_shape = typed
        .outlet_fact(at)
        .map_err(|e| format!("{}: {e}", layer.name))?
        .shape
        .to_tvec();
    if x_shape.len() != 2 || x_shape[0] != site_shape[0] || x_shape[1] != len.to_dim() {
        return Err(format!(
            "the masked value reaches {} as {x_shape:?}, not [T, {len}]",
            layer.name
        ));
    }
    let quantiser = layer
        .op_as::<ElementWiseOp>()
        .and_then(|op| op.0.downcast_ref::<QuantizeLinearU8>());
    let (layer_output, name, weights, outputs) = match quantiser {
        Some(q) => {
            if q.zero_point != 0 {
                return Err(format!(
                    "{} quantises with zero point {}",
                    layer.name, q.zero_point
                ));
            }
            let (output, name, parts) = quantised_products(typed, layer)?;
            let outputs = parts.iter().map(|p| p.product.outputs).sum();
            let weights = FoundWeights::Int8 {
                quantise: q.scale,
                parts,
            };
            (output, name, weights, outputs)
        }
        None => {
            let product = product(typed, layer, at, false)?;
            let outputs = product.outputs;
            let output = OutletId::new(layer.id, 0);
            (
                output,
                layer.name.clone(),
                FoundWeights::Float(product),
                outputs,
            )
        }
    };
    Ok(Found {
        activation,
        layer_output,
        layer: name,
        weights,
        inputs: len,
        outputs,
    })
}

/// The quantised products reading `quantiser`'s output: one, or several whose outputs one
/// `Concat` on the output axis joins (the int8 export splits a layer in two). Returns the
/// outlet the rest of the graph reads, its node's name and the parts in output order.
fn quantised_products(
    typed: &TypedModel,
    quantiser: &TypedNode,
) -> Result<(OutletId, String, Vec<QProduct>), String> {
    let q_out = OutletId::new(quantiser.id, 0);
    let readers: Vec<&TypedNode> = typed
        .outlet_successors(q_out)
        .iter()
        .map(|inlet| typed.node(inlet.node))
        .collect();
    let (output, order): (OutletId, Vec<usize>) = match readers.as_slice() {
        [one] => (OutletId::new(one.id, 0), vec![one.id]),
        many => {
            let concat =
                many.iter()
                    .find_map(|r| match typed.outlet_successors(OutletId::new(r.id, 0)) {
                        [only] => Some(typed.node(only.node)),
                        _ => None,
                    });
            let Some(concat) = concat.filter(|c| {
                c.op_as::<tract_onnx::tract_core::ops::array::TypedConcat>()
                    .is_some_and(|op| op.axis == 1)
            }) else {
                return Err(format!(
                    "{} feeds {} nodes, not one product or products joined by a Concat",
                    quantiser.name,
                    many.len()
                ));
            };
            let order: Vec<usize> = concat.inputs.iter().map(|i| i.node).collect();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            let mut readers_ids: Vec<usize> = many.iter().map(|r| r.id).collect();
            readers_ids.sort_unstable();
            if sorted != readers_ids
                || many
                    .iter()
                    .any(|r| typed.outlet_successors(OutletId::new(r.id, 0)).len() != 1)
            {
                return Err(format!(
                    "{} joins other values than the products of {}",
                    concat.name, quantiser.name
                ));
            }
            (OutletId::new(concat.id, 0), order)
        }
    };
    let mut parts = vec![];
    for id in order {
        let node = typed.node(id);
        let product = product(typed, node, q_out, true)?;
        let konst = |slot: usize| -> Result<Arc<Tensor>, String> {
            typed
                .node(node.inputs[slot].node)
                .op_as::<Const>()
                .map(|c| c.val().clone())
                .ok_or_else(|| {
                    format!(
                        "{}: quantisation parameter {slot} is not a constant",
                        node.name
                    )
                })
        };
        let scalar = |slot: usize| -> Result<f32, String> {
            let t = konst(slot)?;
            let t = t
                .cast_to::<f32>()
                .map_err(|e| format!("{}: {e}", node.name))?;
            let view = t
                .to_plain_array_view::<f32>()
                .map_err(|e| format!("{}: {e}", node.name))?;
            match view.as_slice() {
                Some([v]) => Ok(*v),
                _ => Err(format!(
                    "{}: quantisation parameter {slot} is not one value",
                    node.name
                )),
            }
        };
        // Inputs: a, b, bias, a0, a_scale, b0, b_scale, c0, c_scale.
        if scalar(3)? != 0.0 || scalar(5)? != 0.0 {
            return Err(format!("{} has non-zero input zero points", node.name));
        }
        // tract combines the scales as (a · b) / c in f32 (ops::matmul::quant).
        let scale = scalar(4)? * scalar(6)? / scalar(8)?;
        parts.push(QProduct {
            product,
            bias: konst(2)?,
            scale,
            zero_point: scalar(7)? as i32,
        });
    }
    Ok((output, typed.node(output.node).name.clone(), parts))
}

/// Checks that `layer` is `y[t, o] = Σ_i x[t, i]·W[.., ..]` over the value `x` at `input`
/// (F32, or with `quantised` a u8 × i8 → u8 product with its nine inputs), with constant,
/// finite weights, and returns them.
fn product(
    typed: &TypedModel,
    layer: &TypedNode,
    input: OutletId,
    quantised: bool,
) -> Result<Product, String> {
    let Some(einsum) = layer.op_as::<EinSum>() else {
        return Err(format!(
            "the masked value feeds {} ({}), not a dense layer",
            layer.name,
            layer.op.name()
        ));
    };
    let slot = layer
        .inputs
        .iter()
        .position(|&i| i == input)
        .filter(|&s| s < 2)
        .ok_or_else(|| format!("{} does not read the masked value", layer.name))?;
    let expected = if quantised {
        einsum.q_params == Some(u8::datum_type()) && layer.inputs.len() == 9
    } else {
        einsum.q_params.is_none()
            && einsum.operating_dt == f32::datum_type()
            && layer.inputs.len() == 2
    };
    if !expected {
        return Err(format!(
            "{} is not an {} matrix product",
            layer.name,
            if quantised { "u8 quantised" } else { "F32" }
        ));
    }
    let weight_outlet = layer.inputs[1 - slot];
    let weights = typed
        .node(weight_outlet.node)
        .op_as::<Const>()
        .map(|c| c.val().clone())
        .ok_or_else(|| format!("{}'s weights are not a constant", layer.name))?;
    if quantised && weights.datum_type().unquantized() != i8::datum_type() {
        return Err(format!(
            "{}'s weights are {:?}, not i8",
            layer.name,
            weights.datum_type()
        ));
    }
    // 0 × NaN is NaN: in the graph a non-finite weight poisons every output whatever the
    // frame, so the gate rejects it; skipping the zero activations would hide it.
    let finite = quantised
        || weights.cast_to::<f32>().ok().and_then(|w| {
            let view = w.to_plain_array_view::<f32>().ok()?;
            view.as_slice().map(|w| w.iter().all(|v| v.is_finite()))
        }) == Some(true);
    if !finite {
        return Err(format!(
            "{}'s weights are not all finite (the plain plan lets the NaN reach the output)",
            layer.name
        ));
    }
    if weights.rank() != 2 {
        return Err(format!(
            "{}'s weights are {:?}, not a matrix",
            layer.name,
            weights.shape()
        ));
    }
    // The sample axis kept, the value axis contracted with one of W's axes, W's other axis
    // the output's second; a quantised EinSum's seven parameter inputs carry no axis.
    let mut contracted_in_w = None;
    let mut axes = 0;
    for axis in einsum.axes.iter_all_axes() {
        let (x, w, out) = (&axis.inputs[slot], &axis.inputs[1 - slot], &axis.outputs[0]);
        let on_parameters = axis.inputs.iter().skip(2).any(|i| !i.is_empty());
        match (x.as_slice(), w.as_slice(), out.as_slice(), on_parameters) {
            ([0], [], [0], false) => {}
            ([1], [k], [], false) => contracted_in_w = Some(*k),
            ([], [_], [1], false) => {}
            _ => {
                return Err(format!(
                    "{} is {}, not a dense layer [T, in] × weights → [T, out]",
                    layer.name, einsum.axes
                ))
            }
        }
        axes += 1;
    }
    let (Some(k), 3) = (contracted_in_w, axes) else {
        return Err(format!(
            "{} is {}, not a dense layer [T, in] × weights → [T, out]",
            layer.name, einsum.axes
        ));
    };
    Ok(Product {
        outputs: weights.shape()[1 - k],
        weights,
        contracted: k,
    })
}

/// The graph output the card names as its density, if it names one.
fn density_outlet(typed: &TypedModel, card: &ModelCard) -> TractResult<Option<OutletId>> {
    let Some(name) = &card.output.log_density else {
        return Ok(None);
    };
    typed
        .outputs
        .iter()
        .find(|o| typed.outlet_label(**o) == Some(name.as_str()))
        .copied()
        .map(Some)
        .ok_or_else(|| anyhow::anyhow!("the graph has no output named {name}"))
}

/// The source nodes `node` depends on.
fn upstream_sources(typed: &TypedModel, node: usize) -> Vec<usize> {
    let mut stack = vec![node];
    let mut seen = std::collections::HashSet::new();
    let mut sources = vec![];
    while let Some(n) = stack.pop() {
        if !seen.insert(n) {
            continue;
        }
        let node = typed.node(n);
        if node.inputs.is_empty()
            && node.op_is::<tract_onnx::tract_core::ops::source::TypedSource>()
        {
            sources.push(n);
        }
        stack.extend(node.inputs.iter().map(|i| i.node));
    }
    sources
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::card::tests::sample_card;
    use crate::contract::onnx::{f32_tensor, int, Graph};
    use crate::model::Model;
    use crate::run::plan::{Plan, Strategy};
    use crate::run::rng::WyRand;
    use proptest::prelude::*;

    /// x [1,1,4,4] → Flatten → Relu → (what `body` wires from "act" to "logits") → Softmax,
    /// with one dropout site `mask_0` of `inputs` = 16 values and `classes` outputs.
    fn model(p: f32, classes: usize, seed: u64, body: impl FnOnce(&mut Graph)) -> Model {
        model_with(p, classes, seed, body, None)
    }

    /// [`model`], and with `density` a second output `log_density` [1, 1], read before the
    /// mask (as a feature density reads the unmasked features): the sum of "act"
    /// ([`SUM_OF_ACT`]) or of ReLU(the site's own layer on "act") ([`SUM_OF_LAYER`]).
    fn model_with(
        p: f32,
        classes: usize,
        seed: u64,
        body: impl FnOnce(&mut Graph),
        density: Option<fn(&mut Graph)>,
    ) -> Model {
        let mut card = sample_card();
        if density.is_some() {
            card.schema = crate::contract::card::SCHEMA_V3.into();
            card.output.log_density = Some("log_density".into());
        }
        card.classes = (0..classes).map(|c| c.to_string()).collect();
        card.dropout_sites[0].shape = vec![16];
        card.dropout_sites[0].p = p;
        let mut g = Graph::contract(
            "t",
            &card.input,
            &card.dropout_sites,
            &card.output.name,
            classes,
        );
        let mut rng = WyRand::new(seed);
        let mut uniform = || (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
        let w: Vec<f32> = (0..classes * 16).map(|_| uniform()).collect();
        let b: Vec<f32> = (0..classes).map(|_| uniform()).collect();
        let shift: Vec<f32> = (0..16).map(|_| uniform()).collect();
        g.constant(f32_tensor("w", &[classes as i64, 16], &w))
            .constant(f32_tensor("b", &[classes as i64], &b))
            .constant(f32_tensor("shift", &[1, 16], &shift))
            .node("Flatten", &["x"], "flat", vec![])
            // x − shift then ReLU: some activations exactly 0, as after ReLU and pooling.
            .node("Sub", &["flat", "shift"], "centred", vec![])
            .node("Relu", &["centred"], "act", vec![]);
        body(&mut g);
        g.node("Softmax", &["logits"], "probs", vec![]);
        if let Some(density) = density {
            use crate::contract::onnx::Dim;
            g.output("log_density", &[Dim::Fixed(1), Dim::Fixed(1)]);
            g.constant(crate::contract::onnx::i64_tensor("axes", &[1], &[1]));
            density(&mut g);
        }
        let bytes = g.to_bytes("test", "0");
        card.onnx_sha256 = crate::contract::card::sha256_hex(&bytes);
        Model::from_parts(card, &bytes, "t.onnx".as_ref()).expect("loads")
    }

    /// The density as the sum of the unmasked activation.
    const SUM_OF_ACT: fn(&mut Graph) = |g| {
        g.node(
            "ReduceSum",
            &["act", "axes"],
            "log_density",
            vec![int("keepdims", 1)],
        );
    };

    /// The density as the sum of ReLU(a dense layer with `weights` on "act", unmasked).
    fn sum_of_relu_layer(g: &mut Graph, weights: &str) {
        g.node(
            "Gemm",
            &["act", weights, "b"],
            "density.layer",
            vec![int("transB", 1)],
        )
        .node("Relu", &["density.layer"], "density.features", vec![])
        .node(
            "ReduceSum",
            &["density.features", "axes"],
            "log_density",
            vec![int("keepdims", 1)],
        );
    }

    /// A branch that starts with the sparse layer's own product, as the MNIST density's does.
    const SUM_OF_LAYER: fn(&mut Graph) = |g| sum_of_relu_layer(g, "w");

    /// act → Mul mask_0 → Gemm (transB) → logits: the pattern.
    fn dense_after_site(g: &mut Graph) {
        g.node("Mul", &["act", "mask_0"], "drop", vec![]).node(
            "Gemm",
            &["drop", "w", "b"],
            "logits",
            vec![int("transB", 1)],
        );
    }

    fn probs(plan: &mut Plan, image: &[f32], masks: Option<&[f32]>, seed: u64) -> Vec<f32> {
        match masks {
            Some(m) => plan.run_with_masks(image, &[m]).unwrap().to_vec(),
            None => plan.run(image, seed).unwrap().to_vec(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Random graphs of the pattern (weights, p, classes, T, image): the sparse plan
        /// gives the plain plan's probabilities within 1e-5, with drawn masks (same seed)
        /// and with given ones (arbitrary values included).
        #[test]
        fn sparse_plan_matches_the_plain_plan(
            p in prop_oneof![Just(0.25f32), Just(0.5), 0.01f32..0.9],
            classes in 2usize..12,
            samples in 1usize..24,
            seed in any::<u64>(),
        ) {
            let m = model(p, classes, seed, dense_after_site);
            let sparse_site = matches!(m.site_paths()[0], SitePath::Sparse { inputs: 16, .. });
            prop_assert!(sparse_site);
            let mut sparse = Plan::with(&m, samples, Strategy::Sparse).unwrap();
            let mut dense = Plan::with(&m, samples, Strategy::Dense).unwrap();
            prop_assert!(sparse.is_split() && !dense.is_split());
            let mut rng = WyRand::new(seed ^ 1);
            let image: Vec<f32> = (0..16).map(|_| (rng.next_u64() % 256) as f32 / 255.0).collect();
            let given: Vec<f32> = (0..samples * 16)
                .map(|k| [0.0, 1.0 / (1.0 - p), 0.3, 2.5][(rng.next_u64() % 4) as usize] * (k % 3) as f32)
                .collect();
            for masks in [None, Some(&given[..])] {
                let a = probs(&mut sparse, &image, masks, seed);
                let b = probs(&mut dense, &image, masks, seed);
                prop_assert_eq!(a.len(), samples * classes);
                for (x, y) in a.iter().zip(&b) {
                    prop_assert!((x - y).abs() <= 1e-5, "{:?} against {:?}", a, b);
                }
            }
        }
    }

    /// A density output reads the image by design: the sparse path stays, the density runs
    /// once with the trunk, and both plans give the reference value (the sum of the
    /// unmasked activations) beside the same probabilities. A failed run leaves none behind.
    #[test]
    fn a_density_output_runs_with_the_trunk_and_keeps_the_sparse_path() {
        let m = model_with(0.5, 3, 11, dense_after_site, Some(SUM_OF_ACT));
        assert!(matches!(m.site_paths()[0], SitePath::Sparse { .. }));
        let mut sparse = Plan::with(&m, 8, Strategy::Sparse).unwrap();
        let mut dense = Plan::with(&m, 8, Strategy::Dense).unwrap();
        assert!(sparse.is_split() && !dense.is_split());
        let image: Vec<f32> = (0..16).map(|k| k as f32 / 15.0).collect();
        let a = probs(&mut sparse, &image, None, 5);
        let b = probs(&mut dense, &image, None, 5);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-5);
        }
        // The reference: the builder's shift, drawn as `model_with` draws it.
        let mut rng = WyRand::new(11);
        let mut uniform = || (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
        let skipped = 3 * 16 + 3;
        (0..skipped).for_each(|_| {
            uniform();
        });
        let shift: Vec<f32> = (0..16).map(|_| uniform()).collect();
        let reference: f32 = image
            .iter()
            .zip(&shift)
            .map(|(x, s)| (x - s).max(0.0))
            .sum();
        for plan in [&sparse, &dense] {
            let d = plan.log_density().expect("a density");
            assert!((d - reference).abs() <= 1e-5, "{d} against {reference}");
        }
        assert!(sparse.run(&[0.0; 3], 1).is_err());
        assert_eq!(sparse.log_density(), None);
        // Without a density output there is none.
        let plain = model(0.5, 3, 11, dense_after_site);
        let mut plan = Plan::new(&plain, 8).unwrap();
        plan.run(&image, 5).unwrap();
        assert_eq!(plan.log_density(), None);
    }

    /// A density branch that starts with the sparse layer's own product reads the head's
    /// shared term instead (the trunk no longer holds the product), and gives the plain
    /// plan's density; at p > 1/2 (no shared term) or with other weights it stays in the
    /// trunk. The probabilities are the plain plan's either way.
    #[test]
    fn a_density_branch_on_the_sparse_layer_reads_its_shared_term() {
        for (p, weights, shared) in [
            (0.25, "w", true),
            (0.5, "w", true),
            (0.75, "w", false),
            (0.25, "w2", false),
        ] {
            let density: fn(&mut Graph) = match weights {
                "w" => SUM_OF_LAYER,
                _ => |g| {
                    let w2: Vec<f32> = (0..4 * 16).map(|k| (k % 7) as f32 / 7.0 - 0.5).collect();
                    g.constant(f32_tensor("w2", &[4, 16], &w2));
                    sum_of_relu_layer(g, "w2");
                },
            };
            let m = model_with(p, 4, 13, dense_after_site, Some(density));
            let typed = crate::engine::tract::TractGraph::of(m.graph())
                .expect("tract")
                .typed();
            let cut = split(typed, &m.card).unwrap().expect("split");
            let case = format!("p {p}, weights {weights}");
            match cut.density {
                Some(DensitySource::Layer { layer: 0, .. }) => assert!(shared, "{case}"),
                Some(DensitySource::Trunk(1)) => assert!(!shared, "{case}"),
                other => panic!("{case}: {other:?}"),
            }
            let mut sparse = Plan::with(&m, 6, Strategy::Sparse).unwrap();
            let mut dense = Plan::with(&m, 6, Strategy::Dense).unwrap();
            let mut rng = WyRand::new(3);
            for frame in 0..20u64 {
                let image: Vec<f32> = (0..16)
                    .map(|_| (rng.next_u64() % 256) as f32 / 255.0)
                    .collect();
                let a = probs(&mut sparse, &image, None, frame);
                let b = probs(&mut dense, &image, None, frame);
                for (x, y) in a.iter().zip(&b) {
                    assert!((x - y).abs() <= 1e-5, "{case}");
                }
                let (x, y) = (sparse.log_density().unwrap(), dense.log_density().unwrap());
                assert!(
                    (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                    "{case}: {x} against {y}"
                );
            }
        }
    }

    /// Graphs where the pattern does not hold take the plain plan, say why, and run.
    #[test]
    fn the_plain_plan_where_the_pattern_does_not_hold() {
        type Body = fn(&mut Graph);
        let cases: [(&str, Body); 4] = [
            ("not a dense layer", |g| {
                // The masked value goes through a ReLU before the layer.
                g.node("Mul", &["act", "mask_0"], "drop", vec![])
                    .node("Relu", &["drop"], "again", vec![])
                    .node(
                        "Gemm",
                        &["again", "w", "b"],
                        "logits",
                        vec![int("transB", 1)],
                    );
            }),
            ("feeds 2 nodes", |g| {
                // The masked value feeds the layer and an Add beside it.
                g.node("Mul", &["act", "mask_0"], "drop", vec![])
                    .node("Gemm", &["drop", "w", "b"], "dense", vec![int("transB", 1)])
                    .node("ReduceSum", &["drop"], "sum", vec![int("keepdims", 1)])
                    .node("Add", &["dense", "sum"], "logits", vec![]);
            }),
            ("also reads the image", |g| {
                // A second, undropped path from the activation to the output.
                g.node("Mul", &["act", "mask_0"], "drop", vec![])
                    .node("Gemm", &["drop", "w", "b"], "dense", vec![int("transB", 1)])
                    .node("Gemm", &["act", "w", "b"], "skip", vec![int("transB", 1)])
                    .node("Add", &["dense", "skip"], "logits", vec![]);
            }),
            ("not a Mul", |g| {
                g.node("Add", &["act", "mask_0"], "drop", vec![]).node(
                    "Gemm",
                    &["drop", "w", "b"],
                    "logits",
                    vec![int("transB", 1)],
                );
            }),
        ];
        for (why, body) in cases {
            let m = model(0.25, 3, 7, body);
            let SitePath::Dense { reason } = &m.site_paths()[0] else {
                panic!("{why}: sparse path taken");
            };
            assert!(reason.contains(why), "{why}: {reason}");
            let mut plan = Plan::new(&m, 5).unwrap();
            assert!(!plan.is_split(), "{why}");
            let p = probs(&mut plan, &[0.5; 16], None, 3);
            assert_eq!(p.len(), 5 * 3, "{why}");
            assert!(p.iter().all(|v| v.is_finite()), "{why}");
        }
    }
}
