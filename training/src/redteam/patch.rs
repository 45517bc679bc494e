//! A universal adversarial patch (Brown et al. 2017): one square of pixels, the same for
//! every frame, that makes the gate accept a wrong class wherever it lands — the attack a
//! sticker in front of a camera can carry out. Trained on one set of images by signed
//! gradient steps on the red team's [`Loss`], with expectation over the masks and over the
//! patch's position (drawn afresh for every image at every step); judged on other images,
//! each at positions the attacker did not choose.

use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

use super::judge::Outcome;
use super::loss::{objective, Loss};
use crate::nets::DropoutNet;
use mcgate::run::rng::{mix, WyRand};

/// A patch attack's settings (recorded with its rows).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Patch {
    /// The patch's share of the frame's area (its side: the nearest whole pixels).
    pub area: f64,
    pub steps: usize,
    /// Signed step in pixel units, halved at 50 % and 75 % of the steps.
    pub step: f64,
    /// Weight of the signal hinge.
    pub lambda: f64,
    /// Target classes to try, one patch each (Brown et al.'s patches are targeted): the one
    /// that gets most training frames through in the attacker's own check is kept. Empty: one
    /// untargeted patch.
    pub targets: Vec<i64>,
    #[serde(flatten)]
    pub loss: Loss,
}

impl Patch {
    /// The patch's side for frames of `h × w`.
    pub fn side(&self, h: i64, w: i64) -> i64 {
        ((self.area * (h * w) as f64).sqrt().round() as i64).clamp(1, h.min(w))
    }
}

/// Random top-left corners for `n` patches of side `side` in `h × w` frames.
pub fn positions(rng: &mut WyRand, n: usize, side: i64, h: i64, w: i64) -> Vec<(i64, i64)> {
    let pick = |rng: &mut WyRand, room: i64| (rng.next_u64() % (room as u64 + 1)) as i64;
    (0..n)
        .map(|_| (pick(rng, h - side), pick(rng, w - side)))
        .collect()
}

/// Pixels `[N, C, H, W]` with `patch` `[C, s, s]` pasted at each image's corner (row, col);
/// differentiable in the patch.
pub fn apply(pixels: &Tensor, patch: &Tensor, corners: &[(i64, i64)]) -> Tensor {
    let (h, w) = (pixels.size()[2], pixels.size()[3]);
    let s = patch.size()[1];
    let ones = patch.ones_like();
    let images: Vec<Tensor> = corners
        .iter()
        .enumerate()
        .map(|(i, &(r, c))| {
            let pad = [c, w - s - c, r, h - s - r];
            let placed = patch.constant_pad_nd(pad);
            let mask = ones.constant_pad_nd(pad);
            pixels.get(i as i64) * (1.0 - &mask) + placed * mask
        })
        .collect();
    Tensor::stack(&images, 0)
}

/// The patch to judge: trained on `pixels` `[N, C, H, W]` with true labels `labels`, one per
/// target (or one untargeted), the best kept by `check` (the attacker's own masks) on those
/// same training frames at random positions. Returns it in 8-bit levels, with its target.
pub fn craft(
    net: &dyn DropoutNet,
    pixels: &Tensor,
    labels: &[i64],
    threshold: f64,
    p: &Patch,
    seed: u64,
    check: &mut dyn FnMut(&Tensor) -> Result<Vec<Outcome>>,
) -> Result<(Tensor, Option<i64>)> {
    let size = pixels.size();
    let (h, w) = (size[2], size[3]);
    let candidates: Vec<Option<i64>> = if p.targets.is_empty() {
        vec![None]
    } else {
        p.targets.iter().map(|&t| Some(t)).collect()
    };
    let mut best: Option<(usize, Tensor, Option<i64>)> = None;
    for (k, target) in candidates.into_iter().enumerate() {
        let aims: Vec<i64> = match target {
            Some(t) => vec![t; labels.len()],
            None => labels.to_vec(),
        };
        let loss = Loss {
            targeted: target.is_some(),
            ..p.loss.clone()
        };
        let trial = Patch { loss, ..p.clone() };
        let sticker = train(net, pixels, &aims, threshold, &trial, mix(seed, k as u64))?;
        let mut rng = WyRand::new(mix(seed, 1000 + k as u64));
        let corners = positions(&mut rng, labels.len(), sticker.size()[1], h, w);
        let through = check(&apply(pixels, &sticker, &corners))?
            .iter()
            .zip(labels)
            .filter(|(o, &l)| o.bypass(l))
            .count();
        if best.as_ref().is_none_or(|(b, _, _)| through > *b) {
            best = Some((through, sticker, target));
        }
    }
    let (_, sticker, target) = best.expect("at least one candidate");
    Ok((sticker, target))
}

/// Trains the patch on `pixels` `[N, C, H, W]` (in [0, 1]) with labels `labels` (targets
/// where the loss is targeted); returns it, `[C, s, s]` in 8-bit levels.
pub fn train(
    net: &dyn DropoutNet,
    pixels: &Tensor,
    labels: &[i64],
    threshold: f64,
    p: &Patch,
    seed: u64,
) -> Result<Tensor> {
    ensure!(!labels.is_empty(), "the patch needs images to train on");
    let size = pixels.size();
    let (c, h, w) = (size[1], size[2], size[3]);
    let s = p.side(h, w);
    let y = Tensor::from_slice(labels).to_device(pixels.device());
    let mut rng = WyRand::new(seed);
    tch::manual_seed(seed as i64);
    let mut patch = Tensor::rand([c, s, s], (Kind::Float, pixels.device()));
    for step in 0..p.steps {
        let size = super::pgd::halved(p.step, step, p.steps);
        let x = patch.detach().set_requires_grad(true);
        let corners = positions(&mut rng, labels.len(), s, h, w);
        let patched = apply(pixels, &x, &corners);
        let loss = objective(net, &patched, &y, threshold, p.lambda, &p.loss).mean(Kind::Float);
        let g = Tensor::run_backward(&[loss], &[&x], false, false).remove(0);
        patch = (x.detach() - g.sign() * size).clamp(0.0, 1.0);
    }
    Ok(super::judge::quantise(&patch))
}
