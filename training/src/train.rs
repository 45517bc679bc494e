//! Training a dropout network, and its accuracy and MI on a dataset.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

use mcgate::contract::card::{Metrics, Threshold};
use mcgate::score::roc::{rate_above, threshold_at_fpr};

use crate::data::Dataset;
use crate::nets::{mc_measures, DropoutNet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Optimizer {
    Adam,
    Sgd,
    Rmsprop,
}

#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: Optimizer,
    pub learning_rate: f64,
    /// Multiplies the learning rate after every epoch (1.0: constant).
    pub lr_decay: f64,
    pub seed: u64,
    /// Show an indicatif progress bar (off in tests).
    pub progress: bool,
    /// Train with the network's dropout on (every shipped model); off only for a plain
    /// network, e.g. a red-team surrogate without dropout.
    pub dropout: bool,
}

/// Per-epoch record, for logs and tests.
#[derive(Debug, Clone, Copy)]
pub struct EpochStats {
    pub mean_loss: f64,
    pub accuracy: f64,
    /// Mean loss over the first tenth of the epoch's batches, to see learning within one epoch.
    pub first_loss: f64,
    /// Mean loss over the last tenth.
    pub last_loss: f64,
}

pub fn train(
    net: &dyn DropoutNet,
    vs: &nn::VarStore,
    data: &Dataset,
    cfg: &TrainConfig,
) -> Result<Vec<EpochStats>> {
    let (x, y) = data.to_tensors(vs.device());
    fit(vs, &x, &y, cfg, |bx| net.logits(bx, cfg.dropout))
}

