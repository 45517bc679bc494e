//! The hot path in tract: optimised plans with a symbolic T, built once at start-up, then run
//! once per frame with freshly drawn masks. Either the whole graph, or — where a dropout site
//! feeds a dense layer (`split`) — a trunk run at batch 1, the layer as a sparse difference
//! (`sparse`) and the rest of the graph with its T samples. State, input
//! tensors and the layer's buffers are reused for every frame, so a frame allocates only
//! what tract allocates.

use std::sync::Arc;

use tract_onnx::prelude::*;

use super::sparse::Head;
use super::split::{self, DensitySource, Split};
use crate::contract::card::ModelCard;
use crate::contract::card::SAMPLE_DIM;
use crate::engine::ModelError;
use crate::engine::{check_mask_count, copy_input, EngineError, Runner, Strategy};
use crate::run::masks::{self, SiteMasks};
use crate::run::rng::WyRand;
use crate::text::one_line;

/// Most values any one tensor of the graph may hold at the run's T (1 GiB of f32): a graph
/// that expands a tensor by T into more is refused when planned, naming the node.
pub const MAX_TENSOR_VALUES: u64 = 1 << 28;

/// Every node output's size at T = `samples`, against [`MAX_TENSOR_VALUES`]. Dimensions
/// that are still symbolic after T is known (none in a checked model) are left to tract.
fn check_tensor_sizes(typed: &TypedModel, samples: usize) -> TractResult<()> {
    let mut values = SymbolValues::default();
    if let Some(t) = typed.symbols.get(SAMPLE_DIM) {
        values = values.with(&t, samples as i64);
    }
    for node in typed.nodes() {
        for output in &node.outputs {
            let mut size: u64 = 1;
            for dim in output.fact.shape.iter() {
                let Ok(d) = dim.eval_to_i64(&values) else {
                    size = 0;
                    break;
                };
                size = size.saturating_mul(d.max(0) as u64);
            }
            if size > MAX_TENSOR_VALUES {
                anyhow::bail!(
                    "node {} ({}) would output {size} values at T={samples}, over the \
                     {MAX_TENSOR_VALUES} a tensor may hold",
                    node.name,
                    node.op.name()
                );
            }
        }
    }
    Ok(())
}

/// Where each graph input's value comes from, in graph input order.
#[derive(Debug, Clone, Copy)]
enum Feed {
    Image,
    /// The mask of the site with this card index.
    Mask(usize),
    /// The sparse layer output of the site with this card index.
    Layer(usize),
}

/// One dropout site: its drop probability, where its masks start in the frame's random
/// stream (draws before it), and how they reach the graph.
struct Site {
    p: f32,
    start: u64,
    path: SitePath,
}

/// How one dropout site's masks reach the graph.
enum SitePath {
    /// Drawn in full into a `[T, ..shape]` buffer the graph multiplies.
    Dense { mask: Arc<Tensor> },
    /// Read where the activation is non-zero by the sparse head, which writes its layer's
    /// `[T, outputs]` output for the rest of the graph.
    Sparse {
        // Boxed: a head is large beside the dense variant.
        head: Box<Head>,
        out: Arc<Tensor>,
        /// The trunk output holding this site's activation.
        activation: usize,
    },
}

/// The graph, whole or cut around its sparse layers.
enum Body {
    Whole {
        state: TypedSimpleState,
        feeds: Vec<Feed>,
    },
    Split {
        /// Image → the sparse sites' activations, batch 1.
        trunk: TypedSimpleState,
        /// The sparse layers' outputs and the dense sites' masks → the output.
        rest: TypedSimpleState,
        feeds: Vec<Feed>,
    },
}

/// A runnable plan for one T, with its reusable state and input buffers.
pub struct TractPlan {
    body: Body,
    image: Arc<Tensor>,
    /// Card order.
    sites: Vec<Site>,
    samples: usize,
    /// The last run's output, kept so that its probabilities can be lent out as `&[f32]`.
    output: Option<TValue>,
    /// Where the density output comes from; `None` for a model without one.
    density_at: Option<DensityAt>,
    /// The last run's density.
    density: Option<f32>,
}

/// Where a plan reads the density.
enum DensityAt {
    /// Output k of the whole graph.
    Output(usize),
    /// Output k of the trunk.
    Trunk(usize),
    /// The branch after the sparse head of site `site`: fed its shared term / s.
    Head {
        site: usize,
        branch: TypedSimpleState,
        /// `[1, outputs]`: the product the branch starts from.
        product: Arc<Tensor>,
    },
}

/// A planning failure of `card`'s model, as the engine reports it.
fn plan_error(card: &ModelCard) -> impl Fn(anyhow::Error) -> EngineError + Copy + '_ {
    move |e| EngineError::Plan {
        model: card.name.clone(),
        problem: ModelError::Plan(one_line(&e)),
    }
}

