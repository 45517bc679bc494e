//! `mcgate convert`: a user's own ONNX classifier → a gated MC-dropout model (the graph
//! rewritten by [`model::rewrite`](crate::model::rewrite), its card, a check that with every
//! mask 1 it computes what the original computes, and both files written only then).

use std::path::{Path, PathBuf};

use crate::engine::tract::analysis;

use crate::contract::card::{
    sha256_hex, ChannelOrder, Conversion, DropoutSite, InputSpec, ModelCard, OutputSpec,
    Provenance, Resize, SCHEMA,
};
use crate::contract::pb;
use crate::error::Error;
use crate::model::rewrite::{self, ConvertError, Converted};
use crate::model::Model;
use crate::output::frames::write_atomically;
use crate::run::plan::Plan;
use crate::run::rng::WyRand;
use crate::text::one_line;

/// Largest |converted − original| accepted with every mask 1 (probabilities).
pub const TOLERANCE: f32 = 1e-5;

/// Random inputs the check runs.
pub const CHECK_INPUTS: usize = 3;

/// What the card says beyond what the graph says.
#[derive(Debug, Clone)]
pub struct CardOptions {
    /// One label per class; `None`: the class indices.
    pub labels: Option<Vec<String>>,
    /// Model value = (pixel · scale − mean[c]) / std[c].
    pub scale: f32,
    /// Per-channel mean (one value: every channel).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation (one value: every channel).
    pub std: Vec<f32>,
    /// Channel order of a colour model.
    pub channel_order: ChannelOrder,
    /// How frames become H×W.
    pub resize: Resize,
    /// Default Monte-Carlo samples T.
    pub default_samples: usize,
    /// The command line, recorded in the card.
    pub command: String,
}

/// A conversion, checked, ready to write.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The rewritten graph and its facts.
    pub converted: Converted,
    /// Its card (no threshold yet: `mcgate calibrate` sets one).
    pub card: ModelCard,
    /// Largest |converted − original| over the check's inputs, with every mask 1.
    pub max_difference: f32,
}

/// Converts `onnx` (the file `path`), builds the card, and checks the result: the runtime's
/// own load check against the card, and every-mask-1 equivalence with the original.
pub fn convert(
    path: &Path,
    onnx: &[u8],
    options: &rewrite::Options,
    card_options: &CardOptions,
) -> Result<Checked, Error> {
    let fail = |problem| Error::Convert {
        path: path.to_owned(),
        problem,
    };
    let converted = rewrite::convert(onnx, options).map_err(fail)?;
    let card = card_for(path, onnx, &converted, card_options).map_err(fail)?;
    let model = Model::from_parts(card.clone(), &converted.onnx, path)?;
    let max_difference =
        check_against_original(onnx, options.output.as_deref(), &converted, &model)
            .map_err(fail)?;
    Ok(Checked {
        converted,
        card,
        max_difference,
    })
}

fn per_channel(values: &[f32], channels: usize, what: &str) -> Result<Vec<f32>, ConvertError> {
    match values.len() {
        1 => Ok(vec![values[0]; channels]),
        n if n == channels => Ok(values.to_vec()),
        n => Err(ConvertError::Card(format!(
            "--{what} has {n} values, the model has {channels} channels"
        ))),
    }
}

fn card_for(
    path: &Path,
    onnx: &[u8],
    c: &Converted,
    o: &CardOptions,
) -> Result<ModelCard, ConvertError> {
    let channels = c.input.1[1];
    let classes = match &o.labels {
        Some(labels) if labels.len() != c.classes => {
            return Err(ConvertError::Card(format!(
                "--labels has {} labels, the model has {} classes",
                labels.len(),
                c.classes
            )))
        }
        Some(labels) => labels.clone(),
        None => (0..c.classes).map(|i| i.to_string()).collect(),
    };
    let card = ModelCard {
        schema: SCHEMA.into(),
        name: path
            .file_stem()
            .map_or("model".into(), |s| s.to_string_lossy().to_string()),
        classes,
        input: InputSpec {
            name: c.input.0.clone(),
            shape: c.input.1,
            layout: "NCHW".into(),
            scale: o.scale,
            mean: per_channel(&o.mean, channels, "mean")?,
            std: per_channel(&o.std, channels, "std")?,
            channel_order: o.channel_order,
            resize: o.resize,
        },
        dropout_sites: c.sites.clone(),
        output: OutputSpec {
            name: c.output.clone(),
            log_density: None,
        },
        default_samples: o.default_samples,
        threshold: None,
        metrics: None,
        onnx_sha256: sha256_hex(&c.onnx),
        provenance: Provenance::Converted(Conversion {
            converted_from: path
                .file_name()
                .map_or(path.display().to_string(), |n| n.to_string_lossy().into()),
            source_sha256: sha256_hex(onnx),
            command: o.command.clone(),
        }),
        ensemble: None,
        security: None,
        tamper: None,
        fusion: None,
    };
    card.validate()
        .map_err(|e| ConvertError::Card(e.to_string()))?;
    Ok(card)
}

