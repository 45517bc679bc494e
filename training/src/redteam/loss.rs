//! What the red team's attacks minimise (the losses of Carlini & Wagner 2017; expectation
//! over the masks, Athalye et al. 2018).
//!
//! Evasion: per image, a margin on the MC-mean prediction plus a hinge on each signal the
//! gate decides on,
//!
//! `max(log p̄_y − max_{j≠y} log p̄_j, −κ) + λ · max(MI − τ·threshold, 0)`,
//!
//! with p̄ the mean of K softmaxes under K fresh masks drawn at every step (the attacker knows
//! p and T, not the gate's masks). The margin stops pushing once the frame is misclassified
//! by κ; the hinge only once MI is well under the threshold (τ < 1), so the attack leaves
//! room for the masks the gate will draw. A card that fuses predictive entropy adds its hinge,
//! `λ · max(H − τ·cut_H, 0)`, the threshold and cut being each signal's own cut
//! (`FusedGate::cuts`): under Bonferroni's rule the gate accepts exactly the frames inside
//! every cut. A card that fuses feature density adds `λ · max(aim − log density, 0) / scale`
//! on the attacker's copy of the density ([`DensityAim`]), the aim between the density's cut
//! and the clean frames' median. Denial of service: `max(2·threshold − MI, 0)`.

use tch::{Kind, Tensor};

use super::density::DensityAim;
use super::judge::Outcome;
use crate::measures::{mutual_information, predictive_entropy};
use crate::nets::DropoutNet;

/// What the attacker wants of the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// A frame accepted with another class than its label (evasion).
    Bypass,
    /// A clean frame rejected (denial of service): the perturbation raises MI instead, with
    /// the hinge `max(2·threshold − MI, 0)` and no margin.
    Reject,
}

/// The loss's settings (recorded with each row).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Loss {
    /// Mask draws per step (expectation over the masks).
    pub eot: i64,
    /// τ: the hinge pushes each signal under this fraction of its threshold.
    pub hinge_fraction: f64,
    /// κ: the margin stops pushing once the wrong class leads by this much (log probability).
    pub kappa: f64,
    /// Differentiate the deterministic network (dropout off) instead of the MC mean, with
    /// no signal term: plain PGD, the attack that ignores the gate.
    pub deterministic: bool,
    pub goal: Goal,
    /// The labels given are target classes: the margin pushes each frame *towards* its
    /// label instead of away from it (a universal patch aims at one class).
    pub targeted: bool,
    /// Where the card fuses predictive entropy: its cut, which a second hinge aims under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entropy_cut: Option<f64>,
    /// Where the card fuses feature density: the attacker's copy of it, which a third hinge
    /// pushes above its aim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub density: Option<DensityAim>,
}

/// What the attacker minimises, per image `[N]`, for pixels `[N, C, H, W]` in [0, 1] and
/// labels `[N]` (true classes; target classes where `a.targeted`).
pub fn objective(
    net: &dyn DropoutNet,
    pixels: &Tensor,
    labels: &Tensor,
    threshold: f64,
    lambda: f64,
    a: &Loss,
) -> Tensor {
    let x = net.input_from_pixels(pixels);
    let probs = if a.deterministic {
        net.logits(&x, false).softmax(-1, Kind::Float).unsqueeze(0) // [1, N, C]
    } else {
        net.mc_probs(&x, a.eot) // [M·K, N, C]
    };
    let mean = probs.mean_dim(0, false, Kind::Float); // [N, C]
    if a.goal == Goal::Reject {
        let mi = mutual_information(&probs);
        return (mi.neg() + 2.0 * threshold).clamp_min(0.0);
    }
    let log_mean = mean.clamp_min(1e-12).log();
    let true_class = log_mean
        .gather(1, &labels.unsqueeze(1), false)
        .squeeze_dim(1);
    let onehot = log_mean
        .zeros_like()
        .scatter_value(1, &labels.unsqueeze(1), 1.0);
    let best_other = (&log_mean - onehot * 1e9).max_dim(1, false).0;
    let margin = if a.targeted {
        best_other - true_class
    } else {
        true_class - best_other
    }
    .clamp_min(-a.kappa);
    if lambda == 0.0 || a.deterministic {
        return margin;
    }
    let mi = mutual_information(&probs); // [N]
    let mut hinge = (mi - a.hinge_fraction * threshold).clamp_min(0.0);
    if let Some(cut) = a.entropy_cut {
        hinge += (predictive_entropy(&probs) - a.hinge_fraction * cut).clamp_min(0.0);
    }
    if let Some(density) = &a.density {
        hinge += density.hinge(net, &x);
    }
    margin + hinge * lambda
}

/// How well an outcome serves the attacker, higher better. Evasion: passing (misclassified
/// and accepted) beats everything, and among passes the lower MI; then misclassified frames
/// by how close their MI is to the threshold; then the rest. Denial of service: the higher
/// the MI the better, rejected frames above the rest.
pub fn pass_score(o: &Outcome, label: i64, threshold: f64, goal: Goal) -> f64 {
    if goal == Goal::Reject {
        let mi = o.mi.unwrap_or(0.0);
        return (!o.accepted) as u8 as f64 + (mi / threshold).min(1e6) * 1e-6;
    }
    let mi = o.mi.unwrap_or(f64::INFINITY);
    match o.class {
        Some(c) if c as i64 != label && o.accepted => 2.0 + (1.0 - mi / threshold).clamp(0.0, 1.0),
        Some(c) if c as i64 != label => 1.0 + (threshold / mi).clamp(0.0, 1.0),
        _ => 0.0,
    }
}