/// The `TRACT_*` variables set in the environment, named after a panic inside tract: they
/// steer its kernels (fifth outside probe: `TRACT_CPU_ISA=+sve2` on x86 panicked, and the
/// error blamed the model alone).
fn tract_environment() -> String {
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("TRACT_"))
        .collect();
    if names.is_empty() {
        String::new()
    } else {
        format!(" (set in the environment: {})", names.join(", "))
    }
}

impl TractPlan {
    /// Optimises `typed` (symbolic T kept) and allocates the buffers for `samples` masks
    /// (already checked against the card's limits), cut around its sparse layers if
    /// `strategy` says so.
    pub fn new(
        typed: &TypedModel,
        card: &ModelCard,
        samples: usize,
        strategy: Strategy,
    ) -> Result<TractPlan, EngineError> {
        let fail = plan_error(card);
        check_tensor_sizes(typed, samples).map_err(fail)?;
        // tract may still panic on a graph it cannot plan: a refused model, not a crash.
        crate::panic::catch(|| Self::build(typed, card, samples, strategy)).unwrap_or_else(
            |panic| {
                Err(fail(anyhow::anyhow!(
                    "planning failed inside tract: {panic}{}",
                    tract_environment()
                )))
            },
        )
    }

    fn build(
        typed: &TypedModel,
        card: &ModelCard,
        samples: usize,
        strategy: Strategy,
    ) -> Result<TractPlan, EngineError> {
        let fail = plan_error(card);
        let cut = match strategy {
            Strategy::Sparse => split::split(typed, card).map_err(fail)?,
            Strategy::Dense => None,
        };
        let has_density = card.output.log_density.is_some();
        let (body, layers, density_at) = match cut {
            None => {
                let runnable = runnable(typed.clone()).map_err(fail)?;
                let feeds = feeds(&runnable, card, &[]).map_err(fail)?;
                let state = TypedSimpleState::new(&runnable).map_err(fail)?;
                // The contract check put the density second.
                (
                    Body::Whole { state, feeds },
                    vec![],
                    has_density.then_some(DensityAt::Output(1)),
                )
            }
            Some(Split {
                trunk,
                rest,
                layers,
                density,
            }) => {
                let trunk = runnable(trunk).map_err(fail)?;
                let rest = runnable(rest).map_err(fail)?;
                let feeds = feeds(&rest, card, &layers).map_err(fail)?;
                let body = Body::Split {
                    trunk: TypedSimpleState::new(&trunk).map_err(fail)?,
                    rest: TypedSimpleState::new(&rest).map_err(fail)?,
                    feeds,
                };
                let density = match density {
                    None => None,
                    Some(DensitySource::Trunk(k)) => Some(DensityAt::Trunk(k)),
                    Some(DensitySource::Layer { layer, graph }) => {
                        let outputs = layers[layer].outputs;
                        let branch = runnable(graph).map_err(fail)?;
                        Some(DensityAt::Head {
                            site: layers[layer].site,
                            branch: TypedSimpleState::new(&branch).map_err(fail)?,
                            product: Arc::new(Tensor::zero::<f32>(&[1, outputs]).map_err(fail)?),
                        })
                    }
                };
                (body, layers, density)
            }
        };
        // Trunk output k is layer k's activation; each layer moves into its site's head.
        let mut layers: Vec<_> = layers.into_iter().enumerate().map(Some).collect();
        let starts = masks::site_starts(&card.dropout_sites, samples);
        let mut sites = vec![];
        for ((index, site), &start) in card.dropout_sites.iter().enumerate().zip(&starts) {
            let layer = layers
                .iter_mut()
                .find_map(|l| l.take_if(|(_, l)| l.site == index));
            let path = match layer {
                Some((activation, layer)) => {
                    let shape = [samples, layer.outputs];
                    let head = Head::new(layer, site.p, SiteMasks::new(site.p, start).kept());
                    let out = match head {
                        Head::Float(_) => Tensor::zero::<f32>(&shape),
                        Head::Int8(_) => Tensor::zero::<u8>(&shape),
                    };
                    SitePath::Sparse {
                        head: Box::new(head),
                        out: Arc::new(out.map_err(fail)?),
                        activation,
                    }
                }
                None => {
                    let mut shape = vec![samples];
                    shape.extend(&site.shape);
                    SitePath::Dense {
                        mask: Arc::new(Tensor::zero::<f32>(&shape).map_err(fail)?),
                    }
                }
            };
            sites.push(Site {
                p: site.p,
                start,
                path,
            });
        }
        let image = Tensor::zero::<f32>(&card.input.shape).map_err(fail)?;
        Ok(TractPlan {
            body,
            image: Arc::new(image),
            sites,
            samples,
            output: None,
            density_at,
            density: None,
        })
    }
}

