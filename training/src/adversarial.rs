//! Adversarial training: each training batch replaced (or joined) by its attacked version, so
//! that the gate guards a network an attacker cannot cheaply flip.
//!
//! Three methods, each attacking the network *as it trains* (dropout on, fresh masks at every
//! attack step: what a user training a dropout model gets), on pixels in [0, 1] within an L∞
//! ball of radius ε:
//! - [`Method::Pgd`]: Madry et al. 2018, a random start in the ball and K signed steps of the
//!   cross-entropy; the network trains on the attacked batch only.
//! - [`Method::Trades`]: Zhang et al. 2019, K signed steps of the KL divergence from the clean
//!   prediction, started at the clean image plus N(0, 0.001²); the loss is the clean
//!   cross-entropy plus β times that KL.
//! - [`Method::FgsmRs`]: Wong et al. 2020 ("fast is better than free"), a uniform random start
//!   and one signed step of size α (their 1.25 ε); one extra gradient per batch instead of K.
//!   Known to overfit catastrophically (PGD accuracy collapsing within an epoch): the training
//!   loop checks PGD accuracy on held-out images every epoch ([`RobustCheck`]) and stops.

use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

/// How the training batch is attacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// Madry PGD: train on K-step PGD examples from a random start.
    Pgd,
    /// TRADES: clean cross-entropy plus β × KL(clean ‖ attacked).
    Trades,
    /// Fast FGSM with a random start (one step of size α).
    FgsmRs,
}

/// One adversarial-training setting (the card's `training.adversarial`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adversarial {
    pub method: Method,
    /// L∞ radius on pixels in [0, 1].
    pub eps: f64,
    /// Attack steps per batch (1 for FGSM-RS).
    pub steps: usize,
    /// Size of each signed step, pixels in [0, 1].
    pub step_size: f64,
    /// TRADES's β (weight of the KL term); unused by the others.
    pub beta: f64,
}

impl Adversarial {
    /// The published defaults for `method` at `eps`: PGD and TRADES 10 steps of 2.5 ε / K
    /// (Madry et al.'s rule), FGSM-RS one step of 1.25 ε (Wong et al.), TRADES β = 6.
    pub fn new(method: Method, eps: f64) -> Adversarial {
        let steps = match method {
            Method::FgsmRs => 1,
            Method::Pgd | Method::Trades => 10,
        };
        Adversarial {
            method,
            eps,
            steps,
            step_size: Adversarial::default_step(method, eps, steps),
            beta: 6.0,
        }
    }

    /// The default step for `steps` steps at `eps`.
    fn default_step(method: Method, eps: f64, steps: usize) -> f64 {
        match method {
            Method::FgsmRs => 1.25 * eps,
            Method::Pgd | Method::Trades => 2.5 * eps / steps as f64,
        }
    }

    /// This setting with `steps` steps, each of the default size for that many.
    pub fn with_steps(self, steps: usize) -> Adversarial {
        Adversarial {
            steps,
            step_size: Adversarial::default_step(self.method, self.eps, steps),
            ..self
        }
    }

