//! The seam between the gate and an inference engine. An engine reads a model's ONNX bytes,
//! checks them against the card ([`Graph`]), and prepares plans that take one preprocessed
//! frame and give the probabilities of its T Monte-Carlo samples as `&[f32]` ([`Runner`]).
//! The masks are the gate's own (`run::masks`, drawn from the frame's seed), whatever the
//! engine. Everything that names tract lives in [`tract`]; everything that names onnxruntime
//! in `onnxruntime` (feature `ort`), the second engine, a sibling implementing the same two
//! traits. tract reads and checks every model whichever engine runs it ([`Engine`]).
//!
//! Decision — where the sparse split is made: per engine, inside the engine, not once on the
//! ONNX graph. The split (`tract::split`) recognises a dropout site feeding a dense layer
//! after tract has typed and decluttered the graph, where the many ONNX spellings of one
//! product (`Gemm`, `MatMul` + `Add`, transposed weights, `QLinearMatMul` over `Concat`) have
//! become one `EinSum` with constant weights; doing it on the ONNX graph would mean writing
//! that normalisation a second time. The split is an optimisation only: both strategies give
//! the same masks for a seed and the same probabilities within float rounding
//! (`tests/sparse.rs`), so an engine that cannot cut its graph runs [`Strategy::Dense`] and
//! the gate's answer does not change. The sparse head's arithmetic (`tract::sparse`) is plain
//! Rust over slices except its int8 rounding, which follows tract-linalg's to the bit; the
//! onnxruntime engine does not cut graphs (it runs [`Strategy::Dense`] whatever is asked); an
//! engine that did would lift the head out to share it.

mod mismatch;
#[cfg(feature = "ort")]
pub mod onnxruntime;
pub mod tract;

use std::path::PathBuf;

use crate::contract::card::ModelCard;
pub use mismatch::MismatchError;

/// Which engine runs a model's plans. tract always reads and checks the graph against its
/// card; the engine chosen runs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Engine {
    /// tract: pure Rust, the sparse-difference path; the default.
    #[default]
    Tract,
    /// onnxruntime, its C library loaded at run time (feature `ort`).
    Ort(OrtOptions),
}

/// How the ort engine loads and runs onnxruntime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrtOptions {
    /// `libonnxruntime.so`'s path; none: the `ORT_DYLIB_PATH` environment variable.
    pub library: Option<PathBuf>,
    /// Intra-op threads per session (one session per `--jobs` worker): 1 keeps comparisons
    /// per core.
    pub threads: usize,
    /// Where onnxruntime runs the graph.
    pub provider: OrtProvider,
}

/// An onnxruntime execution provider. One that the loaded library lacks is refused, never
/// replaced by the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrtProvider {
    /// The CPU (MLAS): every onnxruntime library has it.
    #[default]
    Cpu,
    /// NVIDIA CUDA: onnxruntime-gpu's library (JetPack's on a Jetson).
    Cuda,
    /// NVIDIA TensorRT: a library built with it (JetPack's on a Jetson).
    TensorRt,
}

impl OrtProvider {
    /// The provider's name in onnxruntime.
    pub fn onnxruntime_name(self) -> &'static str {
        match self {
            OrtProvider::Cpu => "CPUExecutionProvider",
            OrtProvider::Cuda => "CUDAExecutionProvider",
            OrtProvider::TensorRt => "TensorrtExecutionProvider",
        }
    }
}

impl Default for OrtOptions {
    fn default() -> Self {
        OrtOptions {
            library: None,
            threads: 1,
            provider: OrtProvider::Cpu,
        }
    }
}

impl Engine {
    /// The engine's name, as `--engine` takes it.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Tract => "tract",
            Engine::Ort(_) => "ort",
        }
    }

    /// Checks that this build has the engine and that it can start (for onnxruntime: its
    /// library loads), before any model is read; the error is one line.
    pub fn ready(&self) -> Result<(), String> {
        match self {
            Engine::Tract => Ok(()),
            #[cfg(feature = "ort")]
            Engine::Ort(options) => {
                if options.threads == 0 {
                    return Err("--ort-threads must be at least 1".into());
                }
                onnxruntime::environment(options)?;
                onnxruntime::check_provider(options)
            }
            #[cfg(not(feature = "ort"))]
            Engine::Ort(_) => Err("this build has no ort engine: build with `--features ort` \
                                   (README, \"Engines\")"
                .into()),
        }
    }
}

/// Which plan to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// The sparse-difference path for every dropout site that feeds a dense layer (where
    /// the engine can cut its graph), the plain plan for the others.
    #[default]
    Sparse,
    /// The whole graph as one plain plan, every mask drawn in full.
    Dense,
}

/// Why an engine cannot plan or run a model: the engine layer's one error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The model cannot be planned (too large at this T, or the engine refuses it); named
    /// by its card.
    #[error("model {model}: {problem}")]
    Plan {
        /// The card's model name.
        model: String,
        /// Why.
        problem: ModelError,
    },
    /// A run failed (a bug, or a model the engine cannot run).
    #[error("inference failed: {0}")]
    Inference(String),
}

/// A model graph an engine has read and checked against its card: what plans are made from.
pub trait Graph: Send + Sync {
    /// How a plan with [`Strategy::Sparse`] runs each dropout site (card order), and why.
    fn site_paths(&self, card: &ModelCard) -> Vec<SitePath>;

