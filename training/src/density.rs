//! Feature-space density: one Gaussian per class with a covariance they share, fitted on a
//! network's training-set features (Lee et al. 2018, "Mahalanobis"; Mukhoti et al., DDU).
//! The runtime never fits anything: the fit goes into the ONNX graph as constants
//! (`MnistCnn::add_density`), and the graph gives the frame's log density beside its
//! probabilities.
//!
//! log p(f) = logsumexp_c [log π_c − ½ (f − μ_c)ᵀ Σ⁻¹ (f − μ_c)] − ½ log |Σ| − (d/2) log 2π,
//! in nats, with Σ the pooled within-class covariance plus a ridge. Everything runs in f64;
//! Σ⁻¹ is never formed: with the Cholesky factor Σ = L Lᵀ, the Mahalanobis distance is
//! ‖L⁻¹ (f − μ)‖², and the graph multiplies features by W = L⁻ᵀ (row vectors: f W).

use anyhow::{bail, ensure, Result};

/// The ridge added to the covariance's diagonal, as a share of its mean diagonal: ReLU
/// features have dead units (variance 0), which leave the covariance singular.
pub const RIDGE_SHARE: f64 = 1e-3;

/// A fitted density.
#[derive(Debug, Clone)]
pub struct DensityFit {
    /// Feature width d.
    pub dims: usize,
    /// `[classes][d]` class means.
    pub means: Vec<Vec<f64>>,
    /// `[d × d]` row-major W = L⁻ᵀ: ‖(f − μ) W‖² is the Mahalanobis distance.
    pub whiten: Vec<f64>,
    /// log π_c: each class's share of the fitted features.
    pub log_priors: Vec<f64>,
    /// −½ log |Σ| − (d/2) log 2π.
    pub constant: f64,
    /// The ridge added to Σ's diagonal.
    pub ridge: f64,
    /// Features fitted.
    pub fitted: usize,
}

impl DensityFit {
    /// Fits `features` (`n × dims`, row-major) with `labels` in `0..classes`. Refused: no
    /// features, a label out of range, a class with no feature, values that are not finite,
    /// or a covariance that is not positive definite even with the ridge (all features
    /// equal).
    pub fn fit(
        features: &[f64],
        dims: usize,
        labels: &[i64],
        classes: usize,
    ) -> Result<DensityFit> {
        let n = labels.len();
        ensure!(n > 0 && dims > 0, "no features to fit a density on");
        ensure!(
            features.len() == n * dims,
            "{} feature values for {n} labels of {dims} dims",
            features.len()
        );
        ensure!(
            features.iter().all(|v| v.is_finite()),
            "a feature is not finite: no density can be fitted"
        );
        let mut counts = vec![0usize; classes];
        let mut means = vec![vec![0.0f64; dims]; classes];
        for (row, &label) in features.chunks(dims).zip(labels) {
            let c = usize::try_from(label)
                .ok()
                .filter(|&c| c < classes)
                .ok_or_else(|| anyhow::anyhow!("label {label} is not one of {classes} classes"))?;
            counts[c] += 1;
            for (m, v) in means[c].iter_mut().zip(row) {
                *m += v;
            }
        }
        if let Some(c) = counts.iter().position(|&k| k == 0) {
            bail!("class {c} has no feature: its mean cannot be fitted");
        }
        for (mean, &k) in means.iter_mut().zip(&counts) {
            mean.iter_mut().for_each(|m| *m /= k as f64);
        }
        // Pooled within-class covariance.
        let mut cov = vec![0.0f64; dims * dims];
        let mut centred = vec![0.0f64; dims];
        for (row, &label) in features.chunks(dims).zip(labels) {
            let mean = &means[label as usize];
            for ((c, v), m) in centred.iter_mut().zip(row).zip(mean) {
                *c = v - m;
            }
            for i in 0..dims {
                let ci = centred[i];
                if ci == 0.0 {
                    continue;
                }
                for j in 0..=i {
                    cov[i * dims + j] += ci * centred[j];
                }
            }
        }
        for i in 0..dims {
            for j in 0..=i {
                cov[i * dims + j] /= n as f64;
                cov[j * dims + i] = cov[i * dims + j];
            }
        }
        let mean_diagonal = (0..dims).map(|i| cov[i * dims + i]).sum::<f64>() / dims as f64;
        let ridge = RIDGE_SHARE * mean_diagonal;
        for i in 0..dims {
            cov[i * dims + i] += ridge;
        }
        let l = cholesky(&cov, dims)?;
        let log_det: f64 = 2.0 * (0..dims).map(|i| l[i * dims + i].ln()).sum::<f64>();
        let whiten = inverse_transpose_lower(&l, dims);
        Ok(DensityFit {
            dims,
            means,
            whiten,
            log_priors: counts.iter().map(|&k| (k as f64 / n as f64).ln()).collect(),
            constant: -0.5 * log_det - 0.5 * dims as f64 * (2.0 * std::f64::consts::PI).ln(),
            ridge,
            fitted: n,
        })
    }

