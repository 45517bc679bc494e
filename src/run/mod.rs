//! Run time, per frame: draw the dropout masks and run the plan (the engine runs the graph,
//! `engine::tract` today).

pub mod masks;
pub mod plan;
pub mod rng;
