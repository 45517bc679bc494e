//! `interpolations`: the paper's Figs 2 and 3 — one digit-to-digit interpolation in latent
//! space and in pixel space with the entropy and MI along each, and the midpoints of random
//! pairs of different-class test digits, with the AUCs that test the paper's claim (MI tells
//! pixel-space midpoints from latent-space ones; entropy does not).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use tch::Device;

use super::{LatentInputs, LatentPair};
use crate::data::{self, Known};
use crate::export::{create_parent, with_ext};
use crate::latent::interpolation::{
    interpolation, midpoints, write_interpolation_figure, write_midpoint_figure, write_strips,
};

#[derive(Debug, Args)]
pub struct InterpolationsArgs {
    #[command(flatten)]
    pub inputs: LatentInputs,
    /// The interpolation runs from the first test digit of this class …
    #[arg(long, default_value_t = 6)]
    pub from_class: u8,
    /// … to the first of this one (the paper: a 6 to an 8).
    #[arg(long, default_value_t = 8)]
    pub to_class: u8,
    /// Points along the interpolation, both ends included (the paper: 15).
    #[arg(long, default_value_t = 15)]
    pub steps: usize,
    /// Random pairs of different-class test digits for the midpoints (the paper: 3000).
    #[arg(long, default_value_t = 3000)]
    pub pairs: usize,
    /// MC samples per image (the paper's latent plots: 50).
    #[arg(long, default_value_t = 50)]
    pub samples: usize,
    /// Bootstrap resamples (of pairs) behind each AUC's 95 % interval.
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output stem: <OUT>.{png,svg,json}, <OUT>-images.png, <OUT>-midpoints.{png,svg,json}.
    #[arg(long, default_value = "docs/results/interpolation")]
    pub out: PathBuf,
}

pub fn run(args: InterpolationsArgs) -> Result<()> {
    let LatentPair { vae, net, .. } = LatentPair::load(&args.inputs)?;
    let test = data::load_split(&args.inputs.data, "t10k", Known::Mnist.fetch_hint())?;
    let (x, _) = test.to_tensors(Device::Cpu);
    let first = |class: u8| {
        test.labels
            .iter()
            .position(|&l| l == class)
            .with_context(|| format!("no test digit of class {class}"))
    };
    let (ia, ib) = (first(args.from_class)? as i64, first(args.to_class)? as i64);
    let (a, b) = (x.narrow(0, ia, 1), x.narrow(0, ib, 1));
    let (it, latent_images, pixel_images) = interpolation(
        &vae,
        net.as_dyn(),
        (&a, &b),
        (args.from_class, args.to_class),
        args.steps,
        args.samples,
        args.seed,
    )?;
    create_parent(&args.out)?;
    // `<OUT><suffix>` beside `<OUT>`.
    let name = args
        .out
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("interpolation")
        .to_string();
    let sibling = |suffix: &str| args.out.with_file_name(format!("{name}{suffix}"));
    let mut written = write_interpolation_figure(
        &it,
        &args.out,
        &format!(
            "A {} (test image {ia}) to a {} (test image {ib}), {} steps: decoded from latent space, blended in pixel space (T = {})",
            args.from_class, args.to_class, args.steps, args.samples
        ),
    )?;
    let strips = sibling("-images.png");
    write_strips(&strips, &[&latent_images, &pixel_images], 3)?;
    written.push(strips);
    let json = with_ext(&args.out, "json");
    std::fs::write(&json, serde_json::to_string(&it)? + "\n")?;
    written.push(json);

    let m = midpoints(
        &vae,
        net.as_dyn(),
        (&x, &test.labels),
        args.pairs,
        args.samples,
        args.seed,
        args.bootstrap,
    )?;
    let mid_stem = sibling("-midpoints");
    written.extend(write_midpoint_figure(
        &m,
        &mid_stem,
        &format!(
            "Midpoints of {} random pairs of different-class test digits: latent space vs pixel space (T = {})",
            args.pairs, args.samples
        ),
    )?);
    let json = with_ext(&mid_stem, "json");
    std::fs::write(&json, serde_json::to_string(&m)? + "\n")?;
    written.push(json);
    let ci = |(auc, iv): (f64, Option<(f64, f64)>)| match iv {
        Some((lo, hi)) => format!("{auc:.3} [{lo:.3}–{hi:.3}]"),
        None => format!("{auc:.3}"),
    };
    println!(
        "pixel-space vs latent-space midpoints, {} pairs: AUC of MI {}, of predictive entropy {}",
        args.pairs,
        ci(m.auc_mutual_information),
        ci(m.auc_predictive_entropy)
    );
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}
