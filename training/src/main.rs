//! `mcgate-training`: train and export the dropout models the mcgate runtime loads.
//!
//! Parses the command line and hands each subcommand to its function in
//! `mcgate_training::commands`.

use anyhow::Result;
use clap::{Parser, Subcommand};

use mcgate_training::commands::{bundle, evaluate, quantize, samples, train};

#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the paper's dropout CNN, calibrate its MI threshold, export ONNX + card.
    ///
    /// Writes <OUT>.onnx, <OUT>.card.json and <OUT>.safetensors (the tch checkpoint).
    /// The last --validation training images are held out: they choose the MI threshold
    /// at --target-fpr clean false positives and are never trained on.
    Train(train::TrainArgs),
    /// Attack a trained model (FGM, BIM, MIM) and measure how well each uncertainty measure
    /// detects the adversarial images: the paper's Table 1, as Markdown and JSON.
    Evaluate(evaluate::EvaluateArgs),
    /// Write the int8 variant of a trained model (QLinearConv/QLinearMatMul; masks, the last
    /// layer and the softmax in float) with its card: activation scales from clean training
    /// images, MI threshold re-calibrated on the held-out split, accuracy measured through the
    /// runtime beside the float model's.
    Quantize(quantize::QuantizeArgs),
    /// Write an eval bundle for `mcgate validate`: clean, adversarial (MC model, paper
    /// loss) and matched-noise frames as 8-bit PNG, with the workstation's MI of each.
    Bundle(bundle::BundleArgs),
    /// Write the sample frames the README's first command gates: clean MNIST test digits,
    /// Gaussian-noise frames and out-of-distribution frames, as PNG.
    Samples(samples::SamplesArgs),
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => train::run(args),
        Command::Evaluate(args) => evaluate::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Bundle(args) => bundle::run(args),
        Command::Samples(args) => samples::run(args),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
