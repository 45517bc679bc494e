//! `train-vae`: the paper's 2-D MNIST VAE, trained on the training split, checkpoint written
//! for the latent-space figures.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use tch::{nn, Device};

use crate::data::{self, Known};
use crate::latent::vae::{self, Vae};

#[derive(Debug, Args)]
pub struct TrainVaeArgs {
    /// Directory with the MNIST IDX files.
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// The checkpoint to write.
    #[arg(long, default_value = "models/mnist-vae.safetensors")]
    pub out: PathBuf,
    /// The paper's: 50.
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: i64,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Use only the first N training images; for quick runs.
    #[arg(long)]
    pub train_limit: Option<usize>,
}

pub fn run(args: TrainVaeArgs) -> Result<()> {
    let mut train = data::load_split(&args.data, "train", Known::Mnist.fetch_hint())?;
    if let Some(n) = args.train_limit {
        train = train.slice(0..n.min(train.len()));
    }
    let test = data::load_split(&args.data, "t10k", Known::Mnist.fetch_hint())?;
    let device = Device::cuda_if_available();
    let vs = nn::VarStore::new(device);
    let model = Vae::new(&vs.root());
    let (x, _) = train.to_tensors(device);
    let start = Instant::now();
    let losses = vae::train(
        &model,
        &vs,
        &x,
        args.epochs,
        args.batch_size,
        args.lr,
        args.seed,
    )?;
    let (tx, _) = test.to_tensors(device);
    let test_loss = tch::no_grad(|| {
        tch::manual_seed(args.seed as i64);
        model.loss(&tx).double_value(&[])
    });
    crate::export::create_parent(&args.out)?;
    vs.save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let spread = vae::encode_means(&model, &tx).std_dim(0, true, false);
    println!(
        "{} training images, {} epochs in {:.0} s: loss {:.2} (train, last epoch), {:.2} (test); test codes' std per latent axis {:?}; wrote {}",
        train.len(),
        args.epochs,
        start.elapsed().as_secs_f64(),
        losses.last().copied().unwrap_or(f64::NAN),
        test_loss,
        Vec::<f32>::try_from(spread)?,
        args.out.display()
    );
    Ok(())
}
