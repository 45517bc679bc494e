//! The tract layer: loads an ONNX dropout model, checks it against its card, and runs T
//! Monte-Carlo samples in one call with freshly drawn masks.
//!
//! One optimised plan with a symbolic T is built at start-up; its state and the input
//! tensors are reused for every frame, so the hot path allocates only what tract allocates.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::card::{ModelCard, ModelPaths, MAX_SAMPLES};
use crate::error::Error;
use crate::masks;
use crate::rng::WyRand;

/// The name that selects the model compiled into the binary.
pub const BUILTIN: &str = "builtin:mnist";

/// The dimension name the contract gives the Monte-Carlo sample axis of masks and output.
pub const SAMPLE_DIM: &str = "T";

/// What the graph declares, for `mcgate info` and error messages.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GraphSummary {
    pub inputs: Vec<(String, String)>,
    pub outputs: Vec<(String, String)>,
    pub nodes: usize,
    pub ops: Vec<(String, usize)>,
}

/// A model checked against its card: what a plan is built from.
pub struct Model {
    pub card: ModelCard,
    pub summary: GraphSummary,
    typed: TypedModel,
}

/// Where each graph input's value comes from, in graph input order.
#[derive(Debug, Clone, Copy)]
enum Feed {
    Image,
    Mask(usize),
}

/// A runnable plan for one T, with its reusable state and input buffers.
pub struct Plan {
    state: TypedSimpleState,
    feeds: Vec<Feed>,
    image: Arc<Tensor>,
    masks: Vec<(Arc<Tensor>, f32)>,
    samples: usize,
    classes: usize,
}

