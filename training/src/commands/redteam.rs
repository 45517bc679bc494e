//! `redteam`: the gate attacked by an adversary who knows it, judged as deployed; writes the
//! security report's JSON (`docs/results/security-NAME.json`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use clap::Args;
use mcgate::contract::bundle::{Group, Role};
use mcgate::contract::card::{ModelCard, Security, Signal, WorstBypass, SCHEMA};
use mcgate::model::Model;
use mcgate::score::fusion::FusedGate;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use super::{load_mnist, source_commit, MnistModel, Trained, TrainedModel};
use crate::bundle;
use crate::data::photos::Photos;
use crate::export::{create_parent, with_ext, write_card};
use crate::nets::deterministic_probs;
use crate::nets::lite0::{self, EfficientNetLite0};
use crate::nets::DropoutNet;
use crate::redteam::density::DensityAim;
use crate::redteam::judge::{frame_for, quantise, Judge};
use crate::redteam::loss::{Goal, Loss};
use crate::redteam::patch::{Patch, Placement};
use crate::redteam::pgd::{Norm, Pgd};
use crate::redteam::{
    self, Budget, Method, NamedAttack, RedTeamConfig, Row, Surrogate, Targets, THREAT_MODEL,
};

#[derive(Debug, Args)]
pub struct RedTeamArgs {
    #[command(flatten)]
    pub source: TrainedModel,
    /// The exported model the runtime judges [default: the attacked model's own ONNX]. Give
    /// `models/mnist.int8` to attack the float network and judge its int8 export, which has
    /// no gradient of its own.
    #[arg(long, value_name = "STEM")]
    pub judge: Option<PathBuf>,
    /// Attack the ImageNet EfficientNet-Lite0 (--weights) on these labelled photos (class
    /// after the last `_` of each name) instead of the dataset's test split, judged by
    /// `models/lite0-imagenet` unless --judge says otherwise. Each photo is one image, framed
    /// around the model's crop as a camera frame the runtime cuts back to exactly the
    /// attacked pixels. No surrogate; a patch trains on --patch-photos, or else on the photos
    /// --images leaves over.
    #[arg(long, value_name = "DIR")]
    pub photos: Option<PathBuf>,
    /// With --photos: train the universal patches on these photos instead (no labels needed:
    /// each counts as fooled when the gate accepts another class than the network gives it
    /// clean), so that every labelled photo is judged and none was trained on. E.g.
    /// `data/lite0/photos/skimage`, scenes the labelled photos do not show.
    #[arg(long, value_name = "DIR", requires = "photos")]
    pub patch_photos: Option<PathBuf>,
    /// The converted Lite0 weights, with --photos (scripts/fetch-lite0.sh).
    #[arg(long, default_value = "data/lite0/efficientnet-lite0.safetensors")]
    pub weights: PathBuf,
    /// Output JSON [default: docs/results/security-<judged model's file name>.json].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Test images attacked: drawn without replacement, kept only where the deterministic
    /// network and the gate (one draw of masks) both classify them right.
    #[arg(long, default_value_t = 100)]
    pub images: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// L∞ budgets, pixel units ([0, 1]; 0.1 = 25.5 on the 0–255 scale); the flag alone
    /// (`--eps` with no value): none, as for every budget list below.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "0.05,0.1,0.2,0.3")]
    pub eps: Vec<f64>,
    /// L2 budgets, pixel units (the Euclidean length of the whole perturbation); the flag alone: none.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "1,2,3")]
    pub l2: Vec<f64>,
    /// L∞ budgets of the denial-of-service attack (raise MI on clean frames until the gate
    /// rejects them); the flag alone: none.
    #[arg(
        long,
        value_delimiter = ',',
        num_args = 0..,
        default_value = "0.0078,0.0157,0.0314,0.0627,0.1255"
    )]
    pub dos_eps: Vec<f64>,
    /// A surrogate network to craft transfer attacks on, as `STEM` or `STEM@MEMBER` (a member,
    /// from 0, of an ensemble); repeat the flag for several. On each, at every --eps: plain
    /// PGD on its deterministic network (`transfer-pgd`, what an attacker with an ordinary
    /// network does) and PGD with expectation over its own masks against margin + MI hinge
    /// (`transfer-pgd-eot`); crafted and checked on the surrogate alone, judged on the
    /// attacked model. E.g. `models/mnist-ensemble@1` (the seed-2 network, trained
    /// independently of `models/mnist`) or a network from `train --no-dropout`.
    #[arg(long, value_name = "STEM[@MEMBER]")]
    pub surrogate: Vec<String>,
    /// The attack families run: `linf` (white-box PGD at --eps), `l2` (at --l2), `patch` (at
    /// --patch), `transfer` (on each --surrogate at --eps), `dos` (at --dos-eps).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "linf,l2,patch,transfer,dos"
    )]
    pub attacks: Vec<Family>,
    /// Add this run's rows to the report already at --out instead of writing a new one: a
    /// row of the same attack, surrogate, norm and budget is replaced, every other row kept
    /// (each row names the commit that ran it). The earlier report must be of the same
    /// model, images, seed, samples, threshold and mask draws (checked before any attack
    /// runs), and its clean frames must have fared the same (checked after); otherwise an
    /// error, and nothing written. Not with --bundle.
    #[arg(long, conflicts_with = "bundle")]
    pub update: bool,
    /// Universal patches, each this share of the frame's area; the flag alone: none.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "0.05,0.1,0.15")]
    pub patch: Vec<f64>,
    /// Target classes tried for each patch (one patch each; the attacker keeps the one its
    /// own check lets through most); the flag alone: one untargeted patch.
    #[arg(
        long,
        value_delimiter = ',',
        num_args = 0..,
        default_value = "0,1,2,3,4,5,6,7,8,9"
    )]
    pub patch_targets: Vec<i64>,
    /// Signed gradient steps training each patch (on other test images than those attacked).
    #[arg(long, default_value_t = 300)]
    pub patch_steps: usize,
    /// Range of the factor scaling the patch's side each time it lands, in training and when
    /// judged (expectation over scale) [default: 0.8,1.25 with --photos; 1,1 (none) for
    /// digits].
    #[arg(long, value_delimiter = ',', num_args = 2, value_name = "LO,HI")]
    pub patch_scale: Option<Vec<f64>>,
    /// Range of the factor multiplying the patch's pixels each time it lands: the light on
    /// the sticker [default: 0.7,1.3 with --photos; 1,1 (none) for digits].
    #[arg(long, value_delimiter = ',', num_args = 2, value_name = "LO,HI")]
    pub patch_brightness: Option<Vec<f64>>,
    /// PGD steps per start.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Starts per λ (the first at the clean image, the rest random in the ball).
    #[arg(long, default_value_t = 2)]
    pub restarts: usize,
    /// Mask draws per step (expectation over the masks) [default: the card's T].
    #[arg(long)]
    pub eot: Option<i64>,
    /// Weights of the hinge on MI; each image keeps the best.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    pub lambdas: Vec<f64>,
    /// The hinge pushes MI under this fraction of the threshold.
    #[arg(long, default_value_t = 0.5)]
    pub hinge_fraction: f64,
    /// The margin stops pushing once the wrong class leads by this (log probability).
    #[arg(long, default_value_t = 5.0)]
    pub kappa: f64,
    /// Check the iterate through the runtime (the attacker's own masks) every this many steps.
    #[arg(long, default_value_t = 10)]
    pub check_every: usize,
    /// Secret mask draws each final frame is judged under.
    #[arg(long, default_value_t = 5)]
    pub mask_draws: usize,
    /// Add the adversarial frames of the worst attack at each budget (the first
    /// --bundle-frames attacked images) to the eval bundle in DIR, which must be for the
    /// judged model's ONNX, as positive groups `redteam_ATTACK_BUDGET` scored by the
    /// workstation as the bundle's own frames: `mcgate validate` then replays them on the
    /// board. Groups of an earlier run are replaced.
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// Frames per group added by --bundle.
    #[arg(long, default_value_t = 20)]
    pub bundle_frames: usize,
    /// Also write the worst bypass per budget into the judged model's card (its `security`
    /// block, schema 2; `mcgate info` prints it). Rewrites the card: its SHA-256 changes.
    #[arg(long)]
    pub card: bool,
    /// Bootstrap resamples of images behind each interval.
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
}

