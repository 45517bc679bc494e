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

/// The 95 % Wilson score interval of a rate of `k` in `n` (`(0, 1)` for `n` = 0).
pub fn wilson_interval(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    const Z: f64 = 1.959_963_984_540_054;
    let (n, p) = (n as f64, k as f64 / n as f64);
    let z2 = Z * Z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Every score labelled (true: positive), sorted ascending; `None` if a score is NaN.
fn labelled_ascending(negatives: &[f64], positives: &[f64]) -> Option<Vec<(f64, bool)>> {
    let mut all: Vec<(f64, bool)> = negatives
        .iter()
        .map(|&s| (s, false))
        .chain(positives.iter().map(|&s| (s, true)))
        .collect();
    if all.iter().any(|(s, _)| s.is_nan()) {
        return None;
    }
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    Some(all)
}

/// Area under the ROC curve of `positives` (should score high) against `negatives`:
/// the probability that a random positive outscores a random negative, ties counting one
/// half. Equals scikit-learn's `roc_auc_score` (trapezoidal ROC). `None` if either side is
/// empty or a score is NaN.
pub fn roc_auc(negatives: &[f64], positives: &[f64]) -> Option<f64> {
    if negatives.is_empty() || positives.is_empty() {
        return None;
    }
    let all = labelled_ascending(negatives, positives)?;
    // Mann–Whitney: sum of the (tie-averaged, 1-based) ranks of the positives.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let mean_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += mean_rank * all[i..j].iter().filter(|(_, p)| *p).count() as f64;
        i = j;
    }
    let (np, nn) = (positives.len() as f64, negatives.len() as f64);
    Some((rank_sum - np * (np + 1.0) / 2.0) / (np * nn))
}

/// 95 % percentile-bootstrap interval of [`roc_auc`] over `reps` resamples, resampling
/// *groups* rather than scores: frames made from one image (its camera-like variants, its
/// adversarial and noise versions) share a group and are drawn together, so correlated frames
/// do not narrow the interval. Each score comes with its group. `None` if either side is
/// empty, a score is NaN, or `reps` is 0. Resamples that leave a side empty are skipped.
pub fn bootstrap_auc_interval(
    negatives: &[(f64, usize)],
    positives: &[(f64, usize)],
    reps: usize,
    seed: u64,
) -> Option<(f64, f64)> {
    let groups = Groups::of(negatives, positives);
    let (neg_idx, pos_idx) = (groups.indices(negatives), groups.indices(positives));
    let (mut neg, mut pos) = (vec![], vec![]);
    groups.bootstrap(reps, seed, |times| {
        draw(negatives, &neg_idx, times, &mut neg);
        draw(positives, &pos_idx, times, &mut pos);
        auc_of_draw(&neg, &pos)
    })
}

/// 95 % percentile-bootstrap interval of AUC(a) − AUC(b): two measures scored on the same
/// frames (`a_*` and `b_*` hold the same frames in the same order, with the same groups),
/// both recomputed on each resample of the groups — a paired comparison, so an interval that
/// excludes 0 says the ordering of the two measures holds beyond resampling the images.
/// `None` as for [`bootstrap_auc_interval`], or if the two measures' frames differ in number
/// or groups.
pub fn bootstrap_auc_difference_interval(
    a_negatives: &[(f64, usize)],
    a_positives: &[(f64, usize)],
    b_negatives: &[(f64, usize)],
    b_positives: &[(f64, usize)],
    reps: usize,
    seed: u64,
) -> Option<(f64, f64)> {
    let same_frames = |x: &[(f64, usize)], y: &[(f64, usize)]| {
        x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.1 == q.1)
    };
    if !same_frames(a_negatives, b_negatives) || !same_frames(a_positives, b_positives) {
        return None;
    }
    let groups = Groups::of(a_negatives, a_positives);
    let (neg_idx, pos_idx) = (groups.indices(a_negatives), groups.indices(a_positives));
    let (mut neg, mut pos) = (vec![], vec![]);
    groups.bootstrap(reps, seed, |times| {
        draw(a_negatives, &neg_idx, times, &mut neg);
        draw(a_positives, &pos_idx, times, &mut pos);
        let a = auc_of_draw(&neg, &pos)?;
        draw(b_negatives, &neg_idx, times, &mut neg);
        draw(b_positives, &pos_idx, times, &mut pos);
        let b = auc_of_draw(&neg, &pos)?;
        Some(a.zip(b).map(|(a, b)| a - b))
    })
}

/// The distinct groups of a set of scored frames.
struct Groups(Vec<usize>);

