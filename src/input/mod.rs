//! Where frames come from (image files, raw stdin) and how they become model input.

pub mod budget;
pub mod frame;
pub mod preprocess;
pub mod source;
