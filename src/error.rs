//! The errors that stop a command, one enum with structured variants that callers branch on
//! (the binary maps each to its exit code; the training crate wraps them in `anyhow`).
//!
//! Frames that cannot be scored are *not* errors: they become `reject` verdicts with a
//! [`RejectReason`](crate::score::verdict::RejectReason). Each variant's text is one line.

use std::path::{Path, PathBuf};

use crate::model::card::CardError;
use crate::model::rewrite::ConvertError;
use crate::model::{MismatchError, ModelError};
use crate::validate::BundleError;

/// Why a command could not go on.
// Causes are fields, not `source`s: the message already carries the cause, and a source
// would be printed twice by the `{:#}` chains of the training commands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file the command needs could not be read.
    #[error("cannot {what} {}: {cause}", path.display())]
    Io {
        /// What was being done, e.g. "read model".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        cause: std::io::Error,
    },
    /// The model card is not valid on its own.
    #[error("model card {}: {problem}", path.display())]
    Card {
        /// The card file (or `builtin:mnist`).
        path: PathBuf,
        /// What is wrong with it.
        problem: CardError,
    },
    /// The ONNX file cannot be loaded or planned.
    #[error("model {}: {problem}", path.display())]
    Model {
        /// The ONNX file (or the card's model name when planning).
        path: PathBuf,
        /// What went wrong.
        problem: ModelError,
    },
    /// The ONNX file is not the one its card describes.
    #[error("model {} does not match its card: {problem}", path.display())]
    Mismatch {
        /// The ONNX file, or the bundle scored with another model.
        path: PathBuf,
        /// What differs.
        problem: MismatchError,
    },
    /// The model card is not the one the operator pinned (`gate --card-sha256`).
    #[error(
        "model card {} has SHA-256 {found}, not the pinned {pinned}: the model changed since \
         it was pinned (`mcgate info` prints a card's digest)",
        path.display()
    )]
    Unpinned {
        /// The card file (or `builtin:mnist`).
        path: PathBuf,
        /// The card's digest.
        found: String,
        /// The digest given.
        pinned: String,
    },
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
    Calibration(crate::calibrate::CalibrationError),
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
    #[error(
        "raw frame size {width}x{height} must be within 1..={} per side",
        crate::input::frame::MAX_SIDE
    )]
    RawFrameSize {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// The alarm's k of n cannot be.
    #[error(
        "alarm needs 1 <= k <= n <= {}, got k={k} n={n}",
        crate::score::verdict::MAX_WINDOW
    )]
    Alarm {
        /// Rejects that raise the alarm.
        k: usize,
        /// Frames looked back on.
        n: usize,
    },
    /// An output (report stream, frame directory) could not be written.
    #[error("cannot write {what}: {cause}")]
    Output {
        /// The output, e.g. "report to stdout" or a file path.
        what: String,
        /// Why.
        cause: String,
    },
    /// tract failed while running a plan (a bug or a model tract cannot run).
    #[error("inference failed: {0}")]
    Inference(String),
}

impl Error {
    /// An I/O error on `path` while doing `what`.
    pub fn io(what: &'static str, path: &Path, cause: std::io::Error) -> Error {
        Error::Io {
            what,
            path: path.to_owned(),
            cause,
        }
    }

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

/// Anyhow chains (tract's errors) as one line: "outer: inner: root".
pub(crate) fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}
