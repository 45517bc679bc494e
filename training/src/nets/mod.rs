//! The dropout networks, behind one trait: what training, the attacks, the evaluation and the
//! export need to know of a network, and nothing of its architecture.
//!
//! A [`DropoutNet`]'s forward pass is split at its first dropout site: the *trunk* runs once
//! per image, the *head* once per Monte-Carlo sample with explicit masks, one per site. Its
//! ONNX graph has the same split with the masks as graph inputs (docs/model-format.md), so
//! tch and tract compute the same function for the same masks.
//!
//! `mnist` is the paper's MNIST CNN (also trained on Fashion-MNIST); `lite0` the photo
//! network; `ensemble` runs several trained networks side by side as one.

pub mod ensemble;
pub mod lite0;
pub mod mnist;

use anyhow::{Context, Result};
use mcgate::contract::card::{DropoutSite, InputSpec};
use mcgate::contract::onnx::{f32_tensor, Graph};
use mcgate::contract::pb;
use mcgate::score::measures::Measures;
use tch::{Device, Kind, Tensor};

/// The contract's image input.
pub const IMAGE_INPUT: &str = "x";
/// The contract's output: softmax probabilities `[T, classes]`.
pub const OUTPUT: &str = "probs";

/// The graph input that carries dropout site `site`'s masks.
pub fn mask_input(site: usize) -> String {
    format!("mask_{site}")
}

/// One dropout site as tch uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// Drop probability.
    pub p: f64,
    /// Shape of one sample's mask for one image (without the leading T and N).
    pub shape: Vec<i64>,
}

/// A network with dropout sites whose masks can be given explicitly.
///
/// Images are tch tensors `[N, ..input shape without the 1]` with the values the exported
/// graph's input takes (`input_spec`'s normalisation of 0..=255 pixels); attacks work on
/// pixels in [0, 1] and map them with `input_from_pixels`.
pub trait DropoutNet {
    /// What it is, in a few words, for the ONNX file's doc string.
    fn description(&self) -> String;

    /// The image input: name, `[1, C, H, W]`, normalisation (the card's `input`).
    fn input_spec(&self) -> InputSpec;

    /// The dropout sites, in graph order.
    fn sites(&self) -> Vec<Site>;

    /// Output classes.
    fn classes(&self) -> usize;

    /// Networks whose samples the MC output pools: T samples give `member_count() · T` rows.
    fn member_count(&self) -> usize {
        1
    }

    /// Everything before the first dropout site, once per image: `[N, ..]` → features.
    fn trunk(&self, x: &Tensor) -> Tensor;

    /// Logits of the rest with explicit masks, one per site in `sites` order: `features`
    /// `[.., F]` broadcasts against each mask `[T, .., site shape]`.
    fn head(&self, features: &Tensor, masks: &[Tensor]) -> Tensor;

    /// Logits with ordinary dropout (`train`: stochastic; otherwise the identity).
    fn logits(&self, x: &Tensor, train: bool) -> Tensor;

    /// The float ONNX graph: the contract's interface (`Graph::contract` with this net's
    /// input, sites and classes), its nodes and its weights.
    fn onnx_graph(&self, doc: &str) -> Result<Graph>;

    /// The features a feature density reads (`mcgate-training density`), dropout off:
    /// `None` for a network no density is fitted on.
    fn density_features(&self, _x: &Tensor, _which: mnist::DensityFeatures) -> Option<Tensor> {
        None
    }

    /// The sites as the card lists them, with their mask inputs.
    fn dropout_sites(&self) -> Vec<DropoutSite> {
        self.sites()
            .iter()
            .enumerate()
            .map(|(i, s)| DropoutSite {
                input: mask_input(i),
                p: s.p as f32,
                shape: s.shape.iter().map(|&d| d as usize).collect(),
            })
            .collect()
    }

    /// One fresh mask per site, `[..leading, ..site shape]`, in site order.
    fn sample_masks(&self, leading: &[i64], device: Device) -> Vec<Tensor> {
        self.sites()
            .iter()
            .map(|s| sample_mask(&[leading, &s.shape].concat(), s.p, device))
            .collect()
    }

    /// The network's input for pixels in [0, 1] `[N, C, H, W]` (what the attacks perturb):
    /// the card's normalisation of 0–255 values, `(255·p·scale − mean_c) / std_c`. The
    /// identity, without arithmetic, where that normalisation is `p` itself (the MNIST nets).
    fn input_from_pixels(&self, pixels: &Tensor) -> Tensor {
        let spec = self.input_spec();
        let identity = spec.scale == 1.0 / 255.0
            && spec.mean.iter().all(|&m| m == 0.0)
            && spec.std.iter().all(|&s| s == 1.0);
        if identity {
            return pixels.shallow_clone();
        }
        let per_channel = |v: &[f32]| {
            Tensor::from_slice(v)
                .to_device(pixels.device())
                .view([1, -1, 1, 1])
        };
        (pixels * (255.0 * spec.scale as f64) - per_channel(&spec.mean)) / per_channel(&spec.std)
    }

    /// MC-dropout probabilities `[M·T, N, C]` for a batch `[N, ..]` (M = `member_count()`), each
    /// image and sample with its own masks.
    fn mc_probs(&self, x: &Tensor, samples: i64) -> Tensor {
        self.mc_probs_from_features(&self.trunk(x), samples)
    }

