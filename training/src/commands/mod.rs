//! The CLI's subcommands as library functions: each takes its parsed arguments (clap
//! derives them here), fills in the defaults, runs and reports. `main.rs` only parses and
//! dispatches.

pub mod bundle;
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
pub mod samples;
pub mod train;
pub mod train_head;
pub mod train_vae;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use mcgate::model::card::ModelCard;
use tch::{nn, Device};

use crate::data::{self, Dataset};
use crate::export::with_ext;
use crate::nets::mnist::MnistCnn;

/// The trained (float) model a command reads, and its dataset.
#[derive(Debug, Args)]
pub struct TrainedModel {
    /// Dataset (the test split is what the command scores or attacks).
    #[arg(value_enum, default_value = "mnist")]
    pub dataset: data::Known,
    /// Model stem: reads <MODEL>.safetensors and <MODEL>.card.json [default: models/<dataset>].
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

    /// Loads `<stem>.card.json` and `<stem>.safetensors` and the dataset's test split.
    pub fn load(&self) -> Result<Trained> {
        let model = self.stem();
        let card = ModelCard::read(&with_ext(&model, "card.json"))?;
        let test = data::load_split(&self.data_dir(), "t10k", self.dataset.fetch_hint())?;
        let device = Device::cuda_if_available();
        log::info!("device {device:?}, {} threads", tch::get_num_threads());
        let mut vs = nn::VarStore::new(device);
        let net = MnistCnn::new(&vs.root());
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
}

/// A trained model to attack: its card, the frozen network, and the dataset's test split.
pub struct Trained {
    pub card: ModelCard,
    pub net: MnistCnn,
    pub test: Dataset,
    pub device: Device,
    /// Owns the network's variables.
    _vs: nn::VarStore,
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