/// A family of attacks, as `--attacks` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Family {
    /// White-box L∞ PGD (plain, with expectation over the masks, two-phase).
    Linf,
    /// White-box L2 PGD.
    L2,
    /// Universal patches.
    Patch,
    /// Crafted on surrogates.
    Transfer,
    /// Denial of service.
    Dos,
}

/// The security report's JSON.
#[derive(Debug, Serialize)]
pub struct SecurityReport {
    /// The judged model's card name.
    pub model: String,
    /// The network the gradients came from.
    pub crafted_on: String,
    pub threat_model: &'static str,
    /// The commit of the latest run that wrote to the report (each row names its own).
    pub commit: String,
    pub images: usize,
    /// Seeds the draw of test images, the attacker's checks and the judge's masks.
    pub seed: u64,
    pub samples: usize,
    pub threshold: f64,
    /// The MI the attacks aimed under: the threshold, or MI's own cut where the card fuses
    /// signals (the entropy and density aims are in each row's `settings`).
    pub mi_aim: f64,
    pub mask_draws: usize,
    /// Share of the attacked images' clean frames the gate rejects (same draws).
    pub clean_fpr: f64,
    /// One per attack and budget (a [`Row`] each; older reports' rows may lack later fields).
    pub rows: Vec<serde_json::Value>,
    /// Per norm and budget, the attack that got most frames through.
    pub worst: Vec<Worst>,
    /// The smallest denial-of-service budget at which the gate rejects most clean frames
    /// (over half of the image × draw pairs); `None` if none of those tried.
    pub dos_smallest_eps: Option<f64>,
    /// Run time of every run that wrote to the report, added up.
    pub seconds: f64,
}

/// The worst attack at one budget.
#[derive(Debug, Serialize)]
pub struct Worst {
    pub norm: Budget,
    pub eps: f64,
    pub attack: String,
    pub bypass: f64,
    pub interval: [f64; 2],
}

