//! `ensemble`: assemble trained models into one dropout ensemble — one ONNX file, one card —
//! measure its test accuracy, and calibrate its MI threshold over the pooled samples on the
//! same held-out training images `train` calibrates on.

use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use mcgate::contract::card::{self, Assembly, Member, ModelCard, Provenance, Training};
use mcgate::model::Model;
use mcgate::score::roc::rate_above;
use tch::Device;

use super::{load_mnist, MnistModel};
use crate::data::{self, Known};
use crate::export::{self, with_ext};
use crate::nets::ensemble::Ensemble;
use crate::nets::DropoutNet;
use crate::train;

#[derive(Debug, Args)]
pub struct EnsembleArgs {
    /// Dataset the members were trained on: its test split measures accuracy, its held-out
    /// training images (the last --validation) calibrate the threshold.
    #[arg(value_enum)]
    pub dataset: Known,
    /// The members, comma-separated, in output order: model stems as `train` writes them
    /// (<STEM>.card.json and <STEM>.safetensors), e.g.
    /// models/mnist,runs/ensemble/mnist-seed-2,…
    #[arg(long, value_delimiter = ',', required = true, value_name = "STEM")]
    pub members: Vec<PathBuf>,
    /// Output stem: writes <OUT>.onnx and <OUT>.card.json [default: models/<dataset>-ensemble].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Directory with the IDX files [default: the dataset's data/ directory].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Monte-Carlo samples T per member (M·T pooled) for the MC accuracy, the calibration
    /// and the card's default.
    #[arg(long, default_value_t = 20)]
    pub samples: usize,
    /// Training images held out for calibration, as the members were trained with.
    #[arg(long, default_value_t = 5000)]
    pub validation: usize,
    /// Clean false-positive rate the MI threshold is calibrated for.
    #[arg(long, default_value_t = 0.05)]
    pub target_fpr: f64,
    /// Seed of tch's mask generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Use only the first N test images; for quick runs.
    #[arg(long)]
    pub test_limit: Option<usize>,
}

/// Writes `<out>.onnx` and `<out>.card.json`.
pub fn run(args: EnsembleArgs) -> Result<()> {
    let EnsembleArgs {
        dataset,
        members,
        out,
        data: dir,
        samples,
        validation,
        target_fpr,
        seed,
        test_limit,
    } = args;
    let source_commit = super::source_commit();
    let hint = dataset.fetch_hint();
    let dir = dir.unwrap_or_else(|| dataset.data_dir());
    let out = out.unwrap_or_else(|| {
        PathBuf::from("models").join(format!("{}-ensemble", dataset.model_name()))
    });
    let full = data::load_split(&dir, "train", hint)?;
    let mut test = data::load_split(&dir, "t10k", hint)?;
    ensure!(
        validation > 0 && validation < full.len(),
        "--validation {validation} must be in 1..{}",
        full.len()
    );
    let val = full.slice(full.len() - validation..full.len());
    if let Some(n) = test_limit {
        test = test.slice(0..n.min(test.len()));
    }
    let device = Device::cuda_if_available();

    let mut nets = vec![];
    let mut member_cards: Vec<(ModelCard, Training)> = vec![];
    let mut stores = vec![];
    for stem in &members {
        let card = ModelCard::read(&with_ext(stem, "card.json"))?;
        let Provenance::Trained(training) = &card.provenance else {
            bail!(
                "{}: a member must be a model trained here (`train`)",
                stem.display()
            );
        };
        // `train` trains on the first `train_images`: those must stop before the held-out ones.
        ensure!(
            training.train_images <= full.len() - validation,
            "{} was trained on {} images, so on some of the last {validation} this command \
             calibrates on",
            stem.display(),
            training.train_images
        );
        ensure!(
            card.classes == dataset.classes(),
            "{} does not have the {dataset:?} classes",
            stem.display()
        );
        // The same network twice would double its samples and add nothing.
        if let Some(twin) = member_cards
            .iter()
            .position(|(c, _)| c.onnx_sha256 == card.onnx_sha256)
        {
            bail!(
                "{} and {} are the same model",
                members[twin].display(),
                stem.display()
            );
        }
        let (net, vs) = load_mnist(stem, &card, device)?;
        let MnistModel::Single(net) = net else {
            bail!(
                "{}: a member must be one network, not an ensemble",
                stem.display()
            );
        };
        log::info!("member {}: seed {}", stem.display(), training.seed);
        let training = training.clone();
        nets.push(net);
        stores.push(vs);
        member_cards.push((card, training));
    }
    let ensemble = Ensemble::new(nets)?;

    tch::manual_seed(seed as i64);
    let measured =
        train::measure_and_calibrate(&ensemble, &test, &val, samples as i64, target_fpr, device)?;
    // Each member alone at its own card's threshold, on the same test images: the spread
    // the ensemble is compared with.
    for ((net, (member_card, _)), stem) in
        ensemble.members().iter().zip(&member_cards).zip(&members)
    {
        let (acc, mi) = train::mc_accuracy_and_mi(net, &test, samples as i64, device)?;
        let t = member_card
            .mi_threshold()
            .context("a member has no MI threshold")?;
        log::info!(
            "member {}: MC (T={samples}) test accuracy {:.2}%, {:.2}% of the test images above its threshold {t:.5} (calibrated at T={})",
            stem.display(),
            100.0 * acc,
            100.0 * rate_above(&mi, t),
            member_card.default_samples
        );
    }

    let onnx = export::onnx_bytes(&ensemble, &export::float_doc(&ensemble))?;
    let mut card = export::card_for(
        &ensemble,
        &export::stem_name(&out),
        dataset.classes(),
        &onnx,
        samples,
        Some(measured.card_threshold()),
        Some(measured.metrics()),
        Provenance::Assembled(Assembly {
            assembled_from: members.iter().map(|s| s.display().to_string()).collect(),
            source_commit,
        }),
    );
    let mut sites = card.dropout_sites.iter().map(|s| s.input.clone());
    card.ensemble = Some(card::Ensemble {
        members: ensemble
            .members()
            .iter()
            .zip(member_cards)
            .zip(&members)
            .map(|((net, (member_card, training)), stem)| Member {
                name: export::stem_name(stem),
                sites: sites.by_ref().take(net.sites().len()).collect(),
                metrics: member_card.metrics,
                training,
            })
            .collect(),
    });
    // The runtime must accept it, card and graph checked against each other, before anything
    // is written.
    let onnx_path = with_ext(&out, "onnx");
    Model::from_parts(card.clone(), &onnx, &onnx_path)
        .context("the runtime refuses the assembled ensemble")?;
    export::create_parent(&out)?;
    export::write_onnx(&out, &onnx)?;
    let card_path = export::write_card(&out, &card)?;
    println!("wrote {}, {}", onnx_path.display(), card_path.display());
    Ok(())
}
