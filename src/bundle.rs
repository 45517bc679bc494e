//! Eval bundles: frames with the workstation's scores, so a board can check that it detects
//! attacks as well as the workstation did (`mcgate validate`). The training crate writes
//! them with these types; `docs/model-format.md` documents the manifest.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::roc;

pub const BUNDLE_SCHEMA: &str = "mcgate.bundle/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Clean or noise frames: the gate should accept them.
    Negative,
    /// Adversarial frames: the gate should reject them.
    Positive,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    pub role: Role,
    /// For a noise group: the attack group whose perturbation norm it matches.
    pub paired_with: Option<String>,
    pub method: Option<String>,
    pub eps_255: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleFrame {
    /// Path relative to the bundle directory.
    pub file: String,
    pub group: String,
    /// True label.
    pub label: usize,
    pub workstation_class: usize,
    /// The workstation's MI in each of `Manifest::repeats` independent MC runs.
    pub workstation_mutual_information: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: String,
    /// The ONNX file the workstation scores belong to.
    pub onnx_sha256: String,
    pub samples: usize,
    /// Independent MC runs scored per frame. One run's MI is noisy (heavy-tailed at low
    /// values), so the AUC of a single run varies by a few hundredths between runs; both
    /// sides compare the *mean* single-run AUC over this many runs.
    pub repeats: usize,
    pub threshold: f64,
    pub seed: u64,
    pub groups: Vec<Group>,
    pub frames: Vec<BundleFrame>,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest, Error> {
        let path = dir.join("manifest.json");
        let bytes = std::fs::read(&path).map_err(|e| Error::Bundle {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::Bundle {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if m.schema != BUNDLE_SCHEMA {
            return Err(Error::Bundle {
                path,
                reason: format!(
                    "schema is {:?}, this build reads {BUNDLE_SCHEMA:?}",
                    m.schema
                ),
            });
        }
        if let Some(f) = m
            .frames
            .iter()
            .find(|f| !m.groups.iter().any(|g| g.name == f.group))
        {
            return Err(Error::Bundle {
                path,
                reason: format!("frame {} names unknown group {}", f.file, f.group),
            });
        }
        Ok(m)
    }
}

/// How one attack is detected on the device versus on the workstation (each figure the mean
/// over the MC runs).
#[derive(Debug, Clone, Serialize)]
pub struct AttackCheck {
    pub group: String,
    pub positives: usize,
    pub negatives: usize,
    pub device_auc: f64,
    pub workstation_auc: f64,
    /// Share of the attack's frames the card's threshold rejects, on each side.
    pub device_tpr: f64,
    pub workstation_tpr: f64,
    /// Share of the paired noise frames rejected on the device.
    pub device_noise_fpr: f64,
}

impl AttackCheck {
    pub fn auc_delta(&self) -> f64 {
        (self.device_auc - self.workstation_auc).abs()
    }

    /// Within tolerance; an undefined (NaN) AUC never is.
    pub fn within(&self, tolerance: f64) -> bool {
        self.auc_delta() <= tolerance
    }
}

/// Compares device MI (`device_mi[i][r]`: frame `manifest.frames[i]`, run r) with the
/// workstation's; AUC and rates are averaged over runs on each side.
pub fn compare(manifest: &Manifest, device_mi: &[Vec<f64>], threshold: f64) -> Vec<AttackCheck> {
    // Scores of `group` in run `run`, on the device or the workstation.
    let scores = |group: &str, run: usize, device: bool| -> Vec<f64> {
        manifest
            .frames
            .iter()
            .zip(device_mi)
            .filter(|(f, _)| f.group == group)
            .map(|(f, d)| {
                if device {
                    d[run]
                } else {
                    f.workstation_mutual_information[run]
                }
            })
            .collect()
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let device_runs = device_mi.first().map_or(0, |d| d.len());
    let mut checks = vec![];
    for attack in manifest.groups.iter().filter(|g| g.role == Role::Positive) {
        let negatives: Vec<&Group> = manifest
            .groups
            .iter()
            .filter(|g| {
                g.role == Role::Negative
                    && (g.paired_with.is_none() || g.paired_with.as_ref() == Some(&attack.name))
            })
            .collect();
        let noise: Vec<&Group> = negatives
            .iter()
            .copied()
            .filter(|g| g.paired_with.is_some())
            .collect();
        // (AUC, TPR, noise FPR) of one run.
        let run_stats = |run: usize, device: bool| {
            let neg: Vec<f64> = negatives
                .iter()
                .flat_map(|g| scores(&g.name, run, device))
                .collect();
            let pos = scores(&attack.name, run, device);
            let noise: Vec<f64> = noise
                .iter()
                .flat_map(|g| scores(&g.name, run, device))
                .collect();
            (
                roc::roc_auc(&neg, &pos).unwrap_or(f64::NAN),
                roc::rate_above(&pos, threshold),
                roc::rate_above(&noise, threshold),
                (pos.len(), neg.len()),
            )
        };
        let device: Vec<_> = (0..device_runs).map(|r| run_stats(r, true)).collect();
        let workstation: Vec<_> = (0..manifest.repeats).map(|r| run_stats(r, false)).collect();
        let pick = |v: &[(f64, f64, f64, (usize, usize))], k: usize| -> f64 {
            mean(&v.iter().map(|s| [s.0, s.1, s.2][k]).collect::<Vec<_>>())
        };
        let (positives, negatives) = workstation.first().map_or((0, 0), |s| s.3);
        checks.push(AttackCheck {
            group: attack.name.clone(),
            positives,
            negatives,
            device_auc: pick(&device, 0),
            workstation_auc: pick(&workstation, 0),
            device_tpr: pick(&device, 1),
            workstation_tpr: pick(&workstation, 1),
            device_noise_fpr: pick(&device, 2),
        });
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(group: &str, mi: f64) -> BundleFrame {
        BundleFrame {
            file: format!("{group}.png"),
            group: group.into(),
            label: 0,
            workstation_class: 0,
            workstation_mutual_information: vec![mi],
        }
    }

    #[test]
    fn compares_each_attack_against_clean_and_its_own_noise() {
        let g = |name: &str, role, paired: Option<&str>| Group {
            name: name.into(),
            role,
            paired_with: paired.map(String::from),
            method: None,
            eps_255: None,
        };
        let manifest = Manifest {
            schema: BUNDLE_SCHEMA.into(),
            onnx_sha256: String::new(),
            samples: 20,
            repeats: 1,
            threshold: 0.5,
            seed: 0,
            groups: vec![
                g("clean", Role::Negative, None),
                g("a", Role::Positive, None),
                g("noise_a", Role::Negative, Some("a")),
                g("b", Role::Positive, None),
                g("noise_b", Role::Negative, Some("b")),
            ],
            frames: vec![
                frame("clean", 0.1),
                frame("a", 0.9),
                frame("noise_a", 0.2),
                frame("b", 0.3),
                frame("noise_b", 0.95),
            ],
        };
        // Device scores equal the workstation's except b, which scores higher on the device.
        let device: Vec<Vec<f64>> = [0.1, 0.9, 0.2, 0.99, 0.95]
            .iter()
            .map(|&v| vec![v])
            .collect();
        let checks = compare(&manifest, &device, 0.5);
        assert_eq!(checks.len(), 2);
        assert_eq!(
            (
                checks[0].device_auc,
                checks[0].workstation_auc,
                checks[0].negatives
            ),
            (1.0, 1.0, 2)
        );
        // b: workstation 0.3 beats clean 0.1 but not noise_b 0.95 → ½; device 0.99 beats both → 1.
        assert_eq!(
            (checks[1].workstation_auc, checks[1].device_auc),
            (0.5, 1.0)
        );
        assert_eq!(checks[1].auc_delta(), 0.5);
        assert_eq!(
            (
                checks[1].device_tpr,
                checks[1].workstation_tpr,
                checks[1].device_noise_fpr
            ),
            (1.0, 0.0, 1.0)
        );
    }
}
