//! The paper's Figs 2 and 3: images between two digits, made two ways — decoded from a straight
//! line in the VAE's latent space (images that look like digits, possibly ambiguous) and
//! blended in pixel space (double exposures, off the data) — and what the classifier's
//! entropy and MI say of each. The paper's claim: entropy is high for both (ambiguity), MI
//! only for the pixel-space blends (off the data), so MI separates them and entropy does not.
//! `midpoints` makes that testable as two AUCs with bootstrap intervals.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, ensure, Context, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Serialize;
use tch::{Kind, Tensor};

use super::vae::Vae;
use crate::nets::{mc_measures, DropoutNet};
use crate::plot::{register_font, write_png, FONT};
use mcgate::score::roc::{bootstrap_auc_interval, roc_auc};

/// Entropy and MI of scored images.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scores {
    pub predictive_entropy: Vec<f64>,
    pub mutual_information: Vec<f64>,
    pub class: Vec<usize>,
}

fn score(net: &dyn DropoutNet, images: &Tensor, samples: usize) -> Result<Scores> {
    let m = mc_measures(net, images, samples as i64)?;
    Ok(Scores {
        predictive_entropy: m.iter().map(|m| m.predictive_entropy).collect(),
        mutual_information: m.iter().map(|m| m.mutual_information).collect(),
        class: m.iter().map(|m| m.predicted_class).collect(),
    })
}

/// Latent-space and pixel-space images from `a` to `b` (`[1, 1, 28, 28]` each), `steps`
/// points including both ends: `[steps, 1, 28, 28]` each.
pub fn paths(vae: &Vae, a: &Tensor, b: &Tensor, steps: usize) -> (Tensor, Tensor) {
    let t = Tensor::linspace(0.0, 1.0, steps as i64, (Kind::Float, a.device())).view([-1, 1]);
    let _guard = tch::no_grad_guard();
    let (za, zb) = (vae.encode(a).0, vae.encode(b).0);
    let latent = vae.decode(&(&za + (&zb - &za) * &t));
    let t4 = t.view([-1, 1, 1, 1]);
    let pixel = a + (b - a) * t4;
    (latent, pixel)
}

/// One interpolation, scored (Fig 2).
#[derive(Debug, Clone, Serialize)]
pub struct Interpolation {
    pub from_label: u8,
    pub to_label: u8,
    pub samples: usize,
    pub latent: Scores,
    pub pixel: Scores,
}

/// Scores both paths between test images `a` and `b`; returns the scores and the two image
/// strips.
pub fn interpolation(
    vae: &Vae,
    net: &dyn DropoutNet,
    (a, b): (&Tensor, &Tensor),
    labels: (u8, u8),
    steps: usize,
    samples: usize,
    seed: u64,
) -> Result<(Interpolation, Tensor, Tensor)> {
    ensure!(steps >= 2, "an interpolation needs two steps");
    let (latent_images, pixel_images) = paths(vae, a, b, steps);
    tch::manual_seed(seed as i64);
    let latent = score(net, &latent_images, samples)?;
    let pixel = score(net, &pixel_images, samples)?;
    Ok((
        Interpolation {
            from_label: labels.0,
            to_label: labels.1,
            samples,
            latent,
            pixel,
        },
        latent_images,
        pixel_images,
    ))
}

/// Midpoints of random pairs of different-class digits (Fig 3) and how well each measure
/// tells the pixel-space ones (positives) from the latent-space ones (negatives).
#[derive(Debug, Clone, Serialize)]
pub struct Midpoints {
    pub pairs: usize,
    pub samples: usize,
    pub seed: u64,
    pub latent: Scores,
    pub pixel: Scores,
    /// ROC AUC, pixel-space midpoints above latent-space ones, with its 95 % bootstrap
    /// interval (pairs resampled: a pair's two midpoints are drawn together).
    pub auc_mutual_information: (f64, Option<(f64, f64)>),
    pub auc_predictive_entropy: (f64, Option<(f64, f64)>),
}

