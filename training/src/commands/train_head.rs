//! `train-head`: the paper's cats-vs-dogs setup on any labelled image folder — the ImageNet
//! EfficientNet-Lite0 backbone frozen, its pooled features computed once (and cached), a new
//! head `Dropout(p) → Dense(classes)` trained on them; MC dropout on that head only. A part of
//! each class is held out: it measures the accuracy and sets the MI threshold, as `train`
//! does for MNIST. Writes ONNX, card and checkpoint.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use mcgate::contract::card::{sha256_hex, Backbone, Metrics, Provenance, Threshold, Training};
use mcgate::score::roc::{rate_above, threshold_at_fpr};
use tch::{nn, Device, Kind, Tensor};

use crate::data::image_folder::ImageFolder;
use crate::export::{self, with_ext};
use crate::features;
use crate::nets::lite0::{self, FEATURES};
use crate::nets::{mc_measures_from_features, DropoutNet};
use crate::train::{self, Optimizer, TrainConfig};

#[derive(Debug, Args)]
pub struct TrainHeadArgs {
    /// The image folder: one sub-folder per class, named after it, with its PNG/JPEG files
    /// (e.g. Microsoft's PetImages with Cat/ and Dog/).
    pub data_dir: PathBuf,
    /// The converted backbone weights (scripts/fetch-lite0.sh).
    #[arg(long, default_value = lite0::DEFAULT_WEIGHTS)]
    pub weights: PathBuf,
    /// Output path without extension: <OUT>.onnx, <OUT>.card.json, <OUT>.safetensors.
    #[arg(long, default_value = "models/head")]
    pub out: PathBuf,
    /// Drop probability of the head's dropout (the paper's cats-vs-dogs model: 0.5).
    #[arg(long, default_value_t = 0.5)]
    pub p: f64,
    #[arg(long, default_value_t = 15)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Learning-rate factor applied after each epoch (1 = constant).
    #[arg(long, default_value_t = 1.0)]
    pub lr_decay: f64,
    /// Share of each class held out for accuracy and the MI threshold (the paper: 0.2).
    #[arg(long, default_value_t = 0.2)]
    pub validation_fraction: f64,
    /// Monte-Carlo samples T for MC accuracy, the threshold and the card's default.
    #[arg(long, default_value_t = 20)]
    pub samples: usize,
    /// Clean false-positive rate the MI threshold is calibrated for.
    #[arg(long, default_value_t = 0.05)]
    pub target_fpr: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where the backbone's features are cached, named by a hash of the weights and every
    /// file's path and bytes.
    #[arg(long, default_value = "data/feature-cache")]
    pub cache_dir: PathBuf,
    /// Compute the features without reading or writing the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Leave out files that cannot be decoded (PetImages has a few), listing them, instead of
    /// stopping at the first.
    #[arg(long)]
    pub skip_unreadable: bool,
    /// Images per backbone batch while computing features.
    #[arg(long, default_value_t = 32)]
    pub trunk_batch: usize,
}

/// What a run did, for the log and the tests.
#[derive(Debug, Clone)]
pub struct HeadOutcome {
    pub classes: Vec<String>,
    pub train_images: usize,
    pub validation_images: usize,
    /// Validation accuracy with dropout off, and of the MC mean.
    pub accuracy_deterministic: f64,
    pub accuracy_mc: f64,
    pub threshold: f64,
    /// Files left out as unreadable.
    pub unreadable: Vec<PathBuf>,
    pub features_from_cache: bool,
    pub onnx: PathBuf,
    pub card: PathBuf,
}

pub fn run(args: TrainHeadArgs) -> Result<()> {
    let o = train_head(args)?;
    println!(
        "{} classes, {} train / {} held-out images ({} unreadable left out); held-out accuracy {:.2}% deterministic, {:.2}% MC; MI threshold {:.5}\nwrote {} and {}",
        o.classes.len(),
        o.train_images,
        o.validation_images,
        o.unreadable.len(),
        100.0 * o.accuracy_deterministic,
        100.0 * o.accuracy_mc,
        o.threshold,
        o.onnx.display(),
        o.card.display()
    );
    Ok(())
}