    /// The log density of one feature vector, as the graph computes it (in f64): the
    /// reference the exported graph is checked against.
    pub fn log_density(&self, f: &[f64]) -> f64 {
        let d = self.dims;
        let terms: Vec<f64> = self
            .means
            .iter()
            .zip(&self.log_priors)
            .map(|(mean, log_prior)| {
                let distance: f64 = (0..d)
                    .map(|j| {
                        let z: f64 = (0..d)
                            .map(|i| (f[i] - mean[i]) * self.whiten[i * d + j])
                            .sum();
                        z * z
                    })
                    .sum();
                log_prior - 0.5 * distance
            })
            .collect();
        let top = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        top + terms.iter().map(|t| (t - top).exp()).sum::<f64>().ln() + self.constant
    }
}

/// The lower Cholesky factor L of the symmetric `a` (`n × n`): a = L Lᵀ. Refused when `a`
/// is not positive definite.
fn cholesky(a: &[f64], n: usize) -> Result<Vec<f64>> {
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                let d = a[i * n + i] - s;
                ensure!(
                    d > 0.0 && d.is_finite(),
                    "the feature covariance is not positive definite (pivot {i}: {d}): \
                     no density can be fitted"
                );
                l[i * n + i] = d.sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    Ok(l)
}

/// (L⁻¹)ᵀ for a lower-triangular L with a positive diagonal, by forward substitution.
fn inverse_transpose_lower(l: &[f64], n: usize) -> Vec<f64> {
    // inv = L⁻¹, lower triangular; column by column of the identity.
    let mut inv = vec![0.0f64; n * n];
    for col in 0..n {
        for i in col..n {
            let e = if i == col { 1.0 } else { 0.0 };
            let s: f64 = (col..i).map(|k| l[i * n + k] * inv[k * n + col]).sum();
            inv[i * n + col] = (e - s) / l[i * n + i];
        }
    }
    let mut t = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            t[i * n + j] = inv[j * n + i];
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Σ⁻¹ by Gauss–Jordan and |Σ| by elimination: a naive reference, nothing shared with
    /// the Cholesky path.
    fn naive_log_density(fit: &DensityFit, cov: &[f64], f: &[f64]) -> f64 {
        let n = fit.dims;
        let mut a = cov.to_vec();
        let mut inv: Vec<f64> = (0..n * n).map(|k| (k / n == k % n) as u8 as f64).collect();
        let mut log_det = 0.0;
        for c in 0..n {
            let p = (c..n)
                .max_by(|&x, &y| a[x * n + c].abs().total_cmp(&a[y * n + c].abs()))
                .unwrap();
            for k in 0..n {
                a.swap(c * n + k, p * n + k);
                inv.swap(c * n + k, p * n + k);
            }
            let pivot = a[c * n + c];
            log_det += pivot.abs().ln();
            for k in 0..n {
                a[c * n + k] /= pivot;
                inv[c * n + k] /= pivot;
            }
            for r in 0..n {
                if r != c {
                    let factor = a[r * n + c];
                    for k in 0..n {
                        a[r * n + k] -= factor * a[c * n + k];
                        inv[r * n + k] -= factor * inv[c * n + k];
                    }
                }
            }
        }
        let terms: Vec<f64> = fit
            .means
            .iter()
            .zip(&fit.log_priors)
            .map(|(mean, lp)| {
                let d: Vec<f64> = f.iter().zip(mean).map(|(x, m)| x - m).collect();
                let q: f64 = (0..n)
                    .map(|i| (0..n).map(|j| d[i] * inv[i * n + j] * d[j]).sum::<f64>())
                    .sum();
                lp - 0.5 * q
            })
            .collect();
        let top = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = terms.iter().map(|t| (t - top).exp()).sum();
        top + sum.ln() - 0.5 * log_det - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln()
    }

    /// Features from three correlated Gaussians in 4 dims, one unit dead (always 0).
    fn data() -> (Vec<f64>, Vec<i64>) {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut normal = move || {
            let mut u = || {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
            };
            (-2.0 * u().ln()).sqrt() * (2.0 * std::f64::consts::PI * u()).cos()
        };
        let (mut features, mut labels) = (vec![], vec![]);
        for k in 0..600 {
            let c = (k % 3) as i64;
            let (a, b) = (normal(), normal());
            features.extend([c as f64 * 3.0 + a, a * 0.5 + b, c as f64 - b, 0.0]);
            labels.push(c);
        }
        (features, labels)
    }

    #[test]
    fn the_cholesky_density_is_the_naive_one() {
        let (features, labels) = data();
        let fit = DensityFit::fit(&features, 4, &labels, 3).unwrap();
        assert_eq!(fit.fitted, 600);
        // The covariance the fit used, computed again naively, with the same ridge.
        let mut cov = vec![0.0; 16];
        for (row, &c) in features.chunks(4).zip(&labels) {
            let m = &fit.means[c as usize];
            for i in 0..4 {
                for j in 0..4 {
                    cov[i * 4 + j] += (row[i] - m[i]) * (row[j] - m[j]) / 600.0;
                }
            }
        }
        (0..4).for_each(|i| cov[i * 4 + i] += fit.ridge);
        for f in [
            [0.0, 0.0, 0.0, 0.0],
            [3.0, 1.0, 1.0, 0.0],
            [9.0, -4.0, 5.0, 0.3],
        ] {
            let (a, b) = (fit.log_density(&f), naive_log_density(&fit, &cov, &f));
            assert!((a - b).abs() < 1e-9 * (1.0 + b.abs()), "{a} against {b}");
        }
        // Far from every class, or lit on the dead unit: far less dense.
        assert!(
            fit.log_density(&[30.0, 0.0, 0.0, 0.0]) < fit.log_density(&[3.0, 0.0, 1.0, 0.0]) - 10.0
        );
        assert!(
            fit.log_density(&[3.0, 0.0, 1.0, 1.0]) < fit.log_density(&[3.0, 0.0, 1.0, 0.0]) - 10.0
        );
    }

    #[test]
    fn a_fit_that_cannot_be_made_is_refused() {
        let (features, labels) = data();
        let err = |r: Result<DensityFit>| r.unwrap_err().to_string();
        assert!(err(DensityFit::fit(&features, 4, &labels, 4)).contains("class 3 has no feature"));
        assert!(err(DensityFit::fit(&[1.0; 8], 4, &[0, 0], 1)).contains("not positive definite"));
        assert!(err(DensityFit::fit(&[f64::NAN; 4], 4, &[0], 1)).contains("not finite"));
        assert!(err(DensityFit::fit(&features, 4, &[7; 600], 3)).contains("label 7"));
    }
}
