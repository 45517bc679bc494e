//! `evaluate-photos`: the paper's Table 1 on real photos with the ImageNet EfficientNet-Lite0
//! (last-layer MC dropout): the same evaluation as `evaluate` (`eval::evaluate`), fed with
//! photos. The labelled photos (class in the file name), each with its camera-like variants,
//! are attacked where both models classify them right; unlabelled photos and their variants
//! are extra clean negatives; the bootstrap resamples whole scenes (a photo and its
//! variants), since variants of one photo are not independent evidence.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use tch::Device;

use crate::attack::Method;
use crate::data::photos::Photos;
use crate::data::variants::{variants, VARIANTS};
use crate::eval::{
    self, figures, markdown::markdown, Crafter, EvalConfig, EvalImages, ExportedModel,
};
use crate::export::{create_parent, with_ext};
use crate::nets::lite0;
use crate::nets::DropoutNet;

#[derive(Debug, Args)]
pub struct EvaluatePhotosArgs {
    /// The converted weights (scripts/fetch-lite0.sh).
    #[arg(long, default_value = "data/lite0/efficientnet-lite0.safetensors")]
    pub weights: PathBuf,
    /// The exported model: its card's MI threshold is the gate's, and it scores every image
    /// through the runtime beside tch.
    #[arg(long, default_value = "models/lite0-imagenet")]
    pub model: PathBuf,
    /// Labelled photos (class after the last `_` of the name): attacked.
    #[arg(long, default_value = "data/lite0/photos/foolbox")]
    pub photos: PathBuf,
    /// Unlabelled photos: extra clean negatives only.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "data/lite0/photos/skimage/astronaut.png,data/lite0/photos/skimage/chelsea.png,data/lite0/photos/skimage/coffee.png,data/lite0/photos/skimage/rocket.jpg,data/lite0/photos/skimage/motorcycle_left.png"
    )]
    pub extra_clean: Vec<PathBuf>,
    /// Use each photo alone, without its camera-like variants.
    #[arg(long)]
    pub no_variants: bool,
    /// Output stem: <OUT>.md, <OUT>.json and the ROC/PR figures.
    #[arg(long, default_value = "docs/results/lite0-photos")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 20)]
    pub samples: i64,
    /// L∞ budgets on the 0–255 scale (the paper's photo budgets).
    #[arg(long, value_delimiter = ',', default_value = "5,10")]
    pub eps: Vec<f64>,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "fgm,bim,mim")]
    pub methods: Vec<Method>,
    /// λ values for the adaptive attack (CE − λ·MI against the MC model); empty: none.
    #[arg(long, value_delimiter = ',')]
    pub adaptive: Vec<f64>,
    /// Bootstrap resamples (of scenes) behind each AUC's 95 % interval.
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Images per attack batch.
    #[arg(long, default_value_t = 16)]
    pub batch: i64,
}

/// `paths` as photos, each followed by its variants (or alone); labels from the file names;
/// one group per file, numbered from `first_group`.
fn load(
    paths: &[PathBuf],
    with_variants: bool,
    first_group: usize,
    net: &dyn DropoutNet,
) -> Result<(EvalImages, usize)> {
    let (mut names, mut images, mut groups) = (vec![], vec![], vec![]);
    for (g, path) in paths.iter().enumerate() {
        let photo = mcgate::input::frame::decode_file(path)
            .with_context(|| format!("{}", path.display()))?;
        if with_variants {
            let all = variants(&photo.to_rgb8());
            debug_assert_eq!(all.len(), VARIANTS.len());
            for v in all {
                names.push(path.clone());
                images.push(v.into());
                groups.push(first_group + g);
            }
        } else {
            names.push(path.clone());
            images.push(photo);
            groups.push(first_group + g);
        }
    }
    let photos = Photos::from_images(names, images, &net.input_spec())?;
    let labels = photos
        .labels
        .iter()
        .map(|l| l.map_or(-1, |l| l as i64))
        .collect();
    Ok((
        EvalImages {
            pixels: photos.pixels,
            labels,
            groups,
        },
        paths.len(),
    ))
}

pub fn run(args: EvaluatePhotosArgs) -> Result<()> {
    let device = Device::Cpu;
    let (net, _vs) = lite0::load_pretrained(&args.weights)?;
    let model = mcgate::model::Model::load_from(&args.model)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let threshold = model
        .card
        .mi_threshold()
        .context("the model card has no MI threshold: run `mcgate calibrate` first")?;

    let mut labelled: Vec<PathBuf> = std::fs::read_dir(&args.photos)
        .with_context(|| format!("reading {}", args.photos.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    labelled.sort();
    let with_variants = !args.no_variants;
    let (attacked, scenes) = load(&labelled, with_variants, 0, &net)?;
    anyhow::ensure!(
        attacked.labels.iter().all(|&l| l >= 0),
        "every photo in {} needs its class after the last `_` of its name",
        args.photos.display()
    );
    let (extra, extra_scenes) = load(&args.extra_clean, with_variants, scenes, &net)?;
    log::info!(
        "{} labelled frames of {scenes} photos to attack, {} extra clean frames of {extra_scenes} photos",
        attacked.len(),
        extra.len()
    );
    let name = args
        .model
        .file_name()
        .map_or("model".into(), |n| n.to_string_lossy().to_string());
    let cfg = EvalConfig {
        seed: args.seed,
        samples: args.samples,
        eps_255: args.eps.clone(),
        methods: args.methods.clone(),
        mc_targets: true,
        deterministic_targets: true,
        eot: false,
        true_labels: false,
        adaptive_lambdas: args.adaptive.clone(),
        adaptive_eps_255: args.eps.clone(),
        threshold,
        batch: args.batch,
        exported: vec![ExportedModel { name, model }],
        correct_only: true,
        bootstrap: args.bootstrap,
    };
    let start = Instant::now();
    let report = eval::evaluate(&net, Crafter::Itself, &attacked, Some(&extra), &cfg, device)?;
    log::info!("evaluated in {:.0} s", start.elapsed().as_secs_f64());
    create_parent(&args.out)?;
    let md = markdown(&report);
    std::fs::write(with_ext(&args.out, "md"), &md)?;
    std::fs::write(
        with_ext(&args.out, "json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    for path in figures::write_all(&report, &args.out, "Photos (EfficientNet-Lite0, ImageNet)")? {
        log::info!("wrote {}", path.display());
    }
    println!("{md}");
    Ok(())
}
