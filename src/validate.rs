//! `mcgate validate`: replay an eval bundle (frames with the workstation's scores) on this
//! device and compare, per attack, how well MI detects it here and on the workstation. The
//! training crate writes bundles with these types; `docs/model-format.md` documents the
//! manifest.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::contract::bundle::{BundleFrame, Group, Manifest, Role, BUNDLE_SCHEMA};
use crate::error::Error;
use crate::gate::{Pool, Seeds};
use crate::input::frame::{self, Frame};
use crate::model::{LoadError, MismatchError, Model};
use crate::run::rng;
use crate::score::roc;

pub(crate) mod error;
pub use error::BundleError;

impl Manifest {
    /// Reads and checks `<dir>/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest, Error> {
        let path = dir.join("manifest.json");
        let fail = |problem| Error::Bundle {
            path: path.clone(),
            problem,
        };
        let bytes = crate::files::read_bounded(&path, crate::files::MAX_MANIFEST_BYTES)
            .map_err(|e| fail(BundleError::Read(e.to_string())))?;
        let m: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| fail(BundleError::Json(e.to_string())))?;
        if m.schema != BUNDLE_SCHEMA {
            return Err(fail(BundleError::Schema {
                found: m.schema.clone(),
            }));
        }
        if let Some(f) = m
            .frames
            .iter()
            .find(|f| !m.groups.iter().any(|g| g.name == f.group))
        {
            return Err(fail(BundleError::UnknownGroup {
                frame: f.file.clone(),
                group: f.group.clone(),
            }));
        }
        // Every check below would otherwise compare nothing and pass, or index past a score.
        if m.repeats == 0 {
            return Err(fail(BundleError::Incomplete("repeats is 0".into())));
        }
        if let Some(f) = m
            .frames
            .iter()
            .find(|f| f.workstation_mutual_information.len() != m.repeats)
        {
            return Err(fail(BundleError::Incomplete(format!(
                "frame {} has {} workstation scores, repeats is {}",
                f.file,
                f.workstation_mutual_information.len(),
                m.repeats
            ))));
        }
        for role in [Role::Positive, Role::Negative] {
            let has_frames = m
                .groups
                .iter()
                .filter(|g| g.role == role)
                .any(|g| m.frames.iter().any(|f| f.group == g.name));
            if !has_frames {
                return Err(fail(BundleError::Incomplete(
                    format!("no {role:?} frames: nothing to compare").to_lowercase(),
                )));
            }
        }
        Ok(m)
    }
}

/// How to replay a bundle.
#[derive(Debug, Clone)]
pub struct Options {
    /// Monte-Carlo samples T; `None`: the bundle's.
    pub samples: Option<usize>,
    /// Run seed for the masks; run r uses `rng::mix(seed, r)`.
    pub seed: u64,
    /// Independent MC runs; `None`: as many as the workstation made.
    pub runs: Option<usize>,
    /// Frames scored at once, one thread each.
    pub jobs: usize,
}

/// The outcome of a replay: per attack, the device against the workstation.
#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    /// Frames in the bundle.
    pub frames: usize,
    /// Monte-Carlo samples T used.
    pub samples: usize,
    /// MC runs on this device.
    pub runs: usize,
    /// MC runs on the workstation.
    #[serde(skip)]
    pub workstation_runs: usize,
    /// The run seed.
    pub seed: u64,
    /// The card's MI threshold.
    pub threshold: f64,
    /// Share of frame runs whose predicted class is the workstation's.
    pub class_agreement: f64,
    /// Per attack group.
    pub attacks: Vec<AttackCheck>,
}

