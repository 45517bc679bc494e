//! The hot path's one entry: a model prepared by its engine for one T, run once per frame
//! with freshly drawn masks, giving `rows × classes` probabilities as `&[f32]`. The engine
//! (`engine::tract`) builds and runs the graph; this checks T against the card's limits and
//! keeps what the gate needs to know (T, rows).

use crate::contract::card::{MAX_MASK_VALUES, MAX_SAMPLES};
pub use crate::engine::Strategy;
use crate::engine::{EngineError, Runner};
use crate::model::Model;

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// T outside what the card allows.
    #[error("samples (T) must be {expected}, got {got}")]
    Samples {
        /// The allowed values, in words.
        expected: String,
        /// The T asked for.
        got: usize,
    },
    /// The engine cannot plan the model.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A runnable plan for one T, with its reusable state and input buffers.
pub struct Plan {
    runner: Box<dyn Runner>,
    samples: usize,
    rows: usize,
}

impl Plan {
    /// Prepares `model` for `samples` masks, running every dropout site that feeds a dense
    /// layer as a sparse difference.
    pub fn new(model: &Model, samples: usize) -> Result<Plan, PlanError> {
        Plan::with(model, samples, Strategy::Sparse)
    }

    /// [`Plan::new`] with the strategy chosen: both give the same masks for a seed and the
    /// same probabilities within float rounding (tested).
    pub fn with(model: &Model, samples: usize, strategy: Strategy) -> Result<Plan, PlanError> {
        if samples == 0 || samples > MAX_SAMPLES {
            return Err(PlanError::Samples {
                expected: format!("in 1..={MAX_SAMPLES}"),
                got: samples,
            });
        }
        let card = &model.card;
        let mask_values = card.mask_values_per_sample();
        if mask_values.saturating_mul(samples) > MAX_MASK_VALUES {
            return Err(PlanError::Samples {
                expected: format!(
                    "at most {} for this model (its masks draw {mask_values} values per sample, \
                     {MAX_MASK_VALUES} at most per frame)",
                    MAX_MASK_VALUES / mask_values.max(1)
                ),
                got: samples,
            });
        }
        Ok(Plan {
            runner: model.graph().plan(card, samples, strategy)?,
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

    /// Whether some dropout site runs as a sparse difference (else the plan is the plain
    /// graph).
    pub fn is_split(&self) -> bool {
        self.runner.is_split()
    }

    /// Runs T samples on one preprocessed image (`[C·H·W]`, already normalised) with masks
    /// drawn from `seed`, and returns the probabilities, [`rows`](Plan::rows) × classes,
    /// row-major: what the gate scores.
    pub fn run(&mut self, image: &[f32], seed: u64) -> Result<&[f32], EngineError> {
        self.runner.run(image, seed)
    }

    /// The last run's feature log density (cards with `output.log_density`), computed once
    /// per frame with every mask 1; `None` for a model without one.
    pub fn log_density(&self) -> Option<f32> {
        self.runner.log_density()
    }

    /// Runs with caller-supplied masks (`[T, ..site]` each, card order): for parity tests
    /// against another implementation.
    pub fn run_with_masks(
        &mut self,
        image: &[f32],
        site_masks: &[&[f32]],
    ) -> Result<&[f32], EngineError> {
        self.runner.run_with_masks(image, site_masks)
    }
}
