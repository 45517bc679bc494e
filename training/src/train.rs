//! Training a dropout network, and its accuracy and MI on a dataset.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

use mcgate::contract::card::{Metrics, Threshold};
use mcgate::score::roc::{rate_above, threshold_at_fpr};

use crate::adversarial::{Adversarial, RobustCheck};
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
    /// One cycle instead (Wong et al. 2020's schedule for fast adversarial training): the rate
    /// rises linearly from 0 to `learning_rate` over the first 2/5 of the batches and falls
    /// back to 0 by the last; `lr_decay` is unused.
    pub cyclic_lr: bool,
    pub seed: u64,
    /// Show an indicatif progress bar (off in tests).
    pub progress: bool,
    /// Train with the network's dropout on (every shipped model); off only for a plain
    /// network, e.g. a red-team surrogate without dropout.
    pub dropout: bool,
    /// Train on attacked batches (`crate::adversarial`); `None`: on the clean ones.
    pub adversarial: Option<Adversarial>,
    /// Epochs over which the attack's ε ramps linearly from 0 to its value, batch by batch
    /// (0: the full ε from the first batch).
    pub eps_warmup: usize,
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
    /// PGD accuracy on the held-out check images after the epoch (adversarial training).
    pub robust_accuracy: Option<f64>,
}

/// Trains `net` on `data`'s pixels; with `cfg.adversarial`, `check` (if any) is the
/// catastrophic-overfitting guard, run on the network with dropout off after every epoch.
pub fn train(
    net: &dyn DropoutNet,
    vs: &nn::VarStore,
    data: &Dataset,
    cfg: &TrainConfig,
    check: Option<&RobustCheck>,
) -> Result<Vec<EpochStats>> {
    let (x, y) = data.to_tensors(vs.device());
    let eval = |px: &Tensor| net.logits(&net.input_from_pixels(px), false);
    let guard = check.map(|check| Guard {
        check,
        logits: &eval,
    });
    fit_guarded(
        vs,
        &x,
        &y,
        cfg,
        &|px| net.logits(&net.input_from_pixels(px), cfg.dropout),
        guard,
    )
}

/// The robust-accuracy check and the network it runs on (dropout off).
struct Guard<'a> {
    check: &'a RobustCheck,
    logits: &'a dyn Fn(&Tensor) -> Tensor,
}

/// The training loop: `cfg.epochs` passes over `x` `[N, ..]` / labels `y` `[N]` in a fresh
/// random order each, minimising the cross-entropy of `logits` (the model with dropout on)
/// with `vs`'s trainable variables. `x` may be anything the closure takes (a head's cached
/// features): adversarial training, which attacks pixels, goes through [`train`].
pub fn fit(
    vs: &nn::VarStore,
    x: &Tensor,
    y: &Tensor,
    cfg: &TrainConfig,
    logits: impl Fn(&Tensor) -> Tensor,
) -> Result<Vec<EpochStats>> {
    if cfg.adversarial.is_some() {
        bail!("adversarial training attacks pixels: train the whole network (train), not features");
    }
    fit_guarded(vs, x, y, cfg, &logits, None)
}

fn fit_guarded(
    vs: &nn::VarStore,
    x: &Tensor,
    y: &Tensor,
    cfg: &TrainConfig,
    logits: &dyn Fn(&Tensor) -> Tensor,
    guard: Option<Guard>,
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
    if let Some(a) = &cfg.adversarial {
        a.validate()?;
    }
    let batches = (n + cfg.batch_size as i64 - 1) / cfg.batch_size as i64;
    let warmup_batches = cfg.eps_warmup as i64 * batches;
    let mut stats = vec![];
    // The best robust epoch so far: its accuracy, number and weights.
    let mut best: Option<(f64, usize, Weights)> = None;
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
            if cfg.cyclic_lr {
                let t = ((epoch - 1) as f64 + (b + 1) as f64 / batches as f64) / cfg.epochs as f64;
                let rise = 0.4;
                let share = if t < rise {
                    t / rise
                } else {
                    (1.0 - t) / (1.0 - rise)
                };
                opt.set_lr(cfg.learning_rate * share);
            }
            let (loss, logits) = match &cfg.adversarial {
                None => {
                    let logits = logits(&bx);
                    (logits.cross_entropy_for_logits(&by), logits)
                }
                Some(a) => {
                    let done = (epoch as i64 - 1) * batches + b + 1;
                    let a = if done < warmup_batches {
                        a.at_eps(a.eps * done as f64 / warmup_batches as f64)
                    } else {
                        *a
                    };
                    let attacked = a.attack(logits, &bx, &by);
                    a.loss(logits, &bx, &attacked, &by)
                }
            };
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
        let robust_accuracy = guard.as_ref().map(|g| g.check.accuracy(g.logits));
        let s = EpochStats {
            mean_loss: loss_sum / n as f64,
            accuracy: correct as f64 / n as f64,
            first_loss: mean(&losses[..tenth]),
            last_loss: mean(&losses[losses.len() - tenth..]),
            robust_accuracy,
        };
        log::info!(
            "epoch {epoch}: loss {:.4}, train accuracy {:.2}%{}",
            s.mean_loss,
            100.0 * s.accuracy,
            match (&guard, robust_accuracy) {
                (Some(g), Some(r)) => format!(
                    ", PGD-{} accuracy {:.1}% on {} held-out images (dropout off)",
                    g.check.steps,
                    100.0 * r,
                    g.check.labels.size()[0]
                ),
                _ => String::new(),
            }
        );
        stats.push(s);
        if let (Some(g), Some(r)) = (&guard, robust_accuracy) {
            match &best {
                Some((top, top_epoch, weights)) if r < top - g.check.max_drop => {
                    log::warn!(
                        "catastrophic overfitting at epoch {epoch}: PGD accuracy fell to {:.1}% \
                         from {:.1}% at epoch {top_epoch}; stopping with epoch {top_epoch}'s weights",
                        100.0 * r,
                        100.0 * top
                    );
                    restore(vs, weights);
                    stats.truncate(*top_epoch);
                    break;
                }
                Some((top, ..)) if r <= *top => {}
                _ => best = Some((r, epoch, snapshot(vs))),
            }
        }
    }
    Ok(stats)
}

/// A network's weights by variable name, copied out of its store.
type Weights = Vec<(String, Tensor)>;

/// Copies of `vs`'s variables, by name.
fn snapshot(vs: &nn::VarStore) -> Weights {
    let _guard = tch::no_grad_guard();
    vs.variables()
        .into_iter()
        .map(|(name, t)| (name, t.detach().copy()))
        .collect()
}

/// Writes `weights` (from [`snapshot`]) back into `vs`.
fn restore(vs: &nn::VarStore, weights: &[(String, Tensor)]) {
    let _guard = tch::no_grad_guard();
    let mut live = vs.variables();
    for (name, saved) in weights {
        if let Some(t) = live.get_mut(name) {
            t.copy_(saved);
        }
    }
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