/// Gates every frame of the bundle in `dir` (its `manifest`, read with [`Manifest::read`];
/// `model_arg` is the model as the user named it, for messages)
/// `runs` times with independent masks and compares detection with the workstation's.
pub fn run(
    model: &Model,
    model_arg: &Path,
    manifest: &Manifest,
    dir: &Path,
    opts: &Options,
) -> Result<Validation, Error> {
    if opts.runs == Some(0) {
        return Err(Error::out_of_range("runs", "at least 1", 0));
    }
    if manifest.onnx_sha256 != model.card.onnx_sha256 {
        return Err(LoadError::Mismatch {
            path: dir.to_owned(),
            problem: MismatchError::BundleModel {
                bundle: manifest.onnx_sha256.clone(),
                model: model.card.onnx_sha256.clone(),
            },
        }
        .into());
    }
    let threshold = model
        .card
        .mi_threshold()
        .ok_or_else(|| Error::Uncalibrated {
            path: model_arg.to_owned(),
            hint: "",
        })?;
    let samples = opts.samples.unwrap_or(manifest.samples);
    let runs = opts.runs.unwrap_or(manifest.repeats);
    let frame_path = |f: &BundleFrame| -> PathBuf { dir.join(&f.file) };
    let mut images = Vec::with_capacity(manifest.frames.len());
    for (index, f) in manifest.frames.iter().enumerate() {
        let image = frame::decode_file(&frame_path(f)).map_err(|e| Error::Bundle {
            path: frame_path(f),
            problem: BundleError::Frame(e),
        })?;
        images.push(Ok(Frame::new(index as u64, f.file.clone(), image)));
    }
    // One pool per run, each with its own run seed.
    let mut device_mi = vec![Vec::with_capacity(runs); images.len()];
    let mut class_agreement = 0usize;
    for run in 0..runs {
        let seeds = Seeds::PerFrame(rng::mix(opts.seed, run as u64));
        let mut pool = Pool::new(model, samples, threshold, seeds, opts.jobs)?;
        // The bundle compares MI: a tamper check (a noise group is snow) would leave frames
        // without a score to compare.
        pool.without_tamper();
        let reports = pool.score_all(&images);
        for ((report, f), mi) in reports
            .into_iter()
            .zip(&manifest.frames)
            .zip(&mut device_mi)
        {
            let m = report.measures.ok_or_else(|| Error::Bundle {
                path: frame_path(f),
                problem: BundleError::Unscored(
                    report
                        .verdict
                        .reason()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                ),
            })?;
            class_agreement += (m.predicted_class == f.workstation_class) as usize;
            mi.push(m.mutual_information);
        }
    }
    Ok(Validation {
        frames: manifest.frames.len(),
        samples,
        runs,
        workstation_runs: manifest.repeats,
        seed: opts.seed,
        threshold,
        class_agreement: class_agreement as f64 / (manifest.frames.len() * runs).max(1) as f64,
        attacks: compare(manifest, &device_mi, threshold),
    })
}

impl Validation {
    /// The attack groups whose MI AUC is off by more than `tolerance`.
    pub fn failed(&self, tolerance: f64) -> Vec<&str> {
        self.attacks
            .iter()
            .filter(|c| !c.within(tolerance))
            .map(|c| c.group.as_str())
            .collect()
    }

    /// One JSON object with the verdict at `tolerance`, and a final newline.
    pub fn to_json(&self, tolerance: f64) -> String {
        serde_json::json!({
            "frames": self.frames,
            "samples": self.samples,
            "runs": self.runs,
            "seed": self.seed,
            "threshold": self.threshold,
            "tolerance": tolerance,
            "class_agreement": self.class_agreement,
            "noise_sigmas": NOISE_SIGMAS,
            "attacks": self
                .attacks
                .iter()
                .map(|c| {
                    let mut v = serde_json::to_value(c).unwrap_or_default();
                    v["allowed"] = serde_json::json!(c.allowed(tolerance));
                    v
                })
                .collect::<Vec<_>>(),
            "passed": self.failed(tolerance).is_empty(),
        })
        .to_string()
            + "\n"
    }