impl Groups {
    fn of(negatives: &[(f64, usize)], positives: &[(f64, usize)]) -> Groups {
        let mut groups: Vec<usize> = negatives.iter().chain(positives).map(|&(_, g)| g).collect();
        groups.sort_unstable();
        groups.dedup();
        Groups(groups)
    }

    /// Each frame's index into the groups.
    fn indices(&self, scores: &[(f64, usize)]) -> Vec<usize> {
        scores
            .iter()
            .map(|&(_, g)| self.0.binary_search(&g).expect("a listed group"))
            .collect()
    }

    /// The 2.5 and 97.5 percentiles of `stat` over `reps` resamples of the groups with
    /// replacement (`stat` gets how often each group was drawn; it returns `None` for a NaN,
    /// which ends the bootstrap, and `Some(None)` for a resample to skip).
    fn bootstrap(
        &self,
        reps: usize,
        seed: u64,
        mut stat: impl FnMut(&[usize]) -> Option<Option<f64>>,
    ) -> Option<(f64, f64)> {
        if reps == 0 || self.0.is_empty() {
            return None;
        }
        let n = self.0.len();
        let mut rng = crate::run::rng::WyRand::new(seed);
        let mut times = vec![0usize; n];
        let mut values = Vec::with_capacity(reps);
        for _ in 0..reps {
            times.iter_mut().for_each(|t| *t = 0);
            for _ in 0..n {
                times[(rng.next_u64() % n as u64) as usize] += 1;
            }
            if let Some(v) = stat(&times)? {
                values.push(v);
            }
        }
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| {
            values[((q * (values.len() - 1) as f64).round() as usize).min(values.len() - 1)]
        };
        Some((at(0.025), at(0.975)))
    }
}

/// The resample: each frame repeated as often as its group was drawn.
fn draw(scores: &[(f64, usize)], idx: &[usize], times: &[usize], out: &mut Vec<f64>) {
    out.clear();
    for (&(v, _), &g) in scores.iter().zip(idx) {
        out.extend(std::iter::repeat_n(v, times[g]));
    }
}

/// A resample's AUC: `Some(None)` when a side came out empty (skip it), `None` for a NaN.
fn auc_of_draw(neg: &[f64], pos: &[f64]) -> Option<Option<f64>> {
    if neg.is_empty() || pos.is_empty() {
        return Some(None);
    }
    roc_auc(neg, pos).map(Some)
}

/// Cumulative (true positives, false positives) rejected at each distinct score threshold,
/// highest threshold first; `None` if a score is NaN.
fn counts_descending(negatives: &[f64], positives: &[f64]) -> Option<Vec<(f64, f64)>> {
    let mut all = labelled_ascending(negatives, positives)?;
    all.reverse();
    let (mut tp, mut fp, mut counts) = (0.0, 0.0, vec![]);
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            if all[j].1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            j += 1;
        }
        counts.push((tp, fp));
        i = j;
    }
    Some(counts)
}

/// The ROC curve as (false-positive rate, true-positive rate) points, one per distinct score
/// threshold, from (0, 0) to (1, 1): scikit-learn's `roc_curve(drop_intermediate=False)`.
/// Its trapezoidal area is [`roc_auc`]. `None` if either side is empty or a score is NaN.
pub fn roc_curve(negatives: &[f64], positives: &[f64]) -> Option<Vec<(f64, f64)>> {
    if negatives.is_empty() || positives.is_empty() {
        return None;
    }
    let (nn, np) = (negatives.len() as f64, positives.len() as f64);
    let counts = counts_descending(negatives, positives)?;
    Some(
        std::iter::once((0.0, 0.0))
            .chain(counts.into_iter().map(|(tp, fp)| (fp / nn, tp / np)))
            .collect(),
    )
}

/// The precision–recall curve as (recall, precision) points, one per distinct score
/// threshold, highest threshold first. `None` if there are no positives or a score is NaN.
pub fn pr_curve(negatives: &[f64], positives: &[f64]) -> Option<Vec<(f64, f64)>> {
    if positives.is_empty() {
        return None;
    }
    let np = positives.len() as f64;
    let counts = counts_descending(negatives, positives)?;
    Some(
        counts
            .into_iter()
            .map(|(tp, fp)| (tp / np, tp / (tp + fp)))
            .collect(),
    )
}

