//! `samples`: write the sample frames the README's first command gates.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::{data, sample_frames};

#[derive(Debug, Args)]
pub struct SamplesArgs {
    /// Directory with the MNIST IDX files.
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// Output directory; gets clean/, noise/ and ood/ subdirectories.
    #[arg(long, default_value = "samples/mnist")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

pub fn run(args: SamplesArgs) -> Result<()> {
    let test = data::load_split(&args.data, "t10k", data::Known::Mnist.fetch_hint())?;
    let written = sample_frames::write_samples(&test, &args.out, args.seed)?;
    println!("wrote {written} sample frames under {}", args.out.display());
    Ok(())
}
