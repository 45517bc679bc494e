//! Per-frame verdicts and the rolling alarm window.

use heapless::Deque;

use crate::measures::Measures;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Accept,
    Reject,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub decision: Decision,
    /// Why a frame was rejected; `None` for accepted frames.
    pub reason: Option<String>,
}

impl Verdict {
    /// Fail closed: a frame that could not be scored is rejected with the reason.
    pub fn unscored(reason: impl Into<String>) -> Verdict {
        Verdict {
            decision: Decision::Reject,
            reason: Some(reason.into()),
        }
    }
}

/// Accepts a scored frame only if its mutual information is at or below `threshold`.
pub fn decide(m: &Measures, threshold: f64) -> Verdict {
    if m.mutual_information.is_nan() {
        return Verdict::unscored("mutual information is NaN");
    }
    if m.mutual_information > threshold {
        Verdict {
            decision: Decision::Reject,
            reason: Some(format!(
                "mutual information {:.4} above threshold {:.4}",
                m.mutual_information, threshold
            )),
        }
    } else {
        Verdict {
            decision: Decision::Accept,
            reason: None,
        }
    }
}

/// Largest alarm window (`--alarm-window`): fixed capacity, no allocation per frame.
pub const MAX_WINDOW: usize = 1024;

/// Raises an alarm when at least `k` of the last `n` frames were rejected. The alarm fires
/// on entering that state, and again only after the state has cleared.
#[derive(Debug)]
pub struct AlarmWindow {
    recent: Deque<bool, MAX_WINDOW>,
    n: usize,
    k: usize,
    rejected: usize,
    active: bool,
}

impl AlarmWindow {
    pub fn new(k: usize, n: usize) -> Result<AlarmWindow, String> {
        if n == 0 || n > MAX_WINDOW || k == 0 || k > n {
            return Err(format!(
                "alarm needs 1 <= k <= n <= {MAX_WINDOW}, got k={k} n={n}"
            ));
        }
        Ok(AlarmWindow {
            recent: Deque::new(),
            n,
            k,
            rejected: 0,
            active: false,
        })
    }

    /// Records one verdict; returns true when this frame raises the alarm.
    pub fn push(&mut self, decision: Decision) -> bool {
        let rejected = decision == Decision::Reject;
        if self.recent.len() == self.n && self.recent.pop_front() == Some(true) {
            self.rejected -= 1;
        }
        // Capacity is MAX_WINDOW ≥ n and we just made room, so this cannot fail.
        let _ = self.recent.push_back(rejected);
        self.rejected += rejected as usize;
        let now = self.rejected >= self.k;
        let raised = now && !self.active;
        self.active = now;
        raised
    }

    pub fn rejected_in_window(&self) -> usize {
        self.rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;

    #[test]
    fn alarm_fires_on_k_of_n_and_rearms_after_clearing() {
        let mut w = AlarmWindow::new(2, 3).unwrap();
        let seq = [
            Reject, Accept, Accept, Reject, Reject, Reject, Accept, Accept, Accept, Reject, Reject,
        ];
        let fired: Vec<bool> = seq.iter().map(|&d| w.push(d)).collect();
        assert_eq!(
            fired,
            vec![false, false, false, false, true, false, false, false, false, false, true]
        );
        assert!(AlarmWindow::new(4, 3).is_err());
        assert!(AlarmWindow::new(1, MAX_WINDOW + 1).is_err());
    }

    #[test]
    fn threshold_is_inclusive_for_accept() {
        let m = Measures {
            predictive_entropy: 0.5,
            expected_entropy: 0.3,
            mutual_information: 0.2,
            softmax_variance: 0.0,
            variation_ratio: 0.0,
            max_probability: 0.9,
            predicted_class: 1,
        };
        assert_eq!(decide(&m, 0.2).decision, Accept);
        let v = decide(&m, 0.1);
        assert_eq!(v.decision, Reject);
        assert!(v.reason.unwrap().contains("above threshold"));
    }
}