pub fn train_head(args: TrainHeadArgs) -> Result<HeadOutcome> {
    ensure!(
        (0.0..1.0).contains(&args.p),
        "--p {} is not a drop probability in [0, 1)",
        args.p
    );
    ensure!(
        args.validation_fraction > 0.0 && args.validation_fraction < 1.0,
        "--validation-fraction {} must be in (0, 1)",
        args.validation_fraction
    );
    ensure!(args.samples > 0, "--samples 0");
    let source_commit = super::source_commit();
    let folder = ImageFolder::scan(&args.data_dir)?;
    log::info!(
        "{}: {} images in {} classes ({}); {} other files not read",
        folder.root.display(),
        folder.len(),
        folder.classes.len(),
        folder.counts_text(),
        folder.not_images.len()
    );

    let device = Device::cuda_if_available();
    let classes = folder.classes.len() as i64;
    let (mut net, vs) = lite0::load_backbone(&args.weights, classes, args.p, device)?;
    let weights_id = sha256_hex(
        &std::fs::read(&args.weights)
            .with_context(|| format!("reading {}", args.weights.display()))?,
    );
    let feats = features::of_files(
        &net,
        &weights_id,
        &folder.root,
        &folder.files,
        (!args.no_cache).then_some(args.cache_dir.as_path()),
        args.trunk_batch,
        device,
    )?;
    let unreadable: Vec<PathBuf> = feats
        .unreadable
        .iter()
        .map(|(i, _)| folder.files[*i].clone())
        .collect();
    if let Some((i, why)) = feats.unreadable.first() {
        if !args.skip_unreadable {
            bail!(
                "{} of {} files cannot be read, first {}: {why} (--skip-unreadable leaves them out)",
                unreadable.len(),
                folder.len(),
                folder.files[*i].display()
            );
        }
        for (i, why) in &feats.unreadable {
            log::warn!("left out {}: {why}", folder.files[*i].display());
        }
    }

    let (train_idx, val_idx) = split(&folder, &feats, args.validation_fraction, args.seed)?;
    let pick = |idx: &[i64]| {
        let x = feats
            .values
            .index_select(0, &Tensor::from_slice(idx))
            .to_device(device);
        let labels: Vec<i64> = idx
            .iter()
            .map(|&i| folder.labels[i as usize] as i64)
            .collect();
        (x, labels)
    };
    let (train_x, train_labels) = pick(&train_idx);
    let (val_x, val_labels) = pick(&val_idx);
    log::info!(
        "device {device:?}; {} train / {} held-out images",
        train_labels.len(),
        val_labels.len()
    );

    let head_vs = nn::VarStore::new(device);
    let head = nn::linear(head_vs.root(), FEATURES, classes, Default::default());
    let cfg = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        optimizer: Optimizer::Adam,
        learning_rate: args.lr,
        lr_decay: args.lr_decay,
        cyclic_lr: false,
        seed: args.seed,
        progress: false,
        dropout: true,
        adversarial: None,
        eps_warmup: 0,
    };
    let start = Instant::now();
    let y = Tensor::from_slice(&train_labels).to_device(device);
    train::fit(&head_vs, &train_x, &y, &cfg, |f| {
        f.dropout(args.p, true).apply(&head)
    })?;
    let train_seconds = start.elapsed().as_secs_f64();
    net.set_classifier(&head)?;

    let det_pred = tch::no_grad(|| {
        net.head(&val_x, &[Tensor::ones([FEATURES], (Kind::Float, device))])
            .argmax(-1, false)
    });
    let det_pred = Vec::<i64>::try_from(det_pred.to_device(Device::Cpu))?;
    let per_image = mc_measures_from_features(&net, &val_x, args.samples as i64)?;
    let right = |pred: &mut dyn Iterator<Item = i64>| {
        pred.zip(&val_labels).filter(|(p, l)| p == *l).count() as f64 / val_labels.len() as f64
    };
    let accuracy_deterministic = right(&mut det_pred.iter().copied());
    let accuracy_mc = right(&mut per_image.iter().map(|m| m.predicted_class as i64));
    let val_mi: Vec<f64> = per_image.iter().map(|m| m.mutual_information).collect();
    let threshold = threshold_at_fpr(&val_mi, args.target_fpr)
        .context("cannot calibrate: no held-out scores")?;
    log::info!(
        "held-out accuracy {:.2}% deterministic, {:.2}% MC (T={}); MI threshold {threshold:.5}: {:.2}% of {} held-out images above it",
        100.0 * accuracy_deterministic,
        100.0 * accuracy_mc,
        args.samples,
        100.0 * rate_above(&val_mi, threshold),
        val_mi.len()
    );

    export::create_parent(&args.out)?;
    let onnx = export::onnx_bytes(&net, &export::float_doc(&net))?;
    let onnx_path = export::write_onnx(&args.out, &onnx)?;
    let ckpt = with_ext(&args.out, "safetensors");
    vs.save(&ckpt)
        .with_context(|| format!("writing {}", ckpt.display()))?;
    let card = export::card_for(
        &net,
        &export::stem_name(&args.out),
        folder.classes.clone(),
        &onnx,
        args.samples,
        Some(Threshold {
            mutual_information: threshold,
            method: format!(
                "{}th percentile of MI (T={}) on {} held-out clean images of the folder",
                100.0 * (1.0 - args.target_fpr),
                args.samples,
                val_labels.len()
            ),
            target_fpr: Some(args.target_fpr),
            provisional: true,
            calibration: None,
        }),
        Some(Metrics {
            test_accuracy_deterministic: accuracy_deterministic,
            test_accuracy_mc: accuracy_mc,
            mc_samples: args.samples,
            test_images: val_labels.len(),
        }),
        Provenance::Trained(Training {
            dataset: format!(
                "image folder {} ({}; {} unreadable files left out), {:.0} % of each class held out; head on the frozen backbone's {FEATURES} pooled features",
                folder.root.display(),
                folder.counts_text(),
                unreadable.len(),
                100.0 * args.validation_fraction
            ),
            train_images: train_labels.len(),
            epochs: args.epochs,
            batch_size: args.batch_size,
            optimizer: format!("adam lr={} decay={}/epoch", args.lr, args.lr_decay),
            seed: args.seed,
            device: format!("{device:?}"),
            train_seconds,
            source_commit,
            backbone: Some(Backbone {
                weights: lite0::WEIGHTS.into(),
                weights_sha256: lite0::WEIGHTS_SHA256.into(),
            }),
            adversarial: None,
        }),
    );
    let card_path = export::write_card(&args.out, &card)?;
    Ok(HeadOutcome {
        classes: folder.classes,
        train_images: train_labels.len(),
        validation_images: val_labels.len(),
        accuracy_deterministic,
        accuracy_mc,
        threshold,
        unreadable,
        features_from_cache: feats.from_cache,
        onnx: onnx_path,
        card: card_path,
    })
}

