//! Why an eval bundle cannot be used (apart from the aggregate's `validate`, so that the
//! error above the commands can name it without importing the command).

use crate::contract::bundle::BUNDLE_SCHEMA;
use crate::input::frame::ReadError;

/// Why a bundle cannot be used; each variant renders as one line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BundleError {
    /// The manifest cannot be read.
    #[error("{0}")]
    Read(String),
    /// The manifest is not valid JSON of the schema.
    #[error("{0}")]
    Json(String),
    /// The manifest is of another schema version.
    #[error("schema is {found:?}, this build reads {BUNDLE_SCHEMA:?}")]
    Schema {
        /// The manifest's `schema`.
        found: String,
    },
    /// A frame names a group the manifest does not have.
    #[error("frame {frame} names unknown group {group}")]
    UnknownGroup {
        /// The frame's file.
        frame: String,
        /// The group it names.
        group: String,
    },
    /// The manifest is well-formed JSON but cannot be compared against (no runs, a frame
    /// without a score per run, no attack).
    #[error("{0}")]
    Incomplete(String),
    /// A frame file cannot be read or decoded.
    #[error("{0}")]
    Frame(ReadError),
    /// A frame could not be scored on this device.
    #[error("frame could not be scored: {0}")]
    Unscored(String),
}
