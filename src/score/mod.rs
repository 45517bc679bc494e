//! From probabilities to a verdict: the uncertainty measures, the accept/reject rule with
//! its reasons and the alarm window, the report of one frame, and ROC/AUC for calibration
//! and validation; the tamper measures a camera's raw frame gives before any model runs, and
//! the fusion of several signals into one decision.

pub mod fusion;
pub mod measures;
pub mod report;
pub mod roc;
pub mod tamper;
pub mod verdict;
