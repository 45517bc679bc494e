//! Matched noise: the negatives each attack is compared against.

use tch::{Kind, Tensor};

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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

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
