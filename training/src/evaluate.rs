//! Detection evaluation in the layout of Smith & Gal 2018, Table 1: ROC AUC and average
//! precision of each uncertainty measure, adversarial images (positives) against clean and
//! Gaussian-noise images (negatives), on all adversarials and on successful ones only (S).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::attack::{self, Attack, Method, Target};
use crate::data::Dataset;
use crate::net::Net;
use crate::train::to_tensors;

/// The measures scored, in table order. `det_entropy` is the entropy of the softmax with
/// dropout off; the rest come from T MC samples through `mcgate::measures`.
pub const MEASURES: [&str; 6] = [
    "det_entropy",
    "predictive_entropy",
    "mutual_information",
    "expected_entropy",
    "softmax_variance",
    "variation_ratio",
];

/// Every measure for every image, plus the deterministic and MC predictions.
#[derive(Debug, Clone, Default)]
pub struct Scores {
    pub by_measure: BTreeMap<&'static str, Vec<f64>>,
    pub det_pred: Vec<i64>,
    pub mc_pred: Vec<i64>,
}

/// Scores a batch of images `[N, 1, H, W]` in [0, 1].
pub fn score(net: &Net, x: &Tensor, samples: i64) -> Result<Scores> {
    let _guard = tch::no_grad_guard();
    let mut s = Scores::default();
    let classes = crate::net::CLASSES as usize;
    let mut scratch = vec![0.0; classes];
    for bx in x.split(200, 0) {
        let det = net
            .logits(&bx, false)
            .softmax(-1, Kind::Float)
            .to_device(Device::Cpu);
        let det = Vec::<f32>::try_from(det.flatten(0, -1)).context("reading probabilities")?;
        for row in det.chunks(classes) {
            let m = mcgate::measures::compute(row, classes, &mut scratch)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            s.by_measure
                .entry("det_entropy")
                .or_default()
                .push(m.predictive_entropy);
            s.det_pred.push(m.predicted_class as i64);
        }
        let mc = net
            .mc_probs(&bx, samples)
            .permute([1, 0, 2])
            .contiguous()
            .to_device(Device::Cpu);
        let mc = Vec::<f32>::try_from(mc.flatten(0, -1)).context("reading probabilities")?;
        for per_image in mc.chunks(classes * samples as usize) {
            let m = mcgate::measures::compute(per_image, classes, &mut scratch)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            for (name, v) in [
                ("predictive_entropy", m.predictive_entropy),
                ("mutual_information", m.mutual_information),
                ("expected_entropy", m.expected_entropy),
                ("softmax_variance", m.softmax_variance),
                ("variation_ratio", m.variation_ratio),
            ] {
                s.by_measure.entry(name).or_default().push(v);
            }
            s.mc_pred.push(m.predicted_class as i64);
        }
    }
    Ok(s)
}

/// Gaussian noise with the same per-image L2 norm as the adversarial perturbation, measured
/// *after* clipping to [0, 1]: for each image, z ~ N(0, I) is scaled by the s that bisection
/// finds so that ‖clip(x + s·z) − x‖₂ = ‖adv − x‖₂. (The paper's code used uniform noise at
/// the squared norm and clipped afterwards, which changes the norm.)
pub fn matched_noise(x: &Tensor, adv: &Tensor) -> Tensor {
    let _guard = tch::no_grad_guard();
    let per_image_norm = |t: &Tensor| {
        t.flatten(1, -1)
            .square()
            .sum_dim_intlist(1, false, Kind::Float)
            .sqrt()
    };
    let target = per_image_norm(&(adv - x));
    let z = x.randn_like();
    let z_norm = per_image_norm(&z).clamp_min(1e-12);
    // Clipping can only shrink the perturbation, so s·‖z‖ ≥ target: start at 64× that bound.
    let mut lo = x.zeros_like().flatten(1, -1).narrow(1, 0, 1).squeeze_dim(1);
    let mut hi = &target / &z_norm * 64.0;
    for _ in 0..40 {
        let mid = (&lo + &hi) / 2.0;
        let noisy = (x + &z * mid.view([-1, 1, 1, 1])).clamp(0.0, 1.0);
        let too_small = per_image_norm(&(noisy - x)).lt_tensor(&target);
        // tch: a.where_self(cond, b) = where(cond, a, b).
        lo = mid.where_self(&too_small, &lo);
        hi = hi.where_self(&too_small, &mid);
    }
    (x + &z * hi.view([-1, 1, 1, 1])).clamp(0.0, 1.0)
}

