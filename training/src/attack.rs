//! L∞ attacks on the dropout network: FGM, BIM and MIM, untargeted (Smith & Gal 2018,
//! after cleverhans as their code used it).
//!
//! Images are pixels in [0, 1], mapped to the network's input by its card normalisation
//! (`DropoutNet::input_from_pixels`); ε and the step are given on that scale (the paper's ε = 5 and 10 on
//! the 0–255 scale are 5/255 and 10/255). No random start; every step is clipped to the
//! ε-ball around the clean image and to [0, 1].

use tch::{Kind, Reduction, Tensor};

use crate::nets::DropoutNet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// One step of size ε along the sign of the gradient.
    Fgm,
    /// Basic iterative method: `iterations` signed steps of size `step`.
    Bim,
    /// Momentum iterative method: BIM on a momentum of L1-normalised gradients.
    Mim,
}

/// What the attacker differentiates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// The network with dropout off.
    Deterministic,
    /// Cross-entropy of the MC mean of `samples` softmaxes, fresh masks at every step (what
    /// the paper's code does).
    McMean { samples: i64 },
    /// Expectation over transformation: the mean of the `samples` per-sample cross-entropies.
    McEot { samples: i64 },
    /// An attacker who knows the gate: the MC-mean cross-entropy minus `lambda` times the
    /// mutual information, so the attack also pushes MI down.
    Adaptive { samples: i64, lambda: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attack {
    pub method: Method,
    pub eps: f64,
    pub step: f64,
    pub iterations: usize,
    /// MIM momentum decay (the paper: 1.0).
    pub decay: f64,
    pub target: Target,
}

impl Attack {
    /// The paper's parameters for ε on the 0–255 scale: BIM/MIM step 0.5 for ε=5 and 1.2
    /// for ε=10 (same scale), 10 iterations, MIM decay 1.0. Other ε use step ε/10·1.2.
    pub fn paper(method: Method, eps_255: f64, target: Target) -> Attack {
        let step_255 = if eps_255 == 5.0 {
            0.5
        } else if eps_255 == 10.0 {
            1.2
        } else {
            eps_255 * 0.12
        };
        Attack {
            method,
            eps: eps_255 / 255.0,
            step: step_255 / 255.0,
            iterations: 10,
            decay: 1.0,
            target,
        }
    }
}

/// The loss the attacker increases, per the target, for pixels `pixels` in [0, 1] and labels
/// `y` `[N]`.
pub fn loss(net: &dyn DropoutNet, pixels: &Tensor, y: &Tensor, target: Target) -> Tensor {
    let x = &net.input_from_pixels(pixels);
    match target {
        Target::Deterministic => net.logits(x, false).cross_entropy_for_logits(y),
        Target::McMean { samples } => {
            let mean = net.mc_probs(x, samples).mean_dim(0, false, Kind::Float); // [N, C]
            mean.clamp_min(1e-12).log().nll_loss(y)
        }
        Target::McEot { samples } => {
            let probs = net.mc_probs(x, samples); // [M·T, N, C]
            let (t, n, c) = (probs.size()[0], probs.size()[1], probs.size()[2]);
            let logp = probs.clamp_min(1e-12).log().view([t * n, c]);
            logp.g_nll_loss::<Tensor>(&y.repeat([t]), None, Reduction::Mean, -100)
        }
        Target::Adaptive { samples, lambda } => {
            let probs = net.mc_probs(x, samples); // [M·T, N, C]
            let mean = probs.mean_dim(0, false, Kind::Float); // [N, C]
            let mi = crate::measures::mutual_information(&probs); // [N]
            mean.clamp_min(1e-12).log().nll_loss(y) - mi.mean(Kind::Float) * lambda
        }
    }
}

fn gradient(net: &dyn DropoutNet, x: &Tensor, y: &Tensor, target: Target) -> Tensor {
    let x = x.detach().set_requires_grad(true);
    let l = loss(net, &x, y, target);
    Tensor::run_backward(&[l], &[&x], false, false).remove(0)
}

/// Adversarial versions of pixels `x` `[N, C, H, W]` (values in [0, 1]) against labels `y`.
pub fn run(net: &dyn DropoutNet, x: &Tensor, y: &Tensor, a: &Attack) -> Tensor {
    let clean = x.detach();
    let project = |adv: Tensor| -> Tensor {
        let lo = (&clean - a.eps).clamp_min(0.0);
        let hi = (&clean + a.eps).clamp_max(1.0);
        adv.maximum(&lo).minimum(&hi)
    };
    match a.method {
        Method::Fgm => project(&clean + gradient(net, &clean, y, a.target).sign() * a.eps),
        Method::Bim | Method::Mim => {
            let mut adv = clean.shallow_clone();
            let mut momentum = clean.zeros_like();
            for _ in 0..a.iterations {
                let g = gradient(net, &adv, y, a.target);
                let direction = if a.method == Method::Mim {
                    // Per-image mean absolute gradient, as the paper's code normalises.
                    let scale = g
                        .abs()
                        .mean_dim([1i64, 2, 3].as_slice(), true, Kind::Float)
                        .clamp_min(1e-12);
                    momentum = &momentum * a.decay + &g / scale;
                    momentum.sign()
                } else {
                    g.sign()
                };
                adv = project(&adv + direction * a.step).detach();
            }
            adv
        }
    }
}