/// The attacks at each budget: plain PGD on the deterministic network (ignores the gate);
/// PGD with expectation over the masks against margin + MI hinge (and an entropy or density
/// hinge where the card fuses them), joint and two-phase (L∞),
/// joint (L2); a universal patch at each area; the denial-of-service PGD that raises MI.
pub fn attacks(
    args: &RedTeamArgs,
    eot: i64,
    entropy_cut: Option<f64>,
    density: Option<DensityAim>,
) -> Vec<NamedAttack> {
    let loss = Loss {
        entropy_cut,
        density,
        eot,
        hinge_fraction: args.hinge_fraction,
        kappa: args.kappa,
        deterministic: false,
        targeted: false,
        goal: Goal::Bypass,
    };
    let base = |norm, eps| Pgd {
        norm,
        eps,
        steps: args.steps,
        restarts: args.restarts,
        lambdas: args.lambdas.clone(),
        two_phase: false,
        check_every: args.check_every,
        loss: loss.clone(),
    };
    let pgd = |name: &str, p: Pgd| NamedAttack {
        name: name.into(),
        method: Method::Pgd(p),
        surrogate: None,
    };
    let range = |given: &Option<Vec<f64>>, photos: [f64; 2]| match given {
        Some(v) => [v[0], v[1]],
        None if args.photos.is_some() => photos,
        None => [1.0, 1.0],
    };
    let placement = Placement {
        scale: range(&args.patch_scale, [0.8, 1.25]),
        brightness: range(&args.patch_brightness, [0.7, 1.3]),
    };
    let has = |f: Family| args.attacks.contains(&f);
    // Plain PGD: the margin never stops pushing (a confident wrong class).
    let plain = |eps| Pgd {
        lambdas: vec![0.0],
        loss: Loss {
            deterministic: true,
            kappa: 1e9,
            ..loss.clone()
        },
        ..base(Norm::Linf, eps)
    };
    let mut out = vec![];
    for &eps in args.eps.iter().filter(|_| has(Family::Linf)) {
        out.push(pgd("pgd-deterministic", plain(eps)));
        out.push(pgd("pgd-eot", base(Norm::Linf, eps)));
        out.push(pgd(
            "pgd-eot-two-phase",
            Pgd {
                two_phase: true,
                ..base(Norm::Linf, eps)
            },
        ));
    }
    for &eps in args.l2.iter().filter(|_| has(Family::L2)) {
        out.push(pgd("pgd-eot", base(Norm::L2, eps)));
    }
    for &area in args.patch.iter().filter(|_| has(Family::Patch)) {
        out.push(NamedAttack {
            name: "patch-eot".into(),
            method: Method::Patch(Patch {
                area,
                steps: args.patch_steps,
                step: 0.05,
                lambda: args.lambdas.iter().cloned().fold(0.0, f64::max),
                targets: args.patch_targets.clone(),
                placement,
                // As recorded; each trial sets it from its target (`patch::craft`).
                loss: Loss {
                    targeted: !args.patch_targets.is_empty(),
                    ..loss.clone()
                },
            }),
            surrogate: None,
        });
    }
    for i in (0..args.surrogate.len()).filter(|_| has(Family::Transfer)) {
        for &eps in &args.eps {
            for (name, p) in [
                ("transfer-pgd", plain(eps)),
                ("transfer-pgd-eot", base(Norm::Linf, eps)),
            ] {
                out.push(NamedAttack {
                    surrogate: Some(i),
                    ..pgd(name, p)
                });
            }
        }
    }
    for &eps in args.dos_eps.iter().filter(|_| has(Family::Dos)) {
        out.push(pgd(
            "dos-pgd-eot",
            Pgd {
                lambdas: vec![1.0],
                loss: Loss {
                    goal: Goal::Reject,
                    ..loss.clone()
                },
                ..base(Norm::Linf, eps)
            },
        ));
    }
    out
}

/// Where the attacks aim: under the MI threshold, or, for a card that fuses signals, under
/// each fused signal's own cut (`FusedGate::cuts`; with Bonferroni's rule the gate accepts
/// exactly the frames inside every cut), density above its cut.
#[derive(Debug, Clone, PartialEq)]
struct Aims {
    mi: f64,
    entropy: Option<f64>,
    /// The density's cut and its clean calibration values.
    density: Option<(f64, Vec<f64>)>,
}

