//! `bundle`: write an eval bundle for `mcgate validate` (and copy some of its adversarial
//! frames into the sample frames).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::{Trained, TrainedModel};
use crate::attack::Method;
use crate::bundle::{self, BundleConfig, BundleImages};

#[derive(Debug, Args)]
pub struct BundleArgs {
    #[command(flatten)]
    pub source: TrainedModel,
    /// Output directory [default: bundles/<dataset>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Clean test images (each attack adds as many adversarial and noise frames).
    #[arg(long, default_value_t = 50)]
    pub images: usize,
    #[arg(long, default_value_t = 2)]
    pub seed: u64,
    #[arg(long, default_value_t = 20)]
    pub samples: i64,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "fgm,bim,mim")]
    pub methods: Vec<Method>,
    /// L∞ budgets on the 0–255 scale.
    #[arg(long, value_delimiter = ',', default_value = "25.5")]
    pub eps: Vec<f64>,
    /// Independent MC runs scored per frame; validation compares mean AUCs over runs.
    #[arg(long, default_value_t = 8)]
    pub repeats: usize,
    /// Also copy the first N adversarial frames of each attack into DIR (the samples the
    /// README's first command gates); 0 copies none.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub sample_frames: usize,
    #[arg(long, default_value = "samples/mnist/adversarial", value_name = "DIR")]
    pub samples_dir: PathBuf,
}

/// Writes the bundle directory (emptied first) and copies the sample frames.
pub fn run(args: BundleArgs) -> Result<()> {
    let BundleArgs {
        source,
        out,
        images,
        seed,
        samples,
        methods,
        eps,
        repeats,
        sample_frames,
        samples_dir,
    } = args;
    let out = out.unwrap_or_else(|| PathBuf::from("bundles").join(source.dataset.model_name()));
    let Trained {
        card,
        net,
        test,
        device,
        ..
    } = source.load()?;
    let attacks = eps
        .iter()
        .flat_map(|&e| methods.iter().map(move |&m| (m, e)))
        .collect();
    let cfg = BundleConfig {
        seed,
        samples,
        repeats,
        attacks,
    };
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    let subset = test.pick(images, seed);
    let images = BundleImages {
        pixels: subset.to_tensors(device).0,
        labels: subset.labels.iter().map(|&l| l as usize).collect(),
        frame: &|_, pixels| bundle::plain_frame(pixels),
    };
    let n = bundle::write(
        net.as_dyn(),
        &images,
        &card.onnx_sha256,
        card.mi_threshold()
            .context("the model card has no MI threshold")?,
        &cfg,
        &out,
        device,
    )?;
    println!("wrote {n} frames and manifest.json to {}", out.display());
    if sample_frames > 0 {
        bundle::copy_adversarial_frames(&out, &samples_dir, sample_frames)?;
        println!(
            "copied {sample_frames} adversarial frames per attack to {}",
            samples_dir.display()
        );
    }
    Ok(())
}
