//! `robust-accuracy`: the standard robustness figure, without the gate — the share of test
//! images the network (dropout off, float) still classifies right under L∞ PGD with random
//! restarts, so that a robust model's numbers can be set beside published ones (Madry et al.'s
//! `mnist_challenge` leaderboard: PGD-100 with restarts at ε = 0.3). Clean errors count as
//! failures, as they do there.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use clap::Args;
use serde::Serialize;
use tch::{Kind, Tensor};

use super::{Trained, TrainedModel};
use crate::adversarial::{Adversarial, Method};
use crate::redteam::bootstrap_mean;

#[derive(Debug, Args)]
pub struct RobustAccuracyArgs {
    #[command(flatten)]
    pub source: TrainedModel,
    /// L∞ budgets on pixels in [0, 1].
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.2,0.3")]
    pub eps: Vec<f64>,
    /// PGD steps (step size 2.5·eps/steps, Madry et al.'s rule).
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Random starts per image; an image counts as robust only if every one fails.
    #[arg(long, default_value_t = 5)]
    pub restarts: usize,
    /// Test images, drawn at random with --seed.
    #[arg(long, default_value_t = 1000)]
    pub images: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Bootstrap resamples behind each interval.
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Where the JSON goes [default: docs/results/robust-accuracy-<model>.json].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The report.
#[derive(Debug, Serialize)]
pub struct RobustAccuracyReport {
    pub model: String,
    pub commit: String,
    pub attack: String,
    pub images: usize,
    pub seed: u64,
    pub clean_accuracy: f64,
    pub clean_interval: [f64; 2],
    pub rows: Vec<RobustRow>,
    pub seconds: f64,
}

/// One budget.
#[derive(Debug, Serialize)]
pub struct RobustRow {
    pub eps: f64,
    pub steps: usize,
    pub restarts: usize,
    /// Share of the images classified right clean and after every restart.
    pub robust_accuracy: f64,
    /// 95 % percentile bootstrap interval over images.
    pub interval: [f64; 2],
}

pub fn run(args: RobustAccuracyArgs) -> Result<RobustAccuracyReport> {
    let start = std::time::Instant::now();
    ensure!(
        args.steps > 0 && args.restarts > 0,
        "--steps and --restarts must be at least 1"
    );
    ensure!(
        args.eps.iter().all(|&e| e > 0.0 && e <= 1.0),
        "every --eps must lie in (0, 1] (pixels in [0, 1]), got {:?}",
        args.eps
    );
    let stem = args.source.stem();
    let Trained {
        card, net, test, ..
    } = args.source.load()?;
    let net = net.as_dyn();
    let n = args.images.min(test.len());
    let images = test.pick(n, args.seed);
    let (pixels, labels) = images.to_tensors(tch::Device::cuda_if_available());
    let logits = |px: &Tensor| net.logits(&net.input_from_pixels(px), false);
    let correct = |px: &Tensor| -> Tensor {
        tch::no_grad(|| logits(px).argmax(-1, false).eq_tensor(&labels))
    };
    let to_vec = |t: &Tensor| -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).to_device(tch::Device::Cpu))
            .expect("a flat tensor")
    };
    let clean = correct(&pixels);
    let clean_values = to_vec(&clean);
    let clean_accuracy = clean_values.iter().sum::<f64>() / n as f64;
    log::info!(
        "{}: clean accuracy {:.2} % on {n} test images (dropout off)",
        card.name,
        100.0 * clean_accuracy
    );
    let mut rows = vec![];
    for &eps in &args.eps {
        let pgd = Adversarial::new(Method::Pgd, eps).with_steps(args.steps);
        let mut robust = clean.shallow_clone();
        for _ in 0..args.restarts {
            // In chunks: 100 steps of a whole test set's gradients at once would not fit.
            let attacked: Vec<Tensor> = pixels
                .split(500, 0)
                .iter()
                .zip(labels.split(500, 0).iter())
                .map(|(px, y)| pgd.attack(&logits, px, y))
                .collect();
            robust = robust.logical_and(&correct(&Tensor::cat(&attacked, 0)));
        }
        let values = to_vec(&robust);
        let row = RobustRow {
            eps,
            steps: args.steps,
            restarts: args.restarts,
            robust_accuracy: values.iter().sum::<f64>() / n as f64,
            interval: bootstrap_mean(&values, args.bootstrap, args.seed),
        };
        log::info!(
            "eps {eps}: robust accuracy {:.2} % [{:.2}, {:.2}] (PGD-{} × {} restarts)",
            100.0 * row.robust_accuracy,
            100.0 * row.interval[0],
            100.0 * row.interval[1],
            args.steps,
            args.restarts
        );
        rows.push(row);
    }
    let report = RobustAccuracyReport {
        model: card.name.clone(),
        commit: super::source_commit(),
        attack: "L∞ PGD on the cross-entropy of the network with dropout off, float pixels, \
                 random start in the ball, step 2.5·eps/steps; an image is robust when it is \
                 classified right clean and after every restart"
            .into(),
        images: n,
        seed: args.seed,
        clean_accuracy,
        clean_interval: bootstrap_mean(&clean_values, args.bootstrap, args.seed),
        rows,
        seconds: start.elapsed().as_secs_f64(),
    };
    let out = args.out.unwrap_or_else(|| {
        PathBuf::from("docs/results").join(format!(
            "robust-accuracy-{}.json",
            crate::export::stem_name(&stem)
        ))
    });
    crate::export::create_parent(&out)?;
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(report)
}
