//! `photo-bundle`: an eval bundle for `mcgate validate models/lite0-imagenet` — clean photos,
//! their adversarial versions (against the MC model) and matched noise, each frame the
//! photo resized to the card's shorter side with the (altered) centre crop in place, so the
//! device's runtime cuts exactly the pixels the workstation scored.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use tch::Device;

use crate::attack::Method;
use crate::bundle::{self, BundleConfig, BundleImages};
use crate::data::photos::Photos;
use crate::nets::lite0;
use crate::nets::DropoutNet;

#[derive(Debug, Args)]
pub struct PhotoBundleArgs {
    /// Photo files (PNG/JPEG); their classes after the last `_` of the name, if any.
    #[arg(required = true)]
    pub photos: Vec<PathBuf>,
    /// The converted weights (scripts/fetch-lite0.sh).
    #[arg(long, default_value = "data/lite0/efficientnet-lite0.safetensors")]
    pub weights: PathBuf,
    /// The exported model whose card (ONNX hash, MI threshold) the bundle is for.
    #[arg(long, default_value = "models/lite0-imagenet")]
    pub model: PathBuf,
    /// Output directory (emptied first).
    #[arg(long, default_value = "bundles/lite0-imagenet")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 2)]
    pub seed: u64,
    #[arg(long, default_value_t = 20)]
    pub samples: i64,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "fgm,bim")]
    pub methods: Vec<Method>,
    /// L∞ budgets on the 0–255 scale.
    #[arg(long, value_delimiter = ',', default_value = "10")]
    pub eps: Vec<f64>,
    /// Independent MC runs scored per frame.
    #[arg(long, default_value_t = 4)]
    pub repeats: usize,
}

pub fn run(args: PhotoBundleArgs) -> Result<()> {
    let device = Device::Cpu;
    let (net, _vs) = lite0::load_pretrained(&args.weights)?;
    let card = mcgate::model::Model::load_from(&args.model)
        .with_context(|| format!("loading {}", args.model.display()))?
        .card;
    let photos = Photos::load(args.photos.clone(), &net.input_spec())?;
    // Unlabelled photos are labelled with the deterministic class (the bundle's label is
    // only reported, the attacks aim away from the MC model's own prediction).
    let det = tch::no_grad(|| {
        net.logits(&net.input_from_pixels(&photos.pixels), false)
            .argmax(-1, false)
    });
    let det = Vec::<i64>::try_from(det)?;
    let labels = photos
        .labels
        .iter()
        .zip(&det)
        .map(|(l, &d)| l.unwrap_or(d as usize))
        .collect();
    let frame = |k: usize, crop: &tch::Tensor| -> Result<image::DynamicImage> {
        Ok(photos.frame_with_crop(k, crop)?.into())
    };
    let images = BundleImages {
        pixels: photos.pixels.shallow_clone(),
        labels,
        frame: &frame,
    };
    let cfg = BundleConfig {
        seed: args.seed,
        samples: args.samples,
        repeats: args.repeats,
        attacks: args
            .eps
            .iter()
            .flat_map(|&e| args.methods.iter().map(move |&m| (m, e)))
            .collect(),
    };
    if args.out.exists() {
        std::fs::remove_dir_all(&args.out)
            .with_context(|| format!("clearing {}", args.out.display()))?;
    }
    let n = bundle::write(
        &net,
        &images,
        &card.onnx_sha256,
        card.mi_threshold()
            .context("the model card has no MI threshold: run `mcgate calibrate` first")?,
        &cfg,
        &args.out,
        device,
    )?;
    println!(
        "wrote {n} frames and manifest.json to {}",
        args.out.display()
    );
    Ok(())
}
