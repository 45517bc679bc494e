//! `holes`: the paper's Fig 5 as an automated search — decoded latent points far from every
//! training digit that the MNIST model calls a digit with high confidence and low MI — counted,
//! the most confident shown and written as frames, and all of them gated through the runtime.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use mcgate::model::Model;
use tch::{Device, Kind, Tensor};

use super::{LatentInputs, LatentPair};
use crate::data::{self, Known};
use crate::eval::tract_scores::tract_scores;
use crate::export::{create_parent, with_ext};
use crate::latent::holes::{search, HoleSearch};
use crate::latent::interpolation::write_strips;
use crate::latent::maps::{grid_points, nearest_distances};
use crate::latent::vae::encode_means;

/// Holes listed in the JSON, farthest from the data first.
const LISTED: usize = 200;

#[derive(Debug, Args)]
pub struct HolesArgs {
    #[command(flatten)]
    pub inputs: LatentInputs,
    /// Cells per side of the latent grid.
    #[arg(long, default_value_t = 200)]
    pub side: usize,
    /// The grid covers [−extent, extent]².
    #[arg(long, default_value_t = 10.0)]
    pub extent: f64,
    /// A point counts as far from the data at this latent distance from every encoded
    /// training digit.
    #[arg(long, default_value_t = 1.0)]
    pub min_distance: f64,
    /// … and as a confident call at this maximum MC probability.
    #[arg(long, default_value_t = 0.9)]
    pub confidence: f64,
    /// MC samples per image.
    #[arg(long, default_value_t = 50)]
    pub samples: usize,
    /// The holes farthest from the data written as PNG frames (for `mcgate gate`) and in
    /// the strip.
    #[arg(long, default_value_t = 20)]
    pub frames: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output stem: <OUT>.json, <OUT>-images.png, <OUT>-frames/.
    #[arg(long, default_value = "docs/results/holes")]
    pub out: PathBuf,
    /// Other exported models (stems, comma-separated) that also gate every hole found, each
    /// at its own card's threshold and T: e.g. whether an ensemble fills the single model's
    /// holes. A card with fused signals or tamper checks is judged by its whole gate, each
    /// hole as an 8-bit frame.
    #[arg(long, value_delimiter = ',', value_name = "STEM")]
    pub also: Vec<PathBuf>,
    /// Also write every hole, farthest first, as raw 8-bit 28×28 frames one after another
    /// (the stdin format of `mcgate gate - --width 28 --height 28`): material for judging
    /// other signals on all the holes.
    #[arg(long, value_name = "PATH")]
    pub raw: Option<PathBuf>,
    /// Also write the control for `--raw`: every grid point nearer than `--min-distance` to
    /// an encoded training digit, decoded, as raw 8-bit frames — the VAE's decodes on the
    /// data, to tell a signal that finds holes from one that finds the decoder's blur.
    #[arg(long, value_name = "PATH")]
    pub near_raw: Option<PathBuf>,
}

