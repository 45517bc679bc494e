//! How sparse each sparse dropout site's activation is, and what that makes the per-frame
//! multiply-adds of its dense layer: the figures behind docs/BENCHMARKS.md's sparse-difference
//! table.
//!
//! `cargo run --release --example site_sparsity -- models/mnist data/mnist/t10k-images-idx3-ubyte 500 20`
//!
//! Frames: the first N images of an MNIST-format idx3 file (28×28 u8), or every image file
//! under a folder. For each frame the trunk runs once (batch 1) and the masks are drawn as the
//! gate draws them (seed = frame index); printed per site: the share of non-zero activation
//! values (median, 5th, 95th percentile), and the layer's multiply-adds per frame at T — dense
//! (T × inputs × outputs) against sparse (non-zero rows once, plus the rows whose mask is not
//! the reference value, per sample).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::{DynamicImage, GrayImage};
use mcgate::engine::tract::sparse;
use mcgate::engine::tract::{split, TractGraph};
use mcgate::input::frame::decode_file;
use mcgate::input::preprocess::Preprocessor;
use mcgate::model::Model;
use mcgate::run::masks::{self, SiteMasks};
use tract_onnx::prelude::*;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: site_sparsity MODEL (IDX3-FILE|FOLDER) [FRAMES] [T]";
    let model = Model::load_from(Path::new(&args.next().context(usage)?))?;
    let frames_arg = PathBuf::from(args.next().context(usage)?);
    let count: usize = args.next().map_or(Ok(500), |s| s.parse())?;
    let samples: usize = args.next().map_or(Ok(20), |s| s.parse())?;
    let images = read_frames(&frames_arg, count)?;

    let Some(cut) = split::split(
        TractGraph::of(model.graph())
            .expect("tract read the model")
            .typed(),
        &model.card,
    )?
    else {
        bail!("no dropout site of this model takes the sparse path (mcgate info says why)");
    };
    let trunk = cut.trunk.into_optimized()?.into_runnable()?;
    let mut preprocessor = Preprocessor::new(&model.card.input);
    let sites = &model.card.dropout_sites;
    let starts = masks::site_starts(sites, samples);
    let mut nonzero: Vec<Vec<f64>> = vec![vec![]; cut.layers.len()];
    let mut sparse_macs: Vec<Vec<f64>> = vec![vec![]; cut.layers.len()];
    for (index, image) in images.iter().enumerate() {
        let input = preprocessor.run(image)?.to_vec();
        let x = tract_ndarray::Array::from_shape_vec(model.card.input.shape.to_vec(), input)?;
        let outputs = trunk.run(tvec![x.into_tensor().into_tvalue()])?;
        for (k, layer) in cut.layers.iter().enumerate() {
            let a = outputs[k].to_plain_array_view::<f32>()?;
            let site = &sites[layer.site];
            let stream = SiteMasks::new(site.p, starts[layer.site]);
            let reference = sparse::reference_value(site.p, stream.kept());
            let mut rows = 0usize;
            let mut corrections = 0usize;
            for (i, &v) in a.iter().enumerate() {
                if v != 0.0 {
                    rows += 1;
                    for t in 0..samples {
                        let m = stream.value(index as u64, t * layer.inputs + i);
                        corrections += (m != reference) as usize;
                    }
                }
            }
            let base = if reference != 0.0 { rows } else { 0 };
            nonzero[k].push(rows as f64 / layer.inputs as f64);
            sparse_macs[k].push(((base + corrections) * layer.outputs) as f64);
        }
    }
    println!(
        "{} frames of {}, T = {samples}",
        images.len(),
        frames_arg.display()
    );
    for (k, layer) in cut.layers.iter().enumerate() {
        let site = &sites[layer.site];
        let dense = (samples * layer.inputs * layer.outputs) as f64;
        let [lo, mid, hi] = percentiles(&mut nonzero[k]);
        let [_, macs, _] = percentiles(&mut sparse_macs[k]);
        println!(
            "{} (p = {}) into {} ({} → {}): non-zero {:.1} % (5th–95th {:.1}–{:.1} %); \
             multiply-adds per frame dense {:.2} M, sparse {:.3} M (median), {:.1}× fewer",
            site.input,
            site.p,
            cut.rest
                .node(cut.rest.input_outlets()?[k].node)
                .name
                .trim_end_matches(".sparse"),
            layer.inputs,
            layer.outputs,
            100.0 * mid,
            100.0 * lo,
            100.0 * hi,
            dense / 1e6,
            macs / 1e6,
            dense / macs
        );
    }
    Ok(())
}

/// 5th, 50th and 95th percentiles (nearest rank).
fn percentiles(values: &mut [f64]) -> [f64; 3] {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    [at(0.05), at(0.5), at(0.95)]
}

fn read_frames(path: &Path, count: usize) -> Result<Vec<DynamicImage>> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        files.sort();
        return files
            .iter()
            .filter(|f| f.is_file())
            .take(count)
            .map(|f| decode_file(f).with_context(|| f.display().to_string()))
            .collect();
    }
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    if bytes.len() < 16 || bytes[..4] != [0, 0, 8, 3] {
        bail!("{}: not an idx3 u8 file", path.display());
    }
    let dim = |k: usize| u32::from_be_bytes(bytes[4 * k..4 * k + 4].try_into().unwrap()) as usize;
    let (n, h, w) = (dim(1), dim(2), dim(3));
    (0..n.min(count))
        .map(|i| {
            let pixels = bytes[16 + i * h * w..16 + (i + 1) * h * w].to_vec();
            GrayImage::from_raw(w as u32, h as u32, pixels)
                .map(DynamicImage::ImageLuma8)
                .context("idx3 image")
        })
        .collect()
}
