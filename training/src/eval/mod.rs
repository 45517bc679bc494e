//! Detection evaluation in the layout of Smith & Gal 2018, Table 1: ROC AUC and average
//! precision of each uncertainty measure, adversarial images (positives) against clean and
//! Gaussian-noise images (negatives), on all adversarials and on successful ones only (S).
//!
//! `evaluate` attacks the tch network and scores every image set with it (`tch_scores`) and,
//! optionally, through exported files in the runtime (`tract_scores`); negatives come from
//! `noise`. The findings (`report`) are written as Markdown (`markdown`) and figures
//! (`figures`).

pub mod figures;
pub mod markdown;
pub mod noise;
pub mod report;
pub mod tch_scores;
pub mod tract_scores;

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mcgate::score::roc::{pr_curve, rate_above, roc_curve};
use tch::{Device, Tensor};

use crate::attack::{self, Attack, Method, Target};
use crate::data::Dataset;
use crate::measures::Measure;
use crate::nets::DropoutNet;
use noise::matched_noise;
use report::{AttackedModel, Curves, Detection, EvalReport, ExportedClean, ExportedDetection, Row};
use tch_scores::tch_scores;
use tract_scores::tract_scores;

pub struct EvalConfig {
    pub images: usize,
    pub seed: u64,
    pub samples: i64,
    pub eps_255: Vec<f64>,
    pub methods: Vec<Method>,
    pub mc_targets: bool,
    pub deterministic_targets: bool,
    /// Expectation over transformation instead of the loss of the MC mean.
    pub eot: bool,
    pub true_labels: bool,
    /// λ values of the adaptive attack (BIM and MIM with loss CE − λ·MI); empty: none.
    pub adaptive_lambdas: Vec<f64>,
    /// The budgets (0–255 scale) at which the adaptive attack runs.
    pub adaptive_eps_255: Vec<f64>,
    pub threshold: f64,
    pub batch: i64,
    /// Exported models that also score every image through the runtime.
    pub exported: Vec<ExportedModel>,
}

/// An exported model (float or int8 ONNX + card) scored through the runtime beside the tch
/// model.
pub struct ExportedModel {
    pub name: String,
    pub model: mcgate::model::Model,
}

impl ExportedModel {
    /// The model card's MI threshold (a model trained here always has one).
    pub fn threshold(&self) -> Result<f64> {
        self.model
            .card
            .mi_threshold()
            .with_context(|| format!("{}: the card has no MI threshold", self.name))
    }
}

const MI: Measure = Measure::MutualInformation;

/// Images `[N, C, H, W]` as the row-major floats the runtime takes.
fn runtime_input(x: &Tensor) -> Result<Vec<f32>> {
    Vec::<f32>::try_from(x.to_device(Device::Cpu).flatten(0, -1)).context("reading images")
}

/// Floats per image of `x` `[N, ..]`.
fn per_image_len(x: &Tensor) -> usize {
    x.size()[1..].iter().product::<i64>() as usize
}

/// MI of every image under each exported model, all with the same masks (`seed`).
fn exported_mi(cfg: &EvalConfig, x: &Tensor, seed: u64) -> Result<Vec<Vec<f64>>> {
    let images = runtime_input(x)?;
    cfg.exported
        .iter()
        .map(|r| {
            Ok(tract_scores(
                &r.model,
                &images,
                per_image_len(x),
                cfg.samples as usize,
                seed,
            )?
            .mi)
        })
        .collect()
}

fn successful_only(values: &[f64], success: &[bool]) -> Vec<f64> {
    values
        .iter()
        .zip(success)
        .filter(|(_, &s)| s)
        .map(|(v, _)| *v)
        .collect()
}

/// The attacks to run, in report order: per ε and method, the deterministic target, the MC
/// target, then the adaptive ones.
fn attack_plan(cfg: &EvalConfig) -> Vec<(Target, Method, f64)> {
    let mut plan = vec![];
    for &eps in &cfg.eps_255 {
        for &method in &cfg.methods {
            if cfg.deterministic_targets {
                plan.push((Target::Deterministic, method, eps));
            }
            if cfg.mc_targets {
                let t = if cfg.eot {
                    Target::McEot {
                        samples: cfg.samples,
                    }
                } else {
                    Target::McMean {
                        samples: cfg.samples,
                    }
                };
                plan.push((t, method, eps));
            }
            if method != Method::Fgm && cfg.adaptive_eps_255.contains(&eps) {
                for &lambda in &cfg.adaptive_lambdas {
                    plan.push((
                        Target::Adaptive {
                            samples: cfg.samples,
                            lambda,
                        },
                        method,
                        eps,
                    ));
                }
            }
        }
    }
    plan
}

