//! The hot path: one optimised tract plan with a symbolic T, built once at start-up, then
//! run once per frame with freshly drawn masks. Its state and input tensors are reused for
//! every frame, so a frame allocates only what tract allocates.

use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::error::{one_line, Error};
use crate::model::card::MAX_SAMPLES;
use crate::model::{Model, ModelError};
use crate::run::masks;
use crate::run::rng::WyRand;

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
    rows: usize,
}

impl Plan {
    /// Optimises `model`'s graph (symbolic T kept) and allocates the buffers for `samples`
    /// masks.
    pub fn new(model: &Model, samples: usize) -> Result<Plan, Error> {
        if samples == 0 || samples > MAX_SAMPLES {
            return Err(Error::out_of_range(
                "samples (T)",
                format!("in 1..={MAX_SAMPLES}"),
                samples,
            ));
        }
        let card = &model.card;
        let fail = |e: anyhow::Error| Error::Model {
            path: card.name.clone().into(),
            problem: ModelError::Plan(one_line(&e)),
        };
        let runnable = optimised(model).map_err(fail)?;
        let state = TypedSimpleState::new(&runnable).map_err(fail)?;

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
            rows: card.output_rows(samples),
        })
    }

    /// Monte-Carlo samples T per run (per member, for an ensemble).
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Probability rows per run: T, or M·T for an ensemble of M.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Runs T samples on one preprocessed image (`[C·H·W]`, already normalised) with masks
    /// drawn from `seed`, and returns the output tensor, [`rows`](Plan::rows) × classes
    /// probabilities.
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

/// The graph the gate runs for `model`: channel-last convolutions, optimised, runnable
/// (`examples/profile_nodes.rs` times it node by node).
pub fn optimised(model: &Model) -> TractResult<Arc<TypedRunnableModel>> {
    let mut typed = model.typed().clone();
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
