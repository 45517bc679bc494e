//! The shipped sample frames (`samples/mnist/`, the README's first command gates them): clean test
//! digits, Gaussian noise, out-of-distribution frames.

use std::path::Path;

use anyhow::{bail, Context, Result};
use image::GrayImage;

use crate::data::Dataset;

fn save(img: &GrayImage, path: &Path) -> Result<()> {
    img.save(path)
        .with_context(|| format!("writing {}", path.display()))
}

/// Box–Muller normal deviates from a seeded wyrand stream (the runtime's generator).
fn normals(seed: u64) -> impl Iterator<Item = f64> {
    let mut rng = mcgate::run::rng::WyRand::new(seed);
    std::iter::from_fn(move || {
        let u1 = ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        Some((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos())
    })
}

/// Writes `clean/digit_<label>_<test index>.png` (the first test image of each class),
/// `noise/gaussian_<k>.png` (dense: mean 128, σ 64, clipped), `noise/salt_<k>.png`
/// (sparse: 10 % of pixels white on black) and `ood/*.png` (an inverted digit, a
/// checkerboard, a smooth gradient). Returns the number of files.
pub fn write_samples(test: &Dataset, out: &Path, seed: u64) -> Result<usize> {
    let (w, h) = (test.cols as u32, test.rows as u32);
    for sub in ["clean", "noise", "ood"] {
        std::fs::create_dir_all(out.join(sub))
            .with_context(|| format!("creating {}", out.join(sub).display()))?;
    }
    let mut written = 0;
    let Some(&last_label) = test.labels.iter().max() else {
        bail!("no test images");
    };
    for label in 0..=last_label {
        let i = test
            .labels
            .iter()
            .position(|&l| l == label)
            .context("a class has no test image")?;
        let img = GrayImage::from_raw(w, h, test.image(i).to_vec()).context("image size")?;
        save(&img, &out.join(format!("clean/digit_{label}_{i}.png")))?;
        written += 1;
    }
    let mut noise = normals(seed);
    for k in 0..2 {
        let pixels = (0..w * h).map(|_| {
            (128.0 + 64.0 * noise.next().unwrap())
                .round()
                .clamp(0.0, 255.0) as u8
        });
        save(
            &GrayImage::from_raw(w, h, pixels.collect()).unwrap(),
            &out.join(format!("noise/gaussian_{k}.png")),
        )?;
        written += 1;
    }
    let mut rng = mcgate::run::rng::WyRand::new(seed ^ 0x5a17);
    for k in 0..2 {
        // 10 % white pixels: u < 0.1·2⁶⁴.
        let pixels = (0..w * h).map(|_| {
            if rng.next_u64() < u64::MAX / 10 {
                255
            } else {
                0
            }
        });
        save(
            &GrayImage::from_raw(w, h, pixels.collect()).unwrap(),
            &out.join(format!("noise/salt_{k}.png")),
        )?;
        written += 1;
    }
    let first = test.labels.iter().position(|&l| l == 3).unwrap_or(0);
    let inverted: Vec<u8> = test.image(first).iter().map(|&v| 255 - v).collect();
    save(
        &GrayImage::from_raw(w, h, inverted).unwrap(),
        &out.join("ood/inverted_digit.png"),
    )?;
    save(
        &GrayImage::from_fn(w, h, |x, y| {
            image::Luma([if (x / 4 + y / 4) % 2 == 0 { 255 } else { 0 }])
        }),
        &out.join("ood/checkerboard.png"),
    )?;
    save(
        &GrayImage::from_fn(w, h, |x, y| {
            image::Luma([((x + y) * 255 / (w + h - 2)) as u8])
        }),
        &out.join("ood/gradient.png"),
    )?;
    Ok(written + 3)
}