    /// Refuses settings that would not train what they say.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.eps > 0.0 && self.eps <= 1.0,
            "--eps {} is outside (0, 1] (pixels in [0, 1]: MNIST's 0.3 is 76.5 of 255)",
            self.eps
        );
        ensure!(
            self.steps >= 1,
            "--attack-steps must be at least 1, got {}",
            self.steps
        );
        ensure!(
            self.method != Method::FgsmRs || self.steps == 1,
            "fgsm-rs takes one step (got --attack-steps {}); use pgd for more",
            self.steps
        );
        ensure!(
            self.step_size > 0.0 && self.step_size.is_finite(),
            "--step-size must be positive, got {}",
            self.step_size
        );
        ensure!(
            self.method != Method::Trades || (self.beta > 0.0 && self.beta.is_finite()),
            "--trades-beta must be positive, got {}",
            self.beta
        );
        Ok(())
    }

    /// This setting at another radius (the warm-up's ramp), steps scaled with it.
    pub fn at_eps(&self, eps: f64) -> Adversarial {
        let scale = eps / self.eps;
        Adversarial {
            eps,
            step_size: self.step_size * scale,
            ..*self
        }
    }

    /// The attacked version of `pixels` `[N, ..]` in [0, 1] with labels `labels` `[N]`,
    /// against `logits` (the network in training mode: fresh masks at every call). Detached:
    /// no gradient reaches the weights through the attack.
    pub fn attack(
        &self,
        logits: &dyn Fn(&Tensor) -> Tensor,
        pixels: &Tensor,
        labels: &Tensor,
    ) -> Tensor {
        let clean = pixels.detach();
        let mut adv = match self.method {
            Method::Pgd | Method::FgsmRs => &clean + (clean.rand_like() * 2.0 - 1.0) * self.eps,
            Method::Trades => &clean + clean.randn_like() * 0.001,
        };
        adv = project(&clean, &adv, self.eps);
        let clean_probs = match self.method {
            Method::Trades => Some(tch::no_grad(|| logits(&clean).softmax(-1, Kind::Float))),
            _ => None,
        };
        for _ in 0..self.steps {
            let x = adv.detach().set_requires_grad(true);
            let out = logits(&x);
            let loss = match &clean_probs {
                Some(p) => kl_from(p, &out),
                None => out.cross_entropy_for_logits(labels),
            };
            let g = Tensor::run_backward(&[loss], &[&x], false, false).remove(0);
            adv = project(&clean, &(x.detach() + g.sign() * self.step_size), self.eps);
        }
        adv
    }

    /// The training loss for clean pixels, their attacked version and the labels, with the
    /// logits the accuracy is counted on (the attacked batch's; TRADES: the clean batch's).
    pub fn loss(
        &self,
        logits: &dyn Fn(&Tensor) -> Tensor,
        pixels: &Tensor,
        attacked: &Tensor,
        labels: &Tensor,
    ) -> (Tensor, Tensor) {
        match self.method {
            Method::Pgd | Method::FgsmRs => {
                let out = logits(attacked);
                (out.cross_entropy_for_logits(labels), out)
            }
            Method::Trades => {
                let clean = logits(pixels);
                let adv = logits(attacked);
                let kl = kl_from(&clean.softmax(-1, Kind::Float), &adv);
                (
                    clean.cross_entropy_for_logits(labels) + kl * self.beta,
                    clean,
                )
            }
        }
    }
}

/// KL(p ‖ softmax(logits)), the mean over the batch.
fn kl_from(p: &Tensor, logits: &Tensor) -> Tensor {
    let log_q = logits.log_softmax(-1, Kind::Float);
    let per_image = (p * (p.clamp_min(1e-12).log() - log_q)).sum_dim_intlist(
        [-1i64].as_slice(),
        false,
        Kind::Float,
    );
    per_image.mean(Kind::Float)
}

/// `adv` moved into the L∞ ball of radius `eps` around `clean` and into [0, 1].
pub fn project(clean: &Tensor, adv: &Tensor, eps: f64) -> Tensor {
    (clean + (adv - clean).clamp(-eps, eps))
        .clamp(0.0, 1.0)
        .detach()
}

/// The catastrophic-overfitting guard (Wong et al. 2020): PGD accuracy of the network with
/// dropout off on held-out images, after every epoch.
pub struct RobustCheck {
    pub pixels: Tensor,
    pub labels: Tensor,
    /// PGD's radius: the training ε.
    pub eps: f64,
    /// PGD steps (random start, step 2.5 ε / steps).
    pub steps: usize,
    /// Stop when the accuracy falls this far (a share) below the best epoch's, keeping that
    /// epoch's weights.
    pub max_drop: f64,
}

