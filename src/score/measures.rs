//! Uncertainty measures over T Monte-Carlo softmax samples (Smith & Gal 2018, §3).
//!
//! `probs` is row-major `[T, C]`: row t is p_t, the softmax of sample t. With
//! p̄ = (1/T) Σ_t p_t and H(q) = −Σ_c q_c ln q_c (natural log, 0 ln 0 = 0):
//!
//! | measure              | formula                                        |
//! |----------------------|------------------------------------------------|
//! | predictive entropy   | H(p̄)                                           |
//! | expected entropy     | (1/T) Σ_t H(p_t)                                |
//! | mutual information   | H(p̄) − (1/T) Σ_t H(p_t), clamped at 0          |
//! | softmax variance     | (1/C) Σ_c (1/T) Σ_t (p_tc − p̄_c)²             |
//! | variation ratio      | 1 − (count of the modal argmax_c p_tc) / T      |
//! | max probability      | max_c p̄_c, at the predicted class argmax_c p̄_c |
//!
//! MI is the epistemic part: it is high when samples disagree, which is what marks
//! off-manifold (e.g. adversarial) inputs; predictive entropy also rises on merely ambiguous
//! inputs. MI ≥ 0 by Jensen; the clamp only removes rounding (≤ 1e-12 in f64).
//! Sums run in f64. Nothing here allocates: callers pass a `[C]` scratch slice.

use serde::Serialize;

/// Every measure of one frame's T samples (formulas above).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Measures {
    /// H(p̄).
    pub predictive_entropy: f64,
    /// (1/T) Σ_t H(p_t).
    pub expected_entropy: f64,
    /// Predictive minus expected entropy: what the gate thresholds.
    pub mutual_information: f64,
    /// Mean over classes of the variance over samples.
    pub softmax_variance: f64,
    /// Share of samples whose argmax is not the modal one.
    pub variation_ratio: f64,
    /// max_c p̄_c.
    pub max_probability: f64,
    /// argmax of the mean probabilities p̄ (lowest index on ties).
    pub predicted_class: usize,
}

/// Reads one measure out of [`Measures`].
pub type MeasureOf = fn(&Measures) -> f64;

/// Every measure of [`Measures`] with its name (its key in report lines), in report order:
/// the one list report lines and the training crate's evaluation derive from, so that a new
/// measure cannot be missing from one of them (a test holds it to the struct's fields).
pub const NAMED: [(&str, MeasureOf); 6] = [
    ("predictive_entropy", |m| m.predictive_entropy),
    ("expected_entropy", |m| m.expected_entropy),
    ("mutual_information", |m| m.mutual_information),
    ("softmax_variance", |m| m.softmax_variance),
    ("variation_ratio", |m| m.variation_ratio),
    ("max_probability", |m| m.max_probability),
];

impl Measures {
    /// The measure named `name` in [`NAMED`].
    pub fn by_name(&self, name: &str) -> Option<f64> {
        NAMED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, of)| of(self))
    }
}

/// [`Measures`] as report lines write them: every [`NAMED`] measure, in order (the class is
/// written apart).
pub struct Named<'a>(pub &'a Measures);

impl Serialize for Named<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(NAMED.len()))?;
        for (name, of) in NAMED {
            map.serialize_entry(name, &of(self.0))?;
        }
        map.end()
    }
}

/// Why a probability matrix cannot be scored.
#[derive(Debug, Clone, PartialEq)]
pub enum Unscorable {
    /// `probs.len()` is not T·C, or T or C is zero.
    Shape {
        /// Values given.
        len: usize,
        /// Classes per row.
        classes: usize,
    },
    /// The output has another number of rows than the gate ran (T, or M·T for an ensemble).
    Samples {
        /// Values given.
        len: usize,
        /// Samples asked for.
        samples: usize,
        /// Classes per row.
        classes: usize,
    },
    /// A value is NaN, infinite, or outside [0, 1].
    BadValue {
        /// The sample (row).
        sample: usize,
        /// The class (column).
        class: usize,
        /// The value.
        value: f32,
    },
    /// A row does not sum to 1 (more than `ROW_SUM_TOLERANCE` away).
    NotNormalised {
        /// The sample (row).
        sample: usize,
        /// Its sum.
        sum: f64,
    },
}

