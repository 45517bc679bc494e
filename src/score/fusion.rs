//! Several signals, one decision: each signal's value becomes its tail probability among the
//! camera's own clean frames (how rare a clean frame at least this extreme is), and the tail
//! probabilities combine into one statistic that a single level cuts.
//!
//! Tail probabilities put signals of any scale and direction on one footing — MI in nats,
//! contrast in gray levels, low sharpness as suspicious as high MI — and need no model of
//! their clean distribution: the calibration frames are the model. Two combinations
//! ([`Fusion`]): Bonferroni's minimum (one signal far out is enough) and Fisher's (several
//! signals each a little out add up).

use crate::contract::card::{Fused, Signal};
use crate::score::measures::Measures;

/// Which tail of a signal is suspicious.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    /// The tail probability of `x`, one of the table's own values, against the others
    /// (leave one out): what [`TailTable::p_value`] gives a frame that was not among them.
    fn p_value_of_member(&self, x: f64) -> f64 {
        // The values as extreme as x count x itself: 1 + those among the n − 1 others.
        self.as_extreme(x) as f64 / self.sorted.len() as f64
    }

    /// Clean values at least as extreme as (a number) `x`, on the suspicious side.
    fn as_extreme(&self, x: f64) -> usize {
        match self.tail {
            // Values ≥ x: all after the first ≥ x.
            Tail::High => self.sorted.len() - self.sorted.partition_point(|&v| v < x),
            // Values ≤ x.
            Tail::Low => self.sorted.partition_point(|&v| v <= x),
        }
    }

    /// The tail probability of `x`: (1 + clean values at least as extreme) / (n + 1), in
    /// (0, 1] — the conformal p-value, exact for a frame exchangeable with the clean ones.
    /// A value that is not a number is as extreme as can be (fail closed): 1 / (n + 1).
    pub fn p_value(&self, x: f64) -> f64 {
        let n = self.sorted.len();
        if x.is_nan() {
            return 1.0 / (n + 1) as f64;
        }
        (1 + self.as_extreme(x)) as f64 / (n + 1) as f64
    }
}

pub use crate::contract::card::Fusion;

impl Fusion {
    /// The combined statistic of `p` (each in (0, 1]), itself a probability-like number in
    /// (0, 1] where small is suspicious; an empty list is 1 (nothing suspicious).
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

/// A signal's value on a frame: among its measures, or the model's density output (NaN
/// when the frame has none: a density signal without its value rejects).
pub fn signal_value(signal: Signal, m: &Measures, log_density: Option<f64>) -> f64 {
    match signal {
        Signal::Mi => m.mutual_information,
        Signal::Entropy => m.predictive_entropy,
        Signal::Density => log_density.unwrap_or(f64::NAN),
    }
}

/// Which tail of `signal` is suspicious.
pub fn signal_tail(signal: Signal) -> Tail {
    match signal {
        Signal::Mi | Signal::Entropy => Tail::High,
        // Far from every class's features.
        Signal::Density => Tail::Low,
    }
}

/// Most signals one decision fuses ([`Signal::ALL`]).
pub const MAX_SIGNALS: usize = Signal::ALL.len();

/// One signal of one frame: its value and its clean-frame tail probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignalScore {
    /// Which signal.
    pub signal: Signal,
    /// Its value on the frame.
    pub value: f64,
    /// Its tail probability among the calibration frames.
    pub p: f64,
}

/// A frame's fused score: every signal, the combined statistic and the level it is cut at.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedScore {
    /// Every fused signal, in the card's order.
    pub signals: heapless::Vec<SignalScore, MAX_SIGNALS>,
    /// The combined statistic (small is suspicious).
    pub statistic: f64,
    /// Frames whose statistic is under it are rejected.
    pub level: f64,
}

impl FusedScore {
    /// The signal that decides: one whose value is not a finite number, else the one with
    /// the smallest tail probability (the first such).
    pub fn deciding(&self) -> SignalScore {
        let unscorable = self.signals.iter().find(|s| !s.value.is_finite());
        *unscorable
            .or_else(|| {
                self.signals
                    .iter()
                    .reduce(|a, b| if b.p < a.p { b } else { a })
            })
            .expect("a fused score has at least one signal")
    }