fn aims(card: &ModelCard, threshold: f64) -> Result<Aims> {
    let Some(fused) = &card.fusion else {
        return Ok(Aims {
            mi: threshold,
            entropy: None,
            density: None,
        });
    };
    let gate = FusedGate::new(fused, None).context("the judged card's fused signals")?;
    let (mut mi, mut entropy, mut density) = (None, None, None);
    for (signal, cut) in gate.cuts() {
        // Every signal the gate can fuse has its hinge: an attack blind to one would
        // flatter the gate.
        match signal {
            Signal::Mi => mi = cut,
            Signal::Entropy => entropy = cut,
            Signal::Density => {
                let cut = cut.context(
                    "the card's fused density cannot reject a frame alone: nothing to aim above",
                )?;
                let clean = fused
                    .signals
                    .iter()
                    .find(|s| s.name == Signal::Density)
                    .map(|s| s.clean.clone())
                    .unwrap_or_default();
                density = Some((cut, clean));
            }
        }
    }
    let mi = mi.context(
        "the card's fused MI cannot reject a frame alone: the red team's attacks need an MI cut",
    )?;
    log::info!(
        "fused card ({:?}, level {:.4}): aiming under MI {mi:.5}{}{}",
        gate.rule(),
        gate.level(),
        entropy.map_or(String::new(), |c| format!(
            ", under predictive entropy {c:.5}"
        )),
        density.as_ref().map_or(String::new(), |(c, _)| format!(
            ", above log density {c:.3}"
        ))
    );
    Ok(Aims {
        mi,
        entropy,
        density,
    })
}

/// The attacker's copy of the judged model's density, checked against the runtime's on the
/// first frames: an attack that differentiates another density than the gate's would be
/// blind to it.
fn density_aim(
    stem: &Path,
    model: &Model,
    net: &dyn DropoutNet,
    pixels: &Tensor,
    (cut, clean): (f64, Vec<f64>),
    tau: f64,
) -> Result<DensityAim> {
    let onnx_path = mcgate::contract::card::ModelPaths::resolve(stem).onnx;
    let onnx =
        std::fs::read(&onnx_path).with_context(|| format!("reading {}", onnx_path.display()))?;
    let aim = DensityAim::from_onnx(&onnx, cut, &clean, tau, pixels.device())
        .with_context(|| format!("the density of {}", onnx_path.display()))?;
    let n = pixels.size()[0].min(8);
    let x = net.input_from_pixels(&pixels.narrow(0, 0, n));
    let ours = tch::no_grad(|| aim.log_density(net, &x)).context(
        "the attacked network has no density features (a single MNIST-style network has)",
    )?;
    let ours = Vec::<f64>::try_from(ours.to_kind(Kind::Double).to_device(Device::Cpu))?;
    let inputs =
        Vec::<f32>::try_from(x.to_kind(Kind::Float).to_device(Device::Cpu).flatten(0, -1))?;
    let mut plan = mcgate::run::plan::Plan::new(model, model.card.default_samples)?;
    let per_image = inputs.len() / n as usize;
    for (i, want) in ours.iter().enumerate() {
        plan.run(&inputs[i * per_image..(i + 1) * per_image], i as u64)?;
        let got = plan
            .log_density()
            .context("the judged model gave no density")? as f64;
        ensure!(
            (got - want).abs() <= 1e-3 * (1.0 + got.abs()),
            "the attacked network's density ({want:.4}) is not the judged model's ({got:.4}) \
             on image {i}: attack the network the judged model was made from"
        );
    }
    log::info!(
        "density ({:?} features): aiming above {:.3} (cut {:.3}, in units of {:.3}); the \
         attacker's copy matches the runtime's on {n} images",
        aim.features,
        aim.aim,
        aim.cut,
        aim.scale
    );
    Ok(aim)
}