    /// The table `mcgate validate` prints, with its PASS/FAIL line.
    pub fn to_text(&self, tolerance: f64) -> String {
        let mut s = format!(
            "{} frames, T={}, {} MC runs each on the device, {} on the workstation (seed {}); predicted class agrees with the workstation on {:.1} %\n",
            self.frames,
            self.samples,
            self.runs,
            self.workstation_runs,
            self.seed,
            100.0 * self.class_agreement
        );
        // The attack column as wide as the longest group name (the red team's are long).
        let width = self
            .attacks
            .iter()
            .map(|c| c.group.chars().count())
            .max()
            .unwrap_or(0)
            .max(20);
        s += &format!(
            "means over the runs:\n{:<width$} MI AUC device  workstation  |Δ|     allowed  TPR device  workstation  noise FPR\n",
            "attack"
        );
        for c in &self.attacks {
            s += &format!(
                "{:<width$} {:>13.3}  {:>11.3}  {:<6.3}{} {:<7.3}  {:>8.1} %  {:>9.1} %  {:>7.1} %\n",
                c.group,
                c.device_auc,
                c.workstation_auc,
                c.auc_delta(),
                if c.within(tolerance) { " " } else { "!" },
                c.allowed(tolerance),
                100.0 * c.device_tpr,
                100.0 * c.workstation_tpr,
                100.0 * c.device_noise_fpr
            );
        }
        let failed = self.failed(tolerance);
        s += &if failed.is_empty() {
            format!(
                "PASS: every MI AUC within {tolerance} of the workstation's, or {NOISE_SIGMAS} standard errors of its run-to-run spread where larger\n"
            )
        } else {
            format!(
                "FAIL: MI AUC differs by more than {tolerance} (or {NOISE_SIGMAS} standard errors of the workstation's run-to-run spread, where larger) for {}\n",
                failed.join(", ")
            )
        };
        s
    }
}

/// How one attack is detected on the device versus on the workstation (each figure the mean
/// over the MC runs).
#[derive(Debug, Clone, Serialize)]
pub struct AttackCheck {
    /// The attack group.
    pub group: String,
    /// Its frames.
    pub positives: usize,
    /// Clean frames plus its paired noise frames.
    pub negatives: usize,
    /// Mean MI ROC AUC on this device.
    pub device_auc: f64,
    /// Mean MI ROC AUC on the workstation.
    pub workstation_auc: f64,
    /// Share of the attack's frames the card's threshold rejects, on this device.
    pub device_tpr: f64,
    /// The same on the workstation.
    pub workstation_tpr: f64,
    /// Share of the paired noise frames rejected on the device.
    pub device_noise_fpr: f64,
    /// Standard deviation of the workstation's MI AUC from run to run (0 with one run): how
    /// far the masks alone move one run's AUC.
    pub workstation_auc_sd: f64,
    /// The standard error of device mean − workstation mean that the masks alone explain:
    /// the workstation's spread over both sides' runs. The device's own spread is not used,
    /// so that a noisier device cannot widen its own test.
    pub noise_se: f64,
}

/// A group passes while its AUCs differ by no more than the tolerance or this many
/// standard errors of the mask noise, whichever is larger: frames that sit at the
/// threshold (the red team's, by construction) move the AUC from run to run far more than
/// the shipped attacks do, and a fixed tolerance would fail a correct device on them.
pub const NOISE_SIGMAS: f64 = 4.0;

impl AttackCheck {
    /// |device AUC − workstation AUC|.
    pub fn auc_delta(&self) -> f64 {
        (self.device_auc - self.workstation_auc).abs()
    }

    /// The largest |Δ| that passes: `tolerance`, or [`NOISE_SIGMAS`] standard errors of the
    /// mask noise where that is larger.
    pub fn allowed(&self, tolerance: f64) -> f64 {
        let noise = NOISE_SIGMAS * self.noise_se;
        if noise.is_finite() {
            tolerance.max(noise)
        } else {
            tolerance
        }
    }

