//! `mcgate-training`: train and export the dropout models the mcgate runtime loads.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tch::{nn, Device};

use mcgate::card::{Metrics, Provenance, Threshold};
use mcgate_training::{data, export, net, train};

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
    Train {
        /// Dataset to train on.
        #[arg(value_enum)]
        dataset: data::Known,
        /// Directory with the IDX files (raw or .gz) [default: data/mnist, data/fashion-mnist].
        #[arg(long)]
        data: Option<PathBuf>,
        /// Output path without extension [default: models/mnist, models/fashion].
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 12)]
        epochs: usize,
        #[arg(long, default_value_t = 128)]
        batch_size: usize,
        #[arg(long, value_enum, default_value_t = train::Optimizer::Adam)]
        optimizer: train::Optimizer,
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
        /// Learning-rate factor applied after each epoch (exponential decay; 1 = constant).
        #[arg(long, default_value_t = 0.8)]
        lr_decay: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Training images held out for threshold calibration.
        #[arg(long, default_value_t = 5000)]
        validation: usize,
        /// Use only the first N training images (before the validation split); for quick runs.
        #[arg(long)]
        train_limit: Option<usize>,
        /// Use only the first N test images; for quick runs.
        #[arg(long)]
        test_limit: Option<usize>,
        /// Monte-Carlo samples T for MC accuracy, calibration, and the card's default.
        #[arg(long, default_value_t = 20)]
        samples: usize,
        /// Clean false-positive rate the MI threshold is calibrated for.
        #[arg(long, default_value_t = 0.05)]
        target_fpr: f64,
    },
    /// Attack a trained model (FGM, BIM, MIM) and measure how well each uncertainty measure
    /// detects the adversarial images: the paper's Table 1, as Markdown and JSON.
    Evaluate {
        #[command(flatten)]
        source: TrainedModel,
        /// Output stem: writes <OUT>.md, <OUT>.json and the ROC/PR figures
        /// <OUT>-{roc,pr}-{deterministic,mc,adaptive}.{png,svg} [default: docs/results/<dataset>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Test images, drawn without replacement.
        #[arg(long, default_value_t = 1000)]
        images: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 20)]
        samples: i64,
        /// L∞ budgets on the 0–255 scale (the paper: 5, 10; MNIST-typical: 25.5, 51, 76.5).
        #[arg(long, value_delimiter = ',', default_value = "5,10,25.5,51,76.5")]
        eps: Vec<f64>,
        #[arg(long, value_enum, value_delimiter = ',', default_value = "fgm,bim,mim")]
        methods: Vec<mcgate_training::attack::Method>,
        /// Attack the MC model with the mean of per-sample losses (EOT) instead of the loss
        /// of the MC mean (the paper's choice).
        #[arg(long)]
        eot: bool,
        /// Attack away from the true labels instead of the model's own clean predictions.
        #[arg(long)]
        true_labels: bool,
        /// Attack only the deterministic model, or only the MC model.
        #[arg(long, value_enum)]
        only: Option<Only>,
        /// λ values for the adaptive attack (BIM/MIM maximising CE − λ·MI against the MC model).
        #[arg(long, value_delimiter = ',', default_value = "0.05,0.2,1")]
        adaptive: Vec<f64>,
        /// ε values (0–255 scale) at which the adaptive attack runs.
        #[arg(long, value_delimiter = ',', default_value = "10,76.5")]
        adaptive_eps: Vec<f64>,
        /// Images per attack batch.
        #[arg(long, default_value_t = 250)]
        batch: i64,
        /// Exported models (stems, comma-separated) that also score every clean, adversarial
        /// and noise image through the runtime, with the same masks, e.g.
        /// `models/mnist,models/mnist.int8`: the int8 model's MI AUC beside its float twin's.
        #[arg(long, value_delimiter = ',', value_name = "STEM")]
        runtime: Vec<PathBuf>,
    },
    /// Write the int8 variant of a trained model (QLinearConv/QLinearMatMul; masks, the last
    /// layer and the softmax in float) with its card: activation scales from clean training
    /// images, MI threshold re-calibrated on the held-out split, accuracy measured through the
    /// runtime beside the float model's.
    Quantize {
        #[command(flatten)]
        source: TrainedModel,
        /// Output stem [default: models/<dataset>.int8].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Clean training images (the first N) that set the activation scales.
        #[arg(long, default_value_t = 1000)]
        calibration: usize,
        /// Held-out training images (the last N, as `train`) that set the MI threshold.
        #[arg(long, default_value_t = 5000)]
        validation: usize,
        #[arg(long, default_value_t = 20)]
        samples: usize,
        #[arg(long, default_value_t = 0.05)]
        target_fpr: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Write an eval bundle for `mcgate validate`: clean, adversarial (MC model, paper
    /// loss) and matched-noise frames as 8-bit PNG, with the workstation's MI of each.
    Bundle {
        #[command(flatten)]
        source: TrainedModel,
        /// Output directory [default: bundles/<dataset>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Clean test images (each attack adds as many adversarial and noise frames).
        #[arg(long, default_value_t = 50)]
        images: usize,
        #[arg(long, default_value_t = 2)]
        seed: u64,
        #[arg(long, default_value_t = 20)]
        samples: i64,
        #[arg(long, value_enum, value_delimiter = ',', default_value = "fgm,bim,mim")]
        methods: Vec<mcgate_training::attack::Method>,
        /// L∞ budgets on the 0–255 scale.
        #[arg(long, value_delimiter = ',', default_value = "25.5")]
        eps: Vec<f64>,
        /// Independent MC runs scored per frame; validation compares mean AUCs over runs.
        #[arg(long, default_value_t = 8)]
        repeats: usize,
        /// Also copy the first N adversarial frames of each attack into DIR (the samples the
        /// README's first command gates); 0 copies none.
        #[arg(long, default_value_t = 2, value_name = "N")]
        sample_frames: usize,
        #[arg(long, default_value = "samples/adversarial", value_name = "DIR")]
        samples_dir: PathBuf,
    },
    /// Write the sample frames the README's first command gates: clean MNIST test digits,
    /// Gaussian-noise frames and out-of-distribution frames, as PNG.
    Samples {
        /// Directory with the MNIST IDX files.
        #[arg(long, default_value = "data/mnist")]
        data: PathBuf,
        /// Output directory; gets clean/, noise/ and ood/ subdirectories.
        #[arg(long, default_value = "samples")]
        out: PathBuf,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
}

/// The trained (float) model a command reads, and its dataset.
#[derive(Debug, Args)]
struct TrainedModel {
    /// Dataset (the test split is what the command scores or attacks).
    #[arg(value_enum, default_value = "mnist")]
    dataset: data::Known,
    /// Model stem: reads <MODEL>.safetensors and <MODEL>.card.json [default: models/<dataset>].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Directory with the IDX files [default: the dataset's data/ directory].
    #[arg(long)]
    data: Option<PathBuf>,
}

impl TrainedModel {
    fn stem(&self) -> PathBuf {
        self.model
            .clone()
            .unwrap_or_else(|| PathBuf::from("models").join(self.dataset.model_name()))
    }

    fn data_dir(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(|| self.dataset.data_dir())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Only {
    Deterministic,
    Mc,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn source_commit() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn with_ext(out: &Path, ext: &str) -> PathBuf {
    PathBuf::from(format!("{}.{ext}", out.display()))
}

/// A trained model to attack: its card, the frozen network, and the dataset's test split.
struct Trained {
    card: mcgate::card::ModelCard,
    net: net::Net,
    test: data::Dataset,
    device: Device,
    /// Owns the network's variables.
    _vs: nn::VarStore,
}

/// Loads `<model>.card.json` and `<model>.safetensors` (default `models/<dataset>`) and the
/// test split from `dir` (default the dataset's data directory).
fn load_trained(source: &TrainedModel) -> Result<Trained> {
    let model = source.stem();
    let card = mcgate::card::ModelCard::read(&with_ext(&model, "card.json"))?;
    let test = data::load_split(&source.data_dir(), "t10k", source.dataset.fetch_hint())?;
    let device = Device::cuda_if_available();
    log::info!("device {device:?}, {} threads", tch::get_num_threads());
    let mut vs = nn::VarStore::new(device);
    let net = net::Net::new(&vs.root());
    let ckpt = with_ext(&model, "safetensors");
    vs.load(&ckpt)
        .with_context(|| format!("loading {}", ckpt.display()))?;
    vs.freeze();
    Ok(Trained {
        card,
        net,
        test,
        device,
        _vs: vs,
    })
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Evaluate {
            source,
            out,
            images,
            seed,
            samples,
            eps,
            methods,
            eot,
            true_labels,
            only,
            adaptive,
            adaptive_eps,
            batch,
            runtime,
        } => {
            let out = out
                .unwrap_or_else(|| PathBuf::from("docs/results").join(source.dataset.model_name()));
            let Trained {
                card,
                net,
                test,
                device,
                ..
            } = load_trained(&source)?;
            let cfg = mcgate_training::evaluate::EvalConfig {
                images,
                seed,
                samples,
                eps_255: eps,
                methods,
                mc_targets: only != Some(Only::Deterministic),
                deterministic_targets: only != Some(Only::Mc),
                eot,
                true_labels,
                adaptive_lambdas: adaptive,
                adaptive_eps_255: adaptive_eps,
                threshold: card.threshold.mutual_information,
                batch,
                runtime: runtime
                    .iter()
                    .map(|stem| {
                        Ok(mcgate_training::evaluate::RuntimeModel {
                            name: stem.file_name().map_or(stem.display().to_string(), |n| {
                                n.to_string_lossy().to_string()
                            }),
                            model: mcgate::plan::Model::load_from(stem)
                                .with_context(|| format!("loading {}", stem.display()))?,
                        })
                    })
                    .collect::<Result<_>>()?,
            };
            let start = Instant::now();
            let report = mcgate_training::evaluate::evaluate(&net, &test, &cfg, device)?;
            log::info!("evaluated in {:.0} s", start.elapsed().as_secs_f64());
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            let md = mcgate_training::evaluate::markdown(&report);
            std::fs::write(with_ext(&out, "md"), &md)?;
            std::fs::write(
                with_ext(&out, "json"),
                serde_json::to_string_pretty(&report)? + "\n",
            )?;
            for path in mcgate_training::plots::write_all(&report, &out, source.dataset.title())? {
                log::info!("wrote {}", path.display());
            }
            println!("{md}");
            Ok(())
        }
        Command::Quantize {
            source,
            out,
            calibration,
            validation,
            samples,
            target_fpr,
            seed,
        } => {
            let (dataset, float_stem, dir) = (source.dataset, source.stem(), source.data_dir());
            let out = out.unwrap_or_else(|| with_ext(&float_stem, "int8"));
            let Trained {
                card: float_card,
                net,
                test,
                device,
                ..
            } = load_trained(&source)?;
            let full = data::load_split(&dir, "train", dataset.fetch_hint())?;
            ensure!(
                calibration + validation <= full.len(),
                "--calibration {calibration} + --validation {validation} exceed the {} training images",
                full.len()
            );
            let val = full.slice(full.len() - validation..full.len());
            let calib = full.slice(0..calibration);
            tch::manual_seed(seed as i64);
            let scales = mcgate_training::int8::calibrate(
                &net,
                &train::to_tensors(&calib, device).0,
                samples as i64,
            );
            log::info!("activation scales from {calibration} training images: {scales:?}");
            let onnx = mcgate_training::int8::onnx_bytes(
                &net,
                &scales,
                "Smith & Gal 2018 MNIST dropout CNN, int8 (QOperator); masks are inputs",
            )?;
            let onnx_path = with_ext(&out, "onnx");
            let name = out
                .file_name()
                .map_or("model".into(), |n| n.to_string_lossy().to_string());
            let mut card = export::card_for(
                &name,
                float_card.classes.clone(),
                &onnx,
                samples,
                float_card.threshold.clone(),
                float_card.metrics.clone(),
                float_card.provenance.clone(),
            );
            let int8 = mcgate::plan::Model::from_parts(card.clone(), &onnx, &onnx_path)?;
            let float = mcgate::plan::Model::load_from(&float_stem)?;
            let start = Instant::now();
            let val_mi = mcgate_training::runtime::score_dataset(&int8, &val, samples, seed)?.mi;
            let threshold = mcgate::roc::threshold_at_fpr(&val_mi, target_fpr)
                .context("cannot calibrate: no validation scores")?;
            let q = mcgate_training::runtime::score_dataset(&int8, &test, samples, seed)?;
            let f = mcgate_training::runtime::score_dataset(&float, &test, samples, seed)?;
            log::info!("scored in {:.0} s", start.elapsed().as_secs_f64());
            let (q_det, q_mc) = q.accuracy(&test.labels);
            let (f_det, f_mc) = f.accuracy(&test.labels);
            card.threshold = Threshold {
                mutual_information: threshold,
                method: format!(
                    "{}th percentile of MI (T={samples}) of this int8 model on {} held-out clean training images",
                    100.0 * (1.0 - target_fpr),
                    val.len()
                ),
                target_fpr: Some(target_fpr),
                provisional: true,
            };
            card.metrics = Metrics {
                test_accuracy_deterministic: q_det,
                test_accuracy_mc: q_mc,
                mc_samples: samples,
                test_images: test.len(),
            };
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&onnx_path, &onnx)
                .with_context(|| format!("writing {}", onnx_path.display()))?;
            let card_path = with_ext(&out, "card.json");
            std::fs::write(&card_path, card.to_json())
                .with_context(|| format!("writing {}", card_path.display()))?;
            let float_size = std::fs::metadata(with_ext(&float_stem, "onnx"))?.len();
            println!(
                "{}: {} bytes ({:.2}× the float file); test accuracy (runtime, {} images) deterministic {:.2} % (float {:.2} %), MC T={samples} {:.2} % (float {:.2} %); MI threshold {threshold:.4} (float {:.4}); clean test MI above it: {:.1} %",
                onnx_path.display(),
                onnx.len(),
                onnx.len() as f64 / float_size as f64,
                test.len(),
                100.0 * q_det,
                100.0 * f_det,
                100.0 * q_mc,
                100.0 * f_mc,
                float_card.threshold.mutual_information,
                100.0 * mcgate::roc::rate_above(&q.mi, threshold),
            );
            Ok(())
        }
        Command::Bundle {
            source,
            out,
            images,
            seed,
            samples,
            methods,
            eps,
            repeats,
            sample_frames,
            samples_dir,
        } => {
            let out =
                out.unwrap_or_else(|| PathBuf::from("bundles").join(source.dataset.model_name()));
            let Trained {
                card,
                net,
                test,
                device,
                ..
            } = load_trained(&source)?;
            let attacks = eps
                .iter()
                .flat_map(|&e| methods.iter().map(move |&m| (m, e)))
                .collect();
            let cfg = mcgate_training::bundle::BundleConfig {
                images,
                seed,
                samples,
                repeats,
                attacks,
            };
            if out.exists() {
                std::fs::remove_dir_all(&out)
                    .with_context(|| format!("clearing {}", out.display()))?;
            }
            let n = mcgate_training::bundle::write(
                &net,
                &test,
                &card.onnx_sha256,
                card.threshold.mutual_information,
                &cfg,
                &out,
                device,
            )?;
            println!("wrote {n} frames and manifest.json to {}", out.display());
            if sample_frames > 0 {
                let manifest = mcgate::bundle::Manifest::read(&out)?;
                if samples_dir.exists() {
                    std::fs::remove_dir_all(&samples_dir)?;
                }
                std::fs::create_dir_all(&samples_dir)?;
                for group in manifest
                    .groups
                    .iter()
                    .filter(|g| g.role == mcgate::bundle::Role::Positive)
                {
                    for f in manifest
                        .frames
                        .iter()
                        .filter(|f| f.group == group.name)
                        .take(sample_frames)
                    {
                        let name = f.file.replace('/', "_");
                        std::fs::copy(out.join(&f.file), samples_dir.join(&name)).with_context(
                            || format!("copying {} to {}", f.file, samples_dir.display()),
                        )?;
                    }
                }
                println!(
                    "copied {sample_frames} adversarial frames per attack to {}",
                    samples_dir.display()
                );
            }
            Ok(())
        }
        Command::Samples {
            data: dir,
            out,
            seed,
        } => {
            let test = data::load_split(&dir, "t10k", "scripts/fetch-mnist.sh")?;
            let written = mcgate_training::samples::write_samples(&test, &out, seed)?;
            println!("wrote {written} sample frames under {}", out.display());
            Ok(())
        }
        Command::Train {
            dataset,
            data: dir,
            out,
            epochs,
            batch_size,
            optimizer,
            lr,
            lr_decay,
            seed,
            validation,
            train_limit,
            test_limit,
            samples,
            target_fpr,
        } => {
            // Taken before training: the tree may change while it runs.
            let source_commit = source_commit();
            let hint = dataset.fetch_hint();
            let dir = dir.unwrap_or_else(|| dataset.data_dir());
            let out = out.unwrap_or_else(|| PathBuf::from("models").join(dataset.model_name()));
            let mut full = data::load_split(&dir, "train", hint)?;
            let mut test = data::load_split(&dir, "t10k", hint)?;
            ensure!(
                validation < full.len(),
                "--validation {validation} leaves no training images"
            );
            let val = full.slice(full.len() - validation..full.len());
            full = full.slice(0..full.len() - validation);
            if let Some(n) = train_limit {
                full = full.slice(0..n.min(full.len()));
            }
            if let Some(n) = test_limit {
                test = test.slice(0..n.min(test.len()));
            }
            let device = Device::cuda_if_available();
            log::info!(
                "device {device:?}, {} threads; {} train / {} validation / {} test images",
                tch::get_num_threads(),
                full.len(),
                val.len(),
                test.len()
            );
            let vs = nn::VarStore::new(device);
            tch::manual_seed(seed as i64);
            let net = net::Net::new(&vs.root());
            let cfg = train::TrainConfig {
                epochs,
                batch_size,
                optimizer,
                learning_rate: lr,
                lr_decay,
                seed,
                progress: true,
            };
            let start = Instant::now();
            train::train(&net, &vs, &full, &cfg)?;
            let train_seconds = start.elapsed().as_secs_f64();
            log::info!("trained in {train_seconds:.0} s");

            let det = train::deterministic_accuracy(&net, &test, device);
            let (mc, _) = train::mc_accuracy_and_mi(&net, &test, samples as i64, device)?;
            log::info!(
                "test accuracy: deterministic {:.2}%, MC (T={samples}) {:.2}%",
                100.0 * det,
                100.0 * mc
            );
            let (_, val_mi) = train::mc_accuracy_and_mi(&net, &val, samples as i64, device)?;
            let threshold = mcgate::roc::threshold_at_fpr(&val_mi, target_fpr)
                .context("cannot calibrate: no validation scores")?;
            log::info!(
                "MI threshold {threshold:.5} nats: {:.2}% of {} clean validation images above it",
                100.0 * mcgate::roc::rate_above(&val_mi, threshold),
                val_mi.len()
            );

            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            let onnx =
                export::onnx_bytes(&net, "Smith & Gal 2018 MNIST dropout CNN; masks are inputs")?;
            let onnx_path = with_ext(&out, "onnx");
            std::fs::write(&onnx_path, &onnx)
                .with_context(|| format!("writing {}", onnx_path.display()))?;
            let ckpt = with_ext(&out, "safetensors");
            vs.save(&ckpt)
                .with_context(|| format!("writing {}", ckpt.display()))?;

            let name = out
                .file_name()
                .map_or("model".into(), |n| n.to_string_lossy().to_string());
            let card = export::card_for(
                &name,
                dataset.classes(),
                &onnx,
                samples,
                Threshold {
                    mutual_information: threshold,
                    method: format!(
                        "{}th percentile of MI (T={samples}) on {} held-out clean training images",
                        100.0 * (1.0 - target_fpr),
                        val.len()
                    ),
                    target_fpr: Some(target_fpr),
                    provisional: true,
                },
                Metrics {
                    test_accuracy_deterministic: det,
                    test_accuracy_mc: mc,
                    mc_samples: samples,
                    test_images: test.len(),
                },
                Provenance {
                    dataset: dataset.description().into(),
                    train_images: full.len(),
                    epochs,
                    batch_size,
                    optimizer: format!("{optimizer:?} lr={lr} decay={lr_decay}/epoch")
                        .to_lowercase(),
                    seed,
                    device: format!("{device:?}"),
                    train_seconds,
                    source_commit,
                },
            );
            let card_path = with_ext(&out, "card.json");
            std::fs::write(&card_path, card.to_json())
                .with_context(|| format!("writing {}", card_path.display()))?;
            println!(
                "wrote {}, {}, {}",
                onnx_path.display(),
                card_path.display(),
                ckpt.display()
            );
            Ok(())
        }
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
