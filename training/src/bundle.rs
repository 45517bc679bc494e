//! The eval bundle: frames (clean, matched noise, adversarial per attack) as 8-bit PNG files
//! plus a manifest with the workstation's scores, for `mcgate validate` on the device.
//!
//! Adversarial images are quantised to 8 bits *before* the workstation scores them, so both
//! sides score the very same pixels (a camera delivers 8-bit frames too).

use std::path::Path;

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

use crate::attack::{self, Attack, Method, Target};
use crate::data::Dataset;
use crate::eval::noise::matched_noise;
use crate::eval::tch_scores::tch_scores;
use crate::measures::Measure;
use crate::nets::DropoutNet;
use mcgate::validate::{BundleFrame, Group, Manifest, Role, BUNDLE_SCHEMA};

pub struct BundleConfig {
    pub images: usize,
    pub seed: u64,
    pub samples: i64,
    /// Independent MC runs scored per frame (see `mcgate::validate::Manifest::repeats`).
    pub repeats: usize,
    /// (method, ε on the 0–255 scale); every attack targets the MC model (paper loss).
    pub attacks: Vec<(Method, f64)>,
}

fn quantise(x: &Tensor) -> Tensor {
    (x * 255.0).round().clamp(0.0, 255.0) / 255.0
}

fn to_png_bytes(x: &Tensor) -> Result<Vec<Vec<u8>>> {
    let n = x.size()[0];
    let bytes = (x * 255.0)
        .round()
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8)
        .to_device(Device::Cpu)
        .contiguous();
    let flat = Vec::<u8>::try_from(bytes.flatten(0, -1)).context("reading pixels")?;
    Ok(flat
        .chunks(flat.len() / n as usize)
        .map(|c| c.to_vec())
        .collect())
}

pub fn write(
    net: &dyn DropoutNet,
    test: &Dataset,
    card_sha256: &str,
    threshold: f64,
    cfg: &BundleConfig,
    out: &Path,
    device: Device,
) -> Result<usize> {
    tch::manual_seed(cfg.seed as i64);
    let subset = test.pick(cfg.images, cfg.seed);
    let (x, _) = subset.to_tensors(device);
    let clean_scores = tch_scores(net, &x, cfg.samples)?;
    let own_pred = Tensor::from_slice(&clean_scores.mc_pred).to_device(device);

    let mut groups = vec![Group {
        name: "clean".into(),
        role: Role::Negative,
        paired_with: None,
        method: None,
        eps_255: None,
    }];
    let mut images: Vec<(String, Tensor)> = vec![("clean".into(), x.shallow_clone())];
    for &(method, eps) in &cfg.attacks {
        let name = format!("{}_eps{}", format!("{method:?}").to_lowercase(), eps);
        let a = Attack::paper(
            method,
            eps,
            Target::McMean {
                samples: cfg.samples,
            },
        );
        let adv = quantise(&attack::run(net, &x, &own_pred, &a));
        let noise = quantise(&matched_noise(&x, &adv));
        groups.push(Group {
            name: name.clone(),
            role: Role::Positive,
            paired_with: None,
            method: Some(format!("{method:?}").to_uppercase()),
            eps_255: Some(eps),
        });
        groups.push(Group {
            name: format!("noise_for_{name}"),
            role: Role::Negative,
            paired_with: Some(name.clone()),
            method: None,
            eps_255: Some(eps),
        });
        images.push((name.clone(), adv));
        images.push((format!("noise_for_{name}"), noise));
    }

    let mut frames = vec![];
    for (group, tensor) in &images {
        std::fs::create_dir_all(out.join(group))
            .with_context(|| format!("creating {}", out.join(group).display()))?;
        let runs = (0..cfg.repeats.max(1))
            .map(|_| tch_scores(net, tensor, cfg.samples))
            .collect::<Result<Vec<_>>>()?;
        for (k, pixels) in to_png_bytes(tensor)?.into_iter().enumerate() {
            let file = format!("{group}/{k:04}.png");
            let img = image::GrayImage::from_raw(test.cols as u32, test.rows as u32, pixels)
                .context("frame size")?;
            img.save(out.join(&file))
                .with_context(|| format!("writing {file}"))?;
            frames.push(BundleFrame {
                file,
                group: group.clone(),
                label: subset.labels[k] as usize,
                workstation_class: runs[0].mc_pred[k] as usize,
                workstation_mutual_information: runs
                    .iter()
                    .map(|s| s.by_measure[&Measure::MutualInformation][k])
                    .collect(),
            });
        }
    }
    let manifest = Manifest {
        schema: BUNDLE_SCHEMA.into(),
        onnx_sha256: card_sha256.into(),
        samples: cfg.samples as usize,
        repeats: cfg.repeats.max(1),
        threshold,
        seed: cfg.seed,
        groups,
        frames,
    };
    let n = manifest.frames.len();
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )
    .context("writing manifest.json")?;
    Ok(n)
}

/// Copies the first `per_attack` frames of each adversarial group of the bundle in `bundle`
/// into `dir` (emptied first), named `<group>_<file>`: the adversarial sample frames.
pub fn copy_adversarial_frames(bundle: &Path, dir: &Path, per_attack: usize) -> Result<()> {
    let manifest = Manifest::read(bundle)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    for group in manifest.groups.iter().filter(|g| g.role == Role::Positive) {
        for f in manifest
            .frames
            .iter()
            .filter(|f| f.group == group.name)
            .take(per_attack)
        {
            let name = f.file.replace('/', "_");
            std::fs::copy(bundle.join(&f.file), dir.join(&name))
                .with_context(|| format!("copying {} to {}", f.file, dir.display()))?;
        }
    }
    Ok(())
}
