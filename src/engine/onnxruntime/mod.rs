//! The onnxruntime engine (feature `ort`): the `ort` crate over `libonnxruntime`, loaded at
//! run time from the path the operator gives (`--ort-library` or `ORT_DYLIB_PATH`; the PyPI
//! wheel's `onnxruntime/capi/libonnxruntime.so.*`, `scripts/setup-ort.sh`). Nothing is
//! downloaded or linked at build time.
//!
//! tract still reads and checks the graph against its card (`Model::from_parts`): this
//! engine only runs it. It runs the whole graph with every mask drawn in full (the plain
//! plan): the sparse-difference head is cut from tract's decluttered graph, which this engine
//! does not have. The masks are the gate's, drawn from the frame's seed exactly as tract's
//! plain plan draws them, so the same seed gives both engines the same masks.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ::ort::environment::Environment;
use ::ort::ep;
use ::ort::session::builder::GraphOptimizationLevel;
use ::ort::session::{Session, SessionInputValue};
use ::ort::value::TensorRef;

use super::{
    check_mask_count, copy_input, EngineError, Graph, OrtOptions, OrtProvider, Runner, SitePath,
    Strategy,
};
use crate::contract::card::ModelCard;
use crate::run::masks;
use crate::run::rng::WyRand;

/// The process's one onnxruntime environment (ort allows one per process, ever) and the
/// library it was loaded from.
static ENVIRONMENT: OnceLock<Mutex<Option<(PathBuf, Environment)>>> = OnceLock::new();

/// The library path `options` name: theirs, else `ORT_DYLIB_PATH`.
fn library_path(options: &OrtOptions) -> Result<PathBuf, String> {
    if let Some(path) = &options.library {
        return Ok(path.clone());
    }
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(
            "the ort engine needs libonnxruntime: give --ort-library PATH or set \
                  ORT_DYLIB_PATH (scripts/setup-ort.sh puts the PyPI wheel's library in \
                  .venv and prints the path)"
                .into(),
        ),
    }
}

/// Loads the library (once per process) and gives the environment sessions are made in.
/// A second path in one process is refused: the first library stays loaded.
pub fn environment(options: &OrtOptions) -> Result<Environment, String> {
    let path = library_path(options)?;
    let cell = ENVIRONMENT.get_or_init(|| Mutex::new(None));
    let mut slot = cell.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((loaded, env)) = slot.as_ref() {
        if loaded != &path {
            return Err(format!(
                "onnxruntime is already loaded from {} in this process; {} cannot be loaded too",
                loaded.display(),
                path.display()
            ));
        }
        return Ok(env.clone());
    }
    if !path.is_file() {
        return Err(format!(
            "onnxruntime library {} is not a file (scripts/setup-ort.sh)",
            path.display()
        ));
    }
    let builder = ::ort::init_from(&path).map_err(|e| load_error(&e, &path))?;
    let env = builder
        .with_name("mcgate")
        .with_telemetry(false)
        .build()
        .map_err(|e| format!("onnxruntime {}: {e}", path.display()))?;
    *slot = Some((path, env.clone()));
    Ok(env)
}

/// Refuses a provider the loaded library does not have (the PyPI `onnxruntime` wheel has
/// only the CPU's): never a silent fall back to the CPU.
pub fn check_provider(options: &OrtOptions) -> Result<(), String> {
    use ::ort::ep::ExecutionProvider as _;
    let available = match options.provider {
        OrtProvider::Cpu => Ok(true),
        OrtProvider::Cuda => ep::CUDA::is_available(),
        OrtProvider::TensorRt => ep::TensorRT::is_available(),
    }
    .map_err(|e| format!("onnxruntime: {e}"))?;
    if available {
        return Ok(());
    }
    Err(format!(
        "this onnxruntime library has no {}: the PyPI `onnxruntime` wheel runs on the CPU only; \
         load onnxruntime-gpu's library (JetPack's on a Jetson) with --ort-library",
        options.provider.onnxruntime_name()
    ))
}

/// ort's load error with the loader's own reason (which its message leaves out).
fn load_error(e: &::ort::LoadDynamicError, path: &Path) -> String {
    use std::error::Error as _;
    let cause = match e {
        ::ort::LoadDynamicError::Dlopen { error, .. } => error.source().map(|s| s.to_string()),
        _ => None,
    };
    match cause {
        Some(cause) => format!("cannot load onnxruntime {}: {cause}", path.display()),
        None => format!("cannot load onnxruntime {}: {e}", path.display()),
    }
}

/// An ONNX file onnxruntime runs; sessions are made per plan (one per `--jobs` worker).
pub struct OrtGraph {
    onnx: Arc<[u8]>,
    options: OrtOptions,
    env: Environment,
}

impl OrtGraph {
    /// Loads the library if it is not yet and makes one session of `onnx` to check that
    /// onnxruntime takes it (an error names why, in onnxruntime's words).
    pub fn new(onnx: &[u8], options: &OrtOptions) -> Result<OrtGraph, String> {
        let env = environment(options)?;
        let graph = OrtGraph {
            onnx: onnx.into(),
            options: options.clone(),
            env,
        };
        graph.session().map_err(|e| e.to_string())?;
        Ok(graph)
    }