/// The training loop: `cfg.epochs` passes over `x` `[N, ..]` / labels `y` `[N]` in a fresh
/// random order each, minimising the cross-entropy of `logits` (the model with dropout on)
/// with `vs`'s trainable variables.
pub fn fit(
    vs: &nn::VarStore,
    x: &Tensor,
    y: &Tensor,
    cfg: &TrainConfig,
    logits: impl Fn(&Tensor) -> Tensor,
) -> Result<Vec<EpochStats>> {
    let n = y.size()[0];
    if n == 0 || cfg.batch_size == 0 || cfg.epochs == 0 {
        bail!(
            "nothing to train: {n} images, batch size {}, {} epochs",
            cfg.batch_size,
            cfg.epochs
        );
    }
    tch::manual_seed(cfg.seed as i64);
    let device = vs.device();
    let mut opt = match cfg.optimizer {
        Optimizer::Adam => nn::Adam::default().build(vs, cfg.learning_rate),
        Optimizer::Sgd => nn::Sgd {
            momentum: 0.9,
            ..Default::default()
        }
        .build(vs, cfg.learning_rate),
        Optimizer::Rmsprop => nn::RmsProp::default().build(vs, cfg.learning_rate),
    }
    .context("building optimizer")?;
    let batches = (n + cfg.batch_size as i64 - 1) / cfg.batch_size as i64;
    let mut stats = vec![];
    for epoch in 1..=cfg.epochs {
        let bar = if cfg.progress {
            let bar = ProgressBar::new(batches as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{epoch}/{}", cfg.epochs));
            bar
        } else {
            ProgressBar::hidden()
        };
        let order = Tensor::randperm(n, (Kind::Int64, device));
        let (mut loss_sum, mut correct) = (0.0, 0i64);
        let mut losses = Vec::with_capacity(batches as usize);
        for b in 0..batches {
            let idx = order.narrow(
                0,
                b * cfg.batch_size as i64,
                (cfg.batch_size as i64).min(n - b * cfg.batch_size as i64),
            );
            let (bx, by) = (x.index_select(0, &idx), y.index_select(0, &idx));
            let logits = logits(&bx);
            let loss = logits.cross_entropy_for_logits(&by);
            opt.backward_step(&loss);
            let l = loss.double_value(&[]);
            losses.push(l);
            loss_sum += l * idx.size()[0] as f64;
            correct += logits
                .argmax(-1, false)
                .eq_tensor(&by)
                .sum(Kind::Int64)
                .int64_value(&[]);
            if b % 10 == 0 {
                bar.set_message(format!(
                    "loss {:.4} acc {:.2}%",
                    loss_sum / ((b + 1) * cfg.batch_size as i64).min(n) as f64,
                    100.0 * correct as f64 / ((b + 1) * cfg.batch_size as i64).min(n) as f64
                ));
            }
            bar.inc(1);
        }
        bar.finish();
        opt.set_lr(cfg.learning_rate * cfg.lr_decay.powi(epoch as i32));
        let tenth = (losses.len() / 10).max(1);
        let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
        let s = EpochStats {
            mean_loss: loss_sum / n as f64,
            accuracy: correct as f64 / n as f64,
            first_loss: mean(&losses[..tenth]),
            last_loss: mean(&losses[losses.len() - tenth..]),
        };
        log::info!(
            "epoch {epoch}: loss {:.4}, train accuracy {:.2}%",
            s.mean_loss,
            100.0 * s.accuracy
        );
        stats.push(s);
    }
    Ok(stats)
}

/// Test accuracy with dropout off.
pub fn deterministic_accuracy(net: &dyn DropoutNet, data: &Dataset, device: Device) -> f64 {
    let _guard = tch::no_grad_guard();
    let (x, y) = data.to_tensors(device);
    let mut correct = 0;
    for (bx, by) in x.split(500, 0).iter().zip(y.split(500, 0).iter()) {
        correct += net
            .logits(bx, false)
            .argmax(-1, false)
            .eq_tensor(by)
            .sum(Kind::Int64)
            .int64_value(&[]);
    }
    correct as f64 / data.len() as f64
}

/// MC accuracy (argmax of the mean over T) and the mutual information of every image,
/// computed with the runtime's own measures; masks are fresh from tch's generator.
pub fn mc_accuracy_and_mi(
    net: &dyn DropoutNet,
    data: &Dataset,
    samples: i64,
    device: Device,
) -> Result<(f64, Vec<f64>)> {
    let (x, _) = data.to_tensors(device);
    let measures = mc_measures(net, &x, samples)?;
    let correct = measures
        .iter()
        .zip(&data.labels)
        .filter(|(m, &label)| m.predicted_class == label as usize)
        .count();
    let mi = measures.iter().map(|m| m.mutual_information).collect();
    Ok((correct as f64 / data.len() as f64, mi))
}

/// What `train` and `ensemble` measure of a finished model: test accuracy with dropout off
/// and MC, and the MI threshold calibrated on held-out images; the card's `metrics` and
/// `threshold` come from it.
pub struct Measured {
    pub accuracy_deterministic: f64,
    pub accuracy_mc: f64,
    pub threshold: f64,
    samples: usize,
    members: usize,
    test_images: usize,
    validation_images: usize,
    target_fpr: f64,
}

impl Measured {
    /// The card's `metrics`.
    pub fn metrics(&self) -> Metrics {
        Metrics {
            test_accuracy_deterministic: self.accuracy_deterministic,
            test_accuracy_mc: self.accuracy_mc,
            mc_samples: self.samples,
            test_images: self.test_images,
        }
    }

    /// The card's `threshold`, provisional until checked against attacks.
    pub fn card_threshold(&self) -> Threshold {
        let samples = match self.members {
            1 => format!("T={}", self.samples),
            m => format!("{m} members × T={}, pooled", self.samples),
        };
        Threshold {
            mutual_information: self.threshold,
            method: format!(
                "{}th percentile of MI ({samples}) on {} held-out clean training images",
                100.0 * (1.0 - self.target_fpr),
                self.validation_images
            ),
            target_fpr: Some(self.target_fpr),
            provisional: true,
            calibration: None,
        }
    }
}

/// Measures `net` on `test` and calibrates its MI threshold at `target_fpr` on `validation`
/// (T = `samples`, per member for an ensemble), logging both.
pub fn measure_and_calibrate(
    net: &dyn DropoutNet,
    test: &Dataset,
    validation: &Dataset,
    samples: i64,
    target_fpr: f64,
    device: Device,
) -> Result<Measured> {
    let det = deterministic_accuracy(net, test, device);
    let (mc, test_mi) = mc_accuracy_and_mi(net, test, samples, device)?;
    log::info!(
        "test accuracy: deterministic {:.2}%, MC (T={samples}{}) {:.2}%",
        100.0 * det,
        match net.member_count() {
            1 => String::new(),
            m => format!(" × {m} members"),
        },
        100.0 * mc
    );
    let (_, val_mi) = mc_accuracy_and_mi(net, validation, samples, device)?;
    let threshold =
        threshold_at_fpr(&val_mi, target_fpr).context("cannot calibrate: no validation scores")?;
    log::info!(
        "MI threshold {threshold:.5} nats: {:.2}% of {} clean validation images above it, {:.2}% of the {} test images",
        100.0 * rate_above(&val_mi, threshold),
        val_mi.len(),
        100.0 * rate_above(&test_mi, threshold),
        test_mi.len()
    );
    Ok(Measured {
        accuracy_deterministic: det,
        accuracy_mc: mc,
        threshold,
        samples: samples as usize,
        members: net.member_count(),
        test_images: test.len(),
        validation_images: validation.len(),
        target_fpr,
    })
}
