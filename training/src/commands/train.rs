//! `train`: train the network, calibrate its MI threshold on held-out images, export ONNX,
//! card and checkpoint.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use clap::Args;
use mcgate::contract::card::{AdversarialTraining, Provenance, Training, TrainingAttack};
use tch::{nn, Device};

use crate::adversarial::{self, Adversarial, RobustCheck};
use crate::data::{self, Known};
use crate::export::{self, with_ext};
use crate::nets::mnist::{MnistCnn, WeightInit};
use crate::train::{self, Optimizer, TrainConfig};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Dataset to train on.
    #[arg(value_enum)]
    pub dataset: Known,
    /// Directory with the IDX files (raw or .gz) [default: data/mnist, data/fashion-mnist].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output path without extension [default: models/mnist, models/fashion].
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value_t = 12)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    #[arg(long, value_enum, default_value_t = Optimizer::Adam)]
    pub optimizer: Optimizer,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Learning-rate factor applied after each epoch (exponential decay; 1 = constant).
    #[arg(long, default_value_t = 0.8)]
    pub lr_decay: f64,
    /// One learning-rate cycle instead of the decay: from 0 up to --lr at 2/5 of the batches,
    /// back to 0 at the last (Wong et al. 2020's schedule for fast adversarial training).
    #[arg(long, conflicts_with = "lr_decay")]
    pub lr_cyclic: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How the weights start: tch's defaults (the shipped models), PyTorch's or Keras's.
    #[arg(long, value_enum, default_value_t = WeightInit::Tch)]
    pub init: WeightInit,
    /// Training images held out for threshold calibration.
    #[arg(long, default_value_t = 5000)]
    pub validation: usize,
    /// Use only the first N training images (before the validation split); for quick runs.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Use only the first N test images; for quick runs.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Monte-Carlo samples T for MC accuracy, calibration, and the card's default.
    #[arg(long, default_value_t = 20)]
    pub samples: usize,
    /// Clean false-positive rate the MI threshold is calibrated for.
    #[arg(long, default_value_t = 0.05)]
    pub target_fpr: f64,
    /// Train without dropout (the network's dropout off in every step): a plain network,
    /// e.g. a surrogate for `redteam --surrogate`. The export still has the dropout sites
    /// and the card says so in its optimiser words; not a model to gate with.
    #[arg(long)]
    pub no_dropout: bool,
    /// Train on attacked batches (dropout on, masks fresh at every attack step): Madry's PGD,
    /// TRADES, or fast FGSM with a random start (Wong et al. 2020). Needs --eps. Measured on 2
    /// cores: fgsm-rs about 2× a standard epoch but, on MNIST at eps 0.3, catastrophic
    /// overfitting from the start; pgd with --attack-steps 5 5.3× and robust (the shipped
    /// models/mnist-robust; docs/RESULTS.md). Every epoch logs PGD accuracy on 500 held-out
    /// validation images and stops, keeping the best epoch, if it falls 20 points.
    #[arg(long, value_enum, value_name = "METHOD", requires = "eps")]
    pub adversarial: Option<adversarial::Method>,
    /// The training attack's L∞ radius on pixels in [0, 1] (MNIST: 0.3, Fashion-MNIST: 0.1).
    #[arg(long, requires = "adversarial")]
    pub eps: Option<f64>,
    /// Attack steps per batch [default: pgd and trades 10, fgsm-rs 1].
    #[arg(long, requires = "adversarial")]
    pub attack_steps: Option<usize>,
    /// Attack step size on pixels in [0, 1] [default: pgd and trades 2.5·eps/steps, fgsm-rs
    /// 1.25·eps].
    #[arg(long, requires = "adversarial")]
    pub step_size: Option<f64>,
    /// TRADES's β, the weight of its KL term [default: 6]; refused with pgd and fgsm-rs,
    /// which have none.
    #[arg(long, requires = "adversarial")]
    pub trades_beta: Option<f64>,
    /// Epochs over which eps ramps up linearly from 0 (adversarial training only).
    #[arg(long, default_value_t = 0, requires = "adversarial")]
    pub eps_warmup: usize,
}