/// The report, written to `--out` and returned.
pub fn run(args: RedTeamArgs) -> Result<SecurityReport> {
    let start = Instant::now();
    // Before the run writes anything (the bundle, the card): the tree the code came from.
    let commit = source_commit();
    ensure!(
        args.surrogate.is_empty() || args.photos.is_none(),
        "--surrogate is an MNIST network: there is none for --photos"
    );
    for (flag, range) in [
        ("--patch-scale", &args.patch_scale),
        ("--patch-brightness", &args.patch_brightness),
    ] {
        if let Some(r) = range {
            ensure!(
                r.iter().all(|v| v.is_finite() && *v > 0.0) && r[0] <= r[1],
                "{flag} wants LO,HI with 0 < LO <= HI, got {r:?}"
            );
        }
    }
    let subject = Subject::load(&args)?;
    let net = subject.net();
    let device = subject.device;
    let judged_stem = args.judge.clone().unwrap_or_else(|| subject.stem.clone());
    let model = Model::load_from(&judged_stem)
        .with_context(|| format!("loading {}", judged_stem.display()))?;
    ensure!(
        model.card.classes.len() == net.classes()
            && model.card.input.shape == net.input_spec().shape,
        "{} takes another input or gives other classes than the attacked network",
        judged_stem.display()
    );
    let threshold = model
        .card
        .mi_threshold()
        .context("the judged model's card has no MI threshold")?;
    let Aims {
        mi: mi_aim,
        entropy: entropy_cut,
        density,
    } = aims(&model.card, threshold)?;
    let density = density
        .map(|d| {
            density_aim(
                &judged_stem,
                &model,
                net,
                &subject.pixels,
                d,
                args.hinge_fraction,
            )
        })
        .transpose()?;
    let samples = model.card.default_samples;
    let out = args.out.clone().unwrap_or_else(|| {
        let name = judged_stem
            .file_name()
            .map_or("model".into(), |n| n.to_string_lossy().to_string());
        PathBuf::from("docs/results").join(format!("security-{name}.json"))
    });

    // Images both the deterministic network and the gate classify right.
    let (pixels, pool_labels) = (&subject.pixels, &subject.labels);
    let det = deterministic_probs(net, &net.input_from_pixels(pixels))?;
    let classes = net.classes();
    let mut gate = Judge::new(
        &model,
        samples,
        threshold,
        mcgate::run::rng::mix(args.seed, 7),
    )?;
    let gated = gate.judge(pixels)?;
    let right: Vec<i64> = (0..pool_labels.len())
        .filter(|&i| {
            let label = pool_labels[i] as usize;
            let row = &det[i * classes..(i + 1) * classes];
            mcgate::score::measures::argmax(row) == label && gated[i].class == Some(label)
        })
        .map(|i| i as i64)
        .collect();
    ensure!(!right.is_empty(), "no test image is classified right");
    let (keep, spare) = right.split_at(right.len().min(args.images));
    let subset = |idx: &[i64]| {
        let index = Tensor::from_slice(idx).to_device(device);
        let labels: Vec<i64> = idx.iter().map(|&i| pool_labels[i as usize]).collect();
        (pixels.index_select(0, &index), labels)
    };
    let (clean, labels) = subset(keep);
    let (patch_train, patch_labels) = match &subject.patch_photos {
        // Unlabelled: what the network calls each clean photo stands for its label.
        Some(photos) => {
            let det = deterministic_probs(net, &net.input_from_pixels(photos))?;
            let labels = det
                .chunks(classes)
                .map(|row| mcgate::score::measures::argmax(row) as i64)
                .collect();
            (photos.shallow_clone(), labels)
        }
        None => subset(spare),
    };
    log::info!(
        "{} of {} drawn test images classified right by the deterministic network and the \
         gate; attacking the first {}",
        right.len(),
        pool_labels.len(),
        labels.len()
    );

    if args.update {
        // Before hours of attacks: what is known now must match the report to be updated.
        let known = serde_json::json!({
            "model": model.card.name,
            "crafted_on": subject.crafted_on,
            "images": labels.len(),
            "seed": args.seed,
            "samples": samples,
            "threshold": threshold,
            "mi_aim": mi_aim,
            "mask_draws": args.mask_draws,
        });
        same_run(&read_earlier(&out)?, &known, &out)?;
    }
    let cfg = RedTeamConfig {
        attacks: attacks(
            &args,
            args.eot.unwrap_or(samples as i64),
            entropy_cut,
            density,
        ),
        samples,
        threshold,
        mi_aim,
        mask_draws: args.mask_draws,
        judge_seed: mcgate::run::rng::mix(args.seed, 1),
        check_seed: mcgate::run::rng::mix(args.seed, 2),
        bootstrap: args.bootstrap,
        commit: commit.clone(),
    };
    let targets = Targets {
        clean,
        labels,
        patch_train,
        patch_labels,
    };
    let loaded = args
        .surrogate
        .iter()
        .map(|spec| load_surrogate(spec, device))
        .collect::<Result<Vec<_>>>()?;
    let surrogates = loaded
        .iter()
        .map(|(name, model, member, _vs)| {
            // load_surrogate names a member exactly when the model is an ensemble.
            let net: &dyn DropoutNet = match (model, member) {
                (MnistModel::Ensemble(e), Some(k)) => &e.members()[*k],
                _ => model.as_dyn(),
            };
            Surrogate {
                name: name.clone(),
                net,
            }
        })
        .collect::<Vec<_>>();
    let (attacked, clean_fpr) = redteam::run(net, &surrogates, &model, &targets, &cfg)?;
    let labels = targets.labels;
    if let Some(dir) = &args.bundle {
        let added = add_to_bundle(net, &model, dir, &attacked, &labels, &args)?;
        log::info!("added {added} frames to the bundle in {}", dir.display());
    }
    let rows: Vec<Row> = attacked.into_iter().map(|a| a.row).collect();
    let mut report = SecurityReport {
        model: model.card.name.clone(),
        crafted_on: subject.crafted_on.clone(),
        threat_model: THREAT_MODEL,
        commit,
        images: labels.len(),
        seed: args.seed,
        samples,
        threshold,
        mi_aim,
        mask_draws: args.mask_draws,
        clean_fpr,
        rows: rows
            .iter()
            .map(serde_json::to_value)
            .collect::<serde_json::Result<_>>()?,
        worst: vec![],
        dos_smallest_eps: None,
        seconds: start.elapsed().as_secs_f64(),
    };
    if args.update {
        merge_into_earlier(&mut report, &out)?;
    }
    let scores = report
        .rows
        .iter()
        .map(|r| serde_json::from_value::<RowScore>(r.clone()))
        .collect::<serde_json::Result<Vec<_>>>()
        .context("a row of the report")?;
    report.worst = worst(&scores);
    report.dos_smallest_eps = scores
        .iter()
        .filter(|r| r.rejected.is_some_and(|s| s > 0.5))
        .map(|r| r.eps)
        .reduce(f64::min);
    create_parent(&out)?;
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    log::info!("wrote {}", out.display());
    if args.card {
        let path = write_security(&judged_stem, &report, &out)?;
        log::info!("wrote the security block into {}", path.display());
    }
    Ok(report)
}