impl std::error::Error for Unscorable {}

impl std::fmt::Display for Unscorable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unscorable::Shape { len, classes } => {
                write!(
                    f,
                    "model output has {len} values, not a positive multiple of {classes} classes"
                )
            }
            Unscorable::Samples {
                len,
                samples,
                classes,
            } => write!(
                f,
                "model output has {len} values, not {samples} samples of {classes} classes"
            ),
            Unscorable::BadValue {
                sample,
                class,
                value,
            } => {
                write!(
                    f,
                    "model output is {value} at sample {sample}, class {class}"
                )
            }
            Unscorable::NotNormalised { sample, sum } => {
                write!(f, "model output sample {sample} sums to {sum}, not 1")
            }
        }
    }
}

/// Smallest MI, in nats, that says the samples disagree. Samples that (almost) all agree give
/// MI of float rounding (1.8e-15 on a p = 1e-7 model), not 0: a calibration whose threshold
/// would fall below this floor is refused, and so is a model whose MI stays below it on noise
/// frames (every shipped model gives 0.01 nats or more there).
pub const MI_SIGNAL_FLOOR: f64 = 1e-4;

/// Softmax rows in f32 sum to 1 within a few ulps times C; anything further off is not
/// a probability vector and must not be scored.
pub const ROW_SUM_TOLERANCE: f64 = 1e-3;

fn entropy_term(p: f64) -> f64 {
    if p > 0.0 {
        -p * p.ln()
    } else {
        0.0
    }
}

/// Computes every measure. `scratch` must hold at least C values; its contents are
/// overwritten.
pub fn compute(probs: &[f32], classes: usize, scratch: &mut [f64]) -> Result<Measures, Unscorable> {
    if classes == 0 || probs.is_empty() || !probs.len().is_multiple_of(classes) {
        return Err(Unscorable::Shape {
            len: probs.len(),
            classes,
        });
    }
    assert!(
        scratch.len() >= classes,
        "scratch must hold one value per class"
    );
    let samples = probs.len() / classes;
    let inv_t = 1.0 / samples as f64;
    let mean = &mut scratch[..classes];
    mean.fill(0.0);

    let mut expected_entropy = 0.0;
    for (t, row) in probs.chunks_exact(classes).enumerate() {
        let mut sum = 0.0;
        let mut h = 0.0;
        for (c, &v) in row.iter().enumerate() {
            if !v.is_finite() || !(0.0..=1.0).contains(&v) {
                return Err(Unscorable::BadValue {
                    sample: t,
                    class: c,
                    value: v,
                });
            }
            let v = v as f64;
            sum += v;
            h += entropy_term(v);
            mean[c] += v;
        }
        if (sum - 1.0).abs() > ROW_SUM_TOLERANCE {
            return Err(Unscorable::NotNormalised { sample: t, sum });
        }
        expected_entropy += h;
    }
    expected_entropy *= inv_t;

    let mut predictive_entropy = 0.0;
    let mut predicted_class = 0;
    for c in 0..classes {
        mean[c] *= inv_t;
        predictive_entropy += entropy_term(mean[c]);
        if mean[c] > mean[predicted_class] {
            predicted_class = c;
        }
    }

    let mut variance = 0.0;
    for row in probs.chunks_exact(classes) {
        for (c, &v) in row.iter().enumerate() {
            let d = v as f64 - mean[c];
            variance += d * d;
        }
    }
    let softmax_variance = variance * inv_t / classes as f64;

    // Variation ratio: count, for each class, the samples whose argmax it is. Reuses
    // `scratch` after p̄ is no longer needed.
    let max_probability = mean[predicted_class];
    let votes = &mut scratch[..classes];
    votes.fill(0.0);
    for row in probs.chunks_exact(classes) {
        votes[argmax(row)] += 1.0;
    }
    let modal = votes.iter().cloned().fold(0.0, f64::max);
    let variation_ratio = 1.0 - modal * inv_t;

    Ok(Measures {
        predictive_entropy,
        expected_entropy,
        // Clamp rounding below 0 only: `f64::max` would also turn a NaN into 0 (an accept).
        mutual_information: {
            let mi = predictive_entropy - expected_entropy;
            if mi < 0.0 {
                0.0
            } else {
                mi
            }
        },
        softmax_variance,
        variation_ratio,
        max_probability,
        predicted_class,
    })
}

