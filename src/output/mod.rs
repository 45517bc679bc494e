//! Where reports go: verdict lines, frames written to directories, annotated frames, the
//! end-of-run summary and metrics.
//!
//! Two kinds of output, kept apart so that the write-before-verdict rule lives in one place
//! (the session):
//! - [`Sink`]s observe each frame once its verdict is final and cannot change it: the report
//!   lines, annotated frames, the summary, metrics (and MQTT events next);
//! - frame writers that pass accepted frames on (`--accepted`, pass-through) run before the
//!   verdict line, and a frame they cannot pass on becomes a reject (`session::FrameOutputs`).

pub mod annotate;
pub mod frames;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "mqtt")]
pub mod mqtt;
pub mod passthrough;
pub mod report;
pub mod summary;

use crate::input::frame::Frame;
use crate::score::report::Report;

/// What a gate needs to publish its events: `--mqtt`, `--camera`, `--mqtt-ca`,
/// `--mqtt-credentials`, `--mqtt-cert` and `--mqtt-key` (the element's properties of the same
/// names without `--`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqttSettings {
    /// `mqtt[s]://HOST:PORT/PREFIX`.
    pub url: String,
    /// The camera's name in the events.
    pub camera: String,
    /// PEM file of the CA certificates that sign the broker's (`mqtts://` only; the
    /// system's when absent).
    pub ca: Option<std::path::PathBuf>,
    /// File holding `USER:PASSWORD` on one line.
    pub credentials: Option<std::path::PathBuf>,
    /// PEM certificate chain the gate shows a broker that asks for one (`mqtts://` only).
    pub client_cert: Option<std::path::PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<std::path::PathBuf>,
}

/// An output (report stream, frame folder, pass-through, metrics listener) that could not be
/// written: the output layer's one error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot write {what}: {cause}")]
pub struct OutputError {
    /// The output, e.g. "report to stdout" or a file path.
    pub what: String,
    /// Why.
    pub cause: String,
}

/// An observer of decided frames.
pub trait Sink {
    /// One frame's final report, with the frame when it could be read. An error stops the
    /// session (an output that cannot be written).
    fn observe(&mut self, report: &Report, frame: Option<&Frame>) -> Result<(), OutputError>;
}