    fn session(&self) -> ::ort::Result<Session> {
        let mut builder = Session::builder(&self.env)?
            .with_intra_threads(self.options.threads)?
            .with_inter_threads(1)?
            .with_intra_op_spinning(false)?
            .with_optimization_level(GraphOptimizationLevel::All)?
            .with_execution_providers([match self.options.provider {
                OrtProvider::Cpu => ep::CPU::default().build(),
                OrtProvider::Cuda => ep::CUDA::default().build(),
                OrtProvider::TensorRt => ep::TensorRT::default().build(),
            }
            .error_on_failure()])?;
        builder.commit_from_memory(&self.onnx)
    }
}

impl Graph for OrtGraph {
    fn site_paths(&self, card: &ModelCard) -> Vec<SitePath> {
        card.dropout_sites
            .iter()
            .map(|_| SitePath::Dense {
                reason: "the ort engine runs the whole graph; the sparse difference is \
                         tract's"
                    .into(),
            })
            .collect()
    }

    fn plan(
        &self,
        card: &ModelCard,
        samples: usize,
        _strategy: Strategy,
    ) -> Result<Box<dyn Runner>, EngineError> {
        let session = self.session().map_err(|e| EngineError::Plan {
            model: card.name.clone(),
            problem: super::ModelError::Plan(format!("onnxruntime: {e}")),
        })?;
        let starts = masks::site_starts(&card.dropout_sites, samples);
        let sites = card
            .dropout_sites
            .iter()
            .zip(starts)
            .map(|(site, start)| {
                let mut shape = vec![samples];
                shape.extend(&site.shape);
                OrtSite {
                    input: site.input.clone(),
                    p: site.p,
                    start,
                    values: vec![0.0; shape.iter().product()],
                    shape,
                }
            })
            .collect();
        Ok(Box::new(OrtPlan {
            session,
            image_name: card.input.name.clone(),
            image_shape: card.input.shape.to_vec(),
            image: vec![0.0; card.input.shape.iter().product()],
            sites,
            output: card.output.name.clone(),
            density_output: card.output.log_density.clone(),
            probs: vec![],
            density: None,
        }))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// One dropout site's mask buffer, `[T, ..shape]`.
struct OrtSite {
    input: String,
    p: f32,
    start: u64,
    shape: Vec<usize>,
    values: Vec<f32>,
}

/// A session and its input buffers for one T.
struct OrtPlan {
    session: Session,
    image_name: String,
    image_shape: Vec<usize>,
    image: Vec<f32>,
    sites: Vec<OrtSite>,
    output: String,
    density_output: Option<String>,
    probs: Vec<f32>,
    density: Option<f32>,
}

fn fail(e: impl std::fmt::Display) -> EngineError {
    EngineError::Inference(format!("onnxruntime: {e}"))
}

impl OrtPlan {
    fn run_current(&mut self) -> Result<&[f32], EngineError> {
        let mut inputs: Vec<(&str, SessionInputValue<'_>)> =
            Vec::with_capacity(1 + self.sites.len());
        let image =
            TensorRef::from_array_view((self.image_shape.as_slice(), self.image.as_slice()))
                .map_err(fail)?;
        inputs.push((self.image_name.as_str(), image.into()));
        for site in &self.sites {
            let mask = TensorRef::from_array_view((site.shape.as_slice(), site.values.as_slice()))
                .map_err(fail)?;
            inputs.push((site.input.as_str(), mask.into()));
        }
        let outputs = self.session.run(inputs).map_err(fail)?;
        let (_, probs) = outputs
            .get(&self.output)
            .ok_or_else(|| fail(format!("no output {}", self.output)))?
            .try_extract_tensor::<f32>()
            .map_err(fail)?;
        self.probs.clear();
        self.probs.extend_from_slice(probs);
        if let Some(name) = &self.density_output {
            let (_, value) = outputs
                .get(name)
                .ok_or_else(|| fail(format!("no output {name}")))?
                .try_extract_tensor::<f32>()
                .map_err(fail)?;
            match value {
                [v] => self.density = Some(*v),
                other => {
                    return Err(fail(format!(
                        "the density output has {} values, not 1",
                        other.len()
                    )))
                }
            }
        }
        Ok(&self.probs)
    }
}

impl Runner for OrtPlan {
    fn run(&mut self, image: &[f32], seed: u64) -> Result<&[f32], EngineError> {
        self.density = None;
        copy_input(&mut self.image, image, "image")?;
        for site in &mut self.sites {
            masks::fill(&mut site.values, site.p, &mut WyRand::at(seed, site.start));
        }
        self.run_current()
    }

    fn run_with_masks(&mut self, image: &[f32], given: &[&[f32]]) -> Result<&[f32], EngineError> {
        self.density = None;
        check_mask_count(given.len(), self.sites.len())?;
        copy_input(&mut self.image, image, "image")?;
        for (site, src) in self.sites.iter_mut().zip(given) {
            copy_input(&mut site.values, src, "mask")?;
        }
        self.run_current()
    }

    fn is_split(&self) -> bool {
        false
    }

    fn log_density(&self) -> Option<f32> {
        self.density
    }
}
