//! `mcgate validate`: detection on this device against the workstation's.

use std::path::PathBuf;

use clap::Args;

use mcgate::model::Model;
use mcgate::validate;

use super::engine::EngineArgs;
use super::exit;
use super::{print, Failure};

#[derive(Args)]
pub(crate) struct ValidateArgs {
    /// Model: `models/mnist`, its `.onnx` or `.card.json` path, or `builtin:mnist`.
    model: PathBuf,
    /// Bundle directory (with manifest.json), written by `mcgate-training bundle`.
    bundle: PathBuf,
    #[command(flatten)]
    engine: EngineArgs,
    /// Largest accepted |device AUC − workstation AUC| per attack.
    #[arg(long, default_value_t = 0.02)]
    tolerance: f64,
    /// Monte-Carlo samples T [default: the bundle's].
    #[arg(short = 'T', long)]
    samples: Option<usize>,
    /// Run seed for the masks (validation is reproducible by default).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Independent MC runs over the bundle [default: as many as the workstation made].
    /// Fewer is faster (under emulation, say) but noisier: one run's AUC moves by ~0.03.
    #[arg(long)]
    runs: Option<usize>,
    /// Frames scored at once, one thread each; the results do not change.
    #[arg(short = 'j', long, default_value_t = 1, value_name = "N")]
    jobs: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: ValidateArgs) -> Result<u8, Failure> {
    let ValidateArgs {
        model,
        bundle,
        engine,
        tolerance,
        samples,
        seed,
        runs,
        jobs,
        json,
    } = args;
    if !(0.0..=1.0).contains(&tolerance) {
        return Err(Failure::Usage(format!(
            "--tolerance must be in [0, 1], got {tolerance}"
        )));
    }
    if runs == Some(0) {
        return Err(Failure::Usage("--runs must be at least 1".into()));
    }
    let manifest = mcgate::contract::bundle::Manifest::read(&bundle)?;
    let args_model = model;
    let model = Model::load_from_with(&args_model, &engine.engine()?)?;
    let opts = validate::Options {
        samples,
        seed,
        runs,
        jobs,
    };
    let result = validate::run(&model, &args_model, &manifest, &bundle, &opts)?;
    print(&if json {
        result.to_json(tolerance)
    } else {
        result.to_text(tolerance)
    })?;
    Ok(if result.failed(tolerance).is_empty() {
        exit::OK
    } else {
        exit::VALIDATION
    })
}