/// Runs the original (tract, batch 1, its `output` or its only one, softmax applied if the
/// converter appended one) and the converted model with every mask 1 on the same random
/// inputs, and returns the largest difference. Also checks that samples stay apart: at T = 2,
/// sample 0 with masks of ones is the same whatever sample 1's masks are.
fn check_against_original(
    onnx: &[u8],
    output: Option<&str>,
    c: &Converted,
    model: &Model,
) -> Result<f32, ConvertError> {
    let verify =
        |what: &str, e: anyhow::Error| ConvertError::Verify(format!("{what}: {}", one_line(&e)));
    let shape = c.input.1;
    let onnx = &inference_mode(onnx)?;
    let original = analysis::Reference::new(onnx, output, &shape)
        .map_err(|e| verify("the original does not run in tract", e))?;
    let converted = |samples| {
        Plan::new(model, samples)
            .map_err(|e| ConvertError::Verify(format!("the converted model: {e}")))
    };
    let (mut one, mut two) = (converted(1)?, converted(2)?);
    let ones: Vec<Vec<f32>> = c
        .sites
        .iter()
        .map(|s: &DropoutSite| vec![1.0; s.sample_len()])
        .collect();
    let mut rng = WyRand::new(0x5eed);
    let mut uniform = move || (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
    let mut worst = 0f32;
    let mut all_probabilities = true;
    for _ in 0..CHECK_INPUTS {
        // Inputs in the range a normalised image takes.
        let x: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| uniform() * 4.0 - 2.0)
            .collect();
        let mut want = original
            .run(&x)
            .map_err(|e| verify("the original failed", e))?;
        let sum: f32 = want.iter().sum();
        all_probabilities &= want.iter().all(|&v| v >= 0.0) && (sum - 1.0).abs() < 1e-4;
        if c.softmax_appended {
            softmax(&mut want);
        }
        let got = run(&mut one, &x, &ones)?;
        if got.len() != want.len() {
            return Err(ConvertError::Verify(format!(
                "the converted model gives {} values, the original {}",
                got.len(),
                want.len()
            )));
        }
        for (g, w) in got.iter().zip(&want) {
            let d = (g - w).abs();
            if d.is_nan() || d > TOLERANCE {
                return Err(ConvertError::Verify(format!(
                    "with every mask 1 the converted model differs from the original by {d:e} \
                     (more than {TOLERANCE:e})"
                )));
            }
            worst = worst.max(d);
        }
        // Sample 0 (masks of ones) beside a sample 1 with random masks: if sample 0 moved,
        // the samples are mixed somewhere in the head.
        let mixed: Vec<Vec<f32>> = ones
            .iter()
            .map(|one| {
                let mut m = one.clone();
                m.extend(one.iter().map(|_| 2.0 * uniform()));
                m
            })
            .collect();
        let pair = run(&mut two, &x, &mixed)?;
        if pair[..got.len()] != got[..] {
            return Err(ConvertError::Verify(
                "sample 0 changed with sample 1's masks: the samples mix in the head".into(),
            ));
        }
    }
    if c.softmax_appended && all_probabilities {
        return Err(ConvertError::Output {
            name: output.unwrap_or("the output").to_string(),
            why: "already gives probabilities (each row sums to 1) through nodes convert does \
                  not read as a Softmax over the classes; appending one would flatten them"
                .into(),
        });
    }
    Ok(worst)
}

/// The converted model's probabilities for `x` with `masks` (one per site).
fn run(plan: &mut Plan, x: &[f32], masks: &[Vec<f32>]) -> Result<Vec<f32>, ConvertError> {
    let masks: Vec<&[f32]> = masks.iter().map(Vec::as_slice).collect();
    let probs = plan
        .run_with_masks(x, &masks)
        .map_err(|e| ConvertError::Verify(format!("the converted model failed: {e}")))?;
    Ok(probs.to_vec())
}

/// The original with every `Dropout` in inference mode (its ratio and `training_mode`
/// inputs and its mask output dropped): what the converted graph computes with every mask 1,
/// and a graph tract runs (it refuses Dropout in training mode).
fn inference_mode(onnx: &[u8]) -> Result<Vec<u8>, ConvertError> {
    use prost::Message;
    let mut model =
        pb::ModelProto::decode(onnx).map_err(|e| ConvertError::Decode(e.to_string()))?;
    if let Some(graph) = model.graph.as_mut() {
        for node in graph.node.iter_mut().filter(|n| n.op_type == "Dropout") {
            node.input.truncate(1);
            node.output.truncate(1);
            node.attribute.retain(|a| a.name != "ratio");
        }
    }
    Ok(model.encode_to_vec())
}

fn softmax(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

/// Writes `<stem>.onnx` and `<stem>.card.json`, each under a temporary name then renamed, the
/// card last: a failure leaves no half-written file, and no card without its graph.
pub fn write(stem: &Path, checked: &Checked) -> Result<(PathBuf, PathBuf), Error> {
    let paths = crate::contract::card::ModelPaths::resolve(stem);
    if let Some(dir) = paths.onnx.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::Output {
            what: dir.display().to_string(),
            cause: e.to_string(),
        })?;
    }
    write_atomically(&paths.onnx, &checked.converted.onnx)?;
    write_atomically(&paths.card, checked.card.to_json().as_bytes())?;
    Ok((paths.onnx, paths.card))
}