pub fn run(args: HolesArgs) -> Result<()> {
    let LatentPair { vae, net, .. } = LatentPair::load(&args.inputs)?;
    let model = Model::load_from(&args.inputs.model)?;
    let threshold = model
        .card
        .mi_threshold()
        .context("the model card has no MI threshold")?;
    let train = data::load_split(&args.inputs.data, "train", Known::Mnist.fetch_hint())?;
    let (x, _) = train.to_tensors(Device::Cpu);
    let codes = encode_means(&vae, &x);
    let s = HoleSearch {
        side: args.side,
        extent: args.extent,
        min_distance: args.min_distance,
        confidence: args.confidence,
        threshold,
        samples: args.samples,
        seed: args.seed,
    };
    let (report, images) = search(&vae, net.as_dyn(), &codes, s)?;

    // The runtime's verdict on every hole (its own masks, the card's T).
    let floats = Vec::<f32>::try_from(images.to_kind(Kind::Float).flatten(0, -1))?;
    let rejected = rejected_by(&model, &floats, threshold, args.seed)?;
    let mut also = vec![];
    for stem in &args.also {
        let other = Model::load_from(stem)?;
        let t = other
            .card
            .mi_threshold()
            .with_context(|| format!("{} has no MI threshold", stem.display()))?;
        let samples = other.card.default_samples;
        // A card with more than its MI threshold (fused signals, tamper checks) is judged by
        // the whole gate, on the 8-bit frames a camera would send.
        let whole_gate = other.card.fusion.is_some() || other.card.tamper.is_some();
        let rejected = match whole_gate {
            true => rejected_by_gate(&other, &floats, t, args.seed)?,
            false => rejected_by(&other, &floats, t, args.seed)?,
        };
        println!(
            "{} rejects {rejected} of the {} holes (T = {samples}, {})",
            stem.display(),
            report.holes.len(),
            match whole_gate {
                true => "its whole gate, 8-bit frames".to_string(),
                false => format!("threshold {t:.4}"),
            }
        );
        also.push(serde_json::json!({
            "model": stem.display().to_string(),
            "samples": samples,
            "threshold": t,
            "holes_rejected": rejected,
        }));
    }

    create_parent(&args.out)?;
    let name = args
        .out
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("holes")
        .to_string();
    let shown = (report.holes.len().min(args.frames)) as i64;
    let top = images.narrow(0, 0, shown);
    if shown > 0 {
        write_strips(
            &args.out.with_file_name(format!("{name}-images.png")),
            &[&top],
            3,
        )?;
    }
    let frames = args.out.with_file_name(format!("{name}-frames"));
    std::fs::create_dir_all(&frames)?;
    for (k, hole) in report.holes.iter().take(shown as usize).enumerate() {
        let px = Vec::<f32>::try_from(top.get(k as i64).flatten(0, -1))?;
        let bytes: Vec<u8> = px.iter().map(|&p| to_byte(p)).collect();
        let path = frames.join(format!("hole_{k:02}_class{}.png", hole.class));
        image::GrayImage::from_raw(28, 28, bytes)
            .context("28×28")?
            .save(&path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.raw {
        let bytes: Vec<u8> = floats.iter().map(|&p| to_byte(p)).collect();
        create_parent(path)?;
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.near_raw {
        let z = grid_points(args.side, args.extent);
        let distance = nearest_distances(&z, &codes);
        let near: Vec<i64> = (0..distance.len() as i64)
            .filter(|&i| distance[i as usize] < args.min_distance)
            .collect();
        let decoded = tch::no_grad(|| vae.decode(&z.index_select(0, &Tensor::from_slice(&near))));
        let px = Vec::<f32>::try_from(decoded.to_kind(Kind::Float).flatten(0, -1))?;
        let bytes: Vec<u8> = px.iter().map(|&p| to_byte(p)).collect();
        create_parent(path)?;
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    let json = with_ext(&args.out, "json");
    let mut value = serde_json::to_value(&report)?;
    // All holes are counted; the file lists the farthest (the list is megabytes otherwise).
    value["holes_total"] = report.holes.len().into();
    if let Some(list) = value["holes"].as_array_mut() {
        list.truncate(LISTED);
    }
    value["runtime"] = serde_json::json!({
        "samples": model.card.default_samples,
        "holes_rejected": rejected,
        "holes": report.holes.len(),
    });
    if !also.is_empty() {
        value["also"] = also.into();
    }
    std::fs::write(&json, serde_json::to_string_pretty(&value)? + "\n")?;
    println!(
        "{} grid points, {} at latent distance ≥ {} from every training digit; {} of those called a class with p ≥ {}; {} of them with MI < {threshold:.4} (holes); the runtime rejects {rejected} of the {} holes (T = {}); wrote {} and {} frames in {}",
        report.grid_points,
        report.far_points,
        args.min_distance,
        report.far_confident,
        args.confidence,
        report.holes.len(),
        report.holes.len(),
        model.card.default_samples,
        json.display(),
        shown,
        frames.display()
    );
    Ok(())
}

/// How many of `images` (28×28 model inputs in [0, 1], row-major) the gate of `model`'s card
/// rejects — tamper checks, fused signals and all — each rounded to an 8-bit frame and
/// scored at the card's T with its own masks.
fn rejected_by_gate(model: &Model, images: &[f32], threshold: f64, seed: u64) -> Result<usize> {
    use mcgate::gate::{Gate, Seeds};
    use mcgate::input::frame::Frame;
    use mcgate::score::verdict::Decision;
    let mut gate = Gate::new(
        model,
        model.card.default_samples,
        threshold,
        Seeds::PerFrame(seed),
    )?;
    let mut rejected = 0;
    for (k, px) in images.chunks(784).enumerate() {
        let bytes = px.iter().map(|&p| to_byte(p)).collect();
        let image = image::GrayImage::from_raw(28, 28, bytes).context("28×28")?;
        let frame = Frame::new(k as u64, "hole", image::DynamicImage::ImageLuma8(image));
        rejected += (gate.score(&frame).verdict.decision() == Decision::Reject) as usize;
    }
    Ok(rejected)
}

/// How many of `images` (28×28 model inputs, row-major) `model` rejects at `threshold`, each
/// scored through the runtime at the card's T with its own masks.
fn rejected_by(model: &Model, images: &[f32], threshold: f64, seed: u64) -> Result<usize> {
    let scores = tract_scores(model, images, 784, model.card.default_samples, seed)?;
    Ok(scores.mi.iter().filter(|&&mi| mi > threshold).count())
}

/// A model input in [0, 1] as the 8-bit pixel a camera would send.
fn to_byte(p: f32) -> u8 {
    (p.clamp(0.0, 1.0) * 255.0).round() as u8
}
