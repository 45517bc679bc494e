//! The errors callers branch on, each with its documented process exit code.
//!
//! Frames that cannot be scored are *not* errors: they become `reject` verdicts with a
//! reason (see `verdict`). These are the failures that stop a command or mark its run.

use std::path::{Path, PathBuf};

/// Process exit codes, documented in the README and `mcgate --help`.
pub mod exit {
    /// Every frame was read and scored (rejected frames are a normal outcome).
    pub const OK: i32 = 0;
    /// Unexpected internal failure (a bug: please report it).
    pub const INTERNAL: i32 = 1;
    /// Bad command-line usage (clap's own code).
    pub const USAGE: i32 = 2;
    /// The model or its card is missing, corrupt, or they do not match.
    pub const MODEL: i32 = 3;
    /// At least one input frame could not be read or scored (each was rejected).
    pub const INPUT: i32 = 4;
    /// An output (stdout, `--accepted`, `--annotate`) could not be written.
    pub const OUTPUT: i32 = 5;
    /// `validate`: the device's detection differs from the workstation's beyond the tolerance.
    pub const VALIDATION: i32 = 6;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Not `source`: the message already carries the cause, and a source would be printed twice
    // by `{:#}` chains in the training commands.
    #[error("cannot {what} {}: {cause}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("model card {}: {reason}", path.display())]
    Card { path: PathBuf, reason: String },
    #[error("model {}: {reason}", path.display())]
    Model { path: PathBuf, reason: String },
    #[error("model {} does not match its card: {reason}", path.display())]
    Mismatch { path: PathBuf, reason: String },
    #[error("eval bundle {}: {reason}", path.display())]
    Bundle { path: PathBuf, reason: String },
    #[error("{0}")]
    Usage(String),
    #[error("cannot write {what}: {reason}")]
    Output { what: String, reason: String },
    #[error("inference failed: {0}")]
    Inference(String),
}

impl Error {
    pub fn io(what: &'static str, path: &Path, cause: std::io::Error) -> Error {
        Error::Io {
            what,
            path: path.to_owned(),
            cause,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Io { .. }
            | Error::Card { .. }
            | Error::Model { .. }
            | Error::Mismatch { .. } => exit::MODEL,
            Error::Bundle { .. } => exit::INPUT,
            Error::Usage(_) => exit::USAGE,
            Error::Output { .. } => exit::OUTPUT,
            Error::Inference(_) => exit::INTERNAL,
        }
    }
}
