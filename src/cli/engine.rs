//! `--engine` and its onnxruntime settings, shared by every command that runs a model.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use mcgate::engine::{Engine, OrtOptions};

use super::Failure;

/// The engines `--engine` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum EngineName {
    /// tract: pure Rust, with the sparse-difference path (the default).
    Tract,
    /// onnxruntime, its C library loaded at run time (a build with `--features ort`).
    Ort,
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
}

impl EngineArgs {
    /// The engine chosen, checked: present in this build and able to start (exit 2 if not).
    pub(crate) fn engine(&self) -> Result<Engine, Failure> {
        let engine = match self.engine {
            EngineName::Tract => {
                if self.ort_library.is_some() || self.ort_threads.is_some() {
                    return Err(Failure::Usage(
                        "--ort-library and --ort-threads set the ort engine; add --engine ort"
                            .into(),
                    ));
                }
                Engine::Tract
            }
            EngineName::Ort => Engine::Ort(OrtOptions {
                library: self.ort_library.clone(),
                threads: self.ort_threads.unwrap_or(1),
            }),
        };
        engine.ready().map_err(Failure::Usage)?;
        Ok(engine)
    }
}