/// Writes `<out>.onnx`, `<out>.safetensors` and `<out>.card.json`.
pub fn run(args: TrainArgs) -> Result<()> {
    let TrainArgs {
        dataset,
        data: dir,
        out,
        epochs,
        batch_size,
        optimizer,
        lr,
        lr_decay,
        lr_cyclic,
        seed,
        init,
        validation,
        train_limit,
        test_limit,
        samples,
        target_fpr,
        no_dropout,
        adversarial,
        eps,
        attack_steps,
        step_size,
        trades_beta,
        eps_warmup,
    } = args;
    let adversarial = match (adversarial, eps) {
        (Some(method), Some(eps)) => {
            let mut a = Adversarial::new(method, eps);
            if let Some(k) = attack_steps {
                a = a.with_steps(k);
            }
            if let Some(s) = step_size {
                a.step_size = s;
            }
            if let Some(beta) = trades_beta {
                ensure!(
                    method == adversarial::Method::Trades,
                    "--trades-beta is TRADES's weight (--adversarial trades); pgd and fgsm-rs \
                     have no KL term"
                );
                a.beta = beta;
            }
            a.validate()?;
            ensure!(
                !no_dropout,
                "--adversarial trains a dropout model; drop --no-dropout"
            );
            Some(a)
        }
        _ => None,
    };
    // Taken before training: the tree may change while it runs.
    let source_commit = super::source_commit();
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
    let net = MnistCnn::with_init(&vs.root(), init);
    let cfg = TrainConfig {
        epochs,
        batch_size,
        optimizer,
        learning_rate: lr,
        lr_decay,
        cyclic_lr: lr_cyclic,
        seed,
        progress: true,
        dropout: !no_dropout,
        adversarial,
        eps_warmup,
    };
    // The guard's images: held out from training (the first of the validation split).
    let check = adversarial.map(|a| {
        let (pixels, labels) = val.slice(0..500.min(val.len())).to_tensors(device);
        RobustCheck {
            pixels,
            labels,
            eps: a.eps,
            steps: 10,
            max_drop: 0.2,
        }
    });
    let start = Instant::now();
    let stats = train::train(&net, &vs, &full, &cfg, check.as_ref())?;
    let train_seconds = start.elapsed().as_secs_f64();
    log::info!("trained in {train_seconds:.0} s");

    let measured =
        train::measure_and_calibrate(&net, &test, &val, samples as i64, target_fpr, device)?;

    export::create_parent(&out)?;
    let onnx = export::onnx_bytes(&net, &export::float_doc(&net))?;
    let onnx_path = export::write_onnx(&out, &onnx)?;
    let ckpt = with_ext(&out, "safetensors");
    vs.save(&ckpt)
        .with_context(|| format!("writing {}", ckpt.display()))?;

    let card = export::card_for(
        &net,
        &export::stem_name(&out),
        dataset.classes(),
        &onnx,
        samples,
        Some(measured.card_threshold()),
        Some(measured.metrics()),
        Provenance::Trained(Training {
            dataset: dataset.description().into(),
            train_images: full.len(),
            // Fewer than asked where the guard stopped the training.
            epochs: stats.len(),
            batch_size,
            optimizer: (match lr_cyclic {
                true => format!("{optimizer:?} lr={lr} one cycle"),
                false => format!("{optimizer:?} lr={lr} decay={lr_decay}/epoch"),
            } + &match init {
                WeightInit::Tch => String::new(),
                _ => format!(" init={init:?}"),
            } + if no_dropout { ", without dropout" } else { "" })
            .to_lowercase(),
            seed,
            device: format!("{device:?}"),
            train_seconds,
            source_commit,
            backbone: None,
            adversarial: adversarial.map(|a| AdversarialTraining {
                method: match a.method {
                    adversarial::Method::Pgd => TrainingAttack::Pgd,
                    adversarial::Method::Trades => TrainingAttack::Trades,
                    adversarial::Method::FgsmRs => TrainingAttack::FgsmRs,
                },
                eps: a.eps,
                steps: a.steps,
                step_size: a.step_size,
                beta: (a.method == adversarial::Method::Trades).then_some(a.beta),
                eps_warmup_epochs: eps_warmup,
            }),
        }),
    );
    let card_path = export::write_card(&out, &card)?;
    println!(
        "wrote {}, {}, {}",
        onnx_path.display(),
        card_path.display(),
        ckpt.display()
    );
    Ok(())
}
