//! `quantize`: the int8 variant of a trained model with its card, its MI threshold
//! re-calibrated and its accuracy measured through the runtime beside the float model's.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use mcgate::contract::card::{Metrics, Threshold};
use mcgate::model::Model;
use mcgate::score::roc::{rate_above, threshold_at_fpr};

use super::{MnistModel, Trained, TrainedModel};
use crate::data;
use crate::eval::tract_scores::tract_scores_dataset;
use crate::export::{self, with_ext};
use crate::nets::Int8Export;

#[derive(Debug, Args)]
pub struct QuantizeArgs {
    #[command(flatten)]
    pub source: TrainedModel,
    /// Output stem [default: models/<dataset>.int8].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Clean training images (the first N) that set the activation scales.
    #[arg(long, default_value_t = 1000)]
    pub calibration: usize,
    /// Held-out training images (the last N, as `train`) that set the MI threshold.
    #[arg(long, default_value_t = 5000)]
    pub validation: usize,
    #[arg(long, default_value_t = 20)]
    pub samples: usize,
    #[arg(long, default_value_t = 0.05)]
    pub target_fpr: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Writes `<out>.onnx` and `<out>.card.json` and prints the int8 model's size, accuracy and
/// threshold beside the float model's.
pub fn run(args: QuantizeArgs) -> Result<()> {
    let QuantizeArgs {
        source,
        out,
        calibration,
        validation,
        samples,
        target_fpr,
        seed,
    } = args;
    let (dataset, float_stem, dir) = (source.dataset, source.stem(), source.data_dir());
    let out = out.unwrap_or_else(|| with_ext(&float_stem, "int8"));
    let Trained {
        card: float_card,
        net,
        test,
        device,
        ..
    } = source.load()?;
    let MnistModel::Single(net) = net else {
        bail!("an ensemble is quantised member by member: quantize each member's model")
    };
    let full = data::load_split(&dir, "train", dataset.fetch_hint())?;
    ensure!(
        calibration + validation <= full.len(),
        "--calibration {calibration} + --validation {validation} exceed the {} training images",
        full.len()
    );
    let val = full.slice(full.len() - validation..full.len());
    let calib = full.slice(0..calibration);
    tch::manual_seed(seed as i64);
    let scales = net.calibrate(&calib.to_tensors(device).0, samples as i64);
    log::info!("activation scales from {calibration} training images: {scales:?}");
    let onnx = export::int8_onnx_bytes(&net, &scales, &export::int8_doc(&net))?;
    let onnx_path = with_ext(&out, "onnx");
    let float_threshold = float_card
        .threshold
        .clone()
        .context("the float model's card has no MI threshold")?;
    let float_metrics = float_card
        .metrics
        .clone()
        .context("the float model's card has no metrics")?;
    let mut card = export::card_for(
        &net,
        &export::stem_name(&out),
        float_card.classes.clone(),
        &onnx,
        samples,
        Some(float_threshold.clone()),
        Some(float_metrics),
        float_card.provenance.clone(),
    );
    let int8 = Model::from_parts(card.clone(), &onnx, &onnx_path)?;
    let float = Model::load_from(&float_stem)?;
    let start = Instant::now();
    let val_mi = tract_scores_dataset(&int8, &val, samples, seed)?.mi;
    let threshold =
        threshold_at_fpr(&val_mi, target_fpr).context("cannot calibrate: no validation scores")?;
    let q = tract_scores_dataset(&int8, &test, samples, seed)?;
    let f = tract_scores_dataset(&float, &test, samples, seed)?;
    log::info!("scored in {:.0} s", start.elapsed().as_secs_f64());
    let (q_det, q_mc) = q.accuracy(&test.labels);
    let (f_det, f_mc) = f.accuracy(&test.labels);
    card.threshold = Some(Threshold {
        mutual_information: threshold,
        method: format!(
            "{}th percentile of MI (T={samples}) of this int8 model on {} held-out clean training images",
            100.0 * (1.0 - target_fpr),
            val.len()
        ),
        target_fpr: Some(target_fpr),
        provisional: true,
        calibration: None,
    });
    card.metrics = Some(Metrics {
        test_accuracy_deterministic: q_det,
        test_accuracy_mc: q_mc,
        mc_samples: samples,
        test_images: test.len(),
    });
    export::create_parent(&out)?;
    export::write_onnx(&out, &onnx)?;
    export::write_card(&out, &card)?;
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
        float_threshold.mutual_information,
        100.0 * rate_above(&q.mi, threshold),
    );
    Ok(())
}
