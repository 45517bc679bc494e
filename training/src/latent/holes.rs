//! The paper's Fig 5: "holes" — images far from every training digit that the model
//! nevertheless calls a digit with high confidence and low MI, so the MI gate lets them through.
//! An automated search: decode a fine latent grid, keep the points whose nearest encoded
//! training image is at least `min_distance` away in latent units, and among those count the
//! decoded images the MC model gives a maximum probability ≥ `confidence` with MI below the
//! gate's threshold.

use serde::Serialize;
use tch::Tensor;

use anyhow::Result;

use super::maps::{cell_centre, grid_points, nearest_distances};
use super::vae::Vae;
use crate::nets::{mc_measures, DropoutNet};

/// What the search looks for.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct HoleSearch {
    pub side: usize,
    pub extent: f64,
    /// Latent distance to the nearest encoded training image, at least.
    pub min_distance: f64,
    /// Maximum MC mean probability, at least.
    pub confidence: f64,
    /// MI below this (the gate's threshold) lets the image through.
    pub threshold: f64,
    pub samples: usize,
    pub seed: u64,
}

/// One hole: where, how far from the data, and what the model says.
#[derive(Debug, Clone, Serialize)]
pub struct Hole {
    pub z: (f64, f64),
    pub distance: f64,
    pub class: usize,
    pub max_probability: f64,
    pub mutual_information: f64,
}

/// The search's counts and its holes, farthest from the data first.
#[derive(Debug, Clone, Serialize)]
pub struct HoleReport {
    pub search: HoleSearch,
    pub grid_points: usize,
    /// Grid points at least `min_distance` from every encoded training image.
    pub far_points: usize,
    /// Far points the model calls a class with at least `confidence`.
    pub far_confident: usize,
    /// … of which MI is below the threshold: the holes.
    pub holes: Vec<Hole>,
    /// Far points whose MI is at or above the threshold (the gate rejects them).
    pub far_rejected: usize,
}

/// Runs the search; also returns the decoded holes `[H, 1, 28, 28]` in the report's order.
pub fn search(
    vae: &Vae,
    net: &dyn DropoutNet,
    training_codes: &Tensor,
    s: HoleSearch,
) -> Result<(HoleReport, Tensor)> {
    let z = grid_points(s.side, s.extent);
    let distance = nearest_distances(&z, training_codes);
    let far: Vec<i64> = (0..distance.len())
        .filter(|&i| distance[i] >= s.min_distance)
        .map(|i| i as i64)
        .collect();
    let far_z = z.index_select(0, &Tensor::from_slice(&far));
    let images = tch::no_grad(|| vae.decode(&far_z));
    tch::manual_seed(s.seed as i64);
    let m = mc_measures(net, &images, s.samples as i64)?;
    let confident: Vec<usize> = (0..far.len())
        .filter(|&k| m[k].max_probability >= s.confidence)
        .collect();
    let mut holes: Vec<usize> = confident
        .iter()
        .copied()
        .filter(|&k| m[k].mutual_information < s.threshold)
        .collect();
    // Farthest from the data first: a point just past `min_distance` may still decode to a
    // clean digit; the far ones are the garbage the paper's Fig 5 shows.
    holes.sort_by(|&a, &b| distance[far[b] as usize].total_cmp(&distance[far[a] as usize]));
    let report = HoleReport {
        search: s,
        grid_points: s.side * s.side,
        far_points: far.len(),
        far_confident: confident.len(),
        far_rejected: m
            .iter()
            .filter(|m| m.mutual_information >= s.threshold)
            .count(),
        holes: holes
            .iter()
            .map(|&k| {
                let i = far[k] as usize;
                Hole {
                    z: cell_centre(s.side, s.extent, i / s.side, i % s.side),
                    distance: distance[i],
                    class: m[k].predicted_class,
                    max_probability: m[k].max_probability,
                    mutual_information: m[k].mutual_information,
                }
            })
            .collect(),
    };
    let idx: Vec<i64> = holes.iter().map(|&k| k as i64).collect();
    let hole_images = images.index_select(0, &Tensor::from_slice(&idx));
    Ok((report, hole_images))
}
