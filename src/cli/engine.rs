//! `--engine` and its onnxruntime settings, shared by every command that runs a model.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use mcgate::engine::{Engine, OrtOptions, OrtProvider};

use super::Failure;

/// The engines `--engine` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum EngineName {
    /// tract: pure Rust, with the sparse-difference path (the default).
    Tract,
    /// onnxruntime, its C library loaded at run time (a build with `--features ort`).
    Ort,
}

/// The execution providers `--ort-provider` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProviderName {
    /// The CPU (every onnxruntime library).
    Cpu,
    /// NVIDIA CUDA (onnxruntime-gpu's library; JetPack's on a Jetson).
    Cuda,
    /// NVIDIA TensorRT (a library built with it; JetPack's on a Jetson).
    Tensorrt,
}

#[derive(Args, Clone, Debug)]
pub(crate) struct EngineArgs {
    /// Which engine runs the model. tract reads and checks the model either way; the masks,
    /// measures and verdicts are the gate's, so the same seed gives the same verdicts through
    /// both (README, "Engines").
    #[arg(long, value_enum, default_value_t = EngineName::Tract)]
    engine: EngineName,
    /// With --engine ort: the onnxruntime library to load [default: $ORT_DYLIB_PATH].
    /// `scripts/setup-ort.sh` installs the PyPI wheel's and prints its path.
    #[arg(long, value_name = "PATH")]
    ort_library: Option<PathBuf>,
    /// With --engine ort: intra-op threads of each onnxruntime session (one session per
    /// --jobs worker) [default: 1, one core per worker].
    #[arg(long, value_name = "N")]
    ort_threads: Option<usize>,
    /// With --engine ort: where onnxruntime runs the graph [default: cpu]. One the library
    /// lacks is refused (exit 2), never replaced by the CPU; the PyPI wheel has only cpu.
    #[arg(long, value_enum, value_name = "PROVIDER")]
    ort_provider: Option<ProviderName>,
}

impl EngineArgs {
    /// The engine chosen, checked: present in this build and able to start (exit 2 if not).
    pub(crate) fn engine(&self) -> Result<Engine, Failure> {
        let engine = match self.engine {
            EngineName::Tract => {
                if self.ort_library.is_some()
                    || self.ort_threads.is_some()
                    || self.ort_provider.is_some()
                {
                    return Err(Failure::Usage(
                        "--ort-library, --ort-threads and --ort-provider set the ort engine; \
                         add --engine ort"
                            .into(),
                    ));
                }
                Engine::Tract
            }
            EngineName::Ort => Engine::Ort(OrtOptions {
                library: self.ort_library.clone(),
                threads: self.ort_threads.unwrap_or(1),
                provider: match self.ort_provider {
                    None | Some(ProviderName::Cpu) => OrtProvider::Cpu,
                    Some(ProviderName::Cuda) => OrtProvider::Cuda,
                    Some(ProviderName::Tensorrt) => OrtProvider::TensorRt,
                },
            }),
        };
        engine.ready().map_err(Failure::Usage)?;
        Ok(engine)
    }
}