    /// A plan for `samples` Monte-Carlo samples (T, already checked against the card's
    /// limits) with its buffers allocated; errors name the model by `card.name`.
    fn plan(
        &self,
        card: &ModelCard,
        samples: usize,
        strategy: Strategy,
    ) -> Result<Box<dyn Runner>, EngineError>;

    /// The engine's own graph, for tools that look inside one engine (benchmarks, profiles).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// A model prepared for one T: one preprocessed frame in, `rows × classes` probabilities out
/// (row-major; rows are T, or M·T for an ensemble of M). Run time: no allocation the engine
/// can avoid.
pub trait Runner: Send {
    /// Runs on one image (`[C·H·W]`, already normalised) with masks drawn from `seed`.
    fn run(&mut self, image: &[f32], seed: u64) -> Result<&[f32], EngineError>;

    /// Runs with caller-supplied masks (`[T, ..site]` each, card order): for parity tests
    /// against another implementation.
    fn run_with_masks(&mut self, image: &[f32], masks: &[&[f32]]) -> Result<&[f32], EngineError>;

    /// Whether some dropout site runs as a sparse difference.
    fn is_split(&self) -> bool;

    /// The last run's feature log density, for a model whose card names a density output
    /// (`output.log_density`); `None` otherwise.
    fn log_density(&self) -> Option<f32>;
}

/// Copies one run input (`what`: "image", "mask") into the engine's buffer, refusing a
/// length other than the buffer's.
pub(crate) fn copy_input(dst: &mut [f32], src: &[f32], what: &str) -> Result<(), EngineError> {
    if dst.len() != src.len() {
        return Err(EngineError::Inference(format!(
            "{what} has {} values, the model takes {}",
            src.len(),
            dst.len()
        )));
    }
    dst.copy_from_slice(src);
    Ok(())
}

/// Refuses caller-supplied masks ([`Runner::run_with_masks`]) that are not one per site.
pub(crate) fn check_mask_count(given: usize, sites: usize) -> Result<(), EngineError> {
    if given == sites {
        return Ok(());
    }
    Err(EngineError::Inference(format!(
        "{given} masks given, the model has {sites} dropout sites"
    )))
}

/// How the runtime runs one dropout site.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "path", rename_all = "snake_case")]
pub enum SitePath {
    /// The masked value's dense layer runs as a sparse difference in the runtime.
    Sparse {
        /// The dense layer's node name.
        layer: String,
        /// Its input width (values in one sample's mask).
        inputs: usize,
        /// Its output width.
        outputs: usize,
        /// Whether it is the quantised form (u8 activation, i8 weights, u8 output).
        int8: bool,
    },
    /// The site runs in the plain plan: its mask is drawn whole and fed to the graph.
    Dense {
        /// Why the sparse path does not apply, naming the node.
        reason: String,
    },
}

impl std::fmt::Display for SitePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SitePath::Sparse {
                layer,
                inputs,
                outputs,
                int8,
            } => write!(
                f,
                "sparse difference into {layer} ({inputs} → {outputs}{})",
                if *int8 { ", int8" } else { "" }
            ),
            SitePath::Dense { reason } => write!(f, "dense plan ({reason})"),
        }
    }
}

/// Why an ONNX file cannot be used, apart from not matching its card (in the engine's words).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// tract cannot parse the file.
    #[error("not a loadable ONNX model: {0}")]
    NotOnnx(String),
    /// tract cannot infer the graph's types and shapes.
    #[error("cannot infer types and shapes: {0}")]
    Types(String),
    /// The graph's inputs or outputs cannot be read.
    #[error("cannot read graph: {0}")]
    Graph(String),
    /// tract cannot optimise the graph into a runnable plan.
    #[error("cannot build plan: {0}")]
    Plan(String),
    /// The engine chosen cannot run the graph (in its own words).
    #[error("{engine}: {problem}")]
    Engine {
        /// The engine's name.
        engine: &'static str,
        /// Why.
        problem: String,
    },
    /// `builtin:mnist` was asked of a build without it.
    #[error("this build has no built-in model (feature builtin-model is off)")]
    NoBuiltin,
    /// The Monte-Carlo samples (almost) never disagree: MI stays in float rounding on every
    /// frame, so a gate with any threshold above it would pass them all.
    #[error(
        "its {rows} Monte-Carlo samples (almost) never disagree: on each of {frames} noise \
         frames MI was at most {largest_mi:e} nats, below the {floor:e} that carries a signal; \
         its dropout does not reach the output, so every frame would pass"
    )]
    SamplesAgree {
        /// Rows per frame (T, or M·T).
        rows: usize,
        /// Noise frames tried.
        frames: usize,
        /// The largest MI over those frames, in nats.
        largest_mi: f64,
        /// The MI a frame must reach to show the samples disagree, in nats.
        floor: f64,
    },
}

/// A graph's interface and operator counts.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GraphSummary {
    /// Input names with their type and shape, in graph order.
    pub inputs: Vec<(String, String)>,
    /// Output names with their type and shape.
    pub outputs: Vec<(String, String)>,
    /// Nodes in the typed graph.
    pub nodes: usize,
    /// Each operator's name and count, in order of first use.
    pub ops: Vec<(String, usize)>,
}