impl Runner for TractPlan {
    fn is_split(&self) -> bool {
        matches!(self.body, Body::Split { .. })
    }

    fn log_density(&self) -> Option<f32> {
        self.density
    }

    fn run(&mut self, image: &[f32], seed: u64) -> Result<&[f32], EngineError> {
        // A run that fails leaves no density from an earlier frame behind.
        self.density = None;
        copy_into(&mut self.image, image, "image")?;
        let output = self.run_current(Masks::Drawn(seed))?;
        output_slice(self.output.insert(output))
    }

    fn run_with_masks(
        &mut self,
        image: &[f32],
        site_masks: &[&[f32]],
    ) -> Result<&[f32], EngineError> {
        self.density = None;
        check_mask_count(site_masks.len(), self.sites.len())?;
        for (site, src) in self.sites.iter().zip(site_masks) {
            let want = match &site.path {
                SitePath::Dense { mask } => mask.len(),
                SitePath::Sparse { head, .. } => head.inputs() * self.samples,
            };
            if src.len() != want {
                return Err(EngineError::Inference(format!(
                    "mask has {} values, the model takes {want}",
                    src.len()
                )));
            }
        }
        copy_into(&mut self.image, image, "image")?;
        let output = self.run_current(Masks::Given(site_masks))?;
        output_slice(self.output.insert(output))
    }
}

impl TractPlan {
    fn run_current(&mut self, masks: Masks) -> Result<TValue, EngineError> {
        let fail = |e: anyhow::Error| EngineError::Inference(one_line(&e));
        let activations = match &mut self.body {
            Body::Whole { .. } => tvec![],
            Body::Split { trunk, .. } => trunk
                .run(tvec![self.image.clone().into_tvalue()])
                .map_err(fail)?,
        };
        if let Some(DensityAt::Trunk(k)) = self.density_at {
            self.density = Some(single_value(&activations[k])?);
        }
        for (index, site) in self.sites.iter_mut().enumerate() {
            match &mut site.path {
                SitePath::Dense { mask } => {
                    let mask = f32_slice_mut(mask)?;
                    match masks {
                        Masks::Drawn(seed) => {
                            masks::fill(mask, site.p, &mut WyRand::at(seed, site.start))
                        }
                        Masks::Given(given) => mask.copy_from_slice(given[index]),
                    }
                }
                SitePath::Sparse {
                    head,
                    out,
                    activation,
                } => {
                    let a = output_slice(&activations[*activation])?;
                    let n = head.inputs();
                    match masks {
                        Masks::Drawn(seed) => {
                            let stream = SiteMasks::new(site.p, site.start);
                            run_head(head, a, out, |i, m| stream.column(seed, n, i, m))?
                        }
                        Masks::Given(given) => {
                            let given = given[index];
                            run_head(head, a, out, |i, m| {
                                for (m, &g) in m.iter_mut().zip(given[i..].iter().step_by(n)) {
                                    *m = g;
                                }
                            })?
                        }
                    }
                }
            }
        }
        let (state, feeds) = match &mut self.body {
            Body::Whole { state, feeds } => (state, feeds),
            Body::Split { rest, feeds, .. } => (rest, feeds),
        };
        let inputs: TVec<TValue> = feeds
            .iter()
            .map(|feed| match *feed {
                Feed::Image => self.image.clone().into_tvalue(),
                Feed::Mask(i) | Feed::Layer(i) => match &self.sites[i].path {
                    SitePath::Dense { mask } => mask.clone().into_tvalue(),
                    SitePath::Sparse { out, .. } => out.clone().into_tvalue(),
                },
            })
            .collect();
        let mut outputs = state.run(inputs).map_err(fail)?;
        match &mut self.density_at {
            Some(DensityAt::Output(k)) => self.density = Some(single_value(&outputs[*k])?),
            Some(DensityAt::Head {
                site,
                branch,
                product,
            }) => {
                let SitePath::Sparse { head, .. } = &self.sites[*site].path else {
                    return Err(EngineError::Inference(
                        "the density's sparse layer has no head".into(),
                    ));
                };
                let Some((shared, s)) = head.shared_term() else {
                    return Err(EngineError::Inference(
                        "the density's sparse layer keeps no shared term".into(),
                    ));
                };
                for (x, &y) in f32_slice_mut(product)?.iter_mut().zip(shared) {
                    *x = y / s;
                }
                let out = branch
                    .run(tvec![product.clone().into_tvalue()])
                    .map_err(fail)?;
                self.density = Some(single_value(&out[0])?);
            }
            Some(DensityAt::Trunk(_)) | None => {}
        }
        Ok(outputs.remove(0))
    }
}

