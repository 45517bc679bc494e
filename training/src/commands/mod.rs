//! The CLI's subcommands as library functions: each takes its parsed arguments (clap
//! derives them here), fills in the defaults, runs and reports. `main.rs` only parses and
//! dispatches.

pub mod bundle;
pub mod density;
pub mod ensemble;
pub mod evaluate;
pub mod evaluate_photos;
pub mod holes;
pub mod interpolations;
pub mod latent_maps;
pub mod lite0;
pub mod photo_bundle;
pub mod photo_samples;
pub mod photo_variants;
pub mod quantize;
pub mod redteam;
pub mod robust_accuracy;
pub mod samples;
pub mod train;
pub mod train_head;
pub mod train_vae;

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use clap::Args;
use mcgate::contract::card::{sha256_hex, ModelCard};
use tch::{nn, Device};

use crate::data::{self, Dataset};
use crate::export::with_ext;
use crate::latent::vae::Vae;
use crate::nets::ensemble::{member_prefix, Ensemble};
use crate::nets::mnist::MnistCnn;
use crate::nets::{load_onnx_weights, DropoutNet};

/// The trained (float) model a command reads, and its dataset.
#[derive(Debug, Args)]
pub struct TrainedModel {
    /// Dataset (the test split is what the command scores or attacks).
    #[arg(value_enum, default_value = "mnist")]
    pub dataset: data::Known,
    /// Model stem: reads <MODEL>.card.json and <MODEL>.safetensors (an ensemble's weights:
    /// <MODEL>.onnx) [default: models/<dataset>].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Directory with the IDX files [default: the dataset's data/ directory].
    #[arg(long)]
    pub data: Option<PathBuf>,
}

impl TrainedModel {
    pub fn stem(&self) -> PathBuf {
        self.model
            .clone()
            .unwrap_or_else(|| PathBuf::from("models").join(self.dataset.model_name()))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(|| self.dataset.data_dir())
    }

    /// Loads `<stem>.card.json`, the network ([`load_mnist`]) and the dataset's test split.
    pub fn load(&self) -> Result<Trained> {
        let model = self.stem();
        let card = ModelCard::read(&with_ext(&model, "card.json"))?;
        let test = data::load_split(&self.data_dir(), "t10k", self.dataset.fetch_hint())?;
        let device = Device::cuda_if_available();
        log::info!("device {device:?}, {} threads", tch::get_num_threads());
        let (net, vs) = load_mnist(&model, &card, device)?;
        Ok(Trained {
            card,
            net,
            test,
            device,
            _vs: vs,
        })
    }
}

/// A trained model to attack: its card, the frozen network, and the dataset's test split.
pub struct Trained {
    pub card: ModelCard,
    pub net: MnistModel,
    pub test: Dataset,
    pub device: Device,
    /// Owns the network's variables.
    _vs: nn::VarStore,
}

/// The paper's MNIST network, alone or as a dropout ensemble of several.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per command, never moved in a loop
pub enum MnistModel {
    Single(MnistCnn),
    Ensemble(Ensemble<MnistCnn>),
}

impl MnistModel {
    pub fn as_dyn(&self) -> &dyn DropoutNet {
        match self {
            MnistModel::Single(n) => n,
            MnistModel::Ensemble(e) => e,
        }
    }
}

/// The frozen network of the model at `stem` with card `card`: one network from
/// `<stem>.safetensors`, or, where the card has an `ensemble`, its members' weights from
/// `<stem>.onnx` itself (an ensemble ships no checkpoint: the ONNX holds every weight).
pub fn load_mnist(
    stem: &Path,
    card: &ModelCard,
    device: Device,
) -> Result<(MnistModel, nn::VarStore)> {
    let mut vs = nn::VarStore::new(device);
    let net = match &card.ensemble {
        None => {
            let net = MnistCnn::new(&vs.root());
            let ckpt = with_ext(stem, "safetensors");
            vs.load(&ckpt)
                .with_context(|| format!("loading {}", ckpt.display()))?;
            MnistModel::Single(net)
        }
        Some(e) => {
            let members = (0..e.members.len())
                .map(|k| MnistCnn::new(&(vs.root() / member_prefix(k))))
                .collect();
            let onnx = with_ext(stem, "onnx");
            let bytes =
                std::fs::read(&onnx).with_context(|| format!("reading {}", onnx.display()))?;
            ensure!(
                sha256_hex(&bytes) == card.onnx_sha256,
                "{} is not the ONNX file its card describes (SHA-256 differs)",
                onnx.display()
            );
            load_onnx_weights(&mut vs, &bytes)
                .with_context(|| format!("loading the weights of {}", onnx.display()))?;
            MnistModel::Ensemble(Ensemble::new(members)?)
        }
    };
    vs.freeze();
    Ok((net, vs))
}

/// What the latent-space commands read.
#[derive(Debug, Clone, Args)]
pub struct LatentInputs {
    /// The VAE checkpoint (`train-vae`).
    #[arg(long, default_value = "models/mnist-vae.safetensors")]
    pub vae: PathBuf,
    /// The MNIST model, one network or an ensemble: its card, <MODEL>.safetensors (an
    /// ensemble's weights: <MODEL>.onnx) and, where the runtime is used, its ONNX.
    #[arg(long, default_value = "models/mnist")]
    pub model: PathBuf,
    /// Directory with the MNIST IDX files.
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
}

/// The latent-space study's two networks, frozen on the CPU: the VAE (`train-vae`) and the
/// MNIST model (one network or an ensemble, [`load_mnist`]).
pub struct LatentPair {
    pub vae: Vae,
    pub net: MnistModel,
    /// Own the two networks' variables.
    _stores: [nn::VarStore; 2],
}

impl LatentPair {
    pub fn load(inputs: &LatentInputs) -> Result<LatentPair> {
        let (vae, model) = (&inputs.vae, &inputs.model);
        let mut vae_vs = nn::VarStore::new(Device::Cpu);
        let vae_net = Vae::new(&vae_vs.root());
        vae_vs
            .load(vae)
            .with_context(|| format!("loading {} (run train-vae)", vae.display()))?;
        let card = ModelCard::read(&with_ext(model, "card.json"))?;
        let (net, vs) = load_mnist(model, &card, Device::Cpu)?;
        vae_vs.freeze();
        Ok(LatentPair {
            vae: vae_net,
            net,
            _stores: [vae_vs, vs],
        })
    }
}

/// `git describe --always --dirty` of the working directory, or `unknown`.
pub fn source_commit() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
