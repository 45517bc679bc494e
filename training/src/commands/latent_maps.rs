//! `latent-maps`: the paper's Figs 1 and 4 — the MNIST model's MI and predictive entropy over
//! the VAE's latent space, with the encoded test digits on top — as PNG, SVG and JSON.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use clap::Args;
use mcgate::contract::card::ModelCard;
use tch::Device;

use super::{LatentInputs, LatentPair};
use crate::data::{self, Known};
use crate::export::{create_parent, with_ext};
use crate::latent::maps;

#[derive(Debug, Args)]
pub struct LatentMapsArgs {
    #[command(flatten)]
    pub inputs: LatentInputs,
    /// Cells per side of the latent grid (the paper: 40).
    #[arg(long, default_value_t = 40)]
    pub side: usize,
    /// The grid covers [−extent, extent]² (the paper: 10).
    #[arg(long, default_value_t = 10.0)]
    pub extent: f64,
    /// MC samples per cell (the paper: 50).
    #[arg(long, default_value_t = 50)]
    pub samples: usize,
    /// Test digits drawn on the maps.
    #[arg(long, default_value_t = 2000)]
    pub points: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output stem: <OUT>.png, <OUT>.svg, <OUT>.json.
    #[arg(long, default_value = "docs/results/latent-maps")]
    pub out: PathBuf,
}

pub fn run(args: LatentMapsArgs) -> Result<()> {
    ensure!(
        args.side > 0 && args.extent > 0.0 && args.samples > 0,
        "empty grid"
    );
    let LatentPair { vae, net, .. } = LatentPair::load(&args.inputs)?;
    let threshold = ModelCard::read(&with_ext(&args.inputs.model, "card.json"))?
        .mi_threshold()
        .context("the model card has no MI threshold")?;
    let test = data::load_split(&args.inputs.data, "t10k", Known::Mnist.fetch_hint())?
        .pick(args.points, args.seed);
    let (x, _) = test.to_tensors(Device::Cpu);
    let map = maps::score(
        &vae,
        net.as_dyn(),
        args.side,
        args.extent,
        args.samples,
        args.seed,
        (&x, &test.labels),
    )?;
    let summary = maps::summary(&map, 0.5, 1.0, threshold);
    create_parent(&args.out)?;
    let json = with_ext(&args.out, "json");
    let mut value = serde_json::to_value(&map)?;
    value["summary"] = serde_json::to_value(&summary)?;
    std::fs::write(&json, serde_json::to_string(&value)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    let title = format!(
        "MNIST {} over the VAE's latent space: {}×{} decoded points on [−{e}, {e}]², {} test digits",
        match map.members {
            1 => "model".to_string(),
            m => format!("ensemble of {m}"),
        },
        args.side,
        args.side,
        map.points.len(),
        e = args.extent
    );
    for path in maps::write_figure(&map, &args.out, &title)? {
        println!("wrote {}", path.display());
    }
    println!("wrote {}", json.display());
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
