//! `mcgate calibrate`: set a model's threshold on clean frames.

use std::path::PathBuf;

use clap::Args;

use mcgate::calibrate;
use mcgate::model::Model;

use super::engine::EngineArgs;
use super::exit;
use super::frames::FrameArgs;
use super::{parse_signals, print, run_seed, Failure};
use mcgate::contract::card::Fusion;

#[derive(Args)]
pub(crate) struct CalibrateArgs {
    /// Model: `models/mnist`, its `.onnx` or `.card.json` path (its card is rewritten).
    model: PathBuf,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    frames: FrameArgs,
    /// Share of these clean frames the threshold may reject (the target false-positive
    /// rate); needs at least 5/FPR frames.
    #[arg(long, default_value_t = 0.05)]
    fpr: f64,
    /// Monte-Carlo samples T per frame [default: the card's default_samples].
    #[arg(short = 'T', long)]
    samples: Option<usize>,
    /// Run seed of the masks, recorded in the card [default: random].
    #[arg(long)]
    seed: Option<u64>,
    /// Frames scored at once, one thread each; the result does not change.
    #[arg(short = 'j', long, default_value_t = 1, value_name = "N")]
    jobs: usize,
    /// Also set tamper checks on these frames — covered, blinded, defocused, snow, glare, frozen —
    /// each cut beyond every one of them (docs/model-format.md, "tamper"): the gate then rejects a
    /// frame that fails one before the model runs, the check's name as the reason. The card
    /// becomes schema 3.
    #[arg(long)]
    tamper: bool,
    /// Fuse these signals into one decision at --fpr, comma separated: mi (mutual
    /// information), entropy (predictive entropy), density (the model's feature density, for
    /// a model with a density output: `mcgate-training density`). Each signal's value becomes its tail
    /// probability among these frames, the --fusion of them is cut where it rejects --fpr of
    /// them, and the gate decides on that instead of MI alone (`gate --signals mi` still uses
    /// the MI threshold set here). The card becomes schema 3 and holds every frame's values.
    /// [default: none: the MI threshold alone decides]
    #[arg(long, value_delimiter = ',', value_name = "SIGNAL,...")]
    signals: Vec<String>,
    /// How --signals' tail probabilities combine: bonferroni (k × the smallest: one signal
    /// far out decides) or fisher (−2 Σ ln p against χ²: signals each a little out add up).
    /// On MNIST and Fashion-MNIST at 5 % Bonferroni rejected 2–25 points more than Fisher
    /// wherever the intervals separate, never fewer (docs/RESULTS.md, "Fused signals").
    #[arg(long, value_enum, default_value_t = FusionArg::Bonferroni, requires = "signals")]
    fusion: FusionArg,
    /// Hold out this share of the frames, the last ones in order, and measure the
    /// decision's rate on them (the frames after those it was set on): the card records it.
    /// The rate on the calibration frames themselves is the target by construction.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    holdout: f64,
}

/// `--fusion`'s choices.
#[derive(Clone, Copy, clap::ValueEnum)]
enum FusionArg {
    Bonferroni,
    Fisher,
}

pub(crate) fn run(args: CalibrateArgs) -> Result<u8, Failure> {
    let source = args.frames.source(false)?;
    if args.model.as_os_str() == mcgate::model::BUILTIN {
        return Err(Failure::Usage(
            "the built-in model's card cannot be rewritten: calibrate a model on disk".into(),
        ));
    }
    let model = Model::load_from_with(&args.model, &args.engine.engine()?)?;
    // A card that cannot be rewritten fails now, not after every frame was scored.
    calibrate::card_to_write(&args.model)?;
    let opts = calibrate::Options {
        fpr: args.fpr,
        samples: args.samples.unwrap_or(model.card.default_samples),
        seed: run_seed(args.seed)?,
        jobs: args.jobs,
        tamper: args.tamper,
        signals: parse_signals(&args.signals, false)?.0,
        rule: match args.fusion {
            FusionArg::Fisher => Fusion::Fisher,
            FusionArg::Bonferroni => Fusion::Bonferroni,
        },
        holdout: args.holdout,
    };
    let result = calibrate::calibrate(&model, source.frames(&model.card)?, &opts)?;
    let date = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string());
    if let Some(warning) = result
        .unlike
        .warning(result.mutual_information.len(), &model.card.input)
    {
        log::warn!("{warning}");
    }
    if let Some(warning) = result.high_threshold_warning(model.card.classes.len()) {
        log::warn!("{warning}");
    }
    if let (Some(old), None) = (&model.card.fusion, &result.fusion) {
        log::warn!(
            "the card's fused signals ({}) were set with the old calibration and are dropped: \
             the MI threshold alone decides; pass --signals {0} to fuse them again",
            mcgate::score::fusion::names(old.signals.iter().map(|s| s.name))
        );
    }
    if let Some(sec) = &model.card.security {
        log::warn!(
            "the card's security block (red team {}, {}) measured the old decision and is \
             dropped: run the red team again on the new card (`mcgate-training redteam --card`)",
            sec.date,
            sec.commit
        );
    }
    let card = calibrate::calibrated_card(&model.card, &result, &opts, date);
    let path = calibrate::write_card(&args.model, &card)?;
    let n = result.mutual_information.len();
    let (lo, hi) = result.clean_fpr_interval;
    let q = |q| result.mi_quantile(q);
    let rate = |h: &mcgate::contract::card::Holdout| {
        let [r, lo, hi] = h.clean_fpr;
        format!(
            "{:.1} % (95 % interval {:.1}–{:.1} %) of {} held-out frames",
            100.0 * r,
            100.0 * lo,
            100.0 * hi,
            h.frames
        )
    };
    let mut more = String::new();
    if let Some(h) = &result.holdout {
        more += &format!("MI threshold on the held-out frames: {}\n", rate(h));
    }
    if let Some(f) = &result.fusion {
        let gate = mcgate::score::fusion::FusedGate::new(f, None)
            .map_err(|e| Failure::Usage(e.to_string()))?;
        more += &format!(
            "fused {} ({:?}): level {:.5}, {:.1} % of the calibration frames under it\n",
            mcgate::score::fusion::names(gate.signals()),
            gate.rule(),
            gate.level(),
            100.0 * gate.calibration_fpr()
        );
        if let Some(h) = &f.holdout {
            more += &format!("fused decision on the held-out frames: {}\n", rate(h));
        }
    }
    print(&format!(
        "{n} clean frames, T={}, seed {}: MI threshold {:.5} nats (the {}th percentile)\n\
         clean frames above it: {:.1} % (95 % interval {:.1}–{:.1} %)\n\
         MI percentiles: p50 {:.5}, p90 {:.5}, p95 {:.5}, p99 {:.5}, max {:.5}\n\
         {more}wrote {}\n",
        opts.samples,
        opts.seed,
        result.threshold,
        100.0 * (1.0 - opts.fpr),
        100.0 * result.clean_fpr,
        100.0 * lo,
        100.0 * hi,
        q(0.5),
        q(0.9),
        q(0.95),
        q(0.99),
        q(1.0),
        path.display()
    ))?;
    Ok(exit::OK)
}
