//! The errors that stop a command: one aggregate above the commands, with structured variants
//! the binary maps to exit codes (the training crate wraps them in `anyhow`). Each layer owns
//! its own error and knows nothing above it (`model::LoadError`, `engine::EngineError`,
//! `run::plan::PlanError`, `output::OutputError`, …); this file imports those, never the
//! reverse, so no import runs back up the layers through it.
//!
//! Frames that cannot be scored are *not* errors: they become `reject` verdicts with a
//! [`RejectReason`](crate::score::verdict::RejectReason). Each variant's text is one line.

use std::path::PathBuf;

use crate::engine::EngineError;
use crate::input::frame::RawSizeError;
use crate::model::rewrite::ConvertError;
use crate::model::LoadError;
use crate::run::plan::PlanError;
use crate::score::verdict::AlarmError;
use crate::validate::error::BundleError;

/// Why a command could not go on.
// Causes are fields, not `source`s: the message already carries the cause, and a source
// would be printed twice by the `{:#}` chains of the training commands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model (its card, its ONNX file, the two together, or the pin) cannot be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// An ONNX model cannot be converted to the contract (`mcgate convert`).
    #[error("cannot convert {}: {problem}", path.display())]
    Convert {
        /// The ONNX file given to convert.
        path: PathBuf,
        /// Why.
        problem: ConvertError,
    },
    /// The model has no MI threshold yet (a converted model before `mcgate calibrate`).
    #[error(
        "model {} has no MI threshold yet: calibrate it on clean frames from the camera \
         (`mcgate calibrate {} FRAMES…`){hint}",
        path.display(),
        path.display()
    )]
    Uncalibrated {
        /// The model as the user named it.
        path: PathBuf,
        /// What else the command accepts instead, e.g. " or pass --threshold".
        hint: &'static str,
    },
    /// The frames given to `calibrate` cannot set a threshold.
    #[error("{0}")]
    Calibration(crate::calibrate::error::CalibrationError),
    /// An eval bundle cannot be read.
    #[error("eval bundle {}: {problem}", path.display())]
    Bundle {
        /// The bundle file at fault.
        path: PathBuf,
        /// What is wrong with it.
        problem: BundleError,
    },
    /// A run's settings cannot go together, or cannot be met on this machine (worded for the
    /// command line: it names the flags).
    #[error("{0}")]
    Setting(String),
    /// A setting is outside what the gate can run with (the binary names its flag).
    #[error("{what} must be {expected}, got {got}")]
    OutOfRange {
        /// The setting, e.g. "samples (T)".
        what: &'static str,
        /// The allowed values, in words.
        expected: String,
        /// The value given.
        got: String,
    },
    /// Raw frames were given a size outside what the gate reads.
    #[error(transparent)]
    RawFrameSize(#[from] RawSizeError),
    /// The alarm's k of n cannot be.
    #[error(transparent)]
    Alarm(#[from] AlarmError),
    /// An output (report stream, frame directory) could not be written.
    #[error("cannot write {what}: {cause}")]
    Output {
        /// The output, e.g. "report to stdout" or a file path.
        what: String,
        /// Why.
        cause: String,
    },
    /// The engine failed while running a plan (a bug or a model it cannot run).
    #[error("inference failed: {0}")]
    Inference(String),
}

impl From<EngineError> for Error {
    fn from(e: EngineError) -> Error {
        match e {
            EngineError::Plan { model, problem } => Error::Load(LoadError::Model {
                path: model.into(),
                problem,
            }),
            EngineError::Inference(cause) => Error::Inference(cause),
        }
    }
}

impl From<PlanError> for Error {
    fn from(e: PlanError) -> Error {
        match e {
            PlanError::Samples { expected, got } => {
                Error::out_of_range("samples (T)", expected, got)
            }
            PlanError::Engine(e) => e.into(),
        }
    }
}

impl From<crate::output::OutputError> for Error {
    fn from(e: crate::output::OutputError) -> Error {
        Error::Output {
            what: e.what,
            cause: e.cause,
        }
    }
}

impl Error {
    /// A setting outside its range.
    pub fn out_of_range(
        what: &'static str,
        expected: impl Into<String>,
        got: impl ToString,
    ) -> Error {
        Error::OutOfRange {
            what,
            expected: expected.into(),
            got: got.to_string(),
        }
    }
}
