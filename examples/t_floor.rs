//! How the gate's detection falls with fewer Monte-Carlo samples T, at the card's threshold
//! (calibrated at its default T): the measurement behind `MIN_SAMPLES` (docs/RELIABILITY.md,
//! row 53). The plug-in MI estimate is biased down at small T (one sample: exactly 0), so a
//! threshold set at T = 20 rejects fewer attacked frames at T = 2.
//!
//! `cargo run --release --example t_floor -- models/mnist bundles/mnist 5`
//!
//! For each group of the eval bundle (clean digits, each attack, matched noise), prints the
//! share of its frames rejected (MI above the card's threshold) at each T, over R seeds.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mcgate::contract::bundle::Manifest;
use mcgate::input::frame::decode_file;
use mcgate::input::preprocess::Preprocessor;
use mcgate::model::Model;
use mcgate::run::plan::Plan;
use mcgate::score::measures;

const SAMPLES: [usize; 9] = [1, 2, 3, 4, 5, 6, 8, 10, 20];

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: t_floor MODEL BUNDLE [SEEDS]";
    let model = Model::load_from(Path::new(&args.next().context(usage)?))?;
    let bundle = PathBuf::from(args.next().context(usage)?);
    let seeds: u64 = args.next().map_or(Ok(5), |s| s.parse())?;
    let manifest = Manifest::read(&bundle)?;
    let threshold = model
        .card
        .mi_threshold()
        .context("the card has no threshold")?;
    let classes = model.card.classes.len();
    let mut preprocessor = Preprocessor::new(&model.card.input);
    let mut groups: Vec<(String, Vec<Vec<f32>>)> = vec![];
    for f in &manifest.frames {
        let image = decode_file(&bundle.join(&f.file))?;
        let input = preprocessor.run(&image)?.to_vec();
        match groups.iter_mut().find(|(g, _)| *g == f.group) {
            Some((_, inputs)) => inputs.push(input),
            None => groups.push((f.group.clone(), vec![input])),
        }
    }
    print!("| group (frames) |");
    for t in SAMPLES {
        print!(" T={t} |");
    }
    println!();
    println!("|---|{}", "---|".repeat(SAMPLES.len()));
    let mut plans: Vec<Plan> = SAMPLES
        .iter()
        .map(|&t| Plan::new(&model, t))
        .collect::<Result<_, _>>()?;
    let mut scratch = vec![0.0; classes];
    for (group, inputs) in &groups {
        print!("| {group} ({}) |", inputs.len());
        for plan in &mut plans {
            let mut rejected = 0usize;
            for seed in 0..seeds {
                for (i, input) in inputs.iter().enumerate() {
                    let probs = plan.run(input, seed * 1_000_003 + i as u64)?;
                    let m = measures::compute(probs, classes, &mut scratch)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    rejected += (m.mutual_information > threshold) as usize;
                }
            }
            let share = rejected as f64 / (inputs.len() as u64 * seeds) as f64;
            print!(" {:.1} % |", 100.0 * share);
        }
        println!();
    }
    println!(
        "\nthreshold {threshold:.4} nats (card, calibrated at T={}), {seeds} seeds",
        model.card.default_samples
    );
    Ok(())
}
