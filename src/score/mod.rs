//! From probabilities to a verdict: the uncertainty measures, the accept/reject rule with
//! its reasons and the alarm window, the report of one frame, and ROC/AUC for calibration
//! and validation.

pub mod measures;
pub mod report;
pub mod roc;
pub mod verdict;