/// The network attacked, and the images to draw targets from: 8-bit pixels in [0, 1]
/// `[N, C, H, W]` on the device, with their true labels.
struct Subject {
    network: Network,
    /// The exported model that is judged unless --judge says otherwise.
    stem: PathBuf,
    /// Where the gradients come from, for the report.
    crafted_on: String,
    pixels: Tensor,
    labels: Vec<i64>,
    /// `--patch-photos`: what the patches train on instead of spare test images.
    patch_photos: Option<Tensor>,
    device: Device,
}

#[allow(clippy::large_enum_variant)] // one per run, never moved in a loop
enum Network {
    Mnist(Trained),
    /// The variables stay alive as long as the network.
    Photos {
        net: EfficientNetLite0,
        _vs: nn::VarStore,
    },
}

impl Subject {
    /// The dataset's trained model and twice `--images` test images (at least 20 spare for
    /// a patch), or the Lite0 network and every photo of `--photos`.
    fn load(args: &RedTeamArgs) -> Result<Subject> {
        let Some(dir) = &args.photos else {
            let trained = args.source.load()?;
            let device = trained.device;
            let pool = trained
                .test
                .pick((args.images * 2).max(args.images + 20), args.seed);
            let (pixels, _) = pool.to_tensors(device);
            return Ok(Subject {
                network: Network::Mnist(trained),
                stem: args.source.stem(),
                crafted_on: args.source.stem().display().to_string(),
                pixels: quantise(&pixels.to_device(device)),
                labels: pool.labels.iter().map(|&l| l as i64).collect(),
                patch_photos: None,
                device,
            });
        };
        let (net, vs) = lite0::load_pretrained(&args.weights)?;
        let photos = Photos::load_dir(dir, &net.input_spec())?;
        let labels = photos
            .labels
            .iter()
            .zip(&photos.paths)
            .map(|(l, p)| {
                l.map(|l| l as i64).with_context(|| {
                    format!("{}: no class after the last `_` of its name", p.display())
                })
            })
            .collect::<Result<Vec<i64>>>()?;
        let patch_photos = match &args.patch_photos {
            Some(dir) => Some(Photos::load_dir(dir, &net.input_spec())?.pixels),
            None => None,
        };
        Ok(Subject {
            stem: PathBuf::from("models/lite0-imagenet"),
            crafted_on: args.weights.display().to_string(),
            pixels: photos.pixels.shallow_clone(),
            labels,
            patch_photos,
            device: Device::Cpu,
            network: Network::Photos { net, _vs: vs },
        })
    }

    fn net(&self) -> &dyn DropoutNet {
        match &self.network {
            Network::Mnist(t) => t.net.as_dyn(),
            Network::Photos { net, .. } => net,
        }
    }
}

/// The adversarial frames of the worst attack at each budget (as [`worst`] picks it) into
/// the eval bundle in `dir` (which must be for the judged model's ONNX), framed for the
/// judged model as the judge frames them.
fn add_to_bundle(
    net: &dyn DropoutNet,
    model: &Model,
    dir: &Path,
    attacked: &[redteam::Attacked],
    labels: &[i64],
    args: &RedTeamArgs,
) -> Result<usize> {
    let rows: Vec<RowScore> = attacked.iter().map(|a| RowScore::from(&a.row)).collect();
    let n = labels.len().min(args.bundle_frames) as i64;
    let mut extra = vec![];
    for w in worst(&rows) {
        let Some(a) = attacked
            .iter()
            .find(|a| a.row.attack == w.attack && a.row.norm == w.norm && a.row.eps == w.eps)
        else {
            continue;
        };
        let norm = serde_json::to_value(w.norm)?;
        let norm = norm.as_str().unwrap_or("budget");
        let eps_255 = (w.norm == Budget::Linf).then_some((w.eps * 2550.0).round() / 10.0);
        let budget = match eps_255 {
            Some(e) => format!("eps{e}"),
            None => format!("{norm}_{}", w.eps),
        };
        extra.push(bundle::ExtraGroup {
            group: Group {
                name: format!("{BUNDLE_PREFIX}{}_{budget}", w.attack),
                role: Role::Positive,
                paired_with: None,
                method: Some(format!("{} ({norm}, red team)", w.attack)),
                eps_255,
            },
            pixels: a.adversarial.narrow(0, 0, n).shallow_clone(),
            labels: labels[..n as usize].iter().map(|&l| l as usize).collect(),
        });
    }
    let resize = model.card.input.resize;
    let frame = |_: usize, pixels: &Tensor| -> Result<image::DynamicImage> {
        frame_for(resize, bundle::plain_frame(pixels)?)
    };
    bundle::append(
        net,
        dir,
        &model.card.onnx_sha256,
        BUNDLE_PREFIX,
        &extra,
        &frame,
    )
}

/// Bundle groups the red team adds start with this.
const BUNDLE_PREFIX: &str = "redteam_";

/// What [`worst`] reads of a row: of this run, or of an earlier report's JSON.
#[derive(Debug, Clone, Deserialize)]
pub struct RowScore {
    pub attack: String,
    pub norm: Budget,
    pub eps: f64,
    #[serde(default)]
    pub bypass: Option<f64>,
    #[serde(default)]
    pub rejected: Option<f64>,
    pub interval: [f64; 2],
}