#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    pub auc: f64,
    pub ap: f64,
}

/// Exact ROC and precision–recall points of one measure, for the plots (not in the JSON).
#[derive(Debug, Clone, Default)]
pub struct Curves {
    pub roc: Vec<(f64, f64)>,
    pub pr: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub target: String,
    pub method: String,
    pub eps_255: f64,
    pub images: usize,
    /// Fraction of adversarial images whose prediction differs from the true label.
    pub success_rate: f64,
    /// Per measure, against clean + noise negatives, all adversarials.
    pub all: BTreeMap<String, Detection>,
    /// The same on successful adversarials only.
    pub successful: BTreeMap<String, Detection>,
    /// Fraction of adversarials (all, successful) the card's MI threshold rejects.
    pub tpr_at_threshold: f64,
    pub tpr_at_threshold_successful: f64,
    /// Fraction of the noise negatives the threshold rejects.
    pub noise_fpr_at_threshold: f64,
    /// Per measure, the curves behind `all`.
    #[serde(skip)]
    pub curves: BTreeMap<String, Curves>,
    /// Per `--runtime` model: MI detection of the same images scored through the runtime.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub runtime: BTreeMap<String, RuntimeDetection>,
}

/// MI detection by an exported model run through `mcgate` (tract), on the images the tch
/// model's attack produced; "successful" is the attacked tch model's success.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeDetection {
    pub mi: Detection,
    pub mi_successful: Detection,
    /// Fractions the model card's own MI threshold rejects.
    pub tpr_at_threshold_successful: f64,
    pub noise_fpr_at_threshold: f64,
}

/// A `--runtime` model's clean results on the evaluation images.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeSummary {
    pub name: String,
    pub threshold: f64,
    pub clean_accuracy_deterministic: f64,
    pub clean_accuracy_mc: f64,
    pub clean_fpr_at_threshold: f64,
}

/// An exported model (float or int8 ONNX + card) scored beside the tch model.
pub struct RuntimeModel {
    pub name: String,
    pub model: mcgate::plan::Model,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub images: usize,
    pub samples: i64,
    pub seed: u64,
    pub labels: String,
    pub mc_loss: String,
    pub clean_accuracy_deterministic: f64,
    pub clean_accuracy_mc: f64,
    pub threshold: f64,
    pub clean_fpr_at_threshold: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runtime: Vec<RuntimeSummary>,
    pub rows: Vec<Row>,
}

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
    pub runtime: Vec<RuntimeModel>,
}

/// Images `[N, 1, H, W]` as the row-major floats the runtime takes.
fn runtime_input(x: &Tensor) -> Result<Vec<f32>> {
    Vec::<f32>::try_from(x.to_device(Device::Cpu).flatten(0, -1)).context("reading images")
}