pub fn evaluate(
    net: &dyn DropoutNet,
    test: &Dataset,
    cfg: &EvalConfig,
    device: Device,
) -> Result<EvalReport> {
    tch::manual_seed(cfg.seed as i64);
    let subset = test.pick(cfg.images, cfg.seed);
    let (x, y_true) = subset.to_tensors(device);
    let clean = tch_scores(net, &x, cfg.samples)?;
    let truth: Vec<i64> = subset.labels.iter().map(|&l| l as i64).collect();
    let accuracy = |pred: &[i64]| {
        pred.iter().zip(&truth).filter(|(p, t)| p == t).count() as f64 / truth.len() as f64
    };
    let mi_clean = &clean.by_measure[&MI];
    let mut exported_clean = vec![];
    let mut exported_clean_mi = vec![];
    if !cfg.exported.is_empty() {
        let images = runtime_input(&x)?;
        for r in &cfg.exported {
            let scores = tract_scores(
                &r.model,
                &images,
                per_image_len(&x),
                cfg.samples as usize,
                cfg.seed,
            )?;
            let (det, mc) = scores.accuracy(&subset.labels);
            let threshold = r.threshold()?;
            exported_clean.push(ExportedClean {
                name: r.name.clone(),
                threshold,
                clean_accuracy_deterministic: det,
                clean_accuracy_mc: mc,
                clean_fpr_at_threshold: rate_above(&scores.mi, threshold),
            });
            exported_clean_mi.push(scores.mi);
        }
    }

    let plan = attack_plan(cfg);
    let bar = ProgressBar::new(plan.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("attacks [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut rows = vec![];
    for (row_index, (target, method, eps)) in plan.into_iter().enumerate() {
        let attacked = AttackedModel::from(target);
        let own_pred = match attacked {
            AttackedModel::Deterministic => &clean.det_pred,
            _ => &clean.mc_pred,
        };
        bar.set_message(format!("{method:?} ε={eps} on {attacked}"));
        let y = if cfg.true_labels {
            y_true.shallow_clone()
        } else {
            Tensor::from_slice(own_pred).to_device(device)
        };
        let a = Attack::paper(method, eps, target);
        let mut adv_parts = vec![];
        for (bx, by) in x
            .split(cfg.batch, 0)
            .iter()
            .zip(y.split(cfg.batch, 0).iter())
        {
            adv_parts.push(attack::run(net, bx, by, &a));
        }
        let adv = Tensor::cat(&adv_parts, 0);
        let noise = matched_noise(&x, &adv);
        let (s_adv, s_noise) = (
            tch_scores(net, &adv, cfg.samples)?,
            tch_scores(net, &noise, cfg.samples)?,
        );
        // Success: the attacked model's prediction is no longer the true label.
        let adv_pred = match attacked {
            AttackedModel::Deterministic => &s_adv.det_pred,
            _ => &s_adv.mc_pred,
        };
        let success: Vec<bool> = adv_pred.iter().zip(&truth).map(|(p, t)| p != t).collect();
        let n_success = success.iter().filter(|&&s| s).count();
        let (mut all, mut successful, mut curves) =
            (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for m in Measure::TABLE {
            let mut neg = clean.by_measure[&m].clone();
            neg.extend(&s_noise.by_measure[&m]);
            let pos = &s_adv.by_measure[&m];
            let pos_s = successful_only(pos, &success);
            all.insert(m, Detection::of(&neg, pos));
            curves.insert(
                m,
                Curves {
                    roc: roc_curve(&neg, pos).unwrap_or_default(),
                    pr: pr_curve(&neg, pos).unwrap_or_default(),
                },
            );
            successful.insert(m, Detection::of(&neg, &pos_s));
        }
        let mi_adv = &s_adv.by_measure[&MI];
        let mi_adv_s = successful_only(mi_adv, &success);
        let mut exported = BTreeMap::new();
        if !cfg.exported.is_empty() {
            // Fresh masks per image set, shared by all exported models.
            let set_seed = |k: u64| mcgate::run::rng::mix(cfg.seed, 2 * row_index as u64 + k);
            let adv_mi = exported_mi(cfg, &adv, set_seed(1))?;
            let noise_mi = exported_mi(cfg, &noise, set_seed(2))?;
            for (i, r) in cfg.exported.iter().enumerate() {
                let mut neg = exported_clean_mi[i].clone();
                neg.extend(&noise_mi[i]);
                let pos_s = successful_only(&adv_mi[i], &success);
                let threshold = r.threshold()?;
                exported.insert(
                    r.name.clone(),
                    ExportedDetection {
                        mi: Detection::of(&neg, &adv_mi[i]),
                        mi_successful: Detection::of(&neg, &pos_s),
                        tpr_at_threshold_successful: rate_above(&pos_s, threshold),
                        noise_fpr_at_threshold: rate_above(&noise_mi[i], threshold),
                    },
                );
            }
        }
        rows.push(Row {
            target: attacked,
            method: format!("{method:?}").to_uppercase(),
            eps_255: eps,
            images: subset.len(),
            success_rate: n_success as f64 / subset.len() as f64,
            all,
            successful,
            tpr_at_threshold: rate_above(mi_adv, cfg.threshold),
            tpr_at_threshold_successful: rate_above(&mi_adv_s, cfg.threshold),
            noise_fpr_at_threshold: rate_above(&s_noise.by_measure[&MI], cfg.threshold),
            curves,
            exported,
        });
        bar.inc(1);
    }
    bar.finish();
    Ok(EvalReport {
        images: subset.len(),
        samples: cfg.samples,
        seed: cfg.seed,
        labels: if cfg.true_labels {
            "true labels"
        } else {
            "the model's clean predictions"
        }
        .into(),
        mc_loss: if cfg.eot {
            "EOT: mean of per-sample cross-entropies"
        } else {
            "cross-entropy of the MC mean (paper)"
        }
        .into(),
        clean_accuracy_deterministic: accuracy(&clean.det_pred),
        clean_accuracy_mc: accuracy(&clean.mc_pred),
        threshold: cfg.threshold,
        clean_fpr_at_threshold: rate_above(mi_clean, cfg.threshold),
        exported: exported_clean,
        rows,
    })
}
