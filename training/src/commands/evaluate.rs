//! `evaluate`: attack a trained model and write the detection report (Markdown, JSON,
//! figures).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use clap::{Args, ValueEnum};
use mcgate::contract::card::ModelCard;

use super::{load_mnist, Trained, TrainedModel};
use crate::attack::Method;
use crate::eval::{
    self, figures, markdown::markdown, Crafter, EvalConfig, EvalImages, ExportedModel,
};
use crate::export::{create_parent, with_ext};

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub source: TrainedModel,
    /// Output stem: writes <OUT>.md, <OUT>.json and the ROC/PR figures
    /// <OUT>-{roc,pr}-{deterministic,mc,adaptive}.{png,svg} [default: docs/results/<dataset>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Test images, drawn without replacement.
    #[arg(long, default_value_t = 1000)]
    pub images: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 20)]
    pub samples: i64,
    /// L∞ budgets on the 0–255 scale (the paper: 5, 10; MNIST-typical: 25.5, 51, 76.5).
    #[arg(long, value_delimiter = ',', default_value = "5,10,25.5,51,76.5")]
    pub eps: Vec<f64>,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "fgm,bim,mim")]
    pub methods: Vec<Method>,
    /// Attack the MC model with the mean of per-sample losses (EOT) instead of the loss
    /// of the MC mean (the paper's choice).
    #[arg(long)]
    pub eot: bool,
    /// Attack away from the true labels instead of the model's own clean predictions.
    #[arg(long)]
    pub true_labels: bool,
    /// Attack only the deterministic model, or only the MC model.
    #[arg(long, value_enum)]
    pub only: Option<Only>,
    /// λ values for the adaptive attack (BIM/MIM maximising CE − λ·MI against the MC model).
    #[arg(long, value_delimiter = ',', default_value = "0.05,0.2,1")]
    pub adaptive: Vec<f64>,
    /// ε values (0–255 scale) at which the adaptive attack runs.
    #[arg(long, value_delimiter = ',', default_value = "10,76.5")]
    pub adaptive_eps: Vec<f64>,
    /// Images per attack batch.
    #[arg(long, default_value_t = 250)]
    pub batch: i64,
    /// Exported models (stems, comma-separated) that also score every clean, adversarial
    /// and noise image through the runtime, with the same masks, e.g.
    /// `models/mnist,models/mnist.int8`: the int8 model's MI AUC beside its float twin's.
    #[arg(long, value_delimiter = ',', value_name = "STEM")]
    pub runtime: Vec<PathBuf>,
    /// Also attack the images the deterministic or the MC model misclassifies (the old
    /// protocol: their natural errors then count as successful attacks). By default only the
    /// images both classify correctly are attacked.
    #[arg(long)]
    pub include_misclassified: bool,
    /// Craft the attacks on this model (stem, e.g. one member of the evaluated ensemble) and
    /// transfer them to the evaluated model, instead of attacking it white-box.
    #[arg(long, value_name = "STEM")]
    pub craft_on: Option<PathBuf>,
    /// Bootstrap resamples behind each AUC's 95 % interval (0: no intervals).
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
}

/// Which attacked model `--only` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Only {
    Deterministic,
    Mc,
}

/// Writes `<out>.md`, `<out>.json` and the figures, and prints the Markdown.
pub fn run(args: EvaluateArgs) -> Result<()> {
    let EvaluateArgs {
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
        include_misclassified,
        craft_on,
        bootstrap,
    } = args;
    let out =
        out.unwrap_or_else(|| PathBuf::from("docs/results").join(source.dataset.model_name()));
    let Trained {
        card,
        net,
        test,
        device,
        ..
    } = source.load()?;
    let cfg = EvalConfig {
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
        threshold: card
            .mi_threshold()
            .context("the model card has no MI threshold")?,
        batch,
        exported: runtime
            .iter()
            .map(|stem| {
                Ok(ExportedModel {
                    name: stem.file_name().map_or(stem.display().to_string(), |n| {
                        n.to_string_lossy().to_string()
                    }),
                    model: mcgate::model::Model::load_from(stem)
                        .with_context(|| format!("loading {}", stem.display()))?,
                })
            })
            .collect::<Result<_>>()?,
        correct_only: !include_misclassified,
        bootstrap,
    };
    let start = Instant::now();
    let subset = EvalImages::from_dataset(&test.pick(images, seed), device);
    let evaluated = net.as_dyn();
    let crafter = match &craft_on {
        Some(stem) => {
            let card = ModelCard::read(&with_ext(stem, "card.json"))?;
            let (net, vs) = load_mnist(stem, &card, device)?;
            ensure!(
                net.as_dyn().input_spec() == evaluated.input_spec()
                    && net.as_dyn().classes() == evaluated.classes(),
                "{} takes another input or gives other classes than the evaluated model",
                stem.display()
            );
            Some((net, vs, stem.display().to_string()))
        }
        None => None,
    };
    let crafter_ref = match &crafter {
        Some((net, _, name)) => Crafter::Transfer {
            net: net.as_dyn(),
            name: name.clone(),
        },
        None => Crafter::Itself,
    };
    let report = eval::evaluate(evaluated, crafter_ref, &subset, None, &cfg, device)?;
    log::info!("evaluated in {:.0} s", start.elapsed().as_secs_f64());
    create_parent(&out)?;
    let md = markdown(&report);
    std::fs::write(with_ext(&out, "md"), &md)?;
    std::fs::write(
        with_ext(&out, "json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    for path in figures::write_all(&report, &out, source.dataset.title())? {
        log::info!("wrote {}", path.display());
    }
    println!("{md}");
    Ok(())
}