/// MI of every image under each runtime model, all with the same masks (`seed`).
fn runtime_mi(cfg: &EvalConfig, x: &Tensor, seed: u64) -> Result<Vec<Vec<f64>>> {
    let pixels = (x.size()[2] * x.size()[3]) as usize;
    let images = runtime_input(x)?;
    cfg.runtime
        .iter()
        .map(|r| {
            Ok(crate::runtime::score(&r.model, &images, pixels, cfg.samples as usize, seed)?.mi)
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

fn detection(neg: &[f64], pos: &[f64]) -> Detection {
    Detection {
        auc: mcgate::roc::roc_auc(neg, pos).unwrap_or(f64::NAN),
        ap: mcgate::roc::average_precision(neg, pos).unwrap_or(f64::NAN),
    }
}

/// `n` distinct indices of `0..len`, chosen by a seeded Fisher–Yates shuffle.
pub fn sample_without_replacement(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..len).collect();
    let mut rng = mcgate::rng::WyRand::new(seed);
    for i in (1..len).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        idx.swap(i, j);
    }
    idx.truncate(n.min(len));
    idx
}

pub fn evaluate(net: &Net, test: &Dataset, cfg: &EvalConfig, device: Device) -> Result<Report> {
    tch::manual_seed(cfg.seed as i64);
    let picks = sample_without_replacement(test.len(), cfg.images, cfg.seed);
    let mut images = Vec::with_capacity(picks.len() * test.rows * test.cols);
    let mut labels = Vec::with_capacity(picks.len());
    for &i in &picks {
        images.extend_from_slice(test.image(i));
        labels.push(test.labels[i]);
    }
    let subset = Dataset {
        images,
        labels,
        rows: test.rows,
        cols: test.cols,
    };
    let (x, y_true) = to_tensors(&subset, device);
    let clean = score(net, &x, cfg.samples)?;
    let truth: Vec<i64> = subset.labels.iter().map(|&l| l as i64).collect();
    let accuracy = |pred: &[i64]| {
        pred.iter().zip(&truth).filter(|(p, t)| p == t).count() as f64 / truth.len() as f64
    };
    let mi_clean = &clean.by_measure["mutual_information"];
    let mut runtime_summaries = vec![];
    let mut runtime_clean_mi = vec![];
    if !cfg.runtime.is_empty() {
        let pixels = (x.size()[2] * x.size()[3]) as usize;
        let images = runtime_input(&x)?;
        for r in &cfg.runtime {
            let scores =
                crate::runtime::score(&r.model, &images, pixels, cfg.samples as usize, cfg.seed)?;
            let (det, mc) = scores.accuracy(&subset.labels);
            let threshold = r.model.card.threshold.mutual_information;
            runtime_summaries.push(RuntimeSummary {
                name: r.name.clone(),
                threshold,
                clean_accuracy_deterministic: det,
                clean_accuracy_mc: mc,
                clean_fpr_at_threshold: mcgate::roc::rate_above(&scores.mi, threshold),
            });
            runtime_clean_mi.push(scores.mi);
        }
    }

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
    let bar = ProgressBar::new(plan.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("attacks [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut rows = vec![];
    for (row_index, (target, method, eps)) in plan.into_iter().enumerate() {
        let (target_name, own_pred) = match target {
            Target::Deterministic => ("deterministic".to_string(), &clean.det_pred),
            Target::Adaptive { lambda, .. } => (format!("adaptive λ={lambda}"), &clean.mc_pred),
            _ => ("mc".to_string(), &clean.mc_pred),
        };
        bar.set_message(format!("{method:?} ε={eps} on {target_name}"));
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
            score(net, &adv, cfg.samples)?,
            score(net, &noise, cfg.samples)?,
        );
        // Success: the attacked model's prediction is no longer the true label.
        let adv_pred = match target {
            Target::Deterministic => &s_adv.det_pred,
            _ => &s_adv.mc_pred,
        };
        let success: Vec<bool> = adv_pred.iter().zip(&truth).map(|(p, t)| p != t).collect();
        let n_success = success.iter().filter(|&&s| s).count();
        let (mut all, mut successful, mut curves) =
            (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for m in MEASURES {
            let mut neg = clean.by_measure[m].clone();
            neg.extend(&s_noise.by_measure[m]);
            let pos = &s_adv.by_measure[m];
            let pos_s = successful_only(pos, &success);
            all.insert(m.to_string(), detection(&neg, pos));
            curves.insert(
                m.to_string(),
                Curves {
                    roc: mcgate::roc::roc_curve(&neg, pos).unwrap_or_default(),
                    pr: mcgate::roc::pr_curve(&neg, pos).unwrap_or_default(),
                },
            );
            successful.insert(m.to_string(), detection(&neg, &pos_s));
        }
        let mi_adv = &s_adv.by_measure["mutual_information"];
        let mi_adv_s = successful_only(mi_adv, &success);
        let mut runtime = BTreeMap::new();
        if !cfg.runtime.is_empty() {
            // Fresh masks per image set, shared by all runtime models.
            let set_seed = |k: u64| mcgate::rng::mix(cfg.seed, 2 * row_index as u64 + k);
            let adv_mi = runtime_mi(cfg, &adv, set_seed(1))?;
            let noise_mi = runtime_mi(cfg, &noise, set_seed(2))?;
            for (i, r) in cfg.runtime.iter().enumerate() {
                let mut neg = runtime_clean_mi[i].clone();
                neg.extend(&noise_mi[i]);
                let pos_s = successful_only(&adv_mi[i], &success);
                let threshold = r.model.card.threshold.mutual_information;
                runtime.insert(
                    r.name.clone(),
                    RuntimeDetection {
                        mi: detection(&neg, &adv_mi[i]),
                        mi_successful: detection(&neg, &pos_s),
                        tpr_at_threshold_successful: mcgate::roc::rate_above(&pos_s, threshold),
                        noise_fpr_at_threshold: mcgate::roc::rate_above(&noise_mi[i], threshold),
                    },
                );
            }
        }
        rows.push(Row {
            target: target_name,
            method: format!("{method:?}").to_uppercase(),
            eps_255: eps,
            images: picks.len(),
            success_rate: n_success as f64 / picks.len() as f64,
            all,
            successful,
            tpr_at_threshold: mcgate::roc::rate_above(mi_adv, cfg.threshold),
            tpr_at_threshold_successful: mcgate::roc::rate_above(&mi_adv_s, cfg.threshold),
            noise_fpr_at_threshold: mcgate::roc::rate_above(
                &s_noise.by_measure["mutual_information"],
                cfg.threshold,
            ),
            curves,
            runtime,
        });
        bar.inc(1);
    }
    bar.finish();
    Ok(Report {
        images: picks.len(),
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
        clean_fpr_at_threshold: mcgate::roc::rate_above(mi_clean, cfg.threshold),
        runtime: runtime_summaries,
        rows,
    })
}

/// The report as Markdown: the paper's Table 1 columns, then the other measures.
pub fn markdown(r: &Report) -> String {
    let f = |v: f64| {
        if v.is_nan() {
            "–".to_string()
        } else {
            format!("{v:.3}")
        }
    };
    let mut s = format!(
        "{} test images (without replacement, seed {}), T = {}, attack labels: {}; MC attacks: {}.\n\
         Clean accuracy on them: {:.2} % deterministic, {:.2} % MC. MI threshold {:.4} rejects {:.1} % of them.\n\n",
        r.images,
        r.seed,
        r.samples,
        r.labels,
        r.mc_loss,
        100.0 * r.clean_accuracy_deterministic,
        100.0 * r.clean_accuracy_mc,
        r.threshold,
        100.0 * r.clean_fpr_at_threshold
    );
    s += "ROC AUC per measure (H: predictive entropy). Gate TPR (S): share of successful adversarials the \
          card's MI threshold rejects (the rest pass the gate). Noise FPR: share of the matched-noise \
          negatives it rejects.\n\n";
    s += "| attack | model attacked | ε (0–255) | success | H det | H MC | MI | H det (S) | H MC (S) | MI (S) | gate TPR (S) | noise FPR |\n";
    s += "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for row in &r.rows {
        let a = |m: &str| f(row.all[m].auc);
        let sa = |m: &str| f(row.successful[m].auc);
        s += &format!(
            "| {} | {} | {} | {:.1} % | {} | {} | **{}** | {} | {} | **{}** | {:.1} % | {:.1} % |\n",
            row.method,
            row.target,
            row.eps_255,
            100.0 * row.success_rate,
            a("det_entropy"),
            a("predictive_entropy"),
            a("mutual_information"),
            sa("det_entropy"),
            sa("predictive_entropy"),
            sa("mutual_information"),
            100.0 * row.tpr_at_threshold_successful,
            100.0 * row.noise_fpr_at_threshold
        );
    }
    s += "\nOther measures (ROC AUC, all adversarials / successful only; AP of MI):\n\n";
    s += "| attack | model attacked | ε | expected entropy | softmax variance | variation ratio | AP MI | AP MI (S) |\n";
    s += "|---|---|---|---|---|---|---|---|\n";
    for row in &r.rows {
        let both = |m: &str| format!("{} / {}", f(row.all[m].auc), f(row.successful[m].auc));
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.method,
            row.target,
            row.eps_255,
            both("expected_entropy"),
            both("softmax_variance"),
            both("variation_ratio"),
            f(row.all["mutual_information"].ap),
            f(row.successful["mutual_information"].ap)
        );
    }
    if !r.runtime.is_empty() {
        s += &runtime_markdown(r, &f);
    }
    s
}

/// The `--runtime` models' MI AUCs beside the tch model's, and the last model minus the
/// first (e.g. int8 − float when run with `--runtime models/mnist,models/mnist.int8`).
fn runtime_markdown(r: &Report, f: &dyn Fn(f64) -> String) -> String {
    let names: Vec<&str> = r.runtime.iter().map(|m| m.name.as_str()).collect();
    let mut s = "\nThrough the runtime (tract, the exported files, masks from mcgate's generator; \
                 the same masks for every model): clean results on the evaluation images\n\n"
        .to_string();
    s += "| model | accuracy det | accuracy MC | MI threshold | clean FPR |\n|---|---|---|---|---|\n";
    for m in &r.runtime {
        s += &format!(
            "| {} | {:.2} % | {:.2} % | {:.4} | {:.1} % |\n",
            m.name,
            100.0 * m.clean_accuracy_deterministic,
            100.0 * m.clean_accuracy_mc,
            m.threshold,
            100.0 * m.clean_fpr_at_threshold
        );
    }
    s += "\nMI ROC AUC, all adversarials / successful only (tch: the training model's own scores \
          above); gate TPR (S) and noise FPR at each card's threshold.\n\n";
    s += "| attack | model attacked | ε | tch |";
    for n in &names {
        s += &format!(" {n} | {n} TPR (S) / noise FPR |");
    }
    let delta = names.len() >= 2;
    if delta {
        s += &format!(" Δ AUC {} − {} |", names[names.len() - 1], names[0]);
    }
    s += "\n|---|---|---|---|";
    s += &"---|---|".repeat(names.len());
    if delta {
        s += "---|";
    }
    s += "\n";
    for row in &r.rows {
        let mi = "mutual_information";
        s += &format!(
            "| {} | {} | {} | {} / {} |",
            row.method,
            row.target,
            row.eps_255,
            f(row.all[mi].auc),
            f(row.successful[mi].auc)
        );
        for n in &names {
            let d = &row.runtime[*n];
            s += &format!(
                " {} / {} | {:.1} % / {:.1} % |",
                f(d.mi.auc),
                f(d.mi_successful.auc),
                100.0 * d.tpr_at_threshold_successful,
                100.0 * d.noise_fpr_at_threshold
            );
        }
        if delta {
            let (first, last) = (&row.runtime[names[0]], &row.runtime[names[names.len() - 1]]);
            s += &format!(
                " {:+.4} / {:+.4} |",
                last.mi.auc - first.mi.auc,
                last.mi_successful.auc - first.mi_successful.auc
            );
        }
        s += "\n";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_without_replacement() {
        let picks = sample_without_replacement(100, 30, 4);
        let mut sorted = picks.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 30);
        assert_eq!(picks, sample_without_replacement(100, 30, 4));
    }

    #[test]
    fn matched_noise_has_the_perturbation_norm_after_clipping() {
        tch::manual_seed(0);
        let x = Tensor::rand([4, 1, 28, 28], (Kind::Float, Device::Cpu));
        let adv = (&x + Tensor::rand([4, 1, 28, 28], (Kind::Float, Device::Cpu)) * 0.2 - 0.1)
            .clamp(0.0, 1.0);
        let noise = matched_noise(&x, &adv);
        let norm = |t: Tensor| {
            Vec::<f32>::try_from(
                t.flatten(1, -1)
                    .square()
                    .sum_dim_intlist(1, false, Kind::Float)
                    .sqrt(),
            )
            .unwrap()
        };
        let (want, got) = (norm(&adv - &x), norm(&noise - &x));
        for (w, g) in want.iter().zip(&got) {
            assert!(
                (w - g).abs() / w < 1e-3,
                "noise norm {g} vs perturbation {w}"
            );
        }
        assert!(
            f64::try_from(noise.min()).unwrap() >= 0.0
                && f64::try_from(noise.max()).unwrap() <= 1.0
        );
    }
}