impl From<&Row> for RowScore {
    fn from(r: &Row) -> RowScore {
        RowScore {
            attack: r.attack.clone(),
            norm: r.norm,
            eps: r.eps,
            bypass: r.bypass,
            rejected: r.rejected,
            interval: r.interval,
        }
    }
}

/// The highest bypass at each (norm, budget) of the evasion rows.
pub fn worst(rows: &[RowScore]) -> Vec<Worst> {
    let mut out: Vec<Worst> = vec![];
    for r in rows {
        let Some(bypass) = r.bypass else { continue };
        let candidate = Worst {
            norm: r.norm,
            eps: r.eps,
            attack: r.attack.clone(),
            bypass,
            interval: r.interval,
        };
        match out.iter_mut().find(|w| w.norm == r.norm && w.eps == r.eps) {
            Some(w) if w.bypass >= bypass => {}
            Some(w) => *w = candidate,
            None => out.push(candidate),
        }
    }
    out
}

/// `report` (this run's rows) merged into the earlier report at `path`: the earlier rows
/// kept unless this run has one of the same attack, surrogate, norm and budget; rows in
/// family order (white-box L∞, L2, patch, transfer, denial of service), each family in the
/// order it ran. Refused when the earlier report judged other frames or judged otherwise.
fn merge_into_earlier(report: &mut SecurityReport, path: &Path) -> Result<()> {
    let earlier = read_earlier(path)?;
    same_run(&earlier, &serde_json::to_value(&*report)?, path)?;
    let key = |r: &serde_json::Value| {
        (
            r["attack"].clone(),
            r["crafted_on"].clone(),
            r["norm"].clone(),
            r["eps"].clone(),
        )
    };
    let old_commit = earlier["commit"].clone();
    let mut rows: Vec<serde_json::Value> = earlier["rows"]
        .as_array()
        .with_context(|| format!("--update: {} has no rows", path.display()))?
        .iter()
        .filter(|old| report.rows.iter().all(|new| key(new) != key(old)))
        .cloned()
        .map(|mut old| {
            if old.get("commit").is_none() {
                old["commit"] = old_commit.clone();
            }
            old
        })
        .collect();
    rows.append(&mut report.rows);
    rows.sort_by_key(family_rank);
    report.rows = rows;
    report.seconds += earlier["seconds"].as_f64().unwrap_or(0.0);
    Ok(())
}

/// The report an `--update` adds to.
fn read_earlier(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--update: reading the earlier report {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("--update: {} is not JSON", path.display()))
}

/// The fields of `ours` that say which frames were attacked and how they are judged agree
/// with the earlier report's. Checked before the attacks on what is known then, and again
/// with the clean frames' rejection rate, which the same draw of images and masks reproduces
/// exactly (an earlier report without `seed` or `mi_aim`, fields added later, is taken on
/// it).
fn same_run(earlier: &serde_json::Value, ours: &serde_json::Value, path: &Path) -> Result<()> {
    for field in [
        "model",
        "crafted_on",
        "images",
        "seed",
        "samples",
        "threshold",
        "mi_aim",
        "mask_draws",
        "clean_fpr",
    ] {
        let (was, now) = (&earlier[field], &ours[field]);
        if now.is_null() || (matches!(field, "seed" | "mi_aim") && was.is_null()) {
            continue;
        }
        ensure!(
            was == now,
            "--update: {} has {field} {was}, this run {now}; rerun without --update",
            path.display()
        );
    }
    Ok(())
}

/// Where a row's family comes in a report.
fn family_rank(row: &serde_json::Value) -> u8 {
    let attack = row["attack"].as_str().unwrap_or("");
    match (attack, row["norm"].as_str()) {
        (a, _) if a.starts_with("dos") => 4,
        (a, _) if a.starts_with("transfer") => 3,
        (_, Some("patch")) => 2,
        (_, Some("l2")) => 1,
        _ => 0,
    }
}

/// A surrogate by `STEM` or `STEM@MEMBER`: its name in the report, the network, the member.
fn load_surrogate(
    spec: &str,
    device: Device,
) -> Result<(String, MnistModel, Option<usize>, nn::VarStore)> {
    let (stem, member) = match spec.rsplit_once('@') {
        Some((stem, k)) => {
            let k = k.parse::<usize>().with_context(|| {
                format!("--surrogate {spec}: the member after `@` is not a number")
            })?;
            (PathBuf::from(stem), Some(k))
        }
        None => (PathBuf::from(spec), None),
    };
    let card = ModelCard::read(&with_ext(&stem, "card.json"))
        .with_context(|| format!("--surrogate {spec}"))?;
    let (model, vs) = load_mnist(&stem, &card, device)?;
    let name = match (&model, member) {
        (MnistModel::Single(_), None) => stem.display().to_string(),
        (MnistModel::Ensemble(e), Some(k)) => {
            ensure!(
                k < e.members().len(),
                "--surrogate {spec}: {} has {} members",
                stem.display(),
                e.members().len()
            );
            format!("{} member {k}", stem.display())
        }
        (MnistModel::Single(_), Some(_)) => {
            anyhow::bail!("--surrogate {spec}: {} is not an ensemble", stem.display())
        }
        (MnistModel::Ensemble(_), None) => {
            anyhow::bail!(
                "--surrogate {spec}: {} is an ensemble: name a member, e.g. {}@1",
                stem.display(),
                stem.display()
            )
        }
    };
    Ok((name, model, member, vs))
}

