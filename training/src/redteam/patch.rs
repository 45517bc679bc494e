//! A universal adversarial patch (Brown et al. 2017): one square of pixels, the same for
//! every frame, that makes the gate accept a wrong class wherever it lands — the attack a
//! sticker in front of a camera can carry out. Trained on one set of images by signed
//! gradient steps on the red team's [`Loss`], with expectation over the masks and over how
//! the patch lands — its position and, for photos, its scale and brightness ([`Placement`]),
//! drawn afresh for every image at every step; judged on other images, each placed where
//! the attacker did not choose.

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
    /// How the patch may land besides its position, in training and when judged.
    pub placement: Placement,
    #[serde(flatten)]
    pub loss: Loss,
}

/// How a patch lands beyond its position: its side scaled by a factor drawn uniformly from
/// `scale`, its pixels multiplied by one drawn from `brightness` — a sticker seen nearer or
/// farther, in brighter or dimmer light. `[1, 1]` each: as printed (no draw is made).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Placement {
    pub scale: [f64; 2],
    pub brightness: [f64; 2],
}

impl Placement {
    /// Position only.
    pub const FIXED: Placement = Placement {
        scale: [1.0, 1.0],
        brightness: [1.0, 1.0],
    };
}

/// Where and how one patch lands: its top-left corner, side and brightness gain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed {
    pub row: i64,
    pub col: i64,
    pub side: i64,
    pub gain: f64,
}

impl Patch {
    /// The patch's side for frames of `h × w`.
    pub fn side(&self, h: i64, w: i64) -> i64 {
        ((self.area * (h * w) as f64).sqrt().round() as i64).clamp(1, h.min(w))
    }
}

/// Random placements of a patch of side `side` in each of `n` frames of `h × w`: a scale and
/// a gain from `how` (drawn only where its range is not a single value, so that a fixed
/// placement draws the corners alone), then a corner where the scaled patch fits.
pub fn placements(
    rng: &mut WyRand,
    n: usize,
    side: i64,
    h: i64,
    w: i64,
    how: &Placement,
) -> Vec<Placed> {
    let uniform = |rng: &mut WyRand, [lo, hi]: [f64; 2]| {
        if lo == hi {
            lo
        } else {
            lo + (hi - lo) * (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }
    };
    let pick = |rng: &mut WyRand, room: i64| (rng.next_u64() % (room as u64 + 1)) as i64;
    (0..n)
        .map(|_| {
            let side = ((side as f64 * uniform(rng, how.scale)).round() as i64).clamp(1, h.min(w));
            let gain = uniform(rng, how.brightness);
            let row = pick(rng, h - side);
            let col = pick(rng, w - side);
            Placed {
                row,
                col,
                side,
                gain,
            }
        })
        .collect()
}

/// Pixels `[N, C, H, W]` with `patch` `[C, s, s]` pasted as each image's placement says
/// (resized bilinearly to its side, times its gain, kept in [0, 1]); differentiable in the
/// patch.
pub fn apply(pixels: &Tensor, patch: &Tensor, placed: &[Placed]) -> Tensor {
    let (h, w) = (pixels.size()[2], pixels.size()[3]);
    let s = patch.size()[1];
    let images: Vec<Tensor> = placed
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let sized = if p.side == s {
                patch.shallow_clone()
            } else {
                patch
                    .unsqueeze(0)
                    .upsample_bilinear2d([p.side, p.side], false, None, None)
                    .squeeze_dim(0)
            };
            let lit = if p.gain == 1.0 {
                sized
            } else {
                (sized * p.gain).clamp(0.0, 1.0)
            };
            let pad = [p.col, w - p.side - p.col, p.row, h - p.side - p.row];
            let mask = lit.ones_like().constant_pad_nd(pad);
            pixels.get(i as i64) * (1.0 - &mask) + lit.constant_pad_nd(pad) * mask
        })
        .collect();
    Tensor::stack(&images, 0)
}

/// The patch to judge: trained on `pixels` `[N, C, H, W]` with true labels `labels`, one per
/// target (or one untargeted), the best kept by `check` (the attacker's own masks) on those
/// same training frames at random placements. Returns it in 8-bit levels, with its target.
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
        let placed = placements(
            &mut rng,
            labels.len(),
            sticker.size()[1],
            h,
            w,
            &p.placement,
        );
        let through = check(&apply(pixels, &sticker, &placed))?
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
        let placed = placements(&mut rng, labels.len(), s, h, w, &p.placement);
        let patched = apply(pixels, &x, &placed);
        let loss = objective(net, &patched, &y, threshold, p.lambda, &p.loss).mean(Kind::Float);
        let g = Tensor::run_backward(&[loss], &[&x], false, false).remove(0);
        patch = (x.detach() - g.sign() * size).clamp(0.0, 1.0);
    }
    Ok(super::judge::quantise(&patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed placement draws only the corners, row then column, as before scale and
    /// brightness existed: digit runs replay.
    #[test]
    fn a_fixed_placement_draws_the_corners_alone() {
        let placed = placements(&mut WyRand::new(5), 4, 3, 28, 20, &Placement::FIXED);
        let mut rng = WyRand::new(5);
        for p in placed {
            let row = (rng.next_u64() % 26) as i64;
            let col = (rng.next_u64() % 18) as i64;
            assert_eq!(
                p,
                Placed {
                    row,
                    col,
                    side: 3,
                    gain: 1.0
                }
            );
        }
    }

    /// Against a naive reference: every pixel inside the placed square is the constant
    /// patch times its gain (clamped), every pixel outside is the frame's own.
    #[test]
    fn a_scaled_lit_patch_covers_exactly_its_square() {
        let how = Placement {
            scale: [0.5, 2.0],
            brightness: [0.5, 3.0],
        };
        let frames = Tensor::rand([6, 3, 17, 13], (Kind::Float, tch::Device::Cpu));
        let patch = Tensor::full([3, 4, 4], 0.4, (Kind::Float, tch::Device::Cpu));
        let placed = placements(&mut WyRand::new(9), 6, 4, 17, 13, &how);
        assert!(placed.iter().any(|p| p.side != 4) && placed.iter().any(|p| p.gain != 1.0));
        let out = apply(&frames, &patch, &placed);
        for (i, p) in placed.iter().enumerate() {
            assert!((2..=8).contains(&p.side) && (0.5..=3.0).contains(&p.gain));
            assert!(p.row + p.side <= 17 && p.col + p.side <= 13);
            for c in 0..3 {
                for y in 0..17 {
                    for x in 0..13 {
                        let inside = (p.row..p.row + p.side).contains(&y)
                            && (p.col..p.col + p.side).contains(&x);
                        let want = if inside {
                            (0.4 * p.gain).min(1.0)
                        } else {
                            frames.double_value(&[i as i64, c, y, x])
                        };
                        let got = out.double_value(&[i as i64, c, y, x]);
                        assert!(
                            (got - want).abs() < 1e-5,
                            "image {i} ({c},{y},{x}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
