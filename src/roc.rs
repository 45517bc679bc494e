//! Detection statistics shared by the runtime (`validate`) and the training crate.

/// The smallest threshold t among `clean_scores` such that at most `fpr` of them are
/// strictly above t (the gate rejects scores *above* its threshold).
///
/// Returns `None` for an empty slice, a NaN score, or `fpr` outside [0, 1].
pub fn threshold_at_fpr(clean_scores: &[f64], fpr: f64) -> Option<f64> {
    if clean_scores.is_empty()
        || !(0.0..=1.0).contains(&fpr)
        || clean_scores.iter().any(|s| s.is_nan())
    {
        return None;
    }
    let mut sorted = clean_scores.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = sorted.len();
    // Allowed false positives: floor(fpr·n). Rejecting the k largest means the threshold is
    // the (n−k)-th smallest value; ties at the threshold are accepted, so the rate can
    // only be lower.
    let allowed = (fpr * n as f64).floor() as usize;
    Some(sorted[n - 1 - allowed.min(n - 1)])
}

/// Fraction of `scores` strictly above `threshold`.
pub fn rate_above(scores: &[f64], threshold: f64) -> f64 {
    if scores.is_empty() {
        return 0.0;
    }
    scores.iter().filter(|&&s| s > threshold).count() as f64 / scores.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn picks_the_quantile() {
        let s: Vec<f64> = (1..=100).map(|i| i as f64).collect();
        assert_eq!(threshold_at_fpr(&s, 0.05), Some(95.0));
        assert_eq!(rate_above(&s, 95.0), 0.05);
        assert_eq!(threshold_at_fpr(&s, 0.0), Some(100.0));
        assert_eq!(threshold_at_fpr(&[], 0.05), None);
        assert_eq!(threshold_at_fpr(&[1.0, f64::NAN], 0.05), None);
    }

    proptest! {
        #[test]
        fn rate_never_exceeds_target(s in prop::collection::vec(0.0f64..1.0, 1..300), fpr in 0.0f64..1.0) {
            let t = threshold_at_fpr(&s, fpr).unwrap();
            prop_assert!(rate_above(&s, t) <= fpr + 1e-12);
        }
    }
}