    /// A signal whose value is not a finite number (NaN, or an infinity no frame of the
    /// calibration had), if any: the frame cannot be judged on it.
    pub fn not_a_number(&self) -> Option<Signal> {
        self.signals
            .iter()
            .find(|s| !s.value.is_finite())
            .map(|s| s.signal)
    }

    /// The frame is rejected: a signal is not a finite number, or the statistic is under the
    /// level.
    pub fn rejects(&self) -> bool {
        self.not_a_number().is_some() || self.statistic.is_nan() || self.statistic < self.level
    }
}

/// Why a card's fusion block cannot make a decision.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FusionError {
    /// A signal asked for is not in the card.
    #[error("the card fuses {have}, not {asked}")]
    NotInCard {
        /// The signal asked for.
        asked: &'static str,
        /// The card's signals, comma separated.
        have: String,
    },
    /// No signal is left to fuse.
    #[error("no signal to fuse")]
    NoSignal,
    /// A signal's calibration values make no table.
    #[error("{0} has no finite calibration value")]
    NoCleanValues(&'static str),
    /// The level cannot be set, or no frame could ever fall under it (the gate would accept
    /// everything).
    #[error("the level {level} rejects nothing: the least statistic a frame can have is {least}")]
    RejectsNothing {
        /// The level the calibration values give.
        level: f64,
        /// The smallest statistic any frame can reach.
        least: f64,
    },
}

/// The fused decision a card's fusion block makes, for a choice of its signals: the tail
/// tables, and the level that rejects the card's target share of the calibration frames (each
/// frame's tail probabilities taken against the other frames, as a new frame's would be).
#[derive(Debug, Clone)]
pub struct FusedGate {
    tables: Vec<(Signal, TailTable)>,
    rule: Fusion,
    level: f64,
    /// The calibration frames' rejected share at the level.
    calibration_fpr: f64,
}

impl FusedGate {
    /// The decision of `fused` on the signals in `select` (all of the card's when `None`),
    /// in the card's order.
    pub fn new(fused: &Fused, select: Option<&[Signal]>) -> Result<FusedGate, FusionError> {
        if let Some(select) = select {
            if let Some(&missing) = select
                .iter()
                .find(|s| !fused.signals.iter().any(|f| f.name == **s))
            {
                return Err(FusionError::NotInCard {
                    asked: missing.name(),
                    have: names(fused.signals.iter().map(|f| f.name)),
                });
            }
        }
        let chosen: Vec<&crate::contract::card::FusedSignal> = fused
            .signals
            .iter()
            .filter(|s| select.is_none_or(|select| select.contains(&s.name)))
            .collect();
        let mut tables = Vec::with_capacity(chosen.len());
        for s in &chosen {
            let table = TailTable::new(&s.clean, signal_tail(s.name))
                .map_err(|NoCleanValues| FusionError::NoCleanValues(s.name.name()))?;
            tables.push((s.name, table));
        }
        let frames = tables.first().ok_or(FusionError::NoSignal)?.1.len();
        let mut p = Vec::with_capacity(tables.len());
        let statistics: Vec<f64> = (0..frames)
            .map(|i| {
                p.clear();
                p.extend(
                    tables
                        .iter()
                        .zip(&chosen)
                        .map(|((_, table), s)| table.p_value_of_member(s.clean[i])),
                );
                fused.rule.combine(&p)
            })
            .collect();
        let least = fused
            .rule
            .combine(&vec![1.0 / (frames + 1) as f64; tables.len()]);
        // None only for a NaN statistic, which finite tables cannot give: refused all the same.
        let level = level_for_fpr(&statistics, fused.target_fpr).unwrap_or(f64::NAN);
        if level.is_nan() || level <= least {
            return Err(FusionError::RejectsNothing { level, least });
        }
        let rejected = statistics.iter().filter(|&&s| s < level).count();
        Ok(FusedGate {
            tables,
            rule: fused.rule,
            level,
            calibration_fpr: rejected as f64 / frames as f64,
        })
    }