/// `pairs` random pairs of test images `x` `[N, 1, 28, 28]` with different `labels`, chosen
/// with the runtime's generator from `seed`; both midpoints of each, scored.
pub fn midpoints(
    vae: &Vae,
    net: &dyn DropoutNet,
    (x, labels): (&Tensor, &[u8]),
    pairs: usize,
    samples: usize,
    seed: u64,
    bootstrap: usize,
) -> Result<Midpoints> {
    let n = labels.len() as u64;
    ensure!(n >= 2 && pairs > 0, "need test images and pairs");
    let mut rng = mcgate::run::rng::WyRand::new(seed);
    let (mut ia, mut ib) = (vec![], vec![]);
    while ia.len() < pairs {
        let (i, j) = (rng.next_u64() % n, rng.next_u64() % n);
        if labels[i as usize] != labels[j as usize] {
            ia.push(i as i64);
            ib.push(j as i64);
        }
    }
    let a = x.index_select(0, &Tensor::from_slice(&ia).to_device(x.device()));
    let b = x.index_select(0, &Tensor::from_slice(&ib).to_device(x.device()));
    let (latent_images, pixel_images) = tch::no_grad(|| {
        let z = (vae.encode(&a).0 + vae.encode(&b).0) * 0.5;
        (vae.decode(&z), (&a + &b) * 0.5)
    });
    tch::manual_seed(seed as i64);
    let latent = score(net, &latent_images, samples)?;
    let pixel = score(net, &pixel_images, samples)?;
    let auc = |neg: &[f64], pos: &[f64]| {
        let grouped = |v: &[f64]| v.iter().copied().zip(0..).collect::<Vec<(f64, usize)>>();
        (
            roc_auc(neg, pos).unwrap_or(f64::NAN),
            bootstrap_auc_interval(&grouped(neg), &grouped(pos), bootstrap, seed),
        )
    };
    Ok(Midpoints {
        pairs,
        samples,
        seed,
        auc_mutual_information: auc(&latent.mutual_information, &pixel.mutual_information),
        auc_predictive_entropy: auc(&latent.predictive_entropy, &pixel.predictive_entropy),
        latent,
        pixel,
    })
}

/// Image strips as one gray PNG: a row per strip, each image `scale`× its size.
pub fn write_strips(path: &Path, strips: &[&Tensor], scale: u32) -> Result<()> {
    let rows = strips.len() as u32;
    let cols = strips.first().map_or(0, |s| s.size()[0]) as u32;
    let (w, h) = (cols * 28 * scale, rows * 28 * scale);
    let mut img = image::GrayImage::new(w, h);
    for (r, strip) in strips.iter().enumerate() {
        let v = Vec::<f32>::try_from(strip.to_kind(Kind::Float).flatten(0, -1))?;
        for (k, &p) in v.iter().enumerate() {
            let (c, y, x) = (k / 784, (k % 784) / 28, k % 28);
            let level = (p.clamp(0.0, 1.0) * 255.0).round() as u8;
            for dy in 0..scale {
                for dx in 0..scale {
                    img.put_pixel(
                        (c as u32 * 28 + x as u32) * scale + dx,
                        (r as u32 * 28 + y as u32) * scale + dy,
                        image::Luma([level]),
                    );
                }
            }
        }
    }
    img.save(path)
        .with_context(|| format!("writing {}", path.display()))
}

const LATENT_COLOUR: RGBColor = RGBColor(31, 119, 180);
const PIXEL_COLOUR: RGBColor = RGBColor(214, 39, 40);

