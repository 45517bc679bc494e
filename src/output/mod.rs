//! Where reports go: verdict lines, frames written to directories, annotated frames, and
//! the end-of-run summary.

pub mod annotate;
pub mod frames;
pub mod passthrough;
pub mod report;
pub mod summary;