/// Stratified split of the readable files: per class, a seeded shuffle and the first
/// `fraction` (rounded, at least one) held out. Each class needs two readable images.
fn split(
    folder: &ImageFolder,
    feats: &features::Features,
    fraction: f64,
    seed: u64,
) -> Result<(Vec<i64>, Vec<i64>)> {
    let labels = &folder.labels;
    tch::manual_seed(seed as i64);
    let (mut train, mut val) = (vec![], vec![]);
    for (class, name) in folder.classes.iter().enumerate() {
        let members: Vec<i64> = (0..labels.len())
            .filter(|&i| labels[i] == class && feats.readable(i))
            .map(|i| i as i64)
            .collect();
        ensure!(
            members.len() >= 2,
            "class {name:?} has {} readable image(s): it needs one to train on and one to hold out",
            members.len()
        );
        let order = Vec::<i64>::try_from(Tensor::randperm(
            members.len() as i64,
            (Kind::Int64, Device::Cpu),
        ))?;
        let held = ((fraction * members.len() as f64).round() as usize).clamp(1, members.len() - 1);
        for (k, &o) in order.iter().enumerate() {
            let i = members[o as usize];
            if k < held {
                val.push(i);
            } else {
                train.push(i);
            }
        }
    }
    train.sort();
    val.sort();
    Ok((train, val))
}
