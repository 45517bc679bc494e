//! The evaluation report as Markdown: the paper's Table 1 columns, the other measures, and
//! the exported models scored through the runtime.

use super::report::{Detection, Difference, EvalReport};
use crate::measures::Measure;

const MI: Measure = Measure::MutualInformation;

/// The report as Markdown: the paper's Table 1 columns, then the other measures.
pub fn markdown(r: &EvalReport) -> String {
    let f = |v: f64| {
        if v.is_nan() {
            "–".to_string()
        } else {
            format!("{v:.3}")
        }
    };
    // An AUC with its bootstrap interval, when there is one.
    let fi = |d: &Detection| match d.auc_interval {
        Some((lo, hi)) => format!("{} [{}–{}]", f(d.auc), f(lo), f(hi)),
        None => f(d.auc),
    };
    let mut s = format!(
        "{} images (seed {}), T = {}{}; attacked: {}; crafted on: {}; attack labels: {}; MC attacks: {}.\n\
         Clean accuracy on all of them: {:.2} % deterministic, {:.2} % MC. {} clean negatives; \
         MI threshold {:.4} rejects {:.1} % of them.\n\n",
        r.images,
        r.seed,
        r.samples,
        match r.members {
            1 => String::new(),
            m => format!(" per member × {m} members, pooled"),
        },
        r.attacked,
        r.crafted_on,
        r.labels,
        r.mc_loss,
        100.0 * r.clean_accuracy_deterministic,
        100.0 * r.clean_accuracy_mc,
        r.clean_negatives,
        r.threshold,
        100.0 * r.clean_fpr_at_threshold
    );
    s += "ROC AUC per measure (H: predictive entropy) against clean + matched-noise negatives, \
          [95 % bootstrap interval] where computed; MI vs clean: against the clean negatives alone. \
          Gate TPR (S): share of successful adversarials the card's MI threshold rejects (the rest \
          pass the gate). Noise FPR: share of the matched-noise negatives it rejects.\n\n";
    s += "| attack | model attacked | ε (0–255) | success | H det | H MC | MI | H det (S) | H MC (S) | MI (S) | MI vs clean | gate TPR (S) | noise FPR |\n";
    s += "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for row in &r.rows {
        let a = |m: Measure| fi(&row.all[&m]);
        let sa = |m: Measure| fi(&row.successful[&m]);
        s += &format!(
            "| {} | {} | {} | {:.1} % | {} | {} | **{}** | {} | {} | **{}** | {} | {:.1} % | {:.1} % |\n",
            row.method,
            row.target,
            row.eps_255,
            100.0 * row.success_rate,
            a(Measure::DetEntropy),
            a(Measure::PredictiveEntropy),
            a(Measure::MutualInformation),
            sa(Measure::DetEntropy),
            sa(Measure::PredictiveEntropy),
            sa(Measure::MutualInformation),
            fi(&row.clean_only[&MI]),
            100.0 * row.tpr_at_threshold_successful,
            100.0 * row.noise_fpr_at_threshold
        );
    }
    s += "\nMI against the entropies, paired: AUC(MI) − AUC(H) on the same frames, [95 % bootstrap \
          interval] with both measures recomputed on each resample; * where the interval excludes 0 \
          (the ordering holds beyond resampling the images; not corrected for the number of rows).\n\n";
    s += "| attack | model attacked | ε | MI − H det | MI − H MC | MI − H det (S) | MI − H MC (S) |\n";
    s += "|---|---|---|---|---|---|---|\n";
    for row in &r.rows {
        let d = |m: &std::collections::BTreeMap<Measure, Difference>, k: Measure| {
            m.get(&k).map_or("–".to_string(), Difference::text)
        };
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            row.method,
            row.target,
            row.eps_255,
            d(&row.mi_minus, Measure::DetEntropy),
            d(&row.mi_minus, Measure::PredictiveEntropy),
            d(&row.mi_minus_successful, Measure::DetEntropy),
            d(&row.mi_minus_successful, Measure::PredictiveEntropy),
        );
    }
    s += "\nOther measures (ROC AUC, all adversarials / successful only; AP of MI):\n\n";
    s += "| attack | model attacked | ε | expected entropy | softmax variance | variation ratio | AP MI | AP MI (S) |\n";
    s += "|---|---|---|---|---|---|---|---|\n";
    for row in &r.rows {
        let both = |m: Measure| format!("{} / {}", f(row.all[&m].auc), f(row.successful[&m].auc));
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.method,
            row.target,
            row.eps_255,
            both(Measure::ExpectedEntropy),
            both(Measure::SoftmaxVariance),
            both(Measure::VariationRatio),
            f(row.all[&MI].ap),
            f(row.successful[&MI].ap)
        );
    }
    if !r.exported.is_empty() {
        s += &exported_markdown(r, &f);
    }
    s
}

/// The exported (`--runtime`) models' MI AUCs beside the tch model's, and the last model
/// minus the first (e.g. int8 − float when run with `--runtime models/mnist,models/mnist.int8`).
fn exported_markdown(r: &EvalReport, f: &dyn Fn(f64) -> String) -> String {
    let names: Vec<&str> = r.exported.iter().map(|m| m.name.as_str()).collect();
    let mut s = "\nThrough the runtime (tract, the exported files, masks from mcgate's generator; \
                 the same masks for every model): clean results on the evaluation images\n\n"
        .to_string();
    s += "| model | accuracy det | accuracy MC | MI threshold | clean FPR |\n|---|---|---|---|---|\n";
    for m in &r.exported {
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
        s += &format!(
            "| {} | {} | {} | {} / {} |",
            row.method,
            row.target,
            row.eps_255,
            f(row.all[&MI].auc),
            f(row.successful[&MI].auc)
        );
        for n in &names {
            let d = &row.exported[*n];
            s += &format!(
                " {} / {} | {:.1} % / {:.1} % |",
                f(d.mi.auc),
                f(d.mi_successful.auc),
                100.0 * d.tpr_at_threshold_successful,
                100.0 * d.noise_fpr_at_threshold
            );
        }
        if delta {
            let (first, last) = (
                &row.exported[names[0]],
                &row.exported[names[names.len() - 1]],
            );
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
