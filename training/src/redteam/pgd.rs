//! Projected gradient descent against the whole gate (Madry et al. 2018), minimising the
//! red team's [`Loss`] per image. Steps are signed (L∞) or normalised (L2), their size
//! halved at 50 % and 75 % of the steps; every restart but the first starts at a random point
//! of the ε-ball. The iterate kept for each image is the one that passes best when checked
//! through the runtime with fresh masks of the attacker's own, as 8-bit frames.

use tch::{Kind, Tensor};

use super::judge::{quantise, Outcome};
use super::loss::{objective, pass_score, Loss};
use crate::nets::DropoutNet;

/// The perturbation's norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// Every pixel within ε.
    Linf,
    /// The whole perturbation within ε in Euclidean length (pixels in [0, 1]).
    L2,
}

/// One PGD attack's settings (recorded with its rows).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pgd {
    pub norm: Norm,
    /// Budget in pixel units ([0, 1] scale).
    pub eps: f64,
    pub steps: usize,
    /// Starts per λ: the first at the clean image, the others at random points of the ball.
    pub restarts: usize,
    /// Weights of the signal hinge tried; each image keeps its best.
    pub lambdas: Vec<f64>,
    /// Misclassify first (λ = 0 for the first half of the steps), then push the signals down.
    pub two_phase: bool,
    /// Check the iterate through the runtime every this many steps (and after the last).
    pub check_every: usize,
    /// What is minimised.
    #[serde(flatten)]
    pub loss: Loss,
}

/// Adversarial pixels `[N, C, H, W]` for clean pixels `clean` in [0, 1] with labels `labels`,
/// each image's best iterate over λ, restarts and steps as `check` (8-bit frames → the
/// runtime's outcomes under fresh masks) scores them. Returns the pixels (already 8-bit) and
/// the check's outcome for each.
pub fn run(
    net: &dyn DropoutNet,
    clean: &Tensor,
    labels: &[i64],
    threshold: f64,
    a: &Pgd,
    check: &mut dyn FnMut(&Tensor) -> anyhow::Result<Vec<Outcome>>,
) -> anyhow::Result<(Tensor, Vec<Outcome>)> {
    let n = labels.len();
    let y = Tensor::from_slice(labels).to_device(clean.device());
    let mut best = quantise(clean);
    let mut best_outcome = check(&best)?;
    let mut best_score: Vec<f64> = best_outcome
        .iter()
        .zip(labels)
        .map(|(o, &l)| pass_score(o, l, threshold, a.loss.goal))
        .collect();
    let mut keep = |candidate: &Tensor,
                    best: &mut Tensor,
                    best_outcome: &mut Vec<Outcome>,
                    best_score: &mut Vec<f64>|
     -> anyhow::Result<()> {
        let q = quantise(candidate);
        let outcomes = check(&q)?;
        let mut better = vec![false; n];
        for i in 0..n {
            let s = pass_score(&outcomes[i], labels[i], threshold, a.loss.goal);
            if s > best_score[i] {
                better[i] = true;
                best_score[i] = s;
                best_outcome[i] = outcomes[i];
            }
        }
        let mask = Tensor::from_slice(&better)
            .to_device(q.device())
            .view([n as i64, 1, 1, 1]);
        *best = q.where_self(&mask, best);
        Ok(())
    };
    for &lambda in &a.lambdas {
        for restart in 0..a.restarts {
            let mut adv = if restart == 0 {
                clean.shallow_clone()
            } else {
                project(clean, &(clean + random_in_ball(clean, a)), a)
            };
            for step in 0..a.steps {
                let size = step_size(a, step);
                let weight = if a.two_phase && step < a.steps / 2 {
                    0.0
                } else {
                    lambda
                };
                let x = adv.detach().set_requires_grad(true);
                let loss = objective(net, &x, &y, threshold, weight, &a.loss).sum(Kind::Float);
                let g = Tensor::run_backward(&[loss], &[&x], false, false).remove(0);
                let direction = match a.norm {
                    Norm::Linf => g.sign(),
                    Norm::L2 => &g / l2(&g).clamp_min(1e-12),
                };
                adv = project(clean, &(x.detach() - direction * size), a);
                if (step + 1) % a.check_every.max(1) == 0 || step + 1 == a.steps {
                    keep(&adv, &mut best, &mut best_outcome, &mut best_score)?;
                }
            }
        }
    }
    Ok((best, best_outcome))
}

/// Step size at `step`: ε/4, halved at 50 % and 75 % of the steps.
fn step_size(a: &Pgd, step: usize) -> f64 {
    halved(a.eps / 4.0, step, a.steps)
}

/// `first` at step `step` of `steps`, halved at 50 % and at 75 % of the steps.
pub fn halved(first: f64, step: usize, steps: usize) -> f64 {
    let halvings = (step * 4 >= steps * 2) as i32 + (step * 4 >= steps * 3) as i32;
    first / 2f64.powi(halvings)
}

/// Per-image Euclidean length `[N, 1, 1, 1]`.
fn l2(t: &Tensor) -> Tensor {
    t.square()
        .sum_dim_intlist([1i64, 2, 3].as_slice(), true, Kind::Float)
        .sqrt()
}

/// A uniform random point of the ε-ball (L∞: per pixel; L2: a random direction at a
/// uniform fraction of ε).
fn random_in_ball(clean: &Tensor, a: &Pgd) -> Tensor {
    match a.norm {
        Norm::Linf => (clean.rand_like() * 2.0 - 1.0) * a.eps,
        Norm::L2 => {
            let d = clean.randn_like();
            let n = clean.size()[0];
            let r = Tensor::rand([n, 1, 1, 1], (Kind::Float, clean.device())) * a.eps;
            &d / l2(&d).clamp_min(1e-12) * r
        }
    }
}

/// `adv` moved back into the ε-ball around `clean` and into [0, 1].
pub fn project(clean: &Tensor, adv: &Tensor, a: &Pgd) -> Tensor {
    match a.norm {
        Norm::Linf => crate::adversarial::project(clean, adv, a.eps),
        Norm::L2 => {
            let delta = adv - clean;
            let scale = (l2(&delta) / a.eps).clamp_min(1.0);
            (clean + &delta / scale).clamp(0.0, 1.0).detach()
        }
    }
}
