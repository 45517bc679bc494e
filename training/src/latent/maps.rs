//! The paper's Figs 1 and 4: MI and predictive entropy of the classifier over the VAE's 2-D
//! latent space. A `side`×`side` grid of latent points on [−extent, extent]² is decoded into
//! images, each scored by MC dropout (T samples); the encoded test digits, coloured by class,
//! show where the data lie. Where the map is bright far from every digit, the model is
//! uncertain off the data (what MI should do); where it is dark there, the model is confidently
//! wrong about images unlike any digit — the "holes".

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use serde::Serialize;
use tch::{Kind, Tensor};

use super::vae::{encode_means, Vae};
use crate::nets::{mc_measures, DropoutNet};
use crate::plot::{register_font, write_png, FONT};

/// A scored latent grid, row-major from the top-left corner (z₁ = −extent, z₂ = +extent),
/// and the encoded points drawn over it.
#[derive(Debug, Clone, Serialize)]
pub struct LatentMap {
    pub side: usize,
    pub extent: f64,
    /// T, per member for an ensemble.
    pub samples: usize,
    /// Networks whose samples are pooled: 1, or an ensemble's members.
    pub members: usize,
    pub seed: u64,
    /// Per cell: mutual information, predictive entropy (nats), predicted class.
    pub mutual_information: Vec<f64>,
    pub predictive_entropy: Vec<f64>,
    pub class: Vec<usize>,
    /// Encoded test digits: (z₁, z₂, label).
    pub points: Vec<(f32, f32, u8)>,
}

/// The maps in numbers: cells near the data (within `near` of an encoded test digit) against
/// cells far from it (at least `far` from every one), as the paper's captions compare them.
#[derive(Debug, Clone, Serialize)]
pub struct MapSummary {
    pub near: f64,
    pub far: f64,
    /// The gate's MI threshold the shares below use.
    pub threshold: f64,
    pub near_cells: usize,
    pub far_cells: usize,
    /// Median MI and predictive entropy of the near and of the far cells.
    pub median_mi: (f64, f64),
    pub median_entropy: (f64, f64),
    /// Share of near / far cells whose MI is at or above the threshold (the gate rejects them).
    pub rejected: (f64, f64),
    /// Share of far cells with predictive entropy ≥ 1 nat but MI under the threshold.
    pub far_high_entropy_low_mi: f64,
}