    /// Within what is allowed; an undefined (NaN) AUC never is.
    pub fn within(&self, tolerance: f64) -> bool {
        self.auc_delta() <= self.allowed(tolerance)
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
        let workstation_auc_sd = sample_sd(&workstation.iter().map(|s| s.0).collect::<Vec<_>>());
        let both = (1.0 / manifest.repeats.max(1) as f64 + 1.0 / device_runs.max(1) as f64).sqrt();
        checks.push(AttackCheck {
            group: attack.name.clone(),
            positives,
            negatives,
            device_auc: pick(&device, 0),
            workstation_auc: pick(&workstation, 0),
            device_tpr: pick(&device, 1),
            workstation_tpr: pick(&workstation, 1),
            device_noise_fpr: pick(&device, 2),
            workstation_auc_sd,
            noise_se: workstation_auc_sd * both,
        });
    }
    checks
}

/// The sample standard deviation (n − 1); 0 for fewer than two values.
fn sample_sd(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
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

    /// One positive group `a` against `clean`, with two frames each, over `runs` runs: the
    /// workstation's scores `ws[r]` and the device's `dev[r]` as (clean, clean, a, a).
    fn two_sided(ws: &[[f64; 4]], dev: &[[f64; 4]]) -> AttackCheck {
        let g = |name: &str, role| Group {
            name: name.into(),
            role,
            paired_with: None,
            method: None,
            eps_255: None,
        };
        let names = ["clean", "clean", "a", "a"];
        let manifest = Manifest {
            schema: BUNDLE_SCHEMA.into(),
            onnx_sha256: String::new(),
            samples: 20,
            repeats: ws.len(),
            threshold: 0.5,
            seed: 0,
            groups: vec![g("clean", Role::Negative), g("a", Role::Positive)],
            frames: (0..4)
                .map(|i| BundleFrame {
                    workstation_mutual_information: ws.iter().map(|r| r[i]).collect(),
                    ..frame(names[i], 0.0)
                })
                .collect(),
        };
        let device: Vec<Vec<f64>> = (0..4).map(|i| dev.iter().map(|r| r[i]).collect()).collect();
        compare(&manifest, &device, 0.5).remove(0)
    }

    #[test]
    fn the_allowance_grows_with_the_workstations_spread_not_the_devices() {
        // Steady runs (AUC 1 every run): the tolerance alone.
        let steady = [0.1, 0.2, 0.8, 0.9];
        let c = two_sided(&[steady; 4], &[steady; 4]);
        assert_eq!((c.workstation_auc_sd, c.noise_se), (0.0, 0.0));
        assert_eq!(c.allowed(0.02), 0.02);
        assert!(c.within(0.02));
        // Frames at the threshold: the workstation's AUC swings between 1 and 0.5 from run
        // to run (mean 0.75, sd 0.289 over 4 runs); the device's mean is 0.875, 0.125 off.
        let high = [0.1, 0.2, 0.8, 0.9];
        let tied = [0.1, 0.9, 0.15, 0.85]; // positives 0.15, 0.85 vs clean 0.1, 0.9: AUC ½
        let c = two_sided(&[high, tied, high, tied], &[high, high, high, tied]);
        assert!((c.workstation_auc - 0.75).abs() < 1e-12);
        assert!((c.device_auc - 0.875).abs() < 1e-12);
        let sd = (4.0 * 0.25f64.powi(2) / 3.0).sqrt();
        assert!((c.workstation_auc_sd - sd).abs() < 1e-12);
        assert!((c.noise_se - sd * (0.5f64).sqrt()).abs() < 1e-12);
        assert!((c.allowed(0.02) - NOISE_SIGMAS * c.noise_se).abs() < 1e-12);
        assert!(c.within(0.02), "0.125 off, allowed {}", c.allowed(0.02));
        // A device that gets it wrong every run fails however noisy it is itself.
        let wrong = [0.8, 0.9, 0.1, 0.2];
        let c = two_sided(&[steady; 4], &[wrong, steady, wrong, wrong]);
        assert_eq!(c.noise_se, 0.0);
        assert!(!c.within(0.02), "Δ {}", c.auc_delta());
    }
}