    /// MC-dropout probabilities `[M·T, N, C]` from trunk features `[N, ..]`.
    fn mc_probs_from_features(&self, features: &Tensor, samples: i64) -> Tensor {
        let n = features.size()[0];
        let masks = self.sample_masks(&[samples, n], features.device());
        self.head(features, &masks).softmax(-1, Kind::Float)
    }
}

/// A network that also exports an int8 (QOperator) variant: how it is quantised depends on
/// its layers, so the network measures its own activation scales.
pub trait Int8Export: DropoutNet {
    /// Activation scales measured on clean images.
    type Scales: std::fmt::Debug;

    /// Activation scales from clean images `x`, with `samples` masks per image where a site
    /// feeds a quantised layer.
    fn calibrate(&self, x: &Tensor, samples: i64) -> Self::Scales;

    /// The int8 ONNX graph at those scales, with the contract's interface.
    fn int8_graph(&self, scales: &Self::Scales, doc: &str) -> Result<Graph>;
}

/// Bernoulli(1−p)/(1−p) mask values (inverted dropout, as in the runtime).
pub fn sample_mask(shape: &[i64], p: f64, device: Device) -> Tensor {
    Tensor::rand(shape, (Kind::Float, device))
        .ge(p)
        .to_kind(Kind::Float)
        / (1.0 - p)
}

/// Images per batch when scoring: bounds the memory of the masks (T × batch × site size).
const SCORING_BATCH: i64 = 200;

/// Probabilities with dropout off, `[N, C]` row-major on the CPU.
pub fn deterministic_probs(net: &dyn DropoutNet, x: &Tensor) -> Result<Vec<f32>> {
    let _guard = tch::no_grad_guard();
    let mut out = vec![];
    for bx in x.split(SCORING_BATCH, 0) {
        let probs = net
            .logits(&bx, false)
            .softmax(-1, Kind::Float)
            .to_device(Device::Cpu);
        out.extend(Vec::<f32>::try_from(probs.flatten(0, -1)).context("reading probabilities")?);
    }
    Ok(out)
}

/// The runtime's measures of each image of `x` over `samples` MC samples (per member) with
/// fresh masks from tch's generator: each image's `[M·T, C]` block is scored as the runtime
/// scores a frame.
pub fn mc_measures(net: &dyn DropoutNet, x: &Tensor, samples: i64) -> Result<Vec<Measures>> {
    let probs = per_image_batches(x, |bx| net.mc_probs(bx, samples))?;
    crate::measures::per_image(&probs, samples as usize * net.member_count(), net.classes())
}

/// As [`mc_measures`], from trunk features `[N, ..]` (a head trained on cached features).
pub fn mc_measures_from_features(
    net: &dyn DropoutNet,
    features: &Tensor,
    samples: i64,
) -> Result<Vec<Measures>> {
    let probs = per_image_batches(features, |bf| net.mc_probs_from_features(bf, samples))?;
    crate::measures::per_image(&probs, samples as usize * net.member_count(), net.classes())
}

/// `mc` (`[N, ..]` → `[R, N, C]`) over batches of `x`, as image-major `[N, R, C]` values.
fn per_image_batches(x: &Tensor, mc: impl Fn(&Tensor) -> Tensor) -> Result<Vec<f32>> {
    let _guard = tch::no_grad_guard();
    let mut out = vec![];
    for bx in x.split(SCORING_BATCH, 0) {
        let per_image = mc(&bx) // [R, N, C]
            .permute([1, 0, 2])
            .contiguous()
            .to_device(Device::Cpu); // [N, R, C]
        out.extend(
            Vec::<f32>::try_from(per_image.flatten(0, -1)).context("reading probabilities")?,
        );
    }
    Ok(out)
}

/// Sets every variable of `vs` from the float32 constant of the same name in an ONNX file
/// this crate exported (a network's constants are named after its variables): how an
/// ensemble, which ships only its ONNX, is read back. Fails naming the first variable that
/// has no such constant or another shape.
pub fn load_onnx_weights(vs: &mut tch::nn::VarStore, onnx: &[u8]) -> Result<()> {
    use prost::Message;
    let model = pb::ModelProto::decode(onnx).context("not an ONNX file")?;
    let graph = model.graph.context("the ONNX file has no graph")?;
    let constants: std::collections::HashMap<&str, &pb::TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let _guard = tch::no_grad_guard();
    let variables = vs.variables();
    // A constant no variable takes means the file is not this network's (say, an ensemble
    // card edited down to fewer members than its graph has).
    if let Some(extra) = constants.keys().find(|n| !variables.contains_key(**n)) {
        anyhow::bail!("constant {extra} is not a variable of the network");
    }
    for (name, mut var) in variables {
        let t = constants
            .get(name.as_str())
            .with_context(|| format!("no constant named {name}"))?;
        anyhow::ensure!(
            t.data_type == pb::tensor_proto::DataType::Float as i32
                && t.dims == var.size()
                && t.raw_data.len() == 4 * var.numel(),
            "constant {name} is not float32 {:?} with raw data",
            var.size()
        );
        let values: Vec<f32> = t
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        var.copy_(
            &Tensor::from_slice(&values)
                .view(&t.dims[..])
                .to_device(var.device()),
        );
    }
    Ok(())
}

/// A float32 ONNX constant with a tensor's values and shape.
pub fn f32_constant(name: &str, t: &Tensor) -> Result<pb::TensorProto> {
    let t = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let values = Vec::<f32>::try_from(t.flatten(0, -1)).context("reading weights")?;
    Ok(f32_tensor(name, &t.size(), &values))
}
