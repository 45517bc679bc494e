//! `density`: a trained model with a feature-density output beside its probabilities — the
//! `density` signal the fused gate can calibrate (`mcgate calibrate --signals mi,density`).

use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use mcgate::contract::card::SCHEMA_V3;
use mcgate::model::Model;
use mcgate::run::plan::Plan;
use tch::Kind;

use super::{MnistModel, Trained, TrainedModel};
use crate::data;
use crate::density::DensityFit;
use crate::export::{self, with_ext};
use crate::nets::mnist::{DensityFeatures, MnistCnn, DENSITY_OUTPUT};

#[derive(Debug, Args)]
pub struct DensityArgs {
    #[command(flatten)]
    pub source: TrainedModel,
    /// Output stem [default: models/<dataset>-density].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Held-out training images (the last N, as `train`): not fitted on.
    #[arg(long, default_value_t = 5000)]
    pub validation: usize,
    /// Test images whose density the exported graph (through the runtime) must give as the
    /// f64 fit does.
    #[arg(long, default_value_t = 200)]
    pub check: usize,
    /// The features the density is fitted on: the first dense layer's outputs before its
    /// ReLU or after it.
    #[arg(long, value_enum, default_value_t = DensityFeatures::PreRelu)]
    pub features: DensityFeatures,
}

/// Fits the density on the training split's features, writes `<out>.onnx` (the model's graph
/// and the density branch) and `<out>.card.json`, and checks the runtime's density against
/// the f64 fit on test images.
pub fn run(args: DensityArgs) -> Result<()> {
    let DensityArgs {
        source,
        out,
        validation,
        check,
        features: which,
    } = args;
    let (dataset, stem, dir) = (source.dataset, source.stem(), source.data_dir());
    let out =
        out.unwrap_or_else(|| stem.with_file_name(format!("{}-density", export::stem_name(&stem))));
    let Trained {
        card,
        net,
        test,
        device,
        ..
    } = source.load()?;
    let MnistModel::Single(net) = net else {
        bail!(
            "the density is fitted on one network's features: give a single model, not an ensemble"
        )
    };
    let full = data::load_split(&dir, "train", dataset.fetch_hint())?;
    ensure!(
        validation < full.len(),
        "--validation {validation} leaves no training images"
    );
    let train = full.slice(0..full.len() - validation);
    let features = |set: &data::Dataset| -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(set.len() * 128);
        for start in (0..set.len()).step_by(1000) {
            let part = set.slice(start..(start + 1000).min(set.len()));
            let (x, _) = part.to_tensors(device);
            let f = tch::no_grad(|| net.features(&x, which))
                .to_kind(Kind::Double)
                .flatten(0, -1);
            out.extend(Vec::<f64>::try_from(f.to_device(tch::Device::Cpu)).context("features")?);
        }
        Ok(out)
    };
    let labels: Vec<i64> = train.labels.iter().map(|&l| l as i64).collect();
    let fit = DensityFit::fit(&features(&train)?, 128, &labels, card.classes.len())?;
    let mut graph = crate::nets::DropoutNet::onnx_graph(
        &net,
        &format!(
        "{} With a feature density output `{DENSITY_OUTPUT}`: class-conditional Gaussians, one \
         shared covariance (+ ridge {:.3e}) on the first dense layer's outputs {}, fitted on \
         {} training images.",
        export::float_doc(&net),
        fit.ridge,
        match which {
            DensityFeatures::PreRelu => "before their ReLU",
            DensityFeatures::Relu => "after their ReLU",
        },
        fit.fitted
    ),
    )?;
    MnistCnn::add_density(&mut graph, &fit, which)?;
    let onnx = graph.to_bytes(export::PRODUCER, env!("CARGO_PKG_VERSION"));
    let mut new_card = card.clone();
    new_card.schema = SCHEMA_V3.into();
    new_card.name = export::stem_name(&out);
    new_card.onnx_sha256 = mcgate::contract::card::sha256_hex(&onnx);
    new_card.output.log_density = Some(DENSITY_OUTPUT.into());
    // Measured on another file: the red team, the fusion and the calibration frames' values
    // belong to the model they were measured on.
    new_card.security = None;
    new_card.fusion = None;
    let onnx_path = with_ext(&out, "onnx");
    let model = Model::from_parts(new_card.clone(), &onnx, &onnx_path)?;
    // The independent check: the runtime's f32 graph against the f64 fit, frame by frame.
    let probe = test.slice(0..check.min(test.len()));
    let reference = features(&probe)?;
    let mut plan = Plan::new(&model, new_card.default_samples)?;
    let inputs = probe.unit_floats();
    let mut worst = 0.0f64;
    for (i, f) in reference.chunks(128).enumerate() {
        plan.run(&inputs[i * 784..(i + 1) * 784], i as u64)?;
        let got = plan
            .log_density()
            .context("the exported graph gave no density")? as f64;
        let want = fit.log_density(f);
        worst = worst.max((got - want).abs() / (1.0 + want.abs()));
    }
    ensure!(
        worst < 1e-3,
        "the exported density differs from the f64 fit by {worst:.2e} (relative) on a test image"
    );
    export::create_parent(&out)?;
    export::write_onnx(&out, &onnx)?;
    export::write_card(&out, &new_card)?;
    println!(
        "{}: density fitted on {} training images (ridge {:.3e}); the runtime's density matches \
         the f64 fit on {} test images within {worst:.1e} (relative); sparse path kept: {}",
        onnx_path.display(),
        fit.fitted,
        fit.ridge,
        probe.len(),
        plan.is_split()
    );
    Ok(())
}
