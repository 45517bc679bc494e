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
use mcgate::score::roc::{bootstrap_auc_difference_interval, bootstrap_auc_interval};
use noise::matched_noise;
use report::{
    AttackedModel, Curves, Detection, Difference, EvalReport, ExportedClean, ExportedDetection, Row,
};
use tch_scores::tch_scores;
use tract_scores::tract_scores;

pub struct EvalConfig {
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
    /// Attack only the images both the deterministic and the MC model classify correctly
    /// (otherwise a natural error counts as a successful attack).
    pub correct_only: bool,
    /// Bootstrap resamples (of image groups) behind each AUC's 95 % interval; 0: none.
    pub bootstrap: usize,
}

/// The network whose gradients craft the attacks.
pub enum Crafter<'a> {
    /// The evaluated network itself (white box).
    Itself,
    /// Another network, the attacks then transferred to the evaluated one (e.g. from one
    /// member to its ensemble). "Deterministic" and "MC" rows name that network's models;
    /// success is still judged on the evaluated network's predictions.
    Transfer {
        net: &'a dyn DropoutNet,
        /// How the report names it.
        name: String,
    },
}

impl<'a> Crafter<'a> {
    fn net(&self) -> Option<&'a dyn DropoutNet> {
        match self {
            Crafter::Itself => None,
            Crafter::Transfer { net, .. } => Some(*net),
        }
    }
}

/// The images an evaluation attacks (or only scores, as extra clean negatives): pixels in
/// [0, 1] `[N, C, H, W]`, true labels, and a group per image — frames of one scene (a photo's
/// camera-like variants) share one, and the bootstrap resamples groups.
pub struct EvalImages {
    pub pixels: Tensor,
    pub labels: Vec<i64>,
    pub groups: Vec<usize>,
}