    /// The fused signals, in order.
    pub fn signals(&self) -> impl Iterator<Item = Signal> + '_ {
        self.tables.iter().map(|(s, _)| *s)
    }

    /// How the tail probabilities combine.
    pub fn rule(&self) -> Fusion {
        self.rule
    }

    /// Frames whose statistic is under this are rejected.
    pub fn level(&self) -> f64 {
        self.level
    }

    /// The calibration frames' rejected share at the level.
    pub fn calibration_fpr(&self) -> f64 {
        self.calibration_fpr
    }

    /// Each signal's cut on its own: a frame whose value lies beyond it (above a high-tail
    /// signal's, below a low-tail one's) is rejected by that signal alone, every other at
    /// its most ordinary (tail probability 1); `None` for a signal that cannot reject a frame
    /// alone. With Bonferroni's rule the gate accepts exactly the frames inside every cut;
    /// with Fisher's, several signals inside their cuts may still add up to a reject. What
    /// an attacker who knows the card aims under.
    pub fn cuts(&self) -> Vec<(Signal, Option<f64>)> {
        let mut p = vec![1.0; self.tables.len()];
        self.tables
            .iter()
            .map(|(signal, table)| {
                let n = table.len();
                // The statistic rises with the count of clean values at least as extreme, so
                // the counts that reject are 0..=most.
                let most = (0..n)
                    .take_while(|&j| {
                        p[0] = (1 + j) as f64 / (n + 1) as f64;
                        self.rule.combine(&p) < self.level
                    })
                    .last();
                let cut = most.map(|j| match table.tail {
                    // At most j clean values ≥ x: x above the (j + 1)-th largest.
                    Tail::High => table.sorted[n - 1 - j],
                    // At most j clean values ≤ x: x below the (j + 1)-th smallest.
                    Tail::Low => table.sorted[j],
                });
                (*signal, cut)
            })
            .collect()
    }

    /// Scores one frame's measures and density output (no allocation).
    pub fn score(&self, m: &Measures, log_density: Option<f64>) -> FusedScore {
        let mut signals = heapless::Vec::new();
        let mut p = [1.0f64; MAX_SIGNALS];
        for (i, (signal, table)) in self.tables.iter().enumerate() {
            let value = signal_value(*signal, m, log_density);
            p[i] = table.p_value(value);
            let score = SignalScore {
                signal: *signal,
                value,
                p: p[i],
            };
            // At most one table per signal: never more than MAX_SIGNALS.
            let _ = signals.push(score);
        }
        FusedScore {
            statistic: self.rule.combine(&p[..self.tables.len()]),
            signals,
            level: self.level,
        }
    }
}