impl RobustCheck {
    /// The share of the held-out images `logits` (dropout off) still classifies right under
    /// PGD at the training ε.
    pub fn accuracy(&self, logits: &dyn Fn(&Tensor) -> Tensor) -> f64 {
        let pgd = Adversarial::new(Method::Pgd, self.eps).with_steps(self.steps);
        let adv = pgd.attack(logits, &self.pixels, &self.labels);
        let _guard = tch::no_grad_guard();
        logits(&adv)
            .argmax(-1, false)
            .eq_tensor(&self.labels)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, nn::Module, Device};

    /// A tiny linear classifier on 4×4 images.
    fn tiny() -> (nn::VarStore, nn::Linear) {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let lin = nn::linear(vs.root() / "l", 16, 3, Default::default());
        (vs, lin)
    }

    #[test]
    fn every_method_stays_in_the_ball_and_the_unit_range_and_raises_the_loss() {
        let (_vs, lin) = tiny();
        let logits = |x: &Tensor| lin.forward(&x.view([-1, 16]));
        let x = Tensor::rand([64, 1, 4, 4], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(3, [64], (Kind::Int64, Device::Cpu));
        for method in [Method::Pgd, Method::Trades, Method::FgsmRs] {
            let a = Adversarial::new(method, 0.1);
            a.validate().unwrap();
            let adv = a.attack(&logits, &x, &y);
            let delta = (&adv - &x).abs().max().double_value(&[]);
            assert!(delta <= 0.1 + 1e-6, "{method:?}: moved {delta}");
            assert!(delta > 0.05, "{method:?}: barely moved ({delta})");
            assert!(adv.min().double_value(&[]) >= 0.0 && adv.max().double_value(&[]) <= 1.0);
            let ce = |x: &Tensor| logits(x).cross_entropy_for_logits(&y).double_value(&[]);
            if method != Method::Trades {
                assert!(ce(&adv) > ce(&x), "{method:?}: loss did not rise");
            }
        }
    }

    #[test]
    fn trades_loss_is_the_clean_loss_plus_beta_times_kl() {
        let (_vs, lin) = tiny();
        let logits = |x: &Tensor| lin.forward(&x.view([-1, 16]));
        let x = Tensor::rand([8, 1, 4, 4], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(3, [8], (Kind::Int64, Device::Cpu));
        let a = Adversarial::new(Method::Trades, 0.2);
        let (loss, _) = a.loss(&logits, &x, &x, &y);
        let clean = logits(&x).cross_entropy_for_logits(&y);
        // KL of a distribution from itself is zero.
        assert!((loss.double_value(&[]) - clean.double_value(&[])).abs() < 1e-5);
        let adv = a.attack(&logits, &x, &y);
        let (loss, _) = a.loss(&logits, &x, &adv, &y);
        // The naive reference: Σ p (log p − log q), averaged over images.
        let p = logits(&x).softmax(-1, Kind::Double);
        let q = logits(&adv).softmax(-1, Kind::Double);
        let kl = (&p * (p.log() - q.log()))
            .sum(Kind::Double)
            .double_value(&[])
            / 8.0;
        let expected = clean.double_value(&[]) + 6.0 * kl;
        assert!(
            (loss.double_value(&[]) - expected).abs() < 1e-4,
            "{loss:?} vs {expected}"
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut a = Adversarial::new(Method::FgsmRs, 0.3);
        a.steps = 3;
        assert!(a.validate().unwrap_err().to_string().contains("one step"));
        for eps in [0.0, -0.1, 1.5] {
            assert!(Adversarial::new(Method::Pgd, eps).validate().is_err());
        }
        let mut a = Adversarial::new(Method::Trades, 0.3);
        a.beta = 0.0;
        assert!(a.validate().is_err());
        a.beta = 6.0;
        a.step_size = f64::NAN;
        assert!(a.validate().is_err());
    }
}