/// Index of the largest value, lowest index on ties.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_measure_is_named_once_and_read_from_its_own_field() {
        let m = Measures {
            predictive_entropy: 1.0,
            expected_entropy: 2.0,
            mutual_information: 3.0,
            softmax_variance: 4.0,
            variation_ratio: 5.0,
            max_probability: 6.0,
            predicted_class: 7,
        };
        // The struct's own fields (serde's names), less the class, are NAMED's, each read
        // from the field of its name.
        let fields = serde_json::to_value(m).unwrap();
        let fields = fields.as_object().unwrap();
        assert_eq!(
            fields.len() - 1,
            NAMED.len(),
            "a measure is missing from NAMED"
        );
        for (name, of) in NAMED {
            assert_eq!(fields[name].as_f64(), Some(of(&m)), "{name}");
            assert_eq!(m.by_name(name), Some(of(&m)));
        }
        let named = serde_json::to_string(&Named(&m)).unwrap();
        assert_eq!(
            named,
            "{\"predictive_entropy\":1.0,\"expected_entropy\":2.0,\"mutual_information\":3.0,\
             \"softmax_variance\":4.0,\"variation_ratio\":5.0,\"max_probability\":6.0}"
        );
    }
    use proptest::prelude::*;

    /// Straightforward float64 reference, written independently of `compute`.
    fn reference(probs: &[Vec<f64>]) -> (f64, f64, f64, f64, f64) {
        let t = probs.len() as f64;
        let c = probs[0].len();
        let h = |q: &[f64]| -> f64 { q.iter().filter(|&&x| x > 0.0).map(|&x| -x * x.ln()).sum() };
        let mean: Vec<f64> = (0..c)
            .map(|k| probs.iter().map(|p| p[k]).sum::<f64>() / t)
            .collect();
        let pe = h(&mean);
        let ee = probs.iter().map(|p| h(p)).sum::<f64>() / t;
        let var = (0..c)
            .map(|k| probs.iter().map(|p| (p[k] - mean[k]).powi(2)).sum::<f64>() / t)
            .sum::<f64>()
            / c as f64;
        let mut counts = vec![0usize; c];
        for p in probs {
            let mut best = 0;
            for k in 0..c {
                if p[k] > p[best] {
                    best = k;
                }
            }
            counts[best] += 1;
        }
        let vr = 1.0 - *counts.iter().max().unwrap() as f64 / t;
        (pe, ee, pe - ee, var, vr)
    }

    fn run(probs: &[f32], classes: usize) -> Measures {
        let mut scratch = vec![0.0; classes];
        compute(probs, classes, &mut scratch).unwrap()
    }

    #[test]
    fn hand_computed_two_samples_two_classes() {
        // p1 = (1, 0), p2 = (0, 1): p̄ = (½, ½), H(p̄) = ln 2, each H(p_t) = 0, MI = ln 2.
        // variance per class = ¼, variation ratio = 1 − 1/2 (tie → class 0 wins once each).
        let m = run(&[1.0, 0.0, 0.0, 1.0], 2);
        let ln2 = std::f64::consts::LN_2;
        assert!((m.predictive_entropy - ln2).abs() < 1e-12);
        assert_eq!(m.expected_entropy, 0.0);
        assert!((m.mutual_information - ln2).abs() < 1e-12);
        assert!((m.softmax_variance - 0.25).abs() < 1e-12);
        assert!((m.variation_ratio - 0.5).abs() < 1e-12);
        assert_eq!(m.predicted_class, 0);
        assert!((m.max_probability - 0.5).abs() < 1e-12);
    }

    #[test]
    fn hand_computed_agreeing_uncertain_samples() {
        // Both samples (0.5, 0.25, 0.25): H = 1.5 ln 2 for each and for p̄, so MI = 0.
        let m = run(&[0.5, 0.25, 0.25, 0.5, 0.25, 0.25], 3);
        let h = 1.5 * std::f64::consts::LN_2;
        assert!((m.predictive_entropy - h).abs() < 1e-12);
        assert!((m.expected_entropy - h).abs() < 1e-12);
        assert!(m.mutual_information.abs() < 1e-12);
        assert_eq!(m.softmax_variance, 0.0);
        assert_eq!(m.variation_ratio, 0.0);
    }

    #[test]
    fn unscorable_outputs_are_named() {
        let mut s = [0.0; 2];
        assert!(matches!(
            compute(&[f32::NAN, 1.0], 2, &mut s),
            Err(Unscorable::BadValue { .. })
        ));
        assert!(matches!(
            compute(&[f32::INFINITY, 0.0], 2, &mut s),
            Err(Unscorable::BadValue { .. })
        ));
        assert!(matches!(
            compute(&[0.7, 0.7], 2, &mut s),
            Err(Unscorable::NotNormalised { .. })
        ));
        assert!(matches!(
            compute(&[0.5, 0.5, 1.0], 2, &mut s),
            Err(Unscorable::Shape { .. })
        ));
        assert!(matches!(
            compute(&[], 2, &mut s),
            Err(Unscorable::Shape { .. })
        ));
    }

    /// T×C probability rows from raw logits (softmax in f64, stored as f32).
    fn softmax_rows(logits: &[Vec<f64>]) -> Vec<f32> {
        let mut out = vec![];
        for row in logits {
            let max = row.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = row.iter().map(|x| (x - max).exp()).collect();
            let s: f64 = e.iter().sum();
            out.extend(e.iter().map(|x| (x / s) as f32));
        }
        out
    }

    fn logits() -> impl Strategy<Value = Vec<Vec<f64>>> {
        (1usize..40, 2usize..12).prop_flat_map(|(t, c)| {
            prop::collection::vec(prop::collection::vec(-20.0f64..20.0, c), t)
        })
    }

    proptest! {
        #[test]
        fn matches_float64_reference_and_bounds(l in logits()) {
            let classes = l[0].len();
            let probs = softmax_rows(&l);
            let m = run(&probs, classes);
            let rows: Vec<Vec<f64>> =
                probs.chunks(classes).map(|r| r.iter().map(|&v| v as f64).collect()).collect();
            let (pe, ee, mi, var, vr) = reference(&rows);
            prop_assert!((m.predictive_entropy - pe).abs() < 1e-9);
            prop_assert!((m.expected_entropy - ee).abs() < 1e-9);
            prop_assert!((m.mutual_information - mi.max(0.0)).abs() < 1e-9);
            prop_assert!((m.softmax_variance - var).abs() < 1e-12);
            prop_assert!((m.variation_ratio - vr).abs() < 1e-12);
            // 0 ≤ MI ≤ H(p̄) ≤ ln C (ln C with slack for f32 rows not summing exactly to 1).
            prop_assert!(m.mutual_information >= 0.0);
            prop_assert!(m.mutual_information <= m.predictive_entropy + 1e-12);
            prop_assert!(m.predictive_entropy <= (classes as f64).ln() + 1e-6);
        }

        #[test]
        fn agreeing_samples_and_single_sample_have_zero_mi(row in prop::collection::vec(-20.0f64..20.0, 2..12), t in 1usize..30) {
            let classes = row.len();
            let probs = softmax_rows(&vec![row; t]);
            let m = run(&probs, classes);
            prop_assert!(m.mutual_information < 1e-9);
            prop_assert_eq!(m.variation_ratio, 0.0);
            let one = run(&probs[..classes], classes);
            prop_assert!(one.mutual_information < 1e-12);
        }
    }
}