/// The one value of a `[1, 1]` output.
fn single_value(out: &TValue) -> Result<f32, EngineError> {
    match output_slice(out)? {
        [v] => Ok(*v),
        other => Err(EngineError::Inference(format!(
            "the density output has {} values, not 1",
            other.len()
        ))),
    }
}

/// Runs a sparse layer into its output buffer (F32, or u8 for a quantised layer).
fn run_head(
    head: &mut Head,
    a: &[f32],
    out: &mut Arc<Tensor>,
    column: impl FnMut(usize, &mut [f32]),
) -> Result<(), EngineError> {
    match head {
        Head::Float(head) => head.run(a, f32_slice_mut(out)?, column),
        Head::Int8(head) => head.run(a, slice_mut::<u8>(out)?, column),
    }
    Ok(())
}

/// Where a run's masks come from.
#[derive(Clone, Copy)]
enum Masks<'a> {
    /// Drawn from the frame's seed.
    Drawn(u64),
    /// Given by the caller, one `[T, ..shape]` slice per site.
    Given(&'a [&'a [f32]]),
}

/// How `runnable`'s inputs are fed, by name in its own input order: the image, the masks
/// of the sites named in the card, and the `<layer>.sparse` inputs of the `layers`.
fn feeds(
    runnable: &TypedRunnableModel,
    card: &crate::contract::card::ModelCard,
    layers: &[split::SparseLayer],
) -> TractResult<Vec<Feed>> {
    let model = runnable.model();
    let mut feeds = vec![];
    for outlet in model.input_outlets()? {
        let name = &model.node(outlet.node).name;
        let feed = if let Some(i) = card.dropout_sites.iter().position(|s| &s.input == name) {
            Feed::Mask(i)
        } else if let Some(l) = layers.iter().find(|l| &l.source == name) {
            Feed::Layer(l.site)
        } else if name == &card.input.name {
            Feed::Image
        } else {
            anyhow::bail!("plan input {name} is neither the image nor a dropout site's")
        };
        feeds.push(feed);
    }
    Ok(feeds)
}

/// The f32 contents of an input buffer, for writing in place.
fn f32_slice_mut(t: &mut Arc<Tensor>) -> Result<&mut [f32], EngineError> {
    slice_mut::<f32>(t)
}

/// The contents of an input buffer, for writing in place. `make_mut` clones only if tract
/// still held a reference; after a run it never does, so nothing is allocated.
fn slice_mut<T: Datum>(t: &mut Arc<Tensor>) -> Result<&mut [T], EngineError> {
    Arc::make_mut(t)
        .to_plain_array_view_mut::<T>()
        .map_err(|e| EngineError::Inference(one_line(&e)))?
        .into_slice()
        .ok_or_else(|| EngineError::Inference("input buffer is not contiguous".into()))
}

fn copy_into(t: &mut Arc<Tensor>, src: &[f32], what: &str) -> Result<(), EngineError> {
    copy_input(f32_slice_mut(t)?, src, what)
}

/// Reads a `[T, classes]` f32 output as a flat slice.
pub fn output_slice(out: &TValue) -> Result<&[f32], EngineError> {
    let fail = |e: anyhow::Error| EngineError::Inference(one_line(&e));
    let view = out.try_as_plain_ram().map_err(fail)?;
    view.as_slice::<f32>().map_err(fail)
}

/// A whole graph as the plain plan runs it (`examples/profile_nodes.rs` times it node by
/// node).
pub fn optimised(typed: &TypedModel) -> TractResult<Arc<TypedRunnableModel>> {
    runnable(typed.clone())
}

/// A graph as the gate runs it: channel-last convolutions, optimised, runnable.
fn runnable(mut typed: TypedModel) -> TractResult<Arc<TypedRunnableModel>> {
    channels_last(&mut typed)?;
    typed.into_optimized()?.into_runnable()
}

/// Rewrites the float convolutions to run channel-last (tract's `conv_nhwc`, one axis move
/// in and out of the graph): only in that layout does tract run depthwise convolutions across
/// channels (a NEON kernel on aarch64, a compiler-vectorised loop on x86; in NCHW its x86
/// kernel is scalar at stride 2). Measured (docs/BENCHMARKS.md): the Lite0 depthwise
/// convolutions 14.9 → 11.4 ms on x86; quantised convolutions are left as they are.
fn channels_last(model: &mut TypedModel) -> TractResult<()> {
    tract_onnx::tract_core::transform::get_transform("conv_nhwc")?
        .ok_or_else(|| anyhow::anyhow!("tract has no conv_nhwc transform"))?
        .transform(model)
}
