//! `photo-samples`: clean photos and their adversarial versions for the README's photo gate
//! (`mcgate gate models/lite0-imagenet samples/photos/`). Only photos the MC model classifies
//! correctly are attacked (their class is in the file name; a photo without one counts as
//! right in its own prediction), untargeted, against the MC model (the paper's loss: the
//! cross-entropy of the MC mean, fresh masks every step); only successful adversarials (the
//! 8-bit result's MC class differs) are written.
//!
//! Each file is the photo with its shorter side already at the card's size and, for an
//! adversarial one, its centre crop replaced by the attacked 8-bit pixels: the runtime's own
//! resize leaves it alone and its crop is exactly the attacked image.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use clap::Args;
use tch::Tensor;

use crate::attack::{self, Attack, Method, Target};
use crate::data::photos::Photos;
use crate::eval::tch_scores::tch_scores;
use crate::measures::Measure;
use crate::nets::lite0;
use crate::nets::DropoutNet;

#[derive(Debug, Args)]
pub struct PhotoSamplesArgs {
    /// Photo files (PNG/JPEG).
    #[arg(required = true)]
    pub photos: Vec<PathBuf>,
    /// The converted weights (scripts/fetch-lite0.sh).
    #[arg(long, default_value = "data/lite0/efficientnet-lite0.safetensors")]
    pub weights: PathBuf,
    /// Output directory.
    #[arg(long, default_value = "samples/photos")]
    pub out: PathBuf,
    /// Attacks, each against the MC model.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "fgm,bim")]
    pub methods: Vec<Method>,
    /// Budget on the 0–255 scale (the paper's photo budgets: 5 and 10).
    #[arg(long, default_value_t = 10.0)]
    pub eps: f64,
    /// Monte-Carlo samples T of the attacker and of the scores printed.
    #[arg(long, default_value_t = 20)]
    pub samples: i64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub fn run(args: PhotoSamplesArgs) -> Result<()> {
    let (net, _vs) = lite0::load_pretrained(&args.weights)?;
    tch::manual_seed(args.seed as i64);
    let photos = Photos::load(args.photos.clone(), &net.input_spec())?;
    let clean = tch_scores(&net, &photos.pixels, args.samples)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut written = 0;
    for i in 0..photos.len() {
        let name = photos.paths[i]
            .file_stem()
            .context("photo without a file name")?
            .to_string_lossy()
            .to_string();
        let own = clean.mc_pred[i];
        if photos.labels[i].is_some_and(|l| l as i64 != own) {
            log::info!("{name}: misclassified ({own}), not attacked");
            continue;
        }
        let path = args.out.join(format!("clean_{name}.png"));
        photos
            .resized(i)
            .save(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        written += 1;
        let x = photos.pixels.narrow(0, i as i64, 1);
        let y = Tensor::from_slice(&[own]);
        for &method in &args.methods {
            let a = Attack::paper(
                method,
                args.eps,
                Target::McMean {
                    samples: args.samples,
                },
            );
            let adv = attack::run(&net, &x, &y, &a);
            // Scored as the file will hold it: 8-bit pixels.
            let adv = (adv * 255.0).round().clamp(0.0, 255.0) / 255.0;
            let s = tch_scores(&net, &adv, args.samples)?;
            let tag = format!("{method:?}").to_lowercase();
            log::info!(
                "{name} {tag}: class {own} → {} (MC), MI {:.4} → {:.4}",
                s.mc_pred[0],
                clean.by_measure[&Measure::MutualInformation][i],
                s.by_measure[&Measure::MutualInformation][0]
            );
            if s.mc_pred[0] == own {
                log::info!("{name} {tag}: the attack failed, not written");
                continue;
            }
            let frame = photos.frame_with_crop(i, &adv.squeeze_dim(0))?;
            let path = args.out.join(format!("{tag}_eps{}_{name}.png", args.eps));
            frame
                .save(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            written += 1;
        }
    }
    ensure!(
        written > 0,
        "no photo was classified correctly: nothing written"
    );
    println!("wrote {written} frames under {}", args.out.display());
    Ok(())
}
