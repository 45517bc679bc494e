//! `lite0`: export the ImageNet EfficientNet-Lite0 with last-layer MC dropout (its own
//! classifier, trained with dropout 0.2), measure it on labelled photos, write ONNX + card.
//! The card has no threshold: `mcgate calibrate` sets it from clean frames.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use clap::Args;
use mcgate::contract::card::{sha256_hex, Metrics, Pretrained, Provenance};

use crate::data::photos::Photos;
use crate::export;
use crate::nets::lite0;
use crate::nets::{mc_measures, DropoutNet};

#[derive(Debug, Args)]
pub struct Lite0Args {
    /// The converted weights (scripts/fetch-lite0.sh).
    #[arg(long, default_value = "data/lite0/efficientnet-lite0.safetensors")]
    pub weights: PathBuf,
    /// One label per line, 1000 lines, in class order.
    #[arg(long, default_value = "models/imagenet-labels.txt")]
    pub labels: PathBuf,
    /// Photos whose file names end in their class (`imagenet_03_990.jpg`), for the card's
    /// accuracy.
    #[arg(long, default_value = "data/lite0/photos/foolbox")]
    pub photos: PathBuf,
    /// Output path without extension.
    #[arg(long, default_value = "models/lite0-imagenet")]
    pub out: PathBuf,
    /// Monte-Carlo samples T for the MC accuracy and the card's default.
    #[arg(long, default_value_t = 20)]
    pub samples: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub fn run(args: Lite0Args) -> Result<()> {
    let source_commit = super::source_commit();
    let classes: Vec<String> = std::fs::read_to_string(&args.labels)
        .with_context(|| format!("reading {}", args.labels.display()))?
        .lines()
        .map(String::from)
        .collect();
    ensure!(
        classes.len() == lite0::IMAGENET_CLASSES as usize,
        "{}: {} labels, expected {}",
        args.labels.display(),
        classes.len(),
        lite0::IMAGENET_CLASSES
    );
    let (net, _vs) = lite0::load_pretrained(&args.weights)?;

    let photos = Photos::load_dir(&args.photos, &net.input_spec())?;
    let labelled: Vec<(usize, usize)> = photos
        .labels
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.map(|l| (i, l)))
        .collect();
    ensure!(
        !labelled.is_empty(),
        "no photo in {} has its class in its name",
        args.photos.display()
    );
    tch::manual_seed(args.seed as i64);
    let (det_top1, det_top5) = tch::no_grad(|| -> Result<(usize, usize)> {
        let logits = net.logits(&net.input_from_pixels(&photos.pixels), false);
        let top5 = logits.topk(5, -1, true, true).1;
        let top5 = Vec::<i64>::try_from(top5.flatten(0, -1))?;
        let hits = |k: usize| {
            labelled
                .iter()
                .filter(|&&(i, l)| top5[i * 5..i * 5 + k].contains(&(l as i64)))
                .count()
        };
        Ok((hits(1), hits(5)))
    })?;
    let per_image = mc_measures(
        &net,
        &net.input_from_pixels(&photos.pixels),
        args.samples as i64,
    )?;
    let mc_top1 = labelled
        .iter()
        .filter(|&&(i, l)| per_image[i].predicted_class == l)
        .count();
    let n = labelled.len();
    log::info!(
        "{n} labelled photos: top-1 {det_top1}/{n} deterministic, {mc_top1}/{n} MC (T={}); top-5 {det_top5}/{n}",
        args.samples
    );
    for (i, m) in per_image.iter().enumerate() {
        log::info!(
            "{}: {} (MI {:.4})",
            photos.paths[i].display(),
            classes[m.predicted_class],
            m.mutual_information
        );
    }

    export::create_parent(&args.out)?;
    let onnx = export::onnx_bytes(&net, &export::float_doc(&net))?;
    let onnx_path = export::write_onnx(&args.out, &onnx)?;
    let card = export::card_for(
        &net,
        &export::stem_name(&args.out),
        classes,
        &onnx,
        args.samples,
        None,
        Some(Metrics {
            test_accuracy_deterministic: det_top1 as f64 / n as f64,
            test_accuracy_mc: mc_top1 as f64 / n as f64,
            mc_samples: args.samples,
            test_images: n,
        }),
        Provenance::Pretrained(Pretrained {
            weights: lite0::WEIGHTS.into(),
            weights_sha256: lite0::WEIGHTS_SHA256.into(),
            published_accuracy: lite0::PUBLISHED_ACCURACY.into(),
            source_commit,
        }),
    );
    debug_assert_eq!(card.onnx_sha256, sha256_hex(&onnx));
    let card_path = export::write_card(&args.out, &card)?;
    log::info!(
        "wrote {} and {}; no MI threshold yet: run `mcgate calibrate {} <clean frames>`",
        onnx_path.display(),
        card_path.display(),
        args.out.display()
    );
    Ok(())
}
