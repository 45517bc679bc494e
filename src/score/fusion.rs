//! Several signals, one decision: each signal's value becomes its tail probability among the
//! camera's own clean frames (how rare a clean frame at least this extreme is), and the tail
//! probabilities combine into one statistic that a single level cuts.
//!
//! Tail probabilities put signals of any scale and direction on one footing — MI in nats,
//! contrast in gray levels, low sharpness as suspicious as high MI — and need no model of
//! their clean distribution: the calibration frames are the model. Two combinations
//! ([`Fusion`]): Bonferroni's minimum (one signal far out is enough) and Fisher's (several
//! signals each a little out add up).

/// Which tail of a signal is suspicious.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tail {
    /// High values (MI, entropy, noise likeness, clipped share).
    High,
    /// Low values (contrast, sharpness, density).
    Low,
}

/// One signal's clean-frame values, sorted, and the tail that is suspicious.
#[derive(Debug, Clone, PartialEq)]
pub struct TailTable {
    sorted: Vec<f64>,
    tail: Tail,
}

/// A calibration that cannot make a table: no finite clean value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCleanValues;

impl TailTable {
    /// The table of `clean` values (non-finite ones are refused: a clean frame whose signal
    /// cannot be computed says nothing about the signal's clean range).
    pub fn new(clean: &[f64], tail: Tail) -> Result<TailTable, NoCleanValues> {
        if clean.is_empty() || clean.iter().any(|v| !v.is_finite()) {
            return Err(NoCleanValues);
        }
        let mut sorted = clean.to_vec();
        sorted.sort_by(f64::total_cmp);
        Ok(TailTable { sorted, tail })
    }

    /// Clean frames behind the table.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Always false: a table holds at least one value.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The tail probability of `x`: (1 + clean values at least as extreme) / (n + 1), in
    /// (0, 1] — the conformal p-value, exact for a frame exchangeable with the clean ones.
    /// A value that is not a number is as extreme as can be (fail closed): 1 / (n + 1).
    pub fn p_value(&self, x: f64) -> f64 {
        let n = self.sorted.len();
        if x.is_nan() {
            return 1.0 / (n + 1) as f64;
        }
        let as_extreme = match self.tail {
            // Values ≥ x: all after the first ≥ x.
            Tail::High => n - self.sorted.partition_point(|&v| v < x),
            // Values ≤ x.
            Tail::Low => self.sorted.partition_point(|&v| v <= x),
        };
        (1 + as_extreme) as f64 / (n + 1) as f64
    }
}

/// How tail probabilities combine. The statistic is itself a probability-like number in
/// (0, 1]: small is suspicious.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// min(1, k × the smallest p): rejects when any one signal is far out.
    Bonferroni,
    /// The χ² (2k degrees of freedom) survival of −2 Σ ln p: rejects when the signals
    /// together are out, each maybe only a little.
    Fisher,
}

impl Fusion {
    /// The combined statistic of `p` (each in (0, 1]); an empty list is 1 (nothing
    /// suspicious).
    pub fn combine(self, p: &[f64]) -> f64 {
        if p.is_empty() {
            return 1.0;
        }
        match self {
            Fusion::Bonferroni => {
                let min = p.iter().cloned().fold(f64::INFINITY, f64::min);
                (min * p.len() as f64).min(1.0)
            }
            Fusion::Fisher => {
                let x = -2.0 * p.iter().map(|v| v.ln()).sum::<f64>();
                chi2_survival_even(x, p.len())
            }
        }
    }
}

/// P(χ²(2k) ≥ x) for x ≥ 0: e^{-x/2} Σ_{i<k} (x/2)^i / i! (closed form for even degrees of
/// freedom), summed in a way that neither overflows nor underflows for the k and x here.
pub fn chi2_survival_even(x: f64, k: usize) -> f64 {
    if x.is_nan() {
        return 0.0;
    }
    let half = (x / 2.0).max(0.0);
    let (mut term, mut sum) = (1.0f64, 1.0f64);
    for i in 1..k {
        term *= half / i as f64;
        sum += term;
    }
    ((-half).exp() * sum).min(1.0)
}