/// The report's worst rows as the judged model's card `security` block.
fn write_security(stem: &Path, report: &SecurityReport, out: &Path) -> Result<PathBuf> {
    let mut card = ModelCard::read(&with_ext(stem, "card.json"))?;
    card.schema = SCHEMA.into();
    card.security = Some(Security {
        date: utc_date(std::time::SystemTime::now()),
        commit: row_commits(report),
        report: out.display().to_string(),
        images: report.images,
        mask_draws: report.mask_draws,
        clean_fpr: report.clean_fpr,
        worst: report
            .worst
            .iter()
            .map(|w| WorstBypass {
                norm: w.norm,
                eps: w.eps,
                attack: w.attack.clone(),
                bypass: w.bypass,
                interval: w.interval,
            })
            .collect(),
    });
    card.validate().context("the security block")?;
    write_card(stem, &card)
}

/// The commits that ran the report's rows, in the order they first appear, joined by ` + `
/// (one for a report made in one run).
fn row_commits(report: &SecurityReport) -> String {
    let mut commits: Vec<&str> = vec![];
    for row in &report.rows {
        let c = row["commit"].as_str().unwrap_or(&report.commit);
        if !commits.contains(&c) {
            commits.push(c);
        }
    }
    if commits.is_empty() {
        commits.push(&report.commit);
    }
    commits.join(" + ")
}

/// `YYYY-MM-DD` of a time, UTC (days to civil date: Hinnant's algorithm).
pub fn utc_date(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_surrogate_names_a_network_or_says_why_not() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let ensemble = root.join("models/mnist-ensemble").display().to_string();
        let single = root.join("models/mnist").display().to_string();
        let error = |spec: String| match load_surrogate(&spec, Device::Cpu) {
            Ok(_) => panic!("{spec} loaded"),
            Err(e) => format!("{e:#}"),
        };
        assert!(error(ensemble.clone()).contains("is an ensemble: name a member"));
        assert!(error(format!("{ensemble}@9")).contains("has 5 members"));
        assert!(error(format!("{ensemble}@one")).contains("is not a number"));
        assert!(error(format!("{single}@1")).contains("is not an ensemble"));
        let (name, _, member, _) = load_surrogate(&format!("{ensemble}@1"), Device::Cpu).unwrap();
        assert!(name.ends_with("mnist-ensemble member 1"), "{name}");
        assert_eq!(member, Some(1));
    }

    /// An MI-only card is aimed at under its threshold; a fused card under each signal's own
    /// cut (Bonferroni: exactly the gate's acceptance region); a card fusing a signal the
    /// attacks cannot differentiate is refused.
    #[test]
    fn the_attacks_aim_under_every_signal_the_card_decides_on() {
        use mcgate::contract::card::{Fused, FusedSignal, Fusion, SCHEMA_V3};
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut card = Model::load_from(&root.join("models/mnist")).unwrap().card;
        assert_eq!(
            aims(&card, 0.2).unwrap(),
            Aims {
                mi: 0.2,
                entropy: None,
                density: None
            }
        );
        let clean: Vec<f64> = (0..200).map(|i| i as f64 / 100.0).collect();
        let signal = |name| FusedSignal {
            name,
            clean: clean.clone(),
        };
        card.schema = SCHEMA_V3.into();
        card.fusion = Some(Fused {
            rule: Fusion::Bonferroni,
            target_fpr: 0.05,
            signals: vec![signal(Signal::Mi), signal(Signal::Entropy)],
            holdout: None,
        });
        let Aims { mi, entropy, .. } = aims(&card, 0.2).unwrap();
        let cuts = FusedGate::new(card.fusion.as_ref().unwrap(), None)
            .unwrap()
            .cuts();
        assert_eq!((Some(mi), entropy), (cuts[0].1, cuts[1].1));
        // Both signals have the same 200 values, so the level (10 of 200 frames rejected)
        // lets each reject alone a frame beyond its 11th-largest clean value.
        assert_eq!(mi, clean[189]);
        // Density, fused third, is aimed above its own cut (its low tail: beyond the 7th
        // smallest clean value now that three signals share the level), with its values.
        card.fusion
            .as_mut()
            .unwrap()
            .signals
            .push(signal(Signal::Density));
        let three = aims(&card, 0.2).unwrap();
        let (cut, values) = three.density.expect("a density aim");
        assert_eq!(values, clean);
        let mut sorted = clean.clone();
        sorted.sort_by(f64::total_cmp);
        let cuts = FusedGate::new(card.fusion.as_ref().unwrap(), None)
            .unwrap()
            .cuts();
        assert_eq!(Some(cut), cuts[2].1);
        assert!(cut < sorted[100] && three.mi > sorted[100]);
    }
}
