//! mcgate: an adversarial-input gate for edge cameras.
//!
//! Data flows one way, one module each:
//! frame → preprocess → masks → plan → measures → verdict → sinks.
//! `card` is the model contract shared with the training crate (docs/model-format.md).

pub mod annotate;
pub mod bundle;
pub mod card;
pub mod error;
pub mod frame;
pub mod gate;
pub mod masks;
pub mod measures;
pub mod plan;
pub mod preprocess;
pub mod rng;
pub mod roc;
pub mod sinks;
pub mod verdict;

pub use error::Error;
