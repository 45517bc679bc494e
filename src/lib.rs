//! mcgate: an adversarial-input gate for edge cameras.
//!
//! Data flows one way, one module each:
//! frame → preprocess → masks → plan → measures → verdict → sinks.
//! `card` is the model contract shared with the training crate (docs/model-format.md).

pub mod card;
pub mod error;
pub mod masks;
pub mod measures;
pub mod plan;
pub mod rng;
pub mod roc;

pub use error::Error;