fn dims_to_string(dims: &[TDim]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Anyhow chains become one line: "outer: inner: root".
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

impl Model {
    /// Reads `<stem>.onnx` and `<stem>.card.json`, checks the card's SHA-256 of the ONNX
    /// bytes, and checks that the graph's inputs and output are the ones the card describes.
    pub fn load(paths: &ModelPaths) -> Result<Model, Error> {
        let card = ModelCard::read(&paths.card)?;
        let bytes =
            std::fs::read(&paths.onnx).map_err(|e| Error::io("read model", &paths.onnx, e))?;
        Self::from_parts(card, &bytes, &paths.onnx)
    }

    /// Checks `onnx` (named `path` in errors) against `card` and prepares it.
    pub fn from_parts(card: ModelCard, onnx: &[u8], path: &Path) -> Result<Model, Error> {
        let digest = crate::card::sha256_hex(onnx);
        if digest != card.onnx_sha256.to_ascii_lowercase() {
            return Err(Error::Mismatch {
                path: path.to_owned(),
                reason: format!(
                    "SHA-256 is {digest}, the card says {} (wrong file, or the card is stale)",
                    card.onnx_sha256
                ),
            });
        }
        let model_error = |what: &str, e: anyhow::Error| Error::Model {
            path: path.to_owned(),
            reason: format!("{what}: {}", one_line(&e)),
        };
        let inference = tract_onnx::onnx()
            .model_for_read(&mut &onnx[..])
            .map_err(|e| model_error("not a loadable ONNX model", e))?;
        let typed = inference
            .into_typed()
            .map_err(|e| model_error("cannot infer types and shapes", e))?;
        let summary = summarise(&typed).map_err(|e| model_error("cannot read graph", e))?;
        check_against_card(&typed, &card).map_err(|reason| Error::Mismatch {
            path: path.to_owned(),
            reason,
        })?;
        Ok(Model {
            card,
            summary,
            typed,
        })
    }

    /// Loads the model a user named: a stem or file path, or `builtin:mnist`, the shipped
    /// MNIST model compiled into the binary (feature `builtin-model`, on by default).
    pub fn load_from(arg: &Path) -> Result<Model, Error> {
        if arg.as_os_str() == BUILTIN {
            return Self::builtin(arg);
        }
        Self::load(&ModelPaths::resolve(arg))
    }

    #[cfg(feature = "builtin-model")]
    fn builtin(arg: &Path) -> Result<Model, Error> {
        let card = ModelCard::from_json(include_bytes!("../models/mnist.card.json")).map_err(
            |reason| Error::Card {
                path: arg.to_owned(),
                reason,
            },
        )?;
        Self::from_parts(card, include_bytes!("../models/mnist.onnx"), arg)
    }

    #[cfg(not(feature = "builtin-model"))]
    fn builtin(arg: &Path) -> Result<Model, Error> {
        Err(Error::Model {
            path: arg.to_owned(),
            reason: "this build has no built-in model (feature builtin-model is off)".into(),
        })
    }

    /// Optimises the graph (symbolic T kept) and allocates the buffers for `samples` masks.
    pub fn plan(&self, samples: usize) -> Result<Plan, Error> {
        if samples == 0 || samples > MAX_SAMPLES {
            return Err(Error::Usage(format!(
                "samples (T) must be in 1..={MAX_SAMPLES}, got {samples}"
            )));
        }
        let fail = |e: anyhow::Error| Error::Model {
            path: self.card.name.clone().into(),
            reason: format!("cannot build plan: {}", one_line(&e)),
        };
        let runnable = self
            .typed
            .clone()
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(fail)?;
        let state = TypedSimpleState::new(&runnable).map_err(fail)?;

        let card = &self.card;
        // Feed by name in the optimised plan's own input order.
        let optimised = runnable.model();
        let mut feeds = vec![];
        for outlet in optimised.input_outlets().map_err(fail)? {
            let name = &optimised.node(outlet.node).name;
            let feed = match card.dropout_sites.iter().position(|s| &s.input == name) {
                Some(i) => Feed::Mask(i),
                None => Feed::Image,
            };
            feeds.push(feed);
        }
        let image = Tensor::zero::<f32>(&card.input.shape).map_err(fail)?;
        let masks = card
            .dropout_sites
            .iter()
            .map(|site| {
                let mut shape = vec![samples];
                shape.extend(&site.shape);
                Ok((Arc::new(Tensor::zero::<f32>(&shape)?), site.p))
            })
            .collect::<TractResult<Vec<_>>>()
            .map_err(fail)?;
        Ok(Plan {
            state,
            feeds,
            image: Arc::new(image),
            masks,
            samples,
            classes: card.classes.len(),
        })
    }
}

impl Plan {
    pub fn samples(&self) -> usize {
        self.samples
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Runs T samples on one preprocessed image (`[C·H·W]`, already normalised) with masks
    /// drawn from `seed`, and returns the output tensor, `[T, classes]` probabilities.
    pub fn run(&mut self, image: &[f32], seed: u64) -> Result<TValue, Error> {
        copy_into(&mut self.image, image, "image")?;
        let mut rng = WyRand::new(seed);
        for (tensor, p) in &mut self.masks {
            masks::fill(f32_slice_mut(tensor)?, *p, &mut rng);
        }
        self.run_current()
    }

    /// Runs with caller-supplied masks (`[T, ..site]` each, card order): for parity tests
    /// against another implementation.
    pub fn run_with_masks(
        &mut self,
        image: &[f32],
        site_masks: &[&[f32]],
    ) -> Result<TValue, Error> {
        if site_masks.len() != self.masks.len() {
            return Err(Error::Inference(format!(
                "{} masks given, the model has {} dropout sites",
                site_masks.len(),
                self.masks.len()
            )));
        }
        copy_into(&mut self.image, image, "image")?;
        for ((tensor, _), src) in self.masks.iter_mut().zip(site_masks) {
            copy_into(tensor, src, "mask")?;
        }
        self.run_current()
    }

    fn run_current(&mut self) -> Result<TValue, Error> {
        let inputs: TVec<TValue> = self
            .feeds
            .iter()
            .map(|feed| match feed {
                Feed::Image => self.image.clone().into_tvalue(),
                Feed::Mask(i) => self.masks[*i].0.clone().into_tvalue(),
            })
            .collect();
        let mut outputs = self
            .state
            .run(inputs)
            .map_err(|e| Error::Inference(one_line(&e)))?;
        Ok(outputs.remove(0))
    }
}

/// The f32 contents of an input buffer, for writing in place. `make_mut` clones only if
/// tract still held a reference; after a run it never does, so nothing is allocated.
fn f32_slice_mut(t: &mut Arc<Tensor>) -> Result<&mut [f32], Error> {
    Arc::make_mut(t)
        .to_plain_array_view_mut::<f32>()
        .map_err(|e| Error::Inference(one_line(&e)))?
        .into_slice()
        .ok_or_else(|| Error::Inference("input buffer is not contiguous".into()))
}

fn copy_into(t: &mut Arc<Tensor>, src: &[f32], what: &str) -> Result<(), Error> {
    let dst = f32_slice_mut(t)?;
    if dst.len() != src.len() {
        return Err(Error::Inference(format!(
            "{what} has {} values, the model takes {}",
            src.len(),
            dst.len()
        )));
    }
    dst.copy_from_slice(src);
    Ok(())
}

/// Reads a `[T, classes]` f32 output as a flat slice.
pub fn output_slice(out: &TValue) -> Result<&[f32], Error> {
    let fail = |e: anyhow::Error| Error::Inference(one_line(&e));
    let view = out.try_as_plain_ram().map_err(fail)?;
    view.as_slice::<f32>().map_err(fail)
}

fn summarise(model: &TypedModel) -> TractResult<GraphSummary> {
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

fn is_sample_dim(d: &TDim) -> bool {
    matches!(d, TDim::Sym(s) if s.to_string() == SAMPLE_DIM)
}

/// Checks inputs and output against the card; the error names what differs.
fn check_against_card(model: &TypedModel, card: &ModelCard) -> Result<(), String> {
    let io = |e: anyhow::Error| one_line(&e);
    let mut graph_inputs = vec![];
    for (ix, outlet) in model.input_outlets().map_err(io)?.iter().enumerate() {
        let fact = model.input_fact(ix).map_err(io)?;
        graph_inputs.push((model.node(outlet.node).name.clone(), fact.clone()));
    }
    let mut wanted: Vec<&str> = vec![card.input.name.as_str()];
    wanted.extend(card.dropout_sites.iter().map(|s| s.input.as_str()));
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|w| !graph_inputs.iter().any(|(n, _)| n == w))
        .collect();
    if !missing.is_empty() {
        return Err(format!("graph has no input named {}", missing.join(", ")));
    }
    let extra: Vec<&str> = graph_inputs
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !wanted.contains(n))
        .collect();
    if !extra.is_empty() {
        return Err(format!(
            "graph input {} is not in the card",
            extra.join(", ")
        ));
    }
    for (name, fact) in &graph_inputs {
        if fact.datum_type != f32::datum_type() {
            return Err(format!(
                "input {name} is {:?}, the contract needs F32",
                fact.datum_type
            ));
        }
        let dims = fact.shape.to_tvec();
        if *name == card.input.name {
            let want: Vec<TDim> = card
                .input
                .shape
                .iter()
                .map(|&d| (d as i64).into())
                .collect();
            if dims[..] != want[..] {
                return Err(format!(
                    "input {name} is {} in the graph, {:?} in the card",
                    dims_to_string(&dims),
                    card.input.shape
                ));
            }
        } else {
            let site = card
                .dropout_sites
                .iter()
                .find(|s| &s.input == name)
                .expect("checked above");
            let want: Vec<TDim> = site.shape.iter().map(|&d| (d as i64).into()).collect();
            if dims.is_empty() || !is_sample_dim(&dims[0]) || dims[1..] != want[..] {
                return Err(format!(
                    "mask input {name} is {} in the graph, the card needs [{SAMPLE_DIM}, {}]",
                    dims_to_string(&dims),
                    site.shape
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    let outputs = model.output_outlets().map_err(io)?;
    if outputs.len() != 1 {
        return Err(format!(
            "graph has {} outputs, the contract has one",
            outputs.len()
        ));
    }
    let label = model.outlet_label(outputs[0]).unwrap_or("");
    if label != card.output.name {
        return Err(format!(
            "graph output is named {label:?}, the card says {:?}",
            card.output.name
        ));
    }
    let fact = model.output_fact(0).map_err(io)?;
    let dims = fact.shape.to_tvec();
    let classes: TDim = (card.classes.len() as i64).into();
    if fact.datum_type != f32::datum_type()
        || dims.len() != 2
        || !is_sample_dim(&dims[0])
        || dims[1] != classes
    {
        return Err(format!(
            "output {label} is {:?} {}, the card needs F32 [{SAMPLE_DIM}, {}]",
            fact.datum_type,
            dims_to_string(&dims),
            card.classes.len()
        ));
    }
    Ok(())
}