/// Signal names, comma separated.
pub fn names(signals: impl Iterator<Item = Signal>) -> String {
    signals.map(Signal::name).collect::<Vec<_>>().join(",")
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
        let mut next = uniforms(0x9E3779B97F4A7C15u64);
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

    /// A reproducible stream of uniform numbers in [0, 1) (xorshift).
    fn uniforms(mut s: u64) -> impl FnMut() -> f64 {
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn fused(rule: Fusion, mi: Vec<f64>, entropy: Vec<f64>, fpr: f64) -> Fused {
        use crate::contract::card::FusedSignal;
        Fused {
            rule,
            target_fpr: fpr,
            signals: vec![
                FusedSignal {
                    name: Signal::Mi,
                    clean: mi,
                },
                FusedSignal {
                    name: Signal::Entropy,
                    clean: entropy,
                },
            ],
            holdout: None,
        }
    }

    fn measures(mi: f64, entropy: f64) -> Measures {
        Measures {
            predictive_entropy: entropy,
            expected_entropy: entropy - mi,
            mutual_information: mi,
            softmax_variance: 0.0,
            variation_ratio: 0.0,
            max_probability: 0.5,
            predicted_class: 0,
        }
    }

    /// The level set on calibration frames (each against the others) rejects the target
    /// share of new frames from the same distribution: two correlated signals, 40 calibration
    /// sets of 400 frames, 1,000 new frames each; the pooled rate within ±0.01 of 5 % (about
    /// 4.6 standard errors of 40,000 frames) for both rules.
    #[test]
    fn the_fused_level_rejects_the_target_share_of_new_frames() {
        let mut uniform = uniforms(0x2545F4914F6CDD1Du64);
        let mut frame = move || {
            let shared = uniform();
            (shared + 0.5 * uniform(), shared * shared + uniform())
        };
        for rule in [Fusion::Fisher, Fusion::Bonferroni] {
            let mut rejected = 0usize;
            for _ in 0..40 {
                let (mi, entropy): (Vec<f64>, Vec<f64>) = (0..400).map(|_| frame()).unzip();
                let gate = FusedGate::new(&fused(rule, mi, entropy, 0.05), None).unwrap();
                assert!(
                    gate.calibration_fpr() <= 0.05 && gate.calibration_fpr() > 0.04,
                    "{}",
                    gate.calibration_fpr()
                );
                rejected += (0..1000)
                    .filter(|_| {
                        let (mi, entropy) = frame();
                        gate.score(&measures(mi, entropy), None).rejects()
                    })
                    .count();
            }
            let rate = rejected as f64 / 40_000.0;
            assert!((rate - 0.05).abs() < 0.01, "{rule:?}: {rate}");
        }
    }

    #[test]
    fn a_frame_is_judged_on_every_signal_and_named_by_the_rarest() {
        let clean: Vec<f64> = (0..100).map(|i| i as f64 / 100.0).collect();
        let gate = FusedGate::new(
            &fused(Fusion::Bonferroni, clean.clone(), clean.clone(), 0.05),
            None,
        )
        .unwrap();
        assert_eq!(names(gate.signals()), "mi,entropy");
        // Entropy beyond every clean frame, MI ordinary: entropy decides.
        let score = gate.score(&measures(0.5, 2.0), None);
        assert!(score.rejects());
        assert_eq!(score.deciding().signal, Signal::Entropy);
        assert_eq!(score.deciding().p, 1.0 / 101.0);
        assert!(!gate.score(&measures(0.5, 0.5), None).rejects());
        // A signal that is not a number rejects whatever the others say.
        let nan = gate.score(&measures(f64::NAN, 0.1), None);
        assert!(nan.rejects());
        assert_eq!(nan.not_a_number(), Some(Signal::Mi));
        // One signal chosen: the other plays no part.
        let mi_only = FusedGate::new(
            &fused(Fusion::Bonferroni, clean.clone(), clean.clone(), 0.05),
            Some(&[Signal::Mi]),
        )
        .unwrap();
        assert!(!mi_only.score(&measures(0.5, 2.0), None).rejects());
        assert_eq!(mi_only.score(&measures(0.5, 2.0), None).signals.len(), 1);
    }

    /// Each signal's cut is where it starts to reject alone: under Bonferroni's rule the gate
    /// accepts exactly the frames inside every cut (checked on 20,000 frames spread over and
    /// beyond the clean range); under Fisher's, one signal just past its cut rejects with the
    /// other at its most ordinary and passes at the cut; a low-tail signal's cut works the
    /// other way round.
    #[test]
    fn the_cuts_are_where_each_signal_rejects_alone() {
        use crate::contract::card::FusedSignal;
        let mut uniform = uniforms(0x9E3779B97F4A7C15u64);
        let (mi, entropy): (Vec<f64>, Vec<f64>) = (0..400)
            .map(|_| {
                let shared = uniform();
                (shared + 0.5 * uniform(), 2.0 * shared + uniform())
            })
            .unzip();
        let gate = FusedGate::new(
            &fused(Fusion::Bonferroni, mi.clone(), entropy.clone(), 0.05),
            None,
        )
        .unwrap();
        let cuts = gate.cuts();
        let (Some(c_mi), Some(c_h)) = (cuts[0].1, cuts[1].1) else {
            panic!("{cuts:?}")
        };
        let mut rejected = 0;
        for _ in 0..20_000 {
            let (m, h) = (2.0 * uniform() - 0.25, 4.0 * uniform() - 0.5);
            let rejects = gate.score(&measures(m, h), None).rejects();
            assert_eq!(
                rejects,
                m > c_mi || h > c_h,
                "MI {m} (cut {c_mi}), H {h} (cut {c_h})"
            );
            rejected += rejects as usize;
        }
        assert!(rejected > 1000 && rejected < 19_000, "{rejected}");

        let fisher = FusedGate::new(&fused(Fusion::Fisher, mi, entropy, 0.05), None).unwrap();
        let cuts = fisher.cuts();
        let (Some(c_mi), Some(c_h)) = (cuts[0].1, cuts[1].1) else {
            panic!("{cuts:?}")
        };
        let rejects = |m, h| fisher.score(&measures(m, h), None).rejects();
        // Below every clean value: a tail probability of 1.
        assert!(!rejects(c_mi, -1.0) && rejects(c_mi + 1e-9, -1.0));
        assert!(!rejects(-1.0, c_h) && rejects(-1.0, c_h + 1e-9));

        let clean: Vec<f64> = (0..100).map(|i| i as f64).collect();
        let mut f = fused(Fusion::Bonferroni, clean.clone(), clean.clone(), 0.05);
        f.signals.push(FusedSignal {
            name: Signal::Density,
            clean: clean.clone(),
        });
        let gate = FusedGate::new(&f, Some(&[Signal::Mi, Signal::Density])).unwrap();
        let Some(c_d) = gate.cuts()[1].1 else {
            panic!()
        };
        let ordinary = measures(0.0, 0.0);
        assert!(!gate.score(&ordinary, Some(c_d)).rejects());
        assert!(gate.score(&ordinary, Some(c_d - 1e-9)).rejects());
    }

    /// Density's suspicious tail is the low one, and a frame without a density value (a
    /// model that gave none) is rejected, not judged on the other signals.
    #[test]
    fn a_low_density_rejects_and_a_missing_one_fails_closed() {
        use crate::contract::card::FusedSignal;
        let clean: Vec<f64> = (0..100).map(|i| -50.0 + i as f64 / 10.0).collect();
        let mut f = fused(Fusion::Bonferroni, clean.clone(), clean.clone(), 0.05);
        f.signals.push(FusedSignal {
            name: Signal::Density,
            clean,
        });
        let gate = FusedGate::new(&f, Some(&[Signal::Mi, Signal::Density])).unwrap();
        let ordinary = measures(-45.0, -45.0);
        assert!(!gate.score(&ordinary, Some(-45.0)).rejects());
        let far = gate.score(&ordinary, Some(-80.0));
        assert!(far.rejects());
        assert_eq!(far.deciding().signal, Signal::Density);
        // High density is ordinary, not suspicious.
        assert!(!gate.score(&ordinary, Some(10.0)).rejects());
        let none = gate.score(&ordinary, None);
        assert!(none.rejects());
        assert_eq!(none.not_a_number(), Some(Signal::Density));
        // An infinite density, which no calibration frame had, is no score either.
        let infinite = gate.score(&ordinary, Some(f64::INFINITY));
        assert!(infinite.rejects());
        assert_eq!(infinite.not_a_number(), Some(Signal::Density));
    }

    #[test]
    fn a_signal_the_card_lacks_is_refused() {
        let clean: Vec<f64> = (0..100).map(|i| i as f64).collect();
        let mut one = fused(Fusion::Fisher, clean.clone(), clean, 0.05);
        one.signals.truncate(1);
        assert_eq!(
            FusedGate::new(&one, Some(&[Signal::Entropy])).unwrap_err(),
            FusionError::NotInCard {
                asked: "entropy",
                have: "mi".into()
            }
        );
        assert_eq!(
            FusedGate::new(&one, Some(&[])).unwrap_err(),
            FusionError::NoSignal
        );
    }
}