/// Average precision as scikit-learn's `average_precision_score`: Σ (Rₙ − Rₙ₋₁) Pₙ over
/// the points of [`pr_curve`], without interpolation.
pub fn average_precision(negatives: &[f64], positives: &[f64]) -> Option<f64> {
    let curve = pr_curve(negatives, positives)?;
    let mut last_recall = 0.0;
    let mut ap = 0.0;
    for (recall, precision) in curve {
        ap += (recall - last_recall) * precision;
        last_recall = recall;
    }
    Some(ap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_interval_brackets_the_auc_and_widens_with_grouping() {
        // 40 negatives and 40 positives, overlapping: AUC well inside (0, 1).
        let neg: Vec<f64> = (0..40).map(|i| i as f64).collect();
        let pos: Vec<f64> = (0..40).map(|i| i as f64 + 15.5).collect();
        let auc = roc_auc(&neg, &pos).unwrap();
        let own = |v: &[f64], off: usize| -> Vec<(f64, usize)> {
            v.iter().enumerate().map(|(i, &x)| (x, i + off)).collect()
        };
        let (lo, hi) = bootstrap_auc_interval(&own(&neg, 0), &own(&pos, 40), 2000, 1).unwrap();
        assert!(lo < auc && auc < hi, "{lo} {auc} {hi}");
        assert!(hi - lo > 0.05 && hi - lo < 0.4, "{lo} {hi}");
        // The same scores in 8 groups of 10 (5 negative, 5 positive groups): fewer independent
        // units, a wider interval.
        let grouped = |v: &[f64], off: usize| -> Vec<(f64, usize)> {
            v.iter()
                .enumerate()
                .map(|(i, &x)| (x, i / 10 + off))
                .collect()
        };
        let (glo, ghi) =
            bootstrap_auc_interval(&grouped(&neg, 0), &grouped(&pos, 4), 2000, 1).unwrap();
        assert!(ghi - glo > hi - lo, "grouped {glo}–{ghi} vs {lo}–{hi}");
        // Same seed, same interval; no resamples, no interval.
        assert_eq!(
            bootstrap_auc_interval(&own(&neg, 0), &own(&pos, 40), 2000, 1),
            Some((lo, hi))
        );
        assert_eq!(
            bootstrap_auc_interval(&own(&neg, 0), &own(&pos, 40), 0, 1),
            None
        );
    }

    #[test]
    fn paired_difference_interval_orders_two_measures() {
        let own = |v: &[f64], off: usize| -> Vec<(f64, usize)> {
            v.iter().enumerate().map(|(i, &x)| (x, i + off)).collect()
        };
        // Measure a separates the same 40 + 40 frames well, measure b barely.
        let a_neg: Vec<f64> = (0..40).map(|i| i as f64).collect();
        let a_pos: Vec<f64> = (0..40).map(|i| i as f64 + 30.5).collect();
        let b_neg: Vec<f64> = (0..40).map(|i| ((i * 7) % 40) as f64).collect();
        let b_pos: Vec<f64> = (0..40).map(|i| ((i * 11) % 40) as f64 + 2.5).collect();
        let diff = roc_auc(&a_neg, &a_pos).unwrap() - roc_auc(&b_neg, &b_pos).unwrap();
        let (lo, hi) = bootstrap_auc_difference_interval(
            &own(&a_neg, 0),
            &own(&a_pos, 40),
            &own(&b_neg, 0),
            &own(&b_pos, 40),
            2000,
            1,
        )
        .unwrap();
        assert!(0.0 < lo && lo < diff && diff < hi, "{lo} {diff} {hi}");
        // A measure against itself: exactly 0 on every resample.
        assert_eq!(
            bootstrap_auc_difference_interval(
                &own(&a_neg, 0),
                &own(&a_pos, 40),
                &own(&a_neg, 0),
                &own(&a_pos, 40),
                500,
                1
            ),
            Some((0.0, 0.0))
        );
        // Not the same frames: no interval.
        assert_eq!(
            bootstrap_auc_difference_interval(
                &own(&a_neg, 0),
                &own(&a_pos, 40),
                &own(&b_neg, 1),
                &own(&b_pos, 40),
                500,
                1
            ),
            None
        );
    }
    #[test]
    fn wilson_interval_matches_the_textbook() {
        // 5 of 100: (0.0215, 0.1118) (Wilson 1927; e.g. statsmodels proportion_confint,
        // method="wilson").
        let (lo, hi) = wilson_interval(5, 100);
        assert!(
            (lo - 0.02154).abs() < 1e-4 && (hi - 0.11175).abs() < 1e-4,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson_interval(0, 20);
        assert!(lo.abs() < 1e-12 && (hi - 0.16113).abs() < 1e-4, "{lo} {hi}");
        assert_eq!(wilson_interval(0, 0), (0.0, 1.0));
    }

    use proptest::prelude::*;

    #[test]
    fn matches_scikit_learn_on_known_cases() {
        // scikit-learn's documented example: y = [0, 0, 1, 1], scores = [0.1, 0.4, 0.35, 0.8]
        // gives roc_auc_score 0.75 and average_precision_score 0.8333.
        let (neg, pos) = ([0.1, 0.4], [0.35, 0.8]);
        assert!((roc_auc(&neg, &pos).unwrap() - 0.75).abs() < 1e-12);
        assert!((average_precision(&neg, &pos).unwrap() - 5.0 / 6.0).abs() < 1e-12);
        // All tied: AUC ½; AP = precision at the single threshold = ½.
        assert_eq!(roc_auc(&[1.0, 1.0], &[1.0, 1.0]), Some(0.5));
        assert_eq!(average_precision(&[1.0, 1.0], &[1.0, 1.0]), Some(0.5));
        // Perfect and inverted separation.
        assert_eq!(roc_auc(&[0.0, 0.1], &[0.5, 0.9]), Some(1.0));
        assert_eq!(roc_auc(&[0.5, 0.9], &[0.0, 0.1]), Some(0.0));
        assert_eq!(average_precision(&[0.0, 0.1], &[0.5, 0.9]), Some(1.0));
        // y = [1, 0, 1, 0, 1], s = [0.9, 0.8, 0.8, 0.3, 0.1]: one tie across classes.
        // Pairs: (0.9 beats both), (0.8 ties one, beats one), (0.1 beats none) → 3.5/6.
        assert!((roc_auc(&[0.8, 0.3], &[0.9, 0.8, 0.1]).unwrap() - 3.5 / 6.0).abs() < 1e-12);
        // AP: thresholds 0.9 (R=1/3, P=1), 0.8 (R=2/3, P=2/3), 0.3 (R=2/3), 0.1 (R=1, P=3/5).
        let want = 1.0 / 3.0 + (1.0 / 3.0) * (2.0 / 3.0) + (1.0 / 3.0) * 0.6;
        assert!((average_precision(&[0.8, 0.3], &[0.9, 0.8, 0.1]).unwrap() - want).abs() < 1e-12);
        // The same example's curves, as scikit-learn's roc_curve / precision_recall_curve list them.
        let roc = roc_curve(&[0.1, 0.4], &[0.35, 0.8]).unwrap();
        assert_eq!(
            roc,
            vec![(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
        let pr = pr_curve(&[0.1, 0.4], &[0.35, 0.8]).unwrap();
        assert_eq!(
            pr,
            vec![(0.5, 1.0), (0.5, 0.5), (1.0, 2.0 / 3.0), (1.0, 0.5)]
        );
        assert_eq!(roc_auc(&[], &[1.0]), None);
        assert_eq!(roc_auc(&[f64::NAN], &[1.0]), None);
    }

    /// Naive O(n·m) pair count, the definition itself.
    fn auc_by_pairs(neg: &[f64], pos: &[f64]) -> f64 {
        let mut wins = 0.0;
        for &p in pos {
            for &n in neg {
                wins += if p > n {
                    1.0
                } else if p == n {
                    0.5
                } else {
                    0.0
                };
            }
        }
        wins / (pos.len() * neg.len()) as f64
    }

    proptest! {
        #[test]
        fn auc_equals_the_pair_count(neg in prop::collection::vec(0u8..20, 1..60), pos in prop::collection::vec(0u8..20, 1..60)) {
            // Small integer scores force many ties.
            let neg: Vec<f64> = neg.into_iter().map(f64::from).collect();
            let pos: Vec<f64> = pos.into_iter().map(f64::from).collect();
            prop_assert!((roc_auc(&neg, &pos).unwrap() - auc_by_pairs(&neg, &pos)).abs() < 1e-12);
            let ap = average_precision(&neg, &pos).unwrap();
            prop_assert!((0.0..=1.0 + 1e-12).contains(&ap));
        }

        #[test]
        fn roc_curve_area_is_the_auc(neg in prop::collection::vec(0u8..20, 1..60), pos in prop::collection::vec(0u8..20, 1..60)) {
            let neg: Vec<f64> = neg.into_iter().map(f64::from).collect();
            let pos: Vec<f64> = pos.into_iter().map(f64::from).collect();
            let curve = roc_curve(&neg, &pos).unwrap();
            prop_assert_eq!(curve[0], (0.0, 0.0));
            prop_assert_eq!(*curve.last().unwrap(), (1.0, 1.0));
            let area: f64 = curve.windows(2).map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0).sum();
            prop_assert!((area - auc_by_pairs(&neg, &pos)).abs() < 1e-12);
            // Both coordinates only grow as the threshold falls.
            prop_assert!(curve.windows(2).all(|w| w[1].0 >= w[0].0 && w[1].1 >= w[0].1));
        }
    }

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
