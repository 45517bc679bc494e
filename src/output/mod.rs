//! Where reports go: verdict lines, frames written to directories, annotated frames, and
//! the end-of-run summary.

pub mod annotate;
pub mod frames;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod passthrough;
pub mod report;
pub mod summary;
