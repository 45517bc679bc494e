//! The eval bundle: frames (clean, matched noise, adversarial per attack) as 8-bit PNG files
//! plus a manifest with the workstation's scores, for `mcgate validate` on the device.
//!
//! Adversarial images are quantised to 8 bits *before* the workstation scores them, so both
//! sides score the very same pixels (a camera delivers 8-bit frames too).

use std::path::Path;

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

use crate::attack::{self, Attack, Method, Target};
use crate::eval::noise::matched_noise;
use crate::eval::tch_scores::tch_scores;
use crate::measures::Measure;
use crate::nets::DropoutNet;
use mcgate::contract::bundle::{BundleFrame, Group, Manifest, Role, BUNDLE_SCHEMA};

pub struct BundleConfig {
    pub seed: u64,
    pub samples: i64,
    /// Independent MC runs scored per frame (see `mcgate::contract::bundle::Manifest::repeats`).
    pub repeats: usize,
    /// (method, ε on the 0–255 scale); every attack targets the MC model (paper loss).
    pub attacks: Vec<(Method, f64)>,
}

fn quantise(x: &Tensor) -> Tensor {
    (x * 255.0).round().clamp(0.0, 255.0) / 255.0
}

/// The clean images a bundle attacks, and how one image's pixels become a frame file.
pub struct BundleImages<'a> {
    /// Pixels in [0, 1], `[N, C, H, W]`.
    pub pixels: Tensor,
    /// True labels.
    pub labels: Vec<usize>,
    /// Image `k`'s (8-bit) pixels `[C, H, W]` as the frame the runtime reads back to exactly
    /// them: the image itself for a stretch card, the resized photo around it for a crop card.
    #[allow(clippy::type_complexity)]
    pub frame: &'a dyn Fn(usize, &Tensor) -> Result<image::DynamicImage>,
}

/// A gray or RGB image of pixels `[C, H, W]` in [0, 1] (rounded to 8 bits): the frame of a
/// stretch card whose input size the images already have.
pub fn plain_frame(pixels: &Tensor) -> Result<image::DynamicImage> {
    let size = pixels.size();
    let (c, h, w) = (size[0], size[1] as u32, size[2] as u32);
    let hwc = (pixels * 255.0)
        .round()
        .clamp(0.0, 255.0)
        .permute([1, 2, 0])
        .to_kind(Kind::Uint8)
        .to_device(Device::Cpu)
        .contiguous();
    let bytes = Vec::<u8>::try_from(hwc.flatten(0, -1)).context("reading pixels")?;
    Ok(match c {
        1 => image::GrayImage::from_raw(w, h, bytes)
            .context("frame size")?
            .into(),
        3 => image::RgbImage::from_raw(w, h, bytes)
            .context("frame size")?
            .into(),
        c => anyhow::bail!("{c} channels: frames are gray or RGB"),
    })
}

pub fn write(
    net: &dyn DropoutNet,
    images: &BundleImages,
    card_sha256: &str,
    threshold: f64,
    cfg: &BundleConfig,
    out: &Path,
    device: Device,
) -> Result<usize> {
    tch::manual_seed(cfg.seed as i64);
    let x = images.pixels.to_device(device);
    let clean_scores = tch_scores(net, &x, cfg.samples)?;
    let own_pred = Tensor::from_slice(&clean_scores.mc_pred).to_device(device);

    let mut groups = vec![Group {
        name: "clean".into(),
        role: Role::Negative,
        paired_with: None,
        method: None,
        eps_255: None,
    }];
    let mut sets: Vec<(String, Tensor)> = vec![("clean".into(), x.shallow_clone())];
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
        sets.push((name.clone(), adv));
        sets.push((format!("noise_for_{name}"), noise));
    }

    let mut frames = vec![];
    for (group, tensor) in &sets {
        std::fs::create_dir_all(out.join(group))
            .with_context(|| format!("creating {}", out.join(group).display()))?;
        let runs = (0..cfg.repeats.max(1))
            .map(|_| tch_scores(net, tensor, cfg.samples))
            .collect::<Result<Vec<_>>>()?;
        for k in 0..images.labels.len() {
            let file = format!("{group}/{k:04}.png");
            (images.frame)(k, &tensor.get(k as i64))?
                .save(out.join(&file))
                .with_context(|| format!("writing {file}"))?;
            frames.push(BundleFrame {
                file,
                group: group.clone(),
                label: images.labels[k],
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

/// Adversarial frames to add to a bundle as one positive group.
pub struct ExtraGroup {
    pub group: Group,
    /// 8-bit pixels in [0, 1], `[N, C, H, W]`.
    pub pixels: Tensor,
    pub labels: Vec<usize>,
}

/// Adds `extra` to the bundle in `dir`, which must be for the ONNX file `onnx_sha256`, as
/// positive groups scored by the workstation as the bundle's own frames were (its T, repeats
/// and seed), each frame written by `frame` (see [`BundleImages::frame`]); groups of an
/// earlier call whose names start with `prefix` are replaced, their files removed. Returns
/// the frames added.
pub fn append(
    net: &dyn DropoutNet,
    dir: &Path,
    onnx_sha256: &str,
    prefix: &str,
    extra: &[ExtraGroup],
    frame: &dyn Fn(usize, &Tensor) -> Result<image::DynamicImage>,
) -> Result<usize> {
    let mut manifest = Manifest::read(dir)?;
    anyhow::ensure!(
        manifest.onnx_sha256 == onnx_sha256,
        "{} is a bundle for another ONNX file than the judged model's",
        dir.display()
    );
    for old in manifest
        .groups
        .iter()
        .filter(|g| g.name.starts_with(prefix))
    {
        let folder = dir.join(&old.name);
        if folder.exists() {
            std::fs::remove_dir_all(&folder)
                .with_context(|| format!("removing {}", folder.display()))?;
        }
    }
    manifest.groups.retain(|g| !g.name.starts_with(prefix));
    manifest.frames.retain(|f| !f.group.starts_with(prefix));
    tch::manual_seed(manifest.seed as i64);
    let mut added = 0;
    for e in extra {
        let name = &e.group.name;
        anyhow::ensure!(
            name.starts_with(prefix),
            "group {name} lacks the prefix {prefix}"
        );
        std::fs::create_dir_all(dir.join(name))
            .with_context(|| format!("creating {}", dir.join(name).display()))?;
        let runs = (0..manifest.repeats)
            .map(|_| tch_scores(net, &e.pixels, manifest.samples as i64))
            .collect::<Result<Vec<_>>>()?;
        for (k, &label) in e.labels.iter().enumerate() {
            let file = format!("{name}/{k:04}.png");
            frame(k, &e.pixels.get(k as i64))?
                .save(dir.join(&file))
                .with_context(|| format!("writing {file}"))?;
            manifest.frames.push(BundleFrame {
                file,
                group: name.clone(),
                label,
                workstation_class: runs[0].mc_pred[k] as usize,
                workstation_mutual_information: runs
                    .iter()
                    .map(|s| s.by_measure[&Measure::MutualInformation][k])
                    .collect(),
            });
            added += 1;
        }
        manifest.groups.push(e.group.clone());
    }
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )
    .context("writing manifest.json")?;
    Ok(added)
}