/// Summarises `map` (see [`MapSummary`]).
pub fn summary(map: &LatentMap, near: f64, far: f64, threshold: f64) -> MapSummary {
    let codes: Vec<f32> = map.points.iter().flat_map(|p| [p.0, p.1]).collect();
    let codes = Tensor::from_slice(&codes).view([-1, 2]);
    let distance = nearest_distances(&grid_points(map.side, map.extent), &codes);
    let (mut n, mut f) = (vec![], vec![]);
    for (k, &d) in distance.iter().enumerate() {
        if d < near {
            n.push(k);
        } else if d >= far {
            f.push(k);
        }
    }
    let median = |cells: &[usize], v: &[f64]| {
        let mut x: Vec<f64> = cells.iter().map(|&k| v[k]).collect();
        x.sort_by(f64::total_cmp);
        x.get(x.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let share = |cells: &[usize], keep: &dyn Fn(usize) -> bool| {
        cells.iter().filter(|&&k| keep(k)).count() as f64 / cells.len().max(1) as f64
    };
    let (mi, h) = (&map.mutual_information, &map.predictive_entropy);
    MapSummary {
        near,
        far,
        threshold,
        near_cells: n.len(),
        far_cells: f.len(),
        median_mi: (median(&n, mi), median(&f, mi)),
        median_entropy: (median(&n, h), median(&f, h)),
        rejected: (
            share(&n, &|k| mi[k] >= threshold),
            share(&f, &|k| mi[k] >= threshold),
        ),
        far_high_entropy_low_mi: share(&f, &|k| h[k] >= 1.0 && mi[k] < threshold),
    }
}

/// Every cell's latent point, `[side², 2]`, row-major from the top-left corner.
pub fn grid_points(side: usize, extent: f64) -> Tensor {
    let mut z = Vec::with_capacity(side * side * 2);
    for row in 0..side {
        for col in 0..side {
            let (z1, z2) = cell_centre(side, extent, row, col);
            z.extend([z1 as f32, z2 as f32]);
        }
    }
    Tensor::from_slice(&z).view([(side * side) as i64, 2])
}

/// Distance from each of `points` `[P, 2]` to its nearest row of `codes` `[N, 2]`.
pub fn nearest_distances(points: &Tensor, codes: &Tensor) -> Vec<f64> {
    let _guard = tch::no_grad_guard();
    let mut out = vec![];
    for chunk in points.split(256, 0) {
        let d = chunk.unsqueeze(1) - codes.unsqueeze(0); // [p, N, 2]
        let nearest = d
            .square()
            .sum_dim_intlist(2, false, Kind::Float)
            .min_dim(1, false)
            .0
            .sqrt();
        out.extend(
            Vec::<f32>::try_from(nearest)
                .expect("floats")
                .into_iter()
                .map(f64::from),
        );
    }
    out
}

/// The latent point of cell (`row`, `col`): cell centres, top row at +extent.
pub fn cell_centre(side: usize, extent: f64, row: usize, col: usize) -> (f64, f64) {
    let step = 2.0 * extent / side as f64;
    (
        -extent + (col as f64 + 0.5) * step,
        extent - (row as f64 + 0.5) * step,
    )
}

/// Scores the grid with `net` (T = `samples`, masks from tch's generator seeded with `seed`)
/// and encodes `test` images `[N, 1, 28, 28]` with their `labels` for the overlay.
pub fn score(
    vae: &Vae,
    net: &dyn DropoutNet,
    side: usize,
    extent: f64,
    samples: usize,
    seed: u64,
    test: (&Tensor, &[u8]),
) -> Result<LatentMap> {
    let z = grid_points(side, extent);
    let images = tch::no_grad(|| vae.decode(&z));
    tch::manual_seed(seed as i64);
    let m = mc_measures(net, &images, samples as i64)?;
    let codes = encode_means(vae, test.0);
    let codes = Vec::<f32>::try_from(codes.to_kind(Kind::Float).flatten(0, -1))?;
    Ok(LatentMap {
        side,
        extent,
        samples,
        members: net.member_count(),
        seed,
        mutual_information: m.iter().map(|m| m.mutual_information).collect(),
        predictive_entropy: m.iter().map(|m| m.predictive_entropy).collect(),
        class: m.iter().map(|m| m.predicted_class).collect(),
        points: codes
            .chunks_exact(2)
            .zip(test.1)
            .map(|(c, &l)| (c[0], c[1], l))
            .collect(),
    })
}

/// Ten distinguishable class colours (matplotlib's tab10).
const CLASS_COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Writes `<stem>.png` and `<stem>.svg`: the MI map beside the entropy map, test digits on top.
pub fn write_figure(map: &LatentMap, stem: &Path, title: &str) -> Result<Vec<PathBuf>> {
    register_font()?;
    let (png, svg) = (stem.with_extension("png"), stem.with_extension("svg"));
    let size = (1200, 640);
    write_png(&png, size, |area| draw(area, map, title))
        .with_context(|| format!("drawing {}", png.display()))?;
    draw(SVGBackend::new(&svg, size).into_drawing_area(), map, title)
        .with_context(|| format!("drawing {}", svg.display()))?;
    Ok(vec![png, svg])
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    map: &LatentMap,
    title: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
    root.fill(&WHITE).map_err(err)?;
    let (top, body) = root.split_vertically(40);
    top.draw_text(title, &(FONT, 17).into_font().color(&BLACK), (10, 10))
        .map_err(err)?;
    let panels = body.split_evenly((1, 2));
    let e = map.extent;
    for (area, (name, values)) in panels.iter().zip([
        ("mutual information", &map.mutual_information),
        ("predictive entropy", &map.predictive_entropy),
    ]) {
        let max = values.iter().copied().fold(0.0, f64::max).max(1e-12);
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!(
                    "{name} (T = {}{}; dark 0, yellow {max:.3} nats)",
                    map.samples,
                    match map.members {
                        1 => String::new(),
                        m => format!(" × {m} members"),
                    }
                ),
                (FONT, 14),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(36)
            .build_cartesian_2d(-e..e, -e..e)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("z₁")
            .y_desc("z₂")
            .label_style((FONT, 11))
            .draw()
            .map_err(err)?;
        let step = 2.0 * e / map.side as f64;
        chart
            .draw_series(values.iter().enumerate().map(|(k, &v)| {
                let (x, y) = cell_centre(map.side, e, k / map.side, k % map.side);
                let colour = ViridisRGB::get_color(v / max);
                Rectangle::new(
                    [
                        (x - step / 2.0, y - step / 2.0),
                        (x + step / 2.0, y + step / 2.0),
                    ],
                    colour.filled(),
                )
            }))
            .map_err(err)?;
        chart
            .draw_series(
                map.points
                    .iter()
                    .filter(|p| p.0.abs() as f64 <= e && p.1.abs() as f64 <= e)
                    .map(|&(x, y, l)| {
                        Circle::new(
                            (x as f64, y as f64),
                            2,
                            CLASS_COLOURS[l as usize % 10].filled(),
                        )
                    }),
            )
            .map_err(err)?;
    }
    // Class key along the bottom of the title bar.
    for (c, colour) in CLASS_COLOURS.iter().enumerate() {
        let x = 770 + 42 * c as i32;
        top.draw(&Circle::new((x, 20), 5, colour.filled()))
            .map_err(err)?;
        top.draw_text(
            &c.to_string(),
            &(FONT, 13).into_font().color(&BLACK),
            (x + 8, 12),
        )
        .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_cover_the_square_top_row_first() {
        assert_eq!(cell_centre(4, 10.0, 0, 0), (-7.5, 7.5));
        assert_eq!(cell_centre(4, 10.0, 3, 3), (7.5, -7.5));
        assert_eq!(cell_centre(40, 10.0, 0, 39), (9.75, 9.75));
        let z = Vec::<f32>::try_from(grid_points(2, 10.0).flatten(0, -1)).unwrap();
        assert_eq!(z, [-5.0, 5.0, 5.0, 5.0, -5.0, -5.0, 5.0, -5.0]);
    }

    #[test]
    fn nearest_distance_is_to_the_closest_code() {
        let codes = Tensor::from_slice(&[0f32, 0.0, 3.0, 4.0]).view([2, 2]);
        let points = Tensor::from_slice(&[0f32, 1.0, 3.0, 0.0, 6.0, 8.0]).view([3, 2]);
        let d = nearest_distances(&points, &codes);
        assert_eq!(d, [1.0, 3.0, 5.0]);
    }
}