/// The two figures, each two panels side by side.
#[derive(Clone, Copy)]
enum Figure<'a> {
    /// Entropy and MI along the two paths.
    Interpolation(&'a Interpolation),
    /// Histograms of entropy and MI of the two kinds of midpoint.
    Midpoints(&'a Midpoints),
}

/// Writes `<stem>.png/.svg`: entropy and MI along the two paths.
pub fn write_interpolation_figure(
    it: &Interpolation,
    stem: &Path,
    title: &str,
) -> Result<Vec<PathBuf>> {
    write_two_panels(stem, title, Figure::Interpolation(it))
}

/// Writes `<stem>.png/.svg`: histograms of entropy and MI of the two kinds of midpoint.
pub fn write_midpoint_figure(m: &Midpoints, stem: &Path, title: &str) -> Result<Vec<PathBuf>> {
    write_two_panels(stem, title, Figure::Midpoints(m))
}

/// A titled figure of two side-by-side panels as PNG and SVG.
fn write_two_panels(stem: &Path, title: &str, figure: Figure) -> Result<Vec<PathBuf>> {
    register_font()?;
    let (png, svg) = (stem.with_extension("png"), stem.with_extension("svg"));
    let size = (1100, 450);
    write_png(&png, size, |root| draw(root, title, figure))
        .with_context(|| format!("drawing {}", png.display()))?;
    draw(
        SVGBackend::new(&svg, size).into_drawing_area(),
        title,
        figure,
    )
    .with_context(|| format!("drawing {}", svg.display()))?;
    Ok(vec![png, svg])
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, title: &str, figure: Figure) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
    root.fill(&WHITE).map_err(err)?;
    let (top, body) = root.split_vertically(36);
    top.draw_text(title, &(FONT, 16).into_font().color(&BLACK), (10, 10))
        .map_err(err)?;
    for (k, area) in body.split_evenly((1, 2)).iter().enumerate() {
        match figure {
            Figure::Interpolation(it) => {
                let (name, l, p) = if k == 0 {
                    (
                        "predictive entropy (nats)",
                        &it.latent.predictive_entropy,
                        &it.pixel.predictive_entropy,
                    )
                } else {
                    (
                        "mutual information (nats)",
                        &it.latent.mutual_information,
                        &it.pixel.mutual_information,
                    )
                };
                curves_panel(area, name, l, p).map_err(err)?;
            }
            Figure::Midpoints(m) => {
                let (name, l, p, auc) = if k == 0 {
                    (
                        "predictive entropy (nats)",
                        &m.latent.predictive_entropy,
                        &m.pixel.predictive_entropy,
                        m.auc_predictive_entropy.0,
                    )
                } else {
                    (
                        "mutual information (nats)",
                        &m.latent.mutual_information,
                        &m.pixel.mutual_information,
                        m.auc_mutual_information.0,
                    )
                };
                histogram_panel(area, name, l, p, auc).map_err(err)?;
            }
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

fn curves_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    name: &str,
    latent: &[f64],
    pixel: &[f64],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let top = latent
        .iter()
        .chain(pixel)
        .copied()
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.1;
    let steps = latent.len();
    let mut chart = ChartBuilder::on(area)
        .caption(name, (FONT, 14))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(45)
        .build_cartesian_2d(0.0..1.0, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("position t between the two digits")
        .label_style((FONT, 11))
        .draw()?;
    let t = |i: usize| i as f64 / (steps - 1).max(1) as f64;
    for (values, colour, label) in [
        (latent, LATENT_COLOUR, "latent space"),
        (pixel, PIXEL_COLOUR, "pixel space"),
    ] {
        chart
            .draw_series(LineSeries::new(
                values.iter().enumerate().map(|(i, &v)| (t(i), v)),
                colour.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
    }
    draw_legend(&mut chart)
}

fn histogram_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    name: &str,
    latent: &[f64],
    pixel: &[f64],
    auc: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    const BINS: usize = 30;
    let top = latent
        .iter()
        .chain(pixel)
        .copied()
        .fold(0.0, f64::max)
        .max(1e-9);
    let width = top / BINS as f64;
    let counts = |v: &[f64]| {
        let mut c = vec![0usize; BINS];
        for &x in v {
            c[((x / width) as usize).min(BINS - 1)] += 1;
        }
        c
    };
    let (cl, cp) = (counts(latent), counts(pixel));
    let most = cl.iter().chain(&cp).copied().max().unwrap_or(1) as f64 * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{name}; AUC pixel vs latent {auc:.3}"), (FONT, 14))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(45)
        .build_cartesian_2d(0.0..top, 0.0..most)?;
    chart
        .configure_mesh()
        .y_desc("midpoints")
        .label_style((FONT, 11))
        .draw()?;
    for (c, colour, label) in [
        (&cl, LATENT_COLOUR, "latent-space midpoints"),
        (&cp, PIXEL_COLOUR, "pixel-space midpoints"),
    ] {
        chart
            .draw_series(c.iter().enumerate().map(|(i, &n)| {
                let x0 = i as f64 * width;
                Rectangle::new(
                    [(x0, 0.0), (x0 + width, n as f64)],
                    colour.mix(0.45).filled(),
                )
            }))?
            .label(label)
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.mix(0.45).filled())
            });
    }
    draw_legend(&mut chart)
}

/// The legend of a panel's two series, in its top-right corner.
fn draw_legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font((FONT, 12))
        .draw()
}