/// The level that rejects at most `fpr` of `clean` statistics: frames whose statistic is
/// below it are rejected. Chosen as the largest level that keeps rejected clean frames
/// ≤ ⌊fpr × n⌋ (ties at a level all fall on the accepted side).
pub fn level_for_fpr(clean: &[f64], fpr: f64) -> Option<f64> {
    if clean.is_empty() || !(0.0..1.0).contains(&fpr) || clean.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut sorted = clean.to_vec();
    sorted.sort_by(f64::total_cmp);
    let allowed = (fpr * sorted.len() as f64).floor() as usize;
    // Rejected: statistic < level. Level = sorted[allowed] rejects exactly those before it
    // that are strictly smaller: at most `allowed`.
    Some(sorted[allowed])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p_values_count_the_clean_values_at_least_as_extreme() {
        let t = TailTable::new(&[3.0, 1.0, 2.0, 2.0], Tail::High).unwrap();
        assert_eq!(t.p_value(10.0), 1.0 / 5.0);
        assert_eq!(t.p_value(3.0), 2.0 / 5.0);
        assert_eq!(t.p_value(2.0), 4.0 / 5.0);
        assert_eq!(t.p_value(-1.0), 1.0);
        let low = TailTable::new(&[3.0, 1.0, 2.0, 2.0], Tail::Low).unwrap();
        assert_eq!(low.p_value(0.0), 1.0 / 5.0);
        assert_eq!(low.p_value(2.0), 4.0 / 5.0);
        assert_eq!(low.p_value(9.0), 1.0);
        // Not a number: as extreme as can be, whichever the tail.
        assert_eq!(t.p_value(f64::NAN), 1.0 / 5.0);
        assert_eq!(low.p_value(f64::NAN), 1.0 / 5.0);
        assert_eq!(TailTable::new(&[], Tail::High), Err(NoCleanValues));
        assert_eq!(
            TailTable::new(&[1.0, f64::NAN], Tail::Low),
            Err(NoCleanValues)
        );
    }

    /// Exchangeable frames get uniform p-values: a held-out frame's p is ≤ α with
    /// probability ≤ α — here averaged over 50 calibration sets of 199 and 200 held-out
    /// frames each, from one xorshift stream (the share is within ±0.02: about 3.5 standard
    /// errors at α = 0.2).
    #[test]
    fn held_out_p_values_are_valid() {
        let mut s = 0x9E3779B97F4A7C15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        for alpha in [0.01, 0.05, 0.2] {
            let mut hits = 0usize;
            for _ in 0..50 {
                let cal: Vec<f64> = (0..199).map(|_| next()).collect();
                let t = TailTable::new(&cal, Tail::High).unwrap();
                hits += (0..200).filter(|_| t.p_value(next()) <= alpha).count();
            }
            let share = hits as f64 / 10_000.0;
            assert!((share - alpha).abs() < 0.02, "α {alpha}: {share}");
        }
    }

    #[test]
    fn chi2_survival_matches_known_values() {
        // k = 1: exactly e^{-x/2}.
        for x in [0.0, 0.5, 3.0, 40.0] {
            assert!((chi2_survival_even(x, 1) - (-x / 2.0f64).exp()).abs() < 1e-15);
        }
        // Table values: χ²(4) 95th percentile 9.4877, χ²(10) 99th percentile 23.2093.
        assert!((chi2_survival_even(9.4877, 2) - 0.05).abs() < 1e-4);
        assert!((chi2_survival_even(23.2093, 5) - 0.01).abs() < 1e-4);
        assert_eq!(chi2_survival_even(0.0, 6), 1.0);
        assert_eq!(chi2_survival_even(f64::NAN, 2), 0.0);
    }

    #[test]
    fn fusions_combine_as_defined() {
        assert_eq!(Fusion::Bonferroni.combine(&[0.2, 0.01, 0.5]), 0.03);
        assert_eq!(Fusion::Bonferroni.combine(&[0.9, 0.8]), 1.0);
        // Fisher of one p is p itself.
        assert!((Fusion::Fisher.combine(&[0.03]) - 0.03).abs() < 1e-12);
        // Two signals each at 0.05: Fisher calls it rarer than either; Bonferroni does not.
        assert!(Fusion::Fisher.combine(&[0.05, 0.05]) < 0.02);
        assert_eq!(Fusion::Bonferroni.combine(&[0.05, 0.05]), 0.1);
        assert_eq!(Fusion::Fisher.combine(&[]), 1.0);
    }

    #[test]
    fn the_level_rejects_at_most_the_share_asked() {
        let clean: Vec<f64> = (1..=100).map(|i| i as f64 / 100.0).collect();
        let level = level_for_fpr(&clean, 0.05).unwrap();
        assert_eq!(clean.iter().filter(|&&v| v < level).count(), 5);
        // Ties never push the rejected share over: 10 equal lowest values, 5 % asked.
        let mut tied = vec![0.001; 10];
        tied.extend((11..=100).map(|i| i as f64 / 100.0));
        let level = level_for_fpr(&tied, 0.05).unwrap();
        assert!(tied.iter().filter(|&&v| v < level).count() <= 5);
        assert_eq!(level_for_fpr(&[], 0.05), None);
        assert_eq!(level_for_fpr(&[0.5], 1.0), None);
        assert_eq!(level_for_fpr(&[0.5, f64::NAN], 0.05), None);
    }
}
