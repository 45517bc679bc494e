//! Run time, per frame: draw the dropout masks and run the plan (and the sparse layers
//! between its parts).

pub mod masks;
pub mod plan;
pub mod rng;
pub mod sparse;