impl EvalImages {
    /// Each image its own group.
    pub fn from_dataset(data: &Dataset, device: Device) -> EvalImages {
        let (pixels, _) = data.to_tensors(device);
        EvalImages {
            pixels,
            labels: data.labels.iter().map(|&l| l as i64).collect(),
            groups: (0..data.len()).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Images `idx`, in that order.
    fn select(&self, idx: &[usize]) -> EvalImages {
        let index = Tensor::from_slice(&idx.iter().map(|&i| i as i64).collect::<Vec<_>>())
            .to_device(self.pixels.device());
        EvalImages {
            pixels: self.pixels.index_select(0, &index),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            groups: idx.iter().map(|&i| self.groups[i]).collect(),
        }
    }
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

/// Pixels `[N, C, H, W]` in [0, 1] as the row-major network input floats the runtime takes.
fn runtime_input(net: &dyn DropoutNet, pixels: &Tensor) -> Result<Vec<f32>> {
    let x = net.input_from_pixels(pixels);
    Vec::<f32>::try_from(x.to_device(Device::Cpu).flatten(0, -1)).context("reading images")
}

/// Floats per image of `x` `[N, ..]`.
fn per_image_len(x: &Tensor) -> usize {
    x.size()[1..].iter().product::<i64>() as usize
}

/// MI of every image under each exported model, all with the same masks (`seed`).
fn exported_mi(
    net: &dyn DropoutNet,
    cfg: &EvalConfig,
    x: &Tensor,
    seed: u64,
) -> Result<Vec<Vec<f64>>> {
    let images = runtime_input(net, x)?;
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

fn successful_only_groups(groups: &[usize], success: &[bool]) -> Vec<usize> {
    groups
        .iter()
        .zip(success)
        .filter(|(_, &s)| s)
        .map(|(g, _)| *g)
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

/// Attacks `images` (only those both models classify right, with `correct_only`) and
/// measures detection against clean negatives — all of `images`, misclassified ones too (the
/// gate sees them), plus `extra_clean`, e.g. photos without a trusted label — and matched
/// noise.
pub fn evaluate(
    net: &dyn DropoutNet,
    crafter: Crafter,
    images: &EvalImages,
    extra_clean: Option<&EvalImages>,
    cfg: &EvalConfig,
    device: Device,
) -> Result<EvalReport> {
    tch::manual_seed(cfg.seed as i64);
    let all_clean = tch_scores(net, &images.pixels, cfg.samples)?;
    let accuracy = |pred: &[i64], truth: &[i64]| {
        pred.iter().zip(truth).filter(|(p, t)| p == t).count() as f64 / truth.len() as f64
    };
    let clean_accuracy_deterministic = accuracy(&all_clean.det_pred, &images.labels);
    let clean_accuracy_mc = accuracy(&all_clean.mc_pred, &images.labels);
    let (subset, clean) = if cfg.correct_only {
        let keep: Vec<usize> = (0..images.len())
            .filter(|&i| {
                all_clean.det_pred[i] == images.labels[i]
                    && all_clean.mc_pred[i] == images.labels[i]
            })
            .collect();
        anyhow::ensure!(
            !keep.is_empty(),
            "no image is classified correctly: nothing to attack"
        );
        (images.select(&keep), all_clean.select(&keep))
    } else {
        (
            images.select(&(0..images.len()).collect::<Vec<_>>()),
            all_clean.clone(),
        )
    };
    let x = subset.pixels.to_device(device);
    let y_true = Tensor::from_slice(&subset.labels).to_device(device);
    let truth = &subset.labels;
    let extra = match extra_clean {
        Some(e) => Some(tch_scores(net, &e.pixels, cfg.samples)?),
        None => None,
    };
    // Clean negatives with their groups: every image's, then the extra ones' (groups offset
    // past the images' so they never coincide).
    let group_offset = images.groups.iter().max().map_or(0, |g| g + 1);
    let mut clean_groups = images.groups.clone();
    if let Some(e) = extra_clean {
        clean_groups.extend(e.groups.iter().map(|g| g + group_offset));
    }
    let clean_negatives = |m: Measure| -> Vec<f64> {
        let mut v = all_clean.by_measure[&m].clone();
        if let Some(e) = &extra {
            v.extend(&e.by_measure[&m]);
        }
        v
    };
    let mi_clean = clean_negatives(MI);
    let mut exported_clean = vec![];
    let mut exported_clean_mi = vec![];
    if !cfg.exported.is_empty() {
        let all_images = runtime_input(net, &images.pixels)?;
        let extra_images = extra_clean
            .map(|e| runtime_input(net, &e.pixels))
            .transpose()?;
        for r in &cfg.exported {
            let scores = tract_scores(
                &r.model,
                &all_images,
                per_image_len(&x),
                cfg.samples as usize,
                cfg.seed,
            )?;
            let (det, mc) = scores.accuracy_of(&images.labels);
            let mut mi = scores.mi;
            if let Some(extra_images) = &extra_images {
                mi.extend(
                    tract_scores(
                        &r.model,
                        extra_images,
                        per_image_len(&x),
                        cfg.samples as usize,
                        mcgate::run::rng::mix(cfg.seed, u64::MAX),
                    )?
                    .mi,
                );
            }
            let threshold = r.threshold()?;
            exported_clean.push(ExportedClean {
                name: r.name.clone(),
                threshold,
                clean_accuracy_deterministic: det,
                clean_accuracy_mc: mc,
                clean_fpr_at_threshold: rate_above(&mi, threshold),
            });
            exported_clean_mi.push(mi);
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
            adv_parts.push(attack::run(crafter.net().unwrap_or(net), bx, by, &a));
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
        let success: Vec<bool> = adv_pred.iter().zip(truth).map(|(p, t)| p != t).collect();
        let n_success = success.iter().filter(|&&s| s).count();
        // Groups for the bootstrap: negatives are the clean images (then the noise, one per
        // attacked image, in its group); positives the adversarials, in theirs.
        let neg_groups: Vec<usize> = clean_groups.iter().chain(&subset.groups).copied().collect();
        let pos_groups_s = successful_only_groups(&subset.groups, &success);
        let interval = |neg: &[f64], groups_neg: &[usize], pos: &[f64], groups_pos: &[usize]| {
            let pair = |v: &[f64], g: &[usize]| -> Vec<(f64, usize)> {
                v.iter().copied().zip(g.iter().copied()).collect()
            };
            bootstrap_auc_interval(
                &pair(neg, groups_neg),
                &pair(pos, groups_pos),
                cfg.bootstrap,
                mcgate::run::rng::mix(cfg.seed, row_index as u64),
            )
        };
        let (mut all, mut successful, mut clean_only, mut curves) = (
            BTreeMap::new(),
            BTreeMap::new(),
            BTreeMap::new(),
            BTreeMap::new(),
        );
        for m in Measure::TABLE {
            let clean_neg = clean_negatives(m);
            let mut neg = clean_neg.clone();
            neg.extend(&s_noise.by_measure[&m]);
            let pos = &s_adv.by_measure[&m];
            let pos_s = successful_only(pos, &success);
            all.insert(
                m,
                Detection::of(&neg, pos).with_interval(interval(
                    &neg,
                    &neg_groups,
                    pos,
                    &subset.groups,
                )),
            );
            clean_only.insert(
                m,
                Detection::of(&clean_neg, pos).with_interval(interval(
                    &clean_neg,
                    &clean_groups,
                    pos,
                    &subset.groups,
                )),
            );
            curves.insert(
                m,
                Curves {
                    roc: roc_curve(&neg, pos).unwrap_or_default(),
                    pr: pr_curve(&neg, pos).unwrap_or_default(),
                },
            );
            successful.insert(
                m,
                Detection::of(&neg, &pos_s).with_interval(interval(
                    &neg,
                    &neg_groups,
                    &pos_s,
                    &pos_groups_s,
                )),
            );
        }
        // MI against each entropy on the same frames, resampled together.
        let difference = |other: Measure, successful_only_: bool| {
            let pair = |v: &[f64], g: &[usize]| -> Vec<(f64, usize)> {
                v.iter().copied().zip(g.iter().copied()).collect()
            };
            let sides = |m: Measure| {
                let mut neg = clean_negatives(m);
                neg.extend(&s_noise.by_measure[&m]);
                let (pos, groups) = if successful_only_ {
                    (
                        successful_only(&s_adv.by_measure[&m], &success),
                        &pos_groups_s,
                    )
                } else {
                    (s_adv.by_measure[&m].clone(), &subset.groups)
                };
                (pair(&neg, &neg_groups), pair(&pos, groups))
            };
            let ((mi_neg, mi_pos), (o_neg, o_pos)) = (sides(MI), sides(other));
            let auc = |neg: &[(f64, usize)], pos: &[(f64, usize)]| {
                let v = |x: &[(f64, usize)]| x.iter().map(|p| p.0).collect::<Vec<_>>();
                mcgate::score::roc::roc_auc(&v(neg), &v(pos)).unwrap_or(f64::NAN)
            };
            Difference {
                auc_difference: auc(&mi_neg, &mi_pos) - auc(&o_neg, &o_pos),
                interval: bootstrap_auc_difference_interval(
                    &mi_neg,
                    &mi_pos,
                    &o_neg,
                    &o_pos,
                    cfg.bootstrap,
                    mcgate::run::rng::mix(cfg.seed, row_index as u64),
                ),
            }
        };
        let entropies = [Measure::DetEntropy, Measure::PredictiveEntropy];
        let mi_minus = entropies.map(|m| (m, difference(m, false))).into();
        let mi_minus_successful = entropies.map(|m| (m, difference(m, true))).into();
        let mi_adv = &s_adv.by_measure[&MI];
        let mi_adv_s = successful_only(mi_adv, &success);
        let mut exported = BTreeMap::new();
        if !cfg.exported.is_empty() {
            // Fresh masks per image set, shared by all exported models.
            let set_seed = |k: u64| mcgate::run::rng::mix(cfg.seed, 2 * row_index as u64 + k);
            let adv_mi = exported_mi(net, cfg, &adv, set_seed(1))?;
            let noise_mi = exported_mi(net, cfg, &noise, set_seed(2))?;
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
            clean_only,
            mi_minus,
            mi_minus_successful,
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
        members: net.member_count(),
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
        clean_accuracy_deterministic,
        clean_accuracy_mc,
        attacked: if cfg.correct_only {
            format!(
                "the {} of {} images both models classify correctly",
                subset.len(),
                images.len()
            )
        } else {
            format!("all {} images", images.len())
        },
        crafted_on: match &crafter {
            Crafter::Itself => "the evaluated model (white box)".into(),
            Crafter::Transfer { name, .. } => format!("{name}, transferred"),
        },
        clean_negatives: mi_clean.len(),
        threshold: cfg.threshold,
        clean_fpr_at_threshold: rate_above(&mi_clean, cfg.threshold),
        exported: exported_clean,
        rows,
    })
}
